//! Seeded bugs: test builds only (`--features seeded-bugs`, never default, never in a
//! release build or image). `WIBER_SEEDED_BUG=<name>` makes the service break one
//! promise of the delivery contract, every `WIBER_SEEDED_BUG_EVERY`th time (default 10),
//! so the harness can prove that `wiberctl verify` notices. The names are
//! [`SeededBug`], in the model crate, so `wiberctl` can list them.
//!
//! Each bug is a wrapper around one of the services' seams, so the production code
//! paths carry no hooks: the API's [`Publish`] ([`SeededPublisher`]: `ack-without-produce`,
//! `refuse-all`) and the consumer's [`MessageStore`] ([`SeededStore`]:
//! `commit-before-write`, `skip-on-store-error`, `no-dedup`, `corrupt`). Only `reorder`
//! needs a line in the POST handler, which picks the timestamp ([`Reorder`]), and
//! `retry-forever` a setting of the consumer loop ([`Seeded::recovery`]: the loop's
//! isolation of refused writes turned off, as the consumer was before it had one).
//!
//! A build without the feature refuses to start when the variable is set
//! ([`crate::config::refuse_seeded_bug`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use wiber_model::contract::{defaults, env, SeededBug, Service};
use wiber_model::{conversation_key, NewMessage, StoredMessage};

use crate::api::{AppState, Delivered, Publish, PublishError};
use crate::seams::{InsertOutcome, MessageStore, Position, RecordSource};

/// The bug this process was told to have, and how often it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    pub bug: SeededBug,
    /// The bug strikes on every `every`th message (1: on all of them).
    pub every: u64,
}

impl Seeded {
    /// Reads `WIBER_SEEDED_BUG` and `WIBER_SEEDED_BUG_EVERY` for `service` and logs one
    /// WARN line naming the active bug (and whether this service acts on it).
    pub fn from_env(service: Service) -> anyhow::Result<Option<Seeded>> {
        let var = |name| std::env::var(name).ok();
        let seeded = Seeded::parse(
            var(env::WIBER_SEEDED_BUG).as_deref(),
            var(env::WIBER_SEEDED_BUG_EVERY).as_deref(),
        )?;
        if let Some(s) = seeded {
            if s.bug.service() == service {
                tracing::warn!(seeded_bug = %s.bug, every = s.every, %service,
                    "SEEDED BUG ACTIVE: this {service} misbehaves on purpose ({}={}); test builds only",
                    env::WIBER_SEEDED_BUG, s.bug);
            } else {
                tracing::warn!(seeded_bug = %s.bug, every = s.every, %service,
                    "seeded bug {} is set but is a {} bug: this {service} behaves normally",
                    s.bug, s.bug.service());
            }
        }
        Ok(seeded)
    }

    /// The seeded bug the two variables' values name: `None` when the first is unset or
    /// empty; an error naming the variable for an unknown bug or a bad count.
    pub fn parse(bug: Option<&str>, every: Option<&str>) -> anyhow::Result<Option<Seeded>> {
        let Some(bug) = bug.map(str::trim).filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let bug: SeededBug = bug
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", env::WIBER_SEEDED_BUG))?;
        let every = match every.map(str::trim).filter(|e| !e.is_empty()) {
            None => u64::from(defaults::SEEDED_BUG_EVERY),
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => anyhow::bail!(
                    "{}={raw:?}: expected a whole number of messages, 1 or more (1: every message)",
                    env::WIBER_SEEDED_BUG_EVERY
                ),
            },
        };
        Ok(Some(Seeded { bug, every }))
    }

    /// `state` with this bug applied, if it is one of the API's: the publisher wrapped
    /// (`ack-without-produce`, `refuse-all`) or the timestamps moved (`reorder`).
    pub fn api(&self, mut state: AppState) -> AppState {
        match self.bug {
            SeededBug::AckWithoutProduce | SeededBug::RefuseAll => {
                state.publisher = Arc::new(SeededPublisher::new(*self, state.publisher));
            }
            SeededBug::Reorder => state.accept_clock = Some(Arc::new(Reorder::new(self.every))),
            _ => {}
        }
        state
    }
}

impl Seeded {
    /// The consumer loop's `recovery` with this bug applied, if it is `retry-forever`: a
    /// write the store refuses for good is retried forever, batch and all.
    pub fn recovery(&self, mut recovery: crate::consumer::Recovery) -> crate::consumer::Recovery {
        if self.bug == SeededBug::RetryForever {
            tracing::warn!("seeded bug retry-forever: refused writes are retried, never isolated");
            recovery.isolate_refused = false;
        }
        recovery
    }
}

