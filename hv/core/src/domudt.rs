// SPDX-License-Identifier: MIT OR Apache-2.0
//! A domU's device tree, written from its [`DomUPlan`] the way Xen 4.17 writes one.
//!
//! Unlike dom0's ([`crate::dom0dt`]), a domU's DT is not derived from the host's: it
//! describes only the virtual machine moat emulates, in Xen's public guest layout
//! ([`crate::guest`]). Nodes and properties follow Xen's `prepare_dtb_domU`
//! (`xen/arch/arm/domain_build.c`), so that a kernel sees the same machine under moat and
//! under Xen:
//!
//! ```text
//!  /                                  model = "moat domU", compatible = "moat,domu"
//!    #address-cells = #size-cells = 2, interrupt-parent = <GIC>
//!  /chosen                            bootargs, linux,initrd-start/-end (64-bit),
//!                                     stdout-path = the vPL011 (when it has one)
//!  /psci                              arm,psci-1.0/0.2/psci, method = "hvc"
//!  /cpus/cpu@<mpidr>                  one per vCPU, reg = vgic::vcpu_mpidr(i),
//!                                     enable-method = "psci"
//!  /memory@40000000                   the plan's RAM banks
//!  /interrupt-controller@3001000      arm,gic-v3: GICD, one GICR region of n frames,
//!                                     phandle 65000 (GUEST_PHANDLE_GIC)
//!  /timer                             arm,armv8-timer: PPIs 13, 14, 11, level-low
//!  /sbsa-uart@22000000                arm,sbsa-uart, SPI 0 level-high, current-speed
//!  /firmware/optee                    linaro,optee-tz, method = "smc" (only with the TEE)
//! ```
//!
//! Where moat differs from Xen, and why:
//! - **Root `model` and `compatible`.** Xen's dom0less DT has neither (the Devicetree
//!   Specification requires both); `xl` writes `"xen,xenvm-4.17", "xen,xenvm"`. moat
//!   writes its own, `"moat,domu"`: claiming to be a Xen VM would lead software that
//!   checks to expect Xen's hypercalls, and nothing else in the DT depends on it.
//! - **`/chosen/stdout-path`.** Xen writes none; moat points it at the vPL011, so that the
//!   kernel's console and a bare `earlycon` find the UART without `console=`.
//! - **`/psci`** has no `cpu_on` / `cpu_off` function IDs: those are PSCI 0.1's, which
//!   Linux ignores once `arm,psci-0.2` is listed, and moat does not implement them.
//! - **`/firmware/optee`** says `method = "smc"` where `xl` writes `"hvc"`: moat hands
//!   Trusted-OS calls to the mediator only by SMC (`smccc::route`).
//! - **`/timer`** lists the three EL1 timers Xen lists (secure and non-secure physical,
//!   virtual). The binding's fourth, the EL2 timer, belongs to a hypervisor; a domU has no
//!   EL2.
//!
//! The vPL011 is described as Xen describes its own: an SBSA generic UART
//! (`arm,sbsa-uart`, with `current-speed` because Linux's SBSA driver reads the baud rate
//! from the DT instead of programming it). moat's [`crate::vpl011::Vpl011`] emulates a
//! full PL011, PrimeCell ID registers included, so `arm,pl011` would also probe, but
//! only with `apb_pclk` and `uartclk` clock nodes for Linux's AMBA bus; the SBSA form needs
//! none and matches Xen.
//!
//! Interrupt specifiers carry Xen's flags: bits \[15:8\] = 0xf (a GICv2-style CPU mask that
//! the GICv3 binding ignores) and the trigger in bits \[3:0\] (8 = level-low for the
//! timers, 4 = level-high for the UART).

use alloc::format;
use alloc::vec::Vec;

use crate::addr::{Ipa, Range};
use crate::dom0dt::PSCI_COMPATIBLE;
use crate::domu::DomUPlan;
use crate::fdt::{FdtError, FdtWriter};
use crate::guest;
use crate::vgic::vcpu_mpidr;

