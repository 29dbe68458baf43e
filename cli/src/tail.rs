//! `wiberctl tail`: messages as Kafka acknowledges them or as the consumers store them.
//!
//! Two sources, one loop ([`follow`]):
//! - [`Mode::Kafka`]: the topic's records, read by an assign-based consumer
//!   ([`crate::kafka::tail`]) from a start position per partition ([`Start`]).
//! - [`Mode::Stored`]: the same records, each shown once its document is in MongoDB,
//!   with the document's fields (partition, offset and `storedAt` as the consumer wrote
//!   them). Why it follows the topic instead of scanning the collection: see [`Pending`].
//!
//! The pure parts (filter, start offsets, rendering, the pending-record bookkeeping of
//! stored mode and its store-order merge) are functions with unit tests below; `follow`
//! only wires them to Kafka and MongoDB.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use wiber_model::Message;

use crate::kafka;
use crate::kafka::tail::{PartitionRange, TailConsumer, TopicRecord};
use crate::runfile::StoreTarget;
use crate::verify::store::{self, StoredDoc};

/// Where messages are shown from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// As Kafka acknowledged them (the records of the topic).
    Kafka,
    /// As the consumers stored them in MongoDB.
    Stored,
}

/// Which messages to show: every condition given must hold (none given: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sender or recipient.
    pub user: Option<String>,
    /// Both directions between two users, as a [`conversation_key`].
    pub conversation: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self == &Filter::default()
    }

    pub fn matches(&self, m: &Message) -> bool {
        let user = self
            .user
            .as_ref()
            .is_none_or(|u| &m.from_user == u || &m.to_user == u);
        let conversation = self
            .conversation
            .as_ref()
            .is_none_or(|k| *k == m.conversation());
        let from = self.from.as_ref().is_none_or(|f| &m.from_user == f);
        let to = self.to.as_ref().is_none_or(|t| &m.to_user == t);
        user && conversation && from && to
    }
}

/// `a,b` → the two users of a conversation.
pub fn parse_conversation(s: &str) -> Result<(String, String), String> {
    match s.split_once(',') {
        Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() && !b.contains(',') => {
            Ok((a.trim().to_string(), b.trim().to_string()))
        }
        _ => Err(format!(
            "{s:?} is not a conversation: expected two users separated by a comma, e.g. alice,bob"
        )),
    }
}

/// Where to start reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only records produced from now on (the high watermark).
    End,
    /// The oldest record the broker still keeps (the low watermark).
    Beginning,
    /// N records before the end of each partition (fewer if it holds fewer).
    Last(u64),
}

impl Start {
    pub fn describe(self) -> String {
        match self {
            Start::End => "from the end".into(),
            Start::Beginning => "from the beginning".into(),
            Start::Last(1) => "from the last record of each partition".into(),
            Start::Last(n) => format!("from the last {n} records of each partition"),
        }
    }
}

/// The first offset to read of a partition whose watermarks are `r.low`..`r.high`.
pub fn start_offset(start: Start, r: &PartitionRange) -> i64 {
    match start {
        Start::End => r.high,
        Start::Beginning => r.low,
        Start::Last(n) => r
            .high
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX))
            .max(r.low),
    }
}

/// The partitions to read: all of the topic's, or those asked for (each must exist).
pub fn select_partitions(
    ranges: &[PartitionRange],
    wanted: &[i32],
    topic: &str,
) -> Result<Vec<PartitionRange>, String> {
    if wanted.is_empty() {
        return Ok(ranges.to_vec());
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !ranges.iter().any(|r| r.partition == **w))
        .map(i32::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "topic {topic} has no partition {} (it has {}: use --partition 0..{})",
            missing.join(", "),
            ranges.len(),
            ranges.len().saturating_sub(1)
        ));
    }
    Ok(ranges
        .iter()
        .filter(|r| wanted.contains(&r.partition))
        .copied()
        .collect())
}

/// One message shown: where it is in Kafka and what it says. `--json` prints it as one
/// object per line; field names are those of the API's message (camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub source: Mode,
    pub partition: i32,
    pub offset: i64,
    /// The record's key (the conversation key), or the stored document's `conversation`.
    pub key: Option<String>,
    /// The record's own timestamp (Kafka mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_timestamp: Option<i64>,
    /// When the consumer stored the document (stored mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<i64>,
    #[serde(flatten)]
    pub message: Option<Message>,
    /// Why the record or document is not a message (it is shown anyway when unfiltered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decodes a record's value: the API publishes the [`Message`] as JSON.
