// SPDX-License-Identifier: MIT OR Apache-2.0
//! The guest kernel and initramfs, from Debian's arm64 packages.
//!
//! The initramfs holds busybox, tee-supplicant, xtest with its TAs (plus the pkcs11, avb,
//! trusted-keys and remoteproc TAs from `optee-os-dev`, matching the OP-TEE flavour), the
//! C library they need, the TEE kernel modules and `qemu/rootfs/init`.

use crate::cpio;
use crate::profile::Ctx;
use crate::stack::OpteeFlavour;
use crate::step::{self, Key};
use crate::tfa::OpteeRoot;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest kernel, unpacked from its resolved package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The uncompressed arm64 Image.
    pub image: PathBuf,
    /// The modules any profile loads (the TEE driver, Xen's device modules), decompressed,
    /// at their paths relative to the modules directory (`kernel/drivers/tee/tee.ko`).
    pub modules: PathBuf,
    /// `uname -r`, derived from the package name (`linux-image-<release>`).
    pub release: String,
    /// What the kernel step was built from (the resolved package's version and hash, the
    /// modules kept, the recipe's revision), for the keys of steps that use its output.
    pub key: String,
}

/// `uname -r` of a kernel package: its name without `linux-image-`.
pub fn release_of(package: &str) -> Result<&str> {
    match package.strip_prefix("linux-image-") {
        Some(r) if !r.is_empty() => Ok(r),
        _ => bail!("{package} is not a linux-image-<release> package"),
    }
}

/// Where a module of the manifest (`kernel/drivers/tee/tee.ko`) is in an unpacked kernel
/// package: under `lib/modules/<release>` (bookworm) or `usr/lib/modules/<release>`
/// (trixie), as `.ko` or compressed `.ko.xz`.
pub fn find_module(unpacked: &Path, release: &str, module: &str) -> Option<PathBuf> {
    for base in ["lib/modules", "usr/lib/modules"] {
        for ext in ["", ".xz"] {
            let p = unpacked
                .join(base)
                .join(release)
                .join(format!("{module}{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The kernel of `series`, unpacked: its Image and the modules the manifest names.
pub fn kernel(ctx: &mut Ctx, series: &str) -> Result<Kernel> {
    let want = ctx.stack.want_kernel(series)?;
    let deb = ctx.res.resolve(&want)?;
    let release = release_of(&deb.package)?.to_string();
    let mut modules = ctx.stack.kernel.modules.clone();
    modules.extend(ctx.stack.xen.toolstack_modules.iter().cloned());
    let key = Key::new("kernel")
        .with("deb", deb.key())
        .with("modules", modules.join(" "))
        // The recipe's own revision: 2 unpacks .ko.xz with `xz -d` and checks every module
        // is an ELF (revision 1 wrote empty modules from trixie's kernel).
        .with("recipe", "2");
    let title = format!("Linux {release} ({})", deb.version);
    let used_by = format!("{} {}", key.dir_name(), deb.key());
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let x = out.join("x");
        log.run(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&x))?;
        std::fs::rename(x.join(format!("boot/vmlinuz-{release}")), out.join("Image"))
            .with_context(|| format!("{} has no /boot/vmlinuz-{release}", deb.package))?;
        let image = std::fs::read(out.join("Image"))?;
        anyhow::ensure!(
            crate::xen::is_arm64_image(&image),
            "/boot/vmlinuz-{release} of {} is not an uncompressed arm64 Image",
            deb.package
        );
        // Keep only the modules a profile loads: the full tree is 300 MB.
        for m in &modules {
            let src = find_module(&x, &release, m)
                .with_context(|| format!("module {m} (or {m}.xz) is not in {}", deb.package))?;
            let dst = out.join("modules").join(m);
            std::fs::create_dir_all(dst.parent().unwrap_or(out))?;
            if src.extension().is_some_and(|e| e == "xz") {
                // `xz -d` turns `<dst>.xz` into `<dst>` (the log owns the command's stdout,
                // so it cannot be redirected into the module).
                let packed = dst.with_file_name(format!(
                    "{}.xz",
                    dst.file_name().unwrap_or_default().to_string_lossy()
                ));
                std::fs::copy(&src, &packed)?;
                log.run(Command::new("xz").arg("-d").arg(&packed))?;
            } else {
                std::fs::copy(&src, &dst)?;
            }
            let head = std::fs::read(&dst).with_context(|| format!("reading {}", dst.display()))?;
            anyhow::ensure!(
                head.starts_with(b"\x7fELF"),
                "module {m} of {} is not an ELF object after unpacking ({} bytes)",
                deb.package,
                head.len()
            );
        }
        std::fs::remove_dir_all(&x)?;
        Ok(())
    })?;
    Ok(Kernel {
        image: dir.join("Image"),
        modules: dir.join("modules"),
        release,
        key: used_by,
    })
}

/// Paths pruned from the unpacked user-space packages: documentation and locale data the
/// guest never reads.
const PRUNE: &[&str] = &[
    "usr/share",
    "usr/lib/aarch64-linux-gnu/gconv",
    "usr/lib/systemd",
    "etc/ld.so.conf.d",
];

/// Build the initramfs for `flavour` with `kernel`'s modules and return its path.
pub fn initramfs(
    ctx: &mut Ctx,
    flavour: OpteeFlavour,
    optee: &OpteeRoot,
    kernel: &Kernel,
    tools: &crate::guest_tools::GuestTools,
) -> Result<PathBuf> {
    let init = crate::paths::workspace_root().join("qemu/rootfs/init");
    let debs = ctx
        .stack
        .want_userspace()
        .iter()
        .map(|w| ctx.res.resolve(w))
        .collect::<Result<Vec<_>>>()?;
    let stack = &ctx.stack;
    let mut key = Key::new("initramfs")
        .with("kernel", &kernel.key)
        .with("modules", stack.kernel.modules.join(" "))
        .with("optee", format!("{} {flavour:?}", optee.key))
        .with_file("init", &init)?
        .with("guest-tools", &tools.key);
    for d in &debs {
        key = key.with("deb", d.key());
    }
    let title = format!(
        "initramfs ({flavour:?} OP-TEE TAs, Linux {})",
        kernel.release
    );
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let root = out.join("root");
        for d in &debs {
            log.run(Command::new("dpkg-deb").arg("-x").arg(d.path()).arg(&root))?;
        }
        for p in PRUNE {
            let p = root.join(p);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
        // Debian's merged /usr: the top-level directories are links into usr/.
        for (link, target) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
            if !root.join(link).exists() {
                std::os::unix::fs::symlink(target, root.join(link))?;
            }
        }
        for d in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "etc/moat",
            "var/lib/optee-client/data/tee",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let ta_dst = root.join("usr/lib/optee_armtz");
        let ta_src = optee
            .root
            .join("usr/lib/optee-os-dev")
            .join(stack.optee_dir(flavour))
            .join("ta");
        std::fs::create_dir_all(&ta_dst)?;
        for e in
            std::fs::read_dir(&ta_src).with_context(|| format!("reading {}", ta_src.display()))?
        {
            let e = e?;
            std::fs::copy(e.path(), ta_dst.join(e.file_name()))?;
        }
        let mod_dst = root.join("usr/lib/modules").join(&kernel.release);
        let mut list = String::new();
        for m in &stack.kernel.modules {
            let dst = mod_dst.join(m);
            std::fs::create_dir_all(dst.parent().unwrap_or(&mod_dst))?;
            std::fs::copy(kernel.modules.join(m), &dst)?;
            list.push_str(&format!("{}/{m}\n", kernel.release));
        }
        std::fs::write(root.join("etc/moat/modules"), list)?;
        std::fs::copy(&init, root.join("init"))?;
        for p in crate::guest_tools::PROGRAMS {
            std::fs::copy(tools.dir.join(p), root.join("usr/bin").join(p))?;
        }
        let file = std::fs::File::create(out.join("initramfs.cpio"))?;
        let mut w = cpio::Writer::new(std::io::BufWriter::new(file));
        w.tree(&root)?;
        w.finish()?;
        std::fs::remove_dir_all(&root)?;
        Ok(())
    })?;
    Ok(dir.join("initramfs.cpio"))
}

