/*
 * outcome: the reputation arithmetic (see outcome.h and, for the reasons
 * behind every number, docs/classification.md "Reputation").
 *
 * Exports outcome_keys, outcome_decay, outcome_decay_to, outcome_apply,
 * outcome_weigh, outcome_evidence_ok, outcome_name and
 * outcome_distinct_floor. Pure: callers own every struct; nothing here
 * reads a clock, so a store applies evidence with the writer's time and
 * reads it with the reader's.
 *
 * The client's record counts outcomes: good (delivered, never shaped),
 * bad (hung up while shaped, gone before its end-of-data reply,
 * harvesting) and content (refused with 5.7.x at end of data). Its
 * network's record counts addresses: a client adds itself to its
 * network's count of a kind when its own counter of that kind was under
 * OUTCOME_DISTINCT_FLOOR, i.e. it had not earned that kind within about a
 * half-life. So one address that keeps failing counts once, however many
 * sessions it opens (in parallel too: the stores apply an event to both
 * records in one transaction or script).
 *
 * Verdict for a new session:
 *   REPUTATION = max(client, network):
 *     client: s = (good - bad) / (good + bad + 1), in (-1, 1);
 *             weight_reputation * -s, rounded, when s < 0;
 *     network: weight_network when its bad addresses reach
 *             network_min_addresses (less OUTCOME_COUNT_SLACK, so that
 *             decay by a millisecond does not undo a count) and are at
 *             least network_bad_share percent of its good addresses.
 *   CONTENT = max(client, network):
 *     client: weight_content per refusal still counted (the decayed
 *             count rounded: one refusal counts for one half-life);
 *     network: weight_content once, under the same rule as above with
 *             the content addresses.
 * weight_network stays below shape_threshold by default: bad neighbours
 * alone never shape an address that shows nothing of its own; the mail
 * server's content verdicts from several addresses do.
 */
#include "outcome.h"

#include <math.h>
#include <netinet/in.h>
#include <string.h>

/* A counter under this means "not counted for this kind": one event is
 * 1.0 and falls under 0.5 after one half-life. */
#define OUTCOME_DISTINCT_FLOOR 0.5
/* Counts compared with a whole number of addresses get this slack:
 * N addresses recorded a moment ago have decayed a hair below N. */
#define OUTCOME_COUNT_SLACK 0.1
#define OUTCOME_PERCENT 100.0

static const struct {
	const char *name;
	double good, bad, content;
} outcome_table[OUTCOME_COUNT] = {
#define OUTCOME_ROW(id, n, g, b, c) [OUTCOME_##id] = {n, g, b, c},
	OUTCOMES(OUTCOME_ROW)
#undef OUTCOME_ROW
};

const char *outcome_name(enum outcome_event ev)
{
	return (unsigned)ev < OUTCOME_COUNT ? outcome_table[ev].name : "?";
}

double outcome_distinct_floor(void)
{
	return OUTCOME_DISTINCT_FLOOR;
}

static void outcome_mask(unsigned char *b, size_t len, unsigned prefix)
{
	for (size_t i = 0; i < len; i++) {
		unsigned bit = (unsigned)i * 8;
		if (bit >= prefix)
			b[i] = 0;
		else if (prefix - bit < 8)
			b[i] &= (unsigned char)(0xffu << (8 - (prefix - bit)));
	}
}

static void outcome_key_set(struct outcome_key *k, int family,
			    const unsigned char *addr, unsigned prefix)
{
	size_t len = family == AF_INET ? 4 : 16;
	unsigned max = (unsigned)len * 8;
	memset(k, 0, sizeof *k);
	k->family = family;
	k->prefix = prefix > max ? max : prefix;
	memcpy(k->b, addr, len);
	outcome_mask(k->b, len, k->prefix);
}

