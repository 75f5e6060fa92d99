/*
 * replay: recipient checks and message replays on pool checkouts (see
 * replay.h).
 *
 * Each step's reply handler starts the next step, so one replay is a chain
 * of callbacks on one lent connection. The connection is given back as
 * soon as the exchange ends, clean (RSET or end-of-data answered) or not
 * (then the pool closes it). A recipient the server refuses at replay
 * time after accepting it at RCPT time ends the replay with RSET before
 * DATA and a 451 to the client: never a partial delivery, never a bounce.
 *
 * Lifetime: struct replay is freed right before its done callback runs,
 * or by replay_cancel. The identity and transaction it points to belong to
 * the session, which outlives it (the session cancels on close).
 */
#include "replay.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ascii.h"
#include "backend.h"
#include "backend_warn.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "smtp_data.h"
#include "spool.h"

#define REPLAY_XCLIENT_LINES 4
#define REPLAY_BODY_HIGHWAT (256 * 1024)
#define REPLAY_DOT_LEN 3 /* ".\r\n", the end of data */
#define REPLAY_HEADER_MAX 1024 /* our Received header (helo, name: 255 each) */

/* RCPT: a recipient check. MESSAGE: a whole message. IDENTIFY: XCLIENT
 * and EHLO on a connection free now, then the connection is handed over
 * to a fast lane (lane.h). BODY: DATA and the body on a lane's connection
 * (its envelope open on the server), handed back to the lane after. */
enum replay_kind { REPLAY_RCPT, REPLAY_MESSAGE, REPLAY_IDENTIFY, REPLAY_BODY };

/* The exchange's steps, in order (a check goes ENVELOPE -> RSET). */
#define REPLAY_STEPS(X)                                                     \
	X(REPLAY_STEP_LEASE, "lease")       /* waiting for a connection */  \
	X(REPLAY_STEP_IDENTIFY, "identify") /* XCLIENT and its EHLO */      \
	X(REPLAY_STEP_ENVELOPE, "envelope") /* MAIL and RCPT replies owed */\
	X(REPLAY_STEP_DATA, "data")         /* DATA sent, 354 awaited */    \
	X(REPLAY_STEP_BODY, "body")         /* the body is being sent */    \
	X(REPLAY_STEP_DOT, "dot")           /* all sent, its answer owed */ \
	X(REPLAY_STEP_RSET, "rset")         /* RSET sent */

enum replay_step {
#define REPLAY_STEP_ENUM(id, name) id,
	REPLAY_STEPS(REPLAY_STEP_ENUM)
#undef REPLAY_STEP_ENUM
};

static const char *const replay_step_names[] = {
#define REPLAY_STEP_NAME(id, name) name,
	REPLAY_STEPS(REPLAY_STEP_NAME)
#undef REPLAY_STEP_NAME
};

/* What the envelope's replies said. */
enum replay_envelope {
	REPLAY_ENV_OK,
	REPLAY_ENV_RCPT_REFUSED, /* a recipient refused */
	REPLAY_ENV_MAIL_REFUSED, /* MAIL refused */
};

struct replay {
	struct pool *pool;
	const struct config *cfg;
	enum replay_kind kind;
	const struct client_identity *id;
	struct replay_txn txn;
	replay_done_fn done;
	void *arg;
	struct pool_lease lease;
	struct backend *b;
	unsigned owed;          /* envelope replies still to come */
	enum replay_step step;  /* set by replay_set_step only */
	unsigned long long key; /* replay_identity_key(id) */
	struct client_identity own_id; /* orphaned: the copy r->id points to */
	bool fresh_taken;       /* a stale connection was swapped once */
	enum replay_envelope env;
	bool body_reading;      /* a spool read is in flight (BODY) */
	unsigned long long body_sent; /* BODY: spool bytes given to the connection */
	/* BDAT (RFC 3030) instead of DATA: the message goes as one chunk of
	 * counted octets after the command, without stuffing dots or a
	 * final ".", and BDAT's answer is the end-of-data answer. */
	bool chunking;
	bool body_bol;          /* BDAT: the next spool byte starts a line */
	unsigned long long octets_left; /* BDAT: announced, not yet given */
	bool have_result;
	enum reply_id local;
	struct smtp_reply result;
	/* IDENTIFY and BODY: where the connection goes when the exchange
	 * ends clean (a lane's lease); NULL: back to the pool. */
	struct pool_lease *hand_to;
	const struct pool_borrower *hand_cbs;
	void *hand_borrower;
};

