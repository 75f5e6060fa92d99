/*
 * session: lifecycle and I/O of client sessions (see session.h).
 *
 * Input: the read callback runs the input loop, which takes complete lines
 * (command mode) or any bytes (DATA) from the bufferevent's input buffer.
 * The loop stops while the session is busy (a replay, DNS or the TLS
 * handshake is in flight), while the client is not reading our replies
 * (output above SESSION_OUT_HIGHWAT), and after SESSION_CMDS_PER_TURN
 * commands, so one pipelining client cannot starve the others; it resumes
 * from a per-session event on a later loop turn.
 *
 * Writing: replies are added to the bufferevent's output and, on a plain
 * socket that is not shaped, written straight to it at the end of the turn
 * that made them (session_write_now): one write for a pipelined batch, and
 * no write event for a reply the socket takes whole (libevent would add
 * and delete one per reply: two epoll_ctl calls, a quarter of the system
 * calls a message cost; BENCHMARKS.md). Writing stays disabled on the
 * bufferevent between replies; what the socket does not take is libevent's
 * to carry (EV_WRITE enabled, under the write timeout) until the write
 * callback. Either way session_output_left does what follows a reply
 * leaving. TLS (the filter) and the trickle (throttle.c) write as before.
 *
 * Freeing: session_close marks the session CLOSING and lets the last reply
 * drain; the struct is freed from the reap event, once per loop turn and
 * never inside one of its own callbacks. Freeing cancels whatever the
 * session still owns: its DNS look-up, its replay, its message spool.
 */
#include "session_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bev_out.h"
#include "client_limits.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "ratelog.h"
#include "spool.h"
#include "store.h"

#define SESSION_SKIP_MAX (1024 * 1024) /* overlong line bytes skipped before we give up */
#define SESSION_ERRORS_SIGNAL 3        /* protocol errors before ERRORS fires */
/* CLOSING: how often to look whether the last reply has left (the TLS
 * filter's write callback comes before the socket's buffer is empty). */
#define SESSION_FLUSH_POLL_MS 20
#define SESSION_LIMIT_LOG_INTERVAL_MS 60000 /* one session_limit line a minute */

static const char *const session_state_names[] = {
#define SESSION_STATE_NAME(s) #s,
	SESSION_STATES(SESSION_STATE_NAME)
#undef SESSION_STATE_NAME
};

/* The outcomes of a hang-up, per state: constants, so that a session
 * keeps a pointer instead of a copy. */
static const char *const session_disconnect_names[] = {
#define SESSION_DISCONNECT_NAME(s) "disconnect in " #s,
	SESSION_STATES(SESSION_DISCONNECT_NAME)
#undef SESSION_DISCONNECT_NAME
};
static const char *const session_error_names[] = {
#define SESSION_ERROR_NAME(s) "connection error in " #s,
	SESSION_STATES(SESSION_ERROR_NAME)
#undef SESSION_ERROR_NAME
};

static TAILQ_HEAD(, session) sessions = TAILQ_HEAD_INITIALIZER(sessions);
static TAILQ_HEAD(, session) reap_list = TAILQ_HEAD_INITIALIZER(reap_list);
static struct event *reap_ev;
static unsigned n_sessions;

static void session_input(struct session *s);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);
static void session_write_now(struct session *s);

unsigned session_count(void)
{
	return n_sessions;
}

void session_foreach(void (*fn)(const struct session *s, void *arg), void *arg)
{
	const struct session *s;
	TAILQ_FOREACH(s, &sessions, link)
		fn(s, arg);
}

void session_set_state(struct session *s, enum session_state st)
{
	if (s->state == st)
		return;
	log_debug("session=%llu state %s -> %s", s->ident.session_id,
		  session_state_names[s->state], session_state_names[st]);
	s->state = st;
}

