//! The store reads the API makes, as the store sees them: one equality on one indexed
//! field, then a sort. The server builds its queries from these, and `wiberctl store
//! explain` asks the store how it answers each, so the two cannot drift apart.
//!
//! One equality per read is deliberate: FerretDB 1.24 pushes a single equality down to
//! PostgreSQL (where a GIN index serves it) but not an `$or`, a `$in` or a `count`.
//! It pushes no sort, though, so on FerretDB-on-PostgreSQL the API reads pages in SQL
//! instead ([`sql`]), in the same order; these shapes are what it reads from MongoDB.

use crate::StoredMessage;

pub mod sql;

/// Which collection a read goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCollection {
    /// The messages collection itself.
    Messages,
    /// Its counters collection ([`crate::contract::counts_collection`]).
    Counts,
}

/// One read: `find({field: <value>}).sort(sort)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadShape {
    /// What the API calls it (`GET /messages/{a}/{b}` is `conversation`).
    pub name: &'static str,
    pub collection: ReadCollection,
    /// The field of the equality.
    pub field: &'static str,
    /// Sort keys, 1 ascending, -1 descending (empty: one document by `_id`).
    pub sort: &'static [(&'static str, i32)],
}

/// A conversation page: both directions, oldest first, ties broken by `_id` (which is
/// the message id, so that same-millisecond sends read back in order).
pub const CONVERSATION_PAGE: ReadShape = ReadShape {
    name: "conversation",
    collection: ReadCollection::Messages,
    field: StoredMessage::CONVERSATION,
    sort: &[(StoredMessage::TIMESTAMP, 1), (StoredMessage::ID, 1)],
};

/// A user's recent messages, sent or received, newest first.
pub const USER_RECENT: ReadShape = ReadShape {
    name: "user",
    collection: ReadCollection::Messages,
    field: StoredMessage::PARTICIPANTS,
    sort: &[(StoredMessage::TIMESTAMP, -1), (StoredMessage::ID, -1)],
};

/// One counter document (`total`, `u:<user>`, `c:<conversation>`), by `_id`.
pub const COUNTER: ReadShape = ReadShape {
    name: "count",
    collection: ReadCollection::Counts,
    field: StoredMessage::ID,
    sort: &[],
};

/// Every read the API makes.
pub const ALL: [ReadShape; 3] = [CONVERSATION_PAGE, USER_RECENT, COUNTER];

/// The `_id` of the counter of everything.
pub const COUNTER_TOTAL: &str = "total";
/// The `_id` of the marker that says the counters are exact (see the SQL setup).
pub const COUNTER_EXACT: &str = "$exact";
/// The field holding a counter's value.
pub const COUNTER_VALUE: &str = "n";

/// The `_id` of `user`'s counter.
pub fn user_counter(user: &str) -> String {
    format!("u:{user}")
}

/// The `_id` of the counter of the conversation whose key is `conversation`.
pub fn conversation_counter(conversation: &str) -> String {
    format!("c:{conversation}")
}
