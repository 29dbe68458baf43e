//! Integration test of provisioning and the local-process runtime, against the real
//! Kafka, PostgreSQL and FerretDB (no mocks). It also pins down the client behaviour the services
//! rely on: idempotent acks=all produce, unordered `insert_many` with a duplicate `_id`
//! reporting a per-document E11000 while inserting the rest, sorted find with skip/limit,
//! `count_documents`, Kafka keeping its data across a broker restart, and the store
//! surviving a crash (SIGKILL) of its PostgreSQL.
//!
//! The first run provisions Kafka and builds FerretDB (minutes); later runs take ~30 s.
//! Run: `cargo test -p wiberctl --test local_runtime -- --nocapture`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

mod support;

use wiberctl::provision;
use wiberctl::runtime::local::{LocalStack, LocalStackConfig, Ownership};
use wiberctl::runtime::{InstanceId, Runtime, Service, Signal};

const TOPIC: &str = "wiber.runtime-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stack_kafka_and_ferretdb() -> Result<()> {
    // --- provisioning: cold (maybe) and warm ---
    let root = provision::repo_root()?;
    let t = Instant::now();
    let prov = tokio::task::spawn_blocking({
        let root = root.clone();
        move || provision::ensure(&root)
    })
    .await??;
    eprintln!(
        "[timing] provision::ensure (first call in this run): {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    let again = provision::ensure(&root)?;
    eprintln!("[timing] provision::ensure (warm): {:.2?}", t.elapsed());
    assert_eq!(prov, again);

    // --- Kafka, PostgreSQL + FerretDB only (the services are tested elsewhere) ---
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("local-runtime-{}", uuid::Uuid::new_v4().simple()));
    let mut cfg = LocalStackConfig::new(&dir);
    cfg.consumers = 0;
    cfg.apis = 0;
    let t = Instant::now();
    let stack = LocalStack::up(cfg, &prov).await?;
    eprintln!(
        "[timing] stack up (Kafka, PostgreSQL, FerretDB): {:.2?}; bootstrap {} postgres {} mongo {}",
        t.elapsed(),
        stack.bootstrap(),
        stack.postgres_url(),
        stack.mongo_uri()
    );
    let kafka = InstanceId::first(Service::Kafka);
    let mongo = InstanceId::first(Service::Mongo);
    assert_states(
        &stack,
        &[
            ("kafka#1", "running"),
            ("postgres#1", "running"),
            ("mongo#1", "running"),
        ],
    )
    .await?;

    // Per-component start-up times, measured by restarting each.
    let t = Instant::now();
    stack.restart(&mongo).await?;
    eprintln!(
        "[timing] FerretDB restart (stop + start until accepting): {:.2?}",
        t.elapsed()
    );

    // --- Kafka: create topic, idempotent acks=all produce, consume back ---
    let (partition, offset) = kafka_produce(&stack.bootstrap()).await?;
    let payload = kafka_read(&stack.bootstrap(), partition, offset).await?;
    assert_eq!(payload, "hello from the runtime test");

    // --- FerretDB through the official driver ---
    mongo_checks(&stack.mongo_uri()).await?;

    // --- pause/unpause is visible in list() and really freezes the server ---
    stack.pause(&mongo).await?;
    assert_states(&stack, &[("mongo#1", "paused")]).await?;
    stack.unpause(&mongo).await?;
    assert_states(&stack, &[("mongo#1", "running")]).await?;
    let client = mongodb::Client::with_uri_str(stack.mongo_uri()).await?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await?;

    // --- Kafka stop/start on the same data dir and ports keeps topic and record ---
    let t = Instant::now();
    stack.stop(&kafka).await?;
    eprintln!("[timing] Kafka graceful stop: {:.2?}", t.elapsed());
    assert_states(&stack, &[("kafka#1", "exited")]).await?;
    let t = Instant::now();
    stack.start(&kafka).await?;
    eprintln!(
        "[timing] Kafka start (until ApiVersions answers): {:.2?}",
        t.elapsed()
    );
    let info = stack.list().await?;
    let k = info.iter().find(|i| i.id == kafka).unwrap();
    assert_eq!((k.state.name(), k.restarts), ("running", 1));
    let payload = kafka_read(&stack.bootstrap(), partition, offset).await?;
    assert_eq!(
        payload, "hello from the runtime test",
        "record lost across a Kafka restart"
    );

    // --- another process's view: state.json ---
    let loaded = LocalStack::load(stack.dir())?;
    let pids = |v: Vec<wiberctl::runtime::InstanceInfo>| {
        v.into_iter()
            .map(|i| (i.id, i.pid_or_container))
            .collect::<Vec<_>>()
    };
    assert_eq!(pids(loaded.list().await?), pids(stack.list().await?));
    drop(loaded); // detached handle: must not kill anything
    assert_states(&stack, &[("kafka#1", "running"), ("mongo#1", "running")]).await?;

    let logs = stack.logs(&kafka, 200).await?;
    assert!(
        logs.contains("Kafka Server started"),
        "unexpected Kafka log tail:\n{logs}"
    );
    assert!(stack.disconnect(&kafka).await.is_err());

    stack.down().await?;
    assert_states(
        &stack,
        &[
            ("kafka#1", "exited"),
            ("postgres#1", "exited"),
            ("mongo#1", "exited"),
        ],
    )
    .await?;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Detached mode (what `wiberctl stack up --runtime local` uses): the processes outlive the
