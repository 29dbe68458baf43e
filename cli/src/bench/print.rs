//! Rendering a bench result: the summary table for people, JSON for scripts. Nothing
//! here measures; it only reads the [`Report`].

use comfy_table::Table;
use serde::Serialize;
use wiber_model::report::{FindMax, Percentiles, Report, Resources, Summary};

use crate::output;

/// `--json` output: the report's summary (one definition, `wiber_model::report::Summary`)
/// plus the run id, the `--find-max` result and where the report is.
#[derive(Serialize)]
pub struct BenchJson<'a> {
    pub run_id: &'a str,
    #[serde(flatten)]
    pub summary: &'a Summary,
    pub find_max: Option<&'a FindMax>,
    /// CPU and memory per service (and of the generator) over the run.
    pub resources: Option<&'a Resources>,
    pub report_dir: &'a str,
}

pub fn json(r: &Report) -> BenchJson<'_> {
    BenchJson {
        run_id: &r.run.id,
        summary: &r.summary,
        find_max: r.find_max.as_ref(),
        resources: r.resources.as_ref(),
        report_dir: &r.run.dir,
    }
}

/// The final summary: rate and outcome counts, then latencies, then errors by kind.
/// The achieved rate is goodput (ok answers per second) and says so; ack and service
/// latency are of ok answers only, error latency of the rest.
pub fn summary_table(r: &Report) -> String {
    let s = &r.summary;
    let mut counts = output::table(&[
        "target rate",
        "goodput (ok/s)",
        "answered/s",
        "ok",
        "failed",
        "unknown",
        "not started",
        "retried",
    ]);
    let achieved = match s.target_rate {
        Some(t) if t > 0.0 => format!(
            "{:.1} ok/s ({:.1}% of target)",
            s.achieved_rate,
            100.0 * s.achieved_rate / t
        ),
        _ => format!("{:.1} ok/s", s.achieved_rate),
    };
    counts.add_row(vec![
        s.target_rate
            .map_or("closed loop".into(), |t| format!("{t:.0}/s")),
        achieved,
        format!("{:.1}/s", s.answered_rate),
        s.ok.to_string(),
        s.failed.to_string(),
        s.unknown.to_string(),
        s.not_started.to_string(),
        s.retried.to_string(),
    ]);
    let mut lat = output::table(&["latency (ms)", "p50", "p90", "p99", "p99.9", "max", "count"]);
    let mut row = |name: &str, p: &Percentiles| {
        if p.count == 0 {
            // Zeros would read as "instant": an empty histogram has no latency.
            lat.add_row(vec![name, "-", "-", "-", "-", "-", "0"]);
            return;
        }
        lat.add_row(vec![
            name.to_string(),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            p.count.to_string(),
        ]);
    };
    row("ack, ok only (from due time)", &s.ack_ms);
    row("service, ok only (from send)", &s.service_ms);
    row("failed+unknown (from due time)", &s.error_ms);
    row("start delay", &s.start_delay_ms);
    match &s.e2e_ms {
        Some(p) => row("end-to-end (to storedAt)", p),
        None => {
            lat.add_row(vec!["end-to-end", "not measured"]);
        }
    }
    let mut out = format!("{counts}\n{lat}\n");
    if s.e2e_missing > 0 {
        out.push_str(&format!("ok but not found in MongoDB: {}\n", s.e2e_missing));
    }
    let errors = if s.errors.is_empty() {
        "none".to_string()
    } else {
        s.errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("errors by kind: {errors}"));
    if let Some(data) = crate::report::tables::reads(&s.reads) {
        // The same rows as the report's reads table.
        let header: Vec<&str> = data.header.iter().map(String::as_str).collect();
        let mut t = output::table(&header);
        for row in data.rows {
            t.add_row(row);
        }
        out.push_str(&format!(
            "\nreads (latency of ok reads, from due time):\n{t}"
        ));
        // Failed reads are never a footnote: one line that says how many, by kind.
        let failed: Vec<String> = s
            .reads
            .iter()
            .filter(|(_, r)| r.errors > 0)
            .map(|(k, r)| format!("{k} {} of {}", r.errors, r.sent))
            .collect();
        if !failed.is_empty() {
            out.push_str(&format!("\nREAD ERRORS: {}", failed.join(", ")));
        }
    }
    if let Some(res) = &r.resources {
        // The same rows as the report's table.
        let data = crate::report::tables::resources(res);
        let header: Vec<&str> = data.header.iter().map(String::as_str).collect();
        let mut t = output::table(&header);
        for row in data.rows {
            t.add_row(row);
        }
        out.push_str(&format!("\nwhere the cores went ({}):\n{t}", res.source));
        for n in &res.notes {
            out.push_str(&format!("\n{n}"));
        }
    }
    out
}

/// The `--find-max` steps.
pub fn find_max_table(f: &FindMax) -> Table {
    let mut t = output::table(&[
        "target/s",
        "goodput ok/s",
        "answered/s",
        "ok",
        "failed",
        "unknown",
        "not started",
        "ok ack p99 ms",
        "SLO",
    ]);
    for s in &f.steps {
        t.add_row(vec![
            format!("{:.0}", s.target_rate),
            format!("{:.1}", s.achieved_rate),
            format!("{:.1}", s.answered_rate),
            s.ok.to_string(),
            s.failed.to_string(),
            s.unknown.to_string(),
            s.not_started.to_string(),
            if s.ack_ms.count == 0 {
                "-".to_string()
            } else {
                ms(s.ack_ms.p99)
            },
            if s.pass {
                "met".to_string()
            } else {
                format!("missed: {}", s.reasons.join("; "))
            },
        ]);
    }
    t
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
