//! Reads in the load, end to end through the real `wiberctl` binary against a real
//! local stack (Kafka, FerretDB, api, a consumer): `bench --reads` reads every kind
//! beside its writes and reports each with its own counts and latency; a fixture's
//! names are readable; and a scenario's read thresholds decide its verdict: one that no
//! stack can meet fails, one on a kind the load did not read fails as not measured.
//!
//! One stack for the three parts (bringing one up is most of the test's time); a few
//! seconds of load each.
//!
//! Run: `cargo build -p wiber-server && cargo test -p wiberctl --test bench_reads -- --nocapture`

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");

fn wiberctl(args: &[&str]) -> Output {
    let out = Command::new(WIBERCTL)
        .args(args)
        .env("WIBER_ROOT", repo_root())
        .env_remove("MONGO_URI")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("run wiberctl");
    eprintln!("$ wiberctl {}\n-> {}", args.join(" "), describe(&out));
    out
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(out)))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = workspace_target()
        .join("bench-reads")
        .join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every kind of read at its rate, all ok, with latencies a stack on two shared cores
/// can be held to: the plan is `rate x duration` reads of each kind, all started.
fn check_reads(v: &Value, planned: &[(&str, u64)]) {
    for (kind, n) in planned {
        let r = &v["reads"][kind];
        assert_eq!(r["sent"], *n, "{kind}: {r}");
        assert_eq!(r["ok"], *n, "{kind}: {r}");
        assert_eq!(r["errors"], 0, "{kind}: {r}");
        assert_eq!(r["not_started"], 0, "{kind}: {r}");
        let lat = &r["latency_ms"];
        assert_eq!(lat["count"], *n, "{kind}: {r}");
        let (p50, p99) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{kind}: {r}");
        assert!(p99 < 2000.0, "{kind} reads p99 {p99} ms: {r}");
    }
}

#[test]
fn reads_are_measured_per_kind_and_read_thresholds_decide() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let project = LocalProject(format!("rd{}", &id[..8]));
    let (a, m, k) = (free_port(), free_port(), free_port());
    run_ok(
        Command::new(WIBERCTL)
            .args(["stack", "up", "--runtime", "local", "--consumers", "1"])
            .args(["--project", &project.0])
            .args(["--api-port", &a.to_string(), "--mongo-port", &m.to_string()])
            .args(["--kafka-port", &k.to_string()])
            .args(["--service-env", "KAFKA_SESSION_TIMEOUT_MS=6000"])
            .env("WIBER_ROOT", repo_root()),
    );
    let api = format!("http://127.0.0.1:{a}");
    let reports = temp_dir("runs");
    let reports = reports.to_str().unwrap();
    let common = [
        "--no-e2e",
        "--reports-dir",
        reports,
        "--project",
        &project.0,
        "--runtime",
        "local",
    ];

    // 1. Writes and every kind of read of the run's own conversations, 3 s.
    let mut args = vec!["--api-url", &api, "--json", "bench", "--rate", "40"];
    args.extend([
        "--duration",
        "3s",
        "--conversations",
        "8",
        "--name",
        "reads-own",
        "--reads",
        "conversation=40,user=20,count=20",
    ]);
    args.extend(common);
    let out = wiberctl(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_out(&out);
    assert_eq!(
        (v["ok"].as_u64(), v["unknown"].as_u64()),
        (Some(120), Some(0))
    );
    check_reads(&v, &[("conversation", 120), ("user", 60), ("count", 60)]);
    let dir = PathBuf::from(v["report_dir"].as_str().unwrap());
    let lines = std::fs::read_to_string(dir.join("reads.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 240);
    assert!(!lines.contains("\"error\""), "{lines}");
    for kind in ["conversation", "user", "count"] {
        assert!(dir.join(format!("reads-{kind}.hgrm")).is_file(), "{kind}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("### Reads") && md.contains("| conversation | 120 | 120 | 0 |"),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<table class=\"reads\">"), "{html}");

    // 2. A fixture's conversations and users (`store fill` names; here an empty one:
    // its pages are empty, which is still a page served).
    let mut args = vec!["--api-url", &api, "--json", "bench", "--rate", "10"];
    args.extend([
        "--duration",
        "2s",
        "--conversations",
        "2",
        "--name",
        "reads-fixture",
        "--reads",
        "conversation=20,user=10,count=10",
        "--read-fixture",
        "50",
        "--read-fixture-size",
        "200",
    ]);
    args.extend(common);
    let out = wiberctl(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = json_out(&out);
    check_reads(&v, &[("conversation", 40), ("user", 20), ("count", 20)]);
    let dir = PathBuf::from(v["report_dir"].as_str().unwrap());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["config"]["reads"]["source"],
        serde_json::json!({"from": "fixture", "conversations": 50, "messages": 200})
    );

    // 3. A scenario's read thresholds decide: the reads all succeed, yet the verdict is
    // fail, because no read takes 0 ms and the load made no user reads.
    let scenario = temp_dir("scenario").join("reads-must-fail.toml");
    std::fs::write(
        &scenario,
        r#"name = "reads-must-fail"
description = "Reads held to a bound no stack meets, and to a kind it does not read."
[load]
rate = 20
duration = "4s"
conversations = 5
reads = { conversation = 20, count = 10 }
[thresholds]
lost = "== 0"
achieved_rate = ">= 0.9 * rate"
"reads.count.error_rate" = "== 0"
"reads.conversation.ok_rate" = ">= 0.9 * rate"
"before.reads.conversation.errors" = "== 0"
"reads.conversation.p99" = "< 0ms"
"reads.user.p99" = "< 1s"
"#,
    )
    .unwrap();
    let out = wiberctl(&[
        "--json",
        "scenario",
        "run",
        "--attach",
        "--runtime",
        "local",
        "--project",
        &project.0,
        scenario.to_str().unwrap(),
        "--reports-dir",
        reports,
        "--drain-timeout",
        "60s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the read thresholds must fail the run: {}",
        describe(&out)
    );
    let v = json_out(&out);
    let o = &v[0];
    assert_eq!(o["verdict"], "fail", "{o}");
    let verdict = |metric: &str| -> (String, Value, String) {
        let t = o["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["metric"] == metric)
            .unwrap_or_else(|| panic!("no threshold {metric}: {o}"));
        (
            t["verdict"].as_str().unwrap().to_string(),
            t["actual"].clone(),
            t["detail"].as_str().unwrap_or("").to_string(),
        )
    };
    for pass in [
        "lost",
        "achieved_rate",
        "reads.count.error_rate",
        "reads.conversation.ok_rate",
        "before.reads.conversation.errors",
    ] {
        assert_eq!(verdict(pass).0, "pass", "{pass}: {:?}", verdict(pass));
    }
    let (v99, actual, detail) = verdict("reads.conversation.p99");
    assert_eq!(v99, "fail");
    assert!(actual.as_f64().unwrap() > 0.0, "{detail}");
    let (vu, actual, detail) = verdict("reads.user.p99");
    assert_eq!(vu, "fail");
    assert!(actual.is_null());
    assert!(
        detail.contains("not measured") && detail.contains("no user reads"),
        "{detail}"
    );
    // The reads are in the scenario's figures and its summary.
    assert_eq!(o["metrics"]["reads.conversation.sent"], 80.0, "{o}");
    assert_eq!(o["metrics"]["reads.count.errors"], 0.0, "{o}");
    let run_dir = PathBuf::from(o["dir"].as_str().unwrap());
    let summary = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    assert!(summary.contains("## reads"), "{summary}");
    assert!(
        summary.contains("conversation reads ok / errors"),
        "{summary}"
    );
}
