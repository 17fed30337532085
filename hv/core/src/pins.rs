// SPDX-License-Identifier: MIT OR Apache-2.0
//! Which guest pages are pinned (OP-TEE may be using them, so they must stay mapped at the
//! same frame), in O(1) per pin and unpin.
//!
//! One bit per page of each RAM bank says "pinned at least once"; the rare further pins of
//! a page already pinned (a page list may name one page many times, two buffers may share
//! a page) are counted in a small map. A pin of a new page or the unpin of a page pinned
//! once, nearly every one, is a bit operation: no search, no allocation, no moving of
//! entries, where a map of every pinned page cost hundreds of instructions per page. The
//! bits cost 1/32768 of the RAM they cover (32 KiB for 1 GiB).

use crate::addr::{Ipa, Range};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

const PAGE: u64 = 4096;

/// Why a pin was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The page is in none of the domain's RAM banks.
    NotRam,
}

#[derive(Clone, Debug)]
struct Bank {
    start: u64,
    pages: u64,
    bits: Vec<u64>,
}

/// The pin counts of one domain's RAM.
#[derive(Clone, Debug, Default)]
pub struct PinTable {
    banks: Vec<Bank>,
    /// Pins beyond the first, per page (IPA, page-aligned).
    extra: BTreeMap<u64, u32>,
    /// Pages pinned at least once.
    pinned: usize,
}

impl PinTable {
    /// A table for RAM banks `ram` (IPA ranges), nothing pinned.
    pub fn new(ram: &[Range<Ipa>]) -> Self {
        let banks = ram
            .iter()
            .map(|r| {
                let start = r.start.raw() & !(PAGE - 1);
                let pages = r.end.raw().saturating_sub(start).div_ceil(PAGE);
                Bank {
                    start,
                    pages,
                    bits: vec![0; pages.div_ceil(64) as usize],
                }
            })
            .collect();
        Self {
            banks,
            extra: BTreeMap::new(),
            pinned: 0,
        }
    }

    fn slot(&mut self, ipa: u64) -> Option<(&mut u64, u64)> {
        let page = ipa & !(PAGE - 1);
        self.banks.iter_mut().find_map(|b| {
            let n = page.checked_sub(b.start)? / PAGE;
            (n < b.pages).then(|| (&mut b.bits[(n / 64) as usize], 1u64 << (n % 64)))
        })
    }

    /// Pin the page holding `ipa` once more.
    pub fn pin(&mut self, ipa: u64) -> Result<(), PinError> {
        let page = ipa & !(PAGE - 1);
        let (word, bit) = self.slot(page).ok_or(PinError::NotRam)?;
        if *word & bit == 0 {
            *word |= bit;
            self.pinned += 1;
        } else {
            *self.extra.entry(page).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Drop one pin of the page holding `ipa` (nothing if it is not pinned).
    pub fn unpin(&mut self, ipa: u64) {
        let page = ipa & !(PAGE - 1);
        if let Some(n) = self.extra.get_mut(&page) {
            *n -= 1;
            if *n == 0 {
                self.extra.remove(&page);
            }
            return;
        }
        if let Some((word, bit)) = self.slot(page) {
            if *word & bit != 0 {
                *word &= !bit;
                self.pinned -= 1;
            }
        }
    }

    /// How many times the page holding `ipa` is pinned.
    pub fn count(&self, ipa: u64) -> u32 {
        let page = ipa & !(PAGE - 1);
        let once = self.banks.iter().any(|b| {
            page.checked_sub(b.start)
                .map(|o| o / PAGE)
                .filter(|&n| n < b.pages)
                .is_some_and(|n| b.bits[(n / 64) as usize] & (1 << (n % 64)) != 0)
        });
        u32::from(once) + self.extra.get(&page).copied().unwrap_or(0)
    }

    /// Pages pinned at least once.
    pub fn len(&self) -> usize {
        self.pinned
    }

    /// Nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.pinned == 0
    }

    /// Drop every pin (the domain is rebuilt).
    pub fn clear(&mut self) {
        for b in &mut self.banks {
            b.bits.iter_mut().for_each(|w| *w = 0);
        }
        self.extra.clear();
        self.pinned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PinTable {
        PinTable::new(&[
            Range {
                start: Ipa(0x4000_0000),
                end: Ipa(0x4010_0000),
            },
            Range {
                start: Ipa(0x2_0000_0000),
                end: Ipa(0x2_0000_4000),
            },
        ])
    }

    #[test]
    fn pins_nest_and_unpin_in_reverse() {
        let mut t = table();
        assert!(t.is_empty());
        t.pin(0x4000_1234).unwrap();
        t.pin(0x4000_1000).unwrap();
        t.pin(0x2_0000_3fff).unwrap();
        assert_eq!(
            (t.len(), t.count(0x4000_1000), t.count(0x2_0000_3000)),
            (2, 2, 1)
        );
        t.unpin(0x4000_1000);
        assert_eq!((t.len(), t.count(0x4000_1000)), (2, 1));
        t.unpin(0x4000_1fff);
        t.unpin(0x2_0000_3000);
        assert!(t.is_empty());
        assert_eq!(t.count(0x4000_1000), 0);
        t.unpin(0x4000_1000); // not pinned: nothing happens
        assert!(t.is_empty());
    }

    #[test]
    fn a_page_named_a_thousand_times() {
        let mut t = table();
        for _ in 0..1000 {
            t.pin(0x4000_5000).unwrap();
        }
        assert_eq!((t.len(), t.count(0x4000_5000)), (1, 1000));
        for _ in 0..1000 {
            t.unpin(0x4000_5000);
        }
        assert!(t.is_empty() && t.count(0x4000_5000) == 0);
    }

    #[test]
    fn outside_ram_is_refused_and_clear_forgets() {
        let mut t = table();
        assert_eq!(
            t.pin(0x4010_0000),
            Err(PinError::NotRam),
            "one past the bank"
        );
        assert_eq!(t.pin(0x3fff_f000), Err(PinError::NotRam));
        assert_eq!(t.pin(0x2_0000_4000), Err(PinError::NotRam));
        t.pin(0x400f_f000).unwrap();
        t.pin(0x400f_f000).unwrap();
        t.clear();
        assert!(t.is_empty() && t.count(0x400f_f000) == 0);
    }
}
