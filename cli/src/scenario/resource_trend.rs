//! Resource trends over a run, for leak detection: the CPU and RSS samples the load's
//! bench runs took once a second ([`crate::bench::resources`], `resources` in each
//! segment's `report.json`), put end to end in time order across the segments, and per
//! service (its instances summed, and the generator, wiberctl itself):
//!
//! - `rss_growth.<service>`: the run's samples split into [`WINDOWS`] equal windows by
//!   time; the mean RSS of the last window over that of the second, minus 1, in
//!   percent. On a 1-hour run: the last ten minutes against the second ten (the first
//!   holds the warm-up: caches filling, JIT, pools opening). Not measured when either
//!   window has fewer than [`MIN_WINDOW_SAMPLES`] RSS samples (a run shorter than about
//!   [`WINDOWS`] × [`MIN_WINDOW_SAMPLES`] seconds).
//! - `rss_max.<service>`: the highest RSS sampled, bytes.
//! - `cpu_mean.<service>`: the mean of the CPU samples, cores (1.0 = one core busy).
//!
//! A service's RSS is its instances' together: killing a consumer for a minute lowers
//! it, scaling up raises it. The windows' means smooth a fault or two over; a scenario
//! that scales a service for good should not bound that service's growth.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wiber_model::report::Report;

use super::threshold::Metrics;

/// Resource metric families: `<family>.<service>`.
pub use super::threshold::RESOURCE_FAMILIES as FAMILIES;
/// Services with resource metrics, in the bench report's order, the generator last.
pub use super::threshold::RESOURCE_SERVICES as SERVICES;
/// The run is split into this many windows by time.
pub const WINDOWS: i64 = 6;
/// Fewest RSS samples the second and the last window each need for a growth.
pub use super::threshold::MIN_WINDOW_SAMPLES;

/// One service over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTrend {
    pub service: String,
    /// Samples with an RSS.
    pub samples: usize,
    /// Mean RSS (bytes) in the second window and in the last.
    pub rss_second_bytes: Option<f64>,
    pub rss_last_bytes: Option<f64>,
    /// `rss_last / rss_second - 1`, percent; `None` with too few samples.
    pub rss_growth_pct: Option<f64>,
    pub rss_max_bytes: Option<u64>,
    pub cpu_mean_cores: Option<f64>,
}

/// Every service's trend (`scenario.json`'s `resources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceTrends {
    /// The first and last sample of the run, ms since the epoch.
    pub from_ms: i64,
    pub to_ms: i64,
    pub services: Vec<ServiceTrend>,
}

/// One sample of one service on the epoch clock: time (ms), cores, RSS bytes.
pub type Sample = (i64, Option<f64>, Option<u64>);

/// Every service's samples across the segments, in time order.
pub fn samples(reports: &[Report]) -> BTreeMap<String, Vec<Sample>> {
    let mut by: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for r in reports {
        let Some(res) = &r.resources else { continue };
        for s in &res.services {
            by.entry(s.service.clone())
                .or_default()
                .extend(s.points.iter().map(|p| {
                    (
                        r.run.measured_from_ms + (p.t * 1000.0).round() as i64,
                        p.cores,
                        p.rss_bytes,
                    )
                }));
        }
    }
    for v in by.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    by
}

/// The trends of the load's reports; `None` when none of them sampled resources.
pub fn compute(reports: &[Report]) -> Option<ResourceTrends> {
    let by = samples(reports);
    let from = by.values().filter_map(|v| v.first()).map(|s| s.0).min()?;
    let to = by.values().filter_map(|v| v.last()).map(|s| s.0).max()?;
    let mut services: Vec<ServiceTrend> = by
        .iter()
        .map(|(name, v)| trend(name, v, from, to))
        .collect();
    services.sort_by_key(|s| {
        (
            SERVICES
                .iter()
                .position(|n| *n == s.service)
                .unwrap_or(usize::MAX),
            s.service.clone(),
        )
    });
    Some(ResourceTrends {
        from_ms: from,
        to_ms: to,
        services,
    })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The figures of one service's samples, windows over `[from, to]` (the run's span).
