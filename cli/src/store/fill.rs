//! `store fill`: fixture messages written straight to the store, so reads can be tested
//! at the scale of a store that has run for months, in seconds instead of days of load.
//!
//! The documents are [`StoredMessage`]s as the consumer writes them, named by
//! [`wiber_model::fixture`] (ids `fixture-<fill>-c<k>-s<seq>`, users `fixture-u<k>a/b`),
//! so nothing mistakes them for a bench run's messages. They go through the MongoDB wire
//! (FerretDB), never into PostgreSQL directly: the triggers that keep the exact counts
//! and the GIN indexes see them like any consumer write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mongodb::bson::doc;
use mongodb::error::ErrorKind;
use serde::Serialize;
use wiber_model::{conversation_key, fixture, participants, rfc3339_ms, StoredMessage};

use super::StoreAddr;

/// MongoDB's "namespace exists" (a collection created by someone else in between).
const NAMESPACE_EXISTS: i32 = 48;

/// What to write.
#[derive(Debug, Clone)]
pub struct FillOptions {
    /// Messages in all.
    pub messages: u64,
    /// Messages per conversation; the last conversation holds the remainder.
    pub conversation_size: u64,
    /// Bytes of content per message.
    pub content_bytes: usize,
    /// Documents per `insert_many`.
    pub batch: usize,
    /// Concurrent writers (each with its own connection).
    pub writers: usize,
}

impl FillOptions {
    /// Conversations `0..n` the fill writes.
    pub fn conversations(&self) -> u64 {
        self.messages.div_ceil(self.conversation_size.max(1))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.messages == 0 {
            bail!("--messages must be at least 1");
        }
        if self.conversation_size == 0 {
            bail!("--conversation-size must be at least 1");
        }
        if self.batch == 0 || self.writers == 0 {
            bail!("--batch and --writers must be at least 1");
        }
        if self.content_bytes == 0 || self.content_bytes > wiber_model::MAX_CONTENT_CHARS {
            bail!(
                "--content-bytes must be 1..={} (what the API accepts)",
                wiber_model::MAX_CONTENT_CHARS
            );
        }
        Ok(())
    }
}

/// What a fill did (`store fill --json`).
#[derive(Debug, Clone, Serialize)]
pub struct FillSummary {
    /// Always true: these are fixture documents, not messages anyone sent.
    pub fixture: bool,
    /// The fill's id: every document's `_id` starts with `fixture-<fill_id>-`.
    pub fill_id: String,
    /// Where: `db.collection at uri`.
    pub store: String,
    pub messages: u64,
    pub conversations: u64,
    pub conversation_size: u64,
    pub content_bytes: usize,
    pub seconds: f64,
    pub docs_per_s: f64,
    /// The counts collection had to be created by this fill.
    pub created_counts_collection: bool,
    /// The store keeps exact counters for the collection (`$exact` marker present): the
    /// API's counts include the fixture without reading it.
    pub exact_counts: bool,
    /// Said to the operator after the fill (e.g. why counts are not exact).
    pub notes: Vec<String>,
}

