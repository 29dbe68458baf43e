//! CPU and memory of each instance, for `wiberctl top` ([`super::Stack::usage`]).
//!
//! Both runtimes report cumulative counters, not rates: CPU time used since the process
//! (container) started, and resident memory now. A rate needs two samples, so the caller
//! keeps the previous [`Usage`] and asks [`cpu_percent`]. Cumulative counters (instead of
//! Docker's own two-sample `precpu_stats`) keep one meaning on both runtimes and let the
//! Docker call be one-shot: no second-long wait per container.
//!
//! Local runtime: `/proc/<pid>/stat` (utime + stime, in clock ticks) and
//! `/proc/<pid>/status` (`RssAnon` + `RssShmem`, as Docker counts); for a server made of a process tree (PostgreSQL: a
//! process per connection), the tree's (see [`local_sample`]). Docker: the engine's one-shot stats
//! (`cpu_stats.cpu_usage.total_usage`, memory without the page cache); see
//! `docker/status.rs`.

use std::time::Instant;

use super::InstanceId;

/// One sample of one instance's resource use.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub id: InstanceId,
    /// Which process (local: `pid:start_ticks`) or container this sample is from: CPU
    /// time is only comparable between samples of the same incarnation.
    pub incarnation: String,
    /// CPU time used so far (user + system), in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Resident memory now, in bytes (Docker: anonymous memory of the container's cgroup,
    /// i.e. without the page cache, as `docker stats` shows).
    pub rss_bytes: Option<u64>,
    /// When the sample was taken (monotonic).
    pub at: Instant,
}

