//! Runs one scenario: stack up (or attach), steady state, load and fault timeline
//! together, rollbacks, verify, thresholds, recovery figures, and the run directory.
//!
//! Never returns an error: a run that could not be done is an outcome with verdict
//! `error` (exit 2), written to the run directory like any other, so CI keeps the
//! evidence. Rollbacks run on every path out of the load phase.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use wiber_model::report::{Report, VerifyCounts};

use super::format::{FaultAction, Scenario};
use super::junit::{Case, CaseStatus, Suite};
use super::recovery::{self, LagSample, Recovery};
use super::threshold::{self, Evaluation, Metrics, Verdict};
use super::timeline::{self, FaultRecord, FaultSeam, Records, Rollbacks};
use crate::bench::{self, BenchOptions, Mode};
use crate::client::ApiClient;
use crate::commands::stack::{self as stackcmd, ImageChoice, Stack, StackCmd, StackRef, UpArgs};
use crate::events::EventLog;
use crate::kafka;
use crate::runtime::docker::{DockerStackConfig, Endpoints, Images};
use crate::runtime::{InstanceId, InstanceInfo, Runtime, Service, Signal};
use crate::verify::{self, store::StoreTarget, VerifyOptions};

/// Schema of `scenario.json`.
pub const SCHEMA: &str = "wiber.scenario.v1";
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
    pub stack: StackRef,
    pub images: ImageChoice,
    pub api_port: u16,
    pub mongo_port: u16,
    pub kafka_port: u16,
    pub wait: Duration,
    /// Use the running stack even when the file has `[stack]`.
    pub attach: bool,
    /// Leave a stack this run brought up running.
    pub keep_stack: bool,
    pub baseline: Option<(PathBuf, Metrics)>,
    pub reports_dir: PathBuf,
    pub drain_timeout: Duration,
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunVerdict {
    Pass,
    Fail,
    Error,
}

/// `scenario.json`: everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub schema: String,
    pub name: String,
    pub description: String,
    pub file: String,
    pub verdict: RunVerdict,
    /// Why the run could not be done (verdict `error`).
    pub error: Option<String>,
    pub dir: Option<PathBuf>,
    pub started_ms: i64,
    pub seconds: f64,
    pub project: String,
    pub runtime: Option<String>,
    pub brought_up: bool,
    pub torn_down: bool,
    pub mean_rate: f64,
    /// Bench run directories of the load, one per segment.
    pub load_dirs: Vec<PathBuf>,
    pub verify: Option<VerifyCounts>,
    /// Verify's verdicts (`pass`, `fail`, `error` = did not drain), per segment.
    pub verify_verdicts: Vec<String>,
    pub metrics: Metrics,
    pub thresholds: Vec<Evaluation>,
    pub faults: Vec<FaultRecord>,
    pub recovery: Vec<Recovery>,
    pub rollback_failures: Vec<String>,
    pub baseline: Option<PathBuf>,
    pub comparison: Vec<Comparison>,
}

/// One row of the `--baseline` comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub baseline: f64,
    pub run: f64,
    /// (run − baseline) / baseline, percent; `None` when the baseline is 0.
    pub change_pct: Option<f64>,
}

impl Outcome {
    fn new(sc: &Scenario, opts: &RunOptions) -> Outcome {
        Outcome {
            schema: SCHEMA.into(),
            name: sc.name.clone(),
            description: sc.description.clone(),
            file: sc.path.display().to_string(),
            verdict: RunVerdict::Error,
            error: None,
            dir: None,
            started_ms: wiber_model::now_ms(),
            seconds: 0.0,
            project: opts.stack.project.clone(),
            runtime: None,
            brought_up: false,
            torn_down: false,
            mean_rate: sc.load.mean_rate(),
            load_dirs: Vec::new(),
            verify: None,
            verify_verdicts: Vec::new(),
            metrics: Metrics::new(),
            thresholds: Vec::new(),
            faults: Vec::new(),
            recovery: Vec::new(),
            rollback_failures: Vec::new(),
            baseline: opts.baseline.as_ref().map(|b| b.0.clone()),
            comparison: Vec::new(),
        }
    }

