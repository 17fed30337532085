// SPDX-License-Identifier: MIT OR Apache-2.0
//! A small, pure flattened-device-tree (DTB v17) writer.
//!
//! moat builds every guest's device tree with this writer: dom0's is derived from the host
//! DT ([`crate::dom0dt`]), and the owned [`super::Tree`] model serialises through it. The
//! output follows the Devicetree Specification v0.4, chapter 5 ("Flattened Devicetree
//! (DTB) Format"):
//!
//! ```text
//!  offset 0   +---------------------------+
//!             | header (40 bytes, §5.2)   |
//!             +---------------------------+  8-byte aligned
//!             | memory reservation block  |  (address, size) u64 pairs, (0, 0) ends (§5.3)
//!             +---------------------------+
//!             | structure block (§5.4)    |  BEGIN_NODE / PROP / END_NODE ... END
//!             +---------------------------+
//!             | strings block (§5.5)      |  NUL-terminated property names, de-duplicated
//!  totalsize  +---------------------------+
//! ```
//!
//! The writer enforces the structure rules (properties before subnodes, one root, balanced
//! nodes, bounded depth) and reports violations as [`FdtError`] instead of writing a blob
//! that a guest kernel would misparse.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{
    FdtError, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_PROP,
    FDT_VERSION, HEADER_SIZE, MAX_DEPTH,
};

/// Builds a DTB token by token. Create with [`FdtWriter::new`], add reservations, write the
/// root node (named `""`) and its subtree, then call [`FdtWriter::finish`].
#[derive(Debug, Default)]
pub struct FdtWriter {
    /// Memory reservation entries `(address, size)` (§5.3).
    reservations: Vec<(u64, u64)>,
    /// Structure block bytes written so far.
    structure: Vec<u8>,
    /// Strings block bytes written so far.
    strings: Vec<u8>,
    /// Offset of each name already in the strings block (de-duplication).
    string_offsets: BTreeMap<Vec<u8>, u32>,
    /// For each open node, outermost first: has it had a subnode yet?
    open: Vec<bool>,
    /// Has the root node been closed?
    root_done: bool,
    /// `boot_cpuid_phys` header field.
    boot_cpuid_phys: u32,
}