static void replay_set_step(struct replay *r, enum replay_step st)
{
	if (r->step == st)
		return;
	log_debug("replay: session=%llu step %s -> %s", r->id->session_id,
		  replay_step_names[r->step], replay_step_names[st]);
	r->step = st;
}

static void replay_finish(struct replay *r, bool clean)
{
	if (clean && r->hand_to)
		pool_hand_over(&r->lease, r->hand_to, r->hand_cbs, r->hand_borrower);
	else
		pool_return(&r->lease, clean);
	r->b = NULL;
	/* A 421 is the server closing on sluice, not a verdict on the client:
	 * it never reaches the client as it is (HOSTILE 94). */
	if (r->have_result && r->result.code == 421) {
		r->have_result = false;
		r->local = REPLY_BACKEND_LOST;
	}
	replay_done_fn done = r->done;
	void *arg = r->arg;
	struct smtp_reply *result = NULL;
	static struct smtp_reply copy; /* the loop is single-threaded */
	if (r->have_result) {
		copy = r->result;
		result = &copy;
	}
	enum reply_id local = r->local;
	free(r);
	done(arg, result, local);
}

static void replay_fail(struct replay *r, enum reply_id local)
{
	r->have_result = false;
	r->local = local;
	replay_finish(r, false);
}

static void replay_keep(struct replay *r, const struct smtp_reply *reply)
{
	r->result = *reply;
	r->have_result = true;
}

static void replay_conn_failed(void *arg, enum backend_fault fault,
			       const char *why)
{
	struct replay *r = arg;
	bool protocol = fault == BACKEND_FAULT_PROTOCOL;
	log_warn("replay: session=%llu backend connection %s: %s", r->id->session_id,
		 protocol ? "out of protocol" : "lost", why);
	/* Lost while passing the identity: the identity failed (HOSTILE 28). */
	replay_fail(r, r->step == REPLAY_STEP_IDENTIFY ? REPLY_XCLIENT_FAILED
		       : protocol ? REPLY_BACKEND_PROTOCOL : REPLY_BACKEND_LOST);
}

/* A reply of a class its command cannot have (a 354 to RCPT, a 250 to
 * DATA): the exchange is out of step, and nothing it says may reach the
 * client. The connection is closed. */
static bool replay_out_of_step(struct replay *r, const struct smtp_reply *reply,
			       bool want_354)
{
	int cls = reply->code / 100;
	bool ok = want_354 ? reply->code == 354 || cls == 4 || cls == 5
			   : cls == 2 || cls == 4 || cls == 5;
	if (ok)
		return false;
	log_warn("replay: session=%llu backend reply %d out of step; closing",
		 r->id->session_id, reply->code);
	replay_fail(r, REPLY_BACKEND_PROTOCOL);
	return true;
}

static int replay_send(struct replay *r, const char *line, size_t len,
		       bool ends_group, long timeout_ms, backend_reply_fn fn)
{
	if (len > SMTP_CMD_LINE_MAX - 2) {
		replay_fail(r, REPLY_LOCAL_ERROR);
		return -1;
	}
	if (backend_command(r->b, line, len, ends_group, timeout_ms, fn, r) != 0) {
		/* backend_command failed the connection: failed follows. */
		return -1;
	}
	return 0;
}

/* --- XCLIENT ----------------------------------------------------------- */

size_t replay_xclient_lines(const struct client_identity *id,
			    const char *offered, char lines[][512],
			    size_t max_lines)
{
	/* Order matters: Postfix re-checks authorization against the new
	 * address after each XCLIENT, so NAME and ADDR go in the last one. */
	char attrs[5][300];
	size_t n = 0;
	if (backend_warn_offers(offered, "HELO")) {
		char enc[SMTP_DOMAIN_MAX + 1];
		size_t len = id->helo ? smtp_xtext_encode(id->helo, strlen(id->helo),
							  enc, sizeof enc)
				      : (size_t)-1;
		snprintf(attrs[n++], sizeof attrs[0], "HELO=%s",
			 len == (size_t)-1 || len == 0 ? "[UNAVAILABLE]" : enc);
	}
	if (backend_warn_offers(offered, "PROTO"))
		snprintf(attrs[n++], sizeof attrs[0], "PROTO=%s",
			 id->esmtp ? "ESMTP" : "SMTP");
	if (backend_warn_offers(offered, "PORT"))
		snprintf(attrs[n++], sizeof attrs[0], "PORT=%u", id->port);
	if (backend_warn_offers(offered, "NAME")) {
		const char *name = id->name_status == DNS_NAME_OK && id->name
			? id->name
			: id->name_status == DNS_NAME_TEMPFAIL ? "[TEMPUNAVAIL]"
							      : "[UNAVAILABLE]";
		snprintf(attrs[n++], sizeof attrs[0], "NAME=%s", name);
	}
	if (!backend_warn_offers(offered, "ADDR"))
		return 0; /* without ADDR the server would see sluice itself */
	snprintf(attrs[n++], sizeof attrs[0], "ADDR=%s%s",
		 id->family == AF_INET6 ? "IPV6:" : "", id->addr);

	size_t count = 0, len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t alen = strlen(attrs[i]);
		/* A new line when this attribute does not fit, and always for
		 * the NAME/ADDR pair's line so they travel last and together. */
		if (count == 0 || len + 1 + alen > SMTP_CMD_LINE_MAX - 2) {
			if (count == max_lines)
				return 0;
			len = (size_t)snprintf(lines[count++], 512, "XCLIENT");
		}
		lines[count - 1][len++] = ' ';
		memcpy(lines[count - 1] + len, attrs[i], alen + 1);
		len += alen;
	}
	return count;
}

