/*
 * test_smtp_data: the DATA-phase machine. Table rows are checked fed whole,
 * split at every offset, split at every pair of offsets (short rows), and
 * one byte at a time; all must agree. The smuggling oracle then throws
 * every short string over {CR, LF, '.', NUL, 'a'} at the body boundary
 * (docs/hostile.md cases 1-7, 57, 58, 60, 61). The stuffing round trip
 * also checks smtp_data_unstuff (BDAT's octets) at every cut.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>

#include "smtp_data.h"

#define N SMTP_BARE_NORMALIZE
#define R SMTP_BARE_REJECT
#define ANY_OUT NULL /* row does not pin the output bytes */

struct feed_result {
	char *out;
	size_t out_len;
	size_t consumed;
	struct smtp_data d;
};

/* Feed in[0..len) cut at the sorted offsets cuts[0..ncuts). */
static void feed_cuts(enum smtp_bare_mode mode, unsigned long long limit,
		      const char *in, size_t len, const size_t *cuts,
		      size_t ncuts, struct feed_result *r)
{
	size_t start = 0;

	r->out = malloc(SMTP_DATA_OUT_MAX(len));
	assert_non_null(r->out);
	r->out_len = 0;
	r->consumed = 0;
	smtp_data_init(&r->d, mode, limit);
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		size_t piece = end - start, n, olen = 0;
		char *tmp = malloc(SMTP_DATA_OUT_MAX(piece));

		assert_non_null(tmp);
		n = smtp_data_feed(&r->d, in + start, piece, tmp, &olen);
		assert_true(olen <= SMTP_DATA_OUT_MAX(piece));
		memcpy(r->out + r->out_len, tmp, olen);
		free(tmp);
		r->out_len += olen;
		r->consumed += n;
		if (r->d.done) {
			assert_true(n <= piece);
			break;
		}
		assert_int_equal(n, piece);
		start = end;
	}
}

static void feed_bytewise(enum smtp_bare_mode mode, unsigned long long limit,
			  const char *in, size_t len, struct feed_result *r)
{
	r->out = malloc(SMTP_DATA_OUT_MAX(len));
	assert_non_null(r->out);
	r->out_len = 0;
	r->consumed = 0;
	smtp_data_init(&r->d, mode, limit);
	for (size_t i = 0; i < len && !r->d.done; i++) {
		size_t olen = 0;
		r->consumed += smtp_data_feed(&r->d, in + i, 1,
					      r->out + r->out_len, &olen);
		assert_true(olen <= 2);
		r->out_len += olen;
	}
}

static void same_result(const struct feed_result *a,
			const struct feed_result *b, const char *what)
{
	char e1[512], e2[512];

	if (a->out_len != b->out_len ||
	    memcmp(a->out, b->out, a->out_len) != 0)
		fail_msg("%s: output differs: \"%s\" vs \"%s\"", what,
			 unit_escape(e1, sizeof e1, a->out, a->out_len),
			 unit_escape(e2, sizeof e2, b->out, b->out_len));
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(a->d.done, b->d.done);
	assert_int_equal(a->d.bare_lf, b->d.bare_lf);
	assert_int_equal(a->d.bare_cr, b->d.bare_cr);
	assert_int_equal(a->d.too_big, b->d.too_big);
	assert_int_equal(a->d.content_bytes, b->d.content_bytes);
	assert_int_equal(smtp_data_ok(&a->d), smtp_data_ok(&b->d));
}

/* Invariants every output must satisfy, whatever the input (case 7).
 * Muted output (too big, bare LF in reject mode) may stop mid-line: the
 * caller discards it, but it still must not carry a terminator. */
