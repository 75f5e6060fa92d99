/*
 * test_smtp_reply: backend replies. Each row is a script of lines joined
 * by '\n' (the parser itself never sees an LF); every line but the last
 * must give MORE, the last gives the row's status.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdlib.h>

#include "smtp_reply.h"

#define MORE SMTP_REPLY_MORE
#define DONE SMTP_REPLY_DONE
#define INVALID SMTP_REPLY_INVALID

enum {
	F_PIPE = 1,
	F_XCLIENT = 2,
	F_TLS = 4,
	F_8BIT = 8,
	F_UTF8 = 16,
	F_SIZE = 32,
};

struct reply_row {
	const char *name;
	const char *script;
	enum smtp_reply_status st;
	int code;             /* checked when st != INVALID */
	const char *enhanced;
	const char *text;
	unsigned flags;
	long long size_max;
	const char *xclient;
};

#define EHLO_POSTFIX                                                           \
	"250-mx.example.org\n250-PIPELINING\n250-SIZE 10240000\n"              \
	"250-VRFY\n250-ETRN\n250-STARTTLS\n"                                   \
	"250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR "   \
	"DESTPORT\n250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-DSN\n"           \
	"250-SMTPUTF8\n250 CHUNKING"

static const struct reply_row reply_rows[] = {
	{ "greeting", "220 mx.example.org ESMTP Postfix", DONE, 220, "",
	  "mx.example.org ESMTP Postfix", 0, 0, "" },
	{ "enhanced", "250 2.1.5 Ok", DONE, 250, "2.1.5", "Ok", 0, 0, "" },
	{ "enhanced long parts", "550 5.123.456 No", DONE, 550, "5.123.456",
	  "No", 0, 0, "" },
	{ "enhanced only", "250 2.0.0", DONE, 250, "2.0.0", "", 0, 0, "" },
	{ "enhanced class mismatch", "250 5.1.1 x", DONE, 250, "",
	  "5.1.1 x", 0, 0, "" },
	{ "enhanced four digits", "550 5.1234.1 x", DONE, 550, "",
	  "5.1234.1 x", 0, 0, "" },
	{ "enhanced glued", "550 5.1.1x", DONE, 550, "", "5.1.1x", 0, 0, "" },
	{ "enhanced two parts", "550 5.1 x", DONE, 550, "", "5.1 x", 0, 0,
	  "" },
	{ "354 no class 3", "354 3.0.0 go", DONE, 354, "", "3.0.0 go", 0, 0,
	  "" },
	{ "code only", "250", DONE, 250, "", "", 0, 0, "" },
	{ "code space", "250 ", DONE, 250, "", "", 0, 0, "" },
	{ "multi-line", "550-5.1.1 first\n550-5.1.1 second\n550 5.1.1 third",
	  DONE, 550, "5.1.1", "first\nsecond\nthird", 0, 0, "" },
	{ "multi-line empty cont", "451-\n451 4.3.0 x", DONE, 451, "",
	  "\nx", 0, 0, "" },
	{ "tab in text", "250 a\tb", DONE, 250, "", "a\tb", 0, 0, "" },
	{ "8bit text", "250 \xc3\xa9", DONE, 250, "", "\xc3\xa9", 0, 0, "" },
	/* EHLO */
	{ "ehlo postfix", EHLO_POSTFIX, DONE, 250, "", NULL,
	  F_PIPE | F_XCLIENT | F_TLS | F_8BIT | F_UTF8 | F_SIZE, 10240000,
	  "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT" },
	{ "ehlo lower case", "250-x\n250-pipelining\n250-starttls\n"
	  "250-8bitmime\n250-smtputf8\n250-size\n250 xclient addr helo",
	  DONE, 250, "", NULL,
	  F_PIPE | F_XCLIENT | F_TLS | F_8BIT | F_UTF8 | F_SIZE, 0,
	  "addr helo" },
	{ "greeting is not a keyword", "250-PIPELINING\n250 SIZE 5", DONE, 250,
	  "", "PIPELINING\nSIZE 5", F_SIZE, 5, "" },
	{ "single line 250 no keywords", "250 PIPELINING", DONE, 250, "",
	  "PIPELINING", 0, 0, "" },
	{ "keyword prefix only", "250-x\n250-PIPELININGX\n250-STARTTLSX\n"
	  "250 SIZEX 10", DONE, 250, "", NULL, 0, 0, "" },
	{ "keyword with junk param", "250-x\n250 PIPELINING now", DONE, 250,
	  "", NULL, F_PIPE, 0, "" },
	{ "size zero", "250-x\n250 SIZE 0", DONE, 250, "", NULL, F_SIZE, 0,
	  "" },
	{ "size junk", "250-x\n250 SIZE 10k", DONE, 250, "", NULL, F_SIZE, 0,
	  "" },
	{ "size huge", "250-x\n250 SIZE 99999999999999999999", DONE, 250, "",
	  NULL, F_SIZE, 0, "" },
	{ "xclient no attrs", "250-x\n250 XCLIENT", DONE, 250, "", NULL,
	  F_XCLIENT, 0, "" },
	{ "xclient extra spaces", "250-x\n250 XCLIENT  NAME   ADDR ", DONE,
	  250, "", NULL, F_XCLIENT, 0, "NAME ADDR" },
	{ "keywords not on 220", "220-x\n220 PIPELINING", DONE, 220, "",
	  NULL, 0, 0, "" },
	{ "more", "250-x", MORE, 250, "", "x", 0, 0, "" },
	/* INVALID */
	{ "empty", "", INVALID, 0, "", NULL, 0, 0, "" },
	{ "short", "25", INVALID, 0, "", NULL, 0, 0, "" },
	{ "bad separator", "250_ok", INVALID, 0, "", NULL, 0, 0, "" },
	{ "tab separator", "250\tok", INVALID, 0, "", NULL, 0, 0, "" },
	{ "code 199", "199 x", INVALID, 0, "", NULL, 0, 0, "" },
	{ "code 600", "600 x", INVALID, 0, "", NULL, 0, 0, "" },
	{ "code 260", "260 x", INVALID, 0, "", NULL, 0, 0, "" },
	{ "letters", "2a0 x", INVALID, 0, "", NULL, 0, 0, "" },
	{ "leading space", " 250 x", INVALID, 0, "", NULL, 0, 0, "" },
	{ "mixed codes", "250-a\n251 b", INVALID, 0, "", NULL, 0, 0, "" },
	{ "mixed codes cont", "250-a\n550-b", INVALID, 0, "", NULL, 0, 0, "" },
	{ "line after done", "250 a\n250 b", INVALID, 0, "", NULL, 0, 0, "" },
	{ "bare CR", "250 a\rb", INVALID, 0, "", NULL, 0, 0, "" },
	{ "ESC", "250 \x1b[31m", INVALID, 0, "", NULL, 0, 0, "" },
	{ "DEL", "250 \x7f", INVALID, 0, "", NULL, 0, 0, "" },
};

