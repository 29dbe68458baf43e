//! The one worker loop: a conversation sending its requests in sequence, each at its due
//! time (or as soon as the previous one was answered, in closed loop). There is one task
//! per conversation, which is what keeps a conversation's sends sequential; [`Slots`]
//! cap the requests in flight across all of them.
//!
//! The conversations run on threads of their own ([`Threads::Own`]), each a
//! single-threaded runtime with its share of them, as oha's fast path does: a request
//! then goes from its conversation to its connection and back without waking another
//! thread. On the shared multi-threaded runtime every request cost a few cross-thread
//! wake-ups, and those, not CPU, held the closed loop to three quarters of oha's rate.
//!
//! Reads mixed into the load ([`Reads`]) run beside the conversations: per kind, one
//! lane per thread, each read due at `start + i / rate` and sent at its due time without
//! waiting for the previous one (a read has no order to keep), from a pool of in-flight
//! slots of its own, so slow reads cannot hold the writes back, or the other way round.
//!
//! Workers only measure; they send a [`Event`] per request to the collector and never
//! touch statistics or the terminal themselves.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::time::Instant;
use wiber_model::ledger::{self, Outcome};
use wiber_model::report::{ReadKind, ReadsConfig};
use wiber_model::NewMessage;

use super::reads::{self, Picker, Targets};
use super::schedule::{Pacing, Schedule};
use super::transport::{Answer, Transport};

/// How long after the end of the schedule a late request may still start. Without it a
/// healthy run would count its last few requests, a fraction of a millisecond late, as
/// "not started".
pub const START_GRACE: Duration = Duration::from_millis(250);

/// A request that starts later than this after its due time started late: the same bar
/// as the start-delay p99 the summary warns about.
pub const LATE: Duration = Duration::from_millis(10);

/// Pause between retries of an `unknown` outcome (times the attempt number, capped).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Room for the JSON around the content (users, message id, keys), so a body is written
/// into one allocation.
const BODY_OVERHEAD: usize = 192;

/// One request, measured. Offsets are from the phase start.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Conversation index within the run (phase base + local index).
    pub conversation: u32,
    pub seq: u64,
    pub message_id: String,
    pub due: Duration,
    /// When the first attempt started.
    pub sent: Duration,
    pub answered: Duration,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `timestamp` of the `ok` answer's body (ms since the epoch, the API's clock).
    pub acked_timestamp: Option<i64>,
    /// Partition and offset of the acknowledged record.
    pub position: Option<(i32, i64)>,
    pub attempts: u32,
    pub size: usize,
    /// [`ledger::fnv1a`] of the content; the ledger writes it as [`ledger::content_hash`]
    /// does (16 hex digits), without a string per request on the way.
    pub content_hash: u64,
}

/// One read, measured. Offsets are from the phase start.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSample {
    pub kind: ReadKind,
    /// What was read, after `/messages`.
    pub path: String,
    pub due: Duration,
    pub sent: Duration,
    pub answered: Duration,
    pub status: Option<u16>,
    /// Why it was not ok (`http_503`, `timeout`, ...); `None` for a 2xx.
    pub error: Option<String>,
}

/// What workers report to the collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Done(Sample),
    Read(ReadSample),
    /// Reads of a kind that were due but could not start in time (no free read slot
    /// before the end); `first_due` is the due offset of the first of them.
    ReadNotStarted {
        kind: ReadKind,
        count: u64,
        first_due: Duration,
    },
    /// Requests of a conversation that were due but could not start in time; `first_due`
    /// is the due offset of the first of them.
    NotStarted {
        conversation: u32,
        count: u64,
        first_due: Duration,
    },
}

/// The in-flight slots: how many requests may be in flight at once, across all
/// conversations. Each slot in use is one keep-alive connection of the transport.
///
/// In open loop the pool starts at `--connections` and grows by one each time a due
/// request finds every slot busy, up to `--max-connections` (k6's pre-allocated and
/// maximum VUs): by Little's law a rate R at service time S needs R x S in flight, which
/// the person typing `--rate` should not have to compute. In closed loop the pool is
/// fixed, because its size is the concurrency the run measures.
///
/// The counters say what held requests back, for the summary's judgement of whether the
/// generator was the limit.
#[derive(Debug)]
pub struct Slots {
    /// Shared, so that a read can own its slot in a task of its own.
    sem: Arc<Semaphore>,
    initial: usize,
    cap: usize,
    size: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    waited_at_cap: AtomicU64,
    late_for_slot: AtomicU64,
    late_for_conversation: AtomicU64,
    collector_full: AtomicU64,
}

