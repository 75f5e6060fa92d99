/*
 * config: reads sluice's settings from a Postfix main.cf-style file and
 * "-o name=value" overrides into a struct config.
 *
 * Exports config_defaults, config_load, config_print_nondefault and the
 * value parsers config_parse_duration_ms, config_parse_size and
 * config_parse_endpoint (shared with the tests).
 *
 * Everything about a setting (its name, type, place in struct config,
 * default as text, allowed range, one-line doc) lives in one table,
 * config_settings[]. Defaults are applied by parsing the default text
 * through the same code as the file, and config_print_nondefault formats
 * from the same table, so parsing, defaults and output cannot drift.
 * docs/config.md is written from this table; keep the two in step.
 * man/sluice.conf.5 and contrib/sluice.conf are generated from it by
 * tools/gendoc.c (`make man`; scripts/check-docs.sh fails when stale).
 *
 * File syntax, as in Postfix main.cf: "name = value"; a line whose first
 * non-blank character is '#' is a comment; blank lines and comments are
 * skipped; a line starting with white space continues the previous logical
 * line (joined with one space), even across comments. '#' later in a line
 * is part of the value. A later setting overrides an earlier one; -o
 * overrides come last.
 *
 * Errors carry their place: "FILE:LINE: what" (LINE of the logical line's
 * first line) or "-o name=value: what". config_load works on a private copy
 * and only writes *cfg on success, so a failed reload leaves the running
 * configuration untouched.
 *
 * Only start-up code calls this module (it does blocking file I/O).
 * Rejected: host names in endpoints (they would need DNS at start-up and
 * make the bound address depend on it).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "dnsbl.h"
#include "signals.h"

enum config_type {
	CT_ENDPOINT_LIST,
	CT_ENDPOINT,
	CT_UINT,
	CT_BOOL,
	CT_STRING,
	CT_SIZE,
	CT_DURATION,
	CT_BARE_NEWLINE,
	CT_STORE,
};

/* Setting flags. */
#define CF_EMPTY 0x01    /* an empty value is allowed */
#define CF_UNIX 0x02     /* endpoint may be unix:/path */
#define CF_PORT53 0x04   /* endpoint port optional, defaults to 53 */
#define CF_ENABLES 0x08  /* endpoint: bool at aux = "value not empty" */
#define CF_HOSTNAME 0x10 /* string is a host name */
#define CF_DNSBL 0x20    /* string is postscreen dnsbl_sites syntax */

struct config_setting {
	const char *name;
	enum config_type type;
	unsigned flags;
	size_t off;
	size_t aux; /* string: field size; list: offset of the count;
		       CF_ENABLES: offset of the bool */
	size_t cap; /* list: capacity */
	long long min, max;
	const char *def; /* NULL: computed by config_defaults */
	const char *doc;
};

#define OFF(f) offsetof(struct config, f)
#define FSIZE(f) sizeof(((struct config *)0)->f)

#define SECOND 1000LL
#define MINUTE (60 * SECOND)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)
#define KB 1024LL
#define MB (1024 * KB)
#define GB (1024 * MB)

#define S_LIST(n, fl, f, cnt, d, doc)                                          \
	{ #n, CT_ENDPOINT_LIST, fl, OFF(f), OFF(cnt),                          \
	  FSIZE(f) / sizeof(struct endpoint), 0, 0, d, doc }
#define S_EP(n, fl, aux, d, doc) { #n, CT_ENDPOINT, fl, OFF(n), aux, 0, 0, 0, d, doc }
#define S_UINT(n, lo, hi, d, doc) { #n, CT_UINT, 0, OFF(n), 0, 0, lo, hi, d, doc }
#define S_BOOL(n, d, doc) { #n, CT_BOOL, 0, OFF(n), 0, 0, 0, 1, d, doc }
#define S_STR(n, fl, d, doc) { #n, CT_STRING, fl, OFF(n), FSIZE(n), 0, 0, 0, d, doc }
#define S_SIZE(n, lo, hi, d, doc) { #n, CT_SIZE, 0, OFF(n), 0, 0, lo, hi, d, doc }
#define S_DUR(n, lo, hi, d, doc) { #n, CT_DURATION, 0, OFF(n##_ms), 0, 0, lo, hi, d, doc }

