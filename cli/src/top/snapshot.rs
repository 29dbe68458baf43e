//! One refresh of `top`: everything the dashboard shows, gathered from the stack into a
//! [`Snapshot`] (also what `top --once --json` prints). Rendering is `render.rs`'s job.
//!
//! Rates (requests, acks, errors, records stored, CPU) are differences between this
//! sample and the previous one, divided by the time between them, so the [`Sampler`]
//! keeps the previous sample's counters. The first snapshot therefore has no rates.
//!
//! Every part is read with a bounded wait, and a part that cannot be read (Kafka down,
//! the API paused) becomes a line in [`Snapshot::problems`] instead of stopping the
//! view: a dashboard is most needed while the stack is failing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::faults::{self, ActiveFault};
use super::prom::{self, ApiCounters, ApiDelta};
use crate::client::ApiClient;
use crate::events::{self, Event};
use crate::kafka::age::{self, AgeProbe};
use crate::kafka::{self, PartitionLag};
use crate::runtime::usage::{self, Usage};
use crate::runtime::{
    Endpoints, Health, InstanceId, InstanceState, InstanceStatus, Locator, RuntimeKind, Service,
    Stack,
};

/// Version of the JSON shape of [`Snapshot`]; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

/// How many of the latest events a snapshot carries.
const EVENTS_SHOWN: usize = 20;
/// How much of the events file is read per refresh (its tail).
const EVENTS_WINDOW: u64 = 256 * 1024;

/// Everything `top` shows at one moment. `--once --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Version of this shape ([`SCHEMA`]).
    pub schema: u32,
    pub project: String,
    pub runtime: RuntimeKind,
    /// When it was taken: ms since the epoch, and RFC 3339.
    pub time_ms: i64,
    pub time: String,
    /// Seconds between the previous sample and this one: what the rates are over.
    /// Absent on a first sample, which has no rates.
    pub interval_s: Option<f64>,
    pub instances: Vec<InstanceRow>,
    pub api: ApiStats,
    pub kafka: KafkaStats,
    /// Faults in force, soonest undo first (see `top::faults`).
    pub faults: Vec<ActiveFault>,
    /// The latest events of the event log, oldest first.
    pub events: Vec<Event>,
    pub events_file: PathBuf,
    /// Parts that could not be read this time, each naming the part.
    pub problems: Vec<String>,
}

/// One instance of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    /// e.g. `consumer#2` (what `chaos` takes as TARGET).
    pub instance: String,
    pub service: Service,
    pub state: InstanceState,
    /// Docker's healthcheck; `none` for local processes.
    pub health: Health,
    /// Attached to the stack's network (always true locally).
    pub connected: bool,
    pub restarts: u32,
    pub uptime_s: Option<i64>,
    /// pid (local) or container id (docker).
    pub pid_or_container: String,
    /// CPU over the interval, percent of one core; absent on a first sample, after a
    /// restart, or for an instance that is not running.
    pub cpu_percent: Option<f64>,
    /// Resident memory now, bytes.
    pub rss_bytes: Option<u64>,
}

/// The API's traffic over the interval, from `/metrics` of every api instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiStats {
    /// The api instances whose metrics were read this time.
    pub scraped: Vec<String>,
    /// Requests per second, all routes but `/metrics` and `/health/*` (probes, and this
    /// dashboard's own scrapes).
    pub requests_per_s: Option<f64>,
    /// `POST /messages` answered 2xx per second: messages Kafka acknowledged.
    pub acked_per_s: Option<f64>,
    /// 4xx answers per second (refused input).
    pub client_errors_per_s: Option<f64>,
    /// 5xx answers per second (the stack failed to take a request).
    pub server_errors_per_s: Option<f64>,
    /// Ack latency (`POST /messages`, which answers after acks=all) quantiles over the
    /// interval, in ms; absent when nothing was sent.
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
}

/// Consumer lag and the store's write rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KafkaStats {
    pub topic: String,
    pub group: String,
    pub partitions: Vec<PartitionRow>,
    /// Records not yet committed by the group, all partitions.
    pub total_lag: Option<i64>,
    /// Age of the oldest record not yet stored, over all partitions, ms.
    pub oldest_unstored_ms: Option<i64>,
    /// Records durably stored per second: the increase of the sum of the group's
    /// committed offsets. Exact, because the consumers commit an offset only after every
    /// record below it is durably written (a record sent to the dead-letter topic counts
    /// too: it is committed once it is there).
    pub stored_per_s: Option<f64>,
}