static void session_timeouts(struct session *s, bool reading)
{
	long ms = s->env->cfg->smtpd_timeout_ms;
	struct timeval tv = mstime_tv(ms);
	bufferevent_set_timeouts(s->bev, reading ? &tv : NULL, &tv);
}

/* --- replies ----------------------------------------------------------- */

/* Replies go straight to the socket: a plain one (no TLS filter), not
 * shaped (the trickle moves a shaped session's bytes), and with writing
 * disabled on the bufferevent, i.e. nothing left for libevent to carry. */
static bool session_writes_direct(const struct session *s)
{
	return s->bev && !bufferevent_get_underlying(s->bev) &&
	       !shape_is_on(&s->shape) &&
	       !(bufferevent_get_enabled(s->bev) & EV_WRITE);
}

void session_count_reply(struct session *s, int code, size_t len)
{
	s->bytes_out += len;
	metrics_inc(code >= 500 ? METRIC_REPLIES_5XX
		    : code >= 400 ? METRIC_REPLIES_4XX : METRIC_REPLIES_2XX);
	/* Made outside the input loop (a backend's answer relayed, a DNS
	 * result, a timer): written on this loop turn, once its maker is
	 * done (session_defer_cb), so that what follows a reply leaving
	 * never runs in the middle of the code that made it. */
	if (!s->in_input && s->state != SESSION_CLOSING && session_writes_direct(s))
		event_active(s->defer_ev, 0, 0);
}

size_t session_refuse_raw(const struct session_env *env, int fd)
{
	char buf[600];
	size_t len = reply_format(REPLY_RESOURCES, env->cfg->myhostname, NULL, buf, sizeof buf);
	return len > 0 && write(fd, buf, len) == (ssize_t)len ? len : 0;
}

void session_reply(struct session *s, enum reply_id id)
{
	char buf[600];
	size_t len = reply_format(id, s->env->cfg->myhostname, s->ident.addr, buf, sizeof buf);
	if (len == 0 || bufferevent_write(s->bev, buf, len) != 0) {
		session_close(s, "write failed");
		return;
	}
	session_count_reply(s, reply_code(id), len);
}

void session_reply_relay(struct session *s, const struct smtp_reply *r)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t before = evbuffer_get_length(out);
	const char *p = r->text, *end = r->text + r->text_len;
	do {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = nl ? nl : end;
		int last = nl == NULL;
		if (evbuffer_add_printf(out, "%d%c%s%s%.*s\r\n", r->code,
					last ? ' ' : '-', r->enhanced,
					r->enhanced[0] ? " " : "",
					(int)(line_end - p), p) < 0) {
			session_close(s, "write failed");
			return;
		}
		p = nl ? nl + 1 : end;
	} while (p < end);
	session_count_reply(s, r->code, evbuffer_get_length(out) - before);
}

/* --- closing and freeing ------------------------------------------------- */

void session_txn_free(struct session *s)
{
	struct txn *t = s->txn;
	if (!t)
		return;
	free(t->sender);
	for (size_t i = 0; i < t->n_rcpts; i++)
		free(t->rcpts[i]);
	free(t->rcpts);
	free(t->pending_rcpt);
	spool_free(t->body);
	free(t);
	s->txn = NULL;
}

