//! The run report (`report.json`), schema version [`SCHEMA`]. Its JSON Schema is checked
//! in at `cli/schema/report.v1.schema.json` and a test validates real output against it:
//! change both together, and bump the version when a change is not backwards compatible.
//!
//! All latencies are milliseconds (f64); all instants are ms since the Unix epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Identifies the schema (and its version) of a `report.json`.
pub const SCHEMA: &str = "wiber.report.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub run: RunInfo,
    pub config: BenchConfigRecord,
    pub summary: Summary,
    /// One point per second of the measured window.
    pub timeline: Vec<Second>,
    /// Latency distribution curves, for charts.
    pub distribution: Distribution,
    /// Fault events (from the events file) during the run.
    pub events: Vec<EventMark>,
    /// `--find-max` steps and result.
    pub find_max: Option<FindMax>,
    /// Added by `wiberctl verify`.
    pub verify: Option<VerifyReport>,
    /// Where the cores and the memory went: CPU and RSS per service (and of the
    /// generator itself) over the run. Absent when the stack could not be sampled.
    #[serde(default)]
    pub resources: Option<Resources>,
}

/// The [`ServiceResources`] entry of the load generator (wiberctl itself), which is not
/// a service of the stack.
pub const GENERATOR: &str = "generator";

/// CPU and memory per service during the measured window, sampled every `every_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub every_s: f64,
    /// `local` (from /proc) or `docker` (the engine's stats API).
    pub source: String,
    /// One entry per service of the stack (`api`, `consumer`, `kafka`, `mongo`), then
    /// `generator` (wiberctl itself, so a saturated generator shows).
    pub services: Vec<ServiceResources>,
    /// Sum of the mean cores of every entry.
    pub total_mean_cores: f64,
    /// What could not be sampled, if anything.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One service's CPU (in cores: 1.0 = one core busy) and resident memory, all its
/// instances together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceResources {
    pub service: String,
    /// The most instances seen running at once.
    pub instances: u32,
    pub mean_cores: Option<f64>,
    pub peak_cores: Option<f64>,
    /// Share of `total_mean_cores`, in percent.
    pub cpu_share_pct: Option<f64>,
    pub mean_rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// One point per sample, `t` in seconds from the start of the measured window.
    pub points: Vec<ResourcePoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourcePoint {
    pub t: f64,
    pub cores: Option<f64>,
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Short id embedded in every message id and user name of the run.
    pub id: String,
    pub name: String,
    /// Wall-clock start of the schedule (due time of request 0), ms.
    pub started_ms: i64,
    /// Start of the measured window (after warm-up), ms.
    pub measured_from_ms: i64,
    pub ended_ms: i64,
    /// The run directory.
    pub dir: String,
    pub wiberctl_version: String,
}

/// How the run was driven (a record of the flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfigRecord {
    /// `open` (constant arrival rate), `closed` (`--max`) or `find_max`.
    pub mode: String,
    /// Requests per second (open loop; the last step for find-max; null for closed loop).
    pub target_rate: Option<f64>,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub conversations: u32,
    pub size: usize,
    pub connections: usize,
    pub retries: u32,
    pub timeout_ms: u64,
    pub api_url: String,
    /// The reads mixed into the writes; absent when the run only wrote (and in reports
    /// written before reads existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<ReadsConfig>,
}

/// A kind of read `bench` mixes into its writes: one of the API's read routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadKind {
    /// `GET /messages/{a}/{b}?limit=&skip=`: one page of a conversation.
    Conversation,
    /// `GET /messages/user/{u}?limit=`: a user's recent messages.
    User,
    /// `GET /messages/count`, `?user1=u` or `?user1=a&user2=b`: a count.
    Count,
}

impl ReadKind {
    pub const ALL: [ReadKind; 3] = [ReadKind::Conversation, ReadKind::User, ReadKind::Count];

