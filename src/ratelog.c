/*
 * ratelog: flood-proof log lines (see ratelog.h). The first event logs at
 * once (an operator sees the limit the moment it is hit), later ones at
 * most once per RATELOG_INTERVAL_S, each line carrying the count.
 */
#include "ratelog.h"

bool ratelog_due(struct ratelog *r, time_t now, unsigned long *n)
{
	r->count++;
	if (r->last != 0 && now - r->last < RATELOG_INTERVAL_S && now >= r->last)
		return false;
	*n = r->count;
	r->count = 0;
	r->last = now;
	return true;
}
