//! `wiberctl top`: a live dashboard of a running stack.
//!
//! Layout:
//! - [`snapshot`]: one refresh gathered into a [`Snapshot`] by a [`Sampler`], which keeps
//!   the previous sample's counters (rates are differences between refreshes);
//! - [`prom`]: the API's Prometheus text, its counters and histogram quantiles;
//! - [`faults`]: the faults in force, derived from the event log;
//! - [`render`]: the drawing (terminal, or plain text for `--once`);
//! - this file: the live loop (terminal set-up and restore, keys, refresh timer) and
//!   the one-shot snapshot.

pub mod faults;
pub mod prom;
pub mod render;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

pub use render::Header;
pub use snapshot::{Sampler, Snapshot};

/// What the keyboard (or the terminal) asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    Quit,
    /// Resized, or a key without a meaning: draw again.
    Redraw,
    /// The terminal cannot be read any more.
    Failed(String),
}

/// One snapshot with rates: two samples `interval` apart (a first sample alone has
/// none), the second returned.
pub async fn once(sampler: &mut Sampler, interval: Duration) -> Snapshot {
    let start = tokio::time::Instant::now();
    sampler.sample().await;
    tokio::time::sleep_until(start + interval).await;
    sampler.sample().await
}

/// Restores the terminal when dropped: on `q`, on an error return, and while unwinding
/// from a panic (ratatui's panic hook restores it too, before the message prints).
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until `q`, Esc, Ctrl-C or SIGTERM, refreshing every
/// `header.interval`. Keys are served while a refresh is under way, so a slow part (Kafka
/// down: bounded waits) never makes `q` wait.
pub async fn live(sampler: &mut Sampler, header: &Header) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut terminal = ratatui::try_init().context(
        "cannot set up the terminal for the dashboard (is this a terminal? for scripts use `wiberctl top --once`)",
    )?;
    let restore = RestoreTerminal;
    let (tx, mut keys) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_input(tx, stop.clone())?;

    let mut ticks = tokio::time::interval(header.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<Snapshot> = None;
    let result: Result<()> = async {
        loop {
            terminal.draw(|f| render::draw(f.area(), f.buffer_mut(), header, last.as_ref()))?;
            let input = tokio::select! {
                _ = ticks.tick() => {
                    let sample = sampler.sample();
                    tokio::pin!(sample);
                    loop {
                        let input = tokio::select! {
                            s = &mut sample => { last = Some(s); break None; }
                            k = keys.recv() => k.unwrap_or(Input::Quit),
                            _ = sigint.recv() => Input::Quit,
                            _ = sigterm.recv() => Input::Quit,
                        };
                        if input != Input::Redraw {
                            break Some(input);
                        }
                        terminal.draw(|f| {
                            render::draw(f.area(), f.buffer_mut(), header, last.as_ref())
                        })?;
                    }
                }
                k = keys.recv() => Some(k.unwrap_or(Input::Quit)),
                _ = sigint.recv() => Some(Input::Quit),
                _ = sigterm.recv() => Some(Input::Quit),
            };
            match input {
                None | Some(Input::Redraw) => {}
                Some(Input::Quit) => return Ok(()),
                Some(Input::Failed(e)) => anyhow::bail!("cannot read the terminal: {e}"),
            }
        }
    }
    .await;
    // Stop reading keys before the terminal leaves raw mode, so the reader cannot
    // swallow what is typed into the shell afterwards (it polls every 100 ms).
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    drop(restore);
    result
}

/// Reads terminal events on a thread of its own (crossterm's reads block) until `stop`.
fn spawn_input(
    tx: mpsc::UnboundedSender<Input>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wiberctl-top-keys".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let input = match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => match event::read() {
                        Ok(e) => key_input(&e),
                        Err(e) => Some(Input::Failed(e.to_string())),
                    },
                    Err(e) => Some(Input::Failed(e.to_string())),
                };
                if let Some(i) = input {
                    let end = matches!(i, Input::Quit | Input::Failed(_));
                    if tx.send(i).is_err() || end {
                        return;
                    }
                }
            }
        })
        .context("cannot start the keyboard reader thread")
}

/// What a terminal event means here: `q`, Esc and Ctrl-C quit (raw mode turns Ctrl-C
/// into a key, not a signal); a resize redraws; key releases are ignored.
fn key_input(e: &TermEvent) -> Option<Input> {
    match e {
        TermEvent::Key(k) if k.kind != KeyEventKind::Release => match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Some(Input::Quit),
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Input::Quit),
            _ => None,
        },
        TermEvent::Resize(..) => Some(Input::Redraw),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEvent;

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, modifiers| TermEvent::Key(KeyEvent::new(code, modifiers));
        assert_eq!(
            key_input(&key(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Input::Quit)
        );
        assert_eq!(
            key_input(&key(KeyCode::Esc, KeyModifiers::NONE)),
            Some(Input::Quit)
        );
        assert_eq!(
            key_input(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Quit)
        );
        assert_eq!(
            key_input(&key(KeyCode::Char('c'), KeyModifiers::NONE)),
            None
        );
        assert_eq!(key_input(&TermEvent::Resize(80, 24)), Some(Input::Redraw));
    }
}
