// SPDX-License-Identifier: MIT OR Apache-2.0
//! Trace hooks: one record per trapped SMC (`--trace smc`), and each OP-TEE message
//! decoded, with every page of every buffer as IPA → PA (`--trace smc=msg`).
//!
//! The mediator is generic over `Trace`; `NoTrace` has `ENABLED = false`, so every
//! `if T::ENABLED { .. }` guard and the record it would build compile away when tracing is
//! off. With a real tracer, `smc_on` and `msg_on` are asked first, so a tracer switched off
//! at run time costs one check per trap, and no record is built. A guest fault is reported in the record, not logged here: rate limiting is the
//! hypervisor's job (a guest must never be able to flood the log).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::abi::{self, MsgArgHeader, MsgParam, ParamKind};
use crate::error::Fault;
use crate::ports::{Ipa, PhysAddr, VmId};

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

/// Which way a decoded message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgDir {
    /// A guest's call, as the mediator hands it to OP-TEE.
    Call,
    /// OP-TEE's answer to a call, as the guest gets it back.
    Return,
    /// An RPC request of OP-TEE's, as the guest gets it.
    Rpc,
    /// The guest's answer to an RPC request, as OP-TEE gets it.
    RpcAnswer,
}

/// One parameter of a decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamRecord<'a> {
    /// As the guest has it (IPAs).
    pub guest: MsgParam,
    /// As OP-TEE has it (the rebuilt page list's PA, cookies, values).
    pub optee: MsgParam,
    /// For a memref with a page list: each page, guest IPA → the PA OP-TEE uses.
    pub pages: &'a [(Ipa, PhysAddr)],
}

/// One OP-TEE message, decoded (`--trace smc=msg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgRecord<'a> {
    /// The VM whose message it is.
    pub vm: VmId,
    /// The mediator's handle of the call it belongs to (what the guest resumes).
    pub call: u32,
    /// Which way it goes.
    pub dir: MsgDir,
    /// The header (`cmd` is an `OPTEE_MSG_CMD_*` for calls and returns, an
    /// `OPTEE_RPC_CMD_*` for RPCs and their answers).
    pub header: MsgArgHeader,
    /// The parameters.
    pub params: &'a [ParamRecord<'a>],
}

