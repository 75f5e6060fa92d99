/*
 * snapshot: what every worker's sessions look like now, gathered in one
 * place for the supervisor (status page, /status.json, sluicectl status
 * and sessions). Each worker publishes a bounded summary of its sessions
 * about once a second into its own slot of a shared mapping; the
 * supervisor reads all slots into one struct snapshot on demand.
 */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct event_base;

#define SNAPSHOT_ROWS_MAX 256     /* sessions per worker, highest score first */
#define SNAPSHOT_PERIOD_MS 500    /* a worker publishes this often */
#define SNAPSHOT_ADDR_MAX 64      /* as client_identity.addr */
#define SNAPSHOT_NAME_MAX 80      /* a PTR name, truncated */

/* The phases a session is in (session_phase). */
#define SNAPSHOT_PHASES(X) X(GREETING, "greeting") X(HELO, "helo") \
	X(MAIL, "mail") X(RCPT, "rcpt") X(DATA, "data") X(END, "end")

enum snapshot_phase {
#define SNAPSHOT_PHASE_ENUM(id, n) SNAPSHOT_##id,
	SNAPSHOT_PHASES(SNAPSHOT_PHASE_ENUM)
#undef SNAPSHOT_PHASE_ENUM
	SNAPSHOT_PHASE_COUNT
};

struct snapshot_row {
	unsigned long long session_id;
	char addr[SNAPSHOT_ADDR_MAX];
	char name[SNAPSHOT_NAME_MAX]; /* "" when unknown */
	unsigned char phase;          /* enum snapshot_phase */
	bool shaped;                  /* the rate limit is on now */
	bool trusted;                 /* allow entry or pass */
	int score;
	unsigned signals;             /* bit per signal_id */
	long shaped_ms;               /* time shaped so far */
	long age_ms;                  /* since accept */
	unsigned slot;                /* the worker's slot */
};

struct snapshot_worker {
	pid_t pid;
	long long updated_ms;         /* CLOCK_REALTIME of the publication */
	unsigned sessions, shaped;
	unsigned by_phase[SNAPSHOT_PHASE_COUNT][2]; /* [phase][shaped] */
	unsigned n_rows;              /* <= SNAPSHOT_ROWS_MAX */
	struct snapshot_row rows[SNAPSHOT_ROWS_MAX];
};

/* One view of all workers: allocated by snapshot_gather, freed with
 * snapshot_free. */
struct snapshot {
	size_t n_workers;
	struct snapshot_worker_view {
		unsigned slot;
		pid_t pid;
		long long age_ms;     /* since its last publication */
		unsigned sessions, shaped;
		long long pool_open, pool_idle, pool_waiting;
	} *workers;
	unsigned sessions, shaped;
	unsigned by_phase[SNAPSHOT_PHASE_COUNT][2];
	size_t n_rows;                /* every worker's rows, score descending */
	struct snapshot_row *rows;
	bool truncated;               /* a worker had more sessions than rows */
};

/* Supervisor, before fork: maps nslots slots (the metrics slot numbers)
 * over a memfd (snapshot_fd). */
int snapshot_init(unsigned nslots);
/* Upgraded supervisor: maps the old program's memfd (taking fd) when it
 * holds nslots slots of this layout. 0, or -1 with fd closed. */
int snapshot_adopt(int fd, unsigned nslots, unsigned long long layout);
unsigned long long snapshot_layout(void);
int snapshot_fd(void);
/* Supervisor, when the worker in slot has exited. */
void snapshot_clear(unsigned slot);

/* Worker: copies w into its slot (a seqlock makes the copy atomic for
 * readers). */
void snapshot_publish(unsigned slot, const struct snapshot_worker *w);

/* Adds one session to w, keeping the SNAPSHOT_ROWS_MAX highest scores. */
void snapshot_add_row(struct snapshot_worker *w, const struct snapshot_row *r);

/* Supervisor: every live slot into one snapshot. NULL when out of memory. */
struct snapshot *snapshot_gather(void);
void snapshot_free(struct snapshot *s);

const char *snapshot_phase_name(unsigned phase);

#endif
