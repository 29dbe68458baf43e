//! `wiberctl bench`: open-loop load with honest latency, a ledger, and a report.
//!
//! Layout (oha's separation: measuring apart from rendering):
//! - [`schedule`]: when each request is due (pure arithmetic).
//! - [`worker`]: the one worker loop, a task per conversation, sends [`worker::Event`]s;
//!   its [`worker::Slots`] bound the requests in flight (a pool that grows in open loop).
//! - [`collector`]: the single owner of histograms, counters, the ledger file and the
//!   progress bar.
//! - [`hist`]: HdrHistogram wrapper (µs in, ms out, `.hgrm` text).
//! - [`transport`]: the seam to the API (hyper's HTTP/1.1 connections behind a trait, so
//!   tests can stall it).
//! - [`reads`]: the reads mixed into the writes (`--reads`): rates, what each reads,
//!   the lines of `reads.jsonl`.
//! - [`slo`]: `--slo` / `--find-max` objectives.
//! - [`print`]: the summary table and `--json` output.
//!
//! This module runs the phases (one, or the `--find-max` steps), joins the result with
//! MongoDB for end-to-end latency, and writes the run directory:
//! `run.json`, `ledger.jsonl`, `report.{json,md,html}`, `ack.hgrm`, `e2e.hgrm`,
//! `events.jsonl` (when faults were recorded during the run), `reads.jsonl` and
//! `reads-<kind>.hgrm` (when the run read).

pub mod collector;
pub mod hist;
pub mod poison;
pub mod print;
pub mod reads;
pub mod resources;
pub mod schedule;
pub mod slo;
pub mod transport;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wiber_model::ledger::Outcome;
use wiber_model::report::{
    self as model, BenchConfigRecord, FindMax, FindMaxStep, ReadSource, ReadsConfig, Report,
    RunInfo, Summary,
};

use crate::runfile::{RunFile, StoreTarget};
use crate::runtime::Locator;
use crate::verify::store;
use collector::{LedgerWriter, PhaseInfo, PhaseStats};
use hist::{LatencyHist, SecondLatencies};
use schedule::{Pacing, Schedule};
use slo::Slo;
use transport::{HttpTransport, Transport};
use worker::{Reads, SlotStats, Slots, Threads};

/// Capacity of the worker → collector channel: seconds of events at high rates, so the
/// collector can pause (a terminal redraw, a ledger flush) without stalling workers.
const EVENT_CHANNEL: usize = 65_536;
/// Lead time between spawning the workers and request 0 being due.
const START_LEAD: Duration = Duration::from_millis(50);
/// The share of the target rate a run must achieve to count as keeping up.
const KEEP_UP: f64 = 0.99;
/// How often CPU and memory are sampled during a run.
const RESOURCE_EVERY: Duration = Duration::from_secs(1);
/// Default `--max-connections`: how far the open loop's in-flight pool may grow. By
/// Little's law N requests in flight carry N / S per second at a service time of S
/// seconds: 1024 carry 5,000/s up to S = 200 ms, ten times the 21 ms our stack answers
/// in under load, so a stall or a slow stack shows as latency rather than as a
/// generator limit. More would mostly buy sockets: each slot is one connection, and
/// 1024 of them is also a common default limit of open files (see [`fd_cap`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A fresh run id: 8 hex digits.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// How the run is driven.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Constant arrival rate (requests per second).
    Open { rate: f64 },
    /// Closed loop: as fast as answers come back.
    Max,
    /// Step the rate up from `start` by `factor` until the SLO fails or `max_rate`.
    FindMax {
        start: f64,
        factor: f64,
        max_rate: f64,
        slo: Slo,
    },
}

/// Everything `bench` needs; built by `commands::bench` from the flags.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub api_url: String,
    pub mode: Mode,
    /// Measured window (per step for `--find-max`).
    pub duration: Duration,
    pub warmup: Duration,
    pub conversations: u32,
    pub size: usize,
    /// In-flight slots (keep-alive connections) at the start; in closed loop, all of them.
    pub connections: usize,
    /// Open loop: the most slots the pool may grow to (never below `connections`).
    pub max_connections: usize,
    pub retries: u32,
    pub timeout: Duration,
    pub name: String,
    pub reports_dir: PathBuf,
    pub target: StoreTarget,
    /// Measure end-to-end latency (drain, then read `storedAt` from MongoDB).
    pub e2e: bool,
    pub drain_timeout: Duration,
    /// Fault events written by `chaos` or scenarios during the run.
    pub events_file: Option<PathBuf>,
    /// An SLO the run must meet (exit 1 otherwise); for `--find-max` the step criterion.
    pub slo: Option<Slo>,
    pub progress: bool,
    /// What the caller adds in front of the progress line (a scenario's phase, next
    /// fault and lag); none for a plain `bench`.
    pub progress_context: Option<ProgressContext>,
    /// The stack whose CPU and memory per service to sample during the run (`None`:
    /// not sampled, e.g. a stack wiberctl does not run).
    pub resources: Option<Locator>,
    /// Reads mixed into the writes, each kind at its own rate (`None`: writes only).
    pub reads: Option<ReadsConfig>,
    /// The run's id (embedded in every message id and user name), when the caller must
    /// know it before the run starts (a scenario's poison records); `None`: a fresh one.
    pub run_id: Option<String>,
}

/// A caller's part of the progress line, asked for at every refresh.
#[derive(Clone)]
pub struct ProgressContext(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ProgressContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressContext")
    }
}

/// The result of a bench run.
pub struct BenchResult {
    pub dir: PathBuf,
    pub report: Report,
    /// Whether `--slo` held (or `--find-max` found a rate); true without an SLO.
    pub slo_met: bool,
}

/// One phase to run: a schedule plus what identifies its requests.
struct PhasePlan {
    schedule: Schedule,
    step: u32,
    conversation_base: u32,
    target_rate: Option<f64>,
}

