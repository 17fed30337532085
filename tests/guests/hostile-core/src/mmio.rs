// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `mmio` family: refused and odd accesses to the devices moat emulates for the guest
//! (the GICv3 distributor and redistributors, the console PL011), each checked against
//! the answer moat promises.
//!
//! What moat promises (`hv/src/trap.rs` on `vdev::Emulated::Refused`, and the models in
//! `hv_core::vgic` and `hv_core::vpl011`):
//!
//! ```text
//!   access with a syndrome (ISV=1: one ldr/str, no writeback)
//!     the model takes it              → emulated
//!     the model refuses it (a width   → RAZ/WI: a load gives 0, a store is ignored,
//!       the register does not take)     the guest goes on with the next instruction
//!     read-only register              → the store is ignored (WI)
//!     offset the model does not have  → RAZ/WI
//!   access with no syndrome (ISV=0: ldp, writeback)
//!                                     → synchronous external abort, as under Xen and KVM
//! ```
//!
//! Widths: the GIC's registers take 32-bit accesses, except GICD_IPRIORITYR and
//! GICR_IPRIORITYR (bytes or words) and GICD_IROUTER and GICR_TYPER (words or
//! doublewords) (IHI 0069H §12.1.3 "GIC memory-mapped register access"); the PL011 takes
//! bytes, halfwords and words, a narrow load giving those bytes of the register and a
//! narrow store to its upper bytes being ignored, but no doublewords.
//!
//! Each case reads what it checks with a width the register takes before and after the
//! odd access (`MmioExpect::Keep`, then `Kept` or an exact value), and puts back anything
//! it legally changed (`Access::Restore`), so the guest's devices end every case as they
//! began it. Offsets are the architecture's (IHI 0069H §12.8–§12.11, DDI 0183G Table 3-1),
//! not moat's tables.

use alloc::string::String;
use alloc::vec::Vec;

use hv_core::mmio::Width;
use hv_core::vgic::VGIC_IIDR;
use hv_core::vpl011::{PCELL_ID, PERIPH_ID};

use crate::campaign::{Access, Op, Step};
use crate::check::{Expect, MmioExpect};
use crate::layout::{Device, Layout};
use crate::rng::Rng;

/// GICD_CTLR (§12.9.4).
const GICD_CTLR: u64 = 0x0000;
/// GICD_CTLR.ARE_NS: affinity routing is always on for a Non-secure guest (RAO/WI).
const GICD_CTLR_ARE_NS: u64 = 1 << 4;
/// GICD_TYPER (§12.9.38), read-only.
const GICD_TYPER: u64 = 0x0004;
/// GICD_IIDR (§12.9.24), read-only.
const GICD_IIDR: u64 = 0x0008;
/// GICD_IPRIORITYR<n> (§12.9.27): one byte per INTID, byte-accessible.
const GICD_IPRIORITYR: u64 = 0x0400;
/// GICD_IROUTER<n> (§12.9.22): 64 bits per INTID; n < 32 is reserved.
const GICD_IROUTER: u64 = 0x6000;
/// GICD_PIDR2 (§12.9.31) and GICR_PIDR2: ArchRev in bits [7:4] is 3 for GICv3.
const PIDR2: u64 = 0xffe8;
/// PIDR2.ArchRev's mask and GICv3's value.
const PIDR2_ARCHREV: (u64, u64) = (0xf0, 0x30);
/// Offsets of the distributor moat has no register at (reserved, or registers of a GIC
/// with features the guest's lacks: MBIS, extended SPIs, GICv2's ITARGETSR under
/// affinity routing), `[start, end)`, word-aligned: RAZ/WI.
const GICD_UNIMPLEMENTED: [(u64, u64); 5] = [
    (0x000c, 0x0080),
    (0x0800, 0x0c00),
    (0x0d00, 0x6000),
    (0x7fe0, 0xffe8),
    (0xffec, 0x1_0000),
];

