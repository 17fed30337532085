// SPDX-License-Identifier: MIT OR Apache-2.0
//! Xen's public memory map for arm64 guests, which moat gives its domUs.
//!
//! A domU's intermediate physical address space is not the host's: moat lays it out the way
//! Xen 4.17 does for every non-hardware domain, so that a domU's device tree under moat
//! matches the one Xen writes. The values come from Xen's public header
//! `xen/include/public/arch-arm.h` (section "Physical Address Space" and the interrupt
//! numbers after it) and `xen/include/public/device_tree_defs.h`; Xen says guests must not
//! hard-code them but read the DT, and so does moat's domU kernel ([`crate::domudt`]).
//!
//! ```text
//!  IPA                       size      what                    moat
//!  0x0200_0000               1 MiB     virtio-mmio (Xen)       nothing mapped
//!  0x0300_1000               64 KiB    GICv3 distributor       vGIC (trapped)
//!  0x0302_0000               16 MiB    GICv3 redistributors    vGIC, one 128 KiB frame
//!                                      (vCPU 0..127)           per vCPU (trapped)
//!  0x2000_0000               32 MiB    ACPI tables (Xen)       nothing mapped
//!  0x2200_0000               4 KiB     PL011                   vPL011 (trapped)
//!  0x3800_0000               16 MiB    grant table (Xen PV)    nothing mapped
//!  0x3900_0000               16 MiB    "magic" pages (Xen PV)  nothing mapped
//!  0x4000_0000               3 GiB     RAM bank 0              domU RAM, first
//!  0x2_0000_0000             1016 GiB  RAM bank 1              domU RAM beyond 3 GiB
//! ```
//!
//! Interrupt numbers are GIC INTIDs, as Xen's header gives them (its `*_PPI` names are
//! INTIDs 16..31, its `*_SPI` INTIDs from 32 on).

use crate::addr::{Ipa, Range};

// ---- memory map (arch-arm.h, "Physical Address Space") ---------------------------------

/// Base of the GICv3 distributor frame (arch-arm.h, `GUEST_GICV3_GICD_BASE`).
pub const GUEST_GICV3_GICD_BASE: Ipa = Ipa(0x0300_1000);
/// Size of the GICv3 distributor frame (arch-arm.h, `GUEST_GICV3_GICD_SIZE`).
pub const GUEST_GICV3_GICD_SIZE: u64 = 0x0001_0000;
/// Number of redistributor regions (arch-arm.h, `GUEST_GICV3_RDIST_REGIONS`).
pub const GUEST_GICV3_RDIST_REGIONS: u32 = 1;
/// Base of the (single) redistributor region, vCPU 0's frame first (arch-arm.h,
/// `GUEST_GICV3_GICR0_BASE`).
pub const GUEST_GICV3_GICR0_BASE: Ipa = Ipa(0x0302_0000);
/// Size of the redistributor region: room for [`GUEST_MAX_VCPUS`] frames (arch-arm.h,
/// `GUEST_GICV3_GICR0_SIZE`).
pub const GUEST_GICV3_GICR0_SIZE: u64 = 0x0100_0000;
/// Distance between two vCPUs' redistributors: RD_base + SGI_base, 64 KiB each (GICv3
/// without VLPIs, IHI 0069H §12.10). Xen's header implies it: the GICR0 region holds the
/// frames of vCPUs 0..127.
pub const GUEST_GICV3_GICR_STRIDE: u64 = GUEST_GICV3_GICR0_SIZE / GUEST_MAX_VCPUS as u64;

/// Base of the emulated PL011 (arch-arm.h, `GUEST_PL011_BASE`).
pub const GUEST_PL011_BASE: Ipa = Ipa(0x2200_0000);
/// Size of the emulated PL011's frame (arch-arm.h, `GUEST_PL011_SIZE`).
pub const GUEST_PL011_SIZE: u64 = 0x0000_1000;

