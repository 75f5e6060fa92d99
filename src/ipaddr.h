/*
 * ipaddr: an IP address as bytes, with IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d, what a dual-stack socket reports for an IPv4 client)
 * unwrapped to IPv4, so that one client has one address everywhere
 * (reputation keys, DNSBL names, CIDR matches, logs).
 */
#ifndef SLUICE_IPADDR_H
#define SLUICE_IPADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define IPADDR_V4_LEN 4
#define IPADDR_V6_LEN 16
#define IPADDR_V4MAPPED_OFFSET 12 /* IPv4 bytes inside ::ffff:0:0/96 */

struct ipaddr {
	sa_family_t family; /* AF_INET or AF_INET6 (AF_UNSPEC: ipaddr_of) */
	unsigned char b[IPADDR_V6_LEN]; /* IPADDR_V4_LEN used for AF_INET */
};

/* True for a struct sockaddr_in or sockaddr_in6 (read with memcpy, so sa
 * need not be aligned), IPv4-mapped unwrapped; false for anything else,
 * NULL included. */
bool ipaddr_from_sockaddr(const struct sockaddr *sa, struct ipaddr *out);

/* As ipaddr_from_sockaddr, with family AF_UNSPEC (and zero bytes) for
 * anything that is not IP. */
struct ipaddr ipaddr_of(const struct sockaddr *sa);

/* True when the 16 bytes b are an IPv4-mapped IPv6 address. */
bool ipaddr_is_v4mapped(const unsigned char b[IPADDR_V6_LEN]);

/* Bytes of the address: 4 or 16. */
size_t ipaddr_len(const struct ipaddr *a);

#endif
