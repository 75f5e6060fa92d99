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
#include "spool.h"
#include "store.h"
#include "throttle.h"

#define SHAPE_HARVEST_MIN 3     /* unknown recipients before harvesting */

static int session_fd(const struct session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	return (int)bufferevent_getfd(under ? under : s->bev);
}

static const struct sockaddr *session_addr(const struct session *s)
{
	return (const struct sockaddr *)&s->peer;
}

const char *session_phase_name(enum session_phase ph)
{
	static const char *const names[] = {
#define SESSION_PHASE_NAME(id, name) name,
		SESSION_PHASES(SESSION_PHASE_NAME)
#undef SESSION_PHASE_NAME
	};
	return (unsigned)ph < sizeof names / sizeof names[0] ? names[ph] : "?";
}

enum session_phase session_phase(const struct session *s)
{
	switch (s->state) {
	case SESSION_GREETING:
		return SESSION_PHASE_GREETING;
	case SESSION_INIT:
		/* A slowed greeting still on its way out: the client never
		 * saw the end of it. */
		if (s->commands == 0 &&
		    (s->bev ? evbuffer_get_length(bufferevent_get_output(s->bev))
			    : shape_lent_output(&s->shape)) > 0)
			return SESSION_PHASE_GREETING;
		return SESSION_PHASE_HELO;
	case SESSION_READY:
		return SESSION_PHASE_MAIL;
	case SESSION_MAIL:
	case SESSION_RCPT:
		/* The body is in; the end-of-data reply is held or replaying. */
		if (s->txn && s->txn->body && s->wait != SESSION_WAIT_NONE)
			return SESSION_PHASE_DATA;
		return SESSION_PHASE_RCPT;
	case SESSION_DATA:
		return SESSION_PHASE_DATA;
	default:
		return SESSION_PHASE_END;
	}
}

/* --- the trickle (shape.c, throttle.c) --------------------------------- */

static void shape_on(struct session *s)
{
	if (!s->trusted)
		shape_start(&s->shape, s->cls.score);
}

/* The end-of-data answer goes out at once, unshaped: the hold has already
 * told patient senders from bots, and a trickled 250 would only widen the
 * window between the server's 250 and the client's, in which a crash or a
 * client timeout means a duplicate (HOSTILE 106). */
void session_shape_answered(struct session *s)
{
	shape_finish(&s->shape, "end-of-data answered");
}

static void shape_decide(struct session *s)
{
	const struct config *cfg = s->env->cfg;
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
	/* Never recorded as reputation: the signal is in the score already,
	 * and counting it twice taints neighbours by their PTR records. */
	classify_add(&s->cls, s->ident.session_id, s->ident.addr, sig,
		     classify_weight(s->env->cfg, sig), detail);
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
	/* After the greeting (dns_timeout passed first), a listing still
	 * shapes the rest of the session, as a late PTR signal does. */
	if (s->state != SESSION_GREETING && score > 0)
		shape_decide(s);
	shape_lookup_done(s);
}

/* The client's outcomes (or its network's): REPUTATION and CONTENT. */
static void shape_reputation(struct session *s, const struct reputation_verdict *v)
{
	if (v->reputation > 0)
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_REPUTATION, v->reputation,
			     v->net_reputation ? "from=network" : "from=client");
	if (v->content > 0)
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_CONTENT, v->content,
			     v->net_content ? "from=network" : "from=client");
}

/* store = redis: the pass and reputation read at accept. */
static void session_store_done(void *arg, const struct store_answer *a)
{
	struct session *s = arg;
	s->store_req = NULL;
	if (s->classify_over)
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
	shape_reputation(s, &a->verdict);
	if (!greeting)
		shape_decide(s);
	else if (s->trusted)
		session_shape_greet_timer(s); /* as a local pass: no waiting */
	else
		shape_lookup_done(s);
}

static void session_verdict_due(void *arg)
{
	session_shape_greet_timer(arg);
}

/* Lent trickle's news: the bufferevent again (a failure closes it). */
static void session_shape_wake(void *arg)
{
	session_unpark(arg);
}

