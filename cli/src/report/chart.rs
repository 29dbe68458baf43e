//! Line charts as inline SVG, shared by the bench page (`report.html` of a bench run) and
//! the scenario page (`scenario::html`), so both draw axes, gaps, fault windows and
//! legends the same way.
//!
//! A chart is a `<figure>`: its title and legend are HTML above the SVG (they wrap on a
//! narrow page and can never run into each other), the SVG holds the axes, the lines and
//! the fault annotations. Fault labels get their own strip above the plot, stacked in
//! rows when they would overlap, so they cover neither the lines nor each other.

use std::fmt::Write as _;

use super::esc;

/// Plot geometry (SVG user units). The plot is `PLOT_H` high; the label strip above it
/// grows with the rows of fault labels.
const W: f64 = 900.0;
const PLOT_H: f64 = 190.0;
const PAD_L: f64 = 60.0;
const PAD_R: f64 = 20.0;
const PAD_B: f64 = 36.0;
/// Height of one row of fault labels, and the most rows before labels share the last.
const LABEL_ROW: f64 = 13.0;
const MAX_LABEL_ROWS: usize = 4;
/// Rough width of a character of the 10 px label font: enough to keep labels apart.
const CHAR_W: f64 = 5.8;

/// The colour of fault annotations (windows and marks).
pub const FAULT_COLOR: &str = "#c62828";

/// Page CSS the charts rely on (legend swatches, figure layout). Pages include it once.
pub const CSS: &str = "\
figure.chart{margin:1.2em 0}\
figure.chart figcaption{margin-bottom:4px}\
.chart-title{font-weight:600;font-size:15px}\
.legend{display:flex;flex-wrap:wrap;gap:2px 16px;font-size:12px;color:#444;margin-top:3px}\
.legend .key{display:inline-flex;align-items:center;gap:5px;white-space:nowrap}\
figure.chart svg.plot{display:block;width:100%;height:auto;background:#fff;border:1px solid #e4e4e4}\
.chart-note{font-size:12px;color:#666;margin:3px 0 0}";

/// A line of a chart. A `None` y is a gap: the line breaks there instead of drawing a
/// straight segment across a time nothing was measured.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, Option<f64>)>,
}

impl Series {
    pub fn new(
        name: &str,
        color: &'static str,
        points: impl IntoIterator<Item = (f64, Option<f64>)>,
    ) -> Series {
        Series {
            name: name.to_string(),
            color,
            dashed: false,
            points: points.into_iter().collect(),
        }
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    fn has_data(&self) -> bool {
        self.points.iter().any(|p| p.1.is_some())
    }
}

/// A vertical marker at `x`: an event without a window (a restart, a scale).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub label: String,
}

/// A shaded span from `from` to `to`: a fault window.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// The `id` of the `<svg>` element (unique on the page; links and tests use it).
    pub id: String,
    pub title: String,
    pub y_label: String,
    pub x_label: String,
    pub x_ticks: Vec<(f64, String)>,
    pub x_max: f64,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
    pub bands: Vec<Band>,
    /// A line under the chart, e.g. what a gap means.
    pub note: Option<String>,
    /// What the marks are, for the legend (`fault event` when empty).
    pub mark_name: String,
}

impl Chart {
    /// Whether any series has a point to draw.
    pub fn has_data(&self) -> bool {
        self.series.iter().any(Series::has_data)
    }
}

/// `0s`, `10s`, ... ticks for a time axis of `secs` seconds.
pub fn time_ticks(secs: f64) -> Vec<(f64, String)> {
    ticks(secs, 10)
        .into_iter()
        .map(|t| (t, format!("{t:.0}s")))
        .collect()
}

/// A placed annotation label: its row in the label strip and where its text starts.
struct Placed {
    row: usize,
    x: f64,
}

/// Puts each label (at its anchor x, with its text) on the first row where it does not
/// overlap the labels already there; labels near the right edge are pulled left.
fn place_labels(labels: &[(f64, &str)]) -> (Vec<Placed>, usize) {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|a, b| labels[*a].0.total_cmp(&labels[*b].0));
    let mut row_end: Vec<f64> = Vec::new();
    let mut placed: Vec<Option<Placed>> = labels.iter().map(|_| None).collect();
    for i in order {
        let (anchor, text) = labels[i];
        let w = CHAR_W * text.chars().count() as f64;
        let x = anchor.min(W - PAD_R - w).max(PAD_L);
        let row = match row_end.iter().position(|end| x > end + 8.0) {
            Some(r) => r,
            None if row_end.len() < MAX_LABEL_ROWS => {
                row_end.push(f64::MIN);
                row_end.len() - 1
            }
            // Out of rows: the last row takes it (may overlap; the table lists them all).
            None => row_end.len() - 1,
        };
        row_end[row] = x + w;
        placed[i] = Some(Placed { row, x });
    }
    let rows = row_end.len();
    (placed.into_iter().flatten().collect(), rows)
}

