/*
 * test_signals: rdns_generic, helo_check and cidr lists. Table rows
 * {name, input, want}; addresses are written as text and turned into the
 * sockaddr the session would pass. The cidr tables also check errors,
 * loading from a file, and a list of thousands of networks against a
 * brute-force scan.
 */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "signals.h"

#define ERR_CAP 256

/* ---- rdns_generic ---- */

struct rdns_row {
	const char *name;
	const char *ptr;
	const char *addr;
	bool want;
};

#define V4 "203.0.113.7"
#define V6 "2001:db8:5:6::a1"

static const struct rdns_row rdns_rows[] = {
	/* the client's IPv4 address embedded */
	{"dashes", "203-0-113-7.example.net", V4, true},
	{"reversed dots", "7.113.0.203.example.net", V4, true},
	{"in order dots", "203.0.113.7.dyn.example", V4, true},
	{"ip prefix glued", "ip203-0-113-7.example.com", V4, true},
	{"mixed separators", "x203_0.113-7y.example.com", V4, true},
	{"zero padded", "host-203-000-113-007.example.com", V4, true},
	{"twelve digits", "c203000113007.example.com", V4, true},
	{"twelve digits reversed", "007113000203.example.com", V4, true},
	{"hex", "cb007107.example.com", V4, true},
	{"hex upper", "CB007107.example.com", V4, true},
	{"mapped client", "203-0-113-7.example.net", "::ffff:203.0.113.7", true},
	{"address in domain part", "mail.203-0-113-7.net", V4, true},
	{"other address", "198-51-100-9.example.net", V4, false},
	{"three octets only", "0-113-7.example.net", V4, false},
	{"octets out of order", "203-0-7-113.example.net", V4, false},
	{"octets with extra digit", "203-0-113-70.example.net", V4, false},
	{"single number", "smtp-out-42.example.org", V4, false},
	{"unknown family digits", "203-0-113-7.example.net", NULL, false},
	/* the client's IPv6 address embedded */
	{"v6 groups", "2001-db8-5-6-0-0-0-a1.example.net", V6, true},
	{"v6 compressed", "2001-db8-5-6--a1.example.net", V6, true},
	{"v6 nibble short", "20010db8000500060000000000000a1.x.net", V6, false},
	{"v6 all nibbles", "20010db80005000600000000000000a1.example.net", V6,
	 true},
	{"v6 arpa style",
	 "1.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.x.net",
	 V6, true},
	{"v6 prefix only", "2001-db8.example.net", V6, false},
	{"v6 groups other host", "2001-db8-5-6--a2.example.net", V6, false},
	/* keywords */
	{"ppp", "ppp-198-51-100-9.example.net", V4, true},
	{"dyn label", "x.dyn.example.net", V4, true},
	{"dynamic", "dynamic-1.example.net", V4, true},
	{"dsl glued digits", "dsl123.example.net", V4, true},
	{"adsl upper", "ADSL.pool.example.net", V4, true},
	{"vdsl", "a.vdsl.example.net", V4, true},
	{"xdsl", "a.xdsl.example.net", V4, true},
	{"pool", "pool-1-2.example.net", V4, true},
	{"dhcp", "dhcp-9.example.net", V4, true},
	{"cable", "a1.cable.example.net", V4, true},
	{"pppoe", "pppoe7.example.net", V4, true},
	{"dialup", "dialup.x.example.net", V4, true},
	{"dial-up split", "dial-up-7.example.net", V4, true},
	{"client", "client-7.example.net", V4, true},
	{"customer", "customer.x.example.net", V4, true},
	{"broadband", "x.broadband.example.net", V4, true},
	{"cpe", "cpe-1-2.example.net", V4, true},
	{"res", "x.socal.res.rr.com", V4, true},
	{"user", "user7.example.net", V4, true},
	{"nat", "nat-gw.x.example.net", V4, true},
	{"wireless", "wireless-a.example.net", V4, true},
	{"mobile", "mobile-7.example.net", V4, true},
	{"3g", "x.3g.example.net", V4, true},
	{"4g glued", "x4g-1.example.net", V4, true},
	{"lte", "lte.x.example.net", V4, true},
	{"host dash number", "host-77.example.net", V4, true},
	{"host glued number", "host77.example.net", V4, true},
	{"ip dash number", "ip-77.example.net", V4, true},
	{"static with digits", "static-198-51-100-9.example.net", V4, true},
	/* legitimate names */
	{"mail", "mail.example.com", V4, false},
	{"mx1", "mx1.example.net", V4, false},
	{"smtp out", "smtp-out-42.example.org", V4, false},
	{"poolside", "mail.poolside.com", V4, false},
	{"cabletron", "cabletron.com", V4, false},
	{"cabletron host", "mx.cabletron.com", V4, false},
	{"keyword in domain", "mail.mobile.de", V4, false},
	{"keyword in domain 2", "mx.pool.com", V4, false},
	/* known false positive: the keyword is in a subdomain label */
	{"keyword in subdomain", "mx.pool.ntp.org", V4, true},
	{"host alone", "host.example.com", V4, false},
	{"mailhost", "mailhost1.example.com", V4, false},
	{"ip word", "ip.example.com", V4, false},
	{"ip6 protocol", "smtp-ip6.example.org", V4, false},
	{"ipv4 word", "mx-ip4.example.org", V4, false},
	{"static word", "static.example.com", V4, false},
	{"13g not 3g", "mx13g.example.com", V4, false},
	{"trailing dot", "mail.example.com.", V4, false},
	{"trailing dot generic", "203-0-113-7.example.net.", V4, true},
	{"single label", "dsl", V4, false},
	{"empty", "", V4, false},
	{"dot only", ".", V4, false},
	{"v6 client legit", "mail.example.net", V6, false},
};

