//! A scenario's numbers: the metrics thresholds are evaluated on (from the load's bench
//! reports, verify's counts, the recovery figures and the resources sampled), and the
//! `--baseline` comparison.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use wiber_model::report::{Report, VerifyCounts};

use super::outcome::Comparison;
use super::phases::PhaseStats;
use super::recovery::Recovery;
use super::threshold::{self, Metrics};
use super::{recovery_stats, resource_trend};

pub(super) fn read_report(dir: &Path) -> Result<Report> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

/// The metrics of one bench report (and its verify verdict, when it has one).
pub fn report_metrics(r: &Report) -> Metrics {
    let mut m = Metrics::new();
    let s = &r.summary;
    for (k, v) in [
        ("sent", s.sent),
        ("ok", s.ok),
        ("failed", s.failed),
        ("unknown", s.unknown),
        ("not_started", s.not_started),
        ("retried", s.retried),
    ] {
        m.insert(k.into(), v as f64);
    }
    m.insert("achieved_rate".into(), s.achieved_rate);
    m.insert("answered_rate".into(), s.answered_rate);
    for (kind, n) in &s.errors {
        m.insert(format!("errors.{kind}"), *n as f64);
    }
    let mut lat = |family: &str, p: &wiber_model::report::Percentiles| {
        if p.count == 0 {
            return;
        }
        for (stat, v) in [
            ("mean", p.mean),
            ("p50", p.p50),
            ("p90", p.p90),
            ("p99", p.p99),
            ("p999", p.p999),
            ("max", p.max),
        ] {
            m.insert(format!("{family}.{stat}"), v);
        }
    };
    lat("ack", &s.ack_ms);
    lat("error_ack", &s.error_ms);
    lat("service", &s.service_ms);
    if let Some(e) = &s.e2e_ms {
        lat("e2e", e);
    }
    // Each kind of read the run made (a kind it did not read has none of these, so a
    // threshold on it fails as not measured).
    for (kind, r) in &s.reads {
        lat(&format!("reads.{kind}"), &r.latency_ms);
    }
    for (kind, r) in &s.reads {
        let name = |x: &str| format!("reads.{kind}.{x}");
        for (k, v) in [
            ("sent", r.sent),
            ("ok", r.ok),
            ("errors", r.errors),
            ("not_started", r.not_started),
        ] {
            m.insert(name(k), v as f64);
        }
        m.insert(name("ok_rate"), r.achieved_rate);
        m.insert(name("answered_rate"), r.answered_rate);
        m.insert(name("target_rate"), r.target_rate);
        if let Some(e) = r.error_rate() {
            m.insert(name("error_rate"), e);
        }
    }
    if let Some(v) = &r.verify {
        insert_counts(&mut m, &v.counts);
    }
    if let Some(t) = resource_trend::compute(std::slice::from_ref(r), &[]) {
        t.insert_metrics(&mut m);
    }
    m
}

/// Whether a metric is a resource figure: of the samples of every segment together, not
/// a sum or a worst of the segments'.
fn is_resource(kind: Option<threshold::Kind>) -> bool {
    matches!(
        kind,
        Some(threshold::Kind::Percent | threshold::Kind::Bytes | threshold::Kind::Cores)
    )
}

fn insert_counts(m: &mut Metrics, c: &VerifyCounts) {
    for (k, v) in [
        ("lost", c.lost),
        ("duplicated", c.duplicated),
        ("unexpected", c.unexpected),
        ("corrupted", c.corrupted),
        ("reordered", c.reordered),
        ("recovered", c.recovered),
        ("indeterminate", c.indeterminate),
        ("stored", c.stored),
        ("dead_lettered", c.dead_lettered),
        ("stalled", c.stalled),
        ("conflicts", c.conflicts),
    ] {
        m.insert(k.into(), v as f64);
    }
}

