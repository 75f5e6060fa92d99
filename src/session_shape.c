/*
 * session_shape: classification and shaping of one session.
 *
 * At accept: allow and deny lists, the pass cache and local reputation are
 * read (all local), and the PTR and DNSBL look-ups start. With store =
 * redis the pass and the reputation are a look-up too, and the verdict
 * waits for it as for DNS (session_store_done); a pass that comes then
 * greets at once, as a local pass does. Clients without
 * a pass wait greet_wait for the greeting, which gives the look-ups time to
 * answer and shows who talks first (PREGREET). When the greeting is due,
 * the score decides: at shape_threshold the session is shaped (replies and
 * command reads at shape_rate, small receive window) for at most
 * shape_time in all; at reject_threshold (when set) every transaction
 * command gets 554 5.7.1. Later signals (HELO, pipelining, bare newlines,
 * non-SMTP talk, errors) can start shaping mid-session.
 *
 * What shaping never touches: the TLS handshake (the limit sits on the TLS
 * filter, above the socket), and a message body, which is read at full
 * speed with a wide window because the sender's socket buffer swallows the
 * whole body at once and only the final reply's clock (about ten minutes)
 * is left; the final reply is held instead: silent, for the rest of the
 * shape_time budget (session_shape_hold), which is what stops the bots
 * that a trickle alone does not (deadlines of a minute or two, idle
 * timers that a steady trickle keeps alive).
 *
 * Why a score and not a verdict per signal: one weak sign (no PTR, a
 * sloppy HELO) is common among legitimate servers; shaping costs them a
 * minute at most, while every bot that is impatient goes away.
 */
#include "session_priv.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"
#include "mstime.h"
#include "config.h"
#include "dnsbl.h"
#include "log.h"
#include "metrics.h"
#include "signals.h"
#include "store.h"
#include "throttle.h"
#include "worker.h"

#define SHAPE_PREGREET_MAX 1024 /* bytes read before the verdict */

static int session_fd(const struct session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	return (int)bufferevent_getfd(under ? under : s->bev);
}

static const struct sockaddr *session_addr(const struct session *s)
{
	return (const struct sockaddr *)&s->peer;
}

long session_shaped_ms(const struct session *s)
{
	long ms = s->shaped_ms;
	if (s->shaped) {
		struct timeval now, d;
		event_base_gettimeofday_cached(worker->base, &now);
		timersub(&now, &s->shaped_since, &d);
		ms += d.tv_sec * 1000 + d.tv_usec / 1000;
	}
	return ms;
}

