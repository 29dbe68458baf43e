//! The fault model, one for `wiberctl chaos` and scenario files: what a fault does
//! ([`Action`], with [`Signal`] for kills and [`NetSpec`] for network faults), whom it
//! acts on ([`Target`], including Kafka roles resolved when the fault fires), what undoes
//! it ([`Action::undo`]), and the shortcuts (`kill-consumer`, ...) both accept.
//!
//! Idempotence, kept by [`super::Stack::apply`]: the undo actions (`start`, `unpause`,
//! `reconnect`) are no-ops on an instance already in the state they restore, so a
//! rollback of a fault that was undone already, or never took, cannot fail a run.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

use super::netfault::Direction;
use super::{InstanceId, InstanceInfo, InstanceState, ParseIdError, Service};
use crate::kafka::cluster::KafkaRole;

/// The parameters of a network fault, as written: the peers are still named (resolved to
/// addresses when the fault fires, as the instances may have moved).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetSpec {
    /// `loss`: the share of packets dropped, in percent (0 < p <= 100).
    pub percent: Option<f64>,
    /// `bandwidth`: the egress rate, kbit/s.
    pub kbit: Option<u64>,
    /// `loss`, `partition`: whom the fault cuts the target from; empty: everyone.
    /// `api` stands for the host side of the stack's network (the api runs on the host).
    pub peers: Vec<Target>,
    /// `partition`: which way packets are dropped.
    pub direction: Option<Direction>,
    /// `delay`: how late, ms; `timeout`: when a connection is closed, ms (0: never).
    pub ms: Option<u64>,
    /// `delay`: ± this much, ms.
    pub jitter_ms: Option<u64>,
}

/// What a fault does to an instance (or, for `scale`, to a service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send a signal (SIGKILL unless told otherwise): the crash fault; nothing restarts it.
    Kill,
    /// Graceful stop (SIGTERM, SIGKILL after a bounded wait).
    Stop,
    /// Start a stopped or killed instance and wait until it is ready.
    Start,
    /// Stop + start, and wait until ready.
    Restart,
    /// Freeze the processes: sockets stay open, nothing answers.
    Pause,
    Unpause,
    /// Cut the instance off the stack's network (docker only).
    Disconnect,
    Reconnect,
    /// Add instances of a service until it has `to` of them.
    Scale,
    /// Drop a share of the packets exchanged with the peers (iptables, docker only).
    Loss,
    /// Drop every packet exchanged with the peers, one or both ways (iptables, docker only).
    Partition,
    /// Limit the instance's egress rate (tc tbf, docker only).
    Bandwidth,
    /// Answer late: what the instance's service ports send back is held `ms` ± `jitter_ms`
    /// (Toxiproxy in its namespace, docker only).
    Delay,
    /// Let nothing through the service ports and close each connection after `ms` (0:
    /// hold it open) (Toxiproxy, docker only).
    Timeout,
    /// Reset every connection to the service ports at its first bytes (Toxiproxy, docker only).
    Reset,
    /// Remove the network faults wiberctl applied to the instance (every instance when
    /// `chaos heal` names none).
    Heal,
}

/// Every action, for help texts and error messages.
pub const ACTIONS: [Action; 16] = [
    Action::Kill,
    Action::Stop,
    Action::Start,
    Action::Restart,
    Action::Pause,
    Action::Unpause,
    Action::Disconnect,
    Action::Reconnect,
    Action::Scale,
    Action::Loss,
    Action::Partition,
    Action::Bandwidth,
    Action::Delay,
    Action::Timeout,
    Action::Reset,
    Action::Heal,
];

