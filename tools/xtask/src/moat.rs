// SPDX-License-Identifier: MIT OR Apache-2.0
//! The moat profile: build the EL2 image from this workspace and boot dom0 on it.
//!
//! moat is the project's own code, so it is not cached in `~/.cache/moat`: cargo rebuilds
//! it incrementally, and objcopy turns the ELF into the raw arm64 Image that TF-A enters
//! as BL33 (the ELF stays next to it for gdb).

use crate::profile::{prepare_common, Boot, Ctx, Prepared};
use crate::qemu::Machine;
use crate::stack::OpteeFlavour;
use crate::{paths, step};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The cargo command that builds the `moat` ELF, as data.
pub fn cargo_args() -> Vec<String> {
    [
        "build",
        "--release",
        "-p",
        "boot",
        "--target",
        paths::TARGET,
    ]
    .map(String::from)
    .to_vec()
}

/// The hypervisor command line moat gets, in Xen's syntax (`xen,xen-bootargs`).
pub fn hv_bootargs(machine: &Machine) -> String {
    format!("dom0_mem=1024M dom0_max_vcpus={}", machine.smp)
}

/// Where cargo puts target artefacts.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::workspace_root().join("target"))
}

/// Build moat and return (raw Image, ELF).
pub fn build() -> Result<(PathBuf, PathBuf)> {
    crate::host::ensure_rust_target()?;
    step::run_visible(
        "moat (cargo build -p boot)",
        Command::new(paths::cargo())
            .current_dir(paths::workspace_root())
            .args(cargo_args()),
    )?;
    let elf = target_dir().join(paths::TARGET).join("release/moat");
    let image = flat_image(&elf)?;
    Ok((image, elf))
}

/// `<elf>.bin`: the flat image of a bare-metal ELF (`objcopy -O binary`), which the
/// firmware or the hypervisor loads and enters as an arm64 Image.
pub fn flat_image(elf: &std::path::Path) -> Result<PathBuf> {
    let image = elf.with_extension("bin");
    let out = Command::new("aarch64-linux-gnu-objcopy")
        .args(["-O", "binary"])
        .arg(elf)
        .arg(&image)
        .output()
        .context("running aarch64-linux-gnu-objcopy")?;
    anyhow::ensure!(
        out.status.success(),
        "objcopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(image)
}

/// Everything `--hv moat` boots, with the NS-virtualized OP-TEE unless `optee` says
/// otherwise (the plain build shows moat refusing trusted-OS calls without a mediator), as
/// BL33 or booted by U-Boot (`boot`).
pub fn prepare(
    ctx: &mut Ctx,
    machine: &Machine,
    optee: Option<OpteeFlavour>,
    kernel: Option<&str>,
    boot: Boot,
) -> Result<Prepared> {
    let c = prepare_common(
        ctx,
        optee.unwrap_or(OpteeFlavour::Virtualized),
        machine,
        kernel,
        boot,
    )?;
    let (image, elf) = build()?;
    println!(
        "moat image: {} (ELF with symbols: {})",
        image.display(),
        elf.display()
    );
    Ok(Prepared {
        hypervisor: Some(image),
        hv_bootargs: hv_bootargs(machine),
        ..c.into_prepared(ctx, machine)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moat_is_built_for_the_bare_metal_target_and_gets_xen_style_options() {
        let a = cargo_args();
        assert!(a
            .windows(2)
            .any(|w| w == ["--target", "aarch64-unknown-none-softfloat"]));
        assert!(a.windows(2).any(|w| w == ["-p", "boot"]));
        let m = Machine {
            smp: 2,
            mem_mib: 2048,
            el2: true,
            deterministic: false,
        };
        assert_eq!(hv_bootargs(&m), "dom0_mem=1024M dom0_max_vcpus=2");
    }
}