fn trend(service: &str, v: &[Sample], from: i64, to: i64) -> ServiceTrend {
    let span = to - from;
    let window = |t: i64| {
        if span <= 0 {
            0
        } else {
            ((t - from) * WINDOWS / span).clamp(0, WINDOWS - 1)
        }
    };
    let rss_in = |w: i64| -> Vec<f64> {
        v.iter()
            .filter(|s| window(s.0) == w)
            .filter_map(|s| s.2.map(|b| b as f64))
            .collect()
    };
    let (second, last) = (rss_in(1), rss_in(WINDOWS - 1));
    let enough = span > 0 && second.len().min(last.len()) >= MIN_WINDOW_SAMPLES;
    let (rss_second, rss_last) = (mean(&second), mean(&last));
    let rss_growth_pct = match (rss_second, rss_last) {
        (Some(a), Some(b)) if enough && a > 0.0 => Some((b / a - 1.0) * 100.0),
        _ => None,
    };
    let cores: Vec<f64> = v.iter().filter_map(|s| s.1).collect();
    ServiceTrend {
        service: service.to_string(),
        samples: v.iter().filter(|s| s.2.is_some()).count(),
        rss_second_bytes: rss_second,
        rss_last_bytes: rss_last,
        rss_growth_pct,
        rss_max_bytes: v.iter().filter_map(|s| s.2).max(),
        cpu_mean_cores: mean(&cores),
    }
}

impl ResourceTrends {
    /// Adds `rss_growth.<service>` (percent), `rss_max.<service>` (bytes) and
    /// `cpu_mean.<service>` (cores) for every figure measured.
    pub fn insert_metrics(&self, m: &mut Metrics) {
        for s in &self.services {
            let figures = [
                ("rss_growth", s.rss_growth_pct),
                ("rss_max", s.rss_max_bytes.map(|b| b as f64)),
                ("cpu_mean", s.cpu_mean_cores),
            ];
            for (family, v) in figures {
                if let Some(v) = v {
                    m.insert(format!("{family}.{}", s.service), v);
                }
            }
        }
    }

