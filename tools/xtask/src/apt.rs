// SPDX-License-Identifier: MIT OR Apache-2.0
//! A private apt configuration for arm64 and trixie packages.
//!
//! The machine's `/etc/apt` is never edited and nothing is installed: apt runs with its own
//! sources list, state and cache directories under `<cache>/apt`, and only *downloads*
//! binary packages (`apt-get download`) and source packages (`apt-get source
//! --download-only`). The mirror URIs are read from the machine's own apt sources, so no
//! registry host is written in the repository.

use crate::step::Log;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    updated: bool,
}

impl PrivateApt {
    /// Set up `<cache>/apt` for `suites`, with the mirror read from the machine.
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
        Ok(Self {
            root,
            updated: false,
        })
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

    /// `apt-get update` on the private lists, once per xtask run and only when needed.
    fn update(&mut self, log: &mut Log) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        log.run(self.command("apt-get").args(["-q", "update"]))?;
        std::fs::write(self.root.join("state/updated"), "")?;
        self.updated = true;
        Ok(())
    }

    fn ensure_lists(&mut self, log: &mut Log) -> Result<()> {
        if self.root.join("state/updated").exists() {
            return Ok(());
        }
        self.update(log)
    }

    /// Download the binary package `name=version` into `dir` (a no-op when it is there) and
    /// return the `.deb`'s path.
    pub fn download(
        &mut self,
        dir: &Path,
        name: &str,
        version: &str,
        log: &mut Log,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(dir.join("index"))?;
        let index = dir
            .join("index")
            .join(format!("{name}={}", version.replace(':', "%3a")));
        if let Ok(file) = std::fs::read_to_string(&index) {
            let deb = dir.join(file.trim());
            if deb.exists() {
                return Ok(deb);
            }
        }
        self.ensure_lists(log)?;
        let before = list_debs(dir)?;
        let spec = format!("{name}={version}");
        let mut attempt = self.command("apt-get");
        attempt.current_dir(dir).args(["-q", "download", &spec]);
        if log.run(&mut attempt).is_err() {
            // The lists may be stale: refresh once and retry before giving up.
            self.update(log)?;
            let mut retry = self.command("apt-get");
            retry.current_dir(dir).args(["-q", "download", &spec]);
            if let Err(e) = log.run(&mut retry) {
                let avail = self.madison(name);
                bail!(
                    "{e}\n    qemu/stack.toml pins {spec}; the archive offers:\n{avail}    \
                     update the pin in qemu/stack.toml if the archive moved on"
                );
            }
        }
        let after = list_debs(dir)?;
        let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
        let file = match new.as_slice() {
            [one] => (*one).clone(),
            _ => {
                // Already present from an earlier run without an index entry: find it by name.
                let prefix = format!("{name}_");
                after
                    .iter()
                    .find(|f| f.starts_with(&prefix) && f.contains(&version.replace(':', "%3a")))
                    .cloned()
                    .with_context(|| format!("apt-get download {spec} produced no .deb"))?
            }
        };
        std::fs::write(&index, &file)?;
        Ok(dir.join(file))
    }

    /// Download and unpack the source package `name=version` into `<dir>/tree` (Debian's
    /// patches applied by dpkg-source), unless it is already there.
    pub fn source(
        &mut self,
        dir: &Path,
        name: &str,
        version: &str,
        log: &mut Log,
    ) -> Result<PathBuf> {
        let tree = dir.join("tree");
        if dir.join(".complete").exists() {
            return Ok(tree);
        }
        std::fs::create_dir_all(dir)?;
        self.ensure_lists(log)?;
        let spec = format!("{name}={version}");
        log.run(self.command("apt-get").current_dir(dir).args([
            "-q",
            "source",
            "--download-only",
            &spec,
        ]))?;
        let dsc = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "dsc"))
            .context("apt-get source produced no .dsc")?;
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        log.run(
            Command::new("dpkg-source")
                .current_dir(dir)
                .arg("-x")
                .arg(&dsc)
                .arg(&tree),
        )?;
        std::fs::write(dir.join(".complete"), "")?;
        Ok(tree)
    }

    fn madison(&self, name: &str) -> String {
        self.command("apt-cache")
            .args(["madison", name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| format!("      {l}\n"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn list_debs(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") {
            v.push(name);
        }
    }
    Ok(v)
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
