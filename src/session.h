/*
 * session: one client SMTP session, from accept to close. Holds the
 * dialogue, the envelope and the message, and borrows backend connections
 * only for replays (replay.h).
 */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <sys/socket.h>

struct event_base;

/* Takes ownership of fd (non-blocking, accepted). */
void session_accept(int fd, const struct sockaddr *addr, socklen_t len);

/* Drain: 421 to every session not in a replay; those finish first. */
void session_shutdown_all(void);
unsigned session_count(void);

/* Publishes this worker's sessions into the status snapshot every
 * SNAPSHOT_PERIOD_MS (session_report.c). 0 or -1. */
int session_report_start(struct event_base *base, unsigned slot);

#endif
