/*
 * test_acl: the allow/deny match (most specific entry wins, deny wins a
 * tie, expired entries are ignored), the shared table's publish and match
 * in one process, the JSON string writer, and the snapshot's row bound.
 */
#include "unit.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdlib.h>

#include "acl.h"
#include "json.h"
#include "snapshot.h"

static struct acl_entry entry(const char *net, enum acl_kind kind, long long expires)
{
	struct acl_entry e = {0};
	assert_int_equal(control_net_parse(net, &e.net), 0);
	e.kind = kind;
	e.expires_ms = expires;
	return e;
}

struct lookup_row {
	const char *name;
	const char *addr;
	long long now;
	long want; /* index into the table, -1: none */
};

static void test_lookup_rows(void **state)
{
	const struct acl_entry table[] = {
		entry("10.0.0.0/8", ACL_DENY, 0),          /* 0 */
		entry("10.1.0.0/16", ACL_ALLOW, 0),        /* 1 */
		entry("10.1.2.3", ACL_DENY, 1000),         /* 2: expires at 1000 */
		entry("192.0.2.0/24", ACL_ALLOW, 0),       /* 3 */
		entry("192.0.2.0/24", ACL_DENY, 0),        /* 4: same network */
		entry("2001:db8::/32", ACL_ALLOW, 0),      /* 5 */
		entry("0.0.0.0/0", ACL_ALLOW, 0),          /* 6 */
		entry("10.2.0.0/15", ACL_ALLOW, 0),        /* 7: odd prefix */
	};
	static const struct lookup_row rows[] = {
		{"covered by /8 only", "10.9.9.9", 0, 0},
		{"more specific allow", "10.1.7.7", 0, 1},
		{"host deny before expiry", "10.1.2.3", 999, 2},
		{"host deny expired", "10.1.2.3", 1000, 1},
		{"deny wins a tie", "192.0.2.200", 0, 4},
		{"v6 network", "2001:db8:1::5", 0, 5},
		{"v6 outside", "2001:db9::1", 0, -1},
		{"default route", "198.51.100.1", 0, 6},
		{"/15 inside", "10.3.255.1", 0, 7},
		{"/15 outside", "10.4.0.1", 0, 0},
	};
	for (size_t i = 0; i < UNIT_NELEM(rows); i++) {
		struct control_net a;
		assert_int_equal(control_net_parse(rows[i].addr, &a), 0);
		long got = acl_lookup(table, UNIT_NELEM(table), &a, rows[i].now);
		if (got != rows[i].want)
			fail_msg("%s: got %ld, want %ld", rows[i].name, got, rows[i].want);
	}
}

static void test_publish_match(void **state)
{
	struct sockaddr_storage ss;
	char net[80];
	struct acl_entry e[2] = {entry("203.0.113.0/24", ACL_DENY, 0),
				 entry("203.0.113.9", ACL_ALLOW, 50)};
	assert_int_equal(acl_init(), 0);
	unit_sockaddr(&ss, "203.0.113.9");
	assert_int_equal(acl_match((struct sockaddr *)&ss, 10, net, sizeof net), ACL_NONE);
	acl_publish(e, 2, 10);
	assert_int_equal(acl_match((struct sockaddr *)&ss, 10, net, sizeof net), ACL_ALLOW);
	assert_string_equal(net, "203.0.113.9/32");
	/* expiry needs no publication */
	assert_int_equal(acl_match((struct sockaddr *)&ss, 60, net, sizeof net), ACL_DENY);
	assert_string_equal(net, "203.0.113.0/24");
	/* an IPv4-mapped client is its IPv4 address */
	unit_sockaddr(&ss, "::ffff:203.0.113.7");
	assert_int_equal(acl_match((struct sockaddr *)&ss, 60, NULL, 0), ACL_DENY);
	/* entries already expired at publication are left out */
	acl_publish(e + 1, 1, 100);
	unit_sockaddr(&ss, "203.0.113.9");
	assert_int_equal(acl_match((struct sockaddr *)&ss, 0, NULL, 0), ACL_NONE);
}

struct json_row {
	const char *name, *in, *want;
};

static void test_json_rows(void **state)
{
	static const struct json_row rows[] = {
		{"plain", "mx.example.com", "\"mx.example.com\""},
		{"quote and backslash", "a\"b\\c", "\"a\\\"b\\\\c\""},
		{"control bytes", "a\r\n\x01\x7f", "\"a\\u000d\\u000a\\u0001\\u007f\""},
		{"valid utf-8", "caf\xc3\xa9", "\"caf\xc3\xa9\""},
		{"lone continuation", "a\x80z", "\"a\\ufffdz\""},
		{"truncated sequence", "a\xe2\x82", "\"a\\ufffd\\ufffd\""},
		{"overlong lead", "\xc0\xaf", "\"\\ufffd\\ufffd\""},
		{"empty", "", "\"\""},
	};
	for (size_t i = 0; i < UNIT_NELEM(rows); i++) {
		struct evbuffer *b = evbuffer_new();
		assert_non_null(b);
		assert_int_equal(json_str(b, rows[i].in), 0);
		size_t n = evbuffer_get_length(b);
		char *got = calloc(1, n + 1);
		assert_non_null(got);
		evbuffer_copyout(b, got, n);
		if (strcmp(got, rows[i].want))
			fail_msg("%s: got %s, want %s", rows[i].name, got, rows[i].want);
		free(got);
		evbuffer_free(b);
	}
}

static void test_snapshot_rows_bound(void **state)
{
	static struct snapshot_worker w;
	struct snapshot_row r = {0};
	/* More sessions than rows: the highest scores stay. */
	for (int i = 0; i < SNAPSHOT_ROWS_MAX * 3; i++) {
		r.score = (i * 7919) % 1000;
		r.session_id = (unsigned long long)i;
		snapshot_add_row(&w, &r);
	}
	assert_int_equal(w.n_rows, SNAPSHOT_ROWS_MAX);
	int low = 1000;
	for (unsigned i = 0; i < w.n_rows; i++)
		low = w.rows[i].score < low ? w.rows[i].score : low;
	int above = 0;
	for (int i = 0; i < SNAPSHOT_ROWS_MAX * 3; i++)
		above += (i * 7919) % 1000 > low;
	assert_true(above <= SNAPSHOT_ROWS_MAX);
	/* publish and gather in one process */
	assert_int_equal(snapshot_init(4), 0);
	w.sessions = SNAPSHOT_ROWS_MAX * 3;
	w.shaped = 5;
	w.by_phase[SNAPSHOT_HELO][1] = 5;
	snapshot_publish(2, &w);
	struct snapshot *s = snapshot_gather();
	assert_non_null(s);
	assert_int_equal(s->n_workers, 1);
	assert_int_equal(s->workers[0].slot, 2);
	assert_int_equal(s->n_rows, SNAPSHOT_ROWS_MAX);
	assert_true(s->truncated);
	assert_int_equal(s->by_phase[SNAPSHOT_HELO][1], 5);
	for (size_t i = 1; i < s->n_rows; i++)
		assert_true(s->rows[i - 1].score >= s->rows[i].score);
	snapshot_free(s);
	snapshot_clear(2);
	s = snapshot_gather();
	assert_non_null(s);
	assert_int_equal(s->n_workers, 0);
	snapshot_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_rows),
		cmocka_unit_test(test_publish_match),
		cmocka_unit_test(test_json_rows),
		cmocka_unit_test(test_snapshot_rows_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
