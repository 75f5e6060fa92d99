/*
 * throttle: the mechanics of shaping one session: the trickle and the TCP
 * receive window.
 *
 * Trickle: one timer per worker (per event loop) ticks at the shaping
 * rate and walks every shaped session of the worker; for each it does at
 * most one recv() and one send of the bytes the tick allows, straight into
 * and out of the session's bufferevent, whose own events stay off while it
 * is shaped. So a shaped session costs about one system call per byte
 * moved and no epoll_ctl at all; libevent's per-bufferevent rate limits
 * (which suspend and resume each event around every byte: two epoll_ctl,
 * the read or write and a callback per byte) are kept only for a shaped
 * session after STARTTLS, where the limit sits on the TLS filter (rare).
 *
 * Window: the listening sockets start with a small receive buffer so that a
 * client that may be shaped cannot push more than a few kilobytes ahead;
 * trusted sessions, and every message body, get a wide one.
 */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include <stdbool.h>

struct bufferevent;
struct config;
struct throttle;

#define THROTTLE_SMALL_RCVBUF 4096        /* the kernel doubles it */
#define THROTTLE_WIDE_RCVBUF (256 * 1024)

/* Runs once per tick for each shaped bufferevent, before its bytes move
 * (the owner's budget). It may call throttle_off on that entry. */
typedef void throttle_due_fn(void *arg);

/* The tick and the bytes per tick for cfg->shape_rate; libevent's bucket
 * configuration for TLS. */
int throttle_init(const struct config *cfg);
/* Frees the bucket configuration; no bufferevent may use it any more. */
void throttle_free(void);

/* Shapes bev (both ways) until throttle_off: its read and write events are
 * switched off and the worker's trickle moves its bytes; the bufferevent
 * stays the owner of the buffers, and its read, write and event callbacks
 * run as libevent would run them (data read, output drained, EOF, error,
 * read and write timeouts). Only throttle_off may turn its events on again.
 * A TLS filter (a bufferevent with an underlying one) gets libevent's rate
 * limit instead; the handshake below it is never shaped. due(arg) runs
 * every tick. NULL when out of memory (then bev is not shaped). */
struct throttle *throttle_on(struct bufferevent *bev, throttle_due_fn *due,
			     void *arg);
/* Unshapes and frees t: the bufferevent's events are as they were before
 * (less what an EOF, error or timeout switched off). NULL is ignored. */
void throttle_off(struct throttle *t);

/* Small or wide receive window on the client's socket. */
void throttle_window(int fd, bool wide);

/* On a listening socket, before accept: every session starts narrow. */
int throttle_listener(int fd);

#endif
