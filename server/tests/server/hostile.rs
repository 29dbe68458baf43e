//! Hostile clients and hostile input (issue: no input can cost an acknowledged message):
//! what the store cannot hold is refused before Kafka, deep pages are bounded, and the
//! API sheds load and cuts off slow clients instead of hanging. The real router and
//! accept loop, with the fakes of `support`.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use wiber_server::api::Limits;

use crate::support::*;

async fn api_with_limits(answer: Answer, limits: Limits) -> TestApi {
    TestApi::start_with(FakePublisher::new(answer), FakeReadStore::new(), move |s| {
        s.with_limits(limits)
    })
    .await
}

#[tokio::test]
async fn a_string_the_store_cannot_hold_is_refused_before_kafka_naming_the_field() {
    let api = TestApi::start(FakePublisher::new(Answer::Ack), FakeReadStore::new()).await;
    for content in ["a\u{0}b", "\u{0}", "end\u{0}"] {
        let (s, v) = post(
            &api,
            &json!({"fromUser": "alice", "toUser": "bob", "content": content}),
        )
        .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], "content", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("U+0000"),
            "the reason names the character: {v}"
        );
    }
    // Every other control character, noncharacters and astral ones are stored as sent.
    let (s, v) = post(
        &api,
        &json!({"fromUser": "alice", "toUser": "bob",
                "content": "\u{1}\u{7f}\u{9f}\u{fffe}\u{ffff}\u{fdd0}\u{1f600}\u{202e}\u{200b}"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        api.publisher.attempts(),
        1,
        "only the last one reached Kafka"
    );
}

#[tokio::test]
async fn deep_pages_are_refused_with_the_bound() {
    let api = TestApi::start(FakePublisher::new(Answer::Ack), FakeReadStore::new()).await;
    let (s, _) = get(&api, "/messages/alice/bob?skip=100000").await;
    assert_eq!(s, 200);
    for q in ["skip=100001", "offset=9223372036854775807"] {
        let (s, v) = get(&api, &format!("/messages/alice/bob?{q}")).await;
        assert_eq!(s, 422, "{q}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("100000"), "{v}");
    }
}

#[tokio::test]
async fn over_the_bound_requests_get_a_fast_503_with_retry_after_and_the_rest_are_served() {
    let limit = 4;
    let api = api_with_limits(
        Answer::Hold,
        Limits::new(limit, Duration::from_secs(30), Duration::from_secs(10)),
    )
    .await;
    // `limit` requests in service, held by the publisher.
    let mut held = Vec::new();
    for i in 0..limit {
        let url = api.url.clone();
        held.push(tokio::spawn(async move {
            http()
                .post(format!("{url}/messages"))
                .json(
                    &json!({"fromUser": "alice", "toUser": "bob", "content": format!("held {i}")}),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    while api.publisher.attempts() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ten times the bound more: each answered at once, 503 overloaded, Retry-After.
    let started = Instant::now();
    let mut shed = Vec::new();
    for _ in 0..10 * limit {
        let url = api.url.clone();
        shed.push(tokio::spawn(async move {
            let r = http()
                .post(format!("{url}/messages"))
                .json(&json!({"fromUser": "carol", "toUser": "dave", "content": "x"}))
                .send()
                .await
                .unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, retry_after, body["error"].clone())
        }));
    }
    for s in shed {
        let (status, retry_after, error) = s.await.unwrap();
        assert_eq!(status, 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(error, "overloaded");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shed, not queued: {:?}",
        started.elapsed()
    );
    assert_eq!(
        api.publisher.attempts(),
        limit,
        "nothing shed reached Kafka"
    );
    // Probes and metrics are served while overloaded.
    assert_eq!(get(&api, "/health/liveness").await.0, 200);
    let metrics = http()
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("wiber_http_shed_total {}", 10 * limit)),
        "{metrics}"
    );
    // The requests in service complete: goodput for them holds.
    for _ in 0..limit {
        api.publisher.release();
    }
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // And the bound frees up again.
    api.publisher.release();
    let (s, v) = post(
        &api,
        &json!({"fromUser": "alice", "toUser": "bob", "content": "after"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Sends `request` a byte every `gap` until the server closes the connection or
/// `give_up` passes: how long the server let it trickle.
fn trickle(
    addr: std::net::SocketAddr,
    request: &[u8],
    gap: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    for b in request.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if s.write_all(&[*b]).is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => return Some(started.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
        std::thread::sleep(gap);
    }
    None
}

#[tokio::test]
async fn a_client_that_sends_its_headers_a_byte_at_a_time_is_cut_off() {
    let api = api_with_limits(
        Answer::Ack,
        Limits::new(64, Duration::from_secs(30), Duration::from_millis(800)),
    )
    .await;
    let addr = api.addr;
    // Headers that never end (a slowloris), a byte every 100 ms.
    let cut = tokio::task::spawn_blocking(move || {
        trickle(
            addr,
            b"POST /messages HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    let cut = cut.expect("the server never closed the slow connection");
    assert!(
        cut >= Duration::from_millis(700) && cut < Duration::from_secs(4),
        "cut off after {cut:?}"
    );
    // Others are served meanwhile and after.
    assert_eq!(get(&api, "/health/liveness").await.0, 200);
}

#[tokio::test]
async fn a_body_trickled_in_past_the_request_timeout_is_a_408_and_never_reaches_kafka() {
    let api = api_with_limits(
        Answer::Ack,
        Limits::new(64, Duration::from_millis(1200), Duration::from_secs(10)),
    )
    .await;
    let addr = api.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"fromUser\"",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(api.publisher.attempts(), 0);
}
