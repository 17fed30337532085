// SPDX-License-Identifier: MIT OR Apache-2.0
//! libFuzzer at scale, for `cargo xtask test --full` and `cargo xtask fuzz`: every fuzz
//! target of the project runs [`FULL_RUNS`] executions, from a corpus kept in
//! `target/moat/fuzz/<target>/corpus` between runs, and any crash fails the run with its
//! reproducer's path.
//!
//! ```text
//!   host::ensure_fuzz_tools   rustup toolchain install nightly --profile minimal
//!                             cargo install --locked cargo-fuzz --version CARGO_FUZZ_VERSION
//!   for each of TARGETS (mediator/fuzz: smc_sequence, hv/core/fuzz: decoders):
//!     rustup run nightly cargo fuzz run --sanitizer none --debug-assertions <target>
//!         target/moat/fuzz/<target>/corpus -- -runs=10000000 -timeout=10
//!         -artifact_prefix=target/moat/fuzz/<target>/artifacts/ -print_final_stats=1
//!     ─▶ target/moat/fuzz/<target>/fuzz.log (libFuzzer's pulse lines are shown as it runs)
//!     ─▶ executions, time, exec/s, coverage (cov, ft), corpus; or the crash's reproducer
//!        and the command that replays it
//! ```
//!
//! No sanitizer: both drivers and the crates they drive are `forbid(unsafe_code)`, so the
//! memory errors AddressSanitizer finds can only be in the standard library's own unsafe
//! code, while Rust's bounds checks, overflow checks and debug assertions (kept on) catch
//! what safe code can get wrong, and the drivers assert the hypervisor's invariants
//! themselves (pins, pages, locks). Measured on this project's 2-core machine, ASan cost
//! the mediator's driver 5x (an allocation-heavy program of SMCs over fakes): 10^7
//! executions took about an hour with it.
//!
//! The fast `cargo xtask test` (CI) never needs nightly: there the drivers
//! (`mediator::fuzz::smc_sequence`, `hv_core::fuzz::decoders`) are replayed on 10,000
//! seeded inputs each by plain `cargo test` on the pinned stable toolchain.

use crate::{paths, step};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Executions per target with `--full` (issue 12: "`--full` runs 10⁷ executions per
/// target").
pub const FULL_RUNS: u64 = 10_000_000;
/// The cargo-fuzz release xtask installs when it is missing (or another release is).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds one input may run before libFuzzer reports it as a hang (a finding: no guest
/// input may hang the hypervisor). The slowest input of a 10⁷ run takes well under one.
const INPUT_TIMEOUT_SECS: u32 = 10;

/// One cargo-fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its name: `fuzz/fuzz_targets/<name>.rs`.
    pub name: &'static str,
    /// The crate whose `fuzz/` holds it, from the workspace root.
    pub dir: &'static str,
    /// What it drives, for the report.
    pub what: &'static str,
}

/// Every fuzz target of the project.
pub const TARGETS: [Target; 2] = [
    Target {
        name: "smc_sequence",
        dir: "mediator",
        what: "the OP-TEE mediator over its fakes (mediator::fuzz)",
    },
    Target {
        name: "decoders",
        dir: "hv/core",
        what: "hv-core's guest-reachable decoders and models (hv_core::fuzz)",
    },
];

/// What a finished run reported (libFuzzer's final lines).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Executions done.
    pub runs: u64,
    /// Seconds libFuzzer took for them.
    pub secs: u64,
    /// Average executions per second.
    pub exec_per_sec: u64,
    /// Coverage: edges (`cov`) and features (`ft`) at the end.
    pub cov: u64,
    /// Features.
    pub ft: u64,
    /// Inputs in the corpus at the end.
    pub corpus: u64,
}

/// What a crashed run left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crash {
    /// Inputs libFuzzer wrote (`Test unit written to <path>`): the reproducers.
    pub reproducers: Vec<String>,
    /// The first line saying why (a Rust panic, a sanitizer's error, a timeout).
    pub why: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl Target {
    /// `target/moat/fuzz/<name>`: the corpus (kept between runs), artifacts and log.
    pub fn work_dir(&self, root: &Path) -> PathBuf {
        root.join("target/moat/fuzz").join(self.name)
    }

    /// The command that runs it `runs` times from `corpus`, writing crashes under
    /// `artifacts` (a directory), as data.
    pub fn command(&self, root: &Path, corpus: &Path, artifacts: &Path, runs: u64) -> Command {
        let mut cmd = Command::new("rustup");
        cmd.current_dir(root.join(self.dir))
            .args(["run", "nightly", "cargo", "fuzz", "run"])
            .args(["--sanitizer", "none", "--debug-assertions", self.name])
            .arg(corpus)
            .arg("--")
            .arg(format!("-runs={runs}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            // The stable cargo that runs xtask must not be the one cargo-fuzz builds with.
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN");
        cmd
    }

    /// How to replay one reproducer by hand.
    pub fn replay_hint(&self, reproducer: &str) -> String {
        format!(
            "cd {} && cargo +nightly fuzz run --sanitizer none --debug-assertions {} {reproducer}",
            self.dir, self.name
        )
    }
}

/// The first number in `s` (digits, optionally with `,` or `_` between them).
fn number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '_'))
        .unwrap_or(s.len());
    s[..end].replace([',', '_'], "").parse().ok()
}

