/*
 * Unit tests for log: log_escape (table of inputs, capacities and expected
 * text) and the shape of a stderr line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct escape_case {
	const char *name;
	const char *in;
	size_t len;
	size_t cap;
	const char *want;
};

#define IN(s) s, sizeof(s) - 1

static const struct escape_case escape_cases[] = {
	{ "plain", IN("MAIL FROM:<a@b>"), 64, "MAIL FROM:<a@b>" },
	{ "empty", IN(""), 8, "" },
	{ "quote and backslash", IN("a\"b\\c"), 64, "a\\x22b\\x5cc" },
	{ "crlf", IN("\r\n"), 64, "\\x0d\\x0a" },
	{ "nul", IN("\0x"), 64, "\\x00x" },
	{ "high bytes", IN("\xff\x80"), 64, "\\xff\\x80" },
	{ "del", IN("\x7f"), 64, "\\x7f" },
	{ "tab", IN("\t"), 64, "\\x09" },
	{ "space kept", IN("a b"), 64, "a b" },
	{ "fits exactly", IN("abcdefg"), 8, "abcdefg" },
	{ "one over", IN("abcdefgh"), 8, "abcd..." },
	{ "escape fits exactly", IN("abc\x01"), 8, "abc\\x01" },
	{ "escape pushes over", IN("abcd\x01"), 8, "abcd..." },
	{ "escape never split", IN("ab\x01" "cd"), 8, "ab..." },
	{ "long", IN("0123456789012345678901234567890123456789"), 16,
	  "012345678901..." },
};

static void test_escape_table(void **state)
{
	char buf[128];

	for (size_t i = 0; i < sizeof escape_cases / sizeof escape_cases[0]; i++) {
		const struct escape_case *c = &escape_cases[i];
		memset(buf, 'Z', sizeof buf);
		char *r = log_escape(buf, c->cap, c->in, c->len);
		assert_ptr_equal(r, buf);
		if (strcmp(buf, c->want) != 0) {
			print_error("case '%s': got '%s', want '%s'\n", c->name,
				    buf, c->want);
			fail();
		}
		assert_true(strlen(buf) < c->cap);
		/* Nothing written past the capacity. */
		assert_int_equal(buf[c->cap], 'Z');
	}
}

/* Every byte value, any capacity: NUL-terminated within cap, printable
 * only, and a prefix of the full escape (plus "..." when cut). */
static void test_escape_exhaustive(void **state)
{
	unsigned char in[256];
	char full[1100], buf[1100];

	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)i;
	log_escape(full, sizeof full, in, sizeof in);
	assert_int_equal(strlen(full), 95 - 2 + (256 - 95 + 2) * 4);
	for (size_t cap = 8; cap < sizeof buf; cap += 7) {
		log_escape(buf, cap, in, sizeof in);
		size_t n = strlen(buf);
		assert_true(n < cap);
		for (size_t k = 0; k < n; k++)
			assert_true(buf[k] >= 0x20 && buf[k] < 0x7f);
		if (strcmp(buf, full) != 0) {
			assert_true(n >= 3);
			assert_string_equal(buf + n - 3, "...");
			assert_memory_equal(buf, full, n - 3);
		}
	}
}

static void test_stderr_line(void **state)
{
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fileno(tmp), STDERR_FILENO), STDERR_FILENO);

	log_init("sluice-test", 1, LOG_LVL_INFO);
	log_info("abc=1 def=\"x\"");
	log_warn("two\nlines");
	log_err("bad %d", 42);
	log_debug("not shown");

	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);

	char text[4096];
	rewind(tmp);
	size_t n = fread(text, 1, sizeof text - 1, tmp);
	text[n] = '\0';
	fclose(tmp);

	regex_t re;
	assert_int_equal(regcomp(&re,
		"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
		"sluice-test\\[[0-9]+\\]: abc=1 def=\"x\"\n"
		"[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: warning: two\\?lines\n"
		"[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: error: bad 42\n$",
		REG_EXTENDED), 0);
	int rc = regexec(&re, text, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		print_error("got:\n%s", text);
	assert_int_equal(rc, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_table),
		cmocka_unit_test(test_escape_exhaustive),
		cmocka_unit_test(test_stderr_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
