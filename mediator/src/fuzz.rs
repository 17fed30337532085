// SPDX-License-Identifier: MIT OR Apache-2.0
//! The fuzz target's driver (`fuzz/fuzz_targets/smc_sequence.rs` runs it under libFuzzer;
//! `tests::fuzz_replay` replays seeded inputs on stable in every `cargo test`): drive the mediator with sequences of guest SMCs, guest memory contents and
//! OP-TEE RPC scripts, against the same fakes as the host tests.
//!
//! The fakes assert the invariants on every SMC (every physical address OP-TEE receives is
//! a pinned frame of the calling VM or a hypervisor page; a7 is the caller's client id;
//! resume registers are preserved). After every operation the target also checks that
//! the mediator's pin accounting matches the pins held, and at the end that destroying
//! every VM leaves no pin and no hypervisor page behind. Any panic is a finding.
//!
//! Traps can also be left in flight (`begin` done, the SMC not yet issued) and finished
//! later, in any order, interleaved with other VMs' and the same VM's traps and with VM
//! destruction, as several CPUs would; the fake OP-TEE checks that no mediator lock is held
//! across any SMC. The clock moves on input's demand, so calls parked past the deadline of
//! a VM above its share of OP-TEE's (four) threads get reaped.

extern crate std;

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::vec::Vec;

use crate::abi::{self, MsgArg, MsgArgHeader, MsgParam};
use crate::fakes::{FakeHv, FakeLock, FakeMem, FakeOpTee, Recorder, Step, World};
use crate::{Error, Limits, Mediator, SecureMonitor, Step as MedStep, Token, VmId};

const RAM_PAGES: u64 = 64;
const VMS: [VmId; 2] = [VmId(1), VmId(2)];

/// A byte cursor: reads past the end yield zeros, so every input is a valid program.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
    fn empty(&self) -> bool {
        self.0.is_empty()
    }
    /// A guest address: mostly inside RAM, sometimes anywhere.
    fn ipa(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => self.u64(),
            1 => FakeMem::ipa(u64::from(self.u8()) % RAM_PAGES) + u64::from(self.u16() % 4096),
            _ => FakeMem::ipa(u64::from(self.u8()) % RAM_PAGES),
        }
    }
    fn small(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            _ => u64::from(self.u16()) * 16,
        }
    }
    fn attr(&mut self) -> u64 {
        const ATTRS: [u64; 12] = [
            abi::OPTEE_MSG_ATTR_TYPE_NONE,
            abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
            abi::OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT,
            abi::OPTEE_MSG_ATTR_TYPE_VALUE_INOUT,
            abi::OPTEE_MSG_ATTR_TYPE_RMEM_INPUT,
            abi::OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT,
            abi::OPTEE_MSG_ATTR_TYPE_RMEM_INOUT,
            abi::OPTEE_MSG_ATTR_TYPE_TMEM_INPUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
            abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
            abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
            abi::OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
            abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | abi::OPTEE_MSG_ATTR_META,
        ];
        match self.u8() {
            255 => self.u64(),
            b => ATTRS[usize::from(b) % ATTRS.len()],
        }
    }
    fn param(&mut self) -> MsgParam {
        let attr = self.attr();
        let u0 = if attr & abi::OPTEE_MSG_ATTR_NONCONTIG != 0 {
            self.ipa()
        } else {
            self.small()
        };
        let size = self.small();
        let cookie = u64::from(self.u8() % 8);
        MsgParam {
            attr,
            u0,
            u1: size,
            u2: cookie,
        }
    }
}