static void replay_envelope(struct replay *r);
static void replay_rset(struct replay *r);

/* The server knows the client: a lane takes the connection from here
 * (done with REPLY_OK), anything else sends its envelope. */
static void replay_identified(struct replay *r)
{
	if (r->kind == REPLAY_IDENTIFY) {
		r->have_result = false;
		r->local = REPLY_OK;
		replay_finish(r, true);
		return;
	}
	replay_envelope(r);
}
static const struct pool_borrower replay_borrower;

#define REPLAY_FNV_OFFSET 14695981039346656037ULL /* FNV-1a, 64 bits */
#define REPLAY_FNV_PRIME  1099511628211ULL

static unsigned long long replay_fnv(unsigned long long h, const void *p,
				     size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * REPLAY_FNV_PRIME;
	return h;
}

/* The identity as XCLIENT sends it (ADDR, PORT, NAME and its status,
 * HELO, PROTO), as a key: a connection whose server holds the same key
 * needs no new XCLIENT. Not the session id: the client's second EHLO or
 * its STARTTLS changes HELO or PROTO within one session. Never 0 (0 is
 * "no identity"). A collision of two identities is 2^-64 per pair. */
static unsigned long long replay_identity_key(const struct client_identity *id)
{
	unsigned long long h = REPLAY_FNV_OFFSET;
	const char *name = id->name_status == DNS_NAME_OK && id->name ? id->name
								     : "";
	const char *helo = id->helo ? id->helo : "";
	unsigned char fields[3] = { (unsigned char)id->family,
				    (unsigned char)id->name_status,
				    (unsigned char)id->esmtp };
	unsigned port = id->port;

	h = replay_fnv(h, id->addr, strlen(id->addr) + 1);
	h = replay_fnv(h, &port, sizeof port);
	h = replay_fnv(h, fields, sizeof fields);
	h = replay_fnv(h, name, strlen(name) + 1);
	h = replay_fnv(h, helo, strlen(helo) + 1);
	return h ? h : 1;
}

static void replay_ehlo_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (reply->code != 250) {
		/* The server refused the client's HELO name under the client's
		 * identity: that is its access decision, relayed as it is. */
		log_info("replay: session=%llu EHLO after XCLIENT answered %d %.200s",
			 r->id->session_id, reply->code, reply->text);
		replay_keep(r, reply);
		replay_finish(r, false);
		return;
	}
	backend_take_caps(r->b, reply);
	backend_set_identity(r->b, r->key);
	replay_identified(r);
}

/* Whether the client's HELO can go on an EHLO line as it is: printable
 * ASCII, no spaces, within the domain limit. Otherwise the server gets our
 * name on EHLO and the client's (xtext) in XCLIENT HELO= only. */
static bool ehlo_name_usable(const char *helo)
{
	if (!helo || !*helo || strlen(helo) > SMTP_DOMAIN_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)helo; *p; p++)
		if (*p <= ' ' || *p >= 0x7f)
			return false;
	return true;
}

