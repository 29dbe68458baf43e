//! Types shared by the Wiber server and `wiberctl`, so neither copies the other's structs.
//!
//! Layout:
//! - [`Message`]: the message as the API returns it and as it travels on the Kafka topic.
//! - [`StoredMessage`]: the document in MongoDB (the message, `_id`, its conversation
//!   key and provenance), written by the consumer, read by the API and by `verify`.
//! - [`NewMessage`] and [`validate`]: what a client sends and the rules it must meet.
//! - [`conversation_key`]: the unordered user pair that is the Kafka key, so one
//!   conversation stays in one partition and in order.
//! - [`new_message_id`]: server-chosen ids when the client gave none.
//! - [`contract`]: the service contract: service names, env variables and their
//!   defaults, the topic/group/database/collection names of a stack.
//! - [`ledger`], [`report`]: the harness's run files (ledger lines, report schema).
//! - [`reads`]: the store reads the API makes (one indexed equality and a sort each).
//! - [`fixture`]: names of the documents `wiberctl store fill` writes.

use serde::{Deserialize, Serialize};

pub mod contract;
pub mod fixture;
pub mod ledger;
pub mod reads;
pub mod report;

/// Longest accepted user name, in characters.
pub const MAX_USER_CHARS: usize = 50;
/// Longest accepted content, in characters.
pub const MAX_CONTENT_CHARS: usize = 5000;
/// Longest accepted client-chosen message id, in characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 128;
/// Deepest page a conversation read may start at (`skip`/`offset`): a deeper OFFSET costs
/// the store a scan of every row before it, holding a read connection while it does.
pub const MAX_SKIP: u64 = 100_000;
/// Largest accepted request body for `POST /messages`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A message accepted by the API: returned to the client, published to Kafka, stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    pub from_user: String,
    pub to_user: String,
    pub content: String,
    /// Milliseconds since the Unix epoch, assigned by the API when it accepted the message.
    pub timestamp: i64,
    /// RFC 3339 rendering of `timestamp`.
    pub created_at: String,
}

impl Message {
    /// Builds a message accepted now (`timestamp_ms`), deriving `createdAt` from it.
    pub fn accept(new: NewMessage, message_id: String, timestamp_ms: i64) -> Message {
        Message {
            message_id,
            from_user: new.from_user,
            to_user: new.to_user,
            content: new.content,
            timestamp: timestamp_ms,
            created_at: rfc3339_ms(timestamp_ms),
        }
    }

    /// The Kafka key of this message's conversation.
    pub fn conversation(&self) -> String {
        conversation_key(&self.from_user, &self.to_user)
    }
}

/// A message as stored in MongoDB: THE stored document. The consumer writes it, the API
/// reads it back, and `wiberctl verify` decodes what it finds with it, so the three
/// cannot disagree on the layout.
///
/// It holds every field of [`Message`] under the same names (a test holds it to that),
/// spelled out rather than `#[serde(flatten)]`ed so the serialized field order is the
/// one the store has always written, plus:
/// - `_id`, equal to `messageId` when the consumer writes it: uniqueness of `_id` is
///   what turns a redelivered record into a duplicate-key hit (no second unique index).
///   It is a field of its own because a copy stored under another `_id` must still be
///   readable, and recognisable, as one;
/// - `conversation`, the [`conversation_key`], indexed with `timestamp` for reads;
/// - `participants`, `[fromUser, toUser]` (one name when they are the same), so a user's
///   messages are one equality on one indexed field: FerretDB pushes an equality down to
///   an index but not an `$or` of two, and on MongoDB it is a multikey index;
/// - provenance: when it was stored and which Kafka record it came from.
///
/// The `*` constants are the field names, for indexes and queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    #[serde(rename = "_id")]
    pub id: String,
    pub message_id: String,
    pub conversation: String,
    pub from_user: String,
    pub to_user: String,
    /// Sender and recipient (see above). Absent from documents written before the field
    /// existed, which then read as empty.
    #[serde(default)]
    pub participants: Vec<String>,
    pub content: String,
    /// As in [`Message::timestamp`]: when the API accepted the message.
    pub timestamp: i64,
    pub created_at: String,
    /// Milliseconds since the epoch when the consumer wrote the document.
    pub stored_at: i64,
    /// Kafka partition the record was consumed from.
    pub partition: i32,
    /// Kafka offset of the record.
    pub offset: i64,
}

/// The `participants` of a message from `from` to `to`: both names, once each.
pub fn participants(from: &str, to: &str) -> Vec<String> {
    if from == to {
        vec![from.to_string()]
    } else {
        vec![from.to_string(), to.to_string()]
    }
}

