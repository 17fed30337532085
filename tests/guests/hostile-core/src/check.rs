// SPDX-License-Identifier: MIT OR Apache-2.0
//! The checker: is an answer one the protocol and moat's promises allow?
//!
//! Every step of a case carries an [`Expect`]; the driver hands [`check`] what came back
//! (x0..x3 and, for a message in the guest's memory, its header as read back) and gets a
//! [`Verdict`]. Two kinds of failure:
//!
//! - **escape**: something the guest must never get was accepted: a forbidden address, a
//!   buffer or message outside its RAM, a cookie it never allocated, a hypervisor-only
//!   call. moat's isolation is broken.
//! - **unexpected**: the answer is not one the protocol (or moat's documented behaviour)
//!   allows, but nothing crossed a boundary: a wrong error code, a refusal where the call
//!   should have worked, a leaked register.
//!
//! ```text
//!   a forbidden memref:  SMC OK, ret in {BAD_PARAMETERS, OUT_OF_MEMORY}, origin COMMS  pass
//!                        SMC OK, ret SUCCESS, or any origin but COMMS (OP-TEE saw it)  escape
//!                        anything else                                                  unexpected
//! ```
//!
//! Checks that span several SMCs (an RPC naming a cookie the guest never allocated, a
//! message field the mediator must not write) are the driver's; they produce the same
//! [`Verdict`]s.

use alloc::string::String;

use mediator::abi::{self, MsgArgHeader};

use crate::proto::ORIGIN_COMMS;

/// How bad a failed check is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The answer is not the protocol's, but nothing crossed a boundary.
    Unexpected,
    /// Isolation is broken: something forbidden was accepted.
    Escape,
}

/// A check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is allowed.
    Pass,
    /// It is not, and why.
    Fail(Severity, String),
}

/// What one step of a case must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Whatever the protocol allows (only the driver's cross-SMC checks apply).
    Any,
    /// a0 is one of these codes.
    Codes(&'static [u32]),
    /// CALLS_UID: OPTEE_MSG_UID in a0..a3.
    Uid,
    /// GET_OS_UUID: OP-TEE's OS UUID in a0..a3.
    OsUuid,
    /// CALLS_REVISION: the message protocol's major revision in a0.
    Revision,
    /// EXCHANGE_CAPABILITIES: OK with only the capabilities a guest may see (no reserved
    /// SHM, no asynchronous notifications), or ENOTAVAIL.
    Caps,
    /// GET_THREAD_COUNT: OK with a share of at least one thread.
    ThreadCount,
    /// GET_SHM_CONFIG: ENOTAVAIL; the static SHM handed to a guest is an escape.
    ShmConfig,
    /// DISABLE_SHM_CACHE: ENOTAVAIL or EBUSY. OK with a cookie of the guest's own means
    /// OP-TEE's RPC cache was on (unexpected: moat never turns it on); OK with any other
    /// cookie hands the guest another's pointer (escape). The driver knows the cookies.
    DisableCache,
    /// A hypervisor-only call (VM_CREATED, VM_DESTROYED): UNKNOWN_FUNCTION; anything else
    /// means a guest reached OP-TEE's VM lifecycle (escape).
    HypervisorOnly,
    /// Must be refused before OP-TEE sees it: a0 in `smc`, or a0 OK with the message's
    /// `ret` in `teec` and origin COMMS. Accepted (OK and SUCCESS, or an origin that says
    /// OP-TEE or a TA answered) is a failure of severity `breach`.
    Refused {
        /// SMC-level codes that refuse it.
        smc: &'static [u32],
        /// Message-level codes (origin COMMS) that refuse it.
        teec: &'static [u32],
        /// How bad it is if it was accepted.
        breach: Severity,
    },
    /// Must reach OP-TEE (or the TA) and get its answer: a0 OK, origin not COMMS.
    Reaches,
    /// Must succeed: a0 OK, ret SUCCESS.
    Success,
    /// Must fail (a0 OK with ret not SUCCESS; a call beyond the share may get
    /// ETHREAD_LIMIT instead).
    Fails,
    /// Must stop in an RPC (or, beyond the guest's share of OP-TEE's threads, get
    /// ETHREAD_LIMIT). The share is what a guest is guaranteed, not a cap: beyond it a call
    /// may still get a thread that is free.
    Parks,
    /// Every OP-TEE thread is held: ETHREAD_LIMIT, promptly (never a hang).
    ThreadLimit,
    /// An access to an emulated device (`campaign::Op::Mmio`), judged by [`check_mmio`].
    Mmio(MmioExpect),
}

