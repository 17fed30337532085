// SPDX-License-Identifier: MIT OR Apache-2.0
//! Scenarios: every function id, every RPC type, every limit at cap and cap + 1, VM
//! destruction mid-call and mid-RPC, a racing sibling vCPU, and hostile inputs.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::abi::*;
use crate::error::{Error, Fault};
use crate::fakes::{FakeHv, FakeMem, FakeOpTee, Recorder, Step, World, RAM_BASE};
use crate::trace::MsgDir;

const OK: u64 = OPTEE_SMC_RETURN_OK as u64;

fn rpc(func: u32) -> u64 {
    u64::from(rpc_val(func))
}

// ---------------------------------------------------------------------------------------
// Probe and VM lifecycle.
// ---------------------------------------------------------------------------------------

fn probe_with(f: impl FnOnce(&mut crate::fakes::OpTeeState)) -> Result<crate::Probe, Error> {
    let world = std::rc::Rc::new(std::cell::RefCell::new(World::default()));
    let (optee, st) = FakeOpTee::new(&world);
    f(&mut st.borrow_mut());
    crate::probe(&optee)
}

#[test]
fn probe_accepts_virtualized_optee() {
    let p = probe_with(|_| {}).unwrap();
    assert_eq!(p.thread_count, 8);
    assert!(p.sec_caps & OPTEE_SMC_SEC_CAP_VIRTUALIZATION != 0);
    assert_eq!(p.os_revision, (4, 1));
}

#[test]
fn probe_rejects_wrong_uid_missing_caps_and_threads() {
    assert_eq!(probe_with(|s| s.uid[0] ^= 1), Err(Error::NotOpTee));
    assert_eq!(
        probe_with(|s| s.caps &= !OPTEE_SMC_SEC_CAP_VIRTUALIZATION),
        Err(Error::NoVirtualization)
    );
    assert_eq!(
        probe_with(|s| s.caps &= !OPTEE_SMC_SEC_CAP_DYNAMIC_SHM),
        Err(Error::NoDynamicShm)
    );
    assert_eq!(probe_with(|s| s.threads = 0), Err(Error::NoThreadCount));
}

#[test]
fn vm_created_uses_domid_plus_one_and_hypervisor_a7() {
    let env = Env::new();
    let log = &env.optee.borrow().log;
    let created: Vec<_> = log
        .iter()
        .filter(|r| r[0] as u32 == OPTEE_SMC_VM_CREATED)
        .collect();
    assert_eq!(created.len(), 2);
    assert_eq!((created[0][1], created[0][7]), (2, 0));
    assert_eq!((created[1][1], created[1][7]), (3, 0));
}

#[test]
fn vm_created_refused_or_duplicate_fails_creation() {
    let env = Env::new();
    assert_eq!(env.med.vm_created(VM1), Err(Error::VmExists));
    env.optee.borrow_mut().refuse_vm_created = true;
    assert_eq!(
        env.med.vm_created(VmId(7)),
        Err(Error::VmCreateRefused {
            code: OPTEE_SMC_RETURN_ENOTAVAIL
        })
    );
    // Unknown VM: no TEE.
    let mut m = FakeMem::new(&env.world, 8, 4);
    let r = env.med.handle_smc(
        VmId(7),
        &mut m,
        [u64::from(OPTEE_SMC_CALLS_UID), 0, 0, 0, 0, 0, 0, 0],
        0,
    );
    assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_UNKNOWN_FUNCTION));
}

// ---------------------------------------------------------------------------------------
// Fast calls.
// ---------------------------------------------------------------------------------------

#[test]
fn pass_through_fast_calls_carry_client_id() {
    let mut env = Env::new();
    let r = env.fast(VM1, OPTEE_SMC_CALLS_UID);
    assert_eq!([r[0], r[1], r[2], r[3]], OPTEE_MSG_UID.map(u64::from));
    assert_eq!(r[7], 0xdead, "a7 preserved for the guest");
    assert_eq!(env.fast(VM1, OPTEE_SMC_CALLS_COUNT)[0], 21);
    assert_eq!(env.fast(VM1, OPTEE_SMC_CALLS_REVISION)[..2], [2, 0]);
    let r = env.fast(VM2, OPTEE_SMC_GET_OS_UUID);
    assert_eq!([r[0], r[1], r[2], r[3]], OPTEE_OS_UUID.map(u64::from));
    assert_eq!(env.fast(VM2, OPTEE_SMC_GET_OS_REVISION)[..3], [4, 1, 0xb1d]);
    assert_eq!(env.fast(VM2, OPTEE_SMC_ENABLE_SHM_CACHE)[0], OK);
    env.check();
}

#[test]
fn capabilities_are_filtered_both_ways() {
    let mut env = Env::new();
    let r = env.smc(
        VM1,
        [
            u64::from(OPTEE_SMC_EXCHANGE_CAPABILITIES),
            OPTEE_SMC_NSEC_CAP_UNIPROCESSOR | 0xf0,
            0,
            0,
            0,
            0,
            0,
            9,
        ],
    );
    assert_eq!(r[0], OK);
    assert_eq!(
        r[1],
        OPTEE_SMC_SEC_CAP_DYNAMIC_SHM
            | OPTEE_SMC_SEC_CAP_VIRTUALIZATION
            | OPTEE_SMC_SEC_CAP_MEMREF_NULL
            | OPTEE_SMC_SEC_CAP_RPC_ARG
    );
    assert_eq!(
        (r[2], r[3]),
        (0, 6),
        "notif max masked, RPC param count kept"
    );
    let fwd = *env.optee.borrow().log.last().unwrap();
    assert_eq!(fwd[1], 0, "guest's normal-world caps are not forwarded");
    // Without dynamic SHM a guest gets nothing.
    env.optee.borrow_mut().caps &= !OPTEE_SMC_SEC_CAP_DYNAMIC_SHM;
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_EXCHANGE_CAPABILITIES)[0],
        u64::from(OPTEE_SMC_RETURN_ENOTAVAIL)
    );
}

#[test]
fn answered_and_refused_functions_never_reach_optee() {
    let mut env = Env::new();
    let n = env.log_len();
    for fid in [
        OPTEE_SMC_GET_SHM_CONFIG,
        OPTEE_SMC_L2CC_MUTEX,
        OPTEE_SMC_ENABLE_ASYNC_NOTIF,
        OPTEE_SMC_GET_ASYNC_NOTIF_VALUE,
    ] {
        assert_eq!(
            env.fast(VM1, fid)[0],
            u64::from(OPTEE_SMC_RETURN_ENOTAVAIL),
            "{fid:#x}"
        );
    }
    for fid in [
        OPTEE_SMC_VM_CREATED,
        OPTEE_SMC_VM_DESTROYED,
        OPTEE_SMC_BOOT_SECONDARY,
        0xB200_00FF,
        0x8400_0000,
    ] {
        assert_eq!(
            env.fast(VM1, fid)[0],
            u64::from(OPTEE_SMC_RETURN_UNKNOWN_FUNCTION),
            "{fid:#x}"
        );
    }
    assert_eq!(env.log_len(), n);
    assert_eq!(env.last_record().fault, None);
    env.fast(VM1, OPTEE_SMC_VM_DESTROYED);
    assert_eq!(env.last_record().fault, Some(Fault::Refused));
}

#[test]
fn thread_count_is_the_vm_share() {
    let mut env = Env::new();
    let r = env.fast(VM1, OPTEE_SMC_GET_THREAD_COUNT);
    assert_eq!(
        (r[0], r[1]),
        (OK, u64::from(crate::limits::DEFAULT_MAX_CALLS_PER_VM))
    );
    // Above the cap, the share is OP-TEE's threads divided among the VMs (this expectation
    // was 8 while the share ignored the other VM: one VM could hold every thread).
    let mut env = Env::with_limits(Limits {
        max_calls_per_vm: 100,
        ..Limits::default()
    });
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_GET_THREAD_COUNT)[1],
        4,
        "half of OP-TEE's 8 threads with two VMs"
    );
    env.destroy(VM2);
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_GET_THREAD_COUNT)[1],
        8,
        "alone, capped by OP-TEE's threads"
    );
    assert_eq!(env.med.calls_per_vm(), 8);
}

// ---------------------------------------------------------------------------------------
// Yielding calls.
// ---------------------------------------------------------------------------------------

#[test]
fn open_session_copies_back_only_allowed_fields() {
    let mut env = Env::new();
    env.optee.borrow_mut().scribble = true;
    let m = msg(
        OPTEE_MSG_CMD_OPEN_SESSION,
        vec![
            val(
                OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | OPTEE_MSG_ATTR_META,
                1,
                2,
                3,
            ),
            val(
                OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | OPTEE_MSG_ATTR_META,
                4,
                5,
                6,
            ),
            val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, 10, 20, 30),
            val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0),
        ],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], OK);
    let back = env.mem(VM1).get_arg(ARG_IPA, 4);
    assert_eq!(back.header.ret, TEEC_SUCCESS);
    assert_eq!(back.header.ret_origin, 4);
    assert_eq!(back.header.session, 0x5e55);
    assert_eq!(
        (back.header.cmd, back.header.func),
        (OPTEE_MSG_CMD_OPEN_SESSION, 0x77),
        "not copied back"
    );
    assert_eq!(back.params[0], m.params[0], "input values untouched");
    assert_eq!(
        (back.params[2].u0, back.params[2].u1, back.params[2].u2),
        (1010, 1020, 1030)
    );
    assert_eq!(back.params[3].u0, 1000);
    assert_eq!(env.hv_live(), 0, "shadow freed");
    assert_eq!(env.med.vm_stats(VM1).unwrap().calls, 0);
    env.check();
}

/// The fast path's shape, counted on the fakes so that a regression shows before any QEMU
/// run (`cargo xtask bench` measures the instructions): once a VM has made a call, an
/// invoke with value parameters allocates no hypervisor page (its record and shadow page
/// are reused) and copies guest memory three times, whatever its parameters: the header,
/// the parameters, and the whole message back.
#[test]
fn a_warm_invoke_allocates_nothing_and_copies_the_guest_three_times() {
    let mut env = Env::new();
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![
            val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 1, 2, 3),
            val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, 10, 20, 30),
            val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0),
            val(OPTEE_MSG_ATTR_TYPE_NONE, 0, 0, 0),
        ],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK, "the warm-up call");
    for round in 0..3 {
        env.mem(VM1).put_arg(ARG_IPA, &m);
        let (allocs, copies) = {
            let w = env.world.borrow();
            (w.hv_allocs, w.guest_copies)
        };
        assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
        let w = env.world.borrow();
        assert_eq!(w.hv_allocs - allocs, 0, "round {round}: a hypervisor page");
        assert_eq!(w.guest_copies - copies, 3, "round {round}: guest copies");
        drop(w);
        let back = env.mem(VM1).get_arg(ARG_IPA, 4);
        assert_eq!(back.header.ret, TEEC_SUCCESS);
        assert_eq!(back.params[0], m.params[0], "input values untouched");
        assert_eq!(
            (back.params[1].u0, back.params[1].u1, back.params[1].u2),
            (1010, 1020, 1030)
        );
    }
    assert_eq!(env.hv_live(), 0);
    assert_eq!(env.med.spare_pages(), 1, "one record kept, with its page");
    env.med
        .vm_destroyed(VM1, env.mem.get_mut(&VM1).unwrap())
        .unwrap();
    assert_eq!(env.world.borrow().hv_live, 0, "freed with the VM");
    env.check();
}