    /// The JUnit suite: the run, the invariants, one case per threshold.
    pub fn junit(&self) -> Suite {
        let mut cases = vec![Case {
            name: "run (stack, steady state, load, faults, rollbacks)".into(),
            status: if self.verdict == RunVerdict::Error {
                CaseStatus::Error
            } else {
                CaseStatus::Pass
            },
            message: self.error.clone().unwrap_or_default(),
        }];
        if let Some(c) = &self.verify {
            let bad: Vec<String> = c
                .must_be_zero()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} = {n}"))
                .collect();
            let undrained = self.verify_verdicts.iter().any(|v| v == verify::ERROR);
            let mut message = bad.join(", ");
            if undrained {
                message.push_str(" the consumer group did not drain within the drain timeout");
            }
            cases.push(Case {
                name: "delivery invariants (verify)".into(),
                status: if bad.is_empty() && !undrained {
                    CaseStatus::Pass
                } else {
                    CaseStatus::Fail
                },
                message: message.trim().to_string(),
            });
        }
        for e in &self.thresholds {
            cases.push(Case {
                name: format!("{} {}", e.metric, e.threshold),
                status: match e.verdict {
                    Verdict::Pass => CaseStatus::Pass,
                    Verdict::Fail => CaseStatus::Fail,
                    Verdict::Skipped => CaseStatus::Skipped,
                },
                message: e.detail.clone().unwrap_or_default(),
            });
        }
        Suite {
            name: self.name.clone(),
            file: self.file.clone(),
            seconds: self.seconds,
            cases,
        }
    }
}

/// Progress lines go to stderr, so that `--json` output on stdout stays parseable.
fn say(line: String) {
    eprintln!("{line}");
}

/// Runs one scenario file end to end.
pub async fn run(path: &Path, opts: &RunOptions) -> Outcome {
    let t0 = Instant::now();
    let sc = match super::format::load(path) {
        Ok(sc) => sc,
        Err(e) => {
            let mut o = Outcome::new(
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
                    },
                    faults: Vec::new(),
                    thresholds: Vec::new(),
                },
                opts,
            );
            o.error = Some(format!("{e:#}"));
            return o;
        }
    };
    let mut out = Outcome::new(&sc, opts);
    say(format!(
        "scenario {}: {} ({} s of load at {:.0} req/s, {} fault(s), {} threshold(s))",
        sc.name,
        sc.description,
        sc.load.duration().as_secs(),
        sc.load.mean_rate(),
        sc.faults.len(),
        sc.thresholds.len()
    ));
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
        let r = StackRef {
            project: opts.stack.project.clone(),
            runtime: out.runtime.as_deref().map(|k| {
                if k == "local" {
                    stackcmd::RuntimeKind::Local
                } else {
                    stackcmd::RuntimeKind::Docker
                }
            }),
        };
        match stackcmd::run(StackCmd::Down { stack: r, volumes: true }, false).await {
            Ok(_) => out.torn_down = true,
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

async fn execute(sc: &Scenario, opts: &RunOptions, dir: &Path, out: &mut Outcome) -> Result<()> {
    // 1. The stack.
    let stack = bring_up(sc, opts, out).await?;
    out.runtime = Some(stack.kind().to_string());
    let ep = stack.endpoints().await?;
    let api_url = ep
        .api_url
        .clone()
        .context("the stack has no api instance with a published port")?;
    let target = StoreTarget {
        mongo_uri: ep
            .mongo_uri
            .clone()
            .context("the stack has no mongo instance with a published port")?,
        mongo_db: "wiber".into(),
        mongo_collection: "messages".into(),
        kafka: ep
            .kafka_bootstrap
            .clone()
            .context("the stack has no kafka instance with a published port")?,
        group: ep.group.clone(),
        topic: ep.topic.clone(),
    };
    steady_state(&stack, &ep, &opts.stack.project).await?;
    say("  steady state: every instance running, api ready, consumer lag 0".into());

    // 2. Load and faults together; rollbacks whatever happens.
    let log = EventLog::new(dir.join("events.jsonl"));
    let samples: Arc<Mutex<Vec<LagSample>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_lag(target.clone(), Arc::clone(&samples), stop_rx));
    let seam = StackSeam {
        stack: &stack,
        partitions: sc.stack.as_ref().map_or(6, |s| s.partitions),
        ep: &ep,
    };
    let rollbacks = Rollbacks::default();
    let records = Records::default();
    let load_start_ms = wiber_model::now_ms();
    let phase = load_and_faults(
        sc, opts, dir, &api_url, &target, &seam, &log, &rollbacks, &records,
    )
    .await;
    let failures = timeline::rollback_all(&seam, &rollbacks, &log, &records).await;
    if !failures.is_empty() {
        say(format!("  rollback FAILED: {}", failures.join("; ")));
    } else if !records.snapshot().is_empty() {
        say("  rollbacks done: every fault undone".into());
    }
    let load_end_ms = wiber_model::now_ms();
    out.rollback_failures = failures.clone();
    out.faults = records.snapshot();
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
    for d in &load_dirs {
        let v = verify::run(&VerifyOptions {
            run_dir: d.clone(),
            drain_timeout: opts.drain_timeout,
            ..Default::default()
        })
        .await
        .with_context(|| format!("verify of {} could not check", d.display()))?;
        add_counts(&mut counts, &v.counts);
        out.verify_verdicts.push(v.verdict.clone());
        reports.push(read_report(d)?);
    }
    out.verify = Some(counts);
    // A little more lag history after the drain, for faults near the end of the load.
    tokio::time::sleep(LAG_EVERY).await;
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    let samples = samples.lock().expect("samples lock").clone();
    write_lines(&dir.join("lag.jsonl"), &samples)?;

    // 4. Figures, thresholds, comparison.
    let mut ledger = Vec::new();
    for d in &load_dirs {
        ledger.extend(verify::read_ledger(&d.join("ledger.jsonl"))?);
    }
    out.recovery = recovery::compute(&out.faults, &ledger, &samples, load_start_ms, load_end_ms);
    out.metrics = metrics(
        &reports,
        &sc.load
            .segments
            .iter()
            .map(|s| s.duration)
            .collect::<Vec<_>>(),
        &counts,
        &out.recovery,
    );
    let baseline = opts.baseline.as_ref().map(|b| &b.1);
    out.thresholds = sc
        .thresholds
        .iter()
        .map(|t| threshold::evaluate(t, &out.metrics, sc.load.mean_rate(), baseline))
        .collect();
    if let Some(b) = baseline {
        out.comparison = compare(b, &out.metrics);
    }
    let verified = out.verify_verdicts.iter().all(|v| v == verify::PASS);
    let thresholds_ok = out.thresholds.iter().all(|e| e.verdict != Verdict::Fail);
    out.verdict = if verified && thresholds_ok {
        RunVerdict::Pass
    } else {
        RunVerdict::Fail
    };
    Ok(())
}

