// SPDX-License-Identifier: MIT OR Apache-2.0
//! The physical GICv3, which moat owns (Arm IHI 0069, GICv3/v4 architecture spec).
//!
//! ```text
//!   device/timer IRQ ──► GICD/GICR ──► CPU interface ──(HCR_EL2.IMO=1)──► moat at EL2
//!      moat: ICC_IAR1 → priority drop (ICC_EOIR1, EOImode=1) → list register, HW=1
//!      guest: EOIs the virtual interrupt ──► hardware deactivates the physical one
//! ```
//!
//! The distributor is set up once (all SPIs group 1, disabled, routed to the boot CPU);
//! each CPU wakes its own redistributor and programs its CPU interface. A guest never
//! touches these frames: its accesses trap into the vGIC model (`hv_core::vgic`).

use core::arch::asm;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// GICD_CTLR, Non-secure view with ARE_NS = 1 (IHI 0069 §12.9.4).
    pub GICD_CTLR [
        /// Register write pending.
        RWP OFFSET(31) NUMBITS(1) [],
        /// Affinity routing for Non-secure state.
        ARE_NS OFFSET(4) NUMBITS(1) [],
        /// Enable Non-secure group 1 interrupts.
        EnableGrp1A OFFSET(1) NUMBITS(1) [],
    ],
    /// GICR_WAKER (IHI 0069 §12.11.42).
    pub GICR_WAKER [
        /// The redistributor's interfaces are quiescent.
        ChildrenAsleep OFFSET(2) NUMBITS(1) [],
        /// The PE is asleep: set by software before powering down.
        ProcessorSleep OFFSET(1) NUMBITS(1) [],
    ]
}

register_bitfields! {u64,
    /// GICR_TYPER (IHI 0069 §12.11.37).
    pub GICR_TYPER [
        /// The affinity value (Aff3.Aff2.Aff1.Aff0) of the PE this redistributor serves.
        Affinity OFFSET(32) NUMBITS(32) [],
        /// This is the last redistributor in the region.
        Last OFFSET(4) NUMBITS(1) [],
    ]
}

register_structs! {
    /// The distributor registers moat uses.
    pub GicdRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _r0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => ispendr: [ReadWrite<u32>; 32]),
        (0x0280 => icpendr: [ReadWrite<u32>; 32]),
        (0x0300 => _r2),
        (0x0380 => icactiver: [ReadWrite<u32>; 32]),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x0800 => _r3),
        (0x6000 => irouter: [ReadWrite<u64>; 1020]),
        (0x7fe0 => @END),
    }
}

register_structs! {
    /// A redistributor's RD_base frame.
    pub GicrRdRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _r0),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => @END),
    }
}

register_structs! {
    /// A redistributor's SGI_base frame (64 KiB after RD_base).
    pub GicrSgiRegs {
        (0x0000 => _r0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _r1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _r2),
        (0x0180 => icenabler0: ReadWrite<u32>),
        (0x0184 => _r3),
        (0x0280 => icpendr0: ReadWrite<u32>),
        (0x0284 => _r4),
        (0x0380 => icactiver0: ReadWrite<u32>),
        (0x0384 => _r5),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => @END),
    }
}

/// Size of one redistributor (RD_base + SGI_base frames).
const GICR_STRIDE: u64 = 0x2_0000;
/// Offset of SGI_base inside a redistributor.
const GICR_SGI_OFFSET: u64 = 0x1_0000;
/// Priority for every interrupt: moat takes them all at one level and does not nest.
const DEFAULT_PRIORITY: u8 = 0xa0;
/// The INTID the IAR returns when nothing is pending.
pub const SPURIOUS: u32 = 1023;
/// The physical SGI moat sends to another CPU to make it refill its list registers.
pub const KICK_SGI: u32 = 0;

/// The distributor.
pub struct Gicd {
    regs: &'static GicdRegs,
}

// SAFETY: MMIO registers, each access a single volatile load or store; the distributor's
// configuration is written by the primary CPU before any secondary runs, and afterwards
// only the per-interrupt enable/route registers are written, which the GIC makes atomic.
unsafe impl Sync for Gicd {}
// SAFETY: as above.
unsafe impl Send for Gicd {}

