// SPDX-License-Identifier: MIT OR Apache-2.0
//! Domains as moat runs them: a VM state machine from `hv-core`, its stage-2 tables and
//! the register values that select them.
//!
//! dom0 follows Xen's model: its RAM is mapped 1:1 (IPA == PA) so that devices doing DMA
//! keep working, it gets the host DT's devices except those moat keeps, and a DT derived
//! from the host's. Its kernel and ramdisk are used where the boot loader put them (they
//! lie inside dom0's RAM, at the same addresses, so nothing needs copying).

use alloc::string::String;
use alloc::vec::Vec;
use hv_core::addr::{Ipa, PhysAddr, Range};
use hv_core::bootcfg::BootConfig;
use hv_core::stage2::{self, Attrs, Stage2, Stage2Config};
use hv_core::vgic::{Vgic, GICR_FRAME_SIZE};
use hv_core::vm::{DomainId, Vm};
use hv_core::vpl011::{Vpl011, PL011_SIZE};
use spin::Mutex;

use crate::mem::HvFrames;

/// Largest DT dom0 is given (the arm64 boot protocol's limit).
const DOM0_DTB_MAX: u64 = 2 << 20;

/// Why a domain could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The boot configuration lacks something dom0 needs.
    Config(String),
    /// hv-core refused (bad DT, too many vCPUs, stage-2 failure…).
    Core(hv_core::error::Error),
}

impl From<hv_core::error::Error> for BuildError {
    fn from(e: hv_core::error::Error) -> Self {
        Self::Core(e)
    }
}

impl From<hv_core::vgic::VgicError> for BuildError {
    fn from(e: hv_core::vgic::VgicError) -> Self {
        Self::Core(e.into())
    }
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(s) => f.write_str(s),
            Self::Core(e) => write!(f, "{e}"),
        }
    }
}

/// Rate limiters for the warnings a domain's guest can cause: one set per domain, so that
/// one guest's noise never hides another's.
#[derive(Default)]
pub struct Limiters {
    pub unknown_hvc: hv_core::ratelimit::Limiter,
    pub trusted_os: hv_core::ratelimit::Limiter,
    pub unsupported_call: hv_core::ratelimit::Limiter,
    pub sysreg: hv_core::ratelimit::Limiter,
    pub abort: hv_core::ratelimit::Limiter,
    pub unknown_exit: hv_core::ratelimit::Limiter,
    pub psci_refused: hv_core::ratelimit::Limiter,
    pub fiq: hv_core::ratelimit::Limiter,
    pub vcpu_starts: hv_core::ratelimit::Limiter,
    pub cpu_on_failed: hv_core::ratelimit::Limiter,
}

/// A domain's shutdown and reset state, beside the VM state machine: read on every return
/// to the guest, so atomics rather than the VM's lock.
#[derive(Default)]
pub struct Lifecycle {
    /// A vCPU asked for SYSTEM_OFF/RESET: every other vCPU stops on its next exit.
    pub dying: core::sync::atomic::AtomicBool,
    /// Torn down (once, by whichever vCPU stopped last).
    pub destroyed: core::sync::atomic::AtomicBool,
    /// The shutdown asked for is a reset: the domain is built again from `rebuild`.
    pub reset: core::sync::atomic::AtomicBool,
    /// Resets so far.
    pub resets: core::sync::atomic::AtomicU32,
    /// Heap bytes and stage-2 frames in use after the first reset: every later reset must
    /// come back to them, or moat leaks per cycle.
    pub baseline: Mutex<Option<(usize, usize)>>,
}

