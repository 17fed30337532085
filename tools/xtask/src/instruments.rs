// SPDX-License-Identifier: MIT OR Apache-2.0
//! The bench's instruments, built from `qemu/bench/` and cached like any other artefact.
//!
//! ```text
//!   qemu/bench/ta/       null TA   make + optee-os-dev's TA dev kit (plain build) ─► <uuid>.ta
//!                                  signed by the dev kit's sign_encrypt.py with its default
//!                                  key (RSA-PSS: a new salt, so new bytes, on every build;
//!                                  the cache keeps one signed TA per input)
//!   qemu/bench/client/   moat-bench  aarch64-linux-gnu-gcc -static ─► /usr/bin/moat-bench
//!   qemu/bench/plugin/   elcount   host gcc -shared ─► elcount.so, loaded by QEMU (-plugin)
//! ```
//!
//! The TA is built once, with the plain OP-TEE's dev kit, and the very same file is loaded
//! by all three configurations (the plain and the NS-virtualized OP-TEE verify it with the
//! same default key). Each key holds the resolved optee-os/optee-os-dev packages (version
//! and SHA-256), the sources' hashes and the compiler's version.

use crate::profile::Ctx;
use crate::stack::OpteeFlavour;
use crate::step::{self, Key};
use crate::tfa;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The null TA's UUID (`qemu/bench/ta/null_ta.h`), its file name in `/usr/lib/optee_armtz`.
pub const NULL_TA_UUID: &str = "6d6f6174-6265-6e63-686e-756c6c746100";

/// Where the client is installed in the guest.
pub const CLIENT_PATH: &str = "usr/bin/moat-bench";

/// The built instruments.
#[derive(Clone, Debug)]
pub struct Instruments {
    /// The signed null TA.
    pub ta: PathBuf,
    /// The static arm64 client.
    pub client: PathBuf,
    /// The TCG plugin (a host shared object).
    pub plugin: PathBuf,
    /// What they were built from, for the report.
    pub description: String,
}

fn bench_dir() -> PathBuf {
    crate::paths::workspace_root().join("qemu/bench")
}

