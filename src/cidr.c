/*
 * cidr: lists of networks behind the ALLOWLIST and DENYLIST classification
 * signals (see cidr.h).
 *
 * Exports the cidr_list type with cidr_parse, cidr_load, cidr_match,
 * cidr_count, cidr_free. A cidr_list is allocated by cidr_parse/cidr_load,
 * owned by the caller, read-only afterwards (safe to share between
 * threads) and released with cidr_free. cidr_load blocks on the file:
 * start-up code only.
 *
 * Addresses: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is treated as
 * the IPv4 address everywhere, because a dual-stack listener reports IPv4
 * clients that way and nobody writes lists or PTR names for the mapped
 * form.
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
#include "cidr.h"

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

#define CIDR_V4_BITS 32
#define CIDR_V6_BITS 128
#define CIDR_U64_BITS 64
#define CIDR_V4MAPPED_BITS 96 /* ::ffff:0:0/96 */
#define CIDR_FILE_MAX ((size_t)64 << 20)
#define CIDR_READ_CHUNK 65536
#define CIDR_ECHO_MAX 64 /* bytes of a bad line quoted in an error */
#define CIDR_PREFIX_DIGITS_MAX 3
#define CIDR_INITIAL_CAP 64

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

	for (size_t k = 0; k < IPADDR_V6_LEN / 2; k++) {
		v.hi = v.hi << 8 | b[k];
		v.lo = v.lo << 8 | b[k + IPADDR_V6_LEN / 2];
	}
	return v;
}

/* The host bits of a /prefix as a mask; shifts by 32/64 are undefined,
 * hence the explicit edges. */
static uint32_t cidr_v4_hostmask(unsigned prefix)
{
	return prefix == 0 ? UINT32_MAX
			   : (prefix >= CIDR_V4_BITS ? 0
							: UINT32_MAX >> prefix);
}

static uint64_t cidr_u64_hostmask(unsigned prefix)
{
	return prefix == 0 ? UINT64_MAX
			   : (prefix >= CIDR_U64_BITS ? 0 : UINT64_MAX >> prefix);
}

static struct cidr_u128 cidr_v6_hostmask(unsigned prefix)
{
	struct cidr_u128 m;

	m.hi = cidr_u64_hostmask(prefix);
	m.lo = prefix <= CIDR_U64_BITS
		       ? UINT64_MAX
		       : cidr_u64_hostmask(prefix - CIDR_U64_BITS);
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
	return ascii_hex_value(c) >= 0 || c == '.' || c == ':' || c == '/';
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
	unsigned char b[IPADDR_V6_LEN];
	const char *slash = memchr(s, '/', n);
	size_t alen = slash ? (size_t)(slash - s) : n;
	int family = memchr(s, ':', alen) ? AF_INET6 : AF_INET;
	unsigned bits = family == AF_INET ? CIDR_V4_BITS : CIDR_V6_BITS;
	unsigned prefix = bits;
	size_t blen = family == AF_INET ? IPADDR_V4_LEN : IPADDR_V6_LEN;

	cidr_echo(echo, sizeof echo, s, n);
	for (size_t i = 0; i < n; i++) {
		if (!cidr_token_char((unsigned char)s[i])) {
			cidr_err(err, err_len, "%zu: bad network '%s'", lineno, echo);
			return CIDR_LINE_BAD;
		}
	}
	if (!ascii_cstr(text, sizeof text, s, alen) ||
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
			if (!ascii_is_digit((unsigned char)p[i])) {
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
	if (family == AF_INET6 && prefix >= CIDR_V4MAPPED_BITS &&
	    ipaddr_is_v4mapped(b))
		return cidr_add_v4(l, b + IPADDR_V4MAPPED_OFFSET,
				   prefix - CIDR_V4MAPPED_BITS);
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
	struct ipaddr a = ipaddr_of(addr);
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
