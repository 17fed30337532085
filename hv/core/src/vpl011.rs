// SPDX-License-Identifier: MIT OR Apache-2.0
//! An emulated PL011 UART (Arm PrimeCell UART (PL011) Technical Reference Manual, DDI 0183G,
//! chapter 3 "Programmers Model").
//!
//! Each domain with a console gets one at the IPA where the guest's DT says it is (dom0:
//! the host UART's address and IRQ, see [`crate::dom0dt`]). The guest's accesses trap;
//! `hv` calls [`Vpl011::read`] / [`Vpl011::write`], prints the byte a write returns through
//! [`crate::console`], feeds keyboard input with [`Vpl011::push_input`], and drives the
//! guest's interrupt line from [`Vpl011::irq_level`].
//!
//! ```text
//!   guest writes UARTDR --> Some(byte) --> console mux --> physical UART
//!   physical UART RX --> console mux --> push_input --> RX FIFO --> guest reads UARTDR
//!                                                  \--> RIS.RX/RT --> irq_level()
//! ```
//!
//! Model: transmission is instantaneous, so the TX FIFO is always empty (`TXFE` = 1,
//! `TXFF` = `BUSY` = 0) and every data write raises the TX interrupt (the FIFO "drains
//! through" its trigger level). There is no character time, so the receive-timeout
//! interrupt is raised as soon as data sits below the RX trigger level. Bytes are sent
//! whatever `UARTCR.UARTEN`/`TXE` say, so an early console that assumes firmware set the
//! UART up is not lost. Reserved offsets are RAZ/WI; 64-bit accesses and misaligned
//! accesses are errors the hypervisor answers RAZ/WI too (`hv/src/trap.rs`).

use tock_registers::fields::FieldValue;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

use crate::mmio::Width;

/// Depth of the receive FIFO (the PL011 r1p5 has 32-entry FIFOs, DDI 0183G chapter 2).
/// Bounds the input a console can queue for a guest that does not read it: further bytes
/// are dropped and flagged as overrun, never buffered.
pub const RX_FIFO_DEPTH: usize = 32;
/// Size of the register frame.
pub const PL011_SIZE: u64 = 0x1000;

