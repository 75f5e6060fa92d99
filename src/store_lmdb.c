/*
 * store_lmdb: local reputation and the pass cache, shared by every worker
 * on the machine, in one LMDB environment under state_dir. One
 * implementation of struct store_ops (store.h), reached only through it.
 *
 * Exports store_lmdb_open, store_lmdb_ops and store_lmdb_admin.
 *
 * Reads run on the loop (a read transaction is a memory-mapped lookup);
 * writes go to the worker pool (workq) because a write transaction syncs.
 * The environment is opened in each worker after fork (LMDB environments
 * must not cross fork), with stale readers of dead workers cleared
 * (mdb_reader_check) at open.
 *
 * Layout. One file set: <state_dir>/sluice.mdb and sluice.mdb-lock
 * (MDB_NOSUBDIR, mode 0600, created by the worker's own unprivileged user
 * in the directory the supervisor made for it). Named databases:
 *   "rep"   key -> {double good, bad, content, int64 updated_ms}
 *   "pass"  client key -> int64 expires_ms
 *   "meta"  "pruned_ms" -> int64, when MAP_FULL last forced a prune
 * Keys are binary, tagged by family and kind so that they cannot collide,
 * then the prefix length and the address bytes it covers
 * (reputation_keys: the client is an IPv4 address or an IPv6 /64, its
 * network an IPv4 /24 or an IPv6 /48, by default):
 *   'A' bits bytes  IPv4 client     'N' bits bytes  IPv4 network
 *   'a' bits bytes  IPv6 client     'n' bits bytes  IPv6 network
 * An IPv4-mapped IPv6 address is the IPv4 address. Records of the layout
 * before outcomes (24 bytes, keys without the length) are never read again
 * and go with the next prune. Values are host-endian
 * (the file never leaves the machine) and copied out with memcpy (LMDB
 * gives no alignment); a value of the wrong size or with a non-finite or
 * negative weight reads as "no record" and is overwritten by the next write.
 * Times are CLOCK_REALTIME milliseconds, so they mean the same in every
 * process and after a restart.
 *
 * Reputation: the arithmetic is reputation.c's. A write reads the client's
 * and its network's records, applies the event to both (reputation_apply:
 * the network gains an address only when the client was not counted yet)
 * and writes both back, in the batch's one write transaction, so parallel
 * sessions of one address count it once.
 *
 * Pass cache: a grant never shortens an existing pass
 * (reputation_pass_merge, whichever process writes first).
 *
 * Threads and ownership. Every function runs on the loop thread. Reads use
 * one cached read transaction, renewed per call and reset after it (a reset
 * transaction pins no snapshot); they see committed data only, so a record
 * shows up one pool round trip after it was recorded. A read is a lookup in
 * the mapped file; only a cold page can make it wait for the disk.
 * MDB_NOTLS ties the reader slot to that transaction, not to the thread,
 * because pool threads write while the loop reads.
 * Writes are collected on the loop into a batch (struct store_lmdb_batch) and at
 * most one batch is in flight on the workq: its work() runs one write
 * transaction for all of it (LMDB has one writer at a time anyway, so more
 * jobs would only park pool threads that spill files need, and batching
 * turns N fsyncs into one under load). Its done(), on the loop, reports,
 * frees the batch and submits what accumulated meanwhile. Batches leave at
 * least write_gap_ms apart (a timer submits the one that waited): under
 * load a fixed number of transactions a second, not one per message; a
 * record after a quiet spell leaves at once. The batch owns
 * its ops; work() touches only the batch and the environment; all logging,
 * rate limiting and counters live on the loop (done() and the callers).
 * The pending batch is bounded (STORE_LMDB_BATCH_MAX ops): past it records are
 * dropped, counted and logged at a limited rate. A batch the workq refuses
 * (out of memory, or stopping at shutdown) stays pending: it is retried on
 * the next record and written by store_lmdb_close, and what comes on top is
 * dropped by the bound.
 *
 * store_lmdb_close writes the pending batch synchronously (shutdown or reload
 * is where blocking is allowed) and never touches the workq, so it may run
 * before or after workq_free. If a batch is in flight it only marks the
 * store closing; that batch's done() (a loop turn later, or inside
 * workq_free) closes the environment and frees the store.
 *
 * Faults (HOSTILE L.109, M.112). store_lmdb_open runs mdb_reader_check, which
 * frees reader slots of killed workers; every STORE_LMDB_READER_CHECK_MS a write
 * job runs it again, and a read that finds the table full runs it and
 * retries. A writer killed mid-transaction is released by LMDB's robust
 * mutex. MDB_MAP_FULL: the job prunes (deletes reputation records whose
 * decayed weight is under STORE_LMDB_PRUNE_WEIGHT and expired passes, in one
 * transaction, then notes the time in "meta" so that the freed pages are
 * reusable) and retries the batch once; if it still fails (or on
 * ENOSPC/EDQUOT) writes are dropped for STORE_LMDB_FULL_PAUSE_MS, logged once
 * per pause, and reads go on. The prune is a full scan, on a pool thread,
 * and only on MAP_FULL. MDB_MAP_RESIZED (another process grew the
 * map) is adopted on the loop when no write is in flight. MDB_PANIC marks
 * the store broken: from then on it answers "unknown" and writes nothing.
 * A store that cannot be opened (missing dir, permissions, not an LMDB
 * file, version mismatch) gives NULL with a logged reason (the facade then
 * answers "unknown" and drops writes, so mail never waits on the store).
 *
 * Rejected: a subdirectory layout (one more thing for the supervisor to
 * create and chown); MDB_WRITEMAP (a full disk under a sparse map is a
 * SIGBUS instead of an error); MDB_NOSYNC (a system crash may corrupt the
 * file; MDB_NOMETASYNC only loses the last commit, which reputation can
 * afford); growing the map on MDB_MAP_FULL (remapping is unsafe while the
 * loop may be reading; the operator sets the size); recreating a corrupt
 * file automatically (workers open it concurrently, one could unlink what
 * another has mapped); one write job per record (serialises on LMDB's
 * writer lock inside the pool). A process must not open the same store
 * twice at once (closing one environment drops the process's fcntl locks
 * of the other): close before reopening on reload.
 */
