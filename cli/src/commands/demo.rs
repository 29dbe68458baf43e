//! `wiberctl demo`: the README's main job. Brings the stack up (local processes by
//! default, so it works on machines without Docker), sends a message, waits until the
//! consumers stored it, reads the conversation back, and leaves the stack running.

use std::time::{Duration, Instant};

use clap::Args;
use wiber_model::NewMessage;

use super::args::{StackArgs, UpFlags};
use super::stack::{self, UpArgs};
use crate::client::ApiClient;
use crate::exit::{self, Exit};
use crate::output;
use crate::runtime::{Locator, RuntimeKind, Stack, DEFAULT_PROJECT};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the stack runs: local processes (no Docker needed) or Docker containers.
    #[arg(long, value_enum, default_value = "local")]
    pub runtime: RuntimeKind,
    /// Project name of the stack.
    #[arg(long, env = "WIBER_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
    #[command(flatten)]
    pub up: UpFlags,
}

pub async fn run(args: DemoArgs, timeout: Duration) -> anyhow::Result<Exit> {
    let loc = Locator {
        project: args.project.clone(),
        runtime: Some(args.runtime),
    };
    let up = UpArgs {
        stack: StackArgs {
            project: loc.project.clone(),
            runtime: loc.runtime,
        },
        consumers: 2,
        partitions: wiber_model::contract::defaults::PARTITIONS as u32,
        brokers: 1,
        profile: crate::runtime::Profile::Safe,
        up: args.up,
    };
    if stack::up(up, false).await? != exit::PASS {
        return Ok(exit::FAIL);
    }
    let endpoints = Stack::open(&loc).await?.endpoints().await?;
    let api = ApiClient::new(endpoints.api()?, timeout)?;

    let sent = api
        .send(&NewMessage {
            from_user: "alice".into(),
            to_user: "bob".into(),
            content: format!(
                "Hello from wiberctl demo at {}",
                chrono::Utc::now().format("%H:%M:%S")
            ),
            message_id: None,
        })
        .await?;
    println!("sent (acknowledged by Kafka):");
    println!("{}", output::messages(std::slice::from_ref(&sent)));

    // The consumers store asynchronously: poll (bounded) until the message is readable.
    let deadline = Instant::now() + Duration::from_secs(30);
    let conversation = loop {
        let msgs = api.conversation("alice", "bob", 500, 0).await?;
        if msgs.iter().any(|m| m.message_id == sent.message_id) || Instant::now() > deadline {
            break msgs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !conversation.iter().any(|m| m.message_id == sent.message_id) {
        eprintln!("wiberctl: the message was acknowledged but not stored within 30 s; see `wiberctl stack logs consumer`");
        return Ok(exit::FAIL);
    }
    let tail = &conversation[conversation.len().saturating_sub(5)..];
    println!("read back from MongoDB (alice ↔ bob, last {}):", tail.len());
    println!("{}", output::messages(tail));
    println!(
        "The stack keeps running at {}. Try `wiberctl stack status`, `wiberctl read alice bob`, \
`wiberctl chaos kill-consumer`; stop it with `wiberctl stack down --runtime {}`.",
        api.base(),
        args.runtime
    );
    Ok(exit::PASS)
}
