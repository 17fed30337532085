// SPDX-License-Identifier: MIT OR Apache-2.0
//! Virtual devices and interrupt delivery: the glue between traps and the pure models of
//! `hv_core::vgic`, `hv_core::vpl011` and `hv_core::console`.
//!
//! ```text
//!   data abort in GICD/GICR/UART window ─► Vgic / Vpl011 model ─► effects on the real GIC
//!   physical IRQ ─► ack + priority drop ─► Vgic::inject (HW-linked) ─► list registers
//!   ICC_SGI1R_EL1 trap ─► Vgic::send_sgi ─► kick the target's pCPU with a physical SGI
//!   console UART IRQ ─► ConsoleMux (Ctrl-a x3) ─► Vpl011 RX FIFO ─► virtual SPI
//!   every return to a guest ─► sync_lrs + fill_lrs for this vCPU
//! ```

use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::addr::{Ipa, Range};
use hv_core::console::{ConsoleMux, Focus, InputAction};
use hv_core::mmio::{Direction, MmioAccess};
use hv_core::vgic::{Effect, Target, MAX_LRS};
use spin::Mutex;

use crate::arch::TrapFrame;
use crate::domain::Domain;
use crate::gic;

/// The console multiplexer: where input goes, how guest output is tagged.
static CONSOLE: Mutex<Option<ConsoleMux>> = Mutex::new(None);

/// Most bytes taken from the console UART per interrupt (its FIFO holds 32).
const MAX_INPUT_PER_IRQ: usize = 64;
/// The most bytes one input byte can release to a guest: a held Ctrl-a pair plus itself.
const MAX_DELIVERY: usize = hv_core::console::SWITCH_COUNT as usize;
/// When (counter ticks) console input was paused because the focused guest's vPL011 had
/// no room; 0 when it is not. While paused, the physical UART's receive interrupt is masked
/// until that guest reads its FIFO, or until [`STALL_SECS`] have passed: a guest that never
/// reads must not keep Ctrl-a from reaching moat, so input then flows again and what does
/// not fit is dropped, as a real UART overruns.
static PAUSED_SINCE: AtomicU64 = AtomicU64::new(0);
/// How long a paused console waits for its guest.
const STALL_SECS: u64 = 1;

fn stalled(since: u64) -> bool {
    since != 0
        && crate::arch::counter().wrapping_sub(since)
            >= STALL_SECS * crate::arch::counter_frequency()
}

/// What an emulated access did.
pub enum Emulated {
    /// Completed: step over the instruction.
    Done,
    /// The address belongs to no emulated device.
    NotMine,
    /// The device refused the access (bad width or offset): inject an abort.
    Refused,
}

/// Set up the console mux for every domain, with dom0 focused, as Xen starts.
pub fn init_console(domains: &[Domain]) {
    let mut mux = ConsoleMux::new();
    for d in domains {
        if let Err(e) = mux.add_domain(d.id.0) {
            log::warn!("d{}: no console input ({e:?})", d.id.0);
        }
    }
    if mux.set_focus(Focus::Domain(0)).is_ok() {
        *CONSOLE.lock() = Some(mux);
    }
}

fn in_range(r: &Range<Ipa>, ipa: u64) -> Option<usize> {
    (ipa >= r.start.raw() && ipa < r.end.raw()).then(|| (ipa - r.start.raw()) as usize)
}

/// The physical CPU running `vcpu` of `dom`.
fn pcpu_of(dom: &Domain, vcpu: usize) -> Option<usize> {
    dom.vm.lock().vcpus().get(vcpu).map(|v| v.pcpu)
}

/// Make `vcpu`'s pCPU refill its list registers, unless that is this CPU (which refills
/// on its way back to the guest).
fn kick(dom: &Domain, vcpu: usize) {
    if let Some(p) = pcpu_of(dom, vcpu) {
        if p != crate::cpu_index() {
            gic::send_sgi(gic::KICK_SGI, crate::mpidr_of(p));
        }
    }
}