#include "store_lmdb.h"

#include <errno.h>
#include <event2/event.h>
#include <lmdb.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mstime.h"
#include "ratelog.h"
#include "workq.h"

#define STORE_LMDB_FILE             "sluice.mdb"
#define STORE_LMDB_FILE_MODE        0600
#define STORE_LMDB_MAP_SIZE_DEFAULT (64ULL * 1024 * 1024)
#define STORE_LMDB_MAX_DBS          3

/* Ops in the batch waiting on the loop (one per record). At 72 bytes an
 * op this is 72 KiB, and one write transaction absorbs it easily. */
#define STORE_LMDB_BATCH_INIT 16
#define STORE_LMDB_BATCH_MAX  1024

#define STORE_LMDB_FULL_PAUSE_MS   60000 /* no writes after MAP_FULL/ENOSPC */
#define STORE_LMDB_READER_CHECK_MS 60000 /* periodic mdb_reader_check */
#define STORE_LMDB_LOG_INTERVAL_MS 60000 /* one line per kind of failure */

#define STORE_LMDB_KEY_MAX 18 /* 'a', prefix length, 16 bytes */
#define STORE_LMDB_PATH_MAX 4096 /* <state_dir>/sluice.mdb, administration */

#define STORE_LMDB_META_PRUNED "pruned_ms" /* "meta": time of the last prune */

struct store_lmdb_key {
	unsigned char len;
	unsigned char b[STORE_LMDB_KEY_MAX];
};

/* The "rep" value, stored as these 32 bytes. */
struct store_lmdb_rep {
	double good;
	double bad;
	double content;
	int64_t updated_ms;
};
_Static_assert(sizeof(struct store_lmdb_rep) == 32, "rep record has padding");

enum store_lmdb_op_kind { STORE_LMDB_OP_REP, STORE_LMDB_OP_PASS, STORE_LMDB_OP_REVOKE };

struct store_lmdb_op {
	struct store_lmdb_key key;  /* the client */
	struct store_lmdb_key net;  /* REP: its network */
	unsigned char kind;         /* enum store_lmdb_op_kind */
	struct reputation_delta d;  /* REP: the event */
	int64_t at_ms;              /* REP: event time; PASS: expiry */
};

struct store_lmdb_batch {
	struct store_lmdb *st;
	int64_t now_ms;     /* when submitted: the prune's "now" */
	bool check_readers; /* run mdb_reader_check first */
	/* Results: written by work(), read by done(). */
	int rc;
	const char *where;
	bool map_full;
	size_t pruned;
	int readers_cleared;
	size_t n, cap;
	struct store_lmdb_op ops[];
};

struct store_lmdb {
	MDB_env *env;
	MDB_dbi rep, pass, meta;
	struct workq *wq;
	struct event *gap_timer;   /* submits the batch that waited out the gap */
	long write_gap_ms;         /* least time between two batches' submits */
	int64_t last_submit_ms;    /* monotonic */
	long halflife_ms;
	unsigned long long map_size;
	char path[512];

	/* Loop thread only from here on. */
	MDB_txn *rtxn;             /* cached read txn, reset between calls */
	struct store_lmdb_batch *next;  /* collected, not yet submitted */
	bool inflight;             /* a batch is on the workq */
	bool closing;              /* store_lmdb_close ran; done() frees */
	bool broken;               /* MDB_PANIC: do nothing any more */
	int64_t paused_until_ms;   /* drop writes until then */
	int64_t next_reader_check_ms;
	unsigned long long dropped, failed; /* ops never written */
	struct ratelog log_drop, log_fail, log_read, log_full;
};

static bool store_lmdb_ratelog_ok(struct ratelog *rl, int64_t now,
				  unsigned long *suppressed)
{
	return ratelog_ok(rl, now, STORE_LMDB_LOG_INTERVAL_MS, suppressed);
}

static void store_lmdb_key(struct store_lmdb_key *key, char tag,
			   const struct ipaddr *a, unsigned bits)
{
	size_t n = (bits + 7) / 8;
	key->b[0] = (unsigned char)tag;
	key->b[1] = (unsigned char)bits;
	memcpy(key->b + 2, a->b, n);
	key->len = (unsigned char)(2 + n);
}

