/*
 * ratelog: at most one log line per interval for one kind of trouble; the
 * lines held back meanwhile are counted and reported by the next one.
 * Owned by its caller (a plain struct, zero = ready); loop thread only.
 */
#ifndef SLUICE_RATELOG_H
#define SLUICE_RATELOG_H

#include <stdbool.h>

struct ratelog {
	long long next_ms;
	unsigned long suppressed;
};

/* True when a line may go out at now_ms (any clock, used consistently);
 * then *suppressed is the count held back since the last one, and the
 * next line waits interval_ms. False counts one more held back. */
bool ratelog_ok(struct ratelog *rl, long long now_ms, long interval_ms,
		unsigned long *suppressed);

#endif
