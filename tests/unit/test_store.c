/*
 * Unit tests for store (LMDB through the facade; the arithmetic alone is
 * tests/unit/test_reputation.c): verdicts for an address, its /64 (IPv6)
 * and its /24 neighbours after outcomes written through the workq; a
 * network counting only with distinct bad addresses outweighing good ones;
 * decay applied on read and on read-decay-add-write; the pass cache, its
 * expiry and revocation; a write by another process seen by an open store; a reader
 * killed with SIGKILL inside a read transaction cleared at open
 * (HOSTILE L.109); MAP_FULL recovered by pruning and, when nothing can be
 * pruned, writes paused while reads go on (HOSTILE M.112); a corrupt or
 * missing store gives NULL, and every call on NULL is safe.
 *
 * Children never call cmocka: they report through their exit status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "store.h"
#include "workq.h"
#include "unit.h"

#define DAY_MS (24L * 3600 * 1000)
#define MAP_SIZE (64ULL * 1024 * 1024)
#define EPS 1e-6

struct fixture {
	char dir[64];
	char path[128];
	struct event_base *base;
	struct workq *wq;
	struct store *st;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Weights scaled so that a verdict shows the score to two digits: a
 * client's REPUTATION weight is round(-100 * (good - bad) / (good + bad +
 * 1)) when that is negative; a network of 3 distinct bad addresses gives
 * 10; each content refusal 7. */
static const struct store_params *params(long halflife_ms)
{
	static struct store_params p;
	p = (struct store_params){
		.rep = { halflife_ms, 3, 10, 100, 10, 7 },
		.prefixes = { 24, 64, 48 },
	};
	return &p;
}

static int rep(struct store *st, const char *ip)
{
	struct sockaddr_storage ss;
	struct reputation_verdict v;
	store_reputation(st, unit_sockaddr(&ss, ip), &v);
	return v.reputation;
}

static int content(struct store *st, const char *ip)
{
	struct sockaddr_storage ss;
	struct reputation_verdict v;
	store_reputation(st, unit_sockaddr(&ss, ip), &v);
	return v.content;
}

static void revoke_pass(struct store *st, const char *ip)
{
	struct sockaddr_storage ss;
	store_pass_revoke(st, unit_sockaddr(&ss, ip));
}

static void record(struct store *st, const char *ip, enum reputation_event ev,
		   int times)
{
	struct sockaddr_storage ss;
	for (int i = 0; i < times; i++)
		store_record(st, unit_sockaddr(&ss, ip), ev);
}

static bool pass(struct store *st, const char *ip)
{
	struct sockaddr_storage ss;
	return store_pass_check(st, unit_sockaddr(&ss, ip));
}

