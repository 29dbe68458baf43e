//! Kafka-aware fault targets: "the broker that currently holds role X", resolved from the
//! cluster's own metadata at the moment a fault fires, so a scenario can say "kill the
//! leader of partition 3" without knowing which broker that will be.
//!
//! A target is written `kafka:<role>`; [`KafkaRole::parse`] takes the text after `kafka:`:
//!
//! | text                          | role                                                       |
//! |-------------------------------|------------------------------------------------------------|
//! | `leader(wiber.messages/3)`    | leader of partition 3 of topic `wiber.messages`            |
//! | `leader(3)`                   | leader of partition 3 of the default topic                 |
//! | `controller`                  | the active KRaft controller (the metadata quorum's leader) |
//! | `coordinator(wiber-consumers)`| group coordinator of consumer group `wiber-consumers`      |
//! | `coordinator`                 | group coordinator of the default group                     |
//!
//! [`resolve`] turns a role into a broker node id ([`Resolved`]); in wiber stacks node id N
//! is instance `kafka#N` ([`Resolved::instance`]). [`describe_topic`] lists every
//! partition's leader, replicas and ISR for reports and `stack status`.
//!
//! How each role is found, and why:
//! - leader: topic metadata through rdkafka. A leaderless partition (an election in
//!   progress) is asked again until the timeout. Right after a broker dies the metadata
//!   still names it until the controller notices (the broker session timeout, ~9 s).
//! - controller: NOT the controller id of a MetadataResponse, which under KRaft is a random
//!   broker. The `DescribeQuorum` API (key 55) on `__cluster_metadata`/0 names the quorum
//!   leader, which is the active controller. Brokers forward it to the controller.
//! - coordinator: the `FindCoordinator` API (key 10), as consumers do. The coordinator is
//!   the leader of the group's `__consumer_offsets` partition, so a group that does not
//!   exist yet still has one (where it would live).
//!
//! rdkafka offers neither DescribeQuorum nor FindCoordinator, so this module speaks those
//! two (and ApiVersions, to pick a version both sides know) over a plain TCP socket; the
//! codec is the small private `wire` module below. Each bootstrap address is tried in
//! turn until one answers; an answer that says "mid-change" (no quorum leader, coordinator
//! loading) is asked again until the timeout.

use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use wiber_model::contract::{InstanceId, Service};
use wire::{Reader, Writer};

/// A broker role a fault can target; see the module doc for the written forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaRole {
    /// The leader of one partition: `leader(topic/partition)`, or `leader(partition)` for
    /// the default topic.
    Leader { topic: String, partition: i32 },
    /// The active KRaft controller (the metadata quorum's leader): `controller`.
    Controller,
    /// The group coordinator of a consumer group: `coordinator(group)`, or `coordinator`
    /// for the default group.
    Coordinator { group: String },
}

impl KafkaRole {
    /// Parses the text after `kafka:` (a leading `kafka:` is accepted too). Keywords are
    /// case-insensitive; `default_topic` and `default_group` fill the omitted parts.
    pub fn parse(s: &str, default_topic: &str, default_group: &str) -> Result<KafkaRole> {
        let bad = |why: &str| {
            anyhow!(
                "invalid kafka target {s:?}: {why}; expected kafka:leader(<topic>/<partition>), \
                 kafka:leader(<partition>) (topic {default_topic}), kafka:controller, \
                 kafka:coordinator(<group>) or kafka:coordinator (group {default_group})"
            )
        };
        let text = s.trim();
        let text = text.strip_prefix("kafka:").unwrap_or(text).trim();
        let (name, arg) = match text.split_once('(') {
            Some((name, rest)) => {
                let arg = rest
                    .strip_suffix(')')
                    .ok_or_else(|| bad("the closing parenthesis is missing"))?;
                (name.trim(), Some(arg.trim()))
            }
            None => (text, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("controller", None) => Ok(KafkaRole::Controller),
            ("controller", Some(_)) => Err(bad("controller takes no argument")),
            ("coordinator", None | Some("")) => Ok(KafkaRole::Coordinator {
                group: default_group.to_string(),
            }),
            ("coordinator", Some(group)) => {
                if group.contains(['(', ')']) {
                    return Err(bad("a group name cannot contain parentheses"));
                }
                Ok(KafkaRole::Coordinator {
                    group: group.to_string(),
                })
            }
            ("leader", Some(arg)) if !arg.is_empty() => {
                let (topic, partition) = match arg.rsplit_once('/') {
                    Some((topic, partition)) => (topic.trim(), partition.trim()),
                    None => (default_topic, arg),
                };
                check_topic_name(topic).map_err(|why| bad(&why))?;
                let partition = partition
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| {
                        bad(&format!(
                            "{partition:?} is not a partition number (0, 1, 2, ...)"
                        ))
                    })?;
                Ok(KafkaRole::Leader {
                    topic: topic.to_string(),
                    partition,
                })
            }
            ("leader", _) => Err(bad("leader needs a partition, as in leader(3)")),
            ("", _) => Err(bad("the role is missing")),
            (other, _) => Err(bad(&format!("unknown role {other:?}"))),
        }
    }
}

/// The canonical written form, which [`KafkaRole::parse`] reads back.
impl fmt::Display for KafkaRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaRole::Leader { topic, partition } => {
                write!(f, "kafka:leader({topic}/{partition})")
            }
            KafkaRole::Controller => write!(f, "kafka:controller"),
            KafkaRole::Coordinator { group } => write!(f, "kafka:coordinator({group})"),
        }
    }
}

