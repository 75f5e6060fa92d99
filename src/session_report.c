/*
 * session_report: the worker's side of the status snapshot (snapshot.h).
 * A timer on the worker's loop walks its sessions every SNAPSHOT_PERIOD_MS,
 * counts them by phase and shaping, keeps the SNAPSHOT_ROWS_MAX highest
 * scores as rows (address, name, phase, score, signals, time shaped) and
 * publishes the result into the worker's snapshot slot.
 *
 * Exports session_report_start. The summary is built in a static struct
 * (it is about 50 KiB, too big for the stack of a loop callback) and
 * copied into the shared slot in one step. The walk is O(sessions) once a
 * second and never allocates; the timer lives until the loop ends.
 */
#include "session_priv.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mstime.h"
#include "snapshot.h"

static struct snapshot_worker report;
static unsigned report_slot;
static long long report_now_ms;

/* The snapshot keeps its own phase list (the supervisor reading it knows
 * nothing of sessions); the two lists name the same phases. */
static enum snapshot_phase session_report_phase(enum session_phase ph)
{
	switch (ph) {
	case SESSION_PHASE_GREETING:
		return SNAPSHOT_GREETING;
	case SESSION_PHASE_HELO:
		return SNAPSHOT_HELO;
	case SESSION_PHASE_MAIL:
		return SNAPSHOT_MAIL;
	case SESSION_PHASE_RCPT:
		return SNAPSHOT_RCPT;
	case SESSION_PHASE_DATA:
		return SNAPSHOT_DATA;
	case SESSION_PHASE_END:
		break;
	}
	return SNAPSHOT_END;
}

static void session_report_one(const struct session *s, void *arg)
{
	struct snapshot_worker *w = arg;
	enum snapshot_phase ph = session_report_phase(session_phase(s));
	bool shaped = shape_is_on(&s->shape);
	w->sessions++;
	w->shaped += shaped;
	w->by_phase[ph][shaped ? 1 : 0]++;
	struct snapshot_row r = {0};
	r.session_id = s->ident.session_id;
	snprintf(r.addr, sizeof r.addr, "%s", s->ident.addr);
	snprintf(r.name, sizeof r.name, "%s", s->name ? s->name : "");
	r.phase = (unsigned char)ph;
	r.shaped = shaped;
	r.trusted = s->trusted;
	r.score = s->cls.score;
	r.signals = s->cls.fired;
	r.shaped_ms = shape_used_ms(&s->shape);
	r.age_ms = report_now_ms - s->started_ms;
	snapshot_add_row(w, &r);
}

static void session_report_cb(evutil_socket_t fd, short what, void *arg)
{
	memset(&report, 0, offsetof(struct snapshot_worker, rows));
	report.pid = getpid();
	report.updated_ms = mstime_real();
	report_now_ms = mstime_mono();
	session_foreach(session_report_one, &report);
	snapshot_publish(report_slot, &report);
}

int session_report_start(struct event_base *base, unsigned slot)
{
	report_slot = slot;
	struct event *ev = event_new(base, -1, EV_PERSIST, session_report_cb, NULL);
	struct timeval tv = mstime_tv(SNAPSHOT_PERIOD_MS);
	if (!ev || event_add(ev, &tv) != 0)
		return -1;
	session_report_cb(-1, 0, NULL); /* visible at once, not a period later */
	return 0;
}
