//! `stack up|down|status|logs`: bring the whole stack up on Docker (default) or as local
//! processes, take it down, and show how it is doing.
//!
//! Also home of [`Stack`], the runtime a command acts on (Docker or local), and of
//! [`open`], which finds an existing stack of a project; `chaos` uses both.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::client::ApiClient;
use crate::exit::{self, Outcome};
use crate::kafka;
use crate::output;
use crate::provision;
use crate::runtime::docker::{self, DockerStack, DockerStackConfig, Endpoints, Images, UpProgress};
use crate::runtime::local::{LocalStack, LocalStackConfig, Ownership};
use crate::runtime::{InstanceId, InstanceInfo, Runtime, Service, Signal};

/// Which runtime runs the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Containers on the local Docker engine (bollard).
    Docker,
    /// Plain processes on 127.0.0.1 (no Docker needed); state in .wiber/stacks/<project>.
    Local,
}

/// Which images `stack up` uses (Docker runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageChoice {
    /// apache/kafka, mongo:7 and our server image built from docker/Dockerfile.server.
    Official,
    /// The :offline images of docker/offline/build.sh (built when missing).
    Offline,
    /// Official when they are present or can be pulled (bounded attempt), else offline.
    Auto,
}

/// Selects the stack: project name and runtime.
#[derive(Debug, Clone, Args)]
pub struct StackRef {
    /// Project name: prefix of container, network and volume names (and the local state dir).
    #[arg(long, env = "WIBER_PROJECT", default_value = docker::DEFAULT_PROJECT)]
    pub project: String,
    /// Runtime. `up` defaults to docker; the other commands find the project's stack
    /// (a docker stack if the engine has one, else a local one).
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
}

#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Create and start the stack (network, volumes, containers) and wait until healthy.
    #[command(
        after_help = "Exit codes: 0 the stack is up and healthy; 2 it could not be brought up \
(the failing service's last log lines are printed).\n\n\
Examples:\n  wiberctl stack up\n  wiberctl stack up --consumers 3 --images offline\n  \
wiberctl stack up --project t1 --api-port 18000 --mongo-port 37017 --kafka-port 19094\n  \
wiberctl stack up --runtime local"
    )]
    Up(UpArgs),
    /// Stop and remove the stack's containers and network (processes, for --runtime local).
    #[command(after_help = "Exit codes: 0 removed (or nothing to remove); 2 a removal failed.")]
    Down {
        #[command(flatten)]
        stack: StackRef,
        /// Also remove the data volumes (Kafka's log, MongoDB's data): the next `up` starts empty.
        #[arg(long)]
        volumes: bool,
    },
    /// Each instance's state, health, uptime and restarts; API readiness; consumer lag.
    #[command(
        after_help = "Exit codes: 0 every instance runs (healthy where it has a healthcheck, \
attached to the stack network) and the API is ready; 1 otherwise; 2 no stack found or the engine is unreachable.\n\n\
--json: {\"containers\": [{\"service\", \"instance\", \"index\", \"state\", \"health\", \"network\", \
\"restarts\", \"uptime_s\", ...}], \"api\": {...}, \"lag\": [{\"partition\", \"lag\", ...}], \"total_lag\", \"ok\"}"
    )]
    Status {
        #[command(flatten)]
        stack: StackRef,
    },
    /// The last log lines of a service (all its instances) or one instance (consumer#2).
    Logs {
        #[command(flatten)]
        stack: StackRef,
        /// kafka, mongo, api, consumer, or an instance such as consumer#2.
        service: String,
        /// How many lines per instance.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackRef,
    /// Number of consumer instances.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub consumers: u32,
    /// Images (docker runtime).
    #[arg(long, value_enum, env = "WIBER_IMAGES", default_value = "auto")]
    pub images: ImageChoice,
    /// Host port of the API (published on 127.0.0.1).
    #[arg(long, default_value_t = 8000)]
    pub api_port: u16,
    /// Host port of MongoDB / FerretDB (published on 127.0.0.1).
    #[arg(long, default_value_t = 27017)]
    pub mongo_port: u16,
    /// Host port of Kafka's external listener (published on 127.0.0.1).
    #[arg(long, default_value_t = 9094)]
    pub kafka_port: u16,
    /// Partitions of the topic (KAFKA_PARTITIONS of the services).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub partitions: u32,
    /// How long to wait for the stack to become healthy, e.g. 3m.
    #[arg(long, default_value = "4m", value_parser = crate::app::parse_duration)]
    pub wait: Duration,
}

