//! Network faults inside a network namespace (a Docker container's, or one we create),
//! applied from the host: `nsenter -t <pid> -n` runs the host's iptables, ip6tables, tc
//! and ip inside the namespace of process `pid`, so the container needs none of them.
//! This kernel has no netem qdisc, so delay, timeout and reset go through a Toxiproxy
//! started inside the namespace ([`toxiproxy`]); drops are iptables (`-m
//! statistic` for a probability) and the rate limit is tc's tbf.
//!
//! API:
//! - [`NetFault`]: [`NetFault::Loss`] (drop `percent` % of the packets exchanged with
//!   `peers`, both directions), [`NetFault::Partition`] (drop every packet exchanged with
//!   `peers` in a [`Direction`]), [`NetFault::Bandwidth`] (egress tbf of every interface
//!   other than lo). Empty `peers` means everyone except loopback traffic.
//!   [`NetFault::Delay`], [`NetFault::Timeout`], [`NetFault::Reset`]: what happens to the
//!   TCP connections made to `ports` of the namespace (Toxiproxy).
//! - [`apply`]`(pid, id, fault)`, [`heal`]`(pid, id, fault)` (idempotent),
//!   [`heal_everything`]`(pid)` (every `WIBER-*` chain, our tbf and our Toxiproxy servers,
//!   for when the ledger is lost), [`active`]`(pid)` (what is applied now), [`check_host`]
//!   (root and binaries), [`check_toxiproxy`] (and Toxiproxy, or Go to build it).
//! - [`Ledger`]: a JSON file of [`LedgerEntry`]s, each recorded *before* its fault is
//!   applied, so every rule we may have added has a record to heal it by;
//!   [`Ledger::heal_all`] heals them all. [`new_fault_id`] makes the ids.
//!
//! Ownership, so that healing never touches rules that are not ours:
//! - iptables: one chain per fault, `WIBER-<id>` in the filter table, holding the drop
//!   rule. Peer and direction are matched by the jumps to it, inserted at position 1 of
//!   INPUT (`-s <peer>`, or `! -i lo` for everyone) and OUTPUT (`-d <peer>`, or `! -o lo`).
//!   Healing reads `iptables -S`, deletes exactly the rules that jump to the chain, then
//!   flushes and deletes the chain. IPv4 peers go to iptables, IPv6 peers to ip6tables;
//!   "everyone" covers both when ip6tables works in the namespace.
//! - tc: a root tbf qdisc with the handle [`TBF_HANDLE`], added with `tc qdisc add`
//!   (which refuses to replace a root qdisc someone else configured) and removed only
//!   when it still has that handle. One bandwidth fault per namespace: a second is
//!   refused, since a qdisc carries no fault id to tell two apart.
//! - Toxiproxy: one `toxiproxy-server` per fault inside the namespace, with
//!   `WIBER_FAULT=<id>` in its environment (how heal finds it, also after the wiberctl
//!   that started it was SIGKILLed), and chain `WIBER-<id>` in both the nat table (new
//!   connections to a port are redirected into its proxy) and the filter table
//!   (connections established before the fault are reset, so their clients reconnect
//!   through the proxy); see [`toxiproxy_iptables_commands`]. Heal removes the chains,
//!   then stops the server, which closes the proxied connections. One Toxiproxy fault per
//!   port: a second on the same port is refused.
//!
//! Limits worth knowing:
//! - Bandwidth is egress only (what the namespace sends); ingress is not shaped.
//! - Docker: the host reaches a container's published ports through the bridge (the
//!   userland proxy connects from the network's gateway address, DNAT keeps the host's
//!   source), so "everyone" includes wiberctl's own probes and the bench's requests.
//!   Name the peers' container addresses to fault only the traffic between containers.
//!   Docker's embedded DNS (127.0.0.11) is loopback traffic and is never dropped.
//! - A fault lives in the namespace: a container restarted into a fresh namespace has
//!   none, and healing it is a no-op (but for a Toxiproxy left in the old namespace,
//!   which heal stops).
//! - Toxiproxy faults cover TCP over IPv4 to the namespace's own ports (its services),
//!   not connections it makes, not IPv6, not UDP, not connections from inside the
//!   namespace itself (those go over lo). The proxy connects to the service over lo, so
//!   the service must accept connections there (a wildcard or loopback listener, or the
//!   one address it is bound to; see [`toxiproxy::upstream_for`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod toxiproxy;

use toxiproxy::{Toxic, ToxiproxyBins};

/// Every chain we create starts with this; nothing else in a namespace may.
pub const CHAIN_PREFIX: &str = "WIBER-";

/// Longest fault id: `WIBER-` + 20 stays within iptables' 28-character chain names.
pub const MAX_ID_LEN: usize = 20;

/// The handle of our tbf root qdiscs: how heal tells ours from one someone else set up.
pub const TBF_HANDLE: &str = "fa17:";

/// How long iptables waits for the xtables lock (legacy backend; shared by every
/// namespace because nsenter keeps the host's filesystem).
const IPTABLES_WAIT_SECS: &str = "5";

/// No single iptables/tc/ip call takes more than milliseconds; a hung one must not hang
/// a heal.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// tbf holds at most this much queue before it drops: a slow link, not a black hole.
const TBF_LATENCY: &str = "200ms";

/// Below ~2 MTUs a tbf cannot pass a full-size frame at all.
const TBF_MIN_BURST_BYTES: u64 = 4096;

/// The longest delay or timeout: a day, in milliseconds.
const MAX_TOXIC_MS: u64 = 86_400_000;

/// How long a ledger operation waits for another wiberctl holding the ledger's lock.
const LEDGER_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Which way a partition cuts, seen from inside the faulted namespace.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Nothing gets through either way.
    #[default]
    Both,
    /// Packets from the peers are dropped (so are replies to our own connections).
    In,
    /// Packets to the peers are dropped.
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    fn inbound(self) -> bool {
        matches!(self, Direction::Both | Direction::In)
    }

    fn outbound(self) -> bool {
        matches!(self, Direction::Both | Direction::Out)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network fault of one namespace. Serialized with a `kind` tag, e.g.
/// `{"kind":"loss","percent":20.0,"peers":["172.18.0.5"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetFault {
    /// Drop `percent` % of the packets exchanged with `peers` (empty: with everyone), both
    /// directions.
    Loss {
        percent: f64,
        #[serde(default)]
        peers: Vec<IpAddr>,
    },
    /// Drop every packet exchanged with `peers` (empty: with everyone) in `direction`
    /// (In: from them, Out: to them).
    Partition {
        #[serde(default)]
        peers: Vec<IpAddr>,
        #[serde(default)]
        direction: Direction,
    },
    /// Egress rate limit (tbf) of the namespace's interfaces other than lo, in kbit/s.
    Bandwidth { kbit: u64 },
    /// Every answer on TCP `ports` of the namespace comes `ms` ± `jitter_ms` late
    /// (Toxiproxy latency on what the service sends back).
    Delay {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        ports: Vec<u16>,
    },
    /// Connections to TCP `ports` pass nothing either way and are closed after `ms`
    /// (0: held open until healed), like a peer that stopped answering.
    Timeout { ms: u64, ports: Vec<u16> },
    /// Connections to TCP `ports` are reset (RST) as soon as the client sends anything;
    /// what it sent never reaches the service.
    Reset { ports: Vec<u16> },
}

impl NetFault {
    /// What implements it: `"iptables"`, `"tc-tbf"` or `"toxiproxy"`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            NetFault::Loss { .. } | NetFault::Partition { .. } => "iptables",
            NetFault::Bandwidth { .. } => "tc-tbf",
            NetFault::Delay { .. } | NetFault::Timeout { .. } | NetFault::Reset { .. } => {
                "toxiproxy"
            }
        }
    }

    /// One line for people, e.g. `loss 20% with 172.18.0.5`.
    pub fn describe(&self) -> String {
        match self {
            NetFault::Loss { percent, peers } => {
                format!("loss {}% with {}", fmt_number(*percent), fmt_peers(peers))
            }
            NetFault::Partition { peers, direction } => match direction {
                Direction::Both => format!("partition from {}", fmt_peers(peers)),
                Direction::In => format!("partition: drop packets from {}", fmt_peers(peers)),
                Direction::Out => format!("partition: drop packets to {}", fmt_peers(peers)),
            },
            NetFault::Bandwidth { kbit } => format!("bandwidth {kbit} kbit/s egress"),
            NetFault::Delay {
                ms,
                jitter_ms,
                ports,
            } => match jitter_ms {
                0 => format!("delay {ms} ms on {}", fmt_ports(ports)),
                j => format!("delay {ms}±{j} ms on {}", fmt_ports(ports)),
            },
            NetFault::Timeout { ms: 0, ports } => format!(
                "timeout on {}: nothing passes, connections held open",
                fmt_ports(ports)
            ),
            NetFault::Timeout { ms, ports } => format!(
                "timeout on {}: nothing passes, connections closed after {ms} ms",
                fmt_ports(ports)
            ),
            NetFault::Reset { ports } => {
                format!("reset connections on {}", fmt_ports(ports))
            }
        }
    }

    /// Rejects what iptables or tc would reject later, or silently misread.
    pub fn validate(&self) -> Result<()> {
        match self {
            NetFault::Loss { percent, .. } => {
                if !(percent.is_finite() && *percent > 0.0 && *percent <= 100.0) {
                    bail!("invalid loss percent {percent}: use a number in (0, 100], e.g. 20");
                }
            }
            NetFault::Partition { .. } => {}
            NetFault::Bandwidth { kbit } => {
                // tbf's rate is a 64-bit byte count, but below 8 kbit/s a single full frame
                // takes over a second: not a fault anyone means.
                if *kbit < 8 {
                    bail!(
                        "invalid bandwidth {kbit} kbit/s: use at least 8, e.g. 1024 for 1 Mbit/s"
                    );
                }
            }
            NetFault::Delay { ms, jitter_ms, .. } => {
                if *ms == 0 {
                    bail!("invalid delay 0 ms: use at least 1, e.g. 200");
                }
                // Toxiproxy draws ms ± jitter; past ms the delay would go negative.
                if jitter_ms > ms {
                    bail!(
                        "invalid jitter {jitter_ms} ms for a delay of {ms} ms: use at most the \
                         delay, e.g. 200±50"
                    );
                }
            }
            NetFault::Timeout { .. } | NetFault::Reset { .. } => {}
        }
        // Longer is a unit mistake (times are milliseconds), and Toxiproxy's CLI passes
        // them through a float.
        if let NetFault::Delay { ms, .. } | NetFault::Timeout { ms, .. } = self {
            if *ms > MAX_TOXIC_MS {
                bail!(
                    "invalid time {ms} ms: use at most {MAX_TOXIC_MS} (a day); times are \
                     milliseconds"
                );
            }
        }
        if let Some(ports) = self.ports() {
            if ports.is_empty() {
                bail!(
                    "{} names no port: give the service's TCP ports, e.g. 9092",
                    self.kind()
                );
            }
            if ports.contains(&0) {
                bail!(
                    "invalid port 0 in {}: use the service's TCP ports, e.g. 9092",
                    self.kind()
                );
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(p) = ports.iter().find(|p| !seen.insert(**p)) {
                bail!(
                    "port {p} is named twice in {}: name each port once",
                    self.kind()
                );
            }
        }
        Ok(())
    }

    /// The `kind` tag, e.g. `delay`.
    fn kind(&self) -> &'static str {
        match self {
            NetFault::Loss { .. } => "loss",
            NetFault::Partition { .. } => "partition",
            NetFault::Bandwidth { .. } => "bandwidth",
            NetFault::Delay { .. } => "delay",
            NetFault::Timeout { .. } => "timeout",
            NetFault::Reset { .. } => "reset",
        }
    }

    fn peers(&self) -> &[IpAddr] {
        match self {
            NetFault::Loss { peers, .. } | NetFault::Partition { peers, .. } => peers,
            _ => &[],
        }
    }

    /// The TCP ports of a Toxiproxy fault.
    pub fn ports(&self) -> Option<&[u16]> {
        match self {
            NetFault::Delay { ports, .. }
            | NetFault::Timeout { ports, .. }
            | NetFault::Reset { ports } => Some(ports),
            _ => None,
        }
    }

    /// What the proxies of a Toxiproxy fault do.
    fn toxic(&self) -> Option<Toxic> {
        match *self {
            NetFault::Delay { ms, jitter_ms, .. } => Some(Toxic::Latency { ms, jitter_ms }),
            NetFault::Timeout { ms, .. } => Some(Toxic::Timeout { ms }),
            NetFault::Reset { .. } => Some(Toxic::Reset),
            _ => None,
        }
    }
}

