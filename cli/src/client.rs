//! HTTP adapter: the only module that touches reqwest. It speaks the API contract and
//! turns transport failures into errors that name the URL and suggest the fix.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wiber_model::{Message, NewMessage};

/// Default API address, overridable by `--api-url` or `WIBER_API_URL`.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8000";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Wiber API at {url}: {reason} (is the stack up? try `wiberctl stack up`, or set --api-url / WIBER_API_URL)")]
    Unreachable { url: String, reason: String },
    #[error("the API answered {status} for {what}: {detail}")]
    Status {
        what: String,
        status: u16,
        /// The API's `error` kind, e.g. `validation_failed`.
        kind: Option<String>,
        field: Option<String>,
        detail: String,
    },
    #[error("the API's answer to {what} is not what the contract says: {reason}")]
    Protocol { what: String, reason: String },
}

impl ClientError {
    /// The HTTP status the API answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `GET /messages/count` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    pub count: u64,
    pub user1: Option<String>,
    pub user2: Option<String>,
}

/// `GET /health/readiness` answer (200 or 503, same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    pub status: String,
    pub kafka: String,
    pub mongodb: String,
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<ApiClient> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /messages`; returns once Kafka acknowledged the message.
    pub async fn send(&self, msg: &NewMessage) -> Result<Message, ClientError> {
        let url = format!("{}/messages", self.base);
        let resp = self.http.post(&url).json(msg).send().await;
        self.decode("POST /messages", &url, resp).await
    }

    pub async fn conversation(
        &self,
        a: &str,
        b: &str,
        limit: u32,
        skip: u64,
    ) -> Result<Vec<Message>, ClientError> {
        let url = format!(
            "{}/messages/{}/{}",
            self.base,
            path_segment(a),
            path_segment(b)
        );
        let resp = self
            .http
            .get(&url)
            .query(&[("limit", limit.to_string()), ("skip", skip.to_string())])
            .send()
            .await;
        self.decode("GET /messages/{user1}/{user2}", &url, resp)
            .await
    }

    pub async fn user_messages(&self, user: &str, limit: u32) -> Result<Vec<Message>, ClientError> {
        let url = format!("{}/messages/user/{}", self.base, path_segment(user));
        let resp = self.http.get(&url).query(&[("limit", limit)]).send().await;
        self.decode("GET /messages/user/{username}", &url, resp)
            .await
    }

    pub async fn count(
        &self,
        user1: Option<&str>,
        user2: Option<&str>,
    ) -> Result<Count, ClientError> {
        let url = format!("{}/messages/count", self.base);
        let mut q = Vec::new();
        if let Some(u) = user1 {
            q.push(("user1", u));
        }
        if let Some(u) = user2 {
            q.push(("user2", u));
        }
        let resp = self.http.get(&url).query(&q).send().await;
        self.decode("GET /messages/count", &url, resp).await
    }

    /// Readiness; a 503 is an answer here (not an error): it names the failing part.
    pub async fn readiness(&self) -> Result<(u16, Readiness), ClientError> {
        let url = format!("{}/health/readiness", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let status = resp.status().as_u16();
        let body: Readiness = resp.json().await.map_err(|e| ClientError::Protocol {
            what: "GET /health/readiness".into(),
            reason: e.to_string(),
        })?;
        Ok((status, body))
    }

    /// `GET /metrics`: the API's Prometheus text, unparsed (the reader picks its series).
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let what = "GET /metrics";
        let url = format!("{}/metrics", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Protocol {
            what: what.into(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(ClientError::Status {
                what: what.into(),
                status: status.as_u16(),
                kind: None,
                field: None,
                detail: text.chars().take(300).collect(),
            });
        }
        Ok(text)
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        resp: reqwest::Result<reqwest::Response>,
    ) -> Result<T, ClientError> {
        let resp = resp.map_err(|e| unreachable(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| ClientError::Protocol {
                what: what.into(),
                reason: e.to_string(),
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Err(ClientError::Status {
            what: what.into(),
            status: status.as_u16(),
            kind: body["error"].as_str().map(str::to_string),
            field: body["field"].as_str().map(str::to_string),
            detail: body["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect()),
        })
    }
}

fn unreachable(url: &str, e: reqwest::Error) -> ClientError {
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or failed".to_string()
    } else {
        e.to_string()
    };
    ClientError::Unreachable {
        url: url.to_string(),
        reason,
    }
}

/// Percent-encodes a user name for use as one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(super::path_segment("alice"), "alice");
        assert_eq!(super::path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(super::path_segment("é"), "%C3%A9");
    }
}
