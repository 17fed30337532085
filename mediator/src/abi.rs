// SPDX-License-Identifier: MIT OR Apache-2.0
//! The OP-TEE SMC and message ABI, as constants and byte-slice codecs.
//!
//! Facts come from OP-TEE's `optee_smc.h`, `optee_msg.h` and `optee_rpc_cmd.h` (mirrored in
//! Linux's `drivers/tee/optee/`). Everything a guest or OP-TEE hands over arrives as bytes
//! and is decoded here field by field with explicit little-endian loads: no `transmute`, no
//! `repr(C)` overlays, so a short or hostile buffer is an error value, never UB.
//!
//! ```text
//!  struct optee_msg_arg (32 bytes)         struct optee_msg_param (32 bytes)
//!  +0  cmd        +4  func                 +0  attr (u64)
//!  +8  session    +12 cancel_id            +8  u0: tmem.buf_ptr | rmem.offs | value.a
//!  +16 pad        +20 ret                  +16 u1: tmem.size    | rmem.size | value.b
//!  +24 ret_origin +28 num_params           +24 u2: tmem.shm_ref | rmem.shm_ref | value.c
//!  +32 params[num_params]
//! ```

use alloc::vec::Vec;

// ---------------------------------------------------------------------------------------
// SMC function IDs (SMC32, owner Trusted OS = 50, or Trusted OS API = 63 for the SMCCC
// generic queries).
// ---------------------------------------------------------------------------------------

/// SMCCC fast-call bit.
pub const SMC_FAST_CALL: u32 = 0x8000_0000;
/// SMCCC 64-bit calling convention bit (OP-TEE uses SMC32 only).
pub const SMC_64: u32 = 0x4000_0000;
const OWNER_TRUSTED_OS: u32 = 50 << 24;
const OWNER_TRUSTED_OS_API: u32 = 63 << 24;

const fn fast(func: u32) -> u32 {
    SMC_FAST_CALL | OWNER_TRUSTED_OS | func
}
const fn std(func: u32) -> u32 {
    OWNER_TRUSTED_OS | func
}

/// SMCCC "number of calls" query.
pub const OPTEE_SMC_CALLS_COUNT: u32 = SMC_FAST_CALL | OWNER_TRUSTED_OS_API | 0xFF00;
/// SMCCC UID query: answers `OPTEE_MSG_UID` in a0..a3.
pub const OPTEE_SMC_CALLS_UID: u32 = SMC_FAST_CALL | OWNER_TRUSTED_OS_API | 0xFF01;
/// SMCCC revision query: answers major in a0, minor in a1.
pub const OPTEE_SMC_CALLS_REVISION: u32 = SMC_FAST_CALL | OWNER_TRUSTED_OS_API | 0xFF03;
/// UUID of the trusted OS (not of the API).
pub const OPTEE_SMC_GET_OS_UUID: u32 = fast(0);
/// Revision of the trusted OS; optional build id in a2.
pub const OPTEE_SMC_GET_OS_REVISION: u32 = fast(1);
/// Resume a call suspended by an RPC (yielding call).
pub const OPTEE_SMC_RETURN_FROM_RPC: u32 = std(3);
/// Yielding call with a physical pointer to `optee_msg_arg` in a1/a2.
pub const OPTEE_SMC_CALL_WITH_ARG: u32 = std(4);
/// Static (reserved) shared-memory configuration.
pub const OPTEE_SMC_GET_SHM_CONFIG: u32 = fast(7);
/// L2 cache-controller mutex configuration (arm32 platforms).
pub const OPTEE_SMC_L2CC_MUTEX: u32 = fast(8);
/// Capability exchange: normal-world caps in a1, secure-world caps back in a1.
pub const OPTEE_SMC_EXCHANGE_CAPABILITIES: u32 = fast(9);
/// Disable the shared-memory cache; returns one cached cookie per call.
pub const OPTEE_SMC_DISABLE_SHM_CACHE: u32 = fast(10);
/// Enable the shared-memory cache.
pub const OPTEE_SMC_ENABLE_SHM_CACHE: u32 = fast(11);
/// Release a secondary core (arm32 boot flow).
pub const OPTEE_SMC_BOOT_SECONDARY: u32 = fast(12);
/// Hypervisor only (a7 = 0): a VM with client id a1 was created.
pub const OPTEE_SMC_VM_CREATED: u32 = fast(13);
/// Hypervisor only (a7 = 0): the VM with client id a1 was destroyed.
pub const OPTEE_SMC_VM_DESTROYED: u32 = fast(14);
/// Number of OP-TEE threads, in a1.
pub const OPTEE_SMC_GET_THREAD_COUNT: u32 = fast(15);
/// Normal world can receive asynchronous notifications.
pub const OPTEE_SMC_ENABLE_ASYNC_NOTIF: u32 = fast(16);
/// Fetch one pending asynchronous notification value.
pub const OPTEE_SMC_GET_ASYNC_NOTIF_VALUE: u32 = fast(17);
/// Like CALL_WITH_ARG, with the RPC argument struct placed right after the argument.
pub const OPTEE_SMC_CALL_WITH_RPC_ARG: u32 = std(18);
/// Like CALL_WITH_RPC_ARG, but the argument lives in registered shared memory
/// (a1/a2 = cookie, a3 = offset).
pub const OPTEE_SMC_CALL_WITH_REGD_ARG: u32 = std(19);

