// SPDX-License-Identifier: MIT OR Apache-2.0
//! Boot configuration read from the host device tree.
//!
//! At boot, `hv` hands the DTB it was started with to [`BootConfig::parse`], which returns
//! everything moat decides with: RAM banks, physical CPUs, the GICv3, the PL011 UARTs, the
//! PSCI and OP-TEE conduits, `/reserved-memory`, and the domains to build from Xen's
//! dom0less / multiboot bindings in `/chosen` (Xen `docs/misc/arm/device-tree/booting.txt`):
//!
//! ```text
//! /chosen
//!   xen,xen-bootargs = "dom0_mem=512M dom0_max_vcpus=2 console=dtuart dtuart=/pl011@9000000"
//!   xen,dom0-bootargs = "console=hvc0 root=/dev/vda"
//!   #address-cells, #size-cells        cells of the module `reg`s below
//!   module@... compatible = "multiboot,kernel", "multiboot,module"; reg   dom0's kernel
//!   module@... compatible = "multiboot,ramdisk", "multiboot,module"; reg  dom0's ramdisk
//!   domU1 { compatible = "xen,domain"; memory = <KiB>; cpus = <n>; vpl011; nr_spis;
//!           xen,tee = "optee"; #address-cells, #size-cells; bootargs;
//!           module@... (kernel, ramdisk) }
//! ```
//!
//! Command lines follow booting.txt: `xen,xen-bootargs` is the hypervisor's and
//! `xen,dom0-bootargs` dom0's; plain `bootargs` is the hypervisor's only when no
//! `xen,xen-bootargs` exists but dom0 has arguments elsewhere, and dom0's otherwise. Xen
//! 4.4's legacy module compatibles are accepted, and a domain's first and second modules
//! without a specific compatible are its kernel and ramdisk.
//!
//! The DTB is first validated and canonicalised by [`crate::fdt::normalize`] (so the `fdt`
//! crate, which panics on some malformed blobs, only ever sees a clean one), then read with
//! the `fdt` crate. Every structural or semantic problem (missing `reg`, unsupported cells,
//! zero memory, `cpus = 0`, overlapping modules, unparsable numbers) is a [`BootCfgError`]
//! naming the node and property. The hypervisor command line is lenient instead: unknown
//! options are collected in [`HvArgs::unknown`] and reported, not fatal.
//!
//! **Domain nodes are read strictly.** A `xen,domain` node and its modules may carry only
//! the properties moat implements (`DOMU_PROPS`, `MODULE_PROPS` below). A Xen binding moat
//! does not implement (`direct-map`, `xen,static-mem`, `xen,enhanced`, `domain-cpupool`,
//! `xen,domain-p2m-mem-mb`, `xen,uefi-binary`, a `multiboot,device-tree` module, static
//! shared memory or event-channel nodes, `xen,cpupool` in `/chosen`, `xen,passthrough` on a
//! host device) is [`BootCfgError::Unsupported`]; anything else unknown is
//! [`BootCfgError::UnknownProperty`] or [`BootCfgError::UnknownNode`]; properties that
//! contradict each other are [`BootCfgError::Conflict`]. A configuration written for Xen
//! then either boots the same under moat or says why not, never half-applied.
//!
//! Limitation: addresses are read as written in `reg`; a node below a bus with a
//! non-empty `ranges` is not translated (QEMU virt puts every device at the root).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ::fdt::node::FdtNode;

use crate::addr::{PhysAddr, Range};
use crate::fdt::{self as dt, FdtError, ShortStr, MAX_DEPTH};

/// Most `/chosen/domU*` domains accepted. Bounds the per-domain state the hypervisor
/// allocates from a boot configuration.
pub const MAX_DOMUS: usize = 16;
/// Most vCPUs one domain may ask for (`cpus`, `dom0_max_vcpus`). Bounds vGIC redistributor
/// frames and per-vCPU state.
pub const MAX_VCPUS: u32 = crate::vgic::MAX_VCPUS as u32;
/// Most memory banks, CPUs, UARTs, reserved regions or modules kept from the host DT.
/// Bounds the lists built from firmware-provided input.
pub const MAX_ITEMS: usize = 64;

/// Why the host DT cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootCfgError {
    /// The blob itself is malformed.
    Fdt(FdtError),
    /// A required node is absent (`/cpus`, a memory node, the GICv3).
    MissingNode(&'static str),
    /// A required property is absent.
    MissingProperty {
        /// Path of the node.
        node: ShortStr,
        /// Property name.
        prop: &'static str,
    },
    /// A property has the wrong length or an unparsable value.
    BadProperty {
        /// Path of the node.
        node: ShortStr,
        /// Property name.
        prop: &'static str,
    },
    /// A memory bank, module or domain of size zero.
    ZeroSize {
        /// Path of the node.
        node: ShortStr,
    },
    /// `cpus = <0>`, or more than [`MAX_VCPUS`].
    BadVcpuCount {
        /// Path of the node (or `xen,xen-bootargs`).
        node: ShortStr,
    },
    /// Two boot modules overlap in memory.
    OverlappingModules {
        /// Path of the first module.
        first: ShortStr,
        /// Path of the second module.
        second: ShortStr,
    },
    /// Two kernels (or two ramdisks) for the same domain.
    DuplicateModule {
        /// Path of the second module.
        node: ShortStr,
    },
    /// A domU without a kernel module.
    MissingKernel {
        /// Path of the domain node.
        node: ShortStr,
    },
    /// A hypervisor command-line option with an unparsable value.
    BadBootArg {
        /// The whole option, e.g. `dom0_mem=12Q`.
        option: ShortStr,
    },
    /// More than [`MAX_DOMUS`] domains or [`MAX_ITEMS`] of something.
    TooMany(&'static str),
    /// A property or node from Xen's bindings that moat does not implement
    /// (`direct-map`, `xen,static-mem`, a `multiboot,device-tree` module, ...). Refused
    /// rather than ignored, so that a configuration never boots differently from what it
    /// asks for.
    Unsupported {
        /// Path of the node that carries it.
        node: ShortStr,
        /// The property (or the compatible of the node).
        prop: &'static str,
        /// What moat would have to implement, in a few words.
        feature: &'static str,
    },
    /// A property on a domain or domain-module node that is in no binding moat knows.
    UnknownProperty {
        /// Path of the node.
        node: ShortStr,
        /// The property as written.
        prop: ShortStr,
    },
    /// A child of a domain node that is neither its kernel nor its ramdisk module.
    UnknownNode {
        /// Path of the child node.
        node: ShortStr,
    },
    /// Two properties (or a property and its node's kind) that cannot both hold.
    Conflict {
        /// Path of the node.
        node: ShortStr,
        /// The refused property.
        prop: &'static str,
        /// What it conflicts with.
        with: &'static str,
        /// Why they cannot both hold.
        why: &'static str,
    },
    /// `xen,tee` names a TEE moat does not mediate.
    BadTee {
        /// Path of the domain node.
        node: ShortStr,
        /// The value as written.
        value: ShortStr,
    },
}

impl core::fmt::Display for BootCfgError {
    /// The line moat prints when it cannot boot: it names the node or the option at fault.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "the device tree is malformed ({e:?})"),
            Self::MissingNode(n) => write!(f, "the device tree has no {n} node"),
            Self::MissingProperty { node, prop } => {
                write!(f, "{node} has no `{prop}` property")
            }
            Self::BadProperty { node, prop } => {
                write!(
                    f,
                    "{node}: `{prop}` has a wrong length or an unusable value"
                )
            }
            Self::ZeroSize { node } => write!(f, "{node} has size zero"),
            Self::BadVcpuCount { node } => write!(
                f,
                "{node}: the vCPU count must be between 1 and {MAX_VCPUS}"
            ),
            Self::OverlappingModules { first, second } => {
                write!(f, "boot modules {first} and {second} overlap")
            }
            Self::DuplicateModule { node } => {
                write!(f, "{node} is a second kernel (or ramdisk) for its domain")
            }
            Self::MissingKernel { node } => write!(f, "{node} has no kernel module"),
            Self::BadBootArg { option } => write!(
                f,
                "hypervisor option `{option}` has a value moat cannot parse \
                 (xen,xen-bootargs; see docs/book/errors.md)"
            ),
            Self::TooMany(what) => write!(f, "too many {what}"),
            Self::Unsupported {
                node,
                prop,
                feature,
            } => write!(f, "{node}: moat does not implement `{prop}` ({feature})"),
            Self::UnknownProperty { node, prop } => write!(
                f,
                "{node}: moat does not know the property `{prop}` \
                 (a typo, or a binding moat does not take)"
            ),
            Self::UnknownNode { node } => write!(
                f,
                "{node}: moat does not know this node (a domain holds only its \
                 kernel and ramdisk modules)"
            ),
            Self::Conflict {
                node,
                prop,
                with,
                why,
            } => write!(f, "{node}: `{prop}` conflicts with {with}: {why}"),
            Self::BadTee { node, value } => write!(
                f,
                "{node}: xen,tee = \"{value}\": moat mediates only \"optee\" \
                 (\"none\" or no property: no TEE)"
            ),
        }
    }
}

/// A DT `status` / `secure-status` value (Devicetree Specification v0.4, §2.3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `"okay"` (or the legacy `"ok"`): operational.
    Okay,
    /// `"disabled"`: not operational, but might become so.
    Disabled,
    /// `"reserved"`: operational but used by other software.
    Reserved,
    /// `"fail"` / `"fail-sss"`, or any unrecognised value.
    Fail,
}

/// How a firmware interface is called (`method` of `/psci` and `/firmware/optee`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `"smc"`: Secure Monitor Call to EL3.
    Smc,
    /// `"hvc"`: Hypervisor Call to EL2.
    Hvc,
}

/// An interrupt's trigger, from the GICv3 binding's third cell (bits 3..0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// 1: rising edge.
    Edge,
    /// 4: active-high level.
    Level,
}

/// One interrupt of a device wired to the GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// GIC INTID (SPI n is 32 + n, PPI n is 16 + n).
    pub intid: u32,
    /// Trigger type.
    pub trigger: Trigger,
}

/// A physical CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Node path, e.g. `/cpus/cpu@1`.
    pub node: String,
    /// MPIDR affinity fields from `reg`.
    pub mpidr: u64,
}

/// The GICv3 (`compatible = "arm,gic-v3"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gic {
    /// Node path.
    pub node: String,
    /// `phandle`, which devices' `interrupt-parent` refer to.
    pub phandle: Option<u32>,
    /// Distributor frame (first `reg` entry).
    pub dist: Range<PhysAddr>,
    /// Redistributor regions (the next `#redistributor-regions` entries).
    pub redists: Vec<Range<PhysAddr>>,
    /// The GIC maintenance interrupt (`interrupts`), normally PPI 9 = INTID 25.
    pub maintenance: Option<Irq>,
    /// An ITS child (`arm,gic-v3-its`), which moat does not expose to guests.
    pub its: Option<Range<PhysAddr>>,
}

