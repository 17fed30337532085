// SPDX-License-Identifier: MIT OR Apache-2.0
//! Stock Xen with its OP-TEE mediator: the `--hv xen` profile, the baseline moat's mediator
//! is compared against on the same firmware, guests and DT.
//!
//! ```text
//!   apt-get source xen=<[xen].version>          (Debian's patches applied by dpkg-source)
//!     + qemu/xen/<[xen].patches>                (our own, patch -p1)
//!     make defconfig; + [xen].config (+ debug_config); make olddefconfig
//!     make -C xen O=<build> XEN_TARGET_ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-
//!     ─► `xen`: an arm64 Image with a PE header
//!
//!   TF-A ─► BL33 = xen at 0x60000000, EL2, x0 = DTB (0x40000000, edited by TF-A + OP-TEE)
//!            │ reads /chosen: xen,xen-bootargs, module@50000000 (kernel), module@48000000
//!            │ (ramdisk), xen,dom0-bootargs
//!            │ tee/optee.c probes /firmware/optee ─► "Using TEE mediator for OP-TEE"
//!            │ domain_create(dom0) ─► OPTEE_SMC_VM_CREATED(guest 1) ─► OP-TEE "Added guest 1"
//!            ▼
//!           dom0 Linux (EL1, console hvc0) ─► optee.ko, tee-supplicant, xtest
//! ```
//!
//! Xen turns its mediator on only when the DT it is given has `/firmware/optee`; OP-TEE
//! adds that node to the DT in place at boot, so passing the runtime DT through is enough.
//! The OP-TEE build is the NS-virtualized one (Xen announces each domain to it).
//!
//! With `--xen-toolstack`, dom0's initramfs gets one more cpio: Debian's arm64 toolstack of
//! the same Xen version (`xl`, `xenstored`, `xenconsoled` and their libraries), the Xen
//! device modules, a domU kernel + initramfs (the very same ones) and `moat-xl-domu`, which
//! starts a domU with `tee = "optee"` (`qemu/xen/`). Xen 4.17 gives dom0less domUs no TEE,
//! so this is how the multi-guest baseline gets its second OP-TEE guest.

use crate::cpio;
use crate::profile::{self, Ctx, Prepared};
use crate::qemu::Machine;
use crate::rootfs::Kernel;
use crate::stack::{OpteeFlavour, Stack};
use crate::step::{self, Key};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// dom0's kernel command line: only the console differs from Linux alone (Xen's PV
/// console, with Xen's early console for the first lines).
pub const DOM0_BOOTARGS: &str = "console=hvc0 earlycon=xen rdinit=/init";

/// dom0's memory, fixed so that runs are comparable whatever `--mem` is.
pub const DOM0_MEM: &str = "512M,max:512M";

/// The cross compiler prefix Xen's build is given.
const CROSS_COMPILE: &str = "aarch64-linux-gnu-";

/// Which Xen build to boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// `[xen].config` over defconfig: what a distribution would ship, plus the mediator.
    #[default]
    Release,
    /// Also `[xen].debug_config` (CONFIG_DEBUG=y): assertions and every log level.
    Debug,
}

/// What `--hv xen` boots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub flavour: Flavour,
    /// Add Xen's toolstack and a domU to dom0's initramfs (`--xen-toolstack`).
    pub toolstack: bool,
}

/// Where the toolstack overlay puts the domU's kernel and initramfs, and the xl tools.
const DOMU_DIR: &str = "boot/domu";
const XEN_TOOLS_DIR: &str = "usr/lib/xen-4.17/bin";

/// Paths pruned from the unpacked toolstack packages: documentation, pygrub's Python, and
/// the packages' own /etc (the initramfs's /etc stays as it is).
const TOOLSTACK_PRUNE: &[&str] = &["usr/share", "usr/lib/xen-4.17/lib/python", "etc"];

/// The Kconfig lines for `flavour`, in the order they are applied.
pub fn config_lines(stack: &Stack, flavour: Flavour) -> Vec<String> {
    let mut v = stack.xen.config.clone();
    if flavour == Flavour::Debug {
        v.extend(stack.xen.debug_config.iter().cloned());
    }
    v
}