    /// The length of one window, ms.
    pub fn window_ms(&self) -> i64 {
        (self.to_ms - self.from_ms) / WINDOWS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::threshold::{evaluate, parse, Verdict};
    use wiber_model::report::{ResourcePoint, Resources, ServiceResources};

    const MIB: u64 = 1 << 20;

    /// A bench report from `from_ms` with one point per second per service, the RSS of
    /// second `t` given by `rss(t)`.
    /// The RSS of a service at second `t`.
    type Rss = fn(u32) -> u64;

    fn report(from_ms: i64, seconds: u32, services: &[(&str, Rss)]) -> Report {
        let mut r = crate::report::sample_report("soak", from_ms, seconds);
        r.run.measured_from_ms = from_ms;
        r.resources = Some(Resources {
            every_s: 1.0,
            source: "local".into(),
            services: services
                .iter()
                .map(|(name, rss)| ServiceResources {
                    service: name.to_string(),
                    instances: 1,
                    mean_cores: None,
                    peak_cores: None,
                    cpu_share_pct: None,
                    mean_rss_bytes: None,
                    peak_rss_bytes: None,
                    points: (0..seconds)
                        .map(|t| ResourcePoint {
                            t: t as f64,
                            cores: (t > 0).then_some(0.5),
                            rss_bytes: Some(rss(t)),
                        })
                        .collect(),
                })
                .collect(),
            total_mean_cores: 0.5,
            notes: Vec::new(),
        });
        r
    }

    fn metrics(reports: &[Report]) -> Metrics {
        let mut m = Metrics::new();
        if let Some(t) = compute(reports) {
            t.insert_metrics(&mut m);
        }
        m
    }

    fn check(m: &Metrics, metric: &str, text: &str) -> crate::scenario::threshold::Evaluation {
        evaluate(&parse(metric, text, 1).unwrap(), m, 100.0, None)
    }

    #[test]
    fn a_flat_series_passes_and_a_growing_one_fails() {
        // An hour at 1 Hz: the api flat at 100 MiB, the consumer leaking 1 MiB a minute
        // from 100 MiB (second window's mean ~115 MiB, last ~155 MiB: +35 %).
        let flat: Rss = |_| 100 * MIB;
        let leak: Rss = |t| 100 * MIB + t as u64 * MIB / 60;
        let r = report(1_000_000, 3_600, &[("api", flat), ("consumer", leak)]);
        let m = metrics(&[r]);
        assert_eq!(m["rss_growth.api"], 0.0);
        let growth = m["rss_growth.consumer"];
        assert!((34.0..36.0).contains(&growth), "{growth}");
        let e = check(&m, "rss_growth.api", "< 20%");
        assert_eq!(e.verdict, Verdict::Pass, "{e:?}");
        let e = check(&m, "rss_growth.consumer", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
        let detail = e.detail.unwrap();
        assert!(
            detail.contains("rss_growth.consumer = 3") && detail.contains("< 20%"),
            "{detail}"
        );
        // The peak and the CPU.
        assert_eq!(m["rss_max.consumer"], (100 * MIB + 3_599 * MIB / 60) as f64);
        assert_eq!(check(&m, "rss_max.api", "<= 100MiB").verdict, Verdict::Pass);
        assert_eq!(
            check(&m, "rss_max.consumer", "< 150MiB").verdict,
            Verdict::Fail
        );
        assert_eq!(m["cpu_mean.api"], 0.5);
        assert_eq!(check(&m, "cpu_mean.api", "< 0.4").verdict, Verdict::Fail);
    }

    #[test]
    fn too_few_samples_is_not_measured() {
        // 20 s: 3 samples a window, fewer than the 5 a growth needs.
        let flat: Rss = |_| 100 * MIB;
        let m = metrics(&[report(1_000_000, 20, &[("api", flat)])]);
        assert!(!m.contains_key("rss_growth.api"));
        assert!(m.contains_key("rss_max.api"));
        let e = check(&m, "rss_growth.api", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("not measured"));
        // 36 s: 6 a window, enough.
        let m = metrics(&[report(1_000_000, 36, &[("api", flat)])]);
        assert_eq!(m["rss_growth.api"], 0.0);
        // No resources at all (a stack that could not be sampled): nothing.
        let mut r = report(1_000_000, 60, &[]);
        r.resources = None;
        assert_eq!(compute(&[r]), None);
        // A service the run never sampled (postgres on the mongo image) is not measured.
        let e = check(&m, "rss_growth.postgres", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
    }

    #[test]
    fn segments_are_put_end_to_end_in_time_order() {
        // Two 30-min segments (given out of order), flat in the first, the second one
        // 50 % higher: the last window against the second is +50 %.
        let low: Rss = |_| 100 * MIB;
        let high: Rss = |_| 150 * MIB;
        let a = report(1_000_000, 1_800, &[("generator", low)]);
        let b = report(1_000_000 + 1_800_000, 1_800, &[("generator", high)]);
        let t = compute(&[b, a]).unwrap();
        assert_eq!(t.from_ms, 1_000_000);
        assert_eq!(t.to_ms, 1_000_000 + 3_599_000);
        assert_eq!(t.window_ms(), 599_833);
        let g = &t.services[0];
        assert_eq!(g.service, "generator");
        assert_eq!(g.samples, 3_600);
        assert_eq!(g.rss_second_bytes, Some((100 * MIB) as f64));
        assert_eq!(g.rss_last_bytes, Some((150 * MIB) as f64));
        assert!((g.rss_growth_pct.unwrap() - 50.0).abs() < 1e-9);
        // Services in the report's order, the generator last.
        let flat: Rss = |_| MIB;
        let r = report(
            0,
            60,
            &[("generator", flat), ("consumer", flat), ("kafka", flat)],
        );
        let names: Vec<String> = compute(&[r])
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.service)
            .collect();
        assert_eq!(names, ["kafka", "consumer", "generator"]);
    }
}
