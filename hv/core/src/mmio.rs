// SPDX-License-Identifier: MIT OR Apache-2.0
//! Emulated MMIO: turn a stage-2 data abort into "the guest read/wrote N bytes at IPA X
//! from/into register R", and put a read result back into the register.
//!
//! ```text
//!   Exit::DataAbort ─┐
//!   HPFAR_EL2 ───────┼─▶ mmio::decode ─▶ MmioAccess { ipa, width, dir, rt, .. }
//!   FAR_EL2 ─────────┘                         │
//!                          device model (vgic, vpl011) reads/writes
//!                                              │
//!   write: MmioAccess::write_data(Xt) ◀────────┤
//!   read:  MmioAccess::complete_read(data) ────▶ new Xt value (or nothing for XZR)
//! ```
//!
//! The IPA comes from two registers: HPFAR_EL2.FIPA gives the faulting IPA's page number
//! (bits [51:12] or [47:12]) and FAR_EL2 the offset inside the page (bits [11:0]), because
//! FAR_EL2 holds the guest *virtual* address. Arm ARM D24.2 "HPFAR_EL2" and D24.2
//! "FAR_EL2".
//!
//! Only accesses with a valid instruction syndrome (ISV == 1) can be emulated: single
//! general-purpose-register loads and stores without writeback. Anything else gets
//! [`Error::MmioNoSyndrome`] and the hypervisor injects an abort into the guest, which is
//! what Xen and KVM do too.

use tock_registers::{register_bitfields, LocalRegisterCopy};

use crate::addr::{Ipa, PAGE_SHIFT};
use crate::error::Error;
use crate::esr::{DataAbort, FaultStatus};

register_bitfields![u64,
    /// HPFAR_EL2, Arm ARM D24.2: faulting IPA for stage-2 aborts.
    pub HPFAR_EL2 [
        /// NS [63]: the faulting IPA is in the Non-secure IPA space (FEAT_SEL2).
        NS OFFSET(63) NUMBITS(1) [],
        /// FIPA [43:4]: faulting IPA bits [51:12] (bits [47:12] without FEAT_LPA; the upper
        /// bits read as zero then).
        FIPA OFFSET(4) NUMBITS(40) []
    ]
];

/// A captured HPFAR_EL2 value.
pub type HpfarEl2 = LocalRegisterCopy<u64, HPFAR_EL2::Register>;

/// Width of an emulated access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 1 byte (`ldrb`/`strb`).
    Byte,
    /// 2 bytes (`ldrh`/`strh`).
    Half,
    /// 4 bytes (`ldr wN`/`str wN`).
    Word,
    /// 8 bytes (`ldr xN`/`str xN`).
    Double,
}

/// Direction of an emulated access, from the guest's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The guest loads from the device.
    Read,
    /// The guest stores to the device.
    Write,
}

/// The guest register an access transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// X0..X30 (or W0..W30), the index is 0..=30.
    X(u8),
    /// Register number 31 in a load/store is the zero register: stores write 0, loads
    /// discard the value.
    Zr,
}

/// A fully decoded emulated MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The faulting IPA (page from HPFAR_EL2, offset from FAR_EL2).
    pub ipa: Ipa,
    /// Access width.
    pub width: Width,
    /// Load or store.
    pub dir: Direction,
    /// Register transferred.
    pub reg: Reg,
    /// Loads: sign-extend the value (SSE).
    pub sign_extend: bool,
    /// The register is a 64-bit Xn (SF); otherwise a 32-bit Wn.
    pub reg64: bool,
    /// Acquire/release semantics (AR). Informational: the trap already serialises.
    pub acquire_release: bool,
}

impl Width {
    /// Width in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Half => 2,
            Self::Word => 4,
            Self::Double => 8,
        }
    }
    /// Mask of the low `bytes()*8` bits.
    pub const fn mask(self) -> u64 {
        match self {
            Self::Double => u64::MAX,
            w => (1u64 << (w.bytes() * 8)) - 1,
        }
    }
    const fn from_bytes(bytes: u8) -> Self {
        match bytes {
            1 => Self::Byte,
            2 => Self::Half,
            4 => Self::Word,
            _ => Self::Double,
        }
    }
}

impl MmioAccess {
    /// Is the IPA naturally aligned for the access width? Device models may refuse
    /// unaligned accesses.
    pub const fn is_aligned(&self) -> bool {
        self.ipa.is_aligned(self.width.bytes())
    }

    /// For a store: the value to hand the device, given the current value of the
    /// register named by `self.reg` (`rt_value` is ignored for [`Reg::Zr`]). Only the low
    /// `width` bytes are kept.
    pub const fn write_data(&self, rt_value: u64) -> u64 {
        match self.reg {
            Reg::Zr => 0,
            Reg::X(_) => rt_value & self.width.mask(),
        }
    }

