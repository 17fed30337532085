// SPDX-License-Identifier: MIT OR Apache-2.0
//! Everything that touches the CPU's own state at EL2: system registers, the EL2 MMU, the
//! exception vectors and the `smc`/`hvc`-level primitives. Register values are read here
//! once and handed to `hv-core` as plain values.

mod memcpy;
pub mod mmu;
pub mod regs;
pub mod vectors;

use core::arch::asm;

/// The general-purpose registers a guest had when it trapped, plus ELR_EL2 and SPSR_EL2.
/// The vector code in [`vectors`] saves and restores exactly this layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// Where the guest resumes (ELR_EL2).
    pub elr: u64,
    /// The guest's PSTATE (SPSR_EL2).
    pub spsr: u64,
    _pad: u64,
}

impl TrapFrame {
    /// All registers zero.
    pub const ZERO: Self = Self {
        x: [0; 31],
        elr: 0,
        spsr: 0,
        _pad: 0,
    };
}

/// `size_of::<TrapFrame>()`, used by the assembly.
pub const TRAP_FRAME_SIZE: usize = 34 * 8;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == TRAP_FRAME_SIZE);

/// The registers of an SMCCC call, as returned by the secure monitor.
pub type SmcRegs = [u64; 8];

/// Issue `smc #0` to EL3 with x0..x7 and return x0..x7.
pub fn smc(regs: SmcRegs) -> SmcRegs {
    let mut r = regs;
    // SAFETY: an SMC is a call into TF-A at EL3, which follows SMCCC: it reads x0..x7,
    // may clobber x0..x17 and returns results in x0..x7. All of those are declared here;
    // memory is only touched by the secure world as the called function defines.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
            inout("x4") r[4], inout("x5") r[5], inout("x6") r[6], inout("x7") r[7],
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    r
}

/// The generic timer's physical count (CNTPCT_EL0).
pub fn counter() -> u64 {
    use tock_registers::interfaces::Readable;
    aarch64_cpu::registers::CNTPCT_EL0.get()
}

/// The generic timer's frequency in Hz (CNTFRQ_EL0, set by the firmware).
pub fn counter_frequency() -> u64 {
    use tock_registers::interfaces::Readable;
    aarch64_cpu::registers::CNTFRQ_EL0.get()
}

tock_registers::register_bitfields! {u64,
    /// DCZID_EL0, the data cache zero ID register (Arm ARM D19.2.34).
    DCZID [
        /// DC ZVA is prohibited: moat then zeroes with stores.
        DZP OFFSET(4) NUMBITS(1) [],
        /// Log2 of the size of the block DC ZVA zeroes, in 4-byte words.
        BS OFFSET(0) NUMBITS(4) [],
    ]
}

/// Zero the 4 KiB page at `addr` with `dc zva`, a whole cache block per instruction: 64
/// instructions for a page with QEMU's 64-byte blocks, where a loop of stores takes hundreds.
///
/// # Safety
/// `addr` must be a page-aligned page of Normal, cacheable memory that moat owns (mapped
/// at EL2) and nothing else references while it is zeroed.
pub unsafe fn zero_page(addr: u64) {
    const PAGE: u64 = 4096;
    let raw: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe { asm!("mrs {}, dczid_el0", out(reg) raw, options(nomem, nostack)) };
    let id = tock_registers::LocalRegisterCopy::<u64, DCZID::Register>::new(raw);
    if id.is_set(DCZID::DZP) {
        // SAFETY: the caller gives a page moat owns and nothing else uses.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, PAGE as usize) };
        return;
    }
    let block = 4u64 << id.read(DCZID::BS);
    let mut a = addr;
    while a < addr + PAGE {
        // SAFETY: `a` is a block of the caller's page (page-aligned, so every block of it
        // is whole); `dc zva` writes zeros to that block and nothing else.
        unsafe { asm!("dc zva, {}", in(reg) a, options(nostack)) };
        a += block;
    }
}

/// Copy `words` 64-bit words from `src` to `dst`, 32 bytes per loop with load and store
/// pairs: the messages and page lists the mediator moves. The compiler's `memcpy` (this
/// target is built for strict alignment, with no vector registers at EL2) copies one
/// word per four instructions; this loop moves four per six, and the tail one word at a
/// time.
///
/// # Safety
/// `src` and `dst` must be 8-aligned, valid for `words` words (reads and writes
/// respectively) of Normal memory, and must not overlap.
pub unsafe fn copy_words(dst: *mut u64, src: *const u64, words: usize) {
    let blocks = words / 4;
    let (mut d, mut s) = (dst, src);
    if blocks > 0 {
        // SAFETY: the caller gives `blocks * 4` readable words at `s` and writable words at
        // `d`, aligned; the loop reads and writes exactly those, advancing both by 32 bytes.
        unsafe {
            asm!(
                "2:",
                "ldp {a}, {b}, [{s}], #16",
                "ldp {c}, {e}, [{s}], #16",
                "stp {a}, {b}, [{d}], #16",
                "stp {c}, {e}, [{d}], #16",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                s = inout(reg) s,
                d = inout(reg) d,
                n = inout(reg) blocks => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                e = out(reg) _,
                options(nostack),
            )
        };
    }
    for i in 0..words % 4 {
        // SAFETY: the last `words % 4` words of the caller's ranges.
        unsafe { d.add(i).write(s.add(i).read()) };
    }
}

/// Clean `[start, start + len)` to the point of coherency, for a reader with its MMU off
/// (a guest entering with caches off reads memory directly).
pub fn clean_dcache_range(start: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut a = start & !(line - 1);
    while a < start.saturating_add(len) {
        // SAFETY: `dc cvac` writes a dirty line back; it changes no data and the address is
        // mapped (the caller's range lies in RAM, identity-mapped at EL2).
        unsafe { asm!("dc cvac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    // SAFETY: a barrier only orders the cleans before what follows.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Wait for an interrupt (used when a vCPU is off or idle).
pub fn wfi() {
    // SAFETY: `wfi` only suspends the PE until a wake-up event; no memory effects.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) }
}

/// Wait for an event.
pub fn wfe() {
    // SAFETY: `wfe` only suspends the PE until an event; no memory effects.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) }
}

/// Stop this CPU for good.
pub fn park() -> ! {
    loop {
        wfe();
    }
}
