// SPDX-License-Identifier: MIT OR Apache-2.0
//! The plan for each dom0less domU: everything `hv` needs to build it, computed purely.
//!
//! [`plan`] takes the boot configuration ([`crate::bootcfg`]), the pCPUs left after dom0,
//! the number of guests OP-TEE serves and each kernel's arm64 Image header, and returns a
//! [`DomUPlan`] per `/chosen/domU*` node, or the first reason one cannot be built, naming
//! the domain. `hv` then only applies the plans: allocate and scrub RAM, map it at stage-2,
//! copy the kernel and ramdisk, write the DT ([`crate::domudt::build`]) and start vCPU 0.
//!
//! A domU's address space is Xen's public guest layout ([`crate::guest`]), never 1:1:
//!
//! ```text
//!  IPA
//!  0x0300_1000  GICD (64 KiB)              trapped: vGIC distributor
//!  0x0302_0000  GICR, 128 KiB per vCPU     trapped: vGIC redistributors
//!  0x2200_0000  PL011 (4 KiB), SPI 0       trapped: vPL011 (with `vpl011`)
//!  0x4000_0000  RAM bank 0 ─┬─ +text_offset  kernel Image (entry = its first byte)
//!                           ├─ +128 MiB      DT (a 2 MiB window), then the ramdisk
//!                           └─ up to 3 GiB
//!  0x2_0000_0000 RAM bank 1 (what exceeds 3 GiB)
//! ```
//!
//! **Placement** follows Xen 4.17 (`xen/arch/arm/kernel.c`) and the arm64 boot protocol
//! (Linux `Documentation/arch/arm64/booting.rst`):
//! - the Image goes `text_offset` bytes above a 2 MiB-aligned base, and Xen's base is the
//!   start of bank 0 (`kernel_zimage_place`); the Image's footprint is `image_size` from
//!   its header (Xen uses the module's length, which leaves out the kernel's BSS; moat
//!   takes the larger of the two). An Image with `image_size == 0` predates Linux 3.17:
//!   its `text_offset` is taken as 0x80000, as the protocol says;
//! - the DT and the ramdisk go together, each rounded up to 2 MiB, the DT first
//!   (`place_modules`): at bank 0 + 128 MiB if they fit there and the kernel ends below
//!   it, else at the top of bank 0. Xen checks that kernel and modules fit counting the
//!   kernel from its load address, and so needs a last resort below the kernel; moat
//!   counts from the bank's start (`text_offset` included), so the top of the bank is
//!   always free when the check passes. The DT window is always [`DTB_WINDOW`] (2 MiB, the protocol's DT size limit),
//!   because the plan is made before the DT is written; Xen rounds the DT's size up to
//!   2 MiB too, so the addresses are the same as Xen's;
//! - everything is in bank 0, so the ramdisk is within the 1 GiB-aligned 32 GiB window
//!   that covers the kernel, as the protocol requires.
//!
//! **RAM** is `memory` from the domain node, which must be a multiple of
//! [`RAM_GRANULE`] (2 MiB): stage-2 maps guest RAM in 2 MiB blocks and Linux maps its
//! linear map the same way, so a ragged size would only waste a partial block. Bank 0
//! takes up to 3 GiB, bank 1 the rest, as Xen's `allocate_memory` does. It must fit the
//! layout ([`crate::guest::GUEST_RAM_MAX`]) and the IPA size stage-2 is built with.
//!
//! **pCPUs** are pinned statically (ADR 3): each vCPU gets a pCPU of its own, lowest free
//! first, from the partition dom0 has already taken its share of.
//!
//! **The TEE.** OP-TEE's virtualization serves a fixed number of guests
//! ([`OPTEE_VIRT_GUESTS`] in Debian's build). Dom0 takes one when the host has OP-TEE and
//! `dom0_tee=no` is not given ([`dom0_has_tee`]), then each domU with `xen,tee = "optee"`
//! in DT order; the first one that does not fit is an error naming it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::{Ipa, PhysAddr, Range};
use crate::bootcfg::{BootConfig, DomU, MAX_VCPUS};
use crate::fdt::ShortStr;
use crate::guest;
use crate::vm::{CpuPartition, DomainId};

