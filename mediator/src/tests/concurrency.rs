// SPDX-License-Identifier: MIT OR Apache-2.0
//! Concurrency: traps of two VMs, and of two vCPUs of one VM, split into `begin`, the SMC
//! and `finish` and interleaved as several CPUs would interleave them.
//!
//! The fake OP-TEE asserts on every SMC that no mediator lock is held, and serves several
//! threads at once (a call, or a call parked in an RPC, holds one; past its thread count a
//! call gets ETHREAD_LIMIT). Each test ends with every count back where it started: calls,
//! pins (the mediator's and the memory's), buffers, RPC arguments, hypervisor pages,
//! OP-TEE's registered cookies, SMCs in flight, and one trace record per trap.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::abi::*;
use crate::error::{Error, Fault};
use crate::fakes::{FakeMem, RAM_BASE};
use crate::VmStats;

const OK: u64 = OPTEE_SMC_RETURN_OK as u64;

fn rpc(func: u32) -> u64 {
    u64::from(rpc_val(func))
}

/// Guest layout of vCPU `i` (0, 1, 2): its own argument, RPC argument and lists, plus data
/// pages shared by every vCPU of a VM (their pins nest).
fn arg_ipa(i: u64) -> u64 {
    RAM_BASE + (1 + i) * 4096 + 0x40
}
fn rpc_ipa(i: u64) -> u64 {
    FakeMem::ipa(8 + i)
}
fn reg_list(i: u64) -> u64 {
    FakeMem::ipa(20 + 2 * i)
}
fn shm_list(i: u64) -> u64 {
    FakeMem::ipa(21 + 2 * i)
}
const SHARED_LIST: u64 = RAM_BASE + 40 * 4096;
const SHARED_PAGES: u64 = 3;

fn shared_tmem() -> MsgParam {
    tmem_nc(
        OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
        SHARED_LIST,
        0,
        SHARED_PAGES * 4096,
        0,
    )
}

/// An INVOKE with a value to echo and the shared 3-page buffer, at vCPU `i`'s argument.
fn put_invoke(env: &mut Env, vm: VmId, i: u64, value: u64) {
    env.mem(vm)
        .put_page_list(SHARED_LIST, &data_ipas(100, SHARED_PAGES));
    env.mem(vm).put_arg(
        arg_ipa(i),
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![
                val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, value, 0, 0),
                shared_tmem(),
            ],
        ),
    );
}

fn echoed(env: &mut Env, vm: VmId, i: u64) -> (u32, u64) {
    let a = env.mem(vm).get_arg(arg_ipa(i), 2);
    (a.header.ret, a.params[0].u0)
}

fn forward(step: MedStep<FakeLock>) -> ([u64; 8], Token<FakeLock>) {
    match step {
        MedStep::Forward { regs, token } => (regs, token),
        MedStep::Reply(r) => panic!("expected a forward, got a reply {r:x?}"),
    }
}

/// Everything back to zero: no call, buffer, RPC argument, pin, page, cookie or SMC in
/// flight left anywhere.
fn assert_balanced(env: &Env) {
    env.check();
    for vm in [VM1, VM2] {
        if let Some(s) = env.med.vm_stats(vm) {
            assert_eq!(s, VmStats::default(), "{vm:?} left state behind");
        }
        assert_eq!(env.mem[&vm].pinned(), 0, "{vm:?} left pins");
    }
    assert_eq!(env.hv_live(), 0, "hypervisor pages leaked");
    assert!(env.optee.borrow().shm.is_empty(), "OP-TEE kept cookies");
    assert!(env.world.borrow().pins.values().all(|&n| n == 0));
}

// ---------------------------------------------------------------------------------------
// Two traps in flight at once.
// ---------------------------------------------------------------------------------------

