//! Report writers: `report.json` (schema `wiber.report.v1`, checked in at
//! `cli/schema/report.v1.schema.json`), `report.md` and a self-contained `report.html`
//! (inline SVG, no scripts, nothing fetched from the network). All three render the same
//! [`Report`], so `verify` can add its verdict and re-render them.
//!
//! The pieces the scenario page (`scenario::html`) reuses live here too: [`chart`] (the
//! SVG line charts, fault windows and marks), [`tables`] (each table once, rendered as
//! Markdown or HTML), [`html::page_start`] (page frame and style) and [`esc`].

pub mod chart;
pub mod html;
pub mod markdown;
pub mod tables;

use std::path::Path;

use anyhow::Context;
use wiber_model::report::Report;

/// Writes `report.json`, `report.md` and `report.html` into `dir`.
pub fn write_all(dir: &Path, report: &Report) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(report).expect("reports serialise"),
    )?;
    write("report.md", markdown::render(report))?;
    write("report.html", html::render(report))
}

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What explains `recovered` and `indeterminate` next to verify's counts.
pub const UNKNOWN_NOTE: &str = "Of the unknown outcomes, recovered were stored and indeterminate were not (percentages of unknown).";

/// How a bench run was driven, in one sentence.
pub fn run_line(r: &Report) -> String {
    format!(
        "Started {}, mode {}, {} conversations, {} B messages, {} connections, warm-up {} ms, window {} ms, API {}.",
        wiber_model::rfc3339_ms(r.run.started_ms),
        r.config.mode,
        r.config.conversations,
        r.config.size,
        r.config.connections,
        r.config.warmup_ms,
        r.config.duration_ms,
        r.config.api_url
    )
}

/// What the reads read, in one sentence.
pub fn reads_line(c: &wiber_model::report::ReadsConfig) -> String {
    let rates: Vec<String> = c.rates.iter().map(|(k, r)| format!("{k} {r}/s")).collect();
    let from = match c.source {
        wiber_model::report::ReadSource::Run => {
            "the run's own conversations and users (pages of what each had acknowledged)".to_string()
        }
        wiber_model::report::ReadSource::Fixture {
            conversations,
            messages,
        } => format!(
            "the fixture's {conversations} conversations of {messages} messages (`wiberctl store fill`)"
        ),
    };
    format!(
        "Reads at {}, of {from}, pages of {}; latency of ok reads from their due time.",
        rates.join(", "),
        c.page
    )
}

