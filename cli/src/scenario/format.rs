//! Scenario files: TOML in, a validated [`Scenario`] out.
//!
//! Two layers, as STYLE.md asks: serde structs with `deny_unknown_fields` that mirror the
//! file (`Raw*`, with spans), then [`validate`] into domain types. Every error carries
//! `file:line:column` and the expected syntax of the section it is in, because the person
//! reading it is editing that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use wiber_model::report::{ReadKind, ReadSource, ReadsConfig, VerifyCounts};

use super::threshold::{self, Threshold};
use crate::bench::reads::{ReadRates, DEFAULT_FIXTURE_MESSAGES, PAGE};
use crate::runtime::fault::NetSpec;
use crate::runtime::netfault::Direction;
use crate::runtime::{Action, Service, Signal, Target};

/// Longest load a scenario may ask for: every loop of a run is bounded.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most occurrences one `[[faults]]` entry may expand to.
pub const MAX_COUNT: u32 = 1000;
/// Most faults `[random]` may draw (bounded before drawing: the span over the shortest
/// interval).
pub const MAX_RANDOM_FAULTS: u64 = 100_000;
/// `[random]`'s `stop` when not given: before the load's end by this much, so the tail
/// drains.
pub const DEFAULT_RANDOM_STOP: Duration = Duration::from_secs(20);
/// `[random]`'s `start` when not given: the steady state before the first random fault.
pub const DEFAULT_RANDOM_START: Duration = Duration::from_secs(10);

// --- the file as written ------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    stack: Option<Spanned<RawStack>>,
    load: Spanned<RawLoad>,
    #[serde(default)]
    faults: Vec<Spanned<RawFault>>,
    random: Option<Spanned<RawRandom>>,
    #[serde(default)]
    thresholds: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    expect: Option<Spanned<RawExpect>>,
}

/// `[random]`: how a fault schedule is drawn from `[[random.faults]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandom {
    seed: Option<Spanned<u64>>,
    start: Option<Spanned<String>>,
    stop: Option<Spanned<String>>,
    /// `"8s"` or `["4s", "12s"]`.
    interval: Option<Spanned<toml::Value>>,
    max_concurrent: Option<Spanned<u32>>,
    #[serde(default)]
    max_down: BTreeMap<Spanned<String>, Spanned<u32>>,
    #[serde(default)]
    faults: Vec<Spanned<RawRandomFault>>,
}

/// One `[[random.faults]]` entry: a fault the draw may pick.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandomFault {
    action: Spanned<String>,
    target: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<String>>>,
    weight: Option<Spanned<u32>>,
    /// `"5s"` or `["2s", "8s"]`.
    #[serde(rename = "for")]
    for_: Option<Spanned<toml::Value>>,
    signal: Option<Spanned<String>>,
    percent: Option<Spanned<f64>>,
    kbit: Option<Spanned<u64>>,
    peers: Option<Spanned<Vec<String>>>,
    direction: Option<Spanned<String>>,
    ms: Option<Spanned<u64>>,
    jitter_ms: Option<Spanned<u64>>,
}

/// The keys `[[faults]]` and `[[random.faults]]` share: a fault's parameters, read by
/// one function ([`params`]) for both.
struct RawParams<'a> {
    signal: &'a Option<Spanned<String>>,
    to: Option<&'a Spanned<u32>>,
    percent: &'a Option<Spanned<f64>>,
    kbit: &'a Option<Spanned<u64>>,
    peers: &'a Option<Spanned<Vec<String>>>,
    direction: &'a Option<Spanned<String>>,
    ms: &'a Option<Spanned<u64>>,
    jitter_ms: &'a Option<Spanned<u64>>,
}

/// `[expect] fail = ["lost"]`: what a deliberately broken stack must be caught doing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    fail: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStack {
    consumers: Option<Spanned<u32>>,
    partitions: Option<Spanned<u32>>,
    brokers: Option<Spanned<u32>>,
    profile: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    rate: Option<Spanned<f64>>,
    duration: Option<Spanned<String>>,
    stages: Option<Vec<Spanned<RawStage>>>,
    conversations: Option<Spanned<u32>>,
    size: Option<Spanned<usize>>,
    retries: Option<u32>,
    connections: Option<Spanned<usize>>,
    timeout: Option<Spanned<String>>,
    reads: Option<Spanned<RawReads>>,
    read_fixture: Option<Spanned<u64>>,
    read_fixture_size: Option<Spanned<u64>>,
    verify_every: Option<Spanned<String>>,
    poison: Option<Spanned<u32>>,
}

/// `reads = { conversation = 200, user = 50, count = 20 }`: reads per second by kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReads {
    conversation: Option<Spanned<f64>>,
    user: Option<Spanned<f64>>,
    count: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    to: Spanned<f64>,
    over: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    count: Option<Spanned<u32>>,
    action: Spanned<String>,
    target: Option<Spanned<String>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    signal: Option<Spanned<String>>,
    to: Option<Spanned<u32>>,
    percent: Option<Spanned<f64>>,
    kbit: Option<Spanned<u64>>,
    peers: Option<Spanned<Vec<String>>>,
    direction: Option<Spanned<String>>,
    ms: Option<Spanned<u64>>,
    jitter_ms: Option<Spanned<u64>>,
}

// --- the validated scenario ----------------------------------------------------------

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// The file's text, copied into the run directory as written.
    pub source: String,
    /// `None`: attach to the running stack.
    pub stack: Option<StackSpec>,
    pub load: LoadSpec,
    /// `[[faults]]`, then (once [`crate::scenario::random::expand`] has drawn them) the faults of
    /// `[random]`.
    pub faults: Vec<FaultSpec>,
    /// `[random]`: the menu faults are drawn from, reproducibly from a seed.
    pub random: Option<RandomSpec>,
    pub thresholds: Vec<Threshold>,
    /// Delivery invariants (`lost`, ...) or threshold metrics that must fail for the run
    /// to pass (`[expect] fail`): how a scenario on an unsafe stack proves that the
    /// harness catches what that stack does wrong.
    pub expect_fail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    pub consumers: u32,
    pub partitions: u32,
    /// Brokers and safety profile (`brokers = 3`, `profile = "unsafe"`).
    pub cluster: crate::runtime::Cluster,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Constant-rate pieces run back to back (one, unless `[[load.stages]]` ramps).
    pub segments: Vec<Segment>,
    pub conversations: u32,
    pub size: usize,
    pub retries: u32,
    /// In-flight slots at the start, as bench's `--connections`; the pool grows from
    /// there up to bench's default `--max-connections` (a scenario's conversations, 50
    /// by default, bound it long before that).
    pub connections: usize,
    pub timeout: Duration,
    /// Reads mixed into every segment of the load, as bench's `--reads`.
    pub reads: Option<ReadsConfig>,
    /// Verify as the run goes, this often (`verify::incremental`): what the consumer
    /// group committed past is looked up in the store while the load runs. `None`: only
    /// the final verify, which short runs need no more than.
    pub verify_every: Option<Duration>,
    /// Records the store cannot hold, produced straight to the topic halfway through
    /// the first segment (`bench::poison`): each must be dead-lettered, nothing else lost.
    pub poison: u32,
}

/// One constant-rate piece of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub rate: f64,
    pub duration: Duration,
}

impl LoadSpec {
    pub fn duration(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// The time-weighted mean target rate: what `rate` means in a threshold.
    pub fn mean_rate(&self) -> f64 {
        let total = self.duration().as_secs_f64();
        if total == 0.0 {
            return 0.0;
        }
        self.segments
            .iter()
            .map(|s| s.rate * s.duration.as_secs_f64())
            .sum::<f64>()
            / total
    }
}

/// `[random]`: a weighted menu of faults and the rules of the draw; [`crate::scenario::random`]
/// turns it into [`FaultSpec`]s for a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSpec {
    /// Line of `[random]` in the file.
    pub line: usize,
    /// `seed = N`: used when `--seed` is not given.
    pub seed: Option<u64>,
    /// No random fault starts before this or after `stop` (offsets from the load's start).
    pub start: Duration,
    pub stop: Duration,
    /// Time from one candidate start to the next, drawn uniformly in `[lo, hi]`.
    pub interval: (Duration, Duration),
    /// At most this many random faults active at once.
    pub max_concurrent: u32,
    /// At most this many random faults active at once on a service (1 when not named).
    pub max_down: BTreeMap<Service, u32>,
    pub menu: Vec<RandomFault>,
}

impl RandomSpec {
    /// How many random faults may be active at once on `service`.
    pub fn max_down(&self, service: Service) -> u32 {
        self.max_down.get(&service).copied().unwrap_or(1)
    }
}

