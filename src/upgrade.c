/*
 * upgrade: executing the installed program in place of the running
 * supervisor (see upgrade.h).
 *
 * Exports upgrade_remember, upgrade_path, upgrade_check, upgrade_exec,
 * upgrade_take, upgrade_unblock_signals, upgrade_encode, upgrade_parse.
 *
 * Why execve of the same pid and not a second supervisor next to the
 * first (nginx's USR2 dance): systemd knows the supervisor as MAINPID
 * (Type=notify, NotifyAccess=main) and the workers know it as their
 * parent: an exec keeps both, the old workers stay children that the new
 * program reaps, and their life pipe (supervisor.c) never sees EOF.
 *
 * The path: resolved once at start-up from /proc/self/exe (argv[0] may
 * have come through $PATH). Not /proc/self/exe at upgrade time: dpkg
 * renames the new file over the old one, and the link then names the
 * deleted inode, which would re-execute the old program.
 *
 * Check first: a configuration the new program refuses, or a program that
 * does not run at all, must not end the running service, and after a
 * successful execve there is no way back. So the new program is run once
 * with "-n" (it loads the configuration and exits) and only its success
 * leads to the execve. The check blocks the supervisor's loop for the
 * few milliseconds a configuration load takes (as a reload's own
 * config_load does), UPGRADE_CHECK_TIMEOUT_MS at most; the workers, and
 * so the sessions, do not wait for it.
 *
 * Signals: the supervisor's handlers are libevent's, which execve resets
 * to the default action; SIGTERM, SIGHUP, SIGINT, SIGCHLD and SIGUSR2 are
 * blocked across the execve (the mask survives it) so that one arriving
 * meanwhile waits for the new program's handlers instead of killing it or
 * being lost.
 */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "mstime.h"

#define UPGRADE_CHECK_TIMEOUT_MS 10000
#define UPGRADE_CHECK_ERR_MAX 300   /* bytes of the check's stderr kept */
#define UPGRADE_WAIT_STEP_MS 10
#define UPGRADE_ARGS_MAX 1024
#define UPGRADE_FIELD_NUMS 4        /* numbers in one item at most */

extern char **environ;

static char upgrade_exe[PATH_MAX];
static char **upgrade_argv;

void upgrade_remember(char **argv)
{
	upgrade_argv = argv;
	ssize_t n = readlink("/proc/self/exe", upgrade_exe, sizeof upgrade_exe - 1);
	static const char deleted[] = " (deleted)";
	size_t dl = sizeof deleted - 1;
	if (n > 0 && !((size_t)n > dl && !memcmp(upgrade_exe + n - dl, deleted, dl))) {
		upgrade_exe[n] = 0;
		return;
	}
	upgrade_exe[0] = 0;
	if (argv[0] && strchr(argv[0], '/') && !realpath(argv[0], upgrade_exe))
		upgrade_exe[0] = 0;
}

const char *upgrade_path(void)
{
	return upgrade_exe;
}

/* The first line of what the check wrote, for one line of answer. */
static void upgrade_first_line(char *buf)
{
	buf[strcspn(buf, "\n")] = 0;
}

