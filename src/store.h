/*
 * store: state shared by all workers on this machine, in LMDB under
 * state_dir (safe across processes): local reputation per address and per
 * network (/24 for IPv4, /64 for IPv6) and the pass cache.
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

struct workq;
struct store;

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

#endif