/// Xen's virtio-mmio window (arch-arm.h, `GUEST_VIRTIO_MMIO_BASE`): moat maps nothing
/// there.
pub const GUEST_VIRTIO_MMIO_BASE: Ipa = Ipa(0x0200_0000);
/// Size of Xen's virtio-mmio window (arch-arm.h, `GUEST_VIRTIO_MMIO_SIZE`).
pub const GUEST_VIRTIO_MMIO_SIZE: u64 = 0x0010_0000;
/// Where Xen puts a guest's ACPI tables (arch-arm.h, `GUEST_ACPI_BASE`): moat maps nothing
/// there (its domUs boot with a DT).
pub const GUEST_ACPI_BASE: Ipa = Ipa(0x2000_0000);
/// Size of Xen's ACPI window (arch-arm.h, `GUEST_ACPI_SIZE`).
pub const GUEST_ACPI_SIZE: u64 = 0x0200_0000;
/// Where a Xen PV guest maps its grant table (arch-arm.h, `GUEST_GNTTAB_BASE`): moat
/// implements no PV interfaces and maps nothing there.
pub const GUEST_GNTTAB_BASE: Ipa = Ipa(0x3800_0000);
/// Size of the grant-table window (arch-arm.h, `GUEST_GNTTAB_SIZE`).
pub const GUEST_GNTTAB_SIZE: u64 = 0x0100_0000;
/// Xen's "magic" pages (console ring, xenstore; arch-arm.h, `GUEST_MAGIC_BASE`): moat
/// maps nothing there.
pub const GUEST_MAGIC_BASE: Ipa = Ipa(0x3900_0000);
/// Size of the magic-page window (arch-arm.h, `GUEST_MAGIC_SIZE`).
pub const GUEST_MAGIC_SIZE: u64 = 0x0100_0000;

/// Base of the first RAM bank, 1 GiB (arch-arm.h, `GUEST_RAM0_BASE`). The kernel, its DT
/// and its ramdisk all go in this bank.
pub const GUEST_RAM0_BASE: Ipa = Ipa(0x4000_0000);
/// Size of the first RAM bank, 3 GiB (arch-arm.h, `GUEST_RAM0_SIZE`).
pub const GUEST_RAM0_SIZE: u64 = 0xc000_0000;
/// Base of the second RAM bank, 8 GiB (arch-arm.h, `GUEST_RAM1_BASE`): RAM beyond the
/// first bank's 3 GiB.
pub const GUEST_RAM1_BASE: Ipa = Ipa(0x02_0000_0000);
/// Size of the second RAM bank, 1016 GiB (arch-arm.h, `GUEST_RAM1_SIZE`).
pub const GUEST_RAM1_SIZE: u64 = 0xfe_0000_0000;
/// The RAM banks in order, `(base, size)` (arch-arm.h, `GUEST_RAM_BANK_BASES` /
/// `GUEST_RAM_BANK_SIZES`).
pub const GUEST_RAM_BANKS: [(Ipa, u64); 2] = [
    (GUEST_RAM0_BASE, GUEST_RAM0_SIZE),
    (GUEST_RAM1_BASE, GUEST_RAM1_SIZE),
];
/// Most RAM a guest can have, not counting holes (arch-arm.h, `GUEST_RAM_MAX`).
pub const GUEST_RAM_MAX: u64 = GUEST_RAM0_SIZE + GUEST_RAM1_SIZE;

/// Most vCPUs Xen's layout has room for (arch-arm.h, `GUEST_MAX_VCPUS`). moat's own limit
/// is lower ([`crate::bootcfg::MAX_VCPUS`]).
pub const GUEST_MAX_VCPUS: u32 = 128;

// ---- interrupts (arch-arm.h, "Interrupts") --------------------------------------------

/// The EL1 virtual timer, INTID 27 = PPI 11 (arch-arm.h, `GUEST_TIMER_VIRT_PPI`).
pub const GUEST_TIMER_VIRT_PPI: u32 = 27;
/// The secure EL1 physical timer, INTID 29 = PPI 13 (arch-arm.h,
/// `GUEST_TIMER_PHYS_S_PPI`).
pub const GUEST_TIMER_PHYS_S_PPI: u32 = 29;
/// The non-secure EL1 physical timer, INTID 30 = PPI 14 (arch-arm.h,
/// `GUEST_TIMER_PHYS_NS_PPI`).
pub const GUEST_TIMER_PHYS_NS_PPI: u32 = 30;
/// Xen's event-channel upcall, INTID 31 = PPI 15 (arch-arm.h, `GUEST_EVTCHN_PPI`): moat
/// has no event channels and never raises it.
pub const GUEST_EVTCHN_PPI: u32 = 31;
/// The emulated PL011's interrupt, INTID 32 = SPI 0 (arch-arm.h, `GUEST_VPL011_SPI`).
pub const GUEST_VPL011_SPI: u32 = 32;

// ---- device-tree conventions (device_tree_defs.h) -------------------------------------

