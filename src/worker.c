/*
 * worker: a worker process's main loop (see worker.h).
 *
 * Start-up (blocking calls allowed here only): TLS contexts, resolver,
 * thread pool, backend pool, then privileges are dropped and the loop runs.
 * SIGTERM drains: stop accepting, answer 421 to sessions that are not in a
 * replay, let replays finish, exit when no session is left or after
 * shutdown_timeout, whichever comes first. SIGUSR1 retires the worker
 * after a reload: the supervisor has started its successor, so it stops
 * accepting and exits once its sessions have ended on their own. A
 * worker never re-reads its configuration. When the supervisor dies (EOF
 * on the life pipe, see supervisor.c) the worker drains as on SIGTERM:
 * nothing would restart, reload or stop it any more.
 */
#include "worker.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "config.h"
#include "dns.h"
#include "dnsbl.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "pool.h"
#include "sdnotify.h"
#include "session.h"
#include "spool.h"
#include "signals.h"
#include "store.h"
#include "throttle.h"
#include "tls.h"
#include "workq.h"

#define WORKER_THREADS 2
#define WORKER_DRAIN_POLL_MS 100
#define WORKER_STORE_MAP_SIZE (64ULL * 1024 * 1024)
/* A write transaction (a pool thread's wake-up, an fdatasync, the loop's
 * wake-up for its end) at most this often: under load one serves many
 * messages instead of one each; a record after a quiet spell still leaves
 * at once. At 20 ms the commits were still 6 % of a worker's CPU with
 * 20 sessions to Postfix (perf, issue 8); reputation is the sum of many
 * records, and a tenth of a second late changes no verdict. */
#define WORKER_STORE_WRITE_GAP_MS 100

/* One per process, on worker_main's stack frame (static): everything the
 * worker made at start-up, handed to the modules through their
 * constructors and the two shared environments. Only this file touches
 * it; callbacks get it as their argument. */
struct worker {
	struct event_base *base;
	const struct config *cfg;
	struct workq *workq;
	SSL_CTX *tls_client;         /* for backend_tls */
	unsigned slot;               /* worker index, 1-based; metrics slot */
	pid_t supervisor_pid;
	bool retiring;               /* reload: sessions end on their own */
	struct event *drain_ev;
	struct event *orphan_ev;     /* EOF on the life pipe */
	long long drain_deadline_ms;
	struct spool_env spool;      /* the message bodies' shared state */
	struct session_env sessions; /* what every session shares */
};

static void worker_drain_poll(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	if (session_count() == 0 ||
	    (w->sessions.draining && mstime_mono() >= w->drain_deadline_ms)) {
		if (session_count())
			log_warn("worker: drain deadline passed with %u sessions open",
				 session_count());
		event_base_loopexit(w->base, NULL);
		return;
	}
	/* Sessions that finished a replay since: 421 them too. */
	if (w->sessions.draining)
		session_shutdown_all();
	struct timeval tv = mstime_tv(WORKER_DRAIN_POLL_MS);
	evtimer_add(w->drain_ev, &tv);
}

/* Shut down: 421 to every session not in a replay, replays finish, exit
 * by shutdown_timeout at the latest. */
static void worker_drain(struct worker *w)
{
	if (w->sessions.draining)
		return;
	w->sessions.draining = true;
	log_info("worker: draining %u sessions", session_count());
	if (!w->retiring)
		listener_stop();
	w->retiring = true;
	session_shutdown_all();
	w->drain_deadline_ms = mstime_mono() + w->cfg->shutdown_timeout_ms;
	worker_drain_poll(-1, 0, w);
}

static void worker_term_cb(evutil_socket_t sig, short what, void *arg)
{
	worker_drain(arg);
}

/* The life pipe is readable only at EOF: nobody writes to it, and its last
 * write end closed with the supervisor. */
static void worker_orphan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	char c;
	if (read(fd, &c, 1) < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	event_del(w->orphan_ev);
	log_err("worker %u: supervisor pid=%d gone; draining", w->slot,
		(int)w->supervisor_pid);
	worker_drain(w);
}

/* SIGUSR1 (reload): a new worker serves the slot; this one stops
 * accepting and lets its sessions end as they would anyway (each is
 * bounded by smtpd_timeout and command_limit), as Postfix's master lets
 * old processes finish their client. A SIGTERM later still applies. */
static void worker_retire_cb(evutil_socket_t sig, short what, void *arg)
{
	struct worker *w = arg;

	if (w->retiring || w->sessions.draining)
		return;
	w->retiring = true;
	log_info("worker: retiring after reload with %u sessions", session_count());
	listener_stop();
	worker_drain_poll(-1, 0, w);
}

static int worker_drop_privileges(const struct config *cfg)
{
	if (!cfg->user[0] || geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (!pw) {
		log_err("worker: unknown user '%s'", cfg->user);
		return -1;
	}
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		log_err("worker: cannot become %s: %s", cfg->user, strerror(errno));
		return -1;
	}
	/* Allow core dumps for post-mortems after the uid change. */
	prctl(PR_SET_DUMPABLE, 1);
	return 0;
}

