//! `wiberctl bench`: flags → [`crate::bench::BenchOptions`], then the summary.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wiber_model::contract::{defaults, env};
use wiber_model::report::{ReadSource, ReadsConfig};

use super::args::StackArgs;
use crate::bench::reads::{ReadRates, DEFAULT_FIXTURE_MESSAGES, PAGE};
use crate::bench::{self, print, slo::Slo, BenchOptions, Mode};
use crate::exit::{self, Exit};
use crate::output;
use crate::runfile::StoreTarget;
use crate::units::parse_duration;
use crate::verify::store::{DEFAULT_KAFKA, DEFAULT_MONGO_URI};

/// Where the run's messages are stored and which consumer group moves them there
/// (recorded in `run.json`, so `verify` uses the same by default).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// MongoDB (or FerretDB) connection string, read directly for end-to-end latency and verify.
    #[arg(long, env = env::MONGO_URI, default_value = DEFAULT_MONGO_URI)]
    pub mongo_uri: String,
    /// Database the consumers write to (the services' MONGO_DB).
    #[arg(long, env = env::MONGO_DB, default_value = defaults::MONGO_DB)]
    pub mongo_db: String,
    /// Collection the consumers write to (the services' MONGO_COLLECTION).
    #[arg(long, env = env::MONGO_COLLECTION, default_value = defaults::MONGO_COLLECTION)]
    pub mongo_collection: String,
    /// Kafka bootstrap servers, to wait until the consumer group has drained.
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, default_value = DEFAULT_KAFKA)]
    pub kafka: String,
    /// Consumer group of the store writers.
    #[arg(long, env = env::KAFKA_CONSUMER_GROUP, default_value = defaults::CONSUMER_GROUP)]
    pub group: String,
    /// Topic the api publishes to.
    #[arg(long, env = env::KAFKA_TOPIC, default_value = defaults::TOPIC)]
    pub topic: String,
    /// The PostgreSQL under FerretDB, where verify reads the store's exact counters
    /// (default: the stack's, when the stack's store is the one given above).
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
}

