//! The command line of `wiber-server api` and `wiber-server consumer`, shared by the
//! binaries: `wiber-server`, and `wiber-server-seeded`, the same program built with the
//! test-only `seeded-bugs` feature (a separate binary, so that building it never
//! replaces the real one).

use std::process::ExitCode;

use crate::config::{ApiConfig, ConsumerConfig};
use crate::{shutdown, telemetry, wiring};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wiber-server",
    version,
    about = "The Wiber stack's services. Every flag can also be set by its environment variable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API: POST /messages publishes to Kafka (answers after acks=all), reads come from MongoDB.
    Api(ApiConfig),
    /// Consumer-group member: stores messages in MongoDB, commits offsets only after the write.
    Consumer(ConsumerConfig),
}

/// Parses the command line, runs the service until it is told to stop.
#[tokio::main]
pub async fn main() -> ExitCode {
    telemetry::init();
    let result = match Cli::parse().command {
        Command::Api(cfg) => wiring::run_api(cfg, shutdown::signal()).await,
        Command::Consumer(cfg) => wiring::run_consumer(cfg, shutdown::signal()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            eprintln!("wiber-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
