// SPDX-License-Identifier: MIT OR Apache-2.0
//! Trap dispatch: what moat does when a guest exits to EL2.
//!
//! ```text
//!   ESR_EL2 --hv_core::esr::decode--> Exit
//!     HVC/SMC  -> hv_core::smccc::route -> PSCI (hv_core::psci::decide) | arch | trusted OS
//!     WFI/WFE  -> (not trapped today: a pinned vCPU idles its own pCPU) idle, step over
//!     sysreg, abort, unknown -> the architecture's answer (UNDEF or an abort), warn once in a while
//! ```
//!
//! Every guest value arrives as a register copy in the TrapFrame; hv-core decodes and
//! decides on plain values, and nothing a guest does here can panic moat.

use aarch64_cpu::registers::*;
use hv_core::addr::Ipa;
use hv_core::esr::{self, Exit, SysReg, SysRegAccess, Wfx};
use hv_core::mmio;
use hv_core::psci::{self, Action};
use hv_core::smccc::{self, ArchAction, Call, Conduit, Route};
use tock_registers::interfaces::{Readable, Writeable};

use crate::arch::{self, TrapFrame};
use crate::domain::Domain;
use crate::vdev;

/// SMCCC NOT_SUPPORTED, as the 64-bit register value a caller reads.
const NOT_SUPPORTED: u64 = smccc::ret(smccc::NOT_SUPPORTED);

fn call_of(frame: &TrapFrame) -> Call {
    Call {
        function_id: frame.x[0] as u32,
        args: [
            frame.x[1], frame.x[2], frame.x[3], frame.x[4], frame.x[5], frame.x[6],
        ],
    }
}

/// Handle an SMCCC call (HVC or trapped SMC) from the guest; results go to x0..x3.
fn smccc_call(dom: &'static Domain, vcpu: usize, frame: &mut TrapFrame, conduit: Conduit) {
    let call = call_of(frame);
    match smccc::route(&call, conduit, &crate::firmware_features()) {
        Route::Psci => psci_call(dom, vcpu, frame, &call),
        Route::Arch(ArchAction::Reply(v)) => frame.x[0] = v,
        Route::Arch(ArchAction::ForwardWorkaround(_)) => {
            // The firmware said this workaround is needed on this PE, and the vCPU owns the
            // PE: run it for the guest with its arguments unchanged (WORKAROUND_2 carries
            // the SSBD on/off request in w1).
            let mut regs = [0u64; 8];
            regs[..4].copy_from_slice(&frame.x[..4]);
            frame.x[0] = arch::smc(regs)[0];
        }
        Route::TrustedOs => {
            if !dom.tee && crate::tee::available() {
                // The domain was not given the TEE (a domU without `xen,tee`, or dom0 with
                // dom0_tee=no): OP-TEE never hears of it.
                guest_warn!(
                    dom,
                    trusted_os,
                    "trusted-OS call {:#x} refused (this domain has no TEE)",
                    call.function_id
                );
                frame.x[0] = NOT_SUPPORTED;
            } else if !crate::tee::call(dom, frame) {
                // No mediator (OP-TEE without NS-virtualization, or absent): a guest never
                // reaches the secure world directly.
                guest_warn!(
                    dom,
                    trusted_os,
                    "trusted-OS call {:#x} refused (no OP-TEE mediator)",
                    call.function_id
                );
                frame.x[0] = NOT_SUPPORTED;
            }
        }
        Route::NotSupported => {
            guest_warn!(
                dom,
                unsupported_call,
                "unsupported SMCCC call {:#x} by {:?}",
                call.function_id,
                conduit
            );
            frame.x[0] = NOT_SUPPORTED;
        }
    }
}

fn psci_call(dom: &'static Domain, vcpu: usize, frame: &mut TrapFrame, call: &Call) {
    let decoded = psci::decode(call);
    let cpu = crate::cpu_index();
    let action = {
        let mut vm = dom.vm.lock();
        let action = psci::decide(&decoded, &vm.psci_view());
        if let Err(e) = vm.apply(vcpu, &action) {
            // The state machine disagrees with the decision: refuse rather than act.
            guest_warn!(dom, psci_refused, "PSCI {decoded:?} refused: {e}");
            frame.x[0] = smccc::ret(psci::DENIED);
            return;
        }
        action
    };
    match action {
        Action::Reply(v) => frame.x[0] = v,
        Action::Standby => {
            // A virtual interrupt already in a list register does not wake a WFI at EL2:
            // only sleep when nothing is pending for this vCPU.
            vdev::flush_lrs(dom, vcpu);
            if !crate::gic::any_lr_pending(crate::list_register_count()) {
                arch::wfi();
            }
            frame.x[0] = 0;
        }
        Action::StartVcpu {
            index,
            entry,
            context_id,
        } => {
            frame.x[0] = crate::start_vcpu(dom, index, entry, context_id);
        }
        Action::StopThisVcpu => crate::stop_this_cpu(dom, cpu),
        // dom0 owns the machine: its SYSTEM_OFF/RESET is the machine's, as in Xen. A
        // domU's ends the domU alone.
        Action::SystemOff if dom.id.0 == 0 => crate::firmware_system(dom, psci::SYSTEM_OFF),
        Action::SystemReset if dom.id.0 == 0 => crate::firmware_system(dom, psci::SYSTEM_RESET),
        Action::SystemOff => crate::domain_stopping(dom, vcpu, cpu, false),
        Action::SystemReset => crate::domain_stopping(dom, vcpu, cpu, true),
    }
}