/// What an access to one of moat's emulated devices must get. Anything else is
/// unexpected: nothing crosses a boundary, but moat broke the architecture's promise (a
/// refused access is RAZ/WI), or the guest got an abort it could not have expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioExpect {
    /// It completes; a read gives exactly this (RAZ: 0).
    Reads(u64),
    /// It completes; the bits of a read under `mask` are `value`.
    Masked {
        /// The bits that count.
        mask: u64,
        /// What they must be.
        value: u64,
    },
    /// It completes; a read's value is kept for the case's later `Kept` and
    /// `Access::Restore`.
    Keep,
    /// It completes; a read gives what the case's `Keep` read gave (a write in between
    /// was ignored).
    Kept,
    /// It completes (a write, or a read whose value is not checked).
    Completes,
    /// The guest gets a synchronous external abort (a data abort taken at its own
    /// level, fault status 0x10): the access cannot be emulated.
    Aborts,
}

/// What came back for a step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// x0..x3.
    pub regs: [u64; 4],
    /// The message header as read back, when the message is in the guest's memory and the
    /// call completed.
    pub msg: Option<MsgArgHeader>,
}

/// What the checker needs to know about the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    /// The guest's share of OP-TEE's threads (GET_THREAD_COUNT).
    pub share: u32,
    /// Calls this guest has parked in RPCs right now (before this one).
    pub parked: u32,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

/// The name of a0 for findings.
pub fn code_name(a0: u32) -> &'static str {
    if abi::is_rpc(a0) {
        return "an RPC request";
    }
    abi::return_name(abi::OPTEE_SMC_CALL_WITH_ARG, a0)
}

fn fail(sev: Severity, why: String) -> Verdict {
    Verdict::Fail(sev, why)
}

fn unexpected(why: String) -> Verdict {
    fail(Severity::Unexpected, why)
}

fn codes(set: &[u32]) -> String {
    let mut s = String::new();
    for (i, c) in set.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(code_name(*c));
    }
    s
}

/// The message's answer, for findings.
fn msg_text(m: &Option<MsgArgHeader>) -> String {
    match m {
        Some(h) => alloc::format!("ret {:#x} origin {}", h.ret, h.ret_origin),
        None => "no message".into(),
    }
}

