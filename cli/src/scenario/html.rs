//! `report.html` of a scenario run: one self-contained page (inline CSS and SVG, no
//! script) for an operator: the verdict, the whole timeline across the load segments
//! with the fault windows shaded, the phases side by side, the checks with pass/fail,
//! recovery by kind of fault and per fault, CPU and RSS per service over the run with
//! their growth, verify's counts and examples, and links to each load segment's own
//! bench page.
//!
//! It renders what the run left in its directory: [`ScenarioRun`] (already in memory),
//! each segment's `report.json` (per-second timeline, verify's examples) and
//! `lag.jsonl`. Rendering never fails: a file that is missing or unreadable makes its
//! part of the page say "not measured" and why, because the page is also written for
//! runs that could not be done, where it matters most that it exists.
//!
//! The charts are the bench page's ([`crate::report::chart`]); every text that comes
//! from a file (names, descriptions, error strings, example details) is escaped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wiber_model::report::{Report, ResourcePoint, Second, GENERATOR};

use super::outcome::{RunVerdict, ScenarioRun};
use super::print::{self, secs};
use super::recovery::{LagSample, Recovery};
use super::threshold::{fmt_num, Verdict};
use super::timeline::FaultRecord;
use crate::report::chart::{self, Band, Chart, Mark, Series};
use crate::report::esc;
use crate::report::html::{page_start, read_rate_series, PAGE_END, SERVICE_COLOURS};
use crate::report::tables::{self, Table};
use crate::runtime::Action;

/// The verdict banner and the page's own layout, on top of the shared report style.
const CSS: &str = "\
.banner{display:flex;align-items:center;gap:18px;padding:14px 20px;border-radius:8px;color:#fff;margin:0 0 1em}\
.banner.pass{background:#1b7f2a}.banner.fail{background:#c62828}.banner.error{background:#6d4c41}\
.banner .word{font-size:42px;font-weight:800;letter-spacing:2px}\
.banner .what{font-size:15px;line-height:1.35}.banner .what b{font-size:18px}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:14px;margin:.5em 0}\
dl.meta dt{color:#666}dl.meta dd{margin:0}\
nav.toc{font-size:13px;margin:.4em 0 1em}nav.toc a{margin-right:12px}";

/// The per-second figures of one load segment, on the scenario's clock.
struct Segment {
    /// The directory's name (`load`, `load-1`, ...), which is also the relative link.
    name: String,
    /// Where its files are read from.
    dir: PathBuf,
    report: Result<Report, String>,
}

/// The page of one run; `dir` is the run directory (load segments, lag samples).
pub fn render(run: &ScenarioRun, dir: &Path) -> String {
    let segments = segments(run, dir);
    let lag = read_lag(&dir.join("lag.jsonl"));
    let origin = origin(run, &segments, lag.as_deref().unwrap_or(&[]));
    let span = span_s(run, &segments, lag.as_deref().unwrap_or(&[]), origin);

    let mut h = page_start(
        &format!("scenario {}: {}", run.name, verdict_word(run.verdict)),
        CSS,
    );
    h.push_str(&header(run));
    h.push_str(
        "<nav class=\"toc\"><a href=\"#timeline\">timeline</a><a href=\"#phases\">phases</a>\
<a href=\"#checks\">checks</a><a href=\"#faults\">faults and recovery</a><a href=\"#resources\">resources</a>\
<a href=\"#verify\">verify</a><a href=\"#segments\">load segments</a><a href=\"#files\">files</a></nav>\n",
    );
    h.push_str(&timeline(run, &segments, &lag, origin, span));
    h.push_str(&phases(run, origin));
    h.push_str(&reads(run));
    h.push_str(&checks(run));
    h.push_str(&faults(run, origin));
    h.push_str(&resources(run));
    h.push_str(&verify(run, &segments));
    h.push_str(&load_segments(&segments));
    h.push_str(&comparison(run));
    h.push_str(&files(dir));
    h.push_str(PAGE_END);
    h
}

fn verdict_word(v: RunVerdict) -> &'static str {
    super::print::verdict(v)
}

/// The load segments, read from the run directory. A segment directory is looked up by
/// its name inside `dir` first, so a run directory that was moved or copied still
/// renders.
fn segments(run: &ScenarioRun, dir: &Path) -> Vec<Segment> {
    run.load_dirs
        .iter()
        .map(|d| {
            let name = d.file_name().map_or_else(
                || d.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let inside = dir.join(&name);
            let seg_dir = if inside.is_dir() { inside } else { d.clone() };
            let path = seg_dir.join("report.json");
            let report = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|t| {
                    serde_json::from_str::<Report>(&t)
                        .map_err(|e| format!("{} is not a bench report: {e}", path.display()))
                });
            Segment {
                name,
                dir: seg_dir,
                report,
            }
        })
        .collect()
}

fn read_lag(path: &Path) -> Result<Vec<LagSample>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<LagSample>(l)
                .map_err(|e| format!("{} has a bad line ({e})", path.display()))
        })
        .collect()
}

/// Second 0 of the page's time axis: the start of the load (the first segment's first
/// due time); without a segment report, what else dates it.
fn origin(run: &ScenarioRun, segments: &[Segment], lag: &[LagSample]) -> i64 {
    // The phases start where the runner started the load (and the fault timeline's
    // clock); the first segment's first due time is a few ms later.
    let phases = run
        .phases
        .iter()
        .flat_map(|p| p.windows.iter().map(|w| w.0));
    segments
        .iter()
        .filter_map(|s| s.report.as_ref().ok())
        .map(|r| r.run.measured_from_ms)
        .chain(phases)
        .min()
        .or_else(|| {
            // A fault's start minus its due offset is the load's start (give or take the
            // step's lateness).
            run.faults
                .iter()
                .map(|f| f.started_ms - (f.due_s * 1000.0) as i64)
                .min()
        })
        .or_else(|| lag.first().map(|s| s.time_ms))
        .unwrap_or(run.started_ms)
}