static void grant(struct store *st, const char *ip, long ttl_ms)
{
	struct sockaddr_storage ss;
	store_pass_grant(st, unit_sockaddr(&ss, ip), ttl_ms);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until every workq job and its done() have finished, or
 * 20 s pass. 0 when drained. */
static int drain(struct event_base *base, struct workq *wq)
{
	struct timeval tv = { 0, 20000 };
	struct event *t = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	int64_t deadline = now_ms() + 20000;

	if (!t || event_add(t, &tv) != 0)
		return -1;
	while (workq_pending(wq) > 0 && now_ms() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return workq_pending(wq) == 0 ? 0 : -1;
}

static void fx_open(struct fixture *f, long halflife_ms,
		    unsigned long long map_size)
{
	f->st = store_open_lmdb(f->dir, f->base, f->wq, params(halflife_ms), map_size, 0);
	assert_non_null(f->st);
}

static void fx_close(struct fixture *f)
{
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(drain(f->base, f->wq), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/sluice-store-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/sluice.mdb", f->dir);
	f->base = event_base_new();
	f->wq = f->base ? workq_new(f->base, 2) : NULL;
	if (!f->wq)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char p[160];

	store_close(f->st);
	workq_free(f->wq);
	event_base_free(f->base);
	unlink(f->path);
	snprintf(p, sizeof p, "%s-lock", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- NULL and unusable stores -------------------------------------- */

static void test_null_store_safe(void **state)
{
	struct sockaddr_storage ss;
	const struct sockaddr *a = unit_sockaddr(&ss, "192.0.2.1");

	assert_int_equal(rep(NULL, "192.0.2.1"), 0);
	store_record(NULL, a, REPUTATION_HANGUP_SHAPED);
	assert_false(store_pass_check(NULL, a));
	store_pass_grant(NULL, a, 1000);
	store_pass_revoke(NULL, a);
	store_close(NULL);
}

static void test_open_failures_give_null(void **state)
{
	struct fixture *f = *state;
	char missing[128];

	assert_null(store_open_lmdb(NULL, f->base, f->wq, params(DAY_MS), MAP_SIZE, 0));
	assert_null(store_open_lmdb("", f->base, f->wq, params(DAY_MS), MAP_SIZE, 0));
	assert_null(store_open_lmdb(f->dir, f->base, NULL, params(DAY_MS), MAP_SIZE, 0));
	snprintf(missing, sizeof missing, "%s/nonexistent", f->dir);
	assert_null(store_open_lmdb(missing, f->base, f->wq, params(DAY_MS), MAP_SIZE, 0));

	/* Not an LMDB file: a corrupt store must not stop mail. */
	int fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char junk[16384];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (char)(i * 131 + 7);
	assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
	close(fd);
	assert_null(store_open_lmdb(f->dir, f->base, f->wq, params(DAY_MS), MAP_SIZE, 0));
	assert_int_equal(workq_pending(f->wq), 0);
}

static void test_file_mode_and_odd_addresses(void **state)
{
	struct fixture *f = *state;
	struct stat sb;
	struct sockaddr_un sun;

	fx_open(f, DAY_MS, MAP_SIZE);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	/* Not IP: nothing stored, nothing known. */
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	store_record(f->st, (struct sockaddr *)&sun, REPUTATION_HANGUP_SHAPED);
	store_pass_grant(f->st, (struct sockaddr *)&sun, 1000);
	store_pass_revoke(f->st, (struct sockaddr *)&sun);
	store_record(f->st, NULL, REPUTATION_HANGUP_SHAPED);
	assert_int_equal(workq_pending(f->wq), 0);
	struct reputation_verdict v = { 5, 5, true, true };
	store_reputation(f->st, (struct sockaddr *)&sun, &v);
	assert_true(v.reputation == 0 && v.content == 0);
	assert_false(store_pass_check(f->st, (struct sockaddr *)&sun));
	store_reputation(f->st, NULL, &v);
	assert_true(v.reputation == 0 && v.content == 0);
	/* An event value outside the enum is ignored. */
	record(f->st, "192.0.2.1", (enum reputation_event)99, 1);
	assert_int_equal(workq_pending(f->wq), 0);
	fx_close(f);
}

/* ---- reputation ---------------------------------------------------- */

static void test_reputation_address_and_network(void **state)
{
	struct fixture *f = *state;

	fx_open(f, 7 * DAY_MS, MAP_SIZE);
	assert_int_equal(rep(f->st, "192.0.2.10"), 0);

	record(f->st, "192.0.2.10", REPUTATION_DELIVERED, 3);      /* g3 */
	record(f->st, "198.51.100.1", REPUTATION_HANGUP_SHAPED, 4); /* b4 */
	record(f->st, "198.51.100.3", REPUTATION_DELIVERED, 1);    /* g1 */
	record(f->st, "203.0.113.5", REPUTATION_HANGUP_SHAPED, 1); /* b1 */
	record(f->st, "203.0.113.9", REPUTATION_EARLY_CLOSE, 2);   /* b2 */
	record(f->st, "203.0.113.10", REPUTATION_HARVEST, 2);      /* b2 */
	record(f->st, "2001:db8::1", REPUTATION_HANGUP_SHAPED, 3); /* b3 */
	record(f->st, "192.0.2.50", REPUTATION_CONTENT_REFUSED, 1);
	assert_int_equal(drain(f->base, f->wq), 0);

	static const struct {
		const char *ip;
		int want;
	} rows[] = {
		/* Good evidence never gives weight, to anyone. */
		{ "192.0.2.10", 0 },
		{ "192.0.2.77", 0 },
		/* b4: -4/5. One bad address taints no neighbour. */
		{ "198.51.100.1", 80 },
		{ "198.51.100.2", 0 },
		{ "::ffff:198.51.100.2", 0 },
		{ "::ffff:198.51.100.1", 80 },
		{ "198.51.100.3", 0 },
		/* Three distinct bad addresses, no good one: the /24 counts
		 * (weight_network) for its other addresses; its bad ones keep
		 * their own, larger weight. */
		{ "203.0.113.5", 50 },
		{ "203.0.113.9", 67 },
		{ "203.0.113.10", 67 },
		{ "203.0.113.200", 10 },
		{ "203.0.114.5", 0 },
		/* IPv6: the /64 is one client; the next /64 is another one,
		 * and one bad client does not taint the /48. */
		{ "2001:db8::1", 75 },
		{ "2001:db8::2", 75 },
		{ "2001:db8:0:1::1", 0 },
		/* IPv6 keys never collide with IPv4 ones. */
		{ "c633:6401::", 0 },
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		int got = rep(f->st, rows[i].ip);
		if (got != rows[i].want)
			fail_msg("%s: got %d want %d", rows[i].ip, got, rows[i].want);
	}
	/* A content refusal is its own weight, for the client only. */
	assert_int_equal(content(f->st, "192.0.2.50"), 7);
	assert_int_equal(rep(f->st, "192.0.2.50"), 0);
	assert_int_equal(content(f->st, "192.0.2.51"), 0);
	fx_close(f);
}

static void test_network_needs_distinct_addresses(void **state)
{
	struct fixture *f = *state;
	char ip[32];

	fx_open(f, 7 * DAY_MS, MAP_SIZE);
	/* One bad address, however often: the /24 does not count. */
	record(f->st, "192.0.2.5", REPUTATION_HANGUP_SHAPED, 6);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.5"), 86);
	assert_int_equal(rep(f->st, "192.0.2.6"), 0);
	/* Two distinct: still not. */
	record(f->st, "192.0.2.7", REPUTATION_HANGUP_SHAPED, 1);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.6"), 0);
	/* Three (network_min_addresses): it does. */
	record(f->st, "192.0.2.8", REPUTATION_HARVEST, 1);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.6"), 10);
	/* 31 distinct good addresses: 3 bad ones are under 10 % of them. */
	for (int i = 100; i < 131; i++) {
		snprintf(ip, sizeof ip, "192.0.2.%d", i);
		record(f->st, ip, REPUTATION_DELIVERED, 1);
	}
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.6"), 0);
	/* Four content-refused addresses (at least 10 % of the 31 good
	 * ones): CONTENT for the network's other addresses. */
	for (int i = 20; i < 24; i++) {
		snprintf(ip, sizeof ip, "192.0.2.%d", i);
		record(f->st, ip, REPUTATION_CONTENT_REFUSED, 1);
	}
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(content(f->st, "192.0.2.6"), 7);
	fx_close(f);
}

/* The client's REPUTATION weight for decayed good g and bad b
 * (params()): counted as whole events, each while at least half. */
static int score(double g, double b)
{
	g = floor(g + 0.5);
	b = floor(b + 0.5);
	double s = (g - b) / (g + b + 1);
	return s < 0 ? (int)lround(-100 * s) : 0;
}

/* Decay on read, and read-decay-add on write, against the clock: the
 * exact value lies between the bounds the event times allow. */
static void test_decay_applied(void **state)
{
	struct fixture *f = *state;
	const long h = 400;

	fx_open(f, h, MAP_SIZE);
	int64_t b0 = now_ms();
	record(f->st, "192.0.2.1", REPUTATION_HANGUP_SHAPED, 4);
	int64_t b1 = now_ms();
	assert_int_equal(drain(f->base, f->wq), 0);
	int64_t r0 = now_ms();
	int got = rep(f->st, "192.0.2.1");
	int64_t r1 = now_ms();
	/* The weight grows with bad: the freshest bad bounds it above. */
	int hi = score(0, reputation_decay(4, r0 - b1, h));
	int lo = score(0, reputation_decay(4, r1 - b0, h));
	if (!(got >= lo && got <= hi))
		fail_msg("fresh: %d not in [%d, %d]", got, lo, hi);

	sleep_ms(h); /* one half-life: bad about 2 */
	int64_t g0 = now_ms();
	record(f->st, "192.0.2.1", REPUTATION_DELIVERED, 1);
	int64_t g1 = now_ms();
	assert_int_equal(drain(f->base, f->wq), 0);
	r0 = now_ms();
	got = rep(f->st, "192.0.2.1");
	r1 = now_ms();
	/* Worst: bad as fresh as possible, good as old as possible. */
	hi = score(reputation_decay(1, r1 - g0, h), reputation_decay(4, r0 - b1, h));
	lo = score(reputation_decay(1, r0 - g1, h), reputation_decay(4, r1 - b0, h));
	if (!(got >= lo && got <= hi))
		fail_msg("after add: %d not in [%d, %d]", got, lo, hi);
	/* And it did decay: 4 bad and 1 good undecayed would be 50. */
	assert_true(got < 45);
	fx_close(f);
}

/* ---- pass cache ----------------------------------------------------- */

static void test_pass_grant_check_expiry(void **state)
{
	struct fixture *f = *state;

	fx_open(f, DAY_MS, MAP_SIZE);
	assert_false(pass(f->st, "192.0.2.1"));
	grant(f->st, "192.0.2.1", 300);
	grant(f->st, "2001:db8::1", 60000);
	grant(f->st, "192.0.2.9", 0);   /* no-op */
	grant(f->st, "192.0.2.10", -5); /* no-op */
	assert_int_equal(drain(f->base, f->wq), 0);
	int64_t granted = now_ms();

	assert_true(pass(f->st, "192.0.2.1"));
	assert_true(pass(f->st, "::ffff:192.0.2.1"));
	assert_false(pass(f->st, "192.0.2.2")); /* per address, not /24 */
	assert_true(pass(f->st, "2001:db8::1"));
	assert_true(pass(f->st, "2001:db8::2"));      /* one /64, one client */
	assert_false(pass(f->st, "2001:db8:0:1::1"));
	assert_false(pass(f->st, "192.0.2.9"));
	assert_false(pass(f->st, "192.0.2.10"));

	/* A shorter grant does not cut a longer pass. */
	grant(f->st, "2001:db8::1", 1);
	assert_int_equal(drain(f->base, f->wq), 0);

	sleep_ms(350 - (long)(now_ms() - granted));
	assert_false(pass(f->st, "192.0.2.1"));
	assert_true(pass(f->st, "2001:db8::1"));
	/* A fresh grant after expiry works again. */
	grant(f->st, "192.0.2.1", 60000);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_true(pass(f->st, "192.0.2.1"));
	/* A revoked pass is gone at once, whatever its expiry; a grant
	 * after it works again. */
	revoke_pass(f->st, "192.0.2.1");
	revoke_pass(f->st, "192.0.2.99"); /* none: nothing to do */
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_false(pass(f->st, "192.0.2.1"));
	grant(f->st, "192.0.2.1", 60000);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_true(pass(f->st, "192.0.2.1"));
	fx_close(f);
}

/* ---- lifecycle ------------------------------------------------------ */

static void test_close_with_writes_pending(void **state)
{
	struct fixture *f = *state;

	fx_open(f, DAY_MS, MAP_SIZE);
	/* The first goes to the workq at once; the others wait on the loop
	 * for it and are written by store_close itself. */
	record(f->st, "192.0.2.1", REPUTATION_EARLY_CLOSE, 1);
	record(f->st, "192.0.2.2", REPUTATION_CONTENT_REFUSED, 1);
	grant(f->st, "192.0.2.3", 60000);
	assert_int_equal(workq_pending(f->wq), 1);
	store_close(f->st); /* freed by the in-flight job's done() */
	f->st = NULL;
	assert_int_equal(drain(f->base, f->wq), 0);

	fx_open(f, DAY_MS, MAP_SIZE);
	assert_int_equal(rep(f->st, "192.0.2.1"), 50);
	assert_int_equal(content(f->st, "192.0.2.2"), 7);
	assert_true(pass(f->st, "192.0.2.3"));
	fx_close(f);
}

/* Runs the loop until the client's reputation reads want, or 20 s pass;
 * the time it took, -1 if it never did. */
static int64_t wait_rep(struct fixture *f, const char *ip, int want)
{
	struct timeval tv = { 0, 5000 };
	struct event *t = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	int64_t start = now_ms(), took = -1;

	if (!t || event_add(t, &tv) != 0)
		return -1;
	while (now_ms() - start < 20000) {
		if (workq_pending(f->wq) == 0 && rep(f->st, ip) == want) {
			took = now_ms() - start;
			break;
		}
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	event_free(t);
	return took;
}

/* With a gap, a record after a quiet spell leaves at once; the ones after
 * it wait for the gap to pass since it left, then go together; and close
 * writes what still waits. */
static void test_write_gap(void **state)
{
	struct fixture *f = *state;
	const long gap = 400;

	f->st = store_open_lmdb(f->dir, f->base, f->wq, params(DAY_MS), MAP_SIZE, gap);
	assert_non_null(f->st);
	int64_t first = now_ms();
	record(f->st, "192.0.2.1", REPUTATION_HANGUP_SHAPED, 1);
	assert_int_equal(workq_pending(f->wq), 1); /* at once */
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.1"), 50);

	record(f->st, "192.0.2.2", REPUTATION_HANGUP_SHAPED, 1);
	record(f->st, "192.0.2.3", REPUTATION_HANGUP_SHAPED, 1);
	/* Not submitted: it waits for the gap (only checkable while the
	 * gap has not passed yet on a slow machine). */
	if (now_ms() - first < gap - 50)
		assert_int_equal(workq_pending(f->wq), 0);
	assert_true(wait_rep(f, "192.0.2.2", 50) >= 0);
	assert_true(now_ms() - first >= gap - 1); /* the timer's lower bound */
	assert_int_equal(rep(f->st, "192.0.2.3"), 50); /* in the same batch */

	/* One waiting at close is written by the close itself. */
	record(f->st, "192.0.2.4", REPUTATION_HANGUP_SHAPED, 1);
	record(f->st, "192.0.2.4", REPUTATION_HANGUP_SHAPED, 1);
	store_close(f->st);
	f->st = NULL;
	assert_int_equal(drain(f->base, f->wq), 0);
	fx_open(f, DAY_MS, MAP_SIZE);
	assert_int_equal(rep(f->st, "192.0.2.4"), 67);
	fx_close(f);
}

static void test_close_after_workq_free(void **state)
{
	struct fixture *f = *state;

	fx_open(f, DAY_MS, MAP_SIZE);
	record(f->st, "192.0.2.1", REPUTATION_HANGUP_SHAPED, 1);
	record(f->st, "192.0.2.2", REPUTATION_HANGUP_SHAPED, 1);
	/* Shutdown in the other order: the workq goes first, running the
	 * in-flight job's done(); store_close must not touch the workq. */
	workq_free(f->wq);
	f->wq = workq_new(f->base, 2);
	assert_non_null(f->wq);
	store_close(f->st);
	f->st = NULL;

	fx_open(f, DAY_MS, MAP_SIZE);
	assert_int_equal(rep(f->st, "192.0.2.1"), 50);
	assert_int_equal(rep(f->st, "192.0.2.2"), 50);
	fx_close(f);
}

/* ---- processes ------------------------------------------------------ */

/* In a forked child: its own loop, workq and store, as a worker has. */
static int child_write(const char *dir)
{
	struct event_base *base = event_base_new();
	struct workq *wq = base ? workq_new(base, 1) : NULL;
	if (!wq)
		return 10;
	struct store *st = store_open_lmdb(dir, base, wq, params(7 * DAY_MS), MAP_SIZE, 0);
	if (!st)
		return 11;
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, "192.0.2.44", &a.sin_addr);
	for (int i = 0; i < 3; i++)
		store_record(st, (struct sockaddr *)&a, REPUTATION_HANGUP_SHAPED);
	store_pass_grant(st, (struct sockaddr *)&a, 60000);
	if (drain(base, wq) != 0)
		return 12;
	store_close(st);
	workq_free(wq);
	event_base_free(base);
	return 0;
}

static void test_other_process_writes(void **state)
{
	struct fixture *f = *state;
	int status;

	fx_open(f, 7 * DAY_MS, MAP_SIZE);
	/* Reads before: the cached read transaction must not keep an old
	 * snapshot. */
	assert_int_equal(rep(f->st, "192.0.2.44"), 0);
	assert_false(pass(f->st, "192.0.2.44"));

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_write(f->dir));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_int_equal(rep(f->st, "192.0.2.44"), 75);
	assert_true(pass(f->st, "192.0.2.44"));
	fx_close(f);
}

struct reader_count {
	pid_t pid;
	int lines;
};

/* mdb_reader_list output: a header, then "pid thread txnid" per slot. */
static int reader_line(const char *msg, void *ctx)
{
	struct reader_count *rc = ctx;
	long pid;
	if (sscanf(msg, " %ld", &pid) == 1 && pid == (long)rc->pid)
		rc->lines++;
	return 0;
}

/* Slots the reader table holds for pid. Opens its own environment: only
 * call while this process has no store open on the file. */
static int readers_of(const char *path, pid_t pid)
{
	MDB_env *env;
	struct reader_count rc = { pid, 0 };

	if (mdb_env_create(&env) != 0)
		return -1;
	mdb_env_set_maxdbs(env, 2);
	if (mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_RDONLY,
			 0600) != 0) {
		mdb_env_close(env);
		return -1;
	}
	mdb_reader_list(env, reader_line, &rc);
	mdb_env_close(env);
	return rc.lines;
}

/* Child: opens the environment, starts a read transaction, says so on
 * fd, and waits to be killed. */
static void child_hold_reader(const char *path, int fd)
{
	MDB_env *env;
	MDB_txn *txn;

	if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 2) != 0 ||
	    mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600) != 0 ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
		_exit(20);
	if (write(fd, "r", 1) != 1)
		_exit(21);
	for (;;)
		pause();
}

/* Child: keeps the environment open (as the other workers do) until fd
 * reaches EOF, so the lock table is not reset by a first opener. */
static void child_keep_open(const char *path, int ready_fd, int wait_fd)
{
	MDB_env *env;
	char c;

	if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 2) != 0 ||
	    mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600) != 0)
		_exit(30);
	if (write(ready_fd, "k", 1) != 1)
		_exit(31);
	while (read(wait_fd, &c, 1) > 0)
		;
	mdb_env_close(env);
	_exit(0);
}

