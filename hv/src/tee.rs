// SPDX-License-Identifier: MIT OR Apache-2.0
//! The OP-TEE mediator, wired in: the `mediator` crate's ports over real hardware.
//!
//! ```text
//!   guest SMC (owner: trusted OS) ─► trap ─► tee::call ─► Mediator::handle_smc
//!        SecureMonitor = `smc` from EL2          GuestMemory = the domain's stage-2 + pins
//!        HvPages       = page-aligned heap pages (identity-mapped: VA == PA)
//!        Lock          = `TicketLock` (fair: waiters are served in arrival order)
//! ```
//!
//! One mediator serves every domain and needs no lock of its own: its shared part (probe
//! results, limits, these ports) is immutable after boot and the page pool is the heap,
//! which locks itself. Each domain's mediator state sits behind its own `TicketLock`,
//! taken only for the prepare and complete steps around each `smc` and never across one,
//! so several vCPUs (of one domain or of several) are in OP-TEE at once. A vCPU waits at
//! most for one such step of another vCPU of its own domain (bounded by the trap's page
//! budget), never for the secure world.
//!
//! The mediator's clock (`now_ms`, for how long a call has been parked in an RPC, see
//! `Limits::max_park_ms`) is the generic timer's physical count in milliseconds:
//! CNTPCT_EL0 divided by the ticks per millisecond (CNTFRQ_EL0 / 1000, read once at
//! `init`), one hardware division per trap. The count is the same on every CPU.

