//! Why an acknowledged message is not stored, when Kafka can say: the consumer
//! dead-lettered it (the store refused it, or it did not decode), its messageId was
//! reused with other content (a conflict), or it waits behind a partition the consumer
//! group never got past (stalled). What Kafka cannot explain stays `lost`.
//!
//! [`Fates`] holds what verify learnt from Kafka after the drain: the dead-letter
//! topic's records of the run's messages (only those: the topic may hold other runs'
//! records, and their payloads are not kept) and the group's committed offsets. The check
//! (`check_with` in the `check` module) asks it about each `ok` request it does not find stored.

use std::collections::HashMap;

use wiber_model::contract::dlq::Class;
use wiber_model::ledger::{self, LedgerEntry};

use crate::kafka::dlq::{DeadLetter, DlqPos};
use crate::kafka::PartitionLag;

/// A reason kept per dead letter at most, in bytes: examples show it, and a run whose
/// every message was refused must not hold every error whole.
const MAX_REASON: usize = 200;

/// What verify keeps of one dead letter of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub pos: DlqPos,
    /// `None`: no class header (a consumer older than the classes): counted as dead-lettered.
    pub class: Option<Class>,
    pub reason: String,
    /// [`ledger::content_hash`] of the dead-lettered message's content: for a conflict,
    /// whether the run's message is the one refused (its hash) or the one kept.
    pub content_hash: Option<String>,
}

impl Letter {
    fn describe(&self, topic: &str) -> String {
        format!(
            "dead-lettered as {} at {topic}@{}: {}",
            self.class.map_or("unclassified", Class::name),
            self.pos,
            if self.reason.is_empty() {
                "no reason given"
            } else {
                &self.reason
            }
        )
    }
}

/// The dead letters of one messageId: the first of each kind.
#[derive(Debug, Clone, Default)]
struct IdLetters {
    /// Refused, undecodable, or unclassified.
    dead: Option<Letter>,
    conflict: Option<Letter>,
}

/// Why an `ok` request is not stored, as far as Kafka can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unstored {
    /// In the dead-letter topic (not as a conflict).
    DeadLettered(String),
    /// Still in its partition's log, at or above the group's committed offset: never
    /// consumed past.
    Stalled(String),
    /// Nothing explains it.
    Lost,
}

/// What Kafka says of the run's messages (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Fates {
    /// The dead-letter topic, for the examples.
    pub dlq_topic: String,
    letters: HashMap<String, IdLetters>,
    /// The group's committed offset per partition (`None`: it never committed there),
    /// and the partition's log: low and high watermarks.
    committed: HashMap<i32, (Option<i64>, i64, i64)>,
    /// The stall line of each stalled partition.
    stalls: HashMap<i32, String>,
    /// Dead letters read, kept (of the run), and naming no messageId.
    pub read: u64,
    pub kept: u64,
    pub unnamed: u64,
}

impl Fates {
    pub fn new(dlq_topic: &str) -> Fates {
        Fates {
            dlq_topic: dlq_topic.to_string(),
            ..Fates::default()
        }
    }

    /// Where the group stands (its committed offsets and stall reports) at `now_ms`.
    pub fn set_lags(&mut self, lags: &[PartitionLag], now_ms: i64) {
        self.committed = lags
            .iter()
            .map(|l| (l.partition, (l.committed, l.low, l.high)))
            .collect();
        self.stalls = lags
            .iter()
            .filter_map(|l| Some((l.partition, l.stall_line(now_ms)?)))
            .collect();
    }

    /// Takes dead letter `d` in if `of_run` says its messageId is one of the run's (so
    /// only the run's letters are kept, whatever else the topic holds).
    pub fn add(&mut self, d: &DeadLetter, of_run: impl Fn(&str) -> bool) {
        self.read += 1;
        let Some(id) = d.message_id.as_deref() else {
            self.unnamed += 1;
            return;
        };
        if !of_run(id) {
            return;
        }
        self.kept += 1;
        let mut reason = d.reason.clone().unwrap_or_default();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        let letter = Letter {
            pos: d.pos,
            class: d.class,
            reason,
            content_hash: d
                .message
                .as_ref()
                .ok()
                .map(|m| ledger::content_hash(&m.content)),
        };
        let slot = self.letters.entry(id.to_string()).or_default();
        let kind = match d.class {
            Some(Class::Conflict) => &mut slot.conflict,
            _ => &mut slot.dead,
        };
        kind.get_or_insert(letter);
    }

    /// The conflict dead letter of `id`, if its id was reused with other content.
    pub fn conflict(&self, id: &str) -> Option<&Letter> {
        self.letters.get(id)?.conflict.as_ref()
    }

    /// A conflict, in words, for request `e` whose id has conflict letter `c`.
    pub fn describe_conflict(&self, e: &LedgerEntry, c: &Letter) -> String {
        let whose = if self.refused_is_ours(e, c) {
            "the store holds other content under this messageId; this message was"
        } else {
            "another message reused this messageId with other content and was"
        };
        format!("{whose} {}", c.describe(&self.dlq_topic))
    }

    /// Whether the conflict letter `c` holds `e`'s own message (then what is stored
    /// under its id is another message's, and not `e` corrupted).
    pub fn refused_is_ours(&self, e: &LedgerEntry, c: &Letter) -> bool {
        c.content_hash.as_deref() == Some(e.content_hash.as_str())
    }

