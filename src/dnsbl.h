/*
 * dnsbl: DNS block and allow lists in postscreen's syntax and meaning
 * (postscreen_dnsbl_sites): "site[=filter][*weight]", separated by commas
 * and/or white space. A filter is a dotted quad whose octets are a
 * number, a range "[lo..hi]" or a list "[a;b;c]" (items may be ranges);
 * without a filter any answer in 127.0.0.0/8 counts. Answers in
 * 127.255.255.0/24 are the lists' error codes and never count.
 *
 * Parsing and matching are pure (fuzzed); the queries run on evdns, all
 * sites in parallel, and the verdict comes back once on the loop.
 */
#ifndef SLUICE_DNSBL_H
#define SLUICE_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNSBL_SITES_MAX 32
#define DNSBL_DOMAIN_MAX 189 /* 253 - 64: room for the 32 nibbles (with dots)
				 of an IPv6 query in a 253-byte name */

struct dnsbl_site {
	char domain[DNSBL_DOMAIN_MAX + 1];
	bool has_filter;
	uint8_t octet_ok[4][32]; /* bitmap of accepted values per octet */
	int weight;
};

struct dnsbl_list {
	struct dnsbl_site sites[DNSBL_SITES_MAX];
	size_t n;
};

/* spec: untrusted-length text (the setting's value), len bytes. 0, or -1
 * with a reason ("bad filter in 'x'") in err. */
int dnsbl_parse(const char *spec, size_t len, struct dnsbl_list *out,
		char *err, size_t err_len);

/* Whether the A record a (network byte order) is a listing for site. */
bool dnsbl_match(const struct dnsbl_site *site, uint32_t a);

/* The query name for client addr at site ("4.3.2.1.site" or 32 nibbles for
 * IPv6). Returns its length, 0 if it does not fit or addr is neither. */
size_t dnsbl_query_name(const struct dnsbl_site *site,
			const struct sockaddr *addr, char *out, size_t cap);

struct evdns_base;
struct dnsbl_req;

/* score: sum of the weights of the sites that listed the client; hits:
 * "site=127.0.0.2*3 site2=..." for the log (may be ""). Sites that timed
 * out or failed are logged by dnsbl itself and counted as not listed. */
typedef void (*dnsbl_cb)(void *arg, int score, const char *hits);

/* NULL when nothing was started (no sites, or out of memory); cb is then
 * never called. The list must outlive the request. */
struct dnsbl_req *dnsbl_start(struct evdns_base *dns,
			      const struct dnsbl_list *list,
			      const struct sockaddr *addr, dnsbl_cb cb,
			      void *arg);

/* cb will not be called; the request is freed (now or by evdns later). */
void dnsbl_cancel(struct dnsbl_req *req);

#endif
