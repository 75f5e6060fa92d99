/*
 * smtp_reply: backend reply parser (see smtp_reply.h for the contract).
 *
 * Exports smtp_reply_init, smtp_reply_line. Pure: no I/O, no allocation;
 * the caller owns the struct and calls smtp_reply_init before each reply.
 * A line given after DONE or INVALID is INVALID: a reply that has ended
 * cannot grow, and a broken one cannot be repaired by later lines. After
 * INVALID, code is -1 (no private field exists to say "broken").
 *
 * Limits: SMTP_REPLY_LINE_MAX, SMTP_REPLY_LINES_MAX from the header. Text
 * beyond SMTP_REPLY_TEXT_MAX - 1 is dropped silently (it is only logged or
 * relayed); xclient_attrs keeps only whole attribute names that fit, so a
 * cut can never invent a shorter name.
 *
 * Why strict: this parser decides when a backend reply is over. Accepting
 * a sloppy separator or a changed code mid-reply would let the proxy and
 * the backend disagree on reply framing (docs/hostile.md case 8), which is the
 * reply-side form of smuggling; such replies are INVALID and the caller
 * drops the connection.
 */
#include "smtp_reply.h"

#include <limits.h>
#include <string.h>

#include "ascii.h"

#define SMTP_REPLY_CODE_LEN 3
#define SMTP_REPLY_ENH_PART_MAX 3 /* RFC 3463: subject, detail 1-3 digits */
#define SMTP_REPLY_ENH_MIN 5      /* "c.s.d" */
#define SMTP_REPLY_EHLO_CODE 250

enum { SMTP_REPLY_BROKEN = -1 }; /* r->code once a line was INVALID */

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof *r);
}

/* lit: a NUL-terminated keyword. */
static bool smtp_reply_eq_nocase(const char *a, size_t alen, const char *lit)
{
	return ascii_eq_nocase(a, alen, lit, strlen(lit));
}

static bool smtp_reply_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* 1..max digits at s; returns how many, 0 when none or too many. */
static size_t smtp_reply_digits(const char *s, size_t len, size_t max)
{
	size_t n = 0;

	while (n < len && smtp_reply_digit(s[n]))
		n++;
	return n <= max ? n : 0;
}

/*
 * RFC 3463 status code "c.s.d" at the start of text, class digit equal to
 * the reply's, followed by a space or the end. Returns its length, 0 when
 * text does not start with one.
 */
static size_t smtp_reply_enhanced(const char *t, size_t len, char cls)
{
	size_t i, n;

	/* RFC 3463 has classes 2, 4 and 5 only: "354 3.0.0" is plain text. */
	if (len < SMTP_REPLY_ENH_MIN || t[0] != cls || cls == '3' || t[1] != '.')
		return 0;
	i = 2;
	if ((n = smtp_reply_digits(t + i, len - i, SMTP_REPLY_ENH_PART_MAX)) ==
	    0)
		return 0;
	i += n;
	if (i >= len || t[i] != '.')
		return 0;
	i++;
	if ((n = smtp_reply_digits(t + i, len - i, SMTP_REPLY_ENH_PART_MAX)) ==
	    0)
		return 0;
	i += n;
	if (i < len && t[i] != ' ')
		return 0;
	return i;
}

static void smtp_reply_text(struct smtp_reply *r, const char *t, size_t len)
{
	size_t room;

	if (r->lines > 0 && r->text_len < SMTP_REPLY_TEXT_MAX - 1)
		r->text[r->text_len++] = '\n';
	room = SMTP_REPLY_TEXT_MAX - 1 - r->text_len;
	if (len > room)
		len = room;
	memcpy(r->text + r->text_len, t, len);
	r->text_len += len;
	r->text[r->text_len] = '\0';
}

/* "NAME ADDR ..." after XCLIENT: whole words only, single-spaced. */
static void smtp_reply_xclient(struct smtp_reply *r, const char *p, size_t len)
{
	size_t o = 0, i = 0;

	while (i < len) {
		size_t start;

		while (i < len && p[i] == ' ')
			i++;
		start = i;
		while (i < len && p[i] != ' ')
			i++;
		if (i == start)
			break;
		if (o + (o > 0) + (i - start) >= sizeof r->xclient_attrs)
			break;
		if (o > 0)
			r->xclient_attrs[o++] = ' ';
		memcpy(r->xclient_attrs + o, p + start, i - start);
		o += i - start;
	}
	r->xclient_attrs[o] = '\0';
}

