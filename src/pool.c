/*
 * pool: backend connections of one worker (see pool.h).
 *
 * Counting: "open" is every connection that exists on our side, from the
 * connect() to the close after QUIT, so the cap holds as the mail server
 * sees it. Keeping connections warm: the pool tops itself up to its cap
 * whenever there are fewer open than backend_pool_size, unless the mail
 * server is failing, in which case one probe connection is tried after an
 * exponential back-off (100 ms doubling to 10 s).
 *
 * Greeting only: with backend_xclient, every borrower's first command on a
 * new connection is XCLIENT, which the server answers with a new greeting
 * and which an EHLO must follow anyway (RFC-wise XCLIENT_README; Postfix
 * takes XCLIENT before any EHLO). So once a connection's EHLO has shown
 * what the server offers and a borrower has given a connection back in
 * good order (a server that breaks right after its EHLO teaches nothing),
 * the next ones open with the greeting alone and those capabilities
 * (backend_open's assume): one round trip and one EHLO less for the server
 * per connection, which under Postfix's usual setting is per message. Not
 * with backend_tls (STARTTLS needs the EHLO) nor when the EHLO did not
 * offer XCLIENT. The first error a connection gets before any EHLO of its
 * own ends that for the worker's life (a server that wants EHLO first, or
 * no longer allows XCLIENT): one line in the log.
 *
 * Identity: a connection whose last EHLO (after XCLIENT) still offered
 * XCLIENT may serve any client; one that did not carries one client only
 * and is closed when given back (Postfix re-checks XCLIENT authorization
 * against the new client address). The pool decides reuse from what the
 * server said (backend_caps), never from a setting alone; the borrower
 * decides whether the identity in force is the one it needs.
 *
 * Ownership: each connection has one struct pool_conn (the pool's record
 * of it: list link, lease, uses), which is the arg of its backend hooks
 * and is freed in the closed hook. A lease points at its conn while it is
 * ASSIGNED or HELD, and the conn back at the lease.
 *
 * Rejected: the borrower setting handlers on the connection itself (it
 * had to know the connection's insides, and a failure could reach a
 * borrower whose lease had ended); the pool lending struct backend with a
 * "lent" flag on it (the pool's bookkeeping spread into backend.c).
 */
#include "pool.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"

#define POOL_BACKOFF_MIN_MS 100
#define POOL_BACKOFF_MAX_MS 10000
/* Doublings of the back-off: 100 ms << 7 is past the 10 s maximum. */
#define POOL_BACKOFF_MAX_SHIFT 7
#define POOL_MAX_USES 50    /* recycle well before Postfix's junk-command limit (100 RSETs) */
#define POOL_MAX_ERRORS 5   /* below smtpd_soft_error_limit (10) */

struct pool_conn {
	TAILQ_ENTRY(pool_conn) link;
	struct pool *pool;
	struct backend *b;
	struct pool_lease *lease; /* ASSIGNED or HELD; NULL: in the pool */
	unsigned uses;            /* leases so far */
};

/* Whether new connections may open with the greeting alone (see the top). */
enum pool_greeting {
	POOL_GREETING_UNKNOWN, /* no opening EHLO with XCLIENT seen yet */
	POOL_GREETING_SEEN,    /* one seen; no lease has ended cleanly since */
	POOL_GREETING_ONLY,    /* new connections open with the greeting alone */
	POOL_GREETING_OFF,     /* one so opened was refused: EHLO first for good */
};

struct pool {
	struct event_base *base;
	const struct config *cfg;
	SSL_CTX *tls_client;      /* for backend_tls; NULL without */
	struct backend_caps known; /* the last opening EHLO's (not UNKNOWN) */
	enum pool_greeting greeting; /* pool_set_greeting only */
	bool smtputf8;            /* the mail server's last EHLO offered it */
	unsigned long long size_max; /* its SIZE; 0: none given */
	TAILQ_HEAD(, pool_conn) all;
	TAILQ_HEAD(, pool_lease) waiting;
	unsigned n_waiting;  /* leases in waiting: the gauge, without a walk */
	unsigned open;       /* every backend that exists */
	unsigned connecting; /* not yet ready */
	unsigned failures;   /* consecutive failed opens */
	unsigned long_leases; /* long leases holding a connection */
	bool down;           /* last open failed and nothing is ready */
	bool shutting_down;
	struct event *fill_ev;    /* deferred top-up */
	struct event *backoff_ev; /* next probe while down */
	struct event *wanted_ev;  /* tell long leases that others wait */
};