static void replay_xclient_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (reply->code != 220) {
		log_warn("replay: session=%llu XCLIENT refused: %d %s %.200s",
			 r->id->session_id, reply->code, reply->enhanced, reply->text);
		/* 550, 501, 503 and 421 are about sluice's right to send
		 * XCLIENT: a 451 to the client. Any other 4xx/5xx is the
		 * server's connection-level verdict on the client itself
		 * (XCLIENT_README): relayed as this exchange's answer. */
		int c = reply->code;
		if ((c / 100 == 4 || c / 100 == 5) && c != 550 && c != 501 &&
		    c != 503 && c != 421) {
			replay_keep(r, reply);
			replay_finish(r, false);
			return;
		}
		backend_warn_xclient_refused(c, reply->enhanced, reply->text,
					     r->id->family == AF_INET6);
		replay_fail(r, REPLY_XCLIENT_FAILED);
		return;
	}
	if (--r->owed > 0)
		return;
	/* XCLIENT starts a new session on the server, and the EHLO that
	 * follows sets the HELO name it records: it must be the client's own
	 * (HOSTILE 14, 26), or the server's Received header would name us. */
	const char *helo = ehlo_name_usable(r->id->helo) ? r->id->helo
							 : r->cfg->myhostname;
	char line[SMTP_CMD_LINE_MAX];
	int n = snprintf(line, sizeof line, "EHLO %s", helo);
	replay_send(r, line, (size_t)n, true, 0, replay_ehlo_reply);
}

static void replay_identify(struct replay *r)
{
	if (!r->cfg->backend_xclient || backend_identity(r->b) == r->key) {
		replay_identified(r);
		return;
	}
	if (!backend_caps(r->b)->xclient && backend_identity(r->b) != 0 &&
	    r->kind == REPLAY_IDENTIFY) {
		/* A lane never waits for a fresh connection. */
		replay_fail(r, REPLY_BACKEND_BUSY);
		return;
	}
	if (!backend_caps(r->b)->xclient && backend_identity(r->b) != 0 &&
	    !r->fresh_taken) {
		/* Identified for another identity (this client before its new
		 * EHLO or STARTTLS) and no longer offering XCLIENT: it cannot
		 * carry this one. Closed; a fresh connection instead, once. */
		log_info("replay: session=%llu connection holds a stale identity "
			 "and cannot take XCLIENT; taking a fresh one",
			 r->id->session_id);
		r->fresh_taken = true;
		pool_return(&r->lease, false);
		r->b = NULL;
		replay_set_step(r, REPLAY_STEP_LEASE);
		pool_lend(r->pool, &r->lease, r->key, r->cfg->checkout_timeout_ms,
			  &replay_borrower, r);
		return;
	}
	char lines[REPLAY_XCLIENT_LINES][512];
	size_t n = backend_caps(r->b)->xclient
		? replay_xclient_lines(r->id, backend_caps(r->b)->xclient_attrs, lines,
				       REPLAY_XCLIENT_LINES)
		: 0;
	if (n == 0) {
		log_warn("replay: session=%llu mail server does not offer XCLIENT "
			 "(ADDR) to sluice; refusing to relay without it",
			 r->id->session_id);
		backend_warn_seen(BACKEND_PROBLEM_XCLIENT_NOT_OFFERED,
				  backend_caps(r->b)->xclient
					  ? backend_caps(r->b)->xclient_attrs
					  : "no XCLIENT in EHLO");
		replay_fail(r, REPLY_XCLIENT_FAILED);
		return;
	}
	backend_set_identity(r->b, 0); /* unknown until the last XCLIENT is answered */
	replay_set_step(r, REPLAY_STEP_IDENTIFY);
	r->owed = (unsigned)n;
	for (size_t i = 0; i < n; i++)
		if (replay_send(r, lines[i], strlen(lines[i]), true, 0,
				replay_xclient_reply) != 0)
			return;
}

/* --- envelope ---------------------------------------------------------- */

static void replay_rset_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (replay_out_of_step(r, reply, false))
		return;
	replay_finish(r, reply->code == 250);
}

static void replay_rset(struct replay *r)
{
	replay_set_step(r, REPLAY_STEP_RSET);
	replay_send(r, "RSET", 4, false, 0, replay_rset_reply);
}

static void replay_data_reply(void *arg, const struct smtp_reply *reply);
static void replay_bdat(struct replay *r);

static void replay_envelope_done(struct replay *r)
{
	if (r->kind == REPLAY_RCPT)
		return; /* its RSET went out in the same group; its reply ends it */
	if (r->env != REPLAY_ENV_OK) {
		/* What the server accepted at RCPT time it now refuses: the
		 * client gets a 451 and tries again later, never a refusal
		 * sluice cannot stand behind (HOSTILE 35). */
		r->have_result = false;
		r->local = r->env == REPLAY_ENV_MAIL_REFUSED ? REPLY_ENVELOPE_CHANGED
							    : REPLY_RCPT_CHANGED;
		replay_rset(r);
		return;
	}
	if (r->cfg->backend_chunking && backend_caps(r->b)->chunking &&
	    backend_idle(r->b)) {
		replay_bdat(r);
		return;
	}
	replay_set_step(r, REPLAY_STEP_DATA);
	replay_send(r, "DATA", 4, true, 0, replay_data_reply);
}

