/*
 * test_proxy_proto: PROXY protocol v1 and v2 headers. Each row is fed
 * three ways — whole, one byte at a time, and followed by client bytes
 * ("EHLO x\r\n") — and must give the same result each time; on DONE the
 * header must use exactly its own bytes and leave the client's.
 */
#include "unit.h"

#include <stdlib.h>

#include "proxy_proto.h"

#define MORE PROXY_PROTO_MORE
#define DONE PROXY_PROTO_DONE
#define INVALID PROXY_PROTO_INVALID
#define TOO_LONG PROXY_PROTO_TOO_LONG

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"
/* v2 PROXY TCP4 192.0.2.7:40000 -> 198.51.100.1:25 */
#define V2_TCP4_BODY "\xc0\x00\x02\x07\xc6\x33\x64\x01\x9c\x40\x00\x19"
/* v2 PROXY TCP6 2001:db8::7:40000 -> 2001:db8::1:25 */
#define V2_TCP6_BODY                                                           \
	"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07"                           \
	"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x9c\x40\x00\x19"

struct pp_row {
	const char *name;
	const char *bytes;
	size_t len;
	enum proxy_proto_rc rc;
	enum proxy_proto_cmd cmd; /* checked on DONE */
	const char *addr;         /* checked on DONE with PROXY */
	unsigned port;
};

#define ROW(n, b, rc, cmd, a, port) { n, UNIT_BYTES(b), rc, cmd, a, port }

