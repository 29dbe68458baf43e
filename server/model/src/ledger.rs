//! The bench ledger: one line per request `wiberctl bench` made, so `wiberctl verify` can
//! hold the store to what the API promised (ARCHITECTURE.md, "The invariants").
//!
//! Everything verify must recompute is a pure function of the run id, the conversation
//! index, the sequence number and the content size: message ids, user names and the
//! content itself. The content starts with `run:conv:seq|`, so a stored document can be
//! traced back to the request it came from even when its `_id` was changed.

use serde::{Deserialize, Serialize};

/// What the API's answer means for the store (Jepsen's queue-checker outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: Kafka acknowledged it; it must be stored exactly once.
    Ok,
    /// 4xx: refused before Kafka; it must not be stored.
    Failed,
    /// Timeout, 5xx or connection error: it may or may not be stored.
    Unknown,
}

impl Outcome {
    /// Maps an HTTP status to an outcome (`None`: no answer at all).
    pub fn from_status(status: Option<u16>) -> Outcome {
        match status {
            Some(s) if (200..300).contains(&s) => Outcome::Ok,
            Some(s) if (400..500).contains(&s) => Outcome::Failed,
            _ => Outcome::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One line of `ledger.jsonl`: the final state of one request (after its retries).
/// Times are ms since the Unix epoch, on the bench host's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Client-chosen id, [`message_id`] of (run, conversation, seq).
    pub message_id: String,
    pub run: String,
    /// Conversation index within the run (users [`users`] of it).
    pub conversation: u32,
    /// Position in the conversation, from 0; sends within a conversation are sequential.
    pub seq: u64,
    /// When the request was due (open loop: start + i/rate, whatever the server did).
    pub due: i64,
    /// When the first attempt actually started (absent if it never got a connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<i64>,
    /// When the last attempt got its answer or gave up.
    pub answered: i64,
    pub outcome: Outcome,
    /// HTTP status of the last attempt, if it got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Error kind of the last attempt (`timeout`, `connect`, `http_503`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `timestamp` of the API's `ok` answer body: ms since the epoch, assigned by the API
    /// on accept (its clock, not ours). The stored document must carry the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_timestamp: Option<i64>,
    /// Where Kafka put the acknowledged record (the answer's `wiber-partition` and
    /// `wiber-offset` headers): how a message later found lost is looked up in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    pub attempts: u32,
    /// Content length in bytes.
    pub size: usize,
    /// [`content_hash`] of the content sent, 16 hex digits.
    pub content_hash: String,
    /// Sent during warm-up: stored like the rest, left out of the statistics.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
    /// `--find-max` step this request belongs to (0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The message id of request (run, conversation, seq): `<run>-c<conv>-s<seq>`, the
/// sequence zero-padded to 9 digits so that, within a conversation, the ids sort as the
/// sequence numbers do (below 10^9). The API orders a conversation by (timestamp,
/// messageId): two sequential sends accepted in the same millisecond must come back in
/// sequence order.
pub fn message_id(run: &str, conversation: u32, seq: u64) -> String {
    format!("{run}-c{conversation}-s{seq:09}")
}

/// Prefix shared by every user name of a run, so reads can select one run's documents.
pub fn user_prefix(run: &str) -> String {
    format!("bench-{run}-")
}

/// The (from, to) users of a conversation: `bench-<run>-u<k>a` → `bench-<run>-u<k>b`.
/// Each run has its own users, so runs never share a conversation.
pub fn users(run: &str, conversation: u32) -> (String, String) {
    let p = user_prefix(run);
    (
        format!("{p}u{conversation}a"),
        format!("{p}u{conversation}b"),
    )
}

/// The content of request (run, conversation, seq): `run:conv:seq|` then deterministic
/// letters up to `size` bytes (at least the prefix). Deterministic so that verify can
/// recompute it; pseudo-random so that compression does not flatter the numbers.
pub fn content(run: &str, conversation: u32, seq: u64, size: usize) -> String {
    let mut s = format!("{run}:{conversation}:{seq}|");
    let mut x = fnv1a(s.as_bytes()) | 1;
    while s.len() < size {
        // xorshift64: cheap, and good enough to avoid long runs of one letter.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push((b'a' + (x % 26) as u8) as char);
    }
    s
}

/// Reads (run, conversation, seq) back from content made by [`content`].
pub fn parse_content_key(content: &str) -> Option<(String, u32, u64)> {
    let head = content.split('|').next()?;
    let mut it = head.rsplitn(3, ':');
    let seq = it.next()?.parse().ok()?;
    let conv = it.next()?.parse().ok()?;
    let run = it.next()?;
    Some((run.to_string(), conv, seq))
}

/// Reads (conversation, seq) back from a message id made by [`message_id`] for `run`
/// (padded or not: `-s000000042` and `-s42` both read as 42).
pub fn parse_message_id(run: &str, id: &str) -> Option<(u32, u64)> {
    let rest = id.strip_prefix(run)?.strip_prefix("-c")?;
    let (conv, seq) = rest.split_once("-s")?;
    Some((conv.parse().ok()?, seq.parse().ok()?))
}

/// 64-bit FNV-1a: a stable hash we compute ourselves (no dependency, same everywhere).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The ledger's content fingerprint: FNV-1a of the UTF-8 bytes, 16 hex digits.
pub fn content_hash(content: &str) -> String {
    format!("{:016x}", fnv1a(content.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_sized_and_parseable() {
        let a = content("r1", 7, 42, 256);
        assert_eq!(a, content("r1", 7, 42, 256));
        assert_eq!(a.len(), 256);
        assert_ne!(a, content("r1", 7, 43, 256));
        assert!(a.starts_with("r1:7:42|"));
        assert_eq!(parse_content_key(&a), Some(("r1".into(), 7, 42)));
        // Shorter than the prefix: the prefix is kept whole.
        assert_eq!(content("r1", 7, 42, 1), "r1:7:42|");
        assert_eq!(parse_content_key("garbage"), None);
    }

    #[test]
    fn ids_and_users_round_trip() {
        let id = message_id("ab12", 3, 99);
        assert_eq!(id, "ab12-c3-s000000099");
        assert_eq!(parse_message_id("ab12", &id), Some((3, 99)));
        assert_eq!(parse_message_id("ab12", "ab12-c3-s99"), Some((3, 99)));
        assert_eq!(parse_message_id("zz", &id), None);
        let (a, b) = users("ab12", 3);
        assert!(a.starts_with(&user_prefix("ab12")) && b.ends_with("u3b"));
        assert!(crate::validate_message_id("messageId", &id).is_ok());
    }

    #[test]
    fn ids_sort_as_sequence_numbers_within_a_conversation() {
        let seqs = [
            0u64,
            1,
            2,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1_000,
            12_345,
            999_999_999,
        ];
        let mut ids: Vec<String> = seqs.iter().rev().map(|s| message_id("r1", 7, *s)).collect();
        ids.sort();
        let back: Vec<u64> = ids
            .iter()
            .map(|id| parse_message_id("r1", id).unwrap().1)
            .collect();
        assert_eq!(back, seqs);
    }

    #[test]
    fn acked_timestamp_is_optional_and_camel_case() {
        let mut e = LedgerEntry {
            message_id: message_id("r1", 0, 1),
            run: "r1".into(),
            conversation: 0,
            seq: 1,
            due: 10,
            sent: Some(11),
            answered: 12,
            outcome: Outcome::Ok,
            status: Some(200),
            error: None,
            acked_timestamp: None,
            partition: None,
            offset: None,
            attempts: 1,
            size: 8,
            content_hash: content_hash("x"),
            warmup: false,
            step: 0,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert!(v.get("ackedTimestamp").is_none(), "{v}");
        e.acked_timestamp = Some(1_700_000_000_123);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["ackedTimestamp"], 1_700_000_000_123i64);
        assert_eq!(serde_json::from_value::<LedgerEntry>(v).unwrap(), e);
    }

    #[test]
    fn outcomes_follow_the_contract() {
        assert_eq!(Outcome::from_status(Some(200)), Outcome::Ok);
        assert_eq!(Outcome::from_status(Some(422)), Outcome::Failed);
        assert_eq!(Outcome::from_status(Some(503)), Outcome::Unknown);
        assert_eq!(Outcome::from_status(None), Outcome::Unknown);
        assert_eq!(serde_json::to_value(Outcome::Unknown).unwrap(), "unknown");
    }

    #[test]
    fn hash_is_fnv1a() {
        // Reference value of FNV-1a 64 for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(content_hash("a"), "af63dc4c8601ec8c");
    }
}
