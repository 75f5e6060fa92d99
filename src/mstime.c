/*
 * mstime: millisecond clocks and the ms -> struct timeval conversion (see
 * mstime.h). Exports mstime_real, mstime_mono, mstime_tv.
 */
#include "mstime.h"

#include <time.h>

static long long mstime_clock(clockid_t id)
{
	struct timespec ts;

	/* Cannot fail for these clocks with a valid pointer. */
	if (clock_gettime(id, &ts) != 0)
		return 0;
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long mstime_real(void)
{
	return mstime_clock(CLOCK_REALTIME);
}

long long mstime_mono(void)
{
	return mstime_clock(CLOCK_MONOTONIC);
}

struct timeval mstime_tv(long long ms)
{
	struct timeval tv = { 0, 0 };

	if (ms > 0) {
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	}
	return tv;
}
