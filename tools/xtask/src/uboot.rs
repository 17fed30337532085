// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--boot u-boot`: Debian's prebuilt U-Boot as BL33, and the `boot.scr` it runs.
//!
//! ```text
//!   TF-A BL31 ──(EL2, x0 = MPIDR)──► U-Boot at 0x44000000 (QEMU's loader put it there)
//!     │  relocates itself to the top of RAM
//!     │  reads its environment from the non-secure flash (pflash1, 0x4000000):
//!     │    bootdelay=0, bootcmd=source 0x41000000, and the command lines
//!     │    (xen_bootargs + dom0_bootargs for a hypervisor, bootargs for Linux alone)
//!     ▼
//!   boot.scr at 0x41000000 (QEMU's loader; `mkimage -T script`)
//!     │  fdt addr 0x40000000                 the DT QEMU gave and TF-A/OP-TEE edited
//!     │  fdt set / fdt mknode ...            /chosen: Xen's multiboot (and dom0less) nodes,
//!     │                                      the very edits the direct boot makes with fdtput
//!     │  booti 0x60000000 - 0x40000000       the hypervisor, in place, at EL2, x0 = DTB
//!     ▼                                      (Linux alone: booti with the initrd)
//!   moat or Xen, exactly as in the direct boot: same images at the same addresses, same DT
//! ```
//!
//! **One boot.scr for moat and Xen.** The script holds what the two share: where each image
//! is, how big, and which node describes it. The two command lines are the only things in
//! `/chosen` that differ between moat and Xen, and boot.scr takes them from U-Boot's
//! environment (`${xen_bootargs}`, `${dom0_bootargs}`), so for the same run the generated
//! boot.scr is byte for byte the same under either hypervisor; what differs is the
//! hypervisor file at 0x60000000 and these two variables:
//!
//! - `dom0_bootargs`: dom0's console. Xen keeps the PL011 for itself (`console=dtuart`) and
//!   gives dom0 its PV console, so dom0 needs `console=hvc0` (and `earlycon=xen`, Xen's
//!   early console hypercall, which moat does not implement); moat gives dom0 an emulated
//!   PL011 at the UART's own address, so dom0 needs `console=ttyAMA0`.
//! - `xen_bootargs`: each hypervisor's own options, as the direct boot gives them (Xen's
//!   `console=dtuart dtuart=… dom0_mem=512M,max:512M bootscrub=0 loglvl=info`, moat's
//!   `dom0_mem=1024M`), plus `--hv-args` and `--trace`.
//!
//! Why QEMU's loader, not a disk: it keeps the direct boot's load addresses (both boots
//! give the hypervisor the same memory and the same DT), needs no disk image or filesystem
//! tools, and costs no time; U-Boot's part is what a board's U-Boot does after its `load`s.
//! Why the environment in flash: it is where this U-Boot build keeps its environment
//! (CONFIG_ENV_IS_IN_FLASH at 0x4000000, the one flash bank the non-secure world sees when
//! QEMU's virt has secure=on), and it is the only way to give U-Boot a `bootcmd` without a
//! disk or a network: its default `bootflow scan` would find nothing and stop at the prompt.

use crate::dtb::{self, Chosen, Edit, Value};
use crate::profile::Ctx;
use crate::step::{self, Key};
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where QEMU's loader puts U-Boot and TF-A enters it (`PRELOADED_BL33_BASE` in
/// `[uboot].tfa_flags`): between OP-TEE's static SHM and the initrd, clear of everything
/// the direct boot loads. U-Boot is position independent and relocates itself to the top of
/// RAM before it runs the script.
pub const UBOOT_ADDR: u64 = 0x4400_0000;
/// Where QEMU's loader puts boot.scr, and `bootcmd` sources it: above the DTB, which QEMU
/// loads with room to grow (over 2 MiB from 0x40000000), below OP-TEE's SHM.
pub const SCRIPT_ADDR: u64 = 0x4100_0000;
/// The DT U-Boot edits and hands on: QEMU's, at the start of RAM (U-Boot's `fdt_addr`).
pub const FDT_ADDR: u64 = crate::profile::RAM_BASE;
/// QEMU virt's second flash bank (pflash1), where this U-Boot keeps its environment
/// (CONFIG_ENV_ADDR = 0x4000000, its start): QEMU wants a backing file of exactly its size.
pub const FLASH_SIZE: u64 = 64 << 20;
/// CONFIG_ENV_SIZE of Debian's qemu_arm64 build: what `mkenvimage -s` must be given.
pub const ENV_SIZE: u64 = 0x4_0000;
/// The top of RAM that U-Boot takes when it relocates itself (its code, 16 MiB of heap, a
/// copy of the 2 MiB DT, page tables, stacks: about 22 MiB), kept free of images.
pub const RELOCATED_RESERVE: u64 = 64 << 20;

