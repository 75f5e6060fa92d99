/*
 * Unit tests for store_redis without a Redis: key names per family
 * (IPv4-mapped IPv6 is IPv4); the parsers of untrusted replies, row by
 * row (types, partial records, overlong and non-finite numbers); and the
 * asynchronous contract against servers that misbehave on purpose:
 * nothing listening (look-ups fail at once, no callback), a server that
 * accepts and never answers (the callback runs once, with the default,
 * after the timeout; a cancelled look-up never calls back; closing with
 * look-ups live calls nothing back and leaks nothing under ASan).
 * The real Redis is in tests/scenario/test_redis.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "metrics.h"
#include "store.h"
#include "store_redis.h"
#include "unit.h"

/* ---- keys ------------------------------------------------------------- */

static const struct store_params params = {
	.rep = { 1000, 5, 10, 3, 2, 3 },
	.prefixes = { 24, 64, 48 },
};

/* The keys of a socket address as the facade hands it over: through
 * ipaddr (IPv4-mapped unwrapped, anything not IP refused) and
 * reputation_keys (the client and its network). */
static bool keys(const char *prefix, const struct sockaddr *sa,
		 struct store_redis_keys *k)
{
	struct ipaddr a;
	struct reputation_keys rk;

	return ipaddr_from_sockaddr(sa, &a) &&
	       reputation_keys(&a, &params.prefixes, &rk) &&
	       store_redis_keys(prefix, &rk, k);
}

static void test_keys(void **state)
{
	static const struct {
		const char *prefix, *ip, *host, *net, *pass;
	} rows[] = {
		{ "sluice:", "192.0.2.1", "sluice:rep:{192.0.2.0/24}192.0.2.1",
		  "sluice:rep:{192.0.2.0/24}", "sluice:pass:192.0.2.1" },
		{ "", "10.1.2.255", "rep:{10.1.2.0/24}10.1.2.255", "rep:{10.1.2.0/24}",
		  "pass:10.1.2.255" },
		{ "x:", "::ffff:192.0.2.7", "x:rep:{192.0.2.0/24}192.0.2.7",
		  "x:rep:{192.0.2.0/24}", "x:pass:192.0.2.7" },
		/* IPv6: the client is its /64, its network the /48. */
		{ "x:", "2001:db8:1:2:3:4:5:6", "x:rep:{2001:db8:1::/48}2001:db8:1:2::/64",
		  "x:rep:{2001:db8:1::/48}", "x:pass:2001:db8:1:2::/64" },
		{ "x:", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		  "x:rep:{ffff:ffff:ffff::/48}ffff:ffff:ffff:ffff::/64",
		  "x:rep:{ffff:ffff:ffff::/48}",
		  "x:pass:ffff:ffff:ffff:ffff::/64" },
	};
	struct sockaddr_storage ss;
	struct store_redis_keys k;

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		assert_true(keys(rows[i].prefix, unit_sockaddr(&ss, rows[i].ip), &k));
		assert_string_equal(k.host, rows[i].host);
		assert_string_equal(k.net, rows[i].net);
		assert_string_equal(k.pass, rows[i].pass);
	}
	/* A prefix at the limit still fits the longest address. */
	char prefix[STORE_REDIS_PREFIX_MAX + 2];
	memset(prefix, 'p', STORE_REDIS_PREFIX_MAX);
	prefix[STORE_REDIS_PREFIX_MAX] = '\0';
	assert_true(keys(prefix, unit_sockaddr(&ss, rows[4].ip), &k));
	assert_int_equal(strlen(k.host), STORE_REDIS_PREFIX_MAX + strlen(rows[4].host) - 2);
	/* The longest a key gets: a /127 client in a /120 network. */
	struct ipaddr wide;
	struct reputation_keys rk;
	static const struct reputation_prefixes p127 = { 24, 127, 120 };
	assert_true(ipaddr_from_sockaddr(unit_sockaddr(&ss, rows[4].ip), &wide));
	assert_true(reputation_keys(&wide, &p127, &rk));
	assert_true(store_redis_keys(prefix, &rk, &k));
	assert_int_equal(strlen(k.host), STORE_REDIS_PREFIX_MAX + 4 + 2 * 43 + 2);
	prefix[STORE_REDIS_PREFIX_MAX] = 'p';
	prefix[STORE_REDIS_PREFIX_MAX + 1] = '\0';
	assert_false(keys(prefix, unit_sockaddr(&ss, "192.0.2.1"), &k));

	struct sockaddr_un un = { .sun_family = AF_UNIX };
	assert_false(keys("x", (struct sockaddr *)&un, &k));
	assert_false(keys("x", NULL, &k));
	struct reputation_keys odd = { .host.family = AF_UNIX, .net.family = AF_UNIX };
	assert_false(store_redis_keys("x", &odd, &k));
	assert_false(store_redis_keys("x", NULL, &k));
}