/// CPU use between two samples of the same instance, in percent of one core (a process
/// busy on two cores reads 200 %, as `top` shows it). `None` when the samples are not
/// comparable: another incarnation (restarted in between), a counter that went back, no
/// time between them, or a counter missing.
pub fn cpu_percent(prev: &Usage, cur: &Usage) -> Option<f64> {
    if prev.id != cur.id || prev.incarnation != cur.incarnation {
        return None;
    }
    let used = cur.cpu_ns?.checked_sub(prev.cpu_ns?)?;
    let wall = cur.at.checked_duration_since(prev.at)?.as_nanos();
    if wall == 0 {
        return None;
    }
    Some(used as f64 * 100.0 / wall as f64)
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`), in clock ticks.
pub(crate) fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // `pid (comm) S ...`: comm may hold spaces and ')', so count fields after the last
    // ')'. The state is field 3 there, so utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// cutime + cstime (fields 16 and 17): the CPU of children that exited and were reaped.
fn stat_children_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(13);
    let cutime: u64 = fields.next()?.parse().ok()?;
    let cstime: u64 = fields.next()?.parse().ok()?;
    Some(cutime + cstime)
}

/// Resident memory of `/proc/<pid>/status` as Docker counts a container's: anonymous
/// and shared memory (`RssAnon` + `RssShmem`), without the pages of files the process
/// maps (its own binary: 28 MiB of a debug wiberctl, touched as code paths first run),
/// which the kernel can drop at will and which are no leak. In bytes (the file says kB,
/// meaning KiB). `VmRSS` on a kernel without the split (before 4.5).
pub(crate) fn status_rss_bytes(status: &str) -> Option<u64> {
    let kib = match status_kib(status, "RssAnon:") {
        Some(anon) => anon + status_kib(status, "RssShmem:").unwrap_or(0),
        None => status_kib(status, "VmRSS:")?,
    };
    Some(kib * 1024)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux in practice).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// This process's CPU time so far (ns) and resident memory (bytes): what the load
/// generator itself uses, beside the stack it drives.
pub fn own_process() -> Option<(u64, Option<u64>)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
    Some((
        stat_cpu_ticks(&stat)? * ns_per_tick,
        status.as_deref().and_then(status_rss_bytes),
    ))
}

/// A sample of a local process from `/proc`. `None` when the process is gone.
///
/// With `children` (`Some`, even empty), the instance is the process and its children,
/// as a container's cgroup counts them: CPU is the process's own, its reaped children's
/// (cutime + cstime: a child's time moves there when it exits, so the sum does not drop)
/// and its live children's; memory is their anonymous memory plus the largest shared
/// memory any of them has touched (shared buffers, counted once).
pub(crate) fn local_sample(
    id: InstanceId,
    pid: u32,
    start_ticks: u64,
    children: Option<&[u32]>,
) -> Option<Usage> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
    let (cpu_ticks, rss_bytes) = match children {
        None => (
            stat_cpu_ticks(&stat),
            status.as_deref().and_then(status_rss_bytes),
        ),
        Some(children) => {
            let mut ticks =
                stat_cpu_ticks(&stat).and_then(|t| Some(t + stat_children_ticks(&stat)?));
            let anon_shmem = |status: &str| {
                Some((
                    status_kib(status, "RssAnon:")?,
                    status_kib(status, "RssShmem:").unwrap_or(0),
                ))
            };
            let mut mem = status.as_deref().and_then(anon_shmem);
            for c in children {
                let (Ok(cs), Ok(cst)) = (
                    std::fs::read_to_string(format!("/proc/{c}/stat")),
                    std::fs::read_to_string(format!("/proc/{c}/status")),
                ) else {
                    continue; // exited meanwhile: its time is in the parent's cutime
                };
                ticks = ticks.and_then(|t| Some(t + stat_cpu_ticks(&cs)?));
                if let (Some((anon, shmem)), Some((a, s))) = (mem, anon_shmem(&cst)) {
                    mem = Some((anon + a, shmem.max(s)));
                }
            }
            (ticks, mem.map(|(anon, shmem)| (anon + shmem) * 1024))
        }
    };
    Some(Usage {
        id,
        incarnation: format!("{pid}:{start_ticks}"),
        cpu_ns: cpu_ticks.map(|t| t * ns_per_tick),
        rss_bytes,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Service;
    use std::time::Duration;

    fn sample(incarnation: &str, cpu_ns: u64, at: Instant) -> Usage {
        Usage {
            id: InstanceId {
                service: Service::Consumer,
                index: 1,
            },
            incarnation: incarnation.into(),
            cpu_ns: Some(cpu_ns),
            rss_bytes: None,
            at,
        }
    }

    #[test]
    fn cpu_is_the_counter_delta_over_wall_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let a = sample("10:5", 1_000_000_000, t0);
        // 1 s of CPU in 2 s of wall time: half a core.
        let b = sample("10:5", 2_000_000_000, t1);
        assert_eq!(cpu_percent(&a, &b), Some(50.0));
        // Two cores busy: 200 %.
        let c = sample("10:5", 5_000_000_000, t1);
        assert_eq!(cpu_percent(&a, &c), Some(200.0));
        // Restarted in between (another process), or a counter that went back: unknown.
        assert_eq!(cpu_percent(&a, &sample("11:9", 2_000_000_000, t1)), None);
        assert_eq!(cpu_percent(&b, &sample("10:5", 1, t1)), None);
        // No time passed, or samples in the wrong order.
        assert_eq!(cpu_percent(&a, &sample("10:5", 2, t0)), None);
        assert_eq!(cpu_percent(&b, &a), None);
    }

    #[test]
    fn proc_files_parse() {
        // comm with a space and a ')' must not shift the fields.
        let stat = "4242 (java) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    150 25 0 0 20 0 40 0 123456 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(175));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert_eq!(stat_children_ticks(stat), Some(0));
        let status = "Name:\tjava\nVmPeak:\t  999 kB\nVmRSS:\t  2048 kB\nThreads:\t40\n";
        assert_eq!(
            status_rss_bytes(status),
            Some(2 * 1024 * 1024),
            "an old kernel"
        );
        let status = "VmRSS:\t  2048 kB\nRssAnon:\t  1000 kB\nRssFile:\t  1000 kB\n\
                      RssShmem:\t  48 kB\n";
        assert_eq!(
            status_rss_bytes(status),
            Some(1048 * 1024),
            "anonymous and shared, not file pages"
        );
        assert_eq!(status_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = std::process::id();
        let s = local_sample(
            InstanceId {
                service: Service::Api,
                index: 1,
            },
            me,
            0,
            None,
        )
        .expect("own /proc entry");
        assert!(s.rss_bytes.unwrap() > 0);
        assert!(s.cpu_ns.is_some());
        // As a process tree (no children): its own CPU at least, and its memory.
        let tree = local_sample(s.id, me, 0, Some(&[])).expect("own /proc entry");
        assert!(tree.cpu_ns.unwrap() >= s.cpu_ns.unwrap());
        assert!(tree.rss_bytes.unwrap() > 0);
    }
}
