/*
 * backend: one SMTP client connection to the mail server. It opens the
 * connection (greeting, EHLO, STARTTLS when backend_tls asks, EHLO again;
 * or the greeting alone, see backend_open) and then runs commands for
 * whoever holds it, following RFC 2920: a command is written only when no
 * reply is owed, or when PIPELINING was offered and the last command
 * written does not end a group (EHLO, HELO, DATA, XCLIENT, STARTTLS, NOOP,
 * QUIT, VRFY). Replies are matched to commands strictly in order; an
 * unsolicited reply is a desynchronisation and closes the connection.
 *
 * Owner: the pool owns every backend (hooks given at open) and lends it
 * (pool.h); the borrower runs commands on it, and hears of its failure
 * through the pool. struct backend is opaque.
 */
#ifndef SLUICE_BACKEND_H
#define SLUICE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <openssl/ssl.h>

#include "smtp_reply.h"

struct backend;
struct bufferevent;
struct config;
struct evbuffer;
struct event_base;

/* Why a connection failed, for its owner and its borrower: the log text
 * (backend_fail_reason) is for people only. */
enum backend_fault {
	BACKEND_FAULT_NONE,
	BACKEND_FAULT_IDLE,     /* idle in the pool past backend_idle: recycled */
	BACKEND_FAULT_LOST,     /* I/O error, EOF, timeout, 421, local failure */
	BACKEND_FAULT_PROTOCOL, /* a malformed or out-of-step reply */
};

/* reply NULL: the connection failed or timed out before that reply. */
typedef void (*backend_reply_fn)(void *arg, const struct smtp_reply *reply);

/* What the last EHLO offered. */
struct backend_caps {
	bool pipelining, xclient, smtputf8, eightbitmime, starttls, chunking;
	char xclient_attrs[256];
	unsigned long long size_max; /* SIZE it offered; 0: none given */
};

/* How a connection reports to its owner (the pool), given at open. Each
 * runs on a later loop turn than what caused it, never inside a call into
 * this connection. */
struct backend_hooks {
	/* The opening handshake is done: the connection can be lent. */
	void (*ready)(void *arg, struct backend *b);
	/* It failed (backend_fault says why); nothing more will be read or
	 * written. The owner closes it (backend_close), now or once its
	 * borrower has let go. */
	void (*failed)(void *arg, struct backend *b);
	/* The output fell below the low-water mark (body writes may go on). */
	void (*drained)(void *arg, struct backend *b);
	/* It is being freed: the last call, b is gone when it returns. */
	void (*closed)(void *arg, struct backend *b);
};

/* Starts connecting to cfg->backend; the owner hears through hooks.
 * base, cfg, tls_client (NULL without backend_tls) and hooks outlive the
 * connection. assume: NULL, or what an earlier connection's EHLO offered,
 * copied: the connection is then ready after the greeting, without an
 * EHLO of its own, for a borrower whose first command is XCLIENT (which
 * the server answers with a new greeting, and an EHLO must follow anyway).
 * NULL when out of memory. */
struct backend *backend_open(struct event_base *base, const struct config *cfg,
			     SSL_CTX *tls_client, const struct backend_caps *assume,
			     const struct backend_hooks *hooks, void *hooks_arg);

/* Opened with assumed capabilities and no EHLO answered since. */
bool backend_caps_assumed(const struct backend *b);


/*
 * backend_command: queues "line" (without CR LF, at most 510 bytes) and
 * fn(arg, reply) for its reply. ends_group: see above. timeout_ms for the
 * reply, 0 = backend_timeout. Returns 0, or -1 when out of memory (the
 * connection is then failed).
 */
int backend_command(struct backend *b, const char *line, size_t len,
		    bool ends_group, long timeout_ms, backend_reply_fn fn,
		    void *arg);

/* Bytes written as they are (message body), no reply expected. */
int backend_write(struct backend *b, struct evbuffer *data);
size_t backend_output_pending(const struct backend *b);

/* Sends QUIT (when ready) and frees the connection once answered or after
 * a short bound. Never calls back. */
void backend_close(struct backend *b, bool polite);

/* Marks the connection failed (BACKEND_FAULT_LOST) with a reason for the
 * log; the owner's failed hook runs on the next loop turn. */
void backend_fail(struct backend *b, const char *why);

/* Bytes written that the server has not acknowledged yet (our buffer and
 * the kernel's send queue); 0 when unknown. */
size_t backend_unacked(const struct backend *b);

/* Records what an EHLO reply offered. */
void backend_take_caps(struct backend *b, const struct smtp_reply *r);

/* Lent (no read timeout while no reply is owed: the borrower bounds its
 * own waits) or back in the pool (the read timeout becomes the idle
 * recycle bound, backend_idle). */
void backend_set_lent(struct backend *b, bool lent);

/* Whether nothing is queued, owed or buffered: safe to lend again. */
bool backend_idle(const struct backend *b);

/* What the last EHLO offered. */
const struct backend_caps *backend_caps(const struct backend *b);

/* Whether it can run commands now (handshake done, not failed or
 * closing). */
bool backend_ready(const struct backend *b);

/* Whether the opening handshake completed (ever). */
bool backend_ready_seen(const struct backend *b);

/* Why it failed (BACKEND_FAULT_NONE while it has not), and the text for
 * logs ("" while it has not). */
enum backend_fault backend_fault(const struct backend *b);
const char *backend_fail_reason(const struct backend *b);

/* 4xx/5xx replies so far: Postfix counts them too. */
unsigned backend_errors(const struct backend *b);

/* The client identity the server holds for this connection (what the
 * last XCLIENT set), as a key its user computes; 0: none or unknown. */
unsigned long long backend_identity(const struct backend *b);
void backend_set_identity(struct backend *b, unsigned long long key);

#endif
