//! `wiberctl store fill|check|explain`: flags → [`crate::store`], then the rendering.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wiber_model::contract::{defaults, env};

use super::args::StackArgs;
use crate::exit::{self, Exit};
use crate::output;
use crate::runtime::{NoStack, Stack};
use crate::store::{self, fill::FillOptions, StoreAddr};

#[derive(Subcommand)]
pub enum StoreCmd {
    /// FIXTURE: write made-up messages straight to the store, to test reads at scale.
    #[command(
        after_help = "Writes FIXTURE documents, not messages anyone sent: they never pass \
through the API or Kafka. Each is a stored message as the consumer writes it, in conversations \
0..N/size between fixture-u<k>a and fixture-u<k>b, with _id fixture-<fill id>-c<k>-s<seq> (a \
fresh fill id per run, so fills add up and never collide), timestamps increasing and ending about \
now, and --content-bytes of word-like content. They go through the MongoDB wire with unordered \
insert_many batches from a few concurrent writers: on FerretDB-on-PostgreSQL the GIN indexes and \
the count triggers see them as any consumer write, so the API's counts include them exactly.

`verify` never mistakes them for a run's messages (it reads a run by its own users and ids).
Before writing, the collection's counts collection (<collection>_counts) is created if missing, \
and first when the messages collection does not exist yet: that order is what turns exact \
counting on for it.

--json: {fixture, fill_id, store, messages, conversations, conversation_size, content_bytes, \
seconds, docs_per_s, created_counts_collection, exact_counts, notes}.
Exit codes: 0 written; 2 the store could not be reached or a write failed (the fill id names \
what was written).

Examples:
  wiberctl store fill --messages 1000000                 # 1000 conversations of 1000
  wiberctl store fill --messages 20000 --conversation-size 5000 --content-bytes 300
  wiberctl store fill --messages 100000 --mongo-uri mongodb://127.0.0.1:27017 --json"
    )]
    Fill(FillArgs),
    /// Is the PostgreSQL under FerretDB equipped: GIN indexes, count triggers, `$exact`?
    #[command(
        after_help = "Looks in the PostgreSQL under FerretDB at the stack's collection \
for what server/sql/ferretdb-postgres.sql puts there: the event trigger that equips every new \
collection, a GIN index on each of _id, conversation and participants (FerretDB's equality is \
jsonb containment, which only a GIN index serves), the two count triggers, and the `$exact` \
marker that makes the API trust the counters. Each gap is named with what it costs and the fix.

Exit codes: 0 everything in place; 1 something is missing; 2 cannot check (no PostgreSQL: a \
plain MongoDB store or FerretDB on SQLite; or it cannot be reached).

Examples:
  wiberctl store check
  wiberctl store check --json | jq '.items[] | select(.ok | not)'
  wiberctl store check --mongo-uri mongodb://127.0.0.1:27017 --postgres-url postgres://wiber@127.0.0.1:5432/ferretdb"
    )]
    Check(TargetArgs),
    /// How the store answers each read the API makes, and whether an index serves it.
    #[command(
        after_help = "For each read of the API (conversation page: equality on \
conversation + sort; user page: equality on participants + sort; count: equality on _id in the \
counts collection) runs MongoDB's `explain` (verbosity queryPlanner) with a value the store \
holds, and reports FerretDB's filterPushdown / sortPushdown / limitPushdown and, from the \
PostgreSQL plan it returns, whether the filter is served by an index (Index Scan, Bitmap Index \
Scan on a *_gin index) or by a Seq Scan. A Seq Scan is asked again with sequential scans off: \
when an index serves it then, PostgreSQL only preferred reading a small table whole, and the \
index is there for when it pays. On MongoDB the winning plan's IXSCAN / COLLSCAN is read.

FerretDB 1.24 pushes no sort or limit down: a page costs the size of its conversation, read \
through the index.