/// Guests Debian's virtualized OP-TEE serves (`CFG_VIRT_GUEST_COUNT = 2`, book chapter 1).
pub const OPTEE_VIRT_GUESTS: usize = 2;
/// A domU's RAM size must be a multiple of this (see the module doc).
pub const RAM_GRANULE: u64 = 2 << 20;
/// Alignment of the base the kernel Image is placed above (arm64 boot protocol).
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// The window reserved for a domU's DT: the arm64 boot protocol's limit on a DT's size.
pub const DTB_WINDOW: u64 = crate::fdt::MAX_DTB_SIZE as u64;
/// Where the DT and ramdisk go when they fit, above the start of bank 0 (Xen's
/// `place_modules`).
pub const MODULES_OFFSET: u64 = 128 << 20;
/// The DT window and the ramdisk are each rounded up to this (Xen's `place_modules`).
pub const MODULE_ALIGN: u64 = 2 << 20;
/// SPIs a domU's vGIC gets when its node has no `nr_spis`: one block of 32, the least a
/// GIC describes (GICD_TYPER.ITLinesNumber counts blocks of 32), enough for the vPL011's
/// SPI 0. moat passes no devices through, so more would be state for nothing. (Xen's
/// default is the host GIC's line count.)
pub const DEFAULT_SPIS: u32 = 32;
/// Size of the arm64 Image header `hv` copies for each kernel (booting.rst, "Call the
/// kernel image"): 64 bytes.
pub const IMAGE_HEADER_SIZE: usize = 64;
/// The header's `magic` at offset 56: "ARM\x64", little-endian.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// The `text_offset` of an Image whose `image_size` is 0 (kernels before 3.17).
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

/// Why an arm64 Image header is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The kernel module is shorter than the 64-byte header.
    TooShort,
    /// No "ARM\x64" magic at offset 56: not an arm64 Image (perhaps compressed).
    BadMagic,
    /// Flags bit 0 says big-endian; moat's device models and mediator are little-endian.
    BigEndian,
}

/// The fields of an arm64 Image header the placement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the Image above its 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the Image occupies once loaded, BSS included (0 on kernels before 3.17).
    pub image_size: u64,
}

/// Why a domU cannot be planned. Every variant names the domain (its node's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// `memory` is zero or not a multiple of [`RAM_GRANULE`].
    BadRamSize {
        /// The domain.
        domain: ShortStr,
        /// The size asked for, in bytes.
        bytes: u64,
    },
    /// `memory` exceeds what Xen's guest layout, or the IPA size, has room for.
    RamTooBig {
        /// The domain.
        domain: ShortStr,
        /// The size asked for, in bytes.
        bytes: u64,
        /// The most RAM a domain can have here, in bytes.
        max: u64,
    },
    /// `cpus` is 0 or above [`MAX_VCPUS`].
    BadVcpuCount {
        /// The domain.
        domain: ShortStr,
        /// vCPUs asked for.
        requested: u32,
    },
    /// Fewer pCPUs are free than the domain has vCPUs (static pinning).
    NotEnoughPcpus {
        /// The domain.
        domain: ShortStr,
        /// vCPUs asked for.
        requested: u32,
        /// pCPUs still free when this domain's turn came.
        free: usize,
        /// pCPUs in the system.
        total: usize,
    },
    /// The kernel module is not a usable arm64 Image.
    BadImage {
        /// The domain.
        domain: ShortStr,
        /// What is wrong with it.
        why: ImageError,
    },
    /// Kernel, DT and ramdisk do not fit in RAM bank 0.
    DoesNotFit {
        /// The domain.
        domain: ShortStr,
        /// Bytes of bank 0 they need (each rounded up to 2 MiB).
        needed: u64,
        /// Bytes of bank 0 the domain has.
        bank0: u64,
    },
    /// The domain has `xen,tee = "optee"` but the host has no `/firmware/optee`.
    NoTee {
        /// The domain.
        domain: ShortStr,
    },
    /// More domains want the TEE than OP-TEE serves.
    TooManyTeeDomains {
        /// The first domain that does not fit.
        domain: ShortStr,
        /// Guests OP-TEE serves.
        slots: usize,
        /// Does dom0 hold one of them?
        dom0: bool,
    },
}

/// Copy `from` (host memory: a boot module) to `to` (the domain's IPA space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Where the bytes are now.
    pub from: Range<PhysAddr>,
    /// Where the domain sees them: the same length as `from`.
    pub to: Range<Ipa>,
}

/// A domU's emulated PL011.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vpl011Plan {
    /// Its register frame.
    pub regs: Range<Ipa>,
    /// Its interrupt (an SPI INTID, level-high).
    pub intid: u32,
}

/// Everything `hv` needs to build one domU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomUPlan {
    /// Domain id: 1 for the first domU node, 2 for the next, ... (dom0 is 0).
    pub id: DomainId,
    /// The node's name (`domU1`): how logs and errors name the domain.
    pub name: String,
    /// The node's path (`/chosen/domU1`).
    pub node: String,
    /// The pCPU each vCPU is pinned to: vCPU `i` runs on `pcpus[i]`.
    pub pcpus: Vec<usize>,
    /// RAM banks in IPA order (one or two): what stage-2 maps as normal memory.
    pub ram: Vec<Range<Ipa>>,
    /// The kernel Image: the whole module, copied to `text_offset` above bank 0.
    pub kernel: Load,
    /// What the Image occupies once running (`image_size`, BSS included): nothing else is
    /// placed here.
    pub kernel_footprint: Range<Ipa>,
    /// Where vCPU 0 starts: the Image's first byte.
    pub entry: Ipa,
    /// The window the DT is written to; its start goes in x0. The DT must fit in it.
    pub dtb: Range<Ipa>,
    /// The ramdisk, if the domain has one.
    pub ramdisk: Option<Load>,
    /// The vGIC distributor window.
    pub gicd: Range<Ipa>,
    /// The redistributor frames, one per vCPU, vCPU 0 first.
    pub gicr: Range<Ipa>,
    /// SPIs for the vGIC (`nr_spis`, else [`DEFAULT_SPIS`]).
    pub spis: u32,
    /// The emulated PL011, when the node has `vpl011`.
    pub vpl011: Option<Vpl011Plan>,
    /// Does the domain get OP-TEE?
    pub tee: bool,
    /// The kernel command line.
    pub bootargs: Option<String>,
}

