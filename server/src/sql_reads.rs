//! The tokio-postgres adapter: the only module of the server that uses tokio-postgres.
//! [`SqlReads`] serves the API's reads (behind [`ReadStore`]) from the PostgreSQL under
//! FerretDB, when the stack's store is FerretDB on PostgreSQL (`WIBER_STORE_SQL_URL`).
//!
//! Why: FerretDB 1.24 pushes no sort, and no limit once there is a filter, so a page read
//! through it costs every document of the conversation or user (see
//! [`wiber_model::reads::sql`], which holds the queries and says more). Here a page is
//! one index range read. Writes, and every other reader (`wiberctl verify`, `tail`), go
//! through FerretDB as before; the tables are FerretDB's, read as FerretDB wrote them.
//!
//! The tables are found through FerretDB's metadata (collection name -> table) and
//! remembered; a table FerretDB recreated (a dropped collection) is looked up again.
//! Connections are a few, dialled lazily and replaced when they break, so a PostgreSQL
//! restart costs the reads in flight, not the process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};
use wiber_model::reads::{self, sql};
use wiber_model::{conversation_key, Message, StoredMessage};

use crate::config::MongoConfig;
use crate::seams::{CountScope, ReadStore, StoreError};
use crate::store::Store;

/// Connections kept to PostgreSQL. A read is one or two short statements; on two cores
/// more connections only queue in PostgreSQL instead of here.
const CONNECTIONS: usize = 4;
/// Bound on one statement (and on dialling): past it the read answers 503, and the
/// client may retry, rather than holding a request and a connection.
const STATEMENT_LIMIT: Duration = Duration::from_secs(5);

/// The API's reads, in SQL; readiness also pings the MongoDB endpoint (writes' path).
pub struct SqlReads {
    config: tokio_postgres::Config,
    /// Where the URL came from, for errors (without a password).
    url_shown: String,
    /// FerretDB keeps each MongoDB database in the schema of the same name.
    schema: String,
    collection: String,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
    /// The messages collection's table, once FerretDB's metadata named it.
    table: RwLock<Option<String>>,
    mongo: Store,
}

