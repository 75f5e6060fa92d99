/*
 * ipaddr: sockaddr to address bytes, IPv4-mapped unwrapped (see
 * ipaddr.h). Exports ipaddr_from_sockaddr, ipaddr_of, ipaddr_is_v4mapped,
 * ipaddr_len. Pure.
 */
#include "ipaddr.h"

#include <netinet/in.h>
#include <stddef.h>
#include <string.h>

static const unsigned char ipaddr_v4mapped_prefix[IPADDR_V4MAPPED_OFFSET] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

bool ipaddr_is_v4mapped(const unsigned char b[IPADDR_V6_LEN])
{
	return memcmp(b, ipaddr_v4mapped_prefix, IPADDR_V4MAPPED_OFFSET) == 0;
}

bool ipaddr_from_sockaddr(const struct sockaddr *sa, struct ipaddr *out)
{
	sa_family_t family;

	if (!sa)
		return false;
	memset(out, 0, sizeof *out);
	/* memcpy: callers may hand over a struct sockaddr without the
	 * alignment of the longer types. */
	memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family),
	       sizeof family);
	if (family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof sin);
		out->family = AF_INET;
		memcpy(out->b, &sin.sin_addr, IPADDR_V4_LEN);
		return true;
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, sa, sizeof sin6);
		const unsigned char *b = sin6.sin6_addr.s6_addr;
		if (ipaddr_is_v4mapped(b)) {
			out->family = AF_INET;
			memcpy(out->b, b + IPADDR_V4MAPPED_OFFSET,
			       IPADDR_V4_LEN);
		} else {
			out->family = AF_INET6;
			memcpy(out->b, b, IPADDR_V6_LEN);
		}
		return true;
	}
	return false;
}

size_t ipaddr_len(const struct ipaddr *a)
{
	return a->family == AF_INET ? IPADDR_V4_LEN : IPADDR_V6_LEN;
}

struct ipaddr ipaddr_of(const struct sockaddr *sa)
{
	struct ipaddr a;

	if (!ipaddr_from_sockaddr(sa, &a)) {
		memset(&a, 0, sizeof a);
		a.family = AF_UNSPEC;
	}
	return a;
}
