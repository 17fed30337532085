// SPDX-License-Identifier: MIT OR Apache-2.0
//! The order of lines on the one serial line that dom0, the domUs and moat share.
//!
//! dom0's bytes go out as they come (its shell echoes, its prompt has no newline), so dom0
//! is often in the middle of a line. A whole line of moat's (a log line, a trace line) or
//! of a domU's (the console mux's `(dN) …` line) that arrives then would cut dom0's line in
//! two, and a reader (a person, or a test looking for `^moat-init: ready$`) sees neither
//! line whole. So such lines wait, in a fixed buffer, until dom0 ends its line, and go out
//! right after its newline:
//!
//! ```text
//!   dom0:  "moat-"            (mid-line)
//!   moat:  "(moat) smc: …\n"  -> pending
//!   dom0:  "init: ready\n"    -> "moat-init: ready\r\n(moat) smc: …\r\n"
//! ```
//!
//! A wait is bounded, because a prompt waits for input and never ends its line: lines
//! pending for longer than the caller's `stale` ticks (see [`SerialOrder::tick`]), or more
//! than [`PENDING_BYTES`] of them, go out at once on a fresh line, as they did before. An
//! urgent line (an error) never waits. moat's and the domUs' text gets `\r\n` for `\n`
//! (the terminal needs both); dom0's bytes are passed through untouched.

/// Bytes of whole lines that may wait for dom0's newline. Bounds the buffer; one more line
/// than fits sends everything pending first.
pub const PENDING_BYTES: usize = 4096;

/// Where the serial line stands, and what waits for dom0.
#[derive(Debug)]
pub struct SerialOrder {
    pending: [u8; PENDING_BYTES],
    len: usize,
    /// When the oldest pending line arrived (the caller's ticks).
    since: u64,
    /// dom0's last byte was not a newline: its line is open.
    dom0_open: bool,
    /// The last byte sent was a newline (or nothing was sent yet).
    at_line_start: bool,
}

impl Default for SerialOrder {
    fn default() -> Self {
        Self::new()
    }
}

/// Send `text` with `\r\n` for every `\n`.
fn send_text(text: &[u8], out: &mut dyn FnMut(&[u8])) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            out(&text[start..i]);
            out(b"\r\n");
            start = i + 1;
        }
    }
    out(&text[start..]);
}

impl SerialOrder {
    /// A line with nothing sent and nothing pending.
    pub const fn new() -> Self {
        Self {
            pending: [0; PENDING_BYTES],
            len: 0,
            since: 0,
            dom0_open: false,
            at_line_start: true,
        }
    }

    /// Bytes waiting for dom0's newline.
    pub fn pending(&self) -> usize {
        self.len
    }

    fn note_sent(&mut self, text: &[u8]) {
        if let Some(&last) = text.last() {
            self.at_line_start = last == b'\n';
        }
    }

    /// dom0's output, passed through as it is; a newline releases what waited for it.
    pub fn dom0(&mut self, bytes: &[u8], out: &mut dyn FnMut(&[u8])) {
        if bytes.is_empty() {
            return;
        }
        out(bytes);
        self.note_sent(bytes);
        self.dom0_open = !self.at_line_start;
        if !self.dom0_open && self.len > 0 {
            self.release(out);
        }
    }

    /// A whole line (or several) of moat's or a domU's, `\n`-terminated: now, on a line of
    /// its own, or after dom0's newline when dom0 is mid-line. `urgent` lines never wait.
    pub fn line(&mut self, now: u64, text: &[u8], urgent: bool, out: &mut dyn FnMut(&[u8])) {
        if self.dom0_open && !urgent {
            if self.len + text.len() <= PENDING_BYTES {
                if self.len == 0 {
                    self.since = now;
                }
                self.pending[self.len..self.len + text.len()].copy_from_slice(text);
                self.len += text.len();
                return;
            }
            // No room: what waits goes out now, and this line right after it.
            self.release(out);
        } else if self.len > 0 {
            self.release(out);
        }
        if !self.at_line_start {
            out(b"\r\n");
        }
        send_text(text, out);
        self.note_sent(text);
    }

    /// Text of moat's with no line discipline (a piece of a line, a key's answer): after
    /// what is pending, so that order is kept; it waits only while something else waits.
    pub fn text(&mut self, text: &[u8], out: &mut dyn FnMut(&[u8])) {
        if self.len > 0 && self.dom0_open && self.len + text.len() <= PENDING_BYTES {
            self.pending[self.len..self.len + text.len()].copy_from_slice(text);
            self.len += text.len();
            return;
        }
        if self.len > 0 {
            self.release(out);
        }
        send_text(text, out);
        self.note_sent(text);
    }

