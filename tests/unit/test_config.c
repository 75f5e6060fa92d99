/*
 * Unit tests for config: value parsers (tables), a sample file with
 * comments and continuation lines, errors with their place, -o precedence,
 * config_print_nondefault, and that every setting's default is documented
 * in docs/config.md and parses back as the default.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"

/* ---- helpers ----------------------------------------------------------- */

static char tmp_path[64];

static const char *write_tmp(const char *text)
{
	snprintf(tmp_path, sizeof tmp_path, "/tmp/sluice-test-config-XXXXXX");
	int fd = mkstemp(tmp_path);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
	return tmp_path;
}

static char *print_nondefault(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_print_nondefault(cfg, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static int load(struct config *cfg, const char *text, char *const *o, size_t n,
		char *err, size_t cap)
{
	const char *p = write_tmp(text);
	int rc = config_load(cfg, p, o, n, err, cap);
	unlink(p);
	return rc;
}

/* ---- value parsers ----------------------------------------------------- */

struct duration_case {
	const char *in;
	int rc;
	long ms;
};

static const struct duration_case duration_cases[] = {
	{ "250ms", 0, 250 },
	{ "1.5s", 0, 1500 },
	{ "5m", 0, 300000 },
	{ "300", 0, 300000 },
	{ "300s", 0, 300000 },
	{ "1.25m", 0, 75000 },
	{ "1h", 0, 3600000 },
	{ "2d", 0, 172800000 },
	{ "0.5d", 0, 43200000 },
	{ "0", 0, 0 },
	{ "0s", 0, 0 },
	{ "0.0005s", 0, 1 }, /* half a millisecond rounds up */
	{ "1.0004s", 0, 1000 },
	{ "0.25", 0, 250 },
	{ "0.1ms", -1, 0 },  /* would become 0 */
	{ "", -1, 0 },
	{ "s", -1, 0 },
	{ "1.s", -1, 0 },
	{ ".5s", -1, 0 },
	{ "-1s", -1, 0 },
	{ "+1s", -1, 0 },
	{ "1 s", -1, 0 },
	{ " 1s", -1, 0 },
	{ "1x", -1, 0 },
	{ "1S", -1, 0 },
	{ "1sec", -1, 0 },
	{ "1.5.5s", -1, 0 },
	{ "99999999999999999999d", -1, 0 },
	{ "9999999999999d", -1, 0 },
};

static void test_durations(void **state)
{
	for (size_t i = 0; i < sizeof duration_cases / sizeof duration_cases[0]; i++) {
		const struct duration_case *c = &duration_cases[i];
		long ms = -42;
		int rc = config_parse_duration_ms(c->in, &ms);
		if (rc != c->rc || (rc == 0 && ms != c->ms)) {
			print_error("duration '%s': rc %d ms %ld, want rc %d ms %ld\n",
				    c->in, rc, ms, c->rc, c->ms);
			fail();
		}
		if (rc != 0)
			assert_int_equal(ms, -42); /* untouched on error */
	}
}

struct size_case {
	const char *in;
	int rc;
	unsigned long long v;
};

static const struct size_case size_cases[] = {
	{ "0", 0, 0 },
	{ "10240000", 0, 10240000 },
	{ "1k", 0, 1024 },
	{ "256k", 0, 262144 },
	{ "256K", 0, 262144 },
	{ "512m", 0, 536870912ULL },
	{ "512M", 0, 536870912ULL },
	{ "2g", 0, 2147483648ULL },
	{ "18446744073709551615", 0, 18446744073709551615ULL },
	{ "18446744073709551616", -1, 0 },
	{ "17179869184g", -1, 0 },
	{ "1.5k", -1, 0 },
	{ "k", -1, 0 },
	{ "", -1, 0 },
	{ "10kb", -1, 0 },
	{ "10 k", -1, 0 },
	{ "-1", -1, 0 },
	{ "1t", -1, 0 },
};

static void test_sizes(void **state)
{
	for (size_t i = 0; i < sizeof size_cases / sizeof size_cases[0]; i++) {
		const struct size_case *c = &size_cases[i];
		unsigned long long v = 7;
		int rc = config_parse_size(c->in, &v);
		if (rc != c->rc || (rc == 0 && v != c->v)) {
			print_error("size '%s': rc %d v %llu, want rc %d v %llu\n",
				    c->in, rc, v, c->rc, c->v);
			fail();
		}
	}
}

struct endpoint_case {
	const char *in;
	int rc;
	int family;
	const char *addr; /* inet_ntop form, or the unix path */
	unsigned port;
};

static const struct endpoint_case endpoint_cases[] = {
	{ "1.2.3.4:25", 0, AF_INET, "1.2.3.4", 25 },
	{ "0.0.0.0:25", 0, AF_INET, "0.0.0.0", 25 },
	{ "127.0.0.1:65535", 0, AF_INET, "127.0.0.1", 65535 },
	{ "[::1]:25", 0, AF_INET6, "::1", 25 },
	{ "[::]:2525", 0, AF_INET6, "::", 2525 },
	{ "[2001:db8::1]:10025", 0, AF_INET6, "2001:db8::1", 10025 },
	{ "[::ffff:1.2.3.4]:25", 0, AF_INET6, "::ffff:1.2.3.4", 25 },
	{ "unix:/run/postfix/smtpd.sock", 0, AF_UNIX, "/run/postfix/smtpd.sock", 0 },
	{ "unix:relative.sock", 0, AF_UNIX, "relative.sock", 0 },
	{ "unix:", -1, 0, NULL, 0 },
	{ "localhost:25", -1, 0, NULL, 0 },
	{ "mx.example.com:25", -1, 0, NULL, 0 },
	{ "1.2.3.4", -1, 0, NULL, 0 },
	{ "1.2.3.4:", -1, 0, NULL, 0 },
	{ "1.2.3.4:0", -1, 0, NULL, 0 },
	{ "1.2.3.4:65536", -1, 0, NULL, 0 },
	{ "1.2.3.4:25x", -1, 0, NULL, 0 },
	{ "1.2.3.4:-25", -1, 0, NULL, 0 },
	{ "1.2.3:25", -1, 0, NULL, 0 },
	{ "1.2.3.256:25", -1, 0, NULL, 0 },
	{ ":25", -1, 0, NULL, 0 },
	{ "[::1]", -1, 0, NULL, 0 },
	{ "[::1]25", -1, 0, NULL, 0 },
	{ "[::1:25", -1, 0, NULL, 0 },
	{ "::1:25", -1, 0, NULL, 0 },
	{ "[1.2.3.4]:25", -1, 0, NULL, 0 },
	{ "", -1, 0, NULL, 0 },
};

static void check_endpoint(const struct endpoint_case *c)
{
	struct endpoint ep;
	char addr[INET6_ADDRSTRLEN];
	int rc = config_parse_endpoint(c->in, &ep);

	if (rc != c->rc) {
		print_error("endpoint '%s': rc %d, want %d\n", c->in, rc, c->rc);
		fail();
	}
	if (rc != 0)
		return;
	assert_string_equal(ep.text, c->in);
	assert_int_equal(ep.ss.ss_family, c->family);
	if (c->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ep.ss;
		assert_int_equal(ep.len, sizeof *sin);
		assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr));
		assert_string_equal(addr, c->addr);
		assert_int_equal(ntohs(sin->sin_port), c->port);
	} else if (c->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ep.ss;
		assert_int_equal(ep.len, sizeof *sin6);
		assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr));
		assert_string_equal(addr, c->addr);
		assert_int_equal(ntohs(sin6->sin6_port), c->port);
	} else {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ep.ss;
		assert_string_equal(sun->sun_path, c->addr);
		assert_int_equal(ep.len, offsetof(struct sockaddr_un, sun_path) +
						 strlen(c->addr) + 1);
	}
}

