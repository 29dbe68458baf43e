//! How a request reaches the API. The workers see only [`Transport`], so tests can put a
//! stalled or scripted endpoint behind it and the scheduler can be checked under paused
//! time; [`HttpTransport`] is the real one.
//!
//! [`HttpTransport`] speaks HTTP/1.1 through hyper's connection API directly, as oha does:
//! a stack of idle keep-alive connections per thread, one taken per request and put back
//! once its answer was read. Per thread, because a connection is driven by a task of the
//! runtime that opened it: the workers' threads each run a runtime of their own, and a
//! connection handed across would wake the other thread for every request. A general-purpose client (reqwest, hyper-util's pool) spent about as
//! much CPU per request as everything else the generator does: URL and header handling,
//! a pool keyed by host, a timer per request for its own timeout and another for
//! idle-connection reaping. The workers' in-flight slots already bound how many
//! connections are in use, so the stack never grows past the slots' peak.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status, if the server answered.
    pub status: Option<u16>,
    /// Why there is no usable answer: `timeout`, `connect`, `transport`.
    pub error: Option<&'static str>,
    /// `timestamp` of a 2xx answer's body (ms since the epoch, the API's accept time).
    pub timestamp: Option<i64>,
    /// Where Kafka put the record: the 2xx answer's `wiber-partition`/`wiber-offset`.
    pub position: Option<(i32, i64)>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status: Some(status),
            error: None,
            timestamp: None,
            position: None,
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
            position: None,
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

/// Sends one `POST /messages` with a JSON body (the body is [`Bytes`] so that a retry
/// re-sends it without a copy), or one read.
pub trait Transport: Send + Sync + 'static {
    fn post(&self, body: Bytes) -> impl Future<Output = Answer> + Send;
    /// `GET` of `path` below the API's `/messages` (`/a/b?limit=50&skip=0`, `/count`):
    /// the reads mixed into the load. Only the status counts; the body is read and
    /// dropped.
    fn get(&self, path: String) -> impl Future<Output = Answer> + Send;
}

/// `POST {api}/messages` over HTTP/1.1 keep-alive connections of its own.
pub struct HttpTransport {
    /// `host:port` to connect to.
    addr: String,
    host: HeaderValue,
    /// Origin-form target (`/messages`, after the API's base path), parsed once.
    path: Uri,
    /// The same, as text: reads append their own path to it.
    messages: String,
    /// Whole attempt: connecting (if needed), sending and reading the answer.
    timeout: Duration,
    connect_timeout: Duration,
    /// Tags this transport's connections in the per-thread [`IDLE`] lists.
    id: u64,
    /// The liveness URL, for [`HttpTransport::preflight`] only.
    liveness: reqwest::Url,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

type Conn = SendRequest<Full<Bytes>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Idle connections of this thread, by transport id, most recently used last (the
    /// warmest socket goes first). They close with the thread's runtime.
    static IDLE: RefCell<Vec<(u64, Conn)>> = const { RefCell::new(Vec::new()) };
}

impl HttpTransport {
    pub fn new(api_url: &str, timeout: Duration) -> anyhow::Result<HttpTransport> {
        let invalid = |why: String| {
            anyhow::anyhow!(
                "invalid --api-url {api_url:?}: {why} (expected e.g. http://127.0.0.1:8000)"
            )
        };
        let base = api_url.trim_end_matches('/');
        let url =
            reqwest::Url::parse(&format!("{base}/messages")).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "http" {
            // The API is served without TLS, and the bench measures the API, not TLS.
            return Err(invalid(format!(
                "scheme {} is not supported, only http",
                url.scheme()
            )));
        }
        let host = url.host_str().ok_or_else(|| invalid("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let mut liveness = url.clone();
        liveness.set_path(&url.path().replace("/messages", "/health/liveness"));
        Ok(HttpTransport {
            addr: format!("{host}:{port}"),
            host: HeaderValue::from_str(&host_header).map_err(|e| invalid(e.to_string()))?,
            path: url
                .path()
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?,
            messages: url.path().to_string(),
            timeout,
            connect_timeout: Duration::from_secs(3).min(timeout),
            id: NEXT_ID.fetch_add(1, Relaxed),
            liveness,
        })
    }

    /// Checks that something answers HTTP at the API's address (any status will do).
    pub async fn preflight(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        match http.get(self.liveness.clone()).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                anyhow::bail!(
                    "cannot reach the Wiber API at {}: {why} (is the stack up? try `wiberctl stack up`, or set --api-url / WIBER_API_URL)",
                    self.liveness
                )
            }
        }
    }