/// Receives one record per trapped SMC, and, if it asks for them, the decoded messages.
pub trait Trace {
    /// False makes every trace site dead code.
    const ENABLED: bool;
    /// Is the per-SMC record wanted now? Asked before it is built.
    fn smc_on(&self) -> bool {
        true
    }
    /// Called once per trapped SMC, after the result is known, with no mediator lock held
    /// (several CPUs may call it at once).
    fn smc(&self, record: &SmcRecord);
    /// Are decoded messages wanted now? Asked before one is built (off by default).
    fn msg_on(&self) -> bool {
        false
    }
    /// Called for each message of a call or an RPC, under the VM's mediator lock (the
    /// record borrows the call's state): a teaching view, which slows that VM's other
    /// vCPUs while it is on.
    fn msg(&self, _record: &MsgRecord<'_>) {}
}

/// Tracing off.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrace;

impl Trace for NoTrace {
    const ENABLED: bool = false;
    #[inline(always)]
    fn smc(&self, _record: &SmcRecord) {}
}

/// The lines `--trace smc=msg` prints for one decoded message: a header line, then one per
/// parameter, then one per page of a page list (IPA → PA). Pure, so the format is tested
/// on the host; the hypervisor prefixes and prints them.
pub fn msg_lines(r: &MsgRecord<'_>) -> Vec<String> {
    let who = format!("d{} call {}", r.vm.0, r.call);
    let h = &r.header;
    let rpc = matches!(r.dir, MsgDir::Rpc | MsgDir::RpcAnswer);
    let cmd = if rpc {
        abi::rpc_cmd_name(h.cmd)
    } else {
        abi::msg_cmd_name(h.cmd)
    };
    let mut out = Vec::new();
    out.push(match r.dir {
        MsgDir::Call => format!(
            "{who} -> OP-TEE: {cmd} session {:#x} func {:#x} cancel_id {:#x}, {} params",
            h.session,
            h.func,
            h.cancel_id,
            r.params.len()
        ),
        MsgDir::Return => format!(
            "{who} <- OP-TEE: {cmd} ret {:#x} origin {} session {:#x}",
            h.ret, h.ret_origin, h.session
        ),
        MsgDir::Rpc => format!("{who} RPC from OP-TEE: {cmd}, {} params", r.params.len()),
        MsgDir::RpcAnswer => format!(
            "{who} RPC answer to OP-TEE: {cmd} ret {:#x} origin {}",
            h.ret, h.ret_origin
        ),
    });
    for (i, p) in r.params.iter().enumerate() {
        // What the guest sees, and where OP-TEE's view differs, that too.
        let g = &p.guest;
        let o = &p.optee;
        let ty = abi::attr_type_name(g.attr);
        let meta = if g.attr & abi::OPTEE_MSG_ATTR_META != 0 {
            " META"
        } else {
            ""
        };
        out.push(match g.kind() {
            Some(ParamKind::Value { .. }) | Some(ParamKind::None) | None => format!(
                "{who}   [{i}] {ty}{meta} a {:#x} b {:#x} c {:#x}",
                g.u0, g.u1, g.u2
            ),
            Some(ParamKind::Rmem { .. }) => format!(
                "{who}   [{i}] {ty} shm cookie {:#x} offset {:#x} size {}",
                g.u2, g.u0, g.u1
            ),
            Some(ParamKind::Tmem { .. }) if g.is_noncontig() => format!(
                "{who}   [{i}] {ty} size {} shm_ref {:#x}: page list at ipa:{:#x} \
                 (offset {:#x}) -> pa:{:#x}, {} pages",
                g.u1,
                g.u2,
                g.u0 & !0xfff,
                g.u0 & 0xfff,
                o.u0 & !0xfff,
                p.pages.len()
            ),
            Some(ParamKind::Tmem { .. }) => {
                format!("{who}   [{i}] {ty} size {} (NULL buffer)", g.u1)
            }
        });
        for (k, (ipa, pa)) in p.pages.iter().enumerate() {
            out.push(format!("{who}       page {k}: {ipa:?} -> {pa:?}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_call_prints_its_command_its_parameters_and_each_page() {
        let pages = [
            (Ipa(0x4410_0000), PhysAddr(0x8a23_1000)),
            (Ipa(0x4410_1000), PhysAddr(0x8a9f_0000)),
        ];
        let params = [
            ParamRecord {
                guest: MsgParam {
                    attr: abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
                    u0: 1,
                    u1: 2,
                    u2: 3,
                },
                optee: MsgParam::default(),
                pages: &[],
            },
            ParamRecord {
                guest: MsgParam {
                    attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
                    u0: 0x4420_0123,
                    u1: 8000,
                    u2: 0xabc,
                },
                optee: MsgParam {
                    attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
                    u0: 0x6a00_3123,
                    u1: 8000,
                    u2: 0xabc,
                },
                pages: &pages,
            },
        ];
        let r = MsgRecord {
            vm: VmId(0),
            call: 7,
            dir: MsgDir::Call,
            header: MsgArgHeader {
                cmd: abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
                func: 0x10,
                session: 0x2,
                ..Default::default()
            },
            params: &params,
        };
        assert_eq!(
            msg_lines(&r),
            vec![
                "d0 call 7 -> OP-TEE: INVOKE_COMMAND session 0x2 func 0x10 cancel_id 0x0, 2 params",
                "d0 call 7   [0] VALUE_INPUT a 0x1 b 0x2 c 0x3",
                "d0 call 7   [1] TMEM_INOUT size 8000 shm_ref 0xabc: page list at \
                 ipa:0x44200000 (offset 0x123) -> pa:0x6a003000, 2 pages",
                "d0 call 7       page 0: ipa:0x44100000 -> pa:0x8a231000",
                "d0 call 7       page 1: ipa:0x44101000 -> pa:0x8a9f0000",
            ]
        );
    }

    #[test]
    fn rpcs_are_named_by_their_rpc_command() {
        let r = MsgRecord {
            vm: VmId(1),
            call: 0,
            dir: MsgDir::Rpc,
            header: MsgArgHeader {
                cmd: abi::OPTEE_RPC_CMD_SHM_ALLOC,
                ..Default::default()
            },
            params: &[],
        };
        assert_eq!(
            msg_lines(&r),
            vec!["d1 call 0 RPC from OP-TEE: SHM_ALLOC, 0 params"]
        );
        let r = MsgRecord {
            dir: MsgDir::Return,
            header: MsgArgHeader {
                cmd: abi::OPTEE_MSG_CMD_OPEN_SESSION,
                ret: 0xffff_0006,
                ret_origin: 4,
                session: 9,
                ..Default::default()
            },
            ..r
        };
        assert_eq!(
            msg_lines(&r),
            vec!["d1 call 0 <- OP-TEE: OPEN_SESSION ret 0xffff0006 origin 4 session 0x9"]
        );
    }
}