/// What bounds the plans beyond the configuration itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Guests OP-TEE serves ([`OPTEE_VIRT_GUESTS`]); dom0 counts when it has the TEE.
    pub tee_slots: usize,
    /// The IPA size stage-2 tables are built with ([`crate::stage2`]): RAM must end below
    /// `1 << ipa_bits`.
    pub ipa_bits: u32,
}

impl From<PlanError> for crate::error::Error {
    fn from(e: PlanError) -> Self {
        Self::DomU(e)
    }
}

impl ImageHeader {
    /// Read the header `hv` copied from the start of a kernel module of `module_len`
    /// bytes (`header` is the module's first 64 bytes; shorter modules are refused before
    /// it is looked at).
    pub fn parse(header: &[u8; IMAGE_HEADER_SIZE], module_len: u64) -> Result<Self, ImageError> {
        if module_len < IMAGE_HEADER_SIZE as u64 {
            return Err(ImageError::TooShort);
        }
        let u64_at = |off: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&header[off..off + 8]);
            u64::from_le_bytes(b)
        };
        let mut m = [0; 4];
        m.copy_from_slice(&header[56..60]);
        if u32::from_le_bytes(m) != IMAGE_MAGIC {
            return Err(ImageError::BadMagic);
        }
        let image_size = u64_at(16);
        if image_size == 0 {
            // booting.rst: before 3.17 the header's fields had the kernel's endianness and
            // `image_size` was 0; `text_offset` is then 0x80000.
            return Ok(Self {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: 0,
            });
        }
        if u64_at(24) & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        Ok(Self {
            text_offset: u64_at(8),
            image_size,
        })
    }
}

/// Does dom0 get the TEE? Yes when the host has OP-TEE, unless `dom0_tee=no`.
pub fn dom0_has_tee(cfg: &BootConfig) -> bool {
    cfg.optee.is_some() && cfg.hv_args.dom0_tee != Some(false)
}

/// Plan every domU of `cfg`, in DT order. `partition` must already hold dom0's pCPUs; on
/// success it holds the domUs' too, and on error it is unchanged. `kernel_header` returns
/// the first [`IMAGE_HEADER_SIZE`] bytes of a domain's kernel module (zero-padded if the
/// module is shorter: its length is checked here).
pub fn plan(
    cfg: &BootConfig,
    partition: &mut CpuPartition,
    limits: &PlanLimits,
    mut kernel_header: impl FnMut(&DomU) -> [u8; IMAGE_HEADER_SIZE],
) -> Result<Vec<DomUPlan>, PlanError> {
    let mut pcpus = partition.clone();
    let dom0_tee = dom0_has_tee(cfg);
    let mut tee_used = usize::from(dom0_tee);
    let mut plans = Vec::with_capacity(cfg.domus.len());
    for d in &cfg.domus {
        let name = node_name(&d.node);
        let domain = ShortStr::new(name);
        if d.tee {
            if cfg.optee.is_none() {
                return Err(PlanError::NoTee { domain });
            }
            if tee_used >= limits.tee_slots {
                return Err(PlanError::TooManyTeeDomains {
                    domain,
                    slots: limits.tee_slots,
                    dom0: dom0_tee,
                });
            }
            tee_used += 1;
        }
        let ram = ram_banks(d.memory, limits.ipa_bits).map_err(|e| e.named(domain))?;
        if d.vcpus == 0 || d.vcpus > MAX_VCPUS {
            return Err(PlanError::BadVcpuCount {
                domain,
                requested: d.vcpus,
            });
        }
        let gicr = guest::gicr(d.vcpus).ok_or(PlanError::BadVcpuCount {
            domain,
            requested: d.vcpus,
        })?;
        let header = ImageHeader::parse(&kernel_header(d), d.kernel.range.len())
            .map_err(|why| PlanError::BadImage { domain, why })?;
        let layout = place(d, &header, ram[0]).map_err(|e| e.named(domain))?;
        let free = pcpus.free();
        let pinned = pcpus
            .assign(DomainId(d.id), d.vcpus as usize)
            .map_err(|_| PlanError::NotEnoughPcpus {
                domain,
                requested: d.vcpus,
                free,
                total: pcpus.total(),
            })?;
        plans.push(DomUPlan {
            id: DomainId(d.id),
            name: String::from(name),
            node: d.node.clone(),
            pcpus: pinned,
            ram,
            kernel: layout.kernel,
            kernel_footprint: layout.footprint,
            entry: layout.kernel.to.start,
            dtb: layout.dtb,
            ramdisk: layout.ramdisk,
            gicd: guest::gicd(),
            gicr,
            spis: d.nr_spis.unwrap_or(DEFAULT_SPIS),
            vpl011: d.vpl011.then(|| Vpl011Plan {
                regs: guest::pl011(),
                intid: guest::GUEST_VPL011_SPI,
            }),
            tee: d.tee,
            bootargs: d.bootargs.clone(),
        });
    }
    *partition = pcpus;
    Ok(plans)
}