/// A running domain.
pub struct Domain {
    /// Its id: 0 for dom0, then the domUs in DT order (`d<id>` in every log line).
    pub id: DomainId,
    /// Its VMID (stage-2 TLB tag): the id plus one, so that no domain uses VMID 0.
    pub vmid: u16,
    /// Warnings its guest can cause, each rate-limited on its own.
    pub limits: Limiters,
    pub vm: Mutex<Vm>,
    /// The domain's stage-2. Built once and never changed while the domain runs, so every
    /// page the OP-TEE mediator pins (`pins`) stays mapped for as long as OP-TEE may use it;
    /// any future unmap (ballooning, teardown) must first check `pins` or call the
    /// mediator's `vm_destroyed`, which releases them.
    pub stage2: Stage2<HvFrames>,
    /// VTCR_EL2 for this domain's stage-2.
    pub vtcr: u64,
    /// VTTBR_EL2: its stage-2 root and VMID.
    pub vttbr: u64,
    /// Its RAM, as mapped.
    pub ram: Vec<Range<PhysAddr>>,
    /// MMIO ranges passed through 1:1.
    pub devices: Vec<Range<PhysAddr>>,
    /// Where its DT was placed (IPA).
    pub dtb: Ipa,
    /// Its kernel's entry point.
    pub entry: Ipa,
    /// Its virtual GIC: distributor and redistributors, emulated.
    pub vgic: Mutex<Vgic>,
    /// Its emulated PL011.
    pub vuart: Mutex<Vpl011>,
    /// The vGIC distributor window (an IPA range; for dom0 the host's address).
    pub gicd: Range<Ipa>,
    /// The vGIC redistributor window: one 128 KiB frame pair per vCPU.
    pub gicr: Range<Ipa>,
    /// The vPL011 window.
    pub uart: Range<Ipa>,
    /// The vPL011's (virtual) interrupt: for dom0 the host UART's INTID.
    pub uart_intid: u32,
    /// The host's redistributor region (base, length), for per-CPU enables.
    pub host_gicr: (u64, u64),
    /// Guest pages OP-TEE holds (pinned by the mediator): they must stay mapped.
    pub pins: crate::tee::Pins,
    /// The domain may call OP-TEE (it was announced with VM_CREATED).
    pub tee: bool,
    /// Where it is in its shutdown and reset cycle.
    pub life: Lifecycle,
    /// What a domU is (re)built from: its plan and its DT.
    pub rebuild: Option<(hv_core::domu::DomUPlan, Vec<u8>)>,
    /// The physical frames behind its RAM when they are not its IPAs (a domU's, scrubbed
    /// before it is mapped and after it dies); dom0's RAM is 1:1 and listed in `ram`.
    pub frames: Option<Range<PhysAddr>>,
}

impl Domain {
    /// Copy `bytes` into this domain's RAM at `ipa`, through its stage-2 (a page at a time:
    /// a domU's IPAs are not its physical addresses), and clean them to memory, since the
    /// guest starts with its MMU and caches off.
    pub fn load(&self, ipa: Ipa, bytes: &[u8]) -> Result<(), BuildError> {
        const PAGE: u64 = 4096;
        let mut done = 0usize;
        while done < bytes.len() {
            let at = ipa.raw() + done as u64;
            let (pa, _) = self
                .stage2
                .translate(Ipa(at))
                .filter(|(_, a)| *a == Attrs::RAM)
                .ok_or_else(|| {
                    BuildError::Config(alloc::format!(
                        "d{}: {:?} is not in its RAM (loading {} bytes at {ipa:?})",
                        self.id.0,
                        Ipa(at),
                        bytes.len()
                    ))
                })?;
            let n = ((PAGE - at % PAGE) as usize).min(bytes.len() - done);
            // SAFETY: `pa` is a RAM frame of this domain (its stage-2 says so), which EL2
            // maps identity and cacheable; no guest runs on it yet; `n` bytes stay inside
            // the page.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr().add(done), pa.raw() as *mut u8, n)
            };
            crate::arch::clean_dcache_range(pa.raw(), n as u64);
            done += n;
        }
        Ok(())
    }
}

/// Zero `r` (a domU's frames) and clean it to memory: before it is mapped, so that a domain
/// never sees what the previous owner left, and after the domain dies.
pub fn scrub(r: &Range<PhysAddr>) {
    // SAFETY: callers pass a domU's frame range, carved out of RAM for domUs alone at boot
    // (never dom0's, never moat's), identity-mapped at EL2; no guest runs on it while it is
    // scrubbed (before mapping, or after the domain's last vCPU stopped).
    unsafe { core::ptr::write_bytes(r.start.raw() as *mut u8, 0, r.len() as usize) };
    crate::arch::clean_dcache_range(r.start.raw(), r.len());
}

