/*
 * throttle: the trickle, rate limits and receive windows (see throttle.h).
 * Exports throttle_*.
 *
 * Rate: shape_rate bytes per second as one byte per 1/rate second for
 * rates below 10 (smooth, so a client sees a steady trickle rather than a
 * burst every second), else rate/10 bytes every 100 ms; or, with
 * shape_tick set, rate x shape_tick bytes each shape_tick (fewer system
 * calls per byte, a burstier trickle). The same tick and bytes per tick
 * for the trickle and for libevent's bucket (TLS).
 *
 * The trickle: a struct throttle_loop per event loop (a worker has one;
 * tests make several) holds the shaped bufferevents in a list and one
 * persistent timer at the tick, allocated when the first one joins and
 * freed when the last one leaves. Each tick walks the list: the owner's
 * due callback (its budget), then at most one recv() of the bytes allowed
 * into the input buffer and the read callback, at most one send() of the
 * bytes allowed from the output buffer and, once it is empty, the write
 * callback; EOF, errors and the bufferevent's read and write timeouts
 * become its event callback, as libevent would report them. Any callback
 * may take its own or another entry off the list: the walk keeps its
 * position in the loop (cur, next), and throttle_off moves it on. A walk
 * that comes late (the last one over many sessions took longer than the
 * tick) moves the bytes of every tick missed, so the rate holds however
 * many are shaped (throttle_walk_bytes).
 *
 * Rejected: libevent's per-bufferevent rate limits for every shaped
 * session (~15 system calls and an epoll_ctl pair per trickled byte, CPU-
 * bound at tens of thousands of sessions; BENCHMARKS.md "Shaped sessions
 * at scale"); an edge-triggered read event per session to skip the recv()
 * that finds nothing (128 bytes more per session and an epoll_ctl pair per
 * shaping, to save about one system call per command line).
 *
 * Timeouts: libevent 2.1 has no getter for a bufferevent's timeouts, so
 * they are read from struct bufferevent (event2/bufferevent_struct.h), the
 * values libevent's own events would use. The read clock restarts on
 * every byte moved either way (the session re-arms its timeouts when a
 * reply has left) and while nothing is being read; the write clock on
 * every byte written and while nothing is owed.
 *
 * Window: SO_RCVBUF set on the listening socket before accept fixes the
 * window scale the connection negotiates, so the client can never have
 * more than about 8 KiB in flight until sluice opens the window
 * (SO_RCVBUF and TCP_WINDOW_CLAMP raised), which it does for trusted
 * sessions and for every DATA phase.
 */
#include "throttle.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"
#include "mstime.h"

#define THROTTLE_IOV_MAX 4 /* output extents sent in one sendmsg */
/* A late walk makes up for the ticks it missed, up to this much: a loop
 * stalled longer does not burst a session's backlog at once. */
#define THROTTLE_CATCHUP_MS 2000

struct throttle_loop;

/* The bytes of a lent entry (throttle_lend), in one allocation: the
 * output not yet sent, then the command line arriving. */
struct throttle_lent {
	throttle_due_fn *wake;
	int fd;
	uint32_t read_tmo_ms;  /* the bufferevent's timeouts (0: none) */
	uint32_t write_tmo_ms;
	uint32_t lent_at;      /* ms (mod 2^32) */
	uint16_t out_len, out_sent;
	uint16_t in_len, in_cap;
	char bytes[];          /* out_len of output, then in_cap of input */
};

struct throttle {
	TAILQ_ENTRY(throttle) link;
	struct throttle_loop *loop;
	struct bufferevent *bev; /* NULL while lent */
	struct throttle_lent *lent;
	throttle_due_fn *due;
	void *arg;
	uint32_t read_at;  /* ms (mod 2^32): the read timeout's clock */
	uint32_t write_at; /* ms (mod 2^32): the write timeout's clock */
	short enabled;     /* the bufferevent's events, off while shaped */
	bool bucket;       /* TLS filter: libevent's rate limit */
	bool owner_writes; /* writing was off: the owner writes between replies */
};

TAILQ_HEAD(throttle_list, throttle);

struct throttle_loop {
	struct throttle_loop *next_loop;
	struct event_base *base;
	struct event *tick_ev;
	struct throttle_list list;
	struct throttle *cur;  /* the walk's entry; NULL once it is off */
	struct throttle *next; /* the walk's next entry */
	long long walked_ms;   /* monotonic: the last walk (or the start) */
	long long carry_ms;    /* time since then not yet paid in ticks */
	bool walking;
};

