// SPDX-License-Identifier: MIT OR Apache-2.0
//! VM and vCPU state machines, and the static CPU partition.
//!
//! moat partitions statically: every vCPU is pinned to its own physical CPU for the life
//! of its domain, and no two vCPUs (of any domains) share one. [`CpuPartition`] hands out
//! physical CPUs and refuses requests that do not fit.
//!
//! ```text
//!  vCPU:   Off ──CpuOn{entry,ctx}──▶ OnPending ──Enter──▶ Running ──CpuOff──▶ Off
//!           │                          │                     │
//!           └──────────── Stop ────────┴──────── Stop ───────┴──▶ Stopped (terminal)
//!
//!  VM:     Created ──Start──▶ Running ──SystemOff/SystemReset──▶ ShuttingDown
//!             │                                                      │ AllVcpusStopped
//!             └────────────────── Destroy ─────────────────▶ Destroyed ◀┘
//! ```
//!
//! Every refused transition is an [`Error`], never a panic: the events come from guest
//! PSCI calls.
//!
//! A reset (SYSTEM_RESET) is a shutdown followed by the caller building the domain again;
//! this module only records which of the two the guest asked for.

use alloc::vec::Vec;

use crate::addr::{Ipa, Range};
use crate::error::Error;
use crate::psci::{Action, VmView};

/// Most vCPUs one VM may have. Bounds the per-VM tables a domain configuration can make
/// the hypervisor allocate; with static partitioning it is also bounded by the pCPU count.
pub const MAX_VCPUS_PER_VM: usize = 64;

/// vCPUs per virtual cluster (Aff1 value). 16 because a GICv3 `ICC_SGI1R_EL1` write can
/// target Aff0 values 0..=15 only: with clusters of 16 a guest reaches any vCPU of a
/// cluster with one SGI write. Xen uses the same layout.
pub const VCPUS_PER_CLUSTER: usize = 16;

/// Identifies a domain (0 is dom0, as in Xen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

/// Power state of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Powered off; CPU_ON may start it.
    Off,
    /// CPU_ON accepted; its physical CPU has not entered it yet.
    OnPending {
        /// Where it starts.
        entry: Ipa,
        /// X0 at the entry point.
        context_id: u64,
    },
    /// Running (or runnable) on its physical CPU.
    Running,
    /// The VM is going away; terminal.
    Stopped,
}

/// An event on a vCPU state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// PSCI CPU_ON accepted for this vCPU (or the boot vCPU being armed).
    CpuOn {
        /// Entry point.
        entry: Ipa,
        /// X0 at the entry point.
        context_id: u64,
    },
    /// Its physical CPU loaded the entry context and enters the guest.
    Enter,
    /// PSCI CPU_OFF by this vCPU.
    CpuOff,
    /// The firmware could not start the physical CPU of an accepted CPU_ON: back to Off,
    /// so the guest may try again.
    StartFailed,
    /// The VM is shutting down.
    Stop,
}

/// Why a VM is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownKind {
    /// SYSTEM_OFF: destroy the domain.
    PowerOff,
    /// SYSTEM_RESET: destroy and rebuild the domain.
    Reset,
}

/// Life-cycle state of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Built, not started.
    Created,
    /// Its boot vCPU was started.
    Running,
    /// SYSTEM_OFF/RESET seen; waiting for every vCPU to stop.
    ShuttingDown(ShutdownKind),
    /// All vCPUs stopped; its resources can be released.
    Destroyed,
}

/// An event on a VM state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// Start the boot vCPU.
    Start,
    /// A vCPU asked for SYSTEM_OFF or SYSTEM_RESET.
    Shutdown(ShutdownKind),
    /// The last vCPU stopped.
    AllVcpusStopped,
    /// Drop a VM that never started (for example, building it failed half-way).
    Destroy,
    /// A vCPU power change (CPU_ON, CPU_OFF, entering a vCPU); only legal while Running.
    VcpuPower,
}

/// One vCPU of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vcpu {
    /// Its virtual MPIDR affinity value (Aff3..Aff0 only, as PSCI takes it).
    pub mpidr: u64,
    /// The physical CPU it is pinned to (index into the system's CPU list).
    pub pcpu: usize,
    /// Power state.
    pub state: VcpuState,
}

