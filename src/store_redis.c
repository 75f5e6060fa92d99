/*
 * store_redis: reputation and the pass cache in Redis (store = redis), so
 * that several sluice machines in front of one domain share them
 * (DESIGN.md "Scaling out"). One implementation of struct store_ops
 * (store.h), reached only through it; it never calls store.c.
 *
 * Exports store_redis_open, store_redis_ops, store_redis_admin, and for tests
 * store_redis_keys and the reply parsers.
 *
 * Connection. One per worker, through hiredis' async API on the worker's
 * libevent loop (adapters/libevent.h); nothing here ever blocks: the
 * connect is non-blocking and redis_server is numeric (config.c accepts no
 * host names, so hiredis' getaddrinfo never asks DNS). States: down (no
 * context, a back-off timer reconnects: STORE_REDIS_BACKOFF_MIN_MS doubling
 * to STORE_REDIS_BACKOFF_MAX_MS, reset by the first reply), connecting (a
 * context, the same timer bounds the connect: hiredis 0.14 has no connect
 * timeout) and up. A connection that owes replies and has answered nothing
 * for stall_ms (SIGSTOPped Redis, a peer gone without a FIN) is dropped and
 * made again: its owed callbacks run with no reply, which ends their
 * look-ups and writes.
 *
 * Layout (text keys, so an operator can read them with redis-cli):
 *   <prefix>rep:{<net>/<bits>}         hash g (good), b (bad), c (content),
 *                                      t (ms, CLOCK_REALTIME): the network
 *   <prefix>rep:{<net>/<bits>}<client> the same for the client (an IPv4
 *                                      address, an IPv6 "<addr>/64")
 *   <prefix>pass:<client>              string: expiry in ms, PX at expiry
 * The network in braces is a hash tag: a client's record and its
 * network's share a Redis Cluster slot, since one script writes both.
 * Reputation is stored as LMDB stores it (counters plus the time they were
 * last decayed to), not decay-normalised, so that reputation_weigh
 * (reputation.c) reads both stores with one arithmetic: reputation_decay on
 * read, and a write is reputation_apply on both records in one Lua script
 * (Redis runs a script atomically, as LMDB runs one write transaction: so
 * parallel sessions of one address count it once in its network), with
 * the writer's clock as LMDB uses the writer's clock. Lua's 2^x and C's exp2 agree to the last
 * bit or two; the numbers are written with %.17g so nothing else is lost.
 * Rejected: HINCRBYFLOAT of weights scaled by 2^(t/halflife) (atomic
 * without a script, but the scale overflows a double after about 1000
 * half-lives: a year at the shortest useful half-life); WATCH/MULTI (a
 * round trip per write, and retries). Keys expire: reputation
 * STORE_REDIS_REP_TTL_HALFLIVES half-lives after its last write (weight
 * down to 1/256), a pass when it ends, so Redis never needs a prune. A key
 * of another type is replaced by the next write, as LMDB overwrites a
 * damaged record.
 *
 * Only reputation and passes are ever written here, never delivery state
 * (HOSTILE L.110): a Redis that loses writes only changes shaping.
 *
 * Reads. A look-up is three commands pipelined (HMGET host, HMGET net, GET
 * pass; not one script, so they work on a Redis Cluster proxy too), one
 * struct store_redis_lookup, one deadline (redis_timeout, one libevent common
 * timeout). Its callback runs once: with the answer when the third reply
 * comes, or with the default (no reputation, no pass) at the deadline or
 * when the connection is lost (HOSTILE M.111). A look-up whose callback has
 * run, or that was cancelled, stays allocated until hiredis has handed back
 * all of its replies (hiredis calls every reply callback exactly once,
 * with NULL when the context goes), then frees itself: a late answer finds
 * no session, only the detached look-up. While down, or past
 * STORE_REDIS_PENDING_MAX owed replies, a look-up fails at once (NULL,
 * counted), so sessions never wait for a Redis that is known to be gone.
 *
 * Writes are fire and forget (one EVAL each, callback only for counting).
 * While down they are dropped and counted; nothing is queued for later
 * (the evidence is a heuristic, and a queue would be one more thing to
 * bound).
 *
 * Replies are untrusted bytes: every reply's type and element count is
 * checked, numbers are at most STORE_REDIS_FIELD_MAX bytes of
 * [0-9.eE+-] and must be finite; anything else reads as no record and is
 * counted. hiredis itself bounds nothing (a hostile Redis could make it
 * buffer a huge reply): redis_server must be a Redis of one's own.
 *
 * Threads: loop thread only. Logs: one line per kind of trouble per
 * STORE_REDIS_LOG_INTERVAL_MS, with the count suppressed meanwhile.
 */
#include "store_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <math.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/un.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "ratelog.h"

#define STORE_REDIS_PENDING_MAX    4096  /* replies owed before refusing */
#define STORE_REDIS_BACKOFF_MIN_MS 100
#define STORE_REDIS_BACKOFF_MAX_MS 2000
#define STORE_REDIS_STALL_MIN_MS   1000  /* no reply for this long: drop */
#define STORE_REDIS_STALL_TIMEOUTS 5     /* ... or this many redis_timeouts */
#define STORE_REDIS_LOG_INTERVAL_MS 60000
#define STORE_REDIS_FIELD_MAX      64    /* bytes of one number in a reply */
#define STORE_REDIS_REP_TTL_HALFLIVES 8
#define STORE_REDIS_READS          3     /* commands per look-up */

