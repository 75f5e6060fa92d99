/*
 * spool: message bodies in memory, spilling to disk (see spool.h).
 *
 * Writes are serialised per message: at most one job in flight, carrying
 * its own copy of the bytes and an explicit file offset, so the loop never
 * waits on the disk and a job never touches loop-owned buffers. A spool
 * freed while a job runs is only marked dead; the job's completion frees
 * it (and closes the file), so a late completion never touches freed
 * memory.
 *
 * A spill file never has a name that outlives its process (HOSTILE 105):
 * it is opened with O_TMPFILE, or, where the file system lacks it, created
 * as "s<pid>-<seq>" and unlinked right after the open. A worker killed
 * with kill -9 thus leaves nothing that could be taken for a message; the
 * kernel frees the blocks with the last descriptor. The supervisor still
 * removes "s*" names (at start, and for a dead worker's pid) for the
 * instant between open and unlink. Leftovers are never replayed: the
 * client never got a 250 for them and retries, so a replay would only
 * duplicate. Rejected: keeping named files for a restart-time replay.
 *
 * Memory accounting: bytes held in memory (buffer + bytes in a pending
 * job) are counted in the shared spool_env's memory_buffered, which the
 * session checks against memory_limit.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "workq.h"

#define SPOOL_READ_CHUNK (256 * 1024)

struct spool_job {
	struct spool *sp;
	char *data;
	size_t len;
	off_t off;
	ssize_t done_len; /* bytes written/read, -1 on error */
	int err;
};

struct spool {
	struct spool_env *env;
	unsigned long long owner_id;
	struct evbuffer *mem;
	int fd;                /* -1 until the first spill */
	off_t file_len;        /* bytes on disk */
	off_t read_off;        /* next file byte to read */
	unsigned long long size;
	struct spool_job *job; /* in flight */
	struct event *ev;      /* deferred callbacks */
	spool_cb cb;           /* finish or read waiting */
	void *cb_arg;
	struct evbuffer *chunk; /* ready for the reader */
	int status;
	int finishing;
	int dead;
	int linked;            /* the name still exists (unlink failed) */
	char path[600];        /* for logs, and the fallback's name */
};

static void spool_account(struct spool *sp, long long delta)
{
	sp->env->memory_buffered += (unsigned long long)delta;
	metrics_add(METRIC_MEMORY_BUFFERED, delta);
}

struct spool *spool_new(struct spool_env *env, unsigned long long owner_id)
{
	struct spool *sp = calloc(1, sizeof *sp);
	if (!sp)
		return NULL;
	sp->mem = evbuffer_new();
	if (!sp->mem) {
		free(sp);
		return NULL;
	}
	sp->env = env;
	sp->owner_id = owner_id;
	sp->fd = -1;
	return sp;
}

unsigned long long spool_size(const struct spool *sp)
{
	return sp->size;
}

static void spool_destroy(struct spool *sp)
{
	spool_account(sp, -(long long)evbuffer_get_length(sp->mem));
	evbuffer_free(sp->mem);
	if (sp->chunk)
		evbuffer_free(sp->chunk);
	if (sp->ev)
		event_free(sp->ev);
	free(sp);
}

/* Runs on a pool thread: closing a large unlinked file frees its blocks,
 * which may take the file system a while. */
static void spool_unlink_work(void *arg)
{
	struct spool *sp = arg;
	if (sp->fd >= 0)
		close(sp->fd);
	if (sp->linked && unlink(sp->path) != 0 && errno != ENOENT)
		sp->status = -errno;
}

static void spool_unlink_done(void *arg)
{
	struct spool *sp = arg;
	if (sp->status < 0)
		log_warn("spool: cannot remove %s: %s", sp->path, strerror(-sp->status));
	spool_destroy(sp);
}

static void spool_release(struct spool *sp)
{
	if (sp->fd >= 0 || sp->linked) {
		sp->status = 0;
		if (workq_submit(sp->env->workq, spool_unlink_work,
				 spool_unlink_done, sp) == 0)
			return;
		/* Pool gone (shutdown): the supervisor cleans the directory. */
	}
	spool_destroy(sp);
}

static void spool_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct spool *sp = arg;
	spool_cb cb = sp->cb;
	sp->cb = NULL;
	if (cb)
		cb(sp->cb_arg, sp->status, sp->chunk);
}

static void spool_defer(struct spool *sp)
{
	if (!sp->ev) {
		sp->ev = event_new(sp->env->base, -1, 0, spool_deliver, sp);
		if (!sp->ev) {
			/* Cannot defer: deliver an error on the next append or
			 * never; the session's timeout then ends it. */
			log_err("spool: out of memory for an event");
			return;
		}
	}
	event_active(sp->ev, 0, 0);
}

/* Runs on a pool thread. An anonymous file in spool_dir, or a named one
 * unlinked at once; sp->linked stays set only if that unlink failed. */
