/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The null TA's properties, read by the TA dev kit's user_ta_header.c.
 *
 * One instance that stays loaded and serves every session: the bench measures the cost of
 * a call, not of loading and verifying a TA, so the instance must outlive its sessions.
 */
#ifndef USER_TA_HEADER_DEFINES_H
#define USER_TA_HEADER_DEFINES_H

#include "null_ta.h"

#define TA_UUID NULL_TA_UUID
#define TA_FLAGS (TA_FLAG_SINGLE_INSTANCE | TA_FLAG_MULTI_SESSION | TA_FLAG_INSTANCE_KEEP_ALIVE)
#define TA_STACK_SIZE (2 * 1024)
#define TA_DATA_SIZE (16 * 1024)

#endif
