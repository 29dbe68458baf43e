//! The local runtime's PostgreSQL (`postgres#1`, the cluster FerretDB stores into):
//! Debian's server binaries, the unprivileged user they run as, the cluster's
//! directories and `initdb`, the command line of the server, and its processes.
//!
//! Why a user of its own: PostgreSQL refuses to run as root. When `wiberctl` is root
//! (CI, our machines), initdb and the server run as the `postgres` system user that
//! Debian's package creates, and the cluster's directories belong to it; otherwise they
//! run as the current user. Everything else (the log file, `state.json`) stays ours.
//!
//! ```text
//! postgres/data/     the cluster (initdb'd once, so restarts keep the data)
//! postgres/run/      its unix socket (TCP on 127.0.0.1 is what clients use)
//! ```

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::process;

/// Where Debian installs the server binaries, one directory per major version.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";
/// Set to a directory holding `postgres` and `initdb` to use other binaries.
const BIN_DIR_VAR: &str = "WIBER_POSTGRES_BIN_DIR";
/// The system user Debian's package creates, which the cluster runs as under root.
const SYSTEM_USER: &str = "postgres";
/// `sun_path` holds 108 bytes with the terminating NUL; the socket file is
/// `<dir>/.s.PGSQL.<port>`, at most 15 bytes after the directory.
const MAX_SOCKET_DIR_LEN: usize = 107 - 16;

/// Who the cluster's processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// The directory of the newest installed server binaries: `$WIBER_POSTGRES_BIN_DIR`,
/// else the highest version under `/usr/lib/postgresql/<version>/bin`.
pub(crate) fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
        let dir = PathBuf::from(dir);
        if !has_server_binaries(&dir) {
            bail!(
                "{BIN_DIR_VAR}={} holds no `postgres` and `initdb`: point it at a PostgreSQL bin directory or unset it",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_LIB)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                has_server_binaries(&bin).then_some((version, bin))
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL's server binaries (postgres, initdb) are not installed: no \
             {DEBIAN_LIB}/<version>/bin holds them. The stack's store runs on PostgreSQL: \
             install Debian's package with `apt-get install postgresql` (or set \
             {BIN_DIR_VAR} to a directory holding them)"
        )
    })
}

