//! `wiberctl tail`: flags → [`crate::tail::TailOptions`], then one line per message.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wiber_model::contract::{defaults, env};
use wiber_model::conversation_key;

use super::args::StackArgs;
use crate::exit::{self, Exit};
use crate::runfile::StoreTarget;
use crate::runtime::{Endpoints, Stack};
use crate::tail::{self, Event, Filter, Mode, Start, StopReason, TailOptions};
use crate::units::parse_duration;
use crate::verify::store::{DEFAULT_KAFKA, DEFAULT_MONGO_URI};

#[derive(Args, Debug)]
#[command(
    after_help = "Shows each message as Kafka acknowledged it (partition, offset, key, time, \
from → to, a preview of the content), or with --stored once the consumers stored it in MongoDB \
(with how long after the API accepted it). Starts at the end of each partition unless \
--from-beginning or --last N. The Kafka consumer is assign-based: it never joins the consumer \
group (no rebalance of the real consumers) and commits nothing.

Where: --bootstrap/--topic (and --mongo-uri/... for --stored) win; otherwise the stack of \
--project is asked for its endpoints; otherwise the defaults of bench/verify (127.0.0.1:9094, \
mongodb://127.0.0.1:27017).

--json: one object per line, flushed: {\"source\", \"partition\", \"offset\", \"key\", \
\"kafkaTimestamp\" | \"storedAt\", \"messageId\", \"fromUser\", \"toUser\", \"content\", \
\"timestamp\", \"createdAt\"} (\"error\" instead of the message fields for a record that is not one).
A one-line summary goes to stderr at the end (also on Ctrl-C).

Exit codes: 0 stopped by Ctrl-C, --for, --count or a closed stdout; 1 --count was given and \
--for elapsed before that many messages were shown; 2 Kafka or MongoDB unreachable, bad flags.

Examples:
  wiberctl tail                                   # everything from now on
  wiberctl tail --user alice --last 20            # alice's recent and new messages
  wiberctl tail --conversation alice,bob --stored # as the consumers store them
  wiberctl tail --from alice --to bob --from-beginning --partition 3
  wiberctl tail --json --count 10 --for 30s | jq -c '[.partition, .offset, .content]'"
)]
pub struct TailArgs {
    /// Show messages once the consumers stored them in MongoDB (default: as Kafka acknowledged them).
    #[arg(long)]
    pub stored: bool,
    /// Only messages sent or received by this user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only this conversation (both directions): two users, comma-separated.
    #[arg(long, value_name = "A,B", value_parser = tail::parse_conversation)]
    pub conversation: Option<(String, String)>,
    /// Only messages from this user.
    #[arg(long = "from", value_name = "USER")]
    pub from_user: Option<String>,
    /// Only messages to this user.
    #[arg(long = "to", value_name = "USER")]
    pub to_user: Option<String>,
    /// Start at the oldest record each partition keeps.
    #[arg(long, conflicts_with = "last")]
    pub from_beginning: bool,
    /// Start N records before the end of each partition.
    #[arg(long, value_name = "N")]
    pub last: Option<u64>,
    /// Exit after N matching messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit after this long, e.g. 30s, 5m.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Read only this partition (repeatable). Default: all partitions of the topic.
    #[arg(long, value_name = "P")]
    pub partition: Vec<i32>,
    /// Characters of content shown per line (the JSON holds all of it).
    #[arg(long, default_value_t = 60, value_name = "CHARS")]
    pub preview: usize,
    /// Kafka bootstrap servers (default: the stack's, else 127.0.0.1:9094).
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Topic the api publishes to (default: the stack's).
    #[arg(long, env = env::KAFKA_TOPIC)]
    pub topic: Option<String>,
    /// --stored: MongoDB/FerretDB connection string (default: the stack's).
    #[arg(long, env = env::MONGO_URI, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// --stored: database the consumers write to (default: the stack's).
    #[arg(long, env = env::MONGO_DB)]
    pub mongo_db: Option<String>,
    /// --stored: collection the consumers write to (default: the stack's).
    #[arg(long, env = env::MONGO_COLLECTION)]
    pub mongo_collection: Option<String>,
    /// --stored: consumer group of the store writers (to tell a lost message from a slow one).
    #[arg(long, env = env::KAFKA_CONSUMER_GROUP)]
    pub group: Option<String>,
    /// --stored: how often the store is polled.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub poll: Duration,
    #[command(flatten)]
    pub stack: StackArgs,
}

impl TailArgs {
    fn mode(&self) -> Mode {
        if self.stored {
            Mode::Stored
        } else {
            Mode::Kafka
        }
    }

