//! MongoDB adapter: the only module that touches the `mongodb` crate. The document's
//! layout is [`StoredMessage`] (shared with `wiberctl verify`): `_id` = `messageId`
//! (uniqueness without a second unique index, which is also what FerretDB enforces
//! cheaply), `conversation` and `participants` for the reads, and provenance
//! (`storedAt`, `partition`, `offset`) on every document. What this module adds is how
//! the collection is used: indexes, write concern, what a duplicate key means, the read
//! queries. The consumer sees it through [`MessageStore`], the API through [`ReadStore`]
//! (both in [`crate::seams`], with [`StoreError`] and [`InsertOutcome`]).
//!
//! Every read is one equality on one field, then a sort (the shapes are in
//! [`wiber_model::reads`]): FerretDB pushes a single equality down to PostgreSQL, where
//! the GIN indexes of `server/sql/ferretdb-postgres.sql` serve it, and MongoDB serves it
//! from the indexes created here. Counts count documents (MongoDB's indexes make that
//! cheap). On FerretDB-on-PostgreSQL the API reads pages and exact counters in SQL
//! instead (`sql_reads`, which falls back on these reads).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use wiber_model::reads::{self, ReadShape};
use wiber_model::{conversation_key, Message, StoredMessage};

use crate::config::MongoConfig;
use crate::seams::{CountScope, FailureClass, MessageStore, ReadStore};
pub use crate::seams::{InsertOutcome, StoreError};

/// MongoDB's duplicate-key error code: for us, a de-duplication hit.
const DUPLICATE_KEY: i32 = 11000;
/// `NamespaceExists`: a `create` of a collection that is already there.
const NAMESPACE_EXISTS: i32 = 48;

/// Server error codes that refuse a document for what it holds: retrying the same
/// document cannot help. BadValue, FailedToParse, TypeMismatch, InvalidBSON,
/// DollarPrefixedFieldName, InvalidPath (55), EmptyFieldName (56), InvalidDBRef (57),
/// DocumentValidationFailure, BSONObjectTooLarge, KeyTooLong.
const REFUSING_CODES: [i32; 11] = [2, 9, 14, 22, 52, 55, 56, 57, 121, 10334, 17280];

/// PostgreSQL error classes (under FerretDB, which passes the SQLSTATE on in its
/// `InternalError` text) that refuse a value for what it is: 22 "data exception" (e.g.
/// 22P05, U+0000 in jsonb; 22021, bytes that are not UTF-8) and 54 "program limit
/// exceeded" (e.g. an index row too large). Other classes (connections, locks,
/// read-only, disk full, shutdown) may pass: they are not permanent.
const REFUSING_SQLSTATE_CLASSES: [&str; 2] = ["SQLSTATE 22", "SQLSTATE 54"];

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        let class = classify(&e);
        StoreError::of(class, e.to_string())
    }
}

/// What retrying a failed command can do. Refusals are named by code or by the
/// PostgreSQL class FerretDB reports; the network, server selection, pools and
/// not-primary states are transient; anything else is unknown (retried, never dropped).
fn classify(e: &mongodb::error::Error) -> FailureClass {
    if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || matches!(
            *e.kind,
            ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::DnsResolve { .. }
        )
    {
        return FailureClass::Transient;
    }
    match *e.kind {
        ErrorKind::Command(ref c) => class_of(c.code, &c.message),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref w)) => {
            class_of(w.code, &w.message)
        }
        ErrorKind::InsertMany(ref ime) => {
            if let Some(w) = ime
                .write_errors
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|w| w.code != DUPLICATE_KEY)
            {
                class_of(w.code, &w.message)
            } else {
                FailureClass::Unknown
            }
        }
        ErrorKind::BsonSerialization(_) => FailureClass::Permanent,
        _ => FailureClass::Unknown,
    }
}