/// `port 9092`, `ports 9092, 9094`.
fn fmt_ports(ports: &[u16]) -> String {
    let list = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!("port{} {list}", if ports.len() == 1 { "" } else { "s" })
}

fn fmt_peers(peers: &[IpAddr]) -> String {
    if peers.is_empty() {
        return "everyone".into();
    }
    peers
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1 jump`, `2 jumps`.
fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `20` rather than `20.0`, `0.5` as is.
fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// iptables' statistic match takes a probability; 6 decimals are finer than anyone asks.
fn probability(percent: f64) -> String {
    let s = format!("{:.6}", percent / 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Checks a fault id: 1-20 ASCII letters, digits or '-' (it becomes part of a chain name).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        bail!(
            "invalid fault id {id:?}: use 1-{MAX_ID_LEN} ASCII letters, digits or '-' \
             (new_fault_id makes one)"
        );
    }
    Ok(())
}

/// A short unique fault id: 8 hex characters of a random UUID.
pub fn new_fault_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The chain of fault `id`.
pub fn chain_name(id: &str) -> String {
    format!("{CHAIN_PREFIX}{id}")
}

// ---------------------------------------------------------------------------------------
// Commands, as pure functions of what they act on. Each command is an argv whose first
// element is a tool name ("iptables", "ip6tables", "tc", "ip"); `ns_exec` resolves it and
// runs it in the namespace.
// ---------------------------------------------------------------------------------------

/// An address family, i.e. which of iptables and ip6tables holds the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// An iptables table we keep chains in: filter for drops and resets, nat for the
/// redirects into a Toxiproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    /// How listings and removals name it: nothing for filter (iptables' default), so the
    /// commands of the filter table read as they always did.
    fn args(self) -> &'static [&'static str] {
        match self {
            Table::Filter => &[],
            Table::Nat => &["-t", "nat"],
        }
    }

    /// `iptables` or `iptables nat`, for what is shown to people.
    fn label(self, family: Family) -> String {
        match self {
            Table::Filter => family.tool().to_string(),
            Table::Nat => format!("{} nat", family.tool()),
        }
    }
}

fn ipt(family: Family, args: &[&str]) -> Vec<String> {
    ipt_in(family, Table::Filter, args)
}

fn ipt_in(family: Family, table: Table, args: &[&str]) -> Vec<String> {
    let mut v = argv(&[family.tool(), "-w", IPTABLES_WAIT_SECS]);
    v.extend(table.args().iter().map(|s| s.to_string()));
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The iptables commands that steer TCP `redirects` (port P, proxy listen port L) of the
/// namespace into fault `id`'s Toxiproxy, as chain `WIBER-<id>` in two tables:
/// - nat: `--dport P -j REDIRECT --to-ports L`, jumped from PREROUTING for packets that
///   do not come in on lo. Only a connection's first packet meets the nat table, so new
///   connections go through the proxy and established ones are left alone; the proxy's
///   own connection to the service runs over lo and is never redirected.
/// - filter: `--dport P` in state ESTABLISHED is rejected with a TCP reset, jumped from
///   INPUT (not lo). That is the established connections, which the redirect misses:
///   clients such as Kafka's keep theirs for hours, and would never meet the fault. After
///   the redirect a proxied connection's packets carry port L, so this leaves them alone.
///
/// Chains and rules first, the jumps last with nat before filter: the fault starts
/// whole, and connections reset by it reconnect through the proxy. IPv4 only.
pub fn toxiproxy_iptables_commands(id: &str, redirects: &[(u16, u16)]) -> Vec<Vec<String>> {
    let chain = chain_name(id);
    let (nat, filter) = (Table::Nat, Table::Filter);
    let v4 = Family::V4;
    let mut out = vec![ipt_in(v4, nat, &["-N", &chain])];
    for (p, l) in redirects {
        let (p, l) = (p.to_string(), l.to_string());
        out.push(ipt_in(
            v4,
            nat,
            &[
                "-A",
                &chain,
                "-p",
                "tcp",
                "--dport",
                &p,
                "-j",
                "REDIRECT",
                "--to-ports",
                &l,
            ],
        ));
    }
    out.push(ipt_in(v4, filter, &["-N", &chain]));
    for (p, _) in redirects {
        let p = p.to_string();
        out.push(ipt_in(
            v4,
            filter,
            &[
                "-A",
                &chain,
                "-p",
                "tcp",
                "--dport",
                &p,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        ));
    }
    out.push(ipt_in(
        v4,
        nat,
        &[
            "-I",
            "PREROUTING",
            "1",
            "!",
            "-i",
            "lo",
            "-p",
            "tcp",
            "-j",
            &chain,
        ],
    ));
    out.push(ipt_in(
        v4,
        filter,
        &[
            "-I", "INPUT", "1", "!", "-i", "lo", "-p", "tcp", "-j", &chain,
        ],
    ));
    out
}

/// The ports redirected by `WIBER-*` chains in an `iptables -t nat -S` listing:
/// (chain, port).
pub fn parse_redirected_ports(listing: &str) -> Vec<(String, u16)> {
    listing
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 2 || t[0] != "-A" || !t[1].starts_with(CHAIN_PREFIX) {
                return None;
            }
            let port = t
                .windows(2)
                .find(|w| w[0] == "--dport")
                .and_then(|w| w[1].parse().ok())?;
            t.contains(&"REDIRECT").then(|| (t[1].to_string(), port))
        })
        .collect()
}

/// The iptables/ip6tables commands that apply `fault` as chain `WIBER-<id>`: create the
/// chain, add its drop rule, then the jumps (last, so the fault starts whole). `with_v6`:
/// whether a fault with everyone also covers IPv6 (ip6tables works in the namespace);
/// IPv6 peers always get ip6tables commands. Empty for a tc fault.
pub fn iptables_apply_commands(id: &str, fault: &NetFault, with_v6: bool) -> Vec<Vec<String>> {
    let chain = chain_name(id);
    let prob;
    let (direction, action): (Direction, Vec<&str>) = match fault {
        NetFault::Loss { percent, .. } => {
            prob = probability(*percent);
            let action = vec![
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &prob,
                "-j",
                "DROP",
            ];
            (Direction::Both, action)
        }
        NetFault::Partition { direction, .. } => (*direction, vec!["-j", "DROP"]),
        // tc, or the rules of toxiproxy_iptables_commands.
        _ => return Vec::new(),
    };
    // A packet that matches two jumps would pass the statistic twice.
    let mut peers: Vec<IpAddr> = Vec::new();
    for p in fault.peers() {
        if !peers.contains(p) {
            peers.push(*p);
        }
    }
    let families: Vec<Family> = if peers.is_empty() {
        if with_v6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    } else {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| peers.iter().any(|p| Family::of(p) == *f))
            .collect()
    };

    let mut out = Vec::new();
    for fam in families {
        out.push(ipt(fam, &["-N", &chain]));
        let mut rule = vec!["-A", chain.as_str()];
        rule.extend(&action);
        out.push(ipt(fam, &rule));
        let fam_peers: Vec<String> = peers
            .iter()
            .filter(|p| Family::of(p) == fam)
            .map(|p| p.to_string())
            .collect();
        if direction.inbound() {
            if peers.is_empty() {
                out.push(ipt(
                    fam,
                    &["-I", "INPUT", "1", "!", "-i", "lo", "-j", &chain],
                ));
            }
            for p in &fam_peers {
                out.push(ipt(fam, &["-I", "INPUT", "1", "-s", p, "-j", &chain]));
            }
        }
        if direction.outbound() {
            if peers.is_empty() {
                out.push(ipt(
                    fam,
                    &["-I", "OUTPUT", "1", "!", "-o", "lo", "-j", &chain],
                ));
            }
            for p in &fam_peers {
                out.push(ipt(fam, &["-I", "OUTPUT", "1", "-d", p, "-j", &chain]));
            }
        }
    }
    out
}

/// A `WIBER-*` chain found in `iptables -S` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundChain {
    pub name: String,
    /// Rules in the chain.
    pub rules: usize,
    /// The rules that jump to it, as `-S` prints them without the leading `-A`
    /// (`["INPUT", "-s", "10.0.0.2/32", "-j", "WIBER-x"]`).
    pub jumps: Vec<Vec<String>>,
}

/// The `WIBER-*` chains of an `iptables -S` listing, with their rules and jumps.
pub fn parse_chains(listing: &str) -> Vec<FoundChain> {
    let mut chains: Vec<FoundChain> = listing
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            match t.as_slice() {
                ["-N", name] if name.starts_with(CHAIN_PREFIX) => Some(FoundChain {
                    name: name.to_string(),
                    rules: 0,
                    jumps: Vec::new(),
                }),
                _ => None,
            }
        })
        .collect();
    for line in listing.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 2 || t[0] != "-A" {
            continue;
        }
        if let Some(c) = chains.iter_mut().find(|c| c.name == t[1]) {
            c.rules += 1;
        }
        let target = t
            .windows(2)
            .find(|w| w[0] == "-j" || w[0] == "-g")
            .map(|w| w[1]);
        if let Some(c) = target.and_then(|tg| chains.iter_mut().find(|c| c.name == tg)) {
            c.jumps.push(t[1..].iter().map(|s| s.to_string()).collect());
        }
    }
    chains
}

/// The commands that remove `chains` of `family`'s `table`: every jump first (a chain
/// still referenced cannot be deleted), then flush and delete each chain.
pub fn iptables_remove_commands(
    family: Family,
    table: Table,
    chains: &[FoundChain],
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for c in chains {
        for j in &c.jumps {
            let mut args = vec!["-D"];
            args.extend(j.iter().map(String::as_str));
            out.push(ipt_in(family, table, &args));
        }
    }
    for c in chains {
        out.push(ipt_in(family, table, &["-F", &c.name]));
    }
    for c in chains {
        out.push(ipt_in(family, table, &["-X", &c.name]));
    }
    out
}

/// The interfaces of an `ip -o link show` listing that are administratively up, lo
/// excepted (`eth0@if12` is `eth0`).
pub fn parse_up_links(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ": ");
            let _index = parts.next()?;
            let name = parts.next()?.split('@').next()?.trim();
            let rest = parts.next()?;
            let flags = rest.strip_prefix('<')?.split('>').next()?;
            let up = flags.split(',').any(|f| f == "UP");
            (up && name != "lo" && !name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// A root qdisc, from `tc qdisc show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootQdisc {
    pub dev: String,
    pub kind: String,
    pub handle: String,
    /// The rest of tc's line (`refcnt 2 rate 2Mbit burst 4Kb lat 200ms`).
    pub params: String,
}

impl RootQdisc {
    /// A tbf of ours (see [`TBF_HANDLE`]).
    pub fn is_ours(&self) -> bool {
        self.kind == "tbf" && self.handle == TBF_HANDLE
    }
}

/// The root qdiscs of a `tc qdisc show` listing.
pub fn parse_root_qdiscs(listing: &str) -> Vec<RootQdisc> {
    listing
        .lines()
        .filter_map(|l| {
            // qdisc tbf fa17: dev eth0 root refcnt 2 rate 2Mbit burst 4Kb lat 200ms
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 6 || t[0] != "qdisc" || t[3] != "dev" || t[5] != "root" {
                return None;
            }
            Some(RootQdisc {
                dev: t[4].to_string(),
                kind: t[1].to_string(),
                handle: t[2].to_string(),
                params: t[6..].join(" "),
            })
        })
        .collect()
}

/// tbf's bucket: 10 ms at the rate, and never less than a few full frames.
pub fn tbf_burst_bytes(kbit: u64) -> u64 {
    (kbit.saturating_mul(1000) / 8 / 100).max(TBF_MIN_BURST_BYTES)
}

/// The commands that add our tbf as the root qdisc of each of `links`. `add`, not
/// `replace`: a root qdisc someone else configured makes it fail instead of vanish.
pub fn tbf_add_commands(kbit: u64, links: &[String]) -> Vec<Vec<String>> {
    let rate = format!("{kbit}kbit");
    let burst = tbf_burst_bytes(kbit).to_string();
    links
        .iter()
        .map(|l| {
            argv(&[
                "tc",
                "qdisc",
                "add",
                "dev",
                l,
                "root",
                "handle",
                TBF_HANDLE,
                "tbf",
                "rate",
                &rate,
                "burst",
                &burst,
                "latency",
                TBF_LATENCY,
            ])
        })
        .collect()
}

/// The commands that remove our tbf root qdiscs among `qdiscs` (the interface falls back
/// to its default qdisc).
pub fn tbf_remove_commands(qdiscs: &[RootQdisc]) -> Vec<Vec<String>> {
    qdiscs
        .iter()
        .filter(|q| q.is_ours())
        .map(|q| argv(&["tc", "qdisc", "del", "dev", &q.dev, "root"]))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Running commands inside a namespace.
// ---------------------------------------------------------------------------------------

/// Where a tool is: PATH first, then the sbin directories a non-root PATH often lacks.
fn tool_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

pub(super) fn require_tool(name: &str) -> Result<PathBuf> {
    tool_path(name).ok_or_else(|| {
        let package = match name {
            "nsenter" => "util-linux",
            "iptables" | "ip6tables" => "iptables",
            _ => "iproute2",
        };
        anyhow!(
            "`{name}` not found in PATH, /usr/sbin or /sbin: install it (apt-get install {package})"
        )
    })
}

/// Runs `argv` (a tool name and its arguments) in the network namespace of `pid`, bounded
/// by [`COMMAND_TIMEOUT`]; returns its stdout. Errors name the command and carry stderr.
fn ns_exec(pid: u32, argv: &[String]) -> Result<String> {
    let (tool, args) = argv.split_first().context("empty command")?;
    ns_exec_path(pid, &require_tool(tool)?, args, COMMAND_TIMEOUT)
}

/// Runs `program` with `args` in the network namespace of `pid`, bounded by `timeout`;
/// returns its stdout. Errors name the command and carry stderr.
pub(super) fn ns_exec_path(
    pid: u32,
    program: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<String> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    let shown = format!("nsenter -t {pid} -n {name} {}", args.join(" "));
    let mut cmd = Command::new(require_tool("nsenter")?);
    cmd.arg("-t")
        .arg(pid.to_string())
        .arg("-n")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, stdout, stderr) =
        run_bounded(cmd, timeout).with_context(|| format!("`{shown}`"))?;
    if !status.success() {
        let stderr = stderr.trim().lines().collect::<Vec<_>>().join("; ");
        bail!("`{shown}` failed ({status}): {stderr}");
    }
    Ok(stdout)
}

/// Runs `cmd` to completion or kills it after `timeout`. Pipes are drained on threads so
/// a large listing cannot block the child on a full pipe.
fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String, String)> {
    let mut child = cmd.spawn().context("cannot start it")?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {timeout:?} and was killed");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

/// Runs every command; on the first failure, runs `rollback` and returns the failure,
/// saying whether what was added is gone.
fn run_all_or_rollback(
    pid: u32,
    cmds: &[Vec<String>],
    what: &str,
    rollback: impl FnOnce() -> Result<Vec<String>>,
) -> Result<()> {
    for c in cmds {
        if let Err(e) = ns_exec(pid, c) {
            return Err(rolled_back(e, pid, what, rollback));
        }
    }
    Ok(())
}

/// The error of a failed apply after running `rollback`, saying whether what the apply
/// had added is gone.
fn rolled_back(
    e: anyhow::Error,
    pid: u32,
    what: &str,
    rollback: impl FnOnce() -> Result<Vec<String>>,
) -> anyhow::Error {
    match rollback() {
        Ok(_) => e.context(format!(
            "cannot apply {what} in the network namespace of pid {pid}; \
             what it had added was removed"
        )),
        Err(rb) => e.context(format!(
            "cannot apply {what} in the network namespace of pid {pid}, and removing \
             what it had added failed too ({rb:#}): heal the namespace \
             (heal_everything removes every WIBER-* chain and Toxiproxy of ours)"
        )),
    }
}

/// The `WIBER-*` chains of one table of one family.
struct Scanned {
    family: Family,
    table: Table,
    chains: Vec<FoundChain>,
}

/// The `WIBER-*` chains of each table and family that works in the namespace, nat first
/// (so a heal stops redirecting new connections before anything else). IPv4's filter
/// table must work (it is also the proof we can enter the namespace); IPv4's nat table
/// is left out when it does not work (then it cannot hold our chains either), and so is
/// IPv6 when ip6tables is missing or the kernel has no IPv6.
fn scan_chains(pid: u32) -> Result<Vec<Scanned>> {
    let v4 = ns_exec(pid, &ipt(Family::V4, &["-S"]))?;
    let mut out = Vec::new();
    if let Ok(nat) = ns_exec(pid, &ipt_in(Family::V4, Table::Nat, &["-S"])) {
        out.push(Scanned {
            family: Family::V4,
            table: Table::Nat,
            chains: parse_chains(&nat),
        });
    }
    out.push(Scanned {
        family: Family::V4,
        table: Table::Filter,
        chains: parse_chains(&v4),
    });
    if tool_path(Family::V6.tool()).is_some() {
        if let Ok(v6) = ns_exec(pid, &ipt(Family::V6, &["-S"])) {
            out.push(Scanned {
                family: Family::V6,
                table: Table::Filter,
                chains: parse_chains(&v6),
            });
        }
    }
    Ok(out)
}

fn root_qdiscs(pid: u32) -> Result<Vec<RootQdisc>> {
    Ok(parse_root_qdiscs(&ns_exec(
        pid,
        &argv(&["tc", "qdisc", "show"]),
    )?))
}

/// Runs `cmds`, all of them even after a failure (so one stuck rule does not keep the
/// others); fails with every error.
fn run_all(pid: u32, cmds: &[Vec<String>]) -> Result<()> {
    let errors: Vec<String> = cmds
        .iter()
        .filter_map(|c| ns_exec(pid, c).err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// Removes chain `WIBER-<only>` (or every `WIBER-*` chain) and its jumps, in every table
/// and family.
fn heal_iptables(pid: u32, only: Option<&str>) -> Result<Vec<String>> {
    let wanted = only.map(chain_name);
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for Scanned {
        family,
        table,
        chains,
    } in scan_chains(pid)?
    {
        let chains: Vec<FoundChain> = chains
            .into_iter()
            .filter(|c| wanted.as_ref().is_none_or(|w| *w == c.name))
            .collect();
        if chains.is_empty() {
            continue;
        }
        match run_all(pid, &iptables_remove_commands(family, table, &chains)) {
            Ok(()) => removed.extend(chains.iter().map(|c| {
                format!(
                    "{} chain {} ({}, {})",
                    table.label(family),
                    c.name,
                    counted(c.rules, "rule"),
                    counted(c.jumps.len(), "jump")
                )
            })),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(removed),
        _ => bail!(
            "cannot remove WIBER chains in the network namespace of pid {pid}: {}",
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Removes our tbf root qdiscs.
fn heal_tbf(pid: u32) -> Result<Vec<String>> {
    let ours: Vec<RootQdisc> = root_qdiscs(pid)?
        .into_iter()
        .filter(RootQdisc::is_ours)
        .collect();
    run_all(pid, &tbf_remove_commands(&ours)).with_context(|| {
        format!("cannot remove the tbf qdiscs in the network namespace of pid {pid}")
    })?;
    Ok(ours
        .iter()
        .map(|q| format!("tbf root qdisc of {} ({})", q.dev, q.params))
        .collect())
}

fn apply_iptables(pid: u32, id: &str, fault: &NetFault) -> Result<()> {
    let scan = scan_chains(pid)?;
    refuse_applied(pid, id, &scan)?;
    let with_v6 = scan.iter().any(|s| s.family == Family::V6);
    if !with_v6 && fault.peers().iter().any(|p| p.is_ipv6()) {
        bail!(
            "ip6tables does not work in the network namespace of pid {pid}, so IPv6 peers \
             cannot be dropped: install iptables (it has ip6tables) or name IPv4 peers only"
        );
    }
    let cmds = iptables_apply_commands(id, fault, with_v6);
    run_all_or_rollback(pid, &cmds, &fault.describe(), || {
        heal_iptables(pid, Some(id))
    })
}

fn apply_tbf(pid: u32, kbit: u64) -> Result<()> {
    let links = parse_up_links(&ns_exec(pid, &argv(&["ip", "-o", "link", "show"]))?);
    if links.is_empty() {
        bail!(
            "no interface other than lo is up in the network namespace of pid {pid}: \
             nothing to limit (is the container attached to its network?)"
        );
    }
    if let Some(q) = root_qdiscs(pid)?.iter().find(|q| q.is_ours()) {
        bail!(
            "the network namespace of pid {pid} already has a bandwidth fault (tbf on {}): \
             heal it first",
            q.dev
        );
    }
    let what = format!("bandwidth {kbit} kbit/s");
    run_all_or_rollback(pid, &tbf_add_commands(kbit, &links), &what, || {
        heal_tbf(pid)
    })
}

/// Fails when fault `id` has a chain in the namespace already.
fn refuse_applied(pid: u32, id: &str, scan: &[Scanned]) -> Result<()> {
    let chain = chain_name(id);
    if let Some(s) = scan
        .iter()
        .find(|s| s.chains.iter().any(|c| c.name == chain))
    {
        bail!(
            "fault {id} is already applied in the network namespace of pid {pid} (chain {chain} \
             in {}): heal it first, or use a new id",
            s.table.label(s.family)
        );
    }
    Ok(())
}

/// Builds Toxiproxy if needed (the first time takes ~15 s), then applies.
fn apply_toxiproxy(pid: u32, id: &str, fault: &NetFault) -> Result<()> {
    let root = crate::provision::repo_root()?;
    let bins = toxiproxy::ensure_binaries(&root)?;
    apply_toxiproxy_with(pid, id, fault, &bins, &root)
}

/// A Toxiproxy fault: a `toxiproxy-server` in the namespace with one proxy per port
/// (listening on a free port L, connecting to the service), then the rules of
/// [`toxiproxy_iptables_commands`] that send the port's connections to L. Any failure
/// stops the server and removes the rules before it returns.
fn apply_toxiproxy_with(
    pid: u32,
    id: &str,
    fault: &NetFault,
    bins: &ToxiproxyBins,
    root: &Path,
) -> Result<()> {
    let (Some(ports), Some(toxic)) = (fault.ports(), fault.toxic()) else {
        bail!("{} is not a Toxiproxy fault", fault.describe());
    };
    let scan = scan_chains(pid)?;
    refuse_applied(pid, id, &scan)?;
    if !scan.iter().any(|s| s.table == Table::Nat) {
        bail!(
            "the nat table of iptables does not work in the network namespace of pid {pid}, \
             and {} needs it to redirect connections into Toxiproxy: load the kernel's nat \
             support (modprobe iptable_nat, or nft_chain_nat for iptables-nft)",
            fault.kind()
        );
    }
    let nat = ns_exec(pid, &ipt_in(Family::V4, Table::Nat, &["-S"]))?;
    if let Some((chain, port)) = parse_redirected_ports(&nat)
        .into_iter()
        .find(|(_, p)| ports.contains(p))
    {
        bail!(
            "port {port} in the network namespace of pid {pid} already goes through a Toxiproxy \
             (chain {chain}): heal that fault first, one Toxiproxy fault per port"
        );
    }
    if let Some(s) = toxiproxy::find_servers(Some(pid), Some(id))?.first() {
        bail!(
            "fault {id} already has a Toxiproxy ({}): heal it first, or use a new id",
            s.describe()
        );
    }
    let sockets = toxiproxy::namespace_sockets(pid)?;
    let (api, listens) = toxiproxy::pick_ports(ports, &sockets)?;
    let redirects: Vec<(u16, u16)> = ports.iter().copied().zip(listens).collect();
    let steps = || -> Result<()> {
        toxiproxy::start_server(pid, id, api, bins, root)?;
        for &(port, listen) in &redirects {
            let upstream = toxiproxy::upstream_for(port, &sockets);
            let name = toxiproxy::proxy_name(id, port);
            toxiproxy::create_proxy(pid, bins, api, &name, listen, upstream, toxic)
                .with_context(|| format!("cannot set up the proxy of port {port}"))?;
        }
        for c in toxiproxy_iptables_commands(id, &redirects) {
            ns_exec(pid, &c)?;
        }
        Ok(())
    };
    steps().map_err(|e| rolled_back(e, pid, &fault.describe(), || heal_toxiproxy(pid, id)))
}

/// Removes fault `id`'s chains (the redirect first: new connections go straight to the
/// service again), then stops its Toxiproxy, which closes the connections that went
/// through it; their clients reconnect directly. Also stops a server of `id` that was
/// left behind when its namespace's processes went away. Both halves run even when one
/// fails.
fn heal_toxiproxy(pid: u32, id: &str) -> Result<Vec<String>> {
    let chains = heal_iptables(pid, Some(id));
    let servers =
        toxiproxy::find_servers(Some(pid), Some(id)).and_then(|s| toxiproxy::stop_servers(&s));
    both(chains, servers)
}

/// The results of two halves that both ran: what both did, or the error(s).
fn both(a: Result<Vec<String>>, b: Result<Vec<String>>) -> Result<Vec<String>> {
    match (a, b) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            Ok(a)
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(a.context(format!("{b:#}"))),
    }
}

/// Applies `fault` inside the network namespace of process `pid`, tagged `id` (see
/// [`validate_id`]). On failure, what it had added is removed before the error returns.
/// A Toxiproxy fault builds Toxiproxy first when it is not built yet (see
/// [`toxiproxy::ensure_binaries`]).
pub fn apply(pid: u32, id: &str, fault: &NetFault) -> Result<()> {
    validate_id(id)?;
    fault.validate()?;
    match fault {
        NetFault::Bandwidth { kbit } => apply_tbf(pid, *kbit),
        NetFault::Loss { .. } | NetFault::Partition { .. } => apply_iptables(pid, id, fault),
        NetFault::Delay { .. } | NetFault::Timeout { .. } | NetFault::Reset { .. } => {
            apply_toxiproxy(pid, id, fault)
        }
    }
}

/// Removes what [`apply`] added for `id`; nothing there is success. A bandwidth fault
/// removes the namespace's tbf of ours (there is at most one). Needs nothing but the
/// namespace: a Toxiproxy is found by its environment, not by anything the applying
/// process kept.
pub fn heal(pid: u32, id: &str, fault: &NetFault) -> Result<()> {
    validate_id(id)?;
    match fault {
        NetFault::Bandwidth { .. } => heal_tbf(pid).map(drop),
        NetFault::Loss { .. } | NetFault::Partition { .. } => {
            heal_iptables(pid, Some(id)).map(drop)
        }
        NetFault::Delay { .. } | NetFault::Timeout { .. } | NetFault::Reset { .. } => {
            heal_toxiproxy(pid, id).map(drop)
        }
    }
}

/// Removes every `WIBER-*` chain (with its jumps, in the filter and nat tables), our tbf
/// root qdiscs and our Toxiproxy servers in the namespace, for when the ledger is lost;
/// also servers of ours whose namespace has no other process left. Returns what was
/// removed.
pub fn heal_everything(pid: u32) -> Result<Vec<String>> {
    // Every part runs even when another fails: a stuck qdisc must not keep a partition.
    let chains = heal_iptables(pid, None);
    let tbf = heal_tbf(pid);
    let servers =
        toxiproxy::find_servers(Some(pid), None).and_then(|s| toxiproxy::stop_servers(&s));
    both(both(chains, tbf), servers)
}

/// What is applied in the namespace now: `WIBER-<id> (iptables, 2 jumps)`,
/// `WIBER-<id> (iptables nat, 1 jump)`, `tbf on eth0 (rate 2Mbit ...)`,
/// `toxiproxy-server pid 4242 (fault <id>)`.
pub fn active(pid: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in scan_chains(pid)? {
        for c in s.chains {
            out.push(format!(
                "{} ({}, {})",
                c.name,
                s.table.label(s.family),
                counted(c.jumps.len(), "jump")
            ));
        }
    }
    for q in root_qdiscs(pid)?.into_iter().filter(RootQdisc::is_ours) {
        out.push(format!("tbf on {} ({})", q.dev, q.params));
    }
    for s in toxiproxy::find_servers(Some(pid), None)? {
        if !s.orphan {
            out.push(s.describe());
        }
    }
    Ok(out)
}

/// Checks this host can apply network faults: root, and nsenter, iptables, tc and ip
/// present. The error is one line naming the fix.
pub fn check_host() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "network faults need root (iptables and tc inside other network namespaces): \
             run wiberctl as root, e.g. with sudo"
        );
    }
    for tool in ["nsenter", "iptables", "tc", "ip"] {
        require_tool(tool)?;
    }
    Ok(())
}

/// Checks this host can apply the Toxiproxy faults (delay, timeout, reset): what
/// [`check_host`] checks, and Toxiproxy built under `root` or Go there to build it.
pub fn check_toxiproxy(root: &Path) -> Result<()> {
    check_host()?;
    toxiproxy::check_buildable(root)
}

// ---------------------------------------------------------------------------------------
// The ledger.
// ---------------------------------------------------------------------------------------

/// How to find a faulted namespace again at heal time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetnsRef {
    /// A Docker container, by name (its pid changes when it restarts).
    Container { name: String },
    /// A process (local runtime).
    Pid { pid: u32 },
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Container { name } => write!(f, "container {name}"),
            NetnsRef::Pid { pid } => write!(f, "pid {pid}"),
        }
    }
}

