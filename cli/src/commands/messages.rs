//! `send`, `read`, `count`, `health`: talk to the API like any client would.

use wiber_model::NewMessage;

use crate::client::{ApiClient, ClientError};
use crate::exit::{self, Exit};
use crate::output;

/// Sends one message. Exit 0 when Kafka acknowledged it, 1 when the API refused it.
pub async fn send(api: &ApiClient, msg: NewMessage, json: bool) -> anyhow::Result<Exit> {
    match api.send(&msg).await {
        Ok(m) => {
            if json {
                output::json(&m);
            } else {
                println!("{}", output::messages(std::slice::from_ref(&m)));
                println!("acknowledged by Kafka; stored asynchronously by the consumers");
            }
            Ok(exit::PASS)
        }
        Err(e) => refused(e, json),
    }
}

/// Reads a conversation (two users) or one user's recent messages (one user).
pub async fn read(
    api: &ApiClient,
    user1: &str,
    user2: Option<&str>,
    limit: u32,
    skip: u64,
    json: bool,
) -> anyhow::Result<Exit> {
    let result = match user2 {
        Some(u2) => api.conversation(user1, u2, limit, skip).await,
        None => api.user_messages(user1, limit).await,
    };
    match result {
        Ok(msgs) => {
            if json {
                output::json(&msgs);
            } else if msgs.is_empty() {
                println!("no messages");
            } else {
                println!("{}", output::messages(&msgs));
                println!("{} message(s)", msgs.len());
            }
            Ok(exit::PASS)
        }
        Err(e) => refused(e, json),
    }
}

pub async fn count(
    api: &ApiClient,
    user1: Option<&str>,
    user2: Option<&str>,
    json: bool,
) -> anyhow::Result<Exit> {
    match api.count(user1, user2).await {
        Ok(c) => {
            if json {
                output::json(&c);
            } else {
                let scope = match (&c.user1, &c.user2) {
                    (Some(a), Some(b)) => format!("conversation {a} ↔ {b}"),
                    (Some(u), None) | (None, Some(u)) => format!("user {u}"),
                    (None, None) => "all messages".to_string(),
                };
                let mut t = output::table(&["scope", "count"]);
                t.add_row(vec![scope, c.count.to_string()]);
                println!("{t}");
            }
            Ok(exit::PASS)
        }
        Err(e) => refused(e, json),
    }
}

/// Readiness of the stack as the API sees it. Exit 0 ready, 1 not ready or unreachable.
pub async fn health(api: &ApiClient, json: bool) -> anyhow::Result<Exit> {
    match api.readiness().await {
        Ok((status, r)) => {
            let ready = status == 200;
            if json {
                output::json(&serde_json::json!({
                    "api": api.base(), "ready": ready, "status": r.status,
                    "kafka": r.kafka, "mongodb": r.mongodb,
                }));
            } else {
                let mut t = output::table(&["component", "state"]);
                t.add_row(vec![
                    "api".to_string(),
                    format!("{} ({})", r.status, api.base()),
                ]);
                t.add_row(vec!["kafka".to_string(), r.kafka]);
                t.add_row(vec!["mongodb".to_string(), r.mongodb]);
                println!("{t}");
            }
            Ok(if ready { exit::PASS } else { exit::FAIL })
        }
        Err(e @ ClientError::Unreachable { .. }) => {
            if json {
                output::json(
                    &serde_json::json!({"api": api.base(), "ready": false, "error": e.to_string()}),
                );
            } else {
                eprintln!("wiberctl: {e}");
            }
            Ok(exit::FAIL)
        }
        Err(e) => Err(e.into()),
    }
}

/// The API answered with an error: say what and why, exit 1. An unreachable API is the
/// tool failing to do its job: exit 2 through the error path.
fn refused(e: ClientError, json: bool) -> anyhow::Result<Exit> {
    match &e {
        ClientError::Status {
            status,
            kind,
            field,
            detail,
            ..
        } => {
            if json {
                output::json(&serde_json::json!({
                    "ok": false, "status": status, "error": kind, "field": field, "detail": detail,
                }));
            } else {
                eprintln!("wiberctl: {e}");
            }
            Ok(exit::FAIL)
        }
        _ => Err(e.into()),
    }
}
