// SPDX-License-Identifier: MIT OR Apache-2.0
//! An `optee_msg_arg` as the hot path handles it: a fixed-size value (no heap), read and
//! written as 64-bit little-endian words.
//!
//! [`crate::abi::MsgArg`] is the general codec (bytes in, a `Vec` of parameters out) that
//! the tests, the fakes and the hostile guest use. The mediator's calls use [`Msg`]
//! instead, because of what the byte codec costs at EL2: the hypervisor's target is
//! built with strict alignment, so a `u64` decoded from a byte slice is eight byte loads
//! and seven shifts, and a `Vec` is a heap allocation. Every field of the message is
//! naturally aligned (the argument itself must be 8-aligned), so the guest's message is
//! copied into an aligned `[u64]` and each field is one load:
//!
//! ```text
//!   word 0: cmd | func << 32          word 4 + 4i: attr      (parameter i)
//!   word 1: session | cancel_id << 32 word 5 + 4i: u0        buf_ptr / value a
//!   word 2: pad | ret << 32           word 6 + 4i: u1        size / value b
//!   word 3: ret_origin | num_params << 32
//!                                     word 7 + 4i: u2        shm_ref / value c
//! ```
//!
//! The capacity is [`MAX_PARAMS`] parameters; [`crate::Limits::sanitized`] keeps
//! `max_params` within it.

use crate::abi::{MsgArgHeader, MsgParam};

/// Most parameters a [`Msg`] holds: the default `max_params` (Linux sends at most 4 + 2
/// meta parameters).
pub const MAX_PARAMS: usize = crate::limits::DEFAULT_MAX_PARAMS as usize;
/// Words of the header.
pub const HEADER_WORDS: usize = 4;
/// Words of one parameter.
pub const PARAM_WORDS: usize = 4;
/// Words of the largest message.
pub const MAX_WORDS: usize = words(MAX_PARAMS);

/// Words of a message with `n` parameters.
pub const fn words(n: usize) -> usize {
    HEADER_WORDS + PARAM_WORDS * n
}

/// Why words did not make a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// Fewer words than the header announces.
    Short,
    /// More parameters than [`MAX_PARAMS`].
    TooMany,
}

const fn lo(w: u64) -> u32 {
    w as u32
}

const fn hi(w: u64) -> u32 {
    (w >> 32) as u32
}

const fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

/// The header in its first four words (`w.len() >= HEADER_WORDS`, else all zero).
pub fn header_from_words(w: &[u64]) -> MsgArgHeader {
    let [a, b, c, d] = match w {
        [a, b, c, d, ..] => [*a, *b, *c, *d],
        _ => [0; 4],
    };
    MsgArgHeader {
        cmd: lo(a),
        func: hi(a),
        session: lo(b),
        cancel_id: hi(b),
        pad: lo(c),
        ret: hi(c),
        ret_origin: lo(d),
        num_params: hi(d),
    }
}

/// The header as its four words.
pub const fn header_words(h: &MsgArgHeader) -> [u64; HEADER_WORDS] {
    [
        pair(h.cmd, h.func),
        pair(h.session, h.cancel_id),
        pair(h.pad, h.ret),
        pair(h.ret_origin, h.num_params),
    ]
}

/// An `optee_msg_arg` with at most [`MAX_PARAMS`] parameters, kept as its words: decoding
/// is done field by field on access, so a message is read straight into a `Msg` and
/// written straight out of one. Not `Copy`: a copy is 288 bytes, and the hot path never
/// makes one it does not need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    w: [u64; MAX_WORDS],
}

impl Default for Msg {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Msg {
    /// All zero: no command, no parameter.
    pub const fn zeroed() -> Self {
        Self { w: [0; MAX_WORDS] }
    }