/// The first line of `<compiler> --version`, part of every key it builds.
fn compiler_version(compiler: &str) -> Result<String> {
    let out = Command::new(compiler)
        .arg("--version")
        .output()
        .with_context(|| format!("running {compiler} --version"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Add every file of `dir` (sorted, by content) to `key`.
fn with_sources(mut key: Key, dir: &Path) -> Result<Key> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    for f in files.iter().filter(|f| f.is_file()) {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        key = key.with_file(&format!("src {name}"), f)?;
    }
    Ok(key)
}

/// The `make` command line that builds the null TA, as data.
pub fn ta_make_args(dev_kit: &Path, out: &Path) -> Vec<String> {
    vec![
        "CROSS_COMPILE=aarch64-linux-gnu-".into(),
        format!("TA_DEV_KIT_DIR={}", dev_kit.display()),
        format!("O={}", out.display()),
        // Debian's python3, with Debian's python3-cryptography (a host package).
        "PYTHON3=/usr/bin/python3".into(),
    ]
}

/// The client's compiler command line, as data.
pub fn client_cc_args(src: &Path, ta_include: &Path, out: &Path) -> Vec<String> {
    static_cc_args(src, &[ta_include], out)
}

/// A static arm64 Linux program from one C file, warnings as errors, as data.
pub fn static_cc_args(src: &Path, includes: &[&Path], out: &Path) -> Vec<String> {
    let mut a: Vec<String> = ["-static", "-O2", "-Wall", "-Wextra", "-Werror"]
        .map(String::from)
        .to_vec();
    a.extend(includes.iter().map(|i| format!("-I{}", i.display())));
    a.extend([
        "-o".into(),
        out.display().to_string(),
        src.display().to_string(),
    ]);
    a
}

/// The plugin's compiler command line, as data.
pub fn plugin_cc_args(src: &Path, out: &Path) -> Vec<String> {
    vec![
        "-shared".into(),
        "-fPIC".into(),
        "-O2".into(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        "-fvisibility=hidden".into(),
        "-o".into(),
        out.display().to_string(),
        src.display().to_string(),
    ]
}

/// Build (or take from the cache) the null TA, the client and the plugin.
pub fn build(ctx: &mut Ctx) -> Result<Instruments> {
    let optee = tfa::optee(ctx)?;
    let dev_kit = optee
        .root
        .join("usr/lib/optee-os-dev")
        .join(ctx.stack.optee_dir(OpteeFlavour::Plain));
    let cross = compiler_version("aarch64-linux-gnu-gcc")?;
    let host = compiler_version("gcc")?;
    let src = bench_dir();

    let key = with_sources(
        Key::new("bench-ta")
            .with("optee", &optee.key)
            .with("dev-kit", ctx.stack.optee_dir(OpteeFlavour::Plain))
            .with("cc", &cross),
        &src.join("ta"),
    )?;
    let ta_dir = step::cached(&ctx.cache, &key, "bench: the null TA", |out, log| {
        let build = out.join("build");
        log.run(
            Command::new("make")
                .current_dir(src.join("ta"))
                .args(ta_make_args(&dev_kit, &build)),
        )?;
        let ta = format!("{NULL_TA_UUID}.ta");
        std::fs::rename(build.join(&ta), out.join(&ta))
            .with_context(|| format!("the TA build made no {ta}"))?;
        std::fs::remove_dir_all(&build)?;
        Ok(())
    })?;

    let key = with_sources(
        with_sources(
            Key::new("bench-client").with("cc", &cross),
            &src.join("client"),
        )?,
        &src.join("ta"),
    )?;
    let client_dir = step::cached(
        &ctx.cache,
        &key,
        "bench: the moat-bench client",
        |out, log| {
            log.run(Command::new("aarch64-linux-gnu-gcc").args(client_cc_args(
                &src.join("client/moat-bench.c"),
                &src.join("ta"),
                &out.join("moat-bench"),
            )))
        },
    )?;

    let key = with_sources(
        Key::new("bench-plugin")
            .with("cc", &host)
            .with("qemu", crate::host::qemu_version()?),
        &src.join("plugin"),
    )?;
    let plugin_dir = step::cached(
        &ctx.cache,
        &key,
        "bench: the elcount TCG plugin",
        |out, log| {
            log.run(Command::new("gcc").args(plugin_cc_args(
                &src.join("plugin/elcount.c"),
                &out.join("elcount.so"),
            )))
        },
    )?;

    Ok(Instruments {
        ta: ta_dir.join(format!("{NULL_TA_UUID}.ta")),
        client: client_dir.join("moat-bench"),
        plugin: plugin_dir.join("elcount.so"),
        description: format!(
            "null TA {NULL_TA_UUID} (TA dev kit of {}, {}), moat-bench ({cross}), elcount.so ({host})",
            ctx.stack.optee_dir(OpteeFlavour::Plain),
            optee.key
        ),
    })
}

/// The cpio the bench appends to the initramfs: the TA, the client and `/etc/moat/run`.
pub fn overlay(inst: &Instruments, cmd: &str) -> Result<Vec<u8>> {
    let mut w = crate::cpio::Writer::new(Vec::new());
    for d in [
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib/optee_armtz",
        "etc",
        "etc/moat",
    ] {
        w.dir(d, 0o755)?;
    }
    w.file(
        &format!("usr/lib/optee_armtz/{NULL_TA_UUID}.ta"),
        0o444,
        &std::fs::read(&inst.ta)?,
    )?;
    w.file(CLIENT_PATH, 0o755, &std::fs::read(&inst.client)?)?;
    w.file("etc/moat/run", 0o644, format!("{cmd}\n").as_bytes())?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ta_is_built_with_the_dev_kit_and_debians_python() {
        let a = ta_make_args(Path::new("/o/usr/lib/optee-os-dev/x"), Path::new("/b"));
        assert!(a.contains(&"TA_DEV_KIT_DIR=/o/usr/lib/optee-os-dev/x".to_string()));
        assert!(a.contains(&"CROSS_COMPILE=aarch64-linux-gnu-".to_string()));
        assert!(a.contains(&"PYTHON3=/usr/bin/python3".to_string()));
        assert!(a.contains(&"O=/b".to_string()));
    }

    #[test]
    fn the_client_is_static_and_the_plugin_a_shared_object() {
        let c = client_cc_args(Path::new("c.c"), Path::new("/ta"), Path::new("/o/x"));
        assert!(c.contains(&"-static".to_string()) && c.contains(&"-I/ta".to_string()));
        let p = plugin_cc_args(Path::new("p.c"), Path::new("/o/p.so"));
        assert!(p.contains(&"-shared".to_string()) && p.contains(&"-fPIC".to_string()));
        assert_eq!(p.last().map(String::as_str), Some("p.c"));
    }

    #[test]
    fn the_null_ta_uuid_matches_its_header() {
        let h = std::fs::read_to_string(bench_dir().join("ta/null_ta.h")).unwrap();
        assert!(h.contains(NULL_TA_UUID));
        let mk = std::fs::read_to_string(bench_dir().join("ta/Makefile")).unwrap();
        assert!(mk.contains(&format!("BINARY = {NULL_TA_UUID}")));
    }

    #[test]
    fn the_overlay_holds_ta_client_and_command() {
        let d = std::env::temp_dir().join(format!("moat-inst-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ta"), b"TA").unwrap();
        std::fs::write(d.join("client"), b"ELF").unwrap();
        let inst = Instruments {
            ta: d.join("ta"),
            client: d.join("client"),
            plugin: d.join("none.so"),
            description: String::new(),
        };
        let bytes = overlay(&inst, "moat-bench").unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&format!("usr/lib/optee_armtz/{NULL_TA_UUID}.ta")));
        assert!(text.contains("usr/bin/moat-bench"));
        assert!(text.contains("moat-bench\n"));
        // The same inputs give the same bytes.
        assert_eq!(bytes, overlay(&inst, "moat-bench").unwrap());
    }
}
