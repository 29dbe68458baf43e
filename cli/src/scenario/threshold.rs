//! Thresholds: `metric = "OP EXPR"`, evaluated after verify.
//!
//! `OP` is one of `== != < <= > >=`; `EXPR` is a number (with a unit for latencies:
//! `200ms`, `2s`), `F * rate` (the scenario's mean target rate; rates only) or
//! `F * baseline` (the same metric in the `--baseline` report). Metric names are checked
//! when the file is read, so a typo fails `scenario validate`, not a 10-minute run; a
//! metric a run did not measure fails its threshold instead of passing on nothing.
//! Phase metrics (`before.`, `during.`, `after.`) are described in [`super::phases`].
//!
//! Reads have metrics per kind of read: `reads.<kind>.<name>` (kind `conversation`,
//! `user` or `count`; see [`READ_COUNTS`], [`READ_RATES`], [`READ_RATIOS`] and the
//! latency [`STATS`]), also per phase (`during.reads.count.error_rate`). There, `F *
//! rate` is that kind's own read rate. A run that did not read a kind has none of its
//! metrics, so a threshold on them fails as not measured.
//!
//! Recovery over many faults: `recovery.<figure>.<stat>` (figure `first_ack`,
//! `lag_zero`, `lag_steady`; stat `p50`, `p90`, `max`) is the spread over every fault of
//! the run (the `recovery_stats` module); a fault that never recovered ranks above every
//! time, so a statistic that lands on one is not measured and fails.
//!
//! Resources per service (the `resource_trend` module; services `kafka`, `postgres`,
//! `mongo`, `api`, `consumer` and `generator`, wiberctl itself): `rss_growth.<service>`
//! in percent, written with `%` (`< 20%`; a bare number is refused, as a latency without
//! its unit is), `rss_max.<service>` in bytes, written with a unit (`512MiB`, `2GiB`,
//! `500MB`), and `cpu_mean.<service>` in cores (`< 1.5`). `%` is also accepted by the
//! ratio metrics (`reads.count.error_rate < 1%` is `< 0.01`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use wiber_model::report::ReadKind;

use super::phases::{Phase, PHASE_COUNTS, PHASE_RATES, PHASE_READ_COUNTS};

/// What kind of number a metric is; decides which units its thresholds take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A count of messages or requests.
    Count,
    /// Requests per second.
    Rate,
    /// Milliseconds.
    Latency,
    /// A share, 0 to 1 (`reads.count.error_rate`); thresholds may write it in percent.
    Ratio,
    /// Percent (`rss_growth.api`); thresholds must write the `%`.
    Percent,
    /// Bytes (`rss_max.api`); thresholds must write a unit (`MiB`, `GB`, ...).
    Bytes,
    /// CPU cores, 1.0 = one core busy (`cpu_mean.api`).
    Cores,
    /// Seconds (`consumer.stalled_max`): a bare number is seconds, a duration
    /// (`500ms`, `2m`) is converted.
    Seconds,
}