/// A PL011 UART (`compatible = "arm,pl011"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Node path, e.g. `/pl011@9000000`.
    pub node: String,
    /// Register frame.
    pub regs: Range<PhysAddr>,
    /// Its interrupt, if wired to the GIC.
    pub irq: Option<Irq>,
    /// `status` (absent = okay).
    pub status: Status,
    /// `secure-status` (absent = same as `status`).
    pub secure_status: Option<Status>,
}

/// `/psci`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Psci {
    /// `method`.
    pub method: Conduit,
    /// `compatible` strings, most specific first.
    pub compatible: Vec<String>,
}

/// `/firmware/optee` (`compatible = "linaro,optee-tz"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Optee {
    /// `method`.
    pub method: Conduit,
    /// Its notification interrupt, if any.
    pub irq: Option<Irq>,
}

/// What a `/reserved-memory` region is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedKind {
    /// `optee_shm@...`: OP-TEE's static shared-memory window, never guest RAM.
    OpteeShm,
    /// `optee_core@...`: OP-TEE's own secure memory.
    OpteeCore,
    /// Anything else.
    Other,
}

/// A `/reserved-memory` child with a fixed `reg` (dynamic `size`-only ones are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// Node path.
    pub node: String,
    /// The region.
    pub range: Range<PhysAddr>,
    /// `no-map`: must not be mapped by the OS.
    pub no_map: bool,
    /// What it is.
    pub kind: ReservedKind,
}

/// A boot module's kind, from its `compatible` (booting.txt, "Modules").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `"multiboot,kernel"`.
    Kernel,
    /// `"multiboot,ramdisk"`.
    Ramdisk,
    /// `"multiboot,device-tree"`: a partial device tree (passthrough).
    DeviceTree,
    /// Any other `"multiboot,module"` (e.g. an XSM policy): kept, overlap-checked.
    Other,
}

/// A boot module placed in RAM by the bootloader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Node path.
    pub node: String,
    /// Kind.
    pub kind: ModuleKind,
    /// Where it is.
    pub range: Range<PhysAddr>,
    /// Its own `bootargs`, if any.
    pub bootargs: Option<String>,
}

/// `dom0_mem=<size>[,max:<size>][,min:<size>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dom0Mem {
    /// The amount to give dom0 in bytes (the plain `<size>` item).
    pub amount: Option<u64>,
    /// `max:<size>` in bytes.
    pub max: Option<u64>,
    /// `min:<size>` in bytes.
    pub min: Option<u64>,
}

/// The hypervisor command line (`/chosen/xen,xen-bootargs`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HvArgs {
    /// `dom0_mem=`.
    pub dom0_mem: Option<Dom0Mem>,
    /// `dom0_max_vcpus=<n>`.
    pub dom0_max_vcpus: Option<u32>,
    /// `console=` (moat only has `dtuart`).
    pub console: Option<String>,
    /// `dtuart=<path>`: the UART the hypervisor owns (path may carry `:options`).
    pub dtuart: Option<String>,
    /// `trace=smc`: moat logs every mediated trusted-OS call (a teaching view).
    pub trace_smc: bool,
    /// `trace=msg`: moat logs every OP-TEE message decoded: command, session, each
    /// parameter, each page of a buffer as IPA -> PA (`trace=smc,msg` for both).
    pub trace_msg: bool,
    /// `noreboot` (Xen's spelling): after a fatal error, park the CPUs instead of powering
    /// the machine off, so that a debugger can look at it.
    pub noreboot: bool,
    /// `dom0_tee=<bool>`: does dom0 get the TEE? `None` (absent) means yes, when the host
    /// has OP-TEE. `dom0_tee=no` leaves OP-TEE's guest slots to domUs (Xen has no such
    /// option; its reviewers asked for one). The name sits with `dom0_mem` and
    /// `dom0_max_vcpus`; the value takes Xen's boolean words (`yes`/`no`, `on`/`off`,
    /// `true`/`false`, `enable`/`disable`, `1`/`0`).
    pub dom0_tee: Option<bool>,
    /// Options accepted and ignored (`bootscrub=...`).
    pub ignored: Vec<String>,
    /// Options moat does not know: reported, not fatal.
    pub unknown: Vec<String>,
}

/// Dom0's boot modules and command line.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dom0Boot {
    /// `xen,dom0-bootargs`, else the kernel module's `bootargs`.
    pub bootargs: Option<String>,
    /// Kernel module.
    pub kernel: Option<Module>,
    /// Ramdisk module.
    pub ramdisk: Option<Module>,
    /// Other modules.
    pub others: Vec<Module>,
}

/// A dom0less domain (`/chosen/domU*`, `compatible = "xen,domain"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomU {
    /// Node path.
    pub node: String,
    /// Domain id: 1 for the first domU node, 2 for the next, ...
    pub id: u16,
    /// RAM in bytes (`memory` is in KiB).
    pub memory: u64,
    /// vCPU count.
    pub vcpus: u32,
    /// `vpl011` present: emulate a PL011 for it.
    pub vpl011: bool,
    /// `nr_spis`, if given: SPIs to give the domain's vGIC.
    pub nr_spis: Option<u32>,
    /// Kernel module.
    pub kernel: Module,
    /// Ramdisk module.
    pub ramdisk: Option<Module>,
    /// The command line: the domain's `bootargs` (a moat extension) or its kernel
    /// module's (booting.txt), never both.
    pub bootargs: Option<String>,
    /// `xen,tee = "optee"`: the domain gets OP-TEE through the mediator. From Xen's
    /// dom0less TEE RFC (stock Xen 4.17 gives dom0less domains no TEE); `"none"` or no
    /// property means no TEE.
    pub tee: bool,
}

/// Everything moat takes from the host DT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// RAM banks (`device_type = "memory"`, status okay), in DT order.
    pub memory: Vec<Range<PhysAddr>>,
    /// Physical CPUs.
    pub cpus: Vec<Cpu>,
    /// The GICv3.
    pub gic: Gic,
    /// PL011 UARTs, secure-only ones included (see [`Uart::is_secure_only`]).
    pub uarts: Vec<Uart>,
    /// `/psci`.
    pub psci: Option<Psci>,
    /// `/firmware/optee`.
    pub optee: Option<Optee>,
    /// `/reserved-memory` regions with a fixed address.
    pub reserved: Vec<Reserved>,
    /// `/chosen/stdout-path`.
    pub stdout_path: Option<String>,
    /// The hypervisor console's node path: `dtuart=` if given, else `stdout-path`, with
    /// `:options` removed and an alias resolved through `/aliases`.
    pub console_path: Option<String>,
    /// `xen,xen-bootargs`, parsed.
    pub hv_args: HvArgs,
    /// Dom0's modules and command line.
    pub dom0: Dom0Boot,
    /// Dom0less domains, in DT order.
    pub domus: Vec<DomU>,
}

/// Cell counts and interrupt parent inherited down the tree while walking.
#[derive(Clone, Copy)]
struct Ctx {
    address_cells: u32,
    size_cells: u32,
    interrupt_parent: Option<u32>,
}

/// A UART or GIC found during the walk, before interrupts are resolved.
struct Found {
    path: String,
    regs: Vec<(u64, u64)>,
    interrupts: Option<Vec<u8>>,
    interrupt_parent: Option<u32>,
    status: Status,
    secure_status: Option<Status>,
    phandle: Option<u32>,
    redist_regions: u32,
    its: Option<(u64, u64)>,
}

impl Uart {
    /// Is this UART usable only from the secure world (`status = "disabled"`,
    /// `secure-status = "okay"`, like QEMU virt's `pl011@9040000`)?
    pub fn is_secure_only(&self) -> bool {
        self.status != Status::Okay && self.secure_status == Some(Status::Okay)
    }
}

impl From<BootCfgError> for crate::error::Error {
    fn from(e: BootCfgError) -> Self {
        Self::BootCfg(e)
    }
}

impl From<FdtError> for BootCfgError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl BootConfig {
    /// Parse the host DTB.
    pub fn parse(blob: &[u8]) -> Result<Self, BootCfgError> {
        let canon = dt::normalize(blob)?;
        let fdt = ::fdt::Fdt::new(&canon).map_err(|_| FdtError::BadMagic)?;
        let root = fdt.find_node("/").ok_or(BootCfgError::MissingNode("/"))?;
        let root_ctx = Ctx {
            address_cells: cells_prop(root, "/", "#address-cells", 2)?,
            size_cells: cells_prop(root, "/", "#size-cells", 1)?,
            interrupt_parent: u32_prop(root, "/", "interrupt-parent")?,
        };

        let mut uarts_found = Vec::new();
        let mut gics_found = Vec::new();
        walk(root, "", root_ctx, 1, &mut |n, path, ctx| {
            if n.property("xen,passthrough").is_some() {
                return Err(BootCfgError::Unsupported {
                    node: ShortStr::new(path),
                    prop: "xen,passthrough",
                    feature: "device passthrough: dom0 owns every host device",
                });
            }
            let is_uart = is_compatible(n, "arm,pl011");
            let is_gic = is_compatible(n, "arm,gic-v3");
            if !is_uart && !is_gic {
                return Ok(());
            }
            let mut f = Found {
                path: String::from(path),
                regs: reg(n, path, ctx)?,
                interrupts: n.property("interrupts").map(|p| p.value.to_vec()),
                interrupt_parent: u32_prop(n, path, "interrupt-parent")?.or(ctx.interrupt_parent),
                status: status(n, "status").unwrap_or(Status::Okay),
                secure_status: status(n, "secure-status"),
                phandle: u32_prop(n, path, "phandle")?,
                redist_regions: u32_prop(n, path, "#redistributor-regions")?.unwrap_or(1),
                its: None,
            };
            if is_uart {
                push_bounded(&mut uarts_found, f, "uarts")?;
            } else {
                let child_ctx = child_ctx(n, path, ctx)?;
                for c in n.children().filter(|c| is_compatible(*c, "arm,gic-v3-its")) {
                    let cpath = join(path, c.name);
                    f.its = reg(c, &cpath, child_ctx)?.first().copied();
                }
                push_bounded(&mut gics_found, f, "gics")?;
            }
            Ok(())
        })?;

        let gic = build_gic(
            gics_found
                .first()
                .ok_or(BootCfgError::MissingNode("arm,gic-v3"))?,
        )?;
        let mut uarts = Vec::new();
        for f in &uarts_found {
            let Some(&(base, size)) = f.regs.first() else {
                continue; // reg() never returns an empty list
            };
            uarts.push(Uart {
                node: f.path.clone(),
                regs: range(&f.path, base, size)?,
                irq: first_irq(f, &gic)?,
                status: f.status,
                secure_status: f.secure_status,
            });
        }

        let mut memory = Vec::new();
        let mut cpus = Vec::new();
        let mut reserved = Vec::new();
        let mut psci = None;
        let mut optee = None;
        for n in root.children() {
            let path = join("", n.name);
            match dt::base_name(n.name) {
                "cpus" => cpus = parse_cpus(n, &path)?,
                "psci" => psci = Some(parse_psci(n, &path)?),
                "reserved-memory" => reserved = parse_reserved(n, &path, root_ctx)?,
                "firmware" => {
                    for c in n
                        .children()
                        .filter(|c| is_compatible(*c, "linaro,optee-tz"))
                    {
                        let cpath = join(&path, c.name);
                        let ip =
                            u32_prop(c, &cpath, "interrupt-parent")?.or(root_ctx.interrupt_parent);
                        optee = Some(Optee {
                            method: conduit(c, &cpath)?,
                            irq: match (c.property("interrupts"), ip == gic.phandle) {
                                (Some(p), true) => Some(decode_irq(p.value, &cpath)?),
                                _ => None,
                            },
                        });
                    }
                }
                _ => {}
            }
            let is_memory = n.property("device_type").and_then(|p| p.as_str()) == Some("memory");
            if is_memory && status(n, "status").unwrap_or(Status::Okay) == Status::Okay {
                for (base, size) in reg(n, &path, root_ctx)? {
                    if size == 0 {
                        return Err(BootCfgError::ZeroSize {
                            node: ShortStr::new(&path),
                        });
                    }
                    push_bounded(&mut memory, range(&path, base, size)?, "memory banks")?;
                }
            }
        }
        if memory.is_empty() {
            return Err(BootCfgError::MissingNode("memory"));
        }

        let chosen = fdt.find_node("/chosen");
        let (stdout_path, hv_args, dom0, domus) = match chosen {
            None => (None, HvArgs::default(), Dom0Boot::default(), Vec::new()),
            Some(c) => parse_chosen(c)?,
        };
        let console_path = hv_args
            .dtuart
            .as_deref()
            .or(stdout_path.as_deref())
            .map(|p| resolve_alias(&fdt, p));
        Ok(Self {
            memory,
            cpus,
            gic,
            uarts,
            psci,
            optee,
            reserved,
            stdout_path,
            console_path,
            hv_args,
            dom0,
            domus,
        })
    }

