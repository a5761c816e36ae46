//! Running untrusted Python: bubblewrap for isolation, rlimits and a
//! wall-clock deadline for resources, and the tests kept out of the
//! candidate's reach.
//!
//! A function-test run is two processes, each in its own sandbox: the
//! candidate's process loads the response's code and serves calls
//! (`python/serve.py`); the harness's process runs the tests
//! (`python/harness.py`), in which each function the candidate defines is a
//! proxy that sends the arguments to the candidate's process and receives
//! the result through two pipes. Only plain data crosses, in a tagged JSON
//! encoding that the harness decodes strictly (`python/prelude.py`): no
//! object of the candidate's ever reaches the tests, and the tests and
//! their expected values never reach the candidate. The harness prints a
//! random token, which only it knows, after every test ran and returned;
//! that, and nothing the candidate prints or sends, is a pass.
//!
//! A standard input/output run is one process (`python/script.py`) that
//! runs the code as `__main__` with the test's input on stdin; the judge
//! compares the output, outside the sandbox.
//!
//! Each sample gets a fresh private directory on the host with one
//! subdirectory per process (`candidate/main.py`, `harness/tests.py`).
//! Under bubblewrap each sandbox binds only its own file, read-only, at
//! `/sandbox/<file>` on top of a size-limited tmpfs (the writable working
//! directory); `/tmp` and `/dev/shm` are size-limited tmpfs too. The
//! network, IPC, UTS and pid namespaces are new. Read-only: `/usr`, the
//! `/bin`, `/lib*` links or directories, `/etc/ld.so.cache`, and the
//! interpreter's prefixes.
//!
//! Running as root, RLIMIT_NPROC does not apply to uid 0, so bwrap runs
//! without a user namespace (it is privileged already) and hands the
//! launcher CAP_SETUID/CAP_SETGID, which it uses to drop to a per-slot uid
//! before any candidate code runs: slot `s` of the judge's pool gives the
//! candidate uid `first + 2s` and the harness `first + 2s + 1`, so each
//! process count is its own and neither can signal the other. Not root,
//! bwrap makes a user namespace and the limit counts the processes of that
//! namespace.
//!
//! Every launcher writes a start marker before anything that is not its
//! own: no marker tells a sandbox that failed to start (an error of the
//! judge) from a program that failed (a verdict).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{self, Finished, Limits, Spec};

const START: &str = "__cgpo_start__";
const SANDBOX_DIR: &str = "/sandbox";
const ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];
/// The harness's exit status when the candidate's process went away.
const CANDIDATE_EXITED: i32 = 3;

const SERVE: &str = concat!(
    include_str!("python/prelude.py"),
    include_str!("python/serve.py")
);
const HARNESS: &str = concat!(
    include_str!("python/prelude.py"),
    include_str!("python/harness.py")
);
const SCRIPT: &str = concat!(
    include_str!("python/prelude.py"),
    include_str!("python/script.py")
);

/// A resolved interpreter: the executable to run and the host directories
/// it needs (its prefixes), outside the system directories bound anyway.
#[derive(Clone, Debug)]
pub(crate) struct Interpreter {
    pub exe: PathBuf,
    pub prefixes: Vec<PathBuf>,
}

impl Interpreter {
    /// Asks `command` (a trusted, configured program such as a pyenv shim)
    /// where it really lives.
    pub fn resolve(command: &str) -> Result<Self, String> {
        let script = "import json, os, sys\nprint(json.dumps([sys.executable, os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))";
        let spec = Spec {
            program: command.into(),
            args: vec!["-c".into(), script.into()],
            env: std::env::vars().collect(),
            cwd: None,
            stdin: Vec::new(),
            limits: None,
            output_cap: 64 * 1024,
            fds: Vec::new(),
        };
        let out = process::run(spec, Duration::from_secs(30))
            .map_err(|e| format!("cannot run `{command}`: {e}"))?;
        if !out.status.success() || out.timed_out {
            return Err(format!(
                "`{command}` failed to report its paths: {}",
                tail(&out.stderr, 3, 300)
            ));
        }
        let paths: Vec<Option<String>> = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("`{command}` printed unexpected paths: {e}"))?;
        let mut paths = paths.into_iter().map(|p| p.filter(|p| !p.is_empty()));
        let exe = paths
            .next()
            .flatten()
            .ok_or_else(|| format!("`{command}` does not know its executable"))?;
        let real_dir = paths
            .next()
            .flatten()
            .and_then(|p| Path::new(&p).parent().map(Path::to_path_buf));
        let mut prefixes: Vec<PathBuf> = paths.flatten().map(PathBuf::from).collect();
        prefixes.extend(real_dir);
        Ok(Self {
            exe: exe.into(),
            prefixes: outermost(prefixes),
        })
    }
}

