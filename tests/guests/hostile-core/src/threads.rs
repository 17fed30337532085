// SPDX-License-Identifier: MIT OR Apache-2.0
//! Threads mode, attack 3 beside a second guest: hold this guest's OP-TEE threads in
//! parked calls, see that further calls get ETHREAD_LIMIT at once, and see what became of
//! the parked calls once the other guest has run.
//!
//! moat's mediator tells each guest a fair share of OP-TEE's threads (threads / guests,
//! what GET_THREAD_COUNT answers); a guest may use free threads beyond it. For a TEE whose
//! threads all guests share, the mediator can fail ("reap") the oldest call parked for
//! longer than 5 s by a guest above its share when another is refused a thread; that is off
//! by default, as Debian's OP-TEE gives each guest threads of its own. Here the other guest
//! is a Linux domU whose command ends with `reboot -f`:
//!
//! ```text
//!   this guest (dom0)                         domU                    GET_THREAD_COUNT
//!   park A, park B (share 1, both threads)    boots                   1
//!   one more call: ETHREAD_LIMIT, at once
//!                                             runs its command (and is refused a
//!                                             thread or not), resets         2
//!   resume A and B: each either was reaped (ERESUME, its message COMMUNICATION origin
//!   COMMS) or goes on and finishes
//! ```
//!
//! Both ends are protocol answers; which one happened is printed, and the scenario says
//! which it expects. (On Debian's OP-TEE 4.5 with NS-virtualization the thread contexts
//! are per guest partition, so the domU is refused a thread only when it exhausts its own,
//! and nothing of this guest's is reaped for it.)

use mediator::abi;

use crate::check::{self, Ctx, Expect, Outcome, Severity, Verdict};
use crate::driver::{thread_uuid, Driver, Guest};
use crate::options::Options;
use crate::proto::ORIGIN_COMMS;

/// Milliseconds between two polls of GET_THREAD_COUNT: a reset's window (VM_DESTROYED to
/// VM_CREATED, a scrub of the other guest's RAM and a reload) is far longer, and moat's
/// `trace=smc` log stays readable.
const POLL_MS: u64 = 20;

fn say<G: Guest>(d: &mut Driver<G>, line: &str) {
    d.g.say(&alloc::format!("hostile: threads: {line}"));
}

/// Poll GET_THREAD_COUNT until `done` holds or `wait_secs` pass; the last count and
/// whether `done` held.
pub(crate) fn wait_for<G: Guest>(
    d: &mut Driver<G>,
    wait_secs: u32,
    done: impl Fn(u32) -> bool,
) -> (u32, bool) {
    let deadline = d.g.now_ms() + u64::from(wait_secs) * 1000;
    loop {
        let n = d.thread_count();
        if done(n) {
            return (n, true);
        }
        let next = d.g.now_ms() + POLL_MS;
        while d.g.now_ms() < next {}
        if d.g.now_ms() >= deadline {
            return (n, false);
        }
    }
}

fn rpc_name(o: &Outcome) -> &'static str {
    abi::return_name(abi::OPTEE_SMC_CALL_WITH_ARG, o.regs[0] as u32)
}

/// Park a call for `name`, trying again while OP-TEE has no thread for it; its handle.
fn park<G: Guest>(d: &mut Driver<G>, name: &str, i: u32, wait_secs: u32) -> Option<u32> {
    let deadline = d.g.now_ms() + u64::from(wait_secs) * 1000;
    loop {
        let (out, h) = d.park_open(&thread_uuid(i));
        if let Some(h) = h {
            say(
                d,
                &alloc::format!("call {name} parked in {} (handle {h})", rpc_name(&out)),
            );
            return Some(h);
        }
        if out.regs[0] as u32 != abi::OPTEE_SMC_RETURN_ETHREAD_LIMIT || d.g.now_ms() >= deadline {
            let v = check::check(
                &Expect::Parks,
                &Ctx {
                    share: 1,
                    parked: 0,
                },
                &out,
            );
            d.record(v, &alloc::format!("threads: call {name}"));
            return None;
        }
    }
}

