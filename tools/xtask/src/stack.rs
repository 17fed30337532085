// SPDX-License-Identifier: MIT OR Apache-2.0
//! The third-party stack's manifest of intent, read from `qemu/stack.toml`.
//!
//! The manifest says *what* the stack is made of: each part's Debian package, its suite and
//! a version constraint ([`crate::debver::satisfies`]), plus the build flags. What each part
//! resolved to (exact version, files, SHA-256) lives in `qemu/stack.lock` ([`crate::lock`]);
//! [`crate::resolve`] turns a [`Want`] and its lock entry into files in the cache.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Everything `qemu/stack.toml` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Host tools: a binary name or absolute path -> the Debian package providing it.
    pub host: BTreeMap<String, String>,
    pub tfa: Tfa,
    pub optee: Optee,
    pub kernel: Kernel,
    pub xen: Xen,
    pub uboot: Uboot,
    /// Guest user-space packages (arm64).
    pub userspace: BTreeMap<String, Pin>,
}

/// A binary package's suite and version constraint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub suite: String,
    /// An upstream version or series, optionally with an epoch (`1:1.37.0`).
    pub version: String,
    /// Why this suite and version.
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tfa {
    /// Debian source package name.
    pub source: String,
    pub suite: String,
    pub version: String,
    pub why: String,
    /// `make` variables, `NAME=value`.
    pub flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optee {
    pub package: String,
    pub dev_package: String,
    pub suite: String,
    pub version: String,
    pub why: String,
    /// Directory name of the plain build under /usr/lib/optee.
    pub plain: String,
    /// Directory name of the NS-virtualization build under /usr/lib/optee.
    pub virtualized: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// The series booted when `--kernel` is not given.
    pub default: String,
    /// Modules (relative to the modules directory) that /init loads, in order.
    pub modules: Vec<String>,
    /// ABI series (`6.1`, `6.12`) -> where its kernel comes from.
    pub series: BTreeMap<String, KernelSeries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSeries {
    pub suite: String,
    /// The suite's metapackage whose dependency names the ABI's kernel package.
    pub metapackage: String,
    pub why: String,
}

/// Stock Xen (`--hv xen`), built from Debian's source package.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xen {
    /// Debian source package name.
    pub source: String,
    pub suite: String,
    pub version: String,
    pub why: String,
    /// Kconfig lines, `CONFIG_NAME=value`, applied over arm64 defconfig.
    pub config: Vec<String>,
    /// Kconfig lines added for the debug flavour.
    pub debug_config: Vec<String>,
    /// Our own patches, relative to `qemu/xen/`, applied in order with `patch -p1`.
    pub patches: Vec<String>,
    /// Kernel modules (relative to the modules directory) the toolstack needs in dom0.
    pub toolstack_modules: Vec<String>,
    /// Xen's toolstack for dom0 and its libraries (arm64).
    pub toolstack: BTreeMap<String, Pin>,
}

/// U-Boot (`--boot u-boot`): Debian's prebuilt QEMU build, and how TF-A enters it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uboot {
    /// The binary package (architecture `all`).
    pub package: String,
    pub suite: String,
    pub version: String,
    pub why: String,
    /// The arm64 image inside the package.
    pub image: String,
    /// TF-A `make` variables for a U-Boot BL33, `NAME=value`: each replaces the `[tfa]`
    /// flag of the same name (or is added).
    pub tfa_flags: Vec<String>,
}

/// Which OP-TEE build a profile boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpteeFlavour {
    /// No NS-virtualization: for Linux running without a hypervisor.
    Plain,
    /// CFG_NS_VIRTUALIZATION=y: needs a hypervisor that announces VMs.
    Virtualized,
}

/// How a part is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A binary package (arm64 or all), by name.
    Deb(String),
    /// A source package, by name (`apt-get source`).
    Dsc(String),
    /// A kernel found through a metapackage's dependency (`linux-image-arm64` ->
    /// `linux-image-6.1.0-NN-arm64`).
    Kernel { metapackage: String },
}

