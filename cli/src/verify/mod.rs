//! `wiberctl verify`: after a run drains, hold MongoDB to the ledger.
//!
//! Layout:
//! - [`store`]: reads the run's documents from MongoDB by indexed keys (its
//!   conversations, its ledger ids, held to the store's exact counters) and waits for
//!   the consumer group.
//! - [`readback`]: reads the run's conversations back through the API, in its order.
//! - [`check`]: the invariants as a pure function (lost, duplicated, unexpected,
//!   corrupted, reordered, recovered, indeterminate, dead_lettered, stalled, conflicts).
//! - [`fate`]: why an acknowledged message is not stored, when Kafka can say (the
//!   dead-letter topic, the group's committed offsets): what tells `dead_lettered`,
//!   `stalled` and `conflicts` from `lost`.
//! - [`spill`]: how a long run is checked without holding it: bucket by bucket of
//!   conversations, from files; [`index`]: the bit per request it keeps.
//! - [`incremental`]: verify as the run goes, up to what the consumer group committed.
//!
//! The verdict is added to the run's `report.{json,md,html}`.

pub mod check;
pub mod fate;
pub mod incremental;
pub mod index;
pub mod readback;
pub mod spill;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use wiber_model::ledger::LedgerEntry;
use wiber_model::report::{Report, Verdict, VerifyReport};

use crate::runfile::{RunFile, StoreTarget};

/// Verify's work directory inside the run's: the buckets, removed when verify ends.
const WORK_DIR: &str = ".verify";

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
    /// The dead-letter topic (default: the topic's, `<topic>.dlq`).
    pub dlq_topic: Option<String>,
}

