/*
 * Unit tests for the worker's trickle (throttle.c) on a real loop with
 * real socket pairs standing for the clients: many shaped bufferevents on
 * one loop each get exactly the tick's bytes both ways, tick after tick,
 * and not faster than the rate, and shape_tick's bigger ticks; a late walk
 * making up the ticks it missed; the write
 * callback once the output has left; a hang-up, a reset, a read and a
 * write timeout reported to the event callback as libevent would; entries
 * taken off the list from inside the walk's own callbacks (itself and the
 * next one); the events given back at the end; a TLS-like filter kept on
 * libevent's rate limit; and lent entries (no bufferevent): bytes moved
 * both ways, the owner woken with a whole line, with the output gone, with
 * EOF, and with a line too long to keep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "mstime.h"
#include "throttle.h"
#include "unit.h"

#define LOOP_BOUND_MS 8000 /* any wait here ends well before this */
#define N_CLIENTS 64       /* shaped bufferevents on one loop */
#define RATE 5             /* B/s: one byte per 200 ms tick */
#define TICK_MS 200

struct client {
	struct fx *fx;
	struct bufferevent *bev;
	struct throttle *thr;
	int peer;
	int reads, writes, dues;
	short event;          /* the last event callback's flags */
	struct client *off_next; /* read callback: take this one off too */
	bool off_self;        /* read callback: take itself off */
	int lent_fd;          /* its socket while lent */
};

struct fx {
	struct config cfg;
	struct event_base *base;
	struct client c[N_CLIENTS];
	size_t n;
};

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	c->reads++;
	if (c->off_next) {
		throttle_off(c->off_next->thr);
		c->off_next->thr = NULL;
		c->off_next = NULL;
	}
	if (c->off_self) {
		throttle_off(c->thr);
		c->thr = NULL;
		c->off_self = false;
	}
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	((struct client *)arg)->writes++;
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	((struct client *)arg)->event = what;
}