static void test_endpoints(void **state)
{
	for (size_t i = 0; i < sizeof endpoint_cases / sizeof endpoint_cases[0]; i++)
		check_endpoint(&endpoint_cases[i]);

	/* Too long for the text or for sun_path. */
	char longp[300];
	memset(longp, 'a', sizeof longp);
	memcpy(longp, "unix:/", 6);
	longp[sizeof longp - 1] = '\0';
	struct endpoint ep;
	assert_int_equal(config_parse_endpoint(longp, &ep), -1);
	longp[120] = '\0';
	assert_int_equal(config_parse_endpoint(longp, &ep), -1);
	longp[100] = '\0';
	assert_int_equal(config_parse_endpoint(longp, &ep), 0);
}

/* ---- files ------------------------------------------------------------- */

static const char sample[] =
	"# sluice test configuration\n"
	"\n"
	"listen = 127.0.0.1:2525,\n"
	"    [::1]:2525\n"
	"# a comment between continuation lines does not end the setting\n"
	"\t10.0.0.1:25 , 10.0.0.2:25\n"
	"backend = unix:/run/postfix/sluice.sock\n"
	"backend_pool_size = 4\n"
	"backend_xclient = no\n"
	"backend_tls = yes\n"
	"myhostname = mx1.example.org\n"
	"message_size_limit = 20m\n"
	"max_recipients = 50\n"
	"tls_cert_file = /etc/sluice/cert.pem\n"
	"tls_key_file = /etc/sluice/key.pem\n"
	"state_dir = /srv/sluice state\n"
	"spool_dir = /srv/spool # not a comment\n"
	"user =\n"
	"workers = 4\n"
	"workers = 2\n"
	"dns_servers = 127.0.0.53 [::1]:5353\n"
	"  ::2, 192.0.2.1:5300\n"
	"metrics_listen = 127.0.0.1:9100\n"
	"bare_newline = reject\n"
	"smtpd_timeout = 1.5s\n"
	"dns_timeout = 250ms\n"
	"backend_connect_timeout = 5m\n"
	"backend_timeout = 90\n"
	"backend_data_timeout = 1h\n"
	"backend_idle = 1d\n"
	"checkout_timeout = 0.5m\n"
	"shutdown_timeout = 0\n"
	"message_memory_max = 1m\r\n"
	"memory_limit = 2g   \n"
	"smtpd_hard_error_limit=7";

