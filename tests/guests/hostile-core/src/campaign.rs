// SPDX-License-Identifier: MIT OR Apache-2.0
//! The campaign: seeded cases, each a short script of raw SMCs and messages with the
//! addresses, page lists and cookies it uses, and what each step must get.
//!
//! A case is data ([`Case`]): the driver (`driver`) turns it into registers and bytes in
//! the guest's memory, the checker (`check`) judges every answer. Case `i` of seed `s` is
//! a function of `(s, i)` and the guest's layout only ([`generate`]), so a finding is
//! replayed by booting the same seed, and the host tests pin the generator down.
//!
//! The first cases visit every family in turn ([`TOUR`]); the rest are drawn by weight.
//!
//! | family      | what it throws at the mediator                                        |
//! |-------------|-----------------------------------------------------------------------|
//! | `fast`      | every fast call, refused and unknown function ids, garbage arguments   |
//! | `arg-addr`  | the message at moat's image, secure RAM, the static SHM, MMIO, beyond   |
//! |             | RAM, unaligned, running off the end of a RAM bank                      |
//! | `msg-shape` | unknown commands, too many params, bad attributes, contiguous memrefs   |
//! | `pagelist`  | page lists with forbidden or unaligned entries, list or next pages      |
//! | `cookies`   | unknown, reused, unregistered cookies; CALL_WITH_REGD_ARG misuse        |
//! | `rpc`       | RETURN_FROM_RPC with unknown handles or the wrong function, ALLOC and   |
//! |             | SHM_ALLOC answered with forbidden buffers                               |
//! | `oversized` | buffers over the per-buffer limit, attack 1 (two 1,500-page buffers),   |
//! |             | the largest mapping allowed, the buffer-count limit                     |
//! | `shm-cache` | attack 2: ENABLE_SHM_CACHE, an ALLOC with cookie 0x4141414100000000,    |
//! |             | later calls must never get a FREE of a cookie the guest did not make    |
//! | `threads`   | attack 3: park calls until refused: the share parks, the refusal is     |
//! |             | ETHREAD_LIMIT at once, never more than the mediator's cap               |
//! | `valid`     | what must work: sessions, registered and temporary memrefs              |
//! | `mmio`      | refused and odd accesses to the emulated GICD, GICR and PL011: RAZ/WI;  |
//! |             | a load pair (no syndrome) gets an abort (`mmio.rs`)                    |
//! | `fuzz`      | random messages from all of the above                                  |

use alloc::string::String;
use alloc::vec::Vec;

use hv_core::mmio::Width;
use mediator::abi::{self, MsgParam};
use mediator::limits;

use crate::check::{Expect, Severity};
use crate::layout::{Device, Forbidden, Layout, PAGE};
use crate::proto::{self, INVOKE_TESTS_PTA, UNKNOWN_PTA_CMD};
use crate::rng::Rng;

/// A family of cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// Fast calls.
    Fast,
    /// Where the message is.
    ArgAddr,
    /// What the message looks like.
    MsgShape,
    /// Page lists.
    PageList,
    /// Shared-memory cookies.
    Cookies,
    /// RPC misuse.
    Rpc,
    /// Buffers over the limits.
    Oversized,
    /// Attack 2.
    ShmCache,
    /// Attack 3.
    Threads,
    /// What must work.
    Valid,
    /// Refused and odd accesses to the emulated devices.
    Mmio,
    /// Random messages.
    Fuzz,
}

/// One case: a name and its steps, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Its index in the campaign.
    pub index: u32,
    /// Its family.
    pub family: Family,
    /// What it does, for findings.
    pub name: String,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One checked operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub op: Op,
    /// What it must get.
    pub expect: Expect,
    /// The call needs OP-TEE's CALL_WITH_RPC_ARG: without that capability (as the guest
    /// sees it) UNKNOWN_FUNCTION is the answer instead.
    pub needs_rpc_arg: bool,
}

/// An operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A raw SMC: function id and a1..a6.
    Smc {
        /// Function id.
        fid: u32,
        /// a1..a6.
        args: [u64; 6],
    },
    /// A yielding call carrying `msg`, delivered `via`, its RPCs answered per `rpc`.
    Call {
        /// How the message reaches the mediator.
        via: Via,
        /// The message.
        msg: Msg,
        /// How RPCs are answered.
        rpc: RpcPlan,
    },
    /// RETURN_FROM_RPC with function id `fid` (normally OPTEE_SMC_RETURN_FROM_RPC) for
    /// `handle`, a1/a2 = `a12`.
    Resume {
        /// Function id.
        fid: u32,
        /// Which call it claims to answer.
        handle: HandleRef,
        /// a1, a2.
        a12: [u64; 2],
    },
    /// Park calls up to the guest's share of OP-TEE's threads (each must park), then one
    /// more (it must get ETHREAD_LIMIT), then check a fast call still answers.
    FillThreads,
    /// Answer every parked call of the case with failures until it completes; each must
    /// fail.
    Release,
    /// Register one-page buffers until one is refused, at most `count`: none may be
    /// accepted beyond the mediator's buffer limit. Then unregister them.
    RegisterMany {
        /// Most registrations tried.
        count: u32,
    },
    /// One access to a register of an emulated device, `offset` bytes into its frame.
    Mmio {
        /// The device.
        dev: Device,
        /// Offset in its frame.
        offset: u64,
        /// The access.
        access: Access,
    },
}

/// One access to an emulated device's register, as one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load of this width (`ldrb`, `ldrh`, `ldr w`, `ldr x`: a valid instruction
    /// syndrome, ISV=1, so moat can emulate it).
    Read(Width),
    /// A store of this width, of the value's low bytes.
    Write(Width, u64),
    /// A store of this width of what the case's last `MmioExpect::Keep` read gave: the
    /// register as it was before the case.
    Restore(Width),
    /// A load pair of two words (`ldp`): no instruction syndrome (ISV=0), which no
    /// hypervisor can emulate.
    ReadPair,
}

/// A call handle a RETURN_FROM_RPC names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleRef {
    /// The handle of the case's `n`-th parked call, plus `delta`.
    Parked(usize, u32),
    /// A raw value.
    Raw(u32),
}

/// How a message reaches the mediator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// CALL_WITH_ARG, the message `offset` bytes into a fresh page of the guest's.
    Arg {
        /// Byte offset in the page (not a multiple of 8: misaligned).
        offset: u64,
    },
    /// CALL_WITH_ARG with garbage in the upper halves of a1/a2 (only the low halves are
    /// the address, SMC32).
    ArgDirty,
    /// CALL_WITH_RPC_ARG, the inline RPC argument right after the message.
    RpcArg,
    /// `fid` (CALL_WITH_ARG or CALL_WITH_RPC_ARG) naming `addr`, where the guest writes
    /// nothing.
    At {
        /// Function id.
        fid: u32,
        /// The address.
        addr: u64,
    },
    /// `fid` with the message at the end of a RAM bank (`edge` page of the layout): its
    /// last `inside` bytes fit the bank, the rest (and, for CALL_WITH_RPC_ARG, the inline
    /// RPC argument) runs into memory the guest does not own.
    Edge {
        /// Function id.
        fid: u32,
        /// Which edge page.
        edge: usize,
        /// Bytes of the message inside the bank.
        inside: u64,
    },
    /// CALL_WITH_REGD_ARG: the message at `offset` in buffer `buf`.
    Regd {
        /// The buffer.
        buf: BufRef,
        /// Offset of the message in it.
        offset: u64,
    },
}

/// A message (`optee_msg_arg`) as the case describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// Command.
    pub cmd: u32,
    /// TA function.
    pub func: u32,
    /// Session.
    pub session: Session,
    /// Parameters.
    pub params: Vec<Param>,
    /// `num_params` as written, when it lies about the parameters that follow.
    pub num_params: Option<u32>,
}

/// A session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// 0.
    Zero,
    /// The campaign's session to invoke_tests.pta.
    Pta,
    /// A raw value (one this guest never opened).
    Raw(u32),
}