/// GICR_CTLR (§12.11.2): EnableLPIs is RAZ/WI with no LPIs.
const GICR_CTLR: u64 = 0x0000;
/// GICR_IIDR (§12.11.16), read-only.
const GICR_IIDR: u64 = 0x0004;
/// GICR_TYPER (§12.11.35), 64-bit, read-only.
const GICR_TYPER: u64 = 0x0008;
/// GICR_WAKER (§12.11.37).
const GICR_WAKER: u64 = 0x0014;
/// GICR_PROPBASER and GICR_PENDBASER (§12.11.30, §12.11.29): LPI tables, RAZ/WI with no
/// LPIs.
const GICR_LPI_BASERS: [u64; 2] = [0x0070, 0x0078];
/// The SGI_base frame of a redistributor, 64 KiB after its RD_base frame (§12.10).
const GICR_SGI_BASE: u64 = 0x1_0000;
/// GICR_IPRIORITYR<n> (§12.11.20) in the SGI_base frame: INTIDs 0..31, byte-accessible.
const GICR_IPRIORITYR: u64 = GICR_SGI_BASE + 0x0400;
/// Offsets of vCPU 0's redistributor moat has no register at, `[start, end)`.
const GICR_UNIMPLEMENTED: [(u64, u64); 5] = [
    (0x0018, 0x0070),
    (0x0080, 0xffe8),
    (GICR_SGI_BASE, GICR_SGI_BASE + 0x0080),
    (GICR_SGI_BASE + 0x0084, GICR_SGI_BASE + 0x0100),
    (GICR_SGI_BASE + 0x0c08, GICR_SGI_BASE + 0x1_0000),
];

/// UARTFR (DDI 0183G §3.3.3): read-only.
const UARTFR: u64 = 0x018;
/// UARTFR.TXFE and TXFF: moat transmits at once, so its TX FIFO is always empty.
const UARTFR_TXFE_TXFF: (u64, u64) = (0xa0, 0x80);
/// UARTILPR (§3.3.4): the IrDA low-power divisor, 8 bits, which nothing else uses: the
/// register the cases may change and put back.
const UARTILPR: u64 = 0x020;
/// UARTICR (§3.3.13): write-only (RAZ).
const UARTICR: u64 = 0x044;
/// UARTPeriphID0 (§3.3.14) and UARTPCellID0 (§3.3.15): read-only.
const UARTPERIPHID0: u64 = 0xfe0;
const UARTPCELLID0: u64 = 0xff0;
/// Offsets of the PL011 with no register (reserved, test registers), word-aligned.
const UART_UNIMPLEMENTED: [(u64, u64); 3] = [(0x008, 0x018), (0x01c, 0x020), (0x04c, 0xfe0)];

/// The probes, each one kind of case.
const PROBES: [Probe; 15] = [
    Probe::GicdNarrowReads,
    Probe::GicdReadOnly,
    Probe::GicdCtlrOddWrites,
    Probe::GicdPriorityOddWrites,
    Probe::GicdRouterOddWrites,
    Probe::GicdUnimplemented,
    Probe::GicdPrivateRouter,
    Probe::GicrReadOnly,
    Probe::GicrWakerOddWrites,
    Probe::GicrNoLpis,
    Probe::GicrPriorityOddWrites,
    Probe::GicrUnimplemented,
    Probe::UartDoubleword,
    Probe::UartNarrow,
    Probe::UartReadOnlyAndReserved,
];

