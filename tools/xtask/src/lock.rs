// SPDX-License-Identifier: MIT OR Apache-2.0
//! `qemu/stack.lock`: what each part of the manifest resolved to.
//!
//! One entry per [`crate::stack::Want`] id: the real package (for a kernel, the ABI package
//! its metapackage named), the exact version, the suite, every file with its SHA-256, and
//! the day it was resolved. `cargo xtask stack update` writes it; every download is checked
//! against it ([`crate::resolve`]). It is committed, like `Cargo.lock`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One file of a part: a `.deb`, or a `.dsc` and its tarballs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    pub name: String,
    pub sha256: String,
}

/// What one part resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The manifest's id (`userspace/libc6`, `kernel/6.1`, `tfa/arm-trusted-firmware`).
    pub id: String,
    /// The package that was fetched (for a kernel: `linux-image-6.1.0-50-arm64`).
    pub package: String,
    pub version: String,
    pub suite: String,
    /// The day it was resolved (UTC, `YYYY-MM-DD`).
    pub resolved: String,
    pub files: Vec<FileHash>,
}

/// The whole lock, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub entries: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    part: Vec<Entry>,
}

const HEADER: &str = "\
# qemu/stack.lock: what each part of qemu/stack.toml resolved to (exact version, files,
# SHA-256). Written by `cargo xtask stack update`; commit it. Every download is verified
# against it, and `cargo xtask stack check` lists the entries the archive no longer has.
";

impl Lock {
    pub fn parse(text: &str) -> Result<Self> {
        let file: File = toml::from_str(text).context("parsing qemu/stack.lock")?;
        let mut entries = BTreeMap::new();
        for e in file.part {
            anyhow::ensure!(
                !e.files.is_empty(),
                "qemu/stack.lock: {} lists no files",
                e.id
            );
            for f in &e.files {
                anyhow::ensure!(
                    f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                    "qemu/stack.lock: {} has a malformed SHA-256 for {}",
                    e.id,
                    f.name
                );
                anyhow::ensure!(
                    !f.name.contains('/') && !f.name.starts_with('.'),
                    "qemu/stack.lock: {} names a file outside its directory: {:?}",
                    e.id,
                    f.name
                );
            }
            let id = e.id.clone();
            anyhow::ensure!(
                entries.insert(id.clone(), e).is_none(),
                "qemu/stack.lock: {id} appears twice"
            );
        }
        Ok(Self { entries })
    }

    pub fn to_text(&self) -> String {
        let file = File {
            part: self.entries.values().cloned().collect(),
        };
        let body = toml::to_string(&file).expect("the lock serializes");
        format!("{HEADER}\n{body}")
    }

    pub fn path() -> PathBuf {
        crate::paths::workspace_root().join("qemu/stack.lock")
    }

    /// The committed lock; a missing file is an empty lock (everything resolves anew).
    pub fn load() -> Result<Self> {
        let path = Self::path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> Result<()> {
        let path = Self::path();
        std::fs::write(&path, self.to_text()).with_context(|| format!("writing {}", path.display()))
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            package: "libc6".into(),
            version: "2.41-12+deb13u5".into(),
            suite: "trixie".into(),
            resolved: "2026-12-03".into(),
            files: vec![FileHash {
                name: "libc6_2.41-12+deb13u5_arm64.deb".into(),
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn a_lock_round_trips() {
        let mut lock = Lock::default();
        lock.entries
            .insert("userspace/libc6".into(), entry("userspace/libc6"));
        let text = lock.to_text();
        assert!(text.starts_with("# qemu/stack.lock"));
        assert!(text.contains("[[part]]"));
        assert_eq!(Lock::parse(&text).unwrap(), lock);
    }

    #[test]
    fn a_malformed_lock_is_refused() {
        let mut lock = Lock::default();
        let mut e = entry("a");
        e.files[0].sha256 = "xyz".into();
        lock.entries.insert("a".into(), e);
        assert!(format!("{:#}", Lock::parse(&lock.to_text()).unwrap_err()).contains("SHA-256"));
        let mut lock = Lock::default();
        let mut e = entry("b");
        e.files[0].name = "../../etc/passwd".into();
        lock.entries.insert("b".into(), e);
        assert!(Lock::parse(&lock.to_text()).is_err());
        let twice = format!("{}\n{}", entry_text("c"), entry_text("c"));
        assert!(format!("{:#}", Lock::parse(&twice).unwrap_err()).contains("twice"));
    }

    fn entry_text(id: &str) -> String {
        let mut lock = Lock::default();
        lock.entries.insert(id.into(), entry(id));
        lock.to_text()
    }

    #[test]
    fn the_committed_lock_parses_and_covers_the_manifest() {
        let lock = Lock::load().unwrap();
        let stack = crate::stack::Stack::load().unwrap();
        for w in stack.wants() {
            let e = lock
                .entries
                .get(&w.id)
                .unwrap_or_else(|| panic!("{} is not in qemu/stack.lock", w.id));
            assert_eq!(e.suite, w.suite, "{}", w.id);
            assert!(
                crate::debver::satisfies(&e.version, &w.constraint),
                "{}: {} does not satisfy {}",
                w.id,
                e.version,
                w.constraint
            );
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_425), "2025-12-03");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(today().len(), 10);
    }
}