/// One parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// Exactly these words.
    Raw(MsgParam),
    /// A NONCONTIG temporary memref over a page list the driver builds.
    Tmem {
        /// Attribute (TMEM type | NONCONTIG, plus whatever the case adds).
        attr: u64,
        /// The list.
        list: List,
    },
    /// A registered-memory reference.
    Rmem {
        /// Attribute.
        attr: u64,
        /// The buffer.
        buf: BufRef,
        /// Offset.
        offs: u64,
        /// Size (None: the whole buffer from `offs`).
        size: Option<u64>,
    },
    /// REGISTER_SHM's parameter: the list and the cookie; the buffer becomes the case's
    /// next buffer (`BufRef::Case`), live if OP-TEE accepts it.
    Register {
        /// The pages.
        list: List,
        /// The cookie.
        cookie: CookieRef,
    },
}

/// A shared buffer a parameter names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufRef {
    /// The case's `n`-th registration (accepted or not).
    Case(usize),
    /// A raw cookie (one this guest never registered).
    Raw(u64),
}

/// The cookie of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieRef {
    /// A fresh one.
    Fresh,
    /// The cookie of the case's `n`-th registration.
    Reuse(usize),
}

/// A page list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    /// Data pages (fresh pages of the guest's).
    pub pages: u32,
    /// Offset of the first byte in the first page.
    pub offset: u64,
    /// Size in bytes (None: to the end of the last page).
    pub size: Option<u64>,
    /// Entries replaced with raw addresses: (index, address).
    pub bad_entries: Vec<(u32, u64)>,
    /// The first list page is at this raw address (the list is not written).
    pub list_at: Option<u64>,
    /// The first list page's `next` pointer is this raw address.
    pub next_at: Option<u64>,
}

/// How the driver answers a call's RPCs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcPlan {
    /// The call's first RPC_FUNC_ALLOC (later ones get `Alloc::Good`: OP-TEE asks again
    /// after a failed one, and the call must be able to end).
    pub alloc: Alloc,
    /// OPTEE_RPC_CMD_LOAD_TA.
    pub load_ta: LoadTa,
    /// OPTEE_RPC_CMD_SHM_ALLOC.
    pub shm: Shm,
    /// Leave the call parked at this RPC.
    pub park: Option<ParkAt>,
}

/// Where a call is left parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkAt {
    /// At its first RPC.
    First,
    /// At its first RPC command (after its ALLOC was answered).
    Cmd,
    /// At its `n`-th RPC_FUNC_ALLOC (1-based).
    Alloc(u8),
}

/// The answer to RPC_FUNC_ALLOC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Alloc {
    /// A fresh page of the guest's and a fresh cookie.
    #[default]
    Good,
    /// A fresh page and this cookie.
    Cookie(u64),
    /// No memory (a1 = a2 = 0).
    Null,
    /// This address (forbidden or unaligned) and a fresh cookie.
    At(u64),
    /// The registers of a FREE answer (a1/a2 as OP-TEE sent them) and a fresh cookie.
    Wrong,
    /// A fresh page and the cookie of an RPC argument already live.
    ReuseLive,
}

/// The answer to LOAD_TA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadTa {
    /// TEEC_ERROR_ITEM_NOT_FOUND.
    #[default]
    NotFound,
    /// Asked for the size, say this many bytes (OP-TEE then asks SHM_ALLOC); asked with
    /// the buffer, ITEM_NOT_FOUND.
    Size(u64),
}

/// The answer to OPTEE_RPC_CMD_SHM_ALLOC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Shm {
    /// Fresh pages and a fresh cookie.
    #[default]
    Good,
    /// TEEC_ERROR_OUT_OF_MEMORY.
    Refuse,
    /// This list (with its defects) and a fresh cookie, which must be refused.
    Bad(List, Severity),
    /// Fresh pages and the cookie of the case's `n`-th registration.
    ReuseCase(usize),
}

/// The families the first cases visit, in order (each twice when there are enough cases).
pub const TOUR: [Family; 12] = [
    Family::Valid,
    Family::Fast,
    Family::ArgAddr,
    Family::MsgShape,
    Family::PageList,
    Family::Cookies,
    Family::Rpc,
    Family::Oversized,
    Family::ShmCache,
    Family::Threads,
    Family::Mmio,
    Family::Fuzz,
];

/// Relative weights of the families after the tour (in [`TOUR`] order). `mmio` is cheap (a
/// few trapped loads and stores a case) and draws a few percent of the cases.
const WEIGHTS: [u32; 12] = [4, 10, 10, 10, 12, 10, 12, 3, 2, 2, 4, 25];

/// A campaign: `count` cases of `seed` from case `from`, over `layout`.
pub struct Campaign<'a> {
    /// The seed.
    pub seed: u64,
    /// The first case.
    pub from: u32,
    /// How many cases.
    pub count: u32,
    /// The guest's layout (forbidden windows, edges).
    pub layout: &'a Layout,
}

// ---------------------------------------------------------------------------------------
// Code.
// ---------------------------------------------------------------------------------------

impl Family {
    /// Every family.
    pub const ALL: [Family; 12] = TOUR;

    /// The family's name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Fast => "fast",
            Family::ArgAddr => "arg-addr",
            Family::MsgShape => "msg-shape",
            Family::PageList => "pagelist",
            Family::Cookies => "cookies",
            Family::Rpc => "rpc",
            Family::Oversized => "oversized",
            Family::ShmCache => "shm-cache",
            Family::Threads => "threads",
            Family::Valid => "valid",
            Family::Mmio => "mmio",
            Family::Fuzz => "fuzz",
        }
    }
}

impl Campaign<'_> {
    /// The cases, generated one at a time.
    pub fn iter(&self) -> impl Iterator<Item = Case> + '_ {
        let end = self.from.saturating_add(self.count);
        (self.from..end).map(|i| generate(self.seed, i, self.layout))
    }
}

impl Access {
    /// The access's width in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Access::Read(w) | Access::Write(w, _) | Access::Restore(w) => w.bytes(),
            Access::ReadPair => 8,
        }
    }
}

impl Step {
    pub(crate) fn new(op: Op, expect: Expect) -> Self {
        Self {
            op,
            expect,
            needs_rpc_arg: false,
        }
    }

    fn rpc_arg(mut self) -> Self {
        self.needs_rpc_arg = true;
        self
    }
}

impl Msg {
    fn new(cmd: u32, session: Session, params: Vec<Param>) -> Self {
        Self {
            cmd,
            func: 0,
            session,
            params,
            num_params: None,
        }
    }
}

impl List {
    /// `pages` fresh pages, whole.
    pub fn pages(pages: u32) -> Self {
        Self {
            pages,
            ..Default::default()
        }
    }

    /// Bytes the list describes.
    pub fn bytes(&self) -> u64 {
        self.size
            .unwrap_or((u64::from(self.pages) * PAGE).saturating_sub(self.offset))
    }
}

/// Case `index` of campaign `seed` over `layout`.
pub fn generate(seed: u64, index: u32, layout: &Layout) -> Case {
    let mut rng = Rng::for_case(seed, index);
    let tour = TOUR.len() as u32 * 2;
    let family = match index < tour {
        true => TOUR[(index % TOUR.len() as u32) as usize],
        false => TOUR[rng.weighted(&WEIGHTS)],
    };
    let g = &mut Gen { rng, layout };
    let (name, steps) = match family {
        Family::Fast => g.fast(),
        Family::ArgAddr => g.arg_addr(),
        Family::MsgShape => g.msg_shape(),
        Family::PageList => g.page_list(),
        Family::Cookies => g.cookies(),
        Family::Rpc => g.rpc(),
        Family::Oversized => g.oversized(),
        Family::ShmCache => g.shm_cache(),
        Family::Threads => g.threads(),
        Family::Valid => g.valid(),
        Family::Mmio => crate::mmio::case(&mut g.rng, layout),
        Family::Fuzz => g.fuzz(),
    };
    Case {
        index,
        family,
        name,
        steps,
    }
}

type Script = (String, Vec<Step>);

