//! Reads a run's documents straight from MongoDB and waits for the consumer group to
//! drain. Verify trusts neither the API nor the consumers: it looks at the sink itself,
//! by keys the store indexes ([`read_run`]), so that checking a run costs what the run
//! holds, not what the store holds.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::ClientOptions;
use tokio::time::Instant;
use wiber_model::{conversation_key, ledger, reads, StoredMessage};

use crate::kafka;

/// Default MongoDB URI: FerretDB or MongoDB published on localhost by `stack up`.
pub const DEFAULT_MONGO_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
/// Default Kafka bootstrap: `stack up`'s external listener.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9094";

use super::index::{FoundIds, LedgerIndex};
use crate::runfile::StoreTarget;

/// A stored document as verify reads it: decoded with [`StoredMessage`], the type the
/// consumer writes. An altered or injected document may not decode (a field missing or
/// of the wrong type): that is a finding, not an error, so what can still be read
/// (`id`, `message_id`, `stored_at`) is kept and `stored` says why it does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    /// `_id` rendered as a string.
    pub id: String,
    /// `messageId`, when it is a string (kept to attribute a document that does not decode).
    pub message_id: Option<String>,
    /// `storedAt`, when it is a number: with `message_id`, all a partial read fetches.
    pub stored_at: Option<i64>,
    /// The whole document, or why it is not a stored message (or that it was read partially).
    pub stored: Result<StoredMessage, String>,
}

impl StoredDoc {
    /// The decoded document, if it decodes.
    pub fn message(&self) -> Option<&StoredMessage> {
        self.stored.as_ref().ok()
    }

    pub fn content(&self) -> Option<&str> {
        self.message().map(|m| m.content.as_str())
    }

    pub fn timestamp(&self) -> Option<i64> {
        self.message().map(|m| m.timestamp)
    }

    pub fn partition(&self) -> Option<i32> {
        self.message().map(|m| m.partition)
    }

    pub fn offset(&self) -> Option<i64> {
        self.message().map(|m| m.offset)
    }
}

/// What [`StoredDoc::stored`] holds after a partial read (`read_run(.., false)`).
const PARTIAL_READ: &str = "only messageId and storedAt were read";

/// Whether the consumer group caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub drained: bool,
    /// Total lag at the last look.
    pub lag: i64,
    /// The group's partitions at the last look (committed offsets, stall reports).
    pub lags: Vec<kafka::PartitionLag>,
    /// Partitions with lag that did not advance: their consumer reports a stall, or
    /// their committed offset stayed where it was for the whole wait (at least
    /// [`STUCK_AFTER`]). Empty when drained.
    pub stuck: Vec<i32>,
}