static struct throttle_loop *loops;

/* libevent's configuration for a TLS filter (throttle_on): one timer per
 * TLS-shaped session on the loop's heap, which is rare enough. */
static struct ev_token_bucket_cfg *bucket;
static struct timeval bucket_tick;
static long long bucket_tick_ms; /* the same, at least 1 */
static size_t bucket_per_tick;
int throttle_init(const struct config *cfg)
{
	unsigned long long rate = cfg->shape_rate ? cfg->shape_rate : 1;
	unsigned long long us; /* the tick */
	size_t per_tick;
	if (cfg->shape_tick_ms > 0) {
		/* rate x tick bytes a tick, rounded down, at least one: the
		 * tick is stretched to 1/rate s where a byte needs longer. */
		us = (unsigned long long)cfg->shape_tick_ms * 1000;
		if (rate * us < 1000000)
			us = (1000000 + rate - 1) / rate;
		per_tick = (size_t)(rate * us / 1000000);
	} else if (rate < 10) {
		us = 1000000 / rate;
		per_tick = 1;
	} else {
		us = 100000;
		per_tick = (size_t)(rate / 10);
	}
	struct timeval tick = { .tv_sec = (time_t)(us / 1000000),
				.tv_usec = (suseconds_t)(us % 1000000) };
	bucket = ev_token_bucket_cfg_new(per_tick, per_tick, per_tick, per_tick, &tick);
	bucket_tick = tick;
	bucket_tick_ms = us >= 1000 ? (long long)(us / 1000) : 1;
	bucket_per_tick = per_tick;
	return bucket ? 0 : -1;
}

void throttle_free(void)
{
	if (bucket)
		ev_token_bucket_cfg_free(bucket);
	bucket = NULL;
}

/* --- the trickle --------------------------------------------------------- */

static uint32_t throttle_tv_ms(const struct timeval *tv)
{
	return (uint32_t)((unsigned long long)tv->tv_sec * 1000 + (unsigned long long)tv->tv_usec / 1000);
}

static uint32_t throttle_now(struct event_base *base)
{
	struct timeval tv;
	event_base_gettimeofday_cached(base, &tv);
	return throttle_tv_ms(&tv);
}

/* A bufferevent's timeout in ms (0: none). */
static uint32_t throttle_tmo_ms(const struct timeval *tv)
{
	if (!timerisset(tv))
		return 0;
	uint32_t ms = throttle_tv_ms(tv);
	return ms ? ms : 1;
}

/* At most n bytes from the socket into in: >0 read, 0 EOF, -1 errno. A
 * socket bufferevent keeps the end of its input frozen but for its own
 * reads (and the start of its output but for its own writes): so does
 * this. */
static ssize_t throttle_recv(struct evbuffer *in, int fd, size_t n)
{
	struct evbuffer_iovec v;
	ssize_t got = -1;
	evbuffer_unfreeze(in, 0);
	if (evbuffer_reserve_space(in, (ev_ssize_t)n, &v, 1) < 1) {
		errno = ENOMEM;
	} else if ((got = recv(fd, v.iov_base, n, MSG_DONTWAIT)) > 0) {
		v.iov_len = (size_t)got;
		if (evbuffer_commit_space(in, &v, 1) != 0) {
			errno = ENOMEM;
			got = -1;
		}
	}
	evbuffer_freeze(in, 0);
	return got;
}

/* At most n bytes from out to the socket, in one system call: >0 sent,
 * -1 errno. MSG_NOSIGNAL: a closed peer is an error, not a signal. */
static ssize_t throttle_send(struct evbuffer *out, int fd, size_t n)
{
	struct evbuffer_iovec v[THROTTLE_IOV_MAX];
	int k = evbuffer_peek(out, (ev_ssize_t)n, NULL, v, THROTTLE_IOV_MAX);
	if (k > THROTTLE_IOV_MAX)
		k = THROTTLE_IOV_MAX;
	size_t total = 0;
	for (int i = 0; i < k; i++) {
		if (v[i].iov_len > n - total)
			v[i].iov_len = n - total;
		total += v[i].iov_len;
	}
	struct msghdr msg = { .msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)k };
	ssize_t sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent > 0) {
		evbuffer_unfreeze(out, 1);
		int drained = evbuffer_drain(out, (size_t)sent);
		evbuffer_freeze(out, 1);
		if (drained != 0) {
			errno = ENOMEM; /* cannot happen: drain never allocates */
			return -1;
		}
	} else if (sent == 0)
		errno = EPIPE; /* nothing taken of a non-empty buffer */
	return sent > 0 ? sent : -1;
}

