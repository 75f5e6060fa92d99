/*
 * outcome: reputation from what happened to a client's transactions and
 * sessions, never from the signals already in its score. Pure arithmetic
 * (no I/O, no allocation, no clock of its own): both stores (LMDB and
 * Redis) apply and read evidence through it, so they cannot disagree.
 * docs/classification.md explains the numbers and the rejected
 * alternatives.
 */
#ifndef SLUICE_OUTCOME_H
#define SLUICE_OUTCOME_H

#include <stdbool.h>
#include <sys/socket.h>

/* X(ID, "name", good, bad, content): what one outcome adds to the
 * client's own evidence. */
#define OUTCOMES(X)                                                            \
	X(DELIVERED, "delivered", 1, 0, 0)      /* 2xx, never shaped */          \
	X(CONTENT_REFUSED, "content", 0, 0, 1)  /* 5.7.x at end of data */        \
	X(HARVEST, "harvest", 0, 1, 0)          /* 5.1.x for most recipients */  \
	X(HANGUP_SHAPED, "hangup", 0, 1, 0)     /* hung up while shaped */       \
	X(EARLY_CLOSE, "early-close", 0, 1, 0)  /* gone before its final reply */

enum outcome_event {
#define OUTCOME_ENUM(id, name, g, b, c) OUTCOME_##id,
	OUTCOMES(OUTCOME_ENUM)
#undef OUTCOME_ENUM
	OUTCOME_COUNT
};

/* Decayed counters and the (CLOCK_REALTIME) time they were decayed to.
 * A client's record counts outcomes; its network's record counts the
 * distinct addresses that earned each kind. */
struct outcome_evidence {
	double good, bad, content;
	long long updated_ms;
};

/* How an address is keyed: an IPv4 client is its address and its network
 * its /ipv4_net; an IPv6 client is its /ipv6_client, its network its
 * /ipv6_net (settings of the same names). */
struct outcome_prefixes {
	unsigned ipv4_net, ipv6_client, ipv6_net;
};

struct outcome_key {
	int family;            /* AF_INET or AF_INET6 */
	unsigned prefix;       /* bits kept */
	unsigned char b[16];   /* the address, bits past prefix zeroed */
};

/* The weights and thresholds of the verdict (settings). */
struct outcome_params {
	long halflife_ms;               /* reputation_halflife */
	unsigned network_min_addresses; /* distinct bad addresses needed */
	unsigned network_bad_share;     /* percent of the good addresses */
	unsigned weight_reputation;     /* a client at the worst reputation */
	unsigned weight_network;        /* a network of bad outcomes */
	unsigned weight_content;        /* per content refusal */
};

struct outcome_verdict {
	int reputation; /* REPUTATION weight: the client's or its network's */
	int content;    /* CONTENT weight: the client's or its network's */
	bool from_network_rep, from_network_content;
};

/* The client's and network's keys of addr; an IPv4-mapped IPv6 address
 * is its IPv4 address. False for anything else (a Unix socket). */
bool outcome_keys(const struct sockaddr *addr, const struct outcome_prefixes *p,
		  struct outcome_key *host, struct outcome_key *net);

/* v recorded age_ms ago with half-life h (h <= 0 or age <= 0: v). */
double outcome_decay(double v, long long age_ms, long halflife_ms);

/* Decays e to now_ms (never backwards: a later updated_ms stays). */
void outcome_decay_to(struct outcome_evidence *e, long long now_ms, long halflife_ms);

/* Adds ev at now_ms to the client's record and, when the client was not
 * already counted for that kind (its decayed counter under
 * OUTCOME_DISTINCT_FLOOR before this event), one address to its
 * network's record. Both are decayed to now_ms first. False for an
 * unknown event (nothing changed). */
bool outcome_apply(struct outcome_evidence *host, struct outcome_evidence *net,
		   enum outcome_event ev, long long now_ms, long halflife_ms);

/* The weights the evidence gives a new session of the client (NULL: no
 * record), each decayed to now_ms. */
void outcome_weigh(const struct outcome_evidence *host,
		   const struct outcome_evidence *net, long long now_ms,
		   const struct outcome_params *p, struct outcome_verdict *out);

/* A sane record: finite, non-negative counters. */
bool outcome_evidence_ok(const struct outcome_evidence *e);

const char *outcome_name(enum outcome_event ev);

/* The OUTCOME_DISTINCT_FLOOR for stores that apply evidence elsewhere
 * (the Redis script). */
double outcome_distinct_floor(void);

#endif