// ---------------------------------------------------------------------------------------
// Return codes in a0.
// ---------------------------------------------------------------------------------------

/// Success.
pub const OPTEE_SMC_RETURN_OK: u32 = 0x0;
/// No free OP-TEE thread (or this VM used its share): try again later.
pub const OPTEE_SMC_RETURN_ETHREAD_LIMIT: u32 = 0x1;
/// Secure world not idle.
pub const OPTEE_SMC_RETURN_EBUSY: u32 = 0x2;
/// Resume failed: the resume information was corrupt.
pub const OPTEE_SMC_RETURN_ERESUME: u32 = 0x3;
/// Bad physical pointer to `optee_msg_arg`.
pub const OPTEE_SMC_RETURN_EBADADDR: u32 = 0x4;
/// Bad or unknown command.
pub const OPTEE_SMC_RETURN_EBADCMD: u32 = 0x5;
/// Out of memory.
pub const OPTEE_SMC_RETURN_ENOMEM: u32 = 0x6;
/// Not available.
pub const OPTEE_SMC_RETURN_ENOTAVAIL: u32 = 0x7;
/// Unknown function; equal to SMCCC's `NOT_SUPPORTED` (-1) in w0.
pub const OPTEE_SMC_RETURN_UNKNOWN_FUNCTION: u32 = 0xFFFF_FFFF;

/// a0 values `0xFFFF_xxxx` (except UNKNOWN_FUNCTION) are RPC requests.
pub const OPTEE_SMC_RETURN_RPC_PREFIX_MASK: u32 = 0xFFFF_0000;
/// The RPC prefix.
pub const OPTEE_SMC_RETURN_RPC_PREFIX: u32 = 0xFFFF_0000;
/// RPC: allocate `a1` bytes for an RPC argument struct.
pub const OPTEE_SMC_RPC_FUNC_ALLOC: u32 = 0;
/// RPC: free the RPC argument struct with cookie a1/a2.
pub const OPTEE_SMC_RPC_FUNC_FREE: u32 = 2;
/// RPC: a normal-world interrupt is pending; resume when it is handled.
pub const OPTEE_SMC_RPC_FUNC_FOREIGN_INTR: u32 = 4;
/// RPC: run the command in the RPC argument struct with cookie a1/a2.
pub const OPTEE_SMC_RPC_FUNC_CMD: u32 = 5;

/// Is `a0` an RPC request?
pub const fn is_rpc(a0: u32) -> bool {
    a0 != OPTEE_SMC_RETURN_UNKNOWN_FUNCTION
        && a0 & OPTEE_SMC_RETURN_RPC_PREFIX_MASK == OPTEE_SMC_RETURN_RPC_PREFIX
}

/// The a0 value of RPC function `func`.
pub const fn rpc_val(func: u32) -> u32 {
    OPTEE_SMC_RETURN_RPC_PREFIX | func
}

// ---------------------------------------------------------------------------------------
// Capabilities (EXCHANGE_CAPABILITIES).
// ---------------------------------------------------------------------------------------

/// Normal world is uniprocessor (changes OP-TEE's shareability of shared memory).
pub const OPTEE_SMC_NSEC_CAP_UNIPROCESSOR: u64 = 1 << 0;
/// Secure world has a reserved (static) shared-memory carve-out.
pub const OPTEE_SMC_SEC_CAP_HAVE_RESERVED_SHM: u64 = 1 << 0;
/// Secure world accepts temporary, unregistered shared memory.
pub const OPTEE_SMC_SEC_CAP_UNREGISTERED_SHM: u64 = 1 << 1;
/// Secure world supports REGISTER_SHM/UNREGISTER_SHM over any non-secure RAM.
pub const OPTEE_SMC_SEC_CAP_DYNAMIC_SHM: u64 = 1 << 2;
/// Secure world is built with (NS-)virtualization support.
pub const OPTEE_SMC_SEC_CAP_VIRTUALIZATION: u64 = 1 << 3;
/// Secure world accepts NULL memory references.
pub const OPTEE_SMC_SEC_CAP_MEMREF_NULL: u64 = 1 << 4;
/// Secure world supports asynchronous notifications.
pub const OPTEE_SMC_SEC_CAP_ASYNC_NOTIF: u64 = 1 << 5;
/// Secure world supports CALL_WITH_RPC_ARG / CALL_WITH_REGD_ARG; a3 = RPC param count.
pub const OPTEE_SMC_SEC_CAP_RPC_ARG: u64 = 1 << 6;

