/*
 * reputation: decay, scores, the combination of an address's and its
 * network's evidence, and the pass-cache rules (see reputation.h).
 *
 * Exports reputation_decay, reputation_valid, reputation_score,
 * reputation_combine, reputation_weights, reputation_add,
 * reputation_stale, reputation_passed, reputation_pass_merge,
 * reputation_event_name. Pure functions of their parameters.
 *
 * Weights per event: DELIVERED good +1; RCPT_REFUSED bad +0.5 (one bad
 * address is a typo as often as a dictionary attack); MSG_REFUSED bad +1;
 * BAD_SIGNAL bad +0.5 (a heuristic, so half); HANGUP_SHAPED bad +1 (the
 * behaviour shaping exists to expose).
 *
 * Redis applies reputation_add's rule inside a Lua script (store_redis.c)
 * so that the read-decay-add-write is atomic there; the two must agree.
 */
#include "reputation.h"

#include <math.h>

static const struct {
	const char *name;
	double good, bad;
} reputation_table[REPUTATION_EVENT_COUNT] = {
	[REPUTATION_DELIVERED] = { "delivered", 1.0, 0.0 },
	[REPUTATION_RCPT_REFUSED] = { "rcpt_refused", 0.0, 0.5 },
	[REPUTATION_MSG_REFUSED] = { "msg_refused", 0.0, 1.0 },
	[REPUTATION_BAD_SIGNAL] = { "bad_signal", 0.0, 0.5 },
	[REPUTATION_HANGUP_SHAPED] = { "hangup_shaped", 0.0, 1.0 },
};

double reputation_decay(double v, long long age_ms, long halflife_ms)
{
	if (halflife_ms <= 0 || age_ms <= 0)
		return v;
	return v * exp2(-(double)age_ms / (double)halflife_ms);
}

bool reputation_valid(const struct reputation_evidence *ev)
{
	return isfinite(ev->good) && isfinite(ev->bad) && ev->good >= 0 &&
	       ev->bad >= 0;
}

static struct reputation_evidence
reputation_decayed(const struct reputation_evidence *ev, long long now_ms,
		   long halflife_ms)
{
	long long age = now_ms - ev->updated_ms;
	struct reputation_evidence d = *ev;

	d.good = reputation_decay(ev->good, age, halflife_ms);
	d.bad = reputation_decay(ev->bad, age, halflife_ms);
	return d;
}

static double reputation_ratio(const struct reputation_evidence *d)
{
	double s = (d->good - d->bad) / (d->good + d->bad + 1.0);
	if (isnan(s)) /* inf/inf from weights near DBL_MAX */
		return 0;
	return s < -1.0 ? -1.0 : s > 1.0 ? 1.0 : s;
}

double reputation_score(const struct reputation_evidence *ev,
			long long now_ms, long halflife_ms)
{
	struct reputation_evidence d = reputation_decayed(ev, now_ms,
							  halflife_ms);
	return reputation_ratio(&d);
}

double reputation_combine(const struct reputation_evidence *host,
			  const struct reputation_evidence *net,
			  long long now_ms, long halflife_ms)
{
	double host_score = 0;
	double net_score = 1; /* a network without enough evidence: no say */

	if (host)
		host_score = reputation_score(host, now_ms, halflife_ms);
	if (net) {
		struct reputation_evidence d =
			reputation_decayed(net, now_ms, halflife_ms);
		if (d.good + d.bad >= REPUTATION_NET_MIN_EVIDENCE)
			net_score = reputation_ratio(&d);
	}
	return net_score < host_score ? net_score : host_score;
}

bool reputation_weights(enum reputation_event ev, double *good, double *bad)
{
	if ((unsigned)ev >= REPUTATION_EVENT_COUNT)
		return false;
	*good = reputation_table[ev].good;
	*bad = reputation_table[ev].bad;
	return true;
}

struct reputation_evidence
reputation_add(const struct reputation_evidence *ev, double good, double bad,
	       long long at_ms, long halflife_ms)
{
	struct reputation_evidence r = { 0, 0, at_ms };

	if (ev) {
		r = reputation_decayed(ev, at_ms, halflife_ms);
		if (at_ms > r.updated_ms)
			r.updated_ms = at_ms;
	}
	r.good += good;
	r.bad += bad;
	return r;
}

bool reputation_stale(const struct reputation_evidence *ev, long long now_ms,
		      long halflife_ms)
{
	struct reputation_evidence d = reputation_decayed(ev, now_ms,
							  halflife_ms);
	return d.good + d.bad < REPUTATION_PRUNE_WEIGHT;
}

bool reputation_passed(long long expires_ms, long long now_ms)
{
	return now_ms < expires_ms;
}

long long reputation_pass_merge(long long old_expires_ms,
				long long grant_expires_ms)
{
	return old_expires_ms > grant_expires_ms ? old_expires_ms
						 : grant_expires_ms;
}

const char *reputation_event_name(enum reputation_event ev)
{
	if ((unsigned)ev >= REPUTATION_EVENT_COUNT)
		return "?";
	return reputation_table[ev].name;
}
