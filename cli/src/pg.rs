//! The PostgreSQL under FerretDB: the only `tokio-postgres` user.
//!
//! FerretDB 1.24 cannot build the indexes its own queries need (GIN on the jsonb
//! expressions it filters with) nor count without reading, so the project sets both up in
//! PostgreSQL itself: `server/sql/ferretdb-postgres.sql`, applied once per cluster by the
//! runtime that creates it, equips every collection FerretDB creates from then on. This
//! module applies that file and checks, for one collection, that the equipment is there.

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_postgres::NoTls;
use wiber_model::reads::sql::ident;

/// The setup, compiled in so that the binary and the SQL cannot drift apart.
pub const SETUP_SQL: &str = include_str!("../../server/sql/ferretdb-postgres.sql");

/// The database FerretDB keeps its data in (one schema per MongoDB database).
pub const FERRETDB_DATABASE: &str = "ferretdb";

/// The fields of a messages collection that get a GIN index (see the SQL file).
pub const GIN_FIELDS: [&str; 3] = ["_id", "conversation", "participants"];

/// Connects, driving the connection on its own task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {url}: is the stack's postgres running? (`wiberctl stack status`)"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Applies the setup (idempotent: every object is created or replaced).
pub async fn apply_setup(url: &str) -> Result<()> {
    let client = connect(url).await?;
    client
        .batch_execute(SETUP_SQL)
        .await
        .with_context(|| format!("applying server/sql/ferretdb-postgres.sql at {url} failed"))
}

/// `SELECT 1` within `limit`: the server accepts connections and is out of recovery (a
/// port that merely accepts is not ready: during start-up and crash recovery PostgreSQL
/// answers every connection with "the database system is starting up").
pub async fn ping(url: &str, limit: std::time::Duration) -> Result<()> {
    let probe = async {
        let client = connect(url).await?;
        client
            .simple_query("SELECT 1")
            .await
            .with_context(|| format!("SELECT 1 at {url} failed"))?;
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, probe).await.map_err(|_| {
        anyhow::anyhow!("PostgreSQL at {url} did not answer SELECT 1 within {limit:?}")
    })?
}

/// Creates database `name` on the server of `url` (any database of it) unless it exists.
pub async fn ensure_database(url: &str, name: &str) -> Result<()> {
    let client = connect(url).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .with_context(|| format!("listing the databases at {url}"))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", ident(name)))
            .await
            .with_context(|| format!("creating database {name} at {url}"))?;
    }
    Ok(())
}

/// What the setup left on one collection's table.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionCheck {
    /// The event trigger that equips new collections is installed.
    pub event_trigger: bool,
    /// The table FerretDB's metadata names for the collection (None: not created yet).
    pub table: Option<String>,
    /// Each GIN field and whether its index exists on that table.
    pub gin: Vec<(String, bool)>,
    /// Each page index's key field (`wiber_model::reads::sql::PAGE_INDEX_FIELDS`) and
    /// whether that btree exists: what the API's SQL pages read through.
    pub page: Vec<(String, bool)>,
    /// Both count triggers (insert, delete) are on the table.
    pub count_triggers: bool,
    /// The collection's `$exact` row is in the counters table (readers trust the counters).
    pub counts_exact: bool,
}

impl CollectionCheck {
    /// Everything a fast, exactly counted collection needs.
    pub fn ok(&self) -> bool {
        self.event_trigger
            && self.table.is_some()
            && self.gin.iter().all(|(_, present)| *present)
            && self.page.iter().all(|(_, present)| *present)
            && self.count_triggers
            && self.counts_exact
    }

    /// What is missing, in words, with the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.event_trigger {
            out.push("the event trigger wiber_watch_metadata is missing: the setup was never applied to this cluster (a stack made by an older wiberctl? recreate it with `stack down --volumes` and `stack up`)".into());
        }
        match &self.table {
            None => out.push(
                "the collection does not exist yet (the consumer creates it when it starts)".into(),
            ),
            Some(t) => {
                for (f, present) in &self.gin {
                    if !present {
                        out.push(format!(
                            "no GIN index on {t} for `{f}`: reads filtering on it scan the table"
                        ));
                    }
                }
                for (f, present) in &self.page {
                    if !present {
                        out.push(format!(
                            "no page index on {t} for `{f}`: the API's pages by it read and sort every row of the key"
                        ));
                    }
                }
                if !self.count_triggers {
                    out.push(format!(
                        "no count triggers on {t}: counts fall back to reading documents"
                    ));
                }
            }
        }
        if self.table.is_some() && !self.counts_exact {
            out.push("the counts collection has no `$exact` marker (it was created after the messages collection): counts fall back to reading documents".into());
        }
        out
    }
}