// ---------------------------------------------------------------------------------------
// UIDs and revision.
// ---------------------------------------------------------------------------------------

/// `OPTEE_MSG_UID` 384fb3e0-e7f8-11e3-af63-0002a5d5c51b as returned in a0..a3.
pub const OPTEE_MSG_UID: [u32; 4] = [0x384f_b3e0, 0xe7f8_11e3, 0xaf63_0002, 0xa5d5_c51b];
/// `OPTEE_MSG_OS_OPTEE_UUID` 486178e0-e7f8-11e3-bc5e-0002a5d5c51b as returned in a0..a3.
pub const OPTEE_OS_UUID: [u32; 4] = [0x4861_78e0, 0xe7f8_11e3, 0xbc5e_0002, 0xa5d5_c51b];
/// Message protocol major revision this mediator speaks.
pub const OPTEE_MSG_REVISION_MAJOR: u32 = 2;

// ---------------------------------------------------------------------------------------
// optee_msg_arg / optee_msg_param.
// ---------------------------------------------------------------------------------------

/// Size of the `optee_msg_arg` header.
pub const MSG_ARG_HEADER_SIZE: usize = 32;
/// Size of one `optee_msg_param`.
pub const MSG_PARAM_SIZE: usize = 32;
/// Page size of non-contiguous page lists (always 4 KiB, whatever the guest's granule).
pub const NONCONTIG_PAGE_SIZE: u64 = 4096;
/// Page-list entries per list page: the last u64 points to the next list page.
pub const PAGELIST_ENTRIES_PER_PAGE: usize = (NONCONTIG_PAGE_SIZE as usize / 8) - 1;

/// `OPTEE_MSG_GET_ARG_SIZE(num_params)`.
pub const fn arg_size(num_params: usize) -> usize {
    MSG_ARG_HEADER_SIZE + num_params * MSG_PARAM_SIZE
}

/// Parameter type: unused.
pub const OPTEE_MSG_ATTR_TYPE_NONE: u64 = 0x0;
/// Value in.
pub const OPTEE_MSG_ATTR_TYPE_VALUE_INPUT: u64 = 0x1;
/// Value out.
pub const OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT: u64 = 0x2;
/// Value in/out.
pub const OPTEE_MSG_ATTR_TYPE_VALUE_INOUT: u64 = 0x3;
/// Registered memory reference in (cookie + offset).
pub const OPTEE_MSG_ATTR_TYPE_RMEM_INPUT: u64 = 0x5;
/// Registered memory reference out.
pub const OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT: u64 = 0x6;
/// Registered memory reference in/out.
pub const OPTEE_MSG_ATTR_TYPE_RMEM_INOUT: u64 = 0x7;
/// FF-A memory reference in: same code as RMEM; only meaningful under the FF-A ABI, which
/// this SMC-ABI mediator never sees, so FMEM is decoded as RMEM.
pub const OPTEE_MSG_ATTR_TYPE_FMEM_INPUT: u64 = OPTEE_MSG_ATTR_TYPE_RMEM_INPUT;
/// FF-A memory reference out (alias of RMEM_OUTPUT).
pub const OPTEE_MSG_ATTR_TYPE_FMEM_OUTPUT: u64 = OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT;
/// FF-A memory reference in/out (alias of RMEM_INOUT).
pub const OPTEE_MSG_ATTR_TYPE_FMEM_INOUT: u64 = OPTEE_MSG_ATTR_TYPE_RMEM_INOUT;
/// Temporary memory reference in (physical pointer or page list).
pub const OPTEE_MSG_ATTR_TYPE_TMEM_INPUT: u64 = 0x9;
/// Temporary memory reference out.
pub const OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT: u64 = 0xa;
/// Temporary memory reference in/out.
pub const OPTEE_MSG_ATTR_TYPE_TMEM_INOUT: u64 = 0xb;
/// Bits `[7:0]` of `attr`: the parameter type.
pub const OPTEE_MSG_ATTR_TYPE_MASK: u64 = 0xff;
/// Meta parameter (OPEN_SESSION's UUID and login values).
pub const OPTEE_MSG_ATTR_META: u64 = 1 << 8;
/// TMEM `buf_ptr` points to a page list, low 12 bits = offset into the first page.
pub const OPTEE_MSG_ATTR_NONCONTIG: u64 = 1 << 9;
/// Bits `[18:16]`: cache attributes; only `OPTEE_MSG_ATTR_CACHE_PREDEFINED` (0) is defined.
pub const OPTEE_MSG_ATTR_CACHE_MASK: u64 = 0x7 << 16;

