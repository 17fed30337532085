// SPDX-License-Identifier: MIT OR Apache-2.0
//! Whole campaigns on the host: against the real mediator over its fakes (a scripted
//! OP-TEE that asserts every address it is given is a pinned page of the caller, scattered
//! guest memory), and against a "mediator" that accepts everything, which the checker
//! must catch.
//!
//! The fake OP-TEE completes every call with SUCCESS (origin TA), so cases that expect
//! OP-TEE's own refusals (a TA that is not there, a session never opened) report
//! unexpected answers here; escapes must be zero. The emulated devices are moat's own
//! models (`hv_core::vgic`, `hv_core::vpl011`) answering as `hv/src/trap.rs` does, so the
//! `mmio` family must find nothing at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use hv_core::mmio::Width;
use hv_core::vgic::Vgic;
use hv_core::vpl011::Vpl011;
use mediator::abi::{self, MsgArg, MsgArgHeader, MsgParam};
use mediator::fakes::{FakeHv, FakeLock, FakeMem, FakeOpTee, OpTeeState, Shared, Step, World};
use mediator::{Limits, Mediator, NoTrace, VmId};

use crate::driver::{Guest, Mmio};
use crate::layout::{Device, Devices, Layout, Span};
use crate::options::{Mode, Options};

/// dom0 is VM 0 (client 1); the other guest of threads mode is VM 1 (client 2).
const DOM0: VmId = VmId(0);
const OTHER: VmId = VmId(1);
/// The fake guest's RAM: 32 MiB at 0x40000000 (the fakes' RAM_BASE), like dom0's first
/// bank, which OP-TEE's static SHM follows.
const RAM_PAGES: u64 = 8192;

type FakeMediator = Mediator<FakeOpTee, FakeHv, FakeLock, NoTrace>;

/// QEMU virt's GICv3 and console PL011, where moat's dom0 finds them (2 vCPUs).
fn qemu_devices() -> Devices {
    Devices {
        gicd: Some(Span::at(0x0800_0000, 0x1_0000)),
        gicr: Some(Span::at(0x080a_0000, 0x4_0000)),
        uart: Some(Span::at(0x0900_0000, 0x1000)),
    }
}

/// ESR_EL1 of the synchronous external abort moat injects for an access it cannot
/// emulate (EC 0x25, IL, DFSC 0x10).
const SEA: u64 = 0x25 << 26 | 1 << 25 | 0x10;

/// moat's device models behind `qemu_devices()`, answering as `hv/src/trap.rs` does: what
/// a model refuses is RAZ/WI, an access with no syndrome aborts.
struct Emulated {
    vgic: Vgic,
    uart: Vpl011,
}

impl Emulated {
    fn new() -> Self {
        Self {
            vgic: Vgic::new(2, 64).unwrap(),
            uart: Vpl011::new(),
        }
    }

    fn access(&mut self, pa: u64, access: Mmio) -> Result<u64, u64> {
        let (w, write) = match access {
            Mmio::ReadPair => return Err(SEA),
            Mmio::Read(w) => (w, None),
            Mmio::Write(w, v) => (w, Some(v)),
        };
        let d = qemu_devices();
        let dev = d
            .holding(pa, w.bytes())
            .expect("an access outside the devices");
        let off = (pa - d.get(dev).unwrap().start) as usize;
        let r: Result<u64, ()> = match (dev, write) {
            (Device::Gicd, None) => self.vgic.dist_read(off, w).map_err(drop),
            (Device::Gicd, Some(v)) => self.vgic.dist_write(off, w, v).map(|_| 0).map_err(drop),
            (Device::Gicr, None) => self.vgic.redist_read(off, w).map_err(drop),
            (Device::Gicr, Some(v)) => self.vgic.redist_write(off, w, v).map(|_| 0).map_err(drop),
            (Device::Uart, None) => self.uart.read(off, w).map(u64::from).map_err(drop),
            (Device::Uart, Some(v)) => self.uart.write(off, w, v as u32).map(|_| 0).map_err(drop),
        };
        // Refused: RAZ/WI.
        Ok(r.unwrap_or(0))
    }
}