/// The class of a server error `code` with `message`.
fn class_of(code: i32, message: &str) -> FailureClass {
    if REFUSING_CODES.contains(&code)
        || REFUSING_SQLSTATE_CLASSES
            .iter()
            .any(|class| message.contains(class))
    {
        FailureClass::Permanent
    } else {
        FailureClass::Unknown
    }
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    messages: Collection<Document>,
    /// The counters' opt-in of `messages` (see [`wiber_model::contract::counts_collection`]):
    /// created before it, so that FerretDB-on-PostgreSQL counts it.
    counts: Collection<Document>,
}

impl Store {
    /// Connects (lazily: the driver dials on first use) and applies the write concern.
    pub async fn connect(cfg: &MongoConfig) -> anyhow::Result<Store> {
        let mut opts = ClientOptions::parse(&cfg.mongo_uri)
            .await
            .map_err(|e| anyhow::anyhow!("invalid MONGO_URI {:?}: {e}", cfg.mongo_uri))?;
        opts.app_name = Some("wiber".into());
        opts.server_selection_timeout = Some(Duration::from_secs(5));
        opts.connect_timeout = Some(Duration::from_secs(3));
        let w = match cfg.write_concern.as_str() {
            "majority" => Acknowledgment::Majority,
            n => Acknowledgment::Nodes(n.parse().map_err(|_| {
                anyhow::anyhow!("MONGO_WRITE_CONCERN must be `majority` or a number, got {n:?}")
            })?),
        };
        let wc = WriteConcern::builder().w(w).journal(cfg.journal).build();
        let client = Client::with_options(opts)?;
        let db = client.database(&cfg.mongo_db);
        let messages = db.collection_with_options(
            &cfg.mongo_collection,
            mongodb::options::CollectionOptions::builder()
                .write_concern(wc)
                .build(),
        );
        let counts = db.collection(&wiber_model::contract::counts_collection(
            &cfg.mongo_collection,
        ));
        Ok(Store {
            client,
            messages,
            counts,
        })
    }

