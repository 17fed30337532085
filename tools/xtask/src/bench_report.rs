// SPDX-License-Identifier: MIT OR Apache-2.0
//! The bench's pure half: parse what the client and the plugin printed, compute the
//! statistics, and write the report (Markdown, CSV, SVG) and the threshold check.
//!
//! ```text
//!   console.log ─ parse_client ─► ClientRun   (moat-bench: … lines, every sample)
//!   elcount.txt ─ parse_elcount ─► ElReport   (instructions per EL, per call)
//!                 Config { hv, runs … } ×3 ─► report_md, results_csv, samples_csv, svg
//! ```
//!
//! Every figure is an instruction count: in deterministic mode one tick of the 1 GHz
//! virtual counter is one instruction (checked: the client prints CNTFRQ_EL0).

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The counter frequency deterministic mode sets; the client must read this back.
pub const CNTFRQ: u64 = crate::qemu::DETERMINISTIC_CNTFRQ;

/// The plugin's buckets, in its output order.
pub const BUCKETS: [&str; 7] = ["ns-el0", "ns-el1", "el2", "el2h", "el3", "s-el1", "s-el0"];

/// One case's samples, as the client printed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseSamples {
    pub name: String,
    pub pages: u32,
    pub warmup: u32,
    pub samples: Vec<u64>,
}

/// Everything one client run printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRun {
    pub cntfrq: u64,
    pub cases: Vec<CaseSamples>,
}

/// The client's lines start with this (anywhere in a console line).
const CLIENT_PREFIX: &str = "moat-bench: ";

fn num<T: std::str::FromStr>(word: Option<&str>, what: &str, line: &str) -> Result<T> {
    let w = word.with_context(|| format!("missing {what} in {line:?}"))?;
    w.parse()
        .map_err(|_| anyhow::anyhow!("{what} {w:?} is not a number in {line:?}"))
}

fn expect(word: Option<&str>, want: &str, line: &str) -> Result<()> {
    match word {
        Some(w) if w == want => Ok(()),
        other => bail!("expected {want:?}, found {other:?} in {line:?}"),
    }
}

/// The client's lines of a console log, in order, without their prefix.
pub fn client_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter_map(|l| {
            l.find(CLIENT_PREFIX)
                .map(|i| l[i + CLIENT_PREFIX.len()..].trim_end())
        })
        .collect()
}

/// Parse the client's output out of a console log, strictly: the version, CNTFRQ, then
/// for each case its header and its samples line, then `done`. Anything else is an error.
pub fn parse_client(console: &str) -> Result<ClientRun> {
    let lines = client_lines(console);
    if let Some(e) = lines.iter().find(|l| l.starts_with("error")) {
        bail!("the bench client failed: {e}");
    }
    let mut it = lines.into_iter();
    let first = it.next().context("the console has no moat-bench output")?;
    ensure!(
        first == "version 1",
        "unknown client output version {first:?}"
    );
    let line = it.next().context("no cntfrq line")?;
    let mut w = line.split(' ');
    expect(w.next(), "cntfrq", line)?;
    let cntfrq = num(w.next(), "cntfrq", line)?;
    let mut cases = Vec::new();
    loop {
        let line = it.next().context("the client output ends before `done`")?;
        if line == "done" {
            break;
        }
        let mut w = line.split(' ');
        expect(w.next(), "case", line)?;
        let name = w.next().context("case without a name")?.to_string();
        expect(w.next(), "pages", line)?;
        let pages = num(w.next(), "pages", line)?;
        expect(w.next(), "warmup", line)?;
        let warmup = num(w.next(), "warmup", line)?;
        expect(w.next(), "samples", line)?;
        let n: usize = num(w.next(), "samples", line)?;
        ensure!(w.next().is_none(), "trailing words in {line:?}");
        let line = it
            .next()
            .with_context(|| format!("case {name} has no samples line"))?;
        let mut w = line.split(' ');
        expect(w.next(), "samples", line)?;
        expect(w.next(), &name, line)?;
        let samples = w
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| anyhow::anyhow!("sample {s:?} of {name} is not a number"))
            })
            .collect::<Result<Vec<_>>>()?;
        ensure!(
            samples.len() == n && n > 0,
            "case {name}: {} samples, the header says {n}",
            samples.len()
        );
        ensure!(
            !cases.iter().any(|c: &CaseSamples| c.name == name),
            "case {name} twice"
        );
        cases.push(CaseSamples {
            name,
            pages,
            warmup,
            samples,
        });
    }
    ensure!(it.next().is_none(), "client output after `done`");
    ensure!(!cases.is_empty(), "the client ran no case");
    Ok(ClientRun { cntfrq, cases })
}

/// Minimum, median, 99th percentile and mean of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub min: u64,
    /// The upper median, `sorted[n / 2]` (the plugin uses the same definition).
    pub median: u64,
    /// Nearest rank: `sorted[ceil(0.99 n) - 1]`.
    pub p99: u64,
    pub mean: f64,
}

pub fn stats(samples: &[u64]) -> Stats {
    assert!(!samples.is_empty(), "stats of no samples");
    let mut v = samples.to_vec();
    v.sort_unstable();
    let n = v.len();
    let rank = (n * 99).div_ceil(100);
    Stats {
        min: v[0],
        median: v[n / 2],
        p99: v[rank.max(1) - 1],
        mean: v.iter().sum::<u64>() as f64 / n as f64,
    }
}

