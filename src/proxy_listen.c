/*
 * proxy_listen: reads the PROXY protocol header of a new connection
 * before any session exists (see proxy_listen.h).
 *
 * Exports proxy_listen_init, proxy_listen_expects and proxy_listen_accept.
 * Each pending connection is a struct proxy_pending that owns its fd and
 * its read event until the header is complete; it is freed in its own
 * read callback (it has no other callbacks and nobody else holds it), and
 * on success the fd passes to session_accept.
 *
 * Reading: the bytes are peeked (MSG_PEEK), fed to the parser, and only
 * the bytes the parser took are then removed from the socket, so whatever
 * the client sent after the header (its EHLO, or a PREGREET) stays in the
 * kernel for the session to read and judge. While the header is
 * incomplete every peeked byte is header, so each read removes something
 * and a level-triggered read event never spins. The whole header must
 * arrive within proxy_timeout of the accept, however it is dribbled.
 *
 * The trusted networks are the process's one cidr_list, written once by
 * proxy_listen_init before the loop runs.
 *
 * Rejected: a bufferevent for the header (it reads ahead into its own
 * buffer, and the client's bytes after the header would have to be handed
 * over to the session's); answering anything on a bad header (the peer
 * is our balancer or an impostor, neither needs SMTP text).
 */
#include "proxy_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "proxy_proto.h"
#include "session.h"
#include "signals.h"

/* One peek reads at most a whole v2 header; a v1 line is shorter. */
#define PROXY_LISTEN_PEEK_MAX (PROXY_V2_HDR_LEN + PROXY_V2_BODY_MAX)

struct proxy_pending {
	int fd;
	struct event *ev;
	struct timeval deadline; /* on the loop's cached clock */
	struct sockaddr_storage peer;
	char peer_text[INET6_ADDRSTRLEN];
	size_t fed; /* header bytes fed and removed so far */
	struct proxy_proto pp;
	struct session_env *env; /* where the session goes */
};

static struct cidr_list *proxy_trusted;
static unsigned proxy_pending_count; /* headers being read now */

int proxy_listen_init(const struct config *cfg)
{
	char why[256];

	if (cfg->proxy_protocol_listen_count == 0)
		return 0;
	cidr_free(proxy_trusted);
	proxy_trusted = config_proxy_trusted(cfg, why, sizeof why);
	if (!proxy_trusted) {
		log_err("proxy_trusted_networks: %s", why);
		return -1;
	}
	return 0;
}

bool proxy_listen_expects(const struct config *cfg, size_t i)
{
	if (i >= cfg->listen_count)
		return false;
	const struct endpoint *l = &cfg->listen[i];
	for (size_t k = 0; k < cfg->proxy_protocol_listen_count; k++) {
		const struct endpoint *p = &cfg->proxy_protocol_listen[k];
		if (p->len == l->len && memcmp(&p->ss, &l->ss, l->len) == 0)
			return true;
	}
	return false;
}

static void proxy_addr_text(const struct sockaddr *sa, char *buf, size_t cap,
			    unsigned *port)
{
	*port = 0;
	snprintf(buf, cap, "?");
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)cap);
		*port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)cap);
		*port = ntohs(in6->sin6_port);
	}
}

static void proxy_pending_free(struct proxy_pending *p, bool close_fd)
{
	proxy_pending_count--;
	if (p->ev)
		event_free(p->ev);
	if (close_fd)
		close(p->fd);
	free(p);
}

/* Ends a pending connection without a session: nothing is written. */
static void proxy_refuse(struct proxy_pending *p, enum metric_id m,
			 const char *why, const uint8_t *bytes, size_t len)
{
	char esc[100];

	metrics_inc(m);
	log_escape(esc, sizeof esc, bytes, len);
	log_warn("proxy: peer=%s header refused: %s fed=%zu bytes=\"%s\"",
		 p->peer_text, why, p->fed, esc);
	proxy_pending_free(p, true);
}

