/*
 * dns: client name look-ups through evdns (see dns.h).
 *
 * A name is used only if it is forward-confirmed: PTR gives a name, the
 * name's A/AAAA records include the client address. Anything less gives
 * [UNAVAILABLE], as Postfix's smtpd does, so a PTR a client controls can
 * neither inject into XCLIENT NAME= nor claim a name it does not own.
 * But only NXDOMAIN, no PTR data or a PTR name of bad syntax is "less";
 * a resolver that fails (REFUSED, SERVFAIL, FORMERR, NOTIMPL, TRUNCATED,
 * timeout, unparsable answer) gives [TEMPUNAVAIL] and no signal
 * (dnsfail.c), as Postfix does.
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
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "dns_cache.h"
#include "dnsfail.h"
#include "log.h"
#include "metrics.h"

#define DNS_MAX_INFLIGHT "128"

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
	int ttl;                       /* smallest TTL of the answers used */
	struct event *cached;          /* delivery of a cache hit */
	enum dns_name_status cached_status;
};

static struct event_base *dns_event_base; /* the worker's loop */

static void dns_cached_cb(evutil_socket_t fd, short what, void *arg);

struct evdns_base *dns_new(struct event_base *base, const struct config *cfg)
{
	dns_event_base = base;
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
	/* max-inflight: the cap on queries sent and unanswered; evdns queues
	 * the rest (HOSTILE 81: an attacker choosing many addresses must not
	 * turn sluice into a DNS flood). Greetings do not wait on the queue
	 * beyond dns_timeout (session_shape.c). */
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
		/* Letters, digits and hyphens only (RFC 952/1123): what goes
		 * into XCLIENT NAME= and the Received header must be a host
		 * name, not merely a DNS label (HOSTILE 30). */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static void dns_finish(struct dns_ptr *req, enum dns_name_status st)
{
	if (!req->cached)
		dns_cache_put(req->family, &req->addr, st, req->name, req->ttl,
			      time(NULL));
	dns_ptr_cb cb = req->cb;
	void *arg = req->arg;
	char name[DNS_NAME_MAX + 1];
	snprintf(name, sizeof name, "%s",
		 st == DNS_NAME_OK || st == DNS_NAME_UNCONFIRMED ? req->name : "");
	if (req->cached)
		event_free(req->cached);
	free(req);
	if (cb)
		cb(st, name, arg);
}

/* Only NXDOMAIN or no data says the name has no record; anything else is
 * the resolver's failure, [TEMPUNAVAIL] and never a signal (dnsfail.c). */
static enum dns_name_status dns_fail_status(const struct dns_ptr *req,
					    const char *server, int result)
{
	if (dnsfail_classify(result) == DNSFAIL_ABSENT)
		return DNS_NAME_UNAVAILABLE;
	char client[INET6_ADDRSTRLEN];
	if (!inet_ntop(req->family, &req->addr, client, sizeof client))
		snprintf(client, sizeof client, "?");
	dnsfail_report(server, client, result);
	return DNS_NAME_TEMPFAIL;
}

/* What every evdns answer does first: the request is no longer in
 * flight, the smallest TTL is kept for the cache, and a cancelled
 * request is freed here. Returns false when req is gone. */
static bool dns_answer_begin(struct dns_ptr *req, int result, int ttl)
{
	req->pending = NULL;
	if (ttl < req->ttl)
		req->ttl = ttl;
	if (!req->cb || result == DNS_ERR_CANCEL) {
		free(req);
		return false;
	}
	return true;
}

static void dns_forward_cb(int result, char type, int count, int ttl,
			   void *addresses, void *arg)
{
	struct dns_ptr *req = arg;
	if (!dns_answer_begin(req, result, ttl))
		return;
	if (result != DNS_ERR_NONE) {
		enum dns_name_status st = dns_fail_status(req, "forward", result);
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
	if (!dns_answer_begin(req, result, ttl))
		return;
	if (result != DNS_ERR_NONE) {
		dns_finish(req, dns_fail_status(req, "reverse", result));
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
	req->ttl = DNS_CACHE_MAX_S;
	const void *a = addr->sa_family == AF_INET
		? (const void *)&((const struct sockaddr_in *)addr)->sin_addr
		: (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
	enum dns_name_status hit_status;
	if ((addr->sa_family == AF_INET || addr->sa_family == AF_INET6) &&
	    dns_cache_get(addr->sa_family, a, time(NULL), &hit_status, req->name,
			  sizeof req->name)) {
		/* Delivered on the next turn, never inside this call. */
		req->cached = event_new(dns_event_base, -1, 0,
					dns_cached_cb, req);
		if (req->cached) {
			req->cached_status = hit_status;
			event_active(req->cached, 0, 0);
			return req;
		}
	}
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

static void dns_cached_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_ptr *req = arg;
	dns_finish(req, req->cached_status);
}

void dns_ptr_cancel(struct dns_ptr *req)
{
	if (!req)
		return;
	if (req->cached) {
		event_free(req->cached);
		free(req);
		return;
	}
	req->cb = NULL;
	/* evdns calls dns_*_cb with DNS_ERR_CANCEL later; that frees req. */
	evdns_cancel_request(req->dns, req->pending);
}