/// One bucket of one window: per-call sum over the window, min, median and max.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ElStat {
    pub sum: u64,
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

/// One marked window (one case) of the plugin's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElWindow {
    pub samples: usize,
    /// In [`BUCKETS`] order.
    pub buckets: Vec<ElStat>,
    /// Instructions whose level came from the next block (see elcount.c).
    pub forwarded: u64,
}

impl ElWindow {
    pub fn bucket(&self, name: &str) -> ElStat {
        let i = BUCKETS
            .iter()
            .position(|b| *b == name)
            .expect("a known bucket");
        self.buckets[i]
    }
}

/// The plugin's whole report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElReport {
    pub windows: Vec<ElWindow>,
    pub conflicts: u64,
    pub unclassified: u64,
    pub forwarded: u64,
    /// Memory accesses seen per MMU index.
    pub mmuidx: BTreeMap<u32, u64>,
}

/// The plugin's per-window lines: what a boot measured, without the whole-run summary.
pub fn window_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("elcount: window "))
        .collect()
}

/// Parse elcount's output strictly (the format is in qemu/bench/plugin/elcount.c).
pub fn parse_elcount(text: &str) -> Result<ElReport> {
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some("elcount: version 1"),
        "not an elcount version 1 report"
    );
    let mut windows = Vec::new();
    for line in lines.by_ref() {
        let mut w = line.split(' ');
        expect(w.next(), "elcount:", line)?;
        match w.next() {
            Some("window") => {
                let k: usize = num(w.next(), "window", line)?;
                ensure!(k == windows.len(), "window {k} out of order");
                expect(w.next(), "samples", line)?;
                let samples = num(w.next(), "samples", line)?;
                let mut buckets = Vec::new();
                for b in BUCKETS {
                    let item = w.next().with_context(|| format!("no {b} in {line:?}"))?;
                    let v = item
                        .strip_prefix(b)
                        .and_then(|r| r.strip_prefix('='))
                        .with_context(|| format!("expected {b}=…, found {item:?}"))?;
                    let f = v
                        .split('/')
                        .map(|x| x.parse::<u64>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| anyhow::anyhow!("bad counts {item:?}"))?;
                    ensure!(f.len() == 4, "expected sum/min/median/max in {item:?}");
                    buckets.push(ElStat {
                        sum: f[0],
                        min: f[1],
                        median: f[2],
                        max: f[3],
                    });
                }
                let fw = w.next().and_then(|x| x.strip_prefix("forwarded="));
                let forwarded = num(fw, "forwarded", line)?;
                ensure!(w.next().is_none(), "trailing words in {line:?}");
                windows.push(ElWindow {
                    samples,
                    buckets,
                    forwarded,
                });
            }
            Some("end") => {
                expect(w.next(), "windows", line)?;
                let n: usize = num(w.next(), "windows", line)?;
                ensure!(
                    n == windows.len(),
                    "end says {n} windows, found {}",
                    windows.len()
                );
                expect(w.next(), "conflicts", line)?;
                let conflicts = num(w.next(), "conflicts", line)?;
                expect(w.next(), "unclassified", line)?;
                let unclassified = num(w.next(), "unclassified", line)?;
                expect(w.next(), "forwarded", line)?;
                let forwarded = num(w.next(), "forwarded", line)?;
                expect(w.next(), "mmuidx", line)?;
                let mut mmuidx = BTreeMap::new();
                for item in w {
                    let (i, c) = item
                        .split_once('=')
                        .with_context(|| format!("bad mmuidx item {item:?}"))?;
                    mmuidx.insert(
                        num(Some(i), "mmu index", line)?,
                        num(Some(c), "count", line)?,
                    );
                }
                return Ok(ElReport {
                    windows,
                    conflicts,
                    unclassified,
                    forwarded,
                    mmuidx,
                });
            }
            // `profile=`'s lines: read by `attribute_profile`.
            Some("profile") => {}
            other => bail!("unexpected elcount line {other:?}: {line:?}"),
        }
    }
    bail!("the elcount report has no end line (QEMU did not exit cleanly?)")
}

/// One configuration's measurements (one run; the others were identical).
#[derive(Clone, Debug)]
pub struct Config {
    /// `none`, `xen` or `moat`.
    pub name: String,
    pub client: ClientRun,
    pub el: ElReport,
    /// Wall time of each boot, in seconds.
    pub wall: Vec<f64>,
    /// The QEMU command line.
    pub cmdline: String,
    /// Whether every repeat gave the same client output and plugin report, byte for byte.
    pub identical: bool,
    /// Whether the whole console logs were identical too.
    pub console_identical: bool,
    /// `xtest -t benchmark`'s figures (or why there are none), with `--xtest`.
    pub xtest: Option<std::result::Result<Vec<XtestCase>, String>>,
}

/// Check that the plugin saw one window per case with the right sample counts.
pub fn check_consistent(client: &ClientRun, el: &ElReport) -> Result<()> {
    ensure!(
        client.cntfrq == CNTFRQ,
        "CNTFRQ_EL0 is {} in the guest, not {CNTFRQ}: counter ticks are not instructions",
        client.cntfrq
    );
    ensure!(
        client.cases.len() == el.windows.len(),
        "the client ran {} cases, the plugin saw {} windows",
        client.cases.len(),
        el.windows.len()
    );
    for (c, w) in client.cases.iter().zip(&el.windows) {
        ensure!(
            c.samples.len() == w.samples,
            "case {}: {} samples, the plugin counted {}",
            c.name,
            c.samples.len(),
            w.samples
        );
    }
    Ok(())
}

