/*
 * session_lane: when a session takes a fast lane (lane.h), what it relays
 * on it, and when it falls back to the buffered path.
 *
 * Taken at MAIL only when all hold: fast_lane is on; the session never
 * fell back; it is not shaped; its identity is complete (the PTR result
 * is in: XCLIENT NAME needs it; when it is all that is missing, MAIL waits
 * for it, as the buffered way's first RCPT would); it keeps up (its MAIL arrived within
 * fast_lane_gap of sluice's previous reply leaving, or was pipelined);
 * and a backend connection, within the lanes' share of the pool
 * (fast_lane_share), comes within fast_lane_gap (in line as any borrower,
 * and behind the lanes that hold the share when it is taken: under load
 * one exchange per message is what frees the pool, so refusing lanes
 * whenever others wait or the share is taken would keep the load at two
 * exchanges per message for good). Otherwise MAIL is answered as before
 * and the transaction goes the buffered way.
 *
 * On the lane, MAIL and RCPT go to the server and its replies to the
 * client; one command at a time, as the session takes them (the session
 * does not read the next command while a reply is owed, so replies can
 * never come out of order). The body is read as always; at its end it
 * goes on the lane (session_data.c).
 *
 * Waiting for the client is bounded here, never by the backend (pool.h):
 * after each reply the lane waits fast_lane_gap for the next command, and
 * fast_lane_body_wait for a body after 354. Falling back happens only
 * with no lane reply owed: the lane is given up (lane_release: RSET, then
 * back to the pool) and the transaction goes on the buffered way; its
 * recipients so far are checked again by the replay at end of data (one
 * refused then is the 451 of HOSTILE 35, counted in
 * sluice_lane_fallback_refused_total). Reasons: the client stalled, it
 * became shaped (a late DNS answer included), the lane was lost (the
 * server dropped it or said 421), the body took too long, or other
 * sessions waited for a connection while the client had been quiet for
 * half of fast_lane_gap. A session that fell back takes no new lane.
 */
#include "session_priv.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lane.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"

enum lane_pending { LANE_PENDING_NONE, LANE_PENDING_MAIL, LANE_PENDING_RCPT };

/* RCPTs a client pipelined that may be owed on the lane at once (RFC
 * 2920: as the client pipelined them); past it the session waits. */
#define SESSION_LANE_PIPE_MAX 16

struct session_lane {
	struct lane *lane;      /* NULL: none held */
	struct event *timer;    /* the client's bound: gap or body wait (never NULL) */
	enum lane_pending pending; /* the oldest command whose reply is owed */
	/* The recipients owed (pending RCPT), oldest first: the session's
	 * pending_rcpt is each in turn when its reply comes. */
	char *rcpts[SESSION_LANE_PIPE_MAX];
	unsigned n_rcpts;
	bool off;               /* fell back: no new lane this session */
	unsigned messages;      /* sent on a lane */
	unsigned fallbacks;
};

static const struct lane_owner session_lane_owner;

static void session_lane_drop(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (!sl)
		return;
	event_del(sl->timer);
	lane_release(sl->lane);
	sl->lane = NULL;
	sl->pending = LANE_PENDING_NONE;
	for (unsigned i = 0; i < sl->n_rcpts; i++)
		free(sl->rcpts[i]);
	sl->n_rcpts = 0;
}

/* The oldest owed recipient becomes the session's pending one again. */
static void session_lane_pop_rcpt(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (sl->n_rcpts == 0 || !s->txn)
		return;
	free(s->txn->pending_rcpt);
	s->txn->pending_rcpt = sl->rcpts[0];
	sl->n_rcpts--;
	memmove(sl->rcpts, sl->rcpts + 1, sl->n_rcpts * sizeof sl->rcpts[0]);
	sl->pending = sl->n_rcpts > 0 ? LANE_PENDING_RCPT : LANE_PENDING_NONE;
}

/* reason: the metric; why: the log. The lane is given up with no reply
 * owed; the transaction, when one is open, goes on buffered. */
static void session_lane_fallback(struct session *s, enum metric_id reason,
				  const char *why)
{
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane)
		return;
	bool in_txn = s->txn != NULL && lane_txn_open(sl->lane);
	session_lane_drop(s);
	if (!in_txn && reason != METRIC_LANE_FALLBACK_LOST)
		return; /* between transactions: simply given back */
	sl->off = true;
	sl->fallbacks++;
	metrics_inc(reason);
	if (s->txn && s->txn->n_rcpts > 0)
		s->txn->lane_rcpts = true;
	log_info("session=%llu client=%s LANEFALLBACK reason=%s rcpt=%zu",
		 s->ident.session_id, s->ident.addr, why,
		 s->txn ? s->txn->n_rcpts : (size_t)0);
}