impl SqlReads {
    /// Reads from the PostgreSQL at `url`, for the collection `mongo` names; `mongo` is
    /// kept for readiness. Nothing is dialled yet.
    pub fn new(url: &str, mongo_cfg: &MongoConfig, mongo: Store) -> anyhow::Result<SqlReads> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            anyhow::anyhow!(
                "invalid {} {url:?}: {e} (expected postgres://user@host:port/database)",
                wiber_model::contract::env::STORE_SQL_URL
            )
        })?;
        let url_shown = match url.split_once('@') {
            Some((_, rest)) => format!("postgres://…@{rest}"),
            None => url.to_string(),
        };
        Ok(SqlReads {
            config,
            url_shown,
            schema: mongo_cfg.mongo_db.clone(),
            collection: mongo_cfg.mongo_collection.clone(),
            slots: (0..CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            table: RwLock::new(None),
            mongo,
        })
    }

    /// A connection: the next slot's, dialled if it has none or its connection broke.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let dial = self.config.connect(NoTls);
        let (client, conn) = tokio::time::timeout(STATEMENT_LIMIT, dial)
            .await
            .map_err(|_| {
                self.error(format_args!(
                    "connecting took over {STATEMENT_LIMIT:?}; is the stack's postgres up?"
                ))
            })?
            .map_err(|e| {
                self.error(format_args!(
                    "cannot connect ({e}); is the stack's postgres up?"
                ))
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs one statement within [`STATEMENT_LIMIT`].
    async fn query(
        &self,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, QueryError> {
        let client = self.client().await.map_err(QueryError::Other)?;
        match tokio::time::timeout(STATEMENT_LIMIT, client.query(statement, params)).await {
            Err(_) => Err(QueryError::Other(
                self.error(format_args!("a read took over {STATEMENT_LIMIT:?}")),
            )),
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Err(QueryError::NoTable),
            Ok(Err(e)) => Err(QueryError::Other(
                self.error(format_args!("a read failed: {e}")),
            )),
        }
    }

    fn error(&self, what: std::fmt::Arguments<'_>) -> StoreError {
        StoreError::new(format!("postgres at {}: {what}", self.url_shown))
    }

    /// The collection's table, from FerretDB's metadata; `None` while the messages
    /// collection does not exist (nothing stored yet).
    async fn table(&self) -> Result<Option<String>, StoreError> {
        if let Some(t) = self.table.read().expect("table lock").clone() {
            return Ok(Some(t));
        }
        let lookup = sql::table_of(&self.schema);
        let table = match self.query(&lookup, &[&self.collection]).await {
            Ok(rows) => rows.first().map(|r| r.get::<_, String>(0)),
            // No metadata table: FerretDB has not created the database yet.
            Err(QueryError::NoTable) => None,
            Err(QueryError::Other(e)) => return Err(e),
        };
        if table.is_some() {
            self.table.write().expect("table lock").clone_from(&table);
        }
        Ok(table)
    }

    /// Runs the statement `build` makes for the messages table; when the table is gone
    /// (FerretDB recreated the collection), looks it up again and retries once.
    async fn read<F>(
        &self,
        build: F,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Vec<Row>>, StoreError>
    where
        F: Fn(&str) -> String,
    {
        for _ in 0..2 {
            let Some(table) = self.table().await? else {
                return Ok(None);
            };
            match self.query(&build(&table), params).await {
                Ok(rows) => return Ok(Some(rows)),
                Err(QueryError::NoTable) => *self.table.write().expect("table lock") = None,
                Err(QueryError::Other(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn page(
        &self,
        build: impl Fn(&str) -> String,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Message>, StoreError> {
        let rows = self.read(build, params).await?.unwrap_or_default();
        rows.iter().map(decode).collect()
    }

    pub async fn conversation(
        &self,
        a: &str,
        b: &str,
        limit: i64,
        skip: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let key = conversation_key(a, b);
        let skip = i64::try_from(skip).unwrap_or(i64::MAX);
        self.page(
            |t| sql::conversation_page(&self.schema, t),
            &[&key, &limit, &skip],
        )
        .await
    }

    pub async fn user_recent(&self, user: &str, limit: i64) -> Result<Vec<Message>, StoreError> {
        self.page(|t| sql::user_recent(&self.schema, t), &[&user, &limit])
            .await
    }

    /// The counter when the counters are vouched for (`$exact`), else a count of the
    /// rows by the same indexes the pages use.
    pub async fn count(&self, scope: &CountScope) -> Result<u64, StoreError> {
        // The counter, and what counting the rows instead takes (statement, key).
        type Count = fn(&str, &str) -> String;
        let (counter, fallback, key): (String, Count, Option<String>) = match scope {
            CountScope::All => (reads::COUNTER_TOTAL.to_string(), sql::count_all, None),
            CountScope::User(u) => (reads::user_counter(u), sql::count_user, Some(u.clone())),
            CountScope::Conversation(a, b) => {
                let key = conversation_key(a, b);
                let counter = reads::conversation_counter(&key);
                (counter, sql::count_conversation, Some(key))
            }
        };
        // The counters and the `$exact` marker, one primary-key read. No counters table
        // (a store set up without counting): count rows instead.
        let keys = vec![counter.clone()];
        match self
            .query(&sql::counters(&self.schema), &[&self.collection, &keys])
            .await
        {
            Ok(rows) => {
                let value = |key: &str| {
                    rows.iter()
                        .find(|r| r.get::<_, String>(0) == key)
                        .map(|r| r.get::<_, i64>(1))
                };
                if value(reads::COUNTER_EXACT).is_some() {
                    return Ok(value(&counter).map_or(0, |n| n.max(0) as u64));
                }
            }
            Err(QueryError::NoTable) => {}
            Err(QueryError::Other(e)) => return Err(e),
        }
        let params: Vec<&(dyn ToSql + Sync)> = key.iter().map(|k| k as _).collect();
        let rows = self.read(|t| fallback(&self.schema, t), &params).await?;
        Ok(rows
            .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)))
            .map_or(0, |n| n.max(0) as u64))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.mongo.ping().await?;
        self.query("SELECT 1", &[]).await.map_err(|e| match e {
            QueryError::Other(e) => e,
            QueryError::NoTable => self.error(format_args!("SELECT 1 failed")),
        })?;
        Ok(())
    }
}

/// Why a statement failed: a missing table is a state (nothing stored yet, or a
/// collection recreated), anything else an error.
enum QueryError {
    NoTable,
    Other(StoreError),
}

/// A row of a page: the document as JSON text, without FerretDB's `$s`.
fn decode(row: &Row) -> Result<Message, StoreError> {
    let text: String = row.get(0);
    serde_json::from_str::<StoredMessage>(&text)
        .map(StoredMessage::into_message)
        .map_err(|e| {
            let id = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get(StoredMessage::ID).cloned())
                .unwrap_or(serde_json::Value::Null);
            StoreError::new(format!(
                "stored document {id} is not a wiber message ({e}); fix or delete it in MongoDB"
            ))
        })
}

impl ReadStore for SqlReads {
    fn conversation<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
        limit: i64,
        skip: u64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        Box::pin(SqlReads::conversation(self, a, b, limit, skip))
    }

    fn user_recent<'a>(
        &'a self,
        user: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>> {
        Box::pin(SqlReads::user_recent(self, user, limit))
    }

    fn count<'a>(&'a self, scope: &'a CountScope) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(SqlReads::count(self, scope))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SqlReads::ping(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What FerretDB stores, minus `$s`, decodes to the message the API returns.
    #[test]
    fn a_ferretdb_document_decodes() {
        let text = r#"{"_id": "m1", "offset": 42, "content": "Hello!", "toUser": "alice",
            "fromUser": "bob", "storedAt": 1758865781000, "createdAt": "2025-09-26T05:49:40.040Z",
            "messageId": "m1", "partition": 3, "timestamp": 1758865780040,
            "conversation": "alice|bob", "participants": ["bob", "alice"]}"#;
        let m = serde_json::from_str::<StoredMessage>(text)
            .unwrap()
            .into_message();
        assert_eq!(m.message_id, "m1");
        assert_eq!(m.timestamp, 1_758_865_780_040);
    }
}
