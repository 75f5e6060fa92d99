/*
 * backend: one SMTP client connection to the mail server. It opens the
 * connection (greeting, EHLO, STARTTLS when backend_tls asks, EHLO again)
 * and then runs commands for whoever holds it, following RFC 2920: a
 * command is written only when no reply is owed, or when PIPELINING was
 * offered and the last command written does not end a group (EHLO, HELO,
 * DATA, XCLIENT, STARTTLS, NOOP, QUIT, VRFY). Replies are matched to
 * commands strictly in order; an unsolicited reply is a desynchronisation
 * and closes the connection.
 *
 * Owner: the pool owns every backend; a checkout lends it to a replay,
 * which sets the failure handler for the time of the lease.
 */
#ifndef SLUICE_BACKEND_H
#define SLUICE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <openssl/ssl.h>

#include "smtp_reply.h"

struct bufferevent;
struct config;
struct evbuffer;
struct event_base;
struct pool;

enum backend_state {
	BACKEND_CONNECTING,
	BACKEND_HANDSHAKE, /* greeting, EHLO, STARTTLS */
	BACKEND_READY,     /* idle in the pool or lent out */
	BACKEND_CLOSING,   /* QUIT sent */
	BACKEND_DEAD,
};

/* reply NULL: the connection failed or timed out before that reply. */
typedef void (*backend_reply_fn)(void *arg, const struct smtp_reply *reply);
typedef void (*backend_event_fn)(void *arg);

struct backend_cmd;

struct backend {
	TAILQ_ENTRY(backend) link; /* pool list */
	struct pool *pool;
	struct bufferevent *bev;
	enum backend_state state;
	bool tls;
	/* what the last EHLO offered */
	bool pipelining, xclient, smtputf8, eightbitmime, starttls;
	char xclient_attrs[256];
	unsigned long long size_max; /* SIZE it offered; 0: none given */
	unsigned long long identity; /* session whose XCLIENT is in force, 0 none */
	unsigned uses;     /* checkouts so far */
	unsigned errors;   /* 4xx/5xx replies: Postfix counts them too */
	long long opened_ms;
	bool lent;
	bool ready_seen; /* completed its opening handshake once */
	bool protocol_error; /* failed on a malformed or out-of-step reply */
	unsigned long long out_sent; /* bytes that left the output buffer */
	TAILQ_HEAD(, backend_cmd) unsent;
	TAILQ_HEAD(, backend_cmd) unanswered;
	bool group_open; /* last written command lets another follow */
	long reply_timeout_ms;
	struct smtp_reply reply; /* reply being read */
	/* lease handlers */
	backend_event_fn on_fail; /* connection lost while lent */
	backend_event_fn on_drain; /* output below the low-water mark */
	void *owner;
	char fail_reason[96];
};

/* Starts connecting; the pool hears pool_backend_ready / _failed. */
struct backend *backend_open(struct pool *pool, struct event_base *base,
			     const struct config *cfg, SSL_CTX *tls_client);

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

/* Marks the connection failed with a reason; the owner's on_fail (or the
 * pool) hears of it on the next loop turn. */
void backend_fail(struct backend *b, const char *why);

/* Bytes written that the server has not acknowledged yet (our buffer and
 * the kernel's send queue); 0 when unknown. */
size_t backend_unacked(const struct backend *b);

/* Records what an EHLO reply offered. */
void backend_take_caps(struct backend *b, const struct smtp_reply *r);

/* Back in the pool: the read timeout becomes the idle recycle bound. */
void backend_set_idle(struct backend *b);

/* Whether nothing is queued, owed or buffered: safe to lend again. */
bool backend_idle(const struct backend *b);

#endif
