// SPDX-License-Identifier: MIT OR Apache-2.0
//! xtask: moat's build, boot and test driver.
//!
//! ```text
//!   cargo xtask qemu  --hv none|moat|xen  [--run CMD]  [--dom0 hostile --dom0-args OPTS]
//!        |
//!        +-- host::ensure      apt-get install the host tools that are missing
//!        +-- resolve::Resolver qemu/stack.toml (intent) through qemu/stack.lock (exact
//!        |                     versions + SHA-256) into files in the cache
//!        +-- apt::PrivateApt   arm64 + trixie packages, without touching /etc/apt
//!        +-- tfa::build        TF-A from Debian's source, with OP-TEE as BL32
//!        +-- rootfs::build     initramfs: busybox, tee-supplicant, xtest, TAs, modules
//!        +-- xen::build        (--hv xen) stock Xen from Debian's source, OP-TEE mediator on
//!        +-- hostile::build    (--dom0 hostile) the hostile guest, booted as dom0 instead
//!        |                     of Linux: a seeded raw-SMC campaign against the mediator
//!        +-- dtb::prepare      QEMU's DTB (dumped with the same -bios) + /chosen
//!        +-- uboot             (--boot u-boot) Debian's U-Boot as BL33, a boot.scr that
//!        |                     writes /chosen and boots the same images
//!        +-- qemu::Machine     the QEMU command line, as data; run with a timeout
//!
//!   cargo xtask bench  (none, xen, moat; deterministic QEMU)
//!        +-- instruments       null TA, moat-bench client, elcount TCG plugin (qemu/bench/)
//!        +-- bench             boot each configuration twice, require identical results
//!        +-- bench_report      parse, statistics, report.md, CSV, SVG, --check
//!
//!   cargo xtask fuzz   (also in `cargo xtask test --full`)
//!        +-- host              rustup's nightly and the pinned cargo-fuzz, when missing
//!        +-- fuzz              libFuzzer, 10^7 executions per target, the corpus kept in
//!                              target/moat/fuzz/<target>/, a crash's reproducer printed
//! ```
//!
//! Every artefact lands in the cache (`~/.cache/moat`, or `$MOAT_CACHE`) under a key
//! derived from the resolved packages (version and SHA-256) and flags that made it (`step`),
//! so a second run reuses it and a changed flag or package rebuilds exactly what it affects.

mod apt;
mod bench;
mod bench_report;
mod cpio;
mod debver;
mod dtb;
mod fuzz;
mod guest_tools;
mod host;
mod hostile;
mod instruments;
mod lock;
mod moat;
mod paths;
mod profile;
mod qemu;
mod resolve;
mod rootfs;
mod scenario;
mod stack;
mod stack_cmd;
mod step;
mod tfa;
mod uboot;
mod xen;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// moat's developer tasks. `cargo xtask qemu` boots the system, `cargo xtask test` tests it.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build whatever is missing and boot the TrustZone stack in QEMU (TF-A, OP-TEE,
    /// an optional hypervisor, Linux with tee-supplicant and xtest). Without --run it gives
    /// a shell on the console; `poweroff` ends it (or Ctrl-] x to quit QEMU).
    Qemu(profile::QemuArgs),
    /// Run the host unit tests, build the EL2 image, and run the QEMU scenarios in
    /// `tests/scenarios` (add --full for libFuzzer's 10^7 executions per fuzz target, the
    /// long scenarios, such as xtest's whole suite, and `cargo xtask bench --check`).
    Test(scenario::TestArgs),
    /// Count what a call into OP-TEE costs with no hypervisor, under Xen and under moat:
    /// deterministic QEMU (one counter tick = one instruction), a null TA and a client,
    /// instructions per exception level from a TCG plugin, each configuration booted twice
    /// and required to give identical results. Writes target/moat/bench/<time>/report.md,
    /// CSV and SVG plots. Not part of `cargo xtask test`.
    Bench(bench::BenchArgs),
    /// Run libFuzzer on the fuzz targets (the mediator's `smc_sequence`, hv-core's
    /// `decoders`), 10^7 executions each by default, from the corpus kept in
    /// target/moat/fuzz/<target>/; a crash fails with its reproducer. `cargo xtask test
    /// --full` runs the same. Installs a nightly toolchain and cargo-fuzz when missing.
    Fuzz(fuzz::FuzzArgs),
    /// Check formatting and run clippy with warnings denied, on host and target crates.
    Lint,
    /// Print the cache directory and what it holds.
    Cache,
    /// The third-party stack's lock (qemu/stack.lock): `update` re-resolves every part of
    /// qemu/stack.toml to the newest version its suite offers and rewrites the lock; `check`
    /// lists the lock entries the archive no longer has (exit 1 when there are any).
    Stack {
        #[command(subcommand)]
        cmd: stack_cmd::StackCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<u8> = match cli.cmd {
        Cmd::Qemu(args) => profile::qemu(&args),
        Cmd::Test(args) => scenario::test(&args),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Lint => lint().map(|()| 0),
        Cmd::Cache => cache_info().map(|()| 0),
        Cmd::Stack { cmd } => stack_cmd::run(&cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `cargo fmt --check` and `cargo clippy -D warnings`, for the host crates (hostile-core
/// among them) and for the target crates (built for the bare-metal target: boot, hv, the
/// pure crates they use, and the hostile guest with its pure half).
fn lint() -> Result<()> {
    let root = paths::workspace_root();
    step::run_visible(
        "cargo fmt --check",
        std::process::Command::new(paths::cargo())
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    step::run_visible(
        "clippy (host crates)",
        std::process::Command::new(paths::cargo())
            .current_dir(&root)
            .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    host::ensure_rust_target()?;
    step::run_visible(
        "clippy (EL2 crates and the hostile guest, aarch64-unknown-none-softfloat)",
        std::process::Command::new(paths::cargo())
            .current_dir(&root)
            .args([
                "clippy",
                "-p",
                "boot",
                "-p",
                "hv",
                "-p",
                "hv-core",
                "-p",
                "mediator",
                "-p",
                "hostile-core",
                "-p",
                "moat-hostile-guest",
            ])
            .args(["--target", paths::TARGET, "--", "-D", "warnings"]),
    )?;
    Ok(())
}

fn cache_info() -> Result<()> {
    let cache = paths::cache_dir()?;
    println!("cache: {}", cache.display());
    for sub in ["apt", "debs", "src", "build"] {
        let dir = cache.join(sub);
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        println!("  {sub:6} {n:4} entries  {}", dir.display());
    }
    Ok(())
}
