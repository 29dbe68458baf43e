//! Per-fault recovery figures, computed from the ledger (every request with its due and
//! answer times) and the consumer-lag samples taken during the run:
//! - time to the first successful ack after the fault window closed;
//! - time until the consumer lag is 0 after it closed (`lag_zero`), and until it is back
//!   to its steady-state level (`lag_steady`): under load the committed offset trails the
//!   log end by a batch or two even when all is well, so that level is the highest lag
//!   sampled before the first fault;
//! - ack latency percentiles of the requests due before, during and after the window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wiber_model::ledger::{LedgerEntry, Outcome};

use super::phases::quantile;
use super::timeline::FaultRecord;

/// How far before and after a window the "before" and "after" figures look.
pub const SIDE_MS: i64 = 10_000;

/// One lag sample; `lag` is `None` when Kafka could not be asked (broker down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagSample {
    pub time_ms: i64,
    pub lag: Option<i64>,
}

/// Ack latency of the requests due in a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowLatency {
    pub from_ms: i64,
    pub to_ms: i64,
    pub requests: u64,
    /// Outcomes other than ok.
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub fault: usize,
    pub occurrence: u32,
    pub description: String,
    pub targets: Vec<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub window_ms: i64,
    /// Fault end → first ok answer after it.
    pub first_ack_ms: Option<i64>,
    /// Fault end → first lag sample of 0.
    pub lag_zero_ms: Option<i64>,
    /// Fault end → first lag sample at or below `lag_level`.
    pub lag_steady_ms: Option<i64>,
    pub lag_level: i64,
    pub peak_lag: Option<i64>,
    /// The longest time one partition went without an acknowledged write, among the
    /// gaps that overlap the fault's window (answer to answer, by the clients' clock): a
    /// leader election as the clients see it. `None` when no ack named its partition.
    #[serde(default)]
    pub partition_gap: Option<PartitionGap>,
    pub before: WindowLatency,
    pub during: WindowLatency,
    pub after: WindowLatency,
}

/// A partition's longest stretch without an acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionGap {
    pub partition: i32,
    pub ms: i64,
}

/// The acknowledged writes' answer times, per partition, sorted.
fn acks_by_partition(ledger: &[LedgerEntry]) -> BTreeMap<i32, Vec<i64>> {
    let mut by: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for e in ledger.iter().filter(|e| e.outcome == Outcome::Ok) {
        if let Some(p) = e.partition {
            by.entry(p).or_default().push(e.answered);
        }
    }
    for v in by.values_mut() {
        v.sort_unstable();
    }
    by
}

/// The longest gap between two acks of one partition that overlaps `[start, end]`; a
/// partition that never acked again counts until `load_end`.
fn partition_gap(
    by: &BTreeMap<i32, Vec<i64>>,
    start: i64,
    end: i64,
    load_end: i64,
) -> Option<PartitionGap> {
    let mut worst: Option<PartitionGap> = None;
    for (p, acks) in by {
        let nexts = acks.iter().skip(1).copied().chain([load_end.max(end)]);
        for (a, b) in acks.iter().copied().zip(nexts) {
            if a < end && b > start && worst.is_none_or(|w| b - a > w.ms) {
                worst = Some(PartitionGap {
                    partition: *p,
                    ms: b - a,
                });
            }
        }
    }
    worst
}

/// The steady-state lag level: the highest lag sampled before `first_fault_ms` (0
/// without samples).
pub fn steady_lag(samples: &[LagSample], first_fault_ms: i64) -> i64 {
    samples
        .iter()
        .filter(|s| s.time_ms < first_fault_ms)
        .filter_map(|s| s.lag)
        .max()
        .unwrap_or(0)
}

