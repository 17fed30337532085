// SPDX-License-Identifier: MIT OR Apache-2.0
//! The QEMU machine and its command line, as data, plus a runner that watches the console.
//!
//! ```text
//!   serial0 (pl011@9000000, non-secure)  -> console: stdio / captured, logged
//!   serial1 (pl011@9040000, secure)      -> OP-TEE's log file
//!   -bios bios.bin (BL1 + FIP) at 0x0, -dtb at 0x40000000, images via -device loader
//!   (--boot u-boot) pflash1 at 0x4000000: U-Boot's environment, read-only
//! ```

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The emulated board. Every profile uses the same one, so the same DT and load addresses
/// serve Linux alone, moat and Xen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Physical CPUs.
    pub smp: u32,
    /// RAM in MiB, from 0x40000000.
    pub mem_mib: u32,
    /// The CPUs implement EL2 (`virtualization=on`). Off only to show what a hypervisor
    /// does when it is entered at EL1.
    pub el2: bool,
    /// Deterministic mode (`cargo xtask bench`): see [`DETERMINISTIC_ARGS`]. Off for
    /// `qemu` and `test`, whose scenarios run on wall-clock time.
    pub deterministic: bool,
}

/// The generic timer's frequency in deterministic mode: with `-icount shift=0` one
/// instruction is one nanosecond of virtual time, so at 1 GHz one counter tick is one
/// instruction. (QEMU 7.2's `-cpu max` defaults to 62.5 MHz, 16 instructions a tick; its
/// `cntfrq` CPU property sets both the counter's rate and CNTFRQ_EL0's reset value, which
/// the bench client reads back in the guest.)
pub const DETERMINISTIC_CNTFRQ: u64 = 1_000_000_000;

/// QEMU options of deterministic mode besides the CPU and board properties: every guest
/// instruction advances virtual time by 1 ns and idle time is skipped (`sleep=off`), the
/// RTC runs on that virtual clock from a fixed date, and QEMU's own random numbers (RNDR,
/// the DTB's seeds) come from a fixed seed. Two runs then execute the same instructions.
pub const DETERMINISTIC_ARGS: &[&str] = &[
    "-icount",
    "shift=0,sleep=off",
    "-rtc",
    "base=2024-01-01T00:00:00,clock=vm",
    "-seed",
    "1",
];

impl Machine {
    /// Arguments that describe the board (and nothing that is loaded into it): these also
    /// key the dumped DTB.
    pub fn board_args(&self) -> Vec<String> {
        // TrustZone (secure=on) and EL2 (virtualization=on); Debian's OP-TEE drives a GICv3.
        let mut machine = format!(
            "virt,secure=on,virtualization={},gic-version=3",
            if self.el2 { "on" } else { "off" }
        );
        // pauth-impdef: QEMU's cheap pointer-auth algorithm; the architected one is slow
        // under TCG and the guest cannot tell the difference.
        let mut cpu = "max,pauth-impdef=on".to_string();
        if self.deterministic {
            // No random kaslr-seed / rng-seed in the DTB, and a 1 GHz counter.
            machine.push_str(",dtb-randomness=off");
            cpu.push_str(&format!(",cntfrq={DETERMINISTIC_CNTFRQ}"));
        }
        let extra = match self.deterministic {
            true => DETERMINISTIC_ARGS,
            false => &[],
        };
        ["-machine".to_string(), machine, "-cpu".to_string(), cpu]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .chain([
                "-smp".into(),
                self.smp.to_string(),
                "-m".into(),
                format!("{}M", self.mem_mib),
                // No NIC: nothing in the stack uses one, and it needs an option ROM.
                "-nic".into(),
                "none".into(),
                "-display".into(),
                "none".into(),
            ])
            .collect()
    }
}

/// Where the non-secure console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Console {
    /// The user's terminal, with QEMU also writing a log file. QEMU's escape key is Ctrl-]
    /// so that Ctrl-a reaches the guest (moat and Xen switch consoles with Ctrl-a x3).
    Interactive { log: PathBuf },
    /// A pipe that xtask reads, logs and watches for markers.
    Captured,
}