static unsigned ep_port(const struct endpoint *ep)
{
	if (ep->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&ep->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&ep->ss)->sin6_port);
}

static void test_sample_file(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	char err[256];
	assert_non_null(cfg);

	int rc = load(cfg, sample, NULL, 0, err, sizeof err);
	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");

	assert_int_equal(cfg->listen_count, 4);
	assert_string_equal(cfg->listen[0].text, "127.0.0.1:2525");
	assert_string_equal(cfg->listen[1].text, "[::1]:2525");
	assert_string_equal(cfg->listen[2].text, "10.0.0.1:25");
	assert_string_equal(cfg->listen[3].text, "10.0.0.2:25");
	assert_int_equal(cfg->listen[1].ss.ss_family, AF_INET6);
	assert_int_equal(ep_port(&cfg->listen[1]), 2525);
	assert_int_equal(cfg->backend.ss.ss_family, AF_UNIX);
	assert_string_equal(((struct sockaddr_un *)&cfg->backend.ss)->sun_path,
			    "/run/postfix/sluice.sock");
	assert_int_equal(cfg->backend_pool_size, 4);
	assert_false(cfg->backend_xclient);
	assert_true(cfg->backend_tls);
	assert_string_equal(cfg->myhostname, "mx1.example.org");
	assert_int_equal(cfg->message_size_limit, 20 * 1024 * 1024);
	assert_int_equal(cfg->max_recipients, 50);
	assert_string_equal(cfg->tls_cert_file, "/etc/sluice/cert.pem");
	assert_string_equal(cfg->tls_key_file, "/etc/sluice/key.pem");
	assert_string_equal(cfg->state_dir, "/srv/sluice state");
	assert_string_equal(cfg->spool_dir, "/srv/spool # not a comment");
	assert_string_equal(cfg->user, "");
	assert_int_equal(cfg->workers, 2); /* the later one wins */
	assert_int_equal(cfg->dns_server_count, 4);
	assert_int_equal(ep_port(&cfg->dns_servers[0]), 53);
	assert_int_equal(ep_port(&cfg->dns_servers[1]), 5353);
	assert_int_equal(cfg->dns_servers[2].ss.ss_family, AF_INET6);
	assert_int_equal(ep_port(&cfg->dns_servers[2]), 53);
	assert_int_equal(ep_port(&cfg->dns_servers[3]), 5300);
	assert_true(cfg->metrics_enabled);
	assert_int_equal(ep_port(&cfg->metrics_listen), 9100);
	assert_int_equal(cfg->bare_newline, CONFIG_BARE_REJECT);
	assert_int_equal(cfg->smtpd_timeout_ms, 1500);
	assert_int_equal(cfg->dns_timeout_ms, 250);
	assert_int_equal(cfg->backend_connect_timeout_ms, 300000);
	assert_int_equal(cfg->backend_timeout_ms, 90000);
	assert_int_equal(cfg->backend_data_timeout_ms, 3600000);
	assert_int_equal(cfg->backend_idle_ms, 86400000);
	assert_int_equal(cfg->checkout_timeout_ms, 30000);
	assert_int_equal(cfg->shutdown_timeout_ms, 0);
	assert_int_equal(cfg->message_memory_max, 1024 * 1024);
	assert_int_equal(cfg->memory_limit, 2ULL * 1024 * 1024 * 1024);
	assert_int_equal(cfg->smtpd_hard_error_limit, 7);
	free(cfg);
}