/// Recovery figures of each fault record; `load_end_ms` bounds the "after" window.
pub fn compute(
    records: &[FaultRecord],
    ledger: &[LedgerEntry],
    samples: &[LagSample],
    load_start_ms: i64,
    load_end_ms: i64,
) -> Vec<Recovery> {
    let first = records
        .iter()
        .map(|r| r.started_ms)
        .min()
        .unwrap_or(i64::MAX);
    let level = steady_lag(samples, first);
    let mut ok_answers: Vec<i64> = ledger
        .iter()
        .filter(|e| e.outcome == Outcome::Ok)
        .map(|e| e.answered)
        .collect();
    ok_answers.sort_unstable();
    let by_partition = acks_by_partition(ledger);
    records
        .iter()
        .map(|r| {
            let start = r.started_ms;
            let end = r.ended_ms.or(r.acted_ms).unwrap_or(start);
            let first_ack_ms = ok_answers.iter().find(|&&a| a >= end).map(|a| a - end);
            let after: Vec<&LagSample> = samples.iter().filter(|s| s.time_ms >= end).collect();
            let first_at = |most: i64| {
                after
                    .iter()
                    .find(|s| s.lag.is_some_and(|l| l <= most))
                    .map(|s| s.time_ms - end)
            };
            let lag_zero_ms = first_at(0);
            let lag_steady_ms = first_at(level);
            let peak_lag = samples
                .iter()
                .filter(|s| s.time_ms >= start)
                .filter(|s| lag_steady_ms.is_none_or(|z| s.time_ms <= end + z))
                .filter_map(|s| s.lag)
                .max();
            Recovery {
                fault: r.fault,
                occurrence: r.occurrence,
                description: r.description.clone(),
                targets: r.targets.clone(),
                start_ms: start,
                end_ms: end,
                window_ms: end - start,
                first_ack_ms,
                lag_zero_ms,
                lag_steady_ms,
                lag_level: level,
                peak_lag,
                partition_gap: partition_gap(&by_partition, start, end, load_end_ms),
                before: latency(ledger, (start - SIDE_MS).max(load_start_ms), start),
                during: latency(ledger, start, end.max(start + 1)),
                after: latency(ledger, end, (end + SIDE_MS).min(load_end_ms.max(end))),
            }
        })
        .collect()
}

