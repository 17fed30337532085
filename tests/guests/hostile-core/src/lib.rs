// SPDX-License-Identifier: MIT OR Apache-2.0
//! hostile-core: the pure half of moat's hostile guest (`tests/guests/hostile`), a
//! bare-metal EL1 program moat boots as dom0 instead of Linux, which fires seeded
//! campaigns of raw SMCs at the OP-TEE mediator and holds every answer to the protocol.
//!
//! ```text
//!   /chosen/bootargs ─▶ options      "hostile seed=1 cases=200"
//!   the guest's DT   ─▶ layout       RAM, the arena, forbidden windows, RAM edges
//!   (seed, i)        ─▶ campaign     case i: named steps, addresses, page lists, cookies
//!                       driver       ─Guest::smc─▶ moat ─▶ mediator ─▶ OP-TEE
//!                         └▶ check   every answer: pass, unexpected, or escape
//!                       threads      attack 3 against a second guest (mode=threads)
//!                       mmio         odd accesses to the emulated GIC and PL011 (RAZ/WI)
//!   console lines:  hostile: ESCAPE|UNEXPECTED case N (family): ...   (one per finding)
//!                   hostile: seed S: N cases, E escapes, U unexpected answers
//! ```
//!
//! Everything here is pure and host-tested; the effect crate implements [`driver::Guest`]
//! (`smc #0`, its own RAM, the timer, the PL011) and nothing else. The host tests run
//! whole campaigns against the real mediator over its fakes.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod campaign;
pub mod check;
pub mod driver;
pub mod layout;
pub mod mmio;
pub mod options;
pub mod proto;
pub mod rng;
pub mod stage1;
pub mod threads;

use campaign::{Campaign, Family};
use check::Severity;
use driver::{Driver, Guest};
use layout::Layout;
use options::{Mode, Options};

/// Exit status: nothing found.
pub const STATUS_CLEAN: u8 = 0;
/// Exit status: an escape or an unexpected answer.
pub const STATUS_FINDINGS: u8 = 1;
/// Exit status: the guest could not run (options, device tree).
pub const STATUS_CANNOT_RUN: u8 = 2;

/// What a run found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases run.
    pub cases: u32,
    /// Checks made.
    pub checks: u32,
    /// Escapes.
    pub escapes: u32,
    /// Unexpected answers.
    pub unexpected: u32,
}

impl Summary {
    /// The exit status.
    pub fn status(&self) -> u8 {
        match self.escapes + self.unexpected {
            0 => STATUS_CLEAN,
            _ => STATUS_FINDINGS,
        }
    }
}

/// Run what `opts` asks for over `g`, printing findings and the summary.
pub fn run<G: Guest>(g: &mut G, layout: &Layout, opts: &Options) -> Summary {
    let mut d = Driver::new(g, layout, opts.show);
    d.trace = opts.trace;
    for (k, s) in &layout.given_away {
        d.finding(
            Severity::Escape,
            alloc::format!(
                "the guest's RAM covers {} [{:#x}, {:#x})",
                k.name(),
                s.start,
                s.end
            ),
        );
    }
    d.setup();
    let line = alloc::format!(
        "hostile: setup: capabilities {:#x}{}, a share of {} OP-TEE thread(s), invoke_tests.pta session {}",
        d.caps,
        match d.rpc_arg_ok() {
            true => alloc::format!(" (CALL_WITH_RPC_ARG, {} RPC params)", d.rpc_params),
            false => alloc::string::String::new(),
        },
        d.share,
        d.pta.map_or("none".into(), |s| alloc::format!("{s:#x}")),
    );
    d.g.say(&line);
    if opts.mode == Mode::Threads {
        threads::run(&mut d, opts);
    }
    let start = d.g.now_ms();
    let campaign = Campaign {
        seed: opts.seed,
        from: opts.from,
        count: opts.cases,
        layout,
    };
    for case in campaign.iter() {
        d.run_case(&case);
        let done = case.index + 1 - opts.from;
        if done.is_multiple_of(1000) && done < opts.cases {
            let line = alloc::format!(
                "hostile: {done} of {} cases, {} escapes, {} unexpected answers so far",
                opts.cases,
                d.escapes,
                d.unexpected
            );
            d.g.say(&line);
        }
    }
    let secs = d.g.now_ms().saturating_sub(start);
    if opts.wait_other > 0 {
        let line = alloc::format!(
            "hostile: campaign done: {} cases; waiting for the other guest to reset {} times",
            opts.cases,
            opts.wait_other
        );
        d.g.say(&line);
        match threads::wait_resets(&mut d, opts.wait_other, opts.wait_secs) {
            true => {
                let line =
                    alloc::format!("hostile: the other guest reset {} times", opts.wait_other);
                d.g.say(&line);
            }
            false => d.finding(
                Severity::Unexpected,
                alloc::format!(
                    "the other guest did not reset {} times ({} s at most each)",
                    opts.wait_other,
                    opts.wait_secs
                ),
            ),
        }
    }
    let served = d.finish();
    let line = match served {
        true => "hostile: after the campaign: OP-TEE answers CALLS_UID, and a session to invoke_tests.pta opens and closes",
        false => "hostile: after the campaign: OP-TEE does not serve as it should (see the findings)",
    };
    d.g.say(line);
    let mut s = Summary {
        escapes: d.escapes,
        unexpected: d.unexpected,
        checks: d.other_checks,
        ..Summary::default()
    };
    for f in Family::ALL {
        let t = d.tallies.get(&f).copied().unwrap_or_default();
        s.cases += t.cases;
        s.checks += t.checks;
        if t.cases > 0 {
            let line = alloc::format!(
                "hostile: family {}: {} cases, {} checks, {} escapes, {} unexpected{}",
                f.name(),
                t.cases,
                t.checks,
                t.escapes,
                t.unexpected,
                match t.skipped {
                    0 => alloc::string::String::new(),
                    n => alloc::format!(", {n} skipped (arena too small)"),
                }
            );
            d.g.say(&line);
        }
    }
    let line = alloc::format!(
        "hostile: {} checks in {}.{:01} s",
        s.checks,
        secs / 1000,
        secs % 1000 / 100
    );
    d.g.say(&line);
    let line = alloc::format!(
        "hostile: seed {}: {} cases, {} escapes, {} unexpected answers",
        opts.seed,
        s.cases,
        s.escapes,
        s.unexpected
    );
    d.g.say(&line);
    s
}

#[cfg(test)]
mod tests;
