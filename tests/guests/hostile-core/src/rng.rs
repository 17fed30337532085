// SPDX-License-Identifier: MIT OR Apache-2.0
//! A small deterministic PRNG: SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014), as used to seed xoshiro.
//!
//! A campaign must be replayable from its seed alone, on the host and in the guest, so the
//! generator is this fixed algorithm and nothing else: no clock, no hardware RNDR. Each
//! case gets its own stream (`Rng::for_case`), so case `i` of seed `s` is the same case
//! whatever came before it and however many cases the campaign has.

/// SplitMix64's state increment (the golden ratio, 2^64 / phi).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The stream of case `index` of campaign `seed`: independent of every other case's.
    pub fn for_case(seed: u64, index: u32) -> Self {
        let mut r = Self::new(seed ^ 0x686f_7374_696c_6521);
        let salt = r.next_u64();
        Self::new(salt ^ u64::from(index).wrapping_mul(GOLDEN).rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, n)` (0 when `n` is 0), by Lemire's multiply-shift (bias below
    /// 2^-32 for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights (at least one non-zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_its_reference_values() {
        // The reference implementation's first outputs for seed 1234567.
        let mut r = Rng::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn cases_have_independent_streams() {
        let a: std::vec::Vec<u64> = (0..4).map(|i| Rng::for_case(1, i).next_u64()).collect();
        let b: std::vec::Vec<u64> = (0..4).map(|i| Rng::for_case(1, i).next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::for_case(1, 0).next_u64(),
            Rng::for_case(2, 0).next_u64()
        );
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn bounded_draws_stay_in_bounds() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let v = r.range(5, 9);
            assert!((5..9).contains(&v));
            assert_eq!(r.weighted(&[0, 3, 0]), 1);
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(4, 4), 4);
    }
}