/// One part of the stack as the manifest asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The lock's key: `<group>/<name>`, for example `userspace/libc6` or `kernel/6.1`.
    pub id: String,
    pub what: What,
    pub suite: String,
    pub constraint: String,
    /// The manifest's reason for this suite and version, quoted when nothing satisfies it.
    pub why: Option<String>,
}

impl Want {
    /// The name a person knows the part by (the package, or the metapackage).
    pub fn name(&self) -> &str {
        match &self.what {
            What::Deb(n) | What::Dsc(n) => n,
            What::Kernel { metapackage } => metapackage,
        }
    }
}

impl Stack {
    /// Parse a manifest.
    pub fn parse(text: &str) -> Result<Self> {
        let stack: Stack = toml::from_str(text).context("parsing qemu/stack.toml")?;
        for flag in &stack.tfa.flags {
            anyhow::ensure!(
                flag.contains('='),
                "qemu/stack.toml: TF-A flag {flag:?} is not NAME=value"
            );
        }
        for flag in &stack.uboot.tfa_flags {
            anyhow::ensure!(
                flag.contains('='),
                "qemu/stack.toml: uboot.tfa_flags {flag:?} is not NAME=value"
            );
        }
        for line in stack.xen.config.iter().chain(&stack.xen.debug_config) {
            anyhow::ensure!(
                line.starts_with("CONFIG_") && line.contains('='),
                "qemu/stack.toml: Xen config line {line:?} is not CONFIG_NAME=value"
            );
        }
        anyhow::ensure!(
            stack.kernel.series.contains_key(&stack.kernel.default),
            "qemu/stack.toml: kernel.default {:?} is not one of the kernel.series ({})",
            stack.kernel.default,
            stack.series_names()
        );
        for w in stack.wants() {
            anyhow::ensure!(
                !w.constraint.trim().is_empty() && !w.suite.trim().is_empty(),
                "qemu/stack.toml: {} needs a suite and a version constraint",
                w.id
            );
        }
        Ok(stack)
    }