/// A scenario's metrics: one segment's exactly; several segments summed (counts),
/// time-weighted (rate) or the worst segment's (latencies: conservative, as percentiles
/// of separate runs cannot be merged from their summaries). Resource figures are of
/// every segment's samples put end to end (`resources`, see [`resource_trend`]).
pub(super) fn metrics(
    reports: &[Report],
    durations: &[Duration],
    counts: &VerifyCounts,
    rec: &[Recovery],
    phases: &[PhaseStats],
    resources: Option<&resource_trend::ResourceTrends>,
) -> Metrics {
    let mut m = Metrics::new();
    let total: f64 = durations.iter().map(Duration::as_secs_f64).sum();
    for (i, r) in reports.iter().enumerate() {
        let w = durations.get(i).map_or(0.0, Duration::as_secs_f64) / total.max(f64::MIN_POSITIVE);
        for (k, v) in report_metrics(r) {
            let kind = threshold::kind(&k);
            if kind == Some(threshold::Kind::Ratio) || is_resource(kind) {
                continue; // recomputed from the summed counts or all the samples below
            }
            let e = m.entry(k.clone()).or_insert(0.0);
            match kind {
                Some(threshold::Kind::Rate) => *e += v * w,
                Some(threshold::Kind::Latency) => *e = e.max(v),
                _ => *e += v,
            }
        }
    }
    // A share of several segments is that of their summed counts.
    for kind in wiber_model::report::ReadKind::ALL {
        let get = |x: &str| m.get(&format!("reads.{kind}.{x}")).copied();
        if let (Some(ok), Some(errors)) = (get("ok"), get("errors")) {
            if ok + errors > 0.0 {
                m.insert(format!("reads.{kind}.error_rate"), errors / (ok + errors));
            }
        }
    }
    insert_counts(&mut m, counts);
    if let Some(t) = resources {
        t.insert_metrics(&mut m);
    }
    for p in phases {
        p.insert_metrics(&mut m);
    }
    if !rec.is_empty() {
        let worst = |f: fn(&Recovery) -> Option<i64>| -> Option<f64> {
            rec.iter()
                .map(f)
                .collect::<Option<Vec<i64>>>()
                .map(|v| v.into_iter().max().unwrap_or(0) as f64)
        };
        if let Some(v) = worst(|r| r.first_ack_ms) {
            m.insert("recovery.first_ack".into(), v);
        }
        if let Some(v) = worst(|r| r.lag_zero_ms) {
            m.insert("recovery.lag_zero".into(), v);
        }
        if let Some(v) = worst(|r| r.lag_steady_ms) {
            m.insert("recovery.lag_steady".into(), v);
        }
        if let Some(v) = worst(|r| r.partition_gap.map(|g| g.ms)) {
            m.insert("recovery.partition_gap".into(), v);
        }
    }
    recovery_stats::insert_metrics(rec, &mut m);
    m
}

/// Metrics compared with `--baseline`.
const COMPARED: [&str; 20] = [
    "achieved_rate",
    "during.ok_rate",
    "after.ok_rate",
    "after.ack.p99",
    "ok",
    "unknown",
    "lost",
    "duplicated",
    "ack.p50",
    "ack.p99",
    "ack.max",
    "service.p99",
    "e2e.p99",
    "recovery.first_ack",
    "recovery.lag_zero",
    "recovery.first_ack.p90",
    "recovery.lag_steady.p90",
    "reads.conversation.p99",
    "reads.user.p99",
    "reads.count.p99",
];

pub(super) fn compare(base: &Metrics, run: &Metrics) -> Vec<Comparison> {
    COMPARED
        .iter()
        .filter_map(|k| {
            let (b, r) = (*base.get(*k)?, *run.get(*k)?);
            Some(Comparison {
                metric: k.to_string(),
                baseline: b,
                run: r,
                change_pct: (b != 0.0).then(|| ((r - b) / b * 1000.0).round() / 10.0),
            })
        })
        .collect()
}

/// Reads a baseline: a scenario run directory or its `scenario.json`, or a bench run
/// directory or its `report.json`.
pub fn load_baseline(path: &Path) -> Result<Metrics> {
    let file = if path.is_dir() {
        [path.join("scenario.json"), path.join("report.json")]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{} has neither scenario.json nor report.json: pass a scenario or bench run directory", path.display()))?
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the baseline {}", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the baseline {} is not JSON", file.display()))?;
    if let Some(m) = v.get("metrics") {
        return serde_json::from_value(m.clone())
            .with_context(|| format!("the metrics of {} are not numbers", file.display()));
    }
    let r: Report = serde_json::from_value(v).map_err(|e| {
        anyhow!(
            "the baseline {} is neither a scenario.json nor a bench report.json: {e}",
            file.display()
        )
    })?;
    Ok(report_metrics(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `seconds` from `from_ms` whose api holds `mib` MiB throughout.
    fn segment(from_ms: i64, seconds: u32, mib: u64) -> Report {
        let mut r = crate::report::sample_report("soak", from_ms, seconds);
        let res = r.resources.as_mut().expect("the sample samples resources");
        res.services.truncate(1);
        let api = &mut res.services[0];
        api.service = "api".into();
        for p in &mut api.points {
            p.rss_bytes = Some(mib << 20);
        }
        r
    }

    /// Resource figures of several segments are of their samples end to end: the
    /// second segment's higher RSS is a growth, and the peaks are not summed.
    #[test]
    fn resources_of_segments_end_to_end() {
        let (a, b) = (segment(0, 600, 100), segment(600_000, 600, 150));
        let one = report_metrics(&a);
        assert_eq!(one["rss_growth.api"], 0.0);
        assert_eq!(one["rss_max.api"], (100u64 << 20) as f64);
        let both = [a, b];
        let m = metrics(
            &both,
            &[Duration::from_secs(600); 2],
            &VerifyCounts::default(),
            &[],
            &[],
            resource_trend::compute(&both, &[]).as_ref(),
        );
        assert!((m["rss_growth.api"] - 50.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m["rss_max.api"], (150u64 << 20) as f64);
        assert_eq!(m["cpu_mean.api"], 0.5);
    }
}