/* host: the client's key; net: its network's. */
static void store_lmdb_keys(const struct reputation_keys *k,
			    struct store_lmdb_key *host,
			    struct store_lmdb_key *net)
{
	bool v6 = k->host.family == AF_INET6;
	store_lmdb_key(host, v6 ? 'a' : 'A', &k->host, k->host_bits);
	store_lmdb_key(net, v6 ? 'n' : 'N', &k->net, k->net_bits);
}

/* A stored reputation value, or false if it is not one we wrote. */
static bool store_lmdb_rep_decode(const MDB_val *v,
				  struct reputation_evidence *ev)
{
	struct store_lmdb_rep r;

	if (v->mv_size != sizeof r)
		return false;
	memcpy(&r, v->mv_data, sizeof r);
	*ev = (struct reputation_evidence){ r.good, r.bad, r.content, r.updated_ms };
	return reputation_valid(ev);
}

static bool store_lmdb_pass_decode(const MDB_val *v, int64_t *expires)
{
	if (v->mv_size != sizeof *expires)
		return false;
	memcpy(expires, v->mv_data, sizeof *expires);
	return true;
}

/* ---- writes: pool thread ---------------------------------------------- */

/* One record into *ev; false when absent or not one we wrote. */
static int store_lmdb_rep_get(struct store_lmdb *st, MDB_txn *txn,
			      const struct store_lmdb_key *key,
			      struct reputation_evidence *ev, bool *have)
{
	MDB_val k = { key->len, (void *)key->b }, v;
	int rc = mdb_get(txn, st->rep, &k, &v);
	*have = rc == 0 && store_lmdb_rep_decode(&v, ev);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int store_lmdb_rep_put(struct store_lmdb *st, MDB_txn *txn,
			      const struct store_lmdb_key *key,
			      const struct reputation_evidence *ev)
{
	struct store_lmdb_rep r = { ev->good, ev->bad, ev->content, ev->updated_ms };
	MDB_val k = { key->len, (void *)key->b }, v = { sizeof r, &r };
	return mdb_put(txn, st->rep, &k, &v, 0);
}

static int store_lmdb_apply_rep(struct store_lmdb *st, MDB_txn *txn,
				const struct store_lmdb_op *op)
{
	struct reputation_evidence host, net, host_out, net_out;
	bool have_host, have_net;

	int rc = store_lmdb_rep_get(st, txn, &op->key, &host, &have_host);
	if (rc == 0)
		rc = store_lmdb_rep_get(st, txn, &op->net, &net, &have_net);
	if (rc != 0)
		return rc;
	reputation_apply(have_host ? &host : NULL, have_net ? &net : NULL, &op->d,
			 op->at_ms, st->halflife_ms, &host_out, &net_out);
	rc = store_lmdb_rep_put(st, txn, &op->key, &host_out);
	return rc == 0 ? store_lmdb_rep_put(st, txn, &op->net, &net_out) : rc;
}

static int store_lmdb_apply_revoke(struct store_lmdb *st, MDB_txn *txn,
				   const struct store_lmdb_op *op)
{
	MDB_val k = { op->key.len, (void *)op->key.b };
	int rc = mdb_del(txn, st->pass, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int store_lmdb_apply_pass(struct store_lmdb *st, MDB_txn *txn,
				 const struct store_lmdb_op *op)
{
	MDB_val k = { op->key.len, (void *)op->key.b }, v;
	int64_t expires = op->at_ms, old;

	int rc = mdb_get(txn, st->pass, &k, &v);
	if (rc == 0) {
		if (store_lmdb_pass_decode(&v, &old) &&
		    reputation_pass_merge(old, expires) != expires)
			return 0;
	} else if (rc != MDB_NOTFOUND) {
		return rc;
	}
	v.mv_size = sizeof expires;
	v.mv_data = &expires;
	return mdb_put(txn, st->pass, &k, &v, 0);
}

/* The whole batch in one write transaction: all of it or none. */
static int store_lmdb_apply(struct store_lmdb *st, struct store_lmdb_batch *b)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc != 0) {
		b->where = "txn_begin";
		return rc;
	}
	for (size_t i = 0; i < b->n; i++) {
		const struct store_lmdb_op *op = &b->ops[i];
		rc = op->kind == STORE_LMDB_OP_REP	? store_lmdb_apply_rep(st, txn, op)
		     : op->kind == STORE_LMDB_OP_PASS ? store_lmdb_apply_pass(st, txn, op)
						       : store_lmdb_apply_revoke(st, txn, op);
		if (rc != 0) {
			b->where = "put";
			mdb_txn_abort(txn);
			return rc;
		}
	}
	rc = mdb_txn_commit(txn); /* frees txn either way */
	if (rc != 0)
		b->where = "commit";
	return rc;
}

static bool store_lmdb_rep_stale(const struct store_lmdb *st, const MDB_val *v,
				 int64_t now)
{
	struct reputation_evidence ev;

	return !store_lmdb_rep_decode(v, &ev) ||
	       reputation_stale(&ev, now, st->halflife_ms);
}

static bool store_lmdb_pass_stale(const struct store_lmdb *st, const MDB_val *v,
			     int64_t now)
{
	int64_t expires;

	(void)st; /* the prune's predicates share one signature */
	return !store_lmdb_pass_decode(v, &expires) ||
	       !reputation_passed(expires, now);
}

static int store_lmdb_prune_db(const struct store_lmdb *st, MDB_txn *txn, MDB_dbi dbi,
			  bool (*stale)(const struct store_lmdb *, const MDB_val *,
					int64_t),
			  int64_t now, size_t *pruned)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != 0)
		return rc;
	/* After mdb_cursor_del the cursor already sits on the next record
	 * and MDB_NEXT does not skip it. */
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		if (!stale(st, &v, now))
			continue;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0)
			break;
		(*pruned)++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Deletes what no longer carries information. A full scan, but it runs
 * only on MAP_FULL, on a pool thread, at most once per pause. */