    /// Creates the counters collection if it is missing, then the read indexes that are
    /// missing (idempotent). Uniqueness comes from `_id`.
    ///
    /// The counters collection comes first: on FerretDB-on-PostgreSQL the messages
    /// collection is counted only if its counters collection exists when it is created
    /// (see `server/sql/ferretdb-postgres.sql`). On MongoDB it stays empty, and counts
    /// count documents.
    ///
    /// Only missing indexes are created, one per command: FerretDB 1.24 (SQLite) panics
    /// on a `createIndexes` that names several indexes which already exist, and that
    /// happens on every restart otherwise. A single existing index is answered normally,
    /// so two instances racing on the same index are harmless. They are what MongoDB
    /// reads with; on FerretDB none is created (see below).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        match self
            .counts
            .client()
            .database(self.counts.namespace().db.as_str())
            .create_collection(self.counts.name())
            .await
        {
            Ok(()) => {}
            Err(e) if matches!(*e.kind, ErrorKind::Command(ref c) if c.code == NAMESPACE_EXISTS) => {
            }
            Err(e) => return Err(e.into()),
        }
        // On FerretDB these btree indexes serve nothing (its equality is jsonb
        // containment, which the GIN indexes of the SQL setup serve, and pages on
        // PostgreSQL are read in SQL from the setup's page indexes), and they cost every
        // insert two index entries: measured 0.06 cores of PostgreSQL at 5,000 msg/s.
        if self.is_ferretdb().await? {
            return Ok(());
        }
        let existing = self
            .messages
            .list_index_names()
            .await
            .or_else(|e| match *e.kind {
                // The collection does not exist yet: nothing is indexed.
                ErrorKind::Command(ref c) if c.code == 26 => Ok(Vec::new()),
                _ => Err(e),
            })?;
        let wanted = [
            (
                "conversation_time",
                doc! {(StoredMessage::CONVERSATION): 1, (StoredMessage::TIMESTAMP): 1},
            ),
            (
                "participants_time",
                doc! {(StoredMessage::PARTICIPANTS): 1, (StoredMessage::TIMESTAMP): -1},
            ),
        ];
        for (name, keys) in wanted {
            if existing.iter().any(|n| n == name) {
                continue;
            }
            let model = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).build())
                .build();
            self.messages.create_index(model).await?;
        }
        Ok(())
    }

    /// Whether the server is FerretDB (its `buildInfo` says `ferretdbVersion`).
    async fn is_ferretdb(&self) -> Result<bool, StoreError> {
        let info = self
            .client
            .database("admin")
            .run_command(doc! {"buildInfo": 1})
            .await?;
        Ok(info.contains_key("ferretdbVersion"))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }

    /// Writes a batch with one unordered `insert_many`. Duplicate-key errors are
    /// de-duplication hits; any other failure fails the whole call so the caller retries
    /// the batch (retrying is safe: what was written comes back as duplicates).
    pub async fn insert_batch(&self, batch: &[StoredMessage]) -> Result<InsertOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let docs = batch
            .iter()
            .map(|m| {
                bson::to_document(m).map_err(|e| {
                    StoreError::of(
                        FailureClass::Permanent,
                        format!("cannot encode message {} as BSON: {e}", m.id),
                    )
                })
            })
            .collect::<Result<Vec<Document>, _>>()?;
        match self.messages.insert_many(docs).ordered(false).await {
            Ok(r) => Ok(InsertOutcome {
                inserted: r.inserted_ids.len(),
                duplicates: Vec::new(),
            }),
            Err(e) => match *e.kind {
                ErrorKind::InsertMany(ref ime) if ime.write_concern_error.is_none() => {
                    let errors: Vec<WriteError<'_>> = ime
                        .write_errors
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|w| WriteError {
                            index: w.index,
                            code: w.code,
                            message: &w.message,
                        })
                        .collect();
                    outcome_with_errors(batch, &errors)
                }
                _ => Err(e.into()),
            },
        }
    }

    /// The stored documents among `ids`: one `{_id: id}` lookup each, 8 at a time (an
    /// equality FerretDB pushes down to its `_id` index; an `$in` it would not). Used
    /// only for de-duplication hits, to hold them to the stored content.
    pub async fn stored(&self, ids: &[String]) -> Result<Vec<StoredMessage>, StoreError> {
        use futures::StreamExt;
        let found: Vec<Result<Option<Document>, mongodb::error::Error>> =
            futures::stream::iter(ids.to_vec())
                .map(|id| {
                    // Owned (a clone of a collection is a handle): the stream's futures
                    // outlive no borrow, as `Send` across the trait's future requires.
                    let messages = self.messages.clone();
                    async move { messages.find_one(doc! {(StoredMessage::ID): id}).await }
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let mut out = Vec::with_capacity(found.len());
        for d in found {
            if let Some(d) = d? {
                let id = d.get(StoredMessage::ID).cloned().unwrap_or(Bson::Null);
                out.push(bson::from_document::<StoredMessage>(d).map_err(|e| {
                    StoreError::of(
                        FailureClass::Permanent,
                        format!("stored document {id} is not a wiber message ({e})"),
                    )
                })?);
            }
        }
        Ok(out)
    }

    /// Both directions of a conversation, oldest first, ordered by (timestamp, messageId).
    pub async fn conversation(
        &self,
        a: &str,
        b: &str,
        limit: i64,
        skip: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let shape = reads::CONVERSATION_PAGE;
        let cursor = self
            .messages
            .find(equality(&shape, &conversation_key(a, b)))
            .sort(sort_of(&shape))
            .skip(skip)
            .limit(limit)
            .await?;
        collect_messages(cursor).await
    }

    /// A user's recent messages, sent or received, newest first.
    pub async fn user_recent(&self, user: &str, limit: i64) -> Result<Vec<Message>, StoreError> {
        let shape = reads::USER_RECENT;
        let cursor = self
            .messages
            .find(equality(&shape, user))
            .sort(sort_of(&shape))
            .limit(limit)
            .await?;
        collect_messages(cursor).await
    }

    /// How many messages are stored in `scope`: a count of the documents by the same
    /// indexed equality as the pages. MongoDB's indexes make that cheap; on FerretDB the
    /// API reads the exact counters in SQL instead (`sql_reads`).
    pub async fn count(&self, scope: &CountScope) -> Result<u64, StoreError> {
        let filter = match scope {
            CountScope::All => doc! {},
            CountScope::User(u) => equality(&reads::USER_RECENT, u),
            CountScope::Conversation(a, b) => {
                equality(&reads::CONVERSATION_PAGE, &conversation_key(a, b))
            }
        };
        Ok(self.messages.count_documents(filter).await?)
    }
}

impl MessageStore for Store {
    type Error = StoreError;

    async fn insert_batch(&self, batch: &[StoredMessage]) -> Result<InsertOutcome, StoreError> {
        Store::insert_batch(self, batch).await
    }

    async fn stored(&self, ids: &[String]) -> Result<Vec<StoredMessage>, StoreError> {
        Store::stored(self, ids).await
    }
}

impl ReadStore for Store {
    fn conversation<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
        limit: i64,
        skip: u64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        Box::pin(Store::conversation(self, a, b, limit, skip))
    }

    fn user_recent<'a>(
        &'a self,
        user: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        Box::pin(Store::user_recent(self, user, limit))
    }

    fn count<'a>(&'a self, scope: &'a CountScope) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(Store::count(self, scope))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::ping(self))
    }
}

