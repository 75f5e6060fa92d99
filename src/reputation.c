/*
 * reputation: decay, keys, the outcome arithmetic and the pass-cache rules
 * (see reputation.h; docs/classification.md "Reputation" for the reasons
 * behind every number).
 *
 * Exports reputation_decay, reputation_valid, reputation_delta,
 * reputation_keys, reputation_apply, reputation_weigh, reputation_stale,
 * reputation_passed, reputation_pass_merge, reputation_event_name. Pure
 * functions of their parameters.
 *
 * The client's record counts outcomes: good (delivered, never shaped),
 * bad (hung up while shaped, gone before its end-of-data reply,
 * harvesting) and content (refused with 5.7.x at end of data). Its
 * network's record counts addresses: a client adds itself to its
 * network's count of a kind when its own counter of that kind was under
 * REPUTATION_DISTINCT_FLOOR.
 *
 * The verdict for a new session:
 *   REPUTATION = max(client, network)
 *     client:  with good and bad the decayed counters rounded to whole
 *              events (an event counts for one half-life),
 *              s = (good - bad) / (good + bad + 1), in (-1, 1);
 *              weight_reputation * -s, rounded, when s < 0;
 *     network: weight_network when its bad addresses, decayed and
 *              rounded, reach network_min_addresses and are at least
 *              network_bad_share percent of its good addresses.
 *   CONTENT = max(client, network)
 *     client:  weight_content per refusal still counted (the decayed count
 *              rounded: one refusal counts for one half-life);
 *     network: weight_content once, by the network rule above applied to
 *              its content-refused addresses.
 * weight_network stays under shape_threshold by default: bad neighbours
 * alone never shape an address that shows nothing of its own, while the
 * mail server's content verdicts from several addresses do.
 *
 * Redis applies reputation_apply's rule inside a Lua script
 * (store_redis.c) so that the read-decay-add-write of both records is
 * atomic there; the two must agree (tests/unit/test_store_redis.c).
 */
#include "reputation.h"

#include <math.h>
#include <string.h>
#include <sys/socket.h>

/* A network's decayed count of addresses is compared rounded, as the
 * client's events are counted: N addresses recorded within the last
 * half-life or so weigh between N/2 and N, and N - 1/2 is "N of them". */
#define REPUTATION_COUNT_SLACK REPUTATION_DISTINCT_FLOOR
#define REPUTATION_PERCENT 100.0
#define REPUTATION_WEIGHT_MAX 1000000 /* as the score thresholds */

static const struct {
	const char *name;
	struct reputation_delta d;
} reputation_table[REPUTATION_EVENT_COUNT] = {
#define REPUTATION_ROW(id, n, g, b, c) [REPUTATION_##id] = {n, {g, b, c}},
	REPUTATION_EVENTS(REPUTATION_ROW)
#undef REPUTATION_ROW
};

double reputation_decay(double v, long long age_ms, long halflife_ms)
{
	if (halflife_ms <= 0 || age_ms <= 0)
		return v;
	return v * exp2(-(double)age_ms / (double)halflife_ms);
}

bool reputation_valid(const struct reputation_evidence *ev)
{
	return isfinite(ev->good) && isfinite(ev->bad) && isfinite(ev->content) &&
	       ev->good >= 0 && ev->bad >= 0 && ev->content >= 0;
}

bool reputation_delta(enum reputation_event ev, struct reputation_delta *d)
{
	if ((unsigned)ev >= REPUTATION_EVENT_COUNT)
		return false;
	*d = reputation_table[ev].d;
	return true;
}

static void reputation_mask(struct ipaddr *a, unsigned bits)
{
	size_t len = ipaddr_len(a);
	for (size_t i = 0; i < len; i++) {
		unsigned at = (unsigned)i * 8;
		if (at >= bits)
			a->b[i] = 0;
		else if (bits - at < 8)
			a->b[i] &= (unsigned char)(0xffu << (8 - (bits - at)));
	}
}

bool reputation_keys(const struct ipaddr *a, const struct reputation_prefixes *p,
		     struct reputation_keys *k)
{
	unsigned max = (unsigned)ipaddr_len(a) * 8;
	memset(k, 0, sizeof *k);
	if (a->family == AF_INET) {
		k->host_bits = max;
		k->net_bits = p->ipv4_net;
	} else if (a->family == AF_INET6) {
		k->host_bits = p->ipv6_client;
		k->net_bits = p->ipv6_net;
	} else {
		return false;
	}
	if (k->host_bits == 0 || k->host_bits > max || k->net_bits == 0 ||
	    k->net_bits > k->host_bits)
		return false;
	k->host = *a;
	k->net = *a;
	reputation_mask(&k->host, k->host_bits);
	reputation_mask(&k->net, k->net_bits);
	return true;
}

