// SPDX-License-Identifier: MIT OR Apache-2.0
//! The hostile guest (`tests/guests/hostile`, `hostile-core`): build it and boot it as
//! dom0 instead of Linux (`cargo xtask qemu --dom0 hostile`, a scenario's
//! `dom0 = "hostile"`).
//!
//! ```text
//!   cargo build -p moat-hostile-guest --target aarch64-unknown-none-softfloat
//!        └─ objcopy -O binary ─▶ moat-hostile-guest.bin (an arm64 Image, linked at
//!                                 DOM0_KERNEL_ADDR, where dom0's kernel module is loaded)
//!   /chosen: xen,dom0-bootargs = "hostile <dom0_args>", no ramdisk module
//!   console: hostile: ... one line per finding, the summary, "hostile: done, status N"
//! ```
//!
//! Like moat it is the project's own code: cargo rebuilds it incrementally, nothing is
//! cached in `~/.cache/moat`. The run ends on its last line, whose status is the exit
//! status (0: nothing found, 1: findings, 2: it could not run, 3: it crashed); then it
//! powers the machine off.

use crate::paths;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's last console line, before its status.
pub const DONE_MARKER: &str = "hostile: done, status ";

/// The cargo command that builds the guest's ELF, as data.
pub fn cargo_args() -> Vec<String> {
    [
        "build",
        "--release",
        "-p",
        "moat-hostile-guest",
        "--target",
        paths::TARGET,
    ]
    .map(String::from)
    .to_vec()
}

/// dom0's command line for the guest's options (`seed=1 cases=200`).
pub fn bootargs(args: &str) -> String {
    format!("hostile {args}").trim().to_string()
}

/// The guest's exit status, from its last line (`hostile: done, status N`). A domU's lines
/// (`(dN) `-prefixed) never count.
pub fn exit_status(line: &str) -> Option<u8> {
    if crate::profile::domu_of(line).is_some() {
        return None;
    }
    let rest = line.trim_start_matches('\r').strip_prefix(DONE_MARKER)?;
    rest.trim().parse::<u32>().ok().map(|v| v.min(255) as u8)
}

/// The memory the image occupies once running, from its arm64 Image header (`image_size`
/// at offset 16 includes BSS, stack, heap and arena), at least its file size.
pub fn memory_size(image: &Path) -> Result<u64> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    ensure!(
        bytes.len() >= 64 && &bytes[56..60] == b"ARM\x64",
        "{} is not an arm64 Image",
        image.display()
    );
    let mut size = [0u8; 8];
    size.copy_from_slice(&bytes[16..24]);
    Ok(u64::from_le_bytes(size).max(bytes.len() as u64))
}

/// Build the guest and return its Image.
pub fn build() -> Result<PathBuf> {
    crate::host::ensure_rust_target()?;
    crate::step::run_visible(
        "hostile guest (cargo build -p moat-hostile-guest)",
        Command::new(paths::cargo())
            .current_dir(paths::workspace_root())
            .args(cargo_args()),
    )?;
    let elf = crate::moat::target_dir()
        .join(paths::TARGET)
        .join("release/moat-hostile-guest");
    let image = crate::moat::flat_image(&elf)?;
    memory_size(&image)?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_is_built_for_the_bare_metal_target_and_reads_its_options() {
        let a = cargo_args();
        assert!(a.windows(2).any(|w| w == ["-p", "moat-hostile-guest"]));
        assert!(a
            .windows(2)
            .any(|w| w == ["--target", "aarch64-unknown-none-softfloat"]));
        assert_eq!(bootargs("seed=1 cases=200"), "hostile seed=1 cases=200");
        assert_eq!(bootargs(""), "hostile");
    }

    #[test]
    fn the_last_line_gives_the_status() {
        assert_eq!(exit_status("hostile: done, status 0"), Some(0));
        assert_eq!(exit_status("hostile: done, status 1\r"), Some(1));
        assert_eq!(exit_status("hostile: done, status 999"), Some(255));
        assert_eq!(exit_status("hostile: done"), None);
        assert_eq!(exit_status("(d1) hostile: done, status 0"), None);
        assert_eq!(exit_status("moat-init: run-exit=0"), None);
    }

    #[test]
    fn the_guest_is_linked_where_dom0_s_kernel_is_loaded() {
        // With its MMU off the guest cannot relocate itself: it runs only at its link
        // address, which must be where xtask loads dom0's kernel module.
        let ld =
            std::fs::read_to_string(paths::workspace_root().join("tests/guests/hostile/link.ld"))
                .unwrap();
        let want = format!(". = {:#x};", crate::profile::DOM0_KERNEL_ADDR);
        assert!(ld.contains(&want), "link.ld must say `{want}`");
    }

    #[test]
    fn the_image_header_gives_the_memory_size() {
        let dir = std::env::temp_dir().join(format!("hostile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("img");
        let mut b = vec![0u8; 128];
        b[16..24].copy_from_slice(&(32u64 << 20).to_le_bytes());
        b[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(&f, &b).unwrap();
        assert_eq!(memory_size(&f).unwrap(), 32 << 20);
        b[56] = 0;
        std::fs::write(&f, &b).unwrap();
        assert!(memory_size(&f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
