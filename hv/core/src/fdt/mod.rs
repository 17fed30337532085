// SPDX-License-Identifier: MIT OR Apache-2.0
//! Flattened device trees: a bounded, validating reader into an owned [`Tree`], and a
//! writer ([`writer::FdtWriter`]).
//!
//! The host DT arrives from firmware (QEMU, TF-A, OP-TEE and the bootloader all edit it),
//! and moat derives every guest's DT from it. Two layers:
//!
//! ```text
//!   host DTB --Tree::parse--> Tree (owned, editable) --Tree::to_dtb--> guest DTB
//!       |                                                   ^
//!       +--normalize--> canonical DTB --fdt crate--> bootcfg |  (FdtWriter underneath)
//! ```
//!
//! [`Tree::parse`] checks every offset, length, name and token of the blob (Devicetree
//! Specification v0.4, chapter 5) and bounds the work by [`MAX_DTB_SIZE`] and
//! [`MAX_DEPTH`]. The `fdt` crate, which [`crate::bootcfg`] uses for lookups, indexes and
//! `expect`s on malformed blobs and skips `FDT_NOP` tokens only in some positions (TF-A's
//! libfdt edits leave NOPs; the runtime QEMU fixture has 29), so it is only ever handed the
//! output of [`normalize`]: a blob this module has validated and re-written without NOPs.

pub mod writer;

use alloc::string::String;
use alloc::vec::Vec;

pub use writer::FdtWriter;

/// Header `magic` (§5.2).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Header `version` written by the writer (§5.2).
pub const FDT_VERSION: u32 = 17;
/// Header `last_comp_version` written by the writer (§5.2).
pub const FDT_LAST_COMP_VERSION: u32 = 16;
/// Structure-block token: start of a node, followed by its NUL-terminated name (§5.4.1).
pub const FDT_BEGIN_NODE: u32 = 0x1;
/// Structure-block token: end of a node (§5.4.1).
pub const FDT_END_NODE: u32 = 0x2;
/// Structure-block token: a property, followed by `len`, `nameoff` and the value (§5.4.1).
pub const FDT_PROP: u32 = 0x3;
/// Structure-block token: ignored (§5.4.1).
pub const FDT_NOP: u32 = 0x4;
/// Structure-block token: end of the structure block (§5.4.1).
pub const FDT_END: u32 = 0x9;
/// Size of the v17 header in bytes (§5.2).
pub const HEADER_SIZE: usize = 40;
/// Deepest node nesting accepted or written (root = depth 1). Bounds the reader's stack,
/// the writer's recursion and `fdt` crate's 64-entry parent array; real trees use < 8.
pub const MAX_DEPTH: usize = 32;
/// Largest DTB accepted, in bytes. Bounds the work of parsing and copying a tree; the
/// Linux arm64 boot protocol limits a DTB to 2 MiB as well.
pub const MAX_DTB_SIZE: usize = 2 * 1024 * 1024;
/// Most memory-reservation entries read before the `(0, 0)` terminator.
pub const MAX_RESERVATIONS: usize = 64;

/// What can be wrong with a DTB, read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Shorter than its header or than `totalsize`.
    Truncated,
    /// `magic` is not `0xd00dfeed`.
    BadMagic,
    /// `version` below 17 or `last_comp_version` above 17.
    UnsupportedVersion(u32),
    /// `totalsize` above [`MAX_DTB_SIZE`], or a length that does not fit the format.
    TooBig,
    /// A block (`off_*` + `size_*`) lies outside `totalsize` or is misaligned.
    BadBlock,
    /// More than [`MAX_RESERVATIONS`] entries, or no `(0, 0)` terminator.
    BadReservations,
    /// An unknown token at this structure-block offset.
    BadToken(usize),
    /// A node or property name at this structure-block offset is unterminated, not UTF-8
    /// or misplaced (empty non-root name, a name offset outside the strings block).
    BadName(usize),
    /// A property at this structure-block offset runs past the block.
    BadProperty(usize),
    /// A property at this structure-block offset follows a subnode (§5.4.1).
    PropAfterChild(usize),
    /// Unbalanced BEGIN/END_NODE, a second root, or data after FDT_END.
    BadNesting(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Writer: a property or END_NODE outside any node.
    WriterNotInNode,
    /// Writer: a property after a subnode of the same node.
    WriterPropAfterChild,
    /// Writer: a bad node, property or string value (NUL, `/`, empty, or root misuse).
    WriterBadName,
    /// Writer: a second root node.
    WriterSecondRoot,
    /// Writer: `end_node` without `begin_node`, or `finish` with open nodes or no root.
    WriterUnbalanced,
    /// Writer: a `(0, 0)` reservation, which would end the block.
    WriterBadReservation,
    /// A value does not fit the given number of cells (or cells > 2).
    ValueTooWide,
}

