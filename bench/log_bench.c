/*
 * log_bench: what one log_msg call costs its caller (the event loop), with
 * the log destination reading (/dev/null) and with it stalled (a 4 KiB
 * pipe nobody reads, as a hung journal or syslog would be). Prints, per
 * case, the calls, lines dropped, and the mean, 99th percentile and
 * maximum time per call in microseconds. Built and run by
 * bench/log-bench.sh against build/libsluice.a.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "log_queue.h"

#define CALLS 200000

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void run(const char *name, double *t)
{
	unsigned long long d0 = log_queue_dropped();
	double sum = 0;
	for (int i = 0; i < CALLS; i++) {
		double a = now_us();
		log_info("session=%d client=192.0.2.%d port=%d bench line with some "
			 "key=value pairs outcome=delivered", i, i % 250, 1024 + i % 60000);
		t[i] = now_us() - a;
		sum += t[i];
	}
	qsort(t, CALLS, sizeof t[0], cmp);
	fprintf(stdout, "%-28s calls=%d dropped=%llu mean=%.2fus p99=%.2fus max=%.1fus\n",
		name, CALLS, log_queue_dropped() - d0, sum / CALLS,
		t[CALLS * 99 / 100], t[CALLS - 1]);
	fflush(stdout);
}

int main(void)
{
	double *t = malloc(sizeof(double) * CALLS);
	int saved = dup(STDERR_FILENO), p[2];
	if (!t || saved < 0 || pipe(p) != 0)
		return 1;

	int devnull = open("/dev/null", O_WRONLY);
	dup2(devnull, STDERR_FILENO);
	log_init("bench", 1, LOG_LVL_INFO);
	run("stderr to /dev/null", t);
	log_flush();

	(void)fcntl(p[1], F_SETPIPE_SZ, 4096);
	dup2(p[1], STDERR_FILENO);
	run("stderr to a stalled pipe", t);

	dup2(saved, STDERR_FILENO);
	free(t);
	_exit(0); /* the writer is still blocked on the pipe: do not flush */
}