pub async fn run(cmd: StackCmd, json: bool) -> Result<Outcome> {
    match cmd {
        StackCmd::Up(args) => up(args, json).await,
        StackCmd::Down { stack, volumes } => down(&stack, volumes, json).await,
        StackCmd::Status { stack } => status(&stack, json).await,
        StackCmd::Logs {
            stack,
            service,
            tail,
        } => logs(&stack, &service, tail).await,
    }
}

// --- the runtime a command acts on ---------------------------------------------------

/// A stack on either runtime; implements [`Runtime`] by delegation.
pub enum Stack {
    Docker(DockerStack),
    /// Boxed: a local stack carries its whole state (much larger than a docker client).
    Local(Box<LocalStack>),
}

impl Stack {
    pub fn kind(&self) -> &'static str {
        match self {
            Stack::Docker(_) => "docker",
            Stack::Local(_) => "local",
        }
    }

    pub async fn endpoints(&self) -> Result<Endpoints> {
        match self {
            Stack::Docker(d) => d.endpoints().await,
            Stack::Local(l) => {
                let c = l.config();
                Ok(Endpoints {
                    api_url: Some(l.api_url()),
                    kafka_bootstrap: Some(l.bootstrap()),
                    mongo_uri: Some(l.mongo_uri()),
                    topic: c.topic,
                    group: c.consumer_group,
                })
            }
        }
    }
}

impl Runtime for Stack {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        match self {
            Stack::Docker(s) => s.list().await,
            Stack::Local(s) => s.list().await,
        }
    }
    async fn kill(&self, id: &InstanceId, sig: Signal) -> Result<()> {
        match self {
            Stack::Docker(s) => s.kill(id, sig).await,
            Stack::Local(s) => s.kill(id, sig).await,
        }
    }
    async fn stop(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.stop(id).await,
            Stack::Local(s) => s.stop(id).await,
        }
    }
    async fn start(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.start(id).await,
            Stack::Local(s) => s.start(id).await,
        }
    }
    async fn restart(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.restart(id).await,
            Stack::Local(s) => s.restart(id).await,
        }
    }
    async fn pause(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.pause(id).await,
            Stack::Local(s) => s.pause(id).await,
        }
    }
    async fn unpause(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.unpause(id).await,
            Stack::Local(s) => s.unpause(id).await,
        }
    }
    async fn disconnect(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.disconnect(id).await,
            Stack::Local(s) => s.disconnect(id).await,
        }
    }
    async fn reconnect(&self, id: &InstanceId) -> Result<()> {
        match self {
            Stack::Docker(s) => s.reconnect(id).await,
            Stack::Local(s) => s.reconnect(id).await,
        }
    }
    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String> {
        match self {
            Stack::Docker(s) => s.logs(id, tail).await,
            Stack::Local(s) => s.logs(id, tail).await,
        }
    }
}

/// No stack of the project exists (on the runtime asked for, or on any).
#[derive(Debug, thiserror::Error)]
#[error(
    "no stack found for project {project:?}: run `wiberctl stack up --project {project}`{detail}"
)]
pub struct NoStack {
    pub project: String,
    /// Why docker was not considered, when it was not.
    pub detail: String,
}

/// `.wiber/stacks/<project>` under the repository root: a local stack's directory.
fn local_dir(project: &str) -> Result<PathBuf> {
    docker::validate_project(project)?;
    Ok(provision::repo_root()?
        .join(".wiber")
        .join("stacks")
        .join(project))
}

/// Finds the project's stack: the runtime asked for, else a docker stack if the engine
/// answers and has one, else a local stack's state dir.
pub async fn open(r: &StackRef) -> Result<Stack> {
    match r.runtime {
        Some(RuntimeKind::Docker) => {
            let d = DockerStack::connect(&r.project).await?;
            if !d.exists().await? {
                return Err(NoStack {
                    project: r.project.clone(),
                    detail: " (no containers on the docker engine)".into(),
                }
                .into());
            }
            Ok(Stack::Docker(d))
        }
        Some(RuntimeKind::Local) => {
            let dir = local_dir(&r.project)?;
            if !dir.join("state.json").is_file() {
                let detail = format!(" --runtime local (no {})", dir.join("state.json").display());
                return Err(NoStack {
                    project: r.project.clone(),
                    detail,
                }
                .into());
            }
            Ok(Stack::Local(Box::new(LocalStack::load(&dir)?)))
        }
        None => {
            let docker_err = match DockerStack::connect(&r.project).await {
                Ok(d) => match d.exists().await {
                    Ok(true) => return Ok(Stack::Docker(d)),
                    Ok(false) => None,
                    Err(e) => Some(e),
                },
                Err(e) => Some(e),
            };
            let dir = local_dir(&r.project)?;
            if dir.join("state.json").is_file() {
                return Ok(Stack::Local(Box::new(LocalStack::load(&dir)?)));
            }
            let detail = docker_err
                .map(|e| format!(" (docker: {e:#})"))
                .unwrap_or_default();
            Err(NoStack {
                project: r.project.clone(),
                detail,
            }
            .into())
        }
    }
}