const OUT_OF_MEMORY: &[u32] = &[abi::TEEC_ERROR_OUT_OF_MEMORY];
const BAD_PARAMETERS: &[u32] = &[abi::TEEC_ERROR_BAD_PARAMETERS];
const BAD_OR_OOM: &[u32] = &[
    abi::TEEC_ERROR_BAD_PARAMETERS,
    abi::TEEC_ERROR_OUT_OF_MEMORY,
];
const EBADADDR: &[u32] = &[abi::OPTEE_SMC_RETURN_EBADADDR];
const EBADCMD: &[u32] = &[abi::OPTEE_SMC_RETURN_EBADCMD];
const UNKNOWN: &[u32] = &[abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION];

/// Refused in the message (origin COMMS) with one of `teec`.
fn refused_msg(teec: &'static [u32], breach: Severity) -> Expect {
    Expect::Refused {
        smc: &[],
        teec,
        breach,
    }
}

/// Refused at the SMC level with one of `smc`.
fn refused_smc(smc: &'static [u32], breach: Severity) -> Expect {
    Expect::Refused {
        smc,
        teec: &[],
        breach,
    }
}

/// The attribute of a NONCONTIG temporary memref of OP-TEE's direction.
const TMEM_INOUT_NC: u64 = abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT | abi::OPTEE_MSG_ATTR_NONCONTIG;

/// An INVOKE_COMMAND of an unknown command in the PTA session with these parameters.
fn pta_invoke(params: Vec<Param>) -> Msg {
    Msg {
        func: UNKNOWN_PTA_CMD,
        ..Msg::new(abi::OPTEE_MSG_CMD_INVOKE_COMMAND, Session::Pta, params)
    }
}

/// OPEN_SESSION to the TA `uuid` (meta parameters as Linux writes them), plus `extra`.
fn open_session(uuid: &[u8; 16], extra: Vec<Param>) -> Msg {
    let [m0, m1] = proto::open_session_meta(uuid, proto::LOGIN_PUBLIC);
    let mut params = alloc::vec![Param::Raw(m0), Param::Raw(m1)];
    params.extend(extra);
    Msg::new(abi::OPTEE_MSG_CMD_OPEN_SESSION, Session::Zero, params)
}

fn register(list: List, cookie: CookieRef) -> Msg {
    Msg::new(
        abi::OPTEE_MSG_CMD_REGISTER_SHM,
        Session::Zero,
        alloc::vec![Param::Register { list, cookie }],
    )
}

fn unregister(buf: BufRef) -> Msg {
    Msg::new(
        abi::OPTEE_MSG_CMD_UNREGISTER_SHM,
        Session::Zero,
        alloc::vec![Param::Rmem {
            attr: abi::OPTEE_MSG_ATTR_TYPE_RMEM_INPUT,
            buf,
            offs: 0,
            size: Some(0),
        }],
    )
}

fn rmem(buf: BufRef) -> Param {
    Param::Rmem {
        attr: abi::OPTEE_MSG_ATTR_TYPE_RMEM_INOUT,
        buf,
        offs: 0,
        size: None,
    }
}

fn call(msg: Msg) -> Op {
    Op::Call {
        via: Via::Arg { offset: 0 },
        msg,
        rpc: RpcPlan::default(),
    }
}

fn call_with(msg: Msg, rpc: RpcPlan) -> Op {
    Op::Call {
        via: Via::Arg { offset: 0 },
        msg,
        rpc,
    }
}

fn fast_op(fid: u32, args: [u64; 6]) -> Op {
    Op::Smc { fid, args }
}

/// The generator of one case.
struct Gen<'a> {
    rng: Rng,
    layout: &'a Layout,
}

