/*
 * backend: one SMTP client connection to the mail server (see backend.h).
 *
 * Reading: replies are parsed line by line (smtp_reply) and matched to the
 * oldest unanswered command. Writing: commands wait in "unsent" until the
 * RFC 2920 rules allow them out; Postfix 3.9 enforces those rules against
 * us (smtpd_forbid_unauth_pipelining) and drops a connection that breaks
 * them. Timeouts: while a reply is owed, the read timeout is that reply's
 * bound; while idle in the pool it is backend_idle, which recycles the
 * connection before Postfix's own idle timer would.
 *
 * Failure is always reported on a later loop turn (an event owned by the
 * connection), so no caller is re-entered.
 *
 * Writing (plain TCP, once connected): commands and body are added to the
 * output and written straight to the socket from write_ev, once per loop
 * turn for all that the turn added, with writing disabled on the
 * bufferevent: no write event added and deleted per write (two epoll_ctl
 * calls each; BENCHMARKS.md). What the socket does not take is libevent's
 * to carry (EV_WRITE enabled, under the write timeout) until the write
 * callback. TLS writes through its filter as before.
 */
#include "backend.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "bev_out.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"

#define BACKEND_QUIT_WAIT_MS 2000
#define BACKEND_OUT_LOWAT (64 * 1024)

enum backend_state {
	BACKEND_CONNECTING,
	BACKEND_HANDSHAKE, /* greeting, EHLO, STARTTLS */
	BACKEND_READY,     /* idle in the pool or lent out */
	BACKEND_CLOSING,   /* QUIT sent */
	BACKEND_DEAD,
};

struct backend_cmd;

struct backend {
	struct bufferevent *bev;
	enum backend_state state;
	bool tls;
	struct backend_caps caps; /* what the last EHLO offered */
	bool caps_assumed; /* caps are an earlier connection's: no EHLO yet */
	unsigned long long identity; /* key of the XCLIENT identity in force, 0 none */
	unsigned errors;   /* 4xx/5xx replies: Postfix counts them too */
	long long opened_ms;
	bool lent;       /* no idle recycle while lent */
	bool ready_seen; /* completed its opening handshake once */
	enum backend_fault fault;
	unsigned long long out_sent; /* bytes that left the output buffer */
	TAILQ_HEAD(, backend_cmd) unsent;
	TAILQ_HEAD(, backend_cmd) unanswered;
	bool group_open; /* last written command lets another follow */
	long reply_timeout_ms;
	struct smtp_reply reply; /* reply being read */
	char fail_reason[96];
};

struct backend_cmd {
	TAILQ_ENTRY(backend_cmd) link;
	backend_reply_fn fn;
	void *arg;
	bool ends_group;
	long timeout_ms;
	unsigned long long end; /* output offset just past this command */
	size_t len;
	char line[]; /* with CR LF */
};

static struct event *backend_fail_ev_make(struct backend *b);
static void backend_read_cb(struct bufferevent *bev, void *arg);
static void backend_write_cb(struct bufferevent *bev, void *arg);
static void backend_event_cb(struct bufferevent *bev, short what, void *arg);
static void backend_handshake_reply(void *arg, const struct smtp_reply *r);

/* The failure event lives beside the struct: allocated once per connection. */
struct backend_private {
	struct backend pub;
	struct event_base *base;
	const struct config *cfg;
	SSL_CTX *tls_client;
	const struct backend_hooks *hooks; /* the owner's (the pool's) */
	void *hooks_arg;
	struct event *fail_ev;
	struct event *write_ev; /* writes the output on this loop turn */
	int handshake_step;
	bool greeting_only; /* ready after the greeting: see backend_open */
	bool close_requested; /* freed from fail_ev, never inside a callback */
};

static struct backend_private *priv(struct backend *b)
{
	return (struct backend_private *)b;
}

static long long now_ms(struct backend *b)
{
	struct timeval tv;
	event_base_gettimeofday_cached(priv(b)->base, &tv);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The write timeout is always backend_timeout: it only runs while output
 * is pending, so it bounds a backend that stops reading our body. */
static void set_read_timeout(struct backend *b, long ms)
{
	struct timeval tv = mstime_tv(ms);
	struct timeval wtv = mstime_tv(priv(b)->cfg->backend_timeout_ms);
	bufferevent_set_timeouts(b->bev, ms > 0 ? &tv : NULL, &wtv);
}

/* Counts the bytes that left the output buffer, for the check above. */
static void backend_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
			   void *arg)
{
	struct backend *b = arg;
	b->out_sent += info->n_deleted;
}

