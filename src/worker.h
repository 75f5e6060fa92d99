/*
 * worker: one worker process = one libevent loop serving client sessions
 * on the shared (SO_REUSEPORT) listeners, with its own backend pool, DNS
 * resolver and thread pool. What it makes at start-up it hands to the
 * modules when it creates them (pool_new, listener_start with the
 * sessions' environment, store_open_*); no other module sees the worker.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stddef.h>

struct config;

/* Runs the worker loop until drained; returns the process exit code.
 * listen_fds are already bound (by the supervisor, as root). life_fd is
 * the read end of a pipe that reaches EOF when the supervisor dies: the
 * worker then drains as on SIGTERM. */
int worker_main(const struct config *cfg, unsigned slot, const int *listen_fds,
		size_t n_listen, int life_fd);

#endif