static void proxy_done(struct proxy_pending *p)
{
	char client[INET6_ADDRSTRLEN];
	unsigned port;

	if (p->pp.cmd == PROXY_CMD_LOCAL) {
		metrics_inc(METRIC_PROXY_LOCAL);
		log_debug("proxy: peer=%s LOCAL (health check): closed", p->peer_text);
		proxy_pending_free(p, true);
		return;
	}
	if (p->pp.cmd != PROXY_CMD_PROXY) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_UNSUPPORTED,
			     p->pp.version == 1 ? "v1 UNKNOWN: no client address"
						: "v2 family or transport other than TCP over IPv4/IPv6",
			     NULL, 0);
		return;
	}
	proxy_addr_text((const struct sockaddr *)&p->pp.src, client, sizeof client, &port);
	metrics_inc(METRIC_PROXY_HEADERS);
	log_info("proxy: peer=%s client=%s port=%u version=%d", p->peer_text, client,
		 port, p->pp.version);
	int fd = p->fd;
	struct sockaddr_storage src = p->pp.src;
	socklen_t src_len = p->pp.addr_len;
	struct session_env *env = p->env;
	proxy_pending_free(p, false);
	session_accept(env, fd, (const struct sockaddr *)&src, src_len);
}

static void proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_pending *p = arg;
	uint8_t buf[PROXY_LISTEN_PEEK_MAX];

	if (what & EV_TIMEOUT) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_TIMEOUT, "timeout (proxy_timeout)",
			     NULL, 0);
		return;
	}
	ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		goto rearm;
	if (n <= 0) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_INVALID,
			     n == 0 ? "closed before the header ended" : strerror(errno),
			     NULL, 0);
		return;
	}
	size_t used = 0;
	enum proxy_proto_rc rc = proxy_proto_feed(&p->pp, buf, (size_t)n, &used);
	if (rc == PROXY_PROTO_INVALID || rc == PROXY_PROTO_TOO_LONG) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_INVALID,
			     rc == PROXY_PROTO_INVALID ? "malformed" : "too long", buf,
			     (size_t)n < 48 ? (size_t)n : 48);
		return;
	}
	/* Take the header's bytes off the socket: they are in the kernel
	 * (just peeked), so this cannot come up short. */
	if (recv(fd, buf, used, 0) != (ssize_t)used) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_INVALID, "read failed", NULL, 0);
		return;
	}
	p->fed += used;
	if (rc == PROXY_PROTO_DONE) {
		proxy_done(p);
		return;
	}
rearm:;
	struct timeval now, left;
	event_base_gettimeofday_cached(event_get_base(p->ev), &now);
	if (!timercmp(&now, &p->deadline, <)) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_TIMEOUT, "timeout (proxy_timeout)",
			     NULL, 0);
		return;
	}
	timersub(&p->deadline, &now, &left);
	if (event_add(p->ev, &left) != 0)
		proxy_refuse(p, METRIC_PROXY_REFUSED_INVALID, "cannot wait", NULL, 0);
}

void proxy_listen_accept(struct session_env *env, int fd,
			 const struct sockaddr *addr, socklen_t len)
{
	const struct config *cfg = env->cfg;
	struct proxy_pending *p = calloc(1, sizeof *p);
	unsigned port;

	if (!p) {
		log_err("proxy: out of memory; dropping a connection");
		close(fd);
		return;
	}
	p->fd = fd;
	p->env = env;
	proxy_pending_count++;
	if (len <= sizeof p->peer)
		memcpy(&p->peer, addr, len);
	proxy_addr_text(addr, p->peer_text, sizeof p->peer_text, &port);
	proxy_proto_init(&p->pp);
	if (!proxy_trusted || !cidr_match(proxy_trusted, addr)) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_UNTRUSTED,
			     "peer not in proxy_trusted_networks", NULL, 0);
		return;
	}
	/* Headers in flight count against session_limit like the sessions
	 * they will become: a flood of silent connections stays bounded. */
	if (proxy_pending_count + session_count() > cfg->session_limit) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_LIMIT, "session_limit", NULL, 0);
		return;
	}
	struct timeval now, tv = mstime_tv(cfg->proxy_timeout_ms);
	event_base_gettimeofday_cached(env->base, &now);
	timeradd(&now, &tv, &p->deadline);
	p->ev = event_new(env->base, fd, EV_READ, proxy_read_cb, p);
	if (!p->ev || event_add(p->ev, &tv) != 0) {
		proxy_refuse(p, METRIC_PROXY_REFUSED_INVALID, "out of memory", NULL, 0);
		return;
	}
}
