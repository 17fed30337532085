// SPDX-License-Identifier: MIT OR Apache-2.0
//! PSCI (Arm DEN0022, Power State Coordination Interface) as moat presents it to guests:
//! version 1.1, a virtual implementation over the VM's own vCPUs.
//!
//! ```text
//!   smccc::route == Psci ─▶ psci::decode(call) ─▶ PsciCall
//!                                                   │ + VmView (vCPU table, RAM ranges)
//!                                                   ▼
//!                                        psci::decide ─▶ Action ─▶ vm::Vm::apply + effects
//! ```
//!
//! The policy never touches the real firmware: with static partitioning each vCPU owns its
//! physical CPU, and powering a vCPU "on" means the hypervisor starts running it there.
//!
//! Choices (DEN0022 allows each):
//! - `CPU_SUSPEND` is treated as standby, like WFI: the vCPU waits for an interrupt and the
//!   call returns SUCCESS. A power-down request that returns is legal ("the implementation
//!   may enter a shallower state"), and the guest's context is never lost.
//! - `AFFINITY_INFO` supports `lowest_affinity_level == 0` only (the only level PSCI 1.x
//!   requires); other levels are INVALID_PARAMETERS.
//! - `MIGRATE_INFO_TYPE` says 2: no Trusted OS that needs migration is visible to guests.
//! - `CPU_ON` entry points must be 4-byte aligned and inside the VM's RAM.

use crate::addr::{Ipa, Range};
use crate::smccc::{self, Call};
use crate::vm::{Vcpu, VcpuState};

/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC32.
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xC400_0003;
/// AFFINITY_INFO, SMC32.
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000A;

/// Every function ID moat implements; PSCI_FEATURES answers SUCCESS for exactly these
/// (plus SMCCC_VERSION, see [`decide`]).
pub const SUPPORTED: [u32; 12] = [
    PSCI_VERSION,
    CPU_SUSPEND_32,
    CPU_SUSPEND_64,
    CPU_OFF,
    CPU_ON_32,
    CPU_ON_64,
    AFFINITY_INFO_32,
    AFFINITY_INFO_64,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    PSCI_FEATURES,
];

/// PSCI return code: success.
pub const SUCCESS: i32 = 0;
/// PSCI return code: not supported.
pub const NOT_SUPPORTED: i32 = -1;
/// PSCI return code: invalid parameters.
pub const INVALID_PARAMETERS: i32 = -2;
/// PSCI return code: denied.
pub const DENIED: i32 = -3;
/// PSCI return code: the target is already on.
pub const ALREADY_ON: i32 = -4;
/// PSCI return code: a CPU_ON for the target is already pending.
pub const ON_PENDING: i32 = -5;
/// PSCI return code: internal failure.
pub const INTERNAL_FAILURE: i32 = -6;
/// PSCI return code: not present.
pub const NOT_PRESENT: i32 = -7;
/// PSCI return code: disabled.
pub const DISABLED: i32 = -8;
/// PSCI return code: invalid address.
pub const INVALID_ADDRESS: i32 = -9;

/// PSCI 1.1: major 1 in [31:16], minor 1 in [15:0].
pub const VERSION_1_1: u64 = 0x1_0001;
/// MIGRATE_INFO_TYPE answer: Trusted OS not present or does not require migration.
pub const MIGRATE_TYPE_NOT_PRESENT: u64 = 2;

/// AFFINITY_INFO answers.
const AFFINITY_ON: u64 = 0;
const AFFINITY_OFF: u64 = 1;
const AFFINITY_ON_PENDING: u64 = 2;

