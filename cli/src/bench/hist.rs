//! Latency histograms: HdrHistogram in microseconds, read out in milliseconds.
//!
//! Microsecond resolution with 3 significant digits keeps every percentile within 0.1 %;
//! over an hour's range that is ~190 KiB a histogram, fine for a run's few but not for
//! one per second of it: the timeline's seconds keep [`SecondLatencies`] instead.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use wiber_model::report::Percentiles;

/// Highest latency recorded exactly: one hour. Longer values are clamped to it (a
/// request cannot be pending that long; the clamp only guards against clock jumps).
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram (µs inside, ms outside).
#[derive(Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist::new()
    }
}

impl LatencyHist {
    pub fn new() -> LatencyHist {
        LatencyHist {
            h: Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.h
            .record(us)
            .expect("value is clamped into the histogram's range");
    }

    /// Records a latency given in ms (e2e latencies come as ms from two wall clocks and
    /// can be slightly negative when storedAt is rounded down: clamp to the minimum).
    pub fn record_ms(&mut self, ms: i64) {
        self.record(Duration::from_millis(ms.max(0) as u64));
    }

    pub fn add(&mut self, other: &LatencyHist) {
        self.h.add(&other.h).expect("histograms share bounds");
    }

    pub fn len(&self) -> u64 {
        self.h.len()
    }

    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The latency at `q` (0..=1), ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        us_to_ms(self.h.value_at_quantile(q))
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.h.len(),
            mean: round3(self.h.mean() / 1000.0),
            p50: self.quantile_ms(0.50),
            p90: self.quantile_ms(0.90),
            p99: self.quantile_ms(0.99),
            p999: self.quantile_ms(0.999),
            max: us_to_ms(self.h.max()),
        }
    }

    /// `[percentile, ms]` points for a distribution chart, denser towards the tail.
    pub fn curve(&self) -> Vec<[f64; 2]> {
        if self.h.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<[f64; 2]> = self
            .h
            .iter_quantiles(2)
            .map(|v| {
                [
                    round3(v.quantile_iterated_to() * 100.0),
                    us_to_ms(v.value_iterated_to()),
                ]
            })
            .collect();
        out.dedup_by(|b, a| a[0] == b[0]);
        out
    }

    /// The histogram in HdrHistogram's percentile-distribution text format (what
    /// `HistogramLogProcessor` and the online plotter read), values in ms.
    pub fn hgrm(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        for v in self.h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1000.0;
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:>12.3} {q:>14.12} {:>10} {:>14.2}",
                    v.count_since_last_iteration(),
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    s,
                    "{value:>12.3} {q:>14.12} {:>10}",
                    v.count_since_last_iteration()
                );
            }
        }
        let _ = writeln!(
            s,
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
            self.h.mean() / 1000.0,
            self.h.stdev() / 1000.0
        );
        let _ = writeln!(
            s,
            "#[Max     = {:>12.3}, Total count    = {:>12}]",
            self.h.max() as f64 / 1000.0,
            self.h.len()
        );
        let _ = writeln!(
            s,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            self.h.buckets(),
            (2 * 10u64.pow(u32::from(self.h.sigfig()))).next_power_of_two()
        );
        s
    }
}

/// The latencies of one second of a run, exact (µs), for the timeline's p50 and p99.
///
/// 4 bytes a request, nothing for a second without one. An HdrHistogram per second held
/// ~190 KiB each whatever the rate: an hour's soak at 40 req/s kept 0.7 GiB of them for
/// acks, and as much again for end-to-end latencies at its end.
#[derive(Debug, Clone, Default)]
pub struct SecondLatencies {
    us: Vec<u32>,
}

impl SecondLatencies {
    pub fn record(&mut self, d: Duration) {
        // MAX_US (an hour) fits in a u32 of µs.
        self.us.push((d.as_micros() as u64).clamp(1, MAX_US) as u32);
    }

    /// As [`LatencyHist::record_ms`].
    pub fn record_ms(&mut self, ms: i64) {
        self.record(Duration::from_millis(ms.max(0) as u64));
    }

    pub fn is_empty(&self) -> bool {
        self.us.is_empty()
    }

    /// The latency at `q` (0..=1), ms: the smallest value with at least `q` of the
    /// values at or below it, as HdrHistogram reads a quantile.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        let n = self.us.len();
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n);
        let mut v = self.us.clone();
        let (_, at, _) = v.select_nth_unstable(rank - 1);
        us_to_ms(*at as u64)
    }
}

fn us_to_ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_latencies_read_quantiles_as_the_histogram_does() {
        let (mut exact, mut hist) = (SecondLatencies::default(), LatencyHist::new());
        assert!(exact.is_empty());
        // 1..=200 ms, out of order, and one outlier.
        for ms in (1..=200).rev().chain([5_000]) {
            exact.record_ms(ms);
            hist.record_ms(ms);
        }
        assert!(!exact.is_empty());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            let (e, h) = (exact.quantile_ms(q), hist.quantile_ms(q));
            assert!(
                (e - h).abs() <= h * 0.001,
                "q {q}: exact {e} ms, histogram {h} ms"
            );
        }
        assert_eq!(exact.quantile_ms(0.5), 101.0);
        assert_eq!(exact.quantile_ms(1.0), 5_000.0);
        // Clamped like the histogram: negative to the minimum.
        let mut one = SecondLatencies::default();
        one.record_ms(-3);
        assert_eq!(one.quantile_ms(0.99), 0.001);
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHist::new();
        for ms in 1..=1000 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 %.
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(near(p.p50, 500.0), "{p:?}");
        assert!(near(p.p90, 900.0), "{p:?}");
        assert!(near(p.p99, 990.0), "{p:?}");
        assert!(near(p.p999, 999.0), "{p:?}");
        assert!(near(p.max, 1000.0), "{p:?}");
        assert!(near(p.mean, 500.5), "{p:?}");
    }

    #[test]
    fn empty_and_merged_histograms() {
        let empty = LatencyHist::new();
        assert_eq!(empty.percentiles(), Percentiles::default());
        assert!(empty.curve().is_empty());
        let mut a = LatencyHist::new();
        a.record(Duration::from_micros(250));
        let mut b = LatencyHist::new();
        b.record_ms(-3); // clamped, not an error
        b.record(Duration::from_secs(7200)); // beyond the range: clamped to one hour
        a.add(&b);
        assert_eq!(a.len(), 3);
        // Within the histogram's 0.1 % precision of one hour.
        assert!(
            (a.percentiles().max - 3_600_000.0).abs() <= 3_600.0,
            "{:?}",
            a.percentiles()
        );
    }

    #[test]
    fn hgrm_has_the_percentile_distribution_format() {
        let mut h = LatencyHist::new();
        for us in [100, 200, 300, 400, 10_000] {
            h.record(Duration::from_micros(us));
        }
        let text = h.hgrm();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("1/(1-Percentile)"));
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("Total count    =            5]"));
        // The last data line reaches percentile 1 at the max value.
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last.trim_start().starts_with("10.00"), "{last}");
        assert!(last.contains("1.000000000000"), "{last}");
        let curve = h.curve();
        assert_eq!(curve.last().unwrap()[0], 100.0);
        assert!(curve
            .windows(2)
            .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]));
    }
}
