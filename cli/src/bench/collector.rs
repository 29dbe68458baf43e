//! The collector: the single owner of a phase's statistics, the ledger file and the
//! progress bar. Workers send it one [`Event`] per request over a bounded channel; it
//! never sends anything back, so a slow terminal cannot slow the generator down beyond
//! the channel's capacity. It takes events in batches ([`BATCH`]) and writes ledger lines
//! from borrowed fields: at tens of thousands of requests a second its cost per request
//! is what is left of one core for everything else.

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
use wiber_model::ledger::Outcome;

use wiber_model::report::{ReadKind, ReadSummary};

use super::hist::{LatencyHist, SecondLatencies};
use super::reads::ReadEntry;
use super::worker::{Event, ReadSample, Sample};
use super::ProgressContext;

/// Most events taken from the channel per wake-up, so a tick still comes through
/// between batches.
const BATCH: usize = 512;
/// After catching up, the collector lets events gather this long before it takes them.
/// Waiting on the channel instead would wake it for nearly every request, and each wake-up
/// puts it in front of the request path on a worker thread (tokio runs a task woken by
/// another next, on the same thread): at tens of thousands of requests a second that cost
/// the closed loop a third of its rate. 2 ms of events is far below the channel's room.
const GATHER: Duration = Duration::from_millis(2);
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
/// so a crashed run still leaves everything up to the last quarter second), and the
/// reads' lines beside them when the run reads ([`LedgerWriter::log_reads`]).
pub struct LedgerWriter {
    path: PathBuf,
    out: BufWriter<File>,
    reads: Option<(PathBuf, BufWriter<File>)>,
}

impl LedgerWriter {
    pub fn create(path: &Path) -> anyhow::Result<LedgerWriter> {
        let f = File::create(path)
            .with_context(|| format!("cannot create the ledger {}", path.display()))?;
        Ok(LedgerWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, f),
            reads: None,
        })
    }

    /// Writes a line per read to `path` (`reads.jsonl`) from now on.
    pub fn log_reads(&mut self, path: &Path) -> anyhow::Result<()> {
        let f = File::create(path)
            .with_context(|| format!("cannot create the reads log {}", path.display()))?;
        self.reads = Some((path.to_path_buf(), BufWriter::with_capacity(1 << 18, f)));
        Ok(())
    }

    fn append_read(&mut self, e: &ReadEntry) -> anyhow::Result<()> {
        let Some((path, out)) = &mut self.reads else {
            return Ok(());
        };
        serde_json::to_writer(&mut *out, e).expect("read lines serialise");
        out.write_all(b"\n")
            .with_context(|| format!("cannot write the reads log {}", path.display()))
    }

    /// Appends a line that reads back as the [`wiber_model::ledger::LedgerEntry`] of `line`, without owning
    /// copies of its strings.
    fn append(&mut self, line: &LedgerLine<'_>) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, line).expect("ledger lines serialise");
        self.out
            .write_all(b"\n")
            .with_context(|| format!("cannot write the ledger {}", self.path.display()))
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Some((path, out)) = &mut self.reads {
            out.flush()
                .with_context(|| format!("cannot write the reads log {}", path.display()))?;
        }
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
    pub ack: SecondLatencies,
    /// Reads answered in this second (by answer time): ok, and not.
    pub reads_ok: u64,
    pub reads_errors: u64,
}

/// What one kind of read saw in the measured window.
#[derive(Clone)]
pub struct ReadStats {
    pub target_rate: f64,
    pub sent: u64,
    pub ok: u64,
    /// Not ok: a non-2xx answer or none.
    pub errors: u64,
    pub not_started: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Due → answer of the ok reads.
    pub latency: LatencyHist,
    /// Due → answer (or giving up) of the others.
    pub error: LatencyHist,
    /// Due → send of every started read: whether the generator kept the reads' schedule.
    pub start_delay: LatencyHist,
}

impl ReadStats {
    fn new(target_rate: f64) -> ReadStats {
        ReadStats {
            target_rate,
            sent: 0,
            ok: 0,
            errors: 0,
            not_started: 0,
            errors_by_kind: BTreeMap::new(),
            latency: LatencyHist::new(),
            error: LatencyHist::new(),
            start_delay: LatencyHist::new(),
        }
    }

