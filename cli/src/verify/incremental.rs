//! Verify as the run goes: every acknowledged message is looked up in the store as soon
//! as the consumer group has committed past it, so a long run reports a loss minutes
//! after it happens instead of an hour later.
//!
//! The watermark is Kafka's, not a clock's: the consumers commit an offset only after
//! the batch below it is written (the delivery contract), so an acknowledged message
//! whose `(partition, offset)` (the API's `wiber-partition` / `wiber-offset` answer
//! headers, kept in the ledger) lies below the group's committed offset of that partition
//! must be in the store now. A message not there is lost (or its offset was committed
//! before its write: the same bug, seen early), unless the dead-letter topic holds it:
//! the consumer commits a record it could not store once it is there, and such a message
//! is counted `dead_lettered` (the final verify's class), not lost. Until then it waits in `pending`, which
//! is as large as the consumer lag, not as the run: memory stays flat however long the
//! run, and the ledger itself streams from disk (read from where the last check stopped).
//!
//! Each due message costs one `{_id: ...}` lookup, the one equality FerretDB serves from
//! its index. That shows a message missing or corrupted; copies stored under other ids
//! and the order within conversations need the whole run, which the final verify reads
//! (it checks everything again, so this never weakens the verdict, it only moves the
//! first bad news earlier).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wiber_model::ledger::{LedgerEntry, Outcome};
use wiber_model::report::Example;

use super::check;
use super::store::{self, StoredDoc};
use crate::kafka;
use crate::runfile::StoreTarget;

/// Lookups per check at most: a backlog (the group was down, then catches up) is worked
/// off over several checks rather than in one burst against a store that just recovered.
pub const MAX_PER_CHECK: usize = 20_000;
/// Lookups judged together: a chunk's documents are all a check holds at once.
const CHUNK: usize = 500;
/// A chunk the store does not answer within this is put back (a fault is on).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// Time one check may spend on lookups before it leaves the rest to the next: it starts
/// no chunk after this.
const CHECK_BUDGET: Duration = Duration::from_secs(30);
/// Lookups in flight: the final verify's [`store::READ_CONCURRENCY`], halved, since the
/// stack is under load while this runs.
const CONCURRENCY: usize = 4;
/// Examples kept per kind.
const MAX_EXAMPLES: usize = 10;

/// What the checks found so far; goes into `scenario.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncrementalSummary {
    /// Checks done (one per interval).
    pub checks: u32,
    /// Acknowledged messages looked up, and what was wrong with them.
    pub checked: u64,
    pub lost: u64,
    pub corrupted: u64,
    /// Missing from the store but found in the dead-letter topic: not a problem here (the
    /// final verify's `dead_lettered` judges it), and not lost.
    #[serde(default)]
    pub dead_lettered: u64,
    /// Acknowledged messages still above the watermark at the last check (to the final
    /// verify), and the most there ever were at once.
    pub pending: u64,
    pub pending_max: u64,
    /// Acknowledged without a partition and offset (an API that sends no headers): only
    /// the final verify can check them.
    pub unplaced: u64,
    /// When the first problem was seen (ms since the epoch), and how long after its
    /// acknowledgement: how early the run knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_problem_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_problem_after_ack_ms: Option<i64>,
    /// The longest a message waited from its acknowledgement to its check.
    pub max_wait_ms: i64,
    /// Checks that could not ask Kafka or the store (a fault was on): retried next time.
    pub skipped: u32,
    #[serde(default)]
    pub examples: HashMap<String, Vec<Example>>,
}

impl IncrementalSummary {
    pub fn problems(&self) -> u64 {
        self.lost + self.corrupted
    }