static int backend_watch_output(struct backend *b)
{
	return evbuffer_add_cb(bufferevent_get_output(b->bev), backend_out_cb, b) ? 0 : -1;
}

size_t backend_unacked(const struct backend *b)
{
	struct bufferevent *under = bufferevent_get_underlying(b->bev);
	int fd = (int)bufferevent_getfd(under ? under : b->bev);
	int queued = 0;
	if (fd < 0 || ioctl(fd, SIOCOUTQ, &queued) != 0 || queued < 0)
		return 0;
	return (size_t)queued + backend_output_pending(b);
}

void backend_set_lent(struct backend *b, bool lent)
{
	b->lent = lent;
	if (!lent)
		set_read_timeout(b, priv(b)->cfg->backend_idle_ms);
}

static void backend_free_cmds(struct backend *b)
{
	struct backend_cmd *c;
	while ((c = TAILQ_FIRST(&b->unsent))) {
		TAILQ_REMOVE(&b->unsent, c, link);
		free(c);
	}
	while ((c = TAILQ_FIRST(&b->unanswered))) {
		TAILQ_REMOVE(&b->unanswered, c, link);
		free(c);
	}
}

static void backend_destroy(struct backend *b)
{
	struct backend_private *bp = priv(b);
	b->state = BACKEND_DEAD;
	backend_free_cmds(b);
	if (b->bev)
		bufferevent_free(b->bev);
	b->bev = NULL;
	if (bp->fail_ev)
		event_free(bp->fail_ev);
	if (bp->write_ev)
		event_free(bp->write_ev);
	bp->hooks->closed(bp->hooks_arg, b);
	free(bp);
}

static void backend_fail_fire(evutil_socket_t fd, short what, void *arg)
{
	struct backend *b = arg;
	if (b->state == BACKEND_CLOSING || priv(b)->close_requested) {
		backend_destroy(b);
		return;
	}
	priv(b)->hooks->failed(priv(b)->hooks_arg, b);
}

static void backend_fail_as(struct backend *b, enum backend_fault fault,
			    const char *why, bool quiet)
{
	if (b->state == BACKEND_DEAD)
		return;
	if (b->fault == BACKEND_FAULT_NONE)
		b->fault = fault;
	if (!b->fail_reason[0] && quiet) {
		snprintf(b->fail_reason, sizeof b->fail_reason, "%s", why);
	} else if (!b->fail_reason[0]) {
		snprintf(b->fail_reason, sizeof b->fail_reason, "%s", why);
		/* A refused connect is the pool's news (one line per outage). */
		if (b->ready_seen)
			log_warn("backend: connection failed: %s", why);
		metrics_inc(METRIC_POOL_FAILURES);
	}
	if (b->bev)
		bufferevent_disable(b->bev, EV_READ | EV_WRITE);
	backend_free_cmds(b);
	if (b->state != BACKEND_CLOSING)
		b->state = BACKEND_DEAD;
	event_active(priv(b)->fail_ev, 0, 0);
}

static void backend_fail_fault(struct backend *b, enum backend_fault fault,
			       const char *why)
{
	backend_fail_as(b, fault, why, false);
}

void backend_fail(struct backend *b, const char *why)
{
	backend_fail_as(b, BACKEND_FAULT_LOST, why, false);
}

/* An unsolicited line: a 421 is the server going away, which it may
 * announce at any time; anything else is a desynchronised stream. */
static enum backend_fault backend_fault_of(const char *line, size_t len)
{
	return len >= 3 && memcmp(line, "421", 3) == 0 ? BACKEND_FAULT_LOST
							: BACKEND_FAULT_PROTOCOL;
}

static struct event *backend_fail_ev_make(struct backend *b)
{
	return event_new(priv(b)->base, -1, 0, backend_fail_fire, b);
}

/* Writes go straight to the socket: plain TCP, connected, alive, and
 * writing disabled on the bufferevent (nothing left for libevent). */
static bool backend_writes_direct(struct backend *b)
{
	return b->bev && !b->tls && b->state != BACKEND_CONNECTING &&
	       b->state != BACKEND_DEAD && !priv(b)->close_requested &&
	       !(bufferevent_get_enabled(b->bev) & EV_WRITE);
}