/// What a phase left behind.
struct PhaseRun {
    stats: PhaseStats,
    slots: SlotStats,
    /// The reads' own slots, when the phase read.
    read_slots: Option<SlotStats>,
    target_rate: Option<f64>,
    start_ms: i64,
    measured_from_ms: i64,
    ended_ms: i64,
}

/// Runs `bench` against the API at `opts.api_url`.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchResult> {
    let transport = HttpTransport::new(&opts.api_url, opts.timeout)?;
    // A run against nothing would only fill a ledger with `unknown`s: fail fast instead.
    transport.preflight().await?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_on(opts, Arc::new(transport), Threads::Own(threads)).await
}

/// [`run`] with any transport, its conversations as tasks of the caller's runtime (so a
/// test's paused clock is theirs).
pub async fn run_with<T: Transport>(
    opts: BenchOptions,
    transport: Arc<T>,
) -> anyhow::Result<BenchResult> {
    run_on(opts, transport, Threads::Caller).await
}

async fn run_on<T: Transport>(
    opts: BenchOptions,
    transport: Arc<T>,
    threads: Threads,
) -> anyhow::Result<BenchResult> {
    validate(&opts)?;
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let dir = create_run_dir(&opts.reports_dir, &opts.name)?;
    let run_file = RunFile {
        run: run_id.clone(),
        name: opts.name.clone(),
        started_ms: wiber_model::now_ms(),
        api_url: opts.api_url.clone(),
        conversations: opts.conversations,
        size: opts.size,
        target: opts.target.clone(),
    };
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run_file)?,
    )
    .with_context(|| format!("cannot write {}", dir.join("run.json").display()))?;
    let mut ledger = LedgerWriter::create(&dir.join("ledger.jsonl"))?;
    if opts.reads.is_some() {
        ledger.log_reads(&dir.join("reads.jsonl"))?;
    }

    let schedule = |pacing| Schedule {
        pacing,
        conversations: opts.conversations,
        warmup: opts.warmup,
        window: opts.duration,
    };
    let single = |pacing, target_rate| PhasePlan {
        schedule: schedule(pacing),
        step: 0,
        conversation_base: 0,
        target_rate,
    };
    let sampler = match &opts.resources {
        Some(loc) => Some(
            resources::start(
                loc,
                RESOURCE_EVERY,
                Some(dir.join(resources::INSTANCES_FILE)),
            )
            .await,
        ),
        None => None,
    };
    let (main, find_max) = match &opts.mode {
        Mode::Open { rate } => {
            let plan = single(Pacing::Open { rate: *rate }, Some(*rate));
            (
                run_phase(&opts, &run_id, &transport, plan, ledger, threads)
                    .await?
                    .0,
                None,
            )
        }
        Mode::Max => (
            run_phase(
                &opts,
                &run_id,
                &transport,
                single(Pacing::Closed, None),
                ledger,
                threads,
            )
            .await?
            .0,
            None,
        ),
        Mode::FindMax {
            start,
            factor,
            max_rate,
            slo,
        } => {
            let (best, fm) = find_max(
                &opts,
                &run_id,
                &transport,
                ledger,
                (*start, *factor, *max_rate),
                slo,
                threads,
            )
            .await?;
            (best, Some(fm))
        }
    };
    let target_rate = main.target_rate;
    // The load's window only: the drain for end-to-end latency is not the load.
    let resources = match sampler {
        Some(s) => Some(
            s.finish(RESOURCE_EVERY, main.measured_from_ms, main.ended_ms)
                .await,
        ),
        None => None,
    };

    // End-to-end latency: bounded by the drain timeout; a failure here costs the e2e
    // numbers, not the run.
    let mut warnings = Vec::new();
    let e2e = if opts.e2e {
        match end_to_end(
            &opts.target,
            &run_id,
            opts.conversations,
            &main.stats,
            opts.drain_timeout,
        )
        .await
        {
            Ok(e) => {
                if !e.drained {
                    warnings.push(format!(
                        "the consumer group still had lag {} after {:?}: end-to-end latency covers what was stored by then",
                        e.lag, opts.drain_timeout
                    ));
                }
                Some(e)
            }
            Err(e) => {
                warnings.push(format!("end-to-end latency not measured: {e:#}"));
                None
            }
        }
    } else {
        None
    };

    let events = collect_events(
        &dir,
        opts.events_file.as_deref(),
        run_file.started_ms,
        wiber_model::now_ms(),
    )?;
    let report = build_report(
        &opts,
        &run_id,
        &dir,
        target_rate,
        &main,
        e2e.as_ref(),
        find_max,
        events,
        warnings,
        resources,
    );
    std::fs::write(dir.join("ack.hgrm"), main.stats.ack.hgrm())?;
    for (kind, k) in &main.stats.reads {
        std::fs::write(dir.join(format!("reads-{kind}.hgrm")), k.latency.hgrm())?;
    }
    if let Some(e) = &e2e {
        std::fs::write(dir.join("e2e.hgrm"), e.hist.hgrm())?;
    }
    crate::report::write_all(&dir, &report)?;
    let slo_met = match (&opts.mode, &opts.slo) {
        (Mode::FindMax { .. }, _) => report
            .find_max
            .as_ref()
            .is_some_and(|f| f.best_rate.is_some()),
        // Latency of ok answers only, and the goodput kept up with the target: a run
        // answered by fast 503s does not meet an SLO (the problems are its warnings).
        (mode, Some(slo)) => {
            let target = match mode {
                Mode::Open { rate } => Some(*rate),
                _ => None,
            };
            slo.violations(
                &report.summary.ack_ms,
                &report.summary.service_ms,
                report.summary.e2e_ms.as_ref(),
            )
            .is_empty()
                && keep_up_problems(&main.stats, target).is_empty()
        }
        (_, None) => true,
    };
    Ok(BenchResult {
        dir,
        report,
        slo_met,
    })
}

