//! The code verifier judge (`"code"`): runs the response's Python code
//! against the prompt's unit tests in a sandbox.
//!
//! Metadata, either form or both:
//! - HumanEval: `{"test": "def check(candidate): ...", "entry_point": "f"}`;
//!   the program is `code + "\n" + test + "\ncheck(f)\n"`. With a string
//!   `"prompt"` (the signature and docstring) and code that does not
//!   define `f`, the code is taken as a completion: `prompt + code`.
//! - Assert lines: `{"unit_tests": ["assert f(1) == 2", ...]}`, appended
//!   after the code, one per line (`entry_point` optional, used to choose
//!   the code block).
//!
//! The code is the chosen fenced block ([`extract`]); a response without
//! one fails with "no code block" unless `allow_unfenced` is set, in which
//! case the whole response is the code. Verdicts: exit 0 after all tests
//! is `Pass`; a failing assert, an exception, a syntax error, an early
//! exit, a timeout or too much output is `Fail`; a sandbox that cannot
//! start or metadata that cannot be used is `Error`. Samples of a batch run
//! concurrently on the judge's own thread pool of `parallelism` threads.
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
use std::time::Duration;

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
    /// Return `Error` instead of running without bubblewrap.
    pub require_isolation: bool,
    /// Without a fenced block, run the whole response.
    pub allow_unfenced: bool,
    /// Where private dirs are made; default: the system temp dir.
    pub scratch_dir: Option<PathBuf>,
    /// Running as root, each run drops to its own uid (and gid) from
    /// `uid_base` on: the judges of one process take disjoint blocks of
    /// `parallelism` uids, and each pool thread one uid of its block.
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
            require_isolation: false,
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
        let block = u32::try_from(threads).map_err(|_| bad("parallelism too large".into()))?;
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
        sandbox.isolation = match find_program(&p.bwrap) {
            None => Isolation::None(format!("`{}` not found", p.bwrap)),
            Some(bwrap) => {
                sandbox.isolation = Isolation::Bwrap(bwrap);
                match sandbox.run("pass\n", 0) {
                    Outcome::Completed => return Ok(sandbox),
                    other => Isolation::None(format!("bubblewrap probe failed: {other:?}")),
                }
            }
        };
        if let (Isolation::None(why), Some(uid)) = (&sandbox.isolation, sandbox.uid_base) {
            // Unsandboxed, the dropped uid sees the host's permissions: a
            // Python under a root-only home cannot import its stdlib.
            if sandbox.run("import json, math, collections, re\n", 0) != Outcome::Completed {
                sandbox.isolation = Isolation::None(format!(
                    "{why}; running as root because uid {uid} cannot read the interpreter, \
                     so the process count is not limited"
                ));
                sandbox.uid_base = None;
            }
        }
        if p.require_isolation {
            if let Isolation::None(why) = &sandbox.isolation {
                return Err(format!("sandbox unavailable: {why}"));
            }
        }
        if let Isolation::None(why) = &sandbox.isolation {
            UNISOLATED_WARNING.call_once(|| {
                eprintln!(
                    "WARNING: cgpo code judge: running untrusted code WITHOUT isolation \
                     (rlimits and timeout only): {why}"
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
        let verdict = match sandbox.run(&program, slot) {
            Outcome::Completed => Verdict::Pass,
            Outcome::Failed(why) => Verdict::Fail(why),
            Outcome::TimedOut => {
                Verdict::Fail(format!("timed out after {}s", self.params.timeout_s))
            }
            Outcome::OutputExceeded => {
                Verdict::Fail(format!("output exceeded {} KiB", self.params.max_output_kb))
            }
            Outcome::SandboxFailed(why) => Verdict::Error(format!("sandbox: {why}")),
        };
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
    prompt: Option<String>,
}

/// Code + tests, or the verdict that ends the sample without a run.
fn build_program(sample: &SampleView<'_>, allow_unfenced: bool) -> Result<String, Verdict> {
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
    if t.test.is_none() && t.unit_tests.as_ref().is_none_or(Vec::is_empty) {
        return Err(Verdict::error(
            "metadata has neither `test` (with `entry_point`) nor `unit_tests`",
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
    if let Some(test) = &t.test {
        let Some(ep) = ep else {
            return Err(Verdict::error("metadata: `test` without `entry_point`"));
        };
        code = format!("{code}\n{test}\ncheck({ep})\n");
    }
    for line in t.unit_tests.iter().flatten() {
        code.push('\n');
        code.push_str(line);
    }
    code.push('\n');
    Ok(code)
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
