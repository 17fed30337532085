// SPDX-License-Identifier: MIT OR Apache-2.0
//! Probe: is there an OP-TEE we can mediate behind the secure monitor?
//!
//! Run once at boot, as the hypervisor (a7 = 0), before any VM exists:
//! 1. CALLS_UID must be `OPTEE_MSG_UID`;
//! 2. CALLS_REVISION major must be `OPTEE_MSG_REVISION_MAJOR`;
//! 3. EXCHANGE_CAPABILITIES must report VIRTUALIZATION (an NS-virtualization build, which
//!    keys every call by the client id in a7) and DYNAMIC_SHM (guests have no static SHM);
//! 4. GET_THREAD_COUNT gives the number of OP-TEE threads, shared among VMs.
//!
//! EXCHANGE_CAPABILITIES also gives the RPC parameter count of CALL_WITH_RPC_ARG.

use crate::abi::{self, regpair};
use crate::error::Error;
use crate::ports::{SecureMonitor, HYPERVISOR_CLIENT_ID};

/// What the probe learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Secure-world capabilities (`OPTEE_SMC_SEC_CAP_*`) as reported to the hypervisor.
    pub sec_caps: u64,
    /// OP-TEE threads (concurrent yielding calls) system-wide.
    pub thread_count: u32,
    /// Trusted OS revision (major, minor).
    pub os_revision: (u32, u32),
    /// Parameters of the RPC argument struct that follows the argument in
    /// CALL_WITH_RPC_ARG (EXCHANGE_CAPABILITIES a3 bits `[7:0]`); 0 without RPC_ARG.
    pub rpc_param_count: u32,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

fn hyp_call<M: SecureMonitor>(m: &M, fid: u32, a1: u64) -> [u64; 8] {
    m.call([u64::from(fid), a1, 0, 0, 0, 0, 0, HYPERVISOR_CLIENT_ID])
}

/// Probe the secure world. Errors mean: do not start the mediator (and give no VM a TEE).
pub fn probe<M: SecureMonitor>(m: &M) -> Result<Probe, Error> {
    let r = hyp_call(m, abi::OPTEE_SMC_CALLS_UID, 0);
    let uid = [r[0] as u32, r[1] as u32, r[2] as u32, r[3] as u32];
    if uid != abi::OPTEE_MSG_UID {
        return Err(Error::NotOpTee);
    }
    let r = hyp_call(m, abi::OPTEE_SMC_CALLS_REVISION, 0);
    if r[0] as u32 != abi::OPTEE_MSG_REVISION_MAJOR {
        return Err(Error::UnsupportedRevision { major: r[0] as u32 });
    }
    let r = hyp_call(m, abi::OPTEE_SMC_GET_OS_REVISION, 0);
    let os_revision = (r[0] as u32, r[1] as u32);
    let r = hyp_call(m, abi::OPTEE_SMC_EXCHANGE_CAPABILITIES, 0);
    if r[0] as u32 != abi::OPTEE_SMC_RETURN_OK {
        return Err(Error::CapabilitiesFailed { code: r[0] as u32 });
    }
    let sec_caps = regpair(0, r[1]);
    let rpc_param_count = if sec_caps & abi::OPTEE_SMC_SEC_CAP_RPC_ARG != 0 {
        (r[3] & 0xff) as u32
    } else {
        0
    };
    if sec_caps & abi::OPTEE_SMC_SEC_CAP_VIRTUALIZATION == 0 {
        return Err(Error::NoVirtualization);
    }
    if sec_caps & abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM == 0 {
        return Err(Error::NoDynamicShm);
    }
    let r = hyp_call(m, abi::OPTEE_SMC_GET_THREAD_COUNT, 0);
    if r[0] as u32 != abi::OPTEE_SMC_RETURN_OK || r[1] as u32 == 0 {
        return Err(Error::NoThreadCount);
    }
    Ok(Probe {
        sec_caps,
        thread_count: r[1] as u32,
        os_revision,
        rpc_param_count,
    })
}