/* reputation_apply (reputation.c) in Lua. KEYS[1] the client's record,
 * KEYS[2] its network's; ARGV good, bad, content (the event's increments),
 * now_ms, halflife_ms, ttl_ms, the distinct floor. A record that is not
 * one we wrote reads as none and is replaced. */
static const char store_redis_rep_script[] =
	"local t, h, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]) "
	"local fl = tonumber(ARGV[7]) "
	"local function load(k) "
	"if redis.call('TYPE', k).ok ~= 'hash' then redis.call('DEL', k) end "
	"local v = redis.call('HMGET', k, 'g', 'b', 'c', 't') "
	"local r = {tonumber(v[1]), tonumber(v[2]), tonumber(v[3])} "
	"local ot = tonumber(v[4]) "
	"for i = 1, 3 do if not r[i] or r[i] < 0 or r[i] >= math.huge then "
	"return {0, 0, 0}, t end end "
	"if not ot then return {0, 0, 0}, t end "
	"local age = t - ot "
	"if h > 0 and age > 0 then local f = 2 ^ (-age / h) "
	"for i = 1, 3 do r[i] = r[i] * f end end "
	"if ot > t then return r, ot end "
	"return r, t end "
	"local function save(k, r, at) "
	"redis.call('HSET', k, 'g', string.format('%.17g', r[1]), "
	"'b', string.format('%.17g', r[2]), 'c', string.format('%.17g', r[3]), "
	"'t', string.format('%.0f', at)) "
	"if ttl > 0 then redis.call('PEXPIRE', k, ttl) end end "
	"local hr, ht = load(KEYS[1]) "
	"local nr, nt = load(KEYS[2]) "
	"for i = 1, 3 do local d = tonumber(ARGV[i]) "
	"if d > 0 then if hr[i] < fl then nr[i] = nr[i] + 1 end "
	"hr[i] = hr[i] + d end end "
	"save(KEYS[1], hr, ht) save(KEYS[2], nr, nt) "
	"return 1";

/* KEYS[1] pass key. */
static const char store_redis_revoke_script[] =
	"redis.call('DEL', KEYS[1]) return 1";

/* KEYS[1] pass key; ARGV expires_ms, ttl_ms. The later expiry wins. */
static const char store_redis_pass_script[] =
	"if redis.call('TYPE', KEYS[1]).ok ~= 'string' then "
	"redis.call('DEL', KEYS[1]) end "
	"local old = tonumber(redis.call('GET', KEYS[1])) "
	"if old and old >= tonumber(ARGV[1]) then return 0 end "
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
	"return 1";

struct store_redis_lookup {
	TAILQ_ENTRY(store_redis_lookup) link; /* in live while cb is set */
	struct store_redis *sr;
	store_records_cb *cb; /* NULL: answered, timed out or cancelled */
	void *arg;
	struct event *timer;
	unsigned queued, answered; /* commands sent, replies handed back */
	bool lost;                 /* a reply never came */
	int have[2];               /* host, net: store_redis_parse_rep */
	struct reputation_evidence rec[2];
	int have_pass;
	long long pass_expires;
};

TAILQ_HEAD(store_redis_lookup_list, store_redis_lookup);

struct store_redis {
	struct event_base *base;
	struct endpoint server;
	char prefix[STORE_REDIS_PREFIX_MAX + 1];
	long timeout_ms, halflife_ms, stall_ms;
	const struct timeval *timeout_tv; /* common timeout: redis_timeout */

	redisAsyncContext *ac;  /* NULL: down */
	bool connected;         /* ac has connected */
	bool ever_connected;
	bool down_logged;       /* a "down" line went out since the last up */
	struct event *timer;    /* down: reconnect; connecting: deadline */
	long backoff_ms;
	unsigned pending;       /* replies hiredis still owes */
	long long waiting_since_ms; /* monotonic: last reply, or first owed */
	struct store_redis_lookup_list live;
	struct ratelog log_down, log_timeout, log_write, log_bad,
		log_backlog;
};

static bool store_redis_ratelog_ok(struct ratelog *rl,
				   unsigned long *suppressed)
{
	return ratelog_ok(rl, mstime_mono(), STORE_REDIS_LOG_INTERVAL_MS,
			  suppressed);
}

/* ---- keys and replies (pure) ------------------------------------------ */

bool store_redis_keys(const char *prefix, const struct reputation_keys *a,
		      struct store_redis_keys *k)
{
	char host[INET6_ADDRSTRLEN + 16], net[INET6_ADDRSTRLEN + 16];
	char text[INET6_ADDRSTRLEN];