/// begin A, begin B, B's SMC and finish, then A's: for two VMs, and for two vCPUs of one
/// VM (whose shared pages are pinned twice at once).
#[test]
fn begin_a_begin_b_finish_b_finish_a() {
    for (a, b) in [(VM1, VM2), (VM1, VM1)] {
        let mut env = Env::new();
        put_invoke(&mut env, a, 0, 1);
        put_invoke(&mut env, b, 1, 2);
        let (fa, ta) = forward(env.begin(a, call_regs(arg_ipa(0))));
        let (fb, tb) = forward(env.begin(b, call_regs(arg_ipa(1))));
        let both = a == b;
        let sa = env.med.vm_stats(a).unwrap();
        assert_eq!(sa.in_flight, if both { 2 } else { 1 });
        assert_eq!(sa.calls, if both { 2 } else { 1 });
        assert_eq!(env.mem(a).pinned(), if both { 6 } else { 3 });
        env.check();

        let rb = env.enter(fb);
        let out = env.finish(b, tb, rb);
        assert_eq!(env.land(b, out)[0], OK);
        assert_eq!(echoed(&mut env, b, 1), (TEEC_SUCCESS, 1002));
        assert_eq!(env.med.vm_stats(a).unwrap().in_flight, 1);
        assert_eq!(env.mem(a).pinned(), 3, "A's pins survive B's completion");

        let ra = env.enter(fa);
        let out = env.finish(a, ta, ra);
        assert_eq!(env.land(a, out)[0], OK);
        assert_eq!(echoed(&mut env, a, 0), (TEEC_SUCCESS, 1001));
        assert_eq!(env.trace.borrow().len(), 2, "one record per trap");
        assert_balanced(&env);
    }
}

/// Found by libFuzzer (`cargo xtask fuzz`, smc_sequence, after 6.2 million executions),
/// fixed as suggested below (`Buffer::users`, `Fault::BufferInUse`). A call naming a registered buffer
/// (RMEM) is validated by `begin` on one vCPU; before its SMC enters OP-TEE, a sibling
/// vCPU's UNREGISTER_SHM of that buffer is accepted (no call in OP-TEE holds it yet, so
/// OP-TEE releases it) and the mediator unpins its pages; then the first SMC reaches OP-TEE
/// naming a cookie the VM no longer has, or has registered again over other pages, with an
/// offset and size checked against the old buffer. OP-TEE resolves cookies per guest and
/// checks the bounds itself, so no page leaves the VM, but the mediator's promise (every
/// RMEM OP-TEE gets names a live buffer of the caller's, within its size) is broken, and
/// the fake OP-TEE says so ("rmem of unknown cookie reached OP-TEE"). A fix: count the
/// calls validated against each buffer until they complete, and answer an UNREGISTER_SHM of
/// a buffer still counted in the mediator (TEE_ERROR_BUSY, origin COMMS), as OP-TEE waits
/// for the buffers its own calls hold.
#[test]
fn an_unregister_racing_a_call_in_flight_leaves_the_buffer_to_it() {
    let mut env = Env::new();
    env.mem(VM1).put_page_list(reg_list(0), &data_ipas(200, 2));
    env.mem(VM1).put_arg(
        arg_ipa(0),
        &msg(
            OPTEE_MSG_CMD_REGISTER_SHM,
            vec![tmem_nc(
                OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                reg_list(0),
                0,
                2 * 4096,
                0x5,
            )],
        ),
    );
    assert_eq!(env.call(VM1, arg_ipa(0))[0], OK);
    assert_eq!(env.mem(VM1).get_arg(arg_ipa(0), 1).header.ret, TEEC_SUCCESS);
    // vCPU 0: an INVOKE naming the buffer, validated, its SMC not yet issued.
    env.mem(VM1).put_arg(
        arg_ipa(0),
        &msg(
            OPTEE_MSG_CMD_INVOKE_COMMAND,
            vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INOUT, 0, 2 * 4096, 0x5)],
        ),
    );
    let (f, t) = forward(env.begin(VM1, call_regs(arg_ipa(0))));
    // vCPU 1: UNREGISTER_SHM of the buffer, a whole trap.
    env.mem(VM1).put_arg(
        arg_ipa(1),
        &msg(
            OPTEE_MSG_CMD_UNREGISTER_SHM,
            vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, 0x5)],
        ),
    );
    assert_eq!(env.call(VM1, arg_ipa(1))[0], OK);
    assert_ne!(
        env.mem(VM1).get_arg(arg_ipa(1), 1).header.ret,
        TEEC_SUCCESS,
        "the buffer was released under a call in flight that names it"
    );
    assert_eq!(
        env.mem(VM1).pinned(),
        2,
        "its pages stay pinned for the call"
    );
    // vCPU 0's SMC lands: OP-TEE gets an RMEM of a buffer it still has.
    let r = env.enter(f);
    let out = env.finish(VM1, t, r);
    assert_eq!(env.land(VM1, out)[0], OK);
    assert_eq!(env.mem(VM1).get_arg(arg_ipa(0), 1).header.ret, TEEC_SUCCESS);
    // Now nothing holds it: it goes.
    assert_eq!(env.call(VM1, arg_ipa(1))[0], OK);
    assert_eq!(env.mem(VM1).get_arg(arg_ipa(1), 1).header.ret, TEEC_SUCCESS);
    assert_balanced(&env);
}