impl FdtWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a memory reservation entry (§5.3). A `(0, 0)` entry would terminate the block
    /// early, so it is rejected.
    pub fn add_reservation(&mut self, address: u64, size: u64) -> Result<(), FdtError> {
        if address == 0 && size == 0 {
            return Err(FdtError::WriterBadReservation);
        }
        self.reservations.push((address, size));
        Ok(())
    }

    /// Set the header's `boot_cpuid_phys` (§5.2).
    pub fn set_boot_cpuid_phys(&mut self, id: u32) {
        self.boot_cpuid_phys = id;
    }

    /// Open a node. The first node must be the root, named `""`; every other name must be
    /// non-empty and contain neither NUL nor `/`.
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        if self.root_done {
            return Err(FdtError::WriterSecondRoot);
        }
        let is_root = self.open.is_empty();
        if is_root != name.is_empty() || name.bytes().any(|b| b == 0 || b == b'/') {
            return Err(FdtError::WriterBadName);
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(FdtError::TooDeep);
        }
        if let Some(parent_has_child) = self.open.last_mut() {
            *parent_has_child = true;
        }
        self.open.push(false);
        self.push_u32(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        Ok(())
    }

    /// Close the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        if self.open.pop().is_none() {
            return Err(FdtError::WriterUnbalanced);
        }
        self.push_u32(FDT_END_NODE);
        if self.open.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    /// Write a property with a raw value into the innermost open node. Properties must
    /// precede the node's subnodes (§5.4.1).
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        match self.open.last() {
            None => return Err(FdtError::WriterNotInNode),
            Some(true) => return Err(FdtError::WriterPropAfterChild),
            Some(false) => {}
        }
        if name.is_empty() || name.bytes().any(|b| b == 0) {
            return Err(FdtError::WriterBadName);
        }
        let len = u32::try_from(value.len()).map_err(|_| FdtError::TooBig)?;
        let nameoff = self.string_offset(name)?;
        self.push_u32(FDT_PROP);
        self.push_u32(len);
        self.push_u32(nameoff);
        self.structure.extend_from_slice(value);
        self.pad();
        Ok(())
    }

    /// An empty (boolean) property such as `no-map` or `vpl011`.
    pub fn prop_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.property(name, &[])
    }

    /// A single 32-bit cell.
    pub fn prop_u32(&mut self, name: &str, value: u32) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A 64-bit value as two cells.
    pub fn prop_u64(&mut self, name: &str, value: u64) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A list of 32-bit cells.
    pub fn prop_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        self.property(name, &encode_cells(cells))
    }

    /// A NUL-terminated string.
    pub fn prop_string(&mut self, name: &str, value: &str) -> Result<(), FdtError> {
        self.property(name, &encode_stringlist(&[value])?)
    }

    /// A list of NUL-terminated strings (e.g. `compatible`).
    pub fn prop_stringlist(&mut self, name: &str, values: &[&str]) -> Result<(), FdtError> {
        self.property(name, &encode_stringlist(values)?)
    }

    /// A `reg`-style list of `(address, size)` pairs with the parent's cell counts.
    pub fn prop_reg(
        &mut self,
        name: &str,
        address_cells: u32,
        size_cells: u32,
        entries: &[(u64, u64)],
    ) -> Result<(), FdtError> {
        self.property(name, &encode_reg(address_cells, size_cells, entries)?)
    }

    /// Finish the blob: the root must have been written and closed.
    pub fn finish(self) -> Result<Vec<u8>, FdtError> {
        if !self.root_done || !self.open.is_empty() {
            return Err(FdtError::WriterUnbalanced);
        }
        let rsv_off = HEADER_SIZE; // 40 is already 8-byte aligned
        let rsv_len = (self.reservations.len() + 1) * 16;
        let struct_off = rsv_off + rsv_len;
        let struct_len = self.structure.len() + 4; // + FDT_END
        let strings_off = struct_off + struct_len;
        let total = strings_off + self.strings.len();
        let field = |v: usize| u32::try_from(v).map_err(|_| FdtError::TooBig);

        let mut out = Vec::with_capacity(total);
        for v in [
            FDT_MAGIC,
            field(total)?,
            field(struct_off)?,
            field(strings_off)?,
            field(rsv_off)?,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            self.boot_cpuid_phys,
            field(self.strings.len())?,
            field(struct_len)?,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for (a, s) in self.reservations.iter().chain(core::iter::once(&(0, 0))) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&FDT_END.to_be_bytes());
        out.extend_from_slice(&self.strings);
        Ok(out)
    }

    fn push_u32(&mut self, v: u32) {
        self.structure.extend_from_slice(&v.to_be_bytes());
    }

    /// Pad the structure block to the next 4-byte boundary with zeroes (§5.4.1).
    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    /// The strings-block offset of `name`, adding it once (§5.5).
    fn string_offset(&mut self, name: &str) -> Result<u32, FdtError> {
        if let Some(off) = self.string_offsets.get(name.as_bytes()) {
            return Ok(*off);
        }
        let off = u32::try_from(self.strings.len()).map_err(|_| FdtError::TooBig)?;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(name.as_bytes().to_vec(), off);
        Ok(off)
    }
}

