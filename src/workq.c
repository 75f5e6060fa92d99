/*
 * workq: a fixed pool of pthreads for the blocking jobs the event loop must
 * not run itself (disk writes, fsync, file reads).
 *
 * Exports workq_new, workq_submit, workq_pending, workq_free.
 *
 * Ownership: the queue owns its job records (allocated in workq_submit,
 * freed right after done() returns). The caller owns arg throughout; work()
 * and done() of one job never run at the same time, and done() is always
 * the last the queue does with arg. Jobs carry their own data: a session
 * that is gone by the time done() runs must be recognised by the caller
 * (by an id in arg), the queue cannot cancel a job that already started.
 *
 * Threads: work() runs on a pool thread. Finished jobs go on a "done" list
 * and the pool wakes the loop by writing to a non-blocking pipe watched by
 * a persistent read event on the submitter's event_base; the callback runs
 * every done() on the loop thread, outside the lock, so done() may submit
 * again. Pool threads never touch libevent, so this module does not rely
 * on libevent's locking (the worker turns it on, evthread_use_pthreads,
 * for its own reasons; a base without it works here too).
 *
 * One byte is written only when the done list goes from empty to
 * non-empty, so the pipe cannot fill up however many jobs finish. The loop
 * drains the pipe before it takes the list; a job finishing in between
 * causes at worst one extra, empty wake-up.
 *
 * workq_pending counts jobs from workq_submit until their done() has
 * returned (queued, running, or finished and waiting for the loop), which
 * is what an owner needs to know before it may free what the jobs use.
 *
 * Rejected: eventfd (Linux only, and a pipe costs nothing more here);
 * event_active() from the pool threads (it would tie this module to a
 * thread-safe base, and a wake-up per job instead of per empty->non-empty
 * change of the done list).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "workq.h"

struct workq_job {
	workq_fn work;
	workq_fn done;
	void *arg;
	struct workq_job *next;
};

struct workq_list {
	struct workq_job *head, *tail;
};

struct workq {
	struct event_base *base;
	struct event *wake_ev;
	int wake_rd, wake_wr;

	pthread_mutex_t lock;
	pthread_cond_t cond;      /* signalled when todo grows or stopping */
	struct workq_list todo;   /* submitted, not yet picked up */
	struct workq_list done;   /* finished, done() not yet run */
	bool stopping;

	unsigned pending;         /* read without the lock: __atomic */
	pthread_t *threads;
	unsigned nthreads;        /* threads actually started */
};

