/*
 * backend_check: "sluice -n --check-backend": connects to the configured
 * backend as sluice would, reads its greeting and EHLO reply, and reports
 * whether XCLIENT with ADDR, NAME, HELO and PROTO is offered to sluice's
 * address, and whether an IPv6 client address is taken. Start-up code:
 * it waits (bounded by backend_connect_timeout and backend_timeout, each
 * at most BACKEND_CHECK_WAIT_MAX_MS) and prints to out.
 */
#ifndef SLUICE_BACKEND_CHECK_H
#define SLUICE_BACKEND_CHECK_H

#include <stdio.h>

struct config;

#define BACKEND_CHECK_WAIT_MAX_MS 30000

enum backend_check_result {
	BACKEND_CHECK_OK = 0,          /* XCLIENT ADDR NAME HELO PROTO offered */
	BACKEND_CHECK_MISCONFIGURED = 1, /* reachable, but sluice cannot relay */
	BACKEND_CHECK_UNREACHABLE = 2, /* no connection or no SMTP greeting */
};

/* Returns the exit code for main. */
enum backend_check_result backend_check_run(const struct config *cfg, FILE *out);

#endif
