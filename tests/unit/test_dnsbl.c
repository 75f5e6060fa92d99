/*
 * Unit tests for dnsbl: parse rows (valid specs rendered back to a
 * canonical text, invalid specs with their error), match rows (filters,
 * error codes 127.255.255.x, answers outside 127/8), query names for IPv4,
 * IPv6 and v4-mapped clients, limits, and the queries against a real DNS
 * server: a dnsmasq started here on a free loopback port (skipped only
 * when dnsmasq is not installed), plus a silent server for timeouts and
 * cancellation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dnsbl.h"
#include "metrics.h"
#include "unit.h"

#define DNSMASQ "/usr/sbin/dnsmasq"
#define LOOP_LIMIT_S 10 /* a test that waits longer than this has failed */

/* ---- helpers ----------------------------------------------------------- */

/* One octet's accepted values as "[a;b..c]", or "a" for a single one. */
static size_t render_octet(const uint8_t bits[32], char *buf, size_t cap)
{
	size_t o = 0, items = 0;
	char tmp[1100];

	for (unsigned v = 0; v < 256; v++) {
		if (!((bits[v >> 3] >> (v & 7)) & 1))
			continue;
		unsigned hi = v;
		while (hi < 255 && ((bits[(hi + 1) >> 3] >> ((hi + 1) & 7)) & 1))
			hi++;
		o += (size_t)snprintf(tmp + o, sizeof tmp - o, "%s%u", items ? ";" : "", v);
		if (hi > v)
			o += (size_t)snprintf(tmp + o, sizeof tmp - o, "..%u", hi);
		items++;
		v = hi;
	}
	if (items == 1 && !strstr(tmp, ".."))
		return (size_t)snprintf(buf, cap, "%s", tmp);
	return (size_t)snprintf(buf, cap, "[%s]", tmp);
}

/* The list as "domain[=filter]*weight ..." with canonical filters. */
static void render(const struct dnsbl_list *l, char *buf, size_t cap)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < l->n && o < cap; i++) {
		const struct dnsbl_site *s = &l->sites[i];
		o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? " " : "", s->domain);
		if (s->has_filter)
			for (int k = 0; k < 4 && o < cap; k++) {
				o += (size_t)snprintf(buf + o, cap - o, "%c", k ? '.' : '=');
				if (o < cap)
					o += render_octet(s->octet_ok[k], buf + o, cap - o);
			}
		if (o < cap)
			o += (size_t)snprintf(buf + o, cap - o, "*%d", s->weight);
	}
}

static struct sockaddr_storage addr_of(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
		v4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
		v6->sin6_family = AF_INET6;
	else
		fail_msg("bad address in test table: %s", text);
	return ss;
}

static uint32_t a_of(const char *text)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, text, &a), 1);
	return a.s_addr;
}

/* ---- parse ------------------------------------------------------------- */

struct parse_case {
	const char *name;
	const char *spec;
	int rc;
	const char *want; /* rc 0: rendered list; rc -1: error substring */
};

