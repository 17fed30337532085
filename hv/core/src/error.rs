// SPDX-License-Identifier: MIT OR Apache-2.0
//! The one error enum of hv-core.
//!
//! Every fallible function in this crate returns `Result<_, Error>`. These are *hypervisor*
//! errors: they tell the caller in `hv` what went wrong so it can pick the guest-visible
//! outcome (inject an abort, return a PSCI/SMCCC code, refuse a domain). They are kept apart
//! from the result codes a guest sees, which live next to their protocol (`smccc`, `psci`).
//!
//! Variants are grouped by the module that produces them and carry the numbers needed to
//! explain the failure in a log line.

use core::fmt;

use crate::addr::{Ipa, PhysAddr};
use crate::esr::FaultStatus;
use crate::vm::{VcpuEvent, VcpuState, VmEvent, VmState};

/// Everything that can go wrong in hv-core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    // ---- mmio -------------------------------------------------------------------------
    /// The data abort has ISV == 0: the hardware gave no instruction syndrome (for example
    /// a load/store pair or writeback form), so the access cannot be emulated. The
    /// hypervisor injects an abort into the guest.
    MmioNoSyndrome,
    /// FAR_EL2 is not valid (ESR.FnV == 1), so the offset inside the page is unknown.
    MmioFarNotValid,
    /// The abort happened on a stage-1 page-table walk (S1PTW == 1): the guest put its page
    /// tables in emulated MMIO, which is not an access to emulate.
    MmioStage1Walk,
    /// The abort came from a cache-maintenance or address-translation instruction (CM == 1),
    /// not from a load or store.
    MmioCacheMaintenance,
    /// The fault is not a stage-2 translation or access-flag fault, so HPFAR_EL2 may be
    /// UNKNOWN (it is, for example, for permission faults) and the IPA cannot be trusted.
    MmioHpfarNotValid {
        /// The fault status the abort reported.
        fault: FaultStatus,
    },

    // ---- stage2 -----------------------------------------------------------------------
    /// `ID_AA64MMFR0_EL1.PARange` holds an encoding moat does not know.
    Stage2UnsupportedPaRange {
        /// The raw PARange field value.
        pa_range: u8,
    },
    /// The requested IPA size is outside 32..=48 bits or larger than the PA size.
    Stage2UnsupportedIpaBits {
        /// The requested IPA size in bits.
        ipa_bits: u32,
    },
    /// A range bound or output address that must be 4 KiB aligned is not.
    Stage2Misaligned {
        /// The offending IPA (start or end of the range).
        ipa: Ipa,
        /// The offending output address.
        pa: PhysAddr,
    },
    /// The range to map or unmap is empty (`end <= start`).
    Stage2EmptyRange {
        /// Start of the range.
        ipa: Ipa,
    },
    /// The frame allocator returned a frame that is not 4 KiB aligned or lies beyond the
    /// PA size the hardware walks with, so it cannot hold a translation table.
    Stage2BadFrame {
        /// The frame's address.
        pa: PhysAddr,
    },
    /// The IPA range reaches beyond the configured IPA size.
    Stage2IpaOutOfRange {
        /// First IPA that is out of range (or the start, if the range wraps).
        ipa: Ipa,
    },
    /// The output range lies beyond the PA size the hardware walks with (VTCR_EL2.PS), or
    /// wraps.
    Stage2PaOutOfRange {
        /// The offending physical address.
        pa: PhysAddr,
    },
    /// Part of the range to map is already mapped.
    Stage2Overlap {
        /// First IPA found already mapped.
        ipa: Ipa,
    },
    /// The frame allocator returned `None`.
    Stage2OutOfFrames,
    /// A descriptor in the tables has an encoding this builder never writes (a hypervisor
    /// bug or memory corruption; reported, never panicked on).
    Stage2CorruptDescriptor {
        /// An IPA covered by the bad descriptor.
        ipa: Ipa,
        /// Lookup level of the bad descriptor.
        level: u8,
        /// The raw descriptor.
        raw: u64,
    },

    // ---- vm ---------------------------------------------------------------------------
    /// A vCPU state machine was asked for a transition it does not have.
    VcpuTransition {
        /// vCPU index inside its VM.
        vcpu: usize,
        /// State the vCPU was in.
        from: VcpuState,
        /// The refused event.
        event: VcpuEvent,
    },
    /// A VM state machine was asked for a transition it does not have.
    VmTransition {
        /// State the VM was in.
        from: VmState,
        /// The refused event.
        event: VmEvent,
    },
    /// A vCPU index is not in the VM's table.
    NoSuchVcpu {
        /// The index asked for.
        vcpu: usize,
        /// How many vCPUs the VM has.
        count: usize,
    },
    /// A domain asks for more vCPUs than there are free physical CPUs.
    NotEnoughPcpus {
        /// vCPUs the domain asked for.
        requested: usize,
        /// Physical CPUs still free.
        free: usize,
        /// Physical CPUs already pinned to other domains.
        assigned: usize,
        /// Physical CPUs in the system.
        total: usize,
    },
    /// A domain pins a vCPU to a physical CPU that does not exist.
    NoSuchPcpu {
        /// The requested physical CPU.
        pcpu: usize,
        /// Physical CPUs in the system.
        total: usize,
    },
    /// A domain pins a vCPU to a physical CPU that is already taken (by another domain, or
    /// by another vCPU of the same domain).
    PcpuTaken {
        /// The requested physical CPU.
        pcpu: usize,
        /// The domain that already owns it.
        owner: u16,
    },
    /// A domain asks for zero vCPUs, or more than `vm::MAX_VCPUS_PER_VM`.
    BadVcpuCount {
        /// vCPUs the domain asked for.
        requested: usize,
        /// The limit.
        max: usize,
    },

    // ---- fdt, bootcfg, dom0dt, domu, domudt, vgic, vpl011, console --------------------
    /// A device tree could not be read or written.
    Fdt(crate::fdt::FdtError),
    /// The host DT does not describe a usable boot configuration.
    BootCfg(crate::bootcfg::BootCfgError),
    /// Dom0's DT could not be derived from the host DT.
    Dom0Dt(crate::dom0dt::Dom0DtError),
    /// A dom0less domU cannot be planned (placement, pCPUs, RAM, TEE slots).
    DomU(crate::domu::PlanError),
    /// A domU's DT could not be written.
    DomUDt(crate::domudt::DomUDtError),
    /// A guest access to the virtual GIC could not be emulated: inject an abort.
    Vgic(crate::vgic::VgicError),
    /// A guest access to an emulated PL011 could not be emulated: inject an abort.
    Vpl011(crate::vpl011::Vpl011Error),
    /// The console multiplexer refused a configuration change.
    Console(crate::console::ConsoleError),
}

impl fmt::Display for Error {
    // Why Debug: the variant name plus its named fields is the clearest log line, and it
    // keeps working when other modules add variants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