const FIDS: [u32; 21] = [
    abi::OPTEE_SMC_CALLS_COUNT,
    abi::OPTEE_SMC_CALLS_UID,
    abi::OPTEE_SMC_CALLS_REVISION,
    abi::OPTEE_SMC_GET_OS_UUID,
    abi::OPTEE_SMC_GET_OS_REVISION,
    abi::OPTEE_SMC_GET_SHM_CONFIG,
    abi::OPTEE_SMC_L2CC_MUTEX,
    abi::OPTEE_SMC_EXCHANGE_CAPABILITIES,
    abi::OPTEE_SMC_DISABLE_SHM_CACHE,
    abi::OPTEE_SMC_ENABLE_SHM_CACHE,
    abi::OPTEE_SMC_BOOT_SECONDARY,
    abi::OPTEE_SMC_VM_CREATED,
    abi::OPTEE_SMC_VM_DESTROYED,
    abi::OPTEE_SMC_GET_THREAD_COUNT,
    abi::OPTEE_SMC_ENABLE_ASYNC_NOTIF,
    abi::OPTEE_SMC_GET_ASYNC_NOTIF_VALUE,
    abi::OPTEE_SMC_CALL_WITH_ARG,
    abi::OPTEE_SMC_CALL_WITH_RPC_ARG,
    abi::OPTEE_SMC_CALL_WITH_REGD_ARG,
    abi::OPTEE_SMC_RETURN_FROM_RPC,
    0xB200_0042,
];

