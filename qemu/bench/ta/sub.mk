# SPDX-License-Identifier: MIT OR Apache-2.0
global-incdirs-y += .
srcs-y += null_ta.c
