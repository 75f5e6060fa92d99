/*
 * smtp_parse: pure parsers for what SMTP clients send in the command phase.
 * No I/O, no allocation, no logging; every function takes untrusted bytes
 * with an explicit length (no NUL termination required, embedded NUL bytes
 * are input like any other) and states its limits.
 */
#ifndef SLUICE_SMTP_PARSE_H
#define SLUICE_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: limits, in octets. */
#define SMTP_CMD_LINE_MAX 512 /* command line including CRLF */
#define SMTP_PATH_MAX 256     /* reverse/forward path including <> */
#define SMTP_DOMAIN_MAX 255
#define SMTP_PARAMS_MAX 16 /* ESMTP parameters on one MAIL/RCPT */

#define SMTP_VERBS(X)                                                          \
	X(UNKNOWN) X(HELO) X(EHLO) X(MAIL) X(RCPT) X(DATA) X(RSET) X(NOOP)     \
	X(QUIT) X(VRFY) X(EXPN) X(HELP) X(STARTTLS) X(XCLIENT) X(XFORWARD)     \
	X(AUTH) X(ETRN) X(BDAT) X(TURN) X(PROXY) X(HTTP)

enum smtp_verb {
#define SMTP_VERB_ENUM(v) SMTP_VERB_##v,
	SMTP_VERBS(SMTP_VERB_ENUM)
#undef SMTP_VERB_ENUM
	SMTP_VERB_COUNT
};

const char *smtp_verb_name(enum smtp_verb verb);

enum smtp_parse_status {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_SYNTAX,        /* malformed: 501 5.5.2 (or 500 for a line) */
	SMTP_PARSE_BAD_CHAR,      /* NUL, bare CR, other control byte in a line */
	SMTP_PARSE_TOO_LONG,      /* a limit above was exceeded */
	SMTP_PARSE_BAD_ADDRESS,   /* path syntax: 501 5.1.7 / 5.1.3 */
	SMTP_PARSE_UNKNOWN_PARAM, /* 555 5.5.4 */
	SMTP_PARSE_BAD_PARAM,     /* known parameter, bad value: 501 5.5.4 */
	SMTP_PARSE_NON_ASCII,     /* 8-bit address without SMTPUTF8: 553 5.6.7 */
	SMTP_PARSE_BAD_UTF8,      /* malformed UTF-8 with SMTPUTF8: 500 5.5.2 */
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg; /* points into the line: after the verb and spaces */
	size_t arg_len;  /* trailing spaces removed */
};

/*
 * smtp_cmd_parse: one command line, CRLF already removed, len <= 510.
 * Verb is matched case-insensitively. "MAIL FROM:" and "RCPT TO:" keep their
 * "FROM:"/"TO:" in arg (smtp_parse_mail/rcpt consume them). A line starting
 * with "PROXY " is SMTP_VERB_PROXY; GET/POST/HEAD/PUT/CONNECT/OPTIONS
 * followed by a space are SMTP_VERB_HTTP. A CR, NUL or other control byte
 * (except TAB) anywhere gives SMTP_PARSE_BAD_CHAR; len > 510 TOO_LONG.
 * An unrecognised verb is SMTP_PARSE_OK with SMTP_VERB_UNKNOWN.
 */
enum smtp_parse_status smtp_cmd_parse(const char *line, size_t len,
				      struct smtp_cmd *out);

enum smtp_body_type { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_mail_params {
	long long size;          /* SIZE=, -1 when absent */
	enum smtp_body_type body;
	bool smtputf8;
};

/*
 * smtp_mail_parse: the argument of MAIL, e.g. "FROM:<a@b> SIZE=10 BODY=8BITMIME".
 * "FROM:" is case-insensitive, a space after the colon is tolerated (as
 * Postfix does). The path is written without angle brackets into path
 * (capacity path_cap >= SMTP_PATH_MAX), NUL-terminated; the null path "<>"
 * gives "". Source routes "<@x,@y:a@b>" are accepted and stripped to
 * "a@b". Quoted local parts are kept verbatim. Parameters known: SIZE
 * (digits only, <= 20 digits), BODY (7BIT, 8BITMIME), SMTPUTF8 (no value).
 * Anything else: SMTP_PARSE_UNKNOWN_PARAM. Duplicate parameter: BAD_PARAM.
 * 8-bit bytes in the path are allowed only together with SMTPUTF8.
 */
enum smtp_parse_status smtp_mail_parse(const char *arg, size_t len, char *path,
				       size_t path_cap,
				       struct smtp_mail_params *params);

/*
 * smtp_rcpt_parse: the argument of RCPT, "TO:<a@b>" with no parameters
 * supported (any parameter: UNKNOWN_PARAM). The null path is SYNTAX (RFC 5321
 * forbids it for RCPT), "<postmaster>" without domain is accepted. The
 * path must contain an '@' otherwise. smtputf8 says whether the
 * transaction allows 8-bit addresses.
 */
enum smtp_parse_status smtp_rcpt_parse(const char *arg, size_t len, char *path,
				       size_t path_cap, bool smtputf8);

/*
 * smtp_helo_parse: the argument of HELO/EHLO: one domain or address literal
 * ("[1.2.3.4]", "[IPv6:...]"), no spaces inside, 1..255 octets, printable
 * ASCII (8-bit allowed: SMTPUTF8 names), no control bytes. Extra words after
 * the name are ignored (as Postfix does); *name_len gets the name's length.
 */
enum smtp_parse_status smtp_helo_parse(const char *arg, size_t len,
				       size_t *name_len);

/*
 * xtext (RFC 3461 4): bytes outside '!'..'~', plus '+' and '=', become "+XX".
 * smtp_xtext_encode writes at most dst_cap-1 bytes and NUL-terminates;
 * returns the encoded length, or (size_t)-1 when it does not fit.
 * smtp_xtext_decode: strict (uppercase hex, no bytes outside '!'..'~' and no
 * bare '+' or '='); returns decoded length or (size_t)-1 on a syntax error
 * or when it does not fit; NUL-terminates.
 */
size_t smtp_xtext_encode(const char *src, size_t len, char *dst,
			 size_t dst_cap);
size_t smtp_xtext_decode(const char *src, size_t len, char *dst,
			 size_t dst_cap);

#endif
