// SPDX-License-Identifier: MIT OR Apache-2.0
//! ESR_EL2 decoding: why did the guest trap to EL2?
//!
//! The effect crate reads ESR_EL2 once in its synchronous-exception handler and hands the
//! value here; [`decode`] turns it into an [`Exit`] that the dispatcher matches on. Every
//! 64-bit value decodes to *something*: exception classes moat does not handle come back as
//! [`Exit::Unknown`], never as a panic, because a guest can provoke any of them.
//!
//! ```text
//!   guest (EL1/EL0) ──trap──▶ hv::arch vector ──ESR_EL2 value──▶ esr::decode ──Exit──▶ dispatch
//!                                                                     │
//!                      Exit::DataAbort ──▶ mmio::decode (with HPFAR_EL2, FAR_EL2)
//!                      Exit::Hvc64/Smc64 ──▶ smccc::route ──▶ psci::decide / arch answers
//! ```
//!
//! Layouts are from the Arm ARM (DDI 0487), section D24.2 "ESR_EL2, Exception Syndrome
//! Register (EL2)" and the ISS encodings listed there per exception class.
//!
//! Note for the caller: a trapped `SMC` (HCR_EL2.TSC) reports the SMC instruction itself as
//! the preferred return address, so the caller must step ELR_EL2 over it
//! ([`instruction_len`]); a trapped `HVC` already returns past the instruction.

use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields![u64,
    /// ESR_EL2, Arm ARM D24.2: the fields common to every exception class.
    pub ESR_EL2 [
        /// ISS2 [55:32]: extra syndrome for some classes (FEAT_LS64, FEAT_GCS...). Unused.
        ISS2 OFFSET(32) NUMBITS(24) [],
        /// EC [31:26]: exception class, what kind of event trapped.
        EC OFFSET(26) NUMBITS(6) [
            /// 0x00: unknown reason.
            Unknown = 0x00,
            /// 0x01: trapped WFI/WFE/WFIT/WFET (HCR_EL2.TWI/TWE).
            Wfx = 0x01,
            /// 0x12: HVC executed in AArch32 state.
            Hvc32 = 0x12,
            /// 0x13: SMC executed in AArch32 state, trapped by HCR_EL2.TSC.
            Smc32 = 0x13,
            /// 0x16: HVC executed in AArch64 state.
            Hvc64 = 0x16,
            /// 0x17: SMC executed in AArch64 state, trapped by HCR_EL2.TSC.
            Smc64 = 0x17,
            /// 0x18: trapped MSR, MRS or System instruction in AArch64 state.
            SysReg = 0x18,
            /// 0x20: instruction abort from a lower exception level.
            InstrAbortLower = 0x20,
            /// 0x24: data abort from a lower exception level.
            DataAbortLower = 0x24
        ],
        /// IL [25]: instruction length, 1 = 32-bit instruction, 0 = 16-bit T32.
        IL OFFSET(25) NUMBITS(1) [
            Bits16 = 0,
            Bits32 = 1
        ],
        /// ISS [24:0]: instruction specific syndrome, layout depends on EC.
        ISS OFFSET(0) NUMBITS(25) []
    ],

    /// ISS for EC 0x01 (trapped WF* instruction), Arm ARM D24.2 "ISS encoding for an
    /// exception from a WF* instruction".
    pub ISS_WFX [
        /// TI [1:0]: which instruction trapped.
        TI OFFSET(0) NUMBITS(2) [
            Wfi = 0b00,
            Wfe = 0b01,
            Wfit = 0b10,
            Wfet = 0b11
        ]
    ],

    /// ISS for EC 0x12/0x16/0x17 (HVC and AArch64 SMC), Arm ARM D24.2 "ISS encoding for
    /// an exception from an HVC or SVC instruction" / "...from SMC instruction".
    pub ISS_CALL [
        /// imm16 [15:0]: the immediate of the HVC/SMC instruction.
        IMM16 OFFSET(0) NUMBITS(16) []
    ],

    /// ISS for EC 0x18, Arm ARM D24.2 "ISS encoding for an exception from MSR, MRS, or
    /// System instruction execution in AArch64 state".
    pub ISS_SYS [
        /// Op0 [21:20].
        OP0 OFFSET(20) NUMBITS(2) [],
        /// Op2 [19:17].
        OP2 OFFSET(17) NUMBITS(3) [],
        /// Op1 [16:14].
        OP1 OFFSET(14) NUMBITS(3) [],
        /// CRn [13:10].
        CRN OFFSET(10) NUMBITS(4) [],
        /// Rt [9:5]: the general-purpose register transferred.
        RT OFFSET(5) NUMBITS(5) [],
        /// CRm [4:1].
        CRM OFFSET(1) NUMBITS(4) [],
        /// Direction [0]: 0 = write (MSR), 1 = read (MRS).
        DIRECTION OFFSET(0) NUMBITS(1) [
            Write = 0,
            Read = 1
        ]
    ],

    /// ISS for EC 0x20 (instruction abort), Arm ARM D24.2 "ISS encoding for an exception
    /// from an Instruction Abort".
    pub ISS_IABT [
        /// FnV [10]: FAR not valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// EA [9]: external abort type.
        EA OFFSET(9) NUMBITS(1) [],
        /// S1PTW [7]: fault on the stage-2 translation of a stage-1 table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// IFSC [5:0]: instruction fault status code.
        IFSC OFFSET(0) NUMBITS(6) []
    ],

    /// ISS for EC 0x24 (data abort), Arm ARM D24.2 "ISS encoding for an exception from
    /// a Data Abort".
    pub ISS_DABT [
        /// ISV [24]: bits [23:14] hold a valid instruction syndrome.
        ISV OFFSET(24) NUMBITS(1) [],
        /// SAS [23:22]: syndrome access size.
        SAS OFFSET(22) NUMBITS(2) [
            Byte = 0b00,
            Halfword = 0b01,
            Word = 0b10,
            Doubleword = 0b11
        ],
        /// SSE [21]: syndrome sign extend, the load sign-extends.
        SSE OFFSET(21) NUMBITS(1) [],
        /// SRT [20:16]: syndrome register transfer, the Xt/Wt register number.
        SRT OFFSET(16) NUMBITS(5) [],
        /// SF [15]: the register is 64-bit (Xt) rather than 32-bit (Wt).
        SF OFFSET(15) NUMBITS(1) [],
        /// AR [14]: acquire/release semantics.
        AR OFFSET(14) NUMBITS(1) [],
        /// FnV [10]: FAR not valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// EA [9]: external abort type.
        EA OFFSET(9) NUMBITS(1) [],
        /// CM [8]: the fault came from a cache maintenance or address translation
        /// instruction.
        CM OFFSET(8) NUMBITS(1) [],
        /// S1PTW [7]: fault on the stage-2 translation of a stage-1 table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// WnR [6]: 1 = write, 0 = read.
        WNR OFFSET(6) NUMBITS(1) [],
        /// DFSC [5:0]: data fault status code.
        DFSC OFFSET(0) NUMBITS(6) []
    ]
];