/// Seconds from `origin` to the end of what there is to see: the load, the fault
/// windows, and the lag until the group drained after them. Lag samples go on through
/// verify's wait; a flat zero after the drain would only squeeze the rest of the axis.
fn span_s(run: &ScenarioRun, segments: &[Segment], lag: &[LagSample], origin: i64) -> f64 {
    let mut end = origin;
    for r in segments.iter().filter_map(|s| s.report.as_ref().ok()) {
        end = end.max(segment_end(r));
    }
    for f in &run.faults {
        end = end.max(f.ended_ms.or(f.acted_ms).unwrap_or(f.started_ms));
    }
    let drained = lag
        .iter()
        .find(|s| s.time_ms >= end && s.lag == Some(0))
        .or(lag.last());
    if let Some(s) = drained {
        end = end.max(s.time_ms);
    }
    // A little room after the last point, so it does not sit on the frame.
    ((end - origin) as f64 / 1000.0 + 1.0).max(2.0)
}

fn segment_end(r: &Report) -> i64 {
    r.run.measured_from_ms + (r.timeline.len() as i64 * 1000).max(r.config.duration_ms as i64)
}

/// A short name for a fault on the charts: the action and what it hit, numbered when
/// the fault recurs.
fn fault_label(f: &FaultRecord, all: &[FaultRecord]) -> String {
    let mut s = format!("{} {}", f.action, f.targets.join(","));
    if all
        .iter()
        .any(|o| o.fault == f.fault && o.occurrence != f.occurrence)
    {
        let _ = write!(s, " #{}", f.occurrence + 1);
    }
    s
}

/// Whether the fault has an undo, so a window (kill … start, pause … unpause).
fn has_undo(f: &FaultRecord) -> bool {
    Action::parse(&f.action).is_some_and(|(a, _)| a.undo().is_some())
}

/// Fault windows as shaded bands, and faults without an undo (restart, scale) as marked
/// lines, with a light band when the action itself took a while.
fn annotations(run: &ScenarioRun, origin: i64, span: f64) -> (Vec<Band>, Vec<Mark>) {
    let at = |ms: i64| (ms - origin) as f64 / 1000.0;
    let mut bands = Vec::new();
    let mut marks = Vec::new();
    for f in &run.faults {
        let label = fault_label(f, &run.faults);
        if has_undo(f) {
            match f.ended_ms {
                Some(end) => bands.push(Band {
                    from: at(f.started_ms),
                    to: at(end),
                    label,
                }),
                None => bands.push(Band {
                    from: at(f.started_ms),
                    to: span,
                    label: format!("{label} (never undone)"),
                }),
            }
        } else {
            let end = f.ended_ms.or(f.acted_ms).unwrap_or(f.started_ms);
            if end - f.started_ms >= 1000 {
                bands.push(Band {
                    from: at(f.started_ms),
                    to: at(end),
                    label: String::new(),
                });
            }
            marks.push(Mark {
                x: at(f.started_ms),
                label,
            });
        }
    }
    (bands, marks)
}

