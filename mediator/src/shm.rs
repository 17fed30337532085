// SPDX-License-Identifier: MIT OR Apache-2.0
//! Guest page lists: copy, validate, translate, pin, and rebuild them for OP-TEE.
//!
//! A NONCONTIG memory reference points at a chain of 4 KiB list pages in guest memory.
//! Each holds 511 page addresses and, in its last word, the address of the next list page;
//! the low 12 bits of `buf_ptr` are the offset of the data in the first page.
//!
//! ```text
//!  guest (IPAs, untrusted)                 hypervisor (PAs, what OP-TEE sees)
//!  buf_ptr = list_ipa | off                buf_ptr = list_pa | off
//!  ┌────────────────────┐                  ┌────────────────────┐
//!  │ ipa0 .. ipa510     │ ──pin each──▶    │ pa0 .. pa510       │
//!  │ next = list2_ipa ──┼─┐                │ next = list2_pa ───┼─┐
//!  └────────────────────┘ │                └────────────────────┘ │
//!                         ▼                                         ▼
//! ```
//!
//! Every list page is copied into a hypervisor buffer before it is looked at, so a sibling
//! vCPU rewriting it has no effect; every entry is checked and pinned; the list OP-TEE sees
//! is rebuilt in hypervisor pages and holds only translated addresses.

use alloc::vec::Vec;

use crate::abi::{NONCONTIG_PAGE_SIZE, PAGELIST_ENTRIES_PER_PAGE};
use crate::error::Fault;
use crate::ports::{Access, GuestMemory, HvPage, HvPages, Ipa, MemFault};

/// Guest pages pinned for one buffer.
#[derive(Debug, Default)]
pub(crate) struct Pinned {
    /// Pinned pages, in buffer order (each pinned exactly once by this buffer).
    pub ipas: Vec<Ipa>,
    /// Buffer size in bytes.
    pub size: u64,
    /// Offset of the buffer's first byte in its first page.
    pub offset: u64,
}

/// A translated buffer: its pins, and the `buf_ptr` OP-TEE gets (the first rebuilt list
/// page's PA | offset; the list pages themselves went to the caller's vector).
#[derive(Debug)]
pub(crate) struct Translated {
    /// The pins.
    pub pinned: Pinned,
    /// `buf_ptr` for OP-TEE: first list page's PA | offset.
    pub buf_ptr: u64,
}

/// Work charged to one trap.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Pages that may still be translated in this trap.
    pub pages_left: u32,
    /// Pages translated so far (for the trace).
    pub translated: u32,
}

/// Per-VM room: how many more pages this VM may pin, and the per-buffer cap.
pub(crate) struct Room {
    /// `max_pinned_pages_per_vm - pinned`.
    pub pin_room: u32,
    /// `Limits::max_pages_per_buffer`.
    pub max_pages_per_buffer: u32,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

fn mem_fault(f: MemFault) -> Fault {
    match f {
        MemFault::NotRam | MemFault::Permission => Fault::BadAddress,
        MemFault::PinFailed => Fault::Limit,
    }
}

/// Drop the pins of `pinned`.
pub(crate) fn unpin_all<G: GuestMemory>(mem: &mut G, pinned: &Pinned) {
    mem.unpin_run(&pinned.ipas);
}

/// Free hypervisor pages.
pub(crate) fn free_pages<P: HvPages>(pages: &P, list: Vec<HvPage>) {
    for p in list {
        pages.free(p);
    }
}

/// Number of data pages a `[offset, offset + size)` buffer spans, or `None` if it wraps.
pub(crate) fn pages_spanned(offset: u64, size: u64) -> Option<u64> {
    let end = offset.checked_add(size)?;
    Some(end.div_ceil(NONCONTIG_PAGE_SIZE))
}

/// Translate and pin the guest page list at `buf_ptr` describing `size` bytes, and
/// rebuild it in hypervisor pages, appended to `list`. On error nothing stays pinned or
/// allocated (and `list` is as it was).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pin_noncontig<G: GuestMemory, P: HvPages>(
    mem: &mut G,
    pages: &P,
    room: &Room,
    budget: &mut Budget,
    buf_ptr: u64,
    size: u64,
    access: Access,
    list: &mut Vec<HvPage>,
) -> Result<Translated, Fault> {
    if size == 0 {
        return Err(Fault::BadParam);
    }
    let offset = buf_ptr % NONCONTIG_PAGE_SIZE;
    let n = pages_spanned(offset, size).ok_or(Fault::BadParam)?;
    if n > u64::from(room.max_pages_per_buffer) || n > u64::from(room.pin_room) {
        return Err(Fault::Limit);
    }
    let n = n as usize;
    let list_pages = n.div_ceil(PAGELIST_ENTRIES_PER_PAGE);
    // Charge data pages and list pages up front: a too-large request does no work at all.
    let cost = (n + list_pages) as u32;
    if cost > budget.pages_left {
        return Err(Fault::Limit);
    }
    budget.pages_left -= cost;

    // The list pages first (zeroed, `HvPages::alloc`), linked: the walk then writes each
    // translated entry straight into them, with no intermediate list of addresses.
    let first = list.len();
    for _ in 0..list_pages {
        match pages.alloc() {
            Some(p) => list.push(p),
            None => {
                free_from(pages, list, first);
                return Err(Fault::NoMemory);
            }
        }
    }
    let ours = &list[first..];
    for (page, next) in ours.iter().zip(ours.iter().skip(1)) {
        pages.write_words(page, PAGELIST_ENTRIES_PER_PAGE * 8, &[next.phys().raw()]);
    }
    let mut pinned = Pinned {
        ipas: Vec::with_capacity(n),
        size,
        offset,
    };
    let result = walk(mem, pages, ours, buf_ptr - offset, n, access, &mut pinned);
    budget.translated += pinned.ipas.len() as u32;
    if let Err(f) = result {
        unpin_all(mem, &pinned);
        free_from(pages, list, first);
        return Err(f);
    }
    Ok(Translated {
        buf_ptr: list[first].phys().raw() | offset,
        pinned,
    })
}

