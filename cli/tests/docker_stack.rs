//! `wiberctl stack` and `wiberctl chaos` against the real Docker engine (no mocked API):
//! the real `wiberctl` binary brings a stack up on the offline images, faults are
//! injected under traffic, and MongoDB is read directly to check that every
//! acknowledged message is stored exactly once.
//!
//! Needs: a Docker engine (started by `docker/offline/ensure-engine.sh` when missing)
//! and `target/debug/wiber-server` (`cargo build -p wiber-server`; cargo cannot build it
//! from inside this test). The images are built by `docker/offline/build.sh` (cached:
//! seconds when warm). Each test uses its own project and free ports and always runs
//! `stack down --volumes` at the end, even on failure. Stack tests run one at a time
//! (2 cores).
//!
//! Run: `cargo build -p wiber-server && cargo test -p wiberctl --test docker_stack -- --nocapture`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use support::*;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");

/// One stack at a time on two cores; also builds the images once per test binary.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static IMAGES: OnceLock<()> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    IMAGES.get_or_init(build_images);
    guard
}

fn build_images() {
    let t = Instant::now();
    ensure_offline_images();
    eprintln!(
        "[timing] ensure-engine + build.sh (kafka, postgres, ferretdb, server): {:.1?}",
        t.elapsed()
    );
}

/// A stack of the test's own: unique project, free ports, events file in a temp dir.
/// Dropping it runs `stack down --volumes` (also when the test panics).
struct TestStack {
    project: String,
    api_port: u16,
    mongo_port: u16,
    kafka_port: u16,
    postgres_port: u16,
    events: PathBuf,
}

impl TestStack {
    fn new(tag: &str) -> TestStack {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let project = format!("t{tag}{}", &id[..8]);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docker-stack-{project}"));
        std::fs::create_dir_all(&dir).unwrap();
        TestStack {
            events: dir.join("events.jsonl"),
            project,
            api_port: free_port(),
            mongo_port: free_port(),
            kafka_port: free_port(),
            postgres_port: free_port(),
        }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Runs `wiberctl` with this stack's project, events file and API URL.
    fn wiberctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(WIBERCTL);
        cmd.args(args)
            .env("WIBER_PROJECT", &self.project)
            .env("WIBER_EVENTS", &self.events)
            .env("WIBER_API_URL", self.api_url())
            .env("WIBER_ROOT", repo_root());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run wiberctl {args:?}: {e}"))
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.wiberctl(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "wiberctl {args:?}: {}",
            describe(&out)
        );
        out
    }

    fn up(&self) -> Duration {
        let t = Instant::now();
        self.up_with(&[]);
        t.elapsed()
    }

    /// `stack up` with the test's ports and `extra` flags; expects exit 0.
    fn up_with(&self, extra: &[&str]) -> Output {
        let (a, m, k, p) = (
            self.api_port.to_string(),
            self.mongo_port.to_string(),
            self.kafka_port.to_string(),
            self.postgres_port.to_string(),
        );
        self.expect(
            &[
                "stack",
                "up",
                "--consumers",
                "2",
                "--images",
                "offline",
                "--api-port",
                &a,
                "--mongo-port",
                &m,
                "--kafka-port",
                &k,
                "--postgres-port",
                &p,
            ]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>(),
            0,
        )
    }