#[test]
fn tmem_page_list_is_translated_pinned_and_released() {
    let mut env = Env::new();
    // 600 data pages: two list pages; offset 0x123.
    let pages = data_ipas(0, 600);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let size = 600 * 4096 - 0x123 - 7;
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_INOUT,
            list_ipa(0),
            0x123,
            size,
            0xabc,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    let seen = env.optee.borrow().seen[0].clone();
    assert_eq!(seen.params[0].u0 & 0xfff, 0x123);
    assert_ne!(
        seen.params[0].u0 & !0xfff,
        list_ipa(0),
        "OP-TEE never sees a guest list address"
    );
    let back = env.mem(VM1).get_arg(ARG_IPA, 1);
    assert_eq!(back.params[0].u1, size / 2, "output size copied back");
    assert_eq!(back.params[0].u0, m.params[0].u0, "buf_ptr not copied back");
    assert_eq!(env.mem(VM1).pinned(), 0);
    assert_eq!(env.hv_live(), 0);
    assert_eq!(env.last_record().pages_translated, 600);
    // The decoded trace (`--trace smc=msg`): the call as OP-TEE got it, with every page as
    // IPA -> PA, then OP-TEE's answer as the guest got it.
    let msgs = env.msgs.borrow();
    let [call, ret] = &msgs[..] else {
        panic!("two decoded messages, got {msgs:?}");
    };
    assert_eq!((call.dir, ret.dir), (MsgDir::Call, MsgDir::Return));
    assert_eq!(call.header.cmd, OPTEE_MSG_CMD_INVOKE_COMMAND);
    let (guest, optee, pairs) = &call.params[0];
    assert_eq!((guest.u0, optee.u0), (m.params[0].u0, seen.params[0].u0));
    assert_eq!(pairs.len(), 600);
    for (i, (ipa, pa)) in pairs.iter().enumerate() {
        assert_eq!(ipa.0, pages[i]);
        assert_eq!(pa.0, env.mem[&VM1].pa_of(pages[i]), "page {i}");
    }
    assert_eq!(ret.params[0].0.u1, size / 2, "the size the guest got back");
    drop(msgs);
    env.check();
}

#[test]
fn null_memref_passes_but_contiguous_tmem_is_refused() {
    let mut env = Env::new();
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, 0, 16, 0)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).header.ret, TEEC_SUCCESS);
    let n = env.log_len();
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, 0x8000_0000, 16, 0)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    let back = env.mem(VM1).get_arg(ARG_IPA, 1);
    assert_eq!(
        (back.header.ret, back.header.ret_origin),
        (TEEC_ERROR_BAD_PARAMETERS, TEEC_ORIGIN_COMMS)
    );
    assert_eq!(env.log_len(), n, "refused before OP-TEE");
}

#[test]
fn bad_attributes_and_commands_are_refused() {
    let mut env = Env::new();
    let n = env.log_len();
    for attr in [
        0x4,
        0xc,
        OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | OPTEE_MSG_ATTR_NONCONTIG,
        OPTEE_MSG_ATTR_TYPE_TMEM_INPUT | OPTEE_MSG_ATTR_META,
        OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | (1 << 16),
        OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | (1 << 40),
    ] {
        env.mem(VM1).put_arg(
            ARG_IPA,
            &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![val(attr, 0, 0, 0)]),
        );
        assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
        assert_eq!(
            env.mem(VM1).get_arg(ARG_IPA, 1).header.ret,
            TEEC_ERROR_BAD_PARAMETERS,
            "{attr:#x}"
        );
    }
    for cmd in [
        OPTEE_MSG_CMD_DO_BOTTOM_HALF,
        OPTEE_MSG_CMD_STOP_ASYNC_NOTIF,
        99,
    ] {
        env.mem(VM1).put_arg(ARG_IPA, &msg(cmd, vec![]));
        assert_eq!(
            env.call(VM1, ARG_IPA)[0],
            u64::from(OPTEE_SMC_RETURN_EBADCMD)
        );
    }
    assert_eq!(env.log_len(), n);
    assert_eq!(env.hv_live(), 0);
}

#[test]
fn register_use_unregister_shm() {
    let mut env = Env::new();
    let pages = data_ipas(0, 3);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let reg = msg(
        OPTEE_MSG_CMD_REGISTER_SHM,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
            list_ipa(0),
            0x10,
            3 * 4096 - 0x10,
            0xc00c1e,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &reg);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).header.ret, TEEC_SUCCESS);
    assert_eq!(env.mem(VM1).pinned(), 3, "registered pages stay pinned");
    assert_eq!(env.hv_live(), 0, "list pages freed after the call");
    assert!(env.optee.borrow().shm.contains_key(&(2, 0xc00c1e)));

    // Use it through RMEM: in bounds ok, out of bounds refused.
    let use_ok = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INOUT, 0x100, 0x1000, 0xc00c1e)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &use_ok);
    env.call(VM1, ARG_IPA);
    let back = env.mem(VM1).get_arg(ARG_IPA, 1);
    assert_eq!((back.header.ret, back.params[0].u1), (TEEC_SUCCESS, 0x800));
    let too_far = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(
            OPTEE_MSG_ATTR_TYPE_RMEM_INPUT,
            0x100,
            3 * 4096,
            0xc00c1e,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &too_far);
    env.call(VM1, ARG_IPA);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_BAD_PARAMETERS
    );

    let unreg = msg(
        OPTEE_MSG_CMD_UNREGISTER_SHM,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, 0xc00c1e)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &unreg);
    env.call(VM1, ARG_IPA);
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).header.ret, TEEC_SUCCESS);
    assert_eq!(env.mem(VM1).pinned(), 0);
    // Unregistering again: the cookie is gone.
    env.call(VM1, ARG_IPA);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_BAD_PARAMETERS
    );
    assert_eq!(env.last_record().fault, Some(Fault::UnknownCookie));
    env.check();
}

/// Found by libFuzzer (`cargo xtask fuzz`, smc_sequence, after 6.2 million executions): a
/// buffer unregistered while a call of the same VM that names it is parked in an RPC, then
/// the VM destroyed, which drains the parked call. OP-TEE never reports a registered buffer
/// released while a call holds it (`mobj_reg_shm_release_by_cookie` waits for the last
/// reference), so the mediator, which unpins a buffer's pages when OP-TEE reports it
/// released, keeps them pinned under the parked call. The fake OP-TEE used to release it
/// at once and then found the parked call's memref dangling.
#[test]
fn a_buffer_a_parked_call_holds_stays_pinned_under_it() {
    const UNREG_IPA: u64 = RAM_BASE + 0x800;
    let unreg = msg(
        OPTEE_MSG_CMD_UNREGISTER_SHM,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, 0x5)],
    );
    let use_it = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INOUT, 0, 0x1000, 0x5)],
    );
    for destroy in [false, true] {
        let mut env = Env::new();
        assert_eq!(register(&mut env, VM1, 0x5, 0, 3), TEEC_SUCCESS);
        env.plan(vec![Step::ForeignIntr]);
        env.mem(VM1).put_arg(ARG_IPA, &use_it);
        let r = env.call(VM1, ARG_IPA);
        assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
        let h = r[3];
        env.mem(VM1).put_arg(UNREG_IPA, &unreg);
        assert_eq!(env.call(VM1, UNREG_IPA)[0], OK);
        assert_eq!(
            env.mem(VM1).get_arg(UNREG_IPA, 1).header.ret,
            crate::fakes::TEEC_ERROR_BUSY
        );
        assert_eq!(
            env.mem(VM1).pinned(),
            3,
            "the parked call's buffer is pinned"
        );
        env.check();
        if destroy {
            // Draining the parked call finds its buffer still there.
            env.destroy(VM1);
            assert_eq!(env.mem(VM1).pinned(), 0);
            assert_eq!(env.world.borrow().hv_live, 0);
            continue;
        }
        assert_eq!(env.resume(VM1, h, 0, 0)[0], OK);
        assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).header.ret, TEEC_SUCCESS);
        // Released by no call now, the buffer goes.
        assert_eq!(env.call(VM1, UNREG_IPA)[0], OK);
        assert_eq!(env.mem(VM1).get_arg(UNREG_IPA, 1).header.ret, TEEC_SUCCESS);
        assert_eq!(env.mem(VM1).pinned(), 0);
        env.check();
    }
}

fn register(env: &mut Env, vm: VmId, cookie: u64, first_page: u64, n: u64) -> u32 {
    let pages = data_ipas(first_page, n);
    env.mem(vm).put_page_list(list_ipa(0), &pages);
    let reg = msg(
        OPTEE_MSG_CMD_REGISTER_SHM,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
            list_ipa(0),
            0,
            n * 4096,
            cookie,
        )],
    );
    env.mem(vm).put_arg(ARG_IPA, &reg);
    assert_eq!(env.call(vm, ARG_IPA)[0], OK);
    env.mem(vm).get_arg(ARG_IPA, 1).header.ret
}

#[test]
fn reused_cookie_is_refused() {
    let mut env = Env::new();
    assert_eq!(register(&mut env, VM1, 0x55, 0, 2), TEEC_SUCCESS);
    let n = env.log_len();
    assert_eq!(
        register(&mut env, VM1, 0x55, 10, 2),
        TEEC_ERROR_BAD_PARAMETERS
    );
    assert_eq!(env.last_record().fault, Some(Fault::CookieInUse));
    assert_eq!(env.log_len(), n, "never reached OP-TEE");
    assert_eq!(
        env.mem(VM1).pinned(),
        2,
        "first registration intact, second left nothing pinned"
    );
    env.check();
}

#[test]
fn cookie_of_another_vm_is_refused() {
    let mut env = Env::new();
    assert_eq!(register(&mut env, VM1, 0x99, 0, 2), TEEC_SUCCESS);
    let n = env.log_len();
    let use_it = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 16, 0x99)],
    );
    env.mem(VM2).put_arg(ARG_IPA, &use_it);
    env.call(VM2, ARG_IPA);
    assert_eq!(
        env.mem(VM2).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_BAD_PARAMETERS
    );
    let unreg = msg(
        OPTEE_MSG_CMD_UNREGISTER_SHM,
        vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, 0x99)],
    );
    env.mem(VM2).put_arg(ARG_IPA, &unreg);
    env.call(VM2, ARG_IPA);
    assert_eq!(
        env.mem(VM2).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_BAD_PARAMETERS
    );
    assert_eq!(env.log_len(), n);
    assert_eq!(env.mem(VM1).pinned(), 2);
    // The same cookie value is independent per VM.
    assert_eq!(register(&mut env, VM2, 0x99, 0, 1), TEEC_SUCCESS);
    env.check();
}