static const struct config_setting config_settings[] = {
	S_LIST(listen, 0, listen, listen_count, "0.0.0.0:25",
	       "Addresses to accept clients on"),
	S_LIST(proxy_protocol_listen, CF_EMPTY, proxy_protocol_listen,
	       proxy_protocol_listen_count, "",
	       "Addresses of listen that expect a PROXY protocol header (v1 or v2) first; empty: none"),
	S_STR(proxy_trusted_networks, CF_EMPTY, "127.0.0.0/8 ::1",
	      "Networks allowed to send a PROXY header; others are closed unanswered"),
	S_DUR(proxy_timeout, 1, 5 * MINUTE, "5s",
	      "Time allowed for the PROXY header, before anything else happens"),
	S_EP(backend, CF_UNIX, 0, "127.0.0.1:10025",
	     "The mail server: host:port or unix:/path"),
	S_UINT(backend_pool_size, 1, 1024, "8",
	       "Persistent backend connections per worker"),
	S_BOOL(backend_xclient, "yes",
	       "Send XCLIENT with the client's address, name and HELO"),
	S_BOOL(backend_tls, "no", "Use STARTTLS toward the backend"),
	S_BOOL(backend_chunking, "yes",
	       "Send each message as one BDAT when the backend offers CHUNKING (one round trip, not two)"),
	S_STR(myhostname, CF_HOSTNAME, NULL,
	      "Name in the greeting and EHLO (default: the system host name)"),
	S_SIZE(message_size_limit, 1, 4 * GB, "10240000",
	       "Largest message accepted, in bytes"),
	S_UINT(max_recipients, 1, 100000, "1000",
	       "Recipients per transaction"),
	S_STR(tls_cert_file, CF_EMPTY, "",
	      "PEM certificate chain for STARTTLS; empty: no STARTTLS"),
	S_STR(tls_key_file, CF_EMPTY, "", "PEM private key for tls_cert_file"),
	S_STR(state_dir, 0, "/var/lib/sluice",
	      "Directory for the reputation store"),
	S_STR(spool_dir, 0, "/var/spool/sluice",
	      "Directory for messages spilled to disk"),
	S_STR(user, CF_EMPTY, "nobody",
	      "User the workers run as; empty: do not change user"),
	S_UINT(workers, 0, 256, "0", "Worker processes; 0: one per core"),
	S_LIST(dns_servers, CF_EMPTY | CF_PORT53, dns_servers, dns_server_count,
	       "", "DNS servers (port optional, 53); empty: /etc/resolv.conf"),
	S_EP(metrics_listen, CF_EMPTY | CF_ENABLES, OFF(metrics_enabled), "",
	     "Address for the Prometheus /metrics page; empty: off"),
	{ "bare_newline", CT_BARE_NEWLINE, 0, OFF(bare_newline), 0, 0, 0, 0,
	  "normalize",
	  "Bare CR or LF from clients: normalize (to CRLF) or reject" },
	S_DUR(smtpd_timeout, 1, 30 * DAY, "300s",
	      "Client idle time allowed per command"),
	S_DUR(session_park_delay, 0, 30 * DAY, "1s",
	      "Idle time before a session gives up its buffers; 0: never"),
	S_DUR(dns_timeout, 1, 30 * DAY, "5s", "Time allowed per DNS query"),
	S_DUR(backend_connect_timeout, 1, 30 * DAY, "30s",
	      "Time allowed to connect to the backend"),
	S_DUR(backend_timeout, 1, 30 * DAY, "300s",
	      "Time allowed per backend reply"),
	S_DUR(backend_data_timeout, 1, 30 * DAY, "600s",
	      "Time allowed for the backend's reply to end-of-data"),
	S_DUR(backend_idle, 1, 30 * DAY, "240s",
	      "Idle backend connections are closed after this"),
	S_DUR(checkout_timeout, 1, 30 * DAY, "120s",
	      "Longest wait for a free backend connection"),
	S_BOOL(fast_lane, "yes",
	       "Relay the envelope of clients that keep up live on one backend connection"),
	S_DUR(fast_lane_gap, 1, 1 * MINUTE, "250ms",
	      "A fast lane waits this long at most for each client command (one round trip included)"),
	S_DUR(fast_lane_body_wait, 1, 10 * MINUTE, "60s",
	      "Longest wait on a fast lane for a message body; keep well inside the server's smtpd_timeout"),
	S_UINT(fast_lane_share, 0, 100, "75",
	       "Percent of backend_pool_size that fast lanes may hold (at least one when above 0)"),
	S_DUR(shutdown_timeout, 0, 30 * DAY, "30s",
	      "Time sessions get to finish on SIGTERM"),
	S_SIZE(message_memory_max, 0, 1 * GB, "256k",
	       "Message bytes kept in memory before spilling to disk"),
	S_SIZE(memory_limit, 64 * KB, 1024 * GB, "512m",
	       "Message bytes held in memory per worker"),
	S_UINT(smtpd_hard_error_limit, 1, 1000, "20",
	       "Errors per session before it is disconnected"),
	S_UINT(client_connection_limit, 1, 1000000, "50",
	       "Sessions from one client address at once, per worker"),
	S_UINT(session_limit, 1, 10000000, "10000",
	       "Sessions at once, per worker"),
	S_UINT(command_limit, 1, 100000000, "10000",
	       "Commands in one session"),
	S_UINT(tls_session_rate_limit, 0, 1000000, "0",
	       "New TLS sessions per client address per minute; 0: no limit"),
	S_STR(dnsbl_sites, CF_EMPTY | CF_DNSBL, "",
	      "DNS block and allow lists, postscreen syntax: site[=filter][*weight], ..."),
	S_DUR(greet_wait, 0, 5 * MINUTE, "6s",
	      "Wait before the greeting for clients without a pass; talkers are flagged"),
	S_UINT(shape_threshold, 1, 1000000, "3",
	       "Score at which a session is shaped"),
	S_UINT(reject_threshold, 0, 1000000, "0",
	       "Score at which a client gets 554 5.7.1 after its greeting; 0: never"),
	S_UINT(shape_rate, 1, 1000000, "5",
	       "Bytes per second, each way, for a shaped session"),
	S_DUR(shape_tick, 0, 5 * SECOND, "0",
	      "How often a shaped session's bytes move; 0: one byte at a time below 10 B/s, else every 100 ms"),
	S_DUR(shape_time, 0, 1 * DAY, "120s",
	      "Longest total time one session is held back by shaping"),
	S_DUR(shape_final_hold, 0, 150 * SECOND, "120s",
	      "Longest silent wait before a shaped session's end-of-data reply"),
	S_DUR(pass_ttl, 0, 365 * DAY, "1d",
	      "A client that passed is not held or shaped again for this long"),
	S_DUR(reputation_halflife, 1, 365 * DAY, "7d",
	      "Half-life of local reputation evidence"),
	{ "store", CT_STORE, 0, OFF(store), 0, 0, 0, 0, "lmdb",
	  "Where reputation and passes live: lmdb (this machine) or redis (shared)" },
	S_EP(redis_server, CF_UNIX, 0, "127.0.0.1:6379",
	     "Redis for store = redis: host:port or unix:/path"),
	S_DUR(redis_timeout, 1, 10 * SECOND, "200ms",
	      "Longest wait for one Redis look-up before the default classification"),
	S_STR(redis_prefix, CF_EMPTY, "sluice:",
	      "Prefix of every Redis key sluice writes"),
	S_STR(cidr_allow_file, CF_EMPTY, "",
	      "File of networks never shaped; empty: none"),
	S_STR(cidr_deny_file, CF_EMPTY, "",
	      "File of networks always shaped (weight_deny); empty: none"),
	S_UINT(weight_ptr_missing, 0, 1000, "1", "Score for a client without PTR"),
	S_UINT(weight_ptr_unconfirmed, 0, 1000, "1",
	       "Score for a PTR whose name does not resolve back to the client"),
	S_UINT(weight_ptr_generic, 0, 1000, "1",
	       "Score for a generic or dynamic-looking PTR name"),
	S_UINT(weight_pregreet, 0, 1000, "3",
	       "Score for talking before the greeting"),
	S_UINT(weight_helo, 0, 1000, "1",
	       "Score for a bad HELO (foreign literal, not a FQDN, our name, localhost)"),
	S_UINT(weight_pipelining, 0, 1000, "3",
	       "Score for commands pipelined without PIPELINING"),
	S_UINT(weight_bare_newline, 0, 1000, "2", "Score for bare LF or CR"),
	S_UINT(weight_non_smtp, 0, 1000, "3",
	       "Score for HTTP or other non-SMTP commands"),
	S_UINT(weight_errors, 0, 1000, "1",
	       "Score for a session with several protocol errors"),
	S_UINT(weight_deny, 0, 1000000, "100",
	       "Score for a client in cidr_deny_file"),
	S_UINT(weight_reputation, 0, 1000, "3",
	       "Score for the worst local reputation (scaled down for better ones)"),
	S_UINT(weight_network, 0, 1000, "2",
	       "Score for a network whose distinct addresses earned bad outcomes"),
	S_UINT(weight_content, 0, 1000, "3",
	       "Score per content refusal (5.7.x at end of data) still counted"),
	S_UINT(network_min_addresses, 1, 1000000, "5",
	       "Distinct addresses with bad outcomes before their network counts"),
	S_UINT(network_bad_share, 0, 100000, "10",
	       "Those addresses as a percentage of the network's good ones, at least"),
	S_UINT(ipv4_network_prefix, 8, 32, "24",
	       "An IPv4 client's network for reputation: its /N"),
	S_UINT(ipv6_client_prefix, 16, 128, "64",
	       "An IPv6 client is its /N: for reputation, passes and per-client limits"),
	S_UINT(ipv6_network_prefix, 8, 128, "48",
	       "An IPv6 client's network for reputation: its /N"),
	S_UINT(harvest_share, 1, 100, "50",
	       "Percent of a session's recipients refused with 5.1.x that is harvesting"),
};

