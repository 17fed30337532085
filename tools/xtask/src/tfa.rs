// SPDX-License-Identifier: MIT OR Apache-2.0
//! Trusted Firmware-A, built from Debian's source package with OP-TEE as BL32.
//!
//! ```text
//!  bios.bin = bl1.bin, padded to 0x40000 | fip.bin (BL2, BL31, BL32 = OP-TEE header+pager)
//!             ^ QEMU -bios maps it at 0x0 (secure flash), BL1 finds the FIP at 0x40000
//! ```
//!
//! BL31 enters a BL33 that QEMU's loader preloaded (`PRELOADED_BL33_BASE`): the direct
//! boot's Linux, moat or Xen at 0x60000000, or, with `--boot u-boot`, U-Boot at the address
//! `[uboot].tfa_flags` gives ([`Stack::tfa_flags_for_uboot`]): another build, another key.

use crate::profile::{Boot, Ctx};
use crate::stack::{OpteeFlavour, Stack};
use crate::step::{self, Key};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where QEMU virt's BL1 expects the FIP inside the `-bios` image.
const FIP_OFFSET: u64 = 0x40000;

/// Unpack a resolved source package's `.dsc` into `<out>/tree` (dpkg-source applies
/// Debian's patches). Shared by TF-A and Xen.
pub fn unpack_source(dsc: &Path, out: &Path, log: &mut step::Log) -> Result<PathBuf> {
    let tree = out.join("tree");
    log.run(
        Command::new("dpkg-source")
            .current_dir(out)
            .arg("-x")
            .arg(dsc)
            .arg(&tree),
    )?;
    Ok(tree)
}

/// Resolve and unpack TF-A's source package (cached by its resolved files).
fn source(ctx: &mut Ctx) -> Result<(PathBuf, String)> {
    let src = ctx.res.resolve(&ctx.stack.want_tfa())?;
    let key = Key::new("tfa-src").with("source", src.key());
    let title = format!("TF-A source {} {}", src.package, src.version);
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        unpack_source(&src.path(), out, log).map(|_| ())
    })?;
    Ok((dir.join("tree"), src.key()))
}

/// The unpacked OP-TEE OS packages and what they were unpacked from.
pub struct OpteeRoot {
    pub root: PathBuf,
    /// The resolved packages' versions and hashes, for the keys of steps that use them.
    pub key: String,
}

/// The OP-TEE OS packages (both flavours and the TA dev kit), unpacked (cached by the
/// resolved packages).
pub fn optee(ctx: &mut Ctx) -> Result<OpteeRoot> {
    let debs = ctx
        .stack
        .want_optee()
        .map(|w| ctx.res.resolve(&w))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let mut key = Key::new("optee");
    for d in &debs {
        key = key.with("deb", d.key());
    }
    let title = format!("OP-TEE OS {} (Debian)", debs[0].version);
    let root = step::cached(&ctx.cache, &key, &title, |out, log| {
        for d in &debs {
            log.run(Command::new("dpkg-deb").arg("-x").arg(d.path()).arg(out))?;
        }
        Ok(())
    })?;
    let key = debs.iter().map(|d| d.key()).collect::<Vec<_>>().join(" ");
    Ok(OpteeRoot { root, key })
}

/// The three BL32 images of an OP-TEE flavour inside the unpacked packages.
pub fn bl32_images(optee_root: &Path, stack: &Stack, flavour: OpteeFlavour) -> [PathBuf; 3] {
    let d = optee_root
        .join("usr/lib/optee")
        .join(stack.optee_dir(flavour));
    [
        "tee-header_v2.bin",
        "tee-pager_v2.bin",
        "tee-pageable_v2.bin",
    ]
    .map(|f| d.join(f))
}

/// TF-A's `make` variables for a boot: the manifest's `[tfa].flags`, or for U-Boot those
/// with `[uboot].tfa_flags` in place of the ones of the same name.
pub fn flags(stack: &Stack, boot: Boot) -> Vec<String> {
    match boot {
        Boot::Direct => stack.tfa.flags.clone(),
        Boot::UBoot => stack.tfa_flags_for_uboot(),
    }
}

