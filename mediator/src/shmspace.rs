// SPDX-License-Identifier: MIT OR Apache-2.0
//! A model of the part of OP-TEE's own address space where it maps a VM's shared memory,
//! so that no guest can make OP-TEE run out of translation tables.
//!
//! ## What it protects against (measured)
//! OP-TEE maps a buffer into its core address space whenever it needs a virtual address
//! for it: the memref parameters of a call to a pseudo TA (mapped before the command runs,
//! whatever the command), and the buffers it asks the normal world for (RPC SHM_ALLOC). It
//! allocates the virtual range first fit from a pool, and maps it with 4 KiB pages, each
//! 2 MiB block of the range needing a level-3 translation table from a small static pool.
//! Those tables are never given back. When the pool is empty OP-TEE panics
//! (`Failed to spread pgdir on small tables`, core_mmu.c) and the machine hangs.
//!
//! Debian's OP-TEE 4.5 (NS-virtualized, `qemu_v8`) has 11 tables per guest partition, 6
//! of them used when the partition is made. `moat-tee-attack sweep` (tests/guests/linux)
//! from an unprivileged Linux process, mapping one buffer (then two) in one call to
//! `invoke_tests.pta`, with OP-TEE's debug log counting tables:
//!
//! | pages mapped at once | result |
//! |---|---|
//! | 1 × 2544, 2 × 1152 | returned (tables 7..11 used) |
//! | 1 × 2560, 2 × 1280 | "11 xlat tables exhausted", OP-TEE panics |
//!
//! So one VM's mappings may span at most 2544 pages: 5 blocks of 512 (tables 7 to 11),
//! less an offset of at most 16 pages where the pool's first mapping starts. Each VM (OP-TEE
//! partition) has its own tables.
//!
//! ## The model
//! The mediator cannot see when OP-TEE maps: it assumes the worst, that every memref of
//! every open call is mapped (a registered buffer whole, once per call, as OP-TEE maps the
//! whole object), and every RPC SHM_ALLOC buffer until it is freed. It places these blocks
//! first fit, in the order OP-TEE maps them, in a model of the pool, and admits a call (or
//! an allocation) only if every block ends within `limit` pages. Counting blocks that OP-TEE
//! does not map (a user TA's memrefs are mapped in the TA's own space instead) only leaves
//! more room in the real pool. First fit with frees in between can leave holes, so the span
//! the model checks is that of the placement, not the sum of the sizes: a guest cannot
//! fragment its way past the limit either.
//!
//! The default limit is 1,536 pages (3 blocks). The real span is then at most the offset
//! plus 1,536 pages, within 4 blocks: OP-TEE's fifth table stays spare, for its own
//! mappings and for whatever the model does not see, and `moat-hostile-shm-map` checks
//! on OP-TEE's log that it is never used. (A limit of 2,048 pages, 4 blocks, was measured
//! to use all 11 tables: the offset pushes 4 blocks' worth into a fifth.)

use alloc::vec::Vec;

/// Who a block belongs to: the open call whose memref it is, or the RPC buffer (by its
/// cookie) that OP-TEE asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A memref of the call with this handle.
    Call(u32),
    /// An RPC SHM_ALLOC buffer with this cookie.
    Rpc(u64),
}

/// A block would end beyond the space's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

#[derive(Clone, Copy, Debug)]
struct Block {
    start: u32,
    pages: u32,
    owner: Owner,
}

/// One VM's model of OP-TEE's shared-memory address space, in pages.
#[derive(Clone, Debug)]
pub struct ShmSpace {
    /// Live blocks, sorted by `start`, never overlapping.
    blocks: Vec<Block>,
    /// No block may end beyond this many pages.
    limit: u32,
}

impl Default for ShmSpace {
    /// An empty space of the default limit.
    fn default() -> Self {
        Self::new(crate::limits::DEFAULT_MAX_OPTEE_MAP_PAGES_PER_VM)
    }
}

impl ShmSpace {
    /// An empty space of `limit` pages.
    pub fn new(limit: u32) -> Self {
        Self {
            blocks: Vec::new(),
            limit,
        }
    }

    /// Pages in live blocks.
    pub fn pages(&self) -> u32 {
        self.blocks.iter().map(|b| b.pages).sum()
    }

    /// Where the live blocks end (the span of the current placement).
    pub fn span(&self) -> u32 {
        self.blocks.last().map_or(0, |b| b.start + b.pages)
    }