/// Kafka's own rule (1 to 249 of `[a-zA-Z0-9._-]`), checked here so a typo fails when the
/// scenario is read rather than when the fault fires.
fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("the topic name is empty".into());
    }
    if topic.len() > 249 {
        return Err(format!(
            "topic name {topic:?} is longer than 249 characters"
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {topic:?} contains {c:?}; topic names use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Which broker holds a role right now, and how that was found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The role, in its canonical form ([`KafkaRole`]'s `Display`).
    pub role: String,
    /// The broker's node id.
    pub node_id: i32,
    /// The evidence, for the report: e.g. `replicas [1,2,3], isr [3,1]` or
    /// `quorum leader epoch 2, voters [1,2,3], high watermark 396`.
    pub detail: String,
}

impl Resolved {
    /// The stack instance of the broker: wiber stacks number brokers from 1, node id N
    /// being `kafka#N`.
    pub fn instance(&self) -> Result<InstanceId> {
        u32::try_from(self.node_id)
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| InstanceId::new(Service::Kafka, n))
            .with_context(|| {
                format!(
                    "{} resolved to kafka node id {}, which names no stack instance \
                     (wiber stacks number brokers from 1: kafka#1, kafka#2, ...)",
                    self.role, self.node_id
                )
            })
    }
}

/// One partition of a topic as the cluster metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The leader's node id; `None` while the partition has no leader.
    pub leader: Option<i32>,
    /// Node ids of the assigned replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

/// Resolves `role` on the cluster reachable at `bootstrap` (a comma-separated `host:port`
/// list). Everything, retries included, finishes within `timeout`.
pub async fn resolve(bootstrap: &str, role: &KafkaRole, timeout: Duration) -> Result<Resolved> {
    let found = match role {
        KafkaRole::Leader { topic, partition } => {
            resolve_leader(bootstrap, topic, *partition, timeout).await
        }
        KafkaRole::Controller => {
            ask_cluster(bootstrap, "DescribeQuorum", timeout, quorum_leader).await
        }
        KafkaRole::Coordinator { group } => {
            ask_cluster(bootstrap, "FindCoordinator", timeout, |conn| {
                group_coordinator(conn, group)
            })
            .await
        }
    };
    found.with_context(|| format!("cannot resolve {role}"))
}

/// Describes every partition of `topic` (sorted by partition), from rdkafka metadata.
pub async fn describe_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionInfo>> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || describe_topic_blocking(&bootstrap, &topic, timeout))
        .await
        .context("topic metadata task failed")?
}