impl DomUPlan {
    /// Number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.pcpus.len() as u32
    }
}

/// A [`PlanError`] before the domain's name is attached.
enum Unnamed {
    BadRamSize { bytes: u64 },
    RamTooBig { bytes: u64, max: u64 },
    DoesNotFit { needed: u64, bank0: u64 },
}

impl Unnamed {
    fn named(self, domain: ShortStr) -> PlanError {
        match self {
            Self::BadRamSize { bytes } => PlanError::BadRamSize { domain, bytes },
            Self::RamTooBig { bytes, max } => PlanError::RamTooBig { domain, bytes, max },
            Self::DoesNotFit { needed, bank0 } => PlanError::DoesNotFit {
                domain,
                needed,
                bank0,
            },
        }
    }
}

/// The last component of a node path.
fn node_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The most RAM Xen's layout holds below `1 << ipa_bits`.
fn max_ram(ipa_bits: u32) -> u64 {
    let limit = 1u64.checked_shl(ipa_bits).unwrap_or(u64::MAX);
    guest::GUEST_RAM_BANKS
        .iter()
        .map(|&(base, size)| limit.saturating_sub(base.raw()).min(size))
        .sum()
}

/// Split `bytes` of RAM over Xen's banks: bank 0 first, the rest in bank 1.
fn ram_banks(bytes: u64, ipa_bits: u32) -> Result<Vec<Range<Ipa>>, Unnamed> {
    if bytes == 0 || !bytes.is_multiple_of(RAM_GRANULE) {
        return Err(Unnamed::BadRamSize { bytes });
    }
    let max = max_ram(ipa_bits);
    if bytes > max {
        return Err(Unnamed::RamTooBig { bytes, max });
    }
    let mut left = bytes;
    let mut banks = Vec::new();
    for &(base, size) in &guest::GUEST_RAM_BANKS {
        if left == 0 {
            break;
        }
        let take = left.min(size);
        banks.push(Range {
            start: base,
            end: Ipa(base.raw() + take),
        });
        left -= take;
    }
    Ok(banks)
}

/// Where kernel, DT and ramdisk go in bank 0.
struct Layout {
    kernel: Load,
    footprint: Range<Ipa>,
    dtb: Range<Ipa>,
    ramdisk: Option<Load>,
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Xen's `kernel_zimage_place` and `place_modules` for a 64-bit Image (module doc).
fn place(d: &DomU, h: &ImageHeader, bank0: Range<Ipa>) -> Result<Layout, Unnamed> {
    let rambase = bank0.start.raw();
    let ramend = bank0.end.raw();
    let ramsize = bank0.len();
    let too_big = || Unnamed::DoesNotFit {
        needed: u64::MAX,
        bank0: ramsize,
    };
    let kernel_len = d.kernel.range.len();
    // Bank 0 starts 2 MiB-aligned (guest layout), so it is the Image's base.
    let kernbase = rambase.checked_add(h.text_offset).ok_or_else(too_big)?;
    let kernend = kernbase
        .checked_add(h.image_size.max(kernel_len))
        .ok_or_else(too_big)?;
    let kernend_aligned = align_up(kernend, KERNEL_ALIGN).ok_or_else(too_big)?;
    let ramdisk_len = d.ramdisk.as_ref().map_or(0, |r| r.range.len());
    let initrd_window = align_up(ramdisk_len, MODULE_ALIGN).ok_or_else(too_big)?;
    let modsize = initrd_window + DTB_WINDOW;
    let needed = (kernend_aligned - rambase)
        .checked_add(modsize)
        .ok_or_else(too_big)?;
    if needed > ramsize {
        return Err(Unnamed::DoesNotFit {
            needed,
            bank0: ramsize,
        });
    }
    // `needed` counts the kernel from the bank's start (Xen counts it from its load
    // address), so the top of the bank is always above the kernel here.
    let ram128 = rambase + MODULES_OFFSET;
    let modbase = if ramend >= ram128 + modsize && kernend < ram128 {
        ram128
    } else {
        ramend - modsize
    };
    let ipa = |start: u64, len: u64| Range {
        start: Ipa(start),
        end: Ipa(start + len),
    };
    Ok(Layout {
        kernel: Load {
            from: d.kernel.range,
            to: ipa(kernbase, kernel_len),
        },
        footprint: ipa(kernbase, kernend - kernbase),
        dtb: ipa(modbase, DTB_WINDOW),
        ramdisk: d.ramdisk.as_ref().map(|r| Load {
            from: r.range,
            to: ipa(modbase + DTB_WINDOW, ramdisk_len),
        }),
    })
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooShort => "is shorter than an arm64 Image header",
            Self::BadMagic => "is not an arm64 Image (no \"ARM\\x64\" magic; compressed?)",
            Self::BigEndian => "is a big-endian Image, which moat does not run",
        })
    }
}

