// SPDX-License-Identifier: MIT OR Apache-2.0
//! hv: the part of moat that touches hardware at EL2.
//!
//! All `unsafe`, inline assembly, system-register and MMIO access lives here (and in
//! `boot`), with as little logic as possible: decisions are made by `hv-core` and
//! `mediator` on plain values.
//!
//! ```text
//!   boot::_start ─► hv::start(dtb)          primary CPU
//!                     mmu, vectors, heap, DT → BootConfig, console, banner
//!                     build dom0 (stage-2 1:1, derived DT), enter vCPU 0
//!   PSCI CPU_ON from dom0 ─► firmware CPU_ON(pCPU, boot::_secondary_start)
//!   boot::_secondary_start ─► hv::start_secondary(cpu) ─► enter vCPU cpu
//! ```
#![no_std]

extern crate alloc;

/// Log something the guest of `$dom` caused, rate-limited by its own `$dom.limits.$kind`:
/// a guest must never flood moat's console, nor hide another guest's warnings. The line is
/// prefixed with the domain (`d1: ...`).
macro_rules! guest_warn {
    ($dom:expr, $kind:ident, $($arg:tt)*) => {{
        let dom: &$crate::domain::Domain = $dom;
        if let Some(suppressed) =
            dom.limits.$kind.hit($crate::arch::counter(), $crate::arch::counter_frequency())
        {
            if suppressed > 0 {
                log::warn!("d{}: ({} similar warnings suppressed)", dom.id.0, suppressed);
            }
            log::warn!("d{}: {}", dom.id.0, format_args!($($arg)*));
        }
    }};
}

pub mod arch;
pub mod console;
pub mod domain;
pub mod gic;
pub mod mem;
pub mod pl011;
pub mod tee;
pub mod trap;
pub mod vdev;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use hv_core::addr::{Ipa, PhysAddr, Range};
use hv_core::bootcfg::BootConfig;
use hv_core::psci as psci_ids;
use hv_core::smccc::{self, FirmwareFeatures, WorkaroundStatus};
use spin::Once;

use crate::arch::{regs, TrapFrame};
use crate::domain::Domain;

/// Physical CPUs moat supports (one EL2 stack each, laid out by `boot`'s linker script).
pub const MAX_CPUS: usize = 8;
/// Most bytes of host DT moat accepts.
const MAX_DTB: usize = 2 << 20;

/// moat's version, printed in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The system, set up once by the primary CPU before any secondary starts.
struct System {
    firmware: FirmwareFeatures,
    /// Every domain, by id: dom0 first.
    domains: Vec<Domain>,
    /// MPIDR of each physical CPU, by index.
    mpidrs: Vec<u64>,
    /// The console UART's (physical) interrupt, which moat keeps.
    console_intid: u32,
}

static SYSTEM: Once<System> = Once::new();
/// The physical distributor, set up by the primary CPU.
static GICD: Once<gic::Gicd> = Once::new();
/// List registers per CPU (the same on every CPU of this system).
static LIST_REGISTERS: AtomicUsize = AtomicUsize::new(0);
/// What each pCPU runs: `domain id << 16 | vCPU index` (set before it enters the guest).
static CURRENT: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Each pCPU's EL2 stack top, as boot handed it over: a domU's reset enters the guest anew
/// from deep in a trap, on a fresh stack.
static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// How often CPU_ON is retried while the firmware still sees the pCPU as on.
const CPU_ON_RETRIES: usize = 100;

/// The GIC maintenance interrupt (PPI 9), which moat keeps.
pub const MAINTENANCE_INTID: u32 = 25;
/// The console UART's base, kept for the panic handler.
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(0);
/// `noreboot` was on the command line: a fatal error parks instead of powering off.
static NOREBOOT: AtomicBool = AtomicBool::new(false);

/// What moat prints, last, when it cannot go on; xtask ends the run on it (with
/// `(moat) PANIC on CPU`), so keep the two in step with `tools/xtask/src/qemu.rs`.
pub const FATAL_MARKER: &str = "moat cannot continue";

extern "C" {
    /// boot's entry for secondary CPUs (x0 = CPU index).
    fn _secondary_start();
    static __image_start: u8;
    static __hv_end: u8;
}

fn system() -> &'static System {
    SYSTEM
        .get()
        .expect("the system is set up before any guest runs")
}

/// Domain `id`, if it exists.
pub(crate) fn domain(id: u16) -> Option<&'static Domain> {
    system().domains.get(usize::from(id))
}

/// Every domain, dom0 first.
pub(crate) fn domains() -> &'static [Domain] {
    &system().domains
}

/// The domain and vCPU this pCPU runs.
pub(crate) fn current() -> (&'static Domain, usize) {
    let v = CURRENT[cpu_index() % MAX_CPUS].load(Ordering::Relaxed);
    let domains = &system().domains;
    // Only ever set from an existing domain's id (run_vcpu); dom0 is a safe fallback.
    let dom = domains.get(v >> 16).unwrap_or(&domains[0]);
    (dom, v & 0xffff)
}

