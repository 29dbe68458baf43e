//! Reads mixed into the write load: what `--reads` and a scenario's `reads = {...}` say
//! ([`ReadRates`]), which conversation, user and page each read asks for ([`Picker`]),
//! and the line each read leaves in `reads.jsonl` ([`ReadEntry`]). Pure: the worker
//! loop (module `worker`) schedules and sends the reads, the collector counts them.
//!
//! Each kind runs open loop at its own rate, like the writes: read `i` of a kind is due
//! at `start + i / rate` whatever the server does, and its latency is measured from
//! that due time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use wiber_model::report::{ReadKind, ReadSource};
use wiber_model::{fixture, ledger};

/// `limit` of every conversation and user page: the API's default conversation page.
pub const PAGE: u32 = 50;

/// What `--read-fixture-size` defaults to: messages per fixture conversation.
pub const DEFAULT_FIXTURE_MESSAGES: u64 = 1000;

/// The syntax of `--reads`, for messages.
pub const READS_SYNTAX: &str = "KIND=RATE[,KIND=RATE...], KIND one of conversation, user, count and RATE in reads per second, e.g. --reads conversation=200,user=50,count=20";

/// Reads per second of each kind, as `--reads conversation=200,user=50,count=20` gives
/// them. Only the kinds named are read; each is at least one of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadRates(pub BTreeMap<ReadKind, f64>);

impl ReadRates {
    /// Checks one kind's rate (also for scenario files): positive and finite.
    pub fn check_rate(kind: ReadKind, rate: f64) -> Result<(), String> {
        if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 {
            Ok(())
        } else {
            Err(format!(
                "{kind} = {rate}: a read rate must be a positive number of reads per second \
                 (at most 1000000); leave {kind} out not to read it"
            ))
        }
    }
}

impl FromStr for ReadRates {
    type Err = String;

    fn from_str(s: &str) -> Result<ReadRates, String> {
        let mut rates = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, rate) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} has no rate: expected {READS_SYNTAX}"))?;
            let kind = ReadKind::parse(name.trim()).ok_or_else(|| {
                format!(
                    "unknown read kind {:?}: the kinds are {}, e.g. --reads conversation=200,user=50,count=20",
                    name.trim(),
                    ReadKind::names()
                )
            })?;
            let rate: f64 = rate.trim().parse().map_err(|_| {
                format!(
                    "{kind} = {:?} is not a number of reads per second",
                    rate.trim()
                )
            })?;
            ReadRates::check_rate(kind, rate)?;
            if rates.insert(kind, rate).is_some() {
                return Err(format!("{kind} is given twice: give each kind once"));
            }
        }
        if rates.is_empty() {
            return Err(format!("no read kind given: expected {READS_SYNTAX}"));
        }
        Ok(ReadRates(rates))
    }
}

impl fmt::Display for ReadRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, r)| format!("{k}={r}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Where a phase's reads find their conversations.
pub enum Targets<'a> {
    /// The run's own: conversation `base + c` for `c` in `0..acked.len()`, `acked[c]`
    /// the messages it had acknowledged so far.
    Run {
        run: &'a str,
        base: u32,
        acked: &'a [AtomicU64],
    },
    /// A fixture of `conversations` conversations of `messages` messages each.
    Fixture { conversations: u64, messages: u64 },
}

impl<'a> Targets<'a> {
    pub fn of(source: &ReadSource, run: &'a str, base: u32, acked: &'a [AtomicU64]) -> Self {
        match *source {
            ReadSource::Run => Targets::Run { run, base, acked },
            ReadSource::Fixture {
                conversations,
                messages,
            } => Targets::Fixture {
                conversations,
                messages,
            },
        }
    }
}

/// Picks what each read asks for, uniformly: a conversation (and one of its pages), a
/// user, a count. A small deterministic generator (SplitMix64) per lane: seeded, so a
/// run can be repeated, and without a dependency for a few bits per read.
pub struct Picker {
    state: u64,
    /// `limit` of a page.
    page: u32,
}