static const struct parse_case parse_cases[] = {
	{ "empty", "", 0, "" },
	{ "only separators", " ,\t, \r\n", 0, "" },
	{ "one site", "zen.spamhaus.org", 0, "zen.spamhaus.org*1" },
	{ "weight", "b.barracudacentral.org*2", 0, "b.barracudacentral.org*2" },
	{ "negative weight", "list.dnswl.org=127.0.[0..255].[2..3]*-2", 0,
	  "list.dnswl.org=127.0.[0..255].[2..3]*-2" },
	{ "plus sign", "a.test*+4", 0, "a.test*4" },
	{ "zero weight", "a.test*0", 0, "a.test*0" },
	{ "filter number", "a.test=127.0.0.2", 0, "a.test=127.0.0.2*1" },
	{ "filter list and ranges", "a.test=127.0.0.[2;4..6;9]*3", 0,
	  "a.test=127.0.0.[2;4..6;9]*3" },
	{ "filter range of one", "a.test=127.0.0.[5..5]", 0, "a.test=127.0.0.5*1" },
	{ "filter all octets bracketed", "a.test=[127].[0;1].[0..2].[10..20]", 0,
	  "a.test=127.[0..1].[0..2].[10..20]*1" },
	{ "comma separated", "a.test,b.test*2", 0, "a.test*1 b.test*2" },
	{ "comma and space", "a.test, b.test=127.0.0.3 ,c.test", 0,
	  "a.test*1 b.test=127.0.0.3*1 c.test*1" },
	{ "tabs and newlines", "\ta.test\n\tb.test\r\n", 0, "a.test*1 b.test*1" },
	{ "same site twice", "bl.test=127.0.0.2*3 bl.test*1", 0,
	  "bl.test=127.0.0.2*3 bl.test*1" },
	{ "trailing dot dropped", "a.test.*2", 0, "a.test*2" },
	{ "underscore and digits", "_x-1.9z.test", 0, "_x-1.9z.test*1" },
	{ "weight limit", "a.test*-1000000", 0, "a.test*-1000000" },
	{ "leading zeros", "a.test=127.000.0.02", 0, "a.test=127.0.0.2*1" },

	{ "bad weight empty", "a.test*", -1, "bad weight in 'a.test*'" },
	{ "bad weight text", "a.test*x", -1, "bad weight" },
	{ "bad weight sign only", "a.test*-", -1, "bad weight" },
	{ "bad weight too big", "a.test*1000001", -1, "bad weight" },
	{ "bad weight two stars", "a.test*2*3", -1, "bad weight" },
	{ "bad weight float", "a.test*1.5", -1, "bad weight" },
	{ "empty domain", "=127.0.0.2", -1, "bad domain" },
	{ "only star", "*2", -1, "bad domain" },
	{ "empty label", "a..test", -1, "bad domain" },
	{ "leading dot", ".a.test", -1, "bad domain" },
	{ "only a dot", ".", -1, "bad domain" },
	{ "bad character", "a.te/st", -1, "bad domain" },
	{ "utf8", "\xc3\xa9.test", -1, "bad domain in '\\xc3\\xa9.test'" },
	{ "empty filter", "a.test=", -1, "bad filter" },
	{ "three octets", "a.test=127.0.2", -1, "bad filter" },
	{ "five octets", "a.test=127.0.0.2.1", -1, "bad filter" },
	{ "octet too big", "a.test=127.0.0.256", -1, "bad filter" },
	{ "octet four digits", "a.test=127.0.0.0002", -1, "bad filter" },
	{ "negative octet", "a.test=127.0.0.-2", -1, "bad filter" },
	{ "empty brackets", "a.test=127.0.0.[]", -1, "bad filter" },
	{ "unclosed bracket", "a.test=127.0.0.[2", -1, "bad filter" },
	{ "trailing semicolon", "a.test=127.0.0.[2;]", -1, "bad filter" },
	{ "backwards range", "a.test=127.0.0.[9..2]", -1, "bad filter" },
	{ "range without brackets", "a.test=127.0.0.2..4", -1, "bad filter" },
	{ "half range", "a.test=127.0.0.[2..]", -1, "bad filter" },
	{ "triple dot", "a.test=127.0.0.[2...4]", -1, "bad filter" },
	{ "two equals", "a.test=127.0.0.2=1", -1, "bad filter" },
	{ "space inside filter", "a.test=127.0.0.[2; 3]", -1, "bad filter" },
	{ "filter outside 127/8", "a.test=10.0.0.2", -1, "can never match" },
	{ "filter only error codes", "a.test=127.255.255.[0..255]", -1,
	  "can never match" },
	{ "second entry bad", "a.test b.test*q", -1, "bad weight in 'b.test*q'" },
};

