// SPDX-License-Identifier: MIT OR Apache-2.0
//! Boot profiles (`--hv none|moat|xen`) and `cargo xtask qemu`.
//!
//! Guest physical memory layout, the same for every profile:
//!
//! ```text
//!   0x4000_0000  DTB (QEMU puts it here; TF-A and OP-TEE edit it in place)
//!   0x4200_0000  OP-TEE's static SHM, reserved by Debian's builds: never load over it
//!   0x4220_0000  -
//!   0x4800_0000  initrd (dom0's ramdisk module under a hypervisor)
//!   0x5000_0000  dom0's kernel module (under a hypervisor)
//!   0x6000_0000  BL33: the Linux Image (--hv none) or the hypervisor image
//! ```
//!
//! Under a hypervisor the DT's `/chosen` carries Xen's multiboot binding: the hypervisor's
//! command line in `xen,xen-bootargs`, dom0's in `xen,dom0-bootargs`, and the kernel and
//! ramdisk as `module@…` nodes. moat and stock Xen get the very same DT and addresses.
//!
//! `--boot u-boot` boots the same images at the same addresses through U-Boot
//! ([`crate::uboot`]): U-Boot at 0x44000000 and its boot.scr at 0x41000000 come in
//! addition, and boot.scr writes `/chosen` instead of fdtput.

use crate::apt::PrivateApt;
use crate::dtb::{self, Chosen, Module};
use crate::lock::Lock;
use crate::qemu::{self, Console, Invocation, Machine, Outcome, Verdict};
use crate::resolve::{self, Resolved, Resolver};
use crate::rootfs::Kernel;
use crate::stack::{OpteeFlavour, Stack};
use crate::{host, paths, rootfs, tfa};
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Start of RAM on QEMU virt.
pub const RAM_BASE: u64 = 0x4000_0000;
/// OP-TEE's static shared memory `[start, end)`, reserved by Debian's OP-TEE builds.
pub const OPTEE_SHM: (u64, u64) = (0x4200_0000, 0x4220_0000);
/// Where the initrd is loaded.
pub const INITRD_ADDR: u64 = 0x4800_0000;
/// Where dom0's kernel is loaded when a hypervisor is BL33.
pub const DOM0_KERNEL_ADDR: u64 = 0x5000_0000;
/// Where TF-A enters BL33 (its PRELOADED_BL33_BASE).
pub const BL33_ADDR: u64 = 0x6000_0000;
/// Where dom0less domU `i`'s (0-based) kernel and ramdisk modules are loaded: 128 MiB a
/// domU from 0x64000000, above moat's image and stage-2 pool, the kernel first and the
/// ramdisk 64 MiB above it. moat copies them into the domU's own memory at boot.
pub const DOMU_KERNEL_ADDR: u64 = 0x6400_0000;
pub const DOMU_INITRD_ADDR: u64 = 0x6800_0000;
pub const DOMU_STRIDE: u64 = 0x0800_0000;
/// Most domUs xtask lays out (moat's OP-TEE serves 2 guests; dom0 may opt out).
pub const MAX_DOMUS: usize = 2;
/// What a `--domu` domain gets: Xen's dom0less defaults as a test would write them.
pub const DOMU_MEMORY_MIB: u64 = 256;

/// The console marker `/init` prints after CMD ran: `moat-init: run-exit=<status>`.
pub const RUN_EXIT_MARKER: &str = "moat-init: run-exit=";

/// Which hypervisor runs at EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Hv {
    /// No hypervisor: Linux runs directly on TF-A and the plain OP-TEE (the baseline).
    None,
    /// moat, with its OP-TEE mediator and the NS-virtualized OP-TEE.
    Moat,
    /// Stock Xen with its OP-TEE mediator and the NS-virtualized OP-TEE.
    Xen,
}

impl Hv {
    /// The OP-TEE build this profile boots: the NS-virtualized one needs a hypervisor that
    /// announces VMs (without one it panics on the first call), the plain one must run alone.
    pub fn optee_flavour(self) -> OpteeFlavour {
        match self {
            Hv::None => OpteeFlavour::Plain,
            Hv::Moat | Hv::Xen => OpteeFlavour::Virtualized,
        }
    }
}

/// How BL33 comes to run what `--hv` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum Boot {
    /// TF-A enters the preloaded hypervisor (or Linux) itself, with a DT whose `/chosen`
    /// xtask wrote with fdtput.
    #[default]
    #[serde(rename = "direct")]
    Direct,
    /// TF-A enters Debian's U-Boot, whose generated boot.scr writes `/chosen` and boots the
    /// same images at the same addresses with `booti`.
    #[value(name = "u-boot")]
    #[serde(rename = "u-boot")]
    UBoot,
}

/// What dom0 boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dom0 {
    /// Linux with the initramfs (tee-supplicant, xtest, the attack client).
    #[default]
    Linux,
    /// The hostile guest (tests/guests/hostile): a bare-metal program that fires a seeded
    /// campaign of raw SMCs at moat's OP-TEE mediator, checks every answer, prints a
    /// summary and powers off. moat only.
    Hostile,
}

/// What dom0 boots, once built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Dom0Boot {
    /// The Linux Image and initramfs of the profile.
    #[default]
    Linux,
    /// The hostile guest's Image, with these options (`xen,dom0-bootargs` is `hostile
    /// <args>`) and no ramdisk.
    Hostile { image: PathBuf, args: String },
}

