//! The shape of a stack's Kafka: how many brokers, and the safety profile. One place
//! decides the broker properties and the services' settings that follow from it, so the
//! two runtimes run the same cluster.
//!
//! Every broker is a combined KRaft node (`broker,controller`), and all of them vote:
//! with three that is a quorum that survives one lost node, in three JVMs instead of six
//! (separate controllers would double the processes on a two-core machine, and the
//! faults Kafka users fear, a lost leader and a lost controller, happen either way; with
//! combined nodes one kill can take both, which is the harder case).

use serde::{Deserialize, Serialize};
use wiber_model::contract::Acks;

/// Most brokers a stack runs (each is a JVM of up to 512 MiB of heap).
pub const MAX_BROKERS: u32 = 5;

/// How the cluster and the producer trade safety for availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The delivery contract: acks=all with idempotence, `min.insync.replicas` = RF - 1
    /// (2 of 3), no unclean leader election.
    #[default]
    Safe,
    /// For fault demonstrations only: acks=1 without idempotence, `min.insync.replicas`
    /// = 1, unclean leader election on. Acknowledged messages can be lost; a harness runs
    /// it to show that its loss check catches that.
    Unsafe,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Safe => "safe",
            Profile::Unsafe => "unsafe",
        }
    }
}

/// The cluster a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Brokers (1..=[`MAX_BROKERS`]).
    pub brokers: u32,
    #[serde(default)]
    pub profile: Profile,
}

impl Default for Cluster {
    /// One broker: the main job and most of CI run on two cores, and a single broker is
    /// what the delivery contract needs; the cluster faults ask for three.
    fn default() -> Self {
        Cluster {
            brokers: 1,
            profile: Profile::Safe,
        }
    }
}

impl Cluster {
    /// Replicas of every topic: each broker holds one, up to three.
    pub fn replication(&self) -> u32 {
        self.brokers.clamp(1, 3)
    }

    /// Replicas that must have a record before acks=all is answered: all but one, so one
    /// broker may be lost without refusing writes (1 on a single broker).
    pub fn min_insync(&self) -> u32 {
        match self.profile {
            Profile::Safe => (self.replication() - 1).max(1),
            Profile::Unsafe => 1,
        }
    }

    pub fn acks(&self) -> Acks {
        match self.profile {
            Profile::Safe => Acks::All,
            Profile::Unsafe => Acks::Leader,
        }
    }

    /// The broker properties that follow from the shape (dotted names, as in
    /// server.properties; the Docker runtime turns them into `KAFKA_*` variables).
    pub fn broker_properties(&self) -> Vec<(&'static str, String)> {
        let rf = self.replication().to_string();
        let isr = self.min_insync().to_string();
        vec![
            ("default.replication.factor", rf.clone()),
            ("min.insync.replicas", isr.clone()),
            (
                "unclean.leader.election.enable",
                (self.profile == Profile::Unsafe).to_string(),
            ),
            ("offsets.topic.replication.factor", rf.clone()),
            ("transaction.state.log.replication.factor", rf.clone()),
            ("transaction.state.log.min.isr", isr.clone()),
            ("share.coordinator.state.topic.replication.factor", rf),
            ("share.coordinator.state.topic.min.isr", isr),
        ]
    }

    /// `controller.quorum.voters` for brokers reached as `host(n):port`.
    pub fn quorum_voters(&self, host: impl Fn(u32) -> String, port: u16) -> String {
        (1..=self.brokers)
            .map(|n| format!("{n}@{}:{port}", host(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Refuses a shape no runtime runs, naming the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_BROKERS).contains(&self.brokers) {
            anyhow::bail!(
                "--brokers {} is out of range: a stack runs 1 to {MAX_BROKERS} brokers (3 for the cluster faults)",
                self.brokers
            );
        }
        Ok(())
    }
}

/// A stack's Kafka as it is, read back from the stack rather than from what it was once
/// asked to be ([`super::Stack::shape`]): the brokers a scenario's faults meet, and the
/// replication its topic really has. A stack grown by adding brokers keeps the topic it
/// had (replication factor 1 on `kafka#1`), so the broker count alone does not tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningShape {
    /// Broker instances of the stack, running or not.
    pub brokers: u32,
    /// The stack's topic.
    pub topic: String,
    /// The smallest replication factor among the topic's partitions; `None` when its
    /// metadata could not be read (the reason in `replication_unknown`).
    pub replication: Option<u32>,
    pub replication_unknown: Option<String>,
    /// `min.insync.replicas` the brokers run with; `None` when the stack does not say
    /// (a stack started by the compose file).
    pub min_insync: Option<u32>,
    /// Whether unclean leader election is on (the unsafe profile); `None`: not known.
    pub unclean_election: Option<bool>,
}

impl RunningShape {
    /// `3 brokers, topic wiber.messages at replication factor 1, min.insync.replicas 1`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} broker{}",
            self.brokers,
            if self.brokers == 1 { "" } else { "s" }
        );
        match (self.replication, &self.replication_unknown) {
            (Some(rf), _) => s.push_str(&format!(
                ", topic {} at replication factor {rf}",
                self.topic
            )),
            (None, Some(why)) => s.push_str(&format!(
                ", topic {} of unknown replication ({why})",
                self.topic
            )),
            (None, None) => {}
        }
        if let Some(m) = self.min_insync {
            s.push_str(&format!(", min.insync.replicas {m}"));
        }
        if self.unclean_election == Some(true) {
            s.push_str(", unclean leader election on");
        }
        s
    }
}

