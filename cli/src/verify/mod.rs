//! `wiberctl verify`: after a run drains, hold MongoDB to the ledger.
//!
//! Layout:
//! - [`store`]: reads the run's documents from MongoDB by indexed keys (its
//!   conversations, its ledger ids, held to the store's exact counters) and waits for
//!   the consumer group.
//! - [`readback`]: reads the run's conversations back through the API, in its order.
//! - [`check`]: the invariants as a pure function (lost, duplicated, unexpected,
//!   corrupted, reordered, recovered, indeterminate).
//!
//! The verdict is added to the run's `report.{json,md,html}`.

pub mod check;
pub mod incremental;
pub mod readback;
pub mod store;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use wiber_model::ledger::LedgerEntry;
use wiber_model::report::{Report, Verdict, VerifyReport};

use crate::runfile::{RunFile, StoreTarget};

/// Flags of `verify`; `None` means "as recorded in the run's `run.json`".
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub run_dir: PathBuf,
    pub drain_timeout: Duration,
    /// The API to read conversations back through (default: the run's).
    pub api_url: Option<String>,
    pub mongo_uri: Option<String>,
    pub mongo_db: Option<String>,
    pub mongo_collection: Option<String>,
    pub kafka: Option<String>,
    pub group: Option<String>,
    pub topic: Option<String>,
}

/// Runs the check and records it in the run's report files. Returns `Err` only when it
/// could not check at all (no run, MongoDB or Kafka unreachable); a consumer group that
/// did not drain gives the verdict `error` with the counts found so far.
pub async fn run(opts: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let run = RunFile::read(&opts.run_dir)?;
    let target = StoreTarget {
        // The run's PostgreSQL belongs to the run's store: not to another one given here.
        postgres_url: if opts.mongo_uri.is_some() {
            None
        } else {
            run.target.postgres_url
        },
        mongo_uri: opts.mongo_uri.clone().unwrap_or(run.target.mongo_uri),
        mongo_db: opts.mongo_db.clone().unwrap_or(run.target.mongo_db),
        mongo_collection: opts
            .mongo_collection
            .clone()
            .unwrap_or(run.target.mongo_collection),
        kafka: opts.kafka.clone().unwrap_or(run.target.kafka),
        group: opts.group.clone().unwrap_or(run.target.group),
        topic: opts.topic.clone().unwrap_or(run.target.topic),
    };
    let entries = read_ledger(&opts.run_dir.join("ledger.jsonl"))?;
    let drain = store::drain(&target, opts.drain_timeout).await?;
    // By indexed keys: the run's conversations (all of them, also any the ledger names
    // beyond run.json's count) and the ledger's ids.
    let conversations = entries
        .iter()
        .map(|e| e.conversation.saturating_add(1))
        .max()
        .unwrap_or(0)
        .max(run.conversations);
    let message_ids: Vec<String> = entries.iter().map(|e| e.message_id.clone()).collect();
    let keys = store::RunKeys {
        run: &run.run,
        conversations,
        message_ids: &message_ids,
    };
    let found = store::read_run(&target, &keys, true).await?;
    let docs = found.docs;
    // The order a reader gets: through the API when it answers; from the documents by
    // the API's sort key (timestamp, then messageId) otherwise, and said so.
    let mut notes = Vec::new();
    let api_url = opts.api_url.clone().unwrap_or(run.api_url);
    let read_back = match readback::conversations(&api_url, &run.run, run.conversations).await {
        Ok(r) => {
            notes.push(format!(
                "order: {} of {} conversation(s) read back through GET /messages/{{a}}/{{b}} at {api_url}{}",
                r.len(),
                run.conversations,
                if (r.len() as u32) < run.conversations {
                    "; the others ordered from the documents (timestamp, then messageId)"
                } else {
                    ""
                }
            ));
            Some(r)
        }
        Err(e) => {
            notes.push(format!(
                "order: derived from the stored documents (timestamp, then messageId), the API could not be read: {e:#}"
            ));
            None
        }
    };
    // After the order note, which readers of the report look for first.
    notes.extend(found.notes);
    let found = check::check(&run.run, &entries, &docs, read_back.as_ref());
    let (verdict, error) = if !drain.drained {
        (
            Verdict::Error,
            Some(format!(
                "consumer group {} still had lag {} after {:?}: the store is not final yet \
                 (check the consumers with `wiberctl stack status`, or raise --drain-timeout)",
                target.group, drain.lag, opts.drain_timeout
            )),
        )
    } else if found.counts.pass() {
        (Verdict::Pass, None)
    } else {
        (Verdict::Fail, None)
    };
    let report = VerifyReport {
        verdict,
        checked_ms: wiber_model::now_ms(),
        drained: drain.drained,
        lag_remaining: Some(drain.lag),
        counts: found.counts,
        examples: found.examples,
        error,
        notes,
    };
    record(&opts.run_dir, &report)?;
    Ok(report)
}

/// Reads `ledger.jsonl`; a torn last line (a run killed mid-write) is skipped.
pub fn read_ledger(path: &Path) -> anyhow::Result<Vec<LedgerEntry>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the ledger {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read the ledger {}", path.display()))?;
    let n = lines.len();
    let mut out = Vec::with_capacity(n);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == n => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}:{}: not a ledger line", path.display(), i + 1))
            }
        }
    }
    Ok(out)
}

/// Adds the verdict to `report.json` (and re-renders md and html), if the run has one.
fn record(dir: &Path, v: &VerifyReport) -> anyhow::Result<()> {
    let path = dir.join("report.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a wiber.report.v1 report", path.display()))?;
    report.verify = Some(v.clone());
    crate::report::write_all(dir, &report)
}