	if (!a || !prefix || strlen(prefix) > STORE_REDIS_PREFIX_MAX ||
	    (a->host.family != AF_INET && a->host.family != AF_INET6) ||
	    a->net.family != a->host.family)
		return false;
	unsigned max = (unsigned)ipaddr_len(&a->host) * 8;
	if (a->host_bits > max || a->net_bits > a->host_bits)
		return false;
	inet_ntop(a->host.family, a->host.b, text, sizeof text);
	if (a->host_bits >= max)
		snprintf(host, sizeof host, "%s", text);
	else
		snprintf(host, sizeof host, "%s/%u", text, a->host_bits);
	inet_ntop(a->net.family, a->net.b, text, sizeof text);
	snprintf(net, sizeof net, "%s/%u", text, a->net_bits);
	/* Fits: the prefix is bounded and an address is at most 45 bytes. */
	snprintf(k->net, sizeof k->net, "%srep:{%s}", prefix, net);
	snprintf(k->host, sizeof k->host, "%srep:{%s}%s", prefix, net, host);
	snprintf(k->pass, sizeof k->pass, "%spass:%s", prefix, host);
	return true;
}

/* A bulk string of at most STORE_REDIS_FIELD_MAX bytes of [0-9.eE+-],
 * NUL-terminated into buf; false for anything else. */
static bool store_redis_field(const redisReply *r,
			      char buf[STORE_REDIS_FIELD_MAX + 1])
{
	if (!r || r->type != REDIS_REPLY_STRING || !r->str || r->len == 0 ||
	    r->len > STORE_REDIS_FIELD_MAX)
		return false;
	memcpy(buf, r->str, r->len);
	buf[r->len] = '\0';
	return strspn(buf, "0123456789.eE+-") == r->len;
}

static bool store_redis_double(const redisReply *r, double *out)
{
	char buf[STORE_REDIS_FIELD_MAX + 1], *end;

	if (!store_redis_field(r, buf))
		return false;
	errno = 0;
	double v = strtod(buf, &end);
	if (*end || errno == ERANGE || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

static bool store_redis_int(const redisReply *r, long long *out)
{
	char buf[STORE_REDIS_FIELD_MAX + 1], *end;

	if (!store_redis_field(r, buf))
		return false;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (*end || errno == ERANGE)
		return false;
	*out = v;
	return true;
}

int store_redis_parse_rep(const redisReply *r, struct reputation_evidence *ev)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4 || !r->element)
		return -1;
	size_t nil = 0;
	for (size_t i = 0; i < 4; i++) {
		if (!r->element[i])
			return -1;
		nil += r->element[i]->type == REDIS_REPLY_NIL;
	}
	if (nil == 4)
		return 0;
	struct reputation_evidence e;
	if (!store_redis_double(r->element[0], &e.good) ||
	    !store_redis_double(r->element[1], &e.bad) ||
	    !store_redis_double(r->element[2], &e.content) ||
	    !store_redis_int(r->element[3], &e.updated_ms))
		return -1;
	*ev = e;
	return 1;
}

int store_redis_parse_pass(const redisReply *r, long long *expires_ms)
{
	if (r && r->type == REDIS_REPLY_NIL)
		return 0;
	return store_redis_int(r, expires_ms) ? 1 : -1;
}

/* ---- the connection --------------------------------------------------- */

static void store_redis_connect(struct store_redis *sr);

static void store_redis_set_up(struct store_redis *sr, bool up)
{
	if (sr->connected != up)
		metrics_add(METRIC_STORE_REDIS_CONNECTED, up ? 1 : -1);
	sr->connected = up;
}

/* The next connect after the back-off, which then doubles. */
static void store_redis_backoff(struct store_redis *sr)
{
	struct timeval tv = mstime_tv(sr->backoff_ms);
	evtimer_add(sr->timer, &tv);
	sr->backoff_ms *= 2;
	if (sr->backoff_ms > STORE_REDIS_BACKOFF_MAX_MS)
		sr->backoff_ms = STORE_REDIS_BACKOFF_MAX_MS;
}

/* The connection is gone or never came (sr->ac already NULL): log at a
 * limited rate and reconnect after the back-off. */
static void store_redis_down(struct store_redis *sr, const char *why)
{
	unsigned long sup;

	store_redis_set_up(sr, false);
	metrics_inc(METRIC_STORE_REDIS_CONNECT_FAILURES);
	if (store_redis_ratelog_ok(&sr->log_down, &sup)) {
		log_warn("store: redis %s unreachable: %s; sessions continue "
			 "without shared reputation (retry in %ld ms, "
			 "suppressed=%lu)", sr->server.text, why, sr->backoff_ms,
			 sup);
		sr->down_logged = true;
	}
	store_redis_backoff(sr);
}

/* Ends the context from our side (stall, connect deadline, close). Its
 * owed callbacks run inside redisAsyncFree with no reply; the disconnect
 * callback sees sr->ac != ac and leaves the rest to the caller. Never
 * called from inside a hiredis callback. */
static void store_redis_drop(struct store_redis *sr)
{
	redisAsyncContext *ac = sr->ac;

	sr->ac = NULL;
	store_redis_set_up(sr, false);
	if (ac)
		redisAsyncFree(ac);
}

static bool store_redis_send(struct store_redis *sr, redisCallbackFn *fn,
			     void *privdata, int argc, const char **argv,
			     const size_t *lens);
