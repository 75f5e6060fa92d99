/*
 * signals: pure checks on names and addresses behind the PTRGENERIC, HELO,
 * ALLOWLIST and DENYLIST classification signals (see signals.h).
 *
 * Exports rdns_generic, helo_check and the cidr_list type with
 * cidr_parse, cidr_load, cidr_match, cidr_count, cidr_free.
 *
 * Ownership: rdns_generic and helo_check do no I/O and no allocation and
 * read only the bytes they are given (no NUL terminator needed). A
 * cidr_list is allocated by cidr_parse/cidr_load, owned by the caller,
 * read-only afterwards (safe to share between threads) and released with
 * cidr_free. cidr_load blocks on the file: start-up code only.
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
 * cidr lists: one network per line, "addr/prefix" or a bare address,
 * '#' starts a comment anywhere, blank lines and surrounding whitespace
 * ignored. A network with host bits set beyond the prefix
 * ("192.0.2.1/24") is an error, not a warning as in Postfix's cidr
 * tables: the author meant either the host or the network and guessing
 * either way silently lists the wrong clients; the message names the
 * network that was probably meant. cidr_load's errors are "PATH:LINE:
 * what" or "PATH: strerror". Entries inside
 * ::ffff:0:0/96 with a prefix of at least 96 are stored as IPv4. Storage:
 * each family is a sorted array of merged, disjoint [low, high] ranges,
 * so a lookup is one binary search, O(log n), whatever mix of prefixes
 * the list holds. Rejected: a per-prefix-length table (up to 129 probes
 * per IPv6 lookup) and a radix trie (more code, more allocations, no
 * gain at these sizes).
 */
#include "signals.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGNALS_NAME_MAX 255 /* RFC 1035 2.3.4 */
#define SIGNALS_LABEL_MAX 63 /* RFC 1035 2.3.4 */
#define SIGNALS_V4_LEN 4
#define SIGNALS_V6_LEN 16
#define SIGNALS_V4_BITS 32
#define SIGNALS_V6_BITS 128
#define SIGNALS_V6_GROUPS 8
#define SIGNALS_U64_BITS 64
#define SIGNALS_V6_NIBBLES 32
/* Where an IPv4-mapped address keeps its IPv4 part (RFC 4291 2.5.5.2). */
#define SIGNALS_V4MAPPED_OFFSET 12
#define SIGNALS_V4MAPPED_BITS 96

#define RDNS_OCTET_DIGITS_MAX 3
#define RDNS_V4_PADDED_LEN 12 /* "203000113007" */
#define RDNS_V4_HEX_LEN 8     /* "cb007107" */
#define RDNS_V6_GROUP_DIGITS_MAX 4
#define RDNS_V6_GROUPS_MIN 3
#define RDNS_DOMAIN_LABELS 2
/* A name of 255 bytes holds at most 128 digit or hex runs. */
#define RDNS_RUNS_MAX ((SIGNALS_NAME_MAX + 1) / 2)
#define RDNS_RUN_NONE UINT32_MAX /* a run that can match no octet/group */

#define HELO_V6_TAG "IPv6:"

#define CIDR_FILE_MAX ((size_t)64 << 20)
#define CIDR_READ_CHUNK 65536
#define CIDR_ECHO_MAX 64 /* bytes of a bad line quoted in an error */
#define CIDR_PREFIX_DIGITS_MAX 3
#define CIDR_INITIAL_CAP 64

/* ---- addresses ---------------------------------------------------------- */

struct signals_addr {
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC when unknown */
	unsigned char b[SIGNALS_V6_LEN];
};

static const unsigned char signals_v4mapped_prefix[SIGNALS_V4MAPPED_OFFSET] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

static bool signals_is_v4mapped(const unsigned char b[SIGNALS_V6_LEN])
{
	return memcmp(b, signals_v4mapped_prefix, SIGNALS_V4MAPPED_OFFSET) == 0;
}

/* The client address, mapped IPv4 unwrapped; memcpy because callers may
 * hand us a struct sockaddr without the alignment of the longer types. */