static void session_lane_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane || lane_owed(sl->lane) > 0)
		return;
	if (s->txn && s->txn->body)
		session_lane_fallback(s, METRIC_LANE_FALLBACK_BODY, "body_wait");
	else
		session_lane_fallback(s, METRIC_LANE_FALLBACK_STALL, "stall");
}

/* The client's turn: the lane waits for it fast_lane_gap at most, or
 * fast_lane_body_wait once the body is coming. */
void session_lane_arm(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane)
		return;
	if (lane_owed(sl->lane) > 0 || s->state == SESSION_CLOSING ||
	    (s->wait != SESSION_WAIT_NONE && s->state != SESSION_DATA)) {
		event_del(sl->timer);
		return;
	}
	if (s->state == SESSION_DATA && evtimer_pending(sl->timer, NULL))
		return; /* the body's bound runs from 354, once */
	const struct config *cfg = s->env->cfg;
	struct timeval tv = mstime_tv(s->state == SESSION_DATA
					      ? cfg->fast_lane_body_wait_ms
					      : cfg->fast_lane_gap_ms);
	evtimer_add(sl->timer, &tv);
}

/* A command arrived: the client kept up. */
void session_lane_command(struct session *s)
{
	if (s->lane)
		event_del(s->lane->timer);
}

/* How long the client has had its turn: since the command deadline was
 * armed (when a reply has left, or when the previous command was taken:
 * a pipelined command). -1: none armed yet. */
static long long session_lane_quiet_ms(const struct session *s)
{
	if (s->deadline_ms == 0)
		return -1;
	return mstime_mono() - (s->deadline_ms - s->env->cfg->smtpd_timeout_ms);
}

bool session_lane_keeps_up(const struct session *s)
{
	long long quiet = session_lane_quiet_ms(s);
	return quiet >= 0 && quiet <= s->env->cfg->fast_lane_gap_ms;
}

static unsigned session_lane_max(const struct config *cfg)
{
	unsigned n = cfg->backend_pool_size * cfg->fast_lane_share / 100;
	return n == 0 && cfg->fast_lane_share > 0 ? 1 : n;
}

static void session_lane_send_mail(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (lane_mail(sl->lane, s->txn->sender, &s->txn->params) == 0) {
		sl->pending = LANE_PENDING_MAIL;
		session_wait_for(s, SESSION_WAIT_REPLAY);
		return;
	}
	/* Not sent: the buffered way, as if no lane had been there. */
	session_lane_drop(s);
	session_reply(s, REPLY_MAIL_OK);
	session_wait_for(s, SESSION_WAIT_NONE);
}

/* What a lane needs at MAIL but the PTR result. */
static bool session_lane_eligible(const struct session *s)
{
	const struct session_lane *sl = s->lane;
	return s->env->cfg->fast_lane && !(sl && sl->off) &&
	       !shape_is_on(&s->shape) && s->txn;
}

bool session_lane_awaits_identity(struct session *s)
{
	return s->dns && session_lane_eligible(s) && s->txn->mail_kept_up;
}

bool session_lane_mail(struct session *s)
{
	const struct config *cfg = s->env->cfg;
	struct session_lane *sl = s->lane;
	if (!session_lane_eligible(s) || s->dns)
		return false;
	if (sl && sl->lane && !lane_usable(sl->lane))
		session_lane_drop(s);
	/* Judged when MAIL came, not after a wait for the PTR result. */
	if (!s->txn->mail_kept_up) {
		session_lane_drop(s);
		return false;
	}
	if (sl && sl->lane) {
		/* Kept from the last transaction. One that ended here without
		 * reaching the server (a message refused at end of data, a
		 * spool failure) is still open there: RSET goes first. */
		if (lane_txn_open(sl->lane) && lane_rset(sl->lane) != 0) {
			session_lane_drop(s);
			return false;
		}
		session_lane_send_mail(s);
		return true;
	}
	if (!sl) {
		/* Kept only with its timer: a lane without the client's bound
		 * would hold a backend connection for a stalled client. */
		sl = calloc(1, sizeof *sl);
		if (!sl)
			return false;
		sl->timer = evtimer_new(s->env->base, session_lane_timeout, s);
		if (!sl->timer) {
			free(sl);
			return false;
		}
		s->lane = sl;
	}
	/* In line for a connection no longer than for a command of the
	 * client: under load, one exchange per message is what frees the
	 * pool, so a lane may wait its turn as a recipient check would. */
	sl->lane = lane_open(s->env->pool, cfg, &s->ident, session_lane_max(cfg),
			     cfg->fast_lane_gap_ms, &session_lane_owner, s);
	if (!sl->lane)
		return false;
	log_debug("session=%llu client=%s lane taken", s->ident.session_id,
		  s->ident.addr);
	session_wait_for(s, SESSION_WAIT_REPLAY);
	return true;
}

