//! Phase windows: what held `before` the first fault, `during` the faults and `after`
//! the last undo, each measured from the ledger by the time requests were due.
//!
//! - `before`: from the start of the load to the first fault's start;
//! - `during`: the union of the fault windows (a fault's start to its undo returning; for
//!   an action without undo, such as `restart` or `scale`, until the action returned);
//! - `after`: from the end of the last fault window to the end of the load.
//!
//! Each phase gives the metrics `<phase>.ok`, `.failed`, `.unknown`, `.sent`, `.errors`
//! (answers that were not ok), `.ok_rate` (goodput), `.answered_rate`, and
//! `.ack.<stat>` of ok answers: so `"during.ok_rate" = ">= 0.9 * rate"` fails a stack
//! that stopped acknowledging during the fault, however fast it said no. Reads, when the
//! load reads, the same way from `reads.jsonl`: `<phase>.reads.<kind>.{sent,ok,errors,
//! error_rate,ok_rate,answered_rate,<stat>}` (latency of the ok reads, from due time).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wiber_model::ledger::{LedgerEntry, Outcome};
use wiber_model::report::ReadKind;

use crate::bench::reads::ReadEntry;

/// Named numbers (the same map as `threshold::Metrics`, which names metrics after these).
type Metrics = std::collections::BTreeMap<String, f64>;

/// One of the three phases of a scenario run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }

    /// `during.ack.p99` → (During, `ack.p99`).
    pub fn split(metric: &str) -> Option<(Phase, &str)> {
        let (p, rest) = metric.split_once('.')?;
        Phase::ALL
            .into_iter()
            .find(|ph| ph.name() == p)
            .map(|ph| (ph, rest))
    }
}

/// Counts a phase has (`<phase>.<name>`).
pub const PHASE_COUNTS: [&str; 5] = ["ok", "failed", "unknown", "sent", "errors"];
/// Rates a phase has.
pub const PHASE_RATES: [&str; 2] = ["ok_rate", "answered_rate"];
/// Counts a phase has of each kind of read (`during.reads.count.errors`).
pub const PHASE_READ_COUNTS: [&str; 3] = ["sent", "ok", "errors"];

/// What one kind of read saw in a phase (reads by due time).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseReads {
    pub sent: u64,
    pub ok: u64,
    /// Not ok: a non-2xx answer, or none.
    pub errors: u64,
    pub ok_rate: f64,
    pub answered_rate: f64,
    /// Due → answer of the ok reads, ms.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    #[serde(skip)]
    sorted: Vec<i64>,
}

impl PhaseReads {
    /// errors / (ok + errors); `None` when no read of the phase completed.
    pub fn error_rate(&self) -> Option<f64> {
        let done = self.ok + self.errors;
        (done > 0).then(|| self.errors as f64 / done as f64)
    }
}

/// What one phase saw. Absent phases (no fault: no `during`) have no entry at all, so
/// a threshold on them fails as "not measured" instead of passing on nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub phase: Phase,
    /// The windows the phase is made of, ms since the epoch.
    pub windows: Vec<(i64, i64)>,
    pub seconds: f64,
    /// Requests due in the phase.
    pub due: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Goodput: ok answers per second of the phase.
    pub ok_rate: f64,
    /// Any answer (ok or not) per second of the phase.
    pub answered_rate: f64,
    /// Due → answer of the ok answers, ms.
    pub ack_p50: Option<f64>,
    pub ack_p99: Option<f64>,
    pub ack_max: Option<f64>,
    #[serde(skip)]
    ack_sorted: Vec<i64>,
    /// Each kind of read the load made (none when it only wrote).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<ReadKind, PhaseReads>,
}

/// The windows of each phase, from the faults' windows (start, end; see
/// `FaultRecord::window`) and the load's span.
pub fn windows(
    faults: &[(i64, i64)],
    load_start_ms: i64,
    load_end_ms: i64,
) -> Vec<(Phase, Vec<(i64, i64)>)> {
    let mut faults: Vec<(i64, i64)> = faults.iter().map(|&(s, e)| (s, e.max(s))).collect();
    if faults.is_empty() {
        return vec![(Phase::Before, vec![(load_start_ms, load_end_ms)])];
    }
    faults.sort_unstable();
    // Merge overlapping windows: a second fault inside the first is still "during".
    let mut during: Vec<(i64, i64)> = Vec::new();
    for (s, e) in faults {
        match during.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => during.push((s, e)),
        }
    }
    let first = during[0].0;
    let last = during[during.len() - 1].1;
    vec![
        (
            Phase::Before,
            vec![(load_start_ms, first.max(load_start_ms))],
        ),
        (Phase::During, during),
        (Phase::After, vec![(last.min(load_end_ms), load_end_ms)]),
    ]
}

/// What the load read: each line of `reads.jsonl`, and every kind it read (a kind with
/// no line still gets its figures, of zero reads).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReads<'a> {
    pub entries: &'a [ReadEntry],
    pub kinds: &'a [ReadKind],
}

