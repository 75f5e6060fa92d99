/*
 * session: one client SMTP session, from accept to close. Holds the
 * dialogue, the envelope and the message, and borrows backend connections
 * only for replays (replay.h).
 */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdbool.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

struct cidr_list;
struct config;
struct dnsbl_list;
struct evdns_base;
struct event_base;
struct pool;
struct spool_env;
struct store;

/* What every session of one worker shares, filled in by the worker before
 * the first accept and outliving every session. Sessions read it; they
 * write only next_session_id. */
struct session_env {
	struct event_base *base;
	const struct config *cfg;
	struct evdns_base *dns;
	struct pool *pool;            /* backend connections (replays) */
	struct spool_env *spool;      /* message bodies, the memory cap */
	struct store *store;          /* NULL: run without reputation */
	SSL_CTX *tls_server;          /* NULL: STARTTLS not offered */
	struct dnsbl_list *dnsbl;     /* NULL: no lists configured */
	struct cidr_list *allow;      /* cidr_allow_file */
	struct cidr_list *deny;       /* cidr_deny_file */
	unsigned long long next_session_id;
	bool draining;                /* set by the worker: 421 new commands */
};

/* Takes ownership of fd (non-blocking, accepted). */
void session_accept(struct session_env *env, int fd,
		    const struct sockaddr *addr, socklen_t len);

/* Drain: 421 to every session not in a replay; those finish first. */
void session_shutdown_all(void);
unsigned session_count(void);

/* Publishes this worker's sessions into the status snapshot every
 * SNAPSHOT_PERIOD_MS (session_report.c). 0 or -1. */
int session_report_start(struct event_base *base, unsigned slot);

#endif
