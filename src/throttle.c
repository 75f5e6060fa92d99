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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"

static struct ev_token_bucket_cfg *bucket;

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
	return bucket ? 0 : -1;
}

void throttle_free(void)
{
	if (bucket)
		ev_token_bucket_cfg_free(bucket);
	bucket = NULL;
}

int throttle_apply(struct bufferevent *bev, bool shaped)
{
	return bufferevent_set_rate_limit(bev, shaped ? bucket : NULL);
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
