/*
 * log: one line per event. Lines are "key=value" after a free tag, the
 * session id first where there is one. To stderr with -f, else syslog
 * (facility mail), through a bounded queue and a writer thread
 * (log_queue.h): logging never blocks the caller.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *ident, int to_stderr, enum log_level min_level);
/* Waits (bounded, LOG_QUEUE_FLUSH_MS) until the queued lines are out:
 * before _exit, and in tests. Registered with atexit by log_init. */
void log_flush(void);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/*
 * log_escape: untrusted bytes (any value, len bytes) for a log line:
 * printable ASCII except '\\' and '"' as is, everything else as \xNN,
 * truncated with "..." to fit dst_cap (>= 8). Always NUL-terminates.
 * Returns dst.
 */
char *log_escape(char *dst, size_t dst_cap, const void *src, size_t len);

#endif
