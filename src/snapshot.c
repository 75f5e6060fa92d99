/*
 * snapshot: the shared area through which workers show their sessions to
 * the supervisor (see snapshot.h).
 *
 * Exports snapshot_init, snapshot_adopt, snapshot_layout, snapshot_fd,
 * snapshot_clear, snapshot_publish,
 * snapshot_add_row, snapshot_gather, snapshot_free, snapshot_phase_name.
 *
 * Why shared memory and not a request over a pipe: the supervisor already
 * shares an anonymous mapping with its workers (metrics.c), and a
 * publication that the worker writes on its own timer means the supervisor
 * never waits for a worker: a worker that is busy, stuck or dying cannot
 * hold up a status request, there is no reply to match to a request and no
 * timeout to tune, and an HTTP page and sluicectl asking at the same time
 * cost the workers nothing extra. The price is staleness of up to
 * SNAPSHOT_PERIOD_MS (shown as age_ms) and a fixed bound on the rows each
 * worker shows (SNAPSHOT_ROWS_MAX, highest scores kept; the counts by
 * phase are always complete).
 *
 * Memory: snapshot_init (supervisor, before fork) maps one struct
 * snapshot_slot per metrics slot, MAP_SHARED over a memfd, never
 * unmapped; untouched slots cost no memory. An upgraded supervisor
 * (upgrade.h) maps the same memfd again (snapshot_adopt), so the old
 * workers that still serve their sessions go on showing them in their
 * slots (the other metrics bank than the new workers'); a program whose
 * slot layout differs starts with an empty area, and until the old
 * workers are gone their sessions are missing from status and sessions.
 * A worker writes only its own slot, under a sequence counter (odd while
 * writing): it fills a private struct on its loop and copies it in at
 * once, so the window is one memcpy. A reader copies the slot and retries when the counter moved
 * (SNAPSHOT_READ_TRIES, then it skips the slot for this gathering).
 */
#include "snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "metrics.h"
#include "mstime.h"

#define SNAPSHOT_READ_TRIES 8

struct snapshot_slot {
	unsigned seq;  /* odd: being written */
	bool live;     /* a worker has published and not exited since */
	struct snapshot_worker w;
};

static struct snapshot_slot *snapshot_slots;
static unsigned snapshot_nslots;
static int snapshot_memfd = -1;

static const char *const snapshot_phase_names[SNAPSHOT_PHASE_COUNT] = {
#define SNAPSHOT_PHASE_NAME(id, n) [SNAPSHOT_##id] = n,
	SNAPSHOT_PHASES(SNAPSHOT_PHASE_NAME)
#undef SNAPSHOT_PHASE_NAME
};

const char *snapshot_phase_name(unsigned phase)
{
	return phase < SNAPSHOT_PHASE_COUNT ? snapshot_phase_names[phase] : "end";
}

unsigned long long snapshot_layout(void)
{
	/* What a reader relies on: the slot's size and where the rows sit. */
	return (unsigned long long)sizeof(struct snapshot_slot) << 32 ^
	       (unsigned long long)offsetof(struct snapshot_slot, w.rows) << 16 ^
	       SNAPSHOT_ROWS_MAX;
}

int snapshot_fd(void)
{
	return snapshot_memfd;
}

static int snapshot_map(int fd, unsigned nslots)
{
	void *p = mmap(NULL, (size_t)nslots * sizeof(struct snapshot_slot),
		       PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	snapshot_slots = p;
	snapshot_nslots = nslots;
	snapshot_memfd = fd;
	return 0;
}

int snapshot_init(unsigned nslots)
{
	if (snapshot_slots || nslots == 0 || nslots > 1u << 16) {
		errno = EINVAL;
		return -1;
	}
	int fd = memfd_create("sluice-snapshot", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)((size_t)nslots * sizeof(struct snapshot_slot))) != 0 ||
	    snapshot_map(fd, nslots) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return 0;
}