/// Ack latency (answer − due) of the ok answers among the requests due in `[from, to)`.
fn latency(ledger: &[LedgerEntry], from: i64, to: i64) -> WindowLatency {
    // Of ok answers only, as every ack latency is: a fast error is not a fast ack.
    let mut ms: Vec<i64> = Vec::new();
    let mut requests = 0;
    let mut errors = 0;
    for e in ledger.iter().filter(|e| (from..to).contains(&e.due)) {
        requests += 1;
        if e.outcome == Outcome::Ok {
            ms.push(e.answered - e.due);
        } else {
            errors += 1;
        }
    }
    ms.sort_unstable();
    let q = |q: f64| quantile(&ms, q);
    WindowLatency {
        from_ms: from,
        to_ms: to,
        requests,
        errors,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: ms.last().map(|v| *v as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(due: i64, answered: i64, outcome: Outcome) -> LedgerEntry {
        LedgerEntry {
            message_id: format!("r-c0-s{due}"),
            run: "r".into(),
            conversation: 0,
            seq: 0,
            due,
            sent: Some(due),
            answered,
            outcome,
            status: None,
            error: None,
            attempts: 1,
            size: 10,
            content_hash: String::new(),
            warmup: false,
            step: 0,
            acked_timestamp: None,
            partition: None,
            offset: None,
        }
    }

    fn record(start: i64, end: i64) -> FaultRecord {
        FaultRecord {
            fault: 0,
            occurrence: 0,
            line: 1,
            description: "kill api".into(),
            action: "kill".into(),
            targets: vec!["api#1".into()],
            due_s: 0.0,
            started_ms: start,
            acted_ms: Some(start + 10),
            ended_ms: Some(end),
            result: "ok".into(),
            detail: None,
        }
    }

    #[test]
    fn the_longest_partition_gap_is_the_election_the_clients_saw() {
        let on = |p: i32, answered: i64| LedgerEntry {
            partition: Some(p),
            ..entry(answered - 5, answered, Outcome::Ok)
        };
        // Partition 0 acks every 100 ms but for 1,000 → 4,200 (its leader died at 1,050
        // and a new one answered at 4,200); partition 1 never stops.
        let mut ledger: Vec<LedgerEntry> = (0..=10).map(|i| on(0, i * 100)).collect();
        ledger.extend((42..=60).map(|i| on(0, i * 100)));
        ledger.extend((0..=60).map(|i| on(1, i * 100)));
        ledger.push(entry(2_000, 7_000, Outcome::Failed)); // not an ack
        let by = acks_by_partition(&ledger);
        assert_eq!(
            partition_gap(&by, 1_050, 3_000, 6_000),
            Some(PartitionGap {
                partition: 0,
                ms: 3_200
            })
        );
        // A window elsewhere sees only the usual 100 ms.
        assert_eq!(
            partition_gap(&by, 5_000, 5_500, 6_000).map(|g| g.ms),
            Some(100)
        );
        // Never acked again: the gap runs to the end of the load.
        let stalled = acks_by_partition(&ledger[..11]);
        assert_eq!(
            partition_gap(&stalled, 1_050, 3_000, 6_000).map(|g| g.ms),
            Some(5_000)
        );
        assert_eq!(partition_gap(&BTreeMap::new(), 0, 1, 2), None);
    }

    #[test]
    fn figures_of_an_outage() {
        // Requests every 100 ms from t=0 to 30 s; an outage from 10 s to 15 s: requests
        // due then (and in the 0.5 s after) are answered at 15.5 s, retried.
        let ledger: Vec<LedgerEntry> = (0..300)
            .map(|i| {
                let due = i * 100;
                if (10_000..15_500).contains(&due) {
                    entry(due, 15_500, Outcome::Ok)
                } else if due == 9_900 {
                    entry(due, 15_000, Outcome::Unknown)
                } else {
                    entry(due, due + 5, Outcome::Ok)
                }
            })
            .collect();
        let samples: Vec<LagSample> = (0..30)
            .map(|s| LagSample {
                time_ms: s * 1000,
                lag: Some(match s {
                    0..=9 => 2,
                    10..=17 => 50,
                    18..=19 => 1,
                    _ => 0,
                }),
            })
            .collect();
        let r = compute(&[record(10_000, 15_000)], &ledger, &samples, 0, 30_000);
        let r = &r[0];
        assert_eq!(r.window_ms, 5_000);
        assert_eq!(r.first_ack_ms, Some(500));
        assert_eq!(r.lag_level, 2);
        assert_eq!(r.lag_steady_ms, Some(3_000));
        assert_eq!(r.lag_zero_ms, Some(5_000));
        assert_eq!(r.peak_lag, Some(50));
        assert_eq!(r.before.requests, 100);
        assert_eq!(r.before.errors, 1);
        assert_eq!(r.before.p50_ms, Some(5.0));
        // The unknown outcome answered after 5.1 s is an error, not an ack latency.
        assert_eq!(r.before.max_ms, Some(5.0));
        assert_eq!(r.during.requests, 50);
        assert_eq!(r.during.max_ms, Some(5_500.0));
        assert_eq!(r.after.p99_ms, Some(400.0));
        assert_eq!(r.after.p50_ms, Some(5.0));
    }

    #[test]
    fn never_recovering_is_none() {
        let samples = [LagSample {
            time_ms: 20_000,
            lag: None,
        }];
        let r = compute(&[record(10_000, 15_000)], &[], &samples, 0, 30_000);
        assert_eq!((r[0].first_ack_ms, r[0].lag_zero_ms), (None, None));
        assert_eq!(r[0].during.requests, 0);
    }
}
