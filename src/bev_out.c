/*
 * bev_out: see bev_out.h.
 */
#include "bev_out.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

int bev_out_write(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) == 0)
		return 0;
	/* A socket bufferevent keeps its output's front frozen but while
	 * its own write callback writes. */
	evbuffer_unfreeze(out, 1);
	int n = evbuffer_write(out, bufferevent_getfd(bev));
	int err = errno;
	evbuffer_freeze(out, 1);
	if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
		errno = err;
		return -1;
	}
	if (evbuffer_get_length(out) > 0 && bufferevent_enable(bev, EV_WRITE) != 0)
		return -1;
	return 0;
}
