/*
 * replay: the short exchanges sluice has with the mail server on behalf of
 * one client, each on one pool checkout:
 *   - a recipient check: [XCLIENT, EHLO,] MAIL, RCPT, RSET;
 *   - a message: [XCLIENT, EHLO,] MAIL, RCPT..., DATA, body, ".".
 * The client's identity goes with XCLIENT so the server applies its own
 * rules to the real client. Without a successful XCLIENT (when
 * backend_xclient = yes) nothing else is sent: the server would judge
 * relaying by sluice's own address.
 *
 * The outcome is delivered once through the callback, on a later loop turn
 * than the call; replay_cancel stops it (the session is going away), except
 * once part of the final dot has left: then the server may queue the
 * message whatever happens, so the replay keeps its own copy of what it
 * still needs, runs to the server's answer and logs and counts it
 * (sluice_orphan_answers_total) instead of calling back.
 */
#ifndef SLUICE_REPLAY_H
#define SLUICE_REPLAY_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"
#include "replies.h"
#include "smtp_parse.h"
#include "smtp_reply.h"

struct backend;
struct backend_caps;
struct config;
struct pool;
struct pool_borrower;
struct pool_lease;
struct spool;
struct replay;

struct client_identity {
	unsigned long long session_id;
	char addr[64];             /* numeric, without brackets */
	unsigned port;
	int family;
	enum dns_name_status name_status;
	const char *name;          /* confirmed name when name_status OK */
	const char *helo;          /* NULL before HELO/EHLO */
	bool esmtp;
};

struct replay_txn {
	const char *sender;
	const struct smtp_mail_params *params;
	char *const *rcpts;
	size_t n_rcpts;
	struct spool *body;        /* message only: smtp_data's output */
	unsigned long long body_size;
	unsigned long long body_octets; /* body_size less its stuffing dots:
					   the count BDAT announces */
};

/* reply: the server's reply to relay (RCPT answer, end-of-data answer);
 * NULL when sluice answers itself with local (a 4xx from the catalogue). */
typedef void (*replay_done_fn)(void *arg, const struct smtp_reply *reply,
			       enum reply_id local);

/* Checks txn->rcpts[0] (only) with the server, on a connection of pool.
 * pool and cfg outlive the replay. */
struct replay *replay_rcpt(struct pool *pool, const struct config *cfg,
			   const struct client_identity *id,
			   const struct replay_txn *txn, replay_done_fn done,
			   void *arg);

/* Replays the whole transaction. */
struct replay *replay_message(struct pool *pool, const struct config *cfg,
			      const struct client_identity *id,
			      const struct replay_txn *txn,
			      replay_done_fn done, void *arg);

/* For a fast lane (lane.h): XCLIENT and EHLO for id on a connection
 * got within wait_ms (pool_lend_long, at most max_long long leases);
 * NULL when the lanes' share is taken (or out of memory): nothing
 * started. done(arg, NULL, REPLY_OK): identified, and the connection is
 * hand_to's (pool_hand_over with hand_cbs, hand_borrower); anything
 * else (no connection within wait_ms included): not. */
struct replay *replay_identify_lane(struct pool *pool, const struct config *cfg,
				    const struct client_identity *id,
				    unsigned max_long, long wait_ms,
				    struct pool_lease *hand_to,
				    const struct pool_borrower *hand_cbs,
				    void *hand_borrower, replay_done_fn done,
				    void *arg);

/* DATA, the body and "." on a lane's connection b, whose envelope (MAIL
 * and txn's recipients) the server has accepted: the lease is handed
 * over from "from" and, when the exchange ends clean, back to it (with
 * hand_cbs, hand_borrower); otherwise the connection is closed. done as
 * replay_message. NULL when out of memory (nothing handed over). */
struct replay *replay_body(struct pool *pool, const struct config *cfg,
			   const struct client_identity *id,
			   const struct replay_txn *txn, struct backend *b,
			   struct pool_lease *from,
			   const struct pool_borrower *hand_cbs,
			   void *hand_borrower, replay_done_fn done, void *arg);

void replay_cancel(struct replay *r);

/* Whether part of the end of data (the final dot, BDAT's last octet) has
 * left: from then on the server may queue the message whatever happens,
 * and replay_cancel lets the replay run to the answer (an orphan). */
bool replay_committed(const struct replay *r);

/* The server's answer (reply, or NULL and local) to a message whose client
 * closed once it was committed: logged and counted
 * (sluice_orphan_answers_total), by the orphaned replay itself or, when
 * the session stayed to relay it (relayed), by the session. */
void replay_log_client_gone(unsigned long long session_id, const char *addr,
			    size_t n_rcpts, const struct smtp_reply *reply,
			    enum reply_id local, bool relayed);

/* "MAIL FROM:<sender>" with SIZE (when size > 0) and the parameters the
 * server offers (caps), into line (max bytes); 0 when it does not fit. */
size_t replay_mail_line(const struct backend_caps *caps, const char *sender,
			const struct smtp_mail_params *pm,
			unsigned long long size, char *line, size_t max);

/* The XCLIENT command lines for id, given the attributes the server offers.
 * Writes up to max_lines NUL-terminated lines of at most 510 bytes into
 * lines; returns the count, 0 when nothing can be sent. Exposed for tests. */
size_t replay_xclient_lines(const struct client_identity *id,
			    const char *offered, char lines[][512],
			    size_t max_lines);

#endif