/// A scripted world for threads mode: the other guest goes away and comes back as the
/// guest polls GET_THREAD_COUNT.
#[derive(Default)]
struct Other {
    mem: Option<FakeMem>,
    polls: u32,
    /// (poll, action): 1 = destroy, 2 = create, 3 = call (6 s later).
    script: Vec<(u32, u8)>,
}

struct Fake {
    world: Shared,
    st: Rc<RefCell<OpTeeState>>,
    med: FakeMediator,
    mem: FakeMem,
    now: u64,
    lines: Vec<String>,
    other: Other,
    devices: Emulated,
}

fn plan() -> Vec<Step> {
    vec![
        Step::Alloc(160),
        Step::Cmd(abi::OPTEE_RPC_CMD_LOAD_TA),
        Step::Free,
    ]
}

impl Fake {
    fn new(threads: u32, other: bool) -> Self {
        let world: Shared = Rc::new(RefCell::new(World::default()));
        let (optee, st) = FakeOpTee::new(&world);
        st.borrow_mut().threads = threads;
        let med =
            FakeMediator::probe(optee, FakeHv::new(&world), NoTrace, Limits::default()).unwrap();
        med.vm_created(DOM0).unwrap();
        let mem = FakeMem::new(&world, DOM0.client_id(), RAM_PAGES);
        let mut o = Other::default();
        if other {
            med.vm_created(OTHER).unwrap();
            o.mem = Some(FakeMem::new(&world, OTHER.client_id(), 64));
        }
        Self {
            world,
            st,
            med,
            mem,
            now: 0,
            lines: Vec::new(),
            other: o,
            devices: Emulated::new(),
        }
    }

    fn layout() -> Layout {
        let ram = [Span::at(0x4000_0000, RAM_PAGES * 4096)];
        Layout::new(
            &ram,
            Span::at(0x4010_0000, 16 << 20),
            &[Span::at(0x4000_0000, 1 << 20)],
        )
        .with_devices(qemu_devices())
    }

    /// The other guest's first call after it came back: OP-TEE has no thread for it.
    fn other_calls(&mut self) {
        let mem = self.other.mem.as_mut().unwrap();
        let ipa = FakeMem::ipa(0);
        mem.put_arg(
            ipa,
            &MsgArg {
                header: MsgArgHeader {
                    cmd: abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
                    ..Default::default()
                },
                params: vec![MsgParam::default()],
            },
        );
        let (hi, lo) = abi::split_regpair(ipa);
        let r = self.med.handle_smc(
            OTHER,
            mem,
            [
                u64::from(abi::OPTEE_SMC_CALL_WITH_ARG),
                hi,
                lo,
                0,
                0,
                0,
                0,
                0,
            ],
            self.now,
        );
        self.lines
            .push(format!("other guest's call: a0 = {:#x}", r[0]));
    }

    fn step_other(&mut self) {
        self.other.polls += 1;
        let now = self.other.polls;
        let due: Vec<u8> = self
            .other
            .script
            .iter()
            .filter(|(p, _)| *p == now)
            .map(|(_, a)| *a)
            .collect();
        for a in due {
            match a {
                1 => {
                    let mut mem = self.other.mem.take().unwrap();
                    self.med.vm_destroyed(OTHER, &mut mem).unwrap();
                    self.other.mem = Some(mem);
                }
                2 => self.med.vm_created(OTHER).unwrap(),
                _ => {
                    self.now += 6_000;
                    self.other_calls();
                }
            }
        }
    }
}