static int store_lmdb_prune(struct store_lmdb *st, int64_t now, size_t *pruned)
{
	MDB_txn *txn;
	size_t n = 0;
	int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	rc = store_lmdb_prune_db(st, txn, st->rep, store_lmdb_rep_stale, now, &n);
	if (rc == 0)
		rc = store_lmdb_prune_db(st, txn, st->pass, store_lmdb_pass_stale, now, &n);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	rc = mdb_txn_commit(txn);
	if (rc != 0 || n == 0)
		return rc;
	*pruned = n;
	/* Pages freed by transaction N are reusable from N + 2 on (N + 1
	 * must still be able to fall back to N - 1's meta page), so the
	 * retry needs one commit in between: this one notes the prune. */
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	MDB_val k = { sizeof STORE_LMDB_META_PRUNED - 1, (void *)STORE_LMDB_META_PRUNED };
	MDB_val v = { sizeof now, &now };
	rc = mdb_put(txn, st->meta, &k, &v, 0);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

static void store_lmdb_write_work(void *arg)
{
	struct store_lmdb_batch *b = arg;
	struct store_lmdb *st = b->st;

	if (b->check_readers)
		mdb_reader_check(st->env, &b->readers_cleared);
	b->rc = store_lmdb_apply(st, b);
	if (b->rc == MDB_MAP_FULL) {
		b->map_full = true;
		if (store_lmdb_prune(st, b->now_ms, &b->pruned) == 0 &&
		    b->pruned > 0)
			b->rc = store_lmdb_apply(st, b);
	}
}

/* ---- the loop side -------------------------------------------------- */

static void store_lmdb_destroy(struct store_lmdb *st)
{
	if (st->gap_timer)
		event_free(st->gap_timer);
	if (st->rtxn)
		mdb_txn_abort(st->rtxn);
	free(st->next);
	mdb_env_close(st->env);
	free(st);
}

/* Another process grew the map: adopt its size. Only while this process
 * has no transaction at all (the loop is here, so no read; no batch in
 * flight, so no write). */
static int store_lmdb_adopt_mapsize(struct store_lmdb *st)
{
	if (st->inflight)
		return EBUSY;
	if (st->rtxn) {
		mdb_txn_abort(st->rtxn);
		st->rtxn = NULL;
	}
	return mdb_env_set_mapsize(st->env, 0);
}

static void store_lmdb_drop(struct store_lmdb *st, size_t n, const char *why)
{
	unsigned long sup;

	st->dropped += n;
	if (store_lmdb_ratelog_ok(&st->log_drop, mstime_real(), &sup))
		log_warn("store: write dropped reason=%s ops=%zu "
			 "dropped_total=%llu suppressed=%lu",
			 why, n, st->dropped, sup);
}

/* done() and store_lmdb_close: what a finished batch means for the store. */
static void store_lmdb_report(struct store_lmdb *st, const struct store_lmdb_batch *b,
			 int64_t now)
{
	unsigned long sup;

	if (b->readers_cleared > 0)
		log_warn("store: cleared stale readers count=%d path=%s",
			 b->readers_cleared, st->path);
	switch (b->rc) {
	case 0:
		if (b->map_full && store_lmdb_ratelog_ok(&st->log_full, now, &sup))
			log_warn("store: map full, pruned=%zu, write retried "
				 "map_size=%llu suppressed=%lu", b->pruned,
				 st->map_size, sup);
		return;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		/* Once per pause: the pause itself is the rate limit. */
		st->failed += b->n;
		st->paused_until_ms = now + STORE_LMDB_FULL_PAUSE_MS;
		log_warn("store: full err=\"%s\" map_size=%llu pruned=%zu "
			 "ops=%zu failed_total=%llu: writes paused for %d s",
			 mdb_strerror(b->rc), st->map_size, b->pruned, b->n,
			 st->failed, STORE_LMDB_FULL_PAUSE_MS / 1000);
		return;
	case MDB_PANIC:
		st->broken = true;
		st->failed += b->n;
		log_err("store: fatal LMDB error at=%s path=%s: running "
			"without reputation", b->where ? b->where : "?",
			st->path);
		return;
	case MDB_MAP_RESIZED:
		store_lmdb_adopt_mapsize(st);
		break;
	default:
		break;
	}
	st->failed += b->n;
	if (store_lmdb_ratelog_ok(&st->log_fail, now, &sup))
		log_warn("store: write failed at=%s err=\"%s\" ops=%zu "
			 "failed_total=%llu suppressed=%lu",
			 b->where ? b->where : "?", mdb_strerror(b->rc), b->n,
			 st->failed, sup);
}

static void store_lmdb_write_done(void *arg);

/* Submits the collected batch unless one is in flight (its done() comes
 * back here), the last one left less than write_gap_ms ago (the gap's
 * timer comes back here) or writes are paused. */
static void store_lmdb_flush(struct store_lmdb *st)
{
	struct store_lmdb_batch *b = st->next;
	int64_t now = mstime_real();
	unsigned long sup;

	if (st->inflight || !b)
		return;
	int64_t wait = st->gap_timer
		? st->last_submit_ms + st->write_gap_ms - mstime_mono() : 0;
	if (wait > 0) {
		struct timeval tv = mstime_tv(wait);
		/* Without the timer, submit now rather than wait for a record
		 * that may never come. */
		if (evtimer_pending(st->gap_timer, NULL) ||
		    evtimer_add(st->gap_timer, &tv) == 0)
			return;
	}
	st->next = NULL;
	if (st->broken || now < st->paused_until_ms) {
		if (!st->broken)
			store_lmdb_drop(st, b->n, "paused");
		free(b);
		return;
	}
	b->now_ms = now;
	b->check_readers = now >= st->next_reader_check_ms;
	if (b->check_readers)
		st->next_reader_check_ms = now + STORE_LMDB_READER_CHECK_MS;
	if (workq_submit(st->wq, store_lmdb_write_work, store_lmdb_write_done, b) != 0) {
		/* Keep it: the next flush retries, store_lmdb_close writes it (the
		 * workq refuses while stopping, before the store is closed),
		 * and the bound in store_lmdb_push drops what comes on top. */
		st->next = b;
		if (store_lmdb_ratelog_ok(&st->log_drop, now, &sup))
			log_warn("store: workq refused a write ops=%zu "
				 "suppressed=%lu", b->n, sup);
		return;
	}
	st->inflight = true;
	st->last_submit_ms = mstime_mono();
}

static void store_lmdb_gap_over(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	store_lmdb_flush(arg);
}

static void store_lmdb_write_done(void *arg)
{
	struct store_lmdb_batch *b = arg;
	struct store_lmdb *st = b->st;

	st->inflight = false;
	store_lmdb_report(st, b, mstime_real());
	free(b);
	if (st->closing)
		store_lmdb_destroy(st);
	else
		store_lmdb_flush(st);
}

/* Appends n ops for one call, all or none, and kicks the writer. */
static void store_lmdb_push(struct store_lmdb *st, const struct store_lmdb_op *ops, size_t n)
{
	struct store_lmdb_batch *b = st->next;
	size_t have = b ? b->n : 0;

	if (st->broken) {
		st->dropped += n;
		return;
	}
	if (have + n > STORE_LMDB_BATCH_MAX) {
		store_lmdb_drop(st, n, "backlog");
		return;
	}
	if (!b || have + n > b->cap) {
		size_t cap = b ? b->cap * 2 : STORE_LMDB_BATCH_INIT;
		if (cap > STORE_LMDB_BATCH_MAX)
			cap = STORE_LMDB_BATCH_MAX;
		struct store_lmdb_batch *nb =
			realloc(b, sizeof *nb + cap * sizeof nb->ops[0]);
		if (!nb) {
			store_lmdb_drop(st, n, "nomem");
			return;
		}
		if (!b) {
			memset(nb, 0, sizeof *nb);
			nb->st = st;
		}
		nb->cap = cap;
		st->next = b = nb;
	}
	memcpy(&b->ops[b->n], ops, n * sizeof *ops);
	b->n += n;
	store_lmdb_flush(st);
}

/* ---- reads: loop thread ----------------------------------------------- */

static void store_lmdb_read_failed(struct store_lmdb *st, const char *where, int rc)
{
	unsigned long sup;

	if (rc == MDB_PANIC && !st->broken) {
		st->broken = true;
		log_err("store: fatal LMDB error at=%s path=%s: running "
			"without reputation", where, st->path);
		return;
	}
	if (store_lmdb_ratelog_ok(&st->log_read, mstime_real(), &sup))
		log_warn("store: read failed at=%s err=\"%s\" suppressed=%lu",
			 where, mdb_strerror(rc), sup);
}

static int store_lmdb_read_txn(struct store_lmdb *st)
{
	if (st->rtxn) {
		int rc = mdb_txn_renew(st->rtxn);
		if (rc == 0)
			return 0;
		mdb_txn_abort(st->rtxn);
		st->rtxn = NULL;
		if (rc != MDB_MAP_RESIZED)
			return rc;
		/* fall through: begin adopts the new size */
	}
	return mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
}

/* The read transaction, or NULL (then the caller answers "unknown"). */
static MDB_txn *store_lmdb_read_begin(struct store_lmdb *st)
{
	if (st->broken)
		return NULL;
	int rc = store_lmdb_read_txn(st);
	if (rc == MDB_MAP_RESIZED && store_lmdb_adopt_mapsize(st) == 0) {
		rc = store_lmdb_read_txn(st);
	} else if (rc == MDB_READERS_FULL) {
		int dead = 0;
		mdb_reader_check(st->env, &dead);
		if (dead > 0) {
			log_warn("store: cleared stale readers count=%d "
				 "path=%s", dead, st->path);
			rc = store_lmdb_read_txn(st);
		}
	}
	if (rc != 0) {
		st->rtxn = NULL;
		store_lmdb_read_failed(st, "txn_begin", rc);
		return NULL;
	}
	return st->rtxn;
}

/* Reset, not abort: keeps the reader slot, pins no snapshot. */
static void store_lmdb_read_end(struct store_lmdb *st)
{
	mdb_txn_reset(st->rtxn);
}

/* One record, or false (absent, damaged or unreadable). */
static bool store_lmdb_get(struct store_lmdb *st, MDB_txn *txn, MDB_dbi dbi,
		      const struct store_lmdb_key *key, MDB_val *v)
{
	MDB_val k = { key->len, (void *)key->b };
	int rc = mdb_get(txn, dbi, &k, v);
	if (rc != 0 && rc != MDB_NOTFOUND)
		store_lmdb_read_failed(st, "get", rc);
	return rc == 0;
}

/* store_ops.read: the address's and its network's records and its pass,
 * in one read transaction. */
static bool store_lmdb_read(void *impl, const struct reputation_keys *a,
			    struct store_records *r)
{
	struct store_lmdb *st = impl;
	struct store_lmdb_key host, net;
	MDB_val v;

	store_lmdb_keys(a, &host, &net);
	MDB_txn *txn = store_lmdb_read_begin(st);
	if (!txn)
		return false;
	r->have_host = store_lmdb_get(st, txn, st->rep, &host, &v) &&
		       store_lmdb_rep_decode(&v, &r->host);
	r->have_net = store_lmdb_get(st, txn, st->rep, &net, &v) &&
		      store_lmdb_rep_decode(&v, &r->net);
	int64_t expires = 0;
	r->have_pass = store_lmdb_get(st, txn, st->pass, &host, &v) &&
		       store_lmdb_pass_decode(&v, &expires);
	r->pass_expires_ms = expires;
	store_lmdb_read_end(st);
	return true;
}

static void store_lmdb_record(void *impl, const struct reputation_keys *a,
			     const struct reputation_delta *d, long long at_ms)
{
	struct store_lmdb_op op;

	memset(&op, 0, sizeof op);
	store_lmdb_keys(a, &op.key, &op.net);
	op.kind = STORE_LMDB_OP_REP;
	op.d = *d;
	op.at_ms = at_ms;
	store_lmdb_push(impl, &op, 1);
}

static void store_lmdb_pass(void *impl, const struct reputation_keys *a,
			    long long expires_ms, long ttl_ms)
{
	struct store_lmdb_op op;

	memset(&op, 0, sizeof op);
	store_lmdb_keys(a, &op.key, &op.net);
	op.kind = STORE_LMDB_OP_PASS;
	op.at_ms = expires_ms;
	store_lmdb_push(impl, &op, 1);
}

static void store_lmdb_revoke(void *impl, const struct reputation_keys *a)
{
	struct store_lmdb_op op;

	memset(&op, 0, sizeof op);
	store_lmdb_keys(a, &op.key, &op.net);
	op.kind = STORE_LMDB_OP_REVOKE;
	store_lmdb_push(impl, &op, 1);
}

/* ---- open and close ------------------------------------------------- */

static int store_lmdb_open_dbis(struct store_lmdb *st)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	rc = mdb_dbi_open(txn, "rep", MDB_CREATE, &st->rep);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "pass", MDB_CREATE, &st->pass);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

