//! Where the cores went: CPU and resident memory of every service of the stack, and of
//! the generator itself, sampled once a second while the load runs, through the
//! runtime's [`Stack::usage`] (local: `/proc`; Docker: the engine's stats API).
//!
//! The generator is measured too because a saturated generator looks like a slow stack:
//! with it in the same table, "the api used 0.3 cores and wiberctl 0.9" says where the
//! limit was.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wiber_model::contract::Service;
use wiber_model::report::{ResourcePoint, Resources, ServiceResources, GENERATOR};

use crate::runtime::usage::{self, Usage};
use crate::runtime::{InstanceId, Locator, Stack};

/// Bound on samples (2 hours at 1 Hz); the sampler is stopped explicitly anyway.
const MAX_SAMPLES: usize = 7200;

/// One service (or the generator) at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    /// Cores used since the previous sample (none at the first, or after a restart).
    pub cores: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub instances: u32,
}

/// One sample of everything, `at_ms` since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at_ms: i64,
    /// Keyed by service name (`kafka`, ..., then [`GENERATOR`]).
    pub cells: BTreeMap<String, Cell>,
}

/// Where a bench run keeps each instance's RSS samples, a line per instance per sample
/// ([`InstanceSample`]): a service's sum cannot tell a leak from a restart (a consumer
/// killed and started again small), so a scenario judges growth per process incarnation
/// from these (`scenario::resource_trend`). Written as the samples are taken, so an
/// hour's run holds none of them in memory.
pub const INSTANCES_FILE: &str = "resources-instances.jsonl";

/// One instance's resident memory at one sample, and which process it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSample {
    /// Milliseconds since the epoch.
    pub t_ms: i64,
    /// `consumer#2`, or [`GENERATOR`] (wiberctl itself).
    pub instance: String,
    /// Which process (local: `pid:start_ticks`; docker: `container@start time`): it
    /// changes when the instance is restarted.
    pub incarnation: String,
    pub rss_bytes: Option<u64>,
}

/// A running sampler; [`Sampler::finish`] stops it and sums up.
pub struct Sampler {
    source: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<(Vec<Tick>, Vec<String>)>,
}

/// Starts sampling the stack of `loc` (and this process) every `every`; each instance's
/// RSS also goes to `instances_file` ([`INSTANCES_FILE`]) when given. When the stack
/// cannot be found, only the generator is sampled and the figures say why.
pub async fn start(loc: &Locator, every: Duration, instances_file: Option<PathBuf>) -> Sampler {
    // Without a stack (bench against something wiberctl does not run) the generator is
    // still measured: a saturated generator is what a benchmark most needs to know.
    let (stack, source, note) = match Stack::open(loc).await {
        Ok(s) => {
            let source = s.kind().name().to_string();
            (Some(s), source, None)
        }
        Err(e) => (
            None,
            "generator only".to_string(),
            Some(format!("the stack's CPU/RSS was not sampled: {e:#}")),
        ),
    };
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(sample(stack, every, rx, note, instances_file));
    Sampler { source, stop, task }
}

impl Sampler {
    /// Stops sampling and sums up the samples within `[from_ms, to_ms]`.
    pub async fn finish(self, every: Duration, from_ms: i64, to_ms: i64) -> Resources {
        let _ = self.stop.send(true);
        let (ticks, mut notes) = match self.task.await {
            Ok(r) => r,
            Err(e) => (
                Vec::new(),
                vec![format!("the resource sampler failed: {e}")],
            ),
        };
        let ticks: Vec<Tick> = ticks
            .into_iter()
            .filter(|t| (from_ms..=to_ms).contains(&t.at_ms))
            .collect();
        if ticks.is_empty() {
            notes.push("no CPU/RSS sample fell in the measured window".into());
        }
        summarize(&ticks, &self.source, every, from_ms, notes)
    }
}

/// Appends [`InstanceSample`] lines to a file; gives up (with a note) at the first
/// error, the service figures do not depend on it.
struct InstanceLog {
    out: Option<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
}

impl InstanceLog {
    fn open(path: Option<PathBuf>, notes: &mut Vec<String>) -> InstanceLog {
        let Some(path) = path else {
            return InstanceLog {
                out: None,
                path: PathBuf::new(),
            };
        };
        let out = match std::fs::File::create(&path) {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                notes.push(format!("cannot write {}: {e}", path.display()));
                None
            }
        };
        InstanceLog { out, path }
    }

    fn write(&mut self, samples: &[InstanceSample], notes: &mut Vec<String>) {
        let Some(out) = &mut self.out else { return };
        let mut written = || -> std::io::Result<()> {
            for s in samples {
                serde_json::to_writer(&mut *out, s)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        };
        if let Err(e) = written() {
            notes.push(format!("stopped writing {}: {e}", self.path.display()));
            self.out = None;
        }
    }
}

