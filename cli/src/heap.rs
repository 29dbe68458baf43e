//! How wiberctl's heap gives memory back, for the runs that last hours.
//!
//! glibc's malloc gives every thread that allocates an arena of its own (up to eight per
//! core) and keeps most pages freed inside one. wiberctl's threads come and go (tokio's
//! blocking pool, librdkafka's threads per client), so under an hour's soak its resident
//! memory kept climbing while what it held live stayed small: after three minutes of
//! `soak-ci`, heaptrack found 5 MiB live while a dozen arenas held 12-15 MiB, and an
//! hour's soak grew it by 80 %, which the soak's own `rss_growth.generator` threshold
//! rightly failed. Two arenas are plenty on the machines this runs on, and a trim every
//! few seconds hands what is free back to the system. (mimalloc, tried instead, held
//! two to three times as much in the same run.)

/// Every this often, free pages go back to the system: `malloc_trim` walks the arenas,
/// a millisecond for wiberctl's heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Call once, first thing in `main`, before other threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tunable; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        // A housekeeping thread that only sleeps and trims, for as long as the process
        // lives (it ends with it).
        let _ = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim has no preconditions.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
    }
}
