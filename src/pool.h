/*
 * pool: the backend connections of one worker. At most backend_pool_size
 * are open at once (connecting, idle, lent or closing: the cap is what the
 * mail server sees). Connections are opened ahead so that a lease does
 * not wait for TCP and SMTP handshakes; while the mail server is down,
 * reconnects back off and waiting borrowers fail at once with 451.
 *
 * THE LEASE CONTRACT. A borrower (a replay today; a fast lane holding a
 * connection across a client's whole transaction tomorrow) gets a
 * connection through one call and gives it back through one call:
 *
 *   pool_lend(p, &lease, prefer, timeout_ms, &callbacks, borrower)
 *     The lease (struct pool_lease, embedded in the borrower) starts
 *     waiting. callbacks->ready(borrower, b, err) runs exactly once, on a
 *     later loop turn, never inside pool_lend: with b, the connection is
 *     the borrower's until it gives it back; with b NULL (err: the 4xx to
 *     give: BACKEND_BUSY after timeout_ms in line, BACKEND_UNAVAILABLE,
 *     BACKEND_LOST, SHUTDOWN) the lease is over. prefer: a connection
 *     whose backend_identity is this key is taken first (0: any).
 *
 *   pool_return(&lease, clean)
 *     Ends the lease in any state: a waiting lease is cancelled (ready
 *     never runs); a held one gives the connection back. clean: the last
 *     exchange ended in a known state (no transaction open on the server,
 *     nothing owed); then the pool may lend it again, otherwise it is
 *     closed. After pool_return no callback of this lease runs again.
 *
 *   pool_hand_over(&from, &to, &callbacks, borrower)
 *     Moves a held connection from one borrower to another without going
 *     back to the pool (no other borrower can take it in between, and its
 *     server-side state, XCLIENT identity and open transaction included,
 *     goes along). from is over; to holds it with the new callbacks.
 *
 * While a lease is held, for however long:
 *   - callbacks->failed(borrower, fault, why) runs (on a later loop turn
 *     than the failure) when the connection is lost, times out on a reply,
 *     or breaks the protocol. The connection is dead: the borrower must
 *     call pool_return(&lease, false), from inside failed or later.
 *   - callbacks->drained(borrower) (may be NULL) runs when the output
 *     falls below the low-water mark, for body writes.
 *   - the pool never takes the connection back by itself, and the
 *     connection has no read timeout while no reply is owed: a borrower
 *     that waits for its client must bound that wait itself, well inside
 *     the mail server's own idle timeout (Postfix smtpd_timeout), and
 *     give the connection back when the bound passes. Every reply owed is
 *     still bounded (backend_command's timeout).
 *   - the connection counts against the cap; a long lease is one
 *     connection fewer for everybody else, so whoever takes long leases
 *     must limit how many it holds.
 *
 * Waiting leases are served in order. Results are delivered on a later
 * loop turn, never from inside pool_lend.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <sys/queue.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "backend.h"
#include "replies.h"

struct config;
struct event_base;
struct pool;
struct pool_conn;

/* The borrower's side of a lease; see the contract above. */
struct pool_borrower {
	void (*ready)(void *borrower, struct backend *b, enum reply_id err);
	void (*failed)(void *borrower, enum backend_fault fault,
		       const char *why);
	void (*drained)(void *borrower); /* may be NULL */
	/* A long lease only (pool_lend_long), may be NULL: another borrower,
	 * not a long lease, waits in line for a connection. The borrower
	 * gives its connection back if it is only waiting for its client
	 * (pool_return from inside is allowed). Runs on a later loop turn
	 * than the wait began. */
	void (*wanted)(void *borrower);
};

enum pool_lease_state {
	POOL_LEASE_OVER,     /* not started, or ended */
	POOL_LEASE_WAITING,  /* in line for a connection */
	POOL_LEASE_ASSIGNED, /* connection (or error) chosen, ready pending */
	POOL_LEASE_HELD,     /* ready ran with a connection */
};

/* Embedded in the borrower; its fields are the pool's. Valid from
 * pool_lend until ready reports an error, or until pool_return or a
 * hand-over from it. */
struct pool_lease {
	TAILQ_ENTRY(pool_lease) link; /* in the pool's line while WAITING */
	struct pool *pool;
	struct event timer;           /* deadline in line; delivery */
	const struct pool_borrower *cbs;
	void *borrower;
	unsigned long long prefer;
	struct pool_conn *conn;       /* ASSIGNED (may be NULL) or HELD */
	enum reply_id err;
	enum pool_lease_state state;
	unsigned max_long;            /* a long lease: the share it waits for; 0: not one */
	bool long_lease;              /* holds a connection, counted in the pool's long leases */
};

/* tls_client: for backend_tls (NULL without). base, cfg and tls_client
 * outlive the pool. */
struct pool *pool_new(struct event_base *base, const struct config *cfg,
		      SSL_CTX *tls_client);
void pool_free(struct pool *p);

void pool_lend(struct pool *p, struct pool_lease *l, unsigned long long prefer,
	       long timeout_ms, const struct pool_borrower *cbs,
	       void *borrower);
void pool_return(struct pool_lease *l, bool clean);

/* A long lease (a fast lane: held across a client's transaction): as
 * pool_lend, waiting in line at most timeout_ms for a connection while
 * fewer than max_long long leases hold one (the lanes' share: one that
 * finds it taken keeps its place in line and lets others by until a long
 * lease ends); false, and nothing started, when the server is down. The
 * lease counts as long from its connection's choice until it ends,
 * through hand-overs. */
bool pool_lend_long(struct pool *p, struct pool_lease *l,
		    unsigned long long prefer, unsigned max_long, long timeout_ms,
		    const struct pool_borrower *cbs, void *borrower);

/* The connection a held lease holds (NULL otherwise): for a borrower
 * that got it by hand-over. */
struct backend *pool_lease_backend(const struct pool_lease *l);
void pool_hand_over(struct pool_lease *from, struct pool_lease *to,
		    const struct pool_borrower *cbs, void *borrower);

/* Stops opening new connections, fails waiting leases and closes idle
 * connections (drain); held leases run to their end. */
void pool_shutdown(struct pool *p);
unsigned pool_open_count(const struct pool *p);

/* What the mail server's last EHLO said: SMTPUTF8 offered; and the
 * message size limit in force, message_size_limit or the server's own
 * SIZE when that is smaller (HOSTILE 98). */
bool pool_backend_smtputf8(const struct pool *p);
unsigned long long pool_size_limit(const struct pool *p);

#endif