/// Longest text kept in a [`ShortStr`], in bytes.
pub const SHORT_STR_LEN: usize = 38;

/// A short, `Copy` string for error reports (a node path, a boot option), so that errors
/// stay `Copy` and allocation-free. Longer text keeps its *tail* (the leaf of a path is
/// the informative part) and reports that it was cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortStr {
    buf: [u8; SHORT_STR_LEN],
    len: u8,
    cut: bool,
}

/// One property: name and raw big-endian value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prop {
    /// Property name.
    pub name: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
}

/// One node with its properties (in order) and subnodes (in order).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    /// Node name including any `@unit-address`; `""` for the root.
    pub name: String,
    /// Properties, in blob order.
    pub props: Vec<Prop>,
    /// Subnodes, in blob order.
    pub children: Vec<Node>,
}

/// An owned device tree: reservations, header CPU id and the root node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Memory reservation block entries `(address, size)`.
    pub reservations: Vec<(u64, u64)>,
    /// Header `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// The root node (name `""`).
    pub root: Node,
}

impl From<FdtError> for crate::error::Error {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl ShortStr {
    /// Keep `s`, or its last [`SHORT_STR_LEN`] bytes (on a character boundary).
    pub fn new(s: &str) -> Self {
        let mut start = s.len().saturating_sub(SHORT_STR_LEN);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        let tail = &s.as_bytes()[start..];
        let mut buf = [0; SHORT_STR_LEN];
        buf[..tail.len()].copy_from_slice(tail);
        Self {
            buf,
            len: tail.len() as u8,
            cut: start > 0,
        }
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Was the front of the text cut off?
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl core::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl core::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.cut {
            f.write_str("...")?;
        }
        f.write_str(self.as_str())
    }
}

impl Node {
    /// A node with no properties or children.
    pub fn new(name: &str) -> Self {
        Self {
            name: String::from(name),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The name without its `@unit-address`.
    pub fn base_name(&self) -> &str {
        base_name(&self.name)
    }

    /// The raw value of property `name`.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_slice())
    }

    /// Property `name` as one 32-bit cell.
    pub fn prop_u32(&self, name: &str) -> Option<u32> {
        self.prop(name).and_then(decode_u32)
    }

    /// Property `name` as a string (its first string if it is a list).
    pub fn prop_str(&self, name: &str) -> Option<&str> {
        self.prop(name).and_then(|v| stringlist(v).next())
    }

    /// Does the `compatible` list contain `compat`?
    pub fn is_compatible(&self, compat: &str) -> bool {
        self.prop("compatible")
            .is_some_and(|v| stringlist(v).any(|c| c == compat))
    }

    /// Set property `name` to `value`, replacing it in place or appending it.
    pub fn set_prop(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value,
            None => self.props.push(Prop {
                name: String::from(name),
                value,
            }),
        }
    }

    /// Remove property `name`; returns whether it existed.
    pub fn remove_prop(&mut self, name: &str) -> bool {
        let before = self.props.len();
        self.props.retain(|p| p.name != name);
        before != self.props.len()
    }

    /// The first child matching `name` exactly, or by base name when `name` has no `@`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| name_matches(&c.name, name))
    }

    /// Mutable [`Node::child`].
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children
            .iter_mut()
            .find(|c| name_matches(&c.name, name))
    }

    /// Look up a node by absolute-style path relative to this node (`"chosen/domU1"`).
    pub fn find(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |n, part| n.child(part))
    }

    /// Mutable [`Node::find`].
    pub fn find_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = self;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            node = node.child_mut(part)?;
        }
        Some(node)
    }

    fn write(&self, w: &mut FdtWriter) -> Result<(), FdtError> {
        w.begin_node(&self.name)?;
        for p in &self.props {
            w.property(&p.name, &p.value)?;
        }
        for c in &self.children {
            c.write(w)?;
        }
        w.end_node()
    }
}