#[test]
fn unaligned_and_outside_ram_addresses() {
    let mut env = Env::new();
    // Unaligned argument pointer.
    assert_eq!(
        env.call(VM1, ARG_IPA + 4)[0],
        u64::from(OPTEE_SMC_RETURN_EBADADDR)
    );
    assert_eq!(env.last_record().fault, Some(Fault::Unaligned));
    // Argument outside RAM, and straddling the end of RAM.
    assert_eq!(
        env.call(VM1, 0x1000)[0],
        u64::from(OPTEE_SMC_RETURN_EBADADDR)
    );
    assert_eq!(
        env.call(VM1, RAM_BASE + RAM_PAGES * 4096 - 16)[0],
        u64::from(OPTEE_SMC_RETURN_EBADADDR)
    );
    assert_eq!(
        env.call(VM1, u64::MAX - 7)[0],
        u64::from(OPTEE_SMC_RETURN_EBADADDR)
    );

    // Unaligned page-list entry: nothing stays pinned.
    let mut pages = data_ipas(0, 5);
    pages[3] += 8;
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
            list_ipa(0),
            0,
            5 * 4096,
            0,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    env.call(VM1, ARG_IPA);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_BAD_PARAMETERS
    );
    assert_eq!(env.last_record().fault, Some(Fault::Unaligned));
    assert_eq!(env.mem(VM1).pinned(), 0);

    // Page-list entry outside RAM.
    let mut pages = data_ipas(0, 5);
    pages[4] = 0x9000_0000_0000;
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    env.call(VM1, ARG_IPA);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    assert_eq!(env.mem(VM1).pinned(), 0);

    // Page list itself outside RAM, and an unaligned next-list pointer.
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![tmem_nc(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, 0x7000, 0, 4096, 0)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    env.call(VM1, ARG_IPA);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    let pages = data_ipas(0, 600);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let mut next = [0u8; 8];
    write_u64(&mut next, 0, list_ipa(1) + 8);
    env.mem(VM1).poke(list_ipa(0) + 511 * 8, &next);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
            list_ipa(0),
            0,
            600 * 4096,
            0,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    env.call(VM1, ARG_IPA);
    assert_eq!(env.last_record().fault, Some(Fault::Unaligned));
    assert_eq!(env.mem(VM1).pinned(), 0);
    // Read-only page for an output buffer.
    let pages = data_ipas(0, 2);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    env.mem(VM1).readonly.insert(pages[1]);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
            list_ipa(0),
            0,
            8192,
            0,
        )],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    env.call(VM1, ARG_IPA);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    assert_eq!(env.mem(VM1).pinned(), 0);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

// ---------------------------------------------------------------------------------------
// RPCs.
// ---------------------------------------------------------------------------------------

const RPC_ARG_IPA: u64 = RAM_BASE + 8 * 4096;

/// Drive a call: answer ALLOC with `RPC_ARG_IPA`/`cookie`, everything else by handing
/// back the handle (after `on_cmd` edits the guest's RPC buffer). Returns final a0.
fn drive(
    env: &mut Env,
    vm: VmId,
    mut r: [u64; 8],
    cookie: u64,
    mut on_cmd: impl FnMut(&mut Env, MsgArg),
) -> u64 {
    let mut n = 0;
    while is_rpc(r[0] as u32) {
        n += 1;
        assert!(n < 50);
        let h = r[3];
        r = match (r[0] as u32) & 0xffff {
            OPTEE_SMC_RPC_FUNC_ALLOC => env.resume(vm, h, RPC_ARG_IPA, cookie),
            OPTEE_SMC_RPC_FUNC_CMD => {
                assert_eq!(regpair(r[1], r[2]), cookie);
                let hdr = MsgArgHeader::parse(&env.mem(vm).peek(RPC_ARG_IPA, 32)).unwrap();
                let a = env.mem(vm).get_arg(RPC_ARG_IPA, hdr.num_params as usize);
                on_cmd(env, a);
                env.resume(vm, h, 0, 0)
            }
            _ => env.resume(vm, h, 0, 0),
        };
    }
    r[0]
}

#[test]
fn rpc_alloc_cmd_free_use_shadow_pages() {
    let mut env = Env::new();
    env.plan(vec![
        Step::Alloc(256),
        Step::Cmd(OPTEE_RPC_CMD_GET_TIME),
        Step::Free,
    ]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_ALLOC));
    assert_eq!(r[1], 256);
    let a0 = drive(&mut env, VM1, r, 0xa11c, |env, a| {
        assert_eq!(a.header.cmd, OPTEE_RPC_CMD_GET_TIME);
        assert_eq!(a.params[1], val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 7, 8, 9));
        let mut ans = a.clone();
        ans.header.ret = 0;
        ans.params[0].u0 = 1234;
        ans.params[0].u1 = 5678;
        // Hostile edits: attributes and the input value must not reach OP-TEE.
        ans.params[0].attr = OPTEE_MSG_ATTR_TYPE_TMEM_INOUT;
        ans.params[1].u0 = 0xbad;
        ans.header.cmd = 0xbad;
        env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    });
    assert_eq!(a0, OK);
    let st = env.optee.borrow();
    assert_ne!(st.alloc_answers[0], 0);
    assert_ne!(
        st.alloc_answers[0],
        env.mem[&VM1].pa_of(RPC_ARG_IPA),
        "OP-TEE got a shadow, not guest RAM"
    );
    let got = &st.rpc_answers[0];
    assert_eq!(got.header.cmd, OPTEE_RPC_CMD_GET_TIME);
    assert_eq!(
        got.params[0],
        val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 1234, 5678, 0)
    );
    assert_eq!(got.params[1], val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 7, 8, 9));
    drop(st);
    assert_eq!(env.hv_live(), 0, "RPC arg page freed on RPC FREE");
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 0);
    env.check();
}