/// One partition of the topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    pub partition: i32,
    /// The group's committed offset (absent: it never committed on this partition).
    pub committed: Option<i64>,
    /// The log end offset (high watermark).
    pub end: i64,
    pub lag: i64,
    /// How long the oldest record not yet stored has waited, ms (absent when the
    /// partition has no lag, or its record could not be read in time).
    pub oldest_unstored_ms: Option<i64>,
    /// `stalled p3@1042 for 2m (...): <error>` while the consumer holding the partition
    /// reports it cannot get past a record ([`PartitionLag::stall_line`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

/// What the previous sample left for the next one's differences.
struct Previous {
    at: Instant,
    api: HashMap<String, ApiCounters>,
    usage: HashMap<InstanceId, Usage>,
    committed_sum: Option<i64>,
}

/// Takes snapshots of one stack, keeping what the next one's rates need.
pub struct Sampler {
    stack: Stack,
    project: String,
    events_file: PathBuf,
    /// Bound on each part's wait (Kafka, each API scrape).
    timeout: Duration,
    previous: Option<Previous>,
    clients: HashMap<String, ApiClient>,
    probe: Option<AgeProbe>,
}

impl Sampler {
    /// Finds the stack as every other command does; fails with `NoStack` (which says how
    /// to start one) when there is none.
    pub async fn open(loc: &Locator, events_file: PathBuf, timeout: Duration) -> Result<Sampler> {
        let stack = Stack::open(loc).await?;
        Ok(Sampler {
            stack,
            project: loc.project.clone(),
            events_file,
            timeout,
            previous: None,
            clients: HashMap::new(),
            probe: None,
        })
    }

