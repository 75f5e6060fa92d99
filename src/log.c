/*
 * log: one line per event, to stderr (foreground, tests) or to syslog
 * (facility mail, so it lands next to the mail server's own lines).
 *
 * Exports log_init, log_msg and log_escape. The module owns a small static
 * state (ident, destination, threshold) set once by log_init at start-up,
 * before any thread exists; log_msg itself keeps no shared state and may be
 * called from pool threads.
 *
 * A stderr line is built in one buffer and written with one write(2), so
 * lines from several worker processes and threads do not interleave. Control
 * characters in the formatted text are replaced, so whatever a caller passes
 * (even unescaped client bytes) cannot forge a second log line. log_msg
 * preserves errno, so a caller may log and then still look at errno.
 *
 * Rejected: stdio (FILE locking, and a line may be split across two
 * write(2) calls when it passes the buffer size).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#include <event2/event.h>

/* Longer messages are cut; a log line is not the place for bulk data. */
#define LOG_LINE_MAX 2048

static struct {
	char ident[64]; /* openlog keeps the pointer: must be static storage */
	int to_stderr;
	enum log_level min_level;
	int syslog_open;
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
	if (log_state.syslog_open) {
		closelog();
		log_state.syslog_open = 0;
	}
	if (!to_stderr) {
		openlog(log_state.ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
		log_state.syslog_open = 1;
	}
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

static void log_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		/* Nowhere left to report a failing stderr: drop the line. */
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
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

	if (!log_state.to_stderr) {
		syslog(log_priority(lvl), "%s%s", log_tag(lvl), msg);
		errno = saved_errno;
		return;
	}

	char line[LOG_LINE_MAX + 160];
	size_t len = log_timestamp(line, sizeof line);
	n = snprintf(line + len, sizeof line - len, "%s[%ld]: %s%s\n",
		     log_state.ident, (long)getpid(), log_tag(lvl), msg);
	if (n >= 0) {
		len += (size_t)n < sizeof line - len ? (size_t)n
						     : sizeof line - len - 1;
		if (line[len - 1] != '\n')
			line[len - 1] = '\n';
		log_write_all(STDERR_FILENO, line, len);
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