/// The `/chosen` properties boot.scr reads from U-Boot's environment instead of writing
/// them literally: the command lines, which are what differs between moat and Xen.
const FROM_ENV: [(&str, &str); 2] = [
    ("xen,xen-bootargs", "xen_bootargs"),
    ("xen,dom0-bootargs", "dom0_bootargs"),
];

/// The room boot.scr makes in the DT for each command line from the environment, whatever
/// it holds (so that the script does not depend on it): Xen's own limit on Arm
/// (`BOOTMOD_MAX_CMDLINE` in xen/arch/arm/include/asm/setup.h), terminating NUL included.
/// A longer one is refused.
pub const CMDLINE_ROOM: usize = 1024;

/// What boot.scr boots once `/chosen` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A hypervisor image at this address: `booti <addr> - <fdt>`; its modules are in the DT.
    Hypervisor(u64),
    /// Linux alone at this address, with its initrd `[start, end)`: `booti <addr>
    /// <start>:<size> <fdt>`, and U-Boot writes `bootargs` and the initrd's bounds into
    /// `/chosen` itself, from `${bootargs}` and booti's argument.
    Linux { image: u64, initrd: (u64, u64) },
}

/// The text of boot.cmd and of U-Boot's environment for one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// boot.cmd, which `mkimage -T script` wraps into boot.scr.
    pub script: String,
    /// `name=value` lines for `mkenvimage`.
    pub env: String,
}

/// The arm64 U-Boot from `[uboot]`'s package, unpacked (cached by the resolved package).
pub fn image(ctx: &mut Ctx) -> Result<PathBuf> {
    let deb = ctx.res.resolve(&ctx.stack.want_uboot())?;
    let inner = ctx.stack.uboot.image.clone();
    let key = Key::new("uboot")
        .with("deb", deb.key())
        .with("image", inner.clone());
    let title = format!("U-Boot {} ({})", deb.version, deb.package);
    let dir = step::cached(&ctx.cache, &key, &title, |out, log| {
        let tree = out.join("deb");
        log.run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&tree),
        )?;
        let img = tree.join(&inner);
        ensure!(
            img.is_file(),
            "{} {} has no {inner} (qemu/stack.toml's uboot.image)",
            deb.package,
            deb.version
        );
        std::fs::copy(&img, out.join("u-boot.bin"))?;
        std::fs::remove_dir_all(&tree)?;
        Ok(())
    })?;
    Ok(dir.join("u-boot.bin"))
}

/// A string U-Boot's shell takes literally between double quotes: nothing it would expand
/// or unescape, nothing that ends the line.
fn script_string(s: &str) -> Result<String> {
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '$') || c.is_control())
    {
        bail!("{s:?} cannot be written in boot.scr: U-Boot's shell would change {c:?}");
    }
    Ok(format!("\"{s}\""))
}

/// A value U-Boot's environment can carry and boot.scr can pass on unchanged: one line
/// (the environment is `name=value` lines), and no `'`, because U-Boot's shell re-reads a
/// command that uses a variable with each quoted word wrapped in single quotes
/// (`make_string` in common/cli_hush.c).
pub fn check_env_value(s: &str) -> std::result::Result<(), String> {
    let what = match s.chars().find(|&c| c == '\'' || c.is_control()) {
        None => return Ok(()),
        Some('\'') => "a single quote".to_string(),
        Some(c) => format!("the control character {c:?}"),
    };
    Err(format!(
        "U-Boot's environment cannot pass {what} on to the DT (boot.scr reads the command \
         lines from it; --boot direct has no such limit)"
    ))
}