/// Drops paths inside system directories and paths inside other paths.
fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.retain(|p| p.is_absolute() && !SYSTEM_DIRS.iter().any(|d| p.starts_with(d)));
    paths.sort();
    paths.dedup();
    let all = paths.clone();
    paths.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    paths
}

const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// How runs are isolated.
#[derive(Clone, Debug)]
pub(crate) enum Isolation {
    /// Under bubblewrap at this path.
    Bwrap(PathBuf),
    /// Rlimits and the deadline only (`allow_unisolated`); the reason
    /// bubblewrap is not used.
    None(String),
}

/// Everything that stays the same between runs.
#[derive(Clone, Debug)]
pub(crate) struct Sandbox {
    pub interpreter: Interpreter,
    pub isolation: Isolation,
    pub limits: Limits,
    pub max_processes: u64,
    pub tmpfs_bytes: u64,
    pub timeout: Duration,
    pub output_cap: usize,
    pub scratch: Option<PathBuf>,
    /// Set when running as root: the first uid of the per-slot range.
    pub uid_base: Option<u32>,
    /// Run `site` in full (`.pth` files included) instead of `-S`.
    pub process_pth_files: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Function tests: the harness ran every test and each returned.
    /// Standard input/output: the program exited with status 0.
    Completed,
    /// The program or the tests failed; the detail says how.
    Failed(String),
    TimedOut,
    OutputExceeded,
    /// The sandbox or interpreter did not start: not the program's fault.
    SandboxFailed(String),
}

/// The two processes of a function-test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Candidate,
    Harness,
}

impl Role {
    fn dir(self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Harness => "harness",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Role::Candidate => "main.py",
            Role::Harness => "tests.py",
        }
    }
}

impl Sandbox {
    /// Runs `tests` in the harness's process against `code` loaded in the
    /// candidate's. `entry_point`, when given, is the one candidate
    /// function that may take the name of a Python builtin.
    pub fn run_tests(
        &self,
        code: &str,
        tests: &str,
        entry_point: Option<&str>,
        slot: usize,
    ) -> Outcome {
        self.in_private_dir(|dir| {
            let uids = self.slot_uids(slot);
            self.prepare(dir, Role::Candidate, code, uids.map(|u| u.0))?;
            self.prepare(dir, Role::Harness, tests, uids.map(|u| u.1))?;
            let token = token();
            let (calls_rx, calls_tx) = process::pipe()?;
            let (replies_rx, replies_tx) = process::pipe()?;
            let harness = self.spec(
                dir,
                Role::Harness,
                HARNESS,
                uids.map(|u| u.1),
                vec![entry_point.unwrap_or("").into()],
                format!("{token}\n").into_bytes(),
                vec![(3, replies_rx), (4, calls_tx)],
            );
            let candidate = self.spec(
                dir,
                Role::Candidate,
                SERVE,
                uids.map(|u| u.0),
                Vec::new(),
                Vec::new(),
                vec![(3, calls_rx), (4, replies_tx)],
            );
            let result = process::run_group(vec![harness, candidate], self.timeout);
            if let Some((candidate, harness)) = uids {
                self.after_run(&[candidate, harness]);
            }
            Ok(match result {
                Err(e) => Outcome::SandboxFailed(format!("cannot start: {e}")),
                Ok(mut done) => {
                    let candidate = done.pop();
                    let harness = done.pop();
                    match (harness, candidate) {
                        (Some(h), Some(c)) => classify_tests(&h, &c, &token),
                        _ => Outcome::SandboxFailed("a process is missing".into()),
                    }
                }
            })
        })
        .unwrap_or_else(|o| o)
    }

