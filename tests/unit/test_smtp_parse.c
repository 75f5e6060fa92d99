/*
 * test_smtp_parse: command lines, MAIL/RCPT paths and parameters, HELO
 * names, xtext. Table rows {name, input, want}; docs/hostile.md cases 9-10 and
 * 38-48 where they reach a parser.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>

#include "smtp_parse.h"

#define OK SMTP_PARSE_OK
#define SYNTAX SMTP_PARSE_SYNTAX
#define BAD_CHAR SMTP_PARSE_BAD_CHAR
#define TOO_LONG SMTP_PARSE_TOO_LONG
#define BAD_ADDR SMTP_PARSE_BAD_ADDRESS
#define UNKNOWN_PARAM SMTP_PARSE_UNKNOWN_PARAM
#define BAD_PARAM SMTP_PARSE_BAD_PARAM
#define NON_ASCII SMTP_PARSE_NON_ASCII
#define V(x) SMTP_VERB_##x

/* ---- smtp_cmd_parse ---- */

struct cmd_row {
	const char *name;
	const char *line;
	size_t len;
	enum smtp_parse_status st;
	enum smtp_verb verb;
	const char *arg; /* NULL: not checked */
};

#define CMD(nm, line, st, verb, arg) { nm, UNIT_BYTES(line), st, verb, arg }

static const struct cmd_row cmd_rows[] = {
	CMD("helo", "HELO x", OK, V(HELO), "x"),
	CMD("ehlo lower", "ehlo x", OK, V(EHLO), "x"),
	CMD("mixed case mail", "MaIl FrOm:<A@B>", OK, V(MAIL), "FrOm:<A@B>"),
	CMD("rcpt keeps TO:", "RCPT TO:<a@b>", OK, V(RCPT), "TO:<a@b>"),
	CMD("data", "DATA", OK, V(DATA), ""),
	CMD("data trailing blanks", "DATA \t ", OK, V(DATA), ""),
	CMD("data tab", "DATA\t", OK, V(DATA), ""),
	CMD("noop arg", "NOOP  hello  ", OK, V(NOOP), "hello"),
	CMD("ehlo two spaces", "EHLO  x", OK, V(EHLO), "x"),
	CMD("helo two words", "HELO x y", OK, V(HELO), "x y"),
	CMD("inner tab kept", "HELO x\ty", OK, V(HELO), "x\ty"),
	CMD("rset", "RSET", OK, V(RSET), ""),
	CMD("quit", "quit", OK, V(QUIT), ""),
	CMD("vrfy", "VRFY x", OK, V(VRFY), "x"),
	CMD("expn", "EXPN x", OK, V(EXPN), "x"),
	CMD("help", "HELP", OK, V(HELP), ""),
	CMD("starttls", "STARTTLS", OK, V(STARTTLS), ""),
	CMD("xclient", "XCLIENT ADDR=1.2.3.4", OK, V(XCLIENT), "ADDR=1.2.3.4"),
	CMD("xforward", "XFORWARD NAME=x", OK, V(XFORWARD), "NAME=x"),
	CMD("auth", "AUTH PLAIN", OK, V(AUTH), "PLAIN"),
	CMD("etrn", "ETRN x", OK, V(ETRN), "x"),
	CMD("bdat", "BDAT 10 LAST", OK, V(BDAT), "10 LAST"),
	CMD("turn", "TURN", OK, V(TURN), ""),
	CMD("proxy", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", OK, V(PROXY),
	    "TCP4 1.2.3.4 5.6.7.8 1 2"),
	CMD("proxy alone", "PROXY", OK, V(UNKNOWN), NULL),
	CMD("get", "GET / HTTP/1.1", OK, V(HTTP), "/ HTTP/1.1"),
	CMD("post", "POST /", OK, V(HTTP), "/"),
	CMD("connect", "CONNECT a:25", OK, V(HTTP), "a:25"),
	CMD("head lower", "head /", OK, V(HTTP), "/"),
	CMD("put", "PUT /x", OK, V(HTTP), "/x"),
	CMD("options", "OPTIONS *", OK, V(HTTP), "*"),
	CMD("get alone", "GET", OK, V(UNKNOWN), NULL),
	CMD("typed HTTP", "HTTP x", OK, V(UNKNOWN), NULL),
	CMD("typed UNKNOWN", "UNKNOWN", OK, V(UNKNOWN), NULL),
	CMD("header shaped", "Subject: hi", OK, V(UNKNOWN), "hi"),
	CMD("verb glued", "MAILFROM:<a@b>", OK, V(UNKNOWN), ""),
	CMD("verb prefix", "HEL x", OK, V(UNKNOWN), "x"),
	CMD("verb longer", "HELOO x", OK, V(UNKNOWN), "x"),
	CMD("8bit arg", "HELO \xc3\xa9.x", OK, V(HELO), "\xc3\xa9.x"),
	/* case 41 */
	CMD("empty", "", SYNTAX, V(UNKNOWN), NULL),
	CMD("blanks", "   ", SYNTAX, V(UNKNOWN), NULL),
	CMD("leading space", " HELO x", SYNTAX, V(UNKNOWN), NULL),
	CMD("leading tab", "\tHELO x", SYNTAX, V(UNKNOWN), NULL),
	/* cases 9, 10, 40 */
	CMD("bare CR", "RCPT TO:<a@b>\rDATA", BAD_CHAR, V(UNKNOWN), NULL),
	CMD("bare LF", "NOOP\nQUIT", BAD_CHAR, V(UNKNOWN), NULL),
	CMD("NUL in mail", "MAIL FROM:<a@b>\0<c@d>", BAD_CHAR, V(UNKNOWN),
	    NULL),
	CMD("NUL in ehlo", "EHLO x\0y", BAD_CHAR, V(UNKNOWN), NULL),
	CMD("NUL first", "\0HELO", BAD_CHAR, V(UNKNOWN), NULL),
	CMD("DEL", "NOOP \x7f", BAD_CHAR, V(UNKNOWN), NULL),
	CMD("ESC", "NOOP \x1b[0m", BAD_CHAR, V(UNKNOWN), NULL),
};

