//! The fault timeline: `[[faults]]` expanded into time-ordered steps, run against the
//! stack through [`FaultSeam`], with rollbacks that always run.
//!
//! Rollback design: before a fault that has an undo (kill → start, pause → unpause,
//! disconnect → reconnect) is applied, its undo is put in [`Rollbacks`], which lives
//! *outside* the timeline future. A `for` undo or a later repair (`restart` after `kill`)
//! takes it out again. Whatever remains when the timeline ends, fails, or is dropped
//! (load failed, Ctrl-C) is run by [`rollback_all`]. Registering before acting means a
//! timeline dropped mid-action still gets its undo.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::format::{FaultSpec, RandomSpec};
use crate::events::{Event, EventLog};
use chrono::{DateTime, Utc};

use crate::kafka::cluster::{KafkaRole, Resolved};
use crate::runtime::fault::NetSpec;
use crate::runtime::{Action, InstanceId, InstanceInfo, Service, Signal, Stack, Target};

/// What the timeline does to the stack; implemented by [`Stack`] (below), and by a
/// recording mock in tests.
#[allow(async_fn_in_trait)] // Not used as `dyn`; callers are generic.
pub trait FaultSeam {
    async fn list(&self) -> Result<Vec<InstanceInfo>>;
    /// One action on one instance (not `scale`).
    async fn apply(&self, action: Action, id: &InstanceId, sig: Signal) -> Result<()>;
    /// Adds instances of `service` until it has `to`; returns the ones added.
    async fn scale(&self, service: Service, to: u32) -> Result<Vec<InstanceId>>;
    /// The broker holding a Kafka role now.
    async fn resolve_kafka(&self, role: &KafkaRole) -> Result<Resolved>;
    /// Waits until an instance an undo brought back has caught up (a broker back in
    /// sync); errors when it did not within a bound.
    async fn settle(&self, id: &InstanceId) -> Result<()>;
    /// A network fault on one instance; returns what was applied (for the event log).
    async fn apply_net(
        &self,
        action: Action,
        id: &InstanceId,
        net: &NetSpec,
        until: Option<DateTime<Utc>>,
    ) -> Result<String>;
}

impl FaultSeam for Stack {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        Stack::list(self).await
    }

    async fn apply(&self, action: Action, id: &InstanceId, sig: Signal) -> Result<()> {
        Stack::apply(self, action, id, sig).await
    }

    async fn scale(&self, service: Service, to: u32) -> Result<Vec<InstanceId>> {
        Stack::scale(self, service, to).await
    }

    async fn resolve_kafka(&self, role: &KafkaRole) -> Result<Resolved> {
        Stack::resolve_kafka(self, role).await
    }

    async fn settle(&self, id: &InstanceId) -> Result<()> {
        self.wait_in_sync(id, crate::runtime::stack::REJOIN_TIMEOUT)
            .await
    }

    async fn apply_net(
        &self,
        action: Action,
        id: &InstanceId,
        net: &NetSpec,
        until: Option<DateTime<Utc>>,
    ) -> Result<String> {
        Stack::apply_net(self, action, id, net, until).await
    }
}

/// One occurrence of a fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Index in `[[faults]]` (0-based) and occurrence number (0-based).
    pub fault: usize,
    pub occurrence: u32,
    pub line: usize,
    pub description: String,
    pub action: String,
    /// The instances acted on (a random target resolved).
    pub targets: Vec<String>,
    /// Offset from the start of the load when it was due.
    pub due_s: f64,
    /// When the action started and returned, ms since the epoch.
    pub started_ms: i64,
    pub acted_ms: Option<i64>,
    /// When the fault window closed: its undo (`for`, a later repair, or the final
    /// rollback) returned; for actions without an undo, when the action returned.
    pub ended_ms: Option<i64>,
    /// `ok`, or `error: ...`.
    pub result: String,
    /// What a Kafka role resolved to when the fault fired, and how a network fault was
    /// applied (mechanism, peers' addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl FaultRecord {
    /// When the fault was active: from its start to its window's close (the action's
    /// return for an action without undo; `load_end_ms` if it never closed).
    pub fn window(&self, load_end_ms: i64) -> (i64, i64) {
        let end = self.ended_ms.or(self.acted_ms).unwrap_or(load_end_ms);
        (self.started_ms, end.max(self.started_ms))
    }
}

