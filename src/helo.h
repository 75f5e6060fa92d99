/*
 * helo: the HELO/EHLO name checks behind the HELO signal.
 * Pure: no I/O, no allocation.
 */
#ifndef SLUICE_HELO_H
#define SLUICE_HELO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum helo_flags {
	HELO_OK = 0,
	HELO_LITERAL_FOREIGN = 1 << 0, /* [a.b.c.d] that is not the client */
	HELO_NOT_FQDN = 1 << 1,        /* no dot, or a bare TLD, or numeric */
	HELO_OURS = 1 << 2,            /* our own myhostname */
	HELO_LOCALHOST = 1 << 3,       /* localhost, localhost.localdomain */
	HELO_SYNTAX = 1 << 4,          /* characters no host name has */
};

/* helo: len bytes as the client sent it (<= 255); myhostname: ours. */
unsigned helo_check(const char *helo, size_t len, const struct sockaddr *client,
		    const char *myhostname);

#endif
