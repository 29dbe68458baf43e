//! `wiberctl kafka produce`: one record put on a topic as given, behind the API's back
//! ([`crate::kafka::dlq::produce_raw`]), for tests and drills: a record the API would
//! refuse, to see the consumers dead-letter it instead of stalling on it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use wiber_model::contract::env;

use super::args::StackArgs;
use crate::exit::{self, Exit};
use crate::kafka::dlq;
use crate::output;
use crate::runtime::Stack;
use crate::verify::store::DEFAULT_KAFKA;

#[derive(Debug, Subcommand)]
pub enum KafkaCmd {
    /// Produce one record as given (key, payload, headers), bypassing the API; acks=all.
    #[command(
        after_help = "The record goes to --topic exactly as given: no validation, no \
messageId, no timestamp added (what the API would do). Partitioned by its key, as the API's \
records are (the API keys a message by its conversation: `wiberctl tail` shows the keys). \
Waits for Kafka's acknowledgement and says where the record went.

--json: {\"topic\", \"partition\", \"offset\"}

Exit codes: 0 acknowledged; 2 Kafka unreachable, not acknowledged, the payload file unreadable, bad flags.

Examples:
  # A message the store cannot hold (U+0000 in its content), straight onto the message topic:
  printf '{\"messageId\":\"poison-1\",\"fromUser\":\"a\",\"toUser\":\"b\",\"content\":\"x\\\\u0000y\",\"timestamp\":1,\"createdAt\":\"1970-01-01T00:00:00.001Z\"}' > poison.json
  wiberctl kafka produce --topic wiber.messages --key $'a\\x1fb' --payload-file poison.json
  wiberctl kafka produce --topic wiber.messages --payload 'not json' --header origin=drill"
    )]
    Produce(ProduceArgs),
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to produce to (default: the stack's message topic).
    #[arg(long, env = env::KAFKA_TOPIC)]
    pub topic: Option<String>,
    /// The record's key (none: Kafka picks the partition).
    #[arg(long)]
    pub key: Option<String>,
    /// The payload, as text.
    #[arg(
        long,
        conflicts_with = "payload_file",
        required_unless_present = "payload_file"
    )]
    pub payload: Option<String>,
    /// The payload, the file's bytes as they are (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// A header NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Kafka bootstrap servers (default: the stack's, else 127.0.0.1:9094).
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    #[command(flatten)]
    pub stack: StackArgs,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "bad header {s:?}: expected NAME=VALUE, e.g. origin=drill"
        )),
    }
}

pub async fn run(cmd: KafkaCmd, json: bool) -> anyhow::Result<Exit> {
    match cmd {
        KafkaCmd::Produce(a) => produce(a, json).await,
    }
}

async fn produce(a: ProduceArgs, json: bool) -> anyhow::Result<Exit> {
    let payload: Vec<u8> = match (&a.payload, &a.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            use std::io::Read;
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read the payload from standard input")?;
            b
        }
        (None, Some(f)) => std::fs::read(f)
            .with_context(|| format!("cannot read the payload file {}", f.display()))?,
        (None, None) => anyhow::bail!("give --payload or --payload-file"),
    };
    // The stack is asked only for what the flags leave open, as `tail` and `dlq` do.
    let (bootstrap, topic) = match (&a.bootstrap, &a.topic) {
        (Some(b), Some(t)) => (b.clone(), t.clone()),
        _ => {
            let ep = match Stack::open(&a.stack.locator()).await {
                Ok(s) => Some(s.endpoints().await?),
                Err(e) => {
                    eprintln!("kafka: {e:#}; trying the defaults (set --bootstrap and --topic)");
                    None
                }
            };
            let b = a
                .bootstrap
                .clone()
                .or_else(|| ep.as_ref().and_then(|e| e.kafka_bootstrap.clone()))
                .unwrap_or_else(|| DEFAULT_KAFKA.to_string());
            let t = a
                .topic
                .clone()
                .or_else(|| ep.map(|e| e.names.topic))
                .unwrap_or_else(|| wiber_model::contract::defaults::TOPIC.to_string());
            (b, t)
        }
    };
    let headers: Vec<(&str, &[u8])> = a
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let d = dlq::produce_raw(
        &bootstrap,
        &topic,
        a.key.as_deref().map(str::as_bytes),
        &payload,
        &headers,
    )
    .await?;
    if json {
        output::json(&d);
    } else {
        println!("produced {} bytes → {d}", payload.len());
    }
    Ok(exit::PASS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_equals_value() {
        assert_eq!(
            parse_header("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_header("a="), Ok(("a".to_string(), String::new())));
        assert!(parse_header("=b").is_err());
        assert!(parse_header("ab").unwrap_err().contains("NAME=VALUE"));
    }
}
