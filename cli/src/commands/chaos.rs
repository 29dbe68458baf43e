//! `chaos ACTION TARGET`: one fault (or a bounded series), as a one-fault timeline of the
//! same engine scenario files use ([`crate::scenario::timeline`]): the same actions and
//! targets, the same undo after `--for`, the same rollback on Ctrl-C, and every action
//! appended to the event log so reports can mark faults on their timelines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::args::StackArgs;
use crate::events::EventLog;
use crate::exit::{self, Exit};
use crate::output;
use crate::runtime::fault::{self, Action, Signal, Target};
use crate::runtime::Stack;
use crate::scenario::format::FaultSpec;
use crate::scenario::timeline::{self, Records, Rollbacks};
use crate::units::parse_duration;

#[derive(Debug, Args)]
#[command(
    after_help = "ACTION: kill (SIGKILL unless --signal: the crash fault), stop (graceful), start, \
restart, pause (freeze: sockets stay open, nothing answers), unpause, disconnect (cut off the \
stack's network, docker only), reconnect, scale (add consumers up to --to); network faults \
(docker only, iptables/tc inside the target's network namespace): loss (--percent, --peers), \
partition (--peers, --direction), bandwidth (--kbit); through a Toxiproxy put in front of the \
target's service ports (kafka, mongo, postgres): delay (--ms, --jitter-ms), timeout (--ms), \
reset; heal (remove them: from TARGET, or from the whole stack without one); or a shortcut that names its target: kill-consumer, kill-api, \
kill-broker, restart-mongo, pause-consumer.\n\n\
TARGET: a service (all its instances: kafka, postgres, mongo, api, consumer), an instance \
(consumer#2, postgres#1, kafka#3), random:SERVICE (one running instance at random, chosen anew \
each time), or a Kafka role asked of the cluster when the fault fires: \
kafka:leader(wiber.messages/3), kafka:controller, kafka:coordinator(wiber-consumers).\n\n\
Network faults are recorded before they are applied (.wiber/stacks/PROJECT/netfaults.json): \
`chaos heal` removes every one, also after a wiberctl that applied it was killed; `stack status` \
lists them; `stack down` heals first.\n\n\
The undo actions (start, unpause, reconnect) do nothing to an instance already in the state \
they restore, so repeating them is safe. Every action (and every --for undo) is appended to \
the events file as a JSON line: time_ms, time, action, target, container, result.\n\n\
Exit codes: 0 every action succeeded (or --dry-run); 2 an action failed, the target is unknown, \
or no stack was found.\n\n\
Examples:\n  wiberctl chaos kill-consumer\n  wiberctl chaos kill consumer#2 --signal TERM\n  \
wiberctl chaos pause random:consumer --for 10s\n  wiberctl chaos disconnect kafka --for 5s --every 30s --count 4\n  \
wiberctl chaos restart consumer#1\n  wiberctl chaos scale consumer --to 3\n  wiberctl chaos kill api --dry-run\n  \
wiberctl chaos kill kafka:leader(wiber.messages/0) --for 20s\n  \
wiberctl chaos partition kafka:controller --peers kafka --for 15s\n  \
wiberctl chaos loss mongo --peers consumer --percent 20 --for 30s\n  \
wiberctl chaos delay kafka#2 --ms 200 --jitter-ms 50 --for 20s\n  wiberctl chaos heal"
)]
pub struct ChaosArgs {
    /// What to do: an action or a shortcut (see below).
    #[arg(value_parser = parse_action)]
    pub action: (Action, Option<Target>),
    /// kafka, postgres, mongo, api, consumer, consumer#2, random:consumer, kafka:controller,
    /// kafka:leader(wiber.messages/0), kafka:coordinator(wiber-consumers) (not with a
    /// shortcut; optional for heal).
    pub target: Option<String>,
    #[command(flatten)]
    pub stack: StackArgs,
    /// Signal for `kill`: KILL (the default), TERM or INT.
    #[arg(long)]
    pub signal: Option<Signal>,
    /// Undo after this long (kill/stop → start, pause → unpause, disconnect → reconnect), e.g. 10s.
    #[arg(long = "for", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Repeat every DURATION (from one action's start to the next); needs --count.
    #[arg(long, value_parser = parse_duration, requires = "count")]
    pub every: Option<Duration>,
    /// How many times to act (bounded: 1..=1000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// `scale`: how many consumers to have (1..=32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub to: Option<u32>,
    /// `loss`: the share of packets dropped, percent (e.g. 20).
    #[arg(long)]
    pub percent: Option<f64>,
    /// `bandwidth`: the egress rate, kbit/s (e.g. 512).
    #[arg(long)]
    pub kbit: Option<u64>,
    /// `loss`, `partition`: whom to cut the target from, comma separated (kafka, consumer,
    /// api, mongo, kafka#2, kafka:controller, ...). Default: everyone.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// `partition`: both (default), in (drop what the peers send), out (drop what goes to them).
    #[arg(long, value_enum)]
    pub direction: Option<crate::runtime::netfault::Direction>,
    /// `delay`: how late the target's answers are, ms (e.g. 200); `timeout`: when a held
    /// connection is closed, ms (0: never).
    #[arg(long)]
    pub ms: Option<u64>,
    /// `delay`: ± this much, ms (e.g. 50).
    #[arg(long)]
    pub jitter_ms: Option<u64>,
    /// Print what would be done; touch nothing (no action, no event).
    #[arg(long)]
    pub dry_run: bool,
    /// Events file (JSON lines). Default: reports/events.jsonl under the repository root.
    #[arg(long, env = "WIBER_EVENTS")]
    pub events: Option<PathBuf>,
}