pub fn decode(rec: &TopicRecord) -> Result<Message, String> {
    let payload = rec.payload.as_deref().ok_or("the record has no value")?;
    serde_json::from_slice(payload).map_err(|e| format!("the value is not a message: {e}"))
}

impl Line {
    pub fn from_record(rec: &TopicRecord, decoded: Result<Message, String>) -> Line {
        let (message, error) = match decoded {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        Line {
            source: Mode::Kafka,
            partition: rec.partition,
            offset: rec.offset,
            key: rec
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            kafka_timestamp: rec.timestamp_ms,
            stored_at: None,
            message,
            error,
        }
    }

    /// A stored document, found for the record `rec_partition`/`rec_offset` (used when
    /// the document does not decode far enough to say where it came from).
    pub fn from_stored(doc: &StoredDoc, rec_partition: i32, rec_offset: i64) -> Line {
        match &doc.stored {
            Ok(s) => Line {
                source: Mode::Stored,
                partition: s.partition,
                offset: s.offset,
                key: Some(s.conversation.clone()),
                kafka_timestamp: None,
                stored_at: Some(s.stored_at),
                message: Some(s.clone().into_message()),
                error: None,
            },
            Err(e) => Line {
                source: Mode::Stored,
                partition: rec_partition,
                offset: rec_offset,
                key: None,
                kafka_timestamp: None,
                stored_at: doc.stored_at,
                message: None,
                error: Some(format!("document {}: {e}", doc.id)),
            },
        }
    }
}

/// A conversation key for people: `alice,bob` (the `--conversation` syntax) instead of
/// the unit separator the key holds.
pub fn key_display(key: &str) -> String {
    key.replace('\u{1f}', ",")
}

/// The first `max` characters of `content` on one line (control characters, such as
/// newlines, become spaces), with `…` when cut.
pub fn preview(content: &str, max: usize) -> String {
    let mut out: String = content
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if content.chars().count() > max {
        out.push('…');
    }
    out
}

/// `2025-09-26T05:49:40.040Z` → `2025-09-26 05:49:40.040`.
fn time_display(ms: i64) -> String {
    wiber_model::rfc3339_ms(ms)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// One line for people, kcat-like: `p3@1042 2025-09-26 05:49:40.040 [alice,bob] alice → bob: Hello`.
/// Stored mode adds how long after the API accepted it the message was stored.
pub fn format_text(line: &Line, preview_chars: usize) -> String {
    let pos = format!("p{}@{}", line.partition, line.offset);
    let key = line
        .key
        .as_deref()
        .map(|k| format!("[{}]", key_display(k)))
        .unwrap_or_else(|| "[-]".into());
    match &line.message {
        Some(m) => {
            let stored = line
                .stored_at
                .map(|s| format!(" stored +{}ms", s - m.timestamp))
                .unwrap_or_default();
            format!(
                "{pos} {}{stored} {key} {} → {}: {}",
                time_display(m.timestamp),
                m.from_user,
                m.to_user,
                preview(&m.content, preview_chars)
            )
        }
        None => {
            let at = line
                .kafka_timestamp
                .or(line.stored_at)
                .map(time_display)
                .unwrap_or_else(|| "-".into());
            format!(
                "{pos} {at} {key} ({})",
                line.error.as_deref().unwrap_or("not a message")
            )
        }
    }
}

/// A record of the topic waiting for its document (stored mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub partition: i32,
    pub offset: i64,
    pub message_id: String,
}

/// Stored mode's bookkeeping: matching records of the topic, per partition in offset
/// order, until their documents are found in the store.
///
/// Why follow the topic and look documents up by `_id` instead of polling the
/// collection for `storedAt > last seen`: `storedAt` has no index, so that poll scans
/// the whole collection on MongoDB, and on FerretDB (SQLite) any range filter makes it
/// decode every document, every poll: a tail would cost what the store holds. `_id` is
/// the messageId, which the record carries, and a `{_id: id}` lookup is an index lookup
/// on both. So each poll costs one lookup per partition head (plus the records right
/// behind it), whatever the size of the collection.
///
/// Order: a partition's records are shown in offset order, a head not yet stored holds
/// back those behind it (the consumer stores a partition in order, so this rarely
/// waits), and what one poll finds is merged across partitions by `storedAt`.
///
/// A head is given up on only when the consumer group has committed past it and it is
/// still not stored: the group is done with it, so it was dead-lettered or lost; a
/// slow consumer alone never makes the tail skip anything.
#[derive(Debug, Default)]
pub struct Pending {
    parts: BTreeMap<i32, VecDeque<PendingRecord>>,
    len: usize,
}

/// What one poll of the store resolved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Documents to show, in store order (see [`merge_store_order`]).
    pub shown: Vec<Line>,
    /// Records whose message was stored from an earlier record (an API retry with the
    /// same messageId, or a redelivery): the document was shown for that one, if at all.
    pub duplicates: u64,
    /// Records the group committed past that are not in the store.
    pub not_stored: Vec<PendingRecord>,
}

