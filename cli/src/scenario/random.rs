//! `[random]`: a fault schedule drawn from a weighted menu, reproducibly from a seed.
//!
//! The file's menu ([`RandomSpec`], read and checked by [`super::format`]) becomes
//! ordinary [`FaultSpec`]s, appended to the scenario's `[[faults]]` by [`expand`]: the
//! timeline, rollbacks, records, recovery figures and reports treat them like any other.
//!
//! The draw walks time from `start`: at each candidate start it picks, by weight, among
//! the entries that have a target free now (at most `max_concurrent` random faults active,
//! at most `max_down` per service — a Kafka role counts as `kafka` —, never one target
//! twice at once), then a target among those free, then a duration in `for`; the next
//! candidate is an `interval` later (also when nothing was free). Only random faults count
//! against these limits: `[[faults]]` entries are the file author's to place.
//!
//! The generator is xoshiro256** seeded by splitmix64, written out here rather than taken
//! from a crate, so that a seed means the same schedule whatever the versions of Rust and
//! of the dependencies ([`tests::the_generator_is_pinned`] holds it to its first outputs).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::format::{FaultSpec, RandomSpec, Scenario, MAX_RANDOM_FAULTS};
use crate::runtime::Target;

/// One step of splitmix64 (Steele, Lea, Flood): seeds xoshiro's state.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman, Vigna), its state filled by splitmix64 from the seed.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has nothing to draw");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `[lo, hi]`, to the millisecond (`lo` itself when the range is one value).
    pub fn duration(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span_ms = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span_ms + 1))
    }
}

/// Where a run's seed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedFrom {
    /// `scenario run --seed N`.
    Flag,
    /// `seed = N` in `[random]`.
    File,
    /// Neither: drawn from the clock and the process id.
    Drawn,
}

impl SeedFrom {
    pub fn name(self) -> &'static str {
        match self {
            SeedFrom::Flag => "--seed",
            SeedFrom::File => "from the file",
            SeedFrom::Drawn => "drawn",
        }
    }
}

/// What `[random]` drew for a run, for `scenario.json` (the seed is the run's `seed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomSummary {
    pub seed_from: SeedFrom,
    /// How many faults were drawn.
    pub faults: usize,
    /// How many of each action (`kill`, `pause`, ...).
    pub by_action: BTreeMap<String, usize>,
}

impl RandomSummary {
    pub fn of(drawn: &[FaultSpec], seed_from: SeedFrom) -> RandomSummary {
        let mut by_action = BTreeMap::new();
        for f in drawn {
            *by_action.entry(f.action.name().to_string()).or_insert(0) += 1;
        }
        RandomSummary {
            seed_from,
            faults: drawn.len(),
            by_action,
        }
    }

    /// `23 drawn (kill 12, pause 11)`.
    pub fn counts(&self) -> String {
        let each: Vec<String> = self
            .by_action
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        if each.is_empty() {
            format!("{} drawn", self.faults)
        } else {
            format!("{} drawn ({})", self.faults, each.join(", "))
        }
    }
}

/// A seed when neither `--seed` nor the file gives one: the clock's nanoseconds and the
/// process id, mixed. Below 10^12, so it is short to read out, type, and write in a file
/// (TOML integers are signed 64-bit).
pub fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix64(&mut x) % 1_000_000_000_000
}

/// The seed of a run: `--seed`, else the file's, else a fresh one.
pub fn seed_for(flag: Option<u64>, spec: &RandomSpec) -> (u64, SeedFrom) {
    match (flag, spec.seed) {
        (Some(s), _) => (s, SeedFrom::Flag),
        (None, Some(s)) => (s, SeedFrom::File),
        (None, None) => (fresh_seed(), SeedFrom::Drawn),
    }
}

/// Draws `[random]`'s faults (if the scenario has it) with the seed of [`seed_for`] and
/// appends them to `sc.faults`. Call it once per run. Returns the seed and what was drawn.
pub fn expand(sc: &mut Scenario, flag: Option<u64>) -> Option<(u64, RandomSummary)> {
    let spec = sc.random.as_ref()?;
    let (seed, from) = seed_for(flag, spec);
    let drawn = draw(spec, seed);
    let summary = RandomSummary::of(&drawn, from);
    sc.faults.extend(drawn);
    Some((seed, summary))
}