static struct signals_addr signals_addr_of(const struct sockaddr *sa)
{
	struct signals_addr a = {.family = AF_UNSPEC};
	sa_family_t family;

	if (!sa)
		return a;
	memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family),
	       sizeof family);
	if (family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof sin);
		a.family = AF_INET;
		memcpy(a.b, &sin.sin_addr, SIGNALS_V4_LEN);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, sa, sizeof sin6);
		if (signals_is_v4mapped(sin6.sin6_addr.s6_addr)) {
			a.family = AF_INET;
			memcpy(a.b, sin6.sin6_addr.s6_addr + SIGNALS_V4MAPPED_OFFSET,
			       SIGNALS_V4_LEN);
		} else {
			a.family = AF_INET6;
			memcpy(a.b, sin6.sin6_addr.s6_addr, SIGNALS_V6_LEN);
		}
	}
	return a;
}

static int signals_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool signals_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool signals_is_alpha(int c)
{
	c = signals_lower(c);
	return c >= 'a' && c <= 'z';
}

static int signals_hex_value(int c)
{
	c = signals_lower(c);
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool signals_eq_nocase(const char *a, size_t alen, const char *b,
			      size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (signals_lower((unsigned char)a[i]) !=
		    signals_lower((unsigned char)b[i]))
			return false;
	return true;
}

/* Case-insensitive memmem for the short address spellings. */
static bool signals_contains_nocase(const char *hay, size_t hlen,
				    const char *needle, size_t nlen)
{
	for (size_t i = 0; nlen <= hlen && i <= hlen - nlen; i++)
		if (signals_eq_nocase(hay + i, nlen, needle, nlen))
			return true;
	return false;
}

/* Copies len bytes into buf as a C string for inet_pton; false when it
 * does not fit or holds a NUL that would cut the text short. */
static bool signals_cstr(char *buf, size_t cap, const char *s, size_t len)
{
	if (len >= cap || memchr(s, '\0', len))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return true;
}

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
		int v = base == 10 ? (signals_is_digit(c) ? c - '0' : -1)
				   : signals_hex_value(c);
		uint32_t value = 0;
		size_t start = i;

		if (v < 0) {
			i++;
			continue;
		}
		while (i < len) {
			c = (unsigned char)name[i];
			v = base == 10 ? (signals_is_digit(c) ? c - '0' : -1)
				       : signals_hex_value(c);
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
	uint32_t runs[RDNS_RUNS_MAX], octets[SIGNALS_V4_LEN];
	char text[RDNS_V4_PADDED_LEN + 1];
	size_t n = rdns_runs(name, len, 10, RDNS_OCTET_DIGITS_MAX, false, runs);

	for (size_t k = 0; k < SIGNALS_V4_LEN; k++)
		octets[k] = b[k];
	if (rdns_sequence(runs, n, octets, SIGNALS_V4_LEN, true))
		return true;
	snprintf(text, sizeof text, "%03u%03u%03u%03u", b[0], b[1], b[2], b[3]);
	if (signals_contains_nocase(name, len, text, RDNS_V4_PADDED_LEN))
		return true;
	snprintf(text, sizeof text, "%03u%03u%03u%03u", b[3], b[2], b[1], b[0]);
	if (signals_contains_nocase(name, len, text, RDNS_V4_PADDED_LEN))
		return true;
	snprintf(text, sizeof text, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
	return signals_contains_nocase(name, len, text, RDNS_V4_HEX_LEN);
}

static bool rdns_has_v6(const char *name, size_t len, const unsigned char *b)
{
	static const char hex[] = "0123456789abcdef";
	char nibbles[SIGNALS_V6_NIBBLES], reversed[SIGNALS_V6_NIBBLES];
	char digits[SIGNALS_NAME_MAX];
	uint32_t runs[RDNS_RUNS_MAX], groups[SIGNALS_V6_GROUPS];
	size_t nd = 0, ng = 0, n;

	for (size_t k = 0; k < SIGNALS_V6_LEN; k++) {
		nibbles[2 * k] = hex[b[k] >> 4];
		nibbles[2 * k + 1] = hex[b[k] & 0xf];
	}
	for (size_t k = 0; k < SIGNALS_V6_NIBBLES; k++)
		reversed[k] = nibbles[SIGNALS_V6_NIBBLES - 1 - k];
	/* All hex digits of the name, separators dropped: 32 exact nibbles
	 * cannot come together by chance. */
	for (size_t i = 0; i < len && nd < sizeof digits; i++)
		if (signals_hex_value((unsigned char)name[i]) >= 0)
			digits[nd++] = (char)signals_lower((unsigned char)name[i]);
	if (signals_contains_nocase(digits, nd, nibbles, SIGNALS_V6_NIBBLES) ||
	    signals_contains_nocase(digits, nd, reversed, SIGNALS_V6_NIBBLES))
		return true;

	for (size_t k = 0; k < SIGNALS_V6_GROUPS; k++) {
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
	return pos < end && signals_is_digit((unsigned char)name[pos]);
}

static bool rdns_keyword(const char *name, size_t end, size_t start, size_t pos)
{
	size_t n = pos - start;

	/* "ip4"/"ip6" name the protocol ("smtp-ip6.example.org"). */
	if (signals_eq_nocase(name + start, n, "ip", 2) && pos < end &&
	    (name[pos] == '4' || name[pos] == '6') &&
	    (pos + 1 == end || !signals_is_digit((unsigned char)name[pos + 1])))
		return false;
	for (size_t k = 0; k < sizeof rdns_keywords / sizeof rdns_keywords[0];
	     k++) {
		const struct rdns_keyword *kw = &rdns_keywords[k];
		if (!signals_eq_nocase(name + start, n, kw->word, strlen(kw->word)))
			continue;
		return kw->need == RDNS_KW_ALONE ||
		       rdns_number_follows(name, end, pos);
	}
	/* "3g"/"4g": split at digits the 'g' stands alone after one digit. */
	return n == 1 && signals_lower((unsigned char)name[start]) == 'g' &&
	       start >= 1 && (name[start - 1] == '3' || name[start - 1] == '4') &&
	       (start == 1 || !signals_is_digit((unsigned char)name[start - 2]));
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

		if (!signals_is_alpha((unsigned char)name[i])) {
			i++;
			continue;
		}
		while (i < end && signals_is_alpha((unsigned char)name[i]))
			i++;
		if (rdns_keyword(name, end, start, i))
			return true;
	}
	return false;
}

bool rdns_generic(const char *name, size_t len, const struct sockaddr *addr)
{
	struct signals_addr a;

	if (!name || len == 0 || len > SIGNALS_NAME_MAX)
		return false;
	if (name[len - 1] == '.')
		len--;
	a = signals_addr_of(addr);
	if (a.family == AF_INET && rdns_has_v4(name, len, a.b))
		return true;
	if (a.family == AF_INET6 && rdns_has_v6(name, len, a.b))
		return true;
	return rdns_has_keyword(name, len);
}

/* ---- helo_check --------------------------------------------------------- */

static unsigned helo_literal(const char *helo, size_t len,
			     const struct sockaddr *client)
{
	char text[INET6_ADDRSTRLEN];
	const char *s = helo + 1;
	size_t n;
	struct signals_addr want = {.family = AF_INET}, have;
	size_t tag = strlen(HELO_V6_TAG);

	if (len < 2 || helo[len - 1] != ']')
		return HELO_SYNTAX;
	n = len - 2;
	if (n >= tag && signals_eq_nocase(s, tag, HELO_V6_TAG, tag)) {
		want.family = AF_INET6;
		s += tag;
		n -= tag;
	}
	if (!signals_cstr(text, sizeof text, s, n) ||
	    inet_pton(want.family, text, want.b) != 1)
		return HELO_SYNTAX;
	if (want.family == AF_INET6 && signals_is_v4mapped(want.b)) {
		want.family = AF_INET;
		memmove(want.b, want.b + SIGNALS_V4MAPPED_OFFSET, SIGNALS_V4_LEN);
	}
	have = signals_addr_of(client);
	if (have.family == want.family &&
	    memcmp(have.b, want.b,
		   want.family == AF_INET ? SIGNALS_V4_LEN : SIGNALS_V6_LEN) == 0)
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
		if (!signals_is_alpha(c) && !signals_is_digit(c) && c != '-' &&
		    c != '_')
			return HELO_SYNTAX;
		if (++label > SIGNALS_LABEL_MAX)
			return HELO_SYNTAX;
	}
	return HELO_OK;
}

static unsigned helo_fqdn(const char *s, size_t n)
{
	char text[INET6_ADDRSTRLEN];
	unsigned char bin[SIGNALS_V6_LEN];
	size_t last = n;
	bool digits = true;

	/* A bare IPv6 address has no dot but deserves saying what it is. */
	if (memchr(s, ':', n) && signals_cstr(text, sizeof text, s, n) &&
	    inet_pton(AF_INET6, text, bin) == 1)
		return HELO_NOT_FQDN;
	while (last > 0 && s[last - 1] != '.')
		last--;
	if (last == 0)
		return HELO_NOT_FQDN;
	/* A numeric last label: a bare IPv4 address, or no TLD at all. */
	for (size_t i = last; i < n; i++)
		digits = digits && signals_is_digit((unsigned char)s[i]);
	return digits ? HELO_NOT_FQDN : HELO_OK;
}

static unsigned helo_localhost(const char *s, size_t n)
{
	static const char suffix[] = ".localhost";
	size_t sn = sizeof suffix - 1;

	if (signals_eq_nocase(s, n, "localhost", strlen("localhost")) ||
	    signals_eq_nocase(s, n, "localhost.localdomain",
			      strlen("localhost.localdomain")))
		return HELO_LOCALHOST;
	if (n > sn && signals_eq_nocase(s + n - sn, sn, suffix, sn))
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
	return m > 0 && signals_eq_nocase(s, n, myhostname, m) ? HELO_OURS
							       : HELO_OK;
}

unsigned helo_check(const char *helo, size_t len, const struct sockaddr *client,
		    const char *myhostname)
{
	unsigned flags = HELO_OK;
	size_t n = len;

	if (!helo || len == 0)
		return HELO_NOT_FQDN | HELO_SYNTAX;
	if (len > SIGNALS_NAME_MAX)
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

/* ---- cidr lists --------------------------------------------------------- */

struct cidr_u128 {
	uint64_t hi, lo;
};

struct cidr_v4 {
	uint32_t low, high;
};

struct cidr_v6 {
	struct cidr_u128 low, high;
};

struct cidr_list {
	struct cidr_v4 *v4; /* sorted, disjoint, non-adjacent after parse */
	size_t n4, cap4;
	struct cidr_v6 *v6;
	size_t n6, cap6;
	size_t count; /* networks as written, before merging */
};

static uint32_t cidr_v4_value(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

static struct cidr_u128 cidr_v6_value(const unsigned char *b)
{
	struct cidr_u128 v = {0, 0};

	for (size_t k = 0; k < SIGNALS_V6_LEN / 2; k++) {
		v.hi = v.hi << 8 | b[k];
		v.lo = v.lo << 8 | b[k + SIGNALS_V6_LEN / 2];
	}
	return v;
}

/* The host bits of a /prefix as a mask; shifts by 32/64 are undefined,
 * hence the explicit edges. */
static uint32_t cidr_v4_hostmask(unsigned prefix)
{
	return prefix == 0 ? UINT32_MAX
			   : (prefix >= SIGNALS_V4_BITS ? 0
							: UINT32_MAX >> prefix);
}

static uint64_t cidr_u64_hostmask(unsigned prefix)
{
	return prefix == 0 ? UINT64_MAX
			   : (prefix >= SIGNALS_U64_BITS ? 0 : UINT64_MAX >> prefix);
}

static struct cidr_u128 cidr_v6_hostmask(unsigned prefix)
{
	struct cidr_u128 m;

	m.hi = cidr_u64_hostmask(prefix);
	m.lo = prefix <= SIGNALS_U64_BITS
		       ? UINT64_MAX
		       : cidr_u64_hostmask(prefix - SIGNALS_U64_BITS);
	return m;
}

static int cidr_u128_cmp(struct cidr_u128 a, struct cidr_u128 b)
{
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	if (a.lo != b.lo)
		return a.lo < b.lo ? -1 : 1;
	return 0;
}

static int cidr_v4_cmp(const void *pa, const void *pb)
{
	const struct cidr_v4 *a = pa, *b = pb;

	if (a->low != b->low)
		return a->low < b->low ? -1 : 1;
	return 0;
}

static int cidr_v6_cmp(const void *pa, const void *pb)
{
	const struct cidr_v6 *a = pa, *b = pb;

	return cidr_u128_cmp(a->low, b->low);
}

/* arr with room for element n (of size sz), moved if it had to grow;
 * NULL, arr untouched, when out of memory or the size would overflow. */
static void *cidr_grow(void *arr, size_t *cap, size_t n, size_t sz)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return arr;
	ncap = *cap ? *cap * 2 : CIDR_INITIAL_CAP;
	if (ncap < *cap || ncap > SIZE_MAX / sz)
		return NULL;
	p = realloc(arr, ncap * sz);
	if (p)
		*cap = ncap;
	return p;
}

static void cidr_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void cidr_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* The offending text, printable and bounded, for an error message. */
static void cidr_echo(char *buf, size_t cap, const char *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[o++] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
	}
	buf[o] = '\0';
}

enum cidr_line_status {
	CIDR_LINE_OK,
	CIDR_LINE_BAD,    /* message already in err */
	CIDR_LINE_NOMEM,
};

static bool cidr_token_char(int c)
{
	return signals_hex_value(c) >= 0 || c == '.' || c == ':' || c == '/';
}

static enum cidr_line_status cidr_add_v4(struct cidr_list *l,
					 const unsigned char *b, unsigned prefix)
{
	uint32_t v = cidr_v4_value(b), host = cidr_v4_hostmask(prefix);
	struct cidr_v4 *p = cidr_grow(l->v4, &l->cap4, l->n4, sizeof *l->v4);

	if (!p)
		return CIDR_LINE_NOMEM;
	l->v4 = p;
	l->v4[l->n4].low = v;
	l->v4[l->n4].high = v | host;
	l->n4++;
	return CIDR_LINE_OK;
}

static enum cidr_line_status cidr_add_v6(struct cidr_list *l,
					 const unsigned char *b, unsigned prefix)
{
	struct cidr_u128 v = cidr_v6_value(b), host = cidr_v6_hostmask(prefix);
	struct cidr_v6 *p = cidr_grow(l->v6, &l->cap6, l->n6, sizeof *l->v6);

	if (!p)
		return CIDR_LINE_NOMEM;
	l->v6 = p;
	l->v6[l->n6].low = v;
	l->v6[l->n6].high.hi = v.hi | host.hi;
	l->v6[l->n6].high.lo = v.lo | host.lo;
	l->n6++;
	return CIDR_LINE_OK;
}

/* Zeroes the host bits of b (len bytes) beyond prefix; true when any was
 * set. */
static bool cidr_clear_host(unsigned char *b, size_t len, unsigned prefix)
{
	bool set = false;

	for (size_t k = 0; k < len; k++) {
		unsigned keep = prefix >= 8 * (k + 1)
					? 8
					: (prefix > 8 * k ? prefix - 8 * (unsigned)k : 0);
		unsigned char mask = (unsigned char)(0xff00u >> keep);

		set = set || (b[k] & ~mask) != 0;
		b[k] &= mask;
	}
	return set;
}

/* One trimmed, comment-free, non-empty line. */
static enum cidr_line_status cidr_line(struct cidr_list *l, const char *s,
				       size_t n, size_t lineno, char *err,
				       size_t err_len)
{
	char echo[CIDR_ECHO_MAX + 1], text[INET6_ADDRSTRLEN], net[INET6_ADDRSTRLEN];
	unsigned char b[SIGNALS_V6_LEN];
	const char *slash = memchr(s, '/', n);
	size_t alen = slash ? (size_t)(slash - s) : n;
	int family = memchr(s, ':', alen) ? AF_INET6 : AF_INET;
	unsigned bits = family == AF_INET ? SIGNALS_V4_BITS : SIGNALS_V6_BITS;
	unsigned prefix = bits;
	size_t blen = family == AF_INET ? SIGNALS_V4_LEN : SIGNALS_V6_LEN;

	cidr_echo(echo, sizeof echo, s, n);
	for (size_t i = 0; i < n; i++) {
		if (!cidr_token_char((unsigned char)s[i])) {
			cidr_err(err, err_len, "%zu: bad network '%s'", lineno, echo);
			return CIDR_LINE_BAD;
		}
	}
	if (!signals_cstr(text, sizeof text, s, alen) ||
	    inet_pton(family, text, b) != 1) {
		cidr_err(err, err_len, "%zu: bad network '%s'", lineno, echo);
		return CIDR_LINE_BAD;
	}
	if (slash) {
		const char *p = slash + 1;
		size_t pn = n - alen - 1;

		if (pn == 0) {
			cidr_err(err, err_len, "%zu: bad network '%s'", lineno, echo);
			return CIDR_LINE_BAD;
		}
		prefix = 0;
		for (size_t i = 0; i < pn; i++) {
			if (!signals_is_digit((unsigned char)p[i])) {
				cidr_err(err, err_len, "%zu: bad network '%s'",
					 lineno, echo);
				return CIDR_LINE_BAD;
			}
			if (i < CIDR_PREFIX_DIGITS_MAX)
				prefix = prefix * 10 + (unsigned)(p[i] - '0');
		}
		if (pn > CIDR_PREFIX_DIGITS_MAX || prefix > bits) {
			cidr_err(err, err_len, "%zu: prefix out of range", lineno);
			return CIDR_LINE_BAD;
		}
	}
	if (cidr_clear_host(b, blen, prefix)) {
		if (!inet_ntop(family, b, net, sizeof net))
			net[0] = '\0';
		cidr_err(err, err_len,
			 "%zu: bad network '%s': host bits set (network is %s/%u)",
			 lineno, echo, net, prefix);
		return CIDR_LINE_BAD;
	}
	if (family == AF_INET6 && prefix >= SIGNALS_V4MAPPED_BITS &&
	    signals_is_v4mapped(b))
		return cidr_add_v4(l, b + SIGNALS_V4MAPPED_OFFSET,
				   prefix - SIGNALS_V4MAPPED_BITS);
	return family == AF_INET ? cidr_add_v4(l, b, prefix)
				 : cidr_add_v6(l, b, prefix);
}

static bool cidr_is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Sorts and merges overlapping or adjacent ranges so a lookup is one
 * binary search for the last range starting at or below the address. */
static void cidr_merge(struct cidr_list *l)
{
	size_t o = 0;

	if (l->n4 > 0) {
		qsort(l->v4, l->n4, sizeof *l->v4, cidr_v4_cmp);
		for (size_t i = 1; i < l->n4; i++) {
			struct cidr_v4 *last = &l->v4[o];
			if (last->high == UINT32_MAX || l->v4[i].low <= last->high + 1) {
				if (l->v4[i].high > last->high)
					last->high = l->v4[i].high;
			} else {
				l->v4[++o] = l->v4[i];
			}
		}
		l->n4 = o + 1;
	}
	o = 0;
	if (l->n6 > 0) {
		qsort(l->v6, l->n6, sizeof *l->v6, cidr_v6_cmp);
		for (size_t i = 1; i < l->n6; i++) {
			struct cidr_v6 *last = &l->v6[o];
			struct cidr_u128 next = last->high;

			/* next = high + 1, or the top of the space */
			if (++next.lo == 0)
				next.hi++;
			if ((last->high.hi == UINT64_MAX && last->high.lo == UINT64_MAX) ||
			    cidr_u128_cmp(l->v6[i].low, next) <= 0) {
				if (cidr_u128_cmp(l->v6[i].high, last->high) > 0)
					last->high = l->v6[i].high;
			} else {
				l->v6[++o] = l->v6[i];
			}
		}
		l->n6 = o + 1;
	}
}

struct cidr_list *cidr_parse(const char *text, size_t len, char *err,
			     size_t err_len)
{
	struct cidr_list *l = calloc(1, sizeof *l);
	size_t lineno = 0, pos = 0;

	if (!l) {
		cidr_err(err, err_len, "0: out of memory");
		return NULL;
	}
	if (!text)
		len = 0;
	while (pos < len) {
		const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		const char *hash = memchr(line, '#', n);
		size_t start = 0;
		enum cidr_line_status st;

		lineno++;
		pos += n + (nl ? 1 : 0);
		if (hash)
			n = (size_t)(hash - line);
		while (start < n && cidr_is_space((unsigned char)line[start]))
			start++;
		while (n > start && cidr_is_space((unsigned char)line[n - 1]))
			n--;
		if (n == start)
			continue;
		st = cidr_line(l, line + start, n - start, lineno, err, err_len);
		if (st == CIDR_LINE_NOMEM)
			cidr_err(err, err_len, "%zu: out of memory", lineno);
		if (st != CIDR_LINE_OK) {
			cidr_free(l);
			return NULL;
		}
		l->count++;
	}
	cidr_merge(l);
	return l;
}

struct cidr_list *cidr_load(const char *path, char *err, size_t err_len)
{
	FILE *f;
	char *buf = NULL, perr[256];
	size_t n = 0, cap = 0;
	struct cidr_list *l;

	if (!path) {
		cidr_err(err, err_len, "(null): no file name");
		return NULL;
	}
	f = fopen(path, "re");
	if (!f) {
		cidr_err(err, err_len, "%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		size_t got;

		if (n == cap) {
			char *p;
			if (cap >= CIDR_FILE_MAX) {
				cidr_err(err, err_len, "%s: larger than %zu bytes", path,
					 CIDR_FILE_MAX);
				goto fail;
			}
			cap = cap ? cap * 2 : CIDR_READ_CHUNK;
			p = realloc(buf, cap);
			if (!p) {
				cidr_err(err, err_len, "%s: out of memory", path);
				goto fail;
			}
			buf = p;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		cidr_err(err, err_len, "%s: %s", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	l = cidr_parse(buf, n, perr, sizeof perr);
	free(buf);
	if (!l)
		cidr_err(err, err_len, "%s:%s", path, perr);
	return l;
fail:
	free(buf);
	fclose(f);
	return NULL;
}

bool cidr_match(const struct cidr_list *list, const struct sockaddr *addr)
{
	struct signals_addr a = signals_addr_of(addr);
	size_t lo = 0, hi;

	if (!list)
		return false;
	if (a.family == AF_INET) {
		uint32_t v = cidr_v4_value(a.b);

		/* first range starting above v; the one before may hold it */
		hi = list->n4;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (list->v4[mid].low <= v)
				lo = mid + 1;
			else
				hi = mid;
		}
		return lo > 0 && v <= list->v4[lo - 1].high;
	}
	if (a.family == AF_INET6) {
		struct cidr_u128 v = cidr_v6_value(a.b);

		hi = list->n6;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (cidr_u128_cmp(list->v6[mid].low, v) <= 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		return lo > 0 && cidr_u128_cmp(v, list->v6[lo - 1].high) <= 0;
	}
	return false;
}

size_t cidr_count(const struct cidr_list *list)
{
	return list ? list->count : 0;
}

void cidr_free(struct cidr_list *list)
{
	if (!list)
		return;
	free(list->v4);
	free(list->v6);
	free(list);
}
