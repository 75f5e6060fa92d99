/*
 * log: one line per event, to stderr (foreground, tests) or to syslog
 * (facility mail, so it lands next to the mail server's own lines).
 *
 * Exports log_init, log_msg, log_flush and log_escape. The module owns a
 * small static state (ident, destination, threshold) set once by log_init
 * at start-up, before any thread exists; log_msg itself keeps no shared
 * state and may be called from pool threads.
 *
 * log_msg formats the whole line (stderr: timestamp, ident[pid], text and
 * LF; syslog: an RFC 3164 datagram) in its own buffer and hands it to
 * log_queue, which writes it from its own thread: a stalled syslog or a
 * full pipe never blocks the caller (the line is dropped and counted
 * instead). Each line is still written with one write(2), so lines from
 * several worker processes do not interleave. Control characters in the
 * formatted text are replaced, so whatever a caller passes (even
 * unescaped client bytes) cannot forge a second log line. log_msg
 * preserves errno, so a caller may log and then still look at errno.
 *
 * Rejected: stdio (FILE locking, and a line may be split across two
 * write(2) calls when it passes the buffer size); syslog(3) (see
 * log_queue.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "log_queue.h"

#include <event2/event.h>

/* Longer messages are cut; a log line is not the place for bulk data. */
#define LOG_LINE_MAX 2048

static struct {
	char ident[64]; /* openlog keeps the pointer: must be static storage */
	int to_stderr;
	enum log_level min_level;
	int atexit_done;
} log_state = { "sluice", 1, LOG_LVL_INFO, 0 };

/* libevent's own messages ("[warn] ...", nameserver up/down) become ours,
 * so that every line has one format and one destination. */
static void log_libevent(int severity, const char *msg)
{
	enum log_level lvl = severity >= EVENT_LOG_ERR    ? LOG_LVL_ERR
			     : severity == EVENT_LOG_WARN ? LOG_LVL_WARN
							  : LOG_LVL_DEBUG;
	log_msg(lvl, "libevent: %s", msg);
}

void log_init(const char *ident, int to_stderr, enum log_level min_level)
{
	event_set_log_callback(log_libevent);
	snprintf(log_state.ident, sizeof log_state.ident, "%s",
		 ident && *ident ? ident : "sluice");
	log_state.to_stderr = to_stderr;
	log_state.min_level = min_level;
	log_queue_init(to_stderr ? LOG_QUEUE_STDERR : LOG_QUEUE_SYSLOG, NULL);
	/* Lines still queued at exit get a bounded time to go out. */
	if (!log_state.atexit_done && atexit(log_flush) == 0)
		log_state.atexit_done = 1;
}

void log_flush(void)
{
	log_queue_flush(LOG_QUEUE_FLUSH_MS);
}

static const char *log_tag(enum log_level lvl)
{
	switch (lvl) {
	case LOG_LVL_ERR:
		return "error: ";
	case LOG_LVL_WARN:
		return "warning: ";
	default:
		return "";
	}
}

static int log_priority(enum log_level lvl)
{
	switch (lvl) {
	case LOG_LVL_ERR:
		return LOG_ERR;
	case LOG_LVL_WARN:
		return LOG_WARNING;
	case LOG_LVL_INFO:
		return LOG_INFO;
	default:
		return LOG_DEBUG;
	}
}

/* Returns the number of bytes written into buf (< cap), 0 if the clock or
 * the conversion fails (the line is still worth logging without it). */
static size_t log_timestamp(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 ||
	    gmtime_r(&ts.tv_sec, &tm) == NULL)
		return 0;
	int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts.tv_nsec / 1000000L);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	return (size_t)n;
}

/* RFC 3164 "Mmm dd hh:mm:ss " in local time, as syslog(3) writes it;
 * 0 if the clock fails. */
static size_t log_syslog_timestamp(char *buf, size_t cap)
{
	time_t now = time(NULL);
	struct tm tm;

	if (localtime_r(&now, &tm) == NULL)
		return 0;
	size_t n = strftime(buf, cap, "%b %e %H:%M:%S ", &tm);
	return n < cap ? n : 0;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	int saved_errno = errno;
	va_list ap;

	if (lvl > log_state.min_level)
		return;

	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		snprintf(msg, sizeof msg, "(unformattable log message: %s)", fmt);
	} else if ((size_t)n >= sizeof msg) {
		memcpy(msg + sizeof msg - 4, "...", 4);
	}
	/* One event, one line: nothing in the text may start another. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';

	char line[LOG_LINE_MAX + 160];
	size_t len;
	if (!log_state.to_stderr) {
		n = snprintf(line, sizeof line, "<%d>", LOG_MAIL | log_priority(lvl));
		len = n > 0 ? (size_t)n : 0;
		len += log_syslog_timestamp(line + len, sizeof line - len);
		n = snprintf(line + len, sizeof line - len, "%s[%ld]: %s%s",
			     log_state.ident, (long)log_queue_pid(), log_tag(lvl), msg);
	} else {
		len = log_timestamp(line, sizeof line);
		n = snprintf(line + len, sizeof line - len, "%s[%ld]: %s%s\n",
			     log_state.ident, (long)log_queue_pid(), log_tag(lvl), msg);
	}
	if (n >= 0) {
		len += (size_t)n < sizeof line - len ? (size_t)n
						     : sizeof line - len - 1;
		if (log_state.to_stderr && line[len - 1] != '\n')
			line[len - 1] = '\n';
		log_queue_put(line, len);
	}
	errno = saved_errno;
}

char *log_escape(char *dst, size_t dst_cap, const void *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = src;
	size_t need = 0, i, o = 0;

	if (dst_cap == 0)
		return dst;
	/* Does the whole escaped text fit? Stop counting once it cannot. */
	for (i = 0; i < len && need < dst_cap; i++)
		need += (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' &&
			 s[i] != '"') ? 1 : 4;
	size_t room = need < dst_cap ? dst_cap - 1
		      : dst_cap > 4 ? dst_cap - 4 : 0; /* keep room for "..." */

	for (i = 0; i < len; i++) {
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
			if (o + 1 > room)
				break;
			dst[o++] = (char)c;
		} else {
			/* Never cut an escape in half: it would read as garbage. */
			if (o + 4 > room)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	if (i < len) {
		for (size_t k = 0; k < 3 && o + 1 < dst_cap; k++)
			dst[o++] = '.';
	}
	dst[o] = '\0';
	return dst;
}