#[test]
fn rpc_shm_alloc_and_free_pin_and_unpin_guest_pages() {
    let mut env = Env::new();
    env.plan(vec![
        Step::Alloc(128),
        Step::ShmAlloc(3 * 4096),
        Step::ShmFreeLast,
    ]);
    env.plan(vec![Step::Alloc(128), Step::ShmAlloc(4096)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let shm_pages = data_ipas(100, 3);
    env.mem(VM1).put_page_list(list_ipa(4), &shm_pages);
    let r = env.call(VM1, ARG_IPA);
    let mut pinned_during = Vec::new();
    let a0 = drive(&mut env, VM1, r, 0xa11c, |env, a| {
        let mut ans = a.clone();
        ans.header.ret = 0;
        if a.header.cmd == OPTEE_RPC_CMD_SHM_ALLOC {
            assert_eq!(a.params[0].u1, 3 * 4096);
            ans.params[0] = tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                list_ipa(4),
                0,
                3 * 4096,
                0x5a11,
            );
        } else {
            assert_eq!(a.header.cmd, OPTEE_RPC_CMD_SHM_FREE);
            assert_eq!(a.params[0].u1, 0x5a11);
            pinned_during.push(env.mem(VM1).pinned());
        }
        env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    });
    assert_eq!(a0, OK);
    assert_eq!(
        pinned_during,
        vec![0],
        "SHM_FREE released the pins before the guest ran"
    );
    assert!(!env.optee.borrow().shm.contains_key(&(2, 0x5a11)));
    // The decoded trace shows OP-TEE's request, and the guest's answer with the buffer's
    // pages as IPA -> PA.
    {
        let msgs = env.msgs.borrow();
        let req = msgs
            .iter()
            .find(|m| m.dir == MsgDir::Rpc && m.header.cmd == OPTEE_RPC_CMD_SHM_ALLOC)
            .expect("the SHM_ALLOC request");
        assert_eq!(req.params[0].1.u1, 3 * 4096);
        let ans = msgs
            .iter()
            .find(|m| m.dir == MsgDir::RpcAnswer && m.header.cmd == OPTEE_RPC_CMD_SHM_ALLOC)
            .expect("the SHM_ALLOC answer");
        let (guest, _, pairs) = &ans.params[0];
        assert_eq!(guest.u2, 0x5a11);
        let want: Vec<(u64, u64)> = shm_pages
            .iter()
            .map(|&ipa| (ipa, env.mem[&VM1].pa_of(ipa)))
            .collect();
        let got: Vec<(u64, u64)> = pairs.iter().map(|(i, p)| (i.0, p.0)).collect();
        assert_eq!(got, want);
    }

    // No FREE in this plan: the RPC arg stays cached, and this SHM_ALLOC stays pinned
    // after the call completes.
    env.mem(VM1).put_page_list(list_ipa(4), &data_ipas(200, 1));
    let r = env.call(VM1, ARG_IPA);
    let a0 = drive(&mut env, VM1, r, 0xa11d, |env, a| {
        let mut ans = a.clone();
        ans.params[0] = tmem_nc(
            OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
            list_ipa(4),
            0,
            4096,
            0x5a12,
        );
        env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    });
    assert_eq!(a0, OK);
    assert_eq!(env.mem(VM1).pinned(), 1);
    assert!(env.optee.borrow().shm.contains_key(&(2, 0x5a12)));
    assert_eq!(
        env.med.vm_stats(VM1).unwrap().rpc_args,
        2,
        "both calls' RPC args cached"
    );
    env.destroy(VM1);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn rpc_shm_alloc_bad_answers_fail_in_optee_not_the_hypervisor() {
    let mut env = Env::new();
    env.plan(vec![
        Step::Alloc(128),
        Step::ShmAlloc(2 * 4096),
        Step::ShmAlloc(4096),
        Step::ShmAlloc(4096),
        Step::Free,
    ]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let mut pages = data_ipas(0, 2);
    pages[1] |= 1;
    env.mem(VM1).put_page_list(list_ipa(4), &pages);
    let r = env.call(VM1, ARG_IPA);
    let mut i = 0;
    let a0 = drive(&mut env, VM1, r, 0xa11c, |env, a| {
        let mut ans = a.clone();
        ans.params[0] = match i {
            // Unaligned entry.
            0 => tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                list_ipa(4),
                0,
                2 * 4096,
                0x1,
            ),
            // Too small for the request.
            1 => tmem_nc(OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT, list_ipa(4), 0, 100, 0x2),
            // Contiguous physical pointer.
            _ => val(
                OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                FakeMem::ipa(300),
                4096,
                0x3,
            ),
        };
        i += 1;
        env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    });
    assert_eq!(a0, OK);
    let st = env.optee.borrow();
    assert_eq!(st.rpc_answers.len(), 3);
    assert_eq!(st.rpc_answers[0].header.ret, TEEC_ERROR_BAD_PARAMETERS);
    assert_eq!(st.rpc_answers[1].header.ret, TEEC_ERROR_BAD_PARAMETERS);
    assert_eq!(st.rpc_answers[2].header.ret, TEEC_ERROR_BAD_PARAMETERS);
    drop(st);
    assert_eq!(env.mem(VM1).pinned(), 0);
    env.check();
}

#[test]
fn rpc_alloc_refusals_give_optee_a_null_pointer() {
    let mut env = Env::new();
    // Unaligned guest buffer, outside RAM, oversize request (answered without the guest).
    env.plan(vec![Step::Alloc(64)]);
    env.plan(vec![Step::Alloc(64)]);
    env.plan(vec![Step::Alloc(8192)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(env.resume(VM1, r[3], RPC_ARG_IPA + 8, 1)[0], OK);
    assert_eq!(env.last_record().fault, Some(Fault::Unaligned));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(env.resume(VM1, r[3], 0x10_0000_0000, 1)[0], OK);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    assert_eq!(
        env.call(VM1, ARG_IPA)[0],
        OK,
        "oversize ALLOC answered by the mediator"
    );
    assert_eq!(env.optee.borrow().alloc_answers, vec![0, 0, 0]);
    assert_eq!(env.hv_live(), 0);
}

#[test]
fn rpc_alloc_reused_cookie_is_refused() {
    let mut env = Env::new();
    env.plan(vec![Step::Alloc(64), Step::ForeignIntr]);
    env.plan(vec![Step::Alloc(64)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r1 = env.call(VM1, ARG_IPA);
    let r1 = env.resume(VM1, r1[3], RPC_ARG_IPA, 7);
    assert_eq!(r1[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    let r2 = env.call(VM1, ARG_IPA);
    assert_eq!(env.resume(VM1, r2[3], RPC_ARG_IPA + 4096, 7)[0], OK);
    assert_eq!(env.last_record().fault, Some(Fault::CookieInUse));
    assert_ne!(env.optee.borrow().alloc_answers[0], 0);
    assert_eq!(env.optee.borrow().alloc_answers[1], 0);
    assert_eq!(env.resume(VM1, r1[3], 0, 0)[0], OK);
}

#[test]
fn foreign_interrupt_returns_to_guest_then_resumes() {
    let mut env = Env::new();
    env.plan(vec![Step::ForeignIntr, Step::ForeignIntr]);
    env.mem(VM1).put_arg(
        ARG_IPA,
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0)],
        ),
    );
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    assert_eq!(env.med.vm_stats(VM1).unwrap().waiting, 1);
    let h = r[3];
    assert!(
        h < 0x100,
        "the guest sees the mediator's handle, not OP-TEE's thread id"
    );
    let r = env.resume(VM1, h, 0, 0);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    assert_eq!(env.resume(VM1, h, 0, 0)[0], OK);
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).params[0].u0, 1000);
    assert_eq!(env.hv_live(), 0);
}

#[test]
fn double_resume_and_foreign_resume_get_eresume() {
    let mut env = Env::new();
    env.plan(vec![Step::ForeignIntr]);
    env.plan(vec![Step::ForeignIntr]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    env.mem(VM2)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let h1 = env.call(VM1, ARG_IPA)[3];
    let h2 = env.call(VM2, ARG_IPA)[3];
    let eresume = u64::from(OPTEE_SMC_RETURN_ERESUME);
    // No such call at all.
    assert_eq!(env.resume(VM1, 0x4242, 0, 0)[0], eresume);
    // VM2 tries VM1's handle: handles are per VM, so unless VM2 has the same handle it
    // fails; if it has, it resumes its own call, never VM1's.
    let n = env.log_len();
    if h1 != h2 {
        assert_eq!(env.resume(VM2, h1, 0, 0)[0], eresume);
        assert_eq!(env.log_len(), n);
    }
    assert_eq!(env.resume(VM1, h1, 0, 0)[0], OK);
    assert_eq!(env.resume(VM1, h1, 0, 0)[0], eresume, "resumed twice");
    assert_eq!(env.last_record().fault, Some(Fault::BadResume));
    assert_eq!(
        env.med.vm_stats(VM2).unwrap().waiting,
        1,
        "VM2's call untouched"
    );
    assert_eq!(env.resume(VM2, h2, 0, 0)[0], OK);
    // A new call is not resumable before it is parked.
    assert_eq!(env.resume(VM2, h2, 0, 0)[0], eresume);
    env.check();
}

// ---------------------------------------------------------------------------------------
// TOCTOU: a sibling vCPU rewrites the argument and page list while OP-TEE runs.
// ---------------------------------------------------------------------------------------

#[test]
fn sibling_vcpu_rewrite_is_invisible_to_optee() {
    let mut env = Env::new();
    let pages = data_ipas(0, 2);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![
            val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 1, 2, 3),
            tmem_nc(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, list_ipa(0), 0, 8192, 0),
        ],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    let arg_pa = env.mem[&VM1].pa_of(ARG_IPA);
    let list_pa = env.mem[&VM1].pa_of(list_ipa(0));
    let outside = 0x7777_0000u64;
    env.plan(vec![Step::Mutate(Box::new(move |w: &mut World| {
        let evil = msg(
            OPTEE_MSG_CMD_REGISTER_SHM,
            vec![
                val(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, outside, 1 << 30, 0),
                val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, 0x1234),
                val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 0, 0, 0),
            ],
        );
        w.write_pa(arg_pa, &evil.to_bytes());
        let mut b = [0u8; 8];
        write_u64(&mut b, 0, outside);
        w.write_pa(list_pa, &b);
    }))]);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    let seen = env.optee.borrow().seen[0].clone();
    assert_eq!(seen.header.cmd, OPTEE_MSG_CMD_INVOKE_COMMAND);
    assert_eq!(seen.params.len(), 2);
    assert_eq!(
        seen.params[0],
        val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 1, 2, 3)
    );
    // The fake OP-TEE re-checked the page list at completion: still the pinned frames.
    assert_eq!(env.mem(VM1).pinned(), 0);
    env.check();
}

// ---------------------------------------------------------------------------------------
// DISABLE_SHM_CACHE cookies.
// ---------------------------------------------------------------------------------------

#[test]
fn disable_shm_cache_releases_own_cookies_and_hides_foreign_ones() {
    let mut env = Env::new();
    assert_eq!(register(&mut env, VM1, 0xc1, 0, 2), TEEC_SUCCESS);
    env.optee
        .borrow_mut()
        .cache_cookies
        .extend([(2, 0xdead_beef), (2, 0xc1)]);
    let r = env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE);
    assert_eq!(
        (r[0], regpair(r[1], r[2])),
        (OK, 0xc1),
        "foreign cookie skipped, own returned"
    );
    assert_eq!(env.mem(VM1).pinned(), 0, "returned buffer unpinned");
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE)[0],
        u64::from(OPTEE_SMC_RETURN_ENOTAVAIL)
    );
    // Only unknown cookies: bounded retries, then EBUSY.
    let many = (0..20).map(|i| (2, 0xf00 + i));
    env.optee.borrow_mut().cache_cookies.extend(many);
    let n = env.log_len();
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE)[0],
        u64::from(OPTEE_SMC_RETURN_EBUSY)
    );
    assert_eq!(
        env.log_len() - n,
        crate::limits::DEFAULT_MAX_INTERNAL_RESUMES as usize
    );
    env.check();
}

#[test]
fn disable_shm_cache_frees_cached_rpc_args() {
    let mut env = Env::new();
    env.plan(vec![Step::Alloc(64)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(env.resume(VM1, r[3], RPC_ARG_IPA, 0xcafe)[0], OK);
    assert_eq!(env.hv_live(), 1, "cached RPC arg page");
    env.optee.borrow_mut().cache_cookies.push_back((2, 0xcafe));
    let r = env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE);
    assert_eq!((r[0], regpair(r[1], r[2])), (OK, 0xcafe));
    assert_eq!(env.hv_live(), 0);
}

// ---------------------------------------------------------------------------------------
// RPC argument cookies never cross VMs or calls (OP-TEE's RPC-argument cache).
// ---------------------------------------------------------------------------------------

#[test]
fn enable_shm_cache_is_answered_here_and_never_reaches_optee() {
    let mut env = Env::new();
    let n = env.log_len();
    let r = env.fast(VM1, OPTEE_SMC_ENABLE_SHM_CACHE);
    assert_eq!(r[0], OK, "OK: Linux retries until it gets it");
    assert_eq!(r[7], 0xdead, "a7 preserved for the guest");
    assert_eq!(env.log_len(), n, "never forwarded");
    assert!(!env.optee.borrow().shm_cache, "OP-TEE's cache stays off");
    assert_eq!(env.last_record().fault, None);
    // With the cache off a call's RPC argument lives and dies within the call.
    env.plan(vec![
        Step::Alloc(256),
        Step::Cmd(OPTEE_RPC_CMD_GET_TIME),
        Step::Free,
    ]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(drive(&mut env, VM1, r, 0xa11c, |_, _| {}), OK);
    assert!(env.optee.borrow().kept.is_empty());
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_free_of_a_cookie_the_vm_never_allocated_is_answered_here() {
    let mut env = Env::new();
    // An OP-TEE thread kept an RPC argument that is not VM1's (it could name anything).
    env.optee.borrow_mut().kept.push_back(0x4141_4141_0000_0000);
    env.mem(VM1).put_arg(
        ARG_IPA,
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0)],
        ),
    );
    let n = env.log_len();
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], OK, "the guest never saw the FREE");
    assert_eq!(env.last_record().fault, Some(Fault::UnknownCookie));
    let log = env.optee.borrow().log[n..].to_vec();
    assert_eq!(log.len(), 2, "the entry, then the mediator's own answer");
    assert_eq!(log[1][0] as u32, OPTEE_SMC_RETURN_FROM_RPC);
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).params[0].u0, 1000, "done");
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_free_of_another_vms_cookie_never_reaches_the_guest() {
    let mut env = Env::new();
    // OP-TEE's cache on (any guest could turn it on before the mediator answered
    // ENABLE_SHM_CACHE itself): a VM1 call leaves its RPC argument, with a cookie VM1
    // chose, on its thread; VM2's next call lands there, by CALL_WITH_ARG, then by
    // CALL_WITH_RPC_ARG.
    env.optee.borrow_mut().shm_cache = true;
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0)],
    );
    let (hi, lo) = split_regpair(ARG_IPA);
    let calls = [OPTEE_SMC_CALL_WITH_ARG, OPTEE_SMC_CALL_WITH_RPC_ARG];
    for (i, fid) in calls.into_iter().enumerate() {
        let chosen = 0x4141_4141_0000_0000 + i as u64;
        env.plan(vec![Step::Alloc(256)]);
        env.mem(VM1)
            .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
        let r = env.call(VM1, ARG_IPA);
        assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_ALLOC));
        let at = RPC_ARG_IPA + i as u64 * 4096;
        assert_eq!(env.resume(VM1, r[3], at, chosen)[0], OK);
        assert_eq!(env.optee.borrow().kept, [chosen], "kept by OP-TEE");
        let hv = env.hv_live();

        env.mem(VM2).put_arg(ARG_IPA, &m);
        let r = env.smc(VM2, [u64::from(fid), hi, lo, 0, 0, 0, 0, 0]);
        assert_eq!(r[0], OK, "{fid:#x}: VM2 never sees VM1's cookie");
        assert_eq!(env.last_record().fault, Some(Fault::UnknownCookie));
        assert_eq!(env.mem(VM2).get_arg(ARG_IPA, 1).params[0].u0, 1000);
        assert!(env.optee.borrow().kept.is_empty());
        assert_eq!(
            env.med.vm_stats(VM1).unwrap().rpc_args,
            i + 1,
            "VM2's trap freed nothing of VM1's"
        );
        assert_eq!(env.hv_live(), hv);
    }
    env.destroy(VM1);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_free_of_the_vms_own_cookie_still_reaches_it() {
    let mut env = Env::new();
    env.optee.borrow_mut().shm_cache = true;
    env.plan(vec![Step::Alloc(256)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(env.resume(VM1, r[3], RPC_ARG_IPA, 0xa11c)[0], OK);
    assert_eq!(env.hv_live(), 1, "the kept RPC argument's page");
    // VM1's next call lands on the thread that kept it: the FREE is the guest's to do.
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(
        (r[0], regpair(r[1], r[2])),
        (rpc(OPTEE_SMC_RPC_FUNC_FREE), 0xa11c)
    );
    assert_eq!(env.last_record().fault, None);
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 0);
    assert_eq!(env.hv_live(), 1, "the call's shadow only");
    assert_eq!(env.resume(VM1, r[3], 0, 0)[0], OK);
    assert_eq!(env.hv_live(), 0, "every page back in the pool");
    env.check();
}

// ---------------------------------------------------------------------------------------
// VM destruction.
// ---------------------------------------------------------------------------------------

fn assert_vm_gone(env: &Env, vm: VmId) {
    assert!(env.med.vm_stats(vm).is_none());
    assert_eq!(env.mem[&vm].pinned(), 0);
    let last = *env.optee.borrow().log.last().unwrap();
    assert_eq!(last[0] as u32, OPTEE_SMC_VM_DESTROYED);
    assert_eq!((last[1], last[7]), (vm.client_id(), 0));
    assert!(!env.optee.borrow().vms.contains(&vm.client_id()));
}

#[test]
fn destroy_in_the_middle_of_a_call() {
    let mut env = Env::new();
    assert_eq!(register(&mut env, VM1, 0x1, 0, 4), TEEC_SUCCESS);
    env.plan(vec![Step::ForeignIntr]);
    let pages = data_ipas(50, 3);
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    env.mem(VM1).put_arg(
        ARG_IPA,
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
                list_ipa(0),
                0,
                3 * 4096,
                0,
            )],
        ),
    );
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    assert_eq!(env.mem(VM1).pinned(), 7);
    env.destroy(VM1);
    assert_vm_gone(&env, VM1);
    assert_eq!(env.hv_live(), 0);
    // The dead VM's SMCs are refused; VM2 still works.
    assert_eq!(
        env.resume(VM1, r[3], 0, 0)[0],
        u64::from(OPTEE_SMC_RETURN_UNKNOWN_FUNCTION)
    );
    assert_eq!(register(&mut env, VM2, 0x1, 0, 1), TEEC_SUCCESS);
    assert_eq!(
        env.med.vm_destroyed(VM1, env.mem.get_mut(&VM1).unwrap()),
        Err(Error::UnknownVm)
    );
}

