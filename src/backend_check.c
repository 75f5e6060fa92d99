/*
 * backend_check: the "--check-backend" dialogue with the mail server (see
 * backend_check.h).
 *
 * Exports backend_check_run. One connection, made the way the pool makes
 * them (same endpoint, plain SMTP), so the server sees sluice's own
 * address and offers exactly what a pool connection would get: greeting,
 * EHLO, then, when XCLIENT with ADDR is offered, one "XCLIENT
 * ADDR=IPV6:2001:db8::1" (a documentation address) to learn whether the
 * server takes IPv6 client addresses, then QUIT. Replies are read with
 * smtp_reply_line, so a reply the pool would refuse is refused here too.
 * Start-up code: it polls with timeouts on a non-blocking socket and
 * prints as it goes; nothing else runs in the process.
 *
 * Rejected: a check at every start-up (the backend may legitimately be
 * down while sluice starts; the pool copes and backend_warn says what is
 * wrong once traffic shows it).
 */
#include "backend_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backend_warn.h"
#include "config.h"
#include "smtp_reply.h"

#define BACKEND_CHECK_IN_MAX 65536 /* bytes of one reply we read at most */
#define BACKEND_CHECK_PROBE_V6 "2001:db8::1"

struct backend_check {
	int fd;
	long wait_ms;
	char in[BACKEND_CHECK_IN_MAX];
	size_t have;
};

static long backend_check_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits for events on the socket until deadline; false on timeout. */
static bool backend_check_wait(struct backend_check *c, short events, long deadline)
{
	for (;;) {
		long left = deadline - backend_check_now_ms();
		if (left <= 0)
			return false;
		struct pollfd p = { .fd = c->fd, .events = events };
		int n = poll(&p, 1, (int)left);
		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return false;
	}
}

/* Reads one whole reply into r; false on timeout, EOF or a broken reply. */
static bool backend_check_reply(struct backend_check *c, struct smtp_reply *r)
{
	long deadline = backend_check_now_ms() + c->wait_ms;

	smtp_reply_init(r);
	for (;;) {
		char *nl = memchr(c->in, '\n', c->have);
		if (nl) {
			size_t len = (size_t)(nl - c->in);
			size_t line_len = len > 0 && c->in[len - 1] == '\r' ? len - 1 : len;
			enum smtp_reply_status st = line_len > SMTP_REPLY_LINE_MAX - 2
				? SMTP_REPLY_INVALID
				: smtp_reply_line(r, c->in, line_len);
			memmove(c->in, nl + 1, c->have - len - 1);
			c->have -= len + 1;
			if (st == SMTP_REPLY_DONE)
				return true;
			if (st == SMTP_REPLY_INVALID)
				return false;
			continue;
		}
		if (c->have == sizeof c->in || !backend_check_wait(c, POLLIN, deadline))
			return false;
		ssize_t n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return false;
		c->have += (size_t)n;
	}
}

static bool backend_check_send(struct backend_check *c, const char *line)
{
	long deadline = backend_check_now_ms() + c->wait_ms;
	size_t len = strlen(line), off = 0;

	while (off < len) {
		ssize_t n = send(c->fd, line + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return false;
		if (!backend_check_wait(c, POLLOUT, deadline))
			return false;
	}
	return true;
}

static bool backend_check_connect(struct backend_check *c, const struct config *cfg)
{
	const struct endpoint *ep = &cfg->backend;
	long ms = cfg->backend_connect_timeout_ms;

	c->fd = socket(ep->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return false;
	if (connect(c->fd, (const struct sockaddr *)&ep->ss, ep->len) != 0 &&
	    errno != EINPROGRESS)
		return false;
	if (!backend_check_wait(c, POLLOUT, backend_check_now_ms() +
				(ms < BACKEND_CHECK_WAIT_MAX_MS ? ms : BACKEND_CHECK_WAIT_MAX_MS)))
		return errno = ETIMEDOUT, false;
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		errno = err ? err : errno;
		return false;
	}
	return true;
}

/* "127.0.0.1" (the address the server sees), or a note for unix sockets. */
static void backend_check_local(const struct backend_check *c, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	snprintf(buf, cap, "a unix socket");
	if (getsockname(c->fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)cap);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf,
			  (socklen_t)cap);
}

/* Whether any client can reach sluice over IPv6: an IPv6 listener, or a
 * balancer that may pass IPv6 clients in a PROXY header. */
