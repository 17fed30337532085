// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where things live: the workspace, the cache, the per-run log directories.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The bare-metal target the EL2 crates are built for (softfloat: the hypervisor never
/// touches the guest's FP/SIMD registers).
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .expect("xtask lives at <root>/tools/xtask")
        .to_path_buf()
}

/// The cargo binary that runs us, so rust-toolchain.toml's toolchain is used throughout.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The artefact cache: `$MOAT_CACHE`, else `$XDG_CACHE_HOME/moat`, else `~/.cache/moat`.
/// It lives outside the clone so that CI and users don't rebuild the world.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("MOAT_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("moat")
    } else {
        let home = std::env::var_os("HOME").context("neither MOAT_CACHE nor HOME is set")?;
        PathBuf::from(home).join(".cache").join("moat")
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating cache {}", dir.display()))?;
    Ok(dir)
}

/// A directory for one run's logs and per-run files: `target/moat/<name>/`, emptied first.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("target").join("moat").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
