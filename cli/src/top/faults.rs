//! Which faults are in force, read from the event log alone (`chaos` and scenarios write
//! it; `top` may run in another terminal, or start after the fault).
//!
//! A fault is the latest event on its target when that event is a fault action (kill,
//! stop, pause, disconnect) that succeeded: any later event on the target (its undo, a
//! repair, another fault) supersedes it. It is *timed* when the event carries
//! `undo_at_ms` (the fault had a `for`), and active while that time is in the future;
//! once it has passed the undo is due or done, whether or not its own event is written
//! yet. A fault without `for` stays until someone undoes it; the log cannot tell when
//! that happened outside wiberctl (`stack up` restarts what is stopped), so
//! [`still_applies`] checks it against the instance's state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::events::Event;
use crate::runtime::{Action, InstanceState};

/// A fault in force on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveFault {
    /// The instance, e.g. `consumer#1`.
    pub target: String,
    /// The action as logged: `kill`, `kill(SIGTERM)`, `stop`, `pause`, `disconnect`.
    pub action: String,
    #[serde(skip)]
    pub kind: Action,
    /// When it was applied, ms since the epoch.
    pub since_ms: i64,
    /// When its undo is due; absent for a fault applied without `for`.
    pub undo_at_ms: Option<i64>,
    /// Milliseconds until the undo; absent for a fault applied without `for`.
    pub left_ms: Option<i64>,
}

/// The fault action an event's action names (`kill(SIGTERM)` → kill); `None` for undos,
/// repairs, `scale` and anything else.
pub fn fault_action(label: &str) -> Option<Action> {
    let word: String = label
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    match Action::parse(&word)? {
        (a, None) if a.undo().is_some() => Some(a),
        _ => None,
    }
}

/// The faults in force at `now_ms`, soonest undo first, then the open-ended ones.
pub fn active(events: &[Event], now_ms: i64) -> Vec<ActiveFault> {
    let mut latest: BTreeMap<&str, &Event> = BTreeMap::new();
    for e in events {
        // File order breaks ties: two events in the same millisecond keep their order.
        match latest.get(e.target.as_str()) {
            Some(prev) if prev.time_ms > e.time_ms => {}
            _ => {
                latest.insert(&e.target, e);
            }
        }
    }
    let mut out: Vec<ActiveFault> = latest
        .into_values()
        .filter(|e| e.result == "ok")
        .filter_map(|e| {
            let kind = fault_action(&e.action)?;
            if e.undo_at_ms.is_some_and(|t| t <= now_ms) {
                return None;
            }
            Some(ActiveFault {
                target: e.target.clone(),
                action: e.action.clone(),
                kind,
                since_ms: e.time_ms,
                undo_at_ms: e.undo_at_ms,
                left_ms: e.undo_at_ms.map(|t| t - now_ms),
            })
        })
        .collect();
    out.sort_by_key(|f| (f.undo_at_ms.unwrap_or(i64::MAX), f.target.clone()));
    out
}

/// Whether an open-ended fault still shows on the instance: killed or stopped ones are
/// not alive, paused ones are paused, disconnected ones are off the network.
pub fn still_applies(kind: Action, state: InstanceState, connected: bool) -> bool {
    match kind {
        Action::Kill | Action::Stop => !state.is_alive(),
        Action::Pause => state == InstanceState::Paused,
        Action::Disconnect => !connected,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time_ms: i64, action: &str, target: &str, undo_at_ms: Option<i64>) -> Event {
        Event {
            time_ms,
            time: String::new(),
            action: action.into(),
            target: target.into(),
            container: "1".into(),
            result: "ok".into(),
            undo_at_ms,
            project: None,
            detail: None,
        }
    }

    #[test]
    fn actions_are_read_from_labels() {
        assert_eq!(fault_action("kill(SIGTERM)"), Some(Action::Kill));
        assert_eq!(fault_action("pause"), Some(Action::Pause));
        assert_eq!(fault_action("start (rollback)"), None);
        assert_eq!(fault_action("unpause"), None);
        assert_eq!(fault_action("restart"), None);
        assert_eq!(fault_action("scale"), None);
        assert_eq!(fault_action("nonsense"), None);
    }

    #[test]
    fn a_timed_fault_is_active_until_its_undo_is_due() {
        let events = [
            ev(1_000, "pause", "consumer#1", Some(11_000)),
            ev(2_000, "kill", "consumer#2", Some(32_000)),
        ];
        let a = active(&events, 5_000);
        assert_eq!(a.len(), 2);
        // Soonest undo first, with the time left.
        assert_eq!(a[0].target, "consumer#1");
        assert_eq!(a[0].kind, Action::Pause);
        assert_eq!(a[0].left_ms, Some(6_000));
        assert_eq!(a[1].left_ms, Some(27_000));
        // Past its undo time it is over, even before the undo event is written.
        let a = active(&events, 11_000);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].target, "consumer#2");
    }

    #[test]
    fn a_later_event_on_the_target_ends_it() {
        let mut events = vec![
            ev(1_000, "pause", "consumer#1", Some(60_000)),
            ev(1_500, "disconnect", "kafka#1", Some(60_000)),
            ev(3_000, "unpause (rollback)", "consumer#1", None),
        ];
        let a = active(&events, 5_000);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].target, "kafka#1");
        // A failed fault is not in force.
        events.push(ev(4_000, "kill", "api#1", Some(60_000)));
        events.last_mut().unwrap().result = "error: boom".into();
        assert_eq!(active(&events, 5_000).len(), 1);
        // Another fault on the same target replaces the first.
        events.push(ev(4_500, "kill(SIGTERM)", "kafka#1", None));
        let a = active(&events, 5_000);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].action, "kill(SIGTERM)");
        assert_eq!((a[0].undo_at_ms, a[0].left_ms), (None, None));
    }

    #[test]
    fn open_ended_faults_are_checked_against_the_instance() {
        use InstanceState::*;
        assert!(still_applies(Action::Kill, Exited, true));
        assert!(!still_applies(Action::Kill, Running, true));
        assert!(still_applies(Action::Pause, Paused, true));
        assert!(!still_applies(Action::Pause, Running, true));
        assert!(still_applies(Action::Disconnect, Running, false));
        assert!(!still_applies(Action::Disconnect, Running, true));
    }
}
