//! Fault targets, shared by `wiberctl chaos` and scenario files: `consumer#2` (one
//! instance), `consumer` (every instance of the service) or `random:consumer` (one
//! instance, chosen anew each time), and how they resolve against a running stack.

use std::fmt;

use anyhow::{anyhow, bail, Result};

use super::{InstanceId, InstanceInfo, ParseIdError, Service};

/// Who a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Instance(InstanceId),
    /// Every instance of the service.
    Service(Service),
    /// One instance, chosen anew at each occurrence.
    Random(Service),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, ParseIdError> {
        let s = s.trim();
        if let Some(svc) = s.strip_prefix("random:") {
            return svc.parse().map(Target::Random);
        }
        if s.contains('#') {
            return s.parse().map(Target::Instance);
        }
        s.parse().map(Target::Service)
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
                    .filter(|i| (i.state == "running") == wants_running)
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
        }
    }
}