static void test_rdns_table(void **state)
{
	size_t bad = 0;

	(void)state;
	for (size_t i = 0; i < UNIT_NELEM(rdns_rows); i++) {
		const struct rdns_row *r = &rdns_rows[i];
		struct sockaddr_storage ss;
		const struct sockaddr *sa = unit_sockaddr(&ss, r->addr);
		bool got = rdns_generic(r->ptr, strlen(r->ptr), sa);

		if (got != r->want) {
			print_error("rdns row '%s' (%s, %s): got %d want %d\n",
				    r->name, r->ptr, r->addr ? r->addr : "-", got,
				    r->want);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

static void test_rdns_edges(void **state)
{
	char name[300];
	struct sockaddr_storage ss;
	const struct sockaddr *sa = unit_sockaddr(&ss, V4);

	(void)state;
	assert_false(rdns_generic(NULL, 0, sa));
	assert_true(rdns_generic("dsl.x.example.net", 17, NULL));
	/* only len bytes are read: the generic tail is out of range */
	assert_false(rdns_generic("mail.example.com.dsl.x.y", 16, sa));
	/* over 255 bytes is no DNS name */
	memset(name, 'a', sizeof name);
	memcpy(name, "dsl.", 4);
	memcpy(name + sizeof name - 4, ".net", 4);
	assert_false(rdns_generic(name, sizeof name, sa));
}

/* ---- helo_check ---- */

struct helo_row {
	const char *name;
	const char *helo;
	const char *client;
	unsigned want;
};

#define MYHOST "mx.sluice.example"
#define FOREIGN HELO_LITERAL_FOREIGN
#define NOT_FQDN HELO_NOT_FQDN
#define OURS HELO_OURS
#define LOCAL HELO_LOCALHOST
#define SYNTAX HELO_SYNTAX

static const struct helo_row helo_rows[] = {
	{"fqdn", "mail.example.com", V4, HELO_OK},
	{"fqdn trailing dot", "mail.example.com.", V4, HELO_OK},
	{"underscore", "mail_1.example.com", V4, HELO_OK},
	{"hyphen", "smtp-out.example.com", V4, HELO_OK},
	{"literal own", "[203.0.113.7]", V4, HELO_OK},
	{"literal foreign", "[198.51.100.9]", V4, FOREIGN},
	{"literal mapped client", "[203.0.113.7]", "::ffff:203.0.113.7", HELO_OK},
	{"literal v6 own", "[IPv6:2001:db8:5:6::a1]", V6, HELO_OK},
	{"literal v6 tag lower", "[ipv6:2001:db8:5:6::a1]", V6, HELO_OK},
	{"literal v6 foreign", "[IPv6:2001:db8::1]", V6, FOREIGN},
	{"literal v6 mapped", "[IPv6:::ffff:203.0.113.7]", V4, HELO_OK},
	{"literal v4 for v6 client", "[203.0.113.7]", V6, FOREIGN},
	{"literal no client", "[203.0.113.7]", NULL, FOREIGN},
	{"literal v6 without tag", "[2001:db8::1]", V6, SYNTAX},
	{"literal bad", "[203.0.113.777]", V4, SYNTAX},
	{"literal unclosed", "[203.0.113.7", V4, SYNTAX},
	{"literal empty", "[]", V4, SYNTAX},
	{"literal trailing", "[203.0.113.7]x", V4, SYNTAX},
	{"bare ipv4", "203.0.113.7", V4, NOT_FQDN},
	{"bare ipv6", "2001:db8::1", V6, NOT_FQDN | SYNTAX},
	{"no dot", "mailserver", V4, NOT_FQDN},
	{"bare tld", "com.", V4, NOT_FQDN},
	{"numeric last label", "host.123", V4, NOT_FQDN},
	{"localhost", "localhost", V4, LOCAL | NOT_FQDN},
	{"localhost upper", "LOCALHOST", V4, LOCAL | NOT_FQDN},
	{"localhost.localdomain", "localhost.localdomain", V4, LOCAL},
	{"sub.localhost", "a.localhost", V4, LOCAL},
	{"localhost in name", "localhost.example.com", V4, HELO_OK},
	{"notlocalhost", "notlocalhost", V4, NOT_FQDN},
	{"ours", MYHOST, V4, OURS},
	{"ours case", "MX.Sluice.Example", V4, OURS},
	{"ours trailing dot", MYHOST ".", V4, OURS},
	{"ours prefix only", "mx.sluice.example.org", V4, HELO_OK},
	{"space", "mail example.com", V4, SYNTAX},
	{"slash", "mail/x.example.com", V4, SYNTAX},
	{"eight bit", "m\xc3\xa9l.example.com", V4, SYNTAX},
	{"empty label", "mail..example.com", V4, SYNTAX},
	{"leading dot", ".example.com", V4, SYNTAX},
	{"dot only", ".", V4, SYNTAX | NOT_FQDN},
	{"empty", "", V4, SYNTAX | NOT_FQDN},
	{"label 64", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
	 V4, SYNTAX},
	{"label 63", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
	 V4, HELO_OK},
	{"syntax and no dot", "bad!name", V4, SYNTAX | NOT_FQDN},
};

static void test_helo_table(void **state)
{
	size_t bad = 0;

	(void)state;
	for (size_t i = 0; i < UNIT_NELEM(helo_rows); i++) {
		const struct helo_row *r = &helo_rows[i];
		struct sockaddr_storage ss;
		const struct sockaddr *sa = r->client ? unit_sockaddr(&ss, r->client) : NULL;
		unsigned got = helo_check(r->helo, strlen(r->helo), sa, MYHOST);

		if (got != r->want) {
			print_error("helo row '%s' (%s): got %#x want %#x\n",
				    r->name, r->helo, got, r->want);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

static void test_helo_edges(void **state)
{
	char big[300];
	struct sockaddr_storage ss;
	const struct sockaddr *sa = unit_sockaddr(&ss, V4);

	(void)state;
	/* no myhostname: nothing is ours */
	assert_int_equal(helo_check(UNIT_BYTES(MYHOST), sa, NULL), HELO_OK);
	assert_int_equal(helo_check(UNIT_BYTES(MYHOST), sa, ""), HELO_OK);
	assert_int_equal(helo_check(UNIT_BYTES(MYHOST), sa, MYHOST "."), OURS);
	/* a NUL inside is a character no host name has */
	assert_int_equal(helo_check(UNIT_BYTES("a\0b.example.com"), sa, MYHOST),
			 SYNTAX);
	assert_int_equal(helo_check(UNIT_BYTES("[203.0.113.7\0]"), sa, MYHOST),
			 SYNTAX);
	/* only len bytes are read */
	assert_int_equal(helo_check("mail.example.com localhost", 16, sa, MYHOST),
			 HELO_OK);
	/* longer than a DNS name */
	memset(big, 'a', sizeof big);
	for (size_t i = 50; i < sizeof big; i += 50)
		big[i] = '.';
	assert_int_equal(helo_check(big, sizeof big, sa, MYHOST), SYNTAX);
	assert_int_equal(helo_check(NULL, 0, sa, MYHOST), SYNTAX | NOT_FQDN);
}

/* ---- cidr lists ---- */

struct cidr_row {
	const char *name;
	const char *list;
	const char *addr;
	bool want;
};

#define LIST "# test list\n"                   \
	     "192.0.2.0/24\n"                  \
	     "  198.51.100.7  # one host\n"     \
	     "\n"                               \
	     "10.0.0.0/8\n"                    \
	     "\t2001:db8::/32\r\n"              \
	     "2001:db8:ffff::1\n"               \
	     "::ffff:203.0.113.0/120\n"

static const struct cidr_row cidr_rows[] = {
	{"net first", LIST, "192.0.2.0", true},
	{"net middle", LIST, "192.0.2.77", true},
	{"net last", LIST, "192.0.2.255", true},
	{"net below", LIST, "192.0.1.255", false},
	{"net above", LIST, "192.0.3.0", false},
	{"host", LIST, "198.51.100.7", true},
	{"host neighbour", LIST, "198.51.100.8", false},
	{"host neighbour below", LIST, "198.51.100.6", false},
	{"slash 8", LIST, "10.255.255.255", true},
	{"slash 8 above", LIST, "11.0.0.0", false},
	{"v6 net", LIST, "2001:db8:1234::99", true},
	{"v6 net top", LIST, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
	{"v6 outside", LIST, "2001:db9::", false},
	{"v6 below", LIST, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false},
	{"mapped client v4 entry", LIST, "::ffff:192.0.2.9", true},
	{"mapped client miss", LIST, "::ffff:192.0.3.9", false},
	{"mapped entry v4 client", LIST, "203.0.113.200", true},
	{"mapped entry v4 miss", LIST, "203.0.114.1", false},
	{"v4 zero", LIST, "0.0.0.0", false},
	{"v4 broadcast", LIST, "255.255.255.255", false},
	{"empty list", "", "192.0.2.1", false},
	{"comments only", "# nothing\n   # here\n", "192.0.2.1", false},
	{"all v4", "0.0.0.0/0", "255.255.255.255", true},
	{"all v4 not v6", "0.0.0.0/0", "2001:db8::1", false},
	{"all v6", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
	{"all v6 not v4", "::/0", "192.0.2.1", false},
	{"all v6 not mapped", "::/0", "::ffff:192.0.2.1", false},
	{"v6 slash 128", "2001:db8::1/128", "2001:db8::1", true},
	{"v6 slash 128 miss", "2001:db8::1/128", "2001:db8::2", false},
	{"v6 slash 65", "2001:db8::/65", "2001:db8::7fff:ffff:ffff:ffff", true},
	{"v6 slash 65 miss", "2001:db8::/65", "2001:db8::8000:0:0:0", false},
	{"v6 slash 63", "2001:db8::/63", "2001:db8:0:1:ffff::", true},
	{"overlap merged", "10.0.0.0/16\n10.0.1.0/24\n10.0.0.0/8\n", "10.200.0.1",
	 true},
	{"adjacent merged", "10.0.0.0/25\n10.0.0.128/25\n", "10.0.0.128", true},
	{"adjacent merged miss", "10.0.0.0/25\n10.0.0.128/25\n", "10.0.1.0", false},
	{"no newline at end", "192.0.2.1", "192.0.2.1", true},
	{"crlf", "192.0.2.1\r\n192.0.2.2\r\n", "192.0.2.2", true},
};

static void test_cidr_table(void **state)
{
	size_t bad = 0;

	(void)state;
	for (size_t i = 0; i < UNIT_NELEM(cidr_rows); i++) {
		const struct cidr_row *r = &cidr_rows[i];
		char err[ERR_CAP] = "";
		struct cidr_list *l = cidr_parse(r->list, strlen(r->list), err,
						 sizeof err);
		struct sockaddr_storage ss;
		bool got;

		if (!l)
			fail_msg("cidr row '%s': parse failed: %s", r->name, err);
		got = cidr_match(l, unit_sockaddr(&ss, r->addr));
		cidr_free(l);
		if (got != r->want) {
			print_error("cidr row '%s' (%s): got %d want %d\n",
				    r->name, r->addr, got, r->want);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

struct cidr_err_row {
	const char *name;
	const char *list;
	size_t len;
	const char *want; /* the whole error message */
};

#define CERR(nm, list, want) { nm, UNIT_BYTES(list), want }

static const struct cidr_err_row cidr_err_rows[] = {
	CERR("word", "example.com", "1: bad network 'example.com'"),
	CERR("second line", "192.0.2.0/24\nnope\n", "2: bad network 'nope'"),
	CERR("after comments", "# a\n\n# b\n1.2.3\n", "4: bad network '1.2.3'"),
	CERR("octet", "192.0.2.256", "1: bad network '192.0.2.256'"),
	CERR("v4 prefix 33", "192.0.2.0/33", "1: prefix out of range"),
	CERR("v6 prefix 129", "2001:db8::/129", "1: prefix out of range"),
	CERR("prefix long", "192.0.2.0/0024", "1: prefix out of range"),
	CERR("prefix empty", "192.0.2.0/", "1: bad network '192.0.2.0/'"),
	CERR("prefix sign", "192.0.2.0/+24", "1: bad network '192.0.2.0/+24'"),
	CERR("prefix word", "192.0.2.0/ab", "1: bad network '192.0.2.0/ab'"),
	CERR("two slashes", "192.0.2.0/24/8", "1: bad network '192.0.2.0/24/8'"),
	CERR("two words", "192.0.2.0/24 OK", "1: bad network '192.0.2.0/24 OK'"),
	CERR("host bits", "192.0.2.1/24",
	     "1: bad network '192.0.2.1/24': host bits set (network is 192.0.2.0/24)"),
	CERR("v6 host bits", "2001:db8::1/64",
	     "1: bad network '2001:db8::1/64': host bits set (network is "
	     "2001:db8::/64)"),
	CERR("nul byte", "192.0.2.1\0", "1: bad network '192.0.2.1?'"),
	CERR("zone id", "fe80::1%eth0", "1: bad network 'fe80::1%eth0'"),
	CERR("leading slash", "/24", "1: bad network '/24'"),
};

static void test_cidr_errors(void **state)
{
	size_t bad = 0;

	(void)state;
	for (size_t i = 0; i < UNIT_NELEM(cidr_err_rows); i++) {
		const struct cidr_err_row *r = &cidr_err_rows[i];
		char err[ERR_CAP] = "";
		struct cidr_list *l = cidr_parse(r->list, r->len, err, sizeof err);

		if (l) {
			cidr_free(l);
			print_error("cidr error row '%s': parsed\n", r->name);
			bad++;
		} else if (strcmp(err, r->want) != 0) {
			print_error("cidr error row '%s': got '%s' want '%s'\n",
				    r->name, err, r->want);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

static void test_cidr_count(void **state)
{
	char err[ERR_CAP] = "";
	struct cidr_list *l = cidr_parse(UNIT_BYTES(LIST), err, sizeof err);

	(void)state;
	assert_non_null(l);
	assert_int_equal(cidr_count(l), 6);
	cidr_free(l);
	/* duplicates count as written and still match */
	l = cidr_parse(UNIT_BYTES("192.0.2.1\n192.0.2.1\n"), err, sizeof err);
	assert_non_null(l);
	assert_int_equal(cidr_count(l), 2);
	cidr_free(l);
	assert_int_equal(cidr_count(NULL), 0);
	cidr_free(NULL);
	assert_false(cidr_match(NULL, NULL));
	/* a NULL err buffer is allowed */
	assert_null(cidr_parse(UNIT_BYTES("x"), NULL, 0));
}

static void test_cidr_load(void **state)
{
	char path[] = "/tmp/test_signals_XXXXXX";
	char err[ERR_CAP] = "", want[ERR_CAP + 64];
	struct sockaddr_storage ss;
	struct cidr_list *l;
	FILE *f;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(LIST, f);
	assert_int_equal(fclose(f), 0);

	l = cidr_load(path, err, sizeof err);
	assert_non_null(l);
	assert_int_equal(cidr_count(l), 6);
	assert_true(cidr_match(l, unit_sockaddr(&ss, "192.0.2.9")));
	assert_true(cidr_match(l, unit_sockaddr(&ss, "2001:db8::5")));
	assert_false(cidr_match(l, unit_sockaddr(&ss, "192.0.3.9")));
	cidr_free(l);

	/* a parse error names the file and the line */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("192.0.2.0/24\n192.0.2.1/24\n", f);
	assert_int_equal(fclose(f), 0);
	assert_null(cidr_load(path, err, sizeof err));
	snprintf(want, sizeof want,
		 "%s:2: bad network '192.0.2.1/24': host bits set (network is "
		 "192.0.2.0/24)",
		 path);
	assert_string_equal(err, want);

	assert_int_equal(unlink(path), 0);
	assert_null(cidr_load(path, err, sizeof err));
	snprintf(want, sizeof want, "%s: No such file or directory", path);
	assert_string_equal(err, want);
}

/* Thousands of networks of mixed prefixes against a brute-force scan. */
#define BIG_NETS 5000
#define BIG_PROBES 20000

struct big_net {
	uint32_t net, mask;
};

static uint32_t big_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void test_cidr_big(void **state)
{
	static struct big_net nets[BIG_NETS];
	size_t cap = (size_t)BIG_NETS * 24, o = 0;
	char *text = malloc(cap), err[ERR_CAP] = "";
	struct cidr_list *l;
	uint32_t seed = 2463534242u;

	(void)state;
	assert_non_null(text);
	for (size_t i = 0; i < BIG_NETS; i++) {
		unsigned prefix = 8 + big_rand(&seed) % 25; /* /8 .. /32 */
		uint32_t mask = prefix == 32 ? UINT32_MAX : ~(UINT32_MAX >> prefix);
		uint32_t net = big_rand(&seed) & mask;

		nets[i].net = net;
		nets[i].mask = mask;
		o += (size_t)snprintf(text + o, cap - o, "%u.%u.%u.%u/%u\n",
				      net >> 24, (net >> 16) & 0xff,
				      (net >> 8) & 0xff, net & 0xff, prefix);
	}
	l = cidr_parse(text, o, err, sizeof err);
	free(text);
	if (!l)
		fail_msg("big list: %s", err);
	assert_int_equal(cidr_count(l), BIG_NETS);
	for (size_t p = 0; p < BIG_PROBES; p++) {
		/* half the probes inside a listed network, half anywhere */
		uint32_t a = big_rand(&seed);
		bool want = false;
		struct sockaddr_in sin = {.sin_family = AF_INET};

		if (p % 2 == 0) {
			const struct big_net *n = &nets[big_rand(&seed) % BIG_NETS];
			a = n->net | (a & ~n->mask);
		}
		for (size_t i = 0; i < BIG_NETS && !want; i++)
			want = (a & nets[i].mask) == nets[i].net;
		sin.sin_addr.s_addr = htonl(a);
		if (cidr_match(l, (const struct sockaddr *)&sin) != want)
			fail_msg("big list: %08x got %d want %d", a, !want, want);
	}
	cidr_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rdns_table),
		cmocka_unit_test(test_rdns_edges),
		cmocka_unit_test(test_helo_table),
		cmocka_unit_test(test_helo_edges),
		cmocka_unit_test(test_cidr_table),
		cmocka_unit_test(test_cidr_errors),
		cmocka_unit_test(test_cidr_count),
		cmocka_unit_test(test_cidr_load),
		cmocka_unit_test(test_cidr_big),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
