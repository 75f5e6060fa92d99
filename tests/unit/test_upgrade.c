/*
 * test_upgrade: the text an upgrading supervisor hands the new program
 * (upgrade_encode / upgrade_parse): a full state round-trips; malformed
 * and out-of-range values are refused as table rows {name, text, ok};
 * unknown keys (a newer program's) are skipped; the limits hold. And the
 * check refuses when the program's path is unknown.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>

#include "upgrade.h"

static struct upgrade_state a, b;

static void test_roundtrip(void **state)
{
	char text[UPGRADE_TEXT_MAX], err[256];
	memset(&a, 0, sizeof a);
	a.life[0] = 5;
	a.life[1] = 6;
	a.n_listen = 3;
	a.listen[0] = 7, a.listen[1] = 8, a.listen[2] = 9;
	a.control_fd = 10;
	a.n_waiters = 2;
	a.waiters[0] = (struct control_waiter){11, true};
	a.waiters[1] = (struct control_waiter){12, false};
	a.http_fd = 13;
	a.metrics_fd = 14;
	a.metrics_layout = 18446744073709551615ULL;
	a.per_bank = 64;
	a.bank = 1;
	a.snapshot_fd = 15;
	a.snapshot_layout = 1234567890123ULL;
	a.n_workers = 2;
	a.workers[0] = (struct upgrade_worker){4242, 1, 1};
	a.workers[1] = (struct upgrade_worker){4243, 2, 0};
	snprintf(a.from, sizeof a.from, "0.1.0+b1");
	assert_int_equal(upgrade_encode(&a, text, sizeof text), 0);
	assert_int_equal(upgrade_parse(text, strlen(text), &b, err, sizeof err), 0);
	assert_int_equal(b.life[0], 5);
	assert_int_equal(b.life[1], 6);
	assert_int_equal(b.n_listen, 3);
	assert_int_equal(b.listen[2], 9);
	assert_int_equal(b.control_fd, 10);
	assert_int_equal(b.n_waiters, 2);
	assert_int_equal(b.waiters[0].fd, 11);
	assert_true(b.waiters[0].json);
	assert_false(b.waiters[1].json);
	assert_int_equal(b.http_fd, 13);
	assert_int_equal(b.metrics_fd, 14);
	assert_true(b.metrics_layout == a.metrics_layout);
	assert_int_equal(b.per_bank, 64);
	assert_int_equal(b.bank, 1);
	assert_int_equal(b.snapshot_fd, 15);
	assert_true(b.snapshot_layout == a.snapshot_layout);
	assert_int_equal(b.n_workers, 2);
	assert_int_equal(b.workers[1].pid, 4243);
	assert_int_equal(b.workers[1].slot, 2);
	assert_string_equal(b.from, "0.1.0+b1");
	/* Too small a buffer is refused, not cut. */
	assert_int_equal(upgrade_encode(&a, text, 40), -1);
}

static void test_minimal_and_absent(void **state)
{
	char err[256];
	const char *t = "v=1;life=3:4;listen=;wait=;workers=;from=";
	assert_int_equal(upgrade_parse(t, strlen(t), &b, err, sizeof err), 0);
	assert_int_equal(b.n_listen, 0);
	assert_int_equal(b.control_fd, -1);
	assert_int_equal(b.http_fd, -1);
	assert_int_equal(b.metrics_fd, -1);
	assert_int_equal(b.snapshot_fd, -1);
	assert_int_equal(b.n_workers, 0);
	/* A newer program's keys are skipped. */
	t = "v=1;life=3:4;shiny=whatever,1:2;listen=5";
	assert_int_equal(upgrade_parse(t, strlen(t), &b, err, sizeof err), 0);
	assert_int_equal(b.n_listen, 1);
}

struct bad_row {
	const char *name;
	const char *text;
};

static const struct bad_row bad_rows[] = {
	{"empty", ""},
	{"no version", "life=3:4"},
	{"version 2", "v=2;life=3:4"},
	{"no life pipe", "v=1;listen=5"},
	{"life one fd", "v=1;life=3"},
	{"field without =", "v=1;life=3:4;listen"},
	{"fd too large", "v=1;life=3:4;listen=2147483648"},
	{"negative fd", "v=1;life=3:4;listen=-1"},
	{"trailing comma", "v=1;life=3:4;listen=5,"},
	{"double comma", "v=1;life=3:4;listen=5,,6"},
	{"space", "v=1;life=3:4;listen=5, 6"},
	{"bank 2", "v=1;life=3:4;metrics=5:1:64:2"},
	{"layout overflow", "v=1;life=3:4;metrics=5:18446744073709551616:64:0"},
	{"json not 0 or 1", "v=1;life=3:4;wait=5:2"},
	{"waiter with a third number", "v=1;life=3:4;wait=5:1:0"},
	{"pid 0", "v=1;life=3:4;workers=0:1:0"},
	{"worker short", "v=1;life=3:4;workers=100:1"},
	{"NUL inside", "v=1;life=3:4\0;listen=5"},
};

static void test_bad(void **state)
{
	char err[256];
	for (size_t i = 0; i < UNIT_NELEM(bad_rows); i++) {
		const char *t = bad_rows[i].text;
		size_t len = strlen(t);
		if (!strcmp(bad_rows[i].name, "NUL inside"))
			len = 23;
		err[0] = 0;
		if (upgrade_parse(t, len, &b, err, sizeof err) != -1)
			fail_msg("%s: accepted", bad_rows[i].name);
		if (!err[0])
			fail_msg("%s: no reason", bad_rows[i].name);
	}
}

static void test_limits(void **state)
{
	char err[256];
	/* UPGRADE_LISTEN_MAX sockets fit; one more does not. */
	size_t cap = UPGRADE_TEXT_MAX + 64;
	char *t = malloc(cap);
	assert_non_null(t);
	size_t u = (size_t)snprintf(t, cap, "v=1;life=3:4;listen=");
	for (int i = 0; i < UPGRADE_LISTEN_MAX; i++)
		u += (size_t)snprintf(t + u, cap - u, "%s9", i ? "," : "");
	assert_int_equal(upgrade_parse(t, u, &b, err, sizeof err), 0);
	assert_int_equal(b.n_listen, UPGRADE_LISTEN_MAX);
	u += (size_t)snprintf(t + u, cap - u, ",9");
	assert_int_equal(upgrade_parse(t, u, &b, err, sizeof err), -1);
	/* Longer than UPGRADE_TEXT_MAX is refused before it is read. */
	memset(t, '9', cap);
	assert_int_equal(upgrade_parse(t, UPGRADE_TEXT_MAX + 1, &b, err, sizeof err), -1);
	free(t);
}

static void test_check_without_path(void **state)
{
	char err[512];
	/* Without upgrade_remember, no path: refused with the reason. */
	assert_int_equal(upgrade_check(err, sizeof err), -1);
	assert_non_null(strstr(err, "path is unknown"));
	char *argv[] = {"/nonexistent/sluice", NULL};
	upgrade_remember(argv);
	/* The unit test binary itself is what /proc/self/exe names. */
	assert_non_null(strstr(upgrade_path(), "test_upgrade"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_minimal_and_absent),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_check_without_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
