// SPDX-License-Identifier: MIT OR Apache-2.0
//! Rate limiting for guest-caused warnings: a guest must never flood moat's console.
//!
//! A [`Limiter`] counts events of one kind in one-second windows of the generic timer: the
//! first [`PER_SECOND`] of a window are reported, the rest are counted, and the next report
//! carries how many were suppressed. The hypervisor passes the counter value and frequency
//! in (CNTPCT_EL0, CNTFRQ_EL0), so this stays pure and testable.

use core::sync::atomic::{AtomicU64, Ordering};

/// Events of one kind reported per second at most. A 115200-baud console drains about a
/// hundred lines a second; a handful of limiters stay well below that.
pub const PER_SECOND: u64 = 10;

/// Counts one kind of event; safe to share between CPUs (races only blur a window's edge).
#[derive(Debug, Default)]
pub struct Limiter {
    window: AtomicU64,
    count: AtomicU64,
    dropped: AtomicU64,
}

impl Limiter {
    /// A limiter that has seen nothing.
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Count one event at counter value `now` (`ticks_per_sec` ticks a second).
    /// `Some(suppressed)` if it should be reported, with the number of events dropped since
    /// the previous report.
    pub fn hit(&self, now: u64, ticks_per_sec: u64) -> Option<u64> {
        let w = now / ticks_per_sec.max(1);
        let cur = self.window.load(Ordering::Relaxed);
        if w != cur
            && self
                .window
                .compare_exchange(cur, w, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
            Some(self.dropped.swap(0, Ordering::Relaxed))
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 62_500_000;

    #[test]
    fn at_most_per_second_then_the_count_of_the_rest() {
        let l = Limiter::new();
        let t0 = 5 * HZ;
        let reported = (0..30).filter(|i| l.hit(t0 + i, HZ).is_some()).count() as u64;
        assert_eq!(reported, PER_SECOND);
        // A second later: reported again, with what was dropped.
        assert_eq!(l.hit(t0 + HZ, HZ), Some(30 - PER_SECOND));
        assert_eq!(l.hit(t0 + HZ + 1, HZ), Some(0));
    }

    #[test]
    fn a_flood_stays_bounded_per_second() {
        let l = Limiter::new();
        let mut reported = 0;
        for i in 0..1_000_000u64 {
            // A million events spread over 10 seconds.
            if l.hit(i * (HZ / 100_000), HZ).is_some() {
                reported += 1;
            }
        }
        assert!(reported <= 11 * PER_SECOND, "{reported}");
    }

    #[test]
    fn a_zero_frequency_does_not_divide_by_zero() {
        assert_eq!(Limiter::new().hit(7, 0), Some(0));
    }
}