/// Checks `collection` of MongoDB database `db` (a schema in PostgreSQL).
pub async fn check_collection(url: &str, db: &str, collection: &str) -> Result<CollectionCheck> {
    let client = connect(url).await?;
    let event_trigger = client
        .query_opt(
            "SELECT 1 FROM pg_event_trigger WHERE evtname = 'wiber_watch_metadata' AND evtenabled <> 'D'",
            &[],
        )
        .await?
        .is_some();
    let table = table_with(&client, url, db, collection).await?;
    let counts_table = table_with(
        &client,
        url,
        db,
        &wiber_model::contract::counts_collection(collection),
    )
    .await?;
    let mut gin = Vec::new();
    let mut page = Vec::new();
    let mut count_triggers = false;
    if let Some(t) = &table {
        for f in wiber_model::reads::sql::PAGE_INDEX_FIELDS {
            let name = wiber_model::reads::sql::page_index_name(t, f);
            let present = client
                .query_opt(
                    "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname = $3",
                    &[&db, t, &name],
                )
                .await?
                .is_some();
            page.push((f.to_string(), present));
        }
        for f in GIN_FIELDS {
            let present = client
                .query_opt(
                    "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 \
                     AND indexdef LIKE '%USING gin%' AND indexdef LIKE $3",
                    &[&db, t, &format!("%'{f}'::text%")],
                )
                .await?
                .is_some();
            gin.push((f.to_string(), present));
        }
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid \
                 JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = $1 AND c.relname = $2 \
                 AND g.tgname IN ('wiber_count_insert', 'wiber_count_delete')",
                &[&db, t],
            )
            .await?
            .get(0);
        count_triggers = n == 2;
    }
    let counts_exact = counts_table.is_some()
        && counters_with(&client, url, db, collection, &[])
            .await?
            .is_some();
    Ok(CollectionCheck {
        event_trigger,
        table,
        gin,
        page,
        count_triggers,
        counts_exact,
    })
}

/// The name the setup gives the GIN index on `field` of table `table` (see
/// `wiber_equip_collection` in the SQL file: the table's name cut to 40 characters, so
/// that the index name stays within PostgreSQL's 63).
pub fn gin_index_name(table: &str, field: &str) -> String {
    let head: String = table.chars().take(40).collect();
    format!("{head}_wiber_{}_gin", field.to_lowercase())
}

/// PostgreSQL's plan for `SELECT _jsonb FROM schema.table WHERE <filter>` with sequential
/// scans switched off: whether an index *can* serve `filter` at all, however small the
/// table (where the planner rightly prefers to read it whole). `filter` is SQL as
/// PostgreSQL printed it in an earlier plan of the same table. The statement is only
/// planned, in a read-only transaction that is rolled back. Returns the plan's top object
/// (`{"Plan": {...}}`).
pub async fn explain_without_seq_scan(
    url: &str,
    schema: &str,
    table: &str,
    filter: &str,
) -> Result<serde_json::Value> {
    let client = connect(url).await?;
    let sql = format!(
        "BEGIN READ ONLY; SET LOCAL enable_seqscan = off; \
         EXPLAIN (FORMAT JSON) SELECT _jsonb FROM {}.{} WHERE {filter}; ROLLBACK",
        ident(schema),
        ident(table)
    );
    let what =
        || format!("cannot plan a read of {schema}.{table} at {url} without sequential scans");
    let rows = client.simple_query(&sql).await.with_context(what)?;
    let text = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .with_context(what)?;
    let plans: Vec<serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("PostgreSQL's plan is not JSON: {text}"))?;
    plans.into_iter().next().with_context(what)
}

/// The counters `keys` of `collection` of MongoDB database `db` (missing keys are 0),
/// from the schema's `_wiber_counts` table; `None` when the store does not vouch for
/// them (no counters table, or no `$exact` row: the collection is not counted, or was
/// not counted since its creation).
pub async fn counters(
    url: &str,
    db: &str,
    collection: &str,
    keys: &[String],
) -> Result<Option<std::collections::HashMap<String, u64>>> {
    let client = connect(url).await?;
    counters_with(&client, url, db, collection, keys).await
}

/// [`counters`] on an open connection.
async fn counters_with(
    client: &tokio_postgres::Client,
    url: &str,
    db: &str,
    collection: &str,
    keys: &[String],
) -> Result<Option<std::collections::HashMap<String, u64>>> {
    let table = format!("{}.{}", ident(db), wiber_model::reads::sql::COUNTERS_TABLE);
    if !relation_exists(client, &table).await? {
        return Ok(None);
    }
    let rows = client
        .query(
            &wiber_model::reads::sql::counters(db),
            &[&collection, &keys],
        )
        .await
        .with_context(|| format!("cannot read the counters of {db}.{collection} at {url}"))?;
    let mut out: std::collections::HashMap<String, u64> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect();
    if out.remove(wiber_model::reads::COUNTER_EXACT).is_none() {
        return Ok(None);
    }
    for k in keys {
        out.entry(k.clone()).or_insert(0);
    }
    Ok(Some(out))
}

