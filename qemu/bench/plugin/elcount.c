// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * elcount: a QEMU TCG plugin that counts guest instructions per exception level inside
 * the windows the bench client marks, one count per call.
 *
 *   client (NS-EL0)           hint #0x68          hint #0x6a  <call>  hint #0x6b  ...  hint #0x69
 *                             window begins       sample begins       sample ends      window ends
 *   every instruction between 0x6a and 0x6b, at any EL, is counted into the sample's bucket
 *   of its level: ns-el0 ns-el1 el2 el2h el3 s-el1 s-el0
 *   (el2: the EL2 regime, a hypervisor; el2h: VHE's EL2&0 regime, Linux at EL2 when no
 *   hypervisor is booted)
 *
 * QEMU 7.2's plugin API has no register access, so the plugin cannot read PSTATE.EL. It
 * learns the level from QEMU's own MMU index instead:
 *
 *  - A translation block (TB) runs at one EL: the EL is part of the TB's flags (a TB is
 *    looked up by pc and flags), and every EL change (exception, ERET) ends a TB.
 *  - Every load or store carries its MMU index in the low 4 bits of the
 *    qemu_plugin_meminfo_t the memory callback gets (a MemOpIdx, `memop << 4 | mmu_idx`).
 *    QEMU 7.2 folds the secure and non-secure A-profile regimes into one set of indexes
 *    (target/arm/cpu.h, ARMMMUIdx): 0 E10_0, 1 E20_0, 2 E10_1, 3 E20_2, 4 E10_1_PAN,
 *    5 E20_2_PAN, 6 E2, 7 E3. The unprivileged LDTR/STTR family uses the EL0 index from
 *    EL1, so those instructions are skipped. The first load/store of each TB is hooked.
 *  - A TB that makes no access takes the level of its physical code page (the host address
 *    of its first instruction, page-aligned), i.e. the level of the latest access made by
 *    code on that page. No physical page holds code of two levels in this stack, except
 *    Linux's own pages when it boots alone: it starts at EL1 and moves to EL2 (VHE) early
 *    in boot; each such change of a page's level is counted in `conflicts`.
 *  - A TB on a page where no access was made yet (exception vector stubs, for instance)
 *    takes the level of the next TB whose level is known (`forwarded`): vector stubs branch
 *    to their handler at the same EL.
 *  - Secure or not: EL2 is non-secure here (no S-EL2), EL3 is EL3. At EL1 the VA says it:
 *    Linux runs in the upper half (TTBR1), OP-TEE's core in the lower half (TTBR0). EL0
 *    belongs to the world of the last EL1 or EL2 code that ran, remembered per code page.
 *
 * Counting is per instruction: an inline add per instruction into its TB's counter,
 * attributed to the TB's level when the next TB starts (by then its memory callback has
 * run) and at every marker. (Under -icount, an I/O access in the middle of a block makes
 * QEMU retranslate and restart that instruction, so it may be counted twice; the sum of
 * the levels stays within a few instructions of the counter's figure.)
 *
 * Arguments: out=<file> (required); profile=<lo>:<hi> (hex, optional): also count, per
 * translated block that starts in [lo, hi) (the hypervisor's image), the EL2 instructions
 * it ran inside samples, and report them per window, so that they can be attributed to the
 * hypervisor's symbols (a block ends at every branch and call, so it lies in one function).
 * The report, one line per window (and its profile lines before it), then a summary:
 *
 *   elcount: version 1
 *   elcount: profile <k> <block vaddr, hex> <instructions>
 *   elcount: window <k> samples <n> <bucket>=<sum>/<min>/<median>/<max> ... forwarded=<n>
 *   elcount: end windows <k> conflicts <c> unclassified <u> forwarded <f> mmuidx <i>=<n> ...
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written here from the
 * API's documentation; QEMU 7.2 accepts plugins of API version 1 (QEMU_PLUGIN_VERSION).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The part of QEMU 7.2's plugin API this plugin uses ---- */

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;

typedef struct qemu_info_t {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	bool system_emulation;
	union {
		struct {
			int smp_vcpus;
			int max_vcpus;
		} system;
	};
} qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
					  uint64_t vaddr, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
					  enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
					    qemu_plugin_vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
						enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_mem_cb_t cb,
				      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw,
				      void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

/* ---- Definitions ---- */

/* The client's markers: HINT #0x68..#0x6b (0xd503201f | imm << 5). */
#define HINT(imm) (0xd503201fu | ((uint32_t)(imm) << 5))
enum marker { WINDOW_BEGIN = 0x68, WINDOW_END, SAMPLE_BEGIN, SAMPLE_END };

enum bucket { NS_EL0, NS_EL1, EL2, EL2H, EL3, S_EL1, S_EL0, BUCKETS };
static const char *const bucket_name[BUCKETS] = {
	"ns-el0", "ns-el1", "el2", "el2h", "el3", "s-el1", "s-el0",
};

/* What a TB's MMU index says: an EL, and for EL2 which regime (EL2 or VHE's EL2&0). */
enum level { LEVEL_UNKNOWN = -1, LEVEL_EL0, LEVEL_EL1, LEVEL_EL2, LEVEL_EL2H, LEVEL_EL3 };

enum world { WORLD_UNSET, WORLD_NS, WORLD_S };

/* One translated block. */
struct tbinfo {
	uint64_t executed;  /* instructions executed (inline add, one per instruction) */
	uint64_t accounted; /* of which already attributed */
	uint64_t vaddr;
	uintptr_t page;     /* host page of the first instruction: the physical code page */
	enum level el;      /* LEVEL_UNKNOWN until a memory access told it */
	uint64_t profiled;  /* EL2 instructions inside samples in this window (profile=) */
};

/* Per physical code page: its EL (from memory accesses) and, for EL0, its world. */
struct page {
	uintptr_t page; /* 0: free slot */
	enum level el;  /* the latest level a memory access on this page ran at */
	enum world world;
};
#define PAGES (1u << 18) /* code pages the stack executes: a few thousand */
static struct page *pages;

static FILE *out;
static struct tbinfo *current; /* the TB that runs now (or ran last) */
static enum world world = WORLD_NS;
static uint64_t totals[BUCKETS]; /* running totals since boot */
static uint64_t conflicts, unclassified, forwarded, mmuidx_seen[16];
/* Instructions of blocks whose level no access told yet: they take the next known level. */
static uint64_t pending;

/* The open window: a sample's start totals and every finished sample's counts. */
static bool in_window, in_sample;
static uint64_t sample_start[BUCKETS];
static uint64_t *window_samples[BUCKETS];
static size_t window_len, window_cap, windows;
static uint64_t window_forwarded; /* `forwarded` when the window began */

/* profile=: the blocks that start in [profile_lo, profile_hi), in translation order. */
static uint64_t profile_lo, profile_hi;
static struct tbinfo **profile_tbs;
static size_t profile_len, profile_cap;

/* ---- Code ---- */

static struct page *page_slot(uintptr_t page)
{
	size_t i = (size_t)((page * 0x9e3779b97f4a7c15ull) >> 46) & (PAGES - 1);
	for (size_t n = 0; n < PAGES; n++, i = (i + 1) & (PAGES - 1)) {
		if (pages[i].page == page)
			return &pages[i];
		if (pages[i].page == 0) {
			pages[i].page = page;
			pages[i].el = LEVEL_UNKNOWN;
			pages[i].world = WORLD_UNSET;
			return &pages[i];
		}
	}
	fprintf(stderr, "elcount: more than %u code pages\n", PAGES);
	abort();
}

static enum level level_of_mmuidx(unsigned idx)
{
	switch (idx) {
	case 0: /* E10_0 */
	case 1: /* E20_0 */
		return LEVEL_EL0;
	case 2: /* E10_1 */
	case 4: /* E10_1_PAN */
		return LEVEL_EL1;
	case 3: /* E20_2 */
	case 5: /* E20_2_PAN */
		return LEVEL_EL2H;
	case 6: /* E2 */
		return LEVEL_EL2;
	case 7: /* E3 */
		return LEVEL_EL3;
	default:
		return LEVEL_UNKNOWN;
	}
}

/* Attribute what `tb` executed since it was last accounted. */
static void account(struct tbinfo *tb)
{
	uint64_t n = tb->executed - tb->accounted;
	struct page *p;
	enum level el = tb->el;
	enum bucket b;

	if (n == 0)
		return;
	tb->accounted = tb->executed;
	p = page_slot(tb->page);
	if (el == LEVEL_UNKNOWN)
		el = p->el;
	switch (el) {
	case LEVEL_EL0:
		if (p->world == WORLD_UNSET)
			p->world = world;
		b = p->world == WORLD_S ? S_EL0 : NS_EL0;
		break;
	case LEVEL_EL1:
		world = (tb->vaddr >> 63) ? WORLD_NS : WORLD_S;
		b = world == WORLD_S ? S_EL1 : NS_EL1;
		break;
	case LEVEL_EL2:
		world = WORLD_NS;
		b = EL2;
		if (in_sample && tb->vaddr >= profile_lo && tb->vaddr < profile_hi)
			tb->profiled += n;
		break;
	case LEVEL_EL2H:
		world = WORLD_NS;
		b = EL2H;
		break;
	case LEVEL_EL3:
		b = EL3;
		break;
	default:
		/* No access on this page yet: the block takes the level of the next known one. */
		pending += n;
		return;
	}
	totals[b] += n + pending;
	forwarded += pending;
	pending = 0;
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	struct tbinfo *tb = udata;
	unsigned idx = info & 0xf;
	enum level el = level_of_mmuidx(idx);
	struct page *p;

	(void)vcpu;
	(void)vaddr;
	mmuidx_seen[idx]++;
	if (el == LEVEL_UNKNOWN) {
		unclassified++;
		return;
	}
	if (tb->el != LEVEL_UNKNOWN)
		return;
	tb->el = el;
	p = page_slot(tb->page);
	if (p->el != LEVEL_UNKNOWN && p->el != el)
		conflicts++;
	p->el = el;
}

static void on_tb(unsigned int vcpu, void *udata)
{
	(void)vcpu;
	if (current)
		account(current);
	current = udata;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void window_end(void)
{
	for (size_t i = 0; i < profile_len; i++) {
		struct tbinfo *tb = profile_tbs[i];
		if (tb->profiled)
			fprintf(out, "elcount: profile %zu %" PRIx64 " %" PRIu64 "\n", windows, tb->vaddr,
				tb->profiled);
		tb->profiled = 0;
	}
	fprintf(out, "elcount: window %zu samples %zu", windows, window_len);
	for (int b = 0; b < BUCKETS; b++) {
		uint64_t *v = window_samples[b], sum = 0;
		for (size_t i = 0; i < window_len; i++)
			sum += v[i];
		qsort(v, window_len, sizeof(*v), cmp_u64);
		if (window_len)
			fprintf(out, " %s=%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64, bucket_name[b],
				sum, v[0], v[window_len / 2], v[window_len - 1]);
		else
			fprintf(out, " %s=0/0/0/0", bucket_name[b]);
	}
	fprintf(out, " forwarded=%" PRIu64 "\n", forwarded - window_forwarded);
	fflush(out);
	windows++;
	window_len = 0;
}

static void on_marker(unsigned int vcpu, void *udata)
{
	enum marker m = (enum marker)(uintptr_t)udata;

	(void)vcpu;
	if (current)
		account(current);
	switch (m) {
	case WINDOW_BEGIN:
		in_window = true;
		window_len = 0;
		window_forwarded = forwarded;
		for (size_t i = 0; i < profile_len; i++)
			profile_tbs[i]->profiled = 0;
		break;
	case WINDOW_END:
		if (in_window)
			window_end();
		in_window = false;
		break;
	case SAMPLE_BEGIN:
		memcpy(sample_start, totals, sizeof(totals));
		in_sample = true;
		break;
	case SAMPLE_END:
		if (!in_window || !in_sample)
			break;
		in_sample = false;
		if (window_len == window_cap) {
			window_cap = window_cap ? 2 * window_cap : 1024;
			for (int b = 0; b < BUCKETS; b++) {
				window_samples[b] = realloc(window_samples[b], window_cap * sizeof(uint64_t));
				if (!window_samples[b])
					abort();
			}
		}
		for (int b = 0; b < BUCKETS; b++)
			window_samples[b][window_len] = totals[b] - sample_start[b];
		window_len++;
		break;
	}
}

/* LDTR/STTR and their byte/halfword/signed forms: size 111 0 00 opc 0 imm9 10 Rn Rt. */
static bool is_unprivileged_ldst(uint32_t insn)
{
	return (insn & 0x3f200c00u) == 0x38000800u;
}

/* The A64 loads-and-stores encoding group: op0 = x1x0 (bits 27 and 25). */
static bool is_ldst(uint32_t insn)
{
	return (insn & 0x0a000000u) == 0x08000000u;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct tbinfo *info = calloc(1, sizeof(*info));
	bool mem_hooked = false;

	(void)id;
	if (!info)
		abort();
	info->vaddr = qemu_plugin_tb_vaddr(tb);
	info->page = (uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0)) >> 12;
	info->el = LEVEL_UNKNOWN;
	if (info->vaddr >= profile_lo && info->vaddr < profile_hi) {
		if (profile_len == profile_cap) {
			profile_cap = profile_cap ? 2 * profile_cap : 1024;
			profile_tbs = realloc(profile_tbs, profile_cap * sizeof(*profile_tbs));
			if (!profile_tbs)
				abort();
		}
		profile_tbs[profile_len++] = info;
	}
	qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb, QEMU_PLUGIN_CB_NO_REGS, info);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint32_t word = 0;

		qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
							   &info->executed, 1);
		if (qemu_plugin_insn_size(insn) != 4)
			continue;
		memcpy(&word, qemu_plugin_insn_data(insn), 4);
		if (word >= HINT(WINDOW_BEGIN) && word <= HINT(SAMPLE_END) &&
		    ((word - HINT(WINDOW_BEGIN)) & 0x1f) == 0) {
			uintptr_t m = WINDOW_BEGIN + ((word - HINT(WINDOW_BEGIN)) >> 5);
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS,
							       (void *)m);
		}
		if (!mem_hooked && is_ldst(word) && !is_unprivileged_ldst(word)) {
			qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS,
							 QEMU_PLUGIN_MEM_RW, info);
			mem_hooked = true;
		}
	}
}

