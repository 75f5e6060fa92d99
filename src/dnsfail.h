/*
 * dnsfail: what a failed DNS look-up means, and its rate-limited report.
 *
 * One rule for every look-up (client PTR, forward confirmation, DNSBL):
 * only NXDOMAIN or an answer without data says something about the name
 * (DNSFAIL_ABSENT); every other failure -- REFUSED, SERVFAIL, FORMERR,
 * NOTIMPL, TRUNCATED, a timeout, an answer evdns cannot parse -- says
 * something about the resolver (DNSFAIL_TEMP) and must never become
 * evidence against a client.
 */
#ifndef SLUICE_DNSFAIL_H
#define SLUICE_DNSFAIL_H

#include <stdbool.h>

enum dnsfail_kind {
	DNSFAIL_NONE,   /* an answer */
	DNSFAIL_ABSENT, /* NXDOMAIN or no data: the name has no such record */
	DNSFAIL_TEMP,   /* the resolver could not tell */
};

/* result: an evdns DNS_ERR_* value. */
enum dnsfail_kind dnsfail_classify(int result);

/* A short greppable word for result ("refused", "timeout", ...). */
const char *dnsfail_word(int result);

/* Counts a temporary failure (METRIC_DNS_FAILURES) and logs one warning
 * line per server at most once a minute (ratelog.h), with the
 * number of failures not logged since. server: what failed ("reverse",
 * "forward" or a DNSBL domain; evdns does not say which resolver
 * answered); client: the client address text. */
void dnsfail_report(const char *server, const char *client, int result);

/* Whether a warning about key is due now (at most once a minute per
 * key); *suppressed gets the number of calls
 * for key since the last one that returned true. */
bool dnsfail_log_due(const char *key, unsigned *suppressed);

#endif
