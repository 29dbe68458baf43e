//! The collector: the single owner of a phase's statistics, the ledger file and the
//! progress bar. Workers send it one [`Event`] per request over a bounded channel; it
//! never sends anything back, so a slow terminal cannot slow the generator down beyond
//! the channel's capacity.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wiber_model::ledger::{LedgerEntry, Outcome};

use super::hist::LatencyHist;
use super::worker::{Event, Sample};
use super::ProgressContext;

/// How often the progress line and the ledger file are refreshed.
const TICK: Duration = Duration::from_millis(250);
/// Without a terminal (CI logs, a pipe) the bar is invisible; a plain line this often
/// says how the run goes without flooding the log.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes: a bar on a terminal, a plain line every [`PLAIN_EVERY`] on
/// anything else, or nowhere (`--json`, tests).
pub struct Progress {
    bar: ProgressBar,
    plain: Option<Instant>,
    context: Option<ProgressContext>,
}

impl Progress {
    pub fn new(show: bool, context: Option<ProgressContext>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            bar: if show && terminal {
                ProgressBar::new(0)
            } else {
                ProgressBar::hidden()
            },
            // The first plain line comes one period in: a line at 0 s says nothing.
            plain: (show && !terminal).then(Instant::now),
            context,
        }
    }

    fn message(&mut self, msg: String, elapsed: Duration) {
        let msg = match &self.context {
            Some(c) => format!("{} · {msg}", (c.0)()),
            None => msg,
        };
        if let Some(last) = &mut self.plain {
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                eprintln!("  [{:>3}s] {msg}", elapsed.as_secs());
            }
        }
        self.bar.set_message(msg);
    }
}

/// Appends ledger lines as the run goes (buffered; flushed every tick and at the end,
/// so a crashed run still leaves everything up to the last quarter second).
pub struct LedgerWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl LedgerWriter {
    pub fn create(path: &Path) -> anyhow::Result<LedgerWriter> {
        let f = File::create(path)
            .with_context(|| format!("cannot create the ledger {}", path.display()))?;
        Ok(LedgerWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, f),
        })
    }

    pub fn append(&mut self, e: &LedgerEntry) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, e).expect("ledger entries serialise");
        self.out
            .write_all(b"\n")
            .with_context(|| format!("cannot write the ledger {}", self.path.display()))
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write the ledger {}", self.path.display()))
    }
}

/// Statistics of one second of the measured window.
#[derive(Clone, Default)]
pub struct SecondStats {
    /// Answered in this second (by answer time).
    pub answered: u64,
    pub ok: u64,
    pub errors: u64,
    /// Ack latency of the `ok` requests *due* in this second.
    pub ack: LatencyHist,
}

/// A measured request that may be stored, kept for the end-to-end join with MongoDB.
#[derive(Debug, Clone)]
pub struct Stored {
    pub message_id: String,
    pub due_ms: i64,
    /// Second of the measured window it was due in.
    pub second: u32,
    pub outcome: Outcome,
}

/// Everything a phase measured (the measured window only; warm-up is in the ledger).
pub struct PhaseStats {
    /// Due → answer of the `ok` answers: only an acknowledgement counts as one.
    pub ack: LatencyHist,
    /// Due → answer (or giving up) of the `failed` and `unknown` outcomes.
    pub error: LatencyHist,
    /// Send → answer of the `ok` answers only, like `ack`: fast refusals must not flatter
    /// a service-latency SLO, and ack and service should describe the same requests.
    pub service: LatencyHist,
    /// Due → first send of every started request, whatever its outcome: it measures the
    /// generator, not the server.
    pub start_delay: LatencyHist,
    pub seconds: Vec<SecondStats>,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub not_started: u64,
    pub retried: u64,
    pub errors: BTreeMap<String, u64>,
    /// Length of the measured window (for the achieved rate).
    pub window: Duration,
    /// ok and unknown requests of the window, for end-to-end latency.
    pub may_be_stored: Vec<Stored>,
    /// Latest answer offset seen (from the phase start).
    pub last_answer: Duration,
}

impl PhaseStats {
    fn new(window: Duration) -> PhaseStats {
        let secs = window.as_secs_f64().ceil().max(1.0) as usize;
        PhaseStats {
            ack: LatencyHist::new(),
            error: LatencyHist::new(),
            service: LatencyHist::new(),
            start_delay: LatencyHist::new(),
            seconds: vec![SecondStats::default(); secs],
            sent: 0,
            ok: 0,
            failed: 0,
            unknown: 0,
            not_started: 0,
            retried: 0,
            errors: BTreeMap::new(),
            window,
            may_be_stored: Vec::new(),
            last_answer: Duration::ZERO,
        }
    }

    /// Goodput: `ok` answers of the window per second of the window.
    pub fn achieved_rate(&self) -> f64 {
        self.per_second(self.ok)
    }

    /// Requests of the window that completed with any outcome, per second of the window.
    pub fn answered_rate(&self) -> f64 {
        self.per_second(self.ok + self.failed + self.unknown)
    }

    fn per_second(&self, n: u64) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        n as f64 / secs
    }
}

/// Identifies the phase for ledger lines and wall-clock times.
pub struct PhaseInfo {
    pub run: String,
    /// Wall clock (ms since epoch) of the phase start (due time of request 0).
    pub start_ms: i64,
    pub start: Instant,
    pub warmup: Duration,
    pub window: Duration,
    pub step: u32,
    /// For the progress line.
    pub target_rate: Option<f64>,
}