/// Brings the stack up (or attaches); records whether this run created it.
async fn bring_up(sc: &Scenario, opts: &RunOptions, out: &mut Outcome) -> Result<Stack> {
    let existing = stackcmd::open(&opts.stack).await;
    let spec = match (&sc.stack, opts.attach) {
        (Some(spec), false) => spec,
        _ => {
            let why = if opts.attach {
                "--attach"
            } else {
                "the scenario has no [stack] section"
            };
            return existing.with_context(|| format!("{why}, so it runs against a running stack; bring one up with `wiberctl stack up --project {}`", opts.stack.project));
        }
    };
    // A stack counts as already there only when something of it runs: a stopped one
    // (state left by an earlier `stack down`) is brought up, and so taken down, by us.
    let running = match &existing {
        Ok(s) => s
            .list()
            .await
            .map(|l| l.iter().any(|i| i.state == "running"))
            .unwrap_or(false),
        Err(_) => false,
    };
    out.brought_up = !running;
    let existing_kind = existing.as_ref().ok().map(|s| s.kind());
    drop(existing);
    let runtime = opts.stack.runtime.or(match existing_kind {
        Some("local") => Some(stackcmd::RuntimeKind::Local),
        _ => None,
    });
    say(format!(
        "  stack {:?}: {} ({} consumers)",
        opts.stack.project,
        if out.brought_up {
            "bringing it up"
        } else {
            "already there, making sure it is whole"
        },
        spec.consumers
    ));
    let args = UpArgs {
        stack: StackRef {
            project: opts.stack.project.clone(),
            runtime,
        },
        consumers: spec.consumers,
        images: opts.images,
        api_port: opts.api_port,
        mongo_port: opts.mongo_port,
        kafka_port: opts.kafka_port,
        partitions: spec.partitions,
        wait: opts.wait,
    };
    // `up` reports the stack it left running on stderr; it fails (exit 2) when it could
    // not bring it up, which is what a scenario needs too.
    stackcmd::up(args, false).await?;
    stackcmd::open(&StackRef {
        project: opts.stack.project.clone(),
        runtime: Some(runtime.unwrap_or(stackcmd::RuntimeKind::Docker)),
    })
    .await
}

