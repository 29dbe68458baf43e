//! Runs one scenario: stack up (or attach), steady state, load and fault timeline
//! together, rollbacks, verify, thresholds, recovery figures, and the run directory.
//! The stack is reached only through [`Stack`]; what was found goes into a
//! [`ScenarioRun`] ([`super::outcome`]), numbers come from [`super::metrics`].
//!
//! Never returns an error: a run that could not be done is an outcome with verdict
//! `error` (exit 2), written to the run directory like any other, so CI keeps the
//! evidence. Rollbacks run on every path out of the load phase.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use wiber_model::report::VerifyCounts;

use super::format::Scenario;
use super::metrics::{compare, metrics, read_report};
use super::outcome::{RunVerdict, ScenarioRun};
use super::phases;
use super::progress::{Live, Plan};
use super::recovery::{self, LagSample};
use super::shape::{self, Meeting};
use super::stall::{PartitionLag, StallTracker};
use super::threshold::{self, Metrics};
use super::timeline::{self, Records, Rollbacks};
use crate::bench::{self, BenchOptions, Mode, ProgressContext};
use crate::events::EventLog;
use crate::kafka;
use crate::runfile::StoreTarget;
use crate::runtime::{
    health, Endpoints, ImageChoice, InstanceState, Locator, NoStack, Ports, Stack, StackSpec,
    UpEvent,
};
use crate::verify::incremental::{IncrementalSummary, Watermarked};
use crate::verify::{self, VerifyOptions};
/// How long the stack may take to show a steady state before the run is refused.
const STEADY_WAIT: Duration = Duration::from_secs(60);
/// After the load ends, how long a fault step still running (a slow restart, a `for`
/// reaching past the load) may take before it is abandoned to the rollback.
const TIMELINE_GRACE: Duration = Duration::from_secs(150);
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Bound on lag samples (2 hours at 1 Hz): the sampler is stopped explicitly anyway.
const MAX_LAG_SAMPLES: usize = 7200;

/// How to run scenarios; built by `commands::scenario` from the flags.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub stack: Locator,
    pub images: ImageChoice,
    pub ports: Ports,
    pub wait: Duration,
    /// Extra environment of the api and consumer services (`--service-env`).
    pub service_env: Vec<(String, String)>,
    /// Use the running stack even when the file has `[stack]`.
    pub attach: bool,
    /// Leave a stack this run brought up running.
    pub keep_stack: bool,
    /// Take a stack that exists down with its volumes first and bring it up in the
    /// file's shape (`--fresh`).
    pub fresh: bool,
    pub baseline: Option<(PathBuf, Metrics)>,
    pub reports_dir: PathBuf,
    pub drain_timeout: Duration,
    pub progress: bool,
    /// Seed of `[random]`'s draw (`--seed`); `None`: the file's, else a fresh one.
    pub seed: Option<u64>,
}

/// Progress lines go to stderr, so that `--json` output on stdout stays parseable.
fn say(line: String) {
    eprintln!("{line}");
}

fn baseline_path(opts: &RunOptions) -> Option<PathBuf> {
    opts.baseline.as_ref().map(|b| b.0.clone())
}