/// handle that started them, and another handle re-opened from `state.json` manages them,
/// down to a crash of the store's PostgreSQL: SIGKILLed and restarted, it keeps what was
/// stored, and a message sent after the recovery is stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_stack_outlives_its_handle() -> Result<()> {
    let root = provision::repo_root()?;
    let prov = tokio::task::spawn_blocking(move || provision::ensure(&root)).await??;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("local-detached-{}", uuid::Uuid::new_v4().simple()));
    let mut cfg = LocalStackConfig::new(&dir);
    cfg.consumers = 1;
    cfg.apis = 1;
    // Quick failure detection keeps the test short (as the other e2e tests do).
    cfg.extra_env
        .push(("KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()));
    cfg.ownership = Ownership::Detached;
    let result = async {
        let stack = LocalStack::up(cfg, &prov).await?;
        let mongo_uri = stack.mongo_uri();
        drop(stack); // a detached stack keeps running
        let again = LocalStack::load(&dir)?;
        assert_states(
            &again,
            &[
                ("kafka#1", "running"),
                ("postgres#1", "running"),
                ("mongo#1", "running"),
                ("api#1", "running"),
                ("consumer#1", "running"),
            ],
        )
        .await?;
        let client = mongodb::Client::with_uri_str(&mongo_uri).await?;
        client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        let mongo = InstanceId::first(Service::Mongo);
        again.restart(&mongo).await?;
        let info = again.list().await?;
        let m = info.iter().find(|i| i.id == mongo).unwrap();
        assert_eq!((m.state.name(), m.restarts), ("running", 1));
        postgres_crash_is_survived(&again).await?;
        anyhow::Ok(())
    }
    .await;
    // Always clean up: detached processes would otherwise outlive the test.
    if let Ok(stack) = LocalStack::load(&dir) {
        stack.down().await?;
        assert_states(
            &stack,
            &[
                ("kafka#1", "exited"),
                ("postgres#1", "exited"),
                ("mongo#1", "exited"),
                ("consumer#1", "exited"),
            ],
        )
        .await?;
    }
    result?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A message is stored; postgres#1 (the postmaster) is SIGKILLed and restarted; the
/// message is still there, the project's setup still equips the collection, and a
/// message sent after the recovery is stored exactly once.
async fn postgres_crash_is_survived(stack: &LocalStack) -> Result<()> {
    let postgres = InstanceId::first(Service::Postgres);
    let http = support::http();
    let api = stack.api_url();
    let (a, b) = support::users("pgkill");
    let coll = support::collection(stack).await;
    let send = |id: &'static str| {
        let (http, api, a, b) = (http.clone(), api.clone(), a.clone(), b.clone());
        async move {
            let body = serde_json::json!({"fromUser": a, "toUser": b, "content": id, "messageId": format!("{a}-{id}")});
            let (status, v) = support::post(&http, &api, body).await;
            assert_eq!(status, 200, "POST /messages: {v}");
            format!("{a}-{id}")
        }
    };
    let before = send("before").await;
    let counts = support::wait_stored_once(&coll, std::slice::from_ref(&before)).await;
    assert_eq!(counts[&before], 1, "stored before the crash: {counts:?}");

    // The setup was applied before FerretDB created the collection.
    let check = wiberctl::pg::check_collection(
        &stack.postgres_url(),
        &stack.config().names.db,
        &stack.config().names.collection,
    )
    .await?;
    assert!(check.ok(), "{:?}", check.problems());

    stack.kill(&postgres, Signal::Kill).await?;
    assert_states(stack, &[("postgres#1", "exited")]).await?;
    let t = Instant::now();
    stack.restart(&postgres).await?;
    eprintln!(
        "[timing] postgres#1 restart after SIGKILL (crash recovery until SELECT 1): {:.2?}",
        t.elapsed()
    );
    let info = stack.list().await?;
    let p = info.iter().find(|i| i.id == postgres).unwrap();
    assert_eq!((p.state.name(), p.restarts), ("running", 1), "{p:?}");
    assert!(p.address.starts_with("postgres://127.0.0.1:"), "{p:?}");

    let after = send("after").await;
    let ids = [before, after];
    let counts = support::wait_stored_once(&coll, &ids).await;
    assert!(
        counts.values().all(|&n| n == 1),
        "each message stored once across the crash: {counts:?}"
    );
    Ok(())
}

async fn assert_states(stack: &LocalStack, want: &[(&str, &str)]) -> Result<()> {
    let list = stack.list().await?;
    for (id, state) in want {
        let info = list
            .iter()
            .find(|i| i.id.to_string() == *id)
            .with_context(|| format!("{id} missing from {list:?}"))?;
        assert_eq!(info.state.name(), *state, "{id}: {info:?}");
    }
    Ok(())
}

async fn kafka_produce(bootstrap: &str) -> Result<(i32, i64)> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("creating topic {topic}: {code:?}");
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()?;
    let t = Instant::now();
    let delivery = producer
        .send(
            FutureRecord::to(TOPIC)
                .key("alice|bob")
                .payload("hello from the runtime test"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing with acks=all")?;
    eprintln!(
        "[timing] first idempotent produce (incl. producer id + metadata): {:.2?}",
        t.elapsed()
    );
    Ok((delivery.partition, delivery.offset))
}

/// Reads the record at (partition, offset) with a fresh consumer (bounded: 60 s).
async fn kafka_read(bootstrap: &str, partition: i32, offset: i64) -> Result<String> {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("runtime-test-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()?;
        let md = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(20))?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == TOPIC)
            .context("topic missing")?;
        if topic.error().is_some() || topic.partitions().len() != 3 {
            bail!(
                "topic {TOPIC} metadata: error {:?}, {} partitions",
                topic.error(),
                topic.partitions().len()
            );
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(msg) = consumer.poll(Duration::from_millis(500)) {
                let msg = msg?;
                assert_eq!(msg.key(), Some(&b"alice|bob"[..]));
                return Ok(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
            }
        }
        bail!("no record at {TOPIC}/{partition}@{offset} within 60 s")
    })
    .await?
}

