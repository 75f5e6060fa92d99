/*
 * session_cmd: the command table and the handlers of the SMTP dialogue.
 *
 * The table is the one place that says which command is legal in which
 * state and which commands end a pipelining group (RFC 2920 3.1: EHLO,
 * HELO, DATA, STARTTLS, QUIT). Commands that sluice never passes on
 * (XCLIENT, XFORWARD, AUTH, ETRN, ...) are refused here, so no client text
 * can reach the server as a command of its own.
 *
 * RCPT is the only command answered by the mail server: the handler starts
 * a recipient check (replay_rcpt) and the session stays busy until the
 * server's reply has been relayed.
 */
#include "session_priv.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "client_limits.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

#define ST(x) (1u << SESSION_##x)
#define ST_ANY (ST(INIT) | ST(READY) | ST(MAIL) | ST(RCPT))

enum {
	CMD_ENDS_GROUP = 1 << 0,  /* nothing may be pipelined after it */
	CMD_TRANSACTION = 1 << 1, /* refused in reject mode */
	CMD_JUNK = 1 << 2,        /* counted against SESSION_JUNK_LIMIT */
};

/* As Postfix's smtpd_junk_command_limit: past it, each NOOP, RSET, VRFY
 * or HELP also counts as an error, so a client that idles with junk still
 * meets smtpd_hard_error_limit. */
#define SESSION_JUNK_LIMIT 100

typedef void (*cmd_fn)(struct session *s, const struct smtp_cmd *cmd);

struct cmd_def {
	enum smtp_verb verb;
	unsigned states;  /* where it runs; elsewhere: the state's refusal */
	unsigned flags;
	cmd_fn fn;
};

static void cmd_helo(struct session *s, const struct smtp_cmd *cmd);
static void cmd_mail(struct session *s, const struct smtp_cmd *cmd);
static void cmd_rcpt(struct session *s, const struct smtp_cmd *cmd);
static void cmd_data(struct session *s, const struct smtp_cmd *cmd);
static void cmd_rset(struct session *s, const struct smtp_cmd *cmd);
static void cmd_noop(struct session *s, const struct smtp_cmd *cmd);
static void cmd_quit(struct session *s, const struct smtp_cmd *cmd);
static void cmd_vrfy(struct session *s, const struct smtp_cmd *cmd);
static void cmd_help(struct session *s, const struct smtp_cmd *cmd);
static void cmd_starttls(struct session *s, const struct smtp_cmd *cmd);
static void cmd_refused(struct session *s, const struct smtp_cmd *cmd);
static void cmd_unknown(struct session *s, const struct smtp_cmd *cmd);
static void cmd_forbidden(struct session *s, const struct smtp_cmd *cmd);

static const struct cmd_def cmd_table[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = {SMTP_VERB_HELO, ST_ANY, CMD_ENDS_GROUP, cmd_helo},
	[SMTP_VERB_EHLO] = {SMTP_VERB_EHLO, ST_ANY, CMD_ENDS_GROUP, cmd_helo},
	[SMTP_VERB_MAIL] = {SMTP_VERB_MAIL, ST(READY), CMD_TRANSACTION, cmd_mail},
	[SMTP_VERB_RCPT] = {SMTP_VERB_RCPT, ST(MAIL) | ST(RCPT), CMD_TRANSACTION, cmd_rcpt},
	[SMTP_VERB_DATA] = {SMTP_VERB_DATA, ST(RCPT), CMD_ENDS_GROUP | CMD_TRANSACTION, cmd_data},
	[SMTP_VERB_RSET] = {SMTP_VERB_RSET, ST_ANY, CMD_JUNK, cmd_rset},
	[SMTP_VERB_NOOP] = {SMTP_VERB_NOOP, ST_ANY, CMD_JUNK, cmd_noop},
	[SMTP_VERB_QUIT] = {SMTP_VERB_QUIT, ST_ANY, CMD_ENDS_GROUP, cmd_quit},
	[SMTP_VERB_VRFY] = {SMTP_VERB_VRFY, ST_ANY, CMD_JUNK, cmd_vrfy},
	[SMTP_VERB_HELP] = {SMTP_VERB_HELP, ST_ANY, CMD_JUNK, cmd_help},
	/* Ends a group, but what follows it is discarded (session_tls), as
	 * Postfix does, rather than refused: the TLS client then goes on. */
	[SMTP_VERB_STARTTLS] = {SMTP_VERB_STARTTLS, ST_ANY, 0, cmd_starttls},
	[SMTP_VERB_EXPN] = {SMTP_VERB_EXPN, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_XCLIENT] = {SMTP_VERB_XCLIENT, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_XFORWARD] = {SMTP_VERB_XFORWARD, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_AUTH] = {SMTP_VERB_AUTH, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_ETRN] = {SMTP_VERB_ETRN, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_BDAT] = {SMTP_VERB_BDAT, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_TURN] = {SMTP_VERB_TURN, ST_ANY, 0, cmd_refused},
	[SMTP_VERB_PROXY] = {SMTP_VERB_PROXY, ST_ANY, 0, cmd_unknown},
	[SMTP_VERB_UNKNOWN] = {SMTP_VERB_UNKNOWN, ST_ANY, 0, cmd_unknown},
	[SMTP_VERB_HTTP] = {SMTP_VERB_HTTP, ST_ANY, 0, cmd_forbidden},
};