static bool throttle_would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Reports what (BEV_EVENT_*) as libevent would: the direction is switched
 * off first. False when the walk must leave the entry. */
static bool throttle_event(struct throttle_loop *l, struct throttle *t, short what)
{
	t->enabled &= (short)~(what & BEV_EVENT_READING ? EV_READ : EV_WRITE);
	bufferevent_trigger_event(t->bev, what, 0);
	return l->cur == t;
}

/* Nothing moved (errno says why) in direction dir (BEV_EVENT_READING or
 * _WRITING): the event to report (an error, or a timeout when tmo_ms
 * (0: none) has passed since at), or 0. The one rule for entries with
 * their bufferevent and lent ones. */
static short throttle_stall_event(short dir, uint32_t tmo_ms, uint32_t at, uint32_t now)
{
	if (!throttle_would_block())
		return BEV_EVENT_ERROR | dir;
	if (tmo_ms && now - at >= tmo_ms)
		return BEV_EVENT_TIMEOUT | dir;
	return 0;
}

/* The same, reported; false when the walk must leave t. */
static bool throttle_stalled(struct throttle_loop *l, struct throttle *t, short dir,
			     const struct timeval *tv, uint32_t at, uint32_t now)
{
	short what = throttle_stall_event(dir, throttle_tmo_ms(tv), at, now);
	return what ? throttle_event(l, t, what) : true;
}

/* One tick's bytes into the input; false when the walk must leave t. */
static bool throttle_tick_in(struct throttle_loop *l, struct throttle *t, uint32_t now,
			     size_t bytes)
{
	struct bufferevent *bev = t->bev;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t high = 0;
	bufferevent_getwatermark(bev, EV_READ, NULL, &high);
	if (!(t->enabled & EV_READ) || (high && evbuffer_get_length(in) >= high)) {
		t->read_at = now; /* not reading: no read timeout */
		return true;
	}
	ssize_t got = throttle_recv(in, (int)bufferevent_getfd(bev), bytes);
	if (got > 0) {
		t->read_at = now;
		bufferevent_trigger(bev, EV_READ, 0);
		return l->cur == t;
	}
	if (got == 0)
		return throttle_event(l, t, BEV_EVENT_EOF | BEV_EVENT_READING);
	return throttle_stalled(l, t, BEV_EVENT_READING, &bev->timeout_read, t->read_at, now);
}

/* One tick's bytes out of the output; false when the walk must leave t. */
static bool throttle_tick_out(struct throttle_loop *l, struct throttle *t, uint32_t now,
			      size_t bytes)
{
	struct bufferevent *bev = t->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	if (!(t->enabled & EV_WRITE) || evbuffer_get_length(out) == 0) {
		t->write_at = now; /* nothing owed: no write timeout */
		return true;
	}
	ssize_t sent = throttle_send(out, (int)bufferevent_getfd(bev), bytes);
	if (sent > 0) {
		t->write_at = t->read_at = now;
		/* The write callback once the output is down to its low
		 * watermark (empty, for a session), as libevent calls it. */
		bufferevent_trigger(bev, EV_WRITE, 0);
		return l->cur == t;
	}
	return throttle_stalled(l, t, BEV_EVENT_WRITING, &bev->timeout_write, t->write_at,
				now);
}

/* --- lent: the trickle without the bufferevent -------------------------- */

/* What a lent entry's owner must hear about, after one tick. */
enum throttle_news {
	THROTTLE_QUIET, /* bytes moved (or none could), nothing to report */
	THROTTLE_LINE,  /* a line feed arrived, or the line is too long to keep */
	THROTTLE_SENT,  /* the last output byte left */
	THROTTLE_EVENT, /* EOF, an error or a timeout (BEV_EVENT_*) */
};

bool throttle_lendable(const struct throttle *t)
{
	if (!t || t->lent || t->bucket)
		return false;
	struct evbuffer *in = bufferevent_get_input(t->bev);
	size_t n = evbuffer_get_length(in);
	if (n >= THROTTLE_LEND_IN_MAX ||
	    evbuffer_get_length(bufferevent_get_output(t->bev)) > THROTTLE_LEND_OUT_MAX)
		return false;
	return n == 0 || evbuffer_search(in, "\n", 1, NULL).pos < 0;
}

