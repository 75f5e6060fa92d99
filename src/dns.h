/*
 * dns: asynchronous look-ups on libevent's evdns, pointed at the configured
 * servers (never a blocking resolver call). Exports the client name
 * look-up: PTR, then forward confirmation of the name.
 */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <sys/socket.h>

struct event_base;
struct evdns_base;
struct config;
struct dns_ptr;

enum dns_name_status {
	DNS_NAME_OK,          /* forward-confirmed name */
	DNS_NAME_UNAVAILABLE, /* no PTR, or a PTR name of bad syntax */
	DNS_NAME_UNCONFIRMED, /* PTR name that does not resolve back */
	DNS_NAME_TEMPFAIL,    /* timeout or server failure */
};

#define DNS_NAME_MAX 255

/* name: the confirmed name for DNS_NAME_OK, the unconfirmed PTR name for
 * DNS_NAME_UNCONFIRMED (a signal only: never to be trusted), else "".
 * Called on the loop, never from inside dns_ptr_start. */
typedef void (*dns_ptr_cb)(enum dns_name_status st, const char *name,
			   void *arg);

/* Creates the resolver from cfg (dns_servers, dns_timeout). NULL on error. */
struct evdns_base *dns_new(struct event_base *base, const struct config *cfg);

/* Starts a look-up; NULL on failure (then cb is never called). */
struct dns_ptr *dns_ptr_start(struct evdns_base *dns,
			      const struct sockaddr *addr, dns_ptr_cb cb,
			      void *arg);

/* The callback will not be called after this; frees the request. */
void dns_ptr_cancel(struct dns_ptr *req);

/* Whether name is a plausible host name: letters, digits, '-', '.',
 * labels 1..63, total <= 253. Untrusted bytes, len bytes. */
int dns_name_valid(const char *name, size_t len);

#endif