static void replay_envelope_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (replay_out_of_step(r, reply, false))
		return;
	bool ok = reply->code / 100 == 2;
	if (r->env == REPLAY_ENV_OK || r->kind == REPLAY_RCPT) {
		if (!ok && r->env == REPLAY_ENV_OK) {
			/* The first refusal is the answer the client gets. */
			r->env = REPLAY_ENV_RCPT_REFUSED;
			replay_keep(r, reply);
		} else if (r->env == REPLAY_ENV_OK) {
			replay_keep(r, reply); /* for a check: the RCPT reply */
		}
	}
	if (--r->owed == 0)
		replay_envelope_done(r);
}

static void replay_mail_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (replay_out_of_step(r, reply, false))
		return;
	if (reply->code / 100 != 2) {
		r->env = REPLAY_ENV_MAIL_REFUSED;
		replay_keep(r, reply);
	}
	if (--r->owed == 0)
		replay_envelope_done(r);
}

size_t replay_mail_line(const struct backend_caps *caps, const char *sender,
			const struct smtp_mail_params *pm,
			unsigned long long size, char *line, size_t max)
{
	char sz[32] = "";
	if (size > 0)
		snprintf(sz, sizeof sz, " SIZE=%llu", size);
	int n = snprintf(line, max, "MAIL FROM:<%s>%s%s%s", sender, sz,
			 pm->body == SMTP_BODY_8BITMIME && caps->eightbitmime
				 ? " BODY=8BITMIME" : "",
			 pm->smtputf8 && caps->smtputf8 ? " SMTPUTF8" : "");
	return n < 0 || (size_t)n >= max ? 0 : (size_t)n;
}

static void replay_envelope(struct replay *r)
{
	char line[SMTP_CMD_LINE_MAX + 64];
	const struct smtp_mail_params *pm = r->txn.params;
	unsigned long long size = r->kind == REPLAY_MESSAGE ? r->txn.body_size
			      : pm->size > 0 ? (unsigned long long)pm->size : 0;
	size_t n = replay_mail_line(backend_caps(r->b), r->txn.sender, pm, size, line, sizeof line);
	if (n == 0) {
		replay_fail(r, REPLY_LOCAL_ERROR);
		return;
	}
	size_t n_rcpts = r->kind == REPLAY_RCPT ? 1 : r->txn.n_rcpts;
	replay_set_step(r, REPLAY_STEP_ENVELOPE);
	r->owed = (unsigned)(1 + n_rcpts);
	if (replay_send(r, line, n, false, 0, replay_mail_reply) != 0)
		return;
	for (size_t i = 0; i < n_rcpts; i++) {
		int k = snprintf(line, sizeof line, "RCPT TO:<%s>", r->txn.rcpts[i]);
		if (replay_send(r, line, (size_t)k, false, 0, replay_envelope_reply) != 0)
			return;
	}
	/* A check always ends in RSET, whatever the answers: pipelined with
	 * MAIL and RCPT (RFC 2920 lets RSET follow them), it costs no extra
	 * round trip. */
	if (r->kind == REPLAY_RCPT)
		replay_rset(r);
}

/* --- body -------------------------------------------------------------- */

static void replay_final_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (replay_out_of_step(r, reply, false))
		return;
	/* The server answers "." after it has read it, and its reply's
	 * segment acknowledges everything before: an answer while part of
	 * the message is still unacknowledged was sent before the server saw
	 * the end, so it cannot be the answer (an unsolicited mid-body reply
	 * would otherwise become a 250 for a message never queued). BDAT's
	 * answer is owed from the command on: before the last octet was
	 * even given to the connection it is early all the more. */
	if (r->step != REPLAY_STEP_DOT || backend_unacked(r->b) > 0) {
		log_warn("replay: session=%llu reply %d before the end of data reached the server; "
			 "closing", r->id->session_id, reply->code);
		/* A 421 is the server going away, whenever it comes (as an
		 * unsolicited line, backend.c); anything else is out of step. */
		replay_fail(r, reply->code == 421 ? REPLY_BACKEND_LOST
						  : REPLY_BACKEND_PROTOCOL);
		return;
	}
	replay_keep(r, reply);
	/* After the end-of-data reply the server is ready for a new MAIL. */
	replay_finish(r, true);
}

static void replay_body_next(struct replay *r);