/// Shortcuts: a name that stands for an action and its target.
pub const SHORTCUTS: [(&str, Action, &str); 5] = [
    ("kill-consumer", Action::Kill, "random:consumer"),
    ("kill-api", Action::Kill, "api"),
    ("kill-broker", Action::Kill, "kafka"),
    ("restart-mongo", Action::Restart, "mongo"),
    ("pause-consumer", Action::Pause, "random:consumer"),
];

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Disconnect => "disconnect",
            Action::Reconnect => "reconnect",
            Action::Scale => "scale",
            Action::Loss => "loss",
            Action::Partition => "partition",
            Action::Bandwidth => "bandwidth",
            Action::Delay => "delay",
            Action::Timeout => "timeout",
            Action::Reset => "reset",
            Action::Heal => "heal",
        }
    }

    /// Network faults: applied inside the instance's network namespace, undone by `heal`.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Action::Loss
                | Action::Partition
                | Action::Bandwidth
                | Action::Delay
                | Action::Timeout
                | Action::Reset
        )
    }

    /// The faults a proxy inside the namespace makes (on the service's own ports).
    pub fn is_proxied(self) -> bool {
        matches!(self, Action::Delay | Action::Timeout | Action::Reset)
    }

    /// An action or a shortcut by name: the action, and the target a shortcut names.
    pub fn parse(s: &str) -> Option<(Action, Option<Target>)> {
        let s = s.trim();
        if let Some(a) = ACTIONS.iter().find(|a| a.name() == s) {
            return Some((*a, None));
        }
        SHORTCUTS.iter().find(|(n, ..)| *n == s).map(|(_, a, t)| {
            (
                *a,
                Some(Target::parse(t).expect("shortcut targets are valid")),
            )
        })
    }

    /// The action that puts the instance back (what `for` and rollbacks run).
    pub fn undo(self) -> Option<Action> {
        match self {
            Action::Kill | Action::Stop => Some(Action::Start),
            Action::Pause => Some(Action::Unpause),
            Action::Disconnect => Some(Action::Reconnect),
            a if a.is_network() => Some(Action::Heal),
            _ => None,
        }
    }

    /// Random targets of destructive actions pick a running instance; repairs pick
    /// among the others.
    pub fn wants_running(self) -> bool {
        matches!(
            self,
            Action::Kill
                | Action::Stop
                | Action::Restart
                | Action::Pause
                | Action::Disconnect
                | Action::Loss
                | Action::Partition
                | Action::Bandwidth
                | Action::Delay
                | Action::Timeout
                | Action::Reset
        )
    }

    /// Whether this action, on an instance left broken by `fault`, repairs it (so a
    /// `kill` at 15s and a `restart` at 30s make one fault window).
    pub fn repairs(self, fault: Action) -> bool {
        match fault.undo() {
            Some(Action::Start) => matches!(self, Action::Start | Action::Restart),
            Some(u) => self == u,
            None => false,
        }
    }

    /// How the action is written in event logs: `kill`, or `kill(SIGTERM)` for another signal.
    pub fn label(self, sig: Signal) -> String {
        match (self, sig) {
            (Action::Kill, s) if s != Signal::Kill => format!("kill({})", s.name()),
            (a, _) => a.name().to_string(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names [`Action::parse`] accepts, for messages: `kill, stop, ...; shortcuts: ...`.
pub fn action_names() -> String {
    let actions: Vec<&str> = ACTIONS.iter().map(|a| a.name()).collect();
    let shortcuts: Vec<&str> = SHORTCUTS.iter().map(|(n, ..)| *n).collect();
    format!(
        "{}; shortcuts: {}",
        actions.join(", "),
        shortcuts.join(", ")
    )
}

/// Signals a `kill` sends. Docker takes the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Signal {
    /// SIGKILL: dies at once, no flush, no commit (the crash fault).
    Kill,
    /// SIGTERM: graceful shutdown (flush, commit, leave the group).
    Term,
    /// SIGINT: like Ctrl-C.
    Int,
}

impl Signal {
    pub fn as_libc(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
        }
    }

    /// `SIGKILL`, `SIGTERM`, `SIGINT` (the names Docker's API takes).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }
}

impl FromStr for Signal {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let up = s.trim().to_ascii_uppercase();
        match up.trim_start_matches("SIG") {
            "KILL" | "9" => Ok(Signal::Kill),
            "TERM" | "15" => Ok(Signal::Term),
            "INT" | "2" => Ok(Signal::Int),
            _ => bail!("unknown signal {s:?}: expected KILL, TERM or INT"),
        }
    }
}

/// Who a fault acts on: `consumer#2` (one instance), `consumer` (every instance of the
/// service), `random:consumer` (one instance, chosen anew each time) or a Kafka role
/// (`kafka:leader(wiber.messages/3)`, `kafka:controller`, `kafka:coordinator(group)`),
/// resolved from the cluster's metadata each time the fault fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Instance(InstanceId),
    /// Every instance of the service.
    Service(Service),
    /// One instance, chosen anew at each occurrence.
    Random(Service),
    /// The broker that holds a role when the fault fires.
    Kafka(KafkaRole),
}

impl Target {
    /// The service the target is on (a Kafka role: kafka): what a fault on it counts
    /// against in a soak's per-service limits.
    pub fn service(&self) -> Service {
        match self {
            Target::Instance(id) => id.service,
            Target::Service(s) | Target::Random(s) => *s,
            Target::Kafka(_) => Service::Kafka,
        }
    }

    /// Parses a target. Kafka roles that omit the topic or group get the stack's defaults
    /// (`wiber.messages`, `wiber-consumers`).
    pub fn parse(s: &str) -> Result<Target> {
        let s = s.trim();
        if let Some(role) = s.strip_prefix("kafka:") {
            return Ok(Target::Kafka(KafkaRole::parse(
                role,
                wiber_model::contract::defaults::TOPIC,
                wiber_model::contract::defaults::CONSUMER_GROUP,
            )?));
        }
        // `broker` is what Kafka calls them: `broker#2` is `kafka#2`.
        let aliased;
        let s = match s.strip_prefix("broker") {
            Some(rest) if rest.is_empty() || rest.starts_with('#') => {
                aliased = format!("kafka{rest}");
                aliased.as_str()
            }
            _ => match s.strip_prefix("random:broker") {
                Some("") => "random:kafka",
                _ => s,
            },
        };
        let parsed: Result<Target, ParseIdError> = if let Some(svc) = s.strip_prefix("random:") {
            svc.parse().map(Target::Random)
        } else if s.contains('#') {
            s.parse().map(Target::Instance)
        } else {
            s.parse().map(Target::Service)
        };
        Ok(parsed?)
    }