/// The value after `key` in a libFuzzer status line (`cov: 1099 ft: 3645 corp: 12/3Kb`).
fn field(line: &str, key: &str) -> Option<u64> {
    line.split(key).nth(1).and_then(number)
}

/// Parse a finished run's output: `#N DONE cov: .. ft: .. corp: ..`, `Done N runs in S
/// second(s)`, `stat::average_exec_per_sec:`. None when it did not finish.
pub fn parse_stats(log: &str) -> Option<Stats> {
    let mut s = Stats::default();
    let mut done = false;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("Done ") {
            s.runs = number(rest)?;
            s.secs = field(rest, " runs in ")?;
            done = true;
        } else if let Some(rest) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.exec_per_sec = number(rest)?;
        } else if line.starts_with('#') && (line.contains("DONE") || line.contains("pulse")) {
            s.cov = field(line, "cov: ").unwrap_or(s.cov);
            s.ft = field(line, "ft: ").unwrap_or(s.ft);
            s.corpus = field(line, "corp: ").unwrap_or(s.corpus);
        }
    }
    done.then_some(s)
}

/// Parse a failed run's output for its reproducers and the reason.
pub fn parse_crash(log: &str) -> Crash {
    let mut c = Crash::default();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(i) = line.find("Test unit written to ") {
            let path = line[i + "Test unit written to ".len()..].trim();
            c.reproducers.push(path.to_string());
        }
        let why = line.contains("panicked at")
            || line.contains("ERROR: libFuzzer:")
            || line.contains("ERROR: AddressSanitizer")
            || line.contains("ALARM: working on the last Unit");
        if why && c.why.is_none() {
            let mut w = line.trim().to_string();
            // A panic's message follows its location on the next line.
            if line.contains("panicked at") && w.ends_with(':') {
                if let Some(msg) = lines.peek() {
                    w = format!("{w} {}", msg.trim());
                }
            }
            c.why = Some(w);
        }
    }
    c
}

/// libFuzzer lines worth showing while it runs: its start, its pulses (at every power of
/// two executions) and its end.
fn progress_line(line: &str) -> bool {
    line.starts_with('#')
        && (line.contains("INITED") || line.contains("pulse") || line.contains("DONE"))
}

/// Run one target; its stats, or the crash.
fn run_one(root: &Path, t: &Target, runs: u64) -> Result<std::result::Result<Stats, Crash>> {
    let work = t.work_dir(root);
    let corpus = work.join("corpus");
    let artifacts = work.join("artifacts");
    if artifacts.exists() {
        std::fs::remove_dir_all(&artifacts)
            .with_context(|| format!("clearing {}", artifacts.display()))?;
    }
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = work.join("fuzz.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = t.command(root, &corpus, &artifacts, runs);
    writeln!(log, "$ {}", step::show(&cmd))?;
    println!("==> fuzz {} ({}): {runs} executions", t.name, t.what);
    println!("    log: {}", log_path.display());
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", step::show(&cmd)))?;
    let stderr = child.stderr.take().context("libFuzzer's stderr")?;
    let mut text = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        writeln!(log, "{line}")?;
        if progress_line(&line) {
            println!("    {line}");
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    match (status.success(), parse_stats(&text)) {
        (true, Some(s)) => {
            println!(
                "  ✓ fuzz {}: {} executions in {} s ({} exec/s), cov {}, ft {}, corpus {} inputs, 0 crashes ({secs:.0} s with the build)",
                t.name, s.runs, s.secs, s.exec_per_sec, s.cov, s.ft, s.corpus
            );
            Ok(Ok(s))
        }
        (true, None) => bail!(
            "fuzz {}: libFuzzer ended without its final stats; see {}",
            t.name,
            log_path.display()
        ),
        (false, _) => {
            let c = parse_crash(&text);
            if c.reproducers.is_empty() && c.why.is_none() {
                // Not a finding: the build or cargo-fuzz itself failed.
                bail!(
                    "fuzz {}: `{}` failed ({status}); last lines of {}:\n{}",
                    t.name,
                    step::show(&cmd),
                    log_path.display(),
                    step::tail(&log_path, 25)
                );
            }
            println!(
                "  FAIL fuzz {}: {}",
                t.name,
                c.why.as_deref().unwrap_or("a crash")
            );
            for r in &c.reproducers {
                println!("    reproducer: {r}");
                println!("    replay:     {}", t.replay_hint(r));
            }
            println!("    log: {}", log_path.display());
            Ok(Err(c))
        }
    }
}

/// `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Executions per target.
    #[arg(long, default_value_t = FULL_RUNS)]
    pub runs: u64,
    /// Only these targets (smc_sequence, decoders); all by default.
    pub targets: Vec<String>,
}

/// `cargo xtask fuzz`: run the targets asked for.
pub fn fuzz(args: &FuzzArgs) -> Result<u8> {
    for name in &args.targets {
        if !TARGETS.iter().any(|t| t.name == name) {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!("no fuzz target {name:?}; there are {}", names.join(", "));
        }
    }
    let chosen: Vec<Target> = TARGETS
        .into_iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|n| n == t.name))
        .collect();
    run(&chosen, args.runs).map(|()| 0)
}