/// A property or node name in a command: `#` would start a comment.
fn name(s: &str) -> String {
    s.replace('#', "\\#")
}

/// One DT edit as a line of boot.scr; `var` names the environment variable that holds a
/// string property's value, when it comes from there.
fn edit_line(edit: &Edit, var: Option<&str>) -> Result<String> {
    Ok(match edit {
        Edit::Node(path) => {
            let (parent, node) = path
                .rsplit_once('/')
                .with_context(|| format!("node path {path:?} has no parent"))?;
            let parent = if parent.is_empty() { "/" } else { parent };
            format!("fdt mknode {parent} {}", name(node))
        }
        Edit::Prop {
            node,
            name: prop,
            value,
        } => {
            let val = match (value, var) {
                (Value::Strings(_), Some(var)) => format!(" \"${{{var}}}\""),
                (Value::Strings(s), None) => {
                    let quoted = s
                        .iter()
                        .map(|s| script_string(s))
                        .collect::<Result<Vec<_>>>()?;
                    format!(" {}", quoted.join(" "))
                }
                (Value::Cells(c), _) => {
                    let cells: Vec<String> = c.iter().map(|v| format!("{v:#x}")).collect();
                    format!(" <{}>", cells.join(" "))
                }
                (Value::Empty, _) => String::new(),
            };
            format!("fdt set {node} {}{val}", name(prop))
        }
    })
}

/// The environment variable that holds `edit`'s value, if boot.scr takes it from there.
fn env_var(edit: &Edit) -> Option<&'static str> {
    match edit {
        Edit::Prop {
            node,
            name,
            value: Value::Strings(_),
        } if node == "/chosen" => FROM_ENV.iter().find(|(p, _)| p == name).map(|(_, v)| *v),
        _ => None,
    }
}

/// The most bytes `edits` add to a DT: per node its tags and name, per property its
/// header, value and a new name in the strings block (libfdt's layout, 4-byte aligned). A
/// value from the environment counts as [`CMDLINE_ROOM`].
fn growth(edits: &[Edit]) -> usize {
    let align = |n: usize| n.div_ceil(4) * 4;
    edits
        .iter()
        .map(|e| match e {
            Edit::Node(path) => 8 + align(path.rsplit('/').next().unwrap_or("").len() + 1),
            Edit::Prop { name, value, .. } => {
                let len = match (value, env_var(e)) {
                    (_, Some(_)) => CMDLINE_ROOM,
                    (Value::Strings(s), None) => s.iter().map(|s| s.len() + 1).sum(),
                    (Value::Cells(c), _) => 4 * c.len(),
                    (Value::Empty, _) => 0,
                };
                12 + align(len) + name.len() + 1
            }
        })
        .sum()
}

