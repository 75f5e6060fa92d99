/*
 * Unit tests for reputation, the arithmetic every store shares, alone (no
 * store, no loop, no clock): the decay table; keys by family and prefix;
 * a network gains each address once per kind; a network counts only with
 * enough distinct bad addresses outweighing its good ones; content
 * refusals shape once and add up only when repeated, and decay; damaged
 * records; staleness for the prune; the pass rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <float.h>
#include <math.h>
#include <netinet/in.h>
#include <string.h>

#include "reputation.h"
#include "unit.h"

#define DAY_MS (24L * 3600 * 1000)
#define EPS 1e-12
#define H 3600000L /* half-life: one hour */
#define T0 1700000000000LL

static const struct reputation_prefixes prefixes = { 24, 64, 48 };
static const struct reputation_params params = {
	.halflife_ms = H, .network_min_addresses = 5, .network_bad_share = 10,
	.weight_reputation = 3, .weight_network = 2, .weight_content = 3 };

/* One event on (host, net), as a store applies it. */
static void apply(struct reputation_evidence *host, struct reputation_evidence *net,
		  enum reputation_event ev, long long at)
{
	struct reputation_delta d;
	assert_true(reputation_delta(ev, &d));
	reputation_apply(host, net, &d, at, H, host, net);
}

static struct ipaddr ip(const char *text)
{
	struct ipaddr a = { 0 };
	a.family = strchr(text, ':') ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(a.family, text, a.b), 1);
	return a;
}

static void test_decay_table(void **state)
{
	static const struct {
		const char *name;
		double v;
		long long age_ms;
		long halflife_ms;
		double want;
	} rows[] = {
		{ "fresh", 1.0, 0, 1000, 1.0 },
		{ "one half-life", 1.0, 1000, 1000, 0.5 },
		{ "three half-lives", 8.0, 3000, 1000, 1.0 },
		{ "half a half-life", 2.0, 500, 1000, M_SQRT2 },
		{ "a week at 7d", 4.0, 7 * DAY_MS, 7 * DAY_MS, 2.0 },
		{ "two weeks at 7d", 4.0, 14 * DAY_MS, 7 * DAY_MS, 1.0 },
		{ "zero stays zero", 0.0, 5000, 1000, 0.0 },
		{ "future (clock step) keeps", 3.0, -5000, 1000, 3.0 },
		{ "halflife 0 disables", 3.0, 1000, 0, 3.0 },
		{ "halflife < 0 disables", 3.0, 1000, -1, 3.0 },
		{ "underflow to 0", 1.0, 2000000LL, 1000, 0.0 },
	};

	for (size_t i = 0; i < UNIT_NELEM(rows); i++) {
		double got = reputation_decay(rows[i].v, rows[i].age_ms,
					      rows[i].halflife_ms);
		if (fabs(got - rows[i].want) > EPS * (1 + rows[i].want))
			fail_msg("%s: got %.15g want %.15g", rows[i].name, got,
				 rows[i].want);
	}
}