/// Renders the chart as a `<figure>`: title and legend in HTML, the plot in SVG.
pub fn render(c: &Chart) -> String {
    let y_top = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    // An all-zero chart still gets a readable 0..1 axis rather than a degenerate one.
    let y_max = if y_top > 0.0 { y_top * 1.1 } else { 1.0 };
    let x_max = c.x_max.max(1e-9);
    let x = |v: f64| PAD_L + (v / x_max).clamp(0.0, 1.0) * (W - PAD_L - PAD_R);

    // The annotations' labels decide how tall the strip above the plot is.
    // A band without a label (the span of a fault that also has a mark) gets none.
    let mut anchors: Vec<(f64, &str)> = c
        .bands
        .iter()
        .map(|b| (x(b.from), b.label.as_str()))
        .collect();
    anchors.extend(c.marks.iter().map(|m| (x(m.x), m.label.as_str())));
    anchors.retain(|a| !a.1.is_empty());
    let (placed, rows) = place_labels(&anchors);
    let pad_t = 10.0 + LABEL_ROW * rows as f64;
    let h = pad_t + PLOT_H + PAD_B;
    let bottom = pad_t + PLOT_H;
    let y = |v: f64| bottom - (v / y_max).clamp(0.0, 1.0) * PLOT_H;
    let right = W - PAD_R;

    let mut s = String::new();
    let _ = write!(
        s,
        "<figure class=\"chart\"><figcaption><div class=\"chart-title\">{}</div>{}</figcaption>",
        esc(&c.title),
        legend(c)
    );
    let _ = write!(
        s,
        "<svg class=\"plot\" id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" \
viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{title}\" font-family=\"system-ui,sans-serif\">",
        id = esc(&c.id),
        title = esc(&c.title)
    );
    // Fault windows first, so grid and lines are drawn over the shading.
    for b in &c.bands {
        let (x0, x1) = (x(b.from), x(b.to.max(b.from)));
        let _ = write!(
            s,
            "<rect class=\"fault-window\" x=\"{x0:.1}\" y=\"{pad_t}\" width=\"{:.1}\" height=\"{PLOT_H}\" \
fill=\"{FAULT_COLOR}\" fill-opacity=\"0.12\"><title>{}</title></rect>",
            (x1 - x0).max(1.5),
            esc(&b.label)
        );
    }
    // Grid and y ticks.
    for t in ticks(y_max, 5) {
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" y1=\"{yy:.1}\" x2=\"{right}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
<text x=\"{lx}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            fmt_num(t),
            yy = y(t),
            lx = PAD_L - 5.0,
            ty = y(t) + 3.5
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{PAD_L}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#555\"/>\
<line x1=\"{PAD_L}\" y1=\"{pad_t}\" x2=\"{PAD_L}\" y2=\"{bottom}\" stroke=\"#555\"/>\
<text x=\"14\" y=\"{mid}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\" transform=\"rotate(-90 14 {mid})\">{}</text>",
        esc(&c.y_label),
        mid = pad_t + PLOT_H / 2.0
    );
    for (t, label) in &c.x_ticks {
        let _ = write!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{bottom}\" x2=\"{xx:.1}\" y2=\"{tb}\" stroke=\"#555\"/>\
<text x=\"{xx:.1}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            esc(label),
            xx = x(*t),
            tb = bottom + 4.0,
            ty = bottom + 15.0
        );
    }
    if !c.x_label.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{cx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            esc(&c.x_label),
            cx = PAD_L + (W - PAD_L - PAD_R) / 2.0,
            ty = h - 5.0
        );
    }
    for m in &c.marks {
        let _ = write!(
            s,
            "<line class=\"fault-mark\" x1=\"{xx:.1}\" y1=\"{pad_t}\" x2=\"{xx:.1}\" y2=\"{bottom}\" \
stroke=\"{FAULT_COLOR}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"><title>{}</title></line>",
            esc(&m.label),
            xx = x(m.x)
        );
    }
    // Labels in the strip, each with a thin leader down to its window or mark.
    for ((anchor, text), p) in anchors.iter().zip(&placed) {
        let ty = 10.0 + LABEL_ROW * (p.row as f64 + 1.0) - 3.0;
        let _ = write!(
            s,
            "<line x1=\"{anchor:.1}\" y1=\"{ly:.1}\" x2=\"{anchor:.1}\" y2=\"{pad_t}\" stroke=\"{FAULT_COLOR}\" stroke-opacity=\"0.5\"/>\
<text class=\"fault-label\" x=\"{:.1}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"{FAULT_COLOR}\">{}</text>",
            p.x,
            esc(text),
            ly = ty + 2.0
        );
    }
    for ser in c.series.iter().filter(|s| s.has_data()) {
        let dash = if ser.dashed {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        // One polyline per run of points without a gap; a lone point is a dot.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        // Points outside the axis are left out (clamped, they would pile up on the frame).
        for (px, py) in ser.points.iter().filter(|p| (0.0..=x_max).contains(&p.0)) {
            match py {
                Some(v) => runs.last_mut().expect("one run").push((x(*px), y(*v))),
                None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                None => {}
            }
        }
        let _ = write!(s, "<g><title>{}</title>", esc(&ser.name));
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if let [(cx, cy)] = run[..] {
                let _ = write!(
                    s,
                    "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"2\" fill=\"{}\"/>",
                    ser.color
                );
                continue;
            }
            let pts: Vec<String> = run
                .iter()
                .map(|p| format!("{:.1},{:.1}", p.0, p.1))
                .collect();
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" stroke-linejoin=\"round\"{dash} points=\"{}\"/>",
                ser.color,
                pts.join(" ")
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    if let Some(n) = &c.note {
        let _ = write!(s, "<p class=\"chart-note\">{}</p>", esc(n));
    }
    s.push_str("</figure>");
    s
}

/// The legend: one key per series with data, and keys for the fault annotations present.
fn legend(c: &Chart) -> String {
    let key = |swatch: String, name: &str| {
        format!(
            "<span class=\"key\"><svg width=\"24\" height=\"10\" aria-hidden=\"true\">{swatch}</svg>{}</span>",
            esc(name)
        )
    };
    let mut keys: Vec<String> = c
        .series
        .iter()
        .filter(|s| s.has_data())
        .map(|s| {
            let dash = if s.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            key(
                format!(
                    "<line x1=\"0\" y1=\"5\" x2=\"24\" y2=\"5\" stroke=\"{}\" stroke-width=\"2.5\"{dash}/>",
                    s.color
                ),
                &s.name,
            )
        })
        .collect();
    if !c.bands.is_empty() {
        keys.push(key(
            format!(
                "<rect width=\"24\" height=\"10\" fill=\"{FAULT_COLOR}\" fill-opacity=\"0.18\"/>"
            ),
            "fault window",
        ));
    }
    if !c.marks.is_empty() {
        keys.push(key(
            format!("<line x1=\"12\" y1=\"0\" x2=\"12\" y2=\"10\" stroke=\"{FAULT_COLOR}\" stroke-width=\"2\" stroke-dasharray=\"3 2\"/>"),
            if c.mark_name.is_empty() {
                "fault event"
            } else {
                &c.mark_name
            },
        ));
    }
    format!("<div class=\"legend\">{}</div>", keys.concat())
}

/// About `n` round tick values from 0 to `max`.
pub fn ticks(max: f64, n: usize) -> Vec<f64> {
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

/// A tick value: whole numbers without decimals, small fractions with two.
pub fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            id: "chart-t".into(),
            title: "Rate <per> second".into(),
            y_label: "req/s".into(),
            x_max: 10.0,
            x_ticks: time_ticks(10.0),
            series: vec![Series::new(
                "ok/s",
                "#2ca02c",
                [
                    (0.5, Some(1.0)),
                    (1.5, None),
                    (2.5, Some(3.0)),
                    (3.5, Some(2.0)),
                ],
            )],
            bands: vec![Band {
                from: 2.0,
                to: 5.0,
                label: "pause consumer#1".into(),
            }],
            marks: vec![Mark {
                x: 7.0,
                label: "restart kafka#1".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 5), vec![0.0]);
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(250.0), "250");
    }

    #[test]
    fn title_and_legend_are_html_above_the_plot() {
        let html = render(&chart());
        let caption = html.find("<figcaption>").unwrap();
        let plot = html.find("<svg class=\"plot\" id=\"chart-t\"").unwrap();
        assert!(caption < plot, "{html}");
        // The legend sits inside the caption, before the plot: it cannot overlap the title.
        let legend = html.find("class=\"legend\"").unwrap();
        assert!(caption < legend && legend < plot, "{html}");
        assert!(html.contains("Rate &lt;per&gt; second"), "{html}");
        assert!(html.contains(">fault window</span>"), "{html}");
        assert!(html.contains(">fault event</span>"), "{html}");
    }

    #[test]
    fn faults_are_shaded_and_marked_and_gaps_break_lines() {
        let html = render(&chart());
        assert_eq!(html.matches("class=\"fault-window\"").count(), 1);
        assert_eq!(html.matches("class=\"fault-mark\"").count(), 1);
        assert!(html.contains(">pause consumer#1</text>"), "{html}");
        assert!(html.contains(">restart kafka#1</text>"), "{html}");
        // The gap at 1.5 s splits the line: a dot, then a two-point polyline.
        assert_eq!(html.matches("<circle").count(), 1, "{html}");
        assert_eq!(html.matches("<polyline").count(), 1, "{html}");
    }

    #[test]
    fn overlapping_labels_take_separate_rows() {
        let (p, rows) = place_labels(&[(100.0, "pause consumer#1"), (110.0, "kill api#1")]);
        assert_eq!(rows, 2);
        assert_ne!(p[0].row, p[1].row);
        let (p, rows) = place_labels(&[(100.0, "a"), (600.0, "b")]);
        assert_eq!((rows, p[0].row, p[1].row), (1, 0, 0));
        // A label at the right edge is pulled in, not clipped.
        let (p, _) = place_labels(&[(W - PAD_R, "a long label near the edge")]);
        assert!(p[0].x + CHAR_W * 26.0 <= W - PAD_R + 0.1);
    }
}
