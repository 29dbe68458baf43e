//! Rendering of scenario outcomes: terminal tables and `summary.md` share the rows.

use comfy_table::{presets, ContentArrangement, Table, TableStyle};

use super::outcome::{RunVerdict, ScenarioRun};
use wiber_model::report::ReadKind;

use super::phases::{PhaseReads, PhaseStats};
use super::recovery::Recovery;
use super::recovery_stats::{self, RecoveryStats, Spread};
use super::threshold::{fmt_metric, fmt_num, Verdict};

/// Above this many fault occurrences the terminal shows the figures by kind of fault
/// and the [`TERMINAL_WORST`] worst faults instead of a row per fault (`summary.md` and
/// `report.html` keep every row).
pub const TERMINAL_FAULT_ROWS: usize = 20;
pub const TERMINAL_WORST: usize = 10;

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

const INVARIANTS: &str =
    "lost, duplicated, unexpected, corrupted, reordered, stalled, conflicts == 0; dead_lettered == the run's poison records";

/// The invariants' threshold text for `o`: dead-lettered is 0 unless the run put poison
/// records on the topic.
fn invariants_text(o: &ScenarioRun) -> String {
    INVARIANTS.replace(
        "the run's poison records",
        &o.expected_dead_lettered.to_string(),
    )
}

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
                threshold: invariants_text(o),
                actual: format!(
                    "lost {}, duplicated {}, unexpected {}, corrupted {}, reordered {}, stalled {}, conflicts {}, dead_lettered {} (ok {}, unknown {}: recovered {}, indeterminate {}){}",
                    c.lost, c.duplicated, c.unexpected, c.corrupted, c.reordered, c.stalled, c.conflicts, c.dead_lettered, c.ledger_ok, c.ledger_unknown, c.recovered, c.indeterminate,
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
            threshold: invariants_text(o),
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

/// `0.4 / 1.2 / 3.0 s`: a spread's p50 / p90 / max, `never` where a fault that never
/// recovered lands.
pub fn spread(s: &Spread) -> String {
    let v = |ms: Option<i64>| ms.map_or("never".into(), |ms| format!("{:.1}", ms as f64 / 1000.0));
    format!("{} / {} / {} s", v(s.p50_ms), v(s.p90_ms), v(s.max_ms))
}

/// The recovery figures by kind of fault, a row per kind and one for all faults; `None`
/// with fewer than two faults (the fault table says it all).
pub fn kind_rows(stats: &RecoveryStats) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
    if stats.faults < 2 {
        return None;
    }
    let header = vec![
        "fault kind",
        "count",
        "first ack after p50 / p90 / max",
        "lag 0 after p50 / p90 / max",
        "lag steady after p50 / p90 / max",
        "lag never steady",
    ];
    let row = |name: String, k: &super::recovery_stats::KindStats| {
        vec![
            name,
            k.count.to_string(),
            spread(&k.first_ack),
            spread(&k.lag_zero),
            spread(&k.lag_steady),
            k.lag_steady.never.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = stats.kinds.iter().map(|k| row(k.kind(), k)).collect();
    rows.extend(stats.all.iter().map(|k| row("all faults".into(), k)));
    Some((header, rows))
}

/// `worst fault: kill kafka#2 on kafka#2, 1234.5 s into the load: lag steady after 45.2 s,
/// first ack after 3.1 s`: the fault the run took longest to recover from.
pub fn worst_line(stats: &RecoveryStats) -> Option<String> {
    let w = stats.worst.as_ref()?;
    Some(format!(
        "worst fault: {} on {}, {:.1} s into the load: lag steady after {}, first ack after {}",
        w.description,
        w.targets.join(","),
        w.at_s,
        secs(w.lag_steady_ms),
        secs(w.first_ack_ms)
    ))
}

/// CPU and RSS per service over the run, with the growth from the second to the last
/// sixth of it; `None` when nothing was sampled.
pub fn resource_rows(o: &ScenarioRun) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
    let t = o.resources.as_ref()?;
    let header = vec![
        "service",
        "samples",
        "RSS 2nd sixth (MiB)",
        "RSS last sixth (MiB)",
        "RSS growth",
        "peak RSS (MiB)",
        "CPU mean (cores)",
        "growth judged on",
    ];
    let mib = |b: Option<f64>| b.map_or("-".into(), |b| format!("{:.1}", b / 1_048_576.0));
    let rows: Vec<Vec<String>> = t
        .services
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                s.samples.to_string(),
                mib(s.rss_second_bytes),
                mib(s.rss_last_bytes),
                s.rss_growth_pct
                    .map_or("not measured".into(), |g| format!("{g:+.1}%")),
                mib(s.rss_max_bytes.map(|b| b as f64)),
                s.cpu_mean_cores.map_or("-".into(), |c| format!("{c:.2}")),
                judged_on(s),
            ]
        })
        .collect();
    (!rows.is_empty()).then_some((header, rows))
}