fn header(run: &ScenarioRun) -> String {
    let mut h = String::new();
    let mut summary = Vec::new();
    let (pass, fail, skipped) =
        run.thresholds
            .iter()
            .fold((0, 0, 0), |(p, f, s), e| match e.verdict {
                Verdict::Pass => (p + 1, f, s),
                Verdict::Fail => (p, f + 1, s),
                Verdict::Skipped => (p, f, s + 1),
            });
    if !run.thresholds.is_empty() {
        let mut t = format!("thresholds: {pass} pass, {fail} fail");
        if skipped > 0 {
            let _ = write!(t, ", {skipped} skipped");
        }
        summary.push(t);
    }
    if run.verify.is_some() {
        let bad: Vec<String> = run
            .broken_invariants()
            .iter()
            .map(|(k, n)| {
                let expected = if run.expects_fail(k) {
                    " (expected)"
                } else {
                    ""
                };
                format!("{k} {n}{expected}")
            })
            .collect();
        summary.push(if bad.is_empty() {
            "invariants hold".to_string()
        } else {
            format!("invariants broken: {}", bad.join(", "))
        });
        if run.verify_verdicts.contains(&RunVerdict::Error) {
            summary.push("the consumer group did not drain".into());
        }
    }
    summary.push(format!("{} fault(s)", run.faults.len()));
    let _ = writeln!(
        h,
        "<header class=\"banner {cls}\" id=\"verdict\"><span class=\"word\">{word}</span>\
<span class=\"what\"><b>scenario {name}</b><br>{summary}</span></header>",
        cls = run.verdict.name(),
        word = verdict_word(run.verdict),
        name = esc(&run.name),
        summary = esc(&summary.join("; "))
    );
    let _ = write!(
        h,
        "<h1>Scenario <code>{}</code></h1>\n<p>{}</p>\n",
        esc(&run.name),
        esc(&run.description)
    );
    if let Some(inc) = &run.incremental {
        let _ = writeln!(h, "<p>{}</p>", esc(&inc.describe()));
    }
    if let Some(line) = super::print::stall_line(run) {
        let _ = writeln!(h, "<p>{}</p>", esc(&line));
    }
    if let Some(e) = &run.error {
        let _ = writeln!(
            h,
            "<p class=\"problem\"><b>Could not be done:</b> {}</p>",
            esc(e)
        );
    }
    for f in &run.rollback_failures {
        let _ = writeln!(
            h,
            "<p class=\"problem\"><b>Rollback failed:</b> {}</p>",
            esc(f)
        );
    }
    let stack = format!(
        "project {} ({}){}{}",
        run.project,
        run.runtime.map_or("-", |k| k.name()),
        if run.brought_up {
            ", brought up by this run"
        } else {
            ""
        },
        if run.brought_up && run.torn_down {
            " and taken down"
        } else {
            ""
        }
    );
    let rows = [
        ("file", run.file.clone()),
        ("started", wiber_model::rfc3339_ms(run.started_ms)),
        ("took", format!("{:.1} s", run.seconds)),
        (
            "load",
            format!(
                "{:.0} req/s mean, {} segment(s)",
                run.mean_rate,
                run.load_dirs.len()
            ),
        ),
        ("stack", stack),
    ];
    h.push_str("<dl class=\"meta\">");
    for (k, v) in rows {
        let _ = write!(h, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    h.push_str("</dl>\n");
    h
}

/// Placeholder for a part of the page whose data is missing.
fn not_measured(what: &str, why: &str) -> String {
    format!(
        "<p class=\"missing\">{}: not measured ({}).</p>\n",
        esc(what),
        esc(why)
    )
}

fn timeline(
    run: &ScenarioRun,
    segments: &[Segment],
    lag: &Result<Vec<LagSample>, String>,
    origin: i64,
    span: f64,
) -> String {
    let mut h = String::from("<h2 id=\"timeline\">Timeline</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"muted\">Seconds since the load started, across {} load segment(s); \
shaded: fault windows (from the fault to its undo returning). Latencies are of the requests \
due in each second.</p>",
        segments.len()
    );
    let reports: Vec<&Report> = segments
        .iter()
        .filter_map(|s| s.report.as_ref().ok())
        .collect();
    for s in segments {
        if let Err(e) = &s.report {
            h.push_str(&not_measured(&format!("segment {}", s.name), e));
        }
    }
    // Each segment's seconds on the scenario's clock, with a gap after each segment so a
    // line never bridges the time between two of them.
    let per_sec = |f: fn(&Second) -> Option<f64>| {
        let mut pts = Vec::new();
        for r in &reports {
            let off = (r.run.measured_from_ms - origin) as f64 / 1000.0;
            pts.extend(r.timeline.iter().map(|p| (off + p.t as f64 + 0.5, f(p))));
            pts.push(((segment_end(r) - origin) as f64 / 1000.0, None));
        }
        pts
    };
    let mut target = Vec::new();
    for r in &reports {
        if let Some(t) = r.summary.target_rate {
            let from = (r.run.measured_from_ms - origin) as f64 / 1000.0;
            let to = (segment_end(r) - origin) as f64 / 1000.0;
            target.extend([(from, Some(t)), (to, Some(t))]);
        }
    }
    let (bands, marks) = annotations(run, origin, span);
    let chart =
        |id: &str, title: &str, y_label: &str, series: Vec<Series>, note: Option<String>| Chart {
            id: id.into(),
            title: title.into(),
            y_label: y_label.into(),
            x_label: "seconds since the load started".into(),
            x_ticks: chart::time_ticks(span),
            x_max: span,
            series,
            marks: marks.clone(),
            bands: bands.clone(),
            note,
            mark_name: "fault without undo (restart, scale)".into(),
        };
    let why_no_load = if run.load_dirs.is_empty() {
        "the run has no load segment".to_string()
    } else {
        "no segment's report.json could be read".to_string()
    };
    // CPU per service across segments: each segment's samples on the scenario's clock.
    let mut services: Vec<String> = Vec::new();
    for r in &reports {
        for sr in r.resources.iter().flat_map(|x| &x.services) {
            if !services.contains(&sr.service) {
                services.push(sr.service.clone());
            }
        }
    }
    let resource_series = |f: fn(&ResourcePoint) -> Option<f64>| -> Vec<Series> {
        services
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut pts = Vec::new();
                for r in &reports {
                    let off = (r.run.measured_from_ms - origin) as f64 / 1000.0;
                    if let Some(sr) = r
                        .resources
                        .iter()
                        .flat_map(|x| &x.services)
                        .find(|sr| &sr.service == name)
                    {
                        pts.extend(sr.points.iter().map(|p| (off + p.t, f(p))));
                    }
                    pts.push(((segment_end(r) - origin) as f64 / 1000.0, None));
                }
                let line = Series::new(name, SERVICE_COLOURS[i % SERVICE_COLOURS.len()], pts);
                if name == GENERATOR {
                    line.dashed()
                } else {
                    line
                }
            })
            .collect()
    };
    let cpu_series = resource_series(|p| p.cores);
    let rss_series = resource_series(|p| p.rss_bytes.map(|b| b as f64 / 1_048_576.0));
    let mut rate_series = vec![
        Series::new(
            "answered/s",
            "#1f77b4",
            per_sec(|p| Some(p.answered as f64)),
        ),
        Series::new("goodput ok/s", "#2ca02c", per_sec(|p| Some(p.ok as f64))),
        Series::new("errors/s", "#d62728", per_sec(|p| Some(p.errors as f64))),
        Series::new("target", "#7f7f7f", target).dashed(),
    ];
    if reports.iter().any(|r| !r.summary.reads.is_empty()) {
        rate_series.extend(read_rate_series(per_sec));
    }
    let charts = [
        (
            chart("chart-rate", "Rate per second", "req/s", rate_series, None),
            why_no_load.clone(),
        ),
        (
            chart(
                "chart-ack",
                "Ack latency, ok answers only",
                "ms",
                vec![
                    Series::new("ack p50", "#2ca02c", per_sec(|p| p.ack_p50)),
                    Series::new("ack p99", "#ff7f0e", per_sec(|p| p.ack_p99)),
                ],
                Some("A gap: no request due in that second was acknowledged.".into()),
            ),
            why_no_load.clone(),
        ),
        (
            chart(
                "chart-e2e",
                "End-to-end latency (due time to stored)",
                "ms",
                vec![
                    Series::new("e2e p50", "#9467bd", per_sec(|p| p.e2e_p50)).dashed(),
                    Series::new("e2e p99", "#8c564b", per_sec(|p| p.e2e_p99)),
                ],
                None,
            ),
            // bench measures end-to-end latency after the last segment only.
            if reports.is_empty() {
                why_no_load
            } else {
                "no stored document was timed".into()
            },
        ),
        (
            chart(
                "chart-lag",
                "Consumer group lag",
                "messages",
                vec![Series::new(
                    "lag",
                    "#6a3d9a",
                    lag.as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .map(|s| ((s.time_ms - origin) as f64 / 1000.0, s.lag.map(|l| l as f64))),
                )],
                Some("Sampled every second until the group drained; a gap: Kafka could not be asked.".into()),
            ),
            match lag {
                Ok(_) => "no lag sample was taken".into(),
                Err(e) => e.clone(),
            },
        ),
        (
            chart(
                "chart-cpu",
                "CPU per service (cores; 1.0 = one core busy)",
                "cores",
                cpu_series,
                Some("Sampled every second from the runtime (local: /proc; Docker: the engine's stats); the generator is wiberctl itself.".into()),
            ),
            "the stack's CPU was not sampled (see the load segments' reports)".into(),
        ),
        (
            chart(
                "chart-rss",
                "Resident memory per service (MiB; all instances of a service together)",
                "MiB",
                rss_series,
                Some("A line that keeps climbing over the run is a leak: see the growth under Resources.".into()),
            ),
            "the stack's memory was not sampled (see the load segments' reports)".into(),
        ),
    ];
    for (c, why) in &charts {
        if c.has_data() {
            h.push_str(&chart::render(c));
        } else {
            let _ = write!(
                h,
                "<figure class=\"chart\" id=\"{}\"><figcaption><div class=\"chart-title\">{}</div></figcaption>{}</figure>",
                esc(&c.id),
                esc(&c.title),
                not_measured(&c.title, why)
            );
        }
        h.push('\n');
    }
    h
}