    /// One sentence for the reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "verified as it went: {} acknowledged message(s) looked up in {} check(s) once \
             the consumer group had committed past them: lost {}, corrupted {}; longest wait \
             from ack to check {:.1} s; {} still pending at the end of the load (most at once \
             {}) for the final verify",
            self.checked,
            self.checks,
            self.lost,
            self.corrupted,
            self.max_wait_ms as f64 / 1000.0,
            self.pending,
            self.pending_max
        );
        if let (Some(at), Some(after)) = (self.first_problem_ms, self.first_problem_after_ack_ms) {
            s.push_str(&format!(
                "; first problem seen at {} ({:.1} s after its ack)",
                wiber_model::rfc3339_ms(at),
                after as f64 / 1000.0
            ));
        }
        if self.dead_lettered > 0 {
            s.push_str(&format!(
                "; {} found in the dead-letter topic instead of the store",
                self.dead_lettered
            ));
        }
        if self.skipped > 0 {
            s.push_str(&format!(
                "; {} check(s) could not reach Kafka or the store and were retried",
                self.skipped
            ));
        }
        if self.unplaced > 0 {
            s.push_str(&format!(
                "; {} answer(s) had no partition/offset headers (final verify only)",
                self.unplaced
            ));
        }
        s
    }

    /// One line for the progress display.
    pub fn line(&self) -> String {
        let mut s = format!("verified {}", self.checked);
        if self.problems() > 0 {
            s.push_str(&format!(
                " · LOST {} CORRUPTED {}",
                self.lost, self.corrupted
            ));
        }
        s
    }
}

/// An acknowledged message waiting for the watermark to pass it.
#[derive(Debug, Clone)]
struct Pending {
    entry: LedgerEntry,
    partition: i32,
    offset: i64,
}

/// The state between checks: followed ledgers, pending messages, findings.
#[derive(Debug)]
pub struct Watermarked {
    run_dir: PathBuf,
    /// Every `ledger.jsonl` under the run directory (one per load segment), and how far
    /// each has been read.
    tails: Vec<LedgerTail>,
    pending: Vec<Pending>,
    pub summary: IncrementalSummary,
    /// Kept from check to check (made at the first): a client per check would cost a
    /// connection round each time, and its threads' churn the heap's.
    lag: Option<kafka::LagReader>,
    store: Option<mongodb::Collection<mongodb::bson::Document>>,
}

impl Watermarked {
    /// Follows the ledgers that appear under `run_dir` (a scenario's directory: each load
    /// segment is a bench run in a subdirectory).
    pub fn new(run_dir: &Path) -> Watermarked {
        Watermarked {
            run_dir: run_dir.to_path_buf(),
            tails: Vec::new(),
            pending: Vec::new(),
            summary: IncrementalSummary::default(),
            lag: None,
            store: None,
        }
    }

    /// Reads what the ledgers gained since the last call.
    fn read_ledgers(&mut self) -> anyhow::Result<()> {
        for ledger in ledgers_under(&self.run_dir) {
            let Ok(meta) = std::fs::metadata(&ledger) else {
                continue;
            };
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            match self.tails.iter_mut().find(|t| t.inode == inode) {
                Some(t) => t.path = ledger,
                None => self.tails.push(LedgerTail::new(ledger, inode)),
            }
        }
        let mut fresh = Vec::new();
        for t in &mut self.tails {
            fresh.extend(t.read_new()?);
        }
        for e in fresh {
            self.push(e);
        }
        Ok(())
    }

    /// Takes one ledger line in: acknowledged messages wait for the watermark.
    fn push(&mut self, entry: LedgerEntry) {
        if entry.outcome != Outcome::Ok {
            return;
        }
        match (entry.partition, entry.offset) {
            (Some(partition), Some(offset)) => self.pending.push(Pending {
                entry,
                partition,
                offset,
            }),
            _ => self.summary.unplaced += 1,
        }
    }

