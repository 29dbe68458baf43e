//! `chaos ACTION TARGET`: inject one fault (or a bounded series) into the stack through
//! the runtime seam, undo it after `--for`, and append every action to the event log so
//! reports can mark faults on their timelines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

use super::stack::{self, Stack, StackRef};
use crate::events::{Event, EventLog};
use crate::exit::{self, Outcome};
use crate::output;
use crate::runtime::target::Target;
use crate::runtime::{InstanceInfo, Runtime, Signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Send a signal (SIGKILL unless --signal): the crash fault; nothing restarts it.
    Kill,
    /// Graceful stop (SIGTERM, SIGKILL after 30 s).
    Stop,
    /// Start a stopped/killed instance and wait until it is ready.
    Start,
    /// Stop + start, and wait until ready.
    Restart,
    /// Freeze the processes: sockets stay open, nothing answers.
    Pause,
    Unpause,
    /// Cut the instance off the stack's network (docker only).
    Disconnect,
    Reconnect,
    /// Shortcut: kill random:consumer.
    KillConsumer,
    /// Shortcut: kill api.
    KillApi,
    /// Shortcut: kill kafka.
    KillBroker,
    /// Shortcut: restart mongo.
    RestartMongo,
    /// Shortcut: pause random:consumer.
    PauseConsumer,
}