static void test_parse_rows(void **state)
{
	char err[256], got[8192];
	struct dnsbl_list *l = malloc(sizeof *l);

	assert_non_null(l);
	for (size_t i = 0; i < UNIT_NELEM(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		int rc = dnsbl_parse(c->spec, strlen(c->spec), l, err, sizeof err);
		if (rc != c->rc)
			fail_msg("%s: rc %d, want %d (err '%s')", c->name, rc, c->rc, err);
		if (rc == 0) {
			render(l, got, sizeof got);
			if (strcmp(got, c->want) != 0)
				fail_msg("%s: got '%s', want '%s'", c->name, got, c->want);
		} else {
			if (!strstr(err, c->want))
				fail_msg("%s: error '%s' lacks '%s'", c->name, err, c->want);
			assert_int_equal(l->n, 0);
		}
	}
	free(l);
}

static void test_parse_limits(void **state)
{
	char spec[8192], err[256];
	struct dnsbl_list *l = malloc(sizeof *l);
	size_t o = 0;

	assert_non_null(l);
	for (int i = 0; i < DNSBL_SITES_MAX; i++)
		o += (size_t)snprintf(spec + o, sizeof spec - o, "s%d.test ", i);
	assert_int_equal(dnsbl_parse(spec, o, l, err, sizeof err), 0);
	assert_int_equal(l->n, DNSBL_SITES_MAX);
	o += (size_t)snprintf(spec + o, sizeof spec - o, "one.more");
	assert_int_equal(dnsbl_parse(spec, o, l, err, sizeof err), -1);
	assert_non_null(strstr(err, "too many sites"));
	assert_int_equal(l->n, 0);

	/* Domain of exactly DNSBL_DOMAIN_MAX bytes: labels of 63 + '.' ... */
	char dom[DNSBL_DOMAIN_MAX + 2];
	memset(dom, 'a', sizeof dom);
	dom[63] = dom[127] = '.';
	dom[DNSBL_DOMAIN_MAX] = '\0';
	assert_int_equal(dnsbl_parse(dom, strlen(dom), l, err, sizeof err), 0);
	assert_string_equal(l->sites[0].domain, dom);
	dom[DNSBL_DOMAIN_MAX] = 'a';
	dom[DNSBL_DOMAIN_MAX + 1] = '\0';
	assert_int_equal(dnsbl_parse(dom, strlen(dom), l, err, sizeof err), -1);
	assert_non_null(strstr(err, "domain longer than"));
	/* ... and one trailing dot on top of the longest still fits. */
	dom[DNSBL_DOMAIN_MAX] = '.';
	assert_int_equal(dnsbl_parse(dom, strlen(dom), l, err, sizeof err), 0);

	/* Labels up to 63 bytes. */
	char label[80];
	memset(label, 'b', 64);
	memcpy(label + 64, ".test", 6);
	assert_int_equal(dnsbl_parse(label, strlen(label), l, err, sizeof err), -1);
	assert_int_equal(dnsbl_parse(label + 1, strlen(label + 1), l, err, sizeof err), 0);

	/* len is honoured: bytes past it are not read, a NUL inside is bad. */
	assert_int_equal(dnsbl_parse("a.test*2junk", 8, l, err, sizeof err), 0);
	assert_int_equal(l->sites[0].weight, 2);
	assert_int_equal(dnsbl_parse("a.t\0st", 6, l, err, sizeof err), -1);

	/* A long bad entry is quoted shortened, and err is always bounded. */
	char big[600];
	memset(big, 'x', sizeof big);
	big[0] = '/';
	assert_int_equal(dnsbl_parse(big, sizeof big, l, err, sizeof err), -1);
	assert_true(strlen(err) < 100);
	char tiny[8];
	assert_int_equal(dnsbl_parse(big, sizeof big, l, tiny, sizeof tiny), -1);
	assert_true(strlen(tiny) < sizeof tiny);
	assert_int_equal(dnsbl_parse(big, sizeof big, l, NULL, 0), -1);
	free(l);
}

/* config.c checks the value with dnsbl_parse, so a mistake is reported
 * with its file and line (of the logical line, continuations joined). */
static void test_config_reports_place(void **state)
{
	char path[] = "/tmp/sluice-test-dnsbl-XXXXXX", err[512], want[600];
	struct config *cfg = malloc(sizeof *cfg);
	const char *good = "# lists\n"
			   "dnsbl_sites = zen.example*3,\n"
			   "    list.dnswl.example=127.0.[0..255].[2..3]*-2\n";
	const char *bad = "myhostname = mx.example\n"
			  "\n"
			  "dnsbl_sites = zen.example*3\n"
			  "  bl.example=127.0.0.[9..2]\n";

	assert_non_null(cfg);
	for (int round = 0; round < 2; round++) {
		const char *text = round ? bad : good;
		memcpy(path + sizeof path - 7, "XXXXXX", 6);
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
		close(fd);
		int rc = config_load(cfg, path, NULL, 0, err, sizeof err);
		unlink(path);
		if (!round) {
			if (rc != 0)
				fail_msg("good file: %s", err);
			assert_non_null(strstr(cfg->dnsbl_sites, "list.dnswl.example"));
			continue;
		}
		assert_int_equal(rc, -1);
		snprintf(want, sizeof want,
			 "%s:3: bad dnsbl_sites: bad filter in 'bl.example=127.0.0.[9..2]'",
			 path);
		assert_string_equal(err, want);
	}
	/* -o overrides name themselves as the place (with the default file,
	 * which is normally absent on a test machine). */
	char *o[] = { "dnsbl_sites=a.test*x" };
	if (access(CONFIG_DEFAULT_PATH, F_OK) != 0) {
		assert_int_equal(config_load(cfg, NULL, o, 1, err, sizeof err), -1);
		assert_string_equal(err, "-o dnsbl_sites=a.test*x: bad dnsbl_sites: "
					 "bad weight in 'a.test*x'");
	}
	free(cfg);
}

/* ---- match ------------------------------------------------------------- */

struct match_case {
	const char *name;
	const char *spec;
	const char *answer;
	bool want;
};

static const struct match_case match_cases[] = {
	{ "no filter, 127.0.0.2", "a.test", "127.0.0.2", true },
	{ "no filter, 127.1.2.3", "a.test", "127.1.2.3", true },
	{ "no filter, 127.0.0.1", "a.test", "127.0.0.1", true },
	{ "no filter, public resolver code", "a.test", "127.255.255.254", false },
	{ "no filter, rate limit code", "a.test", "127.255.255.255", false },
	{ "no filter, typo code", "a.test", "127.255.255.252", false },
	{ "no filter, 127.255.255.0", "a.test", "127.255.255.0", false },
	{ "no filter, 127.255.254.2", "a.test", "127.255.254.2", true },
	{ "no filter, outside 127/8", "a.test", "10.0.0.2", false },
	{ "no filter, 128.0.0.2", "a.test", "128.0.0.2", false },
	{ "no filter, 0.0.0.0", "a.test", "0.0.0.0", false },
	{ "exact filter hit", "a.test=127.0.0.2", "127.0.0.2", true },
	{ "exact filter miss", "a.test=127.0.0.2", "127.0.0.3", false },
	{ "range low end", "a.test=127.0.0.[2..11]", "127.0.0.2", true },
	{ "range high end", "a.test=127.0.0.[2..11]", "127.0.0.11", true },
	{ "range above", "a.test=127.0.0.[2..11]", "127.0.0.12", false },
	{ "range below", "a.test=127.0.0.[2..11]", "127.0.0.1", false },
	{ "list second item", "a.test=127.0.0.[2;4;6]", "127.0.0.4", true },
	{ "list gap", "a.test=127.0.0.[2;4;6]", "127.0.0.5", false },
	{ "other octet checked", "a.test=127.0.1.2", "127.0.0.2", false },
	{ "dnswl style", "wl.test=127.0.[0..255].[2;3]", "127.0.15.3", true },
	{ "filter accepting error codes", "a.test=127.[0..255].[0..255].[0..255]",
	  "127.255.255.254", false },
	{ "filter accepting them, other hit", "a.test=127.[0..255].[0..255].[0..255]",
	  "127.255.254.254", true },
};

static void test_match_rows(void **state)
{
	char err[256];
	struct dnsbl_list *l = malloc(sizeof *l);

	assert_non_null(l);
	for (size_t i = 0; i < UNIT_NELEM(match_cases); i++) {
		const struct match_case *c = &match_cases[i];
		if (dnsbl_parse(c->spec, strlen(c->spec), l, err, sizeof err) != 0)
			fail_msg("%s: parse: %s", c->name, err);
		bool got = dnsbl_match(&l->sites[0], a_of(c->answer));
		if (got != c->want)
			fail_msg("%s: %s against %s: %d, want %d", c->name, c->answer,
				 c->spec, got, c->want);
	}
	free(l);
}

/* ---- query names ------------------------------------------------------- */

struct name_case {
	const char *name;
	const char *client;
	const char *domain;
	size_t cap;
	const char *want; /* NULL: does not fit */
};

static const struct name_case name_cases[] = {
	{ "v4", "192.0.2.1", "zen.example", 256, "1.2.0.192.zen.example" },
	{ "v4 exact cap", "10.20.30.40", "bl.test", 20, "40.30.20.10.bl.test" },
	{ "v4 cap one short", "10.20.30.40", "bl.test", 19, NULL },
	{ "v6", "2001:db8::567:89ab", "bl.test", 256,
	  "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test" },
	{ "v6 loopback", "::1", "x.y", 256,
	  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.x.y" },
	{ "v4-mapped is queried as v4", "::ffff:198.51.100.7", "bl.test", 256,
	  "7.100.51.198.bl.test" },
	{ "v6 cap too small", "::1", "bl.test", 64, NULL },
};

static void test_query_names(void **state)
{
	struct dnsbl_site site;
	char out[300];

	for (size_t i = 0; i < UNIT_NELEM(name_cases); i++) {
		const struct name_case *c = &name_cases[i];
		struct sockaddr_storage ss = addr_of(c->client);
		memset(&site, 0, sizeof site);
		snprintf(site.domain, sizeof site.domain, "%s", c->domain);
		memset(out, '#', sizeof out);
		size_t n = dnsbl_query_name(&site, (struct sockaddr *)&ss, out, c->cap);
		if (!c->want) {
			if (n != 0)
				fail_msg("%s: got %zu bytes, want none", c->name, n);
			continue;
		}
		if (n != strlen(c->want) || strcmp(out, c->want) != 0)
			fail_msg("%s: got '%.*s', want '%s'", c->name, (int)n, out, c->want);
	}

	/* The longest domain the parser accepts still gives an IPv6 name
	 * within DNS's 253 bytes. */
	memset(&site, 0, sizeof site);
	memset(site.domain, 'a', DNSBL_DOMAIN_MAX);
	site.domain[63] = site.domain[127] = '.';
	struct sockaddr_storage ss = addr_of("2001:db8::1");
	assert_int_equal(dnsbl_query_name(&site, (struct sockaddr *)&ss, out, sizeof out),
			 64 + DNSBL_DOMAIN_MAX);

	/* Neither family, or no domain: nothing. */
	ss.ss_family = AF_UNIX;
	assert_int_equal(dnsbl_query_name(&site, (struct sockaddr *)&ss, out, sizeof out), 0);
	ss = addr_of("192.0.2.1");
	site.domain[0] = '\0';
	assert_int_equal(dnsbl_query_name(&site, (struct sockaddr *)&ss, out, sizeof out), 0);
}

/* ---- queries: fixtures ------------------------------------------------- */

static pid_t dnsmasq_pid;
static int dnsmasq_port; /* 0: dnsmasq not running (missing) */

/* A port free for both UDP and TCP on 127.0.0.1 (dnsmasq wants both). */
static int free_port(void)
{
	for (int tries = 0; tries < 20; tries++) {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t len = sizeof sin;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		if (u < 0)
			return -1;
		if (bind(u, (struct sockaddr *)&sin, sizeof sin) != 0 ||
		    getsockname(u, (struct sockaddr *)&sin, &len) != 0) {
			close(u);
			return -1;
		}
		int t = socket(AF_INET, SOCK_STREAM, 0);
		int ok = t >= 0 && bind(t, (struct sockaddr *)&sin, sizeof sin) == 0;
		if (t >= 0)
			close(t);
		close(u);
		if (ok)
			return ntohs(sin.sin_port);
	}
	return -1;
}

static int tcp_ready(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return 0;
	int ok = connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0;
	close(fd);
	return ok;
}

/* The reversed-nibble name of ::1 under bl.test. */
#define V6_LOOPBACK_BL                                                         \
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test"

static int dnsmasq_start(void **state)
{
	char port_arg[32];

	if (access(DNSMASQ, X_OK) != 0)
		return 0; /* the tests that need it skip */
	int port = free_port();
	if (port < 0)
		return -1;
	snprintf(port_arg, sizeof port_arg, "--port=%d", port);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0 && !getenv("DNSBL_TEST_VERBOSE")) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execl(DNSMASQ, DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null",
		      port_arg, "--listen-address=127.0.0.1", "--bind-interfaces",
		      "--no-resolv", "--no-hosts", "--pid-file=", "--log-facility=-",
		      "--local=/bl.test/", "--local=/wl.test/",
		      "--host-record=2.0.0.127.bl.test,127.0.0.2",
		      "--host-record=2.0.0.127.wl.test,127.0.1.2",
		      "--host-record=3.0.0.127.bl.test,127.255.255.254",
		      "--host-record=5.0.0.127.bl.test,10.0.0.5",
		      "--host-record=" V6_LOOPBACK_BL ",127.0.0.4", (char *)NULL);
		_exit(127);
	}
	dnsmasq_pid = pid;
	for (int i = 0; i < 500; i++) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			dnsmasq_pid = 0;
			fprintf(stderr, "dnsmasq exited (status %d)\n", st);
			return -1;
		}
		if (tcp_ready(port)) {
			dnsmasq_port = port;
			return 0;
		}
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return -1;
}

