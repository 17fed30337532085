// SPDX-License-Identifier: MIT OR Apache-2.0
//! Resolving the manifest ([`crate::stack`]) through the lock ([`crate::lock`]) into files in
//! the cache, the way Cargo resolves crates.
//!
//! ```text
//!  Want (stack.toml: package, suite, constraint) + Entry (stack.lock: version, files, SHA-256)
//!     │
//!     ├─1─ the lock's files are in the cache and their SHA-256 match ─────────► Cache
//!     ├─2─ the archive still offers the locked version: download, verify ────► Archive
//!     │      (a SHA-256 that differs from the lock is refused, never used)
//!     └─3─ it does not: the newest version in the *same suite* that satisfies
//!          the constraint, verified against the archive's index, one warning ─► Fallback
//!          (--locked turns 3 into an error; nothing satisfying is an error that
//!           names the package, the constraint and what the archive offers)
//! ```
//!
//! A "not offered" answer is trusted only after the package lists were refreshed in this
//! run, so stale lists never cause a fallback. The cache keys of every build step are made
//! from [`Resolved::key`] (version and hashes), never from the manifest's text, so a fallback
//! never reuses an artefact built from other bytes. The questions asked of the archive are
//! the [`Archive`] trait: `apt::PrivateApt` answers them for real, the tests from recorded
//! `apt-cache` output.

use crate::debver;
use crate::lock::{Entry, FileHash, Lock};
use crate::stack::{Want, What};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Binary (`.deb`) or source (`.dsc` + tarballs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Binary,
    Source,
}

/// What the resolver asks of Debian's archive.
pub trait Archive {
    /// The versions of `name` the archive's lists offer in `suite`.
    fn offers(&mut self, kind: Kind, name: &str, suite: &str) -> Result<Vec<String>>;
    /// The files of `name=version` and their SHA-256, as the archive's index lists them.
    fn index_files(&mut self, kind: Kind, name: &str, version: &str) -> Result<Vec<FileHash>>;
    /// The `Depends` field of binary package `name=version`.
    fn depends(&mut self, name: &str, version: &str) -> Result<String>;
    /// Download `name=version` into the empty directory `into`.
    fn fetch(&mut self, kind: Kind, name: &str, version: &str, into: &Path) -> Result<()>;
    /// Refresh the package lists; `false` when they were already refreshed in this run.
    fn refresh(&mut self) -> Result<bool>;
}

/// Where a resolved part came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The lock's files, already in the cache.
    Cache,
    /// The lock's version, downloaded and verified.
    Archive,
    /// Not the lock's version: `locked` was gone (or the lock had no entry for the part).
    Fallback { locked: Option<String> },
}

/// One part, resolved to files in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub id: String,
    /// The package fetched (for a kernel, the ABI package: `linux-image-6.1.0-50-arm64`).
    pub package: String,
    pub version: String,
    pub suite: String,
    pub origin: Origin,
    pub files: Vec<FileHash>,
    /// The directory holding `files`.
    pub dir: PathBuf,
    /// The one warning line a fallback prints.
    pub warning: Option<String>,
}

impl Resolved {
    /// The first file: the `.deb` of a binary part, the `.dsc` of a source part.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.files[0].name)
    }

    /// What a build step's cache key records of this part: the exact bytes it was built from.
    pub fn key(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| format!("{}:{}", f.name, f.sha256))
            .collect();
        format!("{}={} {}", self.package, self.version, files.join(" "))
    }

    /// One line of a run's `stack.resolved`.
    pub fn record(&self) -> String {
        let origin = match &self.origin {
            Origin::Cache => "locked (cache)".to_string(),
            Origin::Archive => "locked (downloaded)".to_string(),
            Origin::Fallback { locked: Some(v) } => format!("FALLBACK from locked {v}"),
            Origin::Fallback { locked: None } => "FALLBACK (not in the lock)".to_string(),
        };
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| format!("{} sha256={}", f.name, f.sha256))
            .collect();
        format!(
            "{} {}={} [{}] {origin}: {}",
            self.id,
            self.package,
            self.version,
            self.suite,
            files.join(", ")
        )
    }
}

/// The `stack.resolved` file of a run: every part it used.
pub fn record_text(parts: &[Resolved]) -> String {
    let mut s = String::from(
        "# The third-party stack this run used: qemu/stack.toml resolved through qemu/stack.lock.\n\
         # id package=version [suite] origin: files with their SHA-256\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for p in parts {
        if seen.insert(&p.id) {
            s.push_str(&p.record());
            s.push('\n');
        }
    }
    s
}

/// A download that failed, told apart from one whose bytes were wrong.
enum Download {
    /// apt could not fetch it (gone, or the network).
    Fetch(anyhow::Error),
    /// The bytes differ from what the lock or the index says: never used.
    Refused(String),
}

/// Resolves [`Want`]s, remembering each resolution for the rest of the run.
pub struct Resolver<A: Archive> {
    pub archive: A,
    lock: Lock,
    cache: PathBuf,
    /// `--locked`: a fallback is an error.
    locked: bool,
    /// The suites of the manifest, to say what the archive offers when nothing fits.
    suites: Vec<String>,
    memo: BTreeMap<String, Resolved>,
    used: Vec<Resolved>,
}

fn kind_of(want: &Want) -> Kind {
    match want.what {
        What::Dsc(_) => Kind::Source,
        What::Deb(_) | What::Kernel { .. } => Kind::Binary,
    }
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::step::hex(&h.finalize()))
}

/// Are all `files` in `dir` with these hashes?
fn files_match(dir: &Path, files: &[FileHash]) -> Result<bool> {
    for f in files {
        let p = dir.join(&f.name);
        if !p.is_file() || sha256_file(&p)? != f.sha256 {
            return Ok(false);
        }
    }
    Ok(!files.is_empty())
}