/// Counts events and says which ones the bug strikes: the `n`th, `2n`th, ...
#[derive(Debug)]
struct Every {
    n: u64,
    seen: AtomicU64,
}

impl Every {
    fn new(n: u64) -> Every {
        Every {
            n: n.max(1),
            seen: AtomicU64::new(0),
        }
    }

    fn strikes(&self) -> bool {
        (self.seen.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.n)
    }
}

/// The API's publisher with `ack-without-produce` or `refuse-all`.
pub struct SeededPublisher {
    inner: Arc<dyn Publish>,
    bug: SeededBug,
    every: Every,
}

impl SeededPublisher {
    pub fn new(seeded: Seeded, inner: Arc<dyn Publish>) -> SeededPublisher {
        SeededPublisher {
            inner,
            bug: seeded.bug,
            every: Every::new(seeded.every),
        }
    }
}

impl Publish for SeededPublisher {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a [u8],
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, PublishError>> {
        match self.bug {
            SeededBug::RefuseAll => Box::pin(async {
                Err(PublishError::Rejected(
                    "refused by seeded bug refuse-all (a test build with WIBER_SEEDED_BUG set)"
                        .into(),
                ))
            }),
            SeededBug::AckWithoutProduce if self.every.strikes() => {
                tracing::warn!(message_id = %correlation_id, "seeded bug ack-without-produce: acknowledging without producing");
                // No partition or offset: nothing was written anywhere.
                Box::pin(async {
                    Ok(Delivered {
                        partition: -1,
                        offset: -1,
                        lane: crate::api::Lane::Prompt,
                    })
                })
            }
            _ => self.inner.publish(topic, key, payload, correlation_id),
        }
    }

    fn check<'a>(&'a self, topic: &'a str, timeout: Duration) -> BoxFuture<'a, Result<(), String>> {
        self.inner.check(topic, timeout)
    }
}

/// `reorder`: every Nth message of a conversation gets a timestamp earlier than the one
/// the conversation's previous message got (5 s before now, or 1 ms before that one if
/// it is older), so readers, who sort by timestamp, see the two swapped.
#[derive(Debug)]
pub struct Reorder {
    every: u64,
    /// Per conversation: messages seen and the last timestamp given. Grows with the
    /// number of conversations, which is bounded in a test run.
    seen: Mutex<HashMap<String, (u64, i64)>>,
}

impl Reorder {
    /// How far back a reordered message is moved.
    const BACK_MS: i64 = 5_000;

    pub fn new(every: u64) -> Reorder {
        Reorder {
            every: every.max(1),
            seen: Mutex::default(),
        }
    }

    /// The timestamp to give a message of `conversation` accepted at `now`.
    pub fn timestamp(&self, conversation: &str, now: i64) -> i64 {
        let mut seen = self.seen.lock().expect("reorder lock");
        let (count, last) = seen.entry(conversation.to_string()).or_insert((0, 0));
        *count += 1;
        // The first message of a conversation has nothing to be reordered against.
        let ts = if *count > 1 && count.is_multiple_of(self.every) {
            (now - Self::BACK_MS).min(*last - 1)
        } else {
            now
        };
        *last = ts;
        ts
    }
}

impl crate::api::AcceptClock for Reorder {
    fn timestamp(&self, new: &NewMessage, now: i64) -> i64 {
        Reorder::timestamp(self, &conversation_key(&new.from_user, &new.to_user), now)
    }
}

/// The consumer's store with one of its seeded bugs; with an API bug (or none) it
/// passes every write through unchanged.
pub struct SeededStore<'a, M, S> {
    inner: &'a M,
    /// For `commit-before-write`, which commits from inside the write.
    source: &'a S,
    topic: String,
    bug: Option<SeededBug>,
    every: Every,
}

impl<'a, M, S> SeededStore<'a, M, S> {
    /// Writes to `inner`; `source` is the consumer's group, reading `topic`.
    pub fn new(
        seeded: Option<&Seeded>,
        inner: &'a M,
        source: &'a S,
        topic: &str,
    ) -> SeededStore<'a, M, S> {
        SeededStore {
            inner,
            source,
            topic: topic.to_string(),
            bug: seeded.map(|s| s.bug),
            every: Every::new(seeded.map_or(1, |s| s.every)),
        }
    }
}

