//! At-least-once delivery with de-duplication, end to end: a consumer SIGKILLed in the
//! middle of a stream and restarted loses nothing and stores nothing twice, and two
//! consumer instances share the partitions.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::sync::Mutex;
use wiberctl::runtime::{InstanceId, InstanceState, Runtime, Service, Signal};

#[tokio::test(flavor = "multi_thread")]
async fn consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let stack = start_stack("sigkill", 2, &[]).await;
    let api = stack.api_url();
    let http = http();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let conversations = 8;
    let per_conversation = 40;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let unknown = Arc::new(Mutex::new(Vec::<String>::new()));

    // Senders: one task per conversation, one request in flight each, client ids.
    let mut tasks = Vec::new();
    for c in 0..conversations {
        let (http, api, acked, unknown, run) = (
            http.clone(),
            api.clone(),
            acked.clone(),
            unknown.clone(),
            run.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for s in 0..per_conversation {
                let id = format!("k-{run}-c{c}-s{s}");
                let body = json!({"fromUser": format!("k{run}-{c}a"), "toUser": format!("k{run}-{c}b"),
                                  "content": format!("seq {s}"), "messageId": id});
                match http.post(format!("{api}/messages")).json(&body).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().await.push(id),
                    _ => unknown.lock().await.push(id),
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    // SIGKILL a consumer once a third of the stream is acknowledged, restart it later.
    let total = conversations * per_conversation;
    for _ in 0..600 {
        if acked.lock().await.len() >= total / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = InstanceId::new(Service::Consumer, 1);
    stack
        .kill(&victim, Signal::Kill)
        .await
        .expect("SIGKILL consumer#1");
    let listed = stack.list().await.unwrap();
    let state = listed.iter().find(|i| i.id == victim).map(|i| i.state);
    assert_ne!(
        state,
        Some(InstanceState::Running),
        "consumer#1 should be dead after SIGKILL"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start(&victim).await.expect("restart consumer#1");
    for t in tasks {
        t.await.unwrap();
    }

    let acked = acked.lock().await.clone();
    let unknown = unknown.lock().await.clone();
    assert!(
        acked.len() > total / 2,
        "most sends must be acknowledged: {} of {total}",
        acked.len()
    );
    let coll = collection(&stack).await;
    // Wait (bounded) until every acknowledged message is stored.
    let mut counts = stored_counts(&coll, &acked).await;
    for _ in 0..300 {
        if counts.values().all(|&n| n >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        counts = stored_counts(&coll, &acked).await;
    }
    let lost: Vec<_> = counts
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(k, _)| k.clone())
        .collect();
    let dup: Vec<_> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(dup.is_empty(), "stored more than once: {dup:?}");
    // Nothing stored that was never sent: every stored document of this run is ours.
    let stored_total = coll
        .count_documents(mongodb::bson::doc! {"messageId": {"$regex": format!("^k-{run}-")}})
        .await
        .unwrap();
    let sent: HashSet<&String> = acked.iter().chain(unknown.iter()).collect();
    assert!(stored_total as usize <= sent.len());
    assert!(stored_total as usize >= acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_consumers_share_the_partitions() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let stack = start_stack("share", 2, &[("KAFKA_PARTITIONS", "6")]).await;
    let api = stack.api_url();
    let http = http();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut ids = Vec::new();
    for c in 0..30 {
        let id = format!("s-{run}-{c}");
        let (s, v) = post(&http, &api, json!({"fromUser": format!("s{run}-{c}"), "toUser": "hub", "content": "x", "messageId": id})).await;
        assert_eq!(s, 200, "{v}");
        ids.push(id);
    }
    let coll = collection(&stack).await;
    let counts = wait_stored_once(&coll, &ids).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");

    // The group has two members, and each owns part of the topic's partitions.
    let admin: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.bootstrap())
        .create()
        .unwrap();
    let group = stack.config().names.group;
    // The group may still be rebalancing right after start: poll (bounded) for a stable
    // group with both members.
    let mut last = String::new();
    let mut stable = None;
    for _ in 0..120 {
        let list = admin
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .unwrap();
        let g = list.groups().first().expect("the consumer group exists");
        last = format!("state {} with {} member(s)", g.state(), g.members().len());
        if g.state() == "Stable" && g.members().len() == 2 {
            stable = Some(list);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let list =
        stable.unwrap_or_else(|| panic!("the group never became stable with 2 members: {last}"));
    let g = list.groups().first().unwrap();
    for m in g.members() {
        let assignment = m.assignment().unwrap_or_default();
        // A consumer-protocol assignment that names the topic holds at least one partition.
        let topic = stack.config().names.topic;
        assert!(
            assignment
                .windows(topic.len())
                .any(|w| w == topic.as_bytes()),
            "member {} has no partitions",
            m.client_id()
        );
    }
}

/// The API publishes through two producers (no linger while few publishes are waiting,
/// lingering to batch beyond that). A conversation whose sends are sequential must keep
/// its order in Kafka whichever producer carried each message: each message is acked,
/// so in the log, before the next is produced. With the switch point at 300 publishes a
/// second and 16 conversations sending back to back (the rate climbs past it, and dips
/// under it as the senders wait), both producers carry records, each conversation's
/// switching between them; the stored offsets of each conversation must then grow with
/// its sequence.
#[tokio::test(flavor = "multi_thread")]
async fn both_producers_keep_each_conversations_order() {
    use mongodb::bson::doc;

    let stack = start_stack("lanes", 1, &[("KAFKA_PROMPT_MAX_RATE", "300")]).await;
    let api = stack.api_url();
    let http = http();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (conversations, per_conversation) = (16, 30);
    let mut tasks = Vec::new();
    for c in 0..conversations {
        let (http, api, run) = (http.clone(), api.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for s in 0..per_conversation {
                // Zero-padded: ids sort as the sequence does.
                let id = format!("l-{run}-c{c:02}-s{s:03}");
                let body = json!({"fromUser": format!("l{run}-{c}a"), "toUser": format!("l{run}-{c}b"),
                                  "content": format!("seq {s}"), "messageId": id});
                let (status, v) = post(&http, &api, body).await;
                assert_eq!(status, 200, "{v}");
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }

    // Both producers carried acknowledged records (else this test proves nothing).
    let metrics = get_text(&http, &format!("{api}/metrics")).await;
    for lane in ["prompt", "batching"] {
        let n: f64 = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "wiber_kafka_produce_lane_total{{lane=\"{lane}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(n > 0.0, "the {lane} producer carried nothing:\n{metrics}");
    }

    // Everything stored once; per conversation, offsets grow with the sequence.
    let coll = collection(&stack).await;
    let counts = wait_stored_once(&coll, &ids).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    for c in 0..conversations {
        let prefix = format!("l-{run}-c{c:02}-");
        let mut docs: Vec<(String, i64)> = Vec::new();
        let mut cursor = coll
            .find(doc! {"messageId": {"$regex": format!("^{prefix}")}})
            .await
            .unwrap();
        while cursor.advance().await.unwrap() {
            let d = cursor.deserialize_current().unwrap();
            docs.push((
                d.get_str("messageId").unwrap().to_string(),
                d.get_i64("offset").unwrap(),
            ));
        }
        docs.sort();
        assert_eq!(docs.len(), per_conversation, "{prefix}");
        assert!(
            docs.windows(2).all(|w| w[0].1 < w[1].1),
            "conversation {c} is out of order in Kafka: {docs:?}"
        );
    }
}
