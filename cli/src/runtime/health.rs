//! The one judgement of whether a stack is whole, used by `wiberctl stack status` and
//! by a scenario's steady-state check (which also wants the consumers caught up).
//!
//! An instance is whole when it runs, is attached to the stack's network, and its
//! healthcheck (where it has one) says healthy; `starting` is not healthy yet. The stack
//! is whole when every instance is, and the API answers ready, and no partition is
//! stalled (a consumer reports it cannot get past a record while records wait behind it:
//! [`PartitionLag::stall_line`]).

use std::time::Duration;

use anyhow::Result;

use super::{Endpoints, Health, InstanceState, InstanceStatus, Stack};
use crate::client::ApiClient;
use crate::kafka::{self, PartitionLag};

/// What the API's `/health/readiness` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReadiness {
    Ready,
    NotReady {
        status: u16,
        kafka: String,
        mongodb: String,
    },
    Unreachable(String),
    /// The stack has no api instance with a published port.
    NoApi,
}

/// Everything the judgement looked at.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub instances: Vec<InstanceStatus>,
    pub endpoints: Endpoints,
    pub api: ApiReadiness,
    /// The consumer group's lag per partition, or why it could not be read.
    pub lag: Result<Vec<PartitionLag>, String>,
}

/// Why one instance is not whole, or `None`.
pub fn instance_problem(s: &InstanceStatus) -> Option<String> {
    let id = &s.info.id;
    if s.info.state != InstanceState::Running {
        return Some(format!("{id} is {}", s.info.state));
    }
    if !s.connected {
        return Some(format!("{id} is disconnected"));
    }
    match s.health {
        Health::Healthy | Health::None => None,
        h => Some(format!("{id} is {h}")),
    }
}

impl HealthReport {
    /// What is wrong, one line each; with `want_drained`, lag above 0 is wrong too.
    pub fn problems(&self, want_drained: bool) -> Vec<String> {
        self.problems_at(want_drained, wiber_model::now_ms())
    }

    /// [`HealthReport::problems`] as judged at `now_ms` (how long a stall has lasted).
    pub fn problems_at(&self, want_drained: bool, now_ms: i64) -> Vec<String> {
        let mut out: Vec<String> = self.instances.iter().filter_map(instance_problem).collect();
        if self.instances.is_empty() {
            out.push("the stack has no instances".into());
        }
        match &self.api {
            ApiReadiness::Ready => {}
            ApiReadiness::NotReady {
                status,
                kafka,
                mongodb,
            } => out.push(format!(
                "the api is not ready ({status}: kafka {kafka}, mongodb {mongodb})"
            )),
            ApiReadiness::Unreachable(e) => out.push(format!("the api does not answer: {e}")),
            ApiReadiness::NoApi => {
                out.push("the stack has no api instance with a published port".into())
            }
        }
        // A stall is wrong whether or not the caller wants the lag drained: lag is normal
        // under load, a consumer that cannot get past a record is not.
        if let Ok(l) = &self.lag {
            out.extend(kafka::stall_lines(l, now_ms));
        }
        if want_drained {
            match &self.lag {
                Ok(l) if kafka::total(l) == 0 => {}
                Ok(l) => out.push(format!(
                    "consumer group {} has lag {}",
                    self.endpoints.names.group,
                    kafka::total(l)
                )),
                Err(e) => out.push(e.clone()),
            }
        }
        out
    }

    /// Every instance whole and the API ready (lag may be above 0).
    pub fn ok(&self) -> bool {
        self.problems(false).is_empty()
    }
}

