//! Readiness probes that need no client library: a TCP connect, a one-request Kafka
//! `ApiVersions` exchange, and a minimal HTTP/1.1 GET.
//!
//! Why hand-rolled: `wiberctl` must be able to wait for the stack without linking a Kafka
//! client, and the HTTP check must work before (and independently of) the server's code.
//! Every probe is bounded by a timeout; callers loop over them with their own deadline.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// True if something accepts TCP connections on `addr` (e.g. `127.0.0.1:27017`).
pub async fn tcp_accepts(addr: &str) -> bool {
    matches!(
        timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Sends a Kafka `ApiVersions` v0 request and checks the answer. A broker only serves
/// requests on its client listener once start-up is complete, so an answer with
/// error_code 0 means "ready for clients"; a port that merely accepts does not.
pub async fn kafka_api_versions(addr: &str) -> Result<()> {
    const CORRELATION_ID: i32 = 0x5769_6265; // "Wibe"
    let mut stream = timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to Kafka at {addr} timed out"))?
        .with_context(|| format!("connecting to Kafka at {addr}"))?;
    let client_id = b"wiberctl-probe";
    // Request header v1: api_key (18 = ApiVersions), api_version (0), correlation_id,
    // client_id (int16 length + bytes). The v0 body is empty.
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);

    let exchange = async {
        stream.write_all(&frame).await?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = i32::from_be_bytes(len);
        if !(6..=1 << 20).contains(&len) {
            bail!("Kafka at {addr} answered with a frame of {len} bytes: not a Kafka broker?");
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok(body)
    };
    let body = timeout(Duration::from_secs(3), exchange)
        .await
        .with_context(|| format!("Kafka at {addr} did not answer ApiVersions within 3 s"))??;
    let correlation = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let error_code = i16::from_be_bytes([body[4], body[5]]);
    if correlation != CORRELATION_ID {
        bail!("Kafka at {addr} answered ApiVersions with a foreign correlation id {correlation}");
    }
    if error_code != 0 {
        bail!("Kafka at {addr} answered ApiVersions with error code {error_code}");
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET of `path` on `addr` (`host:port`). Returns the status code and
/// the body (`Connection: close`, so the body is whatever follows the headers; chunked
/// encoding is not decoded, which is fine for probes).
pub async fn http_get(addr: &str, path: &str, limit: Duration) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        // Bounded: at most 1 MiB is read.
        (&mut stream).take(1 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = timeout(limit, exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out after {limit:?}"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: not an HTTP answer: {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
