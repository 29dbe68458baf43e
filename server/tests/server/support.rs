//! Fakes behind the server's seams and a way to serve the real router with them.
//!
//! - API: [`FakePublisher`] (acks, fails or holds every publish, and keeps what it
//!   "produced"), [`FakeReadStore`] (canned answers, and the queries it was asked), and
//!   [`TestApi`], the real `api::serve` on `127.0.0.1:0`.
//! - Consumer: [`FakeSource`] (a group member with a commit log) and [`FakeStore`] (a
//!   collection with a unique `_id`), both writing to one ordered [`Log`] of [`Event`]s,
//!   and [`commits_only_durable`], the check that every committed offset covers only
//!   messages already stored or dead-lettered.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Instant;
use wiber_model::contract::{dlq, StallReport};
use wiber_model::{Message, StoredMessage};
use wiber_server::api::{
    self, AppState, CountScope, Delivered, Lane, Publish, PublishError, ReadStore,
};
use wiber_server::consumer::{
    Batching, Classify, FailureClass, MessageStore, Position, Record, RecordSource, Recovery,
};
use wiber_server::store::{InsertOutcome, StoreError};

pub const TOPIC: &str = "wiber.messages";

// ---------------------------------------------------------------------------------------
// API fakes
// ---------------------------------------------------------------------------------------

/// A record the fake publisher "produced" (acknowledged).
#[derive(Debug, Clone)]
pub struct Produced {
    pub topic: String,
    pub key: String,
    pub payload: Value,
    pub correlation_id: String,
}

/// How the fake publisher answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Acknowledge at once.
    Ack,
    /// Wait until [`FakePublisher::release`] before acknowledging.
    Hold,
    /// Fail with the `PublishError` of this kind ("timeout", "rejected", "brokers_down").
    Fail(&'static str),
}

pub struct FakePublisher {
    answer: Mutex<Answer>,
    produced: Mutex<Vec<Produced>>,
    attempts: AtomicUsize,
    /// Signalled whenever a publish starts.
    pub called: Notify,
    gate: Semaphore,
    check: Mutex<Result<(), String>>,
}

impl FakePublisher {
    pub fn new(answer: Answer) -> Arc<FakePublisher> {
        Arc::new(FakePublisher {
            answer: Mutex::new(answer),
            produced: Mutex::default(),
            attempts: AtomicUsize::new(0),
            called: Notify::new(),
            gate: Semaphore::new(0),
            check: Mutex::new(Ok(())),
        })
    }

    pub fn set_check(&self, r: Result<(), String>) {
        *self.check.lock().unwrap() = r;
    }

    /// Lets one held publish be acknowledged.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// What was acknowledged, in order.
    pub fn produced(&self) -> Vec<Produced> {
        self.produced.lock().unwrap().clone()
    }

    /// How many publishes were asked for (acknowledged or not).
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Publish for FakePublisher {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a [u8],
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, PublishError>> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            self.called.notify_one();
            let answer = *self.answer.lock().unwrap();
            match answer {
                Answer::Fail("timeout") => {
                    return Err(PublishError::Timeout(
                        Duration::from_secs(5),
                        "Local: Message timed out".into(),
                    ))
                }
                Answer::Fail("brokers_down") => return Err(PublishError::BrokersDown),
                Answer::Fail(other) => return Err(PublishError::Rejected(other.into())),
                Answer::Hold => self.gate.acquire().await.unwrap().forget(),
                Answer::Ack => {}
            }
            let mut produced = self.produced.lock().unwrap();
            produced.push(Produced {
                topic: topic.into(),
                key: key.into(),
                payload: serde_json::from_slice(payload).expect("the API publishes JSON"),
                correlation_id: correlation_id.into(),
            });
            Ok(Delivered {
                partition: 0,
                offset: produced.len() as i64 - 1,
                lane: Lane::Prompt,
            })
        })
    }

    fn check<'a>(&'a self, topic: &'a str, _: Duration) -> BoxFuture<'a, Result<(), String>> {
        let r = self.check.lock().unwrap().clone();
        let topic = topic.to_string();
        Box::pin(async move { r.map_err(|e| format!("{e} (topic {topic})")) })
    }
}

