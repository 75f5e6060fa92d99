/*
 * json: JSON string output (see json.h). Exports json_str.
 */
#include "json.h"

#include <event2/buffer.h>
#include <stddef.h>
#include <stdio.h>

/* Length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t json_utf8_len(const unsigned char *p)
{
	size_t n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	if (p[0] >= 0xf5)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

int json_str(struct evbuffer *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	if (evbuffer_add(b, "\"", 1) != 0)
		return -1;
	while (*p) {
		int rc;
		size_t n;
		if (*p == '"' || *p == '\\') {
			char esc[2] = {'\\', (char)*p};
			rc = evbuffer_add(b, esc, 2);
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			rc = evbuffer_add_printf(b, "\\u%04x", *p) < 0 ? -1 : 0;
			p++;
		} else if (*p < 0x80) {
			rc = evbuffer_add(b, p, 1);
			p++;
		} else if ((n = json_utf8_len(p)) != 0) {
			rc = evbuffer_add(b, p, n);
			p += n;
		} else {
			rc = evbuffer_add(b, "\\ufffd", 6);
			p++;
		}
		if (rc != 0)
			return -1;
	}
	return evbuffer_add(b, "\"", 1);
}
