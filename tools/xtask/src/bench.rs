// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask bench`: the same workload on none, Xen and moat, counted in instructions.
//!
//! ```text
//!   for hv in none, xen, moat:                 same TF-A, kernel, initramfs, load addresses
//!     prepare(hv, Machine { smp: 1, deterministic })   -icount shift=0, 1 GHz counter, …
//!     initramfs + overlay(null TA, moat-bench, /etc/moat/run = "moat-bench")
//!     repeat × (boot with -plugin elcount.so ─► console.log, elcount.txt)
//!       └─ every repeat must give the same client output and plugin report, byte for byte
//!   report: target/moat/bench/<timestamp>/report.md, results.csv, samples.csv, *.svg
//!   --check: moat against qemu/bench/thresholds.toml
//! ```
//!
//! Every figure is exact and repeatable: deterministic mode makes one counter tick one
//! instruction, and the boots are byte-for-byte reproducible, so there is no noise to
//! average away. The figures are TCG's instruction counts, not a real CPU's time.

use crate::bench_report::{self as report, Config, Thresholds};
use crate::instruments::{self, Instruments};
use crate::profile::{self, Choice, Ctx, Hv, StackArgs};
use crate::qemu::{self, Console, Machine, Outcome, Verdict};
use crate::{paths, resolve};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Boot every configuration this many times; all boots of a configuration must give
    /// byte-identical results (1: boot once and skip the check).
    #[arg(long, default_value_t = 2)]
    pub repeat: u32,
    /// Compare moat's figures with qemu/bench/thresholds.toml and exit 1 when one is
    /// exceeded (a regression).
    #[arg(long)]
    pub check: bool,
    /// The configurations to run, in this order (the headline needs all three).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,xen,moat"
    )]
    pub hv: Vec<Hv>,
    /// Also run xtest's own benchmark suite (`xtest -t benchmark`: trusted storage, SHA,
    /// AES) once per configuration, in a boot of its own, and add its figures to the report
    /// (about 6 more minutes per configuration on 2 cores).
    #[arg(long)]
    pub xtest: bool,
    /// Give up a measuring boot after this many seconds (one takes well under a minute);
    /// an `--xtest` boot gets three times as long.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Also attribute moat's EL2 instructions to the symbols of moat's ELF, per case
    /// (the plugin counts per translated block in moat's image; `nm` names them): a section
    /// of the report and `moat.profile.md`. The counts are the same as without it.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// What the guest runs.
const COMMAND: &str = "moat-bench";
/// What the guest runs with `--xtest`.
const XTEST_COMMAND: &str = "xtest -t benchmark";

/// The committed thresholds `--check` compares moat with.
fn thresholds_path() -> std::path::PathBuf {
    paths::workspace_root().join("qemu/bench/thresholds.toml")
}

/// The board every configuration runs on in the bench.
pub fn machine() -> Machine {
    Machine {
        smp: 1,
        mem_mib: 2048,
        el2: true,
        deterministic: true,
    }
}

/// One boot: its console, its plugin report, and how long it took.
struct Boot {
    console: String,
    elcount: String,
    cmdline: String,
    wall: f64,
}

