//! The API's Prometheus text (`GET /metrics`), read for `top`: the request counter and
//! the request-duration histogram, and rates and quantiles from the *difference* of two
//! scrapes, so the numbers describe the last interval, not the API's whole life.
//!
//! Names as the server registers them (`server/src/api/metrics.rs`):
//! `wiber_http_requests_total{method,route,status}` and
//! `wiber_http_request_duration_seconds{method,route}` (a histogram: `_bucket{le}`,
//! `_sum`, `_count`).

use std::collections::BTreeMap;

use serde::Serialize;

pub const REQUESTS: &str = "wiber_http_requests_total";
pub const DURATION_BUCKET: &str = "wiber_http_request_duration_seconds_bucket";

/// The route that acknowledges a message: it answers only once Kafka has it (acks=all),
/// so its latency is the ack latency a client sees.
pub const SEND_METHOD: &str = "POST";
pub const SEND_ROUTE: &str = "/messages";

/// Routes that are not traffic: our own scrapes and health probes would otherwise show
/// as load on an idle stack.
const NOT_TRAFFIC: &[&str] = &["/metrics", "/health/liveness", "/health/readiness"];

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A line that is not a sample line, with its number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics text is not a Prometheus sample: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses the text exposition format (version 0.0.4). Comments and blank lines are
/// skipped; an optional timestamp after the value is ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(body).map_err(|r| err(&r))?;
            labels = parsed;
            rest = after;
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| err("no value"))?;
        let value = parse_value(value).ok_or_else(|| err(&format!("bad value {value:?}")))?;
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// `a="x",b="y\"z"}` → the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("a label without '='")?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (j, c) in chars {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, c) => value.push(c),
                (false, '\\') => {
                    escaped = true;
                    continue;
                }
                (false, '"') => {
                    end = Some(eq + 1 + j + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
            escaped = false;
        }
        let end = end.ok_or_else(|| format!("label {key} has an unterminated value"))?;
        labels.insert(key, value);
        s = &s[end..];
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// What `top` reads from one scrape of one API instance: cumulative counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiCounters {
    /// Requests by (method, route, status).
    pub requests: BTreeMap<(String, String, u16), f64>,
    /// The ack latency histogram (POST /messages): cumulative count per upper bound in
    /// seconds, ascending, `+Inf` last.
    pub ack_buckets: Vec<(f64, f64)>,
}

impl ApiCounters {
    pub fn from_text(text: &str) -> Result<ApiCounters, ParseError> {
        Ok(ApiCounters::from_samples(&parse(text)?))
    }

    pub fn from_samples(samples: &[Sample]) -> ApiCounters {
        let mut c = ApiCounters::default();
        for s in samples {
            let label = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or("");
            if s.name == REQUESTS {
                let status = label("status").parse().unwrap_or(0);
                *c.requests
                    .entry((label("method").into(), label("route").into(), status))
                    .or_default() += s.value;
            } else if s.name == DURATION_BUCKET
                && label("method") == SEND_METHOD
                && label("route") == SEND_ROUTE
            {
                if let Some(le) = s.labels.get("le").and_then(|v| parse_value(v)) {
                    c.ack_buckets.push((le, s.value));
                }
            }
        }
        c.ack_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    }
}

/// What happened between two scrapes (or over several API instances, summed).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiDelta {
    /// Requests other than metrics scrapes and health probes.
    pub requests: f64,
    /// POST /messages answered 2xx: messages Kafka acknowledged.
    pub acked: f64,
    /// Answers 4xx (refused input: validation, size, content type).
    pub client_errors: f64,
    /// Answers 5xx (the stack failed: Kafka unavailable, timeouts).
    pub server_errors: f64,
    /// Ack latency histogram of the interval: (upper bound s, cumulative count).
    #[serde(skip)]
    pub ack_buckets: Vec<(f64, f64)>,
}

/// The increase of a counter; a counter that went down was reset (the API restarted),
/// so all of its current value is new, as Prometheus' `increase()` counts it.
fn increase(prev: Option<f64>, cur: f64) -> f64 {
    match prev {
        Some(p) if cur >= p => cur - p,
        _ => cur,
    }
}

