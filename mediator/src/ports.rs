// SPDX-License-Identifier: MIT OR Apache-2.0
//! Ports: the only ways the mediator touches the world.
//!
//! The effect crate `hv` implements these with a real `smc`, the VM's stage-2 tables and
//! the hypervisor's frame allocator; the tests implement them with a scripted fake OP-TEE
//! and a fake guest memory that maps IPAs to scattered frames.
//!
//! ```text
//!   guest ──SMC trap──▶ hv ──handle_smc()──▶ Mediator ──SecureMonitor::call──▶ OP-TEE
//!                                              │  ▲        (no Lock held)
//!                          GuestMemory (per VM)│  │HvPages (shadow args, page lists)
//!                                              ▼  │
//!                                  guest RAM (IPA)   hypervisor-owned frames (PA)
//! ```
//!
//! Every port method takes `&self` except `GuestMemory`'s writers: a port is shared by all
//! CPUs, so each implementation does its own (short) locking, and the mediator never holds
//! one of its own locks (`Lock`) while calling `SecureMonitor::call`.

use core::fmt;

/// A host physical address: what OP-TEE is given.
///
/// Same representation and naming as `hv_core::addr::PhysAddr`; the hypervisor converts at
/// the port boundary (`mediator::PhysAddr(pa.raw())`). Kept local so the mediator is a leaf
/// crate with no dependencies that builds, lints and fuzzes on its own.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

/// A guest intermediate physical address: what a guest hands in. Same representation as
/// `hv_core::addr::Ipa`; never converted to a `PhysAddr` except by `GuestMemory::pin`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Ipa(pub u64);

/// Page size of every page the mediator handles (OP-TEE's page lists are 4 KiB-based).
pub const PAGE_SIZE: u64 = 4096;

/// A VM, numbered like Xen's domid. OP-TEE sees it as client id `domid + 1`
/// (client id 0 is the hypervisor itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub u16);

impl VmId {
    /// The OP-TEE client id carried in a7 for this VM.
    pub const fn client_id(self) -> u64 {
        self.0 as u64 + 1
    }
}

/// The client id the hypervisor itself uses (VM_CREATED, VM_DESTROYED, probing).
pub const HYPERVISOR_CLIENT_ID: u64 = 0;

/// What OP-TEE will do with a guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// OP-TEE only reads it.
    Read,
    /// OP-TEE writes it (and may read it).
    Write,
}

/// Why a guest-memory operation failed. Always the guest's doing (or a racing unmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// The IPA is not mapped to the VM's RAM (MMIO, hole, outside RAM).
    NotRam,
    /// Mapped, but without the permission the access needs.
    Permission,
    /// The page cannot be pinned (pin count limit of the effect layer).
    PinFailed,
}

/// Issue an SMC to the secure monitor: `regs` are x0..x7, the result is x0..x7. Any CPU
/// may call it at any time, several at once (OP-TEE runs one thread per call).
pub trait SecureMonitor {
    /// `smc #0` with a0..a7; returns a0..a7.
    fn call(&self, regs: [u64; 8]) -> [u64; 8];
}

/// One VM's memory, seen from the hypervisor.
///
/// `read`/`write` copy between guest RAM and hypervisor buffers and may span pages; they
/// fail rather than touch anything that is not the VM's RAM. `pin` translates *and* pins in
/// one step (no window between the check and the pin) and returns the frame; a pinned
/// page stays mapped at the same frame until the matching `unpin`. Pins nest.
pub trait GuestMemory {
    /// Copy `buf.len()` bytes from guest `ipa` into `buf`.
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Copy `buf` into guest memory at `ipa`.
    fn write(&mut self, ipa: Ipa, buf: &[u8]) -> Result<(), MemFault>;
    /// Copy `buf.len()` little-endian 64-bit words from guest `ipa` (8-aligned) into `buf`.
    /// The default goes through `read`; an implementation with aligned loads (the
    /// hypervisor's) overrides it: this is how messages are read on the hot path.
    fn read_words(&self, ipa: Ipa, buf: &mut [u64]) -> Result<(), MemFault> {
        let mut b = [0u8; 8];
        for (i, w) in buf.iter_mut().enumerate() {
            self.read(
                ipa.checked_add(8 * i as u64).ok_or(MemFault::NotRam)?,
                &mut b,
            )?;
            *w = u64::from_le_bytes(b);
        }
        Ok(())
    }
    /// Copy `buf` as little-endian 64-bit words to guest memory at `ipa` (8-aligned).
    fn write_words(&mut self, ipa: Ipa, buf: &[u64]) -> Result<(), MemFault> {
        for (i, w) in buf.iter().enumerate() {
            let at = ipa.checked_add(8 * i as u64).ok_or(MemFault::NotRam)?;
            self.write(at, &w.to_le_bytes())?;
        }
        Ok(())
    }
    /// Translate the page at `ipa` (page aligned) with `access` and pin it.
    fn pin(&mut self, ipa: Ipa, access: Access) -> Result<PhysAddr, MemFault>;
    /// Drop one pin taken by `pin` on the page at `ipa`.
    fn unpin(&mut self, ipa: Ipa);
    /// `pin` each page of `ipas` in order, its frame into the same place of `pas`
    /// (`pas.len() >= ipas.len()`). On a failure the pages before it stay pinned: the
    /// error carries how many those are. The default calls `pin`; the hypervisor takes its
    /// pin table's lock once for the whole run.
    fn pin_run(
        &mut self,
        ipas: &[u64],
        access: Access,
        pas: &mut [u64],
    ) -> Result<(), (usize, MemFault)> {
        for (i, (&ipa, pa)) in ipas.iter().zip(pas.iter_mut()).enumerate() {
            *pa = self.pin(Ipa(ipa), access).map_err(|f| (i, f))?.raw();
        }
        Ok(())
    }
    /// `unpin` each page of `ipas`. The default calls `unpin`; the hypervisor takes its
    /// pin table's lock once.
    fn unpin_run(&mut self, ipas: &[Ipa]) {
        for &ipa in ipas {
            self.unpin(ipa);
        }
    }
}

