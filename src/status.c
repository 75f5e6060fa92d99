/*
 * status: renderings of the running daemon's state and the status page
 * (see status.h).
 *
 * Exports status_start, status_render, status_render_sessions.
 *
 * History: a timer takes one sample of the counters in STATUS_SERIES every
 * minute into a ring of STATUS_MINUTES + 1 samples (the first at start).
 * A minute's value is the difference of two neighbouring samples; the
 * running minute is "now" minus the newest sample; the last hour is "now"
 * minus the oldest sample kept. Counters never go backwards (metrics.c),
 * so the differences are never negative. All on the supervisor's loop.
 *
 * HTTP: GET or HEAD only; the page is one document plus one script, both
 * compiled in (status_assets.c), sent with a Content-Security-Policy that
 * allows nothing but this origin, because the page shows client addresses
 * and PTR names, which are untrusted text (the script writes them with
 * textContent, never as markup). /status.json is built per request from a
 * fresh snapshot (a few hundred rows at most; a request costs the workers
 * nothing, see snapshot.c).
 */
#include "status.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "classify.h"
#include "json.h"
#include "metrics.h"
#include "mstime.h"
#include "snapshot.h"

#define STATUS_SAMPLE_MS 60000

/* X(ID, json name, metrics summed) */
#define STATUS_SERIES(X)                                                      \
	X(DELIVERED, "delivered", METRIC_TRANSACTIONS)                       \
	X(SHAPED_DELIVERED, "shaped_delivered", METRIC_SHAPED_DELIVERIES)    \
	X(SHAPED_HANGUPS, "shaped_hangups", METRIC_HANGUP_GREETING, METRIC_HANGUP_HELO, \
	  METRIC_HANGUP_MAIL, METRIC_HANGUP_RCPT, METRIC_HANGUP_DATA)        \
	X(REPLIES_4XX, "replies_4xx", METRIC_REPLIES_4XX)                    \
	X(REPLIES_5XX, "replies_5xx", METRIC_REPLIES_5XX)                    \
	X(DNS_FAILURES, "dns_failures", METRIC_DNS_FAILURES)

enum status_series {
#define STATUS_SERIES_ENUM(id, n, ...) STATUS_##id,
	STATUS_SERIES(STATUS_SERIES_ENUM)
#undef STATUS_SERIES_ENUM
	STATUS_SERIES_COUNT
};

#define STATUS_METRICS_MAX 5
static const struct {
	const char *name;
	enum metric_id m[STATUS_METRICS_MAX];
	unsigned n;
} status_series[STATUS_SERIES_COUNT] = {
#define STATUS_SERIES_ROW(id, nm, ...) \
	[STATUS_##id] = {nm, {__VA_ARGS__}, \
			 sizeof((enum metric_id[]){__VA_ARGS__}) / sizeof(enum metric_id)},
	STATUS_SERIES(STATUS_SERIES_ROW)
#undef STATUS_SERIES_ROW
};

struct status_sample {
	long long t_ms; /* CLOCK_REALTIME */
	long long v[STATUS_SERIES_COUNT];
};

static struct status_sample ring[STATUS_MINUTES + 1];
static unsigned ring_len, ring_head; /* head: index of the oldest */
static long long started_ms;

static void status_sample_now(struct status_sample *s)
{
	s->t_ms = mstime_real();
	for (unsigned i = 0; i < STATUS_SERIES_COUNT; i++) {
		s->v[i] = 0;
		for (unsigned k = 0; k < status_series[i].n; k++)
			s->v[i] += metrics_get(status_series[i].m[k]);
	}
}

static const struct status_sample *status_ring_at(unsigned i)
{
	return &ring[(ring_head + i) % (STATUS_MINUTES + 1)];
}

static void status_sample_cb(evutil_socket_t fd, short what, void *arg)
{
	if (ring_len < STATUS_MINUTES + 1) {
		status_sample_now(&ring[(ring_head + ring_len) % (STATUS_MINUTES + 1)]);
		ring_len++;
	} else {
		status_sample_now(&ring[ring_head]);
		ring_head = (ring_head + 1) % (STATUS_MINUTES + 1);
	}
}

/* ---- renderings ---------------------------------------------------------- */

