//! What a running scenario shows while it runs: the phase it is in (before, during
//! which fault and for how much longer, after), when the next fault comes, and the
//! consumer lag. The load's own counts (goodput, ok, failed) follow on the same line,
//! from the bench collector, which calls [`Live::line`] at every refresh.
//!
//! The phase is told from the file's schedule (due times and `for`), not from the fault
//! records: the line is about what the operator planned and where the run is in it; the
//! report's phases are measured from what really happened.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::format::FaultSpec;

/// One planned fault window, as offsets from the start of the load.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    start: Duration,
    /// `None`: an action without undo (kill, restart, scale) is a moment, not a window.
    end: Option<Duration>,
    what: String,
}

/// Where the run is in its plan at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Now {
    /// No fault has started yet.
    Before,
    /// Inside a fault's window; `left` until its undo is due.
    During { what: String, left: Duration },
    /// Between faults (after one, before the next).
    Between,
    /// Every fault is behind us.
    After,
}

/// The fault schedule of a scenario, with the load's length.
#[derive(Debug, Clone)]
pub struct Plan {
    windows: Vec<Window>,
}

impl Plan {
    pub fn new(faults: &[FaultSpec]) -> Plan {
        let mut windows: Vec<Window> = faults
            .iter()
            .flat_map(|f| {
                f.occurrences().into_iter().map(move |at| Window {
                    start: at,
                    end: f.for_.map(|d| at + d),
                    what: format!("{} {}", f.action.name(), f.target),
                })
            })
            .collect();
        windows.sort_by_key(|w| w.start);
        Plan { windows }
    }

    /// The phase at `t` into the load.
    pub fn now(&self, t: Duration) -> Now {
        let Some(first) = self.windows.first() else {
            return Now::After;
        };
        if t < first.start {
            return Now::Before;
        }
        // The open window that ends last wins: overlapping faults show the longer one.
        let open = self
            .windows
            .iter()
            .filter(|w| w.start <= t && w.end.is_some_and(|e| t < e))
            .max_by_key(|w| w.end);
        if let Some(w) = open {
            return Now::During {
                what: w.what.clone(),
                left: w.end.expect("open windows have an end") - t,
            };
        }
        if self.windows.iter().any(|w| w.start > t) {
            Now::Between
        } else {
            Now::After
        }
    }

    /// The next fault to start after `t`, and how long until it does.
    pub fn next(&self, t: Duration) -> Option<(&str, Duration)> {
        self.windows
            .iter()
            .find(|w| w.start > t)
            .map(|w| (w.what.as_str(), w.start - t))
    }

    /// `during pause consumer#1 (4s left) · next kill api#1 in 12s`.
    pub fn describe(&self, t: Duration) -> String {
        let mut s = match self.now(t) {
            Now::Before => "before the faults".to_string(),
            Now::During { what, left } => format!("during {what} ({}s left)", ceil_secs(left)),
            Now::Between => "between faults".to_string(),
            Now::After => {
                if self.windows.is_empty() {
                    "no faults".to_string()
                } else {
                    "after the faults".to_string()
                }
            }
        };
        if let Some((what, dt)) = self.next(t) {
            s.push_str(&format!(" · next {what} in {}s", ceil_secs(dt)));
        }
        s
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// Lag not (yet) known.
const NO_LAG: i64 = -1;

/// The scenario's part of the progress line: the plan and the latest lag sample.
/// Shared between the lag sampler (which writes the lag) and the collector (which reads
/// the line); cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    plan: Arc<Plan>,
    start: Instant,
    lag: Arc<AtomicI64>,
    /// What verify-as-it-goes found so far (`verified 1200`), when the run checks as it goes.
    verified: Arc<std::sync::Mutex<Option<String>>>,
}

impl Live {
    pub fn new(plan: Plan, start: Instant) -> Live {
        Live {
            plan: Arc::new(plan),
            start,
            lag: Arc::new(AtomicI64::new(NO_LAG)),
            verified: Arc::default(),
        }
    }

    /// When the load (and the fault timeline) started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records the latest total lag (`None`: Kafka did not answer).
    pub fn set_lag(&self, lag: Option<i64>) {
        self.lag.store(lag.unwrap_or(NO_LAG), Ordering::Relaxed);
    }

    /// Records what verify-as-it-goes found so far.
    pub fn set_verified(&self, line: String) {
        *self.verified.lock().expect("verified lock") = Some(line);
    }

    pub fn line(&self) -> String {
        let t = Instant::now().saturating_duration_since(self.start);
        let lag = match self.lag.load(Ordering::Relaxed) {
            NO_LAG => "lag ?".to_string(),
            n => format!("lag {n}"),
        };
        let verified = self.verified.lock().expect("verified lock").clone();
        match verified {
            Some(v) => format!("{} · {lag} · {v}", self.plan.describe(t)),
            None => format!("{} · {lag}", self.plan.describe(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::timeline::tests::faults;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_phase_follows_the_schedule() {
        let plan = Plan::new(&faults(
            r#"
[[faults]]
at = "10s"
action = "pause"
target = "consumer#1"
for = "5s"

[[faults]]
at = "20s"
action = "kill"
target = "api#1"
"#,
        ));
        assert_eq!(plan.now(s(3)), Now::Before);
        assert_eq!(plan.next(s(3)), Some(("pause consumer#1", s(7))));
        assert_eq!(
            plan.now(s(12)),
            Now::During {
                what: "pause consumer#1".into(),
                left: s(3)
            }
        );
        assert_eq!(plan.now(s(16)), Now::Between);
        assert_eq!(plan.next(s(16)), Some(("kill api#1", s(4))));
        // A kill has no window: right after it, every fault is behind us.
        assert_eq!(plan.now(s(21)), Now::After);
        assert_eq!(plan.next(s(21)), None);
        assert_eq!(
            plan.describe(s(12)),
            "during pause consumer#1 (3s left) · next kill api#1 in 8s"
        );
        assert_eq!(plan.describe(s(25)), "after the faults");
    }

    #[test]
    fn repeated_faults_are_each_a_window() {
        let plan = Plan::new(&faults(
            r#"
[[faults]]
at = "5s"
every = "10s"
count = 3
action = "pause"
target = "consumer"
for = "2s"
"#,
        ));
        assert!(matches!(plan.now(s(16)), Now::During { .. }));
        assert_eq!(plan.now(s(18)), Now::Between);
        assert_eq!(plan.next(s(18)).map(|n| n.1), Some(s(7)));
        assert_eq!(plan.now(s(28)), Now::After);
    }

    #[test]
    fn no_faults_says_so_and_lag_is_shown_once_known() {
        let live = Live::new(Plan::new(&[]), Instant::now());
        assert_eq!(live.line(), "no faults · lag ?");
        live.set_lag(Some(42));
        assert!(live.line().ends_with("lag 42"), "{}", live.line());
    }
}