/* Lists and rates used by classification (start-up: reads files). */
static int worker_classify_init(struct worker *w)
{
	const struct config *cfg = w->cfg;
	char err[256];
	if (throttle_init(cfg) != 0) {
		log_err("worker: cannot set up shaping");
		return -1;
	}
	if (cfg->dnsbl_sites[0]) {
		static struct dnsbl_list list;
		if (dnsbl_parse(cfg->dnsbl_sites, strlen(cfg->dnsbl_sites), &list, err,
				sizeof err) != 0) {
			log_err("worker: dnsbl_sites: %s", err);
			return -1;
		}
		w->sessions.dnsbl = &list;
	}
	if (cfg->cidr_allow_file[0] &&
	    !(w->sessions.allow = cidr_load(cfg->cidr_allow_file, err, sizeof err))) {
		log_err("worker: %s: %s", cfg->cidr_allow_file, err);
		return -1;
	}
	if (cfg->cidr_deny_file[0] &&
	    !(w->sessions.deny = cidr_load(cfg->cidr_deny_file, err, sizeof err))) {
		log_err("worker: %s: %s", cfg->cidr_deny_file, err);
		return -1;
	}
	return 0;
}

int worker_main(const struct config *cfg, unsigned slot, const int *listen_fds,
		size_t n_listen, int life_fd)
{
	static struct worker w;
	w.cfg = cfg;
	w.slot = slot;
	w.supervisor_pid = getppid();
	metrics_use_slot(slot);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() != 0) {
		log_err("worker: libevent threads unavailable");
		return 1;
	}
	w.base = event_base_new();
	if (!w.base)
		return 1;
	if (cfg->tls_cert_file[0] && !(w.sessions.tls_server = tls_server_ctx(cfg)))
		return 1;
	if (cfg->backend_tls && !(w.tls_client = tls_client_ctx(cfg)))
		return 1;
	if (!(w.sessions.dns = dns_new(w.base, cfg))) {
		log_err("worker: cannot set up DNS");
		return 1;
	}
	if (!(w.workq = workq_new(w.base, WORKER_THREADS))) {
		log_err("worker: cannot start threads");
		return 1;
	}
	if (worker_classify_init(&w) != 0)
		return 1;
	if (worker_drop_privileges(cfg) != 0)
		return 1;
	/* LMDB environments must not cross fork, and the files belong to the
	 * unprivileged user: open after both. A store that cannot be opened
	 * costs reputation and passes, never mail. Redis: one connection per
	 * worker, made on the loop (it never fails here for want of Redis). */
	const struct store_params sp = {
		.rep = { cfg->reputation_halflife_ms, cfg->network_min_addresses,
			 cfg->network_bad_share, cfg->weight_reputation,
			 cfg->weight_network, cfg->weight_content },
		.prefixes = { cfg->ipv4_network_prefix, cfg->ipv6_client_prefix,
			      cfg->ipv6_network_prefix },
	};
	if (cfg->store == CONFIG_STORE_REDIS) {
		w.sessions.store = store_open_redis(w.base, &cfg->redis_server, cfg->redis_prefix,
					   cfg->redis_timeout_ms, &sp);
		if (!w.sessions.store)
			log_warn("worker: running without the reputation store");
	} else {
		w.sessions.store = store_open_lmdb(cfg->state_dir, w.base, w.workq, &sp,
					  WORKER_STORE_MAP_SIZE, WORKER_STORE_WRITE_GAP_MS);
		if (!w.sessions.store)
			log_warn("worker: running without the reputation store in %s",
				 cfg->state_dir);
	}
	if (!(w.sessions.pool = pool_new(w.base, cfg, w.tls_client)))
		return 1;
	w.spool = (struct spool_env){ .base = w.base, .workq = w.workq,
				      .cfg = cfg };
	w.sessions.base = w.base;
	w.sessions.cfg = cfg;
	w.sessions.spool = &w.spool;
	if (listener_start(w.base, &w.sessions, listen_fds, n_listen) != 0) {
		log_err("worker: cannot listen");
		return 1;
	}
	if (session_report_start(w.base, slot) != 0)
		log_warn("worker %u: no status snapshot (out of memory)", slot);
	struct event *term = evsignal_new(w.base, SIGTERM, worker_term_cb, &w);
	struct event *retire = evsignal_new(w.base, SIGUSR1, worker_retire_cb, &w);
	w.drain_ev = evtimer_new(w.base, worker_drain_poll, &w);
	w.orphan_ev = event_new(w.base, life_fd, EV_READ | EV_PERSIST,
				worker_orphan_cb, &w);
	if (!term || !retire || !w.drain_ev || !w.orphan_ev ||
	    evsignal_add(term, NULL) != 0 || evsignal_add(retire, NULL) != 0 ||
	    evutil_make_socket_nonblocking(life_fd) != 0 ||
	    event_add(w.orphan_ev, NULL) != 0)
		return 1;
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR2, SIG_IGN); /* the supervisor's upgrade, not ours */
	signal(SIGINT, SIG_IGN); /* the supervisor turns ^C into SIGTERM */
	log_info("worker %u: ready pid=%d", slot, (int)getpid());
	sdnotify_worker_ready();
	event_base_dispatch(w.base);
	pool_shutdown(w.sessions.pool);
	workq_free(w.workq); /* finishes pending store writes */
	store_close(w.sessions.store);
	log_info("worker %u: exit", slot);
	return 0;
}
