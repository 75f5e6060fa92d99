/*
 * control: the control socket served by the supervisor (see control.h).
 *
 * Exports control_start, control_refresh, control_close_fds, control_stop,
 * control_settle, control_handover, control_adopt.
 *
 * Socket: <state_dir>/control.sock, made with umask 077 (mode 0600) by the
 * supervisor, so it belongs to the user sluice was started as (root on a
 * system install). state_dir itself belongs to the workers' user, so the
 * file mode alone is not the lock: every connection's peer credentials
 * (SO_PEERCRED) must be root or the supervisor's own uid, or it gets
 * "ERR permission denied". A socket left by a sluice that died is removed;
 * one that answers belongs to a running sluice and start-up fails.
 *
 * Connections: at most CONTROL_CLIENTS_MAX at once (more are closed at
 * accept), one request line each (control_proto.h) read within
 * CONTROL_TIMEOUT_S, answered, then closed once the answer is out. Client
 * fds are tracked so that a worker forked meanwhile (reload) closes its
 * copies (control_close_fds): otherwise sluicectl would wait for EOF until
 * that worker exits.
 *
 * reload and upgrade answer late: the connection waits (reading off) until
 * the supervisor calls control_settle, once the new workers accept or
 * failed to start. An upgrade hands the listening socket and the waiting
 * connections to the re-executed program (control_handover, then
 * control_adopt there), which answers them; when the new configuration
 * moved state_dir, the old socket is closed and removed and one is made in
 * the new place.
 *
 * Commands run on the supervisor's loop. status and sessions read one
 * snapshot (snapshot.h); allow, deny and forget write the store
 * synchronously (store_acl_put and friends, store.h), then the entries are read back and
 * published to the workers (acl.h), so when sluicectl returns, every
 * worker applies them to its next connection. With store = redis the
 * entries are read again every CONTROL_REDIS_POLL_S, so entries made on
 * another node arrive within that time.
 *
 * What deny does: a client under a deny entry is shaped from its first
 * byte for shape_time whatever its score, no pass or allow file exempts it,
 * and its mail is still delivered if it waits (sluice never refuses on a
 * heuristic; a client that must never deliver belongs in the mail
 * server's own access table). allow: never shaped, no DNS list look-up,
 * trusted as the cidr_allow_file.
 */
#include "control.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "config.h"
#include "control_proto.h"
#include "json.h"
#include "log.h"
#include "mstime.h"
#include "snapshot.h"
#include "status.h"
#include "store.h"

#define CONTROL_CLIENTS_MAX 8
#define CONTROL_TIMEOUT_S 10
#define CONTROL_BACKLOG 16
#define CONTROL_REDIS_POLL_S 10
#define CONTROL_ERR_MAX 512

struct control_client {
	struct bufferevent *bev;
	int fd;
	uid_t uid;
	bool answered;
	bool waiting;           /* reload/upgrade: answered by control_settle */
	enum control_verb verb; /* what it waits for */
	bool json;
};

static struct evconnlistener *control_listener;
/* Handed over by the program before an upgrade (control_adopt), taken up
 * by control_start. */
static int control_adopted_fd = -1;
static struct control_waiter control_adopted[CONTROL_CLIENTS_MAX];
static size_t control_n_adopted;
static char control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static const struct control_hooks *control_hooks;
static struct control_client *control_clients[CONTROL_CLIENTS_MAX];

static void control_client_free(struct control_client *c)
{
	for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
		if (control_clients[i] == c)
			control_clients[i] = NULL;
	bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE */
	free(c);
}

void control_close_fds(void)
{
	for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
		if (control_clients[i])
			close(control_clients[i]->fd);
	if (control_listener)
		close(evconnlistener_get_fd(control_listener));
}

/* ---- the allow/deny entries --------------------------------------------- */