static void test_cmd_table(void **unused)
{
	char e[600];

	for (size_t i = 0; i < UNIT_NELEM(cmd_rows); i++) {
		const struct cmd_row *r = &cmd_rows[i];
		struct smtp_cmd c;
		enum smtp_parse_status st = smtp_cmd_parse(r->line, r->len, &c);

		if (st != r->st || c.verb != r->verb)
			fail_msg("%s: status %d verb %s, want %d %s", r->name,
				 st, smtp_verb_name(c.verb), r->st,
				 smtp_verb_name(r->verb));
		if (r->arg != NULL &&
		    (c.arg_len != strlen(r->arg) ||
		     memcmp(c.arg, r->arg, c.arg_len) != 0))
			fail_msg("%s: arg \"%s\"", r->name,
				 unit_escape(e, sizeof e, c.arg, c.arg_len));
		/* arg always lies inside the line */
		assert_true(c.arg >= r->line &&
			    c.arg + c.arg_len <= r->line + r->len);
	}
}

/* Lines of exactly 510 octets (512 with CR LF) work; 511 do not (case 38). */
static void test_cmd_length(void **unused)
{
	char line[SMTP_CMD_LINE_MAX + 8];
	struct smtp_cmd c;

	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'A', sizeof line - 5);
	assert_int_equal(smtp_cmd_parse(line, SMTP_CMD_LINE_MAX - 2, &c), OK);
	assert_int_equal(c.verb, V(NOOP));
	assert_int_equal(c.arg_len, SMTP_CMD_LINE_MAX - 2 - 5);
	assert_int_equal(smtp_cmd_parse(line, SMTP_CMD_LINE_MAX - 1, &c),
			 TOO_LONG);
	assert_int_equal(smtp_cmd_parse(line, sizeof line, &c), TOO_LONG);
}

