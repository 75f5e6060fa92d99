/*
 * Unit tests for log: log_escape (table of inputs, capacities and expected
 * text), the shape of a stderr line, the process id in a fork's child
 * (cached, forgotten at fork), and the queue in front of a log
 * destination that never reads (a real pipe, a real syslog socket): the
 * callers never wait, the lost lines are counted, the lines that do go out
 * are whole, and the count is reported once the destination reads again.
 * SIGALRM fails a test that would hang on a blocked destination.
 */
#include "unit.h"

#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "log_queue.h"
#include "metrics.h"

struct escape_case {
	const char *name;
	const char *in;
	size_t len;
	size_t cap;
	const char *want;
};

#define IN(s) s, sizeof(s) - 1

static const struct escape_case escape_cases[] = {
	{ "plain", IN("MAIL FROM:<a@b>"), 64, "MAIL FROM:<a@b>" },
	{ "empty", IN(""), 8, "" },
	{ "quote and backslash", IN("a\"b\\c"), 64, "a\\x22b\\x5cc" },
	{ "crlf", IN("\r\n"), 64, "\\x0d\\x0a" },
	{ "nul", IN("\0x"), 64, "\\x00x" },
	{ "high bytes", IN("\xff\x80"), 64, "\\xff\\x80" },
	{ "del", IN("\x7f"), 64, "\\x7f" },
	{ "tab", IN("\t"), 64, "\\x09" },
	{ "space kept", IN("a b"), 64, "a b" },
	{ "fits exactly", IN("abcdefg"), 8, "abcdefg" },
	{ "one over", IN("abcdefgh"), 8, "abcd..." },
	{ "escape fits exactly", IN("abc\x01"), 8, "abc\\x01" },
	{ "escape pushes over", IN("abcd\x01"), 8, "abcd..." },
	{ "escape never split", IN("ab\x01" "cd"), 8, "ab..." },
	{ "long", IN("0123456789012345678901234567890123456789"), 16,
	  "012345678901..." },
};

static void test_escape_table(void **state)
{
	char buf[128];

	for (size_t i = 0; i < sizeof escape_cases / sizeof escape_cases[0]; i++) {
		const struct escape_case *c = &escape_cases[i];
		memset(buf, 'Z', sizeof buf);
		char *r = log_escape(buf, c->cap, c->in, c->len);
		assert_ptr_equal(r, buf);
		if (strcmp(buf, c->want) != 0) {
			print_error("case '%s': got '%s', want '%s'\n", c->name,
				    buf, c->want);
			fail();
		}
		assert_true(strlen(buf) < c->cap);
		/* Nothing written past the capacity. */
		assert_int_equal(buf[c->cap], 'Z');
	}
}

/* Every byte value, any capacity: NUL-terminated within cap, printable
 * only, and a prefix of the full escape (plus "..." when cut). */
static void test_escape_exhaustive(void **state)
{
	unsigned char in[256];
	char full[1100], buf[1100];

	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)i;
	log_escape(full, sizeof full, in, sizeof in);
	assert_int_equal(strlen(full), 95 - 2 + (256 - 95 + 2) * 4);
	for (size_t cap = 8; cap < sizeof buf; cap += 7) {
		log_escape(buf, cap, in, sizeof in);
		size_t n = strlen(buf);
		assert_true(n < cap);
		for (size_t k = 0; k < n; k++)
			assert_true(buf[k] >= 0x20 && buf[k] < 0x7f);
		if (strcmp(buf, full) != 0) {
			assert_true(n >= 3);
			assert_string_equal(buf + n - 3, "...");
			assert_memory_equal(buf, full, n - 3);
		}
	}
}