/// Counts from verify and from the load summary.
pub const COUNTS: [&str; 17] = [
    "lost",
    "dead_lettered",
    "stalled",
    "conflicts",
    "duplicated",
    "unexpected",
    "corrupted",
    "reordered",
    "recovered",
    "indeterminate",
    "stored",
    "sent",
    "ok",
    "failed",
    "unknown",
    "not_started",
    "retried",
];
/// Rates from the load summary: goodput (ok answers per second) and any answer.
pub const RATES: [&str; 2] = ["achieved_rate", "answered_rate"];
/// Latency families (`ack.p99`, ...) and their statistics. `ack` and `service` are of
/// ok answers only; `error_ack` is due → answer of the answers that were not ok.
pub const LATENCIES: [&str; 4] = ["ack", "error_ack", "service", "e2e"];
pub const STATS: [&str; 6] = ["mean", "p50", "p90", "p99", "p999", "max"];
/// Per-fault recovery figures (the worst fault), milliseconds. `lag_zero`: until the
/// consumer lag is 0; `lag_steady`: until it is back to its level before the first fault;
/// `partition_gap`: the longest time one partition went without an acknowledged write
/// while a fault was on (a leader election as the clients see it).
pub const RECOVERY: [&str; 4] = [
    "recovery.first_ack",
    "recovery.lag_zero",
    "recovery.lag_steady",
    "recovery.partition_gap",
];
/// Spreads over every fault, `recovery.<figure>.<stat>` (ms): see
/// the figures and the statistics below (computed by the `recovery_stats` module).
pub const RECOVERY_FIGURES: [&str; 3] = ["first_ack", "lag_zero", "lag_steady"];
pub const RECOVERY_STATS: [&str; 3] = ["p50", "p90", "max"];
/// Resource metrics, `<family>.<service>` (computed by the `resource_trend` module),
/// services in the bench report's order, the generator last.
pub const RESOURCE_FAMILIES: [&str; 3] = ["rss_growth", "rss_max", "cpu_mean"];
pub const RESOURCE_SERVICES: [&str; 6] = [
    "kafka",
    "postgres",
    "mongo",
    "api",
    "consumer",
    wiber_model::report::GENERATOR,
];
/// Fewest RSS samples the second and the last window each need for a growth.
pub const MIN_WINDOW_SAMPLES: usize = 5;
/// Counts of one kind of read (`reads.conversation.ok`): reads started, ok (2xx), not
/// ok (a non-2xx answer or none), due but never started.
pub const READ_COUNTS: [&str; 4] = ["sent", "ok", "errors", "not_started"];
/// Rates of one kind of read: ok reads per second, any answer per second, and the rate
/// asked for (what `F * rate` means on a read rate).
pub const READ_RATES: [&str; 3] = ["ok_rate", "answered_rate", "target_rate"];
/// Shares of one kind of read: errors / (ok + errors).
pub const READ_RATIOS: [&str; 1] = ["error_rate"];
/// What verify-as-it-goes found while the load ran (`[load] verify_every`; see
/// `verify::incremental`): not measured in runs that did not check as they went.
pub const INCREMENTAL: [&str; 3] = [
    "incremental.lost",
    "incremental.corrupted",
    "incremental.checked",
];
/// The consumer group as the lag samples saw it (the `stall` module), seconds:
/// `consumer.stalled_max`, the longest a partition had lag while its committed offset
/// did not move.
pub const CONSUMER: [&str; 1] = ["consumer.stalled_max"];
/// Error kinds bench records (besides `http_<status>`).
pub const ERROR_KINDS: [&str; 4] = ["timeout", "connect", "transport", "not_started"];

/// The kind of a metric name, `None` when there is no such metric.
pub fn kind(metric: &str) -> Option<Kind> {
    if let Some((_, rest)) = Phase::split(metric) {
        return phase_kind(rest);
    }
    if let Some((_, stat)) = read_split(metric) {
        return read_stat_kind(stat, &READ_COUNTS);
    }
    if COUNTS.contains(&metric) {
        return Some(Kind::Count);
    }
    if RATES.contains(&metric) {
        return Some(Kind::Rate);
    }
    if INCREMENTAL.contains(&metric) {
        return Some(Kind::Count);
    }
    if CONSUMER.contains(&metric) {
        return Some(Kind::Seconds);
    }
    // Requests by error kind of their last attempt, as bench counts them. Only kinds
    // bench can record: a misspelt kind would otherwise read as 0 and never fail.
    if let Some(k) = metric.strip_prefix("errors.") {
        let http = k
            .strip_prefix("http_")
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| (100..600).contains(&s) && k.len() == 8);
        return (http || ERROR_KINDS.contains(&k)).then_some(Kind::Count);
    }
    if RECOVERY.contains(&metric) {
        return Some(Kind::Latency);
    }
    if let Some(rest) = metric.strip_prefix("recovery.") {
        let (figure, stat) = rest.split_once('.')?;
        return (RECOVERY_FIGURES.contains(&figure) && RECOVERY_STATS.contains(&stat))
            .then_some(Kind::Latency);
    }
    if let Some((family, service)) = metric.split_once('.') {
        if RESOURCE_FAMILIES.contains(&family) {
            return RESOURCE_SERVICES
                .contains(&service)
                .then_some(match family {
                    "rss_growth" => Kind::Percent,
                    "rss_max" => Kind::Bytes,
                    _ => Kind::Cores,
                });
        }
    }
    latency_kind(metric)
}

fn latency_kind(metric: &str) -> Option<Kind> {
    let (family, stat) = metric.split_once('.')?;
    (LATENCIES.contains(&family) && STATS.contains(&stat)).then_some(Kind::Latency)
}

/// `reads.conversation.p99` → (Conversation, `p99`); `None` when it is not a read
/// metric of a known kind.
pub fn read_split(metric: &str) -> Option<(ReadKind, &str)> {
    let rest = metric.strip_prefix("reads.")?;
    let (kind, stat) = rest.split_once('.')?;
    Some((ReadKind::parse(kind)?, stat))
}