static void backend_write_fire(evutil_socket_t fd, short what, void *arg)
{
	struct backend *b = arg;
	if (!backend_writes_direct(b))
		return;
	struct evbuffer *out = bufferevent_get_output(b->bev);
	if (evbuffer_get_length(out) == 0)
		return;
	if (bev_out_write(b->bev) != 0) {
		/* As libevent reports a failed write (errno is the error). */
		backend_event_cb(b->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, b);
		return;
	}
	/* Down to the low watermark: the write callback libevent would
	 * have called (the body is fed from it). */
	if (evbuffer_get_length(out) <= BACKEND_OUT_LOWAT)
		priv(b)->hooks->drained(priv(b)->hooks_arg, b);
}

/* What this turn added to the output is written at its end. */
static void backend_write_later(struct backend *b)
{
	if (backend_writes_direct(b))
		event_active(priv(b)->write_ev, 0, 0);
}

/* The final "." of a body is a short segment right after large ones:
 * with Nagle it waits for the server's delayed ACK (40 ms per message,
 * measured in bench/). Every write here is a whole command or a body
 * chunk, so nothing is gained by coalescing. Best effort: fails harmlessly
 * on unix sockets. */
static void backend_nodelay(int fd)
{
	int on = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* Starts a non-blocking connect. Plain TCP waits for nothing but the
 * greeting: no wake-up for the connect's completion (libevent's connect
 * adds one, with an epoll_ctl pair and a getsockopt); a refused or failed
 * connect shows as an error on the greeting's read, a silent server as
 * its timeout; writing stays disabled, so every command goes straight to
 * the socket, by backend_write_fire. With backend_tls libevent connects and
 * the EHLO before STARTTLS goes through its write event, as before: with
 * writing disabled from the start the TLS handshake over this bufferevent
 * never completed (test_hostile_022; the cause is not pinned down). */
static int backend_connect(struct backend *b)
{
	const struct config *cfg = priv(b)->cfg;
	if (cfg->backend_tls)
		return bufferevent_socket_connect(b->bev, (struct sockaddr *)&cfg->backend.ss,
						  (int)cfg->backend.len);
	int fd = socket(cfg->backend.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	backend_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&cfg->backend.ss, cfg->backend.len) != 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	bufferevent_disable(b->bev, EV_WRITE);
	if (bufferevent_setfd(b->bev, fd) != 0) {
		close(fd);
		return -1;
	}
	bufferevent_setwatermark(b->bev, EV_WRITE, BACKEND_OUT_LOWAT, 0);
	return 0;
}

struct backend *backend_open(struct event_base *base, const struct config *cfg,
			     SSL_CTX *tls_client, const struct backend_caps *assume,
			     const struct backend_hooks *hooks, void *hooks_arg)
{
	struct backend_private *bp = calloc(1, sizeof *bp);
	if (!bp)
		return NULL;
	struct backend *b = &bp->pub;
	bp->base = base;
	bp->cfg = cfg;
	bp->tls_client = tls_client;
	if (assume) {
		b->caps = *assume;
		bp->greeting_only = true;
	}
	bp->hooks = hooks;
	bp->hooks_arg = hooks_arg;
	TAILQ_INIT(&b->unsent);
	TAILQ_INIT(&b->unanswered);
	b->opened_ms = now_ms(b);
	bp->fail_ev = backend_fail_ev_make(b);
	bp->write_ev = event_new(base, -1, 0, backend_write_fire, b);
	b->bev = bufferevent_socket_new(priv(b)->base, -1,
					BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!bp->fail_ev || !bp->write_ev || !b->bev) {
		if (b->bev)
			bufferevent_free(b->bev);
		if (bp->fail_ev)
			event_free(bp->fail_ev);
		if (bp->write_ev)
			event_free(bp->write_ev);
		free(bp);
		return NULL;
	}
	b->state = BACKEND_CONNECTING;
	bufferevent_setcb(b->bev, backend_read_cb, backend_write_cb,
			  backend_event_cb, b);
	if (backend_watch_output(b) != 0) {
		backend_fail(b, "out of memory");
		return b;
	}
	struct timeval tv = mstime_tv(cfg->backend_connect_timeout_ms);
	bufferevent_set_timeouts(b->bev, &tv, &tv);
	smtp_reply_init(&b->reply);
	if (backend_connect(b) != 0) {
		/* Reported like any other failure, on a later turn. */
		backend_fail(b, "connect failed");
		return b;
	}
	metrics_inc(METRIC_POOL_CONNECTS);
	/* Expect the greeting as the reply to an implicit first command. */
	b->state = BACKEND_HANDSHAKE;
	b->group_open = false;
	struct backend_cmd *greet = calloc(1, sizeof *greet);
	if (!greet) {
		backend_fail(b, "out of memory");
		return b;
	}
	greet->fn = backend_handshake_reply;
	greet->arg = b;
	greet->ends_group = true;
	TAILQ_INSERT_TAIL(&b->unanswered, greet, link);
	bufferevent_enable(b->bev, EV_READ);
	return b;
}