/* The refusal for a command outside its states. */
static enum reply_id cmd_wrong_state(const struct session *s, enum smtp_verb v)
{
	switch (v) {
	case SMTP_VERB_MAIL:
		return s->state == SESSION_INIT ? REPLY_NEED_HELO : REPLY_NESTED_MAIL;
	case SMTP_VERB_RCPT:
		return s->state == SESSION_INIT ? REPLY_NEED_HELO : REPLY_NEED_MAIL;
	case SMTP_VERB_DATA:
		if (s->state == SESSION_INIT)
			return REPLY_NEED_HELO;
		if (s->state == SESSION_MAIL && s->txn && s->txn->rcpts_tried > 0)
			return REPLY_NO_VALID_RCPT;
		return s->state == SESSION_MAIL ? REPLY_NEED_RCPT : REPLY_NEED_MAIL;
	default:
		return REPLY_BAD_SYNTAX;
	}
}

/* "Subject: x" sent as a command: a client that never waited for 354
 * (or a web client); refused as non-SMTP, as Postfix's
 * smtpd_forbidden_commands does. */
static bool looks_like_header(const char *line, size_t len)
{
	for (size_t i = 0; i < len && line[i] != ' '; i++)
		if (line[i] == ':')
			return i > 0 && i + 1 < len && line[i + 1] == ' ';
	return false;
}

static void session_cmd_run(struct session *s, const char *line, size_t len);

/* A fast lane's wait for the client ends with the command and starts
 * again after it (session_lane.c), whichever way the command ends. */
void session_cmd_line(struct session *s, const char *line, size_t len)
{
	session_lane_command(s);
	session_cmd_run(s, line, len);
	session_lane_arm(s);
}

static void session_cmd_run(struct session *s, const char *line, size_t len)
{
	if (++s->commands > s->env->cfg->command_limit) {
		metrics_inc(METRIC_LIMIT_COMMANDS);
		log_warn("session=%llu client=%s command_limit reached", s->ident.session_id,
			 s->ident.addr);
		session_reply(s, REPLY_TOO_MANY_COMMANDS);
		session_close(s, "too many commands");
		return;
	}
	struct smtp_cmd cmd;
	enum smtp_parse_status st = smtp_cmd_parse(line, len, &cmd);
	if (st != SMTP_PARSE_OK) {
		session_reply(s, st == SMTP_PARSE_TOO_LONG ? REPLY_TOO_LONG : REPLY_BAD_SYNTAX);
		session_error(s);
		return;
	}
	const struct cmd_def *def = &cmd_table[cmd.verb];
	if (!def->fn)
		def = &cmd_table[SMTP_VERB_UNKNOWN];
	if (cmd.verb == SMTP_VERB_UNKNOWN && looks_like_header(line, len))
		def = &cmd_table[SMTP_VERB_HTTP];
	/* RFC 2920: a client may pipeline only after EHLO offered it, and
	 * never past a command that ends a group. A client that does is a
	 * bot or a smuggling attempt: data sent before 354 must never run as
	 * commands (HOSTILE 51, 52). Whether more follows is asked last:
	 * no reply has left yet, so what arrived meanwhile was pipelined. */
	if (((def->flags & CMD_ENDS_GROUP && cmd.verb != SMTP_VERB_QUIT) ||
	     (!s->esmtp && s->state != SESSION_INIT)) && session_more_input(s)) {
		session_signal(s, SIGNAL_PIPELINING, smtp_verb_name(cmd.verb));
		session_reply(s, REPLY_SYNC_ERROR);
		session_close(s, "pipelining violation");
		return;
	}
	if (!(def->states & (1u << s->state))) {
		session_reply(s, cmd_wrong_state(s, cmd.verb));
		session_error(s);
		return;
	}
	if (s->reject_mode && def->flags & CMD_TRANSACTION) {
		/* reject_threshold: the client is refused, but only after its
		 * shaped greeting and at the envelope, so the refusal is logged
		 * with the sender and the recipient it tried (as postscreen's
		 * "enforce" does). */
		char arg[120];
		log_escape(arg, sizeof arg, cmd.arg, cmd.arg_len);
		log_info("session=%llu client=%s REJECT %s %s", s->ident.session_id,
			 s->ident.addr, smtp_verb_name(cmd.verb), arg);
		session_reply(s, REPLY_REJECTED);
		return;
	}
	def->fn(s, &cmd);
	if (def->flags & CMD_JUNK && ++s->junk > SESSION_JUNK_LIMIT &&
	    s->state != SESSION_CLOSING)
		session_error(s);
}

