/*
 * throttle: the mechanics of shaping one session. Rates come from
 * libevent's token buckets (one shared configuration for every shaped
 * session; libevent refills on a common timeout, so ten thousand shaped
 * sessions cost no per-session timer churn). The TCP receive window is
 * the other half: listening sockets start with a small receive buffer so
 * that a client that may be shaped cannot push more than a few kilobytes
 * ahead; trusted sessions, and every message body, get a wide one.
 */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include <stdbool.h>

struct bufferevent;
struct config;

#define THROTTLE_SMALL_RCVBUF 4096        /* the kernel doubles it */
#define THROTTLE_WIDE_RCVBUF (256 * 1024)

/* Builds the shared bucket configuration for cfg->shape_rate. */
int throttle_init(const struct config *cfg);
/* Frees both configurations; no bufferevent may use them any more. */
void throttle_free(void);

/* Rate-limits bev (both ways) or lifts the limit. With TLS, pass the
 * filter: the handshake runs on the socket below and is never shaped. */
int throttle_apply(struct bufferevent *bev, bool shaped);

/* Small or wide receive window on the client's socket. */
void throttle_window(int fd, bool wide);

/* On a listening socket, before accept: every session starts narrow. */
int throttle_listener(int fd);

#endif
