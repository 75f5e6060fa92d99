/*
 * mstime: time in milliseconds, the unit of every setting and timer in
 * sluice. Real time for what is stored or compared across processes
 * (reputation, passes); monotonic time for intervals within one process.
 */
#ifndef SLUICE_MSTIME_H
#define SLUICE_MSTIME_H

#include <sys/time.h>

/* CLOCK_REALTIME in ms: the stores' time base (same in every process and
 * after a restart). */
long long mstime_real(void);

/* CLOCK_MONOTONIC in ms: for intervals and deadlines. */
long long mstime_mono(void);

/* ms as a struct timeval for libevent; a negative ms is 0. */
struct timeval mstime_tv(long long ms);

#endif
