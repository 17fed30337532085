// SPDX-License-Identifier: MIT OR Apache-2.0
//! Dom0's device tree, derived from the host DT the way Xen derives it.
//!
//! Dom0 owns the platform's devices, so its DT is the host DT minus what the hypervisor
//! keeps, plus the virtual hardware moat emulates:
//!
//! ```text
//!  host DT node                         dom0 DT
//!  ------------------------------------ -------------------------------------------------
//!  /memory*  (device_type = "memory")   one /memory@<base> with dom0's banks (IPA == PA)
//!  /cpus                                n vCPUs cpu@<mpidr>, enable-method = "psci"
//!  /psci                                PSCI 1.0, method = "hvc"
//!  GICv3 (arm,gic-v3)                   same node, same phandle, virtual GIC: GICD + one
//!                                       GICR region of n frames; ITS / v2m children gone
//!  the hypervisor's UART                kept: it becomes the emulated vPL011 (same
//!                                       address, same IRQ)
//!  status = "disabled" +                removed (secure-only: pl011@9040000, secram,
//!    secure-status = "okay"             secflash, pl061 and its gpio users)
//!  /secure-chosen                       removed
//!  PMU (arm,armv8-pmuv3)                removed: moat does not virtualise the PMU
//!  msi-parent / msi-map                 removed: there is no ITS to point at
//!  /chosen                              bootargs, linux,initrd-start/-end, stdout-path;
//!                                       every xen,* / multiboot,* property and every
//!                                       module or domU node dropped
//!  /firmware/optee                      kept (dom0's SMCs trap to the mediator); removed
//!                                       with dom0_tee=no
//!  /reserved-memory                     kept; OP-TEE's SHM keeps (or gets) `no-map`
//!  /aliases                             entries naming a removed node dropped
//! ```
//!
//! **OP-TEE's static SHM window.** `/reserved-memory/optee_shm@...` is secure-world
//! property: OP-TEE reads and writes it on its own terms, and moat's mediator makes guests
//! use dynamic (registered) shared memory instead. So it is carved out of dom0's RAM banks
//! (and every other `no-map` reserved region with it), never mapped at stage-2, *and* its
//! `reserved-memory` node is kept with `no-map` so that Linux neither allocates from it nor
//! maps it, should the banks ever cover it. [`Dom0Dt::ram`] is the carved list: the
//! hypervisor maps exactly that, so the DT and stage-2 cannot disagree.
//!
//! Phandles are never renumbered: kept nodes keep theirs, and the GIC keeps the phandle
//! every `interrupt-parent` and `interrupt-map` refers to.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::addr::{PhysAddr, Range};
use crate::bootcfg::{BootConfig, ReservedKind, MAX_VCPUS};
use crate::fdt::writer::{encode_cells, encode_reg, encode_stringlist};
use crate::fdt::{FdtError, Node, ShortStr, Tree, MAX_DEPTH};
pub use crate::vgic::{vcpu_mpidr, GICR_FRAME_SIZE};

/// Most RAM banks dom0 may be given. Bounds the `reg` of dom0's memory node.
pub const MAX_DOM0_BANKS: usize = 16;
/// PSCI `compatible` strings dom0 sees: moat implements PSCI 1.0 (DEN 0022).
pub const PSCI_COMPATIBLE: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// `compatible` values of nodes dom0 never sees.
const DROPPED_COMPATIBLE: [&str; 6] = [
    "arm,gic-v3-its",
    "arm,gic-v2m-frame",
    "arm,armv8-pmuv3",
    "multiboot,module",
    "xen,domain",
    "xen,multiboot-module",
];

/// Why dom0's DT cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0DtError {
    /// The host DTB is malformed, or the result could not be written.
    Fdt(FdtError),
    /// A node the build relies on is missing from the host DT.
    MissingNode(ShortStr),
    /// `vcpus` is 0 or above [`MAX_VCPUS`].
    BadVcpuCount(u32),
    /// The host redistributor region is too small for this many vCPUs.
    RedistributorTooSmall {
        /// vCPUs asked for.
        vcpus: u32,
        /// Bytes available in the first host GICR region.
        available: u64,
    },
    /// No RAM left after carving out reserved regions, or more than [`MAX_DOM0_BANKS`].
    BadRam,
    /// The hypervisor's console UART is not in the host DT.
    NoConsoleUart,
}

