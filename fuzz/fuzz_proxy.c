/*
 * fuzz_proxy: libFuzzer target for proxy_proto_feed. The first input byte
 * picks a chunk size (1..16, or all at once); the rest is fed in chunks of
 * that size until the parser stops asking for more. Checks with abort():
 * the same input fed whole gives the same result; DONE uses exactly
 * header_len bytes in total, within the documented limits, with an
 * address of the right family and length for PROXY; nothing is taken
 * after the end.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum proxy_proto_rc fuzz_proxy_run(struct proxy_proto *p, const uint8_t *d,
					  size_t size, size_t chunk, size_t *total)
{
	enum proxy_proto_rc rc = PROXY_PROTO_MORE;
	size_t off = 0, used;

	proxy_proto_init(p);
	*total = 0;
	while (off < size && rc == PROXY_PROTO_MORE) {
		size_t n = size - off < chunk ? size - off : chunk;
		rc = proxy_proto_feed(p, d + off, n, &used);
		if (used > n)
			abort();
		if (rc == PROXY_PROTO_MORE && used != n)
			abort();
		*total += used;
		off += n;
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_proto *a = malloc(sizeof *a), *b = malloc(sizeof *b);
	size_t ta, tb, used;

	if (!a || !b || size == 0)
		goto out;
	size_t chunk = data[0] % 17;
	data++;
	size--;
	enum proxy_proto_rc ra = fuzz_proxy_run(a, data, size, chunk ? chunk : size + 1, &ta);
	enum proxy_proto_rc rb = fuzz_proxy_run(b, data, size, size + 1, &tb);
	if (ra != rb)
		abort();
	if (ra == PROXY_PROTO_DONE) {
		if (ta != a->header_len || tb != b->header_len || ta != tb)
			abort();
		if (a->version == 1 && a->header_len > PROXY_V1_LINE_MAX)
			abort();
		if (a->version == 2 &&
		    a->header_len > PROXY_V2_HDR_LEN + PROXY_V2_BODY_MAX)
			abort();
		if (a->version != 1 && a->version != 2)
			abort();
		if (a->cmd != b->cmd)
			abort();
		if (a->cmd == PROXY_CMD_PROXY) {
			if (a->src.ss_family != a->dst.ss_family ||
			    (a->src.ss_family != AF_INET && a->src.ss_family != AF_INET6))
				abort();
			if (a->addr_len != (a->src.ss_family == AF_INET
						    ? sizeof(struct sockaddr_in)
						    : sizeof(struct sockaddr_in6)))
				abort();
			if (memcmp(&a->src, &b->src, sizeof a->src) != 0)
				abort();
		}
	}
	if (ra != PROXY_PROTO_MORE &&
	    (proxy_proto_feed(a, "x", 1, &used) != ra || used != 0))
		abort();
out:
	free(a);
	free(b);
	return 0;
}