impl Config {
    pub fn case(&self, name: &str) -> Option<(&CaseSamples, &ElWindow)> {
        let i = self.client.cases.iter().position(|c| c.name == name)?;
        Some((&self.client.cases[i], &self.el.windows[i]))
    }

    pub fn median(&self, case: &str) -> Option<u64> {
        self.case(case).map(|(c, _)| stats(&c.samples).median)
    }

    /// The median of one bucket's per-call counts.
    pub fn el_median(&self, case: &str, bucket: &str) -> Option<u64> {
        self.case(case).map(|(_, w)| w.bucket(bucket).median)
    }
}

/// The issue's reference figures (moat at 076bc72, medians), to compare with.
pub const REFERENCE: &[(&str, [u64; 3])] = &[
    ("nop", [57_606, 66_138, 75_389]),
    ("temp-128", [203_556, 299_893, 399_574]),
    ("shm-1", [49_981, 64_423, 89_308]),
];
/// The issue's reference EL2 instructions per NOP for Xen and moat.
pub const REFERENCE_EL2_NOP: [u64; 2] = [4_695, 13_913];

/// Human names of the cases.
pub fn case_title(name: &str) -> String {
    let pages = |n: &str| {
        if n == "1" {
            "1 page".to_string()
        } else {
            format!("{n} pages")
        }
    };
    if name == "nop" {
        "NOP invoke".into()
    } else if name == "session" {
        "session open + close".into()
    } else if let Some(n) = name.strip_prefix("memref-") {
        format!("invoke, registered memref, {}", pages(n))
    } else if let Some(n) = name.strip_prefix("temp-") {
        format!("temp memref (register + invoke + release), {}", pages(n))
    } else if let Some(n) = name.strip_prefix("shm-") {
        format!("SHM register + release, {}", pages(n))
    } else {
        name.to_string()
    }
}

/// Digits with thousands separators: 57606 → "57,606".
pub fn thousands(v: i64) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn signed(v: i64) -> String {
    if v >= 0 {
        format!("+{}", thousands(v))
    } else {
        thousands(v)
    }
}

/// The three configurations, by name, if present.
fn trio(configs: &[Config]) -> Option<[&Config; 3]> {
    let get = |n: &str| configs.iter().find(|c| c.name == n);
    Some([get("none")?, get("xen")?, get("moat")?])
}

/// The headline table: per-call medians for none, Xen and moat, the deltas over none and
/// moat's delta as a fraction of Xen's, for every case.
pub fn headline(configs: &[Config]) -> Result<String> {
    let [none, xen, moat] = trio(configs).context("the headline needs none, xen and moat")?;
    let mut s = String::from(
        "| per call, instructions (median) | none | Xen 4.17 | moat | Xen − none | moat − none | moat Δ / Xen Δ |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &none.client.cases {
        let n = c.name.as_str();
        let (a, b, m) = (
            none.median(n).context("none")? as i64,
            xen.median(n)
                .with_context(|| format!("xen has no case {n}"))? as i64,
            moat.median(n)
                .with_context(|| format!("moat has no case {n}"))? as i64,
        );
        let ratio = if b != a {
            format!("{:.2}", (m - a) as f64 / (b - a) as f64)
        } else {
            "–".into()
        };
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {ratio} |",
            case_title(n),
            thousands(a),
            thousands(b),
            thousands(m),
            signed(b - a),
            signed(m - a)
        )?;
    }
    Ok(s)
}

/// EL2 instructions per call (median) under the two hypervisors, and per page.
pub fn el2_table(configs: &[Config]) -> Result<String> {
    let [_, xen, moat] = trio(configs).context("the EL2 table needs xen and moat")?;
    let mut s = String::from(
        "| EL2 instructions per call (median) | Xen 4.17 | moat | moat / Xen |\n|---|---:|---:|---:|\n",
    );
    for c in &xen.client.cases {
        let n = c.name.as_str();
        let x = xen.el_median(n, "el2").context("xen")?;
        let m = moat
            .el_median(n, "el2")
            .with_context(|| format!("moat has no case {n}"))?;
        writeln!(
            s,
            "| {} | {} | {} | {:.2} |",
            case_title(n),
            thousands(x as i64),
            thousands(m as i64),
            m as f64 / x.max(1) as f64
        )?;
    }
    for (kind, title) in [
        ("temp", "per page, temp memref ((128 pages − 1 page) / 127)"),
        ("shm", "per page, SHM register + release ((128 − 1) / 127)"),
    ] {
        let per = |c: &Config| -> Option<f64> {
            let hi = c.el_median(&format!("{kind}-128"), "el2")? as f64;
            let lo = c.el_median(&format!("{kind}-1"), "el2")? as f64;
            Some((hi - lo) / 127.0)
        };
        if let (Some(x), Some(m)) = (per(xen), per(moat)) {
            writeln!(s, "| {title} | {x:.0} | {m:.0} | {:.2} |", m / x.max(1.0))?;
        }
    }
    Ok(s)
}

