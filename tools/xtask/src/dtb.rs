// SPDX-License-Identifier: MIT OR Apache-2.0
//! The device tree: QEMU's own, dumped with the same `-bios`, plus `/chosen` for the run.
//!
//! `/chosen` is described once, as a list of [`Edit`]s, and written either by `fdtput` into
//! the DTB file before QEMU starts (the direct boot) or by U-Boot's `fdt` command from
//! boot.scr (`--boot u-boot`, [`crate::uboot`]).
//!
//! The DTB must be dumped with the firmware present: without `-bios`, QEMU describes a GPIO
//! at 0x9030000 that is absent under secure=on, and Linux aborts probing it. At boot, TF-A
//! adds `/psci` and OP-TEE adds `/firmware/optee` and `/reserved-memory` to this DTB in
//! place, at 0x40000000.

use crate::qemu::Machine;
use crate::step::{self, Key};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// QEMU's DTB for `machine` booted with `bios` (cached by QEMU version, board and firmware).
pub fn base(cache: &Path, machine: &Machine, bios: &Path) -> Result<PathBuf> {
    let key = Key::new("dtb")
        .with("qemu", crate::host::qemu_version()?)
        .with("board", machine.board_args().join(" "))
        .with_file("bios", bios)?;
    let title = format!(
        "QEMU virt DTB (smp {}, {} MiB)",
        machine.smp, machine.mem_mib
    );
    let dir = step::cached(cache, &key, &title, |out, log| {
        let dtb = out.join("virt.dtb");
        log.run(
            Command::new("qemu-system-aarch64")
                .args(machine.board_args())
                .arg("-bios")
                .arg(bios)
                .arg("-machine")
                .arg(format!("dumpdtb={}", dtb.display())),
        )?;
        anyhow::ensure!(dtb.exists(), "QEMU did not write {}", dtb.display());
        Ok(())
    })?;
    Ok(dir.join("virt.dtb"))
}

/// A boot module for a hypervisor, in Xen's multiboot binding
/// (`docs/misc/arm/device-tree/booting.txt`): `/chosen/module@<addr>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The specific compatible, `multiboot,kernel` or `multiboot,ramdisk`; the generic
    /// `multiboot,module` is added after it.
    pub kind: &'static str,
    pub addr: u64,
    pub size: u64,
}

/// A dom0less domain (Xen's `docs/misc/arm/device-tree/booting.txt`): a `/chosen/domU<n>`
/// node with `compatible = "xen,domain"` and its boot modules as children.
#[derive(Clone, Debug)]
pub struct DomU {
    /// `domU<n>`.
    pub name: String,
    /// RAM in KiB (the binding's unit).
    pub memory_kib: u64,
    pub cpus: u32,
    /// An emulated PL011 for its console (`vpl011`).
    pub vpl011: bool,
    /// `xen,tee = "optee"` (the dom0less TEE RFC's property; stock Xen 4.17 lacks it).
    pub tee: bool,
    /// Its kernel command line (`bootargs` of the domain node).
    pub bootargs: String,
    pub modules: Vec<Module>,
}

/// What goes into `/chosen` for one run.
#[derive(Clone, Debug, Default)]
pub struct Chosen {
    /// The kernel command line (`bootargs`) when Linux is BL33; unset for hypervisors,
    /// which read `xen,xen-bootargs` and pass `xen,dom0-bootargs` on to dom0.
    pub bootargs: Option<String>,
    /// `[start, end)` of the initrd in guest physical memory, when Linux is BL33.
    pub initrd: Option<(u64, u64)>,
    /// The hypervisor's own command line (`xen,xen-bootargs`).
    pub xen_bootargs: Option<String>,
    /// dom0's kernel command line (`xen,dom0-bootargs`).
    pub dom0_bootargs: Option<String>,
    /// dom0's kernel and ramdisk.
    pub modules: Vec<Module>,
    /// dom0less domUs.
    pub domus: Vec<DomU>,
}

/// A property's value, as `fdtput -t` and U-Boot's `fdt set` both write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One string, or a string list (`compatible`).
    Strings(Vec<String>),
    /// 32-bit cells.
    Cells(Vec<u32>),
    /// An empty property (`vpl011`).
    Empty,
}

