//! Resource trends over a run, for leak detection: the CPU and RSS samples the load's
//! bench runs took once a second ([`crate::bench::resources`], `resources` in each
//! segment's `report.json`, and each instance's RSS in its
//! [`crate::bench::resources::INSTANCES_FILE`]), put end to end in time order across the
//! segments:
//!
//! - `rss_growth.<service>`: judged per process incarnation (an instance between two
//!   restarts: its pid and start time, or its container's start), never on the
//!   service's sum. The run is split into [`WINDOWS`] equal windows by time; an
//!   incarnation that lived at least half the run (three windows) is judged on windows of
//!   that length laid on its own life: the mean RSS of its last window over that of its
//!   second (its first is warm-up: caches filling, JIT, pools opening), minus 1, in
//!   percent. A process that lived the whole run gets exactly the run's windows. The
//!   service's growth is the worst of its incarnations judged; shorter ones are left out
//!   and named ([`ServiceTrend::not_judged`]). Not measured when no incarnation lived
//!   long enough, or its windows hold fewer than [`MIN_WINDOW_SAMPLES`] samples each (a
//!   run shorter than about [`WINDOWS`] × [`MIN_WINDOW_SAMPLES`] seconds).
//! - `rss_max.<service>`: the highest RSS sampled, bytes, of its instances together.
//! - `cpu_mean.<service>`: the mean of the CPU samples, cores (1.0 = one core busy).
//!
//! Why per incarnation: a service's sum moves with the fault schedule. A consumer killed
//! early and started again late is missing from the sum's second window and back in its
//! last: a "growth" of 140 % from a restart; and a leaking process restarted mid-run
//! can hide behind its successor's small start. The sum's figure is still computed
//! ([`ServiceTrend::rss_growth_summed_pct`], for comparison) and is what runs without the
//! per-instance file (written before it existed) are judged on.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wiber_model::report::Report;

use super::threshold::Metrics;
pub use crate::bench::resources::InstanceSample;

/// Resource metric families: `<family>.<service>`.
pub use super::threshold::RESOURCE_FAMILIES as FAMILIES;
/// Services with resource metrics, in the bench report's order, the generator last.
pub use super::threshold::RESOURCE_SERVICES as SERVICES;
/// The run is split into this many windows by time.
pub const WINDOWS: i64 = 6;
/// Fewest RSS samples the second and the last window each need for a growth.
pub use super::threshold::MIN_WINDOW_SAMPLES;
/// An incarnation is judged when it lived at least this many windows (half the run):
/// then its second window and its last do not overlap.
pub const MIN_LIFE_WINDOWS: i64 = 3;
/// Incarnations left out that a trend names; the rest are counted.
const NAMED_NOT_JUDGED: usize = 10;

/// One service over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTrend {
    pub service: String,
    /// Samples with an RSS.
    pub samples: usize,
    /// Mean RSS (bytes) in the second window and in the last: of the incarnation the
    /// growth is judged on (of the instances' sum in runs without per-instance samples).
    pub rss_second_bytes: Option<f64>,
    pub rss_last_bytes: Option<f64>,
    /// `rss_last / rss_second - 1`, percent; `None` with too few samples, or no
    /// incarnation that lived long enough.
    pub rss_growth_pct: Option<f64>,
    pub rss_max_bytes: Option<u64>,
    pub cpu_mean_cores: Option<f64>,
    /// The incarnation the growth is judged on (the worst), e.g. `consumer#2 (pid 4242:
    /// 178 s)`; `None` in runs judged on the sum.
    #[serde(default)]
    pub judged_on: Option<String>,
    /// Incarnations judged (lived at least half the run).
    #[serde(default)]
    pub judged: usize,
    /// Incarnations too short (or too thinly sampled) to judge, the first
    /// [`NAMED_NOT_JUDGED`] named with why; `not_judged_count` counts them all.
    #[serde(default)]
    pub not_judged: Vec<String>,
    #[serde(default)]
    pub not_judged_count: usize,
    /// The growth of the instances' sum (the measure before incarnations): what a
    /// restart moves. Not a threshold's.
    #[serde(default)]
    pub rss_growth_summed_pct: Option<f64>,
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