/* Split the script at '\n' and feed it; returns the last status. */
static enum smtp_reply_status run_script(struct smtp_reply *r,
					 const char *script, const char *name)
{
	const char *p = script;
	enum smtp_reply_status st;

	smtp_reply_init(r);
	for (;;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		st = smtp_reply_line(r, p, n);
		if (!nl)
			return st;
		if (st != MORE) {
			/* Only the last line may end it, except in rows that
			 * test exactly that. */
			p = nl + 1;
			st = smtp_reply_line(r, p, strlen(p));
			if (strchr(p, '\n') != NULL)
				fail_msg("%s: ended early", name);
			return st;
		}
		p = nl + 1;
	}
}

static void test_reply_table(void **unused)
{
	for (size_t i = 0; i < UNIT_NELEM(reply_rows); i++) {
		const struct reply_row *w = &reply_rows[i];
		struct smtp_reply *r = malloc(sizeof *r);
		enum smtp_reply_status st;
		unsigned flags;

		assert_non_null(r);
		st = run_script(r, w->script, w->name);
		if (st != w->st)
			fail_msg("%s: status %d want %d", w->name, st, w->st);
		if (st == INVALID) {
			assert_false(r->complete);
			/* sticky until init */
			assert_int_equal(smtp_reply_line(r, "250 ok", 6),
					 INVALID);
			free(r);
			continue;
		}
		if (r->code != w->code)
			fail_msg("%s: code %d", w->name, r->code);
		assert_int_equal(r->complete, st == DONE);
		assert_string_equal(r->enhanced, w->enhanced);
		if (w->text) {
			assert_string_equal(r->text, w->text);
			assert_int_equal(r->text_len, strlen(w->text));
		}
		flags = (r->has_pipelining ? F_PIPE : 0) |
			(r->has_xclient ? F_XCLIENT : 0) |
			(r->has_starttls ? F_TLS : 0) |
			(r->has_8bitmime ? F_8BIT : 0) |
			(r->has_smtputf8 ? F_UTF8 : 0) |
			(r->has_size ? F_SIZE : 0);
		if (flags != w->flags)
			fail_msg("%s: flags %#x want %#x", w->name, flags,
				 w->flags);
		assert_int_equal(r->size_max, w->size_max);
		assert_string_equal(r->xclient_attrs, w->xclient);
		free(r);
	}
}

