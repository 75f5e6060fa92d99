/*
 * reputation: the arithmetic of local reputation and of the pass cache,
 * shared by every store (store_lmdb.c, store_redis.c, store.c). A leaf:
 * no I/O, no clock, no libevent, no LMDB; every time is a parameter
 * (CLOCK_REALTIME milliseconds, see mstime.h), so it is tested alone
 * (tests/unit/test_reputation.c).
 *
 * Reputation comes from outcomes only: what happened to a client's
 * transactions and how its sessions ended, never the signals already in
 * its score. docs/classification.md explains the numbers and the
 * alternatives that were rejected.
 */
#ifndef SLUICE_REPUTATION_H
#define SLUICE_REPUTATION_H

#include <stdbool.h>

#include "ipaddr.h"

/* X(ID, "name", good, bad, content): what one outcome adds to the
 * client's own record. */
#define REPUTATION_EVENTS(X)                                                   \
	X(DELIVERED, "delivered", 1, 0, 0)       /* 2xx, never shaped */          \
	X(CONTENT_REFUSED, "content", 0, 0, 1)   /* 5.7.x at end of data */       \
	X(HARVEST, "harvest", 0, 1, 0)           /* 5.1.x for most recipients */ \
	X(HANGUP_SHAPED, "hangup_shaped", 0, 1, 0) /* hung up while shaped */    \
	X(EARLY_CLOSE, "early_close", 0, 1, 0)   /* gone before its final reply */

enum reputation_event {
#define REPUTATION_ENUM(id, name, g, b, c) REPUTATION_##id,
	REPUTATION_EVENTS(REPUTATION_ENUM)
#undef REPUTATION_ENUM
	REPUTATION_EVENT_COUNT
};

/* A counter under this means "this address is not counted for this kind
 * yet": one event is 1.0 and falls under 0.5 after one half-life. */
#define REPUTATION_DISTINCT_FLOOR 0.5

/* Under this total weight a record says nothing any more: a single event
 * gets there after about 3.3 half-lives. */
#define REPUTATION_PRUNE_WEIGHT 0.1

/* Decayed counters and the time they were decayed to. A client's record
 * counts its outcomes; its network's record counts the distinct addresses
 * that earned each kind. */
struct reputation_evidence {
	double good, bad, content;
	long long updated_ms;
};

/* Increments of one event (the REPUTATION_EVENTS row). */
struct reputation_delta {
	double good, bad, content;
};

/* How clients are keyed (settings ipv4_network_prefix, ipv6_client_prefix,
 * ipv6_network_prefix): an IPv4 client is its address, its network its
 * /ipv4_net; an IPv6 client is its /ipv6_client, its network /ipv6_net. */
struct reputation_prefixes {
	unsigned ipv4_net, ipv6_client, ipv6_net;
};

/* A client's key and its network's: addresses with the bits past the
 * prefix zeroed. */
struct reputation_keys {
	struct ipaddr host, net;
	unsigned host_bits, net_bits;
};

/* The verdict's weights and thresholds (settings of the same names). */
struct reputation_params {
	long halflife_ms;
	unsigned network_min_addresses;
	unsigned network_bad_share;   /* percent of the good addresses */
	unsigned weight_reputation;   /* a client at the worst reputation */
	unsigned weight_network;      /* a network of bad outcomes */
	unsigned weight_content;      /* per content refusal */
};

/* What a new session of a client gets: REPUTATION and CONTENT weights,
 * each the client's own or its network's, whichever is larger. */
struct reputation_verdict {
	int reputation, content;
	bool net_reputation, net_content; /* the network's weight won */
};

/* v recorded age_ms ago with half-life h: v * 2^(-age / h). A half-life
 * <= 0 turns decay off; an age <= 0 (a clock step back, or another
 * process's later write) leaves v as it is. */
double reputation_decay(double v, long long age_ms, long halflife_ms);

/* True for evidence sluice could have written: finite, non-negative. */
bool reputation_valid(const struct reputation_evidence *ev);

/* The increments of ev; false for a value outside the enum. */
bool reputation_delta(enum reputation_event ev, struct reputation_delta *d);

/* The keys of a; false when a prefix is out of range for the family. */
bool reputation_keys(const struct ipaddr *a, const struct reputation_prefixes *p,
		     struct reputation_keys *k);

/* One event at at_ms on the client's record and its network's (NULL: no
 * usable record; both are written back into *host_out and *net_out): both
 * are decayed to at_ms (stamped with the later of the two times), the
 * client's counters get d, and the network gains one address for each
 * kind whose client counter was under REPUTATION_DISTINCT_FLOOR before. So
 * one address that keeps failing counts once, however many sessions it
 * opens. Stores must apply it to both records atomically. */
void reputation_apply(const struct reputation_evidence *host,
		      const struct reputation_evidence *net,
		      const struct reputation_delta *d, long long at_ms,
		      long halflife_ms, struct reputation_evidence *host_out,
		      struct reputation_evidence *net_out);

/* The verdict for a new session from the records (NULL: none) at now_ms. */
void reputation_weigh(const struct reputation_evidence *host,
		      const struct reputation_evidence *net, long long now_ms,
		      const struct reputation_params *p,
		      struct reputation_verdict *out);

/* True when ev decayed to now_ms weighs under REPUTATION_PRUNE_WEIGHT. */
bool reputation_stale(const struct reputation_evidence *ev, long long now_ms,
		      long halflife_ms);

/* Pass cache: passed while now < expires; a grant never shortens an
 * existing pass (the later expiry wins). */
bool reputation_passed(long long expires_ms, long long now_ms);
long long reputation_pass_merge(long long old_expires_ms,
				long long grant_expires_ms);

/* The event's name, for logs. */
const char *reputation_event_name(enum reputation_event ev);

#endif