/// Waits (bounded) for every instance running and connected, the api ready and the
/// consumer lag at 0; refuses to start otherwise, naming what is wrong.
async fn steady_state(stack: &Stack, ep: &Endpoints, project: &str) -> Result<()> {
    let deadline = Instant::now() + STEADY_WAIT;
    let api = ApiClient::new(
        ep.api_url.as_deref().unwrap_or_default(),
        Duration::from_secs(3),
    )?;
    loop {
        let mut problems = Vec::new();
        match stack {
            Stack::Docker(d) => {
                for c in d.status().await? {
                    if c.info.state != "running" {
                        problems.push(format!("{} is {}", c.info.id, c.info.state));
                    } else if !c.connected {
                        problems.push(format!("{} is disconnected", c.info.id));
                    } else if c.health == "unhealthy" {
                        problems.push(format!("{} is unhealthy", c.info.id));
                    }
                }
            }
            Stack::Local(l) => {
                for i in l.list().await? {
                    if i.state != "running" {
                        problems.push(format!("{} is {}", i.id, i.state));
                    }
                }
            }
        }
        match api.readiness().await {
            Ok((200, _)) => {}
            Ok((code, r)) => problems.push(format!(
                "the api is not ready ({code}: kafka {}, mongodb {})",
                r.kafka, r.mongodb
            )),
            Err(e) => problems.push(format!("the api does not answer: {e}")),
        }
        match (&ep.kafka_bootstrap, problems.is_empty()) {
            (Some(b), true) => {
                match kafka::group_lag(b, &ep.group, &ep.topic, Duration::from_secs(5)).await {
                    Ok(l) if kafka::total(&l) == 0 => {}
                    Ok(l) => problems.push(format!(
                        "consumer group {} has lag {}",
                        ep.group,
                        kafka::total(&l)
                    )),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
            (None, _) => problems.push("no kafka instance with a published port".into()),
            _ => {}
        }
        if problems.is_empty() {
            return Ok(());
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
    seam: &StackSeam<'_>,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
) -> Result<Vec<PathBuf>> {
    // Installed before the first fault, so Ctrl-C cannot kill us between a fault and its undo.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let start = Instant::now();
    let load = run_load(sc, opts, dir, api_url, target);
    let tl = timeline::run(seam, &sc.faults, start, log, rollbacks, records, &say);
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
) -> Result<Vec<PathBuf>> {
    let n = sc.load.segments.len();
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
        let result = bench::run(BenchOptions {
            api_url: api_url.to_string(),
            mode: Mode::Open { rate: seg.rate },
            duration: seg.duration,
            warmup: Duration::ZERO,
            conversations: sc.load.conversations,
            size: sc.load.size,
            connections: sc.load.connections,
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
        })
        .await
        .with_context(|| format!("the load ({name}) could not run"))?;
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

/// Samples the consumer group's total lag every second until told to stop.
async fn sample_lag(
    target: StoreTarget,
    out: Arc<Mutex<Vec<LagSample>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for _ in 0..MAX_LAG_SAMPLES {
        let time_ms = wiber_model::now_ms();
        let lag = kafka::group_lag(
            &target.kafka,
            &target.group,
            &target.topic,
            Duration::from_secs(2),
        )
        .await
        .ok()
        .map(|l| kafka::total(&l));
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

/// The stack as the timeline sees it.
struct StackSeam<'a> {
    stack: &'a Stack,
    partitions: u32,
    ep: &'a Endpoints,
}

impl FaultSeam for StackSeam<'_> {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        self.stack.list().await
    }

    async fn apply(&self, action: FaultAction, id: &InstanceId, sig: Signal) -> Result<()> {
        let s = self.stack;
        match action {
            FaultAction::Kill => s.kill(id, sig).await,
            FaultAction::Stop => s.stop(id).await,
            FaultAction::Start => s.start(id).await,
            FaultAction::Restart => s.restart(id).await,
            FaultAction::Pause => s.pause(id).await,
            // Undo actions are idempotent here: a rollback of an instance that is
            // already back (or never got the fault) must not fail the run.
            FaultAction::Unpause => {
                let paused = s
                    .list()
                    .await?
                    .iter()
                    .any(|i| i.id == *id && i.state == "paused");
                if paused {
                    s.unpause(id).await?;
                }
                Ok(())
            }
            FaultAction::Disconnect => s.disconnect(id).await,
            FaultAction::Reconnect => {
                if let Stack::Docker(d) = s {
                    let connected = d
                        .status()
                        .await?
                        .iter()
                        .any(|c| c.info.id == *id && c.connected);
                    if connected {
                        return Ok(());
                    }
                }
                s.reconnect(id).await
            }
            FaultAction::Scale => bail!("scale is not an instance action"),
        }
    }

    async fn scale(&self, service: Service, to: u32) -> Result<Vec<InstanceId>> {
        let before: Vec<InstanceId> = self
            .stack
            .list()
            .await?
            .into_iter()
            .map(|i| i.id)
            .filter(|i| i.service == service)
            .collect();
        match self.stack {
            Stack::Local(l) => {
                let mut added = Vec::new();
                for _ in before.len() as u32..to {
                    added.push(l.add_instance(service).await?);
                }
                Ok(added)
            }
            Stack::Docker(d) => {
                if service != Service::Consumer {
                    bail!("only consumers scale on docker (the api publishes a fixed port)");
                }
                // `up` with more consumers creates the missing ones and leaves the rest.
                let status = d.status().await?;
                let offline = Images::offline();
                let images = if status.iter().any(|c| c.image == offline.server) {
                    offline
                } else {
                    Images::official()
                };
                let port = |s: &Option<String>| s.as_deref().and_then(port_of);
                let cfg = DockerStackConfig {
                    consumers: to,
                    api_port: port(&self.ep.api_url).unwrap_or(8000),
                    mongo_port: port(&self.ep.mongo_uri).unwrap_or(27017),
                    kafka_port: port(&self.ep.kafka_bootstrap).unwrap_or(9094),
                    partitions: self.partitions,
                    images,
                    ready_timeout: Duration::from_secs(120),
                    extra_env: Vec::new(),
                };
                d.up(&cfg, &|_| {}).await?;
                let after = self.stack.list().await?;
                Ok(after
                    .into_iter()
                    .map(|i| i.id)
                    .filter(|i| i.service == service && !before.contains(i))
                    .collect())
            }
        }
    }
}

/// The port of `http://127.0.0.1:8000`, `127.0.0.1:9094` or `mongodb://127.0.0.1:27017/?...`.
fn port_of(s: &str) -> Option<u16> {
    let after_host = s
        .rsplit_once("127.0.0.1:")
        .map(|(_, r)| r)
        .or_else(|| s.rsplit_once(':').map(|(_, r)| r))?;
    let digits: String = after_host
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn add_counts(a: &mut VerifyCounts, b: &VerifyCounts) {
    a.ledger_ok += b.ledger_ok;
    a.ledger_failed += b.ledger_failed;
    a.ledger_unknown += b.ledger_unknown;
    a.stored += b.stored;
    a.lost += b.lost;
    a.duplicated += b.duplicated;
    a.unexpected += b.unexpected;
    a.corrupted += b.corrupted;
    a.reordered += b.reordered;
    a.recovered += b.recovered;
}

fn read_report(dir: &Path) -> Result<Report> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

/// The metrics of one bench report (and its verify verdict, when it has one).
pub fn report_metrics(r: &Report) -> Metrics {
    let mut m = Metrics::new();
    let s = &r.summary;
    for (k, v) in [
        ("sent", s.sent),
        ("ok", s.ok),
        ("failed", s.failed),
        ("unknown", s.unknown),
        ("not_started", s.not_started),
        ("retried", s.retried),
    ] {
        m.insert(k.into(), v as f64);
    }
    m.insert("achieved_rate".into(), s.achieved_rate);
    for (kind, n) in &s.errors {
        m.insert(format!("errors.{kind}"), *n as f64);
    }
    let mut lat = |family: &str, p: &wiber_model::report::Percentiles| {
        if p.count == 0 {
            return;
        }
        for (stat, v) in [
            ("mean", p.mean),
            ("p50", p.p50),
            ("p90", p.p90),
            ("p99", p.p99),
            ("p999", p.p999),
            ("max", p.max),
        ] {
            m.insert(format!("{family}.{stat}"), v);
        }
    };
    lat("ack", &s.ack_ms);
    lat("service", &s.service_ms);
    if let Some(e) = &s.e2e_ms {
        lat("e2e", e);
    }
    if let Some(v) = &r.verify {
        insert_counts(&mut m, &v.counts);
    }
    m
}

fn insert_counts(m: &mut Metrics, c: &VerifyCounts) {
    for (k, v) in [
        ("lost", c.lost),
        ("duplicated", c.duplicated),
        ("unexpected", c.unexpected),
        ("corrupted", c.corrupted),
        ("reordered", c.reordered),
        ("recovered", c.recovered),
        ("stored", c.stored),
    ] {
        m.insert(k.into(), v as f64);
    }
}

/// A scenario's metrics: one segment's exactly; several segments summed (counts),
/// time-weighted (rate) or the worst segment's (latencies: conservative, as percentiles
/// of separate runs cannot be merged from their summaries).
fn metrics(
    reports: &[Report],
    durations: &[Duration],
    counts: &VerifyCounts,
    rec: &[Recovery],
) -> Metrics {
    let mut m = Metrics::new();
    let total: f64 = durations.iter().map(Duration::as_secs_f64).sum();
    for (i, r) in reports.iter().enumerate() {
        let w = durations.get(i).map_or(0.0, Duration::as_secs_f64) / total.max(f64::MIN_POSITIVE);
        for (k, v) in report_metrics(r) {
            let e = m.entry(k.clone()).or_insert(0.0);
            match threshold::kind(&k) {
                Some(threshold::Kind::Rate) => *e += v * w,
                Some(threshold::Kind::Latency) => *e = e.max(v),
                _ => *e += v,
            }
        }
    }
    insert_counts(&mut m, counts);
    if !rec.is_empty() {
        let worst = |f: fn(&Recovery) -> Option<i64>| -> Option<f64> {
            rec.iter()
                .map(f)
                .collect::<Option<Vec<i64>>>()
                .map(|v| v.into_iter().max().unwrap_or(0) as f64)
        };
        if let Some(v) = worst(|r| r.first_ack_ms) {
            m.insert("recovery.first_ack".into(), v);
        }
        if let Some(v) = worst(|r| r.lag_zero_ms) {
            m.insert("recovery.lag_zero".into(), v);
        }
    }
    m
}

/// Metrics compared with `--baseline`.
const COMPARED: [&str; 12] = [
    "achieved_rate",
    "ok",
    "unknown",
    "lost",
    "duplicated",
    "ack.p50",
    "ack.p99",
    "ack.max",
    "service.p99",
    "e2e.p99",
    "recovery.first_ack",
    "recovery.lag_zero",
];

fn compare(base: &Metrics, run: &Metrics) -> Vec<Comparison> {
    COMPARED
        .iter()
        .filter_map(|k| {
            let (b, r) = (*base.get(*k)?, *run.get(*k)?);
            Some(Comparison {
                metric: k.to_string(),
                baseline: b,
                run: r,
                change_pct: (b != 0.0).then(|| ((r - b) / b * 1000.0).round() / 10.0),
            })
        })
        .collect()
}

/// Reads a baseline: a scenario run directory or its `scenario.json`, or a bench run
/// directory or its `report.json`.
pub fn load_baseline(path: &Path) -> Result<Metrics> {
    let file = if path.is_dir() {
        [path.join("scenario.json"), path.join("report.json")]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{} has neither scenario.json nor report.json: pass a scenario or bench run directory", path.display()))?
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the baseline {}", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the baseline {} is not JSON", file.display()))?;
    if let Some(m) = v.get("metrics") {
        return serde_json::from_value(m.clone())
            .with_context(|| format!("the metrics of {} are not numbers", file.display()));
    }
    let r: Report = serde_json::from_value(v).map_err(|e| {
        anyhow!(
            "the baseline {} is neither a scenario.json nor a bench report.json: {e}",
            file.display()
        )
    })?;
    Ok(report_metrics(&r))
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

fn write_outputs(dir: &Path, out: &Outcome) -> Result<()> {
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    w("scenario.json", serde_json::to_string_pretty(out)?)?;
    w("junit.xml", super::junit::render(&[out.junit()]))?;
    w("summary.md", super::print::markdown(out))
}
