// SPDX-License-Identifier: MIT OR Apache-2.0
//! The hostile guest's own stage-1 translation tables: an identity map (VA == PA) of its
//! RAM as Normal write-back memory and of the devices moat emulates for it as
//! Device-nGnRE, so that it runs as a real guest does, with its MMU and caches on. (With
//! the MMU off every data access is Device-nGnRnE, where only QEMU forgives what a
//! campaign does, and moat's cacheable view of the guest's memory would not be coherent
//! with the guest's on hardware.) `tests/guests/hostile` builds the tables with [`build`]
//! in a pool of its image and turns the MMU on with them before the campaign.
//!
//! ```text
//!   VMSAv8-64, 4 KiB granule, 39-bit VA (TCR_EL1.T0SZ = 25): the walk starts at level 1
//!   level 1   512 x 1 GiB   → a level-2 table for every GiB anything is mapped in
//!   level 2   512 x 2 MiB   → a block where one region covers the whole 2 MiB,
//!                             else a level-3 table
//!   level 3   512 x 4 KiB   pages
//!   RAM banks   Normal (MAIR index ATTR_NORMAL), inner shareable, EL1 read/write/execute
//!   devices     Device-nGnRE (MAIR index ATTR_DEVICE), never executable
//!   the rest    invalid: a stray access faults in the guest, as it would on a machine
//! ```
//!
//! Descriptor formats: Arm ARM (DDI 0487K.a) D8.3 "Translation table descriptor
//! formats" and D8.5 "Memory region attributes".

use tock_registers::{register_bitfields, LocalRegisterCopy};

use crate::layout::Span;

register_bitfields! {u64,
    /// A VMSAv8-64 stage-1 descriptor, 4 KiB granule (Arm ARM D8.3.1, D8.3.2).
    pub DESC [
        /// [0] Valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// [1] At levels 1 and 2: 0 a block, 1 a table; at level 3: 1 a page.
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        /// [4:2] AttrIndx: which MAIR_EL1 attribute the memory has (D8.5.2).
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// [7:6] AP[2:1]: 00 = read/write at EL1, no access at EL0 (D8.4.1).
        AP OFFSET(6) NUMBITS(2) [
            RwEl1 = 0
        ],
        /// [9:8] Shareability of Normal memory (D8.5.3; Device memory is always outer
        /// shareable).
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0,
            InnerShareable = 3
        ],
        /// [10] Access flag: set, so the first access does not fault (D8.4.5).
        AF OFFSET(10) NUMBITS(1) [],
        /// [47:12] The output address of a page or block, or the next-level table's.
        ADDR OFFSET(12) NUMBITS(36) [],
        /// [53] PXN: never execute at EL1.
        PXN OFFSET(53) NUMBITS(1) [],
        /// [54] UXN: never execute at EL0.
        UXN OFFSET(54) NUMBITS(1) [],
    ]
}

/// A descriptor.
pub type Desc = LocalRegisterCopy<u64, DESC::Register>;

/// Entries in a table (4 KiB of 8-byte descriptors).
pub const ENTRIES: usize = 512;
/// One translation table.
pub type Table = [u64; ENTRIES];
/// The MAIR_EL1 attribute index of Normal memory (the guest puts inner and outer
/// write-back, read/write-allocate there).
pub const ATTR_NORMAL: u64 = 0;
/// The MAIR_EL1 attribute index of Device-nGnRE memory.
pub const ATTR_DEVICE: u64 = 1;
/// Virtual address bits: TCR_EL1.T0SZ = 64 - VA_BITS.
pub const VA_BITS: u32 = 39;
/// The page size.
pub const PAGE: u64 = 4096;
/// The level-2 block size.
const BLOCK_2M: u64 = 2 << 20;
/// log2 of what one entry maps at levels 1, 2 and 3.
const SHIFT: [u32; 3] = [30, 21, 12];

/// What a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// RAM: Normal write-back, executable at EL1.
    Normal,
    /// MMIO: Device-nGnRE, never executable.
    Device,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The pool has no table left.
    NoTable,
    /// An address beyond the 39-bit VA space.
    OutOfRange(u64),
    /// Two regions share this page.
    Overlap(u64),
    /// The pool is not 4 KiB-aligned.
    Misaligned(u64),
}

/// Tables being built in `pool`, whose first table is at physical address `base`.
struct Builder<'a> {
    pool: &'a mut [Table],
    base: u64,
    used: usize,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

