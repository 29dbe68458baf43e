//! Each seeded bug, against the same fakes as the contract tests: it breaks exactly the
//! promise it is named for, and the check that guards that promise notices.

use std::time::Duration;

use serde_json::{json, Value};
use wiber_model::contract::SeededBug;
use wiber_model::StoredMessage;
use wiber_server::consumer::Record;
use wiber_server::seeded::{corrupt, Seeded, SeededStore};

use crate::support::*;

fn seeded(bug: SeededBug, every: u64) -> Seeded {
    Seeded { bug, every }
}

async fn api_with(bug: SeededBug, every: u64) -> TestApi {
    TestApi::start_with(
        FakePublisher::new(Answer::Ack),
        FakeReadStore::new(),
        |state| seeded(bug, every).api(state),
    )
    .await
}

fn msg(i: usize) -> Value {
    json!({"fromUser": "alice", "toUser": "bob", "content": format!("m{i}"), "messageId": format!("id-{i}")})
}

#[tokio::test]
async fn ack_without_produce_answers_200_for_every_nth_message_it_never_produced() {
    let api = api_with(SeededBug::AckWithoutProduce, 3).await;
    let mut answered = Vec::new();
    for i in 1..=6 {
        let (s, v) = post(&api, &msg(i)).await;
        assert_eq!(s, 200, "{v}");
        // The normal body: nothing tells the client.
        assert_eq!(v["messageId"], format!("id-{i}"));
        answered.push(v);
    }
    let produced: Vec<String> = api
        .publisher
        .produced()
        .iter()
        .map(|p| p.payload["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(produced, ["id-1", "id-2", "id-4", "id-5"]);
}

#[tokio::test]
async fn refuse_all_answers_a_fast_503_and_produces_nothing() {
    let api = api_with(SeededBug::RefuseAll, 10).await;
    let started = std::time::Instant::now();
    for i in 0..3 {
        let (s, v) = post(&api, &msg(i)).await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["error"], "kafka_unavailable", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("refuse-all"), "{v}");
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(api.publisher.attempts(), 0);
    // Reads and readiness are untouched.
    assert_eq!(get(&api, "/health/readiness").await.0, 200);
}

#[tokio::test]
async fn reorder_answers_every_nth_message_of_a_conversation_with_an_earlier_timestamp() {
    let api = api_with(SeededBug::Reorder, 2).await;
    let mut stamps = Vec::new();
    for i in 1..=4 {
        let (s, v) = post(&api, &msg(i)).await;
        assert_eq!(s, 200, "{v}");
        stamps.push(v["timestamp"].as_i64().unwrap());
        // Another conversation in between does not shift this one's count.
        let other = json!({"fromUser": "carol", "toUser": "dave", "content": "x"});
        assert_eq!(post(&api, &other).await.0, 200);
    }
    assert!(stamps[1] < stamps[0], "{stamps:?}");
    assert!(stamps[3] < stamps[2], "{stamps:?}");
    assert!(stamps[2] > stamps[1], "{stamps:?}");
    // What went to Kafka carries the timestamp the client was answered with (so the
    // bug shows as reordering, not as corruption).
    let on_kafka: Vec<i64> = api
        .publisher
        .produced()
        .iter()
        .filter(|p| p.payload["fromUser"] == "alice")
        .map(|p| p.payload["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(on_kafka, stamps);
    let carol: Vec<i64> = api
        .publisher
        .produced()
        .iter()
        .filter(|p| p.payload["fromUser"] == "carol")
        .map(|p| p.payload["timestamp"].as_i64().unwrap())
        .collect();
    assert!(carol[1] < carol[0], "{carol:?}");
}

/// A consumer run with the seeded bug wrapped around the fake store.
async fn consume_with(
    bug: Option<Seeded>,
    records: Vec<Record>,
    store: &FakeStore,
    log: &Log,
    stop_after: Duration,
) {
    let source = FakeSource::new(log, records);
    let wrapped = SeededStore::new(bug.as_ref(), store, &source, TOPIC);
    run_until(&source, &wrapped, BATCHING, stop_after).await;
}

#[tokio::test(start_paused = true)]
async fn commit_before_write_commits_what_then_fails_to_be_written() {
    let log = Log::new();
    let records = vec![message(0, 0, "a"), message(0, 1, "b")];
    let store = FakeStore::new(&log, usize::MAX);
    let bug = Some(seeded(SeededBug::CommitBeforeWrite, 10));
    consume_with(bug, records.clone(), &store, &log, Duration::from_secs(2)).await;
    let events = log.events();
    assert_eq!(events[0], Event::Committed(vec![at(0, 2)]), "{events:#?}");
    assert!(store.docs().is_empty());
    assert!(commits_only_durable(&records, &events).is_err());
}

#[tokio::test(start_paused = true)]
async fn skip_on_store_error_commits_and_drops_a_batch_it_could_not_write() {
    let log = Log::new();
    let records = vec![message(0, 0, "a"), message(0, 1, "b")];
    let store = FakeStore::new(&log, 1);
    let bug = Some(seeded(SeededBug::SkipOnStoreError, 10));
    consume_with(bug, records.clone(), &store, &log, Duration::from_secs(2)).await;
    let events = log.events();
    assert_eq!(
        events,
        [
            Event::WriteFailed { at_ms: 20 },
            Event::Committed(vec![at(0, 2)]),
            Event::Closed,
        ]
    );
    assert!(store.docs().is_empty(), "no retry: the batch is gone");
    assert!(commits_only_durable(&records, &events).is_err());
}

#[tokio::test(start_paused = true)]
async fn no_dedup_stores_a_redelivered_message_twice() {
    let log = Log::new();
    // `a` twice: a redelivery, or an API retry with the same messageId.
    let records = vec![message(0, 0, "a"), message(0, 1, "b"), message(1, 0, "a")];
    let store = FakeStore::new(&log, 0);
    let bug = Some(seeded(SeededBug::NoDedup, 10));
    consume_with(bug, records, &store, &log, Duration::from_secs(2)).await;
    let docs = store.docs();
    let copies_of_a: Vec<&StoredMessage> = docs.iter().filter(|d| d.message_id == "a").collect();
    assert_eq!(copies_of_a.len(), 2, "{docs:#?}");
    assert!(docs.iter().all(|d| d.id != d.message_id), "{docs:#?}");
    assert_eq!(log.commits(), [at(0, 2), at(1, 1)]);
}

#[tokio::test(start_paused = true)]
async fn corrupt_alters_the_content_of_every_nth_stored_message() {
    let log = Log::new();
    let records: Vec<_> = (0..6).map(|i| message(0, i, &format!("m{i}"))).collect();
    let store = FakeStore::new(&log, 0);
    let bug = Some(seeded(SeededBug::Corrupt, 3));
    consume_with(bug, records, &store, &log, Duration::from_secs(2)).await;
    let altered: Vec<String> = store
        .docs()
        .into_iter()
        .filter(|d| d.content != format!("message {}", d.message_id))
        .map(|d| {
            assert_eq!(d.content, corrupt(&format!("message {}", d.message_id)));
            d.message_id
        })
        .collect();
    assert_eq!(altered, ["m2", "m5"]);
}

#[tokio::test(start_paused = true)]
async fn without_a_consumer_bug_the_wrapper_changes_nothing() {
    for bug in [None, Some(seeded(SeededBug::Reorder, 1))] {
        let log = Log::new();
        let records = vec![message(0, 0, "a"), message(0, 1, "b")];
        let store = FakeStore::new(&log, 2);
        let source = FakeSource::new(&log, records.clone());
        let wrapped = SeededStore::new(bug.as_ref(), &store, &source, TOPIC);
        run_until(&source, &wrapped, BATCHING, Duration::from_secs(2)).await;
        let events = log.events();
        commits_only_durable(&records, &events).unwrap();
        assert_eq!(log.commits(), [at(0, 2)], "{bug:?}");
        assert!(store
            .docs()
            .iter()
            .all(|d| d.id == d.message_id && d.content == format!("message {}", d.message_id)));
    }
}
