// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * moat-bench: the bench's client. It calls the null TA through the TEE driver's ioctls
 * (linux/tee.h, no libteec in between) and times every call with the virtual counter.
 *
 *   for each case: WARMUP calls, then SAMPLES calls, each one bracketed as
 *
 *     isb; mrs t0, cntvct_el0      the counter before
 *     hint #0x6a                   marker: sample begins   (the elcount plugin sees these)
 *     <the call>
 *     hint #0x6b                   marker: sample ends
 *     isb; mrs t1, cntvct_el0      the counter after: one sample is t1 - t0
 *
 *   and the SAMPLES calls of a case sit between `hint #0x68` (window begins) and
 *   `hint #0x69` (window ends).
 *
 * `hint #0x68`-`#0x6b` are unallocated hint encodings: the architecture executes them as
 * NOP (Arm ARM C6.2.126 HINT), no compiler emits them, and the TCG plugin recognises them
 * by their encoding when it translates them, so they mark the windows without changing
 * what the CPU does.
 *
 * In the bench's deterministic mode (QEMU -icount shift=0, a 1 GHz generic timer) one
 * counter tick is one instruction, so a sample is the instructions that one call costs,
 * across every exception level.
 *
 * Output, one line each, parsed strictly by `cargo xtask bench` (tools/xtask/src/bench):
 *
 *   moat-bench: version 1
 *   moat-bench: cntfrq <hz>
 *   moat-bench: case <name> pages <n> warmup <w> samples <n>
 *   moat-bench: samples <name> <s1> <s2> ... <sN>
 *   moat-bench: done
 *
 * Any failure prints `moat-bench: error <what>` and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/tee.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "null_ta.h"

#define PAGE 4096u
#define MAX_PAGES 128u
#define WARMUP 100u
#define SAMPLES 1000u

/* The null TA's UUID in the octet order TEE_IOC_OPEN_SESSION expects (RFC 4122, big endian). */
static const uint8_t null_ta_uuid[TEE_IOCTL_UUID_LEN] = {
	0x6d, 0x6f, 0x61, 0x74, 0x62, 0x65, 0x6e, 0x63,
	0x68, 0x6e, 0x75, 0x6c, 0x6c, 0x74, 0x61, 0x00,
};

static int tee_fd = -1;
static uint32_t session;
static uint8_t *buffer;

static void fail(const char *what)
{
	printf("moat-bench: error %s (errno %d: %s)\n", what, errno, strerror(errno));
	fflush(stdout);
	exit(1);
}

static inline uint64_t stamp(void)
{
	uint64_t v;
	__asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v) : : "memory");
	return v;
}

static inline uint64_t counter_frequency(void)
{
	uint64_t v;
	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(v));
	return v;
}

#define MARK(imm) __asm__ volatile("hint #" #imm : : : "memory")

static uint32_t open_session(void)
{
	struct {
		struct tee_ioctl_open_session_arg arg;
		struct tee_ioctl_param params[4];
	} req;
	struct tee_ioctl_buf_data buf = {
		.buf_ptr = (uintptr_t)&req,
		.buf_len = sizeof(req),
	};
	memset(&req, 0, sizeof(req));
	memcpy(req.arg.uuid, null_ta_uuid, sizeof(null_ta_uuid));
	req.arg.clnt_login = TEE_IOCTL_LOGIN_PUBLIC;
	req.arg.num_params = 4;
	if (ioctl(tee_fd, TEE_IOC_OPEN_SESSION, &buf) != 0)
		fail("TEE_IOC_OPEN_SESSION");
	if (req.arg.ret != 0) {
		printf("moat-bench: error open session: TEE result %#x origin %u\n", req.arg.ret,
		       req.arg.ret_origin);
		exit(1);
	}
	return req.arg.session;
}

static void close_session(uint32_t s)
{
	struct tee_ioctl_close_session_arg arg = { .session = s };
	if (ioctl(tee_fd, TEE_IOC_CLOSE_SESSION, &arg) != 0)
		fail("TEE_IOC_CLOSE_SESSION");
}

/* Invoke `cmd`; with shm_id >= 0, pass [0, len) of that registered buffer as the memref. */
static void invoke(uint32_t cmd, int shm_id, uint64_t len)
{
	struct {
		struct tee_ioctl_invoke_arg arg;
		struct tee_ioctl_param params[4];
	} req;
	struct tee_ioctl_buf_data buf = {
		.buf_ptr = (uintptr_t)&req,
		.buf_len = sizeof(req),
	};
	memset(&req, 0, sizeof(req));
	req.arg.func = cmd;
	req.arg.session = session;
	req.arg.num_params = 4;
	if (shm_id >= 0) {
		req.params[0].attr = TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INOUT;
		req.params[0].a = 0; /* offset into the shared memory */
		req.params[0].b = len;
		req.params[0].c = (uint64_t)shm_id;
	}
	if (ioctl(tee_fd, TEE_IOC_INVOKE, &buf) != 0)
		fail("TEE_IOC_INVOKE");
	if (req.arg.ret != 0) {
		printf("moat-bench: error invoke %u: TEE result %#x origin %u\n", cmd, req.arg.ret,
		       req.arg.ret_origin);
		exit(1);
	}
}

