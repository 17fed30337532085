// SPDX-License-Identifier: MIT OR Apache-2.0
//! The driver: runs cases over the [`Guest`] port, answers OP-TEE's RPCs, and checks
//! everything that spans more than one SMC.
//!
//! ```text
//!   Case ──▶ Driver ──Guest::write──▶ messages, page lists (the arena, edge pages)
//!              │  ▲
//!              │  └─ every answer ─▶ check::check (per step)
//!              │                  └▶ invariants (per SMC, per RPC, per call)
//!              └──Guest::smc──▶ moat ──▶ mediator ──▶ OP-TEE
//! ```
//!
//! Invariants checked on every SMC and RPC, whatever the case:
//! - a0..a3 of an SMC32 answer have zero upper halves, and a4..a7 come back as the guest
//!   passed them (the mediator keeps OP-TEE's resume registers to itself);
//! - an RPC FREE or RPC command names an RPC argument this guest allocated, in this call
//!   (a FREE of an earlier call's argument means OP-TEE's RPC cache is on: attack 2), and
//!   never one whose ALLOC the guest answered with memory the mediator must refuse;
//! - a memref in an RPC request, and an RPC SHM_FREE, names shared memory this guest
//!   registered or allocated, never a buffer the mediator must have refused;
//! - when a call completes, OP-TEE holds none of its RPC arguments (the cache is off);
//! - a message comes back changed only where the protocol lets OP-TEE write (ret,
//!   ret_origin, OPEN_SESSION's session, value outputs, memref output sizes);
//! - every call ends within [`MAX_RPC_ROUNDS`] RPCs.
//!
//! The driver writes only where the layout says it may (`Layout::writable`): the arena,
//! reset after every case, and the edge pages; and it touches MMIO only inside the frames
//! of the devices moat emulates (`Layout::devices`), one aligned access at a time.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use mediator::abi::{self, MsgArg, MsgArgHeader, MsgParam};

use hv_core::mmio::Width;

use crate::campaign::{
    Access, Alloc, BufRef, Case, CookieRef, Family, HandleRef, List, LoadTa, Msg, Op, Param,
    ParkAt, RpcPlan, Session, Shm, Step, Via,
};
use crate::check::{self, Ctx, Expect, MmioExpect, Outcome, Severity, Verdict};
use crate::layout::{Device, Layout, PAGE};
use crate::proto::{self, pair, unpair, INVOKE_TESTS_PTA};

/// The ports the driver runs on: the effect crate implements them with `smc #0`, plain
/// loads and stores to the guest's own RAM, the generic timer and the PL011; the host
/// tests with the mediator over its fakes.
pub trait Guest {
    /// `smc #0` with x0..x7; x0..x7 after it.
    fn smc(&mut self, regs: [u64; 8]) -> [u64; 8];
    /// Write the guest's own memory at `pa` (only where `Layout::writable` allows).
    fn write(&mut self, pa: u64, bytes: &[u8]);
    /// Read the guest's own memory at `pa`.
    fn read(&mut self, pa: u64, buf: &mut [u8]);
    /// Milliseconds of a clock that never goes back.
    fn now_ms(&mut self) -> u64;
    /// Print one console line.
    fn say(&mut self, line: &str);
    /// One access to an emulated device's register at `pa` (naturally aligned, inside a
    /// frame of `Layout::devices`): `Ok` with the value read (0 for a store), or `Err`
    /// with ESR_EL1 of the exception the access took, after which the guest goes on.
    fn mmio(&mut self, pa: u64, access: Mmio) -> Result<u64, u64>;
}

/// An access to an emulated device, as the port performs it: one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmio {
    /// `ldrb`, `ldrh`, `ldr w` or `ldr x` (with a valid syndrome: ISV=1).
    Read(Width),
    /// `strb`, `strh`, `str w` or `str x` of the value's low bytes.
    Write(Width, u64),
    /// `ldp` of two words (no syndrome: ISV=0); its value is the first word.
    ReadPair,
}

/// Most RPCs one call may take before the driver gives up on it (a hang, reported).
pub const MAX_RPC_ROUNDS: u32 = 64;
/// Most pages an RPC SHM_ALLOC is served with.
const MAX_SHM_ALLOC_PAGES: u64 = 64;

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The case (None: setup or the final checks).
    pub case: Option<u32>,
    /// How bad.
    pub severity: Severity,
    /// What happened.
    pub what: String,
}

/// Counts for one family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases run.
    pub cases: u32,
    /// Checks made.
    pub checks: u32,
    /// Escapes found.
    pub escapes: u32,
    /// Unexpected answers found.
    pub unexpected: u32,
    /// Cases skipped (the arena was too small).
    pub skipped: u32,
}

/// An RPC argument the guest allocated (RPC_FUNC_ALLOC).
#[derive(Clone, Copy, Debug)]
struct RpcArg {
    pa: u64,
    /// The call it was allocated for; None once that call completed.
    handle: Option<u32>,
}

/// Shared memory the guest gave OP-TEE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShmKind {
    Registered,
    RpcAlloc,
}

/// A registration of the current case (`BufRef::Case`).
#[derive(Clone, Copy, Debug)]
struct CaseBuf {
    cookie: u64,
    /// First data page (the data pages are contiguous).
    data: u64,
    size: u64,
    live: bool,
}

/// A call in flight or parked.
#[derive(Clone, Debug)]
struct Call {
    /// Where its message is, if the guest's.
    msg_at: Option<u64>,
    /// What was written there (the part the guest could write).
    written: Vec<u8>,
    /// Its inline RPC argument, for CALL_WITH_RPC_ARG and CALL_WITH_REGD_ARG.
    inline_rpc: Option<u64>,
    plan: RpcPlan,
    /// Answer every RPC with a failure (releasing a parked call).
    release: bool,
    handle: Option<u32>,
    /// The case registration its REGISTER_SHM makes.
    registers: Option<usize>,
    /// RPC_FUNC_ALLOCs answered so far.
    allocs: u32,
    /// Cookies answered for this call that the mediator must refuse as duplicates.
    dup_args: Vec<u64>,
    dup_shm: Vec<u64>,
}

/// A call left parked in an RPC: OP-TEE's last RPC registers.
#[derive(Clone, Debug)]
struct Parked {
    call: Call,
    rpc: [u64; 8],
}

/// How a call ended.
enum End {
    Done(Outcome),
    Parked(Outcome, alloc::boxed::Box<Parked>),
    Skipped,
}

/// The current case's state.
#[derive(Default)]
struct CaseState {
    bufs: Vec<CaseBuf>,
    parked: Vec<Parked>,
    handles: Vec<u32>,
    sessions: Vec<u32>,
    /// The value of the case's last `MmioExpect::Keep` read.
    kept: Option<u64>,
}

