/*
 * store_redis: reputation and the pass cache in Redis (store = redis),
 * shared by several sluice machines. Reached only through store.c
 * (store_open_redis); see store_redis.c for the layout and the fault
 * handling.
 */
#ifndef SLUICE_STORE_REDIS_H
#define SLUICE_STORE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include "store_ops.h"

struct endpoint;
struct event_base;
struct redisReply;
struct store_redis;

/* NULL only when out of memory; connects on its own, later. Closed
 * through store_redis_ops.close: drops the connection (writes not yet
 * sent are lost); live look-ups are cancelled without their callback. */
struct store_redis *store_redis_open(struct event_base *base,
				     const struct endpoint *server,
				     const char *prefix, long timeout_ms,
				     long halflife_ms);

/* Reads are asynchronous (lookup/cancel); writes are fire and forget: a
 * failure is counted and logged at a limited rate. */
extern const struct store_ops store_redis_ops;
/* sluicectl's entries and forget (see the end of store_redis.c). */
extern const struct store_admin_ops store_redis_admin;

/* ---- exposed for tests -------------------------------------------------- */

#define STORE_REDIS_PREFIX_MAX 63
#define STORE_REDIS_KEY_MAX    (STORE_REDIS_PREFIX_MAX + 128)

/* The keys of a client: "<prefix>rep:{192.0.2.0/24}192.0.2.1",
 * "<prefix>rep:{192.0.2.0/24}", "<prefix>pass:192.0.2.1"; for IPv6
 * "<prefix>rep:{2001:db8:1::/48}2001:db8:1:2::/64" and
 * "<prefix>pass:2001:db8:1:2::/64" (an IPv4-mapped address arrives
 * unwrapped, see ipaddr.h). False for a family not AF_INET or AF_INET6,
 * or a prefix over STORE_REDIS_PREFIX_MAX. */
struct store_redis_keys {
	char host[STORE_REDIS_KEY_MAX];
	char net[STORE_REDIS_KEY_MAX];
	char pass[STORE_REDIS_KEY_MAX];
};
bool store_redis_keys(const char *prefix, const struct reputation_keys *addr,
		      struct store_redis_keys *k);

/* Parsers of untrusted replies. rep: the reply to HMGET key g b c t; pass:
 * the reply to GET key. 1: a record in *ev / *expires_ms; 0: no record;
 * -1: not what sluice writes (wrong type, partial, a number over 64 bytes,
 * not finite, negative weights), to be read as no record. */
int store_redis_parse_rep(const struct redisReply *r,
			  struct reputation_evidence *ev);
int store_redis_parse_pass(const struct redisReply *r, long long *expires_ms);

#endif