const char *session_phase(const struct session *s)
{
	switch (s->state) {
	case SESSION_GREETING:
		return "greeting";
	case SESSION_INIT:
		/* A slowed greeting still on its way out: the client never
		 * saw the end of it. */
		if (s->commands == 0 &&
		    evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
			return "greeting";
		return "helo";
	case SESSION_READY:
		return "mail";
	case SESSION_MAIL:
	case SESSION_RCPT:
		/* The body is in; the end-of-data reply is held or replaying. */
		if (s->txn && s->txn->body && s->busy)
			return "data";
		return "rcpt";
	case SESSION_DATA:
		return "data";
	default:
		return "end";
	}
}

/* --- the rate limit ----------------------------------------------------- */

static void shape_spent_cb(evutil_socket_t fd, short what, void *arg);

static void shape_off(struct session *s)
{
	if (!s->shaped)
		return;
	s->shaped_ms = session_shaped_ms(s);
	s->shaped = false;
	metrics_add(METRIC_SHAPED_ACTIVE, -1);
	throttle_apply(s->bev, false);
}

static void shape_on(struct session *s)
{
	const struct config *cfg = worker->cfg;
	if (s->shaped || s->shape_spent || s->trusted || cfg->shape_time_ms == 0)
		return;
	long left = cfg->shape_time_ms - s->shaped_ms;
	if (left <= 0) {
		s->shape_spent = true;
		return;
	}
	if (!s->shape_ev && !(s->shape_ev = evtimer_new(worker->base, shape_spent_cb, s)))
		return; /* cannot bound it: do not shape at all */
	if (throttle_apply(s->bev, true) != 0)
		return;
	struct timeval tv = {left / 1000, (left % 1000) * 1000};
	evtimer_add(s->shape_ev, &tv);
	event_base_gettimeofday_cached(worker->base, &s->shaped_since);
	s->shaped = true;
	metrics_add(METRIC_SHAPED_ACTIVE, 1);
	if (!s->ever_shaped) {
		s->ever_shaped = true;
		metrics_inc(METRIC_SHAPED);
		log_info("session=%llu client=%s SHAPED score=%d rate=%u/s for at most %lds",
			 s->ident.session_id, s->ident.addr, s->cls.score, cfg->shape_rate,
			 left / 1000);
	}
	throttle_window(session_fd(s), false);
}

/* Shaping is over for good: the budget is spent, or the client waited out
 * its end-of-data hold. */
static void shape_done(struct session *s, const char *why)
{
	if (s->shape_spent || !s->ever_shaped)
		return;
	shape_off(s);
	s->shape_spent = true;
	if (s->shape_ev)
		event_del(s->shape_ev);
	throttle_window(session_fd(s), true);
	log_info("session=%llu client=%s %s after %lds shaped; full speed",
		 s->ident.session_id, s->ident.addr, why, s->shaped_ms / 1000);
}

static void shape_spent_cb(evutil_socket_t fd, short what, void *arg)
{
	shape_done(arg, "shape_time spent");
}

/* The end-of-data answer goes out at once, unshaped: the hold has already
 * told patient senders from bots, and a trickled 250 would only widen the
 * window between the server's 250 and the client's, in which a crash or a
 * client timeout means a duplicate (HOSTILE 106). */
void session_shape_answered(struct session *s)
{
	shape_done(s, "end-of-data answered");
}

static void shape_decide(struct session *s)
{
	const struct config *cfg = worker->cfg;
	if (s->trusted)
		return;
	if (cfg->reject_threshold && s->cls.score >= (int)cfg->reject_threshold &&
	    !s->reject_mode) {
		s->reject_mode = true;
		metrics_inc(METRIC_REJECTED_CLIENTS);
		log_info("session=%llu client=%s REJECT score=%d", s->ident.session_id,
			 s->ident.addr, s->cls.score);
	}
	if (s->cls.score >= (int)cfg->shape_threshold)
		shape_on(s);
}

void session_signal(struct session *s, enum signal_id sig, const char *detail)
{
	if (classify_add(&s->cls, s->ident.session_id, s->ident.addr, sig,
			 classify_weight(sig), detail) &&
	    sig != SIGNAL_PASS && sig != SIGNAL_ALLOWLIST && sig != SIGNAL_DNSWL)
		store_record(worker->store, session_addr(s), REPUTATION_BAD_SIGNAL);
	/* Before the greeting the verdict waits for the greeting. */
	if (s->state != SESSION_GREETING)
		shape_decide(s);
}

/* --- accept and the greeting ------------------------------------------- */

static void shape_lookup_done(struct session *s);

static void session_dnsbl_done(void *arg, int score, const char *hits)
{
	struct session *s = arg;
	s->dnsbl = NULL;
	if (score > 0)
		classify_add(&s->cls, s->ident.session_id, s->ident.addr, SIGNAL_DNSBL,
			     score, hits);
	else if (score < 0)
		classify_add(&s->cls, s->ident.session_id, s->ident.addr, SIGNAL_DNSWL,
			     score, hits);
	shape_lookup_done(s);
}

static void shape_reputation(struct session *s, double rep)
{
	if (rep < 0) {
		char detail[32];
		snprintf(detail, sizeof detail, "reputation=%.2f", rep);
		int w = (int)lround(-rep * worker->cfg->weight_reputation);
		if (w > 0)
			classify_add(&s->cls, s->ident.session_id, s->ident.addr,
				     SIGNAL_REPUTATION, w, detail);
	}
}

/* store = redis: the pass and reputation read at accept. */
static void session_store_done(void *arg, const struct store_answer *a)
{
	struct session *s = arg;
	s->store_req = NULL;
	if (s->shape_ended)
		return;
	bool greeting = s->state == SESSION_GREETING;
	/* A pass counts only before the verdict, and the deny list wins. */
	if (a->pass && greeting && !(s->cls.fired & (1u << SIGNAL_DENYLIST))) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr, SIGNAL_PASS,
			     0, NULL);
		if (s->dnsbl) {
			dnsbl_cancel(s->dnsbl);
			s->dnsbl = NULL;
		}
	}
	shape_reputation(s, a->reputation);
	if (!greeting)
		shape_decide(s);
	else if (s->trusted)
		session_shape_greet_timer(s); /* as a local pass: no waiting */
	else
		shape_lookup_done(s);
}

