/*
 * session_park: an idle session held without its bufferevent.
 *
 * A session that has been idle for session_park_delay (greeted, no command
 * arriving, no reply to write, no TLS, nothing in flight: see
 * session_parkable) gives up its bufferevent and the two evbuffers under
 * it (976 bytes of the ~1.9 KiB an idle session held; BENCHMARKS.md, "What
 * a session allocates, and when"). The socket stays open and waits on a
 * bare read event: the session's own defer_ev, re-assigned, so parking
 * allocates nothing. The first readable byte, or the client's close, makes
 * the bufferevent again and the session goes on as if it had never been
 * parked.
 *
 * Invariants: nothing is read while parked (the kernel keeps the bytes;
 * the new bufferevent reads them, epoll being level-triggered); the
 * command deadline (smtpd_timeout) is the parked event's timeout, and its
 * expiry is the same 421 as an unparked session's; the per-client limits
 * and counters are not touched; TLS sessions are never parked (their
 * filter bufferevent holds the SSL state). A bufferevent that cannot be
 * made again closes that one session with a 421 written straight to the
 * socket, never the process.
 *
 * Shaped sessions park too, on the next loop turn instead of after the
 * delay: between its lines and replies a shaped session is idle for
 * seconds while the trickle moves a byte a tick. The few bytes in flight
 * (a reply going out, the start of a line coming in) are lent to the
 * trickle (shape_lend, throttle.h "Lent"), which moves them on the socket
 * itself and wakes the session (session_unpark) with news: a whole line,
 * the output gone, EOF, an error, a timeout, the budget spent. defer_ev
 * then only keeps the descriptor. Measured: BENCHMARKS.md, "Shaped
 * sessions without a bufferevent".
 *
 * Anything from outside the session's own events that needs its
 * bufferevent (the drain's 421) calls session_unpark first.
 */
#include "session_priv.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"

/* The park delay as a libevent common timeout: ten thousand sessions
 * arming the same delay cost O(1) each. One per event base (the worker's,
 * or the fuzzer's). */
static struct event_base *park_base;
static long park_delay_ms;
static const struct timeval *park_tv;

/* The one predicate: idle, and holding nothing that needs the
 * bufferevent. A new kind of work in flight (a held backend connection,
 * say) adds its condition here. */
bool session_parkable(const struct session *s)
{
	if (!s->bev || s->parked || s->freed_pending || s->env->draining)
		return false;
	if (s->state != SESSION_INIT && s->state != SESSION_READY &&
	    s->state != SESSION_MAIL && s->state != SESSION_RCPT)
		return false; /* greeting, DATA and closing keep their buffers */
	if (s->wait != SESSION_WAIT_NONE || s->tls || s->tls_pending || s->skipping)
		return false;
	if (s->dns || s->replay || s->store_req || s->dnsbl || s->after_dns ||
	    session_lane_held(s))
		return false; /* an answer is on its way */
	/* Shaped: the trickle keeps the bytes in flight (a reply going
	 * out, a line coming in) and moves them on. */
	if (shape_is_on(&s->shape))
		return shape_lendable(&s->shape);
	return evbuffer_get_length(bufferevent_get_input(s->bev)) == 0 &&
	       evbuffer_get_length(bufferevent_get_output(s->bev)) == 0;
}

void session_park_later(struct session *s)
{
	long delay = s->env->cfg->session_park_delay_ms;
	if (delay <= 0 || !session_parkable(s))
		return;
	/* Shaped: its next line or the end of its reply is seconds away
	 * at the trickle's rate, so it parks on the next loop turn (after
	 * whatever else this turn does with it). */
	if (shape_is_on(&s->shape)) {
		static const struct timeval now_tv = { 0, 0 };
		if (event_add(s->defer_ev, &now_tv) != 0)
			log_debug("session=%llu cannot arm the park delay", s->ident.session_id);
		return;
	}
	if (park_base != s->env->base || park_delay_ms != delay) {
		struct timeval tv = mstime_tv(delay);
		const struct timeval *ctv = event_base_init_common_timeout(s->env->base, &tv);
		if (!ctv)
			return; /* out of memory: the session just stays unparked */
		park_base = s->env->base;
		park_delay_ms = delay;
		park_tv = ctv;
	}
	/* Re-arming restarts the delay; a failure leaves the session unparked. */
	if (event_add(s->defer_ev, park_tv) != 0)
		log_debug("session=%llu cannot arm the park delay", s->ident.session_id);
}

static bool park_now(struct session *s);

static void session_park_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	if (!session_unpark(s))
		return; /* closed with a 421 */
	if (what & EV_TIMEOUT) {
		session_timed_out(s, true);
		return;
	}
	/* Readable (bytes or the close): the new bufferevent reads on the
	 * next loop turn, exactly as the old one would have. */
}