/// The driver.
pub struct Driver<'a, G: Guest> {
    /// The ports.
    pub g: &'a mut G,
    layout: &'a Layout,
    next_free: u64,
    /// Secure capabilities as the guest sees them (EXCHANGE_CAPABILITIES).
    pub caps: u64,
    /// Parameters of the inline RPC argument (EXCHANGE_CAPABILITIES a3).
    pub rpc_params: u32,
    /// The guest's share of OP-TEE's threads (GET_THREAD_COUNT).
    pub share: u32,
    /// The session to invoke_tests.pta.
    pub pta: Option<u32>,
    cookie_seq: u64,
    canary_seq: u64,
    rpc_args: BTreeMap<u64, RpcArg>,
    refused_args: BTreeMap<u64, Severity>,
    shm: BTreeMap<u64, ShmKind>,
    refused_shm: BTreeMap<u64, Severity>,
    case: CaseState,
    current: Option<(u32, Family)>,
    /// Counts per family.
    pub tallies: BTreeMap<Family, Tally>,
    /// Checks outside any case.
    pub other_checks: u32,
    /// Every finding's severity count.
    pub escapes: u32,
    /// Unexpected answers.
    pub unexpected: u32,
    /// The first findings, kept for the tests.
    pub findings: Vec<Finding>,
    show: u32,
    /// Print every SMC and its answer.
    pub trace: bool,
    /// The current case's name, for its first finding.
    name: Option<String>,
}

