/*
 * dns_cache: a small per-worker cache of client names (HOSTILE 81: a
 * client that reconnects, or many sessions from one server, cost one
 * look-up). Direct mapped by address hash: a collision just replaces the
 * older entry. Kept for the answers' TTL within [DNS_CACHE_MIN_S,
 * DNS_CACHE_MAX_S]; a temporary failure for DNS_CACHE_FAIL_S, so a dead
 * resolver is not asked again for every connection.
 *
 * Memory (issue 12 item 2: allocate nothing that is not needed yet): an
 * entry is 40 bytes with the name allocated to its length, only when
 * there is one (most clients of a flood have no confirmed name), instead
 * of 288 with a 256-byte name inside; and the table grows with the number
 * of clients seen, from DNS_CACHE_SLOTS_MIN to DNS_CACHE_SLOTS_MAX slots
 * (80 KiB at most, instead of 576 KiB allocated at the first look-up).
 */
#include "dns_cache.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct dns_cache_entry {
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	time_t expires;
	char *name;            /* NULL: none */
	unsigned char family;  /* 0: empty */
	unsigned char status;  /* enum dns_name_status */
};

static struct dns_cache_entry *table;
static size_t n_slots; /* a power of two, or 0 */
static size_t n_used;  /* slots taken, live or expired */

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

static size_t slot_of(int family, const void *addr, size_t slots)
{
	const unsigned char *p = addr;
	uint32_t h = 2166136261u;
	for (size_t i = 0, len = addr_len(family); i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h & (slots - 1);
}

static void entry_clear(struct dns_cache_entry *e)
{
	free(e->name);
	memset(e, 0, sizeof *e);
}

/* Doubles the table (or makes the first one); entries that collide in
 * the new table keep the one met last, as a put would. False: out of
 * memory (the old table stays). */
static bool grow(void)
{
	size_t slots = n_slots ? n_slots * 2 : DNS_CACHE_SLOTS_MIN;
	struct dns_cache_entry *t = calloc(slots, sizeof *t);
	if (!t)
		return false;
	size_t used = 0;
	for (size_t i = 0; i < n_slots; i++) {
		struct dns_cache_entry *e = &table[i];
		if (!e->family)
			continue;
		struct dns_cache_entry *to = &t[slot_of(e->family, &e->addr, slots)];
		if (to->family)
			entry_clear(to);
		else
			used++;
		*to = *e;
	}
	free(table);
	table = t;
	n_slots = slots;
	n_used = used;
	return true;
}

void dns_cache_put(int family, const void *addr, enum dns_name_status st,
		   const char *name, int ttl_s, time_t now)
{
	if (family != AF_INET && family != AF_INET6)
		return;
	if ((!n_slots || (n_used + 1) * 2 > n_slots) && n_slots < DNS_CACHE_SLOTS_MAX &&
	    !grow() && !n_slots)
		return; /* out of memory, no table yet: not cached */
	int ttl = st == DNS_NAME_TEMPFAIL ? DNS_CACHE_FAIL_S : ttl_s;
	if (ttl < DNS_CACHE_MIN_S && st != DNS_NAME_TEMPFAIL)
		ttl = DNS_CACHE_MIN_S;
	if (ttl > DNS_CACHE_MAX_S)
		ttl = DNS_CACHE_MAX_S;
	char *copy = NULL;
	if ((st == DNS_NAME_OK || st == DNS_NAME_UNCONFIRMED) && name && *name) {
		copy = strndup(name, DNS_NAME_MAX);
		if (!copy)
			return;
	}
	struct dns_cache_entry *e = &table[slot_of(family, addr, n_slots)];
	if (e->family)
		entry_clear(e);
	else
		n_used++;
	memcpy(&e->addr, addr, addr_len(family));
	e->family = (unsigned char)family;
	e->status = (unsigned char)st;
	e->expires = now + ttl;
	e->name = copy;
}

bool dns_cache_get(int family, const void *addr, time_t now,
		   enum dns_name_status *st, char *name, size_t size)
{
	if (!n_slots || (family != AF_INET && family != AF_INET6))
		return false;
	const struct dns_cache_entry *e = &table[slot_of(family, addr, n_slots)];
	if (e->family != family || e->expires <= now ||
	    memcmp(&e->addr, addr, addr_len(family)) != 0)
		return false;
	*st = (enum dns_name_status)e->status;
	size_t len = e->name ? strlen(e->name) : 0;
	if (len >= size)
		len = size - 1;
	memcpy(name, e->name ? e->name : "", len);
	name[len] = '\0';
	return true;
}

size_t dns_cache_slots(void)
{
	return n_slots;
}

void dns_cache_clear(void)
{
	for (size_t i = 0; i < n_slots; i++)
		free(table[i].name);
	free(table);
	table = NULL;
	n_slots = n_used = 0;
}
