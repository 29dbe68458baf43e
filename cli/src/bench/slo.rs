//! Service-level objectives for `--slo` and `--find-max`: `ack.p99<50ms`, several joined
//! with `,` (all must hold), e.g. `ack.p99<50ms,ack.p999<=200ms,service.p50<5ms`.

use std::fmt;
use std::time::Duration;

use wiber_model::report::Percentiles;

/// Which latency an objective is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Ack,
    Service,
    E2e,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub metric: Metric,
    /// `p50`, `p90`, `p99`, `p999`, `max` or `mean`.
    pub stat: String,
    pub inclusive: bool,
    pub limit_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub text: String,
    pub objectives: Vec<Objective>,
}

const SYNTAX: &str = "expected METRIC.STAT<LIMIT joined by commas, e.g. ack.p99<50ms,ack.max<=1s \
(METRIC: ack, service, e2e; STAT: p50, p90, p99, p999, max, mean)";

impl std::str::FromStr for Slo {
    type Err = String;

    fn from_str(text: &str) -> Result<Slo, String> {
        let mut objectives = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lhs, inclusive, rhs) = if let Some((l, r)) = part.split_once("<=") {
                (l, true, r)
            } else if let Some((l, r)) = part.split_once('<') {
                (l, false, r)
            } else {
                return Err(format!("invalid SLO {part:?}: {SYNTAX}"));
            };
            let (metric, stat) = lhs
                .trim()
                .split_once('.')
                .ok_or_else(|| format!("invalid SLO {part:?}: {SYNTAX}"))?;
            let metric = match metric {
                "ack" => Metric::Ack,
                "service" => Metric::Service,
                "e2e" => Metric::E2e,
                _ => {
                    return Err(format!(
                        "unknown SLO metric {metric:?} in {part:?}: {SYNTAX}"
                    ))
                }
            };
            if !["p50", "p90", "p99", "p999", "max", "mean"].contains(&stat) {
                return Err(format!(
                    "unknown SLO statistic {stat:?} in {part:?}: {SYNTAX}"
                ));
            }
            let limit: Duration = crate::units::parse_duration(rhs.trim())
                .map_err(|e| format!("invalid SLO limit in {part:?}: {e}"))?;
            objectives.push(Objective {
                metric,
                stat: stat.to_string(),
                inclusive,
                limit_ms: limit.as_secs_f64() * 1000.0,
            });
        }
        if objectives.is_empty() {
            return Err(format!("empty SLO: {SYNTAX}"));
        }
        Ok(Slo {
            text: text.to_string(),
            objectives,
        })
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn stat(p: &Percentiles, name: &str) -> f64 {
    match name {
        "p50" => p.p50,
        "p90" => p.p90,
        "p99" => p.p99,
        "p999" => p.p999,
        "max" => p.max,
        _ => p.mean,
    }
}

impl Slo {
    pub fn needs_e2e(&self) -> bool {
        self.objectives.iter().any(|o| o.metric == Metric::E2e)
    }

    /// The objectives that do not hold, as sentences; empty when all hold. A metric that
    /// was not measured (no e2e), or has nothing in it (ack and service count `ok`
    /// answers only: none when the stack acknowledged nothing), fails its objective.
    pub fn violations(
        &self,
        ack: &Percentiles,
        service: &Percentiles,
        e2e: Option<&Percentiles>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.objectives {
            let (name, p) = match o.metric {
                Metric::Ack => ("ack", Some(ack)),
                Metric::Service => ("service", Some(service)),
                Metric::E2e => ("e2e", e2e),
            };
            let Some(p) = p else {
                out.push(format!("{name} latency was not measured"));
                continue;
            };
            if p.count == 0 {
                out.push(format!(
                    "{name} latency has no ok answers to measure (nothing was acknowledged)"
                ));
                continue;
            }
            let v = stat(p, &o.stat);
            let ok = if o.inclusive {
                v <= o.limit_ms
            } else {
                v < o.limit_ms
            };
            if !ok {
                let op = if o.inclusive { "<=" } else { "<" };
                out.push(format!(
                    "{name}.{} = {v:.1} ms, wanted {op} {} ms",
                    o.stat, o.limit_ms
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let slo: Slo = "ack.p99<50ms, service.max<=1s".parse().unwrap();
        assert_eq!(slo.objectives.len(), 2);
        assert_eq!(slo.objectives[1].limit_ms, 1000.0);
        let mut ack = Percentiles {
            count: 10,
            p99: 49.9,
            ..Default::default()
        };
        let svc = Percentiles {
            count: 10,
            max: 1000.0,
            ..Default::default()
        };
        assert!(slo.violations(&ack, &svc, None).is_empty());
        ack.p99 = 50.0;
        assert_eq!(slo.violations(&ack, &svc, None).len(), 1);
        // Nothing acknowledged: zeros are no latency, the objective is not met.
        let none = Percentiles::default();
        let v = slo.violations(&none, &none, None);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("no ok answers"), "{v:?}");
        assert!("e2e.p99<1s"
            .parse::<Slo>()
            .unwrap()
            .violations(&ack, &svc, None)[0]
            .contains("not measured"));
        assert!("ack.p98<5ms"
            .parse::<Slo>()
            .unwrap_err()
            .contains("statistic"));
        assert!("latency<5ms"
            .parse::<Slo>()
            .unwrap_err()
            .contains("expected"));
        assert!("ack.p99>5ms".parse::<Slo>().is_err());
    }
}
