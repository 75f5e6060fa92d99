/*
 * listener: the listening sockets. Bound by the supervisor (as root, before
 * fork) with SO_REUSEPORT, one socket per worker and address, so the
 * kernel spreads connections over the workers; a restarted worker takes
 * over its predecessor's socket and the connections queued on it.
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct endpoint;
struct event_base;
struct session_env;

/* Returns a listening, non-blocking fd or -1 (errno set). */
int listener_bind(const struct endpoint *ep);

/* Whether fd is a listening socket bound to ep's address and port (an
 * inherited socket after an upgrade, upgrade.h). */
bool listener_matches(int fd, const struct endpoint *ep);

/* Accepts on fds (fds[i] bound to env->cfg->listen[i]) into
 * session_accept(env, ...), through proxy_listen for those in
 * proxy_protocol_listen. 0 or -1. */
int listener_start(struct event_base *base, struct session_env *env,
		   const int *fds, size_t n);

/* Stops accepting for good (drain); the sockets stay open in the
 * supervisor and the slot's next worker. */
void listener_stop(void);

#endif