static void backend_flush(struct backend *b)
{
	struct backend_cmd *c;
	while ((c = TAILQ_FIRST(&b->unsent))) {
		bool owed = !TAILQ_EMPTY(&b->unanswered);
		if (owed && !(b->caps.pipelining && b->group_open))
			return;
		TAILQ_REMOVE(&b->unsent, c, link);
		if (bufferevent_write(b->bev, c->line, c->len) != 0) {
			free(c);
			backend_fail(b, "write failed");
			return;
		}
		c->end = b->out_sent + evbuffer_get_length(bufferevent_get_output(b->bev));
		TAILQ_INSERT_TAIL(&b->unanswered, c, link);
		b->group_open = !c->ends_group;
		set_read_timeout(b, c->timeout_ms);
		backend_write_later(b);
	}
}

int backend_command(struct backend *b, const char *line, size_t len,
		    bool ends_group, long timeout_ms, backend_reply_fn fn,
		    void *arg)
{
	if (b->state == BACKEND_DEAD || b->state == BACKEND_CLOSING)
		return -1;
	struct backend_cmd *c = malloc(sizeof *c + len + 3);
	if (!c) {
		backend_fail(b, "out of memory");
		return -1;
	}
	c->fn = fn;
	c->arg = arg;
	c->ends_group = ends_group;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : priv(b)->cfg->backend_timeout_ms;
	memcpy(c->line, line, len);
	memcpy(c->line + len, "\r\n", 3);
	c->len = len + 2;
	TAILQ_INSERT_TAIL(&b->unsent, c, link);
	backend_flush(b);
	return 0;
}

int backend_write(struct backend *b, struct evbuffer *data)
{
	if (b->state == BACKEND_DEAD)
		return -1;
	if (bufferevent_write_buffer(b->bev, data) != 0) {
		backend_fail(b, "write failed");
		return -1;
	}
	backend_write_later(b);
	return 0;
}

size_t backend_output_pending(const struct backend *b)
{
	return b->bev ? evbuffer_get_length(bufferevent_get_output(b->bev)) : 0;
}

bool backend_idle(const struct backend *b)
{
	return b->state == BACKEND_READY && TAILQ_EMPTY(&b->unsent) &&
	       TAILQ_EMPTY(&b->unanswered) &&
	       evbuffer_get_length(bufferevent_get_input(b->bev)) == 0;
}

static void backend_quit_reply(void *arg, const struct smtp_reply *r)
{
	/* Wait for the server to close its end (EOF, or the QUIT bound):
	 * until then the connection still counts against the pool's cap as
	 * the server sees it. */
}

/* Frees the connection on the next loop turn: backend_close is often
 * called from inside one of this connection's own reply handlers. */
static void backend_close_now(struct backend *b)
{
	priv(b)->close_requested = true;
	b->state = BACKEND_DEAD;
	b->lent = false;
	if (b->bev)
		bufferevent_disable(b->bev, EV_READ | EV_WRITE);
	backend_free_cmds(b);
	event_active(priv(b)->fail_ev, 0, 0);
}

void backend_close(struct backend *b, bool polite)
{
	if (b->state == BACKEND_CLOSING || priv(b)->close_requested)
		return;
	b->lent = false;
	if (!polite || b->state != BACKEND_READY || !TAILQ_EMPTY(&b->unanswered) ||
	    backend_command(b, "QUIT", 4, true, BACKEND_QUIT_WAIT_MS,
			    backend_quit_reply, b) != 0) {
		backend_close_now(b);
		return;
	}
	b->state = BACKEND_CLOSING;
}

/* --- the opening handshake ------------------------------------------- */