static void test_defaults(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	char host[256] = "";
	assert_non_null(cfg);
	config_defaults(cfg);

	assert_int_equal(cfg->listen_count, 1);
	assert_string_equal(cfg->listen[0].text, "0.0.0.0:25");
	assert_int_equal(ep_port(&cfg->listen[0]), 25);
	assert_string_equal(cfg->backend.text, "127.0.0.1:10025");
	assert_int_equal(cfg->backend_pool_size, 8);
	assert_true(cfg->backend_xclient);
	assert_false(cfg->backend_tls);
	if (gethostname(host, sizeof host) == 0 && host[0])
		assert_string_equal(cfg->myhostname, host);
	assert_int_equal(cfg->message_size_limit, 10240000);
	assert_int_equal(cfg->max_recipients, 1000);
	assert_string_equal(cfg->tls_cert_file, "");
	assert_string_equal(cfg->tls_key_file, "");
	assert_string_equal(cfg->state_dir, "/var/lib/sluice");
	assert_string_equal(cfg->spool_dir, "/var/spool/sluice");
	assert_string_equal(cfg->user, "nobody");
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->dns_server_count, 0);
	assert_false(cfg->metrics_enabled);
	assert_int_equal(cfg->bare_newline, CONFIG_BARE_NORMALIZE);
	assert_int_equal(cfg->smtpd_timeout_ms, 300000);
	assert_int_equal(cfg->dns_timeout_ms, 5000);
	assert_int_equal(cfg->backend_connect_timeout_ms, 30000);
	assert_int_equal(cfg->backend_timeout_ms, 300000);
	assert_int_equal(cfg->backend_data_timeout_ms, 600000);
	assert_int_equal(cfg->backend_idle_ms, 240000);
	assert_int_equal(cfg->checkout_timeout_ms, 120000);
	assert_int_equal(cfg->shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->message_memory_max, 256 * 1024);
	assert_int_equal(cfg->memory_limit, 512ULL * 1024 * 1024);
	assert_int_equal(cfg->smtpd_hard_error_limit, 20);

	/* An empty file is the defaults too. */
	struct config *c2 = malloc(sizeof *c2);
	char err[256];
	assert_non_null(c2);
	assert_int_equal(load(c2, "# nothing\n\n", NULL, 0, err, sizeof err), 0);
	char *out = print_nondefault(c2);
	assert_string_equal(out, "");
	free(out);
	free(c2);
	free(cfg);
}

