/*
 * client_limits: per-worker counts behind the session limits: sessions per
 * client address and sessions in all. Each worker counts its own
 * sessions; SO_REUSEPORT spreads one client's connections over the
 * workers, so a client may hold up to client_connection_limit per worker.
 */
#ifndef SLUICE_CLIENT_LIMITS_H
#define SLUICE_CLIENT_LIMITS_H

#include <stdbool.h>
#include <sys/socket.h>

/* Counts a new session from addr; returns its session count including
 * this one, or 0 when out of memory (then it was not counted). */
unsigned client_limits_enter(const struct sockaddr *addr);
void client_limits_leave(const struct sockaddr *addr);

/* Counts a new TLS session from addr; returns how many it started in the
 * current minute (a fixed window), this one included. */
unsigned client_limits_tls_rate(const struct sockaddr *addr);

#endif
