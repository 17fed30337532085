// SPDX-License-Identifier: MIT OR Apache-2.0
//! hv-core: every decision the moat hypervisor makes, as pure code.
//!
//! This crate decodes what a guest did (exception syndromes, MMIO accesses, SMCCC calls),
//! decides what to do about it, and builds the data structures (stage-2 tables, device
//! trees) that the effect crate `hv` then installs. It never touches a live register or
//! MMIO: values come in as plain data, so everything here runs under `cargo test` on the
//! host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod bootcfg;
pub mod console;
pub mod devmap;
pub mod dom0dt;
pub mod domu;
pub mod domudt;
pub mod early;
pub mod error;
pub mod esr;
pub mod fdt;
pub mod fuzz;
pub mod guest;
pub mod mmio;
pub mod pins;
pub mod psci;
pub mod ratelimit;
pub mod serial;
pub mod smccc;
pub mod stage2;
pub mod vgic;
pub mod vm;
pub mod vpl011;
