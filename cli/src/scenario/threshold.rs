//! Thresholds: `metric = "OP EXPR"`, evaluated after verify.
//!
//! `OP` is one of `== != < <= > >=`; `EXPR` is a number (with a unit for latencies:
//! `200ms`, `2s`), `F * rate` (the scenario's mean target rate; rates only) or
//! `F * baseline` (the same metric in the `--baseline` report). Metric names are checked
//! when the file is read, so a typo fails `scenario validate`, not a 10-minute run; a
//! metric a run did not measure fails its threshold instead of passing on nothing.
//! Phase metrics (`before.`, `during.`, `after.`) are described in [`super::phases`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::phases::{Phase, PHASE_COUNTS, PHASE_RATES};

/// What kind of number a metric is; decides which units its thresholds take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A count of messages or requests.
    Count,
    /// Requests per second.
    Rate,
    /// Milliseconds.
    Latency,
}

/// Counts from verify and from the load summary.
pub const COUNTS: [&str; 14] = [
    "lost",
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
/// consumer lag is 0; `lag_steady`: until it is back to its level before the first fault.
pub const RECOVERY: [&str; 3] = [
    "recovery.first_ack",
    "recovery.lag_zero",
    "recovery.lag_steady",
];
/// Error kinds bench records (besides `http_<status>`).
pub const ERROR_KINDS: [&str; 4] = ["timeout", "connect", "transport", "not_started"];

/// The kind of a metric name, `None` when there is no such metric.
pub fn kind(metric: &str) -> Option<Kind> {
    if let Some((_, rest)) = Phase::split(metric) {
        return phase_kind(rest);
    }
    if COUNTS.contains(&metric) {
        return Some(Kind::Count);
    }
    if RATES.contains(&metric) {
        return Some(Kind::Rate);
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
    latency_kind(metric)
}

fn latency_kind(metric: &str) -> Option<Kind> {
    let (family, stat) = metric.split_once('.')?;
    (LATENCIES.contains(&family) && STATS.contains(&stat)).then_some(Kind::Latency)
}

/// The kind of a phase metric (`during.<rest>`).
fn phase_kind(rest: &str) -> Option<Kind> {
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
        "{}, {}, errors.<kind> ({}, http_<status>), {{{}}}.{{{}}}, {}, and per phase \
         {{before,during,after}}.{{{},{},ack.<stat>}}",
        COUNTS.join(", "),
        RATES.join(", "),
        ERROR_KINDS.join(", "),
        LATENCIES.join(","),
        STATS.join(","),
        RECOVERY.join(", "),
        PHASE_COUNTS.join(","),
        PHASE_RATES.join(","),
    )
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
                "`rate` compares with rates only (achieved_rate, answered_rate, <phase>.ok_rate, <phase>.answered_rate)"
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
        Kind::Count | Kind::Rate => term
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Rhs::Value)
            .ok_or_else(|| format!("{term:?} is not a number")),
    }
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

/// Evaluates `t` against `m`; `rate` is the scenario's mean target rate.
pub fn evaluate(t: &Threshold, m: &Metrics, rate: f64, baseline: Option<&Metrics>) -> Evaluation {
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
    let limit = match t.rhs {
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
    };
    e.limit = Some(limit);
    let Some(actual) = e.actual else {
        e.detail = Some(format!(
            "{} was not measured in this run{}",
            t.metric,
            if t.metric.starts_with("recovery.") {
                " (no fault, or the figure never recovered)"
            } else {
                ""
            }
        ));
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
        Some(Kind::Rate) => format!("{} req/s", fmt_num(v)),
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
}