static int spool_open(struct spool *sp)
{
	sp->fd = open(sp->env->cfg->spool_dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
	if (sp->fd >= 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return -1;
	sp->fd = open(sp->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (sp->fd < 0)
		return -1;
	sp->linked = unlink(sp->path) != 0;
	return 0;
}

static void spool_write_work(void *arg)
{
	struct spool_job *job = arg;
	struct spool *sp = job->sp;
	job->err = 0;
	if (sp->fd < 0 && spool_open(sp) != 0) {
		job->err = errno;
		return;
	}
	size_t put = 0;
	while (put < job->len) {
		ssize_t n = pwrite(sp->fd, job->data + put, job->len - put,
				   job->off + (off_t)put);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			job->err = errno;
			return;
		}
		put += (size_t)n;
	}
}

static void spool_start_write(struct spool *sp);

static void spool_write_done(void *arg)
{
	struct spool_job *job = arg;
	struct spool *sp = job->sp;
	sp->job = NULL;
	spool_account(sp, -(long long)job->len);
	if (job->err) {
		log_err("spool: write %s: %s", sp->path, strerror(job->err));
		sp->status = -1;
	} else {
		sp->file_len += (off_t)job->len;
	}
	free(job->data);
	free(job);
	if (sp->dead) {
		spool_release(sp);
		return;
	}
	if (sp->status == 0 &&
	    evbuffer_get_length(sp->mem) > sp->env->cfg->message_memory_max)
		spool_start_write(sp);
	if (!sp->job && sp->finishing && sp->cb)
		spool_defer(sp);
}

static void spool_start_write(struct spool *sp)
{
	size_t len = evbuffer_get_length(sp->mem);
	struct spool_job *job = calloc(1, sizeof *job);
	char *data = job ? malloc(len) : NULL;
	if (!data) {
		free(job);
		sp->status = -1;
		return;
	}
	if (!sp->path[0]) {
		snprintf(sp->path, sizeof sp->path, "%s/s%d-%llu",
			 sp->env->cfg->spool_dir, (int)getpid(), sp->owner_id);
		metrics_inc(METRIC_SPILLS);
	}
	evbuffer_remove(sp->mem, data, len);
	job->sp = sp;
	job->data = data;
	job->len = len;
	job->off = sp->file_len;
	sp->job = job;
	if (workq_submit(sp->env->workq, spool_write_work, spool_write_done, job) != 0) {
		sp->job = NULL;
		spool_account(sp, -(long long)len);
		free(data);
		free(job);
		sp->status = -1;
	}
}

int spool_append(struct spool *sp, const void *data, size_t len)
{
	if (sp->status < 0)
		return -1;
	if (evbuffer_add(sp->mem, data, len) != 0)
		return -1;
	sp->size += len;
	spool_account(sp, (long long)len);
	if (!sp->job && evbuffer_get_length(sp->mem) > sp->env->cfg->message_memory_max)
		spool_start_write(sp);
	return sp->status;
}

void spool_finish(struct spool *sp, spool_cb cb, void *arg)
{
	sp->finishing = 1;
	sp->cb = cb;
	sp->cb_arg = arg;
	if (!sp->job)
		spool_defer(sp);
}

static void spool_read_work(void *arg)
{
	struct spool_job *job = arg;
	size_t got = 0;
	while (got < job->len) {
		ssize_t n = pread(job->sp->fd, job->data + got, job->len - got,
				  job->off + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			job->err = n < 0 ? errno : EIO;
			break;
		}
		got += (size_t)n;
	}
	job->done_len = (ssize_t)got;
}

static void spool_chunk_free(const void *data, size_t len, void *arg)
{
	free((void *)data);
}

static void spool_read_done(void *arg)
{
	struct spool_job *job = arg;
	struct spool *sp = job->sp;
	sp->job = NULL;
	if (sp->dead) {
		free(job->data);
		free(job);
		spool_release(sp);
		return;
	}
	if (job->err) {
		log_err("spool: read %s: %s", sp->path, strerror(job->err));
		sp->status = -1;
		free(job->data);
	} else {
		sp->read_off += job->done_len;
		if (evbuffer_add_reference(sp->chunk, job->data, (size_t)job->done_len,
					   spool_chunk_free, NULL) != 0) {
			free(job->data);
			sp->status = -1;
		}
	}
	free(job);
	spool_defer(sp);
}

void spool_read(struct spool *sp, spool_cb cb, void *arg)
{
	sp->cb = cb;
	sp->cb_arg = arg;
	if (!sp->chunk && !(sp->chunk = evbuffer_new()))
		sp->status = -1;
	if (sp->status == 0 && sp->read_off < sp->file_len) {
		size_t want = (size_t)(sp->file_len - sp->read_off);
		if (want > SPOOL_READ_CHUNK)
			want = SPOOL_READ_CHUNK;
		struct spool_job *job = calloc(1, sizeof *job);
		char *data = job ? malloc(want) : NULL;
		if (data) {
			job->sp = sp;
			job->data = data;
			job->len = want;
			job->off = sp->read_off;
			sp->job = job;
			if (workq_submit(sp->env->workq, spool_read_work,
					 spool_read_done, job) == 0)
				return;
			sp->job = NULL;
		}
		free(data);
		free(job);
		sp->status = -1;
	} else if (sp->status == 0) {
		/* The in-memory tail after the file. */
		size_t len = evbuffer_get_length(sp->mem);
		evbuffer_add_buffer(sp->chunk, sp->mem);
		spool_account(sp, -(long long)len);
	}
	spool_defer(sp);
}

void spool_free(struct spool *sp)
{
	if (!sp)
		return;
	sp->cb = NULL;
	if (sp->ev)
		event_del(sp->ev);
	if (sp->job) {
		sp->dead = 1; /* the job's completion releases it */
		return;
	}
	spool_release(sp);
}

void spool_clean_dir(const char *dir, int pid)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	char prefix[32];
	int plen = pid > 0 ? snprintf(prefix, sizeof prefix, "s%d-", pid) : 1;
	if (pid <= 0)
		strcpy(prefix, "s");
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, (size_t)plen) != 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			log_info("spool: removed leftover %s/%s", dir, e->d_name);
	}
	closedir(d);
}