/// One applied fault, recorded BEFORE it is applied: a crash between record and apply
/// leaves a record whose heal is a no-op, never a rule without a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// The fault id (see [`apply`]).
    pub id: String,
    /// The stack's instance name, e.g. `kafka#2` (opaque here).
    pub instance: String,
    pub netns: NetnsRef,
    pub fault: NetFault,
    #[serde(with = "rfc3339")]
    pub applied_at: DateTime<Utc>,
    /// When it is meant to be healed (`--for`), if bounded.
    #[serde(default, with = "super::rfc3339_opt")]
    pub until: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    /// E.g. `loss 20% with 172.18.0.5 on kafka#2 (fault 3fa9c2d1)`.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (fault {})",
            self.fault.describe(),
            self.instance,
            self.id
        )
    }
}

/// The applied network faults of a stack: a JSON array in one file. Writes go to a
/// temporary file renamed over it (a crash leaves the old or the new ledger, never half
/// of one) and are serialized by an flock on `<path>.lock` (the data file's inode changes
/// on every rename, so it cannot carry the lock).
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

/// Holds the ledger's lock until dropped (closing the file releases the flock).
struct LedgerLock {
    _file: File,
}

impl Ledger {
    pub fn at(path: impl Into<PathBuf>) -> Ledger {
        Ledger { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    fn lock(&self) -> Result<LedgerLock> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the ledger's directory {}", dir.display())
            })?;
        }
        let lock_path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open the ledger lock {}", lock_path.display()))?;
        let deadline = Instant::now() + LEDGER_LOCK_WAIT;
        loop {
            // SAFETY: the fd is open for the whole call (owned by `file`).
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(LedgerLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err)
                    .with_context(|| format!("cannot lock the ledger {}", lock_path.display()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "the ledger {} is locked by another process for over {LEDGER_LOCK_WAIT:?}: \
                     wait for the other wiberctl to finish (see `fuser {}`)",
                    self.path.display(),
                    lock_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read(&self) -> Result<Vec<LedgerEntry>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the ledger {}", self.path.display()))
            }
        };
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the ledger {} is not a JSON array of faults: fix or move it aside; \
                 heal_everything still removes every WIBER-* chain of a namespace",
                self.path.display()
            )
        })
    }

    fn write(&self, entries: &[LedgerEntry]) -> Result<()> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let body = serde_json::to_string_pretty(entries)?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.write_all(b"\n")?;
            // Durable before the rename makes it the ledger.
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow!(e).context(format!("cannot write the ledger {}", self.path.display()))
        })
    }

    /// Records `e`. Fails if its id is already recorded (ids name chains, they must be
    /// unique).
    pub fn record(&self, e: &LedgerEntry) -> Result<()> {
        validate_id(&e.id)?;
        let _lock = self.lock()?;
        let mut entries = self.read()?;
        if entries.iter().any(|x| x.id == e.id) {
            bail!(
                "fault {} is already in the ledger {}: use a new id (new_fault_id)",
                e.id,
                self.path.display()
            );
        }
        entries.push(e.clone());
        self.write(&entries)
    }

    /// Forgets fault `id` (not recorded: nothing to do).
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut entries = self.read()?;
        let before = entries.len();
        entries.retain(|x| x.id != id);
        if entries.len() == before {
            return Ok(());
        }
        self.write(&entries)
    }

    /// The recorded faults (no ledger file: none).
    pub fn entries(&self) -> Result<Vec<LedgerEntry>> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Heals every entry. `pid_of` finds its namespace now (None: the container or
    /// process is gone or was restarted into a fresh namespace, so there is nothing to
    /// heal and the entry is dropped). An entry leaves the ledger right after its heal
    /// succeeds; one failure does not stop the others. Returns what was healed and the
    /// errors.
    pub fn heal_all(
        &self,
        pid_of: &dyn Fn(&NetnsRef) -> Option<u32>,
    ) -> (Vec<String>, Vec<anyhow::Error>) {
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => return (Vec::new(), vec![e]),
        };
        let mut healed = Vec::new();
        let mut errors = Vec::new();
        for e in entries {
            let outcome = match pid_of(&e.netns) {
                Some(pid) => heal(pid, &e.id, &e.fault)
                    .map(|()| e.describe())
                    .with_context(|| format!("cannot heal {} ({})", e.describe(), e.netns)),
                // The rules went with the namespace, but a Toxiproxy keeps its namespace
                // alive: stop the one of this fault, wherever it was left.
                None if e.fault.mechanism() == "toxiproxy" => {
                    toxiproxy::find_servers(None, Some(&e.id))
                        .and_then(|s| toxiproxy::stop_servers(&s))
                        .map(|stopped| match stopped.len() {
                            0 => format!("{}: {} is gone, nothing to heal", e.describe(), e.netns),
                            _ => format!(
                                "{}: {} is gone; stopped {}",
                                e.describe(),
                                e.netns,
                                stopped.join(", ")
                            ),
                        })
                        .with_context(|| format!("cannot heal {} ({})", e.describe(), e.netns))
                }
                None => Ok(format!(
                    "{}: {} is gone, nothing to heal",
                    e.describe(),
                    e.netns
                )),
            };
            match outcome.and_then(|d| self.remove(&e.id).map(|()| d)) {
                Ok(d) => healed.push(d),
                Err(err) => errors.push(err),
            }
        }
        (healed, errors)
    }
}

