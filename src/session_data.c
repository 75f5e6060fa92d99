/*
 * session_data: the DATA phase and the end-of-data replay.
 *
 * The body is read at full speed whatever else is true of the session:
 * a sender's socket buffer swallows the whole body at once and its clock
 * after the final dot is about ten minutes, so a slow read here would only
 * fail legitimate mail. smtp_data turns the client's bytes into canonical
 * wire form; the spool keeps them (memory, then disk through the workers).
 *
 * End of data: the client gets 250 only after the mail server answered 250
 * to the replayed transaction, with the server's own text; every failure
 * on the way is a 4xx so that the client retries (no mail is lost).
 */
#include "session_priv.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "lane.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "spool.h"

#define DATA_FEED_MAX 16384

static void data_end(struct session *s);

void session_data_begin(struct session *s)
{
	struct txn *t = s->txn;
	const struct config *cfg = s->env->cfg;
	if (cfg->memory_limit && s->env->spool->memory_buffered >= cfg->memory_limit) {
		metrics_inc(METRIC_MEMORY_LIMIT_HITS);
		log_warn("session=%llu client=%s DATA refused: memory cap %llu reached",
			 s->ident.session_id, s->ident.addr, cfg->memory_limit);
		session_reply(s, REPLY_MEMORY_FULL);
		return;
	}
	t->body = spool_new(s->env->spool,
			    s->ident.session_id * SESSION_TXN_ID_SPAN +
				    s->transactions % SESSION_TXN_ID_SPAN);
	if (!t->body) {
		session_reply(s, REPLY_MEMORY_FULL);
		return;
	}
	smtp_data_init(&t->data, cfg->bare_newline == CONFIG_BARE_REJECT
					 ? SMTP_BARE_REJECT : SMTP_BARE_NORMALIZE,
		       pool_size_limit(s->env->pool));
	session_set_state(s, SESSION_DATA);
	session_reply(s, REPLY_DATA_GO);
	session_shape_body(s, true);
}

/* Feeds what has arrived; false when more input is needed or the session
 * went busy. */
bool session_data_input(struct session *s)
{
	struct txn *t = s->txn;
	struct evbuffer *in = bufferevent_get_input(s->bev);
	static char out[SMTP_DATA_OUT_MAX(DATA_FEED_MAX)];
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, DATA_FEED_MAX, NULL, &v, 1) < 1)
			return false;
		size_t len = v.iov_len < DATA_FEED_MAX ? v.iov_len : DATA_FEED_MAX;
		size_t out_len = 0;
		size_t used = smtp_data_feed(&t->data, v.iov_base, len, out, &out_len);
		evbuffer_drain(in, used);
		s->bytes_in += used;
		/* memory_limit holds on every append, not only at DATA: while
		 * a spill is pending a message grows in memory, and many at
		 * once would pass the cap. It may be passed by one feed (at
		 * most SMTP_DATA_OUT_MAX(DATA_FEED_MAX) bytes) per session. */
		if (out_len && !t->data_error && s->env->cfg->memory_limit &&
		    s->env->spool->memory_buffered >= s->env->cfg->memory_limit) {
			t->data_error = true;
			t->memory_full = true;
			metrics_inc(METRIC_MEMORY_LIMIT_HITS);
			log_warn("session=%llu client=%s message refused: memory cap %llu "
				 "reached during DATA", s->ident.session_id, s->ident.addr,
				 s->env->cfg->memory_limit);
		}
		if (out_len && !t->data_error && spool_append(t->body, out, out_len) != 0) {
			/* Keep reading to the end so the dialogue stays in step. */
			t->data_error = true;
			log_warn("session=%llu client=%s cannot hold message: spool failure",
				 s->ident.session_id, s->ident.addr);
		}
		if (t->data.done) {
			data_end(s);
			return s->wait == SESSION_WAIT_NONE && s->state != SESSION_CLOSING;
		}
	}
	return false;
}

static void data_finish_txn(struct session *s)
{
	session_txn_free(s);
	session_set_state(s, SESSION_READY);
}

