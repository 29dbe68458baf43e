//! How a request reaches the API. The workers see only [`Transport`], so tests can put a
//! stalled or scripted endpoint behind it and the scheduler can be checked under paused
//! time; [`HttpTransport`] is the real one (reqwest, keep-alive, no redirects).

use std::future::Future;
use std::time::Duration;

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status, if the server answered.
    pub status: Option<u16>,
    /// Why there is no usable answer: `timeout`, `connect`, `transport`.
    pub error: Option<&'static str>,
    /// `timestamp` of a 2xx answer's body (ms since the epoch, the API's accept time).
    pub timestamp: Option<i64>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status: Some(status),
            error: None,
            timestamp: None,
        }
    }

    /// A 2xx answer whose body carried `timestamp`.
    pub fn acked(status: u16, timestamp: i64) -> Answer {
        Answer {
            timestamp: Some(timestamp),
            ..Answer::status(status)
        }
    }

    pub fn error(kind: &'static str) -> Answer {
        Answer {
            status: None,
            error: Some(kind),
            timestamp: None,
        }
    }

    /// The error kind for the summary, `None` for a 2xx.
    pub fn error_kind(&self) -> Option<String> {
        match (self.status, self.error) {
            (Some(s), _) if (200..300).contains(&s) => None,
            (Some(s), _) => Some(format!("http_{s}")),
            (None, Some(e)) => Some(e.to_string()),
            (None, None) => Some("transport".to_string()),
        }
    }
}

/// Sends one `POST /messages` with a JSON body.
pub trait Transport: Send + Sync + 'static {
    fn post(&self, body: Vec<u8>) -> impl Future<Output = Answer> + Send;
}

/// `POST {api}/messages` over reqwest's keep-alive pool.
#[derive(Clone)]
pub struct HttpTransport {
    /// Parsed once: parsing (with IDNA) per request was a few % of the generator's CPU.
    url: reqwest::Url,
    http: reqwest::Client,
}

impl HttpTransport {
    /// `connections` caps idle pooled connections; the worker's semaphore caps how many
    /// are in use at once, so the pool never grows past it.
    pub fn new(
        api_url: &str,
        timeout: Duration,
        connections: usize,
    ) -> anyhow::Result<HttpTransport> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpTransport {
            url: reqwest::Url::parse(&format!("{}/messages", api_url.trim_end_matches('/')))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "invalid --api-url {api_url:?}: {e} (expected e.g. http://127.0.0.1:8000)"
                    )
                })?,
            http,
        })
    }
}

impl HttpTransport {
    /// Checks that something answers HTTP at the API's address (any status will do).
    pub async fn preflight(&self) -> anyhow::Result<()> {
        let mut url = self.url.clone();
        url.set_path(&self.url.path().replace("/messages", "/health/liveness"));
        match self.http.get(url.clone()).send().await {
            Ok(_) => Ok(()),
            Err(e) => anyhow::bail!(
                "cannot reach the Wiber API at {url}: {} (is the stack up? try `wiberctl stack up`, or set --api-url / WIBER_API_URL)",
                classify(&e)
            ),
        }
    }
}

impl Transport for HttpTransport {
    async fn post(&self, body: Vec<u8>) -> Answer {
        let resp = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match resp {
            // Read the body to the end so the connection goes back to the pool.
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(body) if (200..300).contains(&status) => Answer {
                        timestamp: acked_timestamp(&body),
                        ..Answer::status(status)
                    },
                    Ok(_) => Answer::status(status),
                    Err(e) => Answer::error(classify(&e)),
                }
            }
            Err(e) => Answer::error(classify(&e)),
        }
    }
}

/// The `timestamp` of an ok answer's body (the stored message JSON); `None` when the body
/// is not such JSON. Only that field is deserialised: the others are skipped unparsed.
pub fn acked_timestamp(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Acked {
        timestamp: Option<i64>,
    }
    serde_json::from_slice::<Acked>(body).ok()?.timestamp
}

fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acked_timestamp_is_read_from_the_answer_body() {
        let body = br#"{"messageId":"r1-c0-s000000001","fromUser":"a","toUser":"b",
            "content":"r1:0:1|x \"timestamp\": 5","timestamp":1700000000123,
            "createdAt":"2023-11-14T22:13:20.123Z"}"#;
        assert_eq!(acked_timestamp(body), Some(1_700_000_000_123));
        assert_eq!(acked_timestamp(b"{}"), None);
        assert_eq!(acked_timestamp(b"not json"), None);
        assert_eq!(acked_timestamp(br#"{"timestamp":"soon"}"#), None);
        let a = Answer::acked(200, 7);
        assert_eq!((a.timestamp, a.error_kind()), (Some(7), None));
    }
}
