// SPDX-License-Identifier: MIT OR Apache-2.0
//! The machine as the hostile guest sees it: what its device tree gives it, what it may
//! write, and the addresses it must never be able to hand to OP-TEE.
//!
//! ```text
//!   QEMU virt under moat (dom0 is mapped 1:1, IPA == PA)
//!   0x0000_0000  secure flash (BL1)           forbidden: secure
//!   0x0400_0000  NS flash, 0x0800_0000 GIC,   forbidden: device (mapped as device, or
//!   0x0900_0000  UART, 0x0a00_0000 virtio...             emulated, never RAM)
//!   0x0e00_0000  secure RAM (BL31, OP-TEE)    forbidden: secure
//!   0x4000_0000  RAM bank                     the guest's (its /memory)
//!   0x4200_0000  OP-TEE's static SHM          forbidden: optee-shm (carved out of /memory)
//!   0x4220_0000  RAM bank: this image at 0x5000_0000 (text, data, BSS, stack, heap,
//!                the arena the campaign builds its messages and buffers in)
//!   0x6000_0000  moat's image, heap, frames   forbidden: moat
//!   ...          RAM bank, the DT at its end
//!   end of RAM   other guests' RAM, nothing   forbidden: beyond-ram
//! ```
//!
//! Every forbidden window is checked against `/memory` when the layout is built: a window
//! the guest was given as RAM is itself a finding (moat gave away what it promised to
//! keep), reported by [`Layout::given_away`], and never used as a forbidden address.

use alloc::string::String;
use alloc::vec::Vec;

use hv_core::fdt::{decode_reg, Tree};

/// A range of guest-physical addresses `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

/// Why an address must never be usable as a buffer or a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forbidden {
    /// moat's own image, stacks, heap and stage-2 frames (TF-A's BL33 at 0x60000000,
    /// `BL33_ADDR` in tools/xtask/src/profile.rs).
    Moat,
    /// Secure-world memory: secure flash (BL1) and secure RAM (BL31, OP-TEE's core).
    Secure,
    /// OP-TEE's static shared memory, reserved by Debian's OP-TEE builds.
    OpteeShm,
    /// MMIO: devices dom0 has passed through (mapped as device memory) or that moat
    /// emulates (never mapped).
    Device,
    /// RAM between the guest's banks that is not its own (another guest's, or moat's).
    Gap,
    /// Above the guest's last bank: other guests' RAM, or nothing at all.
    BeyondRam,
}

/// What the guest's device tree says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// RAM banks (`/memory*` `reg`), sorted.
    pub ram: Vec<Span>,
    /// The console PL011's registers (`arm,pl011`, status okay).
    pub uart: Option<u64>,
    /// The GICv3 (`arm,gic-v3`): its distributor and its redistributor region, the first
    /// two entries of its `reg`.
    pub gic: Option<(Span, Span)>,
    /// `/chosen/bootargs`.
    pub bootargs: String,
    /// `/firmware/optee` exists and its `method` is `"smc"`.
    pub optee_smc: bool,
    /// `/psci`'s `method` is `"hvc"` (else SMC).
    pub psci_hvc: bool,
}

/// Why the device tree is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// The blob does not parse.
    Malformed(hv_core::fdt::FdtError),
    /// No `/memory` with a usable `reg`.
    NoMemory,
}

/// The guest's memory map, with what it may write and what it must never get accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// RAM banks from `/memory`, sorted.
    pub ram: Vec<Span>,
    /// Where the campaign builds messages, page lists and buffers: part of this image's
    /// BSS, page-aligned.
    pub arena: Span,
    /// The guest's own RAM that must stay untouched: its image (text, data, stack, heap)
    /// and its device tree.
    pub keep: Vec<Span>,
    /// Last pages of RAM banks followed by memory the guest does not own: a message written
    /// at the very end of one of them runs out of the guest's RAM.
    pub edges: Vec<u64>,
    /// Forbidden windows, each outside `ram`.
    pub forbidden: Vec<(Forbidden, Span)>,
    /// Forbidden windows the guest was given as RAM (a finding).
    pub given_away: Vec<(Forbidden, Span)>,
    /// The devices moat emulates for the guest, where its device tree puts them: the only
    /// MMIO the guest touches (the `mmio` family, its console).
    pub devices: Devices,
}