/// Boot `p` with the instruments and run `cmd`; with `plugin`, count per EL with elcount.
fn boot(
    p: &profile::Prepared,
    inst: &Instruments,
    dir: &Path,
    timeout: Duration,
    cmd: &str,
    plugin: bool,
    profile_range: Option<(u64, u64)>,
) -> Result<Boot> {
    let overlay = instruments::overlay(inst, cmd)?;
    let mut inv = profile::invocation_with_overlay(p, Some(overlay), dir, Console::Captured)?;
    let el_path = dir.join("elcount.txt");
    if plugin {
        let mut args = vec![format!("out={}", el_path.display())];
        if let Some((lo, hi)) = profile_range {
            args.push(format!("profile={lo:x}:{hi:x}"));
        }
        inv.plugin = Some((inst.plugin.clone(), args));
    }
    let console_log = dir.join("console.log");
    let start = Instant::now();
    let mut progress = 0usize;
    let finished = qemu::run_captured(&inv, &console_log, timeout, false, |line| {
        if let Some(code) = profile::run_exit(line) {
            return Verdict::Done(code);
        }
        if line.contains("Kernel panic") || line.contains("moat-bench: error") {
            return Verdict::Fail(line.to_string());
        }
        if let Some(rest) = line.split("moat-bench: case ").nth(1) {
            progress += 1;
            let name = rest.split(' ').next().unwrap_or("?");
            println!(
                "    {progress:2}. {name:12} measured at {:5.1}s",
                start.elapsed().as_secs_f64()
            );
        } else if let Some(test) = line.strip_prefix("* benchmark_") {
            println!(
                "    benchmark_{test} at {:.1}s",
                start.elapsed().as_secs_f64()
            );
        } else if line.contains("moat-init: ready") {
            println!("    booted at {:.1}s", start.elapsed().as_secs_f64());
        }
        Verdict::Continue
    })?;
    let wall = start.elapsed().as_secs_f64();
    let logs = format!(
        "console log: {}\n  QEMU's stderr: {}",
        console_log.display(),
        dir.join("qemu-stderr.log").display()
    );
    match finished.outcome {
        Outcome::Done(0) => {}
        Outcome::Done(code) => bail!("`{cmd}` exited with status {code}\n  {logs}"),
        Outcome::Failed(line) => bail!("the guest failed: {line}\n  {logs}"),
        Outcome::Fatal(cause) => {
            bail!("the hypervisor stopped with a fatal error: {cause}\n  {logs}")
        }
        Outcome::Exited(code) => bail!("QEMU exited ({code:?}) before the bench ended\n  {logs}"),
        Outcome::TimedOut => bail!("timed out after {} s\n  {logs}", timeout.as_secs()),
    }
    if plugin && !finished.qemu_exited {
        bail!("QEMU did not exit after the guest powered off, so the plugin wrote no summary\n  {logs}");
    }
    Ok(Boot {
        console: std::fs::read_to_string(&console_log)?,
        elcount: match plugin {
            true => std::fs::read_to_string(&el_path)
                .with_context(|| format!("reading {}", el_path.display()))?,
            false => String::new(),
        },
        cmdline: std::fs::read_to_string(dir.join("qemu-cmdline.txt"))?,
        wall,
    })
}

fn hv_name(hv: Hv) -> String {
    format!("{hv:?}").to_lowercase()
}

