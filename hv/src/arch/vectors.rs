// SPDX-License-Identifier: MIT OR Apache-2.0
//! EL2 exception vectors and the guest entry path.
//!
//! ```text
//!   guest (EL1/EL0) --trap--> vector 0x400/0x480 -> push TrapFrame on this CPU's stack
//!                                                 -> crate::trap::lower_{sync,irq}(&mut frame)
//!                              eret <- pop TrapFrame <-+
//! ```
//!
//! A vCPU owns its pCPU, so the guest's general-purpose registers live in the frame on the
//! EL2 stack only while a trap is handled; every other guest register stays in the CPU.

use super::TrapFrame;

// SAFETY: the vector table and the entry/exit paths. Each saves the full TrapFrame layout
// (31 GPRs, ELR_EL2, SPSR_EL2: `FRAME_SIZE` bytes) on SP_EL2, which `boot` set to this
// CPU's own stack, calls into Rust with a pointer to it, restores it and returns with
// `eret`. The table is 2 KiB aligned as VBAR_EL2 requires, each entry within 128 bytes.
core::arch::global_asm!(
    r#"
.macro SAVE_FRAME
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x30, x0, [sp, #{x30}]
    str     x1, [sp, #{spsr}]
.endm

.macro VECTOR handler
    .balign 0x80
    SAVE_FRAME
    mov     x0, sp
    bl      \handler
    b       moat_restore_frame
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global moat_vectors
moat_vectors:
    // Current EL with SP_EL0: never used by moat.
    VECTOR  moat_el2_unexpected
    VECTOR  moat_el2_unexpected
    VECTOR  moat_el2_unexpected
    VECTOR  moat_el2_unexpected
    // Current EL with SP_ELx: a fault in moat itself.
    VECTOR  moat_el2_sync
    VECTOR  moat_el2_unexpected
    VECTOR  moat_el2_unexpected
    VECTOR  moat_el2_serror
    // Lower EL, AArch64: the guest.
    VECTOR  moat_lower_sync
    VECTOR  moat_lower_irq
    VECTOR  moat_lower_fiq
    VECTOR  moat_lower_serror
    // Lower EL, AArch32: moat guests are AArch64 only (HCR_EL2.RW = 1).
    VECTOR  moat_lower_unexpected
    VECTOR  moat_lower_unexpected
    VECTOR  moat_lower_unexpected
    VECTOR  moat_lower_unexpected

    .section .text
    .global moat_restore_frame
moat_restore_frame:
    ldr     x1, [sp, #{spsr}]
    ldp     x30, x0, [sp, #{x30}]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    add     sp, sp, #{frame}
    eret

    // moat_enter_guest(frame: *const TrapFrame, stack_top: u64): reset SP to an empty
    // stack with room for one frame, copy the frame there, and return into the guest
    // through it. The source must not lie in this CPU's stack.
    .global moat_enter_guest
moat_enter_guest:
    mov     sp, x1
    sub     sp, sp, #{frame}
    mov     x2, #0
1:  ldr     x3, [x0, x2]
    str     x3, [sp, x2]
    add     x2, x2, #8
    cmp     x2, #{frame}
    b.lo    1b
    b       moat_restore_frame
"#,
    frame = const FRAME_SIZE,
    x30 = const X30_OFFSET,
    spsr = const SPSR_OFFSET,
);

/// The frame's size and the offsets the assembly uses, from the Rust layout itself, so the
/// two can never drift apart.
const FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();
const X30_OFFSET: usize = core::mem::offset_of!(TrapFrame, x) + 30 * 8;
const SPSR_OFFSET: usize = core::mem::offset_of!(TrapFrame, spsr);
// `stp x30, x0` stores ELR_EL2 (in x0) right after x30; x0..x29 go pairwise from offset
// 0; SP_EL2 stays 16-byte aligned; immediates fit `stp`/`ldr`/`sub`.
const _: () = {
    assert!(core::mem::offset_of!(TrapFrame, x) == 0);
    assert!(core::mem::offset_of!(TrapFrame, elr) == X30_OFFSET + 8);
    assert!(FRAME_SIZE.is_multiple_of(16) && FRAME_SIZE < 4096);
    assert!(SPSR_OFFSET + 8 <= FRAME_SIZE);
};

extern "C" {
    static moat_vectors: u8;
    fn moat_enter_guest(frame: *const TrapFrame, stack_top: u64) -> !;
}

/// Point VBAR_EL2 at the vector table.
pub fn install() {
    // `moat_vectors` is the 2 KiB-aligned table above; taking its address reads nothing.
    let base = core::ptr::addr_of!(moat_vectors) as u64;
    // SAFETY: VBAR_EL2 only affects where EL2 exceptions go; the table handles all 16.
    unsafe { core::arch::asm!("msr vbar_el2, {}", "isb", in(reg) base, options(nostack)) };
}

/// Frames handed to [`enter_guest`], one per CPU: they live outside every stack, because
/// entering a guest resets the stack.
static mut ENTRY_FRAMES: [TrapFrame; crate::MAX_CPUS] = [TrapFrame::ZERO; crate::MAX_CPUS];

/// Enter the guest with `frame` on CPU `cpu`, abandoning the current stack: SP is reset to
/// `stack_top` (this CPU's stack) and every later trap starts from there.
pub fn enter_guest(cpu: usize, frame: &TrapFrame, stack_top: u64) -> ! {
    assert!(cpu < crate::MAX_CPUS, "CPU index {cpu} out of range");
    // SAFETY: each CPU writes only its own ENTRY_FRAMES slot (index checked above), right
    // before it leaves for the guest; `moat_enter_guest` copies it onto the fresh stack
    // and never returns.
    unsafe {
        let slot = (core::ptr::addr_of_mut!(ENTRY_FRAMES) as *mut TrapFrame).add(cpu);
        slot.write(*frame);
        moat_enter_guest(slot, stack_top)
    }
}