static void pool_fill(struct pool *p);
static void pool_serve(struct pool *p);

/* The one setter: OFF is final, and the only change worth a log line. */
static void pool_set_greeting(struct pool *p, enum pool_greeting g)
{
	if (p->greeting == g || p->greeting == POOL_GREETING_OFF)
		return;
	p->greeting = g;
	if (g == POOL_GREETING_OFF)
		log_warn("pool: the mail server refused a command on a connection "
			 "opened without EHLO; every connection sends EHLO first "
			 "from now on");
}
static const struct backend_hooks pool_hooks;

static void pool_fill_cb(evutil_socket_t fd, short what, void *arg)
{
	pool_fill(arg);
}

/* A long lease's count ends with the lease, whichever way it ends.
 * Whether it counted: a long lease waiting for the lanes' share to free
 * (pool_serve) may now be served. */
static bool pool_lease_ended(struct pool_lease *l)
{
	if (!l->long_lease)
		return false;
	l->long_lease = false;
	l->pool->long_leases--;
	return true;
}

/* A long lease in line while max_long of them hold connections: it waits
 * for one of those to end, not merely for a connection. */
static bool pool_share_taken(const struct pool *p, const struct pool_lease *l)
{
	return l->max_long > 0 && p->long_leases >= l->max_long;
}

#define POOL_WANTED_MAX 64 /* long leases asked per turn */

/* Borrowers wait in line: ask the long leases to give back what they
 * only hold for their client (pool fairness); each decides. At most
 * POOL_WANTED_MAX per turn; the list is copied first because a borrower
 * may return its lease from inside. */
static void pool_wanted_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	struct pool_lease *ask[POOL_WANTED_MAX];
	size_t n = 0;
	struct pool_conn *c;
	TAILQ_FOREACH(c, &p->all, link) {
		if (n == POOL_WANTED_MAX)
			break;
		struct pool_lease *l = c->lease;
		if (l && l->state == POOL_LEASE_HELD && l->long_lease &&
		    l->cbs->wanted)
			ask[n++] = l;
	}
	for (size_t i = 0; i < n; i++)
		if (ask[i]->state == POOL_LEASE_HELD && ask[i]->long_lease)
			ask[i]->cbs->wanted(ask[i]->borrower);
}

static void pool_schedule_fill(struct pool *p)
{
	if (!p->shutting_down)
		event_active(p->fill_ev, 0, 0);
}

struct pool *pool_new(struct event_base *base, const struct config *cfg,
		      SSL_CTX *tls_client)
{
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->base = base;
	p->cfg = cfg;
	p->tls_client = tls_client;
	TAILQ_INIT(&p->all);
	TAILQ_INIT(&p->waiting);
	p->fill_ev = event_new(p->base, -1, 0, pool_fill_cb, p);
	p->backoff_ev = evtimer_new(p->base, pool_fill_cb, p);
	p->wanted_ev = event_new(p->base, -1, 0, pool_wanted_cb, p);
	if (!p->fill_ev || !p->backoff_ev || !p->wanted_ev) {
		pool_free(p);
		return NULL;
	}
	pool_schedule_fill(p);
	return p;
}

unsigned pool_open_count(const struct pool *p)
{
	return p->open;
}

static bool pool_lendable(const struct pool_conn *c)
{
	return !c->lease && backend_idle(c->b);
}

static unsigned pool_idle_count(const struct pool *p)
{
	unsigned n = 0;
	const struct pool_conn *c;
	TAILQ_FOREACH(c, &p->all, link)
		n += pool_lendable(c);
	return n;
}