static int status_signals_json(struct evbuffer *b, unsigned fired)
{
	int rc = evbuffer_add(b, "[", 1);
	bool first = true;
	for (int i = 0; i < SIGNAL_COUNT && rc == 0; i++) {
		if (!(fired & (1u << i)))
			continue;
		if (!first)
			rc = evbuffer_add(b, ",", 1);
		first = false;
		if (rc == 0)
			rc = json_str(b, classify_tag((enum signal_id)i));
	}
	return rc == 0 ? evbuffer_add(b, "]", 1) : -1;
}

static int status_row_json(struct evbuffer *b, const struct snapshot_row *r)
{
	if (evbuffer_add_printf(b, "{\"id\":%llu,\"addr\":", r->session_id) < 0 ||
	    json_str(b, r->addr) || evbuffer_add(b, ",\"name\":", 8) || json_str(b, r->name) ||
	    evbuffer_add(b, ",\"phase\":", 9) || json_str(b, snapshot_phase_name(r->phase)) ||
	    evbuffer_add_printf(b, ",\"shaped\":%s,\"trusted\":%s,\"score\":%d,"
				   "\"shaped_s\":%ld,\"age_s\":%ld,\"worker\":%u,\"signals\":",
				r->shaped ? "true" : "false", r->trusted ? "true" : "false",
				r->score, r->shaped_ms / 1000, r->age_ms / 1000, r->slot) < 0 ||
	    status_signals_json(b, r->signals) || evbuffer_add(b, "}", 1))
		return -1;
	return 0;
}

/* The clients with the highest score now: rows are sorted by score, so
 * the first row of an address is its best; its other sessions add their
 * signals and count. */
static int status_clients_json(struct evbuffer *b, const struct snapshot *snap)
{
	const struct snapshot_row *top[STATUS_TOP_CLIENTS];
	size_t n = 0;
	for (size_t i = 0; i < snap->n_rows && n < STATUS_TOP_CLIENTS; i++) {
		bool seen = false;
		for (size_t k = 0; k < n && !seen; k++)
			seen = !strcmp(top[k]->addr, snap->rows[i].addr);
		if (!seen)
			top[n++] = &snap->rows[i];
	}
	if (evbuffer_add(b, "[", 1))
		return -1;
	for (size_t k = 0; k < n; k++) {
		unsigned sessions = 0, fired = 0;
		long shaped_ms = 0;
		const char *name = top[k]->name;
		for (size_t i = 0; i < snap->n_rows; i++) {
			const struct snapshot_row *r = &snap->rows[i];
			if (strcmp(r->addr, top[k]->addr))
				continue;
			sessions++;
			fired |= r->signals;
			if (r->shaped_ms > shaped_ms)
				shaped_ms = r->shaped_ms;
			if (!name[0])
				name = r->name;
		}
		if ((k && evbuffer_add(b, ",", 1)) || evbuffer_add(b, "{\"addr\":", 8) ||
		    json_str(b, top[k]->addr) || evbuffer_add(b, ",\"name\":", 8) ||
		    json_str(b, name) ||
		    evbuffer_add_printf(b, ",\"score\":%d,\"sessions\":%u,\"shaped\":%s,"
					   "\"shaped_s\":%ld,\"signals\":",
					top[k]->score, sessions, top[k]->shaped ? "true" : "false",
					shaped_ms / 1000) < 0 ||
		    status_signals_json(b, fired) || evbuffer_add(b, "}", 1))
			return -1;
	}
	return evbuffer_add(b, "]", 1);
}

static int status_series_json(struct evbuffer *b, const long long *v)
{
	for (unsigned i = 0; i < STATUS_SERIES_COUNT; i++)
		if (evbuffer_add_printf(b, "%s\"%s\":%lld", i ? "," : "", status_series[i].name,
					v[i]) < 0)
			return -1;
	return 0;
}

/* The counters now, and what they rose by over the last hour (the ring's
 * oldest sample). */
static void status_window(struct status_sample *now, long long *hour)
{
	status_sample_now(now);
	const struct status_sample *old = ring_len ? status_ring_at(0) : now;
	for (unsigned i = 0; i < STATUS_SERIES_COUNT; i++)
		hour[i] = now->v[i] - old->v[i];
}

