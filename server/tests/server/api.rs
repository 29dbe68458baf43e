//! The HTTP contract (ARCHITECTURE.md, "HTTP API"), served by the real router with a
//! fake publisher and a fake store: what reaches Kafka, when the client hears back, and
//! what the reads ask of the store.

use std::time::Duration;

use serde_json::{json, Value};
use wiber_model::{conversation_key, rfc3339_ms, Message};
use wiber_server::api::CountScope;

use crate::support::*;

fn ok_body() -> Value {
    json!({"fromUser": "alice", "toUser": "bob", "content": "Hello!"})
}

async fn api() -> TestApi {
    TestApi::start(FakePublisher::new(Answer::Ack), FakeReadStore::new()).await
}

#[tokio::test]
async fn post_answers_200_only_after_the_publisher_acks_and_echoes_the_message() {
    let api = TestApi::start(FakePublisher::new(Answer::Hold), FakeReadStore::new()).await;
    let before = wiber_model::now_ms();
    let url = api.url.clone();
    let pending = tokio::spawn(async move {
        http()
            .post(format!("{url}/messages"))
            .header("x-request-id", "req-1")
            .json(&ok_body())
            .send()
            .await
            .unwrap()
    });
    api.publisher.called.notified().await;
    // The publish is in flight and not acknowledged: no answer yet, whatever the wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "answered before Kafka acknowledged");
    assert!(api.publisher.produced().is_empty());
    api.publisher.release();
    let r = pending.await.unwrap();
    let after = wiber_model::now_ms();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-1");
    let body: Value = r.json().await.unwrap();

    let produced = api.publisher.produced();
    assert_eq!(produced.len(), 1);
    let p = &produced[0];
    // The answer is the message that went to Kafka, byte for byte as JSON.
    assert_eq!(body, p.payload);
    assert_eq!(p.topic, TOPIC);
    assert_eq!(p.key, conversation_key("alice", "bob"));
    let m: Message = serde_json::from_value(body).unwrap();
    assert_eq!(p.correlation_id, m.message_id);
    assert!(m.message_id.starts_with("msg_"), "{}", m.message_id);
    assert_eq!(
        (m.from_user.as_str(), m.to_user.as_str(), m.content.as_str()),
        ("alice", "bob", "Hello!")
    );
    assert!((before..=after).contains(&m.timestamp), "{}", m.timestamp);
    assert_eq!(m.created_at, rfc3339_ms(m.timestamp));
    api.stop().await.unwrap();
}