void session_shape_accept(struct session *s, const struct sockaddr *addr)
{
	const struct config *cfg = worker->cfg;
	int fd = session_fd(s);
	bool async = store_async(worker->store);
	/* sluicectl's entries come first and decide alone (control.c). */
	char entry[80];
	enum acl_kind acl = acl_match(addr, mstime_real(), entry, sizeof entry);
	if (acl == ACL_ALLOW) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_ALLOWLIST, 0, entry);
	} else if (acl == ACL_DENY) {
		/* Shaped whatever else it shows: at least shape_threshold, and
		 * no DNS list look-up whose DNSWL could lower it. */
		int w = classify_weight(SIGNAL_DENYLIST);
		if (w < (int)cfg->shape_threshold)
			w = (int)cfg->shape_threshold;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_DENYLIST, w, entry);
	} else if (worker->allow && cidr_match(worker->allow, addr)) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_ALLOWLIST, 0, NULL);
	} else if (!async && store_pass_check(worker->store, addr)) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr, SIGNAL_PASS,
			     0, NULL);
	}
	if (acl == ACL_NONE && worker->deny && cidr_match(worker->deny, addr)) {
		s->trusted = false; /* deny wins over a pass */
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_DENYLIST, classify_weight(SIGNAL_DENYLIST), NULL);
	}
	if (!async)
		shape_reputation(s, store_reputation(worker->store, addr));
	else if (!s->trusted) /* NULL: nothing to wait for, the default holds */
		s->store_req = store_lookup_start(worker->store, addr,
						  session_store_done, s);
	if (worker->dnsbl && !s->trusted && acl != ACL_DENY)
		s->dnsbl = dnsbl_start(worker->dns, worker->dnsbl, addr,
				       session_dnsbl_done, s);
	throttle_window(fd, s->trusted);
	/* Until the verdict, read only enough to see who talks first: a
	 * client that may be shaped must not get 64 KiB in ahead of it. */
	if (!s->trusted)
		bufferevent_setwatermark(s->bev, EV_READ, 0, SHAPE_PREGREET_MAX);
	long wait = s->trusted ? 0 : cfg->greet_wait_ms;
	struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
	/* The greeting runs from the session's own event, never inside
	 * accept; greet_wait is the same for every session, so libevent's
	 * common timeout queue keeps ten thousand waits O(1). */
	const struct timeval *ctv = event_base_init_common_timeout(worker->base, &tv);
	event_add(s->defer_ev, ctv ? ctv : &tv);
}

/* The verdict, then the greeting (shaped or not). */
static void shape_greet(struct session *s)
{
	s->greet_waiting = false;
	event_del(s->defer_ev);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_IN_MAX);
	shape_decide(s);
	if (!s->shaped)
		throttle_window(session_fd(s), true);
	session_greet(s);
}

/* A look-up finished: greet now if greet_wait is over and nothing else is
 * outstanding. */
static void shape_lookup_done(struct session *s)
{
	if (s->greet_waiting && !s->dns && !s->dnsbl && !s->store_req &&
	    s->state == SESSION_GREETING)
		shape_greet(s);
}