static void data_replayed(void *arg, const struct smtp_reply *reply, enum reply_id local)
{
	struct session *s = arg;
	s->replay = NULL;
	int code = reply ? reply->code : reply_code(local);
	struct txn *t = s->txn;
	if (code / 100 == 2) {
		s->transactions++;
		metrics_inc(METRIC_TRANSACTIONS);
	} else {
		metrics_inc(METRIC_TRANSACTIONS_FAILED);
	}
	if (t->lane_rcpts && !reply && local == REPLY_RCPT_CHANGED)
		metrics_inc(METRIC_LANE_FALLBACK_REFUSED);
	/* The client's answer first, then the bookkeeping and the log line:
	 * nothing slow between the server's 250 and ours (HOSTILE 106). */
	if (reply)
		session_reply_relay(s, reply);
	else
		session_reply(s, local);
	if (s->client_eof) /* it closed once the message had left */
		replay_log_client_gone(s->ident.session_id, s->ident.addr, t->n_rcpts,
				       reply, local, true);
	session_shape_answered(s); /* before the queued reply is written */
	session_shape_delivered(s, code, reply ? reply->enhanced : "");
	char sender[120], text[200];
	log_escape(sender, sizeof sender, t->sender, strlen(t->sender));
	if (reply)
		log_escape(text, sizeof text, reply->text, reply->text_len);
	else
		snprintf(text, sizeof text, "sluice: %d", code);
	log_info("session=%llu client=%s from=<%s> nrcpt=%zu size=%llu status=%s "
		 "reply=\"%d %s %s\"",
		 s->ident.session_id, s->ident.addr, sender, t->n_rcpts,
		 spool_size(t->body),
		 code / 100 == 2 ? "sent" : code / 100 == 4 ? "deferred" : "bounced",
		 code, reply ? reply->enhanced : "", text);
	data_finish_txn(s);
	if (s->env->draining) {
		session_reply(s, REPLY_SHUTDOWN);
		session_close(s, "shutting down");
		return;
	}
	session_wait_for(s, SESSION_WAIT_NONE);
	session_lane_arm(s); /* a lane kept waits for the next MAIL */
}

static void data_replay_start(struct session *s)
{
	struct txn *t = s->txn;
	struct lane *lane = session_lane_for_message(s);
	struct replay_txn rt = {
		.sender = t->sender,
		.params = &t->params,
		.rcpts = t->rcpts,
		.n_rcpts = t->n_rcpts,
		.body = t->body,
		.body_size = spool_size(t->body),
		.body_octets = spool_size(t->body) - t->data.stuffed,
	};
	/* On a fast lane the server has the envelope already: DATA and the
	 * body go on it. */
	s->replay = lane ? lane_message(lane, &rt, data_replayed, s)
			 : replay_message(s->env->pool, s->env->cfg, &s->ident, &rt,
					  data_replayed, s);
	if (!s->replay) {
		session_reply(s, REPLY_LOCAL_ERROR);
		data_finish_txn(s);
		session_wait_for(s, SESSION_WAIT_NONE);
	}
}

void session_data_early_close(struct session *s)
{
	metrics_inc(METRIC_EARLY_CLOSE);
	log_info("session=%llu client=%s EARLYCLOSE: client closed before its "
		 "end-of-data reply; message not delivered",
		 s->ident.session_id, s->ident.addr);
	session_shape_early_close(s);
	session_close(s, "closed before end-of-data reply");
}

/* The message is complete and its end-of-data reply is due (after the
 * hold, for a shaped session): replay it unless the client has gone. */
static void data_release(struct session *s)
{
	if (session_shape_client_gone(s)) {
		session_data_early_close(s);
		return;
	}
	session_set_wait(s, SESSION_WAIT_REPLAY);
	if (session_identity_ready(s, data_replay_start))
		data_replay_start(s);
}

static void data_spooled(void *arg, int status, struct evbuffer *chunk)
{
	struct session *s = arg;
	if (status != 0) {
		log_warn("session=%llu client=%s spool write failed", s->ident.session_id,
			 s->ident.addr);
		session_reply(s, REPLY_LOCAL_ERROR);
		data_finish_txn(s);
		session_wait_for(s, SESSION_WAIT_NONE);
		return;
	}
	if (session_shape_hold(s, data_release))
		session_set_wait(s, SESSION_WAIT_HOLD);
	else
		data_release(s);
}

static void data_end(struct session *s)
{
	struct txn *t = s->txn;
	enum reply_id refuse = REPLY_OK;
	if (t->data.bare_lf || t->data.bare_cr) {
		metrics_inc(METRIC_BARE_NEWLINES);
		session_signal(s, SIGNAL_BARENEWLINE, t->data.bare_cr ? "CR in data" : "LF in data");
	}
	session_shape_body(s, false);
	if (t->data.bare_cr || (t->data.bare_lf && t->data.mode == SMTP_BARE_REJECT))
		refuse = REPLY_BARE_NEWLINE_DATA;
	else if (t->data.too_big)
		refuse = REPLY_MESSAGE_TOO_BIG;
	else if (t->data_error)
		refuse = t->memory_full ||
				 s->env->spool->memory_buffered >= s->env->cfg->memory_limit
			? REPLY_MEMORY_FULL : REPLY_LOCAL_ERROR;
	if (refuse != REPLY_OK) {
		log_info("session=%llu client=%s message refused: %d%s%s",
			 s->ident.session_id, s->ident.addr, reply_code(refuse),
			 t->data.bare_cr ? " bare CR" : "",
			 t->data.bare_lf ? " bare LF" : "");
		session_reply(s, refuse);
		data_finish_txn(s);
		return;
	}
	session_set_state(s, SESSION_RCPT);
	session_wait_for(s, SESSION_WAIT_SPOOL);
	spool_finish(t->body, data_spooled, s);
}