/// `timeout 3, http_503 12`.
pub fn errors_by_kind(s: &wiber_model::report::Summary) -> String {
    s.errors
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `12.3` for a rate, `-` when absent.
pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

/// A count with its share, `12 (40.0%)`; just the count when there is no share.
pub fn with_share(n: u64, share: Option<f64>) -> String {
    match share {
        Some(f) => format!("{n} ({:.1}%)", 100.0 * f),
        None => n.to_string(),
    }
}

/// A bench report with every part filled, for the writers' tests (and the scenario
/// page's, which reads load segments' reports).
#[cfg(test)]
pub(crate) fn sample_report(name: &str, measured_from_ms: i64, seconds: u32) -> Report {
    use std::collections::BTreeMap;
    use wiber_model::report::*;
    let p = |p50: f64| Percentiles {
        count: 100,
        mean: p50,
        p50,
        p90: p50 * 2.0,
        p99: p50 * 4.0,
        p999: p50 * 5.0,
        max: p50 * 6.0,
    };
    let example = Example {
        message_id: format!("{name}-c1-s7"),
        doc_id: None,
        conversation: Some(1),
        seq: Some(7),
        partition: Some(0),
        offset: Some(42),
        detail: "acknowledged but not stored".into(),
    };
    Report {
        schema: wiber_model::report::SCHEMA.into(),
        run: RunInfo {
            id: "r1".into(),
            name: name.into(),
            started_ms: measured_from_ms,
            measured_from_ms,
            ended_ms: measured_from_ms + seconds as i64 * 1000,
            dir: "/tmp/run".into(),
            wiberctl_version: "0".into(),
        },
        config: BenchConfigRecord {
            mode: "open".into(),
            target_rate: Some(100.0),
            duration_ms: seconds as u64 * 1000,
            warmup_ms: 0,
            conversations: 4,
            size: 64,
            connections: 8,
            retries: 0,
            timeout_ms: 5000,
            api_url: "http://127.0.0.1:1".into(),
            reads: Some(ReadsConfig {
                rates: BTreeMap::from([(ReadKind::Conversation, 20.0), (ReadKind::Count, 5.0)]),
                source: ReadSource::Run,
                page: 50,
            }),
        },
        summary: Summary {
            target_rate: Some(100.0),
            achieved_rate: 95.0,
            answered_rate: 100.0,
            sent: 100 * seconds as u64,
            ok: 95 * seconds as u64,
            failed: 0,
            unknown: 5 * seconds as u64,
            not_started: 0,
            retried: 0,
            errors: BTreeMap::from([("http_503".to_string(), 5 * seconds as u64)]),
            ack_ms: p(10.0),
            error_ms: p(2.0),
            service_ms: p(9.0),
            start_delay_ms: p(0.1),
            e2e_ms: Some(p(30.0)),
            e2e_missing: 0,
            warnings: vec!["the generator <fell> behind".into()],
            peak_in_flight: 8,
            in_flight_cap: 1024,
            generator_bound: false,
            reads: BTreeMap::from([
                (
                    ReadKind::Conversation,
                    ReadSummary {
                        target_rate: 20.0,
                        sent: 20 * seconds as u64,
                        ok: 20 * seconds as u64,
                        achieved_rate: 20.0,
                        answered_rate: 20.0,
                        latency_ms: p(3.0),
                        ..Default::default()
                    },
                ),
                (
                    ReadKind::Count,
                    ReadSummary {
                        target_rate: 5.0,
                        sent: 5 * seconds as u64,
                        ok: 4 * seconds as u64,
                        errors: seconds as u64,
                        errors_by_kind: BTreeMap::from([("http_503".to_string(), seconds as u64)]),
                        achieved_rate: 4.0,
                        answered_rate: 5.0,
                        latency_ms: p(1.0),
                        error_ms: p(0.5),
                        ..Default::default()
                    },
                ),
            ]),
        },
        timeline: (0..seconds)
            .map(|t| Second {
                t,
                answered: 100,
                ok: if (4..7).contains(&t) { 60 } else { 100 },
                errors: if (4..7).contains(&t) { 40 } else { 0 },
                ack_p50: Some(10.0),
                ack_p99: (t != 5).then_some(40.0),
                e2e_p50: Some(30.0),
                e2e_p99: Some(if (4..7).contains(&t) { 900.0 } else { 80.0 }),
                reads_ok: 24,
                reads_errors: 1,
            })
            .collect(),
        distribution: Distribution {
            ack: vec![[50.0, 10.0], [99.0, 40.0], [100.0, 60.0]],
            e2e: vec![[50.0, 30.0], [99.0, 120.0]],
            reads: BTreeMap::from([(ReadKind::Conversation, vec![[50.0, 3.0], [99.0, 12.0]])]),
        },
        events: vec![EventMark {
            time_ms: measured_from_ms + 4000,
            action: "pause".into(),
            target: "consumer#1".into(),
            result: "ok".into(),
        }],
        find_max: None,
        verify: Some(VerifyReport {
            verdict: Verdict::Fail,
            checked_ms: measured_from_ms + 20_000,
            drained: true,
            lag_remaining: Some(0),
            counts: VerifyCounts {
                ledger_ok: 95,
                ledger_unknown: 5,
                stored: 98,
                lost: 1,
                recovered: 4,
                indeterminate: 1,
                ..Default::default()
            },
            examples: BTreeMap::from([("lost".to_string(), vec![example])]),
            error: None,
            notes: vec!["order read back through the API".into()],
        }),
        resources: Some(Resources {
            every_s: 1.0,
            source: "local".into(),
            services: ["kafka", "generator"]
                .iter()
                .map(|name| ServiceResources {
                    service: name.to_string(),
                    instances: 1,
                    mean_cores: Some(0.5),
                    peak_cores: Some(0.75),
                    cpu_share_pct: Some(50.0),
                    mean_rss_bytes: Some(64 << 20),
                    peak_rss_bytes: Some(80 << 20),
                    points: (0..seconds)
                        .map(|t| ResourcePoint {
                            t: t as f64,
                            cores: (t > 0).then_some(0.5),
                            rss_bytes: Some(64 << 20),
                        })
                        .collect(),
                })
                .collect(),
            total_mean_cores: 1.0,
            notes: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_with_their_share() {
        assert_eq!(super::with_share(3, Some(0.375)), "3 (37.5%)");
        assert_eq!(super::with_share(0, None), "0");
    }

    #[test]
    fn markdown_keeps_its_tables() {
        let md = super::markdown::render(&super::sample_report("bench", 1_000_000, 10));
        assert!(md.contains("| target rate | goodput (ok/s) |"), "{md}");
        assert!(
            md.contains("| kafka | 1 | 0.50 | 0.75 | 50% | 64.0 | 80.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| ack, ok only (from due time) | 10.00 |"),
            "{md}"
        );
        assert!(md.contains("## Verify: **FAIL**"), "{md}");
        assert!(md.contains("| bench-c1-s7 | - | 1 | 7 | 0 | 42 |"), "{md}");
        // A row per kind of read, failed reads counted by kind beside the latency.
        assert!(
            md.contains("| conversation | 200 | 200 | 0 | 0 | 20.0 (20) | 3.00 | 6.00 | 12.00 | 15.00 | 18.00 | none |"),
            "{md}"
        );
        assert!(
            md.contains("| count | 50 | 40 | 10 | 0 | 4.0 (5) | 1.00 |"),
            "{md}"
        );
        assert!(md.contains("http_503 10 |"), "{md}");
    }

    /// Reports written before reads existed (no `reads` anywhere) still read, as runs
    /// without reads.
    #[test]
    fn reports_without_reads_still_parse() {
        let r = super::sample_report("old", 1_000_000, 3);
        let mut v = serde_json::to_value(&r).unwrap();
        v["config"].as_object_mut().unwrap().remove("reads");
        v["summary"].as_object_mut().unwrap().remove("reads");
        v["distribution"].as_object_mut().unwrap().remove("reads");
        for t in v["timeline"].as_array_mut().unwrap() {
            let t = t.as_object_mut().unwrap();
            t.remove("reads_ok");
            t.remove("reads_errors");
        }
        let old: wiber_model::report::Report = serde_json::from_value(v).unwrap();
        assert!(old.summary.reads.is_empty() && old.config.reads.is_none());
        assert_eq!(old.timeline[0].reads_ok, 0);
        assert!(super::tables::reads(&old.summary.reads).is_none());
        // And a run without reads writes none of them.
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("reads"), "{text}");
    }

    #[test]
    fn bench_page_details_are_tables_not_preformatted_text() {
        let mut r = super::sample_report("<script>alert(1)</script>", 1_000_000, 10);
        r.summary.warnings.push("</table><script>x</script>".into());
        let html = super::html::render(&r);
        assert!(!html.contains("<pre"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        let details = &html[html.find("<h2>Details</h2>").expect("a Details section")..];
        for class in [
            "summary", "latency", "reads", "verify", "examples", "events",
        ] {
            assert!(
                details.contains(&format!("<table class=\"{class}\">")),
                "{class} table missing: {details}"
            );
        }
        assert!(
            details.contains("<td>bench-c1-s7</td>") || details.contains("c1-s7</td>"),
            "{details}"
        );
        for id in [
            "chart-rate",
            "chart-latency",
            "chart-cpu",
            "chart-rss",
            "chart-distribution",
        ] {
            assert!(
                html.contains(&format!("<svg class=\"plot\" id=\"{id}\"")),
                "{id}"
            );
        }
        // The pause event is a marked line on the time charts.
        assert_eq!(html.matches("class=\"fault-mark\"").count(), 4, "{html}");
    }
}