impl Pending {
    pub fn push(&mut self, rec: PendingRecord) {
        self.parts.entry(rec.partition).or_default().push_back(rec);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first record of each partition: `(partition, offset)`.
    pub fn heads(&self) -> Vec<(i32, i64)> {
        self.parts
            .values()
            .filter_map(|q| q.front().map(|r| (r.partition, r.offset)))
            .collect()
    }

    /// The ids to look up this poll: the first `per_partition` records of each partition.
    pub fn lookups(&self, per_partition: usize) -> Vec<String> {
        self.parts
            .values()
            .flat_map(|q| q.iter().take(per_partition).map(|r| r.message_id.clone()))
            .collect()
    }

    /// Takes what the lookups of `looked_up` found. `committed` is the group's committed
    /// offset per partition, read before the lookups, when it was read this poll.
    pub fn resolve(
        &mut self,
        looked_up: &HashSet<String>,
        found: &HashMap<String, StoredDoc>,
        committed: Option<&HashMap<i32, i64>>,
    ) -> Resolved {
        let mut out = Resolved::default();
        let mut per_partition = Vec::new();
        for (p, q) in self.parts.iter_mut() {
            let mut lines = Vec::new();
            while let Some(head) = q.front() {
                if let Some(doc) = found.get(&head.message_id) {
                    let same_record = match &doc.stored {
                        Ok(s) => s.partition == head.partition && s.offset == head.offset,
                        // Cannot tell where it came from: show it, for this record.
                        Err(_) => true,
                    };
                    if same_record {
                        lines.push(Line::from_stored(doc, head.partition, head.offset));
                    } else {
                        out.duplicates += 1;
                    }
                } else {
                    let given_up = looked_up.contains(&head.message_id)
                        && committed
                            .and_then(|c| c.get(p))
                            .is_some_and(|&c| head.offset < c);
                    if !given_up {
                        break;
                    }
                    out.not_stored.push(head.clone());
                }
                q.pop_front();
                self.len -= 1;
            }
            per_partition.push(lines);
        }
        self.parts.retain(|_, q| !q.is_empty());
        out.shown = merge_store_order(per_partition);
        out
    }
}

/// Merges per-partition runs (each in offset order) into one sequence ordered by
/// `storedAt`, never reordering a partition's own run (ties: lower partition first).
pub fn merge_store_order(runs: Vec<Vec<Line>>) -> Vec<Line> {
    let mut runs: Vec<VecDeque<Line>> = runs.into_iter().map(VecDeque::from).collect();
    let mut out = Vec::new();
    loop {
        let next = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.front()
                    .map(|l| (l.stored_at.unwrap_or(i64::MAX), l.partition, i))
            })
            .min();
        let Some((_, _, i)) = next else { break };
        out.extend(runs[i].pop_front());
    }
    out
}

/// Where to read, and what to show.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub mode: Mode,
    pub filter: Filter,
    pub start: Start,
    /// Partitions to read (empty: all).
    pub partitions: Vec<i32>,
    /// Stop after this many messages shown.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub bootstrap: String,
    pub topic: String,
    /// Stored mode: the store and the consumer group that writes it.
    pub store: Option<StoreTarget>,
    /// Stored mode: how often the store is polled.
    pub poll: Duration,
}

/// What happened, for the caller to print or count.
#[derive(Debug)]
pub enum Event<'a> {
    /// Partitions assigned: the tail is following from here (`(partition, offset)`).
    Started {
        starts: &'a [(i32, i64)],
    },
    Line(&'a Line),
    Warning(String),
}