/// A captured ESR_EL2 value.
pub type EsrEl2 = LocalRegisterCopy<u64, ESR_EL2::Register>;

/// Which WF* instruction trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wfx {
    /// WFI: wait for interrupt.
    Wfi,
    /// WFE: wait for event.
    Wfe,
    /// WFIT: WFI with timeout (FEAT_WFxT).
    Wfit,
    /// WFET: WFE with timeout (FEAT_WFxT).
    Wfet,
}

/// A system register or system instruction, identified by its `(op0, op1, CRn, CRm, op2)`
/// encoding.
///
/// The packing is the one the A64 `MRS`/`MSR` instruction uses in its bits [20:5]:
/// `op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2`. It is an identity, not an index:
/// compare it against the named constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysReg(u16);

/// Whether a trapped system-register instruction reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysRegAccess {
    /// `MRS Xt, <reg>`: the guest reads, the hypervisor must put the value in Xt.
    Read,
    /// `MSR <reg>, Xt` or a system instruction: the guest writes Xt.
    Write,
}

/// A decoded fault status code (DFSC/IFSC), Arm ARM D24.2 "DFSC" table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Address size fault at `level` (0..=3).
    AddressSize {
        /// Lookup level.
        level: u8,
    },
    /// Translation fault at `level` (0..=3): nothing mapped. The usual MMIO trap.
    Translation {
        /// Lookup level.
        level: u8,
    },
    /// Access flag fault at `level` (1..=3, or 0 with FEAT_LPA2).
    AccessFlag {
        /// Lookup level.
        level: u8,
    },
    /// Permission fault at `level` (1..=3, or 0 with FEAT_LPA2).
    Permission {
        /// Lookup level.
        level: u8,
    },
    /// Synchronous external abort, not on a table walk.
    SyncExternal,
    /// Synchronous external abort on a table walk at `level` (0..=3).
    SyncExternalOnWalk {
        /// Lookup level.
        level: u8,
    },
    /// Alignment fault.
    Alignment,
    /// TLB conflict abort.
    TlbConflict,
    /// Any other code (parity/ECC errors, lockdown, level -1 faults...), kept raw.
    Other(u8),
}