int snapshot_adopt(int fd, unsigned nslots, unsigned long long layout)
{
	struct stat st;
	if (snapshot_slots || fd < 0 || nslots == 0 || nslots > 1u << 16 ||
	    layout != snapshot_layout() || fstat(fd, &st) != 0 ||
	    (size_t)st.st_size != (size_t)nslots * sizeof(struct snapshot_slot) ||
	    snapshot_map(fd, nslots) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return 0;
}

void snapshot_clear(unsigned slot)
{
	if (!snapshot_slots || slot >= snapshot_nslots)
		return;
	struct snapshot_slot *s = &snapshot_slots[slot];
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
	s->live = false;
	s->w.sessions = s->w.shaped = 0;
	s->w.n_rows = 0;
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
}

void snapshot_publish(unsigned slot, const struct snapshot_worker *w)
{
	if (!snapshot_slots || slot >= snapshot_nslots)
		return;
	struct snapshot_slot *s = &snapshot_slots[slot];
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	/* Only the rows in use: a quiet worker copies a few bytes. */
	memcpy(&s->w, w, offsetof(struct snapshot_worker, rows) +
			       (size_t)w->n_rows * sizeof w->rows[0]);
	s->live = true;
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
}

void snapshot_add_row(struct snapshot_worker *w, const struct snapshot_row *r)
{
	if (w->n_rows < SNAPSHOT_ROWS_MAX) {
		w->rows[w->n_rows++] = *r;
		return;
	}
	/* Full: replace the lowest score if this one is higher. A linear
	 * scan of SNAPSHOT_ROWS_MAX once a second per session over the
	 * bound is cheap next to the session's own work. */
	unsigned low = 0;
	for (unsigned i = 1; i < w->n_rows; i++)
		if (w->rows[i].score < w->rows[low].score)
			low = i;
	if (r->score > w->rows[low].score)
		w->rows[low] = *r;
}

static bool snapshot_read(unsigned slot, struct snapshot_worker *out)
{
	struct snapshot_slot *s = &snapshot_slots[slot];
	for (int t = 0; t < SNAPSHOT_READ_TRIES; t++) {
		unsigned a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		if (a & 1)
			continue;
		if (!s->live)
			return false;
		memcpy(out, &s->w, offsetof(struct snapshot_worker, rows));
		unsigned n = out->n_rows <= SNAPSHOT_ROWS_MAX ? out->n_rows : 0;
		memcpy(out->rows, s->w.rows, (size_t)n * sizeof out->rows[0]);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == a) {
			out->n_rows = n;
			return true;
		}
	}
	return false;
}

static int snapshot_row_cmp(const void *a, const void *b)
{
	const struct snapshot_row *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	if (x->shaped_ms != y->shaped_ms)
		return x->shaped_ms > y->shaped_ms ? -1 : 1;
	return x->session_id < y->session_id ? -1 : x->session_id > y->session_id;
}

struct snapshot *snapshot_gather(void)
{
	struct snapshot *snap = calloc(1, sizeof *snap);
	struct snapshot_worker *w = malloc(sizeof *w);
	if (!snap || !w)
		goto fail;
	long long now = mstime_real();
	for (unsigned slot = 0; slot < snapshot_nslots; slot++) {
		if (!__atomic_load_n(&snapshot_slots[slot].live, __ATOMIC_RELAXED) ||
		    !snapshot_read(slot, w))
			continue;
		struct snapshot_worker_view *v =
			realloc(snap->workers, (snap->n_workers + 1) * sizeof *v);
		if (!v)
			goto fail;
		snap->workers = v;
		v += snap->n_workers++;
		v->slot = slot;
		v->pid = w->pid;
		v->age_ms = now - w->updated_ms;
		v->sessions = w->sessions;
		v->shaped = w->shaped;
		v->pool_open = metrics_get_slot(slot, METRIC_POOL_OPEN);
		v->pool_idle = metrics_get_slot(slot, METRIC_POOL_IDLE);
		v->pool_waiting = metrics_get_slot(slot, METRIC_POOL_WAITING);
		snap->sessions += w->sessions;
		snap->shaped += w->shaped;
		for (unsigned p = 0; p < SNAPSHOT_PHASE_COUNT; p++)
			for (unsigned k = 0; k < 2; k++)
				snap->by_phase[p][k] += w->by_phase[p][k];
		if (w->sessions > w->n_rows)
			snap->truncated = true;
		if (w->n_rows) {
			struct snapshot_row *r = realloc(snap->rows, (snap->n_rows + w->n_rows) *
								     sizeof *r);
			if (!r)
				goto fail;
			snap->rows = r;
			memcpy(r + snap->n_rows, w->rows, w->n_rows * sizeof *r);
			for (size_t i = 0; i < w->n_rows; i++)
				r[snap->n_rows + i].slot = slot;
			snap->n_rows += w->n_rows;
		}
	}
	if (snap->n_rows)
		qsort(snap->rows, snap->n_rows, sizeof snap->rows[0], snapshot_row_cmp);
	free(w);
	return snap;
fail:
	free(w);
	snapshot_free(snap);
	return NULL;
}

void snapshot_free(struct snapshot *s)
{
	if (!s)
		return;
	free(s->workers);
	free(s->rows);
	free(s);
}
