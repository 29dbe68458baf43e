//! The report's tables as data, rendered both as Markdown (`report.md`) and as HTML
//! (`report.html`, and the scenario page for verify's counts and examples): one place
//! computes each cell, so the two files cannot disagree about a number.

use std::fmt::Write as _;

use wiber_model::report::{
    EventMark, Example, FindMax, Percentiles, ReadKind, ReadSummary, Resources, Summary,
    VerifyCounts,
};

use super::esc;
use super::{opt, with_share};

/// A table: a header, rows of cells, and which columns are numbers (right-aligned).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// `cols` are `(name, numeric)`.
    pub fn new(cols: &[(&str, bool)]) -> Table {
        Table {
            header: cols.iter().map(|c| c.0.to_string()).collect(),
            numeric: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let mut s = format!(
            "| {} |\n|{}|\n",
            self.header
                .iter()
                .map(|h| cell(h))
                .collect::<Vec<_>>()
                .join(" | "),
            self.numeric
                .iter()
                .map(|n| if *n { "---:" } else { "---" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        s
    }

    /// The table as HTML; every cell is escaped. `class` goes on the `<table>`.
    pub fn html(&self, class: &str) -> String {
        let mut s = format!("<table class=\"{}\"><thead><tr>", esc(class));
        for (h, n) in self.header.iter().zip(&self.numeric) {
            let _ = write!(s, "<th{}>{}</th>", num_class(*n), esc(h));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            s.push_str("<tr>");
            for (i, c) in r.iter().enumerate() {
                let n = self.numeric.get(i).copied().unwrap_or(false);
                let _ = write!(s, "<td{}>{}</td>", num_class(n), esc(c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>");
        s
    }
}

fn num_class(numeric: bool) -> &'static str {
    if numeric {
        " class=\"num\""
    } else {
        ""
    }
}

/// Where the cores and the memory went: one row per service, the generator last.
pub fn resources(r: &Resources) -> Table {
    let mut t = Table::new(&[
        ("service", false),
        ("instances", true),
        ("mean cores", true),
        ("peak cores", true),
        ("CPU share", true),
        ("mean RSS (MiB)", true),
        ("peak RSS (MiB)", true),
    ]);
    let cores = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.2}"));
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    for s in &r.services {
        t.row(vec![
            s.service.clone(),
            s.instances.to_string(),
            cores(s.mean_cores),
            cores(s.peak_cores),
            s.cpu_share_pct.map_or("-".into(), |p| format!("{p:.0}%")),
            mib(s.mean_rss_bytes),
            mib(s.peak_rss_bytes),
        ]);
    }
    t.row(vec![
        "total".into(),
        String::new(),
        format!("{:.2}", r.total_mean_cores),
        String::new(),
        "100%".into(),
        String::new(),
        String::new(),
    ]);
    t
}

/// Rates and outcome counts of the measured window.
pub fn summary(s: &Summary) -> Table {
    let mut t = Table::new(&[
        ("target rate", true),
        ("goodput (ok/s)", true),
        ("answered/s", true),
        ("sent", true),
        ("ok", true),
        ("failed", true),
        ("unknown", true),
        ("not started", true),
        ("retried", true),
        ("in flight, peak / cap", true),
    ]);
    t.row(vec![
        opt(s.target_rate),
        format!("{:.1}", s.achieved_rate),
        format!("{:.1}", s.answered_rate),
        s.sent.to_string(),
        s.ok.to_string(),
        s.failed.to_string(),
        s.unknown.to_string(),
        s.not_started.to_string(),
        s.retried.to_string(),
        // A cap of 0: a report written before the generator recorded it.
        if s.in_flight_cap == 0 {
            "-".into()
        } else {
            format!("{} / {}", s.peak_in_flight, s.in_flight_cap)
        },
    ]);
    t
}

/// One row per latency family.
pub fn latency(s: &Summary) -> Table {
    let mut t = Table::new(&[
        ("latency (ms)", false),
        ("p50", true),
        ("p90", true),
        ("p99", true),
        ("p99.9", true),
        ("max", true),
        ("count", true),
    ]);
    let mut row = |name: &str, p: Option<&Percentiles>| {
        let cells = match p {
            None => vec!["not measured".to_string()],
            // Zeros would read as "instant": an empty histogram has no latency.
            Some(p) if p.count == 0 => vec!["-".into(); 5],
            Some(p) => [p.p50, p.p90, p.p99, p.p999, p.max]
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect(),
        };
        let mut r = vec![name.to_string()];
        r.extend(cells);
        // "not measured" fills one cell; pad so every row has every column.
        while r.len() < 6 {
            r.push(String::new());
        }
        r.push(p.map_or(String::new(), |p| p.count.to_string()));
        t.row(r);
    };
    row("ack, ok only (from due time)", Some(&s.ack_ms));
    row("service, ok only (from send)", Some(&s.service_ms));
    row("failed+unknown (from due time)", Some(&s.error_ms));
    row("start delay", Some(&s.start_delay_ms));
    match &s.e2e_ms {
        Some(p) => row("end-to-end (to storedAt)", Some(p)),
        None => row("end-to-end", None),
    }
    t
}

/// One row per kind of read: how many, how many were ok or not, the rate achieved and
/// the latency of the ok reads (from their due time). `None` when the run did not read.
pub fn reads(reads: &std::collections::BTreeMap<ReadKind, ReadSummary>) -> Option<Table> {
    if reads.is_empty() {
        return None;
    }
    let mut t = Table::new(&[
        ("reads", false),
        ("count", true),
        ("ok", true),
        ("errors", true),
        ("not started", true),
        ("ok/s (target)", true),
        ("p50 ms", true),
        ("p90 ms", true),
        ("p99 ms", true),
        ("p99.9 ms", true),
        ("max ms", true),
        ("errors by kind", false),
    ]);
    for (kind, r) in reads {
        let p = &r.latency_ms;
        // No ok read, no latency: dashes, not zeros that would read as instant.
        let lat = |v: f64| {
            if p.count == 0 {
                "-".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        let by = r
            .errors_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            kind.to_string(),
            r.sent.to_string(),
            r.ok.to_string(),
            r.errors.to_string(),
            r.not_started.to_string(),
            format!("{:.1} ({:.0})", r.achieved_rate, r.target_rate),
            lat(p.p50),
            lat(p.p90),
            lat(p.p99),
            lat(p.p999),
            lat(p.max),
            if by.is_empty() { "none".into() } else { by },
        ]);
    }
    Some(t)
}

/// The steps of `--find-max`.
pub fn find_max(f: &FindMax) -> Table {
    let mut t = Table::new(&[
        ("target/s", true),
        ("goodput ok/s", true),
        ("answered/s", true),
        ("ok", true),
        ("failed", true),
        ("unknown", true),
        ("not started", true),
        ("ok ack p99 ms", true),
        ("SLO", false),
    ]);
    for st in &f.steps {
        t.row(vec![
            format!("{:.0}", st.target_rate),
            format!("{:.1}", st.achieved_rate),
            format!("{:.1}", st.answered_rate),
            st.ok.to_string(),
            st.failed.to_string(),
            st.unknown.to_string(),
            st.not_started.to_string(),
            if st.ack_ms.count == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", st.ack_ms.p99)
            },
            if st.pass {
                "met".to_string()
            } else {
                format!("missed: {}", st.reasons.join("; "))
            },
        ]);
    }
    t
}

/// Verify's counts: the ledger, what was stored, the invariants.
pub fn verify_counts(c: &VerifyCounts) -> Table {
    let mut t = Table::new(&[
        ("ledger ok", true),
        ("failed", true),
        ("unknown", true),
        ("stored", true),
        ("lost", true),
        ("duplicated", true),
        ("unexpected", true),
        ("corrupted", true),
        ("reordered", true),
        ("dead-lettered", true),
        ("stalled", true),
        ("conflicts", true),
        ("recovered", true),
        ("indeterminate", true),
    ]);
    t.row(vec![
        c.ledger_ok.to_string(),
        c.ledger_failed.to_string(),
        c.ledger_unknown.to_string(),
        c.stored.to_string(),
        c.lost.to_string(),
        c.duplicated.to_string(),
        c.unexpected.to_string(),
        c.corrupted.to_string(),
        c.reordered.to_string(),
        c.dead_lettered.to_string(),
        c.stalled.to_string(),
        c.conflicts.to_string(),
        with_share(c.recovered, c.share_of_unknown(c.recovered)),
        with_share(c.indeterminate, c.share_of_unknown(c.indeterminate)),
    ]);
    t
}

/// Verify's examples of one kind (`lost`, `duplicated`, ...).
pub fn examples(exs: &[Example]) -> Table {
    let mut t = Table::new(&[
        ("message id", false),
        ("_id", false),
        ("conversation", true),
        ("seq", true),
        ("partition", true),
        ("offset", true),
        ("detail", false),
    ]);
    let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for e in exs {
        t.row(vec![
            e.message_id.clone(),
            o(e.doc_id.clone()),
            o(e.conversation.map(|v| v.to_string())),
            o(e.seq.map(|v| v.to_string())),
            o(e.partition.map(|v| v.to_string())),
            o(e.offset.map(|v| v.to_string())),
            e.detail.clone(),
        ]);
    }
    t
}

/// Fault events, with their offset from `from_ms` (the start of the measured window).
pub fn events(events: &[EventMark], from_ms: i64) -> Table {
    let mut t = Table::new(&[
        ("time", false),
        ("+s", true),
        ("action", false),
        ("target", false),
        ("result", false),
    ]);
    for e in events {
        t.row(vec![
            wiber_model::rfc3339_ms(e.time_ms),
            format!("{:.1}", (e.time_ms - from_ms) as f64 / 1000.0),
            e.action.clone(),
            e.target.clone(),
            e.result.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_two_renderings() {
        let mut t = Table::new(&[("name", false), ("n", true)]);
        t.row(vec!["a|b <x>".into(), "3".into()]);
        assert_eq!(
            t.markdown(),
            "| name | n |\n|---|---:|\n| a\\|b <x> | 3 |\n"
        );
        let html = t.html("details");
        assert!(
            html.contains("<td>a|b &lt;x&gt;</td><td class=\"num\">3</td>"),
            "{html}"
        );
        assert!(html.starts_with("<table class=\"details\">"), "{html}");
    }

    #[test]
    fn an_empty_histogram_is_no_latency_and_a_missing_one_is_not_measured() {
        let s = Summary {
            target_rate: None,
            achieved_rate: 0.0,
            answered_rate: 0.0,
            sent: 0,
            ok: 0,
            failed: 0,
            unknown: 0,
            not_started: 0,
            retried: 0,
            errors: Default::default(),
            ack_ms: Percentiles::default(),
            error_ms: Percentiles::default(),
            service_ms: Percentiles::default(),
            start_delay_ms: Percentiles::default(),
            e2e_ms: None,
            e2e_missing: 0,
            warnings: Vec::new(),
            peak_in_flight: 0,
            in_flight_cap: 0,
            generator_bound: false,
            reads: Default::default(),
        };
        assert!(reads(&s.reads).is_none());
        let md = latency(&s).markdown();
        assert!(
            md.contains("| ack, ok only (from due time) | - | - | - | - | - | 0 |"),
            "{md}"
        );
        assert!(md.contains("| end-to-end | not measured |"), "{md}");
        assert!(latency(&s).rows.iter().all(|r| r.len() == 7));
    }
}
