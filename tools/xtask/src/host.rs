// SPDX-License-Identifier: MIT OR Apache-2.0
//! Host tools: find what is missing and install it with the system's apt, saying so.
//!
//! This is the only place xtask changes the host. It runs `apt-get` as root, or through
//! `sudo` when not root, and prints exactly what it installs and why. The same goes for
//! the Rust side: rustup adds the bare-metal target, and for `cargo xtask test --full`'s
//! fuzzing a nightly toolchain and the pinned cargo-fuzz ([`ensure_fuzz_tools`]).

use crate::stack::Stack;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The oldest QEMU known to boot this chain (Debian bookworm's).
const MIN_QEMU: (u32, u32) = (7, 2);

/// Is `tool` present? An absolute path is checked as a file, a name is looked up on PATH.
fn present(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The packages providing the tools that are missing, given `tool -> package`.
pub fn missing_packages<'a>(
    host: impl IntoIterator<Item = (&'a String, &'a String)>,
    is_present: impl Fn(&str) -> bool,
) -> BTreeSet<String> {
    host.into_iter()
        .filter(|(tool, _)| !is_present(tool))
        .map(|(_, pkg)| pkg.clone())
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A system apt-get command, through sudo when not root.
fn apt_get(args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Install the host packages the stack needs, if any are missing, then check QEMU's version.
pub fn ensure(stack: &Stack) -> Result<()> {
    let missing = missing_packages(&stack.host, present);
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(String::as_str).collect();
        println!(
            "==> installing host packages with the system's apt{}: {}",
            if is_root() { "" } else { " (via sudo)" },
            list.join(" ")
        );
        println!("    (cross compiler, QEMU and DT tools to build TF-A and boot the stack)");
        crate::step::run_visible("apt-get update", &mut apt_get(&["update", "-q"]))?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(list.iter().copied());
        crate::step::run_visible("apt-get install", &mut apt_get(&args))?;
        let still = missing_packages(&stack.host, present);
        if !still.is_empty() {
            bail!("after installing, these packages' tools are still missing: {still:?}");
        }
    }
    check_qemu()?;
    ensure_rust_target()
}

/// Parse "QEMU emulator version 7.2.22 (...)" into (7, 2).
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// QEMU's `--version` line, which also keys artefacts that QEMU produces (the DTB).
pub fn qemu_version() -> Result<String> {
    let out = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .context("running qemu-system-aarch64 --version")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

fn check_qemu() -> Result<()> {
    let line = qemu_version()?;
    match parse_qemu_version(&line) {
        Some(v) if v >= MIN_QEMU => Ok(()),
        Some((a, b)) => bail!(
            "qemu-system-aarch64 {a}.{b} is too old: this chain needs {}.{} or newer",
            MIN_QEMU.0,
            MIN_QEMU.1
        ),
        None => bail!("cannot read QEMU's version from {line:?}"),
    }
}

/// Make sure rustup has the bare-metal target (rust-toolchain.toml names it, but rustup only
/// installs it by itself when it installs the toolchain).
pub fn ensure_rust_target() -> Result<()> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(crate::paths::TARGET)
        .exists()
    {
        return Ok(());
    }
    println!(
        "==> rustup target add {} (the EL2 crates' target)",
        crate::paths::TARGET
    );
    crate::step::run_visible(
        "rustup target add",
        Command::new("rustup").args(["target", "add", crate::paths::TARGET]),
    )
}

/// Does `cmd` run and exit 0?
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The release `cargo-fuzz --version` names ("cargo-fuzz 0.13.2"), if it runs.
fn cargo_fuzz_version() -> Option<String> {
    let out = Command::new("cargo-fuzz").arg("--version").output().ok()?;
    parse_cargo_fuzz_version(&String::from_utf8_lossy(&out.stdout))
}

/// "cargo-fuzz 0.13.2" into "0.13.2".
pub fn parse_cargo_fuzz_version(text: &str) -> Option<String> {
    let v = text.trim().strip_prefix("cargo-fuzz ")?;
    let v = v.split_whitespace().next()?;
    v.chars()
        .all(|c| c.is_ascii_digit() || c == '.')
        .then(|| v.to_string())
}

/// What libFuzzer needs (`cargo xtask test --full` only): a nightly toolchain (libFuzzer's
/// `-Zsanitizer` and coverage flags are unstable; the project itself stays on the pinned
/// stable) and cargo-fuzz, the pinned release. Installed when missing, saying so.
pub fn ensure_fuzz_tools() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("==> rustup toolchain install nightly --profile minimal");
        println!("    (libFuzzer needs nightly's sanitizer flags; only `cargo xtask test --full` fuzzes)");
        crate::step::run_visible(
            "rustup toolchain install nightly",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    let want = crate::fuzz::CARGO_FUZZ_VERSION;
    match cargo_fuzz_version() {
        Some(v) if v == want => Ok(()),
        found => {
            println!(
                "==> cargo install --locked cargo-fuzz --version {want} ({})",
                match found {
                    Some(v) => format!("cargo-fuzz {v} is installed; xtask pins {want}"),
                    None => "cargo-fuzz is missing".into(),
                }
            );
            println!("    (it builds and runs the libFuzzer targets of `cargo xtask test --full`)");
            crate::step::run_visible(
                "cargo install cargo-fuzz",
                Command::new(crate::paths::cargo()).args([
                    "install",
                    "--locked",
                    "cargo-fuzz",
                    "--version",
                    want,
                ]),
            )?;
            match cargo_fuzz_version() {
                Some(v) if v == want => Ok(()),
                other => bail!(
                    "after installing cargo-fuzz {want}, `cargo-fuzz --version` says {other:?} \
                     (is ~/.cargo/bin on PATH?)"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn cargo_fuzz_versions_parse() {
        assert_eq!(
            parse_cargo_fuzz_version("cargo-fuzz 0.13.2\n").as_deref(),
            Some("0.13.2")
        );
        assert_eq!(parse_cargo_fuzz_version("cargo-fuzz"), None);
        assert_eq!(parse_cargo_fuzz_version("error: no such command"), None);
    }

    #[test]
    fn qemu_versions_parse() {
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some((7, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.0.2"),
            Some((10, 0))
        );
        assert_eq!(parse_qemu_version("garbage"), None);
        assert!((7, 2) >= MIN_QEMU && (6, 9) < MIN_QEMU && (10, 0) >= MIN_QEMU);
    }

    #[test]
    fn only_packages_of_missing_tools_are_installed() {
        let mut host = BTreeMap::new();
        host.insert("dtc".to_string(), "device-tree-compiler".to_string());
        host.insert("fdtput".to_string(), "device-tree-compiler".to_string());
        host.insert("make".to_string(), "make".to_string());
        let missing = missing_packages(&host, |t| t == "make");
        assert_eq!(
            missing.into_iter().collect::<Vec<_>>(),
            vec!["device-tree-compiler"]
        );
        assert!(missing_packages(&host, |_| true).is_empty());
    }
}
