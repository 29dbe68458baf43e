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
    #[serde(default)]
    thresholds: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    expect: Option<Spanned<RawExpect>>,
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
    pub faults: Vec<FaultSpec>,
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

/// One `[[faults]]` entry.
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
const SYNTAX_TOP: &str = "name = \"kill-consumer\" (letters, digits, - and _), description = \"...\", then [stack], [load], [[faults]], [thresholds], [expect]";
const SYNTAX_EXPECT: &str = "[expect] fail = [\"lost\"] (delivery invariants: lost, duplicated, unexpected, corrupted, reordered; or metrics of [thresholds]): the run passes only if each of them fails";
const SYNTAX_STACK: &str =
    "[stack] consumers = 2, partitions = 6, brokers = 3 (1..=5), profile = \"safe\" | \"unsafe\" (acks=1, min.insync.replicas=1, unclean leader election: for showing loss being caught) (omit [stack] to attach to the running stack)";
const SYNTAX_LOAD: &str = "[load] rate = 200 (req/s), duration = \"30s\", conversations = 50, size = 256, retries = 0, connections = 64 (in flight at the start; grows as needed), timeout = \"10s\", reads = { conversation = 200, user = 50, count = 20 } (reads/s of each kind, any of the three), read_fixture = 1000 (read that many conversations of a `wiberctl store fill` fixture instead of the run's own), read_fixture_size = 1000 (messages per fixture conversation); or [[load.stages]] to = 400, over = \"10s\" (instead of duration)";
const SYNTAX_STAGE: &str =
    "[[load.stages]] to = 400 (req/s at the end of the stage), over = \"10s\"";
const SYNTAX_FAULT: &str = "[[faults]] at = \"15s\", action = \"kill\" (kill, stop, start, restart, pause, unpause, disconnect, reconnect, scale, loss, partition, bandwidth, delay, timeout, reset, heal, or a chaos shortcut such as kill-consumer), target = \"consumer#1\" | \"consumer\" | \"random:consumer\" | \"kafka:leader(wiber.messages/0)\" | \"kafka:controller\" | \"kafka:coordinator(wiber-consumers)\", optional for = \"5s\", every = \"10s\" + count = 3, signal = \"TERM\", to = 3 (scale), percent = 20 (loss), kbit = 512 (bandwidth), peers = [\"consumer\", \"kafka\"] (loss, partition; omitted: everyone), direction = \"both\" | \"in\" | \"out\" (partition), ms = 200 + jitter_ms = 50 (delay), ms = 5000 (timeout)";
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
    Ok(LoadSpec {
        segments,
        conversations,
        size,
        retries: l.retries.unwrap_or(0),
        connections,
        timeout,
        reads,
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
    let signal = f
        .signal
        .as_ref()
        .map(|s| {
            s.get_ref()
                .parse()
                .map_err(|e: anyhow::Error| err(s.span().start, e.to_string()))
        })
        .transpose()?;
    let spec = FaultSpec {
        line,
        at,
        every,
        count,
        action,
        target,
        for_,
        signal,
        to: f.to.as_ref().map(|t| *t.get_ref()),
        net: NetSpec {
            percent: f.percent.as_ref().map(|p| *p.get_ref()),
            kbit: f.kbit.as_ref().map(|k| *k.get_ref()),
            peers: match &f.peers {
                None => Vec::new(),
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|p| {
                        Target::parse(p).map_err(|e| {
                            err(list.span().start, format!("peer {p:?}: {e:#}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            },
            direction: match &f.direction {
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
            ms: f.ms.as_ref().map(|v| *v.get_ref()),
            jitter_ms: f.jitter_ms.as_ref().map(|v| *v.get_ref()),
        },
    };
    spec.check().map_err(|rule| {
        // Point at the key the rule is about, where the entry has it.
        let at = match rule.field {
            FaultField::Every => f.every.as_ref().map(|v| v.span().start),
            FaultField::For => f.for_.as_ref().map(|v| v.span().start),
            FaultField::Signal => f.signal.as_ref().map(|v| v.span().start),
            FaultField::To => f.to.as_ref().map(|v| v.span().start),
            FaultField::Target => None,
            FaultField::Percent => f.percent.as_ref().map(|v| v.span().start),
            FaultField::Kbit => f.kbit.as_ref().map(|v| v.span().start),
            FaultField::Peers => f.peers.as_ref().map(|v| v.span().start),
            FaultField::Direction => f.direction.as_ref().map(|v| v.span().start),
            FaultField::Ms => f.ms.as_ref().map(|v| v.span().start),
            FaultField::JitterMs => f.jitter_ms.as_ref().map(|v| v.span().start),
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
}
