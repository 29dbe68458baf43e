//! `store explain`: how the store answers each read the API makes
//! ([`wiber_model::reads::ALL`]), asked of the store itself with MongoDB's `explain`.
//!
//! FerretDB's answer carries its own pushdown flags (`filterPushdown`, `sortPushdown`,
//! `limitPushdown`) and, on PostgreSQL, the query plan as PostgreSQL's `EXPLAIN (FORMAT
//! JSON)` tree: the read is index-served when an index scan node's condition names the
//! read's field. A Seq Scan is not always a missing index: PostgreSQL rightly reads a
//! small table (or a filter matching most of it) whole. So a Seq Scan is put to
//! PostgreSQL once more with sequential scans off ([`crate::pg::explain_without_seq_scan`]):
//! if an index serves the filter then, the index is there and used when it pays; if not,
//! no index can serve the read. MongoDB's plans (`winningPlan`: IXSCAN, COLLSCAN) are
//! read too, so the command says something useful on either store.

use anyhow::{bail, Context};
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use serde_json::Value;
use wiber_model::reads::{self, ReadCollection, ReadShape};
use wiber_model::{conversation_key, fixture, StoredMessage};

use super::StoreAddr;
use crate::pg;

/// How a read's filter is served, from the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Served {
    /// An index scan whose condition is on the read's field.
    Index { node: String, index: String },
    /// The whole table (collection) is read and filtered.
    Scan {
        node: String,
        /// `schema.table` (PostgreSQL) when the plan names it.
        relation: Option<String>,
        /// Schema, table and filter as the plan prints them (PostgreSQL), to ask again
        /// without sequential scans.
        #[serde(skip)]
        again: Option<(String, String, String)>,
    },
    /// FerretDB did not push the filter down: it reads every document and filters them itself.
    NotPushedDown,
    /// The plan says neither (an unknown plan format, or the collection does not exist).
    Unknown { why: String },
}

/// One read, explained.
#[derive(Debug, Clone, Serialize)]
pub struct ReadExplain {
    /// The read's name in [`wiber_model::reads`] (`conversation`, `user`, `count`).
    pub read: String,
    pub collection: String,
    /// The equality explained, e.g. `{conversation: "a|b"}`.
    pub filter: String,
    pub sort: String,
    /// FerretDB's own flags (absent on MongoDB).
    pub filter_pushdown: Option<bool>,
    pub sort_pushdown: Option<bool>,
    pub limit_pushdown: Option<bool>,
    pub served: Served,
    /// With sequential scans off, for a read PostgreSQL chose to scan: the index that
    /// can serve it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_if_forced: Option<String>,
    /// The verdict: an index serves this read (or would, were scanning not cheaper).
    pub index_served: bool,
    /// The verdict in words.
    pub detail: String,
    /// The plan as the store returned it (`queryPlanner`).
    pub plan: Value,
}

/// Explains every read of [`reads::ALL`].
pub async fn explain(addr: &StoreAddr) -> anyhow::Result<Vec<ReadExplain>> {
    let client = addr.client("wiberctl-store-explain", 2).await?;
    let names = client
        .database(&addr.db)
        .list_collection_names()
        .await
        .with_context(|| {
            format!(
                "cannot list the collections of {} at {}",
                addr.db, addr.mongo_uri
            )
        })?;
    if !names.contains(&addr.collection) {
        bail!(
            "{} does not exist yet, so there is no read to explain: the consumer creates it \
             when it starts (`wiberctl stack status`), or write a fixture with `wiberctl store fill`",
            addr.describe()
        );
    }
    let (conversation, user) = sample_keys(&client, addr).await?;
    let mut out = Vec::new();
    for shape in reads::ALL {
        let (coll, value, limit) = match shape.collection {
            ReadCollection::Messages if shape.field == StoredMessage::CONVERSATION => {
                (addr.collection.clone(), conversation.clone(), 50)
            }
            ReadCollection::Messages => (addr.collection.clone(), user.clone(), 100),
            ReadCollection::Counts => (
                addr.counts_collection(),
                reads::COUNTER_TOTAL.to_string(),
                1,
            ),
        };
        out.push(explain_one(&client, addr, &shape, &coll, &value, limit).await?);
    }
    if let Some(url) = &addr.postgres_url {
        out.extend(explain_sql(addr, url, &conversation, &user).await?);
    }
    Ok(out)
}

