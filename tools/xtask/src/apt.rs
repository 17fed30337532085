// SPDX-License-Identifier: MIT OR Apache-2.0
//! A private apt configuration for arm64 and trixie packages.
//!
//! The machine's `/etc/apt` is never edited and nothing is installed: apt runs with its own
//! sources list, state and cache directories under `<cache>/apt`, and only *downloads*
//! binary packages (`apt-get download`) and source packages (`apt-get source
//! --download-only`), and answers the resolver's questions ([`Archive`]) from
//! `apt-cache madison`, `show` and `showsrc`. The mirror URIs are read from the machine's own apt sources, so no
//! registry host is written in the repository.

use crate::lock::FileHash;
use crate::resolve::{Archive, Kind};
use crate::step::{self, Log};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

/// The keyring that signs Debian's archive (it also holds trixie's keys).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One apt source entry read from the machine's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub uri: String,
    pub suites: Vec<String>,
}

/// Parse one-line-style `sources.list` text (`deb [opts] URI suite comp...`).
pub fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(SourceEntry {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

/// Parse deb822-style `.sources` text (stanzas with `Types:`, `URIs:`, `Suites:`).
pub fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let vals: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = vals,
                "uris" => uris = vals,
                "suites" => suites = vals,
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for uri in uris {
                out.push(SourceEntry {
                    uri,
                    suites: suites.clone(),
                });
            }
        }
    }
    out
}

/// The Debian archive mirror: the first entry serving a plain release suite (no `-security`,
/// `-updates`, … suffix). `$MOAT_APT_MIRROR` overrides it.
pub fn pick_mirror(entries: &[SourceEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.suites
                .iter()
                .any(|s| !s.contains('-') && !s.contains('/'))
        })
        .map(|e| e.uri.trim_end_matches('/').to_string())
}

/// Read the machine's apt sources and pick the archive mirror.
pub fn machine_mirror() -> Result<String> {
    if let Ok(m) = std::env::var("MOAT_APT_MIRROR") {
        return Ok(m);
    }
    let mut entries = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        entries.extend(parse_one_line(&t));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            match f.extension().and_then(|e| e.to_str()) {
                Some("sources") => entries.extend(parse_deb822(&text)),
                Some("list") => entries.extend(parse_one_line(&text)),
                _ => {}
            }
        }
    }
    pick_mirror(&entries).context(
        "no Debian archive found in /etc/apt/sources.list{,.d}; set MOAT_APT_MIRROR to a mirror URI",
    )
}

/// The private sources list for `suites` on `mirror`.
pub fn sources_list(mirror: &str, suites: &[String]) -> String {
    let mut s = String::new();
    for suite in suites {
        s.push_str(&format!(
            "deb [arch=arm64 signed-by={KEYRING}] {mirror} {suite} main\n"
        ));
        s.push_str(&format!(
            "deb-src [signed-by={KEYRING}] {mirror} {suite} main\n"
        ));
    }
    s
}

/// apt with a private configuration rooted in the cache.
pub struct PrivateApt {
    root: PathBuf,
    log: Log,
}

/// The package lists were refreshed (`apt-get update`) by this xtask process: at most once.
static REFRESHED: AtomicBool = AtomicBool::new(false);

impl PrivateApt {
    /// Set up `<cache>/apt` for `suites`, with the mirror read from the machine. Every apt
    /// command is appended to `<cache>/apt/apt.log`.
    pub fn new(cache: &Path, suites: &[String]) -> Result<Self> {
        let root = cache.join("apt");
        for d in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "state/lists/partial",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::create_dir_all(root.join("cache/archives/partial"))?;
        let list = sources_list(&machine_mirror()?, suites);
        let path = root.join("etc/sources.list");
        let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(list.as_str());
        if changed {
            std::fs::write(&path, &list)?;
            // Stale lists for other sources must not satisfy a lookup.
            let _ = std::fs::remove_file(root.join("state/updated"));
        }
        let log = Log::append(&root.join("apt.log"))?;
        Ok(Self { root, log })
    }