static void due_cb(void *arg)
{
	((struct client *)arg)->dues++;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until done(f) or LOOP_BOUND_MS pass. */
static void run_until(struct fx *f, bool (*done)(struct fx *f))
{
	struct timeval tv = mstime_tv(10);
	struct event *t = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	long long end = mstime_mono() + LOOP_BOUND_MS;

	assert_non_null(t);
	assert_int_equal(event_add(t, &tv), 0);
	while (!done(f) && mstime_mono() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(t);
}

static int setup_n(void **state, size_t n)
{
	struct fx *f = calloc(1, sizeof *f);

	if (!f)
		return -1;
	config_defaults(&f->cfg);
	f->cfg.shape_rate = RATE;
	if (throttle_init(&f->cfg) != 0 || !(f->base = event_base_new()))
		return -1;
	f->n = n;
	for (size_t i = 0; i < n; i++) {
		struct client *c = &f->c[i];
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
			return -1;
		c->fx = f;
		c->peer = sv[1];
		c->bev = bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
		if (!c->bev)
			return -1;
		bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	}
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_n(state, N_CLIENTS);
}

static int setup_one(void **state)
{
	return setup_n(state, 1);
}

static int setup_n_3(void **state)
{
	return setup_n(state, 3);
}

static int setup_n_2(void **state)
{
	return setup_n(state, 2);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < f->n; i++) {
		throttle_off(f->c[i].thr);
		if (f->c[i].bev)
			bufferevent_free(f->c[i].bev);
		if (f->c[i].peer >= 0)
			close(f->c[i].peer);
	}
	event_base_free(f->base);
	throttle_free();
	free(f);
	return 0;
}

static void shape_all(struct fx *f)
{
	for (size_t i = 0; i < f->n; i++) {
		f->c[i].thr = throttle_on(f->c[i].bev, due_cb, &f->c[i]);
		assert_non_null(f->c[i].thr);
		/* The trickle owns the events now. */
		assert_int_equal(bufferevent_get_enabled(f->c[i].bev), 0);
	}
}

static size_t in_len(const struct client *c)
{
	return evbuffer_get_length(bufferevent_get_input(c->bev));
}

static bool first_has_five(struct fx *f)
{
	return in_len(&f->c[0]) >= 5;
}

/* Every client sends line and has "250 ok" to read; all shaped; the loop
 * runs until done. The ms it took. */
static long long shape_dialogue(struct fx *f, const char *line, bool (*done)(struct fx *f))
{
	for (size_t i = 0; i < f->n; i++) {
		assert_int_equal(write(f->c[i].peer, line, strlen(line)), (ssize_t)strlen(line));
		assert_int_equal(bufferevent_write(f->c[i].bev, "250 ok\r\n", 8), 0);
	}
	shape_all(f);
	long long t0 = mstime_mono();
	run_until(f, done);
	return mstime_mono() - t0;
}

static void test_many_each_get_the_rate(void **state)
{
	struct fx *f = *state;
	long long took = shape_dialogue(f, "HELO a.example\r\n", first_has_five);
	/* Each tick moves one byte each way for every one of them: after the
	 * fifth tick all have five bytes in, their peers five bytes out. */
	for (size_t i = 0; i < f->n; i++) {
		struct client *c = &f->c[i];
		char buf[64];
		assert_int_equal(in_len(c), 5);
		assert_int_equal(c->reads, 5);
		assert_int_equal(read(c->peer, buf, sizeof buf), 5);
		assert_memory_equal(buf, "250 o", 5);
		assert_int_equal(c->writes, 0); /* "k\r\n" still to go */
		assert_true(c->dues >= 5);
		assert_int_equal(c->event, 0);
	}
	/* Never faster than the rate: five ticks of 200 ms. */
	assert_true(took >= 5 * TICK_MS - 20);
}

static bool first_has_two(struct fx *f)
{
	return in_len(&f->c[0]) >= 2;
}

static void test_shape_tick_moves_more_per_tick(void **state)
{
	struct fx *f = *state;

	/* shape_tick = 400ms at 5 B/s: two bytes each tick, both ways. */
	throttle_free();
	f->cfg.shape_tick_ms = 400;
	assert_int_equal(throttle_init(&f->cfg), 0);
	long long took = shape_dialogue(f, "EHLO x\r\n", first_has_two);
	for (size_t i = 0; i < f->n; i++) {
		char buf[8];
		assert_int_equal(in_len(&f->c[i]), 2);
		assert_int_equal(f->c[i].reads, 1); /* one recv for both */
		assert_int_equal(read(f->c[i].peer, buf, sizeof buf), 2);
	}
	assert_true(took >= 400 - 20);
}

static bool first_has_any(struct fx *f)
{
	return in_len(&f->c[0]) >= 1;
}

static void test_late_walk_makes_up_missed_ticks(void **state)
{
	struct fx *f = *state;

	/* The loop busy for three ticks (as a walk over tens of thousands of
	 * sessions can be): the next walk moves three ticks' bytes at once,
	 * each way, in one recv and one send, so the rate holds. */
	assert_int_equal(write(f->c[0].peer, "HELO a.example\r\n", 16), 16);
	assert_int_equal(bufferevent_write(f->c[0].bev, "250 ok\r\n", 8), 0);
	shape_all(f);
	usleep(3 * TICK_MS * 1000 + 50000); /* lint: blocking-ok (test) */
	run_until(f, first_has_any);
	char buf[16];
	assert_int_equal(in_len(&f->c[0]), 3);
	assert_int_equal(f->c[0].reads, 1);
	assert_int_equal(read(f->c[0].peer, buf, sizeof buf), 3);
	assert_memory_equal(buf, "250", 3);
}

/* Two walks have run: the first client's due callback counts them. */
static bool first_has_two_ticks(struct fx *f)
{
	return f->c[0].dues >= 2;
}

static bool second_written(struct fx *f)
{
	return f->c[1].writes > 0;
}

static bool all_written(struct fx *f)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->c[i].writes == 0)
			return false;
	return true;
}

static void test_write_callback_once_drained(void **state)
{
	struct fx *f = *state;

	shape_all(f);
	for (size_t i = 0; i < f->n; i++)
		assert_int_equal(bufferevent_write(f->c[i].bev, "ab", 2), 0);
	run_until(f, all_written);
	for (size_t i = 0; i < f->n; i++) {
		char buf[8];
		assert_int_equal(f->c[i].writes, 1);
		assert_int_equal(read(f->c[i].peer, buf, sizeof buf), 2);
	}
}