use alloc::alloc::{alloc, dealloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use mediator::{
    Access, GuestMemory, HvPage, HvPages, Ipa, Limits, Lock, Mediator, MemFault, PhysAddr,
    SecureMonitor, SmcRecord, Trace, VmId, VmStats,
};
use spin::{Mutex, Once};

use crate::arch::{self, TrapFrame};
use crate::domain::Domain;

const PAGE: usize = 4096;

/// `trace=smc` on moat's command line: log every mediated call.
static TRACE_SMC: AtomicBool = AtomicBool::new(false);

/// `trace=msg` (`--trace smc=msg`): log every OP-TEE message decoded, pages as IPA -> PA.
static TRACE_MSG: AtomicBool = AtomicBool::new(false);

/// Generic-timer ticks per millisecond (CNTFRQ_EL0 / 1000, at least 1), set by `init`.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(1);

/// The mediator, once OP-TEE has been probed and found suitable. Set once at boot, then
/// only read: no lock.
static MEDIATOR: Once<Mediator<Monitor, Pages, HvLock, Tracer>> = Once::new();

/// `smc #0` to EL3, from any CPU (several at once: OP-TEE runs one thread per call).
pub struct Monitor;

impl SecureMonitor for Monitor {
    fn call(&self, regs: [u64; 8]) -> [u64; 8] {
        arch::smc(regs)
    }
}

/// A fair spin lock: a ticket per waiter, served in order, so a vCPU waiting for its
/// domain's mediator state is never overtaken indefinitely by a sibling vCPU. Held only
/// for one bounded mediator step, never across an `smc` or a guest entry.
pub struct TicketLock<T> {
    /// The next ticket to hand out.
    next: AtomicU32,
    /// The ticket that holds the lock.
    serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: `with` gives out the `&mut T` to one ticket holder at a time (the Acquire load of
// `serving` pairs with the previous holder's Release), so sharing the lock between CPUs is
// sound whenever `T` itself may move between them.
unsafe impl<T: Send> Sync for TicketLock<T> {}

impl<T> TicketLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        Self {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Run `f` with the lock held; waits its turn.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        while self.serving.load(Ordering::Acquire) != ticket {
            core::hint::spin_loop();
        }
        // SAFETY: `serving == ticket` and tickets are unique, so this CPU is the only
        // holder until it bumps `serving` below; the reference does not outlive `f`.
        let r = f(unsafe { &mut *self.value.get() });
        self.serving
            .store(ticket.wrapping_add(1), Ordering::Release);
        r
    }
}

/// The mediator's locks in `hv`: ticket locks (interrupts are masked at EL2, so a holder
/// is never preempted on its CPU).
pub struct HvLock;

impl Lock for HvLock {
    type Mutex<T> = TicketLock<T>;

    fn new<T>(value: T) -> TicketLock<T> {
        TicketLock::new(value)
    }

    fn with<T, R>(mutex: &TicketLock<T>, f: impl FnOnce(&mut T) -> R) -> R {
        mutex.with(f)
    }
}

/// Hypervisor-owned pages for shadow messages and rebuilt page lists: page-aligned heap
/// allocations, whose address is their physical address (EL2 is identity-mapped).
pub struct Pages;

fn page_layout() -> Layout {
    // 4096 is a power of two and a multiple of itself: this cannot fail.
    Layout::from_size_align(PAGE, PAGE).unwrap_or(Layout::new::<u8>())
}

impl HvPages for Pages {
    fn alloc(&self) -> Option<HvPage> {
        // SAFETY: a non-zero-sized, page-aligned layout.
        let p = unsafe { alloc(page_layout()) };
        if p.is_null() {
            return None;
        }
        // Zeroed as the port promises, with `dc zva` rather than the allocator's stores.
        // SAFETY: a fresh, page-aligned heap page (Normal, cacheable), ours alone.
        unsafe { arch::zero_page(p as u64) };
        Some(HvPage::new(PhysAddr(p as u64)))
    }

    fn write(&self, page: &HvPage, offset: usize, data: &[u8]) {
        let Some(end) = offset
            .checked_add(data.len())
            .filter(|&e| e <= PAGE && ours(page))
        else {
            log::error!(
                "mediator wrote outside a hypervisor page: {:#x}+{offset}",
                page.phys().raw()
            );
            return;
        };
        // SAFETY: `page` came from `alloc` (a live, page-sized heap block owned by the
        // mediator); `[offset, end)` is inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (page.phys().raw() as *mut u8).add(offset),
                end - offset,
            )
        };
    }

    fn read(&self, page: &HvPage, offset: usize, buf: &mut [u8]) {
        let Some(end) = offset
            .checked_add(buf.len())
            .filter(|&e| e <= PAGE && ours(page))
        else {
            log::error!(
                "mediator read outside a hypervisor page: {:#x}+{offset}",
                page.phys().raw()
            );
            return;
        };
        // SAFETY: as in `write`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (page.phys().raw() as *const u8).add(offset),
                buf.as_mut_ptr(),
                end - offset,
            )
        };
    }

    fn write_words(&self, page: &HvPage, offset: usize, data: &[u64]) {
        let Some(end) = word_span(page, offset, data.len()) else {
            log::error!(
                "mediator wrote words outside a hypervisor page: {:#x}+{offset}",
                page.phys().raw()
            );
            return;
        };
        // SAFETY: as in `write`; `offset` is 8-aligned in a page-aligned page, so the
        // destination is `u64`-aligned, and `[offset, end)` is inside the page.
        unsafe {
            arch::copy_words(
                (page.phys().raw() as *mut u8).add(offset).cast::<u64>(),
                data.as_ptr(),
                (end - offset) / 8,
            )
        };
    }

    fn read_words(&self, page: &HvPage, offset: usize, buf: &mut [u64]) {
        let Some(end) = word_span(page, offset, buf.len()) else {
            log::error!(
                "mediator read words outside a hypervisor page: {:#x}+{offset}",
                page.phys().raw()
            );
            return;
        };
        // SAFETY: as in `write_words`.
        unsafe {
            arch::copy_words(
                buf.as_mut_ptr(),
                (page.phys().raw() as *const u8).add(offset).cast::<u64>(),
                (end - offset) / 8,
            )
        };
    }

    fn free(&self, page: HvPage) {
        if !ours(&page) {
            log::error!(
                "mediator freed a page that is not a heap page: {:#x}",
                page.phys().raw()
            );
            return;
        }
        // SAFETY: `page` was allocated by `alloc` with the same layout and is given back
        // exactly once (HvPage is not Clone).
        unsafe { dealloc(page.phys().raw() as *mut u8, page_layout()) };
    }
}

/// The end of `words` words at byte `offset` of `page`, if `offset` is 8-aligned and they
/// fit the page, and the page is ours.
fn word_span(page: &HvPage, offset: usize, words: usize) -> Option<usize> {
    offset
        .checked_add(words.checked_mul(8)?)
        .filter(|&e| offset.is_multiple_of(8) && e <= PAGE && ours(page))
}

/// Is `page` a page-aligned page of moat's heap (where `alloc` takes them)? A cheap guard
/// against a forged `HvPage` (its constructor is public in the pure crate).
fn ours(page: &HvPage) -> bool {
    let pa = page.phys().raw();
    pa.is_multiple_of(PAGE as u64) && crate::mem::heap_contains(pa, PAGE as u64)
}

/// Logs mediated calls when `trace=smc` is set, and decoded messages when `trace=msg` is.
/// Off, each costs the mediator one flag load per trap: no record is built.
pub struct Tracer;

