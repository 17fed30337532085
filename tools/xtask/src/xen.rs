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

use crate::apt::PrivateApt;
use crate::profile::{self, Prepared};
use crate::qemu::Machine;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `[xen].config` over defconfig: what a distribution would ship, plus the mediator.
    Release,
    /// Also `[xen].debug_config` (CONFIG_DEBUG=y): assertions and every log level.
    Debug,
}

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

/// Download and unpack Xen's source package (cached by version).
fn source(cache: &Path, apt: &mut PrivateApt, stack: &Stack) -> Result<PathBuf> {
    let x = &stack.xen;
    let key = Key::new("xen-src")
        .with("source", &x.source)
        .with("version", &x.version);
    let title = format!("Xen source {} {}", x.source, x.version);
    let dir = step::cached(cache, &key, &title, |out, log| {
        apt.source(out, &x.source, &x.version, log).map(|_| ())
    })?;
    Ok(dir.join("tree"))
}

/// Build (or reuse) the `xen` image for `flavour` and return its path.
pub fn build(
    cache: &Path,
    apt: &mut PrivateApt,
    stack: &Stack,
    flavour: Flavour,
) -> Result<PathBuf> {
    let tree = source(cache, apt, stack)?;
    let x = &stack.xen;
    let config = config_lines(stack, flavour);
    let patch_dir = crate::paths::workspace_root().join("qemu/xen");
    let patches: Vec<PathBuf> = x.patches.iter().map(|p| patch_dir.join(p)).collect();
    let mut key = Key::new("xen")
        .with("source", &x.source)
        .with("version", &x.version)
        .with("config", config.join(" "))
        .with("flavour", format!("{flavour:?}"))
        .with("cross", CROSS_COMPILE);
    for (name, path) in x.patches.iter().zip(&patches) {
        key = key.with_file(&format!("patch {name}"), path)?;
    }
    let title = format!("Xen {} ({flavour:?}, OP-TEE mediator)", x.version);
    let dir = step::cached(cache, &key, &title, |out, log| {
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

/// The `--hv xen` profile: the common pieces with the NS-virtualized OP-TEE, and Xen as BL33.
pub fn prepare(machine: &Machine, flavour: Flavour) -> Result<Prepared> {
    let mut c = profile::prepare_common(OpteeFlavour::Virtualized, machine)?;
    let xen = build(&c.cache, &mut c.apt, &c.stack, flavour)?;
    Ok(Prepared {
        machine: machine.clone(),
        bios: c.bios,
        dtb_base: c.dtb_base,
        kernel: c.kernel,
        initramfs: c.initramfs,
        hypervisor: Some(xen),
        hv_bootargs: hv_bootargs(machine),
        linux_bootargs: DOM0_BOOTARGS.into(),
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
        };
        let a = hv_bootargs(&m);
        assert!(a.starts_with("console=dtuart dtuart=/pl011@9000000 "));
        assert!(a.contains(" dom0_mem=512M,max:512M dom0_max_vcpus=2 "));
        assert!(a.contains(" bootscrub=0"));
        assert!(DOM0_BOOTARGS.starts_with("console=hvc0 "));
        assert!(DOM0_BOOTARGS.ends_with(" rdinit=/init"));
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