static void test_stderr_line(void **state)
{
	int saved;
	FILE *tmp = unit_stderr_capture(&saved);

	log_init("sluice-test", 1, LOG_LVL_INFO);
	log_info("abc=1 def=\"x\"");
	log_warn("two\nlines");
	log_err("bad %d", 42);
	log_debug("not shown");
	log_flush(); /* the writer thread writes to whatever fd 2 is then */
	char text[4096];
	unit_stderr_release(tmp, saved, text, sizeof text);

	regex_t re;
	assert_int_equal(regcomp(&re,
		"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
		"sluice-test\\[[0-9]+\\]: abc=1 def=\"x\"\n"
		"[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: warning: two\\?lines\n"
		"[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: error: bad 42\n$",
		REG_EXTENDED), 0);
	int rc = regexec(&re, text, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		print_error("got:\n%s", text);
	assert_int_equal(rc, 0);
}

/* The process id in a line is cached (log_queue_pid) and must be
 * forgotten in a fork's child: a worker's lines carry the worker's pid,
 * not the supervisor's that logged before the fork. */
static void test_pid_after_fork(void **state)
{
	log_init("sluice-test", 1, LOG_LVL_INFO);
	log_info("before the fork"); /* caches this process's pid */
	log_flush();
	assert_int_equal(log_queue_pid(), getpid());
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int saved;
		FILE *tmp = unit_stderr_capture(&saved);
		log_info("in the child");
		log_flush();
		char text[1024], want[64];
		unit_stderr_release(tmp, saved, text, sizeof text);
		snprintf(want, sizeof want, "sluice-test[%ld]: in the child", (long)getpid());
		_exit(strstr(text, want) && log_queue_pid() == getpid() ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

#define STALL_LINES 10000
#define STALL_WATCHDOG_S 20

static void on_alarm(int sig)
{
	static const char msg[] = "test_log: logging blocked its caller\n";
	ssize_t n = write(STDOUT_FILENO, msg, sizeof msg - 1);
	(void)n;
	_exit(1);
}

/* Reads what is there (fd non-blocking) until the queue is flushed. */
static size_t drain(int fd, char *buf, size_t cap, bool datagrams)
{
	size_t have = 0;
	for (int round = 0; round < 400; round++) {
		for (;;) {
			char tmp[8192];
			ssize_t n = read(fd, tmp, sizeof tmp);
			if (n <= 0)
				break;
			if (datagrams && n < (ssize_t)sizeof tmp)
				tmp[n++] = '\n';
			size_t k = (size_t)n < cap - 1 - have ? (size_t)n : cap - 1 - have;
			memcpy(buf + have, tmp, k);
			have += k;
		}
		log_queue_flush(5);
		if (round > 20 && strstr(buf, "lines dropped"))
			break;
	}
	buf[have] = '\0';
	return have;
}

static void stall_and_check(int rfd, bool datagrams, const char *line_re)
{
	unsigned long long before = log_queue_dropped();
	long long metric_before = metrics_get(METRIC_LOG_DROPPED);

	signal(SIGALRM, on_alarm);
	alarm(STALL_WATCHDOG_S);
	for (int i = 0; i < STALL_LINES; i++)
		log_info("stall=%d padding=%s", i,
			 "................................................................");
	alarm(0);
	unsigned long long dropped = log_queue_dropped() - before;
	assert_true(dropped > 0);
	assert_true(dropped < STALL_LINES);
	assert_int_equal(metrics_get(METRIC_LOG_DROPPED) - metric_before, (long long)dropped);

	/* The destination reads again: what was queued goes out, whole. */
	static char out[4 * 1024 * 1024];
	memset(out, 0, sizeof out);
	assert_true(fcntl(rfd, F_SETFL, O_NONBLOCK) == 0);
	drain(rfd, out, sizeof out, datagrams);
	/* Once it caught up, the writer said how many it lost. */
	assert_non_null(strstr(out, "lines dropped"));
	regex_t re;
	assert_int_equal(regcomp(&re, line_re, REG_EXTENDED | REG_NOSUB), 0);
	size_t lines = 0;
	char *save = NULL;
	for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (regexec(&re, l, 0, NULL, 0) != 0) {
			print_error("not a whole line: '%.200s'\n", l);
			fail();
		}
		if (strstr(l, "stall="))
			lines++;
	}
	regfree(&re);
	/* Every line is either written or counted, never lost unseen. */
	assert_int_equal(lines + dropped, STALL_LINES);
}

static void test_stderr_pipe_never_read(void **state)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	/* The smallest pipe the kernel allows: the stall comes at once. */
	(void)fcntl(p[1], F_SETPIPE_SZ, 4096);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	log_init("sluice-test", 1, LOG_LVL_INFO);

	stall_and_check(p[0], false,
			"^[0-9T:.Z-]{24} sluice-test\\[[0-9]+\\]: "
			"(stall=[0-9]+ padding=\\.{64}|warning: log: [0-9]+ lines dropped: .*)$");

	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(p[0]);
	close(p[1]);
}

static void test_syslog_socket_never_read(void **state)
{
	char dir[] = "/tmp/sluice-test-log-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s/log", dir);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);

	log_init("sluice-test", 0, LOG_LVL_INFO);
	log_queue_init(LOG_QUEUE_SYSLOG, sun.sun_path);
	/* <22>: facility mail, info; <20>: mail, warning. */
	stall_and_check(fd, true,
			"^(<22>[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} sluice-test\\[[0-9]+\\]: "
			"stall=[0-9]+ padding=\\.{64}|<20>[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} "
			"sluice-test\\[[0-9]+\\]: warning: log: [0-9]+ lines dropped: .*)$");

	log_init("sluice-test", 1, LOG_LVL_INFO);
	close(fd);
	unlink(sun.sun_path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_table),
		cmocka_unit_test(test_escape_exhaustive),
		cmocka_unit_test(test_stderr_line),
		cmocka_unit_test(test_pid_after_fork),
		cmocka_unit_test(test_stderr_pipe_never_read),
		cmocka_unit_test(test_syslog_socket_never_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