/// Our medians next to the issue's reference figures.
pub fn reference_table(configs: &[Config]) -> Result<String> {
    let [none, xen, moat] = trio(configs).context("the comparison needs all three")?;
    let mut s = String::from(
        "| case | config | reference | measured | difference |\n|---|---|---:|---:|---:|\n",
    );
    let mut row = |case: &str, cfg: &str, reference: u64, got: u64| {
        let d = (got as f64 - reference as f64) / reference as f64 * 100.0;
        let _ = writeln!(
            s,
            "| {} | {cfg} | {} | {} | {d:+.2} % |",
            case_title(case),
            thousands(reference as i64),
            thousands(got as i64)
        );
    };
    for (case, [r_none, r_xen, r_moat]) in REFERENCE {
        for (cfg, r) in [(none, r_none), (xen, r_xen), (moat, r_moat)] {
            if let Some(m) = cfg.median(case) {
                row(case, &cfg.name, *r, m);
            }
        }
    }
    for (cfg, r) in [(xen, REFERENCE_EL2_NOP[0]), (moat, REFERENCE_EL2_NOP[1])] {
        if let Some(m) = cfg.el_median("nop", "el2") {
            let d = (m as f64 - r as f64) / r as f64 * 100.0;
            let _ = writeln!(
                s,
                "| EL2 per NOP | {} | {} | {} | {d:+.2} % |",
                cfg.name,
                thousands(r as i64),
                thousands(m as i64)
            );
        }
    }
    Ok(s)
}

/// One configuration's full table: counter statistics and the median per level.
pub fn config_table(c: &Config) -> Result<String> {
    let mut s = String::from("| case | min | median | p99 | mean |");
    for b in BUCKETS {
        write!(s, " {b} |")?;
    }
    s.push_str("\n|---|---:|---:|---:|---:|");
    s.push_str(&"---:|".repeat(BUCKETS.len()));
    s.push('\n');
    for (cs, w) in c.client.cases.iter().zip(&c.el.windows) {
        let st = stats(&cs.samples);
        write!(
            s,
            "| {} | {} | {} | {} | {:.0} |",
            cs.name,
            thousands(st.min as i64),
            thousands(st.median as i64),
            thousands(st.p99 as i64),
            st.mean
        )?;
        for st in &w.buckets {
            write!(s, " {} |", thousands(st.median as i64))?;
        }
        s.push('\n');
    }
    Ok(s)
}

/// results.csv: one row per configuration and case.
pub fn results_csv(configs: &[Config]) -> String {
    let mut s = String::from("config,case,pages,samples,min,median,p99,mean");
    for b in BUCKETS {
        write!(s, ",{b}_median,{b}_mean").unwrap();
    }
    s.push('\n');
    for c in configs {
        for (cs, w) in c.client.cases.iter().zip(&c.el.windows) {
            let st = stats(&cs.samples);
            write!(
                s,
                "{},{},{},{},{},{},{},{:.1}",
                c.name,
                cs.name,
                cs.pages,
                cs.samples.len(),
                st.min,
                st.median,
                st.p99,
                st.mean
            )
            .unwrap();
            for b in &w.buckets {
                write!(
                    s,
                    ",{},{:.1}",
                    b.median,
                    b.sum as f64 / w.samples.max(1) as f64
                )
                .unwrap();
            }
            s.push('\n');
        }
    }
    s
}

/// samples.csv: every sample (instructions per call, from the counter).
pub fn samples_csv(configs: &[Config]) -> String {
    let mut s = String::from("config,case,index,instructions\n");
    for c in configs {
        for cs in &c.client.cases {
            for (i, v) in cs.samples.iter().enumerate() {
                writeln!(s, "{},{},{i},{v}", c.name, cs.name).unwrap();
            }
        }
    }
    s
}

/// The committed thresholds (qemu/bench/thresholds.toml): moat's medians may not exceed them.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Per case: the highest acceptable median, instructions per call.
    pub median: BTreeMap<String, u64>,
    /// Per case: the highest acceptable median of EL2 instructions per call.
    pub el2: BTreeMap<String, u64>,
}

/// The thresholds moat exceeds (empty: it passes).
pub fn check(moat: &Config, t: &Thresholds) -> Vec<String> {
    let mut failed = Vec::new();
    for (case, max) in &t.median {
        match moat.median(case) {
            Some(m) if m <= *max => {}
            Some(m) => failed.push(format!("{case}: median {m} > {max}")),
            None => failed.push(format!("{case}: not measured")),
        }
    }
    for (case, max) in &t.el2 {
        match moat.el_median(case, "el2") {
            Some(m) if m <= *max => {}
            Some(m) => failed.push(format!("{case}: EL2 median {m} > {max}")),
            None => failed.push(format!("{case}: not measured")),
        }
    }
    failed
}

/// A grouped bar chart (SVG): one group per case, one bar per configuration.
pub fn bar_chart_svg(
    title: &str,
    y_label: &str,
    cases: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let max = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            * 1.1;
        let groups = cases.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..groups, 0.0..max.max(1.0))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let names = cases.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(cases.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .y_label_formatter(&|y| thousands(*y as i64))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let palette = [
            RGBColor(90, 90, 90),
            RGBColor(214, 96, 77),
            RGBColor(33, 102, 172),
        ];
        let width = 0.8 / series.len().max(1) as f64;
        for (k, (name, values)) in series.iter().enumerate() {
            let color = palette[k % palette.len()];
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + k as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.95, *v)], color.filled())
                }))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(svg)
}