/// Before, during and after the faults, one column each.
fn phases(run: &ScenarioRun, origin: i64) -> String {
    let mut h = String::from("<h2 id=\"phases\">Phases</h2>\n");
    if run.phases.is_empty() {
        h.push_str(&not_measured(
            "before / during / after",
            run.error
                .as_deref()
                .unwrap_or("the load did not run long enough to have a phase"),
        ));
        return h;
    }
    let mut cols: Vec<(String, bool)> = vec![(String::new(), false)];
    cols.extend(
        run.phases
            .iter()
            .map(|p| (format!("{} ({:.0} s)", p.phase.name(), p.seconds), true)),
    );
    let colrefs: Vec<(&str, bool)> = cols.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let mut t = Table::new(&colrefs);
    let at = |ms: i64| (ms - origin) as f64 / 1000.0;
    let mut row = |name: &str, f: &dyn Fn(&super::phases::PhaseStats) -> String| {
        let mut r = vec![name.to_string()];
        r.extend(run.phases.iter().map(f));
        t.row(r);
    };
    row("window (s since the load started)", &|p| {
        p.windows
            .iter()
            .map(|(s, e)| format!("{:.1} to {:.1}", at(*s), at(*e)))
            .collect::<Vec<_>>()
            .join(", ")
    });
    for (name, cells) in print::phase_rows(run) {
        let mut r = vec![name.to_string()];
        r.extend(cells);
        t.row(r);
    }
    h.push_str(&t.html("phases"));
    h.push('\n');
    h
}

/// The reads of the whole load, a row per kind (nothing when the load did not read).
fn reads(run: &ScenarioRun) -> String {
    let Some((header, rows)) = print::read_rows(run) else {
        return String::new();
    };
    let cols: Vec<(&str, bool)> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, i > 0))
        .collect();
    let mut t = Table::new(&cols);
    for r in rows {
        t.row(r);
    }
    format!(
        "<h2 id=\"reads\">Reads</h2>\n<p class=\"muted\">Latency of the ok reads, from the time each was due; errors are reads answered with a non-2xx status or not at all.</p>\n{}\n",
        t.html("reads")
    )
}

/// The invariants and every threshold, one row each, with its verdict.
fn checks(run: &ScenarioRun) -> String {
    let mut h = String::from(
        "<h2 id=\"checks\">Checks</h2>\n<table class=\"checks\"><thead><tr><th>check</th><th>threshold</th>\
<th class=\"num\">actual</th><th>verdict</th></tr></thead><tbody>",
    );
    for c in print::check_rows(run) {
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"verdict\">{}</td></tr>",
            c.class.name(),
            esc(&c.check),
            esc(&c.threshold),
            esc(&c.actual),
            esc(&c.verdict_text)
        );
    }
    h.push_str("</tbody></table>\n");
    if run.thresholds.is_empty() {
        h.push_str("<p class=\"muted\">The scenario has no thresholds.</p>\n");
    }
    h
}