/// Build a domU from its plan (hv-core's `domu::plan`): scrub its frames, map each RAM bank
/// (IPA) onto its frames in `banks`, load its kernel, ramdisk and `dtb`, and give it a vGIC
/// and a vPL011 at Xen's guest addresses. Its IPAs are never its physical addresses.
pub fn build_domu(
    p: &Platform<'_>,
    plan: &hv_core::domu::DomUPlan,
    banks: &[(Range<Ipa>, Range<PhysAddr>)],
    dtb: &[u8],
) -> Result<Domain, BuildError> {
    let config = Stage2Config::from_pa_range(p.pa_range)?;
    let mut s2 = Stage2::new(HvFrames::new(), config)?;
    for (ipa, frames) in banks {
        if frames.len() != ipa.end.raw() - ipa.start.raw() {
            return Err(BuildError::Config(alloc::format!(
                "d{}: {} bytes of frames for a {} byte bank",
                plan.id.0,
                frames.len(),
                ipa.end.raw() - ipa.start.raw()
            )));
        }
        scrub(frames);
        s2.map(*ipa, frames.start, Attrs::RAM)?;
    }
    let vmid = plan.id.0 + 1;
    let vtcr = stage2::vtcr_el2(&config, p.vmid16).get();
    let vttbr = stage2::vttbr_el2(s2.root(), vmid).get();
    let vgic = domu_vgic(plan)?;
    let (uart, uart_intid) = match &plan.vpl011 {
        Some(u) => (u.regs, u.intid),
        // No vPL011: an empty window that no access matches, and no interrupt.
        None => (
            Range {
                start: Ipa(0),
                end: Ipa(0),
            },
            0,
        ),
    };
    let host_gicr = p
        .cfg
        .gic
        .redists
        .first()
        .copied()
        .ok_or_else(|| BuildError::Config("the GIC has no redistributor region".into()))?;
    let vm = domu_vm(plan)?;
    if dtb.len() as u64 > plan.dtb.end.raw() - plan.dtb.start.raw() {
        return Err(BuildError::Config(alloc::format!(
            "d{}: its DT ({} bytes) does not fit its window",
            plan.id.0,
            dtb.len()
        )));
    }
    let dom = Domain {
        id: plan.id,
        vmid,
        limits: Limiters::default(),
        vm: Mutex::new(vm),
        stage2: s2,
        vtcr,
        vttbr,
        ram: banks.iter().map(|(_, f)| *f).collect(),
        pins: Mutex::new(hv_core::pins::PinTable::new(
            &banks.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        )),
        devices: Vec::new(),
        dtb: plan.dtb.start,
        entry: plan.entry,
        vgic: Mutex::new(vgic),
        vuart: Mutex::new(Vpl011::new()),
        gicd: plan.gicd,
        gicr: plan.gicr,
        uart,
        uart_intid,
        host_gicr: (host_gicr.start.raw(), host_gicr.len()),
        tee: plan.tee,
        life: Lifecycle::default(),
        rebuild: Some((plan.clone(), dtb.to_vec())),
        frames: match (banks.first(), banks.last()) {
            (Some(a), Some(b)) => Some(Range {
                start: a.1.start,
                end: b.1.end,
            }),
            _ => None,
        },
    };
    dom.load_images()?;
    Ok(dom)
}

/// A domU's vGIC: the timers are the only physical interrupts it gets, each vCPU's own.
fn domu_vgic(plan: &hv_core::domu::DomUPlan) -> Result<Vgic, BuildError> {
    let vcpus = plan.pcpus.len();
    let mut vgic = Vgic::new(vcpus, plan.spis)?;
    for v in 0..vcpus {
        for ppi in GUEST_PPIS {
            vgic.link_hw(v, ppi, ppi)?;
        }
    }
    Ok(vgic)
}

/// A domU's VM state machine, its boot vCPU ready to enter the kernel with x0 = its DT.
fn domu_vm(plan: &hv_core::domu::DomUPlan) -> Result<Vm, BuildError> {
    let mut vm = Vm::new(plan.id, &plan.pcpus, &plan.ram)?;
    vm.start(plan.entry, plan.dtb.start.raw())?;
    Ok(vm)
}

impl Domain {
    /// Copy a domU's kernel, ramdisk and DT into its RAM, from the boot modules (which dom0
    /// never gets) and the DT written at boot.
    fn load_images(&self) -> Result<(), BuildError> {
        let Some((plan, dtb)) = &self.rebuild else {
            return Err(BuildError::Config(alloc::format!(
                "d{} has no images to load",
                self.id.0
            )));
        };
        let mut loads = alloc::vec![&plan.kernel];
        loads.extend(plan.ramdisk.iter());
        for l in loads {
            // SAFETY: boot modules lie in RAM that EL2 maps identity; bootcfg checked they
            // overlap nothing else, and dom0's RAM leaves domU modules out, so they still
            // hold what the boot loader wrote.
            let bytes = unsafe {
                core::slice::from_raw_parts(l.from.start.raw() as *const u8, l.from.len() as usize)
            };
            self.load(l.to.start, bytes)?;
        }
        self.load(plan.dtb.start, dtb)
    }