impl ApiDelta {
    /// The difference `cur - prev` of one instance's counters.
    pub fn between(prev: &ApiCounters, cur: &ApiCounters) -> ApiDelta {
        let mut d = ApiDelta::default();
        // A reset anywhere means the process restarted: take the new counters whole.
        let reset = cur
            .requests
            .iter()
            .any(|(k, v)| prev.requests.get(k).is_some_and(|p| v < p));
        for (key, &v) in &cur.requests {
            let inc = if reset {
                v
            } else {
                increase(prev.requests.get(key).copied(), v)
            };
            let (method, route, status) = (key.0.as_str(), key.1.as_str(), key.2);
            if !NOT_TRAFFIC.contains(&route) {
                d.requests += inc;
            }
            match status {
                200..=299 if method == SEND_METHOD && route == SEND_ROUTE => d.acked += inc,
                400..=499 => d.client_errors += inc,
                500..=599 => d.server_errors += inc,
                _ => {}
            }
        }
        let prev_buckets: BTreeMap<u64, f64> = prev
            .ack_buckets
            .iter()
            .map(|(le, n)| (le.to_bits(), *n))
            .collect();
        d.ack_buckets = cur
            .ack_buckets
            .iter()
            .map(|&(le, n)| {
                let p = if reset {
                    None
                } else {
                    prev_buckets.get(&le.to_bits()).copied()
                };
                (le, increase(p, n))
            })
            .collect();
        d
    }

    /// Adds another instance's interval (same bucket bounds: same server build).
    pub fn add(&mut self, other: &ApiDelta) {
        self.requests += other.requests;
        self.acked += other.acked;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        for &(le, n) in &other.ack_buckets {
            match self
                .ack_buckets
                .iter_mut()
                .find(|(l, _)| l.to_bits() == le.to_bits())
            {
                Some(b) => b.1 += n,
                None => self.ack_buckets.push((le, n)),
            }
        }
        self.ack_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// The `q` quantile (0..=1) of a cumulative histogram, in the histogram's unit, the way
/// PromQL's `histogram_quantile` estimates it: find the bucket holding the rank and
/// interpolate linearly inside it (from 0 for the first bucket). A rank in the `+Inf`
/// bucket reads as the highest finite bound (a lower bound of the truth). `None` when the
/// histogram is empty.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    // Also rejects NaN: a histogram that counts nothing has no quantile.
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = (0.0, 0.0); // (bound, cumulative count) of the bucket below
    for &(le, cum) in buckets {
        if cum >= rank && cum > lower.1 {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = (rank - lower.1) / (cum - lower.1);
            return Some(lower.0 + (le - lower.0) * inside);
        }
        lower = (le, cum);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE_1: &str = r#"# HELP wiber_http_requests_total HTTP requests by route and status
# TYPE wiber_http_requests_total counter
wiber_http_requests_total{method="GET",route="/metrics",status="200"} 7
wiber_http_requests_total{method="POST",route="/messages",status="200"} 100
wiber_http_requests_total{method="POST",route="/messages",status="422"} 2
# HELP wiber_http_request_duration_seconds HTTP request latency
# TYPE wiber_http_request_duration_seconds histogram
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.005"} 50
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.01"} 90
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.02"} 102
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="+Inf"} 102
wiber_http_request_duration_seconds_sum{method="POST",route="/messages"} 0.9
wiber_http_request_duration_seconds_count{method="POST",route="/messages"} 102
wiber_http_request_duration_seconds_bucket{method="GET",route="/metrics",le="+Inf"} 7
"#;

    /// One interval later: 100 more acks (all slow), one 503, 1 more scrape.
    const SCRAPE_2: &str = r#"wiber_http_requests_total{method="GET",route="/metrics",status="200"} 8
wiber_http_requests_total{method="POST",route="/messages",status="200"} 200
wiber_http_requests_total{method="POST",route="/messages",status="422"} 2
wiber_http_requests_total{method="POST",route="/messages",status="503"} 1
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.005"} 50
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.01"} 90
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="0.02"} 152
wiber_http_request_duration_seconds_bucket{method="POST",route="/messages",le="+Inf"} 203
"#;

