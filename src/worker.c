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

#include "dns.h"
#include "dnsbl.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "session.h"
#include "signals.h"
#include "store.h"
#include "throttle.h"
#include "tls.h"
#include "workq.h"

#define WORKER_THREADS 2
#define WORKER_DRAIN_POLL_MS 100
#define WORKER_STORE_MAP_SIZE (64ULL * 1024 * 1024)

struct worker *worker;

unsigned long long worker_size_limit(void)
{
	unsigned long long limit = worker->cfg->message_size_limit;
	if (worker->backend_size_max && worker->backend_size_max < limit)
		limit = worker->backend_size_max;
	return limit;
}

static struct event *drain_ev;
static long long drain_deadline_ms;

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool retiring; /* reload: sessions end on their own */
static pid_t supervisor_pid;

static void worker_drain_poll(evutil_socket_t fd, short what, void *arg)
{
	if (session_count() == 0 ||
	    (worker->draining && mono_ms() >= drain_deadline_ms)) {
		if (session_count())
			log_warn("worker: drain deadline passed with %u sessions open",
				 session_count());
		event_base_loopexit(worker->base, NULL);
		return;
	}
	/* Sessions that finished a replay since: 421 them too. */
	if (worker->draining)
		session_shutdown_all();
	struct timeval tv = {0, WORKER_DRAIN_POLL_MS * 1000};
	evtimer_add(drain_ev, &tv);
}

/* Shut down: 421 to every session not in a replay, replays finish, exit
 * by shutdown_timeout at the latest. */
static void worker_drain(void)
{
	if (worker->draining)
		return;
	worker->draining = true;
	log_info("worker: draining %u sessions", session_count());
	if (!retiring)
		listener_stop();
	retiring = true;
	session_shutdown_all();
	drain_deadline_ms = mono_ms() + worker->cfg->shutdown_timeout_ms;
	worker_drain_poll(-1, 0, NULL);
}

static void worker_term_cb(evutil_socket_t sig, short what, void *arg)
{
	worker_drain();
}

/* The life pipe is readable only at EOF: nobody writes to it, and its last
 * write end closed with the supervisor. */
static void worker_orphan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct event *ev = arg;
	char c;
	if (read(fd, &c, 1) < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	event_del(ev);
	log_err("worker %u: supervisor pid=%d gone; draining", worker->slot,
		(int)supervisor_pid);
	worker_drain();
}

/* SIGUSR1 (reload): a new worker serves the slot; this one stops
 * accepting and lets its sessions end as they would anyway (each is
 * bounded by smtpd_timeout and command_limit), as Postfix's master lets
 * old processes finish their client. A SIGTERM later still applies. */
static void worker_retire_cb(evutil_socket_t sig, short what, void *arg)
{
	if (retiring || worker->draining)
		return;
	retiring = true;
	log_info("worker: retiring after reload with %u sessions", session_count());
	listener_stop();
	worker_drain_poll(-1, 0, NULL);
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
		w->dnsbl = &list;
	}
	if (cfg->cidr_allow_file[0] &&
	    !(w->allow = cidr_load(cfg->cidr_allow_file, err, sizeof err))) {
		log_err("worker: %s: %s", cfg->cidr_allow_file, err);
		return -1;
	}
	if (cfg->cidr_deny_file[0] &&
	    !(w->deny = cidr_load(cfg->cidr_deny_file, err, sizeof err))) {
		log_err("worker: %s: %s", cfg->cidr_deny_file, err);
		return -1;
	}
	return 0;
}

int worker_main(const struct config *cfg, unsigned slot, const int *listen_fds,
		size_t n_listen, int life_fd)
{
	static struct worker w;
	worker = &w;
	w.cfg = cfg;
	w.slot = slot;
	supervisor_pid = getppid();
	metrics_use_slot(slot);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() != 0) {
		log_err("worker: libevent threads unavailable");
		return 1;
	}
	w.base = event_base_new();
	if (!w.base)
		return 1;
	if (cfg->tls_cert_file[0] && !(w.tls_server = tls_server_ctx(cfg)))
		return 1;
	if (cfg->backend_tls && !(w.tls_client = tls_client_ctx(cfg)))
		return 1;
	if (!(w.dns = dns_new(w.base, cfg))) {
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
	if (cfg->store == CONFIG_STORE_REDIS) {
		w.store = store_open_redis(w.base, &cfg->redis_server, cfg->redis_prefix,
					   cfg->redis_timeout_ms,
					   cfg->reputation_halflife_ms);
		if (!w.store)
			log_warn("worker: running without the reputation store");
	} else {
		w.store = store_open_lmdb(cfg->state_dir, w.workq,
					  cfg->reputation_halflife_ms,
					  WORKER_STORE_MAP_SIZE);
		if (!w.store)
			log_warn("worker: running without the reputation store in %s",
				 cfg->state_dir);
	}
	if (!(w.pool = pool_new()))
		return 1;
	if (listener_start(w.base, listen_fds, n_listen) != 0) {
		log_err("worker: cannot listen");
		return 1;
	}
	if (session_report_start(w.base, slot) != 0)
		log_warn("worker %u: no status snapshot (out of memory)", slot);
	struct event *term = evsignal_new(w.base, SIGTERM, worker_term_cb, NULL);
	struct event *retire = evsignal_new(w.base, SIGUSR1, worker_retire_cb, NULL);
	drain_ev = evtimer_new(w.base, worker_drain_poll, NULL);
	struct event *orphan = event_new(w.base, life_fd, EV_READ | EV_PERSIST,
					 worker_orphan_cb, event_self_cbarg());
	if (!term || !retire || !drain_ev || !orphan || evsignal_add(term, NULL) != 0 ||
	    evsignal_add(retire, NULL) != 0 || evutil_make_socket_nonblocking(life_fd) != 0 ||
	    event_add(orphan, NULL) != 0)
		return 1;
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN); /* the supervisor turns ^C into SIGTERM */
	log_info("worker %u: ready pid=%d", slot, (int)getpid());
	event_base_dispatch(w.base);
	pool_shutdown(w.pool);
	workq_free(w.workq); /* finishes pending store writes */
	store_close(w.store);
	log_info("worker %u: exit", slot);
	return 0;
}
