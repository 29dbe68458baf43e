//! Toxiproxy v2.5.0, for the network faults this kernel cannot make with tc (it has no
//! netem qdisc): delay, timeout and reset. [`super`] (netfault) owns the faults and the
//! iptables rules that steer a namespace's traffic into the proxy; this module owns the
//! binaries and the proxy processes.
//!
//! - [`ensure_binaries`]: `go install`s `toxiproxy-server` and `toxiproxy-cli` once into
//!   `<root>/.wiber/cache/toxiproxy-v2.5.0/bin` (7 s with a warm Go build cache, ~70 s
//!   with a cold one on 2 cores; an flock keeps two processes from building at once).
//! - [`start_server`]: runs `toxiproxy-server` inside a namespace (`nsenter -t PID -n`),
//!   detached, with `WIBER_FAULT=<id>` in its environment, and waits for its API.
//!   [`create_proxy`] adds one proxied port with its toxic.
//! - [`find_servers`], [`stop_servers`]: the servers are found again by scanning
//!   `/proc/*/environ` for that variable, never through a pidfile, so a wiberctl that was
//!   SIGKILLed after applying a fault leaves nothing a later heal cannot find.
//!
//! A server whose namespace lost every other process (its container stopped or was
//! restarted into a fresh namespace) keeps that namespace alive and serves nobody: it is
//! an orphan, and heals sweep orphans (see [`find_servers`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{ns_exec_path, require_tool, MAX_ID_LEN};

/// The Toxiproxy release we build (its module path and tag).
pub const TOXIPROXY_VERSION: &str = "v2.5.0";

const TOXIPROXY_MODULE: &str = "github.com/Shopify/toxiproxy/v2";

/// The environment variable that marks a server as the proxy of fault `<id>`.
pub const FAULT_ENV: &str = "WIBER_FAULT";

/// The server's name as a process (argv[0]'s file name): checked before every kill, so a
/// recycled pid is never signalled.
pub const SERVER_NAME: &str = "toxiproxy-server";

/// The first API port tried inside the namespace (Toxiproxy's own default is 8474).
pub const API_PORT_BASE: u16 = 18474;

/// How many ports after [`API_PORT_BASE`] are tried.
const API_PORT_SPAN: u16 = 64;

/// A proxied port P listens on P + this inside the namespace, when that is free.
pub const LISTEN_OFFSET: u16 = 20000;

/// Where listen ports come from when P + [`LISTEN_OFFSET`] is taken or out of range:
/// below Linux's default ephemeral range (32768-60999), so outgoing connections never
/// hold them.
const LISTEN_FALLBACK: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Bound on the wait for a fresh server's API.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One API call of the CLI takes milliseconds; a hung one must not hang an apply.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM, then SIGKILL after this.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Bound on the wait for a SIGKILLed server to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A cold build takes ~70 s here (2 cores, empty Go build cache), longer on a loaded
/// machine or with the modules still to download.
const GO_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Waiting for another process's build (bounded by its own GO_TIMEOUT).
const LOCK_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The two binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToxiproxyBins {
    pub server: PathBuf,
    pub cli: PathBuf,
}

impl ToxiproxyBins {
    fn in_dir(bin: &Path) -> ToxiproxyBins {
        ToxiproxyBins {
            server: bin.join(SERVER_NAME),
            cli: bin.join("toxiproxy-cli"),
        }
    }

    fn exist(&self) -> bool {
        self.server.is_file() && self.cli.is_file()
    }
}

/// `<root>/.wiber/cache/toxiproxy-v2.5.0`.
fn cache_dir(root: &Path) -> PathBuf {
    root.join(".wiber")
        .join("cache")
        .join(format!("toxiproxy-{TOXIPROXY_VERSION}"))
}

/// The binaries if they are built already (no build, no lock).
pub fn cached_binaries(root: &Path) -> Option<ToxiproxyBins> {
    let bins = ToxiproxyBins::in_dir(&cache_dir(root).join("bin"));
    bins.exist().then_some(bins)
}

/// Checks that [`ensure_binaries`] can succeed without building anything surprising:
/// built already, or `go` is there to build them.
pub fn check_buildable(root: &Path) -> Result<()> {
    if cached_binaries(root).is_some() || which("go").is_some() {
        return Ok(());
    }
    bail!(
        "delay, timeout and reset faults need Toxiproxy, which is built with Go and `go` is not \
         on PATH: install Go 1.17 or newer (or copy toxiproxy-server and toxiproxy-cli {} into {})",
        TOXIPROXY_VERSION,
        cache_dir(root).join("bin").display()
    )
}

