//! The run file (`run.json`) of a bench run: what was run, against which API, and where
//! its messages end up. Written by `bench`, read by `verify` and scenarios; a leaf
//! module so that neither of them has to import the other.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Where the run's messages end up, and the consumer group that moves them there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTarget {
    pub mongo_uri: String,
    pub mongo_db: String,
    pub mongo_collection: String,
    /// The PostgreSQL under FerretDB, when the store is FerretDB on PostgreSQL: where
    /// verify reads the store's exact counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<String>,
    pub kafka: String,
    pub group: String,
    pub topic: String,
}

/// `run.json`: what verify needs to check the run later without repeating the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    pub run: String,
    pub name: String,
    pub started_ms: i64,
    pub api_url: String,
    pub conversations: u32,
    pub size: usize,
    pub target: StoreTarget,
}

impl RunFile {
    pub fn read(dir: &Path) -> anyhow::Result<RunFile> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a bench run directory?)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a run file", path.display()))
    }
}