static void session_log_summary(struct session *s)
{
	long long d = mstime_mono() - s->started_ms;
	char helo[120];
	log_escape(helo, sizeof helo, s->helo ? s->helo : "", s->helo ? strlen(s->helo) : 0);
	char signals[200];
	log_info("session=%llu client=%s port=%u name=%s helo=\"%s\" tls=%s "
		 "score=%d signals=%s shaped=%s shaped_s=%ld phase=%s "
		 "transactions=%u rcpt=%u/%u lane=%u lane_fallbacks=%u "
		 "bytes_in=%llu bytes_out=%llu duration=%lld.%03llds outcome=%s",
		 s->ident.session_id, s->ident.addr, s->ident.port,
		 s->ident.name_status == DNS_NAME_OK ? s->name
		 : s->ident.name_status == DNS_NAME_TEMPFAIL ? "[TEMPUNAVAIL]"
							    : "[UNAVAILABLE]",
		 helo, s->tls ? (s->tls_info ? s->tls_info : "") : "no", s->cls.score,
		 classify_list(&s->cls, signals, sizeof signals),
		 shape_ever(&s->shape) ? "yes" : "no", shape_used_ms(&s->shape) / 1000,
		 session_phase_name(s->phase_reached), s->transactions,
		 s->rcpt_accepted, s->rcpt_refused, session_lane_messages(s),
		 session_lane_fallbacks(s), s->bytes_in, s->bytes_out,
		 d / 1000, d % 1000, s->outcome ? s->outcome : "closed");
}

static void session_free(struct session *s)
{
	if (s->counted)
		client_limits_leave(&s->peer.sa,
				    s->env->cfg->ipv6_client_prefix);
	session_shape_end(s, false);
	session_log_summary(s);
	if (s->store_req)
		store_lookup_cancel(s->store_req);
	if (s->dns)
		dns_ptr_cancel(s->dns);
	if (s->replay)
		replay_cancel(s->replay);
	session_lane_free(s);
	session_txn_free(s);
	if (s->parked) {
		close(event_get_fd(s->defer_ev));
		metrics_add(METRIC_SESSIONS_PARKED, -1);
	}
	event_del(s->defer_ev);
	if (s->bev)
		bufferevent_free(s->bev);
	TAILQ_REMOVE(&sessions, s, link);
	n_sessions--;
	metrics_add(METRIC_SESSIONS_ACTIVE, -1);
	session_mem_strfree(s->name);
	session_mem_strfree(s->helo);
	free(s->tls_info);
	session_mem_free(s);
}

static void session_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s;
	while ((s = TAILQ_FIRST(&reap_list))) {
		TAILQ_REMOVE(&reap_list, s, link);
		TAILQ_INSERT_TAIL(&sessions, s, link); /* session_free removes it */
		session_free(s);
	}
}

static void session_schedule_free(struct session *s)
{
	if (s->freed_pending)
		return;
	s->freed_pending = true;
	if (s->bev)
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	TAILQ_REMOVE(&sessions, s, link);
	TAILQ_INSERT_TAIL(&reap_list, s, link);
	event_active(reap_ev, 0, 0);
}

/* Bytes still to go to the client: with TLS, the filter's buffer and the
 * socket's under it. */
