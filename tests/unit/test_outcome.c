/*
 * Unit tests for outcome, the reputation arithmetic: keys by family and
 * prefix; a network gains each address once per kind; a network counts
 * only with enough distinct bad addresses outweighing its good ones;
 * content refusals shape once and add up only when repeated; decay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "outcome.h"

#define H 3600000L /* half-life: one hour */
#define T0 1700000000000LL

static const struct outcome_prefixes prefixes = {24, 64, 48};
static const struct outcome_params params = {
	.halflife_ms = H, .network_min_addresses = 5, .network_bad_share = 10,
	.weight_reputation = 3, .weight_network = 2, .weight_content = 3};

static void test_keys(void **state)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct outcome_key host, net;
	inet_pton(AF_INET, "192.0.2.77", &sin.sin_addr);
	assert_true(outcome_keys((struct sockaddr *)&sin, &prefixes, &host, &net));
	assert_int_equal(host.prefix, 32);
	assert_int_equal(net.prefix, 24);
	assert_memory_equal(net.b, "\xc0\x00\x02\x00", 4);

	struct sockaddr_in6 six = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8:1:2:3:4:5:6", &six.sin6_addr);
	assert_true(outcome_keys((struct sockaddr *)&six, &prefixes, &host, &net));
	assert_int_equal(host.prefix, 64);
	assert_memory_equal(host.b, "\x20\x01\x0d\xb8\x00\x01\x00\x02\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(net.prefix, 48);
	assert_memory_equal(net.b, "\x20\x01\x0d\xb8\x00\x01\0\0\0\0\0\0\0\0\0\0", 16);
	/* Two hosts of one /64 are one client. */
	struct sockaddr_in6 other = six;
	other.sin6_addr.s6_addr[15] ^= 0xff;
	struct outcome_key host2, net2;
	assert_true(outcome_keys((struct sockaddr *)&other, &prefixes, &host2, &net2));
	assert_memory_equal(&host, &host2, sizeof host);

	inet_pton(AF_INET6, "::ffff:192.0.2.77", &six.sin6_addr);
	assert_true(outcome_keys((struct sockaddr *)&six, &prefixes, &host, &net));
	assert_int_equal(host.family, AF_INET);
	assert_int_equal(net.prefix, 24);

	struct sockaddr un = {.sa_family = AF_UNIX};
	assert_false(outcome_keys(&un, &prefixes, &host, &net));
	/* An odd prefix masks inside a byte. */
	struct outcome_prefixes odd = {20, 64, 48};
	inet_pton(AF_INET, "192.0.255.77", &sin.sin_addr);
	assert_true(outcome_keys((struct sockaddr *)&sin, &odd, &host, &net));
	assert_memory_equal(net.b, "\xc0\x00\xf0\x00", 4);
}

static void test_one_address_counts_once(void **state)
{
	struct outcome_evidence host = {0}, net = {0};
	for (int i = 0; i < 50; i++)
		assert_true(outcome_apply(&host, &net, OUTCOME_HANGUP_SHAPED, T0 + i, H));
	assert_true(net.bad > 0.99 && net.bad < 1.01);
	assert_true(host.bad > 49);
	struct outcome_verdict v;
	outcome_weigh(NULL, &net, T0 + 100, &params, &v);
	assert_int_equal(v.reputation, 0); /* one bad neighbour taints nobody */
	outcome_weigh(&host, &net, T0 + 100, &params, &v);
	assert_int_equal(v.reputation, 3); /* but the address itself */
	assert_false(v.from_network_rep);
	assert_false(outcome_apply(&host, &net, OUTCOME_COUNT, T0, H));
}

