//! `wiberctl bench` and `wiberctl verify` end to end, through the real binary:
//! - the report a real bench run writes validates against the checked-in JSON schema;
//! - verify passes on a clean run against a real stack (Kafka + FerretDB + api + 2
//!   consumers), then names each fault planted in MongoDB (lost, duplicated, corrupted,
//!   unexpected) and exits 1;
//! - the generator against a trivial local HTTP endpoint: correctness, and its throughput
//!   printed (short by default; set WIBER_CEILING_RATE / WIBER_CEILING_DURATION and run in
//!   release for the ceiling, see below). Numbers are reported, never asserted.
//!
//! Run: `cargo build -p wiber-server && cargo test -p wiberctl --test bench_verify -- --nocapture`
//! Generator ceiling: `WIBER_CEILING_RATE=25000 WIBER_CEILING_DURATION=10s cargo test --release
//! -p wiberctl --test bench_verify generator_ceiling -- --nocapture`

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use mongodb::bson::{doc, Document};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SCHEMA: &str = include_str!("../schema/report.v1.schema.json");

/// Runs the real `wiberctl` binary; panics with its output when it cannot run.
async fn wiberctl(args: &[&str]) -> Output {
    support::wiberctl_logged(args, &["MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS"]).await
}

fn json_out(out: &Output) -> Value {
    support::json_stdout(out)
}

fn temp_reports(tag: &str) -> PathBuf {
    let d = support::workspace_target()
        .join("bench-verify")
        .join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- trivial endpoint

/// A raw HTTP/1.1 keep-alive server answering every request with a fixed 200: the
/// cheapest endpoint we can put behind the generator to measure the generator itself.
async fn trivial_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(sock));
        }
    });
    format!("http://{addr}")
}

