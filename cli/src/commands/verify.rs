//! `wiberctl verify`: the delivery invariants of a bench run, checked in MongoDB.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::json;
use wiber_model::report::{Verdict, VerifyReport};

use crate::exit::{self, Exit};
use crate::output;
use crate::units::parse_duration;
use crate::verify::{self, VerifyOptions};

#[derive(Debug, Clone, Args)]
#[command(after_help = "Checks, after the consumer group's lag reaches 0:
  lost           ok in the ledger, absent from MongoDB                    (must be 0)
  duplicated     a messageId or (run, conversation, seq) stored twice     (must be 0)
  unexpected     stored but never sent, or sent as failed (once each)     (must be 0)
  corrupted      a stored field differs from what was sent or acknowledged:
                 users, content, conversation key, messageId, the timestamp
                 the API answered with, createdAt                         (must be 0)
  reordered      a conversation read back in the API's order (timestamp,
                 then messageId) differs from the order it was sent in    (must be 0)
  dead_lettered  ok, not stored, found in the dead-letter topic (the store
                 refused it, or it did not decode): `wiberctl dlq list`   (must be 0)
  stalled        ok, not stored, and its partition's committed offset never
                 passed it: behind a partition the consumers are stuck on (must be 0)
  conflicts      its messageId was reused with other content: the other one
                 is in the dead-letter topic as a conflict                (must be 0)
  recovered      unknown outcomes (timeout, 5xx) that were stored         (informational)
  indeterminate  unknown outcomes that were not stored                    (informational)
Exit 0 pass, 1 an invariant failed, 2 could not check (no run, store unreachable, lag not
drained: unless a partition is stuck with messages of the run behind it, which is a finding:
stalled, exit 1).
MongoDB/Kafka settings default to those recorded in the run's run.json.")]
pub struct VerifyArgs {
    /// Run directory (default: the latest run in the reports directory).
    pub run_dir: Option<PathBuf>,
    /// The API to read conversations back through, for `reordered` (default: the run's,
    /// from run.json). When it does not answer, the order is derived from the documents.
    #[arg(long, value_name = "URL")]
    pub read_api: Option<String>,
    /// How long to wait for the consumer group's lag to reach 0.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Where run directories are. Default: `reports/` at the repository root (or here).
    #[arg(long, env = "WIBER_REPORTS_DIR")]
    pub reports_dir: Option<PathBuf>,
    /// Override the run's MongoDB connection string.
    #[arg(long)]
    pub mongo_uri: Option<String>,
    #[arg(long)]
    pub mongo_db: Option<String>,
    #[arg(long)]
    pub mongo_collection: Option<String>,
    /// Override the run's Kafka bootstrap servers.
    #[arg(long)]
    pub kafka: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub topic: Option<String>,
    /// The dead-letter topic to tell dead_lettered and conflicts from lost (default: <topic>.dlq).
    #[arg(long)]
    pub dlq_topic: Option<String>,
}

pub async fn run(args: VerifyArgs, json: bool) -> anyhow::Result<Exit> {
    let run_dir = match args.run_dir {
        Some(d) => d,
        None => crate::bench::latest_run(
            &args
                .reports_dir
                .unwrap_or_else(super::bench::default_reports_dir),
        )?,
    };
    let opts = VerifyOptions {
        run_dir: run_dir.clone(),
        drain_timeout: args.drain_timeout,
        mongo_uri: args.mongo_uri,
        mongo_db: args.mongo_db,
        mongo_collection: args.mongo_collection,
        kafka: args.kafka,
        group: args.group,
        topic: args.topic,
        dlq_topic: args.dlq_topic,
        api_url: args.read_api,
    };
    let v = verify::run(&opts).await?;
    if json {
        output::json(&json!({
            "verdict": v.verdict,
            "run_dir": run_dir,
            "drained": v.drained,
            "lag_remaining": v.lag_remaining,
            "counts": v.counts,
            "examples": v.examples,
            "error": v.error,
            "notes": v.notes,
        }));
    } else {
        print_table(&v, &run_dir);
    }
    match v.verdict {
        Verdict::Pass => Ok(exit::PASS),
        Verdict::Fail => Ok(exit::FAIL),
        _ => bail!(
            "{}",
            v.error
                .unwrap_or_else(|| "verify could not check the run".into())
        ),
    }
}

fn print_table(v: &VerifyReport, run_dir: &std::path::Path) {
    let c = &v.counts;
    let mut t = output::table(&["check", "count", "must be 0"]);
    let share = |n: u64| crate::report::with_share(n, c.share_of_unknown(n));
    let rows: [(&str, String, bool); 14] = [
        ("ledger ok", c.ledger_ok.to_string(), false),
        ("ledger failed", c.ledger_failed.to_string(), false),
        ("ledger unknown", c.ledger_unknown.to_string(), false),
        ("stored", c.stored.to_string(), false),
        ("lost", c.lost.to_string(), true),
        ("duplicated", c.duplicated.to_string(), true),
        ("unexpected", c.unexpected.to_string(), true),
        ("corrupted", c.corrupted.to_string(), true),
        ("reordered", c.reordered.to_string(), true),
        ("dead_lettered", c.dead_lettered.to_string(), true),
        ("stalled", c.stalled.to_string(), true),
        ("conflicts", c.conflicts.to_string(), true),
        ("recovered (unknown, stored)", share(c.recovered), false),
        (
            "indeterminate (unknown, not stored)",
            share(c.indeterminate),
            false,
        ),
    ];
    for (name, n, must) in rows {
        t.add_row(vec![
            name.to_string(),
            n,
            if must { "yes" } else { "" }.to_string(),
        ]);
    }
    println!("{t}");
    for (kind, exs) in &v.examples {
        println!("{kind} (first {}):", exs.len());
        for e in exs {
            println!(
                "  {}{}  partition {} offset {}: {}",
                e.message_id,
                e.doc_id
                    .as_ref()
                    .map(|d| format!(" (_id {d})"))
                    .unwrap_or_default(),
                e.partition.map_or("-".into(), |p| p.to_string()),
                e.offset.map_or("-".into(), |o| o.to_string()),
                e.detail
            );
        }
    }
    for n in &v.notes {
        println!("{n}");
    }
    println!(
        "verdict: {} ({})",
        v.verdict.name().to_uppercase(),
        run_dir.display()
    );
}
