// SPDX-License-Identifier: MIT OR Apache-2.0
//! The guest's options, from `/chosen/bootargs` (xtask writes `hostile <dom0_args>` there):
//!
//! ```text
//!   hostile [seed=N] [cases=N] [from=N] [mode=campaign|threads] [wait_secs=N] [show=N]
//!           [trace=0|1] [wait_other=N]
//! ```
//!
//! `from=N cases=1` replays case N of the seed alone (a case depends only on the seed, its
//! index and the layout); `trace=1` prints every SMC the guest makes and its answer;
//! `wait_other=N` waits, after the campaign, until another TEE guest has reset N times (a
//! Linux domU running `xtest 1001 && reboot -f` beside the campaign: the second reset ends
//! a run that began after the campaign).
//!
//! Numbers are decimal or `0x` hex. An unknown option, or a value that does not parse, is
//! an error: a typo must not quietly run another campaign than the one asked for.

use alloc::string::String;

/// What the guest does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A seeded campaign of `cases` cases, then the checks that OP-TEE still serves.
    Campaign,
    /// Attack 3 against a second guest that resets: hold OP-TEE's threads in parked calls,
    /// see the share change, and see the parked call reaped (`threads`), then `cases`
    /// campaign cases.
    Threads,
}

/// The parsed options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The campaign's seed.
    pub seed: u64,
    /// How many cases.
    pub cases: u32,
    /// The first case's index.
    pub from: u32,
    /// Print every SMC and its answer.
    pub trace: bool,
    /// After the campaign, wait for another guest to reset this many times.
    pub wait_other: u32,
    /// What to run.
    pub mode: Mode,
    /// Threads mode: how long to wait for each change of the share, in seconds.
    pub wait_secs: u32,
    /// Most findings printed one per line (the rest are only counted).
    pub show: u32,
}

/// Why the options were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// An option the guest does not know.
    Unknown(String),
    /// A value that does not parse.
    BadValue(String),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 1,
            cases: 200,
            from: 0,
            trace: false,
            wait_other: 0,
            mode: Mode::Campaign,
            wait_secs: 600,
            show: 40,
        }
    }
}

impl core::fmt::Display for OptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OptionError::Unknown(w) => write!(
                f,
                "unknown option `{w}` (known: seed=, cases=, from=, mode=campaign|threads, wait_secs=, show=, trace=, wait_other=)"
            ),
            OptionError::BadValue(w) => write!(f, "bad value in `{w}`"),
        }
    }
}

fn number(word: &str, v: &str) -> Result<u64, OptionError> {
    let bad = || OptionError::BadValue(word.into());
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad()),
        None => v.parse().map_err(|_| bad()),
    }
}

impl Options {
    /// Parse a command line; the leading `hostile` is optional.
    pub fn parse(line: &str) -> Result<Self, OptionError> {
        let mut o = Options::default();
        let mut threads_cases = None;
        for (i, word) in line.split_whitespace().enumerate() {
            if i == 0 && word == "hostile" {
                continue;
            }
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| OptionError::Unknown(word.into()))?;
            let small = |n: u64| u32::try_from(n).map_err(|_| OptionError::BadValue(word.into()));
            match k {
                "seed" => o.seed = number(word, v)?,
                "cases" => {
                    o.cases = small(number(word, v)?)?;
                    threads_cases = Some(o.cases);
                }
                "wait_secs" => o.wait_secs = small(number(word, v)?)?,
                "from" => o.from = small(number(word, v)?)?,
                "wait_other" => o.wait_other = small(number(word, v)?)?,
                "trace" => {
                    o.trace = match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(OptionError::BadValue(word.into())),
                    }
                }
                "show" => o.show = small(number(word, v)?)?,
                "mode" => {
                    o.mode = match v {
                        "campaign" => Mode::Campaign,
                        "threads" => Mode::Threads,
                        _ => return Err(OptionError::BadValue(word.into())),
                    }
                }
                _ => return Err(OptionError::Unknown(word.into())),
            }
        }
        if o.mode == Mode::Threads {
            // Threads mode is about the parked calls; a campaign beside them is opt-in.
            o.cases = threads_cases.unwrap_or(0);
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_strictly() {
        let o = Options::parse("hostile seed=0x10 cases=10000").unwrap();
        assert_eq!((o.seed, o.cases, o.mode), (16, 10000, Mode::Campaign));
        assert_eq!(Options::parse("").unwrap(), Options::default());
        let t = Options::parse("mode=threads wait_secs=30").unwrap();
        assert_eq!((t.mode, t.cases, t.wait_secs), (Mode::Threads, 0, 30));
        assert_eq!(
            Options::parse("seed=1 case=3"),
            Err(OptionError::Unknown("case=3".into()))
        );
        assert_eq!(
            Options::parse("cases=lots"),
            Err(OptionError::BadValue("cases=lots".into()))
        );
        assert!(Options::parse("cases=99999999999").is_err());
        assert!(Options::parse("mode=fast").is_err());
        assert!(Options::parse("verbose").is_err());
        let r = Options::parse("seed=5 from=682 cases=1 trace=1").unwrap();
        assert_eq!((r.from, r.cases, r.trace), (682, 1, true));
        assert!(Options::parse("trace=yes").is_err());
        assert_eq!(Options::parse("wait_other=2").unwrap().wait_other, 2);
    }
}