fn validate(opts: &BenchOptions) -> anyhow::Result<()> {
    let rate_ok = |r: f64| r.is_finite() && r > 0.0;
    match &opts.mode {
        Mode::Open { rate } if !rate_ok(*rate) => {
            bail!("--rate must be a positive number of requests per second, got {rate}")
        }
        Mode::FindMax { start, factor, .. } if !rate_ok(*start) || *factor <= 1.0 => {
            bail!("--find-max needs a positive start --rate and a --step-factor above 1")
        }
        _ => {}
    }
    if let Mode::FindMax { slo, .. } = &opts.mode {
        if slo.needs_e2e() {
            bail!("--find-max judges each step by ack and service latency; drop the e2e objective from --slo {slo}");
        }
    }
    if opts.conversations == 0 || opts.connections == 0 || opts.max_connections == 0 {
        bail!("--conversations, --connections and --max-connections must be at least 1");
    }
    if opts.duration.is_zero() {
        bail!("--duration must be longer than 0, e.g. 60s");
    }
    if let Some(r) = &opts.reads {
        if r.rates.is_empty() {
            bail!(
                "reads are on but no kind has a rate: {}",
                reads::READS_SYNTAX
            );
        }
        for (k, rate) in &r.rates {
            reads::ReadRates::check_rate(*k, *rate).map_err(|e| anyhow::anyhow!("--reads {e}"))?;
        }
        if let ReadSource::Fixture {
            conversations: 0, ..
        } = r.source
        {
            bail!("--read-fixture 0 has no conversation to read: give the number of conversations `wiberctl store fill` wrote");
        }
    }
    if opts.size > wiber_model::MAX_CONTENT_CHARS {
        bail!(
            "--size {} is over the API's content limit of {} characters",
            opts.size,
            wiber_model::MAX_CONTENT_CHARS
        );
    }
    Ok(())
}

/// Descriptors the process needs besides the slots' sockets: the run directory's files,
/// the stack sampler's, the MongoDB and Kafka clients', the terminal.
const FD_RESERVE: u64 = 128;

/// `max` slots within the open-file limit. Raises the soft limit towards the hard one
/// when it is short (as Go's runtime does at start: Rust's does not), then caps the pool
/// below what is left, so a growing pool meets its cap, which the summary names, rather
/// than `EMFILE`, which would read as `connect` errors of the stack.
fn fd_cap(max: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return max;
    }
    let want = max as u64 + FD_RESERVE;
    if lim.rlim_cur < want && lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    max.min(lim.rlim_cur.saturating_sub(FD_RESERVE) as usize)
        .max(1)
}

/// Runs one phase: workers and collector, until every worker is done.
async fn run_phase<T: Transport>(
    opts: &BenchOptions,
    run_id: &str,
    transport: &Arc<T>,
    plan: PhasePlan,
    ledger: LedgerWriter,
    threads: Threads,
) -> anyhow::Result<(PhaseRun, LedgerWriter)> {
    let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
    let start = Instant::now() + START_LEAD;
    let start_ms = wiber_model::now_ms() + START_LEAD.as_millis() as i64;
    let info = PhaseInfo {
        run: run_id.to_string(),
        start_ms,
        start,
        warmup: plan.schedule.warmup,
        window: plan.schedule.window,
        step: plan.step,
        target_rate: plan.target_rate,
        read_rates: opts
            .reads
            .as_ref()
            .map(|r| r.rates.clone())
            .unwrap_or_default(),
    };
    let progress = collector::Progress::new(opts.progress, opts.progress_context.clone());
    // The reads have a pool of their own beside the writes' (open loop, whatever the
    // writes do), growing to the same cap: the open-file limit is shared between them.
    let pools = if opts.reads.is_some() { 2 } else { 1 };
    let cap = (fd_cap(opts.max_connections * pools) / pools).max(1);
    // Closed loop keeps a fixed pool: its concurrency is what `--max` measures.
    let slots = Arc::new(match plan.schedule.pacing {
        Pacing::Open { .. } => Slots::growing(opts.connections, cap),
        Pacing::Closed => Slots::fixed(opts.connections),
    });
    let reads = opts.reads.as_ref().map(|r| {
        Reads::new(
            r.clone(),
            Slots::growing(opts.connections.min(cap), cap),
            plan.schedule.conversations,
        )
    });
    let read_slots = reads.as_ref().map(|r| Arc::clone(&r.slots));
    // The collector owns the ledger for the phase and hands it back.
    let collector = tokio::spawn(collector::collect(info, rx, ledger, progress));
    let phase = worker::Phase {
        transport: Arc::clone(transport),
        schedule: plan.schedule.clone(),
        start,
        run: run_id.to_string(),
        size: opts.size,
        retries: opts.retries,
        conversation_base: plan.conversation_base,
        slots: Arc::clone(&slots),
        events: tx,
        threads,
        reads,
    };
    phase.run().await;
    let (stats, ledger) = collector.await.context("the collector task failed")??;
    let run = PhaseRun {
        slots: slots.stats(),
        read_slots: read_slots.map(|s| s.stats()),
        target_rate: plan.target_rate,
        measured_from_ms: start_ms + plan.schedule.warmup.as_millis() as i64,
        ended_ms: start_ms + stats.last_answer.max(plan.schedule.end()).as_millis() as i64,
        start_ms,
        stats,
    };
    Ok((run, ledger))
}