/// A device moat emulates for the guest (every access traps to moat's model of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    /// The GICv3 distributor (GICD), 64 KiB.
    Gicd,
    /// The redistributors (GICR), 128 KiB per vCPU.
    Gicr,
    /// The console PL011, 4 KiB.
    Uart,
}

/// Where the emulated devices are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// The distributor.
    pub gicd: Option<Span>,
    /// The redistributor region.
    pub gicr: Option<Span>,
    /// The console UART's register frame.
    pub uart: Option<Span>,
}

/// 4 KiB: OP-TEE's page-list granule.
pub const PAGE: u64 = 4096;
/// moat's load address (TF-A's PRELOADED_BL33_BASE; `BL33_ADDR` in xtask's profile.rs).
pub const MOAT_BASE: u64 = 0x6000_0000;
/// Most of moat's region the campaign aims at (moat is 14 MiB today).
pub const MOAT_WINDOW: u64 = 16 << 20;
/// OP-TEE's static SHM `[start, end)` (`OPTEE_SHM` in xtask's profile.rs).
pub const OPTEE_SHM: Span = Span {
    start: 0x4200_0000,
    end: 0x4220_0000,
};
/// QEMU virt's secure memory (hw/arm/virt.c: VIRT_FLASH bank 0 is the secure flash when
/// `secure=on`, VIRT_SECURE_MEM is the secure RAM TF-A and OP-TEE run in).
pub const SECURE: [Span; 2] = [
    Span {
        start: 0x0,
        end: 0x0400_0000,
    },
    Span {
        start: 0x0e00_0000,
        end: 0x0f00_0000,
    },
];
/// QEMU virt MMIO pages (hw/arm/virt.c memmap): NS flash, GIC distributor, the console
/// UART, the RTC, the secure UART, virtio-mmio, PCIe MMIO, PCIe ECAM and high MMIO.
pub const DEVICES: [u64; 9] = [
    0x0400_0000,
    0x0800_0000,
    0x0900_0000,
    0x0901_0000,
    0x0904_0000,
    0x0a00_0000,
    0x1000_0000,
    0x40_1000_0000,
    0x80_0000_0000,
];
/// A PL011's register frame (DDI 0183G, Table 3-1).
pub const PL011_FRAME: u64 = 0x1000;
/// How far above the guest's last bank `BeyondRam` addresses reach.
const BEYOND: u64 = 2 << 30;

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl Span {
    /// `[start, start + len)`.
    pub const fn at(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Empty?
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Does `[a, a + len)` lie inside?
    pub fn holds(&self, a: u64, len: u64) -> bool {
        a >= self.start && a.checked_add(len).is_some_and(|e| e <= self.end)
    }

    /// Do the two overlap?
    pub fn overlaps(&self, o: &Span) -> bool {
        self.start < o.end && o.start < self.end
    }
}

impl Forbidden {
    /// The family of addresses, as findings name it.
    pub const fn name(self) -> &'static str {
        match self {
            Forbidden::Moat => "moat's image",
            Forbidden::Secure => "secure memory",
            Forbidden::OpteeShm => "OP-TEE's static SHM",
            Forbidden::Device => "MMIO",
            Forbidden::Gap => "RAM that is not the guest's",
            Forbidden::BeyondRam => "beyond the guest's RAM",
        }
    }
}

impl Device {
    /// Its name in findings.
    pub const fn name(self) -> &'static str {
        match self {
            Device::Gicd => "GICD",
            Device::Gicr => "GICR",
            Device::Uart => "the PL011",
        }
    }
}

impl Devices {
    /// The devices of a machine, its console at `uart`.
    pub fn of(m: &Machine, uart: Option<u64>) -> Self {
        Self {
            gicd: m.gic.map(|(d, _)| d),
            gicr: m.gic.map(|(_, r)| r),
            uart: uart.map(|u| Span::at(u, PL011_FRAME)),
        }
    }

    /// Where `d` is, if the device tree has it.
    pub fn get(&self, d: Device) -> Option<Span> {
        match d {
            Device::Gicd => self.gicd,
            Device::Gicr => self.gicr,
            Device::Uart => self.uart,
        }
    }

    /// Every device the guest has, with its frame.
    pub fn iter(&self) -> impl Iterator<Item = (Device, Span)> + '_ {
        [Device::Gicd, Device::Gicr, Device::Uart]
            .into_iter()
            .filter_map(|d| self.get(d).map(|s| (d, s)))
    }

    /// The device whose frame holds `[a, a + len)`.
    pub fn holding(&self, a: u64, len: u64) -> Option<Device> {
        self.iter().find(|(_, s)| s.holds(a, len)).map(|(d, _)| d)
    }
}

