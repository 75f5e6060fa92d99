/*
 * store: the facade over the store implementations (see store.h).
 *
 * Exports store_open_lmdb, store_open_redis, store_close,
 * store_reputation, store_record, store_pass_check, store_pass_grant,
 * store_async, store_lookup_start, store_lookup_cancel.
 *
 * struct store is the ops table, the implementation's handle and the
 * half-life (the answer's arithmetic is done here, so both stores answer
 * alike). A look-up is a small struct store_lookup owned by the caller
 * until its callback runs or it is cancelled (store_close frees those
 * still live, without calling back): it holds the caller's
 * callback and the implementation's handle, and frees itself before
 * calling back (the callback may start another look-up or close the
 * session).
 *
 * Rejected: the implementations calling shared helpers in this file (the
 * facade would sit both above and below them); one struct with an
 * `if (redis)` branch per function (how it was: every change touched both
 * paths at once).
 */
#include "store.h"

#include <stdlib.h>
#include <sys/queue.h>

#include "log.h"
#include "mstime.h"
#include "store_lmdb.h"
#include "store_ops.h"
#include "store_redis.h"

struct store_lookup {
	TAILQ_ENTRY(store_lookup) link; /* in st->live until done or cancel */
	struct store *st;
	void *handle; /* the implementation's */
	store_lookup_cb *cb;
	void *arg;
};

struct store {
	const struct store_ops *ops;
	void *impl;
	long halflife_ms;
	TAILQ_HEAD(, store_lookup) live; /* freed by store_close */
};

static struct store *store_wrap(const struct store_ops *ops, void *impl,
				long halflife_ms)
{
	if (!impl)
		return NULL;
	struct store *st = calloc(1, sizeof *st);
	if (!st) {
		log_err("store: out of memory: running without reputation");
		ops->close(impl);
		return NULL;
	}
	st->ops = ops;
	st->impl = impl;
	st->halflife_ms = halflife_ms;
	TAILQ_INIT(&st->live);
	return st;
}

struct store *store_open_lmdb(const char *dir, struct workq *wq,
			      long halflife_ms, unsigned long long map_size)
{
	return store_wrap(&store_lmdb_ops,
			  store_lmdb_open(dir, wq, halflife_ms, map_size),
			  halflife_ms);
}

struct store *store_open_redis(struct event_base *base,
			       const struct endpoint *server,
			       const char *prefix, long timeout_ms,
			       long halflife_ms)
{
	return store_wrap(&store_redis_ops,
			  store_redis_open(base, server, prefix, timeout_ms,
					   halflife_ms),
			  halflife_ms);
}

void store_close(struct store *st)
{
	struct store_lookup *l;

	if (!st)
		return;
	/* Look-ups still live end without their callback (as the
	 * implementation's close promises), and their handles with them. */
	while ((l = TAILQ_FIRST(&st->live))) {
		TAILQ_REMOVE(&st->live, l, link);
		st->ops->cancel(st->impl, l->handle);
		free(l);
	}
	st->ops->close(st->impl);
	free(st);
}

/* The records as an answer, at now. */
static struct store_answer store_answer_of(const struct store *st,
					   const struct store_records *r)
{
	struct store_answer a = { 0, false };
	long long now = mstime_real();

	a.reputation = reputation_combine(r->have_host ? &r->host : NULL,
					  r->have_net ? &r->net : NULL, now,
					  st->halflife_ms);
	a.pass = r->have_pass && reputation_passed(r->pass_expires_ms, now);
	return a;
}

/* The synchronous read; false: answer "unknown". */
static bool store_read(struct store *st, const struct sockaddr *addr,
		       struct store_answer *a)
{
	struct ipaddr ip;
	struct store_records r = { 0 };

	if (!st || !st->ops->read || !ipaddr_from_sockaddr(addr, &ip) ||
	    !st->ops->read(st->impl, &ip, &r))
		return false;
	*a = store_answer_of(st, &r);
	return true;
}

double store_reputation(struct store *st, const struct sockaddr *addr)
{
	struct store_answer a;

	return store_read(st, addr, &a) ? a.reputation : 0;
}

bool store_pass_check(struct store *st, const struct sockaddr *addr)
{
	struct store_answer a;

	return store_read(st, addr, &a) && a.pass;
}

void store_record(struct store *st, const struct sockaddr *addr,
		  enum reputation_event ev)
{
	struct ipaddr ip;
	double good, bad;

	if (!st || !reputation_weights(ev, &good, &bad) ||
	    !ipaddr_from_sockaddr(addr, &ip))
		return;
	st->ops->add(st->impl, &ip, good, bad, mstime_real());
}

void store_pass_grant(struct store *st, const struct sockaddr *addr,
		      long ttl_ms)
{
	struct ipaddr ip;

	if (!st || ttl_ms <= 0 || !ipaddr_from_sockaddr(addr, &ip))
		return;
	st->ops->pass(st->impl, &ip, mstime_real() + ttl_ms, ttl_ms);
}

bool store_async(const struct store *st)
{
	return st && st->ops->lookup;
}

static void store_lookup_done_cb(void *arg, const struct store_records *r)
{
	struct store_lookup *l = arg;
	struct store_answer a = { 0, false };
	store_lookup_cb *cb = l->cb;
	void *cb_arg = l->arg;

	if (r)
		a = store_answer_of(l->st, r);
	TAILQ_REMOVE(&l->st->live, l, link);
	free(l);
	cb(cb_arg, &a);
}

struct store_lookup *store_lookup_start(struct store *st,
					const struct sockaddr *addr,
					store_lookup_cb *cb, void *arg)
{
	struct ipaddr ip;

	if (!store_async(st) || !cb || !ipaddr_from_sockaddr(addr, &ip))
		return NULL;
	struct store_lookup *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->st = st;
	l->cb = cb;
	l->arg = arg;
	l->handle = st->ops->lookup(st->impl, &ip, store_lookup_done_cb, l);
	if (!l->handle) {
		free(l);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&st->live, l, link);
	return l;
}

void store_lookup_cancel(struct store_lookup *l)
{
	if (!l)
		return;
	TAILQ_REMOVE(&l->st->live, l, link);
	l->st->ops->cancel(l->st->impl, l->handle);
	free(l);
}
