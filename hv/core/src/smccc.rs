// SPDX-License-Identifier: MIT OR Apache-2.0
//! SMC Calling Convention (Arm DEN0028, SMCCC): function-ID decoding and the routing
//! policy for guest `HVC #0` / trapped `SMC #0` calls.
//!
//! ```text
//!   guest x0 = function ID, x1..x6 = args
//!        │ HVC #0 (EC 0x16) or SMC #0 trapped by HCR_EL2.TSC (EC 0x17)
//!        ▼
//!   smccc::route(call, conduit, firmware) ──▶ Route::Psci        ─▶ psci::decode/decide
//!                                         ├─▶ Route::Arch(..)    ─▶ answered here (VERSION,
//!                                         │                          ARCH_FEATURES) or one
//!                                         │                          forward path (WORKAROUND_n)
//!                                         ├─▶ Route::TrustedOs   ─▶ OP-TEE mediator (later)
//!                                         └─▶ Route::NotSupported ─▶ x0 = NOT_SUPPORTED
//! ```
//!
//! Sources, all in DEN0028: the bit-usage table of the function identifier, the table of
//! owning-entity numbers, and the Arm architecture calls chapter (section numbers move
//! between issues, so none are cited). moat presents SMCCC v1.1 to guests.
//!
//! Only calls with immediate 0 are SMCCC calls ([`is_smccc_immediate`]); the dispatcher
//! handles other immediates (Xen's `hvc #0xea1` hypercalls) before calling [`route`].

use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields![u32,
    /// An SMCCC function identifier (the value in W0), DEN0028 function identifier
    /// bit-usage table.
    pub FUNCTION_ID [
        /// [31]: call type.
        TYPE OFFSET(31) NUMBITS(1) [
            /// Yielding (standard) call: may be pre-empted, only Trusted OS uses them here.
            Yielding = 0,
            /// Fast call: atomic from the caller's point of view.
            Fast = 1
        ],
        /// [30]: calling convention.
        CC OFFSET(30) NUMBITS(1) [
            /// SMC32/HVC32: arguments and results in W registers.
            Smc32 = 0,
            /// SMC64/HVC64: arguments and results in X registers.
            Smc64 = 1
        ],
        /// [29:24]: owning entity number.
        OEN OFFSET(24) NUMBITS(6) [],
        /// [23:16]: must be zero for fast calls (bit 16 became the SVE hint in SMCCC v1.3;
        /// moat reports v1.1, so a conforming caller leaves it clear).
        MBZ OFFSET(16) NUMBITS(8) [],
        /// [15:0]: function number within the owning entity's range.
        NUMBER OFFSET(0) NUMBITS(16) []
    ]
];

/// SMCCC return code: success.
pub const SUCCESS: i32 = 0;
/// SMCCC return code: the function is not implemented.
pub const NOT_SUPPORTED: i32 = -1;
/// SMCCC return code: the call is not required (e.g. no mitigation needed on any PE).
pub const NOT_REQUIRED: i32 = -2;
/// SMCCC return code: a parameter is invalid.
pub const INVALID_PARAMETER: i32 = -3;

/// The SMCCC version moat implements for its guests: v1.1 (major 1 in [30:16], minor 1 in
/// [15:0]). v1.1 is the first version with SMCCC_ARCH_FEATURES and the workaround calls.
pub const VERSION_1_1: u64 = 0x1_0001;

/// SMCCC_VERSION function ID.
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES function ID.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// SMCCC_ARCH_SOC_ID function ID (SMCCC v1.2).
pub const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
/// SMCCC_ARCH_WORKAROUND_1 function ID (Spectre v2, CVE-2017-5715).
pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
/// SMCCC_ARCH_WORKAROUND_2 function ID (Spectre v4 / SSBD, CVE-2018-3639).
pub const SMCCC_ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
/// SMCCC_ARCH_WORKAROUND_3 function ID (Spectre-BHB, CVE-2022-23960).
pub const SMCCC_ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;

/// First and last function number of PSCI inside the Standard Secure service range
/// (DEN0028 Standard Secure service ranges: 0x00-0x1F).
const PSCI_NUMBERS: core::ops::RangeInclusive<u16> = 0x00..=0x1F;

/// Fast or yielding call (bit 31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallType {
    /// Fast call.
    Fast,
    /// Yielding call.
    Yielding,
}