/* Where the configuration in force keeps the store. */
static struct store_where control_where(void)
{
	const struct config *cfg = control_hooks->config();
	struct store_where w = {
		.redis = cfg->store == CONFIG_STORE_REDIS, .dir = cfg->state_dir,
		.user = cfg->user, .server = &cfg->redis_server, .prefix = cfg->redis_prefix,
		.timeout_ms = cfg->redis_timeout_ms,
		.prefixes = { cfg->ipv4_network_prefix, cfg->ipv6_client_prefix,
			      cfg->ipv6_network_prefix },
	};
	return w;
}

static int control_load(struct acl_entry **out, size_t *n, char *err, size_t cap)
{
	struct store_where w = control_where();
	*out = calloc(ACL_ENTRIES_MAX, sizeof **out); /* zeroed padding: hashed */
	if (!*out) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	if (store_acl_load(&w, *out, ACL_ENTRIES_MAX, n, err, cap) != 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

void control_refresh(void)
{
	struct acl_entry *e;
	size_t n;
	char err[CONTROL_ERR_MAX];
	if (!control_hooks)
		return;
	if (control_load(&e, &n, err, sizeof err) != 0) {
		/* Keep what the workers have: better than dropping every entry
		 * because Redis blinked. */
		log_warn("control: cannot read the allow/deny entries: %s", err);
		return;
	}
	acl_publish(e, n, mstime_real());
	/* One line when the set changed (another node's sluicectl, with
	 * store = redis, shows up here). FNV-1a over the entries. */
	static unsigned long long last = 0;
	unsigned long long h = 1469598103934665603ULL;
	const unsigned char *p = (const unsigned char *)e;
	for (size_t i = 0; i < n * sizeof *e; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	if (h != last)
		log_info("control: %zu allow/deny entries in force", n);
	last = h;
	free(e);
}

static void control_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	if (control_hooks->config()->store == CONFIG_STORE_REDIS)
		control_refresh();
}

static int control_entry_text(struct evbuffer *b, const struct acl_entry *e,
			      long long now, bool json)
{
	char net[80];
	control_net_format(&e->net, net, sizeof net);
	if (json) {
		if (evbuffer_add_printf(b, "{\"kind\":\"%s\",\"net\":", acl_kind_name(e->kind)) < 0 ||
		    json_str(b, net) ||
		    evbuffer_add_printf(b, ",\"expires_ms\":%lld,\"added_ms\":%lld,\"ttl_s\":%lld}",
					e->expires_ms, e->added_ms,
					e->expires_ms ? (e->expires_ms - now + 999) / 1000 : -1) < 0)
			return -1;
		return 0;
	}
	char until[64] = "until removed";
	if (e->expires_ms) {
		time_t t = (time_t)(e->expires_ms / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(until, sizeof until, "until %Y-%m-%dT%H:%M:%SZ", &tm);
	}
	return evbuffer_add_printf(b, "%-5s %-43s %s\n", acl_kind_name(e->kind), net, until) < 0
		       ? -1 : 0;
}

/* ---- commands ------------------------------------------------------------ */

/* Runs req; the body goes to body, a failure's reason to err (-1). 1:
 * c waits for control_settle (reload, upgrade). */
static int control_run(struct control_client *c, const struct control_req *req, uid_t uid,
		       struct evbuffer *body, char *err, size_t cap)
{
	struct store_where w = control_where();
	long long now = mstime_real();
	char net[80] = "";
	if (req->has_net)
		control_net_format(&req->net, net, sizeof net);
	switch (req->verb) {
	case CONTROL_STATUS:
	case CONTROL_SESSIONS: {
		struct snapshot *snap = snapshot_gather();
		if (!snap) {
			snprintf(err, cap, "out of memory");
			return -1;
		}
		int rc = req->verb == CONTROL_STATUS
				 ? status_render(body, snap, req->json)
				 : status_render_sessions(body, snap, req->json, req->shaped);
		snapshot_free(snap);
		if (rc != 0)
			snprintf(err, cap, "out of memory");
		return rc;
	}
	case CONTROL_ALLOW:
	case CONTROL_DENY: {
		struct acl_entry *all, e = {0};
		size_t n;
		if (control_load(&all, &n, err, cap) != 0)
			return -1;
		bool present = false;
		for (size_t i = 0; i < n; i++)
			present |= !memcmp(&all[i].net, &req->net, sizeof req->net);
		free(all);
		if (!present && n >= ACL_ENTRIES_MAX) {
			snprintf(err, cap, "%d entries in force already; forget some first",
				 ACL_ENTRIES_MAX);
			return -1;
		}
		e.net = req->net;
		e.kind = req->verb == CONTROL_ALLOW ? ACL_ALLOW : ACL_DENY;
		e.added_ms = now;
		e.expires_ms = req->ttl_ms ? now + req->ttl_ms : 0;
		if (store_acl_put(&w, &e, err, cap) != 0)
			return -1;
		control_refresh();
		log_info("control: %s %s ttl_ms=%lld uid=%d", acl_kind_name(e.kind), net,
			 req->ttl_ms, (int)uid);
		if (req->json)
			return evbuffer_add(body, "{\"entry\":", 9) ||
					       control_entry_text(body, &e, now, true) ||
					       evbuffer_add(body, "}\n", 2) ? -1 : 0;
		return control_entry_text(body, &e, now, false);
	}
	case CONTROL_FORGET: {
		bool entry = false, rep = false;
		bool host = req->net.prefix == (req->net.family == AF_INET ? 32u : 128u);
		if (store_acl_del(&w, &req->net, &entry, err, cap) != 0)
			return -1;
		if (host && store_forget(&w, &req->net, &rep, err, cap) != 0)
			return -1;
		control_refresh();
		log_info("control: forget %s entry=%d reputation=%d uid=%d", net, entry, rep,
			 (int)uid);
		if (req->json)
			return evbuffer_add_printf(body, "{\"net\":\"%s\",\"entry_removed\":%s,"
							 "\"reputation_removed\":%s}\n", net,
						   entry ? "true" : "false", rep ? "true" : "false") < 0
				       ? -1 : 0;
		return evbuffer_add_printf(body, "%s: %s, %s\n", net,
					   entry ? "entry removed" : "no allow/deny entry",
					   !host ? "reputation is kept per address"
					   : rep ? "reputation and pass removed"
						 : "no reputation or pass stored") < 0 ? -1 : 0;
	}
	case CONTROL_LIST: {
		struct acl_entry *all;
		size_t n;
		if (control_load(&all, &n, err, cap) != 0)
			return -1;
		int rc = evbuffer_add(body, req->json ? "{\"entries\":[" : "", req->json ? 12 : 0);
		for (size_t i = 0; i < n && rc == 0; i++) {
			if (req->json && i)
				rc = evbuffer_add(body, ",", 1);
			if (rc == 0)
				rc = control_entry_text(body, &all[i], now, req->json);
		}
		if (rc == 0 && req->json)
			rc = evbuffer_add(body, "]}\n", 3);
		free(all);
		if (rc != 0)
			snprintf(err, cap, "out of memory");
		return rc;
	}
	case CONTROL_RELOAD:
	case CONTROL_UPGRADE:
		log_info("control: %s uid=%d", control_verb_name(req->verb), (int)uid);
		/* Waiting before the hook runs: an upgrade hands the waiting
		 * connections to the new program, which answers them. */
		c->waiting = true;
		c->verb = req->verb;
		c->json = req->json;
		if ((req->verb == CONTROL_RELOAD ? control_hooks->reload
						  : control_hooks->upgrade)(err, cap) != 0) {
			c->waiting = false;
			return -1;
		}
		if (req->verb == CONTROL_RELOAD)
			control_refresh();
		return 1;
	case CONTROL_DRAIN: {
		struct snapshot *snap = snapshot_gather();
		unsigned open = snap ? snap->sessions : 0;
		snapshot_free(snap);
		log_info("control: drain uid=%d", (int)uid);
		control_hooks->drain();
		return evbuffer_add_printf(body, req->json ? "{\"draining\":%u}\n"
							   : "draining %u sessions; sluice exits when they are done\n",
					   open) < 0 ? -1 : 0;
	}
	case CONTROL_VERB_COUNT:
		break;
	}
	snprintf(err, cap, "unknown command");
	return -1;
}

/* ---- connections --------------------------------------------------------- */

static void control_write_cb(struct bufferevent *bev, void *arg)
{
	struct control_client *c = arg;
	if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		control_client_free(c);
}

static void control_answer(struct control_client *c, bool ok, const char *err,
			   bool json, struct evbuffer *body)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int rc;
	c->answered = true;
	bufferevent_disable(c->bev, EV_READ);
	if (ok) {
		rc = evbuffer_add(out, "OK\n", 3);
		if (rc == 0 && body)
			rc = evbuffer_add_buffer(out, body);
	} else {
		rc = evbuffer_add_printf(out, "ERR %s\n", err) < 0 ? -1 : 0;
		if (rc == 0 && json)
			rc = evbuffer_add(out, "{\"error\":", 9) || json_str(out, err) ||
			     evbuffer_add(out, "}\n", 2) ? -1 : 0;
	}
	/* The write timeout counts from now, not from the loop's cached time:
	 * a command that blocked (an upgrade's check, up to 10 s) would
	 * otherwise find it expired and the answer dropped. */
	event_base_update_cache_time(bufferevent_get_base(c->bev));
	/* Out of memory: a closed connection without a whole answer, which
	 * sluicectl reports as no answer (exit 3), never a truncated one. */
	if (rc != 0 || bufferevent_enable(c->bev, EV_WRITE) != 0)
		control_client_free(c);
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
	struct control_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->answered)
		return;
	size_t eol_len;
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (eol.pos < 0) {
		if (evbuffer_get_length(in) >= CONTROL_LINE_MAX)
			control_answer(c, false, "request line too long", false, NULL);
		return;
	}
	char line[CONTROL_LINE_MAX + 1];
	size_t len = (size_t)eol.pos;
	if (len >= sizeof line)
		len = sizeof line - 1; /* the parser refuses it as too long */
	evbuffer_copyout(in, line, len);
	line[len] = 0;
	struct control_req req;
	char err[CONTROL_ERR_MAX];
	if (control_req_parse(line, len, &req, err, sizeof err) != CONTROL_PARSE_OK) {
		control_answer(c, false, err, strstr(line, "--json") != NULL, NULL);
		return;
	}
	struct evbuffer *body = evbuffer_new();
	if (!body) {
		control_answer(c, false, "out of memory", req.json, NULL);
		return;
	}
	int rc = control_run(c, &req, c->uid, body, err, sizeof err);
	if (rc < 0)
		control_answer(c, false, err, req.json, NULL);
	else if (rc == 0)
		control_answer(c, true, NULL, req.json, body);
	else
		bufferevent_disable(bev, EV_READ);
	evbuffer_free(body);
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct control_client *c = arg;
	if (what & BEV_EVENT_TIMEOUT && !c->answered) {
		control_answer(c, false, "no request within the time allowed", false, NULL);
		return;
	}
	control_client_free(c);
}

static void control_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
			      struct sockaddr *sa, int socklen, void *arg)
{
	int slot = -1;
	for (int i = 0; i < CONTROL_CLIENTS_MAX && slot < 0; i++)
		if (!control_clients[i])
			slot = i;
	struct ucred cred;
	socklen_t clen = sizeof cred;
	if (slot < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("control: connection refused (%s)",
			 slot < 0 ? "too many at once" : "no peer credentials");
		close(fd);
		return;
	}
	struct control_client *c = calloc(1, sizeof *c);
	struct event_base *base = evconnlistener_get_base(l);
	if (!c || !(c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		free(c);
		close(fd);
		return;
	}
	c->fd = fd;
	c->uid = cred.uid;
	control_clients[slot] = c;
	struct timeval tv = {CONTROL_TIMEOUT_S, 0};
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_LINE_MAX);
	bufferevent_setcb(c->bev, control_read_cb, control_write_cb, control_event_cb, c);
	if (cred.uid != 0 && cred.uid != geteuid()) {
		log_warn("control: uid=%d pid=%d refused", (int)cred.uid, (int)cred.pid);
		control_answer(c, false, "permission denied", false, NULL);
		return;
	}
	bufferevent_enable(c->bev, EV_READ);
}

