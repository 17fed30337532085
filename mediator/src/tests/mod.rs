// SPDX-License-Identifier: MIT OR Apache-2.0
//! Host tests: the mediator against a scripted fake OP-TEE and scattered guest memory.
//!
//! Every scenario ends with `Env::check`, which re-asserts the global invariants: every
//! SMC a guest caused carried that guest's client id in a7 (or, unwinding another VM's call
//! the trap reaped, that VM's), and the mediator's pin count for each VM equals the pins
//! the fake memory actually holds. The fake OP-TEE also asserts, on every SMC, that no
//! mediator lock is held.
//!
//! `scenarios` drives one trap at a time (`Env::smc`); `concurrency` splits traps into
//! `begin`, the SMC and `finish` (`Env::begin`, `Env::enter`, `Env::finish`) and
//! interleaves them across VMs and vCPUs, as several CPUs would.

mod concurrency;
mod fuzz_replay;
mod scenarios;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::vec::Vec;

use crate::abi::{self, split_regpair, MsgArg, MsgArgHeader, MsgParam};
use crate::fakes::{
    FakeHv, FakeLock, FakeMem, FakeOpTee, OpTeeState, Recorder, Shared, Step, World,
};
use crate::{Limits, Mediator, SecureMonitor, SmcRecord, Step as MedStep, Token, VmId};

/// Two VMs: `VM1` (domid 1, client 2) and `VM2` (domid 2, client 3).
pub const VM1: VmId = VmId(1);
pub const VM2: VmId = VmId(2);
/// The fake OP-TEE's threads are shared by every VM, as a TEE without per-guest threads
/// would have them: the limits that reap across VMs for such a TEE.
pub const SHARED_THREADS: Limits = Limits {
    reap_across_vms: true,
    ..crate::limits::DEFAULTS
};

/// RAM pages per VM.
pub const RAM_PAGES: u64 = 2048;

/// The mediator over the fakes.
pub type TestMediator = Mediator<FakeOpTee, FakeHv, FakeLock, Recorder>;

pub struct Env {
    pub world: Shared,
    pub optee: Rc<RefCell<OpTeeState>>,
    pub trace: Rc<RefCell<Vec<SmcRecord>>>,
    /// The decoded messages (`--trace smc=msg`'s records).
    pub msgs: Rc<RefCell<Vec<crate::fakes::MsgSeen>>>,
    pub med: TestMediator,
    pub mem: BTreeMap<VmId, FakeMem>,
    /// The hypervisor's clock (milliseconds) every trap is given; tests move it.
    pub now: u64,
}