/// A cookie prefix no Linux guest and no OP-TEE would pick: "ho" + a sequence number.
const COOKIE_BASE: u64 = 0x686f_0000_0000_0000;
/// Findings kept in `Driver::findings`.
const KEEP_FINDINGS: usize = 256;

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl<'a, G: Guest> Driver<'a, G> {
    /// A driver over `g` for a guest laid out as `layout`; at most `show` findings are
    /// printed.
    pub fn new(g: &'a mut G, layout: &'a Layout, show: u32) -> Self {
        Self {
            g,
            layout,
            next_free: layout.arena.start,
            caps: 0,
            rpc_params: 0,
            share: 1,
            pta: None,
            cookie_seq: 0,
            canary_seq: 0,
            rpc_args: BTreeMap::new(),
            refused_args: BTreeMap::new(),
            shm: BTreeMap::new(),
            refused_shm: BTreeMap::new(),
            case: CaseState::default(),
            current: None,
            tallies: BTreeMap::new(),
            other_checks: 0,
            escapes: 0,
            unexpected: 0,
            findings: Vec::new(),
            show,
            trace: false,
            name: None,
        }
    }

    // -------------------------------------------------------------------------------------
    // Findings.

    /// Record a failed check.
    pub fn finding(&mut self, severity: Severity, what: String) {
        match severity {
            Severity::Escape => self.escapes += 1,
            Severity::Unexpected => self.unexpected += 1,
        }
        if let Some((_, f)) = self.current {
            let t = self.tallies.entry(f).or_default();
            match severity {
                Severity::Escape => t.escapes += 1,
                Severity::Unexpected => t.unexpected += 1,
            }
        }
        let n = self.escapes + self.unexpected;
        if n <= self.show {
            if let (Some(name), Some((i, f))) = (self.name.take(), self.current) {
                self.g
                    .say(&alloc::format!("hostile: case {i} ({}): {name}", f.name()));
            }
            let tag = match severity {
                Severity::Escape => "ESCAPE",
                Severity::Unexpected => "UNEXPECTED",
            };
            let line = match self.current {
                Some((i, f)) => alloc::format!("hostile: {tag} case {i} ({}): {what}", f.name()),
                None => alloc::format!("hostile: {tag}: {what}"),
            };
            self.g.say(&line);
        } else if n == self.show + 1 {
            self.g
                .say("hostile: (more findings are only counted; see the summary)");
        }
        if self.findings.len() < KEEP_FINDINGS {
            self.findings.push(Finding {
                case: self.current.map(|(i, _)| i),
                severity,
                what,
            });
        }
    }

    fn verdict(&mut self, v: Verdict, what: &str) {
        match self.current {
            Some((_, f)) => self.tallies.entry(f).or_default().checks += 1,
            None => self.other_checks += 1,
        }
        if let Verdict::Fail(sev, why) = v {
            self.finding(sev, alloc::format!("{what}: {why}"));
        }
    }

    /// Check `out` against `expect` and record the verdict.
    fn judge(&mut self, expect: &Expect, out: &Outcome, what: &str) -> bool {
        let ctx = Ctx {
            share: self.share,
            parked: self.case.parked.len() as u32,
        };
        let v = check::check(expect, &ctx, out);
        let pass = v == Verdict::Pass;
        if self.trace {
            let line = alloc::format!(
                "hostile: trace: {what}: a0 {:#x}{} against {expect:?}: {}",
                out.regs[0],
                out.msg.map_or(String::new(), |h| alloc::format!(
                    ", ret {:#x} origin {}",
                    h.ret,
                    h.ret_origin
                )),
                if pass { "pass" } else { "FAIL" }
            );
            self.g.say(&line);
        }
        self.verdict(v, what);
        pass
    }

    // -------------------------------------------------------------------------------------
    // Memory and registers.

    fn alloc_pages(&mut self, n: u64) -> Option<u64> {
        let len = n.checked_mul(PAGE)?;
        let at = self.next_free;
        let end = at.checked_add(len)?;
        if end > self.layout.arena.end {
            return None;
        }
        self.next_free = end;
        Some(at)
    }

    fn write(&mut self, pa: u64, bytes: &[u8]) {
        debug_assert!(self.layout.writable(pa, bytes.len() as u64), "{pa:#x}");
        if self.layout.writable(pa, bytes.len() as u64) {
            self.g.write(pa, bytes);
        }
    }

    fn read(&mut self, pa: u64, len: usize) -> Vec<u8> {
        let mut b = alloc::vec![0u8; len];
        if self.layout.writable(pa, len as u64) {
            self.g.read(pa, &mut b);
        }
        b
    }

    fn fresh_cookie(&mut self) -> u64 {
        self.cookie_seq += 1;
        COOKIE_BASE | self.cookie_seq << 12
    }

    fn canaries(&mut self) -> [u64; 4] {
        self.canary_seq += 1;
        let c = self.canary_seq;
        [
            0xa4a4_0000_0000_0000 | c,
            0xa5a5_0000_0000_0000 | c,
            0xa6a6_0000_0000_0000 | c,
            0xa7a7_0000_0000_0000 | c,
        ]
    }

    /// One SMC, with the per-SMC invariants checked.
    fn smc(&mut self, regs: [u64; 8]) -> [u64; 8] {
        let r = self.g.smc(regs);
        if self.trace {
            let line = alloc::format!(
                "hostile: trace: {} {:x?} -> {:x?}",
                abi::function_name(regs[0] as u32),
                &regs[..4],
                &r[..4]
            );
            self.g.say(&line);
        }
        if let Some(i) = (0..4).find(|&i| r[i] >> 32 != 0) {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "{} answered x{i} = {:#x}: an SMC32 answer with its upper half set",
                    abi::function_name(regs[0] as u32),
                    r[i]
                ),
            );
        }
        if r[4..8] != regs[4..8] {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "{} changed x4..x7 from {:x?} to {:x?}",
                    abi::function_name(regs[0] as u32),
                    &regs[4..8],
                    &r[4..8]
                ),
            );
        }
        r
    }

    /// A fast call with `a1..a3` from `args` (a4..a7 are canaries that must come back),
    /// checked against `expect`. Returns x0..x3.
    pub fn fast(&mut self, fid: u32, args: [u64; 6], expect: &Expect, what: &str) -> [u64; 4] {
        let c = self.canaries();
        // a4..a7 are the guest's: they must come back as they went.
        let r = self.smc([
            u64::from(fid),
            args[0],
            args[1],
            args[2],
            c[0],
            c[1],
            c[2],
            c[3],
        ]);
        let out = Outcome {
            regs: [r[0], r[1], r[2], r[3]],
            msg: None,
        };
        self.judge(expect, &out, what);
        if fid == abi::OPTEE_SMC_GET_THREAD_COUNT && r[0] == 0 && r[1] > 0 {
            self.share = r[1] as u32;
        }
        if fid == abi::OPTEE_SMC_DISABLE_SHM_CACHE && r[0] == 0 {
            let c = unpair(r[1], r[2]);
            let sev = match self.rpc_args.contains_key(&c) || self.shm.contains_key(&c) {
                true => Severity::Unexpected,
                false => Severity::Escape,
            };
            self.finding(
                sev,
                alloc::format!(
                    "DISABLE_SHM_CACHE handed back cookie {c:#x}{}",
                    if sev == Severity::Escape {
                        ", which this guest never allocated"
                    } else {
                        ": OP-TEE's RPC-argument cache was on"
                    }
                ),
            );
            self.rpc_args.remove(&c);
        }
        [r[0], r[1], r[2], r[3]]
    }

    // -------------------------------------------------------------------------------------
    // Building messages.

    /// Write a page list; returns (`buf_ptr`, byte size, first data page).
    fn make_list(&mut self, list: &List, min_pages: u64) -> Option<(u64, u64, u64)> {
        let pages = u64::from(list.pages).max(min_pages).max(1);
        let offset = list.offset % PAGE;
        let size = list.size.unwrap_or((pages * PAGE).saturating_sub(offset));
        if let Some(at) = list.list_at {
            return Some((at | offset, size, 0));
        }
        let data = self.alloc_pages(pages)?;
        let per = abi::PAGELIST_ENTRIES_PER_PAGE as u64;
        let lists = pages.div_ceil(per);
        let first = self.alloc_pages(lists)?;
        let mut page = alloc::vec![0u8; PAGE as usize];
        for l in 0..lists {
            page.fill(0);
            for j in 0..per.min(pages - l * per) {
                let i = l * per + j;
                let entry = list
                    .bad_entries
                    .iter()
                    .find(|(at, _)| u64::from(*at) == i)
                    .map_or(data + i * PAGE, |(_, a)| *a);
                abi::write_u64(&mut page, (j * 8) as usize, entry);
            }
            let next = match (l, list.next_at) {
                (0, Some(n)) => n,
                _ if l + 1 < lists => first + (l + 1) * PAGE,
                _ => 0,
            };
            abi::write_u64(&mut page, abi::PAGELIST_ENTRIES_PER_PAGE * 8, next);
            self.write(first + l * PAGE, &page);
        }
        Some((first | offset, size, data))
    }

    fn buf_cookie(&self, b: BufRef) -> (u64, Option<CaseBuf>) {
        match b {
            BufRef::Raw(c) => (c, None),
            BufRef::Case(i) => match self.case.bufs.get(i) {
                Some(cb) => (cb.cookie, Some(*cb)),
                None => (COOKIE_BASE | 0xfff, None),
            },
        }
    }

    /// The message's bytes, and the case registration it makes.
    fn build(&mut self, msg: &Msg) -> Option<(Vec<u8>, Option<usize>)> {
        let mut params = Vec::with_capacity(msg.params.len());
        let mut registers = None;
        for p in &msg.params {
            params.push(match p {
                Param::Raw(p) => *p,
                Param::Tmem { attr, list } => {
                    let (buf_ptr, size, _) = self.make_list(list, 0)?;
                    MsgParam {
                        attr: *attr,
                        u0: buf_ptr,
                        u1: size,
                        u2: 0,
                    }
                }
                Param::Rmem {
                    attr,
                    buf,
                    offs,
                    size,
                } => {
                    let (cookie, cb) = self.buf_cookie(*buf);
                    let whole = cb.map_or(PAGE, |b| b.size).saturating_sub(*offs);
                    MsgParam {
                        attr: *attr,
                        u0: *offs,
                        u1: size.unwrap_or(whole),
                        u2: cookie,
                    }
                }
                Param::Register { list, cookie } => {
                    let c = match cookie {
                        CookieRef::Fresh => self.fresh_cookie(),
                        CookieRef::Reuse(i) => self.buf_cookie(BufRef::Case(*i)).0,
                    };
                    let (buf_ptr, size, data) = self.make_list(list, 0)?;
                    registers = Some(self.case.bufs.len());
                    self.case.bufs.push(CaseBuf {
                        cookie: c,
                        data,
                        size,
                        live: false,
                    });
                    MsgParam {
                        attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
                        u0: buf_ptr,
                        u1: size,
                        u2: c,
                    }
                }
            });
        }
        let session = match msg.session {
            Session::Zero => 0,
            Session::Pta => self.pta.unwrap_or(0),
            Session::Raw(s) => s,
        };
        let arg = MsgArg {
            header: MsgArgHeader {
                cmd: msg.cmd,
                func: msg.func,
                session,
                ..Default::default()
            },
            params,
        };
        let mut bytes = arg.to_bytes();
        if let Some(n) = msg.num_params {
            bytes[28..32].copy_from_slice(&n.to_le_bytes());
        }
        Some((bytes, registers))
    }

    // -------------------------------------------------------------------------------------
    // Calls.

    /// Start a call: write its message, issue the SMC, drive its RPCs.
    fn call(&mut self, via: &Via, msg: &Msg, plan: &RpcPlan) -> End {
        let Some((bytes, registers)) = self.build(msg) else {
            return End::Skipped;
        };
        let c = self.canaries();
        let inline_len = abi::arg_size(self.rpc_params as usize) as u64;
        let mut call = Call {
            msg_at: None,
            written: Vec::new(),
            inline_rpc: None,
            plan: plan.clone(),
            release: false,
            handle: None,
            registers,
            allocs: 0,
            dup_args: Vec::new(),
            dup_shm: Vec::new(),
        };
        let arg_len = bytes.len() as u64;
        let (fid, a1, a2, a3) = match *via {
            Via::Arg { offset } => {
                let Some(page) = self.alloc_pages(2) else {
                    return End::Skipped;
                };
                let at = page + offset;
                self.place(&mut call, at, &bytes);
                let (hi, lo) = pair(at);
                (abi::OPTEE_SMC_CALL_WITH_ARG, hi, lo, 0)
            }
            Via::ArgDirty => {
                let Some(at) = self.alloc_pages(1) else {
                    return End::Skipped;
                };
                self.place(&mut call, at, &bytes);
                let (hi, lo) = pair(at);
                let junk = 0xdead_beef_u64 << 32;
                (abi::OPTEE_SMC_CALL_WITH_ARG, hi | junk, lo | junk, 0)
            }
            Via::RpcArg => {
                let Some(at) = self.alloc_pages(1) else {
                    return End::Skipped;
                };
                self.place(&mut call, at, &bytes);
                call.inline_rpc = Some(at + arg_len);
                let (hi, lo) = pair(at);
                (abi::OPTEE_SMC_CALL_WITH_RPC_ARG, hi, lo, 0)
            }
            Via::At { fid, addr } => {
                let (hi, lo) = pair(addr);
                (fid, hi, lo, 0)
            }
            Via::Edge { fid, edge, inside } => {
                let Some(&page) = self.layout.edges.get(edge) else {
                    return End::Skipped;
                };
                let at = page + PAGE - inside.min(PAGE);
                let n = (inside as usize).min(bytes.len());
                self.place(&mut call, at, &bytes[..n]);
                call.inline_rpc = Some(at + arg_len);
                let (hi, lo) = pair(at);
                (fid, hi, lo, 0)
            }
            Via::Regd { buf, offset } => {
                let (cookie, cb) = self.buf_cookie(buf);
                if let Some(b) = cb.filter(|b| offset < b.size) {
                    let at = b.data + offset;
                    let room = (b.size - offset).min(arg_len + inline_len) as usize;
                    self.place(&mut call, at, &bytes[..room.min(bytes.len())]);
                    if room as u64 >= arg_len + inline_len {
                        call.inline_rpc = Some(at + arg_len);
                    }
                }
                let (hi, lo) = pair(cookie);
                (
                    abi::OPTEE_SMC_CALL_WITH_REGD_ARG,
                    hi,
                    lo,
                    offset & 0xffff_ffff,
                )
            }
        };
        let r = self.smc([u64::from(fid), a1, a2, a3, c[0], c[1], c[2], c[3]]);
        self.drive(call, r)
    }

    /// Write (part of) a message at `at` and remember it.
    fn place(&mut self, call: &mut Call, at: u64, bytes: &[u8]) {
        self.write(at, bytes);
        call.msg_at = Some(at);
        call.written = bytes.to_vec();
    }

    /// Follow a call's RPCs from OP-TEE's answer `r` until it completes or parks.
    fn drive(&mut self, mut call: Call, mut r: [u64; 8]) -> End {
        for _ in 0..MAX_RPC_ROUNDS {
            let a0 = r[0] as u32;
            if !abi::is_rpc(a0) {
                return End::Done(self.complete(&call, r));
            }
            let handle = r[3] as u32;
            call.handle = Some(handle);
            let func = a0 & !abi::OPTEE_SMC_RETURN_RPC_PREFIX_MASK;
            let park = match call.plan.park {
                Some(ParkAt::First) => true,
                Some(ParkAt::Cmd) => func == abi::OPTEE_SMC_RPC_FUNC_CMD,
                Some(ParkAt::Alloc(n)) => {
                    func == abi::OPTEE_SMC_RPC_FUNC_ALLOC && call.allocs + 1 == u32::from(n)
                }
                None => false,
            };
            if park && !call.release {
                let out = Outcome {
                    regs: [r[0], r[1], r[2], r[3]],
                    msg: None,
                };
                return End::Parked(out, alloc::boxed::Box::new(Parked { call, rpc: r }));
            }
            let answer = self.answer_rpc(&mut call, &r);
            r = self.smc(answer);
        }
        self.finding(
            Severity::Unexpected,
            alloc::format!(
                "a call was still asking RPCs after {MAX_RPC_ROUNDS} rounds (last a0 = {:#x})",
                r[0]
            ),
        );
        let out = Outcome {
            regs: [r[0], r[1], r[2], r[3]],
            msg: None,
        };
        End::Parked(out, alloc::boxed::Box::new(Parked { call, rpc: r }))
    }

    /// RETURN_FROM_RPC for OP-TEE's RPC request `r`.
    fn answer_rpc(&mut self, call: &mut Call, r: &[u64; 8]) -> [u64; 8] {
        let func = (r[0] as u32) & !abi::OPTEE_SMC_RETURN_RPC_PREFIX_MASK;
        let handle = r[3] as u32;
        let c = self.canaries();
        let mut out = [
            u64::from(abi::OPTEE_SMC_RETURN_FROM_RPC),
            0,
            0,
            r[3],
            c[0],
            c[1],
            c[2],
            c[3],
        ];
        match func {
            abi::OPTEE_SMC_RPC_FUNC_ALLOC => {
                let plan = match (call.release, call.allocs) {
                    (true, _) => Alloc::Null,
                    (false, 0) => call.plan.alloc,
                    (false, _) => Alloc::Good,
                };
                call.allocs += 1;
                let good = |d: &mut Self, cookie: u64, track: bool| -> Option<(u64, u64)> {
                    let pa = d.alloc_pages(1)?;
                    if track {
                        d.rpc_args.insert(
                            cookie,
                            RpcArg {
                                pa,
                                handle: Some(handle),
                            },
                        );
                    }
                    Some((pa, cookie))
                };
                let (pa, cookie) = match plan {
                    Alloc::Good => {
                        let c = self.fresh_cookie();
                        good(self, c, true).unwrap_or((0, 0))
                    }
                    Alloc::Cookie(c) => good(self, c, true).unwrap_or((0, 0)),
                    Alloc::ReuseLive => {
                        let live = self
                            .rpc_args
                            .iter()
                            .find(|(_, a)| a.handle.is_some() && a.handle != Some(handle))
                            .map(|(c, _)| *c);
                        match live {
                            Some(c) => {
                                call.dup_args.push(c);
                                good(self, c, false).unwrap_or((0, 0))
                            }
                            None => {
                                let c = self.fresh_cookie();
                                good(self, c, true).unwrap_or((0, 0))
                            }
                        }
                    }
                    Alloc::Null => (0, 0),
                    Alloc::At(addr) => {
                        let c = self.fresh_cookie();
                        let sev = match self.layout.is_forbidden(addr, 1) {
                            Some(_) => Severity::Escape,
                            None => Severity::Unexpected,
                        };
                        self.refused_args.insert(c, sev);
                        (addr, c)
                    }
                    Alloc::Wrong => {
                        // A FREE answer: a1/a2 as OP-TEE sent them (the size, 0).
                        let c = self.fresh_cookie();
                        let addr = unpair(r[1], r[2]);
                        let sev = match self.layout.is_ram(addr, 1) {
                            true => Severity::Unexpected,
                            false => Severity::Escape,
                        };
                        self.refused_args.insert(c, sev);
                        (addr, c)
                    }
                };
                (out[1], out[2]) = pair(pa);
                (out[4], out[5]) = pair(cookie);
            }
            abi::OPTEE_SMC_RPC_FUNC_FREE => {
                let cookie = unpair(r[1], r[2]);
                self.judge_free(cookie, handle);
            }
            abi::OPTEE_SMC_RPC_FUNC_FOREIGN_INTR => {}
            abi::OPTEE_SMC_RPC_FUNC_CMD => {
                let cookie = unpair(r[1], r[2]);
                let at = match call.inline_rpc {
                    Some(at) => Some(at),
                    None => self.rpc_arg_at(call, cookie, handle),
                };
                if let Some(at) = at {
                    self.serve_cmd(call, at);
                }
            }
            f => self.finding(
                Severity::Unexpected,
                alloc::format!("OP-TEE's RPC function {f:#x} reached the guest"),
            ),
        }
        out
    }

    /// Where the RPC argument `cookie` of an RPC command is, if it is one the guest may be
    /// asked to serve.
    fn rpc_arg_at(&mut self, call: &Call, cookie: u64, handle: u32) -> Option<u64> {
        if call.dup_args.contains(&cookie) {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "an RPC command in argument {cookie:#x}, a duplicate cookie the mediator had to refuse"
                ),
            );
            return None;
        }
        if let Some(a) = self.rpc_args.get(&cookie).copied() {
            if a.handle != Some(handle) {
                self.finding(
                    Severity::Unexpected,
                    alloc::format!(
                        "an RPC command in argument {cookie:#x} of another call: OP-TEE's RPC-argument cache is on"
                    ),
                );
            }
            return Some(a.pa);
        }
        match self.refused_args.get(&cookie).copied() {
            Some(sev) => self.finding(
                sev,
                alloc::format!(
                    "an RPC command in argument {cookie:#x}, whose ALLOC the mediator had to refuse"
                ),
            ),
            None => self.finding(
                Severity::Escape,
                alloc::format!(
                    "an RPC command names argument {cookie:#x}, which this guest never allocated"
                ),
            ),
        }
        None
    }

    fn judge_free(&mut self, cookie: u64, handle: u32) {
        match self.rpc_args.remove(&cookie) {
            Some(a) if a.handle == Some(handle) => {}
            Some(_) => self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "RPC FREE of argument {cookie:#x} of an earlier call: OP-TEE's RPC-argument cache is on (attack 2)"
                ),
            ),
            None => match self.refused_args.get(&cookie).copied() {
                Some(sev) => self.finding(
                    sev,
                    alloc::format!("RPC FREE of {cookie:#x}, whose ALLOC the mediator had to refuse"),
                ),
                None => self.finding(
                    Severity::Escape,
                    alloc::format!("RPC FREE of cookie {cookie:#x}, which this guest never allocated"),
                ),
            },
        }
    }

    fn judge_shm_ref(&mut self, call: &Call, cookie: u64, what: &str) -> Option<ShmKind> {
        if call.dup_shm.contains(&cookie) {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "{what} names {cookie:#x}, a duplicate cookie the mediator had to refuse"
                ),
            );
            return None;
        }
        if let Some(k) = self.shm.get(&cookie) {
            return Some(*k);
        }
        match self.refused_shm.get(&cookie).copied() {
            Some(sev) => self.finding(
                sev,
                alloc::format!(
                    "{what} names shared memory {cookie:#x}, which the mediator had to refuse"
                ),
            ),
            None => self.finding(
                Severity::Escape,
                alloc::format!(
                    "{what} names shared memory {cookie:#x}, which this guest never gave"
                ),
            ),
        }
        None
    }

    /// Serve the RPC command whose argument is at `at`.
    fn serve_cmd(&mut self, call: &mut Call, at: u64) {
        let head = self.read(at, abi::MSG_ARG_HEADER_SIZE);
        let Ok(h) = MsgArgHeader::parse(&head) else {
            return;
        };
        if h.num_params > mediator::limits::DEFAULT_MAX_PARAMS {
            self.finding(
                Severity::Unexpected,
                alloc::format!("an RPC request with {} parameters", h.num_params),
            );
            return;
        }
        let bytes = self.read(at, abi::arg_size(h.num_params as usize));
        let Ok(mut rpc) = MsgArg::parse(&bytes) else {
            return;
        };
        for p in rpc.params.clone() {
            if proto::is_memref(p.attr) && p.u2 != 0 {
                self.judge_shm_ref(call, p.u2, "an RPC request's memref");
            }
        }
        let mut ret = proto::TEEC_ERROR_NOT_SUPPORTED;
        match rpc.header.cmd {
            _ if call.release => ret = abi::TEEC_ERROR_GENERIC,
            abi::OPTEE_RPC_CMD_LOAD_TA => {
                ret = proto::TEEC_ERROR_ITEM_NOT_FOUND;
                if let (LoadTa::Size(n), Some(p)) = (call.plan.load_ta, rpc.params.get_mut(1)) {
                    // The size query names no buffer; the second call names the payload.
                    if proto::is_memref(p.attr) && p.u2 == 0 && p.u0 == 0 {
                        p.u1 = n;
                        ret = abi::TEEC_SUCCESS;
                    }
                }
            }
            abi::OPTEE_RPC_CMD_SHM_ALLOC => {
                let want = rpc.params.first().map_or(0, |p| p.u1);
                let pages = want.div_ceil(PAGE).max(1);
                ret = abi::TEEC_ERROR_OUT_OF_MEMORY;
                let answer = match call.plan.shm.clone() {
                    _ if pages > MAX_SHM_ALLOC_PAGES => None,
                    Shm::Refuse => None,
                    Shm::Good => self
                        .make_list(&List::pages(pages as u32), 0)
                        .map(|(b, _, _)| {
                            let c = self.fresh_cookie();
                            self.shm.insert(c, ShmKind::RpcAlloc);
                            (b, want, c)
                        }),
                    // The size spans every entry (at least what OP-TEE asked): the defect is
                    // always inside what the mediator must read.
                    Shm::Bad(list, sev) => self.make_list(&list, pages).map(|(b, size, _)| {
                        let c = self.fresh_cookie();
                        self.refused_shm.insert(c, sev);
                        (b, size, c)
                    }),
                    Shm::ReuseCase(i) => {
                        let c = self.buf_cookie(BufRef::Case(i)).0;
                        call.dup_shm.push(c);
                        self.make_list(&List::pages(pages as u32), 0)
                            .map(|(b, _, _)| (b, want, c))
                    }
                };
                if let (Some((buf_ptr, size, cookie)), Some(p)) = (answer, rpc.params.first_mut()) {
                    *p = MsgParam {
                        attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | abi::OPTEE_MSG_ATTR_NONCONTIG,
                        u0: buf_ptr,
                        u1: size,
                        u2: cookie,
                    };
                    ret = abi::TEEC_SUCCESS;
                }
            }
            abi::OPTEE_RPC_CMD_SHM_FREE => {
                let c = rpc.params.first().map_or(0, |p| p.u1);
                match self.judge_shm_ref(call, c, "RPC SHM_FREE") {
                    Some(ShmKind::RpcAlloc) => {
                        self.shm.remove(&c);
                    }
                    Some(ShmKind::Registered) => self.finding(
                        Severity::Unexpected,
                        alloc::format!("RPC SHM_FREE of {c:#x}, a buffer the guest registered"),
                    ),
                    None => {}
                }
                ret = abi::TEEC_SUCCESS;
            }
            _ => {}
        }
        rpc.header.ret = ret;
        rpc.header.ret_origin = 0;
        let out = rpc.to_bytes();
        self.write(at, &out);
    }

    /// A call completed with `r`: read its message back, check what spans the call.
    fn complete(&mut self, call: &Call, r: [u64; 8]) -> Outcome {
        let a0 = r[0] as u32;
        let mut out = Outcome {
            regs: [r[0], r[1], r[2], r[3]],
            msg: None,
        };
        if let Some(handle) = call.handle {
            let kept: Vec<u64> = self
                .rpc_args
                .iter()
                .filter(|(_, a)| a.handle == Some(handle))
                .map(|(c, _)| *c)
                .collect();
            for c in kept {
                if a0 == abi::OPTEE_SMC_RETURN_OK {
                    self.finding(
                        Severity::Unexpected,
                        alloc::format!(
                            "OP-TEE kept RPC argument {c:#x} after its call: its RPC-argument cache is on"
                        ),
                    );
                }
                if let Some(a) = self.rpc_args.get_mut(&c) {
                    a.handle = None;
                }
            }
        }
        let Some(at) = call.msg_at else {
            return out;
        };
        let back = self.read(at, call.written.len());
        if back.len() >= abi::MSG_ARG_HEADER_SIZE {
            out.msg = MsgArgHeader::parse(&back).ok();
        }
        self.check_copy_back(&call.written, &back);
        let Some(h) = out.msg else {
            return out;
        };
        let ok = a0 == abi::OPTEE_SMC_RETURN_OK && h.ret == abi::TEEC_SUCCESS;
        let p0 = MsgArg::parse_n(&call.written, 1)
            .ok()
            .and_then(|m| m.params.first().copied());
        match h.cmd {
            abi::OPTEE_MSG_CMD_REGISTER_SHM if ok => {
                if let Some(p) = p0 {
                    self.shm.insert(p.u2, ShmKind::Registered);
                    match call.registers.and_then(|i| self.case.bufs.get_mut(i)) {
                        Some(b) => b.live = true,
                        None => self.case.bufs.push(CaseBuf {
                            cookie: p.u2,
                            data: 0,
                            size: p.u1,
                            live: true,
                        }),
                    }
                }
            }
            abi::OPTEE_MSG_CMD_UNREGISTER_SHM if ok => {
                if let Some(p) = p0 {
                    self.shm.remove(&p.u2);
                    for b in self.case.bufs.iter_mut().filter(|b| b.cookie == p.u2) {
                        b.live = false;
                    }
                }
            }
            abi::OPTEE_MSG_CMD_OPEN_SESSION if ok => self.case.sessions.push(h.session),
            _ => {}
        }
        out
    }

    /// The message came back changed only where OP-TEE may write.
    fn check_copy_back(&mut self, sent: &[u8], back: &[u8]) {
        let n = sent.len().min(back.len());
        let Ok(h) = MsgArgHeader::parse(sent) else {
            return;
        };
        let mut may = alloc::vec![false; n];
        let mut allow = |from: usize, to: usize| {
            for m in may.iter_mut().take(to.min(n)).skip(from) {
                *m = true;
            }
        };
        allow(abi::ARG_OFFSET_RET, abi::ARG_OFFSET_RET + 8);
        if h.cmd == abi::OPTEE_MSG_CMD_OPEN_SESSION {
            allow(abi::ARG_OFFSET_SESSION, abi::ARG_OFFSET_SESSION + 4);
        }
        let count = (h.num_params as usize).min((n.saturating_sub(32)) / 32);
        for i in 0..count {
            let off = abi::param_offset(i);
            let Ok(p) = MsgParam::parse(&sent[off..]) else {
                break;
            };
            match p.kind() {
                Some(abi::ParamKind::Value { output: true }) => allow(off + 8, off + 32),
                Some(
                    abi::ParamKind::Tmem { output: true, .. }
                    | abi::ParamKind::Rmem { output: true, .. },
                ) => allow(off + 16, off + 24),
                _ => {}
            }
        }
        if let Some(i) = (0..n).find(|&i| !may[i] && sent[i] != back[i]) {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "the message's byte {i} changed from {:#x} to {:#x}: a field OP-TEE may not write",
                    sent[i],
                    back[i]
                ),
            );
        }
    }

    /// Answer a parked call's pending RPC with failures until it completes.
    fn release(&mut self, p: Parked) -> End {
        let mut call = p.call;
        call.release = true;
        let answer = self.answer_rpc(&mut call, &p.rpc);
        let r = self.smc(answer);
        self.drive(call, r)
    }

    // -------------------------------------------------------------------------------------
    // Cases.

    /// Run one step of the current case.
    fn step(&mut self, s: &Step, n: usize) -> bool {
        let unknown = Expect::Codes(&[abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION]);
        let expect = match s.needs_rpc_arg && !self.rpc_arg_ok() {
            true => &unknown,
            false => &s.expect,
        };
        let what = alloc::format!("step {}", n + 1);
        match &s.op {
            Op::Smc { fid, args } => {
                self.fast(*fid, *args, expect, &what);
            }
            Op::Call { via, msg, rpc } => match self.call(via, msg, rpc) {
                End::Done(out) => {
                    self.judge(expect, &out, &what);
                }
                End::Parked(out, p) => {
                    self.judge(expect, &out, &what);
                    if let Some(h) = p.call.handle {
                        self.case.handles.push(h);
                    }
                    self.case.parked.push(*p);
                }
                End::Skipped => return false,
            },
            Op::Resume { fid, handle, a12 } => {
                let h = match *handle {
                    HandleRef::Raw(h) => h,
                    HandleRef::Parked(i, d) => self
                        .case
                        .handles
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .wrapping_add(d),
                };
                let c = self.canaries();
                let r = self.smc([
                    u64::from(*fid),
                    a12[0],
                    a12[1],
                    u64::from(h),
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                ]);
                let out = Outcome {
                    regs: [r[0], r[1], r[2], r[3]],
                    msg: None,
                };
                self.judge(expect, &out, &what);
                // If that resumed a parked call, follow it.
                if let Some(i) = self
                    .case
                    .parked
                    .iter()
                    .position(|p| p.call.handle == Some(h))
                {
                    if abi::is_rpc(r[0] as u32) {
                        self.case.parked[i].rpc = r;
                    } else if r[0] as u32 == abi::OPTEE_SMC_RETURN_OK {
                        self.case.parked.remove(i);
                    }
                }
            }
            Op::Release => {
                for p in core::mem::take(&mut self.case.parked) {
                    match self.release(p) {
                        End::Done(out) => {
                            self.judge(expect, &out, &what);
                        }
                        End::Parked(out, mut p) => {
                            self.judge(expect, &out, &what);
                            p.call.release = true;
                            self.case.parked.push(*p);
                        }
                        End::Skipped => {}
                    }
                }
            }
            Op::FillThreads => self.fill_threads(&what),
            Op::RegisterMany { count } => self.register_many(*count, &what),
            Op::Mmio {
                dev,
                offset,
                access,
            } => return self.mmio(*dev, *offset, *access, expect, &what),
        }
        true
    }

    /// One access to an emulated device; false (skipped) when the device tree has no such
    /// device or the access would not fit its frame.
    fn mmio(
        &mut self,
        dev: Device,
        offset: u64,
        access: Access,
        expect: &Expect,
        what: &str,
    ) -> bool {
        let Some(frame) = self.layout.devices.get(dev) else {
            return false;
        };
        let pa = frame.start + offset;
        let len = access.bytes();
        if !frame.holds(pa, len) || !pa.is_multiple_of(len) {
            return false;
        }
        let port = match access {
            Access::Read(w) => Mmio::Read(w),
            Access::Write(w, v) => Mmio::Write(w, v),
            Access::Restore(w) => Mmio::Write(w, self.case.kept.unwrap_or(0)),
            Access::ReadPair => Mmio::ReadPair,
        };
        let got = self.g.mmio(pa, port);
        let expect = match expect {
            Expect::Mmio(e) => *e,
            // A step without an MMIO expectation only has to come back.
            _ => MmioExpect::Completes,
        };
        let v = check::check_mmio(&expect, got, self.case.kept);
        if self.trace {
            let line = alloc::format!(
                "hostile: trace: {port:?} at {} + {offset:#x} ({pa:#x}) -> {got:x?} against {expect:?}: {}",
                dev.name(),
                if v == Verdict::Pass { "pass" } else { "FAIL" }
            );
            self.g.say(&line);
        }
        if let (MmioExpect::Keep, Ok(value)) = (expect, got) {
            self.case.kept = Some(value);
        }
        let what = alloc::format!("{what}, {port:x?} at {} + {offset:#x}", dev.name());
        self.verdict(v, &what);
        true
    }

    /// Does the guest see CALL_WITH_RPC_ARG?
    pub fn rpc_arg_ok(&self) -> bool {
        self.caps & abi::OPTEE_SMC_SEC_CAP_RPC_ARG != 0 && self.rpc_params > 0
    }

    /// Park a call: OPEN_SESSION to a TA that is not there, left at its first RPC. Returns
    /// the outcome (an RPC request, or why not).
    pub fn park_open(&mut self, uuid: &[u8; 16]) -> (Outcome, Option<u32>) {
        let [m0, m1] = proto::open_session_meta(uuid, proto::LOGIN_PUBLIC);
        let msg = Msg {
            cmd: abi::OPTEE_MSG_CMD_OPEN_SESSION,
            func: 0,
            session: Session::Zero,
            params: alloc::vec![Param::Raw(m0), Param::Raw(m1)],
            num_params: None,
        };
        let plan = RpcPlan {
            park: Some(ParkAt::First),
            ..Default::default()
        };
        match self.call(&Via::Arg { offset: 0 }, &msg, &plan) {
            End::Parked(out, p) => {
                let h = p.call.handle;
                if let Some(h) = h {
                    self.case.handles.push(h);
                }
                self.case.parked.push(*p);
                (out, h)
            }
            End::Done(out) => (out, None),
            End::Skipped => (Outcome::default(), None),
        }
    }

    /// Resume the parked call `handle` and release it: the first answer (x0..x3 and the
    /// message), then the call's end.
    pub fn resume_parked(&mut self, handle: u32) -> Option<(Outcome, Outcome)> {
        let i = self
            .case
            .parked
            .iter()
            .position(|p| p.call.handle == Some(handle))?;
        let p = self.case.parked.remove(i);
        let mut call = p.call;
        call.release = true;
        let answer = self.answer_rpc(&mut call, &p.rpc);
        let r = self.smc(answer);
        let first_regs = [r[0], r[1], r[2], r[3]];
        let end = self.drive(call, r);
        let last = match end {
            End::Done(o) => o,
            End::Parked(o, p) => {
                self.case.parked.push(*p);
                o
            }
            End::Skipped => Outcome::default(),
        };
        let first = Outcome {
            regs: first_regs,
            msg: last.msg,
        };
        Some((first, last))
    }

    /// Park calls until one is refused: at least the share must park, at most the
    /// mediator's cap of calls per guest, and the refusal is ETHREAD_LIMIT, at once.
    fn fill_threads(&mut self, what: &str) {
        let share = self.share;
        let cap = mediator::limits::DEFAULT_MAX_CALLS_PER_VM;
        let mut parked = 0u32;
        for i in 0..=cap {
            let (out, h) = self.park_open(&thread_uuid(i));
            let a0 = out.regs[0] as u32;
            if h.is_some() {
                parked += 1;
                self.verdict(Verdict::Pass, what);
                continue;
            }
            let v = match a0 {
                abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT if parked >= share => Verdict::Pass,
                abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT => Verdict::Fail(
                    Severity::Unexpected,
                    alloc::format!(
                        "ETHREAD_LIMIT with only {parked} calls parked, below the share of {share}"
                    ),
                ),
                _ => Verdict::Fail(
                    Severity::Unexpected,
                    alloc::format!(
                        "call {} answered a0 = {a0:#x} ({}): neither parked nor ETHREAD_LIMIT",
                        i + 1,
                        check::code_name(a0)
                    ),
                ),
            };
            self.verdict(
                v,
                &alloc::format!("{what}, call {} after {parked} parked", i + 1),
            );
            break;
        }
        if parked > cap {
            self.finding(
                Severity::Unexpected,
                alloc::format!(
                    "{what}: {parked} calls parked, over the mediator's cap of {cap} per guest"
                ),
            );
        }
        self.fast(
            abi::OPTEE_SMC_CALLS_UID,
            [0; 6],
            &Expect::Uid,
            &alloc::format!("{what}, CALLS_UID with {parked} calls parked"),
        );
    }

    fn register_many(&mut self, count: u32, what: &str) {
        let limit = mediator::limits::DEFAULT_MAX_BUFFERS_PER_VM;
        let mut accepted = 0u32;
        for i in 0..count {
            let msg = Msg {
                cmd: abi::OPTEE_MSG_CMD_REGISTER_SHM,
                func: 0,
                session: Session::Zero,
                params: alloc::vec![Param::Register {
                    list: List::pages(1),
                    cookie: CookieRef::Fresh,
                }],
                num_params: None,
            };
            let End::Done(out) = self.call(&Via::Arg { offset: 0 }, &msg, &RpcPlan::default())
            else {
                break;
            };
            let ok = out.regs[0] == 0 && out.msg.is_some_and(|h| h.ret == 0);
            if ok {
                accepted += 1;
                continue;
            }
            // Refused: by the mediator's limit (the 257th), or earlier by OP-TEE's memory.
            let expect = match i == limit {
                true => Expect::Refused {
                    smc: &[],
                    teec: &[abi::TEEC_ERROR_OUT_OF_MEMORY],
                    breach: Severity::Unexpected,
                },
                false => Expect::Any,
            };
            self.judge(
                &expect,
                &out,
                &alloc::format!("{what}, registration {}", i + 1),
            );
            break;
        }
        let v = match accepted <= limit {
            true => Verdict::Pass,
            false => Verdict::Fail(
                Severity::Unexpected,
                alloc::format!("{accepted} buffers accepted, over the limit of {limit}"),
            ),
        };
        self.verdict(v, what);
    }

    /// Give back what the case holds: parked calls, registered buffers, sessions.
    fn cleanup(&mut self) {
        while !self.case.parked.is_empty() {
            let p = self.case.parked.remove(0);
            if p.call.release {
                // Gave up on it already.
                continue;
            }
            if let End::Parked(_, mut p) = self.release(p) {
                p.call.release = true;
                self.case.parked.push(*p);
            }
        }
        let mut cookies: Vec<u64> = self
            .case
            .bufs
            .iter()
            .filter(|b| b.live)
            .map(|b| b.cookie)
            .collect();
        cookies.sort();
        cookies.dedup();
        for c in cookies {
            let msg = Msg {
                cmd: abi::OPTEE_MSG_CMD_UNREGISTER_SHM,
                func: 0,
                session: Session::Zero,
                params: alloc::vec![Param::Raw(MsgParam {
                    attr: abi::OPTEE_MSG_ATTR_TYPE_RMEM_INPUT,
                    u0: 0,
                    u1: 0,
                    u2: c,
                })],
                num_params: None,
            };
            if let End::Done(out) = self.call(&Via::Arg { offset: 0 }, &msg, &RpcPlan::default()) {
                self.judge(&Expect::Success, &out, "cleanup: UNREGISTER_SHM");
            }
        }
        for s in core::mem::take(&mut self.case.sessions) {
            if Some(s) != self.pta {
                self.close_session(s, "cleanup: CLOSE_SESSION");
            }
        }
        self.case = CaseState::default();
        self.next_free = self.layout.arena.start;
    }

    /// CLOSE_SESSION of `session`, which must succeed.
    pub fn close_session(&mut self, session: u32, what: &str) -> bool {
        let msg = Msg {
            cmd: abi::OPTEE_MSG_CMD_CLOSE_SESSION,
            func: 0,
            session: Session::Raw(session),
            params: Vec::new(),
            num_params: None,
        };
        match self.call(&Via::Arg { offset: 0 }, &msg, &RpcPlan::default()) {
            End::Done(out) => self.judge(&Expect::Success, &out, what),
            _ => false,
        }
    }

    /// OPEN_SESSION to invoke_tests.pta, which must succeed; its session.
    pub fn open_pta(&mut self, what: &str) -> Option<u32> {
        let [m0, m1] = proto::open_session_meta(&INVOKE_TESTS_PTA, proto::LOGIN_PUBLIC);
        let msg = Msg {
            cmd: abi::OPTEE_MSG_CMD_OPEN_SESSION,
            func: 0,
            session: Session::Zero,
            params: alloc::vec![Param::Raw(m0), Param::Raw(m1)],
            num_params: None,
        };
        let End::Done(out) = self.call(&Via::Arg { offset: 0 }, &msg, &RpcPlan::default()) else {
            return None;
        };
        let s = self.case.sessions.pop();
        self.next_free = self.layout.arena.start;
        match self.judge(&Expect::Success, &out, what) {
            true => s,
            false => None,
        }
    }

    /// Learn what the guest may use: capabilities, its share of threads, a PTA session.
    pub fn setup(&mut self) {
        let caps = self.fast(
            abi::OPTEE_SMC_EXCHANGE_CAPABILITIES,
            [0; 6],
            &Expect::Caps,
            "setup: EXCHANGE_CAPABILITIES",
        );
        if caps[0] == 0 {
            self.caps = caps[1];
            self.rpc_params = caps[3] as u32;
        }
        self.fast(
            abi::OPTEE_SMC_GET_THREAD_COUNT,
            [0; 6],
            &Expect::ThreadCount,
            "setup: GET_THREAD_COUNT",
        );
        self.pta = self.open_pta("setup: OPEN_SESSION to invoke_tests.pta");
    }

    /// Run one case.
    pub fn run_case(&mut self, case: &Case) {
        self.current = Some((case.index, case.family));
        self.name = Some(case.name.clone());
        if self.trace {
            let line = alloc::format!("hostile: trace: case {}: {}", case.index, case.name);
            self.g.say(&line);
        }
        self.tallies.entry(case.family).or_default().cases += 1;
        for (n, s) in case.steps.iter().enumerate() {
            if !self.step(s, n) {
                self.tallies.entry(case.family).or_default().skipped += 1;
                break;
            }
        }
        self.cleanup();
        self.current = None;
        self.name = None;
    }

    /// GET_THREAD_COUNT's a1, unchecked (threads mode polls it); 0 if it failed.
    pub fn thread_count(&mut self) -> u32 {
        let c = self.canaries();
        let r = self.smc([
            u64::from(abi::OPTEE_SMC_GET_THREAD_COUNT),
            0,
            0,
            0,
            c[0],
            c[1],
            c[2],
            c[3],
        ]);
        match r[0] as u32 {
            abi::OPTEE_SMC_RETURN_OK => r[1] as u32,
            _ => 0,
        }
    }

    /// Record a check made outside the case machinery (threads mode).
    pub fn record(&mut self, v: Verdict, what: &str) {
        self.verdict(v, what);
    }

    /// After the campaign: OP-TEE still answers a fast call, and a session to
    /// invoke_tests.pta opens and closes. True if all of it passed.
    pub fn finish(&mut self) -> bool {
        let before = self.escapes + self.unexpected;
        self.fast(
            abi::OPTEE_SMC_CALLS_UID,
            [0; 6],
            &Expect::Uid,
            "after the campaign: CALLS_UID",
        );
        if let Some(s) = self.pta.take() {
            self.close_session(
                s,
                "after the campaign: CLOSE_SESSION of the campaign's session",
            );
        }
        let fresh = self.open_pta("after the campaign: OPEN_SESSION to invoke_tests.pta");
        if let Some(s) = fresh {
            self.close_session(s, "after the campaign: CLOSE_SESSION");
        }
        self.next_free = self.layout.arena.start;
        fresh.is_some() && self.escapes + self.unexpected == before
    }
}

/// The UUID of the `i`-th parked call: a user TA that is not there.
pub fn thread_uuid(i: u32) -> [u8; 16] {
    let mut u = *b"hostile-thread-\0";
    u[15] = i as u8;
    u
}
