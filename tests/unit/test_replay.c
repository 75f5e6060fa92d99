/*
 * test_replay: the XCLIENT lines sluice sends for a client identity
 * (HOSTILE 26, 27, 30, 31): attribute order (NAME and ADDR last), xtext,
 * [UNAVAILABLE]/[TEMPUNAVAIL], IPv6 form, only offered attributes, and the
 * 512-octet command limit.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "replay.h"
#include "unit.h"

struct xclient_case {
	const char *name;
	const char *offered;
	int family;
	const char *addr;
	enum dns_name_status name_status;
	const char *ptr;
	const char *helo;
	bool esmtp;
	const char *want[3];
};

static const struct xclient_case cases[] = {
	{"postfix_full", "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", AF_INET,
	 "127.0.0.23", DNS_NAME_OK, "client23.example", "client23.example", true,
	 {"XCLIENT HELO=client23.example PROTO=ESMTP PORT=4242 NAME=client23.example ADDR=127.0.0.23"}},
	{"no_ptr", "NAME ADDR PORT PROTO HELO", AF_INET, "192.0.2.1",
	 DNS_NAME_UNAVAILABLE, NULL, "x", false,
	 {"XCLIENT HELO=x PROTO=SMTP PORT=4242 NAME=[UNAVAILABLE] ADDR=192.0.2.1"}},
	{"tempfail", "NAME ADDR", AF_INET, "192.0.2.1", DNS_NAME_TEMPFAIL, NULL,
	 "x", true, {"XCLIENT NAME=[TEMPUNAVAIL] ADDR=192.0.2.1"}},
	{"ipv6", "ADDR NAME", AF_INET6, "2001:db8::1", DNS_NAME_UNAVAILABLE, NULL,
	 "x", true, {"XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::1"}},
	{"helo_xtext", "ADDR HELO", AF_INET, "192.0.2.1", DNS_NAME_OK, "a.example",
	 "a=b+c ADDR=1.2.3.4", true,
	 {"XCLIENT HELO=a+3Db+2Bc+20ADDR+3D1.2.3.4 ADDR=192.0.2.1"}},
	{"no_helo_yet", "ADDR HELO", AF_INET, "192.0.2.1", DNS_NAME_OK, "a.example",
	 NULL, true, {"XCLIENT HELO=[UNAVAILABLE] ADDR=192.0.2.1"}},
	{"no_addr_offered", "NAME HELO", AF_INET, "192.0.2.1", DNS_NAME_OK,
	 "a.example", "x", true, {NULL}},
	{"nothing_offered", "", AF_INET, "192.0.2.1", DNS_NAME_OK, "a.example",
	 "x", true, {NULL}},
};

static void test_xclient_lines(void **state)
{
	for (size_t i = 0; i < UNIT_NELEM(cases); i++) {
		const struct xclient_case *c = &cases[i];
		struct client_identity id = {
			.session_id = 1, .port = 4242, .family = c->family,
			.name_status = c->name_status, .name = c->ptr,
			.helo = c->helo, .esmtp = c->esmtp,
		};
		snprintf(id.addr, sizeof id.addr, "%s", c->addr);
		char lines[4][512];
		size_t n = replay_xclient_lines(&id, c->offered, lines, 4);
		size_t want_n = 0;
		while (want_n < 3 && c->want[want_n])
			want_n++;
		if (n != want_n)
			fail_msg("%s: %zu lines, want %zu", c->name, n, want_n);
		for (size_t k = 0; k < n; k++)
			if (strcmp(lines[k], c->want[k]) != 0)
				fail_msg("%s: line %zu\n got  %s\n want %s", c->name, k,
					 lines[k], c->want[k]);
	}
}

/* A 255-octet HELO that xtext-encodes past 255 goes as [UNAVAILABLE], and
 * no line ever exceeds 510 octets; NAME and ADDR travel in the last one. */
static void test_hostile_027_xclient_split(void **state)
{
	char helo[256], name[254];
	memset(helo, 'h', 255);
	helo[255] = 0;
	memset(name, 'n', 253);
	name[253] = 0;
	for (int i = 63; i < 253; i += 64)
		name[i] = '.';
	struct client_identity id = {
		.session_id = 1, .port = 65535, .family = AF_INET,
		.name_status = DNS_NAME_OK, .name = name, .helo = helo, .esmtp = true,
	};
	snprintf(id.addr, sizeof id.addr, "203.0.113.250");
	char lines[4][512];
	size_t n = replay_xclient_lines(&id, "NAME ADDR PORT PROTO HELO", lines, 4);
	assert_true(n >= 1 && n <= 2);
	for (size_t k = 0; k < n; k++)
		assert_true(strlen(lines[k]) <= 510);
	assert_non_null(strstr(lines[n - 1], "ADDR=203.0.113.250"));
	assert_non_null(strstr(lines[n - 1], "NAME="));

	/* 300 bytes of '+' would encode to 900: too long for HELO=. */
	char bad[301];
	memset(bad, '+', 300);
	bad[300] = 0;
	id.helo = bad;
	n = replay_xclient_lines(&id, "ADDR HELO", lines, 4);
	assert_int_equal(n, 1);
	assert_string_equal(lines[0], "XCLIENT HELO=[UNAVAILABLE] ADDR=203.0.113.250");
}

/* The MAIL line a replay and a fast lane send: SIZE when known, BODY and
 * SMTPUTF8 only when the server offered them, nothing that would not fit
 * (an overlong line is refused, never cut). */
static void test_mail_line(void **state)
{
	struct backend_caps caps = {0};
	struct smtp_mail_params pm = {0};
	char line[600];
	size_t n = replay_mail_line(&caps, "a@example.net", &pm, 0, line, sizeof line);
	assert_string_equal(line, "MAIL FROM:<a@example.net>");
	assert_int_equal(n, strlen(line));
	pm.body = SMTP_BODY_8BITMIME;
	pm.smtputf8 = true;
	n = replay_mail_line(&caps, "", &pm, 4096, line, sizeof line);
	assert_string_equal(line, "MAIL FROM:<> SIZE=4096");
	caps.eightbitmime = caps.smtputf8 = true;
	n = replay_mail_line(&caps, "b@example.net", &pm, 12, line, sizeof line);
	assert_string_equal(line, "MAIL FROM:<b@example.net> SIZE=12 BODY=8BITMIME SMTPUTF8");
	assert_int_equal(n, strlen(line));
	assert_int_equal(replay_mail_line(&caps, "b@example.net", &pm, 12, line, 20), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mail_line),
		cmocka_unit_test(test_xclient_lines),
		cmocka_unit_test(test_hostile_027_xclient_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
