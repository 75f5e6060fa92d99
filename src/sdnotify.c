/*
 * sdnotify: tells systemd (Type=notify) when sluice is ready, reloading or
 * stopping, and what it is doing (STATUS=).
 *
 * Exports sdnotify_init, sdnotify_enabled, sdnotify_env, sdnotify_addr,
 * sdnotify_send, sdnotify_worker_ready, sdnotify_ready_fd,
 * sdnotify_read_ready.
 *
 * One process-wide object, written only by sdnotify_init in the
 * supervisor before any fork; workers inherit it and only write their pid
 * to the ready pipe. Messages go out only from the supervisor, the
 * service's main process (NotifyAccess=main).
 *
 * Readiness: the listening sockets exist before any worker (supervisor.c),
 * but a connection is served only once a worker has set up its loop, so
 * READY=1 waits until every worker of the current generation has written
 * its pid (4 bytes, below PIPE_BUF: atomic) to the pipe. The pipe exists
 * without systemd too: sluicectl reload and upgrade answer on it.
 *
 * Upgrade (upgrade.h): $NOTIFY_SOCKET is unset here so that nothing the
 * supervisor starts inherits it, and set again from sdnotify_env for the
 * re-executed program, which keeps the pid systemd knows as MAINPID.
 *
 * Rejected: linking libsystemd for sd_notify (a dependency for one
 * sendto); polling a metrics gauge for readiness (a draining old worker
 * and its successor may share a metrics slot, and a poll adds a timer to
 * an otherwise event-driven supervisor).
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static struct {
	int sock;              /* datagram socket, -1 when disabled */
	struct sockaddr_un to;
	socklen_t to_len;
	int ready[2];          /* [0] supervisor reads, [1] workers write */
	char env[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* $NOTIFY_SOCKET */
} sdnotify = { -1, { 0 }, 0, { -1, -1 }, "" };

int sdnotify_addr(const char *value, struct sockaddr_un *sun, size_t *len)
{
	size_t n = value ? strlen(value) : 0;
	if (n < 2 || n >= sizeof sun->sun_path || (value[0] != '/' && value[0] != '@'))
		return -1;
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, value, n);
	if (value[0] == '@') {
		/* Abstract: a leading NUL, and the length counts no final NUL. */
		sun->sun_path[0] = '\0';
		*len = offsetof(struct sockaddr_un, sun_path) + n;
	} else {
		*len = offsetof(struct sockaddr_un, sun_path) + n + 1;
	}
	return 0;
}

int sdnotify_init(void)
{
	/* The ready pipe is made with or without systemd: the supervisor
	 * also answers sluicectl reload and upgrade once the new workers
	 * accept. */
	if (pipe2(sdnotify.ready, O_CLOEXEC | O_NONBLOCK) != 0) {
		log_err("sdnotify: pipe: %s", strerror(errno));
		return -1;
	}
	const char *value = getenv("NOTIFY_SOCKET");
	if (!value)
		return 0;
	size_t len;
	int rc = sdnotify_addr(value, &sdnotify.to, &len);
	if (rc != 0)
		log_warn("sdnotify: NOTIFY_SOCKET=%.100s is not a Unix socket; not notifying",
			 value);
	else
		memcpy(sdnotify.env, value, strlen(value) + 1); /* < sun_path */
	/* Not for anything this process might start. */
	unsetenv("NOTIFY_SOCKET");
	if (rc != 0)
		return 0;
	sdnotify.to_len = (socklen_t)len;
	sdnotify.sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (sdnotify.sock < 0) {
		log_err("sdnotify: socket: %s", strerror(errno));
		return -1;
	}
	return 0;
}

const char *sdnotify_env(void)
{
	return sdnotify.sock >= 0 ? sdnotify.env : NULL;
}

bool sdnotify_enabled(void)
{
	return sdnotify.sock >= 0;
}

void sdnotify_send(const char *fmt, ...)
{
	if (sdnotify.sock < 0)
		return;
	char msg[SDNOTIFY_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
	if (sendto(sdnotify.sock, msg, len, MSG_NOSIGNAL,
		   (const struct sockaddr *)&sdnotify.to, sdnotify.to_len) < 0)
		log_warn("sdnotify: cannot notify: %s", strerror(errno));
}

void sdnotify_worker_ready(void)
{
	if (sdnotify.ready[1] < 0)
		return;
	pid_t pid = getpid();
	if (write(sdnotify.ready[1], &pid, sizeof pid) != (ssize_t)sizeof pid)
		log_warn("sdnotify: worker pid=%d cannot report ready: %s", (int)pid,
			 strerror(errno));
}

int sdnotify_ready_fd(void)
{
	return sdnotify.ready[0];
}

pid_t sdnotify_read_ready(void)
{
	pid_t pid;
	if (sdnotify.ready[0] < 0)
		return 0;
	ssize_t n = read(sdnotify.ready[0], &pid, sizeof pid);
	/* Writes of sizeof pid are atomic, so a short read cannot happen. */
	return n == (ssize_t)sizeof pid && pid > 0 ? pid : 0;
}
