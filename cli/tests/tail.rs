//! `wiberctl tail` end to end, through the real binary against a real local stack
//! (Kafka, FerretDB, api, two consumers): tails started at the end see exactly the
//! filtered messages sent after they started (not the older ones), with partition,
//! offset and key, in per-partition offset order; `--stored` shows the same messages
//! with the partition/offset the consumers stored; `--from-beginning`, `--last`, the
//! `--count`/`--for` exit codes and Ctrl-C behave as documented.
//!
//! Run: `cargo build --workspace && cargo test -p wiberctl --test tail -- --nocapture`

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use serde_json::{json, Value};
use support::*;
use wiber_model::conversation_key;
use wiberctl::runtime::local::LocalStack;
use wiberctl::runtime::{InstanceId, Runtime, Service};

/// A running `wiberctl tail`, its stdout lines and stderr collected by threads.
struct Tail {
    name: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

fn spawn_tail(name: &'static str, args: &[&str]) -> Tail {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wiberctl"))
        .arg("tail")
        .args(args)
        // Only the flags say where the stack is: no stack lookup, no stray variables.
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("KAFKA_TOPIC")
        .env_remove("MONGO_URI")
        .env(
            "WIBER_PROJECT",
            format!("tail-test-none-{}", std::process::id()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wiberctl tail");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let lines = stdout.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(l);
        }
    });
    let text = stderr.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let mut t = text.lock().unwrap();
            t.push_str(&l);
            t.push('\n');
        }
    });
    Tail {
        name,
        child,
        stdout,
        stderr,
    }
}

impl Tail {
    /// Waits (bounded) until the tail has its partitions assigned: only then does a
    /// tail started at the end see what is sent next.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stderr.lock().unwrap().contains("tail: following") {
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "tail {} exited {s} before following: {}",
                    self.name,
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tail {} not following within 30 s: {}",
                self.name,
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) for the exit; returns the exit code, the JSON lines and stderr.
    async fn finish(mut self, within: Duration) -> (i32, Vec<Value>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tail {} still running after {within:?}; stderr: {}\nstdout: {:?}",
                    self.name,
                    self.stderr.lock().unwrap(),
                    self.stdout.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The reader threads end at EOF, right after the exit.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines = self
            .stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("tail {}: not a JSON line ({e}): {l}", self.name))
            })
            .collect();
        let stderr = self.stderr.lock().unwrap().clone();
        eprintln!("--- tail {} stderr:\n{stderr}", self.name);
        (status.code().unwrap_or(-1), lines, stderr)
    }
}

/// Sends `from → to` with a client-chosen id; panics unless Kafka acknowledged it.
async fn send(http: &reqwest::Client, api: &str, from: &str, to: &str, id: &str) {
    let (status, body) = post(
        http,
        api,
        json!({"fromUser": from, "toUser": to, "content": format!("content of {id}"), "messageId": id}),
    )
    .await;
    assert_eq!(status, 200, "POST {id}: {body}");
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["messageId"].as_str().expect("a messageId").to_string())
        .collect()
}