impl<M, S> MessageStore for SeededStore<'_, M, S>
where
    M: MessageStore + Sync,
    S: RecordSource + Sync,
{
    type Error = M::Error;

    async fn insert_batch(&self, batch: &[StoredMessage]) -> Result<InsertOutcome, M::Error> {
        match self.bug {
            Some(SeededBug::CommitBeforeWrite) => {
                // The offsets go first: a write that fails now (or a crash) loses them.
                self.source.commit(&positions(&self.topic, batch));
                self.inner.insert_batch(batch).await
            }
            Some(SeededBug::SkipOnStoreError) => match self.inner.insert_batch(batch).await {
                Ok(o) => Ok(o),
                Err(e) => {
                    // What the original Python consumer did: log, commit, move on.
                    tracing::error!(error = %e, records = batch.len(), "seeded bug skip-on-store-error: dropping the batch");
                    Ok(InsertOutcome::default())
                }
            },
            Some(SeededBug::NoDedup) => {
                // `_id` carries the uniqueness (there is no unique index on messageId),
                // so a fresh one lets every redelivery in as another document.
                let copies: Vec<StoredMessage> = batch
                    .iter()
                    .map(|m| StoredMessage {
                        id: uuid::Uuid::new_v4().to_string(),
                        ..m.clone()
                    })
                    .collect();
                self.inner.insert_batch(&copies).await
            }
            Some(SeededBug::Corrupt) => {
                let altered: Vec<StoredMessage> = batch
                    .iter()
                    .map(|m| {
                        let mut m = m.clone();
                        if self.every.strikes() {
                            m.content = corrupt(&m.content);
                        }
                        m
                    })
                    .collect();
                self.inner.insert_batch(&altered).await
            }
            _ => self.inner.insert_batch(batch).await,
        }
    }

    async fn stored(&self, ids: &[String]) -> Result<Vec<StoredMessage>, M::Error> {
        self.inner.stored(ids).await
    }
}

/// `content` with its first character replaced by another one (same length in characters).
pub fn corrupt(content: &str) -> String {
    let mut chars = content.chars();
    let replacement = match chars.next() {
        Some('#') => '*',
        _ => '#',
    };
    std::iter::once(replacement).chain(chars).collect()
}

/// Per partition, one past the highest offset of `batch`.
fn positions(topic: &str, batch: &[StoredMessage]) -> Vec<Position> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry(m.partition).or_insert(0);
        *e = (*e).max(m.offset + 1);
    }
    next.into_iter()
        .map(|(partition, next_offset)| Position {
            topic: topic.to_string(),
            partition,
            next_offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_name_one_bug_and_its_period() {
        assert_eq!(Seeded::parse(None, Some("3")).unwrap(), None);
        assert_eq!(Seeded::parse(Some(" "), None).unwrap(), None);
        assert_eq!(
            Seeded::parse(Some("corrupt"), None).unwrap(),
            Some(Seeded {
                bug: SeededBug::Corrupt,
                every: 10
            })
        );
        assert_eq!(
            Seeded::parse(Some("reorder"), Some("1"))
                .unwrap()
                .unwrap()
                .every,
            1
        );
        let e = Seeded::parse(Some("lose-all"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("WIBER_SEEDED_BUG: unknown seeded bug \"lose-all\"")
                && SeededBug::ALL.iter().all(|b| e.contains(b.name())),
            "{e}"
        );
        for bad in ["0", "-1", "ten"] {
            let e = Seeded::parse(Some("corrupt"), Some(bad))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("WIBER_SEEDED_BUG_EVERY="), "{e}");
        }
    }

    #[test]
    fn every_strikes_on_multiples_of_n() {
        let e = Every::new(3);
        let hits: Vec<bool> = (0..7).map(|_| e.strikes()).collect();
        assert_eq!(hits, [false, false, true, false, false, true, false]);
    }

    #[test]
    fn reorder_moves_every_nth_message_of_a_conversation_before_the_previous_one() {
        let r = Reorder::new(2);
        // Two conversations interleaved: each has its own count.
        assert_eq!(r.timestamp("a", 10_000), 10_000);
        assert_eq!(r.timestamp("b", 10_001), 10_001);
        assert_eq!(r.timestamp("a", 10_002), 5_002);
        assert_eq!(r.timestamp("b", 10_003), 5_003);
        assert_eq!(r.timestamp("a", 10_004), 10_004);
        // A previous message older than 5 s: still moved before it.
        assert_eq!(r.timestamp("a", 20_000), 10_003);
        // Every message (N = 1): each one before the one before, from the second on.
        let r = Reorder::new(1);
        assert_eq!(r.timestamp("c", 100_000), 100_000);
        assert_eq!(r.timestamp("c", 100_001), 95_001);
        assert_eq!(r.timestamp("c", 100_002), 95_000);
    }

    #[test]
    fn corrupt_changes_one_character() {
        assert_eq!(corrupt("hello"), "#ello");
        assert_eq!(corrupt("#x"), "*x");
        assert_eq!(corrupt("€"), "#");
    }
}