bool session_lane_rcpt(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane)
		return false;
	if (shape_is_on(&s->shape)) {
		session_lane_fallback(s, METRIC_LANE_FALLBACK_SHAPED, "shaped");
		return false;
	}
	if (!lane_usable(sl->lane) || !lane_txn_open(sl->lane)) {
		session_lane_fallback(s, METRIC_LANE_FALLBACK_LOST, "lost");
		return false;
	}
	if (sl->n_rcpts == SESSION_LANE_PIPE_MAX ||
	    lane_rcpt(sl->lane, s->txn->pending_rcpt) != 0) {
		session_lane_fallback(s, METRIC_LANE_FALLBACK_LOST, "lost");
		return false;
	}
	/* The lane holds it until its reply (session_lane_pop_rcpt). */
	sl->rcpts[sl->n_rcpts++] = s->txn->pending_rcpt;
	s->txn->pending_rcpt = NULL;
	sl->pending = LANE_PENDING_RCPT;
	return true;
}

/* Whether the session may take the client's next line (line, len,
 * without CR LF) although a lane reply is owed: a RCPT pipelined after
 * RCPTs already on the lane, that sluice would not answer itself (it
 * parses, the recipient limit is not reached), so every reply still
 * comes from the server, in order. Anything else waits for the owed
 * replies first. */
bool session_lane_pipelines(struct session *s, const char *line, size_t len)
{
	struct session_lane *sl = s->lane;
	struct smtp_cmd cmd;
	char path[SMTP_PATH_MAX + 1];
	if (!sl || !sl->lane || sl->pending != LANE_PENDING_RCPT ||
	    sl->n_rcpts == 0 || sl->n_rcpts == SESSION_LANE_PIPE_MAX ||
	    !lane_usable(sl->lane) || !s->txn || shape_is_on(&s->shape) ||
	    s->commands + 1 > s->env->cfg->command_limit ||
	    s->txn->n_rcpts + sl->n_rcpts >= s->env->cfg->max_recipients)
		return false;
	if (smtp_cmd_parse(line, len, &cmd) != SMTP_PARSE_OK ||
	    cmd.verb != SMTP_VERB_RCPT)
		return false;
	return smtp_rcpt_parse(cmd.arg, cmd.arg_len, path, sizeof path,
			       s->txn->params.smtputf8) == SMTP_PARSE_OK;
}

void session_lane_rset(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (sl && sl->lane && lane_txn_open(sl->lane) && lane_rset(sl->lane) != 0)
		session_lane_drop(s);
}

void session_lane_end(struct session *s)
{
	session_lane_drop(s);
}

void session_lane_free(struct session *s)
{
	session_lane_drop(s);
	if (s->lane)
		event_free(s->lane->timer);
	free(s->lane);
	s->lane = NULL;
}

struct lane *session_lane_for_message(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane)
		return NULL;
	if (shape_is_on(&s->shape)) {
		session_lane_fallback(s, METRIC_LANE_FALLBACK_SHAPED, "shaped");
		return NULL;
	}
	if (!lane_usable(sl->lane) || !lane_txn_open(sl->lane) ||
	    lane_owed(sl->lane) > 0) {
		session_lane_fallback(s, METRIC_LANE_FALLBACK_LOST, "lost");
		return NULL;
	}
	event_del(sl->timer);
	sl->messages++;
	return sl->lane;
}

bool session_lane_held(const struct session *s)
{
	return s->lane && s->lane->lane;
}

unsigned session_lane_messages(const struct session *s)
{
	return s->lane ? s->lane->messages : 0;
}