    /// Load `qemu/stack.toml` from the workspace.
    pub fn load() -> Result<Self> {
        let path = crate::paths::workspace_root().join("qemu/stack.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// The directory name of an OP-TEE flavour under /usr/lib/optee and /usr/lib/optee-os-dev.
    pub fn optee_dir(&self, flavour: OpteeFlavour) -> &str {
        match flavour {
            OpteeFlavour::Plain => &self.optee.plain,
            OpteeFlavour::Virtualized => &self.optee.virtualized,
        }
    }

    /// The Debian suites the private apt configuration lists: every suite a part names.
    pub fn suites(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.wants().into_iter().map(|w| w.suite).collect();
        set.into_iter().collect()
    }

    fn series_names(&self) -> String {
        self.kernel
            .series
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The kernel series `name` (or the default), checked against the manifest.
    pub fn kernel_series<'a>(&'a self, name: Option<&'a str>) -> Result<&'a str> {
        let name = name.unwrap_or(&self.kernel.default);
        if !self.kernel.series.contains_key(name) {
            bail!(
                "unknown kernel series {name:?}: qemu/stack.toml has {}",
                self.series_names()
            );
        }
        Ok(name)
    }

    pub fn want_tfa(&self) -> Want {
        Want {
            id: format!("tfa/{}", self.tfa.source),
            what: What::Dsc(self.tfa.source.clone()),
            suite: self.tfa.suite.clone(),
            constraint: self.tfa.version.clone(),
            why: Some(self.tfa.why.clone()),
        }
    }

    pub fn want_xen(&self) -> Want {
        Want {
            id: format!("xen/{}", self.xen.source),
            what: What::Dsc(self.xen.source.clone()),
            suite: self.xen.suite.clone(),
            constraint: self.xen.version.clone(),
            why: Some(self.xen.why.clone()),
        }
    }

    /// U-Boot's package (`--boot u-boot`).
    pub fn want_uboot(&self) -> Want {
        let u = &self.uboot;
        Want {
            id: format!("uboot/{}", u.package),
            what: What::Deb(u.package.clone()),
            suite: u.suite.clone(),
            constraint: u.version.clone(),
            why: Some(u.why.clone()),
        }
    }

    /// TF-A's flags for a BL33 that is U-Boot: `[tfa].flags` with `[uboot].tfa_flags`
    /// replacing the flags of the same name, in their place (a new name goes last).
    pub fn tfa_flags_for_uboot(&self) -> Vec<String> {
        let name = |f: &str| f.split_once('=').map_or(f, |(n, _)| n).to_string();
        let mut flags = self.tfa.flags.clone();
        for over in &self.uboot.tfa_flags {
            match flags.iter_mut().find(|f| name(f) == name(over)) {
                Some(f) => *f = over.clone(),
                None => flags.push(over.clone()),
            }
        }
        flags
    }

    /// The OP-TEE OS package and its TA dev kit.
    pub fn want_optee(&self) -> [Want; 2] {
        let o = &self.optee;
        [&o.package, &o.dev_package].map(|p| Want {
            id: format!("optee/{p}"),
            what: What::Deb(p.clone()),
            suite: o.suite.clone(),
            constraint: o.version.clone(),
            why: Some(o.why.clone()),
        })
    }

    /// The kernel of `series` (checked with [`Stack::kernel_series`] first).
    pub fn want_kernel(&self, series: &str) -> Result<Want> {
        let s = self
            .kernel
            .series
            .get(series)
            .with_context(|| format!("unknown kernel series {series:?}"))?;
        Ok(Want {
            id: format!("kernel/{series}"),
            what: What::Kernel {
                metapackage: s.metapackage.clone(),
            },
            suite: s.suite.clone(),
            constraint: series.to_string(),
            why: Some(s.why.clone()),
        })
    }

    fn pins(group: &str, pins: &BTreeMap<String, Pin>) -> Vec<Want> {
        pins.iter()
            .map(|(name, p)| Want {
                id: format!("{group}/{name}"),
                what: What::Deb(name.clone()),
                suite: p.suite.clone(),
                constraint: p.version.clone(),
                why: p.why.clone(),
            })
            .collect()
    }

    pub fn want_userspace(&self) -> Vec<Want> {
        Self::pins("userspace", &self.userspace)
    }

    pub fn want_toolstack(&self) -> Vec<Want> {
        Self::pins("xen.toolstack", &self.xen.toolstack)
    }

    /// Every part of the stack, for `cargo xtask stack update|check`.
    pub fn wants(&self) -> Vec<Want> {
        let mut v = vec![self.want_tfa()];
        v.extend(self.want_optee());
        for series in self.kernel.series.keys() {
            v.extend(self.want_kernel(series));
        }
        v.extend(self.want_userspace());
        v.push(self.want_xen());
        v.extend(self.want_toolstack());
        v.push(self.want_uboot());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> String {
        std::fs::read_to_string(crate::paths::workspace_root().join("qemu/stack.toml")).unwrap()
    }

    #[test]
    fn the_committed_stack_parses() {
        let s = Stack::load().unwrap();
        assert_eq!(s.tfa.version, "2.12.1");
        assert!(s.tfa.flags.iter().any(|f| f == "SPD=opteed"));
        assert!(s.userspace.contains_key("optee-test-qemu"));
        assert_eq!(s.optee_dir(OpteeFlavour::Plain), "vexpress-qemu_armv8a");
        assert!(s.xen.config.iter().any(|c| c == "CONFIG_OPTEE=y"));
        assert_eq!(s.suites(), ["bookworm", "trixie"]);
    }

    #[test]
    fn every_part_has_a_unique_lock_id() {
        let s = Stack::load().unwrap();
        let wants = s.wants();
        let ids: BTreeSet<&str> = wants.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids.len(), wants.len());
        assert!(ids.contains("userspace/libc6"));
        assert!(ids.contains("kernel/6.1") && ids.contains("kernel/6.12"));
        assert!(ids.contains("tfa/arm-trusted-firmware"));
        assert!(ids.contains("uboot/u-boot-qemu"));
    }

    #[test]
    fn u_boot_s_tfa_flags_replace_the_ones_of_the_same_name() {
        let s = Stack::load().unwrap();
        let f = s.tfa_flags_for_uboot();
        assert_eq!(f.len(), s.tfa.flags.len());
        assert!(f.contains(&"PRELOADED_BL33_BASE=0x44000000".to_string()));
        assert!(f.contains(&"ARM_LINUX_KERNEL_AS_BL33=0".to_string()));
        assert!(!f.iter().any(|x| x == "PRELOADED_BL33_BASE=0x60000000"));
        // Everything else, in its place.
        for (a, b) in s.tfa.flags.iter().zip(&f) {
            assert!(
                a == b || a.split('=').next() == b.split('=').next(),
                "{a} {b}"
            );
        }
        let added = committed().replace(
            "\"ARM_LINUX_KERNEL_AS_BL33=0\"]",
            "\"ARM_LINUX_KERNEL_AS_BL33=0\", \"DEBUG=1\"]",
        );
        let s = Stack::parse(&added).unwrap();
        assert_eq!(s.tfa_flags_for_uboot().last().unwrap(), "DEBUG=1");
        let bad = committed().replace("\"ARM_LINUX_KERNEL_AS_BL33=0\"]", "\"DEBUG\"]");
        assert!(format!("{:#}", Stack::parse(&bad).unwrap_err()).contains("uboot.tfa_flags"));
    }

    #[test]
    fn kernel_series_are_checked() {
        let s = Stack::load().unwrap();
        assert_eq!(s.kernel_series(None).unwrap(), "6.1");
        assert_eq!(s.kernel_series(Some("6.12")).unwrap(), "6.12");
        let e = s.kernel_series(Some("5.10")).unwrap_err();
        assert!(format!("{e}").contains("6.1, 6.12"), "{e}");
        let k = s.want_kernel("6.12").unwrap();
        assert_eq!(k.suite, "trixie");
        assert_eq!(
            k.what,
            What::Kernel {
                metapackage: "linux-image-arm64".into()
            }
        );
        let bad = committed().replace("default = \"6.1\"", "default = \"4.19\"");
        assert!(format!("{:#}", Stack::parse(&bad).unwrap_err()).contains("kernel.default"));
    }

    #[test]
    fn a_malformed_xen_config_line_is_rejected() {
        let text = committed().replace("\"CONFIG_DEBUG=y\"", "\"DEBUG=y\"");
        let err = Stack::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not CONFIG_NAME=value"));
    }

    #[test]
    fn a_malformed_flag_is_rejected() {
        let text = committed().replace("\"SPD=opteed\"", "\"SPD\"");
        let err = Stack::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not NAME=value"));
    }

    #[test]
    fn an_exact_pin_without_suite_is_rejected() {
        // The old format (`name = "exact version"`) no longer parses: a pin needs a suite.
        let text = committed().replace(
            "libc6 = { suite = \"trixie\", version = \"2.41\", why = \"libckteec needs glibc >= 2.38\" }",
            "libc6 = \"2.41-12+deb13u4\"",
        );
        assert!(Stack::parse(&text).is_err());
        let empty = committed().replace(
            "libzstd1 = { suite = \"trixie\", version = \"1.5.7\" }",
            "libzstd1 = { suite = \"trixie\", version = \" \" }",
        );
        assert!(format!("{:#}", Stack::parse(&empty).unwrap_err()).contains("libzstd1"));
    }

    #[test]
    fn an_unknown_key_is_rejected() {
        let err = Stack::parse(&format!("{}\nbogus = 1\n", committed())).unwrap_err();
        assert!(format!("{err:#}").contains("parsing"));
    }
}