/// Every fault occurrence as it happened, with its recovery figures.
fn faults(run: &ScenarioRun, origin: i64) -> String {
    let mut h = String::from("<h2 id=\"faults\">Faults and recovery</h2>\n");
    if run.faults.is_empty() {
        h.push_str("<p class=\"muted\">No fault was injected.</p>\n");
        return h;
    }
    let stats = run.recovery_stats_or_computed();
    if let Some((header, rows)) = print::kind_rows(&stats) {
        let cols: Vec<(&str, bool)> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i > 0))
            .collect();
        let mut t = Table::new(&cols);
        for r in rows {
            t.row(r);
        }
        let _ = write!(
            h,
            "<h3>Recovery by fault kind</h3>\n<p class=\"muted\">Seconds after the fault window \
closed; a fault that never recovered counts as never.</p>\n{}\n",
            t.html("recovery-kinds")
        );
        if let Some(w) = print::worst_line(&stats) {
            let _ = writeln!(h, "<p class=\"worst\">{}</p>", esc(&w));
        }
    }
    let mut t = Table::new(&[
        ("fault", false),
        ("on", false),
        ("at (s)", true),
        ("window (s)", true),
        ("result", false),
        ("first ack after", true),
        ("longest partition gap", true),
        ("lag 0 after", true),
        ("lag steady after (peak)", true),
        ("ack p99 ms before / during / after", true),
    ]);
    for f in &run.faults {
        let rec: Option<&Recovery> = run
            .recovery
            .iter()
            .find(|r| r.fault == f.fault && r.occurrence == f.occurrence);
        let (start, end) = f.window(f.started_ms);
        let window = match (has_undo(f), f.ended_ms) {
            (true, None) => "never undone".to_string(),
            _ => format!("{:.1}", (end - start) as f64 / 1000.0),
        };
        let mut row = vec![
            // The description says when and for how long; the number tells occurrences
            // of a recurring fault apart, as the charts' labels do.
            if run
                .faults
                .iter()
                .any(|o| o.fault == f.fault && o.occurrence != f.occurrence)
            {
                format!("{} #{}", f.description, f.occurrence + 1)
            } else {
                f.description.clone()
            },
            f.targets.join(", "),
            format!("{:.1}", (f.started_ms - origin) as f64 / 1000.0),
            window,
            f.result.clone(),
        ];
        match rec {
            Some(r) => row.extend([
                secs(r.first_ack_ms),
                print::partition_gap(r),
                secs(r.lag_zero_ms),
                print::steady_and_peak(r),
                print::p99_around(r),
            ]),
            None => row.extend(std::iter::repeat_n("not measured".to_string(), 5)),
        }
        t.row(row);
    }
    // Many faults (a soak): every row, folded away under the figures by kind.
    if run.faults.len() > print::TERMINAL_FAULT_ROWS {
        let _ = write!(
            h,
            "<details><summary>Every fault ({})</summary>\n{}\n</details>",
            run.faults.len(),
            t.html("faults")
        );
    } else {
        h.push_str(&t.html("faults"));
    }
    h.push_str(
        "\n<p class=\"muted\">Recovery is timed from the end of each fault window: the first ok \
answer, the consumer lag back to 0 and back to its level before the first fault.</p>\n",
    );
    h
}

/// CPU and RSS per service over the whole run, with the growth of the RSS from the
/// second to the last sixth of it (what `rss_growth.<service>` thresholds check).
fn resources(run: &ScenarioRun) -> String {
    let mut h = String::from("<h2 id=\"resources\">Resources</h2>\n");
    let Some((header, rows)) = print::resource_rows(run) else {
        h.push_str(&not_measured(
            "CPU and RSS over the run",
            "no load segment sampled the stack's resources",
        ));
        return h;
    };
    let cols: Vec<(&str, bool)> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, i > 0))
        .collect();
    let mut t = Table::new(&cols);
    for r in rows {
        t.row(r);
    }
    let _ = write!(
        h,
        "<p class=\"muted\">{}. Peak RSS and CPU are each service's instances together; the generator is wiberctl \
itself. Growth is judged per process incarnation (an instance between two restarts) that lived at least half \
the run, the worst of them, with at least {} samples in each of the two sixths; a restart is not a growth.</p>\n{}\n",
        esc(&print::resource_title(run)),
        super::threshold::MIN_WINDOW_SAMPLES,
        t.html("resources")
    );
    h
}

/// Verify's counts (summed over the segments), each segment's verdict, notes and
/// examples of what broke.
fn verify(run: &ScenarioRun, segments: &[Segment]) -> String {
    let mut h = String::from("<h2 id=\"verify\">Verify</h2>\n");
    let Some(c) = &run.verify else {
        h.push_str(&not_measured(
            "delivery invariants",
            run.error.as_deref().unwrap_or("verify did not run"),
        ));
        return h;
    };
    h.push_str(&tables::verify_counts(c).html("verify"));
    if c.ledger_unknown > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\">{}</p>",
            esc(crate::report::UNKNOWN_NOTE)
        );
    }
    for (i, s) in segments.iter().enumerate() {
        let verdict = run.verify_verdicts.get(i).copied();
        let _ = writeln!(
            h,
            "<h3>Segment <code>{}</code>: {}</h3>",
            esc(&s.name),
            verdict.map_or_else(|| "not verified".into(), crate::report::html::verdict_span)
        );
        let v = match &s.report {
            Ok(r) => match &r.verify {
                Some(v) => v,
                None => {
                    h.push_str(&not_measured(
                        "examples",
                        "its report.json has no verify result",
                    ));
                    continue;
                }
            },
            Err(e) => {
                h.push_str(&not_measured("examples", e));
                continue;
            }
        };
        if !v.drained {
            let _ = write!(
                h,
                "<p class=\"problem\">The consumer group did not drain (lag left: {}).</p>",
                v.lag_remaining.map_or("unknown".into(), |l| l.to_string())
            );
        }
        if let Some(e) = &v.error {
            let _ = write!(h, "<p class=\"problem\">{}</p>", esc(e));
        }
        if !v.notes.is_empty() {
            h.push_str("<ul class=\"notes\">");
            for n in &v.notes {
                let _ = write!(h, "<li>{}</li>", esc(n));
            }
            h.push_str("</ul>");
        }
        if v.examples.is_empty() {
            h.push_str("<p class=\"muted\">No example: nothing lost, duplicated, unexpected, corrupted or reordered.</p>");
        }
        for (kind, exs) in &v.examples {
            let _ = write!(
                h,
                "<h4 class=\"examples-kind\">{} (first {})</h4>{}",
                esc(kind),
                exs.len(),
                tables::examples(exs).html(&format!("examples {kind}"))
            );
        }
        h.push('\n');
    }
    h
}