#define N_SETTINGS (sizeof config_settings / sizeof config_settings[0])

size_t config_setting_count(void)
{
	return N_SETTINGS;
}

const char *config_setting_name(size_t i)
{
	return i < N_SETTINGS ? config_settings[i].name : NULL;
}

const char *config_setting_default(size_t i)
{
	return i < N_SETTINGS ? config_settings[i].def : NULL;
}

/* ---- value parsers (pure) ---------------------------------------------- */

int config_parse_duration_ms(const char *s, long *ms)
{
	static const struct {
		const char *unit;
		unsigned long long ms;
	} units[] = { { "", SECOND }, { "ms", 1 },	  { "s", SECOND },
		      { "m", MINUTE }, { "h", HOUR }, { "d", DAY } };
	unsigned long long ip = 0, frac = 0, scale = 1;
	bool nonzero = false;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		/* Any duration this large is a typo; stop before overflow. */
		if (ip > 1000000000000ULL)
			return -1;
		ip = ip * 10 + (unsigned)(*p - '0');
		nonzero |= *p != '0';
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		for (; isdigit((unsigned char)*p); p++) {
			nonzero |= *p != '0';
			/* Digits past a nanosecond of a day change nothing. */
			if (scale < 1000000000ULL) {
				frac = frac * 10 + (unsigned)(*p - '0');
				scale *= 10;
			}
		}
	}
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(p, units[i].unit) != 0)
			continue;
		unsigned long long u = units[i].ms;
		if (ip > (unsigned long long)LONG_MAX / u)
			return -1;
		unsigned long long v = ip * u + (frac * u + scale / 2) / scale;
		if (v > (unsigned long long)LONG_MAX)
			return -1;
		/* "0.1ms" would silently become 0: refuse rather than guess. */
		if (v == 0 && nonzero)
			return -1;
		*ms = (long)v;
		return 0;
	}
	return -1;
}