/// A decoded PSCI call. Arguments of the SMC32 variants are truncated to 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciCall {
    /// PSCI_VERSION.
    Version,
    /// CPU_SUSPEND.
    CpuSuspend {
        /// The requested power state (ignored: treated as standby).
        power_state: u32,
        /// Resume entry point for power-down states.
        entry: Ipa,
        /// Context ID for power-down states.
        context_id: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// CPU_ON.
    CpuOn {
        /// Target MPIDR (affinity fields only).
        target: u64,
        /// Entry point IPA.
        entry: Ipa,
        /// Value for X0 at the entry point.
        context_id: u64,
    },
    /// AFFINITY_INFO.
    AffinityInfo {
        /// Target MPIDR.
        target: u64,
        /// Lowest affinity level to consider.
        lowest_level: u32,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// PSCI_FEATURES.
    Features {
        /// The function ID asked about.
        function_id: u32,
    },
    /// Any PSCI ID moat does not implement (MIGRATE, SYSTEM_SUSPEND, ...).
    Unsupported {
        /// The function ID.
        function_id: u32,
    },
}

/// What the hypervisor does for a PSCI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put this value in X0 and return to the caller.
    Reply(u64),
    /// Wait for an interrupt as for WFI, then reply SUCCESS (CPU_SUSPEND).
    Standby,
    /// Start vCPU `index` at `entry` with X0 = `context_id`, then reply SUCCESS to the
    /// caller.
    StartVcpu {
        /// Index of the vCPU in the VM's table.
        index: usize,
        /// Entry point.
        entry: Ipa,
        /// X0 at the entry point.
        context_id: u64,
    },
    /// Power off the calling vCPU; the call does not return.
    StopThisVcpu,
    /// Power off the whole VM.
    SystemOff,
    /// Reset the whole VM.
    SystemReset,
}

/// The policy's view of the calling VM.
#[derive(Clone, Copy, Debug)]
pub struct VmView<'a> {
    /// The vCPU table; the index is the vCPU number.
    pub vcpus: &'a [Vcpu],
    /// The VM's RAM, where entry points may lie.
    pub ram: &'a [Range<Ipa>],
}

/// Decode a call that [`smccc::route`] sent to PSCI.
pub fn decode(call: &Call) -> PsciCall {
    // SMC32 arguments live in W registers: the upper halves are not the caller's to set.
    let a32 = |i: usize| u64::from(call.args[i] as u32);
    let a64 = |i: usize| call.args[i];
    match call.function_id {
        PSCI_VERSION => PsciCall::Version,
        CPU_SUSPEND_32 => PsciCall::CpuSuspend {
            power_state: call.args[0] as u32,
            entry: Ipa(a32(1)),
            context_id: a32(2),
        },
        CPU_SUSPEND_64 => PsciCall::CpuSuspend {
            power_state: call.args[0] as u32,
            entry: Ipa(a64(1)),
            context_id: a64(2),
        },
        CPU_OFF => PsciCall::CpuOff,
        CPU_ON_32 => PsciCall::CpuOn {
            target: a32(0),
            entry: Ipa(a32(1)),
            context_id: a32(2),
        },
        CPU_ON_64 => PsciCall::CpuOn {
            target: a64(0),
            entry: Ipa(a64(1)),
            context_id: a64(2),
        },
        AFFINITY_INFO_32 => PsciCall::AffinityInfo {
            target: a32(0),
            lowest_level: call.args[1] as u32,
        },
        AFFINITY_INFO_64 => PsciCall::AffinityInfo {
            target: a64(0),
            lowest_level: call.args[1] as u32,
        },
        MIGRATE_INFO_TYPE => PsciCall::MigrateInfoType,
        SYSTEM_OFF => PsciCall::SystemOff,
        SYSTEM_RESET => PsciCall::SystemReset,
        PSCI_FEATURES => PsciCall::Features {
            function_id: call.args[0] as u32,
        },
        function_id => PsciCall::Unsupported { function_id },
    }
}