fn has_server_binaries(dir: &Path) -> bool {
    ["postgres", "initdb"].iter().all(|b| {
        fs::metadata(dir.join(b)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `None` when we are not root (the cluster runs as us), else the `postgres` system user.
pub(crate) fn run_as() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let user = lookup_user(SYSTEM_USER)?.ok_or_else(|| {
        anyhow!(
            "PostgreSQL refuses to run as root, so wiberctl (running as root) runs it as the \
             `{SYSTEM_USER}` system user, which does not exist on this machine: install \
             Debian's package with `apt-get install postgresql` (it creates the user), or \
             create the user with `adduser --system --group {SYSTEM_USER}`"
        )
    })?;
    Ok(Some(user))
}

/// The uid and gid of a user, from the password database (`getpwnam_r`).
fn lookup_user(name: &str) -> Result<Option<RunAs>> {
    let cname = CString::new(name)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed is a valid bit pattern for the plain-data passwd struct.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings
    // (only the numeric ids are read).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("looking up user {name}"));
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// The cluster's data directory under the stack's `postgres/` directory.
pub(crate) fn data_dir(pg_dir: &Path) -> PathBuf {
    pg_dir.join("data")
}

/// The unix socket directory, or `None` when its path is too long for a socket (a deep
/// checkout): then the server listens on TCP only, which is all the stack uses.
pub(crate) fn socket_dir(pg_dir: &Path) -> Option<PathBuf> {
    let dir = pg_dir.join("run");
    (dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN).then_some(dir)
}

/// Creates the cluster's directories, owned by `user`, and checks that `user` can reach
/// them (every directory above must let it through).
pub(crate) fn prepare_dirs(pg_dir: &Path, user: Option<RunAs>) -> Result<()> {
    fs::create_dir_all(pg_dir).with_context(|| format!("creating {}", pg_dir.display()))?;
    let mut dirs = vec![pg_dir.to_path_buf()];
    dirs.extend(socket_dir(pg_dir));
    for d in &dirs[1..] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if let Some(u) = user {
        for d in &dirs {
            std::os::unix::fs::chown(d, Some(u.uid), Some(u.gid)).with_context(|| {
                format!(
                    "giving {} to the {SYSTEM_USER} user (uid {})",
                    d.display(),
                    u.uid
                )
            })?;
        }
        check_traversable(pg_dir, u)?;
    }
    Ok(())
}

/// Fails, naming the directory and the fix, when `user` cannot pass through one of the
/// directories above `dir` (e.g. a checkout under `/root`, mode 0700).
fn check_traversable(dir: &Path, user: RunAs) -> Result<()> {
    for d in dir.ancestors().skip(1) {
        let m = fs::metadata(d).with_context(|| format!("reading {}", d.display()))?;
        let mode = m.permissions().mode();
        let passes = if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !passes {
            bail!(
                "PostgreSQL runs as the {SYSTEM_USER} user (uid {}), which cannot enter {} \
                 (mode {:o}, owner uid {}) to reach its data in {}: let it through with \
                 `chmod o+x {}`, or keep the checkout where every directory is world-searchable",
                user.uid,
                d.display(),
                mode & 0o7777,
                m.uid(),
                dir.display(),
                d.display()
            );
        }
    }
    Ok(())
}

/// True once the data directory holds a cluster (`initdb` finished: it is made in a
/// side directory and renamed into place, so a cluster is never half made).
pub(crate) fn initialized(pg_dir: &Path) -> bool {
    data_dir(pg_dir).join("PG_VERSION").is_file()
}

/// Runs `initdb` (blocking, bounded) into `<pg_dir>/data`: superuser `user_name`, trust
/// authentication (the server listens on 127.0.0.1 only), UTF-8, C locale. Its output is
/// appended to `log`.
pub(crate) fn initdb(
    bin: &Path,
    pg_dir: &Path,
    user: Option<RunAs>,
    user_name: &str,
    log: &Path,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let data = data_dir(pg_dir);
    let partial = pg_dir.join("data.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    if data.exists() {
        // Not a cluster (no PG_VERSION): nothing of value, and initdb wants it absent.
        fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    let mut cmd = std::process::Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(&partial)
        .args([
            "--auth=trust",
            &format!("--username={user_name}"),
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ])
        // Its working directory must be one the user can read.
        .current_dir(pg_dir);
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid);
    }
    // Bounded: initdb takes about a second.
    crate::provision::run_logged(
        cmd,
        log,
        Duration::from_secs(120),
        &format!("initdb of {}", partial.display()),
        "see the output below; `wiberctl stack down --volumes` starts the cluster afresh",
    )?;
    fs::rename(&partial, &data)
        .with_context(|| format!("moving {} to {}", partial.display(), data.display()))
}

/// The server's command line. Every setting is given here rather than in
/// `postgresql.conf`, so a restart always runs with these, whatever the file says.
pub(crate) fn server_args(pg_dir: &Path, port: u16) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-D".into(), data_dir(pg_dir).into()];
    let mut set = |k: &str, v: &str| {
        args.push("-c".into());
        args.push(format!("{k}={v}").into());
    };
    set("listen_addresses", "127.0.0.1");
    set("port", &port.to_string());
    // Durability: PostgreSQL's defaults, stated so that nothing can turn them off. A
    // write FerretDB acknowledges is committed and flushed.
    set("fsync", "on");
    set("synchronous_commit", "on");
    set("full_page_writes", "on");
    // Small machine: 128 MB of buffers; FerretDB's pool opens up to 50 connections,
    // plus wiberctl's own checks and the superuser reserve.
    set("shared_buffers", "128MB");
    set("max_connections", "100");
    // Logs go to stderr, which is the instance's log file.
    set("logging_collector", "off");
    let sockets = socket_dir(pg_dir)
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    set("unix_socket_directories", &sockets);
    args
}

/// The cluster's live server processes (the postmaster and its children, or orphans
/// of a postmaster that was killed): every `postgres` whose working directory is the
/// data directory.
pub(crate) fn cluster_pids(pg_dir: &Path) -> Vec<u32> {
    process::with_cwd(&data_dir(pg_dir), "postgres")
}

/// Waits (bounded) until no process of the cluster is left: after a SIGKILL of the
/// postmaster its children notice and exit on their own, but while one still holds the
/// shared memory a new postmaster refuses to start ("pre-existing shared memory block
/// is still in use").
pub(crate) async fn wait_cluster_gone(pg_dir: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let left = cluster_pids(pg_dir);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "processes of a previous PostgreSQL of {} are still running after {limit:?} \
                 (pids {left:?}): stop them (`kill {}`), then start postgres#1 again",
                data_dir(pg_dir).display(),
                left.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes the cluster's lock files (`postmaster.pid`, and the unix socket's
/// `.s.PGSQL.<port>.lock`) when the postmaster they name is provably dead; returns what
/// it removed, for the log.
///
/// PostgreSQL removes a stale lock file itself when its pid is gone, but it asks with
/// `kill(pid, 0)`, which succeeds for a zombie: a killed postmaster whose new parent
/// (init, after the `wiberctl` that started it exited) has not reaped it yet looks
/// alive, and the new postmaster refuses to start ("lock file ... already exists"; init
/// here took ~5 s to reap). Call only once no process of the cluster is left
/// ([`wait_cluster_gone`]), so no one holds its shared memory either.
pub(crate) fn clear_stale_locks(pg_dir: &Path) -> Result<Vec<String>> {
    let mut locks = vec![data_dir(pg_dir).join("postmaster.pid")];
    if let Some(sockets) = socket_dir(pg_dir) {
        if let Ok(dir) = fs::read_dir(&sockets) {
            locks.extend(dir.filter_map(|e| {
                let p = e.ok()?.path();
                let name = p.file_name()?.to_str()?;
                (name.starts_with(".s.PGSQL.") && name.ends_with(".lock")).then_some(p)
            }));
        }
    }
    let cluster = cluster_pids(pg_dir);
    let mut removed = Vec::new();
    for lock in locks {
        let Ok(text) = fs::read_to_string(&lock) else {
            continue;
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let why = match process::state_letter(pid) {
            // Gone for good: PostgreSQL's own check sees that.
            None => continue,
            Some('Z' | 'X' | 'x') => "a zombie not reaped yet",
            // Alive and not a postgres of this cluster (those were waited for): the
            // pid now belongs to another process.
            Some(_) if !cluster.contains(&pid) => "its pid now belongs to another process",
            Some(_) => continue,
        };
        fs::remove_file(&lock).with_context(|| format!("removing the stale {}", lock.display()))?;
        removed.push(format!(
            "removed the stale {} of postmaster {pid} ({why})",
            lock.display()
        ));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_keep_durability_and_listen_on_loopback_only() {
        let args: Vec<String> = server_args(Path::new("/s/postgres"), 5433)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-D /s/postgres/data",
            "-c listen_addresses=127.0.0.1",
            "-c port=5433",
            "-c fsync=on",
            "-c synchronous_commit=on",
            "-c unix_socket_directories=/s/postgres/run",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
    }

    #[test]
    fn a_socket_dir_too_long_for_a_socket_is_left_out() {
        let deep = PathBuf::from("/").join("d".repeat(100)).join("postgres");
        assert_eq!(socket_dir(&deep), None);
        let args: Vec<String> = server_args(&deep, 5433)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(args.contains(&"unix_socket_directories=".to_string()));
    }

    #[test]
    fn the_postgres_user_is_found_when_it_exists() {
        assert_eq!(lookup_user("no-such-user-wiber").unwrap(), None);
        assert_eq!(lookup_user("root").unwrap(), Some(RunAs { uid: 0, gid: 0 }));
    }
}
