// SPDX-License-Identifier: MIT OR Apache-2.0
//! mediator: the OP-TEE mediator, as pure code over two ports.
//!
//! The hypervisor hands every trusted-OS SMC a guest makes to this crate. It talks to the
//! secure world only through the `SecureMonitor` port and to guest memory only through the
//! `GuestMemory` port (plus `HvPages` for hypervisor-owned shadow pages), so the whole
//! protocol runs under `cargo test` on the host.
//!
//! ```text
//!   boot:      probe::probe ─▶ Mediator::new
//!   VM create: Mediator::vm_created   (OPTEE_SMC_VM_CREATED, a1 = domid + 1, a7 = 0)
//!   guest SMC: Mediator::handle_smc = begin ─▶ [smc ─▶ finish]* ─▶ reply
//!              (fast calls, CALL_WITH_ARG, RETURN_FROM_RPC; no lock held across an smc)
//!   VM gone:   Mediator::vm_destroyed (release calls, buffers, pins; OPTEE_SMC_VM_DESTROYED)
//! ```
//!
//! Contract with the hypervisor (`hv`): route every SMC32 call of the Trusted OS owners
//! (50, 63) from a VM that has a TEE to `handle_smc` (or drive `begin`/`finish` itself),
//! with the time in milliseconds of a clock shared by all CPUs (`now_ms`), and write the 8
//! returned registers back; provide a `Lock` (the mediator is `&self` and may be entered
//! from every CPU at once, for one VM or many); call `vm_created` before the VM first runs
//! (failure fails domain creation) and `vm_destroyed` after its last vCPU stopped (retrying
//! while it answers `Error::Reaping`). Only the OP-TEE SMC ABI is mediated, not FF-A.
//!
//! Modules: `abi` (constants and codecs), `ports` (traits), `limits`, `error`, `trace`,
//! `probe`, `shm` (page lists), `mediator` (state machine), and, for tests and the fuzz
//! target only, `fakes` (feature `fakes`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod error;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
#[cfg(any(test, feature = "fakes"))]
pub mod fuzz;
pub mod limits;
pub mod mediator;
pub mod msg;
pub mod ports;
pub mod probe;
mod shm;
pub mod shmspace;
pub mod trace;

pub use error::{Error, Fault};
pub use limits::Limits;
pub use mediator::{Mediator, Step, Token, VmStats};
pub use ports::{
    Access, GuestMemory, HvPage, HvPages, Ipa, Lock, MemFault, PhysAddr, SecureMonitor, VmId,
};
pub use probe::{probe, Probe};
pub use trace::{msg_lines, MsgDir, MsgRecord, NoTrace, ParamRecord, SmcRecord, Trace};

#[cfg(test)]
mod tests;