bool throttle_lend(struct throttle *t, throttle_due_fn *wake)
{
	if (!throttle_lendable(t))
		return false;
	struct bufferevent *bev = t->bev;
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
	size_t in_len = evbuffer_get_length(in), out_len = evbuffer_get_length(out);
	/* Room for the line so far and a little more, grown as it comes. */
	size_t cap = (in_len / THROTTLE_LEND_IN_STEP + 1) * THROTTLE_LEND_IN_STEP;
	struct throttle_lent *b = fd >= 0 ? malloc(sizeof *b + out_len + cap) : NULL;
	if (!b)
		return false;
	*b = (struct throttle_lent){
		.wake = wake, .fd = (int)fd,
		.read_tmo_ms = throttle_tmo_ms(&bev->timeout_read),
		.write_tmo_ms = throttle_tmo_ms(&bev->timeout_write),
		.lent_at = throttle_now(t->loop->base),
		.out_len = (uint16_t)out_len, .in_len = (uint16_t)in_len, .in_cap = (uint16_t)cap,
	};
	/* A socket bufferevent's output is frozen at its start (and
	 * copyout refuses a frozen start) but for its own writes. */
	evbuffer_unfreeze(out, 1);
	bool copied = evbuffer_copyout(out, b->bytes, out_len) == (ev_ssize_t)out_len &&
		      evbuffer_copyout(in, b->bytes + out_len, in_len) == (ev_ssize_t)in_len;
	evbuffer_freeze(out, 1);
	if (!copied) {
		free(b);
		return false;
	}
	t->lent = b;
	t->bev = NULL;
	return true;
}

int throttle_take_back(struct throttle *t, struct bufferevent *bev)
{
	struct throttle_lent *b = t->lent;
	if (!b)
		return -1;
	struct evbuffer *in = bufferevent_get_input(bev);
	evbuffer_unfreeze(in, 0);
	int rc = evbuffer_add(in, b->bytes + b->out_len, b->in_len);
	evbuffer_freeze(in, 0);
	if (evbuffer_add(bufferevent_get_output(bev), b->bytes + b->out_sent,
			 (size_t)(b->out_len - b->out_sent)) != 0)
		rc = -1;
	/* The bufferevent's events are the trickle's from now on, as from
	 * throttle_on; the owner's wish (enabled) is the one it lent with. */
	short on = bufferevent_get_enabled(bev);
	if (on) {
		t->enabled |= on;
		bufferevent_disable(bev, on);
	}
	t->bev = bev;
	t->lent = NULL;
	free(b);
	return rc;
}

bool throttle_is_lent(const struct throttle *t)
{
	return t && t->lent;
}

size_t throttle_lent_output(const struct throttle *t)
{
	return t && t->lent ? (size_t)(t->lent->out_len - t->lent->out_sent) : 0;
}

/* Nothing moved on a lent entry: news when throttle_stall_event says so. */
static enum throttle_news throttle_lent_stalled(short dir, uint32_t tmo_ms, uint32_t at,
						uint32_t now, short *what)
{
	*what = throttle_stall_event(dir, tmo_ms, at, now);
	return *what ? THROTTLE_EVENT : THROTTLE_QUIET;
}

/* One tick's bytes into a lent entry's line. Limits: the line is kept up
 * to THROTTLE_LEND_IN_MAX bytes, and for no longer than the read timeout
 * since it was lent; its bytes are not looked at but for the line feed. */
static enum throttle_news throttle_lent_in(struct throttle *t, uint32_t now, size_t bytes,
					   short *what)
{
	struct throttle_lent *b = t->lent;
	if (!(t->enabled & EV_READ)) {
		t->read_at = now; /* not reading: no read timeout */
		return THROTTLE_QUIET;
	}
	if (b->in_len == b->in_cap) {
		size_t cap = (size_t)b->in_cap + THROTTLE_LEND_IN_STEP;
		struct throttle_lent *grown = realloc(b, sizeof *b + b->out_len + cap);
		if (!grown)
			return THROTTLE_LINE; /* no room here: the bufferevent takes it on */
		t->lent = b = grown;
		b->in_cap = (uint16_t)cap;
	}
	char *at = b->bytes + b->out_len + b->in_len;
	size_t room = (size_t)(b->in_cap - b->in_len);
	ssize_t got = recv(b->fd, at, bytes < room ? bytes : room, MSG_DONTWAIT);
	if (got > 0) {
		t->read_at = now;
		b->in_len = (uint16_t)(b->in_len + got);
		/* A line dribbled for longer than the read timeout: the owner
		 * hears of it, as a bufferevent would have told it of every
		 * byte, so that its per-command deadline holds (slowloris). */
		bool overdue = b->read_tmo_ms && now - b->lent_at >= b->read_tmo_ms;
		return memchr(at, '\n', (size_t)got) || b->in_len >= THROTTLE_LEND_IN_MAX || overdue
			       ? THROTTLE_LINE : THROTTLE_QUIET;
	}
	if (got == 0) {
		*what = BEV_EVENT_EOF | BEV_EVENT_READING;
		return THROTTLE_EVENT;
	}
	return throttle_lent_stalled(BEV_EVENT_READING, b->read_tmo_ms, t->read_at, now, what);
}