/// One `[[random.faults]]` entry: what a drawn fault does, on which of `targets`, for how
/// long.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFault {
    /// Line of the entry in the file (the drawn [`FaultSpec`]s carry it).
    pub line: usize,
    /// An action with an undo (every random fault is undone after its `for`).
    pub action: Action,
    /// Instances or Kafka roles; one is drawn per occurrence.
    pub targets: Vec<Target>,
    pub weight: u32,
    /// Drawn uniformly in `[lo, hi]`.
    pub for_: (Duration, Duration),
    pub signal: Option<Signal>,
    pub net: NetSpec,
}

/// One `[[faults]]` entry (or one fault drawn from `[random]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Line of the entry in the file, for messages.
    pub line: usize,
    pub at: Duration,
    /// Repeat period (from one occurrence's start to the next).
    pub every: Option<Duration>,
    pub count: u32,
    /// The fault model's action; shortcuts (kill-consumer, ...) are expanded into an
    /// action and a target when the file is read.
    pub action: Action,
    pub target: Target,
    /// Undo after this long.
    pub for_: Option<Duration>,
    /// The signal a `kill` sends, when one was given (SIGKILL otherwise); see [`Self::signal`].
    pub signal: Option<Signal>,
    /// `scale`: how many instances the service should have.
    pub to: Option<u32>,
    /// `loss`, `partition`, `bandwidth`: percent, kbit, peers, direction.
    pub net: NetSpec,
    /// Drawn from `[random]`: one that cannot be applied when it fires (its Kafka role has
    /// no holder mid-election, say) is recorded and skipped; the run goes on. A written
    /// `[[faults]]` entry that fails stops the run, as the file's author asked for it.
    pub drawn: bool,
}

/// The key (scenario file) or flag (`chaos`) a broken fault rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultField {
    Every,
    For,
    Signal,
    To,
    Target,
    Percent,
    Kbit,
    Peers,
    Direction,
    Ms,
    JitterMs,
}

/// A fault rule a [`FaultSpec`] breaks; the message names the keys (`for`, `every`, ...),
/// which are also `chaos`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRuleError {
    pub field: FaultField,
    pub message: String,
}

impl FaultSpec {
    /// The signal a `kill` sends.
    pub fn signal(&self) -> Signal {
        self.signal.unwrap_or(Signal::Kill)
    }

    /// The rules every fault keeps, however it was written (a `[[faults]]` entry or
    /// `chaos` flags), checked in one place so the two cannot drift apart.
    pub fn check(&self) -> Result<(), FaultRuleError> {
        let broken = |field, message: String| Err(FaultRuleError { field, message });
        if self.every.is_some_and(|e| e.is_zero()) {
            return broken(FaultField::Every, "every must be longer than 0".into());
        }
        if let Some(d) = self.for_ {
            if self.action.undo().is_none() {
                return broken(
                    FaultField::For,
                    format!(
                        "for undoes kill, stop, pause and disconnect; {} has no undo",
                        self.action
                    ),
                );
            }
            if self.every.is_some_and(|e| d >= e) {
                return broken(
                    FaultField::For,
                    "for must be shorter than every: occurrences would overlap".into(),
                );
            }
            if d.is_zero() {
                return broken(FaultField::For, "for must be longer than 0".into());
            }
        }
        if self.action != Action::Kill && self.signal.is_some() {
            return broken(FaultField::Signal, "signal applies to kill only".into());
        }
        match (self.action, self.to) {
            (Action::Scale, None) => broken(
                FaultField::To,
                "scale needs to = N (how many consumers to have)".into(),
            ),
            (Action::Scale, Some(n)) if !(1..=32).contains(&n) => {
                broken(FaultField::To, format!("to = {n} is out of range 1..=32"))
            }
            (Action::Scale, Some(_)) if self.target != Target::Service(Service::Consumer) => {
                broken(
                    FaultField::Target,
                    format!(
                        "scale adds consumers (target = \"consumer\"), not {}: the api publishes a fixed port and kafka and mongo are single nodes",
                        self.target
                    ),
                )
            }
            (Action::Scale, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => broken(FaultField::To, "to applies to scale only".into()),
        }?;
        self.check_net()
    }

    /// The rules of the network faults' parameters.
    fn check_net(&self) -> Result<(), FaultRuleError> {
        let broken = |field, message: String| Err(FaultRuleError { field, message });
        let n = &self.net;
        match (self.action, n.percent) {
            (Action::Loss, None) => {
                return broken(
                    FaultField::Percent,
                    "loss needs percent = 20 (the share of packets dropped)".into(),
                )
            }
            (Action::Loss, Some(p)) if !(p > 0.0 && p <= 100.0) => {
                return broken(
                    FaultField::Percent,
                    format!("percent = {p} is out of range: more than 0, at most 100"),
                )
            }
            (Action::Loss, _) | (_, None) => {}
            (_, Some(_)) => {
                return broken(FaultField::Percent, "percent applies to loss only".into())
            }
        }
        match (self.action, n.kbit) {
            (Action::Bandwidth, None) => {
                return broken(
                    FaultField::Kbit,
                    "bandwidth needs kbit = 512 (the egress rate, kbit/s)".into(),
                )
            }
            (Action::Bandwidth, Some(0)) => {
                return broken(
                    FaultField::Kbit,
                    "kbit must be more than 0 (a partition cuts everything)".into(),
                )
            }
            (Action::Bandwidth, _) | (_, None) => {}
            (_, Some(_)) => {
                return broken(FaultField::Kbit, "kbit applies to bandwidth only".into())
            }
        }
        if !n.peers.is_empty() && !matches!(self.action, Action::Loss | Action::Partition) {
            return broken(
                FaultField::Peers,
                "peers applies to loss and partition only".into(),
            );
        }
        if n.direction.is_some() && self.action != Action::Partition {
            return broken(
                FaultField::Direction,
                "direction applies to partition only".into(),
            );
        }
        match (self.action, n.ms) {
            (Action::Delay, None | Some(0)) => {
                return broken(
                    FaultField::Ms,
                    "delay needs ms = 200 (how late the answers are)".into(),
                )
            }
            (Action::Timeout, None) => {
                return broken(
                    FaultField::Ms,
                    "timeout needs ms = 5000 (when a held connection is closed; 0: never)".into(),
                )
            }
            (Action::Delay | Action::Timeout, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return broken(
                    FaultField::Ms,
                    "ms applies to delay and timeout only".into(),
                )
            }
        }
        match (self.action, n.jitter_ms, n.ms) {
            (Action::Delay, Some(j), Some(ms)) if j > ms => {
                return broken(
                    FaultField::JitterMs,
                    format!("jitter_ms = {j} is more than ms = {ms}: answers cannot come early"),
                )
            }
            (Action::Delay, _, _) | (_, None, _) => {}
            (_, Some(_), _) => {
                return broken(
                    FaultField::JitterMs,
                    "jitter_ms applies to delay only".into(),
                )
            }
        }
        Ok(())
    }

    /// When each occurrence starts, offsets from the start of the load.
    pub fn occurrences(&self) -> Vec<Duration> {
        let every = self.every.unwrap_or_default();
        (0..self.count).map(|n| self.at + every * n).collect()
    }

    /// Where the fault comes from, for messages: `scenario fault line 12`, or `chaos`
    /// for the one-fault timeline of `wiberctl chaos` (line 0).
    pub fn origin(&self) -> String {
        if self.line == 0 {
            "chaos".to_string()
        } else {
            format!("scenario fault line {}", self.line)
        }
    }

    /// `kill consumer#1 at 15s for 5s`, for people.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.action.name(), self.target);
        if let Some(to) = self.to {
            s.push_str(&format!(" to {to}"));
        }
        if self.signal() != Signal::Kill {
            s.push_str(&format!(" ({})", self.signal().name()));
        }
        s.push_str(&format!(" at {}", secs(self.at)));
        if let Some(d) = self.for_ {
            s.push_str(&format!(" for {}", secs(d)));
        }
        if let Some(e) = self.every {
            s.push_str(&format!(", every {} x{}", secs(e), self.count));
        }
        s
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

// --- errors --------------------------------------------------------------------------

/// A problem in a scenario file, located and explained.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}\n  expected: {expected}")]
pub struct FormatError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The syntax that was expected there (a line of the format).
    pub expected: String,
}

/// What each part of the file looks like, for error messages.
const SYNTAX_TOP: &str = "name = \"kill-consumer\" (letters, digits, - and _), description = \"...\", then [stack], [load], [[faults]], [random], [thresholds], [expect]";
const SYNTAX_EXPECT: &str = "[expect] fail = [\"lost\"] (delivery invariants: lost, duplicated, unexpected, corrupted, reordered, dead_lettered, stalled, conflicts; or metrics of [thresholds]): the run passes only if each of them fails";
const SYNTAX_STACK: &str =
    "[stack] consumers = 2, partitions = 6, brokers = 3 (1..=5), profile = \"safe\" | \"unsafe\" (acks=1, min.insync.replicas=1, unclean leader election: for showing loss being caught) (omit [stack] to attach to the running stack)";
const SYNTAX_LOAD: &str = "[load] rate = 200 (req/s), duration = \"30s\", conversations = 50, size = 256, retries = 0, connections = 64 (in flight at the start; grows as needed), timeout = \"10s\", reads = { conversation = 200, user = 50, count = 20 } (reads/s of each kind, any of the three), read_fixture = 1000 (read that many conversations of a `wiberctl store fill` fixture instead of the run's own), read_fixture_size = 1000 (messages per fixture conversation), verify_every = \"20s\" (check what the consumers committed past against the store while the load runs; for long runs), poison = 1 (records the store cannot hold, produced straight to the topic halfway through: each must be dead-lettered, counted as dead_lettered); or [[load.stages]] to = 400, over = \"10s\" (instead of duration)";
/// The most poison records a scenario may ask for.
const MAX_POISON: u32 = 100;
/// The shortest `verify_every`.
const MIN_VERIFY_EVERY: Duration = Duration::from_secs(5);
const SYNTAX_STAGE: &str =
    "[[load.stages]] to = 400 (req/s at the end of the stage), over = \"10s\"";
const SYNTAX_FAULT: &str = "[[faults]] at = \"15s\", action = \"kill\" (kill, stop, start, restart, pause, unpause, disconnect, reconnect, scale, loss, partition, bandwidth, delay, timeout, reset, heal, or a chaos shortcut such as kill-consumer), target = \"consumer#1\" | \"consumer\" | \"random:consumer\" | \"kafka:leader(wiber.messages/0)\" | \"kafka:controller\" | \"kafka:coordinator(wiber-consumers)\", optional for = \"5s\", every = \"10s\" + count = 3, signal = \"TERM\", to = 3 (scale), percent = 20 (loss), kbit = 512 (bandwidth), peers = [\"consumer\", \"kafka\"] (loss, partition; omitted: everyone), direction = \"both\" | \"in\" | \"out\" (partition), ms = 200 + jitter_ms = 50 (delay), ms = 5000 (timeout)";
const SYNTAX_RANDOM: &str = "[random] seed = 7 (optional: `scenario run --seed N` wins; neither: one is drawn and reported), start = \"20s\" (no random fault starts before; default 10s), stop = \"-30s\" (before the load's end; or absolute, \"50m\"; default -20s), interval = [\"4s\", \"12s\"] (between two fault starts, drawn uniformly; or \"8s\"), max_concurrent = 2 (random faults active at once; default 1), [random.max_down] kafka = 1, consumer = 1 (at once on one service; default 1 each), then [[random.faults]] entries";
const SYNTAX_RANDOM_FAULT: &str = "[[random.faults]] action = \"kill\" (an action with an undo: kill, stop, pause, disconnect, loss, partition, bandwidth, delay, timeout, reset), targets = [\"consumer#1\", \"consumer#2\", \"kafka:leader(wiber.messages/0)\"] (instances or Kafka roles; one drawn per fault; or target = \"api#1\"), for = [\"2s\", \"8s\"] (drawn uniformly; or \"5s\"), weight = 3 (default 1), and the action's keys as in [[faults]]: signal = \"TERM\", percent = 20, kbit = 512, peers = [\"kafka\"], direction = \"in\", ms = 200, jitter_ms = 50";
const SYNTAX_THRESHOLD: &str = "[thresholds] lost = \"== 0\", \"ack.p99\" = \"< 200ms\", achieved_rate = \">= 0.99 * rate\", \"e2e.p99\" = [\"< 1s\", \"< 1.2 * baseline\"], \"reads.count.error_rate\" = \"== 0\" (OP is == != < <= > >=)";

struct Ctx<'a> {
    file: String,
    src: &'a str,
}