impl Cluster {
    /// `3 brokers, replication factor 3, min.insync.replicas 2 (safe profile)`.
    pub fn describe(&self) -> String {
        format!(
            "{} broker{}, replication factor {}, min.insync.replicas {} ({} profile)",
            self.brokers,
            if self.brokers == 1 { "" } else { "s" },
            self.replication(),
            self.min_insync(),
            self.profile.name()
        )
    }

    /// How `running` differs from this shape, one phrase each; empty when it is this
    /// shape (a figure the stack could not say is not held against it).
    pub fn differences(&self, running: &RunningShape) -> Vec<String> {
        let mut out = Vec::new();
        if running.brokers != self.brokers {
            out.push(format!(
                "{} broker{} instead of {}",
                running.brokers,
                if running.brokers == 1 { "" } else { "s" },
                self.brokers
            ));
        }
        if let Some(rf) = running.replication.filter(|rf| *rf != self.replication()) {
            out.push(format!(
                "topic {} at replication factor {rf} instead of {}",
                running.topic,
                self.replication()
            ));
        }
        if let Some(m) = running.min_insync.filter(|m| *m != self.min_insync()) {
            out.push(format!(
                "min.insync.replicas {m} instead of {}",
                self.min_insync()
            ));
        }
        let unclean = self.profile == Profile::Unsafe;
        if let Some(u) = running.unclean_election.filter(|u| *u != unclean) {
            out.push(format!(
                "unclean leader election {} (the {} profile)",
                if u { "on" } else { "off" },
                if u { "unsafe" } else { "safe" }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_safe_brokers_keep_two_in_sync() {
        let c = Cluster {
            brokers: 3,
            profile: Profile::Safe,
        };
        assert_eq!(
            (c.replication(), c.min_insync(), c.acks()),
            (3, 2, Acks::All)
        );
        let props = c.broker_properties();
        assert!(props.contains(&("unclean.leader.election.enable", "false".into())));
        assert_eq!(
            c.quorum_voters(|n| format!("kafka-{n}"), 9093),
            "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        );
    }

    #[test]
    fn a_running_shape_says_what_it_knows_and_differs_only_there() {
        let mut r = RunningShape {
            brokers: 3,
            topic: "wiber.messages".into(),
            replication: None,
            replication_unknown: Some("kafka is down".into()),
            min_insync: None,
            unclean_election: None,
        };
        assert_eq!(
            r.describe(),
            "3 brokers, topic wiber.messages of unknown replication (kafka is down)"
        );
        let safe3 = Cluster {
            brokers: 3,
            profile: Profile::Safe,
        };
        assert!(safe3.differences(&r).is_empty());
        r.unclean_election = Some(true);
        r.min_insync = Some(1);
        assert_eq!(
            safe3.differences(&r),
            [
                "min.insync.replicas 1 instead of 2",
                "unclean leader election on (the unsafe profile)"
            ]
        );
        assert!(Cluster {
            profile: Profile::Unsafe,
            ..safe3
        }
        .differences(&r)
        .is_empty());
        assert_eq!(
            safe3.describe(),
            "3 brokers, replication factor 3, min.insync.replicas 2 (safe profile)"
        );
    }

    #[test]
    fn one_broker_and_the_unsafe_profile() {
        assert_eq!(Cluster::default().min_insync(), 1);
        let u = Cluster {
            brokers: 3,
            profile: Profile::Unsafe,
        };
        assert_eq!((u.min_insync(), u.acks()), (1, Acks::Leader));
        assert!(u
            .broker_properties()
            .contains(&("unclean.leader.election.enable", "true".into())));
        assert!(Cluster { brokers: 0, ..u }.validate().is_err());
    }
}
