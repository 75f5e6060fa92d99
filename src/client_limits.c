/*
 * client_limits: sessions per client address (see client_limits.h).
 *
 * A chained hash of clients with a session count, entries freed when
 * their count drops to zero, so memory follows the number of distinct
 * clients connected now, not the history. An IPv6 client is its
 * /ipv6_client_prefix (64 by default), as reputation keys it: a single
 * host commonly holds a whole /64, and per-address limits would not bind
 * it. The hash seed is random per
 * process so a client cannot aim many addresses at one chain.
 */
#include "client_limits.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LIMITS_BUCKETS 4096 /* power of two */

struct client_count {
	struct client_count *next;
	unsigned count;      /* sessions now; the entry lives while > 0 */
	uint8_t len;
	uint8_t addr[16];
};

static struct client_count *buckets[LIMITS_BUCKETS];
static uint64_t seed;
static bool seeded;

/* The client's key: an IPv4 address, or an IPv6 address with the bits
 * past v6_prefix zeroed. */
static size_t addr_key(const struct sockaddr *sa, unsigned v6_prefix, uint8_t key[16])
{
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		for (unsigned i = 0; i < 16; i++) {
			unsigned bit = i * 8;
			if (bit >= v6_prefix)
				key[i] = 0;
			else if (v6_prefix - bit < 8)
				key[i] &= (uint8_t)(0xffu << (8 - (v6_prefix - bit)));
		}
		return 16;
	}
	return 0;
}

static size_t bucket_of(const uint8_t *key, size_t len)
{
	if (!seeded) {
		if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
			seed = (uint64_t)(uintptr_t)&seed ^ 0x9e3779b97f4a7c15ULL;
		seeded = true;
	}
	/* FNV-1a over the seed and the address. */
	uint64_t h = 1469598103934665603ULL ^ seed;
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * 1099511628211ULL;
	return (size_t)(h ^ (h >> 29)) & (LIMITS_BUCKETS - 1);
}

static struct client_count **find(const uint8_t *key, size_t len)
{
	struct client_count **p = &buckets[bucket_of(key, len)];
	while (*p && ((*p)->len != len || memcmp((*p)->addr, key, len) != 0))
		p = &(*p)->next;
	return p;
}

unsigned client_limits_enter(const struct sockaddr *addr, unsigned v6_prefix)
{
	uint8_t key[16];
	size_t len = addr_key(addr, v6_prefix, key);
	if (!len)
		return 1;
	struct client_count **p = find(key, len);
	if (!*p) {
		struct client_count *c = calloc(1, sizeof *c);
		if (!c)
			return 0;
		c->len = (uint8_t)len;
		memcpy(c->addr, key, len);
		*p = c;
	}
	return ++(*p)->count;
}

void client_limits_leave(const struct sockaddr *addr, unsigned v6_prefix)
{
	uint8_t key[16];
	size_t len = addr_key(addr, v6_prefix, key);
	if (!len)
		return;
	struct client_count **p = find(key, len);
	if (!*p)
		return;
	if (--(*p)->count == 0) {
		struct client_count *dead = *p;
		*p = dead->next;
		free(dead);
	}
}

/* TLS session starts per address and minute: a direct-mapped table that
 * outlives the sessions (a handshake flood reconnects for every try). A
 * collision overwrites the older address: it can only forget, never
 * blame the wrong client. */
#define LIMITS_TLS_SLOTS 4096

struct tls_rate {
	uint8_t len;
	uint8_t addr[16];
	unsigned count;
	time_t minute;
};

static struct tls_rate tls_rates[LIMITS_TLS_SLOTS];

unsigned client_limits_tls_rate(const struct sockaddr *addr, unsigned v6_prefix)
{
	uint8_t key[16];
	size_t len = addr_key(addr, v6_prefix, key);
	if (!len)
		return 1;
	struct tls_rate *t = &tls_rates[bucket_of(key, len) % LIMITS_TLS_SLOTS];
	time_t minute = time(NULL) / 60;
	if (t->len != len || memcmp(t->addr, key, len) != 0 || t->minute != minute) {
		t->len = (uint8_t)len;
		memcpy(t->addr, key, len);
		t->minute = minute;
		t->count = 0;
	}
	return ++t->count;
}
