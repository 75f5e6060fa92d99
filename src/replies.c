/*
 * replies: formats entries of the reply catalogue (replies.h). One table so
 * that no reply text is scattered through the dialogue code, and so that
 * tests can loop over every reply.
 */
#include "replies.h"

#include <stdio.h>
#include <string.h>

struct reply_entry {
	int code;
	const char *enhanced;
	const char *text;
};

static const struct reply_entry reply_table[REPLY_COUNT] = {
#define REPLY_ROW(id, c, e, t) [REPLY_##id] = {c, e, t},
	REPLIES(REPLY_ROW)
#undef REPLY_ROW
};

int reply_code(enum reply_id id)
{
	return reply_table[id].code;
}

size_t reply_format(enum reply_id id, const char *myhostname,
		    const char *client, char *dst, size_t dst_cap)
{
	const struct reply_entry *r = &reply_table[id];
	int n = *r->enhanced ? snprintf(dst, dst_cap, "%d %s ", r->code,
					r->enhanced)
			     : snprintf(dst, dst_cap, "%d ", r->code);
	if (n < 0 || (size_t)n >= dst_cap)
		return 0;
	size_t len = (size_t)n;
	for (const char *p = r->text; *p; p++) {
		const char *piece = p;
		size_t piece_len = 1;
		if (p[0] == '%' && (p[1] == 'H' || p[1] == 'C')) {
			piece = p[1] == 'H' ? myhostname : client ? client : "";
			piece_len = strlen(piece);
			p++;
		}
		if (len + piece_len + 3 > dst_cap)
			return 0;
		memcpy(dst + len, piece, piece_len);
		len += piece_len;
	}
	memcpy(dst + len, "\r\n", 3);
	return len + 2;
}