/// Do an entry's files belong to its version? Debian names a binary
/// `<package>_<version without epoch>_<arch>.deb` and a source `<source>_<version>.dsc`. A
/// lock whose version was edited by hand keeps the old names: its hashes say nothing about
/// the version it now names.
pub fn files_name_version(kind: Kind, e: &Entry) -> bool {
    let bare = e
        .version
        .split_once(':')
        .map_or(e.version.as_str(), |(_, v)| v);
    let Some(first) = e.files.first() else {
        return false;
    };
    match kind {
        Kind::Binary => first
            .name
            .strip_prefix(&format!("{}_{bare}_", e.package))
            .is_some_and(|arch| arch.ends_with(".deb")),
        Kind::Source => first.name == format!("{}_{bare}.dsc", e.package),
    }
}

/// The kernel package a metapackage's `Depends` names, with the version it pins
/// (`linux-image-6.1.0-50-arm64 (= 6.1.176-1)`).
pub fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    for alt in depends.split([',', '|']) {
        let alt = alt.trim();
        let (name, rest) = alt.split_once(' ').unwrap_or((alt, ""));
        if name.starts_with("linux-image-") {
            let version = rest
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            return Some((name.to_string(), version));
        }
    }
    None
}

impl<A: Archive> Resolver<A> {
    pub fn new(archive: A, lock: Lock, cache: &Path, locked: bool, suites: Vec<String>) -> Self {
        Self {
            archive,
            lock,
            cache: cache.to_path_buf(),
            locked,
            suites,
            memo: BTreeMap::new(),
            used: Vec::new(),
        }
    }

    /// The parts resolved since the last call (in order), for a run's `stack.resolved`.
    pub fn take_used(&mut self) -> Vec<Resolved> {
        std::mem::take(&mut self.used)
    }

    /// Point the lock entry `id` at `version`, as if the lock had been edited (the drift
    /// scenario uses a version that does not exist). Forgets what was resolved for it.
    pub fn override_locked_version(&mut self, id: &str, version: &str) -> Result<()> {
        let e = self
            .lock
            .entries
            .get_mut(id)
            .with_context(|| format!("qemu/stack.lock has no entry {id}"))?;
        e.version = version.to_string();
        for f in &mut e.files {
            f.name = format!("{}_{version}_override", e.package);
        }
        self.memo.remove(id);
        Ok(())
    }

    /// Where the files of `package=version` live in the cache.
    fn store(&self, kind: Kind, package: &str, version: &str) -> PathBuf {
        match kind {
            Kind::Binary => self.cache.join("debs"),
            Kind::Source => self
                .cache
                .join("src")
                .join(format!("{package}_{}", version.replace(':', "%3a"))),
        }
    }

    /// Resolve one part (once per run; later calls answer from memory).
    pub fn resolve(&mut self, want: &Want) -> Result<Resolved> {
        if let Some(r) = self.memo.get(&want.id) {
            self.used.push(r.clone());
            return Ok(r.clone());
        }
        let r = self.resolve_anew(want)?;
        if let Some(w) = &r.warning {
            eprintln!("warning: {w}");
        }
        self.memo.insert(want.id.clone(), r.clone());
        self.used.push(r.clone());
        Ok(r)
    }

    /// The lock entry for `want`, if it still matches the manifest (same suite, and the
    /// version satisfies the constraint).
    fn entry_for(&self, want: &Want) -> Option<Entry> {
        self.lock
            .entries
            .get(&want.id)
            .filter(|e| e.suite == want.suite && debver::satisfies(&e.version, &want.constraint))
            .cloned()
    }

    fn resolve_anew(&mut self, want: &Want) -> Result<Resolved> {
        let kind = kind_of(want);
        let entry = self.entry_for(want);
        if let Some(e) = entry.as_ref().filter(|e| !files_name_version(kind, e)) {
            return self.resolve_unhashed(want, e);
        }
        if let Some(e) = &entry {
            let dir = self.store(kind, &e.package, &e.version);
            let resolved = |origin| Resolved {
                id: want.id.clone(),
                package: e.package.clone(),
                version: e.version.clone(),
                suite: e.suite.clone(),
                origin,
                files: e.files.clone(),
                dir: dir.clone(),
                warning: None,
            };
            if files_match(&dir, &e.files)? {
                return Ok(resolved(Origin::Cache));
            }
            if self.fetch_locked(kind, e, &dir)? {
                return Ok(resolved(Origin::Archive));
            }
            if self.locked {
                bail!(
                    "{} {} (locked for {}) is no longer in the archive, and --locked forbids \
                     a fallback; `cargo xtask stack update` re-resolves the lock",
                    e.package,
                    e.version,
                    want.id
                );
            }
        } else if self.locked {
            bail!(
                "{}: qemu/stack.lock has no entry that matches qemu/stack.toml (suite {}, \
                 version {}), and --locked forbids resolving anew; run `cargo xtask stack update`",
                want.id,
                want.suite,
                want.constraint
            );
        }
        self.fallback(want, entry.as_ref())
    }

