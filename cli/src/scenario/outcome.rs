//! What a scenario run found: [`ScenarioRun`], written as `scenario.json` (schema
//! [`SCHEMA`]), rendered as `summary.md` and JUnit XML.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wiber_model::report::VerifyCounts;

use super::format::Scenario;
use super::junit::{Case, CaseStatus, Suite};
use super::phases::PhaseStats;
use super::recovery::Recovery;
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
    /// Before / during / after the faults (only the phases the run had).
    #[serde(default)]
    pub phases: Vec<PhaseStats>,
    pub rollback_failures: Vec<String>,
    pub baseline: Option<PathBuf>,
    pub comparison: Vec<Comparison>,
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
            phases: Vec::new(),
            rollback_failures: Vec::new(),
            baseline,
            comparison: Vec::new(),
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
        if let Some(c) = &self.verify {
            let bad: Vec<String> = c
                .must_be_zero()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} = {n}"))
                .collect();
            let undrained = self.verify_verdicts.contains(&RunVerdict::Error);
            let mut message = bad.join(", ");
            if undrained {
                message.push_str(" the consumer group did not drain within the drain timeout");
            }
            cases.push(Case {
                name: "delivery invariants (verify)".into(),
                status: if bad.is_empty() && !undrained {
                    CaseStatus::Pass
                } else {
                    CaseStatus::Fail
                },
                message: message.trim().to_string(),
            });
        }
        for e in &self.thresholds {
            cases.push(Case {
                name: format!("{} {}", e.metric, e.threshold),
                status: match e.verdict {
                    Verdict::Pass => CaseStatus::Pass,
                    Verdict::Fail => CaseStatus::Fail,
                    Verdict::Skipped => CaseStatus::Skipped,
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