static void pool_update_gauges(const struct pool *p)
{
	static long long last_open, last_idle, last_wait, last_long;
	long long open = p->open, idle = pool_idle_count(p), wait = p->n_waiting;
	metrics_add(METRIC_POOL_OPEN, open - last_open);
	metrics_add(METRIC_POOL_IDLE, idle - last_idle);
	metrics_add(METRIC_POOL_WAITING, wait - last_wait);
	metrics_add(METRIC_LANES_ACTIVE, (long long)p->long_leases - last_long);
	last_long = p->long_leases;
	last_open = open;
	last_idle = idle;
	last_wait = wait;
}

/* The lease's timer: its deadline in line, or the delivery of what
 * pool_assign chose. */
static void pool_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_lease *l = arg;
	struct pool *p = l->pool;
	if (l->state == POOL_LEASE_WAITING) {
		/* Timer expired while waiting in line. */
		TAILQ_REMOVE(&p->waiting, l, link);
		p->n_waiting--;
		l->state = POOL_LEASE_ASSIGNED;
		l->conn = NULL;
		l->err = REPLY_BACKEND_BUSY;
		if (l->max_long == 0) {
			metrics_inc(METRIC_POOL_WAIT_TIMEOUTS);
			log_warn("pool: checkout timed out open=%u", p->open);
		}
		/* A lane not had in time is no fault: its session goes the
		 * buffered way (counted there). */
	}
	struct pool_conn *c = l->conn;
	if (c && !backend_ready(c->b)) {
		/* Died between the choice and the delivery. */
		c->lease = NULL;
		c = NULL;
		l->err = REPLY_BACKEND_LOST;
	}
	l->conn = c;
	l->state = c ? POOL_LEASE_HELD : POOL_LEASE_OVER;
	if (!c && pool_lease_ended(l))
		pool_serve(p);
	pool_update_gauges(p);
	l->cbs->ready(l->borrower, c ? c->b : NULL, c ? REPLY_OK : l->err);
}

/* Chooses c (or an error) for l; delivered on the next loop turn. */
static void pool_assign(struct pool *p, struct pool_lease *l,
			struct pool_conn *c, enum reply_id err)
{
	if (l->state == POOL_LEASE_WAITING) {
		TAILQ_REMOVE(&p->waiting, l, link);
		p->n_waiting--;
	}
	event_del(&l->timer);
	l->state = POOL_LEASE_ASSIGNED;
	l->conn = c;
	l->err = err;
	if (c) {
		c->lease = l;
		c->uses++;
		backend_set_lent(c->b, true);
		metrics_inc(METRIC_POOL_CHECKOUTS);
		if (l->max_long > 0) {
			l->long_lease = true;
			p->long_leases++;
		}
	}
	event_active(&l->timer, 0, 0);
}

/* An idle connection for prefer: one already holding that identity, else
 * one that can take any identity. */
static struct pool_conn *pool_find_idle(struct pool *p, unsigned long long prefer)
{
	struct pool_conn *c, *any = NULL;
	TAILQ_FOREACH(c, &p->all, link) {
		if (!pool_lendable(c))
			continue;
		unsigned long long id = backend_identity(c->b);
		if (prefer && id == prefer)
			return c;
		if (!any && (id == 0 || backend_caps(c->b)->xclient ||
			     !p->cfg->backend_xclient))
			any = c;
	}
	return any;
}

/* Serves waiting leases in order from idle connections; a long lease
 * whose share is taken keeps its place and lets the next one by. */
static void pool_serve(struct pool *p)
{
	struct pool_lease *l, *next;
	for (l = TAILQ_FIRST(&p->waiting); l; l = next) {
		next = TAILQ_NEXT(l, link);
		if (pool_share_taken(p, l))
			continue;
		struct pool_conn *c = pool_find_idle(p, l->prefer);
		if (!c)
			break;
		pool_assign(p, l, c, REPLY_OK);
	}
	pool_update_gauges(p);
}