/// `.config` text with `lines` (`CONFIG_NAME=value`) applied: every earlier setting of the
/// same symbol, including `# CONFIG_NAME is not set`, is dropped first, so that olddefconfig
/// sees exactly one value per symbol.
pub fn merge_config(dotconfig: &str, lines: &[String]) -> String {
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    let mut out = String::new();
    for line in dotconfig.lines() {
        let set = line.split_once('=').map(|(n, _)| n);
        let unset = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"));
        if names.iter().any(|n| set == Some(*n) || unset == Some(*n)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The `make` command line for one target of Xen's hypervisor build, as data. `build` is the
/// output directory (`O=`); the banner shows Debian's version.
pub fn make_args(build: &Path, version: &str, jobs: usize, target: &str) -> Vec<String> {
    vec![
        "-C".into(),
        "xen".into(),
        format!("O={}", build.display()),
        "XEN_TARGET_ARCH=arm64".into(),
        format!("CROSS_COMPILE={CROSS_COMPILE}"),
        format!("DEB_VERSION={version}"),
        format!("-j{jobs}"),
        target.into(),
    ]
}

/// Does `bytes` start like an arm64 Linux Image with a PE header (what TF-A enters as BL33
/// and what Xen's `xen` target is)? `MZ` at 0, `ARM\x64` at 0x38.
pub fn is_arm64_image(bytes: &[u8]) -> bool {
    bytes.len() >= 0x40 && bytes[..2] == *b"MZ" && bytes[0x38..0x3c] == *b"ARM\x64"
}

/// Xen's command line for `machine`. The console is the non-secure PL011 (the DT path QEMU
/// gives it); `loglvl=info` lets a release build print its mediator line; bootscrub=0
/// skips scrubbing 1.5 GiB of free RAM under TCG.
pub fn hv_bootargs(machine: &Machine) -> String {
    format!(
        "console=dtuart dtuart=/pl011@9000000 dom0_mem={DOM0_MEM} dom0_max_vcpus={} \
         bootscrub=0 loglvl=info",
        machine.smp
    )
}

/// Resolve and unpack Xen's source package (cached by its resolved files).
fn source(ctx: &mut Ctx) -> Result<(PathBuf, String)> {
    let src = ctx.res.resolve(&ctx.stack.want_xen())?;
    let key = Key::new("xen-src").with("source", src.key());
    let title = format!("Xen source {} {}", src.package, src.version);
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        crate::tfa::unpack_source(&src.path(), out, log).map(|_| ())
    })?;
    Ok((dir.join("tree"), src.key()))
}

/// Build (or reuse) the `xen` image for `flavour` and return its path.
pub fn build(ctx: &mut Ctx, flavour: Flavour) -> Result<PathBuf> {
    let (tree, src_key) = source(ctx)?;
    let stack = &ctx.stack;
    let x = &stack.xen;
    let config = config_lines(stack, flavour);
    let patch_dir = crate::paths::workspace_root().join("qemu/xen");
    let patches: Vec<PathBuf> = x.patches.iter().map(|p| patch_dir.join(p)).collect();
    let mut key = Key::new("xen")
        .with("source", src_key)
        .with("config", config.join(" "))
        .with("flavour", format!("{flavour:?}"))
        .with("cross", CROSS_COMPILE);
    for (name, path) in x.patches.iter().zip(&patches) {
        key = key.with_file(&format!("patch {name}"), path)?;
    }
    let title = format!("Xen {} ({flavour:?}, OP-TEE mediator)", x.version);
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // A private copy of the tree: our patches must not touch the cached source.
        let src = out.join("src");
        log.run(Command::new("cp").arg("-a").arg(&tree).arg(&src))?;
        for p in &patches {
            log.run(
                Command::new("patch")
                    .current_dir(&src)
                    .args(["-p1", "--batch", "--forward", "-i"])
                    .arg(p),
            )?;
        }
        let build = out.join("build");
        let make = |target: &str, log: &mut step::Log| {
            log.run(
                Command::new("make")
                    .current_dir(&src)
                    .args(make_args(&build, &x.version, jobs, target)),
            )
        };
        make("defconfig", log)?;
        let dotconfig = build.join(".config");
        let text = std::fs::read_to_string(&dotconfig).context("reading Xen's .config")?;
        std::fs::write(&dotconfig, merge_config(&text, &config))?;
        log.note(&format!("applied to .config: {}", config.join(" ")))?;
        make("olddefconfig", log)?;
        let text = std::fs::read_to_string(&dotconfig)?;
        for line in &config {
            ensure!(
                text.lines().any(|l| l == line),
                "Xen's olddefconfig dropped {line} (a dependency is missing)"
            );
        }
        make("xen", log)?;
        let image = std::fs::read(build.join("xen")).context("reading the built xen")?;
        ensure!(
            is_arm64_image(&image),
            "the built xen is not an arm64 Image with a PE header"
        );
        std::fs::write(out.join("xen"), image)?;
        std::fs::copy(build.join("xen-syms"), out.join("xen-syms"))?;
        std::fs::copy(&dotconfig, out.join("config"))?;
        std::fs::remove_dir_all(&build)?;
        std::fs::remove_dir_all(&src)?;
        Ok(())
    })?;
    Ok(dir.join("xen"))
}

