// SPDX-License-Identifier: MIT OR Apache-2.0
//! A writer for the cpio "newc" format, the format of Linux's initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Entries are written with uid/gid 0 and mtime 0, in sorted order, so the same tree always
//! gives the same bytes. Linux accepts several archives concatenated, which is how
//! `--run CMD` adds one small file to a cached initramfs without rebuilding it.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes a newc archive to `W`.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            bail!("bad cpio entry name {name:?}");
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let namesize = name.len() + 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, data.len(), 0, 0, 0, 0, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }

    /// A directory.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.entry(name, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Every file, directory and symlink under `root`, in sorted order.
    pub fn tree(&mut self, root: &Path) -> Result<()> {
        self.walk(root, root)
    }

    fn walk(&mut self, root: &Path, dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let perm = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                self.symlink(&rel, &target.to_string_lossy())?;
            } else if meta.is_dir() {
                self.dir(&rel, perm)?;
                self.walk(root, &path)?;
            } else if meta.is_file() {
                let data = std::fs::read(&path)?;
                self.file(&rel, perm, &data)?;
            } else {
                bail!("{} is neither file, directory nor symlink", path.display());
            }
        }
        Ok(())
    }

    /// Write the trailer and return the writer.
    pub fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a newc archive back into (name, mode, data) triples.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let mode = field(1);
            let size = field(6) as usize;
            let namesize = field(11) as usize;
            let name = String::from_utf8(bytes[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (off + 110 + namesize).div_ceil(4) * 4 - off;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (off + data_start + size).div_ceil(4) * 4 - off;
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, data));
            bytes = &bytes[next..];
            off += next;
        }
    }

    #[test]
    fn entries_round_trip_with_alignment() {
        let mut w = Writer::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/moat", 0o644, b"xtest 1001\n").unwrap();
        w.symlink("lib", "usr/lib").unwrap();
        w.file("odd", 0o600, b"abcde").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let got = parse(&bytes);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("etc".into(), S_IFDIR | 0o755, vec![]));
        assert_eq!(
            got[1],
            ("etc/moat".into(), S_IFREG | 0o644, b"xtest 1001\n".to_vec())
        );
        assert_eq!(got[2], ("lib".into(), S_IFLNK | 0o777, b"usr/lib".to_vec()));
        assert_eq!(got[3].2, b"abcde");
    }

    #[test]
    fn absolute_or_empty_names_are_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("/etc/passwd", 0o644, b"").is_err());
        assert!(w.dir("", 0o755).is_err());
    }

    #[test]
    fn a_tree_is_archived_in_sorted_order() {
        let d = std::env::temp_dir().join(format!("moat-cpio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("b/c")).unwrap();
        std::fs::write(d.join("b/c/f"), "1").unwrap();
        std::fs::write(d.join("a"), "2").unwrap();
        std::os::unix::fs::symlink("b", d.join("z")).unwrap();
        let mut w = Writer::new(Vec::new());
        w.tree(&d).unwrap();
        let names: Vec<String> = parse(&w.finish().unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["a", "b", "b/c", "b/c/f", "z"]);
    }
}
