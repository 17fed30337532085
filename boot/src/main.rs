// SPDX-License-Identifier: MIT OR Apache-2.0
//! boot: moat's entry point.
//!
//! ```text
//!   TF-A BL31 --(eret to EL2, x0 = DTB)--> _start (arm64 Image header)
//!                                             |  not at EL2? park
//!                                             v
//!                                   clear BSS, set SP, boot_main(dtb)
//! ```
//!
//! The image starts with the arm64 Linux Image header (Documentation/arch/arm64/booting.rst),
//! so it can be entered directly as BL33 or loaded by U-Boot's `booti`, as Xen is.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod entry {
    use core::panic::PanicInfo;

    // SAFETY: this is the image's first code, placed at the load address by `link.ld`.
    // Until `boot_main` runs, nothing else executes on this CPU, and the assembly only
    // touches the stack and BSS that the linker script reserves for it.
    core::arch::global_asm!(
        r#"
        .section .text.head, "ax"
        .global _start
    _start:
        b       1f                      // code0: branch over the header
        .long   0                       // code1
        .quad   0                       // text_offset
        .quad   __image_end - _start    // image_size
        .quad   0xa                     // flags: LE, 4 KiB pages, anywhere in RAM
        .quad   0, 0, 0                 // res2..res4
        .ascii  "ARM\x64"               // magic
        .long   0                       // res5
    1:
        mrs     x1, CurrentEL
        lsr     x1, x1, #2
        cmp     x1, #2
        b.ne    2f
        adrp    x1, __bss_start
        add     x1, x1, :lo12:__bss_start
        adrp    x2, __bss_end
        add     x2, x2, :lo12:__bss_end
    3:  cmp     x1, x2
        b.hs    4f
        str     xzr, [x1], #8
        b       3b
    4:  adrp    x1, __stack_top
        add     x1, x1, :lo12:__stack_top
        mov     sp, x1
        bl      boot_main
    2:  wfe
        b       2b
    "#
    );

    /// First Rust code, on the boot CPU at EL2 with BSS cleared and a stack.
    #[no_mangle]
    extern "C" fn boot_main(_dtb: usize) -> ! {
        park()
    }

    fn park() -> ! {
        loop {
            aarch64_wfe();
        }
    }

    fn aarch64_wfe() {
        // SAFETY: `wfe` only waits for an event; it has no memory or register effects.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack, preserves_flags)) }
    }

    #[panic_handler]
    fn panic(_info: &PanicInfo) -> ! {
        park()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("moat is a bare-metal image: build it with `cargo xtask build`");
    std::process::exit(1);
}
