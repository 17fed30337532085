// SPDX-License-Identifier: MIT OR Apache-2.0
//! The console UART's address, found in a DTB with no heap and no MMU.
//!
//! moat runs this before anything else is set up (for instance when it was entered at the
//! wrong exception level and must say so before parking). It walks the structure block
//! once with byte reads only (the MMU may be off, where unaligned accesses fault), follows
//! `/chosen/stdout-path` (or an `/aliases` entry it names) and returns the first `reg`
//! address of that node, read with the root's `#address-cells`. Every read is bounds
//! checked: a corrupt blob gives `None`, never a fault.

/// Header magic.
const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Deepest node path followed.
const MAX_DEPTH: usize = 16;
/// Most tokens walked: bounds the work on a corrupt blob.
const MAX_TOKENS: usize = 1 << 20;

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from(s[0]) << 24 | u32::from(s[1]) << 16 | u32::from(s[2]) << 8 | u32::from(s[3]))
}

fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..n])
}

fn align4(x: usize) -> Option<usize> {
    x.checked_add(3).map(|v| v & !3)
}

/// Visit every property as (path components so far, property name, value).
fn walk<'a>(b: &'a [u8], mut f: impl FnMut(&[&'a [u8]], &'a [u8], &'a [u8]) -> bool) -> Option<()> {
    if be32(b, 0)? != MAGIC {
        return None;
    }
    let total = (be32(b, 4)? as usize).min(b.len());
    let b = &b[..total];
    let structs = be32(b, 8)? as usize;
    let strings = be32(b, 12)? as usize;
    let mut path: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
    let mut depth = 0usize;
    let mut off = structs;
    for _ in 0..MAX_TOKENS {
        let tok = be32(b, off)?;
        off += 4;
        match tok {
            BEGIN_NODE => {
                let name = cstr(b, off)?;
                off = align4(off + name.len() + 1)?;
                if depth >= MAX_DEPTH {
                    return None;
                }
                path[depth] = name;
                depth += 1;
            }
            END_NODE => depth = depth.checked_sub(1)?,
            PROP => {
                let len = be32(b, off)? as usize;
                let nameoff = be32(b, off + 4)? as usize;
                let value = b.get(off + 8..(off + 8).checked_add(len)?)?;
                let name = cstr(b, strings.checked_add(nameoff)?)?;
                if f(&path[..depth], name, value) {
                    return Some(());
                }
                off = align4(off + 8 + len)?;
            }
            NOP => {}
            END => return Some(()),
            _ => return None,
        }
    }
    None
}

/// Does the node at `path` (root first, root named "") match the textual `want` path?
fn path_is(path: &[&[u8]], want: &[u8]) -> bool {
    let mut parts = want.split(|&c| c == b'/').filter(|p| !p.is_empty());
    for comp in path.iter().skip(1) {
        match parts.next() {
            Some(p) if p == *comp => {}
            // "/pl011" may name "pl011@9000000" when the unit address is unique.
            Some(p) if comp.starts_with(p) && comp.get(p.len()) == Some(&b'@') => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// The console UART's base address, from `/chosen/stdout-path`.
pub fn console_base(dtb: &[u8]) -> Option<u64> {
    let mut stdout: Option<&[u8]> = None;
    let mut address_cells = 2u32;
    walk(dtb, |path, name, value| {
        if path.len() == 1 && name == b"#address-cells" {
            address_cells = be32(value, 0).unwrap_or(2);
        }
        if path.len() == 2 && path[1] == b"chosen" && name == b"stdout-path" {
            let v = value.split(|&c| c == 0).next().unwrap_or(&[]);
            stdout = Some(v.split(|&c| c == b':').next().unwrap_or(v));
        }
        false
    })?;
    let mut target = stdout?;
    if !target.starts_with(b"/") {
        // An alias: look it up in /aliases.
        let alias = target;
        let mut resolved = None;
        walk(dtb, |path, name, value| {
            if path.len() == 2 && path[1] == b"aliases" && name == alias {
                resolved = value.split(|&c| c == 0).next();
                return true;
            }
            false
        })?;
        target = resolved?;
    }
    let mut base = None;
    walk(dtb, |path, name, value| {
        if name == b"reg" && path_is(path, target) {
            base = match address_cells {
                1 => be32(value, 0).map(u64::from),
                2 => be32(value, 0)
                    .zip(be32(value, 4))
                    .map(|(hi, lo)| u64::from(hi) << 32 | u64::from(lo)),
                _ => None,
            };
            return true;
        }
        false
    })?;
    base
}

/// Whether the hypervisor command line (`/chosen/xen,xen-bootargs`) holds `option` as a
/// whole word. moat reads `noreboot` this way before, and whatever, the full boot
/// configuration parses: a fatal error must know whether to power off or park.
pub fn hv_option(dtb: &[u8], option: &[u8]) -> bool {
    let mut found = false;
    let _ = walk(dtb, |path, name, value| {
        if path.len() == 2 && path[1] == b"chosen" && name == b"xen,xen-bootargs" {
            let line = value.split(|&c| c == 0).next().unwrap_or(&[]);
            found = line
                .split(|c| c.is_ascii_whitespace())
                .any(|word| word == option);
            return true;
        }
        false
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNTIME: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-runtime-2g-smp2.dtb");
    const DUMPED: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-dumpdtb-2g-smp2.dtb");

    #[test]
    fn qemu_virt_console_is_found() {
        assert_eq!(console_base(RUNTIME), Some(0x0900_0000));
        assert_eq!(console_base(DUMPED), Some(0x0900_0000));
    }

    #[test]
    fn corrupt_blobs_give_none() {
        assert_eq!(console_base(&[]), None);
        assert_eq!(console_base(&RUNTIME[..100]), None);
        let mut bad = RUNTIME.to_vec();
        bad[8] = 0xff; // structure block offset beyond the blob
        assert_eq!(console_base(&bad), None);
        for cut in [64, 1000, 4000, RUNTIME.len() - 1] {
            let _ = console_base(&RUNTIME[..cut]);
        }
    }

    /// A DT with only `/chosen/xen,xen-bootargs = line`.
    fn chosen_with(line: &str) -> alloc::vec::Vec<u8> {
        let strings = b"xen,xen-bootargs\0".to_vec();
        let mut st = alloc::vec::Vec::new();
        let push = |v: &mut alloc::vec::Vec<u8>, w: u32| v.extend_from_slice(&w.to_be_bytes());
        push(&mut st, BEGIN_NODE);
        st.extend_from_slice(&[0, 0, 0, 0]); // root: empty name, padded
        push(&mut st, BEGIN_NODE);
        st.extend_from_slice(b"chosen\0\0");
        push(&mut st, PROP);
        let mut v = line.as_bytes().to_vec();
        v.push(0);
        push(&mut st, v.len() as u32);
        push(&mut st, 0);
        st.extend_from_slice(&v);
        while st.len() % 4 != 0 {
            st.push(0);
        }
        push(&mut st, END_NODE);
        push(&mut st, END_NODE);
        push(&mut st, END);
        let structs = 40u32;
        let strings_off = structs + st.len() as u32;
        let total = strings_off + strings.len() as u32;
        let mut b = alloc::vec::Vec::new();
        for w in [
            MAGIC,
            total,
            structs,
            strings_off,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            st.len() as u32,
        ] {
            push(&mut b, w);
        }
        b.extend_from_slice(&st);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn hypervisor_options_are_read_as_whole_words_even_when_others_are_bad() {
        let dt = chosen_with("dom0_mem=zzz noreboot console=dtuart");
        assert!(hv_option(&dt, b"noreboot"));
        assert!(!hv_option(
            &chosen_with("noreboot=0 xnoreboot"),
            b"noreboot"
        ));
        assert!(!hv_option(&chosen_with(""), b"noreboot"));
        // QEMU's DT has no xen,xen-bootargs at all.
        assert!(!hv_option(RUNTIME, b"noreboot"));
        // Truncated blobs: never a fault, and nothing found before the property.
        for cut in [0, 20, 60] {
            assert!(!hv_option(&dt[..cut], b"noreboot"));
        }
        let _ = hv_option(&dt[..dt.len() - 1], b"noreboot");
    }

    #[test]
    fn path_matching() {
        let p: [&[u8]; 2] = [b"", b"pl011@9000000"];
        assert!(path_is(&p, b"/pl011@9000000"));
        assert!(path_is(&p, b"/pl011"));
        assert!(!path_is(&p, b"/pl011@9040000"));
        assert!(!path_is(&p, b"/"));
    }
}