    /// Removes and returns (at most `limit`) pending messages below the group's committed
    /// offsets, oldest acknowledgement first.
    fn due(&mut self, committed: &HashMap<i32, i64>, limit: usize) -> Vec<Pending> {
        let below = |p: &Pending| committed.get(&p.partition).is_some_and(|c| p.offset < *c);
        let (mut due, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(below);
        self.pending = rest;
        due.sort_by_key(|p| p.entry.answered);
        if due.len() > limit {
            self.pending.extend(due.split_off(limit));
        }
        due
    }

    /// Judges due messages by what the store holds under their ids, and what the
    /// dead-letter topic holds of those it does not (`dead`: id → why, [`dead_letters`]).
    fn judge(
        &mut self,
        run: &str,
        due: &[Pending],
        found: &HashMap<String, StoredDoc>,
        dead: &HashMap<String, String>,
        now: i64,
    ) {
        let s = &mut self.summary;
        for p in due {
            s.checked += 1;
            s.max_wait_ms = s.max_wait_ms.max(now - p.entry.answered);
            let problem = match found.get(&p.entry.message_id) {
                None if dead.contains_key(&p.entry.message_id) => {
                    s.dead_lettered += 1;
                    let v = s.examples.entry("dead_lettered".to_string()).or_default();
                    if v.len() < MAX_EXAMPLES {
                        let why = &dead[&p.entry.message_id];
                        v.push(check::example(Some(&p.entry), None, why.clone()));
                    }
                    None
                }
                None => Some((
                    "lost",
                    format!(
                        "acknowledged at {} as partition {} offset {}, not in the store once \
                         the group had committed past it",
                        p.entry.answered, p.partition, p.offset
                    ),
                    None,
                )),
                Some(d) => {
                    check::corruption(run, &p.entry, d, true).map(|why| ("corrupted", why, Some(d)))
                }
            };
            let Some((kind, why, doc)) = problem else {
                continue;
            };
            if kind == "lost" {
                s.lost += 1;
            } else {
                s.corrupted += 1;
            }
            if s.first_problem_ms.is_none() {
                s.first_problem_ms = Some(now);
                s.first_problem_after_ack_ms = Some(now - p.entry.answered);
            }
            let v = s.examples.entry(kind.to_string()).or_default();
            if v.len() < MAX_EXAMPLES {
                v.push(check::example(Some(&p.entry), doc, why));
            }
        }
        s.pending = self.pending.len() as u64;
        s.pending_max = s.pending_max.max(s.pending);
    }

    /// One check: read the ledgers on, ask Kafka for the watermark, look up what passed
    /// it. A check that cannot reach Kafka or the store (a fault is on) is skipped, and
    /// what it would have looked at waits for the next.
    pub async fn check(&mut self, target: &StoreTarget) -> anyhow::Result<()> {
        self.read_ledgers()?;
        self.summary.checks += 1;
        let lag = self.lag.get_or_insert_with(|| {
            kafka::LagReader::new(&target.kafka, &target.group, &target.topic)
        });
        let lags = match lag.read(Duration::from_secs(5)).await {
            Ok(l) => l,
            Err(_) => {
                self.summary.skipped += 1;
                return Ok(());
            }
        };
        let committed: HashMap<i32, i64> = lags
            .iter()
            .filter_map(|l| Some((l.partition, l.committed?)))
            .collect();
        let due = self.due(&committed, MAX_PER_CHECK);
        if due.is_empty() {
            self.judge(
                "",
                &[],
                &HashMap::new(),
                &HashMap::new(),
                wiber_model::now_ms(),
            );
            return Ok(());
        }
        if self.store.is_none() {
            // A URI that does not parse is an error to report, not a fault to wait out.
            self.store = Some(store::collection(target).await?);
        }
        let coll = self.store.clone().expect("made above");
        let run = due[0].entry.run.clone();
        // Chunk by chunk, each judged as it returns, within a budget: a backlog (checks
        // skipped under faults, a group that was down) is worked off over several checks
        // and every chunk done counts. Looked up in one go, 20,000 due messages outlasted
        // the lookup timeout under an hour's faults, were all put back, and the next check
        // tried them all again: the soak's checker stalled for minutes while their
        // documents filled the generator's memory.
        let started = tokio::time::Instant::now();
        let mut rest = due.into_iter();
        loop {
            let chunk: Vec<Pending> = rest.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            if started.elapsed() >= CHECK_BUDGET {
                // Out of time: the rest waits for the next check.
                self.pending.extend(chunk);
                break;
            }
            let ids: Vec<String> = chunk.iter().map(|p| p.entry.message_id.clone()).collect();
            match lookup(&coll, &ids).await {
                Ok(found) => {
                    let missing: HashSet<&str> = chunk
                        .iter()
                        .map(|p| p.entry.message_id.as_str())
                        .filter(|id| !found.contains_key(*id))
                        .collect();
                    let dead = dead_letters(target, &missing).await;
                    self.judge(&run, &chunk, &found, &dead, wiber_model::now_ms())
                }
                Err(_) => {
                    // The store is down (a fault): these are checked next time.
                    self.summary.skipped += 1;
                    self.pending.extend(chunk);
                    break;
                }
            }
        }
        self.pending.extend(rest);
        self.summary.pending = self.pending.len() as u64;
        self.summary.pending_max = self.summary.pending_max.max(self.summary.pending);
        Ok(())
    }
}

/// The dead letters of `ids` (id → why), read from the dead-letter topic only when some
/// due message is missing (normally never). A topic that cannot be read gives none: the
/// message then counts as lost here, and the final verify reads the topic again.
async fn dead_letters(target: &StoreTarget, ids: &HashSet<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return out;
    }
    let topic = kafka::dlq::topic_of(&target.topic);
    let _ = kafka::dlq::scan(&target.kafka, &topic, Duration::from_secs(5), |d| {
        if let Some(id) = d.message_id.as_deref().filter(|id| ids.contains(id)) {
            out.entry(id.to_string()).or_insert_with(|| {
                format!(
                    "acknowledged, not in the store once the group had committed past it: \
                     dead-lettered as {} at {topic}@{}",
                    d.class.map_or("unclassified", |c| c.name()),
                    d.pos
                )
            });
        }
    })
    .await;
    out
}

