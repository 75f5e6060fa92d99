/*
 * rdns: whether a client's PTR name is a generic one, behind the
 * PTRGENERIC classification signal (see rdns.h).
 *
 * Exports rdns_generic. No I/O, no allocation; reads only the bytes it is
 * given (no NUL terminator needed).
 *
 * Addresses: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is treated as
 * the IPv4 address everywhere, because a dual-stack listener reports IPv4
 * clients that way and nobody writes lists or PTR names for the mapped
 * form.
 *
 * rdns_generic heuristic. A PTR name is generic when
 *   1. it embeds the client's IPv4 address: four digit runs in a row (any
 *      non-digit separators between them, leading zeros allowed) equal to
 *      the octets in order or reversed ("203-0-113-7", "7.113.0.203",
 *      "ip203-0-113-7", "203-000-113-007"), or the twelve zero-padded
 *      digits ("203000113007", either order), or the eight hex digits
 *      ("cb007107"); or
 *   2. it embeds the client's IPv6 address: all 32 nibbles in order or
 *      reversed, ignoring separators ("2001-0db8-...-0001", ip6.arpa
 *      style), or the hex groups with zero groups dropped ("2001-db8--1"),
 *      when the address has at least RDNS_V6_GROUPS_MIN non-zero groups
 *      (fewer would be the provider's prefix, which legitimate names may
 *      carry); or
 *   3. a keyword appears as a whole token outside the registered domain.
 *      Tokens are split at every non-letter, so "ppp203", "dsl-pool" and
 *      "3g" are seen but "poolside" and "cabletron" are not. host, ip and
 *      static count only when a number follows ("host-7", "ip203",
 *      "static-203-0-113-7"); "ip4"/"ip6" name a protocol, not an address.
 *      The last RDNS_DOMAIN_LABELS labels are not searched, because they
 *      are the operator's domain name, not a description of the host:
 *      "mail.mobile.de" and "mx.pool.com" stay clean.
 * A single number ("smtp-out-42", "mx1") is never an address. A trailing
 * dot is ignored; a name over 255 bytes is no DNS name and gives false.
 * Known false positives: mail servers whose host labels use these words
 * ("mail.client.example.com", "res.example.org", "nat-gw.example.net"),
 * keywords in a subdomain of the operator's ("mx.pool.ntp.org"), and,
 * under a two-label public suffix, the domain shield is one label short
 * ("mx.cable.co.uk" matches "cable"). Known false negatives: names that
 * carry only part of the address ("c-113-7.example.net"), or another
 * host's numbers (the contract is the client's digits), or keywords this
 * list lacks ("fios", "ftth"). The signal is one weighted input to a
 * score, never a verdict on its own, so these errors are tolerable.
 * Rejected: a regular-expression table (the generic-PTR regexp maps
 * often fed to Postfix) -- no regex engine in the process, and comparing
 * with the client's own address is what makes the check precise.
 *
 */
#include "rdns.h"

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

#define RDNS_NAME_MAX 255 /* RFC 1035 2.3.4 */
#define RDNS_V6_GROUPS 8
#define RDNS_V6_NIBBLES 32
#define RDNS_OCTET_DIGITS_MAX 3
#define RDNS_V4_PADDED_LEN 12 /* "203000113007" */
#define RDNS_V4_HEX_LEN 8     /* "cb007107" */
#define RDNS_V6_GROUP_DIGITS_MAX 4
#define RDNS_V6_GROUPS_MIN 3
#define RDNS_DOMAIN_LABELS 2
/* A name of 255 bytes holds at most 128 digit or hex runs. */
#define RDNS_RUNS_MAX ((RDNS_NAME_MAX + 1) / 2)
#define RDNS_RUN_NONE UINT32_MAX /* a run that can match no octet/group */


/* ---- rdns_generic ------------------------------------------------------- */

/* Numeric values of the maximal runs of digits (base 10) or hex digits
 * (base 16) in name; a run too long to be an octet or group is
 * RDNS_RUN_NONE so that it breaks a sequence. Zero runs are dropped when
 * skip_zero (IPv6 names compress or omit zero groups). */