/// The kind of read metric `reads.<kind>.<stat>`, with `counts` the counts it may have.
fn read_stat_kind(stat: &str, counts: &[&str]) -> Option<Kind> {
    if counts.contains(&stat) {
        Some(Kind::Count)
    } else if READ_RATES.contains(&stat) {
        Some(Kind::Rate)
    } else if READ_RATIOS.contains(&stat) {
        Some(Kind::Ratio)
    } else if STATS.contains(&stat) {
        Some(Kind::Latency)
    } else {
        None
    }
}

/// The kind of read a metric is about (`reads.user.p99`, `during.reads.user.ok`).
pub fn read_kind_of(metric: &str) -> Option<ReadKind> {
    let m = Phase::split(metric).map_or(metric, |(_, rest)| rest);
    read_split(m).map(|(k, _)| k)
}

/// The kind of a phase metric (`during.<rest>`).
fn phase_kind(rest: &str) -> Option<Kind> {
    if let Some((_, stat)) = read_split(rest) {
        // A phase has no start of its own for reads: no not_started, no target_rate.
        return match stat {
            "target_rate" | "not_started" => None,
            s => read_stat_kind(s, &PHASE_READ_COUNTS),
        };
    }
    if PHASE_COUNTS.contains(&rest) {
        return Some(Kind::Count);
    }
    if PHASE_RATES.contains(&rest) {
        return Some(Kind::Rate);
    }
    let (family, stat) = rest.split_once('.')?;
    (family == "ack" && STATS.contains(&stat)).then_some(Kind::Latency)
}

fn known_metrics() -> String {
    format!(
        "{}, {}, {}, {}, errors.<kind> ({}, http_<status>), {{{}}}.{{{}}}, {}, \
         recovery.{{{}}}.{{{}}}, {{{}}}.<service> (services {}), \
         reads.<read kind>.{{{},{},{},<stat>}} (read kinds {}), and per phase \
         {{before,during,after}}.{{{},{},ack.<stat>,reads.<read kind>.{{{},ok_rate,answered_rate,error_rate,<stat>}}}}",
        COUNTS.join(", "),
        RATES.join(", "),
        INCREMENTAL.join(", "),
        CONSUMER.join(", "),
        ERROR_KINDS.join(", "),
        LATENCIES.join(","),
        STATS.join(","),
        RECOVERY.join(", "),
        RECOVERY_FIGURES.join(","),
        RECOVERY_STATS.join(","),
        RESOURCE_FAMILIES.join(","),
        RESOURCE_SERVICES.join(", "),
        READ_COUNTS.join(","),
        READ_RATES.join(","),
        READ_RATIOS.join(","),
        ReadKind::names(),
        PHASE_COUNTS.join(","),
        PHASE_RATES.join(","),
        PHASE_READ_COUNTS.join(","),
    )
}

/// Why a read metric is missing: the load did not read that kind.
fn not_read(k: ReadKind) -> String {
    format!("the load made no {k} reads (add reads = {{ {k} = 50 }} to [load])")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

/// The right-hand side, already in the metric's unit (ms for latencies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rhs {
    Value(f64),
    /// `F * rate`.
    Rate(f64),
    /// `F * baseline`.
    Baseline(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: String,
    /// As written, e.g. `< 200ms`.
    pub text: String,
    pub op: Op,
    pub rhs: Rhs,
    /// Line in the scenario file.
    pub line: usize,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.metric, self.text)
    }
}

/// Parses one threshold; the error is a sentence (the caller adds file:line).
pub fn parse(metric: &str, text: &str, line: usize) -> Result<Threshold, String> {
    let kind = kind(metric).ok_or_else(|| {
        format!(
            "unknown metric {metric:?} in [thresholds]: known metrics are {}",
            known_metrics()
        )
    })?;
    let t = text.trim();
    let (op, rest) = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(s, op)| t.strip_prefix(s).map(|r| (*op, r.trim())))
    .ok_or_else(|| {
        format!("threshold {metric} = {text:?} must start with ==, !=, <, <=, > or >=")
    })?;
    let rhs = parse_rhs(rest, kind).map_err(|e| format!("threshold {metric} = {text:?}: {e}"))?;
    Ok(Threshold {
        metric: metric.to_string(),
        text: t.to_string(),
        op,
        rhs,
        line,
    })
}

