// SPDX-License-Identifier: MIT OR Apache-2.0
//! The mediator proper: per-VM state, SMC dispatch, yielding calls and RPCs.
//!
//! ```text
//!  guest SMC ──▶ begin ──┬─ answered here (THREAD_COUNT, SHM_CONFIG, ENABLE_SHM_CACHE,
//!                        │                refusals) ─▶ Reply
//!                        ├─ fast, pass-through (UID, REVISION, OS_*, caps, DISABLE_SHM_CACHE)
//!                        ├─ CALL_WITH_ARG / _RPC_ARG / _REGD_ARG
//!                        │     copy arg ─▶ validate ─▶ shadow page ─▶ pin
//!                        └─ RETURN_FROM_RPC ─▶ find the waiting call ─▶ answer
//!                              │
//!                              ▼ Forward { regs, token }       (no lock held)
//!                          hv: smc ───────────────────────────▶ OP-TEE
//!                              │ result
//!                              ▼
//!                    finish(token, result) ─┬─ fast: filter ─▶ Reply
//!                                           ├─ done: release temps, copy back ─▶ Reply
//!                                           ├─ RPC for the guest: park (Waiting) ─▶ Reply
//!                                           ├─ RPC answered here ─▶ Forward (resume)
//!                                           └─ no OP-TEE thread: reap ─▶ Forward (again)
//! ```
//!
//! Shadows: OP-TEE only ever sees hypervisor pages for message structures. The argument is
//! copied into a shadow page; RPC_FUNC_ALLOC is answered with a hypervisor page (the
//! guest's buffer only receives copies of requests); with CALL_WITH_RPC_ARG and
//! CALL_WITH_REGD_ARG (argument inside a registered buffer) the RPC argument sits right
//! after the argument in the same shadow page, and OP-TEE gets CALL_WITH_RPC_ARG.
//!
//! Every forwarded SMC carries the VM's client id in a7; the guest's a7 is never read. The
//! guest sees a per-VM call handle in a3 (never OP-TEE's thread id); OP-TEE's resume
//! registers a3..a6 are kept here and replayed. A call is `Running` while one of its SMCs is
//! in flight (from `begin` to the `finish` that replies); between traps it is `Waiting` for
//! exactly one RPC answer.
//!
//! ## RPC arguments never cross calls
//! OP-TEE can keep a call's RPC argument (RPC_FUNC_ALLOC) on its *thread* after the call
//! returns, for the next call that thread runs, when its RPC-argument cache is on
//! (ENABLE_SHM_CACHE). Threads are shared by every VM, so that next call, possibly another
//! VM's, would get RPC_FUNC_FREE of a cookie the first VM chose: a pointer of one VM's
//! kernel handed to another's. The mediator never turns the cache on: it answers
//! ENABLE_SHM_CACHE itself with OK (Linux's driver retries until OK), so OP-TEE frees each
//! RPC argument within the yielding call that allocated it and a FREE only ever names the
//! calling VM's own ALLOC. In depth, a FREE whose cookie is not one of the calling VM's
//! RPC arguments is answered here and never shown to the guest (`Fault::UnknownCookie` in
//! the trace), and DISABLE_SHM_CACHE hides foreign cookies.
//!
//! ## Sharing OP-TEE's threads
//! OP-TEE's threads are shared by every VM, and a call parked in an RPC holds its thread
//! until the guest answers. A VM's share, `calls_per_vm()`, is
//! `min(max_calls_per_vm, max(1, thread_count / live VMs))`, which GET_THREAD_COUNT answers
//! at that moment. The share is what the VM is guaranteed, not a cap: a VM may use any
//! thread that is free (a cancel needs a second thread beside the call it cancels; only
//! `max_calls_per_vm` caps). With `Limits::reap_across_vms` (a TEE whose threads all VMs
//! share; off by default, since Debian's OP-TEE gives each guest partition threads of its
//! own), when another VM's new call gets OP-TEE's ETHREAD_LIMIT the mediator *reaps* one
//! call of a VM above its share that
//! has been parked (`Waiting`, not in flight) for longer than `max_park_ms`: it takes the
//! call out of that VM's state, unwinds it in OP-TEE as `vm_destroyed` does (every RPC
//! answered with a failure), and, after OP-TEE's ETHREAD_LIMIT, enters the refused call
//! again once. The reaped VM's RETURN_FROM_RPC for the call gets ERESUME and its message
//! says `TEEC_ERROR_COMMUNICATION` (origin COMMS); its pins are dropped by its next trap,
//! the only place the mediator has its `GuestMemory`. Time comes in as `now_ms`, the
//! hypervisor's clock in milliseconds, passed to `begin`; a call's park time is the time of
//! the trap that parked it.
//!
//! ## State and locking
//! The mediator is `&self` and `Sync` when its ports and `Lock` are. Its shared part (probe
//! results, limits, the ports) is immutable; the page pool locks itself. Each VM's state
//! sits behind its own `Lock`, in a table behind another. `begin` and `finish` each take
//! the VM's lock for one bounded step (at most `max_pages_per_trap` translations, no SMC)
//! and release it before returning, so the world switch in between runs with no mediator
//! lock held: two VMs, or two vCPUs of one VM, are in OP-TEE at the same time, and a vCPU
//! waiting for its VM's lock waits for at most one such step of a sibling, never for the
//! secure world. What a trap must remember across its SMC (the guest's registers, the
//! trap's budget, what the result is for) travels in the `Token`; everything else stays in
//! the VM's state, so a token owns no resource. `vm_destroyed` takes the VM's state out of
//! its lock before unwinding it through OP-TEE, and refuses a VM with an SMC in flight.
//! Reaping takes one call out of the other VM's state under that VM's lock (never two VM
//! locks at once), unwinds it with no lock held, and puts what is left back under the
//! lock again; meanwhile that VM cannot be destroyed (`Error::Reaping`).
//!
//! ```text
//!  CPU0 (d0 vCPU0): begin ─[lock d0]─ smc ──────────────────── finish ─[lock d0]─ reply
//!  CPU1 (d0 vCPU1):    begin ─[lock d0]─ smc ── finish ─[lock d0]─ reply
//!  CPU2 (d1 vCPU0):  begin ─[lock d1]─ smc ─────────── finish ─[lock d1]─ reply
//! ```

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::abi::{
    self, arg_size, param_offset, regpair, split_regpair, MsgArg, MsgArgHeader, MsgParam, ParamKind,
};
use crate::error::{Error, Fault};
use crate::limits::Limits;
use crate::msg::{Msg, MAX_PARAMS};
use crate::ports::{
    Access, GuestMemory, HvPage, HvPages, Ipa, Lock, MemFault, PhysAddr, SecureMonitor, VmId,
    HYPERVISOR_CLIENT_ID,
};
use crate::probe::Probe;
use crate::shm::{free_pages, pin_noncontig, unpin_all, Budget, Pinned, Room};
use crate::shmspace::{Owner, ShmSpace};
use crate::trace::{MsgDir, MsgRecord, NoTrace, ParamRecord, SmcRecord, Trace};

/// Normal-world capabilities the mediator ever forwards: none. A guest's UNIPROCESSOR
/// claim would make OP-TEE map that guest's buffers non-shareable, which is wrong on the
/// SMP machine underneath, so it is dropped.
pub const FORWARDED_NSEC_CAPS: u64 = 0;

/// Secure-world capabilities a guest may see. Reserved/static SHM is hidden (guests get
/// none); ASYNC_NOTIF is hidden because OP-TEE panics when it must notify a VM with no
/// guest interrupt wired up behind it, and a guest must never bring OP-TEE down; unknown
/// bits are hidden. RPC_ARG is shown only when the argument and the RPC argument of the
/// largest allowed message fit one shadow page together (see `Mediator::inline_rpc_size`).
pub const GUEST_SEC_CAPS: u64 = abi::OPTEE_SMC_SEC_CAP_UNREGISTERED_SHM
    | abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM
    | abi::OPTEE_SMC_SEC_CAP_VIRTUALIZATION
    | abi::OPTEE_SMC_SEC_CAP_MEMREF_NULL
    | abi::OPTEE_SMC_SEC_CAP_RPC_ARG;

/// Cache setting passed in a3 of CALL_WITH_ARG: normal cached memory.
const OPTEE_SMC_SHM_CACHED: u64 = 1;

/// Which kind of buffer a cookie names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufKind {
    /// REGISTER_SHM from the guest.
    Registered,
    /// OPTEE_RPC_CMD_SHM_ALLOC answered by the guest.
    RpcAlloc,
}

/// Where a buffer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufState {
    /// REGISTER_SHM in flight; unusable until OP-TEE accepts it.
    Registering,
    /// Live: OP-TEE may use it.
    Live,
    /// UNREGISTER_SHM in flight.
    Unregistering,
}

#[derive(Debug)]
struct Buffer {
    kind: BufKind,
    state: BufState,
    pinned: Pinned,
    /// Open calls of the VM that name it (RMEM), validated and not yet ended: while any
    /// is, UNREGISTER_SHM is refused (`Fault::BufferInUse`), so an RMEM that reaches
    /// OP-TEE always names a buffer the VM still has.
    users: u32,
}

/// An RPC argument buffer (RPC_FUNC_ALLOC): OP-TEE gets `page`; the guest sees copies at
/// `ipa`.
#[derive(Debug)]
struct RpcArg {
    ipa: Ipa,
    size: usize,
    page: HvPage,
    /// The open call that allocated it (OP-TEE frees it within that call): reaping that
    /// call takes it along.
    call: Option<u32>,
}

/// What a parked call waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wait {
    /// Guest allocates an RPC argument buffer of `size` bytes.
    Alloc { size: u64 },
    /// Guest frees an RPC argument buffer.
    Free,
    /// Guest takes its interrupt.
    ForeignIntr,
    /// Guest runs the RPC command; `rpc` is what OP-TEE asked (from the shadow).
    Cmd { cookie: u64, rpc: MsgArg },
    /// The mediator already has OP-TEE's answer (a1, a2, a4, a5); the guest was bounced
    /// with FOREIGN_INTR because the trap's budget ran out.
    Pending { a1: u64, a2: u64, a4: u64, a5: u64 },
}

/// Where a call's argument lives in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestLoc {
    /// At a guest-physical address (CALL_WITH_ARG, CALL_WITH_RPC_ARG).
    Ipa(Ipa),
    /// Inside a registered buffer (CALL_WITH_REGD_ARG): the buffer's pages from the one
    /// holding the argument, the offset in the first of them, and the bytes left in the
    /// buffer from there. The pages are copied out of the buffer record, so a racing
    /// UNREGISTER_SHM cannot make the mediator touch anything but this VM's RAM.
    InBuffer {
        /// The buffer's pages from the one holding the argument: at most two (an argument
        /// and its RPC argument fit one page), `npages` of them.
        pages: [Ipa; 2],
        npages: usize,
        offset: u64,
        limit: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CallState {
    Running,
    Waiting(Wait),
}

#[derive(Debug)]
struct Call {
    state: CallState,
    shadow: HvPage,
    guest: GuestLoc,
    /// Size of the RPC argument that follows the argument (CALL_WITH_RPC_ARG and
    /// CALL_WITH_REGD_ARG), in the shadow and in the guest alike.
    inline_rpc: Option<usize>,
    /// The validated copy of the guest's argument (guest-side view; used for copy-back).
    arg: Msg,
    /// OP-TEE's view: built from `arg` before the call enters OP-TEE (physical addresses),
    /// and OP-TEE's answer read back into it at the end. Kept in the record, which is
    /// reused, so neither is a fresh (zeroed) buffer on every call.
    out: Msg,
    /// Parameters (bit i: parameter i) whose value words, and those whose memref size,
    /// OP-TEE may write: what `copy_back` copies, found once by `translate_params`.
    value_out: u8,
    size_out: u8,
    /// The blocks OP-TEE may map for the call (`shmspace`), in parameter order, found by
    /// `translate_params`: `blocks[..nblocks]`.
    blocks: [u32; MAX_PARAMS],
    nblocks: usize,
    /// The registered buffers the call names (RMEM), each counted in its `users` until
    /// the call ends: `held[..nheld]`.
    held: [u64; MAX_PARAMS],
    nheld: usize,
    temps: Vec<Pinned>,
    lists: Vec<HvPage>,
    register: Option<u64>,
    unregister: Option<u64>,
    /// OP-TEE's a3..a6 at its last RPC return.
    resume: [u64; 4],
    /// When OP-TEE last returned an RPC for it (the `now_ms` of that trap): while the call
    /// is `Waiting`, the time it parked.
    parked_at: u64,
}

/// A VM's open calls by handle, in handle order. At most `max_calls_per_vm` of them, so a
/// short vector searched linearly; the records are boxed, so a call moves as a pointer
/// (a `Call` is about 450 bytes, and the hypervisor's `memcpy` costs one instruction per
/// two bytes).
#[derive(Debug, Default)]
struct Calls(Vec<(u32, Box<Call>)>);

impl Calls {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn position(&self, id: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |(k, _)| *k)
    }
    fn get(&self, id: &u32) -> Option<&Call> {
        let i = self.position(*id).ok()?;
        Some(&self.0[i].1)
    }
    fn get_mut(&mut self, id: &u32) -> Option<&mut Call> {
        let i = self.position(*id).ok()?;
        Some(&mut self.0[i].1)
    }
    fn contains_key(&self, id: &u32) -> bool {
        self.position(*id).is_ok()
    }
    /// Add call `id` (handles are unique: `alloc_call_id`; an existing one is replaced).
    fn insert(&mut self, id: u32, call: Box<Call>) {
        match self.position(id) {
            Ok(i) => self.0[i].1 = call,
            Err(i) => self.0.insert(i, (id, call)),
        }
    }
    fn remove(&mut self, id: &u32) -> Option<Box<Call>> {
        let i = self.position(*id).ok()?;
        Some(self.0.remove(i).1)
    }
    fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(k, _)| k)
    }
    fn values(&self) -> impl Iterator<Item = &Call> {
        self.0.iter().map(|(_, c)| &**c)
    }
    fn iter(&self) -> impl Iterator<Item = (&u32, &Call)> {
        self.0.iter().map(|(k, c)| (k, &**c))
    }
}

