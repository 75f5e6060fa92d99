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
 * Lent: between its command lines and replies a shaped session needs no
 * bufferevent (976 bytes and its 1 KiB chains): the entry takes the few
 * bytes in flight (a reply going out, a line coming in) into one small
 * allocation of its own and moves them on the socket itself, and wakes
 * the owner when there is news (a whole line, the output gone, EOF, an
 * error, a timeout; a line still dribbling in after the read timeout, so
 * that the owner's per-command deadline holds); the owner makes a
 * bufferevent again and takes the
 * bytes back, and hears the news as from the bufferevent it kept.
 *
 * Window: the listening sockets start with a small receive buffer so that a
 * client that may be shaped cannot push more than a few kilobytes ahead;
 * trusted sessions, and every message body, get a wide one.
 */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>

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

/* Lending (see above). Limits: at most THROTTLE_LEND_IN_MAX bytes of a
 * line without its line feed, and THROTTLE_LEND_OUT_MAX bytes of output;
 * a longer line wakes the owner. */
#define THROTTLE_LEND_IN_MAX 256
#define THROTTLE_LEND_OUT_MAX 1024
#define THROTTLE_LEND_IN_STEP 32 /* the line's room grows by this */

/* Whether t (shaping a socket bufferevent) could be lent now: its input
 * holds no line feed and both buffers are within the limits. */
bool throttle_lendable(const struct throttle *t);
/* The bufferevent's bytes and timeouts pass to t, which trickles on
 * without it; the caller then frees the bufferevent without closing the
 * socket. wake(arg) runs, from a tick, when there is news: it must give
 * t a bufferevent on the same socket (throttle_take_back) or throttle_off
 * it. False (nothing changed) when not lendable or out of memory. */
bool throttle_lend(struct throttle *t, throttle_due_fn *wake);
/* bev (new, on the lent socket, no bytes in it) takes the bytes back and
 * t shapes it as before. -1: out of memory, bytes lost (close the
 * session); t shapes bev all the same. */
int throttle_take_back(struct throttle *t, struct bufferevent *bev);
bool throttle_is_lent(const struct throttle *t);
/* Output bytes a lent t has still to send (0 when not lent). */
size_t throttle_lent_output(const struct throttle *t);

/* Small or wide receive window on the client's socket. */
void throttle_window(int fd, bool wide);

/* On a listening socket, before accept: every session starts narrow. */
int throttle_listener(int fd);

#endif