static int status_json(struct evbuffer *b, const struct snapshot *snap)
{
	struct status_sample now;
	long long hour[STATUS_SERIES_COUNT];
	status_window(&now, hour);
	if (evbuffer_add_printf(b, "{\"time_ms\":%lld,\"uptime_s\":%lld,"
				   "\"sessions\":{\"open\":%u,\"shaped\":%u,\"unshaped\":%u,"
				   "\"truncated\":%s,\"by_phase\":{",
				now.t_ms, (now.t_ms - started_ms) / 1000, snap->sessions,
				snap->shaped, snap->sessions - snap->shaped,
				snap->truncated ? "true" : "false") < 0)
		return -1;
	for (unsigned p = 0; p < SNAPSHOT_PHASE_COUNT; p++)
		if (evbuffer_add_printf(b, "%s\"%s\":{\"unshaped\":%u,\"shaped\":%u}",
					p ? "," : "", snapshot_phase_name(p),
					snap->by_phase[p][0], snap->by_phase[p][1]) < 0)
			return -1;
	if (evbuffer_add(b, "}},\"workers\":[", 14))
		return -1;
	for (size_t i = 0; i < snap->n_workers; i++) {
		const struct snapshot_worker_view *w = &snap->workers[i];
		long long lent = w->pool_open - w->pool_idle;
		if (evbuffer_add_printf(b, "%s{\"slot\":%u,\"pid\":%d,\"age_ms\":%lld,"
					   "\"sessions\":%u,\"shaped\":%u,\"pool\":{\"open\":%lld,"
					   "\"lent\":%lld,\"waiting\":%lld}}",
					i ? "," : "", w->slot, (int)w->pid, w->age_ms, w->sessions,
					w->shaped, w->pool_open, lent < 0 ? 0 : lent,
					w->pool_waiting) < 0)
			return -1;
	}
	if (evbuffer_add(b, "],\"totals\":{", 12) || status_series_json(b, now.v) ||
	    evbuffer_add(b, "},\"last_hour\":{", 15) || status_series_json(b, hour) ||
	    evbuffer_add(b, "},\"minutes\":[", 13))
		return -1;
	/* Oldest first; the running minute last. */
	for (unsigned i = 0; i < ring_len; i++) {
		const struct status_sample *a = status_ring_at(i);
		const struct status_sample *z = i + 1 < ring_len ? status_ring_at(i + 1) : &now;
		long long d[STATUS_SERIES_COUNT];
		for (unsigned k = 0; k < STATUS_SERIES_COUNT; k++)
			d[k] = z->v[k] - a->v[k];
		if (evbuffer_add_printf(b, "%s{\"t_ms\":%lld,", i ? "," : "", a->t_ms) < 0 ||
		    status_series_json(b, d) || evbuffer_add(b, "}", 1))
			return -1;
	}
	if (evbuffer_add(b, "],\"clients\":", 12) || status_clients_json(b, snap) ||
	    evbuffer_add(b, "}\n", 2))
		return -1;
	return 0;
}

static int status_text(struct evbuffer *b, const struct snapshot *snap)
{
	struct status_sample now;
	long long hour[STATUS_SERIES_COUNT];
	status_window(&now, hour);
	if (evbuffer_add_printf(b, "sessions: %u open, %u shaped, %u unshaped%s\n"
				   "%-10s %9s %7s\n",
				snap->sessions, snap->shaped, snap->sessions - snap->shaped,
				snap->truncated ? " (rows truncated)" : "", "phase", "unshaped",
				"shaped") < 0)
		return -1;
	for (unsigned p = 0; p < SNAPSHOT_PHASE_COUNT; p++)
		if (evbuffer_add_printf(b, "%-10s %9u %7u\n", snapshot_phase_name(p),
					snap->by_phase[p][0], snap->by_phase[p][1]) < 0)
			return -1;
	if (evbuffer_add_printf(b, "\n%-6s %-8s %8s %6s %9s %5s %7s\n", "worker", "pid",
				"sessions", "shaped", "pool-open", "lent", "waiting") < 0)
		return -1;
	for (size_t i = 0; i < snap->n_workers; i++) {
		const struct snapshot_worker_view *w = &snap->workers[i];
		long long lent = w->pool_open - w->pool_idle;
		if (evbuffer_add_printf(b, "%-6u %-8d %8u %6u %9lld %5lld %7lld\n", w->slot,
					(int)w->pid, w->sessions, w->shaped, w->pool_open,
					lent < 0 ? 0 : lent, w->pool_waiting) < 0)
			return -1;
	}
	if (evbuffer_add_printf(b, "\n%-18s %12s %12s\n", "", "last hour", "since start") < 0)
		return -1;
	for (unsigned i = 0; i < STATUS_SERIES_COUNT; i++)
		if (evbuffer_add_printf(b, "%-18s %12lld %12lld\n", status_series[i].name,
					hour[i], now.v[i]) < 0)
			return -1;
	return 0;
}