/// Which process a service's growth was judged on, and how many were too short to be:
/// `consumer#2 (4242:77: 178 s); 3 shorter not judged`.
pub fn judged_on(s: &super::resource_trend::ServiceTrend) -> String {
    let short = match s.not_judged_count {
        0 => String::new(),
        n => format!("{n} shorter not judged"),
    };
    match (&s.judged_on, short.is_empty()) {
        (Some(j), true) => j.clone(),
        (Some(j), false) => format!("{j}; {short}"),
        (None, false) => format!("none: {short}"),
        // A run without per-instance samples (written before them).
        (None, true) => "instances summed".into(),
    }
}

/// The title of the resources table: the windows it compares.
pub fn resource_title(o: &ScenarioRun) -> String {
    let w = o.resources.as_ref().map_or(0, |t| t.window_ms());
    format!(
        "resources over the run (growth per process that lived at least half the run: mean RSS of its last sixth of the run's length over its second; a sixth is {:.0} s)",
        w as f64 / 1000.0
    )
}

/// One table of a report, with a line to print under it.
type Section = (String, Table, Option<String>);

/// The tables of one outcome: checks, faults with recovery, baseline comparison. With
/// `fault_rows`, at most that many faults are listed, the worst first.
fn tables(o: &ScenarioRun, preset: TableStyle, fault_rows: Option<usize>) -> Vec<Section> {
    let mut out = Vec::new();
    let mut checks = table(preset, &["check", "threshold", "actual", "verdict"]);
    for c in check_rows(o) {
        checks.add_row(vec![c.check, c.threshold, c.actual, c.verdict_text]);
    }
    out.push(("checks".to_string(), checks, None));
    if let Some((header, rows)) = read_rows(o) {
        let mut t = table(preset, &header);
        for r in rows {
            t.add_row(r);
        }
        out.push((
            "reads (latency of ok reads, from due time)".to_string(),
            t,
            None,
        ));
    }
    if !o.phases.is_empty() {
        out.push(("phases".to_string(), phases(o, preset), None));
    }
    if let Some((header, rows)) = resource_rows(o) {
        let mut t = table(preset, &header);
        for r in rows {
            t.add_row(r);
        }
        out.push((resource_title(o), t, None));
    }
    let stats = o.recovery_stats_or_computed();
    if let Some((header, rows)) = kind_rows(&stats) {
        let mut t = table(preset, &header);
        for r in rows {
            t.add_row(r);
        }
        out.push((
            "recovery by fault kind (seconds after the fault window closed)".to_string(),
            t,
            worst_line(&stats),
        ));
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
        let shown: Vec<&Recovery> = match fault_rows {
            Some(n) if o.recovery.len() > n => recovery_stats::worst_first(&o.recovery)
                .into_iter()
                .take(n)
                .collect(),
            _ => o.recovery.iter().collect(),
        };
        for r in &shown {
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
        let title = if shown.len() < o.recovery.len() {
            format!(
                "faults and recovery: the {} worst of {} ({} more in summary.md)",
                shown.len(),
                o.recovery.len(),
                o.recovery.len() - shown.len()
            )
        } else {
            "faults and recovery".to_string()
        };
        out.push((title, t, None));
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
        out.push(("compared with the baseline".to_string(), t, None));
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
    if let (Some(seed), Some(r)) = (o.seed, &o.random) {
        s.push_str(&format!(
            "\n  {}",
            super::random::describe(&o.file, seed, r)
        ));
    }
    if let Some(e) = &o.error {
        s.push_str(&format!("\n  {e}"));
    }
    if let Some(inc) = &o.incremental {
        s.push_str(&format!("\n  {}", inc.describe()));
    }
    if let Some(line) = stall_line(o) {
        s.push_str(&format!("\n  {line}"));
    }
    if o.verify.is_some() || !o.thresholds.is_empty() {
        // Many faults (a soak): by kind, and the worst ones only.
        let rows = (o.recovery.len() > TERMINAL_FAULT_ROWS).then_some(TERMINAL_WORST);
        for (title, t, note) in tables(o, presets::UTF8_FULL_CONDENSED, rows) {
            s.push_str(&format!("\n{title}:\n{t}"));
            if let Some(n) = note {
                s.push_str(&format!("\n{n}"));
            }
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
    if let (Some(seed), Some(r)) = (o.seed, &o.random) {
        s.push_str(&format!(
            "- {}\n",
            super::random::describe_markdown(&o.file, seed, r)
        ));
    }
    if let Some(inc) = &o.incremental {
        s.push_str(&format!("- {}\n", inc.describe()));
    }
    if let Some(line) = stall_line(o) {
        s.push_str(&format!("- {line}\n"));
    }
    if let Some(e) = &o.error {
        s.push_str(&format!("\n**Could not be done:** {e}\n"));
    }
    for f in &o.rollback_failures {
        s.push_str(&format!("\n**Rollback failed:** {f}\n"));
    }
    for (title, t, note) in tables(o, presets::ASCII_MARKDOWN, None) {
        s.push_str(&format!("\n## {title}\n\n{t}\n"));
        if let Some(n) = note {
            s.push_str(&format!("\n{n}\n"));
        }
    }
    s
}

/// `consumer.stalled_max = 40 s: partition 3 at offset 1042 ...`: the longest a partition
/// had lag while its committed offset did not move; `None` when the run sampled no lag.
pub fn stall_line(o: &ScenarioRun) -> Option<String> {
    let secs = *o.metrics.get("consumer.stalled_max")?;
    Some(match o.stall.filter(|s| s.ms > 0) {
        Some(s) => format!(
            "consumer.stalled_max = {}: {}, from {:.1} s into the run",
            fmt_metric("consumer.stalled_max", secs),
            s.describe(),
            (s.from_ms - o.started_ms) as f64 / 1000.0
        ),
        None => "consumer.stalled_max = 0 s: no partition held lag with its committed offset still"
            .to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::recovery_stats::fixtures::soak_run;

    #[test]
    fn many_faults_show_by_kind_and_the_worst_ten_on_the_terminal() {
        let o = soak_run(30);
        let t = terminal(&o);
        assert!(t.contains("recovery by fault kind"), "{t}");
        for kind in ["kill consumer", "pause kafka", "loss mongo", "all faults"] {
            assert!(t.contains(kind), "{kind}: {t}");
        }
        // Faults 29 .. 20, the worst, and none of the others.
        assert!(
            t.contains("faults and recovery: the 10 worst of 30 (20 more in summary.md)"),
            "{t}"
        );
        for i in 20..30 {
            assert!(t.contains(&format!(" #{i} ")), "fault {i}: {t}");
        }
        for i in 0..20 {
            assert!(!t.contains(&format!(" #{i} ")), "fault {i}: {t}");
        }
        // The worst, by name, due time and figures.
        assert!(
            t.contains("worst fault: loss mongo#1 #29 on mongo#1, 290.0 s into the load: lag steady after 3.0 s, first ack after 0.3 s"),
            "{t}"
        );
        // summary.md keeps every row.
        let md = markdown(&o);
        for i in 0..30 {
            assert!(md.contains(&format!(" #{i} ")), "fault {i}: {md}");
        }
        assert!(md.contains("## faults and recovery\n"), "{md}");
        assert!(md.contains("## recovery by fault kind"), "{md}");
        assert!(md.contains("worst fault: loss mongo#1 #29"), "{md}");
        // Ten kills, faults 0, 3, .., 27: first ack 10 .. 280 ms, steady lag 0.1 .. 2.8 s.
        let kills = md
            .lines()
            .find(|l| l.starts_with("| kill consumer "))
            .expect("a row for the kills");
        for cell in [
            "| 10 ",
            "| 0.1 / 0.2 / 0.3 s ",
            "| 1.8 / 3.0 / 3.3 s ",
            "| 1.3 / 2.5 / 2.8 s ",
        ] {
            assert!(kills.contains(cell), "{cell}: {kills}");
        }
    }

    #[test]
    fn the_longest_stall_is_in_the_summary_with_its_partition() {
        let mut o = soak_run(1);
        assert!(!terminal(&o).contains("consumer.stalled_max"));
        o.metrics.insert("consumer.stalled_max".into(), 0.0);
        assert!(terminal(&o).contains(
            "consumer.stalled_max = 0 s: no partition held lag with its committed offset still"
        ));
        o.metrics.insert("consumer.stalled_max".into(), 40.0);
        o.stall = Some(super::super::stall::Stall {
            partition: 3,
            offset: Some(1042),
            from_ms: o.started_ms + 12_500,
            ms: 40_000,
            peak_lag: 812,
        });
        let line = "consumer.stalled_max = 40 s: partition 3 at offset 1042: 40.0 s (lag up to 812), from 12.5 s into the run";
        assert!(terminal(&o).contains(line), "{}", terminal(&o));
        assert!(markdown(&o).contains(&format!("- {line}\n")));
    }

    #[test]
    fn a_few_faults_keep_every_row_on_the_terminal() {
        let t = terminal(&soak_run(20));
        assert!(t.contains("faults and recovery:\n"), "{t}");
        assert!(!t.contains("more in summary.md"), "{t}");
        for i in 0..20 {
            assert!(t.contains(&format!(" #{i} ")), "fault {i}: {t}");
        }
        // One fault: its row says it all, no table by kind.
        let t = terminal(&soak_run(1));
        assert!(!t.contains("recovery by fault kind"), "{t}");
        assert!(t.contains("faults and recovery:\n"), "{t}");
    }
}