/// Instruction syndrome of a data abort, present only when ISV == 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// Access size in bytes: 1, 2, 4 or 8 (from SAS).
    pub size: u8,
    /// SSE: the load sign-extends the value.
    pub sign_extend: bool,
    /// SRT: register number 0..=31 (31 means XZR/WZR).
    pub srt: u8,
    /// SF: the register is a 64-bit Xt.
    pub reg64: bool,
    /// AR: acquire/release semantics.
    pub acquire_release: bool,
}

/// A data abort from a lower exception level (EC 0x24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The instruction syndrome; `None` when ISV == 0.
    pub syndrome: Option<AccessSyndrome>,
    /// FnV: FAR_EL2 does not hold the faulting address.
    pub far_not_valid: bool,
    /// EA: external abort type (implementation defined).
    pub external: bool,
    /// CM: caused by a cache maintenance or address translation instruction.
    pub cache_maintenance: bool,
    /// S1PTW: the fault was on the stage-2 translation of a stage-1 walk.
    pub s1ptw: bool,
    /// WnR: the access was a write.
    pub write: bool,
    /// DFSC decoded.
    pub fault: FaultStatus,
}

/// An instruction abort from a lower exception level (EC 0x20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrAbort {
    /// FnV: FAR_EL2 does not hold the faulting address.
    pub far_not_valid: bool,
    /// EA: external abort type.
    pub external: bool,
    /// S1PTW: the fault was on the stage-2 translation of a stage-1 walk.
    pub s1ptw: bool,
    /// IFSC decoded.
    pub fault: FaultStatus,
}

/// Why the guest trapped, decoded from ESR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// EC 0x01: a trapped WF* instruction.
    Wfx(Wfx),
    /// EC 0x12: HVC from AArch32 with its immediate.
    Hvc32 {
        /// The HVC immediate.
        imm16: u16,
    },
    /// EC 0x13: SMC from AArch32 (the ISS carries no immediate).
    Smc32,
    /// EC 0x16: HVC from AArch64 with its immediate.
    Hvc64 {
        /// The HVC immediate.
        imm16: u16,
    },
    /// EC 0x17: SMC from AArch64 with its immediate.
    Smc64 {
        /// The SMC immediate.
        imm16: u16,
    },
    /// EC 0x18: a trapped MSR/MRS/system instruction.
    SysReg {
        /// Which register or instruction.
        reg: SysReg,
        /// Read or write.
        access: SysRegAccess,
        /// The general-purpose register transferred, 0..=31 (31 = XZR).
        rt: u8,
    },
    /// EC 0x20: instruction abort from a lower EL.
    InstrAbort(InstrAbort),
    /// EC 0x24: data abort from a lower EL.
    DataAbort(DataAbort),
    /// Any other exception class, kept raw for logging.
    Unknown {
        /// The exception class.
        ec: u8,
        /// The instruction specific syndrome.
        iss: u32,
    },
}