/// The phandle of the guest's GIC node (device_tree_defs.h, `GUEST_PHANDLE_GIC`).
pub const GUEST_PHANDLE_GIC: u32 = 65000;
/// `#address-cells` of the guest DT's root (device_tree_defs.h,
/// `GUEST_ROOT_ADDRESS_CELLS`).
pub const GUEST_ROOT_ADDRESS_CELLS: u32 = 2;
/// `#size-cells` of the guest DT's root (device_tree_defs.h, `GUEST_ROOT_SIZE_CELLS`).
pub const GUEST_ROOT_SIZE_CELLS: u32 = 2;

// The redistributor frame the vGIC emulates is the one Xen's layout leaves room for.
const _: () = assert!(GUEST_GICV3_GICR_STRIDE == crate::vgic::GICR_FRAME_SIZE);
const _: () = assert!(GUEST_GICV3_GICD_SIZE == crate::vgic::GICD_SIZE);
const _: () = assert!(GUEST_PL011_SIZE == crate::vpl011::PL011_SIZE);

/// The distributor window.
pub const fn gicd() -> Range<Ipa> {
    window(GUEST_GICV3_GICD_BASE, GUEST_GICV3_GICD_SIZE)
}

/// The redistributor frames of `vcpus` vCPUs, vCPU 0 first (the part of the GICR0 region
/// a domain uses), or `None` if they do not fit in the region.
pub const fn gicr(vcpus: u32) -> Option<Range<Ipa>> {
    if vcpus > GUEST_MAX_VCPUS {
        return None;
    }
    Some(window(
        GUEST_GICV3_GICR0_BASE,
        vcpus as u64 * GUEST_GICV3_GICR_STRIDE,
    ))
}

/// The PL011 window.
pub const fn pl011() -> Range<Ipa> {
    window(GUEST_PL011_BASE, GUEST_PL011_SIZE)
}

/// Every window of the layout that is not RAM, for overlap checks.
pub const DEVICE_WINDOWS: [(Ipa, u64); 7] = [
    (GUEST_VIRTIO_MMIO_BASE, GUEST_VIRTIO_MMIO_SIZE),
    (GUEST_GICV3_GICD_BASE, GUEST_GICV3_GICD_SIZE),
    (GUEST_GICV3_GICR0_BASE, GUEST_GICV3_GICR0_SIZE),
    (GUEST_ACPI_BASE, GUEST_ACPI_SIZE),
    (GUEST_PL011_BASE, GUEST_PL011_SIZE),
    (GUEST_GNTTAB_BASE, GUEST_GNTTAB_SIZE),
    (GUEST_MAGIC_BASE, GUEST_MAGIC_SIZE),
];

/// `[base, base + size)`; every window above is far from wrapping.
const fn window(base: Ipa, size: u64) -> Range<Ipa> {
    Range {
        start: base,
        end: Ipa(base.0 + size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: Ipa, size: u64) -> Range<Ipa> {
        Range::<Ipa>::from_len(base, size).unwrap()
    }

    #[test]
    fn windows_and_ram_never_overlap() {
        let mut all: alloc::vec::Vec<Range<Ipa>> =
            DEVICE_WINDOWS.iter().map(|&(b, s)| r(b, s)).collect();
        all.extend(GUEST_RAM_BANKS.iter().map(|&(b, s)| r(b, s)));
        // The GICD and GICR windows of GICv2 alias in Xen's header; v3 ones must not.
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn values_are_xens() {
        assert_eq!(GUEST_GICV3_GICR_STRIDE, 0x2_0000);
        assert_eq!(GUEST_RAM_MAX, 1019 << 30);
        assert_eq!(r(GUEST_RAM1_BASE, GUEST_RAM1_SIZE).end, Ipa(1 << 40));
        assert_eq!(gicd(), r(Ipa(0x300_1000), 0x1_0000));
        assert_eq!(gicr(2), Some(r(Ipa(0x302_0000), 0x4_0000)));
        assert_eq!(gicr(128).unwrap().end, Ipa(0x402_0000));
        assert_eq!(gicr(129), None);
        assert_eq!(pl011(), r(Ipa(0x2200_0000), 0x1000));
        assert_eq!(GUEST_VPL011_SPI - 32, 0, "SPI 0");
        assert_eq!(
            [
                GUEST_TIMER_PHYS_S_PPI,
                GUEST_TIMER_PHYS_NS_PPI,
                GUEST_TIMER_VIRT_PPI
            ]
            .map(|i| i - 16),
            [13, 14, 11]
        );
    }
}
