// SPDX-License-Identifier: MIT OR Apache-2.0
//! Rate limiting for guest-caused warnings: a guest must never flood moat's console.
//!
//! A [`Limiter`] counts events of one kind. The first [`BURST`] are reported, then one in
//! every [`EVERY`], each carrying how many were suppressed since the last report.

use core::sync::atomic::{AtomicU64, Ordering};

/// Events reported in full before throttling starts.
pub const BURST: u64 = 10;
/// After the burst, one event in this many is reported.
pub const EVERY: u64 = 1000;

/// Counts one kind of event; safe to share between CPUs.
#[derive(Debug, Default)]
pub struct Limiter {
    seen: AtomicU64,
}

impl Limiter {
    /// A limiter that has seen nothing.
    pub const fn new() -> Self {
        Self {
            seen: AtomicU64::new(0),
        }
    }

    /// Count one event. `Some(suppressed)` if it should be reported, with the number of
    /// events dropped since the previous report.
    pub fn hit(&self) -> Option<u64> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        decide(n)
    }
}

/// Whether the `n`th event (0-based) is reported, and how many were suppressed before it.
pub const fn decide(n: u64) -> Option<u64> {
    if n < BURST {
        Some(0)
    } else if (n - BURST + 1).is_multiple_of(EVERY) {
        Some(EVERY - 1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_in_every() {
        let l = Limiter::new();
        let reported: u64 = (0..BURST + 3 * EVERY).filter(|_| l.hit().is_some()).count() as u64;
        assert_eq!(reported, BURST + 3);
        assert_eq!(decide(0), Some(0));
        assert_eq!(decide(BURST), None);
        assert_eq!(decide(BURST + EVERY - 1), Some(EVERY - 1));
    }
}