/// A call whose SMC is in flight on one vCPU is `Running`: a sibling's RETURN_FROM_RPC for
/// its handle is refused without reaching OP-TEE, and the call still completes.
#[test]
fn a_sibling_cannot_resume_a_call_in_flight() {
    let mut env = Env::new();
    env.plan(vec![Step::ForeignIntr]);
    put_invoke(&mut env, VM1, 0, 5);
    let r = env.call(VM1, arg_ipa(0));
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
    let h = r[3];
    let (f0, t0) = forward(env.begin(VM1, resume_regs(h, 0, 0)));
    let n = env.log_len();
    match env.begin(VM1, resume_regs(h, 0, 0)) {
        MedStep::Reply(r) => assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_ERESUME)),
        MedStep::Forward { .. } => panic!("a running call was resumed twice"),
    }
    assert_eq!(env.last_record().fault, Some(Fault::BadResume));
    assert_eq!(env.log_len(), n, "nothing forwarded");
    let r0 = env.enter(f0);
    let out = env.finish(VM1, t0, r0);
    assert_eq!(env.land(VM1, out)[0], OK);
    assert_eq!(echoed(&mut env, VM1, 0), (TEEC_SUCCESS, 1005));
    assert_balanced(&env);
}

/// The per-VM call limit counts calls in flight: two vCPUs cannot both take the last slot.
#[test]
fn the_call_limit_holds_across_vcpus_in_flight() {
    let mut env = Env::with_limits(Limits {
        max_calls_per_vm: 2,
        ..Limits::default()
    });
    put_invoke(&mut env, VM1, 0, 1);
    put_invoke(&mut env, VM1, 1, 2);
    put_invoke(&mut env, VM1, 2, 3);
    let a = forward(env.begin(VM1, call_regs(arg_ipa(0))));
    let b = forward(env.begin(VM1, call_regs(arg_ipa(1))));
    match env.begin(VM1, call_regs(arg_ipa(2))) {
        MedStep::Reply(r) => assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT)),
        MedStep::Forward { .. } => panic!("third call admitted"),
    }
    for (f, t) in [b, a] {
        let r = env.enter(f);
        let out = env.finish(VM1, t, r);
        assert_eq!(env.land(VM1, out)[0], OK);
    }
    assert_balanced(&env);
}

/// OP-TEE out of threads while two VMs each have a call in it: the third call gets OP-TEE's
/// ETHREAD_LIMIT and everything the mediator prepared for it is released.
#[test]
fn optee_thread_limit_with_calls_in_flight() {
    let mut env = Env::new();
    env.optee.borrow_mut().threads = 2;
    env.plan(vec![Step::ForeignIntr]);
    env.plan(vec![Step::ForeignIntr]);
    put_invoke(&mut env, VM1, 0, 1);
    put_invoke(&mut env, VM2, 0, 2);
    put_invoke(&mut env, VM1, 1, 3);
    let h1 = env.call(VM1, arg_ipa(0))[3];
    let h2 = env.call(VM2, arg_ipa(0))[3];
    assert_eq!(
        env.call(VM1, arg_ipa(1))[0],
        u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT)
    );
    assert_eq!(env.med.vm_stats(VM1).unwrap().calls, 1);
    assert_eq!(env.mem(VM1).pinned(), 3, "only the parked call's pins");
    assert_eq!(env.resume(VM2, h2, 0, 0)[0], OK);
    assert_eq!(env.resume(VM1, h1, 0, 0)[0], OK);
    assert_eq!(env.call(VM1, arg_ipa(1))[0], OK);
    assert_balanced(&env);
}

// ---------------------------------------------------------------------------------------
// Lifecycle against calls in flight.
// ---------------------------------------------------------------------------------------