struct store_lmdb *store_lmdb_open(const char *dir, struct event_base *base,
				   struct workq *wq, long halflife_ms,
				   unsigned long long map_size, long write_gap_ms)
{
	int rc, dead = 0;
	const char *step;

	if (!dir || !*dir || !wq) {
		log_err("store: no state_dir or no work queue: running "
			"without reputation");
		return NULL;
	}
	struct store_lmdb *st = calloc(1, sizeof *st);
	if (!st) {
		log_err("store: out of memory: running without reputation");
		return NULL;
	}
	int n = snprintf(st->path, sizeof st->path, "%s/%s", dir, STORE_LMDB_FILE);
	if (n < 0 || (size_t)n >= sizeof st->path) {
		log_err("store: state_dir too long: running without "
			"reputation");
		free(st);
		return NULL;
	}
	st->wq = wq;
	st->halflife_ms = halflife_ms;
	if (write_gap_ms > 0 && base) {
		st->gap_timer = evtimer_new(base, store_lmdb_gap_over, st);
		if (!st->gap_timer) {
			log_err("store: out of memory: running without "
				"reputation");
			free(st);
			return NULL;
		}
		st->write_gap_ms = write_gap_ms;
	}
	st->map_size = map_size ? map_size : STORE_LMDB_MAP_SIZE_DEFAULT;

	step = "env_create";
	rc = mdb_env_create(&st->env);
	if (rc != 0) {
		st->env = NULL;
		goto fail;
	}
	step = "set_mapsize";
	rc = mdb_env_set_mapsize(st->env, (size_t)st->map_size);
	if (rc == 0) {
		step = "set_maxdbs";
		rc = mdb_env_set_maxdbs(st->env, STORE_LMDB_MAX_DBS);
	}
	if (rc == 0) {
		step = "env_open";
		rc = mdb_env_open(st->env, st->path,
				  MDB_NOSUBDIR | MDB_NOTLS | MDB_NOMETASYNC,
				  STORE_LMDB_FILE_MODE);
	}
	if (rc == 0) {
		step = "reader_check";
		rc = mdb_reader_check(st->env, &dead);
	}
	if (rc == 0) {
		step = "dbi_open";
		rc = store_lmdb_open_dbis(st);
	}
	if (rc != 0)
		goto fail;
	if (dead > 0)
		log_warn("store: cleared stale readers count=%d path=%s", dead,
			 st->path);
	st->next_reader_check_ms = mstime_real() + STORE_LMDB_READER_CHECK_MS;
	log_info("store: open path=%s map_size=%llu halflife_ms=%ld", st->path,
		 st->map_size, halflife_ms);
	return st;

fail:
	log_err("store: cannot open path=%s at=%s err=\"%s\": running without "
		"reputation", st->path, step, mdb_strerror(rc));
	if (st->env)
		mdb_env_close(st->env);
	if (st->gap_timer)
		event_free(st->gap_timer);
	free(st);
	return NULL;
}