fn attrs(mem: Memory) -> Desc {
    let v = match mem {
        Memory::Normal => {
            DESC::ATTR_INDX.val(ATTR_NORMAL) + DESC::SH::InnerShareable + DESC::UXN::SET
        }
        Memory::Device => {
            DESC::ATTR_INDX.val(ATTR_DEVICE)
                + DESC::SH::NonShareable
                + DESC::PXN::SET
                + DESC::UXN::SET
        }
    };
    Desc::new((v + DESC::VALID::SET + DESC::AP::RwEl1 + DESC::AF::SET).value)
}

impl Builder<'_> {
    fn table_pa(&self, i: usize) -> u64 {
        self.base + (i * core::mem::size_of::<Table>()) as u64
    }

    fn index_of(&self, pa: u64) -> usize {
        ((pa - self.base) / core::mem::size_of::<Table>() as u64) as usize
    }

    /// A fresh, empty table's index.
    fn new_table(&mut self) -> Result<usize, MapError> {
        let i = self.used;
        let t = self.pool.get_mut(i).ok_or(MapError::NoTable)?;
        t.fill(0);
        self.used += 1;
        Ok(i)
    }

    /// The table the entry `slot` of table `t` points to, made if the entry is invalid.
    fn next(&mut self, t: usize, slot: usize, va: u64) -> Result<usize, MapError> {
        let d = Desc::new(self.pool[t][slot]);
        if !d.is_set(DESC::VALID) {
            let n = self.new_table()?;
            self.pool[t][slot] = (DESC::VALID::SET
                + DESC::TYPE::TableOrPage
                + DESC::ADDR.val(self.table_pa(n) >> 12))
            .value;
            return Ok(n);
        }
        match d.read_as_enum(DESC::TYPE) {
            Some(DESC::TYPE::Value::TableOrPage) => Ok(self.index_of(d.read(DESC::ADDR) << 12)),
            _ => Err(MapError::Overlap(va)),
        }
    }

    /// Map `[va, va + 2 MiB)` with one level-2 block, or the page at `va`.
    fn map(&mut self, va: u64, block: bool, mem: Memory) -> Result<(), MapError> {
        let slot = |level: usize| ((va >> SHIFT[level]) as usize) % ENTRIES;
        let l2 = self.next(0, slot(0), va)?;
        let (t, s, kind) = match block {
            true => (l2, slot(1), DESC::TYPE::Block),
            false => (
                self.next(l2, slot(1), va)?,
                slot(2),
                DESC::TYPE::TableOrPage,
            ),
        };
        if Desc::new(self.pool[t][s]).is_set(DESC::VALID) {
            return Err(MapError::Overlap(va));
        }
        self.pool[t][s] = attrs(mem).get() | (kind + DESC::ADDR.val(va >> 12)).value;
        Ok(())
    }
}

/// Build the identity map of `regions` in `pool`, whose first table is at physical
/// address `base`; the level-1 table's address (for TTBR0_EL1). RAM is shrunk to whole
/// pages, a device's frame grown to them. Tables are used from the start of the pool.
pub fn build(pool: &mut [Table], base: u64, regions: &[(Span, Memory)]) -> Result<u64, MapError> {
    if !base.is_multiple_of(PAGE) {
        return Err(MapError::Misaligned(base));
    }
    let mut b = Builder {
        pool,
        base,
        used: 0,
    };
    let root = b.new_table()?;
    for &(span, mem) in regions {
        let (mut va, end) = match mem {
            Memory::Normal => (span.start.next_multiple_of(PAGE), span.end & !(PAGE - 1)),
            Memory::Device => (span.start & !(PAGE - 1), span.end.next_multiple_of(PAGE)),
        };
        if end > 1 << VA_BITS {
            return Err(MapError::OutOfRange(end - 1));
        }
        while va < end {
            let block = va.is_multiple_of(BLOCK_2M) && end - va >= BLOCK_2M;
            b.map(va, block, mem)?;
            va += if block { BLOCK_2M } else { PAGE };
        }
    }
    Ok(b.table_pa(root))
}

