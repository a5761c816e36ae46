//! Running an untrusted Python program: bubblewrap for isolation, rlimits and
//! a wall-clock deadline for resources, a launcher that detects early exits.
//!
//! Each run gets a fresh private directory on the host holding `main.py`.
//! Under bubblewrap it is bound read-only at `/sandbox/main.py` on top of a
//! size-limited tmpfs (the writable working directory); `/tmp` and
//! `/dev/shm` are size-limited tmpfs too. The network, IPC, UTS and pid
//! namespaces are new. Read-only: `/usr`, the `/bin`, `/lib*` links or
//! directories, `/etc/ld.so.cache`, and the interpreter's prefixes.
//!
//! Running as root, RLIMIT_NPROC does not apply to uid 0, so bwrap runs
//! without a user namespace (it is privileged already) and hands the
//! launcher CAP_SETUID/CAP_SETGID, which it uses to drop to a per-slot uid
//! (the judge's first uid + the pool thread's index) before any candidate
//! code runs; that uid's process count is this run alone. Not root, bwrap makes a user namespace and the
//! limit counts the processes of that namespace.
//!
//! The launcher reads a random token from stdin, writes a start marker,
//! runs `main.py` with `runpy`, and prints the token only if the program
//! returned normally: `sys.exit(0)` or `os._exit(0)` before the tests end
//! is a failure, not a pass. The start marker tells a sandbox that failed
//! to start (an error of the judge) from a program that failed (a verdict).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{self, Limits, Spec};

const START: &str = "__cgpo_start__";
const SANDBOX_DIR: &str = "/sandbox";
const ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];

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
            timeout: Duration::from_secs(30),
            output_cap: 64 * 1024,
        };
        let out = process::run(&spec).map_err(|e| format!("cannot run `{command}`: {e}"))?;
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
    /// Rlimits and the deadline only; the reason bubblewrap is not used.
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
    /// Exit 0 after the whole program ran.
    Completed,
    /// The program failed; the detail says how.
    Failed(String),
    TimedOut,
    OutputExceeded,
    /// The sandbox or interpreter did not start: not the program's fault.
    SandboxFailed(String),
}

impl Sandbox {
    pub fn run(&self, program: &str, slot: usize) -> Outcome {
        let dir = match self.private_dir() {
            Ok(d) => d,
            Err(e) => return Outcome::SandboxFailed(format!("private dir: {e}")),
        };
        let outcome = self.run_in(dir.path(), program, slot);
        if let Err(e) = dir.close() {
            return Outcome::SandboxFailed(format!("removing the private dir: {e}"));
        }
        outcome
    }

    fn private_dir(&self) -> std::io::Result<tempfile::TempDir> {
        let b = {
            let mut b = tempfile::Builder::new();
            b.prefix("cgpo-code-");
            b
        };
        match &self.scratch {
            Some(s) => b.tempdir_in(s),
            None => b.tempdir(),
        }
    }

    fn slot_uid(&self, slot: usize) -> Option<u32> {
        self.uid_base
            .map(|b| b.saturating_add(u32::try_from(slot).unwrap_or(u32::MAX)))
    }

    fn run_in(&self, dir: &Path, program: &str, slot: usize) -> Outcome {
        let uid = self.slot_uid(slot);
        if let Err(e) = self.prepare(dir, program, uid) {
            return Outcome::SandboxFailed(format!("writing the program: {e}"));
        }
        let launcher = launcher(uid, self.max_processes);
        let token = token();
        let mut py_args: Vec<OsString> = vec!["-I".into(), "-B".into()];
        if !self.process_pth_files {
            py_args.push("-S".into());
        }
        py_args.extend(["-c".into(), launcher.into()]);
        let (program_path, args, cwd) = match &self.isolation {
            Isolation::Bwrap(bwrap) => {
                let mut args = self.bwrap_args(dir, uid.is_some());
                args.push(self.interpreter.exe.clone().into());
                args.extend(py_args);
                (bwrap.clone(), args, None)
            }
            Isolation::None(_) => (self.interpreter.exe.clone(), py_args, Some(dir.into())),
        };
        let spec = Spec {
            program: program_path,
            args,
            env: ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd,
            stdin: format!("{token}\n").into_bytes(),
            limits: Some(self.limits),
            timeout: self.timeout,
            output_cap: self.output_cap,
        };
        let result = process::run(&spec);
        if let (Some(uid), Isolation::None(_)) = (uid, &self.isolation) {
            // Without a pid namespace, a process that left the session
            // survives the group kill; the slot uid is this run's alone.
            kill_uid(uid);
        }
        match result {
            Err(e) => Outcome::SandboxFailed(format!("cannot start: {e}")),
            Ok(f) => classify(&f, &token),
        }
    }