static void store_lmdb_close(void *impl)
{
	struct store_lmdb *st = impl;

	if (st->rtxn) {
		mdb_txn_abort(st->rtxn);
		st->rtxn = NULL;
	}
	if (st->gap_timer)
		evtimer_del(st->gap_timer);
	struct store_lmdb_batch *b = st->next;
	st->next = NULL;
	if (b) {
		int64_t now = mstime_real();
		if (!st->broken && now >= st->paused_until_ms) {
			/* Synchronously: shutdown may block, and the workq
			 * may be gone already. A batch in flight only makes
			 * this wait for LMDB's writer lock. */
			b->now_ms = now;
			store_lmdb_write_work(b);
			store_lmdb_report(st, b, now);
		} else if (!st->broken) {
			store_lmdb_drop(st, b->n, "paused");
		}
		free(b);
	}
	st->closing = true;
	if (!st->inflight)
		store_lmdb_destroy(st);
}

const struct store_ops store_lmdb_ops = {
	.name = "lmdb",
	.read = store_lmdb_read,
	.apply = store_lmdb_record,
	.pass = store_lmdb_pass,
	.revoke = store_lmdb_revoke,
	.close = store_lmdb_close,
};

/* ---- administration (supervisor, sluicectl) -------------------------------
 *
 * Allow/deny entries live in one more named database, "acl" (the workers
 * never open it): key the canonical network text ("192.0.2.0/24"), value
 * three int64 (kind, expires_ms, added_ms). "forget" deletes the address's
 * keys in "rep" and "pass". Every call opens the environment, runs one
 * transaction and closes it (the supervisor forks workers and must not
 * hold an environment across a fork); as root, it hands files it created
 * to the workers' user. */