static void test_reply_line_limits(void **unused)
{
	static struct smtp_reply r;
	char line[SMTP_REPLY_LINE_MAX + 8];

	memset(line, 'x', sizeof line);
	memcpy(line, "250 ", 4);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, line, SMTP_REPLY_LINE_MAX - 2),
			 DONE);
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, line, SMTP_REPLY_LINE_MAX - 1),
			 INVALID);
	/* NUL is a control byte */
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, "250 a\0b", 7), INVALID);
	/* lines: 64 fit, 65 do not */
	smtp_reply_init(&r);
	for (int i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++)
		assert_int_equal(smtp_reply_line(&r, "250-x", 5), MORE);
	assert_int_equal(smtp_reply_line(&r, "250 x", 5), DONE);
	assert_int_equal(r.lines, SMTP_REPLY_LINES_MAX);
	smtp_reply_init(&r);
	for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		assert_int_equal(smtp_reply_line(&r, "250-x", 5), MORE);
	assert_int_equal(smtp_reply_line(&r, "250 x", 5), INVALID);
}

/* Text is cut at SMTP_REPLY_TEXT_MAX - 1 and stays NUL-terminated. */
static void test_reply_text_cap(void **unused)
{
	static struct smtp_reply r;
	char line[SMTP_REPLY_LINE_MAX - 2];

	memset(line, 'y', sizeof line);
	memcpy(line, "550-", 4);
	smtp_reply_init(&r);
	for (int i = 0; i < 10; i++)
		assert_int_equal(smtp_reply_line(&r, line, sizeof line), MORE);
	line[3] = ' ';
	assert_int_equal(smtp_reply_line(&r, line, sizeof line), DONE);
	assert_int_equal(r.text_len, SMTP_REPLY_TEXT_MAX - 1);
	assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
	assert_int_equal(r.lines, 11);
}

/* Attributes that do not fit are dropped whole, never cut. */
static void test_reply_xclient_cap(void **unused)
{
	static struct smtp_reply r;
	char line[SMTP_REPLY_LINE_MAX - 2];
	size_t n = (size_t)snprintf(line, sizeof line, "250 XCLIENT");

	while (n + 11 < sizeof line)
		n += (size_t)snprintf(line + n, sizeof line - n, " ATTRIBUTE");
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, "250-x", 5), MORE);
	assert_int_equal(smtp_reply_line(&r, line, n), DONE);
	assert_true(r.has_xclient);
	size_t len = strlen(r.xclient_attrs);
	assert_true(len < sizeof r.xclient_attrs);
	assert_int_equal((len + 1) % 10, 0); /* whole " ATTRIBUTE" words */
	assert_memory_equal(r.xclient_attrs + len - 9, "ATTRIBUTE", 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_table),
		cmocka_unit_test(test_reply_line_limits),
		cmocka_unit_test(test_reply_text_cap),
		cmocka_unit_test(test_reply_xclient_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
