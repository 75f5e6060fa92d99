/*
 * dnsbl: DNS block and allow lists with postscreen's dnsbl_sites syntax
 * and meaning (see dnsbl.h and postconf(5) postscreen_dnsbl_sites).
 *
 * Exports dnsbl_parse, dnsbl_match and dnsbl_query_name (pure: no I/O, no
 * allocation, fuzzed by fuzz/fuzz_dnsbl.c) and dnsbl_start/dnsbl_cancel
 * (the queries, on evdns).
 *
 * Syntax: entries "domain[=filter][*weight]" separated by commas and/or
 * white space. The filter is a dotted quad whose octets are a number
 * 0..255 or "[item;item...]" with items "n" or "lo..hi". The weight is an
 * integer, default 1, negative for allow lists. As in Postfix, an entry
 * adds its weight at most once however many of its A records match, and a
 * domain listed several times (different filters) adds each matching
 * entry's weight. Only answers in 127.0.0.0/8 and outside 127.255.255.0/24
 * (the lists' error codes: "query via public resolver", "rate limited",
 * "typo in zone") ever count, filter or not; a filter that can only match
 * such answers is refused at parse time rather than silently never firing.
 * Only the first DNSBL_ANSWERS_MAX A records of an answer are looked at.
 *
 * Queries: one evdns A query per distinct domain (entries sharing a domain
 * share its answer, as postscreen does), all in parallel, with
 * DNS_QUERY_NO_SEARCH. NXDOMAIN and NODATA mean "not listed"; a timeout
 * or any other failure (dnsfail.c) also counts as not listed but counts
 * METRIC_DNS_FAILURES and logs a warning at most once a minute per site,
 * since a dead list must never look like a listing (fail open). An answer
 * in 127.255.255.0/24 (the list refusing our resolver) counts
 * METRIC_DNSBL_ERROR_ANSWERS and warns likewise.
 *
 * Ownership and callbacks: struct dnsbl_req is malloc'd by dnsbl_start
 * and freed by dnsbl itself: just before the user's callback, or after
 * dnsbl_cancel once evdns has delivered every query's (deferred,
 * DNS_ERR_CANCEL) callback. So cancel only detaches the user and asks
 * evdns to cancel; the last evdns callback frees. After cancel, dnsbl
 * never touches the list again (a reload may have freed it) and logs
 * nothing. The user callback runs on the loop, from the last evdns
 * callback, never inside dnsbl_start: libevent 2.1 defers every evdns
 * callback, and dnsbl_start holds a reference of its own while it starts
 * queries, so even a synchronous callback could not finish the request
 * early (it would then return NULL instead of calling back). Cancel
 * before freeing the evdns base: evdns_base_free(dns, 0) drops requests
 * without callbacks, and their dnsbl_req with them; with fail_requests
 * set, the user gets a (failed, score 0) verdict instead.
 *
 * Rejected: a cache of answers here (the local recursive resolver caches,
 * docs/hostile.md case 83); reverse-DNS style via evdns_base_resolve_reverse
 * (it only builds in-addr.arpa / ip6.arpa names).
 */
#include "dnsbl.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ascii.h"
#include "dnsfail.h"
#include "ipaddr.h"
#include "log.h"
#include "metrics.h"

#define DNSBL_NAME_MAX 253      /* longest DNS name in text form */
#define DNSBL_LABEL_MAX 63
#define DNSBL_WEIGHT_MAX 1000000 /* as the score thresholds in config.c */
#define DNSBL_ANSWERS_MAX 16    /* A records looked at per answer */
#define DNSBL_ERR_SHOW 64       /* bytes of a bad entry quoted in errors */

#define DNSBL_LOOPBACK_OCTET 127u
#define DNSBL_ERRCODE_NET 0x7fffff00u  /* 127.255.255.0 */
#define DNSBL_ERRCODE_MASK 0xffffff00u /* /24 */

#define DNSBL_SEPARATORS ", \t\r\n"

/* "domain=255.255.255.255*-1000000 " per hit, for the log line. */
#define DNSBL_HIT_MAX (DNSBL_DOMAIN_MAX + sizeof "=255.255.255.255*-1000000 ")
#define DNSBL_HITS_MAX (DNSBL_SITES_MAX * DNSBL_HIT_MAX + 1)