/// SMC32 or SMC64 convention (bit 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convention {
    /// 32-bit: W registers.
    Smc32,
    /// 64-bit: X registers.
    Smc64,
}

/// Owning entity (bits 29:24), DEN0028 owning-entity number table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// 0: Arm architecture calls.
    Arch,
    /// 1: CPU service calls.
    Cpu,
    /// 2: SiP (silicon partner) service calls.
    SiP,
    /// 3: OEM service calls.
    Oem,
    /// 4: Standard secure service calls (PSCI, SDEI, TRNG, ...).
    StandardSecure,
    /// 5: Standard hypervisor service calls.
    StandardHyp,
    /// 6: Vendor specific hypervisor service calls.
    VendorHyp,
    /// 7: Vendor specific EL3 monitor calls (SMCCC v1.5).
    VendorEl3,
    /// 8-47: reserved for future use.
    Reserved(u8),
    /// 48-49: Trusted Application calls.
    TrustedApp(u8),
    /// 50-63: Trusted OS calls (OP-TEE uses 50).
    TrustedOs(u8),
}

/// Which instruction carried the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `HVC #0`, handled by moat.
    Hvc,
    /// `SMC #0`, trapped by HCR_EL2.TSC.
    Smc,
}

/// A decoded, well-formed function identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionId {
    /// The raw 32-bit identifier.
    pub raw: u32,
    /// Fast or yielding.
    pub call_type: CallType,
    /// SMC32 or SMC64.
    pub convention: Convention,
    /// Owning entity.
    pub owner: Owner,
    /// Function number (bits 15:0).
    pub number: u16,
}

/// A guest call as captured from its registers: W0 and X1..X6. Copy of guest state, not
/// yet validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// W0: the function identifier (the Function Identifier is passed in W0 for both
    /// conventions, so the upper half of X0 is ignored).
    pub function_id: u32,
    /// X1..X6: arguments.
    pub args: [u64; 6],
}

/// Status of one `SMCCC_ARCH_WORKAROUND_n`, as the physical firmware reported it through
/// `SMCCC_ARCH_FEATURES` at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WorkaroundStatus {
    /// Firmware returned 0: it implements the call and the PE needs it.
    Required,
    /// Firmware returned 1: it implements the call but this PE is not affected.
    NotRequiredOnThisPe,
    /// Firmware returned NOT_REQUIRED (-2): no PE in the system needs it.
    NotRequired,
    /// Firmware returned NOT_SUPPORTED or anything else (or was never asked).
    #[default]
    NotSupported,
}

/// The three mitigations an SMCCC v1.1 guest can discover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workaround {
    /// SMCCC_ARCH_WORKAROUND_1.
    W1,
    /// SMCCC_ARCH_WORKAROUND_2.
    W2,
    /// SMCCC_ARCH_WORKAROUND_3.
    W3,
}

/// What the physical firmware reported at boot, queried once by `hv` with
/// `SMCCC_ARCH_FEATURES` and passed in by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FirmwareFeatures {
    /// SMCCC_ARCH_WORKAROUND_1.
    pub workaround_1: WorkaroundStatus,
    /// SMCCC_ARCH_WORKAROUND_2.
    pub workaround_2: WorkaroundStatus,
    /// SMCCC_ARCH_WORKAROUND_3.
    pub workaround_3: WorkaroundStatus,
}

/// What the hypervisor does with an Arm architecture call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchAction {
    /// Put this value in X0 and return to the guest.
    Reply(u64),
    /// Run the mitigation: forward the guest's call (W0 and X1 unchanged) to the firmware
    /// through the single pass-through path, then return. Forwarding on the guest's
    /// behalf is right because every vCPU is pinned to its own physical CPU.
    ForwardWorkaround(Workaround),
}

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// PSCI (Standard Secure 0x00-0x1F): decode with `psci::decode`.
    Psci,
    /// Arm architecture call, answered by the hypervisor.
    Arch(ArchAction),
    /// Trusted OS call (owner 50-63) by SMC: for the OP-TEE mediator. Until it exists the
    /// caller answers NOT_SUPPORTED.
    TrustedOs,
    /// Everything else: reply NOT_SUPPORTED.
    NotSupported,
}

