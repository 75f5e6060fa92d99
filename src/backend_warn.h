/*
 * backend_warn: the mail server misconfigurations an administrator can fix
 * on the mail server's side, recognised from its answers to XCLIENT and
 * EHLO, each turned into one warning a minute that names the Postfix
 * setting to change, and a counter. Used by replay (on every refusal) and
 * by "sluice -n --check-backend" (backend_check.h).
 */
#ifndef SLUICE_BACKEND_WARN_H
#define SLUICE_BACKEND_WARN_H

#include <stdbool.h>

#define BACKEND_WARN_INTERVAL_S 60 /* one warning per problem per minute */

/* X(NAME, "metric label") */
#define BACKEND_PROBLEMS(X)                                                    \
	X(NONE, "none")                                                        \
	X(XCLIENT_IPV6, "xclient_ipv6")                                        \
	X(XCLIENT_UNAUTHORIZED, "xclient_unauthorized")                        \
	X(XCLIENT_NOT_OFFERED, "xclient_not_offered")

enum backend_problem {
#define BACKEND_PROBLEM_ENUM(n, s) BACKEND_PROBLEM_##n,
	BACKEND_PROBLEMS(BACKEND_PROBLEM_ENUM)
#undef BACKEND_PROBLEM_ENUM
	BACKEND_PROBLEM_COUNT
};

/*
 * backend_warn_classify_xclient: which problem a refusal of XCLIENT shows.
 * code: the reply code; text: the reply text without code and enhanced
 * code (any bytes up to NUL; only its first 512 are looked at);
 * ipv6: whether the ADDR sent was an IPv6 address.
 *   501 "Bad ADDR syntax" for an IPv6 ADDR -> XCLIENT_IPV6 (Postfix with
 *       inet_protocols = ipv4 cannot take IPv6 client addresses)
 *   550 (or any 5xx) "insufficient authorization" -> XCLIENT_UNAUTHORIZED
 *   anything else -> NONE (not a known misconfiguration).
 */
enum backend_problem backend_warn_classify_xclient(int code, const char *text,
						   bool ipv6);

/* Whether the XCLIENT attribute list of an EHLO reply ("NAME ADDR PROTO
 * ...", NUL-terminated, as smtp_reply keeps it) names attr as a whole word
 * (case-insensitive; "ADDR" is not found in "DESTADDR"). */
bool backend_warn_offers(const char *attrs, const char *attr);

/* What to change, for people: one sentence naming the setting. */
const char *backend_warn_advice(enum backend_problem p);
const char *backend_warn_name(enum backend_problem p);

/*
 * backend_warn_seen: counts the problem (metric) and logs the warning
 * with the advice and the server's own words (detail, may be NULL), at
 * most once per BACKEND_WARN_INTERVAL_S per problem in this process;
 * the lines in between are only counted, and the next warning says how
 * many. Loop thread only.
 */
void backend_warn_seen(enum backend_problem p, const char *detail);

/* The replay's hook: classifies a refused XCLIENT (as above) and, when it
 * is a known problem, backend_warn_seen with "CODE ENHANCED TEXT". */
void backend_warn_xclient_refused(int code, const char *enhanced, const char *text,
				  bool ipv6);

#endif