/// One QEMU invocation, as data.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub machine: Machine,
    pub bios: PathBuf,
    pub dtb: PathBuf,
    /// Files placed in guest memory before reset: (file, physical address).
    pub loads: Vec<(PathBuf, u64)>,
    pub console: Console,
    /// OP-TEE's secure UART output.
    pub secure_log: PathBuf,
    /// Start a gdb stub on this TCP port, with the CPUs halted at reset.
    pub gdb_port: Option<u16>,
    /// A TCG plugin and its arguments (`-plugin file=<so>,<arg>,...`).
    pub plugin: Option<(PathBuf, Vec<String>)>,
    /// The backing file of the second flash bank (pflash1 at 0x4000000, the one the
    /// non-secure world sees under secure=on), read-only: U-Boot's environment.
    pub pflash1: Option<PathBuf>,
}

impl Invocation {
    /// The full argument list.
    pub fn args(&self) -> Vec<String> {
        let mut a = self.machine.board_args();
        a.extend(["-bios".into(), self.bios.display().to_string()]);
        a.extend(["-dtb".into(), self.dtb.display().to_string()]);
        if let Some(flash) = &self.pflash1 {
            a.extend([
                "-drive".into(),
                format!(
                    "if=pflash,unit=1,format=raw,readonly=on,file={}",
                    flash.display()
                ),
            ]);
        }
        for (file, addr) in &self.loads {
            a.extend([
                "-device".into(),
                format!("loader,file={},addr={addr:#x}", file.display()),
            ]);
        }
        match &self.console {
            Console::Interactive { log } => {
                a.extend([
                    "-chardev".into(),
                    format!("stdio,id=con0,mux=on,signal=off,logfile={}", log.display()),
                    "-serial".into(),
                    "chardev:con0".into(),
                    "-mon".into(),
                    "chardev=con0,mode=readline".into(),
                    "-echr".into(),
                    "0x1d".into(),
                ]);
            }
            Console::Captured => {
                a.extend([
                    "-monitor".into(),
                    "none".into(),
                    "-serial".into(),
                    "stdio".into(),
                ]);
            }
        }
        a.extend([
            "-serial".into(),
            format!("file:{}", self.secure_log.display()),
        ]);
        if let Some(port) = self.gdb_port {
            a.extend(["-gdb".into(), format!("tcp::{port}"), "-S".into()]);
        }
        if let Some((so, args)) = &self.plugin {
            let mut spec = format!("file={}", so.display());
            for arg in args {
                spec.push(',');
                spec.push_str(arg);
            }
            a.extend(["-plugin".into(), spec]);
        }
        a
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-aarch64");
        c.args(self.args());
        c
    }
}

/// A child process that is killed when dropped, so no QEMU outlives xtask.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a console watcher decides after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Stop: the run is over with this result; QEMU is given a moment to exit, then killed.
    Done(u8),
    /// Stop at once with this result, without waiting for QEMU to exit (a boot that is
    /// meant to stop early, such as a refused configuration).
    Stop(u8),
    /// Stop: something that must never appear did.
    Fail(String),
    /// Type these bytes on the console (QEMU's stdin), then go on.
    Send(Vec<u8>),
}

/// The hypervisor's last words when it stops for good: moat's fatal marker (see
/// `hv::FATAL_MARKER`) and panic line, and Xen's panic banner.
const MOAT_FATAL: &str = "(moat) error: moat cannot continue";
const MOAT_PANIC: &str = "(moat) PANIC on CPU";
const XEN_PANIC: &str = "Panic on CPU";
/// Most lines of a Xen panic message kept after its banner.
const XEN_PANIC_LINES: usize = 8;

/// Recognises a fatal hypervisor error on the console and assembles its cause: for moat,
/// the `(moat) error:` lines just before the fatal marker (or the panic line); for Xen, the
/// lines between `Panic on CPU N:` and the closing row of stars.
#[derive(Debug, Default)]
pub struct FatalWatch {
    /// `(moat) error:` lines since the last other line.
    errors: Vec<String>,
    /// Inside a Xen panic message: the lines so far.
    xen: Option<Vec<String>>,
}