/*
 * Before the greeting. An untrusted client waits greet_wait (6 s by
 * default) for its greeting with nothing to read (a byte would be a
 * PREGREET) and nothing to write, while its look-ups run: it is parked at
 * accept (when greet_wait is at least session_park_delay), so that a
 * crowd arriving at once does not hold a bufferevent each for those
 * seconds. Measured (BENCHMARKS.md, "What a session
 * allocates, and when"): those bufferevents, allocated between the
 * sessions' long-lived objects and freed later, left the heap that the
 * long-lived objects kept resident afterwards. The greeting (shape_greet)
 * unparks it; a byte or the close before it unparks it too, and the
 * bufferevent reads them as it would have (pre-greeting watermark again).
 */
bool session_park_greeting(struct session *s)
{
	const struct config *cfg = s->env->cfg;
	/* A wait shorter than the park delay is not worth the round trip. */
	if (cfg->session_park_delay_ms <= 0 || cfg->greet_wait_ms < cfg->session_park_delay_ms ||
	    !s->bev || s->freed_pending || s->env->draining || s->state != SESSION_GREETING ||
	    s->trusted || s->tls || shape_is_on(&s->shape))
		return false;
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) != 0 ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) != 0)
		return false;
	return park_now(s);
}

bool session_park(struct session *s)
{
	if (!session_parkable(s))
		return false;
	return park_now(s);
}

/* Parks s (its predicate checked by the caller). Unshaped, defer_ev
 * becomes a bare read event whose timeout is what is left of the
 * command's time, as the read timeout would have counted it (both
 * restart when a reply has left). Shaped, the trickle reads and writes
 * for it (shape_lend) and wakes it with news: defer_ev only keeps the
 * descriptor, never added. */
static bool park_arm(struct session *s, evutil_socket_t fd, bool shaped)
{
	if (shaped)
		return event_assign(s->defer_ev, s->env->base, fd, 0, session_park_cb, s) == 0 &&
		       shape_lend(&s->shape);
	long long left = s->deadline_ms ? s->deadline_ms - mstime_mono()
					: s->env->cfg->smtpd_timeout_ms;
	struct timeval tv = mstime_tv(left);
	return event_assign(s->defer_ev, s->env->base, fd, EV_READ, session_park_cb, s) == 0 &&
	       event_add(s->defer_ev, &tv) == 0;
}

static bool park_now(struct session *s)
{
	evutil_socket_t fd = bufferevent_getfd(s->bev);
	if (fd < 0)
		return false;
	bool shaped = shape_is_on(&s->shape);
	event_del(s->defer_ev);
	if (!park_arm(s, fd, shaped)) {
		event_del(s->defer_ev);
		session_defer_assign(s);
		return false;
	}
	if (!shaped)
		shape_leave(&s->shape);
	/* Without the descriptor the bufferevent does not close it when
	 * freed (BEV_OPT_CLOSE_ON_FREE acts only on a descriptor >= 0). */
	bufferevent_setfd(s->bev, -1);
	bufferevent_free(s->bev);
	s->bev = NULL;
	s->parked = true;
	metrics_add(METRIC_SESSIONS_PARKED, 1);
	metrics_inc(METRIC_SESSION_PARKINGS);
	log_debug("session=%llu parked", s->ident.session_id);
	return true;
}

bool session_unpark(struct session *s)
{
	if (!s->parked)
		return true;
	evutil_socket_t fd = event_get_fd(s->defer_ev);
	event_del(s->defer_ev);
	session_defer_assign(s);
	s->parked = false;
	metrics_add(METRIC_SESSIONS_PARKED, -1);
	struct bufferevent *bev = bufferevent_socket_new(s->env->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		/* The socket's buffer is empty: nothing was left to write
		 * when it was parked (a lent reply's rest is lost). */
		size_t len = session_refuse_raw(s->env, fd);
		if (len > 0)
			session_count_reply(s, reply_code(REPLY_RESOURCES), len);
		close(fd);
		log_warn("session=%llu client=%s out of memory when unparking",
			 s->ident.session_id, s->ident.addr);
		session_close(s, "out of memory");
		return false;
	}
	s->bev = bev;
	session_install_callbacks(s);
	/* A new socket bufferevent has writing enabled (without its event
	 * added); as at accept, it is disabled (replies are written straight
	 * to the socket, session.c) and reading is switched on. The trickle,
	 * if any, takes both over after (shape_join). */
	bufferevent_disable(bev, EV_WRITE);
	/* Lent to the trickle, which reads for it: no read event to add. */
	bool lent = shape_lent(&s->shape);
	if (!lent && bufferevent_enable(bev, EV_READ) != 0) {
		session_close(s, "unpark failed");
		return false;
	}
	/* Before the greeting, only enough to see who talks first
	 * (session_shape_accept). */
	if (s->state == SESSION_GREETING && !s->trusted)
		bufferevent_setwatermark(bev, EV_READ, 0, SESSION_PREGREET_MAX);
	if (!shape_join(&s->shape, bev)) {
		log_warn("session=%llu client=%s out of memory when unparking",
			 s->ident.session_id, s->ident.addr);
		session_close(s, "out of memory");
		return false;
	}
	log_debug("session=%llu unparked", s->ident.session_id);
	return true;
}