impl StoredMessage {
    pub const ID: &'static str = "_id";
    pub const MESSAGE_ID: &'static str = "messageId";
    pub const CONVERSATION: &'static str = "conversation";
    pub const FROM_USER: &'static str = "fromUser";
    pub const TO_USER: &'static str = "toUser";
    pub const PARTICIPANTS: &'static str = "participants";
    pub const CONTENT: &'static str = "content";
    pub const TIMESTAMP: &'static str = "timestamp";
    pub const CREATED_AT: &'static str = "createdAt";
    pub const STORED_AT: &'static str = "storedAt";
    pub const PARTITION: &'static str = "partition";
    pub const OFFSET: &'static str = "offset";

    /// Every field name, in the order the document is written.
    pub const FIELDS: [&'static str; 12] = [
        Self::ID,
        Self::MESSAGE_ID,
        Self::CONVERSATION,
        Self::FROM_USER,
        Self::TO_USER,
        Self::PARTICIPANTS,
        Self::CONTENT,
        Self::TIMESTAMP,
        Self::CREATED_AT,
        Self::STORED_AT,
        Self::PARTITION,
        Self::OFFSET,
    ];

    /// The document for `message`, consumed from Kafka `partition`/`offset` and stored at
    /// `stored_at` (ms); `_id` is the message id.
    pub fn new(message: Message, stored_at: i64, partition: i32, offset: i64) -> StoredMessage {
        StoredMessage {
            id: message.message_id.clone(),
            conversation: message.conversation(),
            participants: participants(&message.from_user, &message.to_user),
            message_id: message.message_id,
            from_user: message.from_user,
            to_user: message.to_user,
            content: message.content,
            timestamp: message.timestamp,
            created_at: message.created_at,
            stored_at,
            partition,
            offset,
        }
    }

    /// The message as the API returns it (the stored fields, without `_id`, the
    /// conversation key and provenance).
    pub fn into_message(self) -> Message {
        Message {
            message_id: self.message_id,
            from_user: self.from_user,
            to_user: self.to_user,
            content: self.content,
            timestamp: self.timestamp,
            created_at: self.created_at,
        }
    }
}

/// The body of `POST /messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewMessage {
    pub from_user: String,
    pub to_user: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// A field that failed validation, and why. Rendered to clients as a 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ValidationError {
            field,
            reason: reason.into(),
        }
    }
}

/// Checks a new message against the contract: users 1–50 characters without control
/// characters, content 1–5000 characters that the store can hold ([`store_cannot_hold`]),
/// an optional message id of 1–128 printable characters.
pub fn validate(m: &NewMessage) -> Result<(), ValidationError> {
    validate_shape(m)?;
    if let Some(reason) = store_cannot_hold(&m.content) {
        return Err(ValidationError::new("content", reason));
    }
    Ok(())
}

/// [`validate`] without the store's rule: what the consumer holds a record of the topic
/// to before it writes it. The store itself is the authority on what it can hold (a
/// record put on the topic behind the API's back is written, refused by the store,
/// isolated and dead-lettered with the store's own error), and the API refuses the same
/// values up front so that a client is never acknowledged for them.
pub fn validate_shape(m: &NewMessage) -> Result<(), ValidationError> {
    validate_user("fromUser", &m.from_user)?;
    validate_user("toUser", &m.to_user)?;
    let n = m.content.chars().count();
    if n == 0 || n > MAX_CONTENT_CHARS {
        return Err(ValidationError::new(
            "content",
            format!("must be 1 to {MAX_CONTENT_CHARS} characters, got {n}"),
        ));
    }
    if let Some(id) = &m.message_id {
        validate_message_id("messageId", id)?;
    }
    Ok(())
}

/// Why the store cannot hold `s`, if it cannot: the one rule every string of a message
/// must meet besides its field's own, so that nothing is acknowledged that the consumer
/// could never write (it would be dead-lettered instead of stored).
///
/// Found against the real store (FerretDB 1.24 on PostgreSQL) and MongoDB's rules, by the
/// end-to-end property test (`cli/tests/hostile_input.rs`): U+0000 is the only character
/// refused. PostgreSQL's `jsonb` (and `text`) cannot hold it (`unsupported Unicode escape
/// sequence`, SQLSTATE 22P05), and MongoDB's BSON C strings end at it (keys, regexes).
/// Every other Unicode scalar value, C0/C1 controls, noncharacters (U+FFFE, U+FFFF,
/// U+FDD0..), astral planes, bidi and zero-width marks is stored and read back
/// byte-identical. Lone surrogates cannot reach this function: JSON that spells one is
/// malformed (400) and Rust strings cannot hold one.
pub fn store_cannot_hold(s: &str) -> Option<&'static str> {
    s.contains('\u{0}').then_some(
        "must not contain U+0000 (NUL): the store cannot hold it (PostgreSQL jsonb refuses it)",
    )
}