/// Where the tables translate `va`, and as what: the walk the MMU does (tests).
pub fn translate(pool: &[Table], base: u64, root: u64, va: u64) -> Option<(u64, Memory)> {
    if va >= 1 << VA_BITS {
        return None;
    }
    let mut table = ((root - base) / PAGE) as usize;
    for (level, shift) in SHIFT.iter().enumerate() {
        let d = Desc::new(*pool.get(table)?.get(((va >> shift) as usize) % ENTRIES)?);
        if !d.is_set(DESC::VALID) {
            return None;
        }
        let leaf = level == 2 || d.read_as_enum(DESC::TYPE) == Some(DESC::TYPE::Value::Block);
        if leaf {
            let size = 1u64 << shift;
            let mem = match d.read(DESC::ATTR_INDX) {
                ATTR_NORMAL => Memory::Normal,
                _ => Memory::Device,
            };
            return Some(((d.read(DESC::ADDR) << 12) + (va & (size - 1)), mem));
        }
        table = (((d.read(DESC::ADDR) << 12) - base) / PAGE) as usize;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const BASE: u64 = 0x5001_0000;

    fn dom0() -> [(Span, Memory); 6] {
        [
            (Span::at(0x4000_0000, 0x200_0000), Memory::Normal),
            (
                Span {
                    start: 0x4220_0000,
                    end: 0x6000_0000,
                },
                Memory::Normal,
            ),
            (
                Span {
                    start: 0x60e0_0000,
                    end: 0x80e0_0000,
                },
                Memory::Normal,
            ),
            (Span::at(0x0800_0000, 0x1_0000), Memory::Device),
            (Span::at(0x080a_0000, 0x4_0000), Memory::Device),
            (Span::at(0x0900_0000, 0x1000), Memory::Device),
        ]
    }

    #[test]
    fn dom0s_ram_and_devices_are_mapped_one_to_one_and_nothing_else() {
        let mut pool = vec![[0u64; ENTRIES]; 8];
        let root = build(&mut pool, BASE, &dom0()).unwrap();
        assert_eq!(root, BASE);
        let t = |va| translate(&pool, BASE, root, va);
        for va in [
            0x4000_0000,
            0x41ff_fff8,
            0x4220_0000,
            0x5000_0000,
            0x5fff_f000,
            0x60e0_0000,
            0x80df_ffff,
        ] {
            assert_eq!(t(va), Some((va, Memory::Normal)), "{va:#x}");
        }
        for va in [
            0x0800_0000,
            0x0800_fffc,
            0x080a_0000,
            0x080d_fffc,
            0x0900_0ffc,
        ] {
            assert_eq!(t(va), Some((va, Memory::Device)), "{va:#x}");
        }
        // OP-TEE's static SHM, moat, the gap after the GICD, the secure UART, beyond RAM.
        for va in [
            0x4200_0000,
            0x6000_0000,
            0x0801_0000,
            0x0904_0000,
            0x80e0_0000,
            0,
        ] {
            assert_eq!(t(va), None, "{va:#x}");
        }
        // 1 level-1, 3 level-2 (GiB 0, 1, 2), 2 level-3 (the GIC's 2 MiB, the UART's).
        assert!(pool[6].iter().all(|&d| d == 0));
        assert!(pool[5].iter().any(|&d| d != 0));
        // RAM is a block per 2 MiB; the devices' pages are never executable.
        let d = Desc::new(pool[2][0]);
        assert!(d.is_set(DESC::VALID) && !d.is_set(DESC::TYPE));
        assert!(!d.is_set(DESC::PXN) && d.is_set(DESC::UXN));
        let gic = Desc::new(pool[4][0]);
        assert_eq!(gic.read(DESC::ATTR_INDX), ATTR_DEVICE);
        assert!(gic.is_set(DESC::PXN) && gic.is_set(DESC::AF));
    }

    #[test]
    fn banks_off_the_2mib_grid_get_pages_at_their_ends() {
        let mut pool = vec![[0u64; ENTRIES]; 8];
        let ram = [(
            Span {
                start: 0x4000_3000,
                end: 0x4040_1800,
            },
            Memory::Normal,
        )];
        let root = build(&mut pool, BASE, &ram).unwrap();
        let t = |va| translate(&pool, BASE, root, va);
        assert_eq!(t(0x4000_2fff), None);
        assert_eq!(t(0x4000_3000), Some((0x4000_3000, Memory::Normal)));
        assert_eq!(t(0x4020_0000), Some((0x4020_0000, Memory::Normal)));
        assert_eq!(t(0x4040_0fff), Some((0x4040_0fff, Memory::Normal)));
        assert_eq!(
            t(0x4040_1000),
            None,
            "the partial last page is not the guest's"
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused() {
        let mut pool = vec![[0u64; ENTRIES]; 3];
        let two = [
            (Span::at(0x4000_0000, 0x20_0000), Memory::Normal),
            (Span::at(0x4010_0000, 0x1000), Memory::Device),
        ];
        assert_eq!(
            build(&mut pool, BASE, &two),
            Err(MapError::Overlap(0x4010_0000))
        );
        let far = [(Span::at(1 << 39, 0x1000), Memory::Normal)];
        assert!(matches!(
            build(&mut pool, BASE, &far),
            Err(MapError::OutOfRange(_))
        ));
        assert_eq!(
            build(&mut pool, BASE + 8, &dom0()),
            Err(MapError::Misaligned(BASE + 8))
        );
        assert_eq!(build(&mut pool, BASE, &dom0()), Err(MapError::NoTable));
    }
}
