// SPDX-License-Identifier: MIT OR Apache-2.0
//! Trace hook: one record per trapped SMC, for `--trace smc`.
//!
//! The mediator is generic over `Trace`; `NoTrace` has `ENABLED = false`, so every
//! `if T::ENABLED { .. }` guard and the record it would build compile away when tracing is
//! off. A guest fault is reported in the record, not logged here: rate limiting is the
//! hypervisor's job (a guest must never be able to flood the log).

use crate::error::Fault;
use crate::ports::VmId;

/// What happened on one trapped SMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmcRecord {
    /// The calling VM.
    pub vm: VmId,
    /// Function id (guest a0).
    pub func: u32,
    /// Guest a1..a6 as trapped (a7 is ignored and replaced with the client id).
    pub args: [u64; 6],
    /// Guest pages translated and pinned while handling this trap.
    pub pages_translated: u32,
    /// a0 handed back to the guest.
    pub ret: u32,
    /// The guest misbehaviour detected, if any.
    pub fault: Option<Fault>,
    /// Another VM's parked call this trap reaped to free an OP-TEE thread for itself or
    /// others: (that VM, its call handle).
    pub reaped: Option<(VmId, u32)>,
}

/// Receives one record per trapped SMC.
pub trait Trace {
    /// False makes every trace site dead code.
    const ENABLED: bool;
    /// Called once per trapped SMC, after the result is known, with no mediator lock held
    /// (several CPUs may call it at once).
    fn smc(&self, record: &SmcRecord);
}

/// Tracing off.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrace;

impl Trace for NoTrace {
    const ENABLED: bool = false;
    #[inline(always)]
    fn smc(&self, _record: &SmcRecord) {}
}