impl Ctx<'_> {
    fn at(&self, offset: usize, message: impl Into<String>, expected: &str) -> FormatError {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        FormatError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
            expected: expected.to_string(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.src[..offset.min(self.src.len())].matches('\n').count() + 1
    }

    /// A parse error: the expected syntax is that of the section the error is in.
    fn toml(&self, e: &toml::de::Error) -> FormatError {
        let offset = e.span().map_or(0, |s| s.start);
        let section = self.src[..offset.min(self.src.len())]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .unwrap_or("");
        let expected = match section {
            s if s.starts_with("[stack]") => SYNTAX_STACK,
            s if s.starts_with("[[load.stages]]") => SYNTAX_STAGE,
            s if s.starts_with("[load]") => SYNTAX_LOAD,
            s if s.starts_with("[[faults]]") => SYNTAX_FAULT,
            s if s.starts_with("[[random.faults]]") => SYNTAX_RANDOM_FAULT,
            s if s.starts_with("[random") => SYNTAX_RANDOM,
            s if s.starts_with("[thresholds]") => SYNTAX_THRESHOLD,
            s if s.starts_with("[expect]") => SYNTAX_EXPECT,
            _ => SYNTAX_TOP,
        };
        self.at(offset, e.message().trim().to_string(), expected)
    }

    fn duration(
        &self,
        v: &Spanned<String>,
        what: &str,
        expected: &str,
    ) -> Result<Duration, FormatError> {
        crate::units::parse_duration(v.get_ref())
            .map_err(|e| self.at(v.span().start, format!("{what}: {e}"), expected))
    }
}

// --- reading and validating ------------------------------------------------------------

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the scenario file {}: {e} (list the suite with `wiberctl scenario list`)",
            path.display()
        )
    })?;
    Ok(parse(path, &src)?)
}

/// Parses and validates scenario text; `path` is only used in messages and the result.
pub fn parse(path: &Path, src: &str) -> Result<Scenario, FormatError> {
    let cx = Ctx {
        file: path.display().to_string(),
        src,
    };
    let raw: RawScenario = toml::from_str(src).map_err(|e| cx.toml(&e))?;
    validate(&cx, raw, path)
}

fn validate(cx: &Ctx<'_>, raw: RawScenario, path: &Path) -> Result<Scenario, FormatError> {
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(cx.at(
            raw.name.span().start,
            format!("invalid scenario name {name:?}: it names the run directory"),
            SYNTAX_TOP,
        ));
    }

    let stack = match raw.stack {
        None => None,
        Some(s) => {
            let span = s.span().start;
            let s = s.into_inner();
            let consumers = s.consumers.map_or(2, |c| c.into_inner());
            if !(1..=32).contains(&consumers) {
                return Err(cx.at(
                    span,
                    format!("consumers = {consumers} is out of range 1..=32"),
                    SYNTAX_STACK,
                ));
            }
            let partitions = s.partitions.map_or(6, |p| p.into_inner());
            if !(1..=256).contains(&partitions) {
                return Err(cx.at(
                    span,
                    format!("partitions = {partitions} is out of range 1..=256"),
                    SYNTAX_STACK,
                ));
            }
            let brokers = s.brokers.as_ref().map_or(1, |b| *b.get_ref());
            let profile = match &s.profile {
                None => crate::runtime::Profile::Safe,
                Some(p) => match p.get_ref().trim() {
                    "safe" => crate::runtime::Profile::Safe,
                    "unsafe" => crate::runtime::Profile::Unsafe,
                    other => {
                        return Err(cx.at(
                            p.span().start,
                            format!("unknown profile {other:?}: expected \"safe\" or \"unsafe\""),
                            SYNTAX_STACK,
                        ))
                    }
                },
            };
            let cluster = crate::runtime::Cluster { brokers, profile };
            if let Err(e) = cluster.validate() {
                let at = s.brokers.as_ref().map_or(span, |b| b.span().start);
                return Err(cx.at(at, format!("brokers = {brokers}: {e}"), SYNTAX_STACK));
            }
            Some(StackSpec {
                consumers,
                partitions,
                cluster,
            })
        }
    };

    let load = load_spec(cx, raw.load)?;
    let total = load.duration();

    let mut faults = Vec::new();
    for f in raw.faults {
        faults.push(fault_spec(cx, f, total)?);
    }
    let random = raw.random.map(|r| random_spec(cx, r, total)).transpose()?;

    let mut thresholds = Vec::new();
    let mut entries: Vec<_> = raw.thresholds.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (metric, value) in entries {
        let line = cx.line_of(metric.span().start);
        // One metric may carry several thresholds (TOML keys are unique): an array.
        let texts: Vec<Option<&str>> = match value.get_ref() {
            toml::Value::Array(items) => items.iter().map(toml::Value::as_str).collect(),
            v => vec![v.as_str()],
        };
        for text in texts {
            let Some(text) = text else {
                return Err(cx.at(
                    value.span().start,
                    format!(
                        "threshold {:?} must be a string such as \"== 0\" or \"< 200ms\" (or an array of them), not {}",
                        metric.get_ref(),
                        value.get_ref()
                    ),
                    SYNTAX_THRESHOLD,
                ));
            };
            let t = threshold::parse(metric.get_ref(), text, line)
                .map_err(|e| cx.at(value.span().start, e, SYNTAX_THRESHOLD))?;
            thresholds.push(t);
        }
    }

    let mut expect_fail = Vec::new();
    if let Some(e) = raw.expect {
        for name in e.into_inner().fail {
            let n = name.get_ref().trim();
            let invariant = VerifyCounts::default()
                .must_be_zero()
                .iter()
                .any(|(k, _)| *k == n);
            if !invariant && !thresholds.iter().any(|t| t.metric == n) {
                return Err(cx.at(
                    name.span().start,
                    format!("expect fail {n:?} is neither a delivery invariant nor a metric of [thresholds]"),
                    SYNTAX_EXPECT,
                ));
            }
            expect_fail.push(n.to_string());
        }
    }

    Ok(Scenario {
        name,
        description: raw.description.trim().to_string(),
        path: path.to_path_buf(),
        source: cx.src.to_string(),
        stack,
        load,
        faults,
        random,
        thresholds,
        expect_fail,
    })
}

