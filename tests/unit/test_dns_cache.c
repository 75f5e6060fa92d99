/*
 * Unit tests for dns_cache: a name is found for its TTL (clamped) and not
 * after; a temporary failure is kept briefly; names are kept only for the
 * statuses that have one; the table starts small and grows with the
 * clients seen up to its maximum, keeping what it held.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "dns_cache.h"

static int teardown(void **state)
{
	dns_cache_clear();
	return 0;
}

static struct in_addr v4(unsigned n)
{
	struct in_addr a = {.s_addr = htonl(0x0a000000u + n)};
	return a;
}

static void test_ttl_clamped_and_expiry(void **state)
{
	struct in_addr a = v4(1);
	enum dns_name_status st;
	char name[DNS_NAME_MAX + 1];
	assert_int_equal(dns_cache_slots(), 0); /* nothing before the first */
	assert_false(dns_cache_get(AF_INET, &a, 1000, &st, name, sizeof name));
	dns_cache_put(AF_INET, &a, DNS_NAME_OK, "mx.example.net", 5, 1000);
	assert_int_equal(dns_cache_slots(), DNS_CACHE_SLOTS_MIN);
	assert_true(dns_cache_get(AF_INET, &a, 1000 + DNS_CACHE_MIN_S - 1, &st, name, sizeof name));
	assert_int_equal(st, DNS_NAME_OK);
	assert_string_equal(name, "mx.example.net");
	assert_false(dns_cache_get(AF_INET, &a, 1000 + DNS_CACHE_MIN_S, &st, name, sizeof name));
	dns_cache_put(AF_INET, &a, DNS_NAME_UNAVAILABLE, "ignored", 999999, 2000);
	assert_true(dns_cache_get(AF_INET, &a, 2000 + DNS_CACHE_MAX_S - 1, &st, name, sizeof name));
	assert_int_equal(st, DNS_NAME_UNAVAILABLE);
	assert_string_equal(name, ""); /* no name for a missing PTR */
	assert_false(dns_cache_get(AF_INET, &a, 2000 + DNS_CACHE_MAX_S, &st, name, sizeof name));
	dns_cache_put(AF_INET, &a, DNS_NAME_TEMPFAIL, "", 3600, 3000);
	assert_true(dns_cache_get(AF_INET, &a, 3000 + DNS_CACHE_FAIL_S - 1, &st, name, sizeof name));
	assert_int_equal(st, DNS_NAME_TEMPFAIL);
	assert_false(dns_cache_get(AF_INET, &a, 3000 + DNS_CACHE_FAIL_S, &st, name, sizeof name));
}

static void test_families_and_short_buffer(void **state)
{
	struct in6_addr a6;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &a6), 1);
	struct in_addr a4;
	memcpy(&a4, &a6, 4); /* the same first four bytes, another family */
	enum dns_name_status st;
	char name[8];
	dns_cache_put(AF_INET6, &a6, DNS_NAME_UNCONFIRMED, "long-name.example", 60, 0);
	assert_false(dns_cache_get(AF_INET, &a4, 1, &st, name, sizeof name));
	assert_true(dns_cache_get(AF_INET6, &a6, 1, &st, name, sizeof name));
	assert_int_equal(st, DNS_NAME_UNCONFIRMED);
	assert_string_equal(name, "long-na"); /* cut to the buffer */
	dns_cache_put(AF_UNIX, &a6, DNS_NAME_OK, "x", 60, 0); /* ignored */
}

static void test_grows_with_use_and_keeps_entries(void **state)
{
	enum dns_name_status st;
	char name[DNS_NAME_MAX + 1];
	unsigned n = DNS_CACHE_SLOTS_MAX * 2;
	size_t last = 0;
	for (unsigned i = 0; i < n; i++) {
		struct in_addr a = v4(i);
		char want[32];
		snprintf(want, sizeof want, "h%u.example", i);
		dns_cache_put(AF_INET, &a, DNS_NAME_OK, want, 600, 0);
		size_t slots = dns_cache_slots();
		assert_true(slots >= last && slots <= DNS_CACHE_SLOTS_MAX);
		last = slots;
		/* The entry just put is always there. */
		assert_true(dns_cache_get(AF_INET, &a, 1, &st, name, sizeof name));
		assert_string_equal(name, want);
	}
	assert_int_equal(dns_cache_slots(), DNS_CACHE_SLOTS_MAX);
	/* Collisions replace: a good share of the last slots' worth of
	 * clients is still there, with the right names. */
	unsigned found = 0;
	for (unsigned i = n - DNS_CACHE_SLOTS_MAX; i < n; i++) {
		struct in_addr a = v4(i);
		char want[32];
		snprintf(want, sizeof want, "h%u.example", i);
		if (dns_cache_get(AF_INET, &a, 1, &st, name, sizeof name)) {
			assert_string_equal(name, want);
			found++;
		}
	}
	assert_true(found > DNS_CACHE_SLOTS_MAX / 2);
}

static void test_growth_keeps_entries(void **state)
{
	enum dns_name_status st;
	char name[DNS_NAME_MAX + 1];
	struct in_addr first = v4(7);
	dns_cache_put(AF_INET, &first, DNS_NAME_OK, "first.example", 600, 0);
	for (unsigned i = 100; i < 100 + DNS_CACHE_SLOTS_MIN; i++) {
		struct in_addr a = v4(i * 977);
		dns_cache_put(AF_INET, &a, DNS_NAME_UNAVAILABLE, NULL, 600, 0);
	}
	assert_true(dns_cache_slots() > DNS_CACHE_SLOTS_MIN);
	/* Moved with every doubling, unless a later address took its slot. */
	if (dns_cache_get(AF_INET, &first, 1, &st, name, sizeof name))
		assert_string_equal(name, "first.example");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_ttl_clamped_and_expiry, teardown),
		cmocka_unit_test_teardown(test_families_and_short_buffer, teardown),
		cmocka_unit_test_teardown(test_grows_with_use_and_keeps_entries, teardown),
		cmocka_unit_test_teardown(test_growth_keeps_entries, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
