/*
 * lane: a fast lane on one held backend connection (see lane.h).
 *
 * The connection moves between three holders without going back to the
 * pool in between (pool_hand_over): the identify replay (XCLIENT, EHLO),
 * the lane itself (MAIL, RCPT, RSET), and the body replay (DATA, body,
 * "."), which hands it back when the end-of-data answer came clean. So the
 * server sees one connection carrying the client's whole transaction, and
 * the replay's code (identity, body, the dot and its answer, orphans) is
 * the one code for both paths.
 *
 * Lifetime: the owner frees the lane with lane_release. A lane released
 * with a transaction open on the server stays alive, detached, until
 * its RSET is answered (bounded by backend_timeout), then frees itself.
 *
 * Rejected: relaying the backend's 421 to the client (it is the server
 * closing on sluice, not a verdict on the client: the owner falls back);
 * pipelining XCLIENT and the EHLO after it (Postfix answers XCLIENT with a
 * new 220 and, with smtpd_forbid_unauth_pipelining, drops a client that
 * sends before it: the replay waits for each).
 */
#include "lane.h"

#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

#define LANE_STATES(X)                                                      \
	X(LANE_OPENING, "opening")   /* identify replay in flight */        \
	X(LANE_READY, "ready")       /* held: commands go on it */          \
	X(LANE_BODY, "body")         /* the body replay holds it */         \
	X(LANE_DETACHED, "detached") /* released, its RSET answered next */ \
	X(LANE_LOST, "lost")         /* no connection any more */

enum lane_state {
#define LANE_STATE_ENUM(id, name) id,
	LANE_STATES(LANE_STATE_ENUM)
#undef LANE_STATE_ENUM
};

static const char *const lane_state_names[] = {
#define LANE_STATE_NAME(id, name) name,
	LANE_STATES(LANE_STATE_NAME)
#undef LANE_STATE_NAME
};

struct lane {
	struct pool *pool;
	const struct config *cfg;
	const struct client_identity *id; /* the owner's; NULL once detached */
	unsigned long long session_id;    /* for log lines, detached too */
	const struct lane_owner *owner;
	void *arg;
	struct pool_lease lease;
	struct replay *op;     /* OPENING: the identify replay */
	enum lane_state state; /* set by lane_set_state only */
	unsigned owed;         /* MAIL/RCPT replies owed to the owner */
	bool txn_open;         /* MAIL accepted, no RSET or "." since */
	/* BODY: the owner's done, called after the lane took its
	 * connection back. */
	replay_done_fn body_done;
	void *body_arg;
};

static void lane_set_state(struct lane *l, enum lane_state st)
{
	if (l->state == st)
		return;
	log_debug("lane: session=%llu %s -> %s", l->session_id,
		  lane_state_names[l->state], lane_state_names[st]);
	l->state = st;
}

static const struct pool_borrower lane_borrower;

/* The connection is gone or unusable: given back (closed), and the owner
 * told when it is still attached. */
static void lane_lose(struct lane *l, const char *why)
{
	enum lane_state was = l->state;
	pool_return(&l->lease, false);
	l->txn_open = false;
	lane_set_state(l, LANE_LOST);
	if (was == LANE_DETACHED) {
		free(l);
		return;
	}
	log_info("lane: session=%llu client=%s LANELOST %s owed=%u",
		 l->id->session_id, l->id->addr, why, l->owed);
	l->owed = 0;
	l->owner->lost(l->arg);
}

static void lane_conn_failed(void *arg, enum backend_fault fault,
			     const char *why)
{
	lane_lose(arg, fault == BACKEND_FAULT_PROTOCOL ? "out of protocol" : why);
}

static void lane_wanted(void *arg)
{
	struct lane *l = arg;
	if (l->state == LANE_READY && l->owed == 0 && l->owner->wanted)
		l->owner->wanted(l->arg);
}

static const struct pool_borrower lane_borrower = {
	.ready = NULL, /* never lent directly: handed over (lane_open) */
	.failed = lane_conn_failed,
	.drained = NULL,
	.wanted = lane_wanted,
};

/* --- opening ----------------------------------------------------------- */

static void lane_identified(void *arg, const struct smtp_reply *reply,
			    enum reply_id local)
{
	struct lane *l = arg;
	l->op = NULL;
	bool ok = !reply && local == REPLY_OK && l->lease.state == POOL_LEASE_HELD;
	if (!ok) {
		/* The buffered path asks again and answers the client with
		 * whatever the server says then. */
		log_debug("lane: session=%llu not identified (%d)", l->session_id,
			  reply ? reply->code : reply_code(local));
		pool_return(&l->lease, false);
		lane_set_state(l, LANE_LOST);
		l->owner->opened(l->arg, false);
		return;
	}
	lane_set_state(l, LANE_READY);
	l->owner->opened(l->arg, true);
}

struct lane *lane_open(struct pool *pool, const struct config *cfg,
		       const struct client_identity *id, unsigned max_lanes,
		       long wait_ms, const struct lane_owner *owner, void *arg)
{
	struct lane *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->pool = pool;
	l->cfg = cfg;
	l->id = id;
	l->session_id = id->session_id;
	l->owner = owner;
	l->arg = arg;
	l->state = LANE_OPENING;
	l->op = replay_identify_lane(pool, cfg, id, max_lanes, wait_ms, &l->lease,
				&lane_borrower, l, lane_identified, l);
	if (!l->op) {
		free(l);
		return NULL;
	}
	metrics_inc(METRIC_LANES);
	return l;
}