#[test]
fn destroy_in_the_middle_of_an_rpc() {
    let mut env = Env::new();
    env.plan(vec![
        Step::Alloc(256),
        Step::ShmAlloc(4096),
        Step::Cmd(OPTEE_RPC_CMD_FS),
    ]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    env.mem(VM1).put_page_list(list_ipa(4), &data_ipas(0, 1));
    let r = env.call(VM1, ARG_IPA);
    let r = env.resume(VM1, r[3], RPC_ARG_IPA, 0xa);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_CMD));
    let mut ans = env.mem(VM1).get_arg(RPC_ARG_IPA, 1);
    ans.params[0] = tmem_nc(OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT, list_ipa(4), 0, 4096, 0xb);
    env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    let r = env.resume(VM1, r[3], 0, 0);
    assert_eq!(
        r[0],
        rpc(OPTEE_SMC_RPC_FUNC_CMD),
        "parked in the FS command"
    );
    assert_eq!(env.mem(VM1).pinned(), 1);
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 1, "one RPC arg");
    env.destroy(VM1);
    assert_vm_gone(&env, VM1);
    assert_eq!(env.hv_live(), 0, "shadow, RPC arg and list pages freed");
}

// ---------------------------------------------------------------------------------------
// Limits: each at the cap and at cap + 1.
// ---------------------------------------------------------------------------------------

fn invoke_with_pages(env: &mut Env, vm: VmId, n: u64) -> (u32, Option<Fault>) {
    // Repeating a few frames is allowed (pins nest); the list is what counts.
    let pages: Vec<u64> = (0..n).map(|i| FakeMem::ipa(256 + i % 300)).collect();
    env.mem(vm).put_page_list(list_ipa(0), &pages);
    env.mem(vm).put_arg(
        ARG_IPA,
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
                list_ipa(0),
                0,
                n * 4096,
                0,
            )],
        ),
    );
    assert_eq!(env.call(vm, ARG_IPA)[0], OK);
    (
        env.mem(vm).get_arg(ARG_IPA, 1).header.ret,
        env.last_record().fault,
    )
}

#[test]
fn limit_pages_per_buffer() {
    let mut env = Env::with_limits(Limits {
        max_pages_per_buffer: 1100,
        ..Limits::default()
    });
    assert_eq!(invoke_with_pages(&mut env, VM1, 1100), (TEEC_SUCCESS, None));
    assert_eq!(
        invoke_with_pages(&mut env, VM1, 1101),
        (TEEC_ERROR_OUT_OF_MEMORY, Some(Fault::Limit))
    );
    assert_eq!(env.mem(VM1).pinned(), 0);
    // The default beats Xen's 129 pages by far.
    let mut env = Env::new();
    assert_eq!(
        invoke_with_pages(
            &mut env,
            VM1,
            crate::limits::DEFAULT_MAX_PAGES_PER_BUFFER as u64
        ),
        (TEEC_SUCCESS, None)
    );
    env.check();
}

#[test]
fn limit_pages_per_trap() {
    let mut env = Env::with_limits(Limits {
        max_pages_per_trap: 1000 + 2 + 1000 + 2,
        // This test is about the trap's budget, not about what OP-TEE can map.
        max_optee_map_pages_per_vm: 4096,
        ..Limits::default()
    });
    let pages: Vec<u64> = (0..1000).map(|i| FakeMem::ipa(256 + i % 300)).collect();
    env.mem(VM1).put_page_list(list_ipa(0), &pages);
    let p = tmem_nc(
        OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
        list_ipa(0),
        0,
        1000 * 4096,
        0,
    );
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![p, p]));
    env.call(VM1, ARG_IPA);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 2).header.ret,
        TEEC_SUCCESS,
        "at the budget"
    );
    assert_eq!(env.last_record().pages_translated, 2000);
    let q = tmem_nc(OPTEE_MSG_ATTR_TYPE_TMEM_INPUT, list_ipa(0), 0, 4096, 0);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![p, p, q]));
    env.call(VM1, ARG_IPA);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 3).header.ret,
        TEEC_ERROR_OUT_OF_MEMORY,
        "budget + 1"
    );
    assert_eq!(env.mem(VM1).pinned(), 0);
    env.check();
}

#[test]
fn limit_buffers_per_vm() {
    let mut env = Env::with_limits(Limits {
        max_buffers_per_vm: 3,
        ..Limits::default()
    });
    for c in 0..3 {
        assert_eq!(register(&mut env, VM1, c, c * 4, 1), TEEC_SUCCESS);
    }
    assert_eq!(register(&mut env, VM1, 3, 20, 1), TEEC_ERROR_OUT_OF_MEMORY);
    assert_eq!(env.mem(VM1).pinned(), 3);
    assert_eq!(register(&mut env, VM2, 3, 20, 1), TEEC_SUCCESS, "per VM");
    env.check();
}

#[test]
fn limit_pinned_pages_per_vm() {
    let mut env = Env::with_limits(Limits {
        max_pinned_pages_per_vm: 10,
        ..Limits::default()
    });
    assert_eq!(register(&mut env, VM1, 1, 0, 6), TEEC_SUCCESS);
    assert_eq!(
        register(&mut env, VM1, 2, 20, 5),
        TEEC_ERROR_OUT_OF_MEMORY,
        "6 + 5 > 10"
    );
    assert_eq!(
        register(&mut env, VM1, 3, 20, 4),
        TEEC_SUCCESS,
        "6 + 4 = 10"
    );
    assert_eq!(env.mem(VM1).pinned(), 10);
    env.check();
}

#[test]
fn limit_calls_per_vm() {
    let mut env = Env::with_limits(Limits {
        max_calls_per_vm: 2,
        ..Limits::default()
    });
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    env.plan(vec![Step::ForeignIntr]);
    env.plan(vec![Step::ForeignIntr]);
    let h1 = env.call(VM1, ARG_IPA)[3];
    let h2 = env.call(VM1, ARG_IPA)[3];
    let n = env.log_len();
    assert_eq!(
        env.call(VM1, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT)
    );
    assert_eq!(env.log_len(), n);
    env.plan(vec![]);
    env.mem(VM2)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    assert_eq!(env.call(VM2, ARG_IPA)[0], OK, "other VMs keep their share");
    assert_eq!(env.resume(VM1, h1, 0, 0)[0], OK);
    env.plan(vec![]);
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    assert_eq!(env.resume(VM1, h2, 0, 0)[0], OK);
}

#[test]
fn limit_params() {
    let mut env = Env::with_limits(Limits {
        max_params: 3,
        ..Limits::default()
    });
    let v = val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 0, 0, 0);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![v; 3]));
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![v; 4]));
    assert_eq!(
        env.call(VM1, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_EBADCMD)
    );
    // num_params = u32::MAX never allocates or reads beyond the cap.
    let mut h = [0u8; 32];
    MsgArgHeader {
        cmd: 1,
        num_params: u32::MAX,
        ..Default::default()
    }
    .write(&mut h)
    .unwrap();
    env.mem(VM1).poke(ARG_IPA, &h);
    assert_eq!(
        env.call(VM1, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_EBADCMD)
    );
}

#[test]
fn limit_rpc_args_per_vm() {
    let mut env = Env::with_limits(Limits {
        max_rpc_args_per_vm: 2,
        ..Limits::default()
    });
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    for i in 0..3u64 {
        env.plan(vec![Step::Alloc(64)]);
        let r = env.call(VM1, ARG_IPA);
        assert_eq!(
            env.resume(VM1, r[3], RPC_ARG_IPA + i * 4096, 0x100 + i)[0],
            OK
        );
    }
    let a = env.optee.borrow().alloc_answers.clone();
    assert!(a[0] != 0 && a[1] != 0, "at the cap");
    assert_eq!(a[2], 0, "cap + 1 refused");
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 2);
}