static size_t session_output_pending(const struct session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

/* CLOSING: free once the last reply is out, or at the flush deadline. The
 * TLS filter reports its own buffer empty before the socket's is, so this
 * polls briefly instead of trusting the write callback alone. */
static void session_flush_check(struct session *s)
{
	if (session_output_pending(s) == 0 || mstime_mono() > s->deadline_ms) {
		session_schedule_free(s);
		return;
	}
	struct timeval tv = mstime_tv(SESSION_FLUSH_POLL_MS);
	event_add(s->defer_ev, &tv);
}

/* hangup: the client closed the connection (EOF), which is what shaping
 * counts; outcome is for the log only. */
static void session_close_as(struct session *s, const char *outcome,
			     bool hangup)
{
	if (s->state == SESSION_CLOSING)
		return;
	if (!s->outcome)
		s->outcome = outcome;
	s->phase_reached = session_phase(s);
	session_shape_end(s, hangup);
	session_set_state(s, SESSION_CLOSING);
	if (s->store_req) {
		store_lookup_cancel(s->store_req);
		s->store_req = NULL;
	}
	if (s->dns) {
		dns_ptr_cancel(s->dns);
		s->dns = NULL;
	}
	if (s->replay) {
		replay_cancel(s->replay);
		s->replay = NULL;
	}
	session_lane_end(s);
	session_txn_free(s);
	if (!s->bev) { /* it could not be unparked: the socket is closed */
		session_schedule_free(s);
		return;
	}
	bufferevent_disable(s->bev, EV_READ);
	struct timeval tv = mstime_tv(SESSION_FLUSH_TIMEOUT_MS);
	s->deadline_ms = mstime_mono() + SESSION_FLUSH_TIMEOUT_MS;
	bufferevent_set_timeouts(s->bev, NULL, &tv);
	/* The last reply: straight out, or carried by libevent under the
	 * flush timeout for what the socket does not take. */
	if (session_writes_direct(s))
		session_write_now(s);
	else
		bufferevent_enable(s->bev, EV_WRITE);
	if (!s->freed_pending)
		session_flush_check(s);
}

void session_close(struct session *s, const char *outcome)
{
	session_close_as(s, outcome, false);
}

void session_error(struct session *s)
{
	if (++s->errors == SESSION_ERRORS_SIGNAL)
		session_signal(s, SIGNAL_ERRORS, NULL);
	if (s->state != SESSION_CLOSING && s->errors >= s->env->cfg->smtpd_hard_error_limit) {
		metrics_inc(METRIC_LIMIT_ERRORS);
		log_warn("session=%llu client=%s too many errors (%u)",
			 s->ident.session_id, s->ident.addr, s->errors);
		session_reply(s, REPLY_TOO_MANY_ERRORS);
		session_close(s, "too many errors");
	}
}

/* --- DNS --------------------------------------------------------------- */

static void session_dns_done(enum dns_name_status st, const char *name, void *arg)
{
	struct session *s = arg;
	s->dns = NULL;
	s->ident.name_status = st;
	if (st == DNS_NAME_OK) {
		s->name = session_mem_strndup(name, strlen(name));
		if (!s->name)
			s->ident.name_status = DNS_NAME_TEMPFAIL;
		s->ident.name = s->name;
	}
	session_shape_dns_done(s, st, name);
	if (s->after_dns) {
		void (*then)(struct session *) = s->after_dns;
		s->after_dns = NULL;
		session_set_wait(s, SESSION_WAIT_REPLAY); /* what waited for it */
		then(s);
		return;
	}
	/* The answer came after the greeting (greet_wait over first): the
	 * session may be idle already. */
	session_park_later(s);
}

bool session_identity_ready(struct session *s, void (*then)(struct session *))
{
	if (!s->dns)
		return true;
	s->after_dns = then;
	session_set_wait(s, SESSION_WAIT_DNS);
	return false;
}

/* --- input loop -------------------------------------------------------- */

static const char *const session_wait_names[] = {
#define SESSION_WAIT_NAME(id, name) name,
	SESSION_WAITS(SESSION_WAIT_NAME)
#undef SESSION_WAIT_NAME
};

/* The one setter of s->wait. */
void session_set_wait(struct session *s, enum session_wait w)
{
	if (s->wait == w)
		return;
	log_debug("session=%llu wait %s -> %s", s->ident.session_id,
		  session_wait_names[s->wait], session_wait_names[w]);
	s->wait = w;
}

/* Input stops (w) or resumes (NONE), with the timeouts that go with it. */
void session_wait_for(struct session *s, enum session_wait w)
{
	session_set_wait(s, w);
	/* While sluice owes the reply, the client's silence is not idleness. */
	session_timeouts(s, w == SESSION_WAIT_NONE);
	if (w == SESSION_WAIT_NONE)
		session_resume(s);
}

static void session_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	if (s->state == SESSION_CLOSING) {
		session_flush_check(s);
	} else if (s->state != SESSION_GREETING) { /* shaping's timer greets */
		/* A timeout here is the park delay (session_park_later). */
		bool delay_over = what & EV_TIMEOUT;
		if (delay_over && session_park(s))
			return;
		session_input(s); /* writes what was made meanwhile, too */
		/* A shaped session's delay is one loop turn: after a park
		 * that failed, trying again at once would spin. */
		if (!delay_over || !shape_is_on(&s->shape))
			session_park_later(s);
	} else {
		session_write_now(s);
	}
}