/// A query the API asked of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Conversation {
        a: String,
        b: String,
        limit: i64,
        skip: u64,
    },
    UserRecent {
        user: String,
        limit: i64,
    },
    Count(CountScope),
}

/// How the fake store's ping answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Ok,
    Fail(String),
    Hang,
}

pub struct FakeReadStore {
    queries: Mutex<Vec<Query>>,
    /// What every read answers with.
    pub messages: Mutex<Vec<Message>>,
    pub count: u64,
    /// When set, every query fails with it.
    pub fail: Mutex<Option<String>>,
    pub ping: Mutex<Ping>,
}

impl FakeReadStore {
    pub fn new() -> Arc<FakeReadStore> {
        Arc::new(FakeReadStore {
            queries: Mutex::default(),
            messages: Mutex::default(),
            count: 42,
            fail: Mutex::new(None),
            ping: Mutex::new(Ping::Ok),
        })
    }

    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().unwrap().clone()
    }

    fn answer<T>(&self, q: Query, ok: T) -> Result<T, StoreError> {
        self.queries.lock().unwrap().push(q);
        match &*self.fail.lock().unwrap() {
            Some(e) => Err(StoreError::new(e.clone())),
            None => Ok(ok),
        }
    }
}

impl ReadStore for FakeReadStore {
    fn conversation<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
        limit: i64,
        skip: u64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        let q = Query::Conversation {
            a: a.into(),
            b: b.into(),
            limit,
            skip,
        };
        let r = self.answer(q, self.messages.lock().unwrap().clone());
        Box::pin(async move { r })
    }

    fn user_recent<'a>(
        &'a self,
        user: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        let q = Query::UserRecent {
            user: user.into(),
            limit,
        };
        let r = self.answer(q, self.messages.lock().unwrap().clone());
        Box::pin(async move { r })
    }

    fn count<'a>(&'a self, scope: &'a CountScope) -> BoxFuture<'a, Result<u64, StoreError>> {
        let r = self.answer(Query::Count(scope.clone()), self.count);
        Box::pin(async move { r })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let ping = self.ping.lock().unwrap().clone();
        Box::pin(async move {
            match ping {
                Ping::Ok => Ok(()),
                Ping::Fail(e) => Err(StoreError::new(e)),
                Ping::Hang => std::future::pending().await,
            }
        })
    }
}