/// Each phase's figures from the ledger and the reads (warm-up requests left out).
pub fn compute(
    faults: &[(i64, i64)],
    ledger: &[LedgerEntry],
    reads: LoadReads<'_>,
    load_start_ms: i64,
    load_end_ms: i64,
) -> Vec<PhaseStats> {
    windows(faults, load_start_ms, load_end_ms)
        .into_iter()
        .filter_map(|(phase, wins)| {
            let ms: i64 = wins.iter().map(|(s, e)| e - s).sum();
            // A phase shorter than a second (a fault at 0 s) has no meaningful rate.
            if ms < 1000 {
                return None;
            }
            let seconds = ms as f64 / 1000.0;
            let mut st = PhaseStats {
                phase,
                windows: wins.clone(),
                seconds,
                due: 0,
                sent: 0,
                ok: 0,
                failed: 0,
                unknown: 0,
                ok_rate: 0.0,
                answered_rate: 0.0,
                ack_p50: None,
                ack_p99: None,
                ack_max: None,
                ack_sorted: Vec::new(),
                reads: reads
                    .kinds
                    .iter()
                    .map(|k| (*k, PhaseReads::default()))
                    .collect(),
            };
            for r in reads.entries.iter().filter(|r| !r.warmup) {
                if !wins.iter().any(|(s, t)| (*s..*t).contains(&r.due)) {
                    continue;
                }
                let k = st.reads.entry(r.kind).or_default();
                k.sent += 1;
                if r.ok() {
                    k.ok += 1;
                    k.sorted.push(r.answered - r.due);
                } else {
                    k.errors += 1;
                }
            }
            for k in st.reads.values_mut() {
                k.sorted.sort_unstable();
                k.ok_rate = k.ok as f64 / seconds;
                k.answered_rate = (k.ok + k.errors) as f64 / seconds;
                k.p50 = quantile(&k.sorted, 0.5);
                k.p99 = quantile(&k.sorted, 0.99);
                k.max = k.sorted.last().map(|v| *v as f64);
            }
            let mut answered = 0u64;
            for e in ledger.iter().filter(|e| !e.warmup) {
                if !wins.iter().any(|(s, t)| (*s..*t).contains(&e.due)) {
                    continue;
                }
                st.due += 1;
                if e.sent.is_some() {
                    st.sent += 1;
                }
                if e.status.is_some() {
                    answered += 1;
                }
                match e.outcome {
                    Outcome::Ok => {
                        st.ok += 1;
                        st.ack_sorted.push(e.answered - e.due);
                    }
                    Outcome::Failed => st.failed += 1,
                    Outcome::Unknown => st.unknown += 1,
                }
            }
            st.ack_sorted.sort_unstable();
            st.ok_rate = st.ok as f64 / seconds;
            st.answered_rate = answered as f64 / seconds;
            st.ack_p50 = st.quantile(0.5);
            st.ack_p99 = st.quantile(0.99);
            st.ack_max = st.ack_sorted.last().map(|v| *v as f64);
            Some(st)
        })
        .collect()
}

/// The nearest-rank `q` quantile of sorted milliseconds (`None` when empty): exact,
/// which the windows' few thousand samples can afford.
pub fn quantile(sorted: &[i64], q: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| {
        let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i] as f64
    })
}