int session_defer_assign(struct session *s)
{
	return event_assign(s->defer_ev, s->env->base, -1, 0, session_defer_cb, s);
}

void session_resume(struct session *s)
{
	if (s->state != SESSION_CLOSING)
		event_active(s->defer_ev, 0, 0);
}

/* Whether the client sent more after the line just taken: in our buffer,
 * or still in the kernel's (a shaped session reads a byte at a time, so a
 * pipelining bot's next command waits there, not here). The kernel is
 * asked only for a command where the answer matters (session_cmd.c): an
 * ioctl per command was several system calls per message (issue 8). */
bool session_more_input(struct session *s)
{
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		return true;
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	int pending = 0;
	if (ioctl((int)bufferevent_getfd(under ? under : s->bev), FIONREAD, &pending) != 0)
		return false;
	return pending > 0;
}

/* Takes one command line from the input; false when none is complete.
 * An overlong line is skipped up to its real end and answered once: its
 * tail is never taken for a command of its own (HOSTILE 38, 39). */
static bool session_next_line(struct session *s, struct evbuffer *in)
{
	size_t eol_len = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	size_t avail = evbuffer_get_length(in);
	if (p.pos < 0) {
		if (avail >= SMTP_CMD_LINE_MAX) {
			s->bytes_in += avail;
			s->skipped += avail;
			s->skipping = true;
			evbuffer_drain(in, avail);
			if (s->skipped > SESSION_SKIP_MAX) {
				metrics_inc(METRIC_LIMIT_LINE_TOO_LONG);
				session_reply(s, REPLY_TOO_LONG);
				session_close(s, "line too long");
			}
		}
		return false;
	}
	size_t len = (size_t)p.pos;
	s->bytes_in += len + 1;
	if (s->skipping || len + 1 > SMTP_CMD_LINE_MAX) {
		s->skipping = false;
		s->skipped = 0;
		evbuffer_drain(in, len + 1);
		metrics_inc(METRIC_LIMIT_LINE_TOO_LONG);
		log_warn("session=%llu client=%s command too long", s->ident.session_id,
			 s->ident.addr);
		session_reply(s, REPLY_TOO_LONG);
		session_error(s);
		return true;
	}
	char line[SMTP_CMD_LINE_MAX];
	evbuffer_remove(in, line, len + 1);
	if (len == 0 || line[len - 1] != '\r') {
		metrics_inc(METRIC_BARE_NEWLINES);
		session_signal(s, SIGNAL_BARENEWLINE, "in a command");
		session_reply(s, REPLY_BARE_LF_COMMAND);
		session_close(s, "bare LF");
		return true;
	}
	session_cmd_line(s, line, len - 1);
	session_arm_command_deadline(s);
	return true;
}

/* While a fast lane's RCPT reply is owed, the next line is taken only if
 * it is a RCPT the lane can carry pipelined (session_lane_pipelines). */
static bool session_lane_next(struct session *s, struct evbuffer *in)
{
	if (s->wait != SESSION_WAIT_REPLAY || !s->lane || s->skipping ||
	    s->state == SESSION_DATA)
		return false;
	size_t eol_len = 0;
	/* The same line session_next_line would take (up to LF), and only
	 * a well-formed one (CR LF, within the limit). */
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	char line[SMTP_CMD_LINE_MAX];
	if (p.pos < 1 || (size_t)p.pos + 1 > SMTP_CMD_LINE_MAX ||
	    evbuffer_copyout(in, line, (size_t)p.pos) != (ev_ssize_t)p.pos ||
	    line[p.pos - 1] != '\r')
		return false;
	return session_lane_pipelines(s, line, (size_t)p.pos - 1);
}

