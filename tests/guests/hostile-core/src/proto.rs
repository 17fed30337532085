// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the guest needs of OP-TEE's protocol beyond `mediator::abi`: GlobalPlatform's
//! result origins and two more result codes, invoke_tests.pta, the OPEN_SESSION meta
//! parameters as Linux's optee driver writes them, and register-level helpers.

use mediator::abi::{self, MsgParam};

/// GlobalPlatform TEE Client API origins (tee_client_api.h `TEEC_ORIGIN_*`): the client
/// API itself.
pub const ORIGIN_API: u32 = 1;
/// The communication stack: here the mediator (`abi::TEEC_ORIGIN_COMMS`).
pub const ORIGIN_COMMS: u32 = abi::TEEC_ORIGIN_COMMS;
/// The TEE itself (OP-TEE's core).
pub const ORIGIN_TEE: u32 = 3;
/// The trusted application (a pseudo TA too).
pub const ORIGIN_TA: u32 = 4;

/// `TEEC_ERROR_ITEM_NOT_FOUND` (tee_client_api.h): what a TA loader answers for a TA it
/// does not have.
pub const TEEC_ERROR_ITEM_NOT_FOUND: u32 = 0xFFFF_0008;
/// `TEEC_ERROR_NOT_SUPPORTED` (tee_client_api.h).
pub const TEEC_ERROR_NOT_SUPPORTED: u32 = 0xFFFF_000A;

/// invoke_tests.pta, d96a5b40-c3e5-21e3-8794-1002a5d5c61b (OP-TEE's
/// lib/libutee/include/pta_invoke_tests.h), in the octet order `optee_msg_param` carries it.
pub const INVOKE_TESTS_PTA: [u8; 16] = [
    0xd9, 0x6a, 0x5b, 0x40, 0xc3, 0xe5, 0x21, 0xe3, 0x87, 0x94, 0x10, 0x02, 0xa5, 0xd5, 0xc6, 0x1b,
];
/// A command invoke_tests.pta does not know: it answers TEEC_ERROR_BAD_PARAMETERS (origin
/// TA) and touches nothing, after OP-TEE mapped every memref of the call.
pub const UNKNOWN_PTA_CMD: u32 = 0x7fff_ffff;
/// `TEE_LOGIN_PUBLIC`.
pub const LOGIN_PUBLIC: u32 = 0;

/// The two META value parameters of OPEN_SESSION, as Linux's `optee_open_session` writes
/// them: the TA's UUID octets in param 0's `a`/`b`, the login in param 1's `c` (its client
/// UUID, zero for a public login, in `a`/`b`).
pub fn open_session_meta(uuid: &[u8; 16], login: u32) -> [MsgParam; 2] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&uuid[..8]);
    b.copy_from_slice(&uuid[8..]);
    let meta = abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | abi::OPTEE_MSG_ATTR_META;
    [
        MsgParam {
            attr: meta,
            u0: u64::from_le_bytes(a),
            u1: u64::from_le_bytes(b),
            u2: 0,
        },
        MsgParam {
            attr: meta,
            u0: 0,
            u1: 0,
            u2: u64::from(login),
        },
    ]
}

/// The SMC32 register pair for a 64-bit value: `(upper, lower)`.
pub const fn pair(v: u64) -> (u64, u64) {
    abi::split_regpair(v)
}

/// The 64-bit value of an SMC32 register pair (only the low halves count).
pub const fn unpair(hi: u64, lo: u64) -> u64 {
    abi::regpair(hi, lo)
}

/// Is `attr`'s type a memory reference (TMEM or RMEM)?
pub fn is_memref(attr: u64) -> bool {
    matches!(
        MsgParam {
            attr,
            ..Default::default()
        }
        .kind(),
        Some(abi::ParamKind::Tmem { .. } | abi::ParamKind::Rmem { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pta_uuid_goes_into_param0_as_linux_puts_it() {
        let [p0, p1] = open_session_meta(&INVOKE_TESTS_PTA, LOGIN_PUBLIC);
        // OP-TEE reads the octets back in memory order: timeLow d96a5b40 first.
        assert_eq!(p0.u0.to_le_bytes()[..4], [0xd9, 0x6a, 0x5b, 0x40]);
        assert_eq!(p0.u1.to_le_bytes()[6..], [0xc6, 0x1b]);
        assert_eq!(p0.attr, 0x101);
        assert_eq!((p1.attr, p1.u2), (0x101, 0));
        assert_eq!(unpair(0xdead_0000_0000_0001, 2), 0x1_0000_0002);
        assert_eq!(pair(0x1_0000_0002), (1, 2));
        assert!(is_memref(abi::OPTEE_MSG_ATTR_TYPE_RMEM_INOUT) && !is_memref(1));
    }
}