int config_parse_size(const char *s, unsigned long long *out)
{
	unsigned long long v = 0, mult = 1;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (ULLONG_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	switch (*p) {
	case '\0':
		break;
	case 'k': case 'K':
		mult = KB;
		p++;
		break;
	case 'm': case 'M':
		mult = MB;
		p++;
		break;
	case 'g': case 'G':
		mult = GB;
		p++;
		break;
	default:
		return -1;
	}
	if (*p != '\0' || v > ULLONG_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

static int config_parse_uint(const char *s, unsigned long long max,
			     unsigned long long *out)
{
	unsigned long long v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		v = v * 10 + (unsigned)(*s - '0');
		if (v > max)
			return -1;
	}
	if (*s)
		return -1;
	*out = v;
	return 0;
}

static int config_parse_port(const char *s, in_port_t *port)
{
	unsigned long long v;

	if (config_parse_uint(s, 65535, &v) != 0 || v == 0)
		return -1;
	*port = htons((in_port_t)v);
	return 0;
}

/* Parses one endpoint per flags (CF_UNIX, CF_PORT53); on error sets *why. */
static int config_endpoint(const char *s, unsigned flags, struct endpoint *ep,
			   const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port = NULL;
	size_t n = strlen(s);

	memset(ep, 0, sizeof *ep);
	if (n == 0) {
		*why = "empty";
		return -1;
	}
	if (n >= sizeof ep->text) {
		*why = "too long";
		return -1;
	}
	memcpy(ep->text, s, n + 1);

	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un *sa_un = (struct sockaddr_un *)&ep->ss;
		const char *path = s + 5;
		size_t plen = strlen(path);
		if (!(flags & CF_UNIX)) {
			*why = "unix sockets are not allowed here";
			return -1;
		}
		if (plen == 0) {
			*why = "empty socket path";
			return -1;
		}
		if (plen >= sizeof sa_un->sun_path) {
			*why = "socket path too long";
			return -1;
		}
		sa_un->sun_family = AF_UNIX;
		memcpy(sa_un->sun_path, path, plen + 1);
		ep->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
		return 0;
	}

	struct sockaddr_in *sin = (struct sockaddr_in *)&ep->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ep->ss;
	bool v6;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (size_t)(close - s - 1) >= sizeof host) {
			*why = "unbalanced '[' or address too long";
			return -1;
		}
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0') {
			*why = "expected ':port' after ']'";
			return -1;
		}
		v6 = true;
	} else {
		const char *colon = strchr(s, ':');
		if ((flags & CF_PORT53) && colon && strchr(colon + 1, ':')) {
			/* A bare IPv6 address is unambiguous where the port
			 * is optional. */
			snprintf(host, sizeof host, "%s", s);
			v6 = true;
		} else {
			if (colon && strchr(colon + 1, ':')) {
				*why = "IPv6 addresses need brackets: [addr]:port";
				return -1;
			}
			size_t hlen = colon ? (size_t)(colon - s) : n;
			if (hlen >= sizeof host) {
				*why = "not a numeric IPv4 address";
				return -1;
			}
			memcpy(host, s, hlen);
			host[hlen] = '\0';
			port = colon ? colon + 1 : NULL;
			v6 = false;
		}
	}

	if (v6) {
		sin6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*why = "not a numeric IPv6 address";
			return -1;
		}
		ep->len = sizeof *sin6;
	} else {
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			*why = "not a numeric IPv4 address (host names are not accepted)";
			return -1;
		}
		ep->len = sizeof *sin;
	}

	in_port_t p;
	if (!port) {
		if (!(flags & CF_PORT53)) {
			*why = "port missing";
			return -1;
		}
		p = htons(53);
	} else if (config_parse_port(port, &p) != 0) {
		*why = "bad port";
		return -1;
	}
	if (v6)
		sin6->sin6_port = p;
	else
		sin->sin_port = p;
	return 0;
}

int config_parse_endpoint(const char *s, struct endpoint *ep)
{
	const char *why;

	if (!s)
		return -1;
	return config_endpoint(s, CF_UNIX, ep, &why);
}

/* ---- formatting -------------------------------------------------------- */

static void config_format_duration(long ms, char *buf, size_t cap)
{
	static const struct {
		long long ms;
		const char *unit;
	} units[] = { { DAY, "d" }, { HOUR, "h" }, { MINUTE, "m" },
		      { SECOND, "s" } };

	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (ms != 0 && ms % units[i].ms == 0) {
			snprintf(buf, cap, "%ld%s", (long)(ms / units[i].ms),
				 units[i].unit);
			return;
		}
	}
	snprintf(buf, cap, ms == 0 ? "0s" : "%ldms", ms);
}