int upgrade_check(char *err, size_t cap)
{
	if (!upgrade_exe[0] || !upgrade_argv) {
		snprintf(err, cap, "the program's path is unknown (not started by path)");
		return -1;
	}
	char *args[UPGRADE_ARGS_MAX + 2];
	size_t n = 0;
	args[n++] = upgrade_argv[0];
	args[n++] = "-n";
	for (char **a = upgrade_argv + 1; *a && n < UPGRADE_ARGS_MAX; a++)
		args[n++] = *a;
	args[n] = NULL;
	int out[2];
	if (pipe2(out, O_CLOEXEC) != 0) {
		snprintf(err, cap, "pipe: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc = posix_spawn_file_actions_init(&fa);
	if (rc == 0 && (rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, out[1], 2);
	if (rc == 0)
		rc = posix_spawn(&pid, upgrade_exe, &fa, NULL, args, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	if (rc != 0) {
		close(out[0]);
		snprintf(err, cap, "cannot run %s: %s", upgrade_exe, strerror(rc));
		return -1;
	}
	/* Its stderr until EOF, then its exit; both by the deadline. */
	char text[UPGRADE_CHECK_ERR_MAX + 1];
	size_t len = 0;
	long long deadline = mstime_mono() + UPGRADE_CHECK_TIMEOUT_MS;
	int status = 0;
	bool eof = false, exited = false;
	while (!exited) {
		long long left = deadline - mstime_mono();
		if (left <= 0)
			break;
		if (!eof) {
			/* Read only what poll saw: the pipe blocks, and a
			 * check that hangs silently must meet the deadline. */
			struct pollfd p = {out[0], POLLIN, 0};
			int ready = poll(&p, 1, (int)left);
			if (ready < 0 && errno != EINTR)
				break;
			if (ready <= 0)
				continue;
			char chunk[512];
			ssize_t r = read(out[0], chunk, sizeof chunk);
			if (r == 0)
				eof = true;
			for (ssize_t i = 0; i < r && len < UPGRADE_CHECK_ERR_MAX; i++)
				text[len++] = chunk[i];
			continue;
		}
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid || (w < 0 && errno != EINTR))
			exited = true;
		else
			poll(NULL, 0, UPGRADE_WAIT_STEP_MS);
	}
	close(out[0]);
	text[len] = 0;
	upgrade_first_line(text);
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		snprintf(err, cap, "%s -n did not finish within %d s", upgrade_exe,
			 UPGRADE_CHECK_TIMEOUT_MS / 1000);
		return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		snprintf(err, cap, "%s -n died with signal %d", upgrade_exe, WTERMSIG(status));
	else
		snprintf(err, cap, "%s -n refused (exit %d): %s", upgrade_exe,
			 WEXITSTATUS(status), text[0] ? text : "no reason given");
	return -1;
}

/* Every fd in st, into fds (room for all); returns how many. */
static size_t upgrade_fds(const struct upgrade_state *st, int *fds)
{
	size_t n = 0;
	fds[n++] = st->life[0];
	fds[n++] = st->life[1];
	for (size_t i = 0; i < st->n_listen; i++)
		fds[n++] = st->listen[i];
	fds[n++] = st->control_fd;
	for (size_t i = 0; i < st->n_waiters; i++)
		fds[n++] = st->waiters[i].fd;
	fds[n++] = st->http_fd;
	fds[n++] = st->metrics_fd;
	fds[n++] = st->snapshot_fd;
	return n;
}

#define UPGRADE_FDS_MAX (UPGRADE_LISTEN_MAX + UPGRADE_WAITERS_MAX + 7)

/* close-on-exec on (or off) for the fds that are open. */
static void upgrade_cloexec(const int *fds, size_t n, bool on)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		int fl = fcntl(fds[i], F_GETFD);
		if (fl >= 0)
			fcntl(fds[i], F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC);
	}
}

static void upgrade_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGUSR2);
}

void upgrade_unblock_signals(void)
{
	sigset_t set;
	upgrade_signals(&set);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int upgrade_exec(const struct upgrade_state *st, const char *notify, char *err, size_t cap)
{
	static char text[UPGRADE_TEXT_MAX];
	static int fds[UPGRADE_FDS_MAX];
	if (!upgrade_exe[0] || !upgrade_argv) {
		snprintf(err, cap, "the program's path is unknown");
		return -1;
	}
	if (upgrade_encode(st, text, sizeof text) != 0) {
		snprintf(err, cap, "too much to hand over (%zu sockets)", st->n_listen);
		return -1;
	}
	size_t n = upgrade_fds(st, fds);
	sigset_t set;
	upgrade_signals(&set);
	if (setenv(UPGRADE_ENV, text, 1) != 0 ||
	    (notify && setenv("NOTIFY_SOCKET", notify, 1) != 0)) {
		snprintf(err, cap, "setenv: %s", strerror(errno));
		unsetenv(UPGRADE_ENV);
		return -1;
	}
	upgrade_cloexec(fds, n, false);
	sigprocmask(SIG_BLOCK, &set, NULL);
	log_flush();
	execv(upgrade_exe, upgrade_argv);
	int e = errno;
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	upgrade_cloexec(fds, n, true);
	unsetenv(UPGRADE_ENV);
	unsetenv("NOTIFY_SOCKET");
	snprintf(err, cap, "cannot execute %s: %s", upgrade_exe, strerror(e));
	return -1;
}

int upgrade_take(struct upgrade_state *st, char *err, size_t cap)
{
	static int fds[UPGRADE_FDS_MAX];
	const char *text = getenv(UPGRADE_ENV);
	if (!text)
		return 0;
	size_t len = strnlen(text, UPGRADE_TEXT_MAX + 1);
	int rc = upgrade_parse(text, len, st, err, cap);
	unsetenv(UPGRADE_ENV);
	if (rc != 0)
		return -1;
	/* What is not open (a mistaken number) is -1 from here on. */
	int *own[] = {&st->life[0], &st->life[1], &st->control_fd, &st->http_fd,
		      &st->metrics_fd, &st->snapshot_fd};
	for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
		if (*own[i] >= 0 && fcntl(*own[i], F_GETFD) < 0)
			*own[i] = -1;
	for (size_t i = 0; i < st->n_listen; i++)
		if (st->listen[i] >= 0 && fcntl(st->listen[i], F_GETFD) < 0)
			st->listen[i] = -1;
	size_t w = 0;
	for (size_t i = 0; i < st->n_waiters; i++)
		if (fcntl(st->waiters[i].fd, F_GETFD) >= 0)
			st->waiters[w++] = st->waiters[i];
	st->n_waiters = w;
	upgrade_cloexec(fds, upgrade_fds(st, fds), true);
	return 1;
}

/* ---- the text form -------------------------------------------------------- */

/* Appends to buf at *used; -1 when it does not fit. */
static int upgrade_put(char *buf, size_t cap, size_t *used, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int upgrade_put(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *used, cap - *used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *used)
		return -1;
	*used += (size_t)n;
	return 0;
}

static bool upgrade_version_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '.' || c == '+' || c == '~' || c == '-' || c == '_';
}