/// A VM: its vCPUs, RAM layout and life-cycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    id: DomainId,
    state: VmState,
    vcpus: Vec<Vcpu>,
    ram: Vec<Range<Ipa>>,
}

/// The static assignment of physical CPUs to domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPartition {
    /// Index = physical CPU, value = owning domain.
    owners: Vec<Option<DomainId>>,
}

/// The virtual MPIDR affinity value of vCPU `index`: Aff0 = index % 16, Aff1 = index / 16
/// (see [`VCPUS_PER_CLUSTER`]). Aff2 carries the overflow, which needs more than 4096
/// vCPUs and so never happens under [`MAX_VCPUS_PER_VM`].
pub const fn vcpu_mpidr(index: usize) -> u64 {
    let aff0 = (index % VCPUS_PER_CLUSTER) as u64;
    let aff1 = ((index / VCPUS_PER_CLUSTER) & 0xff) as u64;
    let aff2 = ((index / VCPUS_PER_CLUSTER / 256) & 0xff) as u64;
    (aff2 << 16) | (aff1 << 8) | aff0
}

/// The VMPIDR_EL2 value for vCPU `index`: its affinity plus bit 31, which is RES1 in
/// MPIDR_EL1 (Arm ARM D24.2), and U (bit 30) = 0: part of a multiprocessor system.
pub const fn vmpidr_el2(index: usize) -> u64 {
    vcpu_mpidr(index) | (1 << 31)
}

impl VcpuState {
    /// The state after `event`, or `None` if the machine has no such transition.
    pub const fn next(self, event: VcpuEvent) -> Option<Self> {
        match (self, event) {
            (Self::Off, VcpuEvent::CpuOn { entry, context_id }) => {
                Some(Self::OnPending { entry, context_id })
            }
            (Self::OnPending { .. }, VcpuEvent::Enter) => Some(Self::Running),
            (Self::OnPending { .. }, VcpuEvent::StartFailed) => Some(Self::Off),
            (Self::Running, VcpuEvent::CpuOff) => Some(Self::Off),
            (Self::Off | Self::OnPending { .. } | Self::Running, VcpuEvent::Stop) => {
                Some(Self::Stopped)
            }
            _ => None,
        }
    }
}

impl VmState {
    /// The state after `event`, or `None` if the machine has no such transition.
    pub const fn next(self, event: VmEvent) -> Option<Self> {
        match (self, event) {
            (Self::Created, VmEvent::Start) => Some(Self::Running),
            (Self::Created, VmEvent::Destroy) => Some(Self::Destroyed),
            (Self::Running, VmEvent::Shutdown(kind)) => Some(Self::ShuttingDown(kind)),
            (Self::Running, VmEvent::VcpuPower) => Some(Self::Running),
            (Self::ShuttingDown(_), VmEvent::AllVcpusStopped) => Some(Self::Destroyed),
            _ => None,
        }
    }
}

impl Vm {
    /// A VM in state `Created` with one vCPU per entry of `pcpus` (all Off), pinned in
    /// order, and the given RAM ranges. Use [`CpuPartition`] to obtain `pcpus`.
    pub fn new(id: DomainId, pcpus: &[usize], ram: &[Range<Ipa>]) -> Result<Self, Error> {
        if pcpus.is_empty() || pcpus.len() > MAX_VCPUS_PER_VM {
            return Err(Error::BadVcpuCount {
                requested: pcpus.len(),
                max: MAX_VCPUS_PER_VM,
            });
        }
        let vcpus = pcpus
            .iter()
            .enumerate()
            .map(|(i, &pcpu)| Vcpu {
                mpidr: vcpu_mpidr(i),
                pcpu,
                state: VcpuState::Off,
            })
            .collect();
        Ok(Self {
            id,
            state: VmState::Created,
            vcpus,
            ram: ram.to_vec(),
        })
    }