/// Run one configuration `repeat` times and check that every run measured the same.
fn run_config(
    ctx: &mut Ctx,
    hv: Hv,
    inst: &Instruments,
    out: &Path,
    args: &BenchArgs,
) -> Result<Config> {
    let name = hv_name(hv);
    let p = profile::prepare(ctx, hv, &machine(), &Choice::default())?;
    // --profile: moat's ELF (beside its flat image) and the range of its image.
    let symbols = match (args.profile, hv, &p.hypervisor) {
        (true, Hv::Moat, Some(bin)) => {
            let elf = bin.with_extension("");
            let out = std::process::Command::new("aarch64-linux-gnu-nm")
                .args(["-n", "--defined-only", "-C"])
                .arg(&elf)
                .output()
                .with_context(|| format!("running aarch64-linux-gnu-nm on {}", elf.display()))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let find = |name: &str| {
                text.lines()
                    .find(|l| l.ends_with(&format!(" {name}")))
                    .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
                    .with_context(|| format!("{} has no symbol {name}", elf.display()))
            };
            let range = (find("__image_start")?, find("__hv_end")?);
            Some((report::parse_nm(&text), range))
        }
        _ => None,
    };
    let mut boots = Vec::new();
    for k in 1..=args.repeat.max(1) {
        println!("==> bench: {name}, boot {k} of {}", args.repeat.max(1));
        let dir = out.join(format!("{name}-{k}"));
        std::fs::create_dir_all(&dir)?;
        let b = boot(
            &p,
            inst,
            &dir,
            Duration::from_secs(args.timeout),
            COMMAND,
            true,
            symbols.as_ref().map(|(_, r)| *r),
        )?;
        // The initrd is the cached initramfs plus the overlay: not worth keeping per boot.
        let _ = std::fs::remove_file(dir.join("initrd.cpio"));
        println!("  ✓ {name}, boot {k}: {:.1}s", b.wall);
        boots.push(b);
    }
    let first = &boots[0];
    let client = report::parse_client(&first.console)
        .with_context(|| format!("{name}: the client's output"))?;
    let el = report::parse_elcount(&first.elcount)
        .with_context(|| format!("{name}: the plugin's report"))?;
    report::check_consistent(&client, &el).with_context(|| name.clone())?;
    // The measurements: the client's lines and the plugin's window lines. (The plugin's
    // last line also counts what runs after the guest powered off, until QEMU's main loop
    // acts on the request: a few EL3 instructions that depend on the host's timing.)
    let measured = |b: &Boot| {
        (
            report::client_lines(&b.console).join("\n"),
            report::window_lines(&b.elcount).join("\n"),
        )
    };
    let identical = boots.iter().all(|b| measured(b) == measured(first));
    let console_identical = boots.iter().all(|b| b.console == first.console);
    if !identical {
        bail!(
            "{name}: the {} boots measured different figures: deterministic mode is broken \
             (compare {}/{name}-*/console.log and elcount.txt)",
            boots.len(),
            out.display()
        );
    }
    std::fs::write(
        out.join(format!("{name}.stack.resolved")),
        resolve::record_text(&p.resolved),
    )?;
    if let Some((syms, _)) = &symbols {
        let prof = report::attribute_profile(&first.elcount, syms, &client)
            .with_context(|| format!("{name}: the plugin's profile"))?;
        let md = report::profile_md(&prof, 25);
        std::fs::write(out.join(format!("{name}.profile.md")), &md)?;
        if let Some((case, costs)) = prof.first() {
            println!("  {name}, {case}: EL2 instructions per call by symbol (top 10)");
            for c in costs.iter().take(10) {
                println!("    {:>8.0}  {}", c.per_call, c.symbol);
            }
        }
    }
    // xtest's suite runs in a boot of its own, without the plugin: with it the suite takes
    // three times as long (over 10 minutes a configuration). Its figures are virtual time
    // of an uninstrumented boot. A failure there is reported and does not cost the
    // measurements.
    let xtest = match args.xtest {
        false => None,
        true => {
            println!("==> bench: {name}, xtest -t benchmark");
            let dir = out.join(format!("{name}-xtest"));
            std::fs::create_dir_all(&dir)?;
            let result = boot(
                &p,
                inst,
                &dir,
                Duration::from_secs(args.timeout * 3),
                XTEST_COMMAND,
                false,
                None,
            )
            .and_then(|b| {
                println!("  ✓ {name}, xtest -t benchmark: {:.1}s", b.wall);
                report::parse_xtest_benchmark(&b.console)
            })
            .map_err(|e| format!("{e:#}"));
            let _ = std::fs::remove_file(dir.join("initrd.cpio"));
            if let Err(e) = &result {
                eprintln!("  ✗ {name}, xtest -t benchmark: {e}");
            }
            Some(result)
        }
    };
    Ok(Config {
        name,
        client,
        el,
        wall: boots.iter().map(|b| b.wall).collect(),
        cmdline: first.cmdline.clone(),
        identical,
        console_identical,
        xtest,
    })
}