/// The PSCI policy: what to do about `call` from a vCPU of `vm`.
pub fn decide(call: &PsciCall, vm: &VmView<'_>) -> Action {
    match *call {
        PsciCall::Version => Action::Reply(VERSION_1_1),
        PsciCall::CpuSuspend { .. } => Action::Standby,
        PsciCall::CpuOff => Action::StopThisVcpu,
        PsciCall::CpuOn {
            target,
            entry,
            context_id,
        } => cpu_on(vm, target, entry, context_id),
        PsciCall::AffinityInfo {
            target,
            lowest_level,
        } => {
            if lowest_level != 0 {
                return reply(INVALID_PARAMETERS);
            }
            match find(vm, target) {
                None => reply(INVALID_PARAMETERS),
                Some((_, vcpu)) => Action::Reply(match vcpu.state {
                    VcpuState::Running => AFFINITY_ON,
                    VcpuState::Off | VcpuState::Stopped => AFFINITY_OFF,
                    VcpuState::OnPending { .. } => AFFINITY_ON_PENDING,
                }),
            }
        }
        PsciCall::MigrateInfoType => Action::Reply(MIGRATE_TYPE_NOT_PRESENT),
        PsciCall::SystemOff => Action::SystemOff,
        PsciCall::SystemReset => Action::SystemReset,
        PsciCall::Features { function_id } => {
            // Linux asks PSCI_FEATURES(SMCCC_VERSION) to learn that SMCCC v1.1 (and so the
            // Spectre workaround discovery) exists: DEN0022, PSCI_FEATURES.
            let known = function_id == smccc::SMCCC_VERSION || SUPPORTED.contains(&function_id);
            // For CPU_SUSPEND the SUCCESS value 0 also says: original power_state format,
            // platform-coordinated mode only.
            reply(if known { SUCCESS } else { NOT_SUPPORTED })
        }
        PsciCall::Unsupported { .. } => reply(NOT_SUPPORTED),
    }
}

fn cpu_on(vm: &VmView<'_>, target: u64, entry: Ipa, context_id: u64) -> Action {
    let Some((index, vcpu)) = find(vm, target) else {
        return reply(INVALID_PARAMETERS);
    };
    match vcpu.state {
        VcpuState::Running => return reply(ALREADY_ON),
        VcpuState::OnPending { .. } => return reply(ON_PENDING),
        // The VM is shutting down: no vCPU comes back.
        VcpuState::Stopped => return reply(DENIED),
        VcpuState::Off => {}
    }
    // An A64 entry point is a 4-byte instruction inside the VM's RAM.
    let in_ram = vm.ram.iter().any(|r| r.contains_span(entry, 4));
    if !entry.is_aligned(4) || !in_ram {
        return reply(INVALID_ADDRESS);
    }
    Action::StartVcpu {
        index,
        entry,
        context_id,
    }
}

fn find<'a>(vm: &VmView<'a>, target: u64) -> Option<(usize, &'a Vcpu)> {
    vm.vcpus.iter().enumerate().find(|(_, v)| v.mpidr == target)
}