async fn mongo_checks(uri: &str) -> Result<()> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let coll = client
        .database("wiber_test")
        .collection::<Document>("messages");
    coll.drop().await?;

    // messageId as _id gives uniqueness without a secondary index; a unique secondary
    // index is checked too, since FerretDB implements both.
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"conversation": 1, "seq": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build(),
    )
    .await?;
    let docs: Vec<Document> = (1..=3)
        .map(|i| doc! {"_id": format!("m{i}"), "messageId": format!("m{i}"), "conversation": "a|b", "seq": i})
        .collect();
    coll.insert_many(docs).await?;

    // Unordered batch with one duplicate _id (m2) and one duplicate (conversation, seq).
    let batch = vec![
        doc! {"_id": "m4", "messageId": "m4", "conversation": "a|b", "seq": 4},
        doc! {"_id": "m2", "messageId": "m2", "conversation": "a|b", "seq": 2},
        doc! {"_id": "m5", "messageId": "m5", "conversation": "a|b", "seq": 5},
        doc! {"_id": "m6", "messageId": "m6", "conversation": "a|b", "seq": 1},
    ];
    let err = coll
        .insert_many(batch)
        .ordered(false)
        .await
        .expect_err("duplicates must be reported");
    let ErrorKind::InsertMany(ime) = err.kind.as_ref() else {
        bail!("expected an InsertMany error, got {err:?}");
    };
    let mut failed: Vec<(usize, i32)> = ime
        .write_errors
        .as_ref()
        .context("no writeErrors")?
        .iter()
        .map(|e| (e.index, e.code))
        .collect();
    failed.sort();
    assert_eq!(failed, vec![(1, 11000), (3, 11000)], "{ime:?}");
    assert!(ime.write_concern_error.is_none(), "{ime:?}");

    assert_eq!(coll.count_documents(doc! {}).await?, 5);
    assert_eq!(coll.count_documents(doc! {"seq": {"$gte": 4}}).await?, 2);
    let page: Vec<Document> = coll
        .find(doc! {"conversation": "a|b"})
        .sort(doc! {"seq": -1, "_id": 1})
        .skip(1)
        .limit(2)
        .await?
        .try_collect()
        .await?;
    let ids: Vec<&str> = page.iter().map(|d| d.get_str("_id").unwrap()).collect();
    assert_eq!(ids, vec!["m4", "m3"]);

    // Write concern majority+journal is accepted (FerretDB ignores it; durability is
    // PostgreSQL's commit).
    let wc = mongodb::options::WriteConcern::builder()
        .w(mongodb::options::Acknowledgment::Majority)
        .journal(true)
        .build();
    client
        .database("wiber_test")
        .collection_with_options::<Document>(
            "messages",
            mongodb::options::CollectionOptions::builder()
                .write_concern(wc)
                .build(),
        )
        .insert_one(doc! {"_id": "m7", "conversation": "c|d", "seq": 1})
        .await?;
    assert_eq!(coll.count_documents(doc! {}).await?, 6);
    Ok(())
}