/// The real router, served on `127.0.0.1:0` by `api::serve` until dropped or stopped.
pub struct TestApi {
    pub url: String,
    pub addr: SocketAddr,
    pub publisher: Arc<FakePublisher>,
    pub store: Arc<FakeReadStore>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApi {
    pub async fn start(publisher: Arc<FakePublisher>, store: Arc<FakeReadStore>) -> TestApi {
        TestApi::start_with(publisher, store, |s| s).await
    }

    /// As [`TestApi::start`], with `wrap` applied to the state first (seeded bugs).
    pub async fn start_with(
        publisher: Arc<FakePublisher>,
        store: Arc<FakeReadStore>,
        wrap: impl FnOnce(AppState) -> AppState,
    ) -> TestApi {
        let state = wrap(AppState::new(publisher.clone(), store.clone(), TOPIC));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(api::serve(listener, state, async {
            let _ = rx.await;
        }));
        TestApi {
            url: format!("http://{addr}"),
            addr,
            publisher,
            store,
            stop: Some(tx),
            served,
        }
    }

    /// Asks the server to shut down and waits until it has.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.served).await.unwrap()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `POST /messages` with `body` as JSON: status and JSON answer.
pub async fn post(api: &TestApi, body: &Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}/messages", api.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET path`: status and JSON answer.
pub async fn get(api: &TestApi, path: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}{path}", api.url))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

/// Sends `request` as bytes on a fresh connection (for what a client library will not
/// send: a Content-Length it does not keep, a chunked body) and reads until the server
/// closes. Blocking, so run on the blocking pool.
pub async fn raw(addr: SocketAddr, request: Vec<u8>) -> RawResponse {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&request).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawResponse {
            status,
            headers,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Consumer fakes
// ---------------------------------------------------------------------------------------

/// What the consumer's fakes saw, in order, with the (paused) time since the test began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    WriteFailed {
        at_ms: u64,
    },
    Stored {
        at_ms: u64,
        inserted: Vec<String>,
        duplicates: Vec<String>,
    },
    DeadLettered {
        partition: i32,
        offset: i64,
        class: dlq::Class,
        reason: String,
    },
    /// A stall report: (partition, stuck offset) and the report's attempts.
    Stalled {
        at_ms: u64,
        at: Vec<(i32, i64)>,
        attempts: u64,
    },
    DeadLetterFailed {
        offset: i64,
    },
    Committed(Vec<Position>),
    Closed,
}

#[derive(Clone)]
pub struct Log {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            start: Instant::now(),
            events: Arc::default(),
        }
    }
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
    /// Every position committed, in order.
    pub fn commits(&self) -> Vec<Position> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Committed(p) => Some(p),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// A group member holding `records`; when they are gone, `recv` waits forever (as a
/// caught-up consumer does). The first `dlq_failures` dead-letter attempts fail
/// (`usize::MAX`: all of them). Commits go to the log: the fake commit log.
pub struct FakeSource {
    records: Mutex<VecDeque<Record>>,
    pub dlq_failures: Mutex<usize>,
    log: Log,
}

impl FakeSource {
    pub fn new(log: &Log, records: Vec<Record>) -> FakeSource {
        FakeSource {
            records: Mutex::new(records.into()),
            dlq_failures: Mutex::new(0),
            log: log.clone(),
        }
    }
}

impl RecordSource for FakeSource {
    type Error = String;

    fn recv(&self) -> impl Future<Output = Result<Record, String>> + Send {
        let next = self.records.lock().unwrap().pop_front();
        async move {
            match next {
                Some(r) => Ok(r),
                None => std::future::pending().await,
            }
        }
    }

    async fn dead_letter(
        &self,
        record: &Record,
        class: dlq::Class,
        reason: &str,
    ) -> Result<(), String> {
        let mut failures = self.dlq_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            self.log.push(Event::DeadLetterFailed {
                offset: record.offset,
            });
            return Err("broker unavailable".into());
        }
        self.log.push(Event::DeadLettered {
            partition: record.partition,
            offset: record.offset,
            class,
            reason: reason.to_string(),
        });
        Ok(())
    }

    fn commit(&self, positions: &[Position]) {
        self.log.push(Event::Committed(positions.to_vec()));
    }

    fn report_stall(&self, stalls: &[(Position, StallReport)]) {
        self.log.push(Event::Stalled {
            at_ms: self.log.now_ms(),
            at: stalls
                .iter()
                .map(|(p, r)| {
                    assert_eq!(p.next_offset, r.offset, "the report names the stuck offset");
                    (p.partition, p.next_offset)
                })
                .collect(),
            attempts: stalls.first().map_or(0, |(_, r)| r.attempts),
        });
    }

    fn close(&self) {
        self.log.push(Event::Closed);
    }
}

/// Which write attempts fail (numbered from 1).
type FailurePlan = Box<dyn Fn(usize) -> bool + Send + Sync>;

/// Which documents the store refuses for good (as PostgreSQL refuses U+0000).
type RefusalRule = Box<dyn Fn(&StoredMessage) -> bool + Send + Sync>;

/// A fake store's error: its text and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeError {
    pub class: FailureClass,
    pub text: String,
}

impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Classify for FakeError {
    fn class(&self) -> FailureClass {
        self.class
    }
}