static bool backend_check_ipv6_clients(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->listen_count; i++)
		if (cfg->listen[i].ss.ss_family == AF_INET6)
			return true;
	return cfg->proxy_protocol_listen_count > 0;
}

static enum backend_check_result backend_check_dialogue(struct backend_check *c,
							 const struct config *cfg,
							 FILE *out)
{
	static struct smtp_reply r; /* 4 KiB of text: not for the stack */
	char local[INET6_ADDRSTRLEN + 16], line[600];

	backend_check_local(c, local, sizeof local);
	if (!backend_check_reply(c, &r) || r.code != 220) {
		fprintf(out, "backend %s: no SMTP greeting (%d %.200s)\n", cfg->backend.text,
			r.code, r.text);
		return BACKEND_CHECK_UNREACHABLE;
	}
	fprintf(out, "backend %s: %d %.200s\n", cfg->backend.text, r.code, r.text);
	fprintf(out, "sluice connects from %s\n", local);
	snprintf(line, sizeof line, "EHLO %s\r\n", cfg->myhostname);
	if (!backend_check_send(c, line) || !backend_check_reply(c, &r) || r.code != 250) {
		fprintf(out, "EHLO refused or no answer (%d %.200s)\n", r.code, r.text);
		return BACKEND_CHECK_MISCONFIGURED;
	}
	static const char *const needed[] = { "ADDR", "NAME", "HELO", "PROTO" };
	bool all = r.has_xclient;
	fprintf(out, "XCLIENT offered: %s\n", r.has_xclient ? r.xclient_attrs : "no");
	for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
		bool has = r.has_xclient && backend_warn_offers(r.xclient_attrs, needed[i]);
		fprintf(out, "  %-5s %s\n", needed[i], has ? "yes" : "NO");
		all = all && has;
	}
	if (!all) {
		fprintf(out, "problem: %s (sluice connects from %s)\n",
			backend_warn_advice(BACKEND_PROBLEM_XCLIENT_NOT_OFFERED), local);
		if (!cfg->backend_xclient)
			fprintf(out, "note: backend_xclient = no: sluice does not use XCLIENT "
				     "with this configuration\n");
		return BACKEND_CHECK_MISCONFIGURED;
	}
	enum backend_check_result res = BACKEND_CHECK_OK;
	if (!backend_check_send(c, "XCLIENT ADDR=IPV6:" BACKEND_CHECK_PROBE_V6 "\r\n") ||
	    !backend_check_reply(c, &r)) {
		fprintf(out, "XCLIENT with an IPv6 address: no answer\n");
		return BACKEND_CHECK_MISCONFIGURED;
	}
	enum backend_problem p = backend_warn_classify_xclient(r.code, r.text, true);
	if (r.code == 220) {
		fprintf(out, "XCLIENT with an IPv6 address: accepted\n");
	} else {
		fprintf(out, "XCLIENT with an IPv6 address: %d %s %.200s\n", r.code,
			r.enhanced, r.text);
		if (p != BACKEND_PROBLEM_NONE)
			fprintf(out, "problem: %s\n", backend_warn_advice(p));
		/* Only a problem when IPv6 clients can come at all. */
		if (p != BACKEND_PROBLEM_XCLIENT_IPV6 || backend_check_ipv6_clients(cfg))
			res = BACKEND_CHECK_MISCONFIGURED;
		else
			fprintf(out, "(no listener takes IPv6 clients: not needed now)\n");
	}
	(void)backend_check_send(c, "QUIT\r\n");
	return res;
}

enum backend_check_result backend_check_run(const struct config *cfg, FILE *out)
{
	static struct backend_check c;
	long ms = cfg->backend_timeout_ms;

	c.fd = -1;
	c.have = 0;
	c.wait_ms = ms < BACKEND_CHECK_WAIT_MAX_MS ? ms : BACKEND_CHECK_WAIT_MAX_MS;
	enum backend_check_result res;
	if (!backend_check_connect(&c, cfg)) {
		fprintf(out, "backend %s: cannot connect: %s\n", cfg->backend.text,
			strerror(errno));
		res = BACKEND_CHECK_UNREACHABLE;
	} else {
		res = backend_check_dialogue(&c, cfg, out);
	}
	if (c.fd >= 0)
		close(c.fd);
	fprintf(out, "backend check: %s\n", res == BACKEND_CHECK_OK ? "ok"
				       : res == BACKEND_CHECK_MISCONFIGURED ? "MISCONFIGURED"
									    : "UNREACHABLE");
	return res;
}
