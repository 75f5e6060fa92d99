/*
 * proxy_proto: parser for the PROXY protocol header (HAProxy's
 * proxy-protocol.txt, versions 1 and 2) that a load balancer sends before
 * the client's first byte. Pure and resumable: the caller feeds bytes as
 * they arrive; the parser keeps what it needs in its own bounded buffer
 * and says how many of the fed bytes belonged to the header, so the bytes
 * after it stay the client's. No I/O, no allocation, no log.
 *
 * Limits: a v1 line is at most PROXY_V1_LINE_MAX bytes with its CR LF
 * (the specification's 107); a v2 header is 16 bytes plus at most
 * PROXY_V2_BODY_MAX bytes of addresses and TLVs (longer: TOO_LONG, though
 * the specification allows 65535). TLVs are walked for structure only;
 * their values (CRC32C, TLS details, unique ids) are not used.
 */
#ifndef SLUICE_PROXY_PROTO_H
#define SLUICE_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_LINE_MAX 107 /* "PROXY TCP6 <39> <39> <5> <5>\r\n" */
#define PROXY_V2_SIG_LEN 12
#define PROXY_V2_HDR_LEN 16
#define PROXY_V2_BODY_MAX 1024 /* addresses + TLVs we accept */

enum proxy_proto_rc {
	PROXY_PROTO_MORE,     /* header not complete: feed more */
	PROXY_PROTO_DONE,     /* header complete: see the result */
	PROXY_PROTO_INVALID,  /* not a PROXY header, or a malformed one */
	PROXY_PROTO_TOO_LONG, /* past PROXY_V1_LINE_MAX / PROXY_V2_BODY_MAX */
};

/* What the header says about the connection. */
enum proxy_proto_cmd {
	PROXY_CMD_PROXY,   /* a relayed client: src holds its address */
	PROXY_CMD_LOCAL,   /* v2 LOCAL: the proxy's own (health check) */
	PROXY_CMD_UNKNOWN, /* v1 UNKNOWN, or v2 PROXY for a family or
			      transport other than TCP over IPv4/IPv6 */
};

struct proxy_proto {
	/* parser state; read only the fields below it */
	uint8_t buf[PROXY_V2_HDR_LEN + PROXY_V2_BODY_MAX];
	size_t have;       /* bytes of the header in buf */
	size_t need;       /* v2: total header length once known, else 0 */
	int done;          /* DONE or an error returned: nothing more taken */
	enum proxy_proto_rc last;

	/* result, valid after DONE */
	int version;       /* 1 or 2 */
	enum proxy_proto_cmd cmd;
	struct sockaddr_storage src, dst; /* PROXY_CMD_PROXY only */
	socklen_t addr_len;
	size_t header_len; /* bytes the header took on the wire */
};

void proxy_proto_init(struct proxy_proto *p);

/*
 * proxy_proto_feed: len bytes (any values) received after those fed
 * before. *used is set to how many of them belong to the header (all of
 * them on MORE; the header's tail on DONE; unspecified on errors). After
 * DONE or an error, further calls return the same result and use nothing.
 */
enum proxy_proto_rc proxy_proto_feed(struct proxy_proto *p, const void *bytes,
				     size_t len, size_t *used);

const char *proxy_proto_cmd_name(enum proxy_proto_cmd cmd);

#endif