static void config_format_size(unsigned long long v, char *buf, size_t cap)
{
	static const struct {
		unsigned long long mult;
		const char *unit;
	} units[] = { { GB, "g" }, { MB, "m" }, { KB, "k" } };

	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (v != 0 && v % units[i].mult == 0) {
			snprintf(buf, cap, "%llu%s", v / units[i].mult,
				 units[i].unit);
			return;
		}
	}
	snprintf(buf, cap, "%llu", v);
}

/* The value of s in cfg, as text that parses back to the same value. */
static void config_format(const struct config *cfg,
			  const struct config_setting *s, char *buf, size_t cap)
{
	const char *base = (const char *)cfg;
	const void *field = base + s->off;

	buf[0] = '\0';
	switch (s->type) {
	case CT_ENDPOINT_LIST: {
		const struct endpoint *eps = field;
		size_t n = *(const size_t *)(const void *)(base + s->aux), used = 0;
		for (size_t i = 0; i < n && used < cap; i++) {
			int w = snprintf(buf + used, cap - used, "%s%s",
					 i ? ", " : "", eps[i].text);
			if (w < 0)
				break;
			used += (size_t)w;
		}
		break;
	}
	case CT_ENDPOINT:
		snprintf(buf, cap, "%s", ((const struct endpoint *)field)->text);
		break;
	case CT_UINT:
		snprintf(buf, cap, "%u", *(const unsigned *)field);
		break;
	case CT_BOOL:
		snprintf(buf, cap, "%s", *(const bool *)field ? "yes" : "no");
		break;
	case CT_STRING:
		snprintf(buf, cap, "%s", (const char *)field);
		break;
	case CT_SIZE:
		config_format_size(*(const unsigned long long *)field, buf, cap);
		break;
	case CT_DURATION:
		config_format_duration(*(const long *)field, buf, cap);
		break;
	case CT_BARE_NEWLINE:
		snprintf(buf, cap, "%s",
			 *(const enum config_bare_newline *)field == CONFIG_BARE_REJECT
				 ? "reject" : "normalize");
		break;
	case CT_STORE:
		snprintf(buf, cap, "%s",
			 *(const enum config_store *)field == CONFIG_STORE_REDIS
				 ? "redis" : "lmdb");
		break;
	}
}

static void config_format_limit(const struct config_setting *s, long long v,
				char *buf, size_t cap)
{
	if (s->type == CT_DURATION)
		config_format_duration((long)v, buf, cap);
	else if (s->type == CT_SIZE)
		config_format_size((unsigned long long)v, buf, cap);
	else
		snprintf(buf, cap, "%lld", v);
}

const char *config_setting_doc(size_t i)
{
	return i < N_SETTINGS ? config_settings[i].doc : NULL;
}

void config_setting_kind(size_t i, char *buf, size_t cap)
{
	static const char *const kinds[] = {
		[CT_ENDPOINT_LIST] = "endpoint list", [CT_ENDPOINT] = "endpoint",
		[CT_UINT] = "number", [CT_BOOL] = "yes or no", [CT_STRING] = "text",
		[CT_SIZE] = "size", [CT_DURATION] = "duration",
		[CT_BARE_NEWLINE] = "normalize or reject", [CT_STORE] = "lmdb or redis",
	};
	char lo[32], hi[32];

	buf[0] = '\0';
	if (i >= N_SETTINGS)
		return;
	const struct config_setting *s = &config_settings[i];
	const char *kind = s->flags & CF_HOSTNAME ? "host name"
			   : s->flags & CF_DNSBL  ? "DNS list sites"
						  : kinds[s->type];
	if (s->type == CT_UINT || s->type == CT_SIZE || s->type == CT_DURATION) {
		config_format_limit(s, s->min, lo, sizeof lo);
		config_format_limit(s, s->max, hi, sizeof hi);
		snprintf(buf, cap, "%s, %s to %s", kind, lo, hi);
	} else {
		snprintf(buf, cap, "%s%s%s", kind, s->flags & CF_UNIX ? " or unix:/path" : "",
			 s->flags & CF_EMPTY ? "; may be empty" : "");
	}
}

/* ---- setting values ---------------------------------------------------- */

static int config_fail(char *what, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int config_fail(char *what, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, cap, fmt, ap);
	va_end(ap);
	return -1;
}

static int config_range(const struct config_setting *s, long long v,
			char *what, size_t cap)
{
	char lo[32], hi[32];

	if (v >= s->min && v <= s->max)
		return 0;
	config_format_limit(s, s->min, lo, sizeof lo);
	config_format_limit(s, s->max, hi, sizeof hi);
	return config_fail(what, cap, "%s must be between %s and %s", s->name,
			   lo, hi);
}

static bool config_is_hostname(const char *v)
{
	if (!*v)
		return false;
	for (; *v; v++)
		if (!isalnum((unsigned char)*v) && !strchr("-._", *v))
			return false;
	return true;
}

/* Checks a dnsbl_sites value so a mistake is reported with its place; the
 * value is parsed again where the lists are used. */