fn load_spec(cx: &Ctx<'_>, raw: Spanned<RawLoad>) -> Result<LoadSpec, FormatError> {
    let load_at = raw.span().start;
    let l = raw.into_inner();
    let rate_ok = |r: f64| r.is_finite() && (0.0..=1_000_000.0).contains(&r);
    let segments = match (&l.rate, &l.duration, l.stages) {
        (_, Some(d), Some(_)) => {
            return Err(cx.at(
                d.span().start,
                "duration and [[load.stages]] both given: with stages the duration is the sum of their `over`",
                SYNTAX_LOAD,
            ))
        }
        (Some(rate), Some(d), None) => {
            let r = *rate.get_ref();
            if !rate_ok(r) || r == 0.0 {
                return Err(cx.at(rate.span().start, format!("rate = {r} must be a positive number of requests per second"), SYNTAX_LOAD));
            }
            vec![Segment {
                rate: r,
                duration: cx.duration(d, "duration", SYNTAX_LOAD)?,
            }]
        }
        (_, None, Some(stages)) => {
            if stages.is_empty() {
                return Err(cx.at(load_at, "[[load.stages]] is empty", SYNTAX_STAGE));
            }
            // Each ramp runs at its mean rate: bench paces one constant rate per run.
            let mut from = l.rate.as_ref().map_or(0.0, |r| *r.get_ref());
            let mut out = Vec::new();
            for s in stages {
                let s = s.into_inner();
                let to = *s.to.get_ref();
                if !rate_ok(to) {
                    return Err(cx.at(s.to.span().start, format!("to = {to} must be a rate >= 0 (req/s)"), SYNTAX_STAGE));
                }
                out.push(Segment {
                    rate: (from + to) / 2.0,
                    duration: cx.duration(&s.over, "over", SYNTAX_STAGE)?,
                });
                from = to;
            }
            out
        }
        (None, Some(d), None) => {
            return Err(cx.at(d.span().start, "duration without rate: how many requests per second?", SYNTAX_LOAD))
        }
        (_, None, None) => {
            return Err(cx.at(load_at, "[load] needs rate and duration, or [[load.stages]]", SYNTAX_LOAD))
        }
    };
    let total: Duration = segments.iter().map(|s| s.duration).sum();
    if total.is_zero() || total > MAX_DURATION {
        return Err(cx.at(
            load_at,
            format!("the load lasts {total:?}: it must be longer than 0 and at most 1h"),
            SYNTAX_LOAD,
        ));
    }
    let conversations = l.conversations.map_or(50, |c| c.into_inner());
    if conversations == 0 {
        return Err(cx.at(load_at, "conversations must be at least 1", SYNTAX_LOAD));
    }
    let size = l.size.map_or(256, |s| s.into_inner());
    if size > wiber_model::MAX_CONTENT_CHARS {
        return Err(cx.at(
            load_at,
            format!(
                "size = {size} is over the API's content limit of {} characters",
                wiber_model::MAX_CONTENT_CHARS
            ),
            SYNTAX_LOAD,
        ));
    }
    let connections = l.connections.map_or(64, |c| c.into_inner());
    if connections == 0 {
        return Err(cx.at(load_at, "connections must be at least 1", SYNTAX_LOAD));
    }
    let timeout = match &l.timeout {
        Some(t) => cx.duration(t, "timeout", SYNTAX_LOAD)?,
        None => Duration::from_secs(10),
    };
    let reads = read_spec(cx, l.reads, l.read_fixture, l.read_fixture_size)?;
    let verify_every = match &l.verify_every {
        Some(v) => {
            let d = cx.duration(v, "verify_every", SYNTAX_LOAD)?;
            if d < MIN_VERIFY_EVERY {
                return Err(cx.at(
                    v.span().start,
                    format!(
                        "verify_every = {d:?} is below {MIN_VERIFY_EVERY:?}: each check asks \
                         Kafka and the store, which the run is loading already"
                    ),
                    SYNTAX_LOAD,
                ));
            }
            Some(d)
        }
        None => None,
    };
    let poison = match &l.poison {
        Some(p) if p.get_ref() > &MAX_POISON => {
            return Err(cx.at(
                p.span().start,
                format!(
                    "poison = {} is over {MAX_POISON}: a few records prove isolation",
                    p.get_ref()
                ),
                SYNTAX_LOAD,
            ))
        }
        Some(p) => *p.get_ref(),
        None => 0,
    };
    Ok(LoadSpec {
        segments,
        conversations,
        size,
        retries: l.retries.unwrap_or(0),
        connections,
        timeout,
        reads,
        verify_every,
        poison,
    })
}

/// `reads`, `read_fixture` and `read_fixture_size` of `[load]`.
fn read_spec(
    cx: &Ctx<'_>,
    reads: Option<Spanned<RawReads>>,
    fixture: Option<Spanned<u64>>,
    fixture_size: Option<Spanned<u64>>,
) -> Result<Option<ReadsConfig>, FormatError> {
    let Some(raw) = reads else {
        let stray = fixture
            .as_ref()
            .map(|f| (f.span().start, "read_fixture"))
            .or(fixture_size
                .as_ref()
                .map(|f| (f.span().start, "read_fixture_size")));
        return match stray {
            Some((at, key)) => Err(cx.at(
                at,
                format!(
                    "{key} without reads: say what to read, e.g. reads = {{ conversation = 200 }}"
                ),
                SYNTAX_LOAD,
            )),
            None => Ok(None),
        };
    };
    let at = raw.span().start;
    let r = raw.into_inner();
    let mut rates = std::collections::BTreeMap::new();
    for (kind, rate) in [
        (ReadKind::Conversation, r.conversation),
        (ReadKind::User, r.user),
        (ReadKind::Count, r.count),
    ] {
        if let Some(rate) = rate {
            ReadRates::check_rate(kind, *rate.get_ref())
                .map_err(|e| cx.at(rate.span().start, format!("reads: {e}"), SYNTAX_LOAD))?;
            rates.insert(kind, *rate.get_ref());
        }
    }
    if rates.is_empty() {
        return Err(cx.at(
            at,
            format!(
                "reads = {{}} reads nothing: give a rate to one or more of {}",
                ReadKind::names()
            ),
            SYNTAX_LOAD,
        ));
    }
    let source = match (&fixture, &fixture_size) {
        (Some(n), size) => {
            if *n.get_ref() == 0 {
                return Err(cx.at(
                    n.span().start,
                    "read_fixture = 0 has no conversation to read: give how many conversations `wiberctl store fill` wrote",
                    SYNTAX_LOAD,
                ));
            }
            ReadSource::Fixture {
                conversations: *n.get_ref(),
                messages: size
                    .as_ref()
                    .map_or(DEFAULT_FIXTURE_MESSAGES, |s| *s.get_ref()),
            }
        }
        (None, Some(size)) => {
            return Err(cx.at(
                size.span().start,
                "read_fixture_size without read_fixture: how many fixture conversations are there?",
                SYNTAX_LOAD,
            ))
        }
        (None, None) => ReadSource::Run,
    };
    Ok(Some(ReadsConfig {
        rates,
        source,
        page: PAGE,
    }))
}

impl RawParams<'_> {
    /// Where the key a fault rule is about is written (`None`: not a parameter, or absent).
    fn span_of(&self, field: FaultField) -> Option<usize> {
        match field {
            FaultField::Signal => self.signal.as_ref().map(|v| v.span().start),
            FaultField::To => self.to.map(|v| v.span().start),
            FaultField::Percent => self.percent.as_ref().map(|v| v.span().start),
            FaultField::Kbit => self.kbit.as_ref().map(|v| v.span().start),
            FaultField::Peers => self.peers.as_ref().map(|v| v.span().start),
            FaultField::Direction => self.direction.as_ref().map(|v| v.span().start),
            FaultField::Ms => self.ms.as_ref().map(|v| v.span().start),
            FaultField::JitterMs => self.jitter_ms.as_ref().map(|v| v.span().start),
            FaultField::Every | FaultField::For | FaultField::Target => None,
        }
    }
}

