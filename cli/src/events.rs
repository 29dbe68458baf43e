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
    /// When the fault's undo is due (ms since the epoch), for a fault applied with a `for`
    /// duration; absent otherwise. Lets a reader (`wiberctl top`) tell which faults are
    /// still active and for how long, from the log alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_at_ms: Option<i64>,
    /// The stack (project) acted on. One events file can hold several stacks' faults
    /// (`chaos` writes to `reports/events.jsonl` by default), and a reader shows only
    /// its stack's; absent in files written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// What a Kafka role resolved to (`kafka:leader(wiber.messages/0) → kafka#2: ...`) and
    /// how a network fault was applied (mechanism, peers, fault id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
            undo_at_ms: None,
            project: None,
            detail: None,
        }
    }

    /// Whether this event is about `project`'s stack (an event that names no project
    /// may be about any).
    pub fn concerns(&self, project: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
    }
}

/// Appends events to a JSON-lines file (created with its parent directory if missing),
/// and remembers what this handle wrote, so a command can show what it did.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
    /// Stamped on every event appended that names no project itself.
    project: Option<String>,
    written: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    pub fn new(path: impl Into<PathBuf>) -> EventLog {
        EventLog {
            path: path.into(),
            project: None,
            written: Arc::default(),
        }
    }

    /// Every event appended through this log names `project`'s stack.
    pub fn for_project(mut self, project: &str) -> EventLog {
        self.project = Some(project.to_string());
        self
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
        let mut event = event.clone();
        if event.project.is_none() {
            event.project.clone_from(&self.project);
        }
        let mut line = serde_json::to_string(&event).expect("events serialise");
        line.push('\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("cannot append to the event log {}", self.path.display()))?;
        self.written.lock().expect("event log lock").push(event);
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

/// The events in the last `max_bytes` of an events file, oldest first: what a live view
/// needs, at a cost that does not grow with the file. A line cut by the window's start,
/// and lines that do not parse (a writer mid-line, a newer format), are skipped rather
/// than failing the view. A missing file is an empty log.
pub fn read_recent(path: &Path, max_bytes: u64) -> anyhow::Result<Vec<Event>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let len = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))
        .and_then(|_| {
            let mut buf = Vec::new();
            f.take(max_bytes).read_to_end(&mut buf).map(|_| buf)
        })
        .map(|buf| {
            let text = String::from_utf8_lossy(&buf);
            let mut lines = text.lines();
            if start > 0 {
                lines.next(); // partial: the window starts mid-line
            }
            lines
                .filter(|l| !l.trim().is_empty())
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .with_context(|| format!("cannot read {}", path.display()))
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

    #[test]
    fn a_log_for_a_project_stamps_its_events_and_readers_filter_by_it() {
        let dir = std::env::temp_dir().join(format!("wiber-events-{}", uuid::Uuid::new_v4()));
        let path = dir.join("events.jsonl");
        EventLog::new(&path)
            .for_project("a")
            .append(&Event::now("kill", "consumer#1", "1", Ok(())))
            .unwrap();
        EventLog::new(&path)
            .for_project("b")
            .append(&Event::now("kill", "api#1", "2", Ok(())))
            .unwrap();
        EventLog::new(&path)
            .append(&Event::now("pause", "kafka#1", "3", Ok(())))
            .unwrap();
        let evs = read(&path).unwrap();
        assert_eq!(evs[0].project.as_deref(), Some("a"));
        let of_a: Vec<&str> = evs
            .iter()
            .filter(|e| e.concerns("a"))
            .map(|e| e.target.as_str())
            .collect();
        // b's event is not a's; an event naming no project may be anyone's.
        assert_eq!(of_a, ["consumer#1", "kafka#1"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn undo_time_is_optional_on_the_wire() {
        let mut ev = Event::now("pause", "consumer#1", "9", Ok(()));
        let line = serde_json::to_string(&ev).unwrap();
        assert!(!line.contains("undo_at_ms"), "absent when None: {line}");
        // Lines written before the field existed still read.
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back.undo_at_ms, None);
        ev.undo_at_ms = Some(ev.time_ms + 10_000);
        let back: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn recent_events_skip_the_cut_line() {
        let dir = std::env::temp_dir().join(format!("wiber-events-{}", uuid::Uuid::new_v4()));
        let log = EventLog::new(dir.join("events.jsonl"));
        for i in 0..50 {
            log.append(&Event::now("kill", &format!("consumer#{i}"), "1", Ok(())))
                .unwrap();
        }
        let all = read(log.path()).unwrap();
        let recent = read_recent(log.path(), 500).unwrap();
        assert!(!recent.is_empty() && recent.len() < all.len());
        assert_eq!(recent.last(), all.last());
        assert_eq!(read_recent(log.path(), 1 << 20).unwrap(), all);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