#[test]
fn hypervisor_page_exhaustion_is_enomem_not_a_panic() {
    let world = std::rc::Rc::new(std::cell::RefCell::new(World::default()));
    let (optee, _st) = FakeOpTee::new(&world);
    let mut hv = FakeHv::new(&world);
    hv.cap = 0;
    let med = TestMediator::probe(optee, hv, Recorder::default(), Limits::default()).unwrap();
    med.vm_created(VM1).unwrap();
    let mut mem = FakeMem::new(&world, VM1.client_id(), 16);
    mem.put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let (hi, lo) = split_regpair(ARG_IPA);
    let r = med.handle_smc(
        VM1,
        &mut mem,
        [u64::from(OPTEE_SMC_CALL_WITH_ARG), hi, lo, 0, 0, 0, 0, 0],
        0,
    );
    assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_ENOMEM));
}

#[test]
fn trace_records_every_trap() {
    let mut env = Env::new();
    let before = env.trace.borrow().len();
    env.fast(VM2, OPTEE_SMC_CALLS_UID);
    register(&mut env, VM2, 0x42, 0, 5);
    let t = env.trace.borrow();
    assert_eq!(t.len(), before + 2);
    assert_eq!(
        (t[before].vm, t[before].func, t[before].ret),
        (VM2, OPTEE_SMC_CALLS_UID, OPTEE_MSG_UID[0])
    );
    assert_eq!(
        (t[before + 1].func, t[before + 1].pages_translated),
        (OPTEE_SMC_CALL_WITH_ARG, 5)
    );
}

#[test]
fn internal_resume_budget_bounces_the_guest_and_keeps_the_answer() {
    let mut env = Env::new();
    // OP-TEE asks for ten unservable allocations in a row: the mediator answers them itself
    // until the trap budget runs out, then bounces the guest with FOREIGN_INTR.
    env.plan((0..10).map(|_| Step::Alloc(1 << 20)).collect());
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    let budget = crate::limits::DEFAULT_MAX_INTERNAL_RESUMES as usize;
    assert_eq!(env.optee.borrow().alloc_answers.len(), budget);
    // The guest's resume delivers the parked answer; its own a1/a2 are ignored.
    assert_eq!(env.resume(VM1, r[3], RPC_ARG_IPA, 5)[0], OK);
    let st = env.optee.borrow();
    assert_eq!(st.alloc_answers.len(), 10);
    assert!(st.alloc_answers.iter().all(|a| *a == 0));
}

// ---------------------------------------------------------------------------------------
// CALL_WITH_RPC_ARG and CALL_WITH_REGD_ARG.
// ---------------------------------------------------------------------------------------

/// Answer every RPC CMD of a call whose RPC argument is inline at `rpc_at` (read and
/// written through `peek`/`poke` closures); returns the final a0.
fn drive_inline(
    env: &mut Env,
    vm: VmId,
    mut r: [u64; 8],
    rpc_at: impl Fn(&Env) -> (u64, u64),
) -> u64 {
    let mut n = 0;
    while is_rpc(r[0] as u32) {
        n += 1;
        assert!(n < 20);
        assert_eq!(
            (r[0] as u32) & 0xffff,
            OPTEE_SMC_RPC_FUNC_CMD,
            "inline calls never ALLOC"
        );
        // The request, split over up to two guest pages.
        let (a, b) = rpc_at(env);
        let mut bytes = env.mem(vm).peek(a, 64.min(4096 - (a % 4096) as usize));
        if bytes.len() < 64 {
            bytes.extend(env.mem(vm).peek(b, 64 - bytes.len()));
        }
        let req = MsgArg::parse_n(&bytes, 1).unwrap();
        assert_eq!(req.header.cmd, OPTEE_RPC_CMD_GET_TIME);
        let mut ans = req.clone();
        ans.header.ret = 0;
        ans.params[0].u0 = 4242;
        ans.params[0].attr = 0xbad;
        let out = ans.to_bytes();
        let first = 64.min(4096 - (a % 4096) as usize);
        env.mem(vm).poke(a, &out[..first]);
        if first < 64 {
            env.mem(vm).poke(b, &out[first..]);
        }
        r = env.resume(vm, r[3], 0, 0);
    }
    r[0]
}

#[test]
fn call_with_rpc_arg_shadows_the_inline_rpc_argument() {
    let mut env = Env::new();
    env.plan(vec![Step::Cmd(OPTEE_RPC_CMD_GET_TIME)]);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0)],
    );
    env.mem(VM1).put_arg(ARG_IPA, &m);
    let (hi, lo) = split_regpair(ARG_IPA);
    let r = env.smc(
        VM1,
        [
            u64::from(OPTEE_SMC_CALL_WITH_RPC_ARG),
            hi,
            lo,
            0,
            0,
            0,
            0,
            0,
        ],
    );
    let fwd = env.optee.borrow().log.last().copied().unwrap();
    assert_eq!(fwd[0] as u32, OPTEE_SMC_CALL_WITH_RPC_ARG);
    let rpc_ipa = ARG_IPA + arg_size(1) as u64;
    let a0 = drive_inline(&mut env, VM1, r, |_| (rpc_ipa, 0));
    assert_eq!(a0, OK);
    let got = env.optee.borrow().rpc_answers[0].clone();
    assert_eq!(
        got.params[0],
        val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 4242, 0, 0)
    );
    assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).params[0].u0, 1000);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn call_with_regd_arg_reads_the_argument_through_the_buffer_pages() {
    let mut env = Env::new();
    // A 2-page registered buffer on scattered pages; the argument straddles its pages.
    assert_eq!(register(&mut env, VM1, 0xb0f, 40, 2), TEEC_SUCCESS);
    let pages = data_ipas(40, 2);
    let offs = 4096 - 48;
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, 1, 2, 3)],
    );
    let bytes = {
        let mut a = m.clone();
        a.header.num_params = 1;
        a.to_bytes()
    };
    env.mem(VM1).poke(pages[0] + offs, &bytes[..48]);
    env.mem(VM1).poke(pages[1], &bytes[48..]);
    env.plan(vec![Step::Cmd(OPTEE_RPC_CMD_GET_TIME)]);
    let seen_before = env.optee.borrow().seen.len();
    let (hi, lo) = split_regpair(0xb0f);
    let r = env.smc(
        VM1,
        [
            u64::from(OPTEE_SMC_CALL_WITH_REGD_ARG),
            hi,
            lo,
            offs,
            0,
            0,
            0,
            0,
        ],
    );
    let fwd = env.optee.borrow().log.last().copied().unwrap();
    assert_eq!(
        fwd[0] as u32, OPTEE_SMC_CALL_WITH_RPC_ARG,
        "OP-TEE gets the shadow"
    );
    // The inline RPC argument is at offs + 64 in the buffer: page 1, offset 16.
    let p1 = pages[1];
    let a0 = drive_inline(&mut env, VM1, r, move |_| (p1 + 16, 0));
    assert_eq!(a0, OK);
    let seen = env.optee.borrow().seen[seen_before].clone();
    assert_eq!(
        seen.params[0],
        val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, 1, 2, 3)
    );
    // Results land in the buffer, across the page boundary.
    let mut back = env.mem(VM1).peek(pages[0] + offs, 48);
    back.extend(env.mem(VM1).peek(pages[1], 16));
    let back = MsgArg::parse_n(&back, 1).unwrap();
    assert_eq!(back.header.ret, TEEC_SUCCESS);
    assert_eq!(
        (back.params[0].u0, back.params[0].u1, back.params[0].u2),
        (1001, 1002, 1003)
    );
    env.check();
}

#[test]
fn call_with_regd_arg_bad_cookie_or_offset() {
    let mut env = Env::new();
    assert_eq!(register(&mut env, VM1, 0xb0f, 40, 1), TEEC_SUCCESS);
    let n = env.log_len();
    let ebadaddr = u64::from(OPTEE_SMC_RETURN_EBADADDR);
    let regd = |c: u64, o: u64| {
        [
            u64::from(OPTEE_SMC_CALL_WITH_REGD_ARG),
            c >> 32,
            c & 0xffff_ffff,
            o,
            0,
            0,
            0,
            0,
        ]
    };
    assert_eq!(env.smc(VM1, regd(0xdead, 0))[0], ebadaddr, "unknown cookie");
    assert_eq!(
        env.smc(VM2, regd(0xb0f, 0))[0],
        ebadaddr,
        "another VM's cookie"
    );
    assert_eq!(
        env.smc(VM1, regd(0xb0f, 4096))[0],
        ebadaddr,
        "offset past the buffer"
    );
    assert_eq!(
        env.smc(VM1, regd(0xb0f, 4096 - 16))[0],
        ebadaddr,
        "header past the buffer"
    );
    assert_eq!(env.smc(VM1, regd(0xb0f, 4))[0], ebadaddr, "unaligned");
    assert_eq!(env.log_len(), n);
}

#[test]
fn an_inline_rpc_area_outside_the_vm_is_refused_up_front() {
    let mut env = Env::new();
    let ebadaddr = u64::from(OPTEE_SMC_RETURN_EBADADDR);
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 1, 2, 3)],
    );
    // The argument is the last bytes of RAM: readable, but the RPC argument after it is not.
    let at = RAM_BASE + RAM_PAGES * 4096 - arg_size(1) as u64;
    env.mem(VM1).put_arg(at, &m);
    let n = env.log_len();
    let (hi, lo) = split_regpair(at);
    let rpc_arg = [
        u64::from(OPTEE_SMC_CALL_WITH_RPC_ARG),
        hi,
        lo,
        0,
        0,
        0,
        0,
        0,
    ];
    assert_eq!(env.smc(VM1, rpc_arg)[0], ebadaddr);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    assert_eq!(env.log_len(), n, "refused before OP-TEE");
    // Without an RPC area the same argument is fine.
    assert_eq!(env.call(VM1, at)[0], OK);
    assert_eq!(env.mem(VM1).get_arg(at, 1).header.ret, TEEC_SUCCESS);

    // Inside a registered buffer: the argument fits before the buffer's end, its RPC
    // argument does not.
    assert_eq!(register(&mut env, VM1, 0xb0f, 40, 1), TEEC_SUCCESS);
    let offs = 4096 - arg_size(1) as u64;
    env.mem(VM1).put_arg(data_ipas(40, 1)[0] + offs, &m);
    let n = env.log_len();
    let regd = [
        u64::from(OPTEE_SMC_CALL_WITH_REGD_ARG),
        0,
        0xb0f,
        offs,
        0,
        0,
        0,
        0,
    ];
    assert_eq!(env.smc(VM1, regd)[0], ebadaddr);
    assert_eq!(env.last_record().fault, Some(Fault::BadAddress));
    assert_eq!(env.log_len(), n, "refused before OP-TEE");
    assert_eq!(env.hv_live(), 0);
    assert_eq!(env.med.vm_stats(VM1).unwrap().calls, 0);
    env.check();
}

