/*
 * lane: a fast lane, one backend connection held for one client across
 * its transaction, so that a client that keeps up costs the mail server
 * one exchange per message instead of a recipient check per RCPT and a
 * replay at the end (issue 8). The lane is a long lease of the pool
 * (pool_lend_long: within the lanes' share of the pool, waiting in line
 * no longer than its owner would wait for its client); it identifies
 * the client once (replay_identify_lane: XCLIENT and EHLO, the replay's own
 * code) and
 * then relays MAIL and RCPT live, the server's replies coming back in
 * order; the body goes by replay_body on the same connection, which
 * hands it back after the end-of-data answer.
 *
 * The lane knows no session: it reports through struct lane_owner. It
 * never waits for the client by itself: its owner bounds every wait
 * (fast_lane_gap, fast_lane_body_wait) and calls lane_release, because
 * the pool gives the connection no read timeout while nothing is owed
 * (pool.h, the lease contract).
 *
 * What reaches the client: the server's reply to MAIL and RCPT as the
 * server gave it (it judged the real client: XCLIENT went first), except
 * a 421 or a reply of a class its command cannot have, which lose the
 * lane (lost) and are never relayed: the owner answers that command on
 * its buffered path instead (HOSTILE 94).
 */
#ifndef SLUICE_LANE_H
#define SLUICE_LANE_H

#include <stdbool.h>

#include "replay.h"
#include "smtp_parse.h"
#include "smtp_reply.h"

struct config;
struct lane;
struct pool;

struct lane_owner {
	/* lane_open's outcome (on a later loop turn): ok, the lane carries
	 * the client's identity and takes commands; otherwise the lane is
	 * over and the owner calls lane_release. */
	void (*opened)(void *arg, bool ok);
	/* The server's reply to the oldest owed MAIL or RCPT. */
	void (*reply)(void *arg, const struct smtp_reply *reply);
	/* The connection is gone (failed, 421, out of step); owed commands
	 * will never be answered. Runs once, never inside a lane_ call. */
	void (*lost)(void *arg);
	/* Others wait for a backend connection (pool fairness): give the
	 * lane back if it only waits for the client. May be NULL. */
	void (*wanted)(void *arg);
};

/* Opens a lane for id (which outlives the lane) when fewer than
 * max_lanes lanes are held: NULL otherwise, or when out of memory
 * (nothing started; the owner goes the buffered way). opened(false)
 * when no connection came within wait_ms. */
struct lane *lane_open(struct pool *pool, const struct config *cfg,
		       const struct client_identity *id, unsigned max_lanes,
		       long wait_ms, const struct lane_owner *owner, void *arg);

/* Whether commands can go on it now: identified, connection held, not
 * lost, no body in flight. */
bool lane_usable(const struct lane *l);
/* MAIL and RCPT replies still owed to the owner. */
unsigned lane_owed(const struct lane *l);
/* Whether the server holds an open transaction (MAIL accepted). */
bool lane_txn_open(const struct lane *l);

/* Relay one command (lane_usable must hold); its reply comes through
 * owner->reply, in order. sender and rcpt as parsed (at most
 * SMTP_PATH_MAX). -1: it could not be sent (lost follows, or the line
 * would not fit: nothing sent). */
int lane_mail(struct lane *l, const char *sender,
	      const struct smtp_mail_params *pm);
int lane_rcpt(struct lane *l, const char *rcpt);
/* RSET on the lane; the server's answer is the lane's own (a refusal
 * loses the lane). */
int lane_rset(struct lane *l);

/* The message on the lane: DATA, body, "." (replay_body). done as for
 * replay_message; after it the lane is usable again when the exchange
 * ended clean. The replay is the caller's (replay_cancel before
 * lane_release). NULL: out of memory, nothing started. */
struct replay *lane_message(struct lane *l, const struct replay_txn *txn,
			    replay_done_fn done, void *arg);

/* Gives the lane up; the owner never hears from it again. A transaction
 * open on the server is RSET first (the lane finishes that alone), so
 * the connection goes back to the pool clean when it can. */
void lane_release(struct lane *l);

#endif
