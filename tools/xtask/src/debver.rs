// SPDX-License-Identifier: MIT OR Apache-2.0
//! Debian version numbers: ordering by Debian's rules, and the manifest's constraints.
//!
//! A version is `[epoch:]upstream[-revision]` (Debian Policy §5.6.12). Two versions compare
//! epoch first (as a number), then upstream, then revision, each with dpkg's `verrevcmp`:
//! alternating runs of non-digits (compared character by character, `~` before everything,
//! even the end of the string, letters before other characters) and digits (compared as
//! numbers). So `1.0~rc1 < 1.0 < 1.0+b1 < 1.0.1`, and `1:0.9 > 2.0`.
//!
//! A constraint in `qemu/stack.toml` names an upstream version or series: `2.41`, `4.5.0`,
//! `6.1`. A version satisfies it when its upstream part is the constraint, or starts with it
//! followed by `.`, `+`, `~` or `-` (so `6.1` takes `6.1.176` but not `6.12.117`). A
//! constraint with an epoch (`1:1.37`) also requires that epoch; without one, any epoch.

use std::cmp::Ordering;

/// A parsed Debian version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

/// Split `[epoch:]upstream[-revision]`. A malformed epoch counts as 0 and stays in upstream.
pub fn parse(v: &str) -> Version<'_> {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    Version {
        epoch,
        upstream,
        revision,
    }
}

/// The weight of a non-digit character in dpkg's ordering (`~` lowest, then the end of a
/// part, then letters, then everything else).
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` on one part (upstream or revision).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // The digit run, as a number: skip leading zeros, then the longer run is larger.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let by_len = da.len().cmp(&db.len());
        if by_len != Ordering::Equal {
            return by_len;
        }
        let by_digits = da.cmp(db);
        if by_digits != Ordering::Equal {
            return by_digits;
        }
    }
    Ordering::Equal
}

/// Compare two Debian versions by Debian's rules.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse(a), parse(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// Does `version` satisfy the manifest constraint `constraint` (see the module doc)?
pub fn satisfies(version: &str, constraint: &str) -> bool {
    let v = parse(version);
    let (want_epoch, want) = match constraint.split_once(':') {
        Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.parse::<u64>().ok(), rest)
        }
        _ => (None, constraint),
    };
    if want.is_empty() || want_epoch.is_some_and(|e| e != v.epoch) {
        return false;
    }
    match v.upstream.strip_prefix(want) {
        Some("") => true,
        Some(rest) => matches!(rest.as_bytes()[0], b'.' | b'+' | b'~' | b'-'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Pairs with their expected order, from Debian Policy and dpkg's own tests.
    const PAIRS: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Ordering::Equal),
        ("1.0-1", "1.0-1", Ordering::Equal),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0", "1.0+b1", Ordering::Less),
        ("1.0", "1.0.1", Ordering::Less),
        ("1.0-1", "1.0-1+deb12u1", Ordering::Less),
        ("2.41-12+deb13u4", "2.41-12+deb13u5", Ordering::Less),
        ("2.41-12+deb13u9", "2.41-12+deb13u10", Ordering::Less),
        ("3.5.7-1~deb13u2", "3.5.9-1~deb13u1", Ordering::Less),
        ("3.5.9-1~deb13u1", "3.5.9-1", Ordering::Less),
        (
            "1:1.3.dfsg+really1.3.1-1+b1",
            "1:1.3.dfsg+really1.3.1-1+deb13u1",
            Ordering::Less,
        ),
        ("1:0.9", "2.0", Ordering::Greater),
        (
            "1:1.2.13.dfsg-1",
            "1:1.3.dfsg+really1.3.1-1",
            Ordering::Less,
        ),
        ("6.1.170-3", "6.1.176-1", Ordering::Less),
        ("6.12.9-1", "6.12.117-1", Ordering::Less),
        ("1.0a", "1.0", Ordering::Greater),
        ("1.0~~", "1.0~", Ordering::Less),
        ("1.0~~a", "1.0~", Ordering::Less),
        ("001", "1", Ordering::Equal),
        ("1.0.", "1.0", Ordering::Greater),
        ("1.0+", "1.0.", Ordering::Less),
        (
            "4.17.5+72-g01140da4e8-1",
            "4.17.5+80-gabc-1",
            Ordering::Less,
        ),
        ("2.41-12+deb13u5~moat", "2.41-12+deb13u5", Ordering::Less),
    ];

    #[test]
    fn versions_order_by_debian_rules() {
        for (a, b, want) in PAIRS {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// The same pairs through dpkg itself, where the host has it (Debian always does).
    #[test]
    fn dpkg_agrees() {
        if Command::new("dpkg").arg("--version").output().is_err() {
            return;
        }
        for (a, b, want) in PAIRS {
            let op = match want {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            let ok = Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .unwrap()
                .success();
            assert!(ok, "dpkg disagrees: {a} {op} {b}");
        }
    }

    #[test]
    fn parts_are_split_at_the_first_colon_and_last_dash() {
        let v = parse("1:1.3.dfsg+really1.3.1-1+deb13u1");
        assert_eq!(
            (v.epoch, v.upstream, v.revision),
            (1, "1.3.dfsg+really1.3.1", "1+deb13u1")
        );
        let v = parse("4.17.5+72-g01140da4e8-1");
        assert_eq!(
            (v.epoch, v.upstream, v.revision),
            (0, "4.17.5+72-g01140da4e8", "1")
        );
        let v = parse("2.41");
        assert_eq!((v.upstream, v.revision), ("2.41", ""));
    }

    #[test]
    fn constraints_match_upstream_at_a_boundary() {
        assert!(satisfies("2.41-12+deb13u5", "2.41"));
        assert!(!satisfies("2.36-9+deb12u14", "2.41"));
        assert!(satisfies("3.5.9-1~deb13u1", "3.5"));
        assert!(satisfies("6.1.176-1", "6.1"));
        assert!(!satisfies("6.12.117-1", "6.1"));
        assert!(satisfies("6.12.117-1", "6.12"));
        assert!(satisfies("4.17.5+72-g01140da4e8-1", "4.17.5"));
        assert!(satisfies("2.12.1+dfsg-1", "2.12.1"));
        assert!(!satisfies("2.12.10-1", "2.12.1"));
        // Epochs: ignored unless the constraint names one.
        assert!(satisfies("1:1.3.dfsg+really1.3.1-1+deb13u1", "1.3"));
        assert!(satisfies("1:1.37.0-6+b9", "1:1.37.0"));
        assert!(!satisfies("2:1.37.0-6", "1:1.37.0"));
        assert!(!satisfies("1.0", ""));
    }
}