fn parse_action(s: &str) -> Result<(Action, Option<Target>), String> {
    Action::parse(s).ok_or_else(|| {
        format!(
            "unknown action {s:?}: expected one of {}",
            fault::action_names()
        )
    })
}

/// The flags as one fault of the timeline, checked by the rules scenario files' faults
/// keep ([`FaultSpec::check`]).
fn fault_spec(args: &ChaosArgs) -> Result<FaultSpec> {
    let (action, shortcut) = args.action.clone();
    let name = action.name();
    let target = match (shortcut, &args.target) {
        (Some(_), Some(t)) => bail!("this action is a shortcut and takes no TARGET (got {t:?})"),
        (Some(t), None) => t,
        (None, Some(t)) => Target::parse(t)?,
        (None, None) => bail!(
            "{name} needs a TARGET: a service (consumer), an instance (consumer#2) or random:consumer"
        ),
    };
    let spec = FaultSpec {
        drawn: false,
        line: 0,
        at: Duration::ZERO,
        every: args.every,
        count: args.count,
        action,
        target,
        for_: args.for_,
        signal: args.signal,
        to: args.to,
        net: fault::NetSpec {
            percent: args.percent,
            kbit: args.kbit,
            peers: args
                .peers
                .iter()
                .map(|p| Target::parse(p).map_err(|e| e.context(format!("--peers {p:?}"))))
                .collect::<Result<_>>()?,
            direction: args.direction,
            ms: args.ms,
            jitter_ms: args.jitter_ms,
        },
    };
    // The same rules as a scenario file's faults (their keys are this command's flags).
    spec.check().map_err(|rule| anyhow::anyhow!(rule.message))?;
    Ok(spec)
}

pub async fn run(args: ChaosArgs, json: bool) -> Result<Exit> {
    if args.action.0 == Action::Heal && args.target.is_none() {
        return heal_all(&args, json).await;
    }
    let spec = fault_spec(&args)?;
    // Installed before the first action so that Ctrl-C (or SIGTERM) during `--for` is
    // noticed and the undo still runs instead of the process dying mid-fault.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let stack = Stack::open(&args.stack.locator()).await?;
    let log = EventLog::new(
        args.events
            .clone()
            .unwrap_or_else(super::args::default_events_path),
    )
    .for_project(&args.stack.project);

    if args.dry_run {
        return dry_run(&stack, &spec, &log, json).await;
    }

    let rollbacks = Rollbacks::default();
    let records = Records::default();
    let say = |line: String| {
        if !json {
            eprintln!("{line}");
        }
    };
    let wants_undo = spec.for_.is_some();
    let faults = [spec];
    let tl = timeline::run(
        &stack,
        &faults,
        None,
        tokio::time::Instant::now(),
        &log,
        &rollbacks,
        &records,
        &say,
    );
    let mut interrupted = false;
    let result = tokio::select! {
        r = tl => r,
        _ = sigint.recv() => { interrupted = true; Ok(()) }
        _ = sigterm.recv() => { interrupted = true; Ok(()) }
    };
    // A fault without --for is meant to stay (that is what `chaos kill` is for); with
    // --for, whatever undo is still owed (Ctrl-C during the wait, a failed step) runs now.
    let failures = if wants_undo {
        timeline::rollback_all(&stack, &rollbacks, &log, &records).await
    } else {
        Vec::new()
    };
    let done = log.written();
    if json {
        output::json(&serde_json::json!({
            "runtime": stack.kind(), "events_file": log.path(), "actions": done,
            "interrupted": interrupted, "ok": result.is_ok() && failures.is_empty(),
            "rollback_failures": failures,
        }));
    } else {
        let mut t = output::table(&["time (UTC)", "action", "target", "container", "result"]);
        for e in &done {
            t.add_row(vec![
                e.time.clone(),
                e.action.clone(),
                e.target.clone(),
                e.container.clone(),
                e.result.clone(),
            ]);
        }
        println!("{t}");
        eprintln!(
            "{} action(s) appended to {}{}",
            done.len(),
            log.path().display(),
            if interrupted {
                " (interrupted: undo done, stopped early)"
            } else {
                ""
            }
        );
    }
    result?;
    if !failures.is_empty() {
        bail!("an undo failed: {}", failures.join("; "));
    }
    Ok(exit::PASS)
}

