//! The one worker loop: a conversation sending its requests in sequence, each at its due
//! time (or as soon as the previous one was answered, in closed loop). There is one task
//! per conversation, which is what keeps a conversation's sends sequential; a semaphore
//! of `--connections` permits caps the requests in flight across all of them.
//!
//! Workers only measure; they send a [`Event`] per request to the collector and never
//! touch statistics or the terminal themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use wiber_model::ledger::{self, Outcome};
use wiber_model::NewMessage;

use super::schedule::{Pacing, Schedule};
use super::transport::{Answer, Transport};

/// How long after the end of the schedule a late request may still start. Without it a
/// healthy run would count its last few requests, a fraction of a millisecond late, as
/// "not started".
pub const START_GRACE: Duration = Duration::from_millis(250);

/// Pause between retries of an `unknown` outcome (times the attempt number, capped).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    pub attempts: u32,
    pub size: usize,
    pub content_hash: String,
}

/// What workers report to the collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Done(Sample),
    /// Requests of a conversation that were due but could not start in time; `first_due`
    /// is the due offset of the first of them.
    NotStarted {
        conversation: u32,
        count: u64,
        first_due: Duration,
    },
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
    pub connections: Arc<Semaphore>,
    pub events: mpsc::Sender<Event>,
}

impl<T: Transport> Phase<T> {
    /// Spawns one task per conversation and waits for all of them. The collector sees the
    /// channel close when the last worker is done.
    pub async fn run(self) {
        let me = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..me.schedule.conversations {
            tasks.spawn(Arc::clone(&me).conversation(c));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn conversation(self: Arc<Self>, local: u32) {
        let conv = self.conversation_base + local;
        let (from, to) = ledger::users(&self.run, conv);
        let end = self.schedule.end();
        // Past this instant a due request is given up as "not started" (open loop) or no
        // new request begins (closed loop).
        let start_deadline = match self.schedule.pacing {
            Pacing::Open { .. } => self.start + end + START_GRACE,
            Pacing::Closed => self.start + end,
        };
        for seq in 0.. {
            let due = match self.schedule.pacing {
                Pacing::Open { .. } => match self.schedule.due(local, seq) {
                    Some(d) => d,
                    None => break,
                },
                Pacing::Closed => Instant::now().saturating_duration_since(self.start),
            };
            if due >= end {
                break;
            }
            tokio::time::sleep_until(self.start + due).await;
            let permit =
                match tokio::time::timeout_at(start_deadline, self.connections.acquire()).await {
                    Ok(Ok(p)) if Instant::now() <= start_deadline => p,
                    _ => {
                        self.give_up(conv, local, seq, due).await;
                        break;
                    }
                };
            let sample = self.request(conv, seq, due, &from, &to, permit).await;
            if self.events.send(Event::Done(sample)).await.is_err() {
                break; // the collector is gone: the run was abandoned
            }
        }
    }

    /// Sends request `seq` (and its retries), holding a connection permit per attempt.
    async fn request(
        &self,
        conv: u32,
        seq: u64,
        due: Duration,
        from: &str,
        to: &str,
        permit: tokio::sync::SemaphorePermit<'_>,
    ) -> Sample {
        let message_id = ledger::message_id(&self.run, conv, seq);
        let content = ledger::content(&self.run, conv, seq, self.size);
        let content_hash = ledger::content_hash(&content);
        let size = content.len();
        let body = serde_json::to_vec(&NewMessage {
            from_user: from.to_string(),
            to_user: to.to_string(),
            content,
            message_id: Some(message_id.clone()),
        })
        .expect("a message serialises");
        let sent = Instant::now();
        let mut permit = Some(permit);
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            let answer = self.transport.post(body.clone()).await;
            let outcome = Outcome::from_status(answer.status);
            if outcome != Outcome::Unknown || attempts > self.retries {
                break answer;
            }
            // Same messageId again: the API makes the retry idempotent. Let others use
            // the connection while we back off.
            drop(permit.take());
            tokio::time::sleep((RETRY_BACKOFF * attempts).min(RETRY_BACKOFF_MAX)).await;
            permit = match self.connections.acquire().await {
                Ok(p) => Some(p),
                Err(_) => break Answer::error("transport"),
            };
        };
        drop(permit);
        let outcome = Outcome::from_status(answer.status);
        Sample {
            conversation: conv,
            seq,
            message_id,
            due,
            sent: sent.saturating_duration_since(self.start),
            answered: Instant::now().saturating_duration_since(self.start),
            outcome,
            status: answer.status,
            error: answer.error_kind(),
            acked_timestamp: answer.timestamp.filter(|_| outcome == Outcome::Ok),
            attempts,
            size,
            content_hash,
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

    impl Transport for Stalled {
        async fn post(&self, _body: Vec<u8>) -> Answer {
            let now = Instant::now();
            let (from, until) = (self.start + self.stall_from, self.start + self.stall_until);
            let answer_at = if now >= from && now < until {
                until
            } else {
                now
            } + Duration::from_millis(1);
            if answer_at - now > self.timeout {
                tokio::time::sleep(self.timeout).await;
                return Answer::error("timeout");
            }
            tokio::time::sleep_until(answer_at).await;
            Answer::acked(200, ACKED_AT)
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
            connections: Arc::new(Semaphore::new(64)),
            events: tx,
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