/// A parameter of a statement [`explain_statement`] plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
    TextArray(Vec<String>),
}

/// PostgreSQL's plan (`EXPLAIN (FORMAT JSON)`, top object) of `statement` with `params`
/// bound, as the server would run it. `forced`: with sequential scans and explicit sorts
/// off, i.e. whether an index *can* deliver the rows in order, however small the table
/// (where the planner rightly prefers to read it whole and sort). Planned only, in a
/// read-only transaction that is rolled back.
pub async fn explain_statement(
    url: &str,
    statement: &str,
    params: &[Param],
    forced: bool,
) -> Result<serde_json::Value> {
    use tokio_postgres::types::ToSql;
    let client = connect(url).await?;
    let what = || format!("cannot plan `{statement}` at {url}");
    let setup = if forced {
        "BEGIN READ ONLY; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off"
    } else {
        "BEGIN READ ONLY"
    };
    client.batch_execute(setup).await.with_context(what)?;
    let bound: Vec<Box<dyn ToSql + Sync + Send>> = params
        .iter()
        .map(|p| match p {
            Param::Text(t) => Box::new(t.clone()) as Box<dyn ToSql + Sync + Send>,
            Param::Int(i) => Box::new(*i),
            Param::TextArray(a) => Box::new(a.clone()),
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = bound
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client
        .query(&format!("EXPLAIN (FORMAT JSON) {statement}"), &refs)
        .await
        .with_context(what);
    client.batch_execute("ROLLBACK").await.ok();
    let JsonText(text) = rows?
        .first()
        .with_context(what)?
        .try_get(0)
        .with_context(what)?;
    let plans: Vec<serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("PostgreSQL's plan is not JSON: {text}"))?;
    plans.into_iter().next().with_context(what)
}

/// A `json` value as its text (EXPLAIN's result type; the crate decodes json only with a
/// serde feature we do not otherwise need).
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte, then the text.
        let raw = if *ty == tokio_postgres::types::Type::JSONB {
            raw.get(1..).unwrap_or_default()
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        use tokio_postgres::types::Type;
        matches!(*ty, Type::JSON | Type::JSONB | Type::TEXT)
    }
}

/// The table FerretDB keeps `collection` of database `db` in, from its metadata (None:
/// the collection, or the database, does not exist yet).
pub async fn table_of(url: &str, db: &str, collection: &str) -> Result<Option<String>> {
    let client = connect(url).await?;
    table_with(&client, url, db, collection).await
}

/// [`table_of`] on an open connection.
async fn table_with(
    client: &tokio_postgres::Client,
    url: &str,
    db: &str,
    collection: &str,
) -> Result<Option<String>> {
    let meta = format!("{}._ferretdb_database_metadata", ident(db));
    if !relation_exists(client, &meta).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(&wiber_model::reads::sql::table_of(db), &[&collection])
        .await
        .with_context(|| format!("cannot read FerretDB's metadata of {db} at {url}"))?;
    Ok(row.map(|r| r.get::<_, String>(0)))
}

/// Whether `name` (`schema.relation`, quoted as needed) exists.
async fn relation_exists(client: &tokio_postgres::Client, name: &str) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await?
        .get(0))
}

/// How a table has been read since its statistics were reset (PostgreSQL's cumulative
/// statistics, `pg_stat_user_tables`): what a read costs in rows, independent of the
/// machine's speed. Backends publish their counts when they go idle (within about 10 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableReads {
    pub seq_scans: i64,
    /// Rows read by sequential scans: a filter no index served reads them all.
    pub seq_rows: i64,
    pub index_scans: i64,
    /// Rows fetched through indexes.
    pub index_rows: i64,
}

/// [`TableReads`] of `schema.table` (zeros when the table has no statistics yet).
pub async fn table_reads(url: &str, schema: &str, table: &str) -> Result<TableReads> {
    let client = connect(url).await?;
    let row = client
        .query_opt(
            "SELECT coalesce(seq_scan, 0), coalesce(seq_tup_read, 0), \
             coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0) \
             FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            &[&schema, &table],
        )
        .await
        .with_context(|| format!("cannot read the statistics of {schema}.{table} at {url}"))?;
    Ok(row.map_or_else(TableReads::default, |r| TableReads {
        seq_scans: r.get(0),
        seq_rows: r.get(1),
        index_scans: r.get(2),
        index_rows: r.get(3),
    }))
}