static void test_verb_names(void **unused)
{
	assert_string_equal(smtp_verb_name(V(MAIL)), "MAIL");
	assert_string_equal(smtp_verb_name(V(STARTTLS)), "STARTTLS");
	assert_string_equal(smtp_verb_name(V(UNKNOWN)), "UNKNOWN");
	assert_string_equal(smtp_verb_name(V(HTTP)), "HTTP");
	assert_string_equal(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN");
	assert_string_equal(smtp_verb_name((enum smtp_verb)-1), "UNKNOWN");
	/* Every verb but the results round-trips through the parser. */
	for (int v = 0; v < SMTP_VERB_COUNT; v++) {
		char line[32];
		struct smtp_cmd c;
		int n = snprintf(line, sizeof line, "%s x",
				 smtp_verb_name((enum smtp_verb)v));
		assert_int_equal(smtp_cmd_parse(line, (size_t)n, &c), OK);
		if (v == V(UNKNOWN) || v == V(HTTP))
			assert_int_equal(c.verb, V(UNKNOWN));
		else
			assert_int_equal(c.verb, v);
	}
}

/* ---- smtp_mail_parse ---- */

struct mail_row {
	const char *name;
	const char *arg;
	size_t len;
	enum smtp_parse_status st;
	const char *path;
	long long size;
	enum smtp_body_type body;
	bool utf8;
};

#define MAIL(nm, arg, st, path, size, body, u8)                               \
	{ nm, UNIT_BYTES(arg), st, path, size, SMTP_BODY_##body, u8 }

static const struct mail_row mail_rows[] = {
	MAIL("plain", "FROM:<a@b>", OK, "a@b", -1, NONE, 0),
	MAIL("case kept", "from:<A@B.example>", OK, "A@B.example", -1, NONE,
	     0),
	MAIL("space after colon", "FROM: <a@b>", OK, "a@b", -1, NONE, 0),
	MAIL("spaces after colon", "FROM:   <a@b>", OK, "a@b", -1, NONE, 0),
	MAIL("null path", "FROM:<>", OK, "", -1, NONE, 0),
	MAIL("null path size", "FROM:<> SIZE=0", OK, "", 0, NONE, 0),
	MAIL("source route", "FROM:<@x,@y.z:a@b>", OK, "a@b", -1, NONE, 0),
	MAIL("source route one", "FROM:<@x:a@b>", OK, "a@b", -1, NONE, 0),
	MAIL("quoted local", "FROM:<\"a b>c\\\"d\"@x>", OK, "\"a b>c\\\"d\"@x",
	     -1, NONE, 0),
	MAIL("atext local", "FROM:<a.b+c=d!#$%&'*/?^_`{|}~-@x>", OK,
	     "a.b+c=d!#$%&'*/?^_`{|}~-@x", -1, NONE, 0),
	MAIL("dots lenient", "FROM:<.a..b.@x>", OK, ".a..b.@x", -1, NONE, 0),
	MAIL("ipv4 literal", "FROM:<a@[1.2.3.4]>", OK, "a@[1.2.3.4]", -1, NONE,
	     0),
	MAIL("ipv6 literal", "FROM:<a@[IPv6:::1]>", OK, "a@[IPv6:::1]", -1,
	     NONE, 0),
	MAIL("underscore domain", "FROM:<a@x_y.z>", OK, "a@x_y.z", -1, NONE, 0),
	MAIL("size", "FROM:<a@b> SIZE=10", OK, "a@b", 10, NONE, 0),
	MAIL("size lower", "FROM:<a@b> size=10", OK, "a@b", 10, NONE, 0),
	MAIL("size max", "FROM:<a@b> SIZE=9223372036854775807", OK, "a@b",
	     9223372036854775807LL, NONE, 0),
	MAIL("size 20 digits", "FROM:<a@b> SIZE=00000000000000000042", OK,
	     "a@b", 42, NONE, 0),
	MAIL("body 8bit", "FROM:<a@b> BODY=8BITMIME", OK, "a@b", -1, 8BITMIME,
	     0),
	MAIL("body 7bit lower", "FROM:<a@b> body=7bit", OK, "a@b", -1, 7BIT, 0),
	MAIL("all three", "FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8", OK,
	     "a@b", 1, 8BITMIME, 1),
	MAIL("params double space", "FROM:<a@b>  SIZE=1  ", OK, "a@b", 1, NONE,
	     0),
	MAIL("utf8 local", "FROM:<j\xc3\xb6rg@x> SMTPUTF8", OK,
	     "j\xc3\xb6rg@x", -1, NONE, 1),
	MAIL("utf8 domain", "FROM:<a@\xc3\xa9.x> SMTPUTF8", OK,
	     "a@\xc3\xa9.x", -1, NONE, 1),
	/* syntax around the path */
	MAIL("no FROM", "<a@b>", SYNTAX, "", -1, NONE, 0),
	MAIL("TO in mail", "TO:<a@b>", SYNTAX, "", -1, NONE, 0),
	MAIL("FROM no colon", "FROM <a@b>", SYNTAX, "", -1, NONE, 0),
	MAIL("empty", "", SYNTAX, "", -1, NONE, 0),
	MAIL("junk after path", "FROM:<a@b>x", SYNTAX, "", -1, NONE, 0),
	MAIL("tab before param", "FROM:<a@b>\tSIZE=1", SYNTAX, "", -1, NONE,
	     0),
	MAIL("param bad keyword", "FROM:<a@b> -X=1", SYNTAX, "", -1, NONE, 0),
	MAIL("param double equals", "FROM:<a@b> X==1", SYNTAX, "", -1, NONE, 0),
	MAIL("param empty keyword", "FROM:<a@b> =1", SYNTAX, "", -1, NONE, 0),
	/* the path itself */
	MAIL("no brackets", "FROM:a@b", BAD_ADDR, "", -1, NONE, 0),
	MAIL("no closing", "FROM:<a@b", BAD_ADDR, "", -1, NONE, 0),
	MAIL("no at", "FROM:<ab>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("postmaster no at", "FROM:<postmaster>", BAD_ADDR, "", -1, NONE,
	     0),
	MAIL("empty local", "FROM:<@b>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("empty domain", "FROM:<a@>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("domain dot end", "FROM:<a@b.>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("domain dotdot", "FROM:<a@b..c>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("label hyphen", "FROM:<a@-b.c>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("two ats", "FROM:<a@b@c>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("space in path", "FROM:<a b@c>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("nested bracket", "FROM:<<a@b>>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("unclosed quote", "FROM:<\"a@b>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("bad literal", "FROM:<a@[1.2.3.4>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("empty literal", "FROM:<a@[]>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("route no colon", "FROM:<@x,@y>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("route no at", "FROM:<@x,y:a@b>", BAD_ADDR, "", -1, NONE, 0),
	MAIL("comma local", "FROM:<a,b@c>", BAD_ADDR, "", -1, NONE, 0),
	/* case 40: control bytes */
	MAIL("NUL after path", "FROM:<a@b>\0<c@d>", BAD_CHAR, "", -1, NONE, 0),
	MAIL("CR in path", "FROM:<a\r@b>", BAD_CHAR, "", -1, NONE, 0),
	/* case 46: parameters */
	MAIL("size empty", "FROM:<a@b> SIZE=", BAD_PARAM, "", -1, NONE, 0),
	MAIL("size no value", "FROM:<a@b> SIZE", BAD_PARAM, "", -1, NONE, 0),
	MAIL("size negative", "FROM:<a@b> SIZE=-1", BAD_PARAM, "", -1, NONE, 0),
	MAIL("size abc", "FROM:<a@b> SIZE=abc", BAD_PARAM, "", -1, NONE, 0),
	MAIL("size plus", "FROM:<a@b> SIZE=+1", BAD_PARAM, "", -1, NONE, 0),
	MAIL("size overflow", "FROM:<a@b> SIZE=99999999999999999999",
	     BAD_PARAM, "", -1, NONE, 0),
	MAIL("size llong+1", "FROM:<a@b> SIZE=9223372036854775808", BAD_PARAM,
	     "", -1, NONE, 0),
	MAIL("size 21 digits", "FROM:<a@b> SIZE=000000000000000000001",
	     BAD_PARAM, "", -1, NONE, 0),
	MAIL("size twice", "FROM:<a@b> SIZE=1 SIZE=2", BAD_PARAM, "", 1, NONE,
	     0),
	MAIL("body twice", "FROM:<a@b> BODY=7BIT BODY=7BIT", BAD_PARAM, "", -1,
	     7BIT, 0),
	MAIL("utf8 twice", "FROM:<a@b> SMTPUTF8 SMTPUTF8", BAD_PARAM, "", -1,
	     NONE, 1),
	MAIL("utf8 value", "FROM:<a@b> SMTPUTF8=1", BAD_PARAM, "", -1, NONE, 0),
	MAIL("body bad", "FROM:<a@b> BODY=9BIT", BAD_PARAM, "", -1, NONE, 0),
	MAIL("body empty", "FROM:<a@b> BODY=", BAD_PARAM, "", -1, NONE, 0),
	MAIL("body binarymime", "FROM:<a@b> BODY=BINARYMIME", UNKNOWN_PARAM,
	     "", -1, NONE, 0),
	MAIL("foo", "FROM:<a@b> FOO=bar", UNKNOWN_PARAM, "", -1, NONE, 0),
	MAIL("envid", "FROM:<a@b> ENVID=x+2By", UNKNOWN_PARAM, "", -1, NONE,
	     0),
	MAIL("first error wins", "FROM:<a@b> FOO SIZE=x", UNKNOWN_PARAM, "",
	     -1, NONE, 0),
	/* cases 43, 44 */
	MAIL("8bit without utf8", "FROM:<j\xc3\xb6rg@example.org>", NON_ASCII,
	     "", -1, NONE, 0),
	MAIL("overlong utf8", "FROM:<\xc0\xaf@x> SMTPUTF8", SMTP_PARSE_BAD_UTF8, "", -1,
	     NONE, 1),
	MAIL("surrogate", "FROM:<\xed\xa0\x80@x> SMTPUTF8", SMTP_PARSE_BAD_UTF8, "", -1,
	     NONE, 1),
	MAIL("truncated utf8", "FROM:<\xe2\x82@x> SMTPUTF8", SMTP_PARSE_BAD_UTF8, "", -1,
	     NONE, 1),
	MAIL("ff", "FROM:<\xff@x> SMTPUTF8", SMTP_PARSE_BAD_UTF8, "", -1, NONE, 1),
	MAIL("ff without utf8", "FROM:<\xff@x>", NON_ASCII, "", -1, NONE, 0),
};

static void test_mail_table(void **unused)
{
	char e[600];

	for (size_t i = 0; i < UNIT_NELEM(mail_rows); i++) {
		const struct mail_row *r = &mail_rows[i];
		char path[SMTP_PATH_MAX];
		struct smtp_mail_params mp;
		enum smtp_parse_status st;

		memset(path, 'Z', sizeof path);
		st = smtp_mail_parse(r->arg, r->len, path, sizeof path, &mp);
		if (st != r->st)
			fail_msg("%s: status %d want %d", r->name, st, r->st);
		if (strcmp(path, r->path) != 0)
			fail_msg("%s: path \"%s\"", r->name,
				 unit_escape(e, sizeof e, path, strlen(path)));
		if (mp.size != r->size || mp.body != r->body ||
		    mp.smtputf8 != r->utf8)
			fail_msg("%s: params %lld %d %d", r->name, mp.size,
				 mp.body, mp.smtputf8);
	}
}

/* case 45: local 64, domain 255 and path 256 fit; one more does not. */
static void test_mail_lengths(void **unused)
{
	char arg[600], path[SMTP_PATH_MAX];
	struct smtp_mail_params mp;
	size_t n;

	/* "<" + 64 + "@" + 189 + ">" = 256 */
	n = (size_t)snprintf(arg, sizeof arg, "FROM:<%.64s@%.63s.%.63s.%.61s>",
			     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
			     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
			     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	assert_int_equal(n - 5, SMTP_PATH_MAX);
	assert_int_equal(smtp_mail_parse(arg, n, path, sizeof path, &mp), OK);
	assert_int_equal(strlen(path), SMTP_PATH_MAX - 2);
	/* path of 257 */
	memmove(arg + 7, arg + 6, n - 6);
	arg[6] = 'a';
	assert_int_equal(smtp_mail_parse(arg, n + 1, path, sizeof path, &mp),
			 TOO_LONG);
	assert_string_equal(path, "");
	/* A 65-octet local part is the backend's call. */
	n = (size_t)snprintf(arg, sizeof arg, "FROM:<%065d@x>", 0);
	assert_int_equal(smtp_mail_parse(arg, n, path, sizeof path, &mp), OK);
	/* Domain of 256 in a source route, where the path limit alone
	 * would not say why. */
	memset(arg, 'd', sizeof arg);
	memcpy(arg, "FROM:<@", 7);
	memcpy(arg + 7 + 256, ":a@b>", 5);
	assert_int_equal(smtp_mail_parse(arg, 7 + 256 + 5, path, sizeof path,
					 &mp), TOO_LONG);
	/* A small buffer is refused, not overrun. */
	assert_int_equal(smtp_mail_parse(UNIT_BYTES("FROM:<abc@d>"), path, 5,
					 &mp), TOO_LONG);
	assert_int_equal(smtp_mail_parse(UNIT_BYTES("FROM:<abc@d>"), path, 0,
					 &mp), TOO_LONG);
	assert_int_equal(smtp_mail_parse(UNIT_BYTES("FROM:<abc@d>"), path, 6,
					 &mp), OK);
}

static void test_mail_params_max(void **unused)
{
	char arg[600], path[SMTP_PATH_MAX];
	struct smtp_mail_params mp;
	size_t n = (size_t)snprintf(arg, sizeof arg, "FROM:<a@b>");

	for (int i = 0; i < SMTP_PARAMS_MAX; i++)
		n += (size_t)snprintf(arg + n, sizeof arg - n, " X%d=1", i);
	/* 16 unknown: the first one is the error */
	assert_int_equal(smtp_mail_parse(arg, n, path, sizeof path, &mp),
			 UNKNOWN_PARAM);
	/* 17: the limit is checked before any parameter is looked at */
	n += (size_t)snprintf(arg + n, sizeof arg - n, " X=1");
	assert_int_equal(smtp_mail_parse(arg, n, path, sizeof path, &mp),
			 TOO_LONG);
	n = (size_t)snprintf(arg, sizeof arg,
			     "FROM:<a@b> SIZE=1 BODY=7BIT SMTPUTF8");
	assert_int_equal(smtp_mail_parse(arg, n, path, sizeof path, &mp), OK);
}

/* ---- smtp_rcpt_parse ---- */

struct rcpt_row {
	const char *name;
	const char *arg;
	size_t len;
	bool utf8;
	enum smtp_parse_status st;
	const char *path;
};

#define RCPT(nm, arg, u8, st, path) { nm, UNIT_BYTES(arg), u8, st, path }

static const struct rcpt_row rcpt_rows[] = {
	RCPT("plain", "TO:<a@b>", 0, OK, "a@b"),
	RCPT("lower", "to:<A@b>", 0, OK, "A@b"),
	RCPT("space after colon", "TO: <a@b>", 0, OK, "a@b"),
	RCPT("trailing spaces", "TO:<a@b>  ", 0, OK, "a@b"),
	RCPT("postmaster", "TO:<postmaster>", 0, OK, "postmaster"),
	RCPT("Postmaster", "TO:<PostMaster>", 0, OK, "PostMaster"),
	RCPT("postmaster at", "TO:<postmaster@x>", 0, OK, "postmaster@x"),
	RCPT("source route", "TO:<@h:a@b>", 0, OK, "a@b"),
	RCPT("quoted", "TO:<\"x y\"@b>", 0, OK, "\"x y\"@b"),
	RCPT("utf8 allowed", "TO:<\xc3\xa9@b>", 1, OK, "\xc3\xa9@b"),
	RCPT("null path", "TO:<>", 0, SYNTAX, ""),
	RCPT("FROM in rcpt", "FROM:<a@b>", 0, SYNTAX, ""),
	RCPT("glued junk", "TO:<a@b>x", 0, SYNTAX, ""),
	RCPT("no at", "TO:<user>", 0, BAD_ADDR, ""),
	RCPT("postmasterx", "TO:<postmasterx>", 0, BAD_ADDR, ""),
	RCPT("quoted postmaster", "TO:<\"postmaster\">", 0, BAD_ADDR, ""),
	RCPT("no brackets", "TO:a@b", 0, BAD_ADDR, ""),
	RCPT("param", "TO:<a@b> NOTIFY=NEVER", 0, UNKNOWN_PARAM, ""),
	RCPT("orcpt", "TO:<a@b> ORCPT=rfc822;a+2Bb@x", 0, UNKNOWN_PARAM, ""),
	RCPT("utf8 refused", "TO:<\xc3\xa9@b>", 0, NON_ASCII, ""),
	RCPT("bad utf8", "TO:<\xc3@b>", 1, SMTP_PARSE_BAD_UTF8, ""),
	RCPT("NUL", "TO:<a@b>\0", 0, BAD_CHAR, ""),
	RCPT("empty", "", 0, SYNTAX, ""),
};

static void test_rcpt_table(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(rcpt_rows); i++) {
		const struct rcpt_row *r = &rcpt_rows[i];
		char path[SMTP_PATH_MAX];
		enum smtp_parse_status st;

		memset(path, 'Z', sizeof path);
		st = smtp_rcpt_parse(r->arg, r->len, path, sizeof path,
				     r->utf8);
		if (st != r->st)
			fail_msg("%s: status %d want %d", r->name, st, r->st);
		assert_string_equal(path, r->path);
	}
}

/* ---- smtp_helo_parse ---- */

struct helo_row {
	const char *name;
	const char *arg;
	size_t len;
	enum smtp_parse_status st;
	size_t name_len;
};

#define HELO(nm, arg, st, nl) { nm, UNIT_BYTES(arg), st, nl }

static const struct helo_row helo_rows[] = {
	HELO("domain", "mx.example.org", OK, 14),
	HELO("ipv4 literal", "[192.0.2.1]", OK, 11),
	HELO("ipv6 literal", "[IPv6:2001:db8::1]", OK, 18),
	HELO("extra words", "x y z", OK, 1),
	HELO("tab separates", "x\ty", OK, 1),
	HELO("8bit", "\xc3\xa9.example", OK, 10),
	HELO("bare word", "localhost", OK, 9),
	HELO("punct", "a!b", OK, 3),
	HELO("empty", "", SYNTAX, 0),
	HELO("leading space", " x", SYNTAX, 0),
	HELO("open literal", "[1.2.3.4", SYNTAX, 0),
	HELO("empty literal", "[]", SYNTAX, 0),
	HELO("literal junk", "[1.2.3.4]x", SYNTAX, 0),
	HELO("nested literal", "[[1]]", SYNTAX, 0),
	HELO("NUL", "x\0y", BAD_CHAR, 0),
	HELO("NUL in ignored word", "x y\0", BAD_CHAR, 0),
	HELO("CR", "x\r", BAD_CHAR, 0),
};

static void test_helo_table(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(helo_rows); i++) {
		const struct helo_row *r = &helo_rows[i];
		size_t nl = 99;
		enum smtp_parse_status st = smtp_helo_parse(r->arg, r->len,
							    &nl);
		if (st != r->st || nl != r->name_len)
			fail_msg("%s: status %d len %zu", r->name, st, nl);
	}
}

static void test_helo_length(void **unused)
{
	char name[SMTP_DOMAIN_MAX + 2];
	size_t nl;

	memset(name, 'h', sizeof name);
	assert_int_equal(smtp_helo_parse(name, SMTP_DOMAIN_MAX, &nl), OK);
	assert_int_equal(nl, SMTP_DOMAIN_MAX);
	assert_int_equal(smtp_helo_parse(name, SMTP_DOMAIN_MAX + 1, &nl),
			 TOO_LONG);
}

/* ---- xtext ---- */

struct xtext_row {
	const char *name;
	const char *plain;
	size_t plain_len;
	const char *xtext;
};

#define XT(nm, plain, xt) { nm, UNIT_BYTES(plain), xt }

static const struct xtext_row xtext_rows[] = {
	XT("empty", "", ""),
	XT("plain", "mx.example", "mx.example"),
	XT("plus", "a+b", "a+2Bb"),
	XT("equals", "a=b", "a+3Db"),
	XT("space", "a b", "a+20b"),
	XT("nul", "\0", "+00"),
	XT("crlf", "\r\n", "+0D+0A"),
	XT("del and 8bit", "\x7f\xff\xc3\xa9", "+7F+FF+C3+A9"),
	XT("edges", "!~", "!~"),
};

static void test_xtext_table(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(xtext_rows); i++) {
		const struct xtext_row *r = &xtext_rows[i];
		char enc[64], dec[64];
		size_t elen = strlen(r->xtext);

		assert_int_equal(smtp_xtext_encode(r->plain, r->plain_len, enc,
						   sizeof enc), elen);
		assert_string_equal(enc, r->xtext);
		assert_int_equal(smtp_xtext_decode(r->xtext, elen, dec,
						   sizeof dec), r->plain_len);
		assert_memory_equal(dec, r->plain, r->plain_len);
		assert_int_equal(dec[r->plain_len], '\0');
		/* exactly enough room, then one byte short */
		assert_int_equal(smtp_xtext_encode(r->plain, r->plain_len, enc,
						   elen + 1), elen);
		assert_int_equal(smtp_xtext_decode(r->xtext, elen, dec,
						   r->plain_len + 1),
				 r->plain_len);
		if (elen > 0) {
			assert_int_equal(smtp_xtext_encode(r->plain,
							   r->plain_len, enc,
							   elen),
					 (size_t)-1);
			assert_int_equal(enc[0], '\0');
			assert_int_equal(smtp_xtext_decode(r->xtext, elen, dec,
							   r->plain_len),
					 (size_t)-1);
		}
	}
	assert_int_equal(smtp_xtext_encode("a", 1, NULL, 0), (size_t)-1);
	assert_int_equal(smtp_xtext_decode("a", 1, NULL, 0), (size_t)-1);
}

struct xtext_bad_row {
	const char *name;
	const char *in;
	size_t len;
};

#define XB(nm, in) { nm, UNIT_BYTES(in) }

static const struct xtext_bad_row xtext_bad_rows[] = {
	XB("bare plus", "a+"),
	XB("short hex", "a+4"),
	XB("lower hex", "+2b"),
	XB("non hex", "+G0"),
	XB("bare equals", "a=b"),
	XB("space", "a b"),
	XB("nul", "a\0"),
	XB("8bit", "\xc3\xa9"),
	XB("del", "\x7f"),
	XB("plus plus", "++2B"),
};

static void test_xtext_bad(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(xtext_bad_rows); i++) {
		const struct xtext_bad_row *r = &xtext_bad_rows[i];
		char dec[32];
		if (smtp_xtext_decode(r->in, r->len, dec, sizeof dec) !=
		    (size_t)-1)
			fail_msg("%s: accepted", r->name);
		assert_int_equal(dec[0], '\0');
	}
	/* needless but valid escape */
	char dec[8];
	assert_int_equal(smtp_xtext_decode("+41", 3, dec, sizeof dec), 1);
	assert_string_equal(dec, "A");
}

/* Every byte value round-trips, and the encoding stays in '!'..'~'. */
static void test_xtext_all_bytes(void **unused)
{
	char plain[256], enc[3 * 256 + 1], dec[257];
	size_t n;

	for (int i = 0; i < 256; i++)
		plain[i] = (char)i;
	n = smtp_xtext_encode(plain, 256, enc, sizeof enc);
	assert_true(n != (size_t)-1);
	for (size_t i = 0; i < n; i++)
		assert_true(enc[i] >= '!' && enc[i] <= '~');
	assert_int_equal(smtp_xtext_decode(enc, n, dec, sizeof dec), 256);
	assert_memory_equal(dec, plain, 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmd_table),
		cmocka_unit_test(test_cmd_length),
		cmocka_unit_test(test_verb_names),
		cmocka_unit_test(test_mail_table),
		cmocka_unit_test(test_mail_lengths),
		cmocka_unit_test(test_mail_params_max),
		cmocka_unit_test(test_rcpt_table),
		cmocka_unit_test(test_helo_table),
		cmocka_unit_test(test_helo_length),
		cmocka_unit_test(test_xtext_table),
		cmocka_unit_test(test_xtext_bad),
		cmocka_unit_test(test_xtext_all_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