/// One row per load segment, linking to its own bench page.
fn load_segments(segments: &[Segment]) -> String {
    let mut h = String::from("<h2 id=\"segments\">Load segments</h2>\n");
    if segments.is_empty() {
        h.push_str(&not_measured("load", "the run has no load segment"));
        return h;
    }
    h.push_str(
        "<table class=\"segments\"><thead><tr><th>segment</th><th class=\"num\">target/s</th>\
<th class=\"num\">seconds</th><th class=\"num\">goodput ok/s</th><th class=\"num\">answered/s</th>\
<th class=\"num\">ok / failed / unknown</th><th class=\"num\">ack p99 ms</th><th>bench report</th></tr></thead><tbody>",
    );
    for s in segments {
        let link = if s.dir.join("report.html").is_file() {
            let href = format!("{}/report.html", s.name);
            format!("<a href=\"{}\">{}</a>", esc(&href), esc(&href))
        } else {
            "<span class=\"missing\">not written</span>".to_string()
        };
        let cells = match &s.report {
            Ok(r) => {
                let m = &r.summary;
                [
                    crate::report::opt(m.target_rate),
                    format!("{:.0}", r.config.duration_ms as f64 / 1000.0),
                    format!("{:.1}", m.achieved_rate),
                    format!("{:.1}", m.answered_rate),
                    format!("{} / {} / {}", m.ok, m.failed, m.unknown),
                    if m.ack_ms.count == 0 {
                        "-".into()
                    } else {
                        format!("{:.1}", m.ack_ms.p99)
                    },
                ]
            }
            Err(_) => std::array::from_fn(|_| "not measured".to_string()),
        };
        let _ = write!(h, "<tr><td><code>{}</code></td>", esc(&s.name));
        for c in cells {
            let _ = write!(h, "<td class=\"num\">{}</td>", esc(&c));
        }
        let _ = write!(h, "<td>{link}</td></tr>");
    }
    h.push_str("</tbody></table>\n");
    // Where the cores went, per segment: the split over its load.
    for s in segments {
        if let Ok(Some(res)) = s.report.as_ref().map(|r| r.resources.as_ref()) {
            let _ = write!(
                h,
                "<h3>Where the cores went in <code>{}</code> ({})</h3>{}",
                esc(&s.name),
                esc(&res.source),
                tables::resources(res).html("resources")
            );
        }
    }
    h
}

fn comparison(run: &ScenarioRun) -> String {
    if run.comparison.is_empty() {
        return String::new();
    }
    let mut t = Table::new(&[
        ("metric", false),
        ("baseline", true),
        ("this run", true),
        ("change", true),
    ]);
    for c in &run.comparison {
        t.row(vec![
            c.metric.clone(),
            fmt_num(c.baseline),
            fmt_num(c.run),
            c.change_pct.map_or("-".into(), |p| format!("{p:+.1}%")),
        ]);
    }
    format!(
        "<h2 id=\"baseline\">Compared with the baseline</h2>\n<p class=\"muted\">{}</p>{}\n",
        esc(&run
            .baseline
            .as_ref()
            .map_or_else(String::new, |b| b.display().to_string())),
        t.html("comparison")
    )
}

