//! `wiberctl top`: flags → [`crate::top`]. The dashboard itself (sampling, drawing, the
//! live loop) lives there; this file picks the stack, the events file and the output.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::args::StackArgs;
use crate::exit::{self, Exit};
use crate::output;
use crate::top::{self, Header, Sampler};
use crate::units::parse_duration;

/// Bound on each part of a refresh (Kafka, one API scrape): a stuck part shows as a
/// problem line instead of freezing the view.
const PART_TIMEOUT: Duration = Duration::from_secs(2);

/// Width of the `--once` text when stdout is not a terminal.
const TEXT_WIDTH: u16 = 120;

#[derive(Args, Debug)]
#[command(
    after_help = "Shows, refreshed every --interval: each instance's state, health, restarts, \
CPU (% of one core, over the interval) and resident memory; the API's request, ack and error \
rates and ack latency p50/p99 over the interval (from the differences of its /metrics between \
refreshes); consumer lag per partition and as time (how long the oldest record not yet stored \
has waited), and under it the line of each stalled partition (`stalled p3@1042 for 2m (N attempts, \
consumer#1): <error>`, what its consumer reports in the group's committed offset); the store's write rate (the group's committed offsets per second: consumers \
commit only after the durable write); faults in force with the time left until their undo; \
and the latest events of the event log.\n\n\
Keys: q, Esc or Ctrl-C quit (the terminal is restored).\n\n\
--once prints one snapshot and exits: two samples --interval apart, so rates are known. \
With --json it is: {\"schema\", \"project\", \"runtime\", \"time_ms\", \"interval_s\", \
\"instances\": [{\"instance\", \"service\", \"state\", \"health\", \"connected\", \"restarts\", \
\"uptime_s\", \"pid_or_container\", \"cpu_percent\", \"rss_bytes\"}], \"api\": {\"scraped\", \
\"requests_per_s\", \"acked_per_s\", \"client_errors_per_s\", \"server_errors_per_s\", \
\"ack_p50_ms\", \"ack_p99_ms\"}, \"kafka\": {\"topic\", \"group\", \"partitions\": [{\"partition\", \
\"committed\", \"end\", \"lag\", \"oldest_unstored_ms\", \"stalled\" (only while stalled)}], \"total_lag\", \"oldest_unstored_ms\", \
\"stored_per_s\"}, \"faults\": [{\"target\", \"action\", \"since_ms\", \"undo_at_ms\", \"left_ms\"}], \
\"events\": [...], \"events_file\", \"problems\": [...]} (null: unknown this time).\n\n\
Exit codes: 0 quit or printed; 2 no stack found, bad flags, or the terminal cannot be used.\n\n\
Examples:\n  wiberctl top\n  wiberctl top --project t1 --interval 2s\n  \
wiberctl top --once\n  wiberctl --json top --once | jq .kafka.total_lag\n  \
wiberctl top --events reports/run1/events.jsonl"
)]
pub struct TopArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Refresh every DURATION (100ms to 1h), e.g. 1s, 500ms, 5s.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print one snapshot (plain text, or JSON with --json) and exit.
    #[arg(long)]
    pub once: bool,
    /// Events file (JSON lines) that `chaos` and scenarios write. Default:
    /// reports/events.jsonl under the repository root.
    #[arg(long, env = "WIBER_EVENTS")]
    pub events: Option<PathBuf>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("--interval {s:?} is out of range: use 100ms to 1h"));
    }
    Ok(d)
}

pub async fn run(args: TopArgs, json: bool) -> Result<Exit> {
    if json && !args.once {
        bail!("--json prints one snapshot: add --once (`wiberctl --json top --once`)");
    }
    if !args.once && !std::io::stdout().is_terminal() {
        bail!(
            "the dashboard needs a terminal and stdout is not one: use `wiberctl top --once` \
             (or `--once --json`) in scripts"
        );
    }
    let events = args.events.unwrap_or_else(super::args::default_events_path);
    let mut sampler = Sampler::open(&args.stack.locator(), events, PART_TIMEOUT).await?;
    let header = Header {
        project: args.stack.project.clone(),
        interval: args.interval,
        live: !args.once,
    };
    if !args.once {
        top::live(&mut sampler, &header).await?;
        return Ok(exit::PASS);
    }
    let snap = top::once(&mut sampler, args.interval).await;
    if json {
        output::json(&snap);
    } else {
        let width = ratatui::crossterm::terminal::size()
            .ok()
            .filter(|_| std::io::stdout().is_terminal())
            .map_or(TEXT_WIDTH, |(w, _)| w.max(80));
        print!("{}", top::render::to_text(&header, &snap, width));
    }
    Ok(exit::PASS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn intervals_are_bounded() {
        assert!(super::parse_interval("1s").is_ok());
        assert!(super::parse_interval("100ms").is_ok());
        assert!(super::parse_interval("10ms")
            .unwrap_err()
            .contains("100ms to 1h"));
        assert!(super::parse_interval("2h").is_err());
    }
}