impl Tree {
    /// Parse and validate a DTB (any version ≥ 17), skipping NOPs.
    pub fn parse(blob: &[u8]) -> Result<Self, FdtError> {
        let word = |i: usize| -> u32 { be32(blob, i * 4).unwrap_or(0) };
        if blob.len() < HEADER_SIZE {
            return Err(FdtError::Truncated);
        }
        if word(0) != FDT_MAGIC {
            return Err(FdtError::BadMagic);
        }
        let total = word(1) as usize;
        if total > MAX_DTB_SIZE {
            return Err(FdtError::TooBig);
        }
        if total > blob.len() || total < HEADER_SIZE {
            return Err(FdtError::Truncated);
        }
        let blob = &blob[..total];
        let (version, last_comp) = (word(5), word(6));
        if version < 17 || last_comp > 17 {
            return Err(FdtError::UnsupportedVersion(version));
        }
        let block = |off: usize, size: usize, align: usize| -> Result<&[u8], FdtError> {
            let end = off.checked_add(size).ok_or(FdtError::BadBlock)?;
            if off < HEADER_SIZE || end > total || !off.is_multiple_of(align) {
                return Err(FdtError::BadBlock);
            }
            Ok(&blob[off..end])
        };
        let structure = block(word(2) as usize, word(9) as usize, 4)?;
        let strings = block(word(3) as usize, word(8) as usize, 1)?;
        let rsv_off = word(4) as usize;
        let rsvmap = block(rsv_off, total - rsv_off.min(total), 8)?;

        let mut reservations = Vec::new();
        let mut i = 0;
        loop {
            let (Some(a), Some(s)) = (be64(rsvmap, i), be64(rsvmap, i + 8)) else {
                return Err(FdtError::BadReservations);
            };
            if a == 0 && s == 0 {
                break;
            }
            if reservations.len() >= MAX_RESERVATIONS {
                return Err(FdtError::BadReservations);
            }
            reservations.push((a, s));
            i += 16;
        }

        let root = parse_structure(structure, strings)?;
        Ok(Self {
            reservations,
            boot_cpuid_phys: word(7),
            root,
        })
    }

    /// Serialise as a DTB v17 with the writer.
    pub fn to_dtb(&self) -> Result<Vec<u8>, FdtError> {
        let mut w = FdtWriter::new();
        w.set_boot_cpuid_phys(self.boot_cpuid_phys);
        for &(a, s) in &self.reservations {
            w.add_reservation(a, s)?;
        }
        if !self.root.name.is_empty() {
            return Err(FdtError::WriterBadName);
        }
        self.root.write(&mut w)?;
        w.finish()
    }

    /// Look up a node by absolute path (`"/chosen"`, `"/"`).
    pub fn find(&self, path: &str) -> Option<&Node> {
        self.root.find(path)
    }

    /// Mutable [`Tree::find`].
    pub fn find_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.root.find_mut(path)
    }
}

/// Validate `blob` and re-write it canonically: no NOPs, de-duplicated strings, v17.
/// The result is safe to hand to the `fdt` crate.
pub fn normalize(blob: &[u8]) -> Result<Vec<u8>, FdtError> {
    Tree::parse(blob)?.to_dtb()
}

