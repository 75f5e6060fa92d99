/*
 * log_queue: the path from log_msg to the log destination that never
 * blocks the caller. Finished lines go into a bounded in-memory queue;
 * one writer thread per process takes them out and writes them to stderr
 * or sends them to the syslog socket, and it alone waits when the
 * destination is slow. A full queue drops the new line and counts it
 * (sluice_log_dropped_total); the writer reports the count in a line of
 * its own once it catches up.
 */
#ifndef SLUICE_LOG_QUEUE_H
#define SLUICE_LOG_QUEUE_H

#include <stddef.h>
#include <sys/types.h>

#define LOG_QUEUE_BYTES (256 * 1024) /* lines waiting, with 2 bytes each */
#define LOG_QUEUE_ENTRY_MAX 4096    /* longest line accepted */
#define LOG_QUEUE_FLUSH_MS 1000     /* longest wait at exit */

enum log_queue_dest { LOG_QUEUE_STDERR, LOG_QUEUE_SYSLOG };

/* At start-up, before any thread: where lines go. For syslog, path is
 * the socket (NULL: /dev/log). May be called again (tests). */
void log_queue_init(enum log_queue_dest dest, const char *path);

/* One whole line (stderr: with its LF; syslog: one datagram), len <=
 * LOG_QUEUE_ENTRY_MAX. Any thread; never waits for the destination. */
void log_queue_put(const char *line, size_t len);

/* Waits until the queue is written out, at most ms milliseconds. For
 * exit paths and tests. */
void log_queue_flush(long ms);

/* This process's id, as getpid(2), without a system call per log line:
 * cached, and forgotten in the child of every fork. Any thread. */
pid_t log_queue_pid(void);

/* Lines dropped by this process: queue full, or the destination gone. */
unsigned long long log_queue_dropped(void);

#endif