/// Carry out what a vGIC register write asks of the physical GIC.
fn apply_effect(dom: &Domain, effect: Effect) {
    match effect {
        Effect::EnableChanged {
            vcpu,
            base,
            mask,
            enabled,
        } => {
            for bit in 0..32 {
                if mask & (1 << bit) == 0 {
                    continue;
                }
                let intid = base + bit;
                let v = vcpu.unwrap_or(0);
                let Some(pintid) = dom.vgic.lock().hw_intid(v, intid) else {
                    continue;
                };
                if pintid >= 32 {
                    crate::gicd().set_enabled(pintid, enabled);
                } else if let Some(p) = pcpu_of(dom, v) {
                    let (base, len) = dom.host_gicr;
                    // SAFETY: the host's GICR region, mapped device at EL2, owned by moat.
                    unsafe {
                        gic::set_private_enabled(base, len, crate::mpidr_of(p), pintid, enabled)
                    };
                }
            }
        }
        Effect::RouteChanged { intid, target } => {
            let vcpu = match target {
                Target::Vcpu(v) => v,
                Target::Any | Target::Nowhere => 0,
            };
            let hw = dom.vgic.lock().hw_intid(0, intid);
            if let (Some(pintid), Some(p)) = (hw, pcpu_of(dom, vcpu)) {
                crate::gicd().route(pintid, gic::mpidr_to_irouter(crate::mpidr_of(p)));
            }
        }
        Effect::None
        | Effect::StateChanged { .. }
        | Effect::DistEnableChanged { .. }
        | Effect::Waker { .. } => {}
    }
}

/// Emulate a guest's MMIO access to the vGIC or the vPL011.
pub fn mmio(dom: &Domain, frame: &mut TrapFrame, a: &MmioAccess) -> Emulated {
    let ipa = a.ipa.raw();
    let value = match a.reg {
        hv_core::mmio::Reg::X(i) => a.write_data(frame.x[i as usize]),
        hv_core::mmio::Reg::Zr => 0,
    };
    let result: Result<Option<u64>, ()> = if let Some(off) = in_range(&dom.gicd, ipa) {
        match a.dir {
            Direction::Read => dom
                .vgic
                .lock()
                .dist_read(off, a.width)
                .map(Some)
                .map_err(|_| ()),
            Direction::Write => {
                let effect = dom.vgic.lock().dist_write(off, a.width, value);
                effect
                    .map(|e| {
                        apply_effect(dom, e);
                        None
                    })
                    .map_err(|_| ())
            }
        }
    } else if let Some(off) = in_range(&dom.gicr, ipa) {
        match a.dir {
            Direction::Read => dom
                .vgic
                .lock()
                .redist_read(off, a.width)
                .map(Some)
                .map_err(|_| ()),
            Direction::Write => {
                let effect = dom.vgic.lock().redist_write(off, a.width, value);
                effect
                    .map(|e| {
                        apply_effect(dom, e);
                        None
                    })
                    .map_err(|_| ())
            }
        }
    } else if let Some(off) = in_range(&dom.uart, ipa) {
        let r = {
            let mut u = dom.vuart.lock();
            match a.dir {
                Direction::Read => {
                    let r = u.read(off, a.width).map(|v| Some(u64::from(v)));
                    // Any read (the guest polls FR, then reads DR) may have made room.
                    if hv_core::vpl011::RX_FIFO_DEPTH - u.rx_len() >= MAX_DELIVERY {
                        resume_input();
                    }
                    r.map_err(|_| ())
                }
                Direction::Write => match u.write(off, a.width, value as u32) {
                    Ok(Some(byte)) => {
                        let mut console = CONSOLE.lock();
                        match console.as_mut() {
                            Some(mux) => {
                                mux.output(dom.id.0, &[byte], &mut |b| {
                                    // dom0's bytes pass as they are; a domU's come as whole lines.
                                    if dom.id.0 == 0 {
                                        crate::console::put_bytes(b)
                                    } else {
                                        crate::console::put_line(b)
                                    }
                                })
                            }
                            None => crate::console::put_bytes(&[byte]),
                        }
                        Ok(None)
                    }
                    Ok(None) => Ok(None),
                    Err(_) => Err(()),
                },
            }
        };
        update_uart_irq(dom);
        r
    } else {
        return Emulated::NotMine;
    };
    match result {
        Ok(Some(data)) => {
            if let Some((i, v)) = a.complete_read(data) {
                frame.x[i as usize] = v;
            }
            Emulated::Done
        }
        Ok(None) => Emulated::Done,
        Err(()) => Emulated::Refused,
    }
}

/// Has the guest that has the console's input no room for what one more byte may release?
fn focused_guest_full() -> bool {
    let focus = CONSOLE.lock().as_ref().map(|m| m.focus());
    match focus {
        Some(Focus::Domain(id)) => crate::domain(id).is_some_and(|d| {
            hv_core::vpl011::RX_FIFO_DEPTH - d.vuart.lock().rx_len() < MAX_DELIVERY
        }),
        _ => false,
    }
}