impl Guest for Fake {
    fn smc(&mut self, regs: [u64; 8]) -> [u64; 8] {
        {
            let mut st = self.st.borrow_mut();
            while st.plans.len() < 8 {
                st.plans.push_back(plan());
            }
        }
        self.now += 1;
        if regs[0] as u32 == abi::OPTEE_SMC_GET_THREAD_COUNT && !self.other.script.is_empty() {
            self.step_other();
        }
        self.med.handle_smc(DOM0, &mut self.mem, regs, self.now)
    }
    fn write(&mut self, pa: u64, bytes: &[u8]) {
        self.mem.poke(pa, bytes);
    }
    fn read(&mut self, pa: u64, buf: &mut [u8]) {
        buf.copy_from_slice(&self.mem.peek(pa, buf.len()));
    }
    fn now_ms(&mut self) -> u64 {
        self.now += 1;
        self.now
    }
    fn say(&mut self, line: &str) {
        self.lines.push(line.into());
    }
    fn mmio(&mut self, pa: u64, access: Mmio) -> Result<u64, u64> {
        self.devices.access(pa, access)
    }
}

fn opts(seed: u64, cases: u32) -> Options {
    Options {
        seed,
        cases,
        show: 1000,
        ..Options::default()
    }
}

#[test]
fn a_campaign_against_the_mediator_finds_no_escape() {
    let layout = Fake::layout();
    let mut g = Fake::new(2, false);
    let s = crate::run(&mut g, &layout, &opts(1, 600));
    // `cargo test -p hostile-core -- --nocapture` shows the run.
    for l in g.lines.iter().filter(|l| !l.contains("UNEXPECTED")) {
        std::println!("{l}");
    }
    let escapes: Vec<&String> = g.lines.iter().filter(|l| l.contains("ESCAPE")).collect();
    assert_eq!(s.escapes, 0, "{escapes:#?}");
    assert_eq!(s.cases, 600);
    assert!(s.checks > 600, "{s:?}");
    assert!(
        g.lines.iter().any(|l| l
            == &format!(
                "hostile: seed 1: 600 cases, 0 escapes, {} unexpected answers",
                s.unexpected
            )),
        "{:#?}",
        g.lines
    );
    // Every family ran.
    for f in crate::campaign::Family::ALL {
        assert!(
            g.lines
                .iter()
                .any(|l| l.starts_with(&format!("hostile: family {}:", f.name()))),
            "{}",
            f.name()
        );
    }
    // The unexpected answers are the fake OP-TEE's SUCCESS for what real OP-TEE refuses.
    for l in g.lines.iter().filter(|l| l.contains("UNEXPECTED")) {
        assert!(
            l.contains("did not fail") || l.contains("did not park"),
            "{l}"
        );
    }
    // Nothing is left pinned or allocated: every case cleaned up after itself.
    assert_eq!(g.mem.pinned(), 0, "pins left: {:x?}", g.mem.pins());
    assert_eq!(g.med.vm_stats(DOM0).unwrap().calls, 0);
    drop(g.world);
}

#[test]
fn a_campaign_replays_from_its_seed() {
    let layout = Fake::layout();
    let mut a = Fake::new(2, false);
    let mut b = Fake::new(2, false);
    let sa = crate::run(&mut a, &layout, &opts(42, 120));
    let sb = crate::run(&mut b, &layout, &opts(42, 120));
    assert_eq!(sa, sb);
    let strip = |l: &Vec<String>| -> Vec<String> {
        l.iter().filter(|x| !x.contains(" s")).cloned().collect()
    };
    assert_eq!(strip(&a.lines), strip(&b.lines));
}

/// A "mediator" that says yes to everything: every yielding call completes with SUCCESS
/// written into the message, every fast call answers OK; and devices that are plain
/// memory, which take every access of every width (no RAZ/WI, no abort).
#[derive(Default)]
struct Yes {
    mem: BTreeMap<u64, u8>,
    now: u64,
    lines: Vec<String>,
}

