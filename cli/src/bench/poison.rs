//! Poison records (`[load] poison = N` in a scenario): records the store cannot hold,
//! produced straight to the topic in the middle of the load, as another producer of the
//! topic could (the API refuses them: this is how they get there anyway).
//!
//! Each is a well-formed message of the run whose content holds U+0000, which
//! PostgreSQL's jsonb refuses. Kafka acknowledges it, so it is written to the run's ledger
//! as `ok` (acknowledged: it must be stored or accounted for), in a conversation of its
//! own. The consumer must isolate it from the records batched with it, dead-letter it
//! within seconds and store every other record; verify then counts it as
//! `dead_lettered` (found in the DLQ, not stored) and nothing as lost or stalled.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use wiber_model::ledger::{self, LedgerEntry, Outcome};
use wiber_model::{conversation_key, now_ms, Message};

use crate::kafka::dlq::RawProducer;

/// The content of the poison record of conversation `conv`: its key (so a stored copy
/// could be traced), then U+0000.
pub fn content(run: &str, conv: u32) -> String {
    format!("{run}:{conv}:0|poison \u{0} record")
}

/// Produces `count` poison records of `run` to `topic`, each acknowledged, and returns
/// their ledger lines. Each has a conversation of its own, right after the load's
/// `conversations` (so it shares none with the load, and verify, which reads a run's
/// conversations by index up to the highest in its ledger, reads only a few more).
pub async fn inject(
    bootstrap: &str,
    topic: &str,
    run: &str,
    conversations: u32,
    count: u32,
) -> anyhow::Result<Vec<LedgerEntry>> {
    let producer = RawProducer::new(bootstrap)?;
    let mut entries = Vec::new();
    for i in 0..count {
        let conv = conversations + i;
        let (from, to) = ledger::users(run, conv);
        let id = ledger::message_id(run, conv, 0);
        let sent = now_ms();
        let message = Message {
            message_id: id.clone(),
            from_user: from.clone(),
            to_user: to.clone(),
            content: content(run, conv),
            timestamp: sent,
            created_at: wiber_model::rfc3339_ms(sent),
        };
        let payload = serde_json::to_vec(&message).context("a message serialises")?;
        let placed = producer
            .send(
                topic,
                Some(conversation_key(&from, &to).as_bytes()),
                Some(&payload),
                &[],
            )
            .await
            .with_context(|| format!("cannot produce poison record {id}"))?;
        entries.push(LedgerEntry {
            message_id: id,
            run: run.to_string(),
            conversation: conv,
            seq: 0,
            due: sent,
            sent: Some(sent),
            answered: now_ms(),
            outcome: Outcome::Ok,
            status: None,
            error: None,
            acked_timestamp: Some(sent),
            partition: Some(placed.partition),
            offset: Some(placed.offset),
            attempts: 1,
            size: message.content.len(),
            content_hash: ledger::content_hash(&message.content),
            warmup: false,
            step: 0,
        });
    }
    Ok(entries)
}

/// Appends `entries` to the ledger file at `path` (after the load wrote it).
pub fn append(path: &Path, entries: &[LedgerEntry]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} to add the poison records", path.display()))?;
    for e in entries {
        let line = serde_json::to_string(e).context("a ledger line serialises")?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