/// The root's `compatible`.
pub const COMPATIBLE: &str = "moat,domu";
/// The root's `model`.
pub const MODEL: &str = "moat domU";
/// `compatible` of the vPL011 node (Xen's `make_vpl011_uart_node`).
pub const UART_COMPATIBLE: &str = "arm,sbsa-uart";
/// The vPL011's `current-speed`: Xen's default, 115200 baud.
pub const UART_SPEED: u32 = 115_200;
/// Interrupt-specifier type cell: SPI.
const IRQ_SPI: u32 = 0;
/// Interrupt-specifier type cell: PPI.
const IRQ_PPI: u32 = 1;
/// Xen's CPU-mask bits \[15:8\] of the flags cell.
const IRQ_CPU_MASK: u32 = 0xf << 8;
/// Flags trigger: level, active-high (`IRQ_TYPE_LEVEL_HIGH`).
const IRQ_LEVEL_HIGH: u32 = 4;
/// Flags trigger: level, active-low (`IRQ_TYPE_LEVEL_LOW`).
const IRQ_LEVEL_LOW: u32 = 8;

/// Why a domU's DT cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomUDtError {
    /// The writer refused a value (a NUL in `bootargs`, a name it cannot write).
    Fdt(FdtError),
    /// The DT is larger than the window the plan reserved for it.
    TooBig {
        /// Bytes written.
        size: usize,
        /// Bytes of the window.
        window: u64,
    },
}

impl From<FdtError> for DomUDtError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl From<DomUDtError> for crate::error::Error {
    fn from(e: DomUDtError) -> Self {
        Self::DomUDt(e)
    }
}

/// Write the DTB for `plan`; it fits in `plan.dtb`.
pub fn build(plan: &DomUPlan) -> Result<Vec<u8>, DomUDtError> {
    let (ac, sc) = (
        guest::GUEST_ROOT_ADDRESS_CELLS,
        guest::GUEST_ROOT_SIZE_CELLS,
    );
    let gic = guest::GUEST_PHANDLE_GIC;
    let uart = plan
        .vpl011
        .map(|u| (u, format!("sbsa-uart@{:x}", u.regs.start.raw())));
    let mut w = FdtWriter::new();
    w.begin_node("")?;
    w.prop_string("model", MODEL)?;
    w.prop_stringlist("compatible", &[COMPATIBLE])?;
    w.prop_u32("#address-cells", ac)?;
    w.prop_u32("#size-cells", sc)?;
    w.prop_u32("interrupt-parent", gic)?;

    w.begin_node("chosen")?;
    if let Some(args) = &plan.bootargs {
        w.prop_string("bootargs", args)?;
    }
    if let Some(r) = &plan.ramdisk {
        w.prop_u64("linux,initrd-start", r.to.start.raw())?;
        w.prop_u64("linux,initrd-end", r.to.end.raw())?;
    }
    if let Some((_, name)) = &uart {
        w.prop_string("stdout-path", &format!("/{name}"))?;
    }
    w.end_node()?;

    w.begin_node("psci")?;
    w.prop_stringlist("compatible", &PSCI_COMPATIBLE)?;
    w.prop_string("method", "hvc")?;
    w.end_node()?;

    w.begin_node("cpus")?;
    w.prop_u32("#address-cells", 1)?;
    w.prop_u32("#size-cells", 0)?;
    for i in 0..plan.vcpus() {
        let mpidr = vcpu_mpidr(i);
        w.begin_node(&format!("cpu@{mpidr:x}"))?;
        w.prop_string("device_type", "cpu")?;
        w.prop_stringlist("compatible", &["arm,armv8"])?;
        w.prop_reg("reg", 1, 0, &[(mpidr, 0)])?;
        w.prop_string("enable-method", "psci")?;
        w.end_node()?;
    }
    w.end_node()?;

    let first = plan.ram.first().map_or(0, |r| r.start.raw());
    w.begin_node(&format!("memory@{first:x}"))?;
    w.prop_string("device_type", "memory")?;
    let banks: Vec<(u64, u64)> = plan.ram.iter().map(pair).collect();
    w.prop_reg("reg", ac, sc, &banks)?;
    w.end_node()?;

    w.begin_node(&format!("interrupt-controller@{:x}", plan.gicd.start.raw()))?;
    w.prop_stringlist("compatible", &["arm,gic-v3"])?;
    w.prop_u32("#interrupt-cells", 3)?;
    w.prop_u32("#address-cells", 0)?;
    w.prop_empty("interrupt-controller")?;
    w.prop_u32("#redistributor-regions", guest::GUEST_GICV3_RDIST_REGIONS)?;
    w.prop_reg("reg", ac, sc, &[pair(&plan.gicd), pair(&plan.gicr)])?;
    w.prop_u32("linux,phandle", gic)?;
    w.prop_u32("phandle", gic)?;
    w.end_node()?;

    w.begin_node("timer")?;
    w.prop_stringlist("compatible", &["arm,armv8-timer"])?;
    let mut timers = Vec::new();
    for intid in [
        guest::GUEST_TIMER_PHYS_S_PPI,
        guest::GUEST_TIMER_PHYS_NS_PPI,
        guest::GUEST_TIMER_VIRT_PPI,
    ] {
        timers.extend(irq(intid, IRQ_LEVEL_LOW));
    }
    w.prop_cells("interrupts", &timers)?;
    w.prop_u32("interrupt-parent", gic)?;
    w.end_node()?;

    if let Some((u, name)) = &uart {
        w.begin_node(name)?;
        w.prop_stringlist("compatible", &[UART_COMPATIBLE])?;
        w.prop_reg("reg", ac, sc, &[pair(&u.regs)])?;
        w.prop_cells("interrupts", &irq(u.intid, IRQ_LEVEL_HIGH))?;
        w.prop_u32("interrupt-parent", gic)?;
        w.prop_u32("current-speed", UART_SPEED)?;
        w.end_node()?;
    }

    if plan.tee {
        w.begin_node("firmware")?;
        w.begin_node("optee")?;
        w.prop_stringlist("compatible", &["linaro,optee-tz"])?;
        w.prop_string("method", "smc")?;
        w.end_node()?;
        w.end_node()?;
    }

    w.end_node()?;
    let dtb = w.finish()?;
    if dtb.len() as u64 > plan.dtb.len() {
        return Err(DomUDtError::TooBig {
            size: dtb.len(),
            window: plan.dtb.len(),
        });
    }
    Ok(dtb)
}

