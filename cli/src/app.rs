//! Command-line definition and dispatch. `main.rs` only calls [`main`].

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wiber_model::NewMessage;

use crate::client::{ApiClient, DEFAULT_API_URL};
use crate::commands;
use crate::exit::{self, Exit};
use crate::units::parse_duration;

#[derive(Parser)]
#[command(
    name = "wiberctl",
    version,
    about = "Operator CLI and load/fault-injection harness for the Wiber messaging stack.",
    long_about = "Operator CLI and load/fault-injection harness for the Wiber messaging stack \
(HTTP API → Kafka → consumer group → MongoDB).\n\n\
Exit codes: 0 pass; 1 a check failed (the API refused a message, the stack is not ready, \
an invariant or threshold failed); 2 wiberctl itself failed (bad usage, API unreachable, I/O).",
    after_help = "Examples:\n  wiberctl demo                          # local stack up, send, read back\n  wiberctl stack up                      # Kafka, FerretDB, api, 2 consumers in Docker\n  wiberctl send --from alice --to bob \"Hello\"\n  wiberctl read alice bob --limit 20\n  wiberctl count --user1 alice\n  wiberctl health --json\n  wiberctl top                           # live dashboard of the running stack\n  wiberctl tail --user alice --last 20\n  wiberctl dlq list                      # what the consumers could not store, and why\n  wiberctl completions bash > ~/.local/share/bash-completion/completions/wiberctl"
)]
pub struct Cli {
    /// Base URL of the Wiber API.
    #[arg(long, global = true, env = "WIBER_API_URL", default_value = DEFAULT_API_URL)]
    api_url: String,
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Per-request timeout, e.g. 10s, 500ms.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a message; succeeds once Kafka acknowledged it (acks=all).
    #[command(
        after_help = "Example:\n  wiberctl send --from alice --to bob \"Hello\"\n  wiberctl send --from alice --to bob --id order-42 \"retry-safe: stored once\""
    )]
    Send {
        /// Sender (1–50 characters).
        #[arg(long = "from")]
        from: String,
        /// Recipient (1–50 characters).
        #[arg(long = "to")]
        to: String,
        /// Client-chosen message id: re-sending with the same id stores the message once.
        #[arg(long = "id")]
        id: Option<String>,
        /// The message text (1–5000 characters).
        content: String,
    },
    /// Read a conversation (two users, oldest first) or a user's recent messages (one user, newest first).
    #[command(
        after_help = "Examples:\n  wiberctl read alice bob --limit 20 --skip 40\n  wiberctl read alice"
    )]
    Read {
        user1: String,
        user2: Option<String>,
        /// How many messages (1–500). Default: 50 for a conversation, 100 for a user.
        #[arg(long)]
        limit: Option<u32>,
        /// Skip this many messages first (conversations only).
        #[arg(long, alias = "offset", default_value_t = 0)]
        skip: u64,
    },
    /// Count stored messages: all, one user's (one of --user1/--user2), or a conversation (both).
    Count {
        #[arg(long)]
        user1: Option<String>,
        #[arg(long)]
        user2: Option<String>,
    },
    /// Readiness of the stack as the API sees it (Kafka and MongoDB). Exit 1 when not ready.
    Health,
    /// Bring the stack up (local processes by default), send a message and read it back.
    Demo(commands::demo::DemoArgs),
    /// Bring the stack up or down (Docker or local processes), show its status and logs.
    Stack {
        #[command(subcommand)]
        cmd: commands::stack::StackCmd,
    },
    /// Inject faults: kill, stop, start, restart, pause, unpause, disconnect, reconnect, scale.
    Chaos(commands::chaos::ChaosArgs),
    /// Open-loop load at a constant rate with honest latency; writes a ledger and a report.
    Bench(Box<commands::bench::BenchArgs>),
    /// Check a bench run's delivery invariants in MongoDB (lost, duplicated, ...). Exit 1 on a violation.
    Verify(commands::verify::VerifyArgs),
    /// Scenario files: load, a fault timeline, invariants and thresholds in one file (what CI runs).
    Scenario {
        #[command(subcommand)]
        cmd: commands::scenario::ScenarioCmd,
    },
    /// The store at scale: fixture fill, PostgreSQL setup check, how each read is served.
    Store {
        #[command(subcommand)]
        cmd: commands::store::StoreCmd,
    },
    /// Live dashboard of the running stack: instances, API rates and latency, lag, faults, events.
    Top(commands::top::TopArgs),
    /// Follow messages as Kafka acknowledges them or as the consumers store them.
    Tail(commands::tail::TailArgs),
    /// The dead-letter topic: list, show and replay the records the consumers could not store.
    #[command(
        long_about = commands::dlq::ABOUT,
        after_help = "Examples:\n  wiberctl dlq list --class refused\n  wiberctl dlq show 0\n  wiberctl dlq replay 0 --dry-run\n  wiberctl dlq replay --class refused --json"
    )]
    Dlq {
        #[command(subcommand)]
        cmd: commands::dlq::DlqCmd,
    },
    /// Kafka behind the API's back: produce a record as given (tests and drills).
    Kafka {
        #[command(subcommand)]
        cmd: commands::kafka::KafkaCmd,
    },
    /// Print shell completions (bash, zsh, fish, ...) for wiberctl.
    Completions(commands::completions::CompletionsArgs),
    /// Write wiberctl's man pages (one per command).
    Man(commands::completions::ManArgs),
}

/// Parses the command line, runs the command, maps the result to the exit-code contract.
pub fn main() -> ExitCode {
    crate::heap::tune();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wiberctl: cannot start the async runtime: {e}");
            return exit::tool_error();
        }
    };
    match rt.block_on(run(cli)) {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("wiberctl: {e:#}");
            exit::tool_error()
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let api = ApiClient::new(&cli.api_url, cli.timeout)?;
    let json = cli.json;
    match cli.command {
        Command::Send {
            from,
            to,
            id,
            content,
        } => {
            let msg = NewMessage {
                from_user: from,
                to_user: to,
                content,
                message_id: id,
            };
            commands::messages::send(&api, msg, json).await
        }
        Command::Read {
            user1,
            user2,
            limit,
            skip,
        } => {
            let limit = limit.unwrap_or(if user2.is_some() { 50 } else { 100 });
            commands::messages::read(&api, &user1, user2.as_deref(), limit, skip, json).await
        }
        Command::Count { user1, user2 } => {
            commands::messages::count(&api, user1.as_deref(), user2.as_deref(), json).await
        }
        Command::Health => commands::messages::health(&api, json).await,
        Command::Demo(args) => commands::demo::run(args, cli.timeout).await,
        Command::Stack { cmd } => commands::stack::run(cmd, json).await,
        Command::Chaos(args) => commands::chaos::run(args, json).await,
        Command::Bench(args) => commands::bench::run(*args, &cli.api_url, cli.timeout, json).await,
        Command::Verify(args) => commands::verify::run(args, json).await,
        Command::Scenario { cmd } => commands::scenario::run(cmd, json).await,
        Command::Store { cmd } => commands::store::run(cmd, json).await,
        Command::Top(args) => commands::top::run(args, json).await,
        Command::Tail(args) => commands::tail::run(args, json).await,
        Command::Dlq { cmd } => commands::dlq::run(cmd, cli.timeout, json).await,
        Command::Kafka { cmd } => commands::kafka::run(cmd, json).await,
        Command::Completions(args) => {
            commands::completions::completions(args, <Cli as clap::CommandFactory>::command())
        }
        Command::Man(args) => {
            commands::completions::man(args, <Cli as clap::CommandFactory>::command())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