static void test_keys(void **state)
{
	struct reputation_keys k;
	struct ipaddr a = ip("192.0.2.77");
	assert_true(reputation_keys(&a, &prefixes, &k));
	assert_int_equal(k.host_bits, 32);
	assert_int_equal(k.net_bits, 24);
	assert_memory_equal(k.host.b, "\xc0\x00\x02\x4d", 4);
	assert_memory_equal(k.net.b, "\xc0\x00\x02\x00", 4);

	a = ip("2001:db8:1:2:3:4:5:6");
	assert_true(reputation_keys(&a, &prefixes, &k));
	assert_int_equal(k.host_bits, 64);
	assert_memory_equal(k.host.b, "\x20\x01\x0d\xb8\x00\x01\x00\x02\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(k.net_bits, 48);
	assert_memory_equal(k.net.b, "\x20\x01\x0d\xb8\x00\x01\0\0\0\0\0\0\0\0\0\0", 16);
	/* Two hosts of one /64 are one client. */
	struct reputation_keys k2;
	struct ipaddr b = ip("2001:db8:1:2:ffff::1");
	assert_true(reputation_keys(&b, &prefixes, &k2));
	assert_memory_equal(&k.host, &k2.host, sizeof k.host);

	/* An odd prefix masks inside a byte; nonsense prefixes are refused. */
	struct reputation_prefixes odd = { 20, 64, 48 };
	a = ip("192.0.255.77");
	assert_true(reputation_keys(&a, &odd, &k));
	assert_memory_equal(k.net.b, "\xc0\x00\xf0\x00", 4);
	struct reputation_prefixes bad = { 33, 64, 48 };
	assert_false(reputation_keys(&a, &bad, &k));
	struct reputation_prefixes bad6 = { 24, 48, 64 };
	b = ip("2001:db8::1");
	assert_false(reputation_keys(&b, &bad6, &k));
	struct ipaddr none = { 0 };
	assert_false(reputation_keys(&none, &prefixes, &k));
}

static void test_one_address_counts_once(void **state)
{
	struct reputation_evidence host = { 0 }, net = { 0 };
	struct reputation_verdict v;
	for (int i = 0; i < 50; i++)
		apply(&host, &net, REPUTATION_HANGUP_SHAPED, T0 + i);
	assert_true(net.bad > 0.99 && net.bad < 1.01);
	assert_true(host.bad > 49);
	reputation_weigh(NULL, &net, T0 + 100, &params, &v);
	assert_int_equal(v.reputation, 0); /* one bad neighbour taints nobody */
	reputation_weigh(&host, &net, T0 + 100, &params, &v);
	assert_int_equal(v.reputation, 3); /* but the address itself */
	assert_false(v.net_reputation);
	/* One hang-up: (0 - 1) / 2 = -0.5, times 3. */
	struct reputation_evidence one = { 0 }, onet = { 0 };
	apply(&one, &onet, REPUTATION_EARLY_CLOSE, T0);
	reputation_weigh(&one, NULL, T0, &params, &v);
	assert_int_equal(v.reputation, 2);
	/* Deliveries outweigh it. */
	apply(&one, &onet, REPUTATION_DELIVERED, T0);
	apply(&one, &onet, REPUTATION_DELIVERED, T0);
	reputation_weigh(&one, NULL, T0, &params, &v);
	assert_int_equal(v.reputation, 0);
	struct reputation_delta d;
	assert_false(reputation_delta(REPUTATION_EVENT_COUNT, &d));
}

static void test_network_needs_distinct_addresses_outweighing_good(void **state)
{
	struct reputation_evidence net = { 0 }, host;
	struct reputation_verdict v;
	for (int i = 0; i < 200; i++) { /* 200 distinct good addresses */
		host = (struct reputation_evidence){ 0 };
		apply(&host, &net, REPUTATION_DELIVERED, T0 + i);
	}
	for (int i = 0; i < 19; i++) {
		host = (struct reputation_evidence){ 0 };
		apply(&host, &net, REPUTATION_HANGUP_SHAPED, T0 + 1000 + i);
	}
	reputation_weigh(NULL, &net, T0 + 2000, &params, &v);
	assert_int_equal(v.reputation, 0); /* 19 < 10 % of 200 */
	host = (struct reputation_evidence){ 0 };
	apply(&host, &net, REPUTATION_HANGUP_SHAPED, T0 + 1500);
	reputation_weigh(NULL, &net, T0 + 2000, &params, &v);
	assert_int_equal(v.reputation, 2);
	assert_true(v.net_reputation);
	assert_int_equal(v.content, 0);

	/* Fewer than network_min_addresses never count, good or not. */
	struct reputation_evidence small = { 0 };
	for (int i = 0; i < 4; i++) {
		host = (struct reputation_evidence){ 0 };
		apply(&host, &small, REPUTATION_EARLY_CLOSE, T0);
	}
	reputation_weigh(NULL, &small, T0, &params, &v);
	assert_int_equal(v.reputation, 0);
	host = (struct reputation_evidence){ 0 };
	apply(&host, &small, REPUTATION_HARVEST, T0);
	reputation_weigh(NULL, &small, T0 + 10, &params, &v);
	assert_int_equal(v.reputation, 2);
	/* Decay: two half-lives later 5 addresses weigh 1.25. */
	reputation_weigh(NULL, &small, T0 + 2 * H, &params, &v);
	assert_int_equal(v.reputation, 0);
}

static void test_content_shapes_once_adds_up_when_repeated_decays(void **state)
{
	struct reputation_evidence host = { 0 }, net = { 0 };
	struct reputation_verdict v;
	apply(&host, &net, REPUTATION_DELIVERED, T0);
	apply(&host, &net, REPUTATION_CONTENT_REFUSED, T0 + 1);
	reputation_weigh(&host, &net, T0 + 2, &params, &v);
	assert_int_equal(v.content, 3);
	assert_int_equal(v.reputation, 0);
	assert_false(v.net_content); /* one address: only itself */
	reputation_weigh(&host, &net, T0 + H - 1000, &params, &v);
	assert_int_equal(v.content, 3);       /* within a half-life */
	reputation_weigh(&host, &net, T0 + H + 60000, &params, &v);
	assert_int_equal(v.content, 0);       /* decayed: recovered */
	apply(&host, &net, REPUTATION_CONTENT_REFUSED, T0 + 10);
	apply(&host, &net, REPUTATION_CONTENT_REFUSED, T0 + 20);
	reputation_weigh(&host, &net, T0 + 30, &params, &v);
	assert_int_equal(v.content, 9);       /* repeated: can reach reject */
	assert_true(net.content > 0.99 && net.content < 1.01);

	/* Distinct refused addresses shape their network's new addresses. */
	for (int i = 0; i < 4; i++) {
		struct reputation_evidence h = { 0 };
		apply(&h, &net, REPUTATION_CONTENT_REFUSED, T0 + 40 + i);
	}
	reputation_weigh(NULL, &net, T0 + 50, &params, &v);
	assert_int_equal(v.content, 3);
	assert_true(v.net_content);
}

static void test_apply_stamps_and_damaged_records(void **state)
{
	struct reputation_evidence old = { 4, 0, 0, T0 }, out, nout;
	struct reputation_delta d;
	assert_true(reputation_delta(REPUTATION_DELIVERED, &d));
	reputation_apply(&old, NULL, &d, T0 + 2 * H, H, &out, &nout);
	assert_true(fabs(out.good - 2.0) < EPS && out.updated_ms == T0 + 2 * H);
	assert_true(nout.good == 0 && nout.updated_ms == T0 + 2 * H);
	/* A later stamp (another writer's clock) stays. */
	struct reputation_evidence later = { 1, 0, 0, T0 + 5000 };
	reputation_apply(&later, NULL, &d, T0, H, &out, &nout);
	assert_true(out.good == 2 && out.updated_ms == T0 + 5000);

	struct reputation_evidence bad = { -1, 0, 0, T0 };
	struct reputation_verdict v;
	reputation_weigh(&bad, &bad, T0, &params, &v);
	assert_int_equal(v.reputation, 0);
	assert_int_equal(v.content, 0);
	struct reputation_evidence huge = { 0, 1e300, 1e300, T0 };
	reputation_weigh(&huge, NULL, T0, &params, &v);
	assert_int_equal(v.reputation, 3);
	assert_int_equal(v.content, 1000000);
	struct reputation_evidence nan_ = { DBL_MAX, DBL_MAX, 0, T0 };
	reputation_weigh(&nan_, NULL, T0, &params, &v); /* inf/inf: unknown */
	assert_int_equal(v.reputation, 0);
	assert_string_equal(reputation_event_name(REPUTATION_CONTENT_REFUSED), "content");
	assert_string_equal(reputation_event_name(REPUTATION_EVENT_COUNT), "?");
}

static void test_valid_and_stale(void **state)
{
	const long h = 1000;
	struct reputation_evidence ok = { 1, 0, 0, 0 };
	struct reputation_evidence neg = { -1, 0, 0, 0 };
	struct reputation_evidence nan_ = { NAN, 0, 0, 0 };
	struct reputation_evidence inf = { 0, 0, INFINITY, 0 };

	assert_true(reputation_valid(&ok));
	assert_false(reputation_valid(&neg));
	assert_false(reputation_valid(&nan_));
	assert_false(reputation_valid(&inf));
	/* One event is stale after about 3.3 half-lives. */
	assert_false(reputation_stale(&ok, 3 * h, h));
	assert_true(reputation_stale(&ok, 4 * h, h));
	/* No decay: never stale unless empty. */
	assert_false(reputation_stale(&ok, 100 * h, 0));
}

static void test_pass(void **state)
{
	assert_true(reputation_passed(1001, 1000));
	assert_false(reputation_passed(1000, 1000));
	assert_false(reputation_passed(0, 1000));
	assert_int_equal(reputation_pass_merge(5000, 3000), 5000);
	assert_int_equal(reputation_pass_merge(3000, 5000), 5000);
	assert_int_equal(reputation_pass_merge(5000, 5000), 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decay_table),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_one_address_counts_once),
		cmocka_unit_test(test_network_needs_distinct_addresses_outweighing_good),
		cmocka_unit_test(test_content_shapes_once_adds_up_when_repeated_decays),
		cmocka_unit_test(test_apply_stamps_and_damaged_records),
		cmocka_unit_test(test_valid_and_stale),
		cmocka_unit_test(test_pass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