async fn sample(
    stack: Option<Stack>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    note: Option<String>,
    instances_file: Option<PathBuf>,
) -> (Vec<Tick>, Vec<String>) {
    let mut ticks = Vec::new();
    let mut notes: Vec<String> = note.into_iter().collect();
    let mut log = InstanceLog::open(instances_file, &mut notes);
    let own = format!("wiberctl:{}", std::process::id());
    let mut per_instance: Vec<InstanceSample> = Vec::new();
    let mut prev: HashMap<InstanceId, Usage> = HashMap::new();
    let mut prev_own: Option<(u64, Instant)> = None;
    for _ in 0..MAX_SAMPLES {
        let at_ms = wiber_model::now_ms();
        let mut cells: BTreeMap<String, Cell> = BTreeMap::new();
        let usage = match &stack {
            Some(stack) => Some(stack.usage().await),
            None => None,
        };
        match usage {
            None => {}
            Some(Ok(all)) => {
                let cur: HashMap<InstanceId, Usage> = all.into_iter().map(|u| (u.id, u)).collect();
                per_instance.extend(cur.values().map(|u| InstanceSample {
                    t_ms: at_ms,
                    instance: u.id.to_string(),
                    incarnation: u.incarnation.clone(),
                    rss_bytes: u.rss_bytes,
                }));
                for (id, u) in &cur {
                    let cell = cells.entry(service_key(id.service)).or_default();
                    cell.instances += 1;
                    let pct = prev.get(id).and_then(|p| usage::cpu_percent(p, u));
                    // A service's cores are its instances' together; one instance not
                    // comparable this time (just restarted) leaves the sum unknown.
                    cell.cores = match (cell.instances, cell.cores, pct) {
                        (1, _, Some(p)) => Some(p / 100.0),
                        (_, Some(c), Some(p)) => Some(c + p / 100.0),
                        _ => None,
                    };
                    cell.rss_bytes = match (cell.instances, cell.rss_bytes, u.rss_bytes) {
                        (1, _, r) => r,
                        (_, Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    };
                }
                prev = cur;
            }
            Some(Err(e)) => {
                let note = format!("CPU/RSS of the stack not sampled: {e:#}");
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
        if let Some((cpu_ns, rss)) = usage::own_process() {
            let now = Instant::now();
            let cores = prev_own.and_then(|(p, at)| {
                let wall = now.duration_since(at).as_nanos();
                (wall > 0).then(|| cpu_ns.saturating_sub(p) as f64 / wall as f64)
            });
            prev_own = Some((cpu_ns, now));
            per_instance.push(InstanceSample {
                t_ms: at_ms,
                instance: GENERATOR.into(),
                incarnation: own.clone(),
                rss_bytes: rss,
            });
            cells.insert(
                GENERATOR.into(),
                Cell {
                    cores,
                    rss_bytes: rss,
                    instances: 1,
                },
            );
        }
        log.write(&per_instance, &mut notes);
        per_instance.clear();
        ticks.push(Tick { at_ms, cells });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    (ticks, notes)
}

/// Sort key that keeps the stack's services in their contract order, generator last.
fn service_key(s: Service) -> String {
    s.name().to_string()
}

fn order(name: &str) -> usize {
    [
        Service::Kafka.name(),
        Service::Postgres.name(),
        Service::Mongo.name(),
        Service::Api.name(),
        Service::Consumer.name(),
        GENERATOR,
    ]
    .iter()
    .position(|n| *n == name)
    .unwrap_or(usize::MAX)
}

/// The figures of the samples: per service its mean and peak cores, its share of all
/// the cores used, mean and peak RSS, and the points for the charts.
pub fn summarize(
    ticks: &[Tick],
    source: &str,
    every: Duration,
    from_ms: i64,
    notes: Vec<String>,
) -> Resources {
    let mut names: Vec<&String> = ticks
        .iter()
        .flat_map(|t| t.cells.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by_key(|n| (order(n), n.to_string()));
    let mut services: Vec<ServiceResources> = names
        .into_iter()
        .map(|name| {
            let cells: Vec<(i64, Cell)> = ticks
                .iter()
                .filter_map(|t| t.cells.get(name).map(|c| (t.at_ms, *c)))
                .collect();
            let cores: Vec<f64> = cells.iter().filter_map(|(_, c)| c.cores).collect();
            let rss: Vec<u64> = cells.iter().filter_map(|(_, c)| c.rss_bytes).collect();
            ServiceResources {
                service: name.clone(),
                instances: cells.iter().map(|(_, c)| c.instances).max().unwrap_or(0),
                mean_cores: (!cores.is_empty())
                    .then(|| cores.iter().sum::<f64>() / cores.len() as f64),
                peak_cores: cores.iter().copied().reduce(f64::max),
                cpu_share_pct: None,
                mean_rss_bytes: (!rss.is_empty())
                    .then(|| rss.iter().sum::<u64>() / rss.len() as u64),
                peak_rss_bytes: rss.iter().copied().max(),
                points: cells
                    .iter()
                    .map(|(at, c)| ResourcePoint {
                        t: (at - from_ms) as f64 / 1000.0,
                        cores: c.cores,
                        rss_bytes: c.rss_bytes,
                    })
                    .collect(),
            }
        })
        .collect();
    let total: f64 = services.iter().filter_map(|s| s.mean_cores).sum();
    for s in &mut services {
        s.cpu_share_pct = s
            .mean_cores
            .filter(|_| total > 0.0)
            .map(|c| c * 100.0 / total);
    }
    Resources {
        every_s: every.as_secs_f64(),
        source: source.into(),
        services,
        total_mean_cores: total,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(at_ms: i64, cells: &[(&str, Option<f64>, Option<u64>, u32)]) -> Tick {
        Tick {
            at_ms,
            cells: cells
                .iter()
                .map(|(n, c, r, i)| {
                    (
                        n.to_string(),
                        Cell {
                            cores: *c,
                            rss_bytes: *r,
                            instances: *i,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn means_peaks_and_shares_per_service_in_contract_order() {
        let ticks = [
            // First sample: no CPU yet (a rate needs two).
            tick(
                1_000,
                &[
                    ("generator", None, Some(10), 1),
                    ("consumer", None, Some(100), 2),
                    ("kafka", None, Some(1000), 1),
                ],
            ),
            tick(
                2_000,
                &[
                    ("generator", Some(0.5), Some(10), 1),
                    ("consumer", Some(0.2), Some(300), 2),
                    ("kafka", Some(1.0), Some(1000), 1),
                ],
            ),
            tick(
                3_000,
                &[
                    ("generator", Some(0.5), Some(10), 1),
                    ("consumer", Some(0.4), Some(200), 3),
                    ("kafka", Some(0.6), Some(1000), 1),
                ],
            ),
        ];
        let r = summarize(&ticks, "local", Duration::from_secs(1), 1_000, Vec::new());
        let names: Vec<&str> = r.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["kafka", "consumer", "generator"]);
        let kafka = &r.services[0];
        assert!((kafka.mean_cores.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(kafka.peak_cores, Some(1.0));
        let consumer = &r.services[1];
        assert_eq!(consumer.instances, 3);
        assert_eq!(consumer.peak_rss_bytes, Some(300));
        assert_eq!(consumer.mean_rss_bytes, Some(200));
        // 0.8 + 0.3 + 0.5 = 1.6 cores in all; kafka's half of it.
        assert!((r.total_mean_cores - 1.6).abs() < 1e-9);
        assert!((kafka.cpu_share_pct.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(kafka.points[1].t, 1.0);
        assert_eq!(kafka.points[0].cores, None);
    }

    #[test]
    fn nothing_sampled_is_an_empty_table_not_zeros() {
        let r = summarize(&[], "docker", Duration::from_secs(1), 0, vec!["why".into()]);
        assert!(r.services.is_empty());
        assert_eq!(r.total_mean_cores, 0.0);
        assert_eq!(r.notes, ["why"]);
    }

    #[test]
    fn the_generator_measures_itself() {
        // Burn some CPU between two readings of our own counters.
        let (a, rss) = usage::own_process().expect("/proc/self is readable");
        assert!(rss.is_some_and(|r| r > 0));
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (b, _) = usage::own_process().unwrap();
        assert!(b > a, "CPU time grows while we compute ({x})");
    }

    /// Each instance's samples go to the file as they are taken, a JSON line each.
    #[test]
    fn instance_samples_are_written_a_line_each() {
        let path =
            std::env::temp_dir().join(format!("wiber-{}-{INSTANCES_FILE}", uuid::Uuid::new_v4()));
        let mut notes = Vec::new();
        let mut log = InstanceLog::open(Some(path.clone()), &mut notes);
        let s = |t_ms, incarnation: &str| InstanceSample {
            t_ms,
            instance: "consumer#2".into(),
            incarnation: incarnation.into(),
            rss_bytes: Some(7),
        };
        log.write(&[s(1, "10:1"), s(2, "10:1")], &mut notes);
        log.write(&[s(3, "11:9")], &mut notes);
        drop(log);
        assert!(notes.is_empty(), "{notes:?}");
        let back: Vec<InstanceSample> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, [s(1, "10:1"), s(2, "10:1"), s(3, "11:9")]);
        std::fs::remove_file(&path).unwrap();
        // No file asked for: nothing written, nothing said.
        let mut log = InstanceLog::open(None, &mut notes);
        log.write(&[s(4, "x")], &mut notes);
        assert!(notes.is_empty());
    }
}