    /// For a load: the new value of the destination register given the `data` the device
    /// returned, or `None` when the destination is XZR (nothing to write back).
    ///
    /// Bits of `data` above the access width are ignored. With SSE the value is
    /// sign-extended from the access width; a 32-bit destination (SF == 0) then has its
    /// upper 32 bits cleared, as any write to a Wn register does.
    pub const fn complete_read(&self, data: u64) -> Option<(u8, u64)> {
        let index = match self.reg {
            Reg::Zr => return None,
            Reg::X(i) => i,
        };
        let data = data & self.width.mask();
        let mut value = if self.sign_extend {
            let shift = 64 - self.width.bytes() * 8;
            (((data << shift) as i64) >> shift) as u64
        } else {
            data
        };
        if !self.reg64 {
            value &= 0xFFFF_FFFF;
        }
        Some((index, value))
    }
}

/// Decode an emulated MMIO access from a stage-2 data abort and the HPFAR_EL2 / FAR_EL2
/// values captured with it.
///
/// Errors: [`Error::MmioNoSyndrome`] (ISV == 0), [`Error::MmioFarNotValid`],
/// [`Error::MmioStage1Walk`], [`Error::MmioCacheMaintenance`],
/// [`Error::MmioHpfarNotValid`].
pub fn decode(abort: &DataAbort, hpfar: HpfarEl2, far: u64) -> Result<MmioAccess, Error> {
    // Order matters: S1PTW and CM aborts may also lack ISV, and their specific error tells
    // the log more than "no syndrome".
    if abort.s1ptw {
        return Err(Error::MmioStage1Walk);
    }
    if abort.cache_maintenance {
        return Err(Error::MmioCacheMaintenance);
    }
    // Why: HPFAR_EL2 holds the IPA only for stage-2 translation, access-flag and
    // address-size faults (and S1PTW faults, refused above). Emulated regions are left
    // unmapped, so their accesses are translation faults.
    if !matches!(
        abort.fault,
        FaultStatus::Translation { .. } | FaultStatus::AccessFlag { .. }
    ) {
        return Err(Error::MmioHpfarNotValid { fault: abort.fault });
    }
    let Some(syn) = abort.syndrome else {
        return Err(Error::MmioNoSyndrome);
    };
    if abort.far_not_valid {
        return Err(Error::MmioFarNotValid);
    }
    let page = hpfar.read(HPFAR_EL2::FIPA) << PAGE_SHIFT;
    let ipa = Ipa(page | Ipa(far).page_offset());
    Ok(MmioAccess {
        ipa,
        width: Width::from_bytes(syn.size),
        dir: if abort.write {
            Direction::Write
        } else {
            Direction::Read
        },
        reg: if syn.srt >= 31 {
            Reg::Zr
        } else {
            Reg::X(syn.srt)
        },
        sign_extend: syn.sign_extend,
        reg64: syn.reg64,
        acquire_release: syn.acquire_release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::{decode_raw, Exit};

    fn abort(esr: u64) -> DataAbort {
        match decode_raw(esr) {
            Exit::DataAbort(da) => da,
            other => panic!("not a data abort: {other:?}"),
        }
    }

    /// HPFAR_EL2 for a page: FIPA = IPA >> 12, stored at bit 4.
    fn hpfar(ipa: u64) -> HpfarEl2 {
        HpfarEl2::new((ipa >> 12) << 4)
    }

    /// A data abort ESR with ISV set: EC 0x24, IL, DFSC = translation fault level 3.
    fn dabt(sas: u64, sse: bool, srt: u64, sf: bool, write: bool) -> u64 {
        (0x24 << 26)
            | (1 << 25)
            | (1 << 24)
            | (sas << 22)
            | ((sse as u64) << 21)
            | (srt << 16)
            | ((sf as u64) << 15)
            | ((write as u64) << 6)
            | 0b00_0111
    }

    #[test]
    fn str_w1_to_pl011_dr() {
        // `str w1, [x0]` with x0 = VA 0xffff_0000_0900_0000 mapped to IPA 0x0900_0000
        // (PL011 UARTDR): the IPA comes from HPFAR + FAR[11:0], not from the VA.
        let a = decode(
            &abort(0x9381_0047),
            hpfar(0x0900_0000),
            0xffff_0000_0900_0000,
        )
        .unwrap();
        assert_eq!(a.ipa, Ipa(0x0900_0000));
        assert_eq!(a.width, Width::Word);
        assert_eq!(a.dir, Direction::Write);
        assert_eq!(a.reg, Reg::X(1));
        assert!(a.is_aligned());
        assert_eq!(a.write_data(0xdead_beef_1234_5678), 0x1234_5678);
    }

    #[test]
    fn offset_comes_from_far_and_page_from_hpfar() {
        // GICD_ISENABLER1 at 0x0800_0104, guest VA with a different page number.
        let a = decode(
            &abort(dabt(2, false, 4, false, false)),
            hpfar(0x0800_0000),
            0xffff_8000_1234_5104,
        )
        .unwrap();
        assert_eq!(a.ipa, Ipa(0x0800_0104));
        // High IPA (44-bit): FIPA upper bits survive.
        let a = decode(
            &abort(dabt(3, false, 0, true, false)),
            hpfar(0xABC_DEF0_1000),
            0x18,
        )
        .unwrap();
        assert_eq!(a.ipa, Ipa(0xABC_DEF0_1018));
        // HPFAR.NS and RES0 bits do not leak into the IPA.
        let a = decode(
            &abort(dabt(3, false, 0, true, false)),
            HpfarEl2::new((1 << 63) | (0x9000 << 4) | 0xf),
            0,
        )
        .unwrap();
        assert_eq!(a.ipa, Ipa(0x900_0000));
    }

    #[test]
    fn widths_and_unaligned() {
        for (sas, w, bytes) in [
            (0, Width::Byte, 1),
            (1, Width::Half, 2),
            (2, Width::Word, 4),
            (3, Width::Double, 8),
        ] {
            let a = decode(
                &abort(dabt(sas, false, 0, true, true)),
                hpfar(0x1000),
                0x1002,
            )
            .unwrap();
            assert_eq!(a.width, w);
            assert_eq!(a.width.bytes(), bytes);
            assert_eq!(a.is_aligned(), bytes <= 2);
        }
    }

    #[test]
    fn store_of_xzr_writes_zero() {
        // `str wzr, [x0]`: SRT = 31.
        let a = decode(&abort(dabt(2, false, 31, false, true)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.reg, Reg::Zr);
        assert_eq!(a.write_data(0xffff_ffff), 0);
    }

    #[test]
    fn load_into_xzr_is_discarded() {
        let a = decode(&abort(dabt(3, false, 31, true, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.complete_read(0x1234), None);
    }

    #[test]
    fn zero_extension_and_wn_clears_top() {
        // `ldrb w2, [x0]`: zero-extend, upper bits of device data ignored.
        let a = decode(&abort(dabt(0, false, 2, false, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.complete_read(0xffff_ff80), Some((2, 0x80)));
        // `ldr w3, [x0]`: 32-bit destination, top half zero whatever the device says.
        let a = decode(&abort(dabt(2, false, 3, false, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(
            a.complete_read(0xaaaa_bbbb_cccc_dddd),
            Some((3, 0xcccc_dddd))
        );
        // `ldr x4, [x0]`.
        let a = decode(&abort(dabt(3, false, 4, true, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.complete_read(u64::MAX), Some((4, u64::MAX)));
    }

    #[test]
    fn sign_extension() {
        // `ldrsb x5, [x0]`: SSE, SF=1.
        let a = decode(&abort(dabt(0, true, 5, true, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.complete_read(0x80), Some((5, 0xffff_ffff_ffff_ff80)));
        assert_eq!(a.complete_read(0x7f), Some((5, 0x7f)));
        // `ldrsh w6, [x0]`: SSE, SF=0: sign-extend to 32 bits, top 32 clear.
        let a = decode(&abort(dabt(1, true, 6, false, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(a.complete_read(0x8001), Some((6, 0xffff_8001)));
        // `ldrsw x7, [x0]`.
        let a = decode(&abort(dabt(2, true, 7, true, false)), hpfar(0x1000), 0).unwrap();
        assert_eq!(
            a.complete_read(0x8000_0000),
            Some((7, 0xffff_ffff_8000_0000))
        );
    }

    #[test]
    fn errors() {
        // ISV == 0: `stp` or writeback form.
        assert_eq!(
            decode(&abort(0x9200_0047), hpfar(0x1000), 0),
            Err(Error::MmioNoSyndrome)
        );
        // FnV.
        assert_eq!(
            decode(
                &abort(dabt(2, false, 1, false, true) | (1 << 10)),
                hpfar(0x1000),
                0
            ),
            Err(Error::MmioFarNotValid)
        );
        // S1PTW.
        assert_eq!(
            decode(
                &abort(dabt(3, false, 1, true, false) | (1 << 7)),
                hpfar(0x1000),
                0
            ),
            Err(Error::MmioStage1Walk)
        );
        // CM (e.g. `dc ivac` on the device page).
        assert_eq!(
            decode(&abort(0x9200_0147), hpfar(0x1000), 0),
            Err(Error::MmioCacheMaintenance)
        );
        // Permission fault (level 3): HPFAR is UNKNOWN, so no IPA.
        assert_eq!(
            decode(
                &abort(dabt(2, false, 1, false, true) ^ 0b00_1000),
                hpfar(0x1000),
                0
            ),
            Err(Error::MmioHpfarNotValid {
                fault: FaultStatus::Permission { level: 3 }
            })
        );
        // Synchronous external abort.
        assert_eq!(
            decode(
                &abort((dabt(2, false, 1, false, true) & !0x3f) | 0b01_0000),
                hpfar(0x1000),
                0
            ),
            Err(Error::MmioHpfarNotValid {
                fault: FaultStatus::SyncExternal
            })
        );
        // Access flag fault is fine.
        assert!(decode(
            &abort(dabt(2, false, 1, false, true) ^ 0b00_1100),
            hpfar(0x1000),
            0
        )
        .is_ok());
    }
}