static void check_canonical(const char *out, size_t len, bool muted)
{
	char e[512];

	for (size_t i = 0; i < len; i++) {
		if (out[i] == '\r' && (i + 1 == len || out[i + 1] != '\n'))
			fail_msg("bare CR in output \"%s\"",
				 unit_escape(e, sizeof e, out, len));
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
			fail_msg("bare LF in output \"%s\"",
				 unit_escape(e, sizeof e, out, len));
	}
	if (!muted && len > 0 &&
	    (len < 2 || out[len - 2] != '\r' || out[len - 1] != '\n'))
		fail_msg("output does not end a line: \"%s\"",
			 unit_escape(e, sizeof e, out, len));
	if (unit_find(out, len, "\r\n.\r\n", 5) != NULL ||
	    (len >= 3 && memcmp(out, ".\r\n", 3) == 0))
		fail_msg("terminator inside output \"%s\"",
			 unit_escape(e, sizeof e, out, len));
}

/* Where a strict RFC 5321 reader ends this DATA: the first CR LF . CR LF,
 * counting the CR LF that ended the DATA command. Returns bytes consumed
 * including the terminator, or len + 1 when there is none. */
static size_t rfc_end(const char *in, size_t len)
{
	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return 3;
	const char *p = unit_find(in, len, "\r\n.\r\n", 5);
	return p ? (size_t)(p - in) + 5 : len + 1;
}

static bool is_muted(const struct smtp_data *d)
{
	return d->too_big || (d->mode == SMTP_BARE_REJECT && d->bare_lf);
}

struct data_row {
	const char *name;
	enum smtp_bare_mode mode;
	unsigned long long limit;
	const char *in;
	size_t in_len;
	const char *want;      /* ANY_OUT: not checked */
	size_t want_len;
	size_t consumed;       /* (size_t)-1: the whole input */
	bool done, bare_lf, bare_cr, too_big, ok;
};

#define ALL ((size_t)-1)
#define ROW(nm, md, lim, in, want, cons, dn, lf, cr, big, ok)                  \
	{ nm, md, lim, UNIT_BYTES(in), want, sizeof(want) - 1, cons, dn, lf,   \
	  cr, big, ok }
#define ROW_ANY(nm, md, lim, in, cons, dn, lf, cr, big, ok)                    \
	{ nm, md, lim, UNIT_BYTES(in), ANY_OUT, 0, cons, dn, lf, cr, big, ok }

#define SMUG "MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<u@local>\r\n"      \
	     "DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
#define SMUG_OUT "MAIL FROM:<ceo@victim.example>\r\nRCPT TO:<u@local>\r\n"  \
		 "DATA\r\nSubject: smuggled\r\n\r\nx\r\n"

