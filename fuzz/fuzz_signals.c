/*
 * fuzz_signals: libFuzzer target for rdns_generic, helo_check and the
 * cidr lists. Input: byte 0 picks the entry point (mod 3), byte 1 the
 * client family (mod 4: none, IPv4, IPv6, IPv4-mapped IPv6), the next 16
 * bytes the client address, the rest the text, copied into a buffer of
 * exactly its length so ASan sees any read past len.
 *
 * Beyond "does not crash" it checks properties the contracts promise:
 * rdns and HELO answers do not depend on ASCII case; a trailing dot does
 * not change rdns; a HELO name equal to myhostname is HELO_OURS; a cidr
 * list matches an address exactly when one of its lines, parsed alone,
 * does (so sorting and merging lose and invent nothing).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "signals.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HEAD 18 /* selector, family, 16 address bytes */
#define FUZZ_ADDR_LEN 16
#define FUZZ_NAME_MAX 300  /* past the 255 limit, to test it */
#define FUZZ_CIDR_MAX 4096 /* keeps the per-line cross-check cheap */
#define FUZZ_MYHOSTNAME "mx.sluice.example"
#define FUZZ_HELO_ALL                                                    \
	(HELO_LITERAL_FOREIGN | HELO_NOT_FQDN | HELO_OURS | HELO_LOCALHOST | \
	 HELO_SYNTAX)

enum fuzz_target { FUZZ_RDNS, FUZZ_HELO, FUZZ_CIDR, FUZZ_TARGETS };

static const struct sockaddr *fuzz_addr(struct sockaddr_storage *ss,
					unsigned family, const uint8_t *b)
{
	memset(ss, 0, sizeof *ss);
	switch (family % 4) {
	case 1: {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, b, 4);
		break;
	}
	case 2:
	case 3: {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, b, FUZZ_ADDR_LEN);
		if (family % 4 == 3) {
			memset(&sin6->sin6_addr, 0, 10);
			memset((char *)&sin6->sin6_addr + 10, 0xff, 2);
		}
		break;
	}
	default:
		return NULL;
	}
	return (const struct sockaddr *)ss;
}

/* A copy with ASCII letters flipped in case, exactly len bytes. */
static char *fuzz_flip_case(const char *s, size_t len)
{
	char *t = malloc(len ? len : 1);

	if (!t)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		else if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		t[i] = c;
	}
	return t;
}

static void fuzz_rdns(const char *s, size_t len, const struct sockaddr *sa)
{
	bool got = rdns_generic(s, len, sa);
	char *t = fuzz_flip_case(s, len);

	if (!t)
		return;
	if (rdns_generic(t, len, sa) != got)
		abort();
	free(t);
	if (len > 0 && len < FUZZ_NAME_MAX && s[len - 1] != '.' && len + 1 <= 255) {
		t = malloc(len + 1);
		if (!t)
			return;
		memcpy(t, s, len);
		t[len] = '.';
		if (rdns_generic(t, len + 1, sa) != got)
			abort();
		free(t);
	}
}

static void fuzz_helo(const char *s, size_t len, const struct sockaddr *sa)
{
	unsigned got = helo_check(s, len, sa, FUZZ_MYHOSTNAME);
	char *t;

	if (got & ~(unsigned)FUZZ_HELO_ALL)
		abort();
	t = fuzz_flip_case(s, len);
	if (!t)
		return;
	if (helo_check(t, len, sa, FUZZ_MYHOSTNAME) != got)
		abort();
	free(t);
	/* compared with itself as myhostname, a name is ours */
	if (len > 0 && s[0] != '[' && !memchr(s, '\0', len) &&
	    !(len == 1 && s[0] == '.')) {
		t = malloc(len + 1);
		if (!t)
			return;
		memcpy(t, s, len);
		t[len] = '\0';
		if (!(helo_check(s, len, sa, t) & HELO_OURS))
			abort();
		free(t);
	}
}

static void fuzz_cidr(const char *s, size_t len, const struct sockaddr *sa)
{
	char err[256];
	struct cidr_list *all = cidr_parse(s, len, err, sizeof err);
	bool want = false;
	size_t lines = 0, pos = 0;

	if (!all) {
		if (!memchr(err, '\0', sizeof err) || err[0] < '0' || err[0] > '9')
			abort(); /* "LINE: what" */
		return;
	}
	while (pos < len) {
		const char *nl = memchr(s + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (s + pos)) : len - pos;
		struct cidr_list *one = cidr_parse(s + pos, n, err, sizeof err);

		if (!one)
			abort(); /* a line of a list that parsed */
		lines++;
		want = want || cidr_match(one, sa);
		cidr_free(one);
		pos += n + (nl ? 1 : 0);
	}
	if (cidr_count(all) > lines || cidr_match(all, sa) != want)
		abort();
	cidr_free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage ss;
	const struct sockaddr *sa;
	size_t len;
	char *text;

	if (size < FUZZ_HEAD)
		return 0;
	sa = fuzz_addr(&ss, data[1], data + 2);
	len = size - FUZZ_HEAD;
	if (data[0] % FUZZ_TARGETS != FUZZ_CIDR && len > FUZZ_NAME_MAX)
		len = FUZZ_NAME_MAX;
	if (len > FUZZ_CIDR_MAX)
		len = FUZZ_CIDR_MAX;
	text = malloc(len ? len : 1);
	if (!text)
		return 0;
	memcpy(text, data + FUZZ_HEAD, len);
	switch (data[0] % FUZZ_TARGETS) {
	case FUZZ_RDNS:
		fuzz_rdns(text, len, sa);
		break;
	case FUZZ_HELO:
		fuzz_helo(text, len, sa);
		break;
	default:
		fuzz_cidr(text, len, sa);
		break;
	}
	free(text);
	return 0;
}