    /// Runs `code` as a script with `input` on stdin, with `timeout` (at
    /// most the judge's): its standard output when it exited with status 0.
    pub fn run_script(
        &self,
        code: &str,
        input: &str,
        slot: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, Outcome> {
        self.in_private_dir(|dir| {
            let uid = self.slot_uids(slot).map(|u| u.0);
            self.prepare(dir, Role::Candidate, code, uid)?;
            let spec = self.spec(
                dir,
                Role::Candidate,
                SCRIPT,
                uid,
                Vec::new(),
                input.as_bytes().to_vec(),
                Vec::new(),
            );
            let result = process::run(spec, timeout.min(self.timeout));
            self.after_run(uid.as_slice());
            Ok(match result {
                Err(e) => Err(Outcome::SandboxFailed(format!("cannot start: {e}"))),
                Ok(f) => classify_script(f),
            })
        })
        .and_then(|r| r)
    }

    /// Runs `f` in a fresh private dir and removes the dir afterwards; an
    /// I/O error of the judge's own is a `SandboxFailed`.
    fn in_private_dir<T>(&self, f: impl FnOnce(&Path) -> std::io::Result<T>) -> Result<T, Outcome> {
        let b = {
            let mut b = tempfile::Builder::new();
            b.prefix("cgpo-code-");
            b
        };
        let dir = match &self.scratch {
            Some(s) => b.tempdir_in(s),
            None => b.tempdir(),
        }
        .map_err(|e| Outcome::SandboxFailed(format!("private dir: {e}")))?;
        let result =
            f(dir.path()).map_err(|e| Outcome::SandboxFailed(format!("preparing the run: {e}")));
        dir.close()
            .map_err(|e| Outcome::SandboxFailed(format!("removing the private dir: {e}")))?;
        result
    }

    /// `(candidate uid, harness uid)` of a pool slot, when running as root.
    pub fn slot_uids(&self, slot: usize) -> Option<(u32, u32)> {
        let slot = u32::try_from(slot).unwrap_or(u32::MAX / 2);
        self.uid_base.map(|b| {
            let c = b.saturating_add(slot.saturating_mul(2));
            (c, c.saturating_add(1))
        })
    }

    /// Without a pid namespace, a process that left the session survives
    /// the group kill; the slot uids are this run's alone.
    fn after_run(&self, uids: &[u32]) {
        if let Isolation::None(_) = self.isolation {
            for &uid in uids {
                kill_uid(uid);
            }
        }
    }

    fn prepare(&self, dir: &Path, role: Role, text: &str, uid: Option<u32>) -> std::io::Result<()> {
        let sub = dir.join(role.dir());
        fs::create_dir(&sub)?;
        let file = sub.join(role.file());
        fs::write(&file, text)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
        if let (Some(uid), Isolation::None(_)) = (uid, &self.isolation) {
            // Not isolated, each process works in its own subdirectory,
            // which the other's uid cannot enter; the top one is
            // traversable only.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
            std::os::unix::fs::chown(&sub, Some(uid), Some(uid))?;
            fs::set_permissions(&sub, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        dir: &Path,
        role: Role,
        launcher: &str,
        uid: Option<u32>,
        extra_args: Vec<OsString>,
        stdin: Vec<u8>,
        fds: Vec<(i32, std::os::fd::OwnedFd)>,
    ) -> Spec {
        let mut py_args: Vec<OsString> = vec!["-I".into(), "-B".into()];
        if !self.process_pth_files {
            py_args.push("-S".into());
        }
        py_args.extend(["-c".into(), launcher.into()]);
        py_args.push(uid.map_or(-1, i64::from).to_string().into());
        py_args.push(self.max_processes.to_string().into());
        py_args.extend(extra_args);
        let (program, args, cwd) = match &self.isolation {
            Isolation::Bwrap(bwrap) => {
                let mut args = self.bwrap_args(dir, role, uid.is_some());
                args.push(self.interpreter.exe.clone().into());
                args.extend(py_args);
                (bwrap.clone(), args, None)
            }
            Isolation::None(_) => (
                self.interpreter.exe.clone(),
                py_args,
                Some(dir.join(role.dir())),
            ),
        };
        Spec {
            program,
            args,
            env: ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd,
            stdin,
            limits: Some(self.limits),
            output_cap: self.output_cap,
            fds,
        }
    }

    /// The bubblewrap arguments up to (not including) the command, for the
    /// process of `role` whose file is in `dir`.
    fn bwrap_args(&self, dir: &Path, role: Role, as_root: bool) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["--die-with-parent", "--new-session"]);
        if as_root {
            // No user namespace: the launcher must setuid to a real,
            // unprivileged uid so that RLIMIT_NPROC applies.
            push(&["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]);
        } else {
            push(&["--unshare-user", "--disable-userns"]);
        }
        push(&["--unshare-ipc", "--unshare-pid", "--unshare-net"]);
        push(&["--unshare-uts", "--unshare-cgroup-try"]);
        push(&["--ro-bind", "/usr", "/usr"]);
        for d in &SYSTEM_DIRS[1..] {
            let p = Path::new(d);
            match fs::read_link(p) {
                Ok(target) => {
                    a.extend(["--symlink".into(), target.into(), OsString::from(d)]);
                }
                Err(_) if p.is_dir() => a.extend(["--ro-bind", d, d].map(OsString::from)),
                Err(_) => {}
            }
        }
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]);
        let mut made: Vec<PathBuf> = Vec::new();
        for p in &self.interpreter.prefixes {
            // bwrap would create missing parents 0700, unreadable once the
            // launcher drops root.
            for anc in p.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
                if anc != Path::new("/") && !made.iter().any(|m| m == anc) {
                    a.extend(["--perms".into(), "0755".into(), "--dir".into()]);
                    a.push(anc.into());
                    made.push(anc.into());
                }
            }
            a.extend(["--ro-bind".into(), p.into(), p.into()]);
        }
        let size = self.tmpfs_bytes.to_string();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["--proc", "/proc", "--dev", "/dev"]);
        for target in ["/dev/shm", "/tmp", SANDBOX_DIR] {
            push(&["--size", &size, "--perms", "1777", "--tmpfs", target]);
        }
        a.push("--ro-bind".into());
        a.push(dir.join(role.dir()).join(role.file()).into());
        a.push(format!("{SANDBOX_DIR}/{}", role.file()).into());
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["--chdir", SANDBOX_DIR, "--clearenv"]);
        for (k, v) in ENV {
            push(&["--setenv", k, v]);
        }
        push(&["--"]);
        a
    }

    /// The bubblewrap arguments of both processes, for tests and docs.
    #[cfg(test)]
    pub fn bwrap_args_for_tests(&self, dir: &Path, as_root: bool) -> [Vec<OsString>; 2] {
        [Role::Candidate, Role::Harness].map(|r| self.bwrap_args(dir, r, as_root))
    }
}