    /// The domain ID.
    pub const fn id(&self) -> DomainId {
        self.id
    }
    /// The life-cycle state.
    pub const fn state(&self) -> VmState {
        self.state
    }
    /// The vCPU table.
    pub fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }
    /// The RAM ranges.
    pub fn ram(&self) -> &[Range<Ipa>] {
        &self.ram
    }
    /// The view the PSCI policy needs.
    pub fn psci_view(&self) -> VmView<'_> {
        VmView {
            vcpus: &self.vcpus,
            ram: &self.ram,
        }
    }

    /// Start the VM: vCPU 0 becomes OnPending at `entry` with X0 = `x0` (for Linux, the
    /// device-tree IPA).
    pub fn start(&mut self, entry: Ipa, x0: u64) -> Result<(), Error> {
        let next = self.vm_next(VmEvent::Start)?;
        self.vcpu_event(
            0,
            VcpuEvent::CpuOn {
                entry,
                context_id: x0,
            },
        )?;
        self.state = next;
        Ok(())
    }

    /// vCPU `index`'s physical CPU is entering it for the first time since CPU_ON: returns
    /// the entry point and X0 to load, and marks it Running.
    pub fn enter(&mut self, index: usize) -> Result<(Ipa, u64), Error> {
        self.vm_next(VmEvent::VcpuPower)?;
        let vcpu = self.vcpu(index)?;
        let VcpuState::OnPending { entry, context_id } = vcpu.state else {
            return Err(Error::VcpuTransition {
                vcpu: index,
                from: vcpu.state,
                event: VcpuEvent::Enter,
            });
        };
        self.vcpu_event(index, VcpuEvent::Enter)?;
        Ok((entry, context_id))
    }

    /// Record the effect of a PSCI [`Action`] decided for vCPU `caller`.
    ///
    /// For `SystemOff`/`SystemReset` the VM goes to ShuttingDown, the caller and every
    /// vCPU that is not running are Stopped at once; the effect crate must then stop the
    /// other running vCPUs and report each with [`Vm::vcpu_stopped`].
    ///
    /// Hold the VM's lock from `psci::decide` to here: if another vCPU changed the target's
    /// state in between, the transition is refused with an error instead.
    pub fn apply(&mut self, caller: usize, action: &Action) -> Result<(), Error> {
        self.vcpu(caller)?;
        match *action {
            Action::Reply(_) | Action::Standby => Ok(()),
            Action::StartVcpu {
                index,
                entry,
                context_id,
            } => {
                self.vm_next(VmEvent::VcpuPower)?;
                self.vcpu_event(index, VcpuEvent::CpuOn { entry, context_id })
            }
            Action::StopThisVcpu => {
                self.vm_next(VmEvent::VcpuPower)?;
                self.vcpu_event(caller, VcpuEvent::CpuOff)
            }
            Action::SystemOff => self.shutdown(caller, ShutdownKind::PowerOff),
            Action::SystemReset => self.shutdown(caller, ShutdownKind::Reset),
        }
    }

    /// A running vCPU of a shutting-down VM has been stopped on its physical CPU. When it
    /// is the last one, the VM becomes Destroyed.
    pub fn vcpu_stopped(&mut self, index: usize) -> Result<(), Error> {
        if !matches!(self.state, VmState::ShuttingDown(_)) {
            return Err(Error::VmTransition {
                from: self.state,
                event: VmEvent::AllVcpusStopped,
            });
        }
        self.vcpu_event(index, VcpuEvent::Stop)?;
        self.finish_if_all_stopped()
    }

    /// The firmware refused to start vCPU `index`'s physical CPU after CPU_ON was
    /// accepted: the vCPU goes back to Off.
    pub fn start_failed(&mut self, index: usize) -> Result<(), Error> {
        self.vm_next(VmEvent::VcpuPower)?;
        self.vcpu_event(index, VcpuEvent::StartFailed)
    }

    /// Drop a VM that never started.
    pub fn destroy_unstarted(&mut self) -> Result<(), Error> {
        self.state = self.vm_next(VmEvent::Destroy)?;
        Ok(())
    }

    fn shutdown(&mut self, caller: usize, kind: ShutdownKind) -> Result<(), Error> {
        self.state = self.vm_next(VmEvent::Shutdown(kind))?;
        for (i, vcpu) in self.vcpus.iter_mut().enumerate() {
            // Running vCPUs other than the caller are still executing on their pCPUs;
            // they stop when the effect crate reports them.
            if i == caller || vcpu.state != VcpuState::Running {
                // Every state but Stopped accepts Stop, and nothing is Stopped while the
                // VM was Running; keep the error path anyway rather than assume.
                vcpu.state = vcpu
                    .state
                    .next(VcpuEvent::Stop)
                    .ok_or(Error::VcpuTransition {
                        vcpu: i,
                        from: vcpu.state,
                        event: VcpuEvent::Stop,
                    })?;
            }
        }
        self.finish_if_all_stopped()
    }

    fn finish_if_all_stopped(&mut self) -> Result<(), Error> {
        if self.vcpus.iter().all(|v| v.state == VcpuState::Stopped) {
            self.state = self.vm_next(VmEvent::AllVcpusStopped)?;
        }
        Ok(())
    }

    fn vm_next(&self, event: VmEvent) -> Result<VmState, Error> {
        self.state.next(event).ok_or(Error::VmTransition {
            from: self.state,
            event,
        })
    }

    fn vcpu(&self, index: usize) -> Result<&Vcpu, Error> {
        self.vcpus.get(index).ok_or(Error::NoSuchVcpu {
            vcpu: index,
            count: self.vcpus.len(),
        })
    }

    fn vcpu_event(&mut self, index: usize, event: VcpuEvent) -> Result<(), Error> {
        let count = self.vcpus.len();
        let vcpu = self
            .vcpus
            .get_mut(index)
            .ok_or(Error::NoSuchVcpu { vcpu: index, count })?;
        vcpu.state = vcpu.state.next(event).ok_or(Error::VcpuTransition {
            vcpu: index,
            from: vcpu.state,
            event,
        })?;
        Ok(())
    }
}

