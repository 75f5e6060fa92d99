/*
 * proxy_proto: the PROXY protocol header parser (see proxy_proto.h).
 *
 * Exports proxy_proto_init, proxy_proto_feed and proxy_proto_cmd_name.
 * The caller owns the struct; nothing is allocated. The first byte picks
 * the version ('P' for v1, CR for v2's signature); anything else is
 * INVALID at once, so an SMTP client that talks to a PROXY listener
 * directly is turned away on its first byte instead of at the timeout.
 *
 * v1 is taken strictly as HAProxy writes it: single spaces, dotted-quad
 * IPv4 or RFC 4291 IPv6 text (inet_pton), decimal ports without leading
 * zeros, CR LF at the end, nothing else. Strictness costs nothing here:
 * the only legitimate sender is our own load balancer.
 *
 * Rejected: reading the header with MSG_PEEK guesses inside the parser
 * (I/O belongs to the caller); accepting v2 bodies up to 65535 bytes (no
 * balancer we support sends more than a few hundred, and every byte of
 * buffer is per pending connection).
 */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t proxy_v2_sig[PROXY_V2_SIG_LEN] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char proxy_v1_prefix[] = "PROXY ";
#define PROXY_V1_PREFIX_LEN (sizeof proxy_v1_prefix - 1)

#define PROXY_V2_VERSION 0x20
#define PROXY_V2_CMD_LOCAL 0x00
#define PROXY_V2_CMD_PROXY 0x01
#define PROXY_V2_AF_INET 0x1
#define PROXY_V2_AF_INET6 0x2
#define PROXY_V2_STREAM 0x1
#define PROXY_V2_TLV_HDR 3    /* type, 16-bit length */

void proxy_proto_init(struct proxy_proto *p)
{
	memset(p, 0, sizeof *p);
}

const char *proxy_proto_cmd_name(enum proxy_proto_cmd cmd)
{
	switch (cmd) {
	case PROXY_CMD_PROXY:
		return "PROXY";
	case PROXY_CMD_LOCAL:
		return "LOCAL";
	case PROXY_CMD_UNKNOWN:
		return "UNKNOWN";
	}
	return "?";
}

static enum proxy_proto_rc proxy_finish(struct proxy_proto *p, enum proxy_proto_rc rc)
{
	if (rc != PROXY_PROTO_MORE) {
		p->done = 1;
		p->last = rc;
	}
	return rc;
}

/* A decimal port without leading zeros, 0..65535. */
static int proxy_v1_port(const char *s, size_t len, uint16_t *port)
{
	unsigned v = 0;

	if (len == 0 || len > 5 || (s[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* Address text (len < 46) of family fam into ss with port. */
static int proxy_v1_addr(int fam, const char *s, size_t len, uint16_t port,
			 struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];

	if (len == 0 || len >= sizeof text)
		return -1;
	memcpy(text, s, len);
	text[len] = '\0';
	memset(ss, 0, sizeof *ss);
	if (fam == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return inet_pton(AF_INET, text, &in->sin_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
	return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1 ? 0 : -1;
}

/* The whole v1 line, CR LF removed (len <= PROXY_V1_LINE_MAX - 2). */
static enum proxy_proto_rc proxy_v1_line(struct proxy_proto *p, const char *line,
					 size_t len)
{
	const char *rest = line + PROXY_V1_PREFIX_LEN;
	size_t rlen = len - PROXY_V1_PREFIX_LEN;

	p->version = 1;
	/* "UNKNOWN" may be followed by anything: the receiver ignores it. */
	if (rlen >= 7 && memcmp(rest, "UNKNOWN", 7) == 0 &&
	    (rlen == 7 || rest[7] == ' ')) {
		p->cmd = PROXY_CMD_UNKNOWN;
		return PROXY_PROTO_DONE;
	}
	int fam;
	if (rlen > 5 && memcmp(rest, "TCP4 ", 5) == 0)
		fam = AF_INET;
	else if (rlen > 5 && memcmp(rest, "TCP6 ", 5) == 0)
		fam = AF_INET6;
	else
		return PROXY_PROTO_INVALID;
	rest += 5;
	rlen -= 5;

	/* Exactly four fields, single spaces: src dst sport dport. */
	const char *f[4];
	size_t fl[4];
	size_t n = 0, start = 0;
	for (size_t i = 0; i <= rlen; i++) {
		if (i < rlen && rest[i] != ' ')
			continue;
		if (i == start || n == 4)
			return PROXY_PROTO_INVALID;
		f[n] = rest + start;
		fl[n] = i - start;
		n++;
		start = i + 1;
	}
	uint16_t sport, dport;
	if (n != 4 || proxy_v1_port(f[2], fl[2], &sport) != 0 ||
	    proxy_v1_port(f[3], fl[3], &dport) != 0 ||
	    proxy_v1_addr(fam, f[0], fl[0], sport, &p->src) != 0 ||
	    proxy_v1_addr(fam, f[1], fl[1], dport, &p->dst) != 0)
		return PROXY_PROTO_INVALID;
	p->cmd = PROXY_CMD_PROXY;
	p->addr_len = fam == AF_INET ? sizeof(struct sockaddr_in)
				     : sizeof(struct sockaddr_in6);
	return PROXY_PROTO_DONE;
}

static enum proxy_proto_rc proxy_v1_feed(struct proxy_proto *p, const uint8_t *b,
					 size_t len, size_t *used)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];
		if (p->have < PROXY_V1_PREFIX_LEN) {
			if (c != (uint8_t)proxy_v1_prefix[p->have])
				return PROXY_PROTO_INVALID;
		} else if (c == '\n') {
			if (p->buf[p->have - 1] != '\r')
				return PROXY_PROTO_INVALID;
			p->header_len = p->have + 1;
			*used = i + 1;
			return proxy_v1_line(p, (const char *)p->buf, p->have - 1);
		} else if (p->have > 0 && p->buf[p->have - 1] == '\r') {
			return PROXY_PROTO_INVALID; /* CR only before LF */
		} else if ((c < 0x20 && c != '\r') || c >= 0x7f) {
			return PROXY_PROTO_INVALID;
		}
		if (p->have + 1 >= PROXY_V1_LINE_MAX)
			return PROXY_PROTO_TOO_LONG; /* no room left for the LF */
		p->buf[p->have++] = c;
	}
	*used = len;
	return PROXY_PROTO_MORE;
}

static uint16_t proxy_be16(const uint8_t *b)
{
	return (uint16_t)((b[0] << 8) | b[1]);
}

/* One endpoint of family af from v2 body bytes (network order). */
static void proxy_v2_endpoint(struct sockaddr_storage *ss, int af, const uint8_t *addr,
			      const uint8_t *port)
{
	memset(ss, 0, sizeof *ss);
	if (af == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, addr, 4);
		memcpy(&in->sin_port, port, 2);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, addr, 16);
		memcpy(&in6->sin6_port, port, 2);
	}
}

