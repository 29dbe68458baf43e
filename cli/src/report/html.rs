//! `report.html`: one self-contained page (inline CSS and SVG, no scripts) with the
//! summary, the per-second rate and latency charts with fault events as marked lines,
//! and the latency distribution.

use std::fmt::Write as _;

use wiber_model::report::Report;

use super::markdown;

const W: f64 = 900.0;
const H: f64 = 260.0;
const PAD_L: f64 = 60.0;
const PAD_R: f64 = 20.0;
const PAD_T: f64 = 30.0;
const PAD_B: f64 = 40.0;

/// A line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// A vertical marker (a fault event).
struct Mark {
    x: f64,
    label: String,
}

struct Chart<'a> {
    title: &'a str,
    y_label: &'a str,
    x_ticks: Vec<(f64, String)>,
    x_max: f64,
    series: Vec<Series<'a>>,
    marks: Vec<Mark>,
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
    let per_sec = |f: &dyn Fn(&wiber_model::report::Second) -> Option<f64>| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .filter_map(|p| Some((p.t as f64 + 0.5, f(p)?)))
            .collect()
    };
    let time_ticks = ticks(secs, 10)
        .into_iter()
        .map(|t| (t, format!("{t:.0}s")))
        .collect::<Vec<_>>();
    let mut rate_series = vec![
        Series {
            name: "answered/s",
            color: "#1f77b4",
            dashed: false,
            points: per_sec(&|p| Some(p.answered as f64)),
        },
        Series {
            name: "goodput ok/s",
            color: "#2ca02c",
            dashed: false,
            points: per_sec(&|p| Some(p.ok as f64)),
        },
        Series {
            name: "errors/s",
            color: "#d62728",
            dashed: false,
            points: per_sec(&|p| Some(p.errors as f64)),
        },
    ];
    if let Some(t) = s.target_rate {
        rate_series.push(Series {
            name: "target",
            color: "#7f7f7f",
            dashed: true,
            points: vec![(0.0, t), (secs, t)],
        });
    }
    let rate = Chart {
        title: "Rate per second",
        y_label: "req/s",
        x_ticks: time_ticks.clone(),
        x_max: secs,
        series: rate_series,
        marks: clone_marks(&marks),
    };
    let latency = Chart {
        title: "Ack latency, ok only (by due time)",
        y_label: "ms",
        x_ticks: time_ticks,
        x_max: secs,
        series: vec![
            Series {
                name: "ack p50",
                color: "#2ca02c",
                dashed: false,
                points: per_sec(&|p| p.ack_p50),
            },
            Series {
                name: "ack p99",
                color: "#ff7f0e",
                dashed: false,
                points: per_sec(&|p| p.ack_p99),
            },
            Series {
                name: "e2e p50",
                color: "#9467bd",
                dashed: true,
                points: per_sec(&|p| p.e2e_p50),
            },
            Series {
                name: "e2e p99",
                color: "#8c564b",
                dashed: true,
                points: per_sec(&|p| p.e2e_p99),
            },
        ],
        marks,
    };
    // Distribution: x is -log10(1 - p), so 90 %, 99 %, 99.9 % are evenly spaced.
    let nines = |pct: f64| -(1.0 - (pct / 100.0).min(0.99999)).log10();
    let curve = |pts: &[[f64; 2]]| pts.iter().map(|p| (nines(p[0]), p[1])).collect::<Vec<_>>();
    let distribution = Chart {
        title: "Latency distribution (ack: ok only)",
        y_label: "ms",
        x_ticks: vec![
            (0.0, "0%".into()),
            (1.0, "90%".into()),
            (2.0, "99%".into()),
            (3.0, "99.9%".into()),
            (4.0, "99.99%".into()),
            (5.0, "99.999%".into()),
        ],
        x_max: 5.0,
        series: vec![
            Series {
                name: "ack",
                color: "#ff7f0e",
                dashed: false,
                points: curve(&r.distribution.ack),
            },
            Series {
                name: "end-to-end",
                color: "#8c564b",
                dashed: false,
                points: curve(&r.distribution.e2e),
            },
        ],
        marks: Vec::new(),
    };

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>wiber bench {name} ({id})</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2em;max-width:960px;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
th{{background:#f4f4f4}}td:first-child{{text-align:left}}pre{{background:#f8f8f8;padding:1em;overflow:auto;white-space:pre-wrap}}\
.pass{{color:#2ca02c}}.fail,.error{{color:#d62728}}svg{{background:#fff;border:1px solid #eee}}\
</style></head><body>\n",
        name = esc(&r.run.name),
        id = esc(&r.run.id)
    );
    let _ = writeln!(
        html,
        "<h1>wiber bench <code>{}</code></h1>",
        esc(&r.run.name)
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
    if let Some(v) = &r.verify {
        let _ = writeln!(
            html,
            "<h2>Verify: <span class=\"{}\">{}</span></h2>",
            v.verdict.name(),
            v.verdict.name().to_uppercase()
        );
        let c = &v.counts;
        let _ = writeln!(
            html,
            "<p>Unknown outcomes: {}; recovered (stored) {}, indeterminate (not stored) {}.</p>",
            c.ledger_unknown,
            super::with_share(c.recovered, c.share_of_unknown(c.recovered)),
            super::with_share(c.indeterminate, c.share_of_unknown(c.indeterminate))
        );
    }
    for c in [&rate, &latency, &distribution] {
        html.push_str(&svg(c));
        html.push('\n');
    }
    // The tables are the Markdown report's, shown as preformatted text: one renderer for
    // the numbers, so the two reports cannot disagree.
    let _ = writeln!(
        html,
        "<h2>Details</h2>\n<pre>{}</pre>",
        esc(&markdown::render(r))
    );
    html.push_str("</body></html>\n");
    html
}

fn clone_marks(m: &[Mark]) -> Vec<Mark> {
    m.iter()
        .map(|m| Mark {
            x: m.x,
            label: m.label.clone(),
        })
        .collect()
}

/// Renders one line chart as inline SVG.
fn svg(c: &Chart) -> String {
    let y_max = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |v: f64| PAD_L + (v / c.x_max.max(1e-9)).clamp(0.0, 1.0) * (W - PAD_L - PAD_R);
    let y = |v: f64| H - PAD_B - (v / y_max).clamp(0.0, 1.0) * (H - PAD_T - PAD_B);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
<text x=\"{PAD_L}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(c.title)
    );
    // Axes and grid.
    let _ = write!(
        s,
        "<line x1=\"{PAD_L}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/>\
<line x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{b}\" stroke=\"#333\"/>\
<text x=\"12\" y=\"{mid}\" font-size=\"11\" transform=\"rotate(-90 12 {mid})\">{}</text>",
        esc(c.y_label),
        b = H - PAD_B,
        r = W - PAD_R,
        mid = H / 2.0
    );
    for t in ticks(y_max, 5) {
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
<text x=\"{lx}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            fmt_num(t),
            yy = y(t),
            r = W - PAD_R,
            lx = PAD_L - 4.0,
            ty = y(t) + 3.0
        );
    }
    for (t, label) in &c.x_ticks {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x(*t),
            H - PAD_B + 14.0,
            esc(label)
        );
    }
    for m in &c.marks {
        let _ = write!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{PAD_T}\" x2=\"{xx:.1}\" y2=\"{b}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\
<text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"10\" fill=\"#d62728\">{}</text>",
            esc(&m.label),
            xx = x(m.x),
            b = H - PAD_B,
            tx = x(m.x) + 3.0,
            ty = PAD_T + 10.0
        );
    }
    let mut legend_x = PAD_L + 250.0;
    for ser in c.series.iter().filter(|s| !s.points.is_empty()) {
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let dash = if ser.dashed {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"{dash} points=\"{}\"/>\
<rect x=\"{legend_x}\" y=\"10\" width=\"12\" height=\"3\" fill=\"{}\"/>\
<text x=\"{}\" y=\"16\" font-size=\"11\">{}</text>",
            ser.color,
            pts.join(" "),
            ser.color,
            legend_x + 16.0,
            esc(ser.name)
        );
        legend_x += 30.0 + 7.0 * ser.name.len() as f64;
    }
    s.push_str("</svg>");
    s
}

/// About `n` round tick values from 0 to `max`.
fn ticks(max: f64, n: usize) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw = max / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= max)
        .collect()
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_round() {
        assert_eq!(super::ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(super::ticks(0.0, 5), vec![0.0]);
        assert_eq!(super::esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