Exit codes: 0 every read index-served; 1 a read is not (named, with why); 2 cannot explain \
(the store unreachable, or its messages collection does not exist yet).

Examples:
  wiberctl store explain
  wiberctl store explain --json | jq '.[] | {read, index_served, detail}'"
    )]
    Explain(TargetArgs),
}

/// Which store: the stack's (`--project`, `--runtime`), or one given by address.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// MongoDB/FerretDB connection string of the store (default: the stack's). Given, the
    /// stack is not consulted: give --postgres-url too for what needs PostgreSQL.
    #[arg(long, env = env::MONGO_URI, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// Database of the messages (default: the stack's, else wiber).
    #[arg(long, env = env::MONGO_DB)]
    pub mongo_db: Option<String>,
    /// Collection of the messages (default: the stack's, else messages).
    #[arg(long, env = env::MONGO_COLLECTION)]
    pub mongo_collection: Option<String>,
    /// The PostgreSQL under FerretDB, postgres://user@host:port/ferretdb (default: the stack's).
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
    #[command(flatten)]
    pub stack: StackArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FillArgs {
    /// Messages to write in all.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Messages per conversation (the last one holds the remainder).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub conversation_size: u64,
    /// Bytes of content per message (the API accepts up to 5000).
    #[arg(long, default_value_t = 100)]
    pub content_bytes: usize,
    /// Documents per insert_many.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub async fn run(cmd: StoreCmd, json: bool) -> Result<Exit> {
    match cmd {
        StoreCmd::Fill(args) => fill(args, json).await,
        StoreCmd::Check(args) => check(args, json).await,
        StoreCmd::Explain(args) => explain(args, json).await,
    }
}

/// The store of the flags, else of the stack.
async fn resolve(t: &TargetArgs) -> Result<StoreAddr> {
    if let Some(uri) = &t.mongo_uri {
        return Ok(StoreAddr {
            mongo_uri: uri.clone(),
            db: t
                .mongo_db
                .clone()
                .unwrap_or_else(|| defaults::MONGO_DB.into()),
            collection: t
                .mongo_collection
                .clone()
                .unwrap_or_else(|| defaults::MONGO_COLLECTION.into()),
            postgres_url: t.postgres_url.clone(),
        });
    }
    let stack =
        match Stack::open(&t.stack.locator()).await {
            Ok(s) => s,
            Err(e) if e.downcast_ref::<NoStack>().is_some() => return Err(e.context(
                "no stack to find the store of: bring one up (`wiberctl stack up`), pick it with \
                 --project / --runtime, or give the store with --mongo-uri",
            )),
            Err(e) => return Err(e),
        };
    let ep = stack.endpoints().await.with_context(|| {
        format!(
            "cannot read the endpoints of stack {:?} (give --mongo-uri instead)",
            t.stack.project
        )
    })?;
    let Some(mongo_uri) = ep.mongo_uri else {
        bail!(
            "stack {:?} has no mongo instance with a published port (`wiberctl stack status`)",
            t.stack.project
        );
    };
    Ok(StoreAddr {
        mongo_uri,
        db: t.mongo_db.clone().unwrap_or(ep.names.db),
        collection: t.mongo_collection.clone().unwrap_or(ep.names.collection),
        postgres_url: t.postgres_url.clone().or(ep.postgres_url),
    })
}

