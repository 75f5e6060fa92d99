/*
 * Unit tests for ratelog: the first event logs at once, then at most one
 * line per interval; each line reports the events held back since the
 * last one, so a flood costs one line an interval and no count is lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelog.h"

#define INTERVAL_MS 60000

static void test_first_then_once_an_interval(void **state)
{
	struct ratelog r = {0};
	unsigned long held = 99;
	long long t = 1000000000;
	assert_true(ratelog_ok(&r, t, INTERVAL_MS, &held));
	assert_int_equal(held, 0);
	for (int i = 0; i < 500; i++)
		assert_false(ratelog_ok(&r, t + i % INTERVAL_MS, INTERVAL_MS, &held));
	assert_true(ratelog_ok(&r, t + INTERVAL_MS, INTERVAL_MS, &held));
	assert_int_equal(held, 500); /* nothing lost */
	assert_false(ratelog_ok(&r, t + INTERVAL_MS + 1, INTERVAL_MS, &held));
}

static void test_held_count_restarts(void **state)
{
	struct ratelog r = {0};
	unsigned long held;
	assert_true(ratelog_ok(&r, 0, 10, &held));
	assert_false(ratelog_ok(&r, 5, 10, &held));
	assert_true(ratelog_ok(&r, 10, 10, &held));
	assert_int_equal(held, 1);
	assert_true(ratelog_ok(&r, 20, 10, &held));
	assert_int_equal(held, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_then_once_an_interval),
		cmocka_unit_test(test_held_count_restarts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