impl fmt::Display for PlanError {
    /// The line moat prints when it cannot build a domU: it names the domain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        match self {
            Self::BadRamSize { domain, bytes } => write!(
                f,
                "{domain}: memory = {} KiB is not a nonzero multiple of 2048 KiB (2 MiB)",
                bytes / 1024
            ),
            Self::RamTooBig { domain, bytes, max } => write!(
                f,
                "{domain}: memory = {} MiB is more than the guest layout holds ({} MiB)",
                bytes / MIB,
                max / MIB
            ),
            Self::BadVcpuCount { domain, requested } => write!(
                f,
                "{domain}: cpus = {requested}, but a domain has 1 to {MAX_VCPUS} vCPUs"
            ),
            Self::NotEnoughPcpus {
                domain,
                requested,
                free,
                total,
            } => write!(
                f,
                "{domain} asks for {requested} vCPUs but only {free} of {total} pCPUs are \
                 free (every vCPU gets a pCPU of its own: lower `cpus` or dom0_max_vcpus)"
            ),
            Self::BadImage { domain, why } => write!(f, "{domain}: the kernel module {why}"),
            Self::DoesNotFit {
                domain,
                needed,
                bank0,
            } => write!(
                f,
                "{domain}: kernel, DT and ramdisk need {} MiB of the first RAM bank, which \
                 has {} MiB (raise `memory`)",
                needed.div_ceil(MIB),
                bank0 / MIB
            ),
            Self::NoTee { domain } => write!(
                f,
                "{domain} has xen,tee = \"optee\" but the machine has no OP-TEE \
                 (/firmware/optee)"
            ),
            Self::TooManyTeeDomains {
                domain,
                slots,
                dom0,
            } => {
                write!(
                    f,
                    "{domain} asks for the TEE, but OP-TEE serves {slots} guests"
                )?;
                if *dom0 {
                    write!(
                        f,
                        " and dom0 holds one (dom0_tee=no gives dom0's slot to a domU)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bootcfg::tests::xen_tree;
    use alloc::format;

    const MIB: u64 = 1 << 20;

    /// An arm64 Image header.
    pub(crate) fn image(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&0x1400_0000u32.to_le_bytes()); // b +0 (code0)
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        h
    }

    /// The bootcfg fixture: domU1 (256 MiB, 1 vCPU, vpl011, 16 MiB kernel at
    /// pa 0x5000_0000, 4 MiB ramdisk) and domU2 (128 MiB, 2 vCPUs, 1 MiB kernel).
    pub(crate) fn config() -> BootConfig {
        BootConfig::parse(&xen_tree().to_dtb().unwrap()).unwrap()
    }

    pub(crate) const LIMITS: PlanLimits = PlanLimits {
        tee_slots: OPTEE_VIRT_GUESTS,
        ipa_bits: 40,
    };

    /// Eight pCPUs with dom0 on 1 and 3: the free ones are scattered.
    fn scattered() -> CpuPartition {
        let mut p = CpuPartition::new(8);
        p.assign_pinned(DomainId(0), &[1, 3]).unwrap();
        p
    }

    /// Headers that differ per domain: domU1 a modern Image with a large BSS, domU2 a
    /// legacy one.
    fn headers(d: &DomU) -> [u8; 64] {
        match d.id {
            1 => image(0, 20 * MIB, 0b1010),
            _ => image(0x1234, 0, 0),
        }
    }

    fn ipa(start: u64, len: u64) -> Range<Ipa> {
        Range::<Ipa>::from_len(Ipa(start), len).unwrap()
    }

    fn plan_with(
        cfg: &BootConfig,
        limits: &PlanLimits,
    ) -> (Result<Vec<DomUPlan>, PlanError>, CpuPartition) {
        let mut p = scattered();
        let r = plan(cfg, &mut p, limits, headers);
        (r, p)
    }

    #[test]
    fn the_fixture_plans_as_xen_would_place_it() {
        let cfg = config();
        let (plans, part) = plan_with(&cfg, &LIMITS);
        let plans = plans.unwrap();
        assert_eq!(plans.len(), 2);
        let d1 = &plans[0];
        assert_eq!((d1.id, d1.name.as_str()), (DomainId(1), "domU1"));
        assert_eq!(d1.node, "/chosen/domU1");
        assert_eq!(d1.pcpus, [0]);
        assert_eq!(d1.vcpus(), 1);
        assert_eq!(d1.ram, [ipa(0x4000_0000, 256 * MIB)]);
        // IPA != PA: the module stays where the bootloader put it.
        assert_eq!(
            d1.kernel,
            Load {
                from: cfg.domus[0].kernel.range,
                to: ipa(0x4000_0000, 16 * MIB),
            }
        );
        assert_eq!(d1.entry, Ipa(0x4000_0000));
        assert_eq!(d1.kernel_footprint, ipa(0x4000_0000, 20 * MIB));
        assert_eq!(d1.dtb, ipa(0x4800_0000, 2 * MIB));
        assert_eq!(
            d1.ramdisk,
            Some(Load {
                from: cfg.domus[0].ramdisk.as_ref().unwrap().range,
                to: ipa(0x4820_0000, 4 * MIB),
            })
        );
        assert_eq!(d1.gicd, ipa(0x300_1000, 0x1_0000));
        assert_eq!(d1.gicr, ipa(0x302_0000, 0x2_0000));
        assert_eq!(d1.spis, DEFAULT_SPIS);
        assert_eq!(
            d1.vpl011,
            Some(Vpl011Plan {
                regs: ipa(0x2200_0000, 0x1000),
                intid: 32
            })
        );
        assert!(!d1.tee);
        assert_eq!(d1.bootargs, None);

        let d2 = &plans[1];
        assert_eq!((d2.id, d2.name.as_str()), (DomainId(2), "domU2"));
        assert_eq!(d2.pcpus, [2, 4]);
        assert_eq!(d2.gicr, ipa(0x302_0000, 0x4_0000));
        // Legacy Image: text_offset 0x80000 whatever the header says.
        assert_eq!(d2.entry, Ipa(0x4008_0000));
        assert_eq!(d2.kernel_footprint, ipa(0x4008_0000, MIB));
        // 128 MiB of RAM: no room above +128 MiB, so the DT goes to the top of bank 0.
        assert_eq!(d2.dtb, ipa(0x47e0_0000, 2 * MIB));
        assert_eq!(d2.ramdisk, None);
        assert_eq!(d2.vpl011, None);
        assert_eq!(d2.bootargs.as_deref(), Some("console=ttyAMA0"));

        assert_eq!(part.owner(0), Some(DomainId(1)));
        assert_eq!(part.owner(2), Some(DomainId(2)));
        assert_eq!(part.owner(4), Some(DomainId(2)));
        assert_eq!(part.owner(3), Some(DomainId(0)));
        assert_eq!(part.free(), 3);
    }

    #[test]
    fn ram_fills_bank0_then_bank1() {
        let mut cfg = config();
        cfg.domus[1].memory = 4 << 30;
        let plans = plan_with(&cfg, &LIMITS).0.unwrap();
        assert_eq!(
            plans[1].ram,
            [ipa(0x4000_0000, 3 << 30), ipa(0x2_0000_0000, 1 << 30)]
        );
        cfg.domus[1].memory = 3 << 30;
        let plans = plan_with(&cfg, &LIMITS).0.unwrap();
        assert_eq!(plans[1].ram, [ipa(0x4000_0000, 3 << 30)]);
    }

    #[test]
    fn ram_size_must_be_whole_2mib_blocks_and_fit_the_layout() {
        let mut cfg = config();
        for bytes in [0, 2 * MIB + 1024, 3 * MIB] {
            cfg.domus[0].memory = bytes;
            let (r, part) = plan_with(&cfg, &LIMITS);
            assert_eq!(
                r,
                Err(PlanError::BadRamSize {
                    domain: ShortStr::new("domU1"),
                    bytes
                })
            );
            assert_eq!(part, scattered(), "nothing assigned on error");
        }
        let e = plan_with(&cfg, &LIMITS).0.unwrap_err();
        assert!(format!("{e}").starts_with("domU1: memory = 3072 KiB is not"));

        cfg.domus[0].memory = guest::GUEST_RAM_MAX + RAM_GRANULE;
        assert_eq!(
            plan_with(&cfg, &LIMITS).0,
            Err(PlanError::RamTooBig {
                domain: ShortStr::new("domU1"),
                bytes: guest::GUEST_RAM_MAX + RAM_GRANULE,
                max: guest::GUEST_RAM_MAX,
            })
        );
        // A 32-bit IPA space ends with bank 0: 3 GiB at most.
        cfg.domus[0].memory = (3 << 30) + RAM_GRANULE;
        let small = PlanLimits {
            ipa_bits: 32,
            ..LIMITS
        };
        assert_eq!(
            plan_with(&cfg, &small).0,
            Err(PlanError::RamTooBig {
                domain: ShortStr::new("domU1"),
                bytes: (3 << 30) + RAM_GRANULE,
                max: 3 << 30,
            })
        );
        // 36 bits: bank 1 holds 56 GiB.
        assert_eq!(max_ram(36), (3 << 30) + (56 << 30));
        assert_eq!(max_ram(64), guest::GUEST_RAM_MAX);
    }

    #[test]
    fn a_domain_that_cannot_be_pinned_names_itself_and_the_free_count() {
        let cfg = config();
        let mut p = CpuPartition::new(4);
        p.assign_pinned(DomainId(0), &[0, 2]).unwrap();
        let before = p.clone();
        let e = plan(&cfg, &mut p, &LIMITS, headers).unwrap_err();
        assert_eq!(
            e,
            PlanError::NotEnoughPcpus {
                domain: ShortStr::new("domU2"),
                requested: 2,
                free: 1,
                total: 4,
            }
        );
        assert_eq!(p, before, "domU1's pCPU is not kept when domU2 fails");
        let text = format!("{e}");
        assert!(
            text.starts_with("domU2 asks for 2 vCPUs but only 1 of 4 pCPUs are free"),
            "{text}"
        );
    }

    #[test]
    fn vcpu_counts_outside_the_vgic_are_refused() {
        let mut cfg = config();
        for n in [0, MAX_VCPUS + 1] {
            cfg.domus[1].vcpus = n;
            assert_eq!(
                plan_with(&cfg, &LIMITS).0,
                Err(PlanError::BadVcpuCount {
                    domain: ShortStr::new("domU2"),
                    requested: n
                })
            );
        }
        let e = plan_with(&cfg, &LIMITS).0.unwrap_err();
        assert!(format!("{e}").contains("1 to 32 vCPUs"));
    }

    #[test]
    fn tee_slots_count_dom0_unless_it_opts_out() {
        let mut cfg = config();
        cfg.domus[0].tee = true;
        let plans = plan_with(&cfg, &LIMITS).0.unwrap();
        assert!(plans[0].tee && !plans[1].tee);
        // dom0 + domU1 + domU2 > 2.
        cfg.domus[1].tee = true;
        let e = plan_with(&cfg, &LIMITS).0.unwrap_err();
        assert_eq!(
            e,
            PlanError::TooManyTeeDomains {
                domain: ShortStr::new("domU2"),
                slots: 2,
                dom0: true
            }
        );
        let text = format!("{e}");
        assert!(text.starts_with("domU2 asks for the TEE"), "{text}");
        assert!(text.contains("dom0_tee=no"), "{text}");
        // dom0_tee=no: both slots go to the domUs.
        cfg.hv_args.dom0_tee = Some(false);
        assert!(!dom0_has_tee(&cfg));
        let plans = plan_with(&cfg, &LIMITS).0.unwrap();
        assert!(plans.iter().all(|p| p.tee));
        // One slot only: domU2 does not fit, and dom0 is not blamed.
        let one = PlanLimits {
            tee_slots: 1,
            ..LIMITS
        };
        let e = plan_with(&cfg, &one).0.unwrap_err();
        assert_eq!(
            e,
            PlanError::TooManyTeeDomains {
                domain: ShortStr::new("domU2"),
                slots: 1,
                dom0: false
            }
        );
        assert!(!format!("{e}").contains("dom0"));
        // No OP-TEE on the machine.
        cfg.optee = None;
        assert!(!dom0_has_tee(&cfg));
        assert_eq!(
            plan_with(&cfg, &LIMITS).0,
            Err(PlanError::NoTee {
                domain: ShortStr::new("domU1")
            })
        );
        cfg.hv_args.dom0_tee = None;
        assert!(!dom0_has_tee(&cfg));
        assert!(dom0_has_tee(&config()));
    }

    #[test]
    fn image_headers_are_validated() {
        let h = image(0x8_0000, 0x200_0000, 0b10);
        assert_eq!(
            ImageHeader::parse(&h, 0x100_0000),
            Ok(ImageHeader {
                text_offset: 0x8_0000,
                image_size: 0x200_0000
            })
        );
        assert_eq!(ImageHeader::parse(&h, 63), Err(ImageError::TooShort));
        let mut bad = h;
        bad[56] = b'X';
        assert_eq!(ImageHeader::parse(&bad, 4096), Err(ImageError::BadMagic));
        assert_eq!(
            ImageHeader::parse(&image(0, 0x100_0000, 1), 4096),
            Err(ImageError::BigEndian)
        );
        // Before 3.17 the flags are not defined and text_offset is 0x80000.
        assert_eq!(
            ImageHeader::parse(&image(0x8_0000u64.swap_bytes(), 0, 1), 4096),
            Ok(ImageHeader {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: 0
            })
        );

        let cfg = config();
        let mut p = scattered();
        let e = plan(&cfg, &mut p, &LIMITS, |_| [0; 64]).unwrap_err();
        assert_eq!(
            e,
            PlanError::BadImage {
                domain: ShortStr::new("domU1"),
                why: ImageError::BadMagic
            }
        );
        assert!(format!("{e}").starts_with("domU1: the kernel module is not an arm64 Image"));
        assert_eq!(p, scattered());
    }

    #[test]
    fn modules_go_high_when_the_kernel_reaches_128mib_and_never_over_it() {
        let mut cfg = config();
        // A kernel whose footprint ends at 130 MiB: the modules go to the top of bank 0.
        let big = |d: &DomU| match d.id {
            1 => image(0, 130 * MIB, 0),
            _ => image(0, 2 * MIB, 0),
        };
        let mut p = scattered();
        let plans = plan(&cfg, &mut p, &LIMITS, big).unwrap();
        let d1 = &plans[0];
        let top = 0x4000_0000 + 256 * MIB;
        assert_eq!(d1.dtb, ipa(top - 6 * MIB, 2 * MIB));
        assert_eq!(d1.ramdisk.unwrap().to, ipa(top - 4 * MIB, 4 * MIB));
        assert!(!d1.dtb.overlaps(&d1.kernel_footprint));
        // Small RAM: 128 MiB + modules does not fit, so they go to the top as well.
        cfg.domus[1].memory = 128 * MIB;
        let plans = plan_with(&cfg, &LIMITS).0.unwrap();
        let top = 0x4000_0000 + 128 * MIB;
        assert_eq!(plans[1].dtb, ipa(top - 2 * MIB, 2 * MIB));
    }

    #[test]
    fn what_does_not_fit_in_bank0_is_refused() {
        let mut cfg = config();
        // domU1: 16 MiB kernel + 2 MiB DT + 4 MiB ramdisk in 20 MiB.
        cfg.domus[0].memory = 20 * MIB;
        let e = plan(&cfg, &mut scattered(), &LIMITS, |_| image(0, 16 * MIB, 0)).unwrap_err();
        assert_eq!(
            e,
            PlanError::DoesNotFit {
                domain: ShortStr::new("domU1"),
                needed: 22 * MIB,
                bank0: 20 * MIB
            }
        );
        assert!(format!("{e}").contains("need 22 MiB of the first RAM bank, which has 20 MiB"));
        // A text_offset that runs off the address space.
        cfg.domus[0].memory = 256 * MIB;
        let e = plan(&cfg, &mut scattered(), &LIMITS, |_| {
            image(u64::MAX - 4096, 16 * MIB, 0)
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                PlanError::DoesNotFit {
                    needed: u64::MAX,
                    ..
                }
            ),
            "{e:?}"
        );
        // Exactly full: kernel in the first 2 MiB-aligned 16 MiB, modules right above.
        cfg.domus[0].memory = 22 * MIB;
        let plans = plan(&cfg, &mut scattered(), &LIMITS, |_| image(0, 16 * MIB, 0)).unwrap();
        assert_eq!(plans[0].dtb, ipa(0x4000_0000 + 16 * MIB, 2 * MIB));
    }

    #[test]
    fn placements_never_overlap_and_stay_in_bank0() {
        let mut cfg = config();
        let mut checked = 0;
        for mem_mib in [8u64, 20, 22, 64, 130, 134, 136, 256, 4096] {
            for (text_offset, size_mib) in [(0, 1), (0x8_0000, 16), (0, 125), (0x20_0000, 130)] {
                cfg.domus[0].memory = mem_mib * MIB;
                let hdr = image(text_offset, size_mib * MIB, 0);
                let plans = match plan(&cfg, &mut scattered(), &LIMITS, |_| hdr) {
                    Ok(plans) => plans,
                    Err(PlanError::DoesNotFit { .. }) => continue,
                    Err(e) => panic!("{mem_mib} MiB: {e:?}"),
                };
                let p = &plans[0];
                let bank0 = p.ram[0];
                let rd = p.ramdisk.unwrap().to;
                for r in [p.kernel.to, p.kernel_footprint, p.dtb, rd] {
                    assert!(
                        bank0.contains_span(r.start, r.len()),
                        "{mem_mib} MiB, {r:?}"
                    );
                }
                assert!(!p.kernel_footprint.overlaps(&p.dtb));
                assert!(!p.kernel_footprint.overlaps(&rd));
                assert!(!p.dtb.overlaps(&rd));
                assert!(p.dtb.start.is_aligned(MODULE_ALIGN));
                assert_eq!(p.entry, Ipa(bank0.start.raw() + text_offset));
                assert_eq!(p.kernel.from.len(), p.kernel.to.len());
                checked += 1;
            }
        }
        assert_eq!(checked, 17, "the cases that fit");
    }

    #[test]
    fn nr_spis_is_passed_on() {
        let mut cfg = config();
        cfg.domus[0].nr_spis = Some(64);
        assert_eq!(plan_with(&cfg, &LIMITS).0.unwrap()[0].spis, 64);
    }
}