/// Runs one scenario file end to end.
pub async fn run(path: &Path, opts: &RunOptions) -> ScenarioRun {
    let t0 = Instant::now();
    let mut sc = match super::format::load(path) {
        Ok(sc) => sc,
        Err(e) => {
            let mut o = ScenarioRun::new(
                &Scenario {
                    name: path
                        .file_stem()
                        .map_or("scenario".into(), |s| s.to_string_lossy().into_owned()),
                    description: String::new(),
                    path: path.to_path_buf(),
                    source: String::new(),
                    stack: None,
                    load: super::format::LoadSpec {
                        segments: Vec::new(),
                        conversations: 1,
                        size: 0,
                        retries: 0,
                        connections: 1,
                        timeout: Duration::ZERO,
                        reads: None,
                        verify_every: None,
                        poison: 0,
                    },
                    faults: Vec::new(),
                    random: None,
                    thresholds: Vec::new(),
                    expect_fail: Vec::new(),
                },
                &opts.stack.project,
                baseline_path(opts),
            );
            o.error = Some(format!("{e:#}"));
            return o;
        }
    };
    // `[random]`'s faults join the file's own, drawn from --seed, the file's seed or a fresh one.
    let drawn = super::random::expand(&mut sc, opts.seed);
    let mut out = ScenarioRun::new(&sc, &opts.stack.project, baseline_path(opts));
    if let Some((seed, summary)) = drawn {
        (out.seed, out.random) = (Some(seed), Some(summary));
    }
    let reads = sc.load.reads.as_ref().map_or(String::new(), |r| {
        let rates: Vec<String> = r.rates.iter().map(|(k, v)| format!("{k} {v}/s")).collect();
        format!(", reads {}", rates.join(" "))
    });
    say(format!(
        "scenario {}: {} ({} s of load at {:.0} req/s{reads}, {} fault(s), {} threshold(s))",
        sc.name,
        sc.description,
        sc.load.duration().as_secs(),
        sc.load.mean_rate(),
        sc.faults.len(),
        sc.thresholds.len()
    ));
    if let (Some(seed), Some(r)) = (out.seed, &out.random) {
        say(format!("  {}", super::random::describe(&out.file, seed, r)));
    }
    let result = async {
        let dir = create_dir(&opts.reports_dir, &sc.name)?;
        out.dir = Some(dir.clone());
        std::fs::write(dir.join("scenario.toml"), &sc.source)
            .with_context(|| format!("cannot write {}", dir.join("scenario.toml").display()))?;
        execute(&sc, opts, &dir, &mut out).await
    }
    .await;
    if let Err(e) = result {
        out.verdict = RunVerdict::Error;
        out.error = Some(format!("{e:#}"));
    }
    // Take down what this run brought up, whatever happened.
    if out.brought_up && !opts.keep_stack {
        let loc = Locator {
            project: opts.stack.project.clone(),
            runtime: out.runtime.or(opts.stack.runtime),
        };
        let down = async { Stack::open(&loc).await?.down(true).await };
        match down.await {
            Ok(_) => out.torn_down = true,
            // Nothing of it was created (bringing it up failed first): nothing to remove.
            Err(e) if e.downcast_ref::<NoStack>().is_some() => out.torn_down = true,
            Err(e) => say(format!("warning: could not take the stack down: {e:#} (run `wiberctl stack down --project {}`)", opts.stack.project)),
        }
    }
    out.seconds = (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    if let Some(dir) = &out.dir {
        if let Err(e) = write_outputs(dir, &out) {
            say(format!("warning: {e:#}"));
        }
    }
    out
}

async fn execute(
    sc: &Scenario,
    opts: &RunOptions,
    dir: &Path,
    out: &mut ScenarioRun,
) -> Result<()> {
    // 1. The stack. A fault this runtime cannot apply is refused before anything starts.
    let network = sc.faults.iter().find(|f| f.action.is_network());
    if let (Some(f), Some(crate::runtime::RuntimeKind::Local)) = (network, opts.stack.runtime) {
        bail!(
            "{}: {} is a network fault, which needs the docker runtime (each instance in its \
             own network namespace); run with --runtime docker",
            f.origin(),
            f.action
        );
    }
    let stack = bring_up(sc, opts, out).await?;
    out.runtime = Some(stack.kind());
    if let Some(f) = network {
        stack
            .network_faults_supported()
            .with_context(|| format!("{}: {}", f.origin(), f.action))?;
    }
    if let Some(f) = sc.faults.iter().find(|f| f.action.is_proxied()) {
        say("  preparing the proxy of the delay/timeout/reset faults (built once)".into());
        stack
            .prepare_proxied_faults()
            .await
            .with_context(|| format!("{}: {}", f.origin(), f.action))?;
    }
    // Faults an earlier run left behind (a wiberctl killed mid-fault) are not this run's.
    let healed = stack.heal_all().await?;
    if !healed.is_empty() {
        say(format!(
            "  healed {} network fault(s) left by an earlier run: {}",
            healed.len(),
            healed.join("; ")
        ));
    }
    let ep = stack.endpoints().await?;
    let api_url = ep.api()?.to_string();
    // Topic, group, database and collection as the stack's services use them.
    let target = ep.store_target()?;
    steady_state(&stack, &ep, &opts.stack.project).await?;
    say(
        "  steady state: every instance running, api ready, consumer lag 0, replicas in sync"
            .into(),
    );

    // 2. Load and faults together; rollbacks whatever happens.
    let log = EventLog::new(dir.join("events.jsonl")).for_project(&opts.stack.project);
    let samples: Arc<Mutex<Vec<LagSample>>> = Arc::default();
    let stalls: Arc<Mutex<StallTracker>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The progress line's phase counts from here, like the fault timeline's due times.
    let live = Live::new(Plan::new(&sc.faults), Instant::now());
    let sampler = tokio::spawn(sample_lag(
        target.clone(),
        Arc::clone(&samples),
        Arc::clone(&stalls),
        live.clone(),
        stop_rx.clone(),
    ));
    // Verify-as-it-goes stops with the load: from there the final verify covers the tail.
    let (checker_stop, checker_rx) = tokio::sync::watch::channel(false);
    let checker = sc.load.verify_every.map(|every| {
        say(format!(
            "  verifying as it goes: every {every:?}, what the consumer group committed past"
        ));
        tokio::spawn(verify_as_it_goes(
            dir.to_path_buf(),
            target.clone(),
            every,
            live.clone(),
            checker_rx,
        ))
    });
    let rollbacks = Rollbacks::default();
    let records = Records::default();
    let load_start_ms = wiber_model::now_ms();
    let phase = load_and_faults(
        sc, opts, dir, &api_url, &target, &stack, &log, &rollbacks, &records, &live,
    )
    .await;
    let failures = timeline::rollback_all(&stack, &rollbacks, &log, &records).await;
    if !failures.is_empty() {
        say(format!("  rollback FAILED: {}", failures.join("; ")));
    } else if !records.snapshot().is_empty() {
        say("  rollbacks done: every fault undone".into());
    }
    let load_end_ms = wiber_model::now_ms();
    out.rollback_failures = failures.clone();
    out.faults = records.snapshot();
    let _ = checker_stop.send(true);
    if let Some(c) = checker {
        out.incremental = c.await.ok();
    }
    let load_dirs = match phase {
        Ok(d) => d,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = sampler.await;
            return Err(e);
        }
    };
    out.load_dirs = load_dirs.clone();
    if !failures.is_empty() {
        bail!(
            "a rollback failed, the stack is not back to its steady state: {}",
            failures.join("; ")
        );
    }

    // 3. Drain and verify (verify waits for lag 0), then stop sampling the lag.
    say("  verifying (waiting for the consumer group to drain)".into());
    let mut counts = VerifyCounts::default();
    let mut reports = Vec::new();
    // Each instance's RSS, to judge growth per process incarnation (`resource_trend`).
    let mut instance_rss = Vec::new();
    for d in &load_dirs {
        let v = verify::run(&VerifyOptions {
            run_dir: d.clone(),
            drain_timeout: opts.drain_timeout,
            ..Default::default()
        })
        .await
        .with_context(|| format!("verify of {} could not check", d.display()))?;
        counts.add(&v.counts);
        out.verify_verdicts.push(v.verdict);
        let report = read_report(d)?;
        instance_rss.extend(super::resource_trend::read_instances(d, &report)?);
        reports.push(report);
    }
    out.verify = Some(counts);
    // A little more lag history after the drain, for faults near the end of the load.
    tokio::time::sleep(LAG_EVERY).await;
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    let samples = samples.lock().expect("samples lock").clone();
    write_lines(&dir.join("lag.jsonl"), &samples)?;
    let stalled = std::mem::take(&mut *stalls.lock().expect("stalls lock")).finish();
    out.stall = stalled.flatten();

    // 4. Figures, thresholds, comparison.
    let mut ledger = Vec::new();
    let mut read_entries = Vec::new();
    for d in &load_dirs {
        ledger.extend(verify::read_ledger(&d.join("ledger.jsonl"))?);
        read_entries.extend(crate::bench::reads::read_entries(&d.join("reads.jsonl"))?);
    }
    let read_kinds: Vec<_> = sc
        .load
        .reads
        .as_ref()
        .map(|r| r.rates.keys().copied().collect())
        .unwrap_or_default();
    out.recovery = recovery::compute(&out.faults, &ledger, &samples, load_start_ms, load_end_ms);
    out.recovery_stats = Some(super::recovery_stats::compute(&out.faults, &out.recovery));
    out.resources = super::resource_trend::compute(&reports, &instance_rss);
    drop(instance_rss);
    // Phases end with the scheduled load, not with the drain that follows it.
    let scheduled_end = load_start_ms + sc.load.duration().as_millis() as i64;
    let phases_end = scheduled_end.min(load_end_ms);
    let windows: Vec<(i64, i64)> = out.faults.iter().map(|r| r.window(phases_end)).collect();
    out.phases = phases::compute(
        &windows,
        &ledger,
        phases::LoadReads {
            entries: &read_entries,
            kinds: &read_kinds,
        },
        load_start_ms,
        phases_end,
    );
    out.metrics = metrics(
        &reports,
        &sc.load
            .segments
            .iter()
            .map(|s| s.duration)
            .collect::<Vec<_>>(),
        &counts,
        &out.recovery,
        &out.phases,
        out.resources.as_ref(),
    );
    if let Some(inc) = &out.incremental {
        out.metrics
            .insert("incremental.lost".into(), inc.lost as f64);
        out.metrics
            .insert("incremental.corrupted".into(), inc.corrupted as f64);
        out.metrics
            .insert("incremental.checked".into(), inc.checked as f64);
    }
    // Not measured when Kafka never answered a lag read.
    if let Some(longest) = stalled {
        out.metrics.insert(
            "consumer.stalled_max".into(),
            super::stall::stalled_max_seconds(longest.as_ref()),
        );
    }
    let baseline = opts.baseline.as_ref().map(|b| &b.1);
    out.thresholds = sc
        .thresholds
        .iter()
        .map(|t| threshold::evaluate(t, &out.metrics, sc.load.mean_rate(), baseline))
        .collect();
    if let Some(b) = baseline {
        out.comparison = compare(b, &out.metrics);
    }
    // Verify's own verdicts say pass only when every invariant holds; the run's judgement
    // also knows which failures the scenario expects (`[expect] fail`).
    out.verdict = out.judged();
    Ok(())
}

