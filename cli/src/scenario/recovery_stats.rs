//! Recovery across many faults: the per-fault [`Recovery`] figures grouped by kind of
//! fault (its action and the service it hit: `kill consumer`, `pause kafka`, `loss
//! mongo`), each group's count and spread (p50, p90, max) of the time to the first ack,
//! to lag 0 and to the steady lag after the fault window closed, the spread over all
//! faults (the `recovery.<figure>.<stat>` threshold metrics), and the worst fault of the
//! run. A soak of a thousand faults is read from these, not from a thousand rows.
//!
//! A fault that never recovered ranks above every time: a quantile that lands on one is
//! "never" (`None`), and so is the max as soon as one fault never recovered; a
//! threshold on such a figure fails as not measured, never passes.
//!
//! The kind's service is that of the instances the fault acted on, so a Kafka role
//! (`leader of partition 0`) resolved to a broker counts as `kafka`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::phases::quantile;
use super::recovery::Recovery;
use super::threshold::Metrics;
use super::timeline::FaultRecord;

/// Recovery figures with a spread: `recovery.<figure>.<stat>`.
pub use super::threshold::RECOVERY_FIGURES as FIGURES;
/// Statistics of a spread over faults.
pub use super::threshold::RECOVERY_STATS as STATS;

/// How long some faults took to recover from, in ms after their window closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    /// `None` when any of them never recovered.
    pub max_ms: Option<i64>,
    /// How many never recovered.
    pub never: usize,
}

impl Spread {
    /// The spread of `times`, `None` being a fault that never recovered.
    pub fn of(times: impl IntoIterator<Item = Option<i64>>) -> Spread {
        // Never ranks above every time: as the largest value, mapped back to `None`.
        const NEVER: i64 = i64::MAX;
        let mut sorted: Vec<i64> = times.into_iter().map(|t| t.unwrap_or(NEVER)).collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            quantile(&sorted, q)
                .map(|v| v as i64)
                .filter(|v| *v != NEVER)
        };
        Spread {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            max_ms: at(1.0),
            never: sorted.iter().filter(|v| **v == NEVER).count(),
        }
    }

    /// The statistic named `stat` (one of [`STATS`]).
    pub fn get(&self, stat: &str) -> Option<i64> {
        match stat {
            "p50" => self.p50_ms,
            "p90" => self.p90_ms,
            "max" => self.max_ms,
            _ => None,
        }
    }
}

/// One kind of fault: every occurrence of an action on one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    pub action: String,
    /// The service the fault acted on (`kafka` for a resolved Kafka role); services
    /// joined by `,` when one fault hit several, `-` when it hit none.
    pub service: String,
    pub count: usize,
    /// Fault end → first ok answer.
    pub first_ack: Spread,
    /// Fault end → consumer lag 0.
    pub lag_zero: Spread,
    /// Fault end → consumer lag back to its level before the first fault.
    pub lag_steady: Spread,
}

impl KindStats {
    /// `kill consumer`.
    pub fn kind(&self) -> String {
        format!("{} {}", self.action, self.service)
    }

    /// The spread of the figure named `figure` (one of [`FIGURES`]).
    pub fn spread(&self, figure: &str) -> Option<&Spread> {
        match figure {
            "first_ack" => Some(&self.first_ack),
            "lag_zero" => Some(&self.lag_zero),
            "lag_steady" => Some(&self.lag_steady),
            _ => None,
        }
    }

    fn of(action: &str, service: &str, recs: &[&Recovery]) -> KindStats {
        KindStats {
            action: action.to_string(),
            service: service.to_string(),
            count: recs.len(),
            first_ack: Spread::of(recs.iter().map(|r| r.first_ack_ms)),
            lag_zero: Spread::of(recs.iter().map(|r| r.lag_zero_ms)),
            lag_steady: Spread::of(recs.iter().map(|r| r.lag_steady_ms)),
        }
    }
}

