// SPDX-License-Identifier: MIT OR Apache-2.0
//! The pinned third-party stack, read from `qemu/stack.toml`.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Everything `qemu/stack.toml` pins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Debian suites the private apt configuration lists.
    pub suites: Vec<String>,
    /// Host tools: a binary name or absolute path -> the Debian package providing it.
    pub host: BTreeMap<String, String>,
    pub tfa: Tfa,
    pub optee: Optee,
    pub kernel: Kernel,
    pub xen: Xen,
    /// Guest user-space packages: name -> exact version.
    pub userspace: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tfa {
    /// Debian source package name.
    pub source: String,
    pub version: String,
    /// `make` variables, `NAME=value`.
    pub flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optee {
    pub package: String,
    pub dev_package: String,
    pub version: String,
    /// Directory name of the plain build under /usr/lib/optee.
    pub plain: String,
    /// Directory name of the NS-virtualization build under /usr/lib/optee.
    pub virtualized: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub package: String,
    pub version: String,
    /// `uname -r`: names /boot/vmlinuz-<release> and /lib/modules/<release>.
    pub release: String,
    /// Modules (relative to /lib/modules/<release>) that /init loads, in order.
    pub modules: Vec<String>,
}

/// Stock Xen (`--hv xen`), built from Debian's source package.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xen {
    /// Debian source package name.
    pub source: String,
    pub version: String,
    /// Kconfig lines, `CONFIG_NAME=value`, applied over arm64 defconfig.
    pub config: Vec<String>,
    /// Kconfig lines added for the debug flavour.
    pub debug_config: Vec<String>,
    /// Our own patches, relative to `qemu/xen/`, applied in order with `patch -p1`.
    pub patches: Vec<String>,
    /// Kernel modules (relative to /lib/modules/<release>) the toolstack needs in dom0.
    pub toolstack_modules: Vec<String>,
    /// Xen's toolstack for dom0 and its libraries: arm64 package -> exact version.
    pub toolstack: BTreeMap<String, String>,
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

impl Stack {
    /// Parse a stack description.
    pub fn parse(text: &str) -> Result<Self> {
        let stack: Stack = toml::from_str(text).context("parsing qemu/stack.toml")?;
        for flag in &stack.tfa.flags {
            anyhow::ensure!(
                flag.contains('='),
                "qemu/stack.toml: TF-A flag {flag:?} is not NAME=value"
            );
        }
        for line in stack.xen.config.iter().chain(&stack.xen.debug_config) {
            anyhow::ensure!(
                line.starts_with("CONFIG_") && line.contains('='),
                "qemu/stack.toml: Xen config line {line:?} is not CONFIG_NAME=value"
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_stack_parses() {
        let s = Stack::load().unwrap();
        assert_eq!(s.tfa.version, "2.12.1+dfsg-1");
        assert!(s.tfa.flags.iter().any(|f| f == "SPD=opteed"));
        assert!(s.userspace.contains_key("optee-test-qemu"));
        assert_eq!(s.optee_dir(OpteeFlavour::Plain), "vexpress-qemu_armv8a");
        assert!(s.xen.config.iter().any(|c| c == "CONFIG_OPTEE=y"));
    }

    #[test]
    fn a_malformed_xen_config_line_is_rejected() {
        let text = std::fs::read_to_string(crate::paths::workspace_root().join("qemu/stack.toml"))
            .unwrap()
            .replace("\"CONFIG_DEBUG=y\"", "\"DEBUG=y\"");
        let err = Stack::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not CONFIG_NAME=value"));
    }

    #[test]
    fn a_malformed_flag_is_rejected() {
        let text = std::fs::read_to_string(crate::paths::workspace_root().join("qemu/stack.toml"))
            .unwrap()
            .replace("\"SPD=opteed\"", "\"SPD\"");
        let err = Stack::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not NAME=value"));
    }

    #[test]
    fn an_unknown_key_is_rejected() {
        let err = Stack::parse("suites = []\nbogus = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("parsing"));
    }
}
