//! Rendering of scenario outcomes: terminal tables and `summary.md` share the rows.

use comfy_table::{presets, ContentArrangement, Table, TableStyle};

use super::outcome::{RunVerdict, ScenarioRun};
use wiber_model::report::ReadKind;

use super::phases::{PhaseReads, PhaseStats};
use super::recovery::Recovery;
use super::threshold::{fmt_metric, fmt_num, Verdict};

fn table(preset: TableStyle, header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(preset)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

pub fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

pub fn secs(v: Option<i64>) -> String {
    v.map_or_else(|| "never".into(), |v| format!("{:.1} s", v as f64 / 1000.0))
}

/// `12.3 s (840)`: back to the lag before the first fault, and the peak lag.
pub fn steady_and_peak(r: &Recovery) -> String {
    format!(
        "{} ({})",
        secs(r.lag_steady_ms),
        r.peak_lag.map_or("-".into(), |p| p.to_string())
    )
}

/// `40 / 900 / 60`: ack p99 (ms) before / during / after a fault.
pub fn p99_around(r: &Recovery) -> String {
    format!(
        "{} / {} / {}",
        ms(r.before.p99_ms),
        ms(r.during.p99_ms),
        ms(r.after.p99_ms)
    )
}

pub fn verdict(v: RunVerdict) -> &'static str {
    match v {
        RunVerdict::Pass => "PASS",
        RunVerdict::Fail => "FAIL",
        RunVerdict::Error => "ERROR",
    }
}

/// How one check came out, as the reports colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckClass {
    Pass,
    Fail,
    /// Not evaluated (nothing measured, or the run did not get that far).
    Skipped,
}

impl CheckClass {
    pub fn name(self) -> &'static str {
        match self {
            CheckClass::Pass => "pass",
            CheckClass::Fail => "fail",
            CheckClass::Skipped => "skipped",
        }
    }
}

/// One row of the checks table: the invariants, then every threshold. The terminal,
/// `summary.md` and `report.html` all show these rows, so they cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub check: String,
    pub threshold: String,
    pub actual: String,
    pub class: CheckClass,
    /// `pass`, `FAIL: why`, `skipped: why`.
    pub verdict_text: String,
}

const INVARIANTS: &str = "lost, duplicated, unexpected, corrupted, reordered == 0";

pub fn check_rows(o: &ScenarioRun) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    match &o.verify {
        Some(c) => {
            let broken = o.broken_invariants();
            let undrained = o.verify_verdicts.contains(&RunVerdict::Error);
            let ok = o.invariants_hold();
            let expected: Vec<&str> = broken
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| o.expects_fail(k))
                .collect();
            rows.push(CheckRow {
                check: "invariants (verify)".into(),
                threshold: INVARIANTS.into(),
                actual: format!(
                    "lost {}, duplicated {}, unexpected {}, corrupted {}, reordered {} (ok {}, unknown {}: recovered {}, indeterminate {}){}",
                    c.lost, c.duplicated, c.unexpected, c.corrupted, c.reordered, c.ledger_ok, c.ledger_unknown, c.recovered, c.indeterminate,
                    if undrained { "; did not drain" } else { "" }
                ),
                class: if ok { CheckClass::Pass } else { CheckClass::Fail },
                verdict_text: match (ok, expected.is_empty()) {
                    (true, true) => "pass".into(),
                    (true, false) => format!("pass: {} caught, as expected", expected.join(", ")),
                    (false, _) => "FAIL".into(),
                },
            });
        }
        None => rows.push(CheckRow {
            check: "invariants (verify)".into(),
            threshold: INVARIANTS.into(),
            actual: "not measured".into(),
            class: CheckClass::Skipped,
            verdict_text: "not checked".into(),
        }),
    }
    for e in &o.thresholds {
        let detail = e
            .detail
            .as_deref()
            .map_or(String::new(), |d| format!(": {d}"));
        let expected = o.expects_fail(&e.metric);
        let (class, verdict_text) = match (e.verdict, expected) {
            (Verdict::Pass, false) => (CheckClass::Pass, "pass".to_string()),
            (Verdict::Fail, false) => (CheckClass::Fail, format!("FAIL{detail}")),
            (Verdict::Fail, true) => (
                CheckClass::Pass,
                format!("pass: failed as expected{detail}"),
            ),
            (Verdict::Pass, true) => (
                CheckClass::Fail,
                "FAIL: expected to fail (the fault did not cause it, or the check missed it)"
                    .to_string(),
            ),
            (Verdict::Skipped, _) => (CheckClass::Skipped, format!("skipped{detail}")),
        };
        rows.push(CheckRow {
            check: e.metric.clone(),
            // The computed limit only where the text does not already say it.
            threshold: match e.limit {
                Some(l) if e.threshold.contains('*') || e.threshold.ends_with("baseline") => {
                    format!("{} (= {})", e.threshold, fmt_num(l))
                }
                _ => e.threshold.clone(),
            },
            actual: e
                .actual
                .map_or_else(|| "not measured".into(), |v| fmt_metric(&e.metric, v)),
            class,
            verdict_text,
        });
    }
    let missed = o.missed_expectations();
    if !o.expect_fail.is_empty() {
        rows.push(CheckRow {
            check: "expected failures".into(),
            threshold: format!("fail: {}", o.expect_fail.join(", ")),
            actual: if missed.is_empty() {
                "all caught".into()
            } else {
                format!("not caught: {}", missed.join(", "))
            },
            class: if missed.is_empty() {
                CheckClass::Pass
            } else {
                CheckClass::Fail
            },
            verdict_text: if missed.is_empty() {
                "pass".into()
            } else {
                "FAIL: the harness did not catch what the scenario expects".into()
            },
        });
    }
    rows
}