static void pool_fail_waiters(struct pool *p, enum reply_id err)
{
	struct pool_lease *l;
	while ((l = TAILQ_FIRST(&p->waiting)))
		pool_assign(p, l, NULL, err);
}

static void pool_open_one(struct pool *p)
{
	struct pool_conn *c = calloc(1, sizeof *c);
	if (c) {
		c->pool = p;
		c->b = backend_open(p->base, p->cfg, p->tls_client,
				    p->greeting == POOL_GREETING_ONLY ? &p->known : NULL,
				    &pool_hooks, c);
	}
	if (!c || !c->b) {
		free(c);
		log_err("pool: out of memory opening a connection");
		return;
	}
	TAILQ_INSERT_TAIL(&p->all, c, link);
	p->open++;
	p->connecting++;
}

static void pool_fill(struct pool *p)
{
	unsigned cap = p->cfg->backend_pool_size;
	if (p->shutting_down)
		return;
	if (p->down) {
		/* One probe at a time while the server is failing. */
		if (p->connecting == 0 && !evtimer_pending(p->backoff_ev, NULL) &&
		    p->open < cap)
			pool_open_one(p);
		pool_update_gauges(p);
		return;
	}
	while (p->open < cap) {
		unsigned before = p->open;
		pool_open_one(p);
		if (p->open == before)
			break;
	}
	pool_update_gauges(p);
}

static void pool_lend_as(struct pool *p, struct pool_lease *l,
			 unsigned long long prefer, unsigned max_long,
			 long timeout_ms, const struct pool_borrower *cbs,
			 void *borrower)
{
	memset(l, 0, sizeof *l);
	l->pool = p;
	l->cbs = cbs;
	l->borrower = borrower;
	l->prefer = prefer;
	l->max_long = max_long;
	l->state = POOL_LEASE_WAITING;
	evtimer_assign(&l->timer, p->base, pool_deliver_cb, l);
	struct pool_conn *c = pool_share_taken(p, l) ? NULL : pool_find_idle(p, prefer);
	if (c) {
		l->state = POOL_LEASE_OVER; /* not in the line */
		pool_assign(p, l, c, REPLY_OK);
		return;
	}
	if (p->down || p->shutting_down) {
		l->state = POOL_LEASE_OVER;
		pool_assign(p, l, NULL, p->down ? REPLY_BACKEND_UNAVAILABLE
						: REPLY_SHUTDOWN);
		return;
	}
	TAILQ_INSERT_TAIL(&p->waiting, l, link);
	p->n_waiting++;
	struct timeval tv = mstime_tv(timeout_ms);
	evtimer_add(&l->timer, &tv);
	/* Lanes give way to the others in line (recipient checks, replays of
	 * slow and shaped clients), not to another lane: one lane traded for
	 * another would only send the first client the buffered way. */
	if (p->long_leases > 0 && max_long == 0)
		event_active(p->wanted_ev, 0, 0);
	pool_update_gauges(p);
	pool_schedule_fill(p);
}

void pool_lend(struct pool *p, struct pool_lease *l, unsigned long long prefer,
	       long timeout_ms, const struct pool_borrower *cbs,
	       void *borrower)
{
	pool_lend_as(p, l, prefer, 0, timeout_ms, cbs, borrower);
}

bool pool_lend_long(struct pool *p, struct pool_lease *l,
		    unsigned long long prefer, unsigned max_long, long timeout_ms,
		    const struct pool_borrower *cbs, void *borrower)
{
	if (p->down || p->shutting_down || max_long == 0)
		return false;
	pool_lend_as(p, l, prefer, max_long, timeout_ms, cbs, borrower);
	return true;
}

struct backend *pool_lease_backend(const struct pool_lease *l)
{
	return l->state == POOL_LEASE_HELD && l->conn ? l->conn->b : NULL;
}

