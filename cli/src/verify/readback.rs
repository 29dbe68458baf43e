//! Reads a run's conversations back through the API, as a reader gets them
//! (`GET /messages/{a}/{b}`, page by page), so `reordered` holds the API's own order to
//! the ledger's sequence, not an order verify re-derives from the documents. Only the
//! message ids are kept, one conversation at a time.

use std::time::Duration;

use anyhow::Context;
use wiber_model::ledger;

use crate::client::ApiClient;

/// The contract's largest page.
const PAGE: u32 = 500;
/// Conversations read back per run: all of a scenario's, a sample of a large bench's.
pub const MAX_CONVERSATIONS: u32 = 64;
/// Pages per conversation (25,000 messages): a bound, not a limit a run should reach.
const MAX_PAGES: u64 = 50;
/// Time read-back may take in all. A store that scans on every read (FerretDB on SQLite
/// with a large collection: seconds per page) must not make verify cost what the store
/// holds; conversations not read in time are ordered from the documents instead.
const BUDGET: Duration = Duration::from_secs(20);

/// Reads conversations back one at a time (the final verify asks for each bucket's as it
/// checks it), for the first [`MAX_CONVERSATIONS`] conversations of a run, as many as
/// [`BUDGET`] allows in all (a conversation is kept only when read whole).
pub struct Reader {
    api: ApiClient,
    api_url: String,
    run: String,
    deadline: tokio::time::Instant,
    /// Conversations read back so far.
    pub read: u32,
    /// Why reading back stopped, if the API failed: the rest are ordered from the
    /// documents.
    pub failed: Option<String>,
}

impl Reader {
    pub fn new(api_url: &str, run: &str) -> anyhow::Result<Reader> {
        Ok(Reader {
            api: ApiClient::new(api_url, Duration::from_secs(30))?,
            api_url: api_url.to_string(),
            run: run.to_string(),
            deadline: tokio::time::Instant::now() + BUDGET,
            read: 0,
            failed: None,
        })
    }

    /// Message ids of conversation `conv` in the order the API returns them; `None` when
    /// it is not read back (beyond the first [`MAX_CONVERSATIONS`], out of time, or the
    /// API failed before).
    pub async fn conversation(&mut self, conv: u32) -> Option<Vec<String>> {
        let out_of_time = tokio::time::Instant::now() >= self.deadline && self.read > 0;
        if conv >= MAX_CONVERSATIONS || out_of_time || self.failed.is_some() {
            return None;
        }
        let (a, b) = ledger::users(&self.run, conv);
        let mut ids = Vec::new();
        for page in 0..MAX_PAGES {
            let got = match self
                .api
                .conversation(&a, &b, PAGE, page * u64::from(PAGE))
                .await
                .with_context(|| {
                    format!(
                        "cannot read conversation {a} ↔ {b} back through {}",
                        self.api_url
                    )
                }) {
                Ok(got) => got,
                Err(e) => {
                    self.failed = Some(format!("{e:#}"));
                    return None;
                }
            };
            let n = got.len();
            ids.extend(got.into_iter().map(|m| m.message_id));
            if n < PAGE as usize {
                break;
            }
        }
        self.read += 1;
        Some(ids)
    }
}