impl CpuPartition {
    /// A partition of `total` physical CPUs, all free.
    pub fn new(total: usize) -> Self {
        Self {
            owners: alloc::vec![None; total],
        }
    }
    /// Physical CPUs in the system.
    pub fn total(&self) -> usize {
        self.owners.len()
    }
    /// Physical CPUs already pinned to a domain.
    pub fn assigned(&self) -> usize {
        self.owners.iter().filter(|o| o.is_some()).count()
    }
    /// Physical CPUs still free.
    pub fn free(&self) -> usize {
        self.total() - self.assigned()
    }
    /// The domain physical CPU `pcpu` belongs to.
    pub fn owner(&self, pcpu: usize) -> Option<DomainId> {
        self.owners.get(pcpu).copied().flatten()
    }

    /// Give `domain` `vcpus` physical CPUs, lowest free first; returns them in vCPU order.
    /// Nothing changes on error.
    pub fn assign(&mut self, domain: DomainId, vcpus: usize) -> Result<Vec<usize>, Error> {
        if vcpus == 0 || vcpus > MAX_VCPUS_PER_VM {
            return Err(Error::BadVcpuCount {
                requested: vcpus,
                max: MAX_VCPUS_PER_VM,
            });
        }
        if vcpus > self.free() {
            return Err(Error::NotEnoughPcpus {
                requested: vcpus,
                free: self.free(),
                assigned: self.assigned(),
                total: self.total(),
            });
        }
        let picked: Vec<usize> = self
            .owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
            .take(vcpus)
            .collect();
        for &p in &picked {
            self.owners[p] = Some(domain);
        }
        Ok(picked)
    }

    /// Give `domain` exactly the physical CPUs in `pins` (vCPU i runs on `pins[i]`).
    /// Every pin is checked before any is recorded, so nothing changes on error.
    pub fn assign_pinned(&mut self, domain: DomainId, pins: &[usize]) -> Result<(), Error> {
        if pins.is_empty() || pins.len() > MAX_VCPUS_PER_VM {
            return Err(Error::BadVcpuCount {
                requested: pins.len(),
                max: MAX_VCPUS_PER_VM,
            });
        }
        if pins.len() > self.free() {
            return Err(Error::NotEnoughPcpus {
                requested: pins.len(),
                free: self.free(),
                assigned: self.assigned(),
                total: self.total(),
            });
        }
        for (i, &pcpu) in pins.iter().enumerate() {
            match self.owners.get(pcpu) {
                None => {
                    return Err(Error::NoSuchPcpu {
                        pcpu,
                        total: self.total(),
                    })
                }
                Some(Some(owner)) => {
                    return Err(Error::PcpuTaken {
                        pcpu,
                        owner: owner.0,
                    })
                }
                Some(None) if pins[..i].contains(&pcpu) => {
                    return Err(Error::PcpuTaken {
                        pcpu,
                        owner: domain.0,
                    })
                }
                Some(None) => {}
            }
        }
        for &pcpu in pins {
            self.owners[pcpu] = Some(domain);
        }
        Ok(())
    }