#[derive(clap::Args, Debug)]
pub struct QemuArgs {
    /// Which hypervisor runs at EL2.
    #[arg(long, value_enum, default_value_t = Hv::Moat)]
    pub hv: Hv,
    /// How it is booted: `direct` (TF-A enters it, with /chosen written by xtask) or
    /// `u-boot` (TF-A enters Debian's U-Boot, whose generated boot.scr writes /chosen and
    /// boots it; the same boot.scr for moat and Xen).
    #[arg(long, value_enum, default_value_t = Boot::Direct)]
    pub boot: Boot,
    /// Run this shell command in the guest instead of giving a shell, print its exit status
    /// (`moat-init: run-exit=N`) and power off; xtask then exits with that status.
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
    /// With --run: give up (exit 124) after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Physical CPUs of the emulated board: 1 to 8 (TF-A's QEMU platform has 8 cores, and
    /// moat has 8 per-CPU stacks).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=MAX_SMP as i64))]
    pub smp: u32,
    /// RAM of the emulated board, in MiB: 1024 to 16384 (the fixed load layout puts BL33 at
    /// 0x60000000, 512 MiB in, and the domUs' modules above it); at least 1280 under a
    /// hypervisor, whose dom0 gets 1024 MiB.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1024..=16384))]
    pub mem: u32,
    /// Start QEMU's gdb stub on port 1234 with the CPUs halted at reset, and print the
    /// gdb-multiarch command that attaches with the hypervisor's symbols.
    #[arg(long)]
    pub gdb: bool,
    /// Extra hypervisor options, appended to its command line in `xen,xen-bootargs`
    /// (for example "dom0_max_vcpus=1").
    #[arg(long, value_name = "OPTIONS")]
    pub hv_args: Option<String>,
    /// moat: `smc` logs every mediated trusted-OS call, one line each (VM, function,
    /// arguments, pages translated, result): `trace=smc` on moat's command line.
    /// `smc=msg` adds each OP-TEE message decoded (command, session, each parameter, each
    /// page of a buffer as IPA -> PA, and the RPCs): `trace=smc,msg`.
    #[arg(long, value_name = "WHAT", value_parser = ["smc", "smc=msg"])]
    pub trace: Option<String>,
    /// Boot another OP-TEE build than the profile's own (moat normally boots the
    /// virtualized one; with the plain one it runs without a mediator).
    #[arg(long, value_enum)]
    pub optee: Option<OpteeFlavour>,
    /// With --hv xen: boot Xen's debug build (CONFIG_DEBUG=y: assertions, verbose logs).
    #[arg(long)]
    pub xen_debug: bool,
    /// With --hv xen: add Xen's toolstack (xl, xenstored) and a domU to dom0; in dom0,
    /// `moat-xl-domu [CMD]` boots a domU with tee="optee".
    #[arg(long)]
    pub xen_toolstack: bool,
    /// The guest kernel's series, one of qemu/stack.toml's `kernel.series` (6.1: bookworm's,
    /// the default; 6.12: trixie's).
    #[arg(long, value_name = "SERIES")]
    pub kernel: Option<String>,
    /// With --hv moat: boot N (1 or 2; 1 when N is left out) dom0less domUs beside dom0
    /// (Xen's `/chosen/domU<n>` binding: 1 vCPU, 256 MiB, a vPL011 console,
    /// `xen,tee = "optee"`), each running the same kernel and initramfs. Their console lines
    /// are prefixed `(d1)`, `(d2)`; Ctrl-a three times cycles the input through moat, dom0
    /// and each domU. Each needs a pCPU of its own: dom0 gets the rest of `--smp`. OP-TEE
    /// serves 2 guests: for 2 domUs with the TEE, add `--hv-args dom0_tee=no`.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=MAX_DOMUS as i64))]
    pub domu: Option<u32>,
    /// With --domu: run this shell command in the domUs instead of their shell. Once: every
    /// domU runs it; once per domU (repeated, in order d1, d2, ...): each runs its own.
    #[arg(long, value_name = "CMD", requires = "domu", action = clap::ArgAction::Append)]
    pub domu_run: Vec<String>,
    /// With --hv moat: what dom0 boots. `hostile` runs the hostile guest's campaign
    /// instead of Linux (no shell, no --run); xtask exits with its status (0: nothing
    /// found, 1: findings, 2: it could not run, 3: it crashed).
    #[arg(long, value_enum, default_value_t = Dom0::Linux)]
    pub dom0: Dom0,
    /// With --dom0 hostile: the guest's options, for example "seed=7 cases=1000" or
    /// "mode=threads" (see tests/guests/hostile-core/src/options.rs).
    #[arg(long, value_name = "OPTIONS")]
    pub dom0_args: Option<String>,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// xtask's exit status when the hypervisor stopped with a fatal error (124 is a timeout).
pub const FATAL_EXIT: u8 = 125;

/// Most CPUs a board may have: TF-A's QEMU platform (PLATFORM_CORE_COUNT = 2 clusters of 4)
/// and moat (`hv::MAX_CPUS`) both stop at 8.
pub const MAX_SMP: u32 = 8;

/// The least `--mem` under a hypervisor: dom0's 1024 MiB, moat's 14 MiB and OP-TEE's SHM.
pub const MIN_MEM_WITH_HV: u32 = 1280;

/// Is `--smp n` a board TF-A and moat can run?
pub fn check_smp(n: u32) -> std::result::Result<(), String> {
    if (1..=MAX_SMP).contains(&n) {
        Ok(())
    } else {
        Err(format!("{n} is not in 1..={MAX_SMP}"))
    }
}

/// Would moat accept these options (`--hv-args` for `--hv moat`)? The same parser moat runs
/// at boot, plus: an option moat does not know is refused here (moat would only warn and
/// ignore it, which hides a typo).
pub fn check_moat_args(line: &str) -> std::result::Result<(), String> {
    let a = hv_core::bootcfg::parse_hv_args(line).map_err(|e| e.to_string())?;
    if let Some(u) = a.unknown.first() {
        return Err(format!(
            "moat has no option `{u}`; it knows {}",
            hv_core::bootcfg::OPTIONS.join(", ")
        ));
    }
    Ok(())
}

/// What xtask checks before it boots anything, as clap-style errors.
pub fn check_args(args: &QemuArgs) -> std::result::Result<(), clap::Error> {
    use clap::CommandFactory;
    let invalid = |arg: &str, value: &str, why: String| {
        QemuCli::command().error(
            clap::error::ErrorKind::InvalidValue,
            format!("invalid value '{value}' for '{arg}': {why}"),
        )
    };
    check_smp(args.smp).map_err(|why| invalid("--smp <SMP>", &args.smp.to_string(), why))?;
    if args.hv != Hv::None && args.mem < MIN_MEM_WITH_HV {
        return Err(invalid(
            "--mem <MEM>",
            &args.mem.to_string(),
            format!(
                "dom0 gets 1024 MiB under a hypervisor: use {MIN_MEM_WITH_HV} or more (or --hv none)"
            ),
        ));
    }
    if let (Hv::Moat, Some(extra)) = (args.hv, &args.hv_args) {
        check_moat_args(extra).map_err(|why| invalid("--hv-args <OPTIONS>", extra, why))?;
    }
    if args.boot == Boot::UBoot {
        // These reach the DT through U-Boot's environment (crate::uboot).
        for (arg, value) in [
            ("--hv-args <OPTIONS>", &args.hv_args),
            ("--dom0-args <OPTIONS>", &args.dom0_args),
        ] {
            if let Some(v) = value {
                crate::uboot::check_env_value(v).map_err(|why| invalid(arg, v, why))?;
            }
        }
    }
    Ok(())
}

/// `cargo xtask qemu`'s arguments on their own, for checking a command line without
/// running it (the scenarios of refused configurations).
#[derive(clap::Parser, Debug)]
#[command(name = "cargo xtask qemu")]
pub struct QemuCli {
    #[command(flatten)]
    pub args: QemuArgs,
}

/// How the stack is resolved (every command that builds or boots takes these).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct StackArgs {
    /// Use exactly qemu/stack.lock: a locked package the archive no longer has is an error
    /// instead of a fallback to the newest version that satisfies qemu/stack.toml.
    #[arg(long)]
    pub locked: bool,
}