impl SysReg {
    /// The register with encoding `(op0, op1, CRn, CRm, op2)`. Out-of-range field values are
    /// truncated to their field width.
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Self(
            ((op0 as u16 & 0b11) << 14)
                | ((op1 as u16 & 0b111) << 11)
                | ((crn as u16 & 0xf) << 7)
                | ((crm as u16 & 0xf) << 3)
                | (op2 as u16 & 0b111),
        )
    }
    /// The packed encoding (MRS/MSR instruction bits [20:5]).
    pub const fn raw(self) -> u16 {
        self.0
    }
    /// op0.
    pub const fn op0(self) -> u8 {
        (self.0 >> 14) as u8 & 0b11
    }
    /// op1.
    pub const fn op1(self) -> u8 {
        (self.0 >> 11) as u8 & 0b111
    }
    /// CRn.
    pub const fn crn(self) -> u8 {
        (self.0 >> 7) as u8 & 0xf
    }
    /// CRm.
    pub const fn crm(self) -> u8 {
        (self.0 >> 3) as u8 & 0xf
    }
    /// op2.
    pub const fn op2(self) -> u8 {
        self.0 as u8 & 0b111
    }

    /// CNTPCT_EL0, physical count (3, 3, c14, c0, 1).
    pub const CNTPCT_EL0: Self = Self::new(3, 3, 14, 0, 1);
    /// CNTP_TVAL_EL0 (3, 3, c14, c2, 0).
    pub const CNTP_TVAL_EL0: Self = Self::new(3, 3, 14, 2, 0);
    /// CNTP_CTL_EL0 (3, 3, c14, c2, 1).
    pub const CNTP_CTL_EL0: Self = Self::new(3, 3, 14, 2, 1);
    /// CNTP_CVAL_EL0 (3, 3, c14, c2, 2).
    pub const CNTP_CVAL_EL0: Self = Self::new(3, 3, 14, 2, 2);
    /// ICC_SGI1R_EL1, GICv3 SGI generation (3, 0, c12, c11, 5).
    pub const ICC_SGI1R_EL1: Self = Self::new(3, 0, 12, 11, 5);
    /// ACTLR_EL1 (3, 0, c1, c0, 1), trapped by HCR_EL2.TACR.
    pub const ACTLR_EL1: Self = Self::new(3, 0, 1, 0, 1);
}

impl core::fmt::Debug for SysReg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0(),
            self.op1(),
            self.crn(),
            self.crm(),
            self.op2()
        )
    }
}

impl FaultStatus {
    /// Decode a 6-bit DFSC/IFSC value. Bits above 5 are ignored.
    pub const fn from_code(code: u8) -> Self {
        let code = code & 0x3f;
        let level = code & 0b11;
        match code >> 2 {
            0b0000 => Self::AddressSize { level },
            0b0001 => Self::Translation { level },
            0b0010 => Self::AccessFlag { level },
            0b0011 => Self::Permission { level },
            0b0101 => Self::SyncExternalOnWalk { level },
            _ => match code {
                0b01_0000 => Self::SyncExternal,
                0b10_0001 => Self::Alignment,
                0b11_0000 => Self::TlbConflict,
                other => Self::Other(other),
            },
        }
    }
}

/// Decode a raw ESR_EL2 value. Total: every value yields an [`Exit`].
pub fn decode(esr: EsrEl2) -> Exit {
    let raw = esr.get();
    let ec = esr.read(ESR_EL2::EC) as u8;
    let iss = esr.read(ESR_EL2::ISS) as u32;
    match esr.read_as_enum(ESR_EL2::EC) {
        Some(ESR_EL2::EC::Value::Wfx) => {
            let wfx = match LocalRegisterCopy::<u64, ISS_WFX::Register>::new(raw)
                .read_as_enum(ISS_WFX::TI)
            {
                Some(ISS_WFX::TI::Value::Wfe) => Wfx::Wfe,
                Some(ISS_WFX::TI::Value::Wfit) => Wfx::Wfit,
                Some(ISS_WFX::TI::Value::Wfet) => Wfx::Wfet,
                // TI is two bits and all four values are named, so `None` cannot happen;
                // WFI is the harmless reading if it ever did.
                Some(ISS_WFX::TI::Value::Wfi) | None => Wfx::Wfi,
            };
            Exit::Wfx(wfx)
        }
        Some(ESR_EL2::EC::Value::Hvc32) => Exit::Hvc32 { imm16: imm16(raw) },
        Some(ESR_EL2::EC::Value::Smc32) => Exit::Smc32,
        Some(ESR_EL2::EC::Value::Hvc64) => Exit::Hvc64 { imm16: imm16(raw) },
        Some(ESR_EL2::EC::Value::Smc64) => Exit::Smc64 { imm16: imm16(raw) },
        Some(ESR_EL2::EC::Value::SysReg) => decode_sysreg(raw),
        Some(ESR_EL2::EC::Value::InstrAbortLower) => {
            let iss = LocalRegisterCopy::<u64, ISS_IABT::Register>::new(raw);
            Exit::InstrAbort(InstrAbort {
                far_not_valid: iss.is_set(ISS_IABT::FNV),
                external: iss.is_set(ISS_IABT::EA),
                s1ptw: iss.is_set(ISS_IABT::S1PTW),
                fault: FaultStatus::from_code(iss.read(ISS_IABT::IFSC) as u8),
            })
        }
        Some(ESR_EL2::EC::Value::DataAbortLower) => Exit::DataAbort(decode_dabt(raw)),
        Some(ESR_EL2::EC::Value::Unknown) | None => Exit::Unknown { ec, iss },
    }
}

