//! The documents `wiberctl store fill` writes straight to the store, to test reads at
//! scale. Everything they carry says "fixture": `_id`s start with [`ID_PREFIX`] and users
//! with [`USER_PREFIX`], so `verify` (which selects a run by its own `bench-<run>-`
//! users and `<run>-` ids) never mistakes them for a run's messages, and a reader of the
//! store can tell them apart at a glance.
//!
//! Conversation `k` is between [`users`]`(k)`; a fill writes conversations `0..n`, each
//! with the same number of messages, so a benchmark can read any of them knowing only
//! how many there are.

/// Prefix of every fixture document's `_id` (and `messageId`).
pub const ID_PREFIX: &str = "fixture-";
/// Prefix of every fixture user.
pub const USER_PREFIX: &str = "fixture-u";

/// The two users of fixture conversation `k`: `fixture-u<k>a` and `fixture-u<k>b`.
pub fn users(k: u64) -> (String, String) {
    (format!("{USER_PREFIX}{k}a"), format!("{USER_PREFIX}{k}b"))
}

/// The id of message `seq` of conversation `k` written by fill `fill`:
/// `fixture-<fill>-c<k>-s<seq>`, the sequence zero-padded so ids sort as sequences do.
pub fn message_id(fill: &str, k: u64, seq: u64) -> String {
    format!("{ID_PREFIX}{fill}-c{k}-s{seq:09}")
}