int upgrade_encode(const struct upgrade_state *st, char *buf, size_t cap)
{
	size_t u = 0;
	if (cap == 0)
		return -1;
	buf[0] = 0;
	if (upgrade_put(buf, cap, &u, "v=1;life=%d:%d;listen=", st->life[0], st->life[1]))
		return -1;
	for (size_t i = 0; i < st->n_listen; i++)
		if (upgrade_put(buf, cap, &u, "%s%d", i ? "," : "", st->listen[i]))
			return -1;
	if (st->control_fd >= 0 && upgrade_put(buf, cap, &u, ";control=%d", st->control_fd))
		return -1;
	if (upgrade_put(buf, cap, &u, ";wait="))
		return -1;
	for (size_t i = 0; i < st->n_waiters; i++)
		if (upgrade_put(buf, cap, &u, "%s%d:%d", i ? "," : "", st->waiters[i].fd,
				st->waiters[i].json))
			return -1;
	if (st->http_fd >= 0 && upgrade_put(buf, cap, &u, ";http=%d", st->http_fd))
		return -1;
	if (st->metrics_fd >= 0 &&
	    upgrade_put(buf, cap, &u, ";metrics=%d:%llu:%u:%u", st->metrics_fd,
			st->metrics_layout, st->per_bank, st->bank))
		return -1;
	if (st->snapshot_fd >= 0 &&
	    upgrade_put(buf, cap, &u, ";snapshot=%d:%llu", st->snapshot_fd, st->snapshot_layout))
		return -1;
	if (upgrade_put(buf, cap, &u, ";workers="))
		return -1;
	for (size_t i = 0; i < st->n_workers; i++)
		if (upgrade_put(buf, cap, &u, "%s%d:%u:%u", i ? "," : "", (int)st->workers[i].pid,
				st->workers[i].slot, st->workers[i].bank))
			return -1;
	if (upgrade_put(buf, cap, &u, ";from="))
		return -1;
	for (size_t i = 0; st->from[i] && i < sizeof st->from; i++)
		if (upgrade_version_char(st->from[i]) &&
		    upgrade_put(buf, cap, &u, "%c", st->from[i]))
			return -1;
	return 0;
}

