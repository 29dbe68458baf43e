//! `wiberctl store`: the stack's store at scale, seen from the operator's side.
//!
//! Layout:
//! - [`fill`]: writes fixture messages straight to the store (MongoDB wire, through
//!   FerretDB so PostgreSQL's triggers count them), to test reads at scale.
//! - [`check`]: whether the PostgreSQL under FerretDB carries what makes the reads fast
//!   and the counts exact (GIN indexes, count triggers, `$exact`), with the fix for each
//!   gap.
//! - [`explain`]: asks the store how it answers each read of [`wiber_model::reads::ALL`]
//!   and whether an index serves it.
//!
//! Everything here takes a [`StoreAddr`]; which stack it belongs to is decided by the
//! command (`commands::store`), like every other command that finds a stack.

pub mod check;
pub mod explain;
pub mod fill;

use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;

/// Where a stack keeps its messages: the MongoDB-wire address, database and collection,
/// and the PostgreSQL under FerretDB when there is one (None: plain MongoDB, FerretDB on
/// SQLite, or a store given by `--mongo-uri` alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAddr {
    pub mongo_uri: String,
    pub db: String,
    pub collection: String,
    pub postgres_url: Option<String>,
}

impl StoreAddr {
    /// The counters collection of the messages collection.
    pub fn counts_collection(&self) -> String {
        wiber_model::contract::counts_collection(&self.collection)
    }

    /// `db.collection at uri`, for messages.
    pub fn describe(&self) -> String {
        format!("{}.{} at {}", self.db, self.collection, self.mongo_uri)
    }

    /// A client for the store, with a pool of at least `pool` connections.
    pub async fn client(&self, app: &str, pool: u32) -> anyhow::Result<mongodb::Client> {
        let mut opts = ClientOptions::parse(&self.mongo_uri)
            .await
            .with_context(|| format!("invalid MongoDB URI {:?} (--mongo-uri)", self.mongo_uri))?;
        opts.app_name = Some(app.into());
        opts.server_selection_timeout = Some(Duration::from_secs(5));
        opts.connect_timeout = Some(Duration::from_secs(3));
        opts.max_pool_size = Some(pool.max(opts.max_pool_size.unwrap_or(0)).max(2));
        let client = mongodb::Client::with_options(opts)
            .with_context(|| format!("cannot use MongoDB URI {:?}", self.mongo_uri))?;
        // Fail here, naming the store, rather than deep inside the first write.
        client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .with_context(|| {
                format!(
                    "cannot reach the store at {} (is the stack up? `wiberctl stack status`; or give --mongo-uri)",
                    self.mongo_uri
                )
            })?;
        Ok(client)
    }
}

/// The documents of `coll` are read as plain BSON: fixtures, stored messages and counter
/// documents all pass through here.
pub(crate) fn collection(
    client: &mongodb::Client,
    addr: &StoreAddr,
    name: &str,
) -> mongodb::Collection<Document> {
    client.database(&addr.db).collection(name)
}