struct error_case {
	const char *text;
	const char *want; /* after "FILE" */
};

static const struct error_case error_cases[] = {
	{ "foo = 1\n", ":1: unknown setting 'foo'" },
	{ "# c\n\nworkers = 1\nsmtpd_timeout = 5x\n",
	  ":4: bad duration '5x' for smtpd_timeout" },
	{ "smtpd_timeout = 0\n", ":1: smtpd_timeout must be between 1ms and 30d" },
	{ "smtpd_timeout = 31d\n", ":1: smtpd_timeout must be between 1ms and 30d" },
	{ "workers = 257\n", ":1: workers must be between 0 and 256" },
	{ "workers = 99999999999\n", ":1: bad number '99999999999' for workers" },
	{ "workers = -1\n", ":1: bad number '-1' for workers" },
	{ "workers =\n", ":1: workers must not be empty" },
	{ "backend_pool_size = 0\n", ":1: backend_pool_size must be between 1 and 1024" },
	{ "max_recipients = 0\n", ":1: max_recipients must be between 1 and 100000" },
	{ "smtpd_hard_error_limit = 0\n",
	  ":1: smtpd_hard_error_limit must be between 1 and 1000" },
	{ "memory_limit = 1x\n", ":1: bad size '1x' for memory_limit" },
	{ "memory_limit = 1k\n", ":1: memory_limit must be between 64k and 1024g" },
	{ "message_size_limit = 0\n",
	  ":1: message_size_limit must be between 1 and 4g" },
	{ "backend_tls = maybe\n", ":1: bad boolean 'maybe' for backend_tls (yes or no)" },
	{ "backend_tls = Yes\n", ":1: bad boolean 'Yes' for backend_tls (yes or no)" },
	{ "bare_newline = fix\n",
	  ":1: bad value 'fix' for bare_newline (normalize or reject)" },
	{ "  listen = 1.2.3.4:25\n", ":1: continuation line without a setting" },
	{ "listen =\n", ":1: listen needs at least one endpoint" },
	{ "listen = ,\n", ":1: listen needs at least one endpoint" },
	{ "\nlisten = 1.2.3.4:25,\n  host:25\n",
	  ":2: bad endpoint 'host:25' for listen: not a numeric IPv4 address "
	  "(host names are not accepted)" },
	{ "listen = 1.2.3.4:25 1.2.3.4:25\n",
	  ":1: duplicate endpoint '1.2.3.4:25' for listen" },
	{ "listen = unix:/x\n",
	  ":1: bad endpoint 'unix:/x' for listen: unix sockets are not allowed here" },
	{ "listen = 1.1.1.1:1 1.1.1.2:1 1.1.1.3:1 1.1.1.4:1 1.1.1.5:1 1.1.1.6:1 "
	  "1.1.1.7:1 1.1.1.8:1 1.1.1.9:1 1.1.1.10:1 1.1.1.11:1 1.1.1.12:1 "
	  "1.1.1.13:1 1.1.1.14:1 1.1.1.15:1 1.1.1.16:1 1.1.1.17:1\n",
	  ":1: too many endpoints for listen (at most 16)" },
	{ "backend =\n", ":1: backend must not be empty" },
	{ "backend = 127.0.0.1\n", ":1: bad endpoint '127.0.0.1' for backend: port missing" },
	{ "metrics_listen = [::1]:x\n",
	  ":1: bad endpoint '[::1]:x' for metrics_listen: bad port" },
	{ "dns_servers = 1.2.3.4:0\n",
	  ":1: bad endpoint '1.2.3.4:0' for dns_servers: bad port" },
	{ "myhostname = mx example\n", ":1: bad host name 'mx example' for myhostname" },
	{ "myhostname =\n", ":1: myhostname must not be empty" },
	{ "spool_dir =\n", ":1: spool_dir must not be empty" },
	{ "novalue\n", ":1: expected 'name = value'" },
	{ "= 5\n", ":1: expected 'name = value'" },
	{ "tls_cert_file = /x.pem\n",
	  ": tls_cert_file and tls_key_file must be set together" },
	{ "message_memory_max = 1g\n",
	  ": message_memory_max (1073741824) exceeds memory_limit (536870912)" },
};