static bool got_event(struct fx *f)
{
	return f->c[0].event != 0;
}

static void test_hangup_is_eof(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];

	shape_all(f);
	assert_int_equal(write(c->peer, "x", 1), 1);
	close(c->peer);
	c->peer = -1;
	run_until(f, got_event);
	/* The byte first, then the end, as libevent reads them. */
	assert_int_equal(c->reads, 1);
	assert_int_equal(c->event, BEV_EVENT_EOF | BEV_EVENT_READING);
	/* Reading is off after EOF; the rest comes back at the end. */
	throttle_off(c->thr);
	c->thr = NULL;
	assert_int_equal(bufferevent_get_enabled(c->bev), EV_WRITE);
}

static void test_reset_on_write_is_error(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];

	shape_all(f);
	close(c->peer); /* AF_UNIX: the next send fails with EPIPE */
	c->peer = -1;
	assert_int_equal(bufferevent_write(c->bev, "250 ok\r\n", 8), 0);
	run_until(f, got_event);
	/* Either side may see it first: reading sees the EOF. */
	assert_true(c->event == (BEV_EVENT_EOF | BEV_EVENT_READING) ||
		    c->event == (BEV_EVENT_ERROR | BEV_EVENT_WRITING));
}

static void test_read_timeout(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	struct timeval rd = mstime_tv(500), wr = mstime_tv(60000);

	assert_int_equal(bufferevent_set_timeouts(c->bev, &rd, &wr), 0);
	shape_all(f);
	long long t0 = mstime_mono();
	run_until(f, got_event);
	assert_int_equal(c->event, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	assert_true(mstime_mono() - t0 >= 480);
	throttle_off(c->thr);
	c->thr = NULL;
	assert_int_equal(bufferevent_get_enabled(c->bev), EV_WRITE);
}

static void test_write_timeout(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	struct timeval rd = mstime_tv(60000), wr = mstime_tv(500);
	char fill[4096];
	int fd = (int)bufferevent_getfd(c->bev);

	/* A client that reads nothing: its socket buffer is full. */
	memset(fill, 'x', sizeof fill);
	for (int i = 0; i < 10000 && write(fd, fill, sizeof fill) > 0; i++)
		;
	assert_int_equal(bufferevent_set_timeouts(c->bev, &rd, &wr), 0);
	assert_int_equal(bufferevent_write(c->bev, "250 ok\r\n", 8), 0);
	shape_all(f);
	long long t0 = mstime_mono();
	run_until(f, got_event);
	assert_int_equal(c->event, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
	assert_true(mstime_mono() - t0 >= 480);
	assert_int_equal(evbuffer_get_length(bufferevent_get_output(c->bev)), 8);
}

static bool third_read(struct fx *f)
{
	return f->c[2].reads > 0;
}

static void test_off_inside_the_walk(void **state)
{
	struct fx *f = *state;

	shape_all(f);
	/* Entry 0's read callback takes entry 1 (next in the walk) and
	 * itself off; the walk goes on with entry 2. */
	f->c[0].off_next = &f->c[1];
	f->c[0].off_self = true;
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(write(f->c[i].peer, "x", 1), 1);
	run_until(f, third_read);
	assert_int_equal(f->c[0].reads, 1);
	assert_null(f->c[0].thr);
	assert_null(f->c[1].thr);
	assert_int_equal(f->c[2].reads, 1);
	/* Both have their events back: entry 1's byte is read by libevent
	 * itself (at full speed). */
	assert_int_equal(bufferevent_get_enabled(f->c[0].bev), EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_get_enabled(f->c[1].bev), EV_READ | EV_WRITE);
}

/* A bufferevent whose owner writes by itself (writing disabled, as a
 * session keeps it between replies): after the trickle, writing comes
 * back only for bytes the trickle left; with none, no write callback. */
static void test_owner_writing_given_back_only_for_bytes_left(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < 2; i++)
		bufferevent_disable(f->c[i].bev, EV_WRITE);
	/* More than two walks can move, even late ones (2 s worth at most). */
	static const char reply[] = "250-a reply longer than the trickle moves in two walks\r\n";
	assert_int_equal(bufferevent_write(f->c[1].bev, reply, sizeof reply - 1), 0);
	shape_all(f);
	run_until(f, first_has_two_ticks);
	throttle_off(f->c[0].thr);
	throttle_off(f->c[1].thr);
	f->c[0].thr = f->c[1].thr = NULL;
	assert_int_equal(bufferevent_get_enabled(f->c[0].bev), EV_READ);
	assert_int_equal(bufferevent_get_enabled(f->c[1].bev), EV_READ | EV_WRITE);
	run_until(f, second_written);
	assert_int_equal(f->c[0].writes, 0);
	assert_int_equal(f->c[1].writes, 1);
}

static void test_filter_keeps_libevent_limit(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	struct bufferevent *filt = bufferevent_filter_new(c->bev, NULL, NULL, 0, NULL, NULL);

	assert_non_null(filt);
	bufferevent_enable(filt, EV_READ | EV_WRITE);
	struct throttle *t = throttle_on(filt, due_cb, c);
	assert_non_null(t);
	/* Not taken over: libevent's limit on the filter does the work,
	 * the tick's one byte each way; lifted at the end. */
	assert_int_equal(bufferevent_get_enabled(filt), EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_get_read_limit(filt), 1);
	assert_int_equal(bufferevent_get_write_limit(filt), 1);
	throttle_off(t);
	assert_int_equal(bufferevent_get_read_limit(filt), EV_SSIZE_MAX);
	bufferevent_free(filt);
}

/* --- lent: the trickle without the bufferevent --------------------------- */

static int wakes;

/* The owner's side of a wake: a new bufferevent on the same socket takes
 * the bytes back. */
static void wake_cb(void *arg)
{
	struct client *c = arg;
	wakes++;
	c->bev = bufferevent_socket_new(c->fx->base, c->lent_fd, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(c->bev);
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	assert_int_equal(throttle_take_back(c->thr, c->bev), 0);
}

/* Lends c's trickle and frees its bufferevent, the socket kept. */
static void lend(struct client *c)
{
	assert_true(throttle_lendable(c->thr));
	c->lent_fd = (int)bufferevent_getfd(c->bev);
	assert_true(throttle_lend(c->thr, wake_cb));
	assert_true(throttle_is_lent(c->thr));
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->bev = NULL;
}

static bool first_read(struct fx *f)
{
	return f->c[0].reads > 0;
}

static bool first_wrote(struct fx *f)
{
	return f->c[0].writes > 0;
}

static void test_lent_moves_bytes_and_wakes_with_news(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	char buf[16];

	wakes = 0;
	assert_int_equal(write(c->peer, "NOOP\r\n", 6), 6);
	assert_int_equal(bufferevent_write(c->bev, "250 ok\r\n", 8), 0);
	shape_all(f);
	lend(c);
	assert_int_equal(throttle_lent_output(c->thr), 8);
	/* A byte each way a tick without the bufferevent; the line feed, on
	 * the sixth, wakes the owner, which gets the whole line. */
	long long t0 = mstime_mono();
	run_until(f, first_read);
	assert_true(mstime_mono() - t0 >= 6 * TICK_MS - 20);
	assert_int_equal(wakes, 1);
	assert_int_equal(c->reads, 1);
	assert_int_equal(in_len(c), 6);
	assert_int_equal(read(c->peer, buf, sizeof buf), 6);
	assert_memory_equal(buf, "250 ok", 6);
	evbuffer_drain(bufferevent_get_input(c->bev), 6);
	/* The trickle owns the new bufferevent's events. */
	assert_int_equal(bufferevent_get_enabled(c->bev), 0);

	/* Lent again with "\r\n" to go: the write callback once it left. */
	assert_int_equal(evbuffer_get_length(bufferevent_get_output(c->bev)), 2);
	lend(c);
	run_until(f, first_wrote);
	assert_int_equal(wakes, 2);
	assert_int_equal(c->writes, 1);
	assert_int_equal(read(c->peer, buf, sizeof buf), 2);

	/* Lent with half a line in: the hang-up is the event callback's EOF,
	 * the half line still there. */
	assert_int_equal(write(c->peer, "QU", 2), 2);
	run_until(f, first_has_two);
	lend(c);
	close(c->peer);
	c->peer = -1;
	run_until(f, got_event);
	assert_int_equal(wakes, 3);
	assert_int_equal(c->event, BEV_EVENT_EOF | BEV_EVENT_READING);
	assert_int_equal(in_len(c), 2);
}

static void test_lent_long_line_wakes_at_the_limit(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	char line[THROTTLE_LEND_IN_MAX + 44];

	/* A fast rate, so that the line's room fills within a few ticks. */
	throttle_free();
	f->cfg.shape_rate = 5000;
	assert_int_equal(throttle_init(&f->cfg), 0);
	wakes = 0;
	memset(line, 'a', sizeof line);
	assert_int_equal(write(c->peer, line, sizeof line), (ssize_t)sizeof line);
	shape_all(f);
	lend(c);
	run_until(f, first_read);
	/* No line feed: woken with as much as the limit keeps. */
	assert_int_equal(wakes, 1);
	assert_int_equal(in_len(c), THROTTLE_LEND_IN_MAX);
	assert_false(throttle_lendable(c->thr));
	/* A line feed in the input: not lendable. */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, THROTTLE_LEND_IN_MAX);
	evbuffer_unfreeze(in, 0); /* a socket bufferevent's input end */
	assert_int_equal(evbuffer_add(in, "x\n", 2), 0);
	evbuffer_freeze(in, 0);
	assert_false(throttle_lendable(c->thr));
}

/* The peer sends a byte every tick without a line feed. */
static void dribble_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	if (c->peer >= 0)
		assert_int_equal(write(c->peer, "a", 1), 1);
}