/// One kind of case (the first cases of a campaign visit them in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    GicdNarrowReads,
    GicdReadOnly,
    GicdCtlrOddWrites,
    GicdPriorityOddWrites,
    GicdRouterOddWrites,
    GicdUnimplemented,
    GicdPrivateRouter,
    GicrReadOnly,
    GicrWakerOddWrites,
    GicrNoLpis,
    GicrPriorityOddWrites,
    GicrUnimplemented,
    UartDoubleword,
    UartNarrow,
    UartReadOnlyAndReserved,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl Probe {
    fn device(self) -> Device {
        match self {
            Probe::GicdNarrowReads
            | Probe::GicdReadOnly
            | Probe::GicdCtlrOddWrites
            | Probe::GicdPriorityOddWrites
            | Probe::GicdRouterOddWrites
            | Probe::GicdUnimplemented
            | Probe::GicdPrivateRouter => Device::Gicd,
            Probe::GicrReadOnly
            | Probe::GicrWakerOddWrites
            | Probe::GicrNoLpis
            | Probe::GicrPriorityOddWrites
            | Probe::GicrUnimplemented => Device::Gicr,
            Probe::UartDoubleword | Probe::UartNarrow | Probe::UartReadOnlyAndReserved => {
                Device::Uart
            }
        }
    }
}

/// The steps of one device's case, built in order.
struct Script {
    dev: Device,
    steps: Vec<Step>,
}

impl Script {
    fn new(dev: Device) -> Self {
        Self {
            dev,
            steps: Vec::new(),
        }
    }

    fn at(mut self, offset: u64, access: Access, expect: MmioExpect) -> Self {
        self.steps.push(Step::new(
            Op::Mmio {
                dev: self.dev,
                offset,
                access,
            },
            Expect::Mmio(expect),
        ));
        self
    }

    /// A load of `w` that must give `v`.
    fn reads(self, offset: u64, w: Width, v: u64) -> Self {
        self.at(offset, Access::Read(w), MmioExpect::Reads(v))
    }

    /// A load of `w` that must give 0 (RAZ).
    fn raz(self, offset: u64, w: Width) -> Self {
        self.reads(offset, w, 0)
    }

    /// A load of `w` whose value the case keeps.
    fn keep(self, offset: u64, w: Width) -> Self {
        self.at(offset, Access::Read(w), MmioExpect::Keep)
    }

    /// A load of `w` that must give the kept value.
    fn kept(self, offset: u64, w: Width) -> Self {
        self.at(offset, Access::Read(w), MmioExpect::Kept)
    }

    /// A store of `w` that must complete (whatever it does).
    fn write(self, offset: u64, w: Width, v: u64) -> Self {
        self.at(offset, Access::Write(w, v), MmioExpect::Completes)
    }

    /// A store of `w` that must be ignored: the kept register reads the same after it.
    fn ignored(self, offset: u64, w: Width, v: u64, check_at: u64, check_w: Width) -> Self {
        self.write(offset, w, v).kept(check_at, check_w)
    }

    /// Put the kept value back with a store of `w`, and check it is back.
    fn restore(self, offset: u64, w: Width) -> Self {
        self.at(offset, Access::Restore(w), MmioExpect::Completes)
            .kept(offset, w)
    }

    /// A load pair: no syndrome, so an abort (which the guest takes and goes on from).
    fn aborts(self, offset: u64) -> Self {
        self.at(offset, Access::ReadPair, MmioExpect::Aborts)
    }
}

/// A word-aligned offset in one of `ranges`.
fn offset_in(rng: &mut Rng, ranges: &[(u64, u64)]) -> u64 {
    let (start, end) = *rng.pick(ranges);
    start + rng.below((end - start) / 4) * 4
}

/// A priority a GIC with at least 5 priority bits (the architecture's minimum for two
/// security states) keeps as written: bit 7 set, the low 3 bits clear.
fn priority(rng: &mut Rng) -> u64 {
    0x80 | rng.below(16) << 3
}

/// The case of the `mmio` family for `rng` over `layout`: a probe of a device the guest
/// has, or (with none in its device tree) a read of what must be there.
pub fn case(rng: &mut Rng, layout: &Layout) -> (String, Vec<Step>) {
    let Some(probe) = pick(rng, layout) else {
        return (
            "no emulated device in the device tree: CALLS_UID instead".into(),
            alloc::vec![Step::new(
                Op::Smc {
                    fid: mediator::abi::OPTEE_SMC_CALLS_UID,
                    args: [0; 6],
                },
                Expect::Uid
            )],
        );
    };
    let (name, s) = build(probe, rng);
    (name, s.steps)
}