static void test_errors(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	char err[512], want[600];
	assert_non_null(cfg);

	for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
		const struct error_case *c = &error_cases[i];
		/* A failed load leaves the old configuration alone. */
		memset(cfg, 0x5a, sizeof *cfg);
		const char *p = write_tmp(c->text);
		int rc = config_load(cfg, p, NULL, 0, err, sizeof err);
		snprintf(want, sizeof want, "%s%s", p, c->want);
		unlink(p);
		if (rc != -1 || strcmp(err, want) != 0) {
			print_error("case %zu: rc %d err '%s', want '%s'\n", i, rc,
				    err, want);
			fail();
		}
		for (size_t k = 0; k < sizeof *cfg; k++)
			assert_int_equal(((unsigned char *)cfg)[k], 0x5a);
	}

	assert_int_equal(config_load(cfg, "/nonexistent/sluice.conf", NULL, 0, err,
				     sizeof err), -1);
	assert_string_equal(err, "/nonexistent/sluice.conf: cannot open: "
				 "No such file or directory");
	/* A short error buffer is truncated, not overrun. */
	char small[8];
	assert_int_equal(load(cfg, "foo = 1\n", NULL, 0, small, sizeof small), -1);
	assert_int_equal(strlen(small), 7);
	free(cfg);
}