    /// The `-o` options that make apt private.
    pub fn options(&self) -> Vec<String> {
        let r = self.root.display();
        vec![
            format!("Dir::Etc::SourceList={r}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={r}/etc/sources.list.d"),
            format!("Dir::Etc::Preferences={r}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={r}/etc/preferences.d"),
            format!("Dir::State={r}/state"),
            format!("Dir::Cache={r}/cache"),
            "Dir::State::status=/dev/null".into(),
            "APT::Architecture=arm64".into(),
            "APT::Architectures::=arm64".into(),
            "Debug::NoLocking=1".into(),
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c
    }

    fn update(&mut self) -> Result<()> {
        println!("==> refreshing the private package lists (apt-get update)");
        let mut cmd = self.command("apt-get");
        cmd.args(["-q", "update"]);
        self.log.run(&mut cmd).with_context(|| {
            format!(
                "apt-get update failed; see {} (is the archive reachable?)",
                self.log.path().display()
            )
        })?;
        std::fs::write(self.root.join("state/updated"), "")?;
        REFRESHED.store(true, AtomicOrdering::SeqCst);
        Ok(())
    }

    fn ensure_lists(&mut self) -> Result<()> {
        if self.root.join("state/updated").exists() {
            return Ok(());
        }
        self.update()
    }

    /// stdout of an apt query (`apt-cache ...`), which may legitimately print nothing.
    fn query(&mut self, args: &[&str]) -> Result<String> {
        self.ensure_lists()?;
        let mut cmd = self.command("apt-cache");
        cmd.args(args);
        let out = cmd
            .output()
            .with_context(|| format!("starting {}", step::show(&cmd)))?;
        self.log.note(&format!(
            "{} -> {} bytes",
            step::show(&cmd),
            out.stdout.len()
        ))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Archive for PrivateApt {
    fn offers(&mut self, kind: Kind, name: &str, suite: &str) -> Result<Vec<String>> {
        let text = self.query(&["madison", name])?;
        Ok(madison_versions(&text, kind, name, suite))
    }

    fn index_files(&mut self, kind: Kind, name: &str, version: &str) -> Result<Vec<FileHash>> {
        let files = match kind {
            Kind::Binary => {
                let text = self.query(&["show", &format!("{name}={version}")])?;
                binary_files(&text, name, version)
            }
            Kind::Source => {
                let text = self.query(&["showsrc", name])?;
                source_files(&text, name, version)
            }
        };
        files.with_context(|| format!("the archive's index has no files for {name} {version}"))
    }

    fn depends(&mut self, name: &str, version: &str) -> Result<String> {
        let text = self.query(&["show", &format!("{name}={version}")])?;
        stanzas(&text)
            .into_iter()
            .find(|s| field(s, "Package") == Some(name) && field(s, "Version") == Some(version))
            .and_then(|s| field(&s, "Depends").map(str::to_string))
            .with_context(|| format!("the archive's index has no Depends for {name} {version}"))
    }

    fn fetch(&mut self, kind: Kind, name: &str, version: &str, into: &Path) -> Result<()> {
        let spec = format!("{name}={version}");
        let mut cmd = self.command("apt-get");
        cmd.current_dir(into);
        match kind {
            Kind::Binary => cmd.args(["-q", "download", &spec]),
            Kind::Source => cmd.args(["-q", "source", "--download-only", &spec]),
        };
        let log = self.log.path().display().to_string();
        self.log
            .run(&mut cmd)
            .with_context(|| format!("apt's log: {log}"))
    }

    fn refresh(&mut self) -> Result<bool> {
        if REFRESHED.load(AtomicOrdering::SeqCst) {
            return Ok(false);
        }
        self.update()?;
        Ok(true)
    }
}

/// One line of `apt-cache madison`: `name | version | URI suite/component [arch] Packages|Sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadisonLine {
    pub name: String,
    pub version: String,
    pub suite: String,
    pub kind: Kind,
}

/// Parse `apt-cache madison` output; lines of another shape are skipped.
pub fn parse_madison(text: &str) -> Vec<MadisonLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, version, origin] = cols[..] else {
            continue;
        };
        let words: Vec<&str> = origin.split_whitespace().collect();
        let (Some(dist), Some(last)) = (words.get(1), words.last()) else {
            continue;
        };
        let kind = match *last {
            "Packages" => Kind::Binary,
            "Sources" => Kind::Source,
            _ => continue,
        };
        let suite = dist.split('/').next().unwrap_or(dist);
        out.push(MadisonLine {
            name: name.to_string(),
            version: version.to_string(),
            suite: suite.to_string(),
            kind,
        });
    }
    out
}