static void replay_body_end(struct replay *r)
{
	if (r->chunking) {
		if (r->octets_left != 0) {
			/* Fewer octets than announced: the server would
			 * wait for the rest. Closing drops the message. */
			log_err("replay: session=%llu message %llu octets short of its BDAT count; "
				"closing", r->id->session_id, r->octets_left);
			replay_fail(r, REPLY_LOCAL_ERROR);
			return;
		}
		replay_set_step(r, REPLAY_STEP_DOT); /* its answer is owed */
		return;
	}
	replay_set_step(r, REPLAY_STEP_DOT);
	/* The body always ends in CR LF (smtp_data), so "." starts a line. */
	replay_send(r, ".", 1, true, r->cfg->backend_data_timeout_ms,
		    replay_final_reply);
}

/* BDAT carries the message octets: the spool's stuffing dots are dropped
 * on the way out, and never more octets than BDAT announced (the server
 * would read the rest as commands). 0, or -1 when the replay failed (it
 * is gone) or the connection did (its failed hook follows). */
static int replay_write_octets(struct replay *r, struct evbuffer *chunk)
{
	size_t len = evbuffer_get_length(chunk);
	/* Contiguous: one spool read (SPOOL_READ_CHUNK) or the in-memory
	 * tail (message_memory_max) at most. */
	const char *in = (const char *)evbuffer_pullup(chunk, -1);
	struct evbuffer *out = evbuffer_new();
	struct evbuffer_iovec v;
	if (!in || !out || evbuffer_reserve_space(out, len, &v, 1) != 1) {
		if (out)
			evbuffer_free(out);
		replay_fail(r, REPLY_LOCAL_ERROR);
		return -1;
	}
	v.iov_len = smtp_data_unstuff(in, len, &r->body_bol, v.iov_base);
	if (v.iov_len > r->octets_left) {
		evbuffer_free(out);
		log_err("replay: session=%llu message longer than its BDAT count; closing",
			r->id->session_id);
		replay_fail(r, REPLY_LOCAL_ERROR);
		return -1;
	}
	r->octets_left -= v.iov_len;
	if (evbuffer_commit_space(out, &v, 1) != 0) {
		evbuffer_free(out);
		replay_fail(r, REPLY_LOCAL_ERROR);
		return -1;
	}
	int rc = backend_write(r->b, out);
	evbuffer_free(out);
	return rc;
}

static void replay_body_chunk(void *arg, int status, struct evbuffer *chunk)
{
	struct replay *r = arg;
	r->body_reading = false;
	if (status != 0) {
		/* The transaction is open on the server: the pool closes the
		 * connection without ".", so nothing is delivered. */
		replay_fail(r, REPLY_LOCAL_ERROR);
		return;
	}
	size_t len = evbuffer_get_length(chunk);
	if (len == 0) {
		replay_body_end(r);
		return;
	}
	if (r->chunking ? replay_write_octets(r, chunk) != 0
			: backend_write(r->b, chunk) != 0)
		return; /* failed, or the lease's failed follows */
	evbuffer_drain(chunk, len);
	r->body_sent += len;
	if (r->body_sent >= r->txn.body_size) {
		/* All of it: the dot goes with the last bytes, in one write,
		 * not after one more read that can only say "the end". */
		replay_body_end(r);
		return;
	}
	if (backend_output_pending(r->b) < REPLAY_BODY_HIGHWAT)
		replay_body_next(r);
}

static void replay_body_next(struct replay *r)
{
	if (r->step != REPLAY_STEP_BODY || r->body_reading)
		return;
	r->body_reading = true;
	spool_read(r->txn.body, replay_body_chunk, r);
}

static void replay_body_drain(void *arg)
{
	replay_body_next(arg);
}

/* Our Received header into hdr (REPLAY_HEADER_MAX bytes): its length, 0
 * with XCLIENT (then the server writes its own) or when it does not fit. */
static size_t replay_received_header(const struct replay *r, char *hdr)
{
	/* Only without XCLIENT: the server cannot know the client, so the
	 * trace of it is ours to write (RFC 5321 4.4). */
	if (r->cfg->backend_xclient)
		return 0;
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	const struct client_identity *id = r->id;
	int n = snprintf(hdr, REPLAY_HEADER_MAX,
			 "Received: from %s (%s [%s])\r\n\tby %s (sluice) with %s;\r\n\t%s\r\n",
			 id->helo ? id->helo : "unknown",
			 id->name_status == DNS_NAME_OK && id->name ? id->name : "unknown",
			 id->addr, r->cfg->myhostname, id->esmtp ? "ESMTP" : "SMTP",
			 date);
	return n > 0 && n < REPLAY_HEADER_MAX ? (size_t)n : 0;
}

/* The body's read first: an in-memory body comes back on this loop turn,
 * its callback queued before the connection's write (which the command,
 * when there is one, queues), so that command, header, body (and dot)
 * leave in one write: one segment, one read for the server. The command
 * and the header still go first: they are in the output now. */
