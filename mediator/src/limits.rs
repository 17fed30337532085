// SPDX-License-Identifier: MIT OR Apache-2.0
//! Every limit the mediator enforces, in one configurable struct.
//!
//! Each field bounds one thing a hostile guest could otherwise grow without bound. The
//! defaults are generous for a Linux guest (an 8 MiB buffer, 256 buffers) while keeping the
//! worst-case work of a single trap to a few thousand page translations, and keeping OP-TEE
//! itself within what it was measured to take.
//!
//! ## Work per trap
//! Xen caps a buffer at 129 pages (512 KiB + 1) and 16 buffers, so one trap cannot walk an
//! unbounded page list; that cap breaks large buffers. moat instead bounds the *trap*:
//! every page translated (data pages and list pages) is charged to a per-trap budget,
//! `max_pages_per_trap`, and no trap ever walks more than that many pages, whatever the
//! guest sends.
//!
//! ## What OP-TEE can map
//! The work per trap is not the only bound: OP-TEE maps a call's buffers into its own
//! address space (a pseudo TA's memrefs, the buffers it asks for by RPC), and runs out of
//! translation tables, and panics, past a span that was measured, per VM, at 2,544 pages
//! on Debian's OP-TEE 4.5 (see `shmspace`). `max_optee_map_pages_per_vm` (1,536 pages,
//! 6 MiB) keeps one of OP-TEE's translation tables spare, and `max_pages_per_buffer` is
//! the same: a larger buffer could never be used in a call. That is still 12x Xen's 129.
//!
//! ## OP-TEE's threads
//! OP-TEE has a fixed number of threads for all VMs together; a call holds one from its
//! first entry until it returns, including while it is parked in an RPC the guest has not
//! answered. A VM's share, what it is guaranteed, is `max(1, thread_count / live VMs)`,
//! at most `max_calls_per_vm`. While threads are free a VM may use more than its share (a
//! cancel needs a thread beside the call it cancels). With `reap_across_vms` (a TEE whose
//! threads all VMs share), a VM that holds more keeps them until another VM is refused a
//! thread: then one of its calls parked for longer than `max_park_ms` is failed ("reaped")
//! so the thread is freed. Debian's OP-TEE gives each VM threads of its own, so that is off.

/// Default: concurrent yielding calls per VM, at most (its share of OP-TEE's threads may be
/// fewer).
pub const DEFAULT_MAX_CALLS_PER_VM: u32 = 4;
/// Default: pages in one shared buffer (6 MiB): as many as OP-TEE may map for one VM.
pub const DEFAULT_MAX_PAGES_PER_BUFFER: u32 = DEFAULT_MAX_OPTEE_MAP_PAGES_PER_VM;
/// Default: the span, in pages, of one VM's buffers that OP-TEE may have mapped at once
/// (6 MiB): OP-TEE has 5 tables (2,560 pages) for them and starts a few pages into the
/// first; 3 blocks leave the fifth table spare and a block of slack (`shmspace`).
pub const DEFAULT_MAX_OPTEE_MAP_PAGES_PER_VM: u32 = 1536;
/// Default: pages translated in one trap, all parameters together (list pages included).
pub const DEFAULT_MAX_PAGES_PER_TRAP: u32 = 4096 + 16;
/// Default: shared buffers (registered or RPC-allocated) per VM.
pub const DEFAULT_MAX_BUFFERS_PER_VM: u32 = 256;
/// Default: total pinned guest pages per VM (256 MiB).
pub const DEFAULT_MAX_PINNED_PAGES_PER_VM: u32 = 65536;
/// Default: RPC argument buffers (RPC_FUNC_ALLOC) per VM.
pub const DEFAULT_MAX_RPC_ARGS_PER_VM: u32 = 8;
/// Default: parameters in one `optee_msg_arg` (Linux uses at most 4 + 2 meta).
pub const DEFAULT_MAX_PARAMS: u32 = 8;
/// Default: times one trap may resume OP-TEE itself before handing back to the guest.
pub const DEFAULT_MAX_INTERNAL_RESUMES: u32 = 8;
/// Default: round trips spent unwinding one parked call of a dying VM.
pub const DEFAULT_MAX_DESTROY_RESUMES: u32 = 16;
/// Default: milliseconds a call may stay parked in an RPC before it may be reaped (5 s).
pub const DEFAULT_MAX_PARK_MS: u64 = 5_000;