/// What every preparation of one xtask run shares: the manifest, the cache and the resolver
/// (which resolves each part once and remembers it for the rest of the run).
pub struct Ctx {
    pub stack: Stack,
    pub cache: PathBuf,
    pub res: Resolver<PrivateApt>,
}

impl Ctx {
    /// Load the manifest and the lock, install missing host tools, set up the private apt.
    pub fn new(args: &StackArgs) -> Result<Self> {
        Self::with_lock(args, Lock::load()?)
    }

    pub fn with_lock(args: &StackArgs, lock: Lock) -> Result<Self> {
        let stack = Stack::load()?;
        host::ensure(&stack)?;
        let cache = paths::cache_dir()?;
        println!("cache: {}", cache.display());
        let apt = PrivateApt::new(&cache, &stack.suites())?;
        let res = Resolver::new(apt, lock, &cache, args.locked, stack.suites());
        Ok(Self { stack, cache, res })
    }
}

/// Everything a boot needs, built or taken from the cache.
pub struct Prepared {
    pub machine: Machine,
    pub bios: PathBuf,
    /// U-Boot's image when it is BL33 (`--boot u-boot`): it then runs a boot.scr that
    /// writes `/chosen`, instead of xtask writing it with fdtput.
    pub uboot: Option<PathBuf>,
    pub dtb_base: PathBuf,
    /// The Linux Image: BL33 itself with no hypervisor, dom0's kernel module otherwise.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The hypervisor image entered as BL33, if there is one.
    pub hypervisor: Option<PathBuf>,
    /// The hypervisor's command line (`xen,xen-bootargs`).
    pub hv_bootargs: String,
    /// Linux's command line (`bootargs`, or `xen,dom0-bootargs` under a hypervisor).
    pub linux_bootargs: String,
    /// Every third-party part this boot uses, as resolved (written as `stack.resolved`).
    pub resolved: Vec<Resolved>,
    /// dom0less domUs to boot beside dom0 (moat only).
    pub domus: Vec<DomUReq>,
    /// What dom0 boots (moat only: Linux, or the hostile guest).
    pub dom0: Dom0Boot,
}

/// Boot the hostile guest as dom0 of a moat run, with `args` as its options: build it, and
/// keep Linux (kernel and initramfs) for the domUs only.
pub fn use_hostile_dom0(p: &mut Prepared, hv: Hv, args: &str) -> Result<()> {
    ensure!(
        hv == Hv::Moat,
        "the hostile dom0 runs under moat (--hv moat)"
    );
    let image = crate::hostile::build()?;
    println!("hostile guest image: {} (dom0)", image.display());
    p.dom0 = Dom0Boot::Hostile {
        image,
        args: args.to_string(),
    };
    Ok(())
}

impl Prepared {
    /// The run's exit status, if this console line is the end of dom0's run: /init's
    /// `moat-init: run-exit=N` under Linux, the hostile guest's last line otherwise.
    pub fn exit_status(&self, line: &str) -> Option<u8> {
        match self.dom0 {
            Dom0Boot::Linux => run_exit(line),
            Dom0Boot::Hostile { .. } => crate::hostile::exit_status(line),
        }
    }
}

/// The command of each of `n` domUs from `--domu-run` (or a scenario's `domu_run`s): none
/// (their shells), one for all, or exactly one per domU.
pub fn domu_runs(runs: &[String], n: u32) -> Result<Vec<Option<String>>> {
    match runs.len() {
        0 => Ok(vec![None; n as usize]),
        1 => Ok(vec![Some(runs[0].clone()); n as usize]),
        k if k == n as usize => Ok(runs.iter().cloned().map(Some).collect()),
        k => anyhow::bail!(
            "{k} domU commands for {n} domUs: give one for all of them, or one per domU"
        ),
    }
}

