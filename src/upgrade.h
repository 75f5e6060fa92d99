/*
 * upgrade: the running supervisor replaces its program with the installed
 * one (a package upgrade) without a restart: it executes the file it was
 * started from, keeping its pid, and hands the new program what must
 * survive (listening sockets, the control socket and the sluicectl
 * connections waiting for an answer, the workers' life pipe, the metrics
 * and snapshot memory, the metrics listener, the old workers' pids) in
 * one environment variable. The old workers keep serving their sessions;
 * the new program's workers take new connections.
 */
#ifndef SLUICE_UPGRADE_H
#define SLUICE_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "control.h"

#define UPGRADE_ENV "SLUICE_UPGRADE"
#define UPGRADE_TEXT_MAX 65536     /* the variable, below MAX_ARG_STRLEN (128 KiB) */
#define UPGRADE_LISTEN_MAX 4096    /* 256 worker slots x 16 listen addresses */
#define UPGRADE_WORKERS_MAX 512    /* two generations of 256 */
#define UPGRADE_WAITERS_MAX 8      /* control connections (CONTROL_CLIENTS_MAX) */
#define UPGRADE_VERSION_MAX 32

struct upgrade_worker {
	pid_t pid;
	unsigned slot;  /* 1..n */
	unsigned bank;  /* metrics bank */
};

/* What one program hands the next. An fd of -1 is "none". */
struct upgrade_state {
	int life[2];                       /* the workers' life pipe */
	size_t n_listen;
	int listen[UPGRADE_LISTEN_MAX];    /* slot-major: slot 1's, then slot 2's */
	int control_fd;
	size_t n_waiters;
	struct control_waiter waiters[UPGRADE_WAITERS_MAX];
	int http_fd;                       /* metrics_listen */
	int metrics_fd;
	unsigned long long metrics_layout; /* metrics_layout(): same table? */
	unsigned per_bank, bank;           /* metrics slots per bank, bank in use */
	int snapshot_fd;
	unsigned long long snapshot_layout;
	size_t n_workers;
	struct upgrade_worker workers[UPGRADE_WORKERS_MAX];
	char from[UPGRADE_VERSION_MAX];    /* the old program's version */
};

/* main, at start: remembers argv (kept by the caller for the process's
 * life) and the program's path, resolved now: after a package upgrade
 * /proc/self/exe names the deleted file, the path the new one. */
void upgrade_remember(char **argv);
/* The resolved path, "" when unknown. */
const char *upgrade_path(void);

/* Runs the installed program with "-n" and the same arguments (its own
 * check of the configuration it would load), waiting at most
 * UPGRADE_CHECK_TIMEOUT_MS; blocks the caller meanwhile. 0, or -1 with
 * the reason (a missing or broken program, a refused configuration) in
 * err. */
int upgrade_check(char *err, size_t cap);

/* Executes the installed program with the same arguments, st in
 * UPGRADE_ENV and notify (when not NULL) in NOTIFY_SOCKET, its fds
 * inherited and the supervisor's signals blocked until the new program
 * handles them. Returns only on failure: everything is undone (fds
 * close-on-exec again, signals, environment) and err says why. */
int upgrade_exec(const struct upgrade_state *st, const char *notify, char *err, size_t cap);

/* In the new program, before anything else uses fds: 1 and *st when this
 * process was started by upgrade_exec (the variable is removed, the fds
 * made close-on-exec again; those that are not open are -1), 0 when not,
 * -1 with err when the variable cannot be read. */
int upgrade_take(struct upgrade_state *st, char *err, size_t cap);

/* Unblocks what upgrade_exec blocked (a no-op otherwise): once the
 * supervisor's handlers are in place. */
void upgrade_unblock_signals(void);

/* Text form of st into buf (cap bytes, NUL-terminated): 0, or -1 when it
 * does not fit. Pure. */
int upgrade_encode(const struct upgrade_state *st, char *buf, size_t cap);
/*
 * Parses len bytes of text into *st. The text comes from the program
 * before, in this same process (only root sets a root process's
 * environment): not untrusted input, but maybe another version's, so it is
 * read defensively: at most UPGRADE_TEXT_MAX bytes of any bytes;
 * "key=value" fields separated by ';', values comma-separated items of
 * ':'-separated decimal numbers; unknown keys are skipped (a newer
 * program's fields), numbers and counts are bounded by the struct. Pure.
 * 0, or -1 with the reason in err.
 */
int upgrade_parse(const char *text, size_t len, struct upgrade_state *st, char *err,
		  size_t cap);

#endif