/// Make the guest take a synchronous exception at EL1, as if the hardware raised it:
/// the syndrome goes to ESR_EL1/FAR_EL1 and the guest resumes at its vector.
fn inject_sync(frame: &mut TrapFrame, esr_el1: u64, far: Option<u64>) {
    const MODE_MASK: u64 = 0xf;
    const EL1H: u64 = 0b0101;
    const EL1T: u64 = 0b0100;
    /// SPSR.M[4]: the interrupted code was AArch32 (EL0 only: EL1 is AArch64).
    const AARCH32: u64 = 1 << 4;
    /// PSTATE.PAN, which exception entry sets when SCTLR_EL1.SPAN is 0.
    const PAN: u64 = 1 << 22;
    /// SCTLR_EL1.SPAN.
    const SPAN: u64 = 1 << 23;
    let from_el1 = frame.spsr & AARCH32 == 0 && matches!(frame.spsr & MODE_MASK, EL1H | EL1T);
    let offset = if frame.spsr & AARCH32 != 0 {
        0x600
    } else {
        match frame.spsr & MODE_MASK {
            EL1H => 0x200,
            EL1T => 0x000,
            _ => 0x400,
        }
    };
    let ec_adjust = if from_el1 { 1 } else { 0 };
    let esr_el1 = if (esr_el1 >> 26) == 0x20 || (esr_el1 >> 26) == 0x24 {
        esr_el1.wrapping_add(ec_adjust << 26)
    } else {
        esr_el1
    };
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    ESR_EL1.set(esr_el1);
    if let Some(f) = far {
        FAR_EL1.set(f);
    }
    frame.elr = VBAR_EL1.get().wrapping_add(offset);
    frame.spsr = crate::arch::regs::SPSR_EL1H_MASKED;
    let sctlr_el1: u64;
    // SAFETY: reading the guest's SCTLR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, sctlr_el1", out(reg) sctlr_el1, options(nomem, nostack)) };
    // SPAN reads 0 only where FEAT_PAN exists (it is RES1 otherwise).
    if sctlr_el1 & SPAN == 0 {
        frame.spsr |= PAN;
    }
}

/// IL bit: a 32-bit instruction.
const ESR_IL: u64 = 1 << 25;
/// DFSC/IFSC: synchronous external abort, not on a table walk.
const FSC_SYNC_EXTERNAL: u64 = 0x10;

fn inject_undef(frame: &mut TrapFrame) {
    inject_sync(frame, ESR_IL, None);
}

