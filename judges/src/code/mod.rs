//! The code verifier judge (`"code"`): runs the response's Python code
//! against the prompt's tests, with the tests out of the code's reach.
//!
//! Metadata, any of these forms (several run in this order):
//! - HumanEval: `{"test": "def check(candidate): ...", "entry_point": "f"}`;
//!   the tests are `test + "\ncheck(f)\n"`. With a string `"prompt"` (the
//!   signature and docstring) and code that does not define `f`, the code
//!   is taken as a completion: `prompt + code`.
//! - Assert lines: `{"unit_tests": ["assert f(1) == 2", ...]}`, one per
//!   line (`entry_point` optional, used to choose the code block).
//! - Standard input/output (APPS, Codeforces):
//!   `{"stdio_tests": [{"input": "1 2\n", "output": "3\n"}, ...]}`; the
//!   code runs as a script once per test and its output must equal the
//!   expected one token by token (whitespace-separated, so line breaks,
//!   runs of spaces and trailing whitespace do not matter).
//!
//! Function tests run in a harness process of their own that calls the
//! candidate's functions in the candidate's process, with plain data only
//! crossing between them ([`sandbox`] has the protocol); standard output is
//! compared here, outside the sandbox. `Pass` means the harness ran every
//! test and each one returned, and every standard output matched: nothing
//! the candidate prints, returns or exits with can forge it.
//!
//! The code is the chosen fenced block ([`extract`]); a response without
//! one fails with "no code block" unless `allow_unfenced` is set, in which
//! case the whole response is the code. A failing assert, an exception, a
//! syntax error, a value that is not plain data, an exit of the candidate,
//! a timeout or too much output is `Fail`; a sandbox that cannot start or
//! metadata that cannot be used is `Error`. Without bubblewrap every sample
//! is an `Error`, unless `allow_unisolated` says to run untrusted code on
//! the host. Samples of a batch run concurrently on the judge's own thread
//! pool of `parallelism` threads.
//!
//! ```no_run
//! use cgpo_judges::{JudgeRegistry, JudgeSpec};
//! let spec = JudgeSpec::new("code", serde_json::json!({"timeout_s": 5.0}));
//! let judge = JudgeRegistry::with_builtins().build(&spec).unwrap();
//! ```

pub mod extract;
mod process;
mod sandbox;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::{parse_params, Judge, JudgeError, SampleView, Verdict};
use process::Limits;
use sandbox::{Interpreter, Isolation, Outcome, Sandbox};

/// Parameters of the `"code"` judge (unknown keys are errors).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeParams {
    /// Python command, resolved once to the real executable and prefixes.
    pub interpreter: String,
    /// Wall-clock limit per sample; the CPU limit is this rounded up + 1 s.
    pub timeout_s: f64,
    /// Address-space limit (RLIMIT_AS) per process.
    pub memory_mb: u64,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub max_file_mb: u64,
    /// Size of each tmpfs in the sandbox (working dir, /tmp, /dev/shm).
    pub tmpfs_mb: u64,
    /// RLIMIT_NPROC (threads count too).
    pub max_processes: u64,
    /// Cap on each of stdout and stderr; more is a failure.
    pub max_output_kb: usize,
    /// Samples verified at once; default: the number of CPUs.
    pub parallelism: Option<usize>,
    /// bubblewrap executable (a name looked up in PATH, or a path).
    pub bwrap: String,
    /// Run untrusted code on the host, with rlimits and the deadline only,
    /// when bubblewrap is missing or fails; by default that is an `Error`.
    pub allow_unisolated: bool,
    /// Without a fenced block, run the whole response.
    pub allow_unfenced: bool,
    /// Where private dirs are made; default: the system temp dir.
    pub scratch_dir: Option<PathBuf>,
    /// Running as root, each process drops to its own uid (and gid) from
    /// `uid_base` on: the judges of one process take disjoint blocks of
    /// `2 * parallelism` uids, and each pool thread two uids of its block
    /// (the candidate's and the harness's).
    pub uid_base: u32,
    /// Let `site` run the `.pth` files of site-packages (slower start);
    /// by default Python runs with `-S` and site-packages are added to
    /// `sys.path` without them.
    pub process_pth_files: bool,
}