impl Trace for Tracer {
    const ENABLED: bool = true;
    fn smc_on(&self) -> bool {
        TRACE_SMC.load(Ordering::Relaxed)
    }
    fn msg_on(&self) -> bool {
        TRACE_MSG.load(Ordering::Relaxed)
    }
    fn msg(&self, r: &mediator::MsgRecord<'_>) {
        for line in mediator::msg_lines(r) {
            log::info!("msg: {line}");
        }
    }
    fn smc(&self, r: &SmcRecord) {
        {
            log::info!(
                "smc: d{} {} ({:#010x}) a1..a6 {:x?}, {} pages translated -> {} ({:#x}){}{}",
                r.vm.0,
                mediator::abi::function_name(r.func),
                r.func,
                r.args,
                r.pages_translated,
                mediator::abi::return_name(r.func, r.ret),
                r.ret,
                match r.fault {
                    Some(f) => alloc::format!(", guest fault: {f:?}"),
                    None => alloc::string::String::new(),
                },
                match r.reaped {
                    Some((vm, call)) => alloc::format!(
                        ", reaped d{}'s call {call} (parked past its deadline above its \
                         share of OP-TEE's threads)",
                        vm.0
                    ),
                    None => alloc::string::String::new(),
                }
            );
        }
    }
}

/// A domain's memory as the mediator sees it: translated through its stage-2, with pins.
///
/// One is made per trap, and remembers the last stage-2 leaf it translated through (a
/// 4 KiB page, or a 2 MiB or 1 GiB block): a call's header, its parameters and the copy
/// back are mostly on one page, and the pages of a buffer mostly in one block, so one
/// stage-2 walk serves them all. The domain's stage-2 cannot change during one of its own
/// traps (it is built before the domain runs and rebuilt only once every vCPU of it has
/// stopped).
pub struct DomainMemory<'a> {
    dom: &'a Domain,
    /// The last leaf that translated RAM: (its first IPA, its size - 1, its first PA);
    /// `NO_LEAF` before any.
    last: core::cell::Cell<(u64, u64, u64)>,
}

/// No leaf: a leaf's first IPA is never odd.
const NO_LEAF: (u64, u64, u64) = (1, 0, 0);

impl<'a> DomainMemory<'a> {
    fn new(dom: &'a Domain) -> Self {
        Self {
            dom,
            last: core::cell::Cell::new(NO_LEAF),
        }
    }
}

impl DomainMemory<'_> {
    fn translate(&self, ipa: u64, access: Access) -> Result<u64, MemFault> {
        let (base, mask, frame) = self.last.get();
        if ipa & !mask == base {
            return Ok(frame | (ipa & mask));
        }
        let leaf = self
            .dom
            .stage2
            .walk(hv_core::addr::Ipa(ipa))
            .ok_or(MemFault::NotRam)?;
        if leaf.attrs != hv_core::stage2::Attrs::RAM {
            // Device memory or a narrower permission is never a buffer OP-TEE may use.
            let _ = access;
            return Err(MemFault::NotRam);
        }
        let pa = leaf.pa.raw();
        let mask = leaf.size() - 1;
        self.last.set((ipa & !mask, mask, pa & !mask));
        Ok(pa)
    }

    fn copy(
        &self,
        ipa: u64,
        len: usize,
        access: Access,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemFault> {
        let mut done = 0;
        while done < len {
            let cur = ipa.checked_add(done as u64).ok_or(MemFault::NotRam)?;
            let in_page = (PAGE - (cur as usize % PAGE)).min(len - done);
            let pa = self.translate(cur, access)?;
            f(pa, done, in_page);
            done += in_page;
        }
        Ok(())
    }
}