/// Free the pages of `list` from index `first` on.
fn free_from<P: HvPages>(pages: &P, list: &mut Vec<HvPage>, first: usize) {
    for p in list.drain(first..) {
        pages.free(p);
    }
}

/// Entries copied per step of the walk, through buffers on the stack.
const CHUNK: usize = 16;

/// Copy the guest's list pages, a chunk of entries at a time, pin each entry, and write
/// its frame into the same place of `out` (the rebuilt list pages). Pins go into `pinned`
/// as they are taken, so the caller can undo a partial walk. Only the entries this buffer
/// uses, and the link when another list page follows, are read from the guest.
fn walk<G: GuestMemory, P: HvPages>(
    mem: &mut G,
    pages: &P,
    out: &[HvPage],
    first_list: u64,
    n: usize,
    access: Access,
    pinned: &mut Pinned,
) -> Result<(), Fault> {
    let mut ipas = [0u64; CHUNK];
    let mut pas = [0u64; CHUNK];
    let mut link = [0u64; 1];
    let mut list_ipa = first_list;
    let mut left = n;
    for page in out {
        if left == 0 {
            break;
        }
        if !list_ipa.is_multiple_of(NONCONTIG_PAGE_SIZE) {
            return Err(Fault::Unaligned);
        }
        let here = left.min(PAGELIST_ENTRIES_PER_PAGE);
        let mut done = 0;
        while done < here {
            let k = (here - done).min(CHUNK);
            mem.read_words(Ipa(list_ipa + (done * 8) as u64), &mut ipas[..k])
                .map_err(mem_fault)?;
            if ipas[..k]
                .iter()
                .any(|ipa| !ipa.is_multiple_of(NONCONTIG_PAGE_SIZE))
            {
                return Err(Fault::Unaligned);
            }
            let pinned_now = mem.pin_run(&ipas[..k], access, &mut pas[..k]);
            let ok = match pinned_now {
                Ok(()) => k,
                Err((i, _)) => i,
            };
            pinned.ipas.extend(ipas[..ok].iter().map(|&ipa| Ipa(ipa)));
            pinned_now.map_err(|(_, f)| mem_fault(f))?;
            pages.write_words(page, done * 8, &pas[..k]);
            done += k;
        }
        left -= here;
        if left > 0 {
            let at = list_ipa + (PAGELIST_ENTRIES_PER_PAGE * 8) as u64;
            mem.read_words(Ipa(at), &mut link).map_err(mem_fault)?;
            list_ipa = link[0];
        }
    }
    Ok(())
}
