/*
 * test_replies: every catalogue entry formats as one well-formed reply line
 * (code, enhanced code of the same class, no stray CR/LF), and the
 * formatted catalogue matches the golden file tests/golden/replies.txt.
 */
#include <stdlib.h>

#include "replies.h"
#include "unit.h"

#define GOLDEN "tests/golden/replies.txt"

static size_t format_all(char *buf, size_t cap)
{
	size_t len = 0;
	for (int id = 0; id < REPLY_COUNT; id++) {
		size_t n = reply_format((enum reply_id)id, "mx.example", "192.0.2.1", buf + len, cap - len);
		assert_true(n > 0);
		len += n;
	}
	return len;
}

static void test_well_formed(void **state)
{
	for (int id = 0; id < REPLY_COUNT; id++) {
		char line[600];
		size_t n = reply_format((enum reply_id)id, "mx.example", "192.0.2.1", line, sizeof line);
		assert_true(n > 6);
		assert_memory_equal(line + n - 2, "\r\n", 2);
		assert_null(memchr(line, '\n', n - 1));
		assert_null(memchr(line, '\r', n - 2));
		int code = reply_code((enum reply_id)id);
		assert_true(code >= 200 && code <= 599);
		assert_int_equal(atoi(line), code);
		/* An enhanced code, when present, is of the reply's class. */
		if (line[4] >= '2' && line[4] <= '5' && line[5] == '.')
			assert_int_equal(line[4] - '0', code / 100 == 3 ? 2 : code / 100);
	}
	char tiny[8];
	assert_int_equal(reply_format(REPLY_GREETING, "mx.example", NULL, tiny, sizeof tiny), 0);
}

static void test_golden(void **state)
{
	static char got[65536];
	size_t len = format_all(got, sizeof got);
	if (getenv("UPDATE_GOLDEN")) {
		FILE *f = fopen(GOLDEN, "wb");
		assert_non_null(f);
		fwrite(got, 1, len, f);
		fclose(f);
	}
	FILE *f = fopen(GOLDEN, "rb");
	if (!f)
		skip();
	static char want[65536];
	size_t wlen = fread(want, 1, sizeof want, f);
	fclose(f);
	if (wlen != len || memcmp(want, got, len) != 0)
		fail_msg("reply catalogue differs from %s (UPDATE_GOLDEN=1 after review)", GOLDEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_well_formed),
		cmocka_unit_test(test_golden),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
