// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask test`: host unit tests, the EL2 build, and QEMU scenarios.
//!
//! A scenario is data in `tests/scenarios/<name>.toml`: which profile to boot, the command
//! to run in the guest, the markers that must appear (in order) on the console and on
//! OP-TEE's secure UART, markers that must never appear, the expected exit status, and a
//! timeout. Pass or fail comes only from those markers and the exit status.

use crate::profile::{self, Hv};
use crate::qemu::{self, Console, Finished, Machine, Outcome, Verdict};
use crate::{paths, step};
use anyhow::{Context, Result};
use regex::Regex;
use serde::Deserialize;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Also run libFuzzer for 10^7 executions on each fuzz target (installing nightly and
    /// cargo-fuzz if missing), the long scenarios (xtest's whole default suite), then
    /// `cargo xtask bench --check`.
    #[arg(long)]
    pub full: bool,
    /// Skip the host unit tests and the EL2 build; run only QEMU scenarios.
    #[arg(long)]
    pub scenarios_only: bool,
    /// Run only scenarios whose name contains one of these words.
    pub filter: Vec<String>,
    #[command(flatten)]
    pub stack: crate::profile::StackArgs,
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(skip)]
    pub name: String,
    /// What the scenario shows, in a sentence.
    pub description: String,
    pub hv: HvName,
    /// How the profile is booted: `"direct"` (default) or `"u-boot"`, as `cargo xtask qemu
    /// --boot`.
    #[serde(default)]
    pub boot: crate::profile::Boot,
    /// Shell command run in the guest by /init (Linux dom0; none with `dom0 = "hostile"`).
    #[serde(default)]
    pub run: String,
    /// What dom0 boots: `"linux"` (default) or `"hostile"`, the hostile guest
    /// (tests/guests/hostile), whose last line `hostile: done, status N` ends the run with
    /// status N (moat only).
    #[serde(default)]
    pub dom0: crate::profile::Dom0,
    /// With `dom0 = "hostile"`: its options, e.g. `"seed=1 cases=200"` or `"mode=threads"`.
    #[serde(default)]
    pub dom0_args: Option<String>,
    pub timeout_secs: u64,
    /// Only with `--full`.
    #[serde(default)]
    pub full: bool,
    #[serde(default = "default_smp")]
    pub smp: u32,
    #[serde(default = "default_mem")]
    pub mem: u32,
    /// The command's expected exit status.
    #[serde(default)]
    pub exit_status: u8,
    /// Regexes that must match console lines, in this order.
    #[serde(default)]
    pub console: Vec<String>,
    /// Regexes that must match lines of OP-TEE's secure-UART log, in this order.
    #[serde(default)]
    pub secure: Vec<String>,
    /// Regexes that must match no line of OP-TEE's secure-UART log (an OP-TEE panic, a
    /// resource it ran out of), checked once the run is over.
    #[serde(default)]
    pub secure_forbid: Vec<String>,
    /// The board implements EL2 (default). `false` boots a hypervisor at EL1, to check it
    /// refuses clearly.
    #[serde(default = "default_true")]
    pub el2: bool,
    /// `--hv xen` only: add Xen's toolstack and an `xl` domU to dom0 (`--xen-toolstack`).
    #[serde(default)]
    pub xen_toolstack: bool,
    /// Another OP-TEE build than the profile's own.
    #[serde(default)]
    pub optee: Option<crate::stack::OpteeFlavour>,
    /// Extra hypervisor options for this scenario (appended to `xen,xen-bootargs`).
    #[serde(default)]
    pub hv_args: Option<String>,
    /// End the run successfully when a console line matches this regex, instead of
    /// waiting for the command's exit (for boots that are meant to stop early).
    #[serde(default)]
    pub until: Option<String>,
    /// End the run successfully once every one of these regexes has matched a console line,
    /// in any order (two guests finishing at their own pace).
    #[serde(default)]
    pub until_all: Vec<String>,
    /// Type `send` on the console (once) when a console line matches this regex.
    #[serde(default)]
    pub send_after: Option<String>,
    /// What to type (TOML escapes such as `\u0001` for Ctrl-a work).
    #[serde(default)]
    pub send: Option<String>,
    /// Boot this many dom0less domUs beside dom0 (moat), as `cargo xtask qemu --domu N`.
    #[serde(default)]
    pub domus: u32,
    /// With `domus`: the command every domU runs.
    #[serde(default)]
    pub domu_run: Option<String>,
    /// With `domus`: one command per domU, in order (d1, d2, ...); not with `domu_run`.
    #[serde(default)]
    pub domu_runs: Vec<String>,
    /// The guest's power-off must end QEMU by itself (checked after the command exits).
    #[serde(default)]
    pub poweroff: bool,
    /// Regexes that fail the scenario at once if a console line matches.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// The guest kernel's series (qemu/stack.toml's `kernel.series`); default: the manifest's.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The run must end in a fatal hypervisor error whose cause matches this regex (xtask's
    /// own recognition of moat's fatal marker or Xen's panic, not a console marker).
    #[serde(default)]
    pub fatal: Option<String>,
    /// With `fatal`: QEMU must still be running when the error is seen (the hypervisor
    /// parked, as with `noreboot`), instead of having powered off.
    #[serde(default)]
    pub parks: bool,
    /// Skip xtask's own checks of `smp` and `hv_args`, to reach the hypervisor's.
    #[serde(default)]
    pub unchecked: bool,
    /// Not a boot: `cargo xtask qemu --hv <hv> --run <run> <xtask_args>` must be refused
    /// before anything is built, with an error matching `refused`.
    #[serde(default)]
    pub xtask_args: Vec<String>,
    #[serde(default)]
    pub refused: Option<String>,
    /// Lock ids whose locked version is replaced by one that does not exist, to exercise the
    /// fallback: each must resolve to the newest version in its suite with exactly one
    /// warning, and `stack.resolved` must record the fallback.
    #[serde(default)]
    pub drift: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HvName {
    None,
    Moat,
    Xen,
}

