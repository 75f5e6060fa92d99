/*
 * smtp_data: the DATA-phase byte machine (see smtp_data.h for the contract).
 *
 * Exports smtp_data_init, smtp_data_feed, smtp_data_ok, smtp_data_unstuff.
 * No I/O, no allocation: the caller owns both buffers and the struct.
 *
 * Limits: none on line length (bytes are streamed one at a time); output is
 * at most two bytes per input byte, which SMTP_DATA_OUT_MAX covers.
 *
 * Why this shape: the input side and the output side are kept apart on
 * purpose. The input side only recognises line ends, strips the client's
 * stuffing dot and finds the one true terminator (raw CR LF "." CR LF).
 * The output side stuffs again from what it actually emits: any '.' that
 * lands at the start of an output line gets a dot in front. Re-stuffing
 * from the input's view instead ("the client stuffed this line") is what
 * lets ".\r.\r\n" become "\r\n.\r\n" once the bare CR is dropped, i.e. a
 * smuggled terminator toward the backend.
 *
 * The whole state fits the header's single private int: the input state in
 * the low bits and one flag saying the output line is still empty.
 */
#include "smtp_data.h"

#include <string.h>

enum {
	SMTP_DATA_BOL,        /* line start, previous line ended in CR LF */
	SMTP_DATA_BOL_LF,     /* line start, previous line ended in bare LF */
	SMTP_DATA_DOT,        /* "." at BOL */
	SMTP_DATA_DOT_LF,     /* "." at BOL_LF */
	SMTP_DATA_DOT_CR,     /* ".\r" at BOL: LF next is end of data */
	SMTP_DATA_DOT_LF_CR,  /* ".\r" at BOL_LF: LF next drops the line */
	SMTP_DATA_MID,        /* inside a line */
	SMTP_DATA_CR,         /* inside a line, CR pending */
	SMTP_DATA_END,        /* terminator consumed */
};

#define SMTP_DATA_STATE_MASK 0xff
#define SMTP_DATA_OUT_BOL 0x100 /* nothing emitted on this output line yet */

struct smtp_data_out {
	char *buf;
	size_t len;
	bool bol;
};

static bool smtp_data_muted(const struct smtp_data *d)
{
	return d->too_big || (d->mode == SMTP_BARE_REJECT && d->bare_lf);
}

/* Counting happens even while muted so the caller can log the real size. */
static void smtp_data_count(struct smtp_data *d, unsigned long long n)
{
	d->content_bytes += n;
	if (d->size_limit != 0 && d->content_bytes > d->size_limit)
		d->too_big = true;
}

static void smtp_data_byte(struct smtp_data *d, struct smtp_data_out *o,
			   char c)
{
	smtp_data_count(d, 1);
	if (smtp_data_muted(d))
		return;
	if (o->bol && c == '.') {
		o->buf[o->len++] = '.';
		d->stuffed++;
	}
	o->buf[o->len++] = c;
	o->bol = false;
}

static void smtp_data_eol(struct smtp_data *d, struct smtp_data_out *o)
{
	smtp_data_count(d, 2);
	if (smtp_data_muted(d))
		return;
	o->buf[o->len++] = '\r';
	o->buf[o->len++] = '\n';
	o->bol = true;
}

/* A bare LF ends a line in both modes; in reject mode that also mutes the
 * output, so the line end itself is never emitted there. */
static int smtp_data_bare_lf(struct smtp_data *d, struct smtp_data_out *o)
{
	d->bare_lf = true;
	smtp_data_eol(d, o);
	return SMTP_DATA_BOL_LF;
}

/* One ordinary byte inside a line (CR and LF already handled by caller). */
static int smtp_data_mid(struct smtp_data *d, struct smtp_data_out *o, char c)
{
	if (c == '\r')
		return SMTP_DATA_CR;
	if (c == '\n')
		return smtp_data_bare_lf(d, o);
	smtp_data_byte(d, o, c);
	return SMTP_DATA_MID;
}

static int smtp_data_step(struct smtp_data *d, struct smtp_data_out *o,
			  int st, char c)
{
	switch (st) {
	case SMTP_DATA_BOL:
	case SMTP_DATA_BOL_LF:
		if (c == '.')
			return st == SMTP_DATA_BOL ? SMTP_DATA_DOT
						   : SMTP_DATA_DOT_LF;
		return smtp_data_mid(d, o, c);
	case SMTP_DATA_DOT:
	case SMTP_DATA_DOT_LF:
		if (c == '\r')
			return st == SMTP_DATA_DOT ? SMTP_DATA_DOT_CR
						   : SMTP_DATA_DOT_LF_CR;
		if (c == '\n') {
			/* "." ending in bare LF: dropped, as Postfix 3.9
			 * normalize does; never end of data. */
			d->bare_lf = true;
			return SMTP_DATA_BOL_LF;
		}
		/* The dot was the client's stuffing; c is content. */
		return smtp_data_mid(d, o, c);
	case SMTP_DATA_DOT_CR:
	case SMTP_DATA_DOT_LF_CR:
		if (c == '\n') {
			if (st == SMTP_DATA_DOT_CR)
				return SMTP_DATA_END;
			/* "." after a bare-LF line: dropped. It ended in
			 * CR LF, so the next line may be the terminator. */
			return SMTP_DATA_BOL;
		}
		d->bare_cr = true;
		return smtp_data_mid(d, o, c);
	case SMTP_DATA_MID:
		return smtp_data_mid(d, o, c);
	case SMTP_DATA_CR:
		if (c == '\n') {
			smtp_data_eol(d, o);
			return SMTP_DATA_BOL;
		}
		/* Never promote a bare CR to a line end (the Cisco bug). */
		d->bare_cr = true;
		return smtp_data_mid(d, o, c);
	default:
		return SMTP_DATA_END;
	}
}

void smtp_data_init(struct smtp_data *d, enum smtp_bare_mode mode,
		    unsigned long long size_limit)
{
	*d = (struct smtp_data){
		.state = SMTP_DATA_BOL | SMTP_DATA_OUT_BOL,
		.mode = mode,
		.size_limit = size_limit,
	};
}

size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len,
		      char *out, size_t *out_len)
{
	struct smtp_data_out o = {
		.buf = out,
		.bol = (d->state & SMTP_DATA_OUT_BOL) != 0,
	};
	int st = d->state & SMTP_DATA_STATE_MASK;
	size_t i = 0;

	while (i < len && st != SMTP_DATA_END)
		st = smtp_data_step(d, &o, st, in[i++]);
	if (st == SMTP_DATA_END)
		d->done = true;
	d->state = st | (o.bol ? SMTP_DATA_OUT_BOL : 0);
	*out_len = o.len;
	return i;
}

bool smtp_data_ok(const struct smtp_data *d)
{
	return d->done && !d->bare_cr && !d->too_big &&
	       !(d->mode == SMTP_BARE_REJECT && d->bare_lf);
}

size_t smtp_data_unstuff(const char *in, size_t len, bool *bol, char *out)
{
	size_t n = 0;
	while (len > 0) {
		if (*bol && in[0] == '.') {
			in++;
			len--;
		}
		/* The rest of this line, or of the piece: copied as it is. */
		const char *lf = memchr(in, '\n', len);
		size_t take = lf ? (size_t)(lf - in) + 1 : len;
		memcpy(out + n, in, take);
		n += take;
		in += take;
		len -= take;
		*bol = lf != NULL;
	}
	return n;
}