static void store_redis_replied(struct store_redis *sr, const redisReply *r);

static void store_redis_ping_cb(redisAsyncContext *ac, void *reply,
				void *privdata)
{
	store_redis_replied(privdata, reply);
}

static void store_redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *sr = ac->data;

	if (sr->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac when this returns. */
		char why[128];
		snprintf(why, sizeof why, "%s", ac->errstr[0] ? ac->errstr
							       : "connect failed");
		sr->ac = NULL;
		evtimer_del(sr->timer);
		store_redis_down(sr, why);
		return;
	}
	evtimer_del(sr->timer);
	store_redis_set_up(sr, true);
	sr->waiting_since_ms = mstime_mono();
	/* A stopped Redis still completes connects (the kernel does): the
	 * "answering again" line waits for a reply (store_redis_replied). */
	if (!sr->ever_connected)
		log_info("store: redis %s connected prefix=\"%s\" "
			 "timeout_ms=%ld", sr->server.text, sr->prefix,
			 sr->timeout_ms);
	sr->ever_connected = true;
	/* A probe, so that recovery shows (and resets the back-off) even
	 * before the next session asks anything. */
	const char *argv[] = { "PING" };
	const size_t lens[] = { 4 };
	store_redis_send(sr, store_redis_ping_cb, sr, 1, argv, lens);
}

static void store_redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *sr = ac->data;

	if (sr->ac != ac)
		return; /* dropped by store_redis_drop: handled there */
	char why[128];
	snprintf(why, sizeof why, "%s",
		 status == REDIS_OK ? "connection closed"
		 : ac->errstr[0]    ? ac->errstr : "connection lost");
	sr->ac = NULL;
	store_redis_down(sr, why);
}

/* Down: reconnect. Connecting: the connect took too long. */
static void store_redis_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *sr = arg;

	if (!sr->ac) {
		store_redis_connect(sr);
	} else if (!sr->connected) {
		store_redis_drop(sr);
		store_redis_down(sr, "connect timed out");
	}
}

static void store_redis_connect(struct store_redis *sr)
{
	const struct sockaddr *sa = (const struct sockaddr *)&sr->server.ss;
	redisAsyncContext *ac;
	char why[128];

	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const void *)sa;
		ac = redisAsyncConnectUnix(un->sun_path);
	} else {
		char ip[INET6_ADDRSTRLEN] = "";
		int port;
		if (sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const void *)sa;
			inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
			port = ntohs(in6->sin6_port);
		} else {
			const struct sockaddr_in *in = (const void *)sa;
			inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
			port = ntohs(in->sin_port);
		}
		ac = redisAsyncConnect(ip, port);
	}
	if (!ac) {
		store_redis_down(sr, "out of memory");
		return;
	}
	if (ac->err) {
		snprintf(why, sizeof why, "%s", ac->errstr);
		redisAsyncFree(ac);
		store_redis_down(sr, why);
		return;
	}
	ac->data = sr;
	if (redisLibeventAttach(ac, sr->base) != REDIS_OK ||
	    redisAsyncSetConnectCallback(ac, store_redis_connect_cb) != REDIS_OK ||
	    redisAsyncSetDisconnectCallback(ac, store_redis_disconnect_cb) !=
		    REDIS_OK) {
		redisAsyncFree(ac);
		store_redis_down(sr, "cannot attach to the event loop");
		return;
	}
	sr->ac = ac;
	struct timeval tv = mstime_tv(sr->stall_ms);
	evtimer_add(sr->timer, &tv);
}

/* Owed replies and nothing heard for stall_ms: drop and reconnect. */
static void store_redis_check_stall(struct store_redis *sr)
{
	unsigned long sup;

	if (!sr->ac || !sr->connected || sr->pending == 0)
		return;
	long long idle = mstime_mono() - sr->waiting_since_ms;
	if (idle < sr->stall_ms)
		return;
	if (store_redis_ratelog_ok(&sr->log_down, &sup)) {
		log_warn("store: redis %s not answering for %lld ms with %u "
			 "replies owed: reconnecting; sessions continue without "
			 "shared reputation (suppressed=%lu)", sr->server.text,
			 idle, sr->pending, sup);
		sr->down_logged = true;
	}
	store_redis_drop(sr);
	/* Reconnect after the back-off, as after any other failure. */
	metrics_inc(METRIC_STORE_REDIS_CONNECT_FAILURES);
	store_redis_backoff(sr);
}

/* Every reply callback starts here: one fewer owed, and a reply (not a
 * NULL from a dying context) is a sign of life. */
static void store_redis_replied(struct store_redis *sr, const redisReply *r)
{
	long long now = mstime_mono();

	if (sr->pending > 0)
		sr->pending--;
	if (!r)
		return;
	sr->waiting_since_ms = now;
	sr->backoff_ms = STORE_REDIS_BACKOFF_MIN_MS;
	if (sr->down_logged) {
		log_info("store: redis %s answering again", sr->server.text);
		sr->down_logged = false;
	}
}