/// Checks a user name (also used for path parameters of the read routes).
pub fn validate_user(field: &'static str, user: &str) -> Result<(), ValidationError> {
    let n = user.chars().count();
    if n == 0 || n > MAX_USER_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {MAX_USER_CHARS} characters, got {n}"),
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a client-chosen message id (body `messageId` or header `Idempotency-Key`).
pub fn validate_message_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_MESSAGE_ID_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {MAX_MESSAGE_ID_CHARS} characters, got {n}"),
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// The conversation of two users, independent of direction. User names cannot hold
/// control characters, so the unit separator cannot be confused with a name.
pub fn conversation_key(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{lo}\u{1f}{hi}")
}

/// A fresh server-chosen message id: `msg_<ms>_<16 hex>`, the seed's shape with more
/// randomness, so ids from several API instances never collide in practice.
pub fn new_message_id(timestamp_ms: i64) -> String {
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!("msg_{timestamp_ms}_{}", &r[..16])
}

/// RFC 3339 with millisecond precision and a `Z` suffix, e.g. `2025-01-27T10:30:00.040Z`.
pub fn rfc3339_ms(timestamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(from: &str, to: &str, content: &str) -> NewMessage {
        NewMessage {
            from_user: from.into(),
            to_user: to.into(),
            content: content.into(),
            message_id: None,
        }
    }

    #[test]
    fn conversation_key_ignores_direction() {
        assert_eq!(
            conversation_key("alice", "bob"),
            conversation_key("bob", "alice")
        );
        assert_ne!(conversation_key("ab", "c"), conversation_key("a", "bc"));
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&new("alice", "bob", "hi")).is_ok());
        assert_eq!(
            validate(&new("", "bob", "hi")).unwrap_err().field,
            "fromUser"
        );
        assert_eq!(
            validate(&new("a", &"b".repeat(51), "hi"))
                .unwrap_err()
                .field,
            "toUser"
        );
        assert_eq!(
            validate(&new("a\n", "b", "hi")).unwrap_err().field,
            "fromUser"
        );
        assert_eq!(validate(&new("a", "b", "")).unwrap_err().field, "content");
        assert_eq!(
            validate(&new("a", "b", &"x".repeat(5001)))
                .unwrap_err()
                .field,
            "content"
        );
        // Limits count characters, not bytes.
        assert!(validate(&new(&"é".repeat(50), "b", &"€".repeat(5000))).is_ok());
        let mut m = new("a", "b", "c");
        m.message_id = Some("has space".into());
        assert_eq!(validate(&m).unwrap_err().field, "messageId");
    }

    #[test]
    fn message_json_uses_the_contract_names() {
        let m = Message::accept(
            new("alice", "bob", "Hello!"),
            "m1".into(),
            1_758_865_780_040,
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["messageId"], "m1");
        assert_eq!(v["fromUser"], "alice");
        assert_eq!(v["toUser"], "bob");
        assert_eq!(v["timestamp"], 1_758_865_780_040i64);
        assert_eq!(v["createdAt"], "2025-09-26T05:49:40.040Z");
    }

    #[test]
    fn the_stored_document_holds_the_message_under_the_same_names() {
        let m = Message::accept(
            new("bob", "alice", "Hello!"),
            "m1".into(),
            1_758_865_780_040,
        );
        let stored = StoredMessage::new(m.clone(), 1_758_865_781_000, 3, 42);
        let doc = serde_json::to_value(&stored).unwrap();
        let doc = doc.as_object().unwrap();
        // The constants are the serde names, and there is no field without a constant.
        let mut names: Vec<&str> = doc.keys().map(String::as_str).collect();
        let mut consts = StoredMessage::FIELDS.to_vec();
        names.sort_unstable();
        consts.sort_unstable();
        assert_eq!(names, consts);
        // Every field of the API's message is stored under its name, with its value.
        for (k, v) in serde_json::to_value(&m).unwrap().as_object().unwrap() {
            assert_eq!(doc.get(k), Some(v), "stored document lacks {k}");
        }
        assert_eq!(doc[StoredMessage::ID], "m1");
        assert_eq!(
            doc[StoredMessage::CONVERSATION],
            conversation_key("alice", "bob")
        );
        assert_eq!(doc[StoredMessage::STORED_AT], 1_758_865_781_000i64);
        assert_eq!(doc[StoredMessage::PARTITION], 3);
        assert_eq!(doc[StoredMessage::OFFSET], 42);
        assert_eq!(stored.into_message(), m);
    }

    #[test]
    fn server_ids_are_unique_and_valid() {
        let a = new_message_id(1);
        let b = new_message_id(1);
        assert_ne!(a, b);
        assert!(validate_message_id("messageId", &a).is_ok());
    }
}
