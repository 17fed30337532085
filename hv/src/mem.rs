// SPDX-License-Identifier: MIT OR Apache-2.0
//! moat's memory: the heap (`alloc`) and the frame pool that stage-2 tables come from.
//!
//! Both live in the image's BSS, inside the region moat reserves for itself and never
//! maps into a guest. EL2 runs identity-mapped, so a frame's physical address is also the
//! address moat uses to write it.

use buddy_system_allocator::LockedHeap;
use hv_core::addr::{PhysAddr, PAGE_SIZE};
use hv_core::stage2::{FrameAlloc, ENTRIES};
use spin::Mutex;

/// Heap size: device trees, domain descriptions, mediator state.
pub const HEAP_SIZE: usize = 8 << 20;
/// Frames for stage-2 tables: 1024 frames map far more than QEMU virt can hold, with
/// 1 GiB and 2 MiB blocks wherever alignment allows.
pub const FRAME_COUNT: usize = 1024;

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);
static mut FRAMES: [Page; FRAME_COUNT] = [const { Page([0; PAGE_SIZE as usize]) }; FRAME_COUNT];

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Which frames of `FRAMES` are free: a bitmap, one bit per frame.
static FREE: Mutex<[u64; FRAME_COUNT / 64]> = Mutex::new([u64::MAX; FRAME_COUNT / 64]);

/// Hand the heap area to the allocator. Primary CPU, once, before any allocation.
pub fn init() {
    let start = core::ptr::addr_of_mut!(HEAP_AREA) as usize;
    // SAFETY: HEAP_AREA is a static region used for nothing else, given to the allocator
    // exactly once (init runs once on the primary CPU before any other CPU starts).
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };
}

/// The physical range moat's frame pool occupies.
fn frames_base() -> u64 {
    core::ptr::addr_of!(FRAMES) as u64
}

/// Frames for stage-2 tables, from the static pool. A handle to the global, locked pool;
/// only moat creates it, and each stage-2 owns the frames it allocated through it.
#[derive(Debug)]
pub struct HvFrames {
    _private: (),
}

impl HvFrames {
    /// A handle for one stage-2.
    pub(crate) const fn new() -> Self {
        Self { _private: () }
    }
}

/// Stage-2 frames handed out and not yet freed (for the `d` key and reset accounting).
pub fn frames_in_use() -> usize {
    FREE.lock().iter().map(|w| w.count_zeros() as usize).sum()
}

/// Heap bytes allocated and not yet freed.
pub fn heap_in_use() -> usize {
    HEAP.lock().stats_alloc_actual()
}

/// Heap a guest's pins never eat into: below this much free heap, a new pin is refused
/// (the guest's call fails with the protocol's limit error) rather than letting a guest
/// at its limits run the heap out, which would stop the machine. 1 MiB is 11 times what
/// moat itself uses with three domains (about 90 KiB), and more than any one allocation a
/// trap makes (a page list's pins for the largest buffer: 1,536 x 8 bytes).
pub const PIN_HEAP_RESERVE: usize = 1 << 20;

/// Is there room on the heap for more pins (`PIN_HEAP_RESERVE` stays free)?
pub fn heap_has_room_for_pins() -> bool {
    HEAP_SIZE.saturating_sub(heap_in_use()) >= PIN_HEAP_RESERVE
}

/// Is `[addr, addr + len)` inside the heap area? (Mediator pages come from the heap.)
pub fn heap_contains(addr: u64, len: u64) -> bool {
    let start = core::ptr::addr_of!(HEAP_AREA) as u64;
    addr >= start
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= start + HEAP_SIZE as u64)
}

impl FrameAlloc for HvFrames {
    fn alloc_zeroed(&mut self) -> Option<PhysAddr> {
        let mut free = FREE.lock();
        for (w, word) in free.iter_mut().enumerate() {
            if *word != 0 {
                let bit = word.trailing_zeros() as usize;
                *word &= !(1u64 << bit);
                let pa = frames_base() + ((w * 64 + bit) as u64) * PAGE_SIZE;
                // SAFETY: `pa` is a frame of FRAMES that was free until this moment, so
                // no reference to it exists; EL2 is identity-mapped.
                unsafe { core::ptr::write_bytes(pa as *mut u8, 0, PAGE_SIZE as usize) };
                return Some(PhysAddr(pa));
            }
        }
        None
    }

    fn free(&mut self, pa: PhysAddr) {
        let idx = pa.raw().wrapping_sub(frames_base()) / PAGE_SIZE;
        assert!(
            (idx as usize) < FRAME_COUNT && pa.is_page_aligned(),
            "freeing {pa:?}, not a frame of the pool"
        );
        FREE.lock()[idx as usize / 64] |= 1 << (idx % 64);
    }

    fn table(&self, pa: PhysAddr) -> &[u64; ENTRIES] {
        check_frame(pa);
        // SAFETY: `pa` is an allocated, page-aligned frame of FRAMES (checked above),
        // identity-mapped; the stage-2 that allocated it is its only user.
        unsafe { &*(pa.raw() as *const [u64; ENTRIES]) }
    }

    fn table_mut(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES] {
        check_frame(pa);
        // SAFETY: as in `table`; `&mut self` is the stage-2's exclusive handle.
        unsafe { &mut *(pa.raw() as *mut [u64; ENTRIES]) }
    }
}

fn check_frame(pa: PhysAddr) {
    let idx = pa.raw().wrapping_sub(frames_base()) / PAGE_SIZE;
    assert!(
        (idx as usize) < FRAME_COUNT && pa.is_page_aligned(),
        "{pa:?} is not a frame of the pool"
    );
}