/// dom0's initramfs with Xen's toolstack and a domU: the common initramfs plus one more
/// cpio (cached by the resolved packages, modules, kernel, initramfs and our qemu/xen files).
fn toolstack_initramfs(ctx: &mut Ctx, kernel: &Kernel, initramfs: &Path) -> Result<PathBuf> {
    let debs = ctx
        .stack
        .want_toolstack()
        .iter()
        .map(|w| ctx.res.resolve(w))
        .collect::<Result<Vec<_>>>()?;
    let x = &ctx.stack.xen;
    let ours = crate::paths::workspace_root().join("qemu/xen");
    let (cfg, script) = (ours.join("domu.cfg"), ours.join("moat-xl-domu"));
    let mut key = Key::new("xen-toolstack")
        .with("modules", x.toolstack_modules.join(" "))
        .with("kernel", &kernel.key)
        .with_file("initramfs", initramfs)?
        .with_file("domu.cfg", &cfg)?
        .with_file("moat-xl-domu", &script)?;
    for d in &debs {
        key = key.with("deb", d.key());
    }
    let title = format!("dom0 initramfs + Xen {} toolstack and a domU", x.version);
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let root = out.join("root");
        for d in &debs {
            log.run(Command::new("dpkg-deb").arg("-x").arg(d.path()).arg(&root))?;
        }
        // bookworm's libraries still ship /lib; the initramfs's /lib is a link to usr/lib.
        if root.join("lib").exists() {
            log.run(
                Command::new("cp")
                    .arg("-a")
                    .arg(root.join("lib/."))
                    .arg(root.join("usr/lib")),
            )?;
            std::fs::remove_dir_all(root.join("lib"))?;
        }
        for p in TOOLSTACK_PRUNE {
            let p = root.join(p);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
        let rel = &kernel.release;
        let mut list = String::new();
        for m in &x.toolstack_modules {
            let dst = root.join("usr/lib/modules").join(rel).join(m);
            std::fs::create_dir_all(dst.parent().unwrap_or(&root))?;
            std::fs::copy(kernel.modules.join(m), &dst)
                .with_context(|| format!("module {m} of Linux {rel}"))?;
            list.push_str(m);
            list.push('\n');
        }
        for d in [DOMU_DIR, "etc/moat", "etc/xen", "usr/bin", "usr/sbin"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::write(root.join("etc/moat/xen-modules"), list)?;
        // xl complains on every call when its global config is missing; the defaults do.
        std::fs::write(
            root.join("etc/xen/xl.conf"),
            "# xl.conf(5): xl's defaults\n",
        )?;
        std::fs::copy(&kernel.image, root.join(DOMU_DIR).join("Image"))?;
        std::fs::copy(initramfs, root.join(DOMU_DIR).join("initrd.cpio"))?;
        std::fs::copy(&cfg, root.join("etc/moat/domu.cfg"))?;
        std::fs::copy(&script, root.join("usr/bin/moat-xl-domu"))?;
        std::os::unix::fs::symlink(
            format!("../../{XEN_TOOLS_DIR}/xl"),
            root.join("usr/sbin/xl"),
        )?;
        ensure!(
            root.join(XEN_TOOLS_DIR).join("xl").exists(),
            "the toolstack packages have no {XEN_TOOLS_DIR}/xl"
        );
        // Linux unpacks concatenated archives in order: the overlay lands on the common one.
        let mut file = std::io::BufWriter::new(std::fs::File::create(out.join("initramfs.cpio"))?);
        std::io::copy(&mut std::fs::File::open(initramfs)?, &mut file)?;
        let mut w = cpio::Writer::new(file);
        w.tree(&root)?;
        w.finish()?;
        std::fs::remove_dir_all(&root)?;
        Ok(())
    })?;
    Ok(dir.join("initramfs.cpio"))
}