impl FatalWatch {
    /// Feed one console line. `Some(cause)` once a fatal error is complete.
    pub fn feed(&mut self, line: &str) -> Option<String> {
        if let Some(lines) = &mut self.xen {
            let text = line.trim_start_matches("(XEN)").trim();
            if text.starts_with("****") || lines.len() >= XEN_PANIC_LINES {
                let cause = lines.join(" / ");
                self.xen = None;
                return Some(format!("Xen panicked: {cause}"));
            }
            if !text.is_empty() {
                lines.push(text.to_string());
            }
            return None;
        }
        if let Some(at) = line.find(MOAT_PANIC) {
            return Some(line[at..].to_string());
        }
        if let Some(at) = line.find(MOAT_FATAL) {
            let cause = if self.errors.is_empty() {
                line[at..].to_string()
            } else {
                self.errors.join(" / ")
            };
            self.errors.clear();
            return Some(cause);
        }
        if line.contains(XEN_PANIC) && line.contains("(XEN)") {
            self.xen = Some(Vec::new());
            return None;
        }
        match line.find("(moat) error: ") {
            Some(at) => self.errors.push(line[at..].to_string()),
            None => self.errors.clear(),
        }
        None
    }
}

/// How a captured run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The hypervisor stopped with a fatal error; its cause.
    Fatal(String),
    /// The watcher said done.
    Done(u8),
    /// The watcher said fail.
    Failed(String),
    /// QEMU exited before the watcher was done.
    Exited(Option<i32>),
    TimedOut,
}

/// A captured run's end.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    /// QEMU exited by itself, successfully (the guest powered the machine off).
    pub qemu_exited: bool,
}

/// How long QEMU may take to exit on its own after the final marker.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How long QEMU may take to exit on its own after a fatal hypervisor error.
const FATAL_GRACE: Duration = Duration::from_secs(2);

/// Run with the console captured: every line is appended to `console_log`, optionally
/// echoed, and given to `watch`. Ends on the watcher's verdict, QEMU's exit, or `timeout`.
pub fn run_captured(
    inv: &Invocation,
    console_log: &Path,
    timeout: Duration,
    echo: bool,
    mut watch: impl FnMut(&str) -> Verdict,
) -> Result<Finished> {
    let mut cmd = inv.command();
    let qemu_err = console_log.with_file_name("qemu-stderr.log");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&qemu_err)?);
    std::fs::write(
        console_log.with_file_name("qemu-cmdline.txt"),
        crate::step::show(&cmd),
    )?;
    let mut child = KillOnDrop(cmd.spawn().context("starting qemu-system-aarch64")?);
    let mut stdout = child.0.stdout.take().context("no stdout pipe")?;
    // Kept open for the whole run: what a watcher types goes here.
    let mut stdin = child.0.stdin.take().context("no stdin pipe")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut log = std::io::BufWriter::new(std::fs::File::create(console_log)?);
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut verdict = None;
    let mut fatal = FatalWatch::default();
    while verdict.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log.flush()?;
            return Ok(Finished {
                outcome: Outcome::TimedOut,
                qemu_exited: false,
            });
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(chunk) => {
                log.write_all(&chunk)?;
                if echo {
                    std::io::stdout().write_all(&chunk)?;
                    std::io::stdout().flush()?;
                }
                for b in chunk {
                    if b == b'\n' {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches('\r');
                        // The watcher sees the line first (a scenario may assert it).
                        let said = watch(text);
                        if let Some(cause) = fatal.feed(text) {
                            // The hypervisor has stopped: never wait for the timeout. moat
                            // powers the machine off, so QEMU should exit by itself at once;
                            // after FATAL_GRACE it is killed (noreboot parks; Xen reboots
                            // into the same error).
                            let grace = Instant::now() + FATAL_GRACE;
                            let mut qemu_exited = false;
                            while Instant::now() < grace {
                                match rx.recv_timeout(Duration::from_millis(50)) {
                                    Ok(more) => log.write_all(&more)?,
                                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                                        qemu_exited = child.0.wait()?.success();
                                        break;
                                    }
                                }
                            }
                            log.flush()?;
                            return Ok(Finished {
                                outcome: Outcome::Fatal(cause),
                                qemu_exited,
                            });
                        }
                        match said {
                            Verdict::Continue => {}
                            Verdict::Done(c) => verdict = Some(Outcome::Done(c)),
                            Verdict::Stop(c) => {
                                log.flush()?;
                                return Ok(Finished {
                                    outcome: Outcome::Done(c),
                                    qemu_exited: false,
                                });
                            }
                            Verdict::Fail(m) => verdict = Some(Outcome::Failed(m)),
                            Verdict::Send(bytes) => {
                                stdin.write_all(&bytes)?;
                                stdin.flush()?;
                            }
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                log.flush()?;
                let status = child.0.wait()?;
                return Ok(Finished {
                    outcome: Outcome::Exited(status.code()),
                    qemu_exited: true,
                });
            }
        }
    }
    // The guest powered off (or failed). Keep logging (and showing the watcher) what
    // follows until QEMU exits by itself: QEMU 7.2 exits on PSCI SYSTEM_OFF, newer ones
    // may not, so after EXIT_GRACE it is killed and `qemu_exited` says so.
    let grace = Instant::now() + EXIT_GRACE;
    let mut qemu_exited = false;
    while Instant::now() < grace {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => {
                log.write_all(&chunk)?;
                if echo {
                    std::io::stdout().write_all(&chunk)?;
                }
                for b in chunk {
                    if b == b'\n' {
                        let _ = watch(String::from_utf8_lossy(&line).trim_end_matches('\r'));
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                qemu_exited = child.0.wait()?.success();
                break;
            }
        }
    }
    log.flush()?;
    Ok(Finished {
        outcome: verdict.unwrap_or(Outcome::TimedOut),
        qemu_exited,
    })
}