/// The versions of `name` of `kind` that `madison` lists in `suite`, deduplicated.
pub fn madison_versions(text: &str, kind: Kind, name: &str, suite: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for l in parse_madison(text) {
        if l.kind == kind && l.name == name && l.suite == suite && !v.contains(&l.version) {
            v.push(l.version);
        }
    }
    v
}

/// Split deb822-style control text (`apt-cache show`/`showsrc` output) into stanzas of
/// (field, value) pairs; continuation lines are appended to their field with a newline.
pub fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A field of a stanza.
pub fn field<'a>(stanza: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `.deb` of `name=version` in `apt-cache show` output: its file name and SHA-256.
pub fn binary_files(text: &str, name: &str, version: &str) -> Option<Vec<FileHash>> {
    let s = stanzas(text)
        .into_iter()
        .find(|s| field(s, "Package") == Some(name) && field(s, "Version") == Some(version))?;
    let file = field(&s, "Filename")?.rsplit('/').next()?.to_string();
    let sha = field(&s, "SHA256")?.to_string();
    Some(vec![FileHash {
        name: file,
        sha256: sha,
    }])
}

/// The files of source package `name=version` in `apt-cache showsrc` output (its
/// `Checksums-Sha256` lines: `sha256 size name`).
pub fn source_files(text: &str, name: &str, version: &str) -> Option<Vec<FileHash>> {
    let s = stanzas(text)
        .into_iter()
        .find(|s| field(s, "Package") == Some(name) && field(s, "Version") == Some(version))?;
    let files: Vec<FileHash> = field(&s, "Checksums-Sha256")?
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w[..] {
                [sha, _size, file] => Some(FileHash {
                    name: file.to_string(),
                    sha256: sha.to_string(),
                }),
                _ => None,
            }
        })
        .collect();
    (!files.is_empty()).then_some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources_are_read() {
        let text = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n\n\
                    Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        let e = parse_deb822(text);
        assert_eq!(e.len(), 2);
        assert_eq!(
            pick_mirror(&e).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_sources_are_read_with_options() {
        let text = "# deb http://old.example/debian buster main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n\
                    deb http://m.example/debian-security bookworm-security main\n";
        let e = parse_one_line(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].uri, "http://m.example/debian/");
        assert_eq!(pick_mirror(&e).as_deref(), Some("http://m.example/debian"));
    }

    #[test]
    fn security_only_sources_give_no_mirror() {
        let e = parse_one_line("deb http://m.example/debian-security bookworm-security main\n");
        assert_eq!(pick_mirror(&e), None);
    }

    #[test]
    fn the_private_list_is_arm64_binaries_plus_sources() {
        let s = sources_list(
            "http://m.example/debian",
            &["trixie".into(), "bookworm".into()],
        );
        assert!(s.contains("deb [arch=arm64 signed-by="));
        assert!(s.contains("http://m.example/debian trixie main"));
        assert_eq!(s.lines().filter(|l| l.starts_with("deb-src")).count(), 2);
    }
}