/// A hypervisor-owned 4 KiB page the mediator handed (or will hand) to OP-TEE. Not `Clone`:
/// the only way to give it back is `HvPages::free`, which consumes it.
#[derive(Debug, PartialEq, Eq)]
pub struct HvPage {
    phys: PhysAddr,
}

impl HvPage {
    /// Wrap a page the allocator owns. Only `HvPages` implementations call this.
    pub const fn new(phys: PhysAddr) -> Self {
        Self { phys }
    }
    /// The page's physical address, as given to OP-TEE.
    pub const fn phys(&self) -> PhysAddr {
        self.phys
    }
}

/// Hypervisor-owned pages in non-secure RAM (shadow arguments, rebuilt page lists). The
/// pool is shared by every VM and CPU: the implementation serializes `alloc` and `free`
/// itself (in `hv`, the heap's lock).
pub trait HvPages {
    /// A zeroed page, or `None` when the pool is empty.
    fn alloc(&self) -> Option<HvPage>;
    /// Copy `data` into `page` at byte `offset` (`offset + data.len() <= 4096`).
    fn write(&self, page: &HvPage, offset: usize, data: &[u8]);
    /// Copy from `page` at byte `offset` into `buf`.
    fn read(&self, page: &HvPage, offset: usize, buf: &mut [u8]);
    /// Copy `data` as little-endian 64-bit words into `page` at byte `offset` (8-aligned).
    /// The default goes through `write`; the hypervisor's stores words.
    fn write_words(&self, page: &HvPage, offset: usize, data: &[u64]) {
        for (i, w) in data.iter().enumerate() {
            self.write(page, offset + 8 * i, &w.to_le_bytes());
        }
    }
    /// Copy little-endian 64-bit words from `page` at byte `offset` (8-aligned) into `buf`.
    fn read_words(&self, page: &HvPage, offset: usize, buf: &mut [u64]) {
        let mut b = [0u8; 8];
        for (i, w) in buf.iter_mut().enumerate() {
            self.read(page, offset + 8 * i, &mut b);
            *w = u64::from_le_bytes(b);
        }
    }
    /// Return the page to the pool.
    fn free(&self, page: HvPage);
}

/// Mutual exclusion, provided by the hypervisor: the pure crate has no locks of its own.
///
/// The mediator takes a lock only for short, bounded steps (a table look-up, or one
/// prepare/complete step of one VM's state) and never while it calls `SecureMonitor::call`.
/// Lock order: the VM table before a VM's state; nothing else is taken under either
/// except the ports' own locks (`GuestMemory::pin`, `HvPages::alloc`). In `hv` this is a
/// fair (ticket) spin lock, since two vCPUs of a VM can wait on the same VM's state; the
/// tests use a `RefCell` that also proves no lock is held across an SMC.
pub trait Lock {
    /// A lock around a `T`.
    type Mutex<T>;
    /// A new, unlocked `value`.
    fn new<T>(value: T) -> Self::Mutex<T>;
    /// Run `f` with the lock held.
    fn with<T, R>(mutex: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R;
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

macro_rules! addr_impl {
    ($name:ident, $prefix:literal) => {
        impl $name {
            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// Is the address 4 KiB aligned?
            pub const fn is_page_aligned(self) -> bool {
                self.0 % PAGE_SIZE == 0
            }
            /// `self + off`, or `None` on overflow.
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ":{:#x}"), self.0)
            }
        }
    };
}
addr_impl!(PhysAddr, "pa");
addr_impl!(Ipa, "ipa");