static void on_atexit(qemu_plugin_id_t id, void *udata)
{
	(void)id;
	(void)udata;
	if (current)
		account(current);
	fprintf(out,
		"elcount: end windows %zu conflicts %" PRIu64 " unclassified %" PRIu64
		" forwarded %" PRIu64,
		windows, conflicts, unclassified, forwarded);
	fprintf(out, " mmuidx");
	for (int i = 0; i < 16; i++)
		if (mmuidx_seen[i])
			fprintf(out, " %d=%" PRIu64, i, mmuidx_seen[i]);
	fprintf(out, "\n");
	fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
					   char **argv)
{
	const char *path = NULL;

	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], "out=", 4) == 0)
			path = argv[i] + 4;
		if (strncmp(argv[i], "profile=", 8) == 0) {
			char *end;
			profile_lo = strtoull(argv[i] + 8, &end, 16);
			profile_hi = *end == ':' ? strtoull(end + 1, &end, 16) : 0;
			if (*end || profile_hi <= profile_lo) {
				fprintf(stderr, "elcount: profile=<lo>:<hi>, hex, lo < hi\n");
				return -1;
			}
		}
	}
	if (!path) {
		fprintf(stderr, "elcount: needs out=<file>\n");
		return -1;
	}
	if (!info->system_emulation || strcmp(info->target_name, "aarch64") != 0) {
		fprintf(stderr, "elcount: counts aarch64 system emulation only\n");
		return -1;
	}
	if (info->system.smp_vcpus != 1) {
		fprintf(stderr, "elcount: needs -smp 1 (it keeps one vCPU's state)\n");
		return -1;
	}
	out = fopen(path, "w");
	pages = calloc(PAGES, sizeof(*pages));
	if (!out || !pages) {
		fprintf(stderr, "elcount: cannot open %s\n", path);
		return -1;
	}
	fprintf(out, "elcount: version 1\n");
	fflush(out);
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
	return 0;
}