fn describe_topic_blocking(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionInfo>> {
    // No group.id: this client only reads metadata and must never join a group.
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("cannot create a kafka client to read topic metadata")?;
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| {
            format!(
                "cannot read the metadata of topic {topic} from kafka at {bootstrap} within \
             {timeout:?} (is the broker up? see `wiberctl stack status`)"
            )
        })?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("kafka at {bootstrap} left topic {topic} out of its metadata"))?;
    match t.error() {
        None => {}
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => bail!(
            "topic {topic} does not exist on the cluster at {bootstrap} (check the name; \
             wiber.messages is created when the api or a consumer starts)"
        ),
        Some(err) => {
            bail!("kafka at {bootstrap} answered the metadata of topic {topic} with {err:?}")
        }
    }
    let mut out: Vec<PartitionInfo> = t
        .partitions()
        .iter()
        .map(|p| PartitionInfo {
            partition: p.id(),
            leader: (p.leader() >= 0).then(|| p.leader()),
            replicas: p.replicas().to_vec(),
            isr: p.isr().to_vec(),
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Pause between two questions while the cluster is mid-change.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Longest wait for one broker, so a paused broker (it accepts, never answers) leaves
/// time to ask the next one.
const PER_BROKER: Duration = Duration::from_secs(3);

/// What one answer means for the resolution.
#[derive(Debug)]
enum Attempt<T> {
    Done(T),
    /// The cluster answered but is mid-change (an election, a coordinator loading): the
    /// reason, and ask again shortly.
    Retry(String),
}

async fn resolve_leader(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    limit: Duration,
) -> Result<Resolved> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let partitions =
            describe_topic(bootstrap, topic, left.max(Duration::from_millis(1))).await?;
        match leader_of(topic, partition, &partitions)? {
            Attempt::Done(found) => return Ok(found),
            Attempt::Retry(why) if Instant::now() + RETRY_PAUSE >= deadline => {
                bail!("{why} (still so after {limit:?})")
            }
            Attempt::Retry(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// The leader of `topic/partition` in `partitions`: leaderless is worth asking again, a
/// partition that does not exist is not.
fn leader_of(
    topic: &str,
    partition: i32,
    partitions: &[PartitionInfo],
) -> Result<Attempt<Resolved>> {
    let Some(p) = partitions.iter().find(|p| p.partition == partition) else {
        let n = partitions.len();
        bail!(
            "topic {topic} has no partition {partition}: it has {n} partition{} (0..={})",
            if n == 1 { "" } else { "s" },
            n as i64 - 1
        );
    };
    let role = KafkaRole::Leader {
        topic: topic.to_string(),
        partition,
    };
    Ok(match p.leader {
        Some(node_id) => Attempt::Done(Resolved {
            role: role.to_string(),
            node_id,
            detail: format!("replicas {}, isr {}", ids(&p.replicas), ids(&p.isr)),
        }),
        None => Attempt::Retry(format!(
            "partition {topic}/{partition} has no leader (replicas {}, isr {}): an election \
             may be in progress, or every replica is down",
            ids(&p.replicas),
            ids(&p.isr)
        )),
    })
}

/// `[3,1]`, the compact form Kafka's tools print.
fn ids(ids: &[i32]) -> String {
    let list: Vec<String> = ids.iter().map(i32::to_string).collect();
    format!("[{}]", list.join(","))
}

/// Why asking one broker failed.
#[derive(Debug)]
enum Failure {
    /// This broker could not be asked (refused, closed, garbled): try the next one. A
    /// plain error converts to this, so `?` in a per-broker exchange means "next".
    Unreachable(anyhow::Error),
    /// Every broker would answer the same (no common version, not authorized): stop.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Unreachable(e)
    }
}

/// Asks the brokers of `bootstrap` in turn, each on a fresh connection through `ask`,
/// until one gives a final answer; repeats while the cluster is mid-change, all within
/// `limit`. `api` names the question in errors.
async fn ask_cluster<T, F, Fut>(
    bootstrap: &str,
    api: &str,
    limit: Duration,
    mut ask: F,
) -> Result<T>
where
    F: FnMut(Conn) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, Failure>>,
{
    let addrs = bootstrap_addrs(bootstrap)?;
    let deadline = Instant::now() + limit;
    loop {
        let mut why = Vec::new();
        for addr in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(PER_BROKER);
            let exchange = async {
                let conn = Conn::connect(addr).await?;
                ask(conn).await
            };
            match tokio::time::timeout(wait, exchange).await {
                Ok(Ok(Attempt::Done(found))) => return Ok(found),
                Ok(Ok(Attempt::Retry(reason))) => {
                    // The cluster itself answered; another broker would say the same now.
                    why = vec![format!("{addr}: {reason}")];
                    break;
                }
                Ok(Err(Failure::Fatal(e))) => return Err(e),
                Ok(Err(Failure::Unreachable(e))) => why.push(format!("{addr}: {e:#}")),
                Err(_) => why.push(format!("{addr}: no {api} answer within {wait:?}")),
            }
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            bail!(
                "no final {api} answer from kafka within {limit:?}: {} (is the stack up? see \
                 `wiberctl stack status`)",
                if why.is_empty() {
                    "out of time".to_string()
                } else {
                    why.join("; ")
                }
            );
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// `host:port` entries of a bootstrap list (`PLAINTEXT://` style prefixes dropped).
fn bootstrap_addrs(bootstrap: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = bootstrap
        .split(',')
        .map(|a| a.trim())
        .map(|a| a.split_once("://").map_or(a, |(_, rest)| rest))
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        bail!("the kafka bootstrap list {bootstrap:?} names no broker: expected host:port[,host:port...]");
    }
    Ok(addrs)
}

/// The Kafka APIs this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KafkaApi {
    FindCoordinator,
    ApiVersions,
    DescribeQuorum,
}

impl KafkaApi {
    fn key(self) -> i16 {
        match self {
            KafkaApi::FindCoordinator => 10,
            KafkaApi::ApiVersions => 18,
            KafkaApi::DescribeQuorum => 55,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KafkaApi::FindCoordinator => "FindCoordinator",
            KafkaApi::ApiVersions => "ApiVersions",
            KafkaApi::DescribeQuorum => "DescribeQuorum",
        }
    }

    /// The versions encoded and decoded here. FindCoordinator v5 and v6 are v4 on the
    /// wire (they only add error codes and key types); v0-v2 are not flexible and Kafka 4
    /// may refuse them, so they are left out.
    fn ours(self) -> RangeInclusive<i16> {
        match self {
            KafkaApi::FindCoordinator => 3..=6,
            KafkaApi::ApiVersions => 0..=0,
            KafkaApi::DescribeQuorum => 0..=2,
        }
    }

    /// Flexible versions use request header v2 (with a tag section).
    fn flexible(self, version: i16) -> bool {
        match self {
            KafkaApi::FindCoordinator | KafkaApi::ApiVersions => version >= 3,
            KafkaApi::DescribeQuorum => true,
        }
    }

    /// Flexible responses carry header v1 (with a tag section), except ApiVersions,
    /// whose header stays v0 so that any client can read the version list.
    fn tagged_response_header(self, version: i16) -> bool {
        self != KafkaApi::ApiVersions && self.flexible(version)
    }
}

const CLIENT_ID: &str = "wiberctl";
/// Answers here are a few hundred bytes; anything near this is not Kafka talking.
const MAX_FRAME: usize = 1 << 20;

/// One connection to one broker.
struct Conn {
    stream: TcpStream,
    addr: String,
    correlation: i32,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await.context("cannot connect")?;
        stream.set_nodelay(true).ok();
        Ok(Conn {
            stream,
            addr: addr.to_string(),
            correlation: 0,
        })
    }

    /// Sends one request and returns the response body (what follows the header).
    async fn call(&mut self, api: KafkaApi, version: i16, body: &[u8]) -> Result<Vec<u8>> {
        self.correlation += 1;
        let frame = encode_request(api, version, self.correlation, body);
        self.stream
            .write_all(&frame)
            .await
            .with_context(|| format!("cannot send {} v{version}", api.name()))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .await
            .with_context(|| format!("no {} v{version} answer (connection closed)", api.name()))?;
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (4..=MAX_FRAME).contains(l))
            .with_context(|| {
                format!("answered with a frame of {len} bytes: not a Kafka broker?")
            })?;
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .await
            .with_context(|| format!("{} v{version} answer cut short", api.name()))?;
        let mut r = Reader::new(&buf);
        let correlation = r.i32()?;
        if correlation != self.correlation {
            bail!(
                "answered {} with correlation id {correlation}, expected {}",
                api.name(),
                self.correlation
            );
        }
        if api.tagged_response_header(version) {
            r.skip_tags()?;
        }
        let start = r.position();
        Ok(buf.split_off(start))
    }

    /// Asks the broker which versions of `api` it serves and picks the lowest one both
    /// sides know: the oldest is the best trodden.
    async fn negotiate(&mut self, api: KafkaApi) -> Result<i16, Failure> {
        let body = self.call(KafkaApi::ApiVersions, 0, &[]).await?;
        let offered = decode_api_versions(&body)?;
        let range = offered
            .iter()
            .find(|(key, _)| *key == api.key())
            .map(|(_, range)| range.clone());
        pick_version(api, range)
            .map_err(|e| Failure::Fatal(e.context(format!("kafka at {}", self.addr))))
    }
}

/// Size-prefixed request: header v1 (or v2 for flexible versions), then `body`.
fn encode_request(api: KafkaApi, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.i32(0); // the size, filled in below
    w.i16(api.key());
    w.i16(version);
    w.i32(correlation);
    // The header's client id is a classic (int16-length) string even in header v2.
    w.string(CLIENT_ID);
    if api.flexible(version) {
        w.empty_tags();
    }
    w.bytes(body);
    let mut frame = w.finish();
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}

/// ApiVersions v0 answer: `(api key, min..=max)` for every API the broker serves.
fn decode_api_versions(body: &[u8]) -> Result<Vec<(i16, RangeInclusive<i16>)>> {
    let mut r = Reader::new(body);
    let error = r.i16()?;
    if error != 0 {
        bail!("ApiVersions failed with {}", error_name(error));
    }
    let n = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
        out.push((key, min..=max));
    }
    Ok(out)
}