/// One edit of the DT, in the order it is made. The direct boot makes these edits with
/// `fdtput` before QEMU starts; `--boot u-boot` makes the very same ones, in the same order,
/// with U-Boot's `fdt` command in boot.scr (`crate::uboot`). Both go through libfdt, which
/// puts a new node before its existing siblings and a new property before the node's
/// others, so the same edits give the same tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Create the node at this path (its parent exists).
    Node(String),
    /// Set a property of an existing node.
    Prop {
        node: String,
        name: String,
        value: Value,
    },
}

/// A 64-bit value in two cells, as `#address-cells = <2>` / `#size-cells = <2>` want it.
fn cells(val: u64) -> [u32; 2] {
    [(val >> 32) as u32, (val & 0xffff_ffff) as u32]
}

fn prop(node: &str, name: &str, value: Value) -> Edit {
    Edit::Prop {
        node: node.to_string(),
        name: name.to_string(),
        value,
    }
}

fn string(node: &str, name: &str, val: &str) -> Edit {
    prop(node, name, Value::Strings(vec![val.to_string()]))
}

/// The edits that create boot module `m` under `parent` (two-cell `reg`).
fn module_edits(parent: &str, m: &Module) -> Vec<Edit> {
    let node = format!("{parent}/module@{:x}", m.addr);
    let mut reg = cells(m.addr).to_vec();
    reg.extend(cells(m.size));
    vec![
        Edit::Node(node.clone()),
        prop(
            &node,
            "compatible",
            Value::Strings(vec![m.kind.into(), "multiboot,module".into()]),
        ),
        prop(&node, "reg", Value::Cells(reg)),
    ]
}

/// The edits that write `chosen` into QEMU's DTB, in order.
pub fn chosen_edits(chosen: &Chosen) -> Vec<Edit> {
    let mut v = Vec::new();
    if let Some(b) = &chosen.bootargs {
        v.push(string("/chosen", "bootargs", b));
    }
    if let Some(b) = &chosen.xen_bootargs {
        v.push(string("/chosen", "xen,xen-bootargs", b));
    }
    if let Some(b) = &chosen.dom0_bootargs {
        v.push(string("/chosen", "xen,dom0-bootargs", b));
    }
    if !chosen.modules.is_empty() {
        // Module `reg`s use /chosen's own cells: two each, so any address fits.
        for name in ["#address-cells", "#size-cells"] {
            v.push(prop("/chosen", name, Value::Cells(vec![2])));
        }
    }
    for m in &chosen.modules {
        v.extend(module_edits("/chosen", m));
    }
    // A new node goes before its existing siblings: create the domains (and each domain's
    // modules) last first, so the DT lists them in order (moat numbers domUs in DT order).
    for dom in chosen.domus.iter().rev() {
        let node = format!("/chosen/{}", dom.name);
        v.push(Edit::Node(node.clone()));
        v.push(string(&node, "compatible", "xen,domain"));
        // Module `reg`s in two cells each, as under /chosen.
        v.push(prop(&node, "#address-cells", Value::Cells(vec![2])));
        v.push(prop(&node, "#size-cells", Value::Cells(vec![2])));
        v.push(prop(
            &node,
            "memory",
            Value::Cells(cells(dom.memory_kib).to_vec()),
        ));
        v.push(prop(&node, "cpus", Value::Cells(vec![dom.cpus])));
        if dom.vpl011 {
            v.push(prop(&node, "vpl011", Value::Empty));
        }
        if dom.tee {
            v.push(string(&node, "xen,tee", "optee"));
        }
        v.push(string(&node, "bootargs", &dom.bootargs));
        for m in dom.modules.iter().rev() {
            v.extend(module_edits(&node, m));
        }
    }
    if let Some((start, end)) = chosen.initrd {
        // Two cells, as /chosen's parent has #address-cells = <2>.
        for (name, val) in [("linux,initrd-start", start), ("linux,initrd-end", end)] {
            v.push(prop("/chosen", name, Value::Cells(cells(val).to_vec())));
        }
    }
    v
}

