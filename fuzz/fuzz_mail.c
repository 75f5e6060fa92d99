/*
 * fuzz_mail: libFuzzer target for smtp_mail_parse, smtp_rcpt_parse and
 * smtp_helo_parse. Byte 0 picks the parser (and SMTPUTF8 for RCPT), the
 * rest is the argument. Checks with abort(): the path is NUL-terminated,
 * fits, is a copy of input bytes, and parses again to itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_mail_within(const char *hay, size_t hlen, const char *s,
			    size_t n)
{
	for (size_t i = 0; i + n <= hlen; i++)
		if (memcmp(hay + i, s, n) == 0)
			return 1;
	return n == 0;
}

/* The path is treated as untrusted too: what we hand on must be a path
 * our own parser accepts unchanged. */
static void fuzz_mail_reparse(const char *path, int rcpt, int utf8)
{
	char arg[SMTP_PATH_MAX + 32], again[SMTP_PATH_MAX];
	struct smtp_mail_params mp;
	int n;
	enum smtp_parse_status st;

	if (rcpt) {
		n = snprintf(arg, sizeof arg, "TO:<%s>", path);
		st = smtp_rcpt_parse(arg, (size_t)n, again, sizeof again,
				     utf8);
	} else {
		n = snprintf(arg, sizeof arg, "FROM:<%s>%s", path,
			     utf8 ? " SMTPUTF8" : "");
		st = smtp_mail_parse(arg, (size_t)n, again, sizeof again, &mp);
	}
	if (st != SMTP_PARSE_OK || strcmp(again, path) != 0)
		abort();
}

static void fuzz_mail_path(const char *arg, size_t len, int which, int utf8)
{
	char *path = malloc(SMTP_PATH_MAX);
	struct smtp_mail_params mp;
	enum smtp_parse_status st;
	size_t plen;

	if (!path)
		return;
	if (which == 0) {
		st = smtp_mail_parse(arg, len, path, SMTP_PATH_MAX, &mp);
		utf8 = mp.smtputf8;
		if (mp.size < -1 || mp.body > SMTP_BODY_8BITMIME)
			abort();
	} else {
		st = smtp_rcpt_parse(arg, len, path, SMTP_PATH_MAX, utf8);
	}
	plen = strnlen(path, SMTP_PATH_MAX);
	if (plen >= SMTP_PATH_MAX - 1)
		abort();
	if (st == SMTP_PARSE_OK) {
		if (!fuzz_mail_within(arg, len, path, plen))
			abort();
		if (which == 1 && plen == 0)
			abort();
		for (size_t i = 0; i < plen; i++) {
			unsigned char c = (unsigned char)path[i];
			if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8))
				abort();
		}
		fuzz_mail_reparse(path, which, utf8);
	} else if (plen != 0) {
		abort();
	}
	free(path);
}

static void fuzz_mail_helo(const char *arg, size_t len)
{
	size_t n = 12345;
	enum smtp_parse_status st = smtp_helo_parse(arg, len, &n);

	if (st != SMTP_PARSE_OK) {
		if (n != 0)
			abort();
		return;
	}
	if (n == 0 || n > len || n > SMTP_DOMAIN_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)arg[i] <= ' ' || arg[i] == 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *arg;
	size_t len;
	int sel;

	if (size < 1)
		return 0;
	sel = data[0];
	len = size - 1;
	arg = malloc(len ? len : 1);
	if (!arg)
		return 0;
	memcpy(arg, data + 1, len);
	switch (sel % 4) {
	case 0:
		fuzz_mail_path(arg, len, 0, 0);
		break;
	case 1:
		fuzz_mail_path(arg, len, 1, 0);
		break;
	case 2:
		fuzz_mail_path(arg, len, 1, 1);
		break;
	default:
		fuzz_mail_helo(arg, len);
		break;
	}
	free(arg);
	return 0;
}