/* One tick's bytes out of a lent entry's output. */
static enum throttle_news throttle_lent_out(struct throttle *t, uint32_t now, size_t bytes,
					    short *what)
{
	struct throttle_lent *b = t->lent;
	size_t left = (size_t)(b->out_len - b->out_sent);
	if (!(t->enabled & EV_WRITE) || left == 0) {
		t->write_at = now; /* nothing owed: no write timeout */
		return THROTTLE_QUIET;
	}
	ssize_t sent = send(b->fd, b->bytes + b->out_sent, bytes < left ? bytes : left,
			    MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent > 0) {
		t->write_at = t->read_at = now;
		b->out_sent = (uint16_t)(b->out_sent + sent);
		return b->out_sent == b->out_len ? THROTTLE_SENT : THROTTLE_QUIET;
	}
	if (sent == 0)
		errno = EPIPE;
	return throttle_lent_stalled(BEV_EVENT_WRITING, b->write_tmo_ms, t->write_at, now, what);
}

/* A lent entry's tick: bytes move without the bufferevent; news wakes the
 * owner, which takes its bufferevent back (throttle_take_back), and then
 * hears it as it would have from a bufferevent it kept. */
static void throttle_tick_lent(struct throttle_loop *l, struct throttle *t, uint32_t now,
			       size_t bytes)
{
	short what = 0;
	enum throttle_news news = throttle_lent_in(t, now, bytes, &what);
	if (news == THROTTLE_QUIET)
		news = throttle_lent_out(t, now, bytes, &what);
	if (news == THROTTLE_QUIET)
		return;
	t->lent->wake(t->arg);
	if (l->cur != t || t->lent)
		return; /* closed; or not taken back (no memory): the next tick */
	switch (news) {
	case THROTTLE_LINE:
		bufferevent_trigger(t->bev, EV_READ, 0);
		/* The reply's first byte in the same tick, as unlent. */
		if (l->cur == t)
			throttle_tick_out(l, t, now, bytes);
		break;
	case THROTTLE_SENT:
		bufferevent_trigger(t->bev, EV_WRITE, 0);
		break;
	default:
		throttle_event(l, t, what);
		break;
	}
}

static void throttle_tick_one(struct throttle_loop *l, struct throttle *t, uint32_t now,
			      size_t bytes)
{
	t->due(t->arg);
	if (l->cur != t || t->bucket)
		return;
	if (t->lent) {
		throttle_tick_lent(l, t, now, bytes);
		return;
	}
	/* Events switched on behind the trickle's back (nothing in sluice
	 * does): taken over, so that libevent does not read at full speed. */
	short on = bufferevent_get_enabled(t->bev);
	if (on) {
		t->enabled |= on;
		bufferevent_disable(t->bev, on);
	}
	/* In first: the reply to a command's last byte starts in the same
	 * tick, as it would with a full bucket. */
	if (throttle_tick_in(l, t, now, bytes))
		throttle_tick_out(l, t, now, bytes);
}

/* The bytes each entry may move this walk, each way: a tick's for every
 * tick since the last walk (rounded; at least one, at most
 * THROTTLE_CATCHUP_MS worth). A walk over tens of thousands of shaped
 * sessions takes longer than a tick (a recv and a send each); paying
 * only one tick's bytes per walk would slow every trickle as more
 * sessions are shaped, and the bigger writes make the next walk cheaper
 * per byte. */