/// The API's reads as it runs them on FerretDB-on-PostgreSQL: the SQL of
/// [`wiber_model::reads::sql`], planned by PostgreSQL. A page is index-served when every
/// table it reads is read through a page index and nothing is sorted: the index delivers
/// the rows in order and the LIMIT stops the read (no Sort node). The planner's choice is
/// asked first; on a small table it rightly scans and sorts, so the verdict is asked
/// again with sequential scans and sorts off.
async fn explain_sql(
    addr: &StoreAddr,
    url: &str,
    conversation: &str,
    user: &str,
) -> anyhow::Result<Vec<ReadExplain>> {
    use pg::Param::{Int, Text, TextArray};
    use wiber_model::reads::sql;
    let schema = &addr.db;
    let Some(table) = pg::table_of(url, schema, &addr.collection).await? else {
        return Ok(Vec::new());
    };
    let counted = pg::counters(url, schema, &addr.collection, &[])
        .await?
        .is_some();
    let page_index = |f: &str| sql::page_index_name(&table, f);
    let mut wanted = vec![
        (
            "conversation (sql)",
            table.clone(),
            sql::conversation_page(schema, &table),
            vec![Text(conversation.into()), Int(50), Int(0)],
            vec![page_index(StoredMessage::CONVERSATION)],
        ),
        (
            "user (sql)",
            table.clone(),
            sql::user_recent(schema, &table),
            vec![Text(user.into()), Int(100)],
            vec![
                page_index(StoredMessage::FROM_USER),
                page_index(StoredMessage::TO_USER),
            ],
        ),
    ];
    if counted {
        wanted.push((
            "count (sql)",
            sql::COUNTERS_TABLE.to_string(),
            sql::counters(schema),
            vec![
                Text(addr.collection.clone()),
                TextArray(vec![reads::COUNTER_TOTAL.into()]),
            ],
            vec![format!("{}_pkey", sql::COUNTERS_TABLE)],
        ));
    }
    let mut out = Vec::new();
    for (name, table, statement, params, indexes) in wanted {
        let chosen = pg::explain_statement(url, &statement, &params, false).await?;
        let mut verdict = sql_verdict(&chosen, &indexes);
        let mut forced_index = None;
        if verdict.is_err() {
            let forced = pg::explain_statement(url, &statement, &params, true).await?;
            if let Ok(how) = sql_verdict(&forced, &indexes) {
                forced_index = Some(how.clone());
                verdict = Ok(format!(
                    "the planner scans or sorts (a small table); with sequential scans and                      sorts off: {how}"
                ));
            }
        }
        out.push(ReadExplain {
            read: name.to_string(),
            collection: format!("{schema}.{table} (PostgreSQL)"),
            filter: statement,
            sort: "in the index".into(),
            filter_pushdown: None,
            sort_pushdown: None,
            limit_pushdown: None,
            served: match &verdict {
                Ok(how) => Served::Index {
                    node: "Index Scan".into(),
                    index: how.clone(),
                },
                Err(why) => Served::Unknown { why: why.clone() },
            },
            index_if_forced: forced_index,
            index_served: verdict.is_ok(),
            detail: match verdict {
                Ok(how) | Err(how) => how,
            },
            plan: chosen,
        });
    }
    Ok(out)
}

