/*
 * reputation: the arithmetic of local reputation and of the pass cache,
 * shared by every store (store_lmdb.c, store_redis.c, store.c). A leaf:
 * no I/O, no clock, no libevent, no LMDB; every time is a parameter
 * (CLOCK_REALTIME milliseconds, see mstime.h), so it is tested alone
 * (tests/unit/test_reputation.c).
 */
#ifndef SLUICE_REPUTATION_H
#define SLUICE_REPUTATION_H

#include <stdbool.h>

/* What a session's outcome tells about its client. */
enum reputation_event {
	REPUTATION_DELIVERED,     /* a message accepted by the backend */
	REPUTATION_RCPT_REFUSED,  /* a recipient refused by the backend */
	REPUTATION_MSG_REFUSED,   /* a message refused (5xx at end of data) */
	REPUTATION_BAD_SIGNAL,    /* a classification signal fired */
	REPUTATION_HANGUP_SHAPED, /* hung up while shaped */
	REPUTATION_EVENT_COUNT
};

/* A /24 or /64 counts once it holds this much decayed evidence: three
 * events, so a single bad neighbour cannot shape a whole network. Not 3.0
 * exactly, or three events would never count once they have decayed by a
 * millisecond; 2.9 is three events within 5% of a half-life (8 h at 7 d). */
#define REPUTATION_NET_MIN_EVIDENCE 2.9

/* Under this total weight a record says nothing any more: a single event
 * gets there after about 3.3 half-lives. */
#define REPUTATION_PRUNE_WEIGHT 0.1

/* Evidence for one key: weights and the time they were last decayed to. */
struct reputation_evidence {
	double good, bad;
	long long updated_ms;
};

/* v recorded age_ms ago with half-life h: v * 2^(-age / h). A half-life
 * <= 0 turns decay off; an age <= 0 (a clock step back, or another
 * process's later write) leaves v as it is. */
double reputation_decay(double v, long long age_ms, long halflife_ms);

/* True for evidence sluice could have written: finite, non-negative. */
bool reputation_valid(const struct reputation_evidence *ev);

/* (good - bad) / (good + bad + 1) of ev decayed to now_ms: 0 with no
 * evidence, one event moves it half way, clamped to [-1, 1]. */
double reputation_score(const struct reputation_evidence *ev,
			long long now_ms, long halflife_ms);

/* The reputation of an address from its record and its network's (NULL:
 * none): the worse of the two scores, where the network has a say only
 * with REPUTATION_NET_MIN_EVIDENCE (it can hold an address back, never
 * vouch for it). */
double reputation_combine(const struct reputation_evidence *host,
			  const struct reputation_evidence *net,
			  long long now_ms, long halflife_ms);

/* The weights one event adds; false for a value outside the enum. */
bool reputation_weights(enum reputation_event ev, double *good, double *bad);

/* Read-decay-add: ev (NULL: no usable record) decayed to at_ms plus the
 * weights, stamped with the later of its time and at_ms. */
struct reputation_evidence
reputation_add(const struct reputation_evidence *ev, double good, double bad,
	       long long at_ms, long halflife_ms);

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