unsigned session_lane_fallbacks(const struct session *s)
{
	return s->lane ? s->lane->fallbacks : 0;
}

/* --- the lane's reports -------------------------------------------------- */

static void session_lane_opened(void *arg, bool ok)
{
	struct session *s = arg;
	if (ok) {
		session_lane_send_mail(s);
		return;
	}
	session_lane_drop(s);
	session_reply(s, REPLY_MAIL_OK);
	session_wait_for(s, SESSION_WAIT_NONE);
}

static void session_lane_reply(void *arg, const struct smtp_reply *reply)
{
	struct session *s = arg;
	struct session_lane *sl = s->lane;
	enum lane_pending what = sl->pending;
	sl->pending = LANE_PENDING_NONE;
	if (what == LANE_PENDING_RCPT) {
		session_lane_pop_rcpt(s);
		session_cmd_rcpt_answer(s, reply, REPLY_OK);
		if (lane_owed(sl->lane) > 0) {
			/* More pipelined RCPTs owed: input stays stopped
			 * (but for more RCPTs, session_lane_pipelines). */
			session_wait_for(s, SESSION_WAIT_REPLAY);
			return;
		}
	} else {
		if (reply->code / 100 != 2) {
			session_txn_free(s);
			session_set_state(s, SESSION_READY);
		}
		session_reply_relay(s, reply);
		session_wait_for(s, SESSION_WAIT_NONE);
	}
	/* A late verdict (a DNS list answering after MAIL) shaped it while
	 * the reply was owed: now that none is, the lane goes. */
	if (shape_is_on(&s->shape))
		session_lane_fallback(s, METRIC_LANE_FALLBACK_SHAPED, "shaped");
	else
		session_lane_arm(s);
}

static void session_lane_lost(void *arg)
{
	struct session *s = arg;
	struct session_lane *sl = s->lane;
	enum lane_pending what = sl->pending;
	if (what == LANE_PENDING_RCPT) {
		/* Every owed RCPT is checked the buffered way, in order: the
		 * first now, each next one when the last is answered
		 * (session_lane_checked). */
		char *owed[SESSION_LANE_PIPE_MAX];
		unsigned n = sl->n_rcpts;
		memcpy(owed, sl->rcpts, n * sizeof owed[0]);
		sl->n_rcpts = 0;
		session_lane_fallback(s, METRIC_LANE_FALLBACK_LOST, "lost");
		memcpy(sl->rcpts, owed, n * sizeof owed[0]);
		sl->n_rcpts = n;
		session_lane_pop_rcpt(s);
		session_cmd_rcpt_check(s);
		return;
	}
	/* The owed command is answered the buffered way. */
	session_lane_fallback(s, METRIC_LANE_FALLBACK_LOST, "lost");
	if (what == LANE_PENDING_MAIL) {
		sl->off = true;
		session_reply(s, REPLY_MAIL_OK);
		session_wait_for(s, SESSION_WAIT_NONE);
	}
}

bool session_lane_checked(struct session *s)
{
	struct session_lane *sl = s->lane;
	if (!sl || sl->lane || sl->n_rcpts == 0 || !s->txn ||
	    s->state == SESSION_CLOSING)
		return false;
	session_lane_pop_rcpt(s);
	session_wait_for(s, SESSION_WAIT_REPLAY);
	session_cmd_rcpt_check(s);
	return true;
}

/* Others wait for a connection: a lane whose client has been quiet for
 * half of fast_lane_gap, or has been sending its body for that long since
 * the last reply, gives its connection back. A client that answers within
 * a round trip, and sends its body as fast, keeps it: under load its one
 * exchange per message is what frees the pool. */
static void session_lane_wanted(void *arg)
{
	struct session *s = arg;
	struct session_lane *sl = s->lane;
	if (!sl || !sl->lane || lane_owed(sl->lane) > 0 ||
	    sl->pending != LANE_PENDING_NONE ||
	    (s->wait != SESSION_WAIT_NONE && s->state != SESSION_DATA))
		return;
	if (session_lane_quiet_ms(s) < s->env->cfg->fast_lane_gap_ms / 2)
		return;
	session_lane_fallback(s, METRIC_LANE_FALLBACK_WANTED, "wanted");
}

static const struct lane_owner session_lane_owner = {
	.opened = session_lane_opened,
	.reply = session_lane_reply,
	.lost = session_lane_lost,
	.wanted = session_lane_wanted,
};