static const struct data_row data_rows[] = {
	/* case 1 */
	ROW("baseline", N, 0, "a\r\n..b\r\n.\r\n", "a\r\n..b\r\n", ALL, 1, 0,
	    0, 0, 1),
	ROW("empty message", N, 0, ".\r\n", "", ALL, 1, 0, 0, 0, 1),
	ROW("one empty line", N, 0, "\r\n.\r\n", "\r\n", ALL, 1, 0, 0, 0, 1),
	ROW("pipelined after end", N, 0, "a\r\n.\r\nQUIT\r\n", "a\r\n", 6, 1,
	    0, 0, 0, 1),
	ROW("empty message then commands", R, 0, ".\r\nRSET\r\n", "", 3, 1, 0,
	    0, 0, 1),
	ROW("no terminator yet", N, 0, "a\r\n.", "a\r\n", ALL, 0, 0, 0, 0, 0),
	ROW("terminator needs final LF", N, 0, "a\r\n.\r", "a\r\n", ALL, 0, 0,
	    0, 0, 0),
	/* case 57: dot lines round trip */
	ROW("dot lines", R, 0, "..\r\n...\r\n.. \r\n....\r\n.\r\n",
	    "..\r\n...\r\n.. \r\n....\r\n", ALL, 1, 0, 0, 0, 1),
	ROW("unstuffed client dot", N, 0, ".a\r\n.\r\n", "a\r\n", ALL, 1, 0,
	    0, 0, 1),
	ROW("dot space", N, 0, ". \r\n.\r\n", " \r\n", ALL, 1, 0, 0, 0, 1),
	/* case 2 and 3 */
	ROW("lf.lf normalize", N, 0, "body\r\n\n.\n" SMUG,
	    "body\r\n\r\n" SMUG_OUT, ALL, 1, 1, 0, 0, 1),
	ROW("lf.lf reject", R, 0, "body\r\n\n.\n" SMUG, "body\r\n", ALL, 1, 1,
	    0, 0, 0),
	ROW("lf.crlf normalize", N, 0, "body\n.\r\n" SMUG,
	    "body\r\n" SMUG_OUT, ALL, 1, 1, 0, 0, 1),
	ROW("lf.crlf reject", R, 0, "body\n.\r\n" SMUG, "body", ALL, 1, 1, 0, 0,
	    0),
	ROW("crlf.lf normalize", N, 0, "body\r\n.\n" SMUG,
	    "body\r\n" SMUG_OUT, ALL, 1, 1, 0, 0, 1),
	ROW("bare lf line end", N, 0, "a\nb\r\n.\r\n", "a\r\nb\r\n", ALL, 1, 1,
	    0, 0, 1),
	ROW("bare lf first", N, 0, "\n.\r\n.\r\n", "\r\n", ALL, 1, 1, 0, 0, 1),
	ROW("dot lf first", N, 0, ".\n.\r\n.\r\n", "", ALL, 1, 1, 0, 0, 1),
	ROW("dotdot after bare lf kept", N, 0, "a\n..\r\n.\r\n",
	    "a\r\n..\r\n", ALL, 1, 1, 0, 0, 1),
	/* case 4: bare CR never ends a line */
	ROW("cr.cr", N, 0, "body\r.\r" SMUG, "body.MAIL FROM:<ceo@victim.example>"
	    "\r\nRCPT TO:<u@local>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n",
	    ALL, 1, 0, 1, 0, 0),
	ROW_ANY("cr.crlf", N, 0, "body\r.\r\n" SMUG, ALL, 1, 0, 1, 0, 0),
	ROW("crlf.cr", N, 0, "body\r\n.\r" SMUG, "body\r\n" SMUG_OUT, ALL, 1,
	    0, 1, 0, 0),
	ROW_ANY("cr.lf normalize", N, 0, "body\r.\n" SMUG, ALL, 1, 1, 1, 0, 0),
	ROW_ANY("lf.cr reject", R, 0, "body\n.\r" SMUG, ALL, 1, 1, 1, 0, 0),
	ROW_ANY("crlf.lf reject", R, 0, "body\r\n.\n" SMUG, ALL, 1, 1, 0, 0,
		0),
	ROW("dot cr dot: no restuffing gap", N, 0, "a\r\n.\r.\r\n.\r\n",
	    "a\r\n..\r\n", ALL, 1, 0, 1, 0, 0),
	ROW("cr at line start then dot", N, 0, "\r.\r\n.\r\n", "..\r\n", ALL,
	    1, 0, 1, 0, 0),
	/* case 5 */
	ROW("nul before dot", N, 0, "body\r\n\0.\r\n" SMUG,
	    "body\r\n\0.\r\n" SMUG_OUT, ALL, 1, 0, 0, 0, 1),
	ROW("nul after dot", N, 0, "body\r\n.\0\r\n" SMUG,
	    "body\r\n\0\r\n" SMUG_OUT, ALL, 1, 0, 0, 0, 1),
	ROW("dot cr cr lf", N, 0, "body\r\n.\r\r\n" SMUG,
	    "body\r\n\r\n" SMUG_OUT, ALL, 1, 0, 1, 0, 0),
	ROW("cr cr lf dot cr cr lf", R, 0, "body\r\r\n.\r\r\n" SMUG,
	    "body\r\n\r\n" SMUG_OUT, ALL, 1, 0, 1, 0, 0),
	ROW("bare cr then real end", N, 0, "a\r\r\n.\r\n", "a\r\n", ALL, 1, 0,
	    1, 0, 0),
	/* case 61 */
	ROW("nul and 8bit pass", R, 0, "a\0b\r\n\x80\xff\r\n.\r\n",
	    "a\0b\r\n\x80\xff\r\n", ALL, 1, 0, 0, 0, 1),
	ROW("leading nul line", N, 0, "\0\r\n.\r\n", "\0\r\n", ALL, 1, 0, 0, 0,
	    1),
	/* case 60: limit counts unstuffed octets incl. CR LF */
	ROW("at size limit", N, 5, "abc\r\n.\r\n", "abc\r\n", ALL, 1, 0, 0, 0,
	    1),
	ROW("stuffing dot not counted", N, 5, "..c\r\n.\r\n", "..c\r\n", ALL, 1,
	    0, 0, 0, 1),
	ROW("over size limit", N, 5, "abcd\r\n.\r\nQUIT\r\n", "abcd", 9, 1, 0,
	    0, 1, 0),
	ROW("over limit then bare lf", R, 3, "abcd\nx\r\n.\r\n", "abc", ALL,
	    1, 1, 0, 1, 0),
};

