/*
 * Unit tests for dnsfail: only NXDOMAIN and no data mean "absent"; every
 * other evdns failure is temporary; the warning limiter lets one line a
 * minute through per key and counts the rest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/dns.h>
#include <stdio.h>

#include "dnsfail.h"

static void test_classify(void **state)
{
	assert_int_equal(dnsfail_classify(DNS_ERR_NONE), DNSFAIL_NONE);
	assert_int_equal(dnsfail_classify(DNS_ERR_NOTEXIST), DNSFAIL_ABSENT);
	assert_int_equal(dnsfail_classify(DNS_ERR_NODATA), DNSFAIL_ABSENT);
	static const int temp[] = {DNS_ERR_FORMAT, DNS_ERR_SERVERFAILED, DNS_ERR_NOTIMPL,
				   DNS_ERR_REFUSED, DNS_ERR_TRUNCATED, DNS_ERR_UNKNOWN,
				   DNS_ERR_TIMEOUT, DNS_ERR_SHUTDOWN, 12345};
	for (size_t i = 0; i < sizeof temp / sizeof temp[0]; i++)
		assert_int_equal(dnsfail_classify(temp[i]), DNSFAIL_TEMP);
	assert_string_equal(dnsfail_word(DNS_ERR_REFUSED), "refused");
	assert_string_equal(dnsfail_word(DNS_ERR_UNKNOWN), "unparsable");
}

static void test_log_due_once_per_key(void **state)
{
	unsigned n = 99;
	assert_true(dnsfail_log_due("a.test", &n));
	assert_int_equal(n, 0);
	assert_false(dnsfail_log_due("a.test", &n));
	assert_false(dnsfail_log_due("a.test", &n));
	assert_true(dnsfail_log_due("b.test", &n)); /* its own key */
	/* Many keys: the table is bounded, and the overflow shares a slot
	 * rather than failing. */
	char key[32];
	unsigned due = 0;
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof key, "k%d.test", i);
		due += dnsfail_log_due(key, &n);
	}
	assert_true(due >= 1 && due < 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_log_due_once_per_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