/* ---- parsing (pure) ---------------------------------------------------- */

static bool dnsbl_is_sep(char c)
{
	return c != '\0' && strchr(DNSBL_SEPARATORS, c) != NULL;
}

static void dnsbl_set(uint8_t bits[32], unsigned v)
{
	bits[v >> 3] |= (uint8_t)(1u << (v & 7));
}

static bool dnsbl_has(const uint8_t bits[32], unsigned v)
{
	return (bits[v >> 3] >> (v & 7)) & 1u;
}

/* Writes "what in 'entry'" into err, the entry escaped and shortened. */
static int dnsbl_fail(char *err, size_t err_len, const char *what,
		      const char *entry, size_t len)
{
	char shown[DNSBL_ERR_SHOW + 8];

	if (err && err_len) {
		log_escape(shown, sizeof shown, entry, len);
		snprintf(err, err_len, "%s in '%s'", what, shown);
	}
	return -1;
}

/* A decimal octet, 1..3 digits, 0..255, at *p (advanced). */
static int dnsbl_octet(const char **p, const char *end, unsigned *v)
{
	unsigned n = 0;
	size_t digits = 0;

	while (*p < end && **p >= '0' && **p <= '9') {
		if (++digits > 3)
			return -1;
		n = n * 10 + (unsigned)(**p - '0');
		(*p)++;
	}
	if (digits == 0 || n > 255)
		return -1;
	*v = n;
	return 0;
}

/* "[a;b..c;...]" after the '[' at *p: sets the accepted values. */
static int dnsbl_octet_list(const char **p, const char *end, uint8_t bits[32])
{
	for (;;) {
		unsigned lo, hi;
		if (dnsbl_octet(p, end, &lo) != 0)
			return -1;
		hi = lo;
		if (end - *p >= 2 && (*p)[0] == '.' && (*p)[1] == '.') {
			*p += 2;
			if (dnsbl_octet(p, end, &hi) != 0 || hi < lo)
				return -1;
		}
		for (unsigned v = lo; v <= hi; v++)
			dnsbl_set(bits, v);
		if (*p < end && **p == ';') {
			(*p)++;
			continue;
		}
		if (*p < end && **p == ']') {
			(*p)++;
			return 0;
		}
		return -1;
	}
}

static int dnsbl_filter(const char *p, size_t len, struct dnsbl_site *site)
{
	const char *end = p + len;

	for (int o = 0; o < 4; o++) {
		if (o > 0) {
			if (p == end || *p != '.')
				return -1;
			p++;
		}
		if (p < end && *p == '[') {
			p++;
			if (dnsbl_octet_list(&p, end, site->octet_ok[o]) != 0)
				return -1;
		} else {
			unsigned v;
			if (dnsbl_octet(&p, end, &v) != 0)
				return -1;
			dnsbl_set(site->octet_ok[o], v);
		}
	}
	if (p != end)
		return -1;
	site->has_filter = true;
	return 0;
}

/* Whether some address the filter accepts could ever count. */
static bool dnsbl_filter_can_match(const struct dnsbl_site *site)
{
	if (!dnsbl_has(site->octet_ok[0], DNSBL_LOOPBACK_OCTET))
		return false;
	for (int o = 1; o <= 2; o++)
		for (unsigned v = 0; v < 255; v++)
			if (dnsbl_has(site->octet_ok[o], v))
				return true;
	return false; /* octets 2 and 3 can only be 255: error codes */
}

/* Optional sign, digits, |weight| <= DNSBL_WEIGHT_MAX, nothing else. */
static int dnsbl_weight(const char *p, size_t len, int *out)
{
	const char *end = p + len;
	bool neg = false;
	long v = 0;

	if (p < end && (*p == '-' || *p == '+'))
		neg = *p++ == '-';
	if (p == end)
		return -1;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
		if (v > DNSBL_WEIGHT_MAX)
			return -1;
	}
	*out = (int)(neg ? -v : v);
	return 0;
}

/* Host name labels of 1..63 letters, digits, '-', '_'; one trailing dot
 * is allowed and dropped. Returns the length kept, 0 if bad. */
