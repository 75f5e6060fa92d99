/*
 * unit.h: small helpers shared by the cmocka unit tests. Header-only,
 * everything static inline so each test binary stays one translation unit.
 */
#ifndef SLUICE_UNIT_H
#define SLUICE_UNIT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

/* A byte-string literal with its length, embedded NULs included. */
#define UNIT_BYTES(s) (s), (sizeof(s) - 1)

#define UNIT_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* C-escape up to cap-1 bytes of b into buf for failure messages. */
static inline const char *unit_escape(char *buf, size_t cap, const char *b,
				      size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)b[i];
		if (c == '\r')
			o += (size_t)snprintf(buf + o, cap - o, "\\r");
		else if (c == '\n')
			o += (size_t)snprintf(buf + o, cap - o, "\\n");
		else if (c == '\\')
			o += (size_t)snprintf(buf + o, cap - o, "\\\\");
		else if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	buf[o < cap ? o : cap - 1] = '\0';
	return buf;
}

/* memmem without relying on _GNU_SOURCE being set by the build. */
static inline const char *unit_find(const char *hay, size_t hlen,
				    const char *needle, size_t nlen)
{
	if (nlen == 0)
		return hay;
	for (size_t i = 0; i + nlen <= hlen; i++)
		if (memcmp(hay + i, needle, nlen) == 0)
			return hay + i;
	return NULL;
}

/* A sockaddr for text (IPv4 or IPv6) in ss; NULL text gives AF_UNSPEC. */
static inline const struct sockaddr *unit_sockaddr(struct sockaddr_storage *ss,
						   const char *text)
{
	memset(ss, 0, sizeof *ss);
	if (!text)
		return (const struct sockaddr *)ss;
	if (strchr(text, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &sin->sin_addr), 1);
	}
	return (const struct sockaddr *)ss;
}

/* Points fd 2 (where log lines go with log_init(..., 1, ...)) at a
 * temporary file until unit_stderr_release; *saved keeps the old fd 2. */
static inline FILE *unit_stderr_capture(int *saved)
{
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	*saved = dup(STDERR_FILENO);
	assert_true(*saved >= 0);
	assert_int_equal(dup2(fileno(tmp), STDERR_FILENO), STDERR_FILENO);
	return tmp;
}

/* Restores fd 2 and returns what was written (NUL-terminated, at most
 * cap - 1 bytes) in buf. Call log_flush first: the log writer thread
 * writes to whatever fd 2 is at the time. */
static inline size_t unit_stderr_release(FILE *tmp, int saved, char *buf, size_t cap)
{
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	rewind(tmp);
	size_t n = fread(buf, 1, cap - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
	return n;
}

#endif
