/*
 * Unit tests for sdnotify: $NOTIFY_SOCKET values to socket addresses
 * (path, abstract, refused), and one datagram received from
 * sdnotify_send by a socket bound here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdnotify.h"

static void test_addr(void **state)
{
	static const struct {
		const char *in;
		int rc;
		size_t path_len; /* bytes of sun_path counted in len */
	} rows[] = {
		{ "/run/systemd/notify", 0, sizeof "/run/systemd/notify" },
		{ "@abstract-name", 0, sizeof "@abstract-name" - 1 },
		{ "@", -1, 0 },
		{ "/", -1, 0 },
		{ "", -1, 0 },
		{ "relative/path", -1, 0 },
		{ "vsock:2:1234", -1, 0 },
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct sockaddr_un sun;
		size_t len = 0;
		int rc = sdnotify_addr(rows[i].in, &sun, &len);
		if (rc != rows[i].rc)
			print_error("%s: rc %d\n", rows[i].in, rc);
		assert_int_equal(rc, rows[i].rc);
		if (rc != 0)
			continue;
		assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + rows[i].path_len);
		if (rows[i].in[0] == '@') {
			assert_int_equal(sun.sun_path[0], '\0');
			assert_memory_equal(sun.sun_path + 1, rows[i].in + 1, strlen(rows[i].in) - 1);
		} else {
			assert_string_equal(sun.sun_path, rows[i].in);
		}
	}
	/* Too long for sun_path. */
	char lng[sizeof ((struct sockaddr_un *)0)->sun_path + 1];
	memset(lng, 'a', sizeof lng - 1);
	lng[0] = '/';
	lng[sizeof lng - 1] = '\0';
	struct sockaddr_un sun;
	size_t len;
	assert_int_equal(sdnotify_addr(lng, &sun, &len), -1);
	assert_int_equal(sdnotify_addr(NULL, &sun, &len), -1);
}

static void test_send(void **state)
{
	char name[64];
	snprintf(name, sizeof name, "@sluice-unit-sdnotify-%d", (int)getpid());
	struct sockaddr_un sun;
	size_t len;
	assert_int_equal(sdnotify_addr(name, &sun, &len), 0);
	int rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(rx >= 0);
	assert_int_equal(bind(rx, (struct sockaddr *)&sun, (socklen_t)len), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", name, 1), 0);
	assert_int_equal(sdnotify_init(), 0);
	assert_true(sdnotify_enabled());
	assert_null(getenv("NOTIFY_SOCKET"));
	sdnotify_send("READY=1\nSTATUS=%d sessions", 7);
	char buf[SDNOTIFY_MSG_MAX + 1];
	ssize_t n = recv(rx, buf, sizeof buf - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1\nSTATUS=7 sessions");
	/* The ready pipe carries a worker's pid to the supervisor. */
	assert_int_equal(sdnotify_read_ready(), 0);
	sdnotify_worker_ready();
	assert_int_equal(sdnotify_read_ready(), getpid());
	assert_int_equal(sdnotify_read_ready(), 0);
	close(rx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr),
		cmocka_unit_test(test_send),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