/// Looks at the stack once: instances, the API's readiness at `endpoints`, the
/// consumer group's lag. The endpoints are the caller's (read once, not at every look of
/// a polling loop).
pub async fn check(stack: &Stack, endpoints: &Endpoints) -> Result<HealthReport> {
    let instances = stack.status().await?;
    let endpoints = endpoints.clone();
    let api = match &endpoints.api_url {
        Some(url) => {
            let client = ApiClient::new(url, Duration::from_secs(3))?;
            match client.readiness().await {
                Ok((200, _)) => ApiReadiness::Ready,
                Ok((status, r)) => ApiReadiness::NotReady {
                    status,
                    kafka: r.kafka,
                    mongodb: r.mongodb,
                },
                Err(e) => ApiReadiness::Unreachable(e.to_string()),
            }
        }
        None => ApiReadiness::NoApi,
    };
    let lag = match &endpoints.kafka_bootstrap {
        Some(b) => kafka::group_lag(
            b,
            &endpoints.names.group,
            &endpoints.names.topic,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| format!("{e:#}")),
        None => Err("no kafka instance with a published port".to_string()),
    };
    Ok(HealthReport {
        instances,
        endpoints,
        api,
        lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::InstanceInfo;

    fn status(id: &str, state: InstanceState, health: Health, connected: bool) -> InstanceStatus {
        InstanceStatus {
            info: InstanceInfo::bare(id.parse().unwrap(), state),
            health,
            connected,
        }
    }

    fn report(instances: Vec<InstanceStatus>, lag: i64) -> HealthReport {
        HealthReport {
            instances,
            endpoints: Endpoints::default(),
            api: ApiReadiness::Ready,
            lag: Ok(vec![PartitionLag {
                partition: 0,
                committed: Some(0),
                low: 0,
                high: lag,
                lag,
                stall: None,
            }]),
        }
    }

    #[test]
    fn one_rule_for_every_instance() {
        use Health::*;
        use InstanceState::*;
        assert!(instance_problem(&status("api#1", Running, Healthy, true)).is_none());
        assert!(instance_problem(&status("consumer#1", Running, None, true)).is_none());
        for (s, want) in [
            (
                status("kafka#1", Running, Starting, true),
                "kafka#1 is starting",
            ),
            (
                status("kafka#1", Running, Unhealthy, true),
                "kafka#1 is unhealthy",
            ),
            (
                status("consumer#2", Paused, None, true),
                "consumer#2 is paused",
            ),
            (
                status("consumer#2", Exited, None, true),
                "consumer#2 is exited",
            ),
            (
                status("consumer#1", Running, None, false),
                "consumer#1 is disconnected",
            ),
        ] {
            assert_eq!(instance_problem(&s).as_deref(), Some(want));
        }
    }

    #[test]
    fn steady_state_also_wants_the_lag_drained() {
        let r = report(
            vec![status(
                "api#1",
                InstanceState::Running,
                Health::Healthy,
                true,
            )],
            3,
        );
        assert!(r.ok());
        assert_eq!(
            r.problems(true),
            ["consumer group wiber-consumers has lag 3"]
        );
        let mut down = r.clone();
        down.api = ApiReadiness::Unreachable("refused".into());
        assert!(!down.ok());
        assert!(!report(Vec::new(), 0).ok(), "an empty stack is not whole");
    }

    /// A stalled partition makes the stack not whole (`stack status` exits 1); a report
    /// left on a partition that drained since does not.
    #[test]
    fn a_stalled_partition_is_a_problem_until_it_drains() {
        let whole = vec![status(
            "api#1",
            InstanceState::Running,
            Health::Healthy,
            true,
        )];
        let mut r = report(whole, 0);
        r.lag = Ok(vec![crate::kafka::tests::stalled(3, 1042, 1050)]);
        assert!(!r.ok());
        assert_eq!(
            r.problems_at(false, 121_000),
            ["stalled p3@1042 for 2m (7 attempts, consumer#1): unsupported Unicode escape sequence"]
        );
        // Stale: the partition's lag is 0 (the consumer got past it since).
        let mut drained = crate::kafka::tests::stalled(3, 1050, 1050);
        drained.lag = 0;
        r.lag = Ok(vec![drained]);
        assert!(r.ok(), "{:?}", r.problems(false));
        assert!(r.problems(true).is_empty());
    }
}