/// Open a session to a TA.
pub const OPTEE_MSG_CMD_OPEN_SESSION: u32 = 0;
/// Invoke a command in a session.
pub const OPTEE_MSG_CMD_INVOKE_COMMAND: u32 = 1;
/// Close a session.
pub const OPTEE_MSG_CMD_CLOSE_SESSION: u32 = 2;
/// Cancel a pending request.
pub const OPTEE_MSG_CMD_CANCEL: u32 = 3;
/// Register shared memory (param 0: TMEM | NONCONTIG with the cookie in `shm_ref`).
pub const OPTEE_MSG_CMD_REGISTER_SHM: u32 = 4;
/// Unregister shared memory (param 0: RMEM_INPUT with the cookie in `shm_ref`).
pub const OPTEE_MSG_CMD_UNREGISTER_SHM: u32 = 5;
/// Async-notification bottom half.
pub const OPTEE_MSG_CMD_DO_BOTTOM_HALF: u32 = 6;
/// Stop async notifications.
pub const OPTEE_MSG_CMD_STOP_ASYNC_NOTIF: u32 = 7;

/// GlobalPlatform result: success.
pub const TEEC_SUCCESS: u32 = 0;
/// GlobalPlatform result: generic error.
pub const TEEC_ERROR_GENERIC: u32 = 0xFFFF_0000;
/// GlobalPlatform result: bad parameters.
pub const TEEC_ERROR_BAD_PARAMETERS: u32 = 0xFFFF_0006;
/// GlobalPlatform result: out of memory.
pub const TEEC_ERROR_OUT_OF_MEMORY: u32 = 0xFFFF_000C;
/// TEEC_ERROR_BUSY: the resource is in use.
pub const TEEC_ERROR_BUSY: u32 = 0xFFFF_000D;
/// GlobalPlatform result: communication with the remote party failed (here: the mediator
/// cut the call).
pub const TEEC_ERROR_COMMUNICATION: u32 = 0xFFFF_000E;
/// GlobalPlatform result: the target (here: the VM answering the RPC) is dead.
pub const TEEC_ERROR_TARGET_DEAD: u32 = 0xFFFF_3024;
/// GlobalPlatform origin: the communication stack (here: the mediator).
pub const TEEC_ORIGIN_COMMS: u32 = 2;

// ---------------------------------------------------------------------------------------
// RPC commands (optee_rpc_cmd.h), carried in an RPC `optee_msg_arg.cmd`.
// ---------------------------------------------------------------------------------------

/// Load a TA.
pub const OPTEE_RPC_CMD_LOAD_TA: u32 = 0;
/// RPMB access.
pub const OPTEE_RPC_CMD_RPMB: u32 = 1;
/// REE file system.
pub const OPTEE_RPC_CMD_FS: u32 = 2;
/// REE time.
pub const OPTEE_RPC_CMD_GET_TIME: u32 = 3;
/// Notification / wait queue.
pub const OPTEE_RPC_CMD_NOTIFICATION: u32 = 4;
/// Suspend (sleep).
pub const OPTEE_RPC_CMD_SUSPEND: u32 = 5;
/// Allocate shared memory: `value[0].a` = type, `.b` = size; answer TMEM_OUTPUT in param 0.
pub const OPTEE_RPC_CMD_SHM_ALLOC: u32 = 6;
/// Free shared memory: `value[0].a` = type, `.b` = cookie.
pub const OPTEE_RPC_CMD_SHM_FREE: u32 = 7;
/// Profiling data.
pub const OPTEE_RPC_CMD_GPROF: u32 = 9;
/// Sockets.
pub const OPTEE_RPC_CMD_SOCKET: u32 = 10;
/// Ftrace.
pub const OPTEE_RPC_CMD_FTRACE: u32 = 11;
/// Supplicant plugin.
pub const OPTEE_RPC_CMD_PLUGIN: u32 = 12;
/// Benchmark registration.
pub const OPTEE_RPC_CMD_BENCH_REG: u32 = 20;
/// I2C transfer.
pub const OPTEE_RPC_CMD_I2C_TRANSFER: u32 = 21;
/// Shared memory for the user-space supplicant.
pub const OPTEE_RPC_SHM_TYPE_APPL: u64 = 0;
/// Shared memory for the kernel.
pub const OPTEE_RPC_SHM_TYPE_KERNEL: u64 = 1;
/// Shared memory shared with user space and the kernel.
pub const OPTEE_RPC_SHM_TYPE_GLOBAL: u64 = 2;

/// The `optee_msg_arg` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgArgHeader {
    /// Command (`OPTEE_MSG_CMD_*` or `OPTEE_RPC_CMD_*`).
    pub cmd: u32,
    /// TA function for INVOKE_COMMAND.
    pub func: u32,
    /// Session id.
    pub session: u32,
    /// Cancellation id.
    pub cancel_id: u32,
    /// Padding (must be zero on the way in; forwarded as zero).
    pub pad: u32,
    /// Result code.
    pub ret: u32,
    /// Origin of the result code.
    pub ret_origin: u32,
    /// Number of parameters that follow.
    pub num_params: u32,
}