/// The `--hv xen` profile: the common pieces with the NS-virtualized OP-TEE, and Xen as BL33
/// (or booted by U-Boot, `boot`).
pub fn prepare(
    ctx: &mut Ctx,
    machine: &Machine,
    opts: Options,
    kernel: Option<&str>,
    boot: profile::Boot,
) -> Result<Prepared> {
    let c = profile::prepare_common(ctx, OpteeFlavour::Virtualized, machine, kernel, boot)?;
    let xen = build(ctx, opts.flavour)?;
    let initramfs = if opts.toolstack {
        toolstack_initramfs(ctx, &c.kernel, &c.initramfs)?
    } else {
        c.initramfs.clone()
    };
    Ok(Prepared {
        initramfs,
        hypervisor: Some(xen),
        hv_bootargs: hv_bootargs(machine),
        linux_bootargs: DOM0_BOOTARGS.into(),
        ..c.into_prepared(ctx, machine)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_replaces_stale_settings_once() {
        let dot = "CONFIG_ARM=y\n# CONFIG_EXPERT is not set\nCONFIG_DEBUG_INFO=y\n\
                   # CONFIG_DEBUG is not set\nCONFIG_TEE=n\n";
        let lines: Vec<String> = ["CONFIG_EXPERT=y", "CONFIG_TEE=y", "CONFIG_DEBUG=y"]
            .map(String::from)
            .into();
        let out = merge_config(dot, &lines);
        assert!(!out.contains("is not set"));
        assert!(!out.contains("CONFIG_TEE=n"));
        // A symbol whose name starts like another one is kept.
        assert!(out.contains("CONFIG_DEBUG_INFO=y\n"));
        assert_eq!(out.matches("CONFIG_DEBUG=y").count(), 1);
        assert!(out.ends_with("CONFIG_EXPERT=y\nCONFIG_TEE=y\nCONFIG_DEBUG=y\n"));
    }

    #[test]
    fn the_debug_flavour_adds_debug_config_and_changes_nothing_else() {
        let stack = Stack::load().unwrap();
        let release = config_lines(&stack, Flavour::Release);
        let debug = config_lines(&stack, Flavour::Debug);
        for c in [
            "CONFIG_EXPERT=y",
            "CONFIG_UNSUPPORTED=y",
            "CONFIG_TEE=y",
            "CONFIG_OPTEE=y",
        ] {
            assert!(release.iter().any(|l| l == c), "{c} missing");
        }
        assert!(!release.iter().any(|l| l == "CONFIG_DEBUG=y"));
        assert_eq!(debug[..release.len()], release[..]);
        assert!(debug.iter().any(|l| l == "CONFIG_DEBUG=y"));
    }

    #[test]
    fn make_cross_builds_the_hypervisor_out_of_tree() {
        let a = make_args(Path::new("/c/b"), "4.17.5-1", 2, "olddefconfig");
        assert_eq!(a[..2], ["-C", "xen"]);
        assert!(a.contains(&"O=/c/b".to_string()));
        assert!(a.contains(&"XEN_TARGET_ARCH=arm64".to_string()));
        assert!(a.contains(&"CROSS_COMPILE=aarch64-linux-gnu-".to_string()));
        assert!(a.contains(&"DEB_VERSION=4.17.5-1".to_string()));
        assert_eq!(a.last().map(String::as_str), Some("olddefconfig"));
    }

    #[test]
    fn xen_gets_the_pl011_console_and_a_fixed_dom0() {
        let m = Machine {
            smp: 2,
            mem_mib: 2048,
            el2: true,
            deterministic: false,
        };
        let a = hv_bootargs(&m);
        assert!(a.starts_with("console=dtuart dtuart=/pl011@9000000 "));
        assert!(a.contains(" dom0_mem=512M,max:512M dom0_max_vcpus=2 "));
        assert!(a.contains(" bootscrub=0"));
        assert!(DOM0_BOOTARGS.starts_with("console=hvc0 "));
        assert!(DOM0_BOOTARGS.ends_with(" rdinit=/init"));
    }

    #[test]
    fn the_toolstack_is_the_hypervisor_s_own_version() {
        // libxl's domctl interface must match the hypervisor's: same Xen release.
        let stack = Stack::load().unwrap();
        let xen: Vec<_> = stack
            .xen
            .toolstack
            .iter()
            .filter(|(p, _)| p.starts_with("libxen") || p.starts_with("xen-utils-"))
            .collect();
        assert!(xen.iter().any(|(p, _)| p.as_str() == "xen-utils-4.17"));
        for (p, v) in xen {
            assert_eq!(v.version, stack.xen.version, "{p}");
            assert_eq!(v.suite, stack.xen.suite, "{p}");
        }
        assert!(stack.xen.version.starts_with("4.17."));
        assert!(XEN_TOOLS_DIR.ends_with("xen-4.17/bin"));
    }

    #[test]
    fn the_domu_asks_for_the_optee_mediator() {
        let dir = crate::paths::workspace_root().join("qemu/xen");
        let cfg = std::fs::read_to_string(dir.join("domu.cfg")).unwrap();
        assert!(cfg.lines().any(|l| l == "tee = \"optee\""));
        assert!(cfg.contains(&format!("\"/{DOMU_DIR}/Image\"")));
        let script = std::fs::read_to_string(dir.join("moat-xl-domu")).unwrap();
        assert!(script.contains(&format!("X=/{XEN_TOOLS_DIR}")));
        // The domU's markers are renamed so that they never end dom0's --run.
        assert!(script.contains("s/moat-init: /moat-init(domU): /"));
    }

    #[test]
    fn only_an_arm64_image_passes() {
        let mut img = vec![0u8; 0x40];
        assert!(!is_arm64_image(&img));
        img[..2].copy_from_slice(b"MZ");
        img[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(is_arm64_image(&img));
        assert!(!is_arm64_image(&img[..0x3c]));
    }
}