/// boot.cmd and the environment for a run whose `/chosen` is `chosen`.
pub fn plan(chosen: &Chosen, entry: Entry) -> Result<Plan> {
    let mut script = String::from(
        "# boot.scr, generated by `cargo xtask qemu --boot u-boot` (tools/xtask/src/uboot.rs).\n\
         # QEMU's loader has put every image where the direct boot puts it.\n",
    );
    script.push_str(match entry {
        Entry::Hypervisor(_) => {
            "# This script writes /chosen as the direct boot's fdtput does, then boots the\n\
             # hypervisor. The command lines come from U-Boot's environment: they are all\n\
             # that differs between moat and Xen, so this script is the same for both.\n"
        }
        Entry::Linux { .. } => {
            "# booti writes /chosen's bootargs (from U-Boot's environment) and the initrd's\n\
             # bounds, as the direct boot's fdtput does.\n"
        }
    });
    let mut env = vec![
        // Boot at once (a key pressed during U-Boot's banner still stops it).
        "bootdelay=0".to_string(),
        format!("bootcmd=source {SCRIPT_ADDR:#x}"),
    ];
    let mut set_env = |var: &str, value: &str| -> Result<()> {
        check_env_value(value).map_err(|why| anyhow::anyhow!("{var}={value:?}: {why}"))?;
        env.push(format!("{var}={value}"));
        Ok(())
    };
    writeln!(script, "fdt addr {FDT_ADDR:#x}")?;
    // The DT stays where QEMU put it (all ones: "in place"; this board's default,
    // 0xffffffff, would copy it below 4 GiB), as in the direct boot.
    writeln!(script, "setenv fdt_high 0xffffffffffffffff")?;
    match entry {
        Entry::Hypervisor(addr) => {
            ensure!(
                chosen.bootargs.is_none() && chosen.initrd.is_none(),
                "a hypervisor's /chosen has no bootargs or initrd of Linux's own"
            );
            writeln!(
                script,
                "echo \"boot.scr: the hypervisor at {addr:#x}, its modules as /chosen describes\""
            )?;
            let edits = dtb::chosen_edits(chosen);
            // TF-A's BL2 packs the DT after its edits (fdt_pack in qemu_bl2_setup.c) and
            // OP-TEE adds to it in place: it comes with no free space. Room for the edits
            // (the direct boot made them with fdtput before QEMU started); U-Boot rounds it
            // up to a page.
            writeln!(script, "fdt resize {:#x}", growth(&edits))?;
            for edit in &edits {
                let var = env_var(edit);
                if let (
                    Some(var),
                    Edit::Prop {
                        value: Value::Strings(s),
                        ..
                    },
                ) = (var, edit)
                {
                    let value = s.join(" ");
                    ensure!(
                        value.len() < CMDLINE_ROOM,
                        "{var} is {} bytes; boot.scr has room for {} (Xen's limit)",
                        value.len(),
                        CMDLINE_ROOM - 1
                    );
                    set_env(var, &value)?;
                }
                writeln!(script, "{}", edit_line(edit, var)?)?;
            }
            // What the hypervisor will read (booti then adds U-Boot's own fixups).
            writeln!(script, "fdt print /chosen")?;
            writeln!(script, "booti {addr:#x} - {FDT_ADDR:#x}")?;
        }
        Entry::Linux {
            image,
            initrd: (start, end),
        } => {
            ensure!(
                chosen.modules.is_empty()
                    && chosen.domus.is_empty()
                    && chosen.xen_bootargs.is_none(),
                "Linux alone has no boot modules"
            );
            ensure!(end >= start, "the initrd ends before it starts");
            // U-Boot writes /chosen's bootargs from ${bootargs} and the initrd's bounds
            // from booti's argument: what the direct boot writes with fdtput.
            set_env("bootargs", chosen.bootargs.as_deref().unwrap_or(""))?;
            // Used in place, as in the direct boot (this board's default copies it).
            writeln!(script, "setenv initrd_high 0xffffffffffffffff")?;
            writeln!(
                script,
                "echo \"boot.scr: Linux at {image:#x}, its initrd at {start:#x}\""
            )?;
            writeln!(
                script,
                "booti {image:#x} {start:#x}:{:#x} {FDT_ADDR:#x}",
                end - start
            )?;
        }
    }
    let mut env = env.join("\n");
    env.push('\n');
    Ok(Plan { script, env })
}

/// The files of one U-Boot boot, in a run's directory.
pub struct Files {
    /// boot.scr, for QEMU's loader at [`SCRIPT_ADDR`].
    pub script: PathBuf,
    /// pflash1's backing file: the environment, then zeroes to [`FLASH_SIZE`].
    pub flash: PathBuf,
}