/// One `optee_msg_param`: the attribute word and the three union words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgParam {
    /// Type and flags.
    pub attr: u64,
    /// tmem.buf_ptr, rmem.offs or value.a.
    pub u0: u64,
    /// tmem.size, rmem.size or value.b.
    pub u1: u64,
    /// tmem.shm_ref, rmem.shm_ref or value.c.
    pub u2: u64,
}

/// A decoded parameter type (bits `[7:0]` of `attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Unused slot.
    None,
    /// Value parameter; `output` if OP-TEE may write it.
    Value {
        /// OP-TEE writes a/b/c.
        output: bool,
    },
    /// Registered-memory reference.
    Rmem {
        /// OP-TEE reads the buffer.
        input: bool,
        /// OP-TEE writes the buffer and its size.
        output: bool,
    },
    /// Temporary-memory reference.
    Tmem {
        /// OP-TEE reads the buffer.
        input: bool,
        /// OP-TEE writes the buffer and its size.
        output: bool,
    },
}

/// Why a byte buffer did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The slice is shorter than the structure.
    Short,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

const _: () = assert!(MSG_ARG_HEADER_SIZE == 8 * 4);
const _: () = assert!(MSG_PARAM_SIZE == 4 * 8);
const _: () = assert!(PAGELIST_ENTRIES_PER_PAGE == 511);

fn le32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Load a little-endian u64 at `off` (caller guarantees bounds).
pub fn read_u64(b: &[u8], off: usize) -> u64 {
    le64(b, off)
}

/// Store a little-endian u64 at `off` (caller guarantees bounds).
pub fn write_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Combine the SMC32 register pair (upper in `hi`, lower in `lo`) into a u64. Only the low
/// 32 bits of each register count: the upper halves of x-registers are not part of an SMC32
/// call and a guest may leave garbage there.
pub const fn regpair(hi: u64, lo: u64) -> u64 {
    ((hi & 0xffff_ffff) << 32) | (lo & 0xffff_ffff)
}

/// Split a u64 into the SMC32 register pair `(upper, lower)`.
pub const fn split_regpair(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

impl MsgArgHeader {
    /// Decode from the first 32 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < MSG_ARG_HEADER_SIZE {
            return Err(DecodeError::Short);
        }
        Ok(Self {
            cmd: le32(b, 0),
            func: le32(b, 4),
            session: le32(b, 8),
            cancel_id: le32(b, 12),
            pad: le32(b, 16),
            ret: le32(b, 20),
            ret_origin: le32(b, 24),
            num_params: le32(b, 28),
        })
    }

    /// Encode into the first 32 bytes of `b`.
    pub fn write(&self, b: &mut [u8]) -> Result<(), DecodeError> {
        if b.len() < MSG_ARG_HEADER_SIZE {
            return Err(DecodeError::Short);
        }
        let words = [
            self.cmd,
            self.func,
            self.session,
            self.cancel_id,
            self.pad,
            self.ret,
            self.ret_origin,
            self.num_params,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        Ok(())
    }
}

/// Byte offset of `ret` in the header.
pub const ARG_OFFSET_RET: usize = 20;
/// Byte offset of `ret_origin` in the header.
pub const ARG_OFFSET_RET_ORIGIN: usize = 24;
/// Byte offset of `session` in the header.
pub const ARG_OFFSET_SESSION: usize = 8;

/// Byte offset of parameter `i` in an argument struct.
pub const fn param_offset(i: usize) -> usize {
    MSG_ARG_HEADER_SIZE + i * MSG_PARAM_SIZE
}

impl MsgParam {
    /// Decode from the first 32 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < MSG_PARAM_SIZE {
            return Err(DecodeError::Short);
        }
        Ok(Self {
            attr: le64(b, 0),
            u0: le64(b, 8),
            u1: le64(b, 16),
            u2: le64(b, 24),
        })
    }

    /// Encode into the first 32 bytes of `b`.
    pub fn write(&self, b: &mut [u8]) -> Result<(), DecodeError> {
        if b.len() < MSG_PARAM_SIZE {
            return Err(DecodeError::Short);
        }
        write_u64(b, 0, self.attr);
        write_u64(b, 8, self.u0);
        write_u64(b, 16, self.u1);
        write_u64(b, 24, self.u2);
        Ok(())
    }

    /// The parameter type, or `None` for an undefined type code.
    pub fn kind(&self) -> Option<ParamKind> {
        Some(match self.attr & OPTEE_MSG_ATTR_TYPE_MASK {
            OPTEE_MSG_ATTR_TYPE_NONE => ParamKind::None,
            OPTEE_MSG_ATTR_TYPE_VALUE_INPUT => ParamKind::Value { output: false },
            OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT | OPTEE_MSG_ATTR_TYPE_VALUE_INOUT => {
                ParamKind::Value { output: true }
            }
            t @ (OPTEE_MSG_ATTR_TYPE_RMEM_INPUT
            | OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT
            | OPTEE_MSG_ATTR_TYPE_RMEM_INOUT) => ParamKind::Rmem {
                input: t != OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT,
                output: t != OPTEE_MSG_ATTR_TYPE_RMEM_INPUT,
            },
            t @ (OPTEE_MSG_ATTR_TYPE_TMEM_INPUT
            | OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT
            | OPTEE_MSG_ATTR_TYPE_TMEM_INOUT) => ParamKind::Tmem {
                input: t != OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                output: t != OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
            },
            _ => return None,
        })
    }

    /// Is this the NONCONTIG (page-list) form?
    pub const fn is_noncontig(&self) -> bool {
        self.attr & OPTEE_MSG_ATTR_NONCONTIG != 0
    }
}