/* A client that closed once its message had left (client_eof) has been
 * answered and has no complete command left: nothing more will come, and
 * a part of a line can never end, so the session ends now rather than at
 * the command deadline. */
static void session_close_if_ended(struct session *s)
{
	if (s->client_eof && s->state != SESSION_CLOSING)
		session_close_as(s, session_disconnect_names[s->state], true);
}

static void session_input_loop(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer *out = bufferevent_get_output(s->bev);
	unsigned commands = 0;
	while ((s->wait == SESSION_WAIT_NONE || session_lane_next(s, in)) &&
	       s->state != SESSION_CLOSING && s->state != SESSION_GREETING) {
		if (s->state == SESSION_DATA) {
			if (!session_data_input(s))
				return;
			continue;
		}
		if (evbuffer_get_length(in) == 0) {
			session_close_if_ended(s);
			return;
		}
		if (evbuffer_get_length(out) > SESSION_OUT_HIGHWAT)
			return; /* resumed by the write callback */
		if (commands++ == SESSION_CMDS_PER_TURN) {
			session_resume(s);
			return;
		}
		if (!session_next_line(s, in)) {
			session_close_if_ended(s); /* a line without its end */
			return;
		}
	}
}

/* The input loop, then one write of every reply it made. */
static void session_input(struct session *s)
{
	if (s->in_input) {
		session_input_loop(s);
		return;
	}
	s->in_input = true;
	session_input_loop(s);
	s->in_input = false;
	session_write_now(s);
}

void session_arm_command_deadline(struct session *s)
{
	s->deadline_ms = mstime_mono() + s->env->cfg->smtpd_timeout_ms;
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	/* smtpd_timeout bounds each command, not each read: a client that
	 * dribbles a line byte by byte (slowloris) is cut off all the same. */
	if (s->wait == SESSION_WAIT_NONE && s->state != SESSION_DATA && s->state != SESSION_GREETING &&
	    s->state != SESSION_CLOSING && s->deadline_ms &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		if (mstime_mono() > s->deadline_ms) {
			metrics_inc(METRIC_LIMIT_TIMEOUTS);
			log_info("session=%llu client=%s command deadline passed in state %s",
				 s->ident.session_id, s->ident.addr,
				 session_state_names[s->state]);
			session_reply(s, REPLY_TIMEOUT);
			session_close(s, "timeout");
			return;
		}
	}
	session_input(s);
	/* A shaped session's next line is seconds away: the trickle can
	 * keep what is in flight (session_park.c). */
	if (shape_is_on(&s->shape))
		session_park_later(s);
}

/* Every reply made so far has left (the socket took it): what follows,
 * whichever wrote it. direct: from session_write_now, at the end of the
 * turn that made the replies; the input they leave waiting is taken on
 * this loop turn, from the resume event (one input loop per event, as
 * before). */
static void session_output_left(struct session *s, bool direct)
{
	if (s->state == SESSION_CLOSING) {
		session_flush_check(s);
		return;
	}
	if (s->tls_pending) {
		session_tls_flushed(s);
		return;
	}
	/* The client could not answer before our reply had left: with a
	 * shaped reply, that is seconds. The command's time starts now. */
	if (s->wait == SESSION_WAIT_NONE && s->state != SESSION_DATA && s->state != SESSION_GREETING) {
		session_arm_command_deadline(s);
		session_timeouts(s, true);
	}
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		if (direct)
			session_resume(s);
		else
			session_input(s);
	}
	session_park_later(s);
}