bool outcome_keys(const struct sockaddr *addr, const struct outcome_prefixes *p,
		  struct outcome_key *host, struct outcome_key *net)
{
	unsigned char b[16];
	if (!addr)
		return false;
	if (addr->sa_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, addr, sizeof sin);
		memcpy(b, &sin.sin_addr, 4);
	} else if (addr->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, addr, sizeof sin6);
		if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
			memcpy(b, sin6.sin6_addr.s6_addr + 12, 4);
		} else {
			memcpy(b, sin6.sin6_addr.s6_addr, 16);
			outcome_key_set(host, AF_INET6, b, p->ipv6_client);
			outcome_key_set(net, AF_INET6, b, p->ipv6_net);
			return true;
		}
	} else {
		return false;
	}
	outcome_key_set(host, AF_INET, b, 32);
	outcome_key_set(net, AF_INET, b, p->ipv4_net);
	return true;
}

double outcome_decay(double v, long long age_ms, long halflife_ms)
{
	/* age <= 0: a clock step back or another process's later write; the
	 * value is not older than now, so it keeps its weight. */
	if (halflife_ms <= 0 || age_ms <= 0)
		return v;
	return v * exp2(-(double)age_ms / (double)halflife_ms);
}

void outcome_decay_to(struct outcome_evidence *e, long long now_ms, long halflife_ms)
{
	long long age = now_ms - e->updated_ms;
	e->good = outcome_decay(e->good, age, halflife_ms);
	e->bad = outcome_decay(e->bad, age, halflife_ms);
	e->content = outcome_decay(e->content, age, halflife_ms);
	if (now_ms > e->updated_ms)
		e->updated_ms = now_ms;
}

bool outcome_evidence_ok(const struct outcome_evidence *e)
{
	return isfinite(e->good) && isfinite(e->bad) && isfinite(e->content) &&
	       e->good >= 0 && e->bad >= 0 && e->content >= 0;
}

static void outcome_count(double *host, double *net, double add)
{
	if (add <= 0)
		return;
	if (*host < OUTCOME_DISTINCT_FLOOR)
		*net += 1.0;
	*host += add;
}

bool outcome_apply(struct outcome_evidence *host, struct outcome_evidence *net,
		   enum outcome_event ev, long long now_ms, long halflife_ms)
{
	if ((unsigned)ev >= OUTCOME_COUNT)
		return false;
	outcome_decay_to(host, now_ms, halflife_ms);
	outcome_decay_to(net, now_ms, halflife_ms);
	outcome_count(&host->good, &net->good, outcome_table[ev].good);
	outcome_count(&host->bad, &net->bad, outcome_table[ev].bad);
	outcome_count(&host->content, &net->content, outcome_table[ev].content);
	return true;
}

/* Whether count distinct addresses of a network outweigh its good ones. */
static bool outcome_network_counts(double count, double good,
				   const struct outcome_params *p)
{
	if (p->network_min_addresses == 0 ||
	    count < p->network_min_addresses - OUTCOME_COUNT_SLACK)
		return false;
	return count * OUTCOME_PERCENT >= good * p->network_bad_share;
}

static int outcome_round(double w)
{
	if (!(w > 0)) /* also NaN */
		return 0;
	return w > 1e6 ? 1000000 : (int)lround(w);
}

void outcome_weigh(const struct outcome_evidence *host,
		   const struct outcome_evidence *net, long long now_ms,
		   const struct outcome_params *p, struct outcome_verdict *out)
{
	memset(out, 0, sizeof *out);
	if (host && outcome_evidence_ok(host)) {
		struct outcome_evidence h = *host;
		outcome_decay_to(&h, now_ms, p->halflife_ms);
		double s = (h.good - h.bad) / (h.good + h.bad + 1.0);
		if (s < 0)
			out->reputation = outcome_round(-(s < -1 ? -1 : s) * p->weight_reputation);
		double refusals = floor(h.content + OUTCOME_DISTINCT_FLOOR);
		out->content = outcome_round(refusals * p->weight_content);
	}
	if (net && outcome_evidence_ok(net)) {
		struct outcome_evidence n = *net;
		outcome_decay_to(&n, now_ms, p->halflife_ms);
		if (outcome_network_counts(n.bad, n.good, p) &&
		    (int)p->weight_network > out->reputation) {
			out->reputation = (int)p->weight_network;
			out->from_network_rep = true;
		}
		if (outcome_network_counts(n.content, n.good, p) &&
		    (int)p->weight_content > out->content) {
			out->content = (int)p->weight_content;
			out->from_network_content = true;
		}
	}
}