    /// One attempt, without the overall timeout; `ack`: read the acknowledged
    /// `timestamp` from a 2xx body (a write's answer).
    async fn exchange(&self, req: Request<Full<Bytes>>, ack: bool) -> Answer {
        let mut req = Some(req);
        // A pooled connection the server closed while it was idle fails before the
        // request is written; hyper hands the request back and it goes on a fresh
        // connection (never a duplicate: nothing was sent).
        for _ in 0..2 {
            let mut conn = match self.checkout().await {
                Ok(c) => c,
                Err(kind) => return Answer::error(kind),
            };
            let resp = match conn
                .try_send_request(req.take().expect("one request per try"))
                .await
            {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    Some(back) if conn.is_closed() => {
                        req = Some(back);
                        continue;
                    }
                    _ => return Answer::error("transport"),
                },
            };
            let status = resp.status().as_u16();
            let position = ack.then(|| kafka_position(resp.headers())).flatten();
            // Read the body to the end so the connection can carry the next request.
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Answer::error("transport"),
            };
            self.checkin(conn);
            return if ack && (200..300).contains(&status) {
                Answer {
                    timestamp: acked_timestamp(&body),
                    position,
                    ..Answer::status(status)
                }
            } else {
                Answer::status(status)
            };
        }
        Answer::error("transport")
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, JSON);
        req
    }

    /// `GET {messages}{path}`; `None` when `path` does not make a URI (the reads'
    /// paths are percent-encoded, so this is a bug, reported as a transport error).
    fn read_request(&self, path: &str) -> Option<Request<Full<Bytes>>> {
        let uri: Uri = format!("{}{path}", self.messages).parse().ok()?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        req.headers_mut().insert(HOST, self.host.clone());
        Some(req)
    }

    /// An idle connection ready for a request, or a new one.
    async fn checkout(&self) -> Result<Conn, &'static str> {
        loop {
            let conn = IDLE.with_borrow_mut(|idle| {
                let at = idle.iter().rposition(|(id, _)| *id == self.id)?;
                Some(idle.swap_remove(at).1)
            });
            match conn {
                Some(mut c) if !c.is_closed() => {
                    if c.ready().await.is_ok() {
                        return Ok(c);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let connect = async {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|_| "connect")?;
            // Small requests and answers: do not let Nagle hold them back.
            tcp.set_nodelay(true).map_err(|_| "connect")?;
            let (send, conn) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|_| "connect")?;
            tokio::spawn(async move {
                // Ends when the server closes the connection or the sender is dropped.
                let _ = conn.await;
            });
            Ok(send)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or(Err("connect"))
    }

    fn checkin(&self, conn: Conn) {
        if !conn.is_closed() {
            IDLE.with_borrow_mut(|idle| idle.push((self.id, conn)));
        }
    }
}

impl Transport for HttpTransport {
    async fn post(&self, body: Bytes) -> Answer {
        // An attempt that times out drops its connection with it: what is on that socket
        // is unknown, so it must not carry another request.
        tokio::time::timeout(self.timeout, self.exchange(self.request(body), true))
            .await
            .unwrap_or_else(|_| Answer::error("timeout"))
    }

    async fn get(&self, path: String) -> Answer {
        let Some(req) = self.read_request(&path) else {
            return Answer::error("transport");
        };
        // A read's body is a page or a count, not an acknowledgement: not parsed.
        tokio::time::timeout(self.timeout, self.exchange(req, false))
            .await
            .unwrap_or_else(|_| Answer::error("timeout"))
    }
}

/// The `timestamp` of an ok answer's body (the stored message JSON); `None` when the body
/// is not such JSON. Only that field is deserialised: the others are skipped unparsed.
/// The partition and offset the API's answer names (absent from APIs before it did).
pub fn kafka_position(h: &hyper::HeaderMap) -> Option<(i32, i64)> {
    use wiber_model::contract::headers;
    let num = |name: &str| h.get(name)?.to_str().ok()?.parse::<i64>().ok();
    Some((
        i32::try_from(num(headers::PARTITION)?).ok()?,
        num(headers::OFFSET)?,
    ))
}

pub fn acked_timestamp(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Acked {
        timestamp: Option<i64>,
    }
    serde_json::from_slice::<Acked>(body).ok()?.timestamp
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