/// What the hypervisor decided for dom0.
#[derive(Clone, Copy, Debug)]
pub struct Dom0Params<'a> {
    /// Dom0's RAM banks (1:1, IPA == PA), before reserved regions are carved out.
    pub ram: &'a [Range<PhysAddr>],
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel command line (normally `xen,dom0-bootargs`).
    pub bootargs: Option<&'a str>,
    /// Where the hypervisor placed dom0's ramdisk.
    pub initrd: Option<Range<PhysAddr>>,
    /// dom0 may call OP-TEE. Without it (`dom0_tee=no`), `/firmware/optee` is removed, as a
    /// domU without the TEE never sees it: dom0's driver then does not probe at all.
    pub tee: bool,
}

/// Dom0's DT and the RAM it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dom0Dt {
    /// The DTB to hand dom0 in x0.
    pub dtb: Vec<u8>,
    /// Dom0's RAM banks after carving: exactly what stage-2 must map as RAM.
    pub ram: Vec<Range<PhysAddr>>,
}

impl From<Dom0DtError> for crate::error::Error {
    fn from(e: Dom0DtError) -> Self {
        Self::Dom0Dt(e)
    }
}

impl From<FdtError> for Dom0DtError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

/// Build dom0's DT from the host DTB and the boot configuration parsed from it.
pub fn build(host_dtb: &[u8], cfg: &BootConfig, p: &Dom0Params<'_>) -> Result<Dom0Dt, Dom0DtError> {
    if p.vcpus == 0 || p.vcpus > MAX_VCPUS {
        return Err(Dom0DtError::BadVcpuCount(p.vcpus));
    }
    let uart = cfg.console_uart().ok_or(Dom0DtError::NoConsoleUart)?;
    let mut tree = Tree::parse(host_dtb)?;
    tree.reservations.clear(); // the host's reservations describe the host, not dom0

    let holes: Vec<Range<PhysAddr>> = cfg
        .reserved
        .iter()
        .filter(|r| r.no_map || r.kind == ReservedKind::OpteeShm)
        .map(|r| r.range)
        .collect();
    let ram = carve(p.ram, &holes);
    if ram.is_empty() || ram.len() > MAX_DOM0_BANKS {
        return Err(Dom0DtError::BadRam);
    }

    let root = &mut tree.root;
    let address_cells = root.prop_u32("#address-cells").unwrap_or(2);
    let size_cells = root.prop_u32("#size-cells").unwrap_or(1);
    prune(root, 1);

    // Memory: one node with every bank.
    let mut mem = Node::new(&format!("memory@{:x}", ram[0].start.raw()));
    mem.set_prop("device_type", encode_stringlist(&["memory"])?);
    let banks: Vec<(u64, u64)> = ram.iter().map(|r| (r.start.raw(), r.len())).collect();
    mem.set_prop("reg", encode_reg(address_cells, size_cells, &banks)?);
    root.children.push(mem);

    rebuild_cpus(root, p.vcpus)?;
    rebuild_psci(root)?;
    rebuild_gic(root, cfg, p.vcpus, address_cells, size_cells)?;
    rebuild_chosen(root, p, &uart.node, address_cells.max(1))?;
    if let Some(rm) = root.child_mut("reserved-memory") {
        for r in rm.children.iter_mut() {
            let r_is_shm = r.base_name() == "optee_shm";
            if r_is_shm || r.prop("no-map").is_some() {
                r.set_prop("no-map", Vec::new());
            }
        }
    }
    if !p.tee {
        if let Some(fw) = tree.root.child_mut("firmware") {
            fw.children.retain(|c| c.base_name() != "optee");
        }
    }
    drop_dangling_aliases(&mut tree);
    Ok(Dom0Dt {
        dtb: tree.to_dtb()?,
        ram,
    })
}