int status_render(struct evbuffer *b, const struct snapshot *snap, bool json)
{
	return json ? status_json(b, snap) : status_text(b, snap);
}

int status_render_sessions(struct evbuffer *b, const struct snapshot *snap,
			   bool json, bool shaped_only)
{
	bool first = true;
	if (json ? evbuffer_add(b, "{\"sessions\":[", 13) != 0
		 : evbuffer_add_printf(b, "%-10s %-39s %-8s %5s %7s %6s %s\n", "session",
				       "client", "phase", "score", "shaped", "age", "signals / name") < 0)
		return -1;
	for (size_t i = 0; i < snap->n_rows; i++) {
		const struct snapshot_row *r = &snap->rows[i];
		if (shaped_only && !r->shaped)
			continue;
		if (json) {
			if ((!first && evbuffer_add(b, ",", 1)) || status_row_json(b, r))
				return -1;
		} else {
			char sig[200];
			struct classify c = {r->score, r->signals};
			if (evbuffer_add_printf(b, "%-10llu %-39s %-8s %5d %6lds %5lds %s %s\n",
						r->session_id, r->addr, snapshot_phase_name(r->phase),
						r->score, r->shaped_ms / 1000, r->age_ms / 1000,
						classify_list(&c, sig, sizeof sig),
						r->name[0] ? r->name : "-") < 0)
				return -1;
		}
		first = false;
	}
	if (json)
		return evbuffer_add_printf(b, "],\"open\":%u,\"shaped\":%u,\"truncated\":%s}\n",
					   snap->sessions, snap->shaped,
					   snap->truncated ? "true" : "false") < 0 ? -1 : 0;
	return 0;
}

/* ---- HTTP ---------------------------------------------------------------- */

static bool status_http_get(struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
		return true;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	evhttp_send_error(req, 405, "Method Not Allowed");
	return false;
}

static void status_send(struct evhttp_request *req, struct evbuffer *b, const char *type)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Content-Security-Policy",
			  "default-src 'none'; script-src 'self'; connect-src 'self'; "
			  "style-src 'unsafe-inline'; img-src 'self'");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
}

static void status_asset_cb(struct evhttp_request *req, void *arg)
{
	if (!status_http_get(req))
		return;
	const char *asset = arg;
	struct evbuffer *b = evbuffer_new();
	if (!b || evbuffer_add_reference(b, asset, strlen(asset), NULL, NULL) != 0) {
		if (b)
			evbuffer_free(b);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	status_send(req, b, asset == status_asset_js ? "text/javascript; charset=utf-8"
						     : "text/html; charset=utf-8");
	evbuffer_free(b);
}

static void status_json_cb(struct evhttp_request *req, void *arg)
{
	if (!status_http_get(req))
		return;
	struct evbuffer *b = evbuffer_new();
	struct snapshot *snap = snapshot_gather();
	if (!b || !snap || status_json(b, snap) != 0) {
		if (b)
			evbuffer_free(b);
		snapshot_free(snap);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	snapshot_free(snap);
	status_send(req, b, "application/json");
	evbuffer_free(b);
}

int status_start(struct event_base *base, struct evhttp *http)
{
	started_ms = mstime_real();
	status_sample_cb(-1, 0, NULL);
	struct event *ev = event_new(base, -1, EV_PERSIST, status_sample_cb, NULL);
	struct timeval tv = {STATUS_SAMPLE_MS / 1000, 0};
	if (!ev || event_add(ev, &tv) != 0)
		return -1;
	if (!http)
		return 0;
	if (evhttp_set_cb(http, "/", status_asset_cb, (void *)status_asset_html) != 0 ||
	    evhttp_set_cb(http, "/status.js", status_asset_cb, (void *)status_asset_js) != 0 ||
	    evhttp_set_cb(http, "/status.json", status_json_cb, NULL) != 0)
		return -1;
	return 0;
}