/// A probe of a device the guest has.
fn pick(rng: &mut Rng, layout: &Layout) -> Option<Probe> {
    let have: Vec<Probe> = PROBES
        .iter()
        .copied()
        .filter(|p| layout.devices.get(p.device()).is_some())
        .collect();
    (!have.is_empty()).then(|| *rng.pick(&have))
}

fn build(probe: Probe, rng: &mut Rng) -> (String, Script) {
    use Width::{Byte, Double, Half, Word};
    let s = Script::new(probe.device());
    match probe {
        Probe::GicdNarrowReads => (
            "GICD_CTLR, GICD_TYPER and GICD_IIDR take words only: byte, halfword and \
             doubleword loads of them read as zero, a load pair aborts"
                .into(),
            s.reads(GICD_IIDR, Word, u64::from(VGIC_IIDR))
                .at(
                    GICD_CTLR,
                    Access::Read(Word),
                    MmioExpect::Masked {
                        mask: GICD_CTLR_ARE_NS,
                        value: GICD_CTLR_ARE_NS,
                    },
                )
                .raz(GICD_CTLR, Byte)
                .raz(GICD_CTLR, Double)
                .raz(GICD_TYPER, Half)
                .raz(GICD_TYPER + 2, Half)
                .raz(GICD_IIDR, Half)
                .raz(GICD_IIDR + 3, Byte)
                .raz(GICD_IIDR, Double)
                .aborts(GICD_CTLR)
                .reads(GICD_IIDR, Word, u64::from(VGIC_IIDR)),
        ),
        Probe::GicdReadOnly => {
            let v = rng.next_u32().into();
            (
                alloc::format!(
                    "stores of {v:#x} to read-only GICD_TYPER, GICD_IIDR and GICD_PIDR2 are \
                     ignored"
                ),
                s.keep(GICD_TYPER, Word)
                    .ignored(GICD_TYPER, Word, v, GICD_TYPER, Word)
                    .write(GICD_IIDR, Word, v)
                    .reads(GICD_IIDR, Word, u64::from(VGIC_IIDR))
                    .write(PIDR2, Word, v)
                    .at(
                        PIDR2,
                        Access::Read(Word),
                        MmioExpect::Masked {
                            mask: PIDR2_ARCHREV.0,
                            value: PIDR2_ARCHREV.1,
                        },
                    )
                    .raz(PIDR2, Byte),
            )
        }
        Probe::GicdCtlrOddWrites => (
            "byte, halfword and doubleword stores to GICD_CTLR (words only) are ignored: \
             EnableGrp1A stays as it was"
                .into(),
            s.keep(GICD_CTLR, Word)
                .ignored(GICD_CTLR, Byte, 0x2, GICD_CTLR, Word)
                .ignored(GICD_CTLR, Byte, 0x0, GICD_CTLR, Word)
                .ignored(GICD_CTLR, Half, 0x2, GICD_CTLR, Word)
                .ignored(GICD_CTLR + 2, Half, 0x0, GICD_CTLR, Word)
                .ignored(GICD_CTLR, Double, 0x2, GICD_CTLR, Word)
                .ignored(GICD_CTLR, Double, 0x0, GICD_CTLR, Word),
        ),
        Probe::GicdPriorityOddWrites => {
            // An SPI every guest of moat has (its vGIC has at least 32).
            let intid = 32 + rng.below(32);
            let at = GICD_IPRIORITYR + intid;
            let (p, q) = (priority(rng), priority(rng) ^ 0x40);
            (
                alloc::format!(
                    "GICD_IPRIORITYR takes bytes and words: halfword and doubleword stores to \
                     INTID {intid}'s priority are ignored"
                ),
                s.keep(at, Byte)
                    .write(at, Byte, p)
                    .reads(at, Byte, p)
                    .write(at & !1, Half, q << 8 | q)
                    .reads(at, Byte, p)
                    .write(at & !7, Double, q * 0x0101_0101_0101_0101)
                    .reads(at, Byte, p)
                    .raz(at & !1, Half)
                    .raz(at & !7, Double)
                    .restore(at, Byte),
            )
        }
        Probe::GicdRouterOddWrites => {
            let intid = 32 + rng.below(32);
            let at = GICD_IROUTER + 8 * intid;
            (
                alloc::format!(
                    "GICD_IROUTER takes words and doublewords: byte and halfword stores to \
                     INTID {intid}'s route are ignored, and such loads read as zero"
                ),
                s.keep(at, Double)
                    .ignored(at, Byte, 0xff, at, Double)
                    .ignored(at + 1, Byte, 0x01, at, Double)
                    .ignored(at, Half, 0x0101, at, Double)
                    .ignored(at + 4, Half, 0x00ff, at, Double)
                    .raz(at, Byte)
                    .raz(at + 4, Half),
            )
        }
        Probe::GicdUnimplemented => {
            let at = offset_in(rng, &GICD_UNIMPLEMENTED);
            (
                alloc::format!(
                    "GICD + {at:#x}, where moat has no register: reads as zero, ignores a store"
                ),
                s.raz(at, Word).write(at, Word, 0xffff_ffff).raz(at, Word),
            )
        }
        Probe::GicdPrivateRouter => {
            let intid = rng.below(32);
            let at = GICD_IROUTER + 8 * intid;
            (
                alloc::format!(
                    "GICD_IROUTER{intid} is reserved (a private INTID routes by its \
                     redistributor): reads as zero, ignores a store"
                ),
                s.raz(at, Double)
                    .write(at, Double, 0x8000_0001)
                    .raz(at, Double)
                    .raz(at, Word),
            )
        }
        Probe::GicrReadOnly => {
            let v = rng.next_u64();
            (
                alloc::format!(
                    "stores of {v:#x} to read-only GICR_TYPER and GICR_IIDR are ignored; \
                     halfword and byte loads of GICR_IIDR and GICR_PIDR2 read as zero"
                ),
                s.keep(GICR_TYPER, Double)
                    .ignored(GICR_TYPER, Double, v, GICR_TYPER, Double)
                    .ignored(GICR_TYPER, Word, v, GICR_TYPER, Double)
                    .ignored(GICR_TYPER + 4, Word, v, GICR_TYPER, Double)
                    .raz(GICR_IIDR, Half)
                    .write(GICR_IIDR, Word, v)
                    .reads(GICR_IIDR, Word, u64::from(VGIC_IIDR))
                    .raz(PIDR2, Byte)
                    .at(
                        PIDR2,
                        Access::Read(Word),
                        MmioExpect::Masked {
                            mask: PIDR2_ARCHREV.0,
                            value: PIDR2_ARCHREV.1,
                        },
                    ),
            )
        }
        Probe::GicrWakerOddWrites => (
            "byte, halfword and doubleword stores to GICR_WAKER (words only) are ignored: \
             the redistributor stays as awake or asleep as it was"
                .into(),
            s.keep(GICR_WAKER, Word)
                .ignored(GICR_WAKER, Byte, 0x0, GICR_WAKER, Word)
                .ignored(GICR_WAKER, Byte, 0x2, GICR_WAKER, Word)
                .ignored(GICR_WAKER, Half, 0x0, GICR_WAKER, Word)
                .ignored(GICR_WAKER, Half, 0x2, GICR_WAKER, Word)
                .ignored(GICR_WAKER & !7, Double, 0, GICR_WAKER, Word)
                .ignored(GICR_WAKER & !7, Double, 0x2 << 32, GICR_WAKER, Word)
                .raz(GICR_WAKER, Byte),
        ),
        Probe::GicrNoLpis => {
            let baser = *rng.pick(&GICR_LPI_BASERS);
            (
                alloc::format!(
                    "with no LPIs, GICR_CTLR.EnableLPIs and GICR + {baser:#x} (an LPI table \
                     base) read as zero and ignore stores"
                ),
                s.write(GICR_CTLR, Word, 1)
                    .raz(GICR_CTLR, Word)
                    .write(baser, Word, 0xffff_f000)
                    .raz(baser, Word)
                    .write(baser, Double, 0xffff_f000)
                    .raz(baser, Double),
            )
        }
        Probe::GicrPriorityOddWrites => {
            let intid = rng.below(32);
            let at = GICR_IPRIORITYR + intid;
            let (p, q) = (priority(rng), priority(rng) ^ 0x40);
            (
                alloc::format!(
                    "GICR_IPRIORITYR takes bytes and words: halfword and doubleword stores to \
                     private INTID {intid}'s priority are ignored"
                ),
                s.keep(at, Byte)
                    .write(at, Byte, p)
                    .reads(at, Byte, p)
                    .write(at & !1, Half, q << 8 | q)
                    .reads(at, Byte, p)
                    .write(at & !7, Double, q * 0x0101_0101_0101_0101)
                    .reads(at, Byte, p)
                    .raz(at & !1, Half)
                    .restore(at, Byte),
            )
        }
        Probe::GicrUnimplemented => {
            let at = offset_in(rng, &GICR_UNIMPLEMENTED);
            (
                alloc::format!(
                    "GICR + {at:#x}, where moat has no register: reads as zero, ignores a store"
                ),
                s.raz(at, Word).write(at, Word, 0xffff_ffff).raz(at, Word),
            )
        }
        Probe::UartDoubleword => {
            let (p, q) = (rng.range(1, 0x100), rng.range(1, 0x100));
            (
                alloc::format!(
                    "the PL011 takes no doublewords: such loads of UARTFR and UARTPeriphID0 \
                     read as zero, a store of {q:#x} to UARTILPR is ignored, a load pair aborts"
                ),
                s.raz(UARTFR, Double)
                    .at(
                        UARTFR,
                        Access::Read(Word),
                        MmioExpect::Masked {
                            mask: UARTFR_TXFE_TXFF.0,
                            value: UARTFR_TXFE_TXFF.1,
                        },
                    )
                    .raz(UARTPERIPHID0, Double)
                    .reads(UARTPERIPHID0, Word, u64::from(PERIPH_ID[0]))
                    .keep(UARTILPR, Word)
                    .write(UARTILPR, Word, p)
                    .reads(UARTILPR, Word, p)
                    .write(UARTILPR, Double, q)
                    .reads(UARTILPR, Word, p)
                    .aborts(UARTPERIPHID0)
                    .restore(UARTILPR, Word),
            )
        }
        Probe::UartNarrow => {
            let (p, q) = (rng.range(1, 0x100), rng.range(1, 0x100));
            (
                alloc::format!(
                    "narrow PL011 accesses: byte and halfword loads give those bytes of the \
                     register, a byte store of {q:#x} to UARTILPR's upper bytes is ignored"
                ),
                s.reads(UARTPERIPHID0, Byte, u64::from(PERIPH_ID[0]))
                    .reads(UARTPERIPHID0, Half, u64::from(PERIPH_ID[0]))
                    .raz(UARTPERIPHID0 + 1, Byte)
                    .reads(UARTPCELLID0 + 12, Byte, u64::from(PCELL_ID[3]))
                    .raz(UARTPCELLID0 + 14, Half)
                    .keep(UARTILPR, Word)
                    .write(UARTILPR, Word, p)
                    .write(UARTILPR + 1, Byte, q)
                    .reads(UARTILPR, Word, p)
                    .write(UARTILPR + 2, Half, q)
                    .reads(UARTILPR, Word, p)
                    .write(UARTILPR, Byte, q)
                    .reads(UARTILPR, Word, q)
                    .restore(UARTILPR, Word),
            )
        }
        Probe::UartReadOnlyAndReserved => {
            let at = offset_in(rng, &UART_UNIMPLEMENTED);
            (
                alloc::format!(
                    "read-only UARTFR and UARTPeriphID0 ignore stores, write-only UARTICR reads \
                     as zero, and PL011 + {at:#x} (no register) is RAZ/WI"
                ),
                s.write(UARTPERIPHID0, Word, 0xff)
                    .reads(UARTPERIPHID0, Word, u64::from(PERIPH_ID[0]))
                    .write(UARTFR, Word, 0xff)
                    .at(
                        UARTFR,
                        Access::Read(Word),
                        MmioExpect::Masked {
                            mask: UARTFR_TXFE_TXFF.0,
                            value: UARTFR_TXFE_TXFF.1,
                        },
                    )
                    .raz(UARTICR, Word)
                    .raz(at, Word)
                    .write(at, Word, 0xffff_ffff)
                    .raz(at, Word),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::dom0_layout;
    use crate::layout::{Devices, Span};

    fn layout() -> Layout {
        dom0_layout().with_devices(Devices {
            gicd: Some(Span::at(0x0800_0000, 0x1_0000)),
            gicr: Some(Span::at(0x080a_0000, 0x4_0000)),
            uart: Some(Span::at(0x0900_0000, 0x1000)),
        })
    }

    #[test]
    fn every_probe_is_drawn_and_fits_its_frame() {
        let l = layout();
        let mut rng = Rng::new(3);
        let mut drawn: Vec<Probe> = (0..1000).filter_map(|_| pick(&mut rng, &l)).collect();
        drawn.dedup();
        for p in PROBES {
            assert!(drawn.contains(&p), "{p:?} never drawn");
        }
        for _ in 0..3000 {
            let (name, steps) = case(&mut rng, &l);
            assert!(!steps.is_empty());
            // A value is kept before it is compared with or restored.
            let first_kept = steps.iter().position(|s| {
                matches!(s.expect, Expect::Mmio(MmioExpect::Kept))
                    || matches!(
                        s.op,
                        Op::Mmio {
                            access: Access::Restore(_),
                            ..
                        }
                    )
            });
            let first_keep = steps
                .iter()
                .position(|s| matches!(s.expect, Expect::Mmio(MmioExpect::Keep)));
            if let Some(k) = first_kept {
                assert!(first_keep.is_some_and(|f| f < k), "{name}");
            }
            for s in &steps {
                let Op::Mmio {
                    dev,
                    offset,
                    access,
                } = s.op
                else {
                    panic!("{s:?}")
                };
                let frame = l.devices.get(dev).unwrap();
                let (pa, len) = (frame.start + offset, access.bytes());
                assert!(frame.holds(pa, len) && pa % len == 0, "{name}: {s:?}");
                // Only UARTILPR among the PL011's registers is ever stored to with a
                // width it takes: the console's own registers are left alone.
                if let (Device::Uart, Access::Write(w, _)) = (dev, access) {
                    let reg = offset & !3;
                    assert!(
                        reg == UARTILPR
                            || w == Width::Double
                            || [UARTFR, UARTPERIPHID0].contains(&reg)
                            || UART_UNIMPLEMENTED
                                .iter()
                                .any(|&(a, b)| (a..b).contains(&reg)),
                        "{name}: {s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_guest_with_no_device_calls_uid_instead() {
        let (name, steps) = case(&mut Rng::new(1), &dom0_layout());
        assert!(name.starts_with("no emulated device"));
        assert_eq!(steps.len(), 1);
    }
}