/// Steps the rate up until a step misses the SLO (or the generator's own limit), then
/// bisects once between the last good and the first bad rate.
async fn find_max<T: Transport>(
    opts: &BenchOptions,
    run_id: &str,
    transport: &Arc<T>,
    mut ledger: LedgerWriter,
    (start, factor, max_rate): (f64, f64, f64),
    slo: &Slo,
    threads: Threads,
) -> anyhow::Result<(PhaseRun, FindMax)> {
    let mut steps: Vec<FindMaxStep> = Vec::new();
    let mut best: Option<(PhaseRun, f64)> = None;
    let mut last: Option<(PhaseRun, f64)> = None;
    let mut rate = start;
    let mut first_bad: Option<f64> = None;
    let mut bisected = false;
    for step in 0.. {
        let plan = PhasePlan {
            schedule: Schedule {
                pacing: Pacing::Open { rate },
                conversations: opts.conversations,
                warmup: opts.warmup,
                window: opts.duration,
            },
            step,
            conversation_base: step * opts.conversations,
            target_rate: Some(rate),
        };
        if opts.progress {
            eprintln!(
                "find-max step {}: {rate:.0} req/s for {:?}",
                step + 1,
                opts.duration
            );
        }
        let (phase, back) = run_phase(opts, run_id, transport, plan, ledger, threads).await?;
        ledger = back;
        let s = &phase.stats;
        // Of the ok answers only: a step answered by fast 503s meets no latency SLO, and
        // its goodput (achieved_rate) misses the keep-up check below.
        let (ack, service) = (s.ack.percentiles(), s.service.percentiles());
        let mut reasons = slo.violations(&ack, &service, None);
        reasons.extend(keep_up_problems(s, Some(rate)));
        let pass = reasons.is_empty();
        if !pass {
            // A step the generator could not offer says nothing about the stack: say so.
            // (No CPU figure here: the stack is sampled over the whole run, not per step.)
            let late = why_late(&LateInputs::of(opts, s, &phase.slots, Some(rate), None));
            reasons.extend(late.warnings.into_iter().filter(|_| late.generator_bound));
        }
        steps.push(FindMaxStep {
            target_rate: rate,
            achieved_rate: round1(s.achieved_rate()),
            answered_rate: round1(s.answered_rate()),
            ok: s.ok,
            failed: s.failed,
            unknown: s.unknown,
            not_started: s.not_started,
            ack_ms: ack,
            pass,
            reasons,
        });
        let good = best.as_ref().map(|b| b.1);
        if pass {
            best = Some((phase, rate));
        } else {
            first_bad = Some(first_bad.map_or(rate, |b: f64| b.min(rate)));
            last = Some((phase, rate));
        }
        // Next rate: geometric steps while passing; one bisection after the first miss.
        let next = match (pass, first_bad, good) {
            (true, None, _) => rate * factor,
            (true, Some(bad), _) if !bisected => (rate + bad) / 2.0,
            (false, _, Some(g)) if !bisected => (g + rate) / 2.0,
            _ => break,
        };
        if first_bad.is_some() {
            bisected = true;
        }
        if next > max_rate || (first_bad.is_some() && (next - rate).abs() < 1.0) {
            break;
        }
        rate = next;
    }
    let best_rate = best.as_ref().map(|b| b.1);
    let main = best.or(last).expect("at least one step ran").0;
    Ok((
        main,
        FindMax {
            slo: slo.text.clone(),
            steps,
            best_rate,
        },
    ))
}

/// Why a phase did not keep up with its target, as sentences (empty: it did).
fn keep_up_problems(s: &PhaseStats, target: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = target {
        let a = s.achieved_rate();
        if a < t * KEEP_UP {
            out.push(format!(
                "goodput {a:.0} ok/s (answered {:.0}/s), below {:.0}% of the target {t:.0} req/s",
                s.answered_rate(),
                KEEP_UP * 100.0
            ));
        }
    }
    if s.failed > 0 || s.unknown > 0 {
        let kinds: Vec<String> = s
            .errors
            .iter()
            .filter(|(k, _)| *k != "not_started")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push(format!(
            "{} failed and {} unknown outcomes ({})",
            s.failed,
            s.unknown,
            kinds.join(", ")
        ));
    }
    if s.not_started > 0 {
        out.push(format!(
            "{} requests due in the window were never started (why: see below)",
            s.not_started
        ));
    }
    out
}

/// What went wrong with the reads, as sentences (empty: nothing): reads that failed
/// (first, and in capitals: a failed read is never to be missed in a summary), reads
/// never started, reads below their rate, reads started late. Warnings, not a verdict:
/// scenario thresholds decide whether reads may fail.
fn read_problems(s: &PhaseStats, slots: Option<&SlotStats>) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, k) in &s.reads {
        if k.errors > 0 {
            let by: Vec<String> = k
                .errors_by_kind
                .iter()
                .map(|(e, n)| format!("{e}: {n}"))
                .collect();
            out.push(format!(
                "READ ERRORS: {} of {} {kind} reads failed ({}); the failed reads are in reads.jsonl with their paths",
                k.errors,
                k.sent,
                by.join(", ")
            ));
        }
    }
    for (kind, k) in &s.reads {
        if k.not_started > 0 {
            let cap = slots.map_or(String::new(), |sl| {
                format!(" (read slots: peak {} of {})", sl.peak, sl.cap)
            });
            out.push(format!(
                "{} {kind} reads due in the window were never started: every read slot was busy until the end{cap}; raise --max-connections or lower the {kind} rate",
                k.not_started
            ));
        }
        let achieved = k.summary(s.window).achieved_rate;
        if achieved < k.target_rate * KEEP_UP {
            out.push(format!(
                "{kind} reads: {achieved:.1} ok/s, below {:.0}% of the target {:.1} reads/s",
                KEEP_UP * 100.0,
                k.target_rate
            ));
        }
    }
    // One sentence for every kind that started late, not one each.
    let late: Vec<String> = s
        .reads
        .iter()
        .filter(|(_, k)| !k.start_delay.is_empty() && k.start_delay.quantile_ms(0.99) > LATE_P99_MS)
        .map(|(kind, k)| format!("{kind} {:.1} ms", k.start_delay.quantile_ms(0.99)))
        .collect();
    if !late.is_empty() {
        let slots = slots.map_or(String::new(), |sl| {
            format!("; read slots peak {} of {}", sl.peak, sl.cap)
        });
        out.push(format!(
            "reads started late (start delay p99: {}{slots}): their latency, measured from the due time, includes the wait",
            late.join(", ")
        ));
    }
    out
}

