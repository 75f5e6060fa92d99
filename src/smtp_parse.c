/*
 * smtp_parse: command-phase parsers (see smtp_parse.h for the contracts).
 *
 * Exports smtp_verb_name, smtp_cmd_parse, smtp_mail_parse, smtp_rcpt_parse,
 * smtp_helo_parse, smtp_xtext_encode, smtp_xtext_decode. Pure: no I/O, no
 * allocation; outputs go into caller buffers whose sizes are passed in.
 *
 * Limits: SMTP_CMD_LINE_MAX, SMTP_PATH_MAX, SMTP_DOMAIN_MAX and
 * SMTP_PARAMS_MAX from the header, SMTP_SIZE_DIGITS_MAX below. The local
 * part has no limit of its own beyond the path (docs/hostile.md case 45: let the
 * backend decide).
 *
 * Why: every byte is checked before anything is accepted, so nothing that
 * was not validated can reach the backend (no C-string truncation at NUL).
 * The address grammar is RFC 5321 4.1.2 with two leniencies Postfix also
 * has: dots anywhere in an unquoted local part, and '_' in domain labels.
 * Anything stricter would refuse mail Postfix takes; anything looser risks
 * forwarding what Postfix would parse differently.
 */
#include "smtp_parse.h"

#include <limits.h>
#include <string.h>

#include "ascii.h"

#define SMTP_SIZE_DIGITS_MAX 20
#define SMTP_LINE_TEXT_MAX (SMTP_CMD_LINE_MAX - 2) /* without CR LF */
#define SMTP_LOCAL_POSTMASTER "postmaster"

static const char *const smtp_verb_names[] = {
#define SMTP_VERB_NAME(v) #v,
	SMTP_VERBS(SMTP_VERB_NAME)
#undef SMTP_VERB_NAME
};

const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((unsigned)verb >= SMTP_VERB_COUNT)
		return smtp_verb_names[SMTP_VERB_UNKNOWN];
	return smtp_verb_names[verb];
}

/* lit: a NUL-terminated keyword. */
static bool smtp_eq_nocase(const char *a, size_t alen, const char *lit)
{
	return ascii_eq_nocase(a, alen, lit, strlen(lit));
}

static bool smtp_prefix_nocase(const char *a, size_t alen, const char *lit)
{
	size_t n = strlen(lit);

	return alen >= n && smtp_eq_nocase(a, n, lit);
}