/// How long reading the dead-letter topic may wait for Kafka, per call.
const DLQ_TIMEOUT: Duration = Duration::from_secs(10);

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
    // The run is checked a bucket of conversations at a time (see `spill`): the ledger
    // streams into the buckets, then the documents as the store gives them.
    let mut spill = spill::Spill::create(&opts.run_dir.join(WORK_DIR), run.conversations)?;
    let index = spill.ledger(&opts.run_dir.join("ledger.jsonl"), &run.run)?;
    let drain = store::drain(&target, opts.drain_timeout).await?;
    // What Kafka says of messages the store may not hold: the run's dead letters, and
    // where the group stands. Read after the drain: a record is dead-lettered before
    // its offset is committed.
    let dlq_topic = opts
        .dlq_topic
        .clone()
        .unwrap_or_else(|| crate::kafka::dlq::topic_of(&target.topic));
    let mut fates = fate::Fates::new(&dlq_topic);
    fates.set_lags(&drain.lags, wiber_model::now_ms());
    let dlq_note = match crate::kafka::dlq::scan(&target.kafka, &dlq_topic, DLQ_TIMEOUT, |d| {
        fates.add(&d, |id| index.request_of_id(id).is_some())
    })
    .await
    {
        Ok(s) => format!(
            "dead letters: {} record(s) in {dlq_topic}, {} of this run{}",
            s.records,
            fates.kept,
            if fates.unnamed > 0 {
                format!(
                    ", {} naming no messageId (see `wiberctl dlq list`)",
                    fates.unnamed
                )
            } else {
                String::new()
            }
        ),
        // Not fatal: without the dead letters a message there counts as lost, which
        // fails the run as dead-lettered would; the note says why.
        Err(e) => format!(
            "dead letters: {dlq_topic} could not be read ({e:#}): a message dead-lettered \
             there counts as lost"
        ),
    };
    // By indexed keys: the run's conversations (all of them, also any the ledger names
    // beyond run.json's count) and the ledger's ids.
    let conversations = index.conversations().max(run.conversations);
    let keys = store::RunKeys {
        run: &run.run,
        conversations,
        ledger: Some(&index),
    };
    // Documents of no request of the run are counted here; the rest in their bucket.
    let mut found = check::Findings::default();
    let read = store::read_run(&target, &keys, true, &mut |d| {
        spill.doc(&index, d, &mut found)
    })
    .await?;
    spill.finish()?;
    // The order a reader gets: through the API when it answers; from the documents by
    // the API's sort key (timestamp, then messageId) otherwise, and said so.
    let api_url = opts.api_url.clone().unwrap_or(run.api_url);
    let mut reader = readback::Reader::new(&api_url, &run.run)?;
    for b in 0..spill.buckets() {
        let (entries, docs) = spill.read(b)?;
        let mut read_back = BTreeMap::new();
        for conv in (b..run.conversations).step_by(spill.buckets() as usize) {
            if let Some(ids) = reader.conversation(conv).await {
                read_back.insert(conv, ids);
            }
        }
        found.merge(check::check_with(
            &run.run,
            &entries,
            &docs,
            Some(&read_back),
            Some(&fates),
        ));
    }
    drop(spill);
    let mut notes = vec![match &reader.failed {
        None => format!(
            "order: {} of {} conversation(s) read back through GET /messages/{{a}}/{{b}} at {api_url}{}",
            reader.read,
            run.conversations,
            if reader.read < run.conversations {
                "; the others ordered from the documents (timestamp, then messageId)"
            } else {
                ""
            }
        ),
        Some(e) => format!(
            "order: {} conversation(s) read back through the API, the others derived from the \
             stored documents (timestamp, then messageId): the API could not be read: {e}",
            reader.read
        ),
    }];
    // After the order note, which readers of the report look for first.
    notes.extend(read.notes);
    notes.push(dlq_note);
    if !drain.drained {
        let stalls = crate::kafka::stall_lines(&drain.lags, wiber_model::now_ms());
        notes.push(format!(
            "consumer group {} did not drain (lag {} after {:?}){}{}",
            target.group,
            drain.lag,
            opts.drain_timeout,
            if drain.stuck.is_empty() {
                String::new()
            } else {
                format!(
                    "; partitions not advancing: {}",
                    drain
                        .stuck
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if stalls.is_empty() {
                String::new()
            } else {
                format!("; {}", stalls.join("; "))
            }
        ));
    }
    let (verdict, error) = verdict(&drain, &found.counts, &target.group, opts.drain_timeout);
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

/// The verdict, and why there is none. A group that did not drain leaves the store
/// unfinished: no verdict (error), unless a partition is stuck (not merely slow) with
/// messages of the run behind it: those are a finding (`stalled`), and waiting longer
/// would not change it.
fn verdict(
    drain: &store::Drain,
    counts: &wiber_model::report::VerifyCounts,
    group: &str,
    timeout: Duration,
) -> (Verdict, Option<String>) {
    let stuck = !drain.stuck.is_empty() && counts.stalled > 0;
    if !drain.drained && !stuck {
        (
            Verdict::Error,
            Some(format!(
                "consumer group {group} still had lag {} after {timeout:?}: the store is not \
                 final yet (check the consumers with `wiberctl stack status`, or raise \
                 --drain-timeout)",
                drain.lag
            )),
        )
    } else if counts.pass() {
        (Verdict::Pass, None)
    } else {
        (Verdict::Fail, None)
    }
}

/// Reads `ledger.jsonl` line by line; a torn last line (a run killed mid-write) is
/// skipped.
pub fn read_ledger(path: &Path) -> anyhow::Result<Vec<LedgerEntry>> {
    let mut out = Vec::new();
    spill::for_each_entry(path, |_, e| {
        out.push(e);
        Ok(())
    })?;
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

#[cfg(test)]
mod tests {
    use wiber_model::report::VerifyCounts;

    use super::*;

    #[test]
    fn a_group_that_did_not_drain_has_no_verdict_unless_a_partition_is_stuck() {
        let drain = |drained, stuck: Vec<i32>| store::Drain {
            drained,
            lag: if drained { 0 } else { 7 },
            lags: Vec::new(),
            stuck,
        };
        let clean = VerifyCounts::default();
        let stalled = VerifyCounts {
            stalled: 2,
            ..VerifyCounts::default()
        };
        let t = Duration::from_secs(60);
        let v = |d, c| verdict(&d, c, "g", t).0;
        assert_eq!(v(drain(true, vec![]), &clean), Verdict::Pass);
        // Slow, not stuck: the store is not final, whatever was counted so far.
        let (e, why) = verdict(&drain(false, vec![]), &stalled, "g", t);
        assert_eq!(e, Verdict::Error);
        assert!(why.unwrap().contains("raise --drain-timeout"));
        // Stuck with messages of the run behind it: a finding.
        assert_eq!(v(drain(false, vec![3]), &stalled), Verdict::Fail);
        // Stuck, but none of the run's messages behind it: judged once drained, as before.
        assert_eq!(v(drain(false, vec![3]), &clean), Verdict::Error);
    }
}