    /// The instances this target names in a stack that has `have`. A random target
    /// prefers instances the action makes sense for (`wants_running`: a running one to
    /// kill, a stopped one to start), else any. Errors name what the stack has.
    pub fn resolve(&self, have: &[InstanceInfo], wants_running: bool) -> Result<Vec<InstanceInfo>> {
        let list = || {
            have.iter()
                .map(|i| i.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Target::Instance(id) => have
                .iter()
                .find(|i| i.id == *id)
                .cloned()
                .map(|i| vec![i])
                .ok_or_else(|| anyhow!("unknown target {id}: the stack has {}", list())),
            Target::Kafka(role) => bail!(
                "{role} names a broker only once the cluster is asked (when the fault fires); resolve it first"
            ),
            Target::Service(s) | Target::Random(s) => {
                let of: Vec<&InstanceInfo> = have.iter().filter(|i| i.id.service == *s).collect();
                if of.is_empty() {
                    bail!(
                        "unknown target {s}: the stack has no {s} instance (it has {})",
                        list()
                    );
                }
                if matches!(self, Target::Service(_)) {
                    return Ok(of.into_iter().cloned().collect());
                }
                let fitting: Vec<&InstanceInfo> = of
                    .iter()
                    .copied()
                    .filter(|i| (i.state == InstanceState::Running) == wants_running)
                    .collect();
                let pool = if fitting.is_empty() { of } else { fitting };
                let pick = (uuid::Uuid::new_v4().as_u128() % pool.len() as u128) as usize;
                Ok(vec![pool[pick].clone()])
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Instance(id) => write!(f, "{id}"),
            Target::Service(s) => write!(f, "{s}"),
            Target::Random(s) => write!(f, "random:{s}"),
            Target::Kafka(role) => write!(f, "{role}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, state: InstanceState) -> InstanceInfo {
        InstanceInfo::bare(id.parse().unwrap(), state)
    }

    #[test]
    fn targets_parse_and_resolve() {
        let have = vec![
            info("kafka#1", InstanceState::Running),
            info("consumer#1", InstanceState::Exited),
            info("consumer#2", InstanceState::Running),
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
        assert_eq!(
            Target::parse("broker#2").unwrap(),
            Target::Instance("kafka#2".parse().unwrap())
        );
        assert_eq!(
            Target::parse("random:broker").unwrap(),
            Target::Random(Service::Kafka)
        );
        assert_eq!(
            Target::parse("kafka:controller").unwrap().to_string(),
            "kafka:controller"
        );
        // The store's PostgreSQL is a target like any other (chaos and scenario files).
        assert_eq!(
            Target::parse("postgres#1").unwrap(),
            Target::Instance(InstanceId::first(Service::Postgres))
        );
        assert_eq!(
            Target::parse("postgres").unwrap(),
            Target::Service(Service::Postgres)
        );
        let all = Target::Service(Service::Consumer)
            .resolve(&have, Action::Kill.wants_running())
            .unwrap();
        assert_eq!(all.len(), 2);
        // Random kill picks the running one; random start the exited one.
        let k = Target::Random(Service::Consumer)
            .resolve(&have, Action::Kill.wants_running())
            .unwrap();
        assert_eq!(k[0].id.to_string(), "consumer#2");
        let s = Target::Random(Service::Consumer)
            .resolve(&have, Action::Start.wants_running())
            .unwrap();
        assert_eq!(s[0].id.to_string(), "consumer#1");
        let err = Target::parse("consumer#9")
            .unwrap()
            .resolve(&have, Action::Kill.wants_running())
            .unwrap_err();
        assert!(err.to_string().contains("consumer#9"), "{err}");
        assert!(Target::Service(Service::Api)
            .resolve(&have, Action::Kill.wants_running())
            .is_err());
    }

    #[test]
    fn actions_shortcuts_undo_and_repairs() {
        assert_eq!(
            Action::parse("kill-consumer"),
            Some((Action::Kill, Some(Target::Random(Service::Consumer))))
        );
        assert_eq!(
            Action::parse("restart-mongo"),
            Some((Action::Restart, Some(Target::Service(Service::Mongo))))
        );
        assert_eq!(Action::parse("pause"), Some((Action::Pause, None)));
        assert_eq!(Action::parse("explode"), None);
        assert_eq!(Action::Kill.undo(), Some(Action::Start));
        assert_eq!(Action::Restart.undo(), None);
        assert!(Action::Restart.repairs(Action::Kill));
        assert!(!Action::Unpause.repairs(Action::Kill));
        assert_eq!(Action::Kill.label(Signal::Term), "kill(SIGTERM)");
        assert_eq!(Action::Kill.label(Signal::Kill), "kill");
        assert!(action_names().contains("pause-consumer"));
        assert_eq!("sigkill".parse::<Signal>().unwrap(), Signal::Kill);
        assert!("HUP".parse::<Signal>().is_err());
    }
}