fn pick_version(api: KafkaApi, offered: Option<RangeInclusive<i16>>) -> Result<i16> {
    let ours = api.ours();
    let Some(theirs) = offered else {
        bail!(
            "the broker does not offer {} (api key {}): is it a KRaft cluster of Kafka 3.3 or later?",
            api.name(),
            api.key()
        );
    };
    let low = *theirs.start().max(ours.start());
    let high = *theirs.end().min(ours.end());
    if low > high {
        bail!(
            "the broker offers {} v{}..=v{}, wiberctl speaks v{}..=v{}: no common version \
             (a newer wiberctl may speak it)",
            api.name(),
            theirs.start(),
            theirs.end(),
            ours.start(),
            ours.end()
        );
    }
    Ok(low)
}

/// The partition whose quorum runs the cluster metadata; its leader is the controller.
const METADATA_TOPIC: &str = "__cluster_metadata";

async fn quorum_leader(mut conn: Conn) -> Result<Attempt<Resolved>, Failure> {
    let version = conn.negotiate(KafkaApi::DescribeQuorum).await?;
    let body = conn
        .call(KafkaApi::DescribeQuorum, version, &encode_describe_quorum())
        .await?;
    judge_quorum(decode_describe_quorum(version, &body)?)
}

/// DescribeQuorum request body, the same in v0-v2: one topic, one partition.
fn encode_describe_quorum() -> Vec<u8> {
    let mut w = Writer::default();
    w.compact_array_len(1); // topics
    w.compact_string(METADATA_TOPIC);
    w.compact_array_len(1); // partitions
    w.i32(0);
    w.empty_tags(); // partition
    w.empty_tags(); // topic
    w.empty_tags(); // request
    w.finish()
}

/// What a DescribeQuorum answer says about the metadata partition.
#[derive(Debug, PartialEq, Eq)]
struct QuorumAnswer {
    error: i16,
    error_message: Option<String>,
    /// `__cluster_metadata`/0, if the answer has it.
    partition: Option<QuorumPartition>,
}

#[derive(Debug, PartialEq, Eq)]
struct QuorumPartition {
    error: i16,
    error_message: Option<String>,
    /// -1 while there is no leader.
    leader_id: i32,
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<i32>,
}

/// Decodes a DescribeQuorum v0-v2 answer up to the voters (observers and v2's node
/// endpoints are not needed).
fn decode_describe_quorum(version: i16, body: &[u8]) -> Result<QuorumAnswer> {
    let mut r = Reader::new(body);
    let error = r.i16()?;
    let error_message = if version >= 2 {
        r.compact_string()?
    } else {
        None
    };
    let mut answer = QuorumAnswer {
        error,
        error_message,
        partition: None,
    };
    if r.compact_array_len()? == 0 {
        return Ok(answer);
    }
    let _topic = r.compact_string()?;
    if r.compact_array_len()? == 0 {
        return Ok(answer);
    }
    let _index = r.i32()?;
    let error = r.i16()?;
    let error_message = if version >= 2 {
        r.compact_string()?
    } else {
        None
    };
    let leader_id = r.i32()?;
    let leader_epoch = r.i32()?;
    let high_watermark = r.i64()?;
    let mut voters = Vec::new();
    for _ in 0..r.compact_array_len()? {
        voters.push(r.i32()?);
        if version >= 2 {
            r.skip(16)?; // replica directory id (uuid)
        }
        r.i64()?; // log end offset
        if version >= 1 {
            r.i64()?; // last fetch timestamp
            r.i64()?; // last caught-up timestamp
        }
        r.skip_tags()?;
    }
    answer.partition = Some(QuorumPartition {
        error,
        error_message,
        leader_id,
        leader_epoch,
        high_watermark,
        voters,
    });
    Ok(answer)
}