/// The per-instance samples of a load segment's run directory, within its report's
/// measured window (as its service figures are); none when the file is absent (a run
/// written before it existed).
pub fn read_instances(dir: &Path, report: &Report) -> Result<Vec<InstanceSample>> {
    let path = dir.join(crate::bench::resources::INSTANCES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let window = report.run.measured_from_ms..=report.run.ended_ms;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: InstanceSample = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an instance sample", path.display(), i + 1))?;
        if window.contains(&s.t_ms) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The trends of the load's reports and the instances' samples (`instances` empty: the
/// growth of each service's sum, as runs were judged before incarnations); `None` when
/// none of the reports sampled resources.
pub fn compute(reports: &[Report], instances: &[InstanceSample]) -> Option<ResourceTrends> {
    let by = samples(reports);
    let from = by.values().filter_map(|v| v.first()).map(|s| s.0).min()?;
    let to = by.values().filter_map(|v| v.last()).map(|s| s.0).max()?;
    let lives = incarnations(instances);
    let mut services: Vec<ServiceTrend> = by
        .iter()
        .map(|(name, v)| {
            let mut t = trend(name, v, from, to);
            if let Some(lives) = lives.get(name.as_str()) {
                judge(&mut t, lives, from, to);
            }
            t
        })
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

/// The second and last window of a series of (time, RSS) living over `[first, last]`,
/// windows of `span / WINDOWS` (the run's): the mean RSS of each and the growth, when
/// each window holds enough samples.
fn windows(
    points: &[(i64, f64)],
    first: i64,
    last: i64,
    span: i64,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    if span <= 0 {
        return (None, None, None);
    }
    // Integer windows as the run's: for a series over the whole run, exactly its sixths.
    let second: Vec<f64> = points
        .iter()
        .filter(|(t, _)| (t - first) * WINDOWS / span == 1)
        .map(|p| p.1)
        .collect();
    let tail: Vec<f64> = points
        .iter()
        .filter(|(t, _)| (last - t) * WINDOWS <= span)
        .map(|p| p.1)
        .collect();
    let enough = second.len().min(tail.len()) >= MIN_WINDOW_SAMPLES;
    let (a, b) = (mean(&second), mean(&tail));
    let growth = match (a, b) {
        (Some(a), Some(b)) if enough && a > 0.0 => Some((b / a - 1.0) * 100.0),
        _ => None,
    };
    (a, b, growth)
}

/// The figures of one service's samples (its instances' sum), windows over `[from, to]`
/// (the run's span).
fn trend(service: &str, v: &[Sample], from: i64, to: i64) -> ServiceTrend {
    let points: Vec<(i64, f64)> = v
        .iter()
        .filter_map(|s| s.2.map(|b| (s.0, b as f64)))
        .collect();
    let (rss_second, rss_last, rss_growth_pct) = windows(&points, from, to, to - from);
    let cores: Vec<f64> = v.iter().filter_map(|s| s.1).collect();
    ServiceTrend {
        service: service.to_string(),
        samples: points.len(),
        rss_second_bytes: rss_second,
        rss_last_bytes: rss_last,
        rss_growth_pct,
        rss_max_bytes: v.iter().filter_map(|s| s.2).max(),
        cpu_mean_cores: mean(&cores),
        judged_on: None,
        judged: 0,
        not_judged: Vec::new(),
        not_judged_count: 0,
        rss_growth_summed_pct: rss_growth_pct,
    }
}

/// One process: an instance between two restarts, its RSS samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    pub instance: String,
    pub incarnation: String,
    pub points: Vec<(i64, f64)>,
}

impl Life {
    fn label(&self) -> String {
        let (first, last) = self.span();
        format!(
            "{} ({}: {:.0} s)",
            self.instance,
            self.incarnation,
            (last - first) as f64 / 1000.0
        )
    }

    fn span(&self) -> (i64, i64) {
        (
            self.points.first().map_or(0, |p| p.0),
            self.points.last().map_or(0, |p| p.0),
        )
    }
}

/// `consumer#2` → `consumer`; the generator is its own service.
fn service_of(instance: &str) -> &str {
    instance.split_once('#').map_or(instance, |(s, _)| s)
}

/// The incarnations of every service, from the instances' samples: a new one wherever an
/// instance's incarnation changes (a restart gives its process a new pid and start time).
pub fn incarnations(samples: &[InstanceSample]) -> BTreeMap<&str, Vec<Life>> {
    let mut by_instance: BTreeMap<&str, Vec<&InstanceSample>> = BTreeMap::new();
    for s in samples {
        by_instance.entry(s.instance.as_str()).or_default().push(s);
    }
    let mut out: BTreeMap<&str, Vec<Life>> = BTreeMap::new();
    for (instance, mut v) in by_instance {
        v.sort_by_key(|s| s.t_ms);
        let lives = out.entry(service_of(instance)).or_default();
        let mut cur: Option<Life> = None;
        for s in v {
            let Some(rss) = s.rss_bytes else { continue };
            match &mut cur {
                Some(l) if l.incarnation == s.incarnation => l.points.push((s.t_ms, rss as f64)),
                _ => {
                    lives.extend(cur.take());
                    cur = Some(Life {
                        instance: instance.to_string(),
                        incarnation: s.incarnation.clone(),
                        points: vec![(s.t_ms, rss as f64)],
                    });
                }
            }
        }
        lives.extend(cur);
    }
    out
}

/// Judges `t`'s growth on its incarnations (see the module doc): the worst of those that
/// lived at least half the run, the others named as not judged.
fn judge(t: &mut ServiceTrend, lives: &[Life], from: i64, to: i64) {
    let span = to - from;
    let mut worst: Option<(f64, &Life, Option<f64>, Option<f64>)> = None;
    let mut not_judged = Vec::new();
    let mut judged = 0;
    for l in lives {
        let (first, last) = l.span();
        let lived = last - first;
        if span <= 0 || lived * WINDOWS < MIN_LIFE_WINDOWS * span {
            not_judged.push(format!(
                "{}: lived {:.0} s, under half the run's {:.0} s",
                l.label(),
                lived as f64 / 1000.0,
                span as f64 / 1000.0
            ));
            continue;
        }
        let (a, b, growth) = windows(&l.points, first, last, span);
        let Some(g) = growth else {
            not_judged.push(format!(
                "{}: fewer than {MIN_WINDOW_SAMPLES} samples in a window",
                l.label()
            ));
            continue;
        };
        judged += 1;
        if worst.as_ref().is_none_or(|w| g > w.0) {
            worst = Some((g, l, a, b));
        }
    }
    t.judged = judged;
    t.not_judged_count = not_judged.len();
    not_judged.truncate(NAMED_NOT_JUDGED);
    t.not_judged = not_judged;
    match worst {
        Some((g, l, a, b)) => {
            t.rss_growth_pct = Some(g);
            t.rss_second_bytes = a;
            t.rss_last_bytes = b;
            t.judged_on = Some(l.label());
        }
        None => {
            t.rss_growth_pct = None;
            t.rss_second_bytes = None;
            t.rss_last_bytes = None;
            t.judged_on = None;
        }
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
        if let Some(t) = compute(reports, &[]) {
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
        assert_eq!(compute(&[r], &[]), None);
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
        let t = compute(&[b, a], &[]).unwrap();
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
        let names: Vec<String> = compute(&[r], &[])
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.service)
            .collect();
        assert_eq!(names, ["kafka", "consumer", "generator"]);
    }

    /// A ten-minute run sampled once a second: the services' sums as a bench report
    /// holds them, and each instance's samples as the per-instance file holds them.
    /// `lives` are (instance, incarnation, first second, last second, RSS at second t).
    type Rss2 = Box<dyn Fn(i64) -> u64>;

    fn run_of(
        seconds: i64,
        lives: &[(&str, &str, i64, i64, Rss2)],
    ) -> (Report, Vec<InstanceSample>) {
        const T0: i64 = 1_000_000;
        let mut r = crate::report::sample_report("soak-ci", T0, seconds as u32);
        r.run.measured_from_ms = T0;
        let mut instances = Vec::new();
        let mut sums: BTreeMap<String, Vec<Option<u64>>> = BTreeMap::new();
        for (instance, inc, from, to, rss) in lives {
            let sum = sums
                .entry(service_of(instance).to_string())
                .or_insert_with(|| vec![None; seconds as usize]);
            for t in *from..=*to {
                let b = rss(t);
                instances.push(InstanceSample {
                    t_ms: T0 + t * 1000,
                    instance: instance.to_string(),
                    incarnation: inc.to_string(),
                    rss_bytes: Some(b),
                });
                let cell = &mut sum[t as usize];
                *cell = Some(cell.unwrap_or(0) + b);
            }
        }
        r.resources = Some(Resources {
            every_s: 1.0,
            source: "local".into(),
            services: sums
                .into_iter()
                .map(|(service, v)| ServiceResources {
                    service,
                    instances: 2,
                    mean_cores: None,
                    peak_cores: None,
                    cpu_share_pct: None,
                    mean_rss_bytes: None,
                    peak_rss_bytes: None,
                    points: v
                        .iter()
                        .enumerate()
                        .filter_map(|(t, b)| {
                            b.map(|b| ResourcePoint {
                                t: t as f64,
                                cores: Some(0.1),
                                rss_bytes: Some(b),
                            })
                        })
                        .collect(),
                })
                .collect(),
            total_mean_cores: 0.1,
            notes: Vec::new(),
        });
        (r, instances)
    }

    /// The old measure, the sum's growth, is kept beside the new one: computable from the
    /// same samples, so the two can be set side by side.
    fn old_and_new(
        r: &Report,
        instances: &[InstanceSample],
        service: &str,
    ) -> (Option<f64>, Option<f64>, ServiceTrend) {
        let summed = compute(std::slice::from_ref(r), &[]).unwrap();
        let judged = compute(std::slice::from_ref(r), instances).unwrap();
        let s = judged
            .services
            .iter()
            .find(|s| s.service == service)
            .unwrap()
            .clone();
        let old = summed
            .services
            .iter()
            .find(|s| s.service == service)
            .unwrap()
            .rss_growth_pct;
        assert_eq!(s.rss_growth_summed_pct, old);
        (old, s.rss_growth_pct, s)
    }

    /// consumer#1 flat at 50 MiB all run; consumer#2 killed at 90 s and started again at
    /// 210 s, small (4 MiB), warming up to its 70 MiB in a minute. The sum is missing
    /// consumer#2 in its second sixth (100-200 s) and has it back in the last: +140 %, a
    /// leak that is a restart. Per incarnation: consumer#1 flat, consumer#2's second life
    /// (390 s) flat once warm, its first (90 s) too short to judge and named.
    #[test]
    fn a_consumer_restarted_small_fails_the_old_measure_and_passes_the_new() {
        let (r, inst) = run_of(
            600,
            &[
                ("consumer#1", "100:1", 0, 599, Box::new(|_| 50 * MIB)),
                ("consumer#2", "200:1", 0, 90, Box::new(|_| 70 * MIB)),
                (
                    "consumer#2",
                    "300:9",
                    210,
                    599,
                    Box::new(|t| (4 * MIB + (t as u64 - 210) * 66 * MIB / 60).min(70 * MIB)),
                ),
            ],
        );
        let (old, new, s) = old_and_new(&r, &inst, "consumer");
        let old = old.unwrap();
        assert!((old - 140.0).abs() < 1e-9, "{old}");
        assert_eq!(new, Some(0.0));
        assert_eq!(s.judged, 2);
        assert_eq!(s.not_judged_count, 1);
        assert_eq!(
            s.not_judged,
            ["consumer#2 (200:1: 90 s): lived 90 s, under half the run's 599 s"]
        );
        assert_eq!(s.judged_on.as_deref(), Some("consumer#1 (100:1: 599 s)"));
        // soak-ci's bound, on the metrics thresholds read.
        let mut m = Metrics::new();
        compute(std::slice::from_ref(&r), &[])
            .unwrap()
            .insert_metrics(&mut m);
        assert_eq!(
            check(&m, "rss_growth.consumer", "< 100%").verdict,
            Verdict::Fail
        );
        let mut m = Metrics::new();
        compute(std::slice::from_ref(&r), &inst)
            .unwrap()
            .insert_metrics(&mut m);
        assert_eq!(
            check(&m, "rss_growth.consumer", "< 100%").verdict,
            Verdict::Pass
        );
    }

    /// A planted leak: consumer#1 keeps every record (+0.2 MiB a second, one process all
    /// run), while consumer#2 is restarted as above. The new measure judges the leaking
    /// process on its own and fails it (+100 %); the restart neither adds nor hides.
    #[test]
    fn a_planted_leak_in_one_incarnation_still_fails_the_new_measure() {
        let (r, inst) = run_of(
            600,
            &[
                (
                    "consumer#1",
                    "100:1",
                    0,
                    599,
                    Box::new(|t| 50 * MIB + t as u64 * MIB / 5),
                ),
                ("consumer#2", "200:1", 0, 90, Box::new(|_| 70 * MIB)),
                ("consumer#2", "300:9", 210, 599, Box::new(|_| 70 * MIB)),
            ],
        );
        let (_, new, s) = old_and_new(&r, &inst, "consumer");
        // Second sixth 100-199 s: mean 50 + 29.9 MiB; last 500-599 s: 50 + 109.9 MiB.
        let new = new.unwrap();
        assert!((new - (159.9 / 79.9 - 1.0) * 100.0).abs() < 1e-6, "{new}");
        assert_eq!(s.judged_on.as_deref(), Some("consumer#1 (100:1: 599 s)"));
        let mut m = Metrics::new();
        compute(std::slice::from_ref(&r), &inst)
            .unwrap()
            .insert_metrics(&mut m);
        assert_eq!(
            check(&m, "rss_growth.consumer", "< 20%").verdict,
            Verdict::Fail
        );
        // A leak in the restarted process's second life is caught as well.
        let (r, inst) = run_of(
            600,
            &[
                ("consumer#1", "100:1", 0, 599, Box::new(|_| 50 * MIB)),
                ("consumer#2", "200:1", 0, 90, Box::new(|_| 70 * MIB)),
                (
                    "consumer#2",
                    "300:9",
                    210,
                    599,
                    Box::new(|t| 20 * MIB + (t as u64 - 210) * MIB / 5),
                ),
            ],
        );
        let (_, new, s) = old_and_new(&r, &inst, "consumer");
        assert!(new.unwrap() > 50.0, "{new:?}");
        assert_eq!(s.judged_on.as_deref(), Some("consumer#2 (300:9: 389 s)"));
    }

    /// Every process restarted too often to judge: not measured (a threshold on it
    /// fails as such), with the lives named.
    #[test]
    fn no_incarnation_long_enough_is_not_measured() {
        let lives: Vec<(&str, &str, i64, i64, Rss2)> = (0..4)
            .map(|i| {
                let inc: &str = ["a", "b", "c", "d"][i as usize];
                (
                    "api#1",
                    inc,
                    i * 150,
                    i * 150 + 140,
                    Box::new(|_| 30 * MIB) as Rss2,
                )
            })
            .collect();
        let (r, inst) = run_of(600, &lives);
        let (old, new, s) = old_and_new(&r, &inst, "api");
        assert!(old.is_some());
        assert_eq!(new, None);
        assert_eq!((s.judged, s.not_judged_count), (0, 4));
        let mut m = Metrics::new();
        compute(std::slice::from_ref(&r), &inst)
            .unwrap()
            .insert_metrics(&mut m);
        let e = check(&m, "rss_growth.api", "< 20%");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.unwrap().contains("not measured"));
    }

    /// The bench's per-instance file, as its sampler writes it, is read back within the
    /// report's measured window; a run without the file has none (judged on the sum).
    #[test]
    fn instance_samples_are_read_within_the_measured_window() {
        let dir = std::env::temp_dir().join(format!("wiber-instances-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = crate::report::sample_report("x", 1_000_000, 10);
        assert!(read_instances(&dir, &r).unwrap().is_empty());
        let line = |t_ms: i64| {
            serde_json::to_string(&InstanceSample {
                t_ms,
                instance: "consumer#1".into(),
                incarnation: "42:7".into(),
                rss_bytes: Some(MIB),
            })
            .unwrap()
        };
        let (from, to) = (r.run.measured_from_ms, r.run.ended_ms);
        let text = [from - 1000, from, to, to + 1000].map(line).join("\n");
        let path = dir.join(crate::bench::resources::INSTANCES_FILE);
        std::fs::write(&path, text + "\n").unwrap();
        let got = read_instances(&dir, &r).unwrap();
        assert_eq!(got.iter().map(|s| s.t_ms).collect::<Vec<_>>(), [from, to]);
        std::fs::write(&path, "{\"t_ms\": 1}\n").unwrap();
        let e = format!("{:#}", read_instances(&dir, &r).unwrap_err());
        assert!(
            e.contains("resources-instances.jsonl:1: not an instance sample"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