impl Default for CodeParams {
    fn default() -> Self {
        Self {
            interpreter: "python3".into(),
            timeout_s: 10.0,
            memory_mb: 1024,
            max_file_mb: 16,
            tmpfs_mb: 64,
            max_processes: 64,
            max_output_kb: 256,
            parallelism: None,
            bwrap: "bwrap".into(),
            allow_unisolated: false,
            allow_unfenced: false,
            scratch_dir: None,
            uid_base: 2_100_000_000,
            process_pth_files: false,
        }
    }
}

/// Runs Python code from responses against unit tests from metadata.
pub struct CodeJudge {
    name: String,
    params: CodeParams,
    /// First uid of this judge's block (as root).
    first_uid: u32,
    pool: rayon::ThreadPool,
    runtime: OnceLock<Result<Sandbox, String>>,
}

static UNISOLATED_WARNING: Once = Once::new();

/// uids handed out to judges of this process so far, above `uid_base`.
static UIDS_TAKEN: AtomicU32 = AtomicU32::new(0);

impl CodeJudge {
    pub fn new(name: impl Into<String>, params: CodeParams) -> Result<Self, JudgeError> {
        let name = name.into();
        let bad = |message: String| JudgeError::Params {
            judge: name.clone(),
            message,
        };
        if !(params.timeout_s.is_finite() && params.timeout_s > 0.0 && params.timeout_s <= 3600.0) {
            return Err(bad(format!(
                "timeout_s must be in (0, 3600], got {}",
                params.timeout_s
            )));
        }
        if params.memory_mb == 0 || params.max_processes == 0 || params.tmpfs_mb == 0 {
            return Err(bad(
                "memory_mb, max_processes and tmpfs_mb must be positive".into(),
            ));
        }
        let threads = params.parallelism.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if threads == 0 {
            return Err(bad("parallelism must be positive".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cgpo-code-{i}"))
            .build()
            .map_err(|e| bad(format!("thread pool: {e}")))?;
        let block = u32::try_from(threads)
            .ok()
            .and_then(|t| t.checked_mul(2))
            .ok_or_else(|| bad("parallelism too large".into()))?;
        let first_uid = params
            .uid_base
            .checked_add(UIDS_TAKEN.fetch_add(block, Ordering::Relaxed))
            .filter(|first| first.checked_add(block).is_some_and(|end| end < u32::MAX))
            .ok_or_else(|| bad("no uids left above uid_base".into()))?;
        Ok(Self {
            name,
            params,
            first_uid,
            pool,
            runtime: OnceLock::new(),
        })
    }

    pub fn from_params(name: &str, params: &Value) -> Result<Self, JudgeError> {
        Self::new(name, parse_params(name, params)?)
    }

    /// Resolves the interpreter and probes bubblewrap, once.
    fn sandbox(&self) -> Result<&Sandbox, &str> {
        self.runtime
            .get_or_init(|| self.start())
            .as_ref()
            .map_err(String::as_str)
    }

    fn start(&self) -> Result<Sandbox, String> {
        let p = &self.params;
        let interpreter = Interpreter::resolve(&p.interpreter)?;
        let mb = 1024 * 1024;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut sandbox = Sandbox {
            interpreter,
            isolation: Isolation::Bwrap(PathBuf::new()),
            limits: Limits {
                cpu_s: p.timeout_s.ceil() as u64 + 1,
                address_space: p.memory_mb.saturating_mul(mb),
                file_size: p.max_file_mb.saturating_mul(mb),
                open_files: 256,
            },
            max_processes: p.max_processes,
            tmpfs_bytes: p.tmpfs_mb.saturating_mul(mb),
            timeout: Duration::from_secs_f64(p.timeout_s),
            output_cap: p.max_output_kb.saturating_mul(1024),
            scratch: p.scratch_dir.clone(),
            uid_base: root.then_some(self.first_uid),
            process_pth_files: p.process_pth_files,
        };
        let why = match find_program(&p.bwrap) {
            None => format!("bubblewrap (`{}`) not found", p.bwrap),
            Some(bwrap) => {
                sandbox.isolation = Isolation::Bwrap(bwrap);
                match sandbox.run_tests(PROBE_CODE, PROBE_TESTS, None, 0) {
                    Outcome::Completed => return Ok(sandbox),
                    other => format!("the bubblewrap probe failed: {other:?}"),
                }
            }
        };
        if !p.allow_unisolated {
            return Err(format!(
                "{why}: install it (Debian and Ubuntu: apt-get install bubblewrap) or set \
                 allow_unisolated to run untrusted code on this host without isolation"
            ));
        }
        sandbox.isolation = Isolation::None(why.clone());
        if let Some(uid) = sandbox.uid_base {
            // Unsandboxed, the dropped uids see the host's permissions: a
            // Python under a root-only home cannot import its stdlib.
            if sandbox.run_tests(PROBE_CODE, PROBE_TESTS, None, 0) != Outcome::Completed {
                sandbox.isolation = Isolation::None(format!(
                    "{why}; running as root because uid {uid} cannot read the interpreter, \
                     so the process count is not limited"
                ));
                sandbox.uid_base = None;
            }
        }
        if let Isolation::None(why) = &sandbox.isolation {
            UNISOLATED_WARNING.call_once(|| {
                eprintln!(
                    "WARNING: cgpo code judge: allow_unisolated is set and bubblewrap is not \
                     used, so untrusted code runs on this host with rlimits and a timeout only: \
                     {why}"
                );
            });
        }
        Ok(sandbox)
    }

    fn verify(&self, sandbox: &Sandbox, sample: &SampleView<'_>) -> Verdict {
        let program = match build_program(sample, self.params.allow_unfenced) {
            Ok(p) => p,
            Err(v) => return v,
        };
        let slot = rayon::current_thread_index().unwrap_or(0);
        let verdict = self.run(sandbox, &program, slot);
        match (&sandbox.isolation, verdict) {
            (Isolation::None(why), Verdict::Fail(r)) => {
                Verdict::Fail(format!("{r} [not isolated: {why}]"))
            }
            (Isolation::None(why), Verdict::Error(r)) => {
                Verdict::Error(format!("{r} [not isolated: {why}]"))
            }
            (_, v) => v,
        }
    }

    fn run(&self, sandbox: &Sandbox, program: &Program, slot: usize) -> Verdict {
        let started = Instant::now();
        if let Some(tests) = &program.tests {
            let outcome =
                sandbox.run_tests(&program.code, tests, program.entry_point.as_deref(), slot);
            if outcome != Outcome::Completed {
                return self.verdict(outcome);
            }
        }
        let n = program.stdio.len();
        for (i, case) in program.stdio.iter().enumerate() {
            let left = self.timeout().saturating_sub(started.elapsed());
            if left.is_zero() {
                return self.verdict(Outcome::TimedOut);
            }
            let out = match sandbox.run_script(&program.code, &case.input, slot, left) {
                Ok(out) => out,
                Err(outcome) => {
                    return match self.verdict(outcome) {
                        Verdict::Fail(r) => {
                            Verdict::Fail(format!("stdio test {} of {n}: {r}", i + 1))
                        }
                        v => v,
                    }
                }
            };
            let out = String::from_utf8_lossy(&out);
            if !same_tokens(&out, &case.output) {
                return Verdict::Fail(format!(
                    "stdio test {} of {n}: wrong answer: expected {:?}, got {:?}",
                    i + 1,
                    clip(&case.output, 120),
                    clip(&out, 120)
                ));
            }
        }
        Verdict::Pass
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.params.timeout_s)
    }

    fn verdict(&self, outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Completed => Verdict::Pass,
            Outcome::Failed(why) => Verdict::Fail(why),
            Outcome::TimedOut => {
                Verdict::Fail(format!("timed out after {}s", self.params.timeout_s))
            }
            Outcome::OutputExceeded => {
                Verdict::Fail(format!("output exceeded {} KiB", self.params.max_output_kb))
            }
            Outcome::SandboxFailed(why) => Verdict::Error(format!("sandbox: {why}")),
        }
    }
}

/// The bubblewrap probe: one function test through both processes.
const PROBE_CODE: &str = "def f():\n    return [1, (2.5, 'x'), {3: None}]\n";
const PROBE_TESTS: &str = "assert f() == [1, (2.5, 'x'), {3: None}]\n";

/// Whether two outputs have the same whitespace-separated tokens.
fn same_tokens(got: &str, expected: &str) -> bool {
    got.split_whitespace().eq(expected.split_whitespace())
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

impl Judge for CodeJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        let sandbox = match self.sandbox() {
            Ok(s) => s,
            Err(e) => return vec![Verdict::error(e); batch.len()],
        };
        self.pool
            .install(|| batch.par_iter().map(|s| self.verify(sandbox, s)).collect())
    }
}

