// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask stack update|check`: keep `qemu/stack.lock` in step with the archive.
//!
//! `update` refreshes the private package lists and records, for every part of
//! `qemu/stack.toml`, the newest version its suite offers that satisfies its constraint,
//! with the archive index's SHA-256 (nothing is downloaded; the next build downloads and
//! verifies). An entry whose version did not change keeps its date. `check` lists the lock
//! entries the archive no longer has, so a drift is seen before a build needs the fallback.

use crate::apt::PrivateApt;
use crate::lock::{self, Lock};
use crate::resolve::{Archive, Resolver};
use crate::stack::Stack;
use anyhow::Result;

#[derive(clap::Subcommand, Debug)]
pub enum StackCmd {
    /// Re-resolve every part to the newest version in its suite and rewrite the lock.
    Update,
    /// List the lock entries the archive no longer has; exit 1 when there are any.
    Check,
}

fn resolver() -> Result<(Stack, Resolver<PrivateApt>)> {
    let stack = Stack::load()?;
    let cache = crate::paths::cache_dir()?;
    let mut apt = PrivateApt::new(&cache, &stack.suites())?;
    // Both commands speak about the archive as it is now, never about old lists.
    apt.refresh()?;
    let r = Resolver::new(apt, Lock::load()?, &cache, false, stack.suites());
    Ok((stack, r))
}

pub fn run(cmd: &StackCmd) -> Result<u8> {
    match cmd {
        StackCmd::Update => update(),
        StackCmd::Check => check(),
    }
}

fn update() -> Result<u8> {
    let (stack, mut r) = resolver()?;
    let date = lock::today();
    let mut new = Lock::default();
    let mut changed = 0;
    for w in stack.wants() {
        let e = r.latest(&w, &date)?;
        let was = r.lock_entry(&w.id).cloned();
        match &was {
            Some(old) if *old == e => println!("  = {} {} {}", w.id, e.package, e.version),
            Some(old) => {
                changed += 1;
                println!(
                    "  ~ {} {} {} -> {} {}",
                    w.id, old.package, old.version, e.package, e.version
                );
            }
            None => {
                changed += 1;
                println!("  + {} {} {}", w.id, e.package, e.version);
            }
        }
        new.entries.insert(w.id.clone(), e);
    }
    let stale = Lock::load()?
        .entries
        .into_keys()
        .filter(|id| !new.entries.contains_key(id))
        .collect::<Vec<_>>();
    for id in &stale {
        println!("  - {id} (no longer in qemu/stack.toml)");
    }
    new.save()?;
    println!(
        "qemu/stack.lock: {} parts, {} changed, {} removed",
        new.entries.len(),
        changed,
        stale.len()
    );
    Ok(0)
}

fn check() -> Result<u8> {
    let (stack, mut r) = resolver()?;
    let mut gone = 0;
    for w in stack.wants() {
        match r.still_offered(&w) {
            Ok(true) => {}
            Ok(false) => {
                gone += 1;
                let e = r.lock_entry(&w.id).cloned();
                let (p, v) = e.map(|e| (e.package, e.version)).unwrap_or_default();
                println!("  gone: {} {p} {v} (suite {})", w.id, w.suite);
            }
            Err(e) => {
                gone += 1;
                println!("  missing: {e:#}");
            }
        }
    }
    if gone == 0 {
        println!(
            "qemu/stack.lock: all {} entries are in the archive",
            stack.wants().len()
        );
        Ok(0)
    } else {
        println!("qemu/stack.lock: {gone} entries need `cargo xtask stack update`");
        Ok(1)
    }
}
