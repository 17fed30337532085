// SPDX-License-Identifier: MIT OR Apache-2.0
//! boot: moat's entry points and image layout.
//!
//! ```text
//!   TF-A BL31 --(eret to EL2, x0 = DTB)--> _start (arm64 Image header)
//!                                            |  not at EL2? park
//!                                            v
//!                           clear BSS, SP = stack of CPU 0, TPIDR_EL2 = 0
//!                                            v
//!                                 hv::start(dtb, stack_top)
//!
//!   firmware PSCI CPU_ON (x0 = CPU index) --> _secondary_start
//!                           SP = stack of that CPU, TPIDR_EL2 = index
//!                                            v
//!                                 hv::start_secondary(cpu, stack_top)
//! ```
//!
//! The image starts with the arm64 Linux Image header (Documentation/arch/arm64/booting.rst),
//! so it can be entered directly as BL33 or loaded by U-Boot's `booti`, as Xen is. It is
//! linked at 0x60000000 and must run there (see link.ld).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod entry {
    /// Bytes of EL2 stack per CPU; must match STACK_SIZE in link.ld.
    const STACK_SIZE: u64 = 0x10000;
    // link.ld reserves MAX_CPUS = 8 stacks: hv's CPU limit must not outgrow them.
    const _: () = assert!(hv::MAX_CPUS == 8, "update MAX_CPUS in boot/link.ld too");

    // SAFETY: this is the image's first code, placed at the load address by `link.ld`.
    // Until Rust runs, nothing else executes on a CPU, and the assembly only touches the
    // BSS and the per-CPU stack that the linker script reserves. A secondary CPU's index
    // (x0) comes from moat itself (hv::start_vcpu) and is bounded by MAX_CPUS here.
    core::arch::global_asm!(
        r#"
        .section .text.head, "ax"
        .global _start
    _start:
        b       1f                      // code0: branch over the header
        .long   0                       // code1
        .quad   0                       // text_offset
        .quad   __hv_end - _start       // image_size: BSS, heap, frames, stacks included
        .quad   0xa                     // flags: LE, 4 KiB pages, anywhere in RAM
        .quad   0, 0, 0                 // res2..res4
        .ascii  "ARM\x64"               // magic
        .long   0                       // res5
    1:
        mov     x19, x0                 // keep the DTB
        mrs     x20, CurrentEL
        lsr     x20, x20, #2
        cmp     x20, #2
        b.ne    8f
        adrp    x1, __bss_start
        add     x1, x1, :lo12:__bss_start
        adrp    x2, __bss_end
        add     x2, x2, :lo12:__bss_end
    2:  cmp     x1, x2
        b.hs    3f
        stp     xzr, xzr, [x1], #16
        b       2b
        // The zeroes went to memory (MMU off): drop any stale cache lines for everything
        // from BSS to the end of moat, so cacheable reads later see them.
    3:  mrs     x3, ctr_el0
        ubfx    x3, x3, #16, #4         // DminLine: log2(words per line)
        mov     x4, #4
        lsl     x4, x4, x3              // line size in bytes
        adrp    x1, __bss_start
        add     x1, x1, :lo12:__bss_start
        adrp    x2, __hv_end
        add     x2, x2, :lo12:__hv_end
    5:  dc      ivac, x1
        add     x1, x1, x4
        cmp     x1, x2
        b.lo    5b
        dsb     sy
        mov     x0, #0
        msr     tpidr_el2, x0
        adrp    x1, __stacks_start
        add     x1, x1, :lo12:__stacks_start
        mov     x2, #{stack}
        add     x1, x1, x2              // top of CPU 0's stack
        mov     sp, x1
        mov     x0, x19
        bl      moat_primary
        // Not at EL2: say so on the console, using CPU 0's stack, then park.
    8:  adrp    x1, __stacks_start
        add     x1, x1, :lo12:__stacks_start
        mov     x2, #{stack}
        add     x1, x1, x2
        mov     sp, x1
        mov     x0, x19
        mov     x1, x20
        bl      moat_wrong_el
    9:  wfe
        b       9b

        .global _secondary_start
    _secondary_start:
        mrs     x1, CurrentEL
        lsr     x1, x1, #2
        cmp     x1, #2
        b.ne    9b
        cmp     x0, #{max_cpus}
        b.hs    9b
        msr     tpidr_el2, x0
        adrp    x1, __stacks_start
        add     x1, x1, :lo12:__stacks_start
        add     x2, x0, #1
        mov     x3, #{stack}
        madd    x1, x2, x3, x1          // top of this CPU's stack
        mov     sp, x1
        bl      moat_secondary
        b       9b
    "#,
        stack = const STACK_SIZE,
        max_cpus = const hv::MAX_CPUS,
    );

    fn stack_top(cpu: usize) -> u64 {
        extern "C" {
            static __stacks_start: u8;
        }
        // Taking a linker symbol's address reads nothing.
        let base = core::ptr::addr_of!(__stacks_start) as u64;
        base + (cpu as u64 + 1) * STACK_SIZE
    }

    /// The primary CPU, at EL2, BSS cleared, on CPU 0's stack.
    #[no_mangle]
    extern "C" fn moat_primary(dtb: u64) -> ! {
        hv::start(dtb, stack_top(0))
    }

    /// The boot CPU was entered at another EL than EL2: report it and park.
    #[no_mangle]
    extern "C" fn moat_wrong_el(dtb: u64, el: u64) -> ! {
        hv::wrong_el(dtb, el)
    }

    /// A secondary CPU, at EL2, on its own stack.
    #[no_mangle]
    extern "C" fn moat_secondary(cpu: usize) -> ! {
        hv::start_secondary(cpu, stack_top(cpu))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("moat is a bare-metal image: build it with `cargo xtask qemu --hv moat`");
    std::process::exit(1);
}