impl Guest for Yes {
    fn smc(&mut self, regs: [u64; 8]) -> [u64; 8] {
        let fid = regs[0] as u32;
        if matches!(
            fid,
            abi::OPTEE_SMC_CALL_WITH_ARG | abi::OPTEE_SMC_CALL_WITH_RPC_ARG
        ) {
            let at = abi::regpair(regs[1], regs[2]);
            for (i, b) in [0u8; 8].iter().enumerate() {
                if self.mem.contains_key(&(at + 20 + i as u64)) {
                    self.mem.insert(at + 20 + i as u64, *b);
                }
            }
        }
        [0, 1, 0, 0, regs[4], regs[5], regs[6], regs[7]]
    }
    fn write(&mut self, pa: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.mem.insert(pa + i as u64, *b);
        }
    }
    fn read(&mut self, pa: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.mem.get(&(pa + i as u64)).copied().unwrap_or(0);
        }
    }
    fn now_ms(&mut self) -> u64 {
        self.now += 1;
        self.now
    }
    fn say(&mut self, line: &str) {
        self.lines.push(line.into());
    }
    fn mmio(&mut self, pa: u64, access: Mmio) -> Result<u64, u64> {
        let (w, v) = match access {
            Mmio::Read(w) => (w.bytes(), None),
            Mmio::Write(w, v) => (w.bytes(), Some(v)),
            Mmio::ReadPair => (Width::Double.bytes(), None),
        };
        let mut value = 0;
        for i in 0..w {
            let a = pa + i;
            match v {
                Some(v) => {
                    self.mem.insert(a, (v >> (8 * i)) as u8);
                }
                None => value |= u64::from(self.mem.get(&a).copied().unwrap_or(0)) << (8 * i),
            }
        }
        Ok(value)
    }
}

#[test]
fn devices_that_take_every_access_are_caught() {
    let layout = crate::layout::tests::dom0_layout().with_devices(qemu_devices());
    let mut g = Yes::default();
    crate::run(&mut g, &layout, &opts(4, 400));
    let mmio: Vec<&String> = g
        .lines
        .iter()
        .filter(|l| l.contains("(mmio)") && l.starts_with("hostile: UNEXPECTED"))
        .collect();
    assert!(mmio.len() > 5, "{:#?}", g.lines);
    for want in ["(RAZ)", "took effect", "cannot be emulated"] {
        assert!(mmio.iter().any(|l| l.contains(want)), "{want}: {mmio:#?}");
    }
    assert!(!g
        .lines
        .iter()
        .any(|l| l.contains("ESCAPE") && l.contains("(mmio)")));
}

#[test]
fn moats_device_models_answer_every_mmio_case_as_promised() {
    let layout = Fake::layout();
    let mut g = Fake::new(2, false);
    let o = Options {
        cases: 1,
        ..opts(5, 1)
    };
    let mut d = crate::driver::Driver::new(&mut g, &layout, o.show);
    for i in 0..600 {
        let mut rng = crate::rng::Rng::for_case(5, i);
        let (name, steps) = crate::mmio::case(&mut rng, &layout);
        d.run_case(&crate::campaign::Case {
            index: i,
            family: crate::campaign::Family::Mmio,
            name,
            steps,
        });
    }
    let t = d.tallies[&crate::campaign::Family::Mmio];
    assert_eq!(
        (t.escapes, t.unexpected, t.skipped),
        (0, 0, 0),
        "{:#?}",
        d.findings
    );
    assert_eq!(t.cases, 600);
    assert!(t.checks > 600 * 4, "{t:?}");
    drop(d);
    // Every case put back what it changed: moat's models are as they were.
    let fresh = Emulated::new();
    let e = &g.devices;
    for off in 0x420..0x460 {
        assert_eq!(
            e.vgic.dist_read(off, Width::Byte),
            fresh.vgic.dist_read(off, Width::Byte)
        );
    }
    for off in (0..32).map(|i| 0x1_0400 + i) {
        assert_eq!(
            e.vgic.redist_read(off, Width::Byte),
            fresh.vgic.redist_read(off, Width::Byte)
        );
    }
    for off in [0x0, 0x14] {
        assert_eq!(
            e.vgic.dist_read(off, Width::Word),
            fresh.vgic.dist_read(off, Width::Word)
        );
        assert_eq!(
            e.vgic.redist_read(off, Width::Word),
            fresh.vgic.redist_read(off, Width::Word)
        );
    }
}