/// Builds `toxiproxy-server` and `toxiproxy-cli` with `go install` into
/// `<root>/.wiber/cache/toxiproxy-v2.5.0/bin`, once: later calls (from any process) find
/// both and return at once. Blocking; safe from several processes at a time.
pub fn ensure_binaries(root: &Path) -> Result<ToxiproxyBins> {
    let dir = cache_dir(root);
    let bin = dir.join("bin");
    let bins = ToxiproxyBins::in_dir(&bin);
    // Fast path without the lock: each binary gets its final name by a rename, after it
    // was built and ran, so a name that exists is a whole binary.
    if bins.exist() {
        return Ok(bins);
    }
    fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the Toxiproxy cache {}", dir.display()))?;
    let _lock = FileLock::acquire(&dir.join("install.lock"), LOCK_TIMEOUT)?;
    // Another process may have built them while we waited.
    if bins.exist() {
        return Ok(bins);
    }
    check_buildable(root)?;
    let started = Instant::now();
    eprintln!(
        "wiber: building Toxiproxy {TOXIPROXY_VERSION} with `go install` into {} \
         (first run only, up to a minute or two)...",
        bin.display()
    );
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let mut cmd = Command::new("go");
    // `go install pkg@version` ignores any module around the working directory; the cache
    // directory has none anyway. GOPROXY and the rest come from the machine's Go config.
    cmd.current_dir(&dir)
        .env("GOBIN", &bin)
        .env("CGO_ENABLED", "0")
        .arg("install")
        // Without it both binaries report version "git".
        .arg(format!(
            "-ldflags=-X={TOXIPROXY_MODULE}.Version={TOXIPROXY_VERSION}"
        ))
        .arg(format!("{TOXIPROXY_MODULE}/cmd/server@{TOXIPROXY_VERSION}"))
        .arg(format!("{TOXIPROXY_MODULE}/cmd/cli@{TOXIPROXY_VERSION}"));
    crate::provision::run_logged(
        cmd,
        &dir.join("go.log"),
        GO_TIMEOUT,
        &format!("building Toxiproxy {TOXIPROXY_VERSION}"),
        "check that `go version` works and that go can reach its module proxy (GOPROXY)",
    )?;
    // `go install` names them after their package directories: server and cli.
    for (built, target) in [("server", &bins.server), ("cli", &bins.cli)] {
        let built = bin.join(built);
        let out = Command::new(&built)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run the freshly built {}", built.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains(TOXIPROXY_VERSION) {
            bail!(
                "the freshly built {} does not run (`-version` exited {}, printed {:?}): \
                 delete {} and retry",
                built.display(),
                out.status,
                text.trim(),
                dir.display()
            );
        }
        fs::rename(&built, target)
            .with_context(|| format!("cannot move {} to {}", built.display(), target.display()))?;
    }
    eprintln!(
        "wiber: Toxiproxy {TOXIPROXY_VERSION} ready in {:.1?}",
        started.elapsed()
    );
    Ok(bins)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An exclusive `flock(2)` on a file, released when dropped or when the process dies (no
/// stale lock after a crash).
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path, timeout: Duration) -> Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let deadline = Instant::now() + timeout;
        let mut told = false;
        loop {
            // SAFETY: flock on a file descriptor owned by `file`, open for the whole call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {timeout:?} for {} (another process is building Toxiproxy): \
                     wait for it (see `fuser {}`), or kill it and retry",
                    path.display(),
                    path.display()
                );
            }
            if !told {
                eprintln!("wiber: another process is building Toxiproxy; waiting for it...");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sockets of a namespace, from /proc/<pid>/net/tcp{,6} (that file shows the network
// namespace of <pid>, so no nsenter is needed to read it).
// ---------------------------------------------------------------------------------------

/// A TCP socket of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub listening: bool,
}

/// The sockets of a `/proc/net/tcp` or `/proc/net/tcp6` listing that hold a port. Left
/// out: TIME_WAIT, which does not keep a listener that sets SO_REUSEADDR (as Go's do) off
/// its port; otherwise every heal would leave P + 20000 taken for a minute by the
/// connections that went through the proxy. Addresses are printed as native-endian
/// 32-bit words, so this is right on the machine that printed them.
pub fn parse_proc_tcp(listing: &str) -> Vec<Socket> {
    listing
        .lines()
        .skip(1)
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            // TCP_TIME_WAIT is state 0x06.
            if *t.get(3)? == "06" {
                return None;
            }
            let (addr, port) = t.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let words = (0..addr.len() / 8)
                .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
                .collect::<Option<Vec<u32>>>()?;
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let ip = match bytes.len() {
                4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
                16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
                _ => return None,
            };
            Some(Socket {
                local: SocketAddr::new(ip, port),
                // TCP_LISTEN is state 0x0A.
                listening: *t.get(3)? == "0A",
            })
        })
        .collect()
}

