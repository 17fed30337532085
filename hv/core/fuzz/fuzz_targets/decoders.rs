// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fuzz target: programs of guest-reachable inputs to hv-core (exception syndromes, MMIO
//! decoding, PSCI calls, vGIC and vPL011 register accesses, list registers). The driver is
//! `hv_core::fuzz::decoders`, which `cargo test -p hv-core` also replays on seeded inputs
//! (`fuzz_replay`), so it always builds and runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hv_core::fuzz::decoders(data));