#[test]
fn a_mediator_that_accepts_everything_is_caught() {
    let layout = crate::layout::tests::dom0_layout();
    let mut g = Yes::default();
    let s = crate::run(&mut g, &layout, &opts(3, 150));
    assert!(s.escapes > 10, "{s:?}");
    assert_eq!(s.status(), crate::STATUS_FINDINGS);
    let l = g
        .lines
        .iter()
        .find(|l| l.contains("ESCAPE") && l.contains("arg-addr"))
        .unwrap();
    assert!(l.contains("accepted"), "{l}");
    assert!(g
        .lines
        .iter()
        .any(|l| l.contains("GET_SHM_CONFIG gave the guest static SHM")));
}

#[test]
fn threads_mode_sees_the_share_change_and_no_call_of_it_reaped() {
    let layout = Fake::layout();
    let mut g = Fake::new(2, true);
    // The other guest calls at the 50th poll, 6 s later, and resets at the 80th. The fake
    // OP-TEE's threads are shared, so the other guest finds none; the mediator does not
    // reap across VMs by default (Debian's OP-TEE gives each guest threads of its own), so
    // it gets ETHREAD_LIMIT and this guest's calls go on.
    g.other.script = vec![(50, 3), (80, 1)];
    let o = Options {
        mode: Mode::Threads,
        cases: 0,
        wait_secs: 10_000,
        ..Options::default()
    };
    let s = crate::run(&mut g, &layout, &o);
    let text = g.lines.join("\n");
    assert_eq!((s.escapes, s.unexpected), (0, 0), "{text}");
    for want in [
        "hostile: threads: GET_THREAD_COUNT says 1: this guest's share of OP-TEE's threads",
        "hostile: threads: call A parked in RPC ALLOC",
        "hostile: threads: call B parked in RPC ALLOC",
        "hostile: threads: one more call gets ETHREAD_LIMIT, at once",
        "other guest's call: a0 = 0x1",
        "hostile: threads: GET_THREAD_COUNT says 2: the other guest reset",
        "hostile: threads: call A was not reaped: it went on",
        "hostile: threads: call B was not reaped: it went on",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn threads_mode_alone_says_it_needs_a_second_guest() {
    let layout = Fake::layout();
    let mut g = Fake::new(2, false);
    let o = Options {
        mode: Mode::Threads,
        cases: 0,
        ..Options::default()
    };
    let s = crate::run(&mut g, &layout, &o);
    assert_eq!((s.unexpected, s.escapes), (1, 0), "{:#?}", g.lines);
    assert!(g
        .lines
        .iter()
        .any(|l| l.contains("threads mode needs a share of 1")));
}

#[test]
fn a_campaign_beside_another_guest_waits_for_it_to_reset() {
    let layout = Fake::layout();
    let mut g = Fake::new(2, true);
    // Polls of GET_THREAD_COUNT drive the other guest: gone at the 20th, back at the 30th,
    // gone again at the 50th.
    g.other.script = vec![(20, 1), (30, 2), (50, 1)];
    let o = Options {
        cases: 30,
        wait_other: 2,
        wait_secs: 10_000,
        ..Options::default()
    };
    let s = crate::run(&mut g, &layout, &o);
    let text = g.lines.join("\n");
    assert_eq!(s.escapes, 0, "{text}");
    assert!(
        text.contains(
            "hostile: campaign done: 30 cases; waiting for the other guest to reset 2 times"
        ),
        "{text}"
    );
    assert!(
        text.contains("hostile: the other guest reset 2 times"),
        "{text}"
    );
}
