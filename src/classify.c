/*
 * classify: scoring and logging of classification signals (classify.h).
 * The checks themselves live with what they look at: dnsbl.c (lists),
 * rdns.c, helo.c, cidr.c (names, HELO, networks), store.c (reputation and passes), the
 * dialogue (pre-greeting talk, pipelining, bare newlines, errors). This
 * file is the one place where a signal becomes a score, a log line and a
 * counter, so every signal is reported the same way.
 */
#include "classify.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"

static const struct {
	const char *tag;
	enum metric_id metric;
	size_t weight_off; /* unsigned field of struct config */
} signal_table[SIGNAL_COUNT] = {
#define SIGNAL_ROW(id, m, w) [SIGNAL_##id] = {#id, m, w},
	SIGNALS(SIGNAL_ROW)
#undef SIGNAL_ROW
};

const char *classify_tag(enum signal_id sig)
{
	return signal_table[sig].tag;
}

int classify_weight(const struct config *cfg, enum signal_id sig)
{
	size_t off = signal_table[sig].weight_off;
	if (off == NO_WEIGHT)
		return 0;
	return (int)*(const unsigned *)((const char *)cfg + off);
}

int classify_add(struct classify *c, unsigned long long session_id,
		 const char *client, enum signal_id sig, int weight,
		 const char *detail)
{
	if (c->fired & (1u << sig))
		return 0;
	c->fired |= 1u << sig;
	c->score += weight;
	metrics_inc(signal_table[sig].metric);
	char esc[200];
	log_escape(esc, sizeof esc, detail ? detail : "", detail ? strlen(detail) : 0);
	log_info("session=%llu client=%s %s weight=%d score=%d%s%s", session_id,
		 client, signal_table[sig].tag, weight, c->score, esc[0] ? " " : "", esc);
	return 1;
}

const char *classify_list(const struct classify *c, char *buf, size_t cap)
{
	size_t len = 0;
	buf[0] = 0;
	for (int i = 0; i < SIGNAL_COUNT; i++) {
		if (!(c->fired & (1u << i)))
			continue;
		int n = snprintf(buf + len, cap - len, "%s%s", len ? "," : "", signal_table[i].tag);
		if (n < 0 || (size_t)n >= cap - len)
			break;
		len += (size_t)n;
	}
	if (!len)
		snprintf(buf, cap, "-");
	return buf;
}