impl Machine {
    /// Read the device tree moat wrote for the guest.
    pub fn from_dtb(blob: &[u8]) -> Result<Self, DtError> {
        let tree = Tree::parse(blob).map_err(DtError::Malformed)?;
        let root = &tree.root;
        let ac = root.prop_u32("#address-cells").unwrap_or(2);
        let sc = root.prop_u32("#size-cells").unwrap_or(1);
        let mut m = Machine::default();
        for n in &root.children {
            let okay = n
                .prop_str("status")
                .is_none_or(|s| s == "okay" || s == "ok");
            if !okay {
                continue;
            }
            if n.prop_str("device_type") == Some("memory") {
                for (base, size) in n
                    .prop("reg")
                    .and_then(|r| decode_reg(r, ac, sc))
                    .unwrap_or_default()
                {
                    if size > 0 {
                        m.ram.push(Span::at(base, size));
                    }
                }
            }
            if n.is_compatible("arm,gic-v3") && m.gic.is_none() {
                let reg = n.prop("reg").and_then(|r| decode_reg(r, ac, sc));
                if let Some(&[(d, dl), (r, rl), ..]) = reg.as_deref() {
                    m.gic = Some((Span::at(d, dl), Span::at(r, rl)));
                }
            }
            if n.is_compatible("arm,pl011") && m.uart.is_none() {
                m.uart = n
                    .prop("reg")
                    .and_then(|r| decode_reg(r, ac, sc))
                    .and_then(|r| r.first().map(|&(b, _)| b));
            }
        }
        m.ram.sort();
        if m.ram.is_empty() {
            return Err(DtError::NoMemory);
        }
        m.bootargs = tree
            .find("/chosen")
            .and_then(|c| c.prop_str("bootargs"))
            .unwrap_or("")
            .into();
        m.optee_smc = tree
            .find("/firmware/optee")
            .is_some_and(|o| o.prop_str("method") == Some("smc"));
        m.psci_hvc = tree
            .find("/psci")
            .is_some_and(|p| p.prop_str("method") == Some("hvc"));
        Ok(m)
    }
}

impl Layout {
    /// The layout of a guest with `ram` (sorted banks) whose arena is `arena` and whose
    /// image and device tree are `keep`.
    pub fn new(ram: &[Span], arena: Span, keep: &[Span]) -> Self {
        let ram: Vec<Span> = ram.to_vec();
        let in_ram = |a: u64| ram.iter().any(|r| r.holds(a, 1));
        let mut windows: Vec<(Forbidden, Span)> = Vec::new();
        windows.push((Forbidden::Moat, Span::at(MOAT_BASE, MOAT_WINDOW)));
        windows.extend(SECURE.iter().map(|s| (Forbidden::Secure, *s)));
        windows.push((Forbidden::OpteeShm, OPTEE_SHM));
        windows.extend(
            DEVICES
                .iter()
                .map(|&d| (Forbidden::Device, Span::at(d, 4 * PAGE))),
        );
        let top = ram.iter().map(|r| r.end).max().unwrap_or(0);
        windows.push((Forbidden::BeyondRam, Span::at(top, BEYOND)));
        // Holes between banks that no named window explains.
        for w in ram.windows(2) {
            let hole = Span {
                start: w[0].end,
                end: w[1].start,
            };
            let named = windows
                .iter()
                .any(|(_, s)| s.start <= hole.start && hole.start < s.end);
            if !hole.is_empty() && !named {
                windows.push((Forbidden::Gap, hole));
            }
        }
        let mut forbidden = Vec::new();
        let mut given_away = Vec::new();
        for (kind, span) in windows {
            // Keep only what is outside every bank; a window's part inside RAM was given
            // to the guest.
            if ram.iter().any(|r| r.overlaps(&span)) {
                let inside = ram.iter().any(|r| r.holds(span.start, 1));
                if kind != Forbidden::Gap && inside {
                    given_away.push((kind, span));
                }
                let free: Vec<Span> = subtract(span, &ram);
                forbidden.extend(free.into_iter().map(|s| (kind, s)));
            } else {
                forbidden.push((kind, span));
            }
        }
        let edges = ram
            .iter()
            .filter(|r| !in_ram(r.end) && r.len() >= PAGE)
            .map(|r| r.end - PAGE)
            .filter(|&p| {
                let page = Span::at(p, PAGE);
                !arena.overlaps(&page) && !keep.iter().any(|k| k.overlaps(&page))
            })
            .collect();
        Self {
            ram,
            arena,
            keep: keep.to_vec(),
            edges,
            forbidden,
            given_away,
            devices: Devices::default(),
        }
    }