static const struct pp_row pp_rows[] = {
	/* v1 */
	ROW("v1 tcp4", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", DONE,
	    PROXY_CMD_PROXY, "192.0.2.7", 40000),
	ROW("v1 tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", DONE,
	    PROXY_CMD_PROXY, "2001:db8::7", 40000),
	ROW("v1 tcp6 v4-mapped", "PROXY TCP6 ::ffff:192.0.2.7 ::1 1 25\r\n",
	    DONE, PROXY_CMD_PROXY, "::ffff:192.0.2.7", 1),
	ROW("v1 port 0 and 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n",
	    DONE, PROXY_CMD_PROXY, "1.2.3.4", 0),
	ROW("v1 unknown", "PROXY UNKNOWN\r\n", DONE, PROXY_CMD_UNKNOWN, NULL, 0),
	ROW("v1 unknown with junk", "PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n",
	    DONE, PROXY_CMD_UNKNOWN, NULL, 0),
	ROW("v1 tcp6 longest",
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    DONE, PROXY_CMD_PROXY, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    65535),
	ROW("v1 longest (107)",
	    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    DONE, PROXY_CMD_UNKNOWN, NULL, 0),
	ROW("v1 108 bytes",
	    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n",
	    TOO_LONG, 0, NULL, 0),
	ROW("v1 endless", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3333333333333333333333"
	    "33333333333333333333333333333333333333333333333333333333333333333333"
	    "33333333", TOO_LONG, 0, NULL, 0),
	ROW("v1 partial", "PROXY TCP4 1.2.3.4 5.6", MORE, 0, NULL, 0),
	ROW("v1 partial prefix", "PRO", MORE, 0, NULL, 0),
	ROW("v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", INVALID, 0, NULL, 0),
	ROW("v1 CR inside", "PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 NUL", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", INVALID, 0, NULL, 0),
	ROW("v1 high byte", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 no space", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", INVALID, 0, NULL,
	    0),
	ROW("v1 tcp5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", INVALID, 0, NULL, 0),
	ROW("v1 tcp4 with v6", "PROXY TCP4 ::1 ::1 1 2\r\n", INVALID, 0, NULL, 0),
	ROW("v1 tcp6 with v4", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 short v4", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", INVALID, 0, NULL, 0),
	ROW("v1 octal-ish v4", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", INVALID,
	    0, NULL, 0),
	ROW("v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n",
	    INVALID, 0, NULL, 0),
	ROW("v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +25 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 three fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", INVALID, 0,
	    NULL, 0),
	ROW("v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", INVALID,
	    0, NULL, 0),
	ROW("v1 empty", "PROXY \r\n", INVALID, 0, NULL, 0),
	ROW("v1 unknownx", "PROXY UNKNOWNX\r\n", INVALID, 0, NULL, 0),
	/* not a header at all */
	ROW("smtp", "EHLO x\r\n", INVALID, 0, NULL, 0),
	ROW("http", "GET / HTTP/1.0\r\n", INVALID, 0, NULL, 0),
	ROW("tls hello", "\x16\x03\x01\x02\x00", INVALID, 0, NULL, 0),
	/* v2 */
	ROW("v2 tcp4", V2SIG "\x21\x11\x00\x0c" V2_TCP4_BODY, DONE,
	    PROXY_CMD_PROXY, "192.0.2.7", 40000),
	ROW("v2 tcp6", V2SIG "\x21\x21\x00\x24" V2_TCP6_BODY, DONE,
	    PROXY_CMD_PROXY, "2001:db8::7", 40000),
	ROW("v2 tcp4 with TLVs",
	    V2SIG "\x21\x11\x00\x1a" V2_TCP4_BODY
		  "\x04\x00\x00" /* NOOP, empty */
		  "\x05\x00\x08uniqueid",
	    DONE, PROXY_CMD_PROXY, "192.0.2.7", 40000),
	ROW("v2 local", V2SIG "\x20\x00\x00\x00", DONE, PROXY_CMD_LOCAL, NULL, 0),
	ROW("v2 local with addresses", V2SIG "\x20\x11\x00\x0c" V2_TCP4_BODY, DONE,
	    PROXY_CMD_LOCAL, NULL, 0),
	ROW("v2 unspec", V2SIG "\x21\x00\x00\x00", DONE, PROXY_CMD_UNKNOWN, NULL,
	    0),
	ROW("v2 udp4", V2SIG "\x21\x12\x00\x0c" V2_TCP4_BODY, DONE,
	    PROXY_CMD_UNKNOWN, NULL, 0),
	ROW("v2 unix", V2SIG "\x21\x31\x00\x04" "abcd", DONE, PROXY_CMD_UNKNOWN,
	    NULL, 0),
	ROW("v2 tcp4 short body", V2SIG "\x21\x11\x00\x0b" "\xc0\x00\x02\x07"
	    "\xc6\x33\x64\x01\x9c\x40\x00", INVALID, 0, NULL, 0),
	ROW("v2 tcp6 with v4 body", V2SIG "\x21\x21\x00\x0c" V2_TCP4_BODY, INVALID,
	    0, NULL, 0),
	ROW("v2 TLV past end", V2SIG "\x21\x11\x00\x10" V2_TCP4_BODY "\x05\x00\x08x",
	    INVALID, 0, NULL, 0),
	ROW("v2 TLV header cut", V2SIG "\x21\x11\x00\x0e" V2_TCP4_BODY "\x05\x00",
	    INVALID, 0, NULL, 0),
	ROW("v2 version 1", V2SIG "\x11\x11\x00\x0c" V2_TCP4_BODY, INVALID, 0, NULL,
	    0),
	ROW("v2 command 2", V2SIG "\x22\x11\x00\x0c" V2_TCP4_BODY, INVALID, 0, NULL,
	    0),
	ROW("v2 bad signature", "\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c" V2_TCP4_BODY,
	    INVALID, 0, NULL, 0),
	ROW("v2 body 1024", V2SIG "\x21\x00\x04\x00", MORE, 0, NULL, 0),
	ROW("v2 body 1025", V2SIG "\x21\x00\x04\x01", TOO_LONG, 0, NULL, 0),
	ROW("v2 body 65535", V2SIG "\x21\x11\xff\xff", TOO_LONG, 0, NULL, 0),
	ROW("v2 partial header", V2SIG "\x21\x11", MORE, 0, NULL, 0),
	ROW("v2 partial body", V2SIG "\x21\x11\x00\x0c\xc0\x00", MORE, 0, NULL, 0),
};

static void pp_expect(const struct pp_row *r, const struct proxy_proto *p,
		      enum proxy_proto_rc rc, size_t used_total, const char *how)
{
	char esc[400];

	if (rc != r->rc)
		fail_msg("%s (%s): rc %d, expected %d for \"%s\"", r->name, how,
			 rc, r->rc, unit_escape(esc, sizeof esc, r->bytes, r->len));
	if (rc == MORE)
		assert_int_equal(used_total, r->len);
	if (rc != DONE)
		return;
	assert_int_equal(p->header_len, r->len);
	assert_int_equal(used_total, r->len);
	assert_int_equal(p->cmd, r->cmd);
	if (r->cmd != PROXY_CMD_PROXY)
		return;
	char text[INET6_ADDRSTRLEN];
	unsigned port;
	if (p->src.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&p->src;
		inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
		port = ntohs(in->sin_port);
		assert_int_equal(p->addr_len, sizeof *in);
	} else {
		assert_int_equal(p->src.ss_family, AF_INET6);
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&p->src;
		inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
		port = ntohs(in6->sin6_port);
		assert_int_equal(p->addr_len, sizeof *in6);
	}
	if (strcmp(text, r->addr) != 0)
		fail_msg("%s (%s): address %s, expected %s", r->name, how, text,
			 r->addr);
	assert_int_equal(port, r->port);
}

static void test_rows(void **state)
{
	static const char client[] = "EHLO x\r\n";
	struct proxy_proto *p = malloc(sizeof *p);
	assert_non_null(p);

	for (size_t i = 0; i < UNIT_NELEM(pp_rows); i++) {
		const struct pp_row *r = &pp_rows[i];
		size_t used, total = 0;
		enum proxy_proto_rc rc = MORE;

		/* whole */
		proxy_proto_init(p);
		rc = proxy_proto_feed(p, r->bytes, r->len, &used);
		pp_expect(r, p, rc, used, "whole");

		/* byte by byte: stops at the first result other than MORE */
		proxy_proto_init(p);
		rc = MORE;
		for (size_t k = 0; k < r->len && rc == MORE; k++) {
			rc = proxy_proto_feed(p, r->bytes + k, 1, &used);
			total += used;
		}
		pp_expect(r, p, rc, total, "bytewise");

		/* followed by the client's first command */
		char *buf = malloc(r->len + sizeof client);
		assert_non_null(buf);
		memcpy(buf, r->bytes, r->len);
		memcpy(buf + r->len, client, sizeof client - 1);
		proxy_proto_init(p);
		rc = proxy_proto_feed(p, buf, r->len + sizeof client - 1, &used);
		if (r->rc == DONE) {
			assert_int_equal(rc, DONE);
			assert_int_equal(used, r->len);
		} else if (r->rc == MORE) {
			/* the client's bytes are read as more header */
			assert_int_not_equal(rc, DONE);
		} else {
			assert_int_equal(rc, r->rc);
		}
		free(buf);

		/* once finished, the parser takes nothing more */
		if (rc != MORE) {
			assert_int_equal(proxy_proto_feed(p, "x", 1, &used), rc);
			assert_int_equal(used, 0);
		}
	}
	free(p);
}

/* v2 with a body of exactly PROXY_V2_BODY_MAX bytes of TLVs completes. */
static void test_v2_body_max(void **state)
{
	size_t len = PROXY_V2_HDR_LEN + PROXY_V2_BODY_MAX;
	unsigned char *b = calloc(1, len);
	struct proxy_proto *p = malloc(sizeof *p);
	size_t used;

	assert_non_null(b);
	assert_non_null(p);
	memcpy(b, V2SIG "\x21\x11", 14);
	b[14] = PROXY_V2_BODY_MAX >> 8;
	b[15] = PROXY_V2_BODY_MAX & 0xff;
	memcpy(b + 16, V2_TCP4_BODY, 12);
	/* one NOOP TLV over the rest */
	size_t vlen = PROXY_V2_BODY_MAX - 12 - 3;
	b[28] = 0x04;
	b[29] = (unsigned char)(vlen >> 8);
	b[30] = (unsigned char)(vlen & 0xff);
	proxy_proto_init(p);
	assert_int_equal(proxy_proto_feed(p, b, len, &used), DONE);
	assert_int_equal(used, len);
	assert_int_equal(p->cmd, PROXY_CMD_PROXY);
	assert_int_equal(p->version, 2);
	free(b);
	free(p);
}

static void test_names(void **state)
{
	assert_string_equal(proxy_proto_cmd_name(PROXY_CMD_PROXY), "PROXY");
	assert_string_equal(proxy_proto_cmd_name(PROXY_CMD_LOCAL), "LOCAL");
	assert_string_equal(proxy_proto_cmd_name(PROXY_CMD_UNKNOWN), "UNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows),
		cmocka_unit_test(test_v2_body_max),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