/// An undo still owed to the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    pub record: usize,
    pub id: InstanceId,
    /// The container id (docker) or pid (local) the fault was applied to, for the event.
    pub container: String,
    pub fault: Action,
    pub action: Action,
}

/// Undos owed, shared between the timeline and whoever cleans up after it.
#[derive(Debug, Default)]
pub struct Rollbacks(Mutex<Vec<Undo>>);

impl Rollbacks {
    fn push(&self, u: Undo) {
        self.0.lock().expect("rollbacks lock").push(u);
    }

    fn remove_where(&self, f: impl Fn(&Undo) -> bool) -> Vec<Undo> {
        let mut v = self.0.lock().expect("rollbacks lock");
        let (gone, keep): (Vec<Undo>, Vec<Undo>) = v.drain(..).partition(f);
        *v = keep;
        gone
    }

    pub fn pending(&self) -> Vec<Undo> {
        self.0.lock().expect("rollbacks lock").clone()
    }
}

/// The fault records, shared the same way (the timeline may be dropped).
#[derive(Debug, Default)]
pub struct Records(Mutex<Vec<FaultRecord>>);

impl Records {
    pub fn snapshot(&self) -> Vec<FaultRecord> {
        self.0.lock().expect("records lock").clone()
    }

    fn push(&self, r: FaultRecord) -> usize {
        let mut v = self.0.lock().expect("records lock");
        v.push(r);
        v.len() - 1
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut FaultRecord)) {
        if let Some(r) = self.0.lock().expect("records lock").get_mut(i) {
            f(r);
        }
    }

    fn get(&self, i: usize) -> Option<FaultRecord> {
        self.0.lock().expect("records lock").get(i).cloned()
    }
}

/// A step of the timeline.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Act {
        fault: usize,
        occurrence: u32,
    },
    /// The `for` undo of that occurrence.
    Undo {
        fault: usize,
        occurrence: u32,
    },
}