/// [`decode`] for a raw `u64`.
pub fn decode_raw(esr: u64) -> Exit {
    decode(EsrEl2::new(esr))
}

/// Length in bytes of the trapping instruction (IL): what to add to ELR_EL2 to step over
/// it. Always 4 for AArch64 guests.
pub fn instruction_len(esr: EsrEl2) -> u64 {
    match esr.read_as_enum(ESR_EL2::IL) {
        Some(ESR_EL2::IL::Value::Bits16) => 2,
        Some(ESR_EL2::IL::Value::Bits32) | None => 4,
    }
}

fn imm16(raw: u64) -> u16 {
    LocalRegisterCopy::<u64, ISS_CALL::Register>::new(raw).read(ISS_CALL::IMM16) as u16
}

fn decode_sysreg(raw: u64) -> Exit {
    let iss = LocalRegisterCopy::<u64, ISS_SYS::Register>::new(raw);
    let reg = SysReg::new(
        iss.read(ISS_SYS::OP0) as u8,
        iss.read(ISS_SYS::OP1) as u8,
        iss.read(ISS_SYS::CRN) as u8,
        iss.read(ISS_SYS::CRM) as u8,
        iss.read(ISS_SYS::OP2) as u8,
    );
    let access = match iss.read_as_enum(ISS_SYS::DIRECTION) {
        Some(ISS_SYS::DIRECTION::Value::Read) => SysRegAccess::Read,
        Some(ISS_SYS::DIRECTION::Value::Write) | None => SysRegAccess::Write,
    };
    Exit::SysReg {
        reg,
        access,
        rt: iss.read(ISS_SYS::RT) as u8,
    }
}