    /// The name in flags, scenario files, threshold names and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReadKind::Conversation => "conversation",
            ReadKind::User => "user",
            ReadKind::Count => "count",
        }
    }

    pub fn parse(name: &str) -> Option<ReadKind> {
        ReadKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `conversation, user, count`, for messages.
    pub fn names() -> String {
        ReadKind::ALL.map(ReadKind::name).join(", ")
    }
}

impl std::fmt::Display for ReadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which conversations and users the reads pick from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum ReadSource {
    /// The run's own conversations and users; a conversation page is picked among the
    /// pages of what that conversation had acknowledged when the read was due.
    Run,
    /// A fixture written by `wiberctl store fill`: conversations `0..conversations`
    /// between `fixture::users(k)`, each assumed to hold `messages` messages.
    Fixture { conversations: u64, messages: u64 },
}

/// How a run reads: a rate per kind, where from, and the page size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadsConfig {
    /// Reads per second of each kind (open loop, like the writes); only kinds read.
    pub rates: BTreeMap<ReadKind, f64>,
    pub source: ReadSource,
    /// `limit` of conversation and user pages.
    pub page: u32,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub target_rate: Option<f64>,
    /// Goodput: `ok` answers of the measured window per second of it. A stack that
    /// answers everything with 503 achieves 0, however fast it answers.
    pub achieved_rate: f64,
    /// Requests of the measured window that completed with any outcome (an answer, or a
    /// timeout / connection error giving up) per second of it. Compare with
    /// `achieved_rate`: the gap is the rate of `failed` and `unknown` outcomes.
    #[serde(default)]
    pub answered_rate: f64,
    /// Requests of the measured window that started (first attempt).
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Requests due in the window that the generator could not start in time.
    pub not_started: u64,
    /// Extra attempts made by `--retries`.
    pub retried: u64,
    /// Errors by kind (`timeout`, `connect`, `http_503`, `not_started`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Due time → HTTP answer of the `ok` answers only (coordinated omission corrected).
    /// A fast refusal is not an acknowledgement, so it never improves this figure.
    pub ack_ms: Percentiles,
    /// Due time → answer (or giving up) of the other outcomes, `failed` and `unknown`.
    #[serde(default)]
    pub error_ms: Percentiles,
    /// Actual send → HTTP answer of the `ok` answers only (what a closed-loop tool would
    /// report). Only `ok`, like `ack_ms`: an SLO on service latency must not be met by
    /// fast 503s, and the two must describe the same requests to be compared.
    pub service_ms: Percentiles,
    /// Due time → actual send: how late the generator started requests (all outcomes:
    /// this is about the generator, not the answers).
    pub start_delay_ms: Percentiles,
    /// Due time → `storedAt` in MongoDB; null when it could not be measured.
    pub e2e_ms: Option<Percentiles>,
    /// `ok` requests whose document was not found when e2e was measured.
    pub e2e_missing: u64,
    /// Warnings for people, e.g. that the generator could not keep up.
    pub warnings: Vec<String>,
    /// Most requests the generator had in flight at once.
    #[serde(default)]
    pub peak_in_flight: u64,
    /// The most it could have in flight: `--max-connections` in open loop (the pool grows
    /// from `--connections` to it), `--connections` in closed loop (a fixed pool). 0 in
    /// reports written before it was recorded.
    #[serde(default)]
    pub in_flight_cap: u64,
    /// Requests started late and the generator was the limit (its in-flight cap, its own
    /// CPU, or its collector), so the numbers describe the generator rather than the
    /// stack; `warnings` says which.
    #[serde(default)]
    pub generator_bound: bool,
    /// Each kind of read the run made (absent: it only wrote).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<ReadKind, ReadSummary>,
}

/// What one kind of read saw in the measured window. Latency is of successful (2xx)
/// reads only, from the time each read was due (open loop, like the writes), so a stall
/// shows as latency rather than as fewer reads; the other answers are counted as errors
/// by kind, never folded into the latency.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReadSummary {
    /// Reads per second asked for.
    pub target_rate: f64,
    /// Reads of the window that started.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Reads that were not ok: a non-2xx answer, or none (timeout, connection error).
    pub errors: u64,
    /// Reads due in the window that the generator could not start in time.
    pub not_started: u64,
    /// `errors` by kind (`http_503`, `timeout`, `connect`, `transport`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// ok reads per second of the window.
    pub achieved_rate: f64,
    /// Reads that completed with any outcome, per second of the window.
    pub answered_rate: f64,
    /// Due time → answer of the ok reads.
    pub latency_ms: Percentiles,
    /// Due time → answer (or giving up) of the reads that were not ok.
    pub error_ms: Percentiles,
}