impl Gicd {
    /// # Safety
    /// `base` must be the GICD frame, mapped as device memory, owned by moat.
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: forwarded to the caller.
        let regs = unsafe { &*(base as *const GicdRegs) };
        Self { regs }
    }

    fn wait_rwp(&self) {
        // Bounded: the GIC finishes a CTLR write within a few cycles.
        for _ in 0..1_000_000 {
            if !self.regs.ctlr.is_set(GICD_CTLR::RWP) {
                return;
            }
            core::hint::spin_loop();
        }
        log::error!("GICD_CTLR.RWP stuck");
    }

    /// Number of interrupt lines (SGIs, PPIs and SPIs), from GICD_TYPER.ITLinesNumber.
    pub fn lines(&self) -> u32 {
        (((self.regs.typer.get() & 0x1f) + 1) * 32).min(1020)
    }

    /// Disable, group 1, default priority and route every SPI to `boot_affinity`; then
    /// turn affinity routing and group 1 on. Interrupts that belong to the secure world
    /// ignore these Non-secure writes.
    pub fn init(&self, boot_affinity: u64) {
        self.regs.ctlr.set(0);
        self.wait_rwp();
        let lines = self.lines();
        // Every SPI word, the last partial one included (INTIDs 992..1019).
        for n in 1..(lines as usize).div_ceil(32) {
            self.regs.icenabler[n].set(u32::MAX);
            self.regs.icpendr[n].set(u32::MAX);
            self.regs.icactiver[n].set(u32::MAX);
            self.regs.igroupr[n].set(u32::MAX);
        }
        self.wait_rwp();
        for i in 32..lines as usize {
            self.regs.ipriorityr[i].set(DEFAULT_PRIORITY);
            self.regs.irouter[i].set(boot_affinity);
        }
        self.regs
            .ctlr
            .write(GICD_CTLR::ARE_NS::SET + GICD_CTLR::EnableGrp1A::SET);
        self.wait_rwp();
    }

    /// Enable or disable SPI `intid` at the distributor.
    pub fn set_enabled(&self, intid: u32, on: bool) {
        if !(32..1020).contains(&intid) {
            return;
        }
        let (n, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
        if on {
            self.regs.isenabler[n].set(bit);
        } else {
            self.regs.icenabler[n].set(bit);
        }
    }

    /// Make SPI `intid` pending by software (GICD_ISPENDR, IHI 0069 §12.9.23): it is taken
    /// once, as if its device had signalled it, even if the device's line is low. moat
    /// uses this to come back to a device whose own interrupt will not fire again.
    pub fn set_pending(&self, intid: u32) {
        if (32..1020).contains(&intid) {
            self.regs.ispendr[(intid / 32) as usize].set(1u32 << (intid % 32));
        }
    }

    /// Route SPI `intid` to the PE with affinity `aff`.
    pub fn route(&self, intid: u32, aff: u64) {
        if (32..1020).contains(&intid) {
            self.regs.irouter[intid as usize].set(aff);
        }
    }
}

