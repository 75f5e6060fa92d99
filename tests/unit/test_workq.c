/*
 * Unit tests for workq: many jobs across threads come back exactly once
 * each on the loop thread; done() is never synchronous; workq_free drains;
 * done() may submit again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "workq.h"

#define N_JOBS 2000

struct job {
	unsigned idx;
	pthread_t work_thread;
	unsigned long long result;
	struct run *run;
};

struct run {
	struct event_base *base;
	struct workq *q;
	pthread_t loop_thread;
	unsigned want;
	unsigned done_count;
	unsigned char seen[N_JOBS];
	unsigned chain_left; /* test_resubmit */
	bool in_submit;
	bool timed_out;
};

static void job_work(void *arg)
{
	struct job *j = arg;
	unsigned long long x = j->idx;

	j->work_thread = pthread_self();
	/* Uneven work so jobs finish out of submission order. */
	for (unsigned k = 0; k < (j->idx % 7) * 1000; k++)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	if (j->idx % 97 == 0)
		usleep(200);
	j->result = x | 1;
}

static void job_done(void *arg)
{
	struct job *j = arg;
	struct run *r = j->run;

	assert_false(r->in_submit);
	assert_true(pthread_equal(pthread_self(), r->loop_thread));
	assert_false(pthread_equal(j->work_thread, r->loop_thread));
	assert_true(j->result != 0);
	assert_true(j->idx < N_JOBS);
	r->seen[j->idx]++;
	r->done_count++;
	if (r->done_count == r->want)
		event_base_loopbreak(r->base);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;
	r->timed_out = true;
	event_base_loopbreak(r->base);
}

/* Runs the loop until done_count reaches want or 20 s pass. */
static void run_loop(struct run *r)
{
	struct timeval tv = { 20, 0 };
	struct event *t = evtimer_new(r->base, timeout_cb, r);
	assert_non_null(t);
	assert_int_equal(evtimer_add(t, &tv), 0);
	if (r->done_count < r->want)
		assert_true(event_base_dispatch(r->base) >= 0);
	event_free(t);
	assert_false(r->timed_out);
}

static struct run *run_new(unsigned nthreads)
{
	struct run *r = calloc(1, sizeof *r);
	assert_non_null(r);
	r->base = event_base_new();
	assert_non_null(r->base);
	r->q = workq_new(r->base, nthreads);
	assert_non_null(r->q);
	r->loop_thread = pthread_self();
	return r;
}

static void run_free(struct run *r)
{
	workq_free(r->q);
	event_base_free(r->base);
	free(r);
}

static void test_many_jobs(void **state)
{
	static const unsigned threads[] = { 1, 3, 8 };

	for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
		struct run *r = run_new(threads[t]);
		struct job *jobs = calloc(N_JOBS, sizeof *jobs);
		assert_non_null(jobs);
		r->want = N_JOBS;
		for (unsigned i = 0; i < N_JOBS; i++) {
			jobs[i].idx = i;
			jobs[i].run = r;
			r->in_submit = true;
			assert_int_equal(workq_submit(r->q, job_work, job_done, &jobs[i]), 0);
			r->in_submit = false;
		}
		/* Nothing comes back before the loop runs. */
		assert_int_equal(r->done_count, 0);
		assert_true(workq_pending(r->q) > 0);
		run_loop(r);
		assert_int_equal(r->done_count, N_JOBS);
		for (unsigned i = 0; i < N_JOBS; i++)
			assert_int_equal(r->seen[i], 1);
		assert_int_equal(workq_pending(r->q), 0);
		run_free(r);
		free(jobs);
	}
}

static void test_free_drains(void **state)
{
	struct run *r = run_new(2);
	struct job *jobs = calloc(100, sizeof *jobs);
	assert_non_null(jobs);
	r->want = 100;
	for (unsigned i = 0; i < 100; i++) {
		jobs[i].idx = i;
		jobs[i].run = r;
		assert_int_equal(workq_submit(r->q, job_work, job_done, &jobs[i]), 0);
	}
	/* No loop turn at all: workq_free must still run every job and its
	 * done(), here on the calling thread. */
	workq_free(r->q);
	r->q = NULL;
	assert_int_equal(r->done_count, 100);
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(r->seen[i], 1);
	event_base_free(r->base);
	free(r);
	free(jobs);
}

static void chain_work(void *arg)
{
	(void)arg;
}

static void chain_done(void *arg)
{
	struct run *r = arg;

	assert_false(r->in_submit);
	r->done_count++;
	if (r->chain_left > 0) {
		r->chain_left--;
		r->in_submit = true;
		assert_int_equal(workq_submit(r->q, chain_work, chain_done, r), 0);
		r->in_submit = false;
	} else {
		event_base_loopbreak(r->base);
	}
}

static void test_resubmit_from_done(void **state)
{
	struct run *r = run_new(2);
	r->chain_left = 50;
	r->want = 51;
	assert_int_equal(workq_submit(r->q, chain_work, chain_done, r), 0);
	run_loop(r);
	assert_int_equal(r->done_count, 51);
	assert_int_equal(workq_pending(r->q), 0);
	run_free(r);
}

static unsigned null_done_work_count;

static void count_work(void *arg)
{
	__atomic_fetch_add(&null_done_work_count, 1, __ATOMIC_RELAXED);
}

static void test_null_done_and_errors(void **state)
{
	struct event_base *base = event_base_new();
	assert_non_null(base);
	assert_null(workq_new(base, 0));
	assert_null(workq_new(NULL, 1));
	struct workq *q = workq_new(base, 1);
	assert_non_null(q);
	assert_int_equal(workq_submit(q, NULL, NULL, NULL), -1);
	for (int i = 0; i < 10; i++)
		assert_int_equal(workq_submit(q, count_work, NULL, NULL), 0);
	workq_free(q);
	assert_int_equal(null_done_work_count, 10);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_many_jobs),
		cmocka_unit_test(test_free_drains),
		cmocka_unit_test(test_resubmit_from_done),
		cmocka_unit_test(test_null_done_and_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