/// The console UART's physical interrupt.
pub(crate) fn console_intid() -> u32 {
    system().console_intid
}

pub(crate) fn gicd() -> &'static gic::Gicd {
    GICD.get()
        .expect("the distributor is set up before any guest runs")
}

/// MPIDR of physical CPU `pcpu`.
pub(crate) fn mpidr_of(pcpu: usize) -> u64 {
    system().mpidrs.get(pcpu).copied().unwrap_or(0)
}

pub(crate) fn list_register_count() -> usize {
    LIST_REGISTERS.load(Ordering::Relaxed)
}

pub(crate) fn firmware_features() -> FirmwareFeatures {
    system().firmware
}

/// This CPU's index, set by `boot` in TPIDR_EL2.
pub(crate) fn cpu_index() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL2 has no side effects; boot wrote the CPU index there.
    unsafe { core::arch::asm!("mrs {}, tpidr_el2", out(reg) v, options(nomem, nostack)) };
    v as usize
}

/// moat's own memory, `[start, end)`, rounded out to 2 MiB.
fn hv_region() -> Range<PhysAddr> {
    // Taking the addresses of linker symbols reads nothing.
    let (s, e) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__hv_end) as u64,
    );
    const M2: u64 = 2 << 20;
    Range {
        start: PhysAddr(s & !(M2 - 1)),
        end: PhysAddr((e + M2 - 1) & !(M2 - 1)),
    }
}