/* ---- reload and upgrade: answered when the new workers accept ---------- */

void control_settle(bool ok, const char *text)
{
	for (int i = 0; i < CONTROL_CLIENTS_MAX; i++) {
		struct control_client *c = control_clients[i];
		if (!c || !c->waiting)
			continue;
		c->waiting = false;
		if (!ok) {
			control_answer(c, false, text, c->json, NULL);
			continue;
		}
		struct evbuffer *body = evbuffer_new();
		int rc = !body ? -1
			: c->verb == CONTROL_RELOAD
				? evbuffer_add_printf(body, c->json ? "{\"reloaded\":true}\n"
								    : "configuration reloaded\n")
			: c->json ? (evbuffer_add(body, "{\"upgraded\":true,\"running\":", 26) ||
				     json_str(body, text) || evbuffer_add(body, "}\n", 2) ? -1 : 0)
				  : evbuffer_add_printf(body, "upgraded: %s\n", text);
		if (rc < 0)
			control_answer(c, false, "out of memory", c->json, NULL);
		else
			control_answer(c, true, NULL, c->json, body);
		if (body)
			evbuffer_free(body);
	}
}

size_t control_handover(int *listen_fd, struct control_waiter *w, size_t cap)
{
	size_t n = 0;
	*listen_fd = control_listener ? evconnlistener_get_fd(control_listener) : -1;
	for (int i = 0; i < CONTROL_CLIENTS_MAX && n < cap; i++) {
		struct control_client *c = control_clients[i];
		if (c && c->waiting && c->verb == CONTROL_UPGRADE)
			w[n++] = (struct control_waiter){ c->fd, c->json };
	}
	return n;
}

