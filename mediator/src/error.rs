// SPDX-License-Identifier: MIT OR Apache-2.0
//! The mediator's error type (hypervisor-facing), kept apart from what a guest sees.
//!
//! `Error` is returned to the hypervisor from probing and VM lifecycle calls. Guest-visible
//! results are OP-TEE's own codes (`abi::OPTEE_SMC_RETURN_*`, `abi::TEEC_*`); the internal
//! `Fault` classifies guest misbehaviour and maps to exactly one of them.

use crate::abi;

/// Failures the hypervisor must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// CALLS_UID did not return OPTEE_MSG_UID: no OP-TEE behind the monitor.
    NotOpTee,
    /// OP-TEE speaks a message-protocol major revision we do not.
    UnsupportedRevision {
        /// Major revision reported.
        major: u32,
    },
    /// OP-TEE was not built with virtualization support.
    NoVirtualization,
    /// OP-TEE lacks dynamic shared memory, which the mediator requires.
    NoDynamicShm,
    /// EXCHANGE_CAPABILITIES failed.
    CapabilitiesFailed {
        /// a0 returned.
        code: u32,
    },
    /// GET_THREAD_COUNT failed or reported zero threads.
    NoThreadCount,
    /// The mediator was used before a successful probe.
    NotProbed,
    /// The VM is already known.
    VmExists,
    /// The VM is not known.
    UnknownVm,
    /// OP-TEE refused VM_CREATED: domain creation must fail.
    VmCreateRefused {
        /// a0 returned.
        code: u32,
    },
    /// The VM still has an SMC in the secure world (a trap between `Mediator::begin` and
    /// its last `Mediator::finish`): it cannot be destroyed yet. Nothing was changed.
    CallsInFlight,
    /// Another VM's trap is reaping one of this VM's parked calls (unwinding it in OP-TEE
    /// with this VM's client id, at most `max_destroy_resumes` SMCs): retry shortly, the
    /// wait is bounded. Nothing was changed.
    Reaping,
    /// OP-TEE failed VM_DESTROYED (the mediator's state is released regardless).
    VmDestroyFailed {
        /// a0 returned.
        code: u32,
    },
}

/// A guest misbehaviour (or a resource limit it hit), classified for its result code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An address is not the VM's RAM or lacks the needed permission.
    BadAddress,
    /// An address that must be aligned is not (argument struct, page-list entries).
    Unaligned,
    /// Malformed message: unknown command, too many params, bad attribute.
    BadMessage,
    /// Unknown parameter type or flag combination.
    BadParam,
    /// A cookie that names no buffer of this VM.
    UnknownCookie,
    /// A cookie this VM already uses.
    CookieInUse,
    /// A limit was hit (pages, buffers, pinned pages, budget).
    Limit,
    /// Hypervisor page pool exhausted.
    NoMemory,
    /// The VM has its full share of calls open.
    ThreadLimit,
    /// RETURN_FROM_RPC for a call that is not this VM's, or not waiting.
    BadResume,
    /// RETURN_FROM_RPC for a call the mediator reaped: the VM held more than its share of
    /// OP-TEE's threads, the call sat parked longer than `max_park_ms`, and another VM was
    /// refused a thread. The call was failed in OP-TEE.
    Reaped,
    /// The function is refused for guests.
    Refused,
    /// UNREGISTER_SHM of a buffer a call of the VM names and that call has not ended (one
    /// validated on a sibling vCPU whose SMC may not have reached OP-TEE yet): the buffer
    /// stays, as OP-TEE keeps a buffer its own calls hold.
    BufferInUse,
}

impl Fault {
    /// The OPTEE_SMC_RETURN_* code for a fault detected at the SMC level.
    pub const fn smc_code(self) -> u32 {
        match self {
            Fault::BadAddress | Fault::Unaligned => abi::OPTEE_SMC_RETURN_EBADADDR,
            Fault::BadMessage | Fault::BadParam => abi::OPTEE_SMC_RETURN_EBADCMD,
            Fault::UnknownCookie | Fault::CookieInUse | Fault::BufferInUse => {
                abi::OPTEE_SMC_RETURN_EBADCMD
            }
            Fault::Limit | Fault::NoMemory => abi::OPTEE_SMC_RETURN_ENOMEM,
            Fault::ThreadLimit => abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT,
            Fault::BadResume | Fault::Reaped => abi::OPTEE_SMC_RETURN_ERESUME,
            Fault::Refused => abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION,
        }
    }

    /// The TEEC_* code for a fault detected in a message parameter (reported in
    /// `optee_msg_arg.ret` with origin COMMS, like OP-TEE's own parameter checks).
    pub const fn teec_code(self) -> u32 {
        match self {
            Fault::Limit | Fault::NoMemory => abi::TEEC_ERROR_OUT_OF_MEMORY,
            Fault::BufferInUse => abi::TEEC_ERROR_BUSY,
            _ => abi::TEEC_ERROR_BAD_PARAMETERS,
        }
    }
}