static int dnsmasq_stop(void **state)
{
	if (dnsmasq_pid > 0) {
		kill(dnsmasq_pid, SIGTERM);
		waitpid(dnsmasq_pid, NULL, 0);
		dnsmasq_pid = 0;
	}
	return 0;
}

struct loop {
	struct event_base *base;
	struct evdns_base *dns;
	struct event *deadline;
	struct dnsbl_list list;
	int calls;
	int score;
	char hits[8192];
};

static void loop_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static struct loop *loop_new(int port, const char *timeout)
{
	struct loop *lp = calloc(1, sizeof *lp);
	assert_non_null(lp);
	lp->base = event_base_new();
	assert_non_null(lp->base);
	lp->dns = evdns_base_new(lp->base, 0);
	assert_non_null(lp->dns);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	assert_int_equal(evdns_base_nameserver_sockaddr_add(lp->dns,
			 (struct sockaddr *)&sin, sizeof sin, 0), 0);
	assert_int_equal(evdns_base_set_option(lp->dns, "timeout:", timeout), 0);
	assert_int_equal(evdns_base_set_option(lp->dns, "attempts:", "1"), 0);
	evdns_base_search_clear(lp->dns);
	lp->deadline = evtimer_new(lp->base, loop_deadline_cb, lp->base);
	assert_non_null(lp->deadline);
	struct timeval tv = { LOOP_LIMIT_S, 0 };
	evtimer_add(lp->deadline, &tv);
	return lp;
}

