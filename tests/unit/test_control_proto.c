/*
 * test_control_proto: the control socket's request parser and the
 * address/network parser, as table rows {name, input, want}.
 */
#include "unit.h"

#include <stdbool.h>

#include "control_proto.h"

struct req_row {
	const char *name;
	const char *line;
	enum control_parse_status want;
	enum control_verb verb;
	bool json, shaped;
	const char *net;   /* canonical, or NULL */
	long long ttl_ms;
};

static const struct req_row req_rows[] = {
	{"status", "status", CONTROL_PARSE_OK, CONTROL_STATUS, false, false, NULL, 0},
	{"status json", "status --json", CONTROL_PARSE_OK, CONTROL_STATUS, true, false, NULL, 0},
	{"flag first", "--json status", CONTROL_PARSE_OK, CONTROL_STATUS, true, false, NULL, 0},
	{"crlf", "list\r", CONTROL_PARSE_OK, CONTROL_LIST, false, false, NULL, 0},
	{"extra spaces", "  reload  ", CONTROL_PARSE_OK, CONTROL_RELOAD, false, false, NULL, 0},
	{"sessions shaped", "sessions --shaped", CONTROL_PARSE_OK, CONTROL_SESSIONS, false, true, NULL, 0},
	{"allow addr", "allow 192.0.2.7", CONTROL_PARSE_OK, CONTROL_ALLOW, false, false, "192.0.2.7/32", 0},
	{"allow cidr ttl", "allow 192.0.2.0/24 2h", CONTROL_PARSE_OK, CONTROL_ALLOW, false, false, "192.0.2.0/24", 7200000},
	{"deny v6", "deny 2001:db8::/32 --json", CONTROL_PARSE_OK, CONTROL_DENY, true, false, "2001:db8::/32", 0},
	{"deny seconds", "deny 2001:db8::1 60", CONTROL_PARSE_OK, CONTROL_DENY, false, false, "2001:db8::1/128", 60000},
	{"mapped is v4", "forget ::ffff:192.0.2.9", CONTROL_PARSE_OK, CONTROL_FORGET, false, false, "192.0.2.9/32", 0},
	{"drain", "drain", CONTROL_PARSE_OK, CONTROL_DRAIN, false, false, NULL, 0},
	{"empty", "", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"blank", "   ", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"unknown verb", "explode", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"upper case verb", "STATUS", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"unknown option", "status --yaml", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"shaped elsewhere", "status --shaped", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"missing arg", "allow", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"extra arg", "status now", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"too many", "allow 192.0.2.1 1h more", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"host bits", "deny 192.0.2.7/24", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"prefix too big", "deny 192.0.2.0/33", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"v6 prefix too big", "deny 2001:db8::/129", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"empty prefix", "deny 192.0.2.0/", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"name not addr", "allow mx.example.com", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"bad ttl", "allow 192.0.2.1 soon", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"zero ttl", "allow 192.0.2.1 0", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"huge ttl", "allow 192.0.2.1 99999d", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"tab", "status\t--json", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"nul", "sta\0tus", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
	{"high byte", "status \xff", CONTROL_PARSE_INVALID, 0, false, false, NULL, 0},
};

static void test_req_rows(void **state)
{
	for (size_t i = 0; i < UNIT_NELEM(req_rows); i++) {
		const struct req_row *r = &req_rows[i];
		size_t len = strlen(r->line);
		if (!strcmp(r->name, "nul"))
			len = 7;
		struct control_req req;
		char err[128] = "";
		enum control_parse_status st = control_req_parse(r->line, len, &req, err, sizeof err);
		if (st != r->want)
			fail_msg("%s: status %d, want %d (%s)", r->name, st, r->want, err);
		if (st != CONTROL_PARSE_OK) {
			if (!err[0])
				fail_msg("%s: no error text", r->name);
			continue;
		}
		assert_int_equal(req.verb, r->verb);
		assert_int_equal(req.json, r->json);
		assert_int_equal(req.shaped, r->shaped);
		assert_int_equal(req.has_net, r->net != NULL);
		if (r->net) {
			char buf[80];
			assert_string_equal(control_net_format(&req.net, buf, sizeof buf), r->net);
		}
		if (req.ttl_ms != r->ttl_ms)
			fail_msg("%s: ttl %lld, want %lld", r->name, req.ttl_ms, r->ttl_ms);
	}
}

static void test_too_long(void **state)
{
	char line[CONTROL_LINE_MAX + 8];
	memset(line, 'a', sizeof line);
	struct control_req req;
	char err[128];
	assert_int_equal(control_req_parse(line, CONTROL_LINE_MAX, &req, err, sizeof err),
			 CONTROL_PARSE_TOO_LONG);
	/* One under the limit is parsed (and refused as a word too long). */
	assert_int_equal(control_req_parse(line, CONTROL_LINE_MAX - 1, &req, err, sizeof err),
			 CONTROL_PARSE_INVALID);
}

static void test_status_line(void **state)
{
	const char *text;
	assert_true(control_status_ok("OK", &text));
	assert_false(control_status_ok("ERR reload: bad value", &text));
	assert_string_equal(text, "reload: bad value");
	assert_false(control_status_ok("garbage", &text));
}

static void test_verbs_named(void **state)
{
	for (int v = 0; v < CONTROL_VERB_COUNT; v++) {
		char line[80];
		struct control_req req;
		char err[128];
		/* every verb in the table parses by its name (with its args) */
		snprintf(line, sizeof line, "%s%s", control_verb_name(v),
			 v == CONTROL_ALLOW || v == CONTROL_DENY || v == CONTROL_FORGET
				 ? " 10.0.0.0/8" : "");
		assert_int_equal(control_req_parse(line, strlen(line), &req, err, sizeof err),
				 CONTROL_PARSE_OK);
		assert_int_equal(req.verb, v);
		assert_true(control_verb_help(v)[0]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_req_rows),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_status_line),
		cmocka_unit_test(test_verbs_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
