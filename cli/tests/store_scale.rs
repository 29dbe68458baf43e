//! `wiberctl store fill|check|explain` against a real stack (Kafka, PostgreSQL, FerretDB
//! on it, api, consumer, as local processes), through the real binary:
//! - a 20k-message fixture fills in seconds, and the PostgreSQL triggers count it: the
//!   API's three counts are exact, and stay exact when a duplicate is refused (a direct
//!   insert under an existing `_id`, and a client retry through the API);
//! - `store check` finds the setup whole and `store explain` finds every read of
//!   `wiber_model::reads::ALL` served by an index;
//! - so that the checkers can fail: with one GIN index dropped in PostgreSQL, `store
//!   explain` exits 1 naming the read and `store check` exits 1 naming the index, and the
//!   fix `store check` prints puts it back; with the conversation page index dropped, the
//!   API's SQL page read is the one `store explain` names;
//! - `verify` of a small run next to the fixture reads no more rows by sequential scan
//!   than the run holds (PostgreSQL's row counts, not a clock): it reads by indexed keys;
//! - without a PostgreSQL to look at, `store check` exits 2 and says why.
//!
//! No wall-clock limit is asserted (the fill rate is printed, never held to a number).
//!
//! Run: `cargo build -p wiber-server && cargo test -p wiberctl --test store_scale -- --nocapture`

mod support;

use std::process::Output;
use std::time::Duration;

use mongodb::bson::doc;
use serde_json::{json, Value};
use wiber_model::{conversation_key, fixture};

/// Runs the real `wiberctl`, printing what it did (shown on failure).
async fn wiberctl(args: &[&str]) -> Output {
    support::wiberctl_logged(args, &["MONGO_URI", "MONGO_DB", "MONGO_COLLECTION"]).await
}

fn json_of(out: &Output) -> Value {
    support::json_stdout(out)
}

async fn count(http: &reqwest::Client, api: &str, query: &str) -> u64 {
    let (s, v) = support::get(http, &format!("{api}/messages/count{query}")).await;
    assert_eq!(s, 200, "count{query} answered {v}");
    v["count"].as_u64().unwrap()
}

/// The items `store check --json` found missing.
fn failing_items(report: &Value) -> Vec<&Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ok"] == false)
        .collect()
}

/// The SQL of a fix `store check` prints (`psql '<url>' -c "<sql>"`).
fn fix_sql(fix: &str) -> String {
    fix.split_once("-c \"")
        .map(|(_, s)| s.trim_end_matches('"').replace("\\\"", "\""))
        .unwrap_or_else(|| panic!("no SQL in {fix}"))
}