/// One fuzz input: a program of guest SMCs, guest memory writes, OP-TEE scripts, clock
/// steps and VM lifecycle events. Any panic is a finding.
pub fn smc_sequence(data: &[u8]) {
    let mut b = Bytes(data);
    let world = Rc::new(RefCell::new(World::default()));
    let (optee, st) = FakeOpTee::new(&world);
    // Four threads: a VM alone may have 3 calls, two VMs 2 each, so a VM recreated while
    // the other holds 3 makes it hold more than its share.
    st.borrow_mut().threads = 4;
    let limits = Limits {
        max_calls_per_vm: 3,
        max_pages_per_buffer: 600,
        max_pages_per_trap: 700,
        max_buffers_per_vm: 6,
        max_pinned_pages_per_vm: 900,
        max_rpc_args_per_vm: 3,
        max_params: 5,
        max_internal_resumes: 4,
        max_destroy_resumes: 6,
        max_park_ms: 100,
        // Below what the buffers could ask, so that refusals for OP-TEE's space happen.
        max_optee_map_pages_per_vm: 1000,
        // The fake's threads are shared by every VM: exercise reaping.
        reap_across_vms: true,
    };
    let med = Mediator::<_, _, FakeLock, _>::probe(
        optee,
        FakeHv::new(&world),
        Recorder::default(),
        limits,
    )
    .unwrap();
    let mut mem: BTreeMap<VmId, FakeMem> = BTreeMap::new();
    for vm in VMS {
        med.vm_created(vm).unwrap();
        mem.insert(vm, FakeMem::new(&world, vm.client_id(), RAM_PAGES));
    }
    let mut alive = [true; 2];
    // Handles the guest last saw, to make resumes likely to hit.
    let mut handles: Vec<u64> = Vec::new();
    // Traps whose SMC has not been issued yet (other CPUs, mid world switch).
    let mut in_flight: Vec<(VmId, [u64; 8], Token<FakeLock>)> = Vec::new();

    // The hypervisor's clock (ms).
    let mut now = 0u64;
    let mut ops = 0;
    while !b.empty() && ops < 200 {
        ops += 1;
        let vi = usize::from(b.u8() % 2);
        let vm = VMS[vi];
        match b.u8() % 12 {
            // Raw guest memory write.
            0 => {
                let ipa = FakeMem::ipa(u64::from(b.u8()) % RAM_PAGES) + u64::from(b.u16() % 4096);
                let len = usize::from(b.u8() % 64);
                let bytes: Vec<u8> = (0..len).map(|_| b.u8()).collect();
                let end = FakeMem::ipa(RAM_PAGES);
                let len = len.min((end - ipa) as usize);
                mem.get_mut(&vm).unwrap().poke(ipa, &bytes[..len]);
            }
            // A structured argument.
            1 => {
                let ipa = FakeMem::ipa(u64::from(b.u8()) % RAM_PAGES) + u64::from(b.u8() % 8) * 64;
                let cmd = u32::from(b.u8() % 9);
                let n = usize::from(b.u8() % 5);
                let params = (0..n).map(|_| b.param()).collect();
                let arg = MsgArg {
                    header: MsgArgHeader {
                        cmd,
                        func: 1,
                        session: 1,
                        ..Default::default()
                    },
                    params,
                };
                mem.get_mut(&vm).unwrap().put_arg(ipa, &arg);
            }
            // A page list.
            2 => {
                let list = FakeMem::ipa(u64::from(b.u8()) % (RAM_PAGES - 2));
                let n = match b.u8() % 4 {
                    0 => 511 + u64::from(b.u8()),
                    _ => u64::from(b.u8() % 16),
                };
                let pages: Vec<u64> = (0..n)
                    .map(|i| {
                        if i % 97 == 96 {
                            b.ipa()
                        } else {
                            FakeMem::ipa((i * 7 + u64::from(b.u8())) % RAM_PAGES)
                        }
                    })
                    .collect();
                mem.get_mut(&vm).unwrap().put_page_list(list, &pages);
            }
            // CALL_WITH_ARG, CALL_WITH_RPC_ARG (arg by address) or CALL_WITH_REGD_ARG
            // (arg inside a registered buffer: cookie + offset).
            3 => {
                let (fid, ptr, a3) = match b.u8() % 3 {
                    0 => (abi::OPTEE_SMC_CALL_WITH_ARG, b.ipa(), b.u64()),
                    1 => (abi::OPTEE_SMC_CALL_WITH_RPC_ARG, b.ipa(), b.u64()),
                    _ => (
                        abi::OPTEE_SMC_CALL_WITH_REGD_ARG,
                        u64::from(b.u8() % 8),
                        b.small(),
                    ),
                };
                let (hi, lo) = abi::split_regpair(ptr);
                let regs = [u64::from(fid), hi, lo, a3, 0, 0, 0, b.u64()];
                let r = med.handle_smc(vm, mem.get_mut(&vm).unwrap(), regs, now);
                if abi::is_rpc(r[0] as u32) {
                    handles.push(r[3]);
                }
            }
            // RETURN_FROM_RPC.
            4 => {
                let h = if handles.is_empty() || b.u8() % 8 == 0 {
                    u64::from(b.u8())
                } else {
                    handles[usize::from(b.u8()) % handles.len()]
                };
                let (a1, a2) = abi::split_regpair(b.ipa());
                let (a4, a5) = abi::split_regpair(u64::from(b.u8() % 8));
                let regs = [
                    u64::from(abi::OPTEE_SMC_RETURN_FROM_RPC),
                    a1,
                    a2,
                    h,
                    a4,
                    a5,
                    b.u64(),
                    b.u64(),
                ];
                let r = med.handle_smc(vm, mem.get_mut(&vm).unwrap(), regs, now);
                if abi::is_rpc(r[0] as u32) {
                    handles.push(r[3]);
                }
            }
            // Any fast or unknown function with random registers.
            5 => {
                let fid = FIDS[usize::from(b.u8()) % FIDS.len()];
                let mut regs = [0u64; 8];
                regs[0] = u64::from(fid);
                for r in regs.iter_mut().skip(1) {
                    *r = b.small();
                }
                let r = med.handle_smc(vm, mem.get_mut(&vm).unwrap(), regs, now);
                if abi::is_rpc(r[0] as u32) {
                    handles.push(r[3]);
                }
            }
            // Script OP-TEE's next call.
            6 => {
                let n = b.u8() % 6;
                let steps = (0..n)
                    .map(|_| match b.u8() % 7 {
                        0 => Step::Alloc(u64::from(b.u16() % 4200)),
                        1 => Step::Free,
                        2 => Step::ForeignIntr,
                        3 => Step::ShmAlloc(u64::from(b.u16())),
                        4 => Step::ShmFreeLast,
                        5 => Step::Cmd(u32::from(b.u8() % 24)),
                        _ => {
                            // A sibling vCPU scribbling while OP-TEE runs.
                            let pa = mem[&vm].pa_of(FakeMem::ipa(u64::from(b.u8()) % RAM_PAGES));
                            let v = b.u64();
                            Step::Mutate(Box::new(move |w: &mut World| {
                                w.write_pa(pa + 32, &v.to_le_bytes())
                            }))
                        }
                    })
                    .collect();
                st.borrow_mut().plans.push_back(steps);
            }
            // DISABLE_SHM_CACHE will hand out a cookie (own or foreign).
            7 => {
                let client = if b.u8() % 2 == 0 { vm.client_id() } else { 99 };
                st.borrow_mut()
                    .cache_cookies
                    .push_back((client, u64::from(b.u8() % 8)));
            }
            // Destroy / recreate the VM.
            8 => {
                if alive[vi] && in_flight.iter().any(|(v, ..)| *v == vm) {
                    assert_eq!(
                        med.vm_destroyed(vm, mem.get_mut(&vm).unwrap()),
                        Err(Error::CallsInFlight)
                    );
                    continue;
                }
                if alive[vi] {
                    med.vm_destroyed(vm, mem.get_mut(&vm).unwrap()).unwrap();
                    assert_eq!(mem[&vm].pinned(), 0, "destroy left pins");
                } else {
                    med.vm_created(vm).unwrap();
                }
                alive[vi] = !alive[vi];
            }
            // Begin a yielding call or a resume and leave its SMC in flight.
            10 => {
                let regs = match b.u8() % 2 {
                    0 => {
                        let (hi, lo) = abi::split_regpair(b.ipa());
                        [
                            u64::from(abi::OPTEE_SMC_CALL_WITH_RPC_ARG),
                            hi,
                            lo,
                            0,
                            0,
                            0,
                            0,
                            0,
                        ]
                    }
                    _ => {
                        let h = handles.last().copied().unwrap_or_default();
                        let (a4, a5) = abi::split_regpair(u64::from(b.u8() % 8));
                        let (a1, a2) = abi::split_regpair(b.ipa());
                        [
                            u64::from(abi::OPTEE_SMC_RETURN_FROM_RPC),
                            a1,
                            a2,
                            h,
                            a4,
                            a5,
                            0,
                            0,
                        ]
                    }
                };
                match med.begin(vm, mem.get_mut(&vm).unwrap(), regs, now) {
                    MedStep::Reply(r) => {
                        if abi::is_rpc(r[0] as u32) {
                            handles.push(r[3]);
                        }
                    }
                    MedStep::Forward { regs, token } => in_flight.push((vm, regs, token)),
                }
            }
            // One in-flight trap's SMC lands: finish it (it may forward again).
            11 => {
                if !in_flight.is_empty() {
                    let i = usize::from(b.u8()) % in_flight.len();
                    let (v, regs, token) = in_flight.swap_remove(i);
                    let r = med.ports().0.call(regs);
                    match med.finish(mem.get_mut(&v).unwrap(), token, r) {
                        MedStep::Reply(r) => {
                            if abi::is_rpc(r[0] as u32) {
                                handles.push(r[3]);
                            }
                        }
                        MedStep::Forward { regs, token } => in_flight.push((v, regs, token)),
                    }
                }
            }
            // Time passes.
            9 => now += u64::from(b.u8()),
            // Read-only page toggles.
            _ => {
                let p = FakeMem::ipa(u64::from(b.u8()) % RAM_PAGES);
                let m = mem.get_mut(&vm).unwrap();
                if !m.readonly.remove(&p) {
                    m.readonly.insert(p);
                }
            }
        }
        for vm in VMS {
            if let Some(s) = med.vm_stats(vm) {
                assert_eq!(s.pinned, mem[&vm].pinned(), "pin accounting drifted");
                assert!(s.calls as u32 <= 3);
                let flying = in_flight.iter().filter(|(v, ..)| *v == vm).count();
                assert_eq!(s.in_flight as usize, flying, "in-flight count drifted");
                assert!(s.buffers <= 6 && s.rpc_args <= 3 && s.pinned <= 900);
            }
        }
    }
    // Every CPU comes back from the secure world.
    while let Some((v, regs, token)) = in_flight.pop() {
        let r = med.ports().0.call(regs);
        if let MedStep::Forward { regs, token } = med.finish(mem.get_mut(&v).unwrap(), token, r) {
            in_flight.push((v, regs, token));
        }
    }
    for (i, vm) in VMS.iter().enumerate() {
        if alive[i] {
            med.vm_destroyed(*vm, mem.get_mut(vm).unwrap()).unwrap();
        }
        assert_eq!(mem[vm].pinned(), 0, "pins left after destroy");
    }
    assert_eq!(world.borrow().hv_live, 0, "hypervisor pages leaked");
}
