// SPDX-License-Identifier: MIT OR Apache-2.0
//! The EL2 control registers that define what a guest may do, each composed in one
//! function with the reason for every bit (mirrored in docs/reference/el2-registers.md).

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::LocalRegisterCopy;

/// HCR_EL2 for a guest.
pub fn hcr_el2() -> LocalRegisterCopy<u64, HCR_EL2::Register> {
    LocalRegisterCopy::new(
        (
            // Stage-2 translation on: a guest sees only what its stage-2 maps.
            HCR_EL2::VM::Enable
            // EL1 runs AArch64.
            + HCR_EL2::RW::EL1IsAarch64
            // Trap SMC: every call to the secure world goes through moat (PSCI, OP-TEE).
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            // Set/way invalidation by a guest is upgraded to clean+invalidate, so a guest
            // cannot discard dirty lines that belong to someone else.
            + HCR_EL2::SWIO::SET
            // Pointer authentication and its keys are not trapped: each vCPU owns its
            // pCPU, so the keys stay with it, and Linux uses PAuth on `-cpu max`.
            + HCR_EL2::API::DisableTrapPointerAuthInstToEl2
            + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
            // Physical IRQs and FIQs go to moat (IMO = FMO = 1), which owns the GIC; a
            // guest gets virtual interrupts through the list registers, and its EL1
            // accesses to the GIC CPU interface go to the virtual one (ICV_*).
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            // WFI/WFE are not trapped: each vCPU is pinned to its own pCPU, so an idle
            // vCPU may sleep its pCPU directly, with no scheduling decision to make.
        )
            .value,
    )
}

/// CPTR_EL2 (non-VHE layout): nothing the guest uses is trapped.
pub fn cptr_el2() -> u64 {
    // RES1 bits of the non-VHE layout: [13], [9], [7:0].
    const RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
    // TFP (bit 10) = 0: FP/SIMD is not trapped. moat is built softfloat and never
    //   touches FP/SIMD state, so the guest's stays live in the registers.
    // TZ (bit 8) = 0 and TSM (bit 12) = 0: SVE and SME are the guest's too, for the same
    //   reason; Linux probes them from the ID registers and would crash on a trap.
    // TTA (bit 20) = 0: trace registers are not trapped. TCPAC (bit 31) = 0.
    RES1
}

/// CNTHCTL_EL2 (non-VHE layout).
pub fn cnthctl_el2() -> LocalRegisterCopy<u64, CNTHCTL_EL2::Register> {
    LocalRegisterCopy::new(
        (
            // EL1/EL0 may read the physical counter and use the physical timer: each vCPU
            // owns its pCPU's timers; Linux uses the virtual ones, with CNTVOFF = 0.
            CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET
        )
            .value,
    )
}

/// MDCR_EL2: the guest gets every PMU counter and the debug registers untrapped.
pub fn mdcr_el2(pmu_counters: u64) -> u64 {
    // HPMN = all counters belong to EL1/EL0 (none reserved for EL2); TPM, TPMCR, TDA,
    // TDOSA, TDRA = 0: PMU and debug registers are not trapped, each vCPU owns its pCPU's.
    // E2PB = E2TB = 0b00 leave the statistical-profiling and trace-buffer controls to EL2
    // (a guest's access to them traps), which Linux copes with by not using them.
    pmu_counters & 0x1f
}

/// SCTLR_EL1 as a guest finds it at entry: MMU and caches off, the RES1 bits set.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// SPSR_EL2 for entering a guest kernel: EL1h with D, A, I, F masked (arm64 boot protocol).
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Program this CPU's EL2 controls for running vCPU `vcpu` (pinned to this pCPU).
pub fn install_guest_controls(vcpu: usize) {
    HCR_EL2.set(hcr_el2().get());
    let cptr = cptr_el2();
    // SAFETY: CPTR_EL2 only controls traps of EL0/EL1 (and EL2) FP/SVE/trace accesses;
    // moat itself uses none of those features.
    unsafe { core::arch::asm!("msr cptr_el2, {}", in(reg) cptr, options(nostack)) };
    CNTHCTL_EL2.set(cnthctl_el2().get());
    CNTVOFF_EL2.set(0);
    let pmcr: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effects.
    unsafe { core::arch::asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack)) };
    MDCR_EL2.set(mdcr_el2(pmcr >> 11));
    // The guest sees the CPU model it runs on (MIDR), and the MPIDR of its vCPU index: the
    // affinity its DT, the vGIC's redistributors and PSCI all use (hv_core::vm::vcpu_mpidr).
    let midr = MIDR_EL1.get();
    // SAFETY: VPIDR_EL2 only changes what EL1 reads from MIDR_EL1.
    unsafe { core::arch::asm!("msr vpidr_el2, {}", in(reg) midr, options(nostack)) };
    VMPIDR_EL2.set(hv_core::vm::vmpidr_el2(vcpu));
    // HSTR_EL2 resets to an UNKNOWN value: no trapping of AArch32 CP15 accesses.
    // SAFETY: HSTR_EL2 only controls traps of EL1/EL0 AArch32 coprocessor accesses.
    unsafe { core::arch::asm!("msr hstr_el2, xzr", options(nostack)) };
    // SAFETY: SCTLR_EL1 belongs to the guest, which has not run on this CPU yet.
    unsafe {
        core::arch::asm!("msr sctlr_el1, {}", "isb", in(reg) SCTLR_EL1_RESET, options(nostack))
    };
}

/// This CPU's MPIDR affinity bits (Aff3..Aff0).
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The current exception level.
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}