static void run_row(const struct data_row *row)
{
	struct feed_result whole, other;
	size_t want_consumed = row->consumed == ALL ? row->in_len
						    : row->consumed;
	char e1[512], e2[512];

	feed_cuts(row->mode, row->limit, row->in, row->in_len, NULL, 0,
		  &whole);
	if (row->want != ANY_OUT &&
	    (whole.out_len != row->want_len ||
	     memcmp(whole.out, row->want, row->want_len) != 0))
		fail_msg("%s: got \"%s\" want \"%s\"", row->name,
			 unit_escape(e1, sizeof e1, whole.out, whole.out_len),
			 unit_escape(e2, sizeof e2, row->want, row->want_len));
	assert_int_equal(whole.consumed, want_consumed);
	assert_int_equal(whole.d.done, row->done);
	assert_int_equal(whole.d.bare_lf, row->bare_lf);
	assert_int_equal(whole.d.bare_cr, row->bare_cr);
	assert_int_equal(whole.d.too_big, row->too_big);
	assert_int_equal(smtp_data_ok(&whole.d), row->ok);
	if (whole.d.done)
		assert_int_equal(whole.consumed,
				 rfc_end(row->in, row->in_len));
	check_canonical(whole.out, whole.out_len, is_muted(&whole.d));

	/* case 6: the same answer wherever the input is cut */
	for (size_t i = 0; i <= row->in_len; i++) {
		feed_cuts(row->mode, row->limit, row->in, row->in_len, &i, 1,
			  &other);
		same_result(&whole, &other, row->name);
		free(other.out);
	}
	if (row->in_len <= 48) {
		for (size_t i = 0; i <= row->in_len; i++)
			for (size_t j = i; j <= row->in_len; j++) {
				size_t cuts[2] = { i, j };
				feed_cuts(row->mode, row->limit, row->in,
					  row->in_len, cuts, 2, &other);
				same_result(&whole, &other, row->name);
				free(other.out);
			}
	}
	feed_bytewise(row->mode, row->limit, row->in, row->in_len, &other);
	same_result(&whole, &other, row->name);
	free(other.out);
	free(whole.out);
}

static void test_data_table(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(data_rows); i++)
		run_row(&data_rows[i]);
}

static void test_data_after_done(void **unused)
{
	struct smtp_data d;
	char out[64];
	size_t olen = 99;

	smtp_data_init(&d, N, 0);
	assert_int_equal(smtp_data_feed(&d, UNIT_BYTES(".\r\n"), out, &olen),
			 3);
	assert_true(d.done);
	assert_int_equal(olen, 0);
	olen = 99;
	assert_int_equal(smtp_data_feed(&d, UNIT_BYTES("\r\n.\r\n"), out,
					&olen), 0);
	assert_int_equal(olen, 0);
	assert_int_equal(smtp_data_feed(&d, "", 0, out, &olen), 0);
	assert_true(smtp_data_ok(&d));
}