impl GuestMemory for DomainMemory<'_> {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len();
        self.copy(ipa.raw(), len, Access::Read, |pa, off, n| {
            // SAFETY: `pa` is RAM of this domain per its stage-2 (checked by `translate`),
            // identity-mapped at EL2; `n` bytes stay inside that page.
            unsafe {
                core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr().add(off), n)
            };
        })
    }

    fn write(&mut self, ipa: Ipa, buf: &[u8]) -> Result<(), MemFault> {
        self.copy(ipa.raw(), buf.len(), Access::Write, |pa, off, n| {
            // SAFETY: as in `read`; the destination is the domain's own RAM.
            unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr().add(off), pa as *mut u8, n) };
        })
    }

    fn read_words(&self, ipa: Ipa, buf: &mut [u64]) -> Result<(), MemFault> {
        if !ipa.raw().is_multiple_of(8) {
            return Err(MemFault::NotRam);
        }
        self.copy(ipa.raw(), buf.len() * 8, Access::Read, |pa, off, n| {
            // SAFETY: as in `read`; `pa` is 8-aligned (an 8-aligned IPA in a page-aligned
            // frame) and pages split on 8-byte boundaries, so `off` and `n` are whole words.
            unsafe { arch::copy_words(buf.as_mut_ptr().add(off / 8), pa as *const u64, n / 8) };
        })
    }

    fn write_words(&mut self, ipa: Ipa, buf: &[u64]) -> Result<(), MemFault> {
        if !ipa.raw().is_multiple_of(8) {
            return Err(MemFault::NotRam);
        }
        self.copy(ipa.raw(), buf.len() * 8, Access::Write, |pa, off, n| {
            // SAFETY: as in `read_words`; the destination is the domain's own RAM.
            unsafe { arch::copy_words(pa as *mut u64, buf.as_ptr().add(off / 8), n / 8) };
        })
    }

    fn pin(&mut self, ipa: Ipa, access: Access) -> Result<PhysAddr, MemFault> {
        if !crate::mem::heap_has_room_for_pins() {
            return Err(MemFault::PinFailed);
        }
        let pa = self.translate(ipa.raw(), access)?;
        self.dom
            .pins
            .lock()
            .pin(ipa.raw())
            .map_err(|_| MemFault::NotRam)?;
        Ok(PhysAddr(pa))
    }

    fn unpin(&mut self, ipa: Ipa) {
        self.dom.pins.lock().unpin(ipa.raw());
    }

    fn pin_run(
        &mut self,
        ipas: &[u64],
        access: Access,
        pas: &mut [u64],
    ) -> Result<(), (usize, MemFault)> {
        // Once per run: a run is at most a chunk of a page list (tens of pins).
        if !crate::mem::heap_has_room_for_pins() {
            return Err((0, MemFault::PinFailed));
        }
        let mut pins = self.dom.pins.lock();
        for (i, (&ipa, pa)) in ipas.iter().zip(pas.iter_mut()).enumerate() {
            *pa = self.translate(ipa, access).map_err(|f| (i, f))?;
            pins.pin(ipa).map_err(|_| (i, MemFault::NotRam))?;
        }
        Ok(())
    }

    fn unpin_run(&mut self, ipas: &[Ipa]) {
        let mut pins = self.dom.pins.lock();
        for ipa in ipas {
            pins.unpin(ipa.raw());
        }
    }
}

/// Pin counts per guest page (IPA): a pinned page must stay mapped while OP-TEE uses it.
pub type Pins = Mutex<hv_core::pins::PinTable>;

/// Probe OP-TEE and start the mediator. Returns what the probe found, for the banner.
pub fn init(trace_smc: bool, trace_msg: bool) -> Result<mediator::Probe, mediator::Error> {
    TRACE_SMC.store(trace_smc, Ordering::Relaxed);
    TRACE_MSG.store(trace_msg, Ordering::Relaxed);
    TICKS_PER_MS.store((arch::counter_frequency() / 1000).max(1), Ordering::Relaxed);
    let m = Mediator::probe(Monitor, Pages, Tracer, Limits::default())?;
    Ok(MEDIATOR.call_once(|| m).probe_result())
}

/// Tell OP-TEE about a new domain (before it runs).
pub fn vm_created(id: u16) -> Result<(), mediator::Error> {
    MEDIATOR
        .get()
        .ok_or(mediator::Error::NotProbed)?
        .vm_created(VmId(id))
}

/// Release what `dom` holds in the mediator (parked calls unwound in OP-TEE, buffers, pins)
/// and send VM_DESTROYED. Call it after the domain's last vCPU stopped; a domain with an
/// SMC still in the secure world gets `CallsInFlight`, and nothing changes. While another
/// domain's trap is reaping one of its parked calls (at most `max_destroy_resumes` SMCs on
/// another CPU, which waits for no lock of ours) this waits for it to finish.
pub fn vm_destroyed(dom: &Domain) -> Result<(), mediator::Error> {
    let m = MEDIATOR.get().ok_or(mediator::Error::NotProbed)?;
    loop {
        match m.vm_destroyed(VmId(dom.id.0), &mut DomainMemory::new(dom)) {
            Err(mediator::Error::Reaping) => core::hint::spin_loop(),
            r => return r,
        }
    }
}

/// The mediator's clock: the generic timer's count in milliseconds (see the module doc).
fn now_ms() -> u64 {
    arch::counter() / TICKS_PER_MS.load(Ordering::Relaxed)
}

/// The mediator's counters for domain `id` (open calls, buffers, pins, SMCs in flight).
pub fn vm_stats(id: u16) -> Option<VmStats> {
    MEDIATOR.get()?.vm_stats(VmId(id))
}

/// Is the mediator up?
pub fn available() -> bool {
    MEDIATOR.get().is_some()
}

/// A trusted-OS SMC from `dom`: mediate it. False if there is no mediator. No lock is held
/// across the `smc`s this issues (see the module doc).
pub fn call(dom: &Domain, frame: &mut TrapFrame) -> bool {
    let Some(m) = MEDIATOR.get() else {
        return false;
    };
    let mut regs = [0u64; 8];
    regs.copy_from_slice(&frame.x[..8]);
    let mut mem = DomainMemory::new(dom);
    let out = m.handle_smc(VmId(dom.id.0), &mut mem, regs, now_ms());
    frame.x[..8].copy_from_slice(&out);
    true
}