register_bitfields! {u32,
    /// UARTDR, data register (§3.3.1).
    pub UARTDR [
        /// Overrun error.
        OE OFFSET(11) NUMBITS(1) [],
        /// Break error.
        BE OFFSET(10) NUMBITS(1) [],
        /// Parity error.
        PE OFFSET(9) NUMBITS(1) [],
        /// Framing error.
        FE OFFSET(8) NUMBITS(1) [],
        /// Data character.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// UARTRSR/UARTECR, receive status / error clear (§3.3.2).
    pub UARTRSR [
        /// Overrun error: data arrived with the FIFO full.
        OE OFFSET(3) NUMBITS(1) []
    ],
    /// UARTFR, flag register (§3.3.3).
    pub UARTFR [
        /// Transmit FIFO empty.
        TXFE OFFSET(7) NUMBITS(1) [],
        /// Receive FIFO full.
        RXFF OFFSET(6) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// UARTLCR_H, line control (§3.3.7).
    pub UARTLCR_H [
        /// Stick parity select.
        SPS OFFSET(7) NUMBITS(1) [],
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [
            Bits5 = 0,
            Bits6 = 1,
            Bits7 = 2,
            Bits8 = 3
        ],
        /// Enable FIFOs.
        FEN OFFSET(4) NUMBITS(1) [],
        /// Two stop bits select.
        STP2 OFFSET(3) NUMBITS(1) [],
        /// Even parity select.
        EPS OFFSET(2) NUMBITS(1) [],
        /// Parity enable.
        PEN OFFSET(1) NUMBITS(1) [],
        /// Send break.
        BRK OFFSET(0) NUMBITS(1) []
    ],
    /// UARTCR, control register (§3.3.8). Reset value 0x0300 (TXE | RXE).
    pub UARTCR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// Loopback enable.
        LBE OFFSET(7) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    /// UARTIFLS, interrupt FIFO level select (§3.3.9). Reset value 0x12 (both 1/2).
    pub UARTIFLS [
        /// Receive interrupt FIFO level select.
        RXIFLSEL OFFSET(3) NUMBITS(3) [
            OneEighth = 0,
            OneQuarter = 1,
            OneHalf = 2,
            ThreeQuarters = 3,
            SevenEighths = 4
        ],
        /// Transmit interrupt FIFO level select.
        TXIFLSEL OFFSET(0) NUMBITS(3) []
    ],
    /// UARTIMSC / UARTRIS / UARTMIS / UARTICR share one layout (§3.3.10 - §3.3.13).
    pub UARTINT [
        /// Overrun error interrupt.
        OE OFFSET(10) NUMBITS(1) [],
        /// Receive timeout interrupt.
        RT OFFSET(6) NUMBITS(1) [],
        /// Transmit interrupt.
        TX OFFSET(5) NUMBITS(1) [],
        /// Receive interrupt.
        RX OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 register frame (DDI 0183G §3.2, Table 3-1). Only the layout is used.
    pub Pl011Layout {
        (0x000 => dr: ReadWrite<u32, UARTDR::Register>),
        (0x004 => rsr: ReadWrite<u32, UARTRSR::Register>),
        (0x008 => _reserved0),
        (0x018 => fr: ReadOnly<u32, UARTFR::Register>),
        (0x01c => _reserved1),
        (0x020 => ilpr: ReadWrite<u32>),
        (0x024 => ibrd: ReadWrite<u32>),
        (0x028 => fbrd: ReadWrite<u32>),
        (0x02c => lcr_h: ReadWrite<u32, UARTLCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, UARTCR::Register>),
        (0x034 => ifls: ReadWrite<u32, UARTIFLS::Register>),
        (0x038 => imsc: ReadWrite<u32, UARTINT::Register>),
        (0x03c => ris: ReadOnly<u32, UARTINT::Register>),
        (0x040 => mis: ReadOnly<u32, UARTINT::Register>),
        (0x044 => icr: WriteOnly<u32, UARTINT::Register>),
        (0x048 => dmacr: ReadWrite<u32>),
        (0x04c => _reserved2),
        (0xfe0 => periph_id: [ReadOnly<u32>; 4]),
        (0xff0 => pcell_id: [ReadOnly<u32>; 4]),
        (0x1000 => @END),
    }
}

/// Offsets inside the frame.
mod off {
    use super::Pl011Layout;
    use core::mem::offset_of;
    pub const DR: usize = offset_of!(Pl011Layout, dr);
    pub const RSR: usize = offset_of!(Pl011Layout, rsr);
    pub const FR: usize = offset_of!(Pl011Layout, fr);
    pub const ILPR: usize = offset_of!(Pl011Layout, ilpr);
    pub const IBRD: usize = offset_of!(Pl011Layout, ibrd);
    pub const FBRD: usize = offset_of!(Pl011Layout, fbrd);
    pub const LCR_H: usize = offset_of!(Pl011Layout, lcr_h);
    pub const CR: usize = offset_of!(Pl011Layout, cr);
    pub const IFLS: usize = offset_of!(Pl011Layout, ifls);
    pub const IMSC: usize = offset_of!(Pl011Layout, imsc);
    pub const RIS: usize = offset_of!(Pl011Layout, ris);
    pub const MIS: usize = offset_of!(Pl011Layout, mis);
    pub const ICR: usize = offset_of!(Pl011Layout, icr);
    pub const DMACR: usize = offset_of!(Pl011Layout, dmacr);
    pub const PERIPH_ID: usize = offset_of!(Pl011Layout, periph_id);
    pub const PCELL_ID: usize = offset_of!(Pl011Layout, pcell_id);
}

/// UARTPeriphID0-3 (§3.3): part number 0x011, designer 0x41 (Arm), revision 3 (r1p5),
/// configuration 0. Linux's AMBA bus matches on these, and sizes its FIFO from the
/// revision (32 entries from revision 3 on, matching [`RX_FIFO_DEPTH`]).
pub const PERIPH_ID: [u32; 4] = [0x11, 0x10, 0x34, 0x00];
/// UARTPCellID0-3 (§3.3): the PrimeCell identification 0xB105F00D.
pub const PCELL_ID: [u32; 4] = [0x0d, 0xf0, 0x05, 0xb1];

/// Why an access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vpl011Error {
    /// 64-bit accesses are not allowed.
    BadWidth {
        /// Offset inside the frame.
        offset: usize,
    },
    /// The offset is not aligned to the access width.
    Misaligned {
        /// Offset inside the frame.
        offset: usize,
    },
}

/// One emulated PL011.
#[derive(Clone, Debug)]
pub struct Vpl011 {
    /// Receive FIFO ring buffer.
    rx: [u8; RX_FIFO_DEPTH],
    /// Index of the oldest byte.
    rx_head: usize,
    /// Bytes in the FIFO.
    rx_len: usize,
    /// UARTRSR.
    rsr: LocalRegisterCopy<u32, UARTRSR::Register>,
    /// UARTILPR.
    ilpr: u32,
    /// UARTIBRD (16 bits).
    ibrd: u32,
    /// UARTFBRD (6 bits).
    fbrd: u32,
    /// UARTLCR_H.
    lcr_h: LocalRegisterCopy<u32, UARTLCR_H::Register>,
    /// UARTCR.
    cr: LocalRegisterCopy<u32, UARTCR::Register>,
    /// UARTIFLS.
    ifls: LocalRegisterCopy<u32, UARTIFLS::Register>,
    /// UARTIMSC.
    imsc: LocalRegisterCopy<u32, UARTINT::Register>,
    /// UARTRIS.
    ris: LocalRegisterCopy<u32, UARTINT::Register>,
    /// UARTDMACR.
    dmacr: u32,
}

/// Interrupt bits the model implements.
const INT_MASK: u32 = (1 << 10) | (1 << 6) | (1 << 5) | (1 << 4);

impl From<Vpl011Error> for crate::error::Error {
    fn from(e: Vpl011Error) -> Self {
        Self::Vpl011(e)
    }
}

impl Default for Vpl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Vpl011 {
    /// A UART in its reset state (UARTCR = 0x0300, UARTIFLS = 0x12, FIFO empty).
    pub fn new() -> Self {
        Self {
            rx: [0; RX_FIFO_DEPTH],
            rx_head: 0,
            rx_len: 0,
            rsr: LocalRegisterCopy::new(0),
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: LocalRegisterCopy::new(0),
            cr: LocalRegisterCopy::new((UARTCR::TXE::SET + UARTCR::RXE::SET).value),
            ifls: LocalRegisterCopy::new(0x12),
            imsc: LocalRegisterCopy::new(0),
            ris: LocalRegisterCopy::new(0),
            dmacr: 0,
        }
    }

    /// The interrupt line: any raw interrupt that is unmasked (UARTMIS != 0).
    pub fn irq_level(&self) -> bool {
        self.mis() != 0
    }

    /// Offer one input byte. Returns `false` (and flags an overrun) when the FIFO — or the
    /// one-byte holding register while FIFOs are disabled — is full.
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.rx_len >= self.rx_capacity() {
            self.rsr.modify(UARTRSR::OE::SET);
            self.ris.modify(UARTINT::OE::SET);
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_FIFO_DEPTH] = byte;
        self.rx_len += 1;
        self.update_rx_interrupts();
        true
    }

    /// Bytes waiting in the receive FIFO.
    pub fn rx_len(&self) -> usize {
        self.rx_len
    }

    /// Emulate a read. Widths 1, 2 and 4 are allowed at naturally aligned offsets; a
    /// narrow access returns the matching bytes of the 32-bit register.
    pub fn read(&mut self, offset: usize, width: Width) -> Result<u32, Vpl011Error> {
        let (reg, shift) = Self::check(offset, width)?;
        let v = match reg {
            off::DR => self.pop_rx(),
            off::RSR => self.rsr.get(),
            off::FR => self.fr(),
            off::ILPR => self.ilpr,
            off::IBRD => self.ibrd,
            off::FBRD => self.fbrd,
            off::LCR_H => self.lcr_h.get(),
            off::CR => self.cr.get(),
            off::IFLS => self.ifls.get(),
            off::IMSC => self.imsc.get(),
            off::RIS => self.ris.get(),
            off::MIS => self.mis(),
            off::DMACR => self.dmacr,
            r if (off::PERIPH_ID..off::PERIPH_ID + 16).contains(&r) => {
                PERIPH_ID[(r - off::PERIPH_ID) / 4]
            }
            r if (off::PCELL_ID..off::PCELL_ID + 16).contains(&r) => {
                PCELL_ID[(r - off::PCELL_ID) / 4]
            }
            _ => 0, // reserved, write-only (ICR) or test registers: RAZ
        };
        Ok((v >> shift) & mask(width))
    }

    /// Emulate a write. Returns the byte to transmit for a UARTDR write.
    pub fn write(
        &mut self,
        offset: usize,
        width: Width,
        value: u32,
    ) -> Result<Option<u8>, Vpl011Error> {
        let (reg, shift) = Self::check(offset, width)?;
        if shift != 0 {
            return Ok(None); // the upper bytes of these registers are reserved: WI
        }
        let value = value & mask(width);
        match reg {
            off::DR => {
                // Transmitted at once: the TX FIFO drains through its trigger level.
                self.ris.modify(UARTINT::TX::SET);
                return Ok(Some((value & 0xff) as u8));
            }
            off::RSR => self.rsr.set(0), // UARTECR: any write clears the error flags
            off::ILPR => self.ilpr = value & 0xff,
            off::IBRD => self.ibrd = value & 0xffff,
            off::FBRD => self.fbrd = value & 0x3f,
            off::LCR_H => {
                let was_fifo = self.lcr_h.is_set(UARTLCR_H::FEN);
                self.lcr_h.set(value & 0xff);
                if was_fifo && !self.lcr_h.is_set(UARTLCR_H::FEN) {
                    // Disabling the FIFOs flushes them (§3.3.7, FEN).
                    self.rx_len = 0;
                }
                self.update_rx_interrupts();
            }
            off::CR => self.cr.set(value & 0xffff),
            off::IFLS => {
                self.ifls.set(value & 0x3f);
                self.update_rx_interrupts();
            }
            off::IMSC => self.imsc.set(value & INT_MASK),
            off::ICR => self.ris.set(self.ris.get() & !value),
            off::DMACR => self.dmacr = value & 0x7,
            _ => {} // reserved or read-only: WI
        }
        Ok(None)
    }

    fn check(offset: usize, width: Width) -> Result<(usize, u32), Vpl011Error> {
        if width == Width::Double {
            return Err(Vpl011Error::BadWidth { offset });
        }
        if !offset.is_multiple_of(width.bytes() as usize) {
            return Err(Vpl011Error::Misaligned { offset });
        }
        Ok((offset & !3, ((offset & 3) * 8) as u32))
    }

    fn fr(&self) -> u32 {
        let v: FieldValue<u32, UARTFR::Register> = UARTFR::TXFE::SET
            + UARTFR::RXFE.val(u32::from(self.rx_len == 0))
            + UARTFR::RXFF.val(u32::from(self.rx_len >= self.rx_capacity()));
        v.value
    }

    fn mis(&self) -> u32 {
        self.ris.get() & self.imsc.get()
    }

    /// FIFO mode: [`RX_FIFO_DEPTH`]; character mode: the one-byte holding register.
    fn rx_capacity(&self) -> usize {
        if self.lcr_h.is_set(UARTLCR_H::FEN) {
            RX_FIFO_DEPTH
        } else {
            1
        }
    }

    /// RX trigger level in bytes (UARTIFLS.RXIFLSEL as a fraction of the FIFO; 1 when the
    /// FIFOs are disabled).
    fn rx_trigger(&self) -> usize {
        if !self.lcr_h.is_set(UARTLCR_H::FEN) {
            return 1;
        }
        let eighths = match self.ifls.read_as_enum(UARTIFLS::RXIFLSEL) {
            Some(UARTIFLS::RXIFLSEL::Value::OneEighth) => 1,
            Some(UARTIFLS::RXIFLSEL::Value::OneQuarter) => 2,
            Some(UARTIFLS::RXIFLSEL::Value::ThreeQuarters) => 6,
            Some(UARTIFLS::RXIFLSEL::Value::SevenEighths) => 7,
            _ => 4,
        };
        RX_FIFO_DEPTH * eighths / 8
    }

    /// RX is raised at the trigger level; RT (timeout) while data sits below it.
    fn update_rx_interrupts(&mut self) {
        let trigger = self.rx_trigger();
        let rx = self.rx_len >= trigger;
        let rt = self.rx_len > 0 && !rx;
        self.ris
            .modify(UARTINT::RX.val(u32::from(rx)) + UARTINT::RT.val(u32::from(rt)));
    }

    fn pop_rx(&mut self) -> u32 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_FIFO_DEPTH;
        self.rx_len -= 1;
        self.update_rx_interrupts();
        u32::from(b)
    }
}

