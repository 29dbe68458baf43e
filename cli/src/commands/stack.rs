//! `stack up|down|status|logs`: flags → [`crate::runtime::Stack`], then the rendering.
//! What a stack is and how it comes up lives in the runtime; this file only asks and
//! prints.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::args::{StackArgs, UpFlags};
use crate::exit::{self, Exit};
use crate::kafka;
use crate::output;
use crate::runtime::health::{self, ApiReadiness};
use crate::runtime::{InstanceId, InstanceStatus, NoStack, Service, Stack, StackSpec, UpEvent};

#[derive(Debug, Subcommand)]
pub enum StackCmd {
    /// Create and start the stack (network, volumes, containers) and wait until healthy.
    #[command(
        after_help = "Exit codes: 0 the stack is up and healthy; 2 it could not be brought up \
(the failing service's last log lines are printed).\n\n\
Examples:\n  wiberctl stack up\n  wiberctl stack up --consumers 3 --images offline\n  \
wiberctl stack up --project t1 --api-port 18000 --mongo-port 37017 --kafka-port 19094 --postgres-port 15433\n  \
wiberctl stack up --runtime local"
    )]
    Up(UpArgs),
    /// Stop and remove the stack's containers and network (processes, for --runtime local).
    #[command(after_help = "Exit codes: 0 removed (or nothing to remove); 2 a removal failed.")]
    Down {
        #[command(flatten)]
        stack: StackArgs,
        /// Also remove the data volumes (Kafka's log, the store's data): the next `up` starts empty.
        #[arg(long)]
        volumes: bool,
    },
    /// Each instance's state, health, uptime and restarts; API readiness; consumer lag.
    #[command(
        after_help = "Exit codes: 0 every instance runs (healthy where it has a healthcheck, \
attached to the stack network), the API is ready and no partition is stalled; 1 otherwise; 2 no stack found or the engine is unreachable.\n\n\
A partition is stalled when its consumer reports (in the group's committed offset) that it cannot get past a record \
while records wait behind it: `stalled p3@1042 for 2m (N attempts, consumer#1): <the store's error>`.\n\n\
--json: {\"containers\": [{\"service\", \"instance\", \"index\", \"state\", \"health\", \"network\", \
\"restarts\", \"uptime_s\", ...}], \"api\": {...}, \"lag\": [{\"partition\", \"lag\", \"stalled\", \"stall\", ...}], \"total_lag\", \"problems\", \"ok\"}"
    )]
    Status {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// The last log lines of a service (all its instances) or one instance (consumer#2).
    Logs {
        #[command(flatten)]
        stack: StackArgs,
        /// kafka, postgres, mongo, api, consumer, or an instance such as consumer#2.
        service: String,
        /// How many lines per instance.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Number of consumer instances.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub consumers: u32,
    /// Partitions of the topic (KAFKA_PARTITIONS of the services).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub partitions: u32,
    /// Kafka brokers: combined KRaft nodes that all vote; topics get min(brokers, 3)
    /// replicas and accept writes while all but one are in sync. 3 for leader, controller
    /// and network faults; 1 (the default) is lightest on a small machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=crate::runtime::cluster::MAX_BROKERS as i64))]
    pub brokers: u32,
    /// `unsafe`: acks=1, min.insync.replicas=1 and unclean leader election, to show the
    /// harness catching Kafka-level loss. Never for real data.
    #[arg(long, value_enum, default_value_t = crate::runtime::Profile::Safe)]
    pub profile: crate::runtime::Profile,
    #[command(flatten)]
    pub up: UpFlags,
}

pub async fn run(cmd: StackCmd, json: bool) -> Result<Exit> {
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

// --- up ------------------------------------------------------------------------------

/// Brings the stack up (or finds it up), waits until it is healthy, says where it is.
/// Also what `demo` runs.
pub async fn up(args: UpArgs, json: bool) -> Result<Exit> {
    let t0 = std::time::Instant::now();
    let spec = StackSpec {
        consumers: args.consumers,
        partitions: args.partitions,
        cluster: crate::runtime::Cluster {
            brokers: args.brokers,
            profile: args.profile,
        },
        ports: args.up.ports(),
        images: args.up.images,
        wait: args.up.wait,
        extra_env: args.up.service_env.clone(),
    };
    let loc = args.stack.locator();
    let bar = spinner(json, "bringing the stack up");
    let result = Stack::up(&loc, &spec, &|e| show_progress(&bar, json, e)).await;
    bar.finish_and_clear();
    let (stack, detail) = result?;
    let secs = t0.elapsed().as_secs_f64();
    // The stack's own endpoints, not the flags: a warm `up` keeps what already runs.
    let ep = stack.endpoints().await?;
    let none = || "-".to_string();
    if json {
        output::json(&serde_json::json!({
            "project": loc.project, "runtime": stack.kind(), "ok": true,
            "seconds": (secs * 10.0).round() / 10.0, "detail": detail,
            "api_url": ep.api_url, "mongo_uri": ep.mongo_uri, "kafka_bootstrap": ep.kafka_bootstrap,
            "postgres_url": ep.postgres_url,
        }));
    } else {
        // A stack on MongoDB itself (official images) has no PostgreSQL to name.
        let postgres = ep
            .postgres_url
            .map(|u| format!(", PostgreSQL {u}"))
            .unwrap_or_default();
        eprintln!(
            "stack {:?} ({}) is up and healthy in {secs:.1} s: API {}, MongoDB {}, Kafka {}{postgres}",
            loc.project,
            stack.kind(),
            ep.api_url.unwrap_or_else(none),
            ep.mongo_uri.unwrap_or_else(none),
            ep.kafka_bootstrap.unwrap_or_else(none),
        );
    }
    Ok(exit::PASS)
}

/// Renders one step of `up` above the spinner (or as a plain line off a terminal).
fn show_progress(bar: &ProgressBar, json: bool, e: UpEvent) {
    match e {
        UpEvent::Note(n) => say(bar, json, n),
        UpEvent::Instance { id, action } => say(
            bar,
            json,
            format!("  {:<12} {}", id.to_string(), action.name()),
        ),
        UpEvent::Waiting { id, state, health } => {
            bar.set_message(format!("waiting for {id}: {state}, health {health}"))
        }
        UpEvent::Ready { id } => say(bar, json, format!("  {:<12} ready", id.to_string())),
    }
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

async fn down(r: &StackArgs, volumes: bool, json: bool) -> Result<Exit> {
    let stack = match Stack::open(&r.locator()).await {
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
    let summary = stack.down(volumes).await?;
    let healed = summary["healed"].as_array().map_or(0, Vec::len);
    if healed > 0 && !json {
        eprintln!("healed {healed} network fault(s) first");
    }
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
    /// `stalled p3@1042 for 2m (...): <error>` while the partition is stalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    stalled: Option<String>,
    /// The consumer's stall report behind `stalled` (instance, offset, since, attempts,
    /// error), as it committed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    stall: Option<wiber_model::contract::StallReport>,
}

async fn status(r: &StackArgs, json: bool) -> Result<Exit> {
    let stack = Stack::open(&r.locator()).await?;
    let report = health::check(&stack, &stack.endpoints().await?).await?;
    let rows: Vec<ContainerRow> = report.instances.iter().map(row).collect();
    let ep = &report.endpoints;
    let api_json = match (&report.api, &ep.api_url) {
        (ApiReadiness::Ready, url) => {
            serde_json::json!({"url": url, "ready": true, "status": "ready"})
        }
        (
            ApiReadiness::NotReady {
                status,
                kafka,
                mongodb,
            },
            url,
        ) => serde_json::json!({
            "url": url, "ready": false, "http_status": status, "kafka": kafka, "mongodb": mongodb,
        }),
        (ApiReadiness::Unreachable(e), url) => {
            serde_json::json!({"url": url, "ready": false, "error": e})
        }
        (ApiReadiness::NoApi, _) => serde_json::json!({
            "ready": false, "error": "no api instance with a published port",
        }),
    };
    let (lag, lag_error) = match &report.lag {
        Ok(l) => (l.clone(), None),
        Err(e) => (Vec::new(), Some(e.clone())),
    };
    let now_ms = wiber_model::now_ms();
    let lag_rows: Vec<LagRow> = lag
        .iter()
        .map(|l| {
            let stalled = l.stall_line(now_ms);
            LagRow {
                partition: l.partition,
                lag: l.lag,
                committed: l.committed,
                high: l.high,
                stall: stalled.as_ref().and(l.stall.clone()),
                stalled,
            }
        })
        .collect();
    let problems = report.problems_at(false, now_ms);
    let ok = problems.is_empty();
    let faults = stack.active_faults()?;
    // A cluster's partitions: who leads each and who is in sync (what leader and ISR
    // faults change). One broker leads everything, so it is shown for clusters only.
    let brokers = rows.iter().filter(|c| c.service == "kafka").count();
    let partitions = match (&ep.kafka_bootstrap, brokers > 1) {
        (Some(b), true) => {
            kafka::cluster::describe_topic(b, &ep.names.topic, Duration::from_secs(5)).await
        }
        _ => Ok(Vec::new()),
    };
    let (partitions, partitions_error) = match partitions {
        Ok(p) => (p, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    if json {
        output::json(&serde_json::json!({
            "project": r.project, "runtime": stack.kind(), "ok": ok, "problems": problems,
            "network_faults": faults, "partitions": partitions, "partitions_error": partitions_error,
            "containers": rows, "api": api_json,
            "topic": ep.names.topic, "group": ep.names.group,
            "database": ep.names.db, "collection": ep.names.collection,
            "postgres_url": ep.postgres_url,
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
        let api_line = match &report.api {
            ApiReadiness::Ready => "ready".to_string(),
            ApiReadiness::NotReady { kafka, mongodb, .. } => {
                format!("not ready (kafka {kafka}, mongodb {mongodb})")
            }
            ApiReadiness::Unreachable(e) => format!("not reachable: {e}"),
            ApiReadiness::NoApi => "not reachable: no api instance with a published port".into(),
        };
        println!("api: {api_line}");
        if faults.is_empty() {
            println!("network faults: none");
        } else {
            println!("network faults (heal with `wiberctl chaos heal`):");
            for f in &faults {
                let until = f
                    .until
                    .map(|u| format!(", until {}", u.format("%H:%M:%S")))
                    .unwrap_or_else(|| ", until healed".into());
                println!(
                    "  {} since {}{until}",
                    f.describe(),
                    f.applied_at.format("%H:%M:%S")
                );
            }
        }
        if let Some(e) = &partitions_error {
            println!("partitions of {}: unknown ({e})", ep.names.topic);
        } else if !partitions.is_empty() {
            let mut pt = output::table(&["partition", "leader", "replicas", "in sync"]);
            let ids = |v: &[i32]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for p in &partitions {
                pt.add_row(vec![
                    p.partition.to_string(),
                    p.leader.map_or("none".into(), |l| format!("kafka#{l}")),
                    ids(&p.replicas),
                    ids(&p.isr),
                ]);
            }
            println!(
                "partitions of {}:
{pt}",
                ep.names.topic
            );
        }
        match lag_error {
            Some(e) => println!("lag of group {}: unknown ({e})", ep.names.group),
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
                    ep.names.group,
                    ep.names.topic,
                    kafka::total(&lag)
                );
                for line in lag_rows.iter().filter_map(|l| l.stalled.as_ref()) {
                    println!("{line}");
                }
            }
        }
        if !ok {
            println!("not whole: {}", problems.join("; "));
        }
    }
    Ok(if ok { exit::PASS } else { exit::FAIL })
}

fn row(s: &InstanceStatus) -> ContainerRow {
    let i = &s.info;
    ContainerRow {
        service: i.id.service.name().to_string(),
        instance: i.id.to_string(),
        index: i.id.index,
        uptime_s: i
            .started_at
            .filter(|_| i.state.is_alive())
            .map(|t| (chrono::Utc::now() - t).num_seconds().max(0)),
        started_at: i.started_at.map(|t| t.to_rfc3339()),
        state: i.state.to_string(),
        health: s.health.to_string(),
        network: if s.connected {
            "connected"
        } else {
            "disconnected"
        }
        .to_string(),
        restarts: i.restarts,
        container: i.pid_or_container.clone(),
        address: i.address.clone(),
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

async fn logs(r: &StackArgs, what: &str, tail: usize) -> Result<Exit> {
    let stack = Stack::open(&r.locator()).await?;
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
    use crate::runtime::docker::images::{ImageFlavor, Images};

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