fn tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", step::show(cmd)))?;
    ensure!(
        out.status.success(),
        "`{}` failed: {}",
        step::show(cmd),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Write `plan` into `dir`: boot.cmd and boot.scr (`mkimage`), uboot-env.txt and the flash
/// image (`mkenvimage`). boot.scr's header is dated 0 (SOURCE_DATE_EPOCH), so the same
/// script always gives the same bytes.
pub fn write(dir: &Path, plan: &Plan) -> Result<Files> {
    let cmd = dir.join("boot.cmd");
    let script = dir.join("boot.scr");
    std::fs::write(&cmd, &plan.script)?;
    tool(
        Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none"])
            .args(["-n", "moat boot.scr", "-d"])
            .arg(&cmd)
            .arg(&script),
    )?;
    let env_txt = dir.join("uboot-env.txt");
    std::fs::write(&env_txt, &plan.env)?;
    let flash = dir.join("uboot-flash.img");
    tool(
        Command::new("mkenvimage")
            .args(["-s", &format!("{ENV_SIZE:#x}"), "-o"])
            .arg(&flash)
            .arg(&env_txt),
    )?;
    let f = std::fs::OpenOptions::new().write(true).open(&flash)?;
    ensure!(
        f.metadata()?.len() == ENV_SIZE,
        "mkenvimage wrote {} bytes, not {ENV_SIZE}",
        f.metadata()?.len()
    );
    // The rest of the bank reads as zeroes (a sparse file).
    f.set_len(FLASH_SIZE)?;
    Ok(Files { script, flash })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb::{DomU, Module};

    fn hv_chosen(xen_bootargs: &str, dom0_bootargs: &str) -> Chosen {
        Chosen {
            xen_bootargs: Some(xen_bootargs.into()),
            dom0_bootargs: Some(dom0_bootargs.into()),
            modules: vec![
                Module {
                    kind: "multiboot,kernel",
                    addr: 0x5000_0000,
                    size: 0x0214_5a00,
                },
                Module {
                    kind: "multiboot,ramdisk",
                    addr: 0x4800_0000,
                    size: 0x1234,
                },
            ],
            ..Chosen::default()
        }
    }

    #[test]
    fn moat_and_xen_get_the_same_script_and_differ_only_in_two_variables() {
        let moat = plan(
            &hv_chosen(
                "dom0_mem=1024M dom0_max_vcpus=2",
                "console=ttyAMA0 rdinit=/init",
            ),
            Entry::Hypervisor(0x6000_0000),
        )
        .unwrap();
        let xen = plan(
            &hv_chosen(
                "console=dtuart dtuart=/pl011@9000000 dom0_mem=512M,max:512M",
                "console=hvc0 earlycon=xen rdinit=/init",
            ),
            Entry::Hypervisor(0x6000_0000),
        )
        .unwrap();
        assert_eq!(moat.script, xen.script);
        let lines = |p: &Plan| p.env.lines().map(String::from).collect::<Vec<_>>();
        let differ: Vec<_> = lines(&moat)
            .into_iter()
            .zip(lines(&xen))
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.split('=').next().unwrap().to_string())
            .collect();
        assert_eq!(differ, ["xen_bootargs", "dom0_bootargs"]);
        assert!(moat.env.contains("bootcmd=source 0x41000000\n"));
        assert!(moat
            .env
            .contains("dom0_bootargs=console=ttyAMA0 rdinit=/init\n"));
    }

    #[test]
    fn the_script_makes_the_direct_boot_s_edits_in_its_order() {
        let c = hv_chosen("dom0_mem=1024M", "console=ttyAMA0");
        let p = plan(&c, Entry::Hypervisor(0x6000_0000)).unwrap();
        let fdt: Vec<&str> = p.script.lines().filter(|l| l.starts_with("fdt ")).collect();
        assert_eq!(
            fdt,
            [
                "fdt addr 0x40000000",
                "fdt resize 0x95c",
                "fdt set /chosen xen,xen-bootargs \"${xen_bootargs}\"",
                "fdt set /chosen xen,dom0-bootargs \"${dom0_bootargs}\"",
                "fdt set /chosen \\#address-cells <0x2>",
                "fdt set /chosen \\#size-cells <0x2>",
                "fdt mknode /chosen module@50000000",
                "fdt set /chosen/module@50000000 compatible \"multiboot,kernel\" \"multiboot,module\"",
                "fdt set /chosen/module@50000000 reg <0x0 0x50000000 0x0 0x2145a00>",
                "fdt mknode /chosen module@48000000",
                "fdt set /chosen/module@48000000 compatible \"multiboot,ramdisk\" \"multiboot,module\"",
                "fdt set /chosen/module@48000000 reg <0x0 0x48000000 0x0 0x1234>",
                "fdt print /chosen",
            ]
        );
        // One line per fdtput invocation of the direct boot, between `resize` and `print`.
        let edits = dtb::fdtput_args(Path::new("/d"), &c).len();
        assert_eq!(fdt.len() - 3, edits);
        assert_eq!(
            p.script.lines().last(),
            Some("booti 0x60000000 - 0x40000000")
        );
        assert!(p.script.contains("setenv fdt_high 0xffffffffffffffff\n"));
    }

    #[test]
    fn domus_get_their_nodes_and_an_empty_vpl011() {
        let mut c = hv_chosen("dom0_mem=1024M", "console=ttyAMA0");
        c.domus.push(DomU {
            name: "domU1".into(),
            memory_kib: 256 * 1024,
            cpus: 1,
            vpl011: true,
            tee: true,
            bootargs: "console=ttyAMA0 rdinit=/init".into(),
            modules: vec![Module {
                kind: "multiboot,kernel",
                addr: 0x6400_0000,
                size: 0x100,
            }],
        });
        let p = plan(&c, Entry::Hypervisor(0x6000_0000)).unwrap();
        for line in [
            "fdt mknode /chosen domU1",
            "fdt set /chosen/domU1 compatible \"xen,domain\"",
            "fdt set /chosen/domU1 memory <0x0 0x40000>",
            "fdt set /chosen/domU1 cpus <0x1>",
            "fdt set /chosen/domU1 vpl011",
            "fdt set /chosen/domU1 xen,tee \"optee\"",
            "fdt set /chosen/domU1 bootargs \"console=ttyAMA0 rdinit=/init\"",
            "fdt mknode /chosen/domU1 module@64000000",
        ] {
            assert!(p.script.lines().any(|l| l == line), "{line}\n{}", p.script);
        }
    }

    #[test]
    fn linux_alone_is_booted_with_u_boot_s_own_initrd_and_bootargs() {
        let c = Chosen {
            bootargs: Some("console=ttyAMA0 rdinit=/init".into()),
            initrd: Some((0x4800_0000, 0x4800_1000)),
            ..Chosen::default()
        };
        let p = plan(
            &c,
            Entry::Linux {
                image: 0x6000_0000,
                initrd: (0x4800_0000, 0x4800_1000),
            },
        )
        .unwrap();
        assert!(!p.script.contains("fdt set"));
        assert_eq!(
            p.script.lines().last(),
            Some("booti 0x60000000 0x48000000:0x1000 0x40000000")
        );
        assert!(p.script.contains("setenv initrd_high 0xffffffffffffffff\n"));
        assert!(p.env.contains("bootargs=console=ttyAMA0 rdinit=/init\n"));
        // A Linux plan with a hypervisor's modules is a caller's mistake.
        assert!(plan(
            &hv_chosen("a", "b"),
            Entry::Linux {
                image: 0x6000_0000,
                initrd: (0, 0)
            }
        )
        .is_err());
    }

    #[test]
    fn what_u_boot_would_change_is_refused() {
        let e = plan(
            &hv_chosen("dom0_mem=1024M x='y'", "console=ttyAMA0"),
            Entry::Hypervisor(0x6000_0000),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("xen_bootargs"), "{e:#}");
        assert!(check_env_value("a\nb").is_err());
        assert!(check_env_value("dom0_mem=1G trace=smc $x \"y\" ;").is_ok());
        assert!(script_string("a\"b").is_err() && script_string("${x}").is_err());
        assert_eq!(script_string("xen,domain").unwrap(), "\"xen,domain\"");
        let long = "x".repeat(CMDLINE_ROOM);
        let e = plan(&hv_chosen(&long, "c"), Entry::Hypervisor(0x6000_0000)).unwrap_err();
        assert!(format!("{e:#}").contains("room for 1023"), "{e:#}");
    }

    #[test]
    fn the_addresses_match_the_manifest_and_stay_clear_of_each_other() {
        let s = crate::stack::Stack::load().unwrap();
        assert!(s
            .uboot
            .tfa_flags
            .contains(&format!("PRELOADED_BL33_BASE={UBOOT_ADDR:#x}")));
        use crate::profile::{INITRD_ADDR, OPTEE_SHM};
        assert!(FDT_ADDR + (2 << 20) + 0x5000 < SCRIPT_ADDR && SCRIPT_ADDR < OPTEE_SHM.0);
        assert!(OPTEE_SHM.1 <= UBOOT_ADDR && UBOOT_ADDR + (16 << 20) <= INITRD_ADDR);
    }
}