    /// `stack status --json` (exit code 0 or 1, both fine here).
    fn status(&self) -> Value {
        let out = self.wiberctl(&["stack", "status", "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "stack status: {}",
            describe(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status JSON: {e}: {}", describe(&out)))
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event line is JSON"))
            .collect()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let t = Instant::now();
        let out = self.wiberctl(&["stack", "down", "--volumes", "--runtime", "docker"]);
        eprintln!(
            "[timing] stack down --volumes ({}): {:.1?} ({})",
            self.project,
            t.elapsed(),
            out.status
        );
        if !out.status.success() {
            eprintln!("stack down failed: {}", describe(&out));
        }
    }
}

/// The status entry of one instance.
fn container<'a>(status: &'a Value, instance: &str) -> &'a Value {
    status["containers"]
        .as_array()
        .expect("containers array")
        .iter()
        .find(|c| c["instance"] == instance)
        .unwrap_or_else(|| panic!("{instance} not in status: {status:#}"))
}

/// Polls `stack status` until `cond` holds (bounded).
fn wait_status(
    stack: &TestStack,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stack.status();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last status: {s:#}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn kill_and_restart_a_consumer_under_traffic_stores_every_ack_once() {
    let _one = exclusive();
    let stack = TestStack::new("k");
    let cold = stack.up();
    eprintln!("[timing] cold stack up (images present, no containers/volumes): {cold:.1?}");

    let s = stack.status();
    assert_eq!(s["ok"], true, "{s:#}");
    assert_eq!(
        s["containers"].as_array().unwrap().len(),
        6,
        "kafka, postgres, mongo, api, 2 consumers: {s:#}"
    );
    for c in s["containers"].as_array().unwrap() {
        assert_eq!(c["state"], "running", "{c}");
    }
    // FerretDB's PostgreSQL: a service of its own, healthy, reachable from the host.
    let pg = container(&s, "postgres#1");
    assert_eq!(pg["health"], "healthy", "{pg}");
    assert_eq!(
        pg["address"],
        format!("postgres://127.0.0.1:{}", stack.postgres_port)
    );
    assert_eq!(
        s["postgres_url"],
        format!(
            "postgres://wiber@127.0.0.1:{}/ferretdb",
            stack.postgres_port
        ),
        "{s:#}"
    );

    // Traffic: `wiberctl send` in a bounded loop, each with a client message id.
    const N: usize = 120;
    let (from, to) = (
        format!("alice-{}", stack.project),
        format!("bob-{}", stack.project),
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (sent, from, to, url, project) = (
            sent.clone(),
            from.clone(),
            to.clone(),
            stack.api_url(),
            stack.project.clone(),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            let mut outcomes: Vec<(String, Option<i32>)> = Vec::new();
            for i in 0..N {
                if Instant::now() > deadline {
                    break;
                }
                let id = format!("{project}-{i:04}");
                let out = Command::new(WIBERCTL)
                    .args([
                        "--api-url",
                        &url,
                        "--timeout",
                        "10s",
                        "send",
                        "--from",
                        &from,
                        "--to",
                        &to,
                        "--id",
                        &id,
                    ])
                    .arg(format!("message {i}"))
                    .output()
                    .expect("run wiberctl send");
                outcomes.push((id, out.status.code()));
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            outcomes
        })
    };
    let wait_sent = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while sent.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    wait_sent(N / 4);
    let out = stack.expect(&["chaos", "kill", "consumer#1", "--json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["actions"][0]["action"], "kill", "{report:#}");
    let s = stack.status();
    assert_eq!(container(&s, "consumer#1")["state"], "exited", "{s:#}");
    assert_eq!(s["ok"], false);

    wait_sent(3 * N / 4);
    let t = Instant::now();
    stack.expect(&["chaos", "restart", "consumer#1"], 0);
    eprintln!("[timing] chaos restart consumer#1: {:.1?}", t.elapsed());

    let outcomes = sender.join().expect("sender thread");
    assert_eq!(
        outcomes.len(),
        N,
        "the send loop was cut short by its deadline"
    );
    let acked: Vec<&str> = outcomes
        .iter()
        .filter(|(_, c)| *c == Some(0))
        .map(|(id, _)| id.as_str())
        .collect();
    let unknown: Vec<&str> = outcomes
        .iter()
        .filter(|(_, c)| *c == Some(2))
        .map(|(id, _)| id.as_str())
        .collect();
    let refused = outcomes.iter().filter(|(_, c)| *c == Some(1)).count();
    eprintln!(
        "sent {N}: {} acknowledged, {} unknown, {refused} refused",
        acked.len(),
        unknown.len()
    );
    assert!(
        acked.len() >= N * 9 / 10,
        "the API (not the consumers) was faulted: most sends must be acked"
    );
    assert_eq!(refused, 0, "no send should be refused: {outcomes:?}");

    let t = Instant::now();
    let s = wait_status(
        &stack,
        "lag 0 with every instance up",
        Duration::from_secs(120),
        |s| s["ok"] == true && s["lag_error"].is_null() && s["total_lag"] == 0,
    );
    eprintln!(
        "[timing] lag drained to 0 after the restart: {:.1?}",
        t.elapsed()
    );
    assert_eq!(container(&s, "consumer#1")["state"], "running");
    assert!(
        container(&s, "consumer#1")["restarts"].as_u64().unwrap() >= 1,
        "{s:#}"
    );
    assert!(s["lag"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lag"] == 0 && p["partition"].is_i64()));

    // Lag 0 means committed; the API count and MongoDB itself must agree.
    let out = stack.expect(&["count", "--user1", &from, "--user2", &to, "--json"], 0);
    let count = serde_json::from_slice::<Value>(&out.stdout).unwrap()["count"]
        .as_u64()
        .unwrap() as usize;
    let stored = stored_ids(stack.mongo_port, &from);
    assert_eq!(
        count,
        stored.values().sum::<usize>(),
        "API count vs MongoDB"
    );
    for id in &acked {
        assert_eq!(
            stored.get(*id),
            Some(&1),
            "acknowledged {id} must be stored exactly once"
        );
    }
    for id in &unknown {
        assert!(
            stored.get(*id).copied().unwrap_or(0) <= 1,
            "{id} stored more than once"
        );
    }
    let expected: std::collections::HashSet<&str> =
        acked.iter().chain(unknown.iter()).copied().collect();
    for id in stored.keys() {
        assert!(expected.contains(id.as_str()), "{id} stored but never sent");
    }

    let evs = stack.events();
    let actions: Vec<&str> = evs.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["kill", "restart"], "{evs:?}");
    assert!(evs
        .iter()
        .all(|e| e["result"] == "ok" && e["target"] == "consumer#1" && e["time_ms"].is_i64()));

    // The store's PostgreSQL crashes (SIGKILL of its container) and is restarted: what
    // was stored stays, and a message sent after the recovery is stored once.
    stack.expect(&["chaos", "kill", "postgres#1"], 0);
    assert_eq!(container(&stack.status(), "postgres#1")["state"], "exited");
    let t = Instant::now();
    stack.expect(&["chaos", "restart", "postgres#1"], 0);
    eprintln!(
        "[timing] chaos restart postgres#1 after a kill (until healthy): {:.1?}",
        t.elapsed()
    );
    let s = stack.status();
    let pg = container(&s, "postgres#1");
    assert_eq!(
        (&pg["state"], &pg["health"]),
        (&"running".into(), &"healthy".into()),
        "{pg}"
    );
    let id = format!("{}-after-postgres", stack.project);
    stack.expect(
        &[
            "send",
            "--from",
            &from,
            "--to",
            &to,
            "--id",
            &id,
            "after the crash",
        ],
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let stored = loop {
        let stored = stored_ids(stack.mongo_port, &from);
        if stored.contains_key(&id) || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stored.get(&id), Some(&1), "stored once after the crash");
    for id in &acked {
        assert_eq!(stored.get(*id), Some(&1), "{id} kept across the crash");
    }
}

/// messageId -> how many documents carry it, for one sender.
fn stored_ids(mongo_port: u16, from: &str) -> HashMap<String, usize> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let uri = format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true&serverSelectionTimeoutMS=10000");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("mongodb client");
        let coll = client.database("wiber").collection::<Document>("messages");
        let docs: Vec<Document> = coll
            .find(doc! {"fromUser": from})
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("read documents");
        let mut out = HashMap::new();
        for d in docs {
            let id = d.get_str("messageId").expect("messageId").to_string();
            assert_eq!(d.get_str("_id").ok(), Some(id.as_str()), "_id = messageId");
            *out.entry(id).or_insert(0) += 1;
        }
        out
    })
}

#[test]
fn pause_disconnect_and_dry_run_show_in_status() {
    let _one = exclusive();
    let stack = TestStack::new("p");
    let cold = stack.up();
    eprintln!("[timing] cold stack up: {cold:.1?}");
    let warm = stack.up();
    eprintln!("[timing] warm stack up (stack already running): {warm:.1?}");
    assert!(
        warm < Duration::from_secs(15),
        "a warm up should be a quick no-op, took {warm:?}"
    );
    // Another --service-env: the api and the consumers are recreated with it (their
    // environment is fixed at creation), the rest is left running.
    let old = stack.status();
    let out = stack.up_with(&["--service-env", "WIBER_TEST_MARK=recreated"]);
    let said = String::from_utf8_lossy(&out.stderr);
    for (instance, action) in [
        ("kafka#1", "running"),
        ("mongo#1", "running"),
        ("consumer#1", "recreated"),
        ("consumer#2", "recreated"),
        ("api#1", "recreated"),
    ] {
        assert!(
            said.lines()
                .any(|l| l.contains(instance) && l.contains(action)),
            "{instance} should be {action}: {}",
            describe(&out)
        );
    }
    let before = stack.status();
    assert_eq!(before["ok"], true, "{before:#}");
    assert_eq!(
        container(&before, "kafka#1")["container"],
        container(&old, "kafka#1")["container"]
    );
    let consumer = container(&before, "consumer#1")["container"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(consumer, container(&old, "consumer#1")["container"]);
    let env = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Env}}", &consumer])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&env.stdout).contains("WIBER_TEST_MARK=recreated"),
        "{}",
        describe(&env)
    );

    // --dry-run touches nothing: no action, no event.
    let out = stack.expect(&["chaos", "kill", "consumer#1", "--dry-run"], 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would kill consumer#1"),
        "{}",
        describe(&out)
    );
    stack.expect(&["chaos", "kill-consumer", "--dry-run", "--json"], 0);
    // Kafka roles are asked of the real broker (DescribeQuorum, FindCoordinator, metadata):
    // on one broker each is kafka#1.
    for role in [
        "kafka:controller",
        "kafka:coordinator(wiber-consumers)",
        "kafka:leader(wiber.messages/0)",
    ] {
        let out = stack.expect(&["chaos", "kill", role, "--dry-run"], 0);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("is kafka#1 now") && said.contains("would kill kafka#1"),
            "{role}: {}",
            describe(&out)
        );
    }
    assert!(!stack.events.exists(), "a dry run must not write events");
    let after = stack.status();
    assert_eq!(after["ok"], true);
    for c in ["consumer#1", "consumer#2"] {
        assert_eq!(
            container(&after, c)["started_at"],
            container(&before, c)["started_at"],
            "{c} untouched"
        );
    }

    // An instance the stack does not have: a clear error naming what it has, exit 2.
    let out = stack.expect(&["chaos", "kill", "consumer#9"], 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consumer#9") && err.contains("consumer#2"),
        "{err}"
    );

    // pause / unpause
    stack.expect(&["chaos", "pause", "consumer#2"], 0);
    let s = stack.status();
    assert_eq!(container(&s, "consumer#2")["state"], "paused", "{s:#}");
    assert_eq!(s["ok"], false);
    stack.expect(&["stack", "status"], 1);
    stack.expect(&["chaos", "unpause", "consumer#2"], 0);
    assert_eq!(container(&stack.status(), "consumer#2")["state"], "running");
    // Undo actions are idempotent: unpausing a running instance (the engine itself
    // answers 409) is a no-op, so a rollback can never fail on a fault already undone.
    stack.expect(&["chaos", "unpause", "consumer#2"], 0);
    assert_eq!(container(&stack.status(), "consumer#2")["state"], "running");

    // disconnect / reconnect (a network partition of one container)
    stack.expect(&["chaos", "disconnect", "consumer#1"], 0);
    let s = stack.status();
    assert_eq!(
        container(&s, "consumer#1")["network"],
        "disconnected",
        "{s:#}"
    );
    assert_eq!(container(&s, "consumer#1")["state"], "running");
    assert_eq!(s["ok"], false);
    stack.expect(&["chaos", "reconnect", "consumer#1"], 0);
    assert_eq!(
        container(&stack.status(), "consumer#1")["network"],
        "connected"
    );
    stack.expect(&["chaos", "reconnect", "consumer#1"], 0);

    // --for undoes by itself, and the undo is logged too.
    let t = Instant::now();
    stack.expect(&["chaos", "pause", "random:consumer", "--for", "2s"], 0);
    assert!(t.elapsed() >= Duration::from_secs(2));
    let s = wait_status(
        &stack,
        "everything up again",
        Duration::from_secs(60),
        |s| s["ok"] == true,
    );
    assert!(s["containers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "running"));

    let evs = stack.events();
    let actions: Vec<&str> = evs.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "pause",
            "unpause",
            "unpause",
            "disconnect",
            "reconnect",
            "reconnect",
            "pause",
            "unpause"
        ],
        "{evs:?}"
    );
    assert!(evs
        .iter()
        .all(|e| e["result"] == "ok" && !e["container"].as_str().unwrap().is_empty()));

    // A network fault outlives the wiberctl that applied it, and is still healed: the
    // rule is recorded before it is applied, so SIGKILL during --for leaves a record that
    // `stack status` lists and `chaos heal` removes, rule and record.
    let mut chaos = Command::new(WIBERCTL)
        .args([
            "chaos",
            "partition",
            "consumer#1",
            "--peers",
            "mongo",
            "--for",
            "120s",
        ])
        .env("WIBER_PROJECT", &stack.project)
        .env("WIBER_EVENTS", &stack.events)
        .env("WIBER_ROOT", repo_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rules = |project: &str| -> String {
        let pid = Command::new("docker")
            .args(["inspect", "--format", "{{.State.Pid}}"])
            .arg(format!("{project}-consumer-1"))
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables", "-S"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let s = wait_status(
        &stack,
        "the partition recorded",
        Duration::from_secs(60),
        |s| s["network_faults"].as_array().is_some_and(|f| f.len() == 1),
    );
    assert_eq!(s["network_faults"][0]["instance"], "consumer#1", "{s:#}");
    // Recorded before applied: wait (bounded) for the rule itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rules(&stack.project).contains("WIBER-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    chaos.kill().unwrap(); // SIGKILL: no undo runs
    chaos.wait().unwrap();
    assert!(
        rules(&stack.project).contains("-j WIBER-"),
        "the rule stays after SIGKILL"
    );
    let out = stack.expect(&["chaos", "heal"], 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("partition from"),
        "{}",
        describe(&out)
    );
    assert!(!rules(&stack.project).contains("WIBER-"), "healed");
    let s = stack.status();
    assert_eq!(
        s["network_faults"].as_array().map(Vec::len),
        Some(0),
        "{s:#}"
    );
    // A network fault on the api (the host's network) is refused: it would cut the host.
    let out = stack.expect(&["chaos", "loss", "api#1", "--percent", "10"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host's network"),
        "{}",
        describe(&out)
    );

    let out = stack.expect(&["stack", "logs", "consumer", "--tail", "5"], 0);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("==> consumer#1 <==") && logs.contains("==> consumer#2 <=="),
        "{logs}"
    );

    // The api runs on the host's network (no docker-proxy on the request path): it
    // listens on 127.0.0.1:<api port> itself, counts as connected, and a network fault
    // on it is refused with the reason instead of the engine's error.
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.NetworkMode}}"])
        .arg(format!("{}-api-1", stack.project))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "host");
    let s = stack.status();
    let api = container(&s, "api#1");
    assert_eq!(api["network"], "connected", "{s:#}");
    assert!(
        api.to_string().contains(&stack.api_url()),
        "the api's address is its host port: {api:#}"
    );
    let out = stack.expect(&["chaos", "disconnect", "api#1"], 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host's network"), "{err}");
}

#[test]
fn unknown_targets_and_missing_stacks_are_clear_errors() {
    let stack = TestStack::new("u"); // never brought up
    let out = stack.expect(&["chaos", "kill", "zookeeper"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown service \"zookeeper\""),
        "{}",
        describe(&out)
    );
    let out = stack.expect(&["chaos", "kill"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a TARGET"),
        "{}",
        describe(&out)
    );
    let out = stack.expect(&["chaos", "kill", "consumer#1"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no stack found"),
        "{}",
        describe(&out)
    );
    let out = stack.expect(&["stack", "status"], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wiberctl stack up"),
        "{}",
        describe(&out)
    );
    stack.expect(&["chaos", "restart", "consumer#1", "--for", "1s"], 2);
    assert!(!stack.events.exists());
}
