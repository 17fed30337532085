// SPDX-License-Identifier: MIT OR Apache-2.0
//! moat's hostile guest: a bare-metal EL1 program that moat boots as dom0 instead of
//! Linux. It reads its device tree, runs the campaign of `hostile-core` (seeded raw SMCs
//! at the OP-TEE mediator, every answer checked), prints its findings and summary on the
//! PL011, and powers the machine off.
//!
//! ```text
//!   moat (EL2) --eret to EL1h, MMU off, x0 = DT--> _start (arm64 Image header)
//!        VBAR_EL1 = vectors (an exception is reported, then power-off; a probe's abort
//!        is answered), BSS cleared, SP
//!                                 v
//!                  hostile_main: heap, DT (hv_core::fdt), layout, options
//!                                 v
//!                  MMU and caches on: hostile_core::stage1's identity map (RAM Normal
//!                  write-back, the emulated GIC and PL011 Device-nGnRE, nothing else)
//!                                 v
//!                  hostile_core::run over Port: smc #0 | own RAM | CNTVCT | PL011 |
//!                                               probes of the emulated devices
//!                                 v
//!                  "hostile: done, status N", PSCI SYSTEM_OFF (hvc, as the DT says)
//! ```
//!
//! This is the effect half: every `unsafe` of the guest is here, each with a `// SAFETY:`
//! comment; everything that decides anything is in `hostile-core`. Until its MMU is on
//! (the DT read, the layout built) every data access is Device-nGnRnE, so the target is
//! built with `+strict-align` (as `aarch64-unknown-none-softfloat` is) and nothing here
//! uses atomics. Then the guest runs as a real one does, with its MMU and caches on:
//! Normal write-back RAM, coherent with moat's cacheable view of it, and Device-nGnRE
//! MMIO, where an unaligned or exclusive access would fault as it does on hardware.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use core::alloc::{GlobalAlloc, Layout as AllocLayout};
    use core::cell::UnsafeCell;
    use core::fmt::Write;
    use core::ptr::NonNull;

    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, MAIR_EL1, SCTLR_EL1, TCR_EL1};
    use hostile_core::driver::{Guest, Mmio};
    use hostile_core::layout::{Devices, Layout, Machine, Span};
    use hostile_core::options::Options;
    use hostile_core::stage1::{self, Memory};
    use hv_core::mmio::Width;
    use tock_registers::interfaces::{Readable, Writeable};
    use tock_registers::registers::{ReadOnly, WriteOnly};
    use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

    /// QEMU virt's console PL011, until the DT says otherwise (moat's vPL011 for dom0).
    const DEFAULT_UART: u64 = 0x0900_0000;
    /// PSCI SYSTEM_OFF (DEN 0022, SMC32).
    const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
    /// Largest DT accepted (the arm64 boot protocol's limit).
    const MAX_DTB: usize = 2 << 20;
    /// Exit status when the guest itself failed (an exception, a panic).
    const STATUS_CRASHED: u8 = 3;
    /// Translation tables for the identity map: a level-1 table, a level-2 table per GiB
    /// mapped (RAM spans two or three), level-3 tables where a region does not fill 2 MiB
    /// (the GIC's frames, the PL011's, RAM banks off the 2 MiB grid).
    const TABLES: usize = 24;

    // -------------------------------------------------------------------------------------
    // Entry.

    // SAFETY: this is the image's first code, placed at its load address by `link.ld`
    // (moat enters dom0's kernel module in place at EL1h with the MMU off, x0 = the DT).
    // Until Rust runs nothing else executes on this CPU (the guest never starts another
    // vCPU), and the assembly only touches VBAR_EL1, the BSS and the stack `link.ld`
    // reserves inside the image.
    core::arch::global_asm!(
        r#"
        .section .text.head, "ax"
        .global _start
    _start:
        b       1f                      // code0: branch over the header
        .long   0                       // code1
        .quad   0                       // text_offset: runs at its 2 MiB-aligned base
        .quad   __guest_end - _start    // image_size: BSS, stack, heap and arena included
        .quad   0x2                     // flags: LE, 4 KiB pages
        .quad   0, 0, 0                 // res2..res4
        .ascii  "ARM\x64"               // magic
        .long   0                       // res5
    1:
        mov     x19, x0                 // keep the DT
        // Linked at its load address, not relocatable: anywhere else, park.
        adr     x1, _start
        ldr     x2, =_start
        cmp     x1, x2
        b.ne    9f
        adrp    x1, __vectors
        add     x1, x1, :lo12:__vectors
        msr     vbar_el1, x1
        isb
        adrp    x1, __bss_start
        add     x1, x1, :lo12:__bss_start
        adrp    x2, __bss_end
        add     x2, x2, :lo12:__bss_end
    2:  cmp     x1, x2
        b.hs    3f
        stp     xzr, xzr, [x1], #16
        b       2b
    3:  adrp    x1, __stack_top
        add     x1, x1, :lo12:__stack_top
        mov     sp, x1
        mov     x0, x19
        bl      hostile_main
    9:  wfe
        b       9b

        // EL1 vectors: 16 entries of 128 bytes; each reports itself and powers off, but
        // for a synchronous exception at EL1 (entry 4), which may be a probe's answer.
        .section .text.vectors, "ax"
        .balign 0x800
    __vectors:
        .irp    n, 0, 1, 2, 3
        .balign 0x80
        mov     x0, #\n
        b       __exception
        .endr
        .balign 0x80
        b       __sync_el1h
        .irp    n, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
        .balign 0x80
        mov     x0, #\n
        b       __exception
        .endr
    __exception:
        mrs     x1, esr_el1
        mrs     x2, elr_el1
        mrs     x3, far_el1
        bl      hostile_exception
        b       9b

        // A data abort on the one access of a probe (between __probe_start and
        // __probe_end) is an answer the campaign checks: step over the access and return
        // to the probe with ESR_EL1 in x1 (the probes leave x1..x3 to this handler).
        // Anything else is fatal, as at every other vector.
    __sync_el1h:
        mrs     x2, elr_el1
        adrp    x3, __probe_start
        add     x3, x3, :lo12:__probe_start
        cmp     x2, x3
        b.lo    1f
        adrp    x3, __probe_end
        add     x3, x3, :lo12:__probe_end
        cmp     x2, x3
        b.hs    1f
        mrs     x3, esr_el1
        lsr     x3, x3, #26
        cmp     x3, #0x25               // EC: a data abort taken at EL1
        b.ne    1f
        add     x2, x2, #4
        msr     elr_el1, x2
        mrs     x1, esr_el1
        eret
    1:  mov     x0, #4
        b       __exception

        // The probes: one load or store to an emulated device each, called as
        // `extern "C" fn(addr[, value]) -> ProbeResult` (x0 = the value loaded, x1 = 0,
        // or ESR_EL1 when the access aborted). Loads and stores of one register with no
        // writeback give moat a valid syndrome (ISV=1); `ldp` does not (ISV=0).
        .section .text.probes, "ax"
        .balign 4
    __probe_start:
        .macro  load name, insn, reg
        .global \name
    \name:
        mov     x1, xzr
        \insn   \reg, [x0]
        mov     x0, x2
        ret
        .endm
        .macro  store name, insn, reg
        .global \name
    \name:
        mov     x2, x1
        mov     x1, xzr
        \insn   \reg, [x0]
        mov     x0, xzr
        ret
        .endm
        load    __probe_ldrb, ldrb, w2
        load    __probe_ldrh, ldrh, w2
        load    __probe_ldr_w, ldr, w2
        load    __probe_ldr_x, ldr, x2
        store   __probe_strb, strb, w2
        store   __probe_strh, strh, w2
        store   __probe_str_w, str, w2
        store   __probe_str_x, str, x2
        .global __probe_ldp
    __probe_ldp:
        mov     x1, xzr
        ldp     w2, w3, [x0]
        mov     x0, x2
        ret
    __probe_end:
    "#
    );

    /// What a probe returns, in x0 and x1 (AAPCS64: a 16-byte composite).
    #[repr(C)]
    struct ProbeResult {
        /// The value loaded (0 for a store).
        value: u64,
        /// 0, or ESR_EL1 of the abort the access took.
        esr: u64,
    }

    extern "C" {
        fn __probe_ldrb(addr: u64) -> ProbeResult;
        fn __probe_ldrh(addr: u64) -> ProbeResult;
        fn __probe_ldr_w(addr: u64) -> ProbeResult;
        fn __probe_ldr_x(addr: u64) -> ProbeResult;
        fn __probe_strb(addr: u64, value: u64) -> ProbeResult;
        fn __probe_strh(addr: u64, value: u64) -> ProbeResult;
        fn __probe_str_w(addr: u64, value: u64) -> ProbeResult;
        fn __probe_str_x(addr: u64, value: u64) -> ProbeResult;
        fn __probe_ldp(addr: u64) -> ProbeResult;
    }

    extern "C" {
        static __image_start: u8;
        static __guest_end: u8;
        static __heap_start: u8;
        static __heap_end: u8;
        static __arena_start: u8;
        static __probe_start: u8;
        static __probe_end: u8;
        static __arena_end: u8;
    }

    /// The address of a linker symbol (taking it reads nothing).
    macro_rules! sym {
        ($s:ident) => {
            core::ptr::addr_of!($s) as u64
        };
    }

    // -------------------------------------------------------------------------------------
    // Single-CPU globals.

    /// A global of this single-CPU, interrupt-free guest.
    struct Global<T>(UnsafeCell<T>);

    // SAFETY: the guest runs on one vCPU with interrupts masked (moat enters it with DAIF
    // set and it never unmasks them), so a `Global` is never accessed from two contexts at
    // once; the exception path only reads the UART base.
    unsafe impl<T> Sync for Global<T> {}

    impl<T: Copy> Global<T> {
        fn get(&self) -> T {
            // SAFETY: see `Sync` above: no access overlaps this read.
            unsafe { *self.0.get() }
        }
        fn set(&self, v: T) {
            // SAFETY: see `Sync` above: no access overlaps this write.
            unsafe { *self.0.get() = v }
        }
    }

    static UART_BASE: Global<u64> = Global(UnsafeCell::new(DEFAULT_UART));
    static PSCI_HVC: Global<bool> = Global(UnsafeCell::new(true));

    // -------------------------------------------------------------------------------------
    // The heap: the buddy allocator's unlocked heap over `link.ld`'s heap region.

    struct Heap(UnsafeCell<buddy_system_allocator::Heap<32>>);

    // SAFETY: as `Global`: one vCPU, no interrupts; the exception and panic paths do not
    // allocate.
    unsafe impl Sync for Heap {}

    // SAFETY: `alloc` hands out blocks of the heap region only, each to one caller until it
    // is given back through `dealloc` with the same layout (the buddy allocator's
    // contract); a failure is a null pointer.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
            // SAFETY: no other reference to the heap is live (`Sync` above).
            let heap = unsafe { &mut *self.0.get() };
            heap.alloc(layout)
                .map_or(core::ptr::null_mut(), |p| p.as_ptr())
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
            // SAFETY: as in `alloc`.
            let heap = unsafe { &mut *self.0.get() };
            if let Some(p) = NonNull::new(ptr) {
                heap.dealloc(p, layout);
            }
        }
    }

    #[global_allocator]
    static HEAP: Heap = Heap(UnsafeCell::new(buddy_system_allocator::Heap::empty()));

    fn heap_init() {
        let (start, end) = (sym!(__heap_start), sym!(__heap_end));
        // SAFETY: [start, end) is `link.ld`'s heap region, inside this image's own RAM,
        // used for nothing else, handed to the allocator once, before any allocation.
        unsafe { (*HEAP.0.get()).init(start as usize, (end - start) as usize) };
    }

    // -------------------------------------------------------------------------------------
    // The console: a PL011, polled (Arm PrimeCell UART PL011 TRM, DDI 0183).

    register_bitfields! {u32,
        /// UARTFR, the flag register (TRM 3.3.3).
        FR [
            /// Transmit FIFO full: wait before writing UARTDR.
            TXFF OFFSET(5) NUMBITS(1) [],
        ],
        /// UARTDR, the data register (TRM 3.3.1).
        DR [
            /// The character transmitted.
            DATA OFFSET(0) NUMBITS(8) [],
        ]
    }

    register_structs! {
        /// The PL011 registers the guest uses.
        Pl011Regs {
            (0x000 => dr: WriteOnly<u32, DR::Register>),
            (0x004 => _reserved0),
            (0x018 => fr: ReadOnly<u32, FR::Register>),
            (0x01c => @END),
        }
    }

    /// The console UART.
    struct Uart {
        regs: &'static Pl011Regs,
    }

    impl Uart {
        /// # Safety
        /// `base` must be a PL011 register block this guest may use (its DT's console, or
        /// QEMU virt's, which moat emulates for dom0) for as long as the guest runs.
        unsafe fn new(base: u64) -> Self {
            // SAFETY: the caller guarantees `base` is a PL011 that lives forever; every
            // access to it is a single Device load or store (nGnRnE with the MMU off,
            // nGnRE through the identity map once it is on, which maps the console).
            let regs = unsafe { &*(base as *const Pl011Regs) };
            Self { regs }
        }

        /// The console as set up so far.
        fn console() -> Self {
            // SAFETY: UART_BASE is QEMU virt's PL011, or the DT's `arm,pl011` console
            // (checked outside this guest's RAM before it is stored).
            unsafe { Self::new(UART_BASE.get()) }
        }

        fn put(&self, b: u8) {
            while self.regs.fr.is_set(FR::TXFF) {
                core::hint::spin_loop();
            }
            self.regs.dr.write(DR::DATA.val(u32::from(b)));
        }
    }

    impl Write for Uart {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for b in s.bytes() {
                self.put(b);
            }
            Ok(())
        }
    }

    fn say(line: &str) {
        let mut u = Uart::console();
        let _ = u.write_str(line);
        u.put(b'\n');
    }

    // -------------------------------------------------------------------------------------
    // Firmware calls and the timer.

    /// `smc #0`: trapped by moat (HCR_EL2.TSC) and handed to its OP-TEE mediator.
    fn smc(regs: [u64; 8]) -> [u64; 8] {
        let mut r = regs;
        // SAFETY: the SMC traps to moat, which answers in x0..x7 and preserves the other
        // registers (x8..x17 are declared clobbered all the same, as SMCCC allows). What
        // the mediator writes to memory is this guest's own RAM that the call names: the
        // asm is not `nomem`, so the compiler assumes memory changed.
        unsafe {
            core::arch::asm!(
                "smc #0",
                inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
                inout("x4") r[4], inout("x5") r[5], inout("x6") r[6], inout("x7") r[7],
                lateout("x8") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
                lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _,
                lateout("x16") _, lateout("x17") _,
                options(nostack)
            );
        }
        r
    }

    /// PSCI SYSTEM_OFF through the DT's conduit: moat ends the machine (dom0 owns it).
    fn system_off() -> ! {
        let hvc = PSCI_HVC.get();
        // SAFETY: SYSTEM_OFF does not return when it works; moat handles it (HVC, or a
        // trapped SMC) and powers the machine off through the firmware.
        unsafe {
            if hvc {
                core::arch::asm!("hvc #0", in("x0") PSCI_SYSTEM_OFF, options(nostack));
            } else {
                core::arch::asm!("smc #0", in("x0") PSCI_SYSTEM_OFF, options(nostack));
            }
        }
        say("hostile: SYSTEM_OFF returned; parking");
        loop {
            // SAFETY: waiting for an event touches nothing.
            unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
        }
    }

    fn now_ms() -> u64 {
        let (count, freq): (u64, u64);
        // SAFETY: EL1 may always read the virtual counter and its frequency.
        unsafe {
            core::arch::asm!(
                "isb",
                "mrs {c}, cntvct_el0",
                "mrs {f}, cntfrq_el0",
                c = out(reg) count,
                f = out(reg) freq,
                options(nomem, nostack)
            );
        }
        count / (freq / 1000).max(1)
    }

    // -------------------------------------------------------------------------------------
    // The MMU: an identity map, caches on (Arm ARM D8 "The AArch64 Virtual Memory System
    // Architecture"; the tables are hostile_core::stage1's).

    /// The translation tables' pool, page-aligned in the BSS.
    #[repr(C, align(4096))]
    struct Tables([stage1::Table; TABLES]);

    /// Written once, by `map`, before the MMU is on; only the table walker reads it after.
    static POOL: Global<Tables> = Global(UnsafeCell::new(Tables([[0; stage1::ENTRIES]; TABLES])));

    /// MAIR_EL1: the two memory types the tables name (`stage1::ATTR_NORMAL`, `ATTR_DEVICE`).
    fn mair_el1() -> LocalRegisterCopy<u64, MAIR_EL1::Register> {
        LocalRegisterCopy::new(
            (
                // Attr0, RAM: Normal, inner and outer write-back non-transient,
                // read/write-allocate, as moat maps it, so both views are coherent.
                MAIR_EL1::Attr0_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
                    + MAIR_EL1::Attr0_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
                    // Attr1, MMIO: Device-nGnRE, as Linux maps device registers: no
                    // gathering or reordering, an early write acknowledgement allowed.
                    + MAIR_EL1::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck
            )
                .value,
        )
    }

    /// TCR_EL1 for the tables `stage1` builds.
    fn tcr_el1() -> LocalRegisterCopy<u64, TCR_EL1::Register> {
        // The guest's physical (moat's intermediate physical) address size, at most the
        // 48 bits a 4 KiB-granule descriptor holds.
        let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
        LocalRegisterCopy::new(
            (
                // A 39-bit VA space: the walk starts at a level-1 table (stage1::VA_BITS).
                TCR_EL1::T0SZ.val(u64::from(64 - stage1::VA_BITS))
                    // 4 KiB pages, as the tables are built.
                    + TCR_EL1::TG0::KiB_4
                    // Walks are cacheable and inner shareable, like the RAM the tables
                    // are in (written to memory with the MMU off, stale lines invalidated
                    // before it goes on: see `mmu_on`).
                    + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
                    + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
                    + TCR_EL1::SH0::Inner
                    // No upper (TTBR1) half: the guest lives at its identity addresses.
                    + TCR_EL1::EPD1::DisableTTBR1Walks
                    + TCR_EL1::IPS.val(pa_range)
                // A1 = 0 (ASIDs from TTBR0, unused: one address space), TBI0 = 0 (no
                // tagged addresses), HA = HD = 0 (the tables set AF themselves).
            )
            .value,
        )
    }

    /// SCTLR_EL1 with the MMU on.
    fn sctlr_el1() -> u64 {
        // The bits that are RES1 without the features that give them a meaning, and the
        // ARMv8.0 behaviour with them (the value moat enters every guest with): EOS [11]
        // and EIS [22], exception return and entry are context-synchronizing; TSCXT [20];
        // SPAN [23], exception entry leaves PSTATE.PAN alone; nTLSMD [28] and LSMAOE [29],
        // EL0's load/store multiple as in ARMv8.0 (there is no EL0 here).
        const RES1: u64 = (1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11);
        let v = (
            // Translation on, with the identity map: the running code stays where it is.
            SCTLR_EL1::M::Enable
                // Data and instruction caches on: RAM is Normal write-back, as on a
                // machine, and coherent with moat's own cacheable mapping of it.
                + SCTLR_EL1::C::Cacheable
                + SCTLR_EL1::I::Cacheable
                // Stack-alignment checks: a misaligned SP faults at once.
                + SCTLR_EL1::SA::Enable
                + SCTLR_EL1::SA0::Enable
                // No alignment checks on Normal memory (Device accesses are always
                // checked): what the guest does with RAM is its own business.
                + SCTLR_EL1::A::Disable
                // WXN off: text and data share the RAM mapping, which is writable.
                + SCTLR_EL1::WXN::Disable
                // Little-endian at EL1 and EL0.
                + SCTLR_EL1::EE::LittleEndian
                + SCTLR_EL1::E0E::LittleEndian
            // UCI, UCT, DZE, nTWE, nTWI, UMA = 0: EL0's cache maintenance, CTR_EL0, DC ZVA,
            // WFE, WFI and DAIF trap to EL1; there is no EL0.
        )
            .value;
        v | RES1
    }

    /// The identity map of `layout`'s RAM banks and emulated devices, in `POOL`; the
    /// level-1 table's address, or why it could not be built.
    fn map(layout: &Layout) -> Result<u64, stage1::MapError> {
        let mut regions: alloc::vec::Vec<(Span, Memory)> =
            layout.ram.iter().map(|r| (*r, Memory::Normal)).collect();
        regions.extend(layout.devices.iter().map(|(_, f)| (f, Memory::Device)));
        let base = POOL.0.get() as u64;
        // SAFETY: the pool is this image's own BSS, used for nothing else; the MMU is off
        // and this is the only reference to it (one vCPU, no interrupts); nothing reads
        // it until `mmu_on` hands it to the table walker.
        let pool = unsafe { &mut (*POOL.0.get()).0 };
        stage1::build(pool, base, &regions)
    }

    /// Turn the MMU and caches on with the tables at `ttbr0`.
    fn mmu_on(ttbr0: u64) {
        // Everything written with the MMU off (data, BSS, the tables, stack, heap) went to
        // memory uncached; a stale line of it left in a cache (moat loaded this image with
        // its own cacheable mapping) would hide it once reads are cacheable, so the lines
        // are invalidated first, as Linux does with its early page tables.
        let (start, end) = (sym!(__image_start), sym!(__arena_start));
        // SAFETY: `ttbr0` is `map`'s level-1 table, which maps this image (code, stack,
        // data) and the console at their own addresses, so execution and every live
        // reference carry on unchanged when translation starts; the invalidated lines
        // can hold nothing newer than memory (the guest has not cached anything yet).
        // The asm uses no stack; the registers are the guest's own EL1 controls.
        unsafe {
            core::arch::asm!(
                "mrs    {t}, ctr_el0",
                "ubfx   {t}, {t}, #16, #4",   // DminLine: log2 of the line in words
                "mov    {line}, #4",
                "lsl    {line}, {line}, {t}",
                "sub    {t}, {line}, #1",
                "bic    {a}, {start}, {t}",
                "1:",
                "dc     ivac, {a}",
                "add    {a}, {a}, {line}",
                "cmp    {a}, {end}",
                "b.lo   1b",
                "dsb    sy",
                "msr    mair_el1, {mair}",
                "msr    tcr_el1, {tcr}",
                "msr    ttbr0_el1, {ttbr0}",
                "isb",
                "tlbi   vmalle1",
                "dsb    nsh",
                "isb",
                "msr    sctlr_el1, {sctlr}",
                "isb",
                "ic     iallu",
                "dsb    nsh",
                "isb",
                t = out(reg) _,
                line = out(reg) _,
                a = out(reg) _,
                start = in(reg) start,
                end = in(reg) end,
                mair = in(reg) mair_el1().get(),
                tcr = in(reg) tcr_el1().get(),
                ttbr0 = in(reg) ttbr0,
                sctlr = in(reg) sctlr_el1(),
                options(nostack)
            );
        }
    }

    // -------------------------------------------------------------------------------------
    // The ports.

    struct Port<'a> {
        layout: &'a Layout,
    }

    impl Guest for Port<'_> {
        fn smc(&mut self, regs: [u64; 8]) -> [u64; 8] {
            smc(regs)
        }

        fn write(&mut self, pa: u64, bytes: &[u8]) {
            if !self.layout.writable(pa, bytes.len() as u64) {
                say("hostile: internal: a write outside the arena was skipped");
                return;
            }
            // SAFETY: [pa, pa + len) is the arena (this image's own NOLOAD region, never
            // referenced by Rust objects) or a RAM edge page of this guest's that nothing
            // else uses, as the layout checked; the identity map makes PA the address.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
        }

        fn read(&mut self, pa: u64, buf: &mut [u8]) {
            if !self.layout.writable(pa, buf.len() as u64) {
                buf.fill(0);
                return;
            }
            // SAFETY: as in `write`; the bytes may have been written by the mediator.
            unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) };
        }

        fn now_ms(&mut self) -> u64 {
            now_ms()
        }

        fn say(&mut self, line: &str) {
            say(line);
        }

        fn mmio(&mut self, pa: u64, access: Mmio) -> Result<u64, u64> {
            let len = match access {
                Mmio::Read(w) | Mmio::Write(w, _) => w.bytes(),
                Mmio::ReadPair => 8,
            };
            if self.layout.devices.holding(pa, len).is_none() || !pa.is_multiple_of(len) {
                say("hostile: internal: an MMIO access outside the emulated devices was skipped");
                return Err(0);
            }
            // SAFETY: [pa, pa + len) is aligned and inside the frame of a device moat
            // emulates for this guest (its DT's GIC or console PL011), mapped
            // Device-nGnRE: the access traps to moat's model of it and touches no memory
            // of this guest's. If moat answers with an abort, the vectors step over the
            // probe's access and hand back ESR_EL1 (`__sync_el1h`).
            let r = unsafe {
                match access {
                    Mmio::Read(Width::Byte) => __probe_ldrb(pa),
                    Mmio::Read(Width::Half) => __probe_ldrh(pa),
                    Mmio::Read(Width::Word) => __probe_ldr_w(pa),
                    Mmio::Read(Width::Double) => __probe_ldr_x(pa),
                    Mmio::Write(Width::Byte, v) => __probe_strb(pa, v),
                    Mmio::Write(Width::Half, v) => __probe_strh(pa, v),
                    Mmio::Write(Width::Word, v) => __probe_str_w(pa, v),
                    Mmio::Write(Width::Double, v) => __probe_str_x(pa, v),
                    Mmio::ReadPair => __probe_ldp(pa),
                }
            };
            match r.esr {
                0 => Ok(r.value),
                esr => Err(esr),
            }
        }
    }

    // -------------------------------------------------------------------------------------
    // Main.

    /// The DT moat passed in x0, as a slice.
    fn dtb(at: u64) -> Option<&'static [u8]> {
        if at == 0 || !at.is_multiple_of(8) {
            return None;
        }
        let mut head = [0u8; 8];
        // SAFETY: moat passes dom0's DT in x0 (the arm64 boot protocol): it placed it in
        // this guest's RAM before starting it and never writes it again. The header is
        // read first to learn its size.
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, head.as_mut_ptr(), 8) };
        let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if u32::from_be_bytes([head[0], head[1], head[2], head[3]]) != 0xd00d_feed
            || !(40..=MAX_DTB).contains(&size)
        {
            return None;
        }
        // SAFETY: as above; `totalsize` bytes (at most 2 MiB) of the DT, which nothing
        // writes while the guest runs.
        Some(unsafe { core::slice::from_raw_parts(at as *const u8, size) })
    }

    fn finish(status: u8) -> ! {
        say(&alloc::format!("hostile: done, status {status}"));
        system_off()
    }

    #[no_mangle]
    extern "C" fn hostile_main(dtb_at: u64) -> ! {
        heap_init();
        let Some(blob) = dtb(dtb_at) else {
            say(&alloc::format!("hostile: no device tree at {dtb_at:#x}"));
            finish(hostile_core::STATUS_CANNOT_RUN)
        };
        let machine = match Machine::from_dtb(blob) {
            Ok(m) => m,
            Err(e) => {
                say(&alloc::format!(
                    "hostile: the device tree is unusable: {e:?}"
                ));
                finish(hostile_core::STATUS_CANNOT_RUN)
            }
        };
        PSCI_HVC.set(machine.psci_hvc);
        let image = Span {
            start: sym!(__image_start),
            end: sym!(__guest_end),
        };
        let arena = Span {
            start: sym!(__arena_start),
            end: sym!(__arena_end),
        };
        let dt = Span::at(dtb_at, blob.len() as u64);
        let layout = Layout::new(&machine.ram, arena, &[image, dt]);
        if let Some(u) = machine.uart.filter(|&u| !layout.is_ram(u, 0x1000)) {
            UART_BASE.set(u);
        }
        // The devices it touches: the DT's GIC, and the console it prints on.
        let devices = Devices::of(&machine, Some(UART_BASE.get()));
        let layout = layout.with_devices(devices);
        let mut banks = alloc::string::String::new();
        for r in &machine.ram {
            let _ = write!(banks, " [{:#x}, {:#x})", r.start, r.end);
        }
        say(&alloc::format!(
            "hostile: moat-hostile-guest {}: RAM{banks}; image [{:#x}, {:#x}), arena [{:#x}, {:#x}), DT at {dtb_at:#x}; bootargs \"{}\"",
            env!("CARGO_PKG_VERSION"),
            image.start,
            image.end,
            arena.start,
            arena.end,
            machine.bootargs
        ));
        if !layout.ram.iter().any(|r| r.holds(image.start, image.len())) {
            say("hostile: this image is not inside the RAM the DT gives it");
            finish(hostile_core::STATUS_CANNOT_RUN)
        }
        let opts = match Options::parse(&machine.bootargs) {
            Ok(o) => o,
            Err(e) => {
                say(&alloc::format!("hostile: {e}"));
                finish(hostile_core::STATUS_CANNOT_RUN)
            }
        };
        if !machine.optee_smc {
            say("hostile: the DT has no /firmware/optee with method \"smc\": nothing to attack");
            finish(hostile_core::STATUS_CANNOT_RUN)
        }
        match map(&layout) {
            Ok(ttbr0) => mmu_on(ttbr0),
            Err(e) => {
                say(&alloc::format!(
                    "hostile: no identity map for this layout: {e:?}"
                ));
                finish(hostile_core::STATUS_CANNOT_RUN)
            }
        }
        say("hostile: MMU on: RAM Normal write-back, the GIC and the PL011 Device-nGnRE");
        let summary = hostile_core::run(&mut Port { layout: &layout }, &layout, &opts);
        finish(summary.status())
    }

    /// An exception at EL1: a bug of this guest (it makes no access the layout does not
    /// allow), or an abort moat injected. Reported without allocating, then power-off.
    #[no_mangle]
    extern "C" fn hostile_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
        let mut u = Uart::console();
        let _ = writeln!(
            u,
            "hostile: exception (vector {vector}): ESR_EL1 {esr:#x} at {elr:#x}, FAR {far:#x}"
        );
        let _ = writeln!(u, "hostile: done, status {STATUS_CRASHED}");
        system_off()
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let mut u = Uart::console();
        let _ = writeln!(u, "hostile: PANIC: {info}");
        let _ = writeln!(u, "hostile: done, status {STATUS_CRASHED}");
        system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hostile guest is a bare-metal image: `cargo xtask qemu --dom0 hostile` builds and boots it");
    std::process::exit(1);
}
