/*
 * listener: listening sockets and the accept loop (see listener.h).
 * Accept failures for lack of descriptors pause accepting for a second
 * instead of spinning on a level-triggered listener.
 */
#include "listener.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mstime.h"
#include "proxy_listen.h"
#include "session.h"
#include "throttle.h"

#define LISTENER_BACKLOG 4096
#define LISTENER_PAUSE_MS 1000

static struct evconnlistener *listeners[CONFIG_LISTEN_MAX];
static size_t n_listeners;
static struct event *resume_ev;

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

static void listener_error_cb(struct evconnlistener *l, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	log_err("listener: accept failed: %s; pausing %d ms", strerror(e),
		LISTENER_PAUSE_MS);
	for (size_t i = 0; i < n_listeners; i++)
		evconnlistener_disable(listeners[i]);
	struct timeval tv = mstime_tv(LISTENER_PAUSE_MS);
	evtimer_add(resume_ev, &tv);
}

int listener_start(struct event_base *base, struct session_env *env,
		   const int *fds, size_t n)
{
	const struct config *cfg = env->cfg;

	resume_ev = evtimer_new(base, listener_resume_cb, NULL);
	if (!resume_ev || proxy_listen_init(cfg) != 0)
		return -1;
	for (size_t i = 0; i < n && i < CONFIG_LISTEN_MAX; i++) {
		listeners[i] = evconnlistener_new(base, proxy_listen_expects(cfg, i)
							? listener_accept_proxy_cb
							: listener_accept_cb, env,
						  LEV_OPT_CLOSE_ON_EXEC, -1, fds[i]);
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
	if (resume_ev)
		evtimer_del(resume_ev);
}
