/*
 * Unit tests for reputation, the arithmetic every store shares, alone (no
 * store, no loop, no clock): the decay table; scores and the combination
 * of an address's and its network's evidence (the network holds back,
 * never vouches); the weights per event; read-decay-add; staleness for
 * the prune; the pass rules (expiry, a grant never shortens).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "reputation.h"
#include "unit.h"

#define DAY_MS (24L * 3600 * 1000)
#define EPS 1e-12

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

static void test_score(void **state)
{
	const long h = 1000;
	const long long now = 1000000;
	struct reputation_evidence none = { 0, 0, now };
	struct reputation_evidence good1 = { 1, 0, now };
	struct reputation_evidence bad3 = { 0, 3, now };
	struct reputation_evidence huge = { DBL_MAX, DBL_MAX, now };
	struct reputation_evidence old_bad2 = { 0, 2, now - 2 * h };

	assert_true(reputation_score(&none, now, h) == 0);
	assert_true(fabs(reputation_score(&good1, now, h) - 0.5) < EPS);
	assert_true(fabs(reputation_score(&bad3, now, h) + 0.75) < EPS);
	/* inf/inf is not a number: reads as unknown. */
	assert_true(reputation_score(&huge, now, h) == 0);
	/* Decayed to now: 2 * 1/4 = 0.5 bad. */
	assert_true(fabs(reputation_score(&old_bad2, now, h) + 1.0 / 3) < EPS);
}

static void test_combine(void **state)
{
	const long h = 1000;
	const long long now = 1000000;
	struct reputation_evidence bad2 = { 0, 2, now };
	struct reputation_evidence bad2_old = { 0, 2, now - h }; /* decays to 1 */
	struct reputation_evidence good1 = { 1, 0, now };
	struct reputation_evidence net_weak = { 0, 2.8, now };    /* no say */
	struct reputation_evidence net_bad = { 0, 3, now };
	struct reputation_evidence net_good = { 10, 0, now };

	assert_true(reputation_combine(NULL, NULL, now, h) == 0);
	assert_true(fabs(reputation_combine(&bad2, NULL, now, h) + 2.0 / 3) < EPS);
	assert_true(fabs(reputation_combine(&bad2_old, NULL, now, h) + 0.5) < EPS);
	assert_true(fabs(reputation_combine(&good1, NULL, now, h) - 0.5) < EPS);
	assert_true(reputation_combine(NULL, &net_weak, now, h) == 0);
	assert_true(fabs(reputation_combine(&good1, &net_bad, now, h) + 0.75) < EPS);
	/* A good network never vouches for an unknown address. */
	assert_true(reputation_combine(NULL, &net_good, now, h) == 0);
	/* Three events in the network decayed by a millisecond still count. */
	struct reputation_evidence net3 = { 0, 3, now - 1 };
	assert_true(reputation_combine(NULL, &net3, now, 7 * DAY_MS) < -0.7);
}

static void test_weights(void **state)
{
	static const struct {
		enum reputation_event ev;
		double good, bad;
	} rows[] = {
		{ REPUTATION_DELIVERED, 1, 0 },
		{ REPUTATION_RCPT_REFUSED, 0, 0.5 },
		{ REPUTATION_MSG_REFUSED, 0, 1 },
		{ REPUTATION_BAD_SIGNAL, 0, 0.5 },
		{ REPUTATION_HANGUP_SHAPED, 0, 1 },
	};
	double g, b;

	assert_int_equal(UNIT_NELEM(rows), REPUTATION_EVENT_COUNT);
	for (size_t i = 0; i < UNIT_NELEM(rows); i++) {
		assert_true(reputation_weights(rows[i].ev, &g, &b));
		assert_true(g == rows[i].good && b == rows[i].bad);
		assert_string_not_equal(reputation_event_name(rows[i].ev), "?");
	}
	assert_false(reputation_weights((enum reputation_event)99, &g, &b));
	assert_false(reputation_weights((enum reputation_event)-1, &g, &b));
	assert_string_equal(reputation_event_name((enum reputation_event)99), "?");
}

static void test_add(void **state)
{
	const long h = 1000;
	struct reputation_evidence r;

	/* No record: the weights, stamped now. */
	r = reputation_add(NULL, 0, 1, 5000, h);
	assert_true(r.good == 0 && r.bad == 1 && r.updated_ms == 5000);
	/* A record one half-life old: halved, then added. */
	struct reputation_evidence old = { 2, 4, 4000 };
	r = reputation_add(&old, 1, 0, 5000, h);
	assert_true(fabs(r.good - 2) < EPS && fabs(r.bad - 2) < EPS);
	assert_int_equal(r.updated_ms, 5000);
	/* A record from the future (another process's clock): kept as is,
	 * and its later time stays. */
	struct reputation_evidence later = { 1, 1, 9000 };
	r = reputation_add(&later, 1, 0, 5000, h);
	assert_true(r.good == 2 && r.bad == 1 && r.updated_ms == 9000);
}

static void test_valid_and_stale(void **state)
{
	const long h = 1000;
	struct reputation_evidence ok = { 1, 0, 0 };
	struct reputation_evidence neg = { -1, 0, 0 };
	struct reputation_evidence nan_ = { NAN, 0, 0 };
	struct reputation_evidence inf = { 0, INFINITY, 0 };

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
		cmocka_unit_test(test_score),
		cmocka_unit_test(test_combine),
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_valid_and_stale),
		cmocka_unit_test(test_pass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
