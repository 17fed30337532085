// SPDX-License-Identifier: MIT OR Apache-2.0
//! The MMIO ranges a domain's stage-2 maps 1:1, read from the DT the domain is given.
//!
//! Xen's model: dom0 owns the hardware, so every device its DT describes is mapped into its
//! stage-2 at the same address, except the ranges the hypervisor keeps (`keep_out`: the
//! GIC frames and UART it emulates, secure-only devices). Devices are the root's children
//! with `reg` (two address cells and two size cells on QEMU virt), plus the CPU-side
//! windows of PCI host bridges (`ranges`). Everything is rounded out to pages.

use alloc::vec::Vec;

use crate::addr::{PhysAddr, Range, PAGE_SIZE};
use crate::fdt::{decode_reg, take_cells, Node, Tree};

/// Most device ranges one domain gets: bounds the stage-2 work a hostile DT can cause.
pub const MAX_DEVICE_RANGES: usize = 256;

/// What can be wrong with the DT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevMapError {
    /// The blob is not a valid FDT.
    BadDtb,
    /// A `reg` or `ranges` entry wraps around the address space.
    BadRange,
    /// More than [`MAX_DEVICE_RANGES`] ranges.
    TooMany,
}

fn status_okay(node: &Node) -> bool {
    match node.prop_str("status") {
        None => true,
        Some(s) => s == "okay" || s == "ok",
    }
}

fn page_range(start: u64, len: u64) -> Result<Range<PhysAddr>, DevMapError> {
    let end = start.checked_add(len).ok_or(DevMapError::BadRange)?;
    let s = start & !(PAGE_SIZE - 1);
    let e = end
        .checked_add(PAGE_SIZE - 1)
        .ok_or(DevMapError::BadRange)?
        & !(PAGE_SIZE - 1);
    Ok(Range {
        start: PhysAddr(s),
        end: PhysAddr(e),
    })
}

/// Subtract `holes` from `ranges`, then sort and merge what is left.
pub fn subtract_and_merge(
    ranges: &[Range<PhysAddr>],
    holes: &[Range<PhysAddr>],
) -> Vec<Range<PhysAddr>> {
    let mut out: Vec<Range<PhysAddr>> = Vec::new();
    for r in ranges {
        let mut pieces = alloc::vec![*r];
        for h in holes {
            let mut next = Vec::new();
            for p in pieces {
                if !p.overlaps(h) {
                    next.push(p);
                    continue;
                }
                if p.start < h.start {
                    next.push(Range {
                        start: p.start,
                        end: h.start,
                    });
                }
                if h.end < p.end {
                    next.push(Range {
                        start: h.end,
                        end: p.end,
                    });
                }
            }
            pieces = next;
        }
        out.extend(pieces.into_iter().filter(|p| !p.is_empty()));
    }
    out.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<PhysAddr>> = Vec::new();
    for r in out {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => {
                if r.end > last.end {
                    last.end = r.end;
                }
            }
            _ => merged.push(r),
        }
    }
    merged
}

/// The device ranges to map 1:1 for a domain whose DT is `dtb`, minus `keep_out`.
pub fn device_ranges(
    dtb: &[u8],
    keep_out: &[Range<PhysAddr>],
) -> Result<Vec<Range<PhysAddr>>, DevMapError> {
    let tree = Tree::parse(dtb).map_err(|_| DevMapError::BadDtb)?;
    let root = &tree.root;
    let ac = root.prop_u32("#address-cells").unwrap_or(2);
    let sc = root.prop_u32("#size-cells").unwrap_or(1);
    let mut found = Vec::new();
    let mut push = |start: u64, len: u64| -> Result<(), DevMapError> {
        if len > 0 {
            found.push(page_range(start, len)?);
        }
        if found.len() > MAX_DEVICE_RANGES {
            return Err(DevMapError::TooMany);
        }
        Ok(())
    };
    for node in &root.children {
        if !status_okay(node) {
            continue;
        }
        let device_type = node.prop_str("device_type");
        if device_type == Some("memory") || device_type == Some("cpu") {
            continue;
        }
        if let Some(reg) = node.prop("reg") {
            for (addr, len) in decode_reg(reg, ac, sc).ok_or(DevMapError::BadRange)? {
                push(addr, len)?;
            }
        }
        if device_type == Some("pci") {
            // `ranges` = (child address, parent address, size)*, with the child's cells
            // (3 address, 2 size for PCI) and the root's address cells.
            let child_ac = node.prop_u32("#address-cells").unwrap_or(3);
            let child_sc = node.prop_u32("#size-cells").unwrap_or(2);
            let mut b = node.prop("ranges").unwrap_or(&[]);
            while !b.is_empty() {
                let rest = b
                    .get(4 * child_ac as usize..)
                    .ok_or(DevMapError::BadRange)?;
                let (addr, rest) = take_cells(rest, ac).ok_or(DevMapError::BadRange)?;
                let (len, rest) = take_cells(rest, child_sc).ok_or(DevMapError::BadRange)?;
                b = rest;
                push(addr, len)?;
            }
        }
    }
    Ok(subtract_and_merge(&found, keep_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNTIME: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-runtime-2g-smp2.dtb");

    fn r(s: u64, e: u64) -> Range<PhysAddr> {
        Range {
            start: PhysAddr(s),
            end: PhysAddr(e),
        }
    }

    fn covers(v: &[Range<PhysAddr>], a: u64) -> bool {
        v.iter().any(|x| x.contains(PhysAddr(a)))
    }

    #[test]
    fn qemu_virt_devices_are_found_and_secure_ones_skipped() {
        let v = device_ranges(RUNTIME, &[]).unwrap();
        assert!(covers(&v, 0x0900_0000), "non-secure UART");
        assert!(covers(&v, 0x0a00_0000), "virtio-mmio");
        assert!(covers(&v, 0x0800_0000), "GIC distributor");
        assert!(covers(&v, 0x0902_0000), "fw-cfg");
        assert!(covers(&v, 0x40_1000_0000), "PCIe ECAM");
        assert!(covers(&v, 0x1000_0000), "PCIe 32-bit window");
        assert!(covers(&v, 0x80_0000_0000), "PCIe 64-bit window");
        assert!(!covers(&v, 0x0904_0000), "secure UART");
        assert!(!covers(&v, 0x0e00_0000), "secure RAM");
        assert!(!covers(&v, 0x0000_0000), "secure flash");
        assert!(!covers(&v, 0x4000_0000), "RAM is not a device");
        for w in v.windows(2) {
            assert!(w[0].end < w[1].start, "sorted and merged");
        }
    }

    #[test]
    fn kept_ranges_are_carved_out() {
        let v = device_ranges(
            RUNTIME,
            &[r(0x0900_0000, 0x0900_1000), r(0x0800_0000, 0x0900_0000)],
        )
        .unwrap();
        assert!(!covers(&v, 0x0900_0000));
        assert!(!covers(&v, 0x0800_0000));
        assert!(covers(&v, 0x0901_0000), "the RTC next to the UART stays");
    }

    #[test]
    fn subtracting_splits_and_merging_joins() {
        let v = subtract_and_merge(&[r(0, 0x10000), r(0x10000, 0x20000)], &[r(0x4000, 0x5000)]);
        assert_eq!(v, [r(0, 0x4000), r(0x5000, 0x20000)]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(device_ranges(&[0u8; 64], &[]), Err(DevMapError::BadDtb));
    }
}
