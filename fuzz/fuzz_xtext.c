/*
 * fuzz_xtext: libFuzzer target for smtp_xtext_encode/decode. Round trip
 * decode(encode(x)) == x, encoded bytes only '!'..'~', buffers sized
 * exactly (byte 0 picks how tight) so ASan sees any overrun, and a
 * successful decode of arbitrary input re-encodes and decodes to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_XTEXT_FAIL ((size_t)-1)

static size_t fuzz_xtext_encoded_len(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		n += (c >= '!' && c <= '~' && c != '+' && c != '=') ? 1 : 3;
	}
	return n;
}

static void fuzz_xtext_roundtrip(const char *src, size_t len, size_t slack)
{
	size_t want = fuzz_xtext_encoded_len(src, len);
	size_t cap = want + 1 > slack ? want + 1 - slack : 0;
	char *enc = malloc(cap ? cap : 1), *dec;
	size_t n, m;

	if (!enc)
		return;
	n = smtp_xtext_encode(src, len, enc, cap);
	if (slack > 0) {
		/* too small: must refuse, not overrun */
		if (n != FUZZ_XTEXT_FAIL)
			abort();
		free(enc);
		return;
	}
	if (n != want || enc[n] != '\0')
		abort();
	for (size_t i = 0; i < n; i++)
		if (enc[i] < '!' || enc[i] > '~')
			abort();
	dec = malloc(len + 1);
	if (!dec) {
		free(enc);
		return;
	}
	m = smtp_xtext_decode(enc, n, dec, len + 1);
	if (m != len || memcmp(dec, src, len) != 0 || dec[len] != '\0')
		abort();
	free(dec);
	free(enc);
}

static void fuzz_xtext_decode_any(const char *src, size_t len)
{
	char *dec = malloc(len + 1);
	size_t m;

	if (!dec)
		return;
	m = smtp_xtext_decode(src, len, dec, len + 1);
	if (m != FUZZ_XTEXT_FAIL) {
		if (m > len || dec[m] != '\0')
			abort();
		fuzz_xtext_roundtrip(dec, m, 0);
	}
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *src;
	size_t len, slack;

	if (size < 1)
		return 0;
	slack = data[0] & 3;
	src = (const char *)data + 1;
	len = size - 1;
	if (slack > fuzz_xtext_encoded_len(src, len) + 1)
		slack = 0;
	fuzz_xtext_roundtrip(src, len, slack);
	fuzz_xtext_roundtrip(src, len, 0);
	fuzz_xtext_decode_any(src, len);
	return 0;
}