/// Brings the stack up (or attaches); records whether this run created it. A stack of
/// another shape than the file's `[stack]` is refused before anything runs
/// ([`super::shape`]), or with `--fresh` taken down with its volumes and brought up as
/// the file states.
async fn bring_up(sc: &Scenario, opts: &RunOptions, out: &mut ScenarioRun) -> Result<Stack> {
    let mut existing = Stack::open(&opts.stack).await;
    let file = sc.path.display().to_string();
    let project = &opts.stack.project;
    let spec = match (&sc.stack, opts.attach) {
        (Some(spec), false) => spec,
        (stated, _) => {
            if opts.fresh {
                bail!("--fresh brings a stack up in the shape of the file's [stack], and {file} has none: add one, or run without --fresh against the running stack");
            }
            let why = if opts.attach {
                "--attach"
            } else {
                "the scenario has no [stack] section"
            };
            let stack = existing.with_context(|| format!("{why}, so it runs against a running stack; bring one up with `wiberctl stack up --project {project}`"))?;
            if let Some(spec) = stated {
                let shape = stack.shape().await?;
                shape::check(&file, project, &spec.cluster, &shape, Meeting::Attached)
                    .map_err(anyhow::Error::msg)?;
            }
            return Ok(stack);
        }
    };
    if opts.fresh {
        if let Ok(s) = &existing {
            say(format!(
                "  stack {project:?}: taking it down with its volumes (--fresh)"
            ));
            s.down(true)
                .await
                .with_context(|| format!("--fresh could not take the stack of project {project:?} down (try `wiberctl stack down --volumes --project {project}`)"))?;
            let runtime = Some(s.kind());
            existing = Err(anyhow::anyhow!("taken down by --fresh"));
            // Bring it up again where it ran.
            out.runtime = runtime;
        }
    }
    // A stack that exists, running or stopped with its data, is refused in another
    // shape before `up` could grow it: its brokers count from its instances, and a
    // running one's topic says its replication.
    if let Ok(s) = &existing {
        let shape = s.shape().await?;
        shape::check(&file, project, &spec.cluster, &shape, Meeting::Existing)
            .map_err(anyhow::Error::msg)?;
    }
    // A stack counts as already there only when something of it runs: a stopped one
    // (state left by an earlier `stack down`) is brought up, and so taken down, by us.
    let running = match &existing {
        Ok(s) => s
            .list()
            .await
            .map(|l| l.iter().any(|i| i.state == InstanceState::Running))
            .unwrap_or(false),
        Err(_) => false,
    };
    out.brought_up = !running;
    let loc = Locator {
        project: project.clone(),
        runtime: opts
            .stack
            .runtime
            .or(existing.as_ref().ok().map(Stack::kind))
            .or(out.runtime),
    };
    drop(existing);
    say(format!(
        "  stack {:?}: {} ({}, {} consumers)",
        project,
        if out.brought_up {
            "bringing it up"
        } else {
            "already there in the file's shape, making sure it is whole"
        },
        spec.cluster.describe(),
        spec.consumers
    ));
    let stack_spec = StackSpec {
        consumers: spec.consumers,
        partitions: spec.partitions,
        cluster: spec.cluster,
        ports: opts.ports,
        images: opts.images,
        wait: opts.wait,
        extra_env: opts.service_env.clone(),
    };
    // Progress as plain lines on stderr, like the rest of the run's.
    let (stack, _) = Stack::up(&loc, &stack_spec, &|e| match e {
        UpEvent::Note(n) => say(format!("    {n}")),
        UpEvent::Instance { id, action } => say(format!("    {id} {}", action.name())),
        UpEvent::Waiting { .. } | UpEvent::Ready { .. } => {}
    })
    .await?;
    // Whole now, so its topic answers: a stopped stack's data (a topic made by an
    // earlier stack of another shape) shows here, before any load.
    let shape = stack.shape().await?;
    let meeting = if out.brought_up {
        Meeting::BroughtUp
    } else {
        Meeting::Existing
    };
    shape::check(&file, project, &spec.cluster, &shape, meeting).map_err(anyhow::Error::msg)?;
    Ok(stack)
}