static size_t dnsbl_domain(const char *p, size_t len)
{
	size_t label = 0;

	if (len > 1 && p[len - 1] == '.')
		len--;
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
		if (++label > DNSBL_LABEL_MAX)
			return 0;
	}
	return label ? len : 0;
}

/* One entry "domain[=filter][*weight]" (no separators inside). */
static int dnsbl_entry(const char *e, size_t len, struct dnsbl_site *site,
		       char *err, size_t err_len)
{
	const char *star = memchr(e, '*', len);
	size_t head = star ? (size_t)(star - e) : len;
	const char *eq = memchr(e, '=', head);
	size_t dlen = eq ? (size_t)(eq - e) : head;

	memset(site, 0, sizeof *site);
	site->weight = 1;
	if (star && dnsbl_weight(star + 1, len - head - 1, &site->weight) != 0)
		return dnsbl_fail(err, err_len, "bad weight", e, len);
	size_t keep = dnsbl_domain(e, dlen);
	if (keep == 0)
		return dnsbl_fail(err, err_len, "bad domain", e, len);
	if (keep > DNSBL_DOMAIN_MAX) {
		char what[64];
		snprintf(what, sizeof what, "domain longer than %d bytes",
			 DNSBL_DOMAIN_MAX);
		return dnsbl_fail(err, err_len, what, e, len);
	}
	memcpy(site->domain, e, keep);
	site->domain[keep] = '\0';
	if (eq) {
		if (dnsbl_filter(eq + 1, head - dlen - 1, site) != 0)
			return dnsbl_fail(err, err_len, "bad filter", e, len);
		if (!dnsbl_filter_can_match(site))
			return dnsbl_fail(err, err_len,
					  "filter can never match (only 127.0.0.0/8 "
					  "outside 127.255.255.0/24 counts)",
					  e, len);
	}
	return 0;
}

int dnsbl_parse(const char *spec, size_t len, struct dnsbl_list *out,
		char *err, size_t err_len)
{
	size_t i = 0;

	out->n = 0;
	if (err && err_len)
		err[0] = '\0';
	for (;;) {
		while (i < len && dnsbl_is_sep(spec[i]))
			i++;
		if (i == len)
			return 0;
		size_t start = i;
		while (i < len && !dnsbl_is_sep(spec[i]))
			i++;
		if (out->n == DNSBL_SITES_MAX) {
			out->n = 0;
			if (err && err_len)
				snprintf(err, err_len, "too many sites (at most %d)",
					 DNSBL_SITES_MAX);
			return -1;
		}
		if (dnsbl_entry(spec + start, i - start, &out->sites[out->n], err,
				err_len) != 0) {
			out->n = 0;
			return -1;
		}
		out->n++;
	}
}

/* ---- matching and names (pure) ----------------------------------------- */

bool dnsbl_match(const struct dnsbl_site *site, uint32_t a)
{
	uint32_t h = ntohl(a);

	if (h >> 24 != DNSBL_LOOPBACK_OCTET)
		return false;
	if ((h & DNSBL_ERRCODE_MASK) == DNSBL_ERRCODE_NET)
		return false;
	if (!site->has_filter)
		return true;
	for (int o = 0; o < 4; o++)
		if (!dnsbl_has(site->octet_ok[o], (h >> (24 - 8 * o)) & 0xffu))
			return false;
	return true;
}

size_t dnsbl_query_name(const struct dnsbl_site *site,
			const struct sockaddr *addr, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	char prefix[DNSBL_NAME_MAX + 1];
	size_t plen = 0;
	struct ipaddr ip;

	/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the
	 * lists know them by their IPv4 name (ipaddr unwraps it). */
	if (!ipaddr_from_sockaddr(addr, &ip))
		return 0;
	const uint8_t *b = ip.b;
	if (ip.family == AF_INET6) {
		for (int i = IPADDR_V6_LEN - 1; i >= 0; i--) {
			prefix[plen++] = hex[b[i] & 0xf];
			prefix[plen++] = '.';
			prefix[plen++] = hex[b[i] >> 4];
			prefix[plen++] = '.';
		}
	} else {
		plen = (size_t)snprintf(prefix, sizeof prefix, "%u.%u.%u.%u.", b[3],
					b[2], b[1], b[0]);
	}

	size_t dlen = strnlen(site->domain, sizeof site->domain);
	if (dlen == 0 || dlen == sizeof site->domain ||
	    plen + dlen > DNSBL_NAME_MAX || plen + dlen >= cap)
		return 0;
	memcpy(out, prefix, plen);
	memcpy(out + plen, site->domain, dlen);
	out[plen + dlen] = '\0';
	return plen + dlen;
}

