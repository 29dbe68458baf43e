//! The HTTP API contract, end to end against a real stack (real Kafka, real FerretDB,
//! the real api and two consumers): send → stored → read back in order, both directions,
//! pagination, counts, every kind of bad input, idempotent retries, the dead-letter
//! topic, health, metrics and docs, and the `wiberctl` commands on top.
//!
//! One stack is shared by the tests of this binary; each test uses its own users, so
//! the tests run in parallel without seeing each other's messages.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use wiberctl::runtime::local::LocalStack;

fn stack() -> &'static LocalStack {
    // The stack outlives every test's own runtime, so it is started on a runtime of its
    // own that is never dropped. Its processes die with this test process.
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static STACK: OnceLock<LocalStack> = OnceLock::new();
    STACK.get_or_init(|| {
        // Tests call this from inside their own runtime, which must not block_on another
        // runtime: start the stack from a plain thread.
        std::thread::spawn(|| {
            let rt = RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap());
            rt.block_on(start_stack("contract", 2, &[]))
        })
        .join()
        .expect("start the shared stack")
    })
}

fn api() -> String {
    stack().api_url()
}

async fn send_ok(http: &reqwest::Client, from: &str, to: &str, content: &str) -> Value {
    let (s, v) = post(
        http,
        &api(),
        json!({"fromUser": from, "toUser": to, "content": content}),
    )
    .await;
    assert_eq!(s, 200, "POST answered {s}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn sent_messages_are_stored_and_read_back_in_order_in_both_directions() {
    let http = http();
    let (a, b) = users("order");
    let mut sent = Vec::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let m = send_ok(&http, from, to, &format!("message {i}")).await;
        assert_eq!(m["fromUser"], from.as_str());
        assert_eq!(m["content"], format!("message {i}"));
        assert!(m["messageId"].as_str().unwrap().starts_with("msg_"));
        assert!(m["timestamp"].as_i64().unwrap() > 0);
        assert!(m["createdAt"].as_str().unwrap().ends_with('Z'));
        sent.push(m);
    }
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 10, Duration::from_secs(60)).await,
        10
    );
    // Both directions, from either side's point of view, oldest first.
    for (x, y) in [(&a, &b), (&b, &a)] {
        let (s, v) = get(&http, &format!("{}/messages/{x}/{y}", api())).await;
        assert_eq!(s, 200);
        assert_eq!(
            v.as_array().unwrap(),
            &sent,
            "read order must be send order"
        );
    }
    // Newest first for one user.
    let (s, v) = get(&http, &format!("{}/messages/user/{a}?limit=3", api())).await;
    assert_eq!(s, 200);
    let newest: Vec<&Value> = sent.iter().rev().take(3).collect();
    assert_eq!(v.as_array().unwrap().iter().collect::<Vec<_>>(), newest);
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_with_limit_skip_and_offset() {
    let http = http();
    let (a, b) = users("page");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            send_ok(&http, &a, &b, &format!("p{i}")).await["messageId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 7, Duration::from_secs(60)).await,
        7
    );
    let page = |q: &'static str| {
        let http = http.clone();
        let url = format!("{}/messages/{a}/{b}?{q}", api());
        async move {
            let (s, v) = get(&http, &url).await;
            assert_eq!(s, 200, "{url}: {v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|m| m["messageId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("limit=3").await, ids[0..3]);
    assert_eq!(page("limit=3&skip=3").await, ids[3..6]);
    assert_eq!(page("limit=3&offset=6").await, ids[6..7]);
    assert_eq!(page("skip=7").await, Vec::<String>::new());
    for bad in ["limit=0", "limit=501", "limit=x", "skip=-1"] {
        let (s, v) = get(&http, &format!("{}/messages/{a}/{b}?{bad}", api())).await;
        assert_eq!(s, 422, "{bad}: {v}");
        assert_eq!(v["error"], "validation_failed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_total_per_user_and_per_conversation() {
    let http = http();
    let (a, b) = users("count");
    let (_, c) = users("count");
    send_ok(&http, &a, &b, "1").await;
    send_ok(&http, &b, &a, "2").await;
    send_ok(&http, &a, &c, "3").await;
    assert_eq!(
        wait_for_count(&http, &api(), &a, &c, 1, Duration::from_secs(60)).await,
        1
    );
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 2, Duration::from_secs(60)).await,
        2
    );
    let (s, v) = get(&http, &format!("{}/messages/count?user1={a}", api())).await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(3)), "{v}");
    assert_eq!(v["user1"], a.as_str());
    assert!(v["user2"].is_null());
    let (_, v) = get(&http, &format!("{}/messages/count?user2={b}", api())).await;
    assert_eq!(v["count"], 2);
    let (_, v) = get(&http, &format!("{}/messages/count", api())).await;
    assert!(v["count"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_its_status_and_is_never_stored() {
    let http = http();
    let (a, b) = users("bad");
    let url = format!("{}/messages", api());
    let ok = json!({"fromUser": a, "toUser": b, "content": "fine"});
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        o
    };
    let raw = |ct: &'static str, body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let close = r
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
                close,
            )
        }
    };
    // Malformed JSON: 400.
    let (s, v, _) = raw("application/json", format!("{{\"fromUser\": \"{a}\", ")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    // Wrong content type: 415, even with a valid JSON body.
    let (s, v, close) = raw("text/plain", ok.to_string()).await;
    assert_eq!(
        (s, v["error"].as_str(), close),
        (415, Some("unsupported_media_type"), true),
        "{v}: answered before the body was read, so the connection must say close"
    );
    // Body over 64 KiB: 413, and `Connection: close` (the server did not read the body,
    // so the connection cannot carry the next request; without the header a pooled
    // client sent the next request into the closed socket, 2 runs in 6).
    let (s, v, close) = raw(
        "application/json",
        with("content", json!("x".repeat(70_000))).to_string(),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str(), close),
        (413, Some("payload_too_large"), true),
        "{v}"
    );
    // Validation: 422 naming the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"toUser": b, "content": "c"}), "fromUser"),
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
        let (s, v) = post(&http, &api(), body.clone()).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"], "validation_failed", "{v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    // Idempotency-Key that contradicts the body's messageId.
    let r = http
        .post(&url)
        .header("idempotency-key", "key-1")
        .json(&with("messageId", json!("key-2")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    // Limits are characters, not bytes: 5000 multi-byte characters are accepted.
    send_ok(&http, &a, &b, &"€".repeat(5000)).await;
    // Then one good message in the same conversation (same partition, after the bad
    // ones): once it is stored, nothing else of this conversation may be.
    send_ok(&http, &a, &b, "sentinel").await;
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 2, Duration::from_secs(60)).await,
        2
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        conversation_count(&http, &api(), &a, &b).await,
        2,
        "a rejected message was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn same_message_id_posted_twice_is_stored_once() {
    let http = http();
    let (a, b) = users("idem");
    let id = format!("client-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"fromUser": a, "toUser": b, "content": "pay 10", "messageId": id});
    let (s1, m1) = post(&http, &api(), body.clone()).await;
    let (s2, m2) = post(&http, &api(), body).await;
    assert_eq!((s1, s2), (200, 200), "{m1} {m2}");
    assert_eq!(m1["messageId"], id.as_str());
    assert_eq!(m2["messageId"], id.as_str());
    // The header form of the same promise.
    let key = format!("hdr-{}", uuid::Uuid::new_v4().simple());
    for _ in 0..2 {
        let r = http
            .post(format!("{}/messages", api()))
            .header("Idempotency-Key", &key)
            .json(&json!({"fromUser": a, "toUser": b, "content": "pay 20"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["messageId"], key.as_str());
    }
    send_ok(&http, &a, &b, "sentinel").await;
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 3, Duration::from_secs(60)).await,
        3
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(conversation_count(&http, &api(), &a, &b).await, 3);
    let coll = collection(stack()).await;
    let counts = stored_counts(&coll, &[id.clone(), key.clone()]).await;
    assert_eq!(counts[&id], 1);
    assert_eq!(counts[&key], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_documents_carry_provenance() {
    let http = http();
    let (a, b) = users("prov");
    let m = send_ok(&http, &a, &b, "where am I").await;
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 1, Duration::from_secs(60)).await,
        1
    );
    let coll = collection(stack()).await;
    let d = coll
        .find_one(mongodb::bson::doc! {"_id": m["messageId"].as_str().unwrap()})
        .await
        .unwrap()
        .expect("stored under _id = messageId");
    assert_eq!(
        d.get_str("messageId").unwrap(),
        m["messageId"].as_str().unwrap()
    );
    assert_eq!(
        d.get_i64("timestamp").unwrap(),
        m["timestamp"].as_i64().unwrap()
    );
    assert!(d.get_i64("storedAt").unwrap() >= m["timestamp"].as_i64().unwrap());
    assert!(d.get_i32("partition").unwrap() >= 0);
    assert!(d.get_i64("offset").unwrap() >= 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_records_go_to_the_dead_letter_topic_and_the_stream_goes_on() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let http = http();
    let (a, b) = users("dlq");
    let cfg = stack().config();
    // Make sure the topic exists (the api creates it at start).
    send_ok(&http, &a, &b, "before").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack().bootstrap())
        .create()
        .unwrap();
    let garbage = format!("not json {}", uuid::Uuid::new_v4());
    let key = wiber_model::conversation_key(&a, &b);
    producer
        .send(
            FutureRecord::to(&cfg.names.topic)
                .key(&key)
                .payload(&garbage),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce garbage");
    // Same key → same partition, after the garbage: the consumer must get past it.
    send_ok(&http, &a, &b, "after").await;
    assert_eq!(
        wait_for_count(&http, &api(), &a, &b, 2, Duration::from_secs(60)).await,
        2
    );

    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack().bootstrap())
        .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{}.dlq", cfg.names.topic)])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "garbage record not found in the dead-letter topic"
        );
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), dlq.recv()).await else {
            continue;
        };
        if m.payload() != Some(garbage.as_bytes()) {
            continue;
        }
        let headers = m.headers().expect("dead letters carry headers");
        let reason = headers
            .iter()
            .find(|h| h.key == "wiber-dlq-reason")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .expect("a reason header");
        assert!(reason.contains("not a wiber message"), "{reason}");
        break;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_docs() {
    let http = http();
    let (s, v) = get(&http, &format!("{}/health/liveness", api())).await;
    assert_eq!((s, v), (200, json!({"status": "alive"})));
    let (s, v) = get(&http, &format!("{}/health/readiness", api())).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"status": "ready", "kafka": "connected", "mongodb": "connected"})
        )
    );

    let (a, b) = users("metrics");
    send_ok(&http, &a, &b, "count me").await;
    let text = get_text(&http, &format!("{}/metrics", api())).await;
    assert!(
        text.contains(
            "wiber_http_requests_total{method=\"POST\",route=\"/messages\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("wiber_kafka_produce_duration_seconds_bucket"),
        "{text}"
    );

    let (s, doc) = get(&http, &format!("{}/openapi.json", api())).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/messages",
        "/messages/{user1}/{user2}",
        "/messages/user/{username}",
        "/messages/count",
        "/health/liveness",
        "/health/readiness",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi.json lacks {path}");
    }
    let html = get_text(&http, &format!("{}/docs", api())).await;
    assert!(html.contains("swagger-ui-bundle.js"));
    let js = http
        .get(format!("{}/docs/swagger-ui-bundle.js", api()))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status().as_u16(), 200);
    assert!(
        js.bytes().await.unwrap().len() > 100_000,
        "the vendored Swagger UI bundle is served"
    );
}