/// What [`Slots`] saw during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotStats {
    /// Slots at the start (`--connections`).
    pub initial: usize,
    /// Most slots the pool may grow to (`--max-connections`; `initial` when fixed).
    pub cap: usize,
    /// Slots the pool had at the end.
    pub size: usize,
    /// Most requests in flight at once.
    pub peak: usize,
    /// Due requests that found every slot busy with the pool at its cap, and waited.
    pub waited_at_cap: u64,
    /// Open loop: requests that started late (past [`LATE`]) waiting for a slot.
    pub late_for_slot: u64,
    /// Open loop: requests due before their conversation's previous one was answered,
    /// that therefore started late (each conversation sends one at a time).
    pub late_for_conversation: u64,
    /// Times a worker found the collector's queue full and had to wait for it.
    pub collector_full: u64,
}

/// One slot in use; frees it when dropped.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    slots: &'a Slots,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One slot in use by a task that owns it (a read); frees it when dropped.
pub struct OwnedSlot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
}

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        self.slots.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Slots {
    /// A pool of `n` slots that never grows.
    pub fn fixed(n: usize) -> Slots {
        Slots::growing(n, n)
    }

    /// A pool of `initial` slots that grows up to `cap` (never below `initial`).
    pub fn growing(initial: usize, cap: usize) -> Slots {
        Slots {
            sem: Arc::new(Semaphore::new(initial)),
            initial,
            cap: cap.max(initial),
            size: AtomicUsize::new(initial),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waited_at_cap: AtomicU64::new(0),
            late_for_slot: AtomicU64::new(0),
            late_for_conversation: AtomicU64::new(0),
            collector_full: AtomicU64::new(0),
        }
    }

    /// A slot, waiting for one until `deadline` if every slot is busy and the pool
    /// cannot grow; `None` past it.
    pub async fn acquire(&self, deadline: Option<Instant>) -> Option<Slot<'_>> {
        if let Ok(p) = self.sem.try_acquire() {
            return Some(self.hold(p));
        }
        self.grow();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d, self.sem.acquire())
                .await
                .ok()?
                .ok()?,
            None => self.sem.acquire().await.ok()?,
        };
        Some(self.hold(permit))
    }

    /// [`Slots::acquire`] for a task that owns its slot.
    pub async fn acquire_owned(self: &Arc<Self>, deadline: Instant) -> Option<OwnedSlot> {
        let permit = match Arc::clone(&self.sem).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.grow();
                tokio::time::timeout_at(deadline, Arc::clone(&self.sem).acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        self.count_in();
        Some(OwnedSlot {
            _permit: permit,
            slots: Arc::clone(self),
        })
    }

    /// Every slot is busy: one more, unless the pool is at its cap (then the wait is
    /// counted).
    fn grow(&self) {
        let grown = self
            .size
            .fetch_update(Relaxed, Relaxed, |n| (n < self.cap).then_some(n + 1))
            .is_ok();
        if grown {
            self.sem.add_permits(1);
        } else {
            self.waited_at_cap.fetch_add(1, Relaxed);
        }
    }

    fn count_in(&self) {
        let n = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(n, Relaxed);
    }

    fn hold<'a>(&'a self, permit: SemaphorePermit<'a>) -> Slot<'a> {
        self.count_in();
        Slot {
            _permit: permit,
            slots: self,
        }
    }

    pub fn stats(&self) -> SlotStats {
        SlotStats {
            initial: self.initial,
            cap: self.cap,
            size: self.size.load(Relaxed),
            peak: self.peak.load(Relaxed),
            waited_at_cap: self.waited_at_cap.load(Relaxed),
            late_for_slot: self.late_for_slot.load(Relaxed),
            late_for_conversation: self.late_for_conversation.load(Relaxed),
            collector_full: self.collector_full.load(Relaxed),
        }
    }
}

