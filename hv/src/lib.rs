// SPDX-License-Identifier: MIT OR Apache-2.0
//! hv: the part of moat that touches hardware at EL2.
//!
//! All `unsafe`, inline assembly, system-register and MMIO access lives here (and in
//! `boot`), with as little logic as possible: decisions are made by `hv-core` and
//! `mediator` on plain values.
#![no_std]