    /// One snapshot. Never fails: what cannot be read is named in `problems`.
    pub async fn sample(&mut self) -> Snapshot {
        let at = Instant::now();
        let mut problems = Vec::new();
        let statuses = match self.stack.status().await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("instances: {e:#}"));
                Vec::new()
            }
        };
        let endpoints = match self.stack.endpoints().await {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("endpoints: {e:#}"));
                Endpoints::default()
            }
        };
        let apis = api_targets(&statuses, &endpoints);
        for (_, url) in &apis {
            if !self.clients.contains_key(url) {
                match ApiClient::new(url, self.timeout) {
                    Ok(c) => {
                        self.clients.insert(url.clone(), c);
                    }
                    Err(e) => problems.push(format!("api client for {url}: {e:#}")),
                }
            }
        }
        let scrapes = apis.iter().filter_map(|(name, url)| {
            let client = self.clients.get(url)?;
            Some(async move { (name.clone(), client.metrics_text().await) })
        });
        // One long-lived record reader per broker address (its connections are reused).
        if let Some(b) = &endpoints.kafka_bootstrap {
            if self.probe.as_ref().map(AgeProbe::bootstrap) != Some(b.as_str()) {
                self.probe = match AgeProbe::new(b, &endpoints.names.topic) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        problems.push(format!("age of unstored records: {e:#}"));
                        None
                    }
                };
            }
        }
        let events_file = self.events_file.clone();
        let (usage, lag, scraped, events) = tokio::join!(
            self.stack.usage(),
            lag_and_ages(&endpoints, self.probe.clone(), self.timeout),
            futures::future::join_all(scrapes),
            tokio::task::spawn_blocking(move || events::read_recent(&events_file, EVENTS_WINDOW)),
        );
        let now_ms = wiber_model::now_ms();

        // Instances, with CPU from the previous sample.
        let usage: HashMap<InstanceId, Usage> = match usage {
            Ok(u) => u.into_iter().map(|u| (u.id, u)).collect(),
            Err(e) => {
                problems.push(format!("cpu and memory: {e:#}"));
                HashMap::new()
            }
        };
        let prev = self.previous.as_ref();
        let instances: Vec<InstanceRow> = statuses
            .iter()
            .map(|s| {
                let id = s.info.id;
                let cur = usage.get(&id);
                let cpu = cur
                    .zip(prev.and_then(|p| p.usage.get(&id)))
                    .and_then(|(c, p)| usage::cpu_percent(p, c));
                row(s, cpu, cur.and_then(|u| u.rss_bytes))
            })
            .collect();

        // API rates from the difference of each instance's counters.
        let interval_s = prev.map(|p| at.duration_since(p.at).as_secs_f64());
        let mut api = ApiStats::default();
        let mut counters = HashMap::new();
        let mut delta: Option<ApiDelta> = None;
        for (name, text) in scraped {
            let parsed = text
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(ApiCounters::from_text(&t)?));
            match parsed {
                Ok(c) => {
                    if let Some(p) = prev.and_then(|p| p.api.get(&name)) {
                        delta
                            .get_or_insert_with(ApiDelta::default)
                            .add(&ApiDelta::between(p, &c));
                    }
                    api.scraped.push(name.clone());
                    counters.insert(name, c);
                }
                Err(e) => problems.push(format!("{name} metrics: {e:#}")),
            }
        }
        if apis.is_empty() {
            problems.push("api: no api instance with an address to read /metrics from".into());
        }
        if let (Some(d), Some(secs)) = (&delta, interval_s.filter(|s| *s > 0.0)) {
            api.requests_per_s = Some(d.requests / secs);
            api.acked_per_s = Some(d.acked / secs);
            api.client_errors_per_s = Some(d.client_errors / secs);
            api.server_errors_per_s = Some(d.server_errors / secs);
            api.ack_p50_ms = prom::quantile(0.50, &d.ack_buckets).map(|s| s * 1000.0);
            api.ack_p99_ms = prom::quantile(0.99, &d.ack_buckets).map(|s| s * 1000.0);
        }

        // Lag, its age, and the store's write rate.
        let mut kafka_stats = KafkaStats {
            topic: endpoints.names.topic.clone(),
            group: endpoints.names.group.clone(),
            ..KafkaStats::default()
        };
        let mut committed_sum = None;
        match lag {
            Ok((lags, ages)) => {
                let ages: HashMap<i32, i64> = match ages {
                    Ok(a) => a.iter().map(|r| (r.partition, r.age_ms(now_ms))).collect(),
                    Err(e) => {
                        problems.push(format!("age of unstored records: {e:#}"));
                        HashMap::new()
                    }
                };
                kafka_stats.partitions = lags
                    .iter()
                    .map(|l| PartitionRow {
                        partition: l.partition,
                        committed: l.committed,
                        end: l.high,
                        lag: l.lag,
                        oldest_unstored_ms: (l.lag > 0)
                            .then(|| ages.get(&l.partition).copied())
                            .flatten(),
                        stalled: l.stall_line(now_ms),
                    })
                    .collect();
                kafka_stats.total_lag = Some(kafka::total(&lags));
                kafka_stats.oldest_unstored_ms = ages.values().copied().max();
                let sum = committed_total(&lags);
                committed_sum = Some(sum);
                if let (Some(p), Some(secs)) = (
                    prev.and_then(|p| p.committed_sum),
                    interval_s.filter(|s| *s > 0.0),
                ) {
                    // Offsets only grow; a smaller sum is another topic (recreated).
                    kafka_stats.stored_per_s = (sum >= p).then(|| (sum - p) as f64 / secs);
                }
            }
            Err(e) => problems.push(format!("kafka: {e:#}")),
        }

        // Events and the faults they leave in force.
        let events = match events {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => {
                problems.push(format!("events: {e:#}"));
                Vec::new()
            }
            Err(e) => {
                problems.push(format!("events: {e}"));
                Vec::new()
            }
        };
        // Only this stack's: one events file can hold several stacks' faults.
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| e.concerns(&self.project))
            .collect();
        let faults = active_faults(&events, &statuses, now_ms);
        let shown = events[events.len().saturating_sub(EVENTS_SHOWN)..].to_vec();

        self.previous = Some(Previous {
            at,
            api: counters,
            usage,
            committed_sum,
        });
        Snapshot {
            schema: SCHEMA,
            project: self.project.clone(),
            runtime: self.stack.kind(),
            time_ms: now_ms,
            time: wiber_model::rfc3339_ms(now_ms),
            interval_s,
            instances,
            api,
            kafka: kafka_stats,
            faults,
            events: shown,
            events_file: self.events_file.clone(),
            problems,
        }
    }
}

/// The group's lag, then the age of the oldest unstored record of each lagging partition
/// (the second step needs the first's offsets; its failure still leaves the lag).
async fn lag_and_ages(
    ep: &Endpoints,
    probe: Option<AgeProbe>,
    timeout: Duration,
) -> Result<(Vec<PartitionLag>, Result<Vec<age::OldestRecord>>)> {
    let bootstrap = ep
        .kafka_bootstrap
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("the stack has no kafka instance with a published port"))?;
    let lags = kafka::group_lag(bootstrap, &ep.names.group, &ep.names.topic, timeout).await?;
    let ages = match probe {
        Some(p) => p.oldest(age::positions(&lags), timeout).await,
        None => Ok(Vec::new()),
    };
    Ok((lags, ages))
}