/// Encode 32-bit cells big-endian.
pub fn encode_cells(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// Encode a string list: each string NUL-terminated. Strings containing NUL are rejected.
pub fn encode_stringlist(values: &[&str]) -> Result<Vec<u8>, FdtError> {
    let mut out = Vec::new();
    for v in values {
        if v.bytes().any(|b| b == 0) {
            return Err(FdtError::WriterBadName);
        }
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// Encode `value` in `cells` 32-bit cells (0..=2), or fail if it does not fit.
pub fn encode_value(out: &mut Vec<u8>, cells: u32, value: u64) -> Result<(), FdtError> {
    match cells {
        0 if value == 0 => {}
        1 => out.extend_from_slice(
            &u32::try_from(value)
                .map_err(|_| FdtError::ValueTooWide)?
                .to_be_bytes(),
        ),
        2 => out.extend_from_slice(&value.to_be_bytes()),
        _ => return Err(FdtError::ValueTooWide),
    }
    Ok(())
}

/// Encode `reg`-style `(address, size)` pairs with the given cell counts.
pub fn encode_reg(
    address_cells: u32,
    size_cells: u32,
    entries: &[(u64, u64)],
) -> Result<Vec<u8>, FdtError> {
    let mut out = Vec::new();
    for &(a, s) in entries {
        encode_value(&mut out, address_cells, a)?;
        encode_value(&mut out, size_cells, s)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = FdtWriter::new();
        w.add_reservation(0x4800_0000, 0x1000).unwrap();
        w.begin_node("").unwrap();
        w.prop_u32("#address-cells", 2).unwrap();
        w.prop_u32("#size-cells", 2).unwrap();
        w.prop_string("model", "moat,test").unwrap();
        w.prop_stringlist("compatible", &["moat,test", "linux,dummy-virt"])
            .unwrap();
        w.begin_node("memory@40000000").unwrap();
        w.prop_string("device_type", "memory").unwrap();
        w.prop_reg("reg", 2, 2, &[(0x4000_0000, 0x8000_0000)])
            .unwrap();
        w.end_node().unwrap();
        w.begin_node("chosen").unwrap();
        w.prop_string("bootargs", "console=hvc0").unwrap();
        w.prop_u64("linux,initrd-start", 0x4800_0000).unwrap();
        w.prop_cells("cells", &[1, 2, 3]).unwrap();
        w.prop_empty("flag").unwrap();
        w.begin_node("module@1").unwrap();
        w.prop_stringlist("compatible", &["multiboot,kernel", "multiboot,module"])
            .unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_the_fdt_crate() {
        let blob = sample();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.total_size(), blob.len());
        let mem = fdt.find_node("/memory@40000000").unwrap();
        let r = mem.reg().unwrap().next().unwrap();
        assert_eq!(r.starting_address as usize, 0x4000_0000);
        assert_eq!(r.size, Some(0x8000_0000));
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=hvc0")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().as_usize(),
            Some(0x4800_0000)
        );
        assert_eq!(chosen.property("flag").unwrap().value.len(), 0);
        assert_eq!(
            chosen.property("cells").unwrap().value,
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        let m = fdt.find_node("/chosen/module@1").unwrap();
        let compat: Vec<&str> = m.compatible().unwrap().all().collect();
        assert_eq!(compat, ["multiboot,kernel", "multiboot,module"]);
        let rsv: Vec<_> = fdt.memory_reservations().map(|r| r.size()).collect();
        assert_eq!(rsv, [0x1000]);
        assert_eq!(fdt.all_nodes().count(), 4);
    }

    #[test]
    fn strings_are_deduplicated() {
        let blob = sample();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let n = fdt.strings().filter(|s| *s == "compatible").count();
        assert_eq!(n, 1);
    }

    #[test]
    fn header_fields_are_v17() {
        let blob = sample();
        let word = |i: usize| u32::from_be_bytes(blob[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), FDT_MAGIC);
        assert_eq!(word(1) as usize, blob.len());
        assert_eq!(word(5), 17);
        assert_eq!(word(6), 16);
        assert_eq!(word(4) % 8, 0);
    }

    #[test]
    fn structure_rules_are_enforced() {
        let mut w = FdtWriter::new();
        assert_eq!(w.property("x", &[]), Err(FdtError::WriterNotInNode));
        assert_eq!(w.begin_node("notroot"), Err(FdtError::WriterBadName));
        w.begin_node("").unwrap();
        assert_eq!(w.begin_node(""), Err(FdtError::WriterBadName));
        assert_eq!(w.begin_node("a/b"), Err(FdtError::WriterBadName));
        w.begin_node("a").unwrap();
        w.end_node().unwrap();
        assert_eq!(w.prop_u32("late", 1), Err(FdtError::WriterPropAfterChild));
        w.end_node().unwrap();
        assert_eq!(w.begin_node("again"), Err(FdtError::WriterSecondRoot));
        assert_eq!(w.end_node(), Err(FdtError::WriterUnbalanced));
        assert!(w.finish().is_ok());
        assert_eq!(FdtWriter::new().finish(), Err(FdtError::WriterUnbalanced));
        let mut w = FdtWriter::new();
        w.begin_node("").unwrap();
        for _ in 1..MAX_DEPTH {
            w.begin_node("n").unwrap();
        }
        assert_eq!(w.begin_node("n"), Err(FdtError::TooDeep));
    }

    #[test]
    fn reg_values_must_fit_their_cells() {
        assert_eq!(
            encode_reg(1, 1, &[(1 << 32, 1)]),
            Err(FdtError::ValueTooWide)
        );
        assert_eq!(encode_reg(3, 1, &[(1, 1)]), Err(FdtError::ValueTooWide));
        assert_eq!(encode_reg(1, 0, &[(5, 0)]).unwrap(), [0, 0, 0, 5]);
        assert_eq!(encode_stringlist(&["a\0b"]), Err(FdtError::WriterBadName));
    }
}
