/*
 * helo: what is wrong with a client's HELO/EHLO name, behind the HELO
 * classification signal (see helo.h).
 *
 * Exports helo_check. No I/O, no allocation; reads only the bytes it is
 * given.
 *
 * Addresses: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is treated as
 * the IPv4 address everywhere, because a dual-stack listener reports IPv4
 * clients that way and nobody writes lists or PTR names for the mapped
 * form.
 *
 * helo_check flags are independent facts and may combine ("localhost" is
 * HELO_LOCALHOST and HELO_NOT_FQDN). Address literals are compared with
 * the client; a malformed literal is HELO_SYNTAX; a client of no known
 * family makes every literal foreign. A bare address is HELO_NOT_FQDN
 * (an IPv6 one also HELO_SYNTAX, for its ':'). Besides stray characters,
 * empty labels and labels over 63 bytes are HELO_SYNTAX; hyphens at label
 * ends are accepted (Postfix would refuse them; real HELOs have them and
 * the backend decides). Input longer than 255 bytes is HELO_SYNTAX and
 * still checked.
 *
 */
#include "helo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ascii.h"
#include "ipaddr.h"

#define HELO_NAME_MAX 255 /* RFC 1035 2.3.4 */
#define HELO_LABEL_MAX 63 /* RFC 1035 2.3.4 */
#define HELO_V6_TAG "IPv6:"

/* ---- helo_check --------------------------------------------------------- */

static unsigned helo_literal(const char *helo, size_t len,
			     const struct sockaddr *client)
{
	char text[INET6_ADDRSTRLEN];
	const char *s = helo + 1;
	size_t n;
	struct ipaddr want = {.family = AF_INET}, have;
	size_t tag = strlen(HELO_V6_TAG);

	if (len < 2 || helo[len - 1] != ']')
		return HELO_SYNTAX;
	n = len - 2;
	if (n >= tag && ascii_eq_nocase(s, tag, HELO_V6_TAG, tag)) {
		want.family = AF_INET6;
		s += tag;
		n -= tag;
	}
	if (!ascii_cstr(text, sizeof text, s, n) ||
	    inet_pton(want.family, text, want.b) != 1)
		return HELO_SYNTAX;
	if (want.family == AF_INET6 && ipaddr_is_v4mapped(want.b)) {
		want.family = AF_INET;
		memmove(want.b, want.b + IPADDR_V4MAPPED_OFFSET, IPADDR_V4_LEN);
	}
	have = ipaddr_of(client);
	if (have.family == want.family &&
	    memcmp(have.b, want.b,
		   want.family == AF_INET ? IPADDR_V4_LEN : IPADDR_V6_LEN) == 0)
		return HELO_OK;
	return HELO_LITERAL_FOREIGN;
}

/* Characters, label lengths and empty labels of a name without its
 * trailing dot. */
static unsigned helo_syntax(const char *s, size_t n)
{
	size_t label = 0;

	if (n == 0)
		return HELO_SYNTAX;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return HELO_SYNTAX;
			label = 0;
			continue;
		}
		if (!ascii_is_alpha(c) && !ascii_is_digit(c) && c != '-' &&
		    c != '_')
			return HELO_SYNTAX;
		if (++label > HELO_LABEL_MAX)
			return HELO_SYNTAX;
	}
	return HELO_OK;
}

static unsigned helo_fqdn(const char *s, size_t n)
{
	char text[INET6_ADDRSTRLEN];
	unsigned char bin[IPADDR_V6_LEN];
	size_t last = n;
	bool digits = true;

	/* A bare IPv6 address has no dot but deserves saying what it is. */
	if (memchr(s, ':', n) && ascii_cstr(text, sizeof text, s, n) &&
	    inet_pton(AF_INET6, text, bin) == 1)
		return HELO_NOT_FQDN;
	while (last > 0 && s[last - 1] != '.')
		last--;
	if (last == 0)
		return HELO_NOT_FQDN;
	/* A numeric last label: a bare IPv4 address, or no TLD at all. */
	for (size_t i = last; i < n; i++)
		digits = digits && ascii_is_digit((unsigned char)s[i]);
	return digits ? HELO_NOT_FQDN : HELO_OK;
}

static unsigned helo_localhost(const char *s, size_t n)
{
	static const char suffix[] = ".localhost";
	size_t sn = sizeof suffix - 1;

	if (ascii_eq_nocase(s, n, "localhost", strlen("localhost")) ||
	    ascii_eq_nocase(s, n, "localhost.localdomain",
			      strlen("localhost.localdomain")))
		return HELO_LOCALHOST;
	if (n > sn && ascii_eq_nocase(s + n - sn, sn, suffix, sn))
		return HELO_LOCALHOST;
	return HELO_OK;
}

static unsigned helo_ours(const char *s, size_t n, const char *myhostname)
{
	size_t m;

	if (!myhostname)
		return HELO_OK;
	m = strlen(myhostname);
	if (m > 0 && myhostname[m - 1] == '.')
		m--;
	return m > 0 && ascii_eq_nocase(s, n, myhostname, m) ? HELO_OURS
							       : HELO_OK;
}

unsigned helo_check(const char *helo, size_t len, const struct sockaddr *client,
		    const char *myhostname)
{
	unsigned flags = HELO_OK;
	size_t n = len;

	if (!helo || len == 0)
		return HELO_NOT_FQDN | HELO_SYNTAX;
	if (len > HELO_NAME_MAX)
		flags |= HELO_SYNTAX;
	if (helo[0] == '[')
		return flags | helo_literal(helo, len, client);
	if (helo[n - 1] == '.')
		n--; /* the root label: "mx.example.org." is fully qualified */
	flags |= helo_syntax(helo, n);
	flags |= helo_fqdn(helo, n);
	flags |= helo_localhost(helo, n);
	flags |= helo_ours(helo, n, myhostname);
	return flags;
}