/// `banks` minus `holes`, in order, dropping empty pieces. At most
/// `banks.len() + holes.len()` pieces come out (each hole splits at most one more).
pub fn carve(banks: &[Range<PhysAddr>], holes: &[Range<PhysAddr>]) -> Vec<Range<PhysAddr>> {
    let mut out: Vec<Range<PhysAddr>> = banks.iter().copied().filter(|b| !b.is_empty()).collect();
    for h in holes {
        let mut next = Vec::with_capacity(out.len() + 1);
        for b in out {
            if !b.overlaps(h) {
                next.push(b);
                continue;
            }
            if b.start < h.start {
                next.push(Range {
                    start: b.start,
                    end: h.start,
                });
            }
            if h.end < b.end {
                next.push(Range {
                    start: h.end,
                    end: b.end,
                });
            }
        }
        out = next;
    }
    out
}

/// Is `n` usable only by the secure world (`status` not okay, `secure-status` okay)?
fn is_secure_only(n: &Node) -> bool {
    let ok = |s: Option<&str>| matches!(s, Some("okay") | Some("ok"));
    n.prop("status").is_some() && !ok(n.prop_str("status")) && ok(n.prop_str("secure-status"))
}

/// Does dom0 lose this node (it is rebuilt or never shown)?
fn is_dropped(n: &Node, depth: usize) -> bool {
    let memory = depth == 1 && n.prop_str("device_type") == Some("memory");
    is_secure_only(n)
        || memory
        || (depth == 1 && matches!(n.base_name(), "secure-chosen" | "cpus" | "psci"))
        || DROPPED_COMPATIBLE.iter().any(|c| n.is_compatible(c))
}

/// Remove what dom0 must not see, recursively (depth ≤ [`MAX_DEPTH`] by construction).
fn prune(n: &mut Node, depth: usize) {
    n.props.retain(|p| {
        !(p.name.starts_with("xen,")
            || p.name.starts_with("multiboot,")
            || p.name == "msi-parent"
            || p.name == "msi-map")
    });
    n.children.retain(|c| !is_dropped(c, depth));
    if depth < MAX_DEPTH {
        for c in n.children.iter_mut() {
            prune(c, depth + 1);
        }
    }
}

/// Remove `/aliases` entries naming a node dom0 no longer has (e.g. `serial1` for the
/// secure UART), so that no alias leads a guest driver to a missing device.
fn drop_dangling_aliases(tree: &mut Tree) {
    let Some(aliases) = tree.find("/aliases") else {
        return;
    };
    let dangling: Vec<String> = aliases
        .props
        .iter()
        .filter(|p| {
            let target = crate::fdt::stringlist(&p.value).next().unwrap_or("");
            !target.starts_with('/') || tree.find(target).is_none()
        })
        .map(|p| p.name.clone())
        .collect();
    if let Some(aliases) = tree.find_mut("/aliases") {
        aliases.props.retain(|p| !dangling.contains(&p.name));
    }
}

fn rebuild_cpus(root: &mut Node, vcpus: u32) -> Result<(), Dom0DtError> {
    let mut cpus = Node::new("cpus");
    cpus.set_prop("#address-cells", encode_cells(&[1]));
    cpus.set_prop("#size-cells", encode_cells(&[0]));
    for i in 0..vcpus {
        let mpidr = vcpu_mpidr(i);
        let mut c = Node::new(&format!("cpu@{mpidr:x}"));
        c.set_prop("device_type", encode_stringlist(&["cpu"])?);
        c.set_prop("compatible", encode_stringlist(&["arm,armv8"])?);
        c.set_prop("reg", encode_reg(1, 0, &[(mpidr, 0)])?);
        c.set_prop("enable-method", encode_stringlist(&["psci"])?);
        cpus.children.push(c);
    }
    root.children.push(cpus);
    Ok(())
}

