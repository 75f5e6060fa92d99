/*
 * ratelog: rate-limited log lines (see ratelog.h). Exports ratelog_ok.
 */
#include "ratelog.h"

bool ratelog_ok(struct ratelog *rl, long long now_ms, long interval_ms,
		unsigned long *suppressed)
{
	if (now_ms < rl->next_ms) {
		rl->suppressed++;
		return false;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->next_ms = now_ms + interval_ms;
	return true;
}
