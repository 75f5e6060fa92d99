/*
 * throttle: rate limits and receive windows (see throttle.h).
 *
 * Rate: shape_rate bytes per second as one byte per 1/rate second for
 * rates below 10 (smooth, so a client sees a steady trickle rather than a
 * burst every second), else rate/10 bytes every 100 ms.
 *
 * Window: SO_RCVBUF set on the listening socket before accept fixes the
 * window scale the connection negotiates, so the client can never have
 * more than about 8 KiB in flight until sluice opens the window
 * (SO_RCVBUF and TCP_WINDOW_CLAMP raised), which it does for trusted
 * sessions and for every DATA phase.
 */
#include "throttle.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"

static struct ev_token_bucket_cfg *bucket;
static struct timeval bucket_tick;
static size_t bucket_per_tick;
/* The same configuration on the loop's common timeout queue for this tick
 * (built on first use, in the worker that owns the loop). */
static struct ev_token_bucket_cfg *common_bucket;
static struct event_base *common_base;

int throttle_init(const struct config *cfg)
{
	unsigned rate = cfg->shape_rate ? cfg->shape_rate : 1;
	struct timeval tick;
	size_t per_tick;
	if (rate < 10) {
		tick.tv_sec = 0;
		tick.tv_usec = 1000000 / rate;
		if (rate == 1) {
			tick.tv_sec = 1;
			tick.tv_usec = 0;
		}
		per_tick = 1;
	} else {
		tick.tv_sec = 0;
		tick.tv_usec = 100000;
		per_tick = rate / 10;
	}
	bucket = ev_token_bucket_cfg_new(per_tick, per_tick, per_tick, per_tick, &tick);
	bucket_tick = tick;
	bucket_per_tick = per_tick;
	return bucket ? 0 : -1;
}

void throttle_free(void)
{
	if (bucket)
		ev_token_bucket_cfg_free(bucket);
	bucket = NULL;
	/* Bufferevents point at the configuration they were given: the
	 * caller frees them (and their loop) first. */
	if (common_bucket)
		ev_token_bucket_cfg_free(common_bucket);
	common_bucket = NULL;
	common_base = NULL;
}

/* Every shaped session refills on the same tick, so its refill timer can
 * live on one common timeout queue instead of the loop's timer heap:
 * O(1) to add and remove, where tens of thousands of sessions re-arm
 * their timers several times a second. libevent reads the tick length
 * through the common-timeout encoding (ev_token_bucket_cfg_new masks it).
 * Without a common timeout the plain configuration is used. */
static struct ev_token_bucket_cfg *throttle_bucket(struct bufferevent *bev)
{
	struct event_base *base = bufferevent_get_base(bev);
	if (common_bucket)
		/* A loop other than the first one keeps the plain timers: the
		 * first loop's sessions may still point at its configuration
		 * (a worker has one loop; only tests make several). */
		return common_base == base ? common_bucket : bucket;
	const struct timeval *ctv = base ? event_base_init_common_timeout(base, &bucket_tick)
					 : NULL;
	struct ev_token_bucket_cfg *c = ctv ? ev_token_bucket_cfg_new(
		bucket_per_tick, bucket_per_tick, bucket_per_tick, bucket_per_tick, ctv) : NULL;
	if (!c)
		return bucket;
	common_bucket = c;
	common_base = base;
	return c;
}

int throttle_apply(struct bufferevent *bev, bool shaped)
{
	if (!shaped)
		return bufferevent_set_rate_limit(bev, NULL);
	return bucket ? bufferevent_set_rate_limit(bev, throttle_bucket(bev)) : -1;
}

void throttle_window(int fd, bool wide)
{
	int size = wide ? THROTTLE_WIDE_RCVBUF : THROTTLE_SMALL_RCVBUF;
	/* Best effort: a failure leaves the window as it was. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	if (wide)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &size, sizeof size);
}

int throttle_listener(int fd)
{
	int size = THROTTLE_SMALL_RCVBUF;
	return setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}