/// A fault's signal and network parameters, as `[[faults]]` and `[[random.faults]]`
/// write them (the rules between them and the action are [`FaultSpec::check`]'s).
fn params(
    cx: &Ctx<'_>,
    p: &RawParams<'_>,
    expected: &str,
) -> Result<(Option<Signal>, NetSpec), FormatError> {
    let err = |offset: usize, msg: String| cx.at(offset, msg, expected);
    let signal = p
        .signal
        .as_ref()
        .map(|s| {
            s.get_ref()
                .parse()
                .map_err(|e: anyhow::Error| err(s.span().start, e.to_string()))
        })
        .transpose()?;
    let net = NetSpec {
        percent: p.percent.as_ref().map(|p| *p.get_ref()),
        kbit: p.kbit.as_ref().map(|k| *k.get_ref()),
        peers: match p.peers {
            None => Vec::new(),
            Some(list) => list
                .get_ref()
                .iter()
                .map(|peer| {
                    Target::parse(peer)
                        .map_err(|e| err(list.span().start, format!("peer {peer:?}: {e:#}")))
                })
                .collect::<Result<_, _>>()?,
        },
        direction: match p.direction {
            None => None,
            Some(d) => Some(match d.get_ref().trim() {
                "both" => Direction::Both,
                "in" => Direction::In,
                "out" => Direction::Out,
                other => {
                    return Err(err(
                        d.span().start,
                        format!("unknown direction {other:?}: expected \"both\", \"in\" (drop what the peers send) or \"out\" (drop what goes to them)"),
                    ))
                }
            }),
        },
        ms: p.ms.as_ref().map(|v| *v.get_ref()),
        jitter_ms: p.jitter_ms.as_ref().map(|v| *v.get_ref()),
    };
    Ok((signal, net))
}

fn fault_spec(
    cx: &Ctx<'_>,
    raw: Spanned<RawFault>,
    total: Duration,
) -> Result<FaultSpec, FormatError> {
    let start = raw.span().start;
    let line = cx.line_of(start);
    let f = raw.into_inner();
    let err = |offset: usize, msg: String| cx.at(offset, msg, SYNTAX_FAULT);

    let (action, shortcut_target) = Action::parse(f.action.get_ref().trim()).ok_or_else(|| {
        err(
            f.action.span().start,
            format!(
                "unknown action {:?}: expected one of {}",
                f.action.get_ref(),
                crate::runtime::fault::action_names()
            ),
        )
    })?;
    let target = match (shortcut_target, &f.target) {
        (Some(_), Some(t)) => {
            return Err(err(
                t.span().start,
                format!(
                    "{} is a shortcut that names its target: drop target = {:?}",
                    f.action.get_ref(),
                    t.get_ref()
                ),
            ))
        }
        (Some(t), None) => t,
        (None, Some(t)) => Target::parse(t.get_ref())
            .map_err(|e| e.to_string())
            .map_err(|e| err(t.span().start, format!("target {:?}: {e}", t.get_ref())))?,
        (None, None) => {
            return Err(err(
                start,
                format!("action {:?} needs a target", f.action.get_ref()),
            ))
        }
    };

    let every = f
        .every
        .as_ref()
        .map(|e| cx.duration(e, "every", SYNTAX_FAULT))
        .transpose()?;
    let at = match (&f.at, every) {
        (Some(a), _) => cx.duration(a, "at", SYNTAX_FAULT)?,
        // A repeated fault without `at` first fires one period in.
        (None, Some(e)) => e,
        (None, None) => {
            return Err(err(
                start,
                "a fault needs at = \"15s\" (or every = \"10s\" with count)".into(),
            ))
        }
    };
    let count = match (&f.count, every) {
        (Some(c), Some(_)) => *c.get_ref(),
        (None, Some(_)) => {
            return Err(err(
                start,
                "every needs count (how many times, 1..=1000)".into(),
            ))
        }
        (Some(c), None) => {
            return Err(err(
                c.span().start,
                "count needs every (the period between occurrences)".into(),
            ))
        }
        (None, None) => 1,
    };
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(err(
            start,
            format!("count = {count} is out of range 1..={MAX_COUNT}"),
        ));
    }

    let for_ = f
        .for_
        .as_ref()
        .map(|d| cx.duration(d, "for", SYNTAX_FAULT))
        .transpose()?;
    let raw = RawParams {
        signal: &f.signal,
        to: f.to.as_ref(),
        percent: &f.percent,
        kbit: &f.kbit,
        peers: &f.peers,
        direction: &f.direction,
        ms: &f.ms,
        jitter_ms: &f.jitter_ms,
    };
    let (signal, net) = params(cx, &raw, SYNTAX_FAULT)?;
    let spec = FaultSpec {
        drawn: false,
        line,
        at,
        every,
        count,
        action,
        target,
        for_,
        signal,
        to: f.to.as_ref().map(|t| *t.get_ref()),
        net,
    };
    spec.check().map_err(|rule| {
        // Point at the key the rule is about, where the entry has it.
        let at = match rule.field {
            FaultField::Every => f.every.as_ref().map(|v| v.span().start),
            FaultField::For => f.for_.as_ref().map(|v| v.span().start),
            _ => raw.span_of(rule.field),
        };
        err(at.unwrap_or(start), rule.message)
    })?;
    let last = *spec.occurrences().last().expect("count >= 1");
    if last >= total {
        return Err(err(
            start,
            format!(
                "this fault fires at {} but the load lasts {}: faults must happen under load",
                secs(last),
                secs(total)
            ),
        ));
    }
    Ok(spec)
}

/// `"8s"` (fixed) or `["4s", "12s"]` (drawn uniformly, to the millisecond): the
/// `interval` and `for` of `[random]`.
fn duration_range(
    cx: &Ctx<'_>,
    v: &Spanned<toml::Value>,
    key: &str,
    example: &str,
    expected: &str,
) -> Result<(Duration, Duration), FormatError> {
    let at = v.span().start;
    let bad = || {
        cx.at(
            at,
            format!(
                "{key} must be a duration such as \"5s\" or a range {example} (drawn uniformly), not {}",
                v.get_ref()
            ),
            expected,
        )
    };
    let one = |x: &toml::Value| -> Result<Duration, FormatError> {
        let text = x.as_str().ok_or_else(bad)?;
        crate::units::parse_duration(text).map_err(|e| cx.at(at, format!("{key}: {e}"), expected))
    };
    let (lo, hi) = match v.get_ref() {
        toml::Value::String(_) => {
            let d = one(v.get_ref())?;
            (d, d)
        }
        toml::Value::Array(items) if items.len() == 2 => (one(&items[0])?, one(&items[1])?),
        _ => return Err(bad()),
    };
    if lo > hi {
        return Err(cx.at(
            at,
            format!(
                "{key} = [\"{}\", \"{}\"]: the first is the shortest, the second the longest",
                secs(lo),
                secs(hi)
            ),
            expected,
        ));
    }
    if lo < Duration::from_millis(1) {
        return Err(cx.at(
            at,
            format!("{key} must be at least 1ms (durations are drawn to the millisecond)"),
            expected,
        ));
    }
    Ok((lo, hi))
}