/// A guest read from its vPL011: if console input was paused for want of room, take it up
/// again.
fn resume_input() {
    if PAUSED_SINCE.swap(0, Ordering::AcqRel) != 0 {
        wake_input();
    }
}

/// Unmask the console UART's receive interrupt and make it pending by software, so that
/// [`console_input`] runs again for the bytes left waiting in the UART. Unmasking alone is
/// not enough: `console_input` acknowledged the interrupt before it read, and QEMU's PL011
/// raises RX only on the byte that brings its FIFO up to the trigger level (one byte), so
/// bytes already waiting would never raise it again.
fn wake_input() {
    crate::console::with_uart(|u| u.enable_rx_irq());
    crate::gicd().set_pending(crate::console_intid());
}

/// Mirror the vPL011's interrupt line into the vGIC.
fn update_uart_irq(dom: &Domain) {
    let level = dom.vuart.lock().irq_level();
    let r = dom.vgic.lock().set_level(0, dom.uart_intid, level);
    if let Ok(Some(v)) = r {
        kick(dom, v);
    }
}

/// The guest wrote ICC_SGI1R_EL1: make the SGI pending on its targets and kick them.
pub fn sgi(dom: &Domain, vcpu: usize, value: u64) {
    let req = dom.vgic.lock().send_sgi(vcpu, value);
    if let Ok(req) = req {
        let vcpus = dom.vgic.lock().vcpus();
        for v in 0..vcpus {
            if req.targets.contains(v) {
                kick(dom, v);
            }
        }
    }
}

/// Bytes typed on moat's console UART: to the domain that has the input, or to moat.
fn console_input() {
    // Acknowledge first, then read until the FIFO is empty: a byte that arrives after the
    // last read raises the interrupt again. The other order loses input. QEMU's PL011
    // raises RX only when its FIFO goes from empty to one byte (a real PL011 when it
    // reaches its trigger level), so a byte that arrived between the last read and the
    // acknowledge sat there with its interrupt cleared, the FIFO filled behind it, and
    // nothing ever raised RX again (measured: a pasted line stopped after 17 bytes, the
    // UART full, RX enabled and not raised).
    crate::console::with_uart(|u| u.clear_rx_irq());
    // Set once the focused guest was found not reading for STALL_SECS: this pass then
    // drains the UART, dropping what does not fit, so that Ctrl-a still reaches moat.
    let mut draining = false;
    // Bounded: at most two FIFOs' worth per interrupt; the rest waits for the next one.
    for _ in 0..MAX_INPUT_PER_IRQ {
        // Backpressure: read a byte only when the guest that has the input can take what
        // it may release. Otherwise leave it in the UART (QEMU's PL011 then stops taking
        // bytes from its backend, so nothing is lost) and mask the interrupt until the
        // guest drains its FIFO (see `resume_input`).
        if !draining && focused_guest_full() {
            let since = PAUSED_SINCE.load(Ordering::Acquire);
            if since != 0 && stalled(since) {
                draining = true;
            } else {
                if since == 0 {
                    PAUSED_SINCE.store(crate::arch::counter().max(1), Ordering::Release);
                }
                crate::console::with_uart(|u| u.disable_rx_irq());
                // The guest may have drained its FIFO between the check and the pause, and
                // then nothing would resume it: look again now that the pause is visible.
                if !focused_guest_full() {
                    PAUSED_SINCE.store(0, Ordering::Release);
                    crate::console::with_uart(|u| u.enable_rx_irq());
                    continue;
                }
                // Paused: the bytes wait in the UART until `wake_input`.
                return;
            }
        }
        let Some(Some(byte)) = crate::console::with_uart(|u| u.get()) else {
            // Empty: the next byte raises the interrupt. A pause, or a stall, is over.
            PAUSED_SINCE.store(0, Ordering::Release);
            return;
        };
        let action = match CONSOLE.lock().as_mut() {
            Some(mux) => mux.input(byte),
            None => continue,
        };
        match action {
            InputAction::Held => {}
            InputAction::Switched(notice) => crate::console::answer(format_args!("{notice}")),
            InputAction::Deliver(d) => match d.to {
                Focus::Domain(id) => {
                    if let Some(dom) = crate::domain(id) {
                        {
                            let mut u = dom.vuart.lock();
                            for &b in d.bytes() {
                                // Room was checked above; a full FIFO would drop input, as
                                // a real UART overruns.
                                let _ = u.push_input(b);
                            }
                        }
                        update_uart_irq(dom);
                    }
                }
                Focus::Hypervisor => {
                    for &b in d.bytes() {
                        hypervisor_key(b);
                    }
                }
            },
        }
    }
    // The budget is spent and bytes may be left, with the interrupt already acknowledged:
    // come back for them once the interrupts pending now have been taken.
    crate::gicd().set_pending(crate::console_intid());
}