/// Links to the run directory's other files, those that exist.
fn files(dir: &Path) -> String {
    let names = [
        "scenario.json",
        "summary.md",
        "junit.xml",
        "scenario.toml",
        "lag.jsonl",
        "events.jsonl",
    ];
    let links: Vec<String> = names
        .iter()
        .filter(|n| dir.join(n).is_file())
        .map(|n| format!("<a href=\"{n}\">{n}</a>"))
        .collect();
    format!(
        "<h2 id=\"files\">Files</h2>\n<p class=\"muted\">{}</p>\n",
        if links.is_empty() {
            "none besides this page".to_string()
        } else {
            links.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::threshold::Evaluation;

    const T0: i64 = 1_800_000_000_000;

    fn fault(
        fault: usize,
        action: &str,
        target: &str,
        at_s: i64,
        end_s: Option<i64>,
    ) -> FaultRecord {
        FaultRecord {
            fault,
            occurrence: 0,
            line: 10,
            description: format!("{action} {target} at {at_s}s"),
            action: action.into(),
            targets: vec![target.into()],
            due_s: at_s as f64,
            started_ms: T0 + at_s * 1000,
            acted_ms: Some(T0 + at_s * 1000 + 20),
            ended_ms: end_s.map(|e| T0 + e * 1000),
            result: "ok".into(),
            detail: None,
        }
    }

    fn evaluation(metric: &str, threshold: &str, actual: f64, verdict: Verdict) -> Evaluation {
        Evaluation {
            metric: metric.into(),
            threshold: threshold.into(),
            line: 20,
            actual: Some(actual),
            limit: Some(1000.0),
            verdict,
            detail: (verdict == Verdict::Fail).then(|| format!("{actual} is not {threshold}")),
        }
    }

    fn run(dir: &Path) -> ScenarioRun {
        let phase = |name: &str, from: i64, to: i64, ok: u64| {
            serde_json::from_value(serde_json::json!({
                "phase": name, "windows": [[T0 + from * 1000, T0 + to * 1000]],
                "seconds": (to - from) as f64, "due": ok, "sent": ok, "ok": ok, "failed": 0,
                "unknown": 0, "ok_rate": ok as f64 / (to - from) as f64,
                "answered_rate": ok as f64 / (to - from) as f64,
                "ack_p50": 10.0, "ack_p99": 40.0, "ack_max": 60.0
            }))
            .unwrap()
        };
        ScenarioRun {
            schema: super::super::outcome::SCHEMA.into(),
            name: "pause-consumer".into(),
            description: "A consumer is frozen for 3 s.".into(),
            file: "scenarios/pause-consumer.toml".into(),
            verdict: RunVerdict::Fail,
            error: None,
            dir: Some(dir.to_path_buf()),
            started_ms: T0 - 5000,
            seconds: 30.0,
            project: "wiber".into(),
            runtime: None,
            brought_up: true,
            torn_down: true,
            mean_rate: 100.0,
            load_dirs: vec![dir.join("load")],
            verify: Some(wiber_model::report::VerifyCounts {
                ledger_ok: 950,
                stored: 949,
                lost: 1,
                ..Default::default()
            }),
            verify_verdicts: vec![RunVerdict::Fail],
            metrics: Default::default(),
            thresholds: vec![
                evaluation("ack.p99", "< 1s", 40.0, Verdict::Pass),
                evaluation("during.ok_rate", ">= 0.9 * rate", 60.0, Verdict::Fail),
            ],
            faults: vec![
                fault(0, "pause", "consumer#1", 4, Some(7)),
                fault(1, "restart", "kafka#1", 8, None),
            ],
            recovery: Vec::new(),
            recovery_stats: None,
            resources: None,
            phases: vec![
                phase("before", 0, 4, 400),
                phase("during", 4, 7, 180),
                phase("after", 7, 10, 300),
            ],
            rollback_failures: Vec::new(),
            baseline: None,
            comparison: Vec::new(),
            expect_fail: Vec::new(),
            expected_dead_lettered: 0,
            seed: None,
            random: None,
            incremental: None,
            stall: None,
        }
    }

    /// A run directory with one load segment (report.json, report.html) and lag samples.
    fn run_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wiber-scenario-html-{tag}-{}-{}",
            std::process::id(),
            wiber_model::now_ms()
        ));
        let load = dir.join("load");
        std::fs::create_dir_all(&load).unwrap();
        let report = crate::report::sample_report("pause-consumer-load", T0, 10);
        crate::report::write_all(&load, &report).unwrap();
        let lag: String = (0..14)
            .map(|s| {
                let lag = match s {
                    5..=8 => Some(300 - (s - 5) * 50),
                    9 => None,
                    _ => Some(2),
                };
                format!(
                    "{}\n",
                    serde_json::to_string(&LagSample {
                        time_ms: T0 + s * 1000,
                        lag
                    })
                    .unwrap()
                )
            })
            .collect();
        std::fs::write(dir.join("lag.jsonl"), lag).unwrap();
        dir
    }

    #[test]
    fn every_section_and_chart_is_there() {
        let dir = run_dir("sections");
        let html = render(&run(&dir), &dir);
        for id in [
            "verdict", "timeline", "phases", "checks", "faults", "verify", "segments", "files",
        ] {
            assert!(
                html.contains(&format!("id=\"{id}\"")),
                "section {id} missing"
            );
        }
        for id in [
            "chart-rate",
            "chart-ack",
            "chart-e2e",
            "chart-lag",
            "chart-cpu",
            "chart-rss",
        ] {
            assert!(
                html.contains(&format!("<svg class=\"plot\" id=\"{id}\"")),
                "chart {id} missing"
            );
        }
        assert!(html.contains("<span class=\"word\">FAIL</span>"), "{html}");
        assert!(html.contains("class=\"banner fail\""));
        // Phases side by side: one column each.
        for p in ["before (4 s)", "during (3 s)", "after (3 s)"] {
            assert!(html.contains(&format!("<th class=\"num\">{p}</th>")), "{p}");
        }
        // The segment's own page, linked relatively; verify's example from its report.
        assert!(html.contains("<a href=\"load/report.html\">"), "{html}");
        assert!(
            html.contains("<td>pause-consumer-load-c1-s7</td>"),
            "{html}"
        );
        assert!(html.contains("acknowledged but not stored"));
        assert!(!html.contains("<script"), "no script on the page");
        // The load read: reads per second on the rate chart; without read metrics (as
        // here) no reads table, since the thresholds' figures are what it shows.
        assert!(html.contains(">reads ok/s<"), "{html}");
        assert!(!html.contains("id=\"reads\""));
        let mut r = run(&dir);
        for (k, v) in [
            ("reads.count.target_rate", 5.0),
            ("reads.count.sent", 50.0),
            ("reads.count.ok", 40.0),
            ("reads.count.errors", 10.0),
            ("reads.count.error_rate", 0.2),
            ("reads.count.p99", 12.5),
        ] {
            r.metrics.insert(k.into(), v);
        }
        let html = render(&r, &dir);
        assert!(html.contains("<h2 id=\"reads\">Reads</h2>"), "{html}");
        assert!(
            html.contains("<td>count</td><td class=\"num\">50</td><td class=\"num\">40</td><td class=\"num\">10</td><td class=\"num\">20.00%</td>"),
            "{html}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fault_windows_are_shaded_and_faults_without_undo_marked() {
        let dir = run_dir("faults");
        let html = render(&run(&dir), &dir);
        // Six time charts (rate, ack, e2e, lag, CPU, RSS), each with the pause window and
        // the restart mark.
        assert_eq!(html.matches("class=\"fault-window\"").count(), 6, "{html}");
        assert_eq!(html.matches("class=\"fault-mark\"").count(), 6, "{html}");
        assert_eq!(html.matches(">pause consumer#1</text>").count(), 6);
        assert_eq!(html.matches(">restart kafka#1</text>").count(), 6);
        // The pause window: 4 s to 7 s of a 14 s axis (the lag samples reach 13 s).
        let (bands, marks) = annotations(&run(&dir), T0, 13.0);
        assert_eq!(
            bands,
            vec![Band {
                from: 4.0,
                to: 7.0,
                label: "pause consumer#1".into()
            }]
        );
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].x, 8.0);
        // A fault never undone is shaded to the end and says so.
        let mut r = run(&dir);
        r.faults[0].ended_ms = None;
        let (bands, _) = annotations(&r, T0, 13.0);
        assert_eq!(
            (bands[0].to, bands[0].label.as_str()),
            (13.0, "pause consumer#1 (never undone)")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checks_have_pass_and_fail_rows() {
        let dir = run_dir("checks");
        let html = render(&run(&dir), &dir);
        let checks =
            &html[html.find("id=\"checks\"").unwrap()..html.find("id=\"faults\"").unwrap()];
        assert!(
            checks.contains("<tr class=\"pass\"><td>ack.p99</td><td>&lt; 1s</td><td class=\"num\">40 ms</td><td class=\"verdict\">pass</td></tr>"),
            "{checks}"
        );
        assert!(
            checks.contains(
                "<tr class=\"fail\"><td>during.ok_rate</td><td>&gt;= 0.9 * rate (= 1000)</td>"
            ),
            "{checks}"
        );
        assert!(
            checks.contains("FAIL: 60 is not &gt;= 0.9 * rate"),
            "{checks}"
        );
        // The invariants row fails on the one lost message.
        assert!(
            checks.contains("<tr class=\"fail\"><td>invariants (verify)</td>"),
            "{checks}"
        );
        assert!(checks.contains("lost 1"), "{checks}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_from_files_is_escaped() {
        let dir = run_dir("escape");
        let mut r = run(&dir);
        r.name = "<script>alert('name')</script>".into();
        r.description = "<img src=x onerror=alert(1)>".into();
        r.error = Some("</p><script>alert(2)</script>".into());
        r.faults[0].targets = vec!["<script>t</script>".into()];
        r.thresholds[0].metric = "<b>m</b>".into();
        let html = render(&r, &dir);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>m</b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("Could not be done:</b> &lt;/p&gt;&lt;script&gt;"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_faults_by_kind_with_the_worst_and_every_row_folded() {
        let dir = std::env::temp_dir().join(format!(
            "wiber-scenario-html-soak-{}-{}",
            std::process::id(),
            wiber_model::now_ms()
        ));
        let run = crate::scenario::recovery_stats::fixtures::soak_run(30);
        let html = render(&run, &dir);
        let faults =
            &html[html.find("id=\"faults\"").unwrap()..html.find("id=\"resources\"").unwrap()];
        assert!(
            faults.contains("<h3>Recovery by fault kind</h3>"),
            "{faults}"
        );
        assert!(
            faults.contains("<tr><td>kill consumer</td><td class=\"num\">10</td><td class=\"num\">0.1 / 0.2 / 0.3 s</td>"),
            "{faults}"
        );
        assert!(faults.contains("<td>all faults</td><td class=\"num\">30</td>"));
        assert!(
            faults.contains(
                "<p class=\"worst\">worst fault: loss mongo#1 #29 on mongo#1, 290.0 s into the load"
            ),
            "{faults}"
        );
        // Every fault is there, folded away.
        assert!(faults.contains("<details><summary>Every fault (30)</summary>"));
        for i in 0..30 {
            assert!(faults.contains(&format!(" #{i}</td>")), "fault {i}");
        }
        // A few faults: no folding.
        let html = render(
            &crate::scenario::recovery_stats::fixtures::soak_run(5),
            &dir,
        );
        assert!(!html.contains("<details>"));
        assert!(html.contains("<h3>Recovery by fault kind</h3>"));
    }

    #[test]
    fn memory_is_charted_and_its_growth_tabled() {
        let dir = run_dir("resources");
        let mut r = run(&dir);
        let html = render(&r, &dir);
        assert!(
            html.contains("<svg class=\"plot\" id=\"chart-rss\""),
            "{html}"
        );
        assert!(
            html.contains("CPU and RSS over the run: not measured"),
            "{html}"
        );
        // A minute of flat 64 MiB for kafka and the generator (the sample report's).
        r.resources = super::super::resource_trend::compute(
            &[crate::report::sample_report("r", T0, 60)],
            &[],
        );
        let html = render(&r, &dir);
        let res =
            &html[html.find("id=\"resources\"").unwrap()..html.find("id=\"verify\"").unwrap()];
        assert!(
            res.contains("<tr><td>kafka</td><td class=\"num\">60</td><td class=\"num\">64.0</td><td class=\"num\">64.0</td><td class=\"num\">+0.0%</td><td class=\"num\">64.0</td><td class=\"num\">0.50</td><td class=\"num\">instances summed</td></tr>"),
            "{res}"
        );
        assert!(res.contains("<td>generator</td>"), "{res}");
        assert!(res.contains("a sixth is 10 s"), "{res}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_say_not_measured() {
        let dir = std::env::temp_dir().join(format!(
            "wiber-scenario-html-missing-{}-{}",
            std::process::id(),
            wiber_model::now_ms()
        ));
        let mut r = run(&dir);
        r.phases.clear();
        r.verify = None;
        let html = render(&r, &dir);
        assert!(
            !html.contains("<svg class=\"plot\""),
            "nothing to draw: {html}"
        );
        for what in [
            "Rate per second: not measured",
            "Consumer group lag: not measured (cannot read",
            "before / during / after: not measured",
            "delivery invariants: not measured",
        ] {
            assert!(html.contains(what), "{what}: {html}");
        }
        assert!(
            html.contains("segment load: not measured (cannot read"),
            "{html}"
        );
        assert!(
            html.contains("<td class=\"verdict\">not checked</td>"),
            "{html}"
        );
    }
}
