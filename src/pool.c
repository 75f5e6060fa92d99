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
 * Identity: a connection whose last EHLO (after XCLIENT) still offered
 * XCLIENT may serve any client; one that did not carries one client only
 * and is closed when given back (Postfix re-checks XCLIENT authorization
 * against the new client address). The decision is made per connection
 * by replay.c from what the server said, never from a setting.
 */
#include "pool.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#define POOL_BACKOFF_MIN_MS 100
#define POOL_BACKOFF_MAX_MS 10000
#define POOL_MAX_USES 50    /* recycle well before Postfix's junk-command limit (100 RSETs) */
#define POOL_MAX_ERRORS 5   /* below smtpd_soft_error_limit (10) */

struct pool {
	struct event_base *base;
	const struct config *cfg;
	SSL_CTX *tls_client;      /* for backend_tls; NULL without */
	bool smtputf8;            /* the mail server's last EHLO offered it */
	unsigned long long size_max; /* its SIZE; 0: none given */
	TAILQ_HEAD(, backend) all;
	TAILQ_HEAD(, pool_wait) waiting;
	unsigned open;       /* every backend that exists */
	unsigned connecting; /* not yet ready */
	unsigned failures;   /* consecutive failed opens */
	bool down;           /* last open failed and nothing is ready */
	bool shutting_down;
	struct event *fill_ev;    /* deferred top-up */
	struct event *backoff_ev; /* next probe while down */
};

static void pool_fill(struct pool *p);