/// Check one outcome against its expectation.
pub fn check(expect: &Expect, ctx: &Ctx, out: &Outcome) -> Verdict {
    let a0 = out.regs[0] as u32;
    let a = out.regs;
    let beyond_share = ctx.parked >= ctx.share;
    match expect {
        Expect::Any => Verdict::Pass,
        Expect::Codes(set) => match set.contains(&a0) {
            true => Verdict::Pass,
            false => unexpected(alloc::format!(
                "a0 = {a0:#x} ({}), expected {}",
                code_name(a0),
                codes(set)
            )),
        },
        Expect::Uid => words(&a, &abi::OPTEE_MSG_UID, "OPTEE_MSG_UID"),
        Expect::OsUuid => words(&a, &abi::OPTEE_OS_UUID, "OP-TEE's OS UUID"),
        Expect::Revision => match a0 == abi::OPTEE_MSG_REVISION_MAJOR {
            true => Verdict::Pass,
            false => unexpected(alloc::format!("revision {a0}.{}", a[1])),
        },
        Expect::Caps => {
            let hidden =
                abi::OPTEE_SMC_SEC_CAP_HAVE_RESERVED_SHM | abi::OPTEE_SMC_SEC_CAP_ASYNC_NOTIF;
            match a0 {
                abi::OPTEE_SMC_RETURN_ENOTAVAIL => Verdict::Pass,
                abi::OPTEE_SMC_RETURN_OK if a[1] & hidden != 0 => unexpected(alloc::format!(
                    "capabilities {:#x} show reserved SHM or async notifications",
                    a[1]
                )),
                abi::OPTEE_SMC_RETURN_OK if a[1] & abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM == 0 => {
                    unexpected(alloc::format!("capabilities {:#x} lack dynamic SHM", a[1]))
                }
                abi::OPTEE_SMC_RETURN_OK => Verdict::Pass,
                _ => unexpected(alloc::format!("a0 = {a0:#x} ({})", code_name(a0))),
            }
        }
        Expect::ThreadCount => match (a0, a[1]) {
            (abi::OPTEE_SMC_RETURN_OK, 1..=64) => Verdict::Pass,
            _ => unexpected(alloc::format!("a0 = {a0:#x}, a1 = {}", a[1])),
        },
        Expect::ShmConfig => match a0 {
            abi::OPTEE_SMC_RETURN_ENOTAVAIL => Verdict::Pass,
            abi::OPTEE_SMC_RETURN_OK => fail(
                Severity::Escape,
                alloc::format!(
                    "GET_SHM_CONFIG gave the guest static SHM [{:#x}, +{:#x})",
                    a[1],
                    a[2]
                ),
            ),
            _ => unexpected(alloc::format!("a0 = {a0:#x} ({})", code_name(a0))),
        },
        Expect::DisableCache => match a0 {
            abi::OPTEE_SMC_RETURN_ENOTAVAIL | abi::OPTEE_SMC_RETURN_EBUSY => Verdict::Pass,
            // The cookie itself is the driver's to judge (it knows which are the guest's).
            abi::OPTEE_SMC_RETURN_OK => Verdict::Pass,
            _ => unexpected(alloc::format!("a0 = {a0:#x} ({})", code_name(a0))),
        },
        Expect::HypervisorOnly => match a0 {
            abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION => Verdict::Pass,
            _ => fail(
                Severity::Escape,
                alloc::format!(
                    "a hypervisor-only call answered a0 = {a0:#x} ({}), not UNKNOWN_FUNCTION",
                    code_name(a0)
                ),
            ),
        },
        Expect::Refused { smc, teec, breach } => {
            if smc.contains(&a0) {
                return Verdict::Pass;
            }
            if a0 == abi::OPTEE_SMC_RETURN_OK || abi::is_rpc(a0) {
                return match &out.msg {
                    Some(h) if teec.contains(&h.ret) && h.ret_origin == ORIGIN_COMMS => {
                        Verdict::Pass
                    }
                    Some(h) if h.ret != abi::TEEC_SUCCESS && h.ret_origin == ORIGIN_COMMS => {
                        unexpected(alloc::format!(
                            "refused with ret {:#x} origin COMMS, expected {}",
                            h.ret,
                            teec_names(teec)
                        ))
                    }
                    m => fail(
                        *breach,
                        alloc::format!(
                            "accepted: a0 = {a0:#x} ({}), {}",
                            code_name(a0),
                            msg_text(m)
                        ),
                    ),
                };
            }
            unexpected(alloc::format!(
                "a0 = {a0:#x} ({}), expected {}{}",
                code_name(a0),
                if smc.is_empty() { "" } else { "SMC " },
                if smc.is_empty() {
                    alloc::format!("OK and {} origin COMMS", teec_names(teec))
                } else {
                    codes(smc)
                }
            ))
        }
        Expect::Reaches => match (a0, &out.msg) {
            (abi::OPTEE_SMC_RETURN_OK, Some(h)) if h.ret_origin != ORIGIN_COMMS || h.ret == 0 => {
                Verdict::Pass
            }
            (_, m) => unexpected(alloc::format!(
                "did not reach OP-TEE: a0 = {a0:#x} ({}), {}",
                code_name(a0),
                msg_text(m)
            )),
        },
        Expect::Success => match (a0, &out.msg) {
            (abi::OPTEE_SMC_RETURN_OK, Some(h)) if h.ret == abi::TEEC_SUCCESS => Verdict::Pass,
            (_, m) => unexpected(alloc::format!(
                "failed: a0 = {a0:#x} ({}), {}",
                code_name(a0),
                msg_text(m)
            )),
        },
        Expect::Fails => match (a0, &out.msg) {
            (abi::OPTEE_SMC_RETURN_OK, Some(h)) if h.ret != abi::TEEC_SUCCESS => Verdict::Pass,
            (abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT, _) if beyond_share => Verdict::Pass,
            (_, m) => unexpected(alloc::format!(
                "did not fail: a0 = {a0:#x} ({}), {}",
                code_name(a0),
                msg_text(m)
            )),
        },
        Expect::Parks => match a0 {
            // Within its share a call always gets a thread (another guest's call parked
            // above its share is reaped for it); beyond it only while one is free.
            _ if abi::is_rpc(a0) => Verdict::Pass,
            abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT if beyond_share => Verdict::Pass,
            _ => unexpected(alloc::format!(
                "call {} of a share of {} answered a0 = {a0:#x} ({}), {}",
                ctx.parked + 1,
                ctx.share,
                code_name(a0),
                msg_text(&out.msg)
            )),
        },
        Expect::ThreadLimit => match a0 {
            abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT => Verdict::Pass,
            _ => unexpected(alloc::format!(
                "a call beyond the share of {} answered a0 = {a0:#x} ({}), not ETHREAD_LIMIT",
                ctx.share,
                code_name(a0)
            )),
        },
        Expect::Mmio(_) => unexpected("an MMIO expectation for an SMC (a campaign bug)".into()),
    }
}