static void test_network_needs_distinct_addresses_outweighing_good(void **state)
{
	struct outcome_evidence net = {0}, host;
	struct outcome_verdict v;
	for (int i = 0; i < 200; i++) { /* 200 distinct good addresses */
		host = (struct outcome_evidence){0};
		outcome_apply(&host, &net, OUTCOME_DELIVERED, T0 + i, H);
	}
	for (int i = 0; i < 19; i++) {
		host = (struct outcome_evidence){0};
		outcome_apply(&host, &net, OUTCOME_HANGUP_SHAPED, T0 + 1000 + i, H);
	}
	outcome_weigh(NULL, &net, T0 + 2000, &params, &v);
	assert_int_equal(v.reputation, 0); /* 19 < 10 % of 200 */
	host = (struct outcome_evidence){0};
	outcome_apply(&host, &net, OUTCOME_HANGUP_SHAPED, T0 + 1500, H);
	outcome_weigh(NULL, &net, T0 + 2000, &params, &v);
	assert_int_equal(v.reputation, 2);
	assert_true(v.from_network_rep);
	assert_int_equal(v.content, 0);

	/* Fewer than network_min_addresses never count, good or not. */
	struct outcome_evidence small = {0};
	for (int i = 0; i < 4; i++) {
		host = (struct outcome_evidence){0};
		outcome_apply(&host, &small, OUTCOME_EARLY_CLOSE, T0, H);
	}
	outcome_weigh(NULL, &small, T0, &params, &v);
	assert_int_equal(v.reputation, 0);
	host = (struct outcome_evidence){0};
	outcome_apply(&host, &small, OUTCOME_HARVEST, T0, H);
	outcome_weigh(NULL, &small, T0 + 10, &params, &v);
	assert_int_equal(v.reputation, 2);
	/* Decay: two half-lives later 5 addresses weigh 1.25. */
	outcome_weigh(NULL, &small, T0 + 2 * H, &params, &v);
	assert_int_equal(v.reputation, 0);
}

static void test_content_shapes_once_adds_up_when_repeated_decays(void **state)
{
	struct outcome_evidence host = {0}, net = {0};
	struct outcome_verdict v;
	outcome_apply(&host, &net, OUTCOME_DELIVERED, T0, H);
	outcome_apply(&host, &net, OUTCOME_CONTENT_REFUSED, T0 + 1, H);
	outcome_weigh(&host, &net, T0 + 2, &params, &v);
	assert_int_equal(v.content, 3);
	assert_int_equal(v.reputation, 0);
	assert_false(v.from_network_content); /* one address: only itself */
	outcome_weigh(&host, &net, T0 + H - 1000, &params, &v);
	assert_int_equal(v.content, 3);       /* within a half-life */
	outcome_weigh(&host, &net, T0 + H + 60000, &params, &v);
	assert_int_equal(v.content, 0);       /* decayed: recovered */
	outcome_apply(&host, &net, OUTCOME_CONTENT_REFUSED, T0 + 10, H);
	outcome_apply(&host, &net, OUTCOME_CONTENT_REFUSED, T0 + 20, H);
	outcome_weigh(&host, &net, T0 + 30, &params, &v);
	assert_int_equal(v.content, 9);       /* repeated: can reach reject */
	assert_true(net.content > 0.99 && net.content < 1.01);

	/* Distinct refused addresses shape their network's new addresses. */
	for (int i = 0; i < 4; i++) {
		struct outcome_evidence h = {0};
		outcome_apply(&h, &net, OUTCOME_CONTENT_REFUSED, T0 + 40 + i, H);
	}
	outcome_weigh(NULL, &net, T0 + 50, &params, &v);
	assert_int_equal(v.content, 3);
	assert_true(v.from_network_content);
}

static void test_bad_records(void **state)
{
	struct outcome_evidence bad = {-1, 0, 0, T0};
	struct outcome_verdict v;
	assert_false(outcome_evidence_ok(&bad));
	outcome_weigh(&bad, &bad, T0, &params, &v);
	assert_int_equal(v.reputation, 0);
	assert_int_equal(v.content, 0);
	struct outcome_evidence huge = {0, 1e300, 1e300, T0};
	outcome_weigh(&huge, NULL, T0, &params, &v);
	assert_int_equal(v.reputation, 3);
	assert_int_equal(v.content, 1000000);
	assert_true(outcome_decay(8, 2 * H, H) == 2);
	assert_true(outcome_decay(8, -5, H) == 8);
	assert_string_equal(outcome_name(OUTCOME_CONTENT_REFUSED), "content");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_one_address_counts_once),
		cmocka_unit_test(test_network_needs_distinct_addresses_outweighing_good),
		cmocka_unit_test(test_content_shapes_once_adds_up_when_repeated_decays),
		cmocka_unit_test(test_bad_records),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