    /// The report's figures of this kind over a window of `window`.
    pub fn summary(&self, window: Duration) -> ReadSummary {
        let per_s = |n: u64| {
            let s = window.as_secs_f64();
            if s > 0.0 {
                (n as f64 / s * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        ReadSummary {
            target_rate: self.target_rate,
            sent: self.sent,
            ok: self.ok,
            errors: self.errors,
            not_started: self.not_started,
            errors_by_kind: self.errors_by_kind.clone(),
            achieved_rate: per_s(self.ok),
            answered_rate: per_s(self.ok + self.errors),
            latency_ms: self.latency.percentiles(),
            error_ms: self.error.percentiles(),
        }
    }
}

/// A measured request that may be stored, kept for the end-to-end join with MongoDB.
/// 32 bytes (no id string: (conversation, seq) names it), since an hour's run keeps one
/// per request until its end.
#[derive(Debug, Clone)]
pub struct Stored {
    pub conversation: u32,
    pub seq: u64,
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
    /// Each kind of read of the phase (every kind read, even one that never answered).
    pub reads: BTreeMap<ReadKind, ReadStats>,
}

impl PhaseStats {
    fn new(window: Duration, read_rates: &BTreeMap<ReadKind, f64>) -> PhaseStats {
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
            reads: read_rates
                .iter()
                .map(|(k, r)| (*k, ReadStats::new(*r)))
                .collect(),
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
    /// Reads per second of each kind read (empty: none).
    pub read_rates: BTreeMap<ReadKind, f64>,
}

/// Receives events until every worker is done, then returns the statistics and the
/// ledger writer (so the next `--find-max` step appends to the same file).
pub async fn collect(
    info: PhaseInfo,
    mut rx: mpsc::Receiver<Event>,
    mut ledger: LedgerWriter,
    mut progress: Progress,
) -> anyhow::Result<(PhaseStats, LedgerWriter)> {
    let mut st = PhaseStats::new(info.window, &info.read_rates);
    let total = info.warmup + info.window;
    progress.bar.set_length(total.as_millis() as u64);
    progress.bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>4} / {len_s} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for ev in batch.drain(..) {
                    record(&info, &mut st, &mut ledger, ev)?;
                }
                if n < BATCH {
                    tokio::time::sleep(GATHER).await;
                }
            }
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
        Event::Read(r) => return record_read(info, st, ledger, r),
        Event::ReadNotStarted {
            kind,
            count,
            first_due,
        } => {
            if first_due >= info.warmup {
                if let Some(k) = st.reads.get_mut(&kind) {
                    k.not_started += count;
                }
            }
            return Ok(());
        }
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
    ledger.append(&LedgerLine::of(info, &s, warmup, &mut [0; 16]))?;
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
            conversation: s.conversation,
            seq: s.seq,
            due_ms: info.start_ms + s.due.as_millis() as i64,
            second: due_sec as u32,
            outcome: s.outcome,
        });
    }
    Ok(())
}

fn record_read(
    info: &PhaseInfo,
    st: &mut PhaseStats,
    ledger: &mut LedgerWriter,
    r: ReadSample,
) -> anyhow::Result<()> {
    let warmup = r.due < info.warmup;
    let ms = |d: Duration| info.start_ms + d.as_millis() as i64;
    ledger.append_read(&ReadEntry {
        kind: r.kind,
        due: ms(r.due),
        sent: ms(r.sent),
        answered: ms(r.answered),
        status: r.status,
        // The path of a failed read only: what is needed to look into it.
        path: r.error.is_some().then(|| r.path.clone()),
        error: r.error.clone(),
        warmup,
    })?;
    st.last_answer = st.last_answer.max(r.answered);
    if warmup {
        return Ok(());
    }
    let Some(k) = st.reads.get_mut(&r.kind) else {
        return Ok(());
    };
    k.sent += 1;
    let latency = r.answered.saturating_sub(r.due);
    k.start_delay.record(r.sent.saturating_sub(r.due));
    let last = st.seconds.len() - 1;
    let sec =
        &mut st.seconds[(r.answered.saturating_sub(info.warmup).as_secs() as usize).min(last)];
    match r.error {
        None => {
            k.ok += 1;
            k.latency.record(latency);
            sec.reads_ok += 1;
        }
        Some(e) => {
            k.errors += 1;
            k.error.record(latency);
            *k.errors_by_kind.entry(e).or_default() += 1;
            sec.reads_errors += 1;
        }
    }
    Ok(())
}