/// The fault the run took longest to recover from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstFault {
    pub fault: usize,
    pub occurrence: u32,
    pub description: String,
    pub targets: Vec<String>,
    /// Seconds since the load started when it was due.
    pub at_s: f64,
    pub start_ms: i64,
    pub first_ack_ms: Option<i64>,
    pub lag_steady_ms: Option<i64>,
}

/// Recovery over every fault of a run (`scenario.json`'s `recovery_stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStats {
    /// Fault occurrences with recovery figures.
    pub faults: usize,
    /// All of them together (kind `all faults`).
    pub all: Option<KindStats>,
    /// One entry per kind, by action, then service.
    pub kinds: Vec<KindStats>,
    pub worst: Option<WorstFault>,
}

/// The services of the instances named `targets` (`consumer#2` → `consumer`).
pub fn services(targets: &[String]) -> String {
    let set: BTreeSet<&str> = targets
        .iter()
        .map(|t| t.split('#').next().unwrap_or(t))
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// How bad a recovery was: the time to the steady lag, then to the first ack, a
/// figure that never recovered counting as the longest.
fn badness(r: &Recovery) -> (i64, i64) {
    (
        r.lag_steady_ms.unwrap_or(i64::MAX),
        r.first_ack_ms.unwrap_or(i64::MAX),
    )
}

/// The recoveries, the worst first (equally bad ones in run order).
pub fn worst_first(recovery: &[Recovery]) -> Vec<&Recovery> {
    let mut v: Vec<&Recovery> = recovery.iter().collect();
    v.sort_by_key(|r| Reverse(badness(r)));
    v
}

/// The figures over every fault, grouped by kind; `records` give each fault's action.
pub fn compute(records: &[FaultRecord], recovery: &[Recovery]) -> RecoveryStats {
    let record = |r: &Recovery| {
        records
            .iter()
            .find(|f| f.fault == r.fault && f.occurrence == r.occurrence)
    };
    let mut groups: BTreeMap<(String, String), Vec<&Recovery>> = BTreeMap::new();
    for r in recovery {
        let action = record(r).map_or_else(
            || {
                r.description
                    .split_whitespace()
                    .next()
                    .unwrap_or("-")
                    .to_string()
            },
            |f| f.action.clone(),
        );
        groups
            .entry((action, services(&r.targets)))
            .or_default()
            .push(r);
    }
    let all: Vec<&Recovery> = recovery.iter().collect();
    let worst = worst_first(recovery).first().map(|r| WorstFault {
        fault: r.fault,
        occurrence: r.occurrence,
        description: r.description.clone(),
        targets: r.targets.clone(),
        at_s: record(r).map_or(0.0, |f| f.due_s),
        start_ms: r.start_ms,
        first_ack_ms: r.first_ack_ms,
        lag_steady_ms: r.lag_steady_ms,
    });
    RecoveryStats {
        faults: recovery.len(),
        all: (!all.is_empty()).then(|| KindStats::of("all", "faults", &all)),
        kinds: groups
            .iter()
            .map(|((a, s), recs)| KindStats::of(a, s, recs))
            .collect(),
        worst,
    }
}

/// Adds `recovery.<figure>.<stat>` (ms, over every fault) for each figure measured.
pub fn insert_metrics(recovery: &[Recovery], m: &mut Metrics) {
    if recovery.is_empty() {
        return;
    }
    let all: Vec<&Recovery> = recovery.iter().collect();
    let s = KindStats::of("all", "faults", &all);
    for figure in FIGURES {
        let spread = s.spread(figure).expect("a known figure");
        for stat in STATS {
            if let Some(v) = spread.get(stat) {
                m.insert(format!("recovery.{figure}.{stat}"), v as f64);
            }
        }
    }
}

/// Faults with recovery figures and runs made of them, for the tests of the reports.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::scenario::outcome::ScenarioRun;
    use crate::scenario::recovery::WindowLatency;

    fn window() -> WindowLatency {
        WindowLatency {
            from_ms: 0,
            to_ms: 0,
            requests: 0,
            errors: 0,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
        }
    }

    /// Fault `i` (`action` on `target`) that acked again `ack` ms after it and got back
    /// to the steady lag `steady` ms after it.
    pub fn fault(
        i: usize,
        action: &str,
        target: &str,
        ack: Option<i64>,
        steady: Option<i64>,
    ) -> (FaultRecord, Recovery) {
        let rec = FaultRecord {
            fault: i,
            occurrence: 0,
            line: 1,
            description: format!("{action} {target} #{i}"),
            action: action.into(),
            targets: vec![target.into()],
            due_s: i as f64 * 10.0,
            started_ms: 1_000 + i as i64 * 10_000,
            acted_ms: None,
            ended_ms: None,
            result: "ok".into(),
            detail: None,
        };
        let r = Recovery {
            fault: i,
            occurrence: 0,
            description: rec.description.clone(),
            targets: rec.targets.clone(),
            start_ms: rec.started_ms,
            end_ms: rec.started_ms + 3_000,
            window_ms: 3_000,
            first_ack_ms: ack,
            lag_zero_ms: steady.map(|s| s + 500),
            lag_steady_ms: steady,
            lag_level: 0,
            peak_lag: None,
            partition_gap: None,
            before: window(),
            during: window(),
            after: window(),
        };
        (rec, r)
    }

    /// A verified run with `n` faults, in turn a consumer kill, a broker pause and a
    /// store link loss; fault `i` acks again after `(i + 1) * 10` ms and is back to the
    /// steady lag after `(i + 1) * 100` ms, so the last is the worst.
    pub fn soak_run(n: usize) -> ScenarioRun {
        let sc = crate::scenario::format::parse(
            std::path::Path::new("soak.toml"),
            "name = \"soak\"\n[load]\nrate = 10\nduration = \"60s\"\n",
        )
        .expect("a valid scenario");
        let mut o = ScenarioRun::new(&sc, "p", None);
        o.verify = Some(Default::default());
        let kinds = [
            ("kill", "consumer#1"),
            ("pause", "kafka#2"),
            ("loss", "mongo#1"),
        ];
        (o.faults, o.recovery) = (0..n)
            .map(|i| {
                let (a, t) = kinds[i % kinds.len()];
                let k = i as i64 + 1;
                fault(i, a, t, Some(k * 10), Some(k * 100))
            })
            .unzip();
        o.recovery_stats = Some(compute(&o.faults, &o.recovery));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::fault;
    use super::*;

    fn run(faults: Vec<(FaultRecord, Recovery)>) -> (Vec<FaultRecord>, Vec<Recovery>) {
        faults.into_iter().unzip()
    }

    #[test]
    fn spread_of_times_with_never_at_the_top() {
        let s = Spread::of((1..=10).map(|i| Some(i * 100)));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.max_ms, s.never),
            (Some(500), Some(900), Some(1000), 0)
        );
        // One of ten never recovered: the p90 is still a time, the max is never.
        let s = Spread::of((1..=9).map(|i| Some(i * 100)).chain([None]));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.max_ms, s.never),
            (Some(500), Some(900), None, 1)
        );
        // Two of ten: the p90 lands on one.
        let s = Spread::of((1..=8).map(|i| Some(i * 100)).chain([None, None]));
        assert_eq!((s.p50_ms, s.p90_ms, s.never), (Some(500), None, 2));
        assert_eq!(Spread::of([]), Spread::default());
    }

    #[test]
    fn grouped_by_action_and_service_with_quantiles() {
        let mut faults = Vec::new();
        // Ten consumer kills: ack 0.1 s .. 1 s, steady lag 1 s .. 10 s.
        for i in 0..10 {
            faults.push(fault(
                i,
                "kill",
                &format!("consumer#{}", i % 2 + 1),
                Some((i as i64 + 1) * 100),
                Some((i as i64 + 1) * 1_000),
            ));
        }
        // Two broker pauses (one via a Kafka role, resolved to broker 3), one api kill.
        faults.push(fault(10, "pause", "kafka#3", Some(4_000), Some(20_000)));
        faults.push(fault(11, "pause", "kafka#1", Some(2_000), Some(5_000)));
        faults.push(fault(12, "kill", "api#1", Some(700), Some(0)));
        let (records, recovery) = run(faults);
        let s = compute(&records, &recovery);
        assert_eq!(s.faults, 13);
        let kinds: Vec<(String, usize)> = s.kinds.iter().map(|k| (k.kind(), k.count)).collect();
        assert_eq!(
            kinds,
            [
                ("kill api".to_string(), 1),
                ("kill consumer".to_string(), 10),
                ("pause kafka".to_string(), 2)
            ]
        );
        let consumer = &s.kinds[1];
        assert_eq!(
            (
                consumer.first_ack.p50_ms,
                consumer.first_ack.p90_ms,
                consumer.first_ack.max_ms
            ),
            (Some(500), Some(900), Some(1_000))
        );
        assert_eq!(
            (
                consumer.lag_steady.p50_ms,
                consumer.lag_steady.p90_ms,
                consumer.lag_steady.max_ms
            ),
            (Some(5_000), Some(9_000), Some(10_000))
        );
        assert_eq!(consumer.lag_zero.max_ms, Some(10_500));
        let kafka = &s.kinds[2];
        assert_eq!(
            (kafka.lag_steady.p50_ms, kafka.lag_steady.max_ms),
            (Some(5_000), Some(20_000))
        );
        let all = s.all.as_ref().unwrap();
        assert_eq!(all.count, 13);
        assert_eq!(all.lag_steady.max_ms, Some(20_000));
        // The worst: the longest to the steady lag, the broker 3 pause at 100 s.
        let w = s.worst.unwrap();
        assert_eq!(
            (w.fault, w.description.as_str(), w.at_s, w.lag_steady_ms),
            (10, "pause kafka#3 #10", 100.0, Some(20_000))
        );
        // The same figures as threshold metrics.
        let mut m = Metrics::new();
        insert_metrics(&recovery, &mut m);
        assert_eq!(m["recovery.lag_steady.max"], 20_000.0);
        assert_eq!(m["recovery.lag_steady.p50"], 5_000.0);
        assert_eq!(m["recovery.first_ack.p90"], 2_000.0);
        assert_eq!(m.len(), 9);
    }

    #[test]
    fn the_worst_fault_never_recovered_or_breaks_the_tie_on_first_ack() {
        let (records, recovery) = run(vec![
            fault(0, "kill", "consumer#1", Some(100), Some(5_000)),
            fault(1, "kill", "consumer#1", Some(900), Some(5_000)),
            fault(2, "kill", "consumer#2", Some(300), Some(5_000)),
        ]);
        // Equal lag: the slower first ack is the worse.
        assert_eq!(compute(&records, &recovery).worst.unwrap().fault, 1);
        let order: Vec<usize> = worst_first(&recovery).iter().map(|r| r.fault).collect();
        assert_eq!(order, [1, 2, 0]);
        // A fault whose lag never came back is worse than any time.
        let (records, recovery) = run(vec![
            fault(0, "kill", "consumer#1", Some(100), Some(50_000)),
            fault(1, "loss", "mongo#1", Some(100), None),
        ]);
        let s = compute(&records, &recovery);
        assert_eq!(s.worst.as_ref().unwrap().fault, 1);
        assert_eq!(s.kinds[0].kind(), "kill consumer");
        assert_eq!(s.kinds[1].kind(), "loss mongo");
        assert_eq!(s.kinds[1].lag_steady.never, 1);
        // So the max over all faults is not measured: a threshold on it fails.
        let mut m = Metrics::new();
        insert_metrics(&recovery, &mut m);
        assert!(!m.contains_key("recovery.lag_steady.max"));
        assert_eq!(m["recovery.first_ack.max"], 100.0);
        assert_eq!(compute(&[], &[]), RecoveryStats::default());
    }

    #[test]
    fn a_fault_on_no_instance_and_on_several() {
        assert_eq!(services(&[]), "-");
        assert_eq!(
            services(&["consumer#1".into(), "consumer#3".into()]),
            "consumer"
        );
        assert_eq!(services(&["kafka#1".into(), "api#2".into()]), "api,kafka");
    }
}