impl From<HvName> for Hv {
    fn from(h: HvName) -> Hv {
        match h {
            HvName::None => Hv::None,
            HvName::Moat => Hv::Moat,
            HvName::Xen => Hv::Xen,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_smp() -> u32 {
    2
}
fn default_mem() -> u32 {
    2048
}

impl Scenario {
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let mut s: Scenario = toml::from_str(text).with_context(|| format!("scenario {name}"))?;
        s.name = name.to_string();
        for re in s
            .console
            .iter()
            .chain(&s.secure)
            .chain(&s.secure_forbid)
            .chain(&s.forbid)
            .chain(&s.until)
            .chain(&s.fatal)
            .chain(&s.refused)
            .chain(&s.until_all)
            .chain(&s.send_after)
        {
            Regex::new(re).with_context(|| format!("scenario {name}: bad regex {re:?}"))?;
        }
        anyhow::ensure!(
            s.timeout_secs > 0,
            "scenario {name}: timeout_secs must be > 0"
        );
        anyhow::ensure!(
            s.xtask_args.is_empty() == s.refused.is_none(),
            "scenario {name}: xtask_args and refused go together"
        );
        anyhow::ensure!(
            !s.parks || s.fatal.is_some(),
            "scenario {name}: parks needs fatal"
        );
        anyhow::ensure!(
            s.send_after.is_some() == s.send.is_some(),
            "scenario {name}: send_after and send go together"
        );
        let hostile = s.dom0 == crate::profile::Dom0::Hostile;
        anyhow::ensure!(
            s.run.is_empty() == hostile,
            "scenario {name}: `run` is what Linux dom0's /init runs: required with a Linux \
             dom0, none with dom0 = \"hostile\""
        );
        anyhow::ensure!(
            !hostile || s.hv == HvName::Moat,
            "scenario {name}: dom0 = \"hostile\" needs hv = \"moat\""
        );
        anyhow::ensure!(
            hostile || s.dom0_args.is_none(),
            "scenario {name}: dom0_args needs dom0 = \"hostile\""
        );
        Ok(s)
    }

    /// All scenarios under `tests/scenarios`, sorted by name.
    pub fn load_all() -> Result<Vec<Self>> {
        let dir = paths::workspace_root().join("tests/scenarios");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                v.push(Self::parse(&name, &std::fs::read_to_string(&p)?)?);
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

/// Regexes that must match lines in order.
pub struct Ordered {
    pats: Vec<Regex>,
    next: usize,
}

impl Ordered {
    pub fn new(pats: &[String]) -> Result<Self> {
        Ok(Self {
            pats: pats
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            next: 0,
        })
    }
    pub fn feed(&mut self, line: &str) {
        if self.pats.get(self.next).is_some_and(|p| p.is_match(line)) {
            self.next += 1;
        }
    }
    pub fn missing(&self) -> Vec<String> {
        self.pats[self.next..]
            .iter()
            .map(|p| p.as_str().to_string())
            .collect()
    }
}

/// Everything that went wrong in one scenario (empty: it passed).
pub fn judge(
    s: &Scenario,
    run: &Finished,
    console: &Ordered,
    secure_log: &str,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    if s.poweroff && matches!(run.outcome, Outcome::Done(_)) && !run.qemu_exited {
        problems.push("the guest's power-off did not end QEMU".to_string());
    }
    match (&s.fatal, &run.outcome) {
        (Some(want), Outcome::Fatal(cause)) => {
            if !Regex::new(want)?.is_match(cause) {
                problems.push(format!("fatal error {cause:?} does not match /{want}/"));
            }
            match (s.parks, run.qemu_exited) {
                (false, false) => problems.push(
                    "after the fatal error the machine did not power off (QEMU was still running)"
                        .to_string(),
                ),
                (true, true) => {
                    problems.push("noreboot should have parked, but the machine powered off".into())
                }
                _ => {}
            }
            return finish(problems, s, console, secure_log);
        }
        (Some(want), other) => {
            problems.push(format!(
                "expected a fatal error /{want}/, but the run ended: {other:?}"
            ));
            return finish(problems, s, console, secure_log);
        }
        (None, _) => {}
    }
    match &run.outcome {
        Outcome::Fatal(cause) => problems.push(format!("the hypervisor stopped: {cause}")),
        Outcome::Done(code) if *code == s.exit_status => {}
        Outcome::Done(code) => {
            problems.push(format!("exit status {code}, expected {}", s.exit_status))
        }
        Outcome::Failed(line) => problems.push(format!("forbidden line: {line}")),
        Outcome::Exited(code) => problems.push(format!(
            "QEMU exited ({code:?}) before the command finished"
        )),
        Outcome::TimedOut => problems.push(format!("timed out after {} s", s.timeout_secs)),
    }
    finish(problems, s, console, secure_log)
}

/// The marker checks every scenario ends with.
fn finish(
    mut problems: Vec<String>,
    s: &Scenario,
    console: &Ordered,
    secure_log: &str,
) -> Result<Vec<String>> {
    for m in console.missing() {
        problems.push(format!("console marker not seen: /{m}/"));
    }
    let mut sec = Ordered::new(&s.secure)?;
    for line in secure_log.lines() {
        sec.feed(line.trim_end_matches('\r'));
    }
    for m in sec.missing() {
        problems.push(format!("secure-UART marker not seen: /{m}/"));
    }
    for re in &s.secure_forbid {
        let re = Regex::new(re)?;
        if let Some(line) = secure_log.lines().find(|l| re.is_match(l)) {
            problems.push(format!(
                "forbidden secure-UART line: {}",
                line.trim_end_matches('\r')
            ));
        }
    }
    Ok(problems)
}

/// The version a drift scenario writes into the lock: sorts just below the locked one and
/// exists nowhere.
pub fn drifted(version: &str) -> String {
    format!("{version}~moat-drift")
}

/// Problems of a drift scenario's resolution: each drifted id must have fallen back, with a
/// warning that names its package, and nothing else may have warned.
pub fn judge_drift(drift: &[String], resolved: &[crate::resolve::Resolved]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut warned = std::collections::BTreeSet::new();
    for r in resolved {
        if r.warning.is_some() && !warned.insert(r.id.clone()) {
            problems.push(format!("{} warned more than once", r.id));
        }
    }
    for id in drift {
        match resolved.iter().find(|r| &r.id == id) {
            None => problems.push(format!("{id} was not resolved by this boot")),
            Some(r) => {
                if !matches!(r.origin, crate::resolve::Origin::Fallback { .. }) {
                    problems.push(format!("{id} did not fall back ({:?})", r.origin));
                }
                if !r.warning.as_deref().is_some_and(|w| w.contains(&r.package)) {
                    problems.push(format!("{id}: no warning naming {}", r.package));
                }
                if !r.record().contains("FALLBACK from locked") {
                    problems.push(format!("{id}: stack.resolved does not record the fallback"));
                }
            }
        }
    }
    for id in &warned {
        if !drift.contains(id) {
            problems.push(format!("unexpected warning for {id}"));
        }
    }
    problems
}

/// Boot one scenario and judge it. Returns the problems found.
fn run_one(ctx: &mut profile::Ctx, s: &Scenario) -> Result<Vec<String>> {
    if let Some(want) = &s.refused {
        return judge_refusal(s, want);
    }
    if !s.unchecked {
        profile::check_smp(s.smp).map_err(|e| anyhow::anyhow!("smp: {e}"))?;
        anyhow::ensure!(
            (1024..=16384).contains(&s.mem)
                && (s.hv == HvName::None || s.mem >= profile::MIN_MEM_WITH_HV),
            "mem: {} MiB is outside what `cargo xtask qemu --mem` accepts",
            s.mem
        );
        if let (HvName::Moat, Some(extra)) = (s.hv, &s.hv_args) {
            profile::check_moat_args(extra).map_err(|e| anyhow::anyhow!("hv_args: {e}"))?;
        }
    }
    let machine = Machine {
        smp: s.smp,
        mem_mib: s.mem,
        el2: s.el2,
        deterministic: false,
    };
    if s.xen_toolstack && s.hv != HvName::Xen {
        anyhow::bail!("scenario {}: xen_toolstack needs hv = \"xen\"", s.name);
    }
    let choice = profile::Choice {
        optee: s.optee,
        kernel: s.kernel.clone(),
        xen: crate::xen::Options {
            flavour: crate::xen::Flavour::Release,
            toolstack: s.xen_toolstack,
        },
        boot: s.boot,
    };
    let mut drift_ctx;
    let ctx = if s.drift.is_empty() {
        ctx
    } else {
        // A resolver of its own, over a lock with the drifted entries.
        drift_ctx = profile::Ctx::new(&crate::profile::StackArgs::default())?;
        for id in &s.drift {
            let v = drift_ctx
                .res
                .lock_entry(id)
                .with_context(|| format!("scenario {}: qemu/stack.lock has no {id}", s.name))?
                .version
                .clone();
            drift_ctx.res.override_locked_version(id, &drifted(&v))?;
        }
        &mut drift_ctx
    };
    let mut p = profile::prepare(ctx, s.hv.into(), &machine, &choice)?;
    let drift_problems = judge_drift(&s.drift, &p.resolved);
    if let Some(extra) = &s.hv_args {
        p.hv_bootargs = format!("{} {extra}", p.hv_bootargs).trim().to_string();
    }
    if s.domus > 0 {
        anyhow::ensure!(
            s.hv == HvName::Moat,
            "scenario {}: domus needs hv = \"moat\"",
            s.name
        );
    }
    anyhow::ensure!(
        s.domu_run.is_none() || s.domu_runs.is_empty(),
        "scenario {}: domu_run (one for all) and domu_runs (one each) exclude each other",
        s.name
    );
    let runs: Vec<String> = s
        .domu_run
        .iter()
        .cloned()
        .chain(s.domu_runs.clone())
        .collect();
    for run in profile::domu_runs(&runs, s.domus)? {
        profile::add_domu(
            &mut p,
            profile::DomUReq {
                run,
                memory_mib: profile::DOMU_MEMORY_MIB,
                cpus: 1,
                tee: true,
            },
        )?;
    }
    if s.dom0 == crate::profile::Dom0::Hostile {
        profile::use_hostile_dom0(&mut p, s.hv.into(), s.dom0_args.as_deref().unwrap_or(""))?;
    }
    let until = s.until.as_deref().map(Regex::new).transpose()?;
    let until_all: Vec<Regex> = s
        .until_all
        .iter()
        .map(|r| Regex::new(r))
        .collect::<Result<_, _>>()?;
    let mut seen_all = vec![false; until_all.len()];
    let send_after = s.send_after.as_deref().map(Regex::new).transpose()?;
    let mut to_send = s.send.clone().map(String::into_bytes);
    let dir = paths::run_dir(&format!("test-{}", s.name))?;
    let run = (!s.run.is_empty()).then_some(s.run.as_str());
    let inv = profile::invocation(&p, run, &dir, Console::Captured)?;
    let console_log = dir.join("console.log");
    let mut console = Ordered::new(&s.console)?;
    let forbid: Vec<Regex> = s
        .forbid
        .iter()
        .map(|r| Regex::new(r))
        .collect::<Result<_, _>>()?;
    let finished = qemu::run_captured(
        &inv,
        &console_log,
        Duration::from_secs(s.timeout_secs),
        false,
        |line| {
            console.feed(line);
            if forbid.iter().any(|f| f.is_match(line)) {
                return Verdict::Fail(line.to_string());
            }
            if until.as_ref().is_some_and(|u| u.is_match(line)) {
                return Verdict::Stop(s.exit_status);
            }
            for (seen, re) in seen_all.iter_mut().zip(&until_all) {
                *seen |= re.is_match(line);
            }
            if !until_all.is_empty() && seen_all.iter().all(|&x| x) {
                return Verdict::Stop(s.exit_status);
            }
            if send_after.as_ref().is_some_and(|r| r.is_match(line)) {
                if let Some(bytes) = to_send.take() {
                    return Verdict::Send(bytes);
                }
            }
            match p.exit_status(line) {
                Some(code) => Verdict::Done(code),
                None => Verdict::Continue,
            }
        },
    )?;
    let secure =
        String::from_utf8_lossy(&std::fs::read(&inv.secure_log).unwrap_or_default()).into_owned();
    let mut problems = drift_problems;
    problems.extend(judge(s, &finished, &console, &secure)?);
    Ok(problems)
}

/// A refusal scenario: the command line must be refused before anything is built.
fn judge_refusal(s: &Scenario, want: &str) -> Result<Vec<String>> {
    use clap::Parser;
    let hv = format!("{:?}", s.hv).to_lowercase();
    let mut argv: Vec<String> = ["cargo xtask qemu", "--hv", &hv, "--run", &s.run]
        .iter()
        .map(|a| a.to_string())
        .collect();
    if s.boot == crate::profile::Boot::UBoot {
        argv.extend(["--boot".to_string(), "u-boot".to_string()]);
    }
    argv.extend(s.xtask_args.iter().cloned());
    let refusal = match profile::QemuCli::try_parse_from(&argv) {
        Err(e) => Some(e.to_string()),
        Ok(cli) => profile::check_args(&cli.args).err().map(|e| e.to_string()),
    };
    std::fs::write(
        paths::run_dir(&format!("test-{}", s.name))?.join("refusal.txt"),
        format!(
            "{}\n{}\n",
            argv.join(" "),
            refusal.as_deref().unwrap_or("(accepted)")
        ),
    )?;
    Ok(match refusal {
        None => vec![format!("`{}` was accepted", argv.join(" "))],
        Some(msg) if Regex::new(want)?.is_match(&msg) => vec![],
        Some(msg) => vec![format!("refused, but with {msg:?}, not /{want}/")],
    })
}

fn host_tests(full: bool) -> Result<()> {
    let root = paths::workspace_root();
    step::run_visible(
        "host unit tests (cargo test)",
        Command::new(paths::cargo()).current_dir(&root).args([
            "test",
            "--workspace",
            "--exclude",
            "hv",
            "--exclude",
            "boot",
            "--exclude",
            "moat-hostile-guest",
        ]),
    )?;
    crate::host::ensure_rust_target()?;
    step::run_visible(
        "EL2 crates build (aarch64-unknown-none-softfloat)",
        Command::new(paths::cargo()).current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "boot",
            "--target",
            paths::TARGET,
        ]),
    )?;
    // The fuzz drivers were replayed on 10,000 seeded inputs each by `cargo test` above;
    // `--full` also runs libFuzzer on them at scale.
    if full {
        crate::fuzz::run_all(crate::fuzz::FULL_RUNS)?;
    }
    Ok(())
}

/// `cargo xtask test`.
pub fn test(args: &TestArgs) -> Result<u8> {
    if !args.scenarios_only {
        host_tests(args.full)?;
    }
    let all = Scenario::load_all()?;
    let mut ctx = profile::Ctx::new(&args.stack)?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for s in &all {
        let selected =
            args.filter.is_empty() || args.filter.iter().any(|f| s.name.contains(f.as_str()));
        if !selected || (s.full && !args.full) {
            skipped += 1;
            continue;
        }
        println!("==> scenario {}: {}", s.name, s.description);
        let start = Instant::now();
        // A scenario whose preparation fails (a download, a build) fails alone.
        let problems =
            run_one(&mut ctx, s).unwrap_or_else(|e| vec![format!("preparation failed: {e:#}")]);
        let secs = start.elapsed().as_secs_f64();
        let logs = paths::workspace_root()
            .join("target/moat")
            .join(format!("test-{}", s.name));
        if problems.is_empty() {
            passed += 1;
            println!("  PASS {} ({secs:.1}s)", s.name);
        } else {
            failed += 1;
            println!("  FAIL {} ({secs:.1}s)", s.name);
            for p in &problems {
                println!("    - {p}");
            }
            println!("    logs: {}", logs.display());
            println!("    console (last lines):");
            for l in step::tail(&logs.join("console.log"), 20).lines() {
                println!("      {l}");
            }
        }
    }
    println!("scenarios: {passed} passed, {failed} failed, {skipped} skipped");
    // `--full` ends with the bench and its threshold check (about 4 minutes).
    if args.full && args.filter.is_empty() {
        println!("==> bench --check (with --full)");
        let bench = crate::bench::BenchArgs {
            repeat: 2,
            check: true,
            hv: vec![profile::Hv::None, profile::Hv::Xen, profile::Hv::Moat],
            xtest: false,
            timeout: 300,
            profile: false,
            stack: args.stack.clone(),
        };
        match crate::bench::bench(&bench) {
            Ok(0) => println!("  PASS bench --check"),
            Ok(_) => {
                println!("  FAIL bench --check: moat exceeds qemu/bench/thresholds.toml");
                failed += 1;
            }
            Err(e) => {
                println!("  FAIL bench --check: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Check every committed scenario file parses (used by the unit tests).
    pub fn check_dir(dir: &Path) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::parse("t", &std::fs::read_to_string(&p)?)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn part(
        id: &str,
        origin: crate::resolve::Origin,
        warning: Option<&str>,
    ) -> crate::resolve::Resolved {
        crate::resolve::Resolved {
            id: id.into(),
            package: "libc6".into(),
            version: "2.41-12+deb13u5".into(),
            suite: "trixie".into(),
            origin,
            files: vec![crate::lock::FileHash {
                name: "libc6_2.41-12+deb13u5_arm64.deb".into(),
                sha256: "ab".repeat(32),
            }],
            dir: "/c".into(),
            warning: warning.map(String::from),
        }
    }

    #[test]
    fn a_drift_scenario_needs_one_fallback_with_its_warning_and_record() {
        use crate::resolve::Origin;
        let drift = vec!["userspace/libc6".to_string()];
        let fell_back = part(
            "userspace/libc6",
            Origin::Fallback {
                locked: Some("2.41-12+deb13u5~moat-drift".into()),
            },
            Some("libc6 2.41-12+deb13u5~moat-drift (locked) is no longer in the archive; …"),
        );
        let other = part("userspace/busybox", Origin::Cache, None);
        assert!(judge_drift(&drift, &[fell_back.clone(), other.clone()]).is_empty());

        // The drifted part came from the lock after all: the scenario proved nothing.
        let locked = part("userspace/libc6", Origin::Archive, None);
        let p = judge_drift(&drift, &[locked]);
        assert!(p.iter().any(|m| m.contains("did not fall back")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("no warning")), "{p:?}");

        // Another part warned too: the run was not the one-warning run the issue asks for.
        let noisy = part(
            "userspace/busybox",
            Origin::Fallback { locked: None },
            Some("busybox …"),
        );
        let p = judge_drift(&drift, &[fell_back.clone(), noisy]);
        assert_eq!(
            p,
            vec!["unexpected warning for userspace/busybox".to_string()]
        );

        // The drifted part was never resolved.
        let p = judge_drift(&drift, &[other]);
        assert_eq!(
            p,
            vec!["userspace/libc6 was not resolved by this boot".to_string()]
        );
    }

    const S: &str = r#"
        description = "d"
        hv = "none"
        run = "xtest 1001"
        timeout_secs = 10
        console = ["^a$", "b"]
        secure = ["OP-TEE version"]
        forbid = ["panic"]
    "#;

    #[test]
    fn committed_scenarios_parse() {
        assert!(check_dir(&paths::workspace_root().join("tests/scenarios")).unwrap() >= 1);
    }

    #[test]
    fn markers_must_come_in_order() {
        let s = Scenario::parse("t", S).unwrap();
        let mut c = Ordered::new(&s.console).unwrap();
        c.feed("b");
        c.feed("a");
        assert_eq!(c.missing(), vec!["b"]);
        c.feed("xx b xx");
        assert!(c.missing().is_empty());
    }

    #[test]
    fn judging_needs_status_console_and_secure_markers() {
        let s = Scenario::parse("t", S).unwrap();
        let mut c = Ordered::new(&s.console).unwrap();
        c.feed("a");
        c.feed("b");
        let fin = |outcome, qemu_exited| Finished {
            outcome,
            qemu_exited,
        };
        let ok = judge(
            &s,
            &fin(Outcome::Done(0), false),
            &c,
            "I/TC: OP-TEE version: 4.5\n",
        )
        .unwrap();
        assert!(ok.is_empty(), "{ok:?}");
        let bad_status = judge(
            &s,
            &fin(Outcome::Done(1), false),
            &c,
            "I/TC: OP-TEE version: 4.5\n",
        )
        .unwrap();
        assert_eq!(bad_status.len(), 1);
        let no_banner = judge(&s, &fin(Outcome::Done(0), false), &c, "nothing\n").unwrap();
        assert!(no_banner[0].contains("secure-UART marker"));
        let mut panics = s.clone();
        panics.secure_forbid = vec!["Panic '".into()];
        let panicked = judge(
            &panics,
            &fin(Outcome::Done(0), false),
            &c,
            "I/TC: OP-TEE version: 4.5\nE/TC:1 Panic 'Failed to spread pgdir' at x\n",
        )
        .unwrap();
        assert_eq!(panicked.len(), 1, "{panicked:?}");
        assert!(panicked[0].contains("forbidden secure-UART line: E/TC:1 Panic"));
        let timeout = judge(
            &s,
            &fin(Outcome::TimedOut, false),
            &Ordered::new(&s.console).unwrap(),
            "",
        )
        .unwrap();
        assert_eq!(timeout.len(), 4);
        let mut off = Scenario::parse("t", S).unwrap();
        off.poweroff = true;
        let hung = judge(
            &off,
            &fin(Outcome::Done(0), false),
            &c,
            "I/TC: OP-TEE version: 4.5\n",
        )
        .unwrap();
        assert_eq!(hung, ["the guest's power-off did not end QEMU"]);
        let clean = judge(
            &off,
            &fin(Outcome::Done(0), true),
            &c,
            "I/TC: OP-TEE version: 4.5\n",
        )
        .unwrap();
        assert!(clean.is_empty());
    }

    #[test]
    fn a_hostile_dom0_runs_no_command_and_needs_moat() {
        let hostile = r#"
            description = "d"
            hv = "moat"
            dom0 = "hostile"
            dom0_args = "seed=1 cases=10"
            timeout_secs = 10
        "#;
        let s = Scenario::parse("t", hostile).unwrap();
        assert_eq!(s.dom0, crate::profile::Dom0::Hostile);
        assert!(s.run.is_empty());
        assert!(Scenario::parse("t", &format!("{hostile}\nrun = \"xtest\"")).is_err());
        assert!(Scenario::parse("t", &hostile.replace("\"moat\"", "\"xen\"")).is_err());
        // A Linux dom0 must run something, and takes no hostile options.
        assert!(Scenario::parse("t", &S.replace("run = \"xtest 1001\"", "")).is_err());
        assert!(Scenario::parse("t", &format!("{S}\ndom0_args = \"seed=1\"")).is_err());
    }

    #[test]
    fn bad_scenarios_are_rejected() {
        assert!(Scenario::parse("t", &S.replace("^a$", "(")).is_err());
        assert!(Scenario::parse("t", &S.replace("timeout_secs = 10", "timeout_secs = 0")).is_err());
        assert!(Scenario::parse("t", &format!("{S}\nunknown = 1")).is_err());
        assert!(Scenario::parse("t", &S.replace("\"none\"", "\"kvm\"")).is_err());
        assert!(Scenario::parse("t", &format!("{S}\nboot = \"grub\"")).is_err());
    }

    #[test]
    fn a_scenario_boots_directly_unless_it_says_u_boot() {
        use crate::profile::Boot;
        assert_eq!(Scenario::parse("t", S).unwrap().boot, Boot::Direct);
        let u = Scenario::parse("t", &format!("{S}\nboot = \"u-boot\"")).unwrap();
        assert_eq!(u.boot, Boot::UBoot);
    }
}