    /// A message with `header`'s command, function, session and cancel id (everything
    /// else zero) and no parameter, in place.
    pub fn reset(&mut self, h: &MsgArgHeader) {
        self.w[..HEADER_WORDS].copy_from_slice(&header_words(&MsgArgHeader {
            cmd: h.cmd,
            func: h.func,
            session: h.session,
            cancel_id: h.cancel_id,
            ..Default::default()
        }));
    }

    /// Decode the header and the `num_params` parameters it announces from `w`.
    pub fn from_words(w: &[u64]) -> Result<Self, MsgError> {
        Self::from_words_n(w, header_from_words(w).num_params as usize)
    }

    /// Decode the header and exactly `n` parameters, whatever its `num_params` says (the
    /// count fixed earlier, while the buffer may have changed since).
    pub fn from_words_n(w: &[u64], n: usize) -> Result<Self, MsgError> {
        let mut m = Self::zeroed();
        let body = m.load(n)?;
        body.copy_from_slice(w.get(..words(n)).ok_or(MsgError::Short)?);
        m.set_len(n);
        Ok(m)
    }

    /// The words of a message with `n` parameters, to be filled in (by a copy from guest
    /// or hypervisor memory); the header's `num_params` is then set to `n` by
    /// [`Msg::set_len`]. `TooMany` if `n > MAX_PARAMS`.
    pub fn load(&mut self, n: usize) -> Result<&mut [u64], MsgError> {
        self.w.get_mut(..words(n)).ok_or(MsgError::TooMany)
    }

    /// The header words alone, to be filled in first (the count is in them).
    pub fn header_mut(&mut self) -> &mut [u64] {
        &mut self.w[..HEADER_WORDS]
    }

    /// The words of parameters `from..n`, to be filled in (`TooMany` past the capacity).
    pub fn params_mut(&mut self, n: usize) -> Result<&mut [u64], MsgError> {
        self.w
            .get_mut(HEADER_WORDS..words(n))
            .ok_or(MsgError::TooMany)
    }

    /// Set the parameter count (clamped to the capacity).
    pub fn set_len(&mut self, n: usize) {
        let n = n.min(MAX_PARAMS) as u32;
        self.w[3] = pair(lo(self.w[3]), n);
    }

    /// The header.
    pub fn header(&self) -> MsgArgHeader {
        header_from_words(&self.w)
    }

    /// The command.
    pub fn cmd(&self) -> u32 {
        lo(self.w[0])
    }

    /// The number of parameters (at most the capacity, whatever the words say).
    pub fn len(&self) -> usize {
        (hi(self.w[3]) as usize).min(MAX_PARAMS)
    }

    /// No parameter?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parameter `i` (`i < MAX_PARAMS`, else all zero).
    pub fn param(&self, i: usize) -> MsgParam {
        match self.w.get(words(i)..words(i + 1)) {
            Some(&[attr, u0, u1, u2]) => MsgParam { attr, u0, u1, u2 },
            _ => MsgParam::default(),
        }
    }

    /// The parameters, decoded one by one.
    pub fn params(&self) -> impl Iterator<Item = MsgParam> + '_ {
        (0..self.len()).map(|i| self.param(i))
    }

    /// Set parameter `i` (ignored past the capacity); the count is not changed.
    pub fn set_param(&mut self, i: usize, p: &MsgParam) {
        if let Some(q) = self.w.get_mut(words(i)..words(i + 1)) {
            q.copy_from_slice(&[p.attr, p.u0, p.u1, p.u2]);
        }
    }

    /// Set the value words (u0..u2 = a, b, c) of parameter `i`.
    pub fn set_value(&mut self, i: usize, a: u64, b: u64, c: u64) {
        if let Some(q) = self.w.get_mut(words(i) + 1..words(i + 1)) {
            q.copy_from_slice(&[a, b, c]);
        }
    }

    /// Set the size word (u1) of memref parameter `i`.
    pub fn set_size(&mut self, i: usize, size: u64) {
        if let Some(q) = self.w.get_mut(words(i) + 2) {
            *q = size;
        }
    }

