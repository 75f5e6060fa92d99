/*
 * pool: the backend connections of one worker. At most backend_pool_size
 * are open at once (connecting, idle, lent or closing: the cap is what the
 * mail server sees). Connections are opened ahead so that a checkout does
 * not wait for TCP and SMTP handshakes; while the mail server is down,
 * reconnects back off and waiting checkouts fail at once with 451.
 *
 * Checkouts queue in order and are bounded in time. Results are delivered
 * on a later loop turn, never from inside pool_checkout.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <sys/queue.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "replies.h"

struct backend;
struct config;
struct event_base;
struct pool;

/* b NULL: no connection; err says which 4xx to give. */
typedef void (*pool_ready_fn)(void *arg, struct backend *b, enum reply_id err);

/* Embedded in the requester; valid until the callback or pool_cancel. */
struct pool_wait {
	TAILQ_ENTRY(pool_wait) link;
	struct pool *pool;
	struct event timer;
	pool_ready_fn cb;
	void *arg;
	unsigned long long identity;
	struct backend *assigned; /* handed over, delivery pending */
	enum reply_id err;
	bool active;
	bool queued;
};

/* tls_client: for backend_tls (NULL without). base, cfg and tls_client
 * outlive the pool. */
struct pool *pool_new(struct event_base *base, const struct config *cfg,
		      SSL_CTX *tls_client);
void pool_free(struct pool *p);

void pool_checkout(struct pool *p, struct pool_wait *w,
		   unsigned long long identity, long timeout_ms,
		   pool_ready_fn cb, void *arg);
void pool_cancel(struct pool *p, struct pool_wait *w);

/* Gives a lent connection back. clean: the last exchange ended in a known
 * state (no transaction open); otherwise it is closed. */
void pool_release(struct pool *p, struct backend *b, bool clean);

/* From backend.c. */
void pool_backend_ready(struct pool *p, struct backend *b);
void pool_backend_failed(struct pool *p, struct backend *b);
void pool_backend_closed(struct pool *p, struct backend *b);

/* Stops opening new connections and closes idle ones (drain). */
void pool_shutdown(struct pool *p);
unsigned pool_open_count(const struct pool *p);

/* What the mail server's last EHLO said: SMTPUTF8 offered; and the
 * message size limit in force, message_size_limit or the server's own
 * SIZE when that is smaller (HOSTILE 98). */
bool pool_backend_smtputf8(const struct pool *p);
unsigned long long pool_size_limit(const struct pool *p);

#endif
