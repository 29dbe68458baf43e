//! The kill matrix: the harness must catch every seeded server bug, by name, and pass
//! the unchanged server.
//!
//! The server is built a second time with its test-only `seeded-bugs` feature, as its
//! own binary `wiber-server-seeded` (a `required-features` target, so neither
//! `cargo build --workspace` nor a release build ever contains it, and the
//! `target/debug/wiber-server` the other tests start is not replaced). For each bug
//! (`WIBER_SEEDED_BUG`, see `wiber_model::contract::SeededBug`) and for the unchanged
//! server, `wiberctl stack up --runtime local --service-env ...` puts that server on one
//! local stack (the first `up` brings it up, the next ones recreate only the api and
//! consumers), the short scenarios in `scenarios/matrix/` run against it
//! (`scenario run --attach`); the stack is taken down at the end. Each cell records whether the scenario failed and by
//! what: the invariants verify counted, the thresholds that failed.
//!
//! The test fails when the unchanged server fails any scenario, or when a bug is caught
//! by no scenario through the invariant or threshold that names it (a `lost` bug caught
//! only by a latency threshold does not count). The table goes to
//! `reports/kill-matrix/matrix.md` (kept by `.ci/run`) and the test's output.
//!
//! By default (CI) each bug's scenarios run in the order most likely to catch it and stop
//! at the first that does (the other cells read "not run"), which keeps the matrix within
//! CI's budget; `WIBER_KILL_MATRIX=full` runs every cell, for the README's table.
//!
//! Run: `cargo build --workspace && cargo test -p wiberctl --test kill_matrix -- --nocapture`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;
use wiber_model::contract::SeededBug;

const WIBERCTL: &str = env!("CARGO_BIN_EXE_wiberctl");
/// 1 in N requests or records misbehaves, for the bugs that take a rate: often enough
/// that a 15 s run at 150-200 req/s has dozens of them.
const EVERY: &str = "10";

/// What must be among the failures of at least one scenario for a bug to count as
/// caught: the invariant or threshold that names its damage.
fn expected(bug: SeededBug) -> &'static [&'static str] {
    match bug {
        SeededBug::AckWithoutProduce => &["lost"],
        SeededBug::CommitBeforeWrite => &["lost"],
        SeededBug::SkipOnStoreError => &["lost"],
        SeededBug::NoDedup => &["duplicated"],
        SeededBug::Reorder => &["reordered"],
        SeededBug::Corrupt => &["corrupted"],
        // Refused requests are not stored, so no invariant can see them: goodput can.
        SeededBug::RefuseAll => &["achieved_rate", "during.ok_rate", "after.ok_rate"],
        // The poison record is never dead-lettered, and its batch's partitions stall
        // behind it: what is acknowledged after it is not stored.
        SeededBug::RetryForever => &["dead_lettered", "stalled", "consumer.stalled_max"],
    }
}

/// The matrix scenario most likely to catch `bug` (tried first when not running full).
fn likely(bug: SeededBug) -> &'static str {
    match bug {
        SeededBug::CommitBeforeWrite => "store-outage-kill-consumer",
        SeededBug::SkipOnStoreError => "restart-mongo",
        SeededBug::NoDedup => "pause-broker",
        SeededBug::RetryForever => "poison-record",
        _ => "kill-consumer",
    }
}

/// The scenarios of the matrix, in a fixed order.
fn scenarios() -> Vec<PathBuf> {
    let dir = repo_root().join("scenarios").join("matrix");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 4,
        "expected the matrix scenarios in {}",
        dir.display()
    );
    v
}

/// Builds `wiber-server-seeded` (cargo's lock is free while tests run) and returns it.
fn seeded_server() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // Not the variables cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME...):
    // ring's build script reruns when they change, and the manifest dir is the clone's
    // path. Inherited, they rebuilt ring, rustls and mongodb here and again in the next
    // CI's `cargo build` (a minute or more each way on two cores).
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_tests) {
            build.env_remove(&key);
        }
    }
    run_ok(build.current_dir(repo_root()).args([
        "build",
        "-p",
        "wiber-server",
        "--features",
        "seeded-bugs",
        "--bin",
        "wiber-server-seeded",
    ]));
    let bin = workspace_target().join("debug").join("wiber-server-seeded");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// Environment cargo gives a test binary, not the user's (`CARGO_HOME`,