/* Queues one command; the caller counts it in pending. */
static bool store_redis_send(struct store_redis *sr, redisCallbackFn *fn,
			     void *privdata, int argc, const char **argv,
			     const size_t *lens)
{
	if (!sr->ac)
		return false;
	if (redisAsyncCommandArgv(sr->ac, fn, privdata, argc, argv, lens) !=
	    REDIS_OK)
		return false;
	if (sr->pending++ == 0)
		sr->waiting_since_ms = mstime_mono();
	return true;
}

static void store_redis_bad_reply(struct store_redis *sr, const char *what,
				  const redisReply *r)
{
	unsigned long sup;
	char text[80] = "";

	metrics_inc(METRIC_STORE_REDIS_BAD_REPLIES);
	if (!store_redis_ratelog_ok(&sr->log_bad, &sup))
		return;
	if (r && (r->type == REDIS_REPLY_ERROR ||
		  r->type == REDIS_REPLY_STRING) && r->str)
		log_escape(text, sizeof text, r->str, r->len);
	log_warn("store: redis %s unexpected reply to %s type=%d text=\"%s\": "
		 "read as no record (suppressed=%lu)", sr->server.text, what,
		 r ? r->type : -1, text, sup);
}

/* ---- look-ups ----------------------------------------------------------- */

/* Ends the session's interest: no callback any more, no deadline. */
static void store_redis_detach(struct store_redis_lookup *l)
{
	if (!l->cb)
		return;
	l->cb = NULL;
	TAILQ_REMOVE(&l->sr->live, l, link);
	if (l->timer) {
		event_free(l->timer);
		l->timer = NULL;
	}
}

/* Detaches, then runs the callback with the answer (ok) or the default.
 * The callback may do anything but free the store; l may be freed by the
 * caller afterwards, never by the callback. */
static void store_redis_answer(struct store_redis_lookup *l, bool ok)
{
	store_records_cb *cb = l->cb;
	void *arg = l->arg;
	struct store_records r = { 0 };

	if (!cb)
		return;
	if (ok) {
		r.have_host = l->have[0] > 0;
		r.host = l->rec[0];
		r.have_net = l->have[1] > 0;
		r.net = l->rec[1];
		r.have_pass = l->have_pass > 0;
		r.pass_expires_ms = l->pass_expires;
	}
	store_redis_detach(l);
	cb(arg, ok ? &r : NULL);
}

static void store_redis_read_cb(redisAsyncContext *ac, void *reply,
				void *privdata)
{
	struct store_redis_lookup *l = privdata;
	struct store_redis *sr = l->sr;
	const redisReply *r = reply;
	unsigned i = l->answered++;

	store_redis_replied(sr, r);
	if (!r) {
		l->lost = true;
	} else if (l->cb && i < 2) {
		l->have[i] = store_redis_parse_rep(r, &l->rec[i]);
		if (l->have[i] < 0)
			store_redis_bad_reply(sr, "HMGET", r);
	} else if (l->cb && i == 2) {
		l->have_pass = store_redis_parse_pass(r, &l->pass_expires);
		if (l->have_pass < 0)
			store_redis_bad_reply(sr, "GET", r);
	}
	if (l->answered < l->queued)
		return;
	if (l->cb) {
		if (l->lost)
			metrics_inc(METRIC_STORE_REDIS_LOOKUP_FAILURES);
		store_redis_answer(l, !l->lost);
	}
	free(l);
}

static void store_redis_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis_lookup *l = arg;
	struct store_redis *sr = l->sr;
	unsigned long sup;

	metrics_inc(METRIC_STORE_REDIS_LOOKUP_TIMEOUTS);
	if (store_redis_ratelog_ok(&sr->log_timeout, &sup))
		log_warn("store: redis %s look-up timed out after %ld ms: "
			 "default classification (suppressed=%lu)",
			 sr->server.text, sr->timeout_ms, sup);
	store_redis_answer(l, false);
	/* l stays until its replies come (or the drop below hands them
	 * back as NULL, which frees it): do not touch it from here on. */
	store_redis_check_stall(sr);
}