enum { HS_GREETING, HS_EHLO, HS_STARTTLS, HS_EHLO_TLS };

static void backend_send_ehlo(struct backend *b)
{
	char line[300];
	int n = snprintf(line, sizeof line, "EHLO %s", priv(b)->cfg->myhostname);
	backend_command(b, line, (size_t)n, true, 0, backend_handshake_reply, b);
}

void backend_take_caps(struct backend *b, const struct smtp_reply *r)
{
	b->caps_assumed = false;
	b->caps.pipelining = r->has_pipelining;
	b->caps.xclient = r->has_xclient;
	b->caps.smtputf8 = r->has_smtputf8;
	b->caps.eightbitmime = r->has_8bitmime;
	b->caps.starttls = r->has_starttls;
	b->caps.chunking = r->has_chunking;
	b->caps.size_max = r->size_max > 0 ? (unsigned long long)r->size_max : 0;
	snprintf(b->caps.xclient_attrs, sizeof b->caps.xclient_attrs, "%s", r->xclient_attrs);
}

static int backend_start_tls(struct backend *b)
{
	SSL *ssl = priv(b)->tls_client ? SSL_new(priv(b)->tls_client) : NULL;
	if (!ssl)
		return -1;
	struct bufferevent *tls = bufferevent_openssl_filter_new(
		priv(b)->base, b->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
		BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!tls) {
		SSL_free(ssl);
		return -1;
	}
	b->bev = tls;
	b->tls = true;
	bufferevent_setcb(tls, backend_read_cb, backend_write_cb, backend_event_cb, b);
	/* A fresh output buffer: offsets restart with it. */
	b->out_sent = 0;
	if (backend_watch_output(b) != 0)
		return -1;
	bufferevent_enable(tls, EV_READ);
	return 0;
}

static void backend_handshake_reply(void *arg, const struct smtp_reply *r)
{
	struct backend *b = arg;
	struct backend_private *bp = priv(b);
	char why[160];
	if (r->code / 100 != 2) {
		snprintf(why, sizeof why, "handshake step %d answered %d %.100s",
			 bp->handshake_step, r->code, r->text);
		backend_fail(b, why);
		return;
	}
	switch (bp->handshake_step) {
	case HS_GREETING:
		if (bp->greeting_only) {
			b->caps_assumed = true;
			break;
		}
		bp->handshake_step = HS_EHLO;
		backend_send_ehlo(b);
		return;
	case HS_EHLO:
		backend_take_caps(b, r);
		if (priv(b)->cfg->backend_tls) {
			if (!b->caps.starttls) {
				backend_fail(b, "backend_tls = yes but STARTTLS not offered");
				return;
			}
			bp->handshake_step = HS_STARTTLS;
			backend_command(b, "STARTTLS", 8, true, 0,
					backend_handshake_reply, b);
			return;
		}
		break;
	case HS_STARTTLS:
		if (backend_start_tls(b) != 0) {
			backend_fail(b, "cannot start TLS");
			return;
		}
		bp->handshake_step = HS_EHLO_TLS;
		backend_send_ehlo(b);
		return;
	case HS_EHLO_TLS:
		backend_take_caps(b, r);
		break;
	}
	b->state = BACKEND_READY;
	b->ready_seen = true;
	backend_set_lent(b, false);
	bp->hooks->ready(bp->hooks_arg, b);
}

/* --- I/O callbacks ----------------------------------------------------- */

