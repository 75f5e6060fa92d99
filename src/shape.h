/*
 * shape: the shaping of one client connection, apart from the session: the
 * trickle on and off within the shape_time budget (throttle.h), the
 * end-of-data hold, and the verdict's deadline (the greeting timer). It knows the client only
 * as a bufferevent and names for log lines; the session decides when to
 * shape (session_shape.c, from the classification) and hears back through
 * the two callbacks given here. Unit-tested without a session
 * (tests/unit/test_shape.c).
 *
 * States (one setter, shape_set_state, logs every change):
 *   NEVER  -> ON       shape_start: the trickle is on, the budget runs
 *   ON     -> PAUSED   shape_pause: full speed (a message body), budget held
 *   PAUSED -> ON       shape_start again (the final reply goes out slowly)
 *   ON|PAUSED -> SPENT the budget is used up, or shape_finish (the hold was
 *                      waited out, the end-of-data reply answered): never
 *                      shaped again
 *   NEVER  -> SPENT    shape_start with no budget left
 */
#ifndef SLUICE_SHAPE_H
#define SLUICE_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>

struct bufferevent;
struct config;
struct event;
struct event_base;
struct throttle;

#define SHAPE_STATES(X)                                                     \
	X(SHAPE_NEVER, "never")                                             \
	X(SHAPE_ON, "on")                                                   \
	X(SHAPE_PAUSED, "paused")                                           \
	X(SHAPE_SPENT, "spent")

enum shape_state {
#define SHAPE_ENUM(id, name) id,
	SHAPE_STATES(SHAPE_ENUM)
#undef SHAPE_ENUM
};

typedef void shape_fn(void *arg);

/* Embedded in its owner (the session), zeroed, then shape_init. */
struct shape {
	struct event_base *base;
	const struct config *cfg;
	struct bufferevent *bev;  /* the client's; NULL while TLS starts */
	unsigned long long id;    /* for log lines */
	const char *client;       /* for log lines; the owner's string */
	enum shape_state state;
	long used_ms;             /* shaped time before since */
	struct timeval since;     /* while ON */
	struct throttle *thr;     /* the trickle, while ON; it ticks the budget */
	struct event *hold_ev;    /* end of the end-of-data hold */
	struct event *verdict_ev; /* the verdict's deadline; freed after */
	shape_fn *hold_then;      /* runs when the hold ends */
	shape_fn *verdict_due;    /* runs when the verdict's deadline passes */
	shape_fn *wake;           /* lent, the trickle has news (shape_lend) */
	void *arg;                /* for the three */
};

/* base, cfg and client outlive the shape. throttle_init(cfg) must have
 * run. verdict_due: see shape_verdict_after; wake: see shape_lend (NULL:
 * never lent). */
void shape_init(struct shape *sh, struct event_base *base,
		const struct config *cfg, struct bufferevent *bev,
		unsigned long long id, const char *client,
		shape_fn *verdict_due, shape_fn *wake, void *arg);

/* Frees the timers and stops the trickle; no callback runs after. */
void shape_free(struct shape *sh);

/* Trickle on, small receive window, for the rest of the budget; score
 * is for the log line. False when it cannot start (spent, no budget, no
 * memory or throttle: then the client is simply not shaped). */
bool shape_start(struct shape *sh, int score);

/* Full speed and a wide window for a message body; the budget pauses. */
void shape_pause(struct shape *sh);

/* Never shaped again; why goes to the log line. Only once shaped. */
void shape_finish(struct shape *sh, const char *why);

/* Shaped time so far (ms), the running stretch included. */
long shape_used_ms(const struct shape *sh);

bool shape_is_on(const struct shape *sh);
bool shape_ever(const struct shape *sh);
const char *shape_state_name(enum shape_state st);

/* Holds the end-of-data reply, silently, for the rest of the budget but at
 * most max_ms; then(arg) runs when it ends. False (then never runs) when
 * not shaped now, nothing is left, or no timer can be had. */
bool shape_hold(struct shape *sh, long max_ms, shape_fn *then);

/* verdict_due(arg) runs once, ms from now (0: on the next loop turn); a
 * second call re-arms it. ms is the same for many sessions, so a libevent
 * common timeout keeps ten thousand waits O(1). -1 when out of memory. */
int shape_verdict_after(struct shape *sh, long ms);
/* The verdict came first: the deadline is not needed any more. */
void shape_verdict_cancel(struct shape *sh);

/* The client's bufferevent goes (TLS starting: no trickle during the
 * handshake; parked: none at all) with shape_leave, and comes back (the
 * TLS layer, with libevent's rate limit, see throttle.h; or a new socket
 * bufferevent) with shape_join. Shaping that starts in between (a late
 * DNS list answer) is ON at once, the budget running, and trickles from
 * shape_join. */
void shape_leave(struct shape *sh);
/* False: the bytes of a lent trickle could not be taken back (no memory;
 * close the client). */
bool shape_join(struct shape *sh, struct bufferevent *bev);

/* While ON, between the client's lines and replies, the bufferevent can
 * go and the trickle keep its few bytes itself (throttle.h, "Lent"):
 * shape_lend, then the owner frees the bufferevent without closing the
 * socket. When the trickle has news (a whole line, the output gone, EOF,
 * an error, a timeout; the budget spent) it calls wake(arg), which must
 * make a bufferevent on the socket and shape_join it (or close the
 * client); the news then comes through that bufferevent. False: not
 * lendable now (shape_lendable) or no memory; nothing changed. */
bool shape_lend(struct shape *sh);
bool shape_lendable(const struct shape *sh);
bool shape_lent(const struct shape *sh);
/* Output bytes a lent trickle has still to send (0 when not lent). */
size_t shape_lent_output(const struct shape *sh);

#endif