/// A whole argument struct: header plus `header.num_params` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MsgArg {
    /// The header.
    pub header: MsgArgHeader,
    /// The parameters (`header.num_params` of them).
    pub params: Vec<MsgParam>,
}

impl MsgArg {
    /// Decode a header and its parameters; `b` must hold all of them.
    pub fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        let header = MsgArgHeader::parse(b)?;
        let n = header.num_params as usize;
        let need = n
            .checked_mul(MSG_PARAM_SIZE)
            .and_then(|p| p.checked_add(MSG_ARG_HEADER_SIZE));
        if need.is_none_or(|need| b.len() < need) {
            return Err(DecodeError::Short);
        }
        let params = (0..n)
            .map(|i| MsgParam::parse(&b[param_offset(i)..]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { header, params })
    }

    /// Decode a header and exactly `n` parameters, whatever the header's `num_params`
    /// says (used when the count was fixed earlier and the buffer may have changed since).
    pub fn parse_n(b: &[u8], n: usize) -> Result<Self, DecodeError> {
        let mut header = MsgArgHeader::parse(b)?;
        if b.len() < arg_size(n) {
            return Err(DecodeError::Short);
        }
        header.num_params = n as u32;
        let params = (0..n)
            .map(|i| MsgParam::parse(&b[param_offset(i)..]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { header, params })
    }

    /// Encode into a fresh byte vector of exactly `arg_size(params.len())` bytes; the
    /// header's `num_params` is taken from `params`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = alloc::vec![0u8; arg_size(self.params.len())];
        // In bounds: the vector was sized from `params`.
        let _ = self.write_to(&mut b);
        b
    }

    /// Encode into the first `arg_size(params.len())` bytes of `b` (the header's
    /// `num_params` taken from `params`); returns that size.
    pub fn write_to(&self, b: &mut [u8]) -> Result<usize, DecodeError> {
        let size = arg_size(self.params.len());
        let b = b.get_mut(..size).ok_or(DecodeError::Short)?;
        let mut h = self.header;
        h.num_params = self.params.len() as u32;
        h.write(b)?;
        for (i, p) in self.params.iter().enumerate() {
            p.write(&mut b[param_offset(i)..])?;
        }
        Ok(size)
    }
}

/// The name of a message command (`OPTEE_MSG_CMD_*`), for traces (`"?"` if unknown).
pub const fn msg_cmd_name(cmd: u32) -> &'static str {
    match cmd {
        OPTEE_MSG_CMD_OPEN_SESSION => "OPEN_SESSION",
        OPTEE_MSG_CMD_INVOKE_COMMAND => "INVOKE_COMMAND",
        OPTEE_MSG_CMD_CLOSE_SESSION => "CLOSE_SESSION",
        OPTEE_MSG_CMD_CANCEL => "CANCEL",
        OPTEE_MSG_CMD_REGISTER_SHM => "REGISTER_SHM",
        OPTEE_MSG_CMD_UNREGISTER_SHM => "UNREGISTER_SHM",
        OPTEE_MSG_CMD_DO_BOTTOM_HALF => "DO_BOTTOM_HALF",
        OPTEE_MSG_CMD_STOP_ASYNC_NOTIF => "STOP_ASYNC_NOTIF",
        _ => "?",
    }
}

/// The name of an RPC command (`OPTEE_RPC_CMD_*`), for traces (`"?"` if unknown).
pub const fn rpc_cmd_name(cmd: u32) -> &'static str {
    match cmd {
        OPTEE_RPC_CMD_LOAD_TA => "LOAD_TA",
        OPTEE_RPC_CMD_RPMB => "RPMB",
        OPTEE_RPC_CMD_FS => "FS",
        OPTEE_RPC_CMD_GET_TIME => "GET_TIME",
        OPTEE_RPC_CMD_NOTIFICATION => "NOTIFICATION",
        OPTEE_RPC_CMD_SUSPEND => "SUSPEND",
        OPTEE_RPC_CMD_SHM_ALLOC => "SHM_ALLOC",
        OPTEE_RPC_CMD_SHM_FREE => "SHM_FREE",
        OPTEE_RPC_CMD_GPROF => "GPROF",
        OPTEE_RPC_CMD_SOCKET => "SOCKET",
        OPTEE_RPC_CMD_FTRACE => "FTRACE",
        OPTEE_RPC_CMD_PLUGIN => "PLUGIN",
        OPTEE_RPC_CMD_BENCH_REG => "BENCH_REG",
        OPTEE_RPC_CMD_I2C_TRANSFER => "I2C_TRANSFER",
        _ => "?",
    }
}

