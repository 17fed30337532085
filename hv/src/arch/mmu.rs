// SPDX-License-Identifier: MIT OR Apache-2.0
//! The hypervisor's own address space: EL2 stage-1, an identity map with caches on.
//!
//! ```text
//!   VA == PA, 39-bit, one level-1 table of 512 x 1 GiB blocks
//!   [0, 1 GiB)        Device-nGnRE, execute-never   (QEMU virt's MMIO)
//!   [1 GiB, 512 GiB)  Normal write-back             (RAM and above)
//! ```
//!
//! One table serves every CPU. The primary CPU fills it with the MMU off, then each CPU
//! turns its MMU on with the same TCR/MAIR/SCTLR values.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// An EL2 stage-1 block descriptor at level 1 (Arm ARM D8.3 "Translation table
    /// descriptor formats", VMSAv8-64 block descriptor).
    pub BLOCK [
        /// [0] Valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// [1] 0 = block (at levels 1 and 2).
        TYPE OFFSET(1) NUMBITS(1) [Block = 0, Table = 1],
        /// [4:2] Index into MAIR_EL2.
        ATTR_INDX OFFSET(2) NUMBITS(3) [Normal = 0, Device = 1],
        /// [7:6] AP[2:1]: 00 = read/write at EL2.
        AP OFFSET(6) NUMBITS(2) [RwEl2 = 0],
        /// [9:8] Shareability.
        SH OFFSET(8) NUMBITS(2) [NonShareable = 0, InnerShareable = 3],
        /// [10] Access flag: set, so the first access does not fault.
        AF OFFSET(10) NUMBITS(1) [],
        /// [47:30] Output address bits of a 1 GiB block.
        OUTPUT_1G OFFSET(30) NUMBITS(18) [],
        /// [54] XN: never execute (EL2 regime has a single XN bit).
        XN OFFSET(54) NUMBITS(1) [],
    ]
}

/// log2 of the block size at level 1.
const L1_SHIFT: u64 = 30;
/// Blocks below this address are MMIO.
const DEVICE_LIMIT_GIB: u64 = 1;
/// The end of the device window, in bytes: MMIO moat drives must lie below it.
pub const DEVICE_LIMIT: u64 = DEVICE_LIMIT_GIB << L1_SHIFT;

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The level-1 table. Written only by [`build`] on the primary CPU before any MMU is on.
static mut L1: Table = Table([0; 512]);

fn block(gib: u64) -> u64 {
    let attrs = if gib < DEVICE_LIMIT_GIB {
        BLOCK::ATTR_INDX::Device + BLOCK::SH::NonShareable + BLOCK::XN::SET
    } else {
        BLOCK::ATTR_INDX::Normal + BLOCK::SH::InnerShareable
    };
    (BLOCK::VALID::SET + BLOCK::TYPE::Block + BLOCK::AP::RwEl2 + BLOCK::AF::SET + attrs).value
        | (gib << L1_SHIFT)
}

/// Fill the identity table. Primary CPU only, MMU off, before secondaries exist.
pub fn build() {
    let table = core::ptr::addr_of_mut!(L1);
    for gib in 0..512u64 {
        // SAFETY: `L1` is only written here, on the primary CPU before any other CPU is
        // started and before any MMU reads it; the index is in bounds.
        unsafe { core::ptr::write_volatile(&mut (*table).0[gib as usize], block(gib)) };
    }
    barrier::dsb(barrier::SY);
}

/// Turn this CPU's EL2 MMU and caches on, using the table from [`build`].
pub fn enable() {
    // Attr0: Normal, inner/outer write-back non-transient, read/write-allocate (RAM).
    // Attr1: Device-nGnRE (MMIO: no gathering, no reordering, early write ack allowed).
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr0_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck,
    );
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
    TCR_EL2.write(
        // T0SZ = 25: a 39-bit VA space, so the walk starts with one level-1 table.
        TCR_EL2::T0SZ.val(25)
            // Walks are cacheable write-back and inner shareable, like the tables' memory.
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            // 4 KiB granule, as everywhere in moat.
            + TCR_EL2::TG0::KiB_4
            // Physical address size: what the CPU implements.
            + TCR_EL2::PS.val(pa_range.min(5)),
    );
    // Bits 31 and 23 of TCR_EL2 are RES1 in the non-VHE layout.
    TCR_EL2.set(TCR_EL2.get() | (1 << 31) | (1 << 23));
    TTBR0_EL2.set(core::ptr::addr_of!(L1) as u64);
    barrier::dsb(barrier::ISHST);
    // SAFETY: invalidating EL2's own TLB entries before the MMU is turned on cannot
    // affect any live translation.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", options(nostack)) };
    barrier::isb(barrier::SY);
    SCTLR_EL2.modify(
        // MMU on, with the data and instruction caches: page tables are cacheable and
        // the identity map keeps the running code at the same address.
        SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::I::Cacheable
            // Stack-alignment checks catch a corrupted SP early.
            + SCTLR_EL2::SA::Enable
            // No alignment checks on ordinary data: Rust code may do unaligned accesses.
            + SCTLR_EL2::A::Disable
            // WXN cannot be on: .text shares its read-write 1 GiB block with all of RAM.
            // (A finer map with read-only text is future work.)
            + SCTLR_EL2::WXN::Disable,
    );
    barrier::isb(barrier::SY);
}
