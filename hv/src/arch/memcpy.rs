// SPDX-License-Identifier: MIT OR Apache-2.0
//! `memcpy` for moat's image, replacing the compiler's generic one.
//!
//! Rust lowers every move of a struct larger than a few words, and every slice copy, to a
//! call of `memcpy`. The one `compiler_builtins` provides for this target (built for
//! strict alignment, with no vector registers at EL2) copies one 8-byte word per four
//! instructions and takes a byte path for anything shorter than 16 bytes. The mediator's
//! hot path copies registers, messages and small records this way about ten times per
//! call (measured with `cargo xtask bench --profile`). This one copies 32 bytes per eight
//! instructions when both pointers are 8-aligned (always, for those copies), then whole
//! words, then bytes.
//!
//! It only ever makes aligned accesses (8-byte ones between 8-aligned pointers, bytes
//! otherwise), so it is also correct before the MMU is on, when all memory is Device
//! memory and an unaligned access faults. It defines the global symbol `memcpy`, so the
//! linker never takes the archive member of `compiler_builtins` that defines it.

// SAFETY (for the whole block): this is `memcpy` as the C standard defines it, for the
// compiler's own calls: it reads `n` bytes at x1 and writes them at x0 (non-overlapping,
// the caller's contract), returns x0 unchanged, and uses only the caller-saved registers
// x2..x7 and the flags.
core::arch::global_asm!(
    ".section .text.memcpy, \"ax\", %progbits",
    ".global memcpy",
    ".type memcpy, %function",
    ".balign 16",
    "memcpy:",
    // x3: the destination cursor (x0 is returned as it came).
    "    mov     x3, x0",
    "    orr     x4, x0, x1",
    "    tst     x4, #7",
    "    b.ne    3f",
    // Both 8-aligned: 32 bytes at a time with load/store pairs.
    "1:  cmp     x2, #32",
    "    b.lo    2f",
    "    ldp     x4, x5, [x1], #16",
    "    ldp     x6, x7, [x1], #16",
    "    stp     x4, x5, [x3], #16",
    "    stp     x6, x7, [x3], #16",
    "    sub     x2, x2, #32",
    "    b       1b",
    // Then whole words.
    "2:  cmp     x2, #8",
    "    b.lo    3f",
    "    ldr     x4, [x1], #8",
    "    str     x4, [x3], #8",
    "    sub     x2, x2, #8",
    "    b       2b",
    // Then (or for a misaligned pointer, throughout) bytes.
    "3:  cbz     x2, 4f",
    "    ldrb    w4, [x1], #1",
    "    strb    w4, [x3], #1",
    "    sub     x2, x2, #1",
    "    b       3b",
    "4:  ret",
    ".size memcpy, . - memcpy",
);