bool lane_usable(const struct lane *l)
{
	return l && l->state == LANE_READY;
}

unsigned lane_owed(const struct lane *l)
{
	return l ? l->owed : 0;
}

bool lane_txn_open(const struct lane *l)
{
	return l && l->txn_open;
}

/* --- commands ---------------------------------------------------------- */

/* A reply its command cannot have, or the server closing: the lane is
 * lost and the reply never reaches the client. */
static bool lane_reply_unusable(struct lane *l, const struct smtp_reply *reply)
{
	int cls = reply->code / 100;
	if (reply->code == 421) {
		lane_lose(l, "421 from the server");
		return true;
	}
	if (cls != 2 && cls != 4 && cls != 5) {
		log_warn("lane: session=%llu backend reply %d out of step; closing",
			 l->session_id, reply->code);
		lane_lose(l, "reply out of step");
		return true;
	}
	return false;
}

static void lane_mail_reply(void *arg, const struct smtp_reply *reply)
{
	struct lane *l = arg;
	if (lane_reply_unusable(l, reply))
		return;
	l->txn_open = reply->code / 100 == 2;
	l->owed--;
	l->owner->reply(l->arg, reply);
}

static void lane_rcpt_reply(void *arg, const struct smtp_reply *reply)
{
	struct lane *l = arg;
	if (lane_reply_unusable(l, reply))
		return;
	l->owed--;
	l->owner->reply(l->arg, reply);
}

static void lane_rset_reply(void *arg, const struct smtp_reply *reply)
{
	struct lane *l = arg;
	if (reply->code != 250) {
		lane_lose(l, "RSET refused");
		return;
	}
	if (l->state == LANE_DETACHED) {
		pool_return(&l->lease, true);
		free(l);
	}
}

static int lane_send(struct lane *l, const char *line, size_t len,
		     backend_reply_fn fn)
{
	if (len == 0 || len > SMTP_CMD_LINE_MAX - 2)
		return -1;
	/* -1: backend_command failed the connection; failed follows. */
	return backend_command(pool_lease_backend(&l->lease), line, len, false, 0, fn, l);
}

int lane_mail(struct lane *l, const char *sender,
	      const struct smtp_mail_params *pm)
{
	char line[SMTP_CMD_LINE_MAX + 64];
	unsigned long long size = pm->size > 0 ? (unsigned long long)pm->size : 0;
	if (!lane_usable(l))
		return -1;
	size_t n = replay_mail_line(backend_caps(pool_lease_backend(&l->lease)), sender, pm, size, line, sizeof line);
	if (lane_send(l, line, n, lane_mail_reply) != 0)
		return -1;
	l->owed++;
	return 0;
}

int lane_rcpt(struct lane *l, const char *rcpt)
{
	char line[SMTP_CMD_LINE_MAX + 64];
	if (!lane_usable(l))
		return -1;
	int n = snprintf(line, sizeof line, "RCPT TO:<%s>", rcpt);
	if (n < 0 || lane_send(l, line, (size_t)n, lane_rcpt_reply) != 0)
		return -1;
	l->owed++;
	return 0;
}

int lane_rset(struct lane *l)
{
	if (!lane_usable(l))
		return -1;
	if (lane_send(l, "RSET", 4, lane_rset_reply) != 0)
		return -1;
	l->txn_open = false;
	return 0;
}

/* --- the message --------------------------------------------------------- */

static void lane_body_done(void *arg, const struct smtp_reply *reply,
			   enum reply_id local)
{
	struct lane *l = arg;
	/* Ended clean: the replay handed the connection back. */
	l->txn_open = false;
	lane_set_state(l, l->lease.state == POOL_LEASE_HELD ? LANE_READY : LANE_LOST);
	l->body_done(l->body_arg, reply, local);
}

struct replay *lane_message(struct lane *l, const struct replay_txn *txn,
			    replay_done_fn done, void *arg)
{
	if (!lane_usable(l) || l->owed > 0)
		return NULL;
	l->body_done = done;
	l->body_arg = arg;
	lane_set_state(l, LANE_BODY);
	metrics_inc(METRIC_LANE_MESSAGES);
	struct replay *r = replay_body(l->pool, l->cfg, l->id, txn,
				       pool_lease_backend(&l->lease),
				       &l->lease, &lane_borrower, l,
				       lane_body_done, l);
	if (!r)
		lane_set_state(l, LANE_READY);
	return r;
}

/* --- release ------------------------------------------------------------- */

void lane_release(struct lane *l)
{
	if (!l)
		return;
	switch (l->state) {
	case LANE_OPENING:
		replay_cancel(l->op);
		break;
	case LANE_READY:
		if (l->owed == 0 && l->txn_open && lane_rset(l) == 0) {
			/* The RSET's answer frees it (lane_rset_reply); the
			 * owner and its identity may be gone by then. */
			lane_set_state(l, LANE_DETACHED);
			l->id = NULL;
			return;
		}
		/* Replies owed to nobody: the connection is out of step
		 * with any next borrower, so it is closed. */
		pool_return(&l->lease, l->owed == 0 && !l->txn_open);
		break;
	case LANE_BODY:
		/* The owner cancelled the body replay first: nothing comes
		 * back to this lease. */
		pool_return(&l->lease, false);
		break;
	case LANE_DETACHED:
	case LANE_LOST:
		break;
	}
	free(l);
}