/// A collection with a unique `_id`, keeping what was stored. Write attempts the plan
/// names fail as a whole (unknown class, as "not primary" reads to the loop); a batch
/// holding a document the refusal rule names fails as a whole, permanently (as FerretDB
/// fails a whole `insert_many` when PostgreSQL refuses one row).
pub struct FakeStore {
    docs: Mutex<BTreeMap<String, StoredMessage>>,
    attempts: AtomicUsize,
    fails: FailurePlan,
    refuses: RefusalRule,
    /// How the refusal is classed: permanent for a store that says so.
    pub refusal_class: Mutex<FailureClass>,
    log: Log,
}

impl FakeStore {
    /// A store whose first `failures` writes fail (`usize::MAX`: all of them).
    pub fn new(log: &Log, failures: usize) -> FakeStore {
        FakeStore::failing(log, move |attempt| attempt <= failures)
    }

    /// A store where write attempt `n` fails when `fails(n)`.
    pub fn failing(log: &Log, fails: impl Fn(usize) -> bool + Send + Sync + 'static) -> FakeStore {
        FakeStore {
            docs: Mutex::default(),
            attempts: AtomicUsize::new(0),
            fails: Box::new(fails),
            refuses: Box::new(|_| false),
            refusal_class: Mutex::new(FailureClass::Permanent),
            log: log.clone(),
        }
    }

    /// A store that refuses for good every batch holding a document `refuses` names.
    pub fn refusing(
        log: &Log,
        refuses: impl Fn(&StoredMessage) -> bool + Send + Sync + 'static,
    ) -> FakeStore {
        FakeStore {
            refuses: Box::new(refuses),
            ..FakeStore::new(log, 0)
        }
    }

    /// Stores `m` as if an earlier write had (another content under an id, say).
    pub fn put(&self, m: StoredMessage) {
        self.docs.lock().unwrap().insert(m.id.clone(), m);
    }

    /// Pretends `ids` were stored before (by an earlier life of the consumer).
    pub fn preload(&self, ids: &[&str]) {
        let mut docs = self.docs.lock().unwrap();
        for id in ids {
            let r = message(0, 0, id);
            let m: Message = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            docs.insert(id.to_string(), StoredMessage::new(m, 0, 0, 0));
        }
    }

    /// The stored documents, by `_id`.
    pub fn docs(&self) -> Vec<StoredMessage> {
        self.docs.lock().unwrap().values().cloned().collect()
    }
}

impl MessageStore for FakeStore {
    type Error = FakeError;

    async fn insert_batch(&self, batch: &[StoredMessage]) -> Result<InsertOutcome, FakeError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if (self.fails)(attempt) {
            self.log.push(Event::WriteFailed {
                at_ms: self.log.now_ms(),
            });
            return Err(FakeError {
                class: FailureClass::Unknown,
                text: "not primary".into(),
            });
        }
        if let Some(bad) = batch.iter().find(|m| (self.refuses)(m)) {
            self.log.push(Event::WriteFailed {
                at_ms: self.log.now_ms(),
            });
            return Err(FakeError {
                class: *self.refusal_class.lock().unwrap(),
                text: format!(
                    "ERROR: unsupported Unicode escape sequence (SQLSTATE 22P05) in {}",
                    bad.id
                ),
            });
        }
        let mut docs = self.docs.lock().unwrap();
        let (mut inserted, mut duplicates) = (Vec::new(), Vec::new());
        for m in batch {
            if docs.contains_key(&m.id) {
                duplicates.push(m.id.clone());
            } else {
                docs.insert(m.id.clone(), m.clone());
                inserted.push(m.id.clone());
            }
        }
        self.log.push(Event::Stored {
            at_ms: self.log.now_ms(),
            inserted: inserted.clone(),
            duplicates: duplicates.clone(),
        });
        Ok(InsertOutcome {
            inserted: inserted.len(),
            duplicates,
        })
    }

    async fn stored(&self, ids: &[String]) -> Result<Vec<StoredMessage>, FakeError> {
        let docs = self.docs.lock().unwrap();
        Ok(ids.iter().filter_map(|id| docs.get(id).cloned()).collect())
    }
}