/// Waits (bounded) until the stack is whole by the one health judgement
/// ([`health::check`]), the consumer lag is 0 and, on a cluster, every replica is in
/// sync; refuses to start otherwise, naming what is wrong.
async fn steady_state(stack: &Stack, ep: &Endpoints, project: &str) -> Result<()> {
    let deadline = Instant::now() + STEADY_WAIT;
    loop {
        let mut problems = health::check(stack, ep).await?.problems(true);
        if problems.is_empty() {
            // A broker still catching up (an earlier run's crash) is not a steady state:
            // a fault on another would find partitions below min.insync.replicas.
            match stack.under_replicated().await {
                Ok(p) if p.is_empty() => return Ok(()),
                Ok(p) => problems.push(format!(
                    "partition(s) {} of the topic have a replica out of sync",
                    p.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
                )),
                Err(e) => problems.push(format!("cannot read the topic's replicas: {e:#}")),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "refusing to start from a broken stack ({}) after {STEADY_WAIT:?}: see `wiberctl stack status --project {project}`",
                problems.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The load (segments back to back) with the fault timeline beside it, until the load
/// ends, a fault step fails, or a signal arrives. Returns the load's run directories.
#[allow(clippy::too_many_arguments)]
async fn load_and_faults(
    sc: &Scenario,
    opts: &RunOptions,
    dir: &Path,
    api_url: &str,
    target: &StoreTarget,
    stack: &Stack,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
    live: &Live,
) -> Result<Vec<PathBuf>> {
    // Installed before the first fault, so Ctrl-C cannot kill us between a fault and its undo.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let start = live.start();
    let load = run_load(sc, opts, dir, api_url, target, live);
    let tl = timeline::run(
        stack,
        &sc.faults,
        sc.random.as_ref(),
        start,
        log,
        rollbacks,
        records,
        &say,
    );
    tokio::pin!(load, tl);
    let mut tl_done = false;
    let loaded = loop {
        tokio::select! {
            r = &mut load => break r?,
            r = &mut tl, if !tl_done => {
                tl_done = true;
                r.context("a fault step failed: the load was stopped and the faults rolled back")?;
            }
            _ = sigint.recv() => bail!("interrupted (SIGINT): the load was stopped and every fault rolled back"),
            _ = sigterm.recv() => bail!("interrupted (SIGTERM): the load was stopped and every fault rolled back"),
        }
    };
    if !tl_done {
        tokio::select! {
            r = tokio::time::timeout(TIMELINE_GRACE, &mut tl) => match r {
                Ok(r) => r.context("a fault step failed: the faults were rolled back")?,
                Err(_) => say(format!("  the fault timeline was still running {TIMELINE_GRACE:?} after the load: rolling back")),
            },
            _ = sigint.recv() => bail!("interrupted (SIGINT): every fault rolled back"),
            _ = sigterm.recv() => bail!("interrupted (SIGTERM): every fault rolled back"),
        }
    }
    Ok(loaded)
}

/// Runs each load segment as a bench run inside the scenario directory (`load/`, or
/// `load-1/`, `load-2/`, ... for stages).
async fn run_load(
    sc: &Scenario,
    opts: &RunOptions,
    dir: &Path,
    api_url: &str,
    target: &StoreTarget,
    live: &Live,
) -> Result<Vec<PathBuf>> {
    let n = sc.load.segments.len();
    let line = live.clone();
    let progress_context = Some(ProgressContext(Arc::new(move || line.line())));
    let mut dirs = Vec::new();
    for (i, seg) in sc.load.segments.iter().enumerate() {
        let name = if n == 1 {
            "load".to_string()
        } else {
            format!("load-{}", i + 1)
        };
        if seg.rate < 1.0 {
            // A ramp from 0 to almost 0: nothing to send, but the timeline keeps its time.
            tokio::time::sleep(seg.duration).await;
            continue;
        }
        let last = i + 1 == n;
        let run_id = bench::new_run_id();
        // Poison records go halfway through the first segment, among the load, as
        // another producer of the topic would put them there.
        let poison = (i == 0 && sc.load.poison > 0).then(|| {
            let (target, run_id, count) = (target.clone(), run_id.clone(), sc.load.poison);
            let conversations = sc.load.conversations;
            let half = seg.duration / 2;
            tokio::spawn(async move {
                tokio::time::sleep(half).await;
                bench::poison::inject(&target.kafka, &target.topic, &run_id, conversations, count)
                    .await
            })
        });
        let result = bench::run(BenchOptions {
            api_url: api_url.to_string(),
            mode: Mode::Open { rate: seg.rate },
            duration: seg.duration,
            warmup: Duration::ZERO,
            conversations: sc.load.conversations,
            size: sc.load.size,
            connections: sc.load.connections,
            max_connections: bench::DEFAULT_MAX_CONNECTIONS,
            retries: sc.load.retries,
            timeout: sc.load.timeout,
            name: format!("{}-{name}", sc.name),
            reports_dir: dir.to_path_buf(),
            target: target.clone(),
            // End-to-end latency drains the group first: only after the last segment,
            // so the load does not pause between segments.
            e2e: last,
            drain_timeout: opts.drain_timeout,
            events_file: Some(dir.join("events.jsonl")),
            slo: None,
            progress: opts.progress,
            progress_context: progress_context.clone(),
            resources: Some(opts.stack.clone()),
            reads: sc.load.reads.clone(),
            run_id: Some(run_id),
        })
        .await
        .with_context(|| format!("the load ({name}) could not run"))?;
        if let Some(p) = poison {
            let entries = p
                .await
                .context("the poison task failed")?
                .context("the poison records could not be produced")?;
            bench::poison::append(&result.dir.join("ledger.jsonl"), &entries)?;
            say_poison(&entries);
        }
        // bench names its directory by time; inside a scenario a fixed name reads better.
        let fixed = dir.join(&name);
        std::fs::rename(&result.dir, &fixed).with_context(|| {
            format!(
                "cannot rename {} to {}",
                result.dir.display(),
                fixed.display()
            )
        })?;
        let mut report = result.report;
        report.run.dir = fixed.display().to_string();
        crate::report::write_all(&fixed, &report)?;
        dirs.push(fixed);
    }
    Ok(dirs)
}

/// Says where the poison records went.
fn say_poison(entries: &[wiber_model::ledger::LedgerEntry]) {
    for e in entries {
        say(format!(
            "  poison record {} produced behind the API's back to partition {} offset {} (content holds U+0000): it must be dead-lettered",
            e.message_id,
            e.partition.unwrap_or(-1),
            e.offset.unwrap_or(-1)
        ));
    }
}

/// Samples the consumer group's total lag every second until told to stop, and follows
/// each partition's committed offset for stalls ([`super::stall`]).
async fn sample_lag(
    target: StoreTarget,
    out: Arc<Mutex<Vec<LagSample>>>,
    stalls: Arc<Mutex<StallTracker>>,
    live: Live,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let reader = kafka::LagReader::new(&target.kafka, &target.group, &target.topic);
    for _ in 0..MAX_LAG_SAMPLES {
        let time_ms = wiber_model::now_ms();
        let read = reader.read(Duration::from_secs(2)).await.ok();
        if let Some(parts) = &read {
            let parts: Vec<PartitionLag> = parts
                .iter()
                .map(|p| PartitionLag {
                    partition: p.partition,
                    committed: p.committed,
                    lag: p.lag,
                })
                .collect();
            stalls.lock().expect("stalls lock").observe(time_ms, &parts);
        }
        let lag = read.map(|l| kafka::total(&l));
        live.set_lag(lag);
        out.lock()
            .expect("samples lock")
            .push(LagSample { time_ms, lag });
        tokio::select! {
            _ = tokio::time::sleep(LAG_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Bound on checks (2 hours at the shortest interval, 5 s).
const MAX_CHECKS: usize = 1440;

/// Verifies what the consumer group committed past, every `every` until `stop` (see
/// `verify::incremental`); says so at once when something is lost or corrupted.
async fn verify_as_it_goes(
    dir: PathBuf,
    target: StoreTarget,
    every: Duration,
    live: Live,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> IncrementalSummary {
    let mut w = Watermarked::new(&dir);
    let mut told = 0;
    for _ in 0..MAX_CHECKS {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = w.check(&target).await {
            say(format!(
                "  verify-as-it-goes stopped: {e:#}; the final verify still checks everything"
            ));
            break;
        }
        live.set_verified(w.summary.line());
        let s = &w.summary;
        if s.problems() > told {
            told = s.problems();
            let first = s
                .examples
                .values()
                .flatten()
                .next()
                .map_or(String::new(), |e| {
                    format!(": {} ({})", e.message_id, e.detail)
                });
            say(format!(
                "  {:>6.1}s verify-as-it-goes: {} lost, {} corrupted so far{first}",
                live.start().elapsed().as_secs_f64(),
                s.lost,
                s.corrupted
            ));
        }
    }
    w.summary
}

/// `reports/<UTC time>-scenario-<name>/`, unique.
fn create_dir(reports: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(reports).with_context(|| {
        format!(
            "cannot create the reports directory {} (set --reports-dir)",
            reports.display()
        )
    })?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 1..1000 {
        let d = if n == 1 {
            reports.join(format!("{stamp}-scenario-{name}"))
        } else {
            reports.join(format!("{stamp}-scenario-{name}-{n}"))
        };
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", d.display())),
        }
    }
    bail!(
        "cannot find a free run directory name under {}",
        reports.display()
    )
}

fn write_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut text = String::new();
    for i in items {
        text.push_str(&serde_json::to_string(i)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_outputs(dir: &Path, out: &ScenarioRun) -> Result<()> {
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    w("scenario.json", serde_json::to_string_pretty(out)?)?;
    w("junit.xml", super::junit::render(&[out.junit()]))?;
    w("summary.md", super::print::markdown(out))?;
    w("report.html", super::html::render(out, dir))
}
