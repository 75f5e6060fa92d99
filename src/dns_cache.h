/*
 * dns_cache: the per-worker cache of client names (see dns_cache.c): the
 * answer of a PTR look-up (and its forward confirmation) by client
 * address, for the answer's TTL. Pure: no I/O; time is a parameter.
 */
#ifndef SLUICE_DNS_CACHE_H
#define SLUICE_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "dns.h"

/* Slots: the table starts at MIN and doubles while more than half of its
 * slots are taken, up to MAX (the memory follows the number of clients
 * seen, not a size fixed up front). */
#define DNS_CACHE_SLOTS_MIN 64
#define DNS_CACHE_SLOTS_MAX 2048
#define DNS_CACHE_MIN_S 30
#define DNS_CACHE_MAX_S 3600
#define DNS_CACHE_FAIL_S 15

/* Records st (and name, for DNS_NAME_OK / DNS_NAME_UNCONFIRMED; at most
 * DNS_NAME_MAX bytes are kept) for the address (family AF_INET: 4 bytes,
 * AF_INET6: 16) for ttl_s clamped to [DNS_CACHE_MIN_S, DNS_CACHE_MAX_S],
 * or DNS_CACHE_FAIL_S for DNS_NAME_TEMPFAIL. Out of memory: not cached. */
void dns_cache_put(int family, const void *addr, enum dns_name_status st,
		   const char *name, int ttl_s, time_t now);

/* A live entry for the address: its status in *st and its name copied
 * into name (size >= 1; "" when none). False when none or expired. */
bool dns_cache_get(int family, const void *addr, time_t now,
		   enum dns_name_status *st, char *name, size_t size);

/* The table's size in slots now (0 before the first put). */
size_t dns_cache_slots(void);

/* Frees the table and its names (tests). */
void dns_cache_clear(void);

#endif
