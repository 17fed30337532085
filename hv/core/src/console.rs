// SPDX-License-Identifier: MIT OR Apache-2.0
//! The console multiplexer, Xen's way: one physical UART shared by the hypervisor and
//! every domain.
//!
//! ```text
//!                 Ctrl-a Ctrl-a Ctrl-a switches the focus
//!   physical RX --> ConsoleMux::input --+--> hypervisor (moat's own shell/log)
//!                                       +--> dom0  vPL011 RX FIFO
//!                                       +--> d1    vPL011 RX FIFO ...
//!
//!   dom0 vPL011 TX --------------------------------------> physical TX (as is)
//!   dN   vPL011 TX --> line buffer --> "(dN) " + line ----> physical TX
//! ```
//!
//! Input: pressing Ctrl-a ([`SWITCH_CHAR`]) [`SWITCH_COUNT`] times in a row moves the
//! focus to the next target (hypervisor -> dom0 -> d1 -> ... -> hypervisor) and the three
//! Ctrl-a are swallowed; a shorter run is delivered to the current focus, in order, before
//! the next ordinary byte (as Xen's `serial_rx` does). Every switch produces a
//! [`SwitchNotice`] to print.
//!
//! Output: dom0 is trusted like Xen's hardware domain and its bytes go out unchanged. A
//! domU's bytes are collected per line in a fixed buffer of [`LINE_BUFFER`] bytes and
//! printed with a `(dN) ` prefix when a newline arrives or the buffer fills (a newline is
//! then added, as Xen does), so a guest can neither grow hypervisor memory nor make its
//! output look like another domain's. Control characters other than tab and newline
//! (escape sequences included) are dropped from domU output so a guest cannot drive the
//! operator's terminal.

use alloc::vec::Vec;
use core::fmt;

/// The input-switch character: Ctrl-a.
pub const SWITCH_CHAR: u8 = 0x01;
/// How many [`SWITCH_CHAR`] in a row switch the input focus.
pub const SWITCH_COUNT: u8 = 3;
/// Bytes of one domU output line kept before it is printed. Bounds the memory a guest's
/// console output can use; longer lines are split.
pub const LINE_BUFFER: usize = 200;
/// Most domains on the mux (dom0 and the domUs). Bounds the mux's state.
pub const MAX_CONSOLE_DOMAINS: usize = 1 + crate::bootcfg::MAX_DOMUS;
/// Tag in front of hypervisor messages.
pub const HV_TAG: &str = "(moat)";

/// What can receive console input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The hypervisor itself.
    Hypervisor,
    /// The domain with this id (0 = dom0).
    Domain(u16),
}

/// Why the mux refused a configuration change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// More than [`MAX_CONSOLE_DOMAINS`] domains.
    TooManyDomains,
    /// The domain is already on the mux.
    DuplicateDomain(u16),
    /// The domain is not on the mux.
    UnknownDomain(u16),
}

/// The message to print when the input focus changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchNotice {
    /// The new focus.
    pub to: Focus,
}

/// Up to [`SWITCH_COUNT`] bytes to hand the focused target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Where the bytes go.
    pub to: Focus,
    bytes: [u8; SWITCH_COUNT as usize],
    len: usize,
}

/// What to do with one input byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputAction {
    /// Nothing yet: a Ctrl-a is being held back.
    Held,
    /// Deliver these bytes to the focus.
    Deliver(Delivery),
    /// The focus changed: print the notice.
    Switched(SwitchNotice),
}

/// One domU's pending output line.
#[derive(Clone, Debug)]
struct Line {
    domain: u16,
    buf: [u8; LINE_BUFFER],
    len: usize,
}

/// The console multiplexer.
#[derive(Clone, Debug)]
pub struct ConsoleMux {
    /// Domains in switching order (dom0 first if present).
    domains: Vec<u16>,
    /// Output line buffers, one per domU.
    lines: Vec<Line>,
    /// Current focus.
    focus: Focus,
    /// Ctrl-a seen in a row and not yet delivered.
    pending_switch: u8,
}