/// The actions a random fault may take: those with an undo, for messages.
fn undoable_actions() -> String {
    crate::runtime::fault::ACTIONS
        .iter()
        .filter(|a| a.undo().is_some())
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn random_spec(
    cx: &Ctx<'_>,
    raw: Spanned<RawRandom>,
    total: Duration,
) -> Result<RandomSpec, FormatError> {
    let at = raw.span().start;
    let line = cx.line_of(at);
    let r = raw.into_inner();
    let err = |offset: usize, msg: String| cx.at(offset, msg, SYNTAX_RANDOM);

    let start = match &r.start {
        Some(s) => cx.duration(s, "start", SYNTAX_RANDOM)?,
        None => DEFAULT_RANDOM_START,
    };
    let stop = match &r.stop {
        None => total.saturating_sub(DEFAULT_RANDOM_STOP),
        Some(s) => match s.get_ref().trim().strip_prefix('-') {
            Some(before) => {
                let d = crate::units::parse_duration(before)
                    .map_err(|e| err(s.span().start, format!("stop: {e}")))?;
                total.checked_sub(d).ok_or_else(|| {
                    err(
                        s.span().start,
                        format!(
                            "stop = \"-{}\" is before the load starts (it lasts {})",
                            secs(d),
                            secs(total)
                        ),
                    )
                })?
            }
            None => cx.duration(s, "stop", SYNTAX_RANDOM)?,
        },
    };
    if stop >= total {
        return Err(err(
            r.stop.as_ref().map_or(at, |s| s.span().start),
            format!(
                "stop = {} is not under load (the load lasts {}): random faults must start under load; count back from its end, e.g. stop = \"-20s\"",
                secs(stop),
                secs(total)
            ),
        ));
    }
    if start >= stop {
        return Err(err(
            r.start.as_ref().or(r.stop.as_ref()).map_or(at, |s| s.span().start),
            format!(
                "no random fault can start: start is {} and stop is {}{} (the load lasts {}); start earlier, stop later or make the load longer",
                secs(start),
                secs(stop),
                if r.stop.is_none() {
                    " (by default 20s before the load's end)"
                } else {
                    ""
                },
                secs(total)
            ),
        ));
    }
    let Some(iv) = &r.interval else {
        return Err(err(
            at,
            "[random] needs interval = [\"4s\", \"12s\"]: the time between two fault starts, drawn uniformly".into(),
        ));
    };
    let interval = duration_range(cx, iv, "interval", "[\"4s\", \"12s\"]", SYNTAX_RANDOM)?;
    // Every candidate start is at least `interval`'s shortest after the one before.
    let most = (stop - start).as_nanos() / interval.0.as_nanos() + 1;
    if most > u128::from(MAX_RANDOM_FAULTS) {
        return Err(err(
            iv.span().start,
            format!(
                "interval from {} allows up to {most} faults between start and stop, more than the {MAX_RANDOM_FAULTS} a run may draw: make the shortest interval longer",
                secs(interval.0)
            ),
        ));
    }
    let max_concurrent = match &r.max_concurrent {
        None => 1,
        Some(k) if *k.get_ref() == 0 => {
            return Err(err(
                k.span().start,
                "max_concurrent = 0 would draw nothing: at least 1 (leave [random] out for no random faults)".into(),
            ))
        }
        Some(k) => *k.get_ref(),
    };
    let mut max_down = BTreeMap::new();
    for (name, n) in &r.max_down {
        let service = match name.get_ref().trim() {
            "broker" => Service::Kafka,
            other => other
                .parse::<Service>()
                .map_err(|e| err(name.span().start, format!("max_down: {e}")))?,
        };
        if *n.get_ref() == 0 {
            return Err(err(
                n.span().start,
                format!(
                    "max_down {} = 0: at least 1 (to spare {service}, leave its instances out of the targets)",
                    name.get_ref()
                ),
            ));
        }
        max_down.insert(service, *n.get_ref());
    }
    if r.faults.is_empty() {
        return Err(err(
            at,
            "[random] needs [[random.faults]] entries: the faults it draws from (action, targets, for)".into(),
        ));
    }
    let mut menu = Vec::new();
    for f in r.faults {
        menu.push(random_fault(cx, f, stop, total)?);
    }
    Ok(RandomSpec {
        line,
        seed: r.seed.map(Spanned::into_inner),
        start,
        stop,
        interval,
        max_concurrent,
        max_down,
        menu,
    })
}

fn random_fault(
    cx: &Ctx<'_>,
    raw: Spanned<RawRandomFault>,
    stop: Duration,
    total: Duration,
) -> Result<RandomFault, FormatError> {
    let start = raw.span().start;
    let line = cx.line_of(start);
    let f = raw.into_inner();
    let err = |offset: usize, msg: String| cx.at(offset, msg, SYNTAX_RANDOM_FAULT);
    let name = f.action.get_ref().trim();
    let action = match Action::parse(name) {
        None => {
            return Err(err(
                f.action.span().start,
                format!(
                    "unknown action {name:?}: expected one of {}",
                    undoable_actions()
                ),
            ))
        }
        Some((_, Some(_))) => {
            return Err(err(
                f.action.span().start,
                format!("{name} is a shortcut that names its own target: write the action (e.g. action = \"kill\") and the targets to draw from"),
            ))
        }
        Some((a, None)) if a.undo().is_none() => {
            return Err(err(
                f.action.span().start,
                format!(
                    "{a} has no undo, and every random fault is undone after its `for`: use one of {} (or put {a} in [[faults]] at a fixed time)",
                    undoable_actions()
                ),
            ))
        }
        Some((a, None)) => a,
    };

    let written: Vec<(usize, &String)> = match (&f.target, &f.targets) {
        (Some(t), None) => vec![(t.span().start, t.get_ref())],
        (None, Some(list)) => list.get_ref().iter().map(|t| (list.span().start, t)).collect(),
        (Some(t), Some(_)) => {
            return Err(err(
                t.span().start,
                "target and targets both given: list every target in targets = [...]".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                start,
                "a random fault needs targets = [\"consumer#1\", \"consumer#2\"] (one is drawn for each fault)".into(),
            ))
        }
    };
    if written.is_empty() {
        return Err(err(
            f.targets.as_ref().map_or(start, |t| t.span().start),
            "targets = [] leaves nothing to draw: name one or more instances or Kafka roles".into(),
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    for (offset, text) in written {
        let target =
            Target::parse(text).map_err(|e| err(offset, format!("target {text:?}: {e:#}")))?;
        let named = |s: Service| format!("targets = [\"{s}#1\", \"{s}#2\"]");
        match &target {
            Target::Service(s) => {
                return Err(err(
                    offset,
                    format!(
                        "target {text:?} is every {s} instance at once: name the instances to draw from, e.g. {} (one is drawn for each fault)",
                        named(*s)
                    ),
                ))
            }
            Target::Random(s) => {
                return Err(err(
                    offset,
                    format!(
                        "target {text:?} picks its instance when the fault fires, which a seed cannot replay: name the instances, e.g. {} (the draw picks one)",
                        named(*s)
                    ),
                ))
            }
            Target::Instance(_) | Target::Kafka(_) => {}
        }
        if targets.contains(&target) {
            return Err(err(
                offset,
                format!("target {text:?} is listed twice (to draw it more often, give it an entry with a higher weight)"),
            ));
        }
        targets.push(target);
    }

    let weight = match &f.weight {
        None => 1,
        Some(w) if *w.get_ref() == 0 => {
            return Err(err(
                w.span().start,
                "weight = 0 would never be drawn: at least 1 (leave the entry out instead)".into(),
            ))
        }
        Some(w) => *w.get_ref(),
    };
    let Some(for_raw) = &f.for_ else {
        return Err(err(
            start,
            "a random fault needs for = [\"2s\", \"8s\"] (or \"5s\"): every random fault is undone after it".into(),
        ));
    };
    let for_ = duration_range(cx, for_raw, "for", "[\"2s\", \"8s\"]", SYNTAX_RANDOM_FAULT)?;
    if stop + for_.1 > total {
        return Err(err(
            for_raw.span().start,
            format!(
                "a fault drawn at stop ({}) may last {}, past the end of the load ({}): every random fault ends under load, so stop earlier (stop = \"-{}\" in [random]) or shorten for",
                secs(stop),
                secs(for_.1),
                secs(total),
                secs(for_.1)
            ),
        ));
    }

    let raw = RawParams {
        signal: &f.signal,
        to: None,
        percent: &f.percent,
        kbit: &f.kbit,
        peers: &f.peers,
        direction: &f.direction,
        ms: &f.ms,
        jitter_ms: &f.jitter_ms,
    };
    let (signal, net) = params(cx, &raw, SYNTAX_RANDOM_FAULT)?;
    // Each drawn fault is a FaultSpec like a [[faults]] entry's, and keeps the same rules:
    // checked here for every target it may be drawn with.
    for target in &targets {
        let spec = FaultSpec {
            drawn: false,
            line,
            at: Duration::ZERO,
            every: None,
            count: 1,
            action,
            target: target.clone(),
            for_: Some(for_.0),
            signal,
            to: None,
            net: net.clone(),
        };
        spec.check().map_err(|rule| {
            let at = match rule.field {
                FaultField::For => Some(for_raw.span().start),
                FaultField::Target => f
                    .targets
                    .as_ref()
                    .map(|t| t.span().start)
                    .or(f.target.as_ref().map(|t| t.span().start)),
                _ => raw.span_of(rule.field),
            };
            err(at.unwrap_or(start), rule.message)
        })?;
    }
    Ok(RandomFault {
        line,
        action,
        targets,
        weight,
        for_,
        signal,
        net,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "kill-consumer"
description = "A consumer is SIGKILLed under load."
[stack]
consumers = 2
[load]
rate = 200
duration = "30s"
[[faults]]
at = "10s"
action = "kill"
target = "consumer#1"
[[faults]]
at = "20s"
action = "restart"
target = "consumer#1"
[thresholds]
lost = "== 0"
"ack.p99" = "< 200ms"
achieved_rate = ">= 0.99 * rate"
"#;

    fn err(src: &str) -> FormatError {
        parse(Path::new("s.toml"), src).expect_err("should not parse")
    }

    #[test]
    fn the_issue_example_parses() {
        let s = parse(Path::new("s.toml"), GOOD).unwrap();
        assert_eq!(s.name, "kill-consumer");
        assert_eq!(
            s.stack,
            Some(StackSpec {
                consumers: 2,
                partitions: 6,
                cluster: crate::runtime::Cluster::default(),
            })
        );
        assert_eq!(s.load.duration(), Duration::from_secs(30));
        assert_eq!(s.faults.len(), 2);
        assert_eq!(
            s.faults[0].target,
            Target::Instance("consumer#1".parse().unwrap())
        );
        assert_eq!(s.faults[0].line, 9);
        // Thresholds keep file order.
        let metrics: Vec<&str> = s.thresholds.iter().map(|t| t.metric.as_str()).collect();
        assert_eq!(metrics, ["lost", "ack.p99", "achieved_rate"]);
        assert_eq!(s.thresholds[1].line, 19);
    }

    #[test]
    fn expected_failures_name_an_invariant_or_a_threshold() {
        let s = parse(
            Path::new("s.toml"),
            &format!("{GOOD}[expect]\nfail = [\"lost\", \"ack.p99\"]\n"),
        )
        .unwrap();
        assert_eq!(s.expect_fail, vec!["lost", "ack.p99"]);
        let e = err(&format!("{GOOD}[expect]\nfail = [\"lots\"]\n"));
        assert!(e.message.contains("\"lots\""), "{e}");
        assert!(e.expected.starts_with("[expect]"), "{e}");
        let e = err(&GOOD.replace("consumers = 2", "consumers = 2\nprofile = \"risky\""));
        assert!(e.message.contains("risky"), "{e}");
        let s = parse(
            Path::new("s.toml"),
            &GOOD.replace(
                "consumers = 2",
                "consumers = 2\nbrokers = 3\nprofile = \"unsafe\"",
            ),
        )
        .unwrap();
        let cluster = s.stack.unwrap().cluster;
        assert_eq!(
            (cluster.brokers, cluster.profile),
            (3, crate::runtime::Profile::Unsafe)
        );
    }

    #[test]
    fn unknown_fields_give_file_line_and_syntax() {
        let e = err(&GOOD.replace(
            "target = \"consumer#1\"\n[[faults]]",
            "target = \"consumer#1\"\ntargte = 1\n[[faults]]",
        ));
        let text = e.to_string();
        assert!(text.starts_with("s.toml:13:"), "{text}");
        assert!(text.contains("targte"), "{text}");
        assert!(text.contains("expected: [[faults]]"), "{text}");
        let e = err(&GOOD.replace("consumers = 2", "consumers = 2\nbrookers = 3"));
        assert_eq!(e.line, 6, "{e}");
        assert!(e.expected.starts_with("[stack]"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = err(&GOOD.replace("duration = \"30s\"", "duration = \"30x\""));
        assert_eq!((e.line, e.expected.starts_with("[load]")), (8, true), "{e}");
        assert!(e.message.contains("unit"), "{e}");
        let e = err(&GOOD.replace("action = \"kill\"", "action = \"explode\""));
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("explode"), "{e}");
        let e = err(&GOOD.replace("target = \"consumer#1\"", "target = \"zookeeper\""));
        assert_eq!(e.line, 12, "{e}");
        let e = err(&GOOD.replace("\"< 200ms\"", "\"< 200\""));
        assert_eq!(e.line, 19, "{e}");
        assert!(e.message.contains("unit"), "{e}");
        let e = err(&GOOD.replace("lost = \"== 0\"", "lots = \"== 0\""));
        assert_eq!(e.line, 18, "{e}");
        assert!(e.message.contains("lots"), "{e}");
        let e = err(&GOOD.replace("lost = \"== 0\"", "lost = 0"));
        assert!(e.message.contains("string"), "{e}");
        let e = err(&GOOD.replace("at = \"20s\"", "at = \"45s\""));
        assert!(e.message.contains("under load"), "{e}");
        let e = err(&GOOD.replace("name = \"kill-consumer\"", "name = \"kill consumer\""));
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn fault_rules() {
        let base = "name = \"x\"\n[load]\nrate = 10\nduration = \"60s\"\n[[faults]]\n";
        let ok = |f: &str| {
            parse(Path::new("s.toml"), &format!("{base}{f}")).map(|s| s.faults[0].clone())
        };
        let f = ok(
            "action = \"pause-consumer\"\nat = \"5s\"\nfor = \"3s\"\nevery = \"10s\"\ncount = 3",
        )
        .unwrap();
        assert_eq!(f.target, Target::Random(Service::Consumer));
        assert_eq!(f.occurrences(), [5, 15, 25].map(Duration::from_secs));
        assert!(
            ok("action = \"restart\"\ntarget = \"mongo\"\nat = \"5s\"\nfor = \"3s\"")
                .unwrap_err()
                .message
                .contains("no undo")
        );
        assert!(ok("action = \"kill\"\ntarget = \"api\"\nevery = \"10s\"")
            .unwrap_err()
            .message
            .contains("count"));
        assert!(ok("action = \"pause\"\ntarget = \"api\"\nat = \"1s\"\nfor = \"10s\"\nevery = \"5s\"\ncount = 2").unwrap_err().message.contains("overlap"));
        assert!(ok("action = \"scale\"\ntarget = \"consumer\"\nat = \"1s\"")
            .unwrap_err()
            .message
            .contains("to = N"));
        assert_eq!(
            ok("action = \"scale\"\ntarget = \"consumer\"\nat = \"1s\"\nto = 3")
                .unwrap()
                .to,
            Some(3)
        );
        assert!(ok("action = \"kill-api\"\ntarget = \"api\"\nat = \"1s\"")
            .unwrap_err()
            .message
            .contains("shortcut"));
        assert_eq!(
            ok("action = \"kill\"\ntarget = \"api\"\nat = \"1s\"\nsignal = \"TERM\"")
                .unwrap()
                .signal(),
            Signal::Term
        );
        // Even the default signal, named on another action, is refused: it would do nothing.
        assert!(
            ok("action = \"pause\"\ntarget = \"api\"\nat = \"1s\"\nsignal = \"KILL\"")
                .unwrap_err()
                .message
                .contains("kill only")
        );
    }

    #[test]
    fn stages_ramp_at_their_mean_rate() {
        let s = parse(
            Path::new("s.toml"),
            "name = \"ramp\"\n[load]\nrate = 100\n[[load.stages]]\nto = 300\nover = \"10s\"\n[[load.stages]]\nto = 300\nover = \"20s\"\n",
        )
        .unwrap();
        assert_eq!(s.load.segments.len(), 2);
        assert_eq!(s.load.segments[0].rate, 200.0);
        assert_eq!(s.load.duration(), Duration::from_secs(30));
        assert!((s.load.mean_rate() - (200.0 * 10.0 + 300.0 * 20.0) / 30.0).abs() < 1e-9);
        let e = err("name = \"ramp\"\n[load]\nrate = 1\nduration = \"5s\"\n[[load.stages]]\nto = 3\nover = \"1s\"\n");
        assert!(e.message.contains("both"), "{e}");
    }

    #[test]
    fn reads_in_load_parse_and_bad_ones_are_located() {
        let base = "name = \"r\"\n[load]\nrate = 10\nduration = \"5s\"\n";
        let load = |extra: &str| parse(Path::new("s.toml"), &format!("{base}{extra}"));
        let s = load("reads = { conversation = 200, user = 50, count = 20 }\n").unwrap();
        let r = s.load.reads.unwrap();
        assert_eq!(
            r.rates,
            std::collections::BTreeMap::from([
                (ReadKind::Conversation, 200.0),
                (ReadKind::User, 50.0),
                (ReadKind::Count, 20.0)
            ])
        );
        assert_eq!((r.source, r.page), (ReadSource::Run, 50));
        assert!(load("").unwrap().load.reads.is_none());
        let r = load("reads = { user = 5 }\nread_fixture = 100\n")
            .unwrap()
            .load
            .reads
            .unwrap();
        assert_eq!(
            r.source,
            ReadSource::Fixture {
                conversations: 100,
                messages: 1000
            }
        );
        let r = load("reads = { count = 1 }\nread_fixture = 3\nread_fixture_size = 120\n")
            .unwrap()
            .load
            .reads
            .unwrap();
        assert_eq!(
            r.source,
            ReadSource::Fixture {
                conversations: 3,
                messages: 120
            }
        );
        // A misspelt kind: located, with the kinds there are.
        let e = load("reads = { conversations = 200 }\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.message.contains("conversations") && e.message.contains("`conversation`"),
            "{e}"
        );
        assert!(e.expected.contains("reads = { conversation = 200"), "{e}");
        let e = load("reads = { user = 0 }\n").unwrap_err();
        assert!(e.message.contains("leave user out"), "{e}");
        assert!(load("reads = {}\n")
            .unwrap_err()
            .message
            .contains("reads nothing"));
        let e = load("read_fixture = 10\n").unwrap_err();
        assert!(e.message.contains("without reads"), "{e}");
        let e = load("reads = { user = 1 }\nread_fixture_size = 10\n").unwrap_err();
        assert!(e.message.contains("without read_fixture"), "{e}");
        let e = load("reads = { user = 1 }\nread_fixture = 0\n").unwrap_err();
        assert!(e.message.contains("no conversation"), "{e}");
    }

    const RANDOM: &str = r#"
name = "soak"
[load]
rate = 10
duration = "120s"
[[faults]]
at = "5s"
action = "kill"
target = "api#1"
for = "2s"
[random]
seed = 7
start = "20s"
stop = "-30s"
interval = ["4s", "12s"]
max_concurrent = 2
[random.max_down]
broker = 1
[[random.faults]]
action = "kill"
targets = ["consumer#1", "consumer#2"]
weight = 3
for = ["2s", "8s"]
[[random.faults]]
action = "loss"
target = "kafka:leader(wiber.messages/0)"
percent = 20
peers = ["consumer"]
for = "5s"
"#;

    #[test]
    fn random_sits_beside_faults() {
        let s = parse(Path::new("s.toml"), RANDOM).unwrap();
        // [[faults]] stay as written; [random] waits for a seed.
        assert_eq!(s.faults.len(), 1);
        let r = s.random.as_ref().unwrap();
        assert_eq!((r.line, r.seed), (11, Some(7)));
        assert_eq!(
            (r.start, r.stop),
            (Duration::from_secs(20), Duration::from_secs(90))
        );
        assert_eq!(
            r.interval,
            (Duration::from_secs(4), Duration::from_secs(12))
        );
        assert_eq!(r.max_concurrent, 2);
        assert_eq!(
            (r.max_down(Service::Kafka), r.max_down(Service::Mongo)),
            (1, 1)
        );
        assert_eq!(r.menu.len(), 2);
        assert_eq!((r.menu[0].line, r.menu[0].weight), (19, 3));
        assert_eq!(
            r.menu[1].targets[0].to_string(),
            "kafka:leader(wiber.messages/0)"
        );
        assert_eq!(
            r.menu[1].for_,
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        assert_eq!(r.menu[1].net.percent, Some(20.0));
        // Drawn, they join the file's own faults and carry their entry's line.
        let mut s = s;
        let (seed, summary) = crate::scenario::random::expand(&mut s, None).unwrap();
        assert_eq!(seed, 7);
        assert_eq!(s.faults.len(), 1 + summary.faults);
        assert_eq!(s.faults[0].line, 6);
        assert!(s.faults[1..].iter().all(|f| [19, 24].contains(&f.line)));
        // Defaults: start 10s, stop 20s before the end, one at a time.
        let s = parse(
            Path::new("s.toml"),
            &RANDOM
                .replace("start = \"20s\"\n", "")
                .replace("stop = \"-30s\"\n", "")
                .replace("max_concurrent = 2\n", ""),
        )
        .unwrap();
        let r = s.random.unwrap();
        assert_eq!(
            (r.start, r.stop, r.max_concurrent),
            (Duration::from_secs(10), Duration::from_secs(100), 1)
        );
        let r = parse(Path::new("s.toml"), &RANDOM.replace("\"-30s\"", "\"1m\""))
            .unwrap()
            .random
            .unwrap();
        assert_eq!(r.stop, Duration::from_secs(60));
    }

    #[test]
    fn bad_random_entries_name_the_line_and_the_fix() {
        let e = |from: &str, to: &str| err(&RANDOM.replace(from, to));
        // Unknown keys: located, with the syntax of the section.
        let x = e("weight = 3", "wieght = 3");
        assert_eq!(x.line, 22, "{x}");
        assert!(x.expected.starts_with("[[random.faults]]"), "{x}");
        let x = e("max_concurrent = 2", "max_concurrent = 2\nmax_conc = 1");
        assert_eq!(x.line, 17, "{x}");
        assert!(x.expected.starts_with("[random]"), "{x}");
        // An action without an undo, a shortcut.
        let x = e(
            "action = \"kill\"\ntargets",
            "action = \"restart\"\ntargets",
        );
        assert_eq!(x.line, 20, "{x}");
        assert!(
            x.message.contains("no undo") && x.message.contains("pause"),
            "{x}"
        );
        let x = e(
            "action = \"kill\"\ntargets",
            "action = \"kill-consumer\"\ntargets",
        );
        assert!(x.message.contains("shortcut"), "{x}");
        let x = e("action = \"kill\"\ntargets", "action = \"scale\"\ntargets");
        assert!(x.message.contains("no undo"), "{x}");
        // Targets: a whole service or a random: one cannot be replayed by a seed.
        let x = e("\"consumer#1\", \"consumer#2\"", "\"consumer\"");
        assert_eq!(x.line, 21, "{x}");
        assert!(x.message.contains("consumer#1"), "{x}");
        let x = e("\"consumer#1\", \"consumer#2\"", "\"random:consumer\"");
        assert!(x.message.contains("seed"), "{x}");
        let x = e(
            "\"consumer#1\", \"consumer#2\"",
            "\"consumer#1\", \"consumer#1\"",
        );
        assert!(x.message.contains("twice"), "{x}");
        let x = e("\"consumer#1\", \"consumer#2\"", "");
        assert!(x.message.contains("nothing to draw"), "{x}");
        let x = e("targets = [\"consumer#1\", \"consumer#2\"]\n", "");
        assert!(x.message.contains("needs targets"), "{x}");
        // for: required, a range in order, within the load after stop.
        let x = e("for = [\"2s\", \"8s\"]\n", "");
        assert_eq!(x.line, 19, "{x}");
        assert!(x.message.contains("for = [\"2s\", \"8s\"]"), "{x}");
        let x = e("[\"2s\", \"8s\"]", "[\"8s\", \"2s\"]");
        assert_eq!(x.line, 23, "{x}");
        let x = e("[\"2s\", \"8s\"]", "[\"2s\", \"40s\"]");
        assert!(x.message.contains("stop earlier"), "{x}");
        let x = e("[\"2s\", \"8s\"]", "2");
        assert!(x.message.contains("range"), "{x}");
        // The rules of [[faults]] hold for each entry, at the key they are about.
        let x = e("percent = 20\n", "");
        assert_eq!(x.line, 24, "{x}");
        assert!(x.message.contains("percent"), "{x}");
        let x = e("weight = 3", "weight = 3\nsignal = \"HUP\"");
        assert_eq!(x.line, 23, "{x}");
        let x = e("percent = 20", "percent = 20\nms = 5");
        assert_eq!(x.line, 28, "{x}");
        assert!(x.message.contains("ms applies"), "{x}");
        let x = e("weight = 3", "weight = 0");
        assert!(x.message.contains("weight"), "{x}");
        // [random] itself.
        let x = e("interval = [\"4s\", \"12s\"]\n", "");
        assert_eq!(x.line, 11, "{x}");
        assert!(x.message.contains("interval = [\"4s\", \"12s\"]"), "{x}");
        let x = e("[\"4s\", \"12s\"]", "[\"0.01ms\", \"12s\"]");
        assert!(x.message.contains("1ms"), "{x}");
        let x = err(&RANDOM
            .replace("[\"4s\", \"12s\"]", "[\"1ms\", \"12s\"]")
            .replace("\"120s\"", "\"1h\""));
        assert!(x.message.contains("100000"), "{x}");
        let x = e("stop = \"-30s\"", "stop = \"130s\"");
        assert_eq!(x.line, 14, "{x}");
        assert!(x.message.contains("under load"), "{x}");
        let x = e("stop = \"-30s\"", "stop = \"-200s\"");
        assert!(x.message.contains("before the load starts"), "{x}");
        let x = e("start = \"20s\"", "start = \"95s\"");
        assert_eq!(x.line, 13, "{x}");
        assert!(x.message.contains("no random fault can start"), "{x}");
        let x = e("broker = 1", "zookeeper = 1");
        assert_eq!(x.line, 18, "{x}");
        let x = e("broker = 1", "broker = 0");
        assert!(x.message.contains("at least 1"), "{x}");
        let x = e("max_concurrent = 2", "max_concurrent = 0");
        assert!(x.message.contains("at least 1"), "{x}");
        let x = err(&format!(
            "{}\n",
            &RANDOM[..RANDOM.find("[[random.faults]]").unwrap()]
        ));
        assert!(x.message.contains("[[random.faults]]"), "{x}");
    }
}
