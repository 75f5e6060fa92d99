/*
 * supervisor: process management (see supervisor.h).
 *
 * Sockets: one SO_REUSEPORT socket per (worker slot, listen address),
 * created here before any worker exists, kept for the supervisor's life,
 * and inherited by whichever worker serves that slot. A restarted worker
 * thus takes over the connections queued for its dead predecessor, and a
 * reload with unchanged listen addresses loses no queued connection.
 *
 * Workers are numbered 1..n; metrics slots alternate between two banks on
 * each reload so that a draining old worker and its successor do not
 * share a slot.
 *
 * Supervisor death (kill -9, HOSTILE 108): every worker holds the read end
 * of a pipe whose only write end stays in the supervisor; the kernel
 * closes it when the supervisor dies, however it dies, and each worker
 * sees EOF and drains as on SIGTERM, then exits. So no orphan keeps a
 * port that nothing restarts or reloads (as Postfix's children exit when
 * master's status pipe closes). Rejected: PR_SET_PDEATHSIG, which the
 * kernel clears when the worker changes its uid, and which races with a
 * supervisor that dies before the worker has set it; keeping orphans
 * serving, which leaves a half-managed daemon that a restarted sluice
 * cannot bind next to without doubling the workers.
 */
#include "supervisor.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "config.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "sdnotify.h"
#include "snapshot.h"
#include "spool.h"
#include "status.h"
#include "upgrade.h"
#include "version.h"
#include "worker.h"

#define SUP_MAX_WORKERS 256
#define SUP_RESTART_MIN_MS 200 /* a worker that dies at once is not respawned in a spin */
#define SUP_KILL_GRACE_MS 5000
#define SUP_STATUS_INTERVAL_S 2 /* STATUS= for systemctl status, when it changed */
#define SUP_SETTLE_TIMEOUT_S 30  /* a reload's or upgrade's new workers accept by then */

struct sup_worker {
	pid_t pid;
	unsigned slot;     /* 1..n */
	unsigned bank;     /* metrics bank */
	bool draining;     /* old generation, will not be restarted */
	bool ready;        /* said it accepts (sdnotify ready pipe) */
	bool retire_owed;  /* upgrade: SIGUSR1 once the new generation accepts */
	long long started_ms;
};

static struct config *cur_cfg;
/* Earlier generations' configurations. Nothing reads them: a forked
 * worker has its own copy. They are not freed because the first one is
 * main's, not ours; the ring only bounds what is held (the oldest pointer
 * is dropped, so each reload past eight leaks one struct config). */
static struct config *old_cfgs[8];
static const char *cfg_path;
static char *const *cfg_overrides;
static size_t cfg_n_overrides;
static int sockets[SUP_MAX_WORKERS][CONFIG_LISTEN_MAX];
static unsigned n_slots;
static struct sup_worker workers[SUP_MAX_WORKERS * 2];
static size_t n_workers;
static unsigned bank;
static unsigned metric_slots_per_bank;
static bool stopping;
static long long stop_deadline_ms;
static struct event_base *base;
static struct event *restart_ev;
static int life_pipe[2] = {-1, -1}; /* [0] in every worker, [1] here only */
static bool ready_owed = true; /* READY=1 not yet sent for this generation */
static bool settle_owed;       /* sluicectl reload/upgrade waits for the new workers */
static struct event *settle_ev; /* SUP_SETTLE_TIMEOUT_S */

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned effective_workers(const struct config *cfg)
{
	unsigned n = cfg->workers;
	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (unsigned)cpus : 1;
	}
	return n > SUP_MAX_WORKERS ? SUP_MAX_WORKERS : n;
}