/// VM2 is destroyed (its parked call unwound in OP-TEE, its buffer released) while VM1's
/// call is in the secure world; VM1's call is unaffected. VM1 itself cannot be destroyed
/// while its SMC is in flight, and nothing of it changes when that is refused.
#[test]
fn a_vm_destroyed_while_another_vms_call_is_in_flight() {
    let mut env = Env::new();
    env.plan(vec![Step::ForeignIntr]);
    put_invoke(&mut env, VM2, 0, 9);
    assert_eq!(
        env.call(VM2, arg_ipa(0))[0],
        rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR)
    );
    put_invoke(&mut env, VM1, 0, 4);
    let (f1, t1) = forward(env.begin(VM1, call_regs(arg_ipa(0))));

    env.destroy(VM2);
    assert!(env.med.vm_stats(VM2).is_none());
    assert_eq!(env.mem(VM2).pinned(), 0);
    assert!(!env.optee.borrow().vms.contains(&VM2.client_id()));

    let before = env.med.vm_stats(VM1).unwrap();
    assert_eq!(
        env.med.vm_destroyed(VM1, env.mem.get_mut(&VM1).unwrap()),
        Err(Error::CallsInFlight)
    );
    assert_eq!(
        env.med.vm_stats(VM1),
        Some(before),
        "a refused destroy changes nothing"
    );

    let r1 = env.enter(f1);
    let out = env.finish(VM1, t1, r1);
    assert_eq!(env.land(VM1, out)[0], OK);
    assert_eq!(echoed(&mut env, VM1, 0), (TEEC_SUCCESS, 1004));
    assert_balanced(&env);
    env.destroy(VM1);
    assert_balanced(&env);
}

/// A dead VM's trap never starts, and a VM created again under the same id starts afresh.
#[test]
fn a_recreated_vm_starts_afresh() {
    let mut env = Env::new();
    env.plan(vec![Step::ForeignIntr]);
    put_invoke(&mut env, VM1, 0, 1);
    let h = env.call(VM1, arg_ipa(0))[3];
    env.destroy(VM1);
    env.med.vm_created(VM1).unwrap();
    assert_eq!(env.med.vm_stats(VM1), Some(VmStats::default()));
    // The old handle names nothing in the new VM.
    assert_eq!(
        env.resume(VM1, h, 0, 0)[0],
        u64::from(OPTEE_SMC_RETURN_ERESUME)
    );
    assert_eq!(env.call(VM1, arg_ipa(0))[0], OK);
    assert_balanced(&env);
}

/// DISABLE_SHM_CACHE begins with the VM idle, and a sibling opens a call while it is in the
/// secure world: the cookie still reaches the guest, but its page is not freed under the
/// open call (it goes with the VM).
#[test]
fn disable_shm_cache_racing_a_sibling_call_keeps_the_page() {
    let mut env = Env::new();
    // A call that leaves its RPC argument in OP-TEE's cache.
    env.plan(vec![Step::Alloc(256)]);
    put_invoke(&mut env, VM1, 0, 1);
    let r = env.call(VM1, arg_ipa(0));
    assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_ALLOC));
    assert_eq!(env.resume(VM1, r[3], rpc_ipa(0), 0xcafe)[0], OK);
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 1);
    env.optee.borrow_mut().cache_cookies.push_back((2, 0xcafe));

    let disable = [u64::from(OPTEE_SMC_DISABLE_SHM_CACHE), 0, 0, 0, 0, 0, 0, 0];
    let (fd, td) = forward(env.begin(VM1, disable));
    env.plan(vec![Step::ForeignIntr]);
    put_invoke(&mut env, VM1, 1, 2);
    let h = env.call(VM1, arg_ipa(1))[3];
    let rd = env.enter(fd);
    let out = env.finish(VM1, td, rd);
    let r = env.land(VM1, out);
    assert_eq!((r[0], regpair(r[1], r[2])), (OK, 0xcafe));
    assert_eq!(env.med.vm_stats(VM1).unwrap().rpc_args, 1, "page kept");
    assert_eq!(env.resume(VM1, h, 0, 0)[0], OK);
    env.destroy(VM1);
    assert_balanced(&env);
}

// ---------------------------------------------------------------------------------------
// Reaping against calls in flight.
// ---------------------------------------------------------------------------------------

