/*
 * smtp_data: the DATA phase state machine. Pure and resumable: bytes go in
 * in pieces of any size, split anywhere; canonical wire bytes come out.
 *
 * Input: what the client sends after 354. Output: the message in canonical
 * wire form toward the backend: every line ends in CR LF, every line that
 * starts with '.' carries one stuffing dot, and no terminator (the replay
 * appends ".\r\n" itself). The only end of data is CR LF "." CR LF, where
 * the first CR LF ends the last line (a DATA whose first line is "." also
 * ends: the CR LF before it is the one that ended the DATA command).
 *
 * Bare LF: in SMTP_BARE_NORMALIZE mode a bare LF ends a line and is emitted
 * as CR LF; a "." line that ends in a bare LF, or that follows a line ending
 * in a bare LF, is dropped (neither stored nor end of data), as Postfix 3.9
 * does. In SMTP_BARE_REJECT mode the message is marked bad (bare_lf set),
 * output stops, and input is consumed until the real end of data. A bare CR
 * is never a line end: it marks the message bad in both modes (bare_cr set)
 * and is not emitted. NUL bytes pass through unchanged.
 *
 * No limit on line length (long lines are streamed, RFC 5321 4.5.3.1.6).
 * Size: content_bytes counts the unstuffed message octets so far; once it
 * exceeds size_limit (0 = none) output stops and too_big is set, input keeps
 * being consumed until the end so the session stays in step.
 */
#ifndef SLUICE_SMTP_DATA_H
#define SLUICE_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>

enum smtp_bare_mode { SMTP_BARE_NORMALIZE, SMTP_BARE_REJECT };

struct smtp_data {
	int state;            /* private */
	enum smtp_bare_mode mode;
	unsigned long long size_limit;
	unsigned long long content_bytes;
	unsigned long long stuffed; /* stuffing dots emitted: output bytes
				       less this are the message octets */
	bool bare_lf;         /* a bare LF was seen (a signal in any mode) */
	bool bare_cr;         /* a bare CR was seen: message refused */
	bool too_big;
	bool done;            /* terminator seen */
};

void smtp_data_init(struct smtp_data *d, enum smtp_bare_mode mode,
		    unsigned long long size_limit);

/*
 * smtp_data_feed: consume input up to and including the terminator.
 * out must have room for at least SMTP_DATA_OUT_MAX(len) bytes; *out_len
 * gets the number written. Returns the number of input bytes consumed,
 * which is len unless the terminator was found (then d->done is true and
 * the bytes after the terminator are left to the caller: pipelined
 * commands).
 */
#define SMTP_DATA_OUT_MAX(len) (2 * (len) + 8)
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len,
		      char *out, size_t *out_len);

/* Whether the message may be sent on: done && !bare_cr && !too_big &&
 * !(mode == REJECT && bare_lf). */
bool smtp_data_ok(const struct smtp_data *d);

/*
 * smtp_data_unstuff: smtp_data's output back to the message octets (what
 * BDAT counts and carries, RFC 3030): the first '.' of every line is
 * dropped. Resumable: *bol says a line starts at in[0] (true before the
 * first piece) and is updated for the next piece. Input: smtp_data's own
 * output only (every line ends in CR LF, every '.' at a line start is a
 * stuffing dot), any length, split anywhere. out must have room for len
 * bytes; returns the number written (len less the dots dropped).
 */
size_t smtp_data_unstuff(const char *in, size_t len, bool *bol, char *out);

#endif