static void pool_fill_cb(evutil_socket_t fd, short what, void *arg)
{
	pool_fill(arg);
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
	if (!p->fill_ev || !p->backoff_ev) {
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

static bool pool_lendable(const struct backend *b)
{
	return !b->lent && backend_idle(b);
}

static unsigned pool_idle_count(const struct pool *p)
{
	unsigned n = 0;
	const struct backend *b;
	TAILQ_FOREACH(b, &p->all, link)
		n += pool_lendable(b);
	return n;
}

static void pool_update_gauges(const struct pool *p)
{
	static long long last_open, last_idle, last_wait;
	long long open = p->open, idle = pool_idle_count(p), wait = 0;
	const struct pool_wait *w;
	TAILQ_FOREACH(w, &p->waiting, link)
		wait++;
	metrics_add(METRIC_POOL_OPEN, open - last_open);
	metrics_add(METRIC_POOL_IDLE, idle - last_idle);
	metrics_add(METRIC_POOL_WAITING, wait - last_wait);
	last_open = open;
	last_idle = idle;
	last_wait = wait;
}

static void pool_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_wait *w = arg;
	struct pool *p = w->pool;
	if (w->queued) {
		/* Timer expired while waiting in line. */
		TAILQ_REMOVE(&p->waiting, w, link);
		w->queued = false;
		w->err = REPLY_BACKEND_BUSY;
		metrics_inc(METRIC_POOL_WAIT_TIMEOUTS);
		log_warn("pool: checkout timed out open=%u", p->open);
	}
	w->active = false;
	struct backend *b = w->assigned;
	w->assigned = NULL;
	pool_update_gauges(p);
	if (b && b->state != BACKEND_READY) {
		/* Died between hand-over and delivery. */
		b->lent = false;
		b = NULL;
		w->err = REPLY_BACKEND_LOST;
	}
	w->cb(w->arg, b, b ? REPLY_OK : w->err);
}

/* Hands b (or an error) to w on the next loop turn. */
static void pool_assign(struct pool *p, struct pool_wait *w, struct backend *b,
			enum reply_id err)
{
	if (w->queued) {
		TAILQ_REMOVE(&p->waiting, w, link);
		w->queued = false;
	}
	event_del(&w->timer);
	w->assigned = b;
	w->err = err;
	if (b) {
		b->lent = true;
		b->uses++;
		metrics_inc(METRIC_POOL_CHECKOUTS);
	}
	event_active(&w->timer, 0, 0);
}

static struct backend *pool_find_idle(struct pool *p, unsigned long long identity)
{
	struct backend *b, *any = NULL;
	TAILQ_FOREACH(b, &p->all, link) {
		if (!pool_lendable(b))
			continue;
		if (identity && b->identity == identity)
			return b;
		if (!any && (b->identity == 0 || b->xclient || !p->cfg->backend_xclient))
			any = b;
	}
	return any;
}

/* Serves waiters in order from idle connections. */
static void pool_serve(struct pool *p)
{
	struct pool_wait *w;
	while ((w = TAILQ_FIRST(&p->waiting))) {
		struct backend *b = pool_find_idle(p, w->identity);
		if (!b)
			break;
		pool_assign(p, w, b, REPLY_OK);
	}
	pool_update_gauges(p);
}

static void pool_fail_waiters(struct pool *p, enum reply_id err)
{
	struct pool_wait *w;
	while ((w = TAILQ_FIRST(&p->waiting)))
		pool_assign(p, w, NULL, err);
}

static void pool_fill(struct pool *p)
{
	unsigned cap = p->cfg->backend_pool_size;
	if (p->shutting_down)
		return;
	if (p->down) {
		/* One probe at a time while the server is failing. */
		if (p->connecting == 0 && !evtimer_pending(p->backoff_ev, NULL) &&
		    p->open < cap) {
			struct backend *b = backend_open(p, p->base, p->cfg, p->tls_client);
			if (b) {
				TAILQ_INSERT_TAIL(&p->all, b, link);
				p->open++;
				p->connecting++;
			}
		}
		pool_update_gauges(p);
		return;
	}
	while (p->open < cap) {
		struct backend *b = backend_open(p, p->base, p->cfg, p->tls_client);
		if (!b) {
			log_err("pool: out of memory opening a connection");
			break;
		}
		TAILQ_INSERT_TAIL(&p->all, b, link);
		p->open++;
		p->connecting++;
	}
	pool_update_gauges(p);
}

void pool_checkout(struct pool *p, struct pool_wait *w,
		   unsigned long long identity, long timeout_ms,
		   pool_ready_fn cb, void *arg)
{
	memset(w, 0, sizeof *w);
	w->cb = cb;
	w->arg = arg;
	w->pool = p;
	w->identity = identity;
	w->active = true;
	evtimer_assign(&w->timer, p->base, pool_deliver_cb, w);
	struct backend *b = pool_find_idle(p, identity);
	if (b) {
		pool_assign(p, w, b, REPLY_OK);
		return;
	}
	if (p->down || p->shutting_down) {
		pool_assign(p, w, NULL, p->down ? REPLY_BACKEND_UNAVAILABLE
						: REPLY_SHUTDOWN);
		return;
	}
	TAILQ_INSERT_TAIL(&p->waiting, w, link);
	w->queued = true;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evtimer_add(&w->timer, &tv);
	pool_update_gauges(p);
	pool_schedule_fill(p);
}

void pool_cancel(struct pool *p, struct pool_wait *w)
{
	if (!w->active)
		return;
	w->active = false;
	event_del(&w->timer);
	if (w->queued) {
		TAILQ_REMOVE(&p->waiting, w, link);
		w->queued = false;
	}
	if (w->assigned) {
		struct backend *b = w->assigned;
		w->assigned = NULL;
		b->lent = false;
		pool_serve(p);
	}
	pool_update_gauges(p);
}

void pool_release(struct pool *p, struct backend *b, bool clean)
{
	b->lent = false;
	b->on_fail = NULL;
	b->on_drain = NULL;
	b->owner = NULL;
	bool keep = clean && backend_idle(b) && !p->shutting_down &&
		    b->uses < POOL_MAX_USES && b->errors < POOL_MAX_ERRORS &&
		    (b->xclient || !p->cfg->backend_xclient);
	if (!keep) {
		/* backend_close ends in pool_backend_closed, which tops up. */
		backend_close(b, clean && b->state == BACKEND_READY);
		return;
	}
	backend_set_idle(b);
	pool_serve(p);
}

void pool_backend_ready(struct pool *p, struct backend *b)
{
	p->connecting--;
	p->failures = 0;
	if (p->down)
		log_info("pool: mail server is back");
	p->down = false;
	p->smtputf8 = b->smtputf8;
	p->size_max = b->size_max;
	pool_serve(p);
	pool_schedule_fill(p);
}

void pool_backend_failed(struct pool *p, struct backend *b)
{
	backend_close(b, false);
}

void pool_backend_closed(struct pool *p, struct backend *b)
{
	TAILQ_REMOVE(&p->all, b, link);
	p->open--;
	if (!b->ready_seen)
		p->connecting--;
	/* A connection that failed before it was ever lent (refused, bad
	 * greeting, or broken right after its EHLO) says the server is not
	 * serving: back off, or a server that fails just after its handshake
	 * would be reconnected to in a loop (found by fuzz_session). */
	bool unusable = !b->ready_seen ||
			(b->uses == 0 && b->fail_reason[0] &&
			 strcmp(b->fail_reason, "idle recycle") != 0);
	if (unusable && !p->shutting_down) {
		/* Failed before it was ever ready: the server is not answering.
		 * Connections opened together fail together: one step of
		 * back-off per probe, not per connection. */
		if (evtimer_pending(p->backoff_ev, NULL)) {
			pool_update_gauges(p);
			return;
		}
		unsigned shift = p->failures > 7 ? 7 : p->failures;
		p->failures++;
		long ms = POOL_BACKOFF_MIN_MS << shift;
		if (ms > POOL_BACKOFF_MAX_MS)
			ms = POOL_BACKOFF_MAX_MS;
		if (!p->down)
			log_warn("pool: mail server unavailable: %s; retrying with back-off",
				 b->fail_reason);
		if (pool_idle_count(p) == 0) {
			p->down = true;
			pool_fail_waiters(p, REPLY_BACKEND_UNAVAILABLE);
		}
		struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
		evtimer_add(p->backoff_ev, &tv);
	}
	pool_update_gauges(p);
	pool_schedule_fill(p);
}

void pool_shutdown(struct pool *p)
{
	p->shutting_down = true;
	pool_fail_waiters(p, REPLY_SHUTDOWN);
	struct backend *b, *next;
	for (b = TAILQ_FIRST(&p->all); b; b = next) {
		next = TAILQ_NEXT(b, link);
		if (pool_lendable(b))
			backend_close(b, true);
	}
}

void pool_free(struct pool *p)
{
	if (p->fill_ev)
		event_free(p->fill_ev);
	if (p->backoff_ev)
		event_free(p->backoff_ev);
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
