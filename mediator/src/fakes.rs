// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fakes that differ on purpose: scattered physical frames, a scripted OP-TEE that checks
//! every physical address it is given, and a tracing recorder.
//!
//! Built for the host tests and, behind the `fakes` feature, for the fuzz target in
//! `mediator/fuzz`. The fakes `assert!` the mediator's invariants: a failed assertion is a
//! mediator bug, never a guest's fault. They need `std` (host only).
//!
//! `FakeLock` is the tests' `Lock`: a `RefCell` that counts the locks this thread holds, so
//! that the fake OP-TEE can assert that no mediator lock is ever held across an SMC.
//!
//! All three share one `World`: a sparse physical memory where every 4 KiB frame has an
//! owner (a VM's client id, or the hypervisor) and a pin count. Frames are handed out in a
//! scrambled order far from the guests' IPAs, so IPA == PA can never pass by accident.

extern crate std;

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::vec::Vec;

use crate::abi::{self, regpair, split_regpair, MsgArg, MsgArgHeader, MsgParam};
use crate::ports::{
    Access, GuestMemory, HvPage, HvPages, Ipa, Lock, MemFault, PhysAddr, SecureMonitor,
};
use crate::trace::{MsgDir, MsgRecord, SmcRecord, Trace};

/// Guest RAM starts here in every VM (same IPAs, different frames).
pub const RAM_BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;
/// `TEE_ERROR_BUSY` (tee_api_defines.h), what the fake OP-TEE answers an UNREGISTER_SHM of
/// a buffer another call still holds.
pub const TEEC_ERROR_BUSY: u32 = 0xFFFF_000D;

/// Who owns a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// RAM of the VM with this client id.
    Vm(u64),
    /// Hypervisor-owned page.
    Hv,
}

/// Hashes a physical frame address for the fakes' maps: frames are distinct multiples of
/// 4 KiB, so their page number times an odd constant (Fibonacci hashing) spreads them well.
/// std's SipHash, built to resist chosen keys no test has, was a fifth of the fuzz
/// driver's time.
#[derive(Default)]
pub struct FrameHasher(u64);

impl Hasher for FrameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by physical (frame) address.
pub type FrameMap<V> = HashMap<u64, V, BuildHasherDefault<FrameHasher>>;

/// Sparse physical memory. A frame exists from `new_frame` on (it has an owner); its bytes
/// are allocated on its first write and read as zeros until then, so that a fuzz input's
/// two 64-page VMs cost no 512 KiB of zeroed buffers when most pages are never written.
#[derive(Default)]
pub struct World {
    /// Contents of the frames written so far (every key also has an `owner`).
    frames: FrameMap<Vec<u8>>,
    owner: FrameMap<Owner>,
    /// Pin counts per frame.
    pub pins: FrameMap<u32>,
    next_frame: u64,
    /// Live hypervisor pages.
    pub hv_live: usize,
    /// Hypervisor pages ever allocated.
    pub hv_allocs: usize,
    /// Guest-memory copies the mediator made (one per `read`, `write`, `read_words` or
    /// `write_words` call, however long), for every VM.
    pub guest_copies: usize,
}

/// Shared handle.
pub type Shared = Rc<RefCell<World>>;

impl World {
    /// A fresh frame at a scrambled address.
    fn new_frame(&mut self, owner: Owner) -> u64 {
        self.next_frame += 1;
        // Odd multiplier: a bijection on [0, 2^20), so frames never collide.
        let idx = (self.next_frame.wrapping_mul(0x9E37_79B1)) & 0xF_FFFF;
        let pa = 0x80_0000_0000 + idx * PAGE;
        assert!(self.owner.insert(pa, owner).is_none());
        pa
    }

    /// Owner of the frame holding `pa`.
    pub fn owner(&self, pa: u64) -> Option<Owner> {
        self.owner.get(&(pa & !(PAGE - 1))).copied()
    }