/* store_ops.lookup */
static void *store_redis_lookup(void *impl, const struct reputation_keys *addr,
				store_records_cb *cb, void *arg)
{
	struct store_redis *sr = impl;
	struct store_redis_keys k;
	unsigned long sup;

	if (!sr || !cb || !store_redis_keys(sr->prefix, addr, &k))
		return NULL;
	metrics_inc(METRIC_STORE_REDIS_LOOKUPS);
	if (!sr->ac) { /* down: the "unreachable" line said so already */
		metrics_inc(METRIC_STORE_REDIS_LOOKUP_FAILURES);
		return NULL;
	}
	if (sr->pending + STORE_REDIS_READS > STORE_REDIS_PENDING_MAX) {
		metrics_inc(METRIC_STORE_REDIS_LOOKUP_FAILURES);
		if (store_redis_ratelog_ok(&sr->log_backlog, &sup))
			log_warn("store: redis %s owes %u replies: look-up "
				 "skipped, default classification "
				 "(suppressed=%lu)", sr->server.text,
				 sr->pending, sup);
		return NULL;
	}
	struct store_redis_lookup *l = calloc(1, sizeof *l);
	if (!l || !(l->timer = evtimer_new(sr->base, store_redis_timeout_cb, l))) {
		free(l);
		metrics_inc(METRIC_STORE_REDIS_LOOKUP_FAILURES);
		return NULL;
	}
	l->sr = sr;
	const char *argv[3][6] = {
		{ "HMGET", k.host, "g", "b", "c", "t" },
		{ "HMGET", k.net, "g", "b", "c", "t" },
		{ "GET", k.pass, NULL, NULL, NULL, NULL },
	};
	const int argc[3] = { 6, 6, 2 };
	for (int c = 0; c < STORE_REDIS_READS; c++) {
		size_t lens[6];
		for (int j = 0; j < argc[c]; j++)
			lens[j] = strlen(argv[c][j]);
		if (!store_redis_send(sr, store_redis_read_cb, l, argc[c],
				      argv[c], lens))
			break;
		l->queued++;
	}
	if (l->queued < STORE_REDIS_READS) {
		/* Only while the context is dying or out of memory. What
		 * was queued still comes back, and frees l. */
		metrics_inc(METRIC_STORE_REDIS_LOOKUP_FAILURES);
		event_free(l->timer);
		l->timer = NULL;
		if (l->queued == 0)
			free(l);
		return NULL;
	}
	l->cb = cb;
	l->arg = arg;
	TAILQ_INSERT_TAIL(&sr->live, l, link);
	evtimer_add(l->timer, sr->timeout_tv);
	return l;
}

/* store_ops.cancel */
static void store_redis_cancel(void *impl, void *handle)
{
	struct store_redis_lookup *l = handle;

	if (l)
		store_redis_detach(l);
}

/* ---- writes ------------------------------------------------------------- */

static void store_redis_write_cb(redisAsyncContext *ac, void *reply,
				 void *privdata)
{
	struct store_redis *sr = privdata;
	const redisReply *r = reply;
	unsigned long sup;

	store_redis_replied(sr, r);
	if (r && r->type == REDIS_REPLY_INTEGER)
		return;
	metrics_inc(METRIC_STORE_REDIS_WRITE_FAILURES);
	if (!r) /* the connection went: logged as such */
		return;
	if (store_redis_ratelog_ok(&sr->log_write, &sup)) {
		char text[120] = "";
		if ((r->type == REDIS_REPLY_ERROR ||
		     r->type == REDIS_REPLY_STRING) && r->str)
			log_escape(text, sizeof text, r->str, r->len);
		log_warn("store: redis %s write failed type=%d err=\"%s\" "
			 "(suppressed=%lu)", sr->server.text, r->type, text, sup);
	}
}

#define STORE_REDIS_EVAL_KEYS 2
#define STORE_REDIS_EVAL_ARGS 7

static void store_redis_eval(struct store_redis *sr, const char *script,
			     const char *const *keys, int nkeys, int nargs,
			     char args[][32])
{
	const char *argv[3 + STORE_REDIS_EVAL_KEYS + STORE_REDIS_EVAL_ARGS];
	size_t lens[3 + STORE_REDIS_EVAL_KEYS + STORE_REDIS_EVAL_ARGS];
	unsigned long sup;
	int argc = 0;

	argv[argc++] = "EVAL";
	argv[argc++] = script;
	argv[argc++] = nkeys == 2 ? "2" : "1";
	for (int i = 0; i < nkeys && i < STORE_REDIS_EVAL_KEYS; i++)
		argv[argc++] = keys[i];
	for (int i = 0; i < nargs && i < STORE_REDIS_EVAL_ARGS; i++)
		argv[argc++] = args[i];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	metrics_inc(METRIC_STORE_REDIS_WRITES);
	if (sr->ac && sr->pending < STORE_REDIS_PENDING_MAX &&
	    store_redis_send(sr, store_redis_write_cb, sr, argc, argv, lens))
		return;
	metrics_inc(METRIC_STORE_REDIS_WRITE_FAILURES);
	/* Down is logged as down; only a backlog needs its own line. */
	if (sr->ac && store_redis_ratelog_ok(&sr->log_backlog, &sup))
		log_warn("store: redis %s owes %u replies: write dropped "
			 "(suppressed=%lu)", sr->server.text, sr->pending, sup);
}

/* store_ops.apply */
static void store_redis_apply(void *impl, const struct reputation_keys *addr,
			      const struct reputation_delta *d, long long at_ms)
{
	struct store_redis *sr = impl;
	struct store_redis_keys k;
	char args[STORE_REDIS_EVAL_ARGS][32];

	if (!sr || !store_redis_keys(sr->prefix, addr, &k))
		return;
	long long ttl = (long long)sr->halflife_ms * STORE_REDIS_REP_TTL_HALFLIVES;
	snprintf(args[0], sizeof args[0], "%.17g", d->good);
	snprintf(args[1], sizeof args[1], "%.17g", d->bad);
	snprintf(args[2], sizeof args[2], "%.17g", d->content);
	snprintf(args[3], sizeof args[3], "%lld", at_ms);
	snprintf(args[4], sizeof args[4], "%ld", sr->halflife_ms);
	snprintf(args[5], sizeof args[5], "%lld", ttl > 0 ? ttl : 0);
	snprintf(args[6], sizeof args[6], "%.17g", REPUTATION_DISTINCT_FLOOR);
	const char *keys[2] = { k.host, k.net };
	store_redis_eval(sr, store_redis_rep_script, keys, 2, 7, args);
}

