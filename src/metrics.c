/*
 * metrics: process-shared counters and gauges, served in the Prometheus text
 * format.
 *
 * Exports metrics_init, metrics_adopt, metrics_layout, metrics_fd,
 * metrics_use_slot, metrics_add, metrics_get, metrics_get_slot,
 * metrics_http_adopt, metrics_http_fd, metrics_http_start,
 * metrics_http_server.
 *
 * Memory: metrics_init (supervisor, before fork) makes one shared mapping
 * of nworkers + 1 slots, each METRIC_COUNT long longs, over a memfd (an
 * upgraded supervisor, upgrade.h, maps the same memory again from the fd
 * it is handed: metrics_adopt, so totals go on, and the old workers that
 * still serve their sessions keep counting where it sees them);
 * slot 0 is the supervisor's, worker N writes slot N. The mapping lives as
 * long as the processes; it is never unmapped. Every write is a relaxed
 * __atomic add to the process's own slot, so pool threads may count too and
 * no lock is ever taken; a reader sums the slots. Counters are monotonic
 * per slot. Gauges are plain sums: a restarted worker zeroes the gauges of
 * its slot (metrics_use_slot), since whatever the dead one held open is
 * gone, but keeps the counters so totals never go backwards.
 *
 * A new program whose table differs (metrics_layout: a hash of names and
 * kinds) cannot read the old slots: it starts from zero, as after a
 * restart, and what the old workers count from then on is not seen.
 *
 * Without metrics_init (unit tests, tools) writes go to a private static
 * slot, so code that counts never has to ask whether metrics are on.
 *
 * HTTP: metrics_http_start listens on a socket it makes from the endpoint
 * (so IPv6 and the exact address written in the configuration work the
 * same way) and hands it to evhttp. GET or HEAD /metrics answers 200; any
 * other path 404, any other method 405. The evhttp object lives until exit.
 */
#include <errno.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "config.h"
#include "metrics.h"

/* An HTTP client of the metrics endpoint is a scraper on the local
 * network; nothing it sends needs to be large or slow. */
#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_HTTP_MAX_HEADERS 8192
#define METRICS_HTTP_MAX_BODY 1024

struct metrics_desc {
	const char *name;
	const char *help;
	bool counter;
};

static const struct metrics_desc metrics_descs[METRIC_COUNT] = {
#define METRICS_DESC(id, m, h, c) [METRIC_##id] = { m, h, c },
	METRICS(METRICS_DESC)
#undef METRICS_DESC
};

static long long metrics_private[METRIC_COUNT];
static long long *metrics_slots;   /* NULL until metrics_init */
static unsigned metrics_nslots;
static long long *metrics_mine = metrics_private;
static int metrics_memfd = -1;
static struct evhttp *metrics_http;
static evutil_socket_t metrics_http_sock = -1;
static evutil_socket_t metrics_http_adopted = -1;

unsigned long long metrics_layout(void)
{
	unsigned long long h = 1469598103934665603ULL; /* FNV-1a */
	for (int i = 0; i < METRIC_COUNT; i++) {
		for (const char *p = metrics_descs[i].name; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ (metrics_descs[i].counter ? 1u : 2u)) * 1099511628211ULL;
	}
	return h;
}

int metrics_fd(void)
{
	return metrics_memfd;
}

/* Maps fd's n slots and makes them this process's. */
static int metrics_map(int fd, size_t n)
{
	void *p = mmap(NULL, n * sizeof(long long) * METRIC_COUNT, PROT_READ | PROT_WRITE,
		       MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -1;
	metrics_slots = p;
	metrics_nslots = (unsigned)n;
	metrics_memfd = fd;
	metrics_mine = metrics_slots;
	return 0;
}

static int metrics_nslots_for(unsigned nworkers, size_t *n)
{
	size_t slot_bytes = sizeof(long long) * METRIC_COUNT;
	if (nworkers >= SIZE_MAX / slot_bytes - 1 || nworkers >= 1u << 20) {
		errno = EOVERFLOW;
		return -1;
	}
	*n = (size_t)nworkers + 1;
	return 0;
}

int metrics_init(unsigned nworkers)
{
	size_t n;
	if (metrics_slots) {
		errno = EALREADY;
		return -1;
	}
	if (metrics_nslots_for(nworkers, &n) != 0)
		return -1;
	int fd = memfd_create("sluice-metrics", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)(n * sizeof(long long) * METRIC_COUNT)) != 0 ||
	    metrics_map(fd, n) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	/* A new memfd starts zeroed. Whatever the process counted before
	 * (config checks, start-up) belongs to the supervisor. */
	for (int i = 0; i < METRIC_COUNT; i++)
		metrics_slots[i] = metrics_private[i];
	return 0;
}