impl StoreArgs {
    pub fn target(&self) -> StoreTarget {
        StoreTarget {
            mongo_uri: self.mongo_uri.clone(),
            mongo_db: self.mongo_db.clone(),
            mongo_collection: self.mongo_collection.clone(),
            postgres_url: self.postgres_url.clone(),
            kafka: self.kafka.clone(),
            group: self.group.clone(),
            topic: self.topic.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  wiberctl bench --rate 5000 --duration 60s --warmup 5s      # open loop, constant arrival rate
  wiberctl bench --max --duration 20s --connections 64 --conversations 64   # closed loop: the ceiling
  wiberctl bench --find-max --slo 'ack.p99<50ms' --rate 1000 --duration 10s
  wiberctl bench --rate 500 --reads conversation=200,user=50,count=20   # writes and reads together
  wiberctl bench --rate 100 --reads conversation=500 --read-fixture 10000 --read-fixture-size 1000
  wiberctl verify                                             # check the latest run's delivery

Latency is measured from each request's due time (start + i/rate), so a slow server cannot
hide behind a slowed-down generator; service time (from the actual send) is reported too.
Ack and service latency count ok answers only (failed/unknown ones are reported apart), and
the achieved rate is goodput: ok answers per second (answered/s, any outcome, beside it).
Concurrency: each conversation has at most one request in flight, and all of them together at
most as many as there are in-flight slots (one keep-alive connection each). In open loop the
slots start at --connections and grow by one whenever a due request finds them all busy, up to
--max-connections, so a --rate is limited by the stack rather than by a default (Little's law:
rate x service time must be in flight). In closed loop (--max) the pool stays at --connections:
that concurrency is what it measures, so give it as many --conversations. When requests start
late, the summary says whether the generator was the limit (generator-bound: its slots at the
cap, its own CPU, its collector) or the conversations were all waiting.
Reads (--reads) run open loop beside the writes, each kind at its own rate and from in-flight
slots of their own: conversation pages (GET /messages/{a}/{b}?limit=50&skip=K, any page of what
the conversation has acknowledged so far), user pages (GET /messages/user/{u}?limit=50) and
counts (GET /messages/count, ?user1=u or ?user1=a&user2=b), of the run's own conversations, or
with --read-fixture N of the fixture `wiberctl store fill` wrote. Each kind has its own latency
histogram (ok reads, from the due time) and error counts; failed reads are printed as READ ERRORS
and logged with their paths in reads.jsonl, but only --slo decides the exit status.
Writes reports/<UTC time>-<name>/: ledger.jsonl, report.json/.md/.html, ack.hgrm, e2e.hgrm
(and reads.jsonl, reads-<kind>.hgrm with --reads).
Exit 1 when --slo is missed (or --find-max finds no rate meeting it).")]
pub struct BenchArgs {
    /// Target arrival rate, requests per second (open loop). With --find-max: the first step's rate.
    #[arg(long, required_unless_present_any = ["max", "find_max"])]
    pub rate: Option<f64>,
    /// Length of the measured window (per step with --find-max).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Conversations (user pairs); each sends sequentially, one request in flight, so the
    /// run never has more than this many in flight whatever the connections.
    #[arg(long, default_value_t = 1000)]
    pub conversations: u32,
    /// Content size in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// In-flight slots (HTTP keep-alive connections) to start with; closed loop (--max): all
    /// of them, a fixed pool.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Open loop: the most in-flight slots the pool may grow to when requests find every
    /// slot busy (never below --connections; also bounded by the open-file limit).
    #[arg(long, default_value_t = bench::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Load before the measured window, left out of the statistics (but in the ledger).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Re-send an `unknown` outcome (timeout, 5xx, connection error) up to N times, same messageId.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Name of the run (part of the run directory's name).
    #[arg(long, default_value = "bench")]
    pub name: String,
    /// Closed loop: each conversation sends as soon as its previous request was answered.
    #[arg(long, conflicts_with_all = ["find_max", "rate"])]
    pub max: bool,
    /// Step the rate up (from --rate, times --step-factor) and report the highest meeting --slo.
    #[arg(long, requires = "slo")]
    pub find_max: bool,
    /// Reads mixed into the writes, each kind at its own rate (reads per second):
    /// KIND=RATE[,KIND=RATE...] with KIND conversation (a page of a conversation), user (a
    /// user's recent messages) or count (total, per user, per conversation), e.g.
    /// `--reads conversation=200,user=50,count=20`. Open loop like the writes.
    #[arg(long, value_name = "KIND=RATE,...", value_parser = |s: &str| s.parse::<ReadRates>())]
    pub reads: Option<ReadRates>,
    /// Read the fixture `wiberctl store fill` wrote (its conversations 0..N, picked
    /// uniformly) instead of the run's own conversations. N is how many conversations it has.
    #[arg(long, value_name = "N_CONVERSATIONS", requires = "reads")]
    pub read_fixture: Option<u64>,
    /// Messages per fixture conversation: conversation reads pick any of its pages.
    #[arg(long, value_name = "MESSAGES", default_value_t = DEFAULT_FIXTURE_MESSAGES, requires = "read_fixture")]
    pub read_fixture_size: u64,
    /// Objectives, e.g. `ack.p99<50ms,ack.p999<200ms` (metrics ack, service, e2e). Exit 1 if missed.
    #[arg(long)]
    pub slo: Option<Slo>,
    /// --find-max: rate multiplier between steps.
    #[arg(long, default_value_t = 1.25)]
    pub step_factor: f64,
    /// --find-max: highest rate to try.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// Where run directories go. Default: `reports/` at the repository root (or here).
    #[arg(long, env = "WIBER_REPORTS_DIR")]
    pub reports_dir: Option<PathBuf>,
    /// Fault events file to copy events of the run from. Default: REPORTS_DIR/events.jsonl (where `chaos` writes).
    #[arg(long, env = "WIBER_EVENTS")]
    pub events: Option<PathBuf>,
    /// Skip end-to-end latency (no Kafka/MongoDB access after the run).
    #[arg(long)]
    pub no_e2e: bool,
    /// How long to wait for the consumer group to drain before measuring end-to-end latency.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The stack whose CPU and memory per service the report shows (sampled when found).
    #[command(flatten)]
    pub stack: StackArgs,
}

/// The default reports directory: `<repo>/reports`, or `./reports` outside the repository.
pub fn default_reports_dir() -> PathBuf {
    crate::provision::repo_root()
        .map(|r| r.join("reports"))
        .unwrap_or_else(|_| PathBuf::from("reports"))
}

pub async fn run(
    args: BenchArgs,
    api_url: &str,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<Exit> {
    let mode = if args.max {
        Mode::Max
    } else if args.find_max {
        Mode::FindMax {
            start: args.rate.unwrap_or(500.0),
            factor: args.step_factor,
            max_rate: args.max_rate,
            slo: args
                .slo
                .clone()
                .expect("clap requires --slo with --find-max"),
        }
    } else {
        Mode::Open {
            rate: args.rate.expect("clap requires --rate"),
        }
    };
    let reports_dir = args.reports_dir.clone().unwrap_or_else(default_reports_dir);
    let opts = BenchOptions {
        api_url: api_url.to_string(),
        mode,
        duration: args.duration,
        warmup: args.warmup,
        conversations: args.conversations,
        size: args.size,
        connections: args.connections,
        max_connections: args.max_connections,
        retries: args.retries,
        timeout,
        name: args.name.clone(),
        events_file: Some(
            args.events
                .clone()
                .unwrap_or_else(|| reports_dir.join("events.jsonl")),
        ),
        reports_dir,
        target: StoreTarget {
            postgres_url: postgres_url_of(&args).await,
            ..args.store.target()
        },
        e2e: !args.no_e2e,
        drain_timeout: args.drain_timeout,
        slo: args.slo.clone(),
        progress: !json,
        progress_context: None,
        resources: Some(args.stack.locator()),
        reads: args.reads.as_ref().map(|r| ReadsConfig {
            rates: r.0.clone(),
            source: match args.read_fixture {
                Some(n) => ReadSource::Fixture {
                    conversations: n,
                    messages: args.read_fixture_size,
                },
                None => ReadSource::Run,
            },
            page: PAGE,
        }),
        run_id: None,
    };
    let result = bench::run(opts).await?;
    let r = &result.report;
    if json {
        output::json(&print::json(r));
    } else {
        if let Some(f) = &r.find_max {
            println!("{}", print::find_max_table(f));
            match f.best_rate {
                Some(b) => println!(
                    "highest rate meeting {}: {b:.0} req/s (summary below is that step)",
                    f.slo
                ),
                None => println!("no rate met {} (summary below is the last step)", f.slo),
            }
        }
        println!("{}", print::summary_table(r));
        for w in &r.summary.warnings {
            eprintln!("warning: {w}");
        }
        println!("report: {}", result.dir.display());
    }
    Ok(if result.slo_met {
        exit::PASS
    } else {
        exit::FAIL
    })
}

/// The PostgreSQL under the benched store: given, or the stack's when the stack's store
/// is the one benched (same host and port). `None` is not an error: verify then says the
/// store keeps no counters it can read.
async fn postgres_url_of(args: &BenchArgs) -> Option<String> {
    if let Some(u) = &args.store.postgres_url {
        return Some(u.clone());
    }
    let stack = crate::runtime::Stack::open(&args.stack.locator())
        .await
        .ok()?;
    let ep = stack.endpoints().await.ok()?;
    (server_of(ep.mongo_uri.as_deref()?) == server_of(&args.store.mongo_uri))
        .then_some(ep.postgres_url)
        .flatten()
}

/// `host:port` of a `mongodb://` URI (without user, path and options).
fn server_of(uri: &str) -> &str {
    let rest = uri.strip_prefix("mongodb://").unwrap_or(uri);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
