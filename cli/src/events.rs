//! The event log: everything a run does to the stack (kill, restart, pause, ...), one
//! JSON object per line with a timestamp, so reports can mark faults on the latency
//! timeline. Written by `chaos` and scenarios, read by report writers.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the action was taken, ms since the Unix epoch (same clock as ledger `due`).
    pub time_ms: i64,
    /// RFC 3339 rendering of `time_ms`, for people.
    pub time: String,
    /// `kill`, `stop`, `start`, `restart`, `pause`, `unpause`, `disconnect`, `reconnect`, ...
    pub action: String,
    /// The instance acted on, e.g. `consumer#2`.
    pub target: String,
    /// Container id (docker) or pid (local) of the instance.
    pub container: String,
    /// `ok`, or `error: <reason>`.
    pub result: String,
}

impl Event {
    pub fn now(action: &str, target: &str, container: &str, result: Result<(), String>) -> Event {
        let time_ms = wiber_model::now_ms();
        Event {
            time_ms,
            time: wiber_model::rfc3339_ms(time_ms),
            action: action.to_string(),
            target: target.to_string(),
            container: container.to_string(),
            result: match result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e}"),
            },
        }
    }
}

/// Appends events to a JSON-lines file (created with its parent directory if missing),
/// and remembers what this handle wrote, so a command can show what it did.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
    written: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    pub fn new(path: impl Into<PathBuf>) -> EventLog {
        EventLog {
            path: path.into(),
            written: Arc::default(),
        }
    }

    /// The events appended through this handle (and its clones), in order.
    pub fn written(&self) -> Vec<Event> {
        self.written.lock().expect("event log lock").clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; each line is written with a single `write` so concurrent
    /// writers do not interleave within a line.
    pub fn append(&self, event: &Event) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut line = serde_json::to_string(event).expect("events serialise");
        line.push('\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("cannot append to the event log {}", self.path.display()))?;
        self.written
            .lock()
            .expect("event log lock")
            .push(event.clone());
        Ok(())
    }
}

/// Reads an events file; a missing file is an empty log.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not an event line", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let dir = std::env::temp_dir().join(format!("wiber-events-{}", uuid::Uuid::new_v4()));
        let log = EventLog::new(dir.join("events.jsonl"));
        log.append(&Event::now("kill", "consumer#1", "123", Ok(())))
            .unwrap();
        log.append(&Event::now(
            "restart",
            "consumer#1",
            "123",
            Err("boom".into()),
        ))
        .unwrap();
        let evs = read(log.path()).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].result, "ok");
        assert_eq!(evs[1].result, "error: boom");
        assert!(read(&dir.join("missing.jsonl")).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