/* --- handlers ---------------------------------------------------------- */

static void session_reset_txn(struct session *s)
{
	session_txn_free(s);
	if (s->state != SESSION_INIT && s->state != SESSION_GREETING)
		session_set_state(s, SESSION_READY);
}

static void cmd_helo(struct session *s, const struct smtp_cmd *cmd)
{
	bool ehlo = cmd->verb == SMTP_VERB_EHLO;
	size_t name_len = 0;
	if (smtp_helo_parse(cmd->arg, cmd->arg_len, &name_len) != SMTP_PARSE_OK) {
		session_reply(s, ehlo ? REPLY_EHLO_SYNTAX : REPLY_HELO_SYNTAX);
		session_error(s);
		return;
	}
	char *helo = session_mem_strndup(cmd->arg, name_len);
	if (!helo) {
		session_reply(s, REPLY_RESOURCES);
		session_close(s, "out of memory");
		return;
	}
	session_lane_end(s); /* its identity is about to change */
	session_mem_strfree(s->helo);
	s->helo = helo;
	s->ident.helo = helo;
	s->esmtp = ehlo;
	s->ident.esmtp = ehlo;
	session_txn_free(s);
	session_set_state(s, SESSION_READY);
	session_shape_helo(s);
	if (!ehlo) {
		char line[300];
		int n = snprintf(line, sizeof line, "250 %s\r\n", s->env->cfg->myhostname);
		if (bufferevent_write(s->bev, line, (size_t)n) != 0) {
			session_close(s, "write failed");
			return;
		}
		session_count_reply(s, 250, (size_t)n);
		return;
	}
	session_cmd_ehlo_reply(s);
}

void session_cmd_ehlo_reply(struct session *s)
{
	const struct config *cfg = s->env->cfg;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t before = evbuffer_get_length(out);
	evbuffer_add_printf(out, "250-%s\r\n250-PIPELINING\r\n", cfg->myhostname);
	evbuffer_add_printf(out, "250-SIZE %llu\r\n", pool_size_limit(s->env->pool));
	if (s->env->tls_server && !s->tls)
		evbuffer_add_printf(out, "250-STARTTLS\r\n");
	evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n");
	if (pool_backend_smtputf8(s->env->pool))
		evbuffer_add_printf(out, "250-SMTPUTF8\r\n");
	evbuffer_add_printf(out, "250 8BITMIME\r\n");
	session_count_reply(s, 250, evbuffer_get_length(out) - before);
}

static enum reply_id mail_parse_reply(enum smtp_parse_status st, bool rcpt)
{
	switch (st) {
	case SMTP_PARSE_BAD_ADDRESS:
		return rcpt ? REPLY_BAD_RCPT_ADDRESS : REPLY_BAD_ADDRESS;
	case SMTP_PARSE_UNKNOWN_PARAM:
		return REPLY_UNKNOWN_PARAM;
	case SMTP_PARSE_BAD_PARAM:
		return REPLY_BAD_PARAM;
	case SMTP_PARSE_NON_ASCII:
		return REPLY_NEED_SMTPUTF8;
	case SMTP_PARSE_TOO_LONG:
		return rcpt ? REPLY_RCPT_TOO_LONG : REPLY_SENDER_TOO_LONG;
	case SMTP_PARSE_BAD_UTF8:
		return REPLY_BAD_UTF8;
	case SMTP_PARSE_BAD_CHAR:
		return REPLY_BAD_SYNTAX;
	default:
		return rcpt ? REPLY_RCPT_SYNTAX : REPLY_MAIL_SYNTAX;
	}
}