static void backend_read_cb(struct bufferevent *bev, void *arg)
{
	struct backend *b = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[SMTP_REPLY_LINE_MAX];
	while (b->state != BACKEND_DEAD) {
		size_t eol_len = 0;
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len,
							    EVBUFFER_EOL_CRLF_STRICT);
		if (p.pos < 0) {
			if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX) {
				backend_fail_fault(b, BACKEND_FAULT_PROTOCOL,
						   "reply line too long");
			}
			return;
		}
		if ((size_t)p.pos > SMTP_REPLY_LINE_MAX - 2) {
			backend_fail_fault(b, BACKEND_FAULT_PROTOCOL,
					   "reply line too long");
			return;
		}
		size_t len = (size_t)p.pos;
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		struct backend_cmd *c = TAILQ_FIRST(&b->unanswered);
		if (!c) {
			/* Idle: Postfix's own "421 timeout" or a desynchronised
			 * stream; either way this connection is finished. */
			backend_fail_fault(b, backend_fault_of(line, len),
					   "unsolicited reply");
			return;
		}
		/* A reply cannot answer a command the server has not been sent
		 * in full: one that comes earlier (during a body, or queued
		 * behind a 220 before our EHLO left) is a desynchronised
		 * stream, never the answer (HOSTILE 8, 91). */
		if (b->reply.lines == 0 && b->out_sent < c->end) {
			/* A 421 is the server going away, which it may announce
			 * at any time; anything else is out of step. */
			backend_fail_fault(b, backend_fault_of(line, len),
					   "unsolicited reply (before its command was sent)");
			return;
		}
		enum smtp_reply_status st = smtp_reply_line(&b->reply, line, len);
		if (st == SMTP_REPLY_INVALID) {
			backend_fail_fault(b, BACKEND_FAULT_PROTOCOL,
					   "malformed reply");
			return;
		}
		if (st == SMTP_REPLY_MORE)
			continue;
		TAILQ_REMOVE(&b->unanswered, c, link);
		struct smtp_reply *r = &b->reply;
		if (r->code >= 400)
			b->errors++;
		if (r->code == 421 && b->state != BACKEND_CLOSING) {
			/* The server is closing: nothing after this will work. */
			c->fn(c->arg, r);
			free(c);
			backend_fail(b, "421 from backend");
			return;
		}
		bool closing = b->state == BACKEND_CLOSING;
		c->fn(c->arg, r);
		free(c);
		if (closing)
			return; /* destroyed by the QUIT handler */
		if (b->state == BACKEND_DEAD)
			return;
		smtp_reply_init(&b->reply);
		/* A handler may have layered TLS over this bufferevent: then the
		 * bytes after this reply are no longer ours to read. */
		if (bev != b->bev)
			return;
		if (TAILQ_EMPTY(&b->unanswered)) {
			b->group_open = false;
			set_read_timeout(b, b->state == BACKEND_READY && TAILQ_EMPTY(&b->unsent)
					    ? (b->lent ? 0 : priv(b)->cfg->backend_idle_ms)
					    : priv(b)->cfg->backend_timeout_ms);
		}
		backend_flush(b);
	}
}

static void backend_write_cb(struct bufferevent *bev, void *arg)
{
	struct backend *b = arg;
	/* libevent has written it all (and removed its write event): the
	 * next writes go straight out again (backend_write_fire). */
	if (!b->tls && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
	priv(b)->hooks->drained(priv(b)->hooks_arg, b);
}

static void backend_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct backend *b = arg;
	if (what & BEV_EVENT_CONNECTED) { /* backend_tls: libevent connected */
		bufferevent_setwatermark(bev, EV_WRITE, BACKEND_OUT_LOWAT, 0);
		backend_nodelay(bufferevent_getfd(bev));
		return;
	}
	if (b->state == BACKEND_CLOSING) {
		event_active(priv(b)->fail_ev, 0, 0);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (b->state == BACKEND_READY && TAILQ_EMPTY(&b->unanswered) && !b->lent) {
			/* Idle long enough: recycle before the server drops us. */
			backend_fail_as(b, BACKEND_FAULT_IDLE, "idle recycle", true);
			return;
		}
		backend_fail(b, b->state == BACKEND_CONNECTING ? "connect timeout"
							       : "reply timeout");
		return;
	}
	char why[96];
	snprintf(why, sizeof why, "%s%s",
		 what & BEV_EVENT_EOF ? "connection closed by backend" : "I/O error: ",
		 what & BEV_EVENT_EOF ? "" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	backend_fail(b, why);
}

bool backend_caps_assumed(const struct backend *b)
{
	return b->caps_assumed;
}

const struct backend_caps *backend_caps(const struct backend *b)
{
	return &b->caps;
}

bool backend_ready(const struct backend *b)
{
	return b->state == BACKEND_READY;
}

bool backend_ready_seen(const struct backend *b)
{
	return b->ready_seen;
}

enum backend_fault backend_fault(const struct backend *b)
{
	return b->fault;
}

const char *backend_fail_reason(const struct backend *b)
{
	return b->fail_reason;
}

unsigned backend_errors(const struct backend *b)
{
	return b->errors;
}

unsigned long long backend_identity(const struct backend *b)
{
	return b->identity;
}

void backend_set_identity(struct backend *b, unsigned long long key)
{
	b->identity = key;
}