static int config_check_dnsbl(const char *value, char *what, size_t cap)
{
	char why[256];
	struct dnsbl_list *list = malloc(sizeof *list);

	if (!list)
		return config_fail(what, cap, "out of memory checking dnsbl_sites");
	int rc = dnsbl_parse(value, strlen(value), list, why, sizeof why);
	free(list);
	if (rc != 0)
		return config_fail(what, cap, "bad dnsbl_sites: %s", why);
	return 0;
}

static int config_set_list(struct config *cfg, const struct config_setting *s,
			   const char *value, char *what, size_t cap)
{
	char *base = (char *)cfg;
	struct endpoint *eps = (struct endpoint *)(void *)(base + s->off);
	size_t *count = (size_t *)(void *)(base + s->aux);
	size_t n = 0;
	const char *p = value;

	for (;;) {
		p += strspn(p, ", \t");
		if (!*p)
			break;
		size_t len = strcspn(p, ", \t");
		char tok[sizeof eps->text];
		if (len >= sizeof tok)
			return config_fail(what, cap, "bad endpoint '%.*s...' for %s: too long",
					   40, p, s->name);
		memcpy(tok, p, len);
		tok[len] = '\0';
		p += len;
		if (n == s->cap)
			return config_fail(what, cap, "too many endpoints for %s (at most %zu)",
					   s->name, s->cap);
		const char *why;
		if (config_endpoint(tok, s->flags, &eps[n], &why) != 0)
			return config_fail(what, cap, "bad endpoint '%s' for %s: %s",
					   tok, s->name, why);
		for (size_t i = 0; i < n; i++)
			if (eps[i].len == eps[n].len &&
			    memcmp(&eps[i].ss, &eps[n].ss, eps[n].len) == 0)
				return config_fail(what, cap, "duplicate endpoint '%s' for %s",
						   tok, s->name);
		n++;
	}
	if (n == 0 && !(s->flags & CF_EMPTY))
		return config_fail(what, cap, "%s needs at least one endpoint", s->name);
	*count = n;
	return 0;
}

/* Sets s from value (already trimmed). On error writes the reason, without
 * a place, into what. */
static int config_set(struct config *cfg, const struct config_setting *s,
		      const char *value, char *what, size_t cap)
{
	char *field = (char *)cfg + s->off;
	unsigned long long u;
	long ms;

	if (!*value && !(s->flags & CF_EMPTY) && s->type != CT_ENDPOINT_LIST &&
	    s->type != CT_STRING)
		return config_fail(what, cap, "%s must not be empty", s->name);

	switch (s->type) {
	case CT_ENDPOINT_LIST:
		return config_set_list(cfg, s, value, what, cap);
	case CT_ENDPOINT: {
		struct endpoint *ep = (struct endpoint *)(void *)field;
		const char *why;
		bool on = *value != '\0';
		if (!on)
			memset(ep, 0, sizeof *ep);
		else if (config_endpoint(value, s->flags, ep, &why) != 0)
			return config_fail(what, cap, "bad endpoint '%s' for %s: %s",
					   value, s->name, why);
		if (s->flags & CF_ENABLES)
			*(bool *)((char *)cfg + s->aux) = on;
		return 0;
	}
	case CT_UINT:
		if (config_parse_uint(value, UINT_MAX, &u) != 0)
			return config_fail(what, cap, "bad number '%s' for %s", value,
					   s->name);
		if (config_range(s, (long long)u, what, cap) != 0)
			return -1;
		*(unsigned *)(void *)field = (unsigned)u;
		return 0;
	case CT_BOOL:
		if (strcmp(value, "yes") == 0)
			*(bool *)field = true;
		else if (strcmp(value, "no") == 0)
			*(bool *)field = false;
		else
			return config_fail(what, cap, "bad boolean '%s' for %s (yes or no)",
					   value, s->name);
		return 0;
	case CT_STRING:
		if (!*value && !(s->flags & CF_EMPTY))
			return config_fail(what, cap, "%s must not be empty", s->name);
		if (strlen(value) >= s->aux)
			return config_fail(what, cap, "value for %s too long (at most %zu bytes)",
					   s->name, s->aux - 1);
		if ((s->flags & CF_HOSTNAME) && !config_is_hostname(value))
			return config_fail(what, cap, "bad host name '%s' for %s", value,
					   s->name);
		if ((s->flags & CF_DNSBL) && config_check_dnsbl(value, what, cap) != 0)
			return -1;
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case CT_SIZE:
		if (config_parse_size(value, &u) != 0)
			return config_fail(what, cap, "bad size '%s' for %s", value,
					   s->name);
		if (config_range(s, u > (unsigned long long)LLONG_MAX
					    ? LLONG_MAX : (long long)u,
				 what, cap) != 0)
			return -1;
		*(unsigned long long *)(void *)field = u;
		return 0;
	case CT_DURATION:
		if (config_parse_duration_ms(value, &ms) != 0)
			return config_fail(what, cap, "bad duration '%s' for %s", value,
					   s->name);
		if (config_range(s, ms, what, cap) != 0)
			return -1;
		*(long *)(void *)field = ms;
		return 0;
	case CT_BARE_NEWLINE:
		if (strcmp(value, "normalize") == 0)
			*(enum config_bare_newline *)(void *)field = CONFIG_BARE_NORMALIZE;
		else if (strcmp(value, "reject") == 0)
			*(enum config_bare_newline *)(void *)field = CONFIG_BARE_REJECT;
		else
			return config_fail(what, cap,
					   "bad value '%s' for %s (normalize or reject)",
					   value, s->name);
		return 0;
	case CT_STORE:
		if (strcmp(value, "lmdb") == 0)
			*(enum config_store *)(void *)field = CONFIG_STORE_LMDB;
		else if (strcmp(value, "redis") == 0)
			*(enum config_store *)(void *)field = CONFIG_STORE_REDIS;
		else
			return config_fail(what, cap,
					   "bad value '%s' for %s (lmdb or redis)",
					   value, s->name);
		return 0;
	}
	return config_fail(what, cap, "internal error: type of %s", s->name);
}