/* store_ops.pass */
static void store_redis_pass(void *impl, const struct reputation_keys *addr,
			     long long expires_ms, long ttl_ms)
{
	struct store_redis *sr = impl;
	struct store_redis_keys k;
	char args[2][32];

	if (!sr || ttl_ms <= 0 || !store_redis_keys(sr->prefix, addr, &k))
		return;
	snprintf(args[0], sizeof args[0], "%lld", expires_ms);
	snprintf(args[1], sizeof args[1], "%ld", ttl_ms);
	const char *keys[1] = { k.pass };
	store_redis_eval(sr, store_redis_pass_script, keys, 1, 2, args);
}

/* store_ops.revoke */
static void store_redis_revoke(void *impl, const struct reputation_keys *addr)
{
	struct store_redis *sr = impl;
	struct store_redis_keys k;

	if (!sr || !store_redis_keys(sr->prefix, addr, &k))
		return;
	const char *keys[1] = { k.pass };
	store_redis_eval(sr, store_redis_revoke_script, keys, 1, 0, NULL);
}

/* ---- open and close ------------------------------------------------------ */

struct store_redis *store_redis_open(struct event_base *base,
				     const struct endpoint *server,
				     const char *prefix, long timeout_ms,
				     long halflife_ms)
{
	struct store_redis *sr = calloc(1, sizeof *sr);

	if (!sr || !base || !server || !prefix ||
	    strlen(prefix) > STORE_REDIS_PREFIX_MAX ||
	    !(sr->timer = evtimer_new(base, store_redis_timer_cb, sr))) {
		log_err("store: cannot set up redis: running without reputation");
		free(sr);
		return NULL;
	}
	sr->base = base;
	sr->server = *server;
	snprintf(sr->prefix, sizeof sr->prefix, "%s", prefix);
	sr->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
	sr->halflife_ms = halflife_ms;
	sr->stall_ms = sr->timeout_ms * STORE_REDIS_STALL_TIMEOUTS;
	if (sr->stall_ms < STORE_REDIS_STALL_MIN_MS)
		sr->stall_ms = STORE_REDIS_STALL_MIN_MS;
	sr->backoff_ms = STORE_REDIS_BACKOFF_MIN_MS;
	TAILQ_INIT(&sr->live);
	struct timeval tv = mstime_tv(sr->timeout_ms);
	static struct timeval tv_fallback;
	sr->timeout_tv = event_base_init_common_timeout(base, &tv);
	if (!sr->timeout_tv) {
		tv_fallback = tv;
		sr->timeout_tv = &tv_fallback;
	}
	store_redis_connect(sr);
	return sr;
}

/* store_ops.close */
static void store_redis_close(void *impl)
{
	struct store_redis *sr = impl;
	struct store_redis_lookup *l;

	if (!sr)
		return;
	while ((l = TAILQ_FIRST(&sr->live)))
		store_redis_detach(l);
	store_redis_drop(sr); /* frees every look-up still owed a reply */
	event_free(sr->timer);
	free(sr);
}

const struct store_ops store_redis_ops = {
	.name = "redis",
	.lookup = store_redis_lookup,
	.cancel = store_redis_cancel,
	.apply = store_redis_apply,
	.pass = store_redis_pass,
	.revoke = store_redis_revoke,
	.close = store_redis_close,
};

/* ---- administration (supervisor, sluicectl) -------------------------------
 *
 * Allow/deny entries: one hash <prefix>acl, field the canonical network
 * text, value "KIND EXPIRES_MS ADDED_MS" in decimal (readable with
 * redis-cli). Expired fields are skipped when read and deleted by the next
 * put. "forget" deletes <prefix>rep:ADDR and <prefix>pass:ADDR. These use
 * hiredis' blocking API with redis_timeout on connect and on every reply:
 * the supervisor's loop serves no sessions, and sluicectl waits for the
 * answer anyway. A connection per call: they are rare. */

#define STORE_REDIS_ADMIN_VALUE_MAX 80

static redisContext *store_redis_admin_connect(const struct store_where *w, char *err,
					       size_t cap)
{
	const struct endpoint *ep = w->server;
	struct timeval tv = mstime_tv(w->timeout_ms);
	redisContext *c;
	if (ep->ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ep->ss;
		c = redisConnectUnixWithTimeout(un->sun_path, tv);
	} else {
		char host[INET6_ADDRSTRLEN];
		const void *addr;
		int port;
		if (ep->ss.ss_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)&ep->ss;
			addr = &in->sin_addr;
			port = ntohs(in->sin_port);
		} else {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ep->ss;
			addr = &in6->sin6_addr;
			port = ntohs(in6->sin6_port);
		}
		if (!inet_ntop(ep->ss.ss_family, addr, host, sizeof host)) {
			snprintf(err, cap, "redis %s: bad address", ep->text);
			return NULL;
		}
		c = redisConnectWithTimeout(host, port, tv);
	}
	if (!c || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(err, cap, "redis %s: %s", ep->text,
			 !c ? "out of memory" : c->err ? c->errstr : "cannot set a timeout");
		if (c)
			redisFree(c);
		return NULL;
	}
	return c;
}

