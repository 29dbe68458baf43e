//! Low-level process handling for the local runtime: spawning children that cannot
//! outlive their owner, recognising them again by pid, signalling them.
//!
//! Why not `tokio::process` / `std::process::Child` handles: a *detached* stack is
//! operated on by later `wiberctl` invocations that never spawned the processes, so
//! everything here works from a pid plus the process's start time (field 22 of
//! `/proc/PID/stat`), which together identify a process even after its pid is reused.
//! The spawning process additionally reaps its own children (`waitpid(WNOHANG)`), so no
//! zombies pile up in long test runs.
//!
//! "Attached" children must die with their owner even when it is SIGKILLed or aborts
//! without unwinding. We use `PR_SET_PDEATHSIG(SIGKILL)`, which the kernel delivers when
//! the *thread* that forked the child exits. Tokio test threads come and go, so all
//! attached children are forked from one dedicated spawner thread that lives as long as
//! the process. The child is the real service process (no wrapper), so SIGKILLing its pid
//! is a real crash of the service.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Everything needed to (re)start one process.
#[derive(Debug, Clone)]
pub(crate) struct SpawnSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// stdout and stderr are appended to this file.
    pub log: PathBuf,
    /// Attached: SIGKILL the child when this process dies.
    pub die_with_owner: bool,
    /// Run as this (uid, gid) instead of ours: PostgreSQL refuses to run as root.
    pub user: Option<(u32, u32)>,
}

/// A started process, identified robustly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

type Request = (SpawnSpec, mpsc::Sender<Result<Spawned>>);

/// The long-lived spawner thread for attached children (see module docs).
fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("wiber-spawner".into())
            .spawn(move || {
                // Ends only when the process ends: the Sender lives in a static.
                while let Ok((spec, reply)) = rx.recv() {
                    let _ = reply.send(spawn_here(&spec));
                }
            })
            .expect("starting the wiber-spawner thread");
        Mutex::new(tx)
    })
}

/// Starts `spec`; attached children are forked from the spawner thread.
pub(crate) fn spawn(spec: SpawnSpec) -> Result<Spawned> {
    if !spec.die_with_owner {
        return spawn_here(&spec);
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| anyhow!("the spawner lock is poisoned"))?
        .send((spec, reply_tx))
        .map_err(|_| anyhow!("the wiber-spawner thread is gone"))?;
    reply_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("the wiber-spawner thread did not answer within 30 s"))?
}

fn spawn_here(spec: &SpawnSpec) -> Result<Spawned> {
    use std::os::unix::process::CommandExt;

    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening the log file {}", spec.log.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some((uid, gid)) = spec.user {
        // std drops the supplementary groups too (setgroups) when root changes uid.
        cmd.uid(uid).gid(gid);
    }
    let owner = std::process::id() as libc::pid_t;
    let die_with_owner = spec.die_with_owner;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (setsid, prctl, getppid). std runs it after changing
    // the uid, which matters: a change of credentials clears PR_SET_PDEATHSIG.
    unsafe {
        cmd.pre_exec(move || {
            // Own session: Ctrl-C in wiberctl's terminal must not hit the stack, and a
            // detached stack must survive the terminal closing.
            libc::setsid();
            if die_with_owner {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The owner may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != owner {
                    return Err(std::io::Error::other("owner process already gone"));
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let pid = child.id();
    // Dropping `child` neither waits nor kills; we reap by pid in `state()`.
    drop(child);
    let start_ticks = read_start_ticks(pid).ok_or_else(|| {
        anyhow!(
            "{} (pid {pid}) vanished right after start",
            spec.program.display()
        )
    })?;
    Ok(Spawned { pid, start_ticks })
}

/// What the kernel says about a pid we started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcState {
    Running,
    /// Stopped by SIGSTOP (our "paused").
    Stopped,
    /// Exited, a zombie, or the pid now belongs to another process.
    Gone,
}

/// Reaps the process if it is our child and has exited, then reads its state. A pid whose
/// start time differs from `start_ticks` is someone else's process: `Gone`.
pub(crate) fn state(pid: u32, start_ticks: u64) -> ProcState {
    reap(pid);
    let Some(stat) = read_stat(pid) else {
        return ProcState::Gone;
    };
    if stat.start_ticks != start_ticks {
        return ProcState::Gone;
    }
    match stat.state {
        'Z' | 'X' | 'x' => ProcState::Gone,
        'T' | 't' => ProcState::Stopped,
        _ => ProcState::Running,
    }
}

/// `waitpid(WNOHANG)`: collects an exited child of ours; harmless (ECHILD) for others.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: plain syscall with a valid out-pointer.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

struct Stat {
    state: char,
    ppid: u32,
    start_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`: comm may contain spaces and parentheses, so split after
    // the *last* ')'. Fields after it start at field 3 (state); starttime is field 22.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn read_start_ticks(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_ticks)
}

/// Every pid in `/proc` (a snapshot: processes come and go while it is read).
fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The live children of `pid` (those whose parent it still is).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            read_stat(p).is_some_and(|s| s.ppid == pid && !matches!(s.state, 'Z' | 'X' | 'x'))
        })
        .collect()
}

/// Live processes named `comm` whose working directory is `dir`: how a server's
/// processes are found once their parent is gone (PostgreSQL's backends `chdir` into
/// their data directory). Only processes we may inspect are seen.
pub(crate) fn with_cwd(dir: &Path, comm: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c == dir)
                && fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
                && read_stat(p).is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
        })
        .collect()
}

/// The kernel's state letter of a pid (`R`, `S`, `Z` for a zombie, ...); `None` when
/// no such process exists at all.
pub(crate) fn state_letter(pid: u32) -> Option<char> {
    read_stat(pid).map(|s| s.state)
}

/// Sends `sig` to a process we found (not started): no identity to check.
pub(crate) fn signal_found(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; a process that exited meanwhile gives ESRCH, ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Sends `sig` to the process if it still is the one we started.
pub(crate) fn signal(pid: u32, start_ticks: u64, sig: libc::c_int) -> Result<()> {
    if state(pid, start_ticks) == ProcState::Gone {
        bail!("process {pid} is not running");
    }
    // SAFETY: plain syscall; identity was checked just above (a pid reused in between
    // would need the kernel to wrap the pid space in microseconds).
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(err).with_context(|| format!("sending signal {sig} to pid {pid}"));
    }
    Ok(())
}

/// Waits (bounded, polling every 50 ms) until the process is gone; true if it is.
pub(crate) async fn wait_gone(pid: u32, start_ticks: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if state(pid, start_ticks) == ProcState::Gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking variant for `Drop`.
pub(crate) fn wait_gone_blocking(pid: u32, start_ticks: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if state(pid, start_ticks) == ProcState::Gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a log file, reading at most its last 1 MiB.
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 1 << 20;
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.take(MAX).read_to_end(&mut buf);
    crate::provision::tail(&String::from_utf8_lossy(&buf), n)
}
