/*
 * workq: a small pool of threads for blocking jobs (disk writes, fsync,
 * file reads). A job's work() runs on a pool thread; its done() runs later
 * on the event loop thread that submitted it, never inside workq_submit.
 * The job's owner must tolerate done() for a job whose requester is gone:
 * jobs carry their own data, and the owner checks an id in done().
 */
#ifndef SLUICE_WORKQ_H
#define SLUICE_WORKQ_H

struct event_base;
struct workq;

typedef void (*workq_fn)(void *arg);

/* nthreads >= 1. Returns NULL on failure. */
struct workq *workq_new(struct event_base *base, unsigned nthreads);

/* 0 on success, -1 (ENOMEM or shutting down); done is never called then. */
int workq_submit(struct workq *q, workq_fn work, workq_fn done, void *arg);

/* Jobs queued or running. */
unsigned workq_pending(const struct workq *q);

/* Finishes queued jobs, runs their done() callbacks, joins threads. */
void workq_free(struct workq *q);

#endif