void session_shape_greet_timer(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	if (evbuffer_get_length(in) > 0 && !(s->cls.fired & (1u << SIGNAL_PREGREET))) {
		char detail[64];
		snprintf(detail, sizeof detail, "count=%zu", evbuffer_get_length(in));
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_PREGREET, classify_weight(SIGNAL_PREGREET), detail);
		store_record(worker->store, session_addr(s), REPUTATION_BAD_SIGNAL);
	}
	/* The verdict waits for the look-ups, but the greeting waits at most
	 * dns_timeout more for them: a slow or flooded resolver must not hold
	 * every client. A late answer can still start shaping afterwards. */
	if (!s->trusted && (s->dns || s->dnsbl || s->store_req) && !s->greet_waiting) {
		s->greet_waiting = true;
		long ms = worker->cfg->dns_timeout_ms;
		struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
		const struct timeval *ctv = event_base_init_common_timeout(worker->base, &tv);
		event_add(s->defer_ev, ctv ? ctv : &tv);
		return;
	}
	shape_greet(s);
}

void session_shape_dns_done(struct session *s, enum dns_name_status st,
			    const char *name)
{
	if (!s->trusted) {
		if (st == DNS_NAME_UNAVAILABLE)
			session_signal(s, SIGNAL_NOPTR, NULL);
		else if (st == DNS_NAME_UNCONFIRMED)
			session_signal(s, SIGNAL_PTRUNCONFIRMED, name);
		if ((st == DNS_NAME_OK || st == DNS_NAME_UNCONFIRMED) &&
		    rdns_generic(name, strlen(name), session_addr(s)))
			session_signal(s, SIGNAL_PTRGENERIC, name);
	}
	shape_lookup_done(s);
}

void session_shape_helo(struct session *s)
{
	unsigned flags = helo_check(s->helo, strlen(s->helo), session_addr(s),
				    worker->cfg->myhostname);
	if (flags)
		session_signal(s, SIGNAL_HELO, s->helo);
}

/* --- the body, the end, the verdict's consequences ----------------------- */

void session_shape_body(struct session *s, bool in_body)
{
	if (!s->ever_shaped)
		return;
	if (in_body) {
		/* Full speed for the body: pause the budget too. */
		shape_off(s);
		throttle_window(session_fd(s), true);
	} else {
		shape_on(s); /* the final reply goes out slowly */
	}
}

