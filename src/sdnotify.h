/*
 * sdnotify: the systemd notification protocol (sd_notify(3)) without
 * libsystemd: one datagram of "KEY=value" lines to the socket named by
 * $NOTIFY_SOCKET, and a pipe on which each worker says that it accepts.
 * Without $NOTIFY_SOCKET every call does nothing.
 */
#ifndef SLUICE_SDNOTIFY_H
#define SLUICE_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Longest $NOTIFY_SOCKET and longest message; systemd's own limits are
 * sun_path and a page. */
#define SDNOTIFY_MSG_MAX 512

/*
 * sdnotify_init: in the supervisor before the first fork. Reads and
 * unsets $NOTIFY_SOCKET ("/path" or "@abstract"; anything else is logged
 * and ignored), opens the datagram socket, and the workers' ready pipe
 * (always, systemd or not). 0, or -1 when a socket or pipe cannot be made
 * (logged).
 */
int sdnotify_init(void);

bool sdnotify_enabled(void);

/* The $NOTIFY_SOCKET value sdnotify_init took (for a re-executed
 * supervisor, upgrade.h), or NULL when not notifying. */
const char *sdnotify_env(void);

/* sdnotify_addr: parses a $NOTIFY_SOCKET value (NUL-terminated, at most
 * sizeof sun_path - 1 bytes) into *sun and *len. Pure. 0 or -1. */
struct sockaddr_un;
int sdnotify_addr(const char *value, struct sockaddr_un *sun, size_t *len);

/* sdnotify_send: one datagram, text as given ("READY=1\nSTATUS=..."),
 * cut at SDNOTIFY_MSG_MAX. Never blocks; a failure is logged. */
void sdnotify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* In a worker, once it accepts: writes its pid to the ready pipe. */
void sdnotify_worker_ready(void);

/* The supervisor's end of the ready pipe (non-blocking), -1 before
 * sdnotify_init. */
int sdnotify_ready_fd(void);

/* Reads one pid from the ready pipe: >0, or 0 when none is waiting. */
pid_t sdnotify_read_ready(void);

#endif
