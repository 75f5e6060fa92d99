/*
 * backend_warn: known mail server misconfigurations, recognised and
 * explained (see backend_warn.h).
 *
 * Exports backend_warn_classify_xclient (pure), backend_warn_advice,
 * backend_warn_name and backend_warn_seen. The rate limit is per process
 * (each worker warns at most once a minute per problem): a small static
 * table written only by the loop thread. The counters are the metrics
 * sluice_backend_problems_total{problem=...}, shared by all workers.
 *
 * The texts recognised are Postfix's (smtpd.c, xclient_cmd): "Bad ADDR
 * syntax" (501 5.5.4) when it cannot parse the address, which for an
 * IPv6 address means inet_protocols does not include ipv6, and
 * "insufficient authorization" (550 5.7.0) when the client is not in
 * smtpd_authorized_xclient_hosts. Postfix does not offer XCLIENT in EHLO
 * to unauthorised clients at all, so "not offered" is the usual form of
 * the second problem.
 *
 * Rejected: one warning per refusal (a busy MX would write thousands of
 * identical lines a minute and bury the one that says what to do).
 */
#include "backend_warn.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ascii.h"
#include "log.h"
#include "metrics.h"

#define BACKEND_WARN_TEXT_MAX 512

static const char *const backend_problem_names[] = {
#define BACKEND_PROBLEM_NAME(n, s) s,
	BACKEND_PROBLEMS(BACKEND_PROBLEM_NAME)
#undef BACKEND_PROBLEM_NAME
};

static const enum metric_id backend_problem_metric[BACKEND_PROBLEM_COUNT] = {
	[BACKEND_PROBLEM_XCLIENT_IPV6] = METRIC_BACKEND_XCLIENT_IPV6,
	[BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED] = METRIC_BACKEND_XCLIENT_UNAUTHORIZED,
	[BACKEND_PROBLEM_XCLIENT_NOT_OFFERED] = METRIC_BACKEND_XCLIENT_NOT_OFFERED,
};

static struct {
	time_t last;       /* monotonic seconds of the last warning; 0 none */
	unsigned long quiet; /* occurrences since, not logged */
} backend_warned[BACKEND_PROBLEM_COUNT];

const char *backend_warn_name(enum backend_problem p)
{
	return (unsigned)p < BACKEND_PROBLEM_COUNT ? backend_problem_names[p] : "?";
}

const char *backend_warn_advice(enum backend_problem p)
{
	switch (p) {
	case BACKEND_PROBLEM_XCLIENT_IPV6:
		return "the mail server cannot take IPv6 client addresses in XCLIENT, so "
		       "every IPv6 client gets 451 4.3.0; in Postfix set "
		       "inet_protocols = all (or ipv4, ipv6) in main.cf and run "
		       "'postfix stop; postfix start'";
	case BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED:
		return "the mail server does not allow sluice to send XCLIENT; in Postfix add "
		       "the address sluice connects from to smtpd_authorized_xclient_hosts "
		       "in main.cf and run 'postfix reload' (or set backend_xclient = no)";
	case BACKEND_PROBLEM_XCLIENT_NOT_OFFERED:
		return "the mail server does not offer XCLIENT with ADDR to sluice; Postfix "
		       "offers it only to smtpd_authorized_xclient_hosts: add the address "
		       "sluice connects from there in main.cf and run 'postfix reload'; a "
		       "server without XCLIENT needs backend_xclient = no";
	case BACKEND_PROBLEM_NONE:
	case BACKEND_PROBLEM_COUNT:
		break;
	}
	return "";
}

bool backend_warn_offers(const char *attrs, const char *attr)
{
	size_t n = strlen(attr);
	for (const char *p = attrs; *p;) {
		while (*p == ' ')
			p++;
		size_t len = strcspn(p, " ");
		if (len == n && ascii_eq_nocase(p, n, attr, n))
			return true;
		p += len;
	}
	return false;
}

/* Case-insensitive search in the first BACKEND_WARN_TEXT_MAX bytes. */
static bool backend_warn_contains(const char *text, const char *word)
{
	size_t n = strlen(word), len = strnlen(text, BACKEND_WARN_TEXT_MAX);
	for (size_t i = 0; i + n <= len; i++)
		if (strncasecmp(text + i, word, n) == 0)
			return true;
	return false;
}

enum backend_problem backend_warn_classify_xclient(int code, const char *text,
						   bool ipv6)
{
	if (code < 400)
		return BACKEND_PROBLEM_NONE;
	if (!text)
		text = "";
	if (code == 501 && ipv6 && backend_warn_contains(text, "ADDR"))
		return BACKEND_PROBLEM_XCLIENT_IPV6;
	if (code / 100 == 5 && backend_warn_contains(text, "authoriz"))
		return BACKEND_PROBLEM_XCLIENT_UNAUTHORIZED;
	return BACKEND_PROBLEM_NONE;
}

void backend_warn_xclient_refused(int code, const char *enhanced, const char *text,
				  bool ipv6)
{
	enum backend_problem p = backend_warn_classify_xclient(code, text, ipv6);
	if (p == BACKEND_PROBLEM_NONE)
		return;
	char detail[BACKEND_WARN_TEXT_MAX];
	snprintf(detail, sizeof detail, "%d %s%s%s", code, enhanced ? enhanced : "",
		 enhanced && *enhanced ? " " : "", text ? text : "");
	backend_warn_seen(p, detail);
}

void backend_warn_seen(enum backend_problem p, const char *detail)
{
	struct timespec ts;

	if (p <= BACKEND_PROBLEM_NONE || p >= BACKEND_PROBLEM_COUNT)
		return;
	metrics_inc(backend_problem_metric[p]);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* +1: a clock at 0 must not read as "never warned". */
	time_t now = ts.tv_sec + 1;
	if (backend_warned[p].last &&
	    now - backend_warned[p].last < BACKEND_WARN_INTERVAL_S) {
		backend_warned[p].quiet++;
		return;
	}
	char esc[200];
	log_escape(esc, sizeof esc, detail ? detail : "", detail ? strlen(detail) : 0);
	log_warn("backend: MISCONFIGURED problem=%s answer=\"%s\" repeats=%lu: %s",
		 backend_problem_names[p], esc, backend_warned[p].quiet,
		 backend_warn_advice(p));
	backend_warned[p].last = now;
	backend_warned[p].quiet = 0;
}
