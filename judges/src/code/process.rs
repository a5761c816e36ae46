//! Running child processes under one wall-clock deadline with capped output.
//!
//! Each child starts in a new session (so it has no controlling terminal and
//! its process group can be killed as a whole), with rlimits set between
//! `fork` and `exec`, an empty environment plus the given variables, stdin
//! fed from a buffer, and optionally pipe ends of the caller's handed over
//! as fixed descriptor numbers (3, 4, ...); every other inherited descriptor
//! is closed at `exec`. Output is read with `poll` on non-blocking pipes
//! into buffers that never grow past the cap: once a stream exceeds it, the
//! run stops. A group of children (the code judge's test harness and its
//! candidate) runs until the first one, the leader, exits. The deadline is
//! exact when the kernel has `pidfd_open` (the leader's pidfd is polled);
//! otherwise the loop wakes every 10 ms.
//!
//! Whatever happens, every child's process group is sent `SIGKILL` before
//! the child is reaped: while the leader of a group is an unreaped zombie
//! its pgid cannot be reused, so the kill never reaches an unrelated group.

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
    pub output_cap: usize,
    /// Descriptors handed to the child: `(number in the child, our end)`.
    /// Numbers are 3 and up, below [`FIRST_PRIVATE_FD`]; our ends come
    /// from [`pipe`], so they never collide with the numbers.
    pub fds: Vec<(RawFd, OwnedFd)>,
}

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub overflowed: bool,
}

/// Descriptors the caller hands over stay below this; its own pipe ends
/// are moved to this or above.
pub(crate) const FIRST_PRIVATE_FD: RawFd = 10;

/// A pipe `(read end, write end)`, close-on-exec, both numbered at least
/// [`FIRST_PRIVATE_FD`].
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are new descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((renumber(r)?, renumber(w)?))
}

