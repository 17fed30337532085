// SPDX-License-Identifier: MIT OR Apache-2.0
//! The fuzz target's driver, replayed on seeded pseudo-random inputs in every `cargo test`
//! (stable, no libFuzzer): it always builds, and its invariants (no leaked pin or page,
//! every address OP-TEE gets is the caller's or the hypervisor's, no lock across an SMC)
//! are checked on every CI run. `MOAT_FUZZ_REPLAY=N` replays N inputs instead of the
//! default; `cargo xtask test --full` runs libFuzzer on it for 10^7 executions
//! (`mediator/fuzz`).

use std::vec::Vec;

/// Inputs replayed by default: a few seconds.
const DEFAULT_INPUTS: u64 = 10_000;

/// xorshift64*: deterministic, so a failing input is found again from its index.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn seeded_inputs_break_no_invariant() {
    let n = std::env::var("MOAT_FUZZ_REPLAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_INPUTS);
    for i in 0..n {
        let mut s = 0x6d6f_6174_u64 ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Lengths up to 1 KiB: the driver reads zeros past the end, so short inputs are
        // short programs.
        let len = (next(&mut s) % 1024) as usize;
        let data: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
        let r = std::panic::catch_unwind(|| crate::fuzz::smc_sequence(&data));
        assert!(
            r.is_ok(),
            "input {i} of the replay ({len} bytes) broke an invariant: replay it with \
             MOAT_FUZZ_REPLAY={} and this index",
            i + 1
        );
    }
}
