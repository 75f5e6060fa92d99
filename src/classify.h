/*
 * classify: the session's score. Each signal adds its weight once per
 * session, is logged with its UPPERCASE tag and counted; the session
 * compares the score with shape_threshold and reject_threshold.
 */
#ifndef SLUICE_CLASSIFY_H
#define SLUICE_CLASSIFY_H

#include <stddef.h>

#include "config.h"

#include "metrics.h"

/* X(ID, metric, weight setting) — the tag is the ID's name; NO_WEIGHT:
 * the signal carries its own weight (lists, reputation) or none (passes). */
#define WEIGHT(field) offsetof(struct config, field)
#define NO_WEIGHT ((size_t)-1)
#define SIGNALS(X)                                                             \
	X(DNSBL, METRIC_SIGNAL_DNSBL, NO_WEIGHT)                                    \
	X(DNSWL, METRIC_SIGNAL_DNSWL, NO_WEIGHT)                                    \
	X(NOPTR, METRIC_SIGNAL_NOPTR, WEIGHT(weight_ptr_missing))                      \
	X(PTRUNCONFIRMED, METRIC_SIGNAL_PTRUNCONFIRMED, WEIGHT(weight_ptr_unconfirmed)) \
	X(PTRGENERIC, METRIC_SIGNAL_PTRGENERIC, WEIGHT(weight_ptr_generic))            \
	X(PREGREET, METRIC_SIGNAL_PREGREET, WEIGHT(weight_pregreet))                   \
	X(HELO, METRIC_SIGNAL_HELO, WEIGHT(weight_helo))                               \
	X(PIPELINING, METRIC_SIGNAL_PIPELINING, WEIGHT(weight_pipelining))             \
	X(BARENEWLINE, METRIC_SIGNAL_BARENEWLINE, WEIGHT(weight_bare_newline))         \
	X(NONSMTP, METRIC_SIGNAL_NONSMTP, WEIGHT(weight_non_smtp))                     \
	X(ERRORS, METRIC_SIGNAL_ERRORS, WEIGHT(weight_errors))                         \
	X(DENYLIST, METRIC_SIGNAL_DENYLIST, WEIGHT(weight_deny))                       \
	X(ALLOWLIST, METRIC_SIGNAL_ALLOWLIST, NO_WEIGHT)                            \
	X(REPUTATION, METRIC_SIGNAL_REPUTATION, NO_WEIGHT)                          \
	X(CONTENT, METRIC_SIGNAL_CONTENT, NO_WEIGHT)                                \
	X(PASS, METRIC_SIGNAL_PASS, NO_WEIGHT)

enum signal_id {
#define SIGNAL_ENUM(id, m, w) SIGNAL_##id,
	SIGNALS(SIGNAL_ENUM)
#undef SIGNAL_ENUM
	SIGNAL_COUNT
};

struct classify {
	int score;
	unsigned fired; /* bit per signal_id */
};

const char *classify_tag(enum signal_id sig);

/* The configured weight of a signal with a fixed weight (DNSBL/DNSWL and
 * REPUTATION carry their own). */
int classify_weight(const struct config *cfg, enum signal_id sig);

/* Adds sig with weight once (a second call for the same signal is
 * ignored and returns 0); logs "session=ID client=ADDR TAG weight=W
 * score=S detail" and counts it. Returns 1 when it fired now. detail may
 * hold client bytes: it is escaped. */
int classify_add(struct classify *c, unsigned long long session_id,
		 const char *client, enum signal_id sig, int weight,
		 const char *detail);

/* "DNSBL,PREGREET" or "-" into buf. */
const char *classify_list(const struct classify *c, char *buf, size_t cap);

#endif
