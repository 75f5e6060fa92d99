/*
 * Unit tests for advice: the PBL score of dnsbl_sites values, and the
 * "sluice -n" warnings for a reject_threshold that a PBL-only listing (or
 * one content refusal) could reach; the documented production
 * configuration gives none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "advice.h"
#include "config.h"

/* docs/classification.md, "A production configuration". */
#define ZEN_PRODUCTION                                                         \
	"zen.spamhaus.org=127.0.0.[2;3;9]*8 zen.spamhaus.org=127.0.0.[4..7]*4 "   \
	"zen.spamhaus.org=127.0.0.[10;11]*2 list.dnswl.org=127.0.[0..255].0*-2 " \
	"list.dnswl.org=127.0.[0..255].1*-4 list.dnswl.org=127.0.[0..255].[2;3]*-8"

static void test_pbl_score(void **state)
{
	assert_int_equal(advice_pbl_score(""), 0);
	assert_int_equal(advice_pbl_score("zen.spamhaus.org*3"), 3);
	assert_int_equal(advice_pbl_score("ZEN.Spamhaus.ORG=127.0.0.[2..11]*5"), 5);
	assert_int_equal(advice_pbl_score("pbl.spamhaus.org*1 bl.example*9"), 1);
	assert_int_equal(advice_pbl_score("zen.spamhaus.org=127.0.0.[2..7]*9"), 0);
	assert_int_equal(advice_pbl_score("key.zen.dq.spamhaus.net=127.0.0.11*2"), 2);
	assert_int_equal(advice_pbl_score(ZEN_PRODUCTION), 2);
	assert_int_equal(advice_pbl_score("zen.spamhaus.org=bad"), -1);
}

static int warnings(const char *sites, unsigned reject, char *buf, size_t cap)
{
	struct config *cfg = calloc(1, sizeof *cfg);
	assert_non_null(cfg);
	config_defaults(cfg);
	snprintf(cfg->dnsbl_sites, sizeof cfg->dnsbl_sites, "%s", sites);
	cfg->reject_threshold = reject;
	FILE *f = fmemopen(buf, cap, "w");
	assert_non_null(f);
	int n = advice_print(cfg, f);
	fclose(f);
	free(cfg);
	return n;
}

static void test_warnings(void **state)
{
	char buf[2048];
	assert_int_equal(warnings("zen.spamhaus.org*3", 0, buf, sizeof buf), 0);
	assert_int_equal(warnings("zen.spamhaus.org*3", 5, buf, sizeof buf), 1);
	assert_non_null(strstr(buf, "PBL"));
	assert_int_equal(warnings("zen.spamhaus.org*3", 6, buf, sizeof buf), 0);
	assert_int_equal(warnings(ZEN_PRODUCTION, 8, buf, sizeof buf), 0);
	assert_int_equal(warnings(ZEN_PRODUCTION, 4, buf, sizeof buf), 1);
	assert_int_equal(warnings("", 3, buf, sizeof buf), 1); /* weight_content 3 */
	assert_non_null(strstr(buf, "weight_content"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pbl_score),
		cmocka_unit_test(test_warnings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