/* MAIL's answer: the server's, on a lane, or sluice's own at once. */
static void mail_answer(struct session *s)
{
	if (session_lane_mail(s))
		return;
	session_reply(s, REPLY_MAIL_OK);
	if (s->wait != SESSION_WAIT_NONE) /* after the PTR result */
		session_wait_for(s, SESSION_WAIT_NONE);
}

static void cmd_mail(struct session *s, const struct smtp_cmd *cmd)
{
	char path[SMTP_PATH_MAX + 1];
	struct smtp_mail_params params;
	enum smtp_parse_status st =
		smtp_mail_parse(cmd->arg, cmd->arg_len, path, sizeof path, &params);
	if (st != SMTP_PARSE_OK) {
		/* A SIZE that is not a number has its own wording. */
		enum reply_id id = mail_parse_reply(st, false);
		if (st == SMTP_PARSE_BAD_PARAM && memmem(cmd->arg, cmd->arg_len, "SIZE=", 5))
			id = REPLY_BAD_SIZE;
		session_reply(s, id);
		session_error(s);
		return;
	}
	if (params.smtputf8 && !pool_backend_smtputf8(s->env->pool)) {
		session_reply(s, REPLY_UNKNOWN_PARAM);
		session_error(s);
		return;
	}
	const unsigned long long limit = pool_size_limit(s->env->pool);
	if (limit && params.size > 0 && (unsigned long long)params.size > limit) {
		session_reply(s, REPLY_SIZE_EXCEEDED);
		return;
	}
	struct txn *t = calloc(1, sizeof *t);
	if (!t || !(t->sender = strdup(path))) {
		free(t);
		session_reply(s, REPLY_MEMORY_FULL);
		return;
	}
	t->params = params;
	t->mail_kept_up = session_lane_keeps_up(s);
	s->txn = t;
	session_set_state(s, SESSION_MAIL);
	if (session_lane_awaits_identity(s) && !session_identity_ready(s, mail_answer))
		return; /* answered once the PTR result is in */
	mail_answer(s);
}

static void rcpt_checked(void *arg, const struct smtp_reply *reply, enum reply_id local)
{
	struct session *s = arg;
	s->replay = NULL;
	session_cmd_rcpt_answer(s, reply, local);
	session_lane_checked(s);
}

/* The answer to the pending RCPT: the server's (a check or a fast lane),
 * or sluice's own (local) when reply is NULL. */
void session_cmd_rcpt_answer(struct session *s, const struct smtp_reply *reply,
			     enum reply_id local)
{
	struct txn *t = s->txn;
	int code = reply ? reply->code : reply_code(local);
	t->rcpts_tried++;
	if (code / 100 == 2) {
		if (t->n_rcpts == t->cap_rcpts) {
			size_t cap = t->cap_rcpts ? t->cap_rcpts * 2 : 4;
			char **r = realloc(t->rcpts, cap * sizeof *r);
			if (!r) {
				session_reply(s, REPLY_MEMORY_FULL);
				free(t->pending_rcpt);
				t->pending_rcpt = NULL;
				session_wait_for(s, SESSION_WAIT_NONE);
				return;
			}
			t->rcpts = r;
			t->cap_rcpts = cap;
		}
		t->rcpts[t->n_rcpts++] = t->pending_rcpt;
		t->pending_rcpt = NULL;
		s->rcpt_accepted++;
		metrics_inc(METRIC_RECIPIENTS_ACCEPTED);
		session_set_state(s, SESSION_RCPT);
	} else {
		char rc[120];
		log_escape(rc, sizeof rc, t->pending_rcpt, strlen(t->pending_rcpt));
		log_info("session=%llu client=%s RCPT <%s> refused: %d %s",
			 s->ident.session_id, s->ident.addr, rc, code,
			 reply ? reply->enhanced : "local");
		free(t->pending_rcpt);
		t->pending_rcpt = NULL;
		s->rcpt_refused++;
		metrics_inc(METRIC_RECIPIENTS_REFUSED);
	}
	session_shape_rcpt(s, code, reply ? reply->enhanced : "");
	if (reply)
		session_reply_relay(s, reply);
	else
		session_reply(s, local);
	session_wait_for(s, SESSION_WAIT_NONE);
}