/* One decimal number of v[*i..len) up to lim. */
static int upgrade_num(const char *v, size_t len, size_t *i, unsigned long long lim,
		       unsigned long long *out)
{
	unsigned long long x = 0;
	size_t start = *i;
	for (; *i < len && v[*i] >= '0' && v[*i] <= '9'; (*i)++) {
		unsigned d = (unsigned)(v[*i] - '0');
		if (d > lim || x > (lim - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	if (*i == start)
		return -1;
	*out = x;
	return 0;
}

/* Items of k ':'-separated numbers (each <= lim[j]), comma-separated,
 * from v[0..len) into out (max items of UPGRADE_FIELD_NUMS). Returns the
 * number of items, or -1. */
static long upgrade_items(const char *v, size_t len, unsigned k, const unsigned long long *lim,
			  unsigned long long (*out)[UPGRADE_FIELD_NUMS], size_t max)
{
	size_t i = 0, n = 0;
	if (len == 0)
		return 0;
	for (;;) {
		if (n == max)
			return -1;
		for (unsigned j = 0; j < k; j++) {
			if (j && (i >= len || v[i++] != ':'))
				return -1;
			if (upgrade_num(v, len, &i, lim[j], &out[n][j]) != 0)
				return -1;
		}
		n++;
		if (i == len)
			return (long)n;
		if (v[i++] != ',')
			return -1;
	}
}

#define UPGRADE_FD_LIM ((unsigned long long)INT_MAX)

int upgrade_parse(const char *text, size_t len, struct upgrade_state *st, char *err,
		  size_t cap)
{
	static unsigned long long items[UPGRADE_LISTEN_MAX][UPGRADE_FIELD_NUMS];
	static const unsigned long long fd1[] = {UPGRADE_FD_LIM};
	static const unsigned long long fd2[] = {UPGRADE_FD_LIM, UPGRADE_FD_LIM};
	static const unsigned long long waitl[] = {UPGRADE_FD_LIM, 1};
	static const unsigned long long metl[] = {UPGRADE_FD_LIM, ULLONG_MAX, 65536, 1};
	static const unsigned long long snapl[] = {UPGRADE_FD_LIM, ULLONG_MAX};
	static const unsigned long long workl[] = {INT_MAX, 65536, 1};
	memset(st, 0, sizeof *st);
	st->life[0] = st->life[1] = st->control_fd = st->http_fd = -1;
	st->metrics_fd = st->snapshot_fd = -1;
	if (len > UPGRADE_TEXT_MAX) {
		snprintf(err, cap, "%s longer than %d bytes", UPGRADE_ENV, UPGRADE_TEXT_MAX);
		return -1;
	}
	bool version = false;
	size_t at = 0;
	while (at < len) {
		size_t end = at;
		while (end < len && text[end] != ';')
			end++;
		const char *f = text + at, *eq = memchr(f, '=', end - at);
		if (!eq) {
			snprintf(err, cap, "field without '=' at byte %zu", at);
			return -1;
		}
		size_t klen = (size_t)(eq - f);
		const char *v = eq + 1;
		size_t vlen = end - at - klen - 1;
		long n = 0;
#define UPGRADE_KEY(s) (klen == sizeof(s) - 1 && !memcmp(f, s, klen))
		if (UPGRADE_KEY("v")) {
			n = upgrade_items(v, vlen, 1, (const unsigned long long[]){1}, items, 1);
			version = n == 1 && items[0][0] == 1;
			if (!version) {
				snprintf(err, cap, "unknown format version");
				return -1;
			}
		} else if (UPGRADE_KEY("life")) {
			if ((n = upgrade_items(v, vlen, 2, fd2, items, 1)) == 1) {
				st->life[0] = (int)items[0][0];
				st->life[1] = (int)items[0][1];
			}
		} else if (UPGRADE_KEY("listen")) {
			n = upgrade_items(v, vlen, 1, fd1, items, UPGRADE_LISTEN_MAX);
			for (long i = 0; i < n; i++)
				st->listen[i] = (int)items[i][0];
			st->n_listen = n > 0 ? (size_t)n : 0;
		} else if (UPGRADE_KEY("control") || UPGRADE_KEY("http")) {
			if ((n = upgrade_items(v, vlen, 1, fd1, items, 1)) == 1)
				*(f[0] == 'c' ? &st->control_fd : &st->http_fd) = (int)items[0][0];
		} else if (UPGRADE_KEY("wait")) {
			n = upgrade_items(v, vlen, 2, waitl, items, UPGRADE_WAITERS_MAX);
			for (long i = 0; i < n; i++)
				st->waiters[i] = (struct control_waiter){(int)items[i][0],
									 items[i][1] != 0};
			st->n_waiters = n > 0 ? (size_t)n : 0;
		} else if (UPGRADE_KEY("metrics")) {
			if ((n = upgrade_items(v, vlen, 4, metl, items, 1)) == 1) {
				st->metrics_fd = (int)items[0][0];
				st->metrics_layout = items[0][1];
				st->per_bank = (unsigned)items[0][2];
				st->bank = (unsigned)items[0][3];
			}
		} else if (UPGRADE_KEY("snapshot")) {
			if ((n = upgrade_items(v, vlen, 2, snapl, items, 1)) == 1) {
				st->snapshot_fd = (int)items[0][0];
				st->snapshot_layout = items[0][1];
			}
		} else if (UPGRADE_KEY("workers")) {
			n = upgrade_items(v, vlen, 3, workl, items, UPGRADE_WORKERS_MAX);
			for (long i = 0; i < n; i++)
				st->workers[i] = (struct upgrade_worker){(pid_t)items[i][0],
									 (unsigned)items[i][1],
									 (unsigned)items[i][2]};
			st->n_workers = n > 0 ? (size_t)n : 0;
		} else if (UPGRADE_KEY("from")) {
			size_t k = 0;
			for (size_t i = 0; i < vlen && k < sizeof st->from - 1; i++)
				if (upgrade_version_char(v[i]))
					st->from[k++] = v[i];
			st->from[k] = 0;
		}
#undef UPGRADE_KEY
		if (n < 0) {
			snprintf(err, cap, "bad value for '%.*s'", (int)(klen < 16 ? klen : 16), f);
			return -1;
		}
		at = end + (end < len);
	}
	if (!version || st->life[0] < 0 || st->life[1] < 0) {
		snprintf(err, cap, "no format version or no life pipe");
		return -1;
	}
	for (size_t i = 0; i < st->n_workers; i++)
		if (st->workers[i].pid <= 0) {
			snprintf(err, cap, "worker pid 0");
			return -1;
		}
	return 0;
}
