/*
 * store: state shared by all workers on this machine, in LMDB under
 * state_dir (safe across processes): local reputation per address and per
 * network (/24 for IPv4, /64 for IPv6) and the pass cache. With store =
 * redis the same state lives in Redis, shared by several machines
 * (store_redis.c); then reads are asynchronous (store_lookup_start) and
 * the synchronous reads answer "unknown".
 *
 * Reads run on the loop (a read transaction is a memory-mapped lookup);
 * writes go to the worker pool (workq) because a write transaction syncs.
 * The environment is opened in each worker after fork (LMDB environments
 * must not cross fork), with stale readers of dead workers cleared
 * (mdb_reader_check) at open.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <sys/socket.h>

struct endpoint;
struct event_base;
struct workq;
struct store;
struct store_lookup;

enum store_event {
	STORE_DELIVERED,     /* a message accepted by the backend */
	STORE_RCPT_REFUSED,  /* a recipient refused by the backend */
	STORE_MSG_REFUSED,   /* a message refused (5xx at end of data) */
	STORE_BAD_SIGNAL,    /* a classification signal fired */
	STORE_HANGUP_SHAPED, /* hung up while shaped */
};

/* NULL with a logged reason. map_size: LMDB map size in bytes. */
struct store *store_open(const char *dir, struct workq *wq,
			 long halflife_ms, unsigned long long map_size);
void store_close(struct store *st);

/* Reputation in [-1, 1]: -1 worst, 0 unknown, 1 best. The worse of the
 * address's and its network's, each decayed to now. */
double store_reputation(struct store *st, const struct sockaddr *addr);

/* Records evidence for the address and its network (async, best effort:
 * a failure is logged and counted, never reported to the caller). */
void store_record(struct store *st, const struct sockaddr *addr,
		  enum store_event ev);

/* Pass cache. */
bool store_pass_check(struct store *st, const struct sockaddr *addr);
void store_pass_grant(struct store *st, const struct sockaddr *addr,
		      long ttl_ms);

/* The decay arithmetic, exposed for tests: value v recorded age_ms ago
 * with half-life h. */
double store_decay(double v, long long age_ms, long halflife_ms);

/* ---- store = redis ---------------------------------------------------- */

/* The shared store on server (see store_redis.c). NULL only when out of
 * memory: an unreachable Redis is not an error, the store connects (and
 * reconnects) by itself and answers "unknown" meanwhile. */
struct store *store_open_redis(struct event_base *base,
			       const struct endpoint *server,
			       const char *prefix, long timeout_ms,
			       long halflife_ms);

/* True when reads must go through store_lookup_start (Redis). */
bool store_async(const struct store *st);

struct store_answer {
	double reputation; /* as store_reputation; 0 when unknown */
	bool pass;         /* as store_pass_check */
};
typedef void store_lookup_cb(void *arg, const struct store_answer *ans);

/* Starts the look-up of addr's pass and reputation. cb runs exactly once,
 * on a later loop turn: with the answer, or with the default (0, no
 * pass) once the store's timeout has passed or its connection is lost.
 * NULL when there is nothing to wait for (not an async store, not an IP
 * address, Redis down or over its backlog): the default applies now, and
 * cb never runs. After cb, or after store_lookup_cancel, the handle is
 * gone. */
struct store_lookup *store_lookup_start(struct store *st,
					const struct sockaddr *addr,
					store_lookup_cb *cb, void *arg);
void store_lookup_cancel(struct store_lookup *l);

/* Evidence for one key, for the reputation arithmetic shared by both
 * stores: weights and the (CLOCK_REALTIME) time they were last decayed to. */
struct store_evidence {
	double good, bad;
	long long updated_ms;
};

/* store_reputation's answer from the address's and its network's records
 * (NULL: none), each decayed to now_ms. */
double store_combine(const struct store_evidence *host,
		     const struct store_evidence *net, long long now_ms,
		     long halflife_ms);

/* The weights one event adds; false for an unknown event. */
bool store_event_weights(enum store_event ev, double *good, double *bad);

/* CLOCK_REALTIME in milliseconds: the stores' time base. */
long long store_now_ms(void);

#endif
