// SPDX-License-Identifier: MIT OR Apache-2.0
//! Address spaces as newtypes.
//!
//! moat juggles three address spaces: host physical addresses (`PhysAddr`), guest
//! intermediate physical addresses (`Ipa`, what a guest believes is physical, translated by
//! stage-2) and EL2 virtual addresses (`VirtAddr`, translated by the EL2 stage-1 tables).
//! None converts implicitly into another: a conversion is a translation, and translations
//! live in the stage-2 and stage-1 code that knows the mapping.
//!
//! Ranges are always written `[start, end_exclusive)`.

use core::fmt;

/// Size of a translation granule page: moat uses the 4 KiB granule everywhere.
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

macro_rules! address_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// Is the address aligned to `align` (a power of two)?
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Is the address 4 KiB page aligned?
            pub const fn is_page_aligned(self) -> bool {
                self.is_aligned(PAGE_SIZE)
            }
            /// Round down to a 4 KiB page boundary.
            pub const fn page_base(self) -> Self {
                Self(self.0 & !(PAGE_SIZE - 1))
            }
            /// Offset inside the 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_newtype!(
    /// A host physical address (what the memory system sees after all translation).
    PhysAddr,
    "pa"
);
address_newtype!(
    /// A guest intermediate physical address, translated to `PhysAddr` by stage-2.
    Ipa,
    "ipa"
);
address_newtype!(
    /// An EL2 virtual address, translated by the hypervisor's own stage-1 tables.
    VirtAddr,
    "va"
);

/// A half-open range `[start, end)` in one address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Range<A> {
    /// First address in the range.
    pub start: A,
    /// First address past the range.
    pub end: A,
}

macro_rules! range_impl {
    ($name:ident) => {
        impl Range<$name> {
            /// The range `[start, start + len)`, or `None` if it wraps.
            pub const fn from_len(start: $name, len: u64) -> Option<Self> {
                match start.0.checked_add(len) {
                    Some(end) => Some(Self {
                        start,
                        end: $name(end),
                    }),
                    None => None,
                }
            }
            /// Length in bytes.
            pub const fn len(&self) -> u64 {
                self.end.0.saturating_sub(self.start.0)
            }
            /// Is the range empty?
            pub const fn is_empty(&self) -> bool {
                self.end.0 <= self.start.0
            }
            /// Does the range contain `a`?
            pub const fn contains(&self, a: $name) -> bool {
                a.0 >= self.start.0 && a.0 < self.end.0
            }
            /// Does the range fully contain `[a, a + len)`? False if that wraps.
            pub const fn contains_span(&self, a: $name, len: u64) -> bool {
                match a.0.checked_add(len) {
                    Some(end) => a.0 >= self.start.0 && end <= self.end.0,
                    None => false,
                }
            }
            /// Do the two ranges share at least one byte?
            pub const fn overlaps(&self, other: &Self) -> bool {
                self.start.0 < other.end.0 && other.start.0 < self.end.0
            }
        }
    };
}
range_impl!(PhysAddr);
range_impl!(Ipa);
range_impl!(VirtAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        let a = Ipa(0x4000_1234);
        assert!(!a.is_page_aligned());
        assert_eq!(a.page_base(), Ipa(0x4000_1000));
        assert_eq!(a.page_offset(), 0x234);
        assert!(Ipa(0x4000_0000).is_aligned(0x20_0000));
        assert_eq!(PhysAddr(u64::MAX).checked_add(1), None);
    }

    #[test]
    fn ranges_are_half_open_and_reject_wrapping() {
        let r = Range::<PhysAddr>::from_len(PhysAddr(0x1000), 0x2000).unwrap();
        assert!(r.contains(PhysAddr(0x1000)));
        assert!(r.contains(PhysAddr(0x2fff)));
        assert!(!r.contains(PhysAddr(0x3000)));
        assert!(r.contains_span(PhysAddr(0x2000), 0x1000));
        assert!(!r.contains_span(PhysAddr(0x2000), 0x1001));
        assert!(!r.contains_span(PhysAddr(0x2000), u64::MAX));
        assert!(Range::<PhysAddr>::from_len(PhysAddr(u64::MAX), 2).is_none());
        let s = Range::<PhysAddr>::from_len(PhysAddr(0x2fff), 1).unwrap();
        assert!(r.overlaps(&s));
        let t = Range::<PhysAddr>::from_len(PhysAddr(0x3000), 1).unwrap();
        assert!(!r.overlaps(&t));
    }

    #[test]
    fn debug_names_the_space() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{:?}", Ipa(0x10)), "ipa:0x10");
        assert_eq!(format!("{:?}", PhysAddr(0x10)), "pa:0x10");
    }
}