    fn prepare(&self, dir: &Path, program: &str, uid: Option<u32>) -> std::io::Result<()> {
        let main = dir.join("main.py");
        fs::write(&main, program)?;
        fs::set_permissions(&main, fs::Permissions::from_mode(0o644))?;
        if let (Some(uid), Isolation::None(_)) = (uid, &self.isolation) {
            // Not isolated, the dir itself is the working directory.
            std::os::unix::fs::chown(dir, Some(uid), Some(uid))?;
        }
        Ok(())
    }

    /// The bubblewrap arguments up to (not including) the command.
    pub fn bwrap_args(&self, dir: &Path, as_root: bool) -> Vec<OsString> {
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
        a.push(dir.join("main.py").into());
        a.push(format!("{SANDBOX_DIR}/main.py").into());
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
        push(&["--chdir", SANDBOX_DIR, "--clearenv"]);
        for (k, v) in ENV {
            push(&["--setenv", k, v]);
        }
        push(&["--"]);
        a
    }
}

/// The Python program that sets the last limits and runs `main.py`. Under
/// `-S` it does what `site` does except running `.pth` files (host code
/// that costs tens of milliseconds per start): site-packages on the path,
/// and `exit`, `quit`, `help` as builtins.
fn launcher(uid: Option<u32>, max_processes: u64) -> String {
    let drop = match uid {
        Some(u) => format!("os.setgroups([]); os.setgid({u}); os.setuid({u})"),
        None => "pass".into(),
    };
    format!(
        "import os, sys\n\
         def _cgpo_main():\n\
         \x20   token = sys.stdin.readline().strip()\n\
         \x20   null = os.open('/dev/null', os.O_RDONLY)\n\
         \x20   os.dup2(null, 0)\n\
         \x20   os.close(null)\n\
         \x20   import resource, runpy\n\
         \x20   if sys.flags.no_site:\n\
         \x20       import site\n\
         \x20       site.setquit(); site.setcopyright(); site.sethelper()\n\
         \x20       sys.path.extend(p for p in site.getsitepackages() if os.path.isdir(p))\n\
         \x20   {drop}\n\
         \x20   resource.setrlimit(resource.RLIMIT_NPROC, ({max_processes}, {max_processes}))\n\
         \x20   os.write(1, b'{START}\\n')\n\
         \x20   sys.argv = ['main.py']\n\
         \x20   runpy.run_path('main.py', run_name='__main__')\n\
         \x20   sys.stdout.flush()\n\
         \x20   os.write(1, ('\\n' + token + '\\n').encode())\n\
         _cgpo_main()\n"
    )
}

fn classify(f: &process::Finished, token: &str) -> Outcome {
    let started = f.stdout.starts_with(format!("{START}\n").as_bytes());
    if !started {
        if f.timed_out {
            return Outcome::SandboxFailed("timed out before the program started".into());
        }
        return Outcome::SandboxFailed(format!(
            "the sandbox did not start ({}): {}",
            f.status,
            tail(&f.stderr, 5, 600)
        ));
    }
    if f.overflowed {
        return Outcome::OutputExceeded;
    }
    if f.timed_out {
        return Outcome::TimedOut;
    }
    if f.status.success() {
        if f.stdout.ends_with(format!("{token}\n").as_bytes()) {
            return Outcome::Completed;
        }
        return Outcome::Failed("exited with status 0 before the tests finished".into());
    }
    let how = signal_name(&f.status).unwrap_or_else(|| f.status.to_string());
    let err = tail(&f.stderr, 5, 600);
    Outcome::Failed(if err.is_empty() {
        how
    } else {
        format!("{how}: {err}")
    })
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