static void test_hostile_109_killed_reader_cleared_at_open(void **state)
{
	struct fixture *f = *state;
	int ready[2], hold[2], status;
	char c;

	/* Create the file with some data. */
	fx_open(f, DAY_MS, MAP_SIZE);
	record(f->st, "192.0.2.1", REPUTATION_HANGUP_SHAPED, 1);
	fx_close(f);

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(hold), 0);
	pid_t keeper = fork();
	assert_true(keeper >= 0);
	if (keeper == 0) {
		close(ready[0]);
		close(hold[1]);
		child_keep_open(f->path, ready[1], hold[0]);
	}
	close(hold[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);

	pid_t victim = fork();
	assert_true(victim >= 0);
	if (victim == 0) {
		close(ready[0]);
		close(hold[1]);
		child_hold_reader(f->path, ready[1]);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(kill(victim, SIGKILL), 0);
	assert_int_equal(waitpid(victim, &status, 0), victim);
	assert_true(WIFSIGNALED(status));

	/* The dead worker's slot is still in the table... */
	assert_int_equal(readers_of(f->path, victim), 1);
	/* ...until store_open_lmdb clears it, and the store works. */
	fx_open(f, DAY_MS, MAP_SIZE);
	record(f->st, "192.0.2.1", REPUTATION_HANGUP_SHAPED, 2);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_int_equal(rep(f->st, "192.0.2.1"), 75);
	fx_close(f);
	assert_int_equal(readers_of(f->path, victim), 0);

	close(hold[1]);
	close(ready[0]);
	close(ready[1]);
	assert_int_equal(waitpid(keeper, &status, 0), keeper);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- MAP_FULL ------------------------------------------------------- */

#define FULL_MAP_SIZE (512ULL * 1024)
#define FULL_CHUNK 200

/* n records from distinct /24s, in loop-sized chunks (the backlog on the
 * loop is bounded, and a real worker records a few per session). */
static void fill(struct fixture *f, int n, long pause_ms)
{
	char ip[32];

	for (int i = 0; i < n; i++) {
		snprintf(ip, sizeof ip, "10.%d.%d.1", (i >> 8) & 255, i & 255);
		record(f->st, ip, REPUTATION_HANGUP_SHAPED, 1);
		if (i % FULL_CHUNK == FULL_CHUNK - 1) {
			assert_int_equal(drain(f->base, f->wq), 0);
			if (pause_ms > 0)
				sleep_ms(pause_ms);
		}
	}
	assert_int_equal(drain(f->base, f->wq), 0);
}

static void test_map_full_prunes_decayed(void **state)
{
	struct fixture *f = *state;
	struct stat sb;

	/* 1 ms half-life: everything a few ms old is prunable. 24,000
	 * records of about 50 bytes are several times the map. */
	fx_open(f, 1, FULL_MAP_SIZE);
	fill(f, 24000, 5);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_true((unsigned long long)sb.st_size <= FULL_MAP_SIZE);
	/* Writes still land: nothing paused them. */
	grant(f->st, "192.0.2.1", 60000);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_true(pass(f->st, "192.0.2.1"));
	fx_close(f);
}

static void test_hostile_112_map_full_pauses_writes_reads_go_on(void **state)
{
	struct fixture *f = *state;

	/* Nothing decays: the map fills for good. */
	fx_open(f, 7 * DAY_MS, FULL_MAP_SIZE);
	fill(f, 24000, 0);
	/* Written before it filled, still readable. */
	assert_int_equal(rep(f->st, "10.0.0.1"), 50);
	/* Writes are dropped for the pause, without blocking anything. */
	grant(f->st, "192.0.2.1", 60000);
	assert_int_equal(drain(f->base, f->wq), 0);
	assert_false(pass(f->st, "192.0.2.1"));
	fx_close(f);

	/* Reopened (a restarted worker): reads still work. */
	fx_open(f, 7 * DAY_MS, FULL_MAP_SIZE);
	assert_int_equal(rep(f->st, "10.0.0.1"), 50);
	fx_close(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_null_store_safe),
		cmocka_unit_test_setup_teardown(test_open_failures_give_null,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_mode_and_odd_addresses,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_reputation_address_and_network, setup, teardown),
		cmocka_unit_test_setup_teardown(test_network_needs_distinct_addresses,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_decay_applied, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pass_grant_check_expiry,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_writes_pending,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_after_workq_free,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_gap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_process_writes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_hostile_109_killed_reader_cleared_at_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_full_prunes_decayed,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_hostile_112_map_full_pauses_writes_reads_go_on, setup,
			teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