fn decode_dabt(raw: u64) -> DataAbort {
    let iss = LocalRegisterCopy::<u64, ISS_DABT::Register>::new(raw);
    // Why Option: when ISV == 0 the Arm ARM makes SAS/SSE/SRT/SF/AR RES0 or UNKNOWN, so
    // they must not be read as an access description.
    let syndrome = iss.is_set(ISS_DABT::ISV).then(|| AccessSyndrome {
        size: 1 << iss.read(ISS_DABT::SAS),
        sign_extend: iss.is_set(ISS_DABT::SSE),
        srt: iss.read(ISS_DABT::SRT) as u8,
        reg64: iss.is_set(ISS_DABT::SF),
        acquire_release: iss.is_set(ISS_DABT::AR),
    });
    DataAbort {
        syndrome,
        far_not_valid: iss.is_set(ISS_DABT::FNV),
        external: iss.is_set(ISS_DABT::EA),
        cache_maintenance: iss.is_set(ISS_DABT::CM),
        s1ptw: iss.is_set(ISS_DABT::S1PTW),
        write: iss.is_set(ISS_DABT::WNR),
        fault: FaultStatus::from_code(iss.read(ISS_DABT::DFSC) as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The ESR values below are assembled by hand from the Arm ARM ISS layouts, field by
    // field, so a reader can check each one against the spec without trusting this code.

    /// EC << 26 | IL (32-bit instruction).
    const fn esr(ec: u64, iss: u64) -> u64 {
        (ec << 26) | (1 << 25) | iss
    }

    #[test]
    fn wfi_and_wfe() {
        // WFI trapped by HCR_EL2.TWI: EC 0x01, IL, CV=1 COND=0b1110 (what cores report for
        // an unconditional A64 instruction), TI=0b00 -> 0x07E0_0000.
        assert_eq!(decode_raw(0x07E0_0000), Exit::Wfx(Wfx::Wfi));
        assert_eq!(decode_raw(0x07E0_0001), Exit::Wfx(Wfx::Wfe));
        assert_eq!(decode_raw(esr(0x01, 0b10)), Exit::Wfx(Wfx::Wfit));
        assert_eq!(decode_raw(esr(0x01, 0b11)), Exit::Wfx(Wfx::Wfet));
    }

    #[test]
    fn hvc_and_smc_immediates() {
        // `hvc #0` from AArch64: 0x5A00_0000; `smc #0`: 0x5E00_0000 (Linux ESR_ELx_EC_HVC64 /
        // _SMC64 with IL set).
        assert_eq!(decode_raw(0x5A00_0000), Exit::Hvc64 { imm16: 0 });
        assert_eq!(decode_raw(0x5E00_0000), Exit::Smc64 { imm16: 0 });
        // Xen's hypercall immediate, `hvc #0xea1`.
        assert_eq!(decode_raw(0x5A00_0EA1), Exit::Hvc64 { imm16: 0xEA1 });
        assert_eq!(decode_raw(esr(0x12, 0x1234)), Exit::Hvc32 { imm16: 0x1234 });
        assert_eq!(decode_raw(esr(0x13, 0x00F8_0000)), Exit::Smc32);
    }

    #[test]
    fn mrs_cntpct_el0() {
        // `mrs x0, cntpct_el0` trapped: Op0=3 [21:20], Op2=1 [19:17], Op1=3 [16:14],
        // CRn=14 [13:10], Rt=0 [9:5], CRm=0 [4:1], Direction=1 (read)
        // ISS = 0x30_0000 | 0x2_0000 | 0xC000 | 0x3800 | 1 = 0x32_F801.
        let exit = decode_raw(0x6232_F801);
        assert_eq!(
            exit,
            Exit::SysReg {
                reg: SysReg::CNTPCT_EL0,
                access: SysRegAccess::Read,
                rt: 0
            }
        );
    }

    #[test]
    fn msr_icc_sgi1r_el1_from_x3() {
        // `msr icc_sgi1r_el1, x3`: Op0=3, Op2=5, Op1=0, CRn=12, Rt=3, CRm=11, write.
        // ISS = 0x30_0000 | 5<<17 | 0 | 12<<10 | 3<<5 | 11<<1 | 0 = 0x3A_3076.
        let exit = decode_raw(esr(0x18, 0x3A_3076));
        assert_eq!(
            exit,
            Exit::SysReg {
                reg: SysReg::ICC_SGI1R_EL1,
                access: SysRegAccess::Write,
                rt: 3
            }
        );
        if let Exit::SysReg { reg, .. } = exit {
            assert_eq!(
                (reg.op0(), reg.op1(), reg.crn(), reg.crm(), reg.op2()),
                (3, 0, 12, 11, 5)
            );
            extern crate std;
            assert_eq!(std::format!("{reg:?}"), "S3_0_C12_C11_5");
        }
    }

    #[test]
    fn data_abort_str_w1_to_mmio() {
        // `str w1, [x0]` to an unmapped IPA: ISV=1, SAS=0b10 (word), SSE=0, SRT=1, SF=0,
        // AR=0, WnR=1, DFSC=0b000111 (translation fault, level 3).
        // ISS = 1<<24 | 2<<22 | 1<<16 | 1<<6 | 7 = 0x181_0047.
        let Exit::DataAbort(da) = decode_raw(0x9381_0047) else {
            panic!("not a data abort");
        };
        assert_eq!(
            da.syndrome,
            Some(AccessSyndrome {
                size: 4,
                sign_extend: false,
                srt: 1,
                reg64: false,
                acquire_release: false
            })
        );
        assert!(da.write);
        assert!(!da.s1ptw && !da.far_not_valid && !da.cache_maintenance && !da.external);
        assert_eq!(da.fault, FaultStatus::Translation { level: 3 });
    }

    #[test]
    fn data_abort_ldr_x2_and_ldrsb_w3() {
        // `ldr x2, [x1]`: ISV, SAS=0b11, SRT=2, SF=1, read, level-2 translation fault.
        // ISS = 1<<24 | 3<<22 | 2<<16 | 1<<15 | 6 = 0x1C2_8006.
        let Exit::DataAbort(da) = decode_raw(0x93C2_8006) else {
            panic!("not a data abort");
        };
        let s = da.syndrome.unwrap();
        assert_eq!((s.size, s.srt, s.reg64, s.sign_extend), (8, 2, true, false));
        assert!(!da.write);
        assert_eq!(da.fault, FaultStatus::Translation { level: 2 });

        // `ldrsb w3, [x0]`: SAS=0, SSE=1, SRT=3, SF=0. ISS = 1<<24 | 1<<21 | 3<<16 | 7.
        let Exit::DataAbort(da) = decode_raw(esr(0x24, 0x123_0007)) else {
            panic!("not a data abort");
        };
        let s = da.syndrome.unwrap();
        assert_eq!((s.size, s.srt, s.reg64, s.sign_extend), (1, 3, false, true));

        // `ldarh w5, [x0]`: SAS=0b01, SRT=5, AR=1.
        let Exit::DataAbort(da) =
            decode_raw(esr(0x24, (1 << 24) | (1 << 22) | (5 << 16) | (1 << 14) | 7))
        else {
            panic!("not a data abort");
        };
        let s = da.syndrome.unwrap();
        assert_eq!((s.size, s.srt, s.acquire_release), (2, 5, true));
    }

    #[test]
    fn data_abort_without_syndrome_and_walk_faults() {
        // `stp x0, x1, [x2]` gives ISV=0: a write, translation fault level 3, no syndrome.
        let Exit::DataAbort(da) = decode_raw(0x9200_0047) else {
            panic!("not a data abort");
        };
        assert_eq!(da.syndrome, None);
        assert!(da.write);
        // S1PTW=1, FnV=1, CM=1, EA=1, permission fault level 1.
        let Exit::DataAbort(da) = decode_raw(esr(
            0x24,
            (1 << 10) | (1 << 9) | (1 << 8) | (1 << 7) | 0b00_1101,
        )) else {
            panic!("not a data abort");
        };
        assert!(da.s1ptw && da.far_not_valid && da.cache_maintenance && da.external);
        assert_eq!(da.fault, FaultStatus::Permission { level: 1 });
    }

    #[test]
    fn instruction_abort() {
        // Guest jumps to an unmapped IPA: EC 0x20, IFSC = translation fault level 3.
        assert_eq!(
            decode_raw(0x8200_0007),
            Exit::InstrAbort(InstrAbort {
                far_not_valid: false,
                external: false,
                s1ptw: false,
                fault: FaultStatus::Translation { level: 3 }
            })
        );
        let Exit::InstrAbort(ia) = decode_raw(esr(0x20, (1 << 7) | 0b00_1010)) else {
            panic!("not an instruction abort");
        };
        assert!(ia.s1ptw);
        assert_eq!(ia.fault, FaultStatus::AccessFlag { level: 2 });
    }

    #[test]
    fn fault_status_codes() {
        assert_eq!(
            FaultStatus::from_code(0b00_0001),
            FaultStatus::AddressSize { level: 1 }
        );
        assert_eq!(FaultStatus::from_code(0b01_0000), FaultStatus::SyncExternal);
        assert_eq!(
            FaultStatus::from_code(0b01_0101),
            FaultStatus::SyncExternalOnWalk { level: 1 }
        );
        assert_eq!(FaultStatus::from_code(0b10_0001), FaultStatus::Alignment);
        assert_eq!(FaultStatus::from_code(0b11_0000), FaultStatus::TlbConflict);
        assert_eq!(
            FaultStatus::from_code(0b10_1011),
            FaultStatus::Other(0b10_1011)
        );
    }

    #[test]
    fn everything_else_is_unknown_never_a_panic() {
        // SVC64 (EC 0x15), data abort from the *same* EL (0x25), EC 0x00, and an all-ones
        // value: none are guest exits moat handles.
        assert_eq!(decode_raw(0x5600_0000), Exit::Unknown { ec: 0x15, iss: 0 });
        assert_eq!(
            decode_raw(esr(0x25, 0x47)),
            Exit::Unknown {
                ec: 0x25,
                iss: 0x47
            }
        );
        assert_eq!(decode_raw(0), Exit::Unknown { ec: 0, iss: 0 });
        assert_eq!(
            decode_raw(u64::MAX),
            Exit::Unknown {
                ec: 0x3f,
                iss: 0x1ff_ffff
            }
        );
        // A sweep over every EC with junk ISS bits must not panic.
        for ec in 0..64u64 {
            let _ = decode_raw((0xFFFF_FFFF << 32) | (ec << 26) | 0x3ff_ffff);
        }
    }

    #[test]
    fn instruction_length() {
        assert_eq!(instruction_len(EsrEl2::new(0x5E00_0000)), 4);
        assert_eq!(instruction_len(EsrEl2::new(0x5C00_0000)), 2);
    }
}