/// Offsets must grow within each partition, in the order the lines came.
fn assert_partition_order(name: &str, lines: &[Value]) {
    let mut last: HashMap<i64, i64> = HashMap::new();
    for l in lines {
        let (p, o) = (
            l["partition"].as_i64().unwrap(),
            l["offset"].as_i64().unwrap(),
        );
        if let Some(prev) = last.insert(p, o) {
            assert!(
                o > prev,
                "{name}: partition {p} offset {o} came after {prev}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_shows_exactly_the_filtered_messages_from_kafka_and_from_the_store() {
    let stack: LocalStack = start_stack("tail", 2, &[]).await;
    let api = stack.api_url();
    let bootstrap = stack.bootstrap();
    let mongo = stack.mongo_uri();
    let names = stack.config().names;
    let http = http();
    let (a1, b1) = users("t1");
    let (a2, b2) = users("t2");
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];

    // Older messages of conversation 1, acknowledged before any tail starts.
    let old: Vec<String> = (0..3).map(|i| format!("old-{run}-{i}")).collect();
    for id in &old {
        send(&http, &api, &a1, &b1, id).await;
    }

    let conv1 = format!("{a1},{b1}");
    let kafka = [
        "--bootstrap",
        &bootstrap,
        "--topic",
        &names.topic,
        "--json",
        "--for",
        "60s",
    ];
    let store = [
        "--stored",
        "--mongo-uri",
        &mongo,
        "--mongo-db",
        &names.db,
        "--mongo-collection",
        &names.collection,
        "--group",
        &names.group,
    ];
    // Three tails from the end: a conversation (Kafka), one direction (Kafka), a user (store).
    let mut t_conv = spawn_tail(
        "conversation",
        &[&kafka[..], &["--conversation", &conv1, "--count", "6"]].concat(),
    );
    let mut t_from = spawn_tail(
        "from",
        &[&kafka[..], &["--from", &a2, "--count", "4"]].concat(),
    );
    let mut t_stored = spawn_tail(
        "stored",
        &[&kafka[..], &store[..], &["--user", &a1, "--count", "6"]].concat(),
    );
    for t in [&mut t_conv, &mut t_from, &mut t_stored] {
        t.ready().await;
    }

    // Interleaved: conversation 1 (both directions) and conversation 2 (a2 → b2 four
    // times, b2 → a2 twice), so a filter that lets anything else through shows it
    // among the first lines.
    let mut sent1 = Vec::new();
    let mut sent2_from_a2 = Vec::new();
    for i in 0..6 {
        let id1 = format!("c1-{run}-{i}");
        let (f, t) = if i % 3 == 2 { (&b1, &a1) } else { (&a1, &b1) };
        send(&http, &api, f, t, &id1).await;
        sent1.push(id1);
        let id2 = format!("c2-{run}-{i}");
        let (f, t) = if i % 3 == 1 { (&b2, &a2) } else { (&a2, &b2) };
        send(&http, &api, f, t, &id2).await;
        if f == &a2 {
            sent2_from_a2.push(id2);
        }
    }
    assert_eq!(sent2_from_a2.len(), 4);

    // Kafka, one conversation: exactly its 6 new messages, in the order sent (one
    // conversation is one key, so one partition), never the 3 older ones.
    let (code, conv_lines, err) = t_conv.finish(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("6 messages shown") && err.contains("--count reached"),
        "{err}"
    );
    assert_eq!(ids(&conv_lines), sent1, "conversation tail");
    let key1 = conversation_key(&a1, &b1);
    for l in &conv_lines {
        assert_eq!(l["source"], "kafka");
        assert_eq!(l["key"], key1.as_str(), "{l}");
        assert!(
            l["kafkaTimestamp"].as_i64().is_some() && l["timestamp"].as_i64().is_some(),
            "{l}"
        );
        let (f, t) = (
            l["fromUser"].as_str().unwrap(),
            l["toUser"].as_str().unwrap(),
        );
        assert!((f == a1 && t == b1) || (f == b1 && t == a1), "{l}");
        assert_eq!(
            l["content"],
            format!("content of {}", l["messageId"].as_str().unwrap())
        );
    }
    assert_partition_order("conversation", &conv_lines);
    let partition1 = conv_lines[0]["partition"].as_i64().unwrap();
    assert!(conv_lines.iter().all(|l| l["partition"] == partition1));

    // Kafka, one direction: the 4 from a2, not the 2 from b2.
    let (code, from_lines, err) = t_from.finish(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&from_lines), sent2_from_a2, "--from tail");
    assert!(from_lines.iter().all(|l| l["fromUser"] == a2.as_str()));
    assert_eq!(from_lines[0]["key"], conversation_key(&a2, &b2).as_str());

    // The store: the same 6 messages, with the partition and offset the consumers
    // stored, equal to what Kafka reported for them.
    let (code, stored_lines, err) = t_stored.finish(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&stored_lines), sent1, "stored tail");
    let kafka_pos: HashMap<String, (i64, i64)> = conv_lines
        .iter()
        .map(|l| {
            (
                l["messageId"].as_str().unwrap().to_string(),
                (
                    l["partition"].as_i64().unwrap(),
                    l["offset"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    for l in &stored_lines {
        assert_eq!(l["source"], "stored");
        assert_eq!(l["key"], key1.as_str());
        let id = l["messageId"].as_str().unwrap();
        let pos = (
            l["partition"].as_i64().unwrap(),
            l["offset"].as_i64().unwrap(),
        );
        assert_eq!(
            Some(&pos),
            kafka_pos.get(id),
            "{id}: stored vs acknowledged position"
        );
        let (stored_at, ts) = (
            l["storedAt"].as_i64().unwrap(),
            l["timestamp"].as_i64().unwrap(),
        );
        assert!(stored_at >= ts, "{l}");
    }
    assert_partition_order("stored", &stored_lines);

    // Everything is stored now; the store says where each message is.
    assert_eq!(
        wait_for_count(&http, &api, &a1, &b1, 9, Duration::from_secs(30)).await,
        9
    );
    assert_eq!(
        wait_for_count(&http, &api, &a2, &b2, 6, Duration::from_secs(30)).await,
        6
    );
    let coll = collection(&stack).await;
    let newest = coll
        .find_one(doc! {"partition": partition1})
        .sort(doc! {"offset": -1})
        .await
        .unwrap()
        .expect("documents of the partition");
    let newest_offset = newest.get_i64("offset").unwrap();

    // From the beginning: the older messages are in the topic (so the tails above left
    // them out because they started at the end), first, then the new ones.
    let t_begin = spawn_tail(
        "beginning",
        &[
            &kafka[..],
            &["--conversation", &conv1, "--from-beginning", "--count", "9"],
        ]
        .concat(),
    );
    // --last 1 of conversation 1's partition: the newest record there, nothing older.
    let p = partition1.to_string();
    let t_last = spawn_tail(
        "last",
        &[
            &kafka[..],
            &["--last", "1", "--partition", &p, "--count", "1"],
        ]
        .concat(),
    );
    // --count not reached within --for: exit 1.
    let t_short = spawn_tail(
        "short",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            &names.topic,
            "--user",
            "nobody-at-all",
            "--count",
            "1",
            "--for",
            "3s",
        ],
    );
    let (code, lines, err) = t_begin.finish(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{err}");
    let expected: Vec<String> = old.iter().chain(&sent1).cloned().collect();
    assert_eq!(ids(&lines), expected, "--from-beginning");
    assert_partition_order("beginning", &lines);

    let (code, lines, err) = t_last.finish(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["partition"].as_i64(), lines[0]["offset"].as_i64()),
        (Some(partition1), Some(newest_offset)),
        "--last 1 shows the partition's newest record"
    );

    let (code, lines, err) = t_short.finish(Duration::from_secs(30)).await;
    assert_eq!(code, 1, "{err}");
    assert!(lines.is_empty());
    assert!(err.contains("--for elapsed after 0 of the 1"), "{err}");

    // Ctrl-C: a clean end with the summary, exit 0.
    let mut t_int = spawn_tail(
        "interrupt",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            &names.topic,
            "--for",
            "60s",
        ],
    );
    t_int.ready().await;
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(t_int.child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let (code, _, err) = t_int.finish(Duration::from_secs(15)).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("messages shown") && err.contains("interrupted"),
        "{err}"
    );

    // Text mode: one kcat-like line per message.
    let out = Command::new(env!("CARGO_BIN_EXE_wiberctl"))
        .args(["tail", "--bootstrap", &bootstrap, "--topic", &names.topic])
        .args([
            "--conversation",
            &conv1,
            "--from-beginning",
            "--count",
            "1",
            "--for",
            "30s",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("p{partition1}@"))
            && text.contains(&format!("[{a1},{b1}] {a1} → {b1}: content of {}", old[0])),
        "{text}"
    );

    // A broker that is not there: exit 2, and the error names it and the fix.
    let dead = format!(
        "127.0.0.1:{}",
        wiberctl::runtime::local::pick_free_port().unwrap()
    );
    let t_dead = spawn_tail(
        "dead",
        &[
            "--bootstrap",
            &dead,
            "--topic",
            &names.topic,
            "--for",
            "30s",
        ],
    );
    let (code, _, err) = t_dead.finish(Duration::from_secs(40)).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&dead) && err.contains("--bootstrap"), "{err}");

    // --stored shows a message once it is stored, not when Kafka has it: with the
    // consumers stopped it shows nothing; once they are back it shows what they store.
    let consumers = [
        InstanceId::new(Service::Consumer, 1),
        InstanceId::new(Service::Consumer, 2),
    ];
    for c in &consumers {
        stack.stop(c).await.expect("stop a consumer");
    }
    let (a3, b3) = users("t3");
    let mut t_wait = spawn_tail(
        "stored-wait",
        &[&kafka[..], &store[..], &["--user", &a3, "--count", "3"]].concat(),
    );
    t_wait.ready().await;
    let sent3: Vec<String> = (0..3).map(|i| format!("c3-{run}-{i}")).collect();
    for id in &sent3 {
        send(&http, &api, &a3, &b3, id).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        t_wait.stdout.lock().unwrap().is_empty(),
        "--stored showed messages no consumer stored: {:?}",
        t_wait.stdout.lock().unwrap()
    );
    assert_eq!(conversation_count(&http, &api, &a3, &b3).await, 0);
    for c in &consumers {
        stack.start(c).await.expect("start a consumer");
    }
    let (code, lines, err) = t_wait.finish(Duration::from_secs(90)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&lines), sent3, "stored after the consumers came back");
    assert!(lines
        .iter()
        .all(|l| l["storedAt"].as_i64() > l["timestamp"].as_i64().map(|t| t + 3000)));

    // A store that is not there: exit 2, naming it and the flag.
    let dead_mongo = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        wiberctl::runtime::local::pick_free_port().unwrap()
    );
    let t_dead = spawn_tail(
        "dead-store",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            &names.topic,
            "--stored",
            "--mongo-uri",
            &dead_mongo,
            "--for",
            "30s",
        ],
    );
    let (code, _, err) = t_dead.finish(Duration::from_secs(40)).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&dead_mongo) && err.contains("--mongo-uri"),
        "{err}"
    );

    stack.down().await.unwrap();
}