/// Receives events until every worker is done, then returns the statistics and the
/// ledger writer (so the next `--find-max` step appends to the same file).
pub async fn collect(
    info: PhaseInfo,
    mut rx: mpsc::Receiver<Event>,
    mut ledger: LedgerWriter,
    mut progress: Progress,
) -> anyhow::Result<(PhaseStats, LedgerWriter)> {
    let mut st = PhaseStats::new(info.window);
    let total = info.warmup + info.window;
    progress.bar.set_length(total.as_millis() as u64);
    progress.bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>4} / {len_s} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => record(&info, &mut st, &mut ledger, ev)?,
                None => break,
            },
            _ = tick.tick() => {
                ledger.flush()?;
                draw(&info, &st, &mut progress, total);
            }
        }
    }
    ledger.flush()?;
    progress.bar.finish_and_clear();
    Ok((st, ledger))
}

fn record(
    info: &PhaseInfo,
    st: &mut PhaseStats,
    ledger: &mut LedgerWriter,
    ev: Event,
) -> anyhow::Result<()> {
    let s = match ev {
        Event::Done(s) => s,
        Event::NotStarted {
            count, first_due, ..
        } => {
            // Requests due in the warm-up that never started are not counted: the
            // measured window is what the summary speaks for.
            if first_due >= info.warmup {
                st.not_started += count;
                *st.errors.entry("not_started".into()).or_default() += count;
            }
            return Ok(());
        }
    };
    let warmup = s.due < info.warmup;
    ledger.append(&ledger_entry(info, &s, warmup))?;
    st.last_answer = st.last_answer.max(s.answered);
    if warmup {
        return Ok(());
    }
    st.sent += 1;
    st.retried += u64::from(s.attempts.saturating_sub(1));
    match s.outcome {
        Outcome::Ok => st.ok += 1,
        Outcome::Failed => st.failed += 1,
        Outcome::Unknown => st.unknown += 1,
    }
    if let Some(kind) = &s.error {
        *st.errors.entry(kind.clone()).or_default() += 1;
    }
    let latency = s.answered.saturating_sub(s.due);
    let last = st.seconds.len() - 1;
    let due_sec = ((s.due - info.warmup).as_secs() as usize).min(last);
    if s.outcome == Outcome::Ok {
        st.ack.record(latency);
        st.service.record(s.answered.saturating_sub(s.sent));
        st.seconds[due_sec].ack.record(latency);
    } else {
        st.error.record(latency);
    }
    st.start_delay.record(s.sent.saturating_sub(s.due));
    let ans_sec = (s.answered.saturating_sub(info.warmup).as_secs() as usize).min(last);
    let sec = &mut st.seconds[ans_sec];
    sec.answered += 1;
    if s.outcome == Outcome::Ok {
        sec.ok += 1;
    } else {
        sec.errors += 1;
    }
    if s.outcome != Outcome::Failed {
        st.may_be_stored.push(Stored {
            message_id: s.message_id,
            due_ms: info.start_ms + s.due.as_millis() as i64,
            second: due_sec as u32,
            outcome: s.outcome,
        });
    }
    Ok(())
}

fn ledger_entry(info: &PhaseInfo, s: &Sample, warmup: bool) -> LedgerEntry {
    let ms = |d: Duration| info.start_ms + d.as_millis() as i64;
    LedgerEntry {
        message_id: s.message_id.clone(),
        run: info.run.clone(),
        conversation: s.conversation,
        seq: s.seq,
        due: ms(s.due),
        sent: Some(ms(s.sent)),
        answered: ms(s.answered),
        outcome: s.outcome,
        status: s.status,
        error: s.error.clone(),
        acked_timestamp: s.acked_timestamp,
        attempts: s.attempts,
        size: s.size,
        content_hash: s.content_hash.clone(),
        warmup,
        step: info.step,
    }
}

fn draw(info: &PhaseInfo, st: &PhaseStats, progress: &mut Progress, total: Duration) {
    let elapsed = Instant::now().saturating_duration_since(info.start);
    progress
        .bar
        .set_position(elapsed.min(total).as_millis() as u64);
    let in_window = elapsed.saturating_sub(info.warmup).as_secs_f64();
    let rate = |n: u64| {
        if in_window > 0.0 {
            n as f64 / in_window
        } else {
            0.0
        }
    };
    // Goodput first (ok answers only), then everything answered.
    let (good, answered) = (rate(st.ok), rate(st.ok + st.failed + st.unknown));
    let mut msg = if elapsed < info.warmup {
        "warming up".to_string()
    } else {
        match info.target_rate {
            Some(t) => format!("goodput {good:.0}/{t:.0} ok/s, answered {answered:.0}/s"),
            None => format!("goodput {good:.0} ok/s, answered {answered:.0}/s"),
        }
    };
    if !st.ack.is_empty() {
        msg.push_str(&format!("  ack p99 {:.1} ms", st.ack.quantile_ms(0.99)));
    }
    msg.push_str(&format!("  ok {}", st.ok));
    // Failed (a definite error) and unknown (no answer: maybe stored) so far, when any.
    if st.failed > 0 {
        msg.push_str(&format!(" failed {}", st.failed));
    }
    if st.unknown > 0 {
        msg.push_str(&format!(" unknown {}", st.unknown));
    }
    if !st.errors.is_empty() {
        let errs: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        msg.push_str(&format!("  errors: {}", errs.join(", ")));
    }
    progress.message(msg, elapsed);
}