static void rcpt_start(struct session *s)
{
	struct txn *t = s->txn;
	struct replay_txn rt = {
		.sender = t->sender,
		.params = &t->params,
		.rcpts = &t->pending_rcpt,
		.n_rcpts = 1,
	};
	s->replay = replay_rcpt(s->env->pool, s->env->cfg, &s->ident, &rt,
				rcpt_checked, s);
	if (!s->replay) {
		free(t->pending_rcpt);
		t->pending_rcpt = NULL;
		session_reply(s, REPLY_MEMORY_FULL);
		session_wait_for(s, SESSION_WAIT_NONE);
	}
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
	struct txn *t = s->txn;
	char path[SMTP_PATH_MAX + 1];
	enum smtp_parse_status st = smtp_rcpt_parse(cmd->arg, cmd->arg_len, path,
						    sizeof path, t->params.smtputf8);
	if (st != SMTP_PARSE_OK) {
		session_reply(s, mail_parse_reply(st, true));
		session_error(s);
		return;
	}
	if (t->n_rcpts >= s->env->cfg->max_recipients) {
		session_reply(s, REPLY_TOO_MANY_RCPTS);
		return;
	}
	if (!(t->pending_rcpt = strdup(path))) {
		session_reply(s, REPLY_MEMORY_FULL);
		return;
	}
	session_wait_for(s, SESSION_WAIT_REPLAY);
	if (session_lane_rcpt(s))
		return;
	session_cmd_rcpt_check(s);
}

/* The pending RCPT checked the buffered way (replay_rcpt). */
void session_cmd_rcpt_check(struct session *s)
{
	if (session_identity_ready(s, rcpt_start))
		rcpt_start(s);
}

static void cmd_data(struct session *s, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len) {
		session_reply(s, REPLY_BAD_SYNTAX);
		session_error(s);
		return;
	}
	session_data_begin(s);
}

static void cmd_rset(struct session *s, const struct smtp_cmd *cmd)
{
	session_lane_rset(s);
	session_reset_txn(s);
	session_reply(s, REPLY_OK);
}

static void cmd_noop(struct session *s, const struct smtp_cmd *cmd)
{
	session_reply(s, REPLY_OK);
}

static void cmd_quit(struct session *s, const struct smtp_cmd *cmd)
{
	session_lane_end(s);
	session_reply(s, REPLY_BYE);
	session_close(s, "quit");
}

static void cmd_vrfy(struct session *s, const struct smtp_cmd *cmd)
{
	session_reply(s, REPLY_VRFY);
}

static void cmd_help(struct session *s, const struct smtp_cmd *cmd)
{
	session_reply(s, REPLY_HELP);
}

static void cmd_starttls(struct session *s, const struct smtp_cmd *cmd)
{
	if (!s->env->tls_server) {
		session_reply(s, REPLY_TLS_NOT_OFFERED);
		session_error(s);
		return;
	}
	if (s->tls) {
		session_reply(s, REPLY_TLS_ACTIVE);
		session_error(s);
		return;
	}
	if (cmd->arg_len) {
		session_reply(s, REPLY_STARTTLS_SYNTAX);
		session_error(s);
		return;
	}
	unsigned limit = s->env->cfg->tls_session_rate_limit;
	if (limit && client_limits_tls_rate(&s->peer.sa,
					    s->env->cfg->ipv6_client_prefix) > limit) {
		metrics_inc(METRIC_LIMIT_TLS_RATE);
		log_warn("session=%llu client=%s too many new TLS sessions (tls_session_rate_limit=%u)",
			 s->ident.session_id, s->ident.addr, limit);
		session_reply(s, REPLY_TLS_RATE);
		return;
	}
	session_lane_end(s);
	session_tls_start(s);
}

static void cmd_refused(struct session *s, const struct smtp_cmd *cmd)
{
	metrics_inc(METRIC_REFUSED_COMMANDS);
	log_warn("session=%llu client=%s refused command %s", s->ident.session_id,
		 s->ident.addr, smtp_verb_name(cmd->verb));
	session_reply(s, REPLY_NOT_IMPLEMENTED);
	session_error(s);
}

static void cmd_forbidden(struct session *s, const struct smtp_cmd *cmd)
{
	metrics_inc(METRIC_REFUSED_COMMANDS);
	session_signal(s, SIGNAL_NONSMTP, smtp_verb_name(cmd->verb));
	session_reply(s, REPLY_FORBIDDEN_COMMAND);
	session_close(s, "non-SMTP command");
}

static void cmd_unknown(struct session *s, const struct smtp_cmd *cmd)
{
	metrics_inc(METRIC_REFUSED_COMMANDS);
	session_reply(s, REPLY_UNKNOWN_COMMAND);
	session_error(s);
}