static void replay_body_start(struct replay *r, const char *cmd, size_t cmd_len,
			      backend_reply_fn cmd_reply, const char *hdr,
			      size_t hlen)
{
	replay_set_step(r, REPLAY_STEP_BODY);
	r->body_sent = 0;
	replay_body_next(r);
	if (cmd && replay_send(r, cmd, cmd_len, true, r->cfg->backend_data_timeout_ms,
			       cmd_reply) != 0)
		return;
	if (hlen == 0)
		return;
	struct evbuffer *buf = evbuffer_new();
	if (buf && evbuffer_add(buf, hdr, hlen) == 0)
		backend_write(r->b, buf);
	if (buf)
		evbuffer_free(buf);
}

/* One round trip for the message where DATA takes two: the answer to
 * "BDAT n LAST" is the end-of-data answer. A refusal of it is the
 * server's verdict on the whole message (it has read it), relayed as
 * the answer after "." is. */
static void replay_bdat(struct replay *r)
{
	char hdr[REPLAY_HEADER_MAX], line[64];
	size_t hlen = replay_received_header(r, hdr);
	int n = snprintf(line, sizeof line, "BDAT %llu LAST",
			 (unsigned long long)hlen + r->txn.body_octets);
	r->chunking = true;
	r->body_bol = true;
	r->octets_left = r->txn.body_octets;
	replay_body_start(r, line, (size_t)n, replay_final_reply, hdr, hlen);
}

static void replay_data_reply(void *arg, const struct smtp_reply *reply)
{
	struct replay *r = arg;
	if (replay_out_of_step(r, reply, true))
		return;
	if (reply->code != 354) {
		/* Every recipient was accepted, yet DATA is refused: the
		 * server changed its mind. A 4xx is relayed; a 5xx becomes a
		 * 451, never a bounce sluice cannot stand behind (HOSTILE 92). */
		log_warn("replay: session=%llu DATA refused after accepted recipients: %d %.200s",
			 r->id->session_id, reply->code, reply->text);
		if (reply->code / 100 == 4) {
			replay_keep(r, reply);
		} else {
			r->have_result = false;
			r->local = REPLY_DATA_REFUSED;
		}
		replay_rset(r);
		return;
	}
	char hdr[REPLAY_HEADER_MAX];
	replay_body_start(r, NULL, 0, NULL, hdr, replay_received_header(r, hdr));
}

/* --- start and cancel -------------------------------------------------- */

static void replay_conn_ready(void *arg, struct backend *b, enum reply_id err)
{
	struct replay *r = arg;
	if (!b) {
		replay_fail(r, err);
		return;
	}
	r->b = b;
	replay_identify(r);
}

static const struct pool_borrower replay_borrower = {
	.ready = replay_conn_ready,
	.failed = replay_conn_failed,
	.drained = replay_body_drain,
};

/* A replay of kind, not started; txn may be NULL (IDENTIFY). NULL when
 * out of memory. */
static struct replay *replay_new(struct pool *pool, const struct config *cfg,
				 enum replay_kind kind,
				 const struct client_identity *id,
				 const struct replay_txn *txn,
				 replay_done_fn done, void *arg)
{
	struct replay *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->pool = pool;
	r->cfg = cfg;
	r->kind = kind;
	r->id = id;
	if (txn)
		r->txn = *txn;
	r->done = done;
	r->arg = arg;
	r->key = replay_identity_key(id);
	return r;
}

static struct replay *replay_start(struct pool *pool,
				   const struct config *cfg,
				   enum replay_kind kind,
				   const struct client_identity *id,
				   const struct replay_txn *txn,
				   replay_done_fn done, void *arg)
{
	struct replay *r = replay_new(pool, cfg, kind, id, txn, done, arg);
	if (r)
		pool_lend(r->pool, &r->lease, r->key, r->cfg->checkout_timeout_ms,
			  &replay_borrower, r);
	return r;
}

struct replay *replay_rcpt(struct pool *pool, const struct config *cfg,
			   const struct client_identity *id,
			   const struct replay_txn *txn, replay_done_fn done,
			   void *arg)
{
	return replay_start(pool, cfg, REPLAY_RCPT, id, txn, done, arg);
}

struct replay *replay_message(struct pool *pool, const struct config *cfg,
			      const struct client_identity *id,
			      const struct replay_txn *txn,
			      replay_done_fn done, void *arg)
{
	return replay_start(pool, cfg, REPLAY_MESSAGE, id, txn, done, arg);
}