fn parse_rhs(s: &str, kind: Kind) -> Result<Rhs, String> {
    let (factor, term) = match s.split_once('*') {
        Some((f, term)) => {
            let f: f64 = f
                .trim()
                .parse()
                .map_err(|_| format!("{:?} is not a number", f.trim()))?;
            (f, term.trim())
        }
        None => (1.0, s),
    };
    match term {
        "baseline" => return Ok(Rhs::Baseline(factor)),
        "rate" if kind == Kind::Rate => return Ok(Rhs::Rate(factor)),
        "rate" => {
            return Err(
                "`rate` compares with rates only (achieved_rate, answered_rate, <phase>.ok_rate, <phase>.answered_rate, reads.<kind>.ok_rate, where it is that kind's read rate)"
                    .into(),
            )
        }
        _ if s.contains('*') => {
            return Err(format!(
                "after `*` expected `rate` or `baseline`, found {term:?}"
            ))
        }
        _ => {}
    }
    if term.is_empty() {
        return Err("a value is missing after the operator".into());
    }
    match kind {
        Kind::Latency => {
            if term.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!("a latency needs a unit: {term}ms or {term}s"));
            }
            let d = crate::units::parse_duration(term)?;
            Ok(Rhs::Value(d.as_secs_f64() * 1000.0))
        }
        Kind::Percent => match term.strip_suffix('%') {
            Some(n) => number(n).map(Rhs::Value),
            None => Err(format!(
                "a percentage needs its %: {term}% (the metric is in percent)"
            )),
        },
        Kind::Ratio => match term.strip_suffix('%') {
            Some(n) => number(n).map(|v| Rhs::Value(v / 100.0)),
            None => number(term).map(Rhs::Value),
        },
        Kind::Bytes => parse_bytes(term).map(Rhs::Value),
        Kind::Seconds if term.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            number(term).map(Rhs::Value)
        }
        Kind::Seconds => crate::units::parse_duration(term).map(|d| Rhs::Value(d.as_secs_f64())),
        Kind::Count | Kind::Rate | Kind::Cores => number(term).map(Rhs::Value),
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

/// Byte units: decimal (`KB` = 1000) and binary (`KiB` = 1024), any case.
const BYTE_UNITS: [(&str, f64); 7] = [
    ("b", 1.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
    ("kib", 1024.0),
    ("mib", 1_048_576.0),
    ("gib", 1_073_741_824.0),
];

/// `512MiB`, `1.5 GiB`, `500MB`: bytes. A bare number is refused: `512` is too easily
/// meant as MiB.
fn parse_bytes(s: &str) -> Result<f64, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.' && c != '-')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    if unit.is_empty() {
        return Err(format!("a size needs a unit: {s}MiB, {s}GiB or {s}MB"));
    }
    let factor = BYTE_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("unknown size unit {unit:?}: use B, KB, MB, GB, KiB, MiB or GiB"))?;
    Ok(number(num)? * factor)
}

/// Named numbers of one run (counts, rates, latencies in ms).
pub type Metrics = BTreeMap<String, f64>;

/// How a threshold fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Relative to a baseline that was not given.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub metric: String,
    pub threshold: String,
    pub line: usize,
    pub actual: Option<f64>,
    /// The right-hand side, computed.
    pub limit: Option<f64>,
    pub verdict: Verdict,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
}

/// The metric that holds a read kind's target rate (what `F * rate` means for it).
pub fn read_target_metric(kind: ReadKind) -> String {
    format!("reads.{kind}.target_rate")
}

/// Evaluates `t` against `m`; `rate` is the scenario's mean target rate (for a read
/// metric, `rate` is that kind's read rate, from `m`).
pub fn evaluate(t: &Threshold, m: &Metrics, rate: f64, baseline: Option<&Metrics>) -> Evaluation {
    let read = read_kind_of(&t.metric);
    let mut e = Evaluation {
        metric: t.metric.clone(),
        threshold: t.text.clone(),
        line: t.line,
        // An error kind that did not occur is absent from bench's map: 0, not unmeasured.
        actual: m
            .get(&t.metric)
            .copied()
            .or_else(|| t.metric.starts_with("errors.").then_some(0.0)),
        limit: None,
        verdict: Verdict::Fail,
        detail: None,
    };
    let limit = match (t.rhs, read) {
        (Rhs::Rate(f), Some(k)) => match m.get(&read_target_metric(k)) {
            Some(r) => f * r,
            None => {
                e.detail = Some(not_read(k));
                return e;
            }
        },
        (rhs, _) => match rhs {
            Rhs::Value(v) => v,
            Rhs::Rate(f) => f * rate,
            Rhs::Baseline(f) => match baseline {
                None => {
                    e.verdict = Verdict::Skipped;
                    e.detail = Some("relative to a baseline: run with --baseline REPORT".into());
                    return e;
                }
                Some(b) => match b.get(&t.metric) {
                    Some(v) => f * v,
                    None => {
                        e.detail = Some(format!("the baseline has no {}", t.metric));
                        return e;
                    }
                },
            },
        },
    };
    e.limit = Some(limit);
    let Some(actual) = e.actual else {
        let why = match read {
            Some(k) if !m.contains_key(&read_target_metric(k)) => format!(": {}", not_read(k)),
            Some(k) => format!(" (no {k} read in it succeeded, or the phase had none)"),
            None if t.metric.starts_with("recovery.") => {
                " (no fault, or the figure never recovered)".to_string()
            }
            None if t.metric.starts_with("rss_growth.") => format!(
                " (its CPU/RSS was not sampled, or too few samples: the growth needs {} in \
                 the second and in the last sixth of the run)",
                MIN_WINDOW_SAMPLES
            ),
            None if CONSUMER.contains(&t.metric.as_str()) => {
                " (Kafka never answered a read of the group's lag)".to_string()
            }
            None if matches!(kind(&t.metric), Some(Kind::Bytes | Kind::Cores)) => {
                " (its CPU/RSS was not sampled)".to_string()
            }
            None => String::new(),
        };
        e.detail = Some(format!("{} was not measured in this run{why}", t.metric));
        return e;
    };
    if t.op.holds(actual, limit) {
        e.verdict = Verdict::Pass;
    } else {
        e.detail = Some(format!(
            "{} = {} does not satisfy {} {}",
            t.metric,
            fmt_metric(&t.metric, actual),
            t.op.symbol(),
            fmt_metric(&t.metric, limit)
        ));
    }
    e
}