fn started(f: &Finished) -> bool {
    f.stdout.starts_with(format!("{START}\n").as_bytes())
}

fn not_started(f: &Finished) -> Outcome {
    if f.timed_out {
        return Outcome::SandboxFailed("timed out before the program started".into());
    }
    Outcome::SandboxFailed(format!(
        "the sandbox did not start ({}): {}",
        f.status,
        tail(&f.stderr, 5, 600)
    ))
}

/// How a process ended, with the last lines of its stderr.
fn failure(f: &Finished, lines: usize) -> String {
    let how = signal_name(&f.status).unwrap_or_else(|| f.status.to_string());
    let err = tail(&f.stderr, lines, 600);
    if err.is_empty() {
        how
    } else {
        format!("{how}: {err}")
    }
}

/// The verdict of a function-test run, from the harness `h` and the
/// candidate `c`; only the harness's own token makes a pass.
fn classify_tests(h: &Finished, c: &Finished, token: &str) -> Outcome {
    // The candidate's flood may stop the run before the harness started.
    if c.overflowed {
        return Outcome::OutputExceeded;
    }
    if !started(h) {
        return not_started(h);
    }
    if h.overflowed {
        return Outcome::OutputExceeded;
    }
    if h.timed_out {
        return Outcome::TimedOut;
    }
    if h.status.success() {
        if h.stdout.ends_with(format!("\n{token}:pass\n").as_bytes()) {
            return Outcome::Completed;
        }
        if h.stdout
            .ends_with(format!("\n{token}:nostart\n").as_bytes())
        {
            return Outcome::SandboxFailed(format!(
                "the candidate's sandbox did not start: {}",
                failure(c, 5)
            ));
        }
        return Outcome::Failed("the tests exited with status 0 before they finished".into());
    }
    let reason = failure(h, 5);
    if h.status.code() == Some(CANDIDATE_EXITED) {
        return Outcome::Failed(format!(
            "{reason}; the candidate's process: {}",
            failure(c, 3)
        ));
    }
    Outcome::Failed(reason)
}

/// A script's standard output, or how it failed.
fn classify_script(f: Finished) -> Result<Vec<u8>, Outcome> {
    if !started(&f) {
        return Err(not_started(&f));
    }
    if f.overflowed {
        return Err(Outcome::OutputExceeded);
    }
    if f.timed_out {
        return Err(Outcome::TimedOut);
    }
    if !f.status.success() {
        return Err(Outcome::Failed(failure(&f, 5)));
    }
    let mut out = f.stdout;
    out.drain(..START.len() + 1);
    Ok(out)
}

fn signal_name(status: &std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let sig = status.signal()?;
    let name = match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGXCPU => "SIGXCPU (CPU time limit)",
        libc::SIGXFSZ => "SIGXFSZ (file size limit)",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        _ => return Some(format!("killed by signal {sig}")),
    };
    Some(format!("killed by {name}"))
}

/// The last `lines` lines of `bytes`, at most `max` characters.
pub(crate) fn tail(bytes: &[u8], lines: usize, max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let kept: Vec<&str> = text.trim_end().lines().rev().take(lines).collect();
    let joined = kept.into_iter().rev().collect::<Vec<_>>().join("\n");
    let n = joined.chars().count();
    if n <= max {
        joined
    } else {
        joined.chars().skip(n - max).collect()
    }
}

/// 128 random bits as hex, from the kernel.
fn token() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // getrandom on a 16-byte buffer only fails before the entropy pool
        // is ready; the nanosecond clock is still unknown to the program.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf = t.to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Kills every process of `uid` (except the killer) from a forked child.
fn kill_uid(uid: u32) {
    // SAFETY: the child only makes async-signal-safe calls and exits.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setgid(uid) == 0 && libc::setuid(uid) == 0 {
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(0);
        }
        if pid > 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }
}
