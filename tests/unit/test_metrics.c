/*
 * Unit tests for metrics: counting without metrics_init, shared slots
 * across fork, gauge reset on metrics_use_slot, and the /metrics page
 * fetched over HTTP on loopback. Tests run in order: the first must run
 * before metrics_init.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "config.h"
#include "metrics.h"

static void test_without_init(void **state)
{
	assert_int_equal(metrics_get(METRIC_SESSIONS), 0);
	metrics_inc(METRIC_SESSIONS);
	metrics_add(METRIC_SESSIONS, 41);
	metrics_add(METRIC_SESSIONS_ACTIVE, 3);
	metrics_add(METRIC_SESSIONS_ACTIVE, -1);
	assert_int_equal(metrics_get(METRIC_SESSIONS), 42);
	assert_int_equal(metrics_get(METRIC_SESSIONS_ACTIVE), 2);
	/* Out-of-range ids are ignored, not written. */
	metrics_add(METRIC_COUNT, 1);
	assert_int_equal(metrics_get(METRIC_COUNT), 0);
	metrics_use_slot(1); /* no mapping: ignored */
	assert_int_equal(metrics_get(METRIC_SESSIONS), 42);
}

static void test_shared_slots(void **state)
{
	assert_int_equal(metrics_init(2), 0);
	assert_int_equal(metrics_init(2), -1);
	/* What was counted before the mapping is kept (supervisor slot). */
	assert_int_equal(metrics_get(METRIC_SESSIONS), 42);

	for (unsigned slot = 1; slot <= 2; slot++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			metrics_use_slot(slot);
			metrics_add(METRIC_SESSIONS, 100 * slot);
			metrics_add(METRIC_POOL_OPEN, 5);
			_exit(0);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(metrics_get(METRIC_SESSIONS), 42 + 100 + 200);
	assert_int_equal(metrics_get(METRIC_POOL_OPEN), 10);

	/* A restarted worker 2: its gauges start at zero, its counters stay. */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		metrics_use_slot(2);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(metrics_get(METRIC_POOL_OPEN), 5);
	assert_int_equal(metrics_get(METRIC_SESSIONS), 342);

	/* This process is still on slot 0. */
	metrics_inc(METRIC_WORKER_RESTARTS);
	assert_int_equal(metrics_get(METRIC_WORKER_RESTARTS), 1);
}

struct fetch {
	struct event_base *base;
	int code;
	char body[16384];
	char ctype[128];
};

static void fetch_done_cb(struct evhttp_request *req, void *arg)
{
	struct fetch *f = arg;

	f->code = req ? evhttp_request_get_response_code(req) : -1;
	if (req) {
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(b);
		if (n >= sizeof f->body)
			n = sizeof f->body - 1;
		assert_true(evbuffer_remove(b, f->body, n) == (int)n);
		f->body[n] = '\0';
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
						    "Content-Type");
		snprintf(f->ctype, sizeof f->ctype, "%s", ct ? ct : "");
	}
	event_base_loopbreak(f->base);
}

static void fetch(struct event_base *base, unsigned short port,
		  enum evhttp_cmd_type cmd, const char *path, struct fetch *f)
{
	memset(f, 0, sizeof *f);
	f->base = base;
	f->code = 0;
	struct evhttp_connection *c =
		evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
	assert_non_null(c);
	evhttp_connection_set_timeout(c, 5);
	struct evhttp_request *req = evhttp_request_new(fetch_done_cb, f);
	assert_non_null(req);
	assert_int_equal(evhttp_add_header(evhttp_request_get_output_headers(req),
					   "Host", "127.0.0.1"), 0);
	assert_int_equal(evhttp_make_request(c, req, cmd, path), 0);
	assert_true(event_base_dispatch(base) >= 0);
	evhttp_connection_free(c);
}

/* A port that was free a moment ago (the test's small race is fine). */
static unsigned short free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

static void test_http(void **state)
{
	struct event_base *base = event_base_new();
	assert_non_null(base);
	unsigned short port = free_port();
	char text[64];
	struct endpoint ep;
	snprintf(text, sizeof text, "127.0.0.1:%u", port);
	assert_int_equal(config_parse_endpoint(text, &ep), 0);
	assert_int_equal(metrics_http_start(base, &ep), 0);

	metrics_add(METRIC_MEMORY_BUFFERED, 4096);

	struct fetch *f = malloc(sizeof *f);
	assert_non_null(f);
	fetch(base, port, EVHTTP_REQ_GET, "/metrics", f);
	assert_int_equal(f->code, 200);
	assert_non_null(strstr(f->ctype, "text/plain"));
	assert_non_null(strstr(f->body,
		"# HELP sluice_sessions_total Client sessions accepted\n"
		"# TYPE sluice_sessions_total counter\n"
		"sluice_sessions_total 342\n"));
	assert_non_null(strstr(f->body,
		"# TYPE sluice_pool_connections gauge\n"
		"sluice_pool_connections 5\n"));
	assert_non_null(strstr(f->body, "\nsluice_memory_buffered_bytes 4096\n"));
	assert_non_null(strstr(f->body, "\nsluice_worker_restarts_total 1\n"));
	/* Every series has a value line; every metric name (labelled series
	 * share one) has exactly one HELP and one TYPE line, before its first
	 * series. */
	int helps = 0, values = 0, names = 0;
	char last[128] = "";
	for (const char *p = f->body; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > 7 && strncmp(p, "# HELP ", 7) == 0) {
			helps++;
		} else if (len && *p != '#') {
			values++;
			size_t stem = strcspn(p, "{ ");
			if (stem >= sizeof last || strncmp(last, p, stem) != 0 || last[stem]) {
				names++;
				snprintf(last, sizeof last, "%.*s", (int)stem, p);
			}
		}
		p += len + (nl != NULL);
	}
	assert_int_equal(values, METRIC_COUNT);
	assert_int_equal(helps, names);
	assert_non_null(strstr(f->body,
		"# TYPE sluice_shaped_hangups_total counter\n"
		"sluice_shaped_hangups_total{phase=\"greeting\"} 0\n"
		"sluice_shaped_hangups_total{phase=\"helo\"} 0\n"));

	fetch(base, port, EVHTTP_REQ_GET, "/metrics?x=1", f);
	assert_int_equal(f->code, 200);
	fetch(base, port, EVHTTP_REQ_GET, "/", f);
	assert_int_equal(f->code, 404);
	fetch(base, port, EVHTTP_REQ_GET, "/metricsx", f);
	assert_int_equal(f->code, 404);
	fetch(base, port, EVHTTP_REQ_POST, "/metrics", f);
	assert_int_equal(f->code, 405);

	/* Only one endpoint per process. */
	assert_int_equal(metrics_http_start(base, &ep), -1);
	free(f);
	/* The evhttp object lives until exit, as in the daemon; so does the
	 * base it runs on. */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_without_init),
		cmocka_unit_test(test_shared_slots),
		cmocka_unit_test(test_http),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