const fn reply(code: i32) -> Action {
    Action::Reply(smccc::ret(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smccc::ret;
    use crate::vm::vcpu_mpidr;

    fn call(function_id: u32, args: [u64; 3]) -> Call {
        Call {
            function_id,
            args: [args[0], args[1], args[2], 0, 0, 0],
        }
    }

    fn vcpu(index: usize, state: VcpuState) -> Vcpu {
        Vcpu {
            mpidr: vcpu_mpidr(index),
            pcpu: index + 2,
            state,
        }
    }

    const RAM: [Range<Ipa>; 2] = [
        Range {
            start: Ipa(0x4000_0000),
            end: Ipa(0x8000_0000),
        },
        Range {
            start: Ipa(0x1_0000_0000),
            end: Ipa(0x1_0010_0000),
        },
    ];

    fn table() -> [Vcpu; 4] {
        [
            vcpu(0, VcpuState::Running),
            vcpu(1, VcpuState::Off),
            vcpu(
                2,
                VcpuState::OnPending {
                    entry: Ipa(0x4008_0000),
                    context_id: 0,
                },
            ),
            vcpu(3, VcpuState::Stopped),
        ]
    }

    fn run(c: Call) -> Action {
        let vcpus = table();
        decide(
            &decode(&c),
            &VmView {
                vcpus: &vcpus,
                ram: &RAM,
            },
        )
    }

    #[test]
    fn decode_truncates_smc32_arguments() {
        let junk = 0xdead_beef_0000_0000;
        assert_eq!(
            decode(&call(CPU_ON_32, [junk | 1, junk | 0x4008_0000, junk | 7])),
            PsciCall::CpuOn {
                target: 1,
                entry: Ipa(0x4008_0000),
                context_id: 7
            }
        );
        assert_eq!(
            decode(&call(CPU_ON_64, [0x1_0000_0001, 0x1_0000_0000, junk])),
            PsciCall::CpuOn {
                target: 0x1_0000_0001,
                entry: Ipa(0x1_0000_0000),
                context_id: junk
            }
        );
        assert_eq!(
            decode(&call(AFFINITY_INFO_32, [junk | 2, junk, 0])),
            PsciCall::AffinityInfo {
                target: 2,
                lowest_level: 0
            }
        );
        assert_eq!(
            decode(&call(AFFINITY_INFO_64, [junk | 2, 1, 0])),
            PsciCall::AffinityInfo {
                target: junk | 2,
                lowest_level: 1
            }
        );
        assert_eq!(
            decode(&call(
                CPU_SUSPEND_32,
                [junk | 1, junk | 0x4000_0000, junk | 3]
            )),
            PsciCall::CpuSuspend {
                power_state: 1,
                entry: Ipa(0x4000_0000),
                context_id: 3
            }
        );
        assert_eq!(
            decode(&call(CPU_SUSPEND_64, [1, junk, junk])),
            PsciCall::CpuSuspend {
                power_state: 1,
                entry: Ipa(junk),
                context_id: junk
            }
        );
        assert_eq!(decode(&call(PSCI_VERSION, [0; 3])), PsciCall::Version);
        assert_eq!(decode(&call(CPU_OFF, [0; 3])), PsciCall::CpuOff);
        assert_eq!(
            decode(&call(MIGRATE_INFO_TYPE, [0; 3])),
            PsciCall::MigrateInfoType
        );
        assert_eq!(decode(&call(SYSTEM_OFF, [0; 3])), PsciCall::SystemOff);
        assert_eq!(decode(&call(SYSTEM_RESET, [0; 3])), PsciCall::SystemReset);
        assert_eq!(
            decode(&call(PSCI_FEATURES, [junk | CPU_ON_64 as u64, 0, 0])),
            PsciCall::Features {
                function_id: CPU_ON_64
            }
        );
        assert_eq!(
            decode(&call(0x8400_000E, [0; 3])),
            PsciCall::Unsupported {
                function_id: 0x8400_000E
            }
        );
    }

    #[test]
    fn version_migrate_and_system_calls() {
        assert_eq!(run(call(PSCI_VERSION, [0; 3])), Action::Reply(0x1_0001));
        assert_eq!(run(call(MIGRATE_INFO_TYPE, [0; 3])), Action::Reply(2));
        assert_eq!(run(call(SYSTEM_OFF, [0; 3])), Action::SystemOff);
        assert_eq!(run(call(SYSTEM_RESET, [0; 3])), Action::SystemReset);
        assert_eq!(run(call(CPU_OFF, [0; 3])), Action::StopThisVcpu);
        assert_eq!(
            run(call(CPU_SUSPEND_64, [0, 0x4000_0000, 0])),
            Action::Standby
        );
        assert_eq!(run(call(CPU_SUSPEND_32, [0x1_0000, 0, 0])), Action::Standby);
    }

    #[test]
    fn features() {
        for id in SUPPORTED {
            assert_eq!(
                run(call(PSCI_FEATURES, [u64::from(id), 0, 0])),
                Action::Reply(0),
                "{id:#x}"
            );
        }
        assert_eq!(
            run(call(PSCI_FEATURES, [u64::from(smccc::SMCCC_VERSION), 0, 0])),
            Action::Reply(0)
        );
        for id in [
            0x8400_0005u32,
            0x8400_000E,
            0xC400_000E,
            0x8400_0012,
            0,
            0x8000_0001,
        ] {
            assert_eq!(
                run(call(PSCI_FEATURES, [u64::from(id), 0, 0])),
                Action::Reply(ret(NOT_SUPPORTED)),
                "{id:#x}"
            );
        }
    }

    #[test]
    fn unsupported_ids() {
        for id in [
            0x8400_0005u32,
            0xC400_0005,
            0x8400_0007,
            0x8400_000E,
            0x8400_001F,
        ] {
            assert_eq!(run(call(id, [0; 3])), Action::Reply(ret(NOT_SUPPORTED)));
        }
    }

    #[test]
    fn cpu_on() {
        let on = |target: u64, entry: u64| run(call(CPU_ON_64, [target, entry, 0x55]));
        assert_eq!(
            on(vcpu_mpidr(1), 0x4008_0000),
            Action::StartVcpu {
                index: 1,
                entry: Ipa(0x4008_0000),
                context_id: 0x55
            }
        );
        // Entry in the second RAM bank, last word.
        assert_eq!(
            on(vcpu_mpidr(1), 0x1_000F_FFFC),
            Action::StartVcpu {
                index: 1,
                entry: Ipa(0x1_000F_FFFC),
                context_id: 0x55
            }
        );
        assert_eq!(
            on(vcpu_mpidr(0), 0x4008_0000),
            Action::Reply(ret(ALREADY_ON))
        );
        assert_eq!(
            on(vcpu_mpidr(2), 0x4008_0000),
            Action::Reply(ret(ON_PENDING))
        );
        assert_eq!(on(vcpu_mpidr(3), 0x4008_0000), Action::Reply(ret(DENIED)));
        // Unknown MPIDR, and a known one with bit 31 (RES1 in MPIDR_EL1) left in.
        assert_eq!(
            on(vcpu_mpidr(9), 0x4008_0000),
            Action::Reply(ret(INVALID_PARAMETERS))
        );
        assert_eq!(
            on(vcpu_mpidr(1) | (1 << 31), 0x4008_0000),
            Action::Reply(ret(INVALID_PARAMETERS))
        );
        // Outside RAM, straddling the end, unaligned, and wrapping.
        for bad in [
            0x0900_0000,
            0x7FFF_FFFE,
            0x4008_0002,
            0x1_0010_0000,
            u64::MAX - 1,
        ] {
            assert_eq!(
                on(vcpu_mpidr(1), bad),
                Action::Reply(ret(INVALID_ADDRESS)),
                "{bad:#x}"
            );
        }
        // CPU_ON_32 with a 64-bit-looking entry: truncated, then checked.
        assert_eq!(
            run(call(CPU_ON_32, [vcpu_mpidr(1), 0x1_4008_0000, 0])),
            Action::StartVcpu {
                index: 1,
                entry: Ipa(0x4008_0000),
                context_id: 0
            }
        );
    }

    #[test]
    fn affinity_info() {
        let info = |target: u64, level: u64| run(call(AFFINITY_INFO_64, [target, level, 0]));
        assert_eq!(info(vcpu_mpidr(0), 0), Action::Reply(0));
        assert_eq!(info(vcpu_mpidr(1), 0), Action::Reply(1));
        assert_eq!(info(vcpu_mpidr(2), 0), Action::Reply(2));
        assert_eq!(info(vcpu_mpidr(3), 0), Action::Reply(1));
        assert_eq!(
            info(vcpu_mpidr(0), 1),
            Action::Reply(ret(INVALID_PARAMETERS))
        );
        assert_eq!(info(0xff, 0), Action::Reply(ret(INVALID_PARAMETERS)));
    }

    #[test]
    fn return_codes() {
        assert_eq!(
            [
                SUCCESS,
                NOT_SUPPORTED,
                INVALID_PARAMETERS,
                DENIED,
                ALREADY_ON,
                ON_PENDING,
                INTERNAL_FAILURE,
                NOT_PRESENT,
                DISABLED,
                INVALID_ADDRESS
            ],
            [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
        );
        assert_eq!(ret(INVALID_ADDRESS), 0xFFFF_FFFF_FFFF_FFF7);
    }
}