impl IntoIterator for Calls {
    type Item = (u32, Box<Call>);
    type IntoIter = alloc::vec::IntoIter<(u32, Box<Call>)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[derive(Debug, Default)]
struct Vm {
    calls: Calls,
    /// Records of ended calls, each with its shadow page, for the VM's next calls (at most
    /// `max_calls_per_vm`; freed with the VM). A shadow page only ever holds this VM's
    /// messages, so it is reused without being cleared. Boxed: a record moves between
    /// here and `calls` as a pointer, never as its 450 bytes.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Call>>,
    next_call: u32,
    bufs: BTreeMap<u64, Buffer>,
    rpc_args: BTreeMap<u64, RpcArg>,
    /// Pinned pages, including `unpin_later`.
    pinned: u32,
    /// Calls reaped by another VM's trap whose guest has not resumed them yet: (handle,
    /// where its message is). At most `max_calls_per_vm`, oldest dropped first; their
    /// handles are not reused meanwhile.
    reaped: Vec<(u32, GuestLoc)>,
    /// Pages of reaped calls still to unpin: the reaping trap was another VM's and had no
    /// access to this VM's memory, so the VM's next trap (or `vm_destroyed`) does it.
    unpin_later: Vec<Ipa>,
    /// The mediator's model of where OP-TEE maps this VM's buffers (`shmspace`).
    optee_map: ShmSpace,
}

/// Where a VM is in its life, as the mediator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// VM_CREATED in flight: the id is taken, no SMC of the VM is served yet.
    Creating,
    /// Served.
    Live,
    /// Being unwound (`vm_destroyed`): the id stays taken until VM_DESTROYED returned.
    Destroying,
}

/// One VM's state, behind its own lock.
#[derive(Debug)]
struct Slot {
    life: Life,
    /// Traps of this VM between `begin` and their last `finish` (SMCs in flight).
    in_flight: u32,
    /// Other VMs' traps unwinding one of this VM's calls in OP-TEE right now (reaping).
    reaping: u32,
    vm: Vm,
}

/// Per-trap bookkeeping, carried across the trap's SMCs in its `Token`.
#[derive(Debug)]
struct Trap {
    budget: Budget,
    fault: Option<Fault>,
    internal_resumes: u32,
    /// The hypervisor's time at `begin`, in milliseconds.
    now: u64,
    /// Whether this trap already looked for a call to reap (at most once per trap).
    reap_tried: bool,
    /// The other VM's call it reaped, for the trace.
    reaped: Option<(VmId, u32)>,
}

/// What a forwarded SMC's result is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// A pass-through fast call: the result is masked to 32-bit registers.
    Fast,
    /// EXCHANGE_CAPABILITIES: the result is filtered.
    Capabilities,
    /// DISABLE_SHM_CACHE: the cookie is released, or OP-TEE is asked again.
    DisableShmCache,
    /// Yielding call `id`'s first entry into OP-TEE (OP-TEE may have no thread for it).
    Enter(u32),
    /// Yielding call `id` resumed in OP-TEE.
    Call(u32),
}

/// The outcome of one locked step: answer the guest, or enter OP-TEE, or first look for a
/// call to reap (with no lock held).
enum Next {
    /// a0..a3 for the guest.
    Reply([u64; 4]),
    /// An SMC to issue (a7 is the client id), and what its result is for.
    Forward([u64; 8], Awaiting),
    /// A new call of this VM found no thread: try to reap another VM's call, then go on.
    Reap(Refused),
}

/// Which refusal sent a trap reaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The mediator refused the call (the VM has its share open): answer ETHREAD_LIMIT
    /// whatever the reaping found (the VM's share did not grow), but free a thread for the
    /// VMs within theirs.
    Share,
    /// OP-TEE answered call `id`'s first entry with ETHREAD_LIMIT: enter it again if a call
    /// was reaped, else complete it with ETHREAD_LIMIT.
    Call(u32),
}

/// The memory of a VM that is not trapping: the reaping trap is another VM's. Nothing can
/// be read or written (nothing is copied back), and unpins are recorded for the VM's next
/// trap.
#[derive(Default)]
struct Deferred {
    unpins: Vec<Ipa>,
}

/// A trap waiting for its SMC: hand it back to [`Mediator::finish`] with the result,
/// exactly once. It owns no resource (everything a call holds is in its VM's state), but a
/// token that is never finished leaves its VM with an SMC in flight, which
/// [`Mediator::vm_destroyed`] refuses.
#[must_use = "a forwarded SMC's token must be passed to Mediator::finish"]
pub struct Token<L: Lock> {
    slot: Arc<L::Mutex<Slot>>,
    vm: VmId,
    /// The guest's x0..x7 as trapped (a4..a7 are preserved for it; the trace).
    regs: [u64; 8],
    trap: Trap,
    awaiting: Awaiting,
}

/// What the hypervisor does next for a trapped SMC.
#[must_use]
pub enum Step<L: Lock> {
    /// Write these x0..x7 back to the guest: the trap is over.
    Reply([u64; 8]),
    /// Issue `smc` with `regs` (holding no lock), then call [`Mediator::finish`] with
    /// `token` and the result.
    Forward {
        /// x0..x7 for the secure monitor (a7 is the VM's client id).
        regs: [u64; 8],
        /// The trap's state across the SMC.
        token: Token<L>,
    },
}

/// The VM table: each VM's state behind its own lock.
type Table<L> = BTreeMap<VmId, Arc<<L as Lock>::Mutex<Slot>>>;

/// The OP-TEE mediator.
pub struct Mediator<M, P, L: Lock, T = NoTrace> {
    monitor: M,
    pages: P,
    trace: T,
    limits: Limits,
    probe: Probe,
    vms: L::Mutex<Table<L>>,
}

/// A snapshot of one VM's mediator state, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    /// Open calls.
    pub calls: usize,
    /// Calls parked waiting for an RPC answer.
    pub waiting: usize,
    /// Shared buffers (any state).
    pub buffers: usize,
    /// RPC argument buffers.
    pub rpc_args: usize,
    /// Pinned pages.
    pub pinned: u32,
    /// Traps with an SMC in the secure world right now.
    pub in_flight: u32,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl GuestLoc {
    /// Copy `buf.len()` bytes at byte `off` of the argument area from guest memory.
    fn read<G: GuestMemory>(&self, mem: &G, off: usize, buf: &mut [u8]) -> Result<(), Fault> {
        self.each(off, buf.len(), |ipa, from, to| {
            mem.read(ipa, &mut buf[from..to])
        })
    }

    /// Copy `data` to byte `off` of the argument area in guest memory.
    fn write<G: GuestMemory>(&self, mem: &mut G, off: usize, data: &[u8]) -> Result<(), Fault> {
        self.each(off, data.len(), |ipa, from, to| {
            mem.write(ipa, &data[from..to])
        })
    }

    /// Copy `buf.len()` words at byte `off` (8-aligned) of the argument area from guest
    /// memory. The area's start is 8-aligned (checked by `copy_in_arg`), and pages split
    /// on 8-byte boundaries, so every piece is whole words.
    fn read_words<G: GuestMemory>(
        &self,
        mem: &G,
        off: usize,
        buf: &mut [u64],
    ) -> Result<(), Fault> {
        self.each(off, buf.len() * 8, |ipa, from, to| {
            mem.read_words(ipa, &mut buf[from / 8..to / 8])
        })
    }

    /// Copy `data` as words to byte `off` (8-aligned) of the argument area in guest memory.
    fn write_words<G: GuestMemory>(
        &self,
        mem: &mut G,
        off: usize,
        data: &[u64],
    ) -> Result<(), Fault> {
        self.each(off, data.len() * 8, |ipa, from, to| {
            mem.write_words(ipa, &data[from / 8..to / 8])
        })
    }

    /// Split `[off, off + len)` into guest-contiguous pieces: `f(ipa, from, to)`.
    fn each(
        &self,
        off: usize,
        len: usize,
        mut f: impl FnMut(Ipa, usize, usize) -> Result<(), crate::ports::MemFault>,
    ) -> Result<(), Fault> {
        match self {
            GuestLoc::Ipa(base) => {
                let ipa = base.checked_add(off as u64).ok_or(Fault::BadAddress)?;
                f(ipa, 0, len).map_err(|_| Fault::BadAddress)
            }
            GuestLoc::InBuffer {
                pages,
                npages,
                offset,
                limit,
            } => {
                let end = (off as u64)
                    .checked_add(len as u64)
                    .ok_or(Fault::BadAddress)?;
                if end > *limit {
                    return Err(Fault::BadAddress);
                }
                let mut done = 0usize;
                while done < len {
                    let pos = offset + (off + done) as u64;
                    let page = pages[..*npages]
                        .get((pos / abi::NONCONTIG_PAGE_SIZE) as usize)
                        .ok_or(Fault::BadAddress)?;
                    let in_page = pos % abi::NONCONTIG_PAGE_SIZE;
                    let n = ((abi::NONCONTIG_PAGE_SIZE - in_page) as usize).min(len - done);
                    f(Ipa(page.0 + in_page), done, done + n).map_err(|_| Fault::BadAddress)?;
                    done += n;
                }
                Ok(())
            }
        }
    }
}

impl GuestMemory for Deferred {
    fn read(&self, _ipa: Ipa, _buf: &mut [u8]) -> Result<(), MemFault> {
        Err(MemFault::NotRam)
    }
    fn write(&mut self, _ipa: Ipa, _buf: &[u8]) -> Result<(), MemFault> {
        Err(MemFault::NotRam)
    }
    fn pin(&mut self, _ipa: Ipa, _access: Access) -> Result<PhysAddr, MemFault> {
        Err(MemFault::PinFailed)
    }
    fn unpin(&mut self, ipa: Ipa) {
        self.unpins.push(ipa);
    }
}

fn ok_regs(a0: u32, a1: u64, a2: u64, a3: u64) -> [u64; 4] {
    [u64::from(a0), a1, a2, a3]
}

fn err_regs(code: u32) -> [u64; 4] {
    ok_regs(code, 0, 0, 0)
}

impl Trap {
    fn new(limits: &Limits, now: u64) -> Self {
        Self {
            budget: Budget {
                pages_left: limits.max_pages_per_trap,
                translated: 0,
            },
            fault: None,
            internal_resumes: 0,
            now,
            reap_tried: false,
            reaped: None,
        }
    }
}

impl<M: SecureMonitor, P: HvPages, L: Lock, T: Trace> Mediator<M, P, L, T> {
    /// A mediator for the OP-TEE described by `probe` (see [`crate::probe::probe`]).
    pub fn new(monitor: M, pages: P, trace: T, limits: Limits, probe: Probe) -> Self {
        Self {
            monitor,
            pages,
            trace,
            limits: limits.sanitized(),
            probe,
            vms: L::new(BTreeMap::new()),
        }
    }

    /// Probe the secure world through `monitor`, then build the mediator.
    pub fn probe(monitor: M, pages: P, trace: T, limits: Limits) -> Result<Self, Error> {
        let probe = crate::probe::probe(&monitor)?;
        Ok(Self::new(monitor, pages, trace, limits, probe))
    }