/// Why the tail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `--count` messages were shown.
    Count,
    /// `--for` elapsed.
    Duration,
    /// Ctrl-C.
    Interrupted,
    /// stdout was closed (e.g. piped into `head`).
    OutputClosed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub mode: Mode,
    pub shown: u64,
    pub reason: StopReason,
    pub elapsed_ms: u64,
    /// Records of the topic read (matching or not).
    pub records: u64,
    /// Records whose value is not a message (left out when filtering).
    pub undecodable: u64,
    /// Stored mode: records still waiting for their document at the end.
    pub pending: u64,
    /// Stored mode: records of a message stored from an earlier record.
    pub duplicates: u64,
    /// Stored mode: records the group committed past without storing them.
    pub not_stored: u64,
}

impl Summary {
    /// The summary line for stderr.
    pub fn text(&self) -> String {
        let how = match self.reason {
            StopReason::Count => "--count reached",
            StopReason::Duration => "--for elapsed",
            StopReason::Interrupted => "interrupted",
            StopReason::OutputClosed => "output closed",
        };
        let mut s = format!(
            "tail: {} message{} shown in {:.1} s ({how}; {} record{} read",
            self.shown,
            if self.shown == 1 { "" } else { "s" },
            self.elapsed_ms as f64 / 1000.0,
            self.records,
            if self.records == 1 { "" } else { "s" },
        );
        if self.undecodable > 0 {
            s += &format!(", {} not a message", self.undecodable);
        }
        if self.mode == Mode::Stored {
            s += &format!(", {} waiting to be stored", self.pending);
            if self.duplicates > 0 {
                s += &format!(", {} duplicate records", self.duplicates);
            }
            if self.not_stored > 0 {
                s += &format!(
                    ", {} NOT stored though the group committed past them",
                    self.not_stored
                );
            }
        }
        s + ")"
    }
}

