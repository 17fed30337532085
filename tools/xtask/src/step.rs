// SPDX-License-Identifier: MIT OR Apache-2.0
//! Cached build steps.
//!
//! A step's output directory is `<cache>/build/<kind>-<digest>`, where the digest covers
//! every input that can change the output (resolved package versions and hashes, flags,
//! input file contents). A step is built into `<dir>.partial` and renamed when it succeeds,
//! so an interrupted build never looks complete; a failed one removes its `.partial`. Each step prints its progress and time; a failing step prints its log path
//! and the log's last lines.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// How many log lines a failed step prints.
const FAILED_LOG_TAIL: usize = 25;

/// The inputs that determine a cached artefact.
#[derive(Clone, Debug)]
pub struct Key {
    kind: String,
    parts: Vec<(String, String)>,
}

impl Key {
    /// A key for artefacts of `kind` (used as the directory prefix).
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            parts: Vec::new(),
        }
    }

    /// Add a named input value.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.parts.push((name.to_string(), value.into()));
        self
    }

    /// Add a file's content (by its SHA-256) as an input.
    pub fn with_file(self, name: &str, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(self.with(name, hex(&Sha256::digest(&bytes))))
    }

    /// The text that is hashed, also written next to the artefact as `key.txt`.
    pub fn describe(&self) -> String {
        let mut s = format!("kind = {}\n", self.kind);
        for (k, v) in &self.parts {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }

    /// 16 hex digits of the SHA-256 of `describe()`.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.describe().as_bytes()))[..16].to_string()
    }

    /// `<kind>-<digest>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.kind, self.digest())
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A step's log file: every command it runs and all their output.
pub struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    /// Create (truncate) a log at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Open a log at `path` for appending (created when missing).
    pub fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a note line into the log.
    pub fn note(&mut self, text: &str) -> Result<()> {
        writeln!(self.file, "# {text}")?;
        Ok(())
    }

    /// Run `cmd` with its output appended to the log; fail if it exits non-zero.
    pub fn run(&mut self, cmd: &mut Command) -> Result<()> {
        writeln!(self.file, "$ {}", show(cmd))?;
        self.file.flush()?;
        let out = self.file.try_clone()?;
        let err = self.file.try_clone()?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .with_context(|| format!("starting {}", show(cmd)))?;
        if !status.success() {
            bail!("`{}` failed ({status})", show(cmd));
        }
        Ok(())
    }
}

/// A command as a shell-like line, for logs and messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// The last `n` lines of a file (lossy UTF-8), for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Return the cached artefact directory for `key`, building it with `build` if needed.
///
/// `build` gets an empty directory to fill and a log. On failure the log's path and tail are
/// printed and the partial output is removed; only the log stays.
pub fn cached(
    cache: &Path,
    key: &Key,
    title: &str,
    build: impl FnOnce(&Path, &mut Log) -> Result<()>,
) -> Result<PathBuf> {
    let base = cache.join("build");
    std::fs::create_dir_all(&base)?;
    let dir = base.join(key.dir_name());
    if dir.join(".complete").exists() {
        println!("  ✓ {title}: cached ({})", dir.display());
        return Ok(dir);
    }
    let partial = base.join(format!("{}.partial", key.dir_name()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&partial)?;
    let mut log = Log::create(&base.join(format!("{}.log", key.dir_name())))?;
    log.note(&format!("step: {title}"))?;
    for line in key.describe().lines() {
        log.note(line)?;
    }
    println!("==> {title} ...");
    let start = Instant::now();
    match build(&partial, &mut log) {
        Ok(()) => {
            std::fs::write(partial.join("key.txt"), key.describe())?;
            std::fs::write(partial.join(".complete"), "")?;
            std::fs::rename(&partial, &dir)?;
            println!(
                "  ✓ {title}: built in {:.1}s",
                start.elapsed().as_secs_f64()
            );
            Ok(dir)
        }
        Err(e) => {
            // Nothing of a failed step stays behind but its log.
            let _ = std::fs::remove_dir_all(&partial);
            eprintln!(
                "  ✗ {title}: failed after {:.1}s\n    log: {}\n    last lines:\n{}",
                start.elapsed().as_secs_f64(),
                log.path().display(),
                indent(&tail(log.path(), FAILED_LOG_TAIL), "      ")
            );
            Err(e.context(format!("{title} failed; see {}", log.path().display())))
        }
    }
}

/// Run a command with the terminal attached, showing its title and time.
pub fn run_visible(title: &str, cmd: &mut Command) -> Result<()> {
    println!("==> {title}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{title}: `{}` failed ({status})", show(cmd));
    }
    println!("  ✓ {title} ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moat-xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_changed_input_changes_the_key() {
        let a = Key::new("tfa")
            .with("version", "2.12.1")
            .with("flags", "SPD=opteed");
        let b = Key::new("tfa")
            .with("version", "2.12.1")
            .with("flags", "SPD=tspd");
        let a2 = Key::new("tfa")
            .with("version", "2.12.1")
            .with("flags", "SPD=opteed");
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a2.digest());
        assert!(a.dir_name().starts_with("tfa-"));
    }

    #[test]
    fn a_step_is_built_once_then_reused() {
        let cache = scratch("reuse");
        let key = Key::new("t").with("v", "1");
        let mut builds = 0;
        for _ in 0..2 {
            let dir = cached(&cache, &key, "test step", |out, _| {
                builds += 1;
                std::fs::write(out.join("artefact"), "x")?;
                Ok(())
            })
            .unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("artefact")).unwrap(), "x");
        }
        assert_eq!(builds, 1);
    }

    #[test]
    fn a_failed_step_leaves_nothing_complete_and_keeps_its_log() {
        let cache = scratch("fail");
        let key = Key::new("t").with("v", "2");
        let err = cached(&cache, &key, "failing step", |_, log| {
            log.run(Command::new("sh").args(["-c", "echo boom-output; exit 3"]))
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("failed"));
        let logp = cache.join("build").join(format!("{}.log", key.dir_name()));
        assert!(tail(&logp, 5).contains("boom-output"));
        assert!(!cache
            .join("build")
            .join(key.dir_name())
            .join(".complete")
            .exists());
        assert!(!cache
            .join("build")
            .join(format!("{}.partial", key.dir_name()))
            .exists());
        // A retry runs the build again.
        let dir = cached(&cache, &key, "retry", |out, _| {
            Ok(std::fs::write(out.join("ok"), "")?)
        });
        assert!(dir.unwrap().join("ok").exists());
    }
}