/* The complete v2 header is in p->buf[0 .. p->need). */
static enum proxy_proto_rc proxy_v2_decode(struct proxy_proto *p)
{
	const uint8_t *body = p->buf + PROXY_V2_HDR_LEN;
	size_t blen = p->need - PROXY_V2_HDR_LEN, alen = 0;
	uint8_t cmd = p->buf[12] & 0x0F, fam = p->buf[13] >> 4,
		proto = p->buf[13] & 0x0F;

	p->version = 2;
	p->header_len = p->need;
	if (cmd == PROXY_V2_CMD_LOCAL) {
		p->cmd = PROXY_CMD_LOCAL; /* addresses, if any, are ignored */
		return PROXY_PROTO_DONE;
	}
	p->cmd = PROXY_CMD_UNKNOWN;
	int af;
	size_t asize;
	if (proto == PROXY_V2_STREAM && fam == PROXY_V2_AF_INET) {
		af = AF_INET;
		asize = 4;
	} else if (proto == PROXY_V2_STREAM && fam == PROXY_V2_AF_INET6) {
		af = AF_INET6;
		asize = 16;
	} else {
		/* UNSPEC, UNIX or datagram: no TCP client address to use. The
		 * TLVs cannot be found without knowing the address size. */
		return PROXY_PROTO_DONE;
	}
	/* src addr, dst addr, src port, dst port */
	alen = 2 * asize + 4;
	if (blen < alen)
		return PROXY_PROTO_INVALID;
	proxy_v2_endpoint(&p->src, af, body, body + 2 * asize);
	proxy_v2_endpoint(&p->dst, af, body + asize, body + 2 * asize + 2);
	p->addr_len = af == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	p->cmd = PROXY_CMD_PROXY;
	/* TLVs fill the rest exactly; a malformed one means a broken sender. */
	size_t off = alen;
	while (off < blen) {
		if (blen - off < PROXY_V2_TLV_HDR)
			return PROXY_PROTO_INVALID;
		size_t vlen = proxy_be16(body + off + 1);
		if (vlen > blen - off - PROXY_V2_TLV_HDR)
			return PROXY_PROTO_INVALID;
		off += PROXY_V2_TLV_HDR + vlen;
	}
	return PROXY_PROTO_DONE;
}

static enum proxy_proto_rc proxy_v2_feed(struct proxy_proto *p, const uint8_t *b,
					 size_t len, size_t *used)
{
	size_t i = 0;

	while (i < len && p->have < PROXY_V2_HDR_LEN) {
		uint8_t c = b[i++];
		if (p->have < PROXY_V2_SIG_LEN && c != proxy_v2_sig[p->have])
			return PROXY_PROTO_INVALID;
		if (p->have == 12 && (c & 0xF0) != PROXY_V2_VERSION)
			return PROXY_PROTO_INVALID;
		if (p->have == 12 && (c & 0x0F) != PROXY_V2_CMD_LOCAL &&
		    (c & 0x0F) != PROXY_V2_CMD_PROXY)
			return PROXY_PROTO_INVALID;
		p->buf[p->have++] = c;
		if (p->have == PROXY_V2_HDR_LEN) {
			size_t body = proxy_be16(p->buf + 14);
			if (body > PROXY_V2_BODY_MAX)
				return PROXY_PROTO_TOO_LONG;
			p->need = PROXY_V2_HDR_LEN + body;
		}
	}
	if (p->have >= PROXY_V2_HDR_LEN) {
		size_t take = p->need - p->have;
		if (take > len - i)
			take = len - i;
		memcpy(p->buf + p->have, b + i, take);
		p->have += take;
		i += take;
		if (p->have == p->need) {
			*used = i;
			return proxy_v2_decode(p);
		}
	}
	*used = i;
	return PROXY_PROTO_MORE;
}

enum proxy_proto_rc proxy_proto_feed(struct proxy_proto *p, const void *bytes,
				     size_t len, size_t *used)
{
	const uint8_t *b = bytes;

	*used = 0;
	if (p->done)
		return p->last;
	if (len == 0)
		return PROXY_PROTO_MORE;
	uint8_t first = p->have ? p->buf[0] : b[0];
	if (first == (uint8_t)proxy_v1_prefix[0])
		return proxy_finish(p, proxy_v1_feed(p, b, len, used));
	if (first == proxy_v2_sig[0])
		return proxy_finish(p, proxy_v2_feed(p, b, len, used));
	return proxy_finish(p, PROXY_PROTO_INVALID);
}