    /// The same layout with the emulated devices at `devices`.
    pub fn with_devices(mut self, devices: Devices) -> Self {
        self.devices = devices;
        self
    }

    /// Is `[a, a + len)` the guest's RAM?
    pub fn is_ram(&self, a: u64, len: u64) -> bool {
        self.ram.iter().any(|r| r.holds(a, len))
    }

    /// May the guest write `[a, a + len)`: inside the arena, or inside one of the edge
    /// pages?
    pub fn writable(&self, a: u64, len: u64) -> bool {
        self.arena.holds(a, len) || self.edges.iter().any(|&p| Span::at(p, PAGE).holds(a, len))
    }

    /// The forbidden windows of one kind.
    pub fn windows(&self, kind: Forbidden) -> impl Iterator<Item = &Span> {
        self.forbidden
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, s)| s)
    }

    /// Is `[a, a + len)` entirely outside the guest's RAM, in some forbidden window?
    pub fn is_forbidden(&self, a: u64, len: u64) -> Option<Forbidden> {
        if self
            .ram
            .iter()
            .any(|r| r.overlaps(&Span::at(a, len.max(1))))
        {
            return None;
        }
        Some(
            self.forbidden
                .iter()
                .find(|(_, s)| s.holds(a, 1))
                .map_or(Forbidden::BeyondRam, |(k, _)| *k),
        )
    }
}

