/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The null TA's interface, shared by the TA and the bench client (moat-bench).
 * UUID 6d6f6174-6265-6e63-686e-756c6c746100 ("moatbenchnullta").
 */
#ifndef NULL_TA_H
#define NULL_TA_H

#define NULL_TA_UUID                                                                   \
	{ 0x6d6f6174, 0x6265, 0x6e63, { 0x68, 0x6e, 0x75, 0x6c, 0x6c, 0x74, 0x61, 0x00 } }

/* No parameters; returns at once. */
#define NULL_TA_CMD_NOP 0
/* One memref (INOUT) parameter, not touched; returns at once. */
#define NULL_TA_CMD_MEMREF 1

#endif
