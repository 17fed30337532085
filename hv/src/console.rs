// SPDX-License-Identifier: MIT OR Apache-2.0
//! moat's console: the `log` backend and `print!`, on the physical PL011.
//!
//! Lines are prefixed `(moat)` like Xen's `(XEN)`, so hypervisor output stands apart from
//! the guests' on the shared serial line. Who goes when is `hv_core::serial::SerialOrder`'s
//! decision: a whole line of moat's or a domU's that comes while dom0 is mid-line waits
//! (boundedly) for dom0's newline, so that neither line is cut.

use crate::pl011::Pl011;
use core::fmt::{self, Write};
use hv_core::serial::SerialOrder;
use spin::Mutex;

/// The UART and the order of what goes out on it, behind one lock.
struct Console {
    uart: Option<Pl011>,
    order: SerialOrder,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    uart: None,
    order: SerialOrder::new(),
});

/// How long (ms) a line may wait for dom0 to end its line: long enough for a line dom0 is
/// printing (a byte per trap), short enough that a prompt waiting for input does not hide
/// moat's messages.
const STALE_MS: u64 = 250;

/// Longest line of moat's formatted at once; a longer one is cut (and ends with `…`).
const LINE_MAX: usize = 512;

/// A formatted line in a fixed buffer (no heap on the console path).
pub struct LineBuf {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// End with a newline, marking a cut line.
    fn terminate(&mut self) {
        if self.cut {
            let mark = "…\n".as_bytes();
            let at = self.len.min(LINE_MAX - mark.len());
            self.buf[at..at + mark.len()].copy_from_slice(mark);
            self.len = at + mark.len();
        } else if self.buf[..self.len].last() != Some(&b'\n') {
            if self.len == LINE_MAX {
                self.len -= 1;
            }
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self.cut |= n < s.len();
        Ok(())
    }
}

fn now() -> u64 {
    crate::arch::counter()
}

fn stale_ticks() -> u64 {
    STALE_MS * crate::arch::counter_frequency() / 1000
}

/// Run `f` with the UART and the line order, if the console is up.
fn with_console(f: impl FnOnce(&Pl011, &mut SerialOrder)) {
    let mut c = CONSOLE.lock();
    let Console { uart, order } = &mut *c;
    if let Some(u) = uart.as_ref() {
        f(u, order);
    }
}

fn send(u: &Pl011) -> impl FnMut(&[u8]) + '_ {
    move |bytes: &[u8]| {
        for &b in bytes {
            u.put(b);
        }
    }
}

/// Start the console on the PL011 at `base`.
///
/// # Safety
/// As for [`Pl011::new`].
pub unsafe fn init(base: u64) {
    // SAFETY: forwarded to the caller.
    CONSOLE.lock().uart = Some(unsafe { Pl011::new(base) });
    // Only one logger is ever set; a second call keeps the first.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Run `f` on the console UART, if it is up.
pub fn with_uart<R>(f: impl FnOnce(&Pl011) -> R) -> Option<R> {
    CONSOLE.lock().uart.as_ref().map(f)
}

/// dom0's output, as it is.
pub fn put_bytes(bytes: &[u8]) {
    with_console(|u, order| order.dom0(bytes, &mut send(u)));
}

/// A domU's whole line (the console mux's, prefixed `(dN) `).
pub fn put_line(bytes: &[u8]) {
    with_console(|u, order| order.line(now(), bytes, false, &mut send(u)));
}

/// Lines that waited too long for dom0's newline go out (called on every guest interrupt).
pub fn tick() {
    with_console(|u, order| order.tick(now(), stale_ticks(), &mut send(u)));
}

/// Everything that waits goes out now: the machine is about to stop. Never blocks: a CPU
/// that stops while another holds the console loses only what waited.
pub fn flush() {
    if let Some(mut c) = CONSOLE.try_lock() {
        let Console { uart, order } = &mut *c;
        if let Some(u) = uart.as_ref() {
            order.flush(&mut send(u));
        }
    }
}

/// One whole line of moat's own. Errors never wait.
fn print_line(args: fmt::Arguments<'_>, urgent: bool) {
    let mut line = LineBuf::new();
    let _ = line.write_fmt(args);
    line.terminate();
    with_console(|u, order| order.line(now(), line.as_bytes(), urgent, &mut send(u)));
}

/// moat's answer to the operator (a key typed at moat): one whole line, now, on a line of
/// its own.
pub fn answer(args: fmt::Arguments<'_>) {
    print_line(args, true);
}

/// [`answer`] for a line built piece by piece.
pub fn answer_line(mut line: LineBuf) {
    line.terminate();
    with_console(|u, order| order.line(now(), line.as_bytes(), true, &mut send(u)));
}

/// Print formatted text (no prefix, no line discipline).
pub fn print(args: fmt::Arguments<'_>) {
    let mut text = LineBuf::new();
    let _ = text.write_fmt(args);
    with_console(|u, order| order.text(text.as_bytes(), &mut send(u)));
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            _ => "",
        };
        print_line(
            format_args!("(moat) {level}{}\n", record.args()),
            record.level() == log::Level::Error,
        );
    }
    fn flush(&self) {}
}

/// `print!` for moat's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}