/// The two plots: medians per case, and overhead over none per case.
pub fn plots(configs: &[Config]) -> Result<Vec<(&'static str, String)>> {
    let Some([none, xen, moat]) = trio(configs) else {
        return Ok(Vec::new());
    };
    let cases: Vec<String> = none.client.cases.iter().map(|c| c.name.clone()).collect();
    let medians = |c: &Config| -> Vec<f64> {
        cases
            .iter()
            .map(|n| c.median(n).unwrap_or(0) as f64)
            .collect()
    };
    let (n, x, m) = (medians(none), medians(xen), medians(moat));
    let over =
        |v: &[f64]| -> Vec<f64> { v.iter().zip(&n).map(|(a, b)| (a - b).max(0.0)).collect() };
    Ok(vec![
        (
            "medians.svg",
            bar_chart_svg(
                "Instructions per call (median)",
                "instructions",
                &cases,
                &[
                    ("none".into(), n.clone()),
                    ("Xen 4.17".into(), x.clone()),
                    ("moat".into(), m.clone()),
                ],
            )?,
        ),
        (
            "overhead.svg",
            bar_chart_svg(
                "Instructions a hypervisor adds per call (median − none's median)",
                "instructions",
                &cases,
                &[("Xen 4.17".into(), over(&x)), ("moat".into(), over(&m))],
            )?,
        ),
    ])
}

/// One test of xtest's benchmark suite: its figures, in xtest's own units.
#[derive(Clone, Debug, PartialEq)]
pub struct XtestCase {
    /// `benchmark_1001`.
    pub id: String,
    pub title: String,
    /// (metric, value): `speed kB/s at 1024 B` or `mean µs`, `MiB/s`.
    pub figures: Vec<(String, f64)>,
}

/// Parse `xtest -t benchmark`'s output out of a console log: the trusted-storage tables
/// (size, time, speed) and the crypto lines (min/max/mean/stddev, MiB/s). Every test must
/// end `OK` and the summary must say 0 failed.
pub fn parse_xtest_benchmark(console: &str) -> Result<Vec<XtestCase>> {
    let mut cases: Vec<XtestCase> = Vec::new();
    let mut open: Option<XtestCase> = None;
    let mut summary_ok = false;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim();
        if let Some(rest) = line.strip_prefix("* benchmark_") {
            ensure!(
                open.is_none(),
                "benchmark_{rest} starts inside another test"
            );
            let (num, title) = rest.split_once(' ').unwrap_or((rest, ""));
            open = Some(XtestCase {
                id: format!("benchmark_{num}"),
                title: title.to_string(),
                figures: Vec::new(),
            });
            continue;
        }
        if t.ends_with("subtests of which 0 failed") {
            summary_ok = true;
        }
        let Some(case) = open.as_mut() else {
            continue;
        };
        if t == format!("{} OK", case.id) {
            ensure!(!case.figures.is_empty(), "{} printed no figures", case.id);
            cases.push(open.take().expect("an open test"));
            continue;
        }
        ensure!(
            !t.starts_with(&format!("{} FAILED", case.id)),
            "xtest {} failed",
            case.id
        );
        if t.starts_with("min=") {
            // min=530.208us max=19770.4us mean=1276.21us stddev=1609.08us (cv 126.083%) (0.765208MiB/s)
            let field = |name: &str| -> Result<f64> {
                let v = t
                    .split(' ')
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|w| w.strip_suffix("us"))
                    .with_context(|| format!("no {name} in {t:?}"))?;
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{name}{v} is not a number in {t:?}"))
            };
            case.figures.push(("min µs".into(), field("min=")?));
            case.figures.push(("mean µs".into(), field("mean=")?));
            let mib = t
                .rsplit_once('(')
                .and_then(|(_, r)| r.strip_suffix("MiB/s)"))
                .with_context(|| format!("no MiB/s in {t:?}"))?;
            case.figures.push((
                "MiB/s".into(),
                mib.parse()
                    .map_err(|_| anyhow::anyhow!("{mib} is not a number in {t:?}"))?,
            ));
            continue;
        }
        let cols: Vec<&str> = t.split('|').map(str::trim).collect();
        if cols.len() == 3 {
            if let (Ok(size), Ok(speed)) = (cols[0].parse::<u64>(), cols[2].parse::<f64>()) {
                case.figures.push((format!("kB/s at {size} B"), speed));
            }
        }
    }
    ensure!(open.is_none(), "xtest's output ends inside a test");
    ensure!(summary_ok, "xtest's summary does not say `0 failed`");
    ensure!(!cases.is_empty(), "xtest ran no benchmark");
    Ok(cases)
}