/// `chaos heal` without a target: every network fault wiberctl applied to the stack,
/// from its ledger, and any of its rules left without a record.
async fn heal_all(args: &ChaosArgs, json: bool) -> Result<Exit> {
    let stack = Stack::open(&args.stack.locator()).await?;
    if args.dry_run {
        let active = stack.active_faults()?;
        if json {
            output::json(&serde_json::json!({"dry_run": true, "would_heal": active}));
        } else {
            for e in &active {
                println!("would heal {}", e.describe());
            }
            println!("{} recorded fault(s); unrecorded WIBER rules would be swept too (dry run: nothing done)", active.len());
        }
        return Ok(exit::PASS);
    }
    let healed = stack.heal_all().await?;
    if json {
        output::json(&serde_json::json!({"healed": healed, "ok": true}));
    } else {
        for h in &healed {
            println!("healed {h}");
        }
        eprintln!(
            "{} network fault(s) healed; none left on {}",
            healed.len(),
            args.stack.project
        );
    }
    Ok(exit::PASS)
}

/// What the fault would do, resolved against the stack as it is now.
async fn dry_run(stack: &Stack, spec: &FaultSpec, log: &EventLog, json: bool) -> Result<Exit> {
    let mut plan = Vec::new();
    if spec.action == Action::Scale {
        plan.push(format!(
            "scale {} to {}",
            spec.target,
            spec.to.expect("checked")
        ));
    } else {
        let have = stack.list().await?;
        let target = match &spec.target {
            Target::Kafka(role) => {
                let r = stack.resolve_kafka(role).await?;
                plan.push(format!(
                    "{} is kafka#{} now ({})",
                    r.role, r.node_id, r.detail
                ));
                Target::Instance(r.instance()?)
            }
            t => t.clone(),
        };
        for i in target.resolve(&have, spec.action.wants_running())? {
            let mut what = format!(
                "{} {} (container {}, {})",
                spec.action.label(spec.signal()),
                i.id,
                i.pid_or_container,
                i.state
            );
            if let (Some(d), Some(u)) = (spec.for_, spec.action.undo()) {
                what.push_str(&format!(", then {u} after {d:?}"));
            }
            plan.push(what);
        }
    }
    let repeat = match spec.every {
        Some(e) => format!("{} times, every {e:?}", spec.count),
        None => format!("{} time(s)", spec.count),
    };
    let random = matches!(spec.target, Target::Random(_));
    if json {
        output::json(&serde_json::json!({
            "dry_run": true, "runtime": stack.kind(), "plan": plan, "repeat": repeat,
            "random": random, "events_file": log.path(),
        }));
    } else {
        for p in &plan {
            println!("would {p}");
        }
        if random {
            println!("(random: the instance is chosen anew at each action)");
        }
        println!(
            "{repeat}; events would go to {} (dry run: nothing done)",
            log.path().display()
        );
    }
    Ok(exit::PASS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        chaos: ChaosArgs,
    }

    fn spec(args: &[&str]) -> Result<FaultSpec> {
        let mut argv = vec!["chaos"];
        argv.extend_from_slice(args);
        fault_spec(&T::try_parse_from(argv)?.chaos)
    }

    #[test]
    fn flags_become_one_fault_of_the_timeline() {
        let s = spec(&["kill-consumer"]).unwrap();
        assert_eq!(
            (s.action, s.target.to_string()),
            (Action::Kill, "random:consumer".into())
        );
        let s = spec(&["pause", "consumer#2", "--for", "10s"]).unwrap();
        assert_eq!(s.action.undo(), Some(Action::Unpause));
        assert_eq!(s.for_, Some(Duration::from_secs(10)));
        assert_eq!(s.origin(), "chaos");
        let s = spec(&["scale", "consumer", "--to", "3"]).unwrap();
        assert_eq!(s.to, Some(3));
        for bad in [
            vec!["kill-api", "api"],
            vec!["kill"],
            vec!["restart", "api", "--for", "5s"],
            vec![
                "pause", "api", "--for", "5s", "--every", "5s", "--count", "2",
            ],
            vec!["pause", "api", "--signal", "TERM"],
            vec!["scale", "consumer"],
            vec!["kill", "api", "--to", "2"],
        ] {
            assert!(spec(&bad).is_err(), "{bad:?} should be refused");
        }
        assert!(T::try_parse_from(["chaos", "explode", "api"]).is_err());
    }
}