/// A wait this long without a partition's committed offset moving, records waiting,
/// makes it stuck (and not merely slow).
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Polls the consumer group's lag until it is 0 or `timeout` passed.
pub async fn drain(target: &StoreTarget, timeout: Duration) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut first: Option<HashMap<i32, Option<i64>>> = None;
    loop {
        let lags = kafka::group_lag(&target.kafka, &target.group, &target.topic, Duration::from_secs(5))
            .await
            .with_context(|| {
                format!(
                    "cannot read the lag of consumer group {} on {} (set --kafka / KAFKA_BOOTSTRAP_SERVERS, --group, --topic)",
                    target.group, target.kafka
                )
            })?;
        let lag = kafka::total(&lags);
        if lag == 0 {
            return Ok(Drain {
                drained: true,
                lag,
                lags,
                stuck: Vec::new(),
            });
        }
        let first =
            first.get_or_insert_with(|| lags.iter().map(|l| (l.partition, l.committed)).collect());
        if Instant::now() >= deadline {
            let stuck = stuck(first, &lags, started.elapsed() >= STUCK_AFTER);
            return Ok(Drain {
                drained: false,
                lag,
                lags,
                stuck,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The partitions of `lags` that have lag and did not advance (see [`Drain::stuck`]):
/// `first` is their committed offsets when the wait began; `waited` says whether it
/// lasted long enough for an unmoved offset to mean anything.
fn stuck(
    first: &HashMap<i32, Option<i64>>,
    lags: &[kafka::PartitionLag],
    waited: bool,
) -> Vec<i32> {
    let now = wiber_model::now_ms();
    lags.iter()
        .filter(|l| l.lag > 0)
        .filter(|l| {
            l.stall_line(now).is_some() || (waited && first.get(&l.partition) == Some(&l.committed))
        })
        .map(|l| l.partition)
        .collect()
}

/// Reads at a time when a run's documents are read key by key: enough to keep FerretDB
/// busy on two cores, few enough not to starve the stack being verified.
pub const READ_CONCURRENCY: usize = 8;

/// What verify knows of a run, to find its documents by keys the store indexes.
#[derive(Debug, Clone, Copy)]
pub struct RunKeys<'a> {
    pub run: &'a str,
    /// The run has conversations `0..conversations` (its `run.json`).
    pub conversations: u32,
    /// The ledger's requests: a document stored under one of their ids is checked against
    /// its request, whatever its users and conversation key say. `None`: find the run's
    /// documents by conversation only (end-to-end latency needs no more).
    pub ledger: Option<&'a LedgerIndex>,
}

/// How a run's documents were found (for verify's notes).
#[derive(Debug, Clone)]
pub struct RunRead {
    pub notes: Vec<String>,
    /// The whole collection had to be read (see [`read_run`]).
    pub scanned: bool,
}

/// Every document of run `keys.run`, each once, handed to `sink` as it arrives (so the
/// run is never held here: a read keeps a bit per request it found, [`FoundIds`]). Read
/// by keys the store indexes, so the read costs what the run holds, not what the store
/// holds (FerretDB 1.24 pushes only an equality down to PostgreSQL's GIN indexes; a
/// `$regex` or an `$or` reads every document):
///
/// 1. one `conversation` equality per conversation of the run, [`READ_CONCURRENCY`] at
///    a time: every document the consumer stored for the run;
/// 2. one `_id` equality per ledger message id not found that way: a document stored
///    under the run's id but with other users or another conversation key (re-keyed);
/// 3. when the store keeps exact counters (FerretDB on PostgreSQL with the project's
///    setup: `{_id: "$exact"}` in the counts collection), the counter of each of the
///    run's users, which PostgreSQL's triggers keep from `fromUser`/`toUser` of every
///    row inserted, whatever else the row holds. A user counted more often than the
///    documents read name them means documents no indexed key led to: those users are
///    read by `participants`, and if that still leaves some unaccounted for (a document
///    with neither the run's conversation key nor a `participants` field), the whole
///    collection is read as before ([`scan`]), and a note says so.
///
/// What this cannot see, where the old whole-collection read did: a document whose `_id`
/// starts with the run's id but is not one the ledger holds, and whose users are not the
/// run's (no indexed key and no counter of the run leads to it); and, on a store without
/// exact counters (plain MongoDB, FerretDB without the PostgreSQL setup), a document of
/// the run's users under an id the run never sent whose conversation key is not the
/// run's. The notes say which guarantee the store gave.
///
/// `full: false` fetches only `messageId`, `storedAt` and the users (for end-to-end
/// latency).
pub async fn read_run(
    target: &StoreTarget,
    keys: &RunKeys<'_>,
    full: bool,
    sink: &mut dyn FnMut(Document) -> anyhow::Result<()>,
) -> anyhow::Result<RunRead> {
    use futures::{StreamExt, TryStreamExt};

    let coll = collection(target).await?;
    let projection = (!full).then(|| {
        doc! {
            (StoredMessage::MESSAGE_ID): 1, (StoredMessage::STORED_AT): 1,
            (StoredMessage::FROM_USER): 1, (StoredMessage::TO_USER): 1,
        }
    });
    // Documents of up to READ_CONCURRENCY reads at once, as their batches arrive.
    let find_each = |filters: Vec<Document>| {
        let (coll, projection) = (&coll, projection.clone());
        futures::stream::iter(filters)
            .map(move |filter| {
                let projection = projection.clone();
                async move {
                    let mut find = coll.find(filter).batch_size(BATCH);
                    if let Some(p) = projection {
                        find = find.projection(p);
                    }
                    find.await
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_flatten_unordered(READ_CONCURRENCY)
    };
    let mut found = Found::new(keys.ledger, sink);

    // 1. By conversation.
    let users: Vec<String> = (0..keys.conversations)
        .flat_map(|c| {
            let (a, b) = ledger::users(keys.run, c);
            [a, b]
        })
        .collect();
    let filters = users
        .chunks(2)
        .map(|p| doc! {(StoredMessage::CONVERSATION): conversation_key(&p[0], &p[1])})
        .collect();
    let mut docs = std::pin::pin!(find_each(filters));
    while let Some(d) = docs.try_next().await.with_context(|| read_error(target))? {
        found.add(d)?;
    }

    // 2. Ledger ids not found by conversation.
    let unseen: Vec<Document> = keys
        .ledger
        .map(|l| {
            l.ids_not_in(&found.ids)
                .map(|id| doc! {(StoredMessage::ID): id})
                .collect()
        })
        .unwrap_or_default();
    let lookups = unseen.len();
    let mut docs = std::pin::pin!(find_each(unseen));
    while let Some(d) = docs.try_next().await.with_context(|| read_error(target))? {
        found.add(d)?;
    }
    let how = format!(
        "documents: read by the run's {} conversation key(s) and {lookups} ledger id(s) not \
         found under them (indexed equalities)",
        keys.conversations
    );

    // 3. Held to the store's exact counters, when it keeps them (FerretDB on PostgreSQL
    // with the project's setup: rows of a PostgreSQL table, one read for every user).
    let keys_of_users: Vec<String> = users.iter().map(|u| reads::user_counter(u)).collect();
    let counters = match &target.postgres_url {
        Some(url) => {
            crate::pg::counters(
                url,
                &target.mongo_db,
                &target.mongo_collection,
                &keys_of_users,
            )
            .await?
        }
        None => None,
    };
    let Some(counters) = counters else {
        let note = format!(
            "{how}; the store keeps no exact counters (plain MongoDB, or FerretDB without the \
             PostgreSQL setup), so a document of the run's users under an id the run never \
             sent and without its conversation key would not be seen"
        );
        return Ok(RunRead {
            notes: vec![note],
            scanned: false,
        });
    };
    let counted: Vec<(String, u64)> = users
        .iter()
        .map(|u| {
            let n = counters.get(&reads::user_counter(u)).copied().unwrap_or(0);
            (u.clone(), n)
        })
        .collect();
    let short = |found: &Found| -> Vec<String> {
        counted
            .iter()
            .filter(|(u, n)| *n > found.per_user.get(u.as_str()).copied().unwrap_or(0))
            .map(|(u, _)| u.clone())
            .collect()
    };
    let missing = short(&found);
    if missing.is_empty() {
        let note = format!(
            "{how}; the store's exact counters of the run's {} users agree with them",
            users.len()
        );
        return Ok(RunRead {
            notes: vec![note],
            scanned: false,
        });
    }
    let filters = missing
        .iter()
        .map(|u| doc! {(StoredMessage::PARTICIPANTS): u})
        .collect();
    let mut docs = std::pin::pin!(find_each(filters));
    while let Some(d) = docs.try_next().await.with_context(|| read_error(target))? {
        found.add(d)?;
    }
    let still = short(&found);
    if still.is_empty() {
        let note = format!(
            "{how}; the store's counters had more documents for {} user(s) ({}), found by \
             `participants`: their conversation key is not the run's",
            missing.len(),
            sample(&missing)
        );
        return Ok(RunRead {
            notes: vec![note],
            scanned: false,
        });
    }
    for d in scan(target, keys.run, projection).await? {
        found.add(d)?;
    }
    let note = format!(
        "{how}; the store's counters had more documents for {} user(s) ({}) than any indexed \
         key leads to (neither the run's conversation key nor `participants`), so the whole \
         collection was read for them: this read cost what the store holds",
        still.len(),
        sample(&still)
    );
    Ok(RunRead {
        notes: vec![note],
        scanned: true,
    })
}

/// Documents per batch of a read: a read streams, so a conversation of a long run is
/// never in memory whole.
const BATCH: u32 = 1_000;

/// A few names of a list, for a note.
fn sample(names: &[String]) -> String {
    let mut s = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        s.push_str(&format!(" and {} more", names.len() - 3));
    }
    s
}

/// What a read keeps of the documents it found: their `_id`s (each document is handed
/// on once, whichever read found it) and how many name each user, counted as the
/// PostgreSQL triggers count: once per document for its `fromUser` and once for its
/// `toUser` when it is another.
struct Found<'a> {
    index: Option<&'a LedgerIndex>,
    ids: FoundIds,
    per_user: HashMap<String, u64>,
    sink: &'a mut dyn FnMut(Document) -> anyhow::Result<()>,
}

impl<'a> Found<'a> {
    fn new(
        index: Option<&'a LedgerIndex>,
        sink: &'a mut dyn FnMut(Document) -> anyhow::Result<()>,
    ) -> Found<'a> {
        Found {
            index,
            ids: FoundIds::default(),
            per_user: HashMap::new(),
            sink,
        }
    }

    /// `_id` as a key: a string as itself, anything else with its type, so that `"7"`
    /// and `7` stay two documents.
    fn key(d: &Document) -> String {
        match d.get(StoredMessage::ID) {
            Some(Bson::String(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }

    fn add(&mut self, d: Document) -> anyhow::Result<()> {
        if !self.ids.insert(self.index, &Self::key(&d)) {
            return Ok(());
        }
        let from = d.get_str(StoredMessage::FROM_USER).ok();
        let to = d.get_str(StoredMessage::TO_USER).ok();
        for u in [from, to.filter(|t| Some(*t) != from)]
            .into_iter()
            .flatten()
        {
            *self.per_user.entry(u.to_string()).or_insert(0) += 1;
        }
        (self.sink)(d)
    }
}

/// Every document of run `run`, by reading the whole collection: those whose sender is
/// one of the run's users, and those whose `_id` carries the run's prefix (an injected or
/// re-keyed document may have only one of the two). On FerretDB this reads every
/// document of the collection, so [`read_run`] uses it only when the store's counters say
/// it must.
async fn scan(
    target: &StoreTarget,
    run: &str,
    projection: Option<Document>,
) -> anyhow::Result<Vec<Document>> {
    use futures::TryStreamExt;
    let coll = collection(target).await?;
    let users = format!("^{}", regex_escape(&ledger::user_prefix(run)));
    let ids = format!("^{}-", regex_escape(run));
    let filter = doc! {"$or": [
        {(StoredMessage::FROM_USER): {"$regex": users}},
        {(StoredMessage::ID): {"$regex": ids}},
    ]};
    let mut find = coll.find(filter).batch_size(10_000);
    if let Some(p) = projection {
        find = find.projection(p);
    }
    let cursor = find.await.with_context(|| read_error(target))?;
    cursor
        .try_collect()
        .await
        .with_context(|| read_error(target))
}

/// The run's messages collection (for verify, and for tests that tamper with it).
pub async fn collection(target: &StoreTarget) -> anyhow::Result<mongodb::Collection<Document>> {
    let mut opts = ClientOptions::parse(&target.mongo_uri)
        .await
        .with_context(|| {
            format!(
                "invalid MongoDB URI {:?} (--mongo-uri / MONGO_URI)",
                target.mongo_uri
            )
        })?;
    opts.app_name = Some("wiberctl-verify".into());
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.connect_timeout = Some(Duration::from_secs(3));
    let client = mongodb::Client::with_options(opts)?;
    Ok(client
        .database(&target.mongo_db)
        .collection(&target.mongo_collection))
}

/// The documents whose `_id` is one of `ids` (those not stored are absent from the map),
/// for `tail --stored`.
///
/// One `{_id: <id>}` lookup per id, `concurrency` at a time, rather than one
/// `{_id: {$in: [...]}}`: both are index lookups on MongoDB, but FerretDB (SQLite) pushes
/// only a plain equality down to SQL; an `$in` makes it decode every document of the
/// collection, so the cost of each poll would grow with what the store holds.
pub async fn find_by_ids(
    coll: &mongodb::Collection<Document>,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<std::collections::HashMap<String, StoredDoc>> {
    use futures::StreamExt;
    let lookups = futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let d = coll.find_one(doc! {(StoredMessage::ID): &id}).await;
            (id, d)
        })
        .buffer_unordered(concurrency.max(1));
    let results: Vec<_> = lookups.collect().await;
    let mut found = std::collections::HashMap::new();
    for (id, d) in results {
        let d = d.with_context(|| {
            format!(
                "cannot read {}.{} (is MongoDB/FerretDB up? set --mongo-uri / MONGO_URI)",
                coll.namespace().db,
                coll.name()
            )
        })?;
        if let Some(d) = d {
            found.insert(id, to_stored(d, true));
        }
    }
    Ok(found)
}

fn read_error(target: &StoreTarget) -> String {
    format!(
        "cannot read {}.{} at {} (is MongoDB/FerretDB up? set --mongo-uri / MONGO_URI)",
        target.mongo_db, target.mongo_collection, target.mongo_uri
    )
}

/// Reads one document leniently: `full` decodes it whole, otherwise only `messageId`
/// and `storedAt` were fetched.
pub(crate) fn to_stored(d: Document, full: bool) -> StoredDoc {
    let id = match d.get(StoredMessage::ID) {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let message_id = d
        .get_str(StoredMessage::MESSAGE_ID)
        .ok()
        .map(str::to_string);
    let stored_at = match d.get(StoredMessage::STORED_AT) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    };
    let stored = if full {
        bson::from_document::<StoredMessage>(d)
            .map_err(|e| format!("not a stored message as the consumer writes it: {e}"))
    } else {
        Err(PARTIAL_READ.to_string())
    };
    StoredDoc {
        id,
        message_id,
        stored_at,
        stored,
    }
}

/// Escapes regex metacharacters (run ids are hex, but a name could come from anywhere).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use wiber_model::Message;

    use super::*;

    fn written() -> (StoredMessage, Document) {
        let m = Message {
            message_id: "r1-c0-s1".into(),
            from_user: "alice".into(),
            to_user: "bob".into(),
            content: "r1:0:1|x".into(),
            timestamp: 1_758_865_780_040,
            created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
        };
        let stored = StoredMessage::new(m, 1_758_865_781_000, 2, 40);
        let d = bson::to_document(&stored).unwrap();
        (stored, d)
    }

    /// A partition that has lag is stuck when its consumer says so, or when its offset
    /// did not move over a wait long enough to tell; a slow one, or a short wait, is not.
    #[test]
    fn stuck_partitions_did_not_advance_or_report_a_stall() {
        let lag = |partition, committed: i64| kafka::PartitionLag {
            partition,
            committed: Some(committed),
            low: 0,
            high: 100,
            lag: 100 - committed,
            stall: None,
        };
        let first = HashMap::from([(0, Some(10)), (1, Some(10)), (2, Some(100))]);
        let now = [lag(0, 10), lag(1, 40), lag(2, 100)];
        assert_eq!(stuck(&first, &now, true), [0]);
        assert!(
            stuck(&first, &now, false).is_empty(),
            "too short a wait to tell"
        );
        let mut reported = lag(1, 40);
        reported.stall = crate::kafka::tests::stalled(1, 40, 100).stall;
        assert_eq!(stuck(&first, &[reported], false), [1]);
    }

    #[test]
    fn a_document_as_the_consumer_writes_it_decodes_whole() {
        let (stored, d) = written();
        let doc = to_stored(d, true);
        assert_eq!(doc.id, "r1-c0-s1");
        assert_eq!(doc.message_id.as_deref(), Some("r1-c0-s1"));
        assert_eq!(doc.stored_at, Some(1_758_865_781_000));
        assert_eq!(doc.stored, Ok(stored));
        assert_eq!((doc.partition(), doc.offset()), (Some(2), Some(40)));
    }

    #[test]
    fn a_document_that_does_not_decode_keeps_what_can_be_read() {
        let (_, mut d) = written();
        d.remove(StoredMessage::CREATED_AT);
        d.insert(StoredMessage::PARTITION, "two");
        let doc = to_stored(d, true);
        assert_eq!(doc.id, "r1-c0-s1");
        assert_eq!(doc.message_id.as_deref(), Some("r1-c0-s1"));
        assert_eq!(doc.stored_at, Some(1_758_865_781_000));
        let why = doc.stored.unwrap_err();
        assert!(why.starts_with("not a stored message"), "{why}");

        // Not even an `_id` of the right type: still read, rendered as a string.
        let doc = to_stored(doc! {"_id": 7, "content": "injected"}, true);
        assert_eq!(doc.id, "7");
        assert_eq!(doc.message_id, None);
        assert!(doc.stored.is_err());
    }

    #[test]
    fn documents_found_by_several_keys_count_once_and_per_user_as_the_triggers_do() {
        let mut handed = Vec::new();
        let mut sink = |d: Document| {
            handed.push(Found::key(&d));
            Ok(())
        };
        let mut f = Found::new(None, &mut sink);
        let (_, d) = written();
        f.add(d.clone()).unwrap();
        f.add(d).unwrap(); // found again, by `participants` or `_id`
        f.add(doc! {"_id": "self", "fromUser": "alice", "toUser": "alice"})
            .unwrap();
        f.add(doc! {"_id": 7, "fromUser": "bob"}).unwrap(); // no toUser: counted for its sender
        f.add(doc! {"_id": "7", "toUser": "carol"}).unwrap(); // "7" is not 7
        let n = f.per_user.clone();
        assert_eq!(
            n["alice"], 2,
            "once for alice -> bob, once for alice -> alice"
        );
        assert_eq!((n["bob"], n["carol"]), (2, 1));
        assert_eq!(handed, ["r1-c0-s1", "self", "Int32(7)", "7"]);
        assert_eq!(
            sample(&["a", "b", "c", "d", "e"].map(String::from)),
            "a, b, c and 2 more"
        );
    }

    #[test]
    fn a_partial_read_keeps_the_id_and_stored_at() {
        let doc = to_stored(doc! {"_id": "m", "messageId": "m", "storedAt": 5i32}, false);
        assert_eq!(
            (doc.message_id.as_deref(), doc.stored_at),
            (Some("m"), Some(5))
        );
        assert_eq!(doc.stored, Err(PARTIAL_READ.to_string()));
    }
}