/// ESR_EL1.EC of a data abort taken without a change in exception level (Arm ARM D24.2.42).
pub const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
/// ESR_EL1.ISS.DFSC of a synchronous external abort, not on a translation table walk.
pub const DFSC_SYNC_EXTERNAL: u64 = 0x10;

/// Check what an access to an emulated device got: `Ok(value read)` (0 for a write) or
/// `Err(ESR_EL1)` of the exception it took. `kept` is the case's `Keep` value.
pub fn check_mmio(expect: &MmioExpect, got: Result<u64, u64>, kept: Option<u64>) -> Verdict {
    let value = match (expect, got) {
        (MmioExpect::Aborts, Err(esr)) => {
            let (ec, dfsc) = (esr >> 26 & 0x3f, esr & 0x3f);
            return match (ec, dfsc) {
                (EC_DATA_ABORT_SAME_EL, DFSC_SYNC_EXTERNAL) => Verdict::Pass,
                _ => unexpected(alloc::format!(
                    "an exception with ESR_EL1 {esr:#x} (EC {ec:#x}, DFSC {dfsc:#x}), not a \
                     synchronous external abort"
                )),
            };
        }
        (MmioExpect::Aborts, Ok(v)) => {
            return unexpected(alloc::format!(
                "completed (read {v:#x}): an access with no syndrome cannot be emulated"
            ))
        }
        (_, Err(esr)) => {
            return unexpected(alloc::format!(
                "aborted (ESR_EL1 {esr:#x}), where moat answers RAZ/WI"
            ))
        }
        (_, Ok(v)) => v,
    };
    match *expect {
        MmioExpect::Reads(want) if value != want => unexpected(alloc::format!(
            "read {value:#x}, expected {want:#x}{}",
            if want == 0 { " (RAZ)" } else { "" }
        )),
        MmioExpect::Masked { mask, value: want } if value & mask != want => unexpected(
            alloc::format!("read {value:#x}: the bits {mask:#x} are not {want:#x}"),
        ),
        MmioExpect::Kept => match kept {
            Some(k) if k == value => Verdict::Pass,
            Some(k) => unexpected(alloc::format!(
                "read {value:#x}, not {k:#x} as before: a write that must be ignored took \
                 effect"
            )),
            None => unexpected("nothing kept to compare with (a campaign bug)".into()),
        },
        _ => Verdict::Pass,
    }
}