#[test]
fn rpc_arg_is_masked_when_it_cannot_be_shadowed() {
    let world = std::rc::Rc::new(std::cell::RefCell::new(World::default()));
    let (optee, st) = FakeOpTee::new(&world);
    st.borrow_mut().caps &= !OPTEE_SMC_SEC_CAP_RPC_ARG;
    let p = crate::probe(&optee).unwrap();
    assert_eq!(p.rpc_param_count, 0);
    let med = TestMediator::new(
        optee,
        FakeHv::new(&world),
        Recorder::default(),
        Limits::default(),
        p,
    );
    med.vm_created(VM1).unwrap();
    let mut mem = FakeMem::new(&world, VM1.client_id(), 16);
    let caps = med.handle_smc(
        VM1,
        &mut mem,
        [
            u64::from(OPTEE_SMC_EXCHANGE_CAPABILITIES),
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ],
        0,
    );
    assert_eq!(caps[1] & OPTEE_SMC_SEC_CAP_RPC_ARG, 0);
    assert_eq!(caps[3], 0);
    for fid in [OPTEE_SMC_CALL_WITH_RPC_ARG, OPTEE_SMC_CALL_WITH_REGD_ARG] {
        let r = med.handle_smc(
            VM1,
            &mut mem,
            [u64::from(fid), 0, 0x4000_0000, 0, 0, 0, 0, 0],
            0,
        );
        assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_UNKNOWN_FUNCTION));
    }
    // A count too large to share a page with the largest argument is masked too.
    let p = crate::Probe {
        rpc_param_count: 120,
        sec_caps: p.sec_caps | OPTEE_SMC_SEC_CAP_RPC_ARG,
        ..p
    };
    let (optee, _) = FakeOpTee::new(&world);
    let med = TestMediator::new(
        optee,
        FakeHv::new(&world),
        Recorder::default(),
        Limits::default(),
        p,
    );
    assert_eq!(med.inline_rpc_size(), None);
}

#[test]
fn disable_shm_cache_is_busy_while_the_vm_has_calls() {
    let mut env = Env::new();
    env.plan(vec![Step::Alloc(256), Step::Cmd(OPTEE_RPC_CMD_GET_TIME)]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    let r = env.resume(VM1, r[3], RPC_ARG_IPA, 0xcafe);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_CMD));
    // A (buggy) OP-TEE offering the in-use RPC arg must not get it freed.
    env.optee.borrow_mut().cache_cookies.push_back((2, 0xcafe));
    let n = env.log_len();
    assert_eq!(
        env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE)[0],
        u64::from(OPTEE_SMC_RETURN_EBUSY)
    );
    assert_eq!(env.log_len(), n);
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 1);
    assert_eq!(env.resume(VM1, r[3], 0, 0)[0], OK);
    // Idle again: the cookie comes back and the page is freed.
    let r = env.fast(VM1, OPTEE_SMC_DISABLE_SHM_CACHE);
    assert_eq!((r[0], regpair(r[1], r[2])), (OK, 0xcafe));
    assert_eq!(env.hv_live(), 0);
}

#[test]
fn destroy_unwinds_parked_calls_in_optee() {
    let mut env = Env::new();
    env.plan(vec![
        Step::ForeignIntr,
        Step::Alloc(256),
        Step::Cmd(OPTEE_RPC_CMD_FS),
        Step::ForeignIntr,
    ]);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM1, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    let seen = env.optee.borrow().seen.len();
    let n = env.log_len();
    env.destroy(VM1);
    let st = env.optee.borrow();
    assert_eq!(
        st.seen.len(),
        seen + 1,
        "OP-TEE finished the call before VM_DESTROYED"
    );
    let resumes: Vec<_> = st.log[n..]
        .iter()
        .filter(|r| r[0] as u32 == OPTEE_SMC_RETURN_FROM_RPC)
        .collect();
    // FOREIGN_INTR, ALLOC (refused), then the FS command cannot run without an RPC
    // argument, FOREIGN_INTR, done: three resumes.
    assert_eq!(resumes.len(), 3);
    assert!(resumes.iter().all(|r| r[7] == VM1.client_id()));
    assert_eq!(st.alloc_answers, vec![0], "no memory for a dying VM");
    assert!(
        st.rpc_answers.is_empty(),
        "the command was never answered by the guest"
    );
    drop(st);
    assert_vm_gone(&env, VM1);
    assert_eq!(env.hv_live(), 0);
}

#[test]
fn destroy_abandons_a_call_that_never_finishes() {
    let mut env = Env::new();
    env.plan((0..40).map(|_| Step::ForeignIntr).collect());
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    env.call(VM1, ARG_IPA);
    let n = env.log_len();
    env.destroy(VM1);
    let resumes = env.optee.borrow().log[n..]
        .iter()
        .filter(|r| r[0] as u32 == OPTEE_SMC_RETURN_FROM_RPC)
        .count();
    assert_eq!(resumes, crate::limits::DEFAULT_MAX_DESTROY_RESUMES as usize);
    assert_vm_gone(&env, VM1);
    assert_eq!(env.hv_live(), 0);
}

// ---------------------------------------------------------------------------------------
// Sharing OP-TEE's threads: shares, and reaping parked calls of a VM above its share.
// ---------------------------------------------------------------------------------------

/// The cookie of `park_in_cmd`'s call `i`'s RPC argument.
fn parked_cookie(i: u64) -> u64 {
    0xa000 + i
}

/// The argument of `park_in_cmd`'s call `i`.
fn parked_arg(i: u64) -> u64 {
    RAM_BASE + (1 + i) * 4096
}

/// `vm` opens call `i` (an INVOKE with a 2-page input buffer) that OP-TEE parks in an RPC
/// command (after ALLOC) the guest never answers; when answered, OP-TEE frees the RPC
/// argument and completes. Returns its handle.
fn park_in_cmd(env: &mut Env, vm: VmId, i: u64) -> u64 {
    env.plan(vec![
        Step::Alloc(256),
        Step::Cmd(OPTEE_RPC_CMD_FS),
        Step::Free,
    ]);
    env.mem(vm)
        .put_page_list(list_ipa(8 + i), &data_ipas(20 * i, 2));
    env.mem(vm).put_arg(
        parked_arg(i),
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
                list_ipa(8 + i),
                0,
                2 * 4096,
                0,
            )],
        ),
    );
    let r = env.call(vm, parked_arg(i));
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_ALLOC));
    let r = env.resume(vm, r[3], RPC_ARG_IPA + i * 4096, parked_cookie(i));
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_CMD), "parked");
    r[3]
}

/// Answer `park_in_cmd`'s call `i` (handle `h`): it completes.
fn answer_parked(env: &mut Env, vm: VmId, i: u64, h: u64) {
    let r = env.resume(vm, h, 0, 0);
    assert_eq!(drive(env, vm, r, parked_cookie(i), |_, _| {}), OK);
    assert_eq!(
        env.mem(vm).get_arg(parked_arg(i), 1).header.ret,
        TEEC_SUCCESS
    );
}

fn thread_count(env: &mut Env, vm: VmId) -> u64 {
    let r = env.fast(vm, OPTEE_SMC_GET_THREAD_COUNT);
    assert_eq!(r[0], OK);
    r[1]
}

