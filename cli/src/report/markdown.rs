//! `report.md`: the summary, find-max steps, verify result and events as Markdown tables
//! (the tables of [`super::tables`], which `report.html` renders as HTML).

use std::fmt::Write as _;

use wiber_model::report::Report;

use super::{opt, tables};

pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut md = String::new();
    let _ = writeln!(md, "# wiber bench `{}` (run {})\n", r.run.name, r.run.id);
    let _ = writeln!(md, "{}\n", super::run_line(r));
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "{}", tables::summary(s).markdown());
    let _ = writeln!(md, "{}", tables::latency(s).markdown());
    if let Some(t) = tables::reads(&s.reads) {
        let _ = writeln!(md, "### Reads\n");
        if let Some(c) = &r.config.reads {
            let _ = writeln!(md, "{}\n", super::reads_line(c));
        }
        let _ = writeln!(md, "{}", t.markdown());
    }
    if !s.errors.is_empty() {
        let _ = writeln!(md, "Errors by kind: {}\n", super::errors_by_kind(s));
    }
    for w in &s.warnings {
        let _ = writeln!(md, "> **warning:** {w}\n");
    }
    if let Some(f) = &r.find_max {
        let _ = writeln!(md, "## Find max (SLO `{}`)\n", f.slo);
        let _ = writeln!(
            md,
            "Highest rate meeting the SLO: **{}**\n",
            opt(f.best_rate)
        );
        let _ = writeln!(md, "{}", tables::find_max(f).markdown());
    }
    if let Some(v) = &r.verify {
        let c = &v.counts;
        let _ = writeln!(md, "## Verify: **{}**\n", v.verdict.name().to_uppercase());
        if let Some(e) = &v.error {
            let _ = writeln!(md, "> {e}\n");
        }
        let _ = writeln!(md, "{}", tables::verify_counts(c).markdown());
        if c.ledger_unknown > 0 {
            let _ = writeln!(md, "{}\n", super::UNKNOWN_NOTE);
        }
        for n in &v.notes {
            let _ = writeln!(md, "- {n}");
        }
        if !v.notes.is_empty() {
            md.push('\n');
        }
        for (kind, exs) in &v.examples {
            let _ = writeln!(md, "### {kind} (first {})\n", exs.len());
            let _ = writeln!(md, "{}", tables::examples(exs).markdown());
        }
    }
    if let Some(res) = &r.resources {
        let _ = writeln!(md, "## Where the cores went ({})\n", res.source);
        let _ = writeln!(md, "{}", tables::resources(res).markdown());
        for n in &res.notes {
            let _ = writeln!(md, "> {n}\n");
        }
    }
    if !r.events.is_empty() {
        let _ = writeln!(md, "## Fault events\n");
        let _ = writeln!(
            md,
            "{}",
            tables::events(&r.events, r.run.measured_from_ms).markdown()
        );
    }
    let _ = writeln!(
        md,
        "Files: `ledger.jsonl`, `report.json` ({}), `report.html`, `ack.hgrm`, `e2e.hgrm`{}.",
        r.schema,
        if s.reads.is_empty() {
            ""
        } else {
            ", `reads.jsonl`, `reads-<kind>.hgrm`"
        }
    );
    md
}
