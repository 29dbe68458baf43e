//! The consumer loop's delivery contract (ARCHITECTURE.md, "Delivery semantics") against
//! a fake group with a commit log and a fake store. Time is paused, so back-offs take no
//! wall time and their lengths can be asserted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wiber_model::contract::dlq;
use wiber_model::Message;
use wiber_server::consumer::{Batching, Recovery};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn offsets_are_committed_only_after_the_batch_is_written() {
    let log = Log::new();
    let source = FakeSource::new(
        &log,
        vec![
            message(0, 0, "a"),
            message(1, 5, "b"),
            message(0, 1, "c"),
            message(0, 2, "d"),
        ],
    );
    // The store refuses four writes: the batch is retried with doubling back-off
    // capped at 250 ms (100, 200, 250, 250), and nothing is committed meanwhile.
    let store = FakeStore::new(&log, 4);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    assert_eq!(
        log.events(),
        [
            Event::WriteFailed { at_ms: 20 },
            Event::WriteFailed { at_ms: 120 },
            Event::WriteFailed { at_ms: 320 },
            Event::WriteFailed { at_ms: 570 },
            Event::Stored {
                at_ms: 820,
                inserted: ids(&["a", "b", "c", "d"]),
                duplicates: vec![],
            },
            Event::Committed(vec![at(0, 3), at(1, 6)]),
            Event::Closed,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_never_committed() {
    let log = Log::new();
    let records = vec![
        message(0, 0, "a"),
        message(0, 1, "b"),
        message(0, 2, "c"),
        message(0, 3, "d"),
        message(0, 4, "e"),
    ];
    let source = FakeSource::new(&log, records.clone());
    // Batches of two: the first is written, every write after it fails until shutdown.
    let store = FakeStore::failing(&log, |attempt| attempt > 1);
    let batching = Batching {
        max_records: 2,
        ..BATCHING
    };
    run_until(&source, &store, batching, Duration::from_secs(30)).await;
    let events = log.events();
    assert_eq!(log.commits(), [at(0, 2)], "{events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::WriteFailed { .. }))
            .count()
            > 10,
        "the failed batch is retried, not skipped: {events:#?}"
    );
    // The loop never read past the failing batch, and left without committing it.
    assert_eq!(events.last(), Some(&Event::Closed));
    commits_only_durable(&records, &events).unwrap();
    assert_eq!(
        store
            .docs()
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[tokio::test(start_paused = true)]
async fn redeliveries_are_de_duplication_hits_not_failures() {
    let log = Log::new();
    let source = FakeSource::new(
        &log,
        vec![message(0, 7, "a"), message(0, 8, "b"), message(0, 9, "c")],
    );
    // `a` and `b` were stored before a crash that lost the commit.
    let store = FakeStore::new(&log, 0);
    store.preload(&["a", "b"]);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    assert_eq!(
        log.events(),
        [
            Event::Stored {
                at_ms: 20,
                inserted: ids(&["c"]),
                duplicates: ids(&["a", "b"]),
            },
            Event::Committed(vec![at(0, 10)]),
            Event::Closed,
        ]
    );
}

/// A `Write` that keeps what the JSON log layer writes, for asserting on log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_with_some_duplicates_counts_them_and_commits() {
    // The loop's own count of what it stored, as an operator reads it in the logs.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let log = Log::new();
    let records = vec![
        message(0, 0, "a"),
        message(1, 0, "b"),
        // An API retry of `a` produced twice: a duplicate inside the batch.
        message(1, 1, "a"),
        message(0, 1, "c"),
    ];
    let source = FakeSource::new(&log, records.clone());
    // `c` was stored before (a redelivery after a lost commit).
    let store = FakeStore::new(&log, 0);
    store.preload(&["c"]);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    let events = log.events();
    assert_eq!(
        events,
        [
            Event::Stored {
                at_ms: 20,
                inserted: ids(&["a", "b"]),
                duplicates: ids(&["a", "c"]),
            },
            Event::Committed(vec![at(0, 2), at(1, 2)]),
            Event::Closed,
        ]
    );
    commits_only_durable(&records, &events).unwrap();
    let stored: Vec<Value> = captured
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "batch stored")
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (
            &stored[0]["records"],
            &stored[0]["inserted"],
            &stored[0]["duplicates"]
        ),
        (&Value::from(4), &Value::from(2), &Value::from(2)),
        "{stored:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn undecodable_records_go_to_the_dead_letter_topic_then_are_committed() {
    let log = Log::new();
    let mut invalid = serde_json::to_value(Message {
        message_id: "x".into(),
        from_user: String::new(),
        to_user: "bob".into(),
        content: "hi".into(),
        timestamp: 1,
        created_at: wiber_model::rfc3339_ms(1),
    })
    .unwrap();
    invalid["fromUser"] = "".into();
    let records = vec![
        message(0, 0, "a"),
        record(0, 1, Some(b"not json".to_vec())),
        record(0, 2, Some(serde_json::to_vec(&invalid).unwrap())),
        message(0, 3, "b"),
        // The last record of the batch: its offset must be committed too.
        record(0, 4, None),
    ];
    let source = FakeSource::new(&log, records.clone());
    // The broker refuses the first dead-letter publish: it is retried, not dropped.
    *source.dlq_failures.lock().unwrap() = 1;
    let store = FakeStore::new(&log, 0);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    let events = log.events();
    let reasons: Vec<(i64, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::DeadLettered { offset, reason, .. } => Some((*offset, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [1, 2, 4],
        "{events:#?}"
    );
    assert!(
        reasons[0].1.starts_with("not a wiber message"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].1.starts_with("invalid message: fromUser"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2].1, "record has no payload");
    assert_eq!(events[0], Event::DeadLetterFailed { offset: 1 });
    // Dead-lettered and stored first, committed after, up to the last record.
    assert_eq!(
        events[4..],
        [
            Event::Stored {
                at_ms: 220,
                inserted: ids(&["a", "b"]),
                duplicates: vec![],
            },
            Event::Committed(vec![at(0, 5)]),
            Event::Closed,
        ],
        "{events:#?}"
    );
    commits_only_durable(&records, &events).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_record_the_dead_letter_topic_never_takes_is_never_committed() {
    let log = Log::new();
    let source = FakeSource::new(
        &log,
        vec![message(0, 0, "a"), record(0, 1, Some(b"{".to_vec()))],
    );
    *source.dlq_failures.lock().unwrap() = usize::MAX;
    let store = FakeStore::new(&log, 0);
    run_until(&source, &store, BATCHING, Duration::from_secs(5)).await;
    let events = log.events();
    assert!(log.commits().is_empty(), "{events:#?}");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Stored { .. })),
        "the batch is abandoned whole: {events:#?}"
    );
    assert_eq!(events.last(), Some(&Event::Closed));
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_batch_in_hand_then_commits_and_leaves() {
    let log = Log::new();
    let source = FakeSource::new(&log, vec![message(0, 0, "a"), message(0, 1, "b")]);
    let store = FakeStore::new(&log, 0);
    // Shutdown comes at 5 ms, while the batch is still gathering (linger 20 ms).
    run_until(&source, &store, BATCHING, Duration::from_millis(5)).await;
    assert_eq!(
        log.events(),
        [
            Event::Stored {
                at_ms: 20,
                inserted: ids(&["a", "b"]),
                duplicates: vec![],
            },
            Event::Committed(vec![at(0, 2)]),
            Event::Closed,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_retry_leaves_without_committing() {
    let started = tokio::time::Instant::now();
    let log = Log::new();
    let source = FakeSource::new(&log, vec![message(0, 0, "a")]);
    let store = FakeStore::new(&log, usize::MAX);
    run_until(&source, &store, BATCHING, Duration::from_millis(1000)).await;
    let events = log.events();
    assert!(log.commits().is_empty(), "{events:#?}");
    // Still retrying when shutdown came (at 20, 120, 320, 570, 820 ms), then left the
    // group at once, without waiting for the next attempt (due at 1070 ms).
    assert_eq!(
        events,
        [
            Event::WriteFailed { at_ms: 20 },
            Event::WriteFailed { at_ms: 120 },
            Event::WriteFailed { at_ms: 320 },
            Event::WriteFailed { at_ms: 570 },
            Event::WriteFailed { at_ms: 820 },
            Event::Closed,
        ]
    );
    assert_eq!(started.elapsed(), Duration::from_millis(1000));
}

/// Several partitions, small batches, failing writes, a flaky dead-letter topic,
/// duplicates and undecodable records at once: every commit, all along the run, covers
/// only records already stored or dead-lettered, and in the end everything is.
#[tokio::test(start_paused = true)]
async fn every_commit_covers_only_messages_at_or_below_it_that_are_written() {
    let log = Log::new();
    let mut records = Vec::new();
    let mut next = [0i64; 3];
    for i in 0..30usize {
        let p = (i * 7 % 3) as i32;
        let o = next[p as usize];
        next[p as usize] += 1;
        records.push(match i {
            11 | 23 => record(p, o, Some(b"garbage".to_vec())),
            // Retries of earlier messages, as a client retrying after a timeout sends them.
            17 => message(p, o, "m3"),
            26 => message(p, o, "m12"),
            _ => message(p, o, &format!("m{i}")),
        });
    }
    let source = FakeSource::new(&log, records.clone());
    *source.dlq_failures.lock().unwrap() = 2;
    // Writes 2, 3 and 7 fail; the rest go through.
    let store = FakeStore::failing(&log, |attempt| [2, 3, 7].contains(&attempt));
    let batching = Batching {
        max_records: 4,
        ..BATCHING
    };
    run_until(&source, &store, batching, Duration::from_secs(60)).await;
    let events = log.events();
    commits_only_durable(&records, &events).unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    // Everything was committed in the end: each partition up to its last record.
    for (p, n) in next.iter().enumerate() {
        let high = log
            .commits()
            .iter()
            .filter(|c| c.partition == p as i32)
            .map(|c| c.next_offset)
            .max();
        assert_eq!(high, Some(*n), "partition {p}: {events:#?}");
    }
    // 30 records: 2 undecodable, 2 retries of stored messages, 26 distinct messages.
    assert_eq!(store.docs().len(), 26);
}

/// The check above can fail: a commit of a record that was never written is caught.
#[test]
fn the_commit_check_catches_a_commit_ahead_of_the_writes() {
    let records = [message(0, 0, "a"), message(0, 1, "b")];
    let events = [
        Event::Stored {
            at_ms: 0,
            inserted: ids(&["a"]),
            duplicates: vec![],
        },
        Event::Committed(vec![at(0, 2)]),
    ];
    let e = commits_only_durable(&records, &events).unwrap_err();
    assert!(e.contains("offset 1"), "{e}");
    assert!(commits_only_durable(&records, &events[..1]).is_ok());
}

/// Records of several partitions, two of them holding U+0000 (which PostgreSQL's jsonb
/// cannot hold), in one batch.
fn batch_with_poison() -> Vec<wiber_server::consumer::Record> {
    vec![
        message(0, 10, "a"),
        message(1, 20, "b"),
        message_with(1, 21, "poison-1", "bad \u{0} content"),
        message(2, 30, "c"),
        message(0, 11, "d"),
        message(2, 31, "e"),
        message_with(0, 12, "poison-2", "\u{0}"),
        message(1, 22, "f"),
    ]
}

fn has_nul(m: &wiber_model::StoredMessage) -> bool {
    m.content.contains('\u{0}')
}

#[tokio::test(start_paused = true)]
async fn a_record_the_store_refuses_is_isolated_dead_lettered_and_stalls_nothing() {
    let log = Log::new();
    let records = batch_with_poison();
    let source = FakeSource::new(&log, records.clone());
    let store = FakeStore::refusing(&log, has_nul);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    let events = log.events();
    // Every other record is stored; each refused one is dead-lettered, with the store's
    // error, as `refused`.
    let mut stored: Vec<String> = store.docs().into_iter().map(|d| d.id).collect();
    stored.sort();
    assert_eq!(stored, ids(&["a", "b", "c", "d", "e", "f"]), "{events:#?}");
    let dead: Vec<(i32, i64, dlq::Class)> = events
        .iter()
        .filter_map(|e| match e {
            Event::DeadLettered {
                partition,
                offset,
                class,
                reason,
            } => {
                assert!(reason.contains("SQLSTATE 22P05"), "{reason}");
                Some((*partition, *offset, *class))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dead,
        [(1, 21, dlq::Class::Refused), (0, 12, dlq::Class::Refused)],
        "{events:#?}"
    );
    // The whole batch is committed, and only once all of it is done: nothing stalled.
    assert_eq!(log.commits(), [at(0, 13), at(1, 23), at(2, 32)]);
    commits_only_durable(&records, &events).unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Stalled { .. })),
        "{events:#?}"
    );
    // Isolation costs a few writes, not one per record: 8 records, 2 refused.
    let writes = events
        .iter()
        .filter(|e| matches!(e, Event::WriteFailed { .. } | Event::Stored { .. }))
        .count();
    assert!(writes <= 12, "{writes} writes: {events:#?}");
}

#[tokio::test(start_paused = true)]
async fn without_isolation_a_refused_record_stalls_its_whole_batch_and_is_reported() {
    // What the seeded bug `retry-forever` does (the consumer before isolation): the
    // harness must see this, so the test shows what it looks like.
    let log = Log::new();
    let records = batch_with_poison();
    let source = FakeSource::new(&log, records.clone());
    let store = FakeStore::refusing(&log, has_nul);
    let recovery = Recovery {
        isolate_refused: false,
        ..Recovery::new("consumer#1")
    };
    run_with(
        &source,
        &store,
        BATCHING,
        &recovery,
        Duration::from_secs(100),
    )
    .await;
    let events = log.events();
    assert!(store.docs().is_empty(), "nothing of the batch is stored");
    assert!(log.commits().is_empty(), "nothing committed: {events:#?}");
    let stalls: Vec<(u64, Vec<(i32, i64)>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Stalled { at_ms, at, .. } => Some((*at_ms, at.clone())),
            _ => None,
        })
        .collect();
    // Reported once the batch has failed for 30 s, and again every 30 s, each time at
    // the lowest offset of each partition of the batch.
    assert!(stalls.len() >= 3, "{stalls:?}");
    assert!(stalls[0].0 >= 30_000 && stalls[0].0 < 36_000, "{stalls:?}");
    assert_eq!(stalls[0].1, [(0, 10), (1, 20), (2, 30)]);
    assert!(stalls[1].0 - stalls[0].0 >= 30_000, "{stalls:?}");
}

#[tokio::test(start_paused = true)]
async fn an_error_of_unknown_class_is_retried_never_dropped_and_reported_stalled() {
    let log = Log::new();
    let records = batch_with_poison();
    let source = FakeSource::new(&log, records.clone());
    let store = FakeStore::refusing(&log, has_nul);
    // The same refusal, but not known to be permanent: nothing is dropped on a guess.
    *store.refusal_class.lock().unwrap() = wiber_server::consumer::FailureClass::Unknown;
    run_until(&source, &store, BATCHING, Duration::from_secs(45)).await;
    let events = log.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeadLettered { .. })),
        "{events:#?}"
    );
    assert!(log.commits().is_empty());
    assert!(events.iter().any(|e| matches!(e, Event::Stalled { .. })));
}

#[tokio::test(start_paused = true)]
async fn an_id_reused_with_other_content_is_a_conflict_not_a_silent_drop() {
    let log = Log::new();
    let records = vec![
        message_with(0, 5, "order-42", "the second content"),
        message(0, 6, "x"),
    ];
    let source = FakeSource::new(&log, records.clone());
    let store = FakeStore::new(&log, 0);
    let first: Message = serde_json::from_slice(
        message_with(0, 1, "order-42", "the first content")
            .payload
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    store.put(wiber_model::StoredMessage::new(first, 0, 0, 1));
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    let events = log.events();
    let conflicts: Vec<(i64, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::DeadLettered {
                offset,
                class: dlq::Class::Conflict,
                reason,
                ..
            } => Some((*offset, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(conflicts.len(), 1, "{events:#?}");
    assert_eq!(conflicts[0].0, 5);
    assert!(
        conflicts[0].1.contains("\"order-42\""),
        "{}",
        conflicts[0].1
    );
    // The stored message stays as it was; the batch is committed.
    let kept = store.docs();
    assert_eq!(
        kept.iter()
            .find(|d| d.id == "order-42")
            .map(|d| d.content.as_str()),
        Some("the first content")
    );
    assert_eq!(log.commits(), [at(0, 7)]);
    commits_only_durable(&records, &events).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retry_with_the_same_content_is_a_de_duplication_hit_not_a_conflict() {
    let log = Log::new();
    // The client's retry: same id, users and content; the API accepted it anew, so its
    // timestamp differs.
    let retry: Message =
        serde_json::from_slice(message(0, 3, "a").payload.as_deref().unwrap()).unwrap();
    let retry = Message {
        timestamp: retry.timestamp + 700,
        ..retry
    };
    let records = vec![record(0, 3, Some(serde_json::to_vec(&retry).unwrap()))];
    let source = FakeSource::new(&log, records);
    let store = FakeStore::new(&log, 0);
    store.preload(&["a"]);
    run_until(&source, &store, BATCHING, Duration::from_secs(10)).await;
    let events = log.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeadLettered { .. })),
        "{events:#?}"
    );
    assert_eq!(log.commits(), [at(0, 4)]);
}
