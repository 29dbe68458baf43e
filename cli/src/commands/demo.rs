//! `wiberctl demo`: the README's main job. Brings the stack up (local processes by
//! default, so it works on machines without Docker), sends a message, waits until the
//! consumers stored it, reads the conversation back, and leaves the stack running.

use std::time::{Duration, Instant};

use clap::Args;
use wiber_model::NewMessage;

use crate::client::ApiClient;
use crate::commands::stack::{self, ImageChoice, RuntimeKind, StackRef, UpArgs};
use crate::exit::{self, Outcome};
use crate::output;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the stack runs: local processes (no Docker needed) or Docker containers.
    #[arg(long, value_enum, default_value = "local")]
    pub runtime: RuntimeKind,
    /// Project name of the stack.
    #[arg(long, env = "WIBER_PROJECT", default_value = "wiber")]
    pub project: String,
    /// Host port of the API.
    #[arg(long, default_value_t = 8000)]
    pub api_port: u16,
    /// Host port of MongoDB / FerretDB.
    #[arg(long, default_value_t = 27017)]
    pub mongo_port: u16,
    /// Host port of Kafka.
    #[arg(long, default_value_t = 9094)]
    pub kafka_port: u16,
}

pub async fn run(args: DemoArgs, timeout: Duration) -> anyhow::Result<Outcome> {
    let stack_ref = StackRef {
        project: args.project.clone(),
        runtime: Some(args.runtime),
    };
    let up = UpArgs {
        stack: stack_ref.clone(),
        consumers: 2,
        images: ImageChoice::Offline,
        api_port: args.api_port,
        mongo_port: args.mongo_port,
        kafka_port: args.kafka_port,
        partitions: 6,
        wait: Duration::from_secs(240),
    };
    if stack::up(up, false).await? != exit::PASS {
        return Ok(exit::FAIL);
    }
    let api_url = stack::open(&stack_ref)
        .await?
        .endpoints()
        .await?
        .api_url
        .ok_or_else(|| anyhow::anyhow!("the stack has no API instance"))?;
    let api = ApiClient::new(&api_url, timeout)?;

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
    let runtime = match args.runtime {
        RuntimeKind::Local => "local",
        RuntimeKind::Docker => "docker",
    };
    println!(
        "The stack keeps running at {api_url}. Try `wiberctl stack status`, `wiberctl read alice bob`, \
`wiberctl chaos kill-consumer`; stop it with `wiberctl stack down --runtime {runtime}`."
    );
    Ok(exit::PASS)
}