/// Add a domU to a moat run. dom0's vCPUs are cut so that the domU gets pCPUs of its own
/// (static pinning): `dom0_max_vcpus` becomes `--smp` minus the domUs' vCPUs.
pub fn add_domu(p: &mut Prepared, req: DomUReq) -> Result<()> {
    ensure!(
        p.hypervisor.is_some() && p.hv_bootargs.contains("dom0_max_vcpus="),
        "a domU needs moat"
    );
    let domu_vcpus: u32 = p.domus.iter().map(|d| d.cpus).sum::<u32>() + req.cpus;
    let dom0 = p.machine.smp.checked_sub(domu_vcpus).filter(|&n| n >= 1);
    let Some(dom0) = dom0 else {
        bail!(
            "--smp {} leaves no pCPU for dom0 beside {domu_vcpus} domU vCPU(s): each vCPU is \
             pinned to a pCPU of its own (use --smp {})",
            p.machine.smp,
            domu_vcpus + 1
        );
    };
    p.hv_bootargs = p
        .hv_bootargs
        .split_whitespace()
        .map(|w| match w.starts_with("dom0_max_vcpus=") {
            true => format!("dom0_max_vcpus={dom0}"),
            false => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    p.domus.push(req);
    Ok(())
}

/// A dom0less domU a run asks for: it boots the run's kernel and initramfs.
#[derive(Clone, Debug)]
pub struct DomUReq {
    /// The command its /init runs (`--domu-run`); none gives it a shell.
    pub run: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub tee: bool,
}

/// The firmware, kernel, initramfs and DTB shared by every profile.
pub struct Common {
    pub bios: PathBuf,
    /// U-Boot's image, when it is BL33 (`--boot u-boot`).
    pub uboot: Option<PathBuf>,
    pub kernel: Kernel,
    pub initramfs: PathBuf,
    pub dtb_base: PathBuf,
}

impl Common {
    /// A [`Prepared`] with no hypervisor, carrying every part resolved since
    /// [`prepare_common`] began (call it last, after a profile resolved its own parts).
    pub fn into_prepared(self, ctx: &mut Ctx, machine: &Machine) -> Prepared {
        Prepared {
            machine: machine.clone(),
            bios: self.bios,
            uboot: self.uboot,
            dtb_base: self.dtb_base,
            kernel: self.kernel.image,
            initramfs: self.initramfs,
            hypervisor: None,
            hv_bootargs: String::new(),
            linux_bootargs: "console=ttyAMA0 rdinit=/init".into(),
            resolved: ctx.res.take_used(),
            domus: Vec::new(),
            dom0: Dom0Boot::Linux,
        }
    }
}

/// Build (or reuse) what every profile needs, for one OP-TEE flavour, kernel series and
/// way of booting.
pub fn prepare_common(
    ctx: &mut Ctx,
    flavour: OpteeFlavour,
    machine: &Machine,
    kernel: Option<&str>,
    boot: Boot,
) -> Result<Common> {
    let series = ctx.stack.kernel_series(kernel)?.to_string();
    ctx.res.take_used();
    let optee = tfa::optee(ctx)?;
    let bios = tfa::build(ctx, &optee, flavour, boot)?;
    let uboot = match boot {
        Boot::Direct => None,
        Boot::UBoot => Some(crate::uboot::image(ctx)?),
    };
    let kernel = rootfs::kernel(ctx, &series)?;
    let tools = crate::guest_tools::build(ctx)?;
    let initramfs = rootfs::initramfs(ctx, flavour, &optee, &kernel, &tools)?;
    let dtb_base = dtb::base(&ctx.cache, machine, &bios)?;
    Ok(Common {
        bios,
        uboot,
        kernel,
        initramfs,
        dtb_base,
    })
}

/// What to boot besides the profile and the board.
#[derive(Clone, Debug, Default)]
pub struct Choice {
    /// Another OP-TEE build than the profile's own (moat and none only).
    pub optee: Option<OpteeFlavour>,
    /// The kernel series (None: the manifest's default).
    pub kernel: Option<String>,
    /// `--hv xen`'s build and toolstack.
    pub xen: crate::xen::Options,
    /// Direct, or through U-Boot.
    pub boot: Boot,
}

/// Build (or reuse) the pieces for `hv` on `machine`.
pub fn prepare(ctx: &mut Ctx, hv: Hv, machine: &Machine, choice: &Choice) -> Result<Prepared> {
    if choice.optee.is_some() && hv == Hv::Xen {
        bail!("--optee applies to --hv moat and --hv none");
    }
    let xen_default = choice.xen.flavour == crate::xen::Flavour::Release && !choice.xen.toolstack;
    if hv != Hv::Xen && !xen_default {
        bail!("--xen-debug and --xen-toolstack need --hv xen");
    }
    let kernel = choice.kernel.as_deref();
    match hv {
        Hv::None => {
            let c = prepare_common(
                ctx,
                choice.optee.unwrap_or(hv.optee_flavour()),
                machine,
                kernel,
                choice.boot,
            )?;
            Ok(c.into_prepared(ctx, machine))
        }
        Hv::Moat => crate::moat::prepare(ctx, machine, choice.optee, kernel, choice.boot),
        Hv::Xen => crate::xen::prepare(ctx, machine, choice.xen, kernel, choice.boot),
    }
}

/// The images of one boot and their sizes in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    pub initrd: u64,
    pub kernel: u64,
    /// dom0's kernel when it is not `kernel` (the hostile guest): the memory it occupies.
    pub dom0_kernel: Option<u64>,
    /// The hypervisor image, when one is BL33.
    pub hypervisor: Option<u64>,
    /// Each domU's initrd (its kernel is `kernel`).
    pub domu_initrds: [Option<u64>; MAX_DOMUS],
    /// With `--boot u-boot`: U-Boot's image and boot.scr.
    pub uboot: Option<UbootSizes>,
}

/// What `--boot u-boot` adds to the layout, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct UbootSizes {
    pub image: u64,
    pub script: u64,
}