static void test_overrides(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	char err[512];
	assert_non_null(cfg);

	char *o1[] = { "workers=8", "smtpd_timeout = 10s", "workers = 16",
		       "listen=127.0.0.1:2525 [::1]:2525" };
	assert_int_equal(load(cfg, "workers = 4\nsmtpd_timeout = 1m\n", o1, 4, err,
			      sizeof err), 0);
	assert_int_equal(cfg->workers, 16);
	assert_int_equal(cfg->smtpd_timeout_ms, 10000);
	assert_int_equal(cfg->listen_count, 2);

	/* An override may empty a setting set in the file. */
	char *o2[] = { "metrics_listen=" };
	assert_int_equal(load(cfg, "metrics_listen = 127.0.0.1:9100\n", o2, 1, err,
			      sizeof err), 0);
	assert_false(cfg->metrics_enabled);
	assert_string_equal(cfg->metrics_listen.text, "");

	static const struct {
		char *o;
		const char *want;
	} bad[] = {
		{ "workers=999", "-o workers=999: workers must be between 0 and 256" },
		{ "nosuch=1", "-o nosuch=1: unknown setting 'nosuch'" },
		{ "workers", "-o workers: expected name=value" },
		{ "backend=x:1", "-o backend=x:1: bad endpoint 'x:1' for backend: not a "
				 "numeric IPv4 address (host names are not accepted)" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *o[] = { "workers=1", bad[i].o };
		int rc = config_load(cfg, "/nonexistent-default-ok", o, 2, err,
				     sizeof err);
		assert_int_equal(rc, -1);
		/* The named file is missing: that error comes first. */
		assert_non_null(strstr(err, "cannot open"));
		rc = load(cfg, "", o, 2, err, sizeof err);
		assert_int_equal(rc, -1);
		if (strcmp(err, bad[i].want) != 0) {
			print_error("-o %s: got '%s', want '%s'\n", bad[i].o, err,
				    bad[i].want);
			fail();
		}
	}

	/* No file at the default path: defaults and -o only. */
	if (access(CONFIG_DEFAULT_PATH, F_OK) != 0) {
		char *o3[] = { "workers=3" };
		assert_int_equal(config_load(cfg, NULL, o3, 1, err, sizeof err), 0);
		assert_int_equal(cfg->workers, 3);
		char *o4[] = { "tls_key_file=/k" };
		assert_int_equal(config_load(cfg, NULL, o4, 1, err, sizeof err), -1);
		assert_string_equal(err, "-o: tls_cert_file and tls_key_file must "
					 "be set together");
	}
	free(cfg);
}

static void test_print_nondefault(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	struct config *back = malloc(sizeof *back);
	char err[512];
	assert_non_null(cfg);
	assert_non_null(back);

	char *o[] = { "smtpd_timeout=90s", "listen=127.0.0.1:2525 [::1]:2525",
		      "message_memory_max=1024k", "metrics_listen=127.0.0.1:9100",
		      "backend_tls=yes", "dns_timeout=1500", "memory_limit=10000000",
		      "backend_idle=1.5s", "user=", "bare_newline=reject",
		      "myhostname=mx.example" };
	assert_int_equal(load(cfg, "", o, sizeof o / sizeof o[0], err, sizeof err), 0);
	char *out = print_nondefault(cfg);
	assert_string_equal(out,
		"listen = 127.0.0.1:2525, [::1]:2525\n"
		"backend_tls = yes\n"
		"myhostname = mx.example\n"
		"user = \n"
		"metrics_listen = 127.0.0.1:9100\n"
		"bare_newline = reject\n"
		"smtpd_timeout = 90s\n"
		"dns_timeout = 25m\n"
		"backend_idle = 1500ms\n"
		"message_memory_max = 1m\n"
		"memory_limit = 10000000\n");

	/* The output is a configuration file that gives the same result. */
	assert_int_equal(load(back, out, NULL, 0, err, sizeof err), 0);
	char *out2 = print_nondefault(back);
	assert_string_equal(out, out2);
	free(out);
	free(out2);
	free(back);
	free(cfg);
}

/* ---- the table, the defaults and the docs agree ------------------------ *
 * Driven by the settings table itself, so a new setting without docs fails. */

static void test_every_setting(void **state)
{
	struct config *cfg = malloc(sizeof *cfg);
	char err[512], o[300];
	char *ov[] = { o };
	assert_non_null(cfg);

	for (size_t i = 0; i < config_setting_count(); i++) {
		if (!config_setting_default(i))
			continue;
		snprintf(o, sizeof o, "%s = %s", config_setting_name(i), config_setting_default(i));
		int rc = load(cfg, "", ov, 1, err, sizeof err);
		if (rc != 0)
			print_error("%s: %s\n", o, err);
		assert_int_equal(rc, 0);
		char *out = print_nondefault(cfg);
		if (strcmp(out, "") != 0)
			print_error("%s is not the default: %s", o, out);
		assert_string_equal(out, "");
		free(out);
	}

	/* docs/config.md has a heading and the default for each setting.
	 * Skipped when the test does not run from the source tree. */
	FILE *f = fopen("docs/config.md", "r");
	if (!f) {
		free(cfg);
		skip();
	}
	static char doc[65536];
	size_t n = fread(doc, 1, sizeof doc - 1, f);
	doc[n] = '\0';
	fclose(f);
	for (size_t i = 0; i < config_setting_count(); i++) {
		char want[300];
		snprintf(want, sizeof want, "\n### `%s`\n", config_setting_name(i));
		if (!strstr(doc, want)) {
			print_error("docs/config.md lacks %s", want);
			fail();
		}
		const char *sect = strstr(doc, want);
		if (config_setting_default(i)) {
			snprintf(want, sizeof want, "Default: `%s = %s`",
				 config_setting_name(i), config_setting_default(i));
			if (config_setting_default(i)[0] == '\0')
				snprintf(want, sizeof want, "Default: `%s =` (empty)",
					 config_setting_name(i));
			const char *d = strstr(sect, want);
			const char *next = strstr(sect + 1, "\n### ");
			if (!d || (next && d > next)) {
				print_error("docs/config.md: %s\n", want);
				fail();
			}
		}
	}
	free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_endpoints),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_sample_file),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_print_nondefault),
		cmocka_unit_test(test_every_setting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