/* case 58: long lines are streamed unchanged, with no limit. */
static void test_data_long_lines(void **unused)
{
	static const size_t sizes[] = { 1001, 65536, 5u << 20 };

	for (size_t s = 0; s < UNIT_NELEM(sizes); s++) {
		size_t n = sizes[s], len = n + 2 + 3;
		char *in = malloc(len);
		struct feed_result a, b;
		size_t cuts[3] = { 1, n / 2, n + 1 };

		assert_non_null(in);
		memset(in, 'x', n);
		in[0] = '.'; /* stuffed: content starts with "x" */
		memcpy(in + n, "\r\n.\r\n", 5);
		feed_cuts(R, 0, in, len, NULL, 0, &a);
		assert_true(smtp_data_ok(&a.d));
		assert_int_equal(a.out_len, n + 1);
		assert_int_equal(a.d.content_bytes, n + 1);
		feed_cuts(R, 0, in, len, cuts, 3, &b);
		same_result(&a, &b, "long line");
		free(a.out);
		free(b.out);
		free(in);
	}
}

/* Property (case 57): stuff(x) read back gives x, for every body made of
 * lines over a small alphabet. The stuffing here is the test's own. */
static void test_data_stuff_roundtrip(void **unused)
{
	static const char alpha[] = { '.', 'a', ' ', '\0' };
	char body[32], wire[64];

	for (unsigned code = 0; code < 4 * 4 * 4 * 4 * 4; code++) {
		size_t blen = 0, wlen = 0;
		unsigned c = code;
		struct feed_result r;

		/* Two lines: up to 3 chars then the rest. */
		for (int i = 0; i < 5; i++, c /= 4) {
			body[blen++] = alpha[c % 4];
			if (i == 2) {
				body[blen++] = '\r';
				body[blen++] = '\n';
			}
		}
		body[blen++] = '\r';
		body[blen++] = '\n';
		for (size_t i = 0; i < blen; i++) {
			if (body[i] == '.' &&
			    (i == 0 || body[i - 1] == '\n'))
				wire[wlen++] = '.';
			wire[wlen++] = body[i];
		}
		memcpy(wire + wlen, ".\r\n", 3);
		wlen += 3;
		feed_cuts(N, 0, wire, wlen, NULL, 0, &r);
		assert_true(smtp_data_ok(&r.d));
		/* Canonical output is the stuffed wire form itself. */
		assert_int_equal(r.out_len, wlen - 3);
		assert_memory_equal(r.out, wire, wlen - 3);
		assert_int_equal(r.d.content_bytes, blen);
		/* And back (what BDAT sends): the body itself, whole or cut
		 * anywhere, as many octets as the output less its stuffing. */
		assert_int_equal(r.out_len - r.d.stuffed, blen);
		for (size_t cut = 0; cut <= r.out_len; cut++) {
			char octets[64];
			bool bol = true;
			size_t n = smtp_data_unstuff(r.out, cut, &bol, octets);
			n += smtp_data_unstuff(r.out + cut, r.out_len - cut, &bol, octets + n);
			assert_int_equal(n, blen);
			assert_memory_equal(octets, body, blen);
		}
		free(r.out);
	}
}

/*
 * The smuggling oracle. For s over {CR, LF, '.', NUL, 'a'}, length 1..6:
 * "body\r\n" s SMUG, fed in both modes and cut in several places.
 */
#define ORACLE_PRE "body\r\n"
static const char oracle_alpha[] = { '\r', '\n', '.', '\0', 'a' };

/* What the backend makes of out + sluice's own ".\r\n": it must read
 * exactly one message, ending exactly where sluice's terminator is. */
