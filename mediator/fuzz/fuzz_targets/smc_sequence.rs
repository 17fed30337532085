// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fuzz target: sequences of guest SMCs, guest memory contents and OP-TEE RPC scripts
//! against the mediator and its fakes. The driver is `mediator::fuzz::smc_sequence`, which
//! `cargo test -p mediator` also replays on seeded inputs (`tests::fuzz_replay`), so it
//! always builds and runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mediator::fuzz::smc_sequence(data));