/// Stored mode waits for at most this many records (then it stops reading Kafka until
/// the store catches up), so a stopped consumer group cannot make the tail grow unbounded.
const MAX_PENDING: usize = 100_000;
/// Lookups per partition and poll: the head and the records right behind it.
const LOOKUPS_PER_PARTITION: usize = 200;
const LOOKUP_CONCURRENCY: usize = 8;
/// A head waiting this long has the group's committed offsets read (at most this often).
const COMMITTED_CHECK: Duration = Duration::from_secs(2);
/// The same Kafka fetch error is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Follows the topic (and, in stored mode, the store) until `--count`, `--for`, `stop`
/// resolves (Ctrl-C) or `emit` fails with a broken pipe. `emit` prints each event.
pub async fn follow(
    opts: &TailOptions,
    stop: impl Future<Output = ()>,
    mut emit: impl FnMut(Event<'_>) -> std::io::Result<()>,
) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let (bootstrap, topic) = (opts.bootstrap.clone(), opts.topic.clone());
    let (consumer, ranges) = tokio::task::spawn_blocking(move || {
        TailConsumer::connect(&bootstrap, &topic, Duration::from_secs(10))
    })
    .await
    .context("the kafka connect task failed")??;
    let parts =
        select_partitions(&ranges, &opts.partitions, &opts.topic).map_err(anyhow::Error::msg)?;
    let starts: Vec<(i32, i64)> = parts
        .iter()
        .map(|r| (r.partition, start_offset(opts.start, r)))
        .collect();
    consumer.assign(&starts)?;
    let store = match (opts.mode, &opts.store) {
        (Mode::Stored, Some(t)) => {
            let coll = store::collection(t).await?;
            // The driver connects lazily: one `_id` lookup now turns a wrong address
            // into an error at once, instead of a warning on every poll.
            store::find_by_ids(&coll, &["wiberctl-tail-probe".to_string()], 1)
                .await
                .with_context(|| format!("MongoDB at {} does not answer", t.mongo_uri))?;
            Some((coll, t))
        }
        (Mode::Stored, None) => anyhow::bail!("stored mode needs the store's address"),
        (Mode::Kafka, _) => None,
    };
    let (mut rx, reader) = consumer.spawn(1024);
    let mut summary = Summary {
        mode: opts.mode,
        shown: 0,
        reason: StopReason::Interrupted,
        elapsed_ms: 0,
        records: 0,
        undecodable: 0,
        pending: 0,
        duplicates: 0,
        not_stored: 0,
    };
    if let Err(e) = emit(Event::Started { starts: &starts }) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(anyhow::Error::new(e).context("cannot write the output"));
        }
    }

    let deadline = opts.duration.map(|d| t0 + d);
    let mut pending = Pending::default();
    let mut poll = tokio::time::interval(opts.poll.max(Duration::from_millis(10)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warn: Option<Instant> = None;
    let mut suppressed = 0u64;
    let mut committed_read: Option<Instant> = None;
    // Since when each partition's current head has been waiting.
    let mut head_since: HashMap<(i32, i64), Instant> = HashMap::new();
    tokio::pin!(stop);

    let reason = 'outer: loop {
        let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = &mut stop => break StopReason::Interrupted,
            _ = tokio::time::sleep_until(until), if deadline.is_some() => break StopReason::Duration,
            r = rx.recv(), if pending.len() < MAX_PENDING => {
                let Some(r) = r else {
                    anyhow::bail!("the kafka reader of topic {} stopped unexpectedly", opts.topic);
                };
                let rec = match r {
                    Ok(rec) => rec,
                    Err(e) => {
                        // librdkafka retries by itself; say so, but not on every poll.
                        if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            let more = if suppressed > 0 { format!(" (and {suppressed} more)") } else { String::new() };
                            let _ = emit(Event::Warning(format!("{e}{more}; retrying")));
                            last_warn = Some(Instant::now());
                            suppressed = 0;
                        } else {
                            suppressed += 1;
                        }
                        continue;
                    }
                };
                summary.records += 1;
                let decoded = decode(&rec);
                match (&decoded, opts.mode) {
                    (Err(_), _) if !opts.filter.is_empty() => summary.undecodable += 1,
                    (Ok(m), _) if !opts.filter.matches(m) => {}
                    (Err(_), Mode::Stored) => summary.undecodable += 1,
                    (decoded, Mode::Kafka) => {
                        if decoded.is_err() {
                            summary.undecodable += 1;
                        }
                        let line = Line::from_record(&rec, decoded.clone());
                        if let Some(r) = show(&mut emit, &line, &mut summary, opts.count)? {
                            break 'outer r;
                        }
                    }
                    (Ok(m), Mode::Stored) => pending.push(PendingRecord {
                        partition: rec.partition,
                        offset: rec.offset,
                        message_id: m.message_id.clone(),
                    }),
                }
            }
            _ = poll.tick(), if store.is_some() && !pending.is_empty() => {
                let (coll, target) = store.as_ref().expect("guarded by store.is_some()");
                // The group's committed offsets, only while some head has waited a while
                // (a consumer storing in order makes every head go within a poll or two).
                let heads = pending.heads();
                head_since.retain(|h, _| heads.contains(h));
                for h in heads {
                    head_since.entry(h).or_insert_with(Instant::now);
                }
                let waited = head_since.values().any(|t| t.elapsed() >= COMMITTED_CHECK);
                let due = committed_read.is_none_or(|t| t.elapsed() >= COMMITTED_CHECK);
                let committed = if waited && due {
                    committed_read = Some(Instant::now());
                    match kafka::group_lag(&opts.bootstrap, &target.group, &opts.topic, Duration::from_secs(5)).await {
                        Ok(lags) => Some(lags.iter().filter_map(|l| Some((l.partition, l.committed?))).collect::<HashMap<_, _>>()),
                        Err(e) => {
                            let _ = emit(Event::Warning(format!("cannot read the committed offsets of group {}: {e:#}", target.group)));
                            None
                        }
                    }
                } else {
                    None
                };
                let ids = pending.lookups(LOOKUPS_PER_PARTITION);
                let found = match store::find_by_ids(coll, &ids, LOOKUP_CONCURRENCY).await {
                    Ok(found) => found,
                    Err(e) => {
                        // A store outage is something to watch, not a reason to stop
                        // watching: say so (not on every poll) and try again next poll.
                        if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            let _ = emit(Event::Warning(format!("{e:#}; retrying")));
                            last_warn = Some(Instant::now());
                        }
                        continue;
                    }
                };
                let looked_up: HashSet<String> = ids.into_iter().collect();
                let r = pending.resolve(&looked_up, &found, committed.as_ref());
                summary.duplicates += r.duplicates;
                for lost in &r.not_stored {
                    summary.not_stored += 1;
                    let _ = emit(Event::Warning(format!(
                        "message {} (partition {} offset {}) is not in {}.{} although group {} committed past it: dead-lettered or lost (check `wiberctl stack logs consumer`)",
                        lost.message_id, lost.partition, lost.offset, target.mongo_db, target.mongo_collection, target.group
                    )));
                }
                for line in &r.shown {
                    if let Some(reason) = show(&mut emit, line, &mut summary, opts.count)? {
                        break 'outer reason;
                    }
                }
            }
        }
    };
    drop(rx);
    // The reader notices the closed channel within one poll (100 ms).
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    summary.reason = reason;
    summary.pending = pending.len() as u64;
    summary.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Shows one line; `Some(reason)` when the tail must end (`--count` reached, or stdout
/// closed: a tail piped into `head` ends quietly, as `cat` would).
fn show(
    emit: &mut impl FnMut(Event<'_>) -> std::io::Result<()>,
    line: &Line,
    summary: &mut Summary,
    count: Option<u64>,
) -> anyhow::Result<Option<StopReason>> {
    match emit(Event::Line(line)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(Some(StopReason::OutputClosed))
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot write the output")),
    }
    summary.shown += 1;
    Ok(count
        .is_some_and(|n| summary.shown >= n)
        .then_some(StopReason::Count))
}

#[cfg(test)]
mod tests {
    use wiber_model::{conversation_key, StoredMessage};

    use super::*;

    fn msg(from: &str, to: &str, id: &str, content: &str) -> Message {
        Message {
            message_id: id.into(),
            from_user: from.into(),
            to_user: to.into(),
            content: content.into(),
            timestamp: 1_758_865_780_040,
            created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
        }
    }

    #[test]
    fn filters_combine_and_match_either_direction() {
        let ab = msg("alice", "bob", "1", "x");
        let ba = msg("bob", "alice", "2", "x");
        let ac = msg("alice", "carol", "3", "x");
        assert!(Filter::default().is_empty());
        assert!(Filter::default().matches(&ac));

        let conv = Filter {
            conversation: Some(conversation_key("bob", "alice")),
            ..Filter::default()
        };
        assert!(conv.matches(&ab) && conv.matches(&ba) && !conv.matches(&ac));

        let user = Filter {
            user: Some("bob".into()),
            ..Filter::default()
        };
        assert!(user.matches(&ab) && user.matches(&ba) && !user.matches(&ac));

        let from_to = Filter {
            from: Some("alice".into()),
            to: Some("bob".into()),
            ..Filter::default()
        };
        assert!(from_to.matches(&ab) && !from_to.matches(&ba) && !from_to.matches(&ac));

        let from = Filter {
            from: Some("alice".into()),
            ..Filter::default()
        };
        assert!(from.matches(&ab) && from.matches(&ac) && !from.matches(&ba));
    }

    #[test]
    fn conversations_parse_as_two_users() {
        assert_eq!(
            parse_conversation("alice, bob"),
            Ok(("alice".into(), "bob".into()))
        );
        for bad in ["alice", "alice,", ",bob", "a,b,c", ""] {
            assert!(parse_conversation(bad).is_err(), "{bad:?}");
        }
    }

    fn range(partition: i32, low: i64, high: i64) -> PartitionRange {
        PartitionRange {
            partition,
            low,
            high,
        }
    }

    #[test]
    fn start_offsets_follow_the_watermarks() {
        let r = range(0, 100, 250);
        assert_eq!(start_offset(Start::End, &r), 250);
        assert_eq!(start_offset(Start::Beginning, &r), 100);
        assert_eq!(start_offset(Start::Last(10), &r), 240);
        // Fewer records kept than asked for: from the oldest one kept.
        assert_eq!(start_offset(Start::Last(1000), &r), 100);
        assert_eq!(start_offset(Start::Last(u64::MAX), &r), 100);
        assert_eq!(start_offset(Start::Last(0), &r), 250);
        // An empty partition.
        assert_eq!(start_offset(Start::Last(5), &range(1, 0, 0)), 0);
    }

    #[test]
    fn partitions_are_selected_or_named_when_missing() {
        let rs = [range(0, 0, 1), range(1, 0, 2), range(2, 0, 3)];
        assert_eq!(select_partitions(&rs, &[], "t").unwrap().len(), 3);
        assert_eq!(
            select_partitions(&rs, &[2, 0], "t").unwrap(),
            vec![rs[0], rs[2]]
        );
        let e = select_partitions(&rs, &[1, 7], "t").unwrap_err();
        assert!(
            e.contains("no partition 7") && e.contains("it has 3"),
            "{e}"
        );
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        assert_eq!(preview("hello", 10), "hello");
        assert_eq!(preview("hello world", 5), "hello…");
        assert_eq!(preview("a\nb\tc", 10), "a b c");
        // Characters, not bytes.
        assert_eq!(preview("ééééé", 3), "ééé…");
    }

    fn record(partition: i32, offset: i64, value: &[u8]) -> TopicRecord {
        TopicRecord {
            partition,
            offset,
            key: Some(conversation_key("alice", "bob").into_bytes()),
            timestamp_ms: Some(1_758_865_780_041),
            payload: Some(value.to_vec()),
        }
    }

    #[test]
    fn records_decode_and_render_as_text_and_json() {
        let m = msg("alice", "bob", "m1", "Hello\nthere, Bob");
        let rec = record(3, 42, &serde_json::to_vec(&m).unwrap());
        let line = Line::from_record(&rec, decode(&rec));
        assert_eq!(line.message.as_ref(), Some(&m));
        assert_eq!(
            format_text(&line, 11),
            "p3@42 2025-09-26 05:49:40.040 [alice,bob] alice → bob: Hello there…"
        );
        let v = serde_json::to_value(&line).unwrap();
        assert_eq!(v["source"], "kafka");
        assert_eq!(
            (v["partition"].as_i64(), v["offset"].as_i64()),
            (Some(3), Some(42))
        );
        assert_eq!(v["key"], "alice\u{1f}bob");
        assert_eq!(v["kafkaTimestamp"], 1_758_865_780_041i64);
        assert_eq!(v["messageId"], "m1");
        assert_eq!(v["fromUser"], "alice");
        assert_eq!(v["content"], "Hello\nthere, Bob");
        assert!(v.get("storedAt").is_none() && v.get("error").is_none());

        let bad = record(0, 7, b"not json");
        let line = Line::from_record(&bad, decode(&bad));
        assert!(line.message.is_none());
        let text = format_text(&line, 20);
        assert!(
            text.starts_with(
                "p0@7 2025-09-26 05:49:40.041 [alice,bob] (the value is not a message"
            ),
            "{text}"
        );
        let v = serde_json::to_value(&line).unwrap();
        assert!(v["error"].as_str().unwrap().contains("not a message"));
    }

    fn stored(id: &str, partition: i32, offset: i64, stored_at: i64) -> StoredDoc {
        let s = StoredMessage::new(msg("alice", "bob", id, "hi"), stored_at, partition, offset);
        StoredDoc {
            id: id.into(),
            message_id: Some(id.into()),
            stored_at: Some(stored_at),
            stored: Ok(s),
        }
    }

    fn pending(records: &[(i32, i64, &str)]) -> Pending {
        let mut p = Pending::default();
        for &(partition, offset, id) in records {
            p.push(PendingRecord {
                partition,
                offset,
                message_id: id.into(),
            });
        }
        p
    }

    fn shown(r: &Resolved) -> Vec<(i32, i64)> {
        r.shown.iter().map(|l| (l.partition, l.offset)).collect()
    }

    #[test]
    fn stored_records_show_in_offset_order_and_a_missing_head_holds_its_partition() {
        let mut p = pending(&[(0, 1, "a"), (0, 2, "b"), (1, 5, "c"), (1, 6, "d")]);
        assert_eq!(p.lookups(1), vec!["a", "c"]);
        assert_eq!(p.heads(), vec![(0, 1), (1, 5)]);
        assert_eq!(p.lookups(10).len(), 4);
        let ids: HashSet<String> = p.lookups(10).into_iter().collect();
        // b is stored but a is not yet: partition 0 waits; c is stored, d is not.
        let found: HashMap<String, StoredDoc> = [
            ("b".to_string(), stored("b", 0, 2, 1000)),
            ("c".to_string(), stored("c", 1, 5, 1001)),
        ]
        .into();
        let r = p.resolve(&ids, &found, None);
        assert_eq!(shown(&r), vec![(1, 5)]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.lookups(1), vec!["a", "d"]);

        // Now a (stored later than b, in the same batch as d) shows up: a, b, d, merged by storedAt
        // but a before b whatever their storedAt (offset order within a partition).
        let found: HashMap<String, StoredDoc> = [
            ("a".to_string(), stored("a", 0, 1, 1003)),
            ("b".to_string(), stored("b", 0, 2, 1000)),
            ("d".to_string(), stored("d", 1, 6, 1002)),
        ]
        .into();
        let r = p.resolve(&ids, &found, None);
        assert_eq!(shown(&r), vec![(1, 6), (0, 1), (0, 2)]);
        assert!(p.is_empty());
        assert_eq!(r.shown[0].source, Mode::Stored);
        assert_eq!(r.shown[0].stored_at, Some(1002));
        assert_eq!(r.shown[0].key.as_deref(), Some("alice\u{1f}bob"));
    }

    #[test]
    fn a_redelivered_record_is_a_duplicate_not_a_second_line() {
        // The message was stored from offset 1; offset 4 carries the same messageId.
        let mut p = pending(&[(0, 1, "a"), (0, 4, "a")]);
        let ids: HashSet<String> = p.lookups(10).into_iter().collect();
        let found: HashMap<String, StoredDoc> = [("a".to_string(), stored("a", 0, 1, 1000))].into();
        let r = p.resolve(&ids, &found, None);
        assert_eq!(shown(&r), vec![(0, 1)]);
        assert_eq!(r.duplicates, 1);
        assert!(p.is_empty());
    }

    #[test]
    fn a_head_is_given_up_only_once_the_group_committed_past_it() {
        let mut p = pending(&[(0, 1, "lost"), (0, 2, "b")]);
        let ids: HashSet<String> = p.lookups(10).into_iter().collect();
        let found: HashMap<String, StoredDoc> = [("b".to_string(), stored("b", 0, 2, 1000))].into();
        // Not committed past it (slow consumer), or offsets not read: keep waiting.
        let r = p.resolve(&ids, &found, Some(&[(0, 1)].into()));
        assert!(r.shown.is_empty() && r.not_stored.is_empty());
        let r = p.resolve(&ids, &found, None);
        assert!(r.shown.is_empty() && r.not_stored.is_empty());
        // Committed past it but it was not looked up after that: keep waiting.
        let r = p.resolve(&HashSet::new(), &found, Some(&[(0, 3)].into()));
        assert!(r.shown.is_empty() && r.not_stored.is_empty());
        // Committed past it, looked up, absent: given up, and b is shown.
        let r = p.resolve(&ids, &found, Some(&[(0, 3)].into()));
        assert_eq!(r.not_stored.len(), 1);
        assert_eq!(r.not_stored[0].message_id, "lost");
        assert_eq!(shown(&r), vec![(0, 2)]);
        assert!(p.is_empty());
    }

    #[test]
    fn the_merge_keeps_each_partition_in_order() {
        let line = |partition, offset, stored_at| Line {
            source: Mode::Stored,
            partition,
            offset,
            key: None,
            kafka_timestamp: None,
            stored_at: Some(stored_at),
            message: None,
            error: None,
        };
        let merged = merge_store_order(vec![
            vec![line(0, 1, 30), line(0, 2, 10)],
            vec![line(1, 1, 20), line(1, 2, 40)],
            vec![],
        ]);
        let got: Vec<(i32, i64)> = merged.iter().map(|l| (l.partition, l.offset)).collect();
        assert_eq!(got, vec![(1, 1), (0, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn the_summary_says_what_ended_the_tail() {
        let mut s = Summary {
            mode: Mode::Kafka,
            shown: 1,
            reason: StopReason::Count,
            elapsed_ms: 1500,
            records: 3,
            undecodable: 0,
            pending: 0,
            duplicates: 0,
            not_stored: 0,
        };
        assert_eq!(
            s.text(),
            "tail: 1 message shown in 1.5 s (--count reached; 3 records read)"
        );
        s.mode = Mode::Stored;
        s.reason = StopReason::Interrupted;
        s.not_stored = 2;
        s.pending = 4;
        let t = s.text();
        assert!(
            t.contains("interrupted") && t.contains("4 waiting to be stored"),
            "{t}"
        );
        assert!(t.contains("2 NOT stored"), "{t}");
    }
}