impl From<ConsoleError> for crate::error::Error {
    fn from(e: ConsoleError) -> Self {
        Self::Console(e)
    }
}

impl Delivery {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for SwitchNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HV_TAG} *** Serial input to ")?;
        match self.to {
            Focus::Hypervisor => write!(f, "moat")?,
            Focus::Domain(d) => write!(f, "DOM{d}")?,
        }
        writeln!(f, " (type 'CTRL-a' three times to switch input)")
    }
}

impl Default for ConsoleMux {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleMux {
    /// A mux with no domains; input goes to the hypervisor.
    pub fn new() -> Self {
        Self {
            domains: Vec::new(),
            lines: Vec::new(),
            focus: Focus::Hypervisor,
            pending_switch: 0,
        }
    }

    /// Add a domain at the end of the switching order.
    pub fn add_domain(&mut self, id: u16) -> Result<(), ConsoleError> {
        if self.domains.contains(&id) {
            return Err(ConsoleError::DuplicateDomain(id));
        }
        if self.domains.len() >= MAX_CONSOLE_DOMAINS {
            return Err(ConsoleError::TooManyDomains);
        }
        self.domains.push(id);
        if id != 0 {
            self.lines.push(Line {
                domain: id,
                buf: [0; LINE_BUFFER],
                len: 0,
            });
        }
        Ok(())
    }