    /// Build a domU again after its reset (its memory was scrubbed when it died): the same
    /// frames and stage-2, its images loaded afresh, a new vGIC, vPL011 and VM.
    pub fn rebuild(&self) -> Result<(), BuildError> {
        let Some((plan, _)) = &self.rebuild else {
            return Err(BuildError::Config(alloc::format!(
                "d{} cannot be rebuilt",
                self.id.0
            )));
        };
        self.load_images()?;
        *self.vgic.lock() = domu_vgic(plan)?;
        *self.vuart.lock() = Vpl011::new();
        *self.vm.lock() = domu_vm(plan)?;
        self.pins.lock().clear();
        self.life
            .reset
            .store(false, core::sync::atomic::Ordering::Relaxed);
        self.life
            .dying
            .store(false, core::sync::atomic::Ordering::Relaxed);
        self.life
            .destroyed
            .store(false, core::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// What moat needs to know about itself and the platform to build dom0.
pub struct Platform<'a> {
    pub host_dtb: &'a [u8],
    pub cfg: &'a BootConfig,
    /// moat's own memory `[start, end)`, never given to a guest.
    pub hv: Range<PhysAddr>,
    /// Physical CPUs dom0's vCPUs are pinned to, vCPU i on `pcpus[i]`.
    pub pcpus: &'a [usize],
    /// ID_AA64MMFR0_EL1.PARange.
    pub pa_range: u8,
    /// 16-bit VMIDs supported (ID_AA64MMFR1_EL1.VMIDBits).
    pub vmid16: bool,
    /// Interrupt lines the physical distributor implements (GICD_TYPER).
    pub gic_lines: u32,
    /// RAM dom0 never gets: the domUs' frames, and their boot modules (kept, 2 MiB-rounded,
    /// so that a domU's reset can load them again).
    pub domu_reserved: Vec<Range<PhysAddr>>,
    /// dom0 calls OP-TEE (the mediator is up and dom0 did not opt out).
    pub dom0_tee: bool,
}

/// Private interrupts whose physical line is handed to each vCPU (HW-linked): the EL1
/// virtual timer (PPI 11 = INTID 27) and EL1 physical timer (PPI 14 = INTID 30).
pub const GUEST_PPIS: [u32; 2] = [27, 30];

fn ipa_range(r: &Range<PhysAddr>) -> Range<Ipa> {
    Range {
        start: Ipa(r.start.raw()),
        end: Ipa(r.end.raw()),
    }
}

/// Choose dom0's RAM: the host's banks minus moat's own region, cut to `dom0_mem`.
pub fn dom0_ram(
    cfg: &BootConfig,
    hv: Range<PhysAddr>,
    domu_reserved: &[Range<PhysAddr>],
) -> Result<Vec<Range<PhysAddr>>, BuildError> {
    let mut taken = alloc::vec![hv];
    taken.extend_from_slice(domu_reserved);
    let free = hv_core::devmap::subtract_and_merge(&cfg.memory, &taken);
    let want = cfg.hv_args.dom0_mem.and_then(|m| m.amount.or(m.max));
    let Some(mut left) = want else {
        return Ok(free);
    };
    let mut out = Vec::new();
    for r in free {
        if left == 0 {
            break;
        }
        let take = left.min(r.len());
        out.push(Range {
            start: r.start,
            end: PhysAddr(r.start.raw() + take),
        });
        left -= take;
    }
    if left > 0 {
        return Err(BuildError::Config(alloc::format!(
            "dom0_mem asks for {} MiB more than the {} MiB of RAM moat can give",
            left >> 20,
            cfg.memory.iter().map(|r| r.len()).sum::<u64>() >> 20
        )));
    }
    Ok(out)
}

/// Check the Linux arm64 Image header of the boot module at `kernel`; its `text_offset`.
pub fn image_text_offset(kernel: &Range<PhysAddr>) -> Result<u64, BuildError> {
    const MAGIC: u32 = 0x644d_5241; // "ARM\x64"
    if kernel.len() < 64 {
        return Err(BuildError::Config(alloc::format!(
            "the kernel module at {} is smaller than an Image header",
            kernel.start
        )));
    }
    // SAFETY: the module lies in RAM (checked by the caller against dom0's RAM), which
    // EL2 maps identity and cacheable; nothing else writes it during boot.
    let (text_offset, magic) = unsafe {
        let base = kernel.start.raw() as *const u8;
        (
            core::ptr::read_unaligned(base.add(8) as *const u64),
            core::ptr::read_unaligned(base.add(56) as *const u32),
        )
    };
    if magic != MAGIC {
        return Err(BuildError::Config(alloc::format!(
            "the kernel module at {} is not an arm64 Image (magic {magic:#x})",
            kernel.start
        )));
    }
    Ok(text_offset)
}

/// Check dom0's Image header and return its entry point: dom0 runs its Image in place.
fn linux_entry(kernel: &Range<PhysAddr>) -> Result<Ipa, BuildError> {
    let text_offset = image_text_offset(kernel)?;
    // The Image must sit at a 2 MiB-aligned base plus text_offset; moat runs it in place.
    if (kernel.start.raw().wrapping_sub(text_offset)) % (2 << 20) != 0 {
        return Err(BuildError::Config(alloc::format!(
            "the dom0 kernel at {} is not at a 2 MiB boundary plus its text_offset {text_offset:#x}",
            kernel.start
        )));
    }
    Ok(Ipa(kernel.start.raw()))
}

/// Build dom0.
pub fn build_dom0(p: &Platform<'_>) -> Result<Domain, BuildError> {
    let cfg = p.cfg;
    let kernel = cfg.dom0.kernel.as_ref().ok_or_else(|| {
        BuildError::Config("no dom0 kernel: /chosen has no multiboot,kernel module".into())
    })?;
    let banks = dom0_ram(cfg, p.hv, &p.domu_reserved)?;
    let inside = |r: &Range<PhysAddr>| banks.iter().any(|b| b.contains_span(r.start, r.len()));
    let ram_text = || {
        let v: Vec<String> = banks
            .iter()
            .map(|b| alloc::format!("[{}, {})", b.start, b.end))
            .collect();
        v.join(", ")
    };
    if !inside(&kernel.range) {
        return Err(BuildError::Config(alloc::format!(
            "the dom0 kernel module [{}, {}) is not inside dom0's RAM {} (dom0_mem too small?)",
            kernel.range.start,
            kernel.range.end,
            ram_text()
        )));
    }
    if let Some(rd) = &cfg.dom0.ramdisk {
        if !inside(&rd.range) {
            return Err(BuildError::Config(alloc::format!(
                "the dom0 ramdisk module [{}, {}) is not inside dom0's RAM {} (dom0_mem too small?)",
                rd.range.start,
                rd.range.end,
                ram_text()
            )));
        }
    }
    let entry = linux_entry(&kernel.range)?;

    let dt = hv_core::dom0dt::build(
        p.host_dtb,
        cfg,
        &hv_core::dom0dt::Dom0Params {
            ram: &banks,
            vcpus: p.pcpus.len() as u32,
            bootargs: cfg.dom0.bootargs.as_deref(),
            initrd: cfg.dom0.ramdisk.as_ref().map(|m| m.range),
            tee: p.dom0_tee,
        },
    )
    .map_err(hv_core::error::Error::from)?;

    // Place the DT in the last 2 MiB of dom0's last bank: away from the kernel and
    // ramdisk, which the boot loader put low.
    let last = dt
        .ram
        .last()
        .ok_or_else(|| BuildError::Config("dom0 has no RAM".into()))?;
    let dtb_pa = PhysAddr(
        last.end
            .raw()
            .checked_sub(DOM0_DTB_MAX)
            .ok_or_else(|| BuildError::Config("dom0's RAM ends below 2 MiB".into()))?
            & !(DOM0_DTB_MAX - 1),
    );
    let modules = [
        Some(&kernel.range),
        cfg.dom0.ramdisk.as_ref().map(|m| &m.range),
    ];
    let dtb_range = Range {
        start: dtb_pa,
        end: PhysAddr(dtb_pa.raw() + DOM0_DTB_MAX),
    };
    if dtb_pa < last.start || modules.iter().flatten().any(|m| m.overlaps(&dtb_range)) {
        return Err(BuildError::Config(
            "no room for dom0's DT at the end of its RAM".into(),
        ));
    }
    // SAFETY: `dtb_range` is inside dom0's RAM (checked above), which no one else uses
    // before dom0 runs; EL2 maps it identity and cacheable, and it holds the whole DT
    // (dom0dt bounds the DT to 2 MiB).
    unsafe {
        core::ptr::copy_nonoverlapping(dt.dtb.as_ptr(), dtb_pa.raw() as *mut u8, dt.dtb.len());
    }
    // dom0 starts with its MMU and caches off: its DT must be in memory, not only in cache.
    crate::arch::clean_dcache_range(dtb_pa.raw(), dt.dtb.len() as u64);

    // Devices: everything in dom0's DT except what moat keeps (the GIC, which dom0 sees
    // as the emulated vGIC; the console UART, emulated as a vPL011; secure-only nodes,
    // which dom0dt already removed) and moat's own memory.
    let gic = &cfg.gic;
    let uart = cfg
        .console_uart()
        .ok_or_else(|| BuildError::Config("no console UART in the DT".into()))?;
    let uart_intid = uart.irq.map(|i| i.intid).ok_or_else(|| {
        BuildError::Config(alloc::format!(
            "the console UART {} has no interrupt",
            uart.node
        ))
    })?;
    let host_gicr = gic
        .redists
        .first()
        .ok_or_else(|| BuildError::Config("the GIC has no redistributor region".into()))?;
    let vcpus = p.pcpus.len();
    let gicr = Range {
        start: host_gicr.start,
        end: PhysAddr(host_gicr.start.raw() + vcpus as u64 * GICR_FRAME_SIZE),
    };
    let uart_window = Range {
        start: uart.regs.start,
        end: PhysAddr(uart.regs.start.raw() + PL011_SIZE),
    };
    let mut keep: Vec<Range<PhysAddr>> = alloc::vec![p.hv, gic.dist, uart_window];
    keep.extend(gic.redists.iter().copied());
    keep.extend(gic.its);
    let devices = hv_core::devmap::device_ranges(&dt.dtb, &keep).map_err(|e| {
        BuildError::Config(alloc::format!(
            "dom0's DT describes bad device ranges: {e:?}"
        ))
    })?;

    let config = Stage2Config::from_pa_range(p.pa_range)?;
    let mut s2 = Stage2::new(HvFrames::new(), config)?;
    for r in &dt.ram {
        s2.map(ipa_range(r), r.start, Attrs::RAM)?;
    }
    for d in &devices {
        s2.map(ipa_range(d), d.start, Attrs::DEVICE)?;
    }
    let id = DomainId(0);
    let vmid = id.0 + 1;
    let vtcr = stage2::vtcr_el2(&config, p.vmid16).get();
    let vttbr = stage2::vttbr_el2(s2.root(), vmid).get();
    let mut vgic = Vgic::new(vcpus, p.gic_lines.saturating_sub(32))?;
    // dom0 owns the hardware: every SPI but moat's console is its own, HW-linked so its
    // EOI deactivates the physical interrupt; so are each vCPU's timer PPIs.
    for intid in 32..p.gic_lines.min(32 + vgic.spis()) {
        if intid != uart_intid {
            vgic.link_hw(0, intid, intid)?;
        }
    }
    for v in 0..vcpus {
        for ppi in GUEST_PPIS {
            vgic.link_hw(v, ppi, ppi)?;
        }
    }
    let ram_ipa: Vec<Range<Ipa>> = dt.ram.iter().map(ipa_range).collect();
    let mut vm = Vm::new(id, p.pcpus, &ram_ipa)?;
    vm.start(entry, dtb_pa.raw())?;
    Ok(Domain {
        id,
        vmid,
        limits: Limiters::default(),
        vm: Mutex::new(vm),
        stage2: s2,
        vtcr,
        vttbr,
        // dom0 is mapped 1:1: its RAM's IPAs are its physical addresses.
        pins: Mutex::new(hv_core::pins::PinTable::new(
            &dt.ram
                .iter()
                .map(|r| Range {
                    start: Ipa(r.start.raw()),
                    end: Ipa(r.end.raw()),
                })
                .collect::<Vec<_>>(),
        )),
        ram: dt.ram,
        devices,
        dtb: Ipa(dtb_pa.raw()),
        entry,
        vgic: Mutex::new(vgic),
        vuart: Mutex::new(Vpl011::new()),
        gicd: ipa_range(&gic.dist),
        gicr: ipa_range(&gicr),
        uart: ipa_range(&uart_window),
        uart_intid,
        host_gicr: (host_gicr.start.raw(), host_gicr.len()),
        tee: p.dom0_tee,
        life: Lifecycle::default(),
        rebuild: None,
        frames: None,
    })
}