/* Register `pages` pages of the buffer with the TEE; returns the shm fd and its id. */
static int shm_register(uint32_t pages, int *id)
{
	struct tee_ioctl_shm_register_data data = {
		.addr = (uintptr_t)buffer,
		.length = (uint64_t)pages * PAGE,
	};
	int fd = ioctl(tee_fd, TEE_IOC_SHM_REGISTER, &data);
	if (fd < 0)
		fail("TEE_IOC_SHM_REGISTER");
	*id = data.id;
	return fd;
}

/* Releasing the shm's last reference (its fd) unregisters it from the TEE before close returns. */
static void shm_release(int fd)
{
	if (close(fd) != 0)
		fail("close(shm)");
}

enum kind { NOP, MEMREF, TEMP, SHM, SESSION };

struct bench_case {
	const char *name;
	enum kind kind;
	uint32_t pages;
};

static const struct bench_case cases[] = {
	{ "nop", NOP, 0 },
	{ "memref-1", MEMREF, 1 },
	{ "memref-16", MEMREF, 16 },
	{ "memref-128", MEMREF, 128 },
	{ "temp-1", TEMP, 1 },
	{ "temp-16", TEMP, 16 },
	{ "temp-128", TEMP, 128 },
	{ "shm-1", SHM, 1 },
	{ "shm-128", SHM, 128 },
	{ "session", SESSION, 0 },
};

static uint64_t samples[SAMPLES];

/* One call of case `c`, timed when `t` is not NULL. `reg_id` is the pre-registered shm. */
static void one(const struct bench_case *c, int reg_id, uint64_t *t)
{
	uint64_t t0 = 0, t1 = 0;
	int fd, id;

	if (t) {
		t0 = stamp();
		MARK(0x6a);
	}
	switch (c->kind) {
	case NOP:
		invoke(NULL_TA_CMD_NOP, -1, 0);
		break;
	case MEMREF:
		invoke(NULL_TA_CMD_MEMREF, reg_id, (uint64_t)c->pages * PAGE);
		break;
	case TEMP:
		fd = shm_register(c->pages, &id);
		invoke(NULL_TA_CMD_MEMREF, id, (uint64_t)c->pages * PAGE);
		shm_release(fd);
		break;
	case SHM:
		fd = shm_register(c->pages, &id);
		shm_release(fd);
		break;
	case SESSION:
		close_session(open_session());
		break;
	}
	if (t) {
		MARK(0x6b);
		t1 = stamp();
		*t = t1 - t0;
	}
}

static void run(const struct bench_case *c)
{
	int reg_fd = -1, reg_id = -1;
	uint32_t i;

	if (c->kind == MEMREF)
		reg_fd = shm_register(c->pages, &reg_id);
	for (i = 0; i < WARMUP; i++)
		one(c, reg_id, NULL);
	MARK(0x68);
	for (i = 0; i < SAMPLES; i++)
		one(c, reg_id, &samples[i]);
	MARK(0x69);
	if (reg_fd >= 0)
		shm_release(reg_fd);

	printf("moat-bench: case %s pages %u warmup %u samples %u\n", c->name, c->pages, WARMUP,
	       SAMPLES);
	printf("moat-bench: samples %s", c->name);
	for (i = 0; i < SAMPLES; i++)
		printf(" %llu", (unsigned long long)samples[i]);
	printf("\n");
	fflush(stdout);
}

int main(void)
{
	size_t i;

	buffer = aligned_alloc(PAGE, MAX_PAGES * PAGE);
	if (!buffer)
		fail("aligned_alloc");
	/* Fault every page in now, so no call pays for it. */
	memset(buffer, 0x5a, MAX_PAGES * PAGE);

	tee_fd = open("/dev/tee0", O_RDWR);
	if (tee_fd < 0)
		fail("open /dev/tee0");
	printf("moat-bench: version 1\n");
	printf("moat-bench: cntfrq %llu\n", (unsigned long long)counter_frequency());
	fflush(stdout);
	session = open_session();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run(&cases[i]);
	close_session(session);
	close(tee_fd);
	printf("moat-bench: done\n");
	return 0;
}