/// The same open file under a close-on-exec number >= FIRST_PRIVATE_FD.
fn renumber(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_PRIVATE_FD {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; a non-negative result is new.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Runs one child to completion, deadline or output overflow.
pub(crate) fn run(spec: Spec, timeout: Duration) -> io::Result<Finished> {
    let mut done = run_group(vec![spec], timeout)?;
    Ok(done.remove(0))
}

/// Runs `specs` together until the first one exits, the deadline passes or
/// a stream of any of them overflows; then kills them all. The results are
/// in the order of `specs`; `timed_out` describes the run as a whole and
/// is the same in each, `overflowed` says whose stream overflowed.
pub(crate) fn run_group(specs: Vec<Spec>, timeout: Duration) -> io::Result<Vec<Finished>> {
    let started = Instant::now();
    let mut running: Vec<Running> = Vec::with_capacity(specs.len());
    for spec in specs {
        match spawn(spec) {
            Ok(r) => running.push(r),
            Err(e) => {
                for r in &mut running {
                    let _ = r.kill_and_reap();
                }
                return Err(e);
            }
        }
    }
    let result = supervise(&mut running, started + timeout);
    let mut statuses = Vec::with_capacity(running.len());
    for r in &mut running {
        statuses.push(r.kill_and_reap());
    }
    let timed_out = result?;
    running
        .into_iter()
        .zip(statuses)
        .map(|(r, status)| {
            let [out, err] = r.streams;
            Ok(Finished {
                status: status?,
                stdout: out.buf,
                stderr: err.buf,
                timed_out,
                overflowed: r.overflowed,
            })
        })
        .collect()
}

/// A spawned child and the parent's ends of its standard streams.
struct Running {
    child: Child,
    stdin: Feed,
    streams: [Stream; 2],
    output_cap: usize,
    overflowed: bool,
}

impl Running {
    /// `SIGKILL` to the group, then reaps (see the module doc).
    fn kill_and_reap(&mut self) -> io::Result<ExitStatus> {
        // SAFETY: plain syscall; the leader is not reaped yet.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        self.child.wait()
    }
}

fn spawn(spec: Spec) -> io::Result<Running> {
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
    let handed: Vec<(RawFd, RawFd)> = spec
        .fds
        .iter()
        .map(|(target, fd)| (*target, fd.as_raw_fd()))
        .collect();
    if handed
        .iter()
        .any(|&(t, s)| !(3..FIRST_PRIVATE_FD).contains(&t) || s < FIRST_PRIVATE_FD)
    {
        return Err(io::Error::other(
            "handed descriptors must be 3..10, from pipe()",
        ));
    }
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, dup2, close_range, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            for &(target, source) in &handed {
                // dup2 makes `target` inheritable; sources are >= 10, so no
                // target overwrites a source still to be copied.
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Descriptors the caller's process inherited without
            // close-on-exec (from a shell, a test runner) end at exec too.
            // Kernels before 5.11 lack the flag; those descriptors then
            // stay, as they did before.
            libc::syscall(
                libc::SYS_close_range,
                FIRST_PRIVATE_FD as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
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
    let mut child = cmd.spawn()?;
    // Our copies of the handed pipe ends close here, so that each pipe
    // reports end-of-file once the children holding it are gone.
    drop(spec.fds);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let ends = (|| {
        let stdin = Feed::new(stdin.map(OwnedFd::from), spec.stdin)?;
        let out = Stream::new(stdout.map(OwnedFd::from))?;
        let err = Stream::new(stderr.map(OwnedFd::from))?;
        io::Result::Ok((stdin, [out, err]))
    })();
    match ends {
        Ok((stdin, streams)) => Ok(Running {
            child,
            stdin,
            streams,
            output_cap: spec.output_cap,
            overflowed: false,
        }),
        Err(e) => {
            // SAFETY: plain syscall; the child is not reaped yet.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            Err(e)
        }
    }
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

/// Feeds stdin, collects output and waits (without reaping) until the
/// leader exits, the deadline passes or a stream overflows. Returns
/// whether the deadline passed.
fn supervise(running: &mut [Running], deadline: Instant) -> io::Result<bool> {
    let Some(leader) = running.first() else {
        return Ok(false);
    };
    let pid = leader.child.id() as libc::pid_t;
    let pidfd = pidfd_open(pid);
    let mut timed_out = false;
    loop {
        for r in running.iter_mut() {
            r.stdin.push();
        }
        if has_exited(pid)? {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let readable = running
            .iter()
            .flat_map(|r| &r.streams)
            .filter_map(|s| s.fd.as_ref().map(AsRawFd::as_raw_fd))
            .chain(pidfd.as_ref().map(AsRawFd::as_raw_fd))
            .map(|fd| (fd, libc::POLLIN));
        let writable = running
            .iter()
            .filter_map(|r| r.stdin.fd.as_ref().map(AsRawFd::as_raw_fd))
            .map(|fd| (fd, libc::POLLOUT));
        let mut fds: Vec<libc::pollfd> = readable
            .chain(writable)
            .map(|(fd, events)| libc::pollfd {
                fd,
                events,
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
        if drain_all(running) {
            break;
        }
    }
    // Whatever is already in the pipes; a straggler that still holds a pipe
    // open is not waited for.
    drain_all(running);
    Ok(timed_out)
}

/// Reads every stream; true when one has exceeded its cap.
fn drain_all(running: &mut [Running]) -> bool {
    let mut any = false;
    for r in running {
        let cap = r.output_cap;
        for s in &mut r.streams {
            r.overflowed |= s.drain(cap);
        }
        any |= r.overflowed;
    }
    any
}

/// The child's stdin, written without blocking from a buffer, then closed.
struct Feed {
    fd: Option<File>,
    data: Vec<u8>,
    at: usize,
}

impl Feed {
    fn new(fd: Option<OwnedFd>, data: Vec<u8>) -> io::Result<Self> {
        if let Some(fd) = &fd {
            set_nonblocking(fd.as_raw_fd())?;
        }
        let mut feed = Self {
            fd: fd.map(File::from),
            data,
            at: 0,
        };
        feed.push();
        Ok(feed)
    }

    /// Writes what the pipe takes; closes it when all is written or the
    /// child stopped reading (a child that died already gives EPIPE, which
    /// is its verdict).
    fn push(&mut self) {
        let Some(fd) = &mut self.fd else {
            return;
        };
        while self.at < self.data.len() {
            match fd.write(&self.data[self.at..]) {
                Ok(n) => self.at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.fd = None;
    }
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