/// The report's text.
fn report_md(
    configs: &[Config],
    inst: &Instruments,
    repeat: u32,
    out: &Path,
    total_wall: f64,
) -> Result<String> {
    let mut s = String::from("# moat bench report\n\n");
    writeln!(
        s,
        "Per-call instruction counts of the same client and null TA on the same TF-A, \
         kernel, initramfs and load addresses, with no hypervisor (`none`), stock Xen 4.17 \
         and moat. QEMU TCG in deterministic mode (`-icount shift=0,sleep=off`, a {} Hz \
         generic timer, `-smp 1`, fixed `-rtc` and `-seed`, `dtb-randomness=off`): one \
         counter tick is one instruction. These are emulated instruction counts, not time on \
         a real CPU.\n",
        report::CNTFRQ
    )?;
    let all_identical = configs.iter().all(|c| c.identical);
    if repeat > 1 {
        writeln!(
            s,
            "**Reproducibility:** every configuration was booted {repeat} times; the client's \
             output and the plugin's report were {} byte for byte (whole console logs: {}).\n",
            if all_identical {
                "identical"
            } else {
                "NOT identical"
            },
            configs
                .iter()
                .map(|c| format!(
                    "{} {}",
                    c.name,
                    if c.console_identical {
                        "identical"
                    } else {
                        "different"
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    } else {
        s.push_str("**Reproducibility:** not checked (`--repeat 1`).\n\n");
    }
    writeln!(
        s,
        "CNTFRQ_EL0 as the guest reads it: {}.\n",
        configs
            .iter()
            .map(|c| format!("{} {}", c.name, c.client.cntfrq))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if configs.len() == 3 {
        s.push_str("## Headline\n\nMedians of 1000 calls after 100 warm-up calls, instructions per call across every exception level (from the counter).\n\n");
        s.push_str(&report::headline(configs)?);
        s.push_str("\n![medians](medians.svg)\n\n![overhead](overhead.svg)\n\n");
        s.push_str("## EL2 instructions per call\n\nFrom the elcount TCG plugin (`qemu/bench/plugin/elcount.c`): instructions executed in the EL2 regime between the client's markers, median over the 1000 calls.\n\n");
        s.push_str(&report::el2_table(configs)?);
        s.push_str("\n## Against the issue's reference figures\n\nMeasured independently of this project (moat at 076bc72, QEMU 7.2, 1 GHz counter, medians).\n\n");
        s.push_str(&report::reference_table(configs)?);
    }
    s.push_str("\n## Every case, per configuration\n\nmin / median / p99 / mean from the counter; the per-level columns are the plugin's medians (instructions per call). `el2` is the EL2 regime (a hypervisor), `el2h` VHE's EL2&0 regime (Linux itself at EL2 when no hypervisor runs).\n");
    for c in configs {
        writeln!(s, "\n### {}\n", c.name)?;
        s.push_str(&report::config_table(c)?);
        writeln!(
            s,
            "\nPlugin: {} pages changed level (conflicts), {} accesses of an unknown MMU index, {} instructions forwarded to the next known level over the whole boot.",
            c.el.conflicts, c.el.unclassified, c.el.forwarded
        )?;
    }
    let xtest: Vec<(String, Vec<report::XtestCase>)> = configs
        .iter()
        .filter_map(|c| match &c.xtest {
            Some(Ok(x)) => Some((c.name.clone(), x.clone())),
            _ => None,
        })
        .collect();
    for c in configs {
        if let Some(Err(e)) = &c.xtest {
            writeln!(s, "\n**xtest -t benchmark failed under {}:** {e}\n", c.name)?;
        }
    }
    if !xtest.is_empty() {
        s.push_str("\n## xtest's own benchmark suite (`xtest -t benchmark`)\n\nOP-TEE's benchmarks, as xtest prints them, booted once per configuration in the same deterministic mode. xtest times them with the guest's clock, which here is QEMU's virtual time: one virtual second is 10⁹ instructions, so `kB/s` and `µs` are per 10⁹ instructions, not real time. The storage tests go through tee-supplicant and the REE file system (ramfs).\n\n");
        s.push_str(&report::xtest_table(&xtest));
    }
    s.push_str(
        "\n## Wall time (emulator time, not a measurement)\n\n| config | boots (s) |\n|---|---|\n",
    );
    for c in configs {
        writeln!(
            s,
            "| {} | {} |",
            c.name,
            c.wall
                .iter()
                .map(|w| format!("{w:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(s, "\nWhole bench: {total_wall:.0} s.\n")?;
    writeln!(
        s,
        "## Inputs\n\nQEMU: {}. Instruments: {}.\n",
        crate::host::qemu_version()?,
        inst.description
    )?;
    s.push_str("The resolved stack of each configuration is in `<config>.stack.resolved` next to this report. QEMU command lines:\n\n");
    for c in configs {
        writeln!(s, "- {}:\n  ```\n  {}\n  ```", c.name, c.cmdline.trim())?;
    }
    writeln!(
        s,
        "\nFiles: `results.csv` (one row per configuration and case), `samples.csv` (every \
         sample), the plots, and per boot `<config>-<k>/` (console.log, secure.log, \
         elcount.txt, qemu-cmdline.txt). Directory: `{}`.",
        out.display()
    )?;
    Ok(s)
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<u8> {
    let start = Instant::now();
    let mut ctx = Ctx::new(&args.stack)?;
    let inst = instruments::build(&mut ctx)?;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = paths::run_dir(&format!("bench/{}", report::timestamp(unix)))?;
    println!("bench: {}", out.display());
    let mut configs = Vec::new();
    for hv in &args.hv {
        let t = Instant::now();
        configs.push(run_config(&mut ctx, *hv, &inst, &out, args)?);
        println!(
            "  ✓ bench: {} done in {:.1}s",
            hv_name(*hv),
            t.elapsed().as_secs_f64()
        );
    }
    std::fs::write(out.join("results.csv"), report::results_csv(&configs))?;
    std::fs::write(out.join("samples.csv"), report::samples_csv(&configs))?;
    for (name, svg) in report::plots(&configs)? {
        std::fs::write(out.join(name), svg)?;
    }
    let md = report_md(
        &configs,
        &inst,
        args.repeat,
        &out,
        start.elapsed().as_secs_f64(),
    )?;
    let mut md = md;
    if let Ok(p) = std::fs::read_to_string(out.join("moat.profile.md")) {
        md.push_str(
            "\n## moat's EL2 instructions by symbol (--profile)\n\nFrom elcount's per-block              counts inside the samples, attributed with `nm` to moat's ELF; per call, the 25              largest per case.\n",
        );
        md.push_str(&p);
    }
    std::fs::write(out.join("report.md"), &md)?;
    if configs.len() == 3 {
        println!("\n{}", report::headline(&configs)?);
        println!("{}", report::el2_table(&configs)?);
    }
    println!("report: {}", out.join("report.md").display());
    let xtest_failed = configs.iter().any(|c| matches!(c.xtest, Some(Err(_))));
    if xtest_failed {
        eprintln!(
            "bench: xtest -t benchmark failed in at least one configuration (see the report)"
        );
    }
    if args.check {
        let moat = configs
            .iter()
            .find(|c| c.name == "moat")
            .context("--check needs the moat configuration")?;
        let path = thresholds_path();
        let t: Thresholds = toml::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        let failed = report::check(moat, &t);
        if !failed.is_empty() {
            eprintln!("bench --check: moat exceeds {}:", path.display());
            for f in &failed {
                eprintln!("  {f}");
            }
            return Ok(1);
        }
        println!("bench --check: moat is within {}", path.display());
    }
    Ok(u8::from(xtest_failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_board_is_deterministic_with_one_cpu() {
        let m = machine();
        assert!(m.deterministic && m.el2);
        assert_eq!(m.smp, 1);
        let a = m.board_args();
        assert!(a.windows(2).any(|w| w == ["-icount", "shift=0,sleep=off"]));
        // moat and Xen are told about the single CPU.
        assert!(crate::moat::hv_bootargs(&m).contains("dom0_max_vcpus=1"));
        assert!(crate::xen::hv_bootargs(&m).contains("dom0_max_vcpus=1"));
    }
}