static void session_write_now(struct session *s)
{
	if (!session_writes_direct(s))
		return;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	if (evbuffer_get_length(out) == 0)
		return;
	if (bev_out_write(s->bev) != 0) {
		/* As libevent reports a failed write. */
		session_event_cb(s->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, s);
		return;
	}
	/* The client is not reading fast enough: libevent carries the rest,
	 * and its write callback comes when it has left. */
	if (evbuffer_get_length(out) > 0)
		return;
	session_output_left(s, true);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	/* libevent has written it all (and removed its write event): the
	 * next replies go straight out again. */
	if (!bufferevent_get_underlying(bev) && !shape_is_on(&s->shape) &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
	session_output_left(s, false);
}

void session_timed_out(struct session *s, bool reading)
{
	metrics_inc(METRIC_LIMIT_TIMEOUTS);
	log_info("session=%llu client=%s timeout in state %s", s->ident.session_id,
		 s->ident.addr, session_state_names[s->state]);
	if (reading)
		session_reply(s, REPLY_TIMEOUT);
	session_close(s, "timeout");
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		session_tls_done(s);
		return;
	}
	if (s->state == SESSION_CLOSING) {
		session_schedule_free(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		session_timed_out(s, what & BEV_EVENT_READING);
		return;
	}
	const char *outcome = what & BEV_EVENT_EOF ? session_disconnect_names[s->state]
						   : session_error_names[s->state];
	/* The whole message in, its reply not yet given: a client that
	 * closes now is a send-and-close bot (session_shape_client_gone),
	 * and the message is dropped while it still can be: while spooling,
	 * and while the replay has not let any of the end of data go. Once
	 * it has, the server may queue the message whatever happens; a FIN
	 * may be a half-close, so the client gets the answer (and a
	 * pipelined QUIT its 221) rather than retrying into a duplicate.
	 * A shaped client's close is its hang-up in data (evidence: it gave
	 * up), reported by session_close_as. */
	bool in_data_end = (what & BEV_EVENT_EOF) && !shape_is_on(&s->shape) &&
			   s->txn && s->txn->body && /* not a recipient's check */
			   (s->wait == SESSION_WAIT_SPOOL || s->wait == SESSION_WAIT_REPLAY);
	if (in_data_end && s->replay && replay_committed(s->replay)) {
		s->client_eof = true;
		return;
	}
	/* Nothing more can be written to this client. */
	evbuffer_drain(bufferevent_get_output(bev),
		       evbuffer_get_length(bufferevent_get_output(bev)));
	if (in_data_end) {
		session_data_early_close(s);
		return;
	}
	session_close_as(s, outcome, what & BEV_EVENT_EOF);
}

void session_install_callbacks(struct session *s)
{
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_IN_MAX);
	session_timeouts(s, s->wait == SESSION_WAIT_NONE);
}

/* --- accept ------------------------------------------------------------ */

void session_greet(struct session *s)
{
	if (s->env->draining) {
		session_set_state(s, SESSION_INIT);
		session_reply(s, REPLY_SHUTDOWN);
		session_close(s, "shutting down");
		return;
	}
	session_set_state(s, SESSION_INIT);
	session_reply(s, REPLY_GREETING);
	session_arm_command_deadline(s);
}

/* Refuses the session at once, before any look-up, when a limit is hit:
 * a flood must cost as little as possible. */
static bool session_over_limits(struct session *s, const struct sockaddr *addr)
{
	const struct config *cfg = s->env->cfg;
	enum reply_id refuse = REPLY_OK;
	if (n_sessions > cfg->session_limit) {
		metrics_inc(METRIC_LIMIT_SESSIONS);
		refuse = REPLY_TOO_MANY_SESSIONS;
	} else {
		unsigned count = client_limits_enter(addr, cfg->ipv6_client_prefix);
		s->counted = count > 0;
		if (count == 0) {
			refuse = REPLY_RESOURCES;
		} else if (count > cfg->client_connection_limit) {
			metrics_inc(METRIC_LIMIT_CLIENT_SESSIONS);
			refuse = REPLY_TOO_MANY_CLIENT_SESSIONS;
		}
	}
	if (refuse == REPLY_OK)
		return false;
	/* session_limit is hit by every new connection of a flood: one line a
	 * minute with the count (the metric has each one). */
	static struct ratelog limit_log;
	unsigned long held = 0;
	if (refuse != REPLY_TOO_MANY_SESSIONS ||
	    ratelog_ok(&limit_log, mstime_mono(), SESSION_LIMIT_LOG_INTERVAL_MS, &held))
		log_warn("session=%llu client=%s refused: %s (sessions=%u, refused=%lu)",
			 s->ident.session_id, s->ident.addr,
			 refuse == REPLY_TOO_MANY_SESSIONS ? "session_limit"
			 : refuse == REPLY_RESOURCES	   ? "out of memory"
							   : "client_connection_limit",
			 n_sessions, held + 1);
	s->classify_over = true; /* nothing to classify */
	session_set_state(s, SESSION_INIT);
	session_reply(s, refuse);
	session_close(s, "limit");
	return true;
}

