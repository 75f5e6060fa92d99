/*
 * test_backend_warn: the classification of XCLIENT refusals, on the reply
 * texts a real Postfix 3.7 writes (the IPv6 one seen in
 * tests/scenario/test_backend_warn.py with inet_protocols = ipv4; the
 * authorisation one checked there against a real Postfix too), the
 * attribute word match, and the one-warning-a-minute rule with its
 * counter.
 */
#include "unit.h"

#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend_warn.h"
#include "log.h"
#include "metrics.h"

struct xclient_row {
	const char *name;
	int code;
	const char *text; /* as smtp_reply keeps it: code and enhanced code removed */
	bool ipv6;
	enum backend_problem want;
};

static const struct xclient_row xclient_rows[] = {
	{ "postfix ipv4-only, ipv6 client", 501, "Bad ADDR syntax: IPV6:::1", true,
	  BACKEND_PROBLEM_XCLIENT_IPV6 },
	{ "postfix ipv4-only, documentation address", 501,
	  "Bad ADDR syntax: IPV6:2001:db8::1", true, BACKEND_PROBLEM_XCLIENT_IPV6 },
	{ "bad ADDR for an ipv4 client is not the ipv6 problem", 501,
	  "Bad ADDR syntax: 192.0.2.300", false, BACKEND_PROBLEM_NONE },
	{ "postfix not authorised", 550, "Error: insufficient authorization", false,
	  BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED },
	{ "not authorised, ipv6 client", 550, "Error: insufficient authorization", true,
	  BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED },
	{ "american spelling only", 550, "Error: insufficient authorisation", false,
	  BACKEND_PROBLEM_NONE },
	{ "accepted", 220, "pf.test ESMTP Postfix", true, BACKEND_PROBLEM_NONE },
	{ "shutting down", 421, "4.3.0 pf.test Error: too many errors", true,
	  BACKEND_PROBLEM_NONE },
	{ "bad sequence", 503, "Error: MAIL transaction in progress", true,
	  BACKEND_PROBLEM_NONE },
	{ "NULL text", 550, NULL, false, BACKEND_PROBLEM_NONE },
};

static void test_classify(void **state)
{
	for (size_t i = 0; i < UNIT_NELEM(xclient_rows); i++) {
		const struct xclient_row *r = &xclient_rows[i];
		enum backend_problem got =
			backend_warn_classify_xclient(r->code, r->text, r->ipv6);
		if (got != r->want)
			fail_msg("%s: got %s, want %s", r->name, backend_warn_name(got),
				 backend_warn_name(r->want));
	}
}

static void test_advice_names_the_setting(void **state)
{
	assert_non_null(strstr(backend_warn_advice(BACKEND_PROBLEM_XCLIENT_IPV6),
			       "inet_protocols"));
	assert_non_null(strstr(backend_warn_advice(BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED),
			       "smtpd_authorized_xclient_hosts"));
	assert_non_null(strstr(backend_warn_advice(BACKEND_PROBLEM_XCLIENT_NOT_OFFERED),
			       "smtpd_authorized_xclient_hosts"));
	assert_string_equal(backend_warn_advice(BACKEND_PROBLEM_NONE), "");
}

static void test_offers(void **state)
{
	const char *pf = "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT";
	assert_true(backend_warn_offers(pf, "ADDR"));
	assert_true(backend_warn_offers(pf, "helo"));
	assert_true(backend_warn_offers(pf, "DESTPORT"));
	assert_false(backend_warn_offers("NAME DESTADDR", "ADDR"));
	assert_false(backend_warn_offers("ADDRX", "ADDR"));
	assert_false(backend_warn_offers("", "ADDR"));
	assert_true(backend_warn_offers("  ADDR  ", "ADDR"));
}

/* Three refusals in a row: three counts, one warning line. */
static void test_one_warning_a_minute(void **state)
{
	int saved;
	FILE *tmp = unit_stderr_capture(&saved);
	log_init("sluice-test", 1, LOG_LVL_INFO);

	long long before = metrics_get(METRIC_BACKEND_XCLIENT_IPV6);
	for (int i = 0; i < 3; i++)
		backend_warn_xclient_refused(501, "5.5.4", "Bad ADDR syntax: IPV6:::1", true);
	backend_warn_xclient_refused(503, "5.5.1", "Error: MAIL transaction in progress",
				     true);
	log_flush();
	char text[8192];
	unit_stderr_release(tmp, saved, text, sizeof text);
	assert_int_equal(metrics_get(METRIC_BACKEND_XCLIENT_IPV6) - before, 3);

	regex_t re;
	assert_int_equal(regcomp(&re,
		"^[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: warning: backend: MISCONFIGURED "
		"problem=xclient_ipv6 answer=\"501 5\\.5\\.4 Bad ADDR syntax: IPV6:::1\" "
		"repeats=0: [^\n]*inet_protocols = all[^\n]*\n$", REG_EXTENDED), 0);
	int rc = regexec(&re, text, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		fail_msg("log:\n%s", text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_advice_names_the_setting),
		cmocka_unit_test(test_offers),
		cmocka_unit_test(test_one_warning_a_minute),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
