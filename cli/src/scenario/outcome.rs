//! What a scenario run found: [`ScenarioRun`], written as `scenario.json` (schema
//! [`SCHEMA`]), rendered as `summary.md` and JUnit XML.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wiber_model::report::VerifyCounts;

use super::format::Scenario;
use super::junit::{Case, CaseStatus, Suite};
use super::phases::PhaseStats;
use super::random::RandomSummary;
use super::recovery::Recovery;
use super::recovery_stats::RecoveryStats;
use super::resource_trend::ResourceTrends;
use super::threshold::{Evaluation, Metrics, Verdict};
use super::timeline::FaultRecord;
use crate::runtime::RuntimeKind;

/// Schema of `scenario.json`.
pub const SCHEMA: &str = "wiber.scenario.v1";

/// A run's verdict: the same pass / fail / error as verify's (one type for one meaning).
pub use wiber_model::report::Verdict as RunVerdict;

/// `scenario.json`: everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRun {
    pub schema: String,
    pub name: String,
    pub description: String,
    pub file: String,
    pub verdict: RunVerdict,
    /// Why the run could not be done (verdict `error`).
    pub error: Option<String>,
    pub dir: Option<PathBuf>,
    pub started_ms: i64,
    pub seconds: f64,
    pub project: String,
    pub runtime: Option<RuntimeKind>,
    pub brought_up: bool,
    pub torn_down: bool,
    pub mean_rate: f64,
    /// Bench run directories of the load, one per segment.
    pub load_dirs: Vec<PathBuf>,
    pub verify: Option<VerifyCounts>,
    /// Verify's verdicts (`pass`, `fail`, `error` = did not drain), per segment.
    pub verify_verdicts: Vec<RunVerdict>,
    pub metrics: Metrics,
    pub thresholds: Vec<Evaluation>,
    pub faults: Vec<FaultRecord>,
    pub recovery: Vec<Recovery>,
    /// The recovery figures grouped by kind of fault, their spread, the worst fault
    /// (absent from runs written before it existed).
    #[serde(default)]
    pub recovery_stats: Option<RecoveryStats>,
    /// CPU and RSS per service over the whole load (all segments), for leak detection.
    #[serde(default)]
    pub resources: Option<ResourceTrends>,
    /// Before / during / after the faults (only the phases the run had).
    #[serde(default)]
    pub phases: Vec<PhaseStats>,
    pub rollback_failures: Vec<String>,
    pub baseline: Option<PathBuf>,
    pub comparison: Vec<Comparison>,
    /// Invariants and threshold metrics the scenario expects to fail (`[expect] fail`):
    /// a run on a deliberately unsafe stack passes only when the harness catches it.
    #[serde(default)]
    pub expect_fail: Vec<String>,
    /// Records the run put on the topic that the store cannot hold (`[load] poison`):
    /// exactly that many must be dead-lettered, and `dead_lettered` is broken when it is
    /// any other number.
    #[serde(default)]
    pub expected_dead_lettered: u64,
    /// The seed `[random]` drew its faults with (`scenario run FILE --seed N` replays
    /// them); absent when the file has no `[random]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// What `[random]` drew: how many faults, of which actions, where the seed came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSummary>,
    /// What verify-as-it-goes found while the load ran (`[load] verify_every`); the
    /// final verify still checks the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::verify::incremental::IncrementalSummary>,
    /// The longest a partition had lag while its committed offset did not move
    /// (`consumer.stalled_max`); `None` when none did, or nothing was sampled.
    #[serde(default)]
    pub stall: Option<super::stall::Stall>,
}

/// One row of the `--baseline` comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub baseline: f64,
    pub run: f64,
    /// (run − baseline) / baseline, percent; `None` when the baseline is 0.
    pub change_pct: Option<f64>,
}

impl ScenarioRun {
    /// The recovery statistics, also for a `scenario.json` written before they were kept
    /// (computed again from its faults).
    pub fn recovery_stats_or_computed(&self) -> RecoveryStats {
        self.recovery_stats
            .clone()
            .unwrap_or_else(|| super::recovery_stats::compute(&self.faults, &self.recovery))
    }