/// `CARGO_TARGET_DIR`, profile settings and `CARGO` itself are the user's or harmless).
fn set_by_cargo_for_tests(key: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
        .iter()
        .any(|p| key.starts_with(p))
        || [
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&key)
}

/// One scenario's result on one server.
#[derive(Debug, Clone)]
struct Cell {
    verdict: String,
    /// Failed invariants (`lost 12`) and thresholds (`during.ok_rate`), by name.
    caught_by: Vec<(String, String)>,
}

impl Cell {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.caught_by.iter().map(|(n, _)| n.as_str())
    }

    fn render(&self) -> String {
        match self.verdict.as_str() {
            "pass" => "passed".into(),
            "fail" => format!(
                "**caught**: {}",
                self.caught_by
                    .iter()
                    .map(|(n, d)| if d.is_empty() {
                        n.clone()
                    } else {
                        format!("{n} {d}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }
}

/// Reads one outcome of `scenario run --json`.
fn cell(o: &Value) -> Cell {
    let mut caught_by = Vec::new();
    if let Some(c) = o.get("verify").filter(|v| !v.is_null()) {
        for k in ["lost", "duplicated", "unexpected", "corrupted", "reordered"] {
            let n = c[k].as_u64().unwrap_or(0);
            if n > 0 {
                caught_by.push((k.to_string(), n.to_string()));
            }
        }
    }
    for t in o["thresholds"].as_array().into_iter().flatten() {
        let metric = t["metric"].as_str().unwrap_or("?");
        if t["verdict"] == "fail" && !caught_by.iter().any(|(n, _)| n == metric) {
            let actual = t["actual"]
                .as_f64()
                .map_or("not measured".into(), |v| format!("= {v:.0}"));
            caught_by.push((metric.to_string(), actual));
        }
    }
    Cell {
        verdict: o["verdict"].as_str().unwrap_or("?").to_string(),
        caught_by,
    }
}

/// One local stack for the whole matrix: each server is put on it by `stack up`, which
/// recreates the api and the consumers when their `--service-env` changed (Kafka, the
/// store and their data stay; every scenario checks only its own run). A stack per
/// server cost ~10 s of CI per row to bring up and take down.
struct MatrixStack {
    project: LocalProject,
    ports: Vec<String>,
}

impl MatrixStack {
    fn new() -> MatrixStack {
        let id = uuid::Uuid::new_v4().simple().to_string();
        MatrixStack {
            project: LocalProject(format!("km{}", &id[..8])),
            ports: [
                "--api-port",
                "--mongo-port",
                "--kafka-port",
                "--postgres-port",
            ]
            .into_iter()
            .flat_map(|flag| [flag.to_string(), free_port().to_string()])
            .collect(),
        }
    }

    /// Brings the stack up with `server`'s binary and `bug` (or none): the first time
    /// whole, then only the api and consumers again. Asserts that the services did run
    /// again, so no row is ever judged on the previous row's server.
    fn put(&self, server: &Path, bug: Option<SeededBug>, first: bool) {
        let mut env: Vec<String> = vec![
            // Quick failure detection keeps the runs short (as the other e2e tests do).
            "KAFKA_SESSION_TIMEOUT_MS=6000".into(),
        ];
        if let Some(b) = bug {
            env.push(format!("WIBER_SEEDED_BUG={b}"));
            env.push(format!("WIBER_SEEDED_BUG_EVERY={EVERY}"));
        }
        let out = run_ok(
            Command::new(WIBERCTL)
                .args(["stack", "up", "--runtime", "local", "--consumers", "2"])
                .args(["--project", &self.project.0])
                .args(&self.ports)
                .args(env.iter().flat_map(|e| ["--service-env", e.as_str()]))
                .env("WIBER_ROOT", repo_root())
                .env("WIBER_SERVER_BIN", server),
        );
        // `up` names each instance and what it did on stderr.
        let said = String::from_utf8_lossy(&out.stderr);
        let recreated = said.lines().filter(|l| l.contains("recreated")).count();
        if !first {
            assert_eq!(
                recreated,
                3,
                "stack up should have recreated api#1, consumer#1 and consumer#2 for {bug:?}: {}",
                describe(&out)
            );
        }
    }
}

/// Puts `server` with `bug` (or none) on the matrix's stack and runs the matrix
/// scenarios against it (all of them, or until one catches the bug by `stop_when`).
/// Returns the cells by scenario name.
fn run_server(
    stack: &MatrixStack,
    server: &Path,
    bug: Option<SeededBug>,
    files: &[PathBuf],
    stop_when: Option<&dyn Fn(&Cell) -> bool>,
) -> BTreeMap<String, Cell> {
    let root = repo_root();
    let label = bug.map_or("unchanged".to_string(), |b| b.to_string());
    stack.put(server, bug, bug.is_none());
    let project = &stack.project;
    let reports = root.join("reports").join("kill-matrix").join(&label);
    // One `scenario run` for all the files, or one per file when it may stop early.
    let batches: Vec<&[PathBuf]> = match stop_when {
        None => vec![files],
        Some(_) => files.chunks(1).collect(),
    };
    let mut cells = BTreeMap::new();
    for batch in batches {
        let out = Command::new(WIBERCTL)
            .args([
                "--json",
                "scenario",
                "run",
                "--attach",
                "--runtime",
                "local",
            ])
            .args(["--project", &project.0])
            .args(batch)
            .arg("--reports-dir")
            .arg(&reports)
            .args(["--drain-timeout", "60s"])
            .env("WIBER_ROOT", &root)
            .env("WIBER_SERVER_BIN", server)
            .output()
            .expect("run wiberctl scenario run");
        // 0: all passed, 1: some failed; 2 means a run could not be done, which is neither.
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{label}: scenario run could not run the matrix: {}",
            describe(&out)
        );
        let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{label}: --json output is not JSON ({e}): {}",
                describe(&out)
            )
        });
        let mut stop = false;
        for o in &outcomes {
            let c = cell(o);
            stop |= stop_when.is_some_and(|f| f(&c));
            cells.insert(o["name"].as_str().unwrap_or("?").to_string(), c);
        }
        if stop {
            break;
        }
    }
    cells
}

#[test]
fn every_seeded_bug_is_caught_and_the_unchanged_server_passes() {
    let files = scenarios();
    let seeded = seeded_server();
    let plain = workspace_target().join("debug").join("wiber-server");
    assert!(
        plain.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        plain.display()
    );

    let full = std::env::var("WIBER_KILL_MATRIX").is_ok_and(|v| v == "full");
    let mut rows: Vec<(String, BTreeMap<String, Cell>)> = Vec::new();
    let stack = MatrixStack::new();
    let clean = run_server(&stack, &plain, None, &files, None);
    rows.push(("unchanged server".into(), clean.clone()));
    let mut problems = Vec::new();
    for (name, c) in &clean {
        if c.verdict != "pass" {
            problems.push(format!(
                "the unchanged server failed {name}: {}",
                c.render()
            ));
        }
    }
    for bug in SeededBug::ALL {
        let want = expected(bug);
        let catches = |c: &Cell| c.verdict == "fail" && c.names().any(|n| want.contains(&n));
        let cells = if full {
            run_server(&stack, &seeded, Some(bug), &files, None)
        } else {
            // The likely catcher first, then the rest in order.
            let mut order = files.clone();
            order.sort_by_key(|f| f.file_stem().is_none_or(|s| s != likely(bug)));
            run_server(&stack, &seeded, Some(bug), &order, Some(&catches))
        };
        let caught = cells.values().any(catches);
        if !caught {
            problems.push(format!(
                "seeded bug {bug} was not caught by {} in any scenario: {:?}",
                want.join(" or "),
                cells
                    .iter()
                    .map(|(s, c)| format!("{s}: {}", c.render()))
                    .collect::<Vec<_>>()
            ));
        }
        rows.push((format!("`{bug}`"), cells));
    }

    // The table: one row per server, one column per scenario.
    let names: Vec<String> = rows[0].1.keys().cloned().collect();
    let mut md = format!(
        "| server | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (server, cells) in &rows {
        let cols: Vec<String> = names
            .iter()
            .map(|n| cells.get(n).map_or("not run".into(), Cell::render))
            .collect();
        md.push_str(&format!("| {server} | {} |\n", cols.join(" | ")));
    }
    let dir = repo_root().join("reports").join("kill-matrix");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("matrix.md"), &md).unwrap();
    println!("{md}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