/// The api instances to read `/metrics` from: every live api with an address, else the
/// stack's API endpoint.
fn api_targets(statuses: &[InstanceStatus], ep: &Endpoints) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = statuses
        .iter()
        .filter(|s| s.info.id.service == Service::Api)
        .filter(|s| s.info.state == InstanceState::Running && !s.info.address.is_empty())
        .map(|s| (s.info.id.to_string(), s.info.address.clone()))
        .collect();
    if out.is_empty() && !statuses.iter().any(|s| s.info.id.service == Service::Api) {
        if let Some(url) = &ep.api_url {
            out.push(("api".into(), url.clone()));
        }
    }
    out
}

/// Sum of the group's committed offsets; a partition it never committed on counts from
/// its first record, where the consumers start (`auto.offset.reset = earliest`).
pub fn committed_total(lags: &[PartitionLag]) -> i64 {
    lags.iter().map(|l| l.committed.unwrap_or(l.low)).sum()
}

/// Faults in force: timed ones from the log alone, open-ended ones only while the
/// instance still shows them.
fn active_faults(events: &[Event], statuses: &[InstanceStatus], now_ms: i64) -> Vec<ActiveFault> {
    faults::active(events, now_ms)
        .into_iter()
        .filter(|f| {
            f.undo_at_ms.is_some()
                || statuses.iter().any(|s| {
                    s.info.id.to_string() == f.target
                        && faults::still_applies(f.kind, s.info.state, s.connected)
                })
        })
        .collect()
}

fn row(s: &InstanceStatus, cpu_percent: Option<f64>, rss_bytes: Option<u64>) -> InstanceRow {
    let i = &s.info;
    InstanceRow {
        instance: i.id.to_string(),
        service: i.id.service,
        state: i.state,
        health: s.health,
        connected: s.connected,
        restarts: i.restarts,
        uptime_s: i
            .started_at
            .filter(|_| i.state.is_alive())
            .map(|t| (chrono::Utc::now() - t).num_seconds().max(0)),
        pid_or_container: i.pid_or_container.clone(),
        cpu_percent: cpu_percent.filter(|_| i.state.is_alive()),
        rss_bytes: rss_bytes.filter(|_| i.state.is_alive()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::InstanceInfo;

    fn status(id: &str, state: InstanceState, address: &str) -> InstanceStatus {
        let mut info = InstanceInfo::bare(id.parse().unwrap(), state);
        info.address = address.into();
        InstanceStatus {
            info,
            health: Health::None,
            connected: true,
        }
    }

    #[test]
    fn every_live_api_is_scraped() {
        let ep = Endpoints {
            api_url: Some("http://127.0.0.1:8000".into()),
            ..Endpoints::default()
        };
        let s = [
            status("api#1", InstanceState::Running, "http://127.0.0.1:8000"),
            status("api#2", InstanceState::Running, "http://127.0.0.1:8001"),
            status("api#3", InstanceState::Exited, "http://127.0.0.1:8002"),
            status("consumer#1", InstanceState::Running, ""),
        ];
        let t = api_targets(&s, &ep);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1], ("api#2".into(), "http://127.0.0.1:8001".into()));
        // Every api down: nothing to scrape (not the endpoint of a dead one).
        assert!(api_targets(&s[2..], &ep).is_empty());
    }

    #[test]
    fn stored_records_are_committed_offsets() {
        let l = |partition, committed, low| PartitionLag {
            partition,
            committed,
            low,
            high: 100,
            lag: 0,
            stall: None,
        };
        assert_eq!(committed_total(&[l(0, Some(40), 0), l(1, None, 7)]), 47);
    }

    #[test]
    fn open_ended_faults_need_the_instance_to_show_them() {
        let ev = |action: &str, target: &str, undo: Option<i64>| Event {
            time_ms: 1_000,
            time: String::new(),
            action: action.into(),
            target: target.into(),
            container: "1".into(),
            result: "ok".into(),
            undo_at_ms: undo,
            project: None,
            detail: None,
        };
        let events = [
            ev("kill", "consumer#1", None),
            ev("kill", "consumer#2", None),
            ev("pause", "kafka#1", Some(9_000)),
        ];
        let s = [
            status("consumer#1", InstanceState::Exited, ""),
            // Killed, then started outside wiberctl (no event): over.
            status("consumer#2", InstanceState::Running, ""),
            status("kafka#1", InstanceState::Running, ""),
        ];
        let f = active_faults(&events, &s, 2_000);
        let targets: Vec<&str> = f.iter().map(|f| f.target.as_str()).collect();
        assert_eq!(targets, ["kafka#1", "consumer#1"]);
    }
}