/// `(base, size)` of a range, for `reg`.
fn pair(r: &Range<Ipa>) -> (u64, u64) {
    (r.start.raw(), r.len())
}

/// A GICv3 interrupt specifier for `intid` (a PPI below 32, an SPI from 32 on) with Xen's
/// flags.
fn irq(intid: u32, trigger: u32) -> [u32; 3] {
    if intid < 32 {
        [IRQ_PPI, intid - 16, IRQ_CPU_MASK | trigger]
    } else {
        [IRQ_SPI, intid - 32, IRQ_CPU_MASK | trigger]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysAddr;
    use crate::domu::tests::{config, image, LIMITS};
    use crate::domu::{plan, Load};
    use crate::fdt::{stringlist, Node, Tree};
    use crate::vm::{vmpidr_el2, CpuPartition, DomainId};
    use alloc::string::String;
    use alloc::vec;
    extern crate std;

    /// The fixture's two domUs, domU1 with the TEE.
    fn plans() -> Vec<DomUPlan> {
        let mut cfg = config();
        cfg.domus[0].tee = true;
        cfg.domus[0].bootargs = Some(String::from("console=ttyAMA0 rdinit=/init"));
        let mut p = CpuPartition::new(8);
        p.assign_pinned(DomainId(0), &[0, 1]).unwrap();
        plan(&cfg, &mut p, &LIMITS, |_| image(0, 0x200_0000, 0)).unwrap()
    }

    fn parse(plan: &DomUPlan) -> Tree {
        Tree::parse(&build(plan).unwrap()).unwrap()
    }

    fn cells(v: &[u8]) -> Vec<u32> {
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn strings(n: &Node, prop: &str) -> Vec<String> {
        stringlist(n.prop(prop).unwrap())
            .map(String::from)
            .collect()
    }

    fn u64s(v: &[u8]) -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn every_node_of_a_tee_domain_with_a_console() {
        let plans = plans();
        let p = &plans[0];
        let t = parse(p);
        let root = &t.root;
        assert_eq!(root.prop_str("model"), Some(MODEL));
        assert_eq!(strings(root, "compatible"), [COMPATIBLE]);
        assert_eq!(root.prop_u32("#address-cells"), Some(2));
        assert_eq!(root.prop_u32("#size-cells"), Some(2));
        assert_eq!(root.prop_u32("interrupt-parent"), Some(65000));
        let names: Vec<&str> = root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "chosen",
                "psci",
                "cpus",
                "memory@40000000",
                "interrupt-controller@3001000",
                "timer",
                "sbsa-uart@22000000",
                "firmware"
            ]
        );

        let chosen = t.find("/chosen").unwrap();
        assert_eq!(
            chosen.prop_str("bootargs"),
            Some("console=ttyAMA0 rdinit=/init")
        );
        let rd = p.ramdisk.unwrap().to;
        assert_eq!(
            u64s(chosen.prop("linux,initrd-start").unwrap()),
            [rd.start.raw()]
        );
        assert_eq!(
            u64s(chosen.prop("linux,initrd-end").unwrap()),
            [rd.end.raw()]
        );
        assert_eq!(chosen.prop_str("stdout-path"), Some("/sbsa-uart@22000000"));
        assert!(t.find(chosen.prop_str("stdout-path").unwrap()).is_some());

        let psci = t.find("/psci").unwrap();
        assert_eq!(strings(psci, "compatible"), PSCI_COMPATIBLE);
        assert_eq!(psci.prop_str("method"), Some("hvc"));

        let cpus = t.find("/cpus").unwrap();
        assert_eq!(cpus.prop_u32("#address-cells"), Some(1));
        assert_eq!(cpus.prop_u32("#size-cells"), Some(0));
        assert_eq!(cpus.children.len(), 1);
        let c0 = t.find("/cpus/cpu@0").unwrap();
        assert_eq!(c0.prop_str("device_type"), Some("cpu"));
        assert_eq!(c0.prop_u32("reg"), Some(0));
        assert_eq!(c0.prop_str("enable-method"), Some("psci"));

        let mem = t.find("/memory@40000000").unwrap();
        assert_eq!(mem.prop_str("device_type"), Some("memory"));
        assert_eq!(u64s(mem.prop("reg").unwrap()), [0x4000_0000, 256 << 20]);

        let gic = t.find("/interrupt-controller@3001000").unwrap();
        assert_eq!(strings(gic, "compatible"), ["arm,gic-v3"]);
        assert_eq!(gic.prop_u32("#interrupt-cells"), Some(3));
        assert_eq!(gic.prop_u32("#address-cells"), Some(0));
        assert_eq!(gic.prop("interrupt-controller"), Some(&[][..]));
        assert_eq!(gic.prop_u32("#redistributor-regions"), Some(1));
        assert_eq!(gic.prop_u32("phandle"), Some(65000));
        assert_eq!(gic.prop_u32("linux,phandle"), Some(65000));
        assert_eq!(
            u64s(gic.prop("reg").unwrap()),
            [0x300_1000, 0x1_0000, 0x302_0000, 0x2_0000]
        );

        let timer = t.find("/timer").unwrap();
        assert_eq!(strings(timer, "compatible"), ["arm,armv8-timer"]);
        assert_eq!(
            cells(timer.prop("interrupts").unwrap()),
            [1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08]
        );
        assert_eq!(timer.prop_u32("interrupt-parent"), Some(65000));

        let uart = t.find("/sbsa-uart@22000000").unwrap();
        assert_eq!(strings(uart, "compatible"), ["arm,sbsa-uart"]);
        assert_eq!(u64s(uart.prop("reg").unwrap()), [0x2200_0000, 0x1000]);
        assert_eq!(cells(uart.prop("interrupts").unwrap()), [0, 0, 0xf04]);
        assert_eq!(uart.prop_u32("interrupt-parent"), Some(65000));
        assert_eq!(uart.prop_u32("current-speed"), Some(115_200));

        let optee = t.find("/firmware/optee").unwrap();
        assert_eq!(strings(optee, "compatible"), ["linaro,optee-tz"]);
        assert_eq!(optee.prop_str("method"), Some("smc"));
    }

    #[test]
    fn no_tee_no_console_no_ramdisk_means_no_such_nodes() {
        let plans = plans();
        let p = &plans[1];
        let t = parse(p);
        assert!(t.find("/firmware").is_none());
        assert!(t.find("/firmware/optee").is_none());
        assert!(t.find("/sbsa-uart@22000000").is_none());
        let chosen = t.find("/chosen").unwrap();
        assert_eq!(chosen.prop_str("bootargs"), Some("console=ttyAMA0"));
        for absent in ["linux,initrd-start", "linux,initrd-end", "stdout-path"] {
            assert!(chosen.prop(absent).is_none(), "{absent}");
        }
        let mut no_args = p.clone();
        no_args.bootargs = None;
        assert!(parse(&no_args)
            .find("/chosen")
            .unwrap()
            .prop("bootargs")
            .is_none());
        // Two vCPUs, two redistributor frames.
        assert_eq!(t.find("/cpus").unwrap().children.len(), 2);
        let gic = t.find("/interrupt-controller@3001000").unwrap();
        assert_eq!(
            u64s(gic.prop("reg").unwrap()),
            [0x300_1000, 0x1_0000, 0x302_0000, 0x4_0000]
        );
    }

    #[test]
    fn cpu_nodes_match_the_vgic_and_vmpidr() {
        let mut p = plans().remove(1);
        p.pcpus = (0..20).collect();
        p.gicr = guest::gicr(20).unwrap();
        let t = parse(&p);
        let cpus = t.find("/cpus").unwrap();
        assert_eq!(cpus.children.len(), 20);
        for (i, c) in cpus.children.iter().enumerate() {
            let reg = c.prop_u32("reg").unwrap();
            assert_eq!(u64::from(reg), vcpu_mpidr(i as u32));
            assert_eq!(u64::from(reg), vmpidr_el2(i) & 0xff_ffff);
            assert_eq!(c.name, format!("cpu@{reg:x}"));
        }
        // vCPU 16 starts the second cluster (Aff1 = 1).
        assert!(t.find("/cpus/cpu@100").is_some());
        let gic = t.find("/interrupt-controller@3001000").unwrap();
        assert_eq!(u64s(gic.prop("reg").unwrap())[3], 20 * 0x2_0000);
    }

    #[test]
    fn two_ram_banks_are_both_described() {
        let mut p = plans().remove(1);
        p.ram = vec![
            Range::<Ipa>::from_len(Ipa(0x4000_0000), 3 << 30).unwrap(),
            Range::<Ipa>::from_len(Ipa(0x2_0000_0000), 1 << 30).unwrap(),
        ];
        let t = parse(&p);
        assert_eq!(
            u64s(t.find("/memory@40000000").unwrap().prop("reg").unwrap()),
            [0x4000_0000, 3 << 30, 0x2_0000_0000, 1 << 30]
        );
    }

    #[test]
    fn the_dt_must_fit_its_window_and_strings_must_be_writable() {
        let mut p = plans().remove(0);
        let size = build(&p).unwrap().len();
        assert!(size < 4096, "{size}");
        p.dtb = Range::<Ipa>::from_len(p.dtb.start, 256).unwrap();
        assert_eq!(build(&p), Err(DomUDtError::TooBig { size, window: 256 }));
        let mut p = plans().remove(0);
        p.bootargs = Some(String::from("a\0b"));
        assert_eq!(build(&p), Err(DomUDtError::Fdt(FdtError::WriterBadName)));
    }

    #[test]
    fn the_fdt_crate_reads_it_too() {
        let p = plans().remove(0);
        let blob = build(&p).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some("/sbsa-uart@22000000")
        );
        assert!(fdt.find_node("/firmware/optee").is_some());
        let mem = fdt.find_node("/memory@40000000").unwrap();
        let r = mem.reg().unwrap().next().unwrap();
        assert_eq!(r.starting_address as u64, 0x4000_0000);
        // The loads a plan asks for are consistent with what the DT says.
        let Load { to, .. } = p.ramdisk.unwrap();
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().as_usize(),
            Some(to.start.raw() as usize)
        );
        assert_ne!(p.kernel.from.start, PhysAddr(p.kernel.to.start.raw()));
    }

    /// `dtc -I dtb -O dts` accepts the blob (skipped, saying so, when dtc is absent).
    #[test]
    fn dtc_accepts_it() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for p in plans() {
            let blob = build(&p).unwrap();
            let child = Command::new("dtc")
                .args(["-I", "dtb", "-O", "dts", "-o", "-", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                std::eprintln!("dtc_accepts_it: skipped, dtc is not installed");
                return;
            };
            child.stdin.take().unwrap().write_all(&blob).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dtc failed: {stderr}");
            assert!(stderr.is_empty(), "dtc warned: {stderr}");
            let dts = String::from_utf8_lossy(&out.stdout);
            assert!(dts.contains("compatible = \"arm,gic-v3\";"), "{dts}");
            assert_eq!(dts.contains("linaro,optee-tz"), p.tee, "{dts}");
        }
    }
}
