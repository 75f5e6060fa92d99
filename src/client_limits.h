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

/* Counts a new session from addr's client (an IPv6 client is its
 * /v6_prefix: ipv6_client_prefix); returns its session count including
 * this one, or 0 when out of memory (then it was not counted). Leave with
 * the same prefix. */
unsigned client_limits_enter(const struct sockaddr *addr, unsigned v6_prefix);
void client_limits_leave(const struct sockaddr *addr, unsigned v6_prefix);

/* Counts a new TLS session from addr's client; returns how many it
 * started in the current minute (a fixed window), this one included. */
unsigned client_limits_tls_rate(const struct sockaddr *addr, unsigned v6_prefix);

#endif