/// The filter of a read: `{field: value}`.
fn equality(shape: &ReadShape, value: &str) -> Document {
    doc! {shape.field: value}
}

/// The sort of a read.
fn sort_of(shape: &ReadShape) -> Document {
    shape
        .sort
        .iter()
        .map(|(f, dir)| (f.to_string(), Bson::Int32(*dir)))
        .collect()
}

/// One document's failure in an unordered `insert_many`, without the driver's types.
#[derive(Debug, Clone, Copy)]
struct WriteError<'a> {
    /// Position of the document in the batch.
    index: usize,
    code: i32,
    message: &'a str,
}

/// What an `insert_many` that reported per-document errors did: duplicate keys are
/// de-duplication hits (the document is already stored), any other error fails the
/// batch so that it is retried whole.
fn outcome_with_errors(
    batch: &[StoredMessage],
    errors: &[WriteError<'_>],
) -> Result<InsertOutcome, StoreError> {
    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
        let id = batch.get(other.index).map_or("?", |m| m.id.as_str());
        return Err(StoreError::of(
            class_of(other.code, other.message),
            format!(
                "insert_many failed for message {id} (document {} of the batch, code {}): {}",
                other.index, other.code, other.message
            ),
        ));
    }
    let duplicates = errors
        .iter()
        .map(|w| {
            batch
                .get(w.index)
                .map_or_else(|| format!("#{}", w.index), |m| m.id.clone())
        })
        .collect();
    Ok(InsertOutcome {
        inserted: batch.len() - errors.len(),
        duplicates,
    })
}

async fn collect_messages(cursor: mongodb::Cursor<Document>) -> Result<Vec<Message>, StoreError> {
    let docs: Vec<Document> = cursor.try_collect().await?;
    docs.into_iter().map(from_document).collect()
}

/// Decodes a stored document. Documents are read untyped and decoded one by one so that
/// a document that does not decode (altered by hand, or written by something else) is
/// named in the error instead of failing the cursor anonymously.
fn from_document(d: Document) -> Result<Message, StoreError> {
    let id = d.get(StoredMessage::ID).cloned().unwrap_or(Bson::Null);
    bson::from_document::<StoredMessage>(d)
        .map(StoredMessage::into_message)
        .map_err(|e| {
            StoreError::new(format!(
                "stored document {id} is not a wiber message ({e}); fix or delete it in MongoDB"
            ))
        })
}

#[cfg(test)]
mod tests {
    use wiber_model::{Message, NewMessage};

    use super::*;
    use crate::seams::Classify;