/// The small archive `--run CMD` appends: `/etc/moat/run` holding CMD.
pub fn run_overlay(cmd: &str) -> Result<Vec<u8>> {
    let mut w = cpio::Writer::new(Vec::new());
    w.dir("etc", 0o755)?;
    w.dir("etc/moat", 0o755)?;
    w.file("etc/moat/run", 0o644, format!("{cmd}\n").as_bytes())?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_in_either_layout_and_compression() {
        let d = std::env::temp_dir().join(format!("moat-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let old = d.join("lib/modules/6.1.0-50-arm64/kernel/drivers/tee");
        let new = d.join("usr/lib/modules/6.12.117+deb13-arm64/kernel/drivers/tee");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(old.join("tee.ko"), "").unwrap();
        std::fs::write(new.join("tee.ko.xz"), "").unwrap();
        let m = "kernel/drivers/tee/tee.ko";
        assert_eq!(
            find_module(&d, "6.1.0-50-arm64", m),
            Some(old.join("tee.ko"))
        );
        assert_eq!(
            find_module(&d, "6.12.117+deb13-arm64", m),
            Some(new.join("tee.ko.xz"))
        );
        assert_eq!(find_module(&d, "6.1.0-50-arm64", "kernel/x.ko"), None);
        assert_eq!(
            release_of("linux-image-6.1.0-50-arm64").unwrap(),
            "6.1.0-50-arm64"
        );
        assert!(release_of("linux-headers-6.1").is_err());
    }

    #[test]
    fn the_run_overlay_holds_the_command() {
        let bytes = run_overlay("xtest 1001").unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("etc/moat/run"));
        assert!(text.contains("xtest 1001\n"));
        assert!(text.contains("TRAILER!!!"));
    }
}