/// Check that the images fit the layout above without overlapping each other or OP-TEE's
/// static SHM.
pub fn check_layout(sizes: Sizes, mem_mib: u32) -> Result<()> {
    let ram_end = RAM_BASE + u64::from(mem_mib) * 1024 * 1024;
    let mut regions = vec![("initrd", INITRD_ADDR, sizes.initrd)];
    match sizes.hypervisor {
        Some(hv) => {
            let dom0 = sizes.dom0_kernel.unwrap_or(sizes.kernel);
            regions.push(("dom0 kernel", DOM0_KERNEL_ADDR, dom0));
            if sizes.domu_initrds.iter().any(Option::is_some) {
                // moat's image, stacks, heap and stage-2 pool sit above BL33_ADDR: keep
                // the domUs' modules clear of 64 MiB there.
                regions.push((
                    "hypervisor",
                    BL33_ADDR,
                    hv.max(DOMU_KERNEL_ADDR - BL33_ADDR),
                ));
            } else {
                regions.push(("hypervisor", BL33_ADDR, hv));
            }
            const NAMES: [(&str, &str); MAX_DOMUS] = [
                ("domU1 kernel", "domU1 initrd"),
                ("domU2 kernel", "domU2 initrd"),
            ];
            for (i, initrd) in sizes.domu_initrds.iter().enumerate() {
                if let Some(initrd) = initrd {
                    let at = i as u64 * DOMU_STRIDE;
                    regions.push((NAMES[i].0, DOMU_KERNEL_ADDR + at, sizes.kernel));
                    regions.push((NAMES[i].1, DOMU_INITRD_ADDR + at, *initrd));
                }
            }
        }
        None => regions.push(("kernel", BL33_ADDR, sizes.kernel)),
    }
    if let Some(u) = sizes.uboot {
        use crate::uboot::{RELOCATED_RESERVE, SCRIPT_ADDR, UBOOT_ADDR};
        regions.push(("boot.scr", SCRIPT_ADDR, u.script));
        regions.push(("U-Boot image", UBOOT_ADDR, u.image));
        ensure!(
            ram_end >= RAM_BASE + 2 * RELOCATED_RESERVE,
            "{mem_mib} MiB of RAM is too little for U-Boot"
        );
        regions.push((
            "top of RAM, where U-Boot relocates itself",
            ram_end - RELOCATED_RESERVE,
            RELOCATED_RESERVE,
        ));
    }
    regions.sort_by_key(|r| r.1);
    for (name, start, len) in &regions {
        let end = start + len;
        ensure!(
            end <= ram_end,
            "the {name} ({len} bytes at {start:#x}) does not fit in {mem_mib} MiB of RAM"
        );
        ensure!(
            *start >= OPTEE_SHM.1 || end <= OPTEE_SHM.0,
            "the {name} at {start:#x} overlaps OP-TEE's static SHM"
        );
    }
    for w in regions.windows(2) {
        let (a, a_start, a_len) = w[0];
        let (b, b_start, _) = w[1];
        ensure!(
            a_start + a_len <= b_start,
            "the {a} ({a_len} bytes at {a_start:#x}) runs into the {b} at {b_start:#x}"
        );
    }
    Ok(())
}

/// Lay out one run in `dir`: the initrd (plus the `--run` overlay), the DTB with `/chosen`.
pub fn invocation(
    p: &Prepared,
    run: Option<&str>,
    dir: &Path,
    console: Console,
) -> Result<Invocation> {
    let overlay = run.map(rootfs::run_overlay).transpose()?;
    invocation_with_overlay(p, overlay, dir, console)
}

/// [`invocation`] with any cpio `overlay` appended to the initramfs (the bench adds its
/// instruments and command this way).
pub fn invocation_with_overlay(
    p: &Prepared,
    overlay: Option<Vec<u8>>,
    dir: &Path,
    console: Console,
) -> Result<Invocation> {
    let initrd = match overlay {
        Some(extra) => {
            let mut bytes = std::fs::read(&p.initramfs)?;
            bytes.extend(extra);
            let path = dir.join("initrd.cpio");
            std::fs::write(&path, bytes)?;
            path
        }
        None => p.initramfs.clone(),
    };
    let size = |f: &Path| -> Result<u64> { Ok(std::fs::metadata(f)?.len()) };
    ensure!(
        p.domus.len() <= MAX_DOMUS,
        "xtask lays out {MAX_DOMUS} domUs at most ({} asked)",
        p.domus.len()
    );
    let mut domu_initrds = Vec::new();
    for (i, d) in p.domus.iter().enumerate() {
        let mut bytes = std::fs::read(&p.initramfs)?;
        if let Some(cmd) = &d.run {
            bytes.extend(rootfs::run_overlay(cmd)?);
        }
        let path = dir.join(format!("domu{}-initrd.cpio", i + 1));
        std::fs::write(&path, bytes)?;
        domu_initrds.push(path);
    }
    let mut domu_sizes = [None; MAX_DOMUS];
    for (slot, path) in domu_sizes.iter_mut().zip(&domu_initrds) {
        *slot = Some(size(path)?);
    }
    // dom0: Linux with its initrd, or the hostile guest alone.
    let (dom0_image, dom0_kernel, dom0_bootargs, dom0_initrd) = match &p.dom0 {
        Dom0Boot::Linux => (p.kernel.clone(), None, p.linux_bootargs.clone(), true),
        Dom0Boot::Hostile { image, args } => {
            ensure!(p.hypervisor.is_some(), "the hostile dom0 needs moat");
            (
                image.clone(),
                Some(crate::hostile::memory_size(image)?),
                crate::hostile::bootargs(args),
                false,
            )
        }
    };
    let mut sizes = Sizes {
        initrd: if dom0_initrd { size(&initrd)? } else { 0 },
        kernel: size(&p.kernel)?,
        dom0_kernel,
        hypervisor: p.hypervisor.as_deref().map(size).transpose()?,
        domu_initrds: domu_sizes,
        uboot: None,
    };
    // Checked before anything is written, and again with U-Boot's files once they exist.
    check_layout(sizes, p.machine.mem_mib)?;
    let dtb = dir.join("virt.dtb");
    let (chosen, loads) = match &p.hypervisor {
        None => (
            Chosen {
                bootargs: Some(p.linux_bootargs.clone()),
                initrd: Some((INITRD_ADDR, INITRD_ADDR + sizes.initrd)),
                ..Chosen::default()
            },
            vec![(p.kernel.clone(), BL33_ADDR), (initrd, INITRD_ADDR)],
        ),
        Some(hv) => {
            let mut modules = vec![Module {
                kind: "multiboot,kernel",
                addr: DOM0_KERNEL_ADDR,
                size: size(&dom0_image)?,
            }];
            let mut loads = vec![
                (hv.clone(), BL33_ADDR),
                (dom0_image.clone(), DOM0_KERNEL_ADDR),
            ];
            if dom0_initrd {
                modules.push(Module {
                    kind: "multiboot,ramdisk",
                    addr: INITRD_ADDR,
                    size: sizes.initrd,
                });
                loads.push((initrd, INITRD_ADDR));
            }
            (
                Chosen {
                    xen_bootargs: Some(p.hv_bootargs.clone()),
                    dom0_bootargs: Some(dom0_bootargs),
                    modules,
                    ..Chosen::default()
                },
                loads,
            )
        }
    };
    let (mut chosen, mut loads) = (chosen, loads);
    for (i, (d, path)) in p.domus.iter().zip(&domu_initrds).enumerate() {
        let at = i as u64 * DOMU_STRIDE;
        chosen.domus.push(dtb::DomU {
            name: format!("domU{}", i + 1),
            memory_kib: d.memory_mib * 1024,
            cpus: d.cpus,
            vpl011: true,
            tee: d.tee,
            bootargs: "console=ttyAMA0 rdinit=/init".into(),
            modules: vec![
                Module {
                    kind: "multiboot,kernel",
                    addr: DOMU_KERNEL_ADDR + at,
                    size: sizes.kernel,
                },
                Module {
                    kind: "multiboot,ramdisk",
                    addr: DOMU_INITRD_ADDR + at,
                    size: sizes.domu_initrds[i].unwrap_or(0),
                },
            ],
        });
        loads.push((p.kernel.clone(), DOMU_KERNEL_ADDR + at));
        loads.push((path.clone(), DOMU_INITRD_ADDR + at));
    }
    let pflash1 = match &p.uboot {
        None => {
            dtb::with_chosen(&p.dtb_base, &dtb, &chosen)?;
            None
        }
        Some(uboot) => {
            // QEMU's DT, packed as fdtput leaves it, without the run's /chosen: boot.scr
            // writes that.
            dtb::packed(&p.dtb_base, &dtb)?;
            let entry = match &p.hypervisor {
                Some(_) => crate::uboot::Entry::Hypervisor(BL33_ADDR),
                None => crate::uboot::Entry::Linux {
                    image: BL33_ADDR,
                    initrd: (INITRD_ADDR, INITRD_ADDR + sizes.initrd),
                },
            };
            let files = crate::uboot::write(dir, &crate::uboot::plan(&chosen, entry)?)?;
            sizes.uboot = Some(UbootSizes {
                image: size(uboot)?,
                script: size(&files.script)?,
            });
            check_layout(sizes, p.machine.mem_mib)?;
            loads.push((uboot.clone(), crate::uboot::UBOOT_ADDR));
            loads.push((files.script, crate::uboot::SCRIPT_ADDR));
            Some(files.flash)
        }
    };
    std::fs::write(
        dir.join("stack.resolved"),
        resolve::record_text(&p.resolved),
    )?;
    Ok(Invocation {
        machine: p.machine.clone(),
        bios: p.bios.clone(),
        dtb,
        loads,
        console,
        secure_log: dir.join("secure.log"),
        gdb_port: None,
        plugin: None,
        pflash1,
    })
}