#[tokio::test]
async fn a_publish_failure_is_a_503_and_nothing_is_produced() {
    for (kind, detail) in [
        ("timeout", "did not acknowledge"),
        ("rejected", "rejected"),
        ("brokers_down", "brokers are down"),
    ] {
        let api =
            TestApi::start(FakePublisher::new(Answer::Fail(kind)), FakeReadStore::new()).await;
        let (s, v) = post(&api, &ok_body()).await;
        assert_eq!(s, 503, "{kind}: {v}");
        assert_eq!(v["error"], "kafka_unavailable", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(detail),
            "{kind}: {v}"
        );
        assert_eq!(api.publisher.attempts(), 1);
        assert!(api.publisher.produced().is_empty());
        // Counted by kind, for the dashboards.
        let metrics = http()
            .get(format!("{}/metrics", api.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!("wiber_kafka_produce_errors_total{{kind=\"{kind}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn bad_input_gets_its_status_and_never_reaches_the_publisher() {
    let api = api().await;
    let with = |k: &str, v: Value| {
        let mut o = ok_body();
        o[k] = v;
        o
    };
    let send = |ct: Option<&'static str>, body: String| {
        let url = format!("{}/messages", api.url);
        async move {
            let mut req = http().post(url).body(body);
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let r = req.send().await.unwrap();
            let close = r
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            (r.status().as_u16(), r.json::<Value>().await.unwrap(), close)
        }
    };

    // Malformed JSON: 400.
    let (s, v, _) = send(Some("application/json"), "{\"fromUser\": ".into()).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );

    // Wrong or missing content type: 415, answered before the body is read, so the
    // connection must say close.
    for ct in [Some("text/plain"), None, Some("application/xml")] {
        let (s, v, close) = send(ct, ok_body().to_string()).await;
        assert_eq!(
            (s, v["error"].as_str(), close),
            (415, Some("unsupported_media_type"), true),
            "{ct:?}: {v}"
        );
    }

    // Over 64 KiB by its declared length: 413 before the body is read, Connection: close.
    let head = format!(
        "POST /messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        64 * 1024 + 1
    );
    let r = raw(api.addr, head.into_bytes()).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"], "payload_too_large", "{r:?}");
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close")
    );

    // Over 64 KiB without a declared length (chunked): 413 once the limit is crossed.
    let big = with("content", json!("x".repeat(64 * 1024))).to_string();
    let mut req = b"POST /messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    req.extend(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).into_bytes());
    let r = raw(api.addr, req).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["error"], "payload_too_large", "{r:?}");

    // Validation: 422 naming the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"toUser": "bob", "content": "c"}), "fromUser"),
        (with("toUser", json!(null)), "toUser"),
        (with("fromUser", json!("")), "fromUser"),
        (with("fromUser", json!("x".repeat(51))), "fromUser"),
        (with("toUser", json!("bo\u{7}b")), "toUser"),
        (with("content", json!("")), "content"),
        (with("content", json!("x".repeat(5001))), "content"),
        (with("content", json!(42)), "content"),
        (with("messageId", json!("has space")), "messageId"),
        (with("messageId", json!(7)), "messageId"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let (s, v) = post(&api, &body).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"], "validation_failed", "{v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }

    assert_eq!(
        api.publisher.attempts(),
        0,
        "bad input reached the publisher"
    );
    // And the same server still takes good input, including +json types and limits
    // counted in characters.
    let (s, _, _) = send(
        Some("application/vnd.wiber+json; charset=utf-8"),
        with("content", json!("€".repeat(5000))).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api.publisher.produced().len(), 1);
}

#[tokio::test]
async fn idempotency_keys_name_the_message_and_retries_keep_it() {
    let api = api().await;
    let url = format!("{}/messages", api.url);
    let post_keyed = |key: &'static str, body: Value| {
        let url = url.clone();
        async move {
            let r = http()
                .post(url)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // The header alone names the message.
    let (s, v) = post_keyed("key-1", ok_body()).await;
    assert_eq!((s, v["messageId"].as_str()), (200, Some("key-1")), "{v}");
    // Header and body agreeing is fine.
    let mut with_id = ok_body();
    with_id["messageId"] = json!("key-2");
    let (s, v) = post_keyed("key-2", with_id.clone()).await;
    assert_eq!((s, v["messageId"].as_str()), (200, Some("key-2")), "{v}");
    let produced_before = api.publisher.attempts();
    // Disagreeing, or a key that is not a valid id: 422 naming the header, not published.
    let (s, v) = post_keyed("key-3", with_id).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{v}"
    );
    let (s, v) = post_keyed("has space", ok_body()).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{v}"
    );
    assert_eq!(api.publisher.attempts(), produced_before);

    // A client retry with the same messageId is published again under that id (the
    // consumer's unique `_id` makes it one document), and answered alike.
    let mut retry = ok_body();
    retry["messageId"] = json!("client-7");
    let (s1, v1) = post(&api, &retry).await;
    let (s2, v2) = post(&api, &retry).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(v1["messageId"], "client-7");
    assert_eq!(v2["messageId"], "client-7");
    let ids: Vec<String> = api
        .publisher
        .produced()
        .iter()
        .map(|p| p.payload["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["key-1", "key-2", "client-7", "client-7"]);
    assert!(api
        .publisher
        .produced()
        .iter()
        .all(|p| p.correlation_id == p.payload["messageId"]));
}

fn stored(id: &str, timestamp: i64) -> Message {
    Message {
        message_id: id.into(),
        from_user: "alice".into(),
        to_user: "bob".into(),
        content: format!("message {id}"),
        timestamp,
        created_at: rfc3339_ms(timestamp),
    }
}

#[tokio::test]
async fn conversation_reads_pass_the_users_limit_and_skip_to_the_store() {
    let api = api().await;
    *api.store.messages.lock().unwrap() = vec![stored("a", 1), stored("b", 2)];
    let (s, v) = get(&api, "/messages/alice/bob").await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        serde_json::to_value(vec![stored("a", 1), stored("b", 2)]).unwrap()
    );
    assert_eq!(
        get(&api, "/messages/bob/alice?limit=500&skip=7").await.0,
        200
    );
    assert_eq!(
        get(&api, "/messages/bob/alice?limit=1&offset=3").await.0,
        200
    );
    let conv = |a: &str, b: &str, limit, skip| Query::Conversation {
        a: a.into(),
        b: b.into(),
        limit,
        skip,
    };
    assert_eq!(
        api.store.queries(),
        [
            conv("alice", "bob", 50, 0),
            conv("bob", "alice", 500, 7),
            conv("bob", "alice", 1, 3),
        ]
    );
    // Out-of-range parameters and bad users: 422 naming them, the store not asked.
    for (path, field) in [
        ("/messages/alice/bob?limit=0", "limit"),
        ("/messages/alice/bob?limit=501", "limit"),
        ("/messages/alice/bob?limit=ten", "limit"),
        ("/messages/alice/bob?skip=-1", "skip"),
        ("/messages/alice/bob?offset=x", "offset"),
        (&format!("/messages/{}/bob", "a".repeat(51)), "user1"),
        ("/messages/alice/b%07b", "user2"),
    ] {
        let (s, v) = get(&api, path).await;
        assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{path}: {v}");
    }
    assert_eq!(api.store.queries().len(), 3);
}

#[tokio::test]
async fn user_reads_pass_the_user_and_limit_to_the_store() {
    let api = api().await;
    *api.store.messages.lock().unwrap() = vec![stored("b", 2), stored("a", 1)];
    let (s, v) = get(&api, "/messages/user/alice").await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["messageId"], "b");
    assert_eq!(get(&api, "/messages/user/bob?limit=3").await.0, 200);
    let (s, v) = get(&api, "/messages/user/bob?limit=501").await;
    assert_eq!((s, v["field"].as_str()), (422, Some("limit")), "{v}");
    assert_eq!(
        api.store.queries(),
        [
            Query::UserRecent {
                user: "alice".into(),
                limit: 100
            },
            Query::UserRecent {
                user: "bob".into(),
                limit: 3
            },
        ]
    );
}