fn query_firmware() -> FirmwareFeatures {
    let q = |id: u32| {
        let r = arch::smc([
            u64::from(smccc::SMCCC_ARCH_FEATURES),
            u64::from(id),
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        WorkaroundStatus::from_firmware(r[0])
    };
    FirmwareFeatures {
        workaround_1: q(smccc::SMCCC_ARCH_WORKAROUND_1),
        workaround_2: q(smccc::SMCCC_ARCH_WORKAROUND_2),
        workaround_3: q(smccc::SMCCC_ARCH_WORKAROUND_3),
    }
}

/// Guests Debian's NS-virtualized OP-TEE serves (`CFG_VIRT_GUEST_COUNT`).
const OPTEE_GUEST_SLOTS: usize = hv_core::domu::OPTEE_VIRT_GUESTS;

/// Plan every dom0less domU (hv-core decides; this only reads each kernel's header).
fn plan_domus(
    cfg: &BootConfig,
    partition: &mut hv_core::vm::CpuPartition,
    pa_range: u8,
) -> Result<Vec<hv_core::domu::DomUPlan>, alloc::string::String> {
    let config = hv_core::stage2::Stage2Config::from_pa_range(pa_range)
        .map_err(|e| alloc::format!("stage-2: {e}"))?;
    let limits = hv_core::domu::PlanLimits {
        tee_slots: OPTEE_GUEST_SLOTS,
        ipa_bits: config.ipa_bits(),
    };
    hv_core::domu::plan(cfg, partition, &limits, |d| {
        let mut h = [0u8; hv_core::domu::IMAGE_HEADER_SIZE];
        let n = (d.kernel.range.len() as usize).min(h.len());
        // SAFETY: the kernel module lies in RAM (bootcfg checked it against the others),
        // which EL2 maps identity; at most its first 64 bytes are read.
        let head =
            unsafe { core::slice::from_raw_parts(d.kernel.range.start.raw() as *const u8, n) };
        h[..n].copy_from_slice(head);
        h
    })
    .map_err(|e| alloc::format!("{e}"))
}

/// The RAM the domUs' frames come from: the top of the last RAM bank, one contiguous run
/// for all of them, taken away from dom0 (whose RAM is the rest, 1:1). It must not hold
/// moat, a boot module (they are copied out of dom0's RAM before dom0 runs, so modules
/// may lie anywhere else) or a reserved region.
fn domu_frames(
    cfg: &BootConfig,
    plans: &[hv_core::domu::DomUPlan],
) -> Result<Option<Range<PhysAddr>>, alloc::string::String> {
    let total: u64 = plans
        .iter()
        .flat_map(|p| p.ram.iter())
        .map(|r| r.end.raw() - r.start.raw())
        .sum();
    if total == 0 {
        return Ok(None);
    }
    let last = cfg
        .memory
        .iter()
        .max_by_key(|r| r.end)
        .ok_or("no RAM in the DT")?;
    let start = last
        .end
        .raw()
        .checked_sub(total)
        .filter(|&s| s >= last.start.raw());
    let Some(start) = start else {
        return Err(alloc::format!(
            "the domUs ask for {} MiB, more than the last RAM bank [{}, {}) holds",
            total >> 20,
            last.start,
            last.end
        ));
    };
    let frames = Range {
        start: PhysAddr(start),
        end: last.end,
    };
    let hv = hv_region();
    let mut taken: Vec<(alloc::string::String, Range<PhysAddr>)> = alloc::vec![("moat".into(), hv)];
    for m in cfg.dom0.kernel.iter().chain(cfg.dom0.ramdisk.iter()) {
        taken.push((m.node.clone(), m.range));
    }
    for d in &cfg.domus {
        taken.push((d.kernel.node.clone(), d.kernel.range));
        if let Some(r) = &d.ramdisk {
            taken.push((r.node.clone(), r.range));
        }
    }
    for r in &cfg.reserved {
        taken.push(("a reserved-memory region".into(), r.range));
    }
    if let Some((what, _)) = taken.iter().find(|(_, r)| r.overlaps(&frames)) {
        return Err(alloc::format!(
            "the domUs' {} MiB at the top of RAM [{}, {}) would overlap {what}",
            total >> 20,
            frames.start,
            frames.end
        ));
    }
    Ok(Some(frames))
}

/// Build domU `plan` from the next frames of the domU pool.
fn build_domu(
    platform: &domain::Platform<'_>,
    plan: &hv_core::domu::DomUPlan,
    next_frame: &mut u64,
) -> Result<Domain, domain::BuildError> {
    let dtb = hv_core::domudt::build(plan)
        .map_err(|e| domain::BuildError::Config(alloc::format!("its device tree: {e:?}")))?;
    let mut banks = Vec::new();
    for r in &plan.ram {
        let len = r.end.raw() - r.start.raw();
        let frames = Range {
            start: PhysAddr(*next_frame),
            end: PhysAddr(*next_frame + len),
        };
        *next_frame += len;
        banks.push((*r, frames));
    }
    domain::build_domu(platform, plan, &banks, &dtb)
}

fn domu_banner(dom: &Domain, plan: &hv_core::domu::DomUPlan) {
    let pcpus: Vec<usize> = dom.vm.lock().vcpus().iter().map(|v| v.pcpu).collect();
    log::info!(
        "  d{} ({}): {} vCPU{} pinned to pCPUs {:?}{}",
        dom.id.0,
        plan.name,
        pcpus.len(),
        if pcpus.len() == 1 { "" } else { "s" },
        pcpus,
        if dom.tee { ", OP-TEE" } else { "" }
    );
    for (ipa, pa) in plan.ram.iter().zip(dom.ram.iter()) {
        log::info!(
            "    RAM      [{:?}, {:?}) {} MiB at [{}, {}), scrubbed",
            ipa.start,
            ipa.end,
            (ipa.end.raw() - ipa.start.raw()) >> 20,
            pa.start,
            pa.end
        );
    }
    log::info!(
        "    devices  emulated: vGICv3 at {:?}, vPL011 at {:?}",
        dom.gicd.start,
        dom.uart.start
    );
    log::info!("    kernel   entry {:?}, DT at {:?}", dom.entry, dom.dtb);
}

/// A fatal error: say what it is, then stop the machine.
fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    log::error!("{args}");
    stop_machine()
}

/// The end of every fatal path. A fatal error never parks in silence: the machine powers
/// off through PSCI SYSTEM_OFF, so QEMU (or a board's power controller) ends and the cause
/// is the last thing on the console. Xen resets after five seconds instead; on a board
/// booted by scripts a reset would only loop back into the same error. `noreboot` parks
/// every CPU instead, for a debugger.
fn stop_machine() -> ! {
    // What waited for dom0's newline goes out before the machine stops.
    console::flush();
    if NOREBOOT.load(Ordering::Relaxed) {
        emergency(format_args!(
            "(moat) error: {FATAL_MARKER}; noreboot: this CPU parks for a debugger\n"
        ));
        arch::park()
    }
    emergency(format_args!(
        "(moat) error: {FATAL_MARKER}; powering off (the hypervisor option noreboot keeps it \
         parked)\n"
    ));
    arch::smc([u64::from(psci_ids::SYSTEM_OFF), 0, 0, 0, 0, 0, 0, 0]);
    // The firmware refused (or has no PSCI): nothing is left but to stop here.
    emergency(format_args!(
        "(moat) error: PSCI SYSTEM_OFF returned; this CPU parks\n"
    ));
    arch::park()
}

/// Print on the console even when it is not (or no longer) usable through its lock: straight
/// to the UART the early scan or the boot configuration found, if any.
fn emergency(args: core::fmt::Arguments<'_>) {
    let base = CONSOLE_BASE.load(Ordering::Relaxed);
    if base != 0 {
        // SAFETY: CONSOLE_BASE only ever holds the console PL011's base, checked to lie in
        // EL2's device window (or, with the MMU off, where everything is device memory). A
        // second handle is used because a fatal path may hold the console lock.
        let u = unsafe { pl011::Pl011::new(base) };
        let _ = core::fmt::Write::write_fmt(&mut PanicWriter(&u), args);
    }
}

/// The firmware's DT at `dtb`, read in place with its header's size bounded, before
/// anything is copied or parsed (byte reads only: the MMU may be off).
fn raw_dtb(dtb: u64) -> Option<&'static [u8]> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the boot protocol puts a DTB at `dtb` (x0), in RAM that EL2 maps (or reaches
    // with the MMU off); only its header's totalsize is read here, byte by byte.
    let size = unsafe {
        let p = dtb as *const u8;
        (0..4).fold(0usize, |acc, i| {
            acc << 8 | usize::from(core::ptr::read_volatile(p.add(4 + i)))
        })
    };
    if !(40..=MAX_DTB).contains(&size) {
        return None;
    }
    // SAFETY: `size` bytes from `dtb` are the DT handed over by the firmware, bounded to
    // MAX_DTB; nothing writes them while moat boots.
    Some(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// The early console: before the boot configuration is parsed (it may be what is wrong),
/// find the console UART and `noreboot` with a byte-only scan of the DT, so that every fatal
/// error from here on is printed and obeys `noreboot`. `limit`: the UART must lie below it
/// (EL2's device window), or it is not used.
fn early_console(dtb: u64, limit: u64) {
    let Some(blob) = raw_dtb(dtb) else { return };
    NOREBOOT.store(
        hv_core::early::hv_option(blob, b"noreboot"),
        Ordering::Relaxed,
    );
    if let Some(base) = hv_core::early::console_base(blob).filter(|&b| b != 0 && b < limit) {
        CONSOLE_BASE.store(base, Ordering::Relaxed);
        // SAFETY: the DT's console PL011, inside EL2's device window (checked above); the
        // full boot configuration may later move the console to `dtuart=`.
        unsafe { console::init(base) };
    }
}

/// Copy the host DT out of RAM that will become dom0's.
fn copy_dtb(dtb: u64) -> Option<Vec<u8>> {
    raw_dtb(dtb).map(<[u8]>::to_vec)
}

fn banner(cfg: &BootConfig, dom0: &Domain, mpidrs: &[u64]) {
    log::info!("moat v{VERSION}: a minimal EL2 hypervisor with an OP-TEE mediator");
    log::info!(
        "running at EL{} on {} CPUs",
        regs::current_el(),
        mpidrs.len()
    );
    log::info!("memory map:");
    for r in &cfg.memory {
        log::info!(
            "  RAM        [{}, {}) {} MiB",
            r.start,
            r.end,
            r.len() >> 20
        );
    }
    let hv = hv_region();
    log::info!(
        "  moat       [{}, {}) {} MiB (image, stacks, heap, stage-2 frames)",
        hv.start,
        hv.end,
        hv.len() >> 20
    );
    for r in &cfg.reserved {
        log::info!(
            "  reserved   [{}, {}) {:?}",
            r.range.start,
            r.range.end,
            r.kind
        );
    }
    if let Some(u) = cfg.console_uart() {
        log::info!("  console    {} {}", u.node, u.regs.start);
    }
    if let Some(o) = &cfg.optee {
        log::info!("  OP-TEE     /firmware/optee, method {:?}", o.method);
    }
    let vm = dom0.vm.lock();
    let pcpus: Vec<usize> = vm.vcpus().iter().map(|v| v.pcpu).collect();
    log::info!("domains:");
    log::info!(
        "  d0 (dom0): {} vCPU{} pinned to pCPUs {:?}",
        pcpus.len(),
        if pcpus.len() == 1 { "" } else { "s" },
        pcpus
    );
    for r in &dom0.ram {
        log::info!(
            "    RAM      [{}, {}) {} MiB, 1:1",
            r.start,
            r.end,
            r.len() >> 20
        );
    }
    log::info!(
        "    devices  {} MMIO ranges 1:1; emulated: vGICv3, vPL011",
        dom0.devices.len()
    );
    for d in &dom0.devices {
        log::info!("             [{}, {})", d.start, d.end);
    }
    log::info!("    kernel   entry {:?}, DT at {:?}", dom0.entry, dom0.dtb);
}

/// moat was entered at EL`el`, not EL2: find the console in the DT (byte reads only, MMU
/// off), say what is wrong, and stop the machine. Nothing else is set up.
pub fn wrong_el(dtb: u64, el: u64) -> ! {
    // With the MMU off every address is device memory: any UART the DT names will do.
    early_console(dtb, u64::MAX);
    emergency(format_args!(
        "\r\n(moat) error: entered at EL{el}, but moat runs at EL2 \
         (QEMU: -machine virtualization=on); stopping\r\n"
    ));
    stop_machine()
}

/// The primary CPU's Rust entry, with the MMU off, BSS cleared and a stack.
pub fn start(dtb: u64, stack_top: u64) -> ! {
    arch::mmu::build();
    arch::mmu::enable();
    arch::vectors::install();
    mem::init();
    // EL2's identity map makes only [0, 1 GiB) device memory: every MMIO block moat drives
    // itself must lie there, or it would be accessed as cacheable RAM.
    let device_limit = arch::mmu::DEVICE_LIMIT;
    early_console(dtb, device_limit);
    let Some(host_dtb) = copy_dtb(dtb) else {
        fatal(format_args!(
            "no usable device tree at x0 = {dtb:#x} (the boot protocol passes the DTB there)"
        ))
    };
    let cfg = match BootConfig::parse(&host_dtb) {
        Ok(c) => c,
        Err(e) => fatal(format_args!("the boot configuration is unusable: {e}")),
    };
    let Some(uart) = cfg.console_uart().map(|u| u.regs.start.raw()) else {
        fatal(format_args!(
            "no console: /chosen/stdout-path (or the dtuart= option) names no PL011 in the DT"
        ))
    };
    if uart >= device_limit {
        fatal(format_args!(
            "the console UART at {uart:#x} lies above moat's device window ({device_limit:#x})"
        ));
    }
    CONSOLE_BASE.store(uart, Ordering::Relaxed);
    NOREBOOT.store(cfg.hv_args.noreboot, Ordering::Relaxed);
    // SAFETY: the DT names this PL011 as the console, below the device window (checked
    // above); dom0 sees the emulated vPL011 in its place, never this one.
    unsafe { console::init(uart) };
    let gicr_end = cfg
        .gic
        .redists
        .iter()
        .map(|r| r.end.raw())
        .max()
        .unwrap_or(0);
    if uart >= device_limit || cfg.gic.dist.end.raw() > device_limit || gicr_end > device_limit {
        fatal(format_args!(
            "the console UART, GIC distributor and redistributors must lie below {device_limit:#x} \
             (moat's device window)"
        ));
    }
    let dist = cfg.gic.dist.start.raw();
    // SAFETY: the DT's GIC distributor; EL2 maps [0, 1 GiB) as device memory, and no
    // guest maps it (dom0 sees the emulated vGIC there).
    let gicd = GICD.call_once(|| unsafe { gic::Gicd::new(dist) });
    gicd.init(gic::mpidr_to_irouter(regs::mpidr()));
    for u in &cfg.hv_args.unknown {
        log::warn!("unknown hypervisor option ignored: {u}");
    }
    let mpidrs: Vec<u64> = cfg.cpus.iter().map(|c| c.mpidr).collect();
    let me = regs::mpidr();
    if mpidrs.first() != Some(&me) {
        fatal(format_args!(
            "booted on MPIDR {me:#x}, but the DT's first CPU is {:?}",
            mpidrs.first()
        ));
    }
    if mpidrs.len() > MAX_CPUS {
        fatal(format_args!(
            "{} CPUs in the DT, moat supports {MAX_CPUS}",
            mpidrs.len()
        ));
    }
    // Without dom0_max_vcpus, dom0 gets every pCPU the domUs leave (each vCPU is pinned to
    // a pCPU of its own), and at least one.
    let domu_vcpus: usize = cfg.domus.iter().map(|d| d.vcpus as usize).sum();
    let want = cfg
        .hv_args
        .dom0_max_vcpus
        .map(|n| n as usize)
        .unwrap_or(mpidrs.len().saturating_sub(domu_vcpus).max(1));
    let mut partition = hv_core::vm::CpuPartition::new(mpidrs.len());
    let pcpus = match partition.assign(hv_core::vm::DomainId(0), want) {
        Ok(p) => p,
        Err(e) => fatal(format_args!(
            "dom0 asks for {want} vCPUs (dom0_max_vcpus), but this machine has {} physical CPUs \
             and each vCPU is pinned to its own ({e:?})",
            mpidrs.len()
        )),
    };
    let mmfr0: u64;
    let mmfr1: u64;
    // SAFETY: reading ID registers has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack));
        core::arch::asm!("mrs {}, id_aa64mmfr1_el1", out(reg) mmfr1, options(nomem, nostack));
    }
    // The OP-TEE mediator first: which domains get the TEE decides what is built. Without
    // an NS-virtualization OP-TEE there is no mediator and trusted-OS calls are refused.
    let probe = cfg
        .optee
        .is_some()
        .then(|| tee::init(cfg.hv_args.trace_smc, cfg.hv_args.trace_msg));
    // dom0 has the TEE unless it opted out (counted as the plan counts it); its calls are
    // refused later if the mediator did not come up.
    let dom0_tee = hv_core::domu::dom0_has_tee(&cfg);
    let domus = match plan_domus(&cfg, &mut partition, (mmfr0 & 0xf) as u8) {
        Ok(d) => d,
        Err(e) => fatal(format_args!("{e}")),
    };
    let domu_frames = match domu_frames(&cfg, &domus) {
        Ok(f) => f,
        Err(e) => fatal(format_args!("{e}")),
    };
    // dom0 never gets the domUs' frames, nor their boot modules (2 MiB-rounded: dom0's RAM
    // is mapped in blocks), which a domU's reset loads again.
    let mut domu_reserved: Vec<Range<PhysAddr>> = domu_frames.into_iter().collect();
    const M2: u64 = 2 << 20;
    for d in &cfg.domus {
        for m in core::iter::once(&d.kernel).chain(d.ramdisk.iter()) {
            domu_reserved.push(Range {
                start: PhysAddr(m.range.start.raw() & !(M2 - 1)),
                end: PhysAddr(m.range.end.raw().div_ceil(M2) * M2),
            });
        }
    }
    let platform = domain::Platform {
        host_dtb: &host_dtb,
        cfg: &cfg,
        hv: hv_region(),
        pcpus: &pcpus,
        pa_range: (mmfr0 & 0xf) as u8,
        vmid16: (mmfr1 >> 4) & 0xf == 2,
        gic_lines: gicd.lines(),
        domu_reserved,
        dom0_tee,
    };
    let dom0 = match domain::build_dom0(&platform) {
        Ok(d) => d,
        Err(e) => fatal(format_args!("cannot build dom0: {e}")),
    };
    banner(&cfg, &dom0, &mpidrs);
    match &probe {
        Some(Ok(probe)) => log::info!(
            "OP-TEE {}.{}: NS-virtualization, {} threads; mediator on{}",
            probe.os_revision.0,
            probe.os_revision.1,
            probe.thread_count,
            if cfg.hv_args.trace_smc {
                ", tracing every call"
            } else {
                ""
            }
        ),
        Some(Err(e)) => {
            log::warn!("OP-TEE mediator off ({e:?}): trusted-OS calls will be refused")
        }
        None => {}
    }
    let mut all = alloc::vec![dom0];
    let mut next_frame = domu_frames.map_or(0, |f| f.start.raw());
    for d in &domus {
        match build_domu(&platform, d, &mut next_frame) {
            Ok(dom) => {
                domu_banner(&dom, d);
                all.push(dom);
            }
            Err(e) => fatal(format_args!("cannot build d{}: {e}", d.id.0)),
        }
    }
    // Announce every TEE domain before any runs; a refusal fails the domain's creation.
    for dom in all.iter().filter(|d| d.tee && tee::available()) {
        if let Err(e) = tee::vm_created(dom.id.0) {
            fatal(format_args!(
                "OP-TEE refused d{} (VM_CREATED): {e:?}; Debian's virtualized OP-TEE serves \
                 {OPTEE_GUEST_SLOTS} guests",
                dom.id.0
            ));
        }
        log::info!(
            "d{}: announced to OP-TEE as client {}",
            dom.id.0,
            dom.id.0 + 1
        );
    }
    let firmware = query_firmware();
    let console_intid = all[0].uart_intid;
    SYSTEM.call_once(|| System {
        firmware,
        domains: all,
        mpidrs,
        console_intid,
    });
    vdev::init_console(domains());
    // moat's console input: the UART's SPI stays moat's (never HW-linked to a guest).
    gicd.set_enabled(console_intid, true);
    console::with_uart(|u| u.enable_rx_irq());
    // Each domU's boot vCPU starts on its own pCPU, through the firmware, as dom0's
    // secondaries do on CPU_ON.
    for dom in &domains()[1..] {
        let (entry, x0) = (dom.entry, dom.dtb.raw());
        if start_vcpu(dom, 0, entry, x0) != 0 {
            log::error!("d{}: its boot vCPU's pCPU did not start", dom.id.0);
        }
    }
    run_vcpu(0, stack_top)
}

/// A secondary CPU's Rust entry (started by [`start_vcpu`]), MMU off, with a stack.
pub fn start_secondary(cpu: usize, stack_top: u64) -> ! {
    arch::mmu::enable();
    arch::vectors::install();
    run_vcpu(cpu, stack_top)
}

/// Enter the vCPU pinned to this pCPU.
fn run_vcpu(cpu: usize, stack_top: u64) -> ! {
    let pinned = domains().iter().find_map(|d| {
        let index = d.vm.lock().vcpus().iter().position(|v| v.pcpu == cpu)?;
        Some((d, index))
    });
    let Some((dom, index)) = pinned else {
        fatal(format_args!("pCPU {cpu} started with no vCPU pinned to it"))
    };
    let (entry, x0) = match dom.vm.lock().enter(index) {
        Ok(v) => v,
        Err(e) => fatal(format_args!("d{} vCPU {index} cannot start: {e}", dom.id.0)),
    };
    CURRENT[cpu % MAX_CPUS].store(usize::from(dom.id.0) << 16 | index, Ordering::Relaxed);
    STACK_TOPS[cpu % MAX_CPUS].store(stack_top, Ordering::Relaxed);
    let (gicr_base, gicr_len) = dom.host_gicr;
    // SAFETY: the host's redistributor region from the DT, device-mapped at EL2 and never
    // mapped into a guest.
    let found = unsafe {
        gic::init_redistributor(
            gicr_base,
            gicr_len,
            regs::mpidr(),
            (1 << MAINTENANCE_INTID) | (1 << gic::KICK_SGI),
        )
    };
    if !found {
        fatal(format_args!(
            "no redistributor for MPIDR {:#x}",
            regs::mpidr()
        ));
    }
    gic::init_cpu_interface();
    LIST_REGISTERS.store(gic::list_registers(), Ordering::Relaxed);
    regs::install_guest_controls(index);
    // SAFETY: VTCR/VTTBR select dom0's complete stage-2 tables (built before any vCPU
    // runs); the TLB invalidation drops anything cached for this VMID.
    unsafe {
        core::arch::asm!(
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            vtcr = in(reg) dom.vtcr,
            vttbr = in(reg) dom.vttbr,
            options(nostack)
        );
    }
    let mut frame = TrapFrame::default();
    frame.x[0] = x0;
    frame.elr = entry.raw();
    frame.spsr = regs::SPSR_EL1H_MASKED;
    // A guest can turn vCPUs off and on at will: this line is rate-limited like a warning.
    if dom
        .limits
        .vcpu_starts
        .hit(arch::counter(), arch::counter_frequency())
        .is_some()
    {
        log::info!(
            "d{}: vCPU {index} starts on pCPU {cpu} at {:?}, x0 = {:#x}",
            dom.id.0,
            entry,
            x0
        );
    }
    arch::vectors::enter_guest(cpu, &frame, stack_top)
}

/// PSCI CPU_ON for vCPU `index`: start its pCPU through the firmware. Returns the PSCI
/// result for the guest.
pub(crate) fn start_vcpu(dom: &Domain, index: usize, _entry: Ipa, _context: u64) -> u64 {
    let pcpu = dom.vm.lock().vcpus()[index].pcpu;
    let target = system().mpidrs[pcpu];
    // The physical address of boot's secondary entry (EL2 runs identity-mapped).
    let entry = _secondary_start as *const () as u64;
    let on = [
        u64::from(psci_ids::CPU_ON_64),
        target,
        entry,
        pcpu as u64,
        0,
        0,
        0,
        0,
    ];
    // A pCPU whose vCPU just called CPU_OFF may still be on its way down: the firmware then
    // answers ALREADY_ON or ON_PENDING for a moment. Retry, boundedly.
    let mut r = arch::smc(on)[0];
    for _ in 0..CPU_ON_RETRIES {
        let code = r as i64;
        if code != i64::from(psci_ids::ALREADY_ON) && code != i64::from(psci_ids::ON_PENDING) {
            break;
        }
        for _ in 0..10_000 {
            core::hint::spin_loop();
        }
        r = arch::smc(on)[0];
    }
    if r != 0 {
        guest_warn!(
            dom,
            cpu_on_failed,
            "firmware CPU_ON of pCPU {pcpu} failed: {:#x}",
            r
        );
        // Undo the accepted CPU_ON so the guest may try again.
        let _ = dom.vm.lock().start_failed(index);
        return smccc::ret(psci_ids::INTERNAL_FAILURE);
    }
    0
}

/// Empty this pCPU's list registers, deactivating the physical interrupts behind the
/// HW-linked ones, which would otherwise stay active (and silent) for good: when its vCPU
/// stops, or before a reset domU enters its new kernel here.
fn clear_lrs() {
    for n in 0..list_register_count() {
        let lr = gic::read_lr(n);
        let state = lr >> 62;
        let hw = lr & (1 << 61) != 0;
        if state != 0 && hw {
            gic::deactivate(((lr >> 32) & 0x1fff) as u32);
        }
        gic::write_lr(n, 0);
    }
}

/// PSCI CPU_OFF for the calling vCPU: turn its pCPU off in the firmware.
pub(crate) fn stop_this_cpu(_dom: &Domain, cpu: usize) -> ! {
    clear_lrs();
    arch::smc([u64::from(psci_ids::CPU_OFF), 0, 0, 0, 0, 0, 0, 0]);
    fatal(format_args!("firmware CPU_OFF returned on pCPU {cpu}"))
}

/// A domU's vCPU `vcpu` asked for SYSTEM_OFF or SYSTEM_RESET (the VM is ShuttingDown and
/// the caller Stopped): make its other running vCPUs stop at their next exit, and stop this
/// one. The last vCPU to stop tears the domain down.
pub(crate) fn domain_stopping(dom: &'static Domain, vcpu: usize, cpu: usize, reset: bool) -> ! {
    log::info!(
        "d{}: {} by vCPU {vcpu}",
        dom.id.0,
        if reset { "reset" } else { "powered off" }
    );
    dom.life.reset.store(reset, Ordering::Relaxed);
    dom.life.dying.store(true, Ordering::Release);
    let others: Vec<usize> = dom
        .vm
        .lock()
        .vcpus()
        .iter()
        .filter(|v| v.state == hv_core::vm::VcpuState::Running)
        .map(|v| v.pcpu)
        .collect();
    for p in others {
        gic::send_sgi(gic::KICK_SGI, mpidr_of(p));
    }
    if dom.vm.lock().state() == hv_core::vm::VmState::Destroyed && destroy(dom) && reset {
        restart(dom, cpu);
    }
    stop_this_cpu(dom, cpu)
}

/// After a domU's reset was torn down: build it again and start its boot vCPU, here if
/// this is its pCPU (entering the guest anew on a fresh stack), else through the firmware.
/// Only returns when it could not be rebuilt (the domain then stays dead).
fn restart(dom: &'static Domain, cpu: usize) {
    if let Err(e) = dom.rebuild() {
        log::error!("d{}: cannot be rebuilt after its reset: {e}", dom.id.0);
        return;
    }
    if dom.tee {
        if let Err(e) = tee::vm_created(dom.id.0) {
            log::error!("d{}: OP-TEE refused it again (VM_CREATED): {e:?}", dom.id.0);
            return;
        }
    }
    let n = dom.life.resets.fetch_add(1, Ordering::Relaxed) + 1;
    // What a reset cycle must give back: measured after the rebuild, compared with the
    // first cycle's (the first keeps what the domain's first life allocated for good,
    // such as its console's line buffer).
    let now = (mem::heap_in_use(), mem::frames_in_use());
    let first = *dom.life.baseline.lock().get_or_insert(now);
    let pinned = dom.pins.lock().len();
    if now == first && pinned == 0 {
        log::info!(
            "d{}: re-created after reset {n}; 0 pages pinned, heap {} B and {} stage-2 frames \
             in use, as after its first reset",
            dom.id.0,
            now.0,
            now.1
        );
    } else {
        log::warn!(
            "d{}: re-created after reset {n}; LEAK: {pinned} pages pinned, heap {} B (was {} B), \
             {} stage-2 frames (were {})",
            dom.id.0,
            now.0,
            first.0,
            now.1,
            first.1
        );
    }
    // The previous kernel's timers must not fire into the new one.
    // SAFETY: CNTV_CTL_EL0 and CNTP_CTL_EL0 belong to the guest of this pCPU, which is
    // not running; 0 disables both timers.
    unsafe {
        core::arch::asm!(
            "msr cntv_ctl_el0, xzr",
            "msr cntp_ctl_el0, xzr",
            "isb",
            options(nostack)
        )
    };
    let boot_pcpu = dom.vm.lock().vcpus()[0].pcpu;
    if boot_pcpu == cpu {
        clear_lrs();
        run_vcpu(cpu, STACK_TOPS[cpu % MAX_CPUS].load(Ordering::Relaxed))
    }
    if start_vcpu(dom, 0, dom.entry, dom.dtb.raw()) != 0 {
        log::error!(
            "d{}: its boot vCPU's pCPU did not start after the reset",
            dom.id.0
        );
    }
}

/// On the way back to a guest: if its domain is going away, stop this vCPU instead.
pub(crate) fn stop_if_dying(dom: &'static Domain, vcpu: usize) {
    if !dom.life.dying.load(Ordering::Acquire) {
        return;
    }
    let last = {
        let mut vm = dom.vm.lock();
        let _ = vm.vcpu_stopped(vcpu);
        vm.state() == hv_core::vm::VmState::Destroyed
    };
    if last && destroy(dom) && dom.life.reset.load(Ordering::Relaxed) {
        restart(dom, cpu_index());
    }
    stop_this_cpu(dom, cpu_index())
}

/// A domU's last vCPU stopped: tell OP-TEE (VM_DESTROYED, after the mediator released the
/// domain's calls, buffers and pins), and scrub its memory.
/// Returns whether this call tore it down (and it may be built again).
fn destroy(dom: &Domain) -> bool {
    if dom.life.destroyed.swap(true, Ordering::AcqRel) {
        return false;
    }
    if dom.tee {
        match tee::vm_destroyed(dom) {
            Ok(()) => log::info!("d{}: OP-TEE told (VM_DESTROYED)", dom.id.0),
            Err(mediator::Error::CallsInFlight) => {
                // Cannot happen once every vCPU stopped (a vCPU stops only on its way back
                // to the guest, never inside an SMC): a moat bug. OP-TEE may still use the
                // domain's pages, so they are neither scrubbed nor reused.
                log::error!(
                    "d{}: an OP-TEE call is still in flight after its last vCPU stopped; its \
                     memory is kept as it is",
                    dom.id.0
                );
                return false;
            }
            Err(e) => log::warn!("d{}: OP-TEE's VM_DESTROYED failed: {e:?}", dom.id.0),
        }
    }
    if let Some(f) = &dom.frames {
        domain::scrub(f);
    }
    log::info!(
        "d{}: destroyed; {} MiB scrubbed, {} pages still pinned",
        dom.id.0,
        dom.frames.map_or(0, |f| f.len() >> 20),
        dom.pins.lock().len()
    );
    true
}

/// SYSTEM_OFF or SYSTEM_RESET through the firmware: dom0 owns the machine, so its request
/// ends (or resets) everything, as in Xen.
pub(crate) fn firmware_system(dom: &Domain, function: u32) -> ! {
    log::info!(
        "d{} asked for {}",
        dom.id.0,
        if function == psci_ids::SYSTEM_OFF {
            "power-off"
        } else {
            "reset"
        }
    );
    console::flush();
    arch::smc([u64::from(function), 0, 0, 0, 0, 0, 0, 0]);
    fatal(format_args!("firmware PSCI {function:#x} returned"))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let base = CONSOLE_BASE.load(Ordering::Relaxed);
    if base != 0 {
        // SAFETY: the console UART, as set up in `start`; a panic may have left the
        // console lock held, so this writes through a second handle.
        let u = unsafe { pl011::Pl011::new(base) };
        let mut w = PanicWriter(&u);
        let _ = core::fmt::Write::write_fmt(
            &mut w,
            format_args!("\n(moat) PANIC on CPU {}: {info}\n", cpu_index()),
        );
    }
    stop_machine()
}

struct PanicWriter<'a>(&'a pl011::Pl011);

impl core::fmt::Write for PanicWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            self.0.put(b);
        }
        Ok(())
    }
}