/// Resume the parked call `name` and say what became of it.
fn resume<G: Guest>(d: &mut Driver<G>, name: &str, handle: u32) {
    let Some((first, last)) = d.resume_parked(handle) else {
        say(d, &alloc::format!("call {name} is gone"));
        return;
    };
    let msg = last.msg.unwrap_or_default();
    let a0 = first.regs[0] as u32;
    let v = if a0 == abi::OPTEE_SMC_RETURN_ERESUME {
        let text = alloc::format!(
            "RETURN_FROM_RPC got ERESUME, its message says {:#x} origin {}",
            msg.ret,
            msg.ret_origin
        );
        say(d, &alloc::format!("call {name} was reaped: {text}"));
        match msg.ret == abi::TEEC_ERROR_COMMUNICATION && msg.ret_origin == ORIGIN_COMMS {
            true => Verdict::Pass,
            false => Verdict::Fail(
                Severity::Unexpected,
                alloc::format!("call {name}: {text}, not COMMUNICATION origin COMMS"),
            ),
        }
    } else {
        say(
            d,
            &alloc::format!(
                "call {name} was not reaped: it went on ({}) and finished: a0 {:#x} ({}), ret {:#x} origin {}",
                rpc_name(&first),
                last.regs[0],
                rpc_name(&last),
                msg.ret,
                msg.ret_origin
            ),
        );
        match abi::is_rpc(last.regs[0] as u32) {
            true => Verdict::Fail(
                Severity::Unexpected,
                alloc::format!("call {name} did not finish"),
            ),
            false => Verdict::Pass,
        }
    };
    d.record(v, &alloc::format!("threads: call {name}"));
}

/// Run the sequence above. Findings go through the driver like any case's.
pub fn run<G: Guest>(d: &mut Driver<G>, opts: &Options) {
    let share = d.thread_count();
    say(
        d,
        &alloc::format!("GET_THREAD_COUNT says {share}: this guest's share of OP-TEE's threads"),
    );
    if share != 1 {
        d.finding(
            Severity::Unexpected,
            alloc::format!(
                "threads mode needs a share of 1 (a second TEE guest beside this one), got {share}"
            ),
        );
        return;
    }
    d.share = share;
    let Some(ha) = park(d, "A", 0, opts.wait_secs) else {
        return;
    };
    let Some(hb) = park(d, "B", 1, opts.wait_secs) else {
        let _ = d.resume_parked(ha);
        return;
    };
    let (x, _) = d.park_open(&thread_uuid(9));
    let v = check::check(&Expect::ThreadLimit, &Ctx { share, parked: 2 }, &x);
    if v == Verdict::Pass {
        say(d, "one more call gets ETHREAD_LIMIT, at once");
    }
    d.record(v, "threads: a call with both threads parked");
    d.fast(
        abi::OPTEE_SMC_CALLS_UID,
        [0; 6],
        &Expect::Uid,
        "threads: CALLS_UID with both threads parked",
    );
    // The other guest runs and resets: while it is gone this guest's share is every thread.
    let (n, grew) = wait_for(d, opts.wait_secs, |n| n > 1);
    match grew {
        true => say(
            d,
            &alloc::format!("GET_THREAD_COUNT says {n}: the other guest reset; resuming A and B"),
        ),
        false => d.finding(
            Severity::Unexpected,
            alloc::format!(
                "the share never grew in {} s: did the other guest run and reset?",
                opts.wait_secs
            ),
        ),
    }
    resume(d, "A", ha);
    resume(d, "B", hb);
}

/// Wait until another TEE guest has reset `times` times: each time this guest's share
/// grows (the other is gone) and comes back. True if it did within `wait_secs` each.
pub fn wait_resets<G: Guest>(d: &mut Driver<G>, times: u32, wait_secs: u32) -> bool {
    for _ in 0..times {
        // Back (or still there) first, then gone: a rising edge of the share.
        if !wait_for(d, wait_secs, |n| n == 1).1 || !wait_for(d, wait_secs, |n| n > 1).1 {
            return false;
        }
    }
    true
}