/// The mediator's limits. `Limits::default()` is the production configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Yielding calls a VM may have open at once (in OP-TEE or parked in an RPC), at most.
    /// Bounds the shadow pages and bookkeeping of one VM's calls. The VM's share of OP-TEE's
    /// threads, what it is guaranteed, is smaller when other VMs are live:
    /// `min(this, max(1, thread_count / live_vms))` (`Mediator::calls_per_vm`), which is
    /// what its GET_THREAD_COUNT answers. It may use free threads beyond its share; a VM
    /// parking calls in RPCs it never answers cannot keep the threads the other VMs' shares
    /// need (see `max_park_ms`). With more VMs than threads each still gets 1, and OP-TEE's
    /// own ETHREAD_LIMIT makes them take turns.
    pub max_calls_per_vm: u32,
    /// Pages in one buffer (temporary, registered or RPC-allocated). Bounds the pin and
    /// metadata cost of one buffer.
    pub max_pages_per_buffer: u32,
    /// Pages translated and pinned in one trap, summed over all parameters plus list pages.
    /// Bounds the time the hypervisor spends in one trap (see the module doc).
    pub max_pages_per_trap: u32,
    /// Live shared buffers per VM. Bounds the mediator's per-VM bookkeeping (heap).
    pub max_buffers_per_vm: u32,
    /// Pinned pages per VM, all buffers together. Bounds how much RAM a VM can lock so the
    /// hypervisor cannot reclaim or remap it.
    pub max_pinned_pages_per_vm: u32,
    /// RPC argument buffers per VM; each costs one hypervisor page. Bounds hypervisor memory
    /// a VM can make OP-TEE allocate.
    pub max_rpc_args_per_vm: u32,
    /// Parameters in one message. Bounds the shadow size and per-call parameter work.
    pub max_params: u32,
    /// OP-TEE round trips the mediator answers on its own within one trap (refused RPC
    /// allocations, stale cookies). Bounds the time of one trap when OP-TEE keeps asking;
    /// past it the guest gets a FOREIGN_INTR RPC and resumes later.
    pub max_internal_resumes: u32,
    /// OP-TEE round trips spent unwinding one parked call when its VM is destroyed (every
    /// RPC answered with a failure so the OP-TEE thread finishes and is not leaked). Bounds
    /// the work of `vm_destroyed` against a TA that keeps issuing RPCs; past it the thread
    /// is abandoned, which is what Xen always does.
    pub max_destroy_resumes: u32,
    /// Milliseconds a call of a VM holding more than its share of OP-TEE's threads may stay
    /// parked in an RPC (not in flight) before it may be reaped: failed in OP-TEE (each RPC
    /// answered with a failure, at most `max_destroy_resumes` round trips) to free its
    /// thread for a VM that was refused one. Bounds how long a VM that opened its calls
    /// while it was alone (or had a larger share) can starve VMs that came later by never
    /// answering an RPC; a VM within its share is never reaped. In the `now_ms` the
    /// hypervisor passes to `Mediator::begin` (its counter, converted).
    pub max_park_ms: u64,
    /// The span, in pages, of one VM's buffers that OP-TEE may have mapped in its own
    /// address space at once, in the mediator's first-fit model of that space
    /// (`shmspace::ShmSpace`): every memref of every open call (a registered buffer whole,
    /// once per call) and every RPC SHM_ALLOC buffer. Bounds OP-TEE's translation tables,
    /// which it never gives back and panics without: a call or an RPC allocation that
    /// would not fit is refused with TEEC_ERROR_OUT_OF_MEMORY.
    pub max_optee_map_pages_per_vm: u32,
    /// Reap (see `max_park_ms`) another VM's parked calls when a VM is refused a thread.
    /// Only for a TEE whose threads all VMs share. Off by default: Debian's OP-TEE 4.5 with
    /// NS-virtualization gives each guest partition its own threads (its thread contexts
    /// are partition data, not nexus data), so a VM refused a thread has used up its own,
    /// and another VM's parked call holds none of them; reaping it would fail that VM's
    /// call and give the refused one nothing. Measured: `moat-hostile-threads`, a dom0
    /// holding both of its threads while a domU passes xtest 1013.
    pub reap_across_vms: bool,
}

/// `Limits::default()`, as a constant.
pub const DEFAULTS: Limits = Limits {
    max_calls_per_vm: DEFAULT_MAX_CALLS_PER_VM,
    max_pages_per_buffer: DEFAULT_MAX_PAGES_PER_BUFFER,
    max_pages_per_trap: DEFAULT_MAX_PAGES_PER_TRAP,
    max_buffers_per_vm: DEFAULT_MAX_BUFFERS_PER_VM,
    max_pinned_pages_per_vm: DEFAULT_MAX_PINNED_PAGES_PER_VM,
    max_rpc_args_per_vm: DEFAULT_MAX_RPC_ARGS_PER_VM,
    max_params: DEFAULT_MAX_PARAMS,
    max_internal_resumes: DEFAULT_MAX_INTERNAL_RESUMES,
    max_destroy_resumes: DEFAULT_MAX_DESTROY_RESUMES,
    max_park_ms: DEFAULT_MAX_PARK_MS,
    max_optee_map_pages_per_vm: DEFAULT_MAX_OPTEE_MAP_PAGES_PER_VM,
    reap_across_vms: false,
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULTS
    }
}

impl Limits {
    /// The largest `max_params` whose argument struct still fits one shadow page.
    pub const MAX_PARAMS_IN_PAGE: u32 =
        ((4096 - crate::abi::MSG_ARG_HEADER_SIZE) / crate::abi::MSG_PARAM_SIZE) as u32;

    /// Clamp values that would break invariants (a shadow argument must fit one page).
    pub fn sanitized(mut self) -> Self {
        self.max_params = self
            .max_params
            .min(Self::MAX_PARAMS_IN_PAGE)
            .min(crate::msg::MAX_PARAMS as u32);
        self.max_pages_per_buffer = self.max_pages_per_buffer.max(1);
        self
    }
}