static size_t rdns_runs(const char *name, size_t len, unsigned base,
			size_t digits_max, bool skip_zero,
			uint32_t runs[RDNS_RUNS_MAX])
{
	size_t n = 0, i = 0;

	while (i < len && n < RDNS_RUNS_MAX) {
		int c = (unsigned char)name[i];
		int v = base == 10 ? (ascii_is_digit(c) ? c - '0' : -1)
				   : ascii_hex_value(c);
		uint32_t value = 0;
		size_t start = i;

		if (v < 0) {
			i++;
			continue;
		}
		while (i < len) {
			c = (unsigned char)name[i];
			v = base == 10 ? (ascii_is_digit(c) ? c - '0' : -1)
				       : ascii_hex_value(c);
			if (v < 0)
				break;
			if (i - start < digits_max)
				value = value * base + (uint32_t)v;
			i++;
		}
		if (i - start > digits_max)
			value = RDNS_RUN_NONE;
		if (skip_zero && value == 0)
			continue;
		runs[n++] = value;
	}
	return n;
}

/* Whether want[0..wn) occurs as consecutive elements of runs, forwards or,
 * when both_ways, backwards. */
static bool rdns_sequence(const uint32_t *runs, size_t n, const uint32_t *want,
			  size_t wn, bool both_ways)
{
	for (size_t i = 0; wn <= n && i <= n - wn; i++) {
		bool fwd = true, rev = both_ways;

		for (size_t k = 0; k < wn && (fwd || rev); k++) {
			fwd = fwd && runs[i + k] == want[k];
			rev = rev && runs[i + k] == want[wn - 1 - k];
		}
		if (fwd || rev)
			return true;
	}
	return false;
}