/// A ledger line borrowing from the [`Sample`]: the same fields, names, order and
/// omissions as [`wiber_model::ledger::LedgerEntry`] (a test holds the two to the same bytes).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LedgerLine<'a> {
    message_id: &'a str,
    run: &'a str,
    conversation: u32,
    seq: u64,
    due: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<i64>,
    answered: i64,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    attempts: u32,
    size: usize,
    content_hash: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    warmup: bool,
    #[serde(skip_serializing_if = "is_zero")]
    step: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl<'a> LedgerLine<'a> {
    /// `hex` holds the content hash's 16 hex digits.
    fn of(info: &'a PhaseInfo, s: &'a Sample, warmup: bool, hex: &'a mut [u8; 16]) -> Self {
        let ms = |d: Duration| info.start_ms + d.as_millis() as i64;
        LedgerLine {
            message_id: &s.message_id,
            run: &info.run,
            conversation: s.conversation,
            seq: s.seq,
            due: ms(s.due),
            sent: Some(ms(s.sent)),
            answered: ms(s.answered),
            outcome: s.outcome,
            status: s.status,
            error: s.error.as_deref(),
            acked_timestamp: s.acked_timestamp,
            partition: s.position.map(|p| p.0),
            offset: s.position.map(|p| p.1),
            attempts: s.attempts,
            size: s.size,
            content_hash: hex16(s.content_hash, hex),
            warmup,
            step: info.step,
        }
    }
}

/// `{v:016x}` into `buf`, as [`wiber_model::ledger::content_hash`] writes it.
fn hex16(v: u64, buf: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).expect("hex digits are ASCII")
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
    if !st.reads.is_empty() {
        let ok: u64 = st.reads.values().map(|k| k.ok).sum();
        msg.push_str(&format!("  reads ok {ok}"));
        // Read errors by kind of read, as soon as there is one.
        let bad: Vec<String> = st
            .reads
            .iter()
            .filter(|(_, k)| k.errors > 0)
            .map(|(kind, k)| format!("{kind} {}", k.errors))
            .collect();
        if !bad.is_empty() {
            msg.push_str(&format!(" READ ERRORS {}", bad.join(", ")));
        }
    }
    progress.message(msg, elapsed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiber_model::ledger::LedgerEntry;

    fn sample(error: Option<&str>, acked: Option<i64>) -> Sample {
        let content = wiber_model::ledger::content("r1", 3, 7, 64);
        Sample {
            conversation: 3,
            seq: 7,
            message_id: wiber_model::ledger::message_id("r1", 3, 7),
            due: Duration::from_millis(1500),
            sent: Duration::from_millis(1502),
            answered: Duration::from_millis(1530),
            outcome: Outcome::Ok,
            status: Some(201),
            error: error.map(str::to_string),
            acked_timestamp: acked,
            position: acked.map(|_| (4, 1234)),
            attempts: 2,
            size: content.len(),
            content_hash: wiber_model::ledger::fnv1a(content.as_bytes()),
        }
    }

    #[test]
    fn a_borrowed_ledger_line_is_byte_for_byte_a_ledger_entry() {
        for (s, warmup, step) in [
            (sample(None, Some(1_700_000_000_000)), false, 0),
            (sample(Some("http_503"), None), true, 4),
        ] {
            let info = PhaseInfo {
                run: "r1".into(),
                start_ms: 1_000_000,
                start: Instant::now(),
                warmup: Duration::ZERO,
                window: Duration::from_secs(1),
                step,
                target_rate: None,
                read_rates: BTreeMap::new(),
            };
            let ms = |d: Duration| info.start_ms + d.as_millis() as i64;
            let content = wiber_model::ledger::content("r1", 3, 7, 64);
            let owned = LedgerEntry {
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
                partition: s.position.map(|p| p.0),
                offset: s.position.map(|p| p.1),
                attempts: s.attempts,
                size: s.size,
                content_hash: wiber_model::ledger::content_hash(&content),
                warmup,
                step,
            };
            let borrowed =
                serde_json::to_string(&LedgerLine::of(&info, &s, warmup, &mut [0; 16])).unwrap();
            assert_eq!(borrowed, serde_json::to_string(&owned).unwrap());
        }
        assert_eq!(hex16(0xab, &mut [0; 16]), "00000000000000ab");
    }
}