/* A held connection given back: kept for the next lease or closed. */
static void pool_take_back(struct pool *p, struct pool_conn *c, bool clean)
{
	struct backend *b = c->b;
	c->lease = NULL;
	if (clean && p->greeting == POOL_GREETING_SEEN)
		pool_set_greeting(p, POOL_GREETING_ONLY);
	bool keep = clean && backend_idle(b) && !p->shutting_down &&
		    c->uses < POOL_MAX_USES && backend_errors(b) < POOL_MAX_ERRORS &&
		    (backend_caps(b)->xclient || !p->cfg->backend_xclient);
	if (!keep) {
		/* backend_close ends in the closed hook, which tops up. */
		backend_close(b, clean && backend_ready(b));
		return;
	}
	backend_set_lent(b, false);
	pool_serve(p);
}

void pool_return(struct pool_lease *l, bool clean)
{
	struct pool *p = l->pool;
	struct pool_conn *c = l->conn;
	bool share_freed = p && pool_lease_ended(l);

	switch (l->state) {
	case POOL_LEASE_OVER:
		return;
	case POOL_LEASE_WAITING:
		TAILQ_REMOVE(&p->waiting, l, link);
		p->n_waiting--;
		break;
	case POOL_LEASE_ASSIGNED:
		/* Chosen, never delivered: back as it was. */
		if (c) {
			c->lease = NULL;
			backend_set_lent(c->b, false);
			pool_serve(p);
		}
		break;
	case POOL_LEASE_HELD:
		if (c)
			pool_take_back(p, c, clean);
		break;
	}
	event_del(&l->timer);
	l->conn = NULL;
	l->state = POOL_LEASE_OVER;
	if (share_freed)
		pool_serve(p);
	pool_update_gauges(p);
}

void pool_hand_over(struct pool_lease *from, struct pool_lease *to,
		    const struct pool_borrower *cbs, void *borrower)
{
	struct pool_conn *c = from->conn;

	memset(to, 0, sizeof *to);
	to->pool = from->pool;
	to->cbs = cbs;
	to->borrower = borrower;
	to->prefer = from->prefer;
	to->max_long = from->max_long;
	evtimer_assign(&to->timer, to->pool->base, pool_deliver_cb, to);
	if (from->state != POOL_LEASE_HELD || !c) {
		/* Nothing held: to starts over, as an ended lease. */
		pool_lease_ended(from);
		to->state = POOL_LEASE_OVER;
		return;
	}
	to->long_lease = from->long_lease; /* the count goes along */
	from->long_lease = false;
	event_del(&from->timer);
	from->conn = NULL;
	from->state = POOL_LEASE_OVER;
	c->lease = to;
	to->conn = c;
	to->state = POOL_LEASE_HELD;
}

/* ---- the backend's hooks --------------------------------------------- */

static void pool_conn_ready(void *arg, struct backend *b)
{
	struct pool_conn *c = arg;
	struct pool *p = c->pool;
	p->connecting--;
	p->failures = 0;
	if (p->down)
		log_info("pool: mail server is back");
	p->down = false;
	p->smtputf8 = backend_caps(b)->smtputf8;
	p->size_max = backend_caps(b)->size_max;
	if (!backend_caps_assumed(b)) {
		p->known = *backend_caps(b);
		if (p->greeting == POOL_GREETING_UNKNOWN && p->known.xclient &&
		    p->cfg->backend_xclient && !p->cfg->backend_tls)
			pool_set_greeting(p, POOL_GREETING_SEEN);
	}
	pool_serve(p);
	pool_schedule_fill(p);
}

static void pool_conn_failed(void *arg, struct backend *b)
{
	struct pool_conn *c = arg;
	struct pool_lease *l = c->lease;

	if (l && l->state == POOL_LEASE_HELD) {
		/* The borrower gives it back (pool_return), which closes. */
		l->cbs->failed(l->borrower, backend_fault(b),
			       backend_fail_reason(b));
		return;
	}
	/* In the pool, or chosen and not yet delivered (the delivery sees
	 * the fault and reports BACKEND_LOST). */
	backend_close(b, false);
}