/// A path segment whose percent-encoding is not UTF-8 is an invalid user name: the
/// contract's JSON 422 naming the field, not the router's plain-text 400.
#[tokio::test]
async fn a_user_name_that_is_not_utf8_is_a_json_422_naming_the_field() {
    let api = api().await;
    for (path, field) in [
        ("/messages/%FF/bob", "user1"),
        ("/messages/alice/%C3%28", "user2"),
        ("/messages/user/%FF", "username"),
    ] {
        let (s, v) = get(&api, path).await;
        assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{path}: {v}");
        assert_eq!(v["error"], "validation_failed", "{path}: {v}");
    }
    assert!(api.store.queries().is_empty());
}

#[tokio::test]
async fn counts_ask_the_store_for_the_right_scope() {
    let api = api().await;
    let cases = [
        ("/messages/count", CountScope::All, json!(null), json!(null)),
        (
            "/messages/count?user1=alice",
            CountScope::User("alice".into()),
            json!("alice"),
            json!(null),
        ),
        (
            "/messages/count?user2=bob&user1=",
            CountScope::User("bob".into()),
            json!(null),
            json!("bob"),
        ),
        (
            "/messages/count?user1=alice&user2=bob",
            CountScope::Conversation("alice".into(), "bob".into()),
            json!("alice"),
            json!("bob"),
        ),
    ];
    for (path, _, user1, user2) in &cases {
        let (s, v) = get(&api, path).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(
            v,
            json!({"count": 42, "user1": user1, "user2": user2}),
            "{path}"
        );
    }
    let scopes: Vec<Query> = cases.into_iter().map(|c| Query::Count(c.1)).collect();
    assert_eq!(api.store.queries(), scopes);
    let (s, v) = get(&api, "/messages/count?user1=a%0Ab").await;
    assert_eq!((s, v["field"].as_str()), (422, Some("user1")), "{v}");
}

#[tokio::test]
async fn a_store_failure_is_a_503_naming_mongodb() {
    let api = api().await;
    *api.store.fail.lock().unwrap() = Some("connection refused".into());
    for path in [
        "/messages/alice/bob",
        "/messages/user/alice",
        "/messages/count",
    ] {
        let (s, v) = get(&api, path).await;
        assert_eq!(s, 503, "{path}: {v}");
        assert_eq!(v["error"], "mongodb_unavailable", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("connection refused"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn readiness_names_the_failing_part() {
    let api = api().await;
    let (s, v) = get(&api, "/health/readiness").await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"status": "ready", "kafka": "connected", "mongodb": "connected"})
    );

    api.publisher
        .set_check(Err("broker transport failure".into()));
    // Probes within a second share the last check: no broker call per probe.
    let (s, v) = get(&api, "/health/readiness").await;
    assert_eq!(s, 200, "the cached answer: {v}");
    tokio::time::sleep(wiber_server::api::readiness::Cache::FRESH).await;
    let (s, v) = get(&api, "/health/readiness").await;
    assert_eq!((s, v["status"].as_str()), (503, Some("not ready")), "{v}");
    assert_eq!(
        v["kafka"],
        "disconnected: broker transport failure (topic wiber.messages)"
    );
    assert_eq!(v["mongodb"], "connected");

    api.publisher.set_check(Ok(()));
    *api.store.ping.lock().unwrap() = Ping::Fail("auth failed".into());
    tokio::time::sleep(wiber_server::api::readiness::Cache::FRESH).await;
    let (s, v) = get(&api, "/health/readiness").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["kafka"], "connected");
    assert_eq!(v["mongodb"], "disconnected: mongodb: auth failed");

    // A store that does not answer at all: reported within the bound, not waited for.
    *api.store.ping.lock().unwrap() = Ping::Hang;
    tokio::time::sleep(wiber_server::api::readiness::Cache::FRESH).await;
    let started = std::time::Instant::now();
    let (s, v) = get(&api, "/health/readiness").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["mongodb"], "disconnected: no answer within 2s");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn liveness_metrics_and_docs_answer_without_dependencies() {
    let api = api().await;
    api.publisher.set_check(Err("down".into()));
    *api.store.ping.lock().unwrap() = Ping::Fail("down".into());
    assert_eq!(
        get(&api, "/health/liveness").await,
        (200, json!({"status": "alive"}))
    );
    let (s, v) = get(&api, "/openapi.json").await;
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."), "{v}");
    let metrics = http()
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"wiber_http_requests_total{method="GET",route="/health/liveness",status="200"} 1"#
        ),
        "{text}"
    );
    // Every answer carries a correlation id, chosen by the server when the client sent none.
    let r = http()
        .get(format!("{}/health/liveness", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32);
}