static void loop_free(struct loop *lp)
{
	/* Let evdns deliver whatever it deferred (cancels) before freeing. */
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	evdns_base_free(lp->dns, 0);
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	event_free(lp->deadline);
	event_base_free(lp->base);
	free(lp);
}

static void loop_cb(void *arg, int score, const char *hits)
{
	struct loop *lp = arg;

	lp->calls++;
	lp->score = score;
	snprintf(lp->hits, sizeof lp->hits, "%s", hits);
	event_base_loopbreak(lp->base);
}

/* ---- queries against dnsmasq ------------------------------------------- */

struct async_case {
	const char *name;
	const char *spec;
	const char *client;
	int score;
	const char *hits;
	int failures; /* METRIC_DNS_FAILURES added */
};

static const struct async_case async_cases[] = {
	{ "listed", "bl.test", "127.0.0.2", 1, "bl.test=127.0.0.2*1", 0 },
	{ "listed with weight and allowed", "bl.test*3 wl.test=127.0.1.[1..5]*-2",
	  "127.0.0.2", 1, "bl.test=127.0.0.2*3 wl.test=127.0.1.2*-2", 0 },
	{ "allow list alone", "wl.test*-5", "127.0.0.2", -5, "wl.test=127.0.1.2*-5", 0 },
	{ "filter miss", "bl.test=127.0.0.3", "127.0.0.2", 0, "", 0 },
	{ "same site, each matching entry counts",
	  "bl.test bl.test=127.0.0.[2..4]*3 bl.test=127.0.0.9*7", "127.0.0.2", 4,
	  "bl.test=127.0.0.2*1 bl.test=127.0.0.2*3", 0 },
	{ "error code never counts", "bl.test*5", "127.0.0.3", 0, "", 0 },
	{ "error code even with a wide filter", "bl.test=127.[0..255].[0..255].[0..255]",
	  "127.0.0.3", 0, "", 0 },
	{ "answer outside 127/8", "bl.test", "127.0.0.5", 0, "", 0 },
	{ "nxdomain is not listed, not a failure", "bl.test wl.test", "127.0.0.9", 0,
	  "", 0 },
	{ "v6 client", "bl.test*2", "::1", 2, "bl.test=127.0.0.4*2", 0 },
	{ "v4-mapped client", "bl.test", "::ffff:127.0.0.2", 1, "bl.test=127.0.0.2*1", 0 },
	{ "refused site is a failure, others count", "bl.test nowhere.invalid*9",
	  "127.0.0.2", 1, "bl.test=127.0.0.2*1", 1 },
};