/// The `fdtput` invocation of one edit on the DTB file `dtb`, as data.
pub fn fdtput_args_of(dtb: &str, edit: &Edit) -> Vec<String> {
    match edit {
        Edit::Node(path) => vec!["-c".into(), dtb.into(), path.clone()],
        Edit::Prop { node, name, value } => {
            let (kind, vals): (&str, Vec<String>) = match value {
                Value::Strings(s) => ("s", s.clone()),
                Value::Cells(c) => ("u", c.iter().map(u32::to_string).collect()),
                // `-t x` with no value.
                Value::Empty => ("x", Vec::new()),
            };
            let mut a = vec![
                "-t".into(),
                kind.into(),
                dtb.into(),
                node.clone(),
                name.clone(),
            ];
            a.extend(vals);
            a
        }
    }
}

/// The `fdtput` invocations that write `chosen` into a DTB file, as data.
pub fn fdtput_args(dtb: &Path, chosen: &Chosen) -> Vec<Vec<String>> {
    let d = dtb.display().to_string();
    chosen_edits(chosen)
        .iter()
        .map(|e| fdtput_args_of(&d, e))
        .collect()
}

/// Big-endian u32 of a DTB header field at `offset`.
fn be32(dtb: &[u8], offset: usize) -> Option<u32> {
    let b = dtb.get(offset..offset + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `dtb` without the free space after its strings, as libfdt's `fdt_pack` (and so
/// `fdtput`) leaves it. QEMU's dump is 1 MiB, mostly free, and QEMU adds room when it loads
/// a `-dtb`: TF-A's BL2 opens at most 1 MiB (`PLAT_QEMU_DT_MAX_SIZE`) and OP-TEE refuses it
/// (`Invalid Device Tree ... error -3`). Only the layout QEMU writes is accepted: header,
/// reservations, structure, strings, in this order and back to back.
pub fn pack(dtb: &[u8]) -> Result<Vec<u8>> {
    const MAGIC: u32 = 0xd00d_feed;
    let field = |o: usize| be32(dtb, o).context("a DTB shorter than its header");
    anyhow::ensure!(field(0)? == MAGIC, "not a DTB (bad magic)");
    let total = field(4)? as usize;
    let (off_struct, off_strings, off_rsv) = (field(8)?, field(12)?, field(16)?);
    let size_strings = field(32)?;
    let size_struct = field(36)?;
    anyhow::ensure!(
        off_rsv <= off_struct
            && off_struct.checked_add(size_struct) == Some(off_strings)
            && total <= dtb.len(),
        "the DTB's blocks are not in QEMU's order (reservations, structure, strings)"
    );
    let end = (off_strings + size_strings) as usize;
    anyhow::ensure!(end <= total, "the DTB's strings end past its total size");
    let mut out = dtb[..end].to_vec();
    out[4..8].copy_from_slice(&(end as u32).to_be_bytes());
    Ok(out)
}

/// Copy `base` to `out`, packed ([`pack`]), with no `/chosen` of the run's: what U-Boot gets.
pub fn packed(base: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    let packed = pack(&bytes).with_context(|| format!("packing {}", base.display()))?;
    std::fs::write(out, packed).with_context(|| format!("writing {}", out.display()))
}

/// Copy `base` to `out` and write `chosen` into it.
pub fn with_chosen(base: &Path, out: &Path, chosen: &Chosen) -> Result<()> {
    std::fs::copy(base, out).with_context(|| format!("copying {}", base.display()))?;
    for args in fdtput_args(out, chosen) {
        let o = Command::new("fdtput")
            .args(&args)
            .output()
            .context("running fdtput")?;
        anyhow::ensure!(
            o.status.success(),
            "fdtput {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domu_is_a_xen_domain_node_with_its_modules() {
        let c = Chosen {
            domus: vec![DomU {
                name: "domU1".into(),
                memory_kib: 256 * 1024,
                cpus: 1,
                vpl011: true,
                tee: true,
                bootargs: "console=ttyAMA0".into(),
                modules: vec![Module {
                    kind: "multiboot,kernel",
                    addr: 0x6400_0000,
                    size: 0x100,
                }],
            }],
            ..Chosen::default()
        };
        let a = fdtput_args(Path::new("/r/v.dtb"), &c);
        let has = |want: &[&str]| {
            a.iter()
                .any(|x| x.ends_with(&want.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
        };
        assert!(has(&["/chosen/domU1", "compatible", "xen,domain"]));
        assert!(has(&["/chosen/domU1", "memory", "0", "262144"]));
        assert!(has(&["/chosen/domU1", "cpus", "1"]));
        assert!(has(&["/chosen/domU1", "vpl011"]));
        assert!(has(&["/chosen/domU1", "xen,tee", "optee"]));
        assert!(has(&[
            "/chosen/domU1/module@64000000",
            "reg",
            "0",
            "1677721600",
            "0",
            "256"
        ]));
        // Nodes are created before their properties.
        let create = a
            .iter()
            .position(|x| x == &["-c", "/r/v.dtb", "/chosen/domU1"])
            .unwrap();
        let first_prop = a
            .iter()
            .position(|x| x.contains(&"/chosen/domU1".to_string()) && x[0] == "-t")
            .unwrap();
        assert!(create < first_prop);
    }

    #[test]
    fn a_dtb_is_packed_to_the_end_of_its_strings() {
        // A 96-byte blob of QEMU's layout: header (0x28), no reservations past the
        // terminator (0x28..0x38), structure 0x38..0x48, strings 0x48..0x50, then free space.
        let mut d = vec![0u8; 96];
        for (o, v) in [
            (0, 0xd00d_feedu32),
            (4, 96),
            (8, 0x38),
            (12, 0x48),
            (16, 0x28),
            (32, 8),
            (36, 0x10),
        ] {
            d[o..o + 4].copy_from_slice(&v.to_be_bytes());
        }
        let p = pack(&d).unwrap();
        assert_eq!(p.len(), 0x50);
        assert_eq!(be32(&p, 4), Some(0x50));
        assert_eq!(p[8..], d[8..0x50]);
        let mut bad = d.clone();
        bad[0] = 0;
        assert!(pack(&bad).is_err());
        let mut gap = d.clone();
        gap[12..16].copy_from_slice(&0x4cu32.to_be_bytes());
        assert!(format!("{:#}", pack(&gap).unwrap_err()).contains("order"));
        assert!(pack(&d[..20]).is_err());
    }

    #[test]
    fn initrd_bounds_are_written_as_two_cells() {
        let c = Chosen {
            bootargs: Some("console=ttyAMA0".into()),
            initrd: Some((0x4800_0000, 0x1_0000_0010)),
            ..Chosen::default()
        };
        let a = fdtput_args(Path::new("/r/v.dtb"), &c);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0][5], "console=ttyAMA0");
        assert_eq!(a[1][4..], ["linux,initrd-start", "0", "1207959552"]);
        assert_eq!(a[2][4..], ["linux,initrd-end", "1", "16"]);
    }

    #[test]
    fn hypervisor_boots_get_xen_multiboot_modules() {
        let c = Chosen {
            xen_bootargs: Some("dom0_mem=512M dom0_max_vcpus=2".into()),
            dom0_bootargs: Some("console=hvc0".into()),
            modules: vec![
                Module {
                    kind: "multiboot,kernel",
                    addr: 0x5000_0000,
                    size: 0x20_0000,
                },
                Module {
                    kind: "multiboot,ramdisk",
                    addr: 0x4800_0000,
                    size: 0x1000,
                },
            ],
            ..Chosen::default()
        };
        let a = fdtput_args(Path::new("/r/v.dtb"), &c);
        assert!(a.iter().all(|x| !x.contains(&"bootargs".to_string())));
        assert!(a
            .iter()
            .any(|x| x[4..] == ["xen,xen-bootargs", "dom0_mem=512M dom0_max_vcpus=2"]));
        assert!(a
            .iter()
            .any(|x| x[4..] == ["xen,dom0-bootargs", "console=hvc0"]));
        assert!(a.iter().any(|x| x[4..] == ["#address-cells", "2"]));
        assert!(a
            .iter()
            .any(|x| x[..] == ["-c", "/r/v.dtb", "/chosen/module@50000000"]));
        assert!(a.iter().any(|x| x[3..]
            == [
                "/chosen/module@50000000",
                "compatible",
                "multiboot,kernel",
                "multiboot,module"
            ]));
        assert!(a.iter().any(|x| x[3..]
            == [
                "/chosen/module@48000000",
                "reg",
                "0",
                "1207959552",
                "0",
                "4096"
            ]));
    }
}