/// The reads `store explain --json` found not served by an index.
fn not_index_served(reads: &Value) -> Vec<String> {
    reads
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["index_served"] == false)
        .map(|r| r["read"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_store_is_counted_exactly_and_every_read_is_index_served() {
    let stack = support::start_stack("store-scale", 1, &[]).await;
    let api = stack.api_url();
    let http = support::http();
    let names = stack.config().names;
    let (mongo, pg) = (stack.mongo_uri(), stack.postgres_url());
    let store = [
        "--mongo-uri",
        mongo.as_str(),
        "--mongo-db",
        names.db.as_str(),
        "--mongo-collection",
        names.collection.as_str(),
        "--postgres-url",
        pg.as_str(),
    ];
    let with = |cmd: &[&'static str]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(store.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| async move {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        wiberctl(&a).await
    };

    // The fixture: 20 conversations of 1,000.
    let out = run(with(&["--json", "store", "fill", "--messages", "20000"])).await;
    assert_eq!(out.status.code(), Some(0));
    let fill = json_of(&out);
    assert_eq!(fill["fixture"], true);
    assert_eq!(fill["messages"], 20_000);
    assert_eq!(fill["conversations"], 20);
    assert_eq!(fill["exact_counts"], true, "{fill}");
    eprintln!(
        "store fill: 20,000 messages in {:.2} s, {:.0} docs/s (debug build, shared machine)",
        fill["seconds"].as_f64().unwrap(),
        fill["docs_per_s"].as_f64().unwrap()
    );

    // Counted exactly by PostgreSQL, read by the API from the counters.
    let (a, b) = fixture::users(3);
    assert_eq!(count(&http, &api, "").await, 20_000);
    assert_eq!(count(&http, &api, &format!("?user1={a}")).await, 1000);
    assert_eq!(
        count(&http, &api, &format!("?user1={a}&user2={b}")).await,
        1000
    );

    // `verify` costs what the run holds, not what the store holds: a 200-message run
    // verified next to the 20,000-message fixture reads no more rows by sequential scan
    // than the run has (PostgreSQL's own row counts, not a clock).
    let table = wiberctl::pg::check_collection(&pg, &names.db, &names.collection)
        .await
        .unwrap()
        .table
        .expect("the messages table exists");
    let reports = support::workspace_target()
        .join("store-scale")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&reports).unwrap();
    let reports = reports.to_str().unwrap().to_string();
    let kafka = stack.bootstrap();
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
        "10",
        "--connections",
        "8",
        "--no-e2e",
        "--reports-dir",
        &reports,
        "--name",
        "store-scale",
        "--mongo-uri",
        &mongo,
        "--mongo-db",
        &names.db,
        "--mongo-collection",
        &names.collection,
        "--kafka",
        &kafka,
        "--group",
        &names.group,
        "--topic",
        &names.topic,
        "--postgres-url",
        &pg,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let sent = json_of(&out)["ok"].as_u64().unwrap();
    let before = wiberctl::pg::table_reads(&pg, &names.db, &table)
        .await
        .unwrap();
    let out = wiberctl(&[
        "--json",
        "verify",
        "--reports-dir",
        &reports,
        "--drain-timeout",
        "60s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    assert_eq!(v["counts"]["stored"], sent, "{v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("exact counters of the run's 20 users agree"),
        "{notes}"
    );
    // Backends publish their statistics when idle, within ~10 s: wait that long.
    let verified = std::time::Instant::now();
    let mut after = before;
    while verified.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = wiberctl::pg::table_reads(&pg, &names.db, &table)
            .await
            .unwrap();
    }
    let seq_rows = after.seq_rows - before.seq_rows;
    eprintln!(
        "verify of {sent} messages next to a 20,000-message fixture: {seq_rows} rows by \
         sequential scan, {} index scans fetching {} rows",
        after.index_scans - before.index_scans,
        after.index_rows - before.index_rows
    );
    assert!(
        after.index_scans > before.index_scans,
        "{before:?} -> {after:?}"
    );
    assert!(
        seq_rows <= sent as i64,
        "verify read {seq_rows} rows by sequential scan: the store's size, not the run's"
    );

    // A duplicate is refused and not counted: straight into the store under an existing
    // `_id`, and a client retry through the API (the consumer's insert hits the key).
    let coll = support::collection(&stack).await;
    let existing = fixture::message_id(fill["fill_id"].as_str().unwrap(), 3, 7);
    let mut copy = coll
        .find_one(doc! {"_id": &existing})
        .await
        .unwrap()
        .expect("the fixture document is stored");
    copy.insert("content", "a second copy");
    let refused = coll
        .insert_one(copy)
        .await
        .expect_err("a duplicate _id is refused");
    assert!(refused.to_string().contains("E11000"), "{refused}");
    let (u, v) = support::users("scale");
    let body =
        json!({"fromUser": u, "toUser": v, "content": "once", "messageId": format!("{u}-1")});
    for _ in 0..2 {
        let (s, r) = support::post(&http, &api, body.clone()).await;
        assert_eq!(s, 200, "{r}");
    }
    assert_eq!(
        support::wait_for_count(&http, &api, &u, &v, 1, Duration::from_secs(30)).await,
        1
    );
    let stored = support::wait_stored_once(&coll, &[format!("{u}-1")]).await;
    assert_eq!(stored[&format!("{u}-1")], 1);
    // The fixture, the bench run, and the one message sent twice.
    assert_eq!(count(&http, &api, "").await, 20_000 + sent + 1);
    assert_eq!(
        count(&http, &api, &format!("?user1={a}&user2={b}")).await,
        1000
    );
    assert_eq!(count(&http, &api, &format!("?user1={u}")).await, 1);

    // The setup is whole, and every read is served by an index.
    let out = run(with(&["--json", "store", "check"])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["ok"], true);
    let out = run(with(&["--json", "store", "explain"])).await;
    assert_eq!(out.status.code(), Some(0));
    let reads = json_of(&out);
    let reads = reads.as_array().unwrap();
    // FerretDB's reads, then the API's own, in SQL: pages and counters.
    assert_eq!(reads.len(), wiber_model::reads::ALL.len() + 3, "{reads:?}");
    for r in reads {
        assert_eq!(r["index_served"], true, "{r}");
        if !r["read"].as_str().unwrap().ends_with("(sql)") {
            assert_eq!(r["filter_pushdown"], true, "{r}");
        }
    }
    let page = reads
        .iter()
        .find(|r| r["read"] == "conversation (sql)")
        .unwrap();
    let page_index = wiber_model::reads::sql::page_index_name(&table, "conversation");
    assert!(
        page["detail"].as_str().unwrap().contains(&page_index),
        "{page}"
    );
    // On the messages table the planner itself picks the GIN index (not only when
    // asked to): 1,000 rows of 20,000 is worth an index.
    for name in ["conversation", "user"] {
        let r = reads.iter().find(|r| r["read"] == name).unwrap();
        assert_eq!(r["served"]["kind"], "index", "{r}");
        assert!(
            r["served"]["index"].as_str().unwrap().ends_with("_gin"),
            "{r}"
        );
    }

    // So that the checkers can fail: drop the GIN index of `conversation`.
    let check = wiberctl::pg::check_collection(&pg, &names.db, &names.collection)
        .await
        .unwrap();
    let table = check.table.clone().unwrap();
    let index = wiberctl::pg::gin_index_name(&table, "conversation");
    let client = wiberctl::pg::connect(&pg).await.unwrap();
    client
        .batch_execute(&format!("DROP INDEX \"{}\".\"{index}\"", names.db))
        .await
        .unwrap();

    let out = run(with(&["store", "explain"])).await;
    assert_eq!(out.status.code(), Some(1), "a read without its index fails");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not index-served: conversation"), "{text}");
    let out = run(with(&["--json", "store", "explain"])).await;
    assert_eq!(out.status.code(), Some(1));
    let bad = not_index_served(&json_of(&out));
    assert_eq!(bad, ["conversation"]);

    let out = run(with(&["--json", "store", "check"])).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing index fails the check"
    );
    let report = json_of(&out);
    let missing = failing_items(&report);
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["name"], "GIN index on conversation");
    // The fix it prints is the statement that puts the index back.
    let fix = missing[0]["fix"].as_str().unwrap();
    let sql = fix_sql(fix);
    client.batch_execute(&sql).await.unwrap();
    let out = run(with(&["store", "check"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the printed fix restores the index"
    );

    // The conversation page still reads back in order through the API (the index was
    // rebuilt under the data).
    let (s, page) = support::get(&http, &format!("{api}/messages/{a}/{b}?limit=3")).await;
    assert_eq!(s, 200, "{page}");
    let page = page.as_array().cloned().unwrap_or_default();
    assert_eq!(page.len(), 3, "{page:?}");
    assert!(page[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("fixture 3:0 "));
    assert_eq!(
        conversation_key(&a, &b),
        conversation_key(
            page[1]["fromUser"].as_str().unwrap(),
            page[1]["toUser"].as_str().unwrap()
        )
    );

    // The API's page read fails the check without its index: it would sort.
    client
        .batch_execute(&format!("DROP INDEX \"{}\".\"{page_index}\"", names.db))
        .await
        .unwrap();
    let out = run(with(&["--json", "store", "explain"])).await;
    assert_eq!(out.status.code(), Some(1), "a page without its index fails");
    let bad = not_index_served(&json_of(&out));
    assert_eq!(bad, ["conversation (sql)"]);
    // `store check` names it too, and its printed fix puts it back.
    let out = run(with(&["--json", "store", "check"])).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing page index fails the check"
    );
    let report = json_of(&out);
    let missing = failing_items(&report);
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["name"], "page index on conversation");
    let fix = missing[0]["fix"].as_str().unwrap();
    let sql = fix_sql(fix);
    client.batch_execute(&sql).await.unwrap();
    let out = run(with(&["store", "explain"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the printed fix restores the page index"
    );

    // No PostgreSQL to look at: cannot check, and says so.
    let out = wiberctl(&[
        "store",
        "check",
        "--mongo-uri",
        &mongo,
        "--mongo-db",
        &names.db,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PostgreSQL"));

    stack.down().await.unwrap();
}