/// A guest exited to EL2 synchronously.
#[no_mangle]
extern "C" fn moat_lower_sync(frame: &mut TrapFrame) {
    let (dom, vcpu) = crate::current();
    let esr_raw = ESR_EL2.get();
    let esr_copy = esr::EsrEl2::new(esr_raw);
    match esr::decode(esr_copy) {
        Exit::Hvc64 { imm16: 0 } | Exit::Hvc32 { imm16: 0 } => {
            smccc_call(dom, vcpu, frame, Conduit::Hvc)
        }
        Exit::Hvc64 { imm16 } | Exit::Hvc32 { imm16 } => {
            guest_warn!(dom, unknown_hvc, "hvc #{imm16:#x} is not a moat call");
            frame.x[0] = NOT_SUPPORTED;
        }
        Exit::Smc64 { .. } | Exit::Smc32 => {
            smccc_call(dom, vcpu, frame, Conduit::Smc);
            // A trapped SMC reports the SMC itself as the return address.
            frame.elr = frame.elr.wrapping_add(esr::instruction_len(esr_copy));
        }
        Exit::Wfx(kind) => {
            if matches!(kind, Wfx::Wfi | Wfx::Wfit) {
                arch::wfi();
            }
            frame.elr = frame.elr.wrapping_add(esr::instruction_len(esr_copy));
        }
        Exit::SysReg {
            reg,
            access: SysRegAccess::Write,
            rt,
        } if reg == SysReg::ICC_SGI1R_EL1 => {
            let value = if rt == 31 { 0 } else { frame.x[rt as usize] };
            vdev::sgi(dom, vcpu, value);
            frame.elr = frame.elr.wrapping_add(esr::instruction_len(esr_copy));
        }
        Exit::SysReg { reg, access, .. } => {
            guest_warn!(
                dom,
                sysreg,
                "{access:?} of {reg:?} at {:#x}: UNDEF injected",
                frame.elr
            );
            inject_undef(frame);
        }
        Exit::DataAbort(da) => {
            let hpfar = HPFAR_EL2.get();
            let far = FAR_EL2.get();
            if let Ok(access) = mmio::decode(&da, mmio::HpfarEl2::new(hpfar), far) {
                match vdev::mmio(dom, frame, &access) {
                    vdev::Emulated::Done => {
                        frame.elr = frame.elr.wrapping_add(esr::instruction_len(esr_copy));
                        vdev::flush_lrs(dom, vcpu);
                        return;
                    }
                    vdev::Emulated::Refused => {
                        // A reserved offset, or a width the register does not take: RAZ/WI,
                        // as the GIC architecture (reserved and unsupported accesses) and
                        // the PL011 give, never an abort a driver does not expect.
                        guest_warn!(
                            dom,
                            abort,
                            "{:?} refused by the emulated device: read as zero, write ignored",
                            access
                        );
                        if access.dir == mmio::Direction::Read {
                            if let Some((i, v)) = access.complete_read(0) {
                                frame.x[i as usize] = v;
                            }
                        }
                        frame.elr = frame.elr.wrapping_add(esr::instruction_len(esr_copy));
                        return;
                    }
                    vdev::Emulated::NotMine => {}
                }
            }
            // Nothing is behind this IPA (or the device refused the access). Answer as
            // the bus would: a synchronous external abort.
            let ipa = (hpfar & 0x0fff_ffff_fff0) << 8 | (far & 0xfff);
            guest_warn!(
                dom,
                abort,
                "{} of unmapped IPA {:?} at {:#x}: abort injected",
                if da.write { "write" } else { "read" },
                Ipa(ipa),
                frame.elr
            );
            let wnr = if da.write { 1 << 6 } else { 0 };
            inject_sync(
                frame,
                (0x24 << 26) | ESR_IL | wnr | FSC_SYNC_EXTERNAL,
                Some(FAR_EL2.get()),
            );
        }
        Exit::InstrAbort(_) => {
            let ipa = (HPFAR_EL2.get() & 0x0fff_ffff_fff0) << 8 | (FAR_EL2.get() & 0xfff);
            guest_warn!(
                dom,
                abort,
                "instruction fetch from unmapped IPA {:?} at {:#x}: abort injected",
                Ipa(ipa),
                frame.elr
            );
            inject_sync(
                frame,
                (0x20 << 26) | ESR_IL | FSC_SYNC_EXTERNAL,
                Some(FAR_EL2.get()),
            );
        }
        Exit::Unknown { ec, iss } => {
            guest_warn!(
                dom,
                unknown_exit,
                "unhandled exit EC {ec:#x} ISS {iss:#x} at {:#x}: UNDEF injected",
                frame.elr
            );
            inject_undef(frame);
        }
    }
    crate::stop_if_dying(dom, vcpu);
    vdev::flush_lrs(dom, vcpu);
}

/// A physical IRQ while a guest ran (HCR_EL2.IMO = 1 routes them all to moat).
#[no_mangle]
extern "C" fn moat_lower_irq(_frame: &mut TrapFrame) {
    let (dom, vcpu) = crate::current();
    vdev::irq(dom, vcpu);
    crate::stop_if_dying(dom, vcpu);
    vdev::flush_lrs(dom, vcpu);
}

/// A Non-secure FIQ while a guest ran (HCR_EL2.FMO = 1). None is expected: secure-world
/// interrupts go to EL3, and moat gives guests no virtual FIQs. Ignore it, boundedly loud.
#[no_mangle]
extern "C" fn moat_lower_fiq(_frame: &mut TrapFrame) {
    let (dom, _) = crate::current();
    guest_warn!(dom, fiq, "unexpected FIQ at EL2, ignored");
}

#[no_mangle]
extern "C" fn moat_lower_serror(frame: &mut TrapFrame) {
    panic!(
        "SError from the guest at {:#x}, ESR {:#x}",
        frame.elr,
        ESR_EL2.get()
    );
}

#[no_mangle]
extern "C" fn moat_lower_unexpected(frame: &mut TrapFrame) {
    panic!(
        "unexpected exception from the guest at {:#x}, ESR {:#x}",
        frame.elr,
        ESR_EL2.get()
    );
}

#[no_mangle]
extern "C" fn moat_el2_sync(frame: &mut TrapFrame) {
    panic!(
        "fault in moat at {:#x}: ESR {:#x} FAR {:#x}",
        frame.elr,
        ESR_EL2.get(),
        FAR_EL2.get()
    );
}

#[no_mangle]
extern "C" fn moat_el2_serror(frame: &mut TrapFrame) {
    panic!(
        "SError in moat at {:#x}, ESR {:#x}",
        frame.elr,
        ESR_EL2.get()
    );
}

#[no_mangle]
extern "C" fn moat_el2_unexpected(frame: &mut TrapFrame) {
    panic!(
        "unexpected exception in moat at {:#x}, ESR {:#x}",
        frame.elr,
        ESR_EL2.get()
    );
}