    /// What the probe found.
    pub fn probe_result(&self) -> Probe {
        self.probe
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The port objects (tests inspect the fakes through these).
    pub fn ports(&self) -> (&M, &P, &T) {
        (&self.monitor, &self.pages, &self.trace)
    }

    /// Concurrent yielding calls one VM is guaranteed right now: its share of OP-TEE's threads,
    /// `min(max_calls_per_vm, max(1, thread_count / live VMs))` (see the module doc). Every
    /// VM the mediator knows counts, whatever its life: one being created is about to call,
    /// one being destroyed may still hold threads while it is unwound.
    pub fn calls_per_vm(&self) -> u32 {
        self.share(L::with(&self.vms, |t| t.len()))
    }

    /// A VM's share of OP-TEE's threads when `vms` VMs are known.
    fn share(&self, vms: usize) -> u32 {
        let vms = u32::try_from(vms).unwrap_or(u32::MAX).max(1);
        (self.probe.thread_count / vms)
            .max(1)
            .min(self.limits.max_calls_per_vm.max(1))
    }

    /// Bytes of the RPC argument that follows the argument in CALL_WITH_RPC_ARG, if the
    /// mediator supports that call: OP-TEE has RPC_ARG and the largest allowed argument
    /// plus the RPC argument fit one shadow page.
    pub fn inline_rpc_size(&self) -> Option<usize> {
        let n = self.probe.rpc_param_count as usize;
        let size = arg_size(n);
        let fits =
            arg_size(self.limits.max_params as usize) + size <= abi::NONCONTIG_PAGE_SIZE as usize;
        (self.probe.sec_caps & abi::OPTEE_SMC_SEC_CAP_RPC_ARG != 0 && n > 0 && fits).then_some(size)
    }

    /// The state of `vm` (whatever its life), from the table. The table's lock is held only
    /// for the look-up.
    fn slot(&self, vm: VmId) -> Option<Arc<L::Mutex<Slot>>> {
        L::with(&self.vms, |t| t.get(&vm).cloned())
    }

    /// `slot`, and the VM's share of OP-TEE's threads at that moment (one look-up).
    fn slot_and_share(&self, vm: VmId) -> Option<(Arc<L::Mutex<Slot>>, u32)> {
        let (slot, vms) = L::with(&self.vms, |t| (t.get(&vm).cloned(), t.len()));
        Some((slot?, self.share(vms)))
    }

    /// Current state counters of `vm` (`None` unless it is live).
    pub fn vm_stats(&self, vm: VmId) -> Option<VmStats> {
        let slot = self.slot(vm)?;
        L::with(&slot, |s| {
            let v = &s.vm;
            (s.life == Life::Live).then(|| VmStats {
                calls: v.calls.len(),
                waiting: v
                    .calls
                    .values()
                    .filter(|c| matches!(c.state, CallState::Waiting(_)))
                    .count(),
                buffers: v.bufs.len(),
                rpc_args: v.rpc_args.len(),
                pinned: v.pinned,
                in_flight: s.in_flight,
            })
        })
    }

    /// Shadow pages the VMs keep in their spare call records, for their next calls (at
    /// most `max_calls_per_vm` per VM; freed by `vm_destroyed`). Every other hypervisor
    /// page the mediator holds belongs to an open call, a buffer or an RPC argument.
    pub fn spare_pages(&self) -> usize {
        let slots: Vec<_> = L::with(&self.vms, |t| t.values().cloned().collect());
        slots
            .iter()
            .map(|slot| L::with(slot, |s| s.vm.spare.len()))
            .sum()
    }

    /// Tell OP-TEE about a new VM. An error must make domain creation fail. The id is taken
    /// before the SMC (a racing `vm_created` of the same id gets `VmExists`) and served once
    /// OP-TEE accepted it.
    pub fn vm_created(&self, vm: VmId) -> Result<(), Error> {
        L::with(&self.vms, |t| {
            if t.contains_key(&vm) {
                return Err(Error::VmExists);
            }
            let slot = Slot {
                life: Life::Creating,
                in_flight: 0,
                reaping: 0,
                vm: Vm {
                    optee_map: ShmSpace::new(self.limits.max_optee_map_pages_per_vm),
                    ..Vm::default()
                },
            };
            t.insert(vm, Arc::new(L::new(slot)));
            Ok(())
        })?;
        let r = self.lifecycle_call(abi::OPTEE_SMC_VM_CREATED, vm);
        L::with(&self.vms, |t| match r {
            Ok(()) => {
                if let Some(slot) = t.get(&vm) {
                    L::with(slot, |s| s.life = Life::Live);
                }
            }
            Err(_) => {
                t.remove(&vm);
            }
        });
        r.map_err(|code| Error::VmCreateRefused { code })
    }

    /// VM_CREATED or VM_DESTROYED for `vm`, issued as the hypervisor (a7 = 0). The error is
    /// OP-TEE's return code.
    fn lifecycle_call(&self, fid: u32, vm: VmId) -> Result<(), u32> {
        let r = self.monitor.call([
            u64::from(fid),
            vm.client_id(),
            0,
            0,
            0,
            0,
            0,
            HYPERVISOR_CLIENT_ID,
        ]);
        match r[0] as u32 {
            abi::OPTEE_SMC_RETURN_OK => Ok(()),
            code => Err(code),
        }
    }

    /// Release everything `vm` holds (calls, shadow pages, buffers, pins), then tell OP-TEE.
    /// Call it once no vCPU of the VM can trap any more; a VM with an SMC in flight is
    /// refused with `CallsInFlight` and left as it was.
    ///
    /// The VM's state is taken out of its lock first (its SMCs are refused from then on),
    /// so the unwinding below runs with no mediator lock held. Parked calls are unwound:
    /// every pending RPC is answered with a failure until OP-TEE finishes the call (at most
    /// `max_destroy_resumes` round trips each), so no OP-TEE thread stays suspended for a VM
    /// that no longer exists. The id stays taken until VM_DESTROYED has returned.
    ///
    /// Each step is bounded by the limits: at most `max_calls_per_vm` calls, each with at
    /// most `max_params` temporaries, `max_buffers_per_vm` buffers and
    /// `max_rpc_args_per_vm` RPC argument pages, and `max_pinned_pages_per_vm` unpins in
    /// total. Unpinning before VM_DESTROYED is safe: the VM's state is gone first, so no SMC
    /// with its client id can run again, and only such an SMC could make OP-TEE touch its
    /// pages. While another VM's trap reaps one of this VM's calls (a bounded unwinding with
    /// this VM's client id) the answer is `Reaping` and nothing changes: retry.
    pub fn vm_destroyed<G: GuestMemory>(&self, vm: VmId, mem: &mut G) -> Result<(), Error> {
        let mut v = L::with(&self.vms, |t| {
            let slot = t.get(&vm).ok_or(Error::UnknownVm)?;
            L::with(slot, |s| {
                if s.life != Life::Live {
                    return Err(Error::UnknownVm);
                }
                if s.in_flight > 0 {
                    return Err(Error::CallsInFlight);
                }
                if s.reaping > 0 {
                    return Err(Error::Reaping);
                }
                s.life = Life::Destroying;
                Ok(core::mem::take(&mut s.vm))
            })
        })?;
        release_deferred(mem, &mut v);
        let ids: Vec<u32> = v.calls.keys().copied().collect();
        for id in ids {
            self.drain_call(vm, &mut v, id, &mut Vec::new());
        }
        for (_, call) in core::mem::take(&mut v.calls) {
            self.release_call_resources(mem, &mut v, call);
        }
        for (_, buf) in core::mem::take(&mut v.bufs) {
            unpin_all(mem, &buf.pinned);
        }
        for (_, ra) in core::mem::take(&mut v.rpc_args) {
            self.pages.free(ra.page);
        }
        for call in core::mem::take(&mut v.spare) {
            self.pages.free(call.shadow);
        }
        let r = self.lifecycle_call(abi::OPTEE_SMC_VM_DESTROYED, vm);
        L::with(&self.vms, |t| t.remove(&vm));
        r.map_err(|code| Error::VmDestroyFailed { code })
    }

    /// Unwind a parked call of a dying VM, or a reaped call: answer each RPC with a
    /// failure until OP-TEE finishes the call, at most `max_destroy_resumes` round trips.
    /// Nothing is copied back to the guest; resources are released by the caller
    /// afterwards. Returns OP-TEE's final a0, or `None` if the call was abandoned (still
    /// in an RPC) or was not parked. The cookies of buffers OP-TEE freed on the way
    /// (RPC SHM_FREE, which OP-TEE does not take back whatever the answer) are added to
    /// `shm_freed`.
    fn drain_call(&self, vm: VmId, v: &mut Vm, id: u32, shm_freed: &mut Vec<u64>) -> Option<u32> {
        let call = v.calls.get_mut(&id)?;
        let CallState::Waiting(mut wait) = core::mem::replace(&mut call.state, CallState::Running)
        else {
            return None;
        };
        for _ in 0..self.limits.max_destroy_resumes {
            let resume = v.calls.get(&id).map(|c| c.resume).unwrap_or_default();
            let preserved = [0, 0, resume[1], resume[2]];
            let answer = match wait {
                // No memory for OP-TEE.
                Wait::Alloc { .. } => [0; 4],
                Wait::Pending { a1, a2, a4, a5 } => [a1, a2, a4, a5],
                Wait::Cmd { cookie, .. } => {
                    self.fail_rpc_cmd(v, id, cookie, abi::TEEC_ERROR_TARGET_DEAD);
                    preserved
                }
                Wait::Free | Wait::ForeignIntr => preserved,
            };
            let r = self.forward_resume(vm.client_id(), &resume, answer);
            let a0 = r[0] as u32;
            if !abi::is_rpc(a0) {
                return Some(a0);
            }
            if let Some(c) = v.calls.get_mut(&id) {
                c.resume = [r[3], r[4], r[5], r[6]];
            }
            let cookie = regpair(r[1], r[2]);
            wait = match a0 & !abi::OPTEE_SMC_RETURN_RPC_PREFIX_MASK {
                abi::OPTEE_SMC_RPC_FUNC_ALLOC => Wait::Alloc { size: 0 },
                abi::OPTEE_SMC_RPC_FUNC_FREE => {
                    if let Some(ra) = v.rpc_args.remove(&cookie) {
                        self.pages.free(ra.page);
                    }
                    Wait::Free
                }
                abi::OPTEE_SMC_RPC_FUNC_CMD => {
                    shm_freed.extend(self.rpc_shm_freed(v, id, cookie));
                    Wait::Cmd {
                        cookie,
                        rpc: MsgArg::default(),
                    }
                }
                _ => Wait::ForeignIntr,
            };
        }
        None
    }

    /// The buffer an RPC command of call `id` frees, if OP-TEE's request (in the hypervisor
    /// page) is SHM_FREE.
    fn rpc_shm_freed(&self, v: &Vm, id: u32, cookie: u64) -> Option<u64> {
        let (page, off, size, _, _) = rpc_slot(v, id, cookie)?;
        let mut bytes = [0u8; arg_size(1)];
        if size < bytes.len() {
            return None;
        }
        self.pages.read(page, off, &mut bytes);
        let header = MsgArgHeader::parse(&bytes).ok()?;
        if header.cmd != abi::OPTEE_RPC_CMD_SHM_FREE || header.num_params == 0 {
            return None;
        }
        MsgParam::parse(&bytes[param_offset(0)..])
            .ok()
            .map(|p| p.u1)
    }

    /// Try to free an OP-TEE thread for `vm`, whose new call was refused: find another VM
    /// holding more calls than its share, and among them a call parked (`Waiting`, so not
    /// in flight) for longer than `max_park_ms` at `now`, the oldest; fail it in OP-TEE.
    /// Returns the VM and handle reaped, if any.
    ///
    /// Each VM is looked at under its own lock, one at a time. The call is taken out of its
    /// VM's state (the VM's RETURN_FROM_RPC for it then gets ERESUME), unwound with no lock
    /// held like a dying VM's parked call (`drain_call`, at most `max_destroy_resumes`
    /// SMCs), then released under the VM's lock: hypervisor pages at once, pins by the VM's
    /// next trap (`unpin_later`). Meanwhile the VM cannot be destroyed (`Error::Reaping`),
    /// so no SMC of it runs after its VM_DESTROYED. The unwound call's RPC arguments are
    /// freed: OP-TEE's RPC-argument cache is never on, so a finished call keeps none, and an
    /// abandoned thread is never resumed again (as in `vm_destroyed`).
    fn reap(&self, vm: VmId, now: u64) -> Option<(VmId, u32)> {
        if !self.limits.reap_across_vms {
            // OP-TEE's NS-virtualization gives each guest partition threads of its own: a
            // call of another VM holds none of the refused VM's, and failing it would only
            // hurt that VM (measured: moat-hostile-threads).
            return None;
        }
        let (others, vms) = L::with(&self.vms, |t| {
            let others: Vec<_> = t
                .iter()
                .filter(|(id, _)| **id != vm)
                .map(|(id, slot)| (*id, slot.clone()))
                .collect();
            (others, t.len())
        });
        let share = self.share(vms);
        for (victim, slot) in others {
            let Some((id, mut detached)) = L::with(&slot, |s| self.take_reapable(s, share, now))
            else {
                continue;
            };
            let mut shm_freed = Vec::new();
            let a0 = self.drain_call(victim, &mut detached, id, &mut shm_freed);
            L::with(&slot, |s| {
                s.reaping -= 1;
                let v = &mut s.vm;
                let mut later = Deferred::default();
                if let Some(call) = detached.calls.remove(&id) {
                    // OP-TEE's outcome commits a REGISTER_SHM or UNREGISTER_SHM as it would
                    // have for the guest; nothing reaches the guest's memory (`Deferred`).
                    let a0 = a0.unwrap_or(abi::OPTEE_SMC_RETURN_ERESUME);
                    self.complete_call(victim, v, &mut later, (id, call), a0);
                }
                for c in shm_freed {
                    if v.bufs.get(&c).is_some_and(|b| b.kind == BufKind::RpcAlloc) {
                        if let Some(b) = v.bufs.remove(&c) {
                            release_buffer(&mut later, v, &b);
                        }
                        v.optee_map.release(Owner::Rpc(c));
                    }
                }
                // Still pinned until the VM's next trap unpins them.
                v.pinned += later.unpins.len() as u32;
                v.unpin_later.extend(later.unpins);
            });
            for (_, ra) in core::mem::take(&mut detached.rpc_args) {
                self.pages.free(ra.page);
            }
            return Some((victim, id));
        }
        None
    }

    /// Under the victim's lock: take out its oldest call parked past the deadline if the VM
    /// holds more than `share` calls, with the RPC arguments that call allocated. The VM
    /// then counts one more reaping in progress.
    fn take_reapable(&self, s: &mut Slot, share: u32, now: u64) -> Option<(u32, Vm)> {
        let v = &mut s.vm;
        if s.life != Life::Live || v.calls.len() as u32 <= share {
            return None;
        }
        let id = v
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, CallState::Waiting(_)))
            .filter(|(_, c)| now.saturating_sub(c.parked_at) > self.limits.max_park_ms)
            .min_by_key(|(_, c)| c.parked_at)
            .map(|(id, _)| *id)?;
        let call = v.calls.remove(&id)?;
        let mut detached = Vm::default();
        let owned: Vec<u64> = v
            .rpc_args
            .iter()
            .filter(|(_, ra)| ra.call == Some(id))
            .map(|(c, _)| *c)
            .collect();
        for c in owned {
            if let Some(ra) = v.rpc_args.remove(&c) {
                detached.rpc_args.insert(c, ra);
            }
        }
        if v.reaped.len() >= self.limits.max_calls_per_vm.max(1) as usize {
            v.reaped.remove(0);
        }
        v.reaped.push((id, call.guest));
        detached.calls.insert(id, call);
        s.reaping += 1;
        Some((id, detached))
    }

    /// Make OP-TEE see its RPC command fail with `code` (written into the RPC argument).
    fn fail_rpc_cmd(&self, v: &Vm, id: u32, cookie: u64, code: u32) {
        if let Some((page, off, size, _, _)) = rpc_slot(v, id, cookie) {
            if size >= abi::MSG_ARG_HEADER_SIZE {
                self.pages
                    .write(page, off + abi::ARG_OFFSET_RET, &code.to_le_bytes());
            }
        }
    }

    /// Handle one trapped trusted-OS SMC from `vm` from start to end: `begin`, then for
    /// every `Step::Forward` the SMC (with no mediator lock held) and `finish`. `regs` are
    /// the guest's x0..x7, `now_ms` the hypervisor's clock in milliseconds (see `begin`);
    /// the result is what to write back to x0..x7. Never panics on guest input. A trap
    /// enters OP-TEE at most `max_internal_resumes + 1` times for itself, plus, when it
    /// had no thread and reaped another VM's call, `max_destroy_resumes` unwinding SMCs
    /// and one more entry.
    pub fn handle_smc<G: GuestMemory>(
        &self,
        vm: VmId,
        mem: &mut G,
        regs: [u64; 8],
        now_ms: u64,
    ) -> [u64; 8] {
        // The steps of `begin` and `finish`, with the trap's state kept here rather than
        // moved into a `Token` and out again around every SMC.
        let mut trap = Trap::new(&self.limits, now_ms);
        let Some((slot, share)) = self.slot_and_share(vm) else {
            let unknown = err_regs(abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION);
            return self.reply(vm, &regs, &trap, unknown);
        };
        let mut next = self.enter(&slot, vm, mem, &regs, &mut trap, share);
        loop {
            next = match next {
                Next::Reply(head) => return self.reply(vm, &regs, &trap, head),
                Next::Forward(fwd, awaiting) => {
                    let r = self.monitor.call(fwd);
                    self.take_result(&slot, vm, mem, awaiting, &r, &mut trap)
                }
                Next::Reap(refused) => self.reap_then(&slot, vm, mem, &mut trap, refused),
            };
        }
    }

    /// The first half of a trap: validate and prepare under `vm`'s lock, then either answer
    /// the guest or ask for an SMC. Safe to call from several CPUs at once, for one VM or
    /// many.
    ///
    /// `now_ms` is the hypervisor's clock in milliseconds (any origin, never going back; on
    /// every CPU the same clock): the trap's time, used to date a call that parks in an RPC
    /// and to tell whether another VM's parked call is past `max_park_ms`. It is the only
    /// time the mediator knows.
    pub fn begin<G: GuestMemory>(
        &self,
        vm: VmId,
        mem: &mut G,
        regs: [u64; 8],
        now_ms: u64,
    ) -> Step<L> {
        let mut trap = Trap::new(&self.limits, now_ms);
        let Some((slot, share)) = self.slot_and_share(vm) else {
            let unknown = err_regs(abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION);
            return Step::Reply(self.reply(vm, &regs, &trap, unknown));
        };
        let next = self.enter(&slot, vm, mem, &regs, &mut trap, share);
        self.step(slot, vm, mem, regs, trap, next)
    }

    /// A trap's first locked step: dispatch the guest's SMC under `vm`'s lock.
    fn enter<G: GuestMemory>(
        &self,
        slot: &Arc<L::Mutex<Slot>>,
        vm: VmId,
        mem: &mut G,
        regs: &[u64; 8],
        trap: &mut Trap,
        share: u32,
    ) -> Next {
        L::with(slot, |s| {
            if s.life != Life::Live {
                return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION));
            }
            release_deferred(mem, &mut s.vm);
            let next = self.dispatch(vm, &mut s.vm, mem, regs, trap, share);
            if matches!(next, Next::Forward(..)) {
                s.in_flight += 1;
            }
            next
        })
    }

    /// A trap's locked step after an SMC: OP-TEE's `result` for `awaiting`.
    fn take_result<G: GuestMemory>(
        &self,
        slot: &Arc<L::Mutex<Slot>>,
        vm: VmId,
        mem: &mut G,
        awaiting: Awaiting,
        result: &[u64; 8],
        trap: &mut Trap,
    ) -> Next {
        L::with(slot, |s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.life != Life::Live {
                // Only a token outliving `vm_destroyed`'s refusal could get here.
                return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_ERESUME));
            }
            let next = self.on_result(vm, &mut s.vm, mem, awaiting, result, trap);
            // A trap reaping for its call still holds that call: it stays in flight.
            if matches!(next, Next::Forward(..) | Next::Reap(Refused::Call(_))) {
                s.in_flight += 1;
            }
            next
        })
    }

    /// The second half of a trap: take OP-TEE's `result` for `token` under the VM's lock.
    /// Either answers the guest or asks for another SMC (an internal resume, asking
    /// DISABLE_SHM_CACHE again, or entering a call again after reaping).
    pub fn finish<G: GuestMemory>(
        &self,
        mem: &mut G,
        token: Token<L>,
        result: [u64; 8],
    ) -> Step<L> {
        let Token {
            slot,
            vm,
            regs,
            mut trap,
            awaiting,
        } = token;
        let next = self.take_result(&slot, vm, mem, awaiting, &result, &mut trap);
        self.step(slot, vm, mem, regs, trap, next)
    }

    /// Turn a locked step's outcome into the hypervisor's next step (the lock is released).
    /// A refused call reaps first, with no lock held, then takes the VM's lock once more.
    fn step<G: GuestMemory>(
        &self,
        slot: Arc<L::Mutex<Slot>>,
        vm: VmId,
        mem: &mut G,
        regs: [u64; 8],
        mut trap: Trap,
        mut next: Next,
    ) -> Step<L> {
        loop {
            match next {
                Next::Reply(head) => return Step::Reply(self.reply(vm, &regs, &trap, head)),
                Next::Forward(fwd, awaiting) => {
                    return Step::Forward {
                        regs: fwd,
                        token: Token {
                            slot,
                            vm,
                            regs,
                            trap,
                            awaiting,
                        },
                    }
                }
                Next::Reap(refused) => next = self.reap_then(&slot, vm, mem, &mut trap, refused),
            }
        }
    }

    /// A refused call reaps first, with no lock held, then takes the VM's lock once more.
    fn reap_then<G: GuestMemory>(
        &self,
        slot: &Arc<L::Mutex<Slot>>,
        vm: VmId,
        mem: &mut G,
        trap: &mut Trap,
        refused: Refused,
    ) -> Next {
        trap.reap_tried = true;
        trap.reaped = self.reap(vm, trap.now);
        let reaped = trap.reaped.is_some();
        match refused {
            Refused::Share => Next::Reply(err_regs(Fault::ThreadLimit.smc_code())),
            Refused::Call(id) => L::with(slot, |s| {
                s.in_flight = s.in_flight.saturating_sub(1);
                let limit = abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT;
                if s.life != Life::Live {
                    // Cannot happen: the trap was in flight, so the VM lived on.
                    return Next::Reply(err_regs(limit));
                }
                let again =
                    s.vm.calls
                        .get(&id)
                        .filter(|_| reaped)
                        .map(|call| Next::Forward(entry_regs(vm, call), Awaiting::Enter(id)));
                match again {
                    Some(fwd) => {
                        s.in_flight += 1;
                        fwd
                    }
                    None => Next::Reply(self.complete(vm, &mut s.vm, mem, id, limit)),
                }
            }),
        }
    }

    /// The guest's x0..x7 at the end of a trap (a4..a7 preserved, per the SMC calling
    /// convention), traced with no lock held.
    fn reply(&self, vm: VmId, regs: &[u64; 8], trap: &Trap, head: [u64; 4]) -> [u64; 8] {
        if T::ENABLED && self.trace.smc_on() {
            let mut args = [0u64; 6];
            args.copy_from_slice(&regs[1..7]);
            self.trace.smc(&SmcRecord {
                vm,
                func: regs[0] as u32,
                args,
                pages_translated: trap.budget.translated,
                ret: head[0] as u32,
                fault: trap.fault,
                reaped: trap.reaped,
            });
        }
        [
            head[0], head[1], head[2], head[3], regs[4], regs[5], regs[6], regs[7],
        ]
    }

    /// `share` is the VM's share of OP-TEE's threads at this trap (`calls_per_vm`).
    fn dispatch<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        regs: &[u64; 8],
        trap: &mut Trap,
        share: u32,
    ) -> Next {
        let client = vm.client_id();
        let fid = regs[0] as u32;
        let reply = |r: [u64; 4]| Next::Reply(r);
        match fid {
            abi::OPTEE_SMC_CALLS_COUNT
            | abi::OPTEE_SMC_CALLS_UID
            | abi::OPTEE_SMC_CALLS_REVISION
            | abi::OPTEE_SMC_GET_OS_UUID
            | abi::OPTEE_SMC_GET_OS_REVISION => self.pass_through(client, fid, 0, Awaiting::Fast),
            // Never forwarded: with OP-TEE's RPC-argument cache on, a thread keeps a call's
            // RPC argument after the call and a later call on it, maybe another VM's, gets
            // RPC_FUNC_FREE of the first VM's cookie (see the module doc). With it off,
            // OP-TEE frees every RPC argument within the call that allocated it. OK, not an
            // error: Linux's driver retries ENABLE_SHM_CACHE until it gets OK.
            abi::OPTEE_SMC_ENABLE_SHM_CACHE => reply(err_regs(abi::OPTEE_SMC_RETURN_OK)),
            abi::OPTEE_SMC_EXCHANGE_CAPABILITIES => {
                self.pass_through(client, fid, FORWARDED_NSEC_CAPS, Awaiting::Capabilities)
            }
            // OP-TEE only empties its cache when idle; the mediator enforces that per VM, so
            // a cookie can never free an RPC argument page a parked call still uses.
            abi::OPTEE_SMC_DISABLE_SHM_CACHE if !v.calls.is_empty() => {
                reply(err_regs(abi::OPTEE_SMC_RETURN_EBUSY))
            }
            abi::OPTEE_SMC_DISABLE_SHM_CACHE => {
                self.pass_through(client, fid, 0, Awaiting::DisableShmCache)
            }
            abi::OPTEE_SMC_GET_THREAD_COUNT => {
                reply(ok_regs(abi::OPTEE_SMC_RETURN_OK, u64::from(share), 0, 0))
            }
            abi::OPTEE_SMC_GET_SHM_CONFIG
            | abi::OPTEE_SMC_L2CC_MUTEX
            | abi::OPTEE_SMC_ENABLE_ASYNC_NOTIF
            | abi::OPTEE_SMC_GET_ASYNC_NOTIF_VALUE => {
                reply(err_regs(abi::OPTEE_SMC_RETURN_ENOTAVAIL))
            }
            abi::OPTEE_SMC_CALL_WITH_ARG => self.std_call(vm, v, mem, regs, trap, share),
            abi::OPTEE_SMC_CALL_WITH_RPC_ARG | abi::OPTEE_SMC_CALL_WITH_REGD_ARG
                if self.inline_rpc_size().is_some() =>
            {
                self.std_call(vm, v, mem, regs, trap, share)
            }
            abi::OPTEE_SMC_RETURN_FROM_RPC => self.resume(vm, v, mem, regs, trap),
            abi::OPTEE_SMC_VM_CREATED
            | abi::OPTEE_SMC_VM_DESTROYED
            | abi::OPTEE_SMC_BOOT_SECONDARY
            | abi::OPTEE_SMC_CALL_WITH_RPC_ARG
            | abi::OPTEE_SMC_CALL_WITH_REGD_ARG => {
                trap.fault = Some(Fault::Refused);
                reply(err_regs(Fault::Refused.smc_code()))
            }
            _ => reply(err_regs(abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION)),
        }
    }

    /// OP-TEE's result for a forwarded SMC.
    fn on_result<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        awaiting: Awaiting,
        r: &[u64; 8],
        trap: &mut Trap,
    ) -> Next {
        let masked = [
            r[0] & 0xffff_ffff,
            r[1] & 0xffff_ffff,
            r[2] & 0xffff_ffff,
            r[3] & 0xffff_ffff,
        ];
        match awaiting {
            Awaiting::Fast => Next::Reply(masked),
            Awaiting::Capabilities => Next::Reply(self.filter_capabilities(masked)),
            Awaiting::DisableShmCache => self.disable_shm_cache(vm, v, mem, masked, trap),
            Awaiting::Enter(id) => self.after_optee(vm, v, mem, (id, true), *r, trap),
            Awaiting::Call(id) => self.after_optee(vm, v, mem, (id, false), *r, trap),
        }
    }

    /// The one path for fast calls forwarded to OP-TEE: the mediator picks every argument
    /// (only `a1` is ever non-zero) and a7 is the VM's client id. `on_result` filters the
    /// result (every register masked to 32 bits, then per `awaiting`).
    fn pass_through(&self, client: u64, fid: u32, a1: u64, awaiting: Awaiting) -> Next {
        Next::Forward([u64::from(fid), a1, 0, 0, 0, 0, 0, client], awaiting)
    }

    /// EXCHANGE_CAPABILITIES as a guest sees it (`r` is OP-TEE's answer, masked).
    fn filter_capabilities(&self, r: [u64; 4]) -> [u64; 4] {
        let caps = regpair(0, r[1]);
        if r[0] as u32 != abi::OPTEE_SMC_RETURN_OK || caps & abi::OPTEE_SMC_SEC_CAP_DYNAMIC_SHM == 0
        {
            return err_regs(abi::OPTEE_SMC_RETURN_ENOTAVAIL);
        }
        // a2 (max notification value) belongs to a masked capability: zero.
        let mut caps = caps & GUEST_SEC_CAPS;
        let mut rpc_params = 0;
        match self.inline_rpc_size() {
            Some(_) if caps & abi::OPTEE_SMC_SEC_CAP_RPC_ARG != 0 => {
                rpc_params = u64::from(self.probe.rpc_param_count);
            }
            _ => caps &= !abi::OPTEE_SMC_SEC_CAP_RPC_ARG,
        }
        ok_regs(abi::OPTEE_SMC_RETURN_OK, caps, 0, rpc_params)
    }

    /// DISABLE_SHM_CACHE: OP-TEE hands back one cached cookie per call (`r`, masked). A
    /// cookie naming this VM's RPC argument buffer or registered buffer is released here and
    /// passed on; any other cookie is never shown to the guest (it could leak another VM's
    /// pointer): ask again, at most `max_internal_resumes` times, then answer EBUSY (retry
    /// later).
    ///
    /// A sibling vCPU may have opened a call while the SMC ran (`begin` refused the SMC
    /// only if the VM had calls then). OP-TEE never hands out a cookie a thread uses, but,
    /// as in `begin`, the mediator does not rely on it: with a call open, the cookie is
    /// passed on and its page or pins are kept until the RPC FREE, UNREGISTER_SHM or the
    /// VM's end that releases them.
    fn disable_shm_cache<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        r: [u64; 4],
        trap: &mut Trap,
    ) -> Next {
        if r[0] as u32 != abi::OPTEE_SMC_RETURN_OK {
            return Next::Reply(err_regs(r[0] as u32));
        }
        let cookie = regpair(r[1], r[2]);
        let idle = v.calls.is_empty();
        if v.rpc_args.contains_key(&cookie) {
            if idle {
                if let Some(ra) = v.rpc_args.remove(&cookie) {
                    self.pages.free(ra.page);
                }
            }
            return Next::Reply(r);
        }
        if v.bufs
            .get(&cookie)
            .is_some_and(|b| b.state == BufState::Live)
        {
            if idle {
                if let Some(b) = v.bufs.remove(&cookie) {
                    release_buffer(mem, v, &b);
                }
            }
            return Next::Reply(r);
        }
        trap.fault = Some(Fault::UnknownCookie);
        trap.internal_resumes += 1;
        if trap.internal_resumes >= self.limits.max_internal_resumes {
            return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_EBUSY));
        }
        self.pass_through(
            vm.client_id(),
            abi::OPTEE_SMC_DISABLE_SHM_CACHE,
            0,
            Awaiting::DisableShmCache,
        )
    }

    // -------------------------------------------------------------------------------------
    // Yielding calls.
    // -------------------------------------------------------------------------------------

    /// CALL_WITH_ARG, CALL_WITH_RPC_ARG and CALL_WITH_REGD_ARG. OP-TEE always gets the
    /// shadow page by physical address: CALL_WITH_ARG, or CALL_WITH_RPC_ARG with the RPC
    /// argument right after the argument in the same shadow page. A VM with `share` calls
    /// open gets ETHREAD_LIMIT (after looking for a call of another VM to reap).
    fn std_call<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        regs: &[u64; 8],
        trap: &mut Trap,
        share: u32,
    ) -> Next {
        // The share is what a VM is guaranteed, not a cap: while OP-TEE has a thread free a
        // VM may use it (a cancel needs a second thread beside the call it cancels), and
        // reaping takes it back when another VM is refused. Only `max_calls_per_vm` caps.
        let _ = share;
        if v.calls.len() as u32 >= self.limits.max_calls_per_vm.max(1) {
            trap.fault = Some(Fault::ThreadLimit);
            return Next::Reap(Refused::Share);
        }
        let fid = regs[0] as u32;
        let inline_rpc = match fid {
            abi::OPTEE_SMC_CALL_WITH_ARG => None,
            _ => self.inline_rpc_size(),
        };
        let loc = match fid {
            abi::OPTEE_SMC_CALL_WITH_REGD_ARG => {
                regd_loc(v, regpair(regs[1], regs[2]), regs[3] & 0xffff_ffff)
            }
            _ => Ok(GuestLoc::Ipa(Ipa(regpair(regs[1], regs[2])))),
        };
        // A spare call of this VM (its shadow page with it), filled in place: the guest's
        // message is read straight into it.
        let Some(mut call) = self.spare_call(v, trap.now) else {
            trap.fault = Some(Fault::NoMemory);
            return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_ENOMEM));
        };
        let copied = loc.and_then(|loc| {
            self.copy_in_arg(mem, &loc, &mut call.arg)?;
            if let Some(size) = inline_rpc {
                probe_inline_rpc(mem, &loc, arg_size(call.arg.len()), size)?;
            }
            Ok(loc)
        });
        match copied {
            Ok(guest) => call.guest = guest,
            Err(f) => {
                trap.fault = Some(f);
                self.recycle(v, call);
                return Next::Reply(err_regs(f.smc_code()));
            }
        }
        call.inline_rpc = inline_rpc;
        if let Err(f) = self.translate_params(v, mem, &mut call, trap) {
            // Report like OP-TEE reports a bad parameter: in the message, SMC OK.
            trap.fault = Some(f);
            fail_in_guest(mem, &call.guest, f.teec_code());
            self.release_call_resources(mem, v, call);
            return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_OK));
        }
        let id = alloc_call_id(v);
        if v.optee_map
            .admit(Owner::Call(id), &call.blocks[..call.nblocks])
            .is_err()
        {
            // OP-TEE could not map all of it at once: refuse it, as a buffer over a limit.
            trap.fault = Some(Fault::Limit);
            fail_in_guest(mem, &call.guest, Fault::Limit.teec_code());
            self.release_call_resources(mem, v, call);
            return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_OK));
        }
        if T::ENABLED && self.trace.msg_on() {
            self.trace_call(vm, v, id, &call);
        }
        self.pages.write_words(&call.shadow, 0, call.out.words());
        let fwd = entry_regs(vm, &call);
        v.calls.insert(id, call);
        Next::Forward(fwd, Awaiting::Enter(id))
    }

    /// `--trace smc=msg`: the call as OP-TEE gets it, each page of each page list as
    /// IPA → PA (read back from the rebuilt list). Only built while the tracer asks.
    fn trace_call(&self, vm: VmId, v: &Vm, id: u32, call: &Call) {
        let mut temps = call.temps.iter();
        let mut pages: Vec<Vec<(Ipa, PhysAddr)>> = Vec::new();
        for i in 0..call.arg.len() {
            let (g, o) = (call.arg.param(i), call.out.param(i));
            let ipas = match g.kind() {
                Some(ParamKind::Tmem { .. }) if g.is_noncontig() => {
                    if call.arg.cmd() == abi::OPTEE_MSG_CMD_REGISTER_SHM {
                        v.bufs.get(&g.u2).map(|b| &b.pinned.ipas[..])
                    } else {
                        temps.next().map(|t| &t.ipas[..])
                    }
                }
                _ => None,
            };
            pages.push(ipas.map_or_else(Vec::new, |ipas| self.list_pairs(&call.lists, o.u0, ipas)));
        }
        let params: Vec<ParamRecord<'_>> = pages
            .iter()
            .enumerate()
            .map(|(i, p)| ParamRecord {
                guest: call.arg.param(i),
                optee: call.out.param(i),
                pages: p,
            })
            .collect();
        self.trace.msg(&MsgRecord {
            vm,
            call: id,
            dir: MsgDir::Call,
            header: call.out.header(),
            params: &params,
        });
    }

    /// `--trace smc=msg`: OP-TEE's answer, as the guest gets it.
    fn trace_return(&self, vm: VmId, id: u32, call: &Call) {
        let params: Vec<ParamRecord<'_>> = (0..call.arg.len())
            .map(|i| ParamRecord {
                guest: call.arg.param(i),
                optee: call.out.param(i),
                pages: &[],
            })
            .collect();
        self.trace.msg(&MsgRecord {
            vm,
            call: id,
            dir: MsgDir::Return,
            header: call.arg.header(),
            params: &params,
        });
    }

    /// The (IPA, PA) pairs of a rebuilt page list: `buf_ptr` names its first page (among
    /// `lists`, with the pages that follow it in order), `ipas` the guest pages it lists.
    fn list_pairs(&self, lists: &[HvPage], buf_ptr: u64, ipas: &[Ipa]) -> Vec<(Ipa, PhysAddr)> {
        let first = buf_ptr & !(abi::NONCONTIG_PAGE_SIZE - 1);
        let Some(k) = lists.iter().position(|p| p.phys().raw() == first) else {
            return Vec::new();
        };
        let per = abi::PAGELIST_ENTRIES_PER_PAGE;
        let mut out = Vec::with_capacity(ipas.len());
        for (i, ipa) in ipas.iter().enumerate() {
            let Some(page) = lists.get(k + i / per) else {
                break;
            };
            let mut w = [0u64; 1];
            self.pages.read_words(page, (i % per) * 8, &mut w);
            out.push((*ipa, PhysAddr(w[0])));
        }
        out
    }

    /// `--trace smc=msg`: an RPC request (`dir` Rpc) or the guest's answer to one
    /// (RpcAnswer; `pages` for a buffer the answer allocated).
    fn trace_rpc(
        &self,
        vm: VmId,
        id: u32,
        dir: MsgDir,
        (guest, optee): (&MsgArg, &MsgArg),
        pages: &[(Ipa, PhysAddr)],
    ) {
        let params: Vec<ParamRecord<'_>> = optee
            .params
            .iter()
            .enumerate()
            .map(|(i, o)| ParamRecord {
                guest: guest.params.get(i).copied().unwrap_or_default(),
                optee: *o,
                pages: if i == 0 { pages } else { &[] },
            })
            .collect();
        self.trace.msg(&MsgRecord {
            vm,
            call: id,
            dir,
            header: optee.header,
            params: &params,
        });
    }

    /// A call record for a new call of `v`, from its spares (with the shadow page it had:
    /// a spare's page only ever held this VM's messages) or new, reset for `now`. `None`
    /// when no page is left.
    fn spare_call(&self, v: &mut Vm, now: u64) -> Option<Box<Call>> {
        let mut call = match v.spare.pop() {
            Some(c) => c,
            None => Box::new(Call {
                state: CallState::Running,
                shadow: self.pages.alloc()?,
                guest: GuestLoc::Ipa(Ipa(0)),
                inline_rpc: None,
                arg: Msg::zeroed(),
                out: Msg::zeroed(),
                value_out: 0,
                size_out: 0,
                blocks: [0; MAX_PARAMS],
                nblocks: 0,
                held: [0; MAX_PARAMS],
                nheld: 0,
                temps: Vec::new(),
                lists: Vec::new(),
                register: None,
                unregister: None,
                resume: [0; 4],
                parked_at: now,
            }),
        };
        call.state = CallState::Running;
        call.inline_rpc = None;
        call.value_out = 0;
        call.size_out = 0;
        call.nblocks = 0;
        call.nheld = 0;
        call.register = None;
        call.unregister = None;
        call.resume = [0; 4];
        call.parked_at = now;
        Some(call)
    }

    /// Keep an ended call's record (emptied, with its shadow page) for the VM's next call,
    /// up to `max_calls_per_vm` of them; free the rest.
    fn recycle(&self, v: &mut Vm, mut call: Box<Call>) {
        call.temps.clear();
        call.lists.clear();
        call.guest = GuestLoc::Ipa(Ipa(0));
        call.state = CallState::Running;
        if v.spare.len() < self.limits.max_calls_per_vm.max(1) as usize {
            v.spare.push(call);
        } else {
            self.pages.free(call.shadow);
        }
    }

    /// Copy the guest's argument (header, then exactly the params it announced) into `arg`
    /// and check its shape. Only the copy is used afterwards.
    fn copy_in_arg<G: GuestMemory>(
        &self,
        mem: &G,
        loc: &GuestLoc,
        arg: &mut Msg,
    ) -> Result<(), Fault> {
        let aligned = match loc {
            GuestLoc::Ipa(ipa) => ipa.0.is_multiple_of(8),
            GuestLoc::InBuffer { offset, .. } => offset.is_multiple_of(8),
        };
        if !aligned {
            return Err(Fault::Unaligned);
        }
        // The header once: its count sizes everything after (the guest may change it).
        loc.read_words(mem, 0, arg.header_mut())?;
        let header = arg.header();
        if header.num_params > self.limits.max_params {
            return Err(Fault::BadMessage);
        }
        match header.cmd {
            abi::OPTEE_MSG_CMD_OPEN_SESSION
            | abi::OPTEE_MSG_CMD_INVOKE_COMMAND
            | abi::OPTEE_MSG_CMD_CLOSE_SESSION
            | abi::OPTEE_MSG_CMD_CANCEL
            | abi::OPTEE_MSG_CMD_REGISTER_SHM
            | abi::OPTEE_MSG_CMD_UNREGISTER_SHM => {}
            // DO_BOTTOM_HALF / STOP_ASYNC_NOTIF belong to the masked ASYNC_NOTIF capability.
            _ => return Err(Fault::BadMessage),
        }
        // `max_params` is at most `msg::MAX_PARAMS` (`Limits::sanitized`).
        let n = header.num_params as usize;
        let body = arg.params_mut(n).map_err(|_| Fault::BadMessage)?;
        loc.read_words(mem, abi::MSG_ARG_HEADER_SIZE, body)
    }

    /// Validate every parameter of the copy and build what OP-TEE gets.
    fn translate_params<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        call: &mut Call,
        trap: &mut Trap,
    ) -> Result<(), Fault> {
        let cmd = call.arg.cmd();
        let n = call.arg.len();
        call.out.reset(&call.arg.header());
        if matches!(
            cmd,
            abi::OPTEE_MSG_CMD_REGISTER_SHM | abi::OPTEE_MSG_CMD_UNREGISTER_SHM
        ) && n != 1
        {
            return Err(Fault::BadParam);
        }
        // By index: the loop fills in `call` (pins, lists), so it cannot borrow its params.
        let maps = !matches!(
            cmd,
            abi::OPTEE_MSG_CMD_REGISTER_SHM | abi::OPTEE_MSG_CMD_UNREGISTER_SHM
        );
        for i in 0..n {
            let p = call.arg.param(i);
            let kind = check_attr(&p)?;
            match kind {
                ParamKind::Value { output: true } => call.value_out |= 1 << i,
                ParamKind::Rmem { output: true, .. } | ParamKind::Tmem { output: true, .. } => {
                    call.size_out |= 1 << i
                }
                _ => {}
            }
            let q = match (cmd, kind) {
                (abi::OPTEE_MSG_CMD_REGISTER_SHM, ParamKind::Tmem { .. }) if p.is_noncontig() => {
                    let cookie = p.u2;
                    let buf_ptr = self.register_buffer(
                        v,
                        mem,
                        trap,
                        (cookie, BufKind::Registered, BufState::Registering),
                        (p.u0, p.u1),
                        &mut call.lists,
                    )?;
                    call.register = Some(cookie);
                    MsgParam {
                        attr: p.attr,
                        u0: buf_ptr,
                        u1: p.u1,
                        u2: cookie,
                    }
                }
                (abi::OPTEE_MSG_CMD_REGISTER_SHM, _) => return Err(Fault::BadParam),
                (abi::OPTEE_MSG_CMD_UNREGISTER_SHM, ParamKind::Rmem { .. }) => {
                    let cookie = p.u2;
                    match v.bufs.get_mut(&cookie) {
                        Some(b) if b.kind == BufKind::Registered && b.state == BufState::Live => {
                            if b.users > 0 {
                                return Err(Fault::BufferInUse);
                            }
                            b.state = BufState::Unregistering;
                        }
                        _ => return Err(Fault::UnknownCookie),
                    }
                    call.unregister = Some(cookie);
                    MsgParam {
                        attr: p.attr,
                        u0: 0,
                        u1: 0,
                        u2: cookie,
                    }
                }
                (abi::OPTEE_MSG_CMD_UNREGISTER_SHM, _) => return Err(Fault::BadParam),
                (_, ParamKind::None) => MsgParam {
                    attr: p.attr,
                    ..Default::default()
                },
                (_, ParamKind::Value { .. }) => p,
                (_, ParamKind::Rmem { .. }) => {
                    let buf = v.bufs.get_mut(&p.u2).ok_or(Fault::UnknownCookie)?;
                    if buf.state != BufState::Live {
                        return Err(Fault::UnknownCookie);
                    }
                    let end = p.u0.checked_add(p.u1).ok_or(Fault::BadParam)?;
                    if end > buf.pinned.size {
                        return Err(Fault::BadParam);
                    }
                    // OP-TEE maps the buffer object whole, and once however many parameters
                    // name it.
                    let pages = buf.pinned.ipas.len() as u32;
                    let named_before = (0..i).any(|j| {
                        let o = call.arg.param(j);
                        o.u2 == p.u2 && matches!(o.kind(), Some(ParamKind::Rmem { .. }))
                    });
                    if maps && !named_before {
                        call.blocks[call.nblocks] = pages;
                        call.nblocks += 1;
                    }
                    buf.users += 1;
                    call.held[call.nheld] = p.u2;
                    call.nheld += 1;
                    p
                }
                (_, ParamKind::Tmem { output, .. }) => {
                    if !p.is_noncontig() {
                        // Only a NULL reference may be contiguous: guests have no static SHM.
                        if p.u0 != 0 {
                            return Err(Fault::BadParam);
                        }
                        MsgParam {
                            attr: p.attr,
                            u0: 0,
                            u1: p.u1,
                            u2: 0,
                        }
                    } else {
                        let access = if output { Access::Write } else { Access::Read };
                        let t = self.pin(v, mem, trap, (p.u0, p.u1), access, &mut call.lists)?;
                        if maps {
                            call.blocks[call.nblocks] = t.pinned.ipas.len() as u32;
                            call.nblocks += 1;
                        }
                        call.temps.push(t.pinned);
                        MsgParam {
                            attr: p.attr,
                            u0: t.buf_ptr,
                            u1: p.u1,
                            u2: p.u2,
                        }
                    }
                }
            };
            call.out.set_param(i, &q);
        }
        call.out.set_len(n);
        Ok(())
    }

    /// Pin the NONCONTIG guest buffer `(buf_ptr, size)` and record it for this VM under
    /// `cookie` (which must be new, within the VM's buffer limit). Returns the rebuilt list
    /// pages and the `buf_ptr` OP-TEE gets.
    fn register_buffer<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        trap: &mut Trap,
        (cookie, kind, state): (u64, BufKind, BufState),
        (buf_ptr, size): (u64, u64),
        list: &mut Vec<HvPage>,
    ) -> Result<u64, Fault> {
        if v.bufs.contains_key(&cookie) {
            return Err(Fault::CookieInUse);
        }
        if v.bufs.len() as u32 >= self.limits.max_buffers_per_vm {
            return Err(Fault::Limit);
        }
        let t = self.pin(v, mem, trap, (buf_ptr, size), Access::Write, list)?;
        v.bufs.insert(
            cookie,
            Buffer {
                kind,
                state,
                pinned: t.pinned,
                users: 0,
            },
        );
        Ok(t.buf_ptr)
    }

    fn pin<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        trap: &mut Trap,
        (buf_ptr, size): (u64, u64),
        access: Access,
        list: &mut Vec<HvPage>,
    ) -> Result<crate::shm::Translated, Fault> {
        let room = Room {
            pin_room: self.limits.max_pinned_pages_per_vm.saturating_sub(v.pinned),
            max_pages_per_buffer: self.limits.max_pages_per_buffer,
        };
        let t = pin_noncontig(
            mem,
            &self.pages,
            &room,
            &mut trap.budget,
            buf_ptr,
            size,
            access,
            list,
        )?;
        v.pinned += t.pinned.ipas.len() as u32;
        Ok(t)
    }

    /// Give back everything a call holds (not its registered buffer once committed).
    fn release_call_resources<G: GuestMemory>(&self, mem: &mut G, v: &mut Vm, mut call: Box<Call>) {
        for cookie in &call.held[..call.nheld] {
            if let Some(b) = v.bufs.get_mut(cookie) {
                b.users = b.users.saturating_sub(1);
            }
        }
        call.nheld = 0;
        for t in &call.temps {
            unpin_all(mem, t);
            v.pinned -= t.ipas.len() as u32;
        }
        // Drained, not taken: the record keeps the vector's room for its next call.
        for p in call.lists.drain(..) {
            self.pages.free(p);
        }
        if let Some(c) = call.register {
            if let Some(b) = v.bufs.remove(&c) {
                release_buffer(mem, v, &b);
            }
        }
        if let Some(c) = call.unregister {
            if let Some(b) = v.bufs.get_mut(&c) {
                b.state = BufState::Live;
            }
        }
        self.recycle(v, call);
    }

    /// OP-TEE returned from a call's entry (`first`) or a resume (`r`): finish the call,
    /// park it on an RPC, or answer the RPC here and resume OP-TEE (the trap's
    /// `max_internal_resumes` budget). An entry OP-TEE had no thread for (ETHREAD_LIMIT)
    /// first looks for a call to reap, once per trap.
    fn after_optee<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        (id, first): (u32, bool),
        r: [u64; 8],
        trap: &mut Trap,
    ) -> Next {
        let client = vm.client_id();
        let a0 = r[0] as u32;
        if first && a0 == abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT && !trap.reap_tried {
            return Next::Reap(Refused::Call(id));
        }
        if !abi::is_rpc(a0) {
            return Next::Reply(self.complete(vm, v, mem, id, a0));
        }
        let Some(call) = v.calls.get_mut(&id) else {
            return Next::Reply(err_regs(abi::OPTEE_SMC_RETURN_ERESUME));
        };
        call.resume = [r[3], r[4], r[5], r[6]];
        call.parked_at = trap.now;
        let id64 = u64::from(id);
        // Either park the call and return the RPC to the guest, or answer OP-TEE here.
        let answer: [u64; 4] = match a0 & !abi::OPTEE_SMC_RETURN_RPC_PREFIX_MASK {
            abi::OPTEE_SMC_RPC_FUNC_ALLOC => {
                let size = r[1] & 0xffff_ffff;
                if size < abi::MSG_ARG_HEADER_SIZE as u64 || size > abi::NONCONTIG_PAGE_SIZE {
                    // Unservable size: refuse without bothering the guest.
                    [0, 0, call.resume[1], call.resume[2]]
                } else {
                    call.state = CallState::Waiting(Wait::Alloc { size });
                    return Next::Reply(ok_regs(a0, size, 0, id64));
                }
            }
            abi::OPTEE_SMC_RPC_FUNC_FREE => {
                let cookie = regpair(r[1], r[2]);
                match v.rpc_args.remove(&cookie) {
                    Some(ra) => {
                        self.pages.free(ra.page);
                        call.state = CallState::Waiting(Wait::Free);
                        let (hi, lo) = split_regpair(cookie);
                        return Next::Reply(ok_regs(a0, hi, lo, id64));
                    }
                    None => {
                        // Not this VM's: another VM's cookie (a thread-kept RPC argument,
                        // impossible with OP-TEE's cache off) or a stale one. The guest
                        // would free whatever the value names: answer as if it had freed it.
                        trap.fault = Some(Fault::UnknownCookie);
                        [0, 0, call.resume[1], call.resume[2]]
                    }
                }
            }
            abi::OPTEE_SMC_RPC_FUNC_FOREIGN_INTR => {
                call.state = CallState::Waiting(Wait::ForeignIntr);
                return Next::Reply(ok_regs(a0, 0, 0, id64));
            }
            abi::OPTEE_SMC_RPC_FUNC_CMD => {
                let cookie = regpair(r[1], r[2]);
                match self.rpc_cmd_to_guest(v, mem, id, cookie) {
                    Ok(rpc) => {
                        if T::ENABLED && self.trace.msg_on() {
                            self.trace_rpc(vm, id, MsgDir::Rpc, (&rpc, &rpc), &[]);
                        }
                        if let Some(call) = v.calls.get_mut(&id) {
                            call.state = CallState::Waiting(Wait::Cmd { cookie, rpc });
                        }
                        let (hi, lo) = split_regpair(cookie);
                        return Next::Reply(ok_regs(a0, hi, lo, id64));
                    }
                    Err(()) => {
                        // Could not hand it to the guest: OP-TEE sees the command fail.
                        self.fail_rpc_cmd(v, id, cookie, abi::TEEC_ERROR_GENERIC);
                        let resume = v.calls.get(&id).map(|c| c.resume).unwrap_or_default();
                        [0, 0, resume[1], resume[2]]
                    }
                }
            }
            _ => [0, 0, call.resume[1], call.resume[2]],
        };
        // Answer OP-TEE ourselves, within the trap's budget.
        trap.internal_resumes += 1;
        if trap.internal_resumes > self.limits.max_internal_resumes {
            if let Some(call) = v.calls.get_mut(&id) {
                call.state = CallState::Waiting(Wait::Pending {
                    a1: answer[0],
                    a2: answer[1],
                    a4: answer[2],
                    a5: answer[3],
                });
            }
            return Next::Reply(ok_regs(
                abi::rpc_val(abi::OPTEE_SMC_RPC_FUNC_FOREIGN_INTR),
                0,
                0,
                id64,
            ));
        }
        let resume = v.calls.get(&id).map(|c| c.resume).unwrap_or_default();
        Next::Forward(resume_regs(client, &resume, answer), Awaiting::Call(id))
    }

    /// RETURN_FROM_RPC to OP-TEE, issued directly (only while a dying VM is unwound, with
    /// no lock held).
    fn forward_resume(&self, client: u64, resume: &[u64; 4], answer: [u64; 4]) -> [u64; 8] {
        self.monitor.call(resume_regs(client, resume, answer))
    }

    /// OP-TEE asked for an RPC command: read its request from the shadow, act on what
    /// concerns the mediator (SHM_FREE), and copy the request to the guest's buffer.
    fn rpc_cmd_to_guest<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        id: u32,
        cookie: u64,
    ) -> Result<MsgArg, ()> {
        let (page, off, size, guest, goff) = rpc_slot(v, id, cookie).ok_or(())?;
        let mut bytes = alloc::vec![0u8; size];
        self.pages.read(page, off, &mut bytes);
        let header = MsgArgHeader::parse(&bytes).map_err(|_| ())?;
        let n = header.num_params as usize;
        if header.num_params > self.limits.max_params || arg_size(n) > size {
            return Err(());
        }
        let rpc = MsgArg::parse(&bytes[..arg_size(n)]).map_err(|_| ())?;
        guest
            .write(mem, goff, &bytes[..arg_size(n)])
            .map_err(|_| ())?;
        if rpc.header.cmd == abi::OPTEE_RPC_CMD_SHM_FREE {
            // OP-TEE dropped its reference before asking: release our pins now.
            if let Some(p) = rpc.params.first() {
                let c = p.u1;
                if v.bufs.get(&c).is_some_and(|b| b.kind == BufKind::RpcAlloc) {
                    if let Some(b) = v.bufs.remove(&c) {
                        release_buffer(mem, v, &b);
                    }
                    v.optee_map.release(Owner::Rpc(c));
                }
            }
        }
        Ok(rpc)
    }

    /// Call `id` returned from OP-TEE with `a0`: commit, copy back, release (`complete_call`).
    fn complete<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        id: u32,
        a0: u32,
    ) -> [u64; 4] {
        if let Some(call) = v.calls.remove(&id) {
            self.complete_call(vm, v, mem, (id, call), a0);
        }
        err_regs(a0)
    }

    /// `call` (handle `id`, already out of `v.calls`) is over with OP-TEE's `a0`: commit a
    /// REGISTER_SHM or UNREGISTER_SHM that OP-TEE accepted, copy the results back to the
    /// guest, release what the call holds. Its RPC arguments (if OP-TEE kept any) no longer
    /// belong to an open call.
    fn complete_call<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        (id, mut call): (u32, Box<Call>),
        a0: u32,
    ) {
        for ra in v.rpc_args.values_mut().filter(|ra| ra.call == Some(id)) {
            ra.call = None;
        }
        // OP-TEE has unmapped the call's memrefs by the time it returns.
        v.optee_map.release(Owner::Call(id));
        // OP-TEE's answer, read as the call's own parameter count (what OP-TEE's header
        // says is not trusted to size anything).
        let n = call.arg.len();
        let read = match call.out.load(n) {
            Ok(w) => {
                self.pages.read_words(&call.shadow, 0, w);
                true
            }
            Err(_) => false,
        };
        call.out.set_len(n);
        let success = a0 == abi::OPTEE_SMC_RETURN_OK;
        let accepted = success && read && call.out.header().ret == abi::TEEC_SUCCESS;
        if accepted {
            if let Some(c) = call.register.take() {
                if let Some(b) = v.bufs.get_mut(&c) {
                    b.state = BufState::Live;
                }
            }
            if let Some(c) = call.unregister.take() {
                if let Some(b) = v.bufs.remove(&c) {
                    release_buffer(mem, v, &b);
                }
            }
        }
        if success && read {
            copy_back(mem, &mut call);
            if T::ENABLED && self.trace.msg_on() {
                self.trace_return(vm, id, &call);
            }
        }
        self.release_call_resources(mem, v, call);
    }

    // -------------------------------------------------------------------------------------
    // RPC answers from the guest.
    // -------------------------------------------------------------------------------------

    fn resume<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        regs: &[u64; 8],
        trap: &mut Trap,
    ) -> Next {
        // The handle is the a3 we gave the guest; it can only name this VM's calls. A call
        // whose SMC is in flight on a sibling vCPU is `Running`: not resumable.
        let id = regs[3] as u32;
        let waiting = v.calls.get_mut(&id).and_then(|call| {
            match core::mem::replace(&mut call.state, CallState::Running) {
                CallState::Waiting(w) => Some(w),
                CallState::Running => None,
            }
        });
        let Some(wait) = waiting else {
            if let Some(i) = v.reaped.iter().position(|(h, _)| *h == id) {
                // Reaped while parked: OP-TEE has failed it. Say so in the guest's message as
                // the communication layer (the mediator, origin COMMS) that cut the call.
                // Not TARGET_DEAD: that tells the client its TA died and the session is
                // gone, which the mediator does not know (the TA saw its RPCs fail and may
                // have returned cleanly; its session may well live on).
                let (_, guest) = v.reaped.remove(i);
                fail_in_guest(mem, &guest, abi::TEEC_ERROR_COMMUNICATION);
                trap.fault = Some(Fault::Reaped);
                return Next::Reply(err_regs(Fault::Reaped.smc_code()));
            }
            trap.fault = Some(Fault::BadResume);
            return Next::Reply(err_regs(Fault::BadResume.smc_code()));
        };
        let resume = v.calls.get(&id).map(|c| c.resume).unwrap_or_default();
        let preserved = [0, 0, resume[1], resume[2]];
        let answer = match wait {
            Wait::Alloc { size } => self.rpc_alloc(v, mem, id, regs, size, trap),
            Wait::Free | Wait::ForeignIntr => preserved,
            Wait::Pending { a1, a2, a4, a5 } => [a1, a2, a4, a5],
            Wait::Cmd { cookie, rpc } => {
                self.rpc_cmd_from_guest(vm, v, mem, (id, cookie), &rpc, trap);
                preserved
            }
        };
        Next::Forward(
            resume_regs(vm.client_id(), &resume, answer),
            Awaiting::Call(id),
        )
    }

    /// The guest answered RPC_FUNC_ALLOC with a buffer (a1/a2) and cookie (a4/a5). OP-TEE
    /// gets a hypervisor page instead; the guest's buffer only ever receives copies.
    fn rpc_alloc<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        id: u32,
        regs: &[u64; 8],
        size: u64,
        trap: &mut Trap,
    ) -> [u64; 4] {
        let ipa = regpair(regs[1], regs[2]);
        let cookie = regpair(regs[4], regs[5]);
        if ipa == 0 {
            // The guest could not allocate: OP-TEE sees the failure.
            return [0; 4];
        }
        match self.try_rpc_alloc(v, mem, id, ipa, cookie, size) {
            Ok(pa) => {
                let (hi, lo) = split_regpair(pa);
                let (chi, clo) = split_regpair(cookie);
                [hi, lo, chi, clo]
            }
            Err(f) => {
                trap.fault = Some(f);
                [0; 4]
            }
        }
    }

    fn try_rpc_alloc<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        id: u32,
        ipa: u64,
        cookie: u64,
        size: u64,
    ) -> Result<u64, Fault> {
        if !ipa.is_multiple_of(abi::NONCONTIG_PAGE_SIZE) {
            return Err(Fault::Unaligned);
        }
        if v.rpc_args.contains_key(&cookie) {
            return Err(Fault::CookieInUse);
        }
        if v.rpc_args.len() as u32 >= self.limits.max_rpc_args_per_vm {
            return Err(Fault::Limit);
        }
        // The buffer must be the VM's RAM: requests are copied into it, answers out of it.
        let mut probe = alloc::vec![0u8; size as usize];
        mem.read(Ipa(ipa), &mut probe)
            .map_err(|_| Fault::BadAddress)?;
        let page = self.pages.alloc().ok_or(Fault::NoMemory)?;
        let pa = page.phys().raw();
        v.rpc_args.insert(
            cookie,
            RpcArg {
                ipa: Ipa(ipa),
                size: size as usize,
                page,
                call: Some(id),
            },
        );
        Ok(pa)
    }

    /// The guest answered an RPC command: build OP-TEE's answer in the shadow from what
    /// OP-TEE asked, taking from the guest only what the protocol lets it set.
    fn rpc_cmd_from_guest<G: GuestMemory>(
        &self,
        vm: VmId,
        v: &mut Vm,
        mem: &mut G,
        (id, cookie): (u32, u64),
        rpc: &MsgArg,
        trap: &mut Trap,
    ) {
        let Some((_, _, _, loc, goff)) = rpc_slot(v, id, cookie) else {
            return;
        };
        let n = rpc.params.len();
        let mut bytes = alloc::vec![0u8; arg_size(n)];
        let guest = loc
            .read(mem, goff, &mut bytes)
            .ok()
            .and_then(|_| MsgArg::parse_n(&bytes, n).ok());
        let mut resp = rpc.clone();
        match &guest {
            None => {
                trap.fault = Some(Fault::BadAddress);
                resp.header.ret = abi::TEEC_ERROR_GENERIC;
            }
            Some(g) => {
                resp.header.ret = g.header.ret;
                resp.header.ret_origin = g.header.ret_origin;
                if rpc.header.cmd == abi::OPTEE_RPC_CMD_SHM_ALLOC {
                    if g.header.ret == abi::TEEC_SUCCESS {
                        match self.rpc_shm_alloc(v, mem, id, rpc, g, trap) {
                            Ok(p) => resp.params[0] = p,
                            Err(f) => {
                                trap.fault = Some(f);
                                resp.header.ret = f.teec_code();
                                if let Some(p) = resp.params.first_mut() {
                                    *p = MsgParam {
                                        attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                                        ..Default::default()
                                    };
                                }
                            }
                        }
                    }
                } else {
                    for (sent, got) in resp.params.iter_mut().zip(g.params.iter()) {
                        match sent.kind() {
                            Some(ParamKind::Value { output: true }) => {
                                sent.u0 = got.u0;
                                sent.u1 = got.u1;
                                sent.u2 = got.u2;
                            }
                            Some(
                                ParamKind::Rmem { output: true, .. }
                                | ParamKind::Tmem { output: true, .. },
                            ) => {
                                sent.u1 = got.u1;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if T::ENABLED && self.trace.msg_on() {
            let allocated = (rpc.header.cmd == abi::OPTEE_RPC_CMD_SHM_ALLOC)
                .then(|| resp.params.first())
                .flatten()
                .filter(|p| p.is_noncontig() && p.u0 != 0)
                .and_then(|p| {
                    let b = v.bufs.get(&p.u2)?;
                    let lists = &v.calls.get(&id)?.lists;
                    Some(self.list_pairs(lists, p.u0, &b.pinned.ipas))
                })
                .unwrap_or_default();
            let g = guest.as_ref().unwrap_or(rpc);
            self.trace_rpc(vm, id, MsgDir::RpcAnswer, (g, &resp), &allocated);
        }
        if let Some((page, off, _, _, _)) = rpc_slot(v, id, cookie) {
            self.pages.write(page, off, &resp.to_bytes());
        }
    }

    /// OPTEE_RPC_CMD_SHM_ALLOC answered: the guest's param 0 must be a NONCONTIG TMEM
    /// output at least as large as requested, with a fresh cookie.
    fn rpc_shm_alloc<G: GuestMemory>(
        &self,
        v: &mut Vm,
        mem: &mut G,
        id: u32,
        rpc: &MsgArg,
        g: &MsgArg,
        trap: &mut Trap,
    ) -> Result<MsgParam, Fault> {
        let want = rpc.params.first().map(|p| p.u1).ok_or(Fault::BadParam)?;
        let p = *g.params.first().ok_or(Fault::BadParam)?;
        if p.attr != abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT | abi::OPTEE_MSG_ATTR_NONCONTIG
            || p.u1 < want
        {
            return Err(Fault::BadParam);
        }
        let cookie = p.u2;
        let mut list = Vec::new();
        let buf_ptr = self.register_buffer(
            v,
            mem,
            trap,
            (cookie, BufKind::RpcAlloc, BufState::Live),
            (p.u0, p.u1),
            &mut list,
        )?;
        // OP-TEE maps what it asked for as soon as it gets it: it must fit, or OP-TEE gets
        // the allocation failure instead.
        let pages = v
            .bufs
            .get(&cookie)
            .map_or(0, |b| b.pinned.ipas.len() as u32);
        if v.optee_map.admit(Owner::Rpc(cookie), &[pages]).is_err() {
            if let Some(b) = v.bufs.remove(&cookie) {
                release_buffer(mem, v, &b);
            }
            free_pages(&self.pages, list);
            return Err(Fault::Limit);
        }
        match v.calls.get_mut(&id) {
            Some(c) => c.lists.extend(list),
            None => free_pages(&self.pages, list),
        }
        Ok(MsgParam {
            attr: p.attr,
            u0: buf_ptr,
            u1: p.u1,
            u2: cookie,
        })
    }
}

/// RETURN_FROM_RPC to OP-TEE: a1/a2/a4/a5 from `answer`, a3/a6 replayed from OP-TEE's own
/// resume registers, a7 the client id. Nothing comes from guest registers.
fn resume_regs(client: u64, resume: &[u64; 4], answer: [u64; 4]) -> [u64; 8] {
    [
        u64::from(abi::OPTEE_SMC_RETURN_FROM_RPC),
        answer[0],
        answer[1],
        resume[0],
        answer[2],
        answer[3],
        resume[3],
        client,
    ]
}

/// Where call `id`'s RPC argument is: (shadow page, offset in it, size, guest location,
/// offset there). Inline after the argument for CALL_WITH_RPC_ARG/REGD_ARG calls, else the
/// RPC_FUNC_ALLOC buffer named by `cookie`.
fn rpc_slot(v: &Vm, id: u32, cookie: u64) -> Option<(&HvPage, usize, usize, GuestLoc, usize)> {
    let call = v.calls.get(&id)?;
    match call.inline_rpc {
        Some(size) => {
            let off = arg_size(call.arg.len());
            Some((&call.shadow, off, size, call.guest, off))
        }
        None => {
            let ra = v.rpc_args.get(&cookie)?;
            Some((&ra.page, 0, ra.size, GuestLoc::Ipa(ra.ipa), 0))
        }
    }
}

/// CALL_WITH_REGD_ARG: the argument is at `offs` in this VM's live buffer `cookie`.
fn regd_loc(v: &Vm, cookie: u64, offs: u64) -> Result<GuestLoc, Fault> {
    let b = v
        .bufs
        .get(&cookie)
        .filter(|b| b.state == BufState::Live)
        .ok_or(Fault::BadAddress)?;
    if offs >= b.pinned.size {
        return Err(Fault::BadAddress);
    }
    let pos = b.pinned.offset + offs;
    let first = (pos / abi::NONCONTIG_PAGE_SIZE) as usize;
    // An argument plus its RPC argument fit one page, so they span at most two.
    let mut pages = [Ipa(0); 2];
    let mut npages = 0;
    for (slot, ipa) in pages.iter_mut().zip(b.pinned.ipas.iter().skip(first)) {
        *slot = *ipa;
        npages += 1;
    }
    Ok(GuestLoc::InBuffer {
        pages,
        npages,
        offset: pos % abi::NONCONTIG_PAGE_SIZE,
        limit: b.pinned.size - offs,
    })
}

/// Allocate a call handle not in use (handles are per VM and only name this VM's calls),
/// nor naming a reaped call the guest may still resume.
fn alloc_call_id(v: &mut Vm) -> u32 {
    loop {
        let id = v.next_call;
        v.next_call = v.next_call.wrapping_add(1);
        if !v.calls.contains_key(&id) && !v.reaped.iter().any(|(h, _)| *h == id) {
            return id;
        }
    }
}

/// CALL_WITH_ARG, or CALL_WITH_RPC_ARG with the inline RPC argument, naming `call`'s shadow
/// page; a7 is the VM's client id.
fn entry_regs(vm: VmId, call: &Call) -> [u64; 8] {
    let fid = match call.inline_rpc {
        Some(_) => abi::OPTEE_SMC_CALL_WITH_RPC_ARG,
        None => abi::OPTEE_SMC_CALL_WITH_ARG,
    };
    let (hi, lo) = split_regpair(call.shadow.phys().raw());
    [
        u64::from(fid),
        hi,
        lo,
        OPTEE_SMC_SHM_CACHED,
        0,
        0,
        0,
        vm.client_id(),
    ]
}

/// CALL_WITH_RPC_ARG / CALL_WITH_REGD_ARG: the inline RPC argument (`size` bytes right after
/// the `arg_len`-byte argument, where requests are copied to and answers from) must be the
/// VM's RAM too, as a bad argument address is: `BadAddress`. Argument and RPC argument fit
/// one page together (`inline_rpc_size`), so the area ends at most one page past the
/// argument's pages, which `copy_in_arg` read: probing its last byte covers every page it
/// spans, and, inside a registered buffer, the buffer's end.
fn probe_inline_rpc<G: GuestMemory>(
    mem: &G,
    loc: &GuestLoc,
    arg_len: usize,
    size: usize,
) -> Result<(), Fault> {
    let last = (arg_len + size).checked_sub(1).ok_or(Fault::BadAddress)?;
    loc.read(mem, last, &mut [0u8; 1])
}

/// Tell the guest its call failed with `code`, origin COMMS, in its message (if it can be
/// written: the guest may have made it unwritable, which only hurts itself).
fn fail_in_guest<G: GuestMemory>(mem: &mut G, guest: &GuestLoc, code: u32) {
    let _ = guest.write(mem, abi::ARG_OFFSET_RET, &code.to_le_bytes());
    let _ = guest.write(
        mem,
        abi::ARG_OFFSET_RET_ORIGIN,
        &abi::TEEC_ORIGIN_COMMS.to_le_bytes(),
    );
}

/// Drop the pins reaped calls left for this VM's own trap (`Vm::unpin_later`).
fn release_deferred<G: GuestMemory>(mem: &mut G, v: &mut Vm) {
    for ipa in core::mem::take(&mut v.unpin_later) {
        mem.unpin(ipa);
        v.pinned -= 1;
    }
}

fn release_buffer<G: GuestMemory>(mem: &mut G, v: &mut Vm, b: &Buffer) {
    unpin_all(mem, &b.pinned);
    v.pinned -= b.pinned.ipas.len() as u32;
}

/// Check the attribute word of a guest parameter: a known type, META only on values,
/// NONCONTIG only on TMEM, no other bit (cache attributes must be PREDEFINED).
fn check_attr(p: &MsgParam) -> Result<ParamKind, Fault> {
    let kind = p.kind().ok_or(Fault::BadParam)?;
    let known =
        abi::OPTEE_MSG_ATTR_TYPE_MASK | abi::OPTEE_MSG_ATTR_META | abi::OPTEE_MSG_ATTR_NONCONTIG;
    if p.attr & !known != 0 {
        return Err(Fault::BadParam);
    }
    if p.attr & abi::OPTEE_MSG_ATTR_META != 0 && !matches!(kind, ParamKind::Value { .. }) {
        return Err(Fault::BadParam);
    }
    if p.is_noncontig() && !matches!(kind, ParamKind::Tmem { .. }) {
        return Err(Fault::BadParam);
    }
    Ok(kind)
}

/// Copy back to the guest what OP-TEE may change: ret, ret_origin, the session of
/// OPEN_SESSION, value outputs and memref output sizes, by the types of the validated copy.
/// Everything else is written back as the guest sent it (the validated copy, the guest's
/// own view: its IPAs, never a physical address), so the whole message goes back in one
/// word copy instead of a copy per field. The call is over: its copy is patched in place
/// from OP-TEE's answer (`call.out`).
fn copy_back<G: GuestMemory>(mem: &mut G, call: &mut Call) {
    let res = &call.out;
    let got = res.header();
    let arg = &mut call.arg;
    arg.set_ret(got.ret, got.ret_origin);
    if arg.cmd() == abi::OPTEE_MSG_CMD_OPEN_SESSION {
        arg.set_session(got.session);
    }
    for i in 0..arg.len().min(res.len()) {
        if call.value_out & (1 << i) != 0 {
            let r = res.param(i);
            arg.set_value(i, r.u0, r.u1, r.u2);
        } else if call.size_out & (1 << i) != 0 {
            arg.set_size(i, res.param(i).u1);
        }
    }
    // The guest may have made its message unwritable, which only hurts itself.
    let _ = call.guest.write_words(mem, 0, call.arg.words());
}
