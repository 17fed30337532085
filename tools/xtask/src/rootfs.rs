// SPDX-License-Identifier: MIT OR Apache-2.0
//! The guest kernel and initramfs, from Debian's arm64 packages.
//!
//! The initramfs holds busybox, tee-supplicant, xtest with its TAs (plus the pkcs11, avb,
//! trusted-keys and remoteproc TAs from `optee-os-dev`, matching the OP-TEE flavour), the
//! C library they need, the TEE kernel modules and `qemu/rootfs/init`.

use crate::apt::PrivateApt;
use crate::cpio;
use crate::stack::{OpteeFlavour, Stack};
use crate::step::{self, Key};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel package, unpacked: returns (Image path, modules root /lib/modules/<release>).
pub fn kernel(cache: &Path, apt: &mut PrivateApt, stack: &Stack) -> Result<(PathBuf, PathBuf)> {
    let k = &stack.kernel;
    let key = Key::new("kernel")
        .with("package", &k.package)
        .with("version", &k.version)
        .with("modules", k.modules.join(" "));
    let debs = cache.join("debs");
    let dir = step::cached(
        cache,
        &key,
        &format!("Linux {} ({})", k.release, k.version),
        |out, log| {
            let deb = apt.download(&debs, &k.package, &k.version, log)?;
            let x = out.join("x");
            log.run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
            std::fs::rename(
                x.join(format!("boot/vmlinuz-{}", k.release)),
                out.join("Image"),
            )
            .context("the kernel package has no /boot/vmlinuz-<release>")?;
            // Keep only the modules /init loads: the full tree is 300 MB.
            for m in &k.modules {
                let src = x.join("lib/modules").join(&k.release).join(m);
                let dst = out.join("modules").join(m);
                std::fs::create_dir_all(dst.parent().unwrap_or(out))?;
                std::fs::copy(&src, &dst)
                    .with_context(|| format!("module {m} not in {}", k.package))?;
            }
            std::fs::remove_dir_all(&x)?;
            Ok(())
        },
    )?;
    Ok((dir.join("Image"), dir.join("modules")))
}

/// Paths pruned from the unpacked user-space packages: documentation and locale data the
/// guest never reads.
const PRUNE: &[&str] = &[
    "usr/share",
    "usr/lib/aarch64-linux-gnu/gconv",
    "usr/lib/systemd",
    "etc/ld.so.conf.d",
];

/// Build the initramfs for `flavour` and return its path.
pub fn initramfs(
    cache: &Path,
    apt: &mut PrivateApt,
    stack: &Stack,
    flavour: OpteeFlavour,
    optee_root: &Path,
    modules: &Path,
) -> Result<PathBuf> {
    let init = crate::paths::workspace_root().join("qemu/rootfs/init");
    let mut key = Key::new("initramfs")
        .with(
            "kernel",
            format!("{} {}", stack.kernel.package, stack.kernel.version),
        )
        .with("modules", stack.kernel.modules.join(" "))
        .with("optee", format!("{} {flavour:?}", stack.optee.version))
        .with_file("init", &init)?;
    for (p, v) in &stack.userspace {
        key = key.with(p, v);
    }
    let debs = cache.join("debs");
    let title = format!("initramfs ({flavour:?} OP-TEE TAs)");
    let dir = step::cached(cache, &key, &title, |out, log| {
        let root = out.join("root");
        for (pkg, ver) in &stack.userspace {
            let deb = apt.download(&debs, pkg, ver, log)?;
            log.run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
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
        let ta_src = optee_root
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
        let mod_dst = root.join("usr/lib/modules").join(&stack.kernel.release);
        let mut list = String::new();
        for m in &stack.kernel.modules {
            let dst = mod_dst.join(m);
            std::fs::create_dir_all(dst.parent().unwrap_or(&mod_dst))?;
            std::fs::copy(modules.join(m), &dst)?;
            list.push_str(&format!("{}/{m}\n", stack.kernel.release));
        }
        std::fs::write(root.join("etc/moat/modules"), list)?;
        std::fs::copy(&init, root.join("init"))?;
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
    fn the_run_overlay_holds_the_command() {
        let bytes = run_overlay("xtest 1001").unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("etc/moat/run"));
        assert!(text.contains("xtest 1001\n"));
        assert!(text.contains("TRAILER!!!"));
    }
}