    #[test]
    fn sample_lines_parse_with_escapes_and_timestamps() {
        let s = parse(
            "# TYPE x counter\n\nx 1\ny{a=\"q\\\"u\\\\o\\nte\",b=\"2\"} 3.5 1700000000\nz{} +Inf\n",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x");
        assert_eq!(s[0].value, 1.0);
        assert_eq!(s[1].labels["a"], "q\"u\\o\nte");
        assert_eq!(s[1].labels["b"], "2");
        assert_eq!(s[1].value, 3.5);
        assert!(s[2].value.is_infinite());
        let e = parse("ok 1\nbroken{a=\"x} 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("novalue\n").is_err());
        assert!(parse("n abc\n").is_err());
    }

    #[test]
    fn counters_pick_the_send_route() {
        let c = ApiCounters::from_text(SCRAPE_1).unwrap();
        assert_eq!(c.requests.len(), 3);
        assert_eq!(
            c.ack_buckets,
            vec![
                (0.005, 50.0),
                (0.01, 90.0),
                (0.02, 102.0),
                (f64::INFINITY, 102.0)
            ]
        );
    }

    #[test]
    fn deltas_exclude_scrapes_and_split_errors() {
        let (a, b) = (
            ApiCounters::from_text(SCRAPE_1).unwrap(),
            ApiCounters::from_text(SCRAPE_2).unwrap(),
        );
        let d = ApiDelta::between(&a, &b);
        assert_eq!(d.requests, 101.0, "the /metrics scrape is not traffic");
        assert_eq!(d.acked, 100.0);
        assert_eq!(d.client_errors, 0.0);
        assert_eq!(d.server_errors, 1.0);
        // The interval's histogram: 50 in (0.01, 0.02], 51 above 0.02.
        assert_eq!(
            d.ack_buckets,
            vec![
                (0.005, 0.0),
                (0.01, 0.0),
                (0.02, 50.0),
                (f64::INFINITY, 101.0)
            ]
        );
        // Over the API's whole life p50 is fast; over the interval it is not.
        let p50_life = quantile(0.5, &b.ack_buckets).unwrap();
        let p50_now = quantile(0.5, &d.ack_buckets).unwrap();
        assert!(p50_life < 0.02 && p50_now >= 0.02, "{p50_life} {p50_now}");
    }

    #[test]
    fn a_restarted_api_counts_from_zero() {
        let a = ApiCounters::from_text(SCRAPE_2).unwrap();
        let b = ApiCounters::from_text(
            "wiber_http_requests_total{method=\"POST\",route=\"/messages\",status=\"200\"} 5\n",
        )
        .unwrap();
        let d = ApiDelta::between(&a, &b);
        assert_eq!((d.requests, d.acked), (5.0, 5.0));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = [(0.01, 0.0), (0.02, 100.0), (f64::INFINITY, 100.0)];
        // Rank 50 of 100 lies halfway through (0.01, 0.02].
        assert!((quantile(0.5, &h).unwrap() - 0.015).abs() < 1e-12);
        assert!((quantile(0.99, &h).unwrap() - 0.0199).abs() < 1e-12);
        // First bucket interpolates from 0.
        let h = [(0.1, 10.0), (f64::INFINITY, 10.0)];
        assert!((quantile(0.5, &h).unwrap() - 0.05).abs() < 1e-12);
        // A rank beyond the last finite bound reads as that bound.
        let h = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &h), Some(0.1));
        // Empty: no answer rather than 0.
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn instances_add_up() {
        let mut a = ApiDelta {
            requests: 1.0,
            acked: 1.0,
            ack_buckets: vec![(0.01, 1.0), (f64::INFINITY, 1.0)],
            ..ApiDelta::default()
        };
        let b = ApiDelta {
            requests: 2.0,
            server_errors: 1.0,
            ack_buckets: vec![(0.01, 0.0), (f64::INFINITY, 2.0)],
            ..ApiDelta::default()
        };
        a.add(&b);
        assert_eq!((a.requests, a.acked, a.server_errors), (3.0, 1.0, 1.0));
        assert_eq!(a.ack_buckets, vec![(0.01, 1.0), (f64::INFINITY, 3.0)]);
    }
}
