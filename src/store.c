/*
 * store: the facade over the store implementations (see store.h).
 *
 * Exports store_open_lmdb, store_open_redis, store_close,
 * store_reputation, store_record, store_pass_check, store_pass_grant,
 * store_pass_revoke, store_async, store_lookup_start, store_lookup_cancel.
 *
 * struct store is the ops table, the implementation's handle and the
 * parameters (keys and the answer's arithmetic are done here, so both
 * stores key and answer alike). A look-up is a small struct store_lookup owned by the caller
 * until its callback runs or it is cancelled: it holds the caller's
 * callback and the implementation's handle, and frees itself before
 * calling back (the callback may start another look-up or close the
 * session). The store lists the live ones: store_close frees those the
 * implementation dropped without a callback.
 *
 * Rejected: the implementations calling shared helpers in this file (the
 * facade would sit both above and below them); one struct with an
 * `if (redis)` branch per function (how it was: every change touched both
 * paths at once).
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/queue.h>
#include <string.h>

#include "log.h"
#include "mstime.h"
#include "store_lmdb.h"
#include "store_ops.h"
#include "store_redis.h"

struct store_lookup;
TAILQ_HEAD(store_lookup_list, store_lookup);

struct store {
	const struct store_ops *ops;
	void *impl;
	struct store_params p;
	struct store_lookup_list live; /* look-ups started, not yet ended */
};

struct store_lookup {
	TAILQ_ENTRY(store_lookup) link; /* in st->live */
	struct store *st;
	void *handle; /* the implementation's */
	store_lookup_cb *cb;
	void *arg;
};

static struct store *store_wrap(const struct store_ops *ops, void *impl,
				const struct store_params *p)
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
	st->p = *p;
	TAILQ_INIT(&st->live);
	return st;
}

struct store *store_open_lmdb(const char *dir, struct event_base *base,
			      struct workq *wq, const struct store_params *p,
			      unsigned long long map_size, long write_gap_ms)
{
	return store_wrap(&store_lmdb_ops,
			  store_lmdb_open(dir, base, wq, p->rep.halflife_ms,
					  map_size, write_gap_ms), p);
}

struct store *store_open_redis(struct event_base *base,
			       const struct endpoint *server,
			       const char *prefix, long timeout_ms,
			       const struct store_params *p)
{
	return store_wrap(&store_redis_ops,
			  store_redis_open(base, server, prefix, timeout_ms,
					   p->rep.halflife_ms),
			  p);
}

void store_close(struct store *st)
{
	if (!st)
		return;
	st->ops->close(st->impl); /* live look-ups end without a callback */
	struct store_lookup *l;
	while ((l = TAILQ_FIRST(&st->live))) {
		TAILQ_REMOVE(&st->live, l, link);
		free(l);
	}
	free(st);
}

/* The records as an answer, at now. */
static struct store_answer store_answer_of(const struct store *st,
					   const struct store_records *r)
{
	struct store_answer a = { { 0, 0, false, false }, false };
	long long now = mstime_real();

	reputation_weigh(r->have_host ? &r->host : NULL,
			 r->have_net ? &r->net : NULL, now, &st->p.rep,
			 &a.verdict);
	a.pass = r->have_pass && reputation_passed(r->pass_expires_ms, now);
	return a;
}

/* The client's and its network's keys; false for anything not IP. */
static bool store_keys(const struct store *st, const struct sockaddr *addr,
		       struct reputation_keys *k)
{
	struct ipaddr ip;

	return st && ipaddr_from_sockaddr(addr, &ip) &&
	       reputation_keys(&ip, &st->p.prefixes, k);
}

/* The synchronous read; false: answer "unknown". */
static bool store_read(struct store *st, const struct sockaddr *addr,
		       struct store_answer *a)
{
	struct reputation_keys k;
	struct store_records r = { 0 };

	if (!st || !st->ops->read || !store_keys(st, addr, &k) ||
	    !st->ops->read(st->impl, &k, &r))
		return false;
	*a = store_answer_of(st, &r);
	return true;
}

void store_reputation(struct store *st, const struct sockaddr *addr,
		      struct reputation_verdict *out)
{
	struct store_answer a;

	if (store_read(st, addr, &a))
		*out = a.verdict;
	else
		*out = (struct reputation_verdict){ 0, 0, false, false };
}

bool store_pass_check(struct store *st, const struct sockaddr *addr)
{
	struct store_answer a;

	return store_read(st, addr, &a) && a.pass;
}

void store_record(struct store *st, const struct sockaddr *addr,
		  enum reputation_event ev)
{
	struct reputation_keys k;
	struct reputation_delta d;

	if (!reputation_delta(ev, &d) || !store_keys(st, addr, &k))
		return;
	st->ops->apply(st->impl, &k, &d, mstime_real());
}

void store_pass_grant(struct store *st, const struct sockaddr *addr,
		      long ttl_ms)
{
	struct reputation_keys k;

	if (ttl_ms <= 0 || !store_keys(st, addr, &k))
		return;
	st->ops->pass(st->impl, &k, mstime_real() + ttl_ms, ttl_ms);
}

void store_pass_revoke(struct store *st, const struct sockaddr *addr)
{
	struct reputation_keys k;

	if (store_keys(st, addr, &k))
		st->ops->revoke(st->impl, &k);
}

bool store_async(const struct store *st)
{
	return st && st->ops->lookup;
}

static void store_lookup_done_cb(void *arg, const struct store_records *r)
{
	struct store_lookup *l = arg;
	struct store_answer a = { { 0, 0, false, false }, false };
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
	struct reputation_keys k;

	if (!store_async(st) || !cb || !store_keys(st, addr, &k))
		return NULL;
	struct store_lookup *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->st = st;
	l->cb = cb;
	l->arg = arg;
	l->handle = st->ops->lookup(st->impl, &k, store_lookup_done_cb, l);
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
	l->st->ops->cancel(l->st->impl, l->handle);
	TAILQ_REMOVE(&l->st->live, l, link);
	free(l);
}

/* ---- administration -------------------------------------------------------- */

static const struct store_admin_ops *store_admin(const struct store_where *w)
{
	return w->redis ? &store_redis_admin : &store_lmdb_admin;
}

int store_acl_load(const struct store_where *w, struct acl_entry *out, size_t cap,
		   size_t *n, char *err, size_t errcap)
{
	return store_admin(w)->acl_load(w, out, cap, n, mstime_real(), err, errcap);
}

int store_acl_put(const struct store_where *w, const struct acl_entry *e, char *err,
		  size_t errcap)
{
	return store_admin(w)->acl_put(w, e, mstime_real(), err, errcap);
}

int store_acl_del(const struct store_where *w, const struct control_net *net,
		  bool *found, char *err, size_t errcap)
{
	return store_admin(w)->acl_del(w, net, found, err, errcap);
}

int store_forget(const struct store_where *w, const struct control_net *addr,
		 bool *found, char *err, size_t errcap)
{
	struct ipaddr a = {.family = (sa_family_t)addr->family};
	struct reputation_keys k;
	memcpy(a.b, addr->addr, sizeof a.b);
	if (!reputation_keys(&a, &w->prefixes, &k)) {
		snprintf(err, errcap, "not an address sluice keeps reputation for");
		return -1;
	}
	return store_admin(w)->forget(w, &k, found, err, errcap);
}