// --- up ------------------------------------------------------------------------------

/// Brings the stack up (or finds it up) and waits until it is healthy.
pub async fn up(args: UpArgs, json: bool) -> Result<Outcome> {
    docker::validate_project(&args.stack.project)?;
    let t0 = std::time::Instant::now();
    let (runtime, detail) = match args.stack.runtime.unwrap_or(RuntimeKind::Docker) {
        RuntimeKind::Docker => ("docker", up_docker(&args, json).await?),
        RuntimeKind::Local => ("local", up_local(&args).await?),
    };
    let secs = t0.elapsed().as_secs_f64();
    // The stack's own endpoints, not the flags: a warm `up` keeps what already runs.
    let ep = open(&StackRef {
        project: args.stack.project.clone(),
        runtime: Some(match runtime {
            "docker" => RuntimeKind::Docker,
            _ => RuntimeKind::Local,
        }),
    })
    .await?
    .endpoints()
    .await?;
    let none = || "-".to_string();
    if json {
        output::json(&serde_json::json!({
            "project": args.stack.project, "runtime": runtime, "ok": true,
            "seconds": (secs * 10.0).round() / 10.0, "detail": detail,
            "api_url": ep.api_url, "mongo_uri": ep.mongo_uri, "kafka_bootstrap": ep.kafka_bootstrap,
        }));
    } else {
        eprintln!(
            "stack {:?} ({runtime}) is up and healthy in {secs:.1} s: API {}, MongoDB {}, Kafka {}",
            args.stack.project,
            ep.api_url.unwrap_or_else(none),
            ep.mongo_uri.unwrap_or_else(none),
            ep.kafka_bootstrap.unwrap_or_else(none),
        );
    }
    Ok(exit::PASS)
}

async fn up_docker(args: &UpArgs, json: bool) -> Result<serde_json::Value> {
    let d = DockerStack::connect(&args.stack.project).await?;
    let images = resolve_images(&d, args.images, json).await?;
    let cfg = DockerStackConfig {
        consumers: args.consumers,
        api_port: args.api_port,
        mongo_port: args.mongo_port,
        kafka_port: args.kafka_port,
        partitions: args.partitions,
        images: images.clone(),
        ready_timeout: args.wait,
        extra_env: Vec::new(),
    };
    let bar = spinner(json, "bringing the stack up");
    let report = d
        .up(&cfg, &|p| match p {
            UpProgress::Container { id, action } => {
                say(&bar, json, format!("  {:<12} {action}", id.to_string()))
            }
            UpProgress::Waiting { id, state, health } => {
                bar.set_message(format!("waiting for {id}: {state}, health {health}"))
            }
            UpProgress::Ready { id } => say(&bar, json, format!("  {:<12} ready", id.to_string())),
        })
        .await;
    bar.finish_and_clear();
    let report = report?;
    if !report.extra.is_empty() && !json {
        eprintln!(
            "note: instances not asked for are left running: {} (`wiberctl stack down` removes everything)",
            report.extra.join(", ")
        );
    }
    Ok(serde_json::json!({ "images": images, "containers": report }))
}

/// Picks the images per `--images`, pulling or building what is missing.
async fn resolve_images(d: &DockerStack, choice: ImageChoice, json: bool) -> Result<Images> {
    let official = Images::official();
    match choice {
        ImageChoice::Offline => ensure_offline(d, json).await,
        ImageChoice::Official => {
            ensure_official(d, &official, Duration::from_secs(600)).await?;
            Ok(official)
        }
        ImageChoice::Auto => {
            // A short bound: where no registry is reachable the attempt must not stall `up`.
            match ensure_official(d, &official, Duration::from_secs(20)).await {
                Ok(()) => Ok(official),
                Err(e) => {
                    eprintln!(
                        "official images unavailable ({e:#}); using the offline images instead"
                    );
                    ensure_offline(d, json).await
                }
            }
        }
    }
}

