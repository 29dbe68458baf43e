//! `consumer.stalled_max`: the longest time one partition had lag while the consumer
//! group's committed offset on it did not move, from the lag samples the run takes once
//! a second. A poison record retried forever, a consumer frozen with its partitions
//! still assigned, a rebalance that takes its time: each is a partition with work
//! waiting and nothing committed. A partition with lag 0 is idle, not stalled, however
//! long its offset stays put.
//!
//! Tracked as the samples come in (a few numbers per partition, not the samples), so an
//! hour's soak costs no memory for it. A stall is measured from the first sample that
//! saw it to the last that still did (a lower bound: between samples it may have begun
//! earlier and ended later by up to a sampling interval), so a partition that advances
//! at every sample reads 0, not the sampling interval. Samples Kafka could not answer
//! (a broker down) leave every stall as it was: the next answer says whether the offset
//! moved meanwhile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One partition in one lag sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset; `None` before it committed any.
    pub committed: Option<i64>,
    pub lag: i64,
}

/// The longest stall of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub partition: i32,
    /// The committed offset it was stuck at (`None`: the group had committed none).
    pub offset: Option<i64>,
    /// When it was first seen, ms since the epoch.
    pub from_ms: i64,
    pub ms: i64,
    /// The highest lag sampled while it lasted.
    pub peak_lag: i64,
}

impl Stall {
    /// `partition 3 at offset 1042: 40.0 s (lag up to 812)`.
    pub fn describe(&self) -> String {
        format!(
            "partition {} at offset {}: {:.1} s (lag up to {})",
            self.partition,
            self.offset
                .map_or_else(|| "none committed".to_string(), |o| o.to_string()),
            self.ms as f64 / 1000.0,
            self.peak_lag
        )
    }
}

/// Stalls as the samples come in; [`StallTracker::finish`] gives the longest.
#[derive(Debug, Default)]
pub struct StallTracker {
    /// Per partition, the stall under way: from its first sample to its latest.
    open: BTreeMap<i32, Stall>,
    longest: Option<Stall>,
    /// Whether any sample was taken: without one nothing was measured.
    sampled: bool,
}

impl StallTracker {
    /// One lag sample at `time_ms` (every partition Kafka answered for).
    pub fn observe(&mut self, time_ms: i64, parts: &[PartitionLag]) {
        self.sampled = true;
        for p in parts {
            match self.open.get_mut(&p.partition) {
                Some(s) if p.lag > 0 && s.offset == p.committed => {
                    s.ms = time_ms - s.from_ms;
                    s.peak_lag = s.peak_lag.max(p.lag);
                }
                _ => {
                    if let Some(done) = self.open.remove(&p.partition) {
                        self.close(done);
                    }
                    if p.lag > 0 {
                        self.open.insert(
                            p.partition,
                            Stall {
                                partition: p.partition,
                                offset: p.committed,
                                from_ms: time_ms,
                                ms: 0,
                                peak_lag: p.lag,
                            },
                        );
                    }
                }
            }
        }
    }

    /// A stall seen by one sample only lasted no measurable time: not one.
    fn close(&mut self, s: Stall) {
        if s.ms > 0 && self.longest.is_none_or(|l| s.ms > l.ms) {
            self.longest = Some(s);
        }
    }

    /// The longest stall of the run, those still under way included: `Some(None)` when
    /// no partition stalled, `None` when no sample was taken (not measured).
    pub fn finish(mut self) -> Option<Option<Stall>> {
        if !self.sampled {
            return None;
        }
        for s in std::mem::take(&mut self.open).into_values() {
            self.close(s);
        }
        Some(self.longest)
    }
}

/// `consumer.stalled_max` in seconds: the longest stall, 0 when there was none.
pub fn stalled_max_seconds(longest: Option<&Stall>) -> f64 {
    longest.map_or(0.0, |s| s.ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, committed: i64, lag: i64) -> PartitionLag {
        PartitionLag {
            partition,
            committed: Some(committed),
            lag,
        }
    }

    /// 90 samples a second apart; partition 3 stuck at offset 1042 with lag from
    /// second 20 to second 60, the others advancing all along.
    #[test]
    fn a_partition_stuck_for_40_s_among_advancing_ones_is_a_40_s_stall() {
        let mut t = StallTracker::default();
        for s in 0..90i64 {
            let mut parts: Vec<PartitionLag> = (0..6)
                .filter(|n| *n != 3)
                .map(|n| p(n, 100 * s, 7))
                .collect();
            let stuck = (20..=60).contains(&s);
            parts.push(if stuck {
                p(3, 1042, 10 + s)
            } else {
                p(3, 1000 + 50 * s, 5)
            });
            t.observe(1_000_000 + s * 1000, &parts);
        }
        let longest = t.finish().unwrap().unwrap();
        assert_eq!(
            longest,
            Stall {
                partition: 3,
                offset: Some(1042),
                from_ms: 1_020_000,
                ms: 40_000,
                peak_lag: 70,
            }
        );
        assert_eq!(stalled_max_seconds(Some(&longest)), 40.0);
        assert_eq!(
            longest.describe(),
            "partition 3 at offset 1042: 40.0 s (lag up to 70)"
        );
    }

    #[test]
    fn lag_0_with_an_offset_that_does_not_move_is_idle_not_stalled() {
        let mut t = StallTracker::default();
        for s in 0..60i64 {
            t.observe(s * 1000, &[p(0, 500, 0), p(1, 20 * s, 3)]);
        }
        assert_eq!(t.finish().unwrap(), None);
        assert_eq!(stalled_max_seconds(None), 0.0);
    }

    #[test]
    fn stalls_still_under_way_count_and_unanswered_samples_do_not_break_them() {
        let mut t = StallTracker::default();
        // Stuck from second 0; seconds 10-19 unanswered (Kafka down); still stuck at 30.
        for s in (0..10).chain(20..=30) {
            t.observe(s * 1000, &[p(0, 7, 4)]);
        }
        assert_eq!(t.finish().unwrap().map(|s| s.ms), Some(30_000));
        // A stall that ends (lag 0), then a shorter one: the longer is kept.
        let mut t = StallTracker::default();
        for s in 0..=12 {
            t.observe(s * 1000, &[p(0, 7, 4)]);
        }
        t.observe(13_000, &[p(0, 11, 0)]);
        for s in 14..=16 {
            t.observe(s * 1000, &[p(0, 11, 2)]);
        }
        let l = t.finish().unwrap().unwrap();
        assert_eq!((l.ms, l.offset), (12_000, Some(7)));
        // No sample at all: not measured.
        assert_eq!(StallTracker::default().finish(), None);
    }
}
