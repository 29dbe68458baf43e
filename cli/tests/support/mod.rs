//! Shared helpers of the end-to-end tests: a real stack (Kafka KRaft broker, FerretDB,
//! `wiber-server api` and consumers as local processes, via the same `LocalStack` that
//! `wiberctl stack up --runtime local` uses), plus small HTTP and MongoDB helpers.
//! Nothing here mocks Kafka or MongoDB.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::Value;
use wiberctl::provision;
use wiberctl::runtime::local::{LocalStack, LocalStackConfig};

/// Brings up a stack in a fresh directory under `target/e2e/` with `consumers` consumer
/// instances and one api. Extra environment goes to the api and consumers.
pub async fn start_stack(name: &str, consumers: u32, extra_env: &[(&str, &str)]) -> LocalStack {
    let root = provision::repo_root().expect("find the repo root");
    let prov = tokio::task::spawn_blocking(move || provision::ensure(&root))
        .await
        .unwrap()
        .expect("provision Kafka and FerretDB");
    let dir = workspace_target()
        .join("e2e")
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    let mut cfg = LocalStackConfig::new(dir);
    cfg.consumers = consumers;
    cfg.apis = 1;
    cfg.extra_env = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Quick failure detection keeps the tests short; the defaults are for production.
    cfg.extra_env
        .push(("KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()));
    cfg.extra_env.push(("RUST_LOG".into(), "info".into()));
    LocalStack::up(cfg, &prov)
        .await
        .expect("bring up the local stack")
}

/// The workspace root (where `docker/`, `scenarios/` and `.wiber/` are).
pub fn repo_root() -> PathBuf {
    provision::repo_root().expect("find the repo root")
}

/// `target/` of the workspace (the test binary lives in `target/debug/deps`).
pub fn workspace_target() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wiber-target"))
}

/// Unique user names for one test, so tests sharing a stack never see each other's data.
pub fn users(tag: &str) -> (String, String) {
    let r = &uuid::Uuid::new_v4().simple().to_string()[..8];
    (format!("{tag}-a-{r}"), format!("{tag}-b-{r}"))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs a message; returns the status and the JSON body.
pub async fn post(http: &reqwest::Client, api: &str, body: Value) -> (u16, Value) {
    let resp = http
        .post(format!("{api}/messages"))
        .json(&body)
        .send()
        .await
        .expect("POST /messages reaches the api");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.expect("GET reaches the api");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let resp = http.get(url).send().await.expect("GET reaches the api");
    resp.text().await.expect("a text body")
}

pub async fn conversation_count(http: &reqwest::Client, api: &str, a: &str, b: &str) -> u64 {
    let (s, v) = get(http, &format!("{api}/messages/count?user1={a}&user2={b}")).await;
    assert_eq!(s, 200, "count answered {v}");
    v["count"].as_u64().unwrap()
}

/// Polls the conversation count until it reaches `n` (bounded); returns the last count.
pub async fn wait_for_count(
    http: &reqwest::Client,
    api: &str,
    a: &str,
    b: &str,
    n: u64,
    within: Duration,
) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let c = conversation_count(http, api, a, b).await;
        if c >= n || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages collection of the stack, read directly (not through the API).
pub async fn collection(stack: &LocalStack) -> mongodb::Collection<Document> {
    let client = mongodb::Client::with_uri_str(stack.mongo_uri())
        .await
        .unwrap();
    let cfg = stack.config();
    client
        .database(&cfg.names.db)
        .collection(&cfg.names.collection)
}

/// How many stored documents carry each of `ids` (0 = lost, 2+ = duplicated).
pub async fn stored_counts(
    coll: &mongodb::Collection<Document>,
    ids: &[String],
) -> std::collections::HashMap<String, u64> {
    try_stored_counts(coll, ids)
        .await
        .unwrap_or_else(|e| panic!("cannot read the store: {e}"))
}

/// [`stored_counts`], with the store's error instead of a panic.
pub async fn try_stored_counts(
    coll: &mongodb::Collection<Document>,
    ids: &[String],
) -> mongodb::error::Result<std::collections::HashMap<String, u64>> {
    use futures::TryStreamExt;
    let mut counts: std::collections::HashMap<String, u64> =
        ids.iter().map(|i| (i.clone(), 0)).collect();
    for chunk in ids.chunks(500) {
        let docs: Vec<Document> = coll
            .find(doc! {"messageId": {"$in": chunk.to_vec()}})
            .await?
            .try_collect()
            .await?;
        for d in docs {
            *counts
                .entry(d.get_str("messageId").unwrap().to_string())
                .or_default() += 1;
        }
    }
    Ok(counts)
}

/// Waits (at most ~60 s) until each of `ids` is stored exactly once, and returns the
/// last counts: the caller asserts on them, so a timeout fails with what was seen.
///
/// A read that fails is retried within the same bound: right after a fault the store
/// may answer an error once (FerretDB hands out a pooled PostgreSQL connection that a
/// restarted server has closed, then drops it), which is not what the caller checks.
pub async fn wait_stored_once(
    coll: &mongodb::Collection<Document>,
    ids: &[String],
) -> std::collections::HashMap<String, u64> {
    let mut last = Err(None);
    for _ in 0..200 {
        match try_stored_counts(coll, ids).await {
            Ok(counts) if counts.values().all(|&n| n == 1) => return counts,
            Ok(counts) => last = Ok(counts),
            Err(e) => {
                if last.is_err() {
                    last = Err(Some(e));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match last {
        Ok(counts) => counts,
        Err(e) => panic!("the store could not be read for ~60 s: {e:?}"),
    }
}

/// Runs `cmd`; panics with its status, stdout and stderr when it cannot run or fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", describe(&out));
    out
}

/// A finished command's status, stdout and stderr, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn free_port() -> u16 {
    wiberctl::runtime::local::pick_free_port().expect("a free port")
}

/// Makes sure a Docker engine answers (installing and starting one if needed) and the
/// offline images exist: Kafka, PostgreSQL, FerretDB, and our server from this
/// workspace's debug build. Both scripts cache by their inputs, so this takes seconds when warm.
pub fn ensure_offline_images() {
    let root = repo_root();
    let server = workspace_target().join("debug").join("wiber-server");
    assert!(
        server.is_file(),
        "{} is missing: build it first with `cargo build -p wiber-server`",
        server.display()
    );
    run_ok(Command::new(root.join("docker/offline/ensure-engine.sh")).current_dir(&root));
    run_ok(
        Command::new(root.join("docker/offline/build.sh"))
            .args(["--only", "kafka,postgres,ferretdb,server"])
            .env("WIBER_SERVER_BIN", &server)
            .current_dir(&root),
    );
}

/// Takes a project's local stack down (with its data) on drop, also when the test
/// panics. No stack left (a scenario run takes down what it brought up) is normal.
pub struct LocalProject(pub String);

impl Drop for LocalProject {
    fn drop(&mut self) {
        let out = Command::new(env!("CARGO_BIN_EXE_wiberctl"))
            .args(["stack", "down", "--volumes", "--runtime", "local"])
            .args(["--project", &self.0])
            .env("WIBER_ROOT", repo_root())
            .output();
        match out {
            Ok(o)
                if !o.status.success()
                    && !String::from_utf8_lossy(&o.stderr).contains("no stack") =>
            {
                eprintln!("stack down {} failed: {}", self.0, describe(&o))
            }
            Err(e) => eprintln!("stack down {} could not run: {e}", self.0),
            _ => {}
        }
    }
}

/// `name` on PATH, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The path of `binary`, installing Debian's `package` with apt-get when it is missing
/// (the tests install what they need, like the docker engine; as root only).
pub fn ensure_debian_package(binary: &str, package: &str) -> PathBuf {
    if let Some(p) = on_path(binary) {
        return p;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{binary} is not installed and this test is not root: install it with `apt-get install -y {package}`"
    );
    eprintln!("{binary} is missing: installing Debian's {package} with apt-get");
    let install = || {
        Command::new("timeout")
            .args([
                "900",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                package,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("run apt-get")
    };
    let mut out = install();
    if !out.status.success() {
        // Package lists may be missing or stale (a fresh CI image): refresh once, retry.
        run_ok(
            Command::new("timeout")
                .args(["600", "apt-get", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
        out = install();
    }
    assert!(
        out.status.success(),
        "apt-get install {package} failed: {}",
        describe(&out)
    );
    on_path(binary).unwrap_or_else(|| panic!("{binary} on PATH after installing {package}"))
}

/// Runs the real `wiberctl` with `args`, without the variables in `unset` (so the test's
/// environment cannot point it elsewhere), and prints what it did (shown on failure).
pub async fn wiberctl_logged(args: &[&str], unset: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wiberctl"));
    cmd.args(args);
    for v in unset {
        cmd.env_remove(v);
    }
    let out = cmd.output().await.expect("run wiberctl");
    eprintln!(
        "$ wiberctl {}\n-> {:?}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command's stdout as JSON; panics when it is not.
pub fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})"))
}
