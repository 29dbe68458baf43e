//! `report.md`: the summary, find-max steps, verify result and events as Markdown tables.

use std::fmt::Write as _;

use wiber_model::report::{Percentiles, Report};

use super::opt;

pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut md = String::new();
    let _ = writeln!(md, "# wiber bench `{}` (run {})\n", r.run.name, r.run.id);
    let _ = writeln!(
        md,
        "Started {}, mode `{}`, {} conversations, {} B messages, {} connections, warm-up {} ms, window {} ms, API {}.\n",
        wiber_model::rfc3339_ms(r.run.started_ms),
        r.config.mode,
        r.config.conversations,
        r.config.size,
        r.config.connections,
        r.config.warmup_ms,
        r.config.duration_ms,
        r.config.api_url
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| target rate | goodput (ok/s) | answered/s | sent | ok | failed | unknown | not started | retried |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
        opt(s.target_rate),
        s.achieved_rate,
        s.answered_rate,
        s.sent,
        s.ok,
        s.failed,
        s.unknown,
        s.not_started,
        s.retried
    );
    let _ = writeln!(
        md,
        "| latency (ms) | p50 | p90 | p99 | p99.9 | max | count |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    let row = |md: &mut String, name: &str, p: &Percentiles| {
        if p.count == 0 {
            // Zeros would read as "instant": an empty histogram has no latency.
            let _ = writeln!(md, "| {name} | - | - | - | - | - | 0 |");
            return;
        }
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        );
    };
    row(&mut md, "ack, ok only (from due time)", &s.ack_ms);
    row(&mut md, "service, ok only (from send)", &s.service_ms);
    row(&mut md, "failed+unknown (from due time)", &s.error_ms);
    row(&mut md, "start delay", &s.start_delay_ms);
    match &s.e2e_ms {
        Some(p) => row(&mut md, "end-to-end (to storedAt)", p),
        None => {
            let _ = writeln!(md, "| end-to-end | not measured | | | | | |");
        }
    }
    md.push('\n');
    if !s.errors.is_empty() {
        let _ = writeln!(md, "Errors by kind: {}\n", join_map(s.errors.iter()));
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
        let _ = writeln!(
            md,
            "| target/s | goodput ok/s | answered/s | ok | failed | unknown | not started | ok ack p99 ms | SLO |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for st in &f.steps {
            let _ = writeln!(
                md,
                "| {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
                st.target_rate,
                st.achieved_rate,
                st.answered_rate,
                st.ok,
                st.failed,
                st.unknown,
                st.not_started,
                if st.ack_ms.count == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", st.ack_ms.p99)
                },
                if st.pass {
                    "met".to_string()
                } else {
                    format!("missed: {}", st.reasons.join("; "))
                }
            );
        }
        md.push('\n');
    }
    if let Some(v) = &r.verify {
        let c = &v.counts;
        let _ = writeln!(md, "## Verify: **{}**\n", v.verdict.name().to_uppercase());
        if let Some(e) = &v.error {
            let _ = writeln!(md, "> {e}\n");
        }
        let _ = writeln!(md, "| ledger ok | failed | unknown | stored | lost | duplicated | unexpected | corrupted | reordered | recovered | indeterminate |");
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.ledger_ok,
            c.ledger_failed,
            c.ledger_unknown,
            c.stored,
            c.lost,
            c.duplicated,
            c.unexpected,
            c.corrupted,
            c.reordered,
            super::with_share(c.recovered, c.share_of_unknown(c.recovered)),
            super::with_share(c.indeterminate, c.share_of_unknown(c.indeterminate))
        );
        if c.ledger_unknown > 0 {
            let _ = writeln!(
                md,
                "Of the `unknown` outcomes, recovered were stored and indeterminate were not (percentages of `unknown`).\n"
            );
        }
        for (kind, exs) in &v.examples {
            let _ = writeln!(md, "### {kind} (first {})\n", exs.len());
            for e in exs {
                let _ = writeln!(
                    md,
                    "- `{}`{} conversation {} seq {} partition {} offset {}: {}",
                    e.message_id,
                    e.doc_id
                        .as_ref()
                        .map(|d| format!(" (_id `{d}`)"))
                        .unwrap_or_default(),
                    e.conversation.map_or("-".into(), |v| v.to_string()),
                    e.seq.map_or("-".into(), |v| v.to_string()),
                    e.partition.map_or("-".into(), |v| v.to_string()),
                    e.offset.map_or("-".into(), |v| v.to_string()),
                    e.detail
                );
            }
            md.push('\n');
        }
    }
    if !r.events.is_empty() {
        let _ = writeln!(md, "## Fault events\n");
        let _ = writeln!(md, "| time | +s | action | target | result |");
        let _ = writeln!(md, "|---|---:|---|---|---|");
        for e in &r.events {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {} | {} | {} |",
                wiber_model::rfc3339_ms(e.time_ms),
                (e.time_ms - r.run.measured_from_ms) as f64 / 1000.0,
                e.action,
                e.target,
                e.result
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Files: `ledger.jsonl`, `report.json` ({}), `report.html`, `ack.hgrm`, `e2e.hgrm`.",
        r.schema
    );
    md
}

fn join_map<'a>(it: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    it.map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