impl Env {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Self::build(limits, 8, &[VM1, VM2])
    }

    /// The mediator over an OP-TEE with `threads` threads (as probed), with `vms` created;
    /// memory for `VM1` and `VM2` whether created or not.
    pub fn build(limits: Limits, threads: u32, vms: &[VmId]) -> Self {
        let world: Shared = Rc::new(RefCell::new(World::default()));
        let (optee, st) = FakeOpTee::new(&world);
        st.borrow_mut().threads = threads;
        let rec = Recorder::default();
        let trace = rec.0.clone();
        let msgs = rec.1.clone();
        let med = TestMediator::probe(optee, FakeHv::new(&world), rec, limits).unwrap();
        let mut mem = BTreeMap::new();
        for vm in [VM1, VM2] {
            mem.insert(vm, FakeMem::new(&world, vm.client_id(), RAM_PAGES));
        }
        for vm in vms {
            med.vm_created(*vm).unwrap();
            mem.entry(*vm)
                .or_insert_with(|| FakeMem::new(&world, vm.client_id(), RAM_PAGES));
        }
        Self {
            world,
            optee: st,
            trace,
            msgs,
            med,
            mem,
            now: 0,
        }
    }

    pub fn smc(&mut self, vm: VmId, regs: [u64; 8]) -> [u64; 8] {
        let before = self.optee.borrow().log.len();
        let mem = self.mem.get_mut(&vm).unwrap();
        let out = self.med.handle_smc(vm, mem, regs, self.now);
        // A trap that reaped another VM's call unwound it with that VM's client id.
        let reaped = self.trace.borrow().last().and_then(|r| r.reaped);
        for r in &self.optee.borrow().log[before..] {
            let unwinding = reaped.is_some_and(|(v, _)| v.client_id() == r[7])
                && r[0] as u32 == abi::OPTEE_SMC_RETURN_FROM_RPC;
            assert!(
                r[7] == vm.client_id() || unwinding,
                "forwarded SMC without the VM's client id: {r:x?}"
            );
        }
        out
    }

    /// The first half of a trap of `vm` (one CPU); a forward must carry the VM's client id.
    pub fn begin(&mut self, vm: VmId, regs: [u64; 8]) -> MedStep<FakeLock> {
        let mem = self.mem.get_mut(&vm).unwrap();
        let step = self.med.begin(vm, mem, regs, self.now);
        Self::check_forward(vm, &step);
        step
    }

    /// A forwarded SMC reaches the (fake) secure world; the mediator is not involved.
    pub fn enter(&self, regs: [u64; 8]) -> [u64; 8] {
        self.med.ports().0.call(regs)
    }

    /// The second half of a trap: OP-TEE's result for `token`.
    pub fn finish(&mut self, vm: VmId, token: Token<FakeLock>, r: [u64; 8]) -> MedStep<FakeLock> {
        let mem = self.mem.get_mut(&vm).unwrap();
        let step = self.med.finish(mem, token, r);
        Self::check_forward(vm, &step);
        step
    }

    /// Run a forwarded trap to its reply.
    pub fn land(&mut self, vm: VmId, mut step: MedStep<FakeLock>) -> [u64; 8] {
        loop {
            match step {
                MedStep::Reply(out) => return out,
                MedStep::Forward { regs, token } => {
                    let r = self.enter(regs);
                    step = self.finish(vm, token, r);
                }
            }
        }
    }

    fn check_forward(vm: VmId, step: &MedStep<FakeLock>) {
        if let MedStep::Forward { regs, .. } = step {
            assert_eq!(
                regs[7],
                vm.client_id(),
                "forward without the VM's client id"
            );
        }
    }

    pub fn fast(&mut self, vm: VmId, fid: u32) -> [u64; 8] {
        // Garbage in a7: the guest's a7 must never reach OP-TEE.
        self.smc(vm, [u64::from(fid), 0, 0, 0, 0, 0, 0, 0xdead])
    }

    /// CALL_WITH_ARG with the argument at `ipa`.
    pub fn call(&mut self, vm: VmId, ipa: u64) -> [u64; 8] {
        self.smc(vm, call_regs(ipa))
    }

    /// RETURN_FROM_RPC for handle `h` with a1/a2 and a4/a5.
    pub fn resume(&mut self, vm: VmId, h: u64, a12: u64, a45: u64) -> [u64; 8] {
        self.smc(vm, resume_regs(h, a12, a45))
    }

    pub fn plan(&self, steps: Vec<Step>) {
        self.optee.borrow_mut().plans.push_back(steps);
    }

    pub fn mem(&mut self, vm: VmId) -> &mut FakeMem {
        self.mem.get_mut(&vm).unwrap()
    }

    pub fn log_len(&self) -> usize {
        self.optee.borrow().log.len()
    }

    pub fn last_record(&self) -> SmcRecord {
        *self.trace.borrow().last().unwrap()
    }

    /// Invariants: mediator pin accounting matches the memory's pins.
    /// Hypervisor pages in use, not counting the shadow pages of the VMs' spare call
    /// records (at most `max_calls_per_vm` per VM, freed with the VM: see
    /// `Mediator::spare_pages`).
    pub fn hv_live(&self) -> usize {
        self.world.borrow().hv_live - self.med.spare_pages()
    }

    pub fn check(&self) {
        for (vm, m) in &self.mem {
            if let Some(s) = self.med.vm_stats(*vm) {
                assert_eq!(s.pinned, m.pinned(), "pin accounting of {vm:?} drifted");
            }
        }
    }

    pub fn destroy(&mut self, vm: VmId) {
        let mem = self.mem.get_mut(&vm).unwrap();
        self.med.vm_destroyed(vm, mem).unwrap();
    }
}

// Register and message builders.

/// CALL_WITH_ARG with the argument at `ipa` (garbage in a7: it must never reach OP-TEE).
pub fn call_regs(ipa: u64) -> [u64; 8] {
    let (hi, lo) = split_regpair(ipa);
    [
        u64::from(abi::OPTEE_SMC_CALL_WITH_ARG),
        hi,
        lo,
        0,
        0,
        0,
        0,
        0xdead,
    ]
}

/// RETURN_FROM_RPC for handle `h` with a1/a2 and a4/a5.
pub fn resume_regs(h: u64, a12: u64, a45: u64) -> [u64; 8] {
    let (a1, a2) = split_regpair(a12);
    let (a4, a5) = split_regpair(a45);
    [
        u64::from(abi::OPTEE_SMC_RETURN_FROM_RPC),
        a1,
        a2,
        h,
        a4,
        a5,
        0,
        0xdead,
    ]
}

pub fn val(attr: u64, a: u64, b: u64, c: u64) -> MsgParam {
    MsgParam {
        attr,
        u0: a,
        u1: b,
        u2: c,
    }
}

pub fn tmem_nc(attr: u64, list_ipa: u64, off: u64, size: u64, shm_ref: u64) -> MsgParam {
    MsgParam {
        attr: attr | abi::OPTEE_MSG_ATTR_NONCONTIG,
        u0: list_ipa | off,
        u1: size,
        u2: shm_ref,
    }
}

pub fn msg(cmd: u32, params: Vec<MsgParam>) -> MsgArg {
    MsgArg {
        header: MsgArgHeader {
            cmd,
            func: 0x77,
            session: 5,
            ..Default::default()
        },
        params,
    }
}

/// Argument buffers live at page 0.. of RAM, page lists at 16.., data at 256...
pub const ARG_IPA: u64 = crate::fakes::RAM_BASE + 0x40;
pub fn list_ipa(i: u64) -> u64 {
    FakeMem::ipa(16 + i)
}
pub fn data_ipas(first: u64, n: u64) -> Vec<u64> {
    // Deliberately non-consecutive: every other page, backwards.
    (0..n)
        .map(|i| FakeMem::ipa(256 + first + 2 * (n - 1 - i)))
        .collect()
}