/// The tests a prompt's metadata carries.
#[derive(Deserialize)]
struct Tests {
    test: Option<String>,
    entry_point: Option<String>,
    unit_tests: Option<Vec<String>>,
    stdio_tests: Option<Vec<StdioTest>>,
    prompt: Option<String>,
}

/// One standard input/output test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdioTest {
    input: String,
    output: String,
}

/// What one sample runs: the candidate's code, the function tests (run by
/// the harness, never by the candidate's process) and the stdio tests.
#[derive(Debug)]
struct Program {
    code: String,
    tests: Option<String>,
    entry_point: Option<String>,
    stdio: Vec<StdioTest>,
}

/// The code and tests of a sample, or the verdict that ends it unrun.
fn build_program(sample: &SampleView<'_>, allow_unfenced: bool) -> Result<Program, Verdict> {
    if !sample.metadata.is_object() {
        return Err(Verdict::error("metadata is not an object"));
    }
    let t: Tests = serde::Deserialize::deserialize(sample.metadata)
        .map_err(|e| Verdict::error(format!("metadata: {e}")))?;
    if let Some(ep) = &t.entry_point {
        if !is_identifier(ep) {
            return Err(Verdict::error(format!(
                "metadata: entry_point `{ep}` is not an identifier"
            )));
        }
    }
    let unit_tests = t.unit_tests.unwrap_or_default();
    let stdio = t.stdio_tests.unwrap_or_default();
    if t.test.is_none() && unit_tests.is_empty() && stdio.is_empty() {
        return Err(Verdict::error(
            "metadata has neither `test` (with `entry_point`), `unit_tests` nor `stdio_tests`",
        ));
    }
    let ep = t.entry_point.as_deref();
    let mut code = match extract::select_code(sample.response, ep) {
        Some(c) => c,
        None if allow_unfenced => sample.response.to_owned(),
        None => return Err(Verdict::fail("no code block")),
    };
    if let (Some(prompt), Some(ep)) = (&t.prompt, ep) {
        if !extract::defines(&code, ep) {
            code = format!("{prompt}{code}");
        }
    }
    let mut tests = String::new();
    if let Some(test) = &t.test {
        let Some(ep) = ep else {
            return Err(Verdict::error("metadata: `test` without `entry_point`"));
        };
        // The prompt's helpers (HumanEval/32's `poly`) run in the harness
        // too, so that the tests never ask the candidate to grade itself;
        // The prompt's stub of the entry point is then replaced by the
        // candidate's (passed in under a reserved name).
        let prompt = t.prompt.as_deref().unwrap_or_default();
        tests = format!("{prompt}\n{ep} = __cgpo_entry__\n{test}\ncheck({ep})\n");
    }
    for line in &unit_tests {
        tests.push_str(line);
        tests.push('\n');
    }
    code.push('\n');
    Ok(Program {
        code,
        tests: (!tests.is_empty()).then_some(tests),
        entry_point: t.entry_point,
        stdio,
    })
}

fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && cs.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A program name looked up in PATH, or a path that exists.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
