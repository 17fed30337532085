// SPDX-License-Identifier: MIT OR Apache-2.0
//! The device tree: QEMU's own, dumped with the same `-bios`, plus `/chosen` for the run.
//!
//! The DTB must be dumped with the firmware present: without `-bios`, QEMU describes a GPIO
//! at 0x9030000 that is absent under secure=on, and Linux aborts probing it. At boot, TF-A
//! adds `/psci` and OP-TEE adds `/firmware/optee` and `/reserved-memory` to this DTB in
//! place, at 0x40000000.

use crate::qemu::Machine;
use crate::step::{self, Key};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// QEMU's DTB for `machine` booted with `bios` (cached by QEMU version, board and firmware).
pub fn base(cache: &Path, machine: &Machine, bios: &Path) -> Result<PathBuf> {
    let key = Key::new("dtb")
        .with("qemu", crate::host::qemu_version()?)
        .with("board", machine.board_args().join(" "))
        .with_file("bios", bios)?;
    let title = format!(
        "QEMU virt DTB (smp {}, {} MiB)",
        machine.smp, machine.mem_mib
    );
    let dir = step::cached(cache, &key, &title, |out, log| {
        let dtb = out.join("virt.dtb");
        log.run(
            Command::new("qemu-system-aarch64")
                .args(machine.board_args())
                .arg("-bios")
                .arg(bios)
                .arg("-machine")
                .arg(format!("dumpdtb={}", dtb.display())),
        )?;
        anyhow::ensure!(dtb.exists(), "QEMU did not write {}", dtb.display());
        Ok(())
    })?;
    Ok(dir.join("virt.dtb"))
}

/// What goes into `/chosen` for one run.
#[derive(Clone, Debug, Default)]
pub struct Chosen {
    pub bootargs: String,
    /// `[start, end)` of the initrd in guest physical memory.
    pub initrd: Option<(u64, u64)>,
}

/// The `fdtput` invocations that write `chosen` into a DTB file, as data.
pub fn fdtput_args(dtb: &Path, chosen: &Chosen) -> Vec<Vec<String>> {
    let d = dtb.display().to_string();
    let mut v = vec![vec![
        "-t".into(),
        "s".into(),
        d.clone(),
        "/chosen".into(),
        "bootargs".into(),
        chosen.bootargs.clone(),
    ]];
    if let Some((start, end)) = chosen.initrd {
        for (prop, val) in [("linux,initrd-start", start), ("linux,initrd-end", end)] {
            // Two cells, as /chosen's parent has #address-cells = <2>.
            v.push(vec![
                "-t".into(),
                "u".into(),
                d.clone(),
                "/chosen".into(),
                prop.into(),
                (val >> 32).to_string(),
                (val & 0xffff_ffff).to_string(),
            ]);
        }
    }
    v
}

/// Copy `base` to `out` and write `chosen` into it.
pub fn with_chosen(base: &Path, out: &Path, chosen: &Chosen) -> Result<()> {
    std::fs::copy(base, out).with_context(|| format!("copying {}", base.display()))?;
    for args in fdtput_args(out, chosen) {
        let o = Command::new("fdtput")
            .args(&args)
            .output()
            .context("running fdtput")?;
        anyhow::ensure!(
            o.status.success(),
            "fdtput {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_bounds_are_written_as_two_cells() {
        let c = Chosen {
            bootargs: "console=ttyAMA0".into(),
            initrd: Some((0x4800_0000, 0x1_0000_0010)),
        };
        let a = fdtput_args(Path::new("/r/v.dtb"), &c);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0][5], "console=ttyAMA0");
        assert_eq!(a[1][4..], ["linux,initrd-start", "0", "1207959552"]);
        assert_eq!(a[2][4..], ["linux,initrd-end", "1", "16"]);
    }
}