impl ReadSummary {
    /// `errors` as a share (0..=1) of the reads that completed; `None` when none did.
    pub fn error_rate(&self) -> Option<f64> {
        let done = self.ok + self.errors;
        (done > 0).then(|| self.errors as f64 / done as f64)
    }
}

/// One second of the measured window (second 0 starts at `measured_from_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: u32,
    /// Requests answered during this second, any outcome.
    pub answered: u64,
    pub ok: u64,
    pub errors: u64,
    /// Ack latency percentiles of the `ok` requests *due* in this second (so a stall
    /// shows where it began); null when none of them was acknowledged.
    pub ack_p50: Option<f64>,
    pub ack_p99: Option<f64>,
    pub e2e_p50: Option<f64>,
    pub e2e_p99: Option<f64>,
    /// Reads (all kinds) answered during this second: ok, and not ok.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reads_ok: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reads_errors: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `[percentile (0..100), ms]` points of the cumulative latency distribution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Distribution {
    /// Ack latency of the `ok` answers.
    pub ack: Vec<[f64; 2]>,
    pub e2e: Vec<[f64; 2]>,
    /// Latency of the ok reads of each kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<ReadKind, Vec<[f64; 2]>>,
}

/// A fault event placed on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMark {
    pub time_ms: i64,
    pub action: String,
    pub target: String,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindMax {
    /// The SLO as given, e.g. `ack.p99<50ms`.
    pub slo: String,
    pub steps: Vec<FindMaxStep>,
    /// Highest target rate whose step met the SLO (null: none did).
    pub best_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindMaxStep {
    pub target_rate: f64,
    /// Goodput of the step: `ok` answers per second (as [`Summary::achieved_rate`]).
    pub achieved_rate: f64,
    /// Any outcome per second (as [`Summary::answered_rate`]).
    #[serde(default)]
    pub answered_rate: f64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub not_started: u64,
    /// Of the `ok` answers.
    pub ack_ms: Percentiles,
    pub pass: bool,
    /// Why it failed, empty when it passed.
    pub reasons: Vec<String>,
}

/// The verdict of a check that can also fail to be made: `verify`, a scenario run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything held.
    Pass,
    /// An invariant or threshold failed (exit 1).
    Fail,
    /// It could not be checked: the stack did not drain, a run could not be done (exit 2).
    Error,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `wiberctl verify` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `pass`, `fail`, or `error` (could not check).
    pub verdict: Verdict,
    pub checked_ms: i64,
    /// Whether the consumer group's lag reached 0 before the check.
    pub drained: bool,
    pub lag_remaining: Option<i64>,
    pub counts: VerifyCounts,
    /// Up to 20 examples per kind (`lost`, `duplicated`, ...).
    pub examples: BTreeMap<String, Vec<Example>>,
    /// Why it could not check, when `verdict` is `error`.
    pub error: Option<String>,
    /// How it checked what it checked, e.g. where the order of conversations was read.
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyCounts {
    pub ledger_ok: u64,
    pub ledger_failed: u64,
    pub ledger_unknown: u64,
    /// Documents of this run found in MongoDB.
    pub stored: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub corrupted: u64,
    pub reordered: u64,
    /// `unknown` outcomes that were stored (informational).
    pub recovered: u64,
    /// `unknown` outcomes that were not stored (informational); with `recovered` it
    /// makes up `ledger_unknown`.
    #[serde(default)]
    pub indeterminate: u64,
    /// `ok` in the ledger, not stored, found in the dead-letter topic (the store refused
    /// it, or it did not decode). Must be 0 unless a scenario expects it.
    #[serde(default)]
    pub dead_lettered: u64,
    /// `ok` in the ledger, not stored, and its partition's committed offset still at or
    /// below its offset: behind a partition that is not advancing (not lost yet, but not
    /// stored either). Must be 0.
    #[serde(default)]
    pub stalled: u64,
    /// Found in the dead-letter topic as a conflict: its messageId is stored with other
    /// content (an id reused by a client). Must be 0.
    #[serde(default)]
    pub conflicts: u64,
}

impl VerifyCounts {
    /// Adds another part's counts (of a bucket of the run, of another load segment).
    pub fn add(&mut self, b: &VerifyCounts) {
        self.ledger_ok += b.ledger_ok;
        self.ledger_failed += b.ledger_failed;
        self.ledger_unknown += b.ledger_unknown;
        self.stored += b.stored;
        self.lost += b.lost;
        self.duplicated += b.duplicated;
        self.unexpected += b.unexpected;
        self.corrupted += b.corrupted;
        self.reordered += b.reordered;
        self.recovered += b.recovered;
        self.indeterminate += b.indeterminate;
        self.dead_lettered += b.dead_lettered;
        self.stalled += b.stalled;
        self.conflicts += b.conflicts;
    }

    /// The counts that must be zero for the run to pass. Reordered is among them: bench
    /// sends each conversation sequentially, so the store must keep that order.
    pub fn must_be_zero(&self) -> [(&'static str, u64); 8] {
        [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("unexpected", self.unexpected),
            ("corrupted", self.corrupted),
            ("reordered", self.reordered),
            ("dead_lettered", self.dead_lettered),
            ("stalled", self.stalled),
            ("conflicts", self.conflicts),
        ]
    }

    pub fn pass(&self) -> bool {
        self.must_be_zero().iter().all(|(_, n)| *n == 0)
    }

    /// `n` as a fraction (0..=1) of the `unknown` outcomes, for `recovered` and
    /// `indeterminate`; `None` when there were no `unknown` outcomes.
    pub fn share_of_unknown(&self, n: u64) -> Option<f64> {
        (self.ledger_unknown > 0).then(|| n as f64 / self.ledger_unknown as f64)
    }
}

/// One offending document or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub message_id: String,
    /// `_id` of the stored document, when there is one and it differs from `message_id`.
    pub doc_id: Option<String>,
    pub conversation: Option<u32>,
    pub seq: Option<u64>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_outcomes_split_into_recovered_and_indeterminate() {
        let c = VerifyCounts {
            ledger_unknown: 8,
            recovered: 6,
            indeterminate: 2,
            ..Default::default()
        };
        assert_eq!(c.share_of_unknown(c.recovered), Some(0.75));
        assert_eq!(c.share_of_unknown(c.indeterminate), Some(0.25));
        assert_eq!(VerifyCounts::default().share_of_unknown(0), None);
        // Counts written before `indeterminate` existed still read.
        let mut v = serde_json::to_value(c).unwrap();
        v.as_object_mut().unwrap().remove("indeterminate");
        let old: VerifyCounts = serde_json::from_value(v).unwrap();
        assert_eq!(old.indeterminate, 0);
    }

    #[test]
    fn read_kinds_are_named_once_and_key_json_maps_by_name() {
        for k in ReadKind::ALL {
            assert_eq!(ReadKind::parse(k.name()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert_eq!(ReadKind::parse("users"), None);
        let s = ReadSummary {
            ok: 3,
            errors: 1,
            ..Default::default()
        };
        assert_eq!(s.error_rate(), Some(0.25));
        assert_eq!(ReadSummary::default().error_rate(), None);
        let m = BTreeMap::from([(ReadKind::Count, s)]);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["count"]["errors"], 1);
        let back: BTreeMap<ReadKind, ReadSummary> = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        let src = serde_json::to_value(ReadSource::Fixture {
            conversations: 10,
            messages: 1000,
        })
        .unwrap();
        assert_eq!(src["from"], "fixture");
        assert_eq!(
            serde_json::to_value(ReadSource::Run).unwrap()["from"],
            "run"
        );
    }
}