/// The TCP sockets of the network namespace of `pid`.
pub fn namespace_sockets(pid: u32) -> Result<Vec<Socket>> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{file}");
        match fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_proc_tcp(&text)),
            // No IPv6 in the kernel: no tcp6 file.
            Err(e) if file == "tcp6" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read {path}: is process {pid} still running?")
                })
            }
        }
    }
    Ok(out)
}

/// Where the proxy of port `port` connects: the address the service listens on, as seen
/// from inside its namespace. A wildcard or loopback listener (or none yet) is reached
/// on 127.0.0.1; a service bound to one address only is reached on that address (still
/// over lo, so none of the fault's rules sees the proxy's own connection).
pub fn upstream_for(port: u16, sockets: &[Socket]) -> SocketAddr {
    let listeners: Vec<IpAddr> = sockets
        .iter()
        .filter(|s| s.listening && s.local.port() == port)
        .map(|s| s.local.ip())
        .collect();
    let loopback_ok = listeners.is_empty()
        || listeners.iter().any(|ip| match ip {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_loopback(),
            // A dual-stack `::` listener accepts 127.0.0.1 too.
            IpAddr::V6(v6) => v6.is_unspecified(),
        });
    let ip = if loopback_ok {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        listeners[0]
    };
    SocketAddr::new(ip, port)
}

/// Picks the API port and one listen port per entry of `ports`, none of them a local
/// port of `sockets`, one of `ports`, or picked twice. The listen port of P is P + 20000
/// when that is free, else the first free one of 30000-32767.
pub fn pick_ports(ports: &[u16], sockets: &[Socket]) -> Result<(u16, Vec<u16>)> {
    let mut taken: HashSet<u16> = sockets.iter().map(|s| s.local.port()).collect();
    taken.extend(ports.iter().copied());
    let api = (API_PORT_BASE..API_PORT_BASE + API_PORT_SPAN)
        .find(|p| !taken.contains(p))
        .ok_or_else(|| {
            anyhow!(
                "ports {API_PORT_BASE}-{} are all in use in the namespace: heal the faults \
                 there (heal_everything) or free one",
                API_PORT_BASE + API_PORT_SPAN - 1
            )
        })?;
    taken.insert(api);
    let mut listens = Vec::new();
    for &p in ports {
        let preferred = p.checked_add(LISTEN_OFFSET).filter(|l| !taken.contains(l));
        let listen = preferred
            .or_else(|| LISTEN_FALLBACK.clone().find(|l| !taken.contains(l)))
            .ok_or_else(|| {
                anyhow!(
                    "no free port for the proxy of port {p} in the namespace (tried \
                     {p}+{LISTEN_OFFSET} and 30000-32767): heal the namespace's faults"
                )
            })?;
        taken.insert(listen);
        listens.push(listen);
    }
    Ok((api, listens))
}

// ---------------------------------------------------------------------------------------
// The server and its proxies.
// ---------------------------------------------------------------------------------------

/// What a proxy does to the connections through it (its toxics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toxic {
    /// Each chunk the service sends back waits `ms` ± `jitter_ms` (downstream latency).
    Latency { ms: u64, jitter_ms: u64 },
    /// Nothing passes either way; the connection is closed after `ms` (0: never).
    Timeout { ms: u64 },
    /// The first bytes a client sends reset the connection (RST to both ends), so the
    /// request never reaches the service.
    Reset,
}