    /// The UART the hypervisor owns: the one at [`BootConfig::console_path`].
    pub fn console_uart(&self) -> Option<&Uart> {
        let wanted = self.console_path.as_deref()?;
        self.uarts.iter().find(|u| u.node == wanted)
    }

    /// The OP-TEE static shared-memory window, if `/reserved-memory` has one.
    pub fn optee_shm(&self) -> Option<Range<PhysAddr>> {
        self.reserved
            .iter()
            .find(|r| r.kind == ReservedKind::OpteeShm)
            .map(|r| r.range)
    }
}

/// The options moat knows, as a user writes them (`=` takes a value). The parser below and
/// this list are checked against each other by a test; xtask shows it when it refuses an
/// unknown option.
pub const OPTIONS: &[&str] = &[
    "dom0_mem=<size>[,max:<size>][,min:<size>]",
    "dom0_max_vcpus=<n>",
    "console=dtuart",
    "dtuart=<path>",
    "bootscrub=<ignored>",
    "trace=<smc|msg|smc,msg>",
    "noreboot",
    "dom0_tee=<yes|no>",
];

/// Parse the hypervisor command line. Unknown options are collected, never fatal; a known
/// option with a bad value is an error naming the option.
pub fn parse_hv_args(line: &str) -> Result<HvArgs, BootCfgError> {
    let mut a = HvArgs::default();
    for opt in line.split_ascii_whitespace() {
        let (key, val) = opt.split_once('=').unwrap_or((opt, ""));
        let bad = || BootCfgError::BadBootArg {
            option: ShortStr::new(opt),
        };
        match key {
            "dom0_mem" => {
                let mut m = Dom0Mem::default();
                for item in val.split(',') {
                    if let Some(v) = item.strip_prefix("max:") {
                        m.max = Some(parse_size(v).ok_or_else(bad)?);
                    } else if let Some(v) = item.strip_prefix("min:") {
                        m.min = Some(parse_size(v).ok_or_else(bad)?);
                    } else {
                        m.amount = Some(parse_size(item).ok_or_else(bad)?);
                    }
                }
                a.dom0_mem = Some(m);
            }
            "dom0_max_vcpus" => {
                let n = parse_number(val)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)?;
                if n == 0 || n > MAX_VCPUS {
                    return Err(BootCfgError::BadVcpuCount {
                        node: ShortStr::new(opt),
                    });
                }
                a.dom0_max_vcpus = Some(n);
            }
            "console" => a.console = Some(val.to_string()),
            "dtuart" => a.dtuart = Some(val.to_string()),
            "bootscrub" => a.ignored.push(opt.to_string()),
            "noreboot" if val.is_empty() => a.noreboot = true,
            "dom0_tee" => a.dom0_tee = Some(parse_bool(val).ok_or_else(bad)?),
            "trace" => {
                for what in val.split(',') {
                    match what {
                        "smc" => a.trace_smc = true,
                        "msg" => a.trace_msg = true,
                        _ => return Err(bad()),
                    }
                }
            }
            _ => {
                if a.unknown.len() >= MAX_ITEMS {
                    return Err(BootCfgError::TooMany("unknown boot options"));
                }
                a.unknown.push(opt.to_string());
            }
        }
    }
    Ok(a)
}

/// Parse a size like Xen's `parse_size_and_unit`: a decimal or `0x` hex number with an
/// optional `K`/`M`/`G`/`T` (or `B` for bytes) suffix, case-insensitive. A bare number is
/// in KiB, as in Xen. `None` on junk or overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'B' => (&s[..s.len() - 1], 0),
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 10),
    };
    parse_number(num)?.checked_mul(1u64 << shift)
}

/// A boolean option value in Xen's words (`parse_bool` in Xen's `common/kernel.c`).
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "yes" | "on" | "true" | "enable" => Some(true),
        "0" | "no" | "off" | "false" | "disable" => Some(false),
        _ => None,
    }
}

/// A decimal or `0x`-prefixed hex number.
fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
    .filter(|_| !s.is_empty() && !s.starts_with('+'))
}

type ChosenParts = (Option<String>, HvArgs, Dom0Boot, Vec<DomU>);

/// Strip `:options` from a console path and resolve an alias (`serial0`) through
/// `/aliases`; an unknown alias is kept as written.
fn resolve_alias(fdt: &::fdt::Fdt<'_>, path: &str) -> String {
    let path = path.split(':').next().unwrap_or(path);
    if path.starts_with('/') {
        return String::from(path);
    }
    let target = fdt
        .find_node("/aliases")
        .and_then(|a| a.property(path))
        .and_then(|p| dt::stringlist(p.value).next());
    String::from(target.unwrap_or(path))
}

fn parse_chosen(c: FdtNode<'_, '_>) -> Result<ChosenParts, BootCfgError> {
    let path = "/chosen";
    let stdout_path = str_prop(c, path, "stdout-path")?.map(String::from);
    let ctx = module_ctx(c, path)?;
    let mut all_modules: Vec<Module> = Vec::new();
    let mut dom0 = Dom0Boot::default();
    let mut domus = Vec::new();
    let mut unspecified = 0;
    for n in c.children() {
        let npath = join(path, n.name);
        if is_module(n) {
            let m = parse_module(n, &npath, ctx, &mut unspecified)?;
            place_module(&mut dom0.kernel, &mut dom0.ramdisk, &mut dom0.others, &m)?;
            push_bounded(&mut all_modules, m, "modules")?;
        } else if is_compatible(n, "xen,cpupool") {
            return Err(BootCfgError::Unsupported {
                node: ShortStr::new(&npath),
                prop: "xen,cpupool",
                feature: "cpupools: every vCPU is pinned to a pCPU of its own",
            });
        } else if is_compatible(n, "xen,domain") {
            if domus.len() >= MAX_DOMUS {
                return Err(BootCfgError::TooMany("domUs"));
            }
            let id = u16::try_from(domus.len() + 1).map_err(|_| BootCfgError::TooMany("domUs"))?;
            let d = parse_domu(n, &npath, id, &mut all_modules)?;
            domus.push(d);
        }
    }
    // booting.txt, "Command lines": plain `bootargs` is the hypervisor's when only
    // dom0-specific arguments exist elsewhere, and dom0's otherwise.
    let xen_args = str_prop(c, path, "xen,xen-bootargs")?;
    let dom0_args = str_prop(c, path, "xen,dom0-bootargs")?;
    let plain = str_prop(c, path, "bootargs")?;
    let kernel_args = dom0.kernel.as_ref().and_then(|k| k.bootargs.as_deref());
    let plain_is_hv = xen_args.is_none() && (dom0_args.is_some() || kernel_args.is_some());
    let hv_line = xen_args.or(if plain_is_hv { plain } else { None });
    let hv_args = match hv_line {
        Some(line) => parse_hv_args(line)?,
        None => HvArgs::default(),
    };
    dom0.bootargs = dom0_args
        .or(kernel_args)
        .or(if plain_is_hv { None } else { plain })
        .map(String::from);
    for (i, a) in all_modules.iter().enumerate() {
        for b in &all_modules[i + 1..] {
            if a.range.overlaps(&b.range) {
                return Err(BootCfgError::OverlappingModules {
                    first: ShortStr::new(&a.node),
                    second: ShortStr::new(&b.node),
                });
            }
        }
    }
    Ok((stdout_path, hv_args, dom0, domus))
}