impl PhaseStats {
    fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.ack_sorted, q)
    }

    fn mean(&self) -> Option<f64> {
        let v = &self.ack_sorted;
        (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64)
    }

    /// Adds `<phase>.<metric>` for every figure of the phase.
    pub fn insert_metrics(&self, m: &mut Metrics) {
        let p = self.phase.name();
        for (k, v) in [
            ("ok", self.ok),
            ("failed", self.failed),
            ("unknown", self.unknown),
            ("sent", self.sent),
            ("errors", self.failed + self.unknown),
        ] {
            m.insert(format!("{p}.{k}"), v as f64);
        }
        m.insert(format!("{p}.ok_rate"), self.ok_rate);
        m.insert(format!("{p}.answered_rate"), self.answered_rate);
        let stats = [
            ("mean", self.mean()),
            ("p50", self.ack_p50),
            ("p90", self.quantile(0.9)),
            ("p99", self.ack_p99),
            ("p999", self.quantile(0.999)),
            ("max", self.ack_max),
        ];
        for (stat, v) in stats {
            if let Some(v) = v {
                m.insert(format!("{p}.ack.{stat}"), v);
            }
        }
        for (kind, r) in &self.reads {
            let name = |x: &str| format!("{p}.reads.{kind}.{x}");
            m.insert(name("sent"), r.sent as f64);
            m.insert(name("ok"), r.ok as f64);
            m.insert(name("errors"), r.errors as f64);
            m.insert(name("ok_rate"), r.ok_rate);
            m.insert(name("answered_rate"), r.answered_rate);
            if let Some(e) = r.error_rate() {
                m.insert(name("error_rate"), e);
            }
            let v = &r.sorted;
            let mean = (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64);
            for (stat, x) in [
                ("mean", mean),
                ("p50", r.p50),
                ("p90", quantile(v, 0.9)),
                ("p99", r.p99),
                ("p999", quantile(v, 0.999)),
                ("max", r.max),
            ] {
                if let Some(x) = x {
                    m.insert(name(stat), x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: i64, end: i64) -> (i64, i64) {
        (start, end)
    }

    fn entry(due: i64, outcome: Outcome, latency: i64) -> LedgerEntry {
        LedgerEntry {
            message_id: format!("r-c0-s{due}"),
            run: "r".into(),
            conversation: 0,
            seq: due as u64,
            due,
            sent: Some(due),
            answered: due + latency,
            outcome,
            status: Some(match outcome {
                Outcome::Ok => 200,
                Outcome::Failed => 422,
                Outcome::Unknown => 503,
            }),
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

    #[test]
    fn overlapping_faults_make_one_during_window() {
        let w = windows(
            &[
                record(5_000, 9_000),
                record(7_000, 12_000),
                record(20_000, 21_000),
            ],
            0,
            30_000,
        );
        assert_eq!(w[0], (Phase::Before, vec![(0, 5_000)]));
        assert_eq!(
            w[1],
            (Phase::During, vec![(5_000, 12_000), (20_000, 21_000)])
        );
        assert_eq!(w[2], (Phase::After, vec![(21_000, 30_000)]));
        // No fault: everything is `before`, and there is no `during` to pass on.
        assert_eq!(windows(&[], 0, 10), vec![(Phase::Before, vec![(0, 10)])]);
    }

    /// A stack that answers every request of the fault window with a fast 503 has a
    /// goodput of 0 during it, whatever its answered rate.
    #[test]
    fn goodput_counts_ok_answers_only() {
        let mut ledger = Vec::new();
        for t in (0..30_000).step_by(100) {
            let during = (10_000..20_000).contains(&t);
            let (o, lat) = if during {
                (Outcome::Unknown, 1)
            } else {
                (Outcome::Ok, 5)
            };
            ledger.push(entry(t, o, lat));
        }
        let phases = compute(
            &[record(10_000, 20_000)],
            &ledger,
            LoadReads::default(),
            0,
            30_000,
        );
        let mut m = Metrics::new();
        for p in &phases {
            p.insert_metrics(&mut m);
        }
        assert_eq!(m["before.ok_rate"], 10.0);
        assert_eq!(m["during.ok_rate"], 0.0);
        assert_eq!(m["during.answered_rate"], 10.0);
        assert_eq!(m["during.errors"], 100.0);
        assert!(
            !m.contains_key("during.ack.p99"),
            "no ok answer, no ack latency"
        );
        assert_eq!(m["after.ack.p99"], 5.0);
        assert_eq!(
            Phase::split("during.ack.p99"),
            Some((Phase::During, "ack.p99"))
        );
        assert_eq!(Phase::split("ack.p99"), None);
    }

    /// Reads split by phase like the writes: a kind whose reads all fail during the
    /// fault has an error rate of 1 there and no latency, whatever it did before.
    #[test]
    fn reads_split_by_phase() {
        let read = |due: i64, kind: ReadKind, ok: bool| ReadEntry {
            kind,
            due,
            sent: due,
            answered: due + if ok { 4 } else { 1 },
            status: Some(if ok { 200 } else { 503 }),
            error: (!ok).then(|| "http_503".to_string()),
            path: None,
            warmup: false,
        };
        let mut entries = Vec::new();
        for t in (0..30_000).step_by(50) {
            let during = (10_000..20_000).contains(&t);
            entries.push(read(t, ReadKind::Count, !during));
        }
        let kinds = [ReadKind::Count, ReadKind::User];
        let phases = compute(
            &[record(10_000, 20_000)],
            &[],
            LoadReads {
                entries: &entries,
                kinds: &kinds,
            },
            0,
            30_000,
        );
        let mut m = Metrics::new();
        for p in &phases {
            p.insert_metrics(&mut m);
        }
        assert_eq!(m["before.reads.count.ok_rate"], 20.0);
        assert_eq!(m["before.reads.count.error_rate"], 0.0);
        assert_eq!(m["before.reads.count.p99"], 4.0);
        assert_eq!(m["during.reads.count.errors"], 200.0);
        assert_eq!(m["during.reads.count.error_rate"], 1.0);
        assert!(!m.contains_key("during.reads.count.p99"));
        assert_eq!(m["after.reads.count.ok"], 200.0);
        // A kind read but never answered in a phase: counted as zero, no error rate.
        assert_eq!(m["during.reads.user.sent"], 0.0);
        assert!(!m.contains_key("during.reads.user.error_rate"));
        // A kind not read has no figures at all.
        assert!(!m.keys().any(|k| k.contains("reads.conversation")));
    }
}