    /// Why `ok` request `e` is not stored: a dead letter of its id, else its place
    /// behind its partition's committed offset, else nothing (lost).
    pub fn unstored(&self, e: &LedgerEntry) -> Unstored {
        if let Some(d) = self
            .letters
            .get(&e.message_id)
            .and_then(|l| l.dead.as_ref())
        {
            return Unstored::DeadLettered(format!(
                "acknowledged (ok), not stored: {}",
                d.describe(&self.dlq_topic)
            ));
        }
        if let (Some(p), Some(o)) = (e.partition, e.offset) {
            if let Some(&(committed, low, high)) = self.committed.get(&p) {
                // Still in the log (`low <= o < high`), and the group not past it. A record
                // the log no longer holds at its offset (truncated when an unclean leader
                // came back, or deleted by retention) was not consumed late: it is lost,
                // and so is one the group committed past.
                let in_log = low <= o && o < high;
                if in_log && committed.is_none_or(|c| c <= o) {
                    let at = committed.map_or("has no committed offset".to_string(), |c| {
                        format!("is committed only to {c}")
                    });
                    let stall = self
                        .stalls
                        .get(&p)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default();
                    return Unstored::Stalled(format!(
                        "acknowledged (ok), not stored: partition {p} {at}, at or below this \
                         message's offset {o}: never consumed past{stall}"
                    ));
                }
            }
        }
        Unstored::Lost
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kafka::dlq::{decode, tests::record};

    const RUN: &str = "r1";

    /// Request (conv, seq) of run `RUN`, acknowledged (`ok`), as the bench ledger has it.
    /// (Not `check`'s test helper: `check` imports this module, and the layering test
    /// holds sibling modules to one direction.)
    fn entry(conv: u32, seq: u64) -> LedgerEntry {
        let content = ledger::content(RUN, conv, seq, 40);
        serde_json::from_value(serde_json::json!({
            "messageId": ledger::message_id(RUN, conv, seq),
            "run": RUN, "conversation": conv, "seq": seq, "due": 0, "answered": 1,
            "outcome": "ok", "status": 200, "attempts": 1, "size": content.len(),
            "contentHash": ledger::content_hash(&content),
        }))
        .expect("a ledger entry")
    }

    /// A dead letter of request (0, seq) of the run, as the consumer writes it.
    pub(crate) fn letter(offset: i64, class: &str, seq: u64, content: Option<&str>) -> DeadLetter {
        let e = entry(0, seq);
        let (from, to) = ledger::users(RUN, 0);
        let m = wiber_model::Message {
            message_id: e.message_id.clone(),
            from_user: from,
            to_user: to,
            content: content
                .map(str::to_string)
                .unwrap_or_else(|| ledger::content(RUN, 0, seq, 40)),
            timestamp: 1,
            created_at: wiber_model::rfc3339_ms(1),
        };
        decode(record(offset, class, &serde_json::to_vec(&m).unwrap()))
    }

    #[test]
    fn only_the_runs_letters_are_kept() {
        let mut f = Fates::new("wiber.messages.dlq");
        let ours = letter(0, "refused", 1, None);
        let mut theirs = letter(1, "refused", 2, None);
        theirs.message_id = Some("someone-else".into());
        let mut unnamed = letter(2, "undecodable", 3, None);
        unnamed.message_id = None;
        for d in [&ours, &theirs, &unnamed] {
            f.add(d, |id| id.starts_with(RUN));
        }
        assert_eq!((f.read, f.kept, f.unnamed), (3, 1, 1));
        assert!(f.letters.contains_key(&ledger::message_id(RUN, 0, 1)));
        assert!(!f.letters.contains_key("someone-else"));
    }

    #[test]
    fn a_long_reason_is_cut() {
        let mut f = Fates::new("t.dlq");
        let mut d = letter(0, "refused", 0, None);
        d.reason = Some("é".repeat(300));
        f.add(&d, |_| true);
        let Unstored::DeadLettered(why) = f.unstored(&entry(0, 0)) else {
            panic!("dead-lettered");
        };
        assert!(why.len() < 300, "{why}");
        assert!(why.ends_with('…'), "{why}");
    }

    #[test]
    fn behind_the_committed_offset_is_stalled_past_it_is_lost() {
        let mut f = Fates::new("t.dlq");
        let lag = |partition, committed| PartitionLag {
            partition,
            committed,
            low: 0,
            high: 100,
            lag: 100 - committed.unwrap_or(0),
            stall: None,
        };
        f.set_lags(&[lag(0, Some(50)), lag(1, None)], 0);
        let at = |p, o| {
            let mut e = entry(0, 0);
            (e.partition, e.offset) = (Some(p), Some(o));
            e
        };
        assert!(matches!(f.unstored(&at(0, 50)), Unstored::Stalled(_)));
        assert!(matches!(f.unstored(&at(0, 70)), Unstored::Stalled(_)));
        assert_eq!(f.unstored(&at(0, 49)), Unstored::Lost, "consumed past it");
        // Truncated away (an unclean leader's acked records): the log ends below it, and
        // the group drained what the log holds. Lost, not stalled.
        assert_eq!(f.unstored(&at(0, 100)), Unstored::Lost, "not in the log");
        assert_eq!(f.unstored(&at(0, 250)), Unstored::Lost, "not in the log");
        assert!(matches!(f.unstored(&at(1, 0)), Unstored::Stalled(_)));
        assert_eq!(f.unstored(&at(2, 0)), Unstored::Lost, "no such partition");
        assert_eq!(f.unstored(&entry(0, 0)), Unstored::Lost, "unplaced");
        // A stall report is quoted.
        let mut stuck = lag(0, Some(50));
        stuck.stall = crate::kafka::tests::stalled(0, 50, 100).stall;
        f.set_lags(&[stuck], 121_000);
        let Unstored::Stalled(why) = f.unstored(&at(0, 60)) else {
            panic!("stalled");
        };
        assert!(why.contains("stalled p0@50 for 2m"), "{why}");
    }
}