/// What tells whether requests started late, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LateInputs {
    closed_loop: bool,
    start_delay_p99_ms: f64,
    not_started: u64,
    slots: SlotStats,
    conversations: u32,
    target_rate: Option<f64>,
    /// Mean service time of the ok answers, ms (0 when none).
    service_mean_ms: f64,
    /// wiberctl's own mean CPU over the window, in cores (from the resource sampler).
    generator_cores: Option<f64>,
    cores: usize,
}

impl LateInputs {
    fn of(
        opts: &BenchOptions,
        s: &PhaseStats,
        slots: &SlotStats,
        target_rate: Option<f64>,
        generator_cores: Option<f64>,
    ) -> LateInputs {
        LateInputs {
            closed_loop: opts.mode == Mode::Max,
            start_delay_p99_ms: if s.start_delay.is_empty() {
                0.0
            } else {
                s.start_delay.quantile_ms(0.99)
            },
            not_started: s.not_started,
            slots: *slots,
            conversations: opts.conversations,
            target_rate,
            service_mean_ms: s.service.percentiles().mean,
            generator_cores,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The judgement on late starts: whether the generator was the limit, in plain words.
#[derive(Debug, Default, PartialEq)]
struct LateVerdict {
    generator_bound: bool,
    warnings: Vec<String>,
}

/// Start delay p99 above which requests count as started late (the same bar as
/// [`worker::LATE`]).
const LATE_P99_MS: f64 = 10.0;

/// wiberctl's CPU at which it counts as saturated: near half the machine (one core of
/// our two), because it shares the machine with the stack it measures and its
/// collector runs on one core whatever the machine; never below 0.9 of a core.
fn generator_busy_cores(cores: usize) -> f64 {
    (0.45 * cores as f64).max(0.9)
}

/// Why requests started late, if they did. The causes, each checked on its own:
/// wiberctl's own CPU was saturated, its collector fell behind, every in-flight slot was
/// busy at the cap (the generator-bound cases), or every conversation was still waiting
/// for its previous answer (a limit of the load's shape, not of the generator). In
/// closed loop a full pool is the point of the run, so only the CPU and the collector
/// count there.
fn why_late(i: &LateInputs) -> LateVerdict {
    let late = i.start_delay_p99_ms > LATE_P99_MS || i.not_started > 0;
    if !late {
        return LateVerdict::default();
    }
    let what = match (i.not_started, i.start_delay_p99_ms > LATE_P99_MS) {
        (0, _) => format!(
            "requests started late (start delay p99 {:.1} ms)",
            i.start_delay_p99_ms
        ),
        (n, true) => format!(
            "requests started late (start delay p99 {:.1} ms) and {n} never started",
            i.start_delay_p99_ms
        ),
        (n, false) => format!("{n} requests never started"),
    };
    let service = i.service_mean_ms;
    let mut v = LateVerdict::default();
    if let Some(c) = i
        .generator_cores
        .filter(|c| *c >= generator_busy_cores(i.cores))
    {
        v.generator_bound = true;
        v.warnings.push(format!(
            "generator-bound: {what}; wiberctl itself used {c:.2} of the {} cores on average, so \
             it could not start requests on time: these numbers describe the generator, not the \
             stack (run wiberctl on another machine, or offer less load)",
            i.cores
        ));
    }
    if i.slots.collector_full > 0 {
        v.generator_bound = true;
        v.warnings.push(format!(
            "generator-bound: {what}; wiberctl's collector (statistics and ledger) fell behind and \
             held requests back {} times",
            i.slots.collector_full
        ));
    }
    if i.closed_loop {
        return v;
    }
    let per_s = |n: f64| {
        if service > 0.0 {
            n * 1000.0 / service
        } else {
            0.0
        }
    };
    if i.slots.waited_at_cap > 0 && i.slots.peak >= i.slots.cap {
        v.generator_bound = true;
        let need = match i.target_rate {
            Some(r) if service > 0.0 => format!(
                "; at {r:.0} req/s and {service:.1} ms per answer Little's law needs about {:.0} in flight",
                r * service / 1000.0
            ),
            _ => String::new(),
        };
        v.warnings.push(format!(
            "generator-bound: {what}; all {} in-flight slots (--max-connections) were busy when {} \
             requests were due{need}: raise --max-connections, or find out why answers take {service:.1} ms",
            i.slots.cap, i.slots.waited_at_cap
        ));
    }
    if i.slots.late_for_conversation > 0 && i.slots.late_for_conversation >= i.slots.late_for_slot {
        let carry = per_s(f64::from(i.conversations));
        v.warnings.push(format!(
            "{what}; the {} conversations were all waiting: {} requests fell due before their \
             conversation's previous request was answered, and each conversation sends one at a \
             time, so at {service:.1} ms per answer they carry about {carry:.0} req/s at most: \
             raise --conversations (this is the load's shape, not the generator's limit)",
            i.conversations, i.slots.late_for_conversation
        ));
    }
    if v.warnings.is_empty() {
        v.warnings.push(format!(
            "{what}, and neither the in-flight cap ({} slots, peak {}), wiberctl's CPU nor the \
             conversations explain it: other work on the machine probably delayed the generator \
             (see where the cores went)",
            i.slots.cap, i.slots.peak
        ));
    }
    v
}

/// End-to-end latency of the measured requests: due time → `storedAt`.
struct EndToEnd {
    hist: LatencyHist,
    per_second: Vec<SecondLatencies>,
    missing: u64,
    drained: bool,
    lag: i64,
}

async fn end_to_end(
    target: &StoreTarget,
    run_id: &str,
    conversations: u32,
    s: &PhaseStats,
    drain_timeout: Duration,
) -> anyhow::Result<EndToEnd> {
    let drain = store::drain(target, drain_timeout).await?;
    // By indexed keys (one equality per conversation), so the cost is the run's, not the
    // store's: e2e latency needs only the run's own documents.
    let keys = store::RunKeys {
        run: run_id,
        conversations,
        ledger: None,
    };
    // Only what the join needs is kept of each document.
    let mut stored_at: HashMap<(u32, u64), i64> = HashMap::new();
    store::read_run(target, &keys, false, &mut |d| {
        let d = store::to_stored(d, false);
        let request = d
            .message_id
            .as_deref()
            .and_then(|id| wiber_model::ledger::parse_message_id(run_id, id));
        if let (Some(request), Some(at)) = (request, d.stored_at) {
            stored_at.insert(request, at);
        }
        Ok(())
    })
    .await?;
    let mut e = EndToEnd {
        hist: LatencyHist::new(),
        per_second: vec![SecondLatencies::default(); s.seconds.len()],
        missing: 0,
        drained: drain.drained,
        lag: drain.lag,
    };
    for m in &s.may_be_stored {
        match stored_at.get(&(m.conversation, m.seq)) {
            Some(at) => {
                e.hist.record_ms(at - m.due_ms);
                e.per_second[m.second as usize].record_ms(at - m.due_ms);
            }
            None if m.outcome == Outcome::Ok => e.missing += 1,
            None => {}
        }
    }
    Ok(e)
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    opts: &BenchOptions,
    run_id: &str,
    dir: &Path,
    target_rate: Option<f64>,
    main: &PhaseRun,
    e2e: Option<&EndToEnd>,
    find_max: Option<FindMax>,
    events: Vec<crate::events::Event>,
    mut warnings: Vec<String>,
    resources: Option<model::Resources>,
) -> Report {
    let s = &main.stats;
    let generator_cores = resources.as_ref().and_then(|r| {
        r.services
            .iter()
            .find(|x| x.service == model::GENERATOR)
            .and_then(|x| x.mean_cores)
    });
    let late = why_late(&LateInputs::of(
        opts,
        s,
        &main.slots,
        target_rate,
        generator_cores,
    ));
    let mut first = keep_up_problems(s, target_rate);
    first.extend(late.warnings);
    first.extend(read_problems(s, main.read_slots.as_ref()));
    warnings.splice(0..0, first);
    let delay = s.start_delay.percentiles();
    let summary = Summary {
        target_rate,
        achieved_rate: round1(s.achieved_rate()),
        answered_rate: round1(s.answered_rate()),
        sent: s.sent,
        ok: s.ok,
        failed: s.failed,
        unknown: s.unknown,
        not_started: s.not_started,
        retried: s.retried,
        errors: s.errors.clone(),
        ack_ms: s.ack.percentiles(),
        error_ms: s.error.percentiles(),
        service_ms: s.service.percentiles(),
        start_delay_ms: delay,
        e2e_ms: e2e.map(|e| e.hist.percentiles()),
        e2e_missing: e2e.map_or(0, |e| e.missing),
        warnings,
        peak_in_flight: main.slots.peak as u64,
        in_flight_cap: main.slots.cap as u64,
        generator_bound: late.generator_bound,
        reads: s
            .reads
            .iter()
            .map(|(kind, k)| (*kind, k.summary(s.window)))
            .collect(),
    };
    let timeline = s
        .seconds
        .iter()
        .enumerate()
        .map(|(t, sec)| {
            let q = |h: &SecondLatencies, q: f64| (!h.is_empty()).then(|| h.quantile_ms(q));
            let e2e_sec = e2e.map(|e| &e.per_second[t]);
            model::Second {
                t: t as u32,
                answered: sec.answered,
                ok: sec.ok,
                errors: sec.errors,
                ack_p50: q(&sec.ack, 0.5),
                ack_p99: q(&sec.ack, 0.99),
                e2e_p50: e2e_sec.and_then(|h| q(h, 0.5)),
                e2e_p99: e2e_sec.and_then(|h| q(h, 0.99)),
                reads_ok: sec.reads_ok,
                reads_errors: sec.reads_errors,
            }
        })
        .collect();
    let mode = match opts.mode {
        Mode::Open { .. } => "open",
        Mode::Max => "closed",
        Mode::FindMax { .. } => "find_max",
    };
    Report {
        schema: model::SCHEMA.to_string(),
        run: RunInfo {
            id: run_id.to_string(),
            name: opts.name.clone(),
            started_ms: main.start_ms,
            measured_from_ms: main.measured_from_ms,
            ended_ms: main.ended_ms,
            dir: dir.display().to_string(),
            wiberctl_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        config: BenchConfigRecord {
            mode: mode.to_string(),
            target_rate,
            duration_ms: opts.duration.as_millis() as u64,
            warmup_ms: opts.warmup.as_millis() as u64,
            conversations: opts.conversations,
            size: opts.size,
            connections: opts.connections,
            retries: opts.retries,
            timeout_ms: opts.timeout.as_millis() as u64,
            api_url: opts.api_url.clone(),
            reads: opts.reads.clone(),
        },
        summary,
        timeline,
        distribution: model::Distribution {
            ack: s.ack.curve(),
            e2e: e2e.map(|e| e.hist.curve()).unwrap_or_default(),
            reads: s
                .reads
                .iter()
                .map(|(kind, k)| (*kind, k.latency.curve()))
                .collect(),
        },
        events: events
            .into_iter()
            .map(|e| model::EventMark {
                time_ms: e.time_ms,
                action: e.action,
                target: e.target,
                result: e.result,
            })
            .collect(),
        find_max,
        verify: None,
        resources,
    }
}

/// Fault events of the run: the run directory's own `events.jsonl` (chaos pointed at
/// it) plus those of `events_file` that fall within the run, copied into the directory.
fn collect_events(
    dir: &Path,
    events_file: Option<&Path>,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<crate::events::Event>> {
    let own = dir.join("events.jsonl");
    let mut events = crate::events::read(&own)?;
    if let Some(file) = events_file {
        let log = crate::events::EventLog::new(&own);
        for e in crate::events::read(file)? {
            if (from_ms..=to_ms).contains(&e.time_ms) && !events.contains(&e) {
                log.append(&e)?;
                events.push(e);
            }
        }
    }
    events.sort_by_key(|e| e.time_ms);
    Ok(events)
}

/// `reports/<UTC time>-<name>/`, made unique if two runs start in the same second.
fn create_run_dir(reports: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::create_dir_all(reports).with_context(|| {
        format!(
            "cannot create the reports directory {} (set --reports-dir)",
            reports.display()
        )
    })?;
    for n in 1.. {
        let dir = if n == 1 {
            reports.join(format!("{stamp}-{safe}"))
        } else {
            reports.join(format!("{stamp}-{safe}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the run directory {}", dir.display()))
            }
        }
    }
    unreachable!("the loop returns")
}

/// The most recent run directory under `reports` (by the start time in its `run.json`).
pub fn latest_run(reports: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(reports).with_context(|| {
        format!(
            "cannot list {} (run `wiberctl bench` first, or pass RUN_DIR)",
            reports.display()
        )
    })?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| RunFile::read(&p).ok().map(|r| (r.started_ms, p)))
        .max()
        .map(|(_, p)| p)
        .with_context(|| {
            format!(
                "no bench run in {} (run `wiberctl bench` first, or pass RUN_DIR)",
                reports.display()
            )
        })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    //! Honest accounting: a stack that refuses everything achieves nothing, however fast
    //! it refuses.

    use super::*;

    /// Answers every request with a 503 after 2 ms.
    struct Refusing;

    impl Transport for Refusing {
        async fn post(&self, _body: bytes::Bytes) -> transport::Answer {
            tokio::time::sleep(Duration::from_millis(2)).await;
            transport::Answer::status(503)
        }

        async fn get(&self, _path: String) -> transport::Answer {
            tokio::time::sleep(Duration::from_millis(2)).await;
            transport::Answer::status(503)
        }
    }

    /// Acknowledges every write and answers reads, except user pages: 503.
    struct UserReadsFail;

    impl Transport for UserReadsFail {
        async fn post(&self, _body: bytes::Bytes) -> transport::Answer {
            tokio::time::sleep(Duration::from_millis(2)).await;
            transport::Answer::acked(200, 1_700_000_000_000)
        }

        async fn get(&self, path: String) -> transport::Answer {
            tokio::time::sleep(Duration::from_millis(3)).await;
            if path.starts_with("/user/") {
                transport::Answer::status(503)
            } else {
                transport::Answer::status(200)
            }
        }
    }

    /// Failed reads are counted by kind and said loudly, in the summary, its warnings
    /// and the printed table; they do not decide `--slo`, which is about the writes.
    #[tokio::test(start_paused = true)]
    async fn failed_reads_are_counted_by_kind_and_never_hidden() {
        use wiber_model::report::ReadKind;
        let reports =
            std::env::temp_dir().join(format!("wiber-reads-{}", uuid::Uuid::new_v4().simple()));
        let mut o = options(reports.clone());
        o.name = "reads".into();
        o.reads = Some(ReadsConfig {
            rates: [
                (ReadKind::Conversation, 40.0),
                (ReadKind::User, 20.0),
                (ReadKind::Count, 10.0),
            ]
            .into(),
            source: ReadSource::Run,
            page: reads::PAGE,
        });
        let r = run_with(o, Arc::new(UserReadsFail)).await.unwrap();
        let s = &r.report.summary;
        assert_eq!((s.ok, s.unknown), (100, 0), "{s:?}");
        let conv = &s.reads[&ReadKind::Conversation];
        assert_eq!((conv.sent, conv.ok, conv.errors), (40, 40, 0), "{conv:?}");
        assert!(
            conv.latency_ms.p50 >= 3.0 && conv.latency_ms.p99 < 10.0,
            "{conv:?}"
        );
        assert_eq!(conv.achieved_rate, 40.0);
        let user = &s.reads[&ReadKind::User];
        assert_eq!((user.sent, user.ok, user.errors), (20, 0, 20), "{user:?}");
        assert_eq!(user.errors_by_kind["http_503"], 20);
        assert_eq!(user.latency_ms.count, 0, "no ok read, no read latency");
        assert_eq!(user.error_ms.count, 20);
        assert_eq!(s.reads[&ReadKind::Count].ok, 10);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.starts_with("READ ERRORS: 20 of 20 user reads failed (http_503: 20)")),
            "{:?}",
            s.warnings
        );
        assert!(s
            .warnings
            .iter()
            .any(|w| w.contains("user reads: 0.0 ok/s")));
        assert!(r.slo_met, "--slo is about the writes, which all passed");
        let printed = print::summary_table(&r.report);
        assert!(printed.contains("READ ERRORS: user 20 of 20"), "{printed}");
        let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
        assert!(
            md.contains("| user | 20 | 0 | 20 | 0 | 0.0 (20) | - |"),
            "{md}"
        );
        // Every read is in reads.jsonl; the failed ones with what they read.
        let lines = reads::read_entries(&r.dir.join("reads.jsonl")).unwrap();
        assert_eq!(lines.len(), 70);
        assert!(lines
            .iter()
            .filter(|l| !l.ok())
            .all(|l| l.kind == ReadKind::User
                && l.path
                    .as_deref()
                    .is_some_and(|p| p.starts_with("/user/bench-"))));
        assert!(r.dir.join("reads-user.hgrm").is_file());
        std::fs::remove_dir_all(reports).unwrap();
    }

    fn options(reports_dir: PathBuf) -> BenchOptions {
        BenchOptions {
            api_url: "http://127.0.0.1:9".into(),
            mode: Mode::Open { rate: 100.0 },
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            conversations: 5,
            size: 32,
            connections: 8,
            max_connections: 16,
            retries: 0,
            timeout: Duration::from_secs(1),
            name: "refused".into(),
            reports_dir,
            target: StoreTarget {
                mongo_uri: String::new(),
                mongo_db: String::new(),
                mongo_collection: String::new(),
                postgres_url: None,
                kafka: String::new(),
                group: String::new(),
                topic: String::new(),
            },
            e2e: false,
            drain_timeout: Duration::from_secs(1),
            events_file: None,
            slo: Some("ack.p99<50ms".parse().unwrap()),
            progress: false,
            progress_context: None,
            resources: None,
            reads: None,
            run_id: None,
        }
    }

    /// Late starts at 5,000 req/s against a 200 ms service time, with nothing to blame yet.
    fn late(not_started: u64) -> LateInputs {
        LateInputs {
            closed_loop: false,
            start_delay_p99_ms: 250.0,
            not_started,
            slots: SlotStats {
                initial: 64,
                cap: 1024,
                size: 1024,
                peak: 900,
                ..SlotStats::default()
            },
            conversations: 1000,
            target_rate: Some(5000.0),
            service_mean_ms: 200.0,
            generator_cores: Some(0.3),
            cores: 2,
        }
    }

    #[test]
    fn on_time_starts_need_no_judgement() {
        let mut i = late(0);
        i.start_delay_p99_ms = 4.0;
        assert_eq!(why_late(&i), LateVerdict::default());
    }

    #[test]
    fn all_slots_busy_at_the_cap_is_generator_bound_with_littles_law() {
        let mut i = late(120);
        i.slots.peak = 1024;
        i.slots.waited_at_cap = 3000;
        let v = why_late(&i);
        assert!(v.generator_bound);
        assert_eq!(v.warnings.len(), 1, "{v:?}");
        let w = &v.warnings[0];
        assert!(w.starts_with("generator-bound: requests started late (start delay p99 250.0 ms) and 120 never started"), "{w}");
        assert!(
            w.contains("all 1024 in-flight slots (--max-connections) were busy when 3000"),
            "{w}"
        );
        assert!(w.contains("Little's law needs about 1000 in flight"), "{w}");
    }

    #[test]
    fn a_saturated_generator_cpu_is_generator_bound_in_both_loops() {
        let mut i = late(0);
        i.generator_cores = Some(0.97);
        let v = why_late(&i);
        assert!(v.generator_bound);
        assert!(
            v.warnings[0].contains("wiberctl itself used 0.97 of the 2 cores"),
            "{v:?}"
        );
        i.closed_loop = true;
        assert!(why_late(&i).generator_bound);
        // On a bigger machine one busy core is not saturation.
        i.cores = 8;
        i.closed_loop = false;
        assert!(!why_late(&i).generator_bound);
        i.slots.collector_full = 5;
        let v = why_late(&i);
        assert!(
            v.generator_bound && v.warnings[0].contains("collector"),
            "{v:?}"
        );
    }

    #[test]
    fn waiting_conversations_are_the_loads_shape_not_the_generator() {
        let mut i = late(0);
        i.slots.late_for_conversation = 400;
        i.slots.late_for_slot = 3;
        let v = why_late(&i);
        assert!(!v.generator_bound);
        let w = &v.warnings[0];
        assert!(w.contains("the 1000 conversations were all waiting"), "{w}");
        // 1000 conversations at 200 ms each: 5,000 req/s at most.
        assert!(
            w.contains("about 5000 req/s at most: raise --conversations"),
            "{w}"
        );
    }

    #[test]
    fn a_full_pool_in_closed_loop_is_its_operating_point() {
        let mut i = late(0);
        i.closed_loop = true;
        i.slots.cap = 64;
        i.slots.peak = 64;
        i.slots.waited_at_cap = 10_000;
        assert_eq!(why_late(&i), LateVerdict::default());
    }

    #[test]
    fn lateness_nothing_explains_is_said_so() {
        let v = why_late(&late(0));
        assert!(!v.generator_bound);
        assert!(
            v.warnings[0].contains("neither the in-flight cap (1024 slots, peak 900)"),
            "{v:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_answered_only_by_503s_has_no_goodput_and_no_ack_latency() {
        let reports =
            std::env::temp_dir().join(format!("wiber-503-{}", uuid::Uuid::new_v4().simple()));
        let r = run_with(options(reports.clone()), Arc::new(Refusing))
            .await
            .unwrap();
        let s = &r.report.summary;
        assert_eq!((s.ok, s.unknown), (0, 100), "{s:?}");
        assert_eq!(s.ack_ms.count, 0, "{s:?}");
        assert_eq!(s.service_ms.count, 0, "{s:?}");
        assert_eq!(s.achieved_rate, 0.0);
        assert_eq!(s.answered_rate, 100.0);
        assert_eq!(s.error_ms.count, 100);
        assert!(s.error_ms.p50 >= 2.0, "{:?}", s.error_ms);
        assert_eq!(s.start_delay_ms.count, 100);
        assert!(r.report.distribution.ack.is_empty());
        assert!(r.report.timeline.iter().all(|t| t.ack_p99.is_none()));
        assert!(
            s.warnings.iter().any(|w| w.contains("goodput 0 ok/s")),
            "{s:?}"
        );
        // Nothing acknowledged: an ack SLO is not met by an empty histogram.
        assert!(!r.slo_met);
        let md = std::fs::read_to_string(r.dir.join("report.md")).unwrap();
        assert!(md.contains("goodput (ok/s)"), "{md}");
        // An empty ack histogram is shown as no latency, not as 0 ms.
        assert!(
            md.contains("| ack, ok only (from due time) | - | - | - | - | - | 0 |"),
            "{md}"
        );
        // Every request found a free slot: nothing grew, nothing waited.
        assert_eq!((s.peak_in_flight, s.in_flight_cap), (1, 16), "{s:?}");
        assert!(!s.generator_bound);
        let printed = print::summary_table(&r.report);
        assert!(printed.contains("0.0 ok/s (0.0% of target)"), "{printed}");
        std::fs::remove_dir_all(reports).unwrap();
    }
}