fn parse_domu(
    n: FdtNode<'_, '_>,
    path: &str,
    id: u16,
    all_modules: &mut Vec<Module>,
) -> Result<DomU, BootCfgError> {
    let bad = |prop| BootCfgError::BadProperty {
        node: ShortStr::new(path),
        prop,
    };
    let mem = n
        .property("memory")
        .ok_or_else(|| missing(path, "memory"))?
        .value;
    let kib = match mem.len() {
        4 | 8 => dt::take_cells(mem, mem.len() as u32 / 4).map(|(v, _)| v),
        _ => None,
    }
    .ok_or_else(|| bad("memory"))?;
    if kib == 0 {
        return Err(BootCfgError::ZeroSize {
            node: ShortStr::new(path),
        });
    }
    let memory = kib.checked_mul(1024).ok_or_else(|| bad("memory"))?;
    let vcpus = u32_prop(n, path, "cpus")?.ok_or_else(|| missing(path, "cpus"))?;
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(BootCfgError::BadVcpuCount {
            node: ShortStr::new(path),
        });
    }
    check_props(n, path, DOMU_PROPS)?;
    let ctx = module_ctx(n, path)?;
    let (mut kernel, mut ramdisk, mut others) = (None, None, Vec::new());
    let mut unspecified = 0;
    for c in n.children() {
        let cpath = join(path, c.name);
        if !is_module(c) {
            return Err(domu_child_error(c, &cpath));
        }
        check_props(c, &cpath, MODULE_PROPS)?;
        let m = parse_module(c, &cpath, ctx, &mut unspecified)?;
        match m.kind {
            ModuleKind::Kernel => {}
            ModuleKind::Ramdisk if m.bootargs.is_some() => {
                return Err(BootCfgError::Conflict {
                    node: ShortStr::new(&cpath),
                    prop: "bootargs",
                    with: "a ramdisk module",
                    why: "only the kernel module takes a command line",
                })
            }
            ModuleKind::Ramdisk => {}
            ModuleKind::DeviceTree => {
                return Err(BootCfgError::Unsupported {
                    node: ShortStr::new(&cpath),
                    prop: "multiboot,device-tree",
                    feature: "device passthrough from a partial device tree",
                })
            }
            ModuleKind::Other => {
                return Err(BootCfgError::Unsupported {
                    node: ShortStr::new(&cpath),
                    prop: "multiboot,module",
                    feature: "a domain module other than one kernel and one ramdisk",
                })
            }
        }
        place_module(&mut kernel, &mut ramdisk, &mut others, &m)?;
        push_bounded(all_modules, m, "modules")?;
    }
    let kernel: Module = kernel.ok_or_else(|| BootCfgError::MissingKernel {
        node: ShortStr::new(path),
    })?;
    let bootargs = match (str_prop(n, path, "bootargs")?, &kernel.bootargs) {
        (Some(_), Some(_)) => {
            return Err(BootCfgError::Conflict {
                node: ShortStr::new(path),
                prop: "bootargs",
                with: "the kernel module's `bootargs`",
                why: "give the command line once",
            })
        }
        (Some(s), None) => Some(String::from(s)),
        (None, k) => k.clone(),
    };
    let vpl011 = match n.property("vpl011") {
        None => false,
        Some(p) if p.value.is_empty() => true,
        Some(_) => return Err(bad("vpl011")),
    };
    let nr_spis = u32_prop(n, path, "nr_spis")?;
    match nr_spis {
        Some(spis) if spis > crate::vgic::MAX_SPIS => return Err(bad("nr_spis")),
        Some(0) if vpl011 => {
            return Err(BootCfgError::Conflict {
                node: ShortStr::new(path),
                prop: "vpl011",
                with: "`nr_spis = <0>`",
                why: "the vPL011's interrupt is SPI 0 (GUEST_VPL011_SPI)",
            })
        }
        _ => {}
    }
    let tee = match str_prop(n, path, "xen,tee")? {
        None | Some("none") => false,
        Some("optee") => true,
        Some(other) => {
            return Err(BootCfgError::BadTee {
                node: ShortStr::new(path),
                value: ShortStr::new(other),
            })
        }
    };
    Ok(DomU {
        node: String::from(path),
        id,
        memory,
        vcpus,
        vpl011,
        nr_spis,
        kernel,
        ramdisk,
        bootargs,
        tee,
    })
}

