// SPDX-License-Identifier: MIT OR Apache-2.0
//! moat's console: the `log` backend and `print!`, on the physical PL011.
//!
//! Lines are prefixed `(moat)` like Xen's `(XEN)`, so hypervisor output stands apart from
//! the guests' on the shared serial line.

use crate::pl011::Pl011;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

static UART: Mutex<Option<Pl011>> = Mutex::new(None);
/// The last byte sent was a newline (or nothing was sent yet). Written under `UART`'s lock.
/// moat's own log lines start on a line of their own even when a guest's output (dom0's is
/// passed through unbuffered) stopped mid-line, so they stay whole and readable.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

struct Writer<'a>(&'a Pl011);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.put(b'\r');
            }
            self.0.put(b);
        }
        if let Some(&last) = s.as_bytes().last() {
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Start the console on the PL011 at `base`.
///
/// # Safety
/// As for [`Pl011::new`].
pub unsafe fn init(base: u64) {
    // SAFETY: forwarded to the caller.
    *UART.lock() = Some(unsafe { Pl011::new(base) });
    // Only one logger is ever set; a second call keeps the first.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Run `f` on the console UART, if it is up.
pub fn with_uart<R>(f: impl FnOnce(&Pl011) -> R) -> Option<R> {
    UART.lock().as_ref().map(f)
}

/// Send raw bytes (a guest's output) as they are.
pub fn put_bytes(bytes: &[u8]) {
    if let Some(u) = UART.lock().as_ref() {
        for &b in bytes {
            u.put(b);
        }
        if let Some(&last) = bytes.last() {
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
    }
}

/// Send a domU's whole line (the console mux's, prefixed `(dN) `): on a fresh line if the
/// UART is mid-line, like moat's own.
pub fn put_line(bytes: &[u8]) {
    if let Some(u) = UART.lock().as_ref() {
        if !AT_LINE_START.load(Ordering::Relaxed) {
            u.put(b'\r');
            u.put(b'\n');
        }
        for &b in bytes {
            if b == b'\n' {
                u.put(b'\r');
            }
            u.put(b);
        }
        if let Some(&last) = bytes.last() {
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
    }
}

/// Print one whole line of moat's own: on a fresh line if the UART is mid-line.
fn print_line(args: fmt::Arguments<'_>) {
    if let Some(u) = UART.lock().as_ref() {
        let mut w = Writer(u);
        if !AT_LINE_START.load(Ordering::Relaxed) {
            let _ = w.write_str("\n");
        }
        let _ = w.write_fmt(args);
    }
}

/// Print formatted text (no prefix).
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(u) = UART.lock().as_ref() {
        let _ = Writer(u).write_fmt(args);
    }
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
        print_line(format_args!("(moat) {level}{}\n", record.args()));
    }
    fn flush(&self) {}
}

/// `print!` for moat's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}