static bool smtp_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool smtp_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Controls other than TAB, and DEL: never valid anywhere in a command. */
static bool smtp_is_bad_ctl(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool smtp_has_bad_ctl(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (smtp_is_bad_ctl((unsigned char)s[i]))
			return true;
	return false;
}

/* ---- command line ---- */

/* Verbs a client may type; UNKNOWN and HTTP are results, not spellings,
 * and PROXY needs the space that the PROXY protocol header always has. */
static const struct {
	const char *name;
	enum smtp_verb verb;
} smtp_cmd_words[] = {
	{ "HELO", SMTP_VERB_HELO },     { "EHLO", SMTP_VERB_EHLO },
	{ "MAIL", SMTP_VERB_MAIL },     { "RCPT", SMTP_VERB_RCPT },
	{ "DATA", SMTP_VERB_DATA },     { "RSET", SMTP_VERB_RSET },
	{ "NOOP", SMTP_VERB_NOOP },     { "QUIT", SMTP_VERB_QUIT },
	{ "VRFY", SMTP_VERB_VRFY },     { "EXPN", SMTP_VERB_EXPN },
	{ "HELP", SMTP_VERB_HELP },     { "STARTTLS", SMTP_VERB_STARTTLS },
	{ "XCLIENT", SMTP_VERB_XCLIENT }, { "XFORWARD", SMTP_VERB_XFORWARD },
	{ "AUTH", SMTP_VERB_AUTH },     { "ETRN", SMTP_VERB_ETRN },
	{ "BDAT", SMTP_VERB_BDAT },     { "TURN", SMTP_VERB_TURN },
};

/* Postfix smtpd_forbidden_commands plus the other HTTP methods. */
static const char *const smtp_http_words[] = {
	"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS",
};

static enum smtp_verb smtp_cmd_verb(const char *w, size_t wlen, bool spaced)
{
	for (size_t i = 0; i < sizeof smtp_cmd_words / sizeof *smtp_cmd_words;
	     i++)
		if (smtp_eq_nocase(w, wlen, smtp_cmd_words[i].name))
			return smtp_cmd_words[i].verb;
	if (!spaced)
		return SMTP_VERB_UNKNOWN;
	if (smtp_eq_nocase(w, wlen, "PROXY"))
		return SMTP_VERB_PROXY;
	for (size_t i = 0;
	     i < sizeof smtp_http_words / sizeof *smtp_http_words; i++)
		if (smtp_eq_nocase(w, wlen, smtp_http_words[i]))
			return SMTP_VERB_HTTP;
	return SMTP_VERB_UNKNOWN;
}

enum smtp_parse_status smtp_cmd_parse(const char *line, size_t len,
				      struct smtp_cmd *out)
{
	size_t w = 0, a;
	bool spaced;

	out->verb = SMTP_VERB_UNKNOWN;
	out->arg = line;
	out->arg_len = 0;
	if (len > SMTP_LINE_TEXT_MAX)
		return SMTP_PARSE_TOO_LONG;
	if (smtp_has_bad_ctl(line, len))
		return SMTP_PARSE_BAD_CHAR;
	/* RFC 5321: the verb starts the line. " HELO x" and blank lines are
	 * refused rather than guessed at (OpenSMTPD test.smtp4). */
	if (len == 0 || line[0] == ' ' || line[0] == '\t')
		return SMTP_PARSE_SYNTAX;
	while (w < len && line[w] != ' ')
		w++;
	spaced = w < len;
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (w > len)
		w = len; /* "DATA\t": the tab was trailing blank, not verb */
	out->verb = smtp_cmd_verb(line, w, spaced);
	a = w;
	while (a < len && line[a] == ' ')
		a++;
	out->arg = line + a;
	out->arg_len = len - a;
	return SMTP_PARSE_OK;
}

/* ---- addresses ---- */

/* RFC 5322 atext, ASCII part. */
static bool smtp_is_atext(unsigned char c)
{
	return smtp_is_alpha(c) || smtp_is_digit(c) ||
	       (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Length of a valid UTF-8 sequence starting at s (shortest form, no
 * surrogates, <= U+10FFFF), or 0. RFC 3629 table, so that an address we
 * pass on with SMTPUTF8 is one Postfix will not reject as bad UTF-8.
 */
static size_t smtp_utf8_len(const unsigned char *s, size_t len)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

struct smtp_scan {
	const char *s;
	size_t len;
	size_t pos;
	bool eight_bit; /* an 8-bit byte was seen */
	bool bad_utf8;  /* ... and it was not valid UTF-8 */
	bool too_long;  /* a domain over SMTP_DOMAIN_MAX */
};

static int smtp_peek(const struct smtp_scan *sc)
{
	return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

/* An 8-bit byte where SMTPUTF8 allows a UTF-8 character. */
static bool smtp_take_utf8(struct smtp_scan *sc)
{
	int c = smtp_peek(sc);
	size_t n;

	if (c < 0x80)
		return false;
	sc->eight_bit = true;
	n = smtp_utf8_len((const unsigned char *)sc->s + sc->pos,
			  sc->len - sc->pos);
	if (n == 0) {
		sc->bad_utf8 = true;
		n = 1;
	}
	sc->pos += n;
	return true;
}

/* sub-domain *("." sub-domain), labels of letters, digits, '-', '_' or
 * UTF-8; a label does not start or end with '-'. Length is flagged, not
 * failed, so an overlong name reports TOO_LONG rather than bad syntax. */
static bool smtp_scan_domain(struct smtp_scan *sc)
{
	size_t start = sc->pos;

	for (;;) {
		size_t label = sc->pos;
		int c;

		while ((c = smtp_peek(sc)) >= 0) {
			if (smtp_is_alpha((unsigned char)c) ||
			    smtp_is_digit((unsigned char)c) || c == '-' ||
			    c == '_')
				sc->pos++;
			else if (!smtp_take_utf8(sc))
				break;
		}
		if (sc->pos == label || sc->s[label] == '-' ||
		    sc->s[sc->pos - 1] == '-')
			return false;
		if (smtp_peek(sc) != '.')
			break;
		sc->pos++;
	}
	if (sc->pos - start > SMTP_DOMAIN_MAX)
		sc->too_long = true;
	return true;
}

/* "[" 1*dtext "]": RFC 5321 address literals, checked for shape only;
 * the backend judges the address itself. */
static bool smtp_scan_literal(struct smtp_scan *sc)
{
	size_t start = sc->pos;
	int c;

	if (smtp_peek(sc) != '[')
		return false;
	sc->pos++;
	while ((c = smtp_peek(sc)) >= 33 && c <= 126 && c != '[' && c != ']' &&
	       c != '\\')
		sc->pos++;
	if (c != ']' || sc->pos == start + 1)
		return false;
	sc->pos++;
	return true;
}

static bool smtp_scan_quoted(struct smtp_scan *sc)
{
	int c;

	sc->pos++; /* opening quote */
	while ((c = smtp_peek(sc)) >= 0 && c != '"') {
		if (c == '\\') {
			sc->pos++;
			c = smtp_peek(sc);
			if (c < 32 || c > 126)
				return false;
			sc->pos++;
		} else if (c >= 32 && c <= 126) {
			sc->pos++;
		} else if (!smtp_take_utf8(sc)) {
			return false;
		}
	}
	if (c != '"')
		return false;
	sc->pos++;
	return true;
}

static bool smtp_scan_local(struct smtp_scan *sc)
{
	size_t start = sc->pos;
	int c;

	if (smtp_peek(sc) == '"')
		return smtp_scan_quoted(sc);
	while ((c = smtp_peek(sc)) >= 0) {
		if (smtp_is_atext((unsigned char)c) || c == '.')
			sc->pos++;
		else if (!smtp_take_utf8(sc))
			break;
	}
	return sc->pos > start;
}

struct smtp_path {
	size_t mbox;     /* mailbox start (after any source route) */
	size_t mbox_len; /* 0: null path */
	bool has_at;
	bool eight_bit;
	bool bad_utf8;
};

/*
 * Path at s[0..len): "<" [A-d-l ":"] Mailbox ">" or "<>". On success
 * *end is the offset just past '>'. A mailbox without '@' is let through
 * with has_at false; the callers decide ("<postmaster>" for RCPT).
 */
static enum smtp_parse_status smtp_scan_path(const char *s, size_t len,
					     size_t *end, struct smtp_path *p)
{
	struct smtp_scan sc = { .s = s, .len = len };

	*p = (struct smtp_path){ 0 };
	if (smtp_peek(&sc) != '<')
		return SMTP_PARSE_BAD_ADDRESS;
	sc.pos++;
	if (smtp_peek(&sc) == '>') {
		*end = 2;
		return SMTP_PARSE_OK;
	}
	if (smtp_peek(&sc) == '@') {
		/* Source route: parsed so it cannot hide anything, then
		 * dropped (RFC 5321 4.1.1.3: SHOULD be ignored). */
		for (;;) {
			sc.pos++;
			if (!smtp_scan_domain(&sc))
				return SMTP_PARSE_BAD_ADDRESS;
			if (smtp_peek(&sc) == ':')
				break;
			if (smtp_peek(&sc) != ',')
				return SMTP_PARSE_BAD_ADDRESS;
			sc.pos++;
			if (smtp_peek(&sc) != '@')
				return SMTP_PARSE_BAD_ADDRESS;
		}
		sc.pos++;
	}
	p->mbox = sc.pos;
	if (!smtp_scan_local(&sc))
		return SMTP_PARSE_BAD_ADDRESS;
	if (smtp_peek(&sc) == '@') {
		sc.pos++;
		p->has_at = true;
		if (smtp_peek(&sc) == '[' ? !smtp_scan_literal(&sc)
					  : !smtp_scan_domain(&sc))
			return SMTP_PARSE_BAD_ADDRESS;
	}
	if (smtp_peek(&sc) != '>')
		return SMTP_PARSE_BAD_ADDRESS;
	p->mbox_len = sc.pos - p->mbox;
	p->eight_bit = sc.eight_bit;
	p->bad_utf8 = sc.bad_utf8;
	*end = sc.pos + 1;
	if (*end > SMTP_PATH_MAX || sc.too_long)
		return SMTP_PARSE_TOO_LONG;
	return SMTP_PARSE_OK;
}

/* Shared head of MAIL and RCPT: keyword ("FROM:"/"TO:"), spaces, path. */
static enum smtp_parse_status smtp_parse_head(const char *arg, size_t len,
					      const char *kw, size_t *after,
					      struct smtp_path *p)
{
	size_t i, end;
	enum smtp_parse_status st;

	if (smtp_has_bad_ctl(arg, len))
		return SMTP_PARSE_BAD_CHAR;
	if (!smtp_prefix_nocase(arg, len, kw))
		return SMTP_PARSE_SYNTAX;
	i = strlen(kw);
	while (i < len && arg[i] == ' ')
		i++;
	st = smtp_scan_path(arg + i, len - i, &end, p);
	if (st != SMTP_PARSE_OK)
		return st;
	p->mbox += i;
	*after = i + end;
	return SMTP_PARSE_OK;
}

static enum smtp_parse_status smtp_copy_path(const char *arg,
					     const struct smtp_path *p,
					     char *path, size_t path_cap)
{
	if (path_cap == 0)
		return SMTP_PARSE_TOO_LONG;
	path[0] = '\0';
	if (p->mbox_len >= path_cap)
		return SMTP_PARSE_TOO_LONG;
	memcpy(path, arg + p->mbox, p->mbox_len);
	path[p->mbox_len] = '\0';
	return SMTP_PARSE_OK;
}

enum smtp_mail_param_bit {
	SMTP_MAIL_SEEN_SIZE = 1,
	SMTP_MAIL_SEEN_BODY = 2,
	SMTP_MAIL_SEEN_UTF8 = 4,
};

static enum smtp_parse_status smtp_mail_size(const char *v, size_t vlen,
					     long long *size)
{
	long long n = 0;

	if (vlen == 0 || vlen > SMTP_SIZE_DIGITS_MAX)
		return SMTP_PARSE_BAD_PARAM;
	for (size_t i = 0; i < vlen; i++) {
		int d = (unsigned char)v[i] - '0';
		if (d < 0 || d > 9)
			return SMTP_PARSE_BAD_PARAM;
		/* Overflow is bad syntax, as Postfix's off_cvt_string. */
		if (n > (LLONG_MAX - d) / 10)
			return SMTP_PARSE_BAD_PARAM;
		n = n * 10 + d;
	}
	*size = n;
	return SMTP_PARSE_OK;
}

/* RFC 5321 esmtp-param: keyword ["=" value]. */
static enum smtp_parse_status smtp_mail_param(const char *s, size_t len,
					      unsigned *seen,
					      struct smtp_mail_params *mp)
{
	size_t k = 0, vlen;
	const char *v;

	while (k < len && s[k] != '=')
		k++;
	if (k == 0 || !(smtp_is_alpha((unsigned char)s[0]) ||
			smtp_is_digit((unsigned char)s[0])))
		return SMTP_PARSE_SYNTAX;
	for (size_t i = 1; i < k; i++)
		if (!smtp_is_alpha((unsigned char)s[i]) &&
		    !smtp_is_digit((unsigned char)s[i]) && s[i] != '-')
			return SMTP_PARSE_SYNTAX;
	v = k < len ? s + k + 1 : NULL;
	vlen = v ? len - k - 1 : 0;
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 33 || c == '=' || c == 127)
			return SMTP_PARSE_SYNTAX;
	}

	if (smtp_eq_nocase(s, k, "SIZE")) {
		if (*seen & SMTP_MAIL_SEEN_SIZE)
			return SMTP_PARSE_BAD_PARAM;
		*seen |= SMTP_MAIL_SEEN_SIZE;
		return v ? smtp_mail_size(v, vlen, &mp->size)
			 : SMTP_PARSE_BAD_PARAM;
	}
	if (smtp_eq_nocase(s, k, "BODY")) {
		if (*seen & SMTP_MAIL_SEEN_BODY)
			return SMTP_PARSE_BAD_PARAM;
		*seen |= SMTP_MAIL_SEEN_BODY;
		if (v && smtp_eq_nocase(v, vlen, "7BIT"))
			mp->body = SMTP_BODY_7BIT;
		else if (v && smtp_eq_nocase(v, vlen, "8BITMIME"))
			mp->body = SMTP_BODY_8BITMIME;
		else if (v && smtp_eq_nocase(v, vlen, "BINARYMIME"))
			/* Defined but never offered (docs/hostile.md case 68). */
			return SMTP_PARSE_UNKNOWN_PARAM;
		else
			return SMTP_PARSE_BAD_PARAM;
		return SMTP_PARSE_OK;
	}
	if (smtp_eq_nocase(s, k, "SMTPUTF8")) {
		if (*seen & SMTP_MAIL_SEEN_UTF8)
			return SMTP_PARSE_BAD_PARAM;
		*seen |= SMTP_MAIL_SEEN_UTF8;
		if (v)
			return SMTP_PARSE_BAD_PARAM;
		mp->smtputf8 = true;
		return SMTP_PARSE_OK;
	}
	return SMTP_PARSE_UNKNOWN_PARAM;
}

/*
 * Parameters after the path: each one preceded by one or more spaces.
 * The count is checked before any content, then the first error from the
 * left is returned, as a reply can name only one.
 */
static enum smtp_parse_status smtp_mail_params(const char *s, size_t len,
					       struct smtp_mail_params *mp)
{
	size_t i = 0, count = 0;
	unsigned seen = 0;

	if (len > 0 && s[0] != ' ')
		return SMTP_PARSE_SYNTAX;
	for (size_t k = 0; k < len; k++)
		if (s[k] != ' ' && s[k - 1] == ' ')
			count++;
	if (count > SMTP_PARAMS_MAX)
		return SMTP_PARSE_TOO_LONG;
	while (i < len) {
		size_t start;
		enum smtp_parse_status st;

		while (i < len && s[i] == ' ')
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && s[i] != ' ')
			i++;
		st = smtp_mail_param(s + start, i - start, &seen, mp);
		if (st != SMTP_PARSE_OK)
			return st;
	}
	return SMTP_PARSE_OK;
}

enum smtp_parse_status smtp_mail_parse(const char *arg, size_t len, char *path,
				       size_t path_cap,
				       struct smtp_mail_params *params)
{
	struct smtp_path p;
	size_t after;
	enum smtp_parse_status st;

	*params = (struct smtp_mail_params){ .size = -1,
					     .body = SMTP_BODY_NONE };
	if (path_cap > 0)
		path[0] = '\0';
	st = smtp_parse_head(arg, len, "FROM:", &after, &p);
	if (st != SMTP_PARSE_OK)
		return st;
	if (p.mbox_len > 0 && !p.has_at)
		return SMTP_PARSE_BAD_ADDRESS;
	st = smtp_mail_params(arg + after, len - after, params);
	if (st != SMTP_PARSE_OK)
		return st;
	/* Only now is it known whether SMTPUTF8 came with the path. */
	if (p.eight_bit && !params->smtputf8)
		return SMTP_PARSE_NON_ASCII;
	if (p.bad_utf8)
		return SMTP_PARSE_BAD_UTF8;
	return smtp_copy_path(arg, &p, path, path_cap);
}

enum smtp_parse_status smtp_rcpt_parse(const char *arg, size_t len, char *path,
				       size_t path_cap, bool smtputf8)
{
	struct smtp_path p;
	size_t after;
	enum smtp_parse_status st;

	if (path_cap > 0)
		path[0] = '\0';
	st = smtp_parse_head(arg, len, "TO:", &after, &p);
	if (st != SMTP_PARSE_OK)
		return st;
	if (p.mbox_len == 0)
		return SMTP_PARSE_SYNTAX;
	if (!p.has_at &&
	    !smtp_eq_nocase(arg + p.mbox, p.mbox_len, SMTP_LOCAL_POSTMASTER))
		return SMTP_PARSE_BAD_ADDRESS;
	if (after < len) {
		size_t i = after;
		if (arg[i] != ' ')
			return SMTP_PARSE_SYNTAX;
		while (i < len && arg[i] == ' ')
			i++;
		if (i < len)
			return SMTP_PARSE_UNKNOWN_PARAM;
	}
	if (p.eight_bit && !smtputf8)
		return SMTP_PARSE_NON_ASCII;
	if (p.bad_utf8)
		return SMTP_PARSE_BAD_UTF8;
	return smtp_copy_path(arg, &p, path, path_cap);
}

/* ---- HELO ---- */

enum smtp_parse_status smtp_helo_parse(const char *arg, size_t len,
				       size_t *name_len)
{
	size_t n = 0;

	*name_len = 0;
	/* The whole argument, ignored words too: what is logged or passed
	 * on must be what was checked. */
	if (smtp_has_bad_ctl(arg, len))
		return SMTP_PARSE_BAD_CHAR;
	while (n < len && arg[n] != ' ' && arg[n] != '\t')
		n++;
	if (n == 0)
		return SMTP_PARSE_SYNTAX;
	if (n > SMTP_DOMAIN_MAX)
		return SMTP_PARSE_TOO_LONG;
	if (arg[0] == '[') {
		struct smtp_scan sc = { .s = arg, .len = n };
		if (!smtp_scan_literal(&sc) || sc.pos != n)
			return SMTP_PARSE_SYNTAX;
	}
	*name_len = n;
	return SMTP_PARSE_OK;
}

/* ---- xtext (RFC 3461 4) ---- */

static const char smtp_hex[] = "0123456789ABCDEF";

static bool smtp_xtext_plain(unsigned char c)
{
	return c >= '!' && c <= '~' && c != '+' && c != '=';
}

size_t smtp_xtext_encode(const char *src, size_t len, char *dst,
			 size_t dst_cap)
{
	size_t o = 0;

	if (dst_cap == 0)
		return (size_t)-1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		size_t need = smtp_xtext_plain(c) ? 1 : 3;

		if (dst_cap - 1 - o < need) {
			dst[0] = '\0';
			return (size_t)-1;
		}
		if (need == 1) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '+';
			dst[o++] = smtp_hex[c >> 4];
			dst[o++] = smtp_hex[c & 0xf];
		}
	}
	dst[o] = '\0';
	return o;
}

static int smtp_xtext_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t smtp_xtext_decode(const char *src, size_t len, char *dst,
			 size_t dst_cap)
{
	size_t o = 0;

	if (dst_cap == 0)
		return (size_t)-1;
	dst[0] = '\0';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		int hi, lo;

		if (o + 1 >= dst_cap) {
			dst[0] = '\0';
			return (size_t)-1;
		}
		if (smtp_xtext_plain(c)) {
			dst[o++] = (char)c;
			continue;
		}
		if (c != '+' || len - i < 3 ||
		    (hi = smtp_xtext_hexval(src[i + 1])) < 0 ||
		    (lo = smtp_xtext_hexval(src[i + 2])) < 0) {
			dst[0] = '\0';
			return (size_t)-1;
		}
		dst[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	dst[o] = '\0';
	return o;
}