impl Toxic {
    /// The `toxiproxy-cli` arguments after `-h <api>` that add the toxic(s) to `proxy`.
    pub fn add_args(&self, proxy: &str) -> Vec<Vec<String>> {
        let add = |name: &str, kind: &str, stream: &str, attrs: &[String]| {
            let mut v: Vec<String> = ["toxic", "add", "-n", name, "-t", kind, stream]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for a in attrs {
                v.push("-a".into());
                v.push(a.clone());
            }
            v.push(proxy.to_string());
            v
        };
        match *self {
            Toxic::Latency { ms, jitter_ms } => vec![add(
                "wiber-latency",
                "latency",
                "-d",
                &[format!("latency={ms}"), format!("jitter={jitter_ms}")],
            )],
            Toxic::Timeout { ms } => ["-u", "-d"]
                .iter()
                .map(|stream| {
                    let name = format!("wiber-timeout-{}", &stream[1..]);
                    add(&name, "timeout", stream, &[format!("timeout={ms}")])
                })
                .collect(),
            Toxic::Reset => vec![add(
                "wiber-reset",
                "reset_peer",
                "-u",
                &["timeout=0".to_string()],
            )],
        }
    }
}

/// The proxy of `port` in fault `id`'s server.
pub fn proxy_name(id: &str, port: u16) -> String {
    format!("wiber-{id}-{port}")
}

/// Where fault `id`'s server logs: `<root>/.wiber/toxiproxy/<id>.log`.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    root.join(".wiber")
        .join("toxiproxy")
        .join(format!("{id}.log"))
}

/// Runs `toxiproxy-cli -h 127.0.0.1:<api> <args>` in the namespace of `pid`.
fn cli(pid: u32, bins: &ToxiproxyBins, api: u16, args: &[String]) -> Result<String> {
    let mut argv = vec!["-h".to_string(), format!("127.0.0.1:{api}")];
    argv.extend(args.iter().cloned());
    ns_exec_path(pid, &bins.cli, &argv, CLI_TIMEOUT)
}