static void test_async_dnsmasq(void **state)
{
	char err[256];

	if (!dnsmasq_port)
		skip();
	for (size_t i = 0; i < UNIT_NELEM(async_cases); i++) {
		const struct async_case *c = &async_cases[i];
		struct loop *lp = loop_new(dnsmasq_port, "2");
		if (dnsbl_parse(c->spec, strlen(c->spec), &lp->list, err, sizeof err) != 0)
			fail_msg("%s: parse: %s", c->name, err);
		struct sockaddr_storage ss = addr_of(c->client);
		long long q0 = metrics_get(METRIC_DNS_QUERIES);
		long long f0 = metrics_get(METRIC_DNS_FAILURES);
		struct dnsbl_req *req = dnsbl_start(lp->dns, &lp->list,
						    (struct sockaddr *)&ss, loop_cb, lp);
		assert_non_null(req);
		if (lp->calls != 0)
			fail_msg("%s: callback ran inside dnsbl_start", c->name);
		event_base_dispatch(lp->base);
		if (lp->calls != 1)
			fail_msg("%s: %d callbacks, want 1", c->name, lp->calls);
		if (lp->score != c->score || strcmp(lp->hits, c->hits) != 0)
			fail_msg("%s: score %d hits '%s', want %d '%s'", c->name,
				 lp->score, lp->hits, c->score, c->hits);
		/* One query per distinct domain. */
		size_t distinct = 0;
		for (size_t s = 0; s < lp->list.n; s++) {
			size_t p = 0;
			while (p < s && strcmp(lp->list.sites[p].domain,
					       lp->list.sites[s].domain) != 0)
				p++;
			distinct += p == s;
		}
		assert_int_equal(metrics_get(METRIC_DNS_QUERIES) - q0, (long long)distinct);
		if (metrics_get(METRIC_DNS_FAILURES) - f0 != c->failures)
			fail_msg("%s: %lld failures, want %d", c->name,
				 metrics_get(METRIC_DNS_FAILURES) - f0, c->failures);
		loop_free(lp);
	}
}

