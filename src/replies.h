/*
 * replies: the catalogue of every reply sluice writes itself. Wording
 * follows Postfix's smtpd so administrators recognise it; codes and
 * enhanced codes per RFC 5321 and RFC 3463. Replies relayed from the
 * backend do not come from here.
 */
#ifndef SLUICE_REPLIES_H
#define SLUICE_REPLIES_H

#include <stddef.h>

/* X(ID, code, "enhanced", "text"). "%H" in text is replaced by myhostname,
 * "%C" by the client's address. */
#define REPLIES(X)                                                             \
	X(GREETING, 220, "", "%H ESMTP")                                       \
	X(BYE, 221, "2.0.0", "Bye")                                            \
	X(OK, 250, "2.0.0", "Ok")                                              \
	X(MAIL_OK, 250, "2.1.0", "Ok")                                         \
	X(DATA_GO, 354, "", "End data with <CR><LF>.<CR><LF>")                 \
	X(VRFY, 252, "2.0.0", "Send some mail, I'll try my best")              \
	X(HELP, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS") \
	X(TLS_GO, 220, "2.0.0", "Ready to start TLS")                          \
	X(TLS_NOT_OFFERED, 502, "5.5.1", "Error: command not implemented")     \
	X(TLS_ACTIVE, 554, "5.5.1", "Error: TLS already active")               \
	X(STARTTLS_SYNTAX, 501, "5.5.4", "Syntax: STARTTLS")                   \
	X(TLS_LOCAL_PROBLEM, 454, "4.7.0", "TLS not available due to local problem") \
	X(TLS_RATE, 454, "4.7.0", "Error: too many new TLS sessions from %C") \
	X(NOT_IMPLEMENTED, 502, "5.5.1", "Error: command not implemented")     \
	X(UNKNOWN_COMMAND, 500, "5.5.2", "Error: command not recognized")      \
	X(BAD_SYNTAX, 500, "5.5.2", "Error: bad syntax")                       \
	X(BAD_UTF8, 500, "5.5.2", "Error: bad UTF-8 syntax")                   \
	X(SENDER_TOO_LONG, 501, "5.1.7", "Error: sender address too long")     \
	X(RCPT_TOO_LONG, 501, "5.1.3", "Error: recipient address too long")    \
	X(TOO_LONG, 500, "5.5.2", "%H Error: command too long")                \
	X(BARE_LF_COMMAND, 500, "5.5.2", "Error: bare <LF> received")          \
	X(BARE_NEWLINE_DATA, 550, "5.5.2", "%H Error: bare <LF> received")     \
	X(SYNC_ERROR, 554, "5.5.0", "Error: SMTP protocol synchronization")    \
	X(FORBIDDEN_COMMAND, 221, "2.7.0", "Error: I can break rules, too. Goodbye.") \
	X(HELO_SYNTAX, 501, "5.5.2", "Syntax: HELO hostname")                  \
	X(EHLO_SYNTAX, 501, "5.5.2", "Syntax: EHLO hostname")                  \
	X(NEED_HELO, 503, "5.5.1", "Error: send HELO/EHLO first")              \
	X(NEED_MAIL, 503, "5.5.1", "Error: need MAIL command")                 \
	X(NEED_RCPT, 503, "5.5.1", "Error: need RCPT command")                 \
	X(NO_VALID_RCPT, 554, "5.5.1", "Error: no valid recipients")           \
	X(NESTED_MAIL, 503, "5.5.1", "Error: nested MAIL command")             \
	X(MAIL_SYNTAX, 501, "5.5.4", "Syntax: MAIL FROM:<address>")            \
	X(RCPT_SYNTAX, 501, "5.5.4", "Syntax: RCPT TO:<address>")              \
	X(BAD_ADDRESS, 501, "5.1.7", "Bad sender address syntax")              \
	X(BAD_RCPT_ADDRESS, 501, "5.1.3", "Bad recipient address syntax")      \
	X(UNKNOWN_PARAM, 555, "5.5.4", "Unsupported option")                   \
	X(BAD_SIZE, 501, "5.5.4", "Bad message size syntax")                   \
	X(BAD_PARAM, 501, "5.5.4", "Bad parameter syntax")                     \
	X(NEED_SMTPUTF8, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address") \
	X(SIZE_EXCEEDED, 552, "5.3.4", "Message size exceeds fixed maximum message size") \
	X(MESSAGE_TOO_BIG, 552, "5.3.4", "Error: message file too big")        \
	X(TOO_MANY_RCPTS, 452, "4.5.3", "Error: too many recipients")          \
	X(TOO_MANY_ERRORS, 421, "4.7.0", "%H Error: too many errors")          \
	X(TOO_MANY_COMMANDS, 421, "4.7.0", "%H Error: too many commands")      \
	X(TOO_MANY_CLIENT_SESSIONS, 421, "4.7.0", "%H Error: too many connections from %C") \
	X(TOO_MANY_SESSIONS, 421, "4.3.2", "%H Error: too many sessions, try again later") \
	X(TIMEOUT, 421, "4.4.2", "%H Error: timeout exceeded")                 \
	X(SHUTDOWN, 421, "4.3.2", "%H Service shutting down, closing transmission channel") \
	X(RESOURCES, 421, "4.3.0", "%H Error: out of resources, closing transmission channel") \
	X(MEMORY_FULL, 452, "4.3.1", "Insufficient system storage")            \
	X(BACKEND_UNAVAILABLE, 451, "4.4.1", "Error: mail server unavailable, try again later") \
	X(BACKEND_BUSY, 451, "4.4.5", "Error: mail server busy, try again later") \
	X(BACKEND_LOST, 451, "4.4.2", "Error: connection to mail server lost, try again later") \
	X(BACKEND_PROTOCOL, 451, "4.3.0", "Error: mail server protocol error, try again later") \
	X(XCLIENT_FAILED, 451, "4.3.0", "Error: cannot pass client identity to mail server, try again later") \
	X(RCPT_CHANGED, 451, "4.3.0", "Error: recipient no longer accepted, try again later") \
	X(ENVELOPE_CHANGED, 451, "4.3.0", "Error: sender no longer accepted, try again later") \
	X(DATA_REFUSED, 451, "4.3.0", "Error: message data not accepted now, try again later") \
	X(LOCAL_ERROR, 451, "4.3.0", "Error: local error, try again later")    \
	X(REJECTED, 554, "5.7.1", "Error: service unavailable; client blocked by local policy")

enum reply_id {
#define REPLY_ENUM(id, c, e, t) REPLY_##id,
	REPLIES(REPLY_ENUM)
#undef REPLY_ENUM
	REPLY_COUNT
};

int reply_code(enum reply_id id);

/* Formats the reply line(s) with CR LF into dst; returns length or 0 if it
 * does not fit. */
size_t reply_format(enum reply_id id, const char *myhostname,
		    const char *client, char *dst, size_t dst_cap);

#endif