/// Run interactively with the terminal attached; returns QEMU's exit code.
pub fn run_interactive(inv: &Invocation) -> Result<u8> {
    let mut cmd = inv.command();
    let status = cmd.status().context("starting qemu-system-aarch64")?;
    match status.code() {
        Some(c) => Ok(c.clamp(0, 255) as u8),
        None => bail!("QEMU was killed by a signal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(console: Console) -> Invocation {
        Invocation {
            machine: Machine {
                smp: 2,
                mem_mib: 2048,
                el2: true,
                deterministic: false,
            },
            bios: "/c/bios.bin".into(),
            dtb: "/r/virt.dtb".into(),
            loads: vec![
                ("/c/Image".into(), 0x6000_0000),
                ("/r/initrd".into(), 0x4800_0000),
            ],
            console,
            secure_log: "/r/secure.log".into(),
            gdb_port: None,
            plugin: None,
            pflash1: None,
        }
    }

    #[test]
    fn u_boot_s_environment_is_the_second_flash_bank_read_only() {
        let mut i = inv(Console::Captured);
        assert!(!i.args().iter().any(|a| a.contains("pflash")));
        i.pflash1 = Some("/r/uboot-flash.img".into());
        let a = i.args();
        assert!(has_pair(
            &a,
            "-drive",
            "if=pflash,unit=1,format=raw,readonly=on,file=/r/uboot-flash.img"
        ));
        // -bios keeps the first bank (the secure flash, TF-A's BL1 and FIP).
        assert!(has_pair(&a, "-bios", "/c/bios.bin"));
    }

    fn has_pair(args: &[String], a: &str, b: &str) -> bool {
        args.windows(2).any(|w| w[0] == a && w[1] == b)
    }

    fn fatal_of(lines: &str) -> Vec<String> {
        let mut w = FatalWatch::default();
        lines.lines().filter_map(|l| w.feed(l)).collect()
    }

    #[test]
    fn moat_s_fatal_marker_reports_the_errors_just_before_it() {
        let got = fatal_of(
            "NOTICE:  BL31: v2.12.1(release):\n\
             (moat) error: first\n\
             (moat) info line\n\
             (moat) error: the boot configuration is unusable: hypervisor option `dom0_mem=zzz`\n\
             (moat) error: moat cannot continue; powering off (the hypervisor option noreboot keeps it parked)\n",
        );
        assert_eq!(
            got,
            ["(moat) error: the boot configuration is unusable: hypervisor option `dom0_mem=zzz`"]
        );
        // A marker with nothing before it reports itself; a panic line is its own cause.
        assert_eq!(
            fatal_of("(moat) error: moat cannot continue; noreboot: this CPU parks for a debugger"),
            ["(moat) error: moat cannot continue; noreboot: this CPU parks for a debugger"]
        );
        assert_eq!(
            fatal_of("\r(moat) PANIC on CPU 1: panicked at hv/src/trap.rs:10:5: boom"),
            ["(moat) PANIC on CPU 1: panicked at hv/src/trap.rs:10:5: boom"]
        );
        // Ordinary errors and warnings are not fatal.
        assert!(fatal_of("(moat) error: d0: bad thing\n(moat) warning: x\n").is_empty());
    }

    #[test]
    fn xen_s_panic_banner_reports_its_message() {
        let got = fatal_of(
            "(XEN) ****************************************\n\
             (XEN) Panic on CPU 0:\n\
             (XEN) Could not set up DOM0 guest OS (rc = -12)\n\
             (XEN) ****************************************\n\
             (XEN)\n\
             (XEN) Reboot in five seconds...\n",
        );
        assert_eq!(
            got,
            ["Xen panicked: Could not set up DOM0 guest OS (rc = -12)"]
        );
        // A banner that never closes still ends, after a bounded number of lines.
        let endless: String = core::iter::once("(XEN) Panic on CPU 1:\n".to_string())
            .chain((0..20).map(|i| format!("(XEN) line {i}\n")))
            .collect();
        let got = fatal_of(&endless);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("Xen panicked: line 0 / line 1"),
            "{got:?}"
        );
        // A guest printing the words is not Xen panicking.
        assert!(fatal_of("[   1.0] test: Panic on CPU 0 is a string\n").is_empty());
    }

    #[test]
    fn the_board_has_trustzone_el2_and_gicv3() {
        let a = inv(Console::Captured).args();
        assert!(has_pair(
            &a,
            "-machine",
            "virt,secure=on,virtualization=on,gic-version=3"
        ));
        assert!(has_pair(&a, "-smp", "2"));
        assert!(has_pair(&a, "-m", "2048M"));
        assert!(has_pair(&a, "-bios", "/c/bios.bin"));
        assert!(has_pair(&a, "-dtb", "/r/virt.dtb"));
    }

    #[test]
    fn deterministic_mode_is_opt_in_and_complete() {
        let mut i = inv(Console::Captured);
        let plain = i.args();
        for flag in ["-icount", "-rtc", "-seed"] {
            assert!(
                !plain.iter().any(|a| a == flag),
                "{flag} without deterministic"
            );
        }
        assert!(has_pair(&plain, "-cpu", "max,pauth-impdef=on"));
        i.machine.deterministic = true;
        let a = i.args();
        assert!(has_pair(&a, "-icount", "shift=0,sleep=off"));
        assert!(has_pair(&a, "-rtc", "base=2024-01-01T00:00:00,clock=vm"));
        assert!(has_pair(&a, "-seed", "1"));
        assert!(has_pair(
            &a,
            "-cpu",
            "max,pauth-impdef=on,cntfrq=1000000000"
        ));
        assert!(has_pair(
            &a,
            "-machine",
            "virt,secure=on,virtualization=on,gic-version=3,dtb-randomness=off"
        ));
        // The board (and so the dumped DTB's key) differs between the two modes.
        assert_ne!(
            i.machine.board_args(),
            inv(Console::Captured).machine.board_args()
        );
    }

    #[test]
    fn a_plugin_gets_its_arguments() {
        let mut i = inv(Console::Captured);
        assert!(!i.args().iter().any(|a| a == "-plugin"));
        i.plugin = Some(("/c/elcount.so".into(), vec!["out=/r/el.txt".into()]));
        assert!(has_pair(
            &i.args(),
            "-plugin",
            "file=/c/elcount.so,out=/r/el.txt"
        ));
    }

    #[test]
    fn a_board_without_el2_says_so() {
        let mut i = inv(Console::Captured);
        i.machine.el2 = false;
        assert!(has_pair(
            &i.args(),
            "-machine",
            "virt,secure=on,virtualization=off,gic-version=3"
        ));
    }

    #[test]
    fn images_are_loaded_at_their_addresses() {
        let a = inv(Console::Captured).args();
        assert!(has_pair(
            &a,
            "-device",
            "loader,file=/c/Image,addr=0x60000000"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "loader,file=/r/initrd,addr=0x48000000"
        ));
    }

    #[test]
    fn two_uarts_normal_world_first_then_secure() {
        let a = inv(Console::Captured).args();
        let serials: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| &w[1])
            .collect();
        assert_eq!(serials, ["stdio", "file:/r/secure.log"]);
        let b = inv(Console::Interactive {
            log: "/r/console.log".into(),
        })
        .args();
        let serials: Vec<&String> = b
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| &w[1])
            .collect();
        assert_eq!(serials, ["chardev:con0", "file:/r/secure.log"]);
        assert!(b.iter().any(|x| x.contains("logfile=/r/console.log")));
        assert!(has_pair(&b, "-echr", "0x1d"));
    }

    #[test]
    fn gdb_stub_halts_at_reset() {
        let mut i = inv(Console::Captured);
        i.gdb_port = Some(1234);
        let a = i.args();
        assert!(has_pair(&a, "-gdb", "tcp::1234"));
        assert!(a.contains(&"-S".to_string()));
    }
}
