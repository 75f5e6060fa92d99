/*
 * Unit tests for shape without a session: a real loop and a real socket
 * pair stand for the client. The state machine (never -> on -> paused ->
 * on -> spent), the budget spent on the trickle's tick (the bufferevent's
 * events given back), nothing left after a finish, the end-of-data hold
 * (only while on, capped by its maximum, its callback once), the verdict's
 * deadline (once, re-armed, cancelled).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "mstime.h"
#include "shape.h"
#include "throttle.h"
#include "unit.h"

#define LOOP_BOUND_MS 5000 /* any wait here ends well before this */

struct fx {
	struct config cfg;
	struct event_base *base;
	struct bufferevent *bev;
	int peer;
	struct shape sh;
	int verdicts, holds;
};

static void verdict_cb(void *arg)
{
	((struct fx *)arg)->verdicts++;
}

static void hold_cb(void *arg)
{
	((struct fx *)arg)->holds++;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until *count reaches want or LOOP_BOUND_MS pass. */
static void run_until(struct fx *f, const int *count, int want)
{
	struct timeval tv = mstime_tv(10);
	struct event *t = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	long long end = mstime_mono() + LOOP_BOUND_MS;

	assert_non_null(t);
	assert_int_equal(event_add(t, &tv), 0);
	while (*count < want && mstime_mono() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(t);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	int sv[2];

	if (!f)
		return -1;
	config_defaults(&f->cfg);
	f->cfg.shape_time_ms = 10000;
	f->cfg.shape_rate = 100;
	if (throttle_init(&f->cfg) != 0 || !(f->base = event_base_new()) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		return -1;
	f->peer = sv[1];
	f->bev = bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	if (!f->bev)
		return -1;
	shape_init(&f->sh, f->base, &f->cfg, f->bev, 1, "192.0.2.1",
		   verdict_cb, NULL, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	shape_free(&f->sh);
	bufferevent_free(f->bev);
	close(f->peer);
	event_base_free(f->base);
	throttle_free();
	free(f);
	return 0;
}

static void test_states(void **state)
{
	struct fx *f = *state;

	assert_int_equal(f->sh.state, SHAPE_NEVER);
	assert_false(shape_ever(&f->sh));
	assert_true(shape_start(&f->sh, 5));
	assert_int_equal(f->sh.state, SHAPE_ON);
	assert_false(shape_start(&f->sh, 5)); /* already on */
	shape_pause(&f->sh);
	assert_int_equal(f->sh.state, SHAPE_PAUSED);
	assert_true(shape_ever(&f->sh));
	assert_false(shape_is_on(&f->sh));
	assert_true(shape_start(&f->sh, 5));
	shape_finish(&f->sh, "test");
	assert_int_equal(f->sh.state, SHAPE_SPENT);
	assert_false(shape_start(&f->sh, 5)); /* never again */
	assert_string_equal(shape_state_name(SHAPE_PAUSED), "paused");
	assert_string_equal(shape_state_name((enum shape_state)99), "?");
}

static void test_start_while_left(void **state)
{
	struct fx *f = *state;

	/* Started without a bufferevent (TLS starting, or parked): on, and
	 * trickled from the join; the trickle takes the events over. */
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);
	shape_leave(&f->sh);
	assert_true(shape_start(&f->sh, 5));
	assert_true(shape_is_on(&f->sh));
	assert_int_equal(bufferevent_get_enabled(f->bev), EV_READ | EV_WRITE);
	shape_join(&f->sh, f->bev);
	assert_non_null(f->sh.thr);
	assert_int_equal(bufferevent_get_enabled(f->bev), 0);
	shape_finish(&f->sh, "test");
	assert_int_equal(bufferevent_get_enabled(f->bev), EV_READ | EV_WRITE);
}

static void test_no_budget(void **state)
{
	struct fx *f = *state;

	f->cfg.shape_time_ms = 0;
	assert_false(shape_start(&f->sh, 5));
	assert_int_equal(f->sh.state, SHAPE_NEVER);
	/* Finishing what never started changes nothing. */
	shape_finish(&f->sh, "test");
	assert_int_equal(f->sh.state, SHAPE_NEVER);
}

static int spent(const struct fx *f)
{
	return f->sh.state == SHAPE_SPENT;
}

static void test_budget_spent_by_timer(void **state)
{
	struct fx *f = *state;
	int done = 0;

	f->cfg.shape_time_ms = 150;
	assert_true(shape_start(&f->sh, 5));
	/* The trickle owns the bufferevent's events while shaped... */
	assert_int_equal(bufferevent_get_enabled(f->bev), 0);
	long long t0 = mstime_mono();
	struct timeval tv = mstime_tv(10);
	struct event *t = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
	assert_int_equal(event_add(t, &tv), 0);
	while (!(done = spent(f)) && mstime_mono() < t0 + LOOP_BOUND_MS)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(t);
	assert_true(done);
	assert_true(mstime_mono() - t0 >= 140);
	assert_true(shape_used_ms(&f->sh) >= 140);
	assert_false(shape_is_on(&f->sh));
	/* ...and gives them back when the budget is spent. */
	assert_int_equal(bufferevent_get_enabled(f->bev), EV_WRITE);
}

static void test_hold(void **state)
{
	struct fx *f = *state;

	/* Not shaped: no hold. */
	assert_false(shape_hold(&f->sh, 1000, hold_cb));
	assert_true(shape_start(&f->sh, 5));
	/* The rest of the budget is 10 s; the maximum caps it at 50 ms. */
	long long t0 = mstime_mono();
	assert_true(shape_hold(&f->sh, 50, hold_cb));
	run_until(f, &f->holds, 1);
	assert_int_equal(f->holds, 1);
	assert_true(mstime_mono() - t0 < 2000);
	/* Nothing left to hold for: refused. */
	assert_false(shape_hold(&f->sh, 0, hold_cb));
	shape_pause(&f->sh);
	assert_false(shape_hold(&f->sh, 1000, hold_cb));
}

static void test_verdict_deadline(void **state)
{
	struct fx *f = *state;

	assert_int_equal(shape_verdict_after(&f->sh, 0), 0);
	run_until(f, &f->verdicts, 1);
	assert_int_equal(f->verdicts, 1);
	/* Re-armed: once more. */
	assert_int_equal(shape_verdict_after(&f->sh, 20), 0);
	run_until(f, &f->verdicts, 2);
	assert_int_equal(f->verdicts, 2);
	/* Cancelled: never. */
	assert_int_equal(shape_verdict_after(&f->sh, 20), 0);
	shape_verdict_cancel(&f->sh);
	struct timeval tv = mstime_tv(100);
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	assert_int_equal(f->verdicts, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_while_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_spent_by_timer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_hold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verdict_deadline, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
