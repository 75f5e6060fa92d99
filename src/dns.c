/*
 * dns: client name look-ups through evdns (see dns.h).
 *
 * A name is used only if it is forward-confirmed: PTR gives a name, the
 * name's A/AAAA records include the client address. Anything less gives
 * [UNAVAILABLE], as Postfix's smtpd does, so a PTR a client controls can
 * neither inject into XCLIENT NAME= nor claim a name it does not own.
 *
 * Ownership: struct dns_ptr belongs to its requester until the callback
 * runs or dns_ptr_cancel is called. evdns delivers a cancelled request's
 * callback later (DNS_ERR_CANCEL), so cancel only detaches the requester
 * and the evdns callback frees the struct.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"

#define DNS_MAX_INFLIGHT "4096"

struct dns_ptr {
	struct evdns_base *dns;
	struct evdns_request *pending; /* the evdns request in flight */
	dns_ptr_cb cb;                 /* NULL once cancelled */
	void *arg;
	int family;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	char name[DNS_NAME_MAX + 1];
};

struct evdns_base *dns_new(struct event_base *base, const struct config *cfg)
{
	struct evdns_base *dns =
		evdns_base_new(base, cfg->dns_server_count ? 0 : EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!dns)
		return NULL;
	for (size_t i = 0; i < cfg->dns_server_count; i++) {
		const struct endpoint *ep = &cfg->dns_servers[i];
		if (evdns_base_nameserver_sockaddr_add(dns,
				(const struct sockaddr *)&ep->ss, ep->len, 0) != 0) {
			log_err("dns: cannot use server %s", ep->text);
			evdns_base_free(dns, 0);
			return NULL;
		}
	}
	char timeout[32];
	snprintf(timeout, sizeof timeout, "%.3f", cfg->dns_timeout_ms / 1000.0);
	/* randomize-case stays on (libevent's default): 0x20 mixing makes
	 * forged answers to our PTR and DNSBL queries harder (HOSTILE 83). */
	/* max-inflight: evdns queues beyond it (default 64); a burst of new
	 * clients needs a PTR, a forward and one query per list each. */
	if (evdns_base_set_option(dns, "timeout:", timeout) != 0 ||
	    evdns_base_set_option(dns, "attempts:", "2") != 0 ||
	    evdns_base_set_option(dns, "max-inflight:", DNS_MAX_INFLIGHT) != 0) {
		evdns_base_free(dns, 0);
		return NULL;
	}
	/* Never append search domains to a PTR's name. */
	evdns_base_search_clear(dns);
	return dns;
}

int dns_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > 253)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static void dns_finish(struct dns_ptr *req, enum dns_name_status st)
{
	dns_ptr_cb cb = req->cb;
	void *arg = req->arg;
	char name[DNS_NAME_MAX + 1];
	snprintf(name, sizeof name, "%s",
		 st == DNS_NAME_OK || st == DNS_NAME_UNCONFIRMED ? req->name : "");
	free(req);
	if (cb)
		cb(st, name, arg);
}

static enum dns_name_status dns_fail_status(int result)
{
	switch (result) {
	case DNS_ERR_SERVERFAILED:
	case DNS_ERR_TIMEOUT:
	case DNS_ERR_SHUTDOWN:
	case DNS_ERR_CANCEL:
		metrics_inc(METRIC_DNS_FAILURES);
		return DNS_NAME_TEMPFAIL;
	default:
		/* NXDOMAIN, no data, and answers evdns could not parse (a PTR
		 * name with bytes no host name has): no usable name, as
		 * Postfix says for a bad name. */
		return DNS_NAME_UNAVAILABLE;
	}
}

static void dns_forward_cb(int result, char type, int count, int ttl,
			   void *addresses, void *arg)
{
	struct dns_ptr *req = arg;
	req->pending = NULL;
	if (!req->cb || result == DNS_ERR_CANCEL) {
		free(req);
		return;
	}
	if (result != DNS_ERR_NONE) {
		enum dns_name_status st = dns_fail_status(result);
		dns_finish(req, st == DNS_NAME_UNAVAILABLE ? DNS_NAME_UNCONFIRMED : st);
		return;
	}
	for (int i = 0; i < count; i++) {
		if (type == DNS_IPv4_A && req->family == AF_INET &&
		    memcmp((struct in_addr *)addresses + i, &req->addr.v4, 4) == 0) {
			dns_finish(req, DNS_NAME_OK);
			return;
		}
		if (type == DNS_IPv6_AAAA && req->family == AF_INET6 &&
		    memcmp((struct in6_addr *)addresses + i, &req->addr.v6, 16) == 0) {
			dns_finish(req, DNS_NAME_OK);
			return;
		}
	}
	dns_finish(req, DNS_NAME_UNCONFIRMED);
}

static void dns_reverse_cb(int result, char type, int count, int ttl,
			   void *addresses, void *arg)
{
	struct dns_ptr *req = arg;
	req->pending = NULL;
	if (!req->cb || result == DNS_ERR_CANCEL) {
		free(req);
		return;
	}
	if (result != DNS_ERR_NONE) {
		enum dns_name_status st = dns_fail_status(result);
		dns_finish(req, st);
		return;
	}
	const char *name = count > 0 && type == DNS_PTR ? *(char **)addresses : NULL;
	if (!name || !dns_name_valid(name, strlen(name))) {
		dns_finish(req, DNS_NAME_UNAVAILABLE);
		return;
	}
	snprintf(req->name, sizeof req->name, "%s", name);
	metrics_inc(METRIC_DNS_QUERIES);
	req->pending = req->family == AF_INET
		? evdns_base_resolve_ipv4(req->dns, req->name, DNS_QUERY_NO_SEARCH,
					  dns_forward_cb, req)
		: evdns_base_resolve_ipv6(req->dns, req->name, DNS_QUERY_NO_SEARCH,
					  dns_forward_cb, req);
	if (!req->pending)
		dns_finish(req, DNS_NAME_TEMPFAIL);
}

struct dns_ptr *dns_ptr_start(struct evdns_base *dns,
			      const struct sockaddr *addr, dns_ptr_cb cb,
			      void *arg)
{
	struct dns_ptr *req = calloc(1, sizeof *req);
	if (!req)
		return NULL;
	req->dns = dns;
	req->cb = cb;
	req->arg = arg;
	req->family = addr->sa_family;
	metrics_inc(METRIC_DNS_QUERIES);
	if (addr->sa_family == AF_INET) {
		req->addr.v4 = ((const struct sockaddr_in *)addr)->sin_addr;
		req->pending = evdns_base_resolve_reverse(dns, &req->addr.v4, 0,
							  dns_reverse_cb, req);
	} else if (addr->sa_family == AF_INET6) {
		req->addr.v6 = ((const struct sockaddr_in6 *)addr)->sin6_addr;
		req->pending = evdns_base_resolve_reverse_ipv6(dns, &req->addr.v6, 0,
							       dns_reverse_cb, req);
	}
	if (!req->pending) {
		free(req);
		return NULL;
	}
	return req;
}

void dns_ptr_cancel(struct dns_ptr *req)
{
	if (!req)
		return;
	req->cb = NULL;
	/* evdns calls dns_*_cb with DNS_ERR_CANCEL later; that frees req. */
	evdns_cancel_request(req->dns, req->pending);
}
