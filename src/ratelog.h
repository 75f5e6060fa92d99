/*
 * ratelog: one log line per interval for events that come in floods (a
 * limit hit by every new connection). The caller counts each event and
 * logs only when ratelog_due says so, with the number of events since the
 * last line, so that a flood costs one line a minute and not one per
 * connection, and the count is never lost.
 */
#ifndef SLUICE_RATELOG_H
#define SLUICE_RATELOG_H

#include <stdbool.h>
#include <time.h>

#define RATELOG_INTERVAL_S 60

struct ratelog {
	time_t last;          /* when the last line was written; 0: never */
	unsigned long count;  /* events since then */
};

/* Counts one event at time now; true when a line is due, with *n set to
 * the events it reports (this one included); the count then restarts. */
bool ratelog_due(struct ratelog *r, time_t now, unsigned long *n);

#endif