/// Convert an MPIDR value to the layout of GICR_TYPER.Affinity (Aff3.Aff2.Aff1.Aff0 in 32
/// bits: Aff3 moved down next to Aff2).
pub fn mpidr_to_affinity(mpidr: u64) -> u64 {
    (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24
}

/// Convert an MPIDR value to a GICD_IROUTER value routing to that PE: Aff3 stays at
/// [39:32], IRM (bit 31) = 0 and [30:24] are RES0 (IHI 0069 §12.9.22).
pub fn mpidr_to_irouter(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// Wake this CPU's redistributor and set up its SGIs and PPIs: all group 1, default
/// priority, disabled except `enable` (a mask of INTIDs 0..31).
///
/// # Safety
/// `region` must be a GICR region (`len` bytes), mapped as device memory, owned by moat.
pub unsafe fn init_redistributor(region: u64, len: u64, mpidr: u64, enable: u32) -> bool {
    let want = mpidr_to_affinity(mpidr);
    let mut base = region;
    while base + GICR_STRIDE <= region + len {
        // SAFETY: `base` is inside the caller's GICR region, at a frame boundary.
        let rd = unsafe { &*(base as *const GicrRdRegs) };
        let typer = rd.typer.extract();
        if typer.read(GICR_TYPER::Affinity) == want {
            rd.waker.write(GICR_WAKER::ProcessorSleep::CLEAR);
            for _ in 0..1_000_000 {
                if !rd.waker.is_set(GICR_WAKER::ChildrenAsleep) {
                    break;
                }
                core::hint::spin_loop();
            }
            // SAFETY: SGI_base follows RD_base inside the same redistributor.
            let sgi = unsafe { &*((base + GICR_SGI_OFFSET) as *const GicrSgiRegs) };
            sgi.icenabler0.set(u32::MAX);
            sgi.icpendr0.set(u32::MAX);
            // Nothing may stay active from before (a vCPU turned off and on again).
            sgi.icactiver0.set(u32::MAX);
            sgi.igroupr0.set(u32::MAX);
            for p in sgi.ipriorityr.iter() {
                p.set(DEFAULT_PRIORITY);
            }
            sgi.isenabler0.set(enable);
            return true;
        }
        if typer.is_set(GICR_TYPER::Last) {
            break;
        }
        base += GICR_STRIDE;
    }
    false
}

/// Enable or disable PPI/SGI `intid` in this CPU's redistributor.
///
/// # Safety
/// As for [`init_redistributor`].
pub unsafe fn set_private_enabled(region: u64, len: u64, mpidr: u64, intid: u32, on: bool) {
    let want = mpidr_to_affinity(mpidr);
    let mut base = region;
    while base + GICR_STRIDE <= region + len {
        // SAFETY: as in `init_redistributor`.
        let rd = unsafe { &*(base as *const GicrRdRegs) };
        if rd.typer.read(GICR_TYPER::Affinity) == want {
            // SAFETY: as in `init_redistributor`.
            let sgi = unsafe { &*((base + GICR_SGI_OFFSET) as *const GicrSgiRegs) };
            if on {
                sgi.isenabler0.set(1 << intid);
            } else {
                sgi.icenabler0.set(1 << intid);
            }
            return;
        }
        if rd.typer.is_set(GICR_TYPER::Last) {
            return;
        }
        base += GICR_STRIDE;
    }
}

macro_rules! sysreg_write {
    ($reg:literal, $val:expr) => {
        // SAFETY: a GIC CPU-interface or virtualization-control register of this CPU,
        // written at EL2 as `init_cpu_interface` and the IRQ path document.
        unsafe { asm!(concat!("msr ", $reg, ", {}"), in(reg) $val, options(nostack)) }
    };
}

macro_rules! sysreg_read {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading a GIC CPU-interface register of this CPU at EL2 (IAR has the
        // architected side effect of acknowledging; callers rely on it).
        unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
        v
    }};
}

/// Program this CPU's physical CPU interface and the virtual-interface control.
pub fn init_cpu_interface() {
    // ICC_SRE_EL2: SRE = system-register interface for EL2; Enable = EL1 may use its own
    // (virtualized) system-register interface.
    sysreg_write!("icc_sre_el2", 0b1001u64);
    // SAFETY: isb after changing SRE, as the architecture requires.
    unsafe { asm!("isb", options(nostack)) };
    // Every priority is unmasked. BPR1 = 0: the whole priority is the group priority (moat
    // never nests interrupts at EL2, where they are masked, so this only matters for order).
    sysreg_write!("icc_pmr_el1", 0xffu64);
    sysreg_write!("icc_bpr1_el1", 0u64);
    // EOImode = 1: writing EOIR only drops priority; deactivation is separate, so a
    // guest's EOI of a HW-linked virtual interrupt deactivates the physical one.
    sysreg_write!("icc_ctlr_el1", 0b10u64);
    sysreg_write!("icc_igrpen1_el1", 1u64);
    // ICH_HCR_EL2.En: the virtual CPU interface is on. Underflow interrupts are enabled
    // only while more interrupts wait than list registers hold.
    sysreg_write!("ich_vmcr_el2", 0u64);
    sysreg_write!("ich_hcr_el2", 1u64);
    for i in 0..list_registers() {
        write_lr(i, 0);
    }
    // SAFETY: make the configuration visible before interrupts are unmasked anywhere.
    unsafe { asm!("isb", options(nostack)) };
}

/// Number of list registers (ICH_VTR_EL2.ListRegs + 1).
pub fn list_registers() -> usize {
    ((sysreg_read!("ich_vtr_el2") & 0x1f) + 1) as usize
}

/// Acknowledge the highest-priority pending group-1 interrupt.
pub fn ack() -> u32 {
    (sysreg_read!("icc_iar1_el1") & 0xff_ffff) as u32
}

/// Priority drop for `intid` (EOImode = 1: it stays active until deactivated).
pub fn eoi(intid: u32) {
    sysreg_write!("icc_eoir1_el1", u64::from(intid));
}

/// Deactivate `intid` (one moat handled itself).
pub fn deactivate(intid: u32) {
    sysreg_write!("icc_dir_el1", u64::from(intid));
}

/// Send physical SGI `intid` to the PE with MPIDR `mpidr`.
pub fn send_sgi(intid: u32, mpidr: u64) {
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let target_list = 1u64 << (mpidr & 0xf);
    let rs = (mpidr & 0xf0) >> 4;
    let v = (aff3 << 48)
        | (aff2 << 32)
        | (rs << 44)
        | (u64::from(intid) << 24)
        | (aff1 << 16)
        | target_list;
    sysreg_write!("icc_sgi1r_el1", v);
    // SAFETY: make the SGI visible to the target promptly.
    unsafe { asm!("isb", options(nostack)) };
}

/// ICH_HCR_EL2 with or without the underflow maintenance interrupt.
pub fn set_underflow_irq(on: bool) {
    // En (bit 0) always; UIE (bit 1) asks for a maintenance interrupt when at most one
    // list register holds a valid interrupt, so waiting ones get placed.
    sysreg_write!("ich_hcr_el2", if on { 0b11u64 } else { 0b01u64 });
}

/// Does any of the first `n` list registers hold a pending virtual interrupt?
pub fn any_lr_pending(n: usize) -> bool {
    // ICH_LR<n>_EL2.State is [63:62]; bit 62 is "pending".
    (0..n).any(|i| read_lr(i) & (1 << 62) != 0)
}

/// Read list register `n`.
pub fn read_lr(n: usize) -> u64 {
    match n {
        0 => sysreg_read!("ich_lr0_el2"),
        1 => sysreg_read!("ich_lr1_el2"),
        2 => sysreg_read!("ich_lr2_el2"),
        3 => sysreg_read!("ich_lr3_el2"),
        4 => sysreg_read!("ich_lr4_el2"),
        5 => sysreg_read!("ich_lr5_el2"),
        6 => sysreg_read!("ich_lr6_el2"),
        7 => sysreg_read!("ich_lr7_el2"),
        8 => sysreg_read!("ich_lr8_el2"),
        9 => sysreg_read!("ich_lr9_el2"),
        10 => sysreg_read!("ich_lr10_el2"),
        11 => sysreg_read!("ich_lr11_el2"),
        12 => sysreg_read!("ich_lr12_el2"),
        13 => sysreg_read!("ich_lr13_el2"),
        14 => sysreg_read!("ich_lr14_el2"),
        15 => sysreg_read!("ich_lr15_el2"),
        _ => 0,
    }
}

/// Write list register `n`.
pub fn write_lr(n: usize, v: u64) {
    match n {
        0 => sysreg_write!("ich_lr0_el2", v),
        1 => sysreg_write!("ich_lr1_el2", v),
        2 => sysreg_write!("ich_lr2_el2", v),
        3 => sysreg_write!("ich_lr3_el2", v),
        4 => sysreg_write!("ich_lr4_el2", v),
        5 => sysreg_write!("ich_lr5_el2", v),
        6 => sysreg_write!("ich_lr6_el2", v),
        7 => sysreg_write!("ich_lr7_el2", v),
        8 => sysreg_write!("ich_lr8_el2", v),
        9 => sysreg_write!("ich_lr9_el2", v),
        10 => sysreg_write!("ich_lr10_el2", v),
        11 => sysreg_write!("ich_lr11_el2", v),
        12 => sysreg_write!("ich_lr12_el2", v),
        13 => sysreg_write!("ich_lr13_el2", v),
        14 => sysreg_write!("ich_lr14_el2", v),
        15 => sysreg_write!("ich_lr15_el2", v),
        _ => {}
    }
}