static const struct config_setting *config_find(const char *name, size_t len)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (strlen(config_settings[i].name) == len &&
		    memcmp(config_settings[i].name, name, len) == 0)
			return &config_settings[i];
	return NULL;
}

/* Trims blanks at both ends, in place. */
static char *config_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* "name = value" in line (modified): sets it or writes the reason. */
static int config_assign(struct config *cfg, char *line, char *what, size_t cap)
{
	char *eq = strchr(line, '=');
	if (!eq)
		return config_fail(what, cap, "expected 'name = value'");
	*eq = '\0';
	char *name = config_trim(line);
	char *value = config_trim(eq + 1);
	if (!*name)
		return config_fail(what, cap, "expected 'name = value'");
	const struct config_setting *s = config_find(name, strlen(name));
	if (!s)
		return config_fail(what, cap, "unknown setting '%s'", name);
	return config_set(cfg, s, value, what, cap);
}

/* ---- public ------------------------------------------------------------ */

void config_defaults(struct config *cfg)
{
	char what[256];

	memset(cfg, 0, sizeof *cfg);
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct config_setting *s = &config_settings[i];
		/* A default that does not parse is a bug in the table above,
		 * caught by the unit tests; never reached in a release. */
		if (s->def && config_set(cfg, s, s->def, what, sizeof what) != 0)
			abort();
	}
	if (gethostname(cfg->myhostname, sizeof cfg->myhostname) != 0 ||
	    cfg->myhostname[sizeof cfg->myhostname - 1] != '\0' ||
	    !cfg->myhostname[0])
		snprintf(cfg->myhostname, sizeof cfg->myhostname, "localhost");
}

static void config_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void config_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* Reads path into cfg. Returns 0, -1 on error, or 1 if the (default) file
 * does not exist and missing_ok. */
static int config_read_stream(struct config *cfg, FILE *f, const char *path,
			      char *err, size_t err_len);
static int config_check(const struct config *cfg, const char *place, char *err,
			size_t err_len);

static int config_read_file(struct config *cfg, const char *path,
			    bool missing_ok, char *err, size_t err_len)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (errno == ENOENT && missing_ok)
			return 1;
		config_err(err, err_len, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	return config_read_stream(cfg, f, path, err, err_len);
}

int config_parse_text(struct config *cfg, const char *name, const char *text,
		      size_t len, char *err, size_t err_len)
{
	config_defaults(cfg);
	if (len == 0)
		return config_check(cfg, name, err, err_len);
	FILE *f = fmemopen((void *)text, len, "r");
	if (!f) {
		config_err(err, err_len, "%s: %s", name, strerror(errno));
		return -1;
	}
	if (config_read_stream(cfg, f, name, err, err_len) != 0)
		return -1;
	return config_check(cfg, name, err, err_len);
}