bool session_shape_client_gone(struct session *s)
{
	/* A sender that closed (or half-closed) before its end-of-data reply
	 * is a send-and-close bot: legitimate senders wait for the reply.
	 * TCP_INFO sees a FIN even behind pipelined bytes not yet read. */
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	if (getsockopt(session_fd(s), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return false;
	return ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_CLOSE ||
	       ti.tcpi_state == TCP_LAST_ACK;
}

static void shape_hold_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	void (*then)(struct session *) = s->hold_then;
	s->hold_then = NULL;
	then(s);
}

/* The end-of-data reply of a shaped session waits, silently, for the rest
 * of its shape_time budget, but at most shape_final_hold, before the
 * message is replayed. Bots that are patient for a minute or so outlast a
 * trickle (idle timers never fire while bytes keep coming), but not
 * silence after the dot: their deadline or idle timer fires, they hang up,
 * and the early-close check drops the message. A legitimate sender waits
 * up to ten minutes here (RFC 5321 4.5.3.2.6; Postfix 600 s, Exim 10 min)
 * and its whole body is already in, so this is the one place where
 * waiting costs it nothing but time. The bound keeps the final reply,
 * replay and trickled text included, well inside 150 s. */
bool session_shape_hold(struct session *s, void (*then)(struct session *))
{
	/* Held messages stay buffered: when half of memory_limit is in use,
	 * stop holding rather than let held bot messages push legitimate
	 * DATA into 452 (a flood of big shaped messages would otherwise
	 * do exactly that). */
	if (!s->shaped || session_shape_client_gone(s) ||
	    worker->memory_buffered >= worker->cfg->memory_limit / 2)
		return false;
	long left = worker->cfg->shape_time_ms - session_shaped_ms(s);
	if (left > worker->cfg->shape_final_hold_ms)
		left = worker->cfg->shape_final_hold_ms;
	if (left <= 0)
		return false;
	if (!s->hold_ev && !(s->hold_ev = evtimer_new(worker->base, shape_hold_cb, s)))
		return false; /* no timer, no hold: reply now */
	struct timeval tv = {left / 1000, (left % 1000) * 1000};
	if (evtimer_add(s->hold_ev, &tv) != 0)
		return false;
	s->hold_then = then;
	metrics_inc(METRIC_FINAL_HOLDS);
	log_info("session=%llu client=%s HOLD end-of-data reply for %ld s", s->ident.session_id,
		 s->ident.addr, (left + 500) / 1000);
	return true;
}

void session_shape_rcpt(struct session *s, int code)
{
	if (code / 100 == 5)
		store_record(worker->store, session_addr(s), REPUTATION_RCPT_REFUSED);
}

void session_shape_delivered(struct session *s, int code)
{
	if (code / 100 == 2) {
		/* The server took the message; that proves it wanted it only
		 * for a client that looked clean. From a shaped session it
		 * proves patience, and spam from patient bots must not clean
		 * their address or network. */
		if (!s->ever_shaped) {
			store_record(worker->store, session_addr(s), REPUTATION_DELIVERED);
		} else {
			metrics_inc(METRIC_SHAPED_DELIVERIES);
			/* Patience proven: no more waiting for this client. */
			store_pass_grant(worker->store, session_addr(s),
					 worker->cfg->pass_ttl_ms);
		}
	} else if (code / 100 == 5) {
		store_record(worker->store, session_addr(s), REPUTATION_MSG_REFUSED);
	}
}

void session_shape_end(struct session *s, bool hangup)
{
	if (s->shape_ended)
		return;
	s->shape_ended = true;
	if (s->dnsbl) {
		dnsbl_cancel(s->dnsbl);
		s->dnsbl = NULL;
	}
	bool was_shaped = s->shaped;
	long ms = session_shaped_ms(s);
	shape_off(s);
	if (s->shape_ev) {
		event_free(s->shape_ev);
		s->shape_ev = NULL;
	}
	if (s->hold_ev) {
		event_free(s->hold_ev);
		s->hold_ev = NULL;
		s->hold_then = NULL;
	}
	if (hangup && was_shaped) {
		static const enum metric_id by_phase[] = {
			METRIC_HANGUP_GREETING, METRIC_HANGUP_HELO, METRIC_HANGUP_MAIL,
			METRIC_HANGUP_RCPT, METRIC_HANGUP_DATA};
		const char *phase = session_phase(s);
		int i = !strcmp(phase, "greeting") ? 0 : !strcmp(phase, "helo") ? 1
			: !strcmp(phase, "mail") ? 2 : !strcmp(phase, "rcpt") ? 3 : 4;
		metrics_inc(by_phase[i]);
		metrics_inc(ms < 10000 ? METRIC_HANGUP_0_10 : ms < 30000 ? METRIC_HANGUP_10_30
			    : ms < 60000 ? METRIC_HANGUP_30_60 : METRIC_HANGUP_60_PLUS);
		log_info("session=%llu client=%s HANGUP after %ld s in %s", s->ident.session_id,
			 s->ident.addr, ms / 1000, phase);
		store_record(worker->store, session_addr(s), REPUTATION_HANGUP_SHAPED);
	}
	/* A client that was never shaped and showed nothing bad passes. */
	if (!s->ever_shaped && !s->trusted && s->cls.score < (int)worker->cfg->shape_threshold &&
	    s->transactions > 0)
		store_pass_grant(worker->store, session_addr(s), worker->cfg->pass_ttl_ms);
}