    /// A run of `sc` on `project` that has found nothing yet (verdict `error` until it has).
    pub(super) fn new(sc: &Scenario, project: &str, baseline: Option<PathBuf>) -> ScenarioRun {
        ScenarioRun {
            schema: SCHEMA.into(),
            name: sc.name.clone(),
            description: sc.description.clone(),
            file: sc.path.display().to_string(),
            verdict: RunVerdict::Error,
            error: None,
            dir: None,
            started_ms: wiber_model::now_ms(),
            seconds: 0.0,
            project: project.to_string(),
            runtime: None,
            brought_up: false,
            torn_down: false,
            mean_rate: sc.load.mean_rate(),
            load_dirs: Vec::new(),
            verify: None,
            verify_verdicts: Vec::new(),
            metrics: Metrics::new(),
            thresholds: Vec::new(),
            faults: Vec::new(),
            recovery: Vec::new(),
            recovery_stats: None,
            resources: None,
            phases: Vec::new(),
            rollback_failures: Vec::new(),
            baseline,
            comparison: Vec::new(),
            expect_fail: sc.expect_fail.clone(),
            expected_dead_lettered: u64::from(sc.load.poison),
            seed: None,
            random: None,
            incremental: None,
            stall: None,
        }
    }

    /// The delivery invariants verify found broken, with their counts.
    pub fn broken_invariants(&self) -> Vec<(&'static str, u64)> {
        self.verify
            .as_ref()
            .map(|c| {
                c.must_be_zero()
                    .into_iter()
                    .filter(|(k, n)| match *k {
                        // The run's own poison records: those, no more, no fewer.
                        "dead_lettered" => *n != self.expected_dead_lettered,
                        _ => *n > 0,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the scenario expects `name` (an invariant or a threshold's metric) to fail.
    pub fn expects_fail(&self, name: &str) -> bool {
        self.expect_fail.iter().any(|n| n == name)
    }

    /// Whether verify's part holds: the group drained, and every broken invariant is one
    /// the scenario expects broken.
    pub fn invariants_hold(&self) -> bool {
        !self.verify_verdicts.contains(&RunVerdict::Error)
            && self
                .broken_invariants()
                .iter()
                .all(|(k, _)| self.expects_fail(k))
    }

    /// Whether a threshold fared as the scenario expects (pass, or fail when expected to).
    pub fn threshold_as_expected(&self, e: &Evaluation) -> bool {
        if self.expects_fail(&e.metric) {
            e.verdict == Verdict::Fail
        } else {
            e.verdict != Verdict::Fail
        }
    }

    /// Expected failures that did not happen: what the harness should have caught and
    /// did not (or the fault did not cause). Any of them fails the run.
    pub fn missed_expectations(&self) -> Vec<String> {
        let broken = self.broken_invariants();
        self.expect_fail
            .iter()
            .filter(|n| {
                !broken.iter().any(|(k, _)| k == n)
                    && !self
                        .thresholds
                        .iter()
                        .any(|e| &e.metric == *n && e.verdict == Verdict::Fail)
            })
            .cloned()
            .collect()
    }

    /// The verdict of a run whose checks were all evaluated: every invariant and
    /// threshold as expected, and every expected failure seen.
    pub fn judged(&self) -> RunVerdict {
        let thresholds = self
            .thresholds
            .iter()
            .all(|e| self.threshold_as_expected(e));
        if self.invariants_hold() && thresholds && self.missed_expectations().is_empty() {
            RunVerdict::Pass
        } else {
            RunVerdict::Fail
        }
    }

    /// The JUnit suite: the run, the invariants, one case per threshold.
    pub fn junit(&self) -> Suite {
        let mut cases = vec![Case {
            name: "run (stack, steady state, load, faults, rollbacks)".into(),
            status: if self.verdict == RunVerdict::Error {
                CaseStatus::Error
            } else {
                CaseStatus::Pass
            },
            message: self.error.clone().unwrap_or_default(),
        }];
        if self.verify.is_some() {
            let bad: Vec<String> = self
                .broken_invariants()
                .iter()
                .map(|(k, n)| {
                    let expected = if self.expects_fail(k) {
                        " (expected)"
                    } else {
                        ""
                    };
                    format!("{k} = {n}{expected}")
                })
                .collect();
            let undrained = self.verify_verdicts.contains(&RunVerdict::Error);
            let mut message = bad.join(", ");
            if undrained {
                message.push_str(" the consumer group did not drain within the drain timeout");
            }
            cases.push(Case {
                name: "delivery invariants (verify)".into(),
                status: if self.invariants_hold() {
                    CaseStatus::Pass
                } else {
                    CaseStatus::Fail
                },
                message: message.trim().to_string(),
            });
        }
        let missed = self.missed_expectations();
        if !self.expect_fail.is_empty() {
            cases.push(Case {
                name: format!("expected to fail: {}", self.expect_fail.join(", ")),
                status: if missed.is_empty() {
                    CaseStatus::Pass
                } else {
                    CaseStatus::Fail
                },
                message: if missed.is_empty() {
                    String::new()
                } else {
                    format!("not caught: {}", missed.join(", "))
                },
            });
        }
        for e in &self.thresholds {
            cases.push(Case {
                name: format!("{} {}", e.metric, e.threshold),
                status: match e.verdict {
                    Verdict::Skipped => CaseStatus::Skipped,
                    _ if self.threshold_as_expected(e) => CaseStatus::Pass,
                    _ => CaseStatus::Fail,
                },
                message: e.detail.clone().unwrap_or_default(),
            });
        }
        Suite {
            name: self.name.clone(),
            file: self.file.clone(),
            seconds: self.seconds,
            cases,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::threshold::Verdict;
    use std::path::Path;

    const UNSAFE: &str = r#"
name = "isolate-leader-unsafe"
[load]
rate = 10
duration = "5s"
[thresholds]
lost = "== 0"
duplicated = "== 0"
[expect]
fail = ["lost"]
"#;

    fn run_with(lost: u64, duplicated: u64) -> ScenarioRun {
        let sc = crate::scenario::format::parse(Path::new("u.toml"), UNSAFE).unwrap();
        let mut o = ScenarioRun::new(&sc, "p", None);
        o.verify = Some(VerifyCounts {
            lost,
            duplicated,
            ..Default::default()
        });
        o.verify_verdicts = vec![if lost + duplicated > 0 {
            RunVerdict::Fail
        } else {
            RunVerdict::Pass
        }];
        let eval = |metric: &str, n: u64| Evaluation {
            metric: metric.into(),
            threshold: "== 0".into(),
            line: 1,
            actual: Some(n as f64),
            limit: Some(0.0),
            verdict: if n == 0 { Verdict::Pass } else { Verdict::Fail },
            detail: None,
        };
        o.thresholds = vec![eval("lost", lost), eval("duplicated", duplicated)];
        o
    }

    #[test]
    fn an_expected_loss_passes_only_when_caught() {
        // The unsafe stack lost messages and verify caught it: the run passes.
        assert_eq!(run_with(3, 0).judged(), RunVerdict::Pass);
        // It lost nothing: the expectation was missed, so the run fails.
        let missed = run_with(0, 0);
        assert_eq!(missed.missed_expectations(), vec!["lost".to_string()]);
        assert_eq!(missed.judged(), RunVerdict::Fail);
        // A failure that was not expected still fails the run.
        assert_eq!(run_with(3, 2).judged(), RunVerdict::Fail);
        let suite = run_with(0, 0).junit();
        assert!(suite
            .cases
            .iter()
            .any(|c| c.name.starts_with("expected to fail") && c.status == CaseStatus::Fail));
    }

    #[test]
    fn without_expectations_any_failure_fails() {
        let sc = crate::scenario::format::parse(
            Path::new("s.toml"),
            &UNSAFE.replace("[expect]\nfail = [\"lost\"]\n", ""),
        )
        .unwrap();
        assert!(sc.expect_fail.is_empty());
        let mut o = run_with(3, 0);
        o.expect_fail = sc.expect_fail;
        assert_eq!(o.judged(), RunVerdict::Fail);
    }

    #[test]
    fn the_runs_poison_records_must_be_dead_lettered_exactly() {
        let sc = crate::scenario::format::parse(
            Path::new("p.toml"),
            "name = \"p\"\n[load]\nrate = 10\nduration = \"5s\"\npoison = 1\n",
        )
        .unwrap();
        let judged = |dead_lettered: u64, lost: u64| {
            let mut o = ScenarioRun::new(&sc, "p", None);
            o.verify = Some(VerifyCounts {
                dead_lettered,
                lost,
                ..Default::default()
            });
            o.verify_verdicts = vec![RunVerdict::Pass];
            (o.broken_invariants(), o.judged())
        };
        assert_eq!(judged(1, 0), (vec![], RunVerdict::Pass));
        // Not dead-lettered (stuck, or stored after all), or more than the run's own.
        assert_eq!(judged(0, 0), (vec![("dead_lettered", 0)], RunVerdict::Fail));
        assert_eq!(judged(2, 0), (vec![("dead_lettered", 2)], RunVerdict::Fail));
        assert_eq!(judged(1, 1).1, RunVerdict::Fail);
    }
}
