/*
 * Unit tests for ratelog: the first event logs at once, then at most one
 * line per RATELOG_INTERVAL_S, each with every event since the last line;
 * a clock that steps back does not silence it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelog.h"

static void test_first_then_once_a_minute(void **state)
{
	struct ratelog r = {0};
	unsigned long n = 0;
	time_t t = 1000000;
	assert_true(ratelog_due(&r, t, &n));
	assert_int_equal(n, 1);
	for (int i = 0; i < 500; i++)
		assert_false(ratelog_due(&r, t + i % RATELOG_INTERVAL_S, &n));
	assert_true(ratelog_due(&r, t + RATELOG_INTERVAL_S, &n));
	assert_int_equal(n, 501); /* nothing lost */
	assert_false(ratelog_due(&r, t + RATELOG_INTERVAL_S + 1, &n));
}

static void test_clock_back(void **state)
{
	struct ratelog r = {0};
	unsigned long n = 0;
	assert_true(ratelog_due(&r, 5000, &n));
	assert_true(ratelog_due(&r, 100, &n)); /* stepped back: log, re-arm */
	assert_int_equal(n, 1);
	assert_false(ratelog_due(&r, 101, &n));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_then_once_a_minute),
		cmocka_unit_test(test_clock_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
