/*
 * store: the interface to the state shared beyond one session: local
 * reputation per client and per network (an IPv4 address and its /24, an
 * IPv6 /64 and its /48: settings) and the pass cache. Two implementations sit behind one table of operations
 * (struct store_ops): store_lmdb.c (state_dir, shared by the workers of one
 * machine; synchronous reads) and store_redis.c (store = redis, shared by
 * several machines; asynchronous reads). The implementations never call
 * each other nor this facade; the arithmetic they share is the leaf
 * reputation.c below them.
 *
 * The table and the records it reads are in store_ops.h, which the
 * implementations include (not this header: they sit below the facade).
 *
 * Callers use only the store_* functions below and never know which store
 * they have, except for when reads answer: store_async tells whether to
 * read with store_lookup_start (then the synchronous reads answer
 * "unknown").
 *
 * The facade's own logic, shared by both implementations: an address
 * becomes an ipaddr (IPv4-mapped unwrapped, anything not IP ignored) and
 * then the client's and network's keys (reputation_keys), an event
 * becomes increments, times are taken here (mstime_real), and the raw
 * records an implementation reads are turned into an answer
 * (reputation_weigh, reputation_passed). Every function accepts a NULL
 * store and does nothing (reputation 0, no pass), so mail never waits on
 * the store.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <sys/socket.h>

#include "reputation.h"
#include "store_ops.h" /* struct store_where */

struct endpoint;
struct event_base;
struct workq;
struct store;
struct store_lookup;

/* ---- for callers ---------------------------------------------------- */

/* How every store keys and weighs (settings; see reputation.h). */
struct store_params {
	struct reputation_params rep;
	struct reputation_prefixes prefixes;
};

/* LMDB under dir (see store_lmdb.c). NULL with a logged reason.
 * map_size: LMDB map size in bytes (0: default). write_gap_ms: least time
 * between two write transactions (0: none), timed on base. */
struct store *store_open_lmdb(const char *dir, struct event_base *base,
			      struct workq *wq, const struct store_params *p,
			      unsigned long long map_size, long write_gap_ms);

/* Redis on server (see store_redis.c). NULL only when out of memory: an
 * unreachable Redis is not an error, the store connects (and reconnects)
 * by itself and answers "unknown" meanwhile. */
struct store *store_open_redis(struct event_base *base,
			       const struct endpoint *server,
			       const char *prefix, long timeout_ms,
			       const struct store_params *p);

/* Live look-ups end without their callback, and their handles are freed:
 * cancel them first if you still hold them. */
void store_close(struct store *st);

/* The verdict for a new session of addr from its and its network's
 * records, decayed to now; all zero when unknown or on an async store. */
void store_reputation(struct store *st, const struct sockaddr *addr,
		      struct reputation_verdict *out);

/* Records an outcome for the client and its network (async, best effort:
 * a failure is logged and counted, never reported to the caller). */
void store_record(struct store *st, const struct sockaddr *addr,
		  enum reputation_event ev);

/* Pass cache. store_pass_check is false on an async store. A revoked
 * pass is gone at once (a content refusal: the client proved nothing). */
bool store_pass_check(struct store *st, const struct sockaddr *addr);
void store_pass_grant(struct store *st, const struct sockaddr *addr,
		      long ttl_ms);
void store_pass_revoke(struct store *st, const struct sockaddr *addr);

/* True when reads must go through store_lookup_start. */
bool store_async(const struct store *st);

struct store_answer {
	struct reputation_verdict verdict; /* as store_reputation */
	bool pass;                         /* as store_pass_check */
};
typedef void store_lookup_cb(void *arg, const struct store_answer *ans);

/* Starts the look-up of addr's pass and reputation. cb runs exactly once,
 * on a later loop turn: with the answer, or with the default (0, no
 * pass) once the store's timeout has passed or its connection is lost.
 * NULL when there is nothing to wait for (not an async store, not an IP
 * address, the store down or over its backlog, out of memory): the
 * default applies now, and cb never runs. After cb, or after
 * store_lookup_cancel, the handle is gone. */
struct store_lookup *store_lookup_start(struct store *st,
					const struct sockaddr *addr,
					store_lookup_cb *cb, void *arg);
void store_lookup_cancel(struct store_lookup *l);

/* ---- administration: the supervisor, for sluicectl --------------------- */

/* Synchronous (each call opens the store in w, acts and closes it: see
 * store_admin_ops). 0, or -1 with err. */
int store_acl_load(const struct store_where *w, struct acl_entry *out, size_t cap,
		   size_t *n, char *err, size_t errcap);
int store_acl_put(const struct store_where *w, const struct acl_entry *e, char *err,
		  size_t errcap);
int store_acl_del(const struct store_where *w, const struct control_net *net,
		  bool *found, char *err, size_t errcap);
/* An address's reputation record and pass (addr: a single address). */
int store_forget(const struct store_where *w, const struct control_net *addr,
		 bool *found, char *err, size_t errcap);

#endif