void session_shape_accept(struct session *s, const struct sockaddr *addr)
{
	const struct config *cfg = s->env->cfg;
	int fd = session_fd(s);
	shape_init(&s->shape, s->env->base, cfg, s->bev, s->ident.session_id,
		   s->ident.addr, session_verdict_due, session_shape_wake, s);
	bool async = store_async(s->env->store);
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
		int w = classify_weight(cfg, SIGNAL_DENYLIST);
		if (w < (int)cfg->shape_threshold)
			w = (int)cfg->shape_threshold;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_DENYLIST, w, entry);
	} else if (s->env->allow && cidr_match(s->env->allow, addr)) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_ALLOWLIST, 0, NULL);
	} else if (!async && store_pass_check(s->env->store, addr)) {
		s->trusted = true;
		classify_add(&s->cls, s->ident.session_id, s->ident.addr, SIGNAL_PASS,
			     0, NULL);
	}
	if (acl == ACL_NONE && s->env->deny && cidr_match(s->env->deny, addr)) {
		s->trusted = false; /* deny wins over a pass */
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_DENYLIST, classify_weight(s->env->cfg, SIGNAL_DENYLIST),
			     NULL);
	}
	if (!async) {
		struct reputation_verdict v;
		store_reputation(s->env->store, addr, &v);
		shape_reputation(s, &v);
	}
	else if (!s->trusted) /* NULL: nothing to wait for, the default holds */
		s->store_req = store_lookup_start(s->env->store, addr,
						  session_store_done, s);
	if (s->env->dnsbl && !s->trusted && acl != ACL_DENY)
		s->dnsbl = dnsbl_start(s->env->dns, s->env->dnsbl, addr,
				       session_dnsbl_done, s);
	throttle_window(fd, s->trusted);
	s->window_wide = s->trusted;
	/* Until the verdict, read only enough to see who talks first: a
	 * client that may be shaped must not get 64 KiB in ahead of it. */
	if (!s->trusted)
		bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_PREGREET_MAX);
	/* The greeting runs from the verdict's own timer, never inside
	 * accept. */
	if (shape_verdict_after(&s->shape, s->trusted ? 0 : cfg->greet_wait_ms) != 0)
		session_verdict_due(s); /* no timer: the verdict now */
}

/* The verdict, then the greeting (shaped or not). */
static void shape_greet(struct session *s)
{
	if (!session_unpark(s))
		return; /* closed with a 421 */
	s->greet_waiting = false;
	shape_verdict_cancel(&s->shape);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_IN_MAX);
	shape_decide(s);
	if (!shape_is_on(&s->shape) && !s->window_wide)
		throttle_window(session_fd(s), true); /* two system calls */
	s->verdict_done(s);
	/* A shaped greeting trickles for seconds: lent to the trickle
	 * meanwhile (a crowd greeted at once would otherwise hold a
	 * bufferevent each for all that time). */
	if (s->state != SESSION_CLOSING)
		session_park_later(s);
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
	/* Parked (session_park_greeting): nothing came, or the byte would
	 * have taken the bufferevent back. */
	struct evbuffer *in = s->bev ? bufferevent_get_input(s->bev) : NULL;
	if (in && evbuffer_get_length(in) > 0 && !(s->cls.fired & (1u << SIGNAL_PREGREET))) {
		char detail[64];
		snprintf(detail, sizeof detail, "count=%zu", evbuffer_get_length(in));
		classify_add(&s->cls, s->ident.session_id, s->ident.addr,
			     SIGNAL_PREGREET, classify_weight(s->env->cfg, SIGNAL_PREGREET),
			     detail);
	}
	/* The verdict waits for the look-ups, but the greeting waits at most
	 * dns_timeout more for them: a slow or flooded resolver must not hold
	 * every client. A late answer can still start shaping afterwards. */
	if (!s->trusted && (s->dns || s->dnsbl || s->store_req) && !s->greet_waiting) {
		s->greet_waiting = true;
		if (shape_verdict_after(&s->shape, s->env->cfg->dns_timeout_ms) == 0)
			return;
		/* No timer: the verdict now, without the late look-ups. */
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
				    s->env->cfg->myhostname);
	if (flags)
		session_signal(s, SIGNAL_HELO, s->helo);
}

/* --- the body, the end, the verdict's consequences ----------------------- */