impl Gen<'_> {
    /// Garbage for a1..a6.
    fn garbage(&mut self) -> [u64; 6] {
        core::array::from_fn(|_| match self.rng.below(3) {
            0 => 0,
            1 => self.rng.next_u64(),
            _ => self.rng.next_u32().into(),
        })
    }

    /// A random TA UUID: a user TA that is not there (OP-TEE asks the guest to load it).
    fn user_uuid(&mut self) -> [u8; 16] {
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        u[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        // Never the PTA's.
        u[0] ^= if u == INVOKE_TESTS_PTA { 1 } else { 0 };
        u
    }

    /// A forbidden address aligned to `align`, and its kind (kinds equally likely).
    fn forbidden(&mut self, align: u64) -> (Forbidden, u64) {
        let mut kinds: Vec<Forbidden> = self.layout.forbidden.iter().map(|(k, _)| *k).collect();
        kinds.sort();
        kinds.dedup();
        let kind = *self.rng.pick(&kinds);
        let spans: Vec<_> = self.layout.windows(kind).copied().collect();
        let span = *self.rng.pick(&spans);
        let room = span.len().min(1 << 20).max(align);
        let off = self.rng.below(room / align) * align;
        let a = (span.start + off) & !(align - 1);
        (
            kind,
            a.max(span.start.next_multiple_of(align))
                .min(span.end - align),
        )
    }

    /// A forbidden page address and its kind.
    fn forbidden_page(&mut self) -> (Forbidden, u64) {
        self.forbidden(PAGE)
    }

    // -------------------------------------------------------------------------------------

    fn fast(&mut self) -> Script {
        let args = self.garbage();
        // A fast query of the Trusted OS API owner (63), whose known ones are 0xff00..0xff03.
        let api = |f: u32| abi::SMC_FAST_CALL | (63 << 24) | f;
        let (what, fid, expect): (&str, u32, Expect) = match self.rng.below(18) {
            0 => ("CALLS_UID", abi::OPTEE_SMC_CALLS_UID, Expect::Uid),
            1 => (
                "CALLS_REVISION",
                abi::OPTEE_SMC_CALLS_REVISION,
                Expect::Revision,
            ),
            2 => ("CALLS_COUNT", abi::OPTEE_SMC_CALLS_COUNT, Expect::Any),
            3 => ("GET_OS_UUID", abi::OPTEE_SMC_GET_OS_UUID, Expect::OsUuid),
            4 => (
                "GET_OS_REVISION",
                abi::OPTEE_SMC_GET_OS_REVISION,
                Expect::Any,
            ),
            5 => (
                "EXCHANGE_CAPABILITIES",
                abi::OPTEE_SMC_EXCHANGE_CAPABILITIES,
                Expect::Caps,
            ),
            6 => (
                "GET_THREAD_COUNT",
                abi::OPTEE_SMC_GET_THREAD_COUNT,
                Expect::ThreadCount,
            ),
            7 => (
                "GET_SHM_CONFIG",
                abi::OPTEE_SMC_GET_SHM_CONFIG,
                Expect::ShmConfig,
            ),
            8 => (
                "L2CC_MUTEX",
                abi::OPTEE_SMC_L2CC_MUTEX,
                Expect::Codes(&[
                    abi::OPTEE_SMC_RETURN_ENOTAVAIL,
                    abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION,
                ]),
            ),
            9 => (
                "ENABLE_ASYNC_NOTIF",
                *self.rng.pick(&[
                    abi::OPTEE_SMC_ENABLE_ASYNC_NOTIF,
                    abi::OPTEE_SMC_GET_ASYNC_NOTIF_VALUE,
                ]),
                Expect::Codes(&[
                    abi::OPTEE_SMC_RETURN_ENOTAVAIL,
                    abi::OPTEE_SMC_RETURN_UNKNOWN_FUNCTION,
                ]),
            ),
            10 => (
                "VM_CREATED or VM_DESTROYED from a guest",
                *self
                    .rng
                    .pick(&[abi::OPTEE_SMC_VM_CREATED, abi::OPTEE_SMC_VM_DESTROYED]),
                Expect::HypervisorOnly,
            ),
            11 => (
                "BOOT_SECONDARY",
                abi::OPTEE_SMC_BOOT_SECONDARY,
                Expect::Codes(UNKNOWN),
            ),
            12 => (
                "ENABLE_SHM_CACHE",
                abi::OPTEE_SMC_ENABLE_SHM_CACHE,
                Expect::Codes(&[abi::OPTEE_SMC_RETURN_OK]),
            ),
            13 => (
                "DISABLE_SHM_CACHE",
                abi::OPTEE_SMC_DISABLE_SHM_CACHE,
                Expect::DisableCache,
            ),
            14 => {
                // An unknown fast function of the trusted OS (known ones are 0..=19).
                let f = self.rng.range(20, 0xffff) as u32;
                (
                    "an unknown fast function",
                    abi::SMC_FAST_CALL | (50 << 24) | f,
                    Expect::Codes(UNKNOWN),
                )
            }
            15 => {
                // Another trusted-OS owner (51..62), any function, fast or yielding.
                let owner = self.rng.range(51, 63) as u32;
                let fast = if self.rng.chance(1, 2) {
                    abi::SMC_FAST_CALL
                } else {
                    0
                };
                let f = self.rng.below(0x1_0000) as u32;
                (
                    "another trusted-OS owner",
                    fast | (owner << 24) | f,
                    Expect::Codes(UNKNOWN),
                )
            }
            16 => {
                // The SMC64 twin of a known call: OP-TEE speaks SMC32 only.
                let known = *self.rng.pick(&[
                    abi::OPTEE_SMC_CALLS_UID,
                    abi::OPTEE_SMC_EXCHANGE_CAPABILITIES,
                    abi::OPTEE_SMC_CALL_WITH_ARG,
                    abi::OPTEE_SMC_RETURN_FROM_RPC,
                    abi::OPTEE_SMC_GET_THREAD_COUNT,
                ]);
                (
                    "an SMC64 function id",
                    known | abi::SMC_64,
                    Expect::Codes(UNKNOWN),
                )
            }
            _ => {
                // An unknown yielding function, or an unknown API query.
                let f = *self.rng.pick(&[0u32, 1, 2, 5, 6, 7, 17, 20, 0x100]);
                match self.rng.chance(1, 2) {
                    true => (
                        "an unknown yielding function",
                        (50 << 24) | f,
                        Expect::Codes(UNKNOWN),
                    ),
                    false => (
                        "an unknown API query",
                        api(0xff02 + (f & 0xf0)),
                        Expect::Codes(UNKNOWN),
                    ),
                }
            }
        };
        (
            alloc::format!("{what} ({fid:#010x}) with garbage in a1..a6"),
            alloc::vec![Step::new(fast_op(fid, args), expect)],
        )
    }

    fn arg_addr(&mut self) -> Script {
        let n = self.rng.range(1, 5) as usize;
        let values = |n: usize| -> Vec<Param> {
            (0..n)
                .map(|i| {
                    Param::Raw(MsgParam {
                        attr: abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
                        u0: i as u64,
                        ..Default::default()
                    })
                })
                .collect()
        };
        let edges = self.layout.edges.len();
        match self.rng.below(8) {
            0..=2 => {
                let (kind, addr) = self.forbidden(8);
                let rpc_arg = self.rng.chance(1, 3);
                let fid = match rpc_arg {
                    true => abi::OPTEE_SMC_CALL_WITH_RPC_ARG,
                    false => abi::OPTEE_SMC_CALL_WITH_ARG,
                };
                let step = Step::new(
                    Op::Call {
                        via: Via::At { fid, addr },
                        msg: pta_invoke(values(n)),
                        rpc: RpcPlan::default(),
                    },
                    refused_smc(EBADADDR, Severity::Escape),
                );
                (
                    alloc::format!(
                        "{} with the message at {addr:#x} ({})",
                        abi::function_name(fid),
                        kind.name()
                    ),
                    alloc::vec![if rpc_arg { step.rpc_arg() } else { step }],
                )
            }
            3 => {
                let addr = *self
                    .rng
                    .pick(&[0u64, 0xffff_ffff_ffff_f000, 0x1_0000_0000_0000]);
                (
                    alloc::format!("CALL_WITH_ARG with the message at {addr:#x}"),
                    alloc::vec![Step::new(
                        Op::Call {
                            via: Via::At {
                                fid: abi::OPTEE_SMC_CALL_WITH_ARG,
                                addr
                            },
                            msg: pta_invoke(Vec::new()),
                            rpc: RpcPlan::default(),
                        },
                        refused_smc(EBADADDR, Severity::Escape),
                    )],
                )
            }
            4 => {
                let offset = self.rng.range(1, 8);
                (
                    alloc::format!("CALL_WITH_ARG with the message misaligned by {offset}"),
                    alloc::vec![Step::new(
                        Op::Call {
                            via: Via::Arg { offset },
                            msg: pta_invoke(values(n)),
                            rpc: RpcPlan::default(),
                        },
                        refused_smc(EBADADDR, Severity::Unexpected),
                    )],
                )
            }
            5 if edges > 0 => {
                // Header inside, parameters past the end of the bank.
                let edge = self.rng.below(edges as u64) as usize;
                let k = self.rng.below(n as u64);
                let inside = abi::arg_size(k as usize) as u64;
                (
                    alloc::format!(
                        "CALL_WITH_ARG whose {n} parameters run {} bytes past the end of RAM at {:#x}",
                        abi::arg_size(n) as u64 - inside,
                        self.layout.edges[edge] + PAGE
                    ),
                    alloc::vec![Step::new(
                        Op::Call {
                            via: Via::Edge {
                                fid: abi::OPTEE_SMC_CALL_WITH_ARG,
                                edge,
                                inside
                            },
                            msg: pta_invoke(values(n)),
                            rpc: RpcPlan::default(),
                        },
                        refused_smc(EBADADDR, Severity::Escape),
                    )],
                )
            }
            6 if edges > 0 => {
                // The message fits; the inline RPC argument after it does not.
                let edge = self.rng.below(edges as u64) as usize;
                (
                    alloc::format!(
                        "CALL_WITH_RPC_ARG whose inline RPC argument runs past the end of RAM at {:#x}",
                        self.layout.edges[edge] + PAGE
                    ),
                    alloc::vec![Step::new(
                        Op::Call {
                            via: Via::Edge {
                                fid: abi::OPTEE_SMC_CALL_WITH_RPC_ARG,
                                edge,
                                inside: abi::arg_size(n) as u64
                            },
                            msg: pta_invoke(values(n)),
                            rpc: RpcPlan::default(),
                        },
                        refused_smc(EBADADDR, Severity::Escape),
                    )
                    .rpc_arg()],
                )
            }
            _ => (
                "CALL_WITH_ARG with garbage in the upper halves of a1/a2".into(),
                alloc::vec![Step::new(
                    Op::Call {
                        via: Via::ArgDirty,
                        msg: pta_invoke(values(n)),
                        rpc: RpcPlan::default(),
                    },
                    Expect::Reaches,
                )],
            ),
        }
    }

    fn msg_shape(&mut self) -> Script {
        let value = |attr: u64| {
            Param::Raw(MsgParam {
                attr,
                u0: 1,
                u1: 2,
                u2: 3,
            })
        };
        let bad = refused_msg(BAD_PARAMETERS, Severity::Unexpected);
        let (what, msg, expect): (String, Msg, Expect) = match self.rng.below(13) {
            0 => {
                let cmd = match self.rng.chance(1, 3) {
                    true => *self.rng.pick(&[
                        abi::OPTEE_MSG_CMD_DO_BOTTOM_HALF,
                        abi::OPTEE_MSG_CMD_STOP_ASYNC_NOTIF,
                    ]),
                    false => self.rng.range(8, 0x1_0000_0000) as u32,
                };
                (
                    alloc::format!("command {cmd:#x}"),
                    Msg::new(cmd, Session::Pta, Vec::new()),
                    refused_smc(EBADCMD, Severity::Unexpected),
                )
            }
            1 => {
                let n = *self.rng.pick(&[9u32, 16, 127, 0xffff, u32::MAX]);
                (
                    alloc::format!("num_params {n}"),
                    Msg {
                        num_params: Some(n),
                        ..pta_invoke(alloc::vec![value(1)])
                    },
                    refused_smc(EBADCMD, Severity::Unexpected),
                )
            }
            2 => {
                let t = *self.rng.pick(&[4u64, 8, 0xc, 0xd, 0x40, 0xff]);
                (
                    alloc::format!("a parameter of undefined type {t:#x}"),
                    pta_invoke(alloc::vec![value(1), value(t)]),
                    bad,
                )
            }
            3 => {
                let bit = *self.rng.pick(&[10u32, 12, 16, 17, 18, 24, 40, 63]);
                (
                    alloc::format!("a value with attribute bit {bit} set"),
                    pta_invoke(alloc::vec![value(
                        abi::OPTEE_MSG_ATTR_TYPE_VALUE_INOUT | 1 << bit
                    )]),
                    bad,
                )
            }
            4 => (
                "META on a memref".into(),
                pta_invoke(alloc::vec![Param::Tmem {
                    attr: TMEM_INOUT_NC | abi::OPTEE_MSG_ATTR_META,
                    list: List::pages(1),
                }]),
                bad,
            ),
            5 => (
                "NONCONTIG on a value".into(),
                pta_invoke(alloc::vec![value(
                    abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | abi::OPTEE_MSG_ATTR_NONCONTIG
                )]),
                bad,
            ),
            6 => {
                // Contiguous memrefs name static SHM; a guest has none.
                let (what, addr, breach) = match self.rng.below(3) {
                    0 => {
                        let a = self
                            .rng
                            .range(crate::layout::OPTEE_SHM.start, crate::layout::OPTEE_SHM.end)
                            & !7;
                        ("OP-TEE's static SHM", a, Severity::Escape)
                    }
                    1 => {
                        let (k, a) = self.forbidden(8);
                        (k.name(), a, Severity::Escape)
                    }
                    _ => (
                        "the guest's own RAM",
                        self.layout.arena.start,
                        Severity::Unexpected,
                    ),
                };
                (
                    alloc::format!("a contiguous memref at {addr:#x} ({what})"),
                    pta_invoke(alloc::vec![Param::Raw(MsgParam {
                        attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT,
                        u0: addr,
                        u1: 64,
                        u2: 0,
                    })]),
                    refused_msg(BAD_PARAMETERS, breach),
                )
            }
            7 => {
                let params = match self.rng.below(3) {
                    0 => Vec::new(),
                    1 => alloc::vec![value(abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT)],
                    _ => alloc::vec![
                        Param::Tmem {
                            attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT
                                | abi::OPTEE_MSG_ATTR_NONCONTIG,
                            list: List::pages(1)
                        },
                        value(1)
                    ],
                };
                (
                    alloc::format!(
                        "REGISTER_SHM with {} parameter(s) that are not one page list",
                        params.len()
                    ),
                    Msg::new(abi::OPTEE_MSG_CMD_REGISTER_SHM, Session::Zero, params),
                    bad,
                )
            }
            8 => {
                let (k, a) = self.forbidden(8);
                (
                    alloc::format!(
                        "REGISTER_SHM of a contiguous buffer at {a:#x} ({})",
                        k.name()
                    ),
                    Msg::new(
                        abi::OPTEE_MSG_CMD_REGISTER_SHM,
                        Session::Zero,
                        alloc::vec![Param::Raw(MsgParam {
                            attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                            u0: a,
                            u1: PAGE,
                            u2: self.rng.next_u64() | 1,
                        })],
                    ),
                    refused_msg(BAD_PARAMETERS, Severity::Escape),
                )
            }
            9 => (
                "UNREGISTER_SHM with a temporary memref".into(),
                Msg::new(
                    abi::OPTEE_MSG_CMD_UNREGISTER_SHM,
                    Session::Zero,
                    alloc::vec![Param::Tmem {
                        attr: TMEM_INOUT_NC,
                        list: List::pages(1)
                    }],
                ),
                bad,
            ),
            10 => {
                let s = self.rng.range(0x100, 0x1_0000_0000) as u32;
                let cmd = *self.rng.pick(&[
                    abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
                    abi::OPTEE_MSG_CMD_CLOSE_SESSION,
                ]);
                (
                    alloc::format!(
                        "{} of session {s:#x}, which the guest never opened",
                        if cmd == 1 {
                            "INVOKE_COMMAND"
                        } else {
                            "CLOSE_SESSION"
                        }
                    ),
                    Msg::new(
                        cmd,
                        Session::Raw(s),
                        alloc::vec![value(abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT)],
                    ),
                    Expect::Fails,
                )
            }
            11 => {
                let (what, params) = match self.rng.below(3) {
                    0 => ("no parameters", Vec::new()),
                    1 => (
                        "one meta parameter",
                        alloc::vec![value(
                            abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT | abi::OPTEE_MSG_ATTR_META
                        )],
                    ),
                    _ => (
                        "parameters without META",
                        alloc::vec![
                            value(abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT),
                            value(abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT)
                        ],
                    ),
                };
                (
                    alloc::format!("OPEN_SESSION with {what}"),
                    Msg::new(abi::OPTEE_MSG_CMD_OPEN_SESSION, Session::Zero, params),
                    Expect::Fails,
                )
            }
            _ => (
                "CANCEL of a call that does not exist".into(),
                Msg {
                    func: self.rng.next_u32(),
                    ..Msg::new(
                        abi::OPTEE_MSG_CMD_CANCEL,
                        Session::Raw(self.rng.next_u32() | 0x100),
                        Vec::new(),
                    )
                },
                Expect::Any,
            ),
        };
        (what, alloc::vec![Step::new(call(msg), expect)])
    }

    /// A page list with one defect, and how bad accepting it would be.
    fn bad_list(&mut self) -> (String, List, Severity) {
        let small = self.rng.range(1, 9) as u32;
        match self.rng.below(7) {
            0 | 1 => {
                let (k, a) = self.forbidden_page();
                let at = self.rng.below(u64::from(small)) as u32;
                (
                    alloc::format!("entry {at} of {small} at {a:#x} ({})", k.name()),
                    List {
                        bad_entries: alloc::vec![(at, a)],
                        ..List::pages(small)
                    },
                    Severity::Escape,
                )
            }
            2 => {
                let at = self.rng.below(u64::from(small)) as u32;
                let by = self.rng.range(1, PAGE);
                (
                    alloc::format!("entry {at} of {small} misaligned by {by}"),
                    List {
                        bad_entries: alloc::vec![(at, self.layout.arena.start + by)],
                        ..List::pages(small)
                    },
                    Severity::Unexpected,
                )
            }
            3 => {
                let (k, a) = self.forbidden_page();
                (
                    alloc::format!("the list itself at {a:#x} ({})", k.name()),
                    List {
                        list_at: Some(a),
                        ..List::pages(small)
                    },
                    Severity::Escape,
                )
            }
            4 => {
                let pages = self.rng.range(512, 600) as u32;
                let (next, what, sev) = match self.rng.chance(2, 3) {
                    true => {
                        let (k, a) = self.forbidden_page();
                        (a, k.name(), Severity::Escape)
                    }
                    false => (
                        self.layout.arena.start + 8,
                        "misaligned",
                        Severity::Unexpected,
                    ),
                };
                (
                    alloc::format!("{pages} pages whose second list page is at {next:#x} ({what})"),
                    List {
                        next_at: Some(next),
                        ..List::pages(pages)
                    },
                    sev,
                )
            }
            5 => (
                "a list of size 0".into(),
                List {
                    size: Some(0),
                    ..List::pages(1)
                },
                Severity::Unexpected,
            ),
            _ => {
                let size = *self.rng.pick(&[u64::MAX, u64::MAX - PAGE, 1 << 44]);
                (
                    alloc::format!("a list of size {size:#x}"),
                    List {
                        size: Some(size),
                        ..List::pages(1)
                    },
                    Severity::Unexpected,
                )
            }
        }
    }

    fn page_list(&mut self) -> Script {
        let (what, list, sev) = self.bad_list();
        match self.rng.chance(1, 2) {
            true => (
                alloc::format!("REGISTER_SHM with {what}, then a memref of it"),
                alloc::vec![
                    Step::new(
                        call(register(list, CookieRef::Fresh)),
                        refused_msg(BAD_OR_OOM, sev)
                    ),
                    Step::new(
                        call(pta_invoke(alloc::vec![rmem(BufRef::Case(0))])),
                        refused_msg(BAD_PARAMETERS, Severity::Escape),
                    ),
                ],
            ),
            false => {
                let attr = *self.rng.pick(&[
                    abi::OPTEE_MSG_ATTR_TYPE_TMEM_INPUT,
                    abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                    abi::OPTEE_MSG_ATTR_TYPE_TMEM_INOUT,
                ]) | abi::OPTEE_MSG_ATTR_NONCONTIG;
                (
                    alloc::format!("a temporary memref with {what}"),
                    alloc::vec![Step::new(
                        call(pta_invoke(alloc::vec![Param::Tmem { attr, list }])),
                        refused_msg(BAD_OR_OOM, sev),
                    )],
                )
            }
        }
    }

    fn cookies(&mut self) -> Script {
        let raw = self.rng.next_u64() | 0x8000_0000_0000_0000;
        let reg = |pages: u32| {
            Step::new(
                call(register(List::pages(pages), CookieRef::Fresh)),
                Expect::Success,
            )
        };
        let refused = refused_msg(BAD_PARAMETERS, Severity::Escape);
        let regd_refused = |sev| refused_smc(EBADADDR, sev);
        match self.rng.below(9) {
            0 => (
                alloc::format!(
                    "UNREGISTER_SHM of cookie {raw:#x}, which the guest never registered"
                ),
                alloc::vec![Step::new(call(unregister(BufRef::Raw(raw))), refused)],
            ),
            1 => (
                alloc::format!("a memref of cookie {raw:#x}, which the guest never registered"),
                alloc::vec![Step::new(
                    call(pta_invoke(alloc::vec![rmem(BufRef::Raw(raw))])),
                    refused
                )],
            ),
            2 => (
                "a buffer unregistered twice, then used".into(),
                alloc::vec![
                    reg(2),
                    Step::new(call(unregister(BufRef::Case(0))), Expect::Success),
                    Step::new(call(unregister(BufRef::Case(0))), refused.clone()),
                    Step::new(
                        call(pta_invoke(alloc::vec![rmem(BufRef::Case(0))])),
                        refused
                    ),
                ],
            ),
            3 => (
                "REGISTER_SHM with a cookie already in use".into(),
                alloc::vec![
                    reg(1),
                    Step::new(
                        call(register(List::pages(1), CookieRef::Reuse(0))),
                        refused_msg(BAD_PARAMETERS, Severity::Unexpected),
                    ),
                    Step::new(
                        call(pta_invoke(alloc::vec![rmem(BufRef::Case(0))])),
                        Expect::Reaches
                    ),
                ],
            ),
            4 => {
                let pages = self.rng.range(1, 4) as u32;
                let size = u64::from(pages) * PAGE;
                let (offs, len, what) = match self.rng.below(3) {
                    0 => (size - 8, Some(16), "past its end"),
                    1 => (u64::MAX - 7, Some(16), "wrapping around"),
                    _ => (0, Some(size + 1), "one byte longer than it"),
                };
                (
                    alloc::format!("a memref {what} of a {pages}-page registered buffer"),
                    alloc::vec![
                        reg(pages),
                        Step::new(
                            call(pta_invoke(alloc::vec![Param::Rmem {
                                attr: abi::OPTEE_MSG_ATTR_TYPE_RMEM_INOUT,
                                buf: BufRef::Case(0),
                                offs,
                                size: len,
                            }])),
                            refused_msg(BAD_PARAMETERS, Severity::Unexpected),
                        ),
                    ],
                )
            }
            5 => (
                alloc::format!(
                    "CALL_WITH_REGD_ARG in cookie {raw:#x}, which the guest never registered"
                ),
                alloc::vec![Step::new(
                    Op::Call {
                        via: Via::Regd {
                            buf: BufRef::Raw(raw),
                            offset: 0
                        },
                        msg: pta_invoke(Vec::new()),
                        rpc: RpcPlan::default(),
                    },
                    regd_refused(Severity::Escape),
                )
                .rpc_arg()],
            ),
            6 => {
                // Only a3's low half is the offset (SMC32).
                let offset = *self
                    .rng
                    .pick(&[PAGE, PAGE + 8, 0x10_0000, u64::from(u32::MAX) & !7]);
                (
                    alloc::format!("CALL_WITH_REGD_ARG at offset {offset:#x} of a one-page buffer"),
                    alloc::vec![
                        reg(1),
                        Step::new(
                            Op::Call {
                                via: Via::Regd {
                                    buf: BufRef::Case(0),
                                    offset
                                },
                                msg: pta_invoke(Vec::new()),
                                rpc: RpcPlan::default(),
                            },
                            regd_refused(Severity::Escape),
                        )
                        .rpc_arg(),
                    ],
                )
            }
            7 => (
                "CALL_WITH_REGD_ARG whose message runs past the end of its one-page buffer".into(),
                alloc::vec![
                    reg(1),
                    Step::new(
                        Op::Call {
                            via: Via::Regd {
                                buf: BufRef::Case(0),
                                offset: PAGE - 32
                            },
                            msg: pta_invoke(alloc::vec![Param::Raw(MsgParam {
                                attr: abi::OPTEE_MSG_ATTR_TYPE_VALUE_INPUT,
                                ..Default::default()
                            })]),
                            rpc: RpcPlan::default(),
                        },
                        regd_refused(Severity::Unexpected),
                    )
                    .rpc_arg(),
                ],
            ),
            _ => {
                let offset = self.rng.below(PAGE / 8) * 8;
                (
                    alloc::format!("CALL_WITH_REGD_ARG at offset {offset:#x} of a two-page buffer"),
                    alloc::vec![
                        reg(2),
                        Step::new(
                            Op::Call {
                                via: Via::Regd {
                                    buf: BufRef::Case(0),
                                    offset
                                },
                                msg: pta_invoke(Vec::new()),
                                rpc: RpcPlan::default(),
                            },
                            Expect::Reaches,
                        )
                        .rpc_arg(),
                    ],
                )
            }
        }
    }

    fn rpc(&mut self) -> Script {
        let uuid = self.user_uuid();
        let open = open_session(&uuid, Vec::new());
        let plan = |alloc: Alloc| RpcPlan {
            alloc,
            ..Default::default()
        };
        let parked = |park| RpcPlan {
            park: Some(park),
            ..Default::default()
        };
        let resume = |handle, fid| Op::Resume {
            fid,
            handle,
            a12: [0, 0],
        };
        let eresume = Expect::Codes(&[abi::OPTEE_SMC_RETURN_ERESUME]);
        let ret = abi::OPTEE_SMC_RETURN_FROM_RPC;
        match self.rng.below(12) {
            0 => {
                let h = self.rng.next_u32();
                (
                    alloc::format!("RETURN_FROM_RPC for handle {h:#x}, with no call waiting"),
                    alloc::vec![Step::new(resume(HandleRef::Raw(h), ret), eresume)],
                )
            }
            1 => {
                let d = self.rng.range(1, 1000) as u32;
                (
                    alloc::format!("RETURN_FROM_RPC for the handle of a parked call plus {d}"),
                    alloc::vec![
                        Step::new(call_with(open, parked(ParkAt::First)), Expect::Parks),
                        Step::new(resume(HandleRef::Parked(0, d), ret), eresume),
                        Step::new(Op::Release, Expect::Fails),
                    ],
                )
            }
            2 => (
                "RETURN_FROM_RPC for a call that already finished".into(),
                alloc::vec![
                    Step::new(call_with(open, parked(ParkAt::First)), Expect::Parks),
                    Step::new(Op::Release, Expect::Fails),
                    Step::new(resume(HandleRef::Parked(0, 0), ret), eresume),
                ],
            ),
            3 => (
                "the wrong function for a parked call: RETURN_FROM_RPC's SMC64 twin".into(),
                alloc::vec![
                    Step::new(call_with(open, parked(ParkAt::First)), Expect::Parks),
                    Step::new(
                        resume(HandleRef::Parked(0, 0), ret | abi::SMC_64),
                        Expect::Codes(UNKNOWN)
                    ),
                    Step::new(Op::Release, Expect::Fails),
                ],
            ),
            4 => {
                let (k, a) = self.forbidden_page();
                (
                    alloc::format!("RPC ALLOC answered with a buffer at {a:#x} ({})", k.name()),
                    alloc::vec![Step::new(
                        call_with(open, plan(Alloc::At(a))),
                        Expect::Fails
                    )],
                )
            }
            5 => {
                let by = self.rng.range(1, PAGE);
                (
                    alloc::format!("RPC ALLOC answered with a buffer misaligned by {by}"),
                    alloc::vec![Step::new(
                        call_with(open, plan(Alloc::At(self.layout.arena.start + by))),
                        Expect::Fails
                    )],
                )
            }
            6 => (
                "RPC ALLOC answered with the registers of a FREE answer".into(),
                alloc::vec![Step::new(
                    call_with(open, plan(Alloc::Wrong)),
                    Expect::Fails
                )],
            ),
            7 => (
                "RPC ALLOC answered with no memory".into(),
                alloc::vec![Step::new(call_with(open, plan(Alloc::Null)), Expect::Fails)],
            ),
            8 => (
                // The second call may need the TA-loading lock the first holds: it is left
                // parked at its next ALLOC, and the first is released first.
                "RPC ALLOC answered with the cookie of another call's live RPC argument".into(),
                alloc::vec![
                    Step::new(call_with(open.clone(), parked(ParkAt::Cmd)), Expect::Parks),
                    Step::new(
                        call_with(
                            open_session(&self.user_uuid(), Vec::new()),
                            RpcPlan {
                                alloc: Alloc::ReuseLive,
                                park: Some(ParkAt::Alloc(2)),
                                ..Default::default()
                            }
                        ),
                        Expect::Any
                    ),
                    Step::new(Op::Release, Expect::Any),
                ],
            ),
            9 => {
                let (what, list, sev) = self.bad_list();
                (
                    alloc::format!("RPC SHM_ALLOC answered with {what}"),
                    alloc::vec![Step::new(
                        call_with(
                            open,
                            RpcPlan {
                                load_ta: LoadTa::Size(8192),
                                shm: Shm::Bad(list, sev),
                                ..Default::default()
                            }
                        ),
                        Expect::Fails
                    )],
                )
            }
            10 => (
                "RPC SHM_ALLOC answered with the cookie of a registered buffer".into(),
                alloc::vec![
                    Step::new(
                        call(register(List::pages(1), CookieRef::Fresh)),
                        Expect::Success
                    ),
                    Step::new(
                        call_with(
                            open,
                            RpcPlan {
                                load_ta: LoadTa::Size(4096),
                                shm: Shm::ReuseCase(0),
                                ..Default::default()
                            }
                        ),
                        Expect::Fails
                    ),
                ],
            ),
            _ => {
                let inline = self.rng.chance(1, 2);
                let shm = *self.rng.pick(&[0u8, 1]);
                let plan = RpcPlan {
                    load_ta: LoadTa::Size(self.rng.range(1, 5) * PAGE - 100),
                    shm: if shm == 0 { Shm::Good } else { Shm::Refuse },
                    ..Default::default()
                };
                let step = Step::new(
                    Op::Call {
                        via: if inline {
                            Via::RpcArg
                        } else {
                            Via::Arg { offset: 0 }
                        },
                        msg: open,
                        rpc: plan,
                    },
                    Expect::Fails,
                );
                (
                    alloc::format!(
                        "a user TA load answered in full ({}, SHM_ALLOC {})",
                        if inline {
                            "CALL_WITH_RPC_ARG"
                        } else {
                            "CALL_WITH_ARG"
                        },
                        if shm == 0 { "served" } else { "refused" }
                    ),
                    alloc::vec![if inline { step.rpc_arg() } else { step }],
                )
            }
        }
    }

    fn oversized(&mut self) -> Script {
        let over = limits::DEFAULT_MAX_PAGES_PER_BUFFER + 1;
        let map = limits::DEFAULT_MAX_OPTEE_MAP_PAGES_PER_VM;
        let reg = |pages: u32| {
            Step::new(
                call(register(List::pages(pages), CookieRef::Fresh)),
                Expect::Success,
            )
        };
        let limited = refused_msg(OUT_OF_MEMORY, Severity::Unexpected);
        match self.rng.below(7) {
            0 => (
                alloc::format!("REGISTER_SHM of {over} pages, one over the per-buffer limit"),
                alloc::vec![Step::new(
                    call(register(List::pages(over), CookieRef::Fresh)),
                    limited
                )],
            ),
            1 => (
                alloc::format!("a temporary memref of {over} pages"),
                alloc::vec![Step::new(
                    call(pta_invoke(alloc::vec![Param::Tmem {
                        attr: TMEM_INOUT_NC,
                        list: List::pages(over)
                    }])),
                    limited
                )],
            ),
            2 => (
                // Attack 1: OP-TEE ran out of translation tables and panicked.
                "attack 1: two registered 1500-page buffers in one call to invoke_tests.pta".into(),
                alloc::vec![
                    reg(1500),
                    reg(1500),
                    Step::new(
                        call(pta_invoke(alloc::vec![
                            rmem(BufRef::Case(0)),
                            rmem(BufRef::Case(1))
                        ])),
                        limited
                    ),
                ],
            ),
            3 => (
                alloc::format!(
                    "the largest mapping allowed: one {map}-page buffer to invoke_tests.pta"
                ),
                alloc::vec![
                    reg(map),
                    Step::new(
                        call(pta_invoke(alloc::vec![rmem(BufRef::Case(0))])),
                        Expect::Reaches
                    ),
                ],
            ),
            4 => {
                let each = map / 4;
                (
                    alloc::format!("four {each}-page buffers in one call to invoke_tests.pta"),
                    alloc::vec![
                        reg(each),
                        reg(each),
                        reg(each),
                        reg(each),
                        Step::new(
                            call(pta_invoke((0..4).map(|i| rmem(BufRef::Case(i))).collect())),
                            Expect::Reaches
                        ),
                    ],
                )
            }
            5 => (
                alloc::format!(
                    "two temporary memrefs of {} pages each in one call",
                    map / 2 + 8
                ),
                alloc::vec![Step::new(
                    call(pta_invoke(alloc::vec![
                        Param::Tmem {
                            attr: TMEM_INOUT_NC,
                            list: List::pages(map / 2 + 8)
                        },
                        Param::Tmem {
                            attr: TMEM_INOUT_NC,
                            list: List::pages(map / 2 + 8)
                        }
                    ])),
                    limited
                )],
            ),
            _ => {
                let count = limits::DEFAULT_MAX_BUFFERS_PER_VM + 1;
                (
                    alloc::format!("REGISTER_SHM {count} times: past the buffer limit"),
                    alloc::vec![Step::new(Op::RegisterMany { count }, Expect::Any)],
                )
            }
        }
    }

    fn shm_cache(&mut self) -> Script {
        let open = |g: &mut Self, alloc| {
            call_with(
                open_session(&g.user_uuid(), Vec::new()),
                RpcPlan {
                    alloc,
                    ..Default::default()
                },
            )
        };
        (
            "attack 2: ENABLE_SHM_CACHE, an RPC argument with cookie 0x4141414100000000, later calls".into(),
            alloc::vec![
                Step::new(fast_op(abi::OPTEE_SMC_ENABLE_SHM_CACHE, [0; 6]), Expect::Codes(&[abi::OPTEE_SMC_RETURN_OK])),
                Step::new(open(self, Alloc::Cookie(0x4141_4141_0000_0000)), Expect::Fails),
                Step::new(call(pta_invoke(Vec::new())), Expect::Reaches),
                Step::new(open(self, Alloc::Good), Expect::Fails),
                Step::new(call(pta_invoke(Vec::new())), Expect::Reaches),
                Step::new(fast_op(abi::OPTEE_SMC_DISABLE_SHM_CACHE, [0; 6]), Expect::DisableCache),
            ],
        )
    }

    fn threads(&mut self) -> Script {
        (
            "attack 3: park calls until OP-TEE has no thread left, then one more".into(),
            alloc::vec![
                Step::new(
                    fast_op(abi::OPTEE_SMC_GET_THREAD_COUNT, [0; 6]),
                    Expect::ThreadCount
                ),
                Step::new(Op::FillThreads, Expect::Any),
                Step::new(Op::Release, Expect::Fails),
            ],
        )
    }

    fn valid(&mut self) -> Script {
        match self.rng.below(4) {
            0 => {
                let pages = self.rng.range(1, 9) as u32;
                let offset = self.rng.below(PAGE / 8) * 8;
                (
                    alloc::format!("register {pages} pages, pass them registered, temporary and NULL, unregister"),
                    alloc::vec![
                        Step::new(call(register(List::pages(pages), CookieRef::Fresh)), Expect::Success),
                        Step::new(call(pta_invoke(alloc::vec![rmem(BufRef::Case(0))])), Expect::Reaches),
                        Step::new(
                            call(pta_invoke(alloc::vec![Param::Tmem {
                                attr: TMEM_INOUT_NC,
                                list: List {
                                    offset,
                                    ..List::pages(pages)
                                }
                            }])),
                            Expect::Reaches
                        ),
                        Step::new(
                            call(pta_invoke(alloc::vec![Param::Raw(MsgParam {
                                attr: abi::OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT,
                                u0: 0,
                                u1: 0,
                                u2: 0
                            })])),
                            Expect::Reaches
                        ),
                        Step::new(call(unregister(BufRef::Case(0))), Expect::Success),
                    ],
                )
            }
            1 => (
                "open and close a session to invoke_tests.pta".into(),
                alloc::vec![Step::new(
                    call(open_session(&INVOKE_TESTS_PTA, Vec::new())),
                    Expect::Success
                )],
            ),
            2 => (
                "CALL_WITH_RPC_ARG to invoke_tests.pta".into(),
                alloc::vec![Step::new(
                    Op::Call {
                        via: Via::RpcArg,
                        msg: pta_invoke(Vec::new()),
                        rpc: RpcPlan::default()
                    },
                    Expect::Reaches
                )
                .rpc_arg()],
            ),
            _ => (
                "open a user TA that is not there, every RPC answered".into(),
                alloc::vec![Step::new(
                    call(open_session(&self.user_uuid(), Vec::new())),
                    Expect::Fails
                )],
            ),
        }
    }

    /// A random parameter, and whether it makes the message one the mediator must refuse.
    fn fuzz_param(&mut self) -> (Param, bool) {
        let types = [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0x55];
        let t = *self.rng.pick(&types);
        let memref = (5..=0xb).contains(&t) && t != 8;
        let tmem = (9..=0xb).contains(&t);
        match self.rng.below(5) {
            0 if tmem => {
                let (_, list, sev) = self.bad_list();
                (
                    Param::Tmem {
                        attr: t | abi::OPTEE_MSG_ATTR_NONCONTIG,
                        list,
                    },
                    sev == Severity::Escape,
                )
            }
            1 if tmem => (
                Param::Tmem {
                    attr: t | abi::OPTEE_MSG_ATTR_NONCONTIG,
                    list: List::pages(self.rng.range(1, 4) as u32),
                },
                false,
            ),
            _ => {
                let addr = match self.rng.below(3) {
                    0 => self.forbidden(8).1,
                    1 => self.rng.next_u64(),
                    _ => 0,
                };
                let mut attr = t;
                if self.rng.chance(1, 4) {
                    attr |= *self.rng.pick(&[
                        abi::OPTEE_MSG_ATTR_META,
                        abi::OPTEE_MSG_ATTR_NONCONTIG,
                        1 << 16,
                    ]);
                }
                let p = MsgParam {
                    attr,
                    u0: addr,
                    u1: self.rng.below(3 * PAGE),
                    u2: self.rng.next_u64() | 1,
                };
                // A raw memref with an address or cookie the guest never gave: a contiguous
                // or non-contiguous TMEM naming non-NULL memory, or an RMEM of an unknown
                // cookie. Must never reach OP-TEE.
                let forbidding =
                    memref && !(tmem && attr & abi::OPTEE_MSG_ATTR_NONCONTIG == 0 && addr == 0);
                (Param::Raw(p), forbidding)
            }
        }
    }

    fn fuzz(&mut self) -> Script {
        let n = self.rng.below(6) as usize;
        let mut params = Vec::new();
        let mut forbidding = false;
        for _ in 0..n {
            let (p, f) = self.fuzz_param();
            forbidding |= f;
            params.push(p);
        }
        let cmd = *self.rng.pick(&[
            abi::OPTEE_MSG_CMD_OPEN_SESSION,
            abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
            abi::OPTEE_MSG_CMD_INVOKE_COMMAND,
            abi::OPTEE_MSG_CMD_CANCEL,
            abi::OPTEE_MSG_CMD_REGISTER_SHM,
            abi::OPTEE_MSG_CMD_UNREGISTER_SHM,
            9,
        ]);
        let mut msg = Msg::new(cmd, Session::Pta, params);
        msg.func = UNKNOWN_PTA_CMD - self.rng.below(0x1000) as u32;
        if cmd == abi::OPTEE_MSG_CMD_OPEN_SESSION && self.rng.chance(1, 2) {
            let [m0, m1] = proto::open_session_meta(&self.user_uuid(), proto::LOGIN_PUBLIC);
            msg.params.splice(0..0, [Param::Raw(m0), Param::Raw(m1)]);
        }
        let via = match self.rng.below(5) {
            0 => Via::RpcArg,
            _ => Via::Arg { offset: 0 },
        };
        let expect = match forbidding {
            true => Expect::Refused {
                smc: &[
                    abi::OPTEE_SMC_RETURN_EBADCMD,
                    abi::OPTEE_SMC_RETURN_EBADADDR,
                ],
                teec: BAD_OR_OOM,
                breach: Severity::Escape,
            },
            false => Expect::Any,
        };
        let step = Step::new(
            Op::Call {
                via,
                msg,
                rpc: RpcPlan::default(),
            },
            expect,
        );
        (
            alloc::format!(
                "a random message: command {cmd}, {} parameter(s){}",
                n,
                if forbidding {
                    ", one naming memory the guest never gave"
                } else {
                    ""
                }
            ),
            alloc::vec![if via == Via::RpcArg {
                step.rpc_arg()
            } else {
                step
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::dom0_layout;

    #[test]
    fn a_seed_gives_the_same_campaign_every_time() {
        let l = dom0_layout();
        let a: Vec<Case> = Campaign {
            seed: 1,
            from: 0,
            count: 300,
            layout: &l,
        }
        .iter()
        .collect();
        let b: Vec<Case> = Campaign {
            seed: 1,
            from: 0,
            count: 300,
            layout: &l,
        }
        .iter()
        .collect();
        assert_eq!(a, b);
        // A case does not depend on how many come after it.
        assert_eq!(generate(1, 250, &l), a[250]);
        let c: Vec<Case> = Campaign {
            seed: 2,
            from: 0,
            count: 300,
            layout: &l,
        }
        .iter()
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn the_tour_visits_every_family_first() {
        let l = dom0_layout();
        let first: Vec<Family> = (0..TOUR.len() as u32)
            .map(|i| generate(9, i, &l).family)
            .collect();
        assert_eq!(first, TOUR);
        let mut seen: Vec<Family> = (0..2000).map(|i| generate(9, i, &l).family).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), Family::ALL.len());
    }

    #[test]
    fn forbidden_addresses_are_forbidden_and_aligned() {
        let l = dom0_layout();
        let mut g = Gen {
            rng: Rng::new(5),
            layout: &l,
        };
        let mut kinds = Vec::new();
        for _ in 0..2000 {
            let (k, a) = g.forbidden(PAGE);
            assert_eq!(a % PAGE, 0);
            assert_eq!(l.is_forbidden(a, PAGE), Some(k), "{a:#x}");
            kinds.push(k);
        }
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            5,
            "moat, secure, SHM, MMIO, beyond RAM: {kinds:?}"
        );
    }

    #[test]
    fn every_case_has_steps_and_a_name() {
        let l = dom0_layout();
        for i in 0..3000 {
            let c = generate(77, i, &l);
            assert!(!c.steps.is_empty() && !c.name.is_empty(), "{c:?}");
        }
    }
}
