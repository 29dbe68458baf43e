//! `report.html`: one self-contained page (inline CSS and SVG, no scripts) with the
//! summary, the per-second rate and latency charts with fault events as marked lines,
//! the latency distribution, and the details as HTML tables (the same tables as
//! `report.md`, from [`super::tables`]).
//!
//! Also the page frame and escaping the scenario page shares.

use std::fmt::Write as _;

use wiber_model::report::{Report, Second, Verdict};

use super::chart::{self, Chart, Mark, Series};
use super::{esc, tables};

/// The page style: readable tables, verdict colours, and the charts' CSS.
const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:960px;padding:0 1em;color:#222;line-height:1.4}\
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:3px}h3{margin-bottom:.3em}\
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px}\
td,th{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}\
code{background:#f3f3f3;padding:0 3px;border-radius:3px}\
span.pass{color:#1b7f2a}span.fail,span.error{color:#c62828}\
tr.pass td.verdict{color:#1b7f2a;font-weight:600}tr.fail td.verdict{color:#c62828;font-weight:700}\
tr.fail{background:#fdecea}tr.skipped td.verdict{color:#8a6d00}\
.warning{background:#fff8e1;border-left:4px solid #f9a825;padding:.4em .8em;margin:.6em 0}\
.problem{background:#fdecea;border-left:4px solid #c62828;padding:.4em .8em;margin:.6em 0}\
.missing{color:#777;font-style:italic}.muted{color:#666;font-size:14px}";

/// The rate chart's read lines (reads ok/s, read errors/s; dashed, beside the writes),
/// for the bench page and the scenario page. `per_sec` turns a field of each second of
/// the timeline into points.
pub fn read_rate_series(
    per_sec: impl Fn(fn(&Second) -> Option<f64>) -> Vec<(f64, Option<f64>)>,
) -> [Series; 2] {
    [
        Series::new(
            "reads ok/s",
            "#17becf",
            per_sec(|p| Some(p.reads_ok as f64)),
        )
        .dashed(),
        Series::new(
            "read errors/s",
            "#e377c2",
            per_sec(|p| Some(p.reads_errors as f64)),
        )
        .dashed(),
    ]
}

/// The start of a page: doctype, title, style (the shared one, then `extra_css`),
/// `<body>`.
pub fn page_start(title: &str, extra_css: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title>\n<style>{STYLE}{}{extra_css}</style></head><body>\n",
        esc(title),
        chart::CSS
    )
}

pub const PAGE_END: &str = "</body></html>\n";

/// `pass` / `fail` / `error`, as a CSS class and upper-case text.
pub fn verdict_span(v: Verdict) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        v.name(),
        v.name().to_uppercase()
    )
}

pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let secs = r.timeline.len().max(1) as f64;
    let marks: Vec<Mark> = r
        .events
        .iter()
        .map(|e| Mark {
            x: (e.time_ms - r.run.measured_from_ms) as f64 / 1000.0,
            label: format!("{} {}", e.action, e.target),
        })
        .filter(|m| (0.0..=secs).contains(&m.x))
        .collect();
    let per_sec = |f: fn(&Second) -> Option<f64>| {
        r.timeline
            .iter()
            .map(move |p| (p.t as f64 + 0.5, f(p)))
            .collect::<Vec<_>>()
    };
    let mut rate_series = vec![
        Series::new(
            "answered/s",
            "#1f77b4",
            per_sec(|p| Some(p.answered as f64)),
        ),
        Series::new("goodput ok/s", "#2ca02c", per_sec(|p| Some(p.ok as f64))),
        Series::new("errors/s", "#d62728", per_sec(|p| Some(p.errors as f64))),
    ];
    if let Some(t) = s.target_rate {
        rate_series
            .push(Series::new("target", "#7f7f7f", [(0.0, Some(t)), (secs, Some(t))]).dashed());
    }
    if !s.reads.is_empty() {
        rate_series.extend(read_rate_series(per_sec));
    }
    let time = |id: &str, title: &str, y_label: &str, series: Vec<Series>| Chart {
        id: id.into(),
        title: title.into(),
        y_label: y_label.into(),
        x_label: "seconds of the measured window".into(),
        x_ticks: chart::time_ticks(secs),
        x_max: secs,
        series,
        marks: marks.clone(),
        bands: Vec::new(),
        note: None,
        mark_name: String::new(),
    };
    let rate = time("chart-rate", "Rate per second", "req/s", rate_series);
    let latency = time(
        "chart-latency",
        "Ack latency, ok only (by due time)",
        "ms",
        vec![
            Series::new("ack p50", "#2ca02c", per_sec(|p| p.ack_p50)),
            Series::new("ack p99", "#ff7f0e", per_sec(|p| p.ack_p99)),
            Series::new("e2e p50", "#9467bd", per_sec(|p| p.e2e_p50)).dashed(),
            Series::new("e2e p99", "#8c564b", per_sec(|p| p.e2e_p99)).dashed(),
        ],
    );
    // Distribution: x is -log10(1 - p), so 90 %, 99 %, 99.9 % are evenly spaced.
    let nines = |pct: f64| -(1.0 - (pct / 100.0).min(0.99999)).log10();
    let curve = |pts: &[[f64; 2]]| {
        pts.iter()
            .map(|p| (nines(p[0]), Some(p[1])))
            .collect::<Vec<_>>()
    };
    let distribution = Chart {
        id: "chart-distribution".into(),
        title: if r.distribution.reads.is_empty() {
            "Latency distribution (ack: ok only)".into()
        } else {
            "Latency distribution (ack and reads: ok only)".into()
        },
        y_label: "ms".into(),
        x_label: "percentile".into(),
        x_ticks: ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64, l.to_string()))
            .collect(),
        x_max: 5.0,
        series: {
            let mut v = vec![
                Series::new("ack", "#ff7f0e", curve(&r.distribution.ack)),
                Series::new("end-to-end", "#8c564b", curve(&r.distribution.e2e)),
            ];
            for (i, (kind, pts)) in r.distribution.reads.iter().enumerate() {
                let colour = ["#17becf", "#bcbd22", "#7f7f7f"][i % 3];
                v.push(Series::new(&format!("{kind} reads"), colour, curve(pts)).dashed());
            }
            v
        },
        ..Default::default()
    };

    let mut html = page_start(&format!("wiber bench {} ({})", r.run.name, r.run.id), "");
    let _ = writeln!(
        html,
        "<h1>wiber bench <code>{}</code></h1>\n<p class=\"muted\">Run {}. {}</p>",
        esc(&r.run.name),
        esc(&r.run.id),
        esc(&super::run_line(r))
    );
    let _ = writeln!(
        html,
        "<p>Goodput <b>{:.1} ok/s</b>{}, answered {:.1}/s; ok {}, failed {}, unknown {}, not started {}.</p>",
        s.achieved_rate,
        s.target_rate
            .map_or(String::new(), |t| format!(" (target {t:.0} req/s)")),
        s.answered_rate,
        s.ok,
        s.failed,
        s.unknown,
        s.not_started
    );
    if !s.reads.is_empty() {
        let parts: Vec<String> = s
            .reads
            .iter()
            .map(|(k, x)| format!("{k} {} ok / {} errors", x.ok, x.errors))
            .collect();
        let failed = s.reads.values().any(|x| x.errors > 0);
        let _ = writeln!(
            html,
            "<p{}>Reads: {}.</p>",
            if failed { " class=\"problem\"" } else { "" },
            esc(&parts.join(", "))
        );
    }
    if let Some(v) = &r.verify {
        let _ = writeln!(html, "<h2>Verify: {}</h2>", verdict_span(v.verdict));
        let c = &v.counts;
        let _ = writeln!(
            html,
            "<p>Unknown outcomes: {}; recovered (stored) {}, indeterminate (not stored) {}.</p>",
            c.ledger_unknown,
            super::with_share(c.recovered, c.share_of_unknown(c.recovered)),
            super::with_share(c.indeterminate, c.share_of_unknown(c.indeterminate))
        );
    }
    let mut charts = vec![rate, latency];
    if let Some(res) = &r.resources {
        charts.push(time(
            "chart-cpu",
            "CPU per service (cores; 1.0 = one core busy)",
            "cores",
            resource_series(res, |p| p.cores),
        ));
        charts.push(time(
            "chart-rss",
            "Resident memory per service",
            "MiB",
            resource_series(res, |p| p.rss_bytes.map(|b| b as f64 / 1048576.0)),
        ));
    }
    charts.push(distribution);
    for c in &charts {
        html.push_str(&chart::render(c));
        html.push('\n');
    }
    html.push_str(&details(r));
    html.push_str(PAGE_END);
    html
}

/// Colours of the services on the resource charts (the generator dashed).
pub const SERVICE_COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One line per service of a resource figure over the run.
pub fn resource_series(
    r: &wiber_model::report::Resources,
    f: fn(&wiber_model::report::ResourcePoint) -> Option<f64>,
) -> Vec<Series> {
    r.services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let line = Series::new(
                &s.service,
                SERVICE_COLOURS[i % SERVICE_COLOURS.len()],
                s.points.iter().map(|p| (p.t, f(p))).collect::<Vec<_>>(),
            );
            // The generator is not a service of the stack: dashed, to set it apart.
            if s.service == wiber_model::report::GENERATOR {
                line.dashed()
            } else {
                line
            }
        })
        .collect()
}