    /// Remove a domain (it was destroyed): its partial line is flushed to `sink`, and if
    /// it had the focus the hypervisor gets it (the notice says so).
    pub fn remove_domain(
        &mut self,
        id: u16,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<SwitchNotice>, ConsoleError> {
        let pos = self
            .domains
            .iter()
            .position(|d| *d == id)
            .ok_or(ConsoleError::UnknownDomain(id))?;
        self.flush(id, sink);
        self.domains.remove(pos);
        self.lines.retain(|l| l.domain != id);
        if self.focus == Focus::Domain(id) {
            self.focus = Focus::Hypervisor;
            return Ok(Some(SwitchNotice {
                to: Focus::Hypervisor,
            }));
        }
        Ok(None)
    }

    /// Current input focus.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Give the focus to `to` (e.g. dom0 at the end of boot).
    pub fn set_focus(&mut self, to: Focus) -> Result<SwitchNotice, ConsoleError> {
        if let Focus::Domain(d) = to {
            if !self.domains.contains(&d) {
                return Err(ConsoleError::UnknownDomain(d));
            }
        }
        self.focus = to;
        self.pending_switch = 0;
        Ok(SwitchNotice { to })
    }

    /// Handle one byte from the physical UART.
    pub fn input(&mut self, byte: u8) -> InputAction {
        if byte == SWITCH_CHAR {
            self.pending_switch += 1;
            if self.pending_switch < SWITCH_COUNT {
                return InputAction::Held;
            }
            self.pending_switch = 0;
            self.focus = self.next_focus();
            return InputAction::Switched(SwitchNotice { to: self.focus });
        }
        let mut d = Delivery {
            to: self.focus,
            bytes: [SWITCH_CHAR; SWITCH_COUNT as usize],
            len: 0,
        };
        d.len = usize::from(self.pending_switch) + 1;
        d.bytes[d.len - 1] = byte;
        self.pending_switch = 0;
        InputAction::Deliver(d)
    }

    /// Handle output bytes written by `domain`. Complete lines (and dom0's bytes) go to
    /// `sink` at once; an unknown domain's output is dropped.
    pub fn output(&mut self, domain: u16, bytes: &[u8], sink: &mut dyn FnMut(&[u8])) {
        if domain == 0 {
            if self.domains.contains(&0) {
                sink(bytes);
            }
            return;
        }
        let Some(line) = self.lines.iter_mut().find(|l| l.domain == domain) else {
            return;
        };
        for &b in bytes {
            if b == b'\n' {
                Self::emit(line, sink);
                continue;
            }
            if !(b == b'\t' || (0x20..0x7f).contains(&b)) {
                continue; // control characters and non-ASCII: dropped
            }
            line.buf[line.len] = b;
            line.len += 1;
            if line.len == LINE_BUFFER {
                Self::emit(line, sink);
            }
        }
    }

    /// Print `domain`'s partial line, if any.
    pub fn flush(&mut self, domain: u16, sink: &mut dyn FnMut(&[u8])) {
        if let Some(line) = self.lines.iter_mut().find(|l| l.domain == domain) {
            if line.len > 0 {
                Self::emit(line, sink);
            }
        }
    }

    /// A domU's complete line, prefix and newline included, in one `sink` call: the sink
    /// can then start it on a line of its own.
    fn emit(line: &mut Line, sink: &mut dyn FnMut(&[u8])) {
        let mut out = [0u8; 9 + LINE_BUFFER + 1];
        let mut prefix = [0u8; 9];
        let n = format_prefix(line.domain, &mut prefix);
        out[..n].copy_from_slice(&prefix[..n]);
        out[n..n + line.len].copy_from_slice(&line.buf[..line.len]);
        out[n + line.len] = b'\n';
        sink(&out[..n + line.len + 1]);
        line.len = 0;
    }

    fn next_focus(&self) -> Focus {
        let first = self
            .domains
            .first()
            .map_or(Focus::Hypervisor, |d| Focus::Domain(*d));
        match self.focus {
            Focus::Hypervisor => first,
            Focus::Domain(cur) => match self.domains.iter().position(|d| *d == cur) {
                Some(i) => self
                    .domains
                    .get(i + 1)
                    .map_or(Focus::Hypervisor, |d| Focus::Domain(*d)),
                None => Focus::Hypervisor,
            },
        }
    }
}

/// Write `(dN) ` into `out`, returning its length (at most 9 bytes for a u16).
fn format_prefix(domain: u16, out: &mut [u8; 9]) -> usize {
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut v = domain;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out[0] = b'(';
    out[1] = b'd';
    for i in 0..n {
        out[2 + i] = digits[n - 1 - i];
    }
    out[2 + n] = b')';
    out[3 + n] = b' ';
    4 + n
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    fn mux() -> ConsoleMux {
        let mut m = ConsoleMux::new();
        for d in [0, 1, 2] {
            m.add_domain(d).unwrap();
        }
        m
    }

    fn delivered(a: InputAction) -> (Focus, Vec<u8>) {
        match a {
            InputAction::Deliver(d) => (d.to, d.bytes().to_vec()),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn triple_ctrl_a_cycles_the_focus() {
        let mut m = mux();
        assert_eq!(m.focus(), Focus::Hypervisor);
        let mut seen = Vec::new();
        for _ in 0..4 {
            assert_eq!(m.input(SWITCH_CHAR), InputAction::Held);
            assert_eq!(m.input(SWITCH_CHAR), InputAction::Held);
            match m.input(SWITCH_CHAR) {
                InputAction::Switched(n) => seen.push(n.to),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                Focus::Domain(0),
                Focus::Domain(1),
                Focus::Domain(2),
                Focus::Hypervisor
            ]
        );
    }

    #[test]
    fn short_ctrl_a_runs_are_delivered_in_order() {
        let mut m = mux();
        m.set_focus(Focus::Domain(0)).unwrap();
        assert_eq!(delivered(m.input(b'x')), (Focus::Domain(0), vec![b'x']));
        assert_eq!(m.input(SWITCH_CHAR), InputAction::Held);
        assert_eq!(
            delivered(m.input(b'y')),
            (Focus::Domain(0), vec![SWITCH_CHAR, b'y'])
        );
        m.input(SWITCH_CHAR);
        m.input(SWITCH_CHAR);
        assert_eq!(
            delivered(m.input(b'z')),
            (Focus::Domain(0), vec![SWITCH_CHAR, SWITCH_CHAR, b'z'])
        );
        // Six in a row switch twice.
        for _ in 0..5 {
            m.input(SWITCH_CHAR);
        }
        assert_eq!(
            m.input(SWITCH_CHAR),
            InputAction::Switched(SwitchNotice {
                to: Focus::Domain(2)
            })
        );
    }

    #[test]
    fn notices_read_like_xens() {
        let n = SwitchNotice {
            to: Focus::Domain(0),
        };
        assert_eq!(
            n.to_string(),
            "(moat) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)\n"
        );
        let n = SwitchNotice {
            to: Focus::Hypervisor,
        };
        assert!(n.to_string().contains("Serial input to moat"));
    }

    fn collect(m: &mut ConsoleMux, d: u16, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        m.output(d, bytes, &mut |b: &[u8]| out.extend_from_slice(b));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn domu_output_is_prefixed_per_line() {
        let mut m = mux();
        assert_eq!(collect(&mut m, 1, b"hello "), "");
        assert_eq!(collect(&mut m, 2, b"other\n"), "(d2) other\n");
        assert_eq!(collect(&mut m, 1, b"world\nnext"), "(d1) hello world\n");
        let mut out = Vec::new();
        m.flush(1, &mut |b: &[u8]| out.extend_from_slice(b));
        assert_eq!(out, b"(d1) next\n");
        assert_eq!(
            collect(&mut m, 0, b"dom0 \x1b[1mraw\r\n"),
            "dom0 \x1b[1mraw\r\n"
        );
    }

    #[test]
    fn domu_cannot_flood_or_inject_control_characters() {
        let mut m = mux();
        let long = vec![b'a'; 3 * LINE_BUFFER + 10];
        let out = collect(&mut m, 2, &long);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| l.len() == LINE_BUFFER + 5 && l.starts_with("(d2) ")));
        assert_eq!(
            collect(&mut m, 2, b"\n"),
            format!("(d2) {}\n", "a".repeat(10))
        );
        assert_eq!(
            collect(&mut m, 2, b"\x1b[2J\rok\t!\xff\n"),
            "(d2) [2Jok\t!\n"
        );
        assert_eq!(collect(&mut m, 9, b"nobody\n"), "");
    }

    #[test]
    fn domain_bookkeeping() {
        let mut m = mux();
        assert_eq!(m.add_domain(1), Err(ConsoleError::DuplicateDomain(1)));
        assert_eq!(
            m.set_focus(Focus::Domain(7)),
            Err(ConsoleError::UnknownDomain(7))
        );
        m.set_focus(Focus::Domain(1)).unwrap();
        collect(&mut m, 1, b"partial");
        let mut out = Vec::new();
        let n = m
            .remove_domain(1, &mut |b: &[u8]| out.extend_from_slice(b))
            .unwrap();
        assert_eq!(
            n,
            Some(SwitchNotice {
                to: Focus::Hypervisor
            })
        );
        assert_eq!(out, b"(d1) partial\n");
        assert_eq!(
            m.remove_domain(1, &mut |_: &[u8]| {}),
            Err(ConsoleError::UnknownDomain(1))
        );
        for d in 10..(10 + MAX_CONSOLE_DOMAINS as u16 - 2) {
            m.add_domain(d).unwrap();
        }
        assert_eq!(m.add_domain(99), Err(ConsoleError::TooManyDomains));
        let mut p = [0; 9];
        let n = format_prefix(65535, &mut p);
        assert_eq!(&p[..n], b"(d65535) ");
        // An empty mux cycles hypervisor -> hypervisor.
        let mut e = ConsoleMux::new();
        e.input(SWITCH_CHAR);
        e.input(SWITCH_CHAR);
        assert_eq!(
            e.input(SWITCH_CHAR),
            InputAction::Switched(SwitchNotice {
                to: Focus::Hypervisor
            })
        );
    }
}