void control_adopt(int listen_fd, const struct control_waiter *w, size_t n)
{
	control_adopted_fd = listen_fd;
	control_n_adopted = n < CONTROL_CLIENTS_MAX ? n : CONTROL_CLIENTS_MAX;
	memcpy(control_adopted, w, control_n_adopted * sizeof *w);
}

/* The connections that wait for an upgrade's answer, from the program
 * before. */
static void control_take_waiters(struct event_base *base)
{
	for (size_t i = 0; i < control_n_adopted; i++) {
		const struct control_waiter *w = &control_adopted[i];
		struct control_client *c = calloc(1, sizeof *c);
		if (c)
			c->bev = bufferevent_socket_new(base, w->fd, BEV_OPT_CLOSE_ON_FREE);
		if (!c || !c->bev || evutil_make_socket_nonblocking(w->fd) != 0) {
			log_err("control: cannot take over the waiting sluicectl fd=%d", w->fd);
			if (c && c->bev)
				bufferevent_free(c->bev);
			else
				close(w->fd);
			free(c);
			continue;
		}
		c->fd = w->fd;
		c->waiting = true;
		c->verb = CONTROL_UPGRADE;
		c->json = w->json;
		control_clients[i] = c;
		struct timeval tv = {CONTROL_TIMEOUT_S, 0};
		bufferevent_set_timeouts(c->bev, &tv, &tv);
		bufferevent_setcb(c->bev, control_read_cb, control_write_cb, control_event_cb, c);
	}
	control_n_adopted = 0;
}