/// The numbers as HTML tables: the same tables `report.md` has.
fn details(r: &Report) -> String {
    let s = &r.summary;
    let mut h = String::from("<h2>Details</h2>\n<h3>Summary</h3>\n");
    h.push_str(&tables::summary(s).html("summary"));
    h.push_str(&tables::latency(s).html("latency"));
    if let Some(t) = tables::reads(&s.reads) {
        h.push_str("<h3>Reads</h3>");
        if let Some(c) = &r.config.reads {
            let _ = write!(h, "<p class=\"muted\">{}</p>", esc(&super::reads_line(c)));
        }
        h.push_str(&t.html("reads"));
    }
    if !s.errors.is_empty() {
        let _ = write!(
            h,
            "<p>Errors by kind: {}</p>",
            esc(&super::errors_by_kind(s))
        );
    }
    for w in &s.warnings {
        let _ = write!(h, "<p class=\"warning\"><b>warning:</b> {}</p>", esc(w));
    }
    if let Some(f) = &r.find_max {
        let _ = write!(
            h,
            "<h3>Find max (SLO <code>{}</code>)</h3><p>Highest rate meeting the SLO: <b>{}</b></p>{}",
            esc(&f.slo),
            esc(&super::opt(f.best_rate)),
            tables::find_max(f).html("find-max")
        );
    }
    if let Some(v) = &r.verify {
        let _ = write!(h, "<h3>Verify: {}</h3>", verdict_span(v.verdict));
        if let Some(e) = &v.error {
            let _ = write!(h, "<p class=\"problem\">{}</p>", esc(e));
        }
        h.push_str(&tables::verify_counts(&v.counts).html("verify"));
        if v.counts.ledger_unknown > 0 {
            let _ = write!(h, "<p class=\"muted\">{}</p>", super::UNKNOWN_NOTE);
        }
        if !v.notes.is_empty() {
            h.push_str("<ul>");
            for n in &v.notes {
                let _ = write!(h, "<li>{}</li>", esc(n));
            }
            h.push_str("</ul>");
        }
        for (kind, exs) in &v.examples {
            let _ = write!(
                h,
                "<h4>{} (first {})</h4>{}",
                esc(kind),
                exs.len(),
                tables::examples(exs).html("examples")
            );
        }
    }
    if let Some(res) = &r.resources {
        let _ = write!(
            h,
            "<h3>Where the cores went ({})</h3>{}",
            esc(&res.source),
            tables::resources(res).html("resources")
        );
        for n in &res.notes {
            let _ = write!(h, "<p class=\"muted\">{}</p>", esc(n));
        }
    }
    if !r.events.is_empty() {
        let _ = write!(
            h,
            "<h3>Fault events</h3>{}",
            tables::events(&r.events, r.run.measured_from_ms).html("events")
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Files: <a href=\"ledger.jsonl\">ledger.jsonl</a>, <a href=\"report.json\">report.json</a> ({}), \
<a href=\"report.md\">report.md</a>, <a href=\"ack.hgrm\">ack.hgrm</a>, <a href=\"e2e.hgrm\">e2e.hgrm</a>{}.</p>",
        esc(&r.schema),
        if s.reads.is_empty() {
            ""
        } else {
            ", <a href=\"reads.jsonl\">reads.jsonl</a>, reads-&lt;kind&gt;.hgrm"
        }
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a&\"b'\">"), "&lt;a&amp;&quot;b&#39;&quot;&gt;");
    }
}