/* Cancel while the answers are in flight, and again once they are queued:
 * the callback never runs and nothing leaks (ASan). */
static void test_cancel_dnsmasq(void **state)
{
	char err[256];

	if (!dnsmasq_port)
		skip();
	struct loop *lp = loop_new(dnsmasq_port, "2");
	const char *spec = "bl.test wl.test bl.test=127.0.0.2*3";
	assert_int_equal(dnsbl_parse(spec, strlen(spec), &lp->list, err, sizeof err), 0);
	struct sockaddr_storage ss = addr_of("127.0.0.2");

	struct dnsbl_req *req = dnsbl_start(lp->dns, &lp->list,
					    (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	dnsbl_cancel(req);
	/* A second request that runs to completion shows the loop went on
	 * long enough for the cancelled one's answers to arrive. */
	req = dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	event_base_dispatch(lp->base);
	assert_int_equal(lp->calls, 1);
	assert_int_equal(lp->score, 5); /* 1 + 1 + 3 */

	/* Let the answers reach evdns, then cancel before they are used. */
	lp->calls = 0;
	req = dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	dnsbl_cancel(req);
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	assert_int_equal(lp->calls, 0);
	loop_free(lp);
}

/* ---- queries against a server that never answers ----------------------- */

static void test_timeout(void **state)
{
	char err[256];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof sin;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int silent = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(silent >= 0);
	assert_int_equal(bind(silent, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(getsockname(silent, (struct sockaddr *)&sin, &len), 0);

	struct loop *lp = loop_new(ntohs(sin.sin_port), "0.2");
	const char *spec = "a.test b.test*5 a.test=127.0.0.2";
	assert_int_equal(dnsbl_parse(spec, strlen(spec), &lp->list, err, sizeof err), 0);
	struct sockaddr_storage ss = addr_of("192.0.2.1");
	long long f0 = metrics_get(METRIC_DNS_FAILURES);
	struct dnsbl_req *req = dnsbl_start(lp->dns, &lp->list,
					    (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	assert_int_equal(lp->calls, 0);
	event_base_dispatch(lp->base);
	assert_int_equal(lp->calls, 1);
	assert_int_equal(lp->score, 0);
	assert_string_equal(lp->hits, "");
	/* One failure per queried domain, not per entry. */
	assert_int_equal(metrics_get(METRIC_DNS_FAILURES) - f0, 2);

	/* Cancelled while waiting: no callback, freed once evdns lets go. */
	lp->calls = 0;
	req = dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	dnsbl_cancel(req);
	dnsbl_cancel(NULL);
	struct timeval tv = { 0, 400 * 1000 };
	event_base_loopexit(lp->base, &tv);
	event_base_dispatch(lp->base);
	assert_int_equal(lp->calls, 0);

	/* Freeing the resolver with a request in flight and no cancel:
	 * evdns fails it (shutdown), reported once, score 0. */
	req = dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp);
	assert_non_null(req);
	evdns_base_free(lp->dns, 1);
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	assert_int_equal(lp->calls, 1);
	lp->dns = evdns_base_new(lp->base, 0);
	assert_non_null(lp->dns);
	loop_free(lp);
	close(silent);
}

/* Nothing to start: NULL, and the callback is never called. */
static void test_start_nothing(void **state)
{
	char err[256];
	struct loop *lp = loop_new(53, "1");
	struct sockaddr_storage ss = addr_of("192.0.2.1");

	assert_int_equal(dnsbl_parse("", 0, &lp->list, err, sizeof err), 0);
	assert_null(dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp));
	assert_int_equal(dnsbl_parse("a.test", 6, &lp->list, err, sizeof err), 0);
	ss.ss_family = AF_UNIX;
	assert_null(dnsbl_start(lp->dns, &lp->list, (struct sockaddr *)&ss, loop_cb, lp));
	event_base_loop(lp->base, EVLOOP_NONBLOCK);
	assert_int_equal(lp->calls, 0);
	loop_free(lp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_rows),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_config_reports_place),
		cmocka_unit_test(test_match_rows),
		cmocka_unit_test(test_query_names),
		cmocka_unit_test(test_async_dnsmasq),
		cmocka_unit_test(test_cancel_dnsmasq),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_start_nothing),
	};
	/* A dnsmasq killed mid-test must not take the test with it. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, dnsmasq_start, dnsmasq_stop);
}