/* ---- replies ---------------------------------------------------------- */

/* A reply built by hand: type and text, or NIL, or an array of those. */
struct rrow {
	int type;
	const char *str;
};

static redisReply *mk(const struct rrow *r, redisReply *out)
{
	memset(out, 0, sizeof *out);
	out->type = r->type;
	if (r->str) {
		out->str = (char *)r->str;
		out->len = strlen(r->str);
	}
	return out;
}

#define S REDIS_REPLY_STRING
#define N REDIS_REPLY_NIL
#define E REDIS_REPLY_ERROR
#define I REDIS_REPLY_INTEGER

static void test_parse_rep(void **state)
{
	static const struct {
		const char *name;
		int array_type; /* REDIS_REPLY_ARRAY, or another type */
		size_t n;
		struct rrow el[4];
		int want;
		double good, bad;
		long long t;
	} rows[] = {
		{ "record", REDIS_REPLY_ARRAY, 3,
		  { { S, "1" }, { S, "0.5" }, { S, "1700000000000" } }, 1,
		  1, 0.5, 1700000000000LL },
		{ "exponent", REDIS_REPLY_ARRAY, 3,
		  { { S, "1.5e-3" }, { S, "2E+2" }, { S, "0" } }, 1,
		  0.0015, 200, 0 },
		{ "%.17g output", REDIS_REPLY_ARRAY, 3,
		  { { S, "0.99999999999999989" }, { S, "0" }, { S, "5" } }, 1,
		  0.99999999999999989, 0, 5 },
		{ "none", REDIS_REPLY_ARRAY, 3, { { N, 0 }, { N, 0 }, { N, 0 } },
		  0, 0, 0, 0 },
		{ "partial", REDIS_REPLY_ARRAY, 3,
		  { { S, "1" }, { N, 0 }, { S, "5" } }, -1, 0, 0, 0 },
		{ "two elements", REDIS_REPLY_ARRAY, 2, { { S, "1" }, { S, "1" } },
		  -1, 0, 0, 0 },
		{ "four elements", REDIS_REPLY_ARRAY, 4,
		  { { S, "1" }, { S, "1" }, { S, "1" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "WRONGTYPE", E, 0, { { 0, 0 } }, -1, 0, 0, 0 },
		{ "nil instead of array", N, 0, { { 0, 0 } }, -1, 0, 0, 0 },
		{ "integer element", REDIS_REPLY_ARRAY, 3,
		  { { I, 0 }, { S, "1" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "nan", REDIS_REPLY_ARRAY, 3,
		  { { S, "nan" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "inf", REDIS_REPLY_ARRAY, 3,
		  { { S, "0" }, { S, "inf" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "overflow to inf", REDIS_REPLY_ARRAY, 3,
		  { { S, "1e999" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "negative weight", REDIS_REPLY_ARRAY, 3,
		  { { S, "-1" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "hex", REDIS_REPLY_ARRAY, 3,
		  { { S, "0x10" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "space", REDIS_REPLY_ARRAY, 3,
		  { { S, " 1" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "empty", REDIS_REPLY_ARRAY, 3,
		  { { S, "" }, { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "time not an integer", REDIS_REPLY_ARRAY, 3,
		  { { S, "1" }, { S, "0" }, { S, "1.5" } }, -1, 0, 0, 0 },
		{ "time overflows", REDIS_REPLY_ARRAY, 3,
		  { { S, "1" }, { S, "0" }, { S, "99999999999999999999" } }, -1,
		  0, 0, 0 },
		{ "over 64 bytes", REDIS_REPLY_ARRAY, 3,
		  { { S, "1111111111111111111111111111111111111111111111111111111111111111"
			 "1" },
		    { S, "0" }, { S, "1" } }, -1, 0, 0, 0 },
		{ "64 bytes", REDIS_REPLY_ARRAY, 3,
		  { { S, "0.00000000000000000000000000000000000000000000000000000000000001" },
		    { S, "0" }, { S, "1" } }, 1, 1e-62, 0, 1 },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		redisReply top, els[5], *ptrs[5];
		memset(&top, 0, sizeof top);
		top.type = rows[i].array_type;
		if (top.type == REDIS_REPLY_ARRAY) {
			/* The rows are g b t; the content counter c goes in
			 * before t ("0", or NIL where the row is all NIL), so a
			 * row of 3 is a well-formed reply and one of 4 or 2 is
			 * not. */
			size_t n = 0;
			bool nil = true;
			for (size_t j = 0; j < rows[i].n; j++)
				nil = nil && rows[i].el[j].type == N;
			static const struct rrow zero = { S, "0" }, none = { N, 0 };
			for (size_t j = 0; j < rows[i].n; j++) {
				if (j == 2)
					ptrs[n] = mk(nil ? &none : &zero, &els[n]), n++;
				ptrs[n] = mk(&rows[i].el[j], &els[n]);
				n++;
			}
			if (rows[i].n == 2) /* no content inserted */
				n = 2;
			top.elements = n;
			top.element = ptrs;
		} else if (top.type == E) {
			top.str = (char *)"WRONGTYPE Operation against a key";
			top.len = strlen(top.str);
		}
		struct reputation_evidence ev = { -7, -7, -7, -7 };
		int got = store_redis_parse_rep(&top, &ev);
		if (got != rows[i].want)
			fail_msg("%s: got %d want %d", rows[i].name, got, rows[i].want);
		if (got == 1 && (fabs(ev.good - rows[i].good) > 1e-300 + 1e-15 * rows[i].good ||
				 fabs(ev.bad - rows[i].bad) > 1e-15 * (1 + rows[i].bad) ||
				 ev.updated_ms != rows[i].t))
			fail_msg("%s: got %g %g %lld", rows[i].name, ev.good, ev.bad,
				 ev.updated_ms);
		if (got != 1 && (ev.good != -7 || ev.updated_ms != -7))
			fail_msg("%s: wrote the record on failure", rows[i].name);
	}
	assert_int_equal(store_redis_parse_rep(NULL, NULL), -1);

	/* The content counter itself. */
	static const struct rrow good_c[4] = { { S, "1" }, { S, "0" }, { S, "2.5" }, { S, "5" } };
	static const struct rrow bad_c[4] = { { S, "1" }, { S, "0" }, { S, "-1" }, { S, "5" } };
	redisReply top, els[4], *ptrs[4];
	struct reputation_evidence ev;
	memset(&top, 0, sizeof top);
	top.type = REDIS_REPLY_ARRAY;
	top.elements = 4;
	top.element = ptrs;
	for (size_t j = 0; j < 4; j++)
		ptrs[j] = mk(&good_c[j], &els[j]);
	assert_int_equal(store_redis_parse_rep(&top, &ev), 1);
	assert_true(ev.content == 2.5 && ev.good == 1 && ev.updated_ms == 5);
	for (size_t j = 0; j < 4; j++)
		ptrs[j] = mk(&bad_c[j], &els[j]);
	assert_int_equal(store_redis_parse_rep(&top, &ev), -1);
}

static void test_parse_pass(void **state)
{
	static const struct {
		const char *name;
		struct rrow r;
		int want;
		long long expires;
	} rows[] = {
		{ "expiry", { S, "1700000000000" }, 1, 1700000000000LL },
		{ "nil", { N, 0 }, 0, 0 },
		{ "WRONGTYPE", { E, "WRONGTYPE Operation" }, -1, 0 },
		{ "integer type", { I, 0 }, -1, 0 },
		{ "text", { S, "yes" }, -1, 0 },
		{ "fraction", { S, "1.5" }, -1, 0 },
		{ "empty", { S, "" }, -1, 0 },
		{ "overflow", { S, "99999999999999999999" }, -1, 0 },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		redisReply r;
		long long e = -7;
		int got = store_redis_parse_pass(mk(&rows[i].r, &r), &e);
		if (got != rows[i].want || (got == 1 && e != rows[i].expires))
			fail_msg("%s: got %d %lld", rows[i].name, got, e);
	}
	assert_int_equal(store_redis_parse_pass(NULL, NULL), -1);
}

/* ---- the asynchronous contract, against broken servers -------------------- */

struct fx {
	struct event_base *base;
	int lfd; /* listens, never accepts, never answers */
	struct endpoint ep;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->lfd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->lfd >= 0)
		close(f->lfd);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* A port on 127.0.0.1: listening (the kernel completes connects, nobody
 * reads) or, with listening false, closed again at once. */
static void fx_server(struct fx *f, bool listening)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof sin;
	char text[64];

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	if (listening) {
		assert_int_equal(listen(fd, 64), 0);
		f->lfd = fd;
	} else {
		close(fd);
	}
	snprintf(text, sizeof text, "127.0.0.1:%u", ntohs(sin.sin_port));
	assert_int_equal(config_parse_endpoint(text, &f->ep), 0);
}

struct answers {
	int calls;
	int reputation;
	bool pass;
	struct timespec at;
};

static void answer_cb(void *arg, const struct store_answer *a)
{
	struct answers *x = arg;
	x->calls++;
	x->reputation = a->verdict.reputation + a->verdict.content;
	x->pass = a->pass;
	clock_gettime(CLOCK_MONOTONIC, &x->at);
}

static void run_for(struct fx *f, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static double since(const struct timespec *t0, const struct timespec *t)
{
	return (double)(t->tv_sec - t0->tv_sec) +
	       (double)(t->tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_nothing_listening_fails_at_once(void **state)
{
	struct fx *f = *state;
	struct sockaddr_storage ss;
	struct answers x = { 0 };

	fx_server(f, false);
	struct store *st = store_open_redis(f->base, &f->ep, "t:", 100, &params);
	assert_non_null(st);
	assert_true(store_async(st));
	run_for(f, 200); /* the refused connect is seen on the loop */
	long long before = metrics_get(METRIC_STORE_REDIS_LOOKUP_FAILURES);
	assert_null(store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.1"), answer_cb, &x));
	assert_int_equal(metrics_get(METRIC_STORE_REDIS_LOOKUP_FAILURES),
			 before + 1);
	/* Writes are dropped and counted, synchronous reads say "unknown". */
	long long wf = metrics_get(METRIC_STORE_REDIS_WRITE_FAILURES);
	store_record(st, unit_sockaddr(&ss, "192.0.2.1"), REPUTATION_HANGUP_SHAPED);
	store_pass_grant(st, unit_sockaddr(&ss, "192.0.2.1"), 1000);
	/* One script writes the client and its network. */
	assert_int_equal(metrics_get(METRIC_STORE_REDIS_WRITE_FAILURES), wf + 2);
	struct reputation_verdict v = { 1, 1, true, true };
	store_reputation(st, unit_sockaddr(&ss, "192.0.2.1"), &v);
	assert_true(v.reputation == 0 && v.content == 0);
	assert_false(store_pass_check(st, unit_sockaddr(&ss, "192.0.2.1")));
	run_for(f, 300);
	assert_int_equal(x.calls, 0);
	store_close(st);
}

static void test_silent_server_times_out_once(void **state)
{
	struct fx *f = *state;
	struct sockaddr_storage ss;
	struct answers x = { 0 }, cancelled = { 0 }, at_close = { 0 };
	struct timespec t0;

	fx_server(f, true);
	struct store *st = store_open_redis(f->base, &f->ep, "t:", 150, &params);
	assert_non_null(st);
	run_for(f, 50); /* connected: the kernel accepted */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long long timeouts = metrics_get(METRIC_STORE_REDIS_LOOKUP_TIMEOUTS);
	struct store_lookup *l =
		store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.1"), answer_cb, &x);
	assert_non_null(l);
	struct store_lookup *lc =
		store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.2"), answer_cb, &cancelled);
	assert_non_null(lc);
	store_lookup_cancel(lc);
	store_record(st, unit_sockaddr(&ss, "192.0.2.1"), REPUTATION_HANGUP_SHAPED); /* owed too */
	assert_int_equal(x.calls, 0); /* never synchronously */
	run_for(f, 400);
	assert_int_equal(x.calls, 1);
	assert_true(x.reputation == 0 && !x.pass);
	double took = since(&t0, &x.at);
	assert_true(took >= 0.14 && took < 0.35);
	assert_int_equal(cancelled.calls, 0);
	assert_int_equal(metrics_get(METRIC_STORE_REDIS_LOOKUP_TIMEOUTS),
			 timeouts + 1);

	/* Nothing answered for the stall time (1 s): the connection is
	 * dropped, every owed reply is handed back, and one is made again. */
	long long drops = metrics_get(METRIC_STORE_REDIS_CONNECT_FAILURES);
	assert_non_null(store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.3"), answer_cb, &x));
	run_for(f, 1200);
	assert_non_null(store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.4"), answer_cb, &x));
	run_for(f, 400);
	assert_true(metrics_get(METRIC_STORE_REDIS_CONNECT_FAILURES) > drops);
	assert_int_equal(x.calls, 3);

	/* Closing with a look-up live: no callback, nothing leaked. */
	struct store_lookup *lz =
		store_lookup_start(st, unit_sockaddr(&ss, "192.0.2.5"), answer_cb, &at_close);
	(void)lz; /* NULL if a reconnect is in its back-off: fine too */
	store_close(st);
	assert_int_equal(at_close.calls, 0);
	run_for(f, 50);
	assert_int_equal(at_close.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_parse_rep),
		cmocka_unit_test(test_parse_pass),
		cmocka_unit_test_setup_teardown(test_nothing_listening_fails_at_once,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_silent_server_times_out_once,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