void session_accept(struct session_env *env, int fd,
		    const struct sockaddr *addr, socklen_t len)
{
	struct session *s = session_mem_new();
	if (s) {
		s->env = env;
		if (reap_ev || (reap_ev = event_new(env->base, -1, 0, session_reap_cb, NULL)))
			s->bev = bufferevent_socket_new(env->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!s || !s->bev || session_defer_assign(s) != 0) {
		log_err("session: out of memory; refusing a connection");
		if (s && s->bev) {
			bufferevent_setfd(s->bev, -1); /* closed below */
			bufferevent_free(s->bev);
		}
		(void)session_refuse_raw(env, fd); /* nothing was written to it */
		close(fd);
		session_mem_free(s);
		return;
	}
	s->ident.session_id = ++s->env->next_session_id;
	s->verdict_done = session_greet;
	s->ident.family = addr->sa_family;
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
		inet_ntop(AF_INET, &in->sin_addr, s->ident.addr, sizeof s->ident.addr);
		s->ident.port = ntohs(in->sin_port);
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
		inet_ntop(AF_INET6, &in6->sin6_addr, s->ident.addr, sizeof s->ident.addr);
		s->ident.port = ntohs(in6->sin6_port);
	}
	s->ident.name_status = DNS_NAME_TEMPFAIL;
	if (len <= sizeof s->peer)
		memcpy(&s->peer, addr, len);
	s->phase_reached = SESSION_PHASE_GREETING;
	s->started_ms = mstime_mono();
	TAILQ_INSERT_TAIL(&sessions, s, link);
	n_sessions++;
	metrics_inc(METRIC_SESSIONS);
	metrics_add(METRIC_SESSIONS_ACTIVE, 1);
	s->state = SESSION_GREETING;
	session_install_callbacks(s);
	/* Writing stays disabled: session_write_now writes the replies. */
	bufferevent_enable(s->bev, EV_READ);
	bufferevent_disable(s->bev, EV_WRITE);
	if (session_over_limits(s, addr))
		return;
	log_info("session=%llu connect from %s port=%u", s->ident.session_id,
		 s->ident.addr, s->ident.port);
	s->dns = dns_ptr_start(s->env->dns, addr, session_dns_done, s);
	if (!s->dns)
		log_warn("session=%llu cannot start PTR look-up", s->ident.session_id);
	session_shape_accept(s, addr);
	session_park_greeting(s);
}

void session_shutdown_all(void)
{
	struct session *s, *next;
	for (s = TAILQ_FIRST(&sessions); s; s = next) {
		next = TAILQ_NEXT(s, link);
		/* A replay in flight finishes first: its client gets the
		 * server's answer, then the 421 (data_replayed sees
		 * env->draining; after a recipient check, the worker's next
		 * drain poll calls this again). */
		if (s->replay || s->wait == SESSION_WAIT_REPLAY ||
		    s->state == SESSION_CLOSING)
			continue;
		if (!session_unpark(s))
			continue; /* closed with a 421 of its own */
		session_reply(s, REPLY_SHUTDOWN);
		session_close(s, "shutting down");
	}
}
