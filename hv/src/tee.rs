// SPDX-License-Identifier: MIT OR Apache-2.0
//! The OP-TEE mediator, wired in: the `mediator` crate's ports over real hardware.
//!
//! ```text
//!   guest SMC (owner: trusted OS) ─► trap ─► tee::call ─► Mediator::handle_smc
//!        SecureMonitor = `smc` from EL2          GuestMemory = dom0's stage-2 + pins
//!        HvPages       = page-aligned heap pages (identity-mapped: VA == PA)
//! ```
//!
//! One mediator serves every domain; calls into it are serialized by its lock. That lock
//! may be held across an `smc`: OP-TEE never blocks in the secure world waiting for the
//! normal world (it returns an RPC instead), so a caller on another CPU waits at most one
//! secure-world slice.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicBool, Ordering};
use mediator::{
    Access, GuestMemory, HvPage, HvPages, Ipa, Limits, Mediator, MemFault, PhysAddr, SecureMonitor,
    SmcRecord, Trace, VmId,
};
use spin::Mutex;

use crate::arch::{self, TrapFrame};
use crate::domain::Domain;

const PAGE: usize = 4096;

/// `trace=smc` on moat's command line: log every mediated call.
static TRACE_SMC: AtomicBool = AtomicBool::new(false);

/// The mediator, once OP-TEE has been probed and found suitable.
static MEDIATOR: Mutex<Option<Mediator<Monitor, Pages, Tracer>>> = Mutex::new(None);

/// `smc #0` to EL3.
pub struct Monitor;

impl SecureMonitor for Monitor {
    fn call(&mut self, regs: [u64; 8]) -> [u64; 8] {
        arch::smc(regs)
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
    fn alloc(&mut self) -> Option<HvPage> {
        // SAFETY: a non-zero-sized, page-aligned layout.
        let p = unsafe { alloc_zeroed(page_layout()) };
        (!p.is_null()).then(|| HvPage::new(PhysAddr(p as u64)))
    }

    fn write(&mut self, page: &HvPage, offset: usize, data: &[u8]) {
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

    fn free(&mut self, page: HvPage) {
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

/// Is `page` a page-aligned page of moat's heap (where `alloc` takes them)? A cheap guard
/// against a forged `HvPage` (its constructor is public in the pure crate).
fn ours(page: &HvPage) -> bool {
    let pa = page.phys().raw();
    pa.is_multiple_of(PAGE as u64) && crate::mem::heap_contains(pa, PAGE as u64)
}

/// Logs mediated calls when `trace=smc` is set.
pub struct Tracer;

impl Trace for Tracer {
    const ENABLED: bool = true;
    fn smc(&mut self, r: &SmcRecord) {
        if TRACE_SMC.load(Ordering::Relaxed) {
            log::info!(
                "smc: d{} {} ({:#010x}) a1..a6 {:x?}, {} pages translated -> {} ({:#x}){}",
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
                }
            );
        }
    }
}

/// A domain's memory as the mediator sees it: translated through its stage-2, with pins.
pub struct DomainMemory<'a> {
    dom: &'a Domain,
}

impl DomainMemory<'_> {
    fn translate(&self, ipa: u64, access: Access) -> Result<u64, MemFault> {
        let (pa, attrs) = self
            .dom
            .stage2
            .translate(hv_core::addr::Ipa(ipa))
            .ok_or(MemFault::NotRam)?;
        if attrs != hv_core::stage2::Attrs::RAM {
            // Device memory or a narrower permission is never a buffer OP-TEE may use.
            let _ = access;
            return Err(MemFault::NotRam);
        }
        Ok(pa.raw())
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

    fn pin(&mut self, ipa: Ipa, access: Access) -> Result<PhysAddr, MemFault> {
        let pa = self.translate(ipa.raw(), access)?;
        *self
            .dom
            .pins
            .lock()
            .entry(ipa.raw() & !(PAGE as u64 - 1))
            .or_insert(0) += 1;
        Ok(PhysAddr(pa))
    }

    fn unpin(&mut self, ipa: Ipa) {
        let mut pins = self.dom.pins.lock();
        let key = ipa.raw() & !(PAGE as u64 - 1);
        if let Some(n) = pins.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&key);
            }
        }
    }
}

/// Pin counts per guest page (IPA): a pinned page must stay mapped while OP-TEE uses it.
pub type Pins = Mutex<BTreeMap<u64, u32>>;

/// Probe OP-TEE and announce dom0. Returns a line for the banner.
pub fn init(trace_smc: bool) -> Result<mediator::Probe, mediator::Error> {
    TRACE_SMC.store(trace_smc, Ordering::Relaxed);
    let m = Mediator::probe(Monitor, Pages, Tracer, Limits::default())?;
    let probe = m.probe_result();
    *MEDIATOR.lock() = Some(m);
    Ok(probe)
}

/// Tell OP-TEE about a new domain (before it runs).
pub fn vm_created(id: u16) -> Result<(), mediator::Error> {
    match MEDIATOR.lock().as_mut() {
        Some(m) => m.vm_created(VmId(id)),
        None => Err(mediator::Error::NotProbed),
    }
}

/// Is the mediator up?
pub fn available() -> bool {
    MEDIATOR.lock().is_some()
}

/// A trusted-OS SMC from `dom`: mediate it. False if there is no mediator.
pub fn call(dom: &Domain, frame: &mut TrapFrame) -> bool {
    let mut guard = MEDIATOR.lock();
    let Some(m) = guard.as_mut() else {
        return false;
    };
    let mut regs = [0u64; 8];
    regs.copy_from_slice(&frame.x[..8]);
    let mut mem = DomainMemory { dom };
    let out = m.handle_smc(VmId(dom.id.0), &mut mem, regs);
    frame.x[..8].copy_from_slice(&out);
    true
}