static bool rdns_has_v4(const char *name, size_t len, const unsigned char *b)
{
	uint32_t runs[RDNS_RUNS_MAX], octets[IPADDR_V4_LEN];
	char text[RDNS_V4_PADDED_LEN + 1];
	size_t n = rdns_runs(name, len, 10, RDNS_OCTET_DIGITS_MAX, false, runs);

	for (size_t k = 0; k < IPADDR_V4_LEN; k++)
		octets[k] = b[k];
	if (rdns_sequence(runs, n, octets, IPADDR_V4_LEN, true))
		return true;
	snprintf(text, sizeof text, "%03u%03u%03u%03u", b[0], b[1], b[2], b[3]);
	if (ascii_contains_nocase(name, len, text, RDNS_V4_PADDED_LEN))
		return true;
	snprintf(text, sizeof text, "%03u%03u%03u%03u", b[3], b[2], b[1], b[0]);
	if (ascii_contains_nocase(name, len, text, RDNS_V4_PADDED_LEN))
		return true;
	snprintf(text, sizeof text, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
	return ascii_contains_nocase(name, len, text, RDNS_V4_HEX_LEN);
}

static bool rdns_has_v6(const char *name, size_t len, const unsigned char *b)
{
	static const char hex[] = "0123456789abcdef";
	char nibbles[RDNS_V6_NIBBLES], reversed[RDNS_V6_NIBBLES];
	char digits[RDNS_NAME_MAX];
	uint32_t runs[RDNS_RUNS_MAX], groups[RDNS_V6_GROUPS];
	size_t nd = 0, ng = 0, n;

	for (size_t k = 0; k < IPADDR_V6_LEN; k++) {
		nibbles[2 * k] = hex[b[k] >> 4];
		nibbles[2 * k + 1] = hex[b[k] & 0xf];
	}
	for (size_t k = 0; k < RDNS_V6_NIBBLES; k++)
		reversed[k] = nibbles[RDNS_V6_NIBBLES - 1 - k];
	/* All hex digits of the name, separators dropped: 32 exact nibbles
	 * cannot come together by chance. */
	for (size_t i = 0; i < len && nd < sizeof digits; i++)
		if (ascii_hex_value((unsigned char)name[i]) >= 0)
			digits[nd++] = (char)ascii_lower((unsigned char)name[i]);
	if (ascii_contains_nocase(digits, nd, nibbles, RDNS_V6_NIBBLES) ||
	    ascii_contains_nocase(digits, nd, reversed, RDNS_V6_NIBBLES))
		return true;

	for (size_t k = 0; k < RDNS_V6_GROUPS; k++) {
		uint32_t g = (uint32_t)b[2 * k] << 8 | b[2 * k + 1];
		if (g != 0)
			groups[ng++] = g;
	}
	if (ng < RDNS_V6_GROUPS_MIN)
		return false;
	n = rdns_runs(name, len, 16, RDNS_V6_GROUP_DIGITS_MAX, true, runs);
	return rdns_sequence(runs, n, groups, ng, false);
}

enum rdns_keyword_need {
	RDNS_KW_ALONE,  /* the token alone is enough */
	RDNS_KW_NUMBER, /* only when a number follows: "host-7", "ip203" */
};

struct rdns_keyword {
	const char *word;
	enum rdns_keyword_need need;
};

static const struct rdns_keyword rdns_keywords[] = {
	{"dyn", RDNS_KW_ALONE},	     {"dynamic", RDNS_KW_ALONE},
	{"dsl", RDNS_KW_ALONE},	     {"adsl", RDNS_KW_ALONE},
	{"vdsl", RDNS_KW_ALONE},     {"xdsl", RDNS_KW_ALONE},
	{"pool", RDNS_KW_ALONE},     {"dhcp", RDNS_KW_ALONE},
	{"cable", RDNS_KW_ALONE},    {"ppp", RDNS_KW_ALONE},
	{"pppoe", RDNS_KW_ALONE},    {"dialup", RDNS_KW_ALONE},
	{"dial", RDNS_KW_ALONE},     {"client", RDNS_KW_ALONE},
	{"customer", RDNS_KW_ALONE}, {"broadband", RDNS_KW_ALONE},
	{"cpe", RDNS_KW_ALONE},	     {"res", RDNS_KW_ALONE},
	{"user", RDNS_KW_ALONE},     {"nat", RDNS_KW_ALONE},
	{"wireless", RDNS_KW_ALONE}, {"mobile", RDNS_KW_ALONE},
	{"lte", RDNS_KW_ALONE},	     {"host", RDNS_KW_NUMBER},
	{"ip", RDNS_KW_NUMBER},	     {"static", RDNS_KW_NUMBER},
};

/* A number right after the token, or after one '-' or '_'. */
static bool rdns_number_follows(const char *name, size_t end, size_t pos)
{
	if (pos < end && (name[pos] == '-' || name[pos] == '_'))
		pos++;
	return pos < end && ascii_is_digit((unsigned char)name[pos]);
}

static bool rdns_keyword(const char *name, size_t end, size_t start, size_t pos)
{
	size_t n = pos - start;

	/* "ip4"/"ip6" name the protocol ("smtp-ip6.example.org"). */
	if (ascii_eq_nocase(name + start, n, "ip", 2) && pos < end &&
	    (name[pos] == '4' || name[pos] == '6') &&
	    (pos + 1 == end || !ascii_is_digit((unsigned char)name[pos + 1])))
		return false;
	for (size_t k = 0; k < sizeof rdns_keywords / sizeof rdns_keywords[0];
	     k++) {
		const struct rdns_keyword *kw = &rdns_keywords[k];
		if (!ascii_eq_nocase(name + start, n, kw->word, strlen(kw->word)))
			continue;
		return kw->need == RDNS_KW_ALONE ||
		       rdns_number_follows(name, end, pos);
	}
	/* "3g"/"4g": split at digits the 'g' stands alone after one digit. */
	return n == 1 && ascii_lower((unsigned char)name[start]) == 'g' &&
	       start >= 1 && (name[start - 1] == '3' || name[start - 1] == '4') &&
	       (start == 1 || !ascii_is_digit((unsigned char)name[start - 2]));
}

static bool rdns_has_keyword(const char *name, size_t len)
{
	size_t end = len, dots = 0, i = 0;

	/* Leave out the registered domain: stop at the RDNS_DOMAIN_LABELS-th
	 * dot from the right; a name with no more labels than that has no
	 * host part to judge. */
	while (end > 0) {
		if (name[end - 1] == '.' && ++dots == RDNS_DOMAIN_LABELS)
			break;
		end--;
	}
	if (end == 0)
		return false;
	end--; /* the dot itself */
	while (i < end) {
		size_t start = i;

		if (!ascii_is_alpha((unsigned char)name[i])) {
			i++;
			continue;
		}
		while (i < end && ascii_is_alpha((unsigned char)name[i]))
			i++;
		if (rdns_keyword(name, end, start, i))
			return true;
	}
	return false;
}

bool rdns_generic(const char *name, size_t len, const struct sockaddr *addr)
{
	struct ipaddr a;

	if (!name || len == 0 || len > RDNS_NAME_MAX)
		return false;
	if (name[len - 1] == '.')
		len--;
	a = ipaddr_of(addr);
	if (a.family == AF_INET && rdns_has_v4(name, len, a.b))
		return true;
	if (a.family == AF_INET6 && rdns_has_v6(name, len, a.b))
		return true;
	return rdns_has_keyword(name, len);
}