impl WorkaroundStatus {
    /// Interpret the value the firmware returned for `SMCCC_ARCH_FEATURES(WORKAROUND_n)`
    /// (X0 as read after the SMC; it is an int32 sign-extended, so only W0 is looked at).
    pub const fn from_firmware(x0: u64) -> Self {
        match x0 as u32 as i32 {
            0 => Self::Required,
            1 => Self::NotRequiredOnThisPe,
            NOT_REQUIRED => Self::NotRequired,
            _ => Self::NotSupported,
        }
    }

    /// The value moat reports to a guest for `SMCCC_ARCH_FEATURES(WORKAROUND_n)`: the same
    /// answer the firmware gave.
    pub const fn guest_reply(self) -> u64 {
        match self {
            Self::Required => ret(SUCCESS),
            Self::NotRequiredOnThisPe => 1,
            Self::NotRequired => ret(NOT_REQUIRED),
            Self::NotSupported => ret(NOT_SUPPORTED),
        }
    }

    /// Does the firmware implement the call, so that forwarding it is meaningful?
    const fn implemented(self) -> bool {
        matches!(self, Self::Required | Self::NotRequiredOnThisPe)
    }
}

impl FirmwareFeatures {
    /// The status of one workaround.
    pub const fn status(&self, w: Workaround) -> WorkaroundStatus {
        match w {
            Workaround::W1 => self.workaround_1,
            Workaround::W2 => self.workaround_2,
            Workaround::W3 => self.workaround_3,
        }
    }
}

impl Workaround {
    /// The workaround a function ID invokes, if any.
    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            SMCCC_ARCH_WORKAROUND_1 => Some(Self::W1),
            SMCCC_ARCH_WORKAROUND_2 => Some(Self::W2),
            SMCCC_ARCH_WORKAROUND_3 => Some(Self::W3),
            _ => None,
        }
    }
}

impl Owner {
    /// Decode an owning entity number (only the low 6 bits are looked at).
    pub const fn from_number(n: u8) -> Self {
        match n & 0x3f {
            0 => Self::Arch,
            1 => Self::Cpu,
            2 => Self::SiP,
            3 => Self::Oem,
            4 => Self::StandardSecure,
            5 => Self::StandardHyp,
            6 => Self::VendorHyp,
            7 => Self::VendorEl3,
            n @ 48..=49 => Self::TrustedApp(n),
            n @ 50..=63 => Self::TrustedOs(n),
            n => Self::Reserved(n),
        }
    }
}

impl FunctionId {
    /// Decode a function identifier. `None` if it is malformed: a fast call with any of
    /// bits [23:16] set. A malformed ID is answered NOT_SUPPORTED.
    pub fn decode(raw: u32) -> Option<Self> {
        let id = LocalRegisterCopy::<u32, FUNCTION_ID::Register>::new(raw);
        let call_type = match id.read_as_enum(FUNCTION_ID::TYPE) {
            Some(FUNCTION_ID::TYPE::Value::Fast) => CallType::Fast,
            Some(FUNCTION_ID::TYPE::Value::Yielding) | None => CallType::Yielding,
        };
        if call_type == CallType::Fast && id.read(FUNCTION_ID::MBZ) != 0 {
            return None;
        }
        let convention = match id.read_as_enum(FUNCTION_ID::CC) {
            Some(FUNCTION_ID::CC::Value::Smc64) => Convention::Smc64,
            Some(FUNCTION_ID::CC::Value::Smc32) | None => Convention::Smc32,
        };
        Some(Self {
            raw,
            call_type,
            convention,
            owner: Owner::from_number(id.read(FUNCTION_ID::OEN) as u8),
            number: id.read(FUNCTION_ID::NUMBER) as u16,
        })
    }
}

/// An SMCCC return code as the 64-bit X0 value a caller sees (int32, sign-extended).
pub const fn ret(code: i32) -> u64 {
    code as i64 as u64
}

/// Is this HVC/SMC immediate an SMCCC call? SMCCC calls use immediate 0; other values
/// belong to other interfaces.
pub const fn is_smccc_immediate(imm16: u16) -> bool {
    imm16 == 0
}