fn rebuild_psci(root: &mut Node) -> Result<(), Dom0DtError> {
    let mut psci = Node::new("psci");
    psci.set_prop("compatible", encode_stringlist(&PSCI_COMPATIBLE)?);
    psci.set_prop("method", encode_stringlist(&["hvc"])?);
    root.children.push(psci);
    Ok(())
}

fn rebuild_gic(
    root: &mut Node,
    cfg: &BootConfig,
    vcpus: u32,
    address_cells: u32,
    size_cells: u32,
) -> Result<(), Dom0DtError> {
    let gic = &cfg.gic;
    let node = root
        .find_mut(&gic.node)
        .ok_or_else(|| Dom0DtError::MissingNode(ShortStr::new(&gic.node)))?;
    let first = gic
        .redists
        .first()
        .ok_or_else(|| Dom0DtError::MissingNode(ShortStr::new(&gic.node)))?;
    let needed = u64::from(vcpus) * GICR_FRAME_SIZE;
    if needed > first.len() {
        return Err(Dom0DtError::RedistributorTooSmall {
            vcpus,
            available: first.len(),
        });
    }
    let regs = [
        (gic.dist.start.raw(), gic.dist.len()),
        (first.start.raw(), needed),
    ];
    // Rebuild the properties: only what describes the virtual GIC survives. The
    // maintenance interrupt belongs to the hypervisor; ITS cells go with the ITS.
    // `#address-cells` stays: an `interrupt-map` naming the GIC as parent carries that many
    // parent unit-address cells per entry (the PCIe host's does), and Linux reads 0 if absent.
    let kept: Vec<_> = ["phandle", "linux,phandle", "#address-cells", "#size-cells"]
        .iter()
        .filter_map(|n| Some((*n, node.prop(n)?.to_vec())))
        .collect();
    node.props.clear();
    node.children.clear();
    node.set_prop("compatible", encode_stringlist(&["arm,gic-v3"])?);
    node.set_prop("#interrupt-cells", encode_cells(&[3]));
    node.set_prop("interrupt-controller", Vec::new());
    node.set_prop("#redistributor-regions", encode_cells(&[1]));
    node.set_prop("reg", encode_reg(address_cells, size_cells, &regs)?);
    for (name, value) in kept {
        node.set_prop(name, value);
    }
    Ok(())
}