static void backend_view(const char *out, size_t len)
{
	char *wire = malloc(len + 3);
	char e[512];
	size_t end;

	assert_non_null(wire);
	memcpy(wire, out, len);
	memcpy(wire + len, ".\r\n", 3);
	end = rfc_end(wire, len + 3);
	if (end != len + 3)
		fail_msg("backend sees an early end in \"%s\"",
			 unit_escape(e, sizeof e, out, len));
	free(wire);
}

static void oracle_one(const char *in, size_t len, size_t slen,
		       enum smtp_bare_mode mode)
{
	struct feed_result whole, other;
	size_t pre = sizeof(ORACLE_PRE) - 1;
	size_t want_end = rfc_end(in, len);
	char e[512];

	feed_cuts(mode, 0, in, len, NULL, 0, &whole);
	/* SMUG ends in CR LF . CR LF, so no extra terminator is needed. */
	if (!whole.d.done)
		fail_msg("no end of data for \"%s\"",
			 unit_escape(e, sizeof e, in, len));
	/* Exactly one end of data, and it is the RFC one. */
	if (whole.consumed != want_end)
		fail_msg("end at %zu, RFC end at %zu for \"%s\"",
			 whole.consumed, want_end,
			 unit_escape(e, sizeof e, in, len));
	check_canonical(whole.out, whole.out_len, is_muted(&whole.d));
	/* Muted output never reaches the backend; all other output must be
	 * one message, even when a bare CR already condemned it. */
	if (!is_muted(&whole.d))
		backend_view(whole.out, whole.out_len);
	if (mode == R && whole.d.bare_lf)
		assert_false(smtp_data_ok(&whole.d));
	/* A bare CR anywhere before the end must be flagged, and only then. */
	bool bare = false;
	for (size_t i = 0; i + 1 < want_end; i++)
		if (in[i] == '\r' && in[i + 1] != '\n')
			bare = true;
	assert_int_equal(whole.d.bare_cr, bare);

	for (size_t i = pre; i <= pre + slen + 2; i++) {
		feed_cuts(mode, 0, in, len, &i, 1, &other);
		same_result(&whole, &other, "oracle");
		free(other.out);
	}
	if (slen <= 4) {
		for (size_t i = 0; i <= len; i++) {
			feed_cuts(mode, 0, in, len, &i, 1, &other);
			same_result(&whole, &other, "oracle");
			free(other.out);
		}
		feed_bytewise(mode, 0, in, len, &other);
		same_result(&whole, &other, "oracle bytewise");
		free(other.out);
	}
	free(whole.out);
}

static void test_data_smuggling_oracle(void **unused)
{
	char in[sizeof(ORACLE_PRE) + 8 + sizeof(SMUG) + 8];
	size_t pre = sizeof(ORACLE_PRE) - 1, runs = 0;

	memcpy(in, ORACLE_PRE, pre);
	for (size_t slen = 1; slen <= 6; slen++) {
		size_t total = 1;
		for (size_t k = 0; k < slen; k++)
			total *= UNIT_NELEM(oracle_alpha);
		for (size_t code = 0; code < total; code++) {
			size_t c = code, len = pre;
			for (size_t k = 0; k < slen; k++) {
				in[len++] = oracle_alpha[c % 5];
				c /= 5;
			}
			memcpy(in + len, SMUG, sizeof(SMUG) - 1);
			len += sizeof(SMUG) - 1;
			oracle_one(in, len, slen, N);
			oracle_one(in, len, slen, R);
			runs += 2;
		}
	}
	assert_int_equal(runs, 2 * (5 + 25 + 125 + 625 + 3125 + 15625));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_table),
		cmocka_unit_test(test_data_after_done),
		cmocka_unit_test(test_data_long_lines),
		cmocka_unit_test(test_data_stuff_roundtrip),
		cmocka_unit_test(test_data_smuggling_oracle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