    /// A lock entry whose files are not its version's (the version was edited by hand):
    /// its hashes cannot vouch for anything. The locked version is taken from the archive,
    /// verified against the archive's index, with one warning; if the archive no longer has
    /// it, the fallback's one warning applies. `--locked` refuses both.
    fn resolve_unhashed(&mut self, want: &Want, e: &Entry) -> Result<Resolved> {
        let kind = kind_of(want);
        let names: Vec<&str> = e.files.iter().map(|f| f.name.as_str()).collect();
        let offered = self.offered(kind, &e.package, &e.suite, &e.version)?;
        if self.locked && !offered {
            bail!(
                "{} {} (locked for {}) is no longer in the archive, and --locked forbids \
                 a fallback; `cargo xtask stack update` re-resolves the lock",
                e.package,
                e.version,
                want.id
            );
        }
        if self.locked {
            bail!(
                "qemu/stack.lock: {} {} lists files of another version ({}), so --locked cannot \
                 verify it; `cargo xtask stack update` re-resolves the lock",
                e.package,
                e.version,
                names.join(", ")
            );
        }
        if !offered {
            return self.fallback(want, Some(e));
        }
        let files = self.archive.index_files(kind, &e.package, &e.version)?;
        let dir = self.store(kind, &e.package, &e.version);
        if !files_match(&dir, &files)? {
            match self.download(
                kind,
                &e.package,
                &e.version,
                &files,
                &dir,
                "the archive index",
            ) {
                Ok(()) => {}
                Err(Download::Refused(msg)) => bail!("{msg}"),
                Err(Download::Fetch(err)) => {
                    return Err(err.context(format!("downloading {}={}", e.package, e.version)))
                }
            }
        }
        Ok(Resolved {
            id: want.id.clone(),
            package: e.package.clone(),
            version: e.version.clone(),
            suite: e.suite.clone(),
            origin: Origin::Fallback {
                locked: Some(e.version.clone()),
            },
            files,
            dir,
            warning: Some(format!(
                "{} {} (locked) lists files of another version ({}) in qemu/stack.lock; using \
                 {} {} verified against the archive's index; `cargo xtask stack update` records it",
                e.package,
                e.version,
                names.join(", "),
                e.package,
                e.version
            )),
        })
    }

    /// Is `version` of `name` offered in `suite`? A "no" is re-asked after one refresh.
    fn offered(&mut self, kind: Kind, name: &str, suite: &str, version: &str) -> Result<bool> {
        if self
            .archive
            .offers(kind, name, suite)?
            .iter()
            .any(|v| v == version)
        {
            return Ok(true);
        }
        Ok(self.archive.refresh()?
            && self
                .archive
                .offers(kind, name, suite)?
                .iter()
                .any(|v| v == version))
    }

    /// Case 2: download the locked version. `Ok(false)`: the archive no longer has it.
    fn fetch_locked(&mut self, kind: Kind, e: &Entry, dir: &Path) -> Result<bool> {
        if !self.offered(kind, &e.package, &e.suite, &e.version)? {
            return Ok(false);
        }
        let what = "qemu/stack.lock";
        match self.download(kind, &e.package, &e.version, &e.files, dir, what) {
            Ok(()) => Ok(true),
            Err(Download::Refused(msg)) => bail!("{msg}"),
            Err(Download::Fetch(err)) => {
                // Lists older than this run may list what the archive already dropped.
                if self.archive.refresh()? {
                    if !self.offered(kind, &e.package, &e.suite, &e.version)? {
                        return Ok(false);
                    }
                    match self.download(kind, &e.package, &e.version, &e.files, dir, what) {
                        Ok(()) => return Ok(true),
                        Err(Download::Refused(msg)) => bail!("{msg}"),
                        Err(Download::Fetch(err)) => return Err(err),
                    }
                }
                Err(err)
            }
        }
    }

