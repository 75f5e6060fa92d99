/*
 * store_ops: the table of operations a store implementation fills in
 * (store_lmdb.c, store_redis.c) and the records it reads, for the facade
 * store.c above it. A header only: the implementations include this, never
 * store.h, so they cannot call the facade.
 */
#ifndef SLUICE_STORE_OPS_H
#define SLUICE_STORE_OPS_H

#include <stdbool.h>

#include <stddef.h>

#include "acl.h"
#include "ipaddr.h"
#include "reputation.h"

/* What an implementation reads for one client: its record, its
 * network's record and its pass. */
struct store_records {
	bool have_host, have_net, have_pass;
	struct reputation_evidence host, net;
	long long pass_expires_ms;
};

/* An asynchronous read's end: r is NULL when it failed (timeout, lost
 * connection); runs at most once, never inside the lookup call. */
typedef void store_records_cb(void *arg, const struct store_records *r);

/* impl is the implementation's own handle; k the client's and its
 * network's keys (reputation_keys). Exactly one of read and
 * lookup/cancel is set. */
struct store_ops {
	const char *name;
	/* Synchronous read: false when unreadable (answer "unknown"). */
	bool (*read)(void *impl, const struct reputation_keys *k,
		     struct store_records *r);
	/* Asynchronous read: a handle for cancel, or NULL (nothing will
	 * come: answer "unknown" now). */
	void *(*lookup)(void *impl, const struct reputation_keys *k,
			store_records_cb *cb, void *arg);
	/* The callback never runs after this. */
	void (*cancel)(void *impl, void *handle);
	/* reputation_apply of d at at_ms to the client's record and its
	 * network's, both in one transaction. Fire and forget. */
	void (*apply)(void *impl, const struct reputation_keys *k,
		      const struct reputation_delta *d, long long at_ms);
	/* Extends the client's pass to expires_ms (never shortens it);
	 * ttl_ms is what remains of it now. Fire and forget. */
	void (*pass)(void *impl, const struct reputation_keys *k,
		     long long expires_ms, long ttl_ms);
	/* Removes the client's pass. Fire and forget. */
	void (*revoke)(void *impl, const struct reputation_keys *k);
	void (*close)(void *impl);
};

struct endpoint;

/* Where a store is, for its administration from the supervisor
 * (sluicectl allow, deny, forget, list): the LMDB directory and the
 * workers' user who must own what is created there, or the Redis server. */
struct store_where {
	bool redis;
	const char *dir, *user;          /* LMDB: state_dir, user */
	const struct endpoint *server;   /* Redis: redis_server */
	const char *prefix;              /* redis_prefix */
	long timeout_ms;                 /* redis_timeout: connect and reply */
	struct reputation_prefixes prefixes; /* what a client and its network are */
};

/* The administration: synchronous, for the supervisor only. Each call
 * opens the store, does one thing and closes it again, so nothing of it
 * crosses a fork. 0, or -1 with err (errcap bytes). */
struct store_admin_ops {
	/* Every allow/deny entry not expired at now_ms (at most cap). */
	int (*acl_load)(const struct store_where *w, struct acl_entry *out,
			size_t cap, size_t *n, long long now_ms, char *err,
			size_t errcap);
	/* Adds or replaces the entry for e->net; drops expired ones. */
	int (*acl_put)(const struct store_where *w, const struct acl_entry *e,
		       long long now_ms, char *err, size_t errcap);
	/* Removes the entry for exactly net. */
	int (*acl_del)(const struct store_where *w, const struct control_net *net,
		       bool *found, char *err, size_t errcap);
	/* Drops a client's reputation record and pass (k->host; its
	 * network's record stays: other addresses earned it too). */
	int (*forget)(const struct store_where *w, const struct reputation_keys *k,
		      bool *found, char *err, size_t errcap);
};

#endif