fn words(a: &[u64; 4], want: &[u32; 4], what: &str) -> Verdict {
    match a.iter().zip(want).all(|(&x, &w)| x == u64::from(w)) {
        true => Verdict::Pass,
        false => unexpected(alloc::format!("{a:x?} is not {what}")),
    }
}

fn teec_names(set: &[u32]) -> String {
    let mut s = String::new();
    for (i, c) in set.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(match *c {
            abi::TEEC_ERROR_BAD_PARAMETERS => "BAD_PARAMETERS",
            abi::TEEC_ERROR_OUT_OF_MEMORY => "OUT_OF_MEMORY",
            abi::TEEC_ERROR_COMMUNICATION => "COMMUNICATION",
            _ => "?",
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ORIGIN_TA, ORIGIN_TEE};

    const OK: u64 = abi::OPTEE_SMC_RETURN_OK as u64;
    const FORBIDDEN_MEMREF: Expect = Expect::Refused {
        smc: &[],
        teec: &[
            abi::TEEC_ERROR_BAD_PARAMETERS,
            abi::TEEC_ERROR_OUT_OF_MEMORY,
        ],
        breach: Severity::Escape,
    };

    fn msg(a0: u64, ret: u32, origin: u32) -> Outcome {
        Outcome {
            regs: [a0, 0, 0, 0],
            msg: Some(MsgArgHeader {
                ret,
                ret_origin: origin,
                ..Default::default()
            }),
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            share: 2,
            parked: 0,
        }
    }

    fn severity(v: Verdict) -> Option<Severity> {
        match v {
            Verdict::Pass => None,
            Verdict::Fail(s, _) => Some(s),
        }
    }

    #[test]
    fn a_forbidden_memref_refused_by_the_mediator_passes() {
        let out = msg(OK, abi::TEEC_ERROR_BAD_PARAMETERS, ORIGIN_COMMS);
        assert_eq!(check(&FORBIDDEN_MEMREF, &ctx(), &out), Verdict::Pass);
        let out = msg(OK, abi::TEEC_ERROR_OUT_OF_MEMORY, ORIGIN_COMMS);
        assert_eq!(check(&FORBIDDEN_MEMREF, &ctx(), &out), Verdict::Pass);
    }

    #[test]
    fn success_on_a_forbidden_address_is_an_escape() {
        let ok = msg(OK, abi::TEEC_SUCCESS, ORIGIN_TEE);
        assert_eq!(
            severity(check(&FORBIDDEN_MEMREF, &ctx(), &ok)),
            Some(Severity::Escape)
        );
        // The PTA answered: OP-TEE mapped the memref, whatever the result code says.
        let pta = msg(OK, abi::TEEC_ERROR_BAD_PARAMETERS, ORIGIN_TA);
        assert_eq!(
            severity(check(&FORBIDDEN_MEMREF, &ctx(), &pta)),
            Some(Severity::Escape)
        );
        let bad_arg = Expect::Refused {
            smc: &[abi::OPTEE_SMC_RETURN_EBADADDR],
            teec: &[],
            breach: Severity::Escape,
        };
        let parked = Outcome {
            regs: [
                u64::from(abi::rpc_val(abi::OPTEE_SMC_RPC_FUNC_ALLOC)),
                160,
                0,
                1,
            ],
            msg: None,
        };
        assert_eq!(
            severity(check(&bad_arg, &ctx(), &parked)),
            Some(Severity::Escape)
        );
        let ebadaddr = Outcome {
            regs: [u64::from(abi::OPTEE_SMC_RETURN_EBADADDR), 0, 0, 0],
            msg: None,
        };
        assert_eq!(check(&bad_arg, &ctx(), &ebadaddr), Verdict::Pass);
    }

    #[test]
    fn a_wrong_error_code_is_unexpected_not_an_escape() {
        let out = Outcome {
            regs: [u64::from(abi::OPTEE_SMC_RETURN_EBADCMD), 0, 0, 0],
            msg: None,
        };
        assert_eq!(
            severity(check(&FORBIDDEN_MEMREF, &ctx(), &out)),
            Some(Severity::Unexpected)
        );
        let other = msg(OK, abi::TEEC_ERROR_COMMUNICATION, ORIGIN_COMMS);
        assert_eq!(
            severity(check(&FORBIDDEN_MEMREF, &ctx(), &other)),
            Some(Severity::Unexpected)
        );
    }

    #[test]
    fn values_and_capabilities() {
        let uid = Outcome {
            regs: abi::OPTEE_MSG_UID.map(u64::from),
            msg: None,
        };
        assert_eq!(check(&Expect::Uid, &ctx(), &uid), Verdict::Pass);
        assert!(check(&Expect::OsUuid, &ctx(), &uid) != Verdict::Pass);
        let caps = |c: u64| Outcome {
            regs: [OK, c, 0, 4],
            msg: None,
        };
        let good = abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM | abi::OPTEE_SMC_SEC_CAP_RPC_ARG;
        assert_eq!(check(&Expect::Caps, &ctx(), &caps(good)), Verdict::Pass);
        let shown = good | abi::OPTEE_SMC_SEC_CAP_HAVE_RESERVED_SHM;
        assert!(check(&Expect::Caps, &ctx(), &caps(shown)) != Verdict::Pass);
        let static_shm = Outcome {
            regs: [OK, 0x4200_0000, 0x20_0000, 1],
            msg: None,
        };
        assert_eq!(
            severity(check(&Expect::ShmConfig, &ctx(), &static_shm)),
            Some(Severity::Escape)
        );
        let vm = Outcome {
            regs: [OK, 0, 0, 0],
            msg: None,
        };
        assert_eq!(
            severity(check(&Expect::HypervisorOnly, &ctx(), &vm)),
            Some(Severity::Escape)
        );
    }

    #[test]
    fn threads_park_within_the_share_and_may_be_refused_beyond_it() {
        let rpc = Outcome {
            regs: [
                u64::from(abi::rpc_val(abi::OPTEE_SMC_RPC_FUNC_ALLOC)),
                160,
                0,
                7,
            ],
            msg: None,
        };
        let limit = Outcome {
            regs: [u64::from(abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT), 0, 0, 0],
            msg: None,
        };
        let within = Ctx {
            share: 2,
            parked: 1,
        };
        let full = Ctx {
            share: 2,
            parked: 2,
        };
        assert_eq!(check(&Expect::Parks, &within, &rpc), Verdict::Pass);
        assert!(check(&Expect::Parks, &within, &limit) != Verdict::Pass);
        assert_eq!(check(&Expect::Parks, &full, &limit), Verdict::Pass);
        // Beyond the share a free thread may still be taken.
        assert_eq!(check(&Expect::Parks, &full, &rpc), Verdict::Pass);
        assert_eq!(check(&Expect::ThreadLimit, &full, &limit), Verdict::Pass);
        assert!(check(&Expect::ThreadLimit, &full, &rpc) != Verdict::Pass);
        assert_eq!(check(&Expect::Fails, &full, &limit), Verdict::Pass);
        assert!(check(&Expect::Fails, &within, &limit) != Verdict::Pass);
    }

    #[test]
    fn reaching_the_ta_and_success() {
        let pta = msg(OK, abi::TEEC_ERROR_BAD_PARAMETERS, ORIGIN_TA);
        assert_eq!(check(&Expect::Reaches, &ctx(), &pta), Verdict::Pass);
        let cut = msg(OK, abi::TEEC_ERROR_OUT_OF_MEMORY, ORIGIN_COMMS);
        assert!(check(&Expect::Reaches, &ctx(), &cut) != Verdict::Pass);
        assert!(check(&Expect::Success, &ctx(), &pta) != Verdict::Pass);
        assert_eq!(check(&Expect::Fails, &ctx(), &pta), Verdict::Pass);
        assert_eq!(
            check(&Expect::Success, &ctx(), &msg(OK, 0, ORIGIN_TEE)),
            Verdict::Pass
        );
    }
}