/// The report's table of xtest's benchmarks, one column per configuration.
pub fn xtest_table(results: &[(String, Vec<XtestCase>)]) -> String {
    let mut s = String::from("| test | figure |");
    for (name, _) in results {
        write!(s, " {name} |").unwrap();
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---:|".repeat(results.len()));
    s.push('\n');
    let Some((_, first)) = results.first() else {
        return s;
    };
    for case in first {
        for (metric, _) in &case.figures {
            write!(s, "| {} {} | {metric} |", case.id, case.title).unwrap();
            for (_, cases) in results {
                let v = cases
                    .iter()
                    .find(|c| c.id == case.id)
                    .and_then(|c| c.figures.iter().find(|(m, _)| m == metric));
                match v {
                    Some((_, v)) => write!(s, " {v} |").unwrap(),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
    }
    s
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time (UTC), for the report's directory.
pub fn timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // The lock's civil date (YYYY-MM-DD), without its dashes.
    let date = crate::lock::civil_date(days).replace('-', "");
    format!(
        "{date}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_text(cases: &[(&str, u32, &[u64])]) -> String {
        let mut s = String::from(
            "[ 1.0] boot noise\nmoat-bench: version 1\nmoat-bench: cntfrq 1000000000\n",
        );
        for (name, pages, v) in cases {
            s.push_str(&format!(
                "moat-bench: case {name} pages {pages} warmup 100 samples {}\n",
                v.len()
            ));
            s.push_str(&format!("moat-bench: samples {name}"));
            for x in *v {
                s.push_str(&format!(" {x}"));
            }
            s.push('\n');
        }
        s.push_str("moat-bench: done\nmoat-init: run-exit=0\n");
        s
    }

    #[test]
    fn client_output_round_trips() {
        let text = client_text(&[("nop", 0, &[3, 1, 2]), ("shm-1", 1, &[5])]);
        let r = parse_client(&text).unwrap();
        assert_eq!(r.cntfrq, 1_000_000_000);
        assert_eq!(r.cases.len(), 2);
        assert_eq!(r.cases[0].samples, [3, 1, 2]);
        assert_eq!(r.cases[1].pages, 1);
    }

    #[test]
    fn malformed_client_output_is_refused() {
        let good = client_text(&[("nop", 0, &[3, 1, 2])]);
        // A sample count that disagrees with the header.
        let bad = good.replace("samples 3", "samples 4");
        assert!(format!("{:#}", parse_client(&bad).unwrap_err()).contains("samples"));
        // A non-numeric sample.
        assert!(parse_client(&good.replace(" 1 2", " x 2")).is_err());
        // No done.
        assert!(parse_client(&good.replace("moat-bench: done\n", "")).is_err());
        // An error line from the client.
        let e = good.replace(
            "moat-bench: done",
            "moat-bench: error TEE_IOC_INVOKE (errno 22)",
        );
        assert!(format!("{:#}", parse_client(&e).unwrap_err()).contains("TEE_IOC_INVOKE"));
        // Nothing at all.
        assert!(parse_client("just a boot log\n").is_err());
        // A samples line of another case.
        assert!(parse_client(&good.replace("samples nop", "samples shm-1")).is_err());
    }

    #[test]
    fn statistics_use_the_documented_ranks() {
        let v: Vec<u64> = (1..=1000).rev().collect();
        let s = stats(&v);
        assert_eq!((s.min, s.median, s.p99), (1, 501, 990));
        assert!((s.mean - 500.5).abs() < 1e-9);
        let one = stats(&[7]);
        assert_eq!((one.min, one.median, one.p99), (7, 7, 7));
    }

    fn el_text() -> String {
        "elcount: version 1\n\
         elcount: window 0 samples 3 ns-el0=3/1/1/1 ns-el1=30/10/10/10 el2=300/90/100/110 el2h=0/0/0/0 el3=9/3/3/3 s-el1=3000/1000/1000/1000 s-el0=6/2/2/2 forwarded=4\n\
         elcount: end windows 1 conflicts 0 unclassified 0 forwarded 4 mmuidx 0=10 2=20 6=30 7=5\n"
            .to_string()
    }

    #[test]
    fn elcount_output_round_trips() {
        let r = parse_elcount(&el_text()).unwrap();
        assert_eq!(r.windows.len(), 1);
        assert_eq!(r.windows[0].bucket("el2").median, 100);
        assert_eq!(r.windows[0].bucket("s-el1").sum, 3000);
        assert_eq!(r.windows[0].forwarded, 4);
        assert_eq!(r.mmuidx.get(&6), Some(&30));
        let text = el_text();
        let w = window_lines(&text);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("elcount: window 0 samples 3"));
        // `profile=`'s lines change nothing of the report.
        let profiled = text.replace(
            "elcount: window 0",
            "elcount: profile 0 60000000 12\nelcount: window 0",
        );
        assert_eq!(parse_elcount(&profiled).unwrap(), r);
    }

    #[test]
    fn malformed_elcount_output_is_refused() {
        let t = el_text();
        // No end line: QEMU was killed before the plugin's atexit.
        let cut: String = t.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(format!("{:#}", parse_elcount(&cut).unwrap_err()).contains("end line"));
        assert!(parse_elcount(&t.replace("el2=300/90/100/110", "el2=300/90/100")).is_err());
        assert!(parse_elcount(&t.replace("windows 1", "windows 2")).is_err());
        assert!(parse_elcount(&t.replace("ns-el1=", "nsel1=")).is_err());
        assert!(parse_elcount(&t.replace("version 1", "version 2")).is_err());
    }

    fn config(name: &str, scale: u64, el2: u64) -> Config {
        let cases = ["nop", "temp-1", "temp-128", "shm-1", "shm-128"];
        let client = ClientRun {
            cntfrq: CNTFRQ,
            cases: cases
                .iter()
                .enumerate()
                .map(|(i, n)| CaseSamples {
                    name: n.to_string(),
                    pages: 1,
                    warmup: 100,
                    samples: vec![scale * (i as u64 + 1); 3],
                })
                .collect(),
        };
        let windows = cases
            .iter()
            .enumerate()
            .map(|(i, _)| ElWindow {
                samples: 3,
                buckets: BUCKETS
                    .iter()
                    .map(|b| ElStat {
                        median: if *b == "el2" { el2 * (i as u64 + 1) } else { 0 },
                        ..ElStat::default()
                    })
                    .collect(),
                forwarded: 0,
            })
            .collect();
        Config {
            name: name.into(),
            client,
            el: ElReport {
                windows,
                conflicts: 0,
                unclassified: 0,
                forwarded: 0,
                mmuidx: BTreeMap::new(),
            },
            wall: vec![1.0],
            cmdline: String::new(),
            identical: true,
            console_identical: true,
            xtest: None,
        }
    }

    #[test]
    fn the_headline_has_deltas_and_moats_share_of_xens() {
        let cs = [
            config("none", 1000, 0),
            config("xen", 1100, 10),
            config("moat", 1200, 30),
        ];
        let h = headline(&cs).unwrap();
        // NOP: none 1,000, Xen 1,100, moat 1,200: deltas +100 and +200, ratio 2.00.
        assert!(
            h.contains("| NOP invoke | 1,000 | 1,100 | 1,200 | +100 | +200 | 2.00 |"),
            "{h}"
        );
        let e = el2_table(&cs).unwrap();
        assert!(e.contains("| NOP invoke | 10 | 30 | 3.00 |"), "{e}");
        // Per page: (temp-128 − temp-1) / 127 = (3 − 2) × el2 / 127.
        assert!(e.contains("per page, temp memref"), "{e}");
        assert!(headline(&cs[..2]).is_err());
    }

    #[test]
    fn the_check_fails_only_on_a_regression() {
        let moat = config("moat", 1200, 30);
        let mut t = Thresholds {
            median: BTreeMap::from([("nop".to_string(), 1200)]),
            el2: BTreeMap::from([("nop".to_string(), 30)]),
        };
        assert!(check(&moat, &t).is_empty());
        t.median.insert("nop".into(), 1199);
        t.el2.insert("shm-1".into(), 10);
        let f = check(&moat, &t);
        assert_eq!(f.len(), 2, "{f:?}");
        t.median.insert("absent".into(), 1);
        assert!(check(&moat, &t).iter().any(|m| m.contains("not measured")));
    }

    #[test]
    fn the_committed_thresholds_parse() {
        let path = crate::paths::workspace_root().join("qemu/bench/thresholds.toml");
        let t: Thresholds = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(t.median.contains_key("nop") && t.el2.contains_key("nop"));
    }

    #[test]
    fn the_plots_are_svg_with_every_case() {
        let cs = [
            config("none", 1000, 0),
            config("xen", 1100, 10),
            config("moat", 1200, 30),
        ];
        let p = plots(&cs).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].1.starts_with("<svg") && p[0].1.contains("temp-128"));
        assert!(p[0].1.contains("moat"));
    }

    const XTEST: &str = "\
* benchmark_1001 TEE Trusted Storage Performance Test (WRITE)\r
-----------------+---------------+----------------\r
 Data Size (B) \t | Time (s)\t | Speed (kB/s)\t \r
-----------------+---------------+----------------\r
      256 \t |    0.025 \t |   10.000\r
  1048576 \t |   27.492 \t |   37.247\r
-----------------+---------------+----------------\r
  benchmark_1001 OK\r
 \r
* benchmark_2001 TEE SHA Performance test (TA_SHA_SHA1)\r
min=530.208us max=19770.4us mean=1276.21us stddev=1609.08us (cv 126.083%) (0.765208MiB/s)\r
  benchmark_2001 OK\r
24 subtests of which 0 failed\r
";

    #[test]
    fn xtests_benchmarks_parse() {
        let c = parse_xtest_benchmark(XTEST).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "benchmark_1001");
        assert_eq!(
            c[0].figures,
            [
                ("kB/s at 256 B".to_string(), 10.0),
                ("kB/s at 1048576 B".to_string(), 37.247)
            ]
        );
        assert_eq!(c[1].figures[1], ("mean µs".to_string(), 1276.21));
        assert_eq!(c[1].figures[2], ("MiB/s".to_string(), 0.765208));
        let t = xtest_table(&[("none".into(), c.clone()), ("moat".into(), c)]);
        assert!(t.contains("| benchmark_2001 TEE SHA Performance test (TA_SHA_SHA1) | MiB/s | 0.765208 | 0.765208 |"), "{t}");
    }

    #[test]
    fn failed_or_truncated_xtest_runs_are_refused() {
        assert!(parse_xtest_benchmark(&XTEST.replace("0 failed", "1 failed")).is_err());
        assert!(parse_xtest_benchmark(&XTEST.replace("  benchmark_2001 OK\r\n", "")).is_err());
        assert!(parse_xtest_benchmark(&XTEST.replace("mean=1276.21us", "mean=x")).is_err());
        assert!(parse_xtest_benchmark("no xtest here\n").is_err());
    }

    #[test]
    fn numbers_and_timestamps_are_formatted() {
        assert_eq!(thousands(57_606), "57,606");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(timestamp(0), "19700101T000000Z");
        assert_eq!(timestamp(1_709_210_096), "20240229T123456Z");
        assert_eq!(
            case_title("temp-128"),
            "temp memref (register + invoke + release), 128 pages"
        );
        assert_eq!(case_title("shm-1"), "SHM register + release, 1 page");
    }

    #[test]
    fn the_consistency_check_catches_a_slow_counter_and_missing_windows() {
        let c = config("moat", 1200, 30);
        assert!(check_consistent(&c.client, &c.el).is_ok());
        let mut slow = c.client.clone();
        slow.cntfrq = 62_500_000;
        assert!(check_consistent(&slow, &c.el).is_err());
        let mut el = c.el.clone();
        el.windows.pop();
        assert!(check_consistent(&c.client, &el).is_err());
    }
}