/* ---- queries ----------------------------------------------------------- */

struct dnsbl_query {
	struct dnsbl_req *req;
	struct evdns_request *handle; /* NULL once its callback has run */
	size_t site;                  /* first entry with this domain */
};

struct dnsbl_req {
	const struct dnsbl_list *list; /* not touched once cancelled */
	struct evdns_base *dns;
	dnsbl_cb cb;    /* NULL once cancelled */
	void *arg;
	size_t pending; /* evdns callbacks still due, + 1 while starting */
	size_t n_queries;
	uint8_t query_of[DNSBL_SITES_MAX]; /* entry -> its domain's query */
	bool hit[DNSBL_SITES_MAX];
	uint32_t hit_addr[DNSBL_SITES_MAX]; /* network byte order */
	char client[INET6_ADDRSTRLEN];
	struct dnsbl_query q[DNSBL_SITES_MAX];
};

/* Not a DNS answer: the query could not even be made. */
static void dnsbl_site_failed(struct dnsbl_req *req, size_t site,
			      const char *why)
{
	metrics_inc(METRIC_DNS_FAILURES);
	log_warn("dnsbl: site=%s client=%s failed: %s",
		 req->list->sites[site].domain, req->client, why);
}

/* An answer in 127.255.255.0/24 is the list saying it will not answer
 * us (Spamhaus: query via a public resolver, rate limited, typo): the
 * list is silently off until someone notices, so it gets its own counter
 * and a warning (at most once a minute per list). */
static void dnsbl_error_answer(struct dnsbl_req *req, size_t site, uint32_t a)
{
	char key[DNSBL_DOMAIN_MAX + 16], code[INET_ADDRSTRLEN];
	unsigned suppressed;
	metrics_inc(METRIC_DNSBL_ERROR_ANSWERS);
	snprintf(key, sizeof key, "errcode %s", req->list->sites[site].domain);
	if (!dnsfail_log_due(key, &suppressed))
		return;
	inet_ntop(AF_INET, &a, code, sizeof code);
	log_warn("dnsbl: site=%s client=%s ERRORCODE %s: the list refuses to answer "
		 "this resolver; it lists nobody until that is fixed (%u more not logged "
		 "in the last minute)", req->list->sites[site].domain, req->client, code,
		 suppressed);
}

/* Applies one query's outcome to every entry that shares its domain. */
static void dnsbl_record(struct dnsbl_req *req, size_t qi, int result,
			 char type, int count, const void *addresses)
{
	enum dnsfail_kind kind = dnsfail_classify(result);
	if (kind == DNSFAIL_ABSENT)
		return;
	if (kind == DNSFAIL_TEMP) {
		dnsfail_report(req->list->sites[req->q[qi].site].domain, req->client,
			       result);
		return;
	}
	if (type != DNS_IPv4_A || count <= 0 || !addresses)
		return;
	size_t n = (size_t)count < DNSBL_ANSWERS_MAX ? (size_t)count
						     : DNSBL_ANSWERS_MAX;
	for (size_t k = 0; k < n; k++) {
		uint32_t a;
		memcpy(&a, (const char *)addresses + k * sizeof a, sizeof a);
		if ((ntohl(a) & DNSBL_ERRCODE_MASK) == DNSBL_ERRCODE_NET) {
			dnsbl_error_answer(req, req->q[qi].site, a);
			break;
		}
	}
	for (size_t s = 0; s < req->list->n; s++) {
		if (req->query_of[s] != qi)
			continue;
		for (size_t k = 0; k < n && !req->hit[s]; k++) {
			uint32_t a;
			memcpy(&a, (const char *)addresses + k * sizeof a, sizeof a);
			if (dnsbl_match(&req->list->sites[s], a)) {
				req->hit[s] = true;
				req->hit_addr[s] = a;
			}
		}
	}
}