    fn stored(id: &str) -> StoredMessage {
        let new = NewMessage {
            from_user: "bob".into(),
            to_user: "alice".into(),
            content: "Hello!".into(),
            message_id: None,
        };
        StoredMessage::new(
            Message::accept(new, id.into(), 1_758_865_780_040),
            1_758_865_781_000,
            3,
            42,
        )
    }

    /// The document the store has always written (before `StoredMessage` was the one
    /// type), field by field, plus `participants` (added for user reads): names, order
    /// and BSON types must not change on disk.
    #[test]
    fn documents_are_written_as_before() {
        let m = stored("m1");
        let written = bson::to_document(&m).unwrap();
        let before = doc! {
            "_id": "m1",
            "messageId": "m1",
            "conversation": conversation_key("bob", "alice"),
            "fromUser": "bob",
            "toUser": "alice",
            "participants": ["bob", "alice"],
            "content": "Hello!",
            "timestamp": 1_758_865_780_040i64,
            "createdAt": "2025-09-26T05:49:40.040Z",
            "storedAt": 1_758_865_781_000i64,
            "partition": 3i32,
            "offset": 42i64,
        };
        // `Document`'s equality ignores order; the keys are compared in order too.
        assert_eq!(
            written.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
        assert_eq!(written, before);
        for (k, v) in &before {
            assert_eq!(
                written.get(k).map(Bson::element_type),
                Some(v.element_type()),
                "BSON type of {k}"
            );
        }
        assert_eq!(from_document(written).unwrap(), m.into_message());
    }

    #[test]
    fn an_undecodable_document_is_named() {
        let mut d = bson::to_document(&stored("m1")).unwrap();
        d.remove(StoredMessage::CONTENT);
        let e = from_document(d).unwrap_err().to_string();
        assert!(e.contains("\"m1\"") && e.contains("content"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_de_duplication_hits() {
        let batch = [stored("a"), stored("b"), stored("c")];
        let dup = |index| WriteError {
            index,
            code: DUPLICATE_KEY,
            message: "E11000 duplicate key error",
        };
        let o = outcome_with_errors(&batch, &[dup(0), dup(2)]).unwrap();
        assert_eq!(o.inserted, 1);
        assert_eq!(o.duplicates, ["a", "c"]);
    }

    #[test]
    fn any_other_write_error_fails_the_batch_and_names_the_message() {
        let batch = [stored("a"), stored("b")];
        let errors = [
            WriteError {
                index: 0,
                code: DUPLICATE_KEY,
                message: "E11000 duplicate key error",
            },
            WriteError {
                index: 1,
                code: 121,
                message: "Document failed validation",
            },
        ];
        let e = outcome_with_errors(&batch, &errors).unwrap_err();
        assert_eq!(
            e.class(),
            FailureClass::Permanent,
            "121 refuses the document"
        );
        let e = e.to_string();
        assert!(e.contains("message b") && e.contains("code 121"), "{e}");
    }

    #[test]
    fn refusals_are_permanent_and_the_rest_is_not() {
        // What FerretDB 1.24 on PostgreSQL answers for U+0000 in a string.
        let nul = "[msg_insert.go:168 handler.(*Handler).MsgInsert] [collection.go:163 \
                   postgresql.(*collection).InsertAll.func1] ERROR: unsupported Unicode \
                   escape sequence (SQLSTATE 22P05)";
        assert_eq!(class_of(1, nul), FailureClass::Permanent);
        assert_eq!(
            class_of(
                1,
                "ERROR: index row size 3000 exceeds btree version 4 maximum (SQLSTATE 54000)"
            ),
            FailureClass::Permanent
        );
        assert_eq!(
            class_of(121, "Document failed validation"),
            FailureClass::Permanent
        );
        // Connections, read-only, shutdown: may pass; unknown, so retried.
        for m in [
            "ERROR: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)",
            "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
            "failed to connect to `host=127.0.0.1`: dial error (SQLSTATE 08006)",
        ] {
            assert_eq!(class_of(1, m), FailureClass::Unknown, "{m}");
        }
        assert_eq!(class_of(91, "ShutdownInProgress"), FailureClass::Unknown);
    }
}