/// One symbol's share of the EL2 instructions of one case: instructions per call.
#[derive(Clone, Debug, PartialEq)]
pub struct SymbolCost {
    pub symbol: String,
    pub per_call: f64,
}

/// The symbols of an ELF as `nm -n --defined-only -C` prints them: the code symbols
/// (`T`/`t`/`W`/`w`), sorted by address.
pub fn parse_nm(text: &str) -> Vec<(u64, String)> {
    let mut syms: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?.trim();
            matches!(kind, "T" | "t" | "W" | "w").then(|| (addr, name.to_string()))
        })
        .collect();
    syms.sort_by_key(|(a, _)| *a);
    syms
}

/// The symbol a code address belongs to: the last one at or below it.
fn symbol_of(syms: &[(u64, String)], addr: u64) -> &str {
    match syms.partition_point(|(a, _)| *a <= addr) {
        0 => "?",
        i => &syms[i - 1].1,
    }
}

/// elcount's `profile` lines (`elcount: profile <window> <vaddr hex> <instructions>`),
/// attributed to `syms` and divided by each case's sample count: per case (window order),
/// every symbol's EL2 instructions per call, most first.
pub fn attribute_profile(
    elcount: &str,
    syms: &[(u64, String)],
    client: &ClientRun,
) -> Result<Vec<(String, Vec<SymbolCost>)>> {
    let mut per_window: Vec<std::collections::BTreeMap<String, u64>> =
        vec![Default::default(); client.cases.len()];
    for line in elcount.lines() {
        let Some(rest) = line.strip_prefix("elcount: profile ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let k: usize = num(it.next(), "window", line)?;
        let addr = u64::from_str_radix(it.next().context("missing address")?, 16)
            .with_context(|| format!("bad address in {line:?}"))?;
        let n: u64 = num(it.next(), "count", line)?;
        let w = per_window
            .get_mut(k)
            .with_context(|| format!("profile line for window {k}, which has no case"))?;
        *w.entry(symbol_of(syms, addr).to_string()).or_insert(0) += n;
    }
    Ok(client
        .cases
        .iter()
        .zip(per_window)
        .map(|(case, w)| {
            let calls = case.samples.len().max(1) as f64;
            let mut costs: Vec<SymbolCost> = w
                .into_iter()
                .map(|(symbol, n)| SymbolCost {
                    symbol,
                    per_call: n as f64 / calls,
                })
                .collect();
            costs.sort_by(|a, b| b.per_call.total_cmp(&a.per_call));
            (case.name.clone(), costs)
        })
        .collect())
}

/// The report's profile section: the `top` symbols of every case.
pub fn profile_md(profile: &[(String, Vec<SymbolCost>)], top: usize) -> String {
    let mut s = String::new();
    for (case, costs) in profile {
        let total: f64 = costs.iter().map(|c| c.per_call).sum();
        s.push_str(&format!(
            "\n### {case}: {total:.0} EL2 instructions per call in moat's code\n\n| symbol | per call | share |\n|---|---:|---:|\n"
        ));
        for c in costs.iter().take(top) {
            s.push_str(&format!(
                "| `{}` | {:.0} | {:.1} % |\n",
                c.symbol.replace('|', "\\|"),
                c.per_call,
                100.0 * c.per_call / total.max(1.0)
            ));
        }
    }
    s
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    #[test]
    fn profile_lines_are_attributed_to_symbols_per_call() {
        let syms = parse_nm(
            "0000000060000000 T _start\n0000000060001000 t hv::vdev::flush_lrs\n\
             0000000060002000 D DATA\n0000000060003000 T memcpy\n",
        );
        assert_eq!(syms.len(), 3, "data symbols are not code");
        let client = ClientRun {
            cntfrq: 1_000_000_000,
            cases: vec![
                CaseSamples {
                    name: "nop".into(),
                    pages: 0,
                    warmup: 100,
                    samples: vec![1; 4],
                },
                CaseSamples {
                    name: "shm-1".into(),
                    pages: 1,
                    warmup: 100,
                    samples: vec![1; 2],
                },
            ],
        };
        let el = "elcount: version 1\nelcount: profile 0 60001010 400\n\
                  elcount: profile 0 60001200 400\nelcount: profile 0 60003004 40\n\
                  elcount: window 0 samples 4 el2=0/0/0/0\nelcount: profile 1 60000010 10\n";
        let p = attribute_profile(el, &syms, &client).unwrap();
        assert_eq!(p[0].0, "nop");
        assert_eq!(
            p[0].1[0],
            SymbolCost {
                symbol: "hv::vdev::flush_lrs".into(),
                per_call: 200.0
            }
        );
        assert_eq!(p[0].1[1].symbol, "memcpy");
        assert_eq!(p[1].1[0].per_call, 5.0);
        assert!(attribute_profile("elcount: profile 7 60000000 1\n", &syms, &client).is_err());
        let md = profile_md(&p, 1);
        assert!(md.contains("### nop: 210 EL2 instructions per call"));
        assert!(md.contains("| `hv::vdev::flush_lrs` | 200 | 95.2 % |"));
    }
}