/// A metric's value with its unit (`224.25 ms`, `200 req/s`, `3`), for reports.
pub fn fmt_metric(metric: &str, v: f64) -> String {
    match kind(metric) {
        Some(Kind::Latency) => format!("{} ms", fmt_num(v)),
        Some(Kind::Rate) if read_kind_of(metric).is_some() => format!("{} reads/s", fmt_num(v)),
        Some(Kind::Rate) => format!("{} req/s", fmt_num(v)),
        Some(Kind::Ratio) => format!("{} ({:.2}%)", fmt_num(v), v * 100.0),
        Some(Kind::Percent) => format!("{}%", fmt_num(v)),
        Some(Kind::Bytes) => format!("{:.1} MiB", v / 1_048_576.0),
        Some(Kind::Cores) => format!("{} cores", fmt_num(v)),
        Some(Kind::Seconds) => format!("{} s", fmt_num(v)),
        _ => fmt_num(v),
    }
}

pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(metric: &str, text: &str) -> Threshold {
        parse(metric, text, 1).unwrap()
    }

    fn m(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn consumer_stalled_max_is_in_seconds_bare_or_with_a_unit() {
        assert_eq!(kind("consumer.stalled_max"), Some(Kind::Seconds));
        assert_eq!(t("consumer.stalled_max", "< 30").rhs, Rhs::Value(30.0));
        assert_eq!(t("consumer.stalled_max", "< 30s").rhs, Rhs::Value(30.0));
        assert_eq!(t("consumer.stalled_max", "<= 1500ms").rhs, Rhs::Value(1.5));
        assert_eq!(t("consumer.stalled_max", "< 2m").rhs, Rhs::Value(120.0));
        assert!(parse("consumer.stalled_max", "< soon", 1).is_err());
        assert!(parse("consumer.stalled", "< 30", 1)
            .unwrap_err()
            .contains("consumer.stalled_max"));
        let th = t("consumer.stalled_max", "< 30");
        let e = evaluate(&th, &m(&[("consumer.stalled_max", 40.0)]), 100.0, None);
        assert_eq!(e.verdict, Verdict::Fail);
        assert_eq!(
            e.detail.as_deref(),
            Some("consumer.stalled_max = 40 s does not satisfy < 30 s")
        );
        let e = evaluate(&th, &m(&[("consumer.stalled_max", 0.0)]), 100.0, None);
        assert_eq!(e.verdict, Verdict::Pass);
        let e = evaluate(&th, &m(&[]), 100.0, None);
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("never answered"));
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(t("lost", "== 0").rhs, Rhs::Value(0.0));
        assert_eq!(t("ack.p99", "< 200ms").rhs, Rhs::Value(200.0));
        assert_eq!(t("ack.p99", "<2s").rhs, Rhs::Value(2000.0));
        assert_eq!(t("achieved_rate", ">= 0.99 * rate").rhs, Rhs::Rate(0.99));
        assert_eq!(t("ack.p99", "< 1.2 * baseline").rhs, Rhs::Baseline(1.2));
        assert_eq!(t("ok", ">= baseline").rhs, Rhs::Baseline(1.0));
        assert_eq!(t("recovery.lag_zero", "<= 30s").op, Op::Le);
        assert_eq!(t("errors.timeout", "== 0").rhs, Rhs::Value(0.0));
        assert!(parse("errors.", "== 0", 1).is_err());
        assert_eq!(t("errors.http_503", "== 0").rhs, Rhs::Value(0.0));
        // A misspelt error kind would read as 0 forever: refused, with the valid names.
        let e = parse("errors.timeuot", "== 0", 1).unwrap_err();
        assert!(
            e.contains("known metrics") && e.contains("not_started"),
            "{e}"
        );
        assert!(parse("errors.http_5031", "== 0", 1).is_err());
        assert_eq!(t("during.ok_rate", ">= 0.9 * rate").rhs, Rhs::Rate(0.9));
        assert_eq!(t("after.ack.p99", "< 200ms").rhs, Rhs::Value(200.0));
        assert_eq!(t("during.errors", "< 10").rhs, Rhs::Value(10.0));
        assert!(parse("during.lost", "== 0", 1).is_err());
        assert!(parse("while.ok_rate", "> 1", 1).is_err());
        assert!(parse("during.ok", ">= 0.5 * rate", 1).is_err());
        assert_eq!(t("recovery.lag_steady", "< 10s").rhs, Rhs::Value(10_000.0));
        assert!(parse("ack.p98", "< 1ms", 1)
            .unwrap_err()
            .contains("known metrics"));
        assert!(parse("ack.p99", "< 200", 1).unwrap_err().contains("unit"));
        assert!(parse("lost", "0", 1).unwrap_err().contains("start with"));
        assert!(parse("lost", "== 0.5 * rate", 1)
            .unwrap_err()
            .contains("achieved_rate"));
        assert!(parse("lost", "== x * baseline", 1)
            .unwrap_err()
            .contains("number"));
        assert!(parse("lost", "== ", 1).unwrap_err().contains("missing"));
    }

    /// Each kind of threshold can fail (and pass).
    #[test]
    fn every_kind_can_fail() {
        let run = m(&[
            ("lost", 1.0),
            ("duplicated", 0.0),
            ("ack.p99", 250.0),
            ("achieved_rate", 190.0),
            ("recovery.first_ack", 3000.0),
        ]);
        let base = m(&[("ack.p99", 200.0)]);
        let eval = |metric: &str, text: &str| evaluate(&t(metric, text), &run, 200.0, Some(&base));
        // Exact counts (invariants).
        assert_eq!(eval("lost", "== 0").verdict, Verdict::Fail);
        assert_eq!(eval("duplicated", "== 0").verdict, Verdict::Pass);
        assert_eq!(eval("duplicated", "> 0").verdict, Verdict::Fail);
        assert_eq!(eval("lost", "!= 1").verdict, Verdict::Fail);
        // Absolute latency.
        assert_eq!(eval("ack.p99", "< 200ms").verdict, Verdict::Fail);
        assert_eq!(eval("ack.p99", "<= 250ms").verdict, Verdict::Pass);
        // Relative to the target rate.
        let e = eval("achieved_rate", ">= 0.99 * rate");
        assert_eq!((e.verdict, e.limit), (Verdict::Fail, Some(198.0)));
        assert!(e.detail.unwrap().contains("190"));
        assert_eq!(
            eval("achieved_rate", ">= 0.9 * rate").verdict,
            Verdict::Pass
        );
        // Relative to the baseline.
        assert_eq!(eval("ack.p99", "< 1.2 * baseline").verdict, Verdict::Fail);
        assert_eq!(eval("ack.p99", "< 1.3 * baseline").verdict, Verdict::Pass);
        // Error kinds: absent means none happened.
        assert_eq!(eval("errors.timeout", "== 0").verdict, Verdict::Pass);
        assert_eq!(eval("errors.timeout", "> 0").verdict, Verdict::Fail);
        // Recovery figures.
        assert_eq!(eval("recovery.first_ack", "< 2s").verdict, Verdict::Fail);
        // Not measured is a failure, not a pass.
        let e = eval("recovery.lag_zero", "< 10s");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("not measured"));
        // A baseline metric the baseline lacks fails; no baseline at all skips.
        assert_eq!(eval("achieved_rate", ">= baseline").verdict, Verdict::Fail);
        let e = evaluate(&t("ack.p99", "< 1.2 * baseline"), &run, 200.0, None);
        assert_eq!(e.verdict, Verdict::Skipped);
    }

    #[test]
    fn recovery_spreads_and_resource_metrics_parse_with_their_units() {
        // Spreads over every fault: latencies.
        assert_eq!(
            t("recovery.lag_steady.p90", "< 30s").rhs,
            Rhs::Value(30_000.0)
        );
        assert_eq!(kind("recovery.first_ack.p50"), Some(Kind::Latency));
        assert_eq!(kind("recovery.lag_zero.max"), Some(Kind::Latency));
        assert!(parse("recovery.lag_steady.p90", "< 30", 1)
            .unwrap_err()
            .contains("unit"));
        for bad in [
            "recovery.lag_steady.p99",
            "recovery.partition_gap.p90",
            "recovery.lag",
            "recovery.first_ack.",
        ] {
            let e = parse(bad, "< 1s", 1).unwrap_err();
            assert!(
                e.contains("known metrics")
                    && e.contains("recovery.{first_ack,lag_zero,lag_steady}.{p50,p90,max}"),
                "{bad}: {e}"
            );
        }
        // RSS growth in percent, written with its %.
        assert_eq!(t("rss_growth.api", "< 20%").rhs, Rhs::Value(20.0));
        assert_eq!(t("rss_growth.generator", "<= 12.5 %").rhs, Rhs::Value(12.5));
        assert_eq!(
            t("rss_growth.kafka", "< 1.5 * baseline").rhs,
            Rhs::Baseline(1.5)
        );
        assert!(parse("rss_growth.api", "< 20", 1)
            .unwrap_err()
            .contains("20%"));
        assert!(parse("rss_growth.api", "< x%", 1)
            .unwrap_err()
            .contains("not a number"));
        // Peak RSS in bytes, with a unit.
        assert_eq!(
            t("rss_max.consumer", "< 512MiB").rhs,
            Rhs::Value(512.0 * 1_048_576.0)
        );
        assert_eq!(
            t("rss_max.mongo", "< 1.5 GiB").rhs,
            Rhs::Value(1.5 * 1_073_741_824.0)
        );
        assert_eq!(t("rss_max.api", "< 500MB").rhs, Rhs::Value(5e8));
        assert!(parse("rss_max.api", "< 512", 1)
            .unwrap_err()
            .contains("needs a unit"));
        assert!(parse("rss_max.api", "< 512MiBs", 1)
            .unwrap_err()
            .contains("unknown size unit"));
        // Mean CPU in cores.
        assert_eq!(t("cpu_mean.postgres", "< 1.5").rhs, Rhs::Value(1.5));
        assert_eq!(kind("cpu_mean.generator"), Some(Kind::Cores));
        // Only the stack's services and the generator.
        for bad in [
            "rss_growth.apii",
            "rss_max.wiberctl",
            "cpu_mean",
            "cpu_max.api",
        ] {
            let e = parse(bad, "< 1", 1).unwrap_err();
            assert!(
                e.contains("known metrics")
                    && e.contains("{rss_growth,rss_max,cpu_mean}.<service> (services kafka, postgres, mongo, api, consumer, generator)"),
                "{bad}: {e}"
            );
        }
        // Ratios take a % too.
        assert_eq!(t("reads.count.error_rate", "< 1%").rhs, Rhs::Value(0.01));
        assert_eq!(t("reads.count.error_rate", "< 0.01").rhs, Rhs::Value(0.01));
        // Reported with their units.
        assert_eq!(fmt_metric("rss_growth.api", 34.5), "34.50%");
        assert_eq!(fmt_metric("rss_max.api", 104_857_600.0), "100.0 MiB");
        assert_eq!(fmt_metric("cpu_mean.api", 0.25), "0.25 cores");
    }

    /// Growth, peak and CPU thresholds fail on figures over their limit, and a service
    /// not sampled fails as not measured, saying why.
    #[test]
    fn resource_thresholds_can_fail() {
        let run = m(&[
            ("rss_growth.consumer", 35.0),
            ("rss_growth.api", 0.5),
            ("rss_max.api", 300.0 * 1_048_576.0),
            ("cpu_mean.kafka", 1.2),
            ("recovery.lag_steady.p90", 12_000.0),
        ]);
        let eval = |metric: &str, text: &str| evaluate(&t(metric, text), &run, 100.0, None);
        assert_eq!(eval("rss_growth.api", "< 20%").verdict, Verdict::Pass);
        let e = eval("rss_growth.consumer", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
        assert_eq!(
            e.detail.unwrap(),
            "rss_growth.consumer = 35% does not satisfy < 20%"
        );
        assert_eq!(eval("rss_max.api", "< 256MiB").verdict, Verdict::Fail);
        assert_eq!(eval("rss_max.api", "< 1GiB").verdict, Verdict::Pass);
        assert_eq!(eval("cpu_mean.kafka", "< 1").verdict, Verdict::Fail);
        assert_eq!(
            eval("recovery.lag_steady.p90", "< 10s").verdict,
            Verdict::Fail
        );
        assert_eq!(
            eval("recovery.lag_steady.p90", "< 15s").verdict,
            Verdict::Pass
        );
        let e = eval("rss_growth.mongo", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("too few samples"));
        let e = eval("rss_max.postgres", "< 1GiB");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("not sampled"));
        let e = eval("recovery.first_ack.max", "< 10s");
        assert!(e.detail.unwrap().contains("never recovered"));
    }

    #[test]
    fn read_metrics_are_named_by_kind_and_checked() {
        assert_eq!(
            t("reads.conversation.p99", "< 150ms").rhs,
            Rhs::Value(150.0)
        );
        assert_eq!(kind("reads.count.error_rate"), Some(Kind::Ratio));
        assert_eq!(t("reads.count.error_rate", "== 0").rhs, Rhs::Value(0.0));
        assert_eq!(kind("reads.user.ok"), Some(Kind::Count));
        assert_eq!(kind("reads.user.not_started"), Some(Kind::Count));
        assert_eq!(
            t("reads.user.ok_rate", ">= 0.95 * rate").rhs,
            Rhs::Rate(0.95)
        );
        assert_eq!(kind("during.reads.conversation.p99"), Some(Kind::Latency));
        assert_eq!(kind("after.reads.count.error_rate"), Some(Kind::Ratio));
        assert_eq!(kind("during.reads.user.ok_rate"), Some(Kind::Rate));
        assert_eq!(read_kind_of("during.reads.user.ok"), Some(ReadKind::User));
        // Misspelt kinds and statistics are refused with the names there are.
        for bad in [
            "reads.conversations.p99",
            "reads.conversation.p98",
            "reads.conversation",
            "reads.p99",
            "reads.count.error_ratio",
            "during.reads.count.not_started",
            "during.reads.user.target_rate",
        ] {
            let e = parse(bad, "< 1s", 1).unwrap_err();
            assert!(
                e.contains("known metrics") && e.contains("read kinds conversation, user, count"),
                "{bad}: {e}"
            );
        }
        assert!(parse("reads.count.error_rate", "< 10ms", 1)
            .unwrap_err()
            .contains("not a number"));
        assert!(parse("reads.count.p99", "< 10", 1)
            .unwrap_err()
            .contains("unit"));
        assert!(parse("reads.count.ok", ">= 0.9 * rate", 1).is_err());
    }

    /// Read thresholds can fail, `F * rate` is the kind's own read rate, and a kind
    /// the run did not read fails as not measured, never passes.
    #[test]
    fn read_thresholds_can_fail_and_unread_kinds_are_not_measured() {
        let run = m(&[
            ("reads.conversation.p99", 120.0),
            ("reads.conversation.ok_rate", 190.0),
            ("reads.conversation.target_rate", 200.0),
            ("reads.conversation.error_rate", 0.0),
            ("reads.count.target_rate", 20.0),
            ("reads.count.error_rate", 0.25),
            ("during.reads.count.error_rate", 1.0),
        ]);
        let eval = |metric: &str, text: &str| evaluate(&t(metric, text), &run, 1000.0, None);
        assert_eq!(
            eval("reads.conversation.p99", "< 150ms").verdict,
            Verdict::Pass
        );
        assert_eq!(
            eval("reads.conversation.p99", "< 0ms").verdict,
            Verdict::Fail
        );
        // 0.95 of the conversation rate (200), not of the write rate (1000).
        let e = eval("reads.conversation.ok_rate", ">= 0.95 * rate");
        assert_eq!((e.verdict, e.limit), (Verdict::Pass, Some(190.0)));
        assert_eq!(
            eval("reads.conversation.ok_rate", ">= 0.96 * rate").verdict,
            Verdict::Fail
        );
        let e = eval("reads.count.error_rate", "== 0");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("0.25 (25.00%)"));
        assert_eq!(
            eval("during.reads.count.error_rate", "< 1").verdict,
            Verdict::Fail
        );
        // No user reads: every user threshold fails, saying how to get them.
        for (metric, text) in [
            ("reads.user.p99", "< 1s"),
            ("reads.user.error_rate", "== 0"),
            ("reads.user.ok_rate", ">= 0.9 * rate"),
            ("during.reads.user.ok", ">= 0"),
        ] {
            let e = eval(metric, text);
            assert_eq!(e.verdict, Verdict::Fail, "{metric}");
            let d = e.detail.unwrap();
            assert!(
                d.contains("no user reads") && d.contains("reads = { user"),
                "{d}"
            );
        }
        // Read, but none succeeded: no latency, and it says so.
        let e = eval("reads.count.p99", "< 1s");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("no count read in it succeeded"));
    }
}