    /// Download `package=version` and keep it only if every file has the expected hash.
    fn download(
        &mut self,
        kind: Kind,
        package: &str,
        version: &str,
        files: &[FileHash],
        dir: &Path,
        expected_by: &str,
    ) -> std::result::Result<(), Download> {
        let io = |e: std::io::Error| Download::Fetch(e.into());
        let parent = dir.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io)?;
        let tmp = parent.join(format!(".fetch-{package}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let result = (|| {
            self.archive
                .fetch(kind, package, version, &tmp)
                .map_err(Download::Fetch)?;
            if kind == Kind::Binary {
                // apt names the .deb with the epoch (`%3a`); the index's name has none.
                let debs: Vec<PathBuf> = std::fs::read_dir(&tmp)
                    .map_err(io)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                    .collect();
                let [deb] = &debs[..] else {
                    return Err(Download::Fetch(anyhow::anyhow!(
                        "downloading {package}={version} gave {} .deb files, not one",
                        debs.len()
                    )));
                };
                std::fs::rename(deb, tmp.join(&files[0].name)).map_err(io)?;
            }
            for f in files {
                let p = tmp.join(&f.name);
                if !p.is_file() {
                    return Err(Download::Fetch(anyhow::anyhow!(
                        "downloading {package}={version} did not give {}",
                        f.name
                    )));
                }
                let got = sha256_file(&p).map_err(Download::Fetch)?;
                if got != f.sha256 {
                    return Err(Download::Refused(format!(
                        "{package} {version}: {} has SHA-256 {got}, but {expected_by} says {}; \
                         refusing it",
                        f.name, f.sha256
                    )));
                }
            }
            std::fs::create_dir_all(dir).map_err(io)?;
            for f in files {
                std::fs::rename(tmp.join(&f.name), dir.join(&f.name)).map_err(io)?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// The versions (newest first) that could replace the lock: `(package, version)`.
    fn candidates(&mut self, want: &Want, not: Option<&str>) -> Result<Vec<(String, String)>> {
        let (name, kind) = (want.name().to_string(), kind_of(want));
        let mut offers = self.archive.offers(kind, &name, &want.suite)?;
        if !offers
            .iter()
            .any(|v| debver::satisfies(v, &want.constraint))
            && self.archive.refresh()?
        {
            offers = self.archive.offers(kind, &name, &want.suite)?;
        }
        let mut fit: Vec<String> = offers
            .into_iter()
            .filter(|v| debver::satisfies(v, &want.constraint) && Some(v.as_str()) != not)
            .collect();
        fit.sort_by(|a, b| debver::compare(b, a));
        if fit.is_empty() {
            let mut seen = Vec::new();
            for suite in self.suites.clone() {
                let v = self.archive.offers(kind, &name, &suite)?;
                seen.push(format!(
                    "{suite}: {}",
                    if v.is_empty() {
                        "nothing".into()
                    } else {
                        v.join(", ")
                    }
                ));
            }
            let why = want
                .why
                .as_deref()
                .map(|w| format!(" (qemu/stack.toml says why: {w})"))
                .unwrap_or_default();
            bail!(
                "{} ({}): nothing in {} satisfies version {}{why}; the archive offers {}",
                name,
                want.id,
                want.suite,
                want.constraint,
                seen.join("; ")
            );
        }
        match &want.what {
            What::Deb(n) | What::Dsc(n) => Ok(fit.into_iter().map(|v| (n.clone(), v)).collect()),
            What::Kernel { metapackage } => {
                // The metapackage's newest version names the ABI package to use.
                let mut out = Vec::new();
                for v in fit {
                    let dep = self.archive.depends(metapackage, &v)?;
                    let (pkg, pinned) = kernel_dependency(&dep).with_context(|| {
                        format!("{metapackage} {v} depends on no linux-image-* ({dep})")
                    })?;
                    out.push((pkg, pinned.unwrap_or(v)));
                }
                Ok(out)
            }
        }
    }

    /// Case 3: the newest version in the same suite that satisfies the constraint.
    fn fallback(&mut self, want: &Want, entry: Option<&Entry>) -> Result<Resolved> {
        let kind = kind_of(want);
        let locked_version = entry.map(|e| e.version.as_str());
        let mut last_err = None;
        for (package, version) in self.candidates(want, locked_version)? {
            let files = self.archive.index_files(kind, &package, &version)?;
            let dir = self.store(kind, &package, &version);
            if !files_match(&dir, &files)? {
                match self.download(
                    kind,
                    &package,
                    &version,
                    &files,
                    &dir,
                    "the archive's index",
                ) {
                    Ok(()) => {}
                    Err(Download::Refused(msg)) => bail!("{msg}"),
                    Err(Download::Fetch(e)) => {
                        last_err = Some(e.context(format!("downloading {package}={version}")));
                        continue;
                    }
                }
            }
            let warning = Some(match entry {
                Some(e) => {
                    let using = match &want.what {
                        What::Kernel { metapackage } => format!(
                            "{package} {version} ({}'s {metapackage}, satisfies {})",
                            want.suite, want.constraint
                        ),
                        _ => format!("{version} (same suite, satisfies {})", want.constraint),
                    };
                    format!(
                        "{} {} (locked) is no longer in the archive; using {using}; \
                         `cargo xtask stack update` records it",
                        e.package, e.version
                    )
                }
                None => format!(
                    "{} is not in qemu/stack.lock (or no longer matches qemu/stack.toml); using \
                     {package} {version} ({}, satisfies {}); `cargo xtask stack update` records it",
                    want.id, want.suite, want.constraint
                ),
            });
            return Ok(Resolved {
                id: want.id.clone(),
                package,
                version,
                suite: want.suite.clone(),
                origin: Origin::Fallback {
                    locked: locked_version.map(str::to_string),
                },
                files,
                dir,
                warning,
            });
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("{}: no candidate could be downloaded", want.id)))
    }

    /// What `cargo xtask stack update` writes for `want`: the newest version in its suite
    /// that satisfies its constraint, with the index's hashes (nothing is downloaded). An
    /// unchanged version keeps its entry (and date).
    pub fn latest(&mut self, want: &Want, date: &str) -> Result<Entry> {
        let kind = kind_of(want);
        let (package, version) = self
            .candidates(want, None)?
            .into_iter()
            .next()
            .context("no candidate")?;
        if let Some(e) = self.entry_for(want) {
            if e.package == package && e.version == version {
                return Ok(e);
            }
        }
        let files = self.archive.index_files(kind, &package, &version)?;
        Ok(Entry {
            id: want.id.clone(),
            package,
            version,
            suite: want.suite.clone(),
            resolved: date.to_string(),
            files,
        })
    }

    /// For `cargo xtask stack check`: is the lock entry of `want` still in the archive?
    /// `Err` when the lock has no (matching) entry.
    pub fn still_offered(&mut self, want: &Want) -> Result<bool> {
        let e = self.entry_for(want).with_context(|| {
            format!(
                "{}: qemu/stack.lock has no entry that matches qemu/stack.toml",
                want.id
            )
        })?;
        self.offered(kind_of(want), &e.package, &e.suite, &e.version)
    }

    /// The lock entry of `id`, if any.
    pub fn lock_entry(&self, id: &str) -> Option<&Entry> {
        self.lock.entries.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt;

    /// `apt-cache madison` as recorded on 2026-12-03 (the archive dropped 2.41-12+deb13u4).
    const MADISON_LIBC6: &str = "\
     libc6 | 2.41-12+deb13u5 | http://mirror.example/debian trixie/main arm64 Packages
     libc6 | 2.36-9+deb12u14 | http://mirror.example/debian bookworm/main arm64 Packages
     glibc | 2.41-12+deb13u4 | http://mirror.example/debian trixie/main Sources
     glibc | 2.41-12+deb13u5 | http://mirror.example/debian trixie/main Sources
     glibc | 2.36-9+deb12u14 | http://mirror.example/debian bookworm/main Sources
";
    const MADISON_ZLIB: &str = "\
    zlib1g | 1:1.3.dfsg+really1.3.1-1+deb13u1 | http://mirror.example/debian trixie/main arm64 Packages
    zlib1g | 1:1.2.13.dfsg-1 | http://mirror.example/debian bookworm/main arm64 Packages
";
    const MADISON_SSL: &str = "\
libssl3t64 | 3.5.9-1~deb13u1 | http://mirror.example/debian trixie/main arm64 Packages
   openssl | 3.5.7-1~deb13u2 | http://mirror.example/debian trixie/main Sources
";
    const MADISON_META: &str = "\
linux-image-arm64 | 6.12.117-1 | http://mirror.example/debian trixie/main arm64 Packages
linux-image-arm64 |  6.1.176-1 | http://mirror.example/debian bookworm/main arm64 Packages
";
    const MADISON_K50: &str = "\
linux-image-6.1.0-50-arm64 |  6.1.176-1 | http://mirror.example/debian bookworm/main arm64 Packages
";
    const MADISON_TFA: &str = "\
arm-trusted-firmware | 2.12.1+dfsg-1 | http://mirror.example/debian trixie/main arm64 Packages
arm-trusted-firmware | 2.12.1+dfsg-1 | http://mirror.example/debian trixie/main Sources
arm-trusted-firmware | 2.8.0+dfsg-1 | http://mirror.example/debian bookworm/main Sources
";
    /// `apt-cache show` stanzas (fields cut to the ones read).
    const SHOW: &str = "\
Package: libc6
Version: 2.41-12+deb13u5
Architecture: arm64
Filename: pool/main/g/glibc/libc6_2.41-12+deb13u5_arm64.deb
SHA256: SHA_LIBC6

Package: zlib1g
Version: 1:1.3.dfsg+really1.3.1-1+deb13u1
Filename: pool/main/z/zlib/zlib1g_1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb
SHA256: SHA_ZLIB

Package: linux-image-arm64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)

Package: linux-image-6.1.0-50-arm64
Version: 6.1.176-1
Filename: pool/main/l/linux-signed-arm64/linux-image-6.1.0-50-arm64_6.1.176-1_arm64.deb
SHA256: SHA_K50
";
    /// `apt-cache showsrc arm-trusted-firmware` (cut).
    const SHOWSRC_TFA: &str = "\
Package: arm-trusted-firmware
Version: 2.12.1+dfsg-1
Checksums-Sha256:
 SHA_DSC 1672 arm-trusted-firmware_2.12.1+dfsg-1.dsc
 SHA_ORIG 8078248 arm-trusted-firmware_2.12.1+dfsg.orig.tar.xz
Package-List:
 arm-trusted-firmware deb misc optional arch=all

Package: arm-trusted-firmware
Version: 2.8.0+dfsg-1
Checksums-Sha256:
 9724f19432f9e6565dc0d9a1a4a472596f342d3b8f85a9b78515143079fbf33d 1662 arm-trusted-firmware_2.8.0+dfsg-1.dsc
";

    /// An archive answering from recorded `apt-cache` output. `content` gives the bytes
    /// each downloadable file has; a name absent from it is a 404.
    struct Recorded {
        madison: BTreeMap<&'static str, &'static str>,
        /// What `madison` said before the lists were refreshed (stale lists), if different.
        stale: BTreeMap<&'static str, &'static str>,
        content: BTreeMap<String, Vec<u8>>,
        refreshed: bool,
        fetches: Vec<String>,
    }

    fn sha(b: &[u8]) -> String {
        crate::step::hex(&Sha256::digest(b))
    }

    impl Recorded {
        fn new() -> Self {
            let content: BTreeMap<String, Vec<u8>> = [
                ("libc6_2.41-12+deb13u5_arm64.deb", "libc6 u5"),
                (
                    "zlib1g_1%3a1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb",
                    "zlib u1",
                ),
                (
                    "linux-image-6.1.0-50-arm64_6.1.176-1_arm64.deb",
                    "kernel 50",
                ),
                ("arm-trusted-firmware_2.12.1+dfsg-1.dsc", "dsc"),
                ("arm-trusted-firmware_2.12.1+dfsg.orig.tar.xz", "orig"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
            Self {
                madison: [
                    ("libc6", MADISON_LIBC6),
                    ("zlib1g", MADISON_ZLIB),
                    ("libssl3t64", MADISON_SSL),
                    ("linux-image-arm64", MADISON_META),
                    ("linux-image-6.1.0-50-arm64", MADISON_K50),
                    ("arm-trusted-firmware", MADISON_TFA),
                ]
                .into(),
                stale: BTreeMap::new(),
                content,
                refreshed: false,
                fetches: Vec::new(),
            }
        }
        fn real_sha(&self, file: &str) -> String {
            sha(&self.content[file])
        }
        fn text(&self, t: &str) -> String {
            let mut t = t.to_string();
            for (name, k) in [
                ("libc6_2.41-12+deb13u5_arm64.deb", "SHA_LIBC6"),
                (
                    "zlib1g_1%3a1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb",
                    "SHA_ZLIB",
                ),
                ("linux-image-6.1.0-50-arm64_6.1.176-1_arm64.deb", "SHA_K50"),
                ("arm-trusted-firmware_2.12.1+dfsg-1.dsc", "SHA_DSC"),
                ("arm-trusted-firmware_2.12.1+dfsg.orig.tar.xz", "SHA_ORIG"),
            ] {
                t = t.replace(k, &self.real_sha(name));
            }
            t
        }
    }

    impl Archive for Recorded {
        fn offers(&mut self, kind: Kind, name: &str, suite: &str) -> Result<Vec<String>> {
            let text = match (self.refreshed, self.stale.get(name)) {
                (false, Some(t)) => t,
                _ => self.madison.get(name).copied().unwrap_or(""),
            };
            Ok(apt::madison_versions(text, kind, name, suite))
        }
        fn index_files(&mut self, kind: Kind, name: &str, version: &str) -> Result<Vec<FileHash>> {
            match kind {
                Kind::Binary => apt::binary_files(&self.text(SHOW), name, version),
                Kind::Source => apt::source_files(&self.text(SHOWSRC_TFA), name, version),
            }
            .context("not in the index")
        }
        fn depends(&mut self, name: &str, version: &str) -> Result<String> {
            apt::stanzas(SHOW)
                .into_iter()
                .find(|s| {
                    apt::field(s, "Package") == Some(name)
                        && apt::field(s, "Version") == Some(version)
                })
                .and_then(|s| apt::field(&s, "Depends").map(str::to_string))
                .context("no Depends")
        }
        fn fetch(&mut self, kind: Kind, name: &str, version: &str, into: &Path) -> Result<()> {
            self.fetches.push(format!("{name}={version}"));
            let files: Vec<String> = match kind {
                Kind::Binary => vec![format!("{name}_{}_arm64.deb", version.replace(':', "%3a"))],
                Kind::Source => self
                    .content
                    .keys()
                    .filter(|k| k.starts_with(&format!("{name}_")))
                    .cloned()
                    .collect(),
            };
            for f in files {
                let bytes = self
                    .content
                    .get(&f)
                    .with_context(|| format!("404 Not Found: {f}"))?;
                std::fs::write(into.join(&f), bytes)?;
            }
            Ok(())
        }
        fn refresh(&mut self) -> Result<bool> {
            Ok(!std::mem::replace(&mut self.refreshed, true))
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moat-resolve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn want(id: &str, what: What, suite: &str, c: &str) -> Want {
        Want {
            id: id.into(),
            what,
            suite: suite.into(),
            constraint: c.into(),
            why: None,
        }
    }

    fn libc6() -> Want {
        want(
            "userspace/libc6",
            What::Deb("libc6".into()),
            "trixie",
            "2.41",
        )
    }

    fn entry(id: &str, package: &str, version: &str, files: &[(&str, String)]) -> Entry {
        Entry {
            id: id.into(),
            package: package.into(),
            version: version.into(),
            suite: "trixie".into(),
            resolved: "2026-11-20".into(),
            files: files
                .iter()
                .map(|(n, s)| FileHash {
                    name: n.to_string(),
                    sha256: s.clone(),
                })
                .collect(),
        }
    }

    fn resolver(name: &str, entries: Vec<Entry>, locked: bool) -> Resolver<Recorded> {
        let mut lock = Lock::default();
        for e in entries {
            lock.entries.insert(e.id.clone(), e);
        }
        Resolver::new(
            Recorded::new(),
            lock,
            &scratch(name),
            locked,
            vec!["bookworm".into(), "trixie".into()],
        )
    }

    fn locked_u5(a: &Recorded) -> Entry {
        let f = "libc6_2.41-12+deb13u5_arm64.deb";
        entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u5",
            &[(f, a.real_sha(f))],
        )
    }

    #[test]
    fn a_locked_version_present_is_downloaded_then_reused_from_the_cache() {
        let a = Recorded::new();
        let e = locked_u5(&a);
        let mut r = resolver("present", vec![e], false);
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.origin, Origin::Archive);
        assert_eq!(got.version, "2.41-12+deb13u5");
        assert_eq!(std::fs::read(got.path()).unwrap(), b"libc6 u5");
        assert_eq!(got.warning, None);
        // A second resolver over the same cache: the file matches the lock, no archive.
        let mut again = Resolver::new(
            Recorded::new(),
            r.lock.clone(),
            &r.cache,
            true,
            r.suites.clone(),
        );
        let got2 = again.resolve(&libc6()).unwrap();
        assert_eq!(got2.origin, Origin::Cache);
        assert!(again.archive.fetches.is_empty());
        assert_eq!(got2.key(), got.key());
    }

    #[test]
    fn a_locked_version_gone_falls_back_to_the_newest_in_the_suite_with_one_warning() {
        let e = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u4",
            &[("libc6_2.41-12+deb13u4_arm64.deb", "11".repeat(32))],
        );
        let mut r = resolver("gone", vec![e], false);
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.version, "2.41-12+deb13u5");
        assert_eq!(got.suite, "trixie");
        assert_eq!(
            got.origin,
            Origin::Fallback {
                locked: Some("2.41-12+deb13u4".into())
            }
        );
        assert_eq!(
            got.warning.as_deref(),
            Some(
                "libc6 2.41-12+deb13u4 (locked) is no longer in the archive; using \
                 2.41-12+deb13u5 (same suite, satisfies 2.41); `cargo xtask stack update` \
                 records it"
            )
        );
        // Not offered was believed only after a refresh.
        assert!(r.archive.refreshed);
        assert!(got
            .record()
            .contains("FALLBACK from locked 2.41-12+deb13u4"));
        // Asked again in the same run: no second download, no second warning to print.
        let n = r.archive.fetches.len();
        r.resolve(&libc6()).unwrap();
        assert_eq!(r.archive.fetches.len(), n);
        let used = r.take_used();
        assert_eq!(used.len(), 2);
        assert_eq!(record_text(&used).lines().count(), 3);
        // The cache key follows the bytes, not the lock's text.
        assert!(got
            .key()
            .contains(&r.archive.real_sha("libc6_2.41-12+deb13u5_arm64.deb")));
    }

    #[test]
    fn a_version_edited_by_hand_is_not_vouched_for_by_the_old_files() {
        // The lock's version names a release the archive lacks, but its files (and hashes)
        // are still those of 2.41-12+deb13u5, which the cache holds: they must not be used
        // under the new name. Exactly one warning, and the fallback is recorded.
        let real = resolver("edited-cache", vec![], false)
            .archive
            .real_sha("libc6_2.41-12+deb13u5_arm64.deb");
        let edited = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u3",
            &[("libc6_2.41-12+deb13u5_arm64.deb", real.clone())],
        );
        let mut r = resolver("edited", vec![edited.clone()], false);
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.version, "2.41-12+deb13u5");
        assert_eq!(
            got.origin,
            Origin::Fallback {
                locked: Some("2.41-12+deb13u3".into())
            }
        );
        assert!(got
            .warning
            .as_deref()
            .is_some_and(|w| w.starts_with("libc6 2.41-12+deb13u3 (locked) is no longer")));

        // The edited version exists: it is fetched and checked against the index, warned.
        let other = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u5",
            &[("libc6_2.41-12+deb13u4_arm64.deb", "11".repeat(32))],
        );
        let mut r = resolver("edited-offered", vec![other], false);
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.version, "2.41-12+deb13u5");
        assert_eq!(got.files[0].name, "libc6_2.41-12+deb13u5_arm64.deb");
        assert_eq!(got.files[0].sha256, real);
        assert!(got
            .warning
            .as_deref()
            .is_some_and(|w| w.contains("lists files of another version")));

        // --locked cannot verify such an entry.
        let mut r = resolver("edited-locked", vec![edited], true);
        let err = format!("{:#}", r.resolve(&libc6()).unwrap_err());
        assert!(
            err.contains("libc6 2.41-12+deb13u3 (locked for userspace/libc6) is no longer"),
            "{err}"
        );
        let mut r = resolver(
            "edited-offered-locked",
            vec![entry(
                "userspace/libc6",
                "libc6",
                "2.41-12+deb13u5",
                &[("libc6_2.41-12+deb13u4_arm64.deb", "11".repeat(32))],
            )],
            true,
        );
        let err = format!("{:#}", r.resolve(&libc6()).unwrap_err());
        assert!(
            err.contains("lists files of another version") && err.contains("--locked"),
            "{err}"
        );
    }

    #[test]
    fn file_names_carry_the_version_without_its_epoch() {
        let zlib = entry(
            "userspace/zlib1g",
            "zlib1g",
            "1:1.3.dfsg+really1.3.1-1+deb13u1",
            &[(
                "zlib1g_1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb",
                String::new(),
            )],
        );
        assert!(files_name_version(Kind::Binary, &zlib));
        let tfa = entry(
            "tfa/arm-trusted-firmware",
            "arm-trusted-firmware",
            "2.12.1+dfsg-1",
            &[("arm-trusted-firmware_2.12.1+dfsg-1.dsc", String::new())],
        );
        assert!(files_name_version(Kind::Source, &tfa));
        assert!(!files_name_version(Kind::Binary, &tfa));
        let mut moved = zlib.clone();
        moved.version = "1:1.3.dfsg+really1.3.1-1+deb13u2".into();
        assert!(!files_name_version(Kind::Binary, &moved));
    }

    #[test]
    fn with_locked_a_gone_version_is_an_error_that_names_the_package() {
        let e = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u4",
            &[("libc6_2.41-12+deb13u4_arm64.deb", "11".repeat(32))],
        );
        let mut r = resolver("locked", vec![e], true);
        let err = format!("{:#}", r.resolve(&libc6()).unwrap_err());
        assert!(err.contains("libc6 2.41-12+deb13u4"), "{err}");
        assert!(err.contains("--locked"), "{err}");
        // No lock entry at all is an error too.
        let mut r = resolver("locked-none", vec![], true);
        let err = format!("{:#}", r.resolve(&libc6()).unwrap_err());
        assert!(
            err.contains("userspace/libc6") && err.contains("stack update"),
            "{err}"
        );
    }

    #[test]
    fn stale_lists_are_refreshed_before_a_fallback() {
        let mut a = Recorded::new();
        a.stale.insert(
            "libc6",
            "libc6 | 2.41-12+deb13u4 | http://m/debian trixie/main arm64 Packages\n",
        );
        let e = locked_u5(&a);
        let mut lock = Lock::default();
        lock.entries.insert(e.id.clone(), e);
        let mut r = Resolver::new(a, lock, &scratch("stale"), false, vec!["trixie".into()]);
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.origin, Origin::Archive);
        assert_eq!(got.version, "2.41-12+deb13u5");
    }

    #[test]
    fn an_epoch_and_a_tilde_version_resolve() {
        let z = want(
            "userspace/zlib1g",
            What::Deb("zlib1g".into()),
            "trixie",
            "1:1.3",
        );
        let gone = entry(
            "userspace/zlib1g",
            "zlib1g",
            "1:1.3.dfsg+really1.3.1-1+b1",
            &[(
                "zlib1g_1.3.dfsg+really1.3.1-1+b1_arm64.deb",
                "22".repeat(32),
            )],
        );
        let mut r = resolver("epoch", vec![gone], false);
        let got = r.resolve(&z).unwrap();
        assert_eq!(got.version, "1:1.3.dfsg+really1.3.1-1+deb13u1");
        assert_eq!(
            got.files[0].name,
            "zlib1g_1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb"
        );
        assert_eq!(std::fs::read(got.path()).unwrap(), b"zlib u1");
        // `~` sorts before the release it precedes: 3.5.9-1~deb13u1 satisfies 3.5 and is
        // newer than the 3.5.7 the lock named.
        let ssl = want(
            "userspace/libssl3t64",
            What::Deb("libssl3t64".into()),
            "trixie",
            "3.5",
        );
        let offered = r.candidates(&ssl, Some("3.5.7-1~deb13u2")).unwrap();
        assert_eq!(
            offered,
            [("libssl3t64".to_string(), "3.5.9-1~deb13u1".to_string())]
        );
    }

    #[test]
    fn nothing_satisfying_is_an_error_naming_package_constraint_and_offers() {
        let w = want(
            "userspace/libc6",
            What::Deb("libc6".into()),
            "trixie",
            "2.42",
        );
        let mut r = resolver("nothing", vec![], false);
        let err = format!("{:#}", r.resolve(&w).unwrap_err());
        assert!(err.contains("libc6"), "{err}");
        assert!(err.contains("satisfies version 2.42"), "{err}");
        assert!(err.contains("trixie: 2.41-12+deb13u5"), "{err}");
        assert!(err.contains("bookworm: 2.36-9+deb12u14"), "{err}");
        // Never a silent pick from another suite: bookworm has a 2.36, trixie does not.
        let w = want(
            "userspace/libc6",
            What::Deb("libc6".into()),
            "trixie",
            "2.36",
        );
        assert!(r.resolve(&w).is_err());
    }

    #[test]
    fn a_hash_mismatch_is_refused_and_nothing_is_kept() {
        let f = "libc6_2.41-12+deb13u5_arm64.deb";
        let e = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u5",
            &[(f, "33".repeat(32))],
        );
        let mut r = resolver("mismatch", vec![e], false);
        let err = format!("{:#}", r.resolve(&libc6()).unwrap_err());
        assert!(err.contains("refusing"), "{err}");
        assert!(err.contains(&"33".repeat(32)), "{err}");
        assert!(!r.cache.join("debs").join(f).exists());
        // Not even the download directory stays behind.
        let leftovers: Vec<_> = std::fs::read_dir(&r.cache).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_corrupt_cached_file_is_fetched_again() {
        let a = Recorded::new();
        let e = locked_u5(&a);
        let mut r = resolver("corrupt", vec![e], false);
        std::fs::create_dir_all(r.cache.join("debs")).unwrap();
        std::fs::write(r.cache.join("debs/libc6_2.41-12+deb13u5_arm64.deb"), "bad").unwrap();
        let got = r.resolve(&libc6()).unwrap();
        assert_eq!(got.origin, Origin::Archive);
        assert_eq!(std::fs::read(got.path()).unwrap(), b"libc6 u5");
    }

    #[test]
    fn a_kernel_follows_its_metapackage_within_the_series() {
        let k = want(
            "kernel/6.1",
            What::Kernel {
                metapackage: "linux-image-arm64".into(),
            },
            "bookworm",
            "6.1",
        );
        let mut gone = entry(
            "kernel/6.1",
            "linux-image-6.1.0-49-arm64",
            "6.1.170-3",
            &[(
                "linux-image-6.1.0-49-arm64_6.1.170-3_arm64.deb",
                "44".repeat(32),
            )],
        );
        gone.suite = "bookworm".into();
        let mut r = resolver("kernel", vec![gone], false);
        let got = r.resolve(&k).unwrap();
        assert_eq!(got.package, "linux-image-6.1.0-50-arm64");
        assert_eq!(got.version, "6.1.176-1");
        let w = got.warning.unwrap();
        assert!(
            w.starts_with(
                "linux-image-6.1.0-49-arm64 6.1.170-3 (locked) is no longer in the archive; \
                 using linux-image-6.1.0-50-arm64 6.1.176-1 (bookworm's linux-image-arm64, \
                 satisfies 6.1)"
            ),
            "{w}"
        );
        // trixie's 6.12 is never taken for the 6.1 series.
        assert_eq!(
            kernel_dependency("linux-image-6.12.117+deb13-arm64 (= 6.12.117-1)"),
            Some((
                "linux-image-6.12.117+deb13-arm64".into(),
                Some("6.12.117-1".into())
            ))
        );
        assert_eq!(kernel_dependency("kmod, initramfs-tools"), None);
    }

    #[test]
    fn a_source_package_is_verified_file_by_file() {
        let w = want(
            "tfa/arm-trusted-firmware",
            What::Dsc("arm-trusted-firmware".into()),
            "trixie",
            "2.12.1",
        );
        let a = Recorded::new();
        let files = apt::source_files(
            &a.text(SHOWSRC_TFA),
            "arm-trusted-firmware",
            "2.12.1+dfsg-1",
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        let mut e = entry(
            "tfa/arm-trusted-firmware",
            "arm-trusted-firmware",
            "2.12.1+dfsg-1",
            &[],
        );
        e.files = files;
        let mut r = resolver("source", vec![e.clone()], false);
        let got = r.resolve(&w).unwrap();
        assert_eq!(got.origin, Origin::Archive);
        assert!(got.dir.ends_with("src/arm-trusted-firmware_2.12.1+dfsg-1"));
        assert_eq!(
            got.path().file_name().unwrap(),
            "arm-trusted-firmware_2.12.1+dfsg-1.dsc"
        );
        // One tarball's hash wrong in the lock: refused.
        e.files[1].sha256 = "55".repeat(32);
        let mut bad = resolver("source-bad", vec![e], false);
        assert!(format!("{:#}", bad.resolve(&w).unwrap_err()).contains("refusing"));
    }

    #[test]
    fn update_takes_the_newest_and_keeps_unchanged_entries() {
        let a = Recorded::new();
        let e = locked_u5(&a);
        let mut r = resolver("update", vec![e.clone()], false);
        assert_eq!(r.latest(&libc6(), "2026-12-03").unwrap(), e);
        let old = entry(
            "userspace/libc6",
            "libc6",
            "2.41-12+deb13u4",
            &[("libc6_2.41-12+deb13u4_arm64.deb", "11".repeat(32))],
        );
        let mut r = resolver("update2", vec![old], false);
        assert!(!r.still_offered(&libc6()).unwrap());
        let new = r.latest(&libc6(), "2026-12-03").unwrap();
        assert_eq!(new.version, "2.41-12+deb13u5");
        assert_eq!(new.resolved, "2026-12-03");
        assert_eq!(
            new.files[0].sha256,
            r.archive.real_sha("libc6_2.41-12+deb13u5_arm64.deb")
        );
    }
}