/// The routing policy: where does `call`, made through `conduit`, go?
///
/// - PSCI by HVC or SMC goes to PSCI: Linux picks the conduit from the device tree, and
///   either must work.
/// - Arm architecture calls by HVC or SMC are answered by moat (see [`arch_action`]).
/// - Trusted OS calls go to the mediator only by SMC: that is the conduit OP-TEE clients
///   use, and an HVC with a Trusted OS ID is a confused guest.
/// - Everything else, malformed IDs included, is NOT_SUPPORTED.
pub fn route(call: &Call, conduit: Conduit, firmware: &FirmwareFeatures) -> Route {
    let Some(id) = FunctionId::decode(call.function_id) else {
        return Route::NotSupported;
    };
    match (id.owner, id.call_type, conduit) {
        (Owner::StandardSecure, CallType::Fast, _) if PSCI_NUMBERS.contains(&id.number) => {
            Route::Psci
        }
        (Owner::Arch, CallType::Fast, _) => Route::Arch(arch_action(call, firmware)),
        (Owner::TrustedOs(_), _, Conduit::Smc) => Route::TrustedOs,
        _ => Route::NotSupported,
    }
}

/// How moat answers an Arm architecture call (owner 0).
pub fn arch_action(call: &Call, firmware: &FirmwareFeatures) -> ArchAction {
    match call.function_id {
        SMCCC_VERSION => ArchAction::Reply(VERSION_1_1),
        SMCCC_ARCH_FEATURES => {
            // X1 holds the queried function ID in its low 32 bits.
            let queried = call.args[0] as u32;
            let reply = match queried {
                // What TF-A answers: the two discovery calls are implemented.
                SMCCC_VERSION | SMCCC_ARCH_FEATURES => ret(SUCCESS),
                id => match Workaround::from_id(id) {
                    Some(w) => firmware.status(w).guest_reply(),
                    // SOC_ID is SMCCC v1.2, which moat does not claim.
                    None => ret(NOT_SUPPORTED),
                },
            };
            ArchAction::Reply(reply)
        }
        id => match Workaround::from_id(id) {
            Some(w) if firmware.status(w).implemented() => ArchAction::ForwardWorkaround(w),
            // A guest calling a workaround we did not advertise gets NOT_SUPPORTED; the
            // workaround calls have no defined return value, so this is harmless.
            _ => ArchAction::Reply(ret(NOT_SUPPORTED)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(function_id: u32, x1: u64) -> Call {
        Call {
            function_id,
            args: [x1, 0, 0, 0, 0, 0],
        }
    }

    fn fw_all(status: WorkaroundStatus) -> FirmwareFeatures {
        FirmwareFeatures {
            workaround_1: status,
            workaround_2: status,
            workaround_3: status,
        }
    }

    const NONE: FirmwareFeatures = FirmwareFeatures {
        workaround_1: WorkaroundStatus::NotSupported,
        workaround_2: WorkaroundStatus::NotSupported,
        workaround_3: WorkaroundStatus::NotSupported,
    };

    #[test]
    fn decode_fields() {
        // PSCI CPU_ON 64-bit.
        let id = FunctionId::decode(0xC400_0003).unwrap();
        assert_eq!(id.call_type, CallType::Fast);
        assert_eq!(id.convention, Convention::Smc64);
        assert_eq!(id.owner, Owner::StandardSecure);
        assert_eq!(id.number, 3);
        // OP-TEE OPTEE_SMC_CALL_WITH_ARG: yielding, SMC32, owner 50, function 4.
        let id = FunctionId::decode(0x3200_0004).unwrap();
        assert_eq!(id.call_type, CallType::Yielding);
        assert_eq!(id.convention, Convention::Smc32);
        assert_eq!(id.owner, Owner::TrustedOs(50));
        assert_eq!(id.number, 4);
        // OP-TEE fast call OPTEE_SMC_CALLS_UID = 0xBF00_FF01 (owner 63).
        assert_eq!(
            FunctionId::decode(0xBF00_FF01).unwrap().owner,
            Owner::TrustedOs(63)
        );
    }

    #[test]
    fn owners() {
        let expect = [
            (0, Owner::Arch),
            (1, Owner::Cpu),
            (2, Owner::SiP),
            (3, Owner::Oem),
            (4, Owner::StandardSecure),
            (5, Owner::StandardHyp),
            (6, Owner::VendorHyp),
            (7, Owner::VendorEl3),
            (8, Owner::Reserved(8)),
            (47, Owner::Reserved(47)),
            (48, Owner::TrustedApp(48)),
            (49, Owner::TrustedApp(49)),
            (50, Owner::TrustedOs(50)),
            (63, Owner::TrustedOs(63)),
        ];
        for (n, owner) in expect {
            assert_eq!(Owner::from_number(n), owner);
            let raw = 0x8000_0000 | (u32::from(n) << 24);
            assert_eq!(FunctionId::decode(raw).unwrap().owner, owner);
        }
    }

    #[test]
    fn fast_call_with_mbz_bits_is_invalid() {
        for bit in 16..24 {
            let raw = 0x8400_0000 | (1 << bit);
            assert_eq!(FunctionId::decode(raw), None);
            assert_eq!(
                route(&call(raw, 0), Conduit::Hvc, &NONE),
                Route::NotSupported
            );
        }
        // Yielding calls may use bits [23:16].
        assert!(FunctionId::decode(0x32FF_0000).is_some());
    }

    #[test]
    fn psci_routes_by_either_conduit() {
        for id in [
            0x8400_0000,
            0x8400_0003,
            0xC400_0003,
            0x8400_001F,
            0xC400_001F,
        ] {
            assert_eq!(route(&call(id, 0), Conduit::Hvc, &NONE), Route::Psci);
            assert_eq!(route(&call(id, 0), Conduit::Smc, &NONE), Route::Psci);
        }
        // SDEI (0xC400_0020...) and TRNG (0x8400_0050) share the owner but are not PSCI.
        assert_eq!(
            route(&call(0xC400_0020, 0), Conduit::Smc, &NONE),
            Route::NotSupported
        );
        assert_eq!(
            route(&call(0x8400_0050, 0), Conduit::Smc, &NONE),
            Route::NotSupported
        );
    }

    #[test]
    fn version_is_1_1() {
        for conduit in [Conduit::Hvc, Conduit::Smc] {
            assert_eq!(
                route(&call(SMCCC_VERSION, 0), conduit, &NONE),
                Route::Arch(ArchAction::Reply(0x1_0001))
            );
        }
    }

    #[test]
    fn arch_features_for_every_arch_id() {
        let fw = FirmwareFeatures {
            workaround_1: WorkaroundStatus::Required,
            workaround_2: WorkaroundStatus::NotRequired,
            workaround_3: WorkaroundStatus::NotRequiredOnThisPe,
        };
        let q = |id: u32| route(&call(SMCCC_ARCH_FEATURES, u64::from(id)), Conduit::Hvc, &fw);
        assert_eq!(q(SMCCC_VERSION), Route::Arch(ArchAction::Reply(0)));
        assert_eq!(q(SMCCC_ARCH_FEATURES), Route::Arch(ArchAction::Reply(0)));
        assert_eq!(
            q(SMCCC_ARCH_SOC_ID),
            Route::Arch(ArchAction::Reply(u64::MAX))
        );
        assert_eq!(
            q(SMCCC_ARCH_WORKAROUND_1),
            Route::Arch(ArchAction::Reply(0))
        );
        assert_eq!(
            q(SMCCC_ARCH_WORKAROUND_2),
            Route::Arch(ArchAction::Reply(ret(NOT_REQUIRED)))
        );
        assert_eq!(
            q(SMCCC_ARCH_WORKAROUND_3),
            Route::Arch(ArchAction::Reply(1))
        );
        // Unknown IDs, including PSCI ones, are NOT_SUPPORTED.
        assert_eq!(
            q(0x8000_0003),
            Route::Arch(ArchAction::Reply(ret(NOT_SUPPORTED)))
        );
        assert_eq!(
            q(0x8400_0000),
            Route::Arch(ArchAction::Reply(ret(NOT_SUPPORTED)))
        );
        // Junk in X1's upper half is ignored: only W1 is the queried ID.
        assert_eq!(
            route(
                &call(SMCCC_ARCH_FEATURES, 0xdead_0000_8000_8000),
                Conduit::Hvc,
                &fw
            ),
            Route::Arch(ArchAction::Reply(0))
        );
        // Firmware without any workaround: all NOT_SUPPORTED.
        for id in [
            SMCCC_ARCH_WORKAROUND_1,
            SMCCC_ARCH_WORKAROUND_2,
            SMCCC_ARCH_WORKAROUND_3,
        ] {
            assert_eq!(
                route(
                    &call(SMCCC_ARCH_FEATURES, u64::from(id)),
                    Conduit::Smc,
                    &NONE
                ),
                Route::Arch(ArchAction::Reply(u64::MAX))
            );
        }
    }

    #[test]
    fn workaround_calls_forward_only_when_firmware_has_them() {
        let fw = fw_all(WorkaroundStatus::Required);
        for (id, w) in [
            (SMCCC_ARCH_WORKAROUND_1, Workaround::W1),
            (SMCCC_ARCH_WORKAROUND_2, Workaround::W2),
            (SMCCC_ARCH_WORKAROUND_3, Workaround::W3),
        ] {
            assert_eq!(
                route(&call(id, 1), Conduit::Hvc, &fw),
                Route::Arch(ArchAction::ForwardWorkaround(w))
            );
            assert_eq!(
                route(&call(id, 1), Conduit::Hvc, &NONE),
                Route::Arch(ArchAction::Reply(ret(NOT_SUPPORTED)))
            );
            assert_eq!(
                route(
                    &call(id, 1),
                    Conduit::Hvc,
                    &fw_all(WorkaroundStatus::NotRequired)
                ),
                Route::Arch(ArchAction::Reply(ret(NOT_SUPPORTED)))
            );
        }
        // SOC_ID itself and other arch numbers are answered NOT_SUPPORTED.
        assert_eq!(
            route(&call(SMCCC_ARCH_SOC_ID, 0), Conduit::Hvc, &fw),
            Route::Arch(ArchAction::Reply(ret(NOT_SUPPORTED)))
        );
    }

    #[test]
    fn firmware_replies_are_interpreted() {
        assert_eq!(
            WorkaroundStatus::from_firmware(0),
            WorkaroundStatus::Required
        );
        assert_eq!(
            WorkaroundStatus::from_firmware(1),
            WorkaroundStatus::NotRequiredOnThisPe
        );
        assert_eq!(
            WorkaroundStatus::from_firmware(ret(-2)),
            WorkaroundStatus::NotRequired
        );
        // 32-bit -2 without sign extension is still -2 in W0.
        assert_eq!(
            WorkaroundStatus::from_firmware(0xFFFF_FFFE),
            WorkaroundStatus::NotRequired
        );
        assert_eq!(
            WorkaroundStatus::from_firmware(ret(-1)),
            WorkaroundStatus::NotSupported
        );
        assert_eq!(
            WorkaroundStatus::from_firmware(7),
            WorkaroundStatus::NotSupported
        );
    }

    #[test]
    fn trusted_os_only_by_smc() {
        for id in [0x3200_0004, 0xB200_0000, 0xBF00_FF01, 0xB200_0009] {
            assert_eq!(route(&call(id, 0), Conduit::Smc, &NONE), Route::TrustedOs);
            assert_eq!(
                route(&call(id, 0), Conduit::Hvc, &NONE),
                Route::NotSupported
            );
        }
        // Trusted applications (48-49) are not the Trusted OS.
        assert_eq!(
            route(&call(0xB000_0000, 0), Conduit::Smc, &NONE),
            Route::NotSupported
        );
    }

    #[test]
    fn everything_else_is_not_supported() {
        for id in [
            0x8100_0000, // CPU service
            0x8200_0000, // SiP
            0x8300_0000, // OEM
            0xC500_0020, // Standard hypervisor (PV time)
            0x8600_FF01, // Vendor hypervisor UID
            0x8700_0000, // Vendor EL3
            0x8800_0000, // Reserved
            0x0400_0000, // Yielding call to Standard Secure
            0x0000_0000, // Yielding arch
            0xC000_0000, // Fast SMC64 arch function 0 (not defined)
        ] {
            let r = route(&call(id, 0), Conduit::Smc, &NONE);
            if id == 0xC000_0000 {
                // Owner 0 fast calls are answered by moat, as NOT_SUPPORTED.
                assert_eq!(r, Route::Arch(ArchAction::Reply(u64::MAX)), "{id:#x}");
            } else {
                assert_eq!(r, Route::NotSupported, "{id:#x}");
            }
        }
        assert!(is_smccc_immediate(0));
        assert!(!is_smccc_immediate(0xEA1));
        assert_eq!(ret(INVALID_PARAMETER), 0xFFFF_FFFF_FFFF_FFFD);
    }
}
