//! `wiber-server api` and `wiber-server consumer`: thin entry points; the logic is in the
//! library so tests drive it in-process too.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wiber_server::config::{ApiConfig, ConsumerConfig};
use wiber_server::{api, consumer, shutdown, telemetry};

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

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let result = match Cli::parse().command {
        Command::Api(cfg) => api::run(cfg, shutdown::signal()).await,
        Command::Consumer(cfg) => consumer::run(cfg, shutdown::signal()).await,
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