/// VM1, alone with OP-TEE's two threads, parks two calls; VM2 comes and, past the deadline,
/// its call finds no thread. A call of VM1 whose RETURN_FROM_RPC is in flight on a vCPU is
/// never reaped: with one in flight the other is reaped (though younger), with both in
/// flight nothing is and VM2 gets ETHREAD_LIMIT. Every resume in flight still completes.
#[test]
fn a_call_in_flight_is_never_reaped() {
    for both_in_flight in [false, true] {
        let mut env = Env::build(SHARED_THREADS, 2, &[VM1]);
        let mut h = Vec::new();
        for i in 0..2 {
            env.now = i * 1_000;
            env.plan(vec![Step::ForeignIntr]);
            put_invoke(&mut env, VM1, i, i);
            let r = env.call(VM1, arg_ipa(i));
            assert_eq!(r[0], rpc(OPTEE_SMC_RPC_FUNC_FOREIGN_INTR));
            h.push(r[3]);
        }
        env.med.vm_created(VM2).unwrap();
        env.now = 10 * crate::limits::DEFAULT_MAX_PARK_MS;
        // The oldest call's resume is in flight (and the other's too, in the second run).
        let mut resumes = vec![forward(env.begin(VM1, resume_regs(h[0], 0, 0)))];
        if both_in_flight {
            resumes.push(forward(env.begin(VM1, resume_regs(h[1], 0, 0))));
        }
        put_invoke(&mut env, VM2, 2, 7);
        let r = env.call(VM2, arg_ipa(2));
        let reaped = env.last_record().reaped;
        if both_in_flight {
            assert_eq!(r[0], u64::from(OPTEE_SMC_RETURN_ETHREAD_LIMIT));
            assert_eq!(reaped, None);
        } else {
            assert_eq!(r[0], OK);
            assert_eq!(
                reaped,
                Some((VM1, h[1] as u32)),
                "the parked one, not the older"
            );
            assert_eq!(echoed(&mut env, VM2, 2), (TEEC_SUCCESS, 1007));
        }
        assert_eq!(
            env.med.vm_stats(VM1).unwrap().in_flight as usize,
            resumes.len()
        );
        for (i, (f, t)) in resumes.into_iter().enumerate() {
            let r = env.enter(f);
            let out = env.finish(VM1, t, r);
            assert_eq!(env.land(VM1, out)[0], OK);
            assert_eq!(
                echoed(&mut env, VM1, i as u64),
                (TEEC_SUCCESS, 1000 + i as u64)
            );
        }
        if !both_in_flight {
            assert_eq!(
                env.resume(VM1, h[1], 0, 0)[0],
                u64::from(OPTEE_SMC_RETURN_ERESUME),
                "the reaped call"
            );
            assert_eq!(env.last_record().fault, Some(Fault::Reaped));
            assert_eq!(
                env.mem(VM1).get_arg(arg_ipa(1), 2).header.ret,
                TEEC_ERROR_COMMUNICATION
            );
        }
        assert_balanced(&env);
        assert_eq!(env.optee.borrow().threads_in_use(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Random interleavings of whole guest programs.
// ---------------------------------------------------------------------------------------

/// Where one vCPU is.
enum Phase {
    /// The guest is about to trap with these registers.
    Ready([u64; 8]),
    /// `begin` asked for an SMC that has not reached OP-TEE yet.
    Begun([u64; 8], Token<FakeLock>),
    /// OP-TEE answered; `finish` has not run yet.
    Entered([u64; 8], Token<FakeLock>),
    Done,
}

/// A vCPU running: REGISTER_SHM of its own buffer, an INVOKE using it (RMEM) and the shared
/// pages (TMEM), with every kind of RPC on the way, then UNREGISTER_SHM; retried on
/// ETHREAD_LIMIT.
struct Vcpu {
    vm: VmId,
    i: u64,
    phase: Phase,
    /// 0: register, 1: invoke, 2: unregister, 3: done.
    stage: u32,
    shm_allocs: u64,
    traps: usize,
}

impl Vcpu {
    fn cookie(&self) -> u64 {
        0xb0f0 + self.i
    }

    fn new(env: &mut Env, vm: VmId, i: u64) -> Self {
        env.mem(vm)
            .put_page_list(reg_list(i), &data_ipas(200 + 8 * i, 2));
        let mut v = Self {
            vm,
            i,
            phase: Phase::Done,
            stage: 0,
            shm_allocs: 0,
            traps: 0,
        };
        v.phase = Phase::Ready(v.put_stage(env));
        v
    }

    /// Write the argument of the current stage; the registers of its call.
    fn put_stage(&self, env: &mut Env) -> [u64; 8] {
        let c = self.cookie();
        let arg = match self.stage {
            0 => msg(
                OPTEE_MSG_CMD_REGISTER_SHM,
                vec![tmem_nc(
                    OPTEE_MSG_ATTR_TYPE_TMEM_INOUT,
                    reg_list(self.i),
                    0,
                    2 * 4096,
                    c,
                )],
            ),
            1 => {
                env.mem(self.vm)
                    .put_page_list(SHARED_LIST, &data_ipas(100, SHARED_PAGES));
                msg(
                    OPTEE_MSG_CMD_INVOKE_COMMAND,
                    vec![
                        val(OPTEE_MSG_ATTR_TYPE_VALUE_INOUT, self.i, 0, 0),
                        val(OPTEE_MSG_ATTR_TYPE_RMEM_INOUT, 0, 4096, c),
                        shared_tmem(),
                    ],
                )
            }
            _ => msg(
                OPTEE_MSG_CMD_UNREGISTER_SHM,
                vec![val(OPTEE_MSG_ATTR_TYPE_RMEM_INPUT, 0, 0, c)],
            ),
        };
        env.mem(self.vm).put_arg(arg_ipa(self.i), &arg);
        call_regs(arg_ipa(self.i))
    }

    /// The guest got `r` back from a trap: what does it do next?
    fn on_reply(&mut self, env: &mut Env, r: [u64; 8]) -> Phase {
        self.traps += 1;
        let vm = self.vm;
        let a0 = r[0] as u32;
        if a0 == OPTEE_SMC_RETURN_ETHREAD_LIMIT {
            return Phase::Ready(call_regs(arg_ipa(self.i)));
        }
        if a0 == OPTEE_SMC_RETURN_OK {
            let n = [1, 3, 1][self.stage as usize];
            let a = env.mem(vm).get_arg(arg_ipa(self.i), n);
            assert_eq!(
                a.header.ret, TEEC_SUCCESS,
                "{vm:?} vCPU {} stage {}",
                self.i, self.stage
            );
            if self.stage == 1 {
                assert_eq!(a.params[0].u0, self.i + 1000, "copy-back of another call");
                assert_eq!(a.params[1].u1, 2048, "RMEM output size");
            }
            self.stage += 1;
            if self.stage == 3 {
                return Phase::Done;
            }
            return Phase::Ready(self.put_stage(env));
        }
        assert!(is_rpc(a0), "unexpected a0 {a0:#x}");
        let h = r[3];
        Phase::Ready(match a0 & 0xffff {
            OPTEE_SMC_RPC_FUNC_ALLOC => resume_regs(h, rpc_ipa(self.i), 0xa110 + self.i),
            OPTEE_SMC_RPC_FUNC_CMD => {
                assert_eq!(regpair(r[1], r[2]), 0xa110 + self.i, "another vCPU's RPC");
                let hdr = MsgArgHeader::parse(&env.mem(vm).peek(rpc_ipa(self.i), 32)).unwrap();
                let mut a = env
                    .mem(vm)
                    .get_arg(rpc_ipa(self.i), hdr.num_params as usize);
                a.header.ret = TEEC_SUCCESS;
                if a.header.cmd == OPTEE_RPC_CMD_SHM_ALLOC {
                    self.shm_allocs += 1;
                    let cookie = 0x5000 + 0x100 * self.i + self.shm_allocs;
                    env.mem(vm)
                        .put_page_list(shm_list(self.i), &data_ipas(300 + 4 * self.i, 1));
                    a.params[0] = tmem_nc(
                        OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                        shm_list(self.i),
                        0,
                        4096,
                        cookie,
                    );
                } else if a.header.cmd == OPTEE_RPC_CMD_GET_TIME {
                    a.params[0].u0 = 77;
                }
                env.mem(vm).put_arg(rpc_ipa(self.i), &a);
                resume_regs(h, 0, 0)
            }
            _ => resume_regs(h, 0, 0),
        })
    }
}

/// Advance vCPU `v` by one phase: a `begin`, an SMC landing in OP-TEE, or a `finish`.
fn advance(env: &mut Env, v: &mut Vcpu) {
    let vm = v.vm;
    let step = match core::mem::replace(&mut v.phase, Phase::Done) {
        Phase::Ready(regs) => env.begin(vm, regs),
        Phase::Begun(fwd, token) => {
            v.phase = Phase::Entered(env.enter(fwd), token);
            return;
        }
        Phase::Entered(r, token) => env.finish(vm, token, r),
        Phase::Done => return,
    };
    v.phase = match step {
        MedStep::Reply(r) => v.on_reply(env, r),
        MedStep::Forward { regs, token } => Phase::Begun(regs, token),
    };
}

/// xorshift64*: a schedule from a seed, no dependencies.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Three vCPUs (two of VM1, one of VM2), OP-TEE with two threads, every RPC kind: 300
/// random schedules of their begin / SMC / finish steps. After every step the pin
/// accounting and the in-flight counts agree with the vCPUs' phases; at the end every
/// count is back to zero and there is one trace record per trap.
#[test]
fn random_interleavings_of_three_vcpus_lose_no_update() {
    // Coverage of the schedules: most SMCs of one VM in flight at once, of all VMs, and
    // calls OP-TEE turned away for want of a thread.
    let (mut most_vm1, mut most_all, mut thread_limits) = (0, 0, 0);
    for seed in 1..=300u64 {
        let mut env = Env::new();
        env.optee.borrow_mut().threads = 2;
        for _ in 0..40 {
            env.plan(vec![
                Step::Alloc(256),
                Step::ShmAlloc(4096),
                Step::Cmd(OPTEE_RPC_CMD_GET_TIME),
                Step::ShmFreeLast,
                Step::ForeignIntr,
                Step::Free,
            ]);
        }
        let mut cpus = [
            Vcpu::new(&mut env, VM1, 0),
            Vcpu::new(&mut env, VM1, 1),
            Vcpu::new(&mut env, VM2, 2),
        ];
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut steps = 0;
        loop {
            let live: Vec<usize> = (0..cpus.len())
                .filter(|&c| !matches!(cpus[c].phase, Phase::Done))
                .collect();
            if live.is_empty() {
                break;
            }
            steps += 1;
            assert!(steps < 20_000, "seed {seed}: no progress");
            let c = live[rng.below(live.len())];
            let before = env.log_len();
            advance(&mut env, &mut cpus[c]);
            env.check();
            if env.log_len() > before {
                let last = *env.optee.borrow().log.last().unwrap();
                let refused = env.trace.borrow().last().map(|r| r.ret);
                thread_limits += usize::from(
                    last[0] as u32 == OPTEE_SMC_CALL_WITH_ARG
                        && refused == Some(OPTEE_SMC_RETURN_ETHREAD_LIMIT),
                );
            }
            let mut all = 0;
            for vm in [VM1, VM2] {
                let flying = cpus
                    .iter()
                    .filter(|v| v.vm == vm)
                    .filter(|v| matches!(v.phase, Phase::Begun(..) | Phase::Entered(..)))
                    .count();
                assert_eq!(
                    env.med.vm_stats(vm).unwrap().in_flight as usize,
                    flying,
                    "seed {seed}"
                );
                if vm == VM1 {
                    most_vm1 = most_vm1.max(flying);
                }
                all += flying;
            }
            most_all = most_all.max(all);
        }
        let traps: usize = cpus.iter().map(|v| v.traps).sum();
        let trace = env.trace.borrow();
        assert_eq!(trace.len(), traps, "seed {seed}: one record per trap");
        assert!(trace.iter().all(|r| r.fault.is_none()), "seed {seed}");
        drop(trace);
        assert_eq!(
            env.optee.borrow().seen.len(),
            9,
            "seed {seed}: 9 calls completed"
        );
        assert_balanced(&env);
    }
    assert_eq!(most_vm1, 2, "two vCPUs of one VM in flight together");
    assert_eq!(most_all, 3, "all three in flight together");
    assert!(
        thread_limits > 0,
        "OP-TEE ran out of threads in some schedule"
    );
}

/// The harness's own check: an SMC issued under a mediator lock is caught.
#[test]
#[should_panic(expected = "SMC issued with a mediator lock held")]
fn the_fake_optee_catches_an_smc_under_a_lock() {
    let env = Env::new();
    let m = <FakeLock as crate::Lock>::new(());
    <FakeLock as crate::Lock>::with(&m, |_| {
        env.enter([u64::from(OPTEE_SMC_CALLS_UID), 0, 0, 0, 0, 0, 0, 0])
    });
}