/// Where the conversations of a phase run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// As tasks of the caller's runtime: what tests under paused time need (their clock
    /// is that runtime's).
    Caller,
    /// On this many threads of their own (at least one; no more than conversations).
    Own(usize),
}

/// The reads of a phase: what to read, their own in-flight slots, and how far each
/// conversation of the phase has got (so a page of the run's own can be picked).
pub struct Reads {
    pub config: ReadsConfig,
    pub slots: Arc<Slots>,
    /// Messages acknowledged so far, by the phase's local conversation index.
    pub acked: Vec<AtomicU64>,
}

impl Reads {
    pub fn new(config: ReadsConfig, slots: Slots, conversations: u32) -> Reads {
        Reads {
            config,
            slots: Arc::new(slots),
            acked: (0..conversations).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What every worker of a phase shares.
pub struct Phase<T> {
    pub transport: Arc<T>,
    pub schedule: Schedule,
    /// Due time of request 0.
    pub start: Instant,
    pub run: String,
    pub size: usize,
    pub retries: u32,
    /// Added to the local conversation index, so `--find-max` steps never share one.
    pub conversation_base: u32,
    pub slots: Arc<Slots>,
    pub events: mpsc::Sender<Event>,
    pub threads: Threads,
    /// Reads mixed into the writes, if any.
    pub reads: Option<Reads>,
}

impl<T: Transport> Phase<T> {
    /// Runs one task per conversation and waits for all of them. The collector sees the
    /// channel close when the last worker is done.
    pub async fn run(self) {
        let convs = self.schedule.conversations;
        let me = Arc::new(self);
        let n = match me.threads {
            Threads::Caller => 0,
            Threads::Own(n) => n.clamp(1, convs.max(1) as usize),
        };
        // Thread k runs conversations k, k + n, k + 2n, ...: each gets its share of the
        // schedule's round robin.
        let mut here = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        for k in 0..n {
            let mine: Vec<u32> = (k as u32..convs).step_by(n).collect();
            let lane = Lane {
                index: k as u64,
                of: n as u64,
            };
            match own_thread(Arc::clone(&me), mine.clone(), lane) {
                Ok(rx) => done.push(rx),
                Err(e) => {
                    // No thread (resource limits): the caller's runtime carries them.
                    tracing::warn!("bench runs conversations on the shared runtime: {e}");
                    for c in mine {
                        here.spawn(Arc::clone(&me).conversation(c));
                    }
                    me.spawn_read_lanes(&mut here, lane);
                }
            }
        }
        if n == 0 {
            for c in 0..convs {
                here.spawn(Arc::clone(&me).conversation(c));
            }
            me.spawn_read_lanes(&mut here, Lane { index: 0, of: 1 });
        }
        while here.join_next().await.is_some() {}
        for rx in done {
            // An error only means the thread ended without a word: it is over either way.
            let _ = rx.await;
        }
    }

    async fn conversation(self: Arc<Self>, local: u32) {
        let conv = self.conversation_base + local;
        let (from_user, to_user) = ledger::users(&self.run, conv);
        // One body template per conversation: the users are the same for every request.
        let mut msg = NewMessage {
            from_user,
            to_user,
            content: String::new(),
            message_id: None,
        };
        let end = self.schedule.end();
        let open = matches!(self.schedule.pacing, Pacing::Open { .. });
        // Past this instant a due request is given up as "not started" (open loop) or no
        // new request begins (closed loop).
        let start_deadline = if open {
            self.start + end + START_GRACE
        } else {
            self.start + end
        };
        for seq in 0.. {
            let due = if open {
                match self.schedule.due(local, seq) {
                    Some(d) => d,
                    None => break,
                }
            } else {
                Instant::now().saturating_duration_since(self.start)
            };
            if due >= end {
                break;
            }
            let due_at = self.start + due;
            let mut late = false;
            if open {
                let now = Instant::now();
                if now < due_at {
                    tokio::time::sleep_until(due_at).await;
                } else if now > due_at + LATE {
                    // The previous request of this conversation was answered after this
                    // one was due.
                    late = true;
                    self.slots.late_for_conversation.fetch_add(1, Relaxed);
                }
            }
            let slot = match self.slots.acquire(Some(start_deadline)).await {
                Some(s) if Instant::now() <= start_deadline => s,
                _ => {
                    self.give_up(conv, local, seq, due).await;
                    break;
                }
            };
            if open && !late && Instant::now() > due_at + LATE {
                self.slots.late_for_slot.fetch_add(1, Relaxed);
            }
            let sample = self.request(conv, seq, due, &mut msg, slot).await;
            if let (Some(r), Outcome::Ok) = (&self.reads, sample.outcome) {
                r.acked[local as usize].fetch_add(1, Relaxed);
            }
            if !self.emit(Event::Done(sample)).await {
                break; // the collector is gone: the run was abandoned
            }
        }
    }

    /// Hands an event to the collector; false when it is gone.
    async fn emit(&self, ev: Event) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(ev)) => {
                // The collector is behind: this wait delays the conversation, so count it.
                self.slots.collector_full.fetch_add(1, Relaxed);
                self.events.send(ev).await.is_ok()
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Sends request `seq` (and its retries), holding an in-flight slot per attempt.
    async fn request(
        &self,
        conv: u32,
        seq: u64,
        due: Duration,
        msg: &mut NewMessage,
        slot: Slot<'_>,
    ) -> Sample {
        msg.content = ledger::content(&self.run, conv, seq, self.size);
        msg.message_id = Some(ledger::message_id(&self.run, conv, seq));
        let content_hash = ledger::fnv1a(msg.content.as_bytes());
        let size = msg.content.len();
        let mut body = Vec::with_capacity(size + BODY_OVERHEAD);
        serde_json::to_writer(&mut body, &*msg).expect("a message serialises");
        let body = Bytes::from(body);
        let message_id = msg.message_id.take().expect("set above");
        let sent = Instant::now();
        let mut slot = Some(slot);
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            // A clone of `Bytes` shares the buffer: a retry sends the same bytes.
            let answer = self.transport.post(body.clone()).await;
            let outcome = Outcome::from_status(answer.status);
            if outcome != Outcome::Unknown || attempts > self.retries {
                break answer;
            }
            // Same messageId again: the API makes the retry idempotent. Let others use
            // the slot while we back off.
            drop(slot.take());
            tokio::time::sleep((RETRY_BACKOFF * attempts).min(RETRY_BACKOFF_MAX)).await;
            slot = match self.slots.acquire(None).await {
                Some(s) => Some(s),
                None => break Answer::error("transport"),
            };
        };
        let answered = Instant::now();
        drop(slot);
        let outcome = Outcome::from_status(answer.status);
        Sample {
            conversation: conv,
            seq,
            message_id,
            due,
            sent: sent.saturating_duration_since(self.start),
            answered: answered.saturating_duration_since(self.start),
            outcome,
            status: answer.status,
            error: answer.error_kind(),
            acked_timestamp: answer.timestamp.filter(|_| outcome == Outcome::Ok),
            position: answer.position.filter(|_| outcome == Outcome::Ok),
            attempts,
            size,
            content_hash,
        }
    }

    /// One read lane of each kind read, into `tasks`.
    fn spawn_read_lanes(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>, lane: Lane) {
        let Some(r) = &self.reads else { return };
        for (&kind, &rate) in &r.config.rates {
            tasks.spawn(Arc::clone(self).read_lane(kind, rate, lane));
        }
    }

    /// Lane `lane.index` of `lane.of` of one read kind: reads `lane.index`,
    /// `lane.index + lane.of`, ... of the kind's schedule (read `i` due at `i / rate`),
    /// each sent at its due time in a task of its own, holding a read slot.
    async fn read_lane(self: Arc<Self>, kind: ReadKind, rate: f64, lane: Lane) {
        let Some(r) = &self.reads else { return };
        let end = self.schedule.end();
        let total = (end.as_secs_f64() * rate).ceil() as u64;
        let deadline = self.start + end + START_GRACE;
        let mut picker = Picker::new(
            reads::seed(&self.run, self.conversation_base, kind, lane.index),
            r.config.page,
        );
        let mut inflight = tokio::task::JoinSet::new();
        let mut i = lane.index;
        while i < total {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(self.start + due).await;
            // Finished reads leave their tasks behind: collect them as we go.
            while inflight.try_join_next().is_some() {}
            let slot = match r.slots.acquire_owned(deadline).await {
                Some(s) if Instant::now() <= deadline => s,
                _ => {
                    let count = (total - i).div_ceil(lane.of);
                    let _ = self
                        .emit(Event::ReadNotStarted {
                            kind,
                            count,
                            first_due: due,
                        })
                        .await;
                    break;
                }
            };
            let targets = Targets::of(
                &r.config.source,
                &self.run,
                self.conversation_base,
                &r.acked,
            );
            let path = picker.path(kind, &targets);
            let me = Arc::clone(&self);
            inflight.spawn(async move {
                let sample = me.read(kind, path, due, slot).await;
                me.emit(Event::Read(sample)).await;
            });
            i += lane.of;
        }
        while inflight.join_next().await.is_some() {}
    }

    /// One read (no retries: a read that failed is what the reader saw).
    async fn read(
        &self,
        kind: ReadKind,
        path: String,
        due: Duration,
        slot: OwnedSlot,
    ) -> ReadSample {
        let sent = Instant::now();
        let answer = self.transport.get(path.clone()).await;
        let answered = Instant::now();
        drop(slot);
        ReadSample {
            kind,
            path,
            due,
            sent: sent.saturating_duration_since(self.start),
            answered: answered.saturating_duration_since(self.start),
            status: answer.status,
            error: answer.error_kind(),
        }
    }

    async fn give_up(&self, conv: u32, local: u32, seq: u64, due: Duration) {
        let count = match self.schedule.pacing {
            Pacing::Open { .. } => self.schedule.planned(local).saturating_sub(seq),
            Pacing::Closed => 0,
        };
        if count > 0 {
            let _ = self
                .events
                .send(Event::NotStarted {
                    conversation: conv,
                    count,
                    first_due: due,
                })
                .await;
        }
    }
}

/// Which share of each read kind's schedule a thread runs: reads `index`, `index + of`,
/// `index + 2 of`, ... (as thread k runs conversations k, k + n, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub index: u64,
    pub of: u64,
}

/// Runs `convs` (and `lane` of the reads) on a new thread with a single-threaded
/// runtime; the receiver completes when they are all done. The runtime is built here so
/// that failing to get one is the caller's to handle.
fn own_thread<T: Transport>(
    phase: Arc<Phase<T>>,
    convs: Vec<u32>,
    lane: Lane,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wiberctl-bench".into())
        .spawn(move || {
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for c in convs {
                    tasks.spawn(Arc::clone(&phase).conversation(c));
                }
                phase.spawn_read_lanes(&mut tasks, lane);
                while tasks.join_next().await.is_some() {}
            });
            // Dropping the runtime here closes this thread's connections; dropping the
            // phase lets the collector see the channel close.
            drop(rt);
            drop(phase);
            let _ = tx.send(());
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    //! The scheduler under a stalled server: due times must not move, latency must be
    //! measured from them, and what could not start must be counted.
    //!
    //! They run under paused tokio time: the clock only moves when every task waits, so
    //! the schedule is checked exactly and a 3 s plan takes milliseconds, whatever else
    //! the machine is doing.

    use super::*;
    use crate::bench::collector::{self, LedgerWriter, PhaseInfo};

    /// Timer granularity (1 ms) plus the 1 ms answer time: all the slack paused time needs.
    const SLACK: Duration = Duration::from_millis(3);

    /// A server that answers in 1 ms, except that from `stall_from` to `stall_until`
    /// (offsets from the phase start) it answers nothing; a client timeout of `timeout`
    /// turns a long stall into an `unknown`.
    struct Stalled {
        start: Instant,
        stall_from: Duration,
        stall_until: Duration,
        timeout: Duration,
    }

    impl Stalled {
        /// When an answer to a request made now comes, or `None` past the timeout.
        async fn wait(&self) -> Option<()> {
            let now = Instant::now();
            let (from, until) = (self.start + self.stall_from, self.start + self.stall_until);
            let answer_at = if now >= from && now < until {
                until
            } else {
                now
            } + Duration::from_millis(1);
            if answer_at - now > self.timeout {
                tokio::time::sleep(self.timeout).await;
                return None;
            }
            tokio::time::sleep_until(answer_at).await;
            Some(())
        }
    }

    impl Transport for Stalled {
        async fn post(&self, _body: Bytes) -> Answer {
            match self.wait().await {
                Some(()) => Answer::acked(200, ACKED_AT),
                None => Answer::error("timeout"),
            }
        }

        /// Reads stall with the writes: one server.
        async fn get(&self, _path: String) -> Answer {
            match self.wait().await {
                Some(()) => Answer::status(200),
                None => Answer::error("timeout"),
            }
        }
    }

    /// The `timestamp` the stalled server puts in its ok answers.
    const ACKED_AT: i64 = 1_700_000_000_000;
    const RATE: f64 = 100.0;
    const CONVS: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(3);

    fn phase(stall: (u64, u64), timeout: Duration, tx: mpsc::Sender<Event>) -> Phase<Stalled> {
        let start = Instant::now() + Duration::from_millis(10);
        Phase {
            transport: Arc::new(Stalled {
                start,
                stall_from: Duration::from_secs(stall.0),
                stall_until: Duration::from_secs(stall.1),
                timeout,
            }),
            schedule: Schedule {
                pacing: Pacing::Open { rate: RATE },
                conversations: CONVS,
                warmup: Duration::ZERO,
                window: WINDOW,
            },
            start,
            run: "t1".into(),
            size: 32,
            retries: 0,
            conversation_base: 0,
            slots: Arc::new(Slots::fixed(64)),
            events: tx,
            threads: Threads::Caller,
            reads: None,
        }
    }

    async fn run_and_collect(p: Phase<Stalled>, mut rx: mpsc::Receiver<Event>) -> Vec<Event> {
        let worker = tokio::spawn(p.run());
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        worker.await.unwrap();
        out
    }

    fn near(actual: Duration, expected: Duration) -> bool {
        actual >= expected && actual <= expected + SLACK
    }

    #[tokio::test(start_paused = true)]
    async fn due_times_hold_and_latency_counts_from_them_under_a_stall() {
        let (tx, rx) = mpsc::channel(1024);
        let events = run_and_collect(phase((1, 2), Duration::from_secs(10), tx), rx).await;
        let samples: Vec<&Sample> = events
            .iter()
            .map(|e| match e {
                Event::Done(s) => s,
                other => panic!("nothing should be left unstarted: {other:?}"),
            })
            .collect();
        assert_eq!(samples.len(), 300);
        for s in &samples {
            // Due time is start + i/rate, whatever the server did.
            let i = s.seq * u64::from(CONVS) + u64::from(s.conversation);
            assert_eq!(s.due, Duration::from_secs_f64(i as f64 / RATE), "{s:?}");
            assert_eq!(s.outcome, Outcome::Ok);
        }
        let at = |conv: u32, seq: u64| {
            *samples
                .iter()
                .find(|s| s.conversation == conv && s.seq == seq)
                .unwrap()
        };
        // Due at 1.0 s, the first request into the stall: answered at about 2 s.
        let first = at(0, 10);
        assert!(
            near(first.answered - first.due, Duration::from_millis(1000)),
            "{first:?}"
        );
        // Due at 1.1 s in the same conversation: it had to wait for the stalled one, so it
        // started at about 2 s. Its service time is ~1 ms, but its latency from the due
        // time is ~0.9 s: this is the coordinated-omission correction.
        let queued = at(0, 11);
        assert!(near(queued.sent, Duration::from_millis(2000)), "{queued:?}");
        assert!(queued.answered - queued.sent < SLACK, "{queued:?}");
        assert!(
            near(queued.answered - queued.due, Duration::from_millis(900)),
            "{queued:?}"
        );
        // Well after the stall everything is back to ~1 ms.
        let late = at(5, 28);
        assert!(late.answered - late.due < SLACK, "{late:?}");
        // Each conversation is sequential: seq n+1 never starts before seq n was answered.
        for c in 0..CONVS {
            let mut mine: Vec<&&Sample> = samples.iter().filter(|s| s.conversation == c).collect();
            mine.sort_by_key(|s| s.seq);
            assert_eq!(mine.len(), 30);
            assert!(mine.windows(2).all(|w| w[1].sent >= w[0].answered));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_slot_pool_grows_one_at_a_time_up_to_its_cap_and_counts_waits() {
        let slots = Slots::growing(2, 4);
        let held: Vec<Slot<'_>> = futures::future::join_all((0..4).map(|_| slots.acquire(None)))
            .await
            .into_iter()
            .map(|s| s.expect("the pool grows to 4"))
            .collect();
        let st = slots.stats();
        assert_eq!((st.size, st.peak, st.waited_at_cap), (4, 4, 0), "{st:?}");
        // At the cap a fifth request waits (here until its deadline) and is counted.
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(slots.acquire(Some(deadline)).await.is_none());
        assert_eq!(slots.stats().waited_at_cap, 1);
        drop(held);
        assert!(slots.acquire(Some(deadline)).await.is_some());
        // A fixed pool never grows.
        let fixed = Slots::fixed(1);
        let _one = fixed.acquire(None).await.unwrap();
        assert!(fixed.acquire(Some(Instant::now())).await.is_none());
        assert_eq!((fixed.stats().size, fixed.stats().cap), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_grows_past_the_initial_slots_to_keep_the_rate() {
        // 100 req/s at a 1 s stall needs ~100 in flight: 4 initial slots must grow.
        let (tx, rx) = mpsc::channel(1024);
        let mut p = phase((1, 2), Duration::from_secs(10), tx);
        p.schedule.conversations = 200;
        p.slots = Arc::new(Slots::growing(4, 1024));
        let slots = Arc::clone(&p.slots);
        let events = run_and_collect(p, rx).await;
        assert!(events
            .iter()
            .all(|e| matches!(e, Event::Done(s) if s.outcome == Outcome::Ok)));
        assert_eq!(events.len(), 300);
        let st = slots.stats();
        assert!((90..=110).contains(&st.peak), "{st:?}");
        assert_eq!(st.waited_at_cap, 0, "{st:?}");
        assert_eq!(st.late_for_conversation, 0, "{st:?}");
    }

    /// Reads run open loop beside the writes: each read starts at its due time even
    /// while earlier reads hang in a stall (a read has no order to wait for), its latency
    /// counts from that due time, and a conversation read asks for a page of what its
    /// conversation had acknowledged.
    #[tokio::test(start_paused = true)]
    async fn reads_keep_their_own_schedule_through_a_stall() {
        use wiber_model::report::{ReadSource, ReadsConfig};
        let (tx, rx) = mpsc::channel(4096);
        let mut p = phase((1, 2), Duration::from_secs(10), tx);
        let rates = [(ReadKind::Conversation, 50.0), (ReadKind::Count, 20.0)];
        p.reads = Some(Reads::new(
            ReadsConfig {
                rates: rates.into(),
                source: ReadSource::Run,
                page: 5,
            },
            Slots::growing(2, 1024),
            CONVS,
        ));
        let events = run_and_collect(p, rx).await;
        let reads: Vec<&ReadSample> = events
            .iter()
            .filter_map(|e| match e {
                Event::Read(r) => Some(r),
                Event::Done(_) => None,
                other => panic!("everything starts: {other:?}"),
            })
            .collect();
        for (kind, rate) in rates {
            let mut dues: Vec<Duration> = reads
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.due)
                .collect();
            dues.sort();
            // Every read of the plan, each due at i / rate.
            let want: Vec<Duration> = (0..(3.0 * rate) as u64)
                .map(|i| Duration::from_secs_f64(i as f64 / rate))
                .collect();
            assert_eq!(dues, want, "{kind}");
        }
        for r in &reads {
            assert!(r.sent - r.due < SLACK, "started on time: {r:?}");
            assert_eq!((r.status, r.error.as_deref()), (Some(200), None), "{r:?}");
            let latency = r.answered - r.due;
            if r.due >= Duration::from_secs(1) && r.due < Duration::from_secs(2) {
                // Into the stall: answered when it ends, at 2 s.
                assert!(near(r.answered, Duration::from_secs(2)), "{r:?}");
            } else {
                assert!(latency < SLACK, "{r:?}");
            }
        }
        let late = reads
            .iter()
            .find(|r| r.kind == ReadKind::Conversation && r.due == Duration::from_millis(1500))
            .unwrap();
        assert!(
            near(late.answered - late.due, Duration::from_millis(500)),
            "{late:?}"
        );
        // The run's own conversations; late in the run their pages are past page 0.
        assert!(reads
            .iter()
            .filter(|r| r.kind == ReadKind::Conversation)
            .all(|r| r.path.starts_with("/bench-t1-u")));
        // 10 conversations of 10 messages a second each, pages of 5: a read due at t
        // asks for a page below 10 t messages, and later reads find later pages.
        let skip =
            |r: &ReadSample| -> u64 { r.path.split("skip=").nth(1).unwrap().parse().unwrap() };
        for r in reads.iter().filter(|r| r.kind == ReadKind::Conversation) {
            assert!(skip(r) as f64 <= 10.0 * r.due.as_secs_f64() + 1.0, "{r:?}");
        }
        assert!(reads
            .iter()
            .any(|r| r.kind == ReadKind::Conversation && skip(r) >= 20));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_cannot_start_are_counted_not_dropped() {
        // The server stalls from 2 s on for good; the client gives up after 1.5 s, which
        // is past the end of the schedule (3 s + grace).
        let (tx, rx) = mpsc::channel(1024);
        let events = run_and_collect(phase((2, 3600), Duration::from_millis(1500), tx), rx).await;
        let (mut ok, mut unknown, mut not_started) = (0, 0, 0);
        for e in &events {
            match e {
                Event::Done(s) if s.outcome == Outcome::Ok => ok += 1,
                Event::Done(s) => {
                    assert_eq!(s.error.as_deref(), Some("timeout"));
                    unknown += 1;
                }
                Event::NotStarted {
                    count, first_due, ..
                } => {
                    assert!(*first_due > Duration::from_secs(2));
                    not_started += count;
                }
                other => panic!("no reads in this phase: {other:?}"),
            }
        }
        // About 200 answered before the stall, one timed-out request per conversation,
        // and the rest of the plan counted as not started: nothing silently missing.
        assert_eq!(unknown, u64::from(CONVS));
        assert!((190..=200).contains(&ok), "ok {ok}");
        assert_eq!(ok + unknown + not_started, 300);

        // The collector turns the same events into the summary numbers and the ledger.
        let dir =
            std::env::temp_dir().join(format!("wiber-sched-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = LedgerWriter::create(&dir.join("ledger.jsonl")).unwrap();
        let (tx, rx) = mpsc::channel(1024);
        for e in events {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        let info = PhaseInfo {
            run: "t1".into(),
            start_ms: 1_000_000,
            start: Instant::now(),
            warmup: Duration::ZERO,
            window: WINDOW,
            step: 0,
            target_rate: Some(RATE),
            read_rates: Default::default(),
        };
        let (st, _) = collector::collect(info, rx, ledger, collector::Progress::new(false, None))
            .await
            .unwrap();
        assert_eq!(
            (st.ok, st.unknown, st.not_started),
            (ok, unknown, not_started)
        );
        assert_eq!(st.errors["timeout"], 10);
        assert_eq!(st.errors["not_started"], not_started);
        // Ack latency is of the ok answers; the timed-out ones are error latency.
        assert_eq!((st.ack.len(), st.error.len()), (ok, unknown));
        assert_eq!(st.service.len(), ok);
        assert_eq!(st.start_delay.len(), ok + unknown);
        let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
        assert_eq!(ledger.lines().count() as u64, ok + unknown);
        let first: wiber_model::ledger::LedgerEntry =
            serde_json::from_str(ledger.lines().next().unwrap()).unwrap();
        assert_eq!(first.due, 1_000_000);
        assert_eq!(
            (first.outcome, first.acked_timestamp),
            (Outcome::Ok, Some(ACKED_AT))
        );
        assert!(ledger.contains("\"ackedTimestamp\":1700000000000"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