/// Every step, ordered by due offset (an undo before an action due at the same time).
fn steps(faults: &[FaultSpec]) -> Vec<(Duration, Step)> {
    let mut out = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        for (n, at) in f.occurrences().into_iter().enumerate() {
            let occurrence = n as u32;
            out.push((
                at,
                Step::Act {
                    fault: i,
                    occurrence,
                },
            ));
            if let Some(d) = f.for_ {
                out.push((
                    at + d,
                    Step::Undo {
                        fault: i,
                        occurrence,
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(at, s)| (*at, matches!(s, Step::Act { .. })));
    out
}

/// Progress lines for people (stderr), or nothing.
pub type Say<'a> = &'a (dyn Fn(String) + Sync);

/// Runs the timeline from `start` (the load's start). Returns at the first failed step
/// of a written fault (the caller rolls back).
///
/// Written faults (`[[faults]]`, `chaos`) run one step after another in time order: a
/// step due while an earlier one still runs (a slow restart) runs as soon as that one
/// returns, since the file's author may have meant the order (kill, then restart).
/// Faults drawn from `[random]` each run on their own, concurrently: a soak's slow
/// step (a broker that takes 20 s to rejoin) must not push every later fault back. The
/// draw kept them within `limits` on paper; [`Slots`] keeps them there as they really
/// happen (a fault counts from its action until its undo has returned), and one that
/// finds no slot before its window would have ended is skipped, as is one that cannot
/// be applied (a Kafka role with no holder mid-election): said, logged, and the run
/// goes on. A drawn fault whose undo fails stays owed to the final rollback.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: FaultSeam>(
    seam: &S,
    faults: &[FaultSpec],
    limits: Option<&RandomSpec>,
    start: Instant,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
    say: Say<'_>,
) -> Result<()> {
    let written = written_steps(seam, faults, start, log, rollbacks, records, say);
    let slots = Slots::new(limits);
    let drawn = async {
        let mut all: futures::stream::FuturesUnordered<_> = faults
            .iter()
            .enumerate()
            .filter(|(_, f)| f.drawn)
            .map(|(i, f)| drawn_fault(seam, f, i, &slots, start, log, rollbacks, records, say))
            .collect();
        while futures::StreamExt::next(&mut all).await.is_some() {}
    };
    tokio::pin!(written, drawn);
    tokio::select! {
        r = &mut written => {
            r?;
            drawn.await;
            Ok(())
        }
        () = &mut drawn => written.await,
    }
}

async fn written_steps<S: FaultSeam>(
    seam: &S,
    faults: &[FaultSpec],
    start: Instant,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
    say: Say<'_>,
) -> Result<()> {
    // (fault, occurrence) → record index, for `for` undos.
    let mut index: std::collections::HashMap<(usize, u32), usize> = Default::default();
    for (at, step) in steps(faults) {
        let fault = match step {
            Step::Act { fault, .. } | Step::Undo { fault, .. } => fault,
        };
        if faults[fault].drawn {
            continue;
        }
        tokio::time::sleep_until(start + at).await;
        match step {
            Step::Act { fault, occurrence } => {
                let spec = &faults[fault];
                let rec = act(
                    seam, spec, fault, occurrence, at, log, rollbacks, records, say,
                )
                .await?;
                index.insert((fault, occurrence), rec);
            }
            Step::Undo { fault, occurrence } => {
                let Some(&rec) = index.get(&(fault, occurrence)) else {
                    continue;
                };
                let owed = rollbacks.remove_where(|u| u.record == rec);
                for u in &owed {
                    if let Err(e) = undo(seam, u, log, records, "").await {
                        // Still owed: the final rollback tries again.
                        rollbacks.push(u.clone());
                        return Err(e);
                    }
                    say(undone(start, u));
                }
            }
        }
    }
    Ok(())
}

/// Drawn faults active now, overall and per service, held to `[random]`'s limits.
struct Slots {
    max_concurrent: u32,
    max_down: std::collections::BTreeMap<Service, u32>,
    active: Mutex<(u32, std::collections::BTreeMap<Service, u32>)>,
}

impl Slots {
    fn new(limits: Option<&RandomSpec>) -> Slots {
        Slots {
            max_concurrent: limits.map_or(u32::MAX, |l| l.max_concurrent),
            max_down: Service::ALL
                .iter()
                .map(|s| (*s, limits.map_or(u32::MAX, |l| l.max_down(*s))))
                .collect(),
            active: Mutex::default(),
        }
    }

    fn try_take(&self, service: Service) -> bool {
        let mut a = self.active.lock().expect("slots lock");
        let on_service = a.1.get(&service).copied().unwrap_or(0);
        let cap = self.max_down.get(&service).copied().unwrap_or(u32::MAX);
        if a.0 >= self.max_concurrent || on_service >= cap {
            return false;
        }
        a.0 += 1;
        *a.1.entry(service).or_default() += 1;
        true
    }

    fn give_back(&self, service: Service) {
        let mut a = self.active.lock().expect("slots lock");
        a.0 = a.0.saturating_sub(1);
        let n = a.1.entry(service).or_default();
        *n = n.saturating_sub(1);
    }
}

/// The progress line of an undo that returned.
fn undone(start: Instant, u: &Undo) -> String {
    format!(
        "  {:>6.1}s {} {} ok",
        start.elapsed().as_secs_f64(),
        u.action.name(),
        u.id
    )
}

/// How often a drawn fault that found no free slot looks again.
const SLOT_POLL: Duration = Duration::from_millis(200);

/// One drawn fault: waits for its time and a slot, acts, undoes after its `for`.
#[allow(clippy::too_many_arguments)]
async fn drawn_fault<S: FaultSeam>(
    seam: &S,
    spec: &FaultSpec,
    fault: usize,
    slots: &Slots,
    start: Instant,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
    say: Say<'_>,
) {
    let at = spec.at;
    let window = spec.for_.unwrap_or_default();
    tokio::time::sleep_until(start + at).await;
    let service = spec.target.service();
    let skip = |why: String| {
        let mut ev = Event::now(
            &spec.action.label(spec.signal()),
            &spec.target.to_string(),
            "",
            Ok(()),
        );
        ev.result = format!("skipped: {why}");
        let _ = log.append(&ev);
        say(format!(
            "  {:>6.1}s skipped {}: {why}",
            at.as_secs_f64(),
            spec.describe()
        ));
    };
    let give_up = start + at + window;
    loop {
        if Instant::now() > give_up {
            skip("earlier faults still held its service's slots for its whole window".into());
            return;
        }
        if slots.try_take(service) {
            break;
        }
        let next = (Instant::now() + SLOT_POLL).min(give_up + Duration::from_millis(1));
        tokio::time::sleep_until(next).await;
    }
    let rec = act(seam, spec, fault, 0, at, log, rollbacks, records, say).await;
    match rec {
        Err(e) => skip(format!("could not be applied: {e:#}")),
        Ok(rec) => {
            // Late (it waited for a slot, or acting took long): undone at its due time,
            // or at once when that has passed.
            tokio::time::sleep_until(start + at + window).await;
            for u in rollbacks.remove_where(|u| u.record == rec) {
                match undo(seam, &u, log, records, "").await {
                    Ok(()) => {
                        say(undone(start, &u));
                        // Its slot frees once what it brought back has caught up.
                        if let Err(e) = seam.settle(&u.id).await {
                            say(format!(
                                "  {:>6.1}s {} did not settle: {e:#}",
                                start.elapsed().as_secs_f64(),
                                u.id
                            ));
                        }
                    }
                    Err(e) => {
                        say(format!(
                            "  {:>6.1}s undo FAILED, owed to the final rollback: {e:#}",
                            start.elapsed().as_secs_f64()
                        ));
                        rollbacks.push(u);
                    }
                }
            }
        }
    }
    slots.give_back(service);
}

#[allow(clippy::too_many_arguments)]
async fn act<S: FaultSeam>(
    seam: &S,
    spec: &FaultSpec,
    fault: usize,
    occurrence: u32,
    at: Duration,
    log: &EventLog,
    rollbacks: &Rollbacks,
    records: &Records,
    say: Say<'_>,
) -> Result<usize> {
    let started_ms = wiber_model::now_ms();
    let have = seam.list().await?;
    // A Kafka role names the broker that holds it now: asked of the cluster as the fault
    // fires, and written down, since the answer changes with every election.
    let (target, resolved) = match &spec.target {
        Target::Kafka(role) => {
            let r = seam.resolve_kafka(role).await?;
            (Target::Instance(r.instance()?), Some(r))
        }
        t => (t.clone(), None),
    };
    let role_note = resolved
        .as_ref()
        .map(|r| format!("{} → kafka#{}: {}", r.role, r.node_id, r.detail));
    let chosen = resolve(&target, &have, spec.action)?;
    let rec = records.push(FaultRecord {
        fault,
        occurrence,
        line: spec.line,
        description: spec.describe(),
        action: spec.action.name().to_string(),
        targets: chosen.iter().map(|i| i.id.to_string()).collect(),
        due_s: at.as_secs_f64(),
        started_ms,
        acted_ms: None,
        ended_ms: None,
        result: "running".into(),
        detail: role_note.clone(),
    });
    let label = |id: &str| format!("{}: {} {id}", spec.origin(), spec.action.name());
    let result: Result<()> = async {
        if spec.action == Action::Scale {
            let Target::Service(service) = spec.target else {
                bail!("scale needs a service target");
            };
            let to = spec.to.expect("validated: scale has to");
            let added = seam.scale(service, to).await?;
            let ev = Event::now(
                "scale",
                &format!("{service} to {to}"),
                &added
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                Ok(()),
            );
            log.append(&ev)?;
            records.update(rec, |r| {
                r.targets = added.iter().map(|i| i.to_string()).collect()
            });
            return Ok(());
        }
        for i in &chosen {
            // A repair closes the window of the fault it repairs.
            let repaired = rollbacks.remove_where(|u| u.id == i.id && spec.action.repairs(u.fault));
            if let Some(undo) = spec.action.undo() {
                rollbacks.push(Undo {
                    record: rec,
                    id: i.id,
                    container: i.pid_or_container.clone(),
                    fault: spec.action,
                    action: undo,
                });
            }
            let r = if spec.action.is_network() {
                let until = spec.for_.map(|d| {
                    chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
                });
                seam.apply_net(spec.action, &i.id, &spec.net, until)
                    .await
                    .map(Some)
            } else {
                seam.apply(spec.action, &i.id, spec.signal())
                    .await
                    .map(|()| None)
            };
            let mut ev = Event::now(
                &spec.action.label(spec.signal()),
                &i.id.to_string(),
                &i.pid_or_container,
                Ok(()),
            );
            let applied = r.as_ref().ok().cloned().flatten();
            let detail: Vec<String> = role_note.iter().chain(applied.iter()).cloned().collect();
            if !detail.is_empty() {
                ev.detail = Some(detail.join("; "));
            }
            // The record starts with the role's resolution; each instance a network fault
            // acted on adds how (a service target names several).
            if let Some(a) = &applied {
                records.update(rec, |r| {
                    r.detail = Some(match r.detail.take() {
                        Some(d) => format!("{d}; {}: {a}", i.id),
                        None => format!("{}: {a}", i.id),
                    })
                });
            }
            let r = r.map(|_| ());
            if let Err(e) = &r {
                ev.result = format!("error: {e:#}");
            }
            // When the `for` undo is due (its step is scheduled from the action's due
            // time, which `started_ms` is), so readers of the log can show time left.
            if spec.action.undo().is_some() {
                ev.undo_at_ms = spec
                    .for_
                    .map(|d| started_ms + i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            }
            log.append(&ev)?;
            match r {
                Ok(()) => {
                    let now = wiber_model::now_ms();
                    for u in &repaired {
                        records.update(u.record, |r| r.ended_ms = Some(now));
                    }
                }
                Err(e) => {
                    // Not applied: nothing to undo for it; the repaired fault is still owed.
                    rollbacks.remove_where(|u| u.record == rec && u.id == i.id);
                    for u in repaired {
                        rollbacks.push(u);
                    }
                    return Err(e.context(label(&i.id.to_string())));
                }
            }
        }
        Ok(())
    }
    .await;
    let now = wiber_model::now_ms();
    let has_undo = spec.action.undo().is_some();
    records.update(rec, |r| {
        r.acted_ms = Some(now);
        if !has_undo {
            r.ended_ms = Some(now);
        }
        r.result = match &result {
            Ok(()) => "ok".into(),
            Err(e) => format!("error: {e:#}"),
        };
    });
    let r = records.get(rec).expect("just pushed");
    say(format!(
        "  {:>6.1}s {} {} {}",
        at.as_secs_f64(),
        spec.action.name(),
        r.targets.join(","),
        r.result
    ));
    result.map(|()| rec)
}

async fn undo<S: FaultSeam>(
    seam: &S,
    u: &Undo,
    log: &EventLog,
    records: &Records,
    note: &str,
) -> Result<()> {
    let r = seam.apply(u.action, &u.id, Signal::Kill).await;
    let mut ev = Event::now(
        &format!("{}{note}", u.action.name()),
        &u.id.to_string(),
        &u.container,
        Ok(()),
    );
    if let Err(e) = &r {
        ev.result = format!("error: {e:#}");
    }
    log.append(&ev)?;
    if r.is_ok() {
        let now = wiber_model::now_ms();
        records.update(u.record, |r| r.ended_ms = Some(now));
    }
    r.map_err(|e| {
        e.context(format!(
            "undoing {} of {} ({})",
            u.fault.name(),
            u.id,
            u.action.name()
        ))
    })
}

/// Runs every undo still owed, newest first; returns the failures (each one names the
/// instance, so the operator can repair it by hand).
pub async fn rollback_all<S: FaultSeam>(
    seam: &S,
    rollbacks: &Rollbacks,
    log: &EventLog,
    records: &Records,
) -> Vec<String> {
    let owed = rollbacks.remove_where(|_| true);
    let mut failures = Vec::new();
    for u in owed.iter().rev() {
        if let Err(e) = undo(seam, u, log, records, " (rollback)").await {
            failures.push(format!(
                "{e:#}; repair it with `wiberctl chaos {} {}`",
                u.action.name(),
                u.id
            ));
        }
    }
    failures
}

/// The instances a target names (as `wiberctl chaos` resolves them); scaling names none.
fn resolve(target: &Target, have: &[InstanceInfo], action: Action) -> Result<Vec<InstanceInfo>> {
    if action == Action::Scale {
        return Ok(Vec::new());
    }
    target.resolve(have, action.wants_running())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::InstanceState;
    use std::path::Path;

    /// A stack of our own seam that records what was done and fails on request.
    #[derive(Default)]
    pub struct MockSeam {
        pub done: Mutex<Vec<String>>,
        /// `action id` strings that fail.
        pub fail: Vec<String>,
    }

    impl FaultSeam for MockSeam {
        async fn list(&self) -> Result<Vec<InstanceInfo>> {
            Ok(["kafka#1", "mongo#1", "api#1", "consumer#1", "consumer#2"]
                .iter()
                .map(|id| InstanceInfo::bare(id.parse().unwrap(), InstanceState::Running))
                .collect())
        }
        async fn apply(&self, action: Action, id: &InstanceId, _sig: Signal) -> Result<()> {
            let what = format!("{} {id}", action.name());
            self.done.lock().unwrap().push(what.clone());
            if self.fail.contains(&what) {
                bail!("injected failure of {what}");
            }
            Ok(())
        }
        async fn scale(&self, service: Service, to: u32) -> Result<Vec<InstanceId>> {
            self.done
                .lock()
                .unwrap()
                .push(format!("scale {service} {to}"));
            Ok(vec![InstanceId::new(service, to)])
        }
        async fn settle(&self, id: &InstanceId) -> Result<()> {
            self.done.lock().unwrap().push(format!("settle {id}"));
            Ok(())
        }
        async fn resolve_kafka(&self, role: &KafkaRole) -> Result<Resolved> {
            // The mock's cluster: kafka#1 holds every role.
            Ok(Resolved {
                role: role.to_string(),
                node_id: 1,
                detail: "mock".into(),
            })
        }
        async fn apply_net(
            &self,
            action: Action,
            id: &InstanceId,
            _net: &NetSpec,
            _until: Option<DateTime<Utc>>,
        ) -> Result<String> {
            let what = format!("{} {id}", action.name());
            self.done.lock().unwrap().push(what.clone());
            if self.fail.contains(&what) {
                bail!("injected failure of {what}");
            }
            Ok(format!("{what} (mock)"))
        }
    }

    pub fn faults(src: &str) -> Vec<FaultSpec> {
        let text = format!("name = \"t\"\n[load]\nrate = 10\nduration = \"60s\"\n{src}");
        super::super::format::parse(Path::new("t.toml"), &text)
            .unwrap()
            .faults
    }

    fn log() -> (EventLog, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wiber-timeline-{}", uuid::Uuid::new_v4()));
        (EventLog::new(dir.join("events.jsonl")), dir)
    }

    /// Drawn faults run each on their own clock within `[random]`'s limits as they really
    /// happen: one that finds its service's slot taken for its whole window is skipped,
    /// one that finds it later acts late, one that cannot be applied is skipped, and the
    /// run goes on; each frees its slot once what it undid has settled.
    #[tokio::test]
    async fn drawn_faults_keep_their_slots_and_skip_what_cannot_be_done() {
        let mut f = faults(
            "[[faults]]\nat = \"10ms\"\naction = \"pause\"\ntarget = \"consumer#1\"\nfor = \"150ms\"\n\
             [[faults]]\nat = \"30ms\"\naction = \"pause\"\ntarget = \"consumer#2\"\nfor = \"30ms\"\n\
             [[faults]]\nat = \"60ms\"\naction = \"pause\"\ntarget = \"consumer#2\"\nfor = \"400ms\"\n\
             [[faults]]\nat = \"20ms\"\naction = \"kill\"\ntarget = \"api#1\"\nfor = \"50ms\"\n",
        );
        for x in &mut f {
            x.drawn = true;
        }
        let limits = RandomSpec {
            line: 0,
            seed: None,
            start: Duration::ZERO,
            stop: Duration::from_secs(1),
            interval: (Duration::from_millis(10), Duration::from_millis(10)),
            max_concurrent: 2,
            max_down: [(Service::Consumer, 1)].into_iter().collect(),
            menu: Vec::new(),
        };
        let seam = MockSeam {
            fail: vec!["kill api#1".into()],
            ..Default::default()
        };
        let (log, dir) = log();
        let (rb, recs) = (Rollbacks::default(), Records::default());
        let said = Mutex::new(Vec::new());
        let say = |l: String| said.lock().unwrap().push(l);
        run(
            &seam,
            &f,
            Some(&limits),
            Instant::now(),
            &log,
            &rb,
            &recs,
            &say,
        )
        .await
        .expect("drawn faults never stop the run");
        assert_eq!(
            *seam.done.lock().unwrap(),
            [
                "pause consumer#1",
                "kill api#1",
                "unpause consumer#1",
                "settle consumer#1",
                "pause consumer#2",
                "unpause consumer#2",
                "settle consumer#2"
            ]
        );
        let said = said.lock().unwrap().join("\n");
        assert!(said.contains("skipped pause consumer#2"), "{said}");
        assert!(said.contains("skipped kill api#1"), "{said}");
        assert!(rb.pending().is_empty(), "{:?}", rb.pending());
        let skipped = crate::events::read(log.path())
            .unwrap()
            .iter()
            .filter(|e| e.result.starts_with("skipped"))
            .count();
        assert_eq!(skipped, 2);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn for_undoes_and_repairs_close_windows() {
        let f = faults(
            "[[faults]]\nat = \"20ms\"\naction = \"pause\"\ntarget = \"consumer#2\"\nfor = \"40ms\"\n\
             [[faults]]\nat = \"40ms\"\naction = \"kill\"\ntarget = \"consumer#1\"\n\
             [[faults]]\nat = \"100ms\"\naction = \"restart\"\ntarget = \"consumer#1\"\n\
             [[faults]]\nat = \"120ms\"\naction = \"scale\"\ntarget = \"consumer\"\nto = 3\n",
        );
        let seam = MockSeam::default();
        let (log, dir) = log();
        let (rb, recs) = (Rollbacks::default(), Records::default());
        run(&seam, &f, None, Instant::now(), &log, &rb, &recs, &|_| {})
            .await
            .unwrap();
        assert_eq!(
            *seam.done.lock().unwrap(),
            [
                "pause consumer#2",
                "kill consumer#1",
                "unpause consumer#2",
                "restart consumer#1",
                "scale consumer 3"
            ]
        );
        assert!(rb.pending().is_empty(), "{:?}", rb.pending());
        let r = recs.snapshot();
        assert!(
            r.iter().all(|r| r.ended_ms.is_some() && r.result == "ok"),
            "{r:#?}"
        );
        let events = crate::events::read(log.path()).unwrap();
        assert_eq!(events.len(), 5);
        // Only the fault with a `for` says when its undo is due (about 40 ms after it).
        let pause = &events[0];
        let due = pause.undo_at_ms.expect("pause --for 40ms has an undo time") - pause.time_ms;
        assert!((0..=40).contains(&due), "undo due {due} ms after the event");
        assert!(
            events[1..].iter().all(|e| e.undo_at_ms.is_none()),
            "{events:#?}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// A failed step stops the timeline, and the rollback still undoes what was done.
    #[tokio::test]
    async fn rollbacks_run_after_a_failed_step() {
        let f = faults(
            "[[faults]]\nat = \"20ms\"\naction = \"kill\"\ntarget = \"consumer#1\"\n\
             [[faults]]\nat = \"40ms\"\naction = \"disconnect\"\ntarget = \"kafka\"\nfor = \"100ms\"\n\
             [[faults]]\nat = \"60ms\"\naction = \"pause\"\ntarget = \"api\"\n\
             [[faults]]\nat = \"80ms\"\naction = \"kill\"\ntarget = \"consumer#2\"\n",
        );
        let seam = MockSeam {
            fail: vec!["pause api#1".into()],
            ..Default::default()
        };
        let (log, dir) = log();
        let (rb, recs) = (Rollbacks::default(), Records::default());
        let err = run(&seam, &f, None, Instant::now(), &log, &rb, &recs, &|_| {})
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("injected failure of pause api#1"),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("line 14"), "{err:#}");
        // The failed pause is not owed an unpause; the kill and the disconnect are.
        assert_eq!(rb.pending().len(), 2);
        let failures = rollback_all(&seam, &rb, &log, &recs).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            *seam.done.lock().unwrap(),
            [
                "kill consumer#1",
                "disconnect kafka#1",
                "pause api#1",
                "reconnect kafka#1",
                "start consumer#1"
            ]
        );
        let events = crate::events::read(log.path()).unwrap();
        assert_eq!(events.last().unwrap().action, "start (rollback)");
        std::fs::remove_dir_all(dir).ok();
    }

    /// A timeline dropped mid-run (the load failed, Ctrl-C) leaves its undos owed.
    #[tokio::test]
    async fn a_dropped_timeline_still_rolls_back() {
        let f = faults("[[faults]]\nat = \"20ms\"\naction = \"pause\"\ntarget = \"consumer#1\"\nfor = \"600ms\"\n");
        let seam = MockSeam::default();
        let (log, dir) = log();
        let (rb, recs) = (Rollbacks::default(), Records::default());
        let tl = run(&seam, &f, None, Instant::now(), &log, &rb, &recs, &|_| {});
        let r = tokio::time::timeout(Duration::from_millis(100), tl).await;
        assert!(r.is_err(), "the timeline is still waiting for its undo");
        assert_eq!(rb.pending().len(), 1);
        assert!(rollback_all(&seam, &rb, &log, &recs).await.is_empty());
        assert_eq!(
            *seam.done.lock().unwrap(),
            ["pause consumer#1", "unpause consumer#1"]
        );
        assert!(recs.snapshot()[0].ended_ms.is_some());
        std::fs::remove_dir_all(dir).ok();
    }
}
