/*
 * fuzz_data: libFuzzer target for the DATA machine. Byte 0: bit 0 picks
 * the bare-LF mode, bit 1 a size limit, the rest seeds the chunking. The
 * body is fed whole and in pseudo-random chunks; both must agree byte for
 * byte. With abort(): the end is exactly the first raw CR LF . CR LF, the
 * output is canonical (no bare CR/LF, no terminator inside, dots stuffed),
 * and unstuffing the output gives content_bytes octets; smtp_data_unstuff
 * (what BDAT sends) gives them too, whole or in pieces, as many as the
 * output less the stuffing dots counted, and stuffing them again gives the
 * output back.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_data_run {
	char *out;
	size_t out_len;
	size_t consumed;
	struct smtp_data d;
};

static uint32_t fuzz_data_next(uint32_t *s)
{
	/* xorshift32: cheap and deterministic per input */
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static int fuzz_data_run(const char *in, size_t len, enum smtp_bare_mode mode,
			 unsigned long long limit, uint32_t seed,
			 struct fuzz_data_run *r)
{
	size_t pos = 0;

	r->out = malloc(SMTP_DATA_OUT_MAX(len));
	if (!r->out)
		return -1;
	r->out_len = 0;
	r->consumed = 0;
	smtp_data_init(&r->d, mode, limit);
	while (pos < len && !r->d.done) {
		size_t piece = len - pos, olen = 0, n;
		char *tmp;

		if (seed != 0)
			piece = 1 + fuzz_data_next(&seed) % (piece < 16 ? piece
								       : 16);
		/* exact-size scratch so ASan checks SMTP_DATA_OUT_MAX */
		tmp = malloc(SMTP_DATA_OUT_MAX(piece));
		if (!tmp)
			return -1;
		n = smtp_data_feed(&r->d, in + pos, piece, tmp, &olen);
		if (n > piece || olen > SMTP_DATA_OUT_MAX(piece) ||
		    (n < piece && !r->d.done))
			abort();
		memcpy(r->out + r->out_len, tmp, olen);
		free(tmp);
		r->out_len += olen;
		r->consumed += n;
		pos += n;
	}
	return 0;
}

static size_t fuzz_data_rfc_end(const char *in, size_t len)
{
	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= len; i++)
		if (memcmp(in + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	return 0;
}

static void fuzz_data_check(const char *in, size_t len,
			    const struct fuzz_data_run *r)
{
	const char *o = r->out;
	size_t n = r->out_len, end = fuzz_data_rfc_end(in, len);
	unsigned long long content = 0;
	int bol = 1;
	int muted = r->d.too_big ||
		    (r->d.mode == SMTP_BARE_REJECT && r->d.bare_lf);

	if (end != 0 ? (!r->d.done || r->consumed != end)
		     : (r->d.done || r->consumed != len))
		abort();
	if (smtp_data_ok(&r->d) && muted)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (o[i] == '\r' && (i + 1 == n || o[i + 1] != '\n'))
			abort();
		if (o[i] == '\n' && (i == 0 || o[i - 1] != '\r'))
			abort();
		if (bol && o[i] == '.') {
			/* a stuffed line: "..", never "." then line end */
			if (i + 1 == n ? !muted && r->d.done : o[i + 1] != '.')
				abort();
			i++;
			content++;
			bol = 0;
			continue;
		}
		if (o[i] == '\r') {
			content += 2;
			i++;
			bol = 1;
			continue;
		}
		content++;
		bol = 0;
	}
	if (r->d.done && !muted && !bol)
		abort(); /* a finished message ends with CR LF */
	if (muted ? content > r->d.content_bytes : content != r->d.content_bytes)
		abort();
	if (r->d.size_limit && !r->d.too_big &&
	    r->d.content_bytes > r->d.size_limit)
		abort();
}

static void fuzz_data_unstuff_check(const struct fuzz_data_run *r, uint32_t seed)
{
	size_t n = r->out_len, whole, cut = 0, pos = 0;
	char *a = malloc(n + 1), *b = malloc(n + 1);
	bool bol = true;

	if (!a || !b) {
		free(a);
		free(b);
		return;
	}
	whole = smtp_data_unstuff(r->out, n, &bol, a);
	bol = true;
	while (pos < n) {
		size_t piece = 1 + fuzz_data_next(&seed) % (n - pos < 16 ? n - pos : 16);
		cut += smtp_data_unstuff(r->out + pos, piece, &bol, b + cut);
		pos += piece;
	}
	if (whole != cut || memcmp(a, b, whole) != 0 ||
	    whole != n - r->d.stuffed || whole != r->d.content_bytes)
		abort();
	/* stuffed again: the output, byte for byte */
	bol = true;
	pos = 0;
	for (size_t i = 0; i < whole; i++) {
		if (bol && a[i] == '.' && (pos >= n || r->out[pos++] != '.'))
			abort();
		if (pos >= n || r->out[pos++] != a[i])
			abort();
		bol = a[i] == '\n';
	}
	if (pos != n)
		abort();
	free(a);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_data_run a, b;
	enum smtp_bare_mode mode;
	unsigned long long limit;
	uint32_t seed;
	const char *in;
	size_t len;

	if (size < 1)
		return 0;
	mode = (data[0] & 1) ? SMTP_BARE_REJECT : SMTP_BARE_NORMALIZE;
	in = (const char *)data + 1;
	len = size - 1;
	limit = (data[0] & 2) ? len / 2 + 1 : 0;
	seed = 0x9e3779b9u ^ data[0] ^ (uint32_t)len << 8;
	if (fuzz_data_run(in, len, mode, limit, 0, &a) != 0)
		return 0;
	if (fuzz_data_run(in, len, mode, limit, seed, &b) != 0) {
		free(a.out);
		return 0;
	}
	fuzz_data_check(in, len, &a);
	if (smtp_data_ok(&a.d))
		fuzz_data_unstuff_check(&a, seed | 1);
	if (a.out_len != b.out_len || memcmp(a.out, b.out, a.out_len) != 0 ||
	    a.consumed != b.consumed || a.d.done != b.d.done ||
	    a.d.bare_lf != b.d.bare_lf || a.d.bare_cr != b.d.bare_cr ||
	    a.d.too_big != b.d.too_big ||
	    a.d.content_bytes != b.d.content_bytes)
		abort();
	free(a.out);
	free(b.out);
	return 0;
}