    /// First fit: the lowest start with room for `pages` pages.
    fn first_fit(&self, pages: u32) -> u32 {
        let mut at = 0u32;
        for b in &self.blocks {
            if b.start - at >= pages {
                return at;
            }
            at = b.start + b.pages;
        }
        at
    }

    /// Place blocks of `sizes` pages for `owner`, in order, as OP-TEE would map them; all or
    /// none. `Err` (and nothing placed) when one would end beyond the limit.
    pub fn admit(&mut self, owner: Owner, sizes: &[u32]) -> Result<(), NoRoom> {
        let before = self.blocks.len();
        for &pages in sizes.iter().filter(|&&p| p > 0) {
            let start = self.first_fit(pages);
            match start.checked_add(pages) {
                Some(end) if end <= self.limit => {
                    let at = self.blocks.partition_point(|b| b.start < start);
                    self.blocks.insert(
                        at,
                        Block {
                            start,
                            pages,
                            owner,
                        },
                    );
                }
                _ => {
                    if self.blocks.len() > before {
                        self.release(owner);
                    }
                    return Err(NoRoom);
                }
            }
        }
        Ok(())
    }

    /// Drop every block of `owner` (its call ended, or OP-TEE freed the buffer).
    pub fn release(&mut self, owner: Owner) {
        self.blocks.retain(|b| b.owner != owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_may_use_the_whole_space_and_not_a_page_more() {
        let mut s = ShmSpace::new(2048);
        assert!(s.admit(Owner::Call(1), &[2048]).is_ok());
        assert_eq!(s.span(), 2048);
        s.release(Owner::Call(1));
        assert!(s.admit(Owner::Call(1), &[2049]).is_err());
        assert!(s.admit(Owner::Call(1), &[1024, 1024]).is_ok());
        s.release(Owner::Call(1));
        assert!(s.admit(Owner::Call(1), &[1024, 1025]).is_err());
        assert_eq!(s.pages(), 0, "a refused call leaves nothing placed");
    }

    #[test]
    fn the_attack_that_panicked_optee_is_refused() {
        // Two 1,500-page buffers in one call (the confirmed attack), and the measured edge.
        let mut s = ShmSpace::new(2048);
        assert!(s.admit(Owner::Call(1), &[1500, 1500]).is_err());
        assert!(s.admit(Owner::Call(1), &[2560]).is_err());
        assert_eq!(s.pages(), 0);
    }

    #[test]
    fn concurrent_calls_share_the_space() {
        let mut s = ShmSpace::new(2048);
        assert!(s.admit(Owner::Call(1), &[1024]).is_ok());
        assert!(s.admit(Owner::Call(2), &[1024]).is_ok());
        assert!(s.admit(Owner::Rpc(7), &[1]).is_err(), "full");
        s.release(Owner::Call(1));
        assert!(s.admit(Owner::Rpc(7), &[1]).is_ok(), "into the freed hole");
        assert_eq!(s.pages(), 1025);
    }

    #[test]
    fn holes_count_a_guest_cannot_fragment_past_the_limit() {
        // A small block parked low, a large one above it; freeing the large one and asking
        // for one a page larger cannot reuse the hole below the small one: placement is
        // what is checked, not the sum of sizes.
        let mut s = ShmSpace::new(2048);
        assert!(s.admit(Owner::Call(1), &[1000]).is_ok()); // [0, 1000)
        assert!(s.admit(Owner::Call(2), &[8]).is_ok()); // [1000, 1008)
        s.release(Owner::Call(1));
        // 1,001 pages do not fit in the 1,000-page hole: they go to [1008, 2009).
        assert!(s.admit(Owner::Call(3), &[1001]).is_ok());
        assert_eq!(s.span(), 2009);
        assert_eq!(s.pages(), 1009, "the sum is far below the limit");
        // 1,001 more pages fit by the sum (1,039 are left), not by placement.
        assert!(s.admit(Owner::Call(4), &[1001]).is_err());
        assert!(
            s.admit(Owner::Call(4), &[1000]).is_ok(),
            "the hole still takes 1,000"
        );
    }

    #[test]
    fn empty_memrefs_take_no_room() {
        let mut s = ShmSpace::new(16);
        assert!(s.admit(Owner::Call(1), &[0, 16, 0]).is_ok());
        assert_eq!(s.span(), 16);
    }
}