fn judge_quorum(answer: QuorumAnswer) -> Result<Attempt<Resolved>, Failure> {
    // NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_CONTROLLER, LEADER_NOT_AVAILABLE,
    // BROKER_NOT_AVAILABLE: the quorum or the forwarding is mid-change.
    const PASSING: [i16; 5] = [6, 7, 41, 5, 8];
    let failed = |code: i16, message: Option<String>| {
        let text = format!(
            "DescribeQuorum failed with {}{}",
            error_name(code),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        if PASSING.contains(&code) {
            Ok(Attempt::Retry(text))
        } else {
            Err(Failure::Fatal(anyhow!(text)))
        }
    };
    if answer.error != 0 {
        return failed(answer.error, answer.error_message);
    }
    let Some(p) = answer.partition else {
        return Err(Failure::Unreachable(anyhow!(
            "answered DescribeQuorum without the {METADATA_TOPIC} partition"
        )));
    };
    if p.error != 0 {
        return failed(p.error, p.error_message);
    }
    if p.leader_id < 0 {
        return Ok(Attempt::Retry(format!(
            "the KRaft quorum has no leader (epoch {}, voters {}): an election may be in progress",
            p.leader_epoch,
            ids(&p.voters)
        )));
    }
    Ok(Attempt::Done(Resolved {
        role: KafkaRole::Controller.to_string(),
        node_id: p.leader_id,
        detail: format!(
            "quorum leader epoch {}, voters {}, high watermark {}",
            p.leader_epoch,
            ids(&p.voters),
            p.high_watermark
        ),
    }))
}

/// FindCoordinator key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

async fn group_coordinator(mut conn: Conn, group: &str) -> Result<Attempt<Resolved>, Failure> {
    let version = conn.negotiate(KafkaApi::FindCoordinator).await?;
    let body = conn
        .call(
            KafkaApi::FindCoordinator,
            version,
            &encode_find_coordinator(version, group),
        )
        .await?;
    judge_coordinator(group, decode_find_coordinator(version, &body, group)?)
}

/// FindCoordinator request body: v3 names one key, v4+ a batch (here of one).
fn encode_find_coordinator(version: i16, group: &str) -> Vec<u8> {
    let mut w = Writer::default();
    if version >= 4 {
        w.i8(KEY_TYPE_GROUP);
        w.compact_array_len(1);
        w.compact_string(group);
    } else {
        w.compact_string(group);
        w.i8(KEY_TYPE_GROUP);
    }
    w.empty_tags();
    w.finish()
}

/// The coordinator a FindCoordinator answer names for our key.
#[derive(Debug, PartialEq, Eq)]
struct CoordinatorAnswer {
    error: i16,
    error_message: Option<String>,
    node_id: i32,
    host: String,
    port: i32,
}

fn decode_find_coordinator(version: i16, body: &[u8], group: &str) -> Result<CoordinatorAnswer> {
    let mut r = Reader::new(body);
    let _throttle_ms = r.i32()?;
    if version < 4 {
        let error = r.i16()?;
        let error_message = r.compact_string()?;
        return Ok(CoordinatorAnswer {
            error,
            error_message,
            node_id: r.i32()?,
            host: r.compact_string()?.unwrap_or_default(),
            port: r.i32()?,
        });
    }
    for _ in 0..r.compact_array_len()? {
        let key = r.compact_string()?;
        let node_id = r.i32()?;
        let host = r.compact_string()?.unwrap_or_default();
        let port = r.i32()?;
        let error = r.i16()?;
        let error_message = r.compact_string()?;
        r.skip_tags()?;
        if key.as_deref() == Some(group) {
            return Ok(CoordinatorAnswer {
                error,
                error_message,
                node_id,
                host,
                port,
            });
        }
    }
    bail!("answered FindCoordinator without an entry for group {group}")
}

fn judge_coordinator(group: &str, a: CoordinatorAnswer) -> Result<Attempt<Resolved>, Failure> {
    // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE (e.g. __consumer_offsets
    // being created or its leader moving), NOT_COORDINATOR, REQUEST_TIMED_OUT.
    const PASSING: [i16; 4] = [14, 15, 16, 7];
    if a.error != 0 {
        let text = format!(
            "FindCoordinator for group {group} failed with {}{}",
            error_name(a.error),
            a.error_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        return if PASSING.contains(&a.error) {
            Ok(Attempt::Retry(text))
        } else {
            Err(Failure::Fatal(anyhow!(text)))
        };
    }
    if a.node_id < 0 {
        return Ok(Attempt::Retry(format!(
            "group {group} has no coordinator yet"
        )));
    }
    Ok(Attempt::Done(Resolved {
        role: KafkaRole::Coordinator {
            group: group.to_string(),
        }
        .to_string(),
        node_id: a.node_id,
        detail: format!("group coordinator at {}:{}", a.host, a.port),
    }))
}

/// The Kafka error codes these answers can carry, by name (the number otherwise).
fn error_name(code: i16) -> String {
    let name = match code {
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        24 => "INVALID_GROUP_ID",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        35 => "UNSUPPORTED_VERSION",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        _ => return format!("error code {code}"),
    };
    format!("{name} ({code})")
}

/// The Kafka wire primitives used above: big-endian integers, unsigned varints, compact
/// (length + 1) strings and arrays, and tag sections. Only what these three APIs need.
mod wire {
    use anyhow::{bail, Result};

    #[derive(Default)]
    pub(super) struct Writer(Vec<u8>);

    impl Writer {
        pub(super) fn i8(&mut self, v: i8) {
            self.0.extend_from_slice(&v.to_be_bytes());
        }

        pub(super) fn i16(&mut self, v: i16) {
            self.0.extend_from_slice(&v.to_be_bytes());
        }

        pub(super) fn i32(&mut self, v: i32) {
            self.0.extend_from_slice(&v.to_be_bytes());
        }

        pub(super) fn bytes(&mut self, v: &[u8]) {
            self.0.extend_from_slice(v);
        }

        pub(super) fn uvarint(&mut self, mut v: u32) {
            while v >= 0x80 {
                self.0.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }

        /// A classic string: int16 length, then the bytes.
        pub(super) fn string(&mut self, s: &str) {
            self.i16(s.len() as i16);
            self.bytes(s.as_bytes());
        }

        /// A compact string: varint (length + 1), then the bytes.
        pub(super) fn compact_string(&mut self, s: &str) {
            self.uvarint(s.len() as u32 + 1);
            self.bytes(s.as_bytes());
        }

        pub(super) fn compact_array_len(&mut self, n: usize) {
            self.uvarint(n as u32 + 1);
        }

        /// A tag section with no tagged fields.
        pub(super) fn empty_tags(&mut self) {
            self.uvarint(0);
        }

        pub(super) fn finish(self) -> Vec<u8> {
            self.0
        }
    }

    pub(super) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub(super) fn new(buf: &'a [u8]) -> Self {
            Reader { buf, pos: 0 }
        }

        pub(super) fn position(&self) -> usize {
            self.pos
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8]> {
            let left = self.buf.len() - self.pos;
            if n > left {
                bail!(
                    "answer ends early: {n} more bytes wanted at offset {}, {left} left",
                    self.pos
                );
            }
            let out = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            Ok(out)
        }

        pub(super) fn skip(&mut self, n: usize) -> Result<()> {
            self.take(n).map(|_| ())
        }

        pub(super) fn i16(&mut self) -> Result<i16> {
            Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
        }

        pub(super) fn i32(&mut self) -> Result<i32> {
            Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
        }

        pub(super) fn i64(&mut self) -> Result<i64> {
            Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
        }

        pub(super) fn uvarint(&mut self) -> Result<u32> {
            let mut value = 0u32;
            for i in 0..5 {
                let b = self.take(1)?[0];
                value |= u32::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(value);
                }
            }
            bail!("varint longer than 5 bytes at offset {}", self.pos)
        }

        /// A nullable compact string (`None` for null).
        pub(super) fn compact_string(&mut self) -> Result<Option<String>> {
            let Some(len) = self.uvarint()?.checked_sub(1) else {
                return Ok(None);
            };
            let bytes = self.take(len as usize)?;
            Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
        }

        /// The length of a compact array (a null array reads as empty).
        pub(super) fn compact_array_len(&mut self) -> Result<u32> {
            Ok(self.uvarint()?.saturating_sub(1))
        }

        /// Skips a tag section: none of its fields is needed here.
        pub(super) fn skip_tags(&mut self) -> Result<()> {
            for _ in 0..self.uvarint()? {
                let _tag = self.uvarint()?;
                let size = self.uvarint()?;
                self.skip(size as usize)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;

    use super::*;

    const TOPIC: &str = "wiber.messages";
    const GROUP: &str = "wiber-consumers";

    fn parse(s: &str) -> Result<KafkaRole> {
        KafkaRole::parse(s, TOPIC, GROUP)
    }

    fn leader(topic: &str, partition: i32) -> KafkaRole {
        KafkaRole::Leader {
            topic: topic.into(),
            partition,
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse("leader(wiber.messages/3)").unwrap(), leader(TOPIC, 3));
        assert_eq!(parse("leader(3)").unwrap(), leader(TOPIC, 3));
        assert_eq!(
            parse("leader(other_topic-2/0)").unwrap(),
            leader("other_topic-2", 0)
        );
        assert_eq!(parse("controller").unwrap(), KafkaRole::Controller);
        assert_eq!(
            parse("coordinator(billing)").unwrap(),
            KafkaRole::Coordinator {
                group: "billing".into()
            }
        );
        let default_group = KafkaRole::Coordinator {
            group: GROUP.into(),
        };
        assert_eq!(parse("coordinator").unwrap(), default_group);
        assert_eq!(parse("coordinator()").unwrap(), default_group);
        // The prefix, spacing and keyword case are forgiven.
        assert_eq!(parse("kafka:controller").unwrap(), KafkaRole::Controller);
        assert_eq!(
            parse(" Leader( wiber.messages / 5 ) ").unwrap(),
            leader(TOPIC, 5)
        );
    }

    #[test]
    fn display_is_the_canonical_form_and_parses_back() {
        for (text, shown) in [
            ("leader(3)", "kafka:leader(wiber.messages/3)"),
            ("controller", "kafka:controller"),
            ("coordinator", "kafka:coordinator(wiber-consumers)"),
        ] {
            let role = parse(text).unwrap();
            assert_eq!(role.to_string(), shown);
            assert_eq!(parse(shown).unwrap(), role);
        }
    }

    #[test]
    fn parse_errors_say_why_and_list_the_forms() {
        for (text, why) in [
            ("leader", "leader needs a partition"),
            ("leader()", "leader needs a partition"),
            ("leader(x)", "\"x\" is not a partition number"),
            (
                "leader(wiber.messages/-1)",
                "\"-1\" is not a partition number",
            ),
            ("leader(bad topic/1)", "contains ' '"),
            ("leader(/1)", "the topic name is empty"),
            ("leader(3", "closing parenthesis is missing"),
            ("controller(1)", "controller takes no argument"),
            ("coordinator(a(b))", "cannot contain parentheses"),
            ("follower(1)", "unknown role \"follower\""),
            ("", "the role is missing"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("kafka:leader(<topic>/<partition>)"), "{err}");
            assert!(
                err.contains("kafka:coordinator (group wiber-consumers)"),
                "{err}"
            );
        }
    }

    fn part(partition: i32, leader: Option<i32>) -> PartitionInfo {
        PartitionInfo {
            partition,
            leader,
            replicas: vec![1, 2, 3],
            isr: leader.into_iter().collect(),
        }
    }

    #[test]
    fn leader_of_names_the_node_or_says_why_not() {
        let parts = [part(0, Some(2)), part(1, None)];
        match leader_of(TOPIC, 0, &parts).unwrap() {
            Attempt::Done(r) => assert_eq!(
                r,
                Resolved {
                    role: "kafka:leader(wiber.messages/0)".into(),
                    node_id: 2,
                    detail: "replicas [1,2,3], isr [2]".into(),
                }
            ),
            other => panic!("{other:?}"),
        }
        match leader_of(TOPIC, 1, &parts).unwrap() {
            Attempt::Retry(why) => {
                assert!(why.contains("wiber.messages/1 has no leader"), "{why}");
                assert!(why.contains("election may be in progress"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let err = leader_of(TOPIC, 7, &parts).unwrap_err().to_string();
        assert_eq!(
            err,
            "topic wiber.messages has no partition 7: it has 2 partitions (0..=1)"
        );
    }

    #[test]
    fn resolved_maps_to_the_stack_instance() {
        let r = |node_id| Resolved {
            role: "kafka:controller".into(),
            node_id,
            detail: String::new(),
        };
        assert_eq!(r(3).instance().unwrap().to_string(), "kafka#3");
        let err = r(0).instance().unwrap_err().to_string();
        assert!(
            err.contains("node id 0, which names no stack instance"),
            "{err}"
        );
    }

    #[test]
    fn varints_and_compact_strings_round_trip() {
        let mut w = Writer::default();
        w.uvarint(0);
        w.uvarint(127);
        w.uvarint(300);
        w.uvarint(u32::MAX);
        w.compact_string("ab");
        let bytes = w.finish();
        assert_eq!(
            bytes,
            [0x00, 0x7f, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x03, b'a', b'b']
        );
        let mut r = Reader::new(&bytes);
        for want in [0, 127, 300, u32::MAX] {
            assert_eq!(r.uvarint().unwrap(), want);
        }
        assert_eq!(r.compact_string().unwrap().as_deref(), Some("ab"));
        assert!(r
            .i16()
            .unwrap_err()
            .to_string()
            .contains("answer ends early"));
        // 0 is a null compact string.
        assert_eq!(Reader::new(&[0]).compact_string().unwrap(), None);
    }

    #[test]
    fn tag_sections_with_fields_are_skipped() {
        // Two tagged fields (tag 0: 2 bytes, tag 5: 1 byte), then an int16.
        let bytes = [0x02, 0x00, 0x02, 0xaa, 0xbb, 0x05, 0x01, 0xcc, 0x00, 0x07];
        let mut r = Reader::new(&bytes);
        r.skip_tags().unwrap();
        assert_eq!(r.i16().unwrap(), 7);
    }

    #[test]
    fn describe_quorum_request_bytes() {
        let frame = encode_request(KafkaApi::DescribeQuorum, 0, 7, &encode_describe_quorum());
        let mut want = vec![0, 0, 0, 47]; // size of what follows
        want.extend_from_slice(&[0, 55, 0, 0, 0, 0, 0, 7]); // api key, version, correlation
        want.extend_from_slice(&[0, 8]); // client id: int16 length ...
        want.extend_from_slice(b"wiberctl");
        want.push(0); // header tags
        want.push(2); // one topic
        want.push(19); // compact string of 18 bytes
        want.extend_from_slice(b"__cluster_metadata");
        want.push(2); // one partition
        want.extend_from_slice(&[0, 0, 0, 0]); // partition 0
        want.extend_from_slice(&[0, 0, 0]); // partition, topic and request tags
        assert_eq!(frame, want);
    }

    #[test]
    fn api_versions_request_has_no_tag_section() {
        let frame = encode_request(KafkaApi::ApiVersions, 0, 1, &[]);
        let mut want = vec![0, 0, 0, 18, 0, 18, 0, 0, 0, 0, 0, 1, 0, 8];
        want.extend_from_slice(b"wiberctl");
        assert_eq!(frame, want);
    }

    #[test]
    fn find_coordinator_request_bodies() {
        let mut v3 = vec![16];
        v3.extend_from_slice(b"wiber-consumers");
        v3.extend_from_slice(&[0, 0]); // key type group, tags
        assert_eq!(encode_find_coordinator(3, GROUP), v3);
        let mut v4 = vec![0, 2, 16]; // key type group, one key
        v4.extend_from_slice(b"wiber-consumers");
        v4.push(0);
        assert_eq!(encode_find_coordinator(4, GROUP), v4);
        assert_eq!(encode_find_coordinator(6, GROUP), v4);
    }

    #[test]
    fn api_versions_answer_and_version_choice() {
        let mut w = Writer::default();
        w.i16(0);
        w.i32(3);
        for (key, min, max) in [(10, 0, 6), (18, 0, 4), (55, 0, 2)] {
            w.i16(key);
            w.i16(min);
            w.i16(max);
        }
        let offered = decode_api_versions(&w.finish()).unwrap();
        let range = |key| {
            offered
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, r)| r.clone())
        };
        assert_eq!(
            pick_version(KafkaApi::FindCoordinator, range(10)).unwrap(),
            3
        );
        assert_eq!(
            pick_version(KafkaApi::DescribeQuorum, range(55)).unwrap(),
            0
        );
        // A future broker that dropped the versions we speak, and one without the API.
        let err = pick_version(KafkaApi::FindCoordinator, Some(7..=9))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("offers FindCoordinator v7..=v9, wiberctl speaks v3..=v6"),
            "{err}"
        );
        assert_eq!(
            pick_version(KafkaApi::DescribeQuorum, Some(1..=5)).unwrap(),
            1
        );
        let err = pick_version(KafkaApi::DescribeQuorum, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not offer DescribeQuorum (api key 55)"),
            "{err}"
        );
    }

    /// A DescribeQuorum answer as a broker encodes it, for `version`.
    fn quorum_answer(version: i16, leader_id: i32, epoch: i32) -> Vec<u8> {
        let mut w = Writer::default();
        w.i16(0);
        if version >= 2 {
            w.uvarint(0); // null error message
        }
        w.compact_array_len(1);
        w.compact_string(METADATA_TOPIC);
        w.compact_array_len(1);
        w.i32(0);
        w.i16(0);
        if version >= 2 {
            w.uvarint(0);
        }
        w.i32(leader_id);
        w.i32(epoch);
        w.bytes(&396i64.to_be_bytes());
        for list in [&[1, 2, 3][..], &[4][..]] {
            // voters, then observers
            w.compact_array_len(list.len());
            for id in list {
                w.i32(*id);
                if version >= 2 {
                    w.bytes(&[0xab; 16]);
                }
                w.bytes(&396i64.to_be_bytes());
                if version >= 1 {
                    w.bytes(&(-1i64).to_be_bytes());
                    w.bytes(&1_700_000_000_000i64.to_be_bytes());
                }
                w.empty_tags();
            }
        }
        w.empty_tags(); // partition
        w.empty_tags(); // topic
        if version >= 2 {
            w.compact_array_len(0); // nodes
        }
        w.empty_tags();
        w.finish()
    }

    #[test]
    fn describe_quorum_answer_v0_by_hand() {
        let mut body = vec![0, 0, 2, 19]; // no error, one topic, its name
        body.extend_from_slice(b"__cluster_metadata");
        body.push(2); // one partition
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // index 0, no error
        body.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 1]); // leader 3, epoch 1
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0x8c]); // high watermark 396
        body.push(2); // one voter
        body.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 0x8c, 0]);
        body.extend_from_slice(&[1, 0, 0, 0]); // no observers; tags
        let answer = decode_describe_quorum(0, &body).unwrap();
        assert_eq!(
            answer.partition,
            Some(QuorumPartition {
                error: 0,
                error_message: None,
                leader_id: 3,
                leader_epoch: 1,
                high_watermark: 396,
                voters: vec![3],
            })
        );
    }

    #[test]
    fn describe_quorum_answers_of_every_version() {
        for version in 0..=2 {
            let answer = decode_describe_quorum(version, &quorum_answer(version, 2, 4)).unwrap();
            match judge_quorum(answer).unwrap() {
                Attempt::Done(r) => assert_eq!(
                    r,
                    Resolved {
                        role: "kafka:controller".into(),
                        node_id: 2,
                        detail: "quorum leader epoch 4, voters [1,2,3], high watermark 396".into(),
                    },
                    "v{version}"
                ),
                other => panic!("v{version}: {other:?}"),
            }
        }
        let leaderless = decode_describe_quorum(1, &quorum_answer(1, -1, 5)).unwrap();
        assert!(
            matches!(judge_quorum(leaderless), Ok(Attempt::Retry(why)) if why.contains("no leader"))
        );
    }

    #[test]
    fn describe_quorum_errors_retry_or_stop() {
        let answer = |error| QuorumAnswer {
            error,
            error_message: Some("details".into()),
            partition: None,
        };
        assert!(
            matches!(judge_quorum(answer(41)), Ok(Attempt::Retry(why)) if why.contains("NOT_CONTROLLER (41): details"))
        );
        match judge_quorum(answer(31)) {
            Err(Failure::Fatal(e)) => {
                assert!(e.to_string().contains("CLUSTER_AUTHORIZATION_FAILED"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// A FindCoordinator answer as a broker encodes it, for `version`.
    fn coordinator_answer(version: i16, error: i16, node_id: i32) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(0); // throttle
        if version >= 4 {
            w.compact_array_len(2);
            for (key, node) in [("other", 9), (GROUP, node_id)] {
                w.compact_string(key);
                w.i32(node);
                w.compact_string("127.0.0.1");
                w.i32(44187);
                w.i16(error);
                w.uvarint(0);
                w.empty_tags();
            }
        } else {
            w.i16(error);
            w.uvarint(0);
            w.i32(node_id);
            w.compact_string("127.0.0.1");
            w.i32(44187);
        }
        w.empty_tags();
        w.finish()
    }

    #[test]
    fn find_coordinator_answers_v3_and_v4() {
        for version in [3, 4, 6] {
            let a = decode_find_coordinator(version, &coordinator_answer(version, 0, 2), GROUP)
                .unwrap();
            match judge_coordinator(GROUP, a).unwrap() {
                Attempt::Done(r) => assert_eq!(
                    r,
                    Resolved {
                        role: "kafka:coordinator(wiber-consumers)".into(),
                        node_id: 2,
                        detail: "group coordinator at 127.0.0.1:44187".into(),
                    }
                ),
                other => panic!("v{version}: {other:?}"),
            }
            let a = decode_find_coordinator(version, &coordinator_answer(version, 15, -1), GROUP)
                .unwrap();
            assert!(
                matches!(judge_coordinator(GROUP, a), Ok(Attempt::Retry(why)) if why.contains("COORDINATOR_NOT_AVAILABLE (15)"))
            );
        }
        let a = decode_find_coordinator(3, &coordinator_answer(3, 30, -1), GROUP).unwrap();
        assert!(matches!(
            judge_coordinator(GROUP, a),
            Err(Failure::Fatal(_))
        ));
    }

    /// A stand-in broker on 127.0.0.1:0: answers ApiVersions with `apis` and every other
    /// request with the next of `answers` (header v1). Returns its address.
    async fn fake_broker(apis: Vec<(i16, i16, i16)>, answers: Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (apis, answers) = (apis.clone(), answers.clone());
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 4];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
                        stream.read_exact(&mut req).await.unwrap();
                        let mut r = Reader::new(&req);
                        let (key, _version, correlation) =
                            (r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap());
                        let mut w = Writer::default();
                        w.i32(correlation);
                        if key == KafkaApi::ApiVersions.key() {
                            w.i16(0);
                            w.i32(apis.len() as i32);
                            for (k, min, max) in &apis {
                                w.i16(*k);
                                w.i16(*min);
                                w.i16(*max);
                            }
                        } else {
                            w.empty_tags();
                            w.bytes(&answers.lock().unwrap().pop_front().expect("an answer left"));
                        }
                        let body = w.finish();
                        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
                        frame.extend_from_slice(&body);
                        stream.write_all(&frame).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    /// An address nothing listens on: connecting is refused at once.
    async fn dead_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    const APIS: [(i16, i16, i16); 3] = [(10, 0, 6), (18, 0, 4), (55, 0, 2)];

    #[tokio::test]
    async fn skips_dead_brokers_and_waits_out_an_election() {
        let broker = fake_broker(
            APIS.to_vec(),
            vec![quorum_answer(0, -1, 4), quorum_answer(0, 3, 5)],
        )
        .await;
        let bootstrap = format!("{}, {broker}", dead_addr().await);
        let r = resolve(&bootstrap, &KafkaRole::Controller, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.node_id, r.detail.contains("epoch 5")), (3, true));
    }

    #[tokio::test]
    async fn waits_for_a_coordinator_to_become_available() {
        let broker = fake_broker(
            APIS.to_vec(),
            vec![coordinator_answer(3, 15, -1), coordinator_answer(3, 0, 1)],
        )
        .await;
        let role = KafkaRole::Coordinator {
            group: GROUP.into(),
        };
        let r = resolve(&broker, &role, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.node_id, 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_timeout_saying_why() {
        let broker = fake_broker(APIS.to_vec(), vec![quorum_answer(0, -1, 4); 20]).await;
        let err = resolve(&broker, &KafkaRole::Controller, Duration::from_millis(600))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("cannot resolve kafka:controller: no final DescribeQuorum answer"),
            "{text}"
        );
        assert!(
            text.contains("the KRaft quorum has no leader (epoch 4"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn stops_at_once_without_a_common_version() {
        let broker = fake_broker(vec![(18, 0, 4)], vec![]).await;
        let err = resolve(&broker, &KafkaRole::Controller, Duration::from_secs(30))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("does not offer DescribeQuorum"), "{text}");
    }

    #[tokio::test]
    async fn all_brokers_down_is_reported_per_address() {
        let (a, b) = (dead_addr().await, dead_addr().await);
        let err = resolve(
            &format!("{a},{b}"),
            &KafkaRole::Controller,
            Duration::from_millis(400),
        )
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&format!("{a}: cannot connect")), "{text}");
        assert!(text.contains(&format!("{b}: cannot connect")), "{text}");
        assert!(text.contains("wiberctl stack status"), "{text}");
    }
}
