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
//! that stopped acknowledging during the fault, however fast it said no.

use serde::{Deserialize, Serialize};
use wiber_model::ledger::{LedgerEntry, Outcome};

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

/// Each phase's figures from the ledger (warm-up requests left out).
pub fn compute(
    faults: &[(i64, i64)],
    ledger: &[LedgerEntry],
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
            };
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
        let phases = compute(&[record(10_000, 20_000)], &ledger, 0, 30_000);
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
}
