// SPDX-License-Identifier: MIT OR Apache-2.0
//! mediator: the OP-TEE mediator, as pure code over two ports.
//!
//! The hypervisor hands every trusted-OS SMC a guest makes to this crate. It talks to the
//! secure world only through the `SecureMonitor` port and to guest memory only through the
//! `GuestMemory` port, so the whole protocol runs under `cargo test` on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