static int make_dir(const char *dir, const struct config *cfg)
{
	if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
		log_err("cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (cfg->user[0] && geteuid() == 0) {
		struct passwd *pw = getpwnam(cfg->user);
		if (!pw) {
			log_err("unknown user '%s'", cfg->user);
			return -1;
		}
		if (chown(dir, pw->pw_uid, pw->pw_gid) != 0) {
			log_err("cannot chown %s: %s", dir, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Binds cfg's addresses into fds (CONFIG_LISTEN_MAX), all or none: on a
 * failure what was bound is closed again and fds is all -1. */
static int bind_into(const struct config *cfg, int *fds)
{
	for (size_t i = 0; i < CONFIG_LISTEN_MAX; i++)
		fds[i] = -1;
	for (size_t i = 0; i < cfg->listen_count; i++) {
		fds[i] = listener_bind(&cfg->listen[i]);
		if (fds[i] < 0) {
			log_err("cannot listen on %s: %s", cfg->listen[i].text,
				strerror(errno));
			for (size_t j = 0; j < i; j++) {
				close(fds[j]);
				fds[j] = -1;
			}
			return -1;
		}
	}
	return 0;
}

static int bind_slot(const struct config *cfg, unsigned slot)
{
	return bind_into(cfg, sockets[slot]);
}

static void close_slot(unsigned slot, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (sockets[slot][i] >= 0) {
			close(sockets[slot][i]);
			sockets[slot][i] = -1;
		}
}

/* A slot not started (a full table, fork failing): respawn_missing
 * tries again in a second, whoever asked (start after an upgrade,
 * reload, restart). */
static int spawn_later(void)
{
	if (restart_ev) {
		struct timeval tv = {1, 0};
		evtimer_add(restart_ev, &tv);
	}
	return -1;
}

static int spawn(unsigned slot)
{
	/* Old generations still draining (reloads, an upgrade's adopted
	 * workers) can fill the table: the slot waits for one to exit. */
	if (n_workers >= sizeof workers / sizeof workers[0]) {
		log_err("worker %u: %zu workers still run; starting it once one exits", slot,
			n_workers);
		return spawn_later();
	}
	pid_t pid = fork();
	if (pid < 0) {
		log_err("fork: %s", strerror(errno));
		return spawn_later();
	}
	if (pid == 0) {
		/* The supervisor's loop is not the worker's: give it its own
		 * kernel state (event_reinit) so that freeing it cannot touch
		 * the parent's epoll set or signal handling. */
		if (event_reinit(base) == 0)
			event_base_free(base);
		base = NULL;
		/* Keep only this slot's sockets, and no write end of the life
		 * pipe: the supervisor's must be the last one. */
		for (unsigned s = 0; s < n_slots; s++)
			if (s != slot - 1)
				close_slot(s, cur_cfg->listen_count);
		close(life_pipe[1]);
		control_close_fds();
		int code = worker_main(cur_cfg, bank * metric_slots_per_bank + slot,
				       sockets[slot - 1], cur_cfg->listen_count,
				       life_pipe[0]);
		log_flush();
		_exit(code);
	}
	struct sup_worker *w = &workers[n_workers++];
	w->pid = pid;
	w->slot = slot;
	w->bank = bank;
	w->draining = false;
	w->ready = false;
	w->retire_owed = false;
	w->started_ms = mono_ms();
	return 0;
}

static struct sup_worker *find_worker(pid_t pid)
{
	for (size_t i = 0; i < n_workers; i++)
		if (workers[i].pid == pid)
			return &workers[i];
	return NULL;
}

static void forget_worker(struct sup_worker *w)
{
	*w = workers[--n_workers];
}

static bool slot_served(unsigned slot)
{
	for (size_t i = 0; i < n_workers; i++)
		if (workers[i].slot == slot && !workers[i].draining)
			return true;
	return false;
}

static void respawn_missing(evutil_socket_t fd, short what, void *arg)
{
	if (stopping)
		return;
	for (unsigned s = 1; s <= n_slots; s++)
		if (!slot_served(s) && spawn(s) != 0)
			return; /* spawn set the next try */
}

/* "STATUS=" text for systemd: what an administrator wants from
 * `systemctl status` at a glance. */
static void sup_status(char *buf, size_t cap)
{
	snprintf(buf, cap, "%lld sessions, %lld shaped; %u workers%s",
		 metrics_get(METRIC_SESSIONS_ACTIVE), metrics_get(METRIC_SHAPED_ACTIVE),
		 n_slots, stopping ? "; stopping" : "");
}

static void sup_status_cb(evutil_socket_t fd, short what, void *arg)
{
	static char last[128];
	char now[128];
	sup_status(now, sizeof now);
	if (strcmp(now, last) != 0 && !ready_owed) {
		sdnotify_send("STATUS=%s", now);
		memcpy(last, now, sizeof last);
	}
}

/* What runs now, for sluicectl upgrade's answer and the log. */
static void sup_running(char *buf, size_t cap)
{
	snprintf(buf, cap, "pid %d runs %s (sluice %s)", (int)getpid(), upgrade_path(),
		 SLUICE_VERSION);
}

/* The new generation accepts: READY=1, the old generation of an upgrade
 * retires, and sluicectl gets its answer. */
static void sup_generation_ready(void)
{
	size_t retired = 0;
	for (size_t i = 0; i < n_workers; i++)
		if (workers[i].retire_owed) {
			workers[i].retire_owed = false;
			kill(workers[i].pid, SIGUSR1);
			retired++;
		}
	if (retired)
		log_info("supervisor: new workers accept; %zu old workers retire", retired);
	if (ready_owed) {
		char status[128];
		sup_status(status, sizeof status);
		sdnotify_send("READY=1\nSTATUS=%s", status);
		ready_owed = false;
	}
	if (settle_owed) {
		char running[PATH_MAX + 64];
		settle_owed = false;
		evtimer_del(settle_ev);
		sup_running(running, sizeof running);
		control_settle(true, running);
	}
}

/* The new generation will not accept (a worker died starting, or the
 * time ran out): sluicectl and systemd hear why; the supervisor goes on
 * restarting workers as after any death. */
static void sup_settle_failed(const char *why)
{
	log_err("supervisor: %s", why);
	if (ready_owed) {
		sdnotify_send("READY=1\nSTATUS=%s", why);
		ready_owed = false;
	}
	if (settle_owed) {
		settle_owed = false;
		evtimer_del(settle_ev);
		control_settle(false, why);
	}
}

static void sup_settle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	char why[96];
	snprintf(why, sizeof why, "the new workers do not accept after %d s (see the log)",
		 SUP_SETTLE_TIMEOUT_S);
	sup_settle_failed(why);
}

/* systemd's RELOADING=1 (reload and upgrade), with the monotonic time it
 * wants beside it, and more fields in extra ("" or "\nNAME=value"). */
static void sup_notify_reloading(const char *extra)
{
	struct timespec mono;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	sdnotify_send("RELOADING=1\nMONOTONIC_USEC=%lld%s",
		      (long long)mono.tv_sec * 1000000 + mono.tv_nsec / 1000, extra);
}

/* A reload or upgrade has started a generation: answer when it accepts. */
static void sup_settle_owed(void)
{
	struct timeval tv = {SUP_SETTLE_TIMEOUT_S, 0};
	settle_owed = true;
	evtimer_add(settle_ev, &tv);
}

/* Once every worker of the current generation accepts: see
 * sup_generation_ready. */
static void sup_ready_cb(evutil_socket_t fd, short what, void *arg)
{
	pid_t pid;
	for (size_t i = 0; i < SUP_MAX_WORKERS * 2 && (pid = sdnotify_read_ready()) > 0; i++) {
		struct sup_worker *w = find_worker(pid);
		if (w)
			w->ready = true;
	}
	if (stopping)
		return;
	unsigned serving = 0;
	for (size_t i = 0; i < n_workers; i++) {
		if (workers[i].draining)
			continue;
		if (!workers[i].ready)
			return;
		serving++;
	}
	if (serving < n_slots)
		return;
	sup_generation_ready();
}

static void sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	int status;
	pid_t pid;
	bool restart = false;
	long long delay = 0;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct sup_worker *w = find_worker(pid);
		if (!w)
			continue;
		/* Leftover spill files of that process are unreferenced now. */
		spool_clean_dir(cur_cfg->spool_dir, pid);
		metrics_clear_gauges(w->bank * metric_slots_per_bank + w->slot);
		snapshot_clear(w->bank * metric_slots_per_bank + w->slot);
		if (w->draining || stopping) {
			log_info("worker pid=%d exited", (int)pid);
		} else {
			if (!w->ready && settle_owed) {
				char why[96];
				snprintf(why, sizeof why, "worker %u pid=%d exited while starting "
					 "(see the log)", w->slot, (int)pid);
				sup_settle_failed(why);
			}
			if (WIFSIGNALED(status))
				log_err("worker %u pid=%d killed by signal %d; restarting",
					w->slot, (int)pid, WTERMSIG(status));
			else
				log_err("worker %u pid=%d exited with status %d; restarting",
					w->slot, (int)pid, WEXITSTATUS(status));
			metrics_inc(METRIC_WORKER_RESTARTS);
			long long age = mono_ms() - w->started_ms;
			if (age < SUP_RESTART_MIN_MS)
				delay = SUP_RESTART_MIN_MS * 5;
			restart = true;
		}
		forget_worker(w);
	}
	if (stopping && n_workers == 0)
		event_base_loopexit(base, NULL);
	if (restart) {
		struct timeval tv = mstime_tv(delay);
		evtimer_add(restart_ev, &tv);
	}
}

static void stop_poll(evutil_socket_t fd, short what, void *arg)
{
	if (n_workers == 0) {
		event_base_loopexit(base, NULL);
		return;
	}
	if (mono_ms() > stop_deadline_ms) {
		for (size_t i = 0; i < n_workers; i++)
			kill(workers[i].pid, SIGKILL);
	}
	struct timeval tv = {0, 200000};
	event_base_once(base, -1, EV_TIMEOUT, stop_poll, NULL, &tv);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	if (stopping)
		return;
	stopping = true;
	if (settle_owed)
		sup_settle_failed("stopping before the new workers accepted");
	log_info("supervisor: stopping %zu workers", n_workers);
	sdnotify_send("STOPPING=1\nSTATUS=stopping: draining %zu workers", n_workers);
	for (size_t i = 0; i < n_workers; i++)
		kill(workers[i].pid, SIGTERM);
	/* Stop accepting: once the workers have closed their copies too, a
	 * new client is refused at once instead of waiting in a backlog that
	 * nobody will serve until the exit resets it. */
	for (unsigned s = 0; s < n_slots; s++) {
		close_slot(s, cur_cfg->listen_count);
		for (size_t i = 0; i < cur_cfg->listen_count; i++)
			sockets[s][i] = -1;
	}
	stop_deadline_ms = mono_ms() + cur_cfg->shutdown_timeout_ms + SUP_KILL_GRACE_MS;
	stop_poll(-1, 0, NULL);
}

static bool same_listen(const struct config *a, const struct config *b)
{
	if (a->listen_count != b->listen_count)
		return false;
	for (size_t i = 0; i < a->listen_count; i++)
		if (strcmp(a->listen[i].text, b->listen[i].text) != 0)
			return false;
	return true;
}

/* Re-reads the configuration and starts a new generation of workers; the
 * old one retires. 0, or -1 with the reason in err (the running
 * configuration stays). Used by SIGHUP and by sluicectl reload. */
static int supervisor_reload(char *err, size_t cap)
{
	if (stopping) {
		snprintf(err, cap, "stopping");
		return -1;
	}
	struct config *next = malloc(sizeof *next);
	if (!next) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	if (config_load(next, cfg_path, cfg_overrides, cfg_n_overrides, err, cap) != 0)
		goto refused;
	unsigned n = effective_workers(next);
	if (n > metric_slots_per_bank)
		n = metric_slots_per_bank;
	/* Everything that can fail comes before anything is changed: the
	 * new sockets are bound aside and installed only once all of them and
	 * the directories are in place, so a failed reload leaves the running
	 * listeners (and the slots a restarted worker inherits) as they were.
	 * With new addresses every slot gets new sockets; otherwise only the
	 * slots added. SO_REUSEPORT lets an address bind again while the old
	 * socket is still open. */
	bool rebind = !same_listen(cur_cfg, next);
	unsigned from = rebind ? 0 : n_slots;
	unsigned bound = from;
	static int fresh[SUP_MAX_WORKERS][CONFIG_LISTEN_MAX];
	for (; bound < n; bound++)
		if (bind_into(next, fresh[bound]) != 0) {
			snprintf(err, cap, "cannot bind the new listen addresses");
			goto unbind;
		}
	if (make_dir(next->spool_dir, next) != 0 || make_dir(next->state_dir, next) != 0) {
		snprintf(err, cap, "cannot prepare spool_dir or state_dir (see the log)");
		goto unbind;
	}
	/* The old sockets close here; the old workers' copies stay open in
	 * those processes until they are gone. */
	if (rebind) {
		for (unsigned s = 0; s < n_slots; s++)
			close_slot(s, cur_cfg->listen_count);
	} else {
		for (unsigned s = n; s < n_slots; s++)
			close_slot(s, cur_cfg->listen_count);
	}
	for (unsigned s = from; s < n; s++)
		memcpy(sockets[s], fresh[s], sizeof sockets[s]);
	/* From here the reload cannot fail: READY=1 and sluicectl's answer
	 * follow once the new generation accepts (sup_ready_cb). */
	sup_notify_reloading("");
	ready_owed = true;
	/* The old workers retire (SIGUSR1): their sessions carry on to
	 * their natural end; the new generation takes the sockets. */
	for (size_t i = 0; i < n_workers; i++) {
		workers[i].draining = true;
		kill(workers[i].pid, SIGUSR1);
	}
	memmove(old_cfgs + 1, old_cfgs, sizeof old_cfgs - sizeof old_cfgs[0]);
	old_cfgs[0] = cur_cfg;
	cur_cfg = next;
	n_slots = n;
	bank ^= 1;
	log_info("supervisor: configuration reloaded; starting %u workers", n);
	sup_settle_owed();
	for (unsigned s = 1; s <= n_slots; s++)
		spawn(s);
	return 0;
unbind:
	for (unsigned t = from; t < bound; t++)
		for (size_t i = 0; i < next->listen_count; i++)
			close(fresh[t][i]);
refused:
	log_err("reload: %s; keeping the running configuration", err);
	sdnotify_send("STATUS=reload refused: %s", err);
	free(next);
	return -1;
}

/* Before an upgrade: every listen address of the configuration the new
 * program will read that no socket here has already can be bound. After
 * the execve a failure to bind would end the supervisor with no way back,
 * so it is refused here, as a reload refuses it. Read with this program's
 * parser: a configuration it does not know (settings of the new version)
 * skips the check. 0, or -1 with the reason in err. */
static int upgrade_prebind(char *err, size_t cap)
{
	struct config *next = malloc(sizeof *next);
	char why[256];
	int rc = 0;
	if (!next || config_load(next, cfg_path, cfg_overrides, cfg_n_overrides, why,
				 sizeof why) != 0) {
		free(next);
		return 0;
	}
	for (size_t i = 0; i < next->listen_count && rc == 0; i++) {
		bool held = false;
		for (size_t j = 0; j < cur_cfg->listen_count && !held; j++)
			held = listener_matches(sockets[0][j], &next->listen[i]);
		int fd = held ? -1 : listener_bind(&next->listen[i]);
		if (!held && fd < 0) {
			snprintf(err, cap, "the new program could not listen on %s: %s",
				 next->listen[i].text, strerror(errno));
			rc = -1;
		}
		if (fd >= 0)
			close(fd);
	}
	free(next);
	return rc;
}

/* sluicectl upgrade and SIGUSR2: the installed program replaces this one
 * in this process (upgrade.h), with everything that must survive handed
 * over. Returns only on failure, -1 with the reason in err; the running
 * program then goes on as before. */
static int supervisor_upgrade(char *err, size_t cap)
{
	static struct upgrade_state st;
	if (stopping || settle_owed) {
		snprintf(err, cap, "%s", stopping ? "stopping"
				: "a reload or upgrade is still starting its workers; try again");
		return -1;
	}
	if (upgrade_check(err, cap) != 0 || upgrade_prebind(err, cap) != 0) {
		log_err("upgrade: %s; the running program goes on", err);
		sdnotify_send("STATUS=upgrade refused: %s", err);
		return -1;
	}
	memset(&st, 0, sizeof st);
	st.life[0] = life_pipe[0];
	st.life[1] = life_pipe[1];
	for (unsigned sl = 0; sl < n_slots; sl++)
		for (size_t i = 0; i < cur_cfg->listen_count; i++)
			st.listen[st.n_listen++] = sockets[sl][i];
	st.n_waiters = control_handover(&st.control_fd, st.waiters, UPGRADE_WAITERS_MAX);
	st.http_fd = metrics_http_fd();
	st.metrics_fd = metrics_fd();
	st.metrics_layout = metrics_layout();
	st.per_bank = metric_slots_per_bank;
	st.bank = bank;
	st.snapshot_fd = snapshot_fd();
	st.snapshot_layout = snapshot_layout();
	for (size_t i = 0; i < n_workers && i < UPGRADE_WORKERS_MAX; i++)
		st.workers[st.n_workers++] = (struct upgrade_worker){ workers[i].pid,
								      workers[i].slot,
								      workers[i].bank };
	snprintf(st.from, sizeof st.from, "%s", SLUICE_VERSION);
	sup_notify_reloading("\nSTATUS=upgrading");
	log_info("supervisor: upgrading: executing %s with %zu workers and %zu listening "
		 "sockets handed over", upgrade_path(), st.n_workers, st.n_listen);
	upgrade_exec(&st, sdnotify_env(), err, cap);
	log_err("upgrade: %s; the running program goes on", err);
	sdnotify_send("READY=1\nSTATUS=upgrade failed: %s", err);
	return -1;
}

static void sigusr2_cb(evutil_socket_t sig, short what, void *arg)
{
	char err[512];
	log_info("supervisor: SIGUSR2: upgrade");
	supervisor_upgrade(err, sizeof err);
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	char err[512];
	if (supervisor_reload(err, sizeof err) == 0)
		control_refresh(); /* the store may have moved */
}

/* sluicectl drain: as SIGTERM. */
static void supervisor_drain(void)
{
	sigterm_cb(SIGTERM, 0, NULL);
}

static const struct config *supervisor_config(void)
{
	return cur_cfg;
}

static const struct control_hooks supervisor_control = {
	supervisor_config, supervisor_reload, supervisor_upgrade, supervisor_drain,
};

/* Upgrade: each slot's sockets from those handed over where the address
 * is still configured (slot by slot, in the order handed), bound anew
 * where not; the others are closed here (the old workers keep their
 * copies until they retire). */
static int adopt_sockets(const struct config *cfg, struct upgrade_state *h)
{
	size_t adopted = 0;
	for (unsigned sl = 0; sl < n_slots; sl++)
		for (size_t i = 0; i < cfg->listen_count; i++) {
			int fd = -1;
			for (size_t j = 0; j < h->n_listen && fd < 0; j++)
				if (h->listen[j] >= 0 && listener_matches(h->listen[j], &cfg->listen[i])) {
					fd = h->listen[j];
					h->listen[j] = -1;
				}
			if (fd >= 0)
				adopted++;
			else if ((fd = listener_bind(&cfg->listen[i])) < 0) {
				log_err("cannot listen on %s: %s", cfg->listen[i].text, strerror(errno));
				return -1;
			}
			sockets[sl][i] = fd;
		}
	for (size_t j = 0; j < h->n_listen; j++)
		if (h->listen[j] >= 0)
			close(h->listen[j]);
	log_info("upgrade: %zu listening sockets taken over, %zu bound anew", adopted,
		 n_slots * cfg->listen_count - adopted);
	return 0;
}

/* Upgrade: the old program's workers, to reap and to retire once the new
 * generation accepts (sup_generation_ready). */
static void adopt_workers(const struct upgrade_state *h)
{
	for (size_t i = 0; i < h->n_workers && n_workers < SUP_MAX_WORKERS * 2; i++)
		workers[n_workers++] = (struct sup_worker){
			.pid = h->workers[i].pid, .slot = h->workers[i].slot,
			.bank = h->workers[i].bank, .draining = true, .ready = true,
			.retire_owed = true, .started_ms = mono_ms(),
		};
}

int supervisor_run(struct config *cfg, const char *path,
		   char *const *overrides, size_t n_overrides)
{
	static struct upgrade_state handed;
	char err[512];
	int up = upgrade_take(&handed, err, sizeof err);
	if (up < 0) {
		log_err("upgrade: cannot read what the program before handed over (%s); "
			"starting afresh", err);
		up = 0;
	}
	cur_cfg = cfg;
	cfg_path = path;
	cfg_overrides = overrides;
	cfg_n_overrides = n_overrides;
	n_slots = effective_workers(cfg);
	metric_slots_per_bank = n_slots < 64 ? 64 : n_slots + 1;
	if (up && handed.per_bank > 0) {
		/* The shared memory's layout is the old program's. */
		metric_slots_per_bank = handed.per_bank;
		if (n_slots > metric_slots_per_bank)
			n_slots = metric_slots_per_bank;
		bank = handed.bank ^ 1;
	}
	if (make_dir(cfg->spool_dir, cfg) != 0 || make_dir(cfg->state_dir, cfg) != 0)
		return 1;
	/* After an upgrade the old workers' spill files are in use. */
	if (!up)
		spool_clean_dir(cfg->spool_dir, 0);
	bool kept_metrics = up && metrics_adopt(handed.metrics_fd, metric_slots_per_bank * 2,
						handed.metrics_layout) == 0;
	bool kept_snapshot = up && snapshot_adopt(handed.snapshot_fd,
						  metric_slots_per_bank * 2 + 1,
						  handed.snapshot_layout) == 0;
	if (up && !kept_metrics)
		log_warn("upgrade: the new program counts other metrics; counters start "
			 "again from zero");
	if ((!kept_metrics && metrics_init(metric_slots_per_bank * 2) != 0) ||
	    (!kept_snapshot && snapshot_init(metric_slots_per_bank * 2 + 1) != 0) ||
	    acl_init() != 0) {
		log_err("cannot map metrics");
		return 1;
	}
	if (up) {
		if (adopt_sockets(cfg, &handed) != 0)
			return 1;
	} else {
		for (unsigned s = 0; s < n_slots; s++)
			if (bind_slot(cfg, s) != 0)
				return 1;
	}
	if (up && handed.life[0] >= 0 && handed.life[1] >= 0) {
		life_pipe[0] = handed.life[0];
		life_pipe[1] = handed.life[1];
	} else if (pipe2(life_pipe, O_CLOEXEC) != 0) {
		log_err("cannot create the workers' pipe: %s", strerror(errno));
		return 1;
	}
	if (sdnotify_init() != 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	if (!base)
		return 1;
	struct event *ready = event_new(base, sdnotify_ready_fd(), EV_READ | EV_PERSIST,
					sup_ready_cb, NULL);
	settle_ev = evtimer_new(base, sup_settle_timeout_cb, NULL);
	if (!ready || !settle_ev || event_add(ready, NULL) != 0)
		return 1;
	if (sdnotify_enabled()) {
		struct event *status = event_new(base, -1, EV_PERSIST, sup_status_cb, NULL);
		struct timeval every = {SUP_STATUS_INTERVAL_S, 0};
		if (!status || event_add(status, &every) != 0)
			return 1;
	}
	if (up)
		adopt_workers(&handed);
	struct event *chld = evsignal_new(base, SIGCHLD, sigchld_cb, NULL);
	struct event *term = evsignal_new(base, SIGTERM, sigterm_cb, NULL);
	struct event *intr = evsignal_new(base, SIGINT, sigterm_cb, NULL);
	struct event *hup = evsignal_new(base, SIGHUP, sighup_cb, NULL);
	struct event *usr2 = evsignal_new(base, SIGUSR2, sigusr2_cb, NULL);
	restart_ev = evtimer_new(base, respawn_missing, NULL);
	if (!chld || !term || !intr || !hup || !usr2 || !restart_ev ||
	    evsignal_add(chld, NULL) || evsignal_add(term, NULL) ||
	    evsignal_add(intr, NULL) || evsignal_add(hup, NULL) || evsignal_add(usr2, NULL))
		return 1;
	/* Signals that came during the execve wait no longer; old workers
	 * that exited meanwhile are reaped now. */
	upgrade_unblock_signals();
	if (up)
		sigchld_cb(SIGCHLD, 0, NULL);
	if (up && handed.http_fd >= 0) {
		if (cfg->metrics_enabled && listener_matches(handed.http_fd, &cfg->metrics_listen))
			metrics_http_adopt(handed.http_fd);
		else
			close(handed.http_fd);
	}
	if (cfg->metrics_enabled &&
	    metrics_http_start(base, &cfg->metrics_listen) != 0) {
		log_err("cannot serve metrics on %s", cfg->metrics_listen.text);
		/* After an upgrade there is no way back: run without. */
		if (!up)
			return 1;
	}
	if (up)
		control_adopt(handed.control_fd, handed.waiters, handed.n_waiters);
	if (status_start(base, metrics_http_server()) != 0 ||
	    control_start(base, cfg->state_dir, &supervisor_control) != 0)
		return 1;
	log_info("sluice %s: starting %u workers, listening on %s%s, backend %s", SLUICE_VERSION,
		 n_slots, cfg->listen[0].text, cfg->listen_count > 1 ? " ..." : "",
		 cfg->backend.text);
	if (up) {
		char running[PATH_MAX + 64];
		sup_running(running, sizeof running);
		log_info("supervisor: upgraded in place from sluice %s: %s; %zu old workers "
			 "serve until the new ones accept", handed.from[0] ? handed.from : "?",
			 running, n_workers);
		sup_settle_owed();
	}
	for (unsigned s = 1; s <= n_slots; s++)
		/* After an upgrade there is no way back: the old workers
		 * serve meanwhile, and spawn has set the slot's next try. */
		if (spawn(s) != 0 && !up)
			return 1;
	event_base_dispatch(base);
	control_stop();
	log_info("sluice: stopped");
	return 0;
}
