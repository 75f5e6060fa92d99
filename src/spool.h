/*
 * spool: the body of one message while sluice holds it. In memory up to
 * message_memory_max, then spilled to a file in spool_dir by the worker
 * pool (never written from the event loop). Read back once, in order, for
 * the replay. Every callback runs on the loop, never from inside the call
 * that requested it.
 */
#ifndef SLUICE_SPOOL_H
#define SLUICE_SPOOL_H

#include <stddef.h>

struct config;
struct evbuffer;
struct event_base;
struct spool;
struct workq;

/* What the spools of one worker share, owned by the worker and outliving
 * every spool: the loop, the thread pool that does the disk I/O, the
 * settings, and the count of message bytes held in memory (the spools
 * keep it, the session checks it against memory_limit). */
struct spool_env {
	struct event_base *base;
	struct workq *workq;
	const struct config *cfg;
	unsigned long long memory_buffered;
};

/* status 0: ok; -1: I/O error (spool unusable). For spool_read, chunk holds
 * the next bytes (move them out); an empty chunk means the end. */
typedef void (*spool_cb)(void *arg, int status, struct evbuffer *chunk);

struct spool *spool_new(struct spool_env *env, unsigned long long owner_id);

/* Appends canonical message bytes. -1 when out of memory. */
int spool_append(struct spool *sp, const void *data, size_t len);

unsigned long long spool_size(const struct spool *sp);

/* Calls cb once every spilled byte is on disk (or on a write error). */
void spool_finish(struct spool *sp, spool_cb cb, void *arg);

/* Fetches the next chunk; one read at a time. */
void spool_read(struct spool *sp, spool_cb cb, void *arg);

/* Frees the message: memory now, the file through the worker pool. No
 * callback runs afterwards. */
void spool_free(struct spool *sp);

/* Removes spill files' names left in dir ("s<pid>-<seq>": the instant
 * between open and unlink, or an older version's files); pid 0: all of
 * them (start-up, before any worker runs), else those of one dead pid.
 * They are never replayed: their clients got no 250 and retry. */
void spool_clean_dir(const char *dir, int pid);

#endif
