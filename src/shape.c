/*
 * shape: the trickle, the budget, the hold and the verdict's deadline of
 * one client (see shape.h). Exports shape_*.
 *
 * Time: libevent's cached clock of the loop (the same for every session in
 * a loop turn). The budget is shape_time in all, across every stretch the
 * trickle was on; a body pauses it. The worker's trickle checks it on each
 * of its ticks (shape_due), so the budget needs no timer of its own and
 * ends to within a tick.
 *
 * Ownership: the owner embeds struct shape and frees it with shape_free;
 * the trickle's entry exists only while ON, the hold's timer from the
 * first hold, the verdict's deadline only until the verdict (most sessions
 * are never shaped). Callbacks run from libevent, never inside a shape_*
 * call.
 */
#include "shape.h"

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "throttle.h"

static const char *const shape_names[] = {
#define SHAPE_NAME(id, name) name,
	SHAPE_STATES(SHAPE_NAME)
#undef SHAPE_NAME
};

const char *shape_state_name(enum shape_state st)
{
	return (unsigned)st < sizeof shape_names / sizeof shape_names[0]
		       ? shape_names[st]
		       : "?";
}

static void shape_set_state(struct shape *sh, enum shape_state st)
{
	if (sh->state == st)
		return;
	log_debug("session=%llu shape %s -> %s", sh->id,
		  shape_state_name(sh->state), shape_state_name(st));
	sh->state = st;
}

static int shape_fd(const struct shape *sh)
{
	if (!sh->bev)
		return -1;
	struct bufferevent *under = bufferevent_get_underlying(sh->bev);
	return (int)bufferevent_getfd(under ? under : sh->bev);
}

void shape_init(struct shape *sh, struct event_base *base,
		const struct config *cfg, struct bufferevent *bev,
		unsigned long long id, const char *client,
		shape_fn *verdict_due, shape_fn *wake, void *arg)
{
	*sh = (struct shape){ .base = base, .cfg = cfg, .bev = bev, .id = id,
			      .client = client, .verdict_due = verdict_due, .wake = wake,
			      .arg = arg };
}

long shape_used_ms(const struct shape *sh)
{
	long ms = sh->used_ms;
	if (sh->state == SHAPE_ON) {
		struct timeval now, d;
		event_base_gettimeofday_cached(sh->base, &now);
		timersub(&now, &sh->since, &d);
		ms += d.tv_sec * 1000 + d.tv_usec / 1000;
	}
	return ms;
}

bool shape_is_on(const struct shape *sh)
{
	return sh->state == SHAPE_ON;
}

bool shape_ever(const struct shape *sh)
{
	return sh->state != SHAPE_NEVER;
}

/* Rate limit off; the stretch is added to the budget used. */
static void shape_off(struct shape *sh, enum shape_state next)
{
	if (sh->state != SHAPE_ON)
		return;
	sh->used_ms = shape_used_ms(sh);
	shape_set_state(sh, next);
	metrics_add(METRIC_SHAPED_ACTIVE, -1);
	throttle_off(sh->thr);
	sh->thr = NULL;
}

/* Every tick of the trickle, while ON. */
static void shape_due(void *arg)
{
	struct shape *sh = arg;
	if (shape_used_ms(sh) >= sh->cfg->shape_time_ms)
		shape_finish(sh, "shape_time spent");
}

static void shape_wake(void *arg)
{
	struct shape *sh = arg;
	sh->wake(sh->arg);
}

/* Lending needs the trickle running and an owner to wake. */
static bool shape_may_lend(const struct shape *sh)
{
	return sh->state == SHAPE_ON && sh->wake;
}

bool shape_lend(struct shape *sh)
{
	/* throttle_lend checks the buffers (throttle_lendable) itself. */
	if (!shape_may_lend(sh) || !sh->bev || !throttle_lend(sh->thr, shape_wake))
		return false;
	sh->bev = NULL;
	return true;
}

bool shape_lent(const struct shape *sh)
{
	return throttle_is_lent(sh->thr);
}

bool shape_lendable(const struct shape *sh)
{
	return shape_may_lend(sh) && throttle_lendable(sh->thr);
}

size_t shape_lent_output(const struct shape *sh)
{
	return throttle_lent_output(sh->thr);
}