/* Reads settings from f (closes it). */
static int config_read_stream(struct config *cfg, FILE *f, const char *path,
			      char *err, size_t err_len)
{
	char what[512];
	char *line = NULL, *logical = NULL;
	size_t line_cap = 0, lcap = 0, llen = 0;
	unsigned long lineno = 0, start = 0;
	int rc = 0;
	bool have = false;

	for (;;) {
		errno = 0;
		ssize_t n = getline(&line, &line_cap, f);
		bool eof = n < 0;
		if (eof && ferror(f)) {
			config_err(err, err_len, "%s: read error: %s", path,
				   strerror(errno ? errno : EIO));
			rc = -1;
			break;
		}
		if (!eof) {
			lineno++;
			if (n > 0 && line[n - 1] == '\n')
				line[--n] = '\0';
			if (n > 0 && line[n - 1] == '\r')
				line[--n] = '\0';
			const char *t = line + strspn(line, " \t");
			if (*t == '\0' || *t == '#')
				continue;
			if (t != line) {
				if (!have) {
					config_err(err, err_len,
						   "%s:%lu: continuation line without a setting",
						   path, lineno);
					rc = -1;
					break;
				}
				/* Join continuation lines with one space. */
				size_t add = strlen(t) + 1;
				if (llen + add + 1 > lcap) {
					size_t ncap = (llen + add + 1) * 2;
					char *nl = realloc(logical, ncap);
					if (!nl) {
						config_err(err, err_len, "%s:%lu: out of memory",
							   path, lineno);
						rc = -1;
						break;
					}
					logical = nl;
					lcap = ncap;
				}
				logical[llen++] = ' ';
				memcpy(logical + llen, t, add);
				llen += add - 1;
				continue;
			}
		}
		/* A new logical line starts (or the file ends): apply the
		 * previous one. */
		if (have && config_assign(cfg, logical, what, sizeof what) != 0) {
			config_err(err, err_len, "%s:%lu: %s", path, start, what);
			rc = -1;
			break;
		}
		have = false;
		if (eof)
			break;
		size_t need = (size_t)n + 1;
		if (need > lcap) {
			char *nl = realloc(logical, need * 2);
			if (!nl) {
				config_err(err, err_len, "%s:%lu: out of memory", path,
					   lineno);
				rc = -1;
				break;
			}
			logical = nl;
			lcap = need * 2;
		}
		memcpy(logical, line, need);
		llen = (size_t)n;
		start = lineno;
		have = true;
	}
	free(line);
	free(logical);
	if (fclose(f) != 0 && rc == 0) {
		config_err(err, err_len, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	return rc;
}

/* Rules between settings; place is the file (or "-o") for the message. */
static int config_check(const struct config *cfg, const char *place, char *err,
			size_t err_len)
{
	if (!cfg->tls_cert_file[0] != !cfg->tls_key_file[0]) {
		config_err(err, err_len,
			   "%s: tls_cert_file and tls_key_file must be set together",
			   place);
		return -1;
	}
	if (cfg->ipv6_network_prefix > cfg->ipv6_client_prefix) {
		config_err(err, err_len,
			   "%s: ipv6_network_prefix (%u) is longer than ipv6_client_prefix (%u)",
			   place, cfg->ipv6_network_prefix, cfg->ipv6_client_prefix);
		return -1;
	}
	for (size_t i = 0; i < cfg->proxy_protocol_listen_count; i++) {
		const struct endpoint *p = &cfg->proxy_protocol_listen[i];
		bool found = false;
		for (size_t j = 0; j < cfg->listen_count && !found; j++)
			found = cfg->listen[j].len == p->len &&
				memcmp(&cfg->listen[j].ss, &p->ss, p->len) == 0;
		if (!found) {
			config_err(err, err_len,
				   "%s: proxy_protocol_listen %s is not one of listen",
				   place, p->text);
			return -1;
		}
	}
	char why[256];
	struct cidr_list *trusted = config_proxy_trusted(cfg, why, sizeof why);
	if (!trusted) {
		config_err(err, err_len, "%s: proxy_trusted_networks: %s", place, why);
		return -1;
	}
	cidr_free(trusted);
	if (cfg->message_memory_max > cfg->memory_limit) {
		config_err(err, err_len,
			   "%s: message_memory_max (%llu) exceeds memory_limit (%llu)",
			   place, cfg->message_memory_max, cfg->memory_limit);
		return -1;
	}
	return 0;
}

struct cidr_list *config_proxy_trusted(const struct config *cfg, char *err,
				       size_t err_len)
{
	char text[sizeof cfg->proxy_trusted_networks];

	/* cidr_parse takes one network a line. */
	memcpy(text, cfg->proxy_trusted_networks, sizeof text);
	text[sizeof text - 1] = '\0';
	for (char *c = text; *c; c++)
		if (*c == ',' || *c == ' ' || *c == '\t')
			*c = '\n';
	return cidr_parse(text, strlen(text), err, err_len);
}

int config_load(struct config *cfg, const char *path, char *const *overrides,
		size_t n_overrides, char *err, size_t err_len)
{
	char what[512];
	const char *file = path ? path : CONFIG_DEFAULT_PATH;
	const char *place = file;

	if (err && err_len)
		err[0] = '\0';
	struct config *tmp = malloc(sizeof *tmp);
	if (!tmp) {
		config_err(err, err_len, "%s: out of memory", file);
		return -1;
	}
	config_defaults(tmp);

	int rc = config_read_file(tmp, file, path == NULL, err, err_len);
	if (rc < 0)
		goto fail;
	if (rc > 0)
		place = "-o";

	for (size_t i = 0; i < n_overrides; i++) {
		const char *o = overrides[i] ? overrides[i] : "";
		char *copy = strdup(o);
		if (!copy) {
			config_err(err, err_len, "-o %s: out of memory", o);
			goto fail;
		}
		if (!strchr(copy, '=')) {
			config_err(err, err_len, "-o %s: expected name=value", o);
			free(copy);
			goto fail;
		}
		if (config_assign(tmp, copy, what, sizeof what) != 0) {
			config_err(err, err_len, "-o %s: %s", o, what);
			free(copy);
			goto fail;
		}
		free(copy);
	}
	if (config_check(tmp, place, err, err_len) != 0)
		goto fail;
	*cfg = *tmp;
	free(tmp);
	return 0;
fail:
	free(tmp);
	return -1;
}

void config_print_nondefault(const struct config *cfg, FILE *out)
{
	char a[4096], b[4096];
	struct config *def = malloc(sizeof *def);

	/* Without memory for the defaults, print everything: more lines
	 * than asked for beats silently hiding a setting. */
	if (def)
		config_defaults(def);
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct config_setting *s = &config_settings[i];
		config_format(cfg, s, a, sizeof a);
		if (def) {
			config_format(def, s, b, sizeof b);
			if (strcmp(a, b) == 0)
				continue;
		}
		fprintf(out, "%s = %s\n", s->name, a);
	}
	free(def);
}
