//! Flags several commands share, declared once: which stack ([`StackArgs`]) and how to
//! bring one up ([`UpFlags`]: images, ports, wait), so `stack up`, `scenario run` and
//! `demo` spell them alike.

use std::time::Duration;

use clap::Args;

use crate::runtime::{ImageChoice, Locator, Ports, RuntimeKind, DEFAULT_PROJECT};
use crate::units::parse_duration;

/// Selects the stack: project name and runtime.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// Project name: prefix of container, network and volume names (and the local state dir).
    #[arg(long, env = "WIBER_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
    /// Runtime. `up` defaults to docker; the other commands find the project's stack
    /// (a docker stack if the engine has one, else a local one).
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
}

impl StackArgs {
    pub fn locator(&self) -> Locator {
        Locator {
            project: self.project.clone(),
            runtime: self.runtime,
        }
    }
}

/// How a stack is brought up when a command brings one up.
#[derive(Debug, Clone, Args)]
pub struct UpFlags {
    /// Images (docker runtime).
    #[arg(long, value_enum, env = "WIBER_IMAGES", default_value = "auto")]
    pub images: ImageChoice,
    /// Host port of the API (published on 127.0.0.1).
    #[arg(long, default_value_t = Ports::default().api)]
    pub api_port: u16,
    /// Host port of MongoDB / FerretDB (published on 127.0.0.1).
    #[arg(long, default_value_t = Ports::default().mongo)]
    pub mongo_port: u16,
    /// Host port of Kafka's external listener (published on 127.0.0.1).
    #[arg(long, default_value_t = Ports::default().kafka)]
    pub kafka_port: u16,
    /// Host port of the PostgreSQL under FerretDB (published on 127.0.0.1); 0, the
    /// default, picks a free one at `up` (`stack status` shows it).
    #[arg(long, default_value_t = Ports::default().postgres)]
    pub postgres_port: u16,
    /// How long to wait for the stack to become healthy, e.g. 3m.
    #[arg(long, default_value = "4m", value_parser = parse_duration)]
    pub wait: Duration,
    /// Extra environment for the api and consumer services, KEY=VALUE (repeatable),
    /// e.g. `--service-env RUST_LOG=debug`; it wins over the stack's own settings. An
    /// `up` of a running stack with other values (or none, when it had some) recreates
    /// the api and the consumers with them.
    #[arg(long = "service-env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub service_env: Vec<(String, String)>,
}

/// `KEY=VALUE` with a shell-style variable name.
fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (e.g. RUST_LOG=debug)"))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{k:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

impl UpFlags {
    pub fn ports(&self) -> Ports {
        Ports {
            api: self.api_port,
            mongo: self.mongo_port,
            kafka: self.kafka_port,
            postgres: self.postgres_port,
        }
    }
}

/// The events file `chaos` writes and `top` reads when not told otherwise:
/// `reports/events.jsonl` under the repository root (or the current directory).
pub fn default_events_path() -> std::path::PathBuf {
    crate::provision::repo_root()
        .map(|r| r.join("reports"))
        .unwrap_or_else(|_| std::path::PathBuf::from("reports"))
        .join("events.jsonl")
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_pairs_are_checked() {
        assert_eq!(
            super::parse_env_pair("A_1=x=y"),
            Ok(("A_1".into(), "x=y".into()))
        );
        assert!(super::parse_env_pair("nope").is_err());
        assert!(super::parse_env_pair("1A=x").is_err());
        assert!(super::parse_env_pair("A-B=x").is_err());
    }
}
