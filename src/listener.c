/*
 * listener: listening sockets and the accept loop (see listener.h).
 *
 * Out of descriptors (EMFILE/ENFILE, the worker at its RLIMIT_NOFILE): a
 * level-triggered listener would report the same pending connection again
 * at once, and the loop would spin. One descriptor is kept in reserve (a
 * dup of a listening socket, so no file is opened for it): it is given up
 * to accept the pending connection, which gets a 421 and is closed, then
 * taken back. New clients thus hear 421 at once while the worker is full,
 * and the backlog is drained rather than spun on. Only if the reserve
 * cannot be taken back does accepting pause for LISTENER_PAUSE_MS. Each
 * refusal is counted (sluice_limit_files_total); the log gets one line a
 * minute with the count (ratelog).
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "proxy_listen.h"
#include "ratelog.h"
#include "replies.h"
#include "session.h"
#include "throttle.h"

#define LISTENER_BACKLOG 4096
#define LISTENER_PAUSE_MS 1000
#define LISTENER_SHED_MAX 64 /* refusals per accept event: the loop stays fair */
#define LISTENER_LOG_INTERVAL_MS 60000 /* one line a minute for a flood */

static struct evconnlistener *listeners[CONFIG_LISTEN_MAX];
static size_t n_listeners;
static struct event *resume_ev;
static int reserve_fd = -1;       /* given up to refuse a connection */
static struct ratelog files_log;

int listener_bind(const struct endpoint *ep)
{
	int fam = ep->ss.ss_family;
	int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int on = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
	    (fam == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0) ||
	    throttle_listener(fd) != 0 ||
	    bind(fd, (const struct sockaddr *)&ep->ss, ep->len) != 0 ||
	    listen(fd, LISTENER_BACKLOG) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

bool listener_matches(int fd, const struct endpoint *ep)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	int listening = 0;
	socklen_t ol = sizeof listening;
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) != 0 || !listening ||
	    ss.ss_family != ep->ss.ss_family)
		return false;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&ss, *b = (const void *)&ep->ss;
		return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
	}
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&ss, *b = (const void *)&ep->ss;
		return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
		       !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr);
	}
	if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *a = (const void *)&ss, *b = (const void *)&ep->ss;
		return !strncmp(a->sun_path, b->sun_path, sizeof a->sun_path);
	}
	return false;
}

static void listener_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
			       struct sockaddr *addr, int len, void *arg)
{
	session_accept(arg, fd, addr, (socklen_t)len);
}

/* A listener in proxy_protocol_listen: the header comes first. */
static void listener_accept_proxy_cb(struct evconnlistener *l, evutil_socket_t fd,
				     struct sockaddr *addr, int len, void *arg)
{
	proxy_listen_accept(arg, fd, addr, (socklen_t)len);
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	for (size_t i = 0; i < n_listeners; i++)
		evconnlistener_enable(listeners[i]);
}

static void listener_pause(const char *why)
{
	log_err("listener: %s; pausing accept for %d ms", why, LISTENER_PAUSE_MS);
	for (size_t i = 0; i < n_listeners; i++)
		evconnlistener_disable(listeners[i]);
	struct timeval tv = mstime_tv(LISTENER_PAUSE_MS);
	evtimer_add(resume_ev, &tv);
}

/* Out of descriptors: accept pending connections on the reserve
 * descriptor, one at a time, and refuse each with a 421. Returns the
 * connections refused; stops when none is pending (*drained), at
 * LISTENER_SHED_MAX, or when the reserve is lost. Linux reports EMFILE
 * even with an empty backlog (the descriptor is taken before the queue is
 * looked at), so "nothing pending" is the usual end, not a failure. */
static unsigned listener_shed(int lfd, const char *myhostname, bool *drained)
{
	char msg[512]; /* the reply with a hostname of up to 255 bytes */
	size_t len = reply_format(REPLY_RESOURCES, myhostname, NULL, msg, sizeof msg);
	unsigned n = 0;
	while (reserve_fd >= 0 && n < LISTENER_SHED_MAX) {
		close(reserve_fd);
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int e = errno;
		if (fd >= 0) {
			/* Best effort: a fresh socket's send buffer takes it. */
			ssize_t w = write(fd, msg, len);
			(void)w;
			close(fd);
			n++;
		}
		reserve_fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			*drained = e == EAGAIN || e == EWOULDBLOCK;
			break;
		}
	}
	return n;
}

static void listener_error_cb(struct evconnlistener *l, void *arg)
{
	const struct session_env *env = arg;
	int e = EVUTIL_SOCKET_ERROR();
	if (e != EMFILE && e != ENFILE) {
		char why[96];
		snprintf(why, sizeof why, "accept failed: %s", strerror(e));
		listener_pause(why);
		return;
	}
	bool drained = false;
	unsigned n = listener_shed(evconnlistener_get_fd(l), env->cfg->myhostname,
				   &drained);
	for (unsigned i = 0; i < n; i++) {
		unsigned long held;
		metrics_inc(METRIC_LIMIT_FILES);
		if (ratelog_ok(&files_log, mstime_mono(), LISTENER_LOG_INTERVAL_MS, &held))
			log_err("listener: accept failed: %s; %lu connection(s) refused with 421 "
				"since the last such line (sluice_limit_files_total)",
				strerror(e), held + 1);
	}
	if (reserve_fd < 0 || (n == 0 && !drained)) {
		/* No reserve, or the pending connection could not be taken:
		 * wait instead of spinning on it. */
		char why[96];
		snprintf(why, sizeof why, "accept failed: %s, no reserve descriptor",
			 strerror(e));
		listener_pause(why);
	}
}

int listener_start(struct event_base *base, struct session_env *env,
		   const int *fds, size_t n)
{
	const struct config *cfg = env->cfg;

	resume_ev = evtimer_new(base, listener_resume_cb, NULL);
	if (!resume_ev || proxy_listen_init(cfg) != 0)
		return -1;
	if (n > 0 && reserve_fd < 0)
		reserve_fd = fcntl(fds[0], F_DUPFD_CLOEXEC, 0); /* -1: pause instead */
	for (size_t i = 0; i < n && i < CONFIG_LISTEN_MAX; i++) {
		/* Backlog 0: the socket already listens with LISTENER_BACKLOG;
		 * -1 would make libevent listen() again with 128, and a burst
		 * of connections would overflow the accept queue (clients then
		 * wait for SYN-ACK retransmissions, seconds). */
		listeners[i] = evconnlistener_new(base, proxy_listen_expects(cfg, i)
							? listener_accept_proxy_cb
							: listener_accept_cb, env,
						  LEV_OPT_CLOSE_ON_EXEC, 0, fds[i]);
		if (!listeners[i])
			return -1;
		evconnlistener_set_error_cb(listeners[i], listener_error_cb);
		n_listeners++;
	}
	return 0;
}

void listener_stop(void)
{
	/* Close this process's copies: the sockets stay open in the
	 * supervisor and in the next worker of the slot, and a socket
	 * nobody will accept on must leave the SO_REUSEPORT group. */
	for (size_t i = 0; i < n_listeners; i++) {
		evutil_socket_t fd = evconnlistener_get_fd(listeners[i]);
		evconnlistener_free(listeners[i]);
		close(fd);
	}
	n_listeners = 0;
	if (reserve_fd >= 0)
		close(reserve_fd);
	reserve_fd = -1;
	if (resume_ev)
		evtimer_del(resume_ev);
}
