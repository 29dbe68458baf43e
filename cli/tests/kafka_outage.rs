//! Kafka down: the API answers 503 within its bound and acknowledges nothing; readiness
//! names Kafka; when Kafka is back, sends succeed and are stored again.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use wiberctl::runtime::{InstanceId, Runtime, Service};

#[tokio::test(flavor = "multi_thread")]
async fn kafka_stopped_means_fast_503_and_nothing_acked() {
    // A 3 s produce bound keeps the test short; the default is 5 s.
    let stack = start_stack("outage", 1, &[("KAFKA_MESSAGE_TIMEOUT_MS", "3000")]).await;
    let api = stack.api_url();
    let http = http();
    let (a, b) = users("outage");
    let (s, v) = post(
        &http,
        &api,
        json!({"fromUser": a, "toUser": b, "content": "before"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        wait_for_count(&http, &api, &a, &b, 1, Duration::from_secs(60)).await,
        1
    );

    let kafka = InstanceId::first(Service::Kafka);
    stack.stop(&kafka).await.expect("stop kafka");

    let mut refused = Vec::new();
    for i in 0..4 {
        let id = format!("outage-{}-{i}", uuid::Uuid::new_v4().simple());
        let started = Instant::now();
        let (s, v) = post(
            &http,
            &api,
            json!({"fromUser": a, "toUser": b, "content": "during", "messageId": id}),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(
            s, 503,
            "a POST while Kafka is down must not be acknowledged: {v}"
        );
        assert_eq!(v["error"], "kafka_unavailable");
        eprintln!("POST {i} while Kafka is down: 503 after {took:?}");
        // At once when the producer already saw every broker connection fail, else within
        // the 3 s message timeout (+1 s backstop); slack for a loaded machine.
        assert!(took < Duration::from_secs(7), "503 took {took:?}");
        refused.push(id);
    }
    let (s, v) = get(&http, &format!("{api}/health/readiness")).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["kafka"].as_str().unwrap().starts_with("disconnected"),
        "{v}"
    );
    assert_eq!(v["mongodb"], "connected");

    stack.start(&kafka).await.expect("start kafka again");
    // Back: readiness recovers and a send is acknowledged and stored (bounded waits).
    let deadline = Instant::now() + Duration::from_secs(90);
    let sentinel = loop {
        let (s, v) = post(
            &http,
            &api,
            json!({"fromUser": a, "toUser": b, "content": "after"}),
        )
        .await;
        if s == 200 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the API did not recover after Kafka returned: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(sentinel["content"], "after");
    assert_eq!(
        wait_for_count(&http, &api, &a, &b, 2, Duration::from_secs(90)).await,
        2
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // None of the refused messages reached the store (they timed out in the producer
    // and were never sent; the sentinel after them in the same partition is stored).
    let coll = collection(&stack).await;
    let counts = stored_counts(&coll, &refused).await;
    assert!(
        counts.values().all(|&n| n == 0),
        "a refused message was stored: {counts:?}"
    );
    let (s, _) = get(&http, &format!("{api}/health/readiness")).await;
    assert_eq!(s, 200);
}