pub fn record(partition: i32, offset: i64, payload: Option<Vec<u8>>) -> Record {
    Record {
        topic: TOPIC.into(),
        partition,
        offset,
        key: Some(b"alice\x1fbob".to_vec()),
        payload,
    }
}

/// A well-formed record whose message id is `id`.
pub fn message(partition: i32, offset: i64, id: &str) -> Record {
    let m = Message {
        message_id: id.into(),
        from_user: "alice".into(),
        to_user: "bob".into(),
        content: format!("message {id}"),
        timestamp: 1_758_865_780_040,
        created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
    };
    record(partition, offset, Some(serde_json::to_vec(&m).unwrap()))
}

pub fn at(partition: i32, next_offset: i64) -> Position {
    Position {
        topic: TOPIC.into(),
        partition,
        next_offset,
    }
}

pub fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub const BATCHING: Batching = Batching {
    max_records: 500,
    linger: Duration::from_millis(20),
    busy_linger: Duration::from_millis(20),
    busy_rate: 0,
    max_backoff: Duration::from_millis(250),
};

/// Runs the loop with `batching` until the (paused) clock reaches `stop_after`.
pub async fn run_until<M: MessageStore>(
    source: &FakeSource,
    store: &M,
    batching: Batching,
    stop_after: Duration,
) {
    run_with(
        source,
        store,
        batching,
        &Recovery::new("consumer#1"),
        stop_after,
    )
    .await;
}

/// [`run_until`] with `recovery`.
pub async fn run_with<M: MessageStore>(
    source: &FakeSource,
    store: &M,
    batching: Batching,
    recovery: &Recovery,
    stop_after: Duration,
) {
    wiber_server::consumer::consume(
        source,
        store,
        batching,
        recovery,
        tokio::time::sleep(stop_after),
    )
    .await;
}

/// A well-formed record whose message id is `id` and content `content`.
pub fn message_with(partition: i32, offset: i64, id: &str, content: &str) -> Record {
    let m = Message {
        message_id: id.into(),
        from_user: "alice".into(),
        to_user: "bob".into(),
        content: content.into(),
        timestamp: 1_758_865_780_040,
        created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
    };
    record(partition, offset, Some(serde_json::to_vec(&m).unwrap()))
}

/// The delivery contract's commit rule, checked over a run's log: when an offset is
/// committed, every record below it in its partition is durable: its message stored
/// (this or an earlier copy of it: a redelivery is durable once any copy is), or the
/// record dead-lettered. `records` is everything the source handed out.
pub fn commits_only_durable(records: &[Record], events: &[Event]) -> Result<(), String> {
    let mut stored: HashSet<String> = HashSet::new();
    let mut dead: BTreeSet<(i32, i64)> = BTreeSet::new();
    let id_of = |r: &Record| -> Option<String> {
        let m: Message = serde_json::from_slice(r.payload.as_deref()?).ok()?;
        Some(m.message_id)
    };
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Stored {
                inserted,
                duplicates,
                ..
            } => stored.extend(inserted.iter().chain(duplicates).cloned()),
            Event::DeadLettered {
                partition, offset, ..
            } => {
                dead.insert((*partition, *offset));
            }
            Event::Committed(positions) => {
                for p in positions {
                    for r in records
                        .iter()
                        .filter(|r| r.partition == p.partition && r.offset < p.next_offset)
                    {
                        let durable = dead.contains(&(r.partition, r.offset))
                            || id_of(r).is_some_and(|id| stored.contains(&id));
                        if !durable {
                            return Err(format!(
                                "event {i} commits partition {} up to {} but the record at offset {} is neither stored nor dead-lettered",
                                p.partition, p.next_offset, r.offset
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