/// Starts fault `id`'s `toxiproxy-server` in the namespace of `pid`, its API on
/// 127.0.0.1:`api`, and waits (bounded) until the API answers. The server runs in a
/// session of its own with stdio on [`log_path`] and `WIBER_FAULT=<id>` as its only
/// environment; nothing about it is recorded outside the process itself. On failure a
/// server that did start is left running: the caller's rollback stops it by its id.
pub fn start_server(pid: u32, id: &str, api: u16, bins: &ToxiproxyBins, root: &Path) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        bail!("invalid fault id {id:?} for a Toxiproxy server");
    }
    let log = log_path(root, id);
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the Toxiproxy log directory {}",
                dir.display()
            )
        })?;
    }
    let file = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let nsenter = require_tool("nsenter")?;
    let mut cmd = Command::new(nsenter);
    // nsenter enters only the network namespace and then execs the server: the process
    // that runs is toxiproxy-server itself, with our environment.
    cmd.args(["-t", &pid.to_string(), "-n"])
        .arg(&bins.server)
        .args(["-host", "127.0.0.1", "-port", &api.to_string()])
        .env_clear()
        .env(FAULT_ENV, id)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        // A session of its own: no signal meant for wiberctl's terminal or process group
        // (Ctrl-C, a hangup) reaches it; only heal stops it.
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bins.server.display()))?;
    let server_pid = child.id();
    // Reaped by a thread, so a server that heal kills while this process still runs
    // does not stay a zombie; the thread reports an early exit.
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });

    let deadline = Instant::now() + READY_TIMEOUT;
    let list = ["list".to_string()];
    loop {
        if let Ok(status) = exited.try_recv() {
            let said = fs::read_to_string(&log).unwrap_or_default();
            let said = match said.trim() {
                "" => "nothing".to_string(),
                _ => format!(":\n{}", crate::provision::tail(&said, 10)),
            };
            bail!(
                "{SERVER_NAME} (pid {server_pid}) exited at once ({}) in the network namespace \
                 of pid {pid}; its log {} says {said}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                log.display(),
            );
        }
        match cli(pid, bins, api, &list) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "{SERVER_NAME} (pid {server_pid}) did not answer on 127.0.0.1:{api} in the \
                     network namespace of pid {pid} within {READY_TIMEOUT:?} (log: {})",
                    log.display()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Creates the proxy of `port` (listening on 0.0.0.0:`listen`, connecting to `upstream`)
/// in the server whose API is on `api`, with `toxic`.
pub fn create_proxy(
    pid: u32,
    bins: &ToxiproxyBins,
    api: u16,
    name: &str,
    listen: u16,
    upstream: SocketAddr,
    toxic: Toxic,
) -> Result<()> {
    let create: Vec<String> = [
        "create",
        "-l",
        &format!("0.0.0.0:{listen}"),
        "-u",
        &upstream.to_string(),
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cli(pid, bins, api, &create)?;
    for args in toxic.add_args(name) {
        cli(pid, bins, api, &args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Finding and stopping servers.
// ---------------------------------------------------------------------------------------

/// A running server of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProc {
    pub pid: u32,
    /// Its `WIBER_FAULT`.
    pub fault: String,
    /// Its network namespace (`net:[4026532...]`).
    pub netns: String,
    /// Its namespace holds no other process: the target is gone.
    pub orphan: bool,
}

impl ServerProc {
    pub fn describe(&self) -> String {
        format!(
            "{SERVER_NAME} pid {} (fault {}{})",
            self.pid,
            self.fault,
            if self.orphan {
                ", its target is gone"
            } else {
                ""
            }
        )
    }
}

/// The network namespace of `pid`, as its `/proc/<pid>/ns/net` link reads.
pub fn netns_of(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// `WIBER_FAULT` of a process's environment, if it is one of our servers (argv[0] is a
/// `toxiproxy-server`). None for anything else, gone or unreadable.
fn our_fault(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let name = Path::new(std::str::from_utf8(argv0).ok()?).file_name()?;
    if name != SERVER_NAME {
        return None;
    }
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{FAULT_ENV}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

/// Our servers: those in the namespace of `pid` (when given) and the orphans (servers
/// whose namespace holds no other process), with fault id `id` (when given). A `pid`
/// that is gone has no namespace: only orphans are found.
pub fn find_servers(pid: Option<u32>, id: Option<&str>) -> Result<Vec<ServerProc>> {
    let want = pid.and_then(netns_of);
    let mut ours = all_servers()?;
    ours.retain(|s| {
        (s.orphan || want.as_deref() == Some(s.netns.as_str())) && id.is_none_or(|id| s.fault == id)
    });
    Ok(ours)
}

/// Every server of ours on the host, whatever its namespace, by pid.
pub fn all_servers() -> Result<Vec<ServerProc>> {
    let mut ours = Vec::new();
    // The namespaces that hold a process other than our servers.
    let mut others: HashSet<String> = HashSet::new();
    let dir = fs::read_dir("/proc").context("cannot list /proc")?;
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(ns) = netns_of(p) else { continue };
        match our_fault(p) {
            Some(fault) => ours.push(ServerProc {
                pid: p,
                fault,
                netns: ns,
                orphan: false,
            }),
            None => {
                others.insert(ns);
            }
        }
    }
    for s in &mut ours {
        s.orphan = !others.contains(&s.netns);
    }
    ours.sort_by_key(|s| s.pid);
    Ok(ours)
}

/// Still the same server (our name, the same fault, the same namespace)?
fn still(s: &ServerProc) -> bool {
    our_fault(s.pid).as_deref() == Some(s.fault.as_str())
        && netns_of(s.pid).as_deref() == Some(s.netns.as_str())
        && !is_zombie(s.pid)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal_all(servers: &[&ServerProc], sig: libc::c_int) {
    for s in servers {
        // Checked right before the signal: a pid recycled since the scan is not ours.
        if still(s) {
            // SAFETY: kill has no memory effects; a gone pid makes it fail harmlessly.
            unsafe {
                libc::kill(s.pid as libc::pid_t, sig);
            }
        }
    }
}

fn wait_gone<'a>(servers: &[&'a ServerProc], within: Duration) -> Vec<&'a ServerProc> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<&ServerProc> = servers.iter().copied().filter(|s| still(s)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `servers`: SIGTERM, then SIGKILL after 2 s. Each pid is checked to still be that
/// server right before it is signalled. Returns what was stopped.
pub fn stop_servers(servers: &[ServerProc]) -> Result<Vec<String>> {
    let all: Vec<&ServerProc> = servers.iter().collect();
    signal_all(&all, libc::SIGTERM);
    let left = wait_gone(&all, TERM_GRACE);
    if !left.is_empty() {
        signal_all(&left, libc::SIGKILL);
        let stuck = wait_gone(&left, KILL_WAIT);
        if !stuck.is_empty() {
            bail!(
                "{} still running after SIGKILL: check `ps -o pid,stat,cmd -p {}`",
                stuck
                    .iter()
                    .map(|s| s.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
                stuck
                    .iter()
                    .map(|s| s.pid.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    Ok(servers.iter().map(ServerProc::describe).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str, listening: bool) -> Socket {
        Socket {
            local: s.parse().unwrap(),
            listening,
        }
    }

    #[test]
    fn reads_sockets_as_the_kernel_prints_them() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0000000000000000 100 0 0 10 0
   1: 0100007F:4876 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 124 1 0000000000000000 100 0 0 10 0
   2: 02D60A0A:1B58 01D60A0A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 125 1 0000000000000000 20 4 30 10 -1
   3: 02D60A0A:6978 01D60A0A:A1B3 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";
        let s = parse_proc_tcp(v4);
        if cfg!(target_endian = "little") {
            assert_eq!(
                s,
                [
                    sock("0.0.0.0:7000", true),
                    sock("127.0.0.1:18550", true),
                    sock("10.10.214.2:7000", false),
                ]
            );
        }
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:2385 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
";
        let s = parse_proc_tcp(v6);
        if cfg!(target_endian = "little") {
            assert_eq!(s, [sock("[::]:9092", true), sock("[::1]:9093", true)]);
        }
        assert!(parse_proc_tcp("header only\n").is_empty());
    }

    #[test]
    fn the_proxy_connects_where_the_service_listens() {
        let any = [sock("0.0.0.0:9092", true), sock("10.0.0.2:9092", false)];
        assert_eq!(upstream_for(9092, &any), "127.0.0.1:9092".parse().unwrap());
        let dual = [sock("[::]:9092", true)];
        assert_eq!(upstream_for(9092, &dual), "127.0.0.1:9092".parse().unwrap());
        let one = [sock("172.18.0.5:9092", true)];
        assert_eq!(upstream_for(9092, &one), "172.18.0.5:9092".parse().unwrap());
        let v6 = [sock("[fd00::5]:9092", true)];
        assert_eq!(upstream_for(9092, &v6), "[fd00::5]:9092".parse().unwrap());
        assert_eq!(upstream_for(9092, &[]), "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn picks_free_ports_inside_the_namespace() {
        let (api, l) = pick_ports(&[9092, 9094], &[]).unwrap();
        assert_eq!((api, l), (API_PORT_BASE, vec![29092, 29094]));
        // Taken ports are skipped: the API's base, and 29092 by a client's socket.
        let used = [sock("127.0.0.1:18474", true), sock("10.0.0.2:29092", false)];
        let (api, l) = pick_ports(&[9092, 9094], &used).unwrap();
        assert_eq!((api, l), (API_PORT_BASE + 1, vec![30000, 29094]));
        // P + 20000 beyond 65535, and a proxied port that is some other's P + 20000.
        let (_, l) = pick_ports(&[50000, 7000, 27000], &[]).unwrap();
        assert_eq!(l, vec![30000, 30001, 47000]);
    }

    #[test]
    fn toxics_become_cli_arguments() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Toxic::Latency {
                ms: 200,
                jitter_ms: 50
            }
            .add_args("p"),
            [s(&[
                "toxic",
                "add",
                "-n",
                "wiber-latency",
                "-t",
                "latency",
                "-d",
                "-a",
                "latency=200",
                "-a",
                "jitter=50",
                "p"
            ])]
        );
        let t = Toxic::Timeout { ms: 0 }.add_args("p");
        assert_eq!(t.len(), 2);
        assert!(t[0].contains(&"-u".to_string()) && t[1].contains(&"-d".to_string()));
        assert!(t.iter().all(|a| a.contains(&"timeout=0".to_string())));
        assert_eq!(
            Toxic::Reset.add_args("p")[0],
            s(&[
                "toxic",
                "add",
                "-n",
                "wiber-reset",
                "-t",
                "reset_peer",
                "-u",
                "-a",
                "timeout=0",
                "p"
            ])
        );
        assert_eq!(proxy_name("ab12", 9092), "wiber-ab12-9092");
    }

    #[test]
    fn our_servers_are_found_by_environment_and_name_only() {
        // This test process is no toxiproxy-server, whatever its environment.
        assert_eq!(our_fault(std::process::id()), None);
        let found = find_servers(Some(std::process::id()), Some("no-such-fault")).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert!(netns_of(std::process::id()).unwrap().starts_with("net:["));
    }
}
