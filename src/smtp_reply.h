/*
 * smtp_reply: parser for replies read from the backend (RFC 5321 4.2).
 * Pure and resumable over lines: the caller hands one line at a time
 * (CR LF removed); the parser accumulates a multi-line reply.
 */
#ifndef SLUICE_SMTP_REPLY_H
#define SLUICE_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_REPLY_LINE_MAX 1000 /* RFC 5321 4.5.3.1.5, incl. CR LF */
#define SMTP_REPLY_LINES_MAX 64  /* lines in one multi-line reply */
#define SMTP_REPLY_TEXT_MAX 4096 /* accumulated text kept */

struct smtp_reply {
	int code;            /* 200..599 */
	char enhanced[16];   /* "2.1.5" when the first line carries one, else "" */
	char text[SMTP_REPLY_TEXT_MAX]; /* text of all lines, enhanced code
					  removed, lines joined by '\n' */
	size_t text_len;
	unsigned lines;
	bool complete;
	/* EHLO keywords seen (set on any multi-line 250 reply) */
	bool has_pipelining, has_xclient, has_starttls, has_8bitmime,
		has_smtputf8, has_size, has_chunking;
	long long size_max; /* SIZE n, 0 when none or unlimited */
	char xclient_attrs[256]; /* "NAME ADDR PORT PROTO HELO ..." as offered */
};

enum smtp_reply_status {
	SMTP_REPLY_MORE,     /* continuation line accepted, need next */
	SMTP_REPLY_DONE,     /* last line accepted: reply complete */
	SMTP_REPLY_INVALID,  /* bad code, mixed codes, bad separator, too
				many lines, line too long, control bytes */
};

void smtp_reply_init(struct smtp_reply *r);

/* smtp_reply_line: one line without CR LF, len <= SMTP_REPLY_LINE_MAX - 2.
 * Lines of a multi-line reply must repeat the same code. */
enum smtp_reply_status smtp_reply_line(struct smtp_reply *r, const char *line,
				       size_t len);

#endif