async fn serve(mut sock: tokio::net::TcpStream) {
    const RESP: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // Answer every complete request (headers + content-length body) in the buffer.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            buf.drain(..end + 4 + len);
            if sock.write_all(RESP).await.is_err() {
                return;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_trivial_endpoint_keeps_its_schedule() {
    let api = trivial_server().await;
    let reports = temp_reports("trivial");
    let out = wiberctl(&[
        "--api-url",
        &api,
        "--json",
        "bench",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--conversations",
        "20",
        "--connections",
        "8",
        "--no-e2e",
        "--reports-dir",
        reports.to_str().unwrap(),
        "--name",
        "trivial",
        "--reads",
        "conversation=100,user=50,count=25",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let v = json_out(&out);
    assert_eq!(v["ok"], 800);
    // Reads on their own schedules beside the writes, each kind counted apart (and in
    // the report the schema check below validates).
    for (kind, n) in [("conversation", 200), ("user", 100), ("count", 50)] {
        let r = &v["reads"][kind];
        assert_eq!(
            (&r["sent"], &r["ok"], &r["errors"]),
            (&n.into(), &n.into(), &0.into()),
            "{kind}: {r}"
        );
        assert_eq!(r["latency_ms"]["count"], n, "{kind}: {r}");
    }
    assert_eq!(
        (
            v["failed"].as_u64(),
            v["unknown"].as_u64(),
            v["not_started"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(v["ack_ms"]["p50"].as_f64().unwrap() < 50.0);
    assert!(v["e2e_ms"].is_null());
    let dir = PathBuf::from(v["report_dir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("ledger.jsonl"))
            .unwrap()
            .lines()
            .count(),
        800
    );
    validate_report(&dir);
}

/// The generator's ceiling: the highest rate it sustains against the trivial endpoint.
/// A benchmark as much as a check: it prints its numbers and asserts only that every
/// planned request is accounted for (answered or counted as not started), never time.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn generator_ceiling() {
    let api = trivial_server().await;
    let reports = temp_reports("ceiling");
    let rate = std::env::var("WIBER_CEILING_RATE").unwrap_or_else(|_| "5000".into());
    let duration = std::env::var("WIBER_CEILING_DURATION").unwrap_or_else(|_| "2s".into());
    for mode in [vec!["--rate", rate.as_str()], vec!["--max"]] {
        let mut args = vec!["--api-url", &api, "--json", "bench"];
        args.extend(mode.iter().copied());
        args.extend([
            "--duration",
            duration.as_str(),
            "--conversations",
            "1000",
            "--connections",
            "64",
            "--no-e2e",
            "--reports-dir",
            reports.to_str().unwrap(),
        ]);
        let v = json_out(&wiberctl(&args).await);
        eprintln!(
            "[bench] generator vs trivial endpoint {mode:?}: goodput {} ok/s (answered {}/s), ok {}, not started {}, ack p99 {} ms",
            v["achieved_rate"], v["answered_rate"], v["ok"], v["not_started"], v["ack_ms"]["p99"]
        );
        assert_eq!(
            v["failed"], 0,
            "the trivial endpoint answers 200 to everything"
        );
        assert!(v["ok"].as_u64().unwrap() > 0, "{v}");
        if mode[0] == "--rate" {
            // Open loop: every planned request is answered or counted as not started.
            let planned = rate.parse::<f64>().unwrap()
                * duration.trim_end_matches('s').parse::<f64>().unwrap();
            let accounted = v["ok"].as_u64().unwrap()
                + v["unknown"].as_u64().unwrap()
                + v["not_started"].as_u64().unwrap();
            assert!(
                (accounted as f64 - planned).abs() <= 1.0,
                "planned {planned}, accounted {accounted}: {v}"
            );
        }
    }
}

// ---------------------------------------------------------------- real stack

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_then_names_each_planted_fault() {
    let stack = support::start_stack("bench-verify", 2, &[]).await;
    let reports = temp_reports("stack");
    let reports = reports.to_str().unwrap();
    let (api, mongo, kafka) = (stack.api_url(), stack.mongo_uri(), stack.bootstrap());
    let pg = stack.postgres_url();
    let cfg = stack.config();

    // 200 requests at 100/s over 20 conversations, end-to-end latency included.
    let out = wiberctl(&[
        "--api-url",
        &api,
        "--json",
        "bench",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--conversations",
        "20",
        "--connections",
        "8",
        "--reports-dir",
        reports,
        "--name",
        "verify-test",
        "--mongo-uri",
        &mongo,
        "--kafka",
        &kafka,
        "--group",
        &cfg.names.group,
        "--topic",
        &cfg.names.topic,
        "--mongo-db",
        &cfg.names.db,
        "--mongo-collection",
        &cfg.names.collection,
        // Where verify reads the store's exact counters (see the planted `unexpected`).
        "--postgres-url",
        &pg,
        "--drain-timeout",
        "60s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let v = json_out(&out);
    assert_eq!(
        (
            v["ok"].as_u64(),
            v["failed"].as_u64(),
            v["unknown"].as_u64()
        ),
        (Some(200), Some(0), Some(0))
    );
    assert_eq!(
        v["e2e_ms"]["count"], 200,
        "every ok message has its storedAt"
    );
    let dir = PathBuf::from(v["report_dir"].as_str().unwrap());
    for f in [
        "run.json",
        "ledger.jsonl",
        "report.json",
        "report.md",
        "report.html",
        "ack.hgrm",
        "e2e.hgrm",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    validate_report(&dir);

    // A clean run passes; verify's default is the latest run in the reports directory.
    let out = wiberctl(&[
        "--json",
        "verify",
        "--reports-dir",
        reports,
        "--drain-timeout",
        "60s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let v = json_out(&out);
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["counts"]["stored"], 200);
    assert_eq!(v["counts"]["ledger_ok"], 200);

    // Plant one of each fault, directly in MongoDB.
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let run_id = run["run"].as_str().unwrap();
    let coll = support::collection(&stack).await;
    let id = |c: u32, s: u64| wiber_model::ledger::message_id(run_id, c, s);
    // lost: an acknowledged message disappears.
    let gone = id(3, 4);
    assert_eq!(
        coll.delete_one(doc! {"_id": &gone})
            .await
            .unwrap()
            .deleted_count,
        1
    );
    // duplicated: a copy of another under a new _id (same content, same messageId field).
    let original = id(5, 2);
    let mut copy: Document = coll
        .find_one(doc! {"_id": &original})
        .await
        .unwrap()
        .unwrap();
    copy.insert("_id", format!("{original}-copy"));
    coll.insert_one(copy).await.unwrap();
    // corrupted: content altered in place.
    let altered = id(7, 1);
    coll.update_one(
        doc! {"_id": &altered},
        doc! {"$set": {"content": "tampered"}},
    )
    .await
    .unwrap();
    // unexpected: a message this run never sent, in one of its conversations.
    let injected = id(0, 9_999);
    let (from, to) = wiber_model::ledger::users(run_id, 0);
    coll.insert_one(doc! {
        "_id": &injected, "messageId": &injected, "fromUser": from, "toUser": to,
        "content": wiber_model::ledger::content(run_id, 0, 9_999, 256),
        "timestamp": wiber_model::now_ms(), "storedAt": wiber_model::now_ms(), "partition": 0, "offset": 999_999i64,
    })
    .await
    .unwrap();

    // corrupted: the conversation key no longer matches the users.
    let rekeyed = id(8, 0);
    coll.update_one(
        doc! {"_id": &rekeyed},
        doc! {"$set": {"conversation": "someone-else"}},
    )
    .await
    .unwrap();
    // reordered: seq 2 of conversation 9 now reads back before seq 1, as if the API had
    // acknowledged it with an earlier timestamp (ledger and store agree: not corrupted).
    let (s1, s2) = (id(9, 1), id(9, 2));
    let t1 = coll
        .find_one(doc! {"_id": &s1})
        .await
        .unwrap()
        .unwrap()
        .get_i64("timestamp")
        .unwrap();
    coll.update_one(
        doc! {"_id": &s2},
        doc! {"$set": {"timestamp": t1 - 1, "createdAt": wiber_model::rfc3339_ms(t1 - 1)}},
    )
    .await
    .unwrap();
    // recovered / indeterminate / unexpected, by rewriting the ledger's outcomes: an
    // unknown request that was stored, one that was not, and a failed one that was.
    let (recovered, indeterminate, refused) = (id(10, 0), id(10, 1), id(11, 0));
    coll.delete_one(doc! {"_id": &indeterminate}).await.unwrap();
    let ledger_path = dir.join("ledger.jsonl");
    let rewritten: String = std::fs::read_to_string(&ledger_path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut e: Value = serde_json::from_str(line).unwrap();
            let mid = e["messageId"].as_str().unwrap().to_string();
            if mid == recovered || mid == indeterminate {
                e["outcome"] = "unknown".into();
                e["status"] = 503.into();
            } else if mid == refused {
                e["outcome"] = "failed".into();
                e["status"] = 422.into();
            } else if mid == s2 {
                e["ackedTimestamp"] = (t1 - 1).into();
            }
            format!("{e}\n")
        })
        .collect();
    std::fs::write(&ledger_path, rewritten).unwrap();

    let out = wiberctl(&[
        "--json",
        "verify",
        dir.to_str().unwrap(),
        "--drain-timeout",
        "60s",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail on planted faults"
    );
    let v = json_out(&out);
    assert_eq!(v["verdict"], "fail");
    let c = &v["counts"];
    assert_eq!(
        [
            &c["lost"],
            &c["duplicated"],
            &c["corrupted"],
            &c["unexpected"],
            &c["reordered"],
            &c["recovered"],
            &c["indeterminate"],
        ]
        .map(|x| x.as_u64().unwrap()),
        [1, 1, 2, 2, 1, 1, 1],
        "{c}"
    );
    let named = |kind: &str| {
        v["examples"][kind][0]["message_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(named("lost"), gone);
    assert_eq!(named("duplicated"), original);
    let all = |kind: &str| -> Vec<String> {
        v["examples"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all("corrupted").len(), 2);
    assert!(all("corrupted").contains(&altered) && all("corrupted").contains(&rekeyed));
    assert!(all("unexpected").contains(&injected) && all("unexpected").contains(&refused));
    // seq 2, read back before seq 1, is the message out of place, in the order the API
    // itself returned.
    assert_eq!(named("reordered"), s2);
    let detail = v["examples"]["reordered"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("the API returned"), "{detail}");
    assert!(
        v["notes"][0]
            .as_str()
            .unwrap()
            .contains("read back through"),
        "{v}"
    );
    // Examples carry the Kafka provenance of the stored document.
    assert!(v["examples"]["corrupted"][0]["offset"].is_i64());

    // The verdict is recorded in the run's report, which still validates.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verify"]["verdict"], "fail");
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("Verify: **FAIL**"));
    validate_report(&dir);

    // Could not check: MongoDB unreachable is exit 2, not a verdict.
    let out = wiberctl(&[
        "verify",
        dir.to_str().unwrap(),
        "--mongo-uri",
        "mongodb://127.0.0.1:1/?directConnection=true",
        "--drain-timeout",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));

    stack.down().await.unwrap();
}

// ---------------------------------------------------------------- schema

/// Validates `dir/report.json` against the checked-in schema, and checks the schema
/// against the Rust types by round-tripping through them.
fn validate_report(dir: &Path) {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the checked-in schema is JSON");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let mut errors = Vec::new();
    validate(&schema, &schema, &report, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "report.json does not match the schema:\n{}",
        errors.join("\n")
    );
    let typed: wiber_model::report::Report = serde_json::from_value(report).unwrap();
    assert_eq!(typed.schema, wiber_model::report::SCHEMA);
}

/// A validator for the JSON Schema subset the report schema uses: `$ref` (local
/// `#/$defs/..`), `type` (string or list), `required`, `properties`,
/// `additionalProperties` (false or a schema), `items`, `minItems`, `maxItems`, `enum`,
/// `const`, `minimum`, `anyOf`. Any other keyword fails the test rather than being
/// silently ignored.
fn validate(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    const KNOWN: &[&str] = &[
        "$schema",
        "$id",
        "$defs",
        "$ref",
        "title",
        "description",
        "type",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "minimum",
        "anyOf",
    ];
    for k in schema.as_object().into_iter().flat_map(|o| o.keys()) {
        assert!(
            KNOWN.contains(&k.as_str()),
            "schema keyword {k} (at {path}) is not supported by this validator"
        );
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = branches.iter().any(|b| {
            let mut e = Vec::new();
            validate(root, b, v, path, &mut e);
            e.is_empty()
        });
        if !fits {
            errors.push(format!("{path}: {v} matches none of the anyOf branches"));
        }
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |s, k| &s[k]))
            .unwrap_or_else(|| panic!("unsupported $ref {r}"));
        assert!(!target.is_null(), "dangling $ref {r}");
        return validate(root, target, v, path, errors);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {path}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("unsupported type {other}"),
        });
        if !ok {
            errors.push(format!("{path}: expected {types:?}, got {v}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{path}: {v} is not one of {e:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{path}: expected {c}, got {v}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{path}: {n} is below the minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = req.as_str().unwrap();
            if !obj.contains_key(k) {
                errors.push(format!("{path}: missing required field {k}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            let sub = format!("{path}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(root, s, val, &sub, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{sub}: not allowed by the schema"))
                }
                (None, Some(s)) if s.is_object() => validate(root, s, val, &sub, errors),
                _ => {}
            }
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(items) = schema.get("items") {
            for (i, item) in arr.iter().enumerate() {
                validate(root, items, item, &format!("{path}[{i}]"), errors);
            }
        }
        let len = arr.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
            || schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
        {
            errors.push(format!("{path}: {len} items is out of the allowed range"));
        }
    }
}

#[test]
fn the_validator_catches_mismatches() {
    let schema: Value = serde_json::json!({
        "type": "object", "required": ["a"], "additionalProperties": false,
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"$ref": "#/$defs/s"}},
        "$defs": {"s": {"enum": ["x", "y"]}}
    });
    let mut errors = Vec::new();
    validate(
        &schema,
        &schema,
        &serde_json::json!({"a": 1, "b": "x"}),
        "$",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    validate(
        &schema,
        &schema,
        &serde_json::json!({"a": -1, "b": "z", "c": 0}),
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    validate(
        &schema,
        &schema,
        &serde_json::json!({"b": "x"}),
        "$",
        &mut errors,
    );
    assert!(errors.last().unwrap().contains("missing required field a"));
}