/// Pulls the official kafka and mongo images (all pulls within `pull_budget`) and builds
/// our server image when missing.
async fn ensure_official(d: &DockerStack, images: &Images, pull_budget: Duration) -> Result<()> {
    let pulls = async {
        for image in [&images.kafka, &images.mongo] {
            if !d.image_present(image).await {
                eprintln!("pulling {image}");
                d.pull(image, pull_budget).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(pull_budget, pulls)
        .await
        .map_err(|_| {
            anyhow::anyhow!("pulling the official images did not finish within {pull_budget:?}")
        })??;
    if !d.image_present(&images.server).await {
        // Our server image: the prebuilt release binary on debian:bookworm-slim, as the
        // compose file builds it (legacy builder: the client here has no buildx).
        let root = provision::repo_root()?;
        let bin = root.join("target/release/wiber-server");
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p wiber-server` (the official path copies it into {})",
                bin.display(),
                images.server
            );
        }
        eprintln!("building {} from docker/Dockerfile.server", images.server);
        run_script(
            std::process::Command::new("docker")
                .current_dir(&root)
                .env("DOCKER_BUILDKIT", "0")
                .args([
                    "build",
                    "-f",
                    "docker/Dockerfile.server",
                    "-t",
                    &images.server,
                    ".",
                ]),
            "docker build of the server image",
        )?;
    }
    Ok(())
}

/// Uses the :offline images, running docker/offline/build.sh for the missing ones.
async fn ensure_offline(d: &DockerStack, json: bool) -> Result<Images> {
    let images = Images::offline();
    let mut missing = Vec::new();
    for (what, image) in [
        ("kafka", &images.kafka),
        ("ferretdb", &images.mongo),
        ("server", &images.server),
    ] {
        if !d.image_present(image).await {
            missing.push(what);
        }
    }
    if !missing.is_empty() {
        let root = provision::repo_root()?;
        let mut cmd = std::process::Command::new(root.join("docker/offline/build.sh"));
        cmd.args(["--only", &missing.join(",")]).current_dir(&root);
        if missing.contains(&"server") && std::env::var_os("WIBER_SERVER_BIN").is_none() {
            // Prefer the release binary (what build.sh expects), else a debug build.
            let release = root.join("target/release/wiber-server");
            let debug = root.join("target/debug/wiber-server");
            if !release.is_file() && debug.is_file() {
                eprintln!(
                    "note: no release build of wiber-server; the image gets {}",
                    debug.display()
                );
                cmd.env("WIBER_SERVER_BIN", debug);
            }
        }
        eprintln!(
            "building the offline images {} with docker/offline/build.sh",
            missing.join(", ")
        );
        // The build script's output goes to stderr so that --json stays parseable.
        run_script(&mut cmd, "docker/offline/build.sh")?;
    }
    if !json {
        eprintln!(
            "using the offline images ({}, {}, {})",
            images.kafka, images.mongo, images.server
        );
    }
    Ok(images)
}

fn run_script(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    let status = cmd
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its output above");
    }
    Ok(())
}

async fn up_local(args: &UpArgs) -> Result<serde_json::Value> {
    let project = &args.stack.project;
    let dir = local_dir(project)?;
    let root = provision::repo_root()?;
    let bar = spinner(
        false,
        "provisioning Kafka and FerretDB (minutes on the first run)",
    );
    let prov = tokio::task::spawn_blocking(move || provision::ensure(&root)).await??;
    bar.set_message("starting the local stack");
    let result = async {
        if dir.join("state.json").is_file() {
            // Re-open and start whatever is not running (start is a no-op otherwise).
            let stack = LocalStack::load(&dir)?;
            let have = stack.list().await?;
            for info in &have {
                bar.set_message(format!("starting {}", info.id));
                stack.start(&info.id).await?;
            }
            let consumers = have
                .iter()
                .filter(|i| i.id.service == Service::Consumer)
                .count() as u32;
            for _ in consumers..args.consumers {
                let id = stack.add_instance(Service::Consumer).await?;
                say(&bar, false, format!("  {:<12} added", id.to_string()));
            }
            anyhow::Ok(serde_json::json!({"dir": dir, "reused": true}))
        } else {
            let mut cfg = LocalStackConfig::new(&dir);
            cfg.consumers = args.consumers;
            cfg.apis = 1;
            cfg.api_port = args.api_port;
            cfg.mongo_port = args.mongo_port;
            cfg.kafka_port = args.kafka_port;
            cfg.partitions = args.partitions;
            cfg.ownership = Ownership::Detached;
            tokio::time::timeout(args.wait, LocalStack::up(cfg, &prov))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the local stack did not come up within {:?}", args.wait)
                })??;
            Ok(serde_json::json!({"dir": dir, "reused": false}))
        }
    }
    .await;
    bar.finish_and_clear();
    result
}

fn spinner(hidden: bool, msg: &str) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("valid template"),
    );
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A progress line: above the spinner on a terminal; plain on stderr otherwise (indicatif
/// draws nothing when stderr is not a terminal, and CI logs should still show progress).
fn say(bar: &ProgressBar, json: bool, line: String) {
    if !bar.is_hidden() {
        bar.println(line);
    } else if !json {
        eprintln!("{line}");
    }
}

// --- down ----------------------------------------------------------------------------

async fn down(r: &StackRef, volumes: bool, json: bool) -> Result<Outcome> {
    let stack = match open(r).await {
        Ok(s) => s,
        Err(e) if e.downcast_ref::<NoStack>().is_some() => {
            if json {
                output::json(
                    &serde_json::json!({"project": r.project, "removed": false, "note": format!("{e:#}")}),
                );
            } else {
                eprintln!("nothing to take down: {e:#}");
            }
            return Ok(exit::PASS);
        }
        Err(e) => return Err(e),
    };
    let summary = match &stack {
        Stack::Docker(d) => serde_json::to_value(d.down(volumes).await?)?,
        Stack::Local(l) => {
            l.down().await?;
            let dir = l.dir().to_path_buf();
            if volumes {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            serde_json::json!({"dir": dir, "removed_data": volumes})
        }
    };
    if json {
        output::json(
            &serde_json::json!({"project": r.project, "runtime": stack.kind(), "removed": true, "detail": summary}),
        );
    } else {
        eprintln!(
            "stack {:?} ({}) is down{}",
            r.project,
            stack.kind(),
            if volumes {
                ", data removed"
            } else {
                "; data kept (add --volumes to remove it)"
            }
        );
    }
    Ok(exit::PASS)
}

// --- status --------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct ContainerRow {
    service: String,
    /// e.g. `consumer#2` (what `chaos` takes as TARGET).
    instance: String,
    index: u32,
    /// As Docker names it: running, paused, exited, restarting, created, dead.
    state: String,
    /// healthy, unhealthy, starting, or none (no healthcheck / local runtime).
    health: String,
    /// connected or disconnected (from the stack's network).
    network: String,
    restarts: u32,
    uptime_s: Option<i64>,
    started_at: Option<String>,
    /// Container id (docker) or pid (local).
    container: String,
    address: String,
}

#[derive(Debug, Serialize)]
struct LagRow {
    partition: i32,
    lag: i64,
    committed: Option<i64>,
    high: i64,
}

async fn status(r: &StackRef, json: bool) -> Result<Outcome> {
    let stack = open(r).await?;
    let rows: Vec<ContainerRow> = match &stack {
        Stack::Docker(d) => d
            .status()
            .await?
            .into_iter()
            .map(|s| row(s.info, s.health, s.connected))
            .collect(),
        Stack::Local(l) => l
            .list()
            .await?
            .into_iter()
            .map(|i| row(i, "none".into(), true))
            .collect(),
    };
    let ep = stack.endpoints().await?;
    let (api_json, api_ready) = match &ep.api_url {
        Some(url) => {
            let api = ApiClient::new(url, Duration::from_secs(3))?;
            match api.readiness().await {
                Ok((code, rd)) => (
                    serde_json::json!({"url": url, "ready": code == 200, "status": rd.status, "kafka": rd.kafka, "mongodb": rd.mongodb}),
                    code == 200,
                ),
                Err(e) => (
                    serde_json::json!({"url": url, "ready": false, "error": e.to_string()}),
                    false,
                ),
            }
        }
        None => (
            serde_json::json!({"ready": false, "error": "no api instance with a published port"}),
            false,
        ),
    };
    let (lag, lag_error) = match &ep.kafka_bootstrap {
        Some(b) => match kafka::group_lag(b, &ep.group, &ep.topic, Duration::from_secs(5)).await {
            Ok(l) => (l, None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        },
        None => (
            Vec::new(),
            Some("no kafka instance with a published port".to_string()),
        ),
    };
    let lag_rows: Vec<LagRow> = lag
        .iter()
        .map(|l| LagRow {
            partition: l.partition,
            lag: l.lag,
            committed: l.committed,
            high: l.high,
        })
        .collect();
    let all_up = !rows.is_empty()
        && rows.iter().all(|c| {
            c.state == "running"
                && matches!(c.health.as_str(), "healthy" | "none")
                && c.network == "connected"
        });
    let ok = all_up && api_ready;
    if json {
        output::json(&serde_json::json!({
            "project": r.project, "runtime": stack.kind(), "ok": ok,
            "containers": rows, "api": api_json,
            "topic": ep.topic, "group": ep.group,
            "lag": lag_rows, "total_lag": kafka::total(&lag), "lag_error": lag_error,
        }));
    } else {
        let mut t = output::table(&[
            "service",
            "instance",
            "state",
            "health",
            "network",
            "uptime",
            "restarts",
            "container",
            "address",
        ]);
        for c in &rows {
            t.add_row(vec![
                c.service.clone(),
                c.instance.clone(),
                c.state.clone(),
                c.health.clone(),
                c.network.clone(),
                c.uptime_s.map(uptime).unwrap_or_else(|| "-".into()),
                c.restarts.to_string(),
                c.container.clone(),
                c.address.clone(),
            ]);
        }
        println!("stack {:?} ({})\n{t}", r.project, stack.kind());
        let api_line = match (api_json.get("ready"), api_json.get("error")) {
            (_, Some(e)) => format!("not reachable: {}", e.as_str().unwrap_or_default()),
            (Some(serde_json::Value::Bool(true)), _) => "ready".into(),
            _ => format!(
                "not ready (kafka {}, mongodb {})",
                api_json["kafka"], api_json["mongodb"]
            ),
        };
        println!("api: {api_line}");
        match lag_error {
            Some(e) => println!("lag of group {}: unknown ({e})", ep.group),
            None => {
                let mut lt = output::table(&["partition", "committed", "end", "lag"]);
                for l in &lag_rows {
                    lt.add_row(vec![
                        l.partition.to_string(),
                        l.committed.map_or("-".into(), |c| c.to_string()),
                        l.high.to_string(),
                        l.lag.to_string(),
                    ]);
                }
                println!(
                    "lag of group {} on {} (total {}):\n{lt}",
                    ep.group,
                    ep.topic,
                    kafka::total(&lag)
                );
            }
        }
    }
    Ok(if ok { exit::PASS } else { exit::FAIL })
}

fn row(i: InstanceInfo, health: String, connected: bool) -> ContainerRow {
    let running = matches!(i.state.as_str(), "running" | "paused");
    ContainerRow {
        service: i.id.service.name().to_string(),
        instance: i.id.to_string(),
        index: i.id.index,
        uptime_s: i
            .started_at
            .filter(|_| running)
            .map(|t| (chrono::Utc::now() - t).num_seconds().max(0)),
        started_at: i.started_at.map(|t| t.to_rfc3339()),
        state: i.state,
        health,
        network: if connected {
            "connected"
        } else {
            "disconnected"
        }
        .to_string(),
        restarts: i.restarts,
        container: i.pid_or_container,
        address: i.address,
    }
}

fn uptime(s: i64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

// --- logs ----------------------------------------------------------------------------

async fn logs(r: &StackRef, what: &str, tail: usize) -> Result<Outcome> {
    let stack = open(r).await?;
    let ids: Vec<InstanceId> = if what.contains('#') {
        vec![what.parse()?]
    } else {
        let service: Service = what.parse()?;
        let ids: Vec<InstanceId> = stack
            .list()
            .await?
            .into_iter()
            .map(|i| i.id)
            .filter(|id| id.service == service)
            .collect();
        if ids.is_empty() {
            bail!("stack {:?} has no {service} instance", r.project);
        }
        ids
    };
    for id in &ids {
        let text = stack.logs(id, tail).await?;
        if ids.len() > 1 {
            println!("==> {id} <==");
        }
        print!("{text}");
        if !text.ends_with('\n') && !text.is_empty() {
            println!();
        }
    }
    Ok(exit::PASS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::docker::ImageFlavor;

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(65), "1m 5s");
        assert_eq!(uptime(3700), "1h 1m");
    }

    #[test]
    fn images_are_the_offline_tags() {
        assert_eq!(Images::offline().flavor, ImageFlavor::Offline);
        assert!(Images::offline()
            .all()
            .iter()
            .all(|i| i.ends_with(":offline")));
    }
}