#[test]
fn a_vm_alone_may_hold_every_thread_and_is_never_reaped() {
    let mut env = Env::build(Limits::default(), 2, &[VM1]);
    assert_eq!(thread_count(&mut env, VM1), 2);
    let h: Vec<u64> = (0..2).map(|i| park_in_cmd(&mut env, VM1, i)).collect();
    env.now = 1_000 * crate::limits::DEFAULT_MAX_PARK_MS;
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    assert_eq!(
        env.call(VM1, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT)
    );
    // OP-TEE's own answer (its threads are all VM1's): nothing to reap, no guest fault.
    let rec = env.last_record();
    assert_eq!((rec.fault, rec.reaped), (None, None));
    assert_eq!(env.med.vm_stats(VM1).unwrap().waiting, 2);
    assert_eq!(env.optee.borrow().threads_in_use(), 2);
    for (i, h) in h.into_iter().enumerate() {
        answer_parked(&mut env, VM1, i as u64, h);
    }
    assert_eq!(env.mem(VM1).pinned(), 0);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_vm_holding_every_thread_is_reaped_for_another_after_the_deadline() {
    let deadline = crate::limits::DEFAULT_MAX_PARK_MS;
    let mut env = Env::build(SHARED_THREADS, 2, &[VM1]);
    // VM1, alone, parks a call on each of OP-TEE's two threads.
    env.now = 1_000;
    let h0 = park_in_cmd(&mut env, VM1, 0);
    env.now = 2_000;
    let h1 = park_in_cmd(&mut env, VM1, 1);
    assert_eq!(env.mem(VM1).pinned(), 4);
    // VM2 comes: each VM's share is one thread.
    env.med.vm_created(VM2).unwrap();
    assert_eq!(thread_count(&mut env, VM1), 1);
    assert_eq!(thread_count(&mut env, VM2), 1);

    // VM2's call while VM1's calls are not parked longer than the deadline: OP-TEE has no
    // thread, and nothing is reaped.
    env.now = 1_000 + deadline;
    let m = msg(
        OPTEE_MSG_CMD_INVOKE_COMMAND,
        vec![val(OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0)],
    );
    env.mem(VM2).put_arg(ARG_IPA, &m);
    assert_eq!(
        env.call(VM2, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT)
    );
    assert_eq!(env.last_record().reaped, None);
    assert_eq!(env.med.vm_stats(VM1).unwrap().waiting, 2);
    assert_eq!(env.med.vm_stats(VM2).unwrap().calls, 0);

    // One millisecond later VM1's oldest call is past it: VM2's call reaps it and, in the
    // same trap, gets the thread.
    env.now += 1;
    let (seen, answers) = {
        let st = env.optee.borrow();
        (st.seen.len(), st.rpc_answers.len())
    };
    assert_eq!(env.call(VM2, ARG_IPA)[0], OK);
    let rec = env.last_record();
    assert_eq!((rec.fault, rec.reaped), (None, Some((VM1, h0 as u32))));
    assert_eq!(env.mem(VM2).get_arg(ARG_IPA, 1).params[0].u0, 1000);
    {
        let st = env.optee.borrow();
        assert_eq!(
            st.seen.len(),
            seen + 2,
            "VM1's call unwound, then VM2's ran"
        );
        assert_eq!(st.rpc_answers.len(), answers + 1);
        assert_eq!(
            st.rpc_answers.last().unwrap().header.ret,
            TEEC_ERROR_TARGET_DEAD,
            "VM1's command failed in OP-TEE"
        );
        assert_eq!(st.threads_in_use(), 1, "only VM1's other call");
    }
    let s1 = env.med.vm_stats(VM1).unwrap();
    assert_eq!((s1.calls, s1.waiting, s1.rpc_args), (1, 1, 1));
    assert_eq!(
        env.mem(VM1).pinned(),
        4,
        "the reaped call's pins wait for VM1's own trap"
    );
    env.check();

    // VM1 resumes the reaped call: ERESUME, and its message says the call failed.
    let eresume = u64::from(OPTEE_SMC_RETURN_ERESUME);
    assert_eq!(env.resume(VM1, h0, 0, 0)[0], eresume);
    assert_eq!(env.last_record().fault, Some(Fault::Reaped));
    let back = env.mem(VM1).get_arg(parked_arg(0), 1);
    assert_eq!(
        (back.header.ret, back.header.ret_origin),
        (TEEC_ERROR_COMMUNICATION, TEEC_ORIGIN_COMMS)
    );
    assert_eq!(env.mem(VM1).pinned(), 2, "its pins are gone");
    assert_eq!(env.resume(VM1, h0, 0, 0)[0], eresume, "told once");
    assert_eq!(env.last_record().fault, Some(Fault::BadResume));

    // VM1's other call is within its share now: never reaped, however long it waits.
    env.now += 100 * deadline;
    env.mem(VM2).put_arg(ARG_IPA, &m);
    assert_eq!(env.call(VM2, ARG_IPA)[0], OK);
    assert_eq!(env.last_record().reaped, None);
    answer_parked(&mut env, VM1, 1, h1);
    assert_eq!(env.optee.borrow().threads_in_use(), 0);
    for vm in [VM1, VM2] {
        assert_eq!(env.med.vm_stats(vm).unwrap(), crate::VmStats::default());
        assert_eq!(env.mem(vm).pinned(), 0);
    }
    assert_eq!(env.hv_live(), 0, "no page leaked");
    env.check();
}

#[test]
fn every_vm_refused_a_thread_reaps_one_of_a_vm_above_its_share() {
    let vm3 = VmId(3);
    let mut env = Env::build(SHARED_THREADS, 4, &[VM1]);
    env.mem
        .insert(vm3, FakeMem::new(&env.world, vm3.client_id(), RAM_PAGES));
    assert_eq!(thread_count(&mut env, VM1), 4);
    let h: Vec<u64> = (0..4).map(|i| park_in_cmd(&mut env, VM1, i)).collect();
    env.med.vm_created(VM2).unwrap();
    env.med.vm_created(vm3).unwrap();
    assert_eq!(env.med.calls_per_vm(), 1, "4 threads, 3 VMs");
    env.now = crate::limits::DEFAULT_MAX_PARK_MS + 1;

    // VM2's first call: OP-TEE has no thread, VM1 (4 calls) is reaped of its oldest.
    env.plan(vec![Step::ForeignIntr]);
    env.mem(VM2)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    let r = env.call(VM2, ARG_IPA);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    assert_eq!(env.last_record().reaped, Some((VM1, h[0] as u32)));
    let h2 = r[3];
    // VM3's first call: OP-TEE's four threads are VM1's three and VM2's one, so VM1, still
    // above its share, loses one more, and VM3 gets its thread.
    let n = env.log_len();
    env.mem(vm3)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    assert_eq!(env.call(vm3, ARG_IPA)[0], OK);
    assert_eq!(env.last_record().reaped, Some((VM1, h[1] as u32)));
    assert!(
        env.optee.borrow().log[n..]
            .iter()
            .any(|r| r[0] as u32 == OPTEE_SMC_RETURN_FROM_RPC && r[7] == VM1.client_id()),
        "VM1's call was unwound"
    );
    assert_eq!(env.med.vm_stats(VM1).unwrap().calls, 2);
    assert_eq!(env.optee.borrow().threads_in_use(), 3);

    // VM1 dies before it traps again: its remaining calls are unwound and every pin the
    // reaped calls left goes too.
    assert_eq!(env.mem(VM1).pinned(), 8);
    env.destroy(VM1);
    assert_eq!(env.mem(VM1).pinned(), 0);
    assert_eq!(env.resume(VM2, h2, 0, 0)[0], OK);
    assert_eq!(env.optee.borrow().threads_in_use(), 0);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_reaped_call_gives_back_the_shared_memory_optee_freed_while_unwinding() {
    let mut env = Env::build(SHARED_THREADS, 2, &[VM1]);
    // Call 0 gets a shared buffer from the guest (RPC SHM_ALLOC), then parks in a command;
    // unwound, OP-TEE frees the buffer (SHM_FREE) and the RPC argument on its way out.
    env.plan(vec![
        Step::Alloc(256),
        Step::ShmAlloc(4096),
        Step::Cmd(OPTEE_RPC_CMD_FS),
        Step::ShmFreeLast,
        Step::Free,
    ]);
    env.mem(VM1)
        .put_arg(parked_arg(0), &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    env.mem(VM1).put_page_list(list_ipa(4), &data_ipas(100, 1));
    let r = env.call(VM1, parked_arg(0));
    let r = env.resume(VM1, r[3], RPC_ARG_IPA, 0xa);
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_CMD), "SHM_ALLOC");
    let mut ans = env.mem(VM1).get_arg(RPC_ARG_IPA, 1);
    ans.params[0] = tmem_nc(
        OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
        list_ipa(4),
        0,
        4096,
        0x5a11,
    );
    env.mem(VM1).put_arg(RPC_ARG_IPA, &ans);
    let r = env.resume(VM1, r[3], 0, 0);
    assert_eq!(
        r[0],
        rpc(OPTEE_SMC_RPC_FUNC_CMD),
        "parked in the FS command"
    );
    let h0 = r[3];
    env.now = 1;
    let h1 = park_in_cmd(&mut env, VM1, 1);
    let s = env.med.vm_stats(VM1).unwrap();
    assert_eq!((s.buffers, s.pinned), (1, 3));

    env.med.vm_created(VM2).unwrap();
    env.now = 1 + crate::limits::DEFAULT_MAX_PARK_MS;
    env.mem(VM2)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    assert_eq!(env.call(VM2, ARG_IPA)[0], OK);
    assert_eq!(env.last_record().reaped, Some((VM1, h0 as u32)));
    assert!(!env
        .optee
        .borrow()
        .shm
        .contains_key(&(VM1.client_id(), 0x5a11)));
    let s = env.med.vm_stats(VM1).unwrap();
    assert_eq!(
        (s.calls, s.buffers, s.rpc_args),
        (1, 0, 1),
        "the buffer OP-TEE freed is gone, and the reaped call's RPC argument"
    );
    assert_eq!(s.pinned, 3, "its page stays pinned until VM1 traps");
    assert_eq!(env.mem(VM1).pinned(), 3);
    // VM1's next trap, whatever it is, drops it.
    assert_eq!(thread_count(&mut env, VM1), 1);
    assert_eq!(env.mem(VM1).pinned(), 2);
    env.check();
    answer_parked(&mut env, VM1, 1, h1);
    assert_eq!(
        env.resume(VM1, h0, 0, 0)[0],
        u64::from(OPTEE_SMC_RETURN_ERESUME)
    );
    assert_eq!(env.mem(VM1).pinned(), 0);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

/// A NONCONTIG temporary memref of `n` pages (the list names 300 guest pages over and
/// over, as a page list may) whose list starts at list page `list`.
fn big_tmem(env: &mut Env, list: u64, n: u64) -> MsgParam {
    let pages: Vec<u64> = (0..n).map(|i| FakeMem::ipa(256 + i % 300)).collect();
    env.mem(VM1).put_page_list(list_ipa(list), &pages);
    tmem_nc(
        OPTEE_MSG_ATTR_TYPE_TMEM_INOUT,
        list_ipa(list),
        0,
        n * 4096,
        0x5000 + list,
    )
}

#[test]
fn what_optee_could_not_map_at_once_is_refused_before_it() {
    // Issue 12, attack 1: two 1,500-page buffers in one call exhausted OP-TEE's
    // translation tables (it panicked past 2,544 pages for one VM; the limit is 1,536).
    let mut env = Env::new();
    let (a, b) = (big_tmem(&mut env, 0, 1500), big_tmem(&mut env, 8, 1500));
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![a, b]));
    let n = env.log_len();
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    let back = env.mem(VM1).get_arg(ARG_IPA, 2);
    assert_eq!(
        (back.header.ret, back.header.ret_origin),
        (TEEC_ERROR_OUT_OF_MEMORY, TEEC_ORIGIN_COMMS)
    );
    assert_eq!(env.log_len(), n, "refused before OP-TEE");
    assert_eq!(env.last_record().fault, Some(Fault::Limit));
    assert_eq!(env.mem(VM1).pinned(), 0, "nothing stays pinned");
    assert_eq!(env.hv_live(), 0, "no page list or shadow leaks");

    // The whole span in one call is fine, twice in a row: the first call's room comes back
    // when it returns.
    for _ in 0..2 {
        let a = big_tmem(&mut env, 0, 1536);
        env.mem(VM1)
            .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![a]));
        assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
        assert_eq!(env.mem(VM1).get_arg(ARG_IPA, 1).header.ret, TEEC_SUCCESS);
    }
    // Half and a page more each is not.
    let (a, b) = (big_tmem(&mut env, 0, 768), big_tmem(&mut env, 8, 769));
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![a, b]));
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 2).header.ret,
        TEEC_ERROR_OUT_OF_MEMORY
    );
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn a_buffer_larger_than_optee_can_map_is_refused() {
    let mut env = Env::new();
    let a = big_tmem(&mut env, 0, 1537);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![a]));
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK);
    assert_eq!(
        env.mem(VM1).get_arg(ARG_IPA, 1).header.ret,
        TEEC_ERROR_OUT_OF_MEMORY
    );
    assert_eq!(env.mem(VM1).pinned(), 0);
}

#[test]
fn a_vm_may_use_a_free_thread_beyond_its_share() {
    // xtest 1009.3 (TEE Wait 2 s, cancel): the call waiting in an RPC holds one thread,
    // and the cancel needs a second. With two VMs each is guaranteed one thread (its
    // share), but a free thread is never refused: the share is not a cap.
    let mut env = Env::build(Limits::default(), 2, &[VM1, VM2]);
    assert_eq!(thread_count(&mut env, VM1), 1);
    let h = park_in_cmd(&mut env, VM1, 0);
    env.mem(VM1)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_CANCEL, vec![]));
    assert_eq!(env.call(VM1, ARG_IPA)[0], OK, "the second thread was free");
    assert_eq!(env.last_record().fault, None);
    answer_parked(&mut env, VM1, 0, h);
    assert_eq!(env.optee.borrow().threads_in_use(), 0);
    assert_eq!(env.hv_live(), 0);
    env.check();
}

#[test]
fn by_default_no_vm_fails_another_vms_calls() {
    // OP-TEE 4.5 gives each guest partition its own threads, so a VM refused a thread has
    // used up its own; another VM's parked call holds none of them. Reaping is off.
    let mut env = Env::build(Limits::default(), 2, &[VM1]);
    let h: Vec<u64> = (0..2).map(|i| park_in_cmd(&mut env, VM1, i)).collect();
    env.med.vm_created(VM2).unwrap();
    env.now = 10 * crate::limits::DEFAULT_MAX_PARK_MS;
    env.mem(VM2)
        .put_arg(ARG_IPA, &msg(OPTEE_MSG_CMD_INVOKE_COMMAND, vec![]));
    assert_eq!(
        env.call(VM2, ARG_IPA)[0],
        u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT),
        "the fake's threads are shared: VM2 finds none"
    );
    assert_eq!(env.last_record().reaped, None);
    assert_eq!(
        env.med.vm_stats(VM1).unwrap().waiting,
        2,
        "VM1's calls are untouched"
    );
    for (i, h) in h.into_iter().enumerate() {
        answer_parked(&mut env, VM1, i as u64, h);
    }
    assert_eq!(env.hv_live(), 0);
    env.check();
}