/* A socket at path that answers belongs to a running sluice. */
static bool control_in_use(const struct sockaddr_un *un)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* A Unix connect completes at once; EAGAIN is a full backlog. */
	bool used = connect(fd, (const struct sockaddr *)un, sizeof *un) == 0 ||
		    errno == EAGAIN;
	close(fd);
	return used;
}

int control_start(struct event_base *base, const char *state_dir,
		  const struct control_hooks *hooks)
{
	/* The entries apply even if the socket cannot be made. */
	control_hooks = hooks;
	control_refresh();
	struct event *poll = event_new(base, -1, EV_PERSIST, control_poll_cb, NULL);
	struct timeval tv = {CONTROL_REDIS_POLL_S, 0};
	if (!poll || event_add(poll, &tv) != 0)
		log_warn("control: no periodic re-read of the allow/deny entries");
	control_take_waiters(base);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	int n = snprintf(un.sun_path, sizeof un.sun_path, "%s/%s", state_dir,
			 CONTROL_SOCKET_NAME);
	if (n < 0 || (size_t)n >= sizeof un.sun_path) {
		log_err("control: state_dir too long for a socket path; no sluicectl");
		return 0;
	}
	struct sockaddr_un had = {0};
	socklen_t had_len = sizeof had;
	if (control_adopted_fd >= 0 &&
	    (getsockname(control_adopted_fd, (struct sockaddr *)&had, &had_len) != 0 ||
	     strncmp(had.sun_path, un.sun_path, sizeof had.sun_path) != 0)) {
		/* The new configuration moved state_dir: a socket there. */
		log_info("control: state_dir moved; leaving %.*s", (int)sizeof had.sun_path,
			 had.sun_path);
		close(control_adopted_fd);
		unlink(had.sun_path);
		control_adopted_fd = -1;
	}
	if (control_adopted_fd >= 0) {
		/* Upgrade: the socket stays the one sluicectl knows. */
		control_listener = evconnlistener_new(base, control_accept_cb, NULL,
						      LEV_OPT_CLOSE_ON_FREE, 0, control_adopted_fd);
		if (!control_listener) {
			log_err("control: cannot take over %s; no sluicectl", un.sun_path);
			close(control_adopted_fd);
			return 0;
		}
		memcpy(control_path, un.sun_path, sizeof control_path);
		return 0;
	}
	if (control_in_use(&un)) {
		/* Two sluices may share a state_dir (LMDB is safe across
		 * processes, and so is the reputation they share); the socket
		 * stays the first one's. */
		log_warn("control: %s answers: another sluice uses this state_dir; "
			 "this one runs without sluicectl (give it a state_dir of its own "
			 "to control it)", un.sun_path);
		return 0;
	}
	unlink(un.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_err("control: socket: %s; no sluicectl", strerror(errno));
		return 0;
	}
	mode_t old = umask(077);
	int rc = bind(fd, (struct sockaddr *)&un, sizeof un);
	umask(old);
	if (rc != 0 || chmod(un.sun_path, 0600) != 0) {
		log_err("control: cannot bind %s: %s; no sluicectl", un.sun_path, strerror(errno));
		close(fd);
		return 0;
	}
	control_listener = evconnlistener_new(base, control_accept_cb, NULL,
					      LEV_OPT_CLOSE_ON_FREE, CONTROL_BACKLOG, fd);
	if (!control_listener) {
		log_err("control: cannot listen on %s; no sluicectl", un.sun_path);
		close(fd);
		unlink(un.sun_path);
		return 0;
	}
	memcpy(control_path, un.sun_path, sizeof control_path);
	log_info("control: listening on %s", un.sun_path);
	return 0;
}

void control_stop(void)
{
	if (control_path[0])
		unlink(control_path);
}
