/*
 * Unit tests for client_limits: sessions per client, where an IPv6 client is its
 * /ipv6_client_prefix (two hosts of one /64 are one client, the next /64
 * another), an IPv4 client its address; entries go when their count
 * drops to zero; the TLS rate counts clients the same way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>

#include "client_limits.h"
#include "unit.h"

static unsigned enter(const char *ip, unsigned prefix)
{
	struct sockaddr_storage ss;
	return client_limits_enter(unit_sockaddr(&ss, ip), prefix);
}

static void leave(const char *ip, unsigned prefix)
{
	struct sockaddr_storage ss;
	client_limits_leave(unit_sockaddr(&ss, ip), prefix);
}

static void test_ipv6_client_is_its_prefix(void **state)
{
	assert_int_equal(enter("2001:db8:1:2::1", 64), 1);
	assert_int_equal(enter("2001:db8:1:2:ffff:ffff:ffff:ffff", 64), 2);
	assert_int_equal(enter("2001:db8:1:3::1", 64), 1); /* the next /64 */
	/* /128: every address its own client. */
	assert_int_equal(enter("2001:db8:9::1", 128), 1);
	assert_int_equal(enter("2001:db8:9::2", 128), 1);
	/* An odd prefix masks inside a byte: /60 holds ...:2:: to ...:f::. */
	assert_int_equal(enter("2001:db8:7:12::1", 60), 1);
	assert_int_equal(enter("2001:db8:7:1f::1", 60), 2);
	assert_int_equal(enter("2001:db8:7:20::1", 60), 1);
	/* IPv4: per address, whatever the IPv6 prefix. */
	assert_int_equal(enter("192.0.2.1", 64), 1);
	assert_int_equal(enter("192.0.2.2", 64), 1);

	leave("2001:db8:1:2::1", 64);
	leave("2001:db8:1:2:ffff:ffff:ffff:ffff", 64);
	/* Gone at zero: a new session starts at one again. */
	assert_int_equal(enter("2001:db8:1:2::7", 64), 1);
	leave("2001:db8:1:2::7", 64);
	leave("2001:db8:1:3::1", 64);
}

static void test_tls_rate_by_client(void **state)
{
	struct sockaddr_storage ss;
	unsigned a = client_limits_tls_rate(unit_sockaddr(&ss, "2001:db8:5:5::1"), 64);
	unsigned b = client_limits_tls_rate(unit_sockaddr(&ss, "2001:db8:5:5::2"), 64);
	assert_int_equal(b, a + 1);
	unsigned c = client_limits_tls_rate(unit_sockaddr(&ss, "2001:db8:5:5::3"), 128);
	assert_int_equal(c, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv6_client_is_its_prefix),
		cmocka_unit_test(test_tls_rate_by_client),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