void session_shape_body(struct session *s, bool in_body)
{
	if (!shape_ever(&s->shape))
		return;
	if (in_body)
		shape_pause(&s->shape); /* full speed, the budget paused */
	else
		shape_on(s); /* the final reply goes out slowly */
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

static void session_hold_done(void *arg)
{
	struct session *s = arg;
	void (*then)(struct session *) = s->hold_then;
	s->hold_then = NULL;
	if (then)
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
	if (!shape_is_on(&s->shape) || session_shape_client_gone(s) ||
	    s->env->spool->memory_buffered >= s->env->cfg->memory_limit / 2)
		return false;
	s->hold_then = then;
	if (shape_hold(&s->shape, s->env->cfg->shape_final_hold_ms,
		       session_hold_done))
		return true;
	s->hold_then = NULL;
	return false;
}

/* 5.1.x: the recipient does not exist (RFC 3463). Only permanent ones
 * count towards harvesting: a mailing-list server with stale addresses
 * gets 4xx for full mailboxes and the like, and is not a harvester. */
void session_shape_rcpt(struct session *s, int code, const char *enhanced)
{
	if (code / 100 == 5 && strncmp(enhanced, "5.1.", 4) == 0)
		s->rcpt_unknown++;
}

/* The mail server's content verdict: 5.7.x at end of data (a milter,
 * header_checks/body_checks REJECT). 5.2.x and 5.3.x are size and system
 * errors, and say nothing about the sender. */
static bool shape_content_refused(int code, const char *enhanced)
{
	return code / 100 == 5 && strncmp(enhanced, "5.7.", 4) == 0;
}

void session_shape_delivered(struct session *s, int code, const char *enhanced)
{
	if (code / 100 == 2) {
		/* The server took the message; that proves it wanted it only
		 * for a client that looked clean. From a shaped session it
		 * proves patience, and spam from patient bots must not clean
		 * their address or network. */
		if (!shape_ever(&s->shape)) {
			store_record(s->env->store, session_addr(s), REPUTATION_DELIVERED);
		} else {
			metrics_inc(METRIC_SHAPED_DELIVERIES);
			/* Patience proven: no more waiting for this client. */
			if (!s->pass_blocked)
				store_pass_grant(s->env->store, session_addr(s),
						 s->env->cfg->pass_ttl_ms);
		}
	} else if (shape_content_refused(code, enhanced)) {
		/* The strongest evidence there is: the next connections are
		 * shaped, and whatever pass the client holds or would earn in
		 * this session is gone. */
		metrics_inc(METRIC_CONTENT_REFUSALS);
		log_info("session=%llu client=%s CONTENTREFUSED %d %s: pass revoked",
			 s->ident.session_id, s->ident.addr, code, enhanced);
		s->pass_blocked = true;
		store_record(s->env->store, session_addr(s), REPUTATION_CONTENT_REFUSED);
		store_pass_revoke(s->env->store, session_addr(s));
	}
}

void session_shape_early_close(struct session *s)
{
	store_record(s->env->store, session_addr(s), REPUTATION_EARLY_CLOSE);
}

/* A harvester: at least SHAPE_HARVEST_MIN recipients unknown, and more
 * than harvest_share percent of its attempts. */
static bool shape_harvested(const struct session *s)
{
	unsigned tried = s->rcpt_accepted + s->rcpt_refused;
	return s->rcpt_unknown >= SHAPE_HARVEST_MIN &&
	       s->rcpt_unknown * 100ULL > (unsigned long long)tried * s->env->cfg->harvest_share;
}

void session_shape_end(struct session *s, bool hangup)
{
	if (s->classify_over)
		return;
	s->classify_over = true;
	if (s->dnsbl) {
		dnsbl_cancel(s->dnsbl);
		s->dnsbl = NULL;
	}
	bool was_shaped = shape_is_on(&s->shape);
	long ms = shape_used_ms(&s->shape);
	enum session_phase ph = session_phase(s); /* before a lent reply goes */
	shape_free(&s->shape);
	s->hold_then = NULL;
	if (hangup && was_shaped) {
		/* A hang-up after the end counts as one in data, as ever. */
		static const enum metric_id by_phase[] = {
			[SESSION_PHASE_GREETING] = METRIC_HANGUP_GREETING,
			[SESSION_PHASE_HELO] = METRIC_HANGUP_HELO,
			[SESSION_PHASE_MAIL] = METRIC_HANGUP_MAIL,
			[SESSION_PHASE_RCPT] = METRIC_HANGUP_RCPT,
			[SESSION_PHASE_DATA] = METRIC_HANGUP_DATA,
			[SESSION_PHASE_END] = METRIC_HANGUP_DATA,
		};
		const char *phase = session_phase_name(ph);
		metrics_inc(by_phase[ph]);
		metrics_inc(ms < 10000 ? METRIC_HANGUP_0_10 : ms < 30000 ? METRIC_HANGUP_10_30
			    : ms < 60000 ? METRIC_HANGUP_30_60 : METRIC_HANGUP_60_PLUS);
		log_info("session=%llu client=%s HANGUP after %ld s in %s", s->ident.session_id,
			 s->ident.addr, ms / 1000, phase);
		store_record(s->env->store, session_addr(s), REPUTATION_HANGUP_SHAPED);
	}
	if (shape_harvested(s)) {
		log_info("session=%llu client=%s HARVEST %u of %u recipients unknown",
			 s->ident.session_id, s->ident.addr, s->rcpt_unknown,
			 s->rcpt_accepted + s->rcpt_refused);
		store_record(s->env->store, session_addr(s), REPUTATION_HARVEST);
	}
	/* A client that was never shaped and showed nothing bad passes. */
	if (!shape_ever(&s->shape) && !s->trusted && !s->pass_blocked &&
	    s->cls.score < (int)s->env->cfg->shape_threshold && s->transactions > 0)
		store_pass_grant(s->env->store, session_addr(s),
				 s->env->cfg->pass_ttl_ms);
}