/// The `make` command line for TF-A, as data.
pub fn make_args(
    flags: &[String],
    bl32: &[PathBuf; 3],
    build_base: &Path,
    jobs: usize,
) -> Vec<String> {
    let mut args = vec![
        format!("-j{jobs}"),
        "CROSS_COMPILE=aarch64-linux-gnu-".to_string(),
    ];
    args.extend(flags.iter().cloned());
    args.push(format!("BL32={}", bl32[0].display()));
    args.push(format!("BL32_EXTRA1={}", bl32[1].display()));
    args.push(format!("BL32_EXTRA2={}", bl32[2].display()));
    args.push(format!("BUILD_BASE={}", build_base.display()));
    args.extend(["all".to_string(), "fip".to_string()]);
    args
}

/// Build TF-A for `flavour` and the BL33 of `boot`, and return the `-bios` image, with
/// OP-TEE from [`optee`]. The flags are part of the key, so the U-Boot build never reuses
/// the direct one's artefact (or the other way round).
pub fn build(
    ctx: &mut Ctx,
    optee: &OpteeRoot,
    flavour: OpteeFlavour,
    boot: Boot,
) -> Result<PathBuf> {
    let (tree, src_key) = source(ctx)?;
    let stack = &ctx.stack;
    let bl32 = bl32_images(&optee.root, stack, flavour);
    let flags = flags(stack, boot);
    let mut key = Key::new("tfa")
        .with("source", src_key)
        .with("flags", flags.join(" "))
        .with("optee", format!("{} {flavour:?}", optee.key));
    for (i, f) in bl32.iter().enumerate() {
        key = key.with_file(&format!("bl32[{i}]"), f)?;
    }
    let title = match boot {
        Boot::Direct => format!("TF-A {} with OP-TEE ({flavour:?})", stack.tfa.version),
        Boot::UBoot => format!(
            "TF-A {} with OP-TEE ({flavour:?}), BL33 = U-Boot",
            stack.tfa.version
        ),
    };
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let build_base = out.join("build");
        log.run(Command::new("make").current_dir(&tree).args(make_args(
            &flags,
            &bl32,
            &build_base,
            jobs,
        )))?;
        let rel = build_base.join("qemu/release");
        let mut bios = std::fs::read(rel.join("bl1.bin")).context("reading bl1.bin")?;
        ensure!(
            bios.len() as u64 <= FIP_OFFSET,
            "bl1.bin is {} bytes, more than the {FIP_OFFSET:#x} before the FIP",
            bios.len()
        );
        bios.resize(FIP_OFFSET as usize, 0);
        bios.extend(std::fs::read(rel.join("fip.bin")).context("reading fip.bin")?);
        std::fs::write(out.join("bios.bin"), bios)?;
        for f in ["bl1/bl1.elf", "bl2/bl2.elf", "bl31/bl31.elf"] {
            std::fs::copy(
                rel.join(f),
                out.join(Path::new(f).file_name().unwrap_or_default()),
            )?;
        }
        std::fs::remove_dir_all(&build_base)?;
        Ok(())
    })?;
    Ok(dir.join("bios.bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_line_carries_pinned_flags_and_bl32() {
        let stack = Stack::load().unwrap();
        let bl32 = bl32_images(Path::new("/o"), &stack, OpteeFlavour::Virtualized);
        let args = make_args(&flags(&stack, Boot::Direct), &bl32, Path::new("/b"), 2);
        assert!(args.contains(&"SPD=opteed".to_string()));
        assert!(args.contains(&"QEMU_USE_GIC_DRIVER=QEMU_GICV3".to_string()));
        assert!(args.contains(&"PRELOADED_BL33_BASE=0x60000000".to_string()));
        assert!(args.contains(
            &"BL32=/o/usr/lib/optee/vexpress-qemu_armv8a-virtualized/tee-header_v2.bin".to_string()
        ));
        assert!(args
            .iter()
            .any(|a| a.starts_with("BL32_EXTRA2=") && a.ends_with("tee-pageable_v2.bin")));
        assert_eq!(&args[args.len() - 2..], ["all", "fip"]);
        // U-Boot's build: entered elsewhere, with the bootloader's x0, and nothing else
        // differs.
        let u = make_args(&flags(&stack, Boot::UBoot), &bl32, Path::new("/b"), 2);
        assert!(u.contains(&"PRELOADED_BL33_BASE=0x44000000".to_string()));
        assert!(u.contains(&"ARM_LINUX_KERNEL_AS_BL33=0".to_string()));
        let differ: Vec<_> = args.iter().filter(|a| !u.contains(a)).collect();
        assert_eq!(
            differ,
            [
                "PRELOADED_BL33_BASE=0x60000000",
                "ARM_LINUX_KERNEL_AS_BL33=1"
            ]
        );
    }
}