/// The name of a parameter's type (`attr`'s `OPTEE_MSG_ATTR_TYPE_*`), for traces.
pub const fn attr_type_name(attr: u64) -> &'static str {
    match attr & OPTEE_MSG_ATTR_TYPE_MASK {
        OPTEE_MSG_ATTR_TYPE_NONE => "NONE",
        OPTEE_MSG_ATTR_TYPE_VALUE_INPUT => "VALUE_INPUT",
        OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT => "VALUE_OUTPUT",
        OPTEE_MSG_ATTR_TYPE_VALUE_INOUT => "VALUE_INOUT",
        OPTEE_MSG_ATTR_TYPE_RMEM_INPUT => "RMEM_INPUT",
        OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT => "RMEM_OUTPUT",
        OPTEE_MSG_ATTR_TYPE_RMEM_INOUT => "RMEM_INOUT",
        OPTEE_MSG_ATTR_TYPE_TMEM_INPUT => "TMEM_INPUT",
        OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT => "TMEM_OUTPUT",
        OPTEE_MSG_ATTR_TYPE_TMEM_INOUT => "TMEM_INOUT",
        _ => "?",
    }
}

/// The OP-TEE name of an SMC function ID, for traces (`"?"` if unknown).
pub const fn function_name(fid: u32) -> &'static str {
    match fid {
        OPTEE_SMC_CALLS_COUNT => "CALLS_COUNT",
        OPTEE_SMC_CALLS_UID => "CALLS_UID",
        OPTEE_SMC_CALLS_REVISION => "CALLS_REVISION",
        OPTEE_SMC_GET_OS_UUID => "GET_OS_UUID",
        OPTEE_SMC_GET_OS_REVISION => "GET_OS_REVISION",
        OPTEE_SMC_RETURN_FROM_RPC => "RETURN_FROM_RPC",
        OPTEE_SMC_CALL_WITH_ARG => "CALL_WITH_ARG",
        OPTEE_SMC_GET_SHM_CONFIG => "GET_SHM_CONFIG",
        OPTEE_SMC_EXCHANGE_CAPABILITIES => "EXCHANGE_CAPABILITIES",
        OPTEE_SMC_DISABLE_SHM_CACHE => "DISABLE_SHM_CACHE",
        OPTEE_SMC_ENABLE_SHM_CACHE => "ENABLE_SHM_CACHE",
        OPTEE_SMC_BOOT_SECONDARY => "BOOT_SECONDARY",
        OPTEE_SMC_VM_CREATED => "VM_CREATED",
        OPTEE_SMC_VM_DESTROYED => "VM_DESTROYED",
        OPTEE_SMC_GET_THREAD_COUNT => "GET_THREAD_COUNT",
        OPTEE_SMC_ENABLE_ASYNC_NOTIF => "ENABLE_ASYNC_NOTIF",
        OPTEE_SMC_GET_ASYNC_NOTIF_VALUE => "GET_ASYNC_NOTIF_VALUE",
        OPTEE_SMC_CALL_WITH_RPC_ARG => "CALL_WITH_RPC_ARG",
        OPTEE_SMC_CALL_WITH_REGD_ARG => "CALL_WITH_REGD_ARG",
        _ => "?",
    }
}