/// Whether a PostgreSQL plan reads only through indexes and sorts nothing: `Ok(indexes
/// used)`, else `Err(why)`. `indexes`, when not empty, must all be used (a page read
/// through another index, e.g. a GIN one, is bounded by the conversation, not the page).
pub fn sql_verdict(plan: &Value, indexes: &[String]) -> Result<String, String> {
    let Some(root) = plan.get("Plan") else {
        return Err("PostgreSQL returned no plan".into());
    };
    let mut nodes = Vec::new();
    walk(root, "Plans", &mut nodes);
    let ty = |n: &Value| {
        n.get("Node Type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some(n) = nodes.iter().find(|n| ty(n) == "Seq Scan") {
        let rel = n
            .get("Relation Name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Err(format!("Seq Scan of {rel}: every row is read"));
    }
    if unbounded_sort(root) {
        return Err(
            "a Sort node over unlimited input: the rows are read whole and sorted, \
                    not taken in index order"
                .into(),
        );
    }
    let used: Vec<String> = nodes
        .iter()
        .filter(|n| matches!(ty(n).as_str(), "Index Scan" | "Index Only Scan"))
        .filter_map(|n| {
            n.get("Index Name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if used.is_empty() {
        return Err("no index scan in the plan".into());
    }
    if let Some(missing) = indexes.iter().find(|i| !used.contains(i)) {
        return Err(format!(
            "{missing} is not used (the plan reads {}): the setup creates it with the collection, so a collection made by an older wiberctl lacks it (recreate the stack)",
            used.join(", ")
        ));
    }
    Ok(used.join(" + "))
}

/// A conversation key and a user that exist in the collection (any document's), else
/// fixture conversation 0's: an equality's plan does not depend on the value much, but
/// a value the store holds makes the plan the one a reader gets.
async fn sample_keys(
    client: &mongodb::Client,
    addr: &StoreAddr,
) -> anyhow::Result<(String, String)> {
    let (a, b) = fixture::users(0);
    let fallback = (conversation_key(&a, &b), a);
    let d = super::collection(client, addr, &addr.collection)
        .find_one(doc! {})
        .projection(doc! {(StoredMessage::CONVERSATION): 1, (StoredMessage::PARTICIPANTS): 1})
        .await
        .with_context(|| format!("cannot read {}", addr.describe()))?;
    let Some(d) = d else { return Ok(fallback) };
    let conversation = d
        .get_str(StoredMessage::CONVERSATION)
        .map(str::to_string)
        .unwrap_or(fallback.0);
    let user = d
        .get_array(StoredMessage::PARTICIPANTS)
        .ok()
        .and_then(|p| p.first())
        .and_then(Bson::as_str)
        .map(str::to_string)
        .unwrap_or(fallback.1);
    Ok((conversation, user))
}

async fn explain_one(
    client: &mongodb::Client,
    addr: &StoreAddr,
    shape: &ReadShape,
    coll: &str,
    value: &str,
    limit: i64,
) -> anyhow::Result<ReadExplain> {
    let filter = doc! {shape.field: value};
    let sort: Document = shape
        .sort
        .iter()
        .map(|(f, dir)| (f.to_string(), Bson::Int32(*dir)))
        .collect();
    let mut find = doc! {"find": coll, "filter": filter.clone(), "limit": limit};
    if !sort.is_empty() {
        find.insert("sort", sort.clone());
    }
    let answer = client
        .database(&addr.db)
        .run_command(doc! {"explain": find, "verbosity": "queryPlanner"})
        .await
        .with_context(|| {
            format!(
                "explain of the {} read on {}.{coll} failed",
                shape.name, addr.db
            )
        })?;
    let flag = |k: &str| answer.get_bool(k).ok();
    let plan = answer
        .get_document("queryPlanner")
        .map(|d| Bson::Document(d.clone()).into_relaxed_extjson())
        .unwrap_or(Value::Null);
    let served = classify(shape.field, flag("filterPushdown"), &plan);
    let mut r = ReadExplain {
        read: shape.name.to_string(),
        collection: coll.to_string(),
        filter: format!("{{{}: {:?}}}", shape.field, value),
        sort: if sort.is_empty() {
            "-".into()
        } else {
            sort.to_string()
        },
        filter_pushdown: flag("filterPushdown"),
        sort_pushdown: flag("sortPushdown"),
        limit_pushdown: flag("limitPushdown"),
        served: served.clone(),
        index_if_forced: None,
        index_served: false,
        detail: String::new(),
        plan,
    };
    match served {
        Served::Index { node, index } => {
            r.index_served = true;
            r.detail = format!("{node} on {index}");
        }
        Served::Scan {
            node,
            relation,
            again,
        } => {
            let forced = match (&addr.postgres_url, &again) {
                (Some(url), Some((schema, table, filter))) => {
                    let plan = pg::explain_without_seq_scan(url, schema, table, filter).await?;
                    match classify(shape.field, Some(true), &plan) {
                        Served::Index { index, .. } => Some(index),
                        _ => None,
                    }
                }
                _ => None,
            };
            let on = relation.map(|r| format!(" of {r}")).unwrap_or_default();
            match forced {
                Some(index) => {
                    r.index_served = true;
                    r.detail = format!(
                        "{node}{on}, the planner's choice (a small table, or a value matching \
                         much of it); with sequential scans off: {index}"
                    );
                    r.index_if_forced = Some(index);
                }
                None => {
                    r.detail = format!(
                        "{node}{on}: no index serves `{}` (every read of this shape reads the \
                         whole collection){}",
                        shape.field,
                        if addr.postgres_url.is_some() {
                            "; `wiberctl store check` names the missing index and the statement that makes it"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Served::NotPushedDown => {
            r.detail = format!(
                "FerretDB does not push `{}` down to its backend: it reads every document of \
                 {coll} and filters them itself (FerretDB on SQLite does this for every field \
                 but _id; on PostgreSQL an equality is pushed down)",
                shape.field
            );
        }
        Served::Unknown { why } => r.detail = why,
    }
    Ok(r)
}

/// Reads a plan: PostgreSQL's (`{"Plan": {"Node Type", "Plans": [...]}}`, under FerretDB)
/// or MongoDB's (`{"winningPlan": {"stage", "inputStage(s)"}}`).
pub fn classify(field: &str, filter_pushdown: Option<bool>, plan: &Value) -> Served {
    // FerretDB answers for a collection that does not exist with an empty plan (and no
    // pushdown): that says nothing about indexes.
    if plan.as_object().is_some_and(|o| o.is_empty()) {
        return Served::Unknown {
            why: "the store returned an empty plan: the collection does not exist yet".into(),
        };
    }
    if filter_pushdown == Some(false) {
        return Served::NotPushedDown;
    }
    if let Some(root) = plan.get("Plan") {
        let mut nodes = Vec::new();
        walk(root, "Plans", &mut nodes);
        let key = format!("'{field}'");
        for n in &nodes {
            let ty = n.get("Node Type").and_then(Value::as_str).unwrap_or("");
            let cond = n.get("Index Cond").and_then(Value::as_str).unwrap_or("");
            if matches!(ty, "Index Scan" | "Index Only Scan" | "Bitmap Index Scan")
                && cond.contains(&key)
            {
                let index = n.get("Index Name").and_then(Value::as_str).unwrap_or("?");
                return Served::Index {
                    node: ty.to_string(),
                    index: index.to_string(),
                };
            }
        }
        if let Some(n) = nodes
            .iter()
            .find(|n| n.get("Node Type").and_then(Value::as_str) == Some("Seq Scan"))
        {
            let s = |k: &str| n.get(k).and_then(Value::as_str).map(str::to_string);
            let (schema, table, filter) = (s("Schema"), s("Relation Name"), s("Filter"));
            return Served::Scan {
                node: "Seq Scan".into(),
                relation: table.as_ref().map(|t| match &schema {
                    Some(schema) => format!("{schema}.{t}"),
                    None => t.clone(),
                }),
                again: match (schema, table, filter) {
                    (Some(s), Some(t), Some(f)) => Some((s, t, f)),
                    _ => None,
                },
            };
        }
        let types: Vec<&str> = nodes
            .iter()
            .filter_map(|n| n.get("Node Type").and_then(Value::as_str))
            .collect();
        return Served::Unknown {
            why: format!(
                "the plan ({}) has no index scan on `{field}` and no Seq Scan",
                types.join(" > ")
            ),
        };
    }
    if let Some(root) = plan.get("winningPlan") {
        let mut nodes = Vec::new();
        walk_mongo(root, &mut nodes);
        if let Some(n) = nodes
            .iter()
            .find(|n| n.get("stage").and_then(Value::as_str) == Some("IXSCAN"))
        {
            let index = n.get("indexName").and_then(Value::as_str).unwrap_or("?");
            return Served::Index {
                node: "IXSCAN".into(),
                index: index.to_string(),
            };
        }
        if nodes
            .iter()
            .any(|n| n.get("stage").and_then(Value::as_str) == Some("COLLSCAN"))
        {
            return Served::Scan {
                node: "COLLSCAN".into(),
                relation: None,
                again: None,
            };
        }
    }
    Served::Unknown {
        why: "the store's plan is in a format wiberctl does not read (neither PostgreSQL's nor MongoDB's)".into(),
    }
}

/// Whether the plan sorts rows that no LIMIT below the sort bounds: a sort of the whole
/// key range. A sort over limited inputs (the user page merges two index reads cut at
/// the page size) costs the page, not the data.
fn unbounded_sort(node: &Value) -> bool {
    fn limited(node: &Value) -> bool {
        if node.get("Node Type").and_then(Value::as_str) == Some("Limit") {
            return true;
        }
        match node.get("Plans").and_then(Value::as_array) {
            Some(kids) if !kids.is_empty() => kids.iter().all(limited),
            _ => false,
        }
    }
    let kids = node
        .get("Plans")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_sort = node.get("Node Type").and_then(Value::as_str) == Some("Sort");
    (is_sort && !kids.iter().all(limited)) || kids.iter().any(unbounded_sort)
}

fn walk<'a>(node: &'a Value, children: &str, out: &mut Vec<&'a Value>) {
    out.push(node);
    if let Some(kids) = node.get(children).and_then(Value::as_array) {
        for k in kids {
            walk(k, children, out);
        }
    }
}

fn walk_mongo<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(node);
    if let Some(k) = node.get("inputStage") {
        walk_mongo(k, out);
    }
    if let Some(kids) = node.get("inputStages").and_then(Value::as_array) {
        for k in kids {
            walk_mongo(k, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// As FerretDB 1.24 returns it for `{conversation: "a|b"}` on PostgreSQL 15.
    fn bitmap_plan() -> Value {
        json!({"Plan": {
            "Node Type": "Bitmap Heap Scan", "Relation Name": "messages_6f5c0e3b", "Schema": "wiber",
            "Recheck Cond": "((_jsonb -> 'conversation'::text) @> '\"a|b\"'::jsonb)",
            "Plans": [{
                "Node Type": "Bitmap Index Scan", "Parent Relationship": "Outer",
                "Index Name": "messages_6f5c0e3b_wiber_conversation_gin",
                "Index Cond": "((_jsonb -> 'conversation'::text) @> '\"a|b\"'::jsonb)"
            }]
        }})
    }

    #[test]
    fn an_index_scan_on_the_field_is_index_served() {
        assert_eq!(
            classify("conversation", Some(true), &bitmap_plan()),
            Served::Index {
                node: "Bitmap Index Scan".into(),
                index: "messages_6f5c0e3b_wiber_conversation_gin".into()
            }
        );
        // An index scan on another field does not serve this one.
        assert!(matches!(
            classify("participants", Some(true), &bitmap_plan()),
            Served::Unknown { .. }
        ));
    }

    #[test]
    fn a_seq_scan_keeps_its_relation_and_filter_to_be_asked_again() {
        let plan = json!({"Plan": {
            "Node Type": "Seq Scan", "Relation Name": "messages_counts_1", "Schema": "wiber",
            "Filter": "((_jsonb -> '_id'::text) @> '\"total\"'::jsonb)"
        }});
        assert_eq!(
            classify("_id", Some(true), &plan),
            Served::Scan {
                node: "Seq Scan".into(),
                relation: Some("wiber.messages_counts_1".into()),
                again: Some((
                    "wiber".into(),
                    "messages_counts_1".into(),
                    "((_jsonb -> '_id'::text) @> '\"total\"'::jsonb)".into()
                )),
            }
        );
    }

    #[test]
    fn a_sql_page_is_index_served_only_when_nothing_unlimited_is_sorted() {
        let scan = |index: &str| json!({"Node Type": "Index Scan", "Index Name": index});
        let limit = |kid: Value| json!({"Node Type": "Limit", "Plans": [kid]});
        let sort = |kids: Vec<Value>| json!({"Node Type": "Sort", "Plans": kids});
        let page = json!({"Plan": limit(scan("t_wiber_conversation_page"))});
        assert_eq!(
            sql_verdict(&page, &["t_wiber_conversation_page".into()]),
            Ok("t_wiber_conversation_page".into())
        );
        // The user page: two index reads cut at the limit, merged by a small sort.
        let merged = json!({"Plan": limit(sort(vec![json!({"Node Type": "Append",
            "Plans": [limit(scan("a")), limit(scan("b"))]})]))});
        assert!(sql_verdict(&merged, &["a".into(), "b".into()]).is_ok());
        assert!(sql_verdict(&merged, &["c".into()])
            .unwrap_err()
            .contains("c is not used"));
        // The whole conversation read through another index and sorted: refused.
        let sorted = json!({"Plan": limit(sort(vec![json!({"Node Type": "Bitmap Heap Scan",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "gin"}]})]))});
        assert!(sql_verdict(&sorted, &[]).unwrap_err().contains("Sort"));
        let seq = json!({"Plan": limit(json!({"Node Type": "Seq Scan", "Relation Name": "t"}))});
        assert!(sql_verdict(&seq, &[])
            .unwrap_err()
            .contains("Seq Scan of t"));
    }

    #[test]
    fn no_pushdown_and_mongodb_plans_and_empty_plans() {
        assert_eq!(
            classify("conversation", Some(false), &bitmap_plan()),
            Served::NotPushedDown
        );
        let ix = json!({"winningPlan": {"stage": "LIMIT", "inputStage": {"stage": "FETCH",
            "inputStage": {"stage": "IXSCAN", "indexName": "conversation_time"}}}});
        assert_eq!(
            classify("conversation", None, &ix),
            Served::Index {
                node: "IXSCAN".into(),
                index: "conversation_time".into()
            }
        );
        let coll = json!({"winningPlan": {"stage": "SORT", "inputStage": {"stage": "COLLSCAN"}}});
        assert!(matches!(
            classify("conversation", None, &coll),
            Served::Scan { .. }
        ));
        assert!(matches!(
            classify("conversation", Some(false), &json!({})),
            Served::Unknown { why } if why.contains("does not exist")
        ));
    }
}
