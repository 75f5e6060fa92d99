/*
 * worker: one worker process = one libevent loop serving client sessions
 * on the shared (SO_REUSEPORT) listeners, with its own backend pool, DNS
 * resolver and thread pool. The context is a process-wide singleton: there
 * is exactly one loop per process.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdbool.h>
#include <openssl/ssl.h>

#include "config.h"

struct event_base;
struct evdns_base;
struct workq;
struct pool;
struct event;
struct dnsbl_list;
struct cidr_list;
struct store;

struct worker {
	struct event_base *base;
	const struct config *cfg;
	struct evdns_base *dns;
	struct workq *workq;
	struct pool *pool;
	SSL_CTX *tls_server; /* NULL: STARTTLS not offered */
	SSL_CTX *tls_client; /* for backend_tls */
	unsigned slot;       /* worker index, 1-based; metrics slot */
	unsigned long long memory_buffered; /* message bytes held in memory */
	unsigned long long next_session_id;
	bool draining;
	bool backend_smtputf8; /* the mail server's last EHLO offered it */
	unsigned long long backend_size_max; /* its SIZE; 0: none given */
	struct dnsbl_list *dnsbl;     /* NULL: no lists configured */
	struct cidr_list *allow;      /* cidr_allow_file */
	struct cidr_list *deny;       /* cidr_deny_file */
	struct store *store;          /* NULL: run without reputation */
};

extern struct worker *worker;

/* The message size limit in force: message_size_limit, or the mail
 * server's own SIZE when that is smaller (HOSTILE 98). */
unsigned long long worker_size_limit(void);

/* Runs the worker loop until drained; returns the process exit code.
 * listen_fds are already bound (by the supervisor, as root). life_fd is
 * the read end of a pipe that reaches EOF when the supervisor dies: the
 * worker then drains as on SIGTERM. */
int worker_main(const struct config *cfg, unsigned slot, const int *listen_fds,
		size_t n_listen, int life_fd);

#endif