/// `span` minus every bank in `ram`.
fn subtract(span: Span, ram: &[Span]) -> Vec<Span> {
    let mut pieces = alloc::vec![span];
    for r in ram {
        let mut next = Vec::new();
        for p in pieces {
            if !p.overlaps(r) {
                next.push(p);
                continue;
            }
            if p.start < r.start {
                next.push(Span {
                    start: p.start,
                    end: r.start,
                });
            }
            if r.end < p.end {
                next.push(Span {
                    start: r.end,
                    end: p.end,
                });
            }
        }
        pieces = next;
    }
    pieces
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hv_core::fdt::{Node, Tree};

    /// dom0's banks on the 2 GiB QEMU board, as moat gives them (console log of
    /// moat-dom0): the SHM carved out, moat's 14 MiB skipped.
    pub fn dom0_ram() -> Vec<Span> {
        alloc::vec![
            Span::at(0x4000_0000, 0x200_0000),
            Span {
                start: 0x4220_0000,
                end: 0x6000_0000
            },
            Span {
                start: 0x60e0_0000,
                end: 0x80e0_0000
            },
        ]
    }

    pub fn dom0_layout() -> Layout {
        Layout::new(
            &dom0_ram(),
            Span::at(0x5020_0000, 16 << 20),
            &[
                Span::at(0x5000_0000, 0x20_0000),
                Span::at(0x80c0_0000, 0x20_0000),
            ],
        )
    }

    fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    fn dt() -> Vec<u8> {
        let mut t = Tree::default();
        t.root.set_prop("#address-cells", cells(&[2]));
        t.root.set_prop("#size-cells", cells(&[2]));
        let mut mem = Node::new("memory@40000000");
        mem.set_prop("device_type", b"memory\0".to_vec());
        mem.set_prop(
            "reg",
            cells(&[
                0,
                0x4220_0000,
                0,
                0x1de0_0000,
                0,
                0x4000_0000,
                0,
                0x200_0000,
            ]),
        );
        t.root.children.push(mem);
        let mut gic = Node::new("intc@8000000");
        gic.set_prop("compatible", b"arm,gic-v3\0".to_vec());
        gic.set_prop(
            "reg",
            cells(&[0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x4_0000]),
        );
        t.root.children.push(gic);
        let mut uart = Node::new("pl011@9000000");
        uart.set_prop("compatible", b"arm,pl011\0arm,primecell\0".to_vec());
        uart.set_prop("reg", cells(&[0, 0x0900_0000, 0, 0x1000]));
        t.root.children.push(uart);
        let mut sec = Node::new("pl011@9040000");
        sec.set_prop("compatible", b"arm,pl011\0".to_vec());
        sec.set_prop("status", b"disabled\0".to_vec());
        sec.set_prop("reg", cells(&[0, 0x0904_0000, 0, 0x1000]));
        t.root.children.push(sec);
        let mut chosen = Node::new("chosen");
        chosen.set_prop("bootargs", b"hostile seed=3 cases=9\0".to_vec());
        t.root.children.push(chosen);
        let mut fw = Node::new("firmware");
        let mut optee = Node::new("optee");
        optee.set_prop("method", b"smc\0".to_vec());
        fw.children.push(optee);
        t.root.children.push(fw);
        let mut psci = Node::new("psci");
        psci.set_prop("method", b"hvc\0".to_vec());
        t.root.children.push(psci);
        t.to_dtb().unwrap()
    }

    #[test]
    fn the_device_tree_gives_ram_uart_bootargs_and_conduits() {
        let m = Machine::from_dtb(&dt()).unwrap();
        assert_eq!(
            m.ram,
            [
                Span::at(0x4000_0000, 0x200_0000),
                Span::at(0x4220_0000, 0x1de0_0000)
            ]
        );
        assert_eq!(
            m.uart,
            Some(0x0900_0000),
            "the okay PL011, not the secure one"
        );
        assert_eq!(
            m.gic,
            Some((
                Span::at(0x0800_0000, 0x1_0000),
                Span::at(0x080a_0000, 0x4_0000)
            ))
        );
        let d = Devices::of(&m, m.uart);
        assert_eq!(d.uart, Some(Span::at(0x0900_0000, 0x1000)));
        assert_eq!(d.holding(0x080a_0ff8, 8), Some(Device::Gicr));
        assert_eq!(d.holding(0x0800_fffc, 8), None, "straddles GICD's end");
        assert_eq!(d.iter().count(), 3);
        assert_eq!(m.bootargs, "hostile seed=3 cases=9");
        assert!(m.optee_smc && m.psci_hvc);
        assert!(Machine::from_dtb(&[0u8; 8]).is_err());
    }

    #[test]
    fn forbidden_windows_lie_outside_ram_and_are_named() {
        let l = dom0_layout();
        assert!(l.given_away.is_empty());
        for (_, s) in &l.forbidden {
            assert!(!l.ram.iter().any(|r| r.overlaps(s)), "{s:x?}");
        }
        assert_eq!(l.is_forbidden(0x6000_0000, 8), Some(Forbidden::Moat));
        assert_eq!(l.is_forbidden(0x4200_1000, 8), Some(Forbidden::OpteeShm));
        assert_eq!(l.is_forbidden(0x0e10_0000, 8), Some(Forbidden::Secure));
        assert_eq!(l.is_forbidden(0x0900_0000, 4), Some(Forbidden::Device));
        assert_eq!(l.is_forbidden(0x9000_0000, 4), Some(Forbidden::BeyondRam));
        assert_eq!(l.is_forbidden(0x4000_0000, 4), None);
        // A message at the end of the first bank runs into OP-TEE's SHM; the one ending at
        // moat's base into moat. The last bank holds the DT: not an edge.
        assert_eq!(l.edges, [0x41ff_f000, 0x5fff_f000]);
        assert!(l.writable(0x5020_0000, 4096) && l.writable(0x41ff_fff0, 16));
        assert!(!l.writable(0x5000_0000, 8) && !l.writable(0x41ff_fff0, 17));
    }

    #[test]
    fn a_window_inside_ram_is_reported_as_given_away() {
        let ram = [Span::at(0x4000_0000, 0x8000_0000)];
        let l = Layout::new(&ram, Span::at(0x5000_0000, 1 << 20), &[]);
        let kinds: Vec<Forbidden> = l.given_away.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [Forbidden::Moat, Forbidden::OpteeShm]);
        assert_eq!(l.is_forbidden(0x6000_0000, 8), None);
    }

    #[test]
    fn holes_between_banks_are_gaps() {
        let ram = [
            Span::at(0x4000_0000, 0x100_0000),
            Span::at(0x4800_0000, 0x100_0000),
        ];
        let l = Layout::new(&ram, Span::at(0x4000_0000, 1 << 20), &[]);
        assert_eq!(l.is_forbidden(0x4400_0000, 8), Some(Forbidden::Gap));
    }
}