async fn fill(args: FillArgs, json: bool) -> Result<Exit> {
    let addr = resolve(&args.target).await?;
    let opts = FillOptions {
        messages: args.messages,
        conversation_size: args.conversation_size,
        content_bytes: args.content_bytes,
        batch: args.batch as usize,
        writers: args.writers as usize,
    };
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal && !json {
        let bar = ProgressBar::new(opts.messages);
        bar.set_style(
            ProgressStyle::with_template(
                "fixture fill [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} docs, {per_sec}, eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    if !json {
        eprintln!(
            "writing {} FIXTURE messages ({} conversations of up to {}) to {}",
            opts.messages,
            opts.conversations(),
            opts.conversation_size,
            addr.describe()
        );
    }
    // Off a terminal (CI logs), a plain line every 5 s instead of a bar.
    let mut plain = (!terminal && !json).then(Instant::now);
    let started = Instant::now();
    let total = opts.messages;
    let summary = store::fill::fill(&addr, &opts, |n| {
        bar.set_position(n);
        if let Some(last) = &mut plain {
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "  [{:>3}s] fixture fill: {n}/{total} docs",
                    started.elapsed().as_secs()
                );
            }
        }
    })
    .await;
    bar.finish_and_clear();
    let s = summary?;
    if json {
        output::json(&s);
        return Ok(exit::PASS);
    }
    println!(
        "FIXTURE written (made-up documents, not messages anyone sent): {} messages in {} \
         conversations of up to {}, {} bytes of content each, to {}",
        s.messages, s.conversations, s.conversation_size, s.content_bytes, s.store
    );
    println!(
        "  {:.1} s, {:.0} docs/s; fill id {id}: _id fixture-{id}-c<k>-s<seq>, users \
         fixture-u<k>a / fixture-u<k>b, k in 0..{}",
        s.seconds,
        s.docs_per_s,
        s.conversations,
        id = s.fill_id
    );
    println!(
        "  counts: {}",
        if s.exact_counts {
            "exact counters kept by the store (the API's counts include the fixture)"
        } else {
            "no exact counters (the API counts by reading documents)"
        }
    );
    for n in &s.notes {
        println!("  note: {n}");
    }
    Ok(exit::PASS)
}

async fn check(args: TargetArgs, json: bool) -> Result<Exit> {
    let addr = resolve(&args).await?;
    let r = store::check::check(&addr).await?;
    if json {
        output::json(&r);
    } else {
        let mut t = output::table(&["item", "", "detail"]);
        for i in &r.items {
            t.add_row(vec![
                i.name.clone(),
                if i.ok { "ok" } else { "MISSING" }.to_string(),
                i.detail.clone(),
            ]);
        }
        println!("{t}");
        for i in r.items.iter().filter(|i| !i.ok) {
            if let Some(fix) = &i.fix {
                println!("fix {}: {fix}", i.name);
            }
        }
        println!(
            "{}: {} (PostgreSQL {})",
            if r.ok { "ok" } else { "incomplete" },
            r.store,
            r.postgres_url
        );
    }
    Ok(if r.ok { exit::PASS } else { exit::FAIL })
}

async fn explain(args: TargetArgs, json: bool) -> Result<Exit> {
    let addr = resolve(&args).await?;
    let reads = store::explain::explain(&addr).await?;
    let all = reads.iter().all(|r| r.index_served);
    if json {
        output::json(&reads);
    } else {
        let flag = |b: Option<bool>| b.map_or("-".to_string(), |b| b.to_string());
        let mut t = output::table(&[
            "read",
            "filter",
            "pushdown filter/sort/limit",
            "index-served",
            "how",
        ]);
        for r in &reads {
            t.add_row(vec![
                r.read.clone(),
                format!("{}.{} {}", addr.db, r.collection, r.filter),
                format!(
                    "{} / {} / {}",
                    flag(r.filter_pushdown),
                    flag(r.sort_pushdown),
                    flag(r.limit_pushdown)
                ),
                if r.index_served { "yes" } else { "NO" }.to_string(),
                r.detail.clone(),
            ]);
        }
        println!("{t}");
        let bad: Vec<&str> = reads
            .iter()
            .filter(|r| !r.index_served)
            .map(|r| r.read.as_str())
            .collect();
        if bad.is_empty() {
            println!("every read is index-served ({})", addr.describe());
        } else {
            println!("not index-served: {} ({})", bad.join(", "), addr.describe());
        }
    }
    Ok(if all { exit::PASS } else { exit::FAIL })
}