/// The figures of each phase, one row each (a column per phase); two more rows per kind
/// of read when the load read.
pub fn phase_rows(o: &ScenarioRun) -> Vec<(String, Vec<String>)> {
    type Cell = fn(&PhaseStats) -> String;
    let rows: [(&str, Cell); 6] = [
        ("goodput (ok/s)", |p| format!("{:.1}", p.ok_rate)),
        ("answered/s", |p| format!("{:.1}", p.answered_rate)),
        ("ok / failed / unknown", |p| {
            format!("{} / {} / {}", p.ok, p.failed, p.unknown)
        }),
        ("ack p50 ms (ok)", |p| ms(p.ack_p50)),
        ("ack p99 ms (ok)", |p| ms(p.ack_p99)),
        ("ack max ms (ok)", |p| ms(p.ack_max)),
    ];
    let mut out: Vec<(String, Vec<String>)> = rows
        .into_iter()
        .map(|(name, f)| (name.to_string(), o.phases.iter().map(f).collect()))
        .collect();
    let kinds: std::collections::BTreeSet<ReadKind> = o
        .phases
        .iter()
        .flat_map(|p| p.reads.keys().copied())
        .collect();
    for kind in kinds {
        let cells = |f: &dyn Fn(&PhaseReads) -> String| -> Vec<String> {
            o.phases
                .iter()
                .map(|p| p.reads.get(&kind).map_or("-".into(), f))
                .collect()
        };
        out.push((
            format!("{kind} reads ok / errors"),
            cells(&|r| format!("{} / {}", r.ok, r.errors)),
        ));
        out.push((format!("{kind} reads p99 ms (ok)"), cells(&|r| ms(r.p99))));
    }
    out
}

/// The reads of the whole load, one row per kind (from the metrics, so several load
/// segments are summed as thresholds see them); `None` when the load did not read.
pub fn read_rows(o: &ScenarioRun) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
    let header = vec![
        "reads",
        "count",
        "ok",
        "errors",
        "error rate",
        "not started",
        "ok/s (target)",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ];
    let rows: Vec<Vec<String>> = ReadKind::ALL
        .into_iter()
        .filter(|k| o.metrics.contains_key(&format!("reads.{k}.target_rate")))
        .map(|k| {
            let get = |x: &str| o.metrics.get(&format!("reads.{k}.{x}")).copied();
            let n = |x: &str| get(x).map_or("-".into(), fmt_num);
            let lat = |x: &str| get(x).map_or("-".into(), |v| format!("{v:.1}"));
            vec![
                k.to_string(),
                n("sent"),
                n("ok"),
                n("errors"),
                get("error_rate").map_or("-".into(), |e| format!("{:.2}%", e * 100.0)),
                n("not_started"),
                format!(
                    "{} ({})",
                    get("ok_rate").map_or("-".into(), |v| format!("{v:.1}")),
                    n("target_rate")
                ),
                lat("p50"),
                lat("p90"),
                lat("p99"),
                lat("p999"),
                lat("max"),
            ]
        })
        .collect();
    (!rows.is_empty()).then_some((header, rows))
}

