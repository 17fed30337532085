// SPDX-License-Identifier: MIT OR Apache-2.0
//! The physical PL011 UART that moat owns (Arm PrimeCell UART PL011 TRM, DDI 0183).
//! Polled transmit only: moat's console must work before and without interrupts.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// UARTFR, the flag register (TRM 3.3.3).
    FR [
        /// Transmit FIFO full: wait before writing UARTDR.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty: nothing to read.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) [],
    ],
    /// UARTIMSC / UARTICR, interrupt mask set/clear and clear (TRM 3.3.10, 3.3.13).
    INT [
        /// Receive timeout: bytes wait in the FIFO below the trigger level.
        RT OFFSET(6) NUMBITS(1) [],
        /// Receive: the FIFO reached its trigger level.
        RX OFFSET(4) NUMBITS(1) [],
    ],
    /// UARTDR, the data register (TRM 3.3.1).
    DR [
        /// The character transmitted or received.
        DATA OFFSET(0) NUMBITS(8) [],
    ]
}

register_structs! {
    /// The PL011 register block.
    pub Regs {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x038 => imsc: ReadWrite<u32, INT::Register>),
        (0x03c => _reserved2),
        (0x044 => icr: ReadWrite<u32, INT::Register>),
        (0x048 => @END),
    }
}

/// A PL011 at a fixed MMIO address.
pub struct Pl011 {
    regs: &'static Regs,
}

// SAFETY: the registers are MMIO; every access is a single volatile load or store, and the
// console serialises writers with its lock. Sharing the handle between CPUs is sound.
unsafe impl Send for Pl011 {}
// SAFETY: as above.
unsafe impl Sync for Pl011 {}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011 register block, mapped as device memory in
    /// the EL2 stage-1 tables, and owned by moat (no guest may map it).
    pub unsafe fn new(base: u64) -> Self {
        // SAFETY: the caller guarantees `base` is a mapped PL011 that lives forever.
        let regs = unsafe { &*(base as *const Regs) };
        Self { regs }
    }

    /// Send one byte, waiting while the transmit FIFO is full.
    pub fn put(&self, byte: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs.dr.write(DR::DATA.val(u32::from(byte)));
    }

    /// Raise the UART's interrupt when bytes arrive (the console's input path).
    pub fn enable_rx_irq(&self) {
        self.regs.imsc.write(INT::RX::SET + INT::RT::SET);
    }

    /// Stop raising the receive interrupts: input stays in the UART (and, on QEMU, in its
    /// character backend) until [`Pl011::enable_rx_irq`] is called again. The console's
    /// backpressure: never read more than the guest can take.
    pub fn disable_rx_irq(&self) {
        self.regs.imsc.write(INT::RX::CLEAR + INT::RT::CLEAR);
    }

    /// Acknowledge the receive interrupts (after draining the FIFO).
    pub fn clear_rx_irq(&self) {
        self.regs.icr.write(INT::RX::SET + INT::RT::SET);
    }

    /// A received byte, if any.
    pub fn get(&self) -> Option<u8> {
        if self.regs.fr.is_set(FR::RXFE) {
            None
        } else {
            Some(self.regs.dr.read(DR::DATA) as u8)
        }
    }
}