/* Sums the score, frees req, then calls the user. */
static void dnsbl_finish(struct dnsbl_req *req)
{
	char hits[DNSBL_HITS_MAX];
	size_t used = 0;
	int score = 0;

	hits[0] = '\0';
	for (size_t s = 0; s < req->list->n; s++) {
		const struct dnsbl_site *site = &req->list->sites[s];
		char a[INET_ADDRSTRLEN];
		if (!req->hit[s])
			continue;
		score += site->weight;
		inet_ntop(AF_INET, &req->hit_addr[s], a, sizeof a);
		int w = snprintf(hits + used, sizeof hits - used, "%s%s=%s*%d",
				 used ? " " : "", site->domain, a, site->weight);
		if (w > 0 && (size_t)w < sizeof hits - used)
			used += (size_t)w;
	}
	dnsbl_cb cb = req->cb;
	void *arg = req->arg;
	free(req);
	cb(arg, score, hits);
}

static void dnsbl_answer_cb(int result, char type, int count, int ttl,
			    void *addresses, void *arg)
{
	struct dnsbl_query *q = arg;
	struct dnsbl_req *req = q->req;

	(void)ttl; /* the resolver caches; we keep nothing */
	q->handle = NULL;
	if (req->cb)
		dnsbl_record(req, (size_t)(q - req->q), result, type, count,
			     addresses);
	if (--req->pending > 0)
		return;
	if (req->cb)
		dnsbl_finish(req);
	else
		free(req);
}

struct dnsbl_req *dnsbl_start(struct evdns_base *dns,
			      const struct dnsbl_list *list,
			      const struct sockaddr *addr, dnsbl_cb cb,
			      void *arg)
{
	const void *bin;

	if (!list || list->n == 0 || list->n > DNSBL_SITES_MAX || !cb)
		return NULL;
	if (addr->sa_family == AF_INET)
		bin = &((const struct sockaddr_in *)(const void *)addr)->sin_addr;
	else if (addr->sa_family == AF_INET6)
		bin = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
	else
		return NULL;

	struct dnsbl_req *req = calloc(1, sizeof *req);
	if (!req)
		return NULL;
	req->list = list;
	req->dns = dns;
	req->cb = cb;
	req->arg = arg;
	req->pending = 1; /* our own hold while starting */
	inet_ntop(addr->sa_family, bin, req->client, sizeof req->client);

	for (size_t s = 0; s < list->n; s++) {
		size_t qi = req->n_queries;
		for (size_t p = 0; p < s; p++)
			if (ascii_casecmp(list->sites[p].domain, list->sites[s].domain) == 0) {
				qi = req->query_of[p];
				break;
			}
		req->query_of[s] = (uint8_t)qi;
		if (qi < req->n_queries)
			continue;

		struct dnsbl_query *q = &req->q[req->n_queries++];
		char name[DNSBL_NAME_MAX + 1];
		q->req = req;
		q->site = s;
		if (dnsbl_query_name(&list->sites[s], addr, name, sizeof name) == 0) {
			dnsbl_site_failed(req, s, "name too long");
			continue;
		}
		metrics_inc(METRIC_DNS_QUERIES);
		req->pending++;
		q->handle = evdns_base_resolve_ipv4(dns, name, DNS_QUERY_NO_SEARCH,
						    dnsbl_answer_cb, q);
		if (!q->handle) {
			/* Not started, so no callback will come for it. */
			req->pending--;
			dnsbl_site_failed(req, s, "cannot start");
		}
	}
	if (--req->pending == 0) {
		/* Nothing in flight: nothing will call back, and calling
		 * back from here is not allowed. */
		free(req);
		return NULL;
	}
	return req;
}

void dnsbl_cancel(struct dnsbl_req *req)
{
	if (!req)
		return;
	req->cb = NULL;
	/* evdns calls dnsbl_answer_cb with DNS_ERR_CANCEL later; the last
	 * of those frees req. A query whose answer is already queued for
	 * delivery has a NULL handle here or is ignored by evdns. */
	for (size_t i = 0; i < req->n_queries; i++)
		if (req->q[i].handle)
			evdns_cancel_request(req->dns, req->q[i].handle);
}
