// SPDX-License-Identifier: MIT OR Apache-2.0
//! The hostile-guest suite's Linux user programs (`tests/guests/linux/`), built static with
//! the cross compiler, cached like any other artefact, and installed in every guest's
//! initramfs, so that any scenario (and a user at the shell) can run them.
//!
//! ```text
//!   tests/guests/linux/moat-tee-attack.c  aarch64-linux-gnu-gcc -static ─► /usr/bin/moat-tee-attack
//! ```

use crate::profile::Ctx;
use crate::step::{self, Key};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The programs, by file name in `tests/guests/linux/` (`<name>.c` ─► `/usr/bin/<name>`).
pub const PROGRAMS: &[&str] = &["moat-tee-attack"];

/// The built programs.
#[derive(Clone, Debug)]
pub struct GuestTools {
    /// Where they are (one file per entry of [`PROGRAMS`]).
    pub dir: PathBuf,
    /// The cache key's digest: part of the initramfs's key.
    pub key: String,
}

/// The compiler's command line for `name`, as data: the bench client's, with no include
/// directory of its own.
pub fn cc_args(src: &std::path::Path, out: &std::path::Path) -> Vec<String> {
    crate::instruments::static_cc_args(src, &[], out)
}

/// Build (or take from the cache) every program of [`PROGRAMS`].
pub fn build(ctx: &mut Ctx) -> Result<GuestTools> {
    let src = crate::paths::workspace_root().join("tests/guests/linux");
    let out = Command::new("aarch64-linux-gnu-gcc")
        .arg("--version")
        .output()
        .context("running aarch64-linux-gnu-gcc --version")?;
    let cc = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut key = Key::new("guest-tools").with("cc", cc);
    for p in PROGRAMS {
        key = key.with_file(&format!("src {p}.c"), &src.join(format!("{p}.c")))?;
    }
    let dir = step::cached(
        &ctx.cache,
        &key,
        "hostile-guest tools (tests/guests/linux)",
        |out, log| {
            for p in PROGRAMS {
                log.run(
                    Command::new("aarch64-linux-gnu-gcc")
                        .args(cc_args(&src.join(format!("{p}.c")), &out.join(p))),
                )?;
            }
            Ok(())
        },
    )?;
    Ok(GuestTools {
        dir,
        key: key.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_static_and_warnings_are_errors() {
        let a = cc_args(std::path::Path::new("x.c"), std::path::Path::new("/o/x"));
        assert!(a.contains(&"-static".to_string()) && a.contains(&"-Werror".to_string()));
        assert_eq!(a.last().map(String::as_str), Some("x.c"));
        for p in PROGRAMS {
            let src = crate::paths::workspace_root().join(format!("tests/guests/linux/{p}.c"));
            assert!(src.is_file(), "{} is missing", src.display());
        }
    }
}