/* Where the connection goes when this replay is over (a lane's). */
static void replay_hand_to(struct replay *r, struct pool_lease *to,
			   const struct pool_borrower *cbs, void *borrower)
{
	r->hand_to = to;
	r->hand_cbs = cbs;
	r->hand_borrower = borrower;
}

struct replay *replay_identify_lane(struct pool *pool, const struct config *cfg,
				    const struct client_identity *id,
				    unsigned max_long, long wait_ms,
				    struct pool_lease *hand_to,
				    const struct pool_borrower *hand_cbs,
				    void *hand_borrower, replay_done_fn done,
				    void *arg)
{
	struct replay *r = replay_new(pool, cfg, REPLAY_IDENTIFY, id, NULL, done, arg);
	if (!r)
		return NULL;
	replay_hand_to(r, hand_to, hand_cbs, hand_borrower);
	if (!pool_lend_long(pool, &r->lease, r->key, max_long, wait_ms,
			    &replay_borrower, r)) {
		free(r);
		return NULL;
	}
	return r;
}

struct replay *replay_body(struct pool *pool, const struct config *cfg,
			   const struct client_identity *id,
			   const struct replay_txn *txn, struct backend *b,
			   struct pool_lease *from,
			   const struct pool_borrower *hand_cbs,
			   void *hand_borrower, replay_done_fn done, void *arg)
{
	struct replay *r = replay_new(pool, cfg, REPLAY_BODY, id, txn, done, arg);
	if (!r)
		return NULL;
	replay_hand_to(r, from, hand_cbs, hand_borrower);
	pool_hand_over(from, &r->lease, &replay_borrower, r);
	r->b = b;
	replay_set_step(r, REPLAY_STEP_ENVELOPE);
	replay_envelope_done(r); /* the lane's envelope was accepted: DATA */
	return r;
}

/* What an orphaned replay's end needs: the session is gone. */
struct replay_orphan {
	unsigned long long session_id;
	char addr[sizeof ((struct client_identity *)0)->addr];
	size_t n_rcpts;
};

void replay_log_client_gone(unsigned long long session_id, const char *addr,
			    size_t n_rcpts, const struct smtp_reply *reply,
			    enum reply_id local, bool relayed)
{
	if (reply) {
		metrics_inc(METRIC_ORPHAN_ANSWERS);
		log_warn("replay: session=%llu client=%s client gone before the answer: "
			 "server answered %d %s %.200s (nrcpt=%zu; %sthe client will "
			 "retry, a 2xx here means a duplicate)", session_id, addr,
			 reply->code, reply->enhanced, reply->text, n_rcpts,
			 relayed ? "relayed to its half-closed connection; if it no "
				   "longer reads, "
				 : "");
	} else {
		log_warn("replay: session=%llu client=%s client gone before the answer: "
			 "no answer from the server (%d)", session_id, addr,
			 reply_code(local));
	}
}

static void replay_orphan_done(void *arg, const struct smtp_reply *reply,
			       enum reply_id local)
{
	struct replay_orphan *o = arg;

	replay_log_client_gone(o->session_id, o->addr, o->n_rcpts, reply, local,
			       false);
	free(o);
}

/* Once any byte of the final dot has left, the server may queue the
 * message whatever the client does: the replay keeps what it needs (its
 * own copy of the identity; the envelope and the body are no longer read)
 * and runs to the server's answer, which is logged and counted. False
 * when out of memory (then it is cancelled as before). */
static bool replay_orphan(struct replay *r)
{
	struct replay_orphan *o = calloc(1, sizeof *o);

	if (!o)
		return false;
	o->session_id = r->id->session_id;
	snprintf(o->addr, sizeof o->addr, "%s", r->id->addr);
	o->n_rcpts = r->txn.n_rcpts;
	r->own_id = *r->id;
	r->own_id.name = NULL;
	r->own_id.helo = NULL;
	r->id = &r->own_id;
	r->txn = (struct replay_txn){ .n_rcpts = o->n_rcpts };
	r->done = replay_orphan_done;
	r->arg = o;
	r->hand_to = NULL; /* its lane is gone with the session */
	return true;
}

bool replay_committed(const struct replay *r)
{
	/* The dot (".\r\n") is the last thing written: fewer bytes than
	 * that still in our buffer means part of it has left. BDAT's end is
	 * its last octet: nothing left in our buffer. */
	return r->step == REPLAY_STEP_DOT && r->b &&
	       backend_output_pending(r->b) < (r->chunking ? 1 : REPLAY_DOT_LEN);
}

void replay_cancel(struct replay *r)
{
	if (!r)
		return;
	if (replay_committed(r) && replay_orphan(r))
		return;
	pool_return(&r->lease, false);
	free(r);
}
