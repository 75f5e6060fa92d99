/*
 * signals: the pure checks behind classification signals that look at
 * names and addresses. Every function takes untrusted text with its
 * length. rdns_generic and helo_check do no I/O and no allocation; a
 * cidr_list is allocated (cidr_free releases it) and cidr_load reads a
 * file (start-up code).
 */
#ifndef SLUICE_SIGNALS_H
#define SLUICE_SIGNALS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * rdns_generic: whether a PTR name looks generic or dynamic: it embeds the
 * client address's digits (all four IPv4 octets in order or reversed, with
 * any separators, or the address as hex), or has a label with a word such
 * as dyn, dynamic, dsl, adsl, pool, dhcp, cable, ppp, dialup, client,
 * host-, ip-, customer, broadband, static-ip, cpe, dial, as in
 * "ppp-203-0-113-7.example.net". name: len bytes (<= 255).
 */
bool rdns_generic(const char *name, size_t len, const struct sockaddr *addr);

enum helo_flags {
	HELO_OK = 0,
	HELO_LITERAL_FOREIGN = 1 << 0, /* [a.b.c.d] that is not the client */
	HELO_NOT_FQDN = 1 << 1,        /* no dot, or a bare TLD, or numeric */
	HELO_OURS = 1 << 2,            /* our own myhostname */
	HELO_LOCALHOST = 1 << 3,       /* localhost, localhost.localdomain */
	HELO_SYNTAX = 1 << 4,          /* characters no host name has */
};

/* helo: len bytes as the client sent it (<= 255); myhostname: ours. */
unsigned helo_check(const char *helo, size_t len, const struct sockaddr *client,
		    const char *myhostname);

/* A list of networks: "192.0.2.0/24", "2001:db8::/32", bare addresses,
 * one per line, '#' comments. Sorted for lookup by prefix. */
struct cidr_list;

/* Parses text (len bytes). NULL with "LINE: what" in err on a syntax
 * error or when out of memory. */
struct cidr_list *cidr_parse(const char *text, size_t len, char *err,
			     size_t err_len);
/* Reads and parses a file (start-up code). */
struct cidr_list *cidr_load(const char *path, char *err, size_t err_len);
bool cidr_match(const struct cidr_list *list, const struct sockaddr *addr);
size_t cidr_count(const struct cidr_list *list);
void cidr_free(struct cidr_list *list);

#endif