bool shape_start(struct shape *sh, int score)
{
	const struct config *cfg = sh->cfg;
	if (sh->state == SHAPE_ON || sh->state == SHAPE_SPENT ||
	    cfg->shape_time_ms == 0)
		return false;
	long left = cfg->shape_time_ms - sh->used_ms;
	if (left <= 0) {
		shape_set_state(sh, SHAPE_SPENT);
		return false;
	}
	/* No trickle (no memory): not shaped at all. Without a bufferevent
	 * (TLS starting, or parked) the trickle starts at shape_join. */
	if (sh->bev && !(sh->thr = throttle_on(sh->bev, shape_due, sh)))
		return false;
	event_base_gettimeofday_cached(sh->base, &sh->since);
	bool first = sh->state == SHAPE_NEVER;
	shape_set_state(sh, SHAPE_ON);
	metrics_add(METRIC_SHAPED_ACTIVE, 1);
	if (first) {
		metrics_inc(METRIC_SHAPED);
		log_info("session=%llu client=%s SHAPED score=%d rate=%u/s for at most %lds",
			 sh->id, sh->client, score, cfg->shape_rate, left / 1000);
	}
	throttle_window(shape_fd(sh), false);
	return true;
}

/* Before the trickle goes while the client stays: a lent trickle's bytes
 * go back to the owner's bufferevent (wake). False when they could not
 * (no memory: try again later) or the owner closed meanwhile. */
static bool shape_take_back(struct shape *sh)
{
	if (!throttle_is_lent(sh->thr))
		return true;
	sh->wake(sh->arg);
	return sh->state == SHAPE_ON && !throttle_is_lent(sh->thr);
}

void shape_pause(struct shape *sh)
{
	if (sh->state != SHAPE_ON || !shape_take_back(sh))
		return;
	shape_off(sh, SHAPE_PAUSED);
	throttle_window(shape_fd(sh), true);
}

void shape_finish(struct shape *sh, const char *why)
{
	if (sh->state == SHAPE_SPENT || sh->state == SHAPE_NEVER || !shape_take_back(sh))
		return;
	shape_off(sh, SHAPE_SPENT);
	shape_set_state(sh, SHAPE_SPENT);
	throttle_window(shape_fd(sh), true);
	log_info("session=%llu client=%s %s after %lds shaped; full speed",
		 sh->id, sh->client, why, sh->used_ms / 1000);
}

static void shape_hold_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shape *sh = arg;
	shape_fn *then = sh->hold_then;
	sh->hold_then = NULL;
	if (then)
		then(sh->arg);
}

bool shape_hold(struct shape *sh, long max_ms, shape_fn *then)
{
	if (sh->state != SHAPE_ON)
		return false;
	long left = sh->cfg->shape_time_ms - shape_used_ms(sh);
	if (left > max_ms)
		left = max_ms;
	if (left <= 0)
		return false;
	if (!sh->hold_ev &&
	    !(sh->hold_ev = evtimer_new(sh->base, shape_hold_cb, sh)))
		return false; /* no timer, no hold: reply now */
	struct timeval tv = mstime_tv(left);
	if (evtimer_add(sh->hold_ev, &tv) != 0)
		return false;
	sh->hold_then = then;
	metrics_inc(METRIC_FINAL_HOLDS);
	log_info("session=%llu client=%s HOLD end-of-data reply for %ld s", sh->id,
		 sh->client, (left + 500) / 1000);
	return true;
}

static void shape_verdict_cb(evutil_socket_t fd, short what, void *arg)
{
	struct shape *sh = arg;
	sh->verdict_due(sh->arg);
}

int shape_verdict_after(struct shape *sh, long ms)
{
	if (!sh->verdict_ev &&
	    !(sh->verdict_ev = evtimer_new(sh->base, shape_verdict_cb, sh)))
		return -1;
	struct timeval tv = mstime_tv(ms);
	const struct timeval *ctv = event_base_init_common_timeout(sh->base, &tv);
	return evtimer_add(sh->verdict_ev, ctv ? ctv : &tv);
}

void shape_verdict_cancel(struct shape *sh)
{
	if (sh->verdict_ev) {
		event_free(sh->verdict_ev);
		sh->verdict_ev = NULL;
	}
}

void shape_leave(struct shape *sh)
{
	throttle_off(sh->thr); /* the budget runs on, unchecked until joined */
	sh->thr = NULL;
	sh->bev = NULL;
}

bool shape_join(struct shape *sh, struct bufferevent *bev)
{
	sh->bev = bev;
	if (throttle_is_lent(sh->thr))
		return throttle_take_back(sh->thr, bev) == 0;
	if (sh->state != SHAPE_ON)
		return true;
	if (!(sh->thr = throttle_on(bev, shape_due, sh)))
		shape_finish(sh, "no memory for the trickle");
	else
		throttle_window(shape_fd(sh), false); /* if it started while left */
	return true;
}

void shape_free(struct shape *sh)
{
	shape_off(sh, SHAPE_PAUSED);
	if (sh->hold_ev) {
		event_free(sh->hold_ev);
		sh->hold_ev = NULL;
		sh->hold_then = NULL;
	}
	shape_verdict_cancel(sh);
}