static void pool_conn_drained(void *arg, struct backend *b)
{
	struct pool_conn *c = arg;
	struct pool_lease *l = c->lease;

	if (l && l->state == POOL_LEASE_HELD && l->cbs->drained)
		l->cbs->drained(l->borrower);
}

static void pool_conn_closed(void *arg, struct backend *b)
{
	struct pool_conn *c = arg;
	struct pool *p = c->pool;
	struct pool_lease *l = c->lease;

	if (l) {
		/* Chosen, not delivered yet: the delivery reports the loss. A
		 * held lease was told through failed and holds a dead
		 * connection until it returns it. */
		l->conn = NULL;
		l->err = REPLY_BACKEND_LOST;
		if (l->state == POOL_LEASE_HELD)
			l->state = POOL_LEASE_OVER;
	}
	if (backend_caps_assumed(b) && backend_errors(b) > 0)
		pool_set_greeting(p, POOL_GREETING_OFF);
	TAILQ_REMOVE(&p->all, c, link);
	p->open--;
	if (!backend_ready_seen(b))
		p->connecting--;
	/* A connection that failed before it was ever lent (refused, bad
	 * greeting, or broken right after its EHLO) says the server is not
	 * serving: back off, or a server that fails just after its handshake
	 * would be reconnected to in a loop (found by fuzz_session). An idle
	 * recycle is no failure. */
	enum backend_fault fault = backend_fault(b);
	bool unusable = !backend_ready_seen(b) ||
			(c->uses == 0 && fault != BACKEND_FAULT_NONE &&
			 fault != BACKEND_FAULT_IDLE);
	if (unusable && !p->shutting_down) {
		/* Failed before it was ever ready: the server is not answering.
		 * Connections opened together fail together: one step of
		 * back-off per probe, not per connection. */
		if (evtimer_pending(p->backoff_ev, NULL)) {
			free(c);
			pool_update_gauges(p);
			return;
		}
		unsigned shift = p->failures > POOL_BACKOFF_MAX_SHIFT
					 ? POOL_BACKOFF_MAX_SHIFT
					 : p->failures;
		p->failures++;
		long ms = POOL_BACKOFF_MIN_MS << shift;
		if (ms > POOL_BACKOFF_MAX_MS)
			ms = POOL_BACKOFF_MAX_MS;
		if (!p->down)
			log_warn("pool: mail server unavailable: %s; retrying with back-off",
				 backend_fail_reason(b));
		if (pool_idle_count(p) == 0) {
			p->down = true;
			pool_fail_waiters(p, REPLY_BACKEND_UNAVAILABLE);
		}
		struct timeval tv = mstime_tv(ms);
		evtimer_add(p->backoff_ev, &tv);
	}
	free(c);
	pool_update_gauges(p);
	pool_schedule_fill(p);
}

static const struct backend_hooks pool_hooks = {
	.ready = pool_conn_ready,
	.failed = pool_conn_failed,
	.drained = pool_conn_drained,
	.closed = pool_conn_closed,
};

void pool_shutdown(struct pool *p)
{
	p->shutting_down = true;
	pool_fail_waiters(p, REPLY_SHUTDOWN);
	struct pool_conn *c, *next;
	for (c = TAILQ_FIRST(&p->all); c; c = next) {
		next = TAILQ_NEXT(c, link);
		if (pool_lendable(c))
			backend_close(c->b, true);
	}
}

void pool_free(struct pool *p)
{
	if (p->fill_ev)
		event_free(p->fill_ev);
	if (p->backoff_ev)
		event_free(p->backoff_ev);
	if (p->wanted_ev)
		event_free(p->wanted_ev);
	free(p);
}

bool pool_backend_smtputf8(const struct pool *p)
{
	return p->smtputf8;
}

unsigned long long pool_size_limit(const struct pool *p)
{
	unsigned long long limit = p->cfg->message_size_limit;
	if (p->size_max && p->size_max < limit)
		limit = p->size_max;
	return limit;
}