    /// Read physical memory (may span frames); panics on unbacked memory.
    pub fn read_pa(&self, pa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            let frame = a - off as u64;
            assert!(
                self.owner.contains_key(&frame),
                "read of unbacked pa {a:#x}"
            );
            match self.frames.get(&frame) {
                Some(f) => buf[done..done + n].copy_from_slice(&f[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    /// Write physical memory.
    pub fn write_pa(&mut self, pa: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            let frame = a - off as u64;
            assert!(
                self.owner.contains_key(&frame),
                "write of unbacked pa {a:#x}"
            );
            let f = self
                .frames
                .entry(frame)
                .or_insert_with(|| std::vec![0u8; PAGE as usize]);
            f[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Read a whole argument struct at `pa` (header's num_params decides the length).
    pub fn read_arg(&self, pa: u64) -> MsgArg {
        let mut h = [0u8; 32];
        self.read_pa(pa, &mut h);
        let n = MsgArgHeader::parse(&h).unwrap().num_params as usize;
        let mut b = std::vec![0u8; abi::arg_size(n)];
        self.read_pa(pa, &mut b);
        MsgArg::parse(&b).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Guest memory.
// ---------------------------------------------------------------------------------------

/// One VM's RAM: `[RAM_BASE, RAM_BASE + pages * 4 KiB)` on scattered frames.
pub struct FakeMem {
    world: Shared,
    /// The frame behind each RAM page: `frames[i]` backs IPA `RAM_BASE + i * 4 KiB`.
    frames: Vec<u64>,
    /// IPA pages mapped read-only.
    pub readonly: BTreeSet<u64>,
    /// Pins per RAM page (as `frames`), and their sum: the fuzz driver compares the sum
    /// with the mediator's accounting after every operation.
    pins: Vec<u32>,
    pinned: u32,
}

impl FakeMem {
    /// RAM of `pages` pages for client `client`.
    pub fn new(world: &Shared, client: u64, pages: u64) -> Self {
        let frames = {
            let mut w = world.borrow_mut();
            w.owner.reserve(pages as usize);
            (0..pages).map(|_| w.new_frame(Owner::Vm(client))).collect()
        };
        Self {
            world: world.clone(),
            frames,
            readonly: BTreeSet::new(),
            pins: std::vec![0; pages as usize],
            pinned: 0,
        }
    }

    /// The index of the RAM page holding `ipa`, if it is RAM.
    fn page(&self, ipa: u64) -> Option<usize> {
        let i = usize::try_from(ipa.checked_sub(RAM_BASE)? / PAGE).ok()?;
        (i < self.frames.len()).then_some(i)
    }

    /// The frame behind the RAM page holding `ipa`, if it is RAM.
    fn frame(&self, ipa: u64) -> Option<u64> {
        self.page(ipa).map(|i| self.frames[i])
    }

    /// IPA of page `i` of RAM.
    pub fn ipa(i: u64) -> u64 {
        RAM_BASE + i * PAGE
    }

    /// Frame behind an IPA page (tests only).
    pub fn pa_of(&self, ipa: u64) -> u64 {
        self.frame(ipa).expect("pa_of an IPA outside RAM") + ipa % PAGE
    }

    /// Total pins held.
    pub fn pinned(&self) -> u32 {
        self.pinned
    }

    /// The pinned pages and their pin counts.
    pub fn pins(&self) -> Vec<(u64, u32)> {
        (0..self.pins.len() as u64)
            .filter(|&i| self.pins[i as usize] > 0)
            .map(|i| (Self::ipa(i), self.pins[i as usize]))
            .collect()
    }

    fn each_page(
        &self,
        ipa: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemFault> {
        // Check everything first: a failed access touches nothing.
        let mut done = 0;
        while done < len {
            let a = ipa.checked_add(done as u64).ok_or(MemFault::NotRam)?;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            if self.frame(a).is_none() {
                return Err(MemFault::NotRam);
            }
            done += n;
        }
        let mut done = 0;
        while done < len {
            let a = ipa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            f(self.frame(a).unwrap() + off as u64, done, n);
            done += n;
        }
        Ok(())
    }

    /// Test-side write (a sibling vCPU or the guest kernel).
    pub fn poke(&mut self, ipa: u64, data: &[u8]) {
        let w = self.world.clone();
        self.each_page(ipa, data.len(), |pa, d, n| {
            w.borrow_mut().write_pa(pa, &data[d..d + n])
        })
        .unwrap();
    }

    /// Test-side read.
    pub fn peek(&self, ipa: u64, len: usize) -> Vec<u8> {
        let mut b = std::vec![0u8; len];
        let w = self.world.clone();
        self.each_page(ipa, len, |pa, d, n| {
            w.borrow().read_pa(pa, &mut b[d..d + n])
        })
        .unwrap();
        b
    }

    /// Write an argument struct at `ipa`.
    pub fn put_arg(&mut self, ipa: u64, arg: &MsgArg) {
        let mut a = arg.clone();
        a.header.num_params = a.params.len() as u32;
        self.poke(ipa, &a.to_bytes());
    }

    /// Read back an argument struct with `n` params.
    pub fn get_arg(&self, ipa: u64, n: usize) -> MsgArg {
        MsgArg::parse_n(&self.peek(ipa, abi::arg_size(n)), n).unwrap()
    }

    /// Write a page list for `data` pages starting at list page `list_ipa` (list pages are
    /// consecutive pages from there). Returns the number of list pages.
    pub fn put_page_list(&mut self, list_ipa: u64, data: &[u64]) -> usize {
        let chunks: Vec<&[u64]> = data.chunks(abi::PAGELIST_ENTRIES_PER_PAGE).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut b = std::vec![0u8; PAGE as usize];
            for (j, e) in c.iter().enumerate() {
                abi::write_u64(&mut b, j * 8, *e);
            }
            let next = if i + 1 < chunks.len() {
                list_ipa + (i as u64 + 1) * PAGE
            } else {
                0
            };
            abi::write_u64(&mut b, 511 * 8, next);
            self.poke(list_ipa + i as u64 * PAGE, &b);
        }
        chunks.len()
    }
}

impl GuestMemory for FakeMem {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), MemFault> {
        self.world.borrow_mut().guest_copies += 1;
        let w = self.world.clone();
        self.each_page(ipa.0, buf.len(), |pa, d, n| {
            w.borrow().read_pa(pa, &mut buf[d..d + n])
        })
    }

    fn write(&mut self, ipa: Ipa, buf: &[u8]) -> Result<(), MemFault> {
        let mut a = ipa.0;
        while a < ipa.0.saturating_add(buf.len() as u64) {
            if self.readonly.contains(&(a & !(PAGE - 1))) {
                return Err(MemFault::Permission);
            }
            a = (a & !(PAGE - 1)) + PAGE;
        }
        self.world.borrow_mut().guest_copies += 1;
        let w = self.world.clone();
        self.each_page(ipa.0, buf.len(), |pa, d, n| {
            w.borrow_mut().write_pa(pa, &buf[d..d + n])
        })
    }

    fn read_words(&self, ipa: Ipa, buf: &mut [u64]) -> Result<(), MemFault> {
        assert!(
            ipa.0.is_multiple_of(8),
            "mediator read words at an unaligned {ipa:?}"
        );
        let mut bytes = std::vec![0u8; buf.len() * 8];
        self.read(ipa, &mut bytes)?;
        for (w, b) in buf.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().unwrap());
        }
        Ok(())
    }

    fn write_words(&mut self, ipa: Ipa, buf: &[u64]) -> Result<(), MemFault> {
        assert!(
            ipa.0.is_multiple_of(8),
            "mediator wrote words at an unaligned {ipa:?}"
        );
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(ipa, &bytes)
    }

    fn pin(&mut self, ipa: Ipa, access: Access) -> Result<PhysAddr, MemFault> {
        assert!(
            ipa.is_page_aligned(),
            "mediator pinned an unaligned ipa {ipa:?}"
        );
        let i = self.page(ipa.0).ok_or(MemFault::NotRam)?;
        let pa = self.frames[i];
        if access == Access::Write && self.readonly.contains(&ipa.0) {
            return Err(MemFault::Permission);
        }
        self.pins[i] += 1;
        self.pinned += 1;
        *self.world.borrow_mut().pins.entry(pa).or_default() += 1;
        Ok(PhysAddr(pa))
    }

    fn unpin(&mut self, ipa: Ipa) {
        let i = self
            .page(ipa.0)
            .filter(|&i| ipa.is_page_aligned() && self.pins[i] > 0)
            .unwrap_or_else(|| panic!("unpin of unpinned {ipa:?}"));
        self.pins[i] -= 1;
        self.pinned -= 1;
        let pa = self.frames[i];
        let mut w = self.world.borrow_mut();
        let wc = w.pins.get_mut(&pa).unwrap();
        *wc -= 1;
    }
}

// ---------------------------------------------------------------------------------------
// Hypervisor pages.
// ---------------------------------------------------------------------------------------

/// Hypervisor page pool with an optional cap.
pub struct FakeHv {
    world: Shared,
    /// Fail allocations beyond this many live pages.
    pub cap: usize,
}

impl FakeHv {
    /// Pool over `world`.
    pub fn new(world: &Shared) -> Self {
        Self {
            world: world.clone(),
            cap: usize::MAX,
        }
    }
}

impl HvPages for FakeHv {
    fn alloc(&self) -> Option<HvPage> {
        let mut w = self.world.borrow_mut();
        if w.hv_live >= self.cap {
            return None;
        }
        w.hv_live += 1;
        w.hv_allocs += 1;
        Some(HvPage::new(PhysAddr(w.new_frame(Owner::Hv))))
    }
    fn write(&self, page: &HvPage, offset: usize, data: &[u8]) {
        let mut w = self.world.borrow_mut();
        assert_eq!(w.owner(page.phys().raw()), Some(Owner::Hv));
        assert!(offset + data.len() <= PAGE as usize);
        w.write_pa(page.phys().raw() + offset as u64, data);
    }
    fn read(&self, page: &HvPage, offset: usize, buf: &mut [u8]) {
        let w = self.world.borrow();
        assert_eq!(w.owner(page.phys().raw()), Some(Owner::Hv));
        w.read_pa(page.phys().raw() + offset as u64, buf);
    }
    fn free(&self, page: HvPage) {
        let mut w = self.world.borrow_mut();
        let pa = page.phys().raw();
        assert_eq!(w.owner(pa), Some(Owner::Hv), "free of a non-hv page");
        w.frames.remove(&pa);
        w.owner.remove(&pa);
        w.hv_live -= 1;
    }
}

// ---------------------------------------------------------------------------------------
// Fake OP-TEE.
// ---------------------------------------------------------------------------------------

/// One scripted step of a yielding call, run by OP-TEE before it completes the call.
pub enum Step {
    /// RPC_FUNC_ALLOC of `size` bytes for the RPC argument.
    Alloc(u64),
    /// RPC_FUNC_FREE of the RPC argument.
    Free,
    /// RPC_FUNC_FOREIGN_INTR.
    ForeignIntr,
    /// RPC CMD SHM_ALLOC of `size` bytes.
    ShmAlloc(u64),
    /// RPC CMD SHM_FREE of the last SHM_ALLOC'd buffer.
    ShmFreeLast,
    /// RPC CMD `cmd` with param 0 VALUE_OUTPUT and param 1 VALUE_INPUT (7, 8, 9).
    Cmd(u32),
    /// Run code while OP-TEE "executes" (a sibling vCPU racing the call).
    Mutate(Box<dyn FnOnce(&mut World)>),
}

struct Thread {
    client: u64,
    arg_pa: u64,
    steps: VecDeque<Step>,
    rpc_arg: Option<(u64, u64)>,
    pending: Option<u32>,
    last_shm: Option<u64>,
    /// CALL_WITH_RPC_ARG: the RPC argument is inline; like OP-TEE, never ALLOC or FREE.
    inline: bool,
    /// An RPC argument (cookie) this thread kept from an earlier call (`OpTeeState::kept`),
    /// freed with RPC_FUNC_FREE before the call's own steps, whoever made the earlier call.
    kept_free: Option<u64>,
    /// The registered buffers (cookies) the call's RMEM parameters name: OP-TEE holds a
    /// reference to each until the call returns.
    holds: Vec<u64>,
}

/// Observable state of the fake OP-TEE. Several threads can be live at once (in a call or
/// parked in an RPC), up to `threads`, as in OP-TEE; one more call gets ETHREAD_LIMIT.
#[derive(Default)]
pub struct OpTeeState {
    /// Every SMC received.
    pub log: Vec<[u64; 8]>,
    /// Secure capabilities reported.
    pub caps: u64,
    /// Thread count reported.
    pub threads: u32,
    /// UID reported by CALLS_UID.
    pub uid: [u32; 4],
    /// Refuse VM_CREATED.
    pub refuse_vm_created: bool,
    /// Known VMs (client ids).
    pub vms: BTreeSet<u64>,
    /// Registered shared memory: (client, cookie) -> frames.
    pub shm: BTreeMap<(u64, u64), Vec<u64>>,
    /// Scripts for the next yielding calls, in order.
    pub plans: VecDeque<Vec<Step>>,
    /// Cookies DISABLE_SHM_CACHE hands out: (client, cookie).
    pub cache_cookies: VecDeque<(u64, u64)>,
    /// The RPC-argument cache is on (ENABLE_SHM_CACHE reached OP-TEE; DISABLE_SHM_CACHE
    /// with nothing left to hand out turns it off). While on, a call that ends with its RPC
    /// argument still allocated leaves it on its thread (`kept`).
    pub shm_cache: bool,
    /// RPC arguments OP-TEE's threads kept after their calls, as cookies: the next yielding
    /// call to start (on that thread) first gets RPC_FUNC_FREE of the front one, whichever
    /// VM makes it, as real OP-TEE 4.5 does with its cache on.
    pub kept: VecDeque<u64>,
    /// Arguments as OP-TEE read them when completing each call.
    pub seen: Vec<MsgArg>,
    /// RPC arguments as OP-TEE read them on each RPC CMD resume.
    pub rpc_answers: Vec<MsgArg>,
    /// RPC ALLOC answers: the PA given (0 = refused).
    pub alloc_answers: Vec<u64>,
    /// Scribble over the header `func` and a VALUE_INPUT when completing (copy-back test).
    pub scribble: bool,
    threads_live: BTreeMap<u64, Thread>,
    next_tid: u64,
}

impl OpTeeState {
    /// OP-TEE threads in use (in a call, or parked in an RPC).
    pub fn threads_in_use(&self) -> usize {
        self.threads_live.len()
    }
}

/// The fake secure monitor + OP-TEE.
pub struct FakeOpTee {
    world: Shared,
    /// Shared state, also held by the test.
    pub st: Rc<RefCell<OpTeeState>>,
}

impl FakeOpTee {
    /// A virtualization-enabled OP-TEE with dynamic SHM and 8 threads.
    pub fn new(world: &Shared) -> (Self, Rc<RefCell<OpTeeState>>) {
        let st = Rc::new(RefCell::new(OpTeeState {
            caps: abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM
                | abi::OPTEE_SMC_SEC_CAP_VIRTUALIZATION
                | abi::OPTEE_SMC_SEC_CAP_MEMREF_NULL
                | abi::OPTEE_SMC_SEC_CAP_HAVE_RESERVED_SHM
                | abi::OPTEE_SMC_SEC_CAP_ASYNC_NOTIF
                | abi::OPTEE_SMC_SEC_CAP_RPC_ARG
                | (1 << 7),
            threads: 8,
            uid: abi::OPTEE_MSG_UID,
            next_tid: 0x100,
            ..Default::default()
        }));
        (
            Self {
                world: world.clone(),
                st: st.clone(),
            },
            st,
        )
    }
}

fn resume_magic(tid: u64) -> [u64; 3] {
    [tid ^ 0xa4a4, tid ^ 0xa5a5, tid ^ 0xa6a6]
}

impl FakeOpTee {
    /// Check a page list OP-TEE was given: list pages are hypervisor pages, data pages are
    /// pinned RAM of `client`. Returns the data frames.
    fn check_list(&self, client: u64, buf_ptr: u64, size: u64) -> Vec<u64> {
        let w = self.world.borrow();
        let off = buf_ptr % PAGE;
        let n = (off + size).div_ceil(PAGE) as usize;
        let mut list = buf_ptr - off;
        let mut out = Vec::new();
        while out.len() < n {
            assert_eq!(
                w.owner(list),
                Some(Owner::Hv),
                "page list at {list:#x} is not a hypervisor page"
            );
            let mut b = std::vec![0u8; PAGE as usize];
            w.read_pa(list, &mut b);
            for j in 0..(n - out.len()).min(511) {
                let pa = abi::read_u64(&b, j * 8);
                assert_eq!(
                    w.owner(pa),
                    Some(Owner::Vm(client)),
                    "pa {pa:#x} is not RAM of client {client}"
                );
                assert!(
                    w.pins.get(&pa).copied().unwrap_or(0) > 0,
                    "pa {pa:#x} handed to OP-TEE unpinned"
                );
                out.push(pa);
            }
            list = abi::read_u64(&b, 511 * 8);
        }
        out
    }

    fn check_arg(&self, client: u64, arg: &MsgArg) {
        let st = self.st.borrow();
        for p in &arg.params {
            match p.kind() {
                Some(abi::ParamKind::Tmem { .. }) if p.is_noncontig() => {
                    drop(self.check_list(client, p.u0, p.u1));
                }
                Some(abi::ParamKind::Tmem { .. }) => {
                    assert_eq!(p.u0, 0, "contiguous tmem reached OP-TEE")
                }
                Some(abi::ParamKind::Rmem { .. })
                    if arg.header.cmd != abi::OPTEE_MSG_CMD_UNREGISTER_SHM =>
                {
                    assert!(
                        st.shm.contains_key(&(client, p.u2)),
                        "rmem of unknown cookie reached OP-TEE"
                    )
                }
                Some(_) => {}
                None => panic!("bad attr reached OP-TEE"),
            }
        }
    }

    fn write_rpc(&self, pa: u64, cmd: u32, params: Vec<MsgParam>) {
        let arg = MsgArg {
            header: MsgArgHeader {
                cmd,
                ..Default::default()
            },
            params,
        };
        assert_eq!(
            self.world.borrow().owner(pa),
            Some(Owner::Hv),
            "RPC arg is not a hypervisor page"
        );
        self.world.borrow_mut().write_pa(pa, &arg.to_bytes());
    }

    fn rpc_ret(tid: u64, client: u64, func: u32, a1: u64, a2: u64) -> [u64; 8] {
        let m = resume_magic(tid);
        [
            u64::from(abi::rpc_val(func)),
            a1,
            a2,
            tid,
            m[0],
            m[1],
            m[2],
            client,
        ]
    }

    fn run(&self, tid: u64) -> [u64; 8] {
        loop {
            let (client, step) = {
                let mut st = self.st.borrow_mut();
                let t = st.threads_live.get_mut(&tid).unwrap();
                (t.client, t.steps.pop_front())
            };
            let mut st = self.st.borrow_mut();
            let t = st.threads_live.get_mut(&tid).unwrap();
            if let Some(cookie) = t.kept_free.take() {
                if let Some(s) = step {
                    t.steps.push_front(s);
                }
                t.pending = Some(abi::OPTEE_SMC_RPC_FUNC_FREE);
                let (hi, lo) = split_regpair(cookie);
                return Self::rpc_ret(tid, client, abi::OPTEE_SMC_RPC_FUNC_FREE, hi, lo);
            }
            let Some(step) = step else {
                drop(st);
                return self.complete(tid);
            };
            match step {
                Step::Mutate(f) => {
                    drop(st);
                    f(&mut self.world.borrow_mut());
                }
                Step::Alloc(_) | Step::Free if t.inline => continue,
                Step::Alloc(size) => {
                    t.pending = Some(abi::OPTEE_SMC_RPC_FUNC_ALLOC);
                    return Self::rpc_ret(tid, client, abi::OPTEE_SMC_RPC_FUNC_ALLOC, size, 0);
                }
                Step::Free => {
                    // A script step that does not apply (nothing allocated) is skipped.
                    let Some((_, cookie)) = t.rpc_arg.take() else {
                        continue;
                    };
                    t.pending = Some(abi::OPTEE_SMC_RPC_FUNC_FREE);
                    let (hi, lo) = split_regpair(cookie);
                    return Self::rpc_ret(tid, client, abi::OPTEE_SMC_RPC_FUNC_FREE, hi, lo);
                }
                Step::ForeignIntr => {
                    t.pending = Some(abi::OPTEE_SMC_RPC_FUNC_FOREIGN_INTR);
                    return Self::rpc_ret(tid, client, abi::OPTEE_SMC_RPC_FUNC_FOREIGN_INTR, 0, 0);
                }
                Step::ShmAlloc(_) | Step::ShmFreeLast | Step::Cmd(_) => {
                    let Some((pa, cookie)) = t.rpc_arg else {
                        continue;
                    };
                    if matches!(step, Step::ShmFreeLast) && t.last_shm.is_none() {
                        continue;
                    }
                    t.pending = Some(abi::OPTEE_SMC_RPC_FUNC_CMD);
                    let v = |attr, a, b, c| MsgParam {
                        attr,
                        u0: a,
                        u1: b,
                        u2: c,
                    };
                    let (cmd, params) = match step {
                        Step::ShmAlloc(size) => (
                            abi::OPTEE_RPC_CMD_SHM_ALLOC,
                            std::vec![v(
                                abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
                                abi::OPTEE_RPC_SHM_TYPE_APPL,
                                size,
                                0
                            )],
                        ),
                        Step::ShmFreeLast => {
                            let c = t.last_shm.take().unwrap_or_default();
                            st.shm.remove(&(client, c));
                            (
                                abi::OPTEE_RPC_CMD_SHM_FREE,
                                std::vec![v(
                                    abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
                                    abi::OPTEE_RPC_SHM_TYPE_APPL,
                                    c,
                                    0
                                )],
                            )
                        }
                        Step::Cmd(cmd) => (
                            cmd,
                            std::vec![
                                v(abi::OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT, 0, 0, 0),
                                v(abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT, 7, 8, 9),
                            ],
                        ),
                        _ => unreachable!(),
                    };
                    drop(st);
                    self.write_rpc(pa, cmd, params);
                    let (hi, lo) = split_regpair(cookie);
                    return Self::rpc_ret(tid, client, abi::OPTEE_SMC_RPC_FUNC_CMD, hi, lo);
                }
            }
        }
    }

    fn complete(&self, tid: u64) -> [u64; 8] {
        let t = self.st.borrow_mut().threads_live.remove(&tid).unwrap();
        let mut arg = self.world.borrow().read_arg(t.arg_pa);
        self.check_arg(t.client, &arg);
        let mut st = self.st.borrow_mut();
        if let (true, false, Some((_, cookie))) = (st.shm_cache, t.inline, t.rpc_arg) {
            st.kept.push_back(cookie);
        }
        st.seen.push(arg.clone());
        arg.header.ret = abi::TEEC_SUCCESS;
        arg.header.ret_origin = 4;
        match arg.header.cmd {
            abi::OPTEE_MSG_CMD_REGISTER_SHM => {
                let p = arg.params[0];
                drop(st);
                let pas = self.check_list(t.client, p.u0, p.u1);
                st = self.st.borrow_mut();
                st.shm.insert((t.client, p.u2), pas);
            }
            abi::OPTEE_MSG_CMD_UNREGISTER_SHM => {
                let cookie = arg.params[0].u2;
                // Like OP-TEE's mobj_reg_shm_release_by_cookie, which waits until the last
                // reference is put: a buffer another call of the client holds is never
                // reported released while it does (here: refused, TEE_ERROR_BUSY).
                let held = st
                    .threads_live
                    .values()
                    .any(|o| o.client == t.client && o.holds.contains(&cookie));
                if held {
                    arg.header.ret = TEEC_ERROR_BUSY;
                } else if st.shm.remove(&(t.client, cookie)).is_none() {
                    arg.header.ret = 0xFFFF_0008;
                }
            }
            abi::OPTEE_MSG_CMD_OPEN_SESSION => arg.header.session = 0x5e55,
            _ => {}
        }
        if st.scribble {
            arg.header.func = 0xbad;
            arg.header.cmd = 0xbad;
        }
        for p in arg.params.iter_mut() {
            match p.kind() {
                Some(abi::ParamKind::Value { output: true }) => {
                    // Guest-chosen values: wrap, as OP-TEE's own arithmetic would.
                    p.u0 = p.u0.wrapping_add(1000);
                    p.u1 = p.u1.wrapping_add(1000);
                    p.u2 = p.u2.wrapping_add(1000);
                }
                Some(abi::ParamKind::Value { output: false }) if st.scribble => p.u0 = 0xbad,
                Some(
                    abi::ParamKind::Tmem { output: true, .. }
                    | abi::ParamKind::Rmem { output: true, .. },
                ) => {
                    p.u1 /= 2;
                }
                Some(abi::ParamKind::Tmem { .. }) if st.scribble => p.u0 = 0xbad,
                _ => {}
            }
        }
        drop(st);
        self.world.borrow_mut().write_pa(t.arg_pa, &arg.to_bytes());
        [0, 0, 0, 0, 0, 0, 0, t.client]
    }

    fn resume(&self, regs: [u64; 8]) -> [u64; 8] {
        let tid = regs[3];
        let client = regs[7];
        let magic = resume_magic(tid);
        let pending = {
            let mut st = self.st.borrow_mut();
            let t = st
                .threads_live
                .get_mut(&tid)
                .expect("resume of unknown OP-TEE thread");
            assert_eq!(t.client, client, "thread resumed by another client");
            assert_eq!(regs[6], magic[2], "a6 resume info not preserved");
            t.pending.take().expect("resume of a thread not in RPC")
        };
        match pending {
            abi::OPTEE_SMC_RPC_FUNC_ALLOC => {
                let pa = regpair(regs[1], regs[2]);
                let cookie = regpair(regs[4], regs[5]);
                if pa != 0 {
                    assert_eq!(
                        self.world.borrow().owner(pa),
                        Some(Owner::Hv),
                        "RPC arg is guest memory"
                    );
                }
                let mut st = self.st.borrow_mut();
                st.alloc_answers.push(pa);
                if pa != 0 {
                    st.threads_live.get_mut(&tid).unwrap().rpc_arg = Some((pa, cookie));
                }
            }
            abi::OPTEE_SMC_RPC_FUNC_CMD => {
                assert_eq!(
                    (regs[4], regs[5]),
                    (magic[0], magic[1]),
                    "a4/a5 resume info not preserved"
                );
                let pa = self.st.borrow().threads_live[&tid].rpc_arg.unwrap().0;
                let arg = self.world.borrow().read_arg(pa);
                if arg.header.cmd == abi::OPTEE_RPC_CMD_SHM_ALLOC && arg.header.ret == 0 {
                    let p = arg.params[0];
                    assert_eq!(
                        p.attr,
                        abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | abi::OPTEE_MSG_ATTR_NONCONTIG
                    );
                    let pas = self.check_list(client, p.u0, p.u1);
                    let mut st = self.st.borrow_mut();
                    st.shm.insert((client, p.u2), pas);
                    st.threads_live.get_mut(&tid).unwrap().last_shm = Some(p.u2);
                }
                self.st.borrow_mut().rpc_answers.push(arg);
            }
            _ => assert_eq!(
                (regs[4], regs[5]),
                (magic[0], magic[1]),
                "a4/a5 resume info not preserved"
            ),
        }
        self.run(tid)
    }
}

impl SecureMonitor for FakeOpTee {
    fn call(&self, regs: [u64; 8]) -> [u64; 8] {
        assert_eq!(
            FakeLock::held(),
            0,
            "SMC issued with a mediator lock held: {regs:x?}"
        );
        self.st.borrow_mut().log.push(regs);
        let fid = regs[0] as u32;
        let client = regs[7];
        let hyp_only = matches!(fid, abi::OPTEE_SMC_VM_CREATED | abi::OPTEE_SMC_VM_DESTROYED);
        if client != 0 {
            assert!(
                self.st.borrow().vms.contains(&client),
                "call from unknown client {client}"
            );
        }
        if hyp_only {
            assert_eq!(client, 0, "VM lifecycle call not from the hypervisor");
        }
        let mut st = self.st.borrow_mut();
        let r = |a: [u64; 4]| [a[0], a[1], a[2], a[3], 0, 0, 0, client];
        match fid {
            abi::OPTEE_SMC_CALLS_UID => r(st.uid.map(u64::from)),
            abi::OPTEE_SMC_CALLS_COUNT => r([21, 0, 0, 0]),
            abi::OPTEE_SMC_CALLS_REVISION => r([2, 0, 0, 0]),
            abi::OPTEE_SMC_GET_OS_UUID => r(abi::OPTEE_OS_UUID.map(u64::from)),
            abi::OPTEE_SMC_GET_OS_REVISION => r([4, 1, 0xb1d, 0]),
            abi::OPTEE_SMC_EXCHANGE_CAPABILITIES => r([0, st.caps, 0x40, 6]),
            abi::OPTEE_SMC_GET_THREAD_COUNT => r([0, u64::from(st.threads), 0, 0]),
            abi::OPTEE_SMC_ENABLE_SHM_CACHE => {
                st.shm_cache = true;
                r([0; 4])
            }
            abi::OPTEE_SMC_DISABLE_SHM_CACHE => {
                match st.cache_cookies.iter().position(|(c, _)| *c == client) {
                    Some(i) => {
                        let (_, cookie) = st.cache_cookies.remove(i).unwrap();
                        let (hi, lo) = split_regpair(cookie);
                        r([0, hi, lo, 0])
                    }
                    None => {
                        st.shm_cache = false;
                        r([u64::from(abi::OPTEE_SMC_RETURN_ENOTAVAIL), 0, 0, 0])
                    }
                }
            }
            abi::OPTEE_SMC_VM_CREATED => {
                if st.refuse_vm_created {
                    return r([u64::from(abi::OPTEE_SMC_RETURN_ENOTAVAIL), 0, 0, 0]);
                }
                st.vms.insert(regs[1]);
                r([0; 4])
            }
            abi::OPTEE_SMC_VM_DESTROYED => {
                assert!(st.vms.remove(&regs[1]));
                st.shm.retain(|(c, _), _| *c != regs[1]);
                st.threads_live.retain(|_, t| t.client != regs[1]);
                r([0; 4])
            }
            abi::OPTEE_SMC_CALL_WITH_ARG | abi::OPTEE_SMC_CALL_WITH_RPC_ARG => {
                let pa = regpair(regs[1], regs[2]);
                assert_eq!(
                    self.world.borrow().owner(pa),
                    Some(Owner::Hv),
                    "argument is not a shadow page"
                );
                if st.threads_live.len() >= st.threads as usize {
                    // Like OP-TEE: every thread is busy (in a call or parked in an RPC).
                    return r([u64::from(abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT), 0, 0, 0]);
                }
                let steps = st.plans.pop_front().unwrap_or_default().into();
                let kept_free = st.kept.pop_front();
                let tid = st.next_tid;
                st.next_tid += 1;
                st.threads_live.insert(
                    tid,
                    Thread {
                        client,
                        arg_pa: pa,
                        steps,
                        rpc_arg: None,
                        pending: None,
                        last_shm: None,
                        inline: false,
                        kept_free,
                        holds: Vec::new(),
                    },
                );
                drop(st);
                let arg = self.world.borrow().read_arg(pa);
                if arg.header.cmd != abi::OPTEE_MSG_CMD_UNREGISTER_SHM {
                    let holds = arg
                        .params
                        .iter()
                        .filter(|p| matches!(p.kind(), Some(abi::ParamKind::Rmem { .. })))
                        .map(|p| p.u2)
                        .collect();
                    self.st
                        .borrow_mut()
                        .threads_live
                        .get_mut(&tid)
                        .unwrap()
                        .holds = holds;
                }
                if fid == abi::OPTEE_SMC_CALL_WITH_RPC_ARG {
                    // The RPC argument follows the argument, in the same (shadow) page.
                    let rpc_pa = pa + abi::arg_size(arg.params.len()) as u64;
                    assert_eq!(
                        rpc_pa / PAGE,
                        pa / PAGE,
                        "inline RPC arg crosses the shadow page"
                    );
                    let mut st = self.st.borrow_mut();
                    let t = st.threads_live.get_mut(&tid).unwrap();
                    t.rpc_arg = Some((rpc_pa, 0));
                    t.inline = true;
                }
                self.check_arg(client, &arg);
                self.run(tid)
            }
            abi::OPTEE_SMC_RETURN_FROM_RPC => {
                drop(st);
                self.resume(regs)
            }
            _ => r([u64::from(abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION), 0, 0, 0]),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Locks.
// ---------------------------------------------------------------------------------------

std::thread_local! {
    /// Mediator locks this thread holds right now.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// The tests' `Lock`: a `RefCell` (a re-entered lock is a panic, not a deadlock) that counts
/// the locks held on this thread, for the fake OP-TEE's check that none is held across an
/// SMC.
pub struct FakeLock;

impl FakeLock {
    /// Mediator locks held on this thread.
    pub fn held() -> u32 {
        HELD.with(Cell::get)
    }
}

impl Lock for FakeLock {
    type Mutex<T> = RefCell<T>;

    fn new<T>(value: T) -> RefCell<T> {
        RefCell::new(value)
    }

    fn with<T, R>(mutex: &RefCell<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = mutex
            .try_borrow_mut()
            .expect("mediator re-entered a lock it holds");
        HELD.with(|h| h.set(h.get() + 1));
        let r = f(&mut guard);
        HELD.with(|h| h.set(h.get() - 1));
        r
    }
}

// ---------------------------------------------------------------------------------------
// Trace recorder.
// ---------------------------------------------------------------------------------------

/// A decoded parameter as the recorder keeps it: as the guest has it, as OP-TEE has it, and
/// its pages (IPA, PA).
pub type ParamSeen = (MsgParam, MsgParam, Vec<(Ipa, PhysAddr)>);

/// A decoded message as the recorder keeps it (`MsgRecord`, owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgSeen {
    pub vm: crate::ports::VmId,
    pub call: u32,
    pub dir: MsgDir,
    pub header: MsgArgHeader,
    /// Per parameter: as the guest has it, as OP-TEE has it, and its pages.
    pub params: Vec<ParamSeen>,
}

/// Keeps every record, and every decoded message (`msg_on` is always true, so the tests
/// and the fuzz driver run the decoding paths too).
#[derive(Default, Clone)]
pub struct Recorder(
    pub Rc<RefCell<Vec<SmcRecord>>>,
    pub Rc<RefCell<Vec<MsgSeen>>>,
);

impl Trace for Recorder {
    const ENABLED: bool = true;
    fn smc(&self, record: &SmcRecord) {
        self.0.borrow_mut().push(*record);
    }
    fn msg_on(&self) -> bool {
        true
    }
    fn msg(&self, r: &MsgRecord<'_>) {
        self.1.borrow_mut().push(MsgSeen {
            vm: r.vm,
            call: r.call,
            dir: r.dir,
            header: r.header,
            params: r
                .params
                .iter()
                .map(|p| (p.guest, p.optee, p.pages.to_vec()))
                .collect(),
        });
    }
}