#define STORE_LMDB_ADMIN_MAX_DBS 8 /* rep, pass, meta, acl and room */

struct store_lmdb_admin {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi acl;
};

static int store_lmdb_admin_fail(struct store_lmdb_admin *db, const char *what, int rc,
				 char *err, size_t cap)
{
	snprintf(err, cap, "store: %s: %s", what, mdb_strerror(rc));
	if (db->txn)
		mdb_txn_abort(db->txn);
	if (db->env)
		mdb_env_close(db->env);
	db->txn = NULL;
	db->env = NULL;
	return -1;
}

/* Best effort: a failure shows as the workers' own open error. */
static void store_lmdb_admin_chown(const char *user, const char *path)
{
	struct passwd *pw;
	char lock[STORE_LMDB_PATH_MAX + 8];
	if (!user || !user[0] || geteuid() != 0 || !(pw = getpwnam(user)))
		return;
	snprintf(lock, sizeof lock, "%s-lock", path);
	if (chown(path, pw->pw_uid, pw->pw_gid) != 0 ||
	    chown(lock, pw->pw_uid, pw->pw_gid) != 0)
		return;
}

/* 0 open (db->acl valid), 1 open read-only with no "acl" yet, -1 failed. */
static int store_lmdb_admin_open(const struct store_where *w, bool write,
				 struct store_lmdb_admin *db, char *err, size_t cap)
{
	char path[STORE_LMDB_PATH_MAX];
	int rc;
	memset(db, 0, sizeof *db);
	if (snprintf(path, sizeof path, "%s/%s", w->dir, STORE_LMDB_FILE) >= (int)sizeof path) {
		snprintf(err, cap, "store: state_dir too long");
		return -1;
	}
	if ((rc = mdb_env_create(&db->env)) != 0) {
		db->env = NULL;
		return store_lmdb_admin_fail(db, "env_create", rc, err, cap);
	}
	if ((rc = mdb_env_set_mapsize(db->env, STORE_LMDB_MAP_SIZE_DEFAULT)) != 0 ||
	    (rc = mdb_env_set_maxdbs(db->env, STORE_LMDB_ADMIN_MAX_DBS)) != 0 ||
	    (rc = mdb_env_open(db->env, path, MDB_NOSUBDIR | MDB_NOTLS,
			       STORE_LMDB_FILE_MODE)) != 0)
		return store_lmdb_admin_fail(db, path, rc, err, cap);
	store_lmdb_admin_chown(w->user, path);
	if ((rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY, &db->txn)) != 0) {
		db->txn = NULL;
		return store_lmdb_admin_fail(db, "txn_begin", rc, err, cap);
	}
	if ((rc = mdb_dbi_open(db->txn, "acl", write ? MDB_CREATE : 0, &db->acl)) != 0) {
		if (rc == MDB_NOTFOUND && !write)
			return 1;
		return store_lmdb_admin_fail(db, "dbi_open acl", rc, err, cap);
	}
	return 0;
}