    /// Called now and then: lines that waited more than `stale` ticks go out, on a fresh
    /// line (dom0's open line then goes on below them).
    pub fn tick(&mut self, now: u64, stale: u64, out: &mut dyn FnMut(&[u8])) {
        if self.len > 0 && now.wrapping_sub(self.since) >= stale {
            self.release(out);
        }
    }

    /// Everything pending goes out now (before the machine stops).
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.len > 0 {
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.at_line_start {
            out(b"\r\n");
        }
        let len = self.len;
        self.len = 0;
        send_text(&self.pending[..len], out);
        if len > 0 {
            self.at_line_start = self.pending[len - 1] == b'\n';
        }
        // dom0's open line, if any, goes on below: nothing waits for it any more.
        self.dom0_open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(f: impl FnOnce(&mut SerialOrder, &mut dyn FnMut(&[u8]))) -> Vec<u8> {
        let mut s = SerialOrder::new();
        let mut got = Vec::new();
        f(&mut s, &mut |b: &[u8]| got.extend_from_slice(b));
        got
    }

    #[test]
    fn a_line_waits_for_dom0_to_end_its_line() {
        let got = run(|s, out| {
            s.dom0(b"moat-", out);
            s.line(10, b"(moat) smc: d0 CALL\n", false, out);
            assert_eq!(s.pending(), 20);
            for &b in b"init: ready\r\n" {
                s.dom0(&[b], out);
            }
            assert_eq!(s.pending(), 0);
        });
        assert_eq!(
            got,
            b"moat-init: ready\r\n(moat) smc: d0 CALL\r\n".to_vec(),
            "dom0's line is whole, moat's follows it"
        );
    }

    #[test]
    fn at_a_line_start_a_line_goes_out_at_once() {
        let got = run(|s, out| {
            s.dom0(b"ok\r\n", out);
            s.line(0, b"(moat) hello\n", false, out);
            assert_eq!(s.pending(), 0);
        });
        assert_eq!(got, b"ok\r\n(moat) hello\r\n".to_vec());
    }

    #[test]
    fn a_prompt_does_not_hold_lines_for_ever() {
        let got = run(|s, out| {
            s.dom0(b"~ # ", out);
            s.line(100, b"(moat) d0: Running\n", false, out);
            s.tick(150, 100, out);
            assert_eq!(s.pending(), 1 + 18, "not stale yet");
            s.tick(200, 100, out);
            assert_eq!(s.pending(), 0);
            // dom0's echo goes on below; its line is open again, so the next line waits.
            s.dom0(b"l", out);
            s.line(300, b"(moat) next\n", false, out);
            assert_eq!(s.pending(), 12);
        });
        assert_eq!(got, b"~ # \r\n(moat) d0: Running\r\nl".to_vec());
    }

    #[test]
    fn urgent_lines_never_wait_and_keep_the_order() {
        let got = run(|s, out| {
            s.dom0(b"half", out);
            s.line(0, b"(moat) a\n", false, out);
            s.line(0, b"(moat) error: b\n", true, out);
        });
        assert_eq!(got, b"half\r\n(moat) a\r\n(moat) error: b\r\n".to_vec());
    }

    #[test]
    fn a_full_buffer_goes_out_before_the_next_line() {
        let long = [b'x'; PENDING_BYTES - 1];
        let got = run(|s, out| {
            s.dom0(b"p", out);
            let mut line = long.to_vec();
            line.push(b'\n');
            s.line(0, &line, false, out);
            assert_eq!(s.pending(), PENDING_BYTES);
            s.line(0, b"y\n", false, out);
            assert_eq!(s.pending(), 0);
        });
        let mut want = b"p\r\n".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"\r\ny\r\n");
        assert_eq!(got, want);
    }

    #[test]
    fn text_pieces_keep_their_order_behind_pending_lines() {
        let got = run(|s, out| {
            s.dom0(b"a", out);
            s.line(0, b"(moat) one\n", false, out);
            s.text(b"(moat) d0: ", out);
            s.text(b"x\n", out);
            s.dom0(b"b\n", out);
        });
        assert_eq!(got, b"ab\n(moat) one\r\n(moat) d0: x\r\n".to_vec());
    }

    #[test]
    fn flush_sends_everything_on_a_fresh_line() {
        let got = run(|s, out| {
            s.dom0(b"mid", out);
            s.line(0, b"(moat) w\n", false, out);
            s.flush(out);
            assert_eq!(s.pending(), 0);
        });
        assert_eq!(got, b"mid\r\n(moat) w\r\n".to_vec());
    }
}