/* SIZE [n]: a missing, zero or malformed n leaves size_max 0 (no limit
 * known); the backend still enforces whatever limit it has. */
static void smtp_reply_size(struct smtp_reply *r, const char *p, size_t len)
{
	long long n = 0;

	r->has_size = true;
	r->size_max = 0;
	while (len > 0 && p[0] == ' ') {
		p++;
		len--;
	}
	if (len == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		if (!smtp_reply_digit(p[i]) || n > (LLONG_MAX - 9) / 10)
			return;
		n = n * 10 + (p[i] - '0');
	}
	r->size_max = n;
}

/* One EHLO capability line: keyword, then parameters after a space. */
static void smtp_reply_keyword(struct smtp_reply *r, const char *t, size_t len)
{
	size_t k = 0;

	while (k < len && t[k] != ' ')
		k++;
	if (smtp_reply_eq_nocase(t, k, "PIPELINING"))
		r->has_pipelining = true;
	else if (smtp_reply_eq_nocase(t, k, "STARTTLS"))
		r->has_starttls = true;
	else if (smtp_reply_eq_nocase(t, k, "8BITMIME"))
		r->has_8bitmime = true;
	else if (smtp_reply_eq_nocase(t, k, "SMTPUTF8"))
		r->has_smtputf8 = true;
	else if (smtp_reply_eq_nocase(t, k, "CHUNKING"))
		r->has_chunking = true;
	else if (smtp_reply_eq_nocase(t, k, "SIZE"))
		smtp_reply_size(r, t + k, len - k);
	else if (smtp_reply_eq_nocase(t, k, "XCLIENT")) {
		r->has_xclient = true;
		smtp_reply_xclient(r, t + k, len - k);
	}
}

static enum smtp_reply_status smtp_reply_broken(struct smtp_reply *r)
{
	r->code = SMTP_REPLY_BROKEN;
	r->complete = false;
	return SMTP_REPLY_INVALID;
}

enum smtp_reply_status smtp_reply_line(struct smtp_reply *r, const char *line,
				       size_t len)
{
	int code;
	bool last;
	const char *t;
	size_t tlen, enh;

	if (r->complete || r->code == SMTP_REPLY_BROKEN)
		return smtp_reply_broken(r);
	if (len > SMTP_REPLY_LINE_MAX - 2 || len < SMTP_REPLY_CODE_LEN ||
	    r->lines >= SMTP_REPLY_LINES_MAX)
		return smtp_reply_broken(r);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return smtp_reply_broken(r);
	}
	/* RFC 5321 4.2: 2yz..5yz, y in 0..5. */
	if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    !smtp_reply_digit(line[2]))
		return smtp_reply_broken(r);
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->lines > 0 && code != r->code)
		return smtp_reply_broken(r);
	if (len == SMTP_REPLY_CODE_LEN)
		last = true;
	else if (line[3] == ' ')
		last = true;
	else if (line[3] == '-')
		last = false;
	else
		return smtp_reply_broken(r);

	t = line + (len > SMTP_REPLY_CODE_LEN ? SMTP_REPLY_CODE_LEN + 1 : len);
	tlen = (size_t)(line + len - t);
	/* Postfix repeats the status code on every line; strip it wherever
	 * it is, but the reply's code is the first line's. */
	enh = smtp_reply_enhanced(t, tlen, line[0]);
	if (enh > 0) {
		if (r->lines == 0) {
			memcpy(r->enhanced, t, enh);
			r->enhanced[enh] = '\0';
		}
		t += enh;
		tlen -= enh;
		if (tlen > 0) {
			t++;
			tlen--;
		}
	}
	if (code == SMTP_REPLY_EHLO_CODE && r->lines > 0)
		smtp_reply_keyword(r, t, tlen);
	smtp_reply_text(r, t, tlen);
	r->code = code;
	r->lines++;
	r->complete = last;
	return last ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}