async fn lookup(
    coll: &mongodb::Collection<mongodb::bson::Document>,
    ids: &[String],
) -> anyhow::Result<HashMap<String, StoredDoc>> {
    tokio::time::timeout(CHUNK_TIMEOUT, store::find_by_ids(coll, ids, CONCURRENCY))
        .await
        .with_context(|| {
            format!(
                "the store did not answer {} lookups within {CHUNK_TIMEOUT:?}",
                ids.len()
            )
        })?
}

/// `ledger.jsonl` of every run directory directly under `dir`, in name order (bench run
/// directories start with their UTC time).
fn ledgers_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("ledger.jsonl"))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// A ledger file read as it grows: from where the last read stopped, whole lines only
/// (a line being written is left for the next read).
///
/// Known by its inode, not its path: the scenario runner renames a finished segment's
/// directory (`load/`), and the renamed file is the same ledger, not a new one.
#[derive(Debug)]
struct LedgerTail {
    path: PathBuf,
    inode: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl LedgerTail {
    fn new(path: PathBuf, inode: u64) -> LedgerTail {
        LedgerTail {
            path,
            inode,
            pos: 0,
            partial: Vec::new(),
        }
    }

    fn read_new(&mut self) -> anyhow::Result<Vec<LedgerEntry>> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // Renamed since it was found: read on under its new name next time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open the ledger {}", self.path.display()))
            }
        };
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .with_context(|| format!("cannot read the ledger {}", self.path.display()))?;
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = Vec::new();
        for line in whole.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e: LedgerEntry = serde_json::from_slice(line)
                .with_context(|| format!("{}: not a ledger line", self.path.display()))?;
            out.push(e);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use wiber_model::{ledger, Message, StoredMessage};

    const RUN: &str = "r1";

    fn entry(seq: u64, outcome: Outcome, place: Option<(i32, i64)>) -> LedgerEntry {
        let content = ledger::content(RUN, 0, seq, 40);
        LedgerEntry {
            message_id: ledger::message_id(RUN, 0, seq),
            run: RUN.into(),
            conversation: 0,
            seq,
            due: 1_000 + seq as i64,
            sent: Some(1_000 + seq as i64),
            answered: 1_010 + seq as i64,
            outcome,
            status: Some(200),
            error: None,
            acked_timestamp: None,
            partition: place.map(|p| p.0),
            offset: place.map(|p| p.1),
            attempts: 1,
            size: content.len(),
            content_hash: ledger::content_hash(&content),
            warmup: false,
            step: 0,
        }
    }

    /// The document the consumer stores for `e`, with `content`.
    fn doc(e: &LedgerEntry, content: String) -> StoredDoc {
        let (from, to) = ledger::users(RUN, e.conversation);
        let message = Message {
            message_id: e.message_id.clone(),
            from_user: from,
            to_user: to,
            content,
            timestamp: 7,
            created_at: wiber_model::rfc3339_ms(7),
        };
        StoredDoc {
            id: e.message_id.clone(),
            message_id: Some(e.message_id.clone()),
            stored_at: Some(7),
            stored: Ok(StoredMessage::new(message, 0, 0, 7)),
        }
    }

    #[test]
    fn only_acknowledged_messages_below_the_committed_offset_are_due() {
        let mut w = Watermarked::new(Path::new("/nonexistent"));
        w.push(entry(0, Outcome::Ok, Some((0, 5))));
        w.push(entry(1, Outcome::Ok, Some((0, 9))));
        w.push(entry(2, Outcome::Ok, Some((1, 3))));
        w.push(entry(3, Outcome::Unknown, Some((0, 1))));
        w.push(entry(4, Outcome::Ok, None));
        assert_eq!(w.summary.unplaced, 1);
        // Partition 0 committed up to 9 (exclusive), partition 1 nothing yet.
        let due = w.due(&HashMap::from([(0, 9)]), 100);
        assert_eq!(due.iter().map(|p| p.entry.seq).collect::<Vec<_>>(), vec![0]);
        assert_eq!(w.pending.len(), 2);
        // The limit leaves the rest pending, oldest acknowledgement first.
        let due = w.due(&HashMap::from([(0, 10), (1, 4)]), 1);
        assert_eq!(due.iter().map(|p| p.entry.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(w.pending.len(), 1);
    }

    #[test]
    fn a_message_missing_below_the_watermark_is_lost_and_a_changed_one_corrupted() {
        let mut w = Watermarked::new(Path::new("/nonexistent"));
        for seq in 0..3 {
            w.push(entry(seq, Outcome::Ok, Some((0, seq as i64))));
        }
        let due = w.due(&HashMap::from([(0, 3)]), 100);
        let mut found = HashMap::new();
        // seq 0 stored as sent, seq 1 missing, seq 2 stored with other content.
        for (seq, content) in [
            (0, ledger::content(RUN, 0, 0, 40)),
            (2, ledger::content(RUN, 0, 2, 40).to_uppercase()),
        ] {
            let e = entry(seq, Outcome::Ok, None);
            found.insert(e.message_id.clone(), doc(&e, content));
        }
        w.judge(RUN, &due, &found, &HashMap::new(), 5_000);
        let s = &w.summary;
        assert_eq!((s.checked, s.lost, s.corrupted), (3, 1, 1), "{s:#?}");
        assert_eq!(s.examples["lost"][0].seq, Some(1));
        assert_eq!(s.examples["lost"][0].offset, Some(1));
        assert_eq!(s.first_problem_ms, Some(5_000));
        assert!(s.line().contains("LOST 1"), "{}", s.line());
    }

    /// A missing message the dead-letter topic holds is dead-lettered, not lost, and no
    /// problem here (the final verify's class judges it).
    #[test]
    fn a_missing_message_found_in_the_dlq_is_dead_lettered_not_lost() {
        let mut w = Watermarked::new(Path::new("/nonexistent"));
        for seq in 0..2 {
            w.push(entry(seq, Outcome::Ok, Some((0, seq as i64))));
        }
        let due = w.due(&HashMap::from([(0, 2)]), 100);
        let dead = HashMap::from([(
            entry(1, Outcome::Ok, None).message_id,
            "dead-lettered as refused at t.dlq@0".to_string(),
        )]);
        w.judge(RUN, &due, &HashMap::new(), &dead, 5_000);
        let s = &w.summary;
        assert_eq!((s.checked, s.lost, s.dead_lettered), (2, 1, 1), "{s:#?}");
        assert_eq!(s.examples["lost"][0].seq, Some(0));
        assert_eq!(s.examples["dead_lettered"][0].seq, Some(1));
        assert_eq!(s.problems(), 1);
        assert!(s.describe().contains("1 found in the dead-letter topic"));
    }

    #[test]
    fn the_ledger_is_followed_as_it_grows_and_a_torn_line_waits() {
        let dir = std::env::temp_dir().join(format!("wiber-inc-{}", uuid::Uuid::new_v4()));
        let seg = dir.join("20260101T000000Z-load");
        std::fs::create_dir_all(&seg).unwrap();
        let path = seg.join("ledger.jsonl");
        let line =
            |seq| serde_json::to_string(&entry(seq, Outcome::Ok, Some((0, seq as i64)))).unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{}", line(0)).unwrap();
        let torn = line(1);
        write!(f, "{}", &torn[..10]).unwrap();
        f.flush().unwrap();
        let mut w = Watermarked::new(&dir);
        w.read_ledgers().unwrap();
        assert_eq!(w.pending.len(), 1);
        writeln!(f, "{}", &torn[10..]).unwrap();
        writeln!(f, "{}", line(2)).unwrap();
        f.flush().unwrap();
        w.read_ledgers().unwrap();
        assert_eq!(w.pending.len(), 3);
        // The runner renames a finished segment: the same ledger, read on, not again.
        drop(f);
        let renamed = dir.join("load");
        std::fs::rename(&seg, &renamed).unwrap();
        w.read_ledgers().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(renamed.join("ledger.jsonl"))
            .unwrap();
        writeln!(f, "{}", line(3)).unwrap();
        w.read_ledgers().unwrap();
        assert_eq!(w.pending.len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