static void test_lent_dribble_wakes_after_the_read_timeout(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];
	struct timeval rd = mstime_tv(600), wr = mstime_tv(60000), every = mstime_tv(TICK_MS);

	wakes = 0;
	assert_int_equal(bufferevent_set_timeouts(c->bev, &rd, &wr), 0);
	shape_all(f);
	lend(c);
	struct event *drip = event_new(f->base, -1, EV_PERSIST, dribble_cb, c);
	assert_non_null(drip);
	assert_int_equal(event_add(drip, &every), 0);
	long long t0 = mstime_mono();
	run_until(f, first_read);
	event_free(drip);
	/* Bytes kept coming, so no timeout; but the owner hears of the line
	 * once it has been dribbling for the read timeout. */
	assert_int_equal(wakes, 1);
	assert_int_equal(c->reads, 1);
	assert_int_equal(c->event, 0);
	assert_true(mstime_mono() - t0 >= 580);
	assert_true(in_len(c) >= 2);
}

static void test_lent_off_drops_the_bytes(void **state)
{
	struct fx *f = *state;
	struct client *c = &f->c[0];

	assert_int_equal(bufferevent_write(c->bev, "250 ok\r\n", 8), 0);
	shape_all(f);
	lend(c);
	/* The owner closing: off frees what was lent, and the socket is the
	 * owner's to close. */
	throttle_off(c->thr);
	c->thr = NULL;
	/* Nothing of it is sent afterwards, tick after tick. */
	long long end = mstime_mono() + 3 * TICK_MS;
	while (mstime_mono() < end)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	char buf[16];
	assert_int_equal(read(c->peer, buf, sizeof buf), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	close(c->lent_fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_many_each_get_the_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_callback_once_drained, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_shape_tick_moves_more_per_tick, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_late_walk_makes_up_missed_ticks, setup_one,
						teardown),
		cmocka_unit_test_setup_teardown(test_hangup_is_eof, setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_reset_on_write_is_error, setup_one,
						teardown),
		cmocka_unit_test_setup_teardown(test_read_timeout, setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_write_timeout, setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_off_inside_the_walk, setup_n_3, teardown),
		cmocka_unit_test_setup_teardown(test_owner_writing_given_back_only_for_bytes_left,
						setup_n_2, teardown),
		cmocka_unit_test_setup_teardown(test_lent_moves_bytes_and_wakes_with_news, setup_one,
						teardown),
		cmocka_unit_test_setup_teardown(test_lent_long_line_wakes_at_the_limit, setup_one,
						teardown),
		cmocka_unit_test_setup_teardown(test_lent_dribble_wakes_after_the_read_timeout,
						setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_lent_off_drops_the_bytes, setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_filter_keeps_libevent_limit, setup_one,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
