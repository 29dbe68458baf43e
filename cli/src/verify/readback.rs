//! Reads a run's conversations back through the API, as a reader gets them
//! (`GET /messages/{a}/{b}`, page by page), so `reordered` holds the API's own order to
//! the ledger's sequence, not an order verify re-derives from the documents. Only the
//! message ids are kept.

use std::collections::BTreeMap;
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

/// Message ids of each conversation in the order the API returns them, for the first
/// [`MAX_CONVERSATIONS`] conversations of run `run`, as many as [`BUDGET`] allows (a
/// conversation is kept only when read whole).
pub async fn conversations(
    api_url: &str,
    run: &str,
    conversations: u32,
) -> anyhow::Result<BTreeMap<u32, Vec<String>>> {
    let api = ApiClient::new(api_url, Duration::from_secs(30))?;
    let deadline = tokio::time::Instant::now() + BUDGET;
    let mut out = BTreeMap::new();
    for conv in 0..conversations.min(MAX_CONVERSATIONS) {
        if tokio::time::Instant::now() >= deadline && !out.is_empty() {
            break;
        }
        let (a, b) = ledger::users(run, conv);
        let mut ids = Vec::new();
        for page in 0..MAX_PAGES {
            let got = api
                .conversation(&a, &b, PAGE, page * u64::from(PAGE))
                .await
                .with_context(|| {
                    format!("cannot read conversation {a} ↔ {b} back through {api_url}")
                })?;
            let n = got.len();
            ids.extend(got.into_iter().map(|m| m.message_id));
            if n < PAGE as usize {
                break;
            }
        }
        out.insert(conv, ids);
    }
    Ok(out)
}