/* One command; the reply (caller frees) or NULL with err. */
static redisReply *store_redis_admin_cmd(redisContext *c, const struct store_where *w,
					 char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!r) {
		snprintf(err, cap, "redis %s: %s", w->server->text,
			 c->errstr[0] ? c->errstr : "no reply");
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, cap, "redis %s: %.200s", w->server->text, r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* <prefix>acl as one string: a format's %s is one argument, spaces and
 * all, where "%sacl" would split a prefix with spaces. */
static const char *store_redis_admin_key(const struct store_where *w, char *key)
{
	snprintf(key, STORE_REDIS_KEY_MAX, "%sacl", w->prefix);
	return key;
}

/* The field/value pair at r->element[i] as an entry, or false. */
static bool store_redis_admin_entry(const redisReply *r, size_t i, struct acl_entry *e)
{
	const redisReply *f = r->element[i], *v = r->element[i + 1];
	char buf[STORE_REDIS_ADMIN_VALUE_MAX], tail;
	long long val[3];
	if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || v->len == 0 ||
	    v->len >= sizeof buf)
		return false;
	memcpy(buf, v->str, v->len);
	buf[v->len] = 0;
	return sscanf(buf, "%lld %lld %lld%c", &val[0], &val[1], &val[2], &tail) == 3 &&
	       acl_entry_decode(f->str, f->len, val[0], val[1], val[2], e);
}

static int store_redis_acl_load(const struct store_where *w, struct acl_entry *out,
				size_t cap, size_t *n, long long now_ms, char *err,
				size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX];
	*n = 0;
	redisContext *c = store_redis_admin_connect(w, err, errcap);
	if (!c)
		return -1;
	redisReply *r = store_redis_admin_cmd(c, w, err, errcap, "HGETALL %s",
					      store_redis_admin_key(w, key));
	redisFree(c);
	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < r->elements && *n < cap; i += 2)
			if (store_redis_admin_entry(r, i, &out[*n]) &&
			    (!out[*n].expires_ms || out[*n].expires_ms > now_ms))
				(*n)++;
	freeReplyObject(r);
	return 0;
}

static int store_redis_acl_put(const struct store_where *w, const struct acl_entry *e,
			       long long now_ms, char *err, size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX], text[CONTROL_TOKEN_MAX + 16];
	char value[STORE_REDIS_ADMIN_VALUE_MAX];
	redisContext *c = store_redis_admin_connect(w, err, errcap);
	if (!c)
		return -1;
	store_redis_admin_key(w, key);
	control_net_format(&e->net, text, sizeof text);
	snprintf(value, sizeof value, "%d %lld %lld", (int)e->kind, e->expires_ms, e->added_ms);
	redisReply *r = store_redis_admin_cmd(c, w, err, errcap, "HSET %s %s %s", key, text, value);
	if (r)
		freeReplyObject(r);
	/* Expired fields go (best effort: the put itself succeeded). */
	redisReply *h = r ? redisCommand(c, "HGETALL %s", key) : NULL;
	if (h && h->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < h->elements; i += 2) {
			struct acl_entry old;
			if (store_redis_admin_entry(h, i, &old) &&
			    (!old.expires_ms || old.expires_ms > now_ms))
				continue;
			redisReply *d = redisCommand(c, "HDEL %s %b", key, h->element[i]->str,
						     h->element[i]->len);
			if (d)
				freeReplyObject(d);
		}
	if (h)
		freeReplyObject(h);
	redisFree(c);
	return r ? 0 : -1;
}

static int store_redis_acl_del(const struct store_where *w, const struct control_net *net,
			       bool *found, char *err, size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX], text[CONTROL_TOKEN_MAX + 16];
	*found = false;
	redisContext *c = store_redis_admin_connect(w, err, errcap);
	if (!c)
		return -1;
	control_net_format(net, text, sizeof text);
	redisReply *r = store_redis_admin_cmd(c, w, err, errcap, "HDEL %s %s",
					      store_redis_admin_key(w, key), text);
	redisFree(c);
	if (!r)
		return -1;
	*found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	freeReplyObject(r);
	return 0;
}

static int store_redis_forget(const struct store_where *w, const struct reputation_keys *a,
			      bool *found, char *err, size_t errcap)
{
	struct store_redis_keys k;
	*found = false;
	if (!store_redis_keys(w->prefix, a, &k)) {
		snprintf(err, errcap, "redis_prefix too long");
		return -1;
	}
	redisContext *c = store_redis_admin_connect(w, err, errcap);
	if (!c)
		return -1;
	redisReply *r = store_redis_admin_cmd(c, w, err, errcap, "DEL %s %s", k.host, k.pass);
	redisFree(c);
	if (!r)
		return -1;
	*found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	freeReplyObject(r);
	return 0;
}

const struct store_admin_ops store_redis_admin = {
	store_redis_acl_load, store_redis_acl_put, store_redis_acl_del, store_redis_forget,
};