impl Action {
    /// A shortcut's action and target.
    fn expand(self) -> Option<(Action, &'static str)> {
        Some(match self {
            Action::KillConsumer => (Action::Kill, "random:consumer"),
            Action::KillApi => (Action::Kill, "api"),
            Action::KillBroker => (Action::Kill, "kafka"),
            Action::RestartMongo => (Action::Restart, "mongo"),
            Action::PauseConsumer => (Action::Pause, "random:consumer"),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Disconnect => "disconnect",
            Action::Reconnect => "reconnect",
            Action::KillConsumer => "kill-consumer",
            Action::KillApi => "kill-api",
            Action::KillBroker => "kill-broker",
            Action::RestartMongo => "restart-mongo",
            Action::PauseConsumer => "pause-consumer",
        }
    }

    /// What `--for` runs afterwards.
    fn undo(self) -> Option<Action> {
        match self {
            Action::Kill | Action::Stop => Some(Action::Start),
            Action::Pause => Some(Action::Unpause),
            Action::Disconnect => Some(Action::Reconnect),
            _ => None,
        }
    }

    /// Destructive actions pick among running instances; repairs among the others.
    fn wants_running(self) -> bool {
        matches!(
            self,
            Action::Kill | Action::Stop | Action::Restart | Action::Pause | Action::Disconnect
        )
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "TARGET: a service (all its instances: kafka, mongo, api, consumer), an instance \
(consumer#2), or random:SERVICE (one running instance at random, chosen anew each time).\n\n\
Every action (and every --for undo) is appended to the events file as a JSON line: \
time_ms, time, action, target, container, result.\n\n\
Exit codes: 0 every action succeeded (or --dry-run); 2 an action failed, the target is unknown, \
or no stack was found.\n\n\
Examples:\n  wiberctl chaos kill-consumer\n  wiberctl chaos kill consumer#2 --signal TERM\n  \
wiberctl chaos pause random:consumer --for 10s\n  wiberctl chaos disconnect kafka --for 5s --every 30s --count 4\n  \
wiberctl chaos restart consumer#1\n  wiberctl chaos kill api --dry-run"
)]
pub struct ChaosArgs {
    /// What to do (or a shortcut that also names the target).
    #[arg(value_enum)]
    pub action: Action,
    /// kafka, mongo, api, consumer, consumer#2, random:consumer (not with a shortcut).
    pub target: Option<String>,
    #[command(flatten)]
    pub stack: StackRef,
    /// Signal for `kill`: KILL, TERM or INT.
    #[arg(long, default_value = "KILL")]
    pub signal: Signal,
    /// Undo after this long (kill/stop → start, pause → unpause, disconnect → reconnect), e.g. 10s.
    #[arg(long = "for", value_parser = crate::app::parse_duration)]
    pub for_: Option<Duration>,
    /// Repeat every DURATION (from one action's start to the next); needs --count.
    #[arg(long, value_parser = crate::app::parse_duration, requires = "count")]
    pub every: Option<Duration>,
    /// How many times to act (bounded: 1..=1000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Print what would be done; touch nothing (no action, no event).
    #[arg(long)]
    pub dry_run: bool,
    /// Events file (JSON lines). Default: reports/events.jsonl under the repository root.
    #[arg(long, env = "WIBER_EVENTS")]
    pub events: Option<PathBuf>,
}

pub async fn run(args: ChaosArgs, json: bool) -> Result<Outcome> {
    let (action, target_str) = match (args.action.expand(), &args.target) {
        (Some(_), Some(t)) => bail!(
            "{} is a shortcut and takes no TARGET (got {t:?})",
            args.action.name()
        ),
        (Some((a, t)), None) => (a, t.to_string()),
        (None, Some(t)) => (args.action, t.clone()),
        (None, None) => bail!(
            "{} needs a TARGET: a service (consumer), an instance (consumer#2) or random:consumer",
            args.action.name()
        ),
    };
    let target = Target::parse(&target_str)?;
    if args.for_.is_some() && action.undo().is_none() {
        bail!(
            "--for undoes kill, stop, pause and disconnect; {} has no undo",
            action.name()
        );
    }
    if action != Action::Kill && args.signal != Signal::Kill {
        bail!("--signal applies to kill only");
    }
    // Installed before the first action so that Ctrl-C (or SIGTERM) during `--for` is
    // noticed and the undo still runs instead of the process dying mid-fault.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let stack = stack::open(&args.stack).await?;
    let log = EventLog::new(match &args.events {
        Some(p) => p.clone(),
        None => crate::provision::repo_root()
            .map(|r| r.join("reports"))
            .unwrap_or_else(|_| PathBuf::from("reports"))
            .join("events.jsonl"),
    });

    if args.dry_run {
        let have = stack.list().await?;
        let chosen = target.resolve(&have, action.wants_running())?;
        let mut plan = Vec::new();
        for i in &chosen {
            let mut what = format!(
                "{} {} (container {}, {})",
                label(action, args.signal),
                i.id,
                i.pid_or_container,
                i.state
            );
            if let Some(d) = args.for_ {
                what.push_str(&format!(
                    ", then {} after {d:?}",
                    action.undo().expect("checked").name()
                ));
            }
            plan.push(what);
        }
        let repeat = match args.every {
            Some(e) => format!("{} times, every {e:?}", args.count),
            None => format!("{} time(s)", args.count),
        };
        if json {
            output::json(&serde_json::json!({
                "dry_run": true, "runtime": stack.kind(), "plan": plan, "repeat": repeat,
                "random": matches!(target, Target::Random(_)), "events_file": log.path(),
            }));
        } else {
            for p in &plan {
                println!("would {p}");
            }
            if matches!(target, Target::Random(_)) {
                println!("(random: the instance is chosen anew at each action)");
            }
            println!(
                "{repeat}; events would go to {} (dry run: nothing done)",
                log.path().display()
            );
        }
        return Ok(exit::PASS);
    }

    let mut done: Vec<Event> = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    let mut interrupted = false;
    'rounds: for round in 0..args.count {
        let round_start = tokio::time::Instant::now();
        let have = stack.list().await?;
        let chosen = target.resolve(&have, action.wants_running())?;
        for i in &chosen {
            if let Err(e) = act(&stack, &log, action, args.signal, i, &mut done).await {
                failed = Some(e);
                break 'rounds;
            }
        }
        if let Some(d) = args.for_ {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = sigint.recv() => interrupted = true,
                _ = sigterm.recv() => interrupted = true,
            }
            let undo = action.undo().expect("checked above");
            for i in &chosen {
                if let Err(e) = act(&stack, &log, undo, Signal::Kill, i, &mut done).await {
                    failed.get_or_insert(e);
                }
            }
            if failed.is_some() || interrupted {
                break;
            }
        }
        if round + 1 < args.count {
            if let Some(every) = args.every {
                tokio::select! {
                    _ = tokio::time::sleep_until(round_start + every) => {}
                    _ = sigint.recv() => { interrupted = true; break; }
                    _ = sigterm.recv() => { interrupted = true; break; }
                }
            }
        }
    }

    if json {
        output::json(&serde_json::json!({
            "runtime": stack.kind(), "events_file": log.path(), "actions": done,
            "interrupted": interrupted, "ok": failed.is_none(),
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
    match failed {
        Some(e) => Err(e),
        None => Ok(exit::PASS),
    }
}

fn label(action: Action, sig: Signal) -> String {
    match (action, sig) {
        (Action::Kill, Signal::Kill) => "kill".into(),
        (Action::Kill, s) => format!("kill({})", s.name()),
        (a, _) => a.name().into(),
    }
}

/// Runs one action on one instance and logs it (time = when it was taken).
async fn act(
    stack: &Stack,
    log: &EventLog,
    action: Action,
    sig: Signal,
    i: &InstanceInfo,
    done: &mut Vec<Event>,
) -> Result<()> {
    let mut ev = Event::now(
        &label(action, sig),
        &i.id.to_string(),
        &i.pid_or_container,
        Ok(()),
    );
    let id = &i.id;
    let r = match action {
        Action::Kill => stack.kill(id, sig).await,
        Action::Stop => stack.stop(id).await,
        Action::Start => stack.start(id).await,
        Action::Restart => stack.restart(id).await,
        Action::Pause => stack.pause(id).await,
        Action::Unpause => stack.unpause(id).await,
        Action::Disconnect => stack.disconnect(id).await,
        Action::Reconnect => stack.reconnect(id).await,
        other => Err(anyhow!("{} is a shortcut, not an action", other.name())),
    };
    if let Err(e) = &r {
        ev.result = format!("error: {e:#}");
    }
    log.append(&ev)?;
    done.push(ev);
    r.map_err(|e| e.context(format!("chaos {} {id} failed", action.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Service;

    fn info(id: &str, state: &str) -> InstanceInfo {
        InstanceInfo {
            id: id.parse().unwrap(),
            state: state.into(),
            pid_or_container: "c".into(),
            started_at: None,
            restarts: 0,
            address: String::new(),
        }
    }

    #[test]
    fn targets_parse_and_resolve() {
        let have = vec![
            info("kafka#1", "running"),
            info("consumer#1", "exited"),
            info("consumer#2", "running"),
        ];
        assert_eq!(
            Target::parse("consumer#2").unwrap(),
            Target::Instance("consumer#2".parse().unwrap())
        );
        assert_eq!(
            Target::parse("random:consumer").unwrap(),
            Target::Random(Service::Consumer)
        );
        assert!(Target::parse("zookeeper").is_err());
        let all = (Target::Service(Service::Consumer))
            .resolve(&have, Action::Kill.wants_running())
            .unwrap();
        assert_eq!(all.len(), 2);
        // Random kill picks the running one; random start the exited one.
        let k = (Target::Random(Service::Consumer))
            .resolve(&have, Action::Kill.wants_running())
            .unwrap();
        assert_eq!(k[0].id.to_string(), "consumer#2");
        let s = (Target::Random(Service::Consumer))
            .resolve(&have, Action::Start.wants_running())
            .unwrap();
        assert_eq!(s[0].id.to_string(), "consumer#1");
        let err = (Target::parse("consumer#9").unwrap())
            .resolve(&have, Action::Kill.wants_running())
            .unwrap_err();
        assert!(err.to_string().contains("consumer#9"), "{err}");
        assert!((Target::Service(Service::Api))
            .resolve(&have, Action::Kill.wants_running())
            .is_err());
    }

    #[test]
    fn shortcuts_expand_and_undo() {
        assert_eq!(
            Action::KillConsumer.expand(),
            Some((Action::Kill, "random:consumer"))
        );
        assert_eq!(
            Action::RestartMongo.expand(),
            Some((Action::Restart, "mongo"))
        );
        assert_eq!(Action::Kill.undo(), Some(Action::Start));
        assert_eq!(Action::Restart.undo(), None);
        assert_eq!(Action::KillConsumer.name(), "kill-consumer");
    }
}