fn rebuild_chosen(
    root: &mut Node,
    p: &Dom0Params<'_>,
    uart_path: &str,
    initrd_cells: u32,
) -> Result<(), Dom0DtError> {
    if root.child("chosen").is_none() {
        root.children.push(Node::new("chosen"));
    }
    let chosen = root
        .child_mut("chosen")
        .ok_or_else(|| Dom0DtError::MissingNode(ShortStr::new("/chosen")))?;
    // Module cells described the multiboot modules, which are gone.
    for name in [
        "#address-cells",
        "#size-cells",
        "bootargs",
        "linux,initrd-start",
        "linux,initrd-end",
        "stdin-path",
    ] {
        chosen.remove_prop(name);
    }
    chosen.children.clear();
    if let Some(args) = p.bootargs {
        chosen.set_prop("bootargs", encode_stringlist(&[args])?);
    }
    if let Some(r) = p.initrd {
        let enc = |v: u64| encode_reg(initrd_cells, 0, &[(v, 0)]);
        chosen.set_prop("linux,initrd-start", enc(r.start.raw())?);
        chosen.set_prop("linux,initrd-end", enc(r.end.raw())?);
    }
    chosen.set_prop("stdout-path", encode_stringlist(&[uart_path])?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::tests::xen_tree;
    use alloc::vec;

    fn pa(base: u64, len: u64) -> Range<PhysAddr> {
        Range::<PhysAddr>::from_len(PhysAddr(base), len).unwrap()
    }

    struct Built {
        tree: Tree,
        dom0: Dom0Dt,
    }

    fn build_with(vcpus: u32, ram: &[Range<PhysAddr>]) -> Result<Built, Dom0DtError> {
        let host = xen_tree().to_dtb().unwrap();
        let cfg = BootConfig::parse(&host).unwrap();
        let p = Dom0Params {
            ram,
            vcpus,
            bootargs: cfg.dom0.bootargs.as_deref(),
            initrd: Some(pa(0x4c00_0000, 0x80_0000)),
            tee: true,
        };
        let dom0 = build(&host, &cfg, &p)?;
        Ok(Built {
            tree: Tree::parse(&dom0.dtb).unwrap(),
            dom0,
        })
    }

    fn default_build() -> Built {
        build_with(2, &[pa(0x4000_0000, 0x4000_0000)]).unwrap()
    }

    fn all_nodes<'a>(n: &'a Node, path: String, out: &mut Vec<(String, &'a Node)>) {
        for c in &n.children {
            let p = format!("{path}/{}", c.name);
            out.push((p.clone(), c));
            all_nodes(c, p, out);
        }
    }

    fn nodes(t: &Tree) -> Vec<(String, &Node)> {
        let mut v = vec![(String::from("/"), &t.root)];
        all_nodes(&t.root, String::new(), &mut v);
        v
    }

    #[test]
    fn parses_back_with_the_fdt_crate() {
        let b = default_build();
        let fdt = ::fdt::Fdt::new(&b.dom0.dtb).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some("/pl011@9000000")
        );
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=hvc0 root=/dev/vda")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().as_usize(),
            Some(0x4c00_0000)
        );
        assert_eq!(
            chosen.property("linux,initrd-end").unwrap().as_usize(),
            Some(0x4c80_0000)
        );
        let cpus: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(cpus, [0, 1]);
        let mem: Vec<_> = fdt
            .find_node("/memory")
            .unwrap()
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as usize, r.size.unwrap()))
            .collect();
        assert_eq!(mem, [(0x4000_0000, 0x200_0000), (0x4220_0000, 0x3de0_0000)]);
        // The fdt crate resolves the UART's interrupt parent to the (virtual) GIC.
        let uart = fdt.find_node("/pl011@9000000").unwrap();
        assert!(uart.interrupt_parent().is_none()); // inherited from the root
        let root_ip = fdt
            .root()
            .property("interrupt-parent")
            .unwrap()
            .as_usize()
            .unwrap();
        let gic = fdt.find_phandle(root_ip as u32).unwrap();
        assert_eq!(gic.name, "intc@8000000");
    }

    #[test]
    fn memory_is_dom0s_banks_without_optee_shm() {
        let b = default_build();
        assert_eq!(
            b.dom0.ram,
            [pa(0x4000_0000, 0x200_0000), pa(0x4220_0000, 0x3de0_0000)]
        );
        let mem: Vec<_> = b
            .tree
            .root
            .children
            .iter()
            .filter(|n| n.prop_str("device_type") == Some("memory"))
            .collect();
        assert_eq!(mem.len(), 1);
        assert_eq!(mem[0].name, "memory@40000000");
        let shm = b.tree.find("/reserved-memory/optee_shm@42000000").unwrap();
        assert!(shm.prop("no-map").is_some());
        assert!(b.tree.find("/reserved-memory/optee_core@e100000").is_some());
        assert!(b
            .dom0
            .ram
            .iter()
            .all(|r| !r.overlaps(&pa(0x4200_0000, 0x20_0000))));
    }

    #[test]
    fn cpus_and_psci_are_virtual() {
        let b = build_with(3, &[pa(0x4000_0000, 0x4000_0000)]).unwrap();
        let cpus = b.tree.find("/cpus").unwrap();
        assert_eq!(cpus.children.len(), 3);
        for (i, c) in cpus.children.iter().enumerate() {
            assert_eq!(c.prop_u32("reg"), Some(i as u32));
            assert_eq!(c.prop_str("enable-method"), Some("psci"));
            assert_eq!(c.prop_str("device_type"), Some("cpu"));
        }
        assert!(cpus.child("cpu-map").is_none());
        let psci = b.tree.find("/psci").unwrap();
        assert_eq!(psci.prop_str("method"), Some("hvc"));
        assert!(psci.is_compatible("arm,psci-1.0"));
        assert!(psci.prop("cpu_on").is_none());
        assert_eq!(vcpu_mpidr(17), 0x101);
    }

    #[test]
    fn gic_describes_the_virtual_gic_with_the_same_phandle() {
        let b = default_build();
        let gic = b.tree.find("/intc@8000000").unwrap();
        assert!(gic.is_compatible("arm,gic-v3"));
        assert_eq!(gic.prop_u32("phandle"), Some(0x8003));
        assert_eq!(gic.prop_u32("#redistributor-regions"), Some(1));
        assert!(gic.prop("interrupt-controller").is_some());
        assert!(gic.children.is_empty(), "ITS must be gone");
        assert!(gic.prop("interrupts").is_none());
        assert_eq!(gic.prop_u32("#address-cells"), Some(2));
        let reg = crate::fdt::decode_reg(gic.prop("reg").unwrap(), 2, 2).unwrap();
        assert_eq!(
            reg,
            [(0x800_0000, 0x1_0000), (0x80a_0000, 2 * GICR_FRAME_SIZE)]
        );
        // Every phandle reference in the tree still resolves.
        let all = nodes(&b.tree);
        let phandles: Vec<u32> = all
            .iter()
            .filter_map(|(_, n)| n.prop_u32("phandle"))
            .collect();
        for (path, n) in &all {
            if let Some(ip) = n.prop_u32("interrupt-parent") {
                assert!(
                    phandles.contains(&ip),
                    "{path}: dangling interrupt-parent {ip:#x}"
                );
            }
            assert!(
                n.prop("msi-map").is_none() && n.prop("msi-parent").is_none(),
                "{path}"
            );
        }
        let pcie = b.tree.find("/pcie@10000000").unwrap();
        let map = pcie.prop("interrupt-map").unwrap();
        assert_eq!(&map[16..20], &0x8003u32.to_be_bytes());
    }

    #[test]
    fn without_the_tee_dom0_sees_no_optee_node() {
        let host = xen_tree().to_dtb().unwrap();
        let cfg = BootConfig::parse(&host).unwrap();
        let ram = [pa(0x4000_0000, 0x4000_0000)];
        let p = Dom0Params {
            ram: &ram,
            vcpus: 1,
            bootargs: None,
            initrd: None,
            tee: false,
        };
        let t = Tree::parse(&build(&host, &cfg, &p).unwrap().dtb).unwrap();
        assert!(t.find("/firmware/optee").is_none());
        assert!(t.find("/firmware").is_some() && t.find("/timer").is_some());
        let with = Tree::parse(
            &build(&host, &cfg, &Dom0Params { tee: true, ..p })
                .unwrap()
                .dtb,
        )
        .unwrap();
        assert!(with.find("/firmware/optee").is_some());
    }

    #[test]
    fn secure_and_hypervisor_only_nodes_are_gone() {
        let b = default_build();
        let t = &b.tree;
        for gone in [
            "/pl011@9040000",
            "/secram@e000000",
            "/secflash@0",
            "/pl061@90b0000",
            "/gpio-restart",
            "/gpio-poweroff",
            "/secure-chosen",
            "/pmu",
        ] {
            assert!(t.find(gone).is_none(), "{gone} should be removed");
        }
        let uart = t.find("/pl011@9000000").unwrap();
        assert_eq!(
            crate::fdt::decode_reg(uart.prop("reg").unwrap(), 2, 2).unwrap(),
            [(0x900_0000, 0x1000)]
        );
        assert_eq!(
            uart.prop("interrupts").unwrap(),
            encode_cells(&[0, 1, 4]).as_slice()
        );
        assert!(t
            .find("/firmware/optee")
            .unwrap()
            .is_compatible("linaro,optee-tz"));

        assert!(t.find("/timer").is_some());
        assert!(t.find("/virtio_mmio@a000000").is_some());
        for (path, n) in nodes(t) {
            assert!(!is_secure_only(n), "{path}");
            for p in &n.props {
                assert!(
                    !p.name.starts_with("xen,") && !p.name.starts_with("multiboot,"),
                    "{path}: {}",
                    p.name
                );
            }
            assert!(!n.is_compatible("multiboot,module") && !n.is_compatible("xen,domain"));
        }
        let chosen = t.find("/chosen").unwrap();
        assert!(chosen.children.is_empty());
        assert!(chosen.prop("#address-cells").is_none());
        assert!(t.reservations.is_empty());
    }

    #[test]
    fn works_from_the_plain_runtime_fixture_too() {
        let host = include_bytes!("../tests/fixtures/qemu-virt-runtime-2g-smp2.dtb");
        let cfg = BootConfig::parse(host).unwrap();
        let p = Dom0Params {
            ram: &[pa(0x4000_0000, 0x8000_0000)],
            vcpus: 1,
            bootargs: None,
            initrd: None,
            tee: true,
        };
        let d = build(host, &cfg, &p).unwrap();
        let t = Tree::parse(&d.dtb).unwrap();
        let chosen = t.find("/chosen").unwrap();
        assert!(chosen.prop("bootargs").is_none());
        assert!(chosen.prop("linux,initrd-start").is_none());
        assert_eq!(t.find("/cpus").unwrap().children.len(), 1);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let ram = [pa(0x4000_0000, 0x4000_0000)];
        assert_eq!(
            build_with(0, &ram).err(),
            Some(Dom0DtError::BadVcpuCount(0))
        );
        assert_eq!(
            build_with(MAX_VCPUS + 1, &ram).err(),
            Some(Dom0DtError::BadVcpuCount(33))
        );
        assert_eq!(
            build_with(1, &[pa(0x4200_0000, 0x1000)]).err(),
            Some(Dom0DtError::BadRam)
        );
        assert_eq!(build_with(1, &[]).err(), Some(Dom0DtError::BadRam));

        let host = xen_tree().to_dtb().unwrap();
        let mut cfg = BootConfig::parse(&host).unwrap();
        cfg.gic.redists[0] = pa(0x80a_0000, GICR_FRAME_SIZE);
        let p = Dom0Params {
            ram: &ram,
            vcpus: 2,
            bootargs: None,
            initrd: None,
            tee: true,
        };
        assert_eq!(
            build(&host, &cfg, &p),
            Err(Dom0DtError::RedistributorTooSmall {
                vcpus: 2,
                available: GICR_FRAME_SIZE
            })
        );
        cfg.uarts.clear();
        assert_eq!(build(&host, &cfg, &p), Err(Dom0DtError::NoConsoleUart));
    }

    #[test]
    fn aliases_to_removed_nodes_are_dropped() {
        let mut host = xen_tree();
        let mut aliases = Node::new("aliases");
        aliases.set_prop("serial0", encode_stringlist(&["/pl011@9000000"]).unwrap());
        aliases.set_prop("serial1", encode_stringlist(&["/pl011@9040000"]).unwrap());
        host.root.children.push(aliases);
        let host = host.to_dtb().unwrap();
        let cfg = BootConfig::parse(&host).unwrap();
        let ram = [pa(0x4000_0000, 0x4000_0000)];
        let p = Dom0Params {
            ram: &ram,
            vcpus: 1,
            bootargs: None,
            initrd: None,
            tee: true,
        };
        let t = Tree::parse(&build(&host, &cfg, &p).unwrap().dtb).unwrap();
        let a = t.find("/aliases").unwrap();
        assert_eq!(a.prop_str("serial0"), Some("/pl011@9000000"));
        assert!(a.prop("serial1").is_none());
    }

    #[test]
    fn carving() {
        let banks = [pa(0x1000, 0x9000), pa(0x20000, 0x1000)];
        let holes = [
            pa(0x3000, 0x1000),
            pa(0x0, 0x2000),
            pa(0x20000, 0x1000),
            pa(0x9000, 0x10000),
        ];
        assert_eq!(
            carve(&banks, &holes),
            [pa(0x2000, 0x1000), pa(0x4000, 0x5000)]
        );
        assert_eq!(carve(&banks, &[]), banks);
    }
}