    fn start(&self) -> Start {
        match (self.from_beginning, self.last) {
            (true, _) => Start::Beginning,
            (false, Some(n)) => Start::Last(n),
            (false, None) => Start::End,
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            user: self.user.clone(),
            conversation: self
                .conversation
                .as_ref()
                .map(|(a, b)| conversation_key(a, b)),
            from: self.from_user.clone(),
            to: self.to_user.clone(),
        }
    }

    /// Whether every address this mode needs was given by a flag (or its variable).
    fn fully_given(&self) -> bool {
        let kafka = self.bootstrap.is_some() && self.topic.is_some();
        let store = self.mongo_uri.is_some()
            && self.mongo_db.is_some()
            && self.mongo_collection.is_some()
            && self.group.is_some();
        kafka && (!self.stored || store)
    }
}

/// A flag, else the stack's value, else the default.
fn pick(flag: &Option<String>, stack: Option<String>, default: &str) -> String {
    flag.clone()
        .or(stack)
        .unwrap_or_else(|| default.to_string())
}

fn options(args: &TailArgs, ep: Option<Endpoints>) -> TailOptions {
    let (kafka, mongo, names) = match ep {
        Some(e) => (e.kafka_bootstrap, e.mongo_uri, Some(e.names)),
        None => (None, None, None),
    };
    let name =
        |f: fn(&wiber_model::contract::Names) -> &String| names.as_ref().map(|n| f(n).clone());
    let bootstrap = pick(&args.bootstrap, kafka, DEFAULT_KAFKA);
    let topic = pick(&args.topic, name(|n| &n.topic), defaults::TOPIC);
    let store = args.stored.then(|| StoreTarget {
        mongo_uri: pick(&args.mongo_uri, mongo, DEFAULT_MONGO_URI),
        mongo_db: pick(&args.mongo_db, name(|n| &n.db), defaults::MONGO_DB),
        mongo_collection: pick(
            &args.mongo_collection,
            name(|n| &n.collection),
            defaults::MONGO_COLLECTION,
        ),
        postgres_url: None,
        kafka: bootstrap.clone(),
        group: pick(&args.group, name(|n| &n.group), defaults::CONSUMER_GROUP),
        topic: topic.clone(),
    });
    TailOptions {
        mode: args.mode(),
        filter: args.filter(),
        start: args.start(),
        partitions: args.partition.clone(),
        count: args.count,
        duration: args.duration,
        bootstrap,
        topic,
        store,
        poll: args.poll,
    }
}

pub async fn run(args: TailArgs, json: bool) -> anyhow::Result<Exit> {
    // The stack is asked only for what the flags leave open; no stack is not an error
    // (the defaults are those of `stack up`), so a tail of a remote broker needs no stack.
    let ep = if args.fully_given() {
        None
    } else {
        match Stack::open(&args.stack.locator()).await {
            Ok(stack) => Some(stack.endpoints().await.with_context(|| {
                format!(
                    "cannot read the endpoints of stack {:?} (give --bootstrap and --topic, \
                     and for --stored --mongo-uri, --mongo-db, --mongo-collection, --group)",
                    args.stack.project
                )
            })?),
            Err(e) => {
                // Not an error: the defaults are where `stack up` publishes. But say
                // so, so a wrong guess is not a mystery.
                eprintln!(
                    "tail: {e:#}; trying the defaults (set --bootstrap, or --project / --runtime)"
                );
                None
            }
        }
    };
    let opts = options(&args, ep);
    let preview = args.preview;
    let stdout = std::io::stdout();
    let emit = |e: Event<'_>| -> std::io::Result<()> {
        match e {
            Event::Started { starts } => {
                let offsets: Vec<String> = starts.iter().map(|(p, o)| format!("{p}@{o}")).collect();
                let store = opts
                    .store
                    .as_ref()
                    .map(|s| {
                        format!(
                            ", shown once stored in {}.{} at {}",
                            s.mongo_db, s.mongo_collection, s.mongo_uri
                        )
                    })
                    .unwrap_or_default();
                eprintln!(
                    "tail: following {} at {}{store}, {} ({}); Ctrl-C to stop",
                    opts.topic,
                    opts.bootstrap,
                    opts.start.describe(),
                    offsets.join(" ")
                );
                Ok(())
            }
            Event::Warning(w) => {
                eprintln!("tail: warning: {w}");
                Ok(())
            }
            Event::Line(line) => {
                let mut out = stdout.lock();
                if json {
                    serde_json::to_writer(&mut out, line)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}", tail::format_text(line, preview))?;
                }
                // One line at a time, so `| jq` or a test sees each message as it comes.
                out.flush()
            }
        }
    };
    let stop = async {
        // Without a signal handler Ctrl-C would kill the process before the summary.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let summary = tail::follow(&opts, stop, emit).await?;
    eprintln!("{}", summary.text());
    if let (Some(n), StopReason::Duration) = (opts.count, summary.reason) {
        eprintln!(
            "tail: --for elapsed after {} of the {n} messages asked for with --count",
            summary.shown
        );
        return Ok(exit::FAIL);
    }
    Ok(exit::PASS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TailArgs,
    }

    fn parse(argv: &[&str]) -> Result<TailArgs, clap::Error> {
        let mut full = vec!["tail"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| c.args)
    }

    #[test]
    fn flags_become_typed_options() {
        let a = parse(&["--conversation", "bob,alice", "--last", "5", "--stored"]).unwrap();
        assert_eq!(a.mode(), Mode::Stored);
        assert_eq!(a.start(), Start::Last(5));
        assert_eq!(
            a.filter().conversation,
            Some(conversation_key("alice", "bob"))
        );
        let a = parse(&["--from", "alice", "--to", "bob", "--from-beginning"]).unwrap();
        assert_eq!(a.mode(), Mode::Kafka);
        assert_eq!(a.start(), Start::Beginning);
        assert_eq!(
            (a.filter().from.as_deref(), a.filter().to.as_deref()),
            (Some("alice"), Some("bob"))
        );
        assert_eq!(parse(&[]).unwrap().start(), Start::End);
        assert!(parse(&["--from-beginning", "--last", "3"]).is_err());
        assert!(parse(&["--conversation", "alice"]).is_err());
        assert!(parse(&["--count", "0"]).is_err());
    }

    #[test]
    fn flags_win_over_the_stack_which_wins_over_defaults() {
        let a = parse(&["--stored", "--bootstrap", "127.0.0.1:1", "--mongo-db", "x"]).unwrap();
        let ep = Endpoints {
            api_url: None,
            kafka_bootstrap: Some("127.0.0.1:2".into()),
            mongo_uri: Some("mongodb://127.0.0.1:3".into()),
            postgres_url: None,
            names: wiber_model::contract::Names {
                topic: "t".into(),
                group: "g".into(),
                db: "d".into(),
                collection: "c".into(),
            },
        };
        let o = options(&a, Some(ep));
        assert_eq!(
            (o.bootstrap.as_str(), o.topic.as_str()),
            ("127.0.0.1:1", "t")
        );
        let s = o.store.unwrap();
        assert_eq!(
            (
                s.mongo_uri.as_str(),
                s.mongo_db.as_str(),
                s.mongo_collection.as_str(),
                s.group.as_str()
            ),
            ("mongodb://127.0.0.1:3", "x", "c", "g")
        );
        let o = options(&parse(&[]).unwrap(), None);
        assert_eq!(
            (o.bootstrap.as_str(), o.topic.as_str()),
            (DEFAULT_KAFKA, defaults::TOPIC)
        );
        assert!(o.store.is_none());
    }
}