fn mask(width: Width) -> u32 {
    width.mask() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Width = Width::Word;

    fn read(u: &mut Vpl011, o: usize) -> u32 {
        u.read(o, W).unwrap()
    }

    #[test]
    fn layout_offsets_match_the_trm() {
        assert_eq!(off::FR, 0x18);
        assert_eq!(off::IBRD, 0x24);
        assert_eq!(off::CR, 0x30);
        assert_eq!(off::IMSC, 0x38);
        assert_eq!(off::ICR, 0x44);
        assert_eq!(off::PERIPH_ID, 0xfe0);
        assert_eq!(off::PCELL_ID, 0xff0);
    }

    #[test]
    fn identification_registers() {
        let mut u = Vpl011::new();
        let ids: Vec<u32> = (0..8).map(|i| read(&mut u, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        // Linux's AMBA bus assembles the IDs from these bytes.
        let periph = ids[..4]
            .iter()
            .enumerate()
            .fold(0, |a, (i, b)| a | b << (8 * i));
        assert_eq!(periph & 0x000f_ffff, 0x0004_1011);
    }

    #[test]
    fn reset_state_and_stored_registers() {
        let mut u = Vpl011::new();
        assert_eq!(read(&mut u, off::CR), 0x300);
        assert_eq!(read(&mut u, off::IFLS), 0x12);
        let fr = read(&mut u, off::FR);
        assert_eq!(fr, 1 << 7 | 1 << 4, "TXFE and RXFE; TXFF, BUSY clear");
        for (o, v, expect) in [
            (off::IBRD, 0x1_0027, 0x27),
            (off::FBRD, 0xff, 0x3f),
            (off::LCR_H, 0x70, 0x70),
            (off::CR, 0x301, 0x301),
            (off::IFLS, 0x3f, 0x3f),
            (off::ILPR, 0x1ff, 0xff),
        ] {
            u.write(o, W, v).unwrap();
            assert_eq!(read(&mut u, o), expect, "offset {o:#x}");
        }
        // Reserved offsets are RAZ/WI.
        assert_eq!(u.write(0x08, W, 0xffff).unwrap(), None);
        assert_eq!(read(&mut u, 0x08), 0);
        assert_eq!(read(&mut u, off::ICR), 0);
    }

    #[test]
    fn transmit_returns_the_byte_and_raises_tx() {
        let mut u = Vpl011::new();
        u.write(off::IMSC, W, 1 << 5).unwrap();
        assert!(!u.irq_level());
        assert_eq!(
            u.write(off::DR, Width::Byte, u32::from(b'A')).unwrap(),
            Some(b'A')
        );
        assert_eq!(u.write(off::DR, W, 0x1234).unwrap(), Some(0x34));
        assert_eq!(read(&mut u, off::RIS) & (1 << 5), 1 << 5);
        assert!(u.irq_level());
        u.write(off::ICR, W, 1 << 5).unwrap();
        assert!(!u.irq_level());
        assert_eq!(
            read(&mut u, off::FR) & (1 << 5 | 1 << 3),
            0,
            "never TXFF or BUSY"
        );
    }

    #[test]
    fn receive_fifo_and_rx_interrupts() {
        let mut u = Vpl011::new();
        u.write(off::LCR_H, W, 0x70).unwrap(); // FIFOs on, 8 bits
        u.write(off::IMSC, W, 1 << 4 | 1 << 6).unwrap();
        assert!(u.push_input(b'x'));
        // Below the 1/2 trigger (16 bytes): receive timeout, not RX.
        assert_eq!(read(&mut u, off::MIS), 1 << 6);
        assert!(u.irq_level());
        for i in 0..15 {
            assert!(u.push_input(b'a' + i));
        }
        assert_eq!(read(&mut u, off::MIS), 1 << 4);
        assert_eq!(read(&mut u, off::FR) & (1 << 4), 0, "RXFE clear");
        assert_eq!(read(&mut u, off::DR), u32::from(b'x'));
        assert_eq!(read(&mut u, off::MIS), 1 << 6, "dropped below the trigger");
        for i in 0..15 {
            assert_eq!(read(&mut u, off::DR), u32::from(b'a' + i));
        }
        assert!(!u.irq_level());
        assert_eq!(read(&mut u, off::FR) & (1 << 4), 1 << 4, "RXFE set");
        assert_eq!(read(&mut u, off::DR), 0, "empty FIFO reads 0");
    }

    #[test]
    fn fifo_is_bounded_and_overrun_is_flagged() {
        let mut u = Vpl011::new();
        u.write(off::LCR_H, W, 0x10).unwrap();
        for _ in 0..RX_FIFO_DEPTH {
            assert!(u.push_input(b'z'));
        }
        assert_eq!(read(&mut u, off::FR) & (1 << 6), 1 << 6, "RXFF");
        assert!(!u.push_input(b'!'));
        assert_eq!(u.rx_len(), RX_FIFO_DEPTH);
        assert_eq!(read(&mut u, off::RSR), 1 << 3);
        assert_eq!(read(&mut u, off::RIS) & (1 << 10), 1 << 10);
        u.write(off::RSR, W, 0).unwrap();
        assert_eq!(read(&mut u, off::RSR), 0);
        // Character mode holds a single byte.
        let mut c = Vpl011::new();
        assert!(c.push_input(b'1'));
        assert!(!c.push_input(b'2'));
        c.write(off::IMSC, W, 1 << 4).unwrap();
        assert!(c.irq_level(), "trigger level 1 without FIFOs");
        // Disabling the FIFOs flushes them.
        u.write(off::LCR_H, W, 0).unwrap();
        assert_eq!(u.rx_len(), 0);
    }

    #[test]
    fn narrow_accesses_and_bad_widths() {
        let mut u = Vpl011::new();
        assert_eq!(u.read(off::FR, Width::Half).unwrap(), 0x90);
        assert_eq!(u.read(off::CR + 1, Width::Byte).unwrap(), 0x3);
        assert_eq!(
            u.read(off::DR, Width::Double),
            Err(Vpl011Error::BadWidth { offset: 0 })
        );
        assert_eq!(
            u.write(off::CR + 1, Width::Half, 0),
            Err(Vpl011Error::Misaligned { offset: 0x31 })
        );
        assert_eq!(u.write(off::CR + 2, Width::Half, 0xffff).unwrap(), None);
        assert_eq!(read(&mut u, off::CR), 0x300);
        for o in 0..0x1004 {
            for w in [Width::Byte, Width::Half, Width::Word, Width::Double] {
                let _ = u.read(o, w);
                let _ = u.write(o, w, u32::MAX);
            }
        }
    }
}
