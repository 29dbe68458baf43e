//! `wiberctl top` against a real local stack, found the way a user's is found: brought
//! up with `wiberctl stack up --runtime local --project <unique>`, then `top --project`
//! locates it under `.wiber/stacks/<project>`. Nothing is faked: real Kafka, FerretDB,
//! api and consumer processes, and the dashboard runs in a real terminal (tmux).
//!
//! What it checks:
//! - `top --once --json` is one snapshot with every documented field, rates included;
//! - the live dashboard shows the four instances; after sends, a nonzero request rate;
//!   with the consumer paused (`chaos pause consumer --for`), lag, its age and the
//!   active fault with time left; after the undo, a nonzero store write rate;
//! - `q` ends it with exit 0, and the terminal is restored (alternate screen left,
//!   canonical mode and echo back on).
//!
//! Every wait is bounded; the stack, the tmux server and the chaos process are cleaned
//! up on drop, also when an assertion fails.
//!
//! Run: `cargo build --workspace && cargo test -p wiberctl --test top -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn display(&self, format: &str) -> String {
        let out = run_ok(
            self.cmd()
                .args(["display-message", "-p", "-t", "top", format]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls the screen until `ok` holds (bounded); returns the last screen either way.
    async fn wait_screen(&self, within: Duration, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return (true, screen);
            }
            if Instant::now() > deadline {
                return (false, screen);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// A background `wiberctl chaos` run: interrupted (SIGINT, so it undoes its fault) and
/// reaped on drop.
struct Chaos(Child);

impl Chaos {
    fn interrupt(&mut self) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGINT);
        }
    }

    /// Waits (bounded) for it to exit; true if it exited successfully.
    fn wait(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
            if !self.wait(Duration::from_secs(20)) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

/// The number printed right after `label` on the first screen line holding it.
fn value_after(screen: &str, label: &str) -> Option<f64> {
    let line = screen.lines().find(|l| l.contains(label))?;
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn top_once(project: &str, events: &Path, json: bool) -> std::process::Output {
    let mut c = Command::new(WIBERCTL);
    if json {
        c.arg("--json");
    }
    run_ok(
        c.args(["top", "--once", "--project", project])
            .arg("--events")
            .arg(events)
            .env("WIBER_ROOT", repo_root()),
    )
}

fn snapshot(project: &str, events: &Path) -> Value {
    let out = top_once(project, events, true);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("top --once --json is not JSON ({e}): {}", describe(&out)))
}

/// Every documented field of a snapshot is there, with the right type.
fn check_shape(v: &Value, project: &str) {
    assert_eq!(v["schema"], 1, "{v:#}");
    assert_eq!(v["project"], project);
    assert_eq!(v["runtime"], "local");
    assert!(v["time_ms"].as_i64().unwrap() > 0);
    assert!(v["time"].is_string());
    assert!(
        v["interval_s"].as_f64().is_some_and(|s| s > 0.5),
        "--once samples twice, an interval apart: {v:#}"
    );
    let names: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["api#1", "consumer#1", "kafka#1", "mongo#1", "postgres#1"]
    );
    for i in v["instances"].as_array().unwrap() {
        for field in [
            "service",
            "state",
            "health",
            "connected",
            "restarts",
            "pid_or_container",
        ] {
            assert!(!i[field].is_null(), "instance field {field} missing: {i}");
        }
        assert_eq!(i["state"], "running", "{i}");
        assert!(i["uptime_s"].is_i64(), "{i}");
        assert!(
            i["rss_bytes"].as_u64().is_some_and(|b| b > 1024 * 1024),
            "a running process has resident memory: {i}"
        );
        assert!(
            i["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0),
            "two samples give a CPU figure: {i}"
        );
    }
    let api = &v["api"];
    assert_eq!(api["scraped"], serde_json::json!(["api#1"]), "{api}");
    for field in [
        "requests_per_s",
        "acked_per_s",
        "client_errors_per_s",
        "server_errors_per_s",
    ] {
        assert!(api[field].as_f64().is_some(), "api.{field}: {api}");
    }
    assert!(api.get("ack_p50_ms").is_some() && api.get("ack_p99_ms").is_some());
    let k = &v["kafka"];
    assert_eq!(k["topic"], "wiber.messages");
    assert_eq!(k["group"], "wiber-consumers");
    assert_eq!(k["partitions"].as_array().unwrap().len(), 6, "{k}");
    for p in k["partitions"].as_array().unwrap() {
        for field in ["partition", "end", "lag"] {
            assert!(p[field].is_i64(), "partition field {field}: {p}");
        }
    }
    assert!(k["total_lag"].is_i64(), "{k}");
    assert!(k["stored_per_s"].as_f64().is_some(), "{k}");
    assert!(k.get("oldest_unstored_ms").is_some());
    assert!(v["faults"].is_array() && v["events"].is_array());
    assert!(v["events_file"].is_string());
    assert_eq!(
        v["problems"],
        serde_json::json!([]),
        "every part read: {v:#}"
    );
}

/// Sends messages on several conversations (so several partitions) at about 25/s until
/// `stop` or `limit` messages (bounded either way).
fn sender(
    api: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: usize,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let http = http();
        let mut sent = 0;
        while sent < limit && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (from, to) = (format!("top-u{}", sent % 6), format!("top-v{}", sent % 6));
            let (status, body) = post(
                &http,
                &api,
                serde_json::json!({"fromUser": from, "toUser": to, "content": format!("m{sent}")}),
            )
            .await;
            assert_eq!(status, 200, "the api refused a message: {body}");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_running_stack_and_restores_the_terminal() {
    ensure_debian_package("tmux", "tmux");
    let root = repo_root();
    let project = LocalProject(format!(
        "top-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let (api_port, mongo_port, kafka_port) = (free_port(), free_port(), free_port());
    run_ok(
        Command::new(WIBERCTL)
            .args(["stack", "up", "--runtime", "local", "--consumers", "1"])
            .args(["--project", &project.0])
            .args(["--api-port", &api_port.to_string()])
            .args(["--mongo-port", &mongo_port.to_string()])
            .args(["--kafka-port", &kafka_port.to_string()])
            .args(["--postgres-port", &free_port().to_string()])
            // A paused consumer is noticed quickly by the group (and the test is short).
            .args(["--service-env", "KAFKA_SESSION_TIMEOUT_MS=6000"])
            .env("WIBER_ROOT", &root),
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let dir: PathBuf = workspace_target()
        .join("e2e")
        .join(format!("top-{}", project.0));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");

    // 1. One snapshot for scripts.
    let v = snapshot(&project.0, &events);
    check_shape(&v, &project.0);
    let text = String::from_utf8(top_once(&project.0, &events, false).stdout).unwrap();
    for want in [
        "api#1",
        "consumer#1",
        "kafka#1",
        "postgres#1",
        "mongo#1",
        "req/s",
        "total lag",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from top --once:\n{text}"
        );
    }

    // 2. The live dashboard, in a real terminal.
    let script = dir.join("top.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport WIBER_ROOT='{root}'\n'{bin}' top --project '{p}' --events '{ev}' --interval 1s\n\
             echo \"TOP-EXITED $?\"\n\
             stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | sed 's/^/TTY /'\n\
             sleep 600\n",
            root = root.display(),
            bin = WIBERCTL,
            p = project.0,
            ev = events.display(),
        ),
    )
    .unwrap();
    let tmux = Tmux {
        socket: format!("wiber-{}", project.0),
    };
    run_ok(
        tmux.cmd()
            .args(["new-session", "-d", "-s", "top", "-x", "160", "-y", "50"])
            .arg(format!("sh '{}'", script.display())),
    );
    let (ok, screen) = tmux
        .wait_screen(Duration::from_secs(30), |s| {
            ["api#1", "consumer#1", "kafka#1", "postgres#1", "mongo#1"]
                .iter()
                .all(|i| s.contains(i))
                && value_after(s, "req/s").is_some()
        })
        .await;
    assert!(
        ok,
        "the dashboard never showed the five instances with rates:\n{screen}"
    );
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "top draws on the alternate screen"
    );

    // Pause the only consumer: acknowledged messages now wait in Kafka.
    let mut chaos = Chaos(
        Command::new(WIBERCTL)
            .args(["chaos", "pause", "consumer", "--for", "60s"])
            .args(["--project", &project.0])
            .arg("--events")
            .arg(&events)
            .env("WIBER_ROOT", &root)
            .spawn()
            .expect("start wiberctl chaos"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("\"pause\"")) {
        assert!(
            Instant::now() < deadline,
            "chaos pause wrote no event within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = sender(api.clone(), stop.clone(), 600);
    let (ok, screen) = tmux
        .wait_screen(Duration::from_secs(20), |s| {
            value_after(s, "req/s").is_some_and(|r| r > 0.0)
                && value_after(s, "acked/s").is_some_and(|r| r > 0.0)
                && value_after(s, "total lag").is_some_and(|l| l > 0.0)
                && s.lines()
                    .any(|l| l.contains("consumer#1") && l.contains("paused"))
                && s.lines()
                    .any(|l| l.contains("consumer#1") && l.contains(" left"))
                && s.contains("oldest unstored")
                && !s.contains("oldest unstored -")
        })
        .await;
    assert!(
        ok,
        "with sends and the consumer paused, the dashboard should show a request rate, lag \
         and its age, and the fault with time left:\n{screen}"
    );
    // The same from the JSON snapshot, numerically.
    let v = snapshot(&project.0, &events);
    assert!(
        v["kafka"]["total_lag"].as_i64().unwrap() > 0,
        "{:#}",
        v["kafka"]
    );
    assert!(
        v["kafka"]["oldest_unstored_ms"].as_i64().unwrap() > 0,
        "{:#}",
        v["kafka"]
    );
    let fault = &v["faults"][0];
    assert_eq!(fault["target"], "consumer#1", "{:#}", v["faults"]);
    assert_eq!(fault["action"], "pause");
    assert!(
        fault["left_ms"]
            .as_i64()
            .is_some_and(|l| l > 0 && l <= 60_000),
        "{fault}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sending.await.unwrap();
    assert!(sent > 0);

    // Undo the pause (Ctrl-C makes chaos run its undo): the backlog is stored.
    chaos.interrupt();
    assert!(
        chaos.wait(Duration::from_secs(30)),
        "chaos did not undo its pause and exit"
    );
    let (ok, screen) = tmux
        .wait_screen(Duration::from_secs(45), |s| {
            value_after(s, "stored/s").is_some_and(|r| r > 0.0)
        })
        .await;
    assert!(
        ok,
        "after the unpause the store write rate never rose above 0:\n{screen}"
    );
    let (ok, screen) = tmux
        .wait_screen(Duration::from_secs(45), |s| {
            value_after(s, "total lag") == Some(0.0)
                && s.lines()
                    .any(|l| l.contains("consumer#1") && l.contains("unpause"))
                && !s
                    .lines()
                    .any(|l| l.contains("consumer#1") && l.contains(" left"))
        })
        .await;
    assert!(
        ok,
        "after the unpause the lag should drain and the fault end:\n{screen}"
    );

    // 3. q quits, and the terminal is as it was.
    run_ok(tmux.cmd().args(["send-keys", "-t", "top", "q"]));
    let (ok, screen) = tmux
        .wait_screen(Duration::from_secs(10), |s| {
            s.contains("TOP-EXITED") && s.contains("TTY ")
        })
        .await;
    assert!(ok, "top did not exit on q within 10 s:\n{screen}");
    assert!(
        screen.contains("TOP-EXITED 0"),
        "top exited with an error:\n{screen}"
    );
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "the alternate screen was not left:\n{screen}"
    );
    let modes: Vec<&str> = screen
        .lines()
        .filter_map(|l| l.strip_prefix("TTY "))
        .map(str::trim)
        .collect();
    assert!(
        modes.contains(&"icanon") && modes.contains(&"echo"),
        "raw mode was not undone (stty says {modes:?}):\n{screen}"
    );
    assert!(
        !screen.contains("instances"),
        "the dashboard is still on screen:\n{screen}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