/// `random faults: 23 drawn (kill 12, pause 11), seed 7 (drawn); replay: wiberctl
/// scenario run scenarios/soak.toml --seed 7`: the line of the terminal's header.
pub fn describe(file: &str, seed: u64, s: &RandomSummary) -> String {
    line(file, seed, s, "")
}

/// The same line for `summary.md`, the command in backticks.
pub fn describe_markdown(file: &str, seed: u64, s: &RandomSummary) -> String {
    line(file, seed, s, "`")
}

fn line(file: &str, seed: u64, s: &RandomSummary, code: &str) -> String {
    format!(
        "random faults: {}, seed {seed} ({}); replay: {code}{}{code}",
        s.counts(),
        s.seed_from.name(),
        replay_command(file, seed)
    )
}

/// `wiberctl scenario run FILE --seed N`: the command that draws the same faults again.
pub fn replay_command(file: &str, seed: u64) -> String {
    format!("wiberctl scenario run {} --seed {seed}", shell_word(file))
}

/// `file` as one shell word (quoted when it needs to be).
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The faults `spec` draws for `seed`, in time order. The same spec and seed give the
/// same faults, always.
pub fn draw(spec: &RandomSpec, seed: u64) -> Vec<FaultSpec> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    // The random faults active at the candidate time: when each ends, and its target.
    let mut active: Vec<(Duration, Target)> = Vec::new();
    let mut t = spec.start;
    // The format bounds the candidates (span / shortest interval); the count bound is
    // a second guard.
    while t <= spec.stop && (out.len() as u64) < MAX_RANDOM_FAULTS {
        // A fault that ends at `t` is undone before one due at `t` starts (as the
        // timeline orders them).
        active.retain(|(end, _)| *end > t);
        if active.len() < spec.max_concurrent as usize {
            let free = |target: &Target| {
                let service = target.service();
                let down = active.iter().filter(|(_, a)| a.service() == service);
                !active.iter().any(|(_, a)| a == target)
                    && down.count() < spec.max_down(service) as usize
            };
            let choices: Vec<(usize, Vec<&Target>)> = spec
                .menu
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let ok: Vec<&Target> = e.targets.iter().filter(|t| free(t)).collect();
                    (!ok.is_empty()).then_some((i, ok))
                })
                .collect();
            if !choices.is_empty() {
                let total: u64 = choices
                    .iter()
                    .map(|(i, _)| u64::from(spec.menu[*i].weight))
                    .sum();
                let mut pick = rng.below(total);
                let (i, ok) = choices
                    .iter()
                    .find(|(i, _)| {
                        let w = u64::from(spec.menu[*i].weight);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .expect("the pick is below the total weight");
                let entry = &spec.menu[*i];
                let target = ok[rng.below(ok.len() as u64) as usize].clone();
                let for_ = rng.duration(entry.for_);
                active.push((t + for_, target.clone()));
                let fault = FaultSpec {
                    line: entry.line,
                    at: t,
                    every: None,
                    count: 1,
                    action: entry.action,
                    target,
                    for_: Some(for_),
                    signal: entry.signal,
                    to: None,
                    net: entry.net.clone(),
                    drawn: true,
                };
                debug_assert!(fault.check().is_ok(), "the format checks every entry");
                out.push(fault);
            }
        }
        t += rng.duration(spec.interval);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Action;
    use crate::runtime::Service;
    use std::path::Path;

    const SOAK: &str = r#"
name = "soak"
[load]
rate = 10
duration = "10m"
[random]
seed = 7
start = "20s"
stop = "-30s"
interval = ["1s", "6s"]
max_concurrent = 3
[random.max_down]
kafka = 1
consumer = 2
[[random.faults]]
action = "kill"
targets = ["consumer#1", "consumer#2", "consumer#3"]
weight = 3
for = ["2s", "8s"]
[[random.faults]]
action = "pause"
targets = ["kafka#1", "kafka#2", "kafka:leader(wiber.messages/0)"]
for = ["1s", "5s"]
[[random.faults]]
action = "delay"
targets = ["mongo#1"]
ms = 200
jitter_ms = 50
for = "3s"
"#;

    fn soak() -> Scenario {
        crate::scenario::format::parse(Path::new("soak.toml"), SOAK).unwrap()
    }

    fn drawn(seed: u64) -> Vec<FaultSpec> {
        draw(soak().random.as_ref().unwrap(), seed)
    }

    #[test]
    fn the_generator_is_pinned() {
        // splitmix64 from 0: the reference outputs of its authors' C code.
        let mut sm = 0;
        assert_eq!(splitmix64(&mut sm), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut sm), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut sm), 0x06C4_5D18_8009_454F);
        // xoshiro256** seeded by it: pinned, so a seed keeps its schedule across versions.
        let mut r = Rng::new(7);
        let first: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(first, PINNED_7);
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), PINNED_0);
    }

    /// The first outputs for seeds 7 and 0, also computed by an independent
    /// implementation of the reference algorithms.
    const PINNED_7: [u64; 4] = [
        0xB358_FAF7_4EF9_765A,
        0x475C_3D96_4F48_2CD2,
        0xD6F1_D349_952C_7996,
        0xFB29_3873_1E80_7240,
    ];
    const PINNED_0: u64 = 0x99EC_5F36_CB75_F2B4;

    #[test]
    fn below_and_duration_stay_in_range() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[r.below(3) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (850..1150).contains(n)), "{seen:?}");
        let range = (Duration::from_millis(1500), Duration::from_millis(1503));
        for _ in 0..100 {
            let d = r.duration(range);
            assert!(d >= range.0 && d <= range.1, "{d:?}");
        }
        let fixed = Duration::from_micros(2500);
        assert_eq!(r.duration((fixed, fixed)), fixed);
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let a = drawn(7);
        assert!(a.len() > 50, "{}", a.len());
        assert!(a == drawn(7));
        // Byte for byte, as a person reads it.
        let text = |v: &[FaultSpec]| v.iter().map(|f| f.describe()).collect::<Vec<_>>();
        assert_eq!(text(&a), text(&drawn(7)));
        // The file's seed is used when --seed is not given; --seed wins.
        let mut sc = soak();
        let (seed, summary) = expand(&mut sc, None).unwrap();
        assert_eq!((seed, summary.seed_from), (7, SeedFrom::File));
        assert!(sc.faults == a);
        let mut sc = soak();
        let (seed, summary) = expand(&mut sc, Some(8)).unwrap();
        assert_eq!((seed, summary.seed_from), (8, SeedFrom::Flag));
        assert!(sc.faults == drawn(8));
        assert_eq!(summary.faults, sc.faults.len());
        assert_eq!(summary.by_action.values().sum::<usize>(), summary.faults);
    }

    #[test]
    fn another_seed_draws_another_schedule() {
        let a = drawn(7);
        for seed in [8, 9, 1_000_000] {
            assert!(a != drawn(seed), "seed {seed}");
        }
        // A file without a seed gets a fresh one, reported.
        let mut sc =
            crate::scenario::format::parse(Path::new("soak.toml"), &SOAK.replace("seed = 7\n", ""))
                .unwrap();
        let spec = sc.random.clone().unwrap();
        let (seed, summary) = expand(&mut sc, None).unwrap();
        assert_eq!(summary.seed_from, SeedFrom::Drawn);
        assert!(seed < 1_000_000_000_000);
        assert!(sc.faults == draw(&spec, seed));
    }

    /// The random faults active at `t` (started, not yet undone).
    fn active_at(faults: &[FaultSpec], t: Duration) -> Vec<&FaultSpec> {
        faults
            .iter()
            .filter(|f| f.at <= t && t < f.at + f.for_.unwrap())
            .collect()
    }

    #[test]
    fn limits_hold_at_every_instant() {
        let spec = soak().random.unwrap();
        // The most seen at once, overall and on the consumers: the limits are reached.
        let (mut most, mut most_consumers) = (0, 0);
        for seed in 0..40 {
            let faults = draw(&spec, seed);
            // Active sets only grow at a start: checking each start checks every instant.
            for f in &faults {
                let now = active_at(&faults, f.at);
                assert!(now.len() <= 3, "seed {seed} at {:?}: {}", f.at, now.len());
                most = most.max(now.len());
                for s in [Service::Kafka, Service::Consumer, Service::Mongo] {
                    let down = now.iter().filter(|a| a.target.service() == s).count();
                    assert!(down as u32 <= spec.max_down(s), "seed {seed}: {s} {down}");
                    if s == Service::Consumer {
                        most_consumers = most_consumers.max(down);
                    }
                }
                for a in &now {
                    let same = now.iter().filter(|b| b.target == a.target).count();
                    assert_eq!(same, 1, "seed {seed}: {} twice at {:?}", a.target, f.at);
                }
                // Drawn faults keep the rules of [[faults]].
                assert!(f.check().is_ok());
                assert!(f.for_.unwrap() >= Duration::from_secs(1));
            }
            assert!(faults.windows(2).all(|w| w[0].at < w[1].at));
        }
        assert_eq!((most, most_consumers), (3, 2));
    }

    #[test]
    fn start_and_stop_bound_every_start() {
        let spec = soak().random.unwrap();
        assert_eq!(spec.start, Duration::from_secs(20));
        assert_eq!(spec.stop, Duration::from_secs(570));
        for seed in 0..40 {
            let faults = draw(&spec, seed);
            assert!(faults
                .iter()
                .all(|f| f.at >= spec.start && f.at <= spec.stop));
            // And every fault ends under load (the format refuses a `for` that could not).
            assert!(faults
                .iter()
                .all(|f| f.at + f.for_.unwrap() <= Duration::from_secs(600)));
        }
    }

    #[test]
    fn weights_are_respected_over_many_draws() {
        // Targets never collide and nothing is capped, so each draw is by weight alone.
        let src = r#"
name = "w"
[load]
rate = 10
duration = "1h"
[random]
start = "1s"
stop = "-10s"
interval = "100ms"
max_concurrent = 1000
[random.max_down]
consumer = 1000
api = 1000
[[random.faults]]
action = "kill"
targets = ["consumer#1"]
weight = 3
for = "1ms"
[[random.faults]]
action = "pause"
targets = ["api#1"]
weight = 1
for = "1ms"
"#;
        let sc = crate::scenario::format::parse(Path::new("w.toml"), src).unwrap();
        let faults = draw(sc.random.as_ref().unwrap(), 42);
        let kills = faults.iter().filter(|f| f.action == Action::Kill).count();
        let share = kills as f64 / faults.len() as f64;
        assert!(faults.len() > 30_000, "{}", faults.len());
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn the_replay_line_names_the_seed_and_the_command() {
        let mut sc = soak();
        let (seed, summary) = expand(&mut sc, Some(12)).unwrap();
        let line = describe("scenarios/soak.toml", seed, &summary);
        assert!(
            line.ends_with("replay: wiberctl scenario run scenarios/soak.toml --seed 12"),
            "{line}"
        );
        assert!(line.contains("seed 12 (--seed)"), "{line}");
        assert!(
            line.contains(&format!("random faults: {} drawn (delay ", summary.faults)),
            "{line}"
        );
        assert_eq!(shell_word("my soak.toml"), "'my soak.toml'");
        // A file without [random] draws nothing and reports no seed.
        let mut plain = crate::scenario::format::parse(
            Path::new("p.toml"),
            "name = \"p\"\n[load]\nrate = 1\nduration = \"5s\"\n",
        )
        .unwrap();
        assert!(expand(&mut plain, Some(3)).is_none());
        assert!(plain.faults.is_empty());
    }

    #[test]
    fn the_run_records_and_shows_the_seed() {
        use crate::scenario::outcome::ScenarioRun;
        let mut sc = soak();
        let (seed, summary) = expand(&mut sc, Some(12)).unwrap();
        let mut o = ScenarioRun::new(&sc, "p", None);
        // A run without [random] writes neither key, and shows no replay line.
        let json = serde_json::to_value(&o).unwrap();
        assert!(json.get("seed").is_none() && json.get("random").is_none());
        assert!(!crate::scenario::print::terminal(&o).contains("replay"));
        (o.seed, o.random) = (Some(seed), Some(summary.clone()));
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["seed"], 12);
        assert_eq!(json["random"]["seed_from"], "flag");
        assert_eq!(json["random"]["faults"], summary.faults);
        let back: ScenarioRun = serde_json::from_value(json).unwrap();
        assert_eq!((back.seed, back.random), (Some(12), Some(summary)));
        let replay = "wiberctl scenario run soak.toml --seed 12";
        assert!(crate::scenario::print::terminal(&o).contains(replay));
        assert!(crate::scenario::print::markdown(&o).contains(&format!("`{replay}`")));
    }
}