impl Picker {
    pub fn new(seed: u64, page: u32) -> Picker {
        Picker {
            state: seed,
            page: page.max(1),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is below 2^-40 for the
    /// counts used here.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// A conversation: its two users and how many messages it holds.
    fn conversation(&mut self, t: &Targets<'_>) -> (String, String, u64) {
        match t {
            Targets::Run { run, base, acked } => {
                let c = self.below(acked.len() as u64) as usize;
                let (a, b) = ledger::users(run, base + c as u32);
                let n = acked.get(c).map_or(0, |n| n.load(Relaxed));
                (a, b, n)
            }
            Targets::Fixture {
                conversations,
                messages,
            } => {
                let (a, b) = fixture::users(self.below(*conversations));
                (a, b, *messages)
            }
        }
    }

    /// The path of one read of `kind`, after the API's `/messages`.
    pub fn path(&mut self, kind: ReadKind, t: &Targets<'_>) -> String {
        let (a, b, n) = self.conversation(t);
        match kind {
            ReadKind::Conversation => {
                // Any page of what is there (page 0 of an empty conversation).
                let page = u64::from(self.page);
                let pages = n.div_ceil(page).max(1);
                let skip = self.below(pages) * page;
                format!("/{}/{}?limit={page}&skip={skip}", seg(&a), seg(&b))
            }
            ReadKind::User => {
                let u = if self.below(2) == 0 { &a } else { &b };
                format!("/user/{}?limit={}", seg(u), self.page)
            }
            // The three counts the API has: everything, a user's, a conversation's.
            ReadKind::Count => match self.below(3) {
                0 => "/count".to_string(),
                1 => format!("/count?user1={}", seg(&a)),
                _ => format!("/count?user1={}&user2={}", seg(&a), seg(&b)),
            },
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a name is one
/// path segment or query value whatever it holds (the generator's names need none).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The seed of one lane's [`Picker`]: the run, the phase's conversations, the kind and
/// the lane, so lanes and `--find-max` steps do not read in lockstep.
pub fn seed(run: &str, base: u32, kind: ReadKind, lane: u64) -> u64 {
    ledger::fnv1a(format!("{run}:{base}:{kind}:{lane}").as_bytes())
}

/// One line of `reads.jsonl`: one read, its times (ms since the epoch) and how it
/// ended. Scenario phases split the reads by `due` from these lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadEntry {
    pub kind: ReadKind,
    pub due: i64,
    pub sent: i64,
    pub answered: i64,
    /// HTTP status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it was not ok (`http_503`, `timeout`, ...); absent for a 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was read, for the reads that failed (so a failure can be looked into).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
}

impl ReadEntry {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Reads `reads.jsonl` of a run directory; no file means the run made no reads.
pub fn read_entries(path: &std::path::Path) -> anyhow::Result<Vec<ReadEntry>> {
    use anyhow::Context;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a read line", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flag_parses_and_says_what_it_expects() {
        let r: ReadRates = "conversation=200, user=50,count=2.5".parse().unwrap();
        assert_eq!(
            r.0,
            BTreeMap::from([
                (ReadKind::Conversation, 200.0),
                (ReadKind::User, 50.0),
                (ReadKind::Count, 2.5)
            ])
        );
        assert_eq!(r.to_string(), "conversation=200,user=50,count=2.5");
        let e = "conversations=1".parse::<ReadRates>().unwrap_err();
        assert!(
            e.contains("unknown read kind \"conversations\"")
                && e.contains("conversation, user, count"),
            "{e}"
        );
        assert!("user".parse::<ReadRates>().unwrap_err().contains("no rate"));
        assert!("user=x"
            .parse::<ReadRates>()
            .unwrap_err()
            .contains("not a number"));
        assert!("user=0"
            .parse::<ReadRates>()
            .unwrap_err()
            .contains("leave user out"));
        assert!("user=-3".parse::<ReadRates>().is_err());
        assert!("user=inf".parse::<ReadRates>().is_err());
        assert!("user=1,user=2"
            .parse::<ReadRates>()
            .unwrap_err()
            .contains("twice"));
        assert!(""
            .parse::<ReadRates>()
            .unwrap_err()
            .contains("no read kind"));
    }

    #[test]
    fn pages_stay_within_what_the_run_acknowledged() {
        let acked: Vec<AtomicU64> = [0, 120, 50].into_iter().map(AtomicU64::new).collect();
        let t = Targets::Run {
            run: "r1",
            base: 10,
            acked: &acked,
        };
        let mut p = Picker::new(7, PAGE);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..600 {
            let path = p.path(ReadKind::Conversation, &t);
            seen.insert(path.clone());
            let (users, q) = path.split_once('?').unwrap();
            let skip: u64 = q.split("skip=").nth(1).unwrap().parse().unwrap();
            // Conversation 11 has 120: pages 0, 50, 100; 10 and 12 only page 0.
            if users.contains("-u11a") {
                assert!([0, 50, 100].contains(&skip), "{path}");
            } else {
                assert_eq!(skip, 0, "{path}");
            }
            assert!(q.starts_with("limit=50&"), "{path}");
        }
        // Every page of every conversation came up.
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(seen.contains("/bench-r1-u11a/bench-r1-u11b?limit=50&skip=100"));
        let user = p.path(ReadKind::User, &t);
        assert!(user.starts_with("/user/bench-r1-u1"), "{user}");
        // Total, per user and per conversation all come up: 0, 1 and 2 parameters.
        let shapes: std::collections::BTreeSet<usize> = (0..200)
            .map(|_| p.path(ReadKind::Count, &t).matches('=').count())
            .collect();
        assert_eq!(shapes, [0, 1, 2].into());
    }

    #[test]
    fn fixture_reads_pick_any_fixture_conversation_and_page() {
        let t = Targets::Fixture {
            conversations: 3,
            messages: 1000,
        };
        let mut p = Picker::new(1, PAGE);
        let mut skips = std::collections::BTreeSet::new();
        let mut convs = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let path = p.path(ReadKind::Conversation, &t);
            assert!(path.starts_with("/fixture-u"), "{path}");
            convs.insert(path.split('/').nth(1).unwrap().to_string());
            skips.insert(path.split("skip=").nth(1).unwrap().parse::<u64>().unwrap());
        }
        assert_eq!(convs.len(), 3, "{convs:?}");
        assert_eq!(skips, (0..20).map(|p| p * 50).collect());
        assert_eq!(seg("a b/ü"), "a%20b%2F%C3%BC");
    }
}
