/*
 * fuzz_dnsbl: libFuzzer target for dnsbl_parse, dnsbl_match and
 * dnsbl_query_name. Input: one control byte (error buffer size, output
 * capacity), four bytes of an A record, sixteen of a client address, then
 * the dnsbl_sites text. Checks that the error text stays inside its buffer,
 * a parsed list keeps the header's limits, error codes and answers outside
 * 127.0.0.0/8 never match, and query names fit their buffer and DNS's 253
 * bytes. The spec is copied to an exact-size buffer so ASan sees over-reads.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnsbl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DNSBL_HEAD 21  /* control + A record + client address */
#define FUZZ_DNSBL_NAME_MAX 253

static void fuzz_dnsbl_name(const struct dnsbl_site *site,
			    const struct sockaddr *addr, size_t cap)
{
	char *out = malloc(cap ? cap : 1);
	if (!out)
		return;
	size_t n = dnsbl_query_name(site, addr, out, cap);
	if (n && (n >= cap || n > FUZZ_DNSBL_NAME_MAX || strlen(out) != n))
		abort();
	free(out);
}

static void fuzz_dnsbl_site(const struct dnsbl_site *site, uint32_t a,
			    const uint8_t *client, size_t cap)
{
	size_t dlen = strnlen(site->domain, sizeof site->domain);
	if (dlen == 0 || dlen > DNSBL_DOMAIN_MAX)
		abort();
	if (site->weight < -1000000 || site->weight > 1000000)
		abort();

	uint32_t h = ntohl(a);
	bool m = dnsbl_match(site, a);
	if (m && (h >> 24 != 127 || (h & 0xffffff00u) == 0x7fffff00u))
		abort();
	/* The error codes never count, whatever the filter. */
	if (dnsbl_match(site, htonl(0x7fffff00u | (h & 0xffu))))
		abort();

	struct sockaddr_in sin = { .sin_family = AF_INET };
	memcpy(&sin.sin_addr, client, 4);
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	memcpy(&sin6.sin6_addr, client, 16);
	fuzz_dnsbl_name(site, (struct sockaddr *)&sin, cap);
	fuzz_dnsbl_name(site, (struct sockaddr *)&sin6, cap);
	/* The biggest buffer must always be enough for a parsed site. */
	char big[FUZZ_DNSBL_NAME_MAX + 1];
	if (dnsbl_query_name(site, (struct sockaddr *)&sin6, big, sizeof big) == 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dnsbl_list list;
	uint32_t a;

	if (size < FUZZ_DNSBL_HEAD)
		return 0;
	size_t err_len = data[0] & 0x3f;         /* 0..63, tight on purpose */
	size_t cap = ((size_t)data[0] >> 6) * 90; /* 0, 90, 180, 270 */
	memcpy(&a, data + 1, sizeof a);
	const uint8_t *client = data + 5;
	size_t len = size - FUZZ_DNSBL_HEAD;

	char *spec = malloc(len ? len : 1);
	char *err = malloc(err_len ? err_len : 1);
	if (!spec || !err)
		goto out;
	memcpy(spec, data + FUZZ_DNSBL_HEAD, len);
	if (err_len)
		memset(err, 'x', err_len);

	int rc = dnsbl_parse(spec, len, &list, err, err_len);
	if (err_len && !memchr(err, '\0', err_len))
		abort();
	if (rc != 0) {
		if (rc != -1 || list.n != 0)
			abort();
		goto out;
	}
	if (list.n > DNSBL_SITES_MAX)
		abort();
	for (size_t i = 0; i < list.n; i++)
		fuzz_dnsbl_site(&list.sites[i], a, client, cap);
out:
	free(spec);
	free(err);
	return 0;
}
