//! The readiness answer, cached: probes (an orchestrator's, `stack status`, a scenario's
//! steady-state check, `top`) read the last answer while it is under [`Cache::FRESH`] old,
//! and one of them refreshes it when it is not, while the others wait for that one
//! check. So probes never pile blocking broker calls onto librdkafka, however often they
//! come, and the answer is never older than a second and a check.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// One readiness verdict: each part's check, `Ok` or why not.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub kafka: Result<(), String>,
    pub mongodb: Result<(), String>,
}

impl Verdict {
    pub fn ready(&self) -> bool {
        self.kafka.is_ok() && self.mongodb.is_ok()
    }
}

/// The last verdict and when it was reached.
#[derive(Debug, Default)]
pub struct Cache {
    last: Mutex<Option<(Instant, Verdict)>>,
}

impl Cache {
    /// How long a verdict is served before it is checked again.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// The cached verdict if fresh, or the one `check` reaches now (checks do not run
    /// concurrently: the lock is held across the check).
    pub async fn get<F>(&self, check: F) -> Verdict
    where
        F: std::future::Future<Output = Verdict>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, v)) = last.as_ref() {
            if at.elapsed() < Self::FRESH {
                return v.clone();
            }
        }
        let v = check.await;
        *last = Some((Instant::now(), v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn probes_within_a_second_share_one_check() {
        let cache = Cache::default();
        let checks = AtomicUsize::new(0);
        let check = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            Verdict {
                kafka: Err("partition 3 has no leader".into()),
                mongodb: Ok(()),
            }
        };
        for _ in 0..50 {
            let v = cache.get(check()).await;
            assert!(!v.ready());
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
    }
}