static int store_lmdb_admin_close(struct store_lmdb_admin *db, bool commit, char *err,
				  size_t cap)
{
	int rc = 0;
	if (commit)
		rc = mdb_txn_commit(db->txn);
	else
		mdb_txn_abort(db->txn);
	db->txn = NULL;
	if (rc != 0)
		return store_lmdb_admin_fail(db, "commit", rc, err, cap);
	mdb_env_close(db->env);
	return 0;
}

/* The entry at k/v into *e, or false (not ours). */
static bool store_lmdb_admin_entry(const MDB_val *k, const MDB_val *v, struct acl_entry *e)
{
	int64_t val[3];
	if (v->mv_size != sizeof val)
		return false;
	memcpy(val, v->mv_data, sizeof val);
	return acl_entry_decode(k->mv_data, k->mv_size, val[0], val[1], val[2], e);
}

static int store_lmdb_acl_load(const struct store_where *w, struct acl_entry *out,
			       size_t cap, size_t *n, long long now_ms, char *err,
			       size_t errcap)
{
	struct store_lmdb_admin db;
	MDB_cursor *cur;
	MDB_val k, v;
	*n = 0;
	int rc = store_lmdb_admin_open(w, false, &db, err, errcap);
	if (rc != 0)
		return rc < 0 ? -1 : store_lmdb_admin_close(&db, false, err, errcap);
	if ((rc = mdb_cursor_open(db.txn, db.acl, &cur)) != 0)
		return store_lmdb_admin_fail(&db, "cursor", rc, err, errcap);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		if (store_lmdb_admin_entry(&k, &v, &out[*n]) &&
		    (!out[*n].expires_ms || out[*n].expires_ms > now_ms))
			(*n)++;
	mdb_cursor_close(cur);
	return store_lmdb_admin_close(&db, false, err, errcap);
}

static int store_lmdb_acl_put(const struct store_where *w, const struct acl_entry *e,
			      long long now_ms, char *err, size_t errcap)
{
	struct store_lmdb_admin db;
	MDB_cursor *cur;
	MDB_val k, v;
	if (store_lmdb_admin_open(w, true, &db, err, errcap) != 0)
		return -1;
	int rc = mdb_cursor_open(db.txn, db.acl, &cur);
	if (rc != 0)
		return store_lmdb_admin_fail(&db, "cursor", rc, err, errcap);
	/* Expired and foreign records go first: they would only take room. */
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct acl_entry old;
		if (store_lmdb_admin_entry(&k, &v, &old) &&
		    (!old.expires_ms || old.expires_ms > now_ms))
			continue;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_lmdb_admin_fail(&db, "prune", rc, err, errcap);
	char text[CONTROL_TOKEN_MAX + 16];
	int64_t val[3] = {e->kind, e->expires_ms, e->added_ms};
	control_net_format(&e->net, text, sizeof text);
	k.mv_data = text;
	k.mv_size = strlen(text);
	v.mv_data = val;
	v.mv_size = sizeof val;
	if ((rc = mdb_put(db.txn, db.acl, &k, &v, 0)) != 0)
		return store_lmdb_admin_fail(&db, "put", rc, err, errcap);
	return store_lmdb_admin_close(&db, true, err, errcap);
}

static int store_lmdb_acl_del(const struct store_where *w, const struct control_net *net,
			      bool *found, char *err, size_t errcap)
{
	struct store_lmdb_admin db;
	char text[CONTROL_TOKEN_MAX + 16];
	*found = false;
	if (store_lmdb_admin_open(w, true, &db, err, errcap) != 0)
		return -1;
	control_net_format(net, text, sizeof text);
	MDB_val k = {strlen(text), text};
	int rc = mdb_del(db.txn, db.acl, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_lmdb_admin_fail(&db, "del", rc, err, errcap);
	*found = rc == 0;
	return store_lmdb_admin_close(&db, true, err, errcap);
}

static int store_lmdb_forget(const struct store_where *w, const struct reputation_keys *a,
			     bool *found, char *err, size_t errcap)
{
	struct store_lmdb_admin db;
	struct store_lmdb_key host, net;
	MDB_dbi dbi[2];
	*found = false;
	if (store_lmdb_admin_open(w, true, &db, err, errcap) != 0)
		return -1;
	int rc = mdb_dbi_open(db.txn, "rep", MDB_CREATE, &dbi[0]);
	if (rc == 0)
		rc = mdb_dbi_open(db.txn, "pass", MDB_CREATE, &dbi[1]);
	if (rc != 0)
		return store_lmdb_admin_fail(&db, "dbi_open", rc, err, errcap);
	store_lmdb_keys(a, &host, &net);
	MDB_val k = {host.len, host.b};
	for (int i = 0; i < 2; i++) {
		rc = mdb_del(db.txn, dbi[i], &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return store_lmdb_admin_fail(&db, "del", rc, err, errcap);
		*found |= rc == 0;
	}
	return store_lmdb_admin_close(&db, true, err, errcap);
}

const struct store_admin_ops store_lmdb_admin = {
	store_lmdb_acl_load, store_lmdb_acl_put, store_lmdb_acl_del, store_lmdb_forget,
};
