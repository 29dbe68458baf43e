//! When each request is due. Pure arithmetic, kept apart from the workers so it can be
//! checked exactly.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever the server does, and
//! request `i` belongs to conversation `i % conversations` with sequence number
//! `i / conversations`. Latency is measured from the due time, so a stalled server cannot
//! hide its stall by slowing the generator down (coordinated omission).
//!
//! Closed loop (`--max`): each conversation sends its next request as soon as the
//! previous one was answered; the due time is simply "now".

use std::time::Duration;

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Constant arrival rate, requests per second.
    Open { rate: f64 },
    /// As fast as answers come back (one request in flight per conversation).
    Closed,
}

/// The plan of one phase: a warm-up followed by the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub pacing: Pacing,
    pub conversations: u32,
    pub warmup: Duration,
    pub window: Duration,
}

impl Schedule {
    /// Offset (from the phase start) after which no request is due.
    pub fn end(&self) -> Duration {
        self.warmup + self.window
    }

    /// Total requests the open loop plans: those due before [`Schedule::end`].
    pub fn planned_total(&self) -> u64 {
        match self.pacing {
            Pacing::Open { rate } => (self.end().as_secs_f64() * rate).ceil() as u64,
            Pacing::Closed => 0,
        }
    }

    /// Requests conversation `conv` is planned to send (open loop).
    pub fn planned(&self, conv: u32) -> u64 {
        let n = self.planned_total();
        let (c, convs) = (u64::from(conv), u64::from(self.conversations));
        if c >= n {
            0
        } else {
            (n - c).div_ceil(convs)
        }
    }

    /// Due offset of request `seq` of conversation `conv`; `None` in closed loop or when
    /// it falls after the end.
    pub fn due(&self, conv: u32, seq: u64) -> Option<Duration> {
        let Pacing::Open { rate } = self.pacing else {
            return None;
        };
        let i = seq * u64::from(self.conversations) + u64::from(conv);
        let due = Duration::from_secs_f64(i as f64 / rate);
        (due < self.end()).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rate: f64, convs: u32, secs: u64) -> Schedule {
        Schedule {
            pacing: Pacing::Open { rate },
            conversations: convs,
            warmup: Duration::ZERO,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn due_times_are_i_over_rate_round_robin_over_conversations() {
        let s = open(100.0, 3, 1);
        assert_eq!(s.due(0, 0), Some(Duration::ZERO));
        assert_eq!(s.due(1, 0), Some(Duration::from_millis(10)));
        assert_eq!(s.due(0, 1), Some(Duration::from_millis(30)));
        assert_eq!(s.due(2, 32), Some(Duration::from_millis(980)));
        assert_eq!(s.due(0, 34), None); // i = 102: after the end
        assert_eq!(s.planned_total(), 100);
        assert_eq!((0..3).map(|c| s.planned(c)).sum::<u64>(), 100);
        assert_eq!(s.planned(0), 34);
        assert_eq!(s.planned(1), 33);
        assert_eq!(s.due(1, 32), Some(Duration::from_millis(970)));
        assert_eq!(s.due(1, 33), None);
    }

    #[test]
    fn more_conversations_than_requests() {
        let s = open(2.0, 10, 1);
        assert_eq!(s.planned_total(), 2);
        assert_eq!(s.planned(1), 1);
        assert_eq!(s.planned(5), 0);
    }
}