int metrics_adopt(int fd, unsigned nworkers, unsigned long long layout)
{
	size_t n;
	struct stat st;
	if (metrics_slots || fd < 0 || layout != metrics_layout() ||
	    metrics_nslots_for(nworkers, &n) != 0 || fstat(fd, &st) != 0 ||
	    (size_t)st.st_size != n * sizeof(long long) * METRIC_COUNT || metrics_map(fd, n) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* The supervisor's slot goes on from the old program's. */
	for (int i = 0; i < METRIC_COUNT; i++)
		if (metrics_descs[i].counter)
			__atomic_fetch_add(&metrics_slots[i], metrics_private[i], __ATOMIC_RELAXED);
	return 0;
}

void metrics_clear_gauges(unsigned slot)
{
	if (!metrics_slots || slot >= metrics_nslots)
		return;
	long long *v = metrics_slots + (size_t)slot * METRIC_COUNT;
	for (int i = 0; i < METRIC_COUNT; i++)
		if (!metrics_descs[i].counter)
			__atomic_store_n(&v[i], 0, __ATOMIC_RELAXED);
}

void metrics_use_slot(unsigned slot)
{
	/* Out of range is a programming error; keep writing where we did
	 * rather than scribble past the mapping. */
	if (!metrics_slots || slot >= metrics_nslots)
		return;
	metrics_mine = metrics_slots + (size_t)slot * METRIC_COUNT;
	for (int i = 0; i < METRIC_COUNT; i++)
		if (!metrics_descs[i].counter)
			__atomic_store_n(&metrics_mine[i], 0, __ATOMIC_RELAXED);
}

void metrics_add(enum metric_id id, long long delta)
{
	if ((unsigned)id >= METRIC_COUNT)
		return;
	__atomic_fetch_add(&metrics_mine[id], delta, __ATOMIC_RELAXED);
}

long long metrics_get(enum metric_id id)
{
	if ((unsigned)id >= METRIC_COUNT)
		return 0;
	if (!metrics_slots)
		return __atomic_load_n(&metrics_private[id], __ATOMIC_RELAXED);
	long long sum = 0;
	for (unsigned s = 0; s < metrics_nslots; s++)
		sum += __atomic_load_n(&metrics_slots[(size_t)s * METRIC_COUNT + id],
				       __ATOMIC_RELAXED);
	return sum;
}

long long metrics_get_slot(unsigned slot, enum metric_id id)
{
	if ((unsigned)id >= METRIC_COUNT || !metrics_slots || slot >= metrics_nslots)
		return 0;
	return __atomic_load_n(&metrics_slots[(size_t)slot * METRIC_COUNT + id],
			       __ATOMIC_RELAXED);
}

struct evhttp *metrics_http_server(void)
{
	return metrics_http;
}

static void metrics_reply_error(struct evhttp_request *req, int code,
				const char *reason)
{
	struct evbuffer *b = evbuffer_new();
	if (b && evbuffer_add_printf(b, "%d %s\n", code, reason) >= 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Content-Type", "text/plain; charset=utf-8");
		evhttp_send_reply(req, code, reason, b);
	} else {
		evhttp_send_error(req, code, reason);
	}
	if (b)
		evbuffer_free(b);
}

static void metrics_page_cb(struct evhttp_request *req, void *arg)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Allow", "GET, HEAD");
		metrics_reply_error(req, 405, "Method Not Allowed");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	for (int i = 0; i < METRIC_COUNT; i++) {
		const struct metrics_desc *d = &metrics_descs[i];
		/* Labelled series ("name{phase=...}") of one metric follow each
		 * other in the table and share one HELP/TYPE header. */
		int base = (int)strcspn(d->name, "{");
		const char *prev = i ? metrics_descs[i - 1].name : "";
		bool same = i && strncmp(prev, d->name, (size_t)base) == 0 &&
			    (prev[base] == '{' || prev[base] == 0);
		if (!same && evbuffer_add_printf(b, "# HELP %.*s %s\n# TYPE %.*s %s\n",
						 base, d->name, d->help, base, d->name,
						 d->counter ? "counter" : "gauge") < 0) {
			evbuffer_free(b);
			evhttp_send_error(req, HTTP_INTERNAL, NULL);
			return;
		}
		if (evbuffer_add_printf(b, "%s %lld\n", d->name,
					metrics_get((enum metric_id)i)) < 0) {
			evbuffer_free(b);
			evhttp_send_error(req, HTTP_INTERNAL, NULL);
			return;
		}
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

static void metrics_other_cb(struct evhttp_request *req, void *arg)
{
	metrics_reply_error(req, HTTP_NOTFOUND, "Not Found");
}

/* A listening, non-blocking socket on ep, or -1. */
static evutil_socket_t metrics_listen_socket(const struct endpoint *ep)
{
	evutil_socket_t fd = socket(ep->ss.ss_family,
				    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if ((ep->ss.ss_family != AF_UNIX &&
	     evutil_make_listen_socket_reuseable(fd) != 0) ||
	    bind(fd, (const struct sockaddr *)&ep->ss, ep->len) != 0 ||
	    listen(fd, 64) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int metrics_http_start(struct event_base *base, const struct endpoint *ep)
{
	if (!base || !ep || metrics_http) {
		errno = EINVAL;
		return -1;
	}
	struct evhttp *http = evhttp_new(base);
	if (!http)
		return -1;
	evhttp_set_timeout(http, METRICS_HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(http, METRICS_HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(http, METRICS_HTTP_MAX_BODY);
	if (evhttp_set_cb(http, "/metrics", metrics_page_cb, NULL) != 0) {
		evhttp_free(http);
		return -1;
	}
	evhttp_set_gencb(http, metrics_other_cb, NULL);

	evutil_socket_t fd = metrics_http_adopted >= 0 ? metrics_http_adopted
						      : metrics_listen_socket(ep);
	metrics_http_adopted = -1;
	if (fd < 0) {
		int e = errno;
		evhttp_free(http);
		errno = e;
		return -1;
	}
	if (!evhttp_accept_socket_with_handle(http, fd)) {
		close(fd);
		evhttp_free(http);
		return -1;
	}
	metrics_http = http;
	metrics_http_sock = fd;
	return 0;
}

void metrics_http_adopt(int fd)
{
	metrics_http_adopted = fd;
}

int metrics_http_fd(void)
{
	return metrics_http ? metrics_http_sock : -1;
}
