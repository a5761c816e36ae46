//! Running one child process under a wall-clock deadline with capped output.
//!
//! The child starts in a new session (so it has no controlling terminal and
//! its process group can be killed as a whole), with rlimits set between
//! `fork` and `exec`, an empty environment plus the given variables, and
//! stdin fed from a buffer. Output is read with `poll` on non-blocking
//! pipes into buffers that never grow past the cap: once a stream exceeds
//! it, the whole group is killed. The deadline is exact when the kernel has
//! `pidfd_open` (the pidfd is polled); otherwise the loop wakes every 10 ms.
//!
//! Whatever happens, the process group is sent `SIGKILL` before the child
//! is reaped: while the leader is an unreaped zombie its pgid cannot be
//! reused, so the kill never reaches an unrelated group.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Resource limits applied to the child (and inherited by its children).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub cpu_s: u64,
    pub address_space: u64,
    pub file_size: u64,
    pub open_files: u64,
}

pub(crate) struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Vec<u8>,
    pub limits: Option<Limits>,
    pub timeout: Duration,
    pub output_cap: usize,
}

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub overflowed: bool,
}

/// Runs `spec` to completion, deadline or output overflow.
pub(crate) fn run(spec: &Spec) -> io::Result<Finished> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let limits = spec.limits;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(l) = limits {
                set_limit(libc::RLIMIT_CPU, l.cpu_s, l.cpu_s + 1)?;
                set_limit(libc::RLIMIT_AS, l.address_space, l.address_space)?;
                set_limit(libc::RLIMIT_FSIZE, l.file_size, l.file_size)?;
                set_limit(libc::RLIMIT_NOFILE, l.open_files, l.open_files)?;
                set_limit(libc::RLIMIT_CORE, 0, 0)?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id() as libc::pid_t;
    let result = supervise(&mut child, spec, started);
    // SAFETY: plain syscall; the leader is not reaped yet (see module doc).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let status = child.wait()?;
    let (stdout, stderr, timed_out, overflowed) = result?;
    Ok(Finished {
        status,
        stdout,
        stderr,
        timed_out,
        overflowed,
    })
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(resource, &lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

type Captured = (Vec<u8>, Vec<u8>, bool, bool);

/// Feeds stdin, collects output and waits (without reaping) until the child
/// exits, the deadline passes or a stream overflows.
fn supervise(child: &mut Child, spec: &Spec, started: Instant) -> io::Result<Captured> {
    if let Some(mut stdin) = child.stdin.take() {
        // The payload is a few bytes, below the pipe buffer: this never
        // blocks. A child that died already gives EPIPE, which is its verdict.
        let _ = stdin.write_all(&spec.stdin);
    }
    let mut streams = [
        Stream::new(child.stdout.take().map(OwnedFd::from))?,
        Stream::new(child.stderr.take().map(OwnedFd::from))?,
    ];
    let pid = child.id() as libc::pid_t;
    let pidfd = pidfd_open(pid);
    let deadline = started + spec.timeout;
    let (mut timed_out, mut overflowed) = (false, false);
    loop {
        if has_exited(pid)? {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .filter_map(|s| s.fd.as_ref().map(AsRawFd::as_raw_fd))
            .chain(pidfd.as_ref().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut wait = deadline - now;
        if pidfd.is_none() {
            wait = wait.min(Duration::from_millis(10));
        }
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid, exclusively borrowed pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for s in &mut streams {
            if s.drain(spec.output_cap) {
                overflowed = true;
            }
        }
        if overflowed {
            break;
        }
    }
    // Whatever is already in the pipes; a straggler that still holds a pipe
    // open is not waited for.
    for s in &mut streams {
        overflowed |= s.drain(spec.output_cap);
    }
    let [out, err] = streams;
    Ok((out.buf, err.buf, timed_out, overflowed))
}

/// One output pipe, read without blocking into a capped buffer.
struct Stream {
    fd: Option<File>,
    buf: Vec<u8>,
}

impl Stream {
    fn new(fd: Option<OwnedFd>) -> io::Result<Self> {
        if let Some(fd) = &fd {
            set_nonblocking(fd.as_raw_fd())?;
        }
        Ok(Self {
            fd: fd.map(File::from),
            buf: Vec::new(),
        })
    }

    /// Reads what is available; returns true when the cap was exceeded.
    fn drain(&mut self, cap: usize) -> bool {
        let Some(fd) = &mut self.fd else {
            return false;
        };
        let mut chunk = [0u8; 8192];
        loop {
            match fd.read(&mut chunk) {
                Ok(0) => {
                    self.fd = None;
                    return false;
                }
                Ok(n) => {
                    let room = cap.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&chunk[..n.min(room)]);
                    if n > room {
                        self.fd = None;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.fd = None;
                    return false;
                }
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the child has exited, leaving it unreaped (`WNOWAIT`).
fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: with WNOHANG, si_pid is 0 unless a child changed state.
    Ok(unsafe { info.si_pid() } != 0)
}