/// The gdb command that attaches to QEMU's stub, with the hypervisor's symbols when its
/// ELF sits next to its image (moat: `moat` beside `moat.bin`).
pub fn gdb_command(p: &Prepared) -> String {
    // moat: `moat` beside `moat.bin`; Xen: `xen-syms` beside `xen`.
    let elf = p.hypervisor.as_ref().and_then(|img| {
        let stem = img.file_stem()?.to_string_lossy().into_owned();
        [
            img.with_file_name(&stem),
            img.with_file_name(format!("{stem}-syms")),
        ]
        .into_iter()
        .find(|elf| elf.exists() && elf != img)
    });
    match elf {
        Some(elf) => format!("gdb-multiarch {} -ex 'target remote :1234'", elf.display()),
        None => "gdb-multiarch -ex 'target remote :1234'".to_string(),
    }
}

/// Parse `moat-init: run-exit=N` out of a console line.
pub fn run_exit(line: &str) -> Option<u8> {
    if domu_of(line).is_some() {
        // A domU's own /init (its lines are `(dN) `-prefixed): not the run's command.
        return None;
    }
    let rest = &line[line.find(RUN_EXIT_MARKER)? + RUN_EXIT_MARKER.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u32>().ok().map(|v| v.min(255) as u8)
}

/// The domU a console line comes from: moat prefixes each domU's output `(d<id>) `, as Xen
/// does with `(d<id>)`; dom0's and moat's own lines carry no such prefix.
pub fn domu_of(line: &str) -> Option<u16> {
    let rest = line.trim_start_matches('\r').strip_prefix("(d")?;
    let end = rest.find(") ")?;
    rest[..end].parse().ok().filter(|&id| id > 0)
}

/// `cargo xtask qemu`.
pub fn qemu(args: &QemuArgs) -> Result<u8> {
    if let Err(e) = check_args(args) {
        e.exit();
    }
    let machine = Machine {
        smp: args.smp,
        mem_mib: args.mem,
        el2: true,
        deterministic: false,
    };
    let choice = Choice {
        optee: args.optee,
        kernel: args.kernel.clone(),
        xen: crate::xen::Options {
            flavour: match args.xen_debug {
                true => crate::xen::Flavour::Debug,
                false => crate::xen::Flavour::Release,
            },
            toolstack: args.xen_toolstack,
        },
        boot: args.boot,
    };
    let mut ctx = Ctx::new(&args.stack)?;
    let p = prepare(&mut ctx, args.hv, &machine, &choice)?;
    let mut p = p;
    if let Some(what) = &args.trace {
        anyhow::ensure!(args.hv == Hv::Moat, "--trace is a moat option");
        let option = match what.as_str() {
            "smc=msg" => "smc,msg",
            other => other,
        };
        p.hv_bootargs = format!("{} trace={option}", p.hv_bootargs);
    }
    if let Some(extra) = &args.hv_args {
        anyhow::ensure!(
            p.hypervisor.is_some(),
            "--hv-args needs a hypervisor (--hv moat or xen)"
        );
        p.hv_bootargs = format!("{} {extra}", p.hv_bootargs).trim().to_string();
    }
    if let Some(n) = args.domu {
        anyhow::ensure!(
            args.hv == Hv::Moat,
            "--domu is moat's dom0less domU; under --hv xen use --xen-toolstack (xl)"
        );
        let runs = domu_runs(&args.domu_run, n)?;
        for run in runs {
            add_domu(
                &mut p,
                DomUReq {
                    run,
                    memory_mib: DOMU_MEMORY_MIB,
                    cpus: 1,
                    tee: true,
                },
            )?;
        }
    }
    let hostile = args.dom0 == Dom0::Hostile;
    if hostile {
        anyhow::ensure!(
            args.run.is_none(),
            "--run is a command for Linux dom0's /init; the hostile dom0 runs its campaign \
             (its options: --dom0-args)"
        );
        use_hostile_dom0(&mut p, args.hv, args.dom0_args.as_deref().unwrap_or(""))?;
    } else {
        anyhow::ensure!(args.dom0_args.is_none(), "--dom0-args needs --dom0 hostile");
    }
    // The hostile dom0 is watched like a command: it ends with its status.
    let captured = args.run.is_some() || hostile;
    let name = format!("qemu-{}", format!("{:?}", args.hv).to_lowercase());
    let dir = paths::run_dir(&name)?;
    let console_log = dir.join("console.log");
    let console = match captured {
        true => Console::Captured,
        false => Console::Interactive {
            log: console_log.clone(),
        },
    };
    let mut inv = invocation(&p, args.run.as_deref(), &dir, console)?;
    if args.gdb {
        inv.gdb_port = Some(1234);
        println!(
            "gdb stub on :1234, CPUs halted. Attach with:\n  {}",
            gdb_command(&p)
        );
    }
    println!("console log: {}", console_log.display());
    println!("OP-TEE log (secure UART): {}", inv.secure_log.display());
    println!("stack used: {}", dir.join("stack.resolved").display());
    if args.boot == Boot::UBoot {
        println!(
            "U-Boot runs {} (from {}); its environment: {}",
            dir.join("boot.scr").display(),
            dir.join("boot.cmd").display(),
            dir.join("uboot-env.txt").display()
        );
    }
    if !captured {
        println!("booting; `poweroff` in the guest ends it, Ctrl-] x quits QEMU");
        if args.hv == Hv::Moat {
            println!("Ctrl-a three times switches the console's input between dom0 and moat");
        }
        return qemu::run_interactive(&inv);
    }
    let outcome = qemu::run_captured(
        &inv,
        &console_log,
        Duration::from_secs(args.timeout),
        true,
        |line| match p.exit_status(line) {
            Some(code) => Verdict::Done(code),
            None if line.contains("Kernel panic") => Verdict::Fail(line.to_string()),
            None => Verdict::Continue,
        },
    )?;
    match outcome.outcome {
        Outcome::Done(code) => {
            match hostile {
                true => println!("\nxtask: the hostile dom0 ended with status {code}"),
                false => println!("\nxtask: guest command exited with status {code}"),
            }
            Ok(code)
        }
        Outcome::Fatal(cause) => {
            eprintln!(
                "\nxtask: the hypervisor stopped with a fatal error:\n  {cause}\n  console log: {}",
                console_log.display()
            );
            Ok(FATAL_EXIT)
        }
        Outcome::Failed(line) => bail!("the guest failed: {line}\n  console log: {}", console_log.display()),
        Outcome::Exited(code) => bail!(
            "QEMU exited ({code:?}) before the command finished\n  console log: {}\n  QEMU's stderr: {}",
            console_log.display(),
            dir.join("qemu-stderr.log").display()
        ),
        Outcome::TimedOut => {
            eprintln!("\nxtask: timed out after {} s; console log: {}", args.timeout, console_log.display());
            Ok(124)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domu_commands_are_one_for_all_or_one_each() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(domu_runs(&[], 2).unwrap(), vec![None, None]);
        assert_eq!(
            domu_runs(&s(&["a"]), 2).unwrap(),
            vec![Some("a".into()), Some("a".into())]
        );
        assert_eq!(
            domu_runs(&s(&["a", "b"]), 2).unwrap(),
            vec![Some("a".into()), Some("b".into())]
        );
        let e = domu_runs(&s(&["a", "b"]), 3).unwrap_err().to_string();
        assert!(e.contains("2 domU commands for 3 domUs"), "{e}");
    }

    #[test]
    fn xtask_refuses_what_moat_would_refuse_and_typos_moat_would_ignore() {
        use clap::Parser;
        assert!(check_moat_args("dom0_mem=512M dom0_max_vcpus=1 trace=smc noreboot").is_ok());
        let e = check_moat_args("dom0_mem=zzz").unwrap_err();
        assert!(e.contains("`dom0_mem=zzz`"), "{e}");
        let e = check_moat_args("dom0_mam=1G").unwrap_err();
        assert!(
            e.contains("no option `dom0_mam=1G`") && e.contains("noreboot"),
            "{e}"
        );
        assert!(check_smp(0).is_err() && check_smp(9).is_err());
        assert!(check_smp(1).is_ok() && check_smp(8).is_ok());

        let parse = |args: &[&str]| {
            let mut v = vec!["cargo xtask qemu"];
            v.extend_from_slice(args);
            QemuCli::try_parse_from(v)
        };
        assert!(parse(&["--smp", "9"]).is_err());
        // Xen's options are Xen's business: only moat's are checked.
        let xen = parse(&["--hv", "xen", "--hv-args", "dom0_mem=zzz"]).unwrap();
        assert!(check_args(&xen.args).is_ok());
        let moat = parse(&["--hv-args", "dom0_mem=zzz"]).unwrap();
        let e = check_args(&moat.args).unwrap_err().to_string();
        assert!(
            e.starts_with("error: invalid value 'dom0_mem=zzz' for '--hv-args <OPTIONS>'"),
            "{e}"
        );
    }

    #[test]
    fn the_run_exit_marker_is_parsed() {
        assert_eq!(run_exit("moat-init: run-exit=0"), Some(0));
        assert_eq!(
            run_exit("[  3.1] x moat-init: run-exit=17 trailing"),
            Some(17)
        );
        assert_eq!(run_exit("moat-init: run-exit=999"), Some(255));
        assert_eq!(run_exit("moat-init: ready"), None);
        assert_eq!(run_exit("moat-init: run-exit="), None);
        // A domU's /init is not the run's command.
        assert_eq!(run_exit("(d1) moat-init: run-exit=0"), None);
        assert_eq!(domu_of("(d1) moat-init: run-exit=0"), Some(1));
        assert_eq!(domu_of("(d12) x"), Some(12));
        assert_eq!(domu_of("(d0) x"), None);
        assert_eq!(domu_of("(moat) d1: x"), None);
        assert_eq!(domu_of("(dx) y"), None);
    }

    fn sizes(initrd: u64, kernel: u64, hypervisor: Option<u64>) -> Sizes {
        Sizes {
            initrd,
            kernel,
            dom0_kernel: None,
            hypervisor,
            domu_initrds: [None; MAX_DOMUS],
            uboot: None,
        }
    }

    #[test]
    fn a_domu_s_modules_stay_clear_of_moat_and_dom0() {
        let mut s = sizes(20 << 20, 36 << 20, Some(1 << 20));
        s.domu_initrds = [Some(20 << 20), Some(20 << 20)];
        assert!(check_layout(s, 2048).is_ok());
        // A kernel that runs into the domU's initrd.
        let mut big = s;
        big.kernel = 80 << 20;
        let e = check_layout(big, 2048).unwrap_err().to_string();
        assert!(e.contains("runs into"), "{e}");
        // Not enough RAM for the modules.
        assert!(check_layout(s, 640).is_err());
    }

    #[test]
    fn u_boot_s_image_script_and_relocation_stay_clear_of_the_images() {
        use crate::uboot::RELOCATED_RESERVE;
        let mut s = sizes(20 << 20, 36 << 20, Some(1 << 20));
        s.uboot = Some(UbootSizes {
            image: 1_156_912,
            script: 1_200,
        });
        assert!(check_layout(s, 2048).is_ok());
        // Linux alone in the smallest board, with domUs in a hypervisor's.
        let mut none = sizes(20 << 20, 36 << 20, None);
        none.uboot = s.uboot;
        assert!(check_layout(none, 1024).is_ok());
        let mut domus = s;
        domus.domu_initrds = [Some(20 << 20), Some(20 << 20)];
        assert!(check_layout(domus, MIN_MEM_WITH_HV).is_ok());
        // An initrd so big it reaches where U-Boot itself sits.
        let mut big = s;
        big.uboot.as_mut().unwrap().image = INITRD_ADDR - crate::uboot::UBOOT_ADDR + 1;
        let e = check_layout(big, 2048).unwrap_err().to_string();
        assert!(
            e.contains("U-Boot image") && e.contains("runs into the initrd"),
            "{e}"
        );
        // A kernel that reaches the top of RAM, where U-Boot relocates itself.
        let mut top = none;
        top.kernel = (1024 << 20) - (BL33_ADDR - RAM_BASE) - RELOCATED_RESERVE + 1;
        let e = check_layout(top, 1024).unwrap_err().to_string();
        assert!(e.contains("where U-Boot relocates itself"), "{e}");
    }

    #[test]
    fn u_boot_is_chosen_with_boot_and_direct_stays_the_default() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut v = vec!["cargo xtask qemu"];
            v.extend_from_slice(args);
            QemuCli::try_parse_from(v)
        };
        assert_eq!(parse(&[]).unwrap().args.boot, Boot::Direct);
        let u = parse(&["--boot", "u-boot", "--hv", "xen"]).unwrap();
        assert_eq!(u.args.boot, Boot::UBoot);
        assert!(check_args(&u.args).is_ok());
        assert!(parse(&["--boot", "grub"]).is_err());
        // A command line U-Boot's environment cannot carry is refused, clap-style; the
        // direct boot takes it.
        let q = parse(&["--boot", "u-boot", "--hv", "xen", "--hv-args", "a='b'"]).unwrap();
        let e = check_args(&q.args).unwrap_err().to_string();
        assert!(
            e.starts_with("error: invalid value 'a='b'' for '--hv-args <OPTIONS>': U-Boot's"),
            "{e}"
        );
        let d = parse(&["--hv", "xen", "--hv-args", "a='b'"]).unwrap();
        assert!(check_args(&d.args).is_ok());
        let h = parse(&[
            "--boot",
            "u-boot",
            "--dom0",
            "hostile",
            "--dom0-args",
            "x\ny",
        ]);
        assert!(check_args(&h.unwrap().args).is_err());
    }

    #[test]
    fn the_layout_keeps_optee_shm_and_bl33_free() {
        assert!(check_layout(sizes(20 << 20, 33 << 20, None), 2048).is_ok());
        // An initrd that reaches BL33.
        assert!(check_layout(sizes(BL33_ADDR - INITRD_ADDR + 1, 33 << 20, None), 2048).is_err());
        // A kernel that does not fit in a small RAM.
        assert!(check_layout(sizes(1 << 20, 600 << 20, None), 1024).is_err());
    }

    #[test]
    fn a_hostile_dom0_is_laid_out_by_the_memory_it_occupies() {
        use clap::Parser;
        // The guest's Image is small on disk, but its BSS, heap and arena follow it.
        let mut s = sizes(0, 33 << 20, Some(2 << 20));
        s.dom0_kernel = Some(25 << 20);
        assert!(check_layout(s, 2048).is_ok());
        s.dom0_kernel = Some(BL33_ADDR - DOM0_KERNEL_ADDR + 1);
        let e = check_layout(s, 2048).unwrap_err().to_string();
        assert!(e.contains("dom0 kernel") && e.contains("runs into"), "{e}");
        let cli = QemuCli::try_parse_from([
            "cargo xtask qemu",
            "--dom0",
            "hostile",
            "--dom0-args",
            "seed=7 cases=10",
        ])
        .unwrap();
        assert_eq!(cli.args.dom0, Dom0::Hostile);
        assert_eq!(cli.args.dom0_args.as_deref(), Some("seed=7 cases=10"));
        assert!(QemuCli::try_parse_from(["cargo xtask qemu", "--dom0", "evil"]).is_err());
    }

    #[test]
    fn under_a_hypervisor_dom0_modules_must_not_overlap() {
        assert!(check_layout(sizes(20 << 20, 33 << 20, Some(2 << 20)), 2048).is_ok());
        // A ramdisk that runs into dom0's kernel module.
        let e = check_layout(
            sizes(DOM0_KERNEL_ADDR - INITRD_ADDR + 1, 33 << 20, Some(1)),
            2048,
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("runs into the dom0 kernel"));
        // A dom0 kernel that runs into the hypervisor.
        assert!(check_layout(sizes(1, BL33_ADDR - DOM0_KERNEL_ADDR + 1, Some(1)), 2048).is_err());
    }
}