    /// Free every physical CPU of `domain` (after it is Destroyed).
    pub fn release(&mut self, domain: DomainId) {
        for o in &mut self.owners {
            if *o == Some(domain) {
                *o = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psci::{self, PsciCall};

    const RAM: [Range<Ipa>; 1] = [Range {
        start: Ipa(0x4000_0000),
        end: Ipa(0x8000_0000),
    }];

    fn vm(n: usize) -> Vm {
        let pcpus: Vec<usize> = (0..n).map(|i| 7 - i).collect();
        Vm::new(DomainId(1), &pcpus, &RAM).unwrap()
    }

    fn decide(vm: &Vm, call: PsciCall) -> Action {
        psci::decide(&call, &vm.psci_view())
    }

    #[test]
    fn mpidr_layout() {
        assert_eq!(vcpu_mpidr(0), 0);
        assert_eq!(vcpu_mpidr(15), 0x0f);
        assert_eq!(vcpu_mpidr(16), 0x100);
        assert_eq!(vcpu_mpidr(33), 0x201);
        assert_eq!(vmpidr_el2(1), 0x8000_0001);
        let v = vm(3);
        assert_eq!(v.vcpus()[2].mpidr, 2);
        assert_eq!(v.vcpus()[2].pcpu, 5);
    }

    #[test]
    fn vcpu_transitions() {
        let on = VcpuEvent::CpuOn {
            entry: Ipa(0x4000_0000),
            context_id: 9,
        };
        let pending = VcpuState::OnPending {
            entry: Ipa(0x4000_0000),
            context_id: 9,
        };
        assert_eq!(VcpuState::Off.next(on), Some(pending));
        assert_eq!(pending.next(VcpuEvent::Enter), Some(VcpuState::Running));
        assert_eq!(
            VcpuState::Running.next(VcpuEvent::CpuOff),
            Some(VcpuState::Off)
        );
        for s in [VcpuState::Off, pending, VcpuState::Running] {
            assert_eq!(s.next(VcpuEvent::Stop), Some(VcpuState::Stopped));
        }
        // Refused transitions.
        assert_eq!(VcpuState::Running.next(on), None);
        assert_eq!(pending.next(on), None);
        assert_eq!(VcpuState::Off.next(VcpuEvent::Enter), None);
        assert_eq!(VcpuState::Off.next(VcpuEvent::CpuOff), None);
        assert_eq!(pending.next(VcpuEvent::CpuOff), None);
        for e in [on, VcpuEvent::Enter, VcpuEvent::CpuOff, VcpuEvent::Stop] {
            assert_eq!(VcpuState::Stopped.next(e), None);
        }
    }

    #[test]
    fn vm_transitions() {
        use VmState::*;
        let off = VmEvent::Shutdown(ShutdownKind::PowerOff);
        assert_eq!(Created.next(VmEvent::Start), Some(Running));
        assert_eq!(Created.next(VmEvent::Destroy), Some(Destroyed));
        assert_eq!(
            Running.next(off),
            Some(ShuttingDown(ShutdownKind::PowerOff))
        );
        assert_eq!(
            ShuttingDown(ShutdownKind::Reset).next(VmEvent::AllVcpusStopped),
            Some(Destroyed)
        );
        assert_eq!(Created.next(off), None);
        assert_eq!(Created.next(VmEvent::VcpuPower), None);
        assert_eq!(Running.next(VmEvent::Start), None);
        assert_eq!(Running.next(VmEvent::Destroy), None);
        assert_eq!(ShuttingDown(ShutdownKind::PowerOff).next(off), None);
        assert_eq!(
            ShuttingDown(ShutdownKind::PowerOff).next(VmEvent::VcpuPower),
            None
        );
        assert_eq!(Destroyed.next(VmEvent::Start), None);
    }

    #[test]
    fn boot_and_secondary_cpu_on_then_off() {
        let mut v = vm(2);
        v.start(Ipa(0x4008_0000), 0x4800_0000).unwrap();
        assert_eq!(v.state(), VmState::Running);
        assert_eq!(v.enter(0), Ok((Ipa(0x4008_0000), 0x4800_0000)));
        // Entering again is refused.
        assert!(matches!(
            v.enter(0),
            Err(Error::VcpuTransition { vcpu: 0, .. })
        ));

        // vCPU 0 does CPU_ON(1).
        let a = decide(
            &v,
            PsciCall::CpuOn {
                target: 1,
                entry: Ipa(0x4009_0000),
                context_id: 5,
            },
        );
        v.apply(0, &a).unwrap();
        assert_eq!(
            v.vcpus()[1].state,
            VcpuState::OnPending {
                entry: Ipa(0x4009_0000),
                context_id: 5
            }
        );
        // AFFINITY_INFO now reports ON_PENDING; a second CPU_ON is refused by policy.
        assert_eq!(
            decide(
                &v,
                PsciCall::AffinityInfo {
                    target: 1,
                    lowest_level: 0
                }
            ),
            Action::Reply(2)
        );
        assert_eq!(
            decide(
                &v,
                PsciCall::CpuOn {
                    target: 1,
                    entry: Ipa(0x4009_0000),
                    context_id: 5
                }
            ),
            Action::Reply(crate::smccc::ret(psci::ON_PENDING))
        );
        assert_eq!(v.enter(1), Ok((Ipa(0x4009_0000), 5)));
        assert_eq!(
            decide(
                &v,
                PsciCall::AffinityInfo {
                    target: 1,
                    lowest_level: 0
                }
            ),
            Action::Reply(0)
        );
        // vCPU 1 does CPU_OFF.
        let a = decide(&v, PsciCall::CpuOff);
        v.apply(1, &a).unwrap();
        assert_eq!(v.vcpus()[1].state, VcpuState::Off);
        assert_eq!(
            decide(
                &v,
                PsciCall::AffinityInfo {
                    target: 1,
                    lowest_level: 0
                }
            ),
            Action::Reply(1)
        );
        // CPU_OFF from an Off vCPU (a confused caller index) is an error, not a panic.
        assert_eq!(
            v.apply(1, &Action::StopThisVcpu),
            Err(Error::VcpuTransition {
                vcpu: 1,
                from: VcpuState::Off,
                event: VcpuEvent::CpuOff
            })
        );
    }

    #[test]
    fn system_off_stops_everything() {
        let mut v = vm(3);
        v.start(Ipa(0x4008_0000), 0).unwrap();
        v.enter(0).unwrap();
        v.apply(
            0,
            &Action::StartVcpu {
                index: 1,
                entry: Ipa(0x4008_0000),
                context_id: 0,
            },
        )
        .unwrap();
        v.enter(1).unwrap();
        // vCPU 1 asks SYSTEM_OFF; vCPU 0 is still running elsewhere, vCPU 2 is Off.
        v.apply(1, &Action::SystemOff).unwrap();
        assert_eq!(v.state(), VmState::ShuttingDown(ShutdownKind::PowerOff));
        assert_eq!(v.vcpus()[1].state, VcpuState::Stopped);
        assert_eq!(v.vcpus()[2].state, VcpuState::Stopped);
        assert_eq!(v.vcpus()[0].state, VcpuState::Running);
        // Power changes are refused while shutting down.
        assert_eq!(
            v.apply(0, &Action::StopThisVcpu),
            Err(Error::VmTransition {
                from: VmState::ShuttingDown(ShutdownKind::PowerOff),
                event: VmEvent::VcpuPower
            })
        );
        v.vcpu_stopped(0).unwrap();
        assert_eq!(v.state(), VmState::Destroyed);
        // Stopping again is refused.
        assert!(v.vcpu_stopped(0).is_err());
    }

    #[test]
    fn single_vcpu_reset_destroys_at_once() {
        let mut v = vm(1);
        v.start(Ipa(0x4008_0000), 0).unwrap();
        v.enter(0).unwrap();
        v.apply(0, &Action::SystemReset).unwrap();
        assert_eq!(v.state(), VmState::Destroyed);
    }

    #[test]
    fn invalid_vm_operations() {
        let mut v = vm(2);
        // Not started yet.
        assert!(matches!(v.enter(0), Err(Error::VmTransition { .. })));
        assert!(matches!(
            v.apply(0, &Action::SystemOff),
            Err(Error::VmTransition { .. })
        ));
        assert!(matches!(v.vcpu_stopped(0), Err(Error::VmTransition { .. })));
        assert_eq!(
            v.apply(5, &Action::Standby),
            Err(Error::NoSuchVcpu { vcpu: 5, count: 2 })
        );
        v.start(Ipa(0x4008_0000), 0).unwrap();
        assert!(matches!(
            v.start(Ipa(0), 0),
            Err(Error::VmTransition { .. })
        ));
        assert!(v.destroy_unstarted().is_err());
        assert_eq!(
            v.apply(
                0,
                &Action::StartVcpu {
                    index: 9,
                    entry: Ipa(0x4008_0000),
                    context_id: 0
                }
            ),
            Err(Error::NoSuchVcpu { vcpu: 9, count: 2 })
        );
        let mut w = vm(1);
        w.destroy_unstarted().unwrap();
        assert_eq!(w.state(), VmState::Destroyed);
        assert_eq!(
            Vm::new(DomainId(3), &[], &RAM),
            Err(Error::BadVcpuCount {
                requested: 0,
                max: MAX_VCPUS_PER_VM
            })
        );
    }

    #[test]
    fn partition_counts_other_domains() {
        let mut p = CpuPartition::new(4);
        assert_eq!(p.assign(DomainId(0), 2), Ok(alloc::vec![0, 1]));
        assert_eq!(
            p.assign(DomainId(1), 3),
            Err(Error::NotEnoughPcpus {
                requested: 3,
                free: 2,
                assigned: 2,
                total: 4
            })
        );
        // Nothing changed on error.
        assert_eq!(p.free(), 2);
        assert_eq!(p.assign(DomainId(1), 2), Ok(alloc::vec![2, 3]));
        assert_eq!(p.owner(3), Some(DomainId(1)));
        assert_eq!(
            p.assign(DomainId(2), 1),
            Err(Error::NotEnoughPcpus {
                requested: 1,
                free: 0,
                assigned: 4,
                total: 4
            })
        );
        p.release(DomainId(0));
        assert_eq!(p.free(), 2);
        assert_eq!(p.assign(DomainId(2), 1), Ok(alloc::vec![0]));
        assert_eq!(
            p.assign(DomainId(3), 0),
            Err(Error::BadVcpuCount {
                requested: 0,
                max: MAX_VCPUS_PER_VM
            })
        );
    }

    #[test]
    fn partition_pinned() {
        let mut p = CpuPartition::new(4);
        p.assign_pinned(DomainId(0), &[3, 1]).unwrap();
        assert_eq!(p.owner(3), Some(DomainId(0)));
        assert_eq!(p.owner(0), None);
        assert_eq!(
            p.assign_pinned(DomainId(1), &[0, 1]),
            Err(Error::PcpuTaken { pcpu: 1, owner: 0 })
        );
        assert_eq!(
            p.assign_pinned(DomainId(1), &[0, 0]),
            Err(Error::PcpuTaken { pcpu: 0, owner: 1 })
        );
        assert_eq!(
            p.assign_pinned(DomainId(1), &[9]),
            Err(Error::NoSuchPcpu { pcpu: 9, total: 4 })
        );
        assert_eq!(
            p.assign_pinned(DomainId(1), &[0, 2, 3]),
            Err(Error::NotEnoughPcpus {
                requested: 3,
                free: 2,
                assigned: 2,
                total: 4
            })
        );
        // All-or-nothing: the failed requests left pCPUs 0 and 2 free.
        assert_eq!(p.free(), 2);
        p.assign_pinned(DomainId(1), &[2, 0]).unwrap();
        assert_eq!(p.free(), 0);
    }

    #[test]
    fn a_failed_start_returns_the_vcpu_to_off() {
        let ram = [Range {
            start: Ipa(0x4000_0000),
            end: Ipa(0x8000_0000),
        }];
        let mut vm = Vm::new(DomainId(0), &[0, 1], &ram).unwrap();
        vm.start(Ipa(0x4000_0000), 0).unwrap();
        vm.enter(0).unwrap();
        let on = Action::StartVcpu {
            index: 1,
            entry: Ipa(0x4000_1000),
            context_id: 7,
        };
        vm.apply(0, &on).unwrap();
        assert!(matches!(vm.vcpus()[1].state, VcpuState::OnPending { .. }));
        vm.start_failed(1).unwrap();
        assert_eq!(vm.vcpus()[1].state, VcpuState::Off);
        // The guest may try again.
        vm.apply(0, &on).unwrap();
        // A running vCPU cannot "fail to start".
        vm.enter(1).unwrap();
        assert!(vm.start_failed(1).is_err());
    }
}