/// The name without its `@unit-address`.
pub fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Does node name `actual` match the lookup `wanted` (exactly, or by base name when
/// `wanted` has no unit address)?
pub fn name_matches(actual: &str, wanted: &str) -> bool {
    if wanted.contains('@') {
        actual == wanted
    } else {
        base_name(actual) == wanted
    }
}

/// A value of exactly one cell.
pub fn decode_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// Read a `cells`-cell number (1 or 2 cells; 0 cells is 0) from the front of `value`,
/// returning it and the rest.
pub fn take_cells(value: &[u8], cells: u32) -> Option<(u64, &[u8])> {
    match cells {
        0 => Some((0, value)),
        1 => Some((u64::from(be32(value, 0)?), value.get(4..)?)),
        2 => Some((be64(value, 0)?, value.get(8..)?)),
        _ => None,
    }
}

/// Decode a whole `reg`-style value into `(address, size)` pairs. `None` if the cell counts
/// are unsupported (> 2), the length is not a whole number of entries, or it is empty.
pub fn decode_reg(value: &[u8], address_cells: u32, size_cells: u32) -> Option<Vec<(u64, u64)>> {
    let entry = 4 * (address_cells as usize + size_cells as usize);
    if address_cells > 2 || size_cells > 2 || entry == 0 || value.is_empty() {
        return None;
    }
    if !value.len().is_multiple_of(entry) {
        return None;
    }
    let mut out = Vec::with_capacity(value.len() / entry);
    let mut rest = value;
    while !rest.is_empty() {
        let (a, r) = take_cells(rest, address_cells)?;
        let (s, r) = take_cells(r, size_cells)?;
        out.push((a, s));
        rest = r;
    }
    Some(out)
}

/// The strings of a string-list value (invalid UTF-8 entries are skipped).
pub fn stringlist(value: &[u8]) -> impl Iterator<Item = &str> {
    let value = value.strip_suffix(&[0]).unwrap_or(value);
    value
        .split(|b| *b == 0)
        .filter(move |_| !value.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated UTF-8 string at the front of `b`.
fn cstr(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|c| *c == 0)?;
    core::str::from_utf8(&b[..end]).ok()
}

/// Walk the structure block with an explicit stack (no recursion on blob input).
fn parse_structure(s: &[u8], strings: &[u8]) -> Result<Node, FdtError> {
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut off = 0;
    loop {
        let token = be32(s, off).ok_or(FdtError::BadNesting(off))?;
        let at = off;
        off += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name = s.get(off..).and_then(cstr).ok_or(FdtError::BadName(at))?;
                if root.is_some() || stack.is_empty() != name.is_empty() {
                    return Err(FdtError::BadName(at));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(FdtError::TooDeep);
                }
                off = align4(off + name.len() + 1);
                stack.push(Node::new(name));
            }
            FDT_PROP => {
                let len = be32(s, off).ok_or(FdtError::BadProperty(at))? as usize;
                let nameoff = be32(s, off + 4).ok_or(FdtError::BadProperty(at))? as usize;
                let value = s
                    .get(off + 8..off + 8 + len)
                    .ok_or(FdtError::BadProperty(at))?;
                let name = strings
                    .get(nameoff..)
                    .and_then(cstr)
                    .filter(|n| !n.is_empty())
                    .ok_or(FdtError::BadName(at))?;
                let node = stack.last_mut().ok_or(FdtError::BadNesting(at))?;
                if !node.children.is_empty() {
                    return Err(FdtError::PropAfterChild(at));
                }
                node.props.push(Prop {
                    name: String::from(name),
                    value: value.to_vec(),
                });
                off = align4(off + 8 + len);
            }
            FDT_END_NODE => {
                let node = stack.pop().ok_or(FdtError::BadNesting(at))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            FDT_NOP => {}
            FDT_END => {
                return match (root, stack.is_empty()) {
                    (Some(r), true) => Ok(r),
                    _ => Err(FdtError::BadNesting(at)),
                };
            }
            _ => return Err(FdtError::BadToken(at)),
        }
    }
}

fn align4(v: usize) -> usize {
    (v + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const RUNTIME: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-runtime-2g-smp2.dtb");
    const DUMP: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-dumpdtb-2g-smp2.dtb");

    #[test]
    fn parses_both_fixtures() {
        for blob in [RUNTIME, DUMP] {
            let t = Tree::parse(blob).unwrap();
            assert_eq!(t.root.prop_str("model"), Some("linux,dummy-virt"));
            assert!(t.find("/intc@8000000/its@8080000").is_some());
            assert!(t.find("/cpus/cpu@1").is_some());
        }
    }

    #[test]
    fn normalize_drops_nops_and_round_trips() {
        let t = Tree::parse(RUNTIME).unwrap();
        let canon = normalize(RUNTIME).unwrap();
        assert!(canon.len() < RUNTIME.len());
        assert_eq!(Tree::parse(&canon).unwrap(), t);
        let fdt = fdt::Fdt::new(&canon).unwrap();
        // The fdt crate sees every node once NOPs are gone.
        let ours = count(&t.root);
        assert_eq!(fdt.all_nodes().count(), ours);
        assert!(fdt
            .find_node("/chosen")
            .unwrap()
            .property("bootargs")
            .is_some());
    }

    fn count(n: &Node) -> usize {
        1 + n.children.iter().map(count).sum::<usize>()
    }

    #[test]
    fn edit_and_lookup() {
        let mut t = Tree::parse(RUNTIME).unwrap();
        let chosen = t.find_mut("/chosen").unwrap();
        chosen.set_prop("bootargs", b"x\0".to_vec());
        assert!(chosen.remove_prop("kaslr-seed"));
        assert!(!chosen.remove_prop("kaslr-seed"));
        assert_eq!(t.find("/chosen").unwrap().prop_str("bootargs"), Some("x"));
        assert!(t.find("/pl011@9000000").is_some());
        assert!(t.find("/pl011@9000001").is_none());
        assert!(t.find("/intc").unwrap().is_compatible("arm,gic-v3"));
        assert_eq!(t.find("/intc").unwrap().prop_u32("phandle"), Some(0x8003));
    }

    #[test]
    fn short_strings_keep_the_tail() {
        extern crate std;
        use std::format;
        let s = ShortStr::new("/chosen/domU1");
        assert_eq!((s.as_str(), s.is_cut()), ("/chosen/domU1", false));
        let long = format!("/{}/leaf", "x".repeat(100));
        let s = ShortStr::new(&long);
        assert!(s.is_cut() && s.as_str().ends_with("/leaf"));
        assert_eq!(s.as_str().len(), SHORT_STR_LEN);
        assert!(format!("{s}").starts_with("..."));
        let s = ShortStr::new(&"é".repeat(40));
        assert!(s.is_cut() && s.as_str().chars().all(|c| c == 'é'));
        assert_eq!(format!("{:?}", ShortStr::new("a")), "\"a\"");
    }

    #[test]
    fn decoders() {
        assert_eq!(
            decode_reg(&[0, 0, 0, 1, 0, 0, 0, 2], 1, 1),
            Some(vec![(1, 2)])
        );
        assert_eq!(
            decode_reg(&[0, 0, 0, 1, 0, 0, 0, 2], 2, 0),
            Some(vec![(0x1_0000_0002, 0)])
        );
        assert_eq!(decode_reg(&[0, 0, 0, 1, 0, 0], 1, 1), None);
        assert_eq!(decode_reg(&[], 1, 1), None);
        assert_eq!(decode_reg(&[0; 12], 3, 0), None);
        let l: Vec<&str> = stringlist(b"a\0bc\0").collect();
        assert_eq!(l, ["a", "bc"]);
        assert_eq!(stringlist(b"").count(), 0);
        assert_eq!(decode_u32(&[0, 0, 0]), None);
    }

    #[test]
    fn rejects_malformed_blobs_without_panicking() {
        assert_eq!(Tree::parse(&[0; 8]), Err(FdtError::Truncated));
        assert_eq!(Tree::parse(&[0; 64]), Err(FdtError::BadMagic));
        // Every truncation and every single-byte corruption of the fixture must give an
        // error or a tree, never a panic.
        let canon = normalize(RUNTIME).unwrap();
        for len in (0..canon.len()).step_by(7) {
            let _ = Tree::parse(&canon[..len]);
        }
        for i in (0..canon.len()).step_by(3) {
            let mut b = canon.clone();
            b[i] ^= 0xa5;
            let _ = Tree::parse(&b);
            let mut b = canon.clone();
            b[i] = 0xff;
            let _ = Tree::parse(&b);
        }
        let mut big = canon.clone();
        big[4..8].copy_from_slice(&(MAX_DTB_SIZE as u32 + 1).to_be_bytes());
        assert_eq!(Tree::parse(&big), Err(FdtError::TooBig));
    }

    #[test]
    fn rejects_property_after_child_and_deep_nesting() {
        let mut w = FdtWriter::new();
        w.begin_node("").unwrap();
        w.begin_node("a").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let mut blob = w.finish().unwrap();
        // Swap the child for a property by patching tokens: BEGIN_NODE "a" -> PROP.
        let s = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
        blob[s + 8..s + 12].copy_from_slice(&FDT_PROP.to_be_bytes());
        assert!(Tree::parse(&blob).is_err());

        let mut root = Node::new("");
        let mut n = &mut root;
        for _ in 0..MAX_DEPTH {
            n.children.push(Node::new("d"));
            n = &mut n.children[0];
        }
        let t = Tree {
            root,
            ..Tree::default()
        };
        assert_eq!(t.to_dtb(), Err(FdtError::TooDeep));
    }
}