/// Writes the fixture. `progress(written)` is called a few times a second.
pub async fn fill(
    addr: &StoreAddr,
    opts: &FillOptions,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<FillSummary> {
    opts.validate()?;
    let client = addr
        .client("wiberctl-store-fill", opts.writers as u32 + 2)
        .await?;
    let mut notes = Vec::new();
    let created_counts = prepare(&client, addr, &mut notes).await?;
    let exact_counts = match &addr.postgres_url {
        Some(url) => crate::pg::counters(url, &addr.db, &addr.collection, &[])
            .await?
            .is_some(),
        None => false,
    };
    if !exact_counts {
        notes.push(format!(
            "the store keeps no exact counters for {} (FerretDB on PostgreSQL with the \
             project's setup does): the API counts by reading documents, which is exact but \
             grows with the fixture (`wiberctl store check` says why)",
            addr.collection,
        ));
    }

    let fill_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let plan = Arc::new(Plan::new(fill_id.clone(), opts));
    let coll = client
        .database(&addr.db)
        .collection::<StoredMessage>(&addr.collection);
    let next_batch = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..opts.writers {
        let (plan, coll, next_batch, written) = (
            plan.clone(),
            coll.clone(),
            next_batch.clone(),
            written.clone(),
        );
        writers.spawn(async move {
            loop {
                let b = next_batch.fetch_add(1, Ordering::Relaxed);
                let Some(docs) = plan.batch(b) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let n = docs.len() as u64;
                let first = docs[0].id.clone();
                coll.insert_many(docs)
                    .ordered(false)
                    .await
                    .with_context(|| {
                        format!(
                            "writing fixture batch {b} (from {first}) to {}.{} failed",
                            coll.namespace().db,
                            coll.name()
                        )
                    })?;
                written.fetch_add(n, Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            done = writers.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e.context(format!(
                    "fill {fill_id} stopped after {} of {} messages; its documents can be told \
                     apart by the `_id` prefix fixture-{fill_id}-",
                    written.load(Ordering::Relaxed), opts.messages
                ))),
                Some(Err(e)) => return Err(anyhow::anyhow!("a fill writer failed: {e}")),
            },
            _ = tick.tick() => progress(written.load(Ordering::Relaxed)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress(written.load(Ordering::Relaxed));
    Ok(FillSummary {
        fixture: true,
        fill_id,
        store: addr.describe(),
        messages: opts.messages,
        conversations: opts.conversations(),
        conversation_size: opts.conversation_size,
        content_bytes: opts.content_bytes,
        seconds,
        docs_per_s: opts.messages as f64 / seconds.max(1e-9),
        created_counts_collection: created_counts,
        exact_counts,
        notes,
    })
}

/// Makes sure the counts collection exists, and exists *before* the messages collection
/// when this fill is the first writer: on FerretDB-on-PostgreSQL a messages collection is
/// counted only if its counts collection was there when it was created (the server's
/// order too). Returns whether the counts collection was created here.
async fn prepare(
    client: &mongodb::Client,
    addr: &StoreAddr,
    notes: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let db = client.database(&addr.db);
    let names = db.list_collection_names().await.with_context(|| {
        format!(
            "cannot list the collections of {} at {}",
            addr.db, addr.mongo_uri
        )
    })?;
    let counts = addr.counts_collection();
    let has_messages = names.contains(&addr.collection);
    let has_counts = names.contains(&counts);
    let create = |name: String| {
        let db = db.clone();
        async move {
            match db.create_collection(&name).await {
                Ok(()) => Ok(()),
                Err(e) if matches!(*e.kind, ErrorKind::Command(ref c) if c.code == NAMESPACE_EXISTS) => {
                    Ok(())
                }
                Err(e) => {
                    Err(e).with_context(|| format!("cannot create collection {}.{name}", addr.db))
                }
            }
        }
    };
    if !has_counts {
        create(counts.clone()).await?;
        if has_messages {
            notes.push(format!(
                "{counts} was missing and was created now, after {}: the counters do not follow \
                 a collection created before them",
                addr.collection
            ));
        }
    }
    if !has_messages {
        // Created explicitly, now, so that it is equipped (and counted) before the first
        // batch rather than by whichever writer's insert gets there first.
        create(addr.collection.clone()).await?;
    }
    Ok(!has_counts)
}

/// Which documents make up the fill: message `i` is `seq = i % size` of conversation
/// `k = i / size`, so a batch is a run of consecutive messages of one or a few
/// conversations.
struct Plan {
    fill_id: String,
    messages: u64,
    size: u64,
    conversations: u64,
    batch: u64,
    content_bytes: usize,
    /// Timestamp of the first message: the fixture ends about now, one message per
    /// millisecond across all conversations, so each conversation's timestamps increase
    /// and reads sort them as they would a real store's.
    t0: i64,
    stored_at: i64,
    filler: Vec<u8>,
}

impl Plan {
    fn new(fill_id: String, opts: &FillOptions) -> Plan {
        let now = wiber_model::now_ms();
        Plan {
            fill_id,
            messages: opts.messages,
            size: opts.conversation_size,
            conversations: opts.conversations(),
            batch: opts.batch as u64,
            content_bytes: opts.content_bytes,
            // Timestamps are t0 + seq * conversations + k: the largest is one below
            // size * conversations past t0.
            t0: now - (opts.conversation_size * opts.conversations()) as i64,
            stored_at: now,
            filler: filler_text(),
        }
    }

    /// Batch `b`, or None past the end.
    fn batch(&self, b: u64) -> Option<Vec<StoredMessage>> {
        let start = b.checked_mul(self.batch)?;
        if start >= self.messages {
            return None;
        }
        let end = (start + self.batch).min(self.messages);
        Some((start..end).map(|i| self.message(i)).collect())
    }

    fn message(&self, i: u64) -> StoredMessage {
        let (k, seq) = (i / self.size, i % self.size);
        let (a, b) = fixture::users(k);
        // Both directions, as a conversation goes.
        let (from, to) = if seq % 2 == 0 { (a, b) } else { (b, a) };
        let id = fixture::message_id(&self.fill_id, k, seq);
        let timestamp = self.t0 + (seq * self.conversations + k) as i64;
        StoredMessage {
            conversation: conversation_key(&from, &to),
            participants: participants(&from, &to),
            message_id: id.clone(),
            id,
            content: self.content(k, seq, i),
            from_user: from,
            to_user: to,
            timestamp,
            created_at: rfc3339_ms(timestamp),
            stored_at: self.stored_at,
            // Not from Kafka: no partition or offset.
            partition: -1,
            offset: -1,
        }
    }

    /// `fixture k:seq ` then words, cut to `content_bytes`; the words start at a place
    /// that depends on the message, so contents differ as real ones do (and compress
    /// about as well).
    fn content(&self, k: u64, seq: u64, i: u64) -> String {
        let mut s = format!("fixture {k}:{seq} ");
        let want = self.content_bytes;
        if s.len() >= want {
            s.truncate(want);
            return s;
        }
        let mut at = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % self.filler.len();
        while s.len() < want {
            let take = (want - s.len()).min(self.filler.len() - at);
            // The filler is ASCII, so any cut is a character boundary.
            s.push_str(std::str::from_utf8(&self.filler[at..at + take]).expect("ASCII filler"));
            at = 0;
        }
        s
    }
}

/// 16 KiB of word-like ASCII, made once per fill.
fn filler_text() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "the", "meeting", "is", "moved", "to", "tomorrow", "see", "you", "at", "noon", "ok",
        "thanks", "sending", "the", "file", "now", "can", "we", "talk", "later", "sure", "great",
        "news", "call",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::with_capacity(16 * 1024 + 16);
    while out.len() < 16 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x.is_multiple_of(11) { b'.' } else { b' ' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(messages: u64, size: u64) -> FillOptions {
        FillOptions {
            messages,
            conversation_size: size,
            content_bytes: 100,
            batch: 7,
            writers: 2,
        }
    }

    #[test]
    fn the_plan_covers_every_message_once_in_conversations_of_the_size_asked() {
        let o = opts(25, 10);
        assert_eq!(o.conversations(), 3);
        let plan = Plan::new("f1".into(), &o);
        let all: Vec<StoredMessage> = (0..).map_while(|b| plan.batch(b)).flatten().collect();
        assert_eq!(all.len(), 25);
        let ids: std::collections::HashSet<_> = all.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids.len(), 25);
        assert_eq!(all[0].id, fixture::message_id("f1", 0, 0));
        assert_eq!(all[24].id, fixture::message_id("f1", 2, 4));
        let (a, b) = fixture::users(1);
        let conv1: Vec<_> = all
            .iter()
            .filter(|m| m.conversation == conversation_key(&a, &b))
            .collect();
        assert_eq!(conv1.len(), 10);
        // Both directions; each conversation's timestamps increase with seq.
        assert_eq!(
            (conv1[0].from_user.as_str(), conv1[1].from_user.as_str()),
            (a.as_str(), b.as_str())
        );
        assert!(conv1.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        assert!(all
            .iter()
            .all(|m| m.content.len() == 100 && m.message_id == m.id));
        assert!(all.iter().all(|m| m.participants.len() == 2));
        // Timestamps are unique across the fill and end before now.
        let ts: std::collections::HashSet<_> = all.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts.len(), 25);
        assert!(all.iter().all(|m| m.timestamp <= wiber_model::now_ms()));
    }

    #[test]
    fn content_is_cut_to_size_and_starts_with_its_place() {
        let mut o = opts(3, 3);
        o.content_bytes = 5;
        let plan = Plan::new("f".into(), &o);
        assert_eq!(plan.message(0).content, "fixtu");
        o.content_bytes = 5000;
        let plan = Plan::new("f".into(), &o);
        let c = plan.message(2).content;
        assert_eq!(c.len(), 5000);
        assert!(c.starts_with("fixture 0:2 "));
        assert_ne!(plan.message(1).content[12..40], c[12..40]);
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(opts(0, 10).validate().is_err());
        assert!(opts(10, 0).validate().is_err());
        let mut o = opts(10, 10);
        o.content_bytes = 5001;
        assert!(o.validate().is_err());
    }
}