static void workq_list_push(struct workq_list *l, struct workq_job *j)
{
	j->next = NULL;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static struct workq_job *workq_list_pop(struct workq_list *l)
{
	struct workq_job *j = l->head;
	if (j) {
		l->head = j->next;
		if (!l->head)
			l->tail = NULL;
	}
	return j;
}

static void workq_wake(struct workq *q)
{
	static const char b = 1;
	ssize_t n;

	do
		n = write(q->wake_wr, &b, 1);
	while (n < 0 && errno == EINTR);
	/* EAGAIN: the pipe is full, so a wake-up is pending anyway. Anything
	 * else cannot happen on a pipe whose read end we hold open. */
}

static void *workq_thread(void *varg)
{
	struct workq *q = varg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct workq_job *j = workq_list_pop(&q->todo);
		if (!j) {
			if (q->stopping)
				break;
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		pthread_mutex_unlock(&q->lock);

		j->work(j->arg);

		pthread_mutex_lock(&q->lock);
		bool was_empty = q->done.head == NULL;
		workq_list_push(&q->done, j);
		if (was_empty)
			workq_wake(q);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* Runs every finished job's done() on the calling (loop) thread. */
static void workq_run_done(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	struct workq_list l = q->done;
	q->done.head = q->done.tail = NULL;
	pthread_mutex_unlock(&q->lock);

	struct workq_job *j;
	while ((j = workq_list_pop(&l)) != NULL) {
		if (j->done)
			j->done(j->arg);
		free(j);
		__atomic_fetch_sub(&q->pending, 1, __ATOMIC_RELAXED);
	}
}

static void workq_wake_cb(evutil_socket_t fd, short what, void *varg)
{
	struct workq *q = varg;
	char buf[64];
	ssize_t n;

	/* Drain before taking the list: see the header comment. */
	do
		n = read(fd, buf, sizeof buf);
	while (n > 0 || (n < 0 && errno == EINTR));
	workq_run_done(q);
}

static int workq_pipe(int fds[2])
{
	if (pipe(fds) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		int fl = fcntl(fds[i], F_GETFL);
		if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
		    fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0) {
			close(fds[0]);
			close(fds[1]);
			return -1;
		}
	}
	return 0;
}

/* Stops and joins the threads started so far; the todo list must be
 * empty or its jobs are still run (stopping only ends idle threads). */
static void workq_join(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	q->nthreads = 0;
}

static void workq_destroy(struct workq *q)
{
	if (q->wake_ev)
		event_free(q->wake_ev);
	close(q->wake_rd);
	close(q->wake_wr);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
}

struct workq *workq_new(struct event_base *base, unsigned nthreads)
{
	int fds[2];

	if (!base || nthreads == 0) {
		errno = EINVAL;
		return NULL;
	}
	struct workq *q = calloc(1, sizeof *q);
	if (!q)
		return NULL;
	q->threads = calloc(nthreads, sizeof *q->threads);
	if (!q->threads) {
		free(q);
		return NULL;
	}
	if (pthread_mutex_init(&q->lock, NULL) != 0) {
		free(q->threads);
		free(q);
		return NULL;
	}
	if (pthread_cond_init(&q->cond, NULL) != 0) {
		pthread_mutex_destroy(&q->lock);
		free(q->threads);
		free(q);
		return NULL;
	}
	if (workq_pipe(fds) != 0) {
		pthread_cond_destroy(&q->cond);
		pthread_mutex_destroy(&q->lock);
		free(q->threads);
		free(q);
		return NULL;
	}
	q->base = base;
	q->wake_rd = fds[0];
	q->wake_wr = fds[1];
	q->wake_ev = event_new(base, q->wake_rd, EV_READ | EV_PERSIST,
			       workq_wake_cb, q);
	if (!q->wake_ev || event_add(q->wake_ev, NULL) != 0) {
		workq_destroy(q);
		return NULL;
	}

	/* Signals (SIGTERM, SIGHUP, SIGCHLD) belong to the loop thread: start
	 * the pool with everything blocked so none is delivered there. */
	sigset_t all, old;
	sigfillset(&all);
	if (pthread_sigmask(SIG_BLOCK, &all, &old) != 0) {
		workq_destroy(q);
		return NULL;
	}
	int rc = 0;
	for (unsigned i = 0; i < nthreads && rc == 0; i++) {
		rc = pthread_create(&q->threads[i], NULL, workq_thread, q);
		if (rc == 0)
			q->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		workq_join(q);
		workq_destroy(q);
		errno = rc;
		return NULL;
	}
	return q;
}

int workq_submit(struct workq *q, workq_fn work, workq_fn done, void *arg)
{
	if (!q || !work) {
		errno = EINVAL;
		return -1;
	}
	struct workq_job *j = malloc(sizeof *j);
	if (!j)
		return -1;
	j->work = work;
	j->done = done;
	j->arg = arg;

	pthread_mutex_lock(&q->lock);
	if (q->stopping) {
		pthread_mutex_unlock(&q->lock);
		free(j);
		errno = ESHUTDOWN;
		return -1;
	}
	workq_list_push(&q->todo, j);
	__atomic_fetch_add(&q->pending, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

unsigned workq_pending(const struct workq *q)
{
	return q ? __atomic_load_n(&q->pending, __ATOMIC_RELAXED) : 0;
}

void workq_free(struct workq *q)
{
	if (!q)
		return;
	/* Threads leave only once todo is empty, so joining them finishes
	 * every queued job; then their done() runs here, on the loop thread.
	 * A done() that submits again now gets -1 (stopping). */
	workq_join(q);
	workq_run_done(q);
	workq_destroy(q);
}