/// Runs the real `wiberctl` binary.
fn wiberctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wiberctl"))
        .args(args)
        .env_remove("WIBER_API_URL")
        .output()
        .expect("run wiberctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wiberctl_send_read_count_health() {
    let api = api();
    let (a, b) = users("cli");
    let (code, out, err) =
        wiberctl(&["--api-url", &api, "send", "--from", &a, "--to", &b, "Hello"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Hello") && out.contains(&a), "{out}");
    let (code, out, err) = wiberctl(&[
        "--api-url",
        &api,
        "--json",
        "send",
        "--from",
        &b,
        "--to",
        &a,
        "--id",
        "cli-fixed-id",
        "Hi",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let sent: Value = serde_json::from_str(&out).expect("send --json prints the message");
    assert_eq!(sent["messageId"], "cli-fixed-id");
    let http = http();
    assert_eq!(
        wait_for_count(&http, &api, &a, &b, 2, Duration::from_secs(60)).await,
        2
    );

    let (code, out, _) = wiberctl(&["--api-url", &api, "--json", "read", &a, &b]);
    assert_eq!(code, 0);
    let msgs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        msgs.iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Hello", "Hi"]
    );
    let (code, out, _) = wiberctl(&[
        "--api-url",
        &api,
        "read",
        &a,
        &b,
        "--limit",
        "1",
        "--skip",
        "1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("Hi") && !out.contains("Hello"), "{out}");

    let (code, out, _) = wiberctl(&[
        "--api-url",
        &api,
        "--json",
        "count",
        "--user1",
        &a,
        "--user2",
        &b,
    ]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 2);

    let (code, out, _) = wiberctl(&["--api-url", &api, "--json", "health"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ready"], true);

    // Refused by the API: exit 1 with the field named.
    let (code, _, err) = wiberctl(&["--api-url", &api, "send", "--from", "", "--to", &b, "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("fromUser"), "{err}");
    // API unreachable: the tool could not do its job, exit 2, one clear line.
    let dead = format!(
        "http://127.0.0.1:{}",
        wiberctl::runtime::local::pick_free_port().unwrap()
    );
    let (code, _, err) = wiberctl(&["--api-url", &dead, "send", "--from", &a, "--to", &b, "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach the Wiber API") && err.lines().count() == 1,
        "{err}"
    );
    // Health of an unreachable API is a failed check: exit 1.
    let (code, _, _) = wiberctl(&["--api-url", &dead, "health"]);
    assert_eq!(code, 1);
}