    /// Set `ret` and `ret_origin`.
    pub fn set_ret(&mut self, ret: u32, origin: u32) {
        self.w[2] = pair(lo(self.w[2]), ret);
        self.w[3] = pair(origin, hi(self.w[3]));
    }

    /// Set the session.
    pub fn set_session(&mut self, session: u32) {
        self.w[1] = pair(session, hi(self.w[1]));
    }

    /// The message's words: header and its [`Msg::len`] parameters.
    pub fn words(&self) -> &[u64] {
        &self.w[..words(self.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{self, MsgArg};
    use alloc::vec::Vec;

    fn sample(n: usize) -> MsgArg {
        MsgArg {
            header: MsgArgHeader {
                cmd: abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
                func: 0x1122_3344,
                session: 0x5566_7788,
                cancel_id: 0x99aa_bbcc,
                pad: 0xdead_beef,
                ret: 0xffff_000e,
                ret_origin: 3,
                num_params: n as u32,
            },
            params: (0..n as u64)
                .map(|i| MsgParam {
                    attr: 0x101 + i,
                    u0: 0x0102_0304_0506_0708 ^ i,
                    u1: u64::MAX - i,
                    u2: i << 40,
                })
                .collect(),
        }
    }

    fn le_words(b: &[u8]) -> Vec<u64> {
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn words_decode_what_the_byte_codec_encodes() {
        for n in 0..=MAX_PARAMS {
            let arg = sample(n);
            let w = le_words(&arg.to_bytes());
            let m = Msg::from_words(&w).unwrap();
            assert_eq!(m.header(), arg.header);
            assert_eq!(m.params().collect::<Vec<_>>(), arg.params);
            assert_eq!(m.words(), &w[..]);
        }
    }

    #[test]
    fn short_or_oversized_messages_are_refused() {
        let w = le_words(&sample(3).to_bytes());
        assert_eq!(Msg::from_words(&w[..w.len() - 1]), Err(MsgError::Short));
        assert_eq!(Msg::from_words(&w[..2]), Err(MsgError::Short));
        let mut big = le_words(&sample(MAX_PARAMS).to_bytes());
        big[3] = pair(3, MAX_PARAMS as u32 + 1);
        big.extend([0; PARAM_WORDS]);
        assert_eq!(Msg::from_words(&big), Err(MsgError::TooMany));
        assert_eq!(Msg::from_words(&[]), Err(MsgError::Short));
        assert_eq!(Msg::from_words(&[0; HEADER_WORDS]), Ok(Msg::zeroed()));
    }

    #[test]
    fn a_fixed_count_overrides_the_header() {
        let w = le_words(&sample(4).to_bytes());
        let m = Msg::from_words_n(&w, 2).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.header().num_params, 2);
        assert_eq!(Msg::from_words_n(&w, 5), Err(MsgError::Short));
    }

    #[test]
    fn setters_change_only_their_field() {
        let arg = sample(3);
        let mut m = Msg::from_words(&le_words(&arg.to_bytes())).unwrap();
        m.set_ret(7, 4);
        m.set_session(9);
        m.set_value(1, 10, 11, 12);
        m.set_size(2, 13);
        let mut want = arg.clone();
        want.header.ret = 7;
        want.header.ret_origin = 4;
        want.header.session = 9;
        (want.params[1].u0, want.params[1].u1, want.params[1].u2) = (10, 11, 12);
        want.params[2].u1 = 13;
        assert_eq!(m.words(), &le_words(&want.to_bytes())[..]);
        m.reset(&arg.header);
        assert_eq!(m.len(), 0);
        assert_eq!((m.header().ret, m.header().pad), (0, 0));
        assert_eq!(
            (m.cmd(), m.header().func),
            (arg.header.cmd, arg.header.func)
        );
        m.set_param(MAX_PARAMS, &arg.params[0]);
        m.set_len(MAX_PARAMS + 5);
        assert_eq!(m.len(), MAX_PARAMS);
    }
}