static size_t throttle_walk_bytes(struct throttle_loop *l, long long now_ms)
{
	long long tick = bucket_tick_ms;
	long long max = THROTTLE_CATCHUP_MS / tick > 1 ? THROTTLE_CATCHUP_MS / tick : 1;
	l->carry_ms += now_ms - l->walked_ms;
	l->walked_ms = now_ms;
	long long ticks = (l->carry_ms + tick / 2) / tick;
	if (ticks < 1)
		ticks = 1;
	if (ticks > max)
		ticks = max;
	l->carry_ms -= ticks * tick;
	if (l->carry_ms < -tick || l->carry_ms > tick)
		l->carry_ms = 0; /* early, or beyond the catch-up: start afresh */
	return bucket_per_tick * (size_t)ticks;
}

static void throttle_loop_free(struct throttle_loop *l)
{
	struct throttle_loop **p = &loops;
	while (*p && *p != l)
		p = &(*p)->next_loop;
	if (*p)
		*p = l->next_loop;
	event_free(l->tick_ev);
	free(l);
}

static void throttle_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct throttle_loop *l = arg;
	uint32_t now = throttle_now(l->base);
	size_t bytes = throttle_walk_bytes(l, mstime_mono());
	l->walking = true;
	l->next = TAILQ_FIRST(&l->list);
	while ((l->cur = l->next)) {
		l->next = TAILQ_NEXT(l->cur, link);
		throttle_tick_one(l, l->cur, now, bytes);
	}
	l->walking = false;
	if (TAILQ_EMPTY(&l->list))
		throttle_loop_free(l); /* its last entry left during the walk */
}

static struct throttle_loop *throttle_loop_get(struct event_base *base)
{
	struct throttle_loop *l;
	for (l = loops; l; l = l->next_loop)
		if (l->base == base)
			return l;
	if (!(l = calloc(1, sizeof *l)))
		return NULL;
	l->base = base;
	l->walked_ms = mstime_mono();
	TAILQ_INIT(&l->list);
	l->tick_ev = event_new(base, -1, EV_PERSIST, throttle_tick_cb, l);
	if (!l->tick_ev || event_add(l->tick_ev, &bucket_tick) != 0) {
		if (l->tick_ev)
			event_free(l->tick_ev);
		free(l);
		return NULL;
	}
	l->next_loop = loops;
	loops = l;
	return l;
}

struct throttle *throttle_on(struct bufferevent *bev, throttle_due_fn *due, void *arg)
{
	struct event_base *base = bufferevent_get_base(bev);
	if (!bucket || !base)
		return NULL;
	struct throttle *t = calloc(1, sizeof *t);
	struct throttle_loop *l = t ? throttle_loop_get(base) : NULL;
	if (!l) {
		free(t);
		return NULL;
	}
	*t = (struct throttle){ .loop = l, .bev = bev, .due = due, .arg = arg,
				.bucket = bufferevent_get_underlying(bev) != NULL };
	t->read_at = t->write_at = throttle_now(base);
	if (t->bucket) {
		if (bufferevent_set_rate_limit(bev, bucket) != 0) {
			if (TAILQ_EMPTY(&l->list) && !l->walking)
				throttle_loop_free(l);
			free(t);
			return NULL;
		}
	} else {
		/* Writing is the trickle's whatever the bufferevent had: a
		 * session keeps it disabled between replies, which it writes
		 * straight to the socket when not shaped (session.c). */
		short on = bufferevent_get_enabled(bev);
		t->owner_writes = !(on & EV_WRITE);
		t->enabled = on | EV_WRITE;
		bufferevent_disable(bev, EV_READ | EV_WRITE);
	}
	TAILQ_INSERT_TAIL(&l->list, t, link);
	return t;
}

void throttle_off(struct throttle *t)
{
	if (!t)
		return;
	struct throttle_loop *l = t->loop;
	short on = t->enabled;
	/* An owner that writes by itself gets writing back only for what
	 * the trickle left: enabled with nothing to write, libevent would
	 * call the write callback at once (for a session: the command's
	 * time restarted) and cost an epoll_ctl pair for nothing. */
	if (t->lent)
		free(t->lent); /* its bytes go with it: the owner is closing */
	else if (t->bucket)
		bufferevent_set_rate_limit(t->bev, NULL);
	else {
		if (t->owner_writes && evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
			on &= (short)~EV_WRITE;
		if (on)
			bufferevent_enable(t->bev, on);
	}
	if (l->cur == t)
		l->cur = NULL;
	if (l->next == t)
		l->next = TAILQ_NEXT(t, link);
	TAILQ_REMOVE(&l->list, t, link);
	free(t);
	if (TAILQ_EMPTY(&l->list) && !l->walking)
		throttle_loop_free(l);
}

/* --- the receive window ------------------------------------------------ */

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