/// Run every target `runs` times; fail if any crashed, naming the reproducers.
pub fn run_all(runs: u64) -> Result<()> {
    run(&TARGETS, runs)
}

fn run(targets: &[Target], runs: u64) -> Result<()> {
    crate::host::ensure_fuzz_tools()?;
    let root = paths::workspace_root();
    let mut crashed = Vec::new();
    for t in targets {
        if let Err(c) = run_one(&root, t, runs)? {
            crashed.push((t.name, c));
        }
    }
    if !crashed.is_empty() {
        let list: Vec<String> = crashed
            .iter()
            .map(|(n, c)| format!("{n}: {}", c.reproducers.join(", ")))
            .collect();
        bail!("fuzzing found crashes: {}", list.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_runs_under_nightly_cargo_fuzz_from_its_crate() {
        let root = Path::new("/w");
        let t = TARGETS[1];
        let cmd = t.command(
            root,
            Path::new("/w/target/moat/fuzz/decoders/corpus"),
            Path::new("/w/target/moat/fuzz/decoders/artifacts"),
            FULL_RUNS,
        );
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/w/hv/core")));
        assert_eq!(
            step::show(&cmd),
            "rustup run nightly cargo fuzz run --sanitizer none --debug-assertions decoders \
             /w/target/moat/fuzz/decoders/corpus -- \
             -runs=10000000 -timeout=10 -artifact_prefix=/w/target/moat/fuzz/decoders/artifacts/ \
             -print_final_stats=1"
        );
        assert!(cmd.get_envs().any(|(k, v)| k == "CARGO" && v.is_none()));
        assert_eq!(t.work_dir(root), Path::new("/w/target/moat/fuzz/decoders"));
        // Every target exists in the tree.
        for t in TARGETS {
            let f = paths::workspace_root()
                .join(t.dir)
                .join("fuzz/fuzz_targets")
                .join(format!("{}.rs", t.name));
            assert!(f.is_file(), "{}", f.display());
        }
    }

    #[test]
    fn final_stats_parse() {
        let log = "\
INFO: Running with entropic power schedule (0xFF, 100).
#2\tINITED cov: 40 ft: 41 corp: 1/1b exec/s: 0 rss: 30Mb
#8388608\tpulse  cov: 1099 ft: 3600 corp: 1200/120Kb lim: 4096 exec/s: 34000 rss: 444Mb
#10000000\tDONE   cov: 1101 ft: 3645 corp: 1264/123Kb lim: 4096 exec/s: 34359 rss: 444Mb
Done 10000000 runs in 291 second(s)
stat::number_of_executed_units: 10000000
stat::average_exec_per_sec:     34364
stat::new_units_added:          1296
";
        assert_eq!(
            parse_stats(log),
            Some(Stats {
                runs: 10_000_000,
                secs: 291,
                exec_per_sec: 34_364,
                cov: 1101,
                ft: 3645,
                corpus: 1264,
            })
        );
        assert_eq!(parse_stats("#2\tINITED cov: 40 ft: 41\n"), None);
        assert!(progress_line("#8388608\tpulse  cov: 1099 ft: 3600"));
        assert!(!progress_line("#99\tNEW    cov: 1099 ft: 3600"));
    }

    #[test]
    fn a_crash_names_its_reproducer_and_why() {
        let log = "\
thread '<unnamed>' panicked at src/fuzz.rs:10:5:
pin accounting drifted
==4242== ERROR: libFuzzer: deadly signal
MS: 2 ChangeByte-CopyPart-; base unit: 0000
artifact_prefix='/w/target/moat/fuzz/smc_sequence/artifacts/'; Test unit written to /w/target/moat/fuzz/smc_sequence/artifacts/crash-1234abcd
Base64: AAAA
";
        let c = parse_crash(log);
        assert_eq!(
            c.reproducers,
            ["/w/target/moat/fuzz/smc_sequence/artifacts/crash-1234abcd"]
        );
        assert_eq!(
            c.why.as_deref(),
            Some("thread '<unnamed>' panicked at src/fuzz.rs:10:5: pin accounting drifted")
        );
        assert_eq!(
            TARGETS[0].replay_hint("/tmp/crash-1"),
            "cd mediator && cargo +nightly fuzz run --sanitizer none --debug-assertions \
             smc_sequence /tmp/crash-1"
        );
        assert_eq!(parse_crash("error: could not compile\n"), Crash::default());
    }
}