/// The name of what OP-TEE returned in a0 for function `fid`, for traces: a return code or
/// an RPC request, or `"value"` for the calls whose a0 is data (UIDs, revisions, counts).
pub const fn return_name(fid: u32, a0: u32) -> &'static str {
    if matches!(
        fid,
        OPTEE_SMC_CALLS_COUNT
            | OPTEE_SMC_CALLS_UID
            | OPTEE_SMC_CALLS_REVISION
            | OPTEE_SMC_GET_OS_UUID
            | OPTEE_SMC_GET_OS_REVISION
    ) {
        return "value";
    }
    if a0 & OPTEE_SMC_RETURN_RPC_PREFIX_MASK == OPTEE_SMC_RETURN_RPC_PREFIX
        && a0 != OPTEE_SMC_RETURN_UNKNOWN_FUNCTION
    {
        return match a0 & !OPTEE_SMC_RETURN_RPC_PREFIX_MASK {
            OPTEE_SMC_RPC_FUNC_ALLOC => "RPC ALLOC",
            OPTEE_SMC_RPC_FUNC_FREE => "RPC FREE",
            OPTEE_SMC_RPC_FUNC_FOREIGN_INTR => "RPC FOREIGN_INTR",
            OPTEE_SMC_RPC_FUNC_CMD => "RPC CMD",
            _ => "RPC ?",
        };
    }
    match a0 {
        OPTEE_SMC_RETURN_OK => "OK",
        OPTEE_SMC_RETURN_ETHREAD_LIMIT => "ETHREAD_LIMIT",
        OPTEE_SMC_RETURN_EBUSY => "EBUSY",
        OPTEE_SMC_RETURN_ERESUME => "ERESUME",
        OPTEE_SMC_RETURN_EBADADDR => "EBADADDR",
        OPTEE_SMC_RETURN_EBADCMD => "EBADCMD",
        OPTEE_SMC_RETURN_ENOMEM => "ENOMEM",
        OPTEE_SMC_RETURN_ENOTAVAIL => "ENOTAVAIL",
        OPTEE_SMC_RETURN_UNKNOWN_FUNCTION => "UNKNOWN_FUNCTION",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_names() {
        assert_eq!(
            function_name(OPTEE_SMC_CALL_WITH_RPC_ARG),
            "CALL_WITH_RPC_ARG"
        );
        assert_eq!(function_name(OPTEE_SMC_CALLS_UID), "CALLS_UID");
        assert_eq!(function_name(0x1234), "?");
        assert_eq!(
            return_name(OPTEE_SMC_RETURN_FROM_RPC, 0xffff_0005),
            "RPC CMD"
        );
        assert_eq!(
            return_name(OPTEE_SMC_RETURN_FROM_RPC, 0xffff_0004),
            "RPC FOREIGN_INTR"
        );
        assert_eq!(
            return_name(OPTEE_SMC_CALL_WITH_ARG, OPTEE_SMC_RETURN_OK),
            "OK"
        );
        assert_eq!(
            return_name(0x1234, OPTEE_SMC_RETURN_UNKNOWN_FUNCTION),
            "UNKNOWN_FUNCTION"
        );
        assert_eq!(return_name(OPTEE_SMC_GET_OS_REVISION, 4), "value");
    }

    #[test]
    fn function_ids_match_the_headers() {
        assert_eq!(OPTEE_SMC_CALLS_COUNT, 0xBF00_FF00);
        assert_eq!(OPTEE_SMC_CALLS_UID, 0xBF00_FF01);
        assert_eq!(OPTEE_SMC_CALLS_REVISION, 0xBF00_FF03);
        assert_eq!(OPTEE_SMC_GET_OS_UUID, 0xB200_0000);
        assert_eq!(OPTEE_SMC_CALL_WITH_ARG, 0x3200_0004);
        assert_eq!(OPTEE_SMC_RETURN_FROM_RPC, 0x3200_0003);
        assert_eq!(OPTEE_SMC_EXCHANGE_CAPABILITIES, 0xB200_0009);
        assert_eq!(OPTEE_SMC_VM_CREATED, 0xB200_000D);
        assert_eq!(OPTEE_SMC_GET_THREAD_COUNT, 0xB200_000F);
        assert_eq!(OPTEE_SMC_CALL_WITH_REGD_ARG, 0x3200_0013);
    }

    #[test]
    fn rpc_detection_excludes_unknown_function() {
        assert!(is_rpc(rpc_val(OPTEE_SMC_RPC_FUNC_CMD)));
        assert!(!is_rpc(OPTEE_SMC_RETURN_UNKNOWN_FUNCTION));
        assert!(!is_rpc(OPTEE_SMC_RETURN_OK));
    }

    #[test]
    fn arg_round_trips_and_rejects_short_buffers() {
        let arg = MsgArg {
            header: MsgArgHeader {
                cmd: OPTEE_MSG_CMD_INVOKE_COMMAND,
                func: 7,
                session: 3,
                ..Default::default()
            },
            params: alloc::vec![MsgParam {
                attr: OPTEE_MSG_ATTR_TYPE_VALUE_INOUT,
                u0: 1,
                u1: 2,
                u2: 3,
            }],
        };
        let b = arg.to_bytes();
        assert_eq!(b.len(), 64);
        let back = MsgArg::parse(&b).unwrap();
        assert_eq!(back.header.num_params, 1);
        assert_eq!(back.params, arg.params);
        assert_eq!(MsgArg::parse(&b[..63]), Err(DecodeError::Short));
        assert_eq!(MsgArgHeader::parse(&b[..31]), Err(DecodeError::Short));
    }

    #[test]
    fn param_kinds() {
        let p = |attr| MsgParam {
            attr,
            ..Default::default()
        };
        assert_eq!(
            p(OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | OPTEE_MSG_ATTR_NONCONTIG).kind(),
            Some(ParamKind::Tmem {
                input: false,
                output: true
            })
        );
        assert_eq!(
            p(OPTEE_MSG_ATTR_TYPE_FMEM_INOUT).kind(),
            Some(ParamKind::Rmem {
                input: true,
                output: true
            })
        );
        assert_eq!(p(4).kind(), None);
        assert_eq!(p(0xc).kind(), None);
        assert_eq!(
            regpair(0xdead_0000_0000_0001, 0xffff_ffff_0000_0002),
            0x1_0000_0002
        );
    }
}
