//! Giving freed memory back to the operating system.
//!
//! glibc's malloc keeps what a thread frees in that thread's arena, and an arena
//! whose top is pinned by one live allocation (say, the model a retraining thread
//! produced, which then serves for hours) never shrinks on its own. Under an hour
//! of mixed load with a retrain every three minutes the daemon's resident memory
//! climbed from 50 MB to 190 MB that was free inside the arenas; one
//! `malloc_trim(0)` on the running daemon brought it to 48 MB. [`trim`] runs that
//! call; the daemon runs it every [`TRIM_EVERY`].
//!
//! Trimming returns whole free pages; what it cannot return is memory left in
//! partly used pages of many arenas (glibc makes up to 8 per core, one for each
//! thread that met contention: tokio's workers, the blocking pool, training
//! threads). With trimming alone the floor still crept by about 20 MB an hour.
//! [`limit_arenas`] caps them at [`ARENAS`] at start: in an A/B of 25 minutes
//! with a retrain every minute, resident memory stayed at 76-87 MB from minute 5
//! on with the cap, and climbed from 88 to 110-137 MB without it (see
//! docs/BENCHMARKS.md). An operator's own `MALLOC_ARENA_MAX` or
//! `glibc.malloc.arena_max` tunable wins. With another allocator both do nothing.

use std::time::Duration;

/// How often the daemon hands free memory back.
pub const TRIM_EVERY: Duration = Duration::from_secs(60);

/// The most malloc arenas the daemon uses.
pub const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`ARENAS`], unless the environment already
/// sets a cap. Call before any thread is started. Returns whether it set one.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if cap_in_environment() {
            return false;
        }
        // SAFETY: mallopt only sets a parameter of glibc's allocator; M_ARENA_MAX
        // takes effect for arenas created afterwards and has no preconditions.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Whether the environment caps the arenas itself (`MALLOC_ARENA_MAX`, or
/// `glibc.malloc.arena_max` in `GLIBC_TUNABLES`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_in_environment() -> bool {
    std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"))
}

/// Returns free memory in every malloc arena to the operating system. Takes a
/// few milliseconds on a heap of a few hundred MB; call it off the async workers.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists; it has
    // no preconditions and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What malloc holds: bytes in live allocations, and bytes free inside its
/// arenas (freed but not returned to the system). `None` off glibc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    pub in_use: u64,
    pub free: u64,
}

/// The heap's state now, from glibc's `mallinfo2` (walks every arena; call it
/// at scrape time, not per request).
pub fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads glibc's allocator statistics and returns
        // them by value.
        let m = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    /// glibc accepts the cap (mallopt answers 1 on success, 0 on a refused
    /// value), unless the environment set one first.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_arena_cap() {
        assert_eq!(super::limit_arenas(), !super::cap_in_environment());
    }

    /// Freed memory is no longer resident after a trim (glibc on Linux).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_freed_memory() {
        fn rss_kb() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap()
        }
        // Many small blocks on one thread, then one kept block allocated last:
        // the arena cannot shrink from its top, only a trim releases the rest.
        let (before, after_free) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 4096]).collect();
            let keep = vec![1u8; 4096];
            drop(blocks);
            let before = rss_kb();
            super::trim();
            std::hint::black_box(&keep);
            (before, rss_kb())
        })
        .join()
        .unwrap();
        assert!(
            after_free + 100_000 < before,
            "RSS {before} kB before the trim, {after_free} kB after"
        );
    }
}