static struct reputation_evidence
reputation_decayed(const struct reputation_evidence *ev, long long now_ms,
		   long halflife_ms)
{
	struct reputation_evidence d = { 0, 0, 0, now_ms };
	if (!ev)
		return d;
	long long age = now_ms - ev->updated_ms;
	d.good = reputation_decay(ev->good, age, halflife_ms);
	d.bad = reputation_decay(ev->bad, age, halflife_ms);
	d.content = reputation_decay(ev->content, age, halflife_ms);
	d.updated_ms = ev->updated_ms > now_ms ? ev->updated_ms : now_ms;
	return d;
}

static void reputation_count(double *host, double *net, double add)
{
	if (add <= 0)
		return;
	if (*host < REPUTATION_DISTINCT_FLOOR)
		*net += 1.0;
	*host += add;
}

void reputation_apply(const struct reputation_evidence *host,
		      const struct reputation_evidence *net,
		      const struct reputation_delta *d, long long at_ms,
		      long halflife_ms, struct reputation_evidence *host_out,
		      struct reputation_evidence *net_out)
{
	struct reputation_evidence h = reputation_decayed(host, at_ms, halflife_ms);
	struct reputation_evidence n = reputation_decayed(net, at_ms, halflife_ms);
	reputation_count(&h.good, &n.good, d->good);
	reputation_count(&h.bad, &n.bad, d->bad);
	reputation_count(&h.content, &n.content, d->content);
	*host_out = h;
	*net_out = n;
}

/* Whether count distinct addresses of a network outweigh its good ones. */
static bool reputation_network_counts(double count, double good,
				      const struct reputation_params *p)
{
	if (p->network_min_addresses == 0 ||
	    count < p->network_min_addresses - REPUTATION_COUNT_SLACK)
		return false;
	return count * REPUTATION_PERCENT >= good * p->network_bad_share;
}

/* A decayed counter as whole events: each counts while its decayed
 * weight is at least half (one half-life). */
static double reputation_counted(double v)
{
	return floor(v + REPUTATION_DISTINCT_FLOOR);
}

static int reputation_round(double w)
{
	if (!(w > 0)) /* also NaN */
		return 0;
	return w >= REPUTATION_WEIGHT_MAX ? REPUTATION_WEIGHT_MAX : (int)lround(w);
}

void reputation_weigh(const struct reputation_evidence *host,
		      const struct reputation_evidence *net, long long now_ms,
		      const struct reputation_params *p,
		      struct reputation_verdict *out)
{
	memset(out, 0, sizeof *out);
	if (host && reputation_valid(host)) {
		struct reputation_evidence h = reputation_decayed(host, now_ms, p->halflife_ms);
		/* Counted events, not decayed fractions: one event counts for
		 * one half-life, so a verdict does not flip between 2 and 1
		 * a second after the event (1.5 would round either way). */
		double g = reputation_counted(h.good), b = reputation_counted(h.bad);
		double s = (g - b) / (g + b + 1.0);
		if (s < 0) /* NaN (inf/inf) is not < 0: unknown */
			out->reputation = reputation_round((s < -1 ? 1 : -s) * p->weight_reputation);
		out->content = reputation_round(reputation_counted(h.content) * p->weight_content);
	}
	if (net && reputation_valid(net)) {
		struct reputation_evidence n = reputation_decayed(net, now_ms, p->halflife_ms);
		if (reputation_network_counts(n.bad, n.good, p) &&
		    (int)p->weight_network > out->reputation) {
			out->reputation = (int)p->weight_network;
			out->net_reputation = true;
		}
		if (reputation_network_counts(n.content, n.good, p) &&
		    (int)p->weight_content > out->content) {
			out->content = (int)p->weight_content;
			out->net_content = true;
		}
	}
}

bool reputation_stale(const struct reputation_evidence *ev, long long now_ms,
		      long halflife_ms)
{
	struct reputation_evidence d = reputation_decayed(ev, now_ms, halflife_ms);
	return d.good + d.bad + d.content < REPUTATION_PRUNE_WEIGHT;
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
