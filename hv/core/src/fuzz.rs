// SPDX-License-Identifier: MIT OR Apache-2.0
//! A fuzz driver for everything in this crate a guest reaches: the exception syndrome
//! decoder, the MMIO decoder, PSCI decoding, and the virtual GICv3 and PL011 register
//! models with their list-register bookkeeping. Bytes become a program of such inputs; any
//! panic is a finding. `fuzz_replay` replays it on 10,000 seeded inputs in every
//! `cargo test` (`MOAT_FUZZ_REPLAY=N` for N); libFuzzer runs it from `hv/core/fuzz`
//! (`cargo +nightly fuzz run decoders`; `cargo xtask test --full` runs 10^7 executions).

use crate::mmio::{self, HpfarEl2, Width};
use crate::vgic::{Vgic, MAX_LRS};
use crate::vpl011::Vpl011;
use crate::{esr, psci, smccc};

/// A byte cursor: reads past the end yield zeros, so every input is a valid program.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        (0..4).fold(0, |acc, i| acc | (u32::from(self.u8()) << (8 * i)))
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | (u64::from(self.u8()) << (8 * i)))
    }
    fn width(&mut self) -> Width {
        match self.u8() % 4 {
            0 => Width::Byte,
            1 => Width::Half,
            2 => Width::Word,
            _ => Width::Double,
        }
    }
}

/// One fuzz input. The guest-facing models keep their state across the program, as a
/// guest's accesses would.
pub fn decoders(data: &[u8]) {
    let mut b = Bytes(data);
    let vcpus = 1 + usize::from(b.u8() % 4);
    let Ok(mut vgic) = Vgic::new(vcpus, 32 + u32::from(b.u8() % 3) * 32) else {
        return;
    };
    let mut uart = Vpl011::new();
    let mut lrs = [0u64; MAX_LRS];
    for _ in 0..256 {
        if b.0.is_empty() {
            break;
        }
        let vcpu = usize::from(b.u8()) % (vcpus + 1); // one past: a bad vCPU too
        match b.u8() % 10 {
            0 => {
                if let esr::Exit::DataAbort(da) = esr::decode_raw(b.u64()) {
                    let _ = mmio::decode(&da, HpfarEl2::new(b.u64()), b.u64());
                }
            }
            1 => {
                let call = smccc::Call {
                    function_id: b.u32(),
                    args: [b.u64(), b.u64(), b.u64(), 0, 0, 0],
                };
                let _ = psci::decode(&call);
            }
            2 => {
                let _ = vgic.dist_read(usize::from(b.u8()) << 8 | usize::from(b.u8()), b.width());
            }
            3 => {
                let off = usize::from(b.u8()) << 8 | usize::from(b.u8());
                let _ = vgic.dist_write(off, b.width(), b.u64());
            }
            4 => {
                let off = (usize::from(b.u8()) << 9 | usize::from(b.u8())) % 0x40000;
                let _ = vgic.redist_read(off, b.width());
            }
            5 => {
                let off = (usize::from(b.u8()) << 9 | usize::from(b.u8())) % 0x40000;
                let _ = vgic.redist_write(off, b.width(), b.u64());
            }
            6 => {
                let intid = u32::from(b.u8()) | u32::from(b.u8() % 4) << 8;
                match b.u8() % 3 {
                    0 => {
                        let _ = vgic.inject(vcpu, intid);
                    }
                    1 => {
                        let _ = vgic.set_level(vcpu, intid, b.u8() & 1 == 1);
                    }
                    _ => {
                        let _ = vgic.send_sgi(vcpu, b.u64());
                    }
                }
            }
            7 => {
                // The guest acknowledged or EOI'd some list registers (any value comes back).
                for lr in lrs.iter_mut() {
                    if b.u8() & 1 == 1 {
                        *lr = b.u64();
                    }
                }
                let _ = vgic.sync_lrs(vcpu, &lrs);
                let _ = vgic.fill_lrs(vcpu, &mut lrs);
            }
            8 => {
                let off = (usize::from(b.u8()) << 4 | usize::from(b.u8() & 0xf)) % 0x1000;
                if b.u8() & 1 == 0 {
                    let _ = uart.read(off, b.width());
                } else {
                    let _ = uart.write(off, b.width(), b.u32());
                }
            }
            _ => {
                let _ = uart.push_input(b.u8());
                let _ = uart.irq_level();
            }
        }
    }
}

#[cfg(test)]
mod fuzz_replay {
    use alloc::vec::Vec;

    /// Inputs replayed by default: about a second.
    const DEFAULT_INPUTS: u64 = 10_000;

    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn seeded_inputs_never_panic_a_decoder() {
        extern crate std;
        let n = std::env::var("MOAT_FUZZ_REPLAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_INPUTS);
        for i in 0..n {
            let mut s = 0x6876_u64 ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let len = (next(&mut s) % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
            let r = std::panic::catch_unwind(|| super::decoders(&data));
            assert!(r.is_ok(), "input {i} of the replay ({len} bytes) panicked");
        }
    }
}