/// The tables of one outcome: checks, faults with recovery, baseline comparison.
fn tables(o: &ScenarioRun, preset: TableStyle) -> Vec<(String, Table)> {
    let mut out = Vec::new();
    let mut checks = table(preset, &["check", "threshold", "actual", "verdict"]);
    for c in check_rows(o) {
        checks.add_row(vec![c.check, c.threshold, c.actual, c.verdict_text]);
    }
    out.push(("checks".to_string(), checks));
    if let Some((header, rows)) = read_rows(o) {
        let mut t = table(preset, &header);
        for r in rows {
            t.add_row(r);
        }
        out.push(("reads (latency of ok reads, from due time)".to_string(), t));
    }
    if !o.phases.is_empty() {
        out.push(("phases".to_string(), phases(o, preset)));
    }
    if !o.recovery.is_empty() {
        let mut t = table(
            preset,
            &[
                "fault",
                "targets",
                "window",
                "first ack after",
                "longest partition gap",
                "lag 0 / steady (peak)",
                "ack p99 ms before / during / after",
            ],
        );
        for r in &o.recovery {
            t.add_row(vec![
                r.description.clone(),
                r.targets.join(","),
                format!("{:.1} s", r.window_ms as f64 / 1000.0),
                secs(r.first_ack_ms),
                partition_gap(r),
                format!("{} / {}", secs(r.lag_zero_ms), steady_and_peak(r)),
                p99_around(r),
            ]);
        }
        out.push(("faults and recovery".to_string(), t));
    }
    if !o.comparison.is_empty() {
        let mut t = table(preset, &["metric", "baseline", "this run", "change"]);
        for c in &o.comparison {
            t.add_row(vec![
                c.metric.clone(),
                fmt_num(c.baseline),
                fmt_num(c.run),
                c.change_pct.map_or("-".into(), |p| format!("{p:+.1}%")),
            ]);
        }
        out.push(("compared with the baseline".to_string(), t));
    }
    out
}

/// Before, during and after the faults, side by side (one column per phase).
fn phases(o: &ScenarioRun, preset: TableStyle) -> Table {
    let mut header = vec!["".to_string()];
    header.extend(
        o.phases
            .iter()
            .map(|p| format!("{} ({:.0} s)", p.phase.name(), p.seconds)),
    );
    let mut t = Table::new();
    t.load_style(preset)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    for (name, cells) in phase_rows(o) {
        let mut row = vec![name];
        row.extend(cells);
        t.add_row(row);
    }
    t
}

/// For the terminal.
pub fn terminal(o: &ScenarioRun) -> String {
    let mut s = format!(
        "scenario {}: {} in {:.1} s",
        o.name,
        verdict(o.verdict),
        o.seconds
    );
    if let Some(e) = &o.error {
        s.push_str(&format!("\n  {e}"));
    }
    if o.verify.is_some() || !o.thresholds.is_empty() {
        for (title, t) in tables(o, presets::UTF8_FULL_CONDENSED) {
            s.push_str(&format!("\n{title}:\n{t}"));
        }
    }
    if let Some(d) = &o.dir {
        s.push_str(&format!("\nreport: {}", d.display()));
    }
    s
}

/// `summary.md` of the run directory.
pub fn markdown(o: &ScenarioRun) -> String {
    let mut s = format!(
        "# Scenario {}: {}\n\n{}\n\n",
        o.name,
        verdict(o.verdict),
        o.description
    );
    s.push_str(&format!(
        "- file: `{}`\n- stack: project `{}` ({}){}\n- load: {:.0} req/s mean, run directories {}\n- took {:.1} s\n",
        o.file,
        o.project,
        o.runtime.map_or("-", |k| k.name()),
        if o.brought_up { ", brought up by this run" } else { "" },
        o.mean_rate,
        o.load_dirs.iter().map(|d| format!("`{}`", d.file_name().unwrap_or_default().to_string_lossy())).collect::<Vec<_>>().join(", "),
        o.seconds
    ));
    if let Some(e) = &o.error {
        s.push_str(&format!("\n**Could not be done:** {e}\n"));
    }
    for f in &o.rollback_failures {
        s.push_str(&format!("\n**Rollback failed:** {f}\n"));
    }
    for (title, t) in tables(o, presets::ASCII_MARKDOWN) {
        s.push_str(&format!("\n## {title}\n\n{t}\n"));
    }
    s
}

/// `2.4 s (partition 3)`: the longest a partition went without an ack during the fault.
pub fn partition_gap(r: &Recovery) -> String {
    r.partition_gap.map_or("-".into(), |g| {
        format!("{:.1} s (partition {})", g.ms as f64 / 1000.0, g.partition)
    })
}

/// One line per scenario, for runs of several files.
pub fn overview(outcomes: &[ScenarioRun]) -> Table {
    let mut t = table(
        presets::UTF8_FULL_CONDENSED,
        &[
            "scenario",
            "verdict",
            "lost",
            "duplicated",
            "first ack after fault",
            "lag back to 0",
            "seconds",
        ],
    );
    for o in outcomes {
        let c = o.verify;
        let m = |k: &str| {
            o.metrics
                .get(k)
                .map_or("-".into(), |v| format!("{:.1} s", v / 1000.0))
        };
        t.add_row(vec![
            o.name.clone(),
            verdict(o.verdict).into(),
            c.map_or("-".into(), |c| c.lost.to_string()),
            c.map_or("-".into(), |c| c.duplicated.to_string()),
            m("recovery.first_ack"),
            m("recovery.lag_zero"),
            format!("{:.0}", o.seconds),
        ]);
    }
    t
}