/// A key typed while moat has the console's input. Each answer is one whole line, shown at
/// once (the operator asked for it), on a line of its own.
fn hypervisor_key(b: u8) {
    use core::fmt::Write;
    match b {
        b'h' | b'?' => crate::console::answer(format_args!(
            "(moat) keys: 'h' this help, 'd' domains; type CTRL-a three times to switch input\n"
        )),
        b'd' => {
            for dom in crate::domains() {
                let vm = dom.vm.lock();
                let mut line = crate::console::LineBuf::new();
                let _ = write!(
                    line,
                    "(moat) d{}: {:?}, VMID {}, {} pinned pages, ",
                    dom.id.0,
                    vm.state(),
                    dom.vmid,
                    dom.pins.lock().len()
                );
                let _ = match crate::tee::vm_stats(dom.id.0).filter(|_| dom.tee) {
                    Some(st) => write!(
                        line,
                        "OP-TEE client {} ({} open calls, {} waiting on RPC, {} buffers), ",
                        dom.id.0 + 1,
                        st.calls,
                        st.waiting,
                        st.buffers
                    ),
                    None => write!(line, "no TEE, "),
                };
                let _ = write!(
                    line,
                    "{} resets; heap {} B, {} stage-2 frames in use; vCPUs:",
                    dom.life.resets.load(Ordering::Relaxed),
                    crate::mem::heap_in_use(),
                    crate::mem::frames_in_use()
                );
                for (i, v) in vm.vcpus().iter().enumerate() {
                    let _ = write!(line, " {}={:?}@pCPU{}", i, v.state, v.pcpu);
                }
                drop(vm);
                crate::console::answer_line(line);
            }
        }
        _ => {}
    }
}

/// A physical IRQ arrived while a guest ran on this CPU.
pub fn irq(dom: &Domain, vcpu: usize) {
    // A console paused for a guest that stopped reading: let input flow again (the guests'
    // timer interrupts bring every pCPU here regularly).
    if stalled(PAUSED_SINCE.load(Ordering::Acquire)) {
        wake_input();
    }
    // Lines of moat's or the domUs' that waited too long for dom0's newline go out.
    crate::console::tick();
    // Bounded: at most one pass per possible INTID before moat returns to the guest.
    for _ in 0..1024 {
        let intid = gic::ack();
        if intid >= 1020 {
            break;
        }
        gic::eoi(intid);
        if intid == gic::KICK_SGI || intid == crate::MAINTENANCE_INTID {
            // Nothing to do here: the list registers are refilled on the way out.
            gic::deactivate(intid);
        } else if intid == crate::console_intid() {
            console_input();
            gic::deactivate(intid);
        } else {
            let injected = dom.vgic.lock().inject(vcpu, intid);
            match injected {
                Ok(Some(target)) if target != vcpu => kick(dom, target),
                Ok(Some(_)) => {}
                // Not a guest interrupt, or routed nowhere: finish it here.
                Ok(None) | Err(_) => gic::deactivate(intid),
            }
        }
    }
}

/// Update this vCPU's list registers before returning to it.
pub fn flush_lrs(dom: &Domain, vcpu: usize) {
    let mut vgic = dom.vgic.lock();
    if vgic.quiet(vcpu) {
        // No list register is ours and nothing is new: the hardware already holds what the
        // model wants, and the underflow interrupt is off since the last fill.
        return;
    }
    let n = crate::list_register_count().min(MAX_LRS);
    let mut lrs = [0u64; MAX_LRS];
    for (i, lr) in lrs.iter_mut().enumerate().take(n) {
        *lr = gic::read_lr(i);
    }
    if vgic.sync_lrs(vcpu, &lrs[..n]).is_err() {
        return;
    }
    let Ok(fill) = vgic.fill_lrs(vcpu, &mut lrs[..n]) else {
        return;
    };
    drop(vgic);
    // `fill_lrs` writes only free slots; with nothing placed the hardware already holds
    // what the model wants (most returns: an SMC, an MMIO access).
    if fill.placed > 0 {
        for (i, lr) in lrs.iter().enumerate().take(n) {
            gic::write_lr(i, *lr);
        }
    }
    gic::set_underflow_irq(fill.underflow);
}