/// What moat does with a property it finds on a domain node or a domain's module.
#[derive(Clone, Copy)]
enum Verdict {
    /// Read (or structural, like `phandle`): accepted.
    Take,
    /// A Xen binding moat does not implement: refused, naming the feature.
    Refuse(&'static str),
}

/// The properties of a `xen,domain` node (booting.txt, "Creating Multiple Domains
/// directly from Xen", Xen 4.17). Anything not listed is refused as unknown. `bootargs`
/// on the domain node is a moat extension (Xen reads only the kernel module's); `xen,tee`
/// comes from Xen's dom0less TEE RFC.
const DOMU_PROPS: &[(&str, Verdict)] = &[
    ("compatible", Verdict::Take),
    ("memory", Verdict::Take),
    ("cpus", Verdict::Take),
    ("vpl011", Verdict::Take),
    ("nr_spis", Verdict::Take),
    ("#address-cells", Verdict::Take),
    ("#size-cells", Verdict::Take),
    ("bootargs", Verdict::Take),
    ("xen,tee", Verdict::Take),
    ("phandle", Verdict::Take),
    ("linux,phandle", Verdict::Take),
    (
        "direct-map",
        Verdict::Refuse("direct-mapped domains: domU RAM is Xen's guest layout"),
    ),
    (
        "domain-cpupool",
        Verdict::Refuse("cpupools: every vCPU is pinned to a pCPU of its own"),
    ),
    (
        "xen,enhanced",
        Verdict::Refuse("Xen's PV interfaces: grant tables, xenstore, event channels"),
    ),
    (
        "xen,static-mem",
        Verdict::Refuse("static memory: domU RAM comes from moat's frame pool"),
    ),
    (
        "#xen,static-mem-address-cells",
        Verdict::Refuse("static memory: domU RAM comes from moat's frame pool"),
    ),
    (
        "#xen,static-mem-size-cells",
        Verdict::Refuse("static memory: domU RAM comes from moat's frame pool"),
    ),
    (
        "xen,domain-p2m-mem-mb",
        Verdict::Refuse("a per-domain P2M pool: stage-2 tables come from moat's frame pool"),
    ),
];

/// The properties of a domain's kernel or ramdisk module node (booting.txt).
const MODULE_PROPS: &[(&str, Verdict)] = &[
    ("compatible", Verdict::Take),
    ("reg", Verdict::Take),
    ("bootargs", Verdict::Take),
    ("phandle", Verdict::Take),
    ("linux,phandle", Verdict::Take),
    (
        "xen,uefi-binary",
        Verdict::Refuse("UEFI boot: moat is entered by TF-A with modules in RAM"),
    ),
];

/// Refuse every property of `n` that `table` does not take.
fn check_props(
    n: FdtNode<'_, '_>,
    path: &str,
    table: &[(&'static str, Verdict)],
) -> Result<(), BootCfgError> {
    for p in n.properties() {
        match table.iter().find(|(name, _)| *name == p.name) {
            Some((_, Verdict::Take)) => {}
            Some((name, Verdict::Refuse(feature))) => {
                return Err(BootCfgError::Unsupported {
                    node: ShortStr::new(path),
                    prop: name,
                    feature,
                })
            }
            None => {
                return Err(BootCfgError::UnknownProperty {
                    node: ShortStr::new(path),
                    prop: ShortStr::new(p.name),
                })
            }
        }
    }
    Ok(())
}

/// Why a child of a domain node that is not a module is refused: Xen's static
/// shared-memory and event-channel nodes are named, anything else is unknown.
fn domu_child_error(c: FdtNode<'_, '_>, path: &str) -> BootCfgError {
    let node = ShortStr::new(path);
    if is_compatible(c, "xen,domain-shared-memory-v1") {
        BootCfgError::Unsupported {
            node,
            prop: "xen,domain-shared-memory-v1",
            feature: "static shared memory between domains",
        }
    } else if is_compatible(c, "xen,evtchn-v1") {
        BootCfgError::Unsupported {
            node,
            prop: "xen,evtchn-v1",
            feature: "static event channels",
        }
    } else {
        BootCfgError::UnknownNode { node }
    }
}

fn place_module(
    kernel: &mut Option<Module>,
    ramdisk: &mut Option<Module>,
    others: &mut Vec<Module>,
    m: &Module,
) -> Result<(), BootCfgError> {
    let slot = match m.kind {
        ModuleKind::Kernel => kernel,
        ModuleKind::Ramdisk => ramdisk,
        ModuleKind::DeviceTree | ModuleKind::Other => {
            return push_bounded(others, m.clone(), "modules");
        }
    };
    if slot.is_some() {
        return Err(BootCfgError::DuplicateModule {
            node: ShortStr::new(&m.node),
        });
    }
    *slot = Some(m.clone());
    Ok(())
}

/// Is `n` a boot module (`"multiboot,module"`, or Xen 4.4's `"xen,multiboot-module"`)?
fn is_module(n: FdtNode<'_, '_>) -> bool {
    is_compatible(n, "multiboot,module") || is_compatible(n, "xen,multiboot-module")
}

/// Parse a module node. Its kind comes from the specific compatible (Xen 4.4's
/// `xen,linux-zimage` / `xen,linux-initrd` included); as booting.txt says, the first module
/// of a domain without one is the kernel and the second the ramdisk (`unspecified`
/// counts them). Xen's XSM-magic sniffing needs the module's bytes and is not done here.
fn parse_module(
    n: FdtNode<'_, '_>,
    path: &str,
    ctx: Ctx,
    unspecified: &mut u32,
) -> Result<Module, BootCfgError> {
    let any = |names: &[&str]| names.iter().any(|c| is_compatible(n, c));
    let kind = if any(&["multiboot,kernel", "xen,linux-zimage"]) {
        ModuleKind::Kernel
    } else if any(&["multiboot,ramdisk", "xen,linux-initrd"]) {
        ModuleKind::Ramdisk
    } else if any(&["multiboot,device-tree"]) {
        ModuleKind::DeviceTree
    } else if any(&["xen,xsm-policy"]) {
        ModuleKind::Other
    } else {
        *unspecified += 1;
        match *unspecified {
            1 => ModuleKind::Kernel,
            2 => ModuleKind::Ramdisk,
            _ => ModuleKind::Other,
        }
    };
    let (base, size) = first_reg(n, path, ctx)?;
    if size == 0 {
        return Err(BootCfgError::ZeroSize {
            node: ShortStr::new(path),
        });
    }
    Ok(Module {
        node: String::from(path),
        kind,
        range: range(path, base, size)?,
        bootargs: str_prop(n, path, "bootargs")?.map(String::from),
    })
}

/// The cells a node's module children use: its own `#address-cells` / `#size-cells`,
/// which booting.txt requires on `/chosen` and on each domain node.
fn module_ctx(n: FdtNode<'_, '_>, path: &str) -> Result<Ctx, BootCfgError> {
    Ok(Ctx {
        address_cells: cells_prop(n, path, "#address-cells", 2)?,
        size_cells: cells_prop(n, path, "#size-cells", 1)?,
        interrupt_parent: None,
    })
}

fn parse_cpus(n: FdtNode<'_, '_>, path: &str) -> Result<Vec<Cpu>, BootCfgError> {
    let ctx = Ctx {
        address_cells: cells_prop(n, path, "#address-cells", 2)?,
        size_cells: cells_prop(n, path, "#size-cells", 0)?,
        interrupt_parent: None,
    };
    let mut cpus = Vec::new();
    for c in n.children() {
        let is_cpu = c.property("device_type").and_then(|p| p.as_str()) == Some("cpu");
        if !is_cpu {
            continue;
        }
        let cpath = join(path, c.name);
        let (mpidr, _) = first_reg(c, &cpath, ctx)?;
        push_bounded(&mut cpus, Cpu { node: cpath, mpidr }, "cpus")?;
    }
    if cpus.is_empty() {
        return Err(BootCfgError::MissingNode("/cpus/cpu@*"));
    }
    Ok(cpus)
}

fn parse_psci(n: FdtNode<'_, '_>, path: &str) -> Result<Psci, BootCfgError> {
    let compatible = n
        .property("compatible")
        .map(|p| dt::stringlist(p.value).map(String::from).collect())
        .unwrap_or_default();
    Ok(Psci {
        method: conduit(n, path)?,
        compatible,
    })
}

fn parse_reserved(
    n: FdtNode<'_, '_>,
    path: &str,
    parent: Ctx,
) -> Result<Vec<Reserved>, BootCfgError> {
    let ctx = child_ctx(n, path, parent)?;
    let mut out = Vec::new();
    for c in n.children() {
        let cpath = join(path, c.name);
        if c.property("reg").is_none() {
            continue; // dynamically placed (`size` + `alloc-ranges`): no fixed address
        }
        let kind = match dt::base_name(c.name) {
            "optee_shm" => ReservedKind::OpteeShm,
            "optee_core" => ReservedKind::OpteeCore,
            _ => ReservedKind::Other,
        };
        for (base, size) in reg(c, &cpath, ctx)? {
            let r = Reserved {
                node: cpath.clone(),
                range: range(&cpath, base, size)?,
                no_map: c.property("no-map").is_some(),
                kind,
            };
            push_bounded(&mut out, r, "reserved-memory regions")?;
        }
    }
    Ok(out)
}

fn build_gic(f: &Found) -> Result<Gic, BootCfgError> {
    let count = f.redist_regions as usize;
    if count == 0 || f.regs.len() < 1 + count {
        return Err(BootCfgError::BadProperty {
            node: ShortStr::new(&f.path),
            prop: "reg",
        });
    }
    let dist = range(&f.path, f.regs[0].0, f.regs[0].1)?;
    let mut redists = Vec::new();
    for &(b, s) in &f.regs[1..1 + count] {
        redists.push(range(&f.path, b, s)?);
    }
    let its = match f.its {
        Some((b, s)) => Some(range(&f.path, b, s)?),
        None => None,
    };
    let maintenance = match &f.interrupts {
        Some(v) => Some(decode_irq(v, &f.path)?),
        None => None,
    };
    Ok(Gic {
        node: f.path.clone(),
        phandle: f.phandle,
        dist,
        redists,
        maintenance,
        its,
    })
}

fn first_irq(f: &Found, gic: &Gic) -> Result<Option<Irq>, BootCfgError> {
    match (
        &f.interrupts,
        f.interrupt_parent.is_some() && f.interrupt_parent == gic.phandle,
    ) {
        (Some(v), true) => Ok(Some(decode_irq(v, &f.path)?)),
        _ => Ok(None),
    }
}

/// Decode the first GICv3 interrupt specifier (3 cells: type, number, flags) of
/// `interrupts` (Linux `arm,gic-v3.yaml`: type 0 = SPI, 1 = PPI).
fn decode_irq(v: &[u8], path: &str) -> Result<Irq, BootCfgError> {
    let bad = || BootCfgError::BadProperty {
        node: ShortStr::new(path),
        prop: "interrupts",
    };
    let cell = |i: usize| v.get(i * 4..i * 4 + 4).and_then(dt::decode_u32);
    let (kind, num, flags) = (
        cell(0).ok_or_else(bad)?,
        cell(1).ok_or_else(bad)?,
        cell(2).ok_or_else(bad)?,
    );
    let intid = match kind {
        0 if num < 988 => num + 32,
        1 if num < 16 => num + 16,
        _ => return Err(bad()),
    };
    let trigger = match flags & 0xf {
        1 | 2 => Trigger::Edge,
        4 | 8 => Trigger::Level,
        _ => return Err(bad()),
    };
    Ok(Irq { intid, trigger })
}

/// Depth-first walk, bounded by [`MAX_DEPTH`] (the canonical blob never exceeds it).
fn walk<'b, 'a>(
    n: FdtNode<'b, 'a>,
    path: &str,
    ctx: Ctx,
    depth: usize,
    f: &mut dyn FnMut(FdtNode<'b, 'a>, &str, Ctx) -> Result<(), BootCfgError>,
) -> Result<(), BootCfgError> {
    if depth > MAX_DEPTH {
        return Err(FdtError::TooDeep.into());
    }
    let child = child_ctx(n, if path.is_empty() { "/" } else { path }, ctx)?;
    for c in n.children() {
        let cpath = join(path, c.name);
        f(c, &cpath, child)?;
        walk(c, &cpath, child, depth + 1, f)?;
    }
    Ok(())
}

/// The context a node gives its children. Cell counts above 2 (PCI buses use 3) are kept
/// as they are: only decoding a `reg` with them is an error.
fn child_ctx(n: FdtNode<'_, '_>, path: &str, ctx: Ctx) -> Result<Ctx, BootCfgError> {
    Ok(Ctx {
        address_cells: u32_prop(n, path, "#address-cells")?.unwrap_or(2),
        size_cells: u32_prop(n, path, "#size-cells")?.unwrap_or(1),
        interrupt_parent: u32_prop(n, path, "interrupt-parent")?.or(ctx.interrupt_parent),
    })
}

fn join(parent: &str, name: &str) -> String {
    let mut s = String::from(parent);
    s.push('/');
    s.push_str(name);
    s
}

fn missing(path: &str, prop: &'static str) -> BootCfgError {
    BootCfgError::MissingProperty {
        node: ShortStr::new(path),
        prop,
    }
}

fn is_compatible(n: FdtNode<'_, '_>, compat: &str) -> bool {
    n.property("compatible")
        .is_some_and(|p| dt::stringlist(p.value).any(|c| c == compat))
}

fn status(n: FdtNode<'_, '_>, prop: &str) -> Option<Status> {
    Some(match n.property(prop)?.as_str()? {
        "okay" | "ok" => Status::Okay,
        "disabled" => Status::Disabled,
        "reserved" => Status::Reserved,
        _ => Status::Fail,
    })
}

fn conduit(n: FdtNode<'_, '_>, path: &str) -> Result<Conduit, BootCfgError> {
    match str_prop(n, path, "method")? {
        Some("smc") => Ok(Conduit::Smc),
        Some("hvc") => Ok(Conduit::Hvc),
        Some(_) => Err(BootCfgError::BadProperty {
            node: ShortStr::new(path),
            prop: "method",
        }),
        None => Err(missing(path, "method")),
    }
}

fn u32_prop(
    n: FdtNode<'_, '_>,
    path: &str,
    prop: &'static str,
) -> Result<Option<u32>, BootCfgError> {
    match n.property(prop) {
        None => Ok(None),
        Some(p) => dt::decode_u32(p.value)
            .map(Some)
            .ok_or_else(|| BootCfgError::BadProperty {
                node: ShortStr::new(path),
                prop,
            }),
    }
}

/// `#address-cells` / `#size-cells`: default if absent, must be ≤ 2.
fn cells_prop(
    n: FdtNode<'_, '_>,
    path: &str,
    prop: &'static str,
    default: u32,
) -> Result<u32, BootCfgError> {
    let v = u32_prop(n, path, prop)?.unwrap_or(default);
    if v > 2 {
        return Err(BootCfgError::BadProperty {
            node: ShortStr::new(path),
            prop,
        });
    }
    Ok(v)
}

fn str_prop<'a>(
    n: FdtNode<'_, 'a>,
    path: &str,
    prop: &'static str,
) -> Result<Option<&'a str>, BootCfgError> {
    match n.property(prop) {
        None => Ok(None),
        Some(p) => match p.value.split_last() {
            Some((0, s)) if !s.contains(&0) => {
                core::str::from_utf8(s)
                    .map(Some)
                    .map_err(|_| BootCfgError::BadProperty {
                        node: ShortStr::new(path),
                        prop,
                    })
            }
            _ => Err(BootCfgError::BadProperty {
                node: ShortStr::new(path),
                prop,
            }),
        },
    }
}

/// `reg` with the parent's cells: present, a whole number of entries, non-empty.
fn reg(n: FdtNode<'_, '_>, path: &str, ctx: Ctx) -> Result<Vec<(u64, u64)>, BootCfgError> {
    let p = n.property("reg").ok_or_else(|| missing(path, "reg"))?;
    dt::decode_reg(p.value, ctx.address_cells, ctx.size_cells)
        .filter(|v| v.len() <= MAX_ITEMS)
        .ok_or_else(|| BootCfgError::BadProperty {
            node: ShortStr::new(path),
            prop: "reg",
        })
}

/// The first `reg` entry.
fn first_reg(n: FdtNode<'_, '_>, path: &str, ctx: Ctx) -> Result<(u64, u64), BootCfgError> {
    reg(n, path, ctx)?
        .first()
        .copied()
        .ok_or(BootCfgError::BadProperty {
            node: ShortStr::new(path),
            prop: "reg",
        })
}

fn range(path: &str, base: u64, size: u64) -> Result<Range<PhysAddr>, BootCfgError> {
    Range::<PhysAddr>::from_len(PhysAddr(base), size).ok_or_else(|| BootCfgError::BadProperty {
        node: ShortStr::new(path),
        prop: "reg",
    })
}

fn push_bounded<T>(v: &mut Vec<T>, item: T, what: &'static str) -> Result<(), BootCfgError> {
    if v.len() >= MAX_ITEMS {
        return Err(BootCfgError::TooMany(what));
    }
    v.push(item);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fdt::writer::{encode_cells, encode_reg, encode_stringlist};
    use crate::fdt::{Node, Tree};
    use alloc::vec;

    const RUNTIME: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-runtime-2g-smp2.dtb");
    const DUMP: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-dumpdtb-2g-smp2.dtb");

    fn pa(base: u64, len: u64) -> Range<PhysAddr> {
        Range::<PhysAddr>::from_len(PhysAddr(base), len).unwrap()
    }

    fn strs(v: &[&str]) -> Vec<u8> {
        encode_stringlist(v).unwrap()
    }

    fn module(name: &str, kind: &str, cells: u32, base: u64, size: u64) -> Node {
        let mut m = Node::new(name);
        m.set_prop("compatible", strs(&[kind, "multiboot,module"]));
        m.set_prop("reg", encode_reg(cells, cells, &[(base, size)]).unwrap());
        m
    }

    /// The runtime fixture with Xen's dom0less bindings added to `/chosen`.
    pub(crate) fn xen_tree() -> Tree {
        let mut t = Tree::parse(RUNTIME).unwrap();
        let chosen = t.find_mut("/chosen").unwrap();
        chosen.set_prop("#address-cells", encode_cells(&[2]));
        chosen.set_prop("#size-cells", encode_cells(&[2]));
        chosen.set_prop(
            "xen,xen-bootargs",
            strs(&["dom0_mem=512M,max:1G dom0_max_vcpus=2 console=dtuart dtuart=/pl011@9000000 bootscrub=0 loglvl=all"]),
        );
        chosen.set_prop("xen,dom0-bootargs", strs(&["console=hvc0 root=/dev/vda"]));
        chosen.children.push(module(
            "module@4a000000",
            "multiboot,kernel",
            2,
            0x4a00_0000,
            0x100_0000,
        ));
        chosen.children.push(module(
            "module@4c000000",
            "multiboot,ramdisk",
            2,
            0x4c00_0000,
            0x80_0000,
        ));
        let mut d1 = Node::new("domU1");
        d1.set_prop("compatible", strs(&["xen,domain"]));
        d1.set_prop("#address-cells", encode_cells(&[1]));
        d1.set_prop("#size-cells", encode_cells(&[1]));
        d1.set_prop("memory", encode_cells(&[0, 0x4_0000]));
        d1.set_prop("cpus", encode_cells(&[1]));
        d1.set_prop("vpl011", Vec::new());
        d1.children.push(module(
            "module@50000000",
            "multiboot,kernel",
            1,
            0x5000_0000,
            0x100_0000,
        ));
        d1.children.push(module(
            "module@51000000",
            "multiboot,ramdisk",
            1,
            0x5100_0000,
            0x40_0000,
        ));
        chosen.children.push(d1);
        let mut d2 = Node::new("domU2");
        d2.set_prop("compatible", strs(&["xen,domain"]));
        d2.set_prop("#address-cells", encode_cells(&[2]));
        d2.set_prop("#size-cells", encode_cells(&[1]));
        d2.set_prop("memory", encode_cells(&[0x2_0000]));
        d2.set_prop("cpus", encode_cells(&[2]));
        let mut k = Node::new("module@52000000");
        k.set_prop(
            "compatible",
            strs(&["multiboot,kernel", "multiboot,module"]),
        );
        k.set_prop("reg", encode_cells(&[0, 0x5200_0000, 0x10_0000]));
        k.set_prop("bootargs", strs(&["console=ttyAMA0"]));
        d2.children.push(k);
        chosen.children.push(d2);
        t
    }

    fn parse_edited(edit: impl FnOnce(&mut Tree)) -> Result<BootConfig, BootCfgError> {
        let mut t = xen_tree();
        edit(&mut t);
        BootConfig::parse(&t.to_dtb().unwrap())
    }

    #[test]
    fn runtime_fixture_hardware() {
        let c = BootConfig::parse(RUNTIME).unwrap();
        assert_eq!(c.memory, [pa(0x4000_0000, 0x8000_0000)]);
        let mpidrs: Vec<u64> = c.cpus.iter().map(|c| c.mpidr).collect();
        assert_eq!(mpidrs, [0, 1]);
        assert_eq!(c.cpus[1].node, "/cpus/cpu@1");
        assert_eq!(c.gic.node, "/intc@8000000");
        assert_eq!(c.gic.phandle, Some(0x8003));
        assert_eq!(c.gic.dist, pa(0x800_0000, 0x1_0000));
        assert_eq!(c.gic.redists, [pa(0x80a_0000, 0xf6_0000)]);
        assert_eq!(c.gic.its, Some(pa(0x808_0000, 0x2_0000)));
        assert_eq!(
            c.gic.maintenance,
            Some(Irq {
                intid: 25,
                trigger: Trigger::Level
            })
        );
        assert_eq!(c.uarts.len(), 2);
        let secure = c.uarts.iter().find(|u| u.node == "/pl011@9040000").unwrap();
        assert!(secure.is_secure_only());
        assert_eq!(
            secure.irq,
            Some(Irq {
                intid: 40,
                trigger: Trigger::Level
            })
        );
        let ns = c.uarts.iter().find(|u| u.node == "/pl011@9000000").unwrap();
        assert!(!ns.is_secure_only());
        assert_eq!(ns.status, Status::Okay);
        assert_eq!(ns.regs, pa(0x900_0000, 0x1000));
        assert_eq!(
            ns.irq,
            Some(Irq {
                intid: 33,
                trigger: Trigger::Level
            })
        );
        let psci = c.psci.as_ref().unwrap();
        assert_eq!(psci.method, Conduit::Smc);
        assert_eq!(
            psci.compatible,
            ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
        );
        let optee = c.optee.as_ref().unwrap();
        assert_eq!(optee.method, Conduit::Smc);
        assert_eq!(
            optee.irq,
            Some(Irq {
                intid: 0xbb + 32,
                trigger: Trigger::Edge
            })
        );
        assert_eq!(c.reserved.len(), 2);
        assert_eq!(c.optee_shm(), Some(pa(0x4200_0000, 0x20_0000)));
        let core = c
            .reserved
            .iter()
            .find(|r| r.kind == ReservedKind::OpteeCore)
            .unwrap();
        assert_eq!(core.range, pa(0xe10_0000, 0xf0_0000));
        assert!(core.no_map);
        assert_eq!(c.stdout_path.as_deref(), Some("/pl011@9000000"));
        assert_eq!(c.console_path.as_deref(), Some("/pl011@9000000"));
        assert_eq!(c.console_uart().unwrap().node, "/pl011@9000000");
        assert!(c.domus.is_empty());
        // No Xen properties at all: plain `bootargs` is dom0's.
        assert_eq!(
            c.dom0.bootargs.as_deref(),
            Some("console=ttyAMA0 rdinit=/init")
        );
        assert!(c.dom0.kernel.is_none() && c.dom0.ramdisk.is_none());
        assert_eq!(c.hv_args, HvArgs::default());
    }

    #[test]
    fn dumpdtb_fixture_has_no_firmware_additions() {
        let c = BootConfig::parse(DUMP).unwrap();
        assert!(c.psci.is_none());
        assert!(c.optee.is_none());
        assert!(c.reserved.is_empty());
        assert_eq!(c.memory, [pa(0x4000_0000, 0x8000_0000)]);
    }

    #[test]
    fn xen_chosen_bindings() {
        let c = parse_edited(|_| {}).unwrap();
        let a = &c.hv_args;
        assert_eq!(
            a.dom0_mem,
            Some(Dom0Mem {
                amount: Some(512 << 20),
                max: Some(1 << 30),
                min: None
            })
        );
        assert_eq!(a.dom0_max_vcpus, Some(2));
        assert_eq!(a.console.as_deref(), Some("dtuart"));
        assert_eq!(a.dtuart.as_deref(), Some("/pl011@9000000"));
        assert_eq!(a.ignored, ["bootscrub=0"]);
        assert_eq!(a.unknown, ["loglvl=all"]);
        assert_eq!(
            c.dom0.bootargs.as_deref(),
            Some("console=hvc0 root=/dev/vda")
        );
        let k = c.dom0.kernel.as_ref().unwrap();
        assert_eq!(k.range, pa(0x4a00_0000, 0x100_0000));
        assert_eq!(k.node, "/chosen/module@4a000000");
        assert_eq!(
            c.dom0.ramdisk.as_ref().unwrap().range,
            pa(0x4c00_0000, 0x80_0000)
        );
        assert_eq!(c.domus.len(), 2);
        let d1 = &c.domus[0];
        assert_eq!(
            (d1.id, d1.memory, d1.vcpus, d1.vpl011),
            (1, 256 << 20, 1, true)
        );
        assert_eq!(d1.kernel.range, pa(0x5000_0000, 0x100_0000));
        assert_eq!(
            d1.ramdisk.as_ref().unwrap().range,
            pa(0x5100_0000, 0x40_0000)
        );
        assert_eq!(d1.bootargs, None);
        let d2 = &c.domus[1];
        assert_eq!(
            (d2.id, d2.memory, d2.vcpus, d2.vpl011),
            (2, 128 << 20, 2, false)
        );
        assert_eq!(d2.kernel.range, pa(0x5200_0000, 0x10_0000));
        assert_eq!(d2.bootargs.as_deref(), Some("console=ttyAMA0"));
        assert!(d2.ramdisk.is_none());
        assert_eq!(c.console_uart().unwrap().node, "/pl011@9000000");
    }

    fn err(edit: impl FnOnce(&mut Tree)) -> BootCfgError {
        parse_edited(edit).unwrap_err()
    }

    #[test]
    fn malformed_chosen_is_reported_by_node_and_property() {
        let node = ShortStr::new;
        assert_eq!(
            err(|t| {
                t.find_mut("/chosen/module@4a000000")
                    .unwrap()
                    .remove_prop("reg");
            }),
            BootCfgError::MissingProperty {
                node: node("/chosen/module@4a000000"),
                prop: "reg"
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen/domU1")
                .unwrap()
                .set_prop("cpus", encode_cells(&[0]))),
            BootCfgError::BadVcpuCount {
                node: node("/chosen/domU1")
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("memory", encode_cells(&[0]))),
            BootCfgError::ZeroSize {
                node: node("/chosen/domU2")
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("memory", vec![0, 1, 2])),
            BootCfgError::BadProperty {
                node: node("/chosen/domU2"),
                prop: "memory"
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("cpus", vec![1])),
            BootCfgError::BadProperty {
                node: node("/chosen/domU2"),
                prop: "cpus"
            }
        );
        assert_eq!(
            err(|t| {
                t.find_mut("/chosen/domU2").unwrap().remove_prop("memory");
            }),
            BootCfgError::MissingProperty {
                node: node("/chosen/domU2"),
                prop: "memory"
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen")
                .unwrap()
                .set_prop("#address-cells", encode_cells(&[3]))),
            BootCfgError::BadProperty {
                node: node("/chosen"),
                prop: "#address-cells"
            }
        );
        assert_eq!(
            err(|t| {
                let d2 = t.find_mut("/chosen/domU2").unwrap();
                let mut r = Node::new("module@520f0000");
                r.set_prop(
                    "compatible",
                    strs(&["multiboot,ramdisk", "multiboot,module"]),
                );
                r.set_prop("reg", encode_cells(&[0, 0x520f_0000, 0x1000]));
                d2.children.push(r);
            }),
            BootCfgError::OverlappingModules {
                first: node("/chosen/domU2/module@52000000"),
                second: node("/chosen/domU2/module@520f0000"),
            }
        );
        assert_eq!(
            err(|t| {
                let c = t.find_mut("/chosen").unwrap();
                c.children.push(module(
                    "module@4a800000",
                    "xen,xsm-policy",
                    2,
                    0x4a80_0000,
                    0x10,
                ));
            }),
            BootCfgError::OverlappingModules {
                first: node("/chosen/module@4a000000"),
                second: node("/chosen/module@4a800000"),
            }
        );
        assert_eq!(
            err(|t| {
                let c = t.find_mut("/chosen").unwrap();
                c.children.push(module(
                    "module@60000000",
                    "multiboot,kernel",
                    2,
                    0x6000_0000,
                    0x10,
                ));
            }),
            BootCfgError::DuplicateModule {
                node: node("/chosen/module@60000000")
            }
        );
        assert_eq!(
            err(|t| {
                t.find_mut("/chosen/domU2").unwrap().children.clear();
            }),
            BootCfgError::MissingKernel {
                node: node("/chosen/domU2")
            }
        );
        assert_eq!(
            err(|t| {
                let m = t.find_mut("/chosen/domU1/module@50000000").unwrap();
                m.set_prop("reg", encode_cells(&[0x5000_0000, 0]));
            }),
            BootCfgError::ZeroSize {
                node: node("/chosen/domU1/module@50000000")
            }
        );
        assert_eq!(
            err(|t| {
                let m = t.find_mut("/chosen/domU1/module@50000000").unwrap();
                m.set_prop("reg", encode_cells(&[0x5000_0000]));
            }),
            BootCfgError::BadProperty {
                node: node("/chosen/domU1/module@50000000"),
                prop: "reg"
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/chosen")
                .unwrap()
                .set_prop("xen,xen-bootargs", strs(&["dom0_mem=12Q"]))),
            BootCfgError::BadBootArg {
                option: node("dom0_mem=12Q")
            }
        );
        assert_eq!(
            err(|t| {
                t.find_mut("/cpus/cpu@1").unwrap().remove_prop("reg");
            }),
            BootCfgError::MissingProperty {
                node: node("/cpus/cpu@1"),
                prop: "reg"
            }
        );
        assert_eq!(
            err(|t| t
                .find_mut("/memory")
                .unwrap()
                .set_prop("reg", encode_reg(2, 2, &[(0x4000_0000, 0)]).unwrap())),
            BootCfgError::ZeroSize {
                node: node("/memory@40000000")
            }
        );
        assert_eq!(
            err(|t| {
                t.find_mut("/intc").unwrap().remove_prop("compatible");
            }),
            BootCfgError::MissingNode("arm,gic-v3")
        );
    }

    #[test]
    fn console_path_resolves_aliases_and_options() {
        let c = parse_edited(|t| {
            let mut a = Node::new("aliases");
            a.set_prop("serial0", strs(&["/pl011@9000000"]));
            t.root.children.push(a);
            let chosen = t.find_mut("/chosen").unwrap();
            chosen.set_prop("xen,xen-bootargs", strs(&["console=dtuart dtuart=serial0"]));
        })
        .unwrap();
        assert_eq!(c.console_uart().unwrap().node, "/pl011@9000000");
        let c = parse_edited(|t| {
            let chosen = t.find_mut("/chosen").unwrap();
            chosen.remove_prop("xen,xen-bootargs");
            chosen.set_prop("stdout-path", strs(&["/pl011@9000000:115200n8"]));
        })
        .unwrap();
        assert_eq!(c.console_path.as_deref(), Some("/pl011@9000000"));
        assert!(c.console_uart().is_some());
        let c = parse_edited(|t| {
            let chosen = t.find_mut("/chosen").unwrap();
            chosen.set_prop("xen,xen-bootargs", strs(&["dtuart=/nonexistent"]));
        })
        .unwrap();
        assert!(c.console_uart().is_none());
    }

    #[test]
    fn command_line_rules() {
        // xen,dom0-bootargs without xen,xen-bootargs: plain bootargs is the hypervisor's.
        let c = parse_edited(|t| {
            let chosen = t.find_mut("/chosen").unwrap();
            chosen.remove_prop("xen,xen-bootargs");
            chosen.set_prop("bootargs", strs(&["dom0_mem=1G"]));
        })
        .unwrap();
        assert_eq!(c.hv_args.dom0_mem.unwrap().amount, Some(1 << 30));
        assert_eq!(
            c.dom0.bootargs.as_deref(),
            Some("console=hvc0 root=/dev/vda")
        );
        // Only the kernel module has bootargs: they are dom0's, plain is the hypervisor's.
        let c = parse_edited(|t| {
            let chosen = t.find_mut("/chosen").unwrap();
            chosen.remove_prop("xen,xen-bootargs");
            chosen.remove_prop("xen,dom0-bootargs");
            let k = chosen.child_mut("module@4a000000").unwrap();
            k.set_prop("bootargs", strs(&["root=/dev/vdb"]));
        })
        .unwrap();
        assert_eq!(c.dom0.bootargs.as_deref(), Some("root=/dev/vdb"));
        assert_eq!(c.hv_args.console.as_deref(), Some("ttyAMA0"));
        assert_eq!(c.hv_args.unknown, ["rdinit=/init"]);
        // xen,xen-bootargs without xen,dom0-bootargs: plain bootargs is dom0's.
        let c = parse_edited(|t| {
            t.find_mut("/chosen")
                .unwrap()
                .remove_prop("xen,dom0-bootargs");
        })
        .unwrap();
        assert_eq!(
            c.dom0.bootargs.as_deref(),
            Some("console=ttyAMA0 rdinit=/init")
        );
        assert_eq!(c.hv_args.dom0_max_vcpus, Some(2));
    }

    #[test]
    fn legacy_and_unspecified_module_compatibles() {
        let c = parse_edited(|t| {
            let chosen = t.find_mut("/chosen").unwrap();
            let k = chosen.child_mut("module@4a000000").unwrap();
            k.set_prop(
                "compatible",
                strs(&["xen,linux-zimage", "xen,multiboot-module"]),
            );
            let r = chosen.child_mut("module@4c000000").unwrap();
            r.set_prop(
                "compatible",
                strs(&["xen,linux-initrd", "xen,multiboot-module"]),
            );
            let d1 = chosen.child_mut("domU1").unwrap();
            d1.set_prop("nr_spis", encode_cells(&[64]));
            for m in d1.children.iter_mut() {
                m.set_prop("compatible", strs(&["multiboot,module"]));
            }
        })
        .unwrap();
        assert_eq!(c.dom0.kernel.unwrap().range, pa(0x4a00_0000, 0x100_0000));
        assert_eq!(c.dom0.ramdisk.unwrap().range, pa(0x4c00_0000, 0x80_0000));
        let d1 = &c.domus[0];
        assert_eq!(d1.kernel.range, pa(0x5000_0000, 0x100_0000));
        assert_eq!(d1.ramdisk.as_ref().unwrap().kind, ModuleKind::Ramdisk);
        assert_eq!(d1.nr_spis, Some(64));
        assert_eq!(c.domus[1].nr_spis, None);
    }

    #[test]
    fn hv_args_parsing() {
        let a = parse_hv_args("  dom0_mem=0x20000 dom0_max_vcpus=4  sync_console ").unwrap();
        assert_eq!(a.dom0_mem.unwrap().amount, Some(0x20000 << 10));
        assert_eq!(a.dom0_max_vcpus, Some(4));
        assert_eq!(a.unknown, ["sync_console"]);
        assert!(matches!(
            parse_hv_args("dom0_max_vcpus=x"),
            Err(BootCfgError::BadBootArg { .. })
        ));
        assert!(matches!(
            parse_hv_args("dom0_max_vcpus=0"),
            Err(BootCfgError::BadVcpuCount { .. })
        ));
        assert!(matches!(
            parse_hv_args("dom0_mem="),
            Err(BootCfgError::BadBootArg { .. })
        ));
        assert_eq!(parse_hv_args("").unwrap(), HvArgs::default());
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("768m"), Some(768 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("4096B"), Some(4096));
        assert_eq!(parse_size("16"), Some(16 << 10));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn corrupted_blobs_never_panic() {
        let blob = xen_tree().to_dtb().unwrap();
        for i in (0..blob.len()).step_by(13) {
            for v in [0x00, 0xff, 0x03] {
                let mut b = blob.clone();
                b[i] = v;
                let _ = BootConfig::parse(&b);
            }
        }
        for len in (0..blob.len()).step_by(11) {
            assert!(BootConfig::parse(&blob[..len]).is_err());
        }
    }

    #[test]
    fn trace_smc_is_an_option_and_unknown_traces_are_refused() {
        assert!(
            parse_hv_args("trace=smc dom0_max_vcpus=1")
                .unwrap()
                .trace_smc
        );
        assert!(!parse_hv_args("dom0_max_vcpus=1").unwrap().trace_smc);
        let both = parse_hv_args("trace=smc,msg").unwrap();
        assert!(both.trace_smc && both.trace_msg);
        let msg = parse_hv_args("trace=msg").unwrap();
        assert!(msg.trace_msg && !msg.trace_smc);
        assert!(parse_hv_args("trace=everything").is_err());
        assert!(parse_hv_args("trace=smc,everything").is_err());
    }

    #[test]
    fn noreboot_is_a_flag_and_errors_name_their_option() {
        assert!(parse_hv_args("noreboot").unwrap().noreboot);
        assert!(!parse_hv_args("dom0_max_vcpus=1").unwrap().noreboot);
        // Xen's boolean form with a value is not moat's: reported as unknown, not taken.
        let a = parse_hv_args("noreboot=0").unwrap();
        assert!(!a.noreboot);
        assert_eq!(a.unknown, ["noreboot=0"]);

        let e = parse_hv_args("dom0_mem=zzz").unwrap_err();
        let text = alloc::format!("{e}");
        assert!(text.contains("`dom0_mem=zzz`"), "{text}");
        let e = parse_hv_args("dom0_max_vcpus=0").unwrap_err();
        assert!(alloc::format!("{e}").contains("dom0_max_vcpus=0"));
    }

    #[test]
    fn every_documented_option_is_one_the_parser_knows() {
        for o in OPTIONS {
            let example = match o.split_once('=') {
                Some((key, _)) if key == "dom0_mem" => alloc::format!("{key}=512M"),
                Some((key, _)) if key == "dom0_max_vcpus" => alloc::format!("{key}=1"),
                Some((key, _)) if key == "dom0_tee" => alloc::format!("{key}=no"),
                Some((key, _)) if key == "trace" => alloc::format!("{key}=smc,msg"),
                Some((key, v)) => alloc::format!("{key}={}", v.trim_matches(['<', '>'])),
                None => alloc::string::String::from(*o),
            };
            let a = parse_hv_args(&example).unwrap();
            assert!(a.unknown.is_empty(), "{example} is documented but unknown");
        }
    }
    #[test]
    fn xen_tee_selects_optee_and_other_values_are_refused() {
        let c = parse_edited(|_| {}).unwrap();
        assert!(!c.domus[0].tee && !c.domus[1].tee);
        let c = parse_edited(|t| {
            t.find_mut("/chosen/domU1")
                .unwrap()
                .set_prop("xen,tee", strs(&["optee"]));
            t.find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("xen,tee", strs(&["none"]));
        })
        .unwrap();
        assert!(c.domus[0].tee);
        assert!(!c.domus[1].tee);
        let e = err(|t| {
            t.find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("xen,tee", strs(&["ffa"]));
        });
        assert_eq!(
            e,
            BootCfgError::BadTee {
                node: ShortStr::new("/chosen/domU2"),
                value: ShortStr::new("ffa"),
            }
        );
        let text = alloc::format!("{e}");
        assert!(
            text.starts_with("/chosen/domU2: xen,tee = \"ffa\""),
            "{text}"
        );
        assert!(text.contains("\"optee\""), "{text}");
        // Not a string at all: the property is unusable.
        assert_eq!(
            err(|t| {
                t.find_mut("/chosen/domU2")
                    .unwrap()
                    .set_prop("xen,tee", encode_cells(&[1]));
            }),
            BootCfgError::BadProperty {
                node: ShortStr::new("/chosen/domU2"),
                prop: "xen,tee",
            }
        );
    }

    /// Set `prop` on `/chosen/domU1` and return the parse error.
    fn domu1_with(prop: &str, value: Vec<u8>) -> BootCfgError {
        err(|t| t.find_mut("/chosen/domU1").unwrap().set_prop(prop, value))
    }

    #[test]
    fn xen_bindings_moat_does_not_implement_are_refused_by_name() {
        let cases: [(&str, Vec<u8>, &str); 7] = [
            ("direct-map", Vec::new(), "direct-mapped"),
            ("domain-cpupool", encode_cells(&[0x10]), "cpupools"),
            ("xen,enhanced", strs(&["enabled"]), "PV interfaces"),
            (
                "xen,static-mem",
                encode_cells(&[0x6000_0000, 0x1000_0000]),
                "static memory",
            ),
            (
                "#xen,static-mem-address-cells",
                encode_cells(&[1]),
                "static memory",
            ),
            (
                "#xen,static-mem-size-cells",
                encode_cells(&[1]),
                "static memory",
            ),
            ("xen,domain-p2m-mem-mb", encode_cells(&[4]), "P2M pool"),
        ];
        for (prop, value, feature) in cases {
            let e = domu1_with(prop, value);
            let BootCfgError::Unsupported {
                node,
                prop: got,
                feature: why,
            } = e
            else {
                panic!("{prop}: {e:?}");
            };
            assert_eq!((node.as_str(), got), ("/chosen/domU1", prop));
            assert!(why.contains(feature), "{prop}: {why}");
            let text = alloc::format!("{e}");
            assert!(
                text.starts_with(&alloc::format!(
                    "/chosen/domU1: moat does not implement `{prop}`"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_domain_properties_are_refused_by_name() {
        let e = domu1_with("vpl0111", Vec::new());
        assert_eq!(
            e,
            BootCfgError::UnknownProperty {
                node: ShortStr::new("/chosen/domU1"),
                prop: ShortStr::new("vpl0111"),
            }
        );
        assert!(alloc::format!("{e}").contains("`vpl0111`"));
        // Module nodes are checked too.
        let e = err(|t| {
            t.find_mut("/chosen/domU1/module@50000000")
                .unwrap()
                .set_prop("load-address", encode_cells(&[0]));
        });
        assert_eq!(
            e,
            BootCfgError::UnknownProperty {
                node: ShortStr::new("/chosen/domU1/module@50000000"),
                prop: ShortStr::new("load-address"),
            }
        );
        let e = err(|t| {
            t.find_mut("/chosen/domU1/module@50000000")
                .unwrap()
                .set_prop("xen,uefi-binary", strs(&["Image"]));
        });
        assert!(
            matches!(
                e,
                BootCfgError::Unsupported {
                    prop: "xen,uefi-binary",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn domain_modules_other_than_kernel_and_ramdisk_are_refused() {
        let push = |kind: &'static str| {
            move |t: &mut Tree| {
                let d1 = t.find_mut("/chosen/domU1").unwrap();
                d1.children
                    .push(module("module@58000000", kind, 1, 0x5800_0000, 0x1000));
            }
        };
        let e = err(push("multiboot,device-tree"));
        assert_eq!(
            e,
            BootCfgError::Unsupported {
                node: ShortStr::new("/chosen/domU1/module@58000000"),
                prop: "multiboot,device-tree",
                feature: "device passthrough from a partial device tree",
            }
        );
        assert!(alloc::format!("{e}").contains("passthrough"));
        let e = err(push("xen,xsm-policy"));
        assert!(
            matches!(
                e,
                BootCfgError::Unsupported {
                    prop: "multiboot,module",
                    ..
                }
            ),
            "{e:?}"
        );
        // A third module without a specific compatible.
        let e = err(|t| {
            let d1 = t.find_mut("/chosen/domU1").unwrap();
            for m in d1.children.iter_mut() {
                m.set_prop("compatible", strs(&["multiboot,module"]));
            }
            let mut third = module("module@58000000", "x", 1, 0x5800_0000, 0x1000);
            third.set_prop("compatible", strs(&["multiboot,module"]));
            d1.children.push(third);
        });
        assert!(
            matches!(
                e,
                BootCfgError::Unsupported {
                    prop: "multiboot,module",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn xen_nodes_moat_does_not_implement_are_refused() {
        let child = |compat: &'static str| {
            move |t: &mut Tree| {
                let mut n = Node::new("shm@0");
                n.set_prop("compatible", strs(&[compat]));
                t.find_mut("/chosen/domU1").unwrap().children.push(n);
            }
        };
        assert_eq!(
            err(child("xen,domain-shared-memory-v1")),
            BootCfgError::Unsupported {
                node: ShortStr::new("/chosen/domU1/shm@0"),
                prop: "xen,domain-shared-memory-v1",
                feature: "static shared memory between domains",
            }
        );
        assert!(matches!(
            err(child("xen,evtchn-v1")),
            BootCfgError::Unsupported {
                prop: "xen,evtchn-v1",
                ..
            }
        ));
        let e = err(child("vendor,thing"));
        assert_eq!(
            e,
            BootCfgError::UnknownNode {
                node: ShortStr::new("/chosen/domU1/shm@0")
            }
        );
        assert!(alloc::format!("{e}").contains("kernel and ramdisk"));
        // Cpupools live in /chosen.
        let e = err(|t| {
            let mut p = Node::new("cpupool_a");
            p.set_prop("compatible", strs(&["xen,cpupool"]));
            t.find_mut("/chosen").unwrap().children.push(p);
        });
        assert_eq!(
            e,
            BootCfgError::Unsupported {
                node: ShortStr::new("/chosen/cpupool_a"),
                prop: "xen,cpupool",
                feature: "cpupools: every vCPU is pinned to a pCPU of its own",
            }
        );
        // Passthrough is marked on the host device itself.
        let e = err(|t| {
            t.find_mut("/pl011@9040000")
                .unwrap()
                .set_prop("xen,passthrough", Vec::new());
        });
        assert_eq!(
            e,
            BootCfgError::Unsupported {
                node: ShortStr::new("/pl011@9040000"),
                prop: "xen,passthrough",
                feature: "device passthrough: dom0 owns every host device",
            }
        );
    }

    #[test]
    fn conflicting_domain_properties_are_refused() {
        // A command line on the domain and on its kernel module.
        let e = err(|t| {
            t.find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("bootargs", strs(&["console=hvc0"]));
        });
        assert!(
            matches!(
                e,
                BootCfgError::Conflict {
                    prop: "bootargs",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(alloc::format!("{e}").starts_with("/chosen/domU2: `bootargs` conflicts with"));
        // Domain-level bootargs alone are taken.
        let c = parse_edited(|t| {
            t.find_mut("/chosen/domU1")
                .unwrap()
                .set_prop("bootargs", strs(&["console=ttyAMA0"]));
        })
        .unwrap();
        assert_eq!(c.domus[0].bootargs.as_deref(), Some("console=ttyAMA0"));
        // A command line on a ramdisk.
        let e = err(|t| {
            t.find_mut("/chosen/domU1/module@51000000")
                .unwrap()
                .set_prop("bootargs", strs(&["quiet"]));
        });
        assert_eq!(
            e,
            BootCfgError::Conflict {
                node: ShortStr::new("/chosen/domU1/module@51000000"),
                prop: "bootargs",
                with: "a ramdisk module",
                why: "only the kernel module takes a command line",
            }
        );
        // A vPL011 with no SPI for it.
        let e = domu1_with("nr_spis", encode_cells(&[0]));
        assert!(
            matches!(e, BootCfgError::Conflict { prop: "vpl011", .. }),
            "{e:?}"
        );
        assert!(alloc::format!("{e}").contains("SPI 0"));
        // Without the vPL011, no SPIs is fine.
        let c = parse_edited(|t| {
            t.find_mut("/chosen/domU2")
                .unwrap()
                .set_prop("nr_spis", encode_cells(&[0]));
        })
        .unwrap();
        assert_eq!(c.domus[1].nr_spis, Some(0));
        // More SPIs than a GIC has; a vpl011 with a value.
        assert_eq!(
            domu1_with("nr_spis", encode_cells(&[989])),
            BootCfgError::BadProperty {
                node: ShortStr::new("/chosen/domU1"),
                prop: "nr_spis"
            }
        );
        assert_eq!(
            domu1_with("vpl011", encode_cells(&[1])),
            BootCfgError::BadProperty {
                node: ShortStr::new("/chosen/domU1"),
                prop: "vpl011"
            }
        );
    }

    #[test]
    fn dom0_tee_takes_xens_boolean_words() {
        assert_eq!(parse_hv_args("").unwrap().dom0_tee, None);
        for no in ["no", "off", "false", "disable", "0"] {
            let a = parse_hv_args(&alloc::format!("dom0_tee={no}")).unwrap();
            assert_eq!(a.dom0_tee, Some(false), "{no}");
        }
        for yes in ["yes", "on", "true", "enable", "1"] {
            let a = parse_hv_args(&alloc::format!("dom0_tee={yes}")).unwrap();
            assert_eq!(a.dom0_tee, Some(true), "{yes}");
        }
        for bad in ["dom0_tee", "dom0_tee=", "dom0_tee=maybe", "dom0_tee=No"] {
            assert_eq!(
                parse_hv_args(bad),
                Err(BootCfgError::BadBootArg {
                    option: ShortStr::new(bad)
                }),
                "{bad}"
            );
        }
        let c = parse_edited(|t| {
            t.find_mut("/chosen")
                .unwrap()
                .set_prop("xen,xen-bootargs", strs(&["dom0_tee=no dom0_max_vcpus=1"]));
        })
        .unwrap();
        assert_eq!(c.hv_args.dom0_tee, Some(false));
    }
}