/// serde for `DateTime<Utc>` as RFC 3339 (chrono has no `serde` feature here).
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cmds(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter().map(|c| argv(c)).collect()
    }

    #[test]
    fn faults_round_trip_through_json() {
        let faults = [
            NetFault::Loss {
                percent: 20.0,
                peers: vec![ip("172.18.0.5"), ip("fd00::2")],
            },
            NetFault::Partition {
                peers: vec![],
                direction: Direction::In,
            },
            NetFault::Bandwidth { kbit: 1024 },
        ];
        for f in &faults {
            let s = serde_json::to_string(f).unwrap();
            assert_eq!(&serde_json::from_str::<NetFault>(&s).unwrap(), f, "{s}");
        }
        assert_eq!(
            serde_json::to_string(&faults[1]).unwrap(),
            r#"{"kind":"partition","peers":[],"direction":"in"}"#
        );
        // Defaults: no peers = everyone, no direction = both.
        assert_eq!(
            serde_json::from_str::<NetFault>(r#"{"kind":"partition","peers":["10.0.0.2"]}"#)
                .unwrap(),
            NetFault::Partition {
                peers: vec![ip("10.0.0.2")],
                direction: Direction::Both
            }
        );
        assert!(
            serde_json::from_str::<NetFault>(r#"{"kind":"bandwidth","kbit":8,"burst":1}"#).is_err()
        );
        assert_eq!(Direction::Out.to_string(), "out");
    }

    #[test]
    fn toxiproxy_faults_round_trip_through_json() {
        let faults = [
            NetFault::Delay {
                ms: 200,
                jitter_ms: 50,
                ports: vec![9092, 9094],
            },
            NetFault::Timeout {
                ms: 0,
                ports: vec![27017],
            },
            NetFault::Reset { ports: vec![9092] },
        ];
        for f in &faults {
            let s = serde_json::to_string(f).unwrap();
            assert_eq!(&serde_json::from_str::<NetFault>(&s).unwrap(), f, "{s}");
            assert_eq!(f.mechanism(), "toxiproxy");
        }
        assert_eq!(
            serde_json::to_string(&faults[0]).unwrap(),
            r#"{"kind":"delay","ms":200,"jitter_ms":50,"ports":[9092,9094]}"#
        );
        assert_eq!(
            serde_json::to_string(&faults[2]).unwrap(),
            r#"{"kind":"reset","ports":[9092]}"#
        );
        // No jitter: none. Ports are required.
        assert_eq!(
            serde_json::from_str::<NetFault>(r#"{"kind":"delay","ms":100,"ports":[9092]}"#)
                .unwrap(),
            NetFault::Delay {
                ms: 100,
                jitter_ms: 0,
                ports: vec![9092]
            }
        );
        assert!(serde_json::from_str::<NetFault>(r#"{"kind":"reset"}"#).is_err());
        assert!(
            serde_json::from_str::<NetFault>(r#"{"kind":"timeout","ms":1,"ports":[1],"x":1}"#)
                .is_err()
        );
    }

    #[test]
    fn toxiproxy_faults_describe_and_validate() {
        let d = NetFault::Delay {
            ms: 200,
            jitter_ms: 50,
            ports: vec![9092, 9094],
        };
        assert_eq!(d.describe(), "delay 200±50 ms on ports 9092, 9094");
        d.validate().unwrap();
        let d = NetFault::Delay {
            ms: 200,
            jitter_ms: 0,
            ports: vec![9092],
        };
        assert_eq!(d.describe(), "delay 200 ms on port 9092");
        assert_eq!(
            NetFault::Timeout {
                ms: 5000,
                ports: vec![9092]
            }
            .describe(),
            "timeout on port 9092: nothing passes, connections closed after 5000 ms"
        );
        assert_eq!(
            NetFault::Timeout {
                ms: 0,
                ports: vec![9092]
            }
            .describe(),
            "timeout on port 9092: nothing passes, connections held open"
        );
        assert_eq!(
            NetFault::Reset {
                ports: vec![9092, 9093]
            }
            .describe(),
            "reset connections on ports 9092, 9093"
        );
        NetFault::Timeout {
            ms: 0,
            ports: vec![1],
        }
        .validate()
        .unwrap();

        let delay = |ms, jitter_ms, ports: &[u16]| NetFault::Delay {
            ms,
            jitter_ms,
            ports: ports.to_vec(),
        };
        for (bad, says) in [
            (delay(0, 0, &[9092]), "invalid delay 0 ms"),
            (delay(100, 101, &[9092]), "invalid jitter 101 ms"),
            (delay(100, 0, &[]), "delay names no port"),
            (delay(100, 0, &[0]), "invalid port 0"),
            (
                delay(100, 0, &[9092, 9094, 9092]),
                "port 9092 is named twice",
            ),
            (
                delay(MAX_TOXIC_MS + 1, 0, &[9092]),
                "times are milliseconds",
            ),
            (NetFault::Reset { ports: vec![] }, "reset names no port"),
        ] {
            let err = format!("{:#}", bad.validate().unwrap_err());
            assert!(err.contains(says), "{err}");
            assert!(apply(1, "x", &bad).is_err());
        }
    }

    #[test]
    fn toxiproxy_rules_redirect_new_connections_and_reset_old_ones() {
        assert_eq!(
            toxiproxy_iptables_commands("t1", &[(7000, 27000), (9092, 29092)]),
            cmds(&[
                &["iptables", "-w", "5", "-t", "nat", "-N", "WIBER-t1"],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-A",
                    "WIBER-t1",
                    "-p",
                    "tcp",
                    "--dport",
                    "7000",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    "27000"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-A",
                    "WIBER-t1",
                    "-p",
                    "tcp",
                    "--dport",
                    "9092",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    "29092"
                ],
                &["iptables", "-w", "5", "-N", "WIBER-t1"],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-A",
                    "WIBER-t1",
                    "-p",
                    "tcp",
                    "--dport",
                    "7000",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-A",
                    "WIBER-t1",
                    "-p",
                    "tcp",
                    "--dport",
                    "9092",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-I",
                    "PREROUTING",
                    "1",
                    "!",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    "-j",
                    "WIBER-t1"
                ],
                &[
                    "iptables", "-w", "5", "-I", "INPUT", "1", "!", "-i", "lo", "-p", "tcp", "-j",
                    "WIBER-t1"
                ],
            ])
        );
        assert!(
            iptables_apply_commands("t1", &NetFault::Reset { ports: vec![7000] }, true).is_empty()
        );

        // `iptables -t nat -S` as iptables-nft 1.8.9 prints a fault's nat chain.
        let nat = "\
-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-N DOCKER_OUTPUT
-N WIBER-t1
-A PREROUTING ! -i lo -p tcp -j WIBER-t1
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:40119
-A WIBER-t1 -p tcp -m tcp --dport 7000 -j REDIRECT --to-ports 27000
";
        assert_eq!(
            parse_redirected_ports(nat),
            [("WIBER-t1".to_string(), 7000)]
        );
        let chains = parse_chains(nat);
        assert_eq!(chains.len(), 1);
        assert_eq!(
            iptables_remove_commands(Family::V4, Table::Nat, &chains),
            cmds(&[
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-D",
                    "PREROUTING",
                    "!",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    "-j",
                    "WIBER-t1"
                ],
                &["iptables", "-w", "5", "-t", "nat", "-F", "WIBER-t1"],
                &["iptables", "-w", "5", "-t", "nat", "-X", "WIBER-t1"],
            ])
        );
    }

    #[test]
    fn describes_faults_in_one_line() {
        let loss = NetFault::Loss {
            percent: 20.0,
            peers: vec![ip("172.18.0.5")],
        };
        assert_eq!(loss.describe(), "loss 20% with 172.18.0.5");
        assert_eq!(loss.mechanism(), "iptables");
        let loss = NetFault::Loss {
            percent: 0.5,
            peers: vec![],
        };
        assert_eq!(loss.describe(), "loss 0.5% with everyone");
        let p = NetFault::Partition {
            peers: vec![ip("10.0.0.2"), ip("10.0.0.3")],
            direction: Direction::Both,
        };
        assert_eq!(p.describe(), "partition from 10.0.0.2, 10.0.0.3");
        let b = NetFault::Bandwidth { kbit: 512 };
        assert_eq!(b.describe(), "bandwidth 512 kbit/s egress");
        assert_eq!(b.mechanism(), "tc-tbf");
    }

    #[test]
    fn validates_ids_and_faults() {
        for ok in ["a", "3fa9c2d1", "kafka-2-loss", "ABCDEFGHIJ0123456789"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", "a b", "a_b", "x;rm", "ABCDEFGHIJ01234567890", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        let id = new_fault_id();
        validate_id(&id).unwrap();
        assert_eq!(id.len(), 8);
        assert_ne!(id, new_fault_id());
        assert!(chain_name(&"x".repeat(MAX_ID_LEN)).len() <= 28);

        for bad in [0.0, -1.0, 100.5, f64::NAN] {
            let f = NetFault::Loss {
                percent: bad,
                peers: vec![],
            };
            assert!(f.validate().is_err(), "{bad}");
            assert!(apply(1, "x", &f).is_err());
        }
        assert!(NetFault::Bandwidth { kbit: 0 }.validate().is_err());
        assert!(apply(1, "no spaces", &NetFault::Bandwidth { kbit: 64 }).is_err());
    }

    #[test]
    fn loss_with_peers_jumps_by_source_in_and_destination_out() {
        let f = NetFault::Loss {
            percent: 20.0,
            peers: vec![ip("172.18.0.5"), ip("172.18.0.6"), ip("172.18.0.5")],
        };
        assert_eq!(
            iptables_apply_commands("ab12", &f, true),
            cmds(&[
                &["iptables", "-w", "5", "-N", "WIBER-ab12"],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-A",
                    "WIBER-ab12",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.2",
                    "-j",
                    "DROP"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-I",
                    "INPUT",
                    "1",
                    "-s",
                    "172.18.0.5",
                    "-j",
                    "WIBER-ab12"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-I",
                    "INPUT",
                    "1",
                    "-s",
                    "172.18.0.6",
                    "-j",
                    "WIBER-ab12"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-I",
                    "OUTPUT",
                    "1",
                    "-d",
                    "172.18.0.5",
                    "-j",
                    "WIBER-ab12"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-I",
                    "OUTPUT",
                    "1",
                    "-d",
                    "172.18.0.6",
                    "-j",
                    "WIBER-ab12"
                ],
            ])
        );
    }

    #[test]
    fn loss_with_everyone_spares_loopback_and_covers_ipv6_when_it_works() {
        let f = NetFault::Loss {
            percent: 100.0,
            peers: vec![],
        };
        let v4 = cmds(&[
            &["iptables", "-w", "5", "-N", "WIBER-x"],
            &[
                "iptables",
                "-w",
                "5",
                "-A",
                "WIBER-x",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "1",
                "-j",
                "DROP",
            ],
            &[
                "iptables", "-w", "5", "-I", "INPUT", "1", "!", "-i", "lo", "-j", "WIBER-x",
            ],
            &[
                "iptables", "-w", "5", "-I", "OUTPUT", "1", "!", "-o", "lo", "-j", "WIBER-x",
            ],
        ]);
        assert_eq!(iptables_apply_commands("x", &f, false), v4);
        let both = iptables_apply_commands("x", &f, true);
        assert_eq!(both.len(), 8);
        assert_eq!(&both[..4], &v4[..]);
        assert!(both[4..].iter().all(|c| c[0] == "ip6tables"));
        assert_eq!(probability(33.3333333), "0.333333");
        assert_eq!(probability(0.1), "0.001");
    }

    #[test]
    fn partition_jumps_only_in_its_direction_and_family() {
        let f = NetFault::Partition {
            peers: vec![ip("10.0.0.2"), ip("fd00::2")],
            direction: Direction::In,
        };
        assert_eq!(
            iptables_apply_commands("p1", &f, false),
            cmds(&[
                &["iptables", "-w", "5", "-N", "WIBER-p1"],
                &["iptables", "-w", "5", "-A", "WIBER-p1", "-j", "DROP"],
                &["iptables", "-w", "5", "-I", "INPUT", "1", "-s", "10.0.0.2", "-j", "WIBER-p1"],
                &["ip6tables", "-w", "5", "-N", "WIBER-p1"],
                &["ip6tables", "-w", "5", "-A", "WIBER-p1", "-j", "DROP"],
                &[
                    "ip6tables",
                    "-w",
                    "5",
                    "-I",
                    "INPUT",
                    "1",
                    "-s",
                    "fd00::2",
                    "-j",
                    "WIBER-p1"
                ],
            ])
        );
        let f = NetFault::Partition {
            peers: vec![],
            direction: Direction::Out,
        };
        assert_eq!(
            iptables_apply_commands("p2", &f, false),
            cmds(&[
                &["iptables", "-w", "5", "-N", "WIBER-p2"],
                &["iptables", "-w", "5", "-A", "WIBER-p2", "-j", "DROP"],
                &["iptables", "-w", "5", "-I", "OUTPUT", "1", "!", "-o", "lo", "-j", "WIBER-p2"],
            ])
        );
        assert!(iptables_apply_commands("b", &NetFault::Bandwidth { kbit: 64 }, true).is_empty());
    }

    /// `iptables -S` as iptables-nft 1.8.9 prints it, with a chain that is not ours.
    const LISTING: &str = "\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N OTHER
-N WIBER-ab12
-N WIBER-cd34
-A INPUT -s 172.18.0.5/32 -j WIBER-ab12
-A INPUT ! -i lo -j WIBER-cd34
-A INPUT -j OTHER
-A OUTPUT -d 172.18.0.5/32 -j WIBER-ab12
-A OTHER -s 10.1.1.1/32 -j DROP
-A WIBER-ab12 -m statistic --mode random --probability 0.20000000000 -j DROP
-A WIBER-cd34 -j DROP
";

    #[test]
    fn heal_removes_exactly_our_jumps_then_the_chain() {
        let chains = parse_chains(LISTING);
        assert_eq!(
            chains.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["WIBER-ab12", "WIBER-cd34"]
        );
        assert_eq!(chains[0].rules, 1);
        let ab: Vec<FoundChain> = chains
            .into_iter()
            .filter(|c| c.name == "WIBER-ab12")
            .collect();
        assert_eq!(
            iptables_remove_commands(Family::V4, Table::Filter, &ab),
            cmds(&[
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-D",
                    "INPUT",
                    "-s",
                    "172.18.0.5/32",
                    "-j",
                    "WIBER-ab12"
                ],
                &[
                    "iptables",
                    "-w",
                    "5",
                    "-D",
                    "OUTPUT",
                    "-d",
                    "172.18.0.5/32",
                    "-j",
                    "WIBER-ab12"
                ],
                &["iptables", "-w", "5", "-F", "WIBER-ab12"],
                &["iptables", "-w", "5", "-X", "WIBER-ab12"],
            ])
        );
        let all = iptables_remove_commands(Family::V6, Table::Filter, &parse_chains(LISTING));
        assert_eq!(
            all[2],
            argv(&[
                "ip6tables",
                "-w",
                "5",
                "-D",
                "INPUT",
                "!",
                "-i",
                "lo",
                "-j",
                "WIBER-cd34"
            ])
        );
        assert!(!all.iter().flatten().any(|a| a == "OTHER"));
        assert!(parse_chains("-P INPUT ACCEPT\n").is_empty());
    }

    #[test]
    fn reads_links_and_qdiscs_as_ip_and_tc_print_them() {
        let links = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: tunl0@NONE: <NOARP> mtu 1480 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ipip 0.0.0.0 brd 0.0.0.0
3364: eth0@if3363: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether aa:1f:02:0a:8a:a8 brd ff:ff:ff:ff:ff:ff link-netns x
7: eth1: <NO-CARRIER,BROADCAST,MULTICAST,UP,M-DOWN> mtu 1500 qdisc noqueue state LOWERLAYERDOWN
";
        assert_eq!(parse_up_links(links), ["eth0", "eth1"]);

        let qdiscs = "\
qdisc noqueue 0: dev lo root refcnt 2 
qdisc tbf fa17: dev eth0 root refcnt 3 rate 2048Kbit burst 4Kb lat 200ms 
qdisc tbf 1: dev eth1 root refcnt 2 rate 1Mbit burst 4Kb lat 50ms 
qdisc pfifo 10: dev eth1 parent 1:1 limit 1000p
";
        let q = parse_root_qdiscs(qdiscs);
        assert_eq!(q.len(), 3);
        assert!(q[1].is_ours() && !q[2].is_ours());
        assert_eq!(q[1].params, "refcnt 3 rate 2048Kbit burst 4Kb lat 200ms");
        assert_eq!(
            tbf_remove_commands(&q),
            cmds(&[&["tc", "qdisc", "del", "dev", "eth0", "root"]])
        );
        assert_eq!(
            tbf_add_commands(2048, &["eth0".into()]),
            cmds(&[&[
                "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "fa17:", "tbf", "rate",
                "2048kbit", "burst", "4096", "latency", "200ms"
            ]])
        );
        assert_eq!(tbf_burst_bytes(1_000_000), 1_250_000);
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let d = std::env::temp_dir().join(format!("wiber-netfault-{}", new_fault_id()));
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(id: &str, netns: NetnsRef) -> LedgerEntry {
        LedgerEntry {
            id: id.into(),
            instance: "kafka#2".into(),
            netns,
            fault: NetFault::Loss {
                percent: 20.0,
                peers: vec![ip("172.18.0.5")],
            },
            applied_at: Utc::now(),
            until: Some(Utc::now() + chrono::Duration::seconds(30)),
        }
    }

    #[test]
    fn ledger_records_removes_and_survives_a_reopen() {
        let dir = TempDir::new();
        let ledger = Ledger::at(dir.0.join("sub/netfaults.json"));
        assert!(ledger.entries().unwrap().is_empty());
        let a = entry(
            "aaaa1111",
            NetnsRef::Container {
                name: "wiber-kafka-2".into(),
            },
        );
        let mut b = entry("bbbb2222", NetnsRef::Pid { pid: 4242 });
        b.until = None;
        ledger.record(&a).unwrap();
        ledger.record(&b).unwrap();
        assert!(ledger.record(&a).is_err(), "a duplicate id is refused");
        assert_eq!(
            Ledger::at(ledger.path()).entries().unwrap(),
            vec![a.clone(), b.clone()]
        );
        ledger.remove("aaaa1111").unwrap();
        ledger.remove("aaaa1111").unwrap();
        assert_eq!(ledger.entries().unwrap(), vec![b.clone()]);
        let text = fs::read_to_string(ledger.path()).unwrap();
        assert!(text.contains(r#""kind": "pid""#), "{text}");
        assert!(
            !fs::read_dir(dir.0.join("sub")).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp.")),
            "no temporary file is left behind"
        );

        fs::write(ledger.path(), "{not json").unwrap();
        let err = format!("{:#}", ledger.entries().unwrap_err());
        assert!(err.contains("not a JSON array"), "{err}");
    }

    #[test]
    fn ledger_drops_entries_whose_namespace_is_gone() {
        let dir = TempDir::new();
        let ledger = Ledger::at(dir.0.join("netfaults.json"));
        for id in ["c1", "c2"] {
            ledger
                .record(&entry(id, NetnsRef::Container { name: id.into() }))
                .unwrap();
        }
        let (healed, errors) = ledger.heal_all(&|_| None);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(healed.len(), 2);
        assert!(healed[0].contains("container c1 is gone"), "{healed:?}");
        assert!(ledger.entries().unwrap().is_empty());
    }

    #[test]
    fn ledger_lock_serializes_concurrent_writers() {
        let dir = TempDir::new();
        let path = dir.0.join("netfaults.json");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    Ledger::at(path)
                        .record(&entry(&format!("t{i}"), NetnsRef::Pid { pid: i }))
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(Ledger::at(&path).entries().unwrap().len(), 8);
    }

    // -----------------------------------------------------------------------------------
    // The real thing, in two network namespaces of our own joined by a veth pair.
    // -----------------------------------------------------------------------------------

    mod real {
        use super::super::*;
        use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
        use std::process::Child;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        use std::thread::JoinHandle;

        const PORT: u16 = 7777;

        fn sh(args: &[&str]) {
            let out = Command::new("ip")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Two namespaces `a` and `b`, a veth pair between them, and a process in each
        /// whose pid the faults are applied by. Drop removes all of it, a Toxiproxy left
        /// running in them by a failed test included.
        struct Pair {
            a: String,
            b: String,
            addr_a: IpAddr,
            addr_b: IpAddr,
            tag: String,
            /// In `a`, then in `b`.
            sleepers: Vec<Child>,
            /// Their network namespaces (`net:[...]`), to find what was left in them.
            netns: Vec<String>,
            stop: Arc<AtomicBool>,
            threads: Vec<JoinHandle<()>>,
        }

        impl Drop for Pair {
            fn drop(&mut self) {
                self.stop.store(true, Ordering::SeqCst);
                for t in self.threads.drain(..) {
                    let _ = t.join();
                }
                // Found by namespace, so also after a sleeper died.
                if let Ok(servers) = toxiproxy::all_servers() {
                    let ours: Vec<_> = servers
                        .into_iter()
                        .filter(|s| self.netns.contains(&s.netns))
                        .collect();
                    let _ = toxiproxy::stop_servers(&ours);
                }
                for mut c in self.sleepers.drain(..) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for ns in [&self.a, &self.b] {
                    let _ = Command::new("ip")
                        .args(["netns", "del", ns])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }

        impl Pair {
            fn new() -> Pair {
                Pair::on(213)
            }

            /// A pair on 10.`net`.x.1 and .2.
            fn on(net: u8) -> Pair {
                let tag = new_fault_id()[..6].to_string();
                let x = u8::from_str_radix(&tag[..2], 16).unwrap() % 250 + 1;
                let mut p = Pair {
                    a: format!("wnf-{tag}-a"),
                    b: format!("wnf-{tag}-b"),
                    addr_a: format!("10.{net}.{x}.1").parse().unwrap(),
                    addr_b: format!("10.{net}.{x}.2").parse().unwrap(),
                    tag: tag.clone(),
                    sleepers: Vec::new(),
                    netns: Vec::new(),
                    stop: Arc::new(AtomicBool::new(false)),
                    threads: Vec::new(),
                };
                let (va, vb) = (format!("wnf{tag}a"), format!("wnf{tag}b"));
                sh(&["netns", "add", &p.a]);
                sh(&["netns", "add", &p.b]);
                sh(&[
                    "-n", &p.a, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns",
                    &p.b,
                ]);
                sh(&[
                    "-n",
                    &p.a,
                    "addr",
                    "add",
                    &format!("{}/24", p.addr_a),
                    "dev",
                    &va,
                ]);
                sh(&[
                    "-n",
                    &p.b,
                    "addr",
                    "add",
                    &format!("{}/24", p.addr_b),
                    "dev",
                    &vb,
                ]);
                for (ns, dev) in [(&p.a, &va), (&p.b, &vb)] {
                    sh(&["-n", ns, "link", "set", dev, "up"]);
                    sh(&["-n", ns, "link", "set", "lo", "up"]);
                }
                for ns in [p.a.clone(), p.b.clone()] {
                    let c = Command::new("ip")
                        .args(["netns", "exec", &ns, "sleep", "300"])
                        .spawn()
                        .unwrap();
                    let pid = c.id();
                    p.sleepers.push(c);
                    // `ip netns exec` enters the namespace, then execs: wait until it has.
                    let want = fs::read_link(format!("/proc/{}/ns/net", std::process::id())).ok();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while fs::read_link(format!("/proc/{pid}/ns/net")).ok() == want {
                        assert!(Instant::now() < deadline, "the sleeper never entered {ns}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    p.netns.push(toxiproxy::netns_of(pid).unwrap());
                }
                p
            }

            /// A process in `a`.
            fn pid(&self) -> u32 {
                self.sleepers[0].id()
            }

            /// A process in `b`.
            fn pid_b(&self) -> u32 {
                self.sleepers[1].id()
            }

            /// A TCP echo server in `ns`: every connection gets back what it sends.
            fn serve_echo(&mut self, ns: &str, addr: SocketAddr) {
                let (tx, rx) = mpsc::channel();
                let stop = self.stop.clone();
                let ns = ns.to_string();
                self.threads.push(std::thread::spawn(move || {
                    enter(&ns);
                    let l = TcpListener::bind(addr).unwrap();
                    l.set_nonblocking(true).unwrap();
                    tx.send(()).unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((mut s, _)) = l.accept() else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_nodelay(true).unwrap();
                            // Short, so the thread sees `stop` and lets the namespace go.
                            s.set_read_timeout(Some(Duration::from_millis(100)))
                                .unwrap();
                            let mut buf = [0u8; 1024];
                            while !stop.load(Ordering::SeqCst) {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                }));
                rx.recv_timeout(Duration::from_secs(5)).unwrap();
            }

            /// A TCP server in `ns` that reads each connection to its end, then answers
            /// one byte (so the client can time a transfer).
            fn serve_tcp(&mut self, ns: &str, addr: SocketAddr) {
                let (tx, rx) = mpsc::channel();
                let stop = self.stop.clone();
                let ns = ns.to_string();
                self.threads.push(std::thread::spawn(move || {
                    enter(&ns);
                    let l = TcpListener::bind(addr).unwrap();
                    l.set_nonblocking(true).unwrap();
                    tx.send(()).unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        match l.accept() {
                            Ok((mut s, _)) => {
                                std::thread::spawn(move || {
                                    s.set_nonblocking(false).unwrap();
                                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                                    let mut buf = Vec::new();
                                    if s.read_to_end(&mut buf).is_ok() {
                                        let _ = s.write_all(b"k");
                                    }
                                });
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                }));
                rx.recv_timeout(Duration::from_secs(5)).unwrap();
            }
        }

        /// Moves the calling thread into named namespace `ns` (threads have their own).
        fn enter(ns: &str) {
            let f = File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: a valid namespace fd; CLONE_NEWNET may be entered by one thread.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        }

        /// Runs `f` on a thread inside `ns`.
        fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
            let ns = ns.to_string();
            std::thread::spawn(move || {
                enter(&ns);
                f()
            })
            .join()
            .unwrap()
        }

        fn connects(ns: &str, to: SocketAddr) -> bool {
            in_ns(ns, move || {
                TcpStream::connect_timeout(&to, Duration::from_millis(800)).is_ok()
            })
        }

        /// Sends `n` datagrams from `from_ns` to a socket in `to_ns`; how many arrived.
        fn udp_delivered(from_ns: &str, to_ns: &str, to: SocketAddr, n: usize) -> usize {
            let (tx, rx) = mpsc::channel();
            let to_ns = to_ns.to_string();
            let receiver = std::thread::spawn(move || {
                enter(&to_ns);
                let s = UdpSocket::bind(to).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                tx.send(()).unwrap();
                let mut got = 0;
                let mut buf = [0u8; 64];
                while s.recv(&mut buf).is_ok() {
                    got += 1;
                }
                got
            });
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            in_ns(from_ns, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                for i in 0..n {
                    let _ = s.send_to(&(i as u32).to_be_bytes(), to);
                    // Paced, so the receiver's buffer is not what drops them.
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            receiver.join().unwrap()
        }

        /// Seconds to push `bytes` from `ns` to `to` and hear back.
        fn transfer_secs(ns: &str, to: SocketAddr, bytes: usize) -> f64 {
            in_ns(ns, move || {
                let t = Instant::now();
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(&vec![7u8; bytes]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut k = [0u8; 1];
                s.read_exact(&mut k).unwrap();
                t.elapsed().as_secs_f64()
            })
        }

        #[test]
        fn faults_cut_and_heal_real_traffic_between_two_namespaces() {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: needs root (network namespaces, iptables, tc)");
                return;
            }
            if tool_path("ip").is_none() {
                eprintln!("skipped: `ip` (iproute2) is not installed");
                return;
            }
            check_host().unwrap();
            let mut p = Pair::new();
            let pid = p.pid();
            let (a, b) = (p.a.clone(), p.b.clone());
            let to_b = SocketAddr::new(p.addr_b, PORT);
            let local_a = SocketAddr::new(ip("127.0.0.1"), PORT + 1);
            p.serve_tcp(&b, to_b);
            p.serve_tcp(&a, local_a);
            assert!(connects(&a, to_b), "baseline: a reaches b");
            assert!(active(pid).unwrap().is_empty());

            // Partition, both ways.
            let part = NetFault::Partition {
                peers: vec![p.addr_b],
                direction: Direction::Both,
            };
            apply(pid, "part", &part).unwrap();
            let now = active(pid).unwrap();
            eprintln!("partition: active = {now:?}");
            assert_eq!(now, ["WIBER-part (iptables, 2 jumps)"]);
            assert!(!connects(&a, to_b), "partitioned: a must not reach b");
            assert!(connects(&a, local_a), "loopback is untouched");
            let again = apply(pid, "part", &part).unwrap_err();
            eprintln!("applying the same id twice: {again:#}");
            heal(pid, "part", &part).unwrap();
            heal(pid, "part", &part).unwrap(); // idempotent
            assert!(active(pid).unwrap().is_empty());
            assert!(connects(&a, to_b), "healed: a reaches b again");

            // Partition In: a's packets still leave (UDP arrives), b's answers do not.
            let part_in = NetFault::Partition {
                peers: vec![p.addr_b],
                direction: Direction::In,
            };
            apply(pid, "pin", &part_in).unwrap();
            assert!(!connects(&a, to_b), "in-partition: no SYN-ACK gets back");
            let got = udp_delivered(&a, &b, SocketAddr::new(p.addr_b, PORT + 2), 50);
            eprintln!("partition in: {got}/50 datagrams a->b arrived");
            assert_eq!(got, 50);
            heal(pid, "pin", &part_in).unwrap();
            let part_out = NetFault::Partition {
                peers: vec![p.addr_b],
                direction: Direction::Out,
            };
            apply(pid, "pout", &part_out).unwrap();
            let got = udp_delivered(&a, &b, SocketAddr::new(p.addr_b, PORT + 3), 50);
            eprintln!("partition out: {got}/50 datagrams a->b arrived");
            assert_eq!(got, 0);
            heal(pid, "pout", &part_out).unwrap();

            // Loss 100% with everyone: nothing crosses the veth, loopback still works.
            let all = NetFault::Loss {
                percent: 100.0,
                peers: vec![],
            };
            apply(pid, "l100", &all).unwrap();
            eprintln!("loss 100%: active = {:?}", active(pid).unwrap());
            assert!(!connects(&a, to_b), "100% loss: a must not reach b");
            assert!(connects(&a, local_a), "loopback is spared with everyone");
            heal(pid, "l100", &all).unwrap();
            assert!(connects(&a, to_b));

            // Loss 50% with b: about half the datagrams arrive.
            let half = NetFault::Loss {
                percent: 50.0,
                peers: vec![p.addr_b],
            };
            apply(pid, "l50", &half).unwrap();
            let got = udp_delivered(&a, &b, SocketAddr::new(p.addr_b, PORT + 4), 400);
            eprintln!("loss 50%: {got}/400 datagrams arrived");
            assert!((120..=280).contains(&got), "{got}/400 arrived");
            heal(pid, "l50", &half).unwrap();
            let got = udp_delivered(&a, &b, SocketAddr::new(p.addr_b, PORT + 5), 100);
            assert_eq!(got, 100, "healed: every datagram arrives");

            // Bandwidth: 256 KiB at 2048 kbit/s takes about a second.
            let base = transfer_secs(&a, to_b, 256 * 1024);
            let bw = NetFault::Bandwidth { kbit: 2048 };
            apply(pid, "bw", &bw).unwrap();
            eprintln!("bandwidth: active = {:?}", active(pid).unwrap());
            assert!(
                apply(pid, "bw2", &bw).is_err(),
                "one bandwidth fault per namespace"
            );
            let slow = transfer_secs(&a, to_b, 256 * 1024);
            eprintln!("256 KiB a->b: {base:.3}s unlimited, {slow:.3}s at 2048 kbit/s");
            assert!(slow > 0.6, "{slow}s");
            heal(pid, "bw", &bw).unwrap();
            let after = transfer_secs(&a, to_b, 256 * 1024);
            assert!(after < 0.5, "healed: {after}s");

            // heal_everything: a loss, a partition and a tbf, no ledger.
            apply(pid, "e1", &half).unwrap();
            apply(pid, "e2", &part_out).unwrap();
            apply(pid, "e3", &bw).unwrap();
            assert_eq!(active(pid).unwrap().len(), 3);
            let removed = heal_everything(pid).unwrap();
            eprintln!("heal_everything removed: {removed:#?}");
            assert_eq!(removed.len(), 3);
            assert!(active(pid).unwrap().is_empty());
            assert!(heal_everything(pid).unwrap().is_empty());
            assert!(connects(&a, to_b));

            // A tbf that fails halfway is rolled back: a second interface with a root
            // qdisc that is not ours makes `tc qdisc add` fail on it.
            let (vc, vd) = (format!("wnf{}c", p.tag), format!("wnf{}d", p.tag));
            sh(&[
                "-n", &a, "link", "add", &vc, "type", "veth", "peer", "name", &vd,
            ]);
            sh(&["-n", &a, "link", "set", &vc, "up"]);
            let tc = |args: &[&str]| ns_exec(pid, &argv(args)).unwrap();
            tc(&[
                "tc", "qdisc", "add", "dev", &vc, "root", "handle", "1:", "pfifo",
            ]);
            let links = ns_exec(pid, &argv(&["ip", "-o", "link", "show"])).unwrap();
            eprintln!("links (apply order): {:?}", parse_up_links(&links));
            let err = apply(pid, "bw3", &bw).unwrap_err();
            eprintln!("bandwidth over a foreign qdisc: {err:#}");
            assert!(format!("{err:#}").contains("was removed"), "{err:#}");
            assert!(active(pid).unwrap().is_empty(), "rolled back");
            let qd = tc(&["tc", "qdisc", "show", "dev", &vc]);
            assert!(qd.contains("pfifo"), "the foreign qdisc stays: {qd}");
            assert!(heal_everything(pid).unwrap().is_empty());
        }

        fn ip(s: &str) -> IpAddr {
            s.parse().unwrap()
        }

        /// A connection from namespace `ns` (a socket stays in the namespace it was made
        /// in, whichever thread uses it later).
        fn connect_from(ns: &str, to: SocketAddr) -> TcpStream {
            let s = in_ns(ns, move || {
                TcpStream::connect_timeout(&to, Duration::from_secs(2))
            })
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }

        /// One request and its echo on `s`: seconds, or how it failed.
        fn round_trip(s: &mut TcpStream) -> std::io::Result<f64> {
            let t = Instant::now();
            s.write_all(b"ping\n")?;
            let mut back = [0u8; 5];
            s.read_exact(&mut back)?;
            assert_eq!(&back, b"ping\n");
            Ok(t.elapsed().as_secs_f64())
        }

        /// `n` round trips on `s`, in milliseconds.
        fn round_trips_ms(s: &mut TcpStream, n: usize) -> Vec<f64> {
            (0..n)
                .map(|_| round_trip(s).expect("round trip") * 1000.0)
                .collect()
        }

        fn fmt_ms(v: &[f64]) -> String {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        }

        /// A fault id no concurrent run of this test uses (ids name the servers host-wide).
        fn fresh_id(logs: &mut Logs, prefix: &str) -> String {
            let id = format!("{prefix}{}", &new_fault_id()[..6]);
            logs.1.push(id.clone());
            id
        }

        /// The Toxiproxy logs of a test's faults, removed when it passes (kept to read
        /// when it fails).
        struct Logs(PathBuf, Vec<String>);

        impl Drop for Logs {
            fn drop(&mut self) {
                if !std::thread::panicking() {
                    for id in &self.1 {
                        let _ = fs::remove_file(toxiproxy::log_path(&self.0, id));
                    }
                }
            }
        }

        #[test]
        fn toxiproxy_faults_delay_time_out_and_reset_real_connections() {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: needs root (network namespaces, iptables, nsenter)");
                return;
            }
            if tool_path("ip").is_none() {
                eprintln!("skipped: `ip` (iproute2) is not installed");
                return;
            }
            let root = crate::provision::repo_root().unwrap();
            if toxiproxy::check_buildable(&root).is_err() {
                eprintln!("skipped: Toxiproxy is not built and `go` is not installed");
                return;
            }
            check_toxiproxy(&root).unwrap();
            let t = Instant::now();
            let bins = toxiproxy::ensure_binaries(&root).unwrap();
            eprintln!("ensure_binaries: {:.1?} ({bins:?})", t.elapsed());
            let mut logs = Logs(root.clone(), Vec::new());

            let mut p = Pair::on(214);
            let (a, b, pid) = (p.a.clone(), p.b.clone(), p.pid_b());
            let to_b = SocketAddr::new(p.addr_b, 7000);
            p.serve_echo(&b, "0.0.0.0:7000".parse().unwrap());

            // Delay: a connection made before the fault is reset at its next packet; a new
            // one goes through the proxy and every answer is 200 ms late.
            let mut old = connect_from(&a, to_b);
            let before = round_trips_ms(&mut old, 5);
            eprintln!("round trips before the fault: {} ms", fmt_ms(&before));
            assert!(before.iter().all(|ms| *ms < 50.0), "{before:?}");
            let id = fresh_id(&mut logs, "dly");
            let delay = NetFault::Delay {
                ms: 200,
                jitter_ms: 0,
                ports: vec![7000],
            };
            let t = Instant::now();
            apply(pid, &id, &delay).unwrap();
            eprintln!("apply {}: {:.2?}", delay.describe(), t.elapsed());
            let now = active(pid).unwrap();
            eprintln!("active: {now:?}");
            let chain = chain_name(&id);
            assert!(
                now.contains(&format!("{chain} (iptables nat, 1 jump)")),
                "{now:?}"
            );
            assert!(
                now.contains(&format!("{chain} (iptables, 1 jump)")),
                "{now:?}"
            );
            assert!(
                now.iter().any(|l| l.starts_with("toxiproxy-server pid")),
                "{now:?}"
            );
            let err = round_trip(&mut old).unwrap_err();
            eprintln!(
                "the connection made before the fault: {err} ({:?})",
                err.kind()
            );
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
            let mut new = connect_from(&a, to_b);
            let during = round_trips_ms(&mut new, 5);
            eprintln!("round trips during the delay: {} ms", fmt_ms(&during));
            assert!(
                during.iter().all(|ms| (195.0..1000.0).contains(ms)),
                "{during:?}"
            );

            // One Toxiproxy fault per port: a second is refused and leaves nothing.
            let id2 = fresh_id(&mut logs, "dup");
            let reset = NetFault::Reset { ports: vec![7000] };
            let err = apply(pid, &id2, &reset).unwrap_err();
            eprintln!("a second fault on port 7000: {err:#}");
            assert!(toxiproxy::find_servers(None, Some(&id2))
                .unwrap()
                .is_empty());

            heal(pid, &id, &delay).unwrap();
            heal(pid, &id, &delay).unwrap(); // idempotent
            let gone = round_trip(&mut new).unwrap_err();
            eprintln!(
                "the proxied connection after heal: {gone} ({:?})",
                gone.kind()
            );
            let mut fresh = connect_from(&a, to_b);
            let after = round_trips_ms(&mut fresh, 5);
            eprintln!("round trips after heal: {} ms", fmt_ms(&after));
            assert!(after.iter().all(|ms| *ms < 50.0), "{after:?}");
            assert!(active(pid).unwrap().is_empty());
            assert!(
                toxiproxy::find_servers(None, Some(&id)).unwrap().is_empty(),
                "no toxiproxy-server of the fault is left anywhere"
            );

            // Reset: old and new connections are reset, nothing reaches the service.
            let id = fresh_id(&mut logs, "rst");
            apply(pid, &id, &reset).unwrap();
            let err = round_trip(&mut fresh).unwrap_err();
            eprintln!("reset, an old connection: {err} ({:?})", err.kind());
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
            let mut new = connect_from(&a, to_b);
            let t = Instant::now();
            let err = round_trip(&mut new).unwrap_err();
            eprintln!(
                "reset, a new connection: {err} ({:?}) after {:.1?}",
                err.kind(),
                t.elapsed()
            );
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
            heal(pid, &id, &reset).unwrap();
            let mut fresh = connect_from(&a, to_b);
            round_trip(&mut fresh).unwrap();

            // Timeout: nothing comes back, the connection is closed after 300 ms. Healed
            // by heal_everything, as when the ledger is lost.
            let id = fresh_id(&mut logs, "tmo");
            let timeout = NetFault::Timeout {
                ms: 300,
                ports: vec![7000],
            };
            apply(pid, &id, &timeout).unwrap();
            let mut new = connect_from(&a, to_b);
            let t = Instant::now();
            let err = round_trip(&mut new).unwrap_err();
            let waited = t.elapsed();
            eprintln!("timeout: {err} ({:?}) after {waited:.2?}", err.kind());
            assert!(waited >= Duration::from_millis(280), "{waited:?}");
            assert!(waited < Duration::from_secs(3), "{waited:?}");
            let removed = heal_everything(pid).unwrap();
            eprintln!("heal_everything removed: {removed:#?}");
            assert_eq!(removed.len(), 3, "nat chain, filter chain, server");
            assert!(active(pid).unwrap().is_empty());
            round_trip(&mut connect_from(&a, to_b)).unwrap();

            // A failure after the server started is rolled back: a CLI that refuses to
            // create proxies.
            let dir = super::TempDir::new();
            let fake = dir.0.join("toxiproxy-cli");
            fs::write(
                &fake,
                format!(
                    "#!/bin/sh\ncase \" $* \" in *\" create \"*) echo 'refused by the test' >&2; \
                     exit 1;; esac\nexec {} \"$@\"\n",
                    bins.cli.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
            let broken = ToxiproxyBins {
                server: bins.server.clone(),
                cli: fake,
            };
            let id = fresh_id(&mut logs, "rb");
            let err = apply_toxiproxy_with(pid, &id, &delay, &broken, &root).unwrap_err();
            eprintln!("apply with a failing proxy: {err:#}");
            assert!(format!("{err:#}").contains("was removed"), "{err:#}");
            assert!(toxiproxy::find_servers(None, Some(&id)).unwrap().is_empty());
            assert!(active(pid).unwrap().is_empty());
            // A server that cannot start fails fast.
            let dead = ToxiproxyBins {
                server: PathBuf::from("/bin/false"),
                cli: bins.cli.clone(),
            };
            let t = Instant::now();
            let err = apply_toxiproxy_with(pid, &id, &delay, &dead, &root).unwrap_err();
            eprintln!(
                "apply with a server that exits: {err:#} ({:.1?})",
                t.elapsed()
            );
            assert!(t.elapsed() < Duration::from_secs(5));
            assert!(active(pid).unwrap().is_empty());
            round_trip(&mut connect_from(&a, to_b)).unwrap();

            // The process that applied a fault is SIGKILLed: its Toxiproxy lives on (a
            // session of its own) and a heal from another process finds it by its
            // environment.
            let id = fresh_id(&mut logs, "kil");
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "runtime::netfault::tests::real::helper_apply_a_delay_and_wait",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(APPLY_ENV, format!("{pid} {id}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains(APPLIED) {
                        let _ = tx.send(());
                    }
                }
            });
            let told = rx.recv_timeout(Duration::from_secs(60));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            told.expect("the child process applied the delay within 60 s");
            let left = toxiproxy::find_servers(Some(pid), Some(&id)).unwrap();
            eprintln!("after the applier was SIGKILLed: {left:?}");
            assert_eq!(left.len(), 1);
            let during = round_trips_ms(&mut connect_from(&a, to_b), 3);
            eprintln!("round trips, applier dead: {} ms", fmt_ms(&during));
            assert!(during.iter().all(|ms| *ms >= 195.0), "{during:?}");
            heal(pid, &id, &delay).unwrap();
            assert!(toxiproxy::find_servers(None, Some(&id)).unwrap().is_empty());
            assert!(active(pid).unwrap().is_empty());
            let after = round_trips_ms(&mut connect_from(&a, to_b), 3);
            assert!(after.iter().all(|ms| *ms < 50.0), "{after:?}");

            // Every process of the namespace is gone (a stopped container) with a
            // Toxiproxy still in it: the ledger's heal finds no pid for the entry and
            // stops that Toxiproxy anyway.
            let ledger = Ledger::at(dir.0.join("netfaults.json"));
            let id = fresh_id(&mut logs, "orp");
            ledger
                .record(&LedgerEntry {
                    id: id.clone(),
                    instance: "echo#1".into(),
                    netns: NetnsRef::Pid { pid },
                    fault: delay.clone(),
                    applied_at: Utc::now(),
                    until: None,
                })
                .unwrap();
            apply(pid, &id, &delay).unwrap();
            let mut sleeper_b = p.sleepers.pop().unwrap();
            sleeper_b.kill().unwrap();
            sleeper_b.wait().unwrap();
            let left = toxiproxy::find_servers(None, Some(&id)).unwrap();
            assert!(left.len() == 1 && left[0].orphan, "{left:?}");
            let (healed, errors) = ledger.heal_all(&|_| None);
            eprintln!("ledger heal, namespace without its processes: {healed:?}");
            assert!(errors.is_empty(), "{errors:?}");
            assert!(healed[0].contains("stopped toxiproxy-server"), "{healed:?}");
            assert!(toxiproxy::find_servers(None, Some(&id)).unwrap().is_empty());
            assert!(ledger.entries().unwrap().is_empty());
        }

        const APPLY_ENV: &str = "WIBER_TEST_APPLY_DELAY";
        const APPLIED: &str = "WIBER-TEST-APPLIED";

        /// Not a test of its own: the applier of the test above, in a process of its own
        /// that gets SIGKILLed. Does nothing unless `WIBER_TEST_APPLY_DELAY` is
        /// `<pid> <id>`.
        #[test]
        fn helper_apply_a_delay_and_wait() {
            let Ok(spec) = std::env::var(APPLY_ENV) else {
                return;
            };
            let (pid, id) = spec.split_once(' ').unwrap();
            let delay = NetFault::Delay {
                ms: 200,
                jitter_ms: 0,
                ports: vec![7000],
            };
            apply(pid.parse().unwrap(), id, &delay).unwrap();
            println!("{APPLIED}");
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}
