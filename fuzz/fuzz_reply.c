/*
 * fuzz_reply: libFuzzer target for smtp_reply_line. The input is split at
 * LF into lines (a CR before the LF is dropped, as the caller would) and
 * fed until the reply ends or breaks. Checks with abort(): strings stay
 * NUL-terminated inside their arrays, counters inside their limits, and
 * nothing is accepted once the reply is over.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_reply_check(const struct smtp_reply *r)
{
	if (r->text_len >= SMTP_REPLY_TEXT_MAX || r->text[r->text_len] != '\0')
		abort();
	if (memchr(r->enhanced, '\0', sizeof r->enhanced) == NULL ||
	    memchr(r->xclient_attrs, '\0', sizeof r->xclient_attrs) == NULL)
		abort();
	if (r->lines > SMTP_REPLY_LINES_MAX || r->size_max < 0)
		abort();
	if (r->lines > 0 && (r->code < 200 || r->code > 559))
		abort();
	if (r->enhanced[0] && (r->enhanced[0] != '0' + r->code / 100 ||
			       r->enhanced[1] != '.'))
		abort();
	if (!r->has_xclient && r->xclient_attrs[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reply *r = malloc(sizeof *r);
	const char *p = (const char *)data, *end = p + size;
	enum smtp_reply_status st = SMTP_REPLY_MORE;

	if (!r)
		return 0;
	smtp_reply_init(r);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *line;

		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > SMTP_REPLY_LINE_MAX - 2)
			n = SMTP_REPLY_LINE_MAX - 2 + (n & 1);
		line = malloc(n ? n : 1);
		if (!line)
			break;
		memcpy(line, p, n);
		st = smtp_reply_line(r, line, n);
		free(line);
		if (st == SMTP_REPLY_INVALID) {
			if (r->complete)
				abort();
			if (smtp_reply_line(r, "250 ok", 6) !=
			    SMTP_REPLY_INVALID)
				abort();
			break;
		}
		fuzz_reply_check(r);
		if ((st == SMTP_REPLY_DONE) != r->complete)
			abort();
		if (st == SMTP_REPLY_DONE) {
			if (smtp_reply_line(r, "250 ok", 6) !=
			    SMTP_REPLY_INVALID)
				abort();
			break;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	free(r);
	return 0;
}
