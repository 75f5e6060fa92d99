/*
 * store_acl: allow/deny entries and "forget" in LMDB or Redis, for the
 * supervisor (see store_acl.h).
 *
 * Exports store_acl_load, store_acl_put, store_acl_del, store_acl_forget;
 * each hands over to the implementation for cfg->store through one table
 * of operations (store_acl_lmdb, store_acl_redis).
 *
 * Layout. LMDB: the named database "acl" in <state_dir>/sluice.mdb (the
 * workers' file; they never open "acl"): key the canonical network text
 * ("192.0.2.0/24"), value three int64 (kind, expires_ms, added_ms),
 * host-endian. Redis: one hash <prefix>acl, field the network text, value
 * "KIND EXPIRES_MS ADDED_MS" in decimal, so that redis-cli shows it. A
 * value that does not decode is skipped (and replaced by the next put for
 * that network). Expired entries are skipped by load and removed by the
 * next put. "forget" deletes the address's reputation and pass records
 * (store.c and store_redis.c layouts: 'A'/'a' keys in "rep" and "pass";
 * <prefix>rep:ADDR and <prefix>pass:ADDR).
 *
 * Blocking: these run on the supervisor's loop, which serves no client
 * sessions; an LMDB write is one synced transaction, a Redis command waits
 * at most redis_timeout (connect and reply). The environment is opened and
 * closed inside each call, never held across a fork. As root, files the
 * call creates are handed to the workers' user, whose processes must be
 * able to open them.
 */
#include "store_acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "config.h"
#include "control_proto.h"
#include "store_redis.h"

#define STORE_ACL_FILE "sluice.mdb"  /* store.c's file */
#define STORE_ACL_MAP_SIZE (64ULL * 1024 * 1024) /* as the workers open it */
#define STORE_ACL_MAX_DBS 8
#define STORE_ACL_VALUE_MAX 80       /* a Redis field value we wrote */

struct store_acl_ops {
	int (*load)(const struct config *cfg, struct acl_entry *out, size_t cap,
		    size_t *n, char *err, size_t errcap);
	int (*put)(const struct config *cfg, const struct acl_entry *e, char *err,
		   size_t errcap);
	int (*del)(const struct config *cfg, const struct control_net *net,
		   bool *found, char *err, size_t errcap);
	int (*forget)(const struct config *cfg, const struct control_net *addr,
		      bool *found, char *err, size_t errcap);
};

static long long store_acl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A key or field (len bytes, untrusted: whatever is in the store) as an
 * entry with kind/expiry/added; false when it is not one we wrote. */
static bool store_acl_decode(const char *key, size_t len, long long kind,
			     long long expires, long long added, struct acl_entry *e)
{
	char text[CONTROL_TOKEN_MAX + 1];
	if (len == 0 || len > CONTROL_TOKEN_MAX || (kind != ACL_ALLOW && kind != ACL_DENY) ||
	    expires < 0 || added < 0)
		return false;
	memcpy(text, key, len);
	text[len] = 0;
	if (memchr(text, 0, len) || control_net_parse(text, &e->net) != 0)
		return false;
	e->kind = (enum acl_kind)kind;
	e->expires_ms = expires;
	e->added_ms = added;
	return true;
}

/* ---- LMDB ---------------------------------------------------------------- */

struct store_acl_db {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi acl, rep, pass;
};

static int store_acl_lmdb_fail(struct store_acl_db *db, const char *what, int rc,
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

/* Hands the store's files to the workers' user when we (root) made them. */
static void store_acl_chown(const struct config *cfg, const char *path)
{
	if (!cfg->user[0] || geteuid() != 0)
		return;
	struct passwd *pw = getpwnam(cfg->user);
	char lock[4096 + 8];
	if (!pw)
		return;
	snprintf(lock, sizeof lock, "%s-lock", path);
	/* Best effort: a failure shows as the workers' own open error. */
	if (chown(path, pw->pw_uid, pw->pw_gid) != 0 ||
	    chown(lock, pw->pw_uid, pw->pw_gid) != 0)
		return;
}

static int store_acl_lmdb_open(const struct config *cfg, bool write,
			       struct store_acl_db *db, char *err, size_t cap)
{
	char path[4096];
	int rc;
	memset(db, 0, sizeof *db);
	if (snprintf(path, sizeof path, "%s/%s", cfg->state_dir, STORE_ACL_FILE) >=
	    (int)sizeof path) {
		snprintf(err, cap, "store: state_dir too long");
		return -1;
	}
	if ((rc = mdb_env_create(&db->env)) != 0) {
		db->env = NULL;
		return store_acl_lmdb_fail(db, "env_create", rc, err, cap);
	}
	if ((rc = mdb_env_set_mapsize(db->env, STORE_ACL_MAP_SIZE)) != 0 ||
	    (rc = mdb_env_set_maxdbs(db->env, STORE_ACL_MAX_DBS)) != 0 ||
	    (rc = mdb_env_open(db->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600)) != 0)
		return store_acl_lmdb_fail(db, path, rc, err, cap);
	store_acl_chown(cfg, path);
	if ((rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY, &db->txn)) != 0) {
		db->txn = NULL;
		return store_acl_lmdb_fail(db, "txn_begin", rc, err, cap);
	}
	unsigned flags = write ? MDB_CREATE : 0;
	if ((rc = mdb_dbi_open(db->txn, "acl", flags, &db->acl)) != 0) {
		if (rc == MDB_NOTFOUND && !write) {
			db->acl = 0; /* nothing stored yet */
			return 1;
		}
		return store_acl_lmdb_fail(db, "dbi_open acl", rc, err, cap);
	}
	return 0;
}

static int store_acl_lmdb_close(struct store_acl_db *db, bool commit, char *err,
				size_t cap)
{
	int rc = commit ? mdb_txn_commit(db->txn) : (mdb_txn_abort(db->txn), 0);
	db->txn = NULL;
	if (rc != 0)
		return store_acl_lmdb_fail(db, "commit", rc, err, cap);
	mdb_env_close(db->env);
	return 0;
}

static int store_acl_lmdb_load(const struct config *cfg, struct acl_entry *out,
			       size_t cap, size_t *n, char *err, size_t errcap)
{
	struct store_acl_db db;
	*n = 0;
	int rc = store_acl_lmdb_open(cfg, false, &db, err, errcap);
	if (rc < 0)
		return -1;
	if (rc == 1)
		return store_acl_lmdb_close(&db, false, err, errcap);
	MDB_cursor *cur;
	MDB_val k, v;
	if ((rc = mdb_cursor_open(db.txn, db.acl, &cur)) != 0)
		return store_acl_lmdb_fail(&db, "cursor", rc, err, errcap);
	long long now = store_acl_now_ms();
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int64_t val[3];
		if (v.mv_size != sizeof val)
			continue;
		memcpy(val, v.mv_data, sizeof val);
		if (store_acl_decode(k.mv_data, k.mv_size, val[0], val[1], val[2], &out[*n]) &&
		    (!val[1] || val[1] > now))
			(*n)++;
	}
	mdb_cursor_close(cur);
	return store_acl_lmdb_close(&db, false, err, errcap);
}

static int store_acl_lmdb_put(const struct config *cfg, const struct acl_entry *e,
			      char *err, size_t errcap)
{
	struct store_acl_db db;
	if (store_acl_lmdb_open(cfg, true, &db, err, errcap) != 0)
		return -1;
	/* Expired entries go first: they would only take room. */
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(db.txn, db.acl, &cur);
	if (rc != 0)
		return store_acl_lmdb_fail(&db, "cursor", rc, err, errcap);
	long long now = store_acl_now_ms();
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int64_t val[3];
		if (v.mv_size == sizeof val) {
			memcpy(val, v.mv_data, sizeof val);
			if (!val[1] || val[1] > now)
				continue;
		}
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_acl_lmdb_fail(&db, "prune", rc, err, errcap);
	char text[80];
	int64_t val[3] = {e->kind, e->expires_ms, e->added_ms};
	control_net_format(&e->net, text, sizeof text);
	k.mv_data = text;
	k.mv_size = strlen(text);
	v.mv_data = val;
	v.mv_size = sizeof val;
	if ((rc = mdb_put(db.txn, db.acl, &k, &v, 0)) != 0)
		return store_acl_lmdb_fail(&db, "put", rc, err, errcap);
	return store_acl_lmdb_close(&db, true, err, errcap);
}

static int store_acl_lmdb_del(const struct config *cfg, const struct control_net *net,
			      bool *found, char *err, size_t errcap)
{
	struct store_acl_db db;
	char text[80];
	*found = false;
	if (store_acl_lmdb_open(cfg, true, &db, err, errcap) != 0)
		return -1;
	control_net_format(net, text, sizeof text);
	MDB_val k = {strlen(text), text};
	int rc = mdb_del(db.txn, db.acl, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_acl_lmdb_fail(&db, "del", rc, err, errcap);
	*found = rc == 0;
	return store_acl_lmdb_close(&db, true, err, errcap);
}

static int store_acl_lmdb_forget(const struct config *cfg, const struct control_net *a,
				 bool *found, char *err, size_t errcap)
{
	struct store_acl_db db;
	*found = false;
	if (store_acl_lmdb_open(cfg, true, &db, err, errcap) != 0)
		return -1;
	int rc = mdb_dbi_open(db.txn, "rep", MDB_CREATE, &db.rep);
	if (rc == 0)
		rc = mdb_dbi_open(db.txn, "pass", MDB_CREATE, &db.pass);
	if (rc != 0)
		return store_acl_lmdb_fail(&db, "dbi_open", rc, err, errcap);
	/* store.c's address key: 'A' + 4 bytes, 'a' + 16 bytes. */
	unsigned char key[17];
	key[0] = a->family == AF_INET ? 'A' : 'a';
	size_t klen = a->family == AF_INET ? 5 : 17;
	memcpy(key + 1, a->addr, klen - 1);
	MDB_val k = {klen, key};
	MDB_dbi dbis[2] = {db.rep, db.pass};
	for (int i = 0; i < 2; i++) {
		rc = mdb_del(db.txn, dbis[i], &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return store_acl_lmdb_fail(&db, "del", rc, err, errcap);
		*found |= rc == 0;
	}
	return store_acl_lmdb_close(&db, true, err, errcap);
}

static const struct store_acl_ops store_acl_lmdb = {
	store_acl_lmdb_load, store_acl_lmdb_put, store_acl_lmdb_del, store_acl_lmdb_forget,
};

/* ---- Redis --------------------------------------------------------------- */

static redisContext *store_acl_redis_connect(const struct config *cfg, char *err,
					     size_t cap)
{
	const struct endpoint *ep = &cfg->redis_server;
	struct timeval tv = {cfg->redis_timeout_ms / 1000, (cfg->redis_timeout_ms % 1000) * 1000};
	redisContext *c = NULL;
	if (ep->ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ep->ss;
		c = redisConnectUnixWithTimeout(un->sun_path, tv);
	} else {
		char host[INET6_ADDRSTRLEN];
		int port;
		if (ep->ss.ss_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)&ep->ss;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
			port = ntohs(in->sin_port);
		} else {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ep->ss;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
			port = ntohs(in6->sin6_port);
		}
		c = redisConnectWithTimeout(host, port, tv);
	}
	if (!c || c->err) {
		snprintf(err, cap, "redis %s: %s", ep->text, c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(err, cap, "redis %s: cannot set a timeout", ep->text);
		redisFree(c);
		return NULL;
	}
	return c;
}

/* One command; the reply (caller frees) or NULL with err. */
static redisReply *store_acl_redis_cmd(redisContext *c, const struct config *cfg,
				       char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!r) {
		snprintf(err, cap, "redis %s: %s", cfg->redis_server.text,
			 c->errstr[0] ? c->errstr : "no reply");
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, cap, "redis %s: %.200s", cfg->redis_server.text, r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* <prefix>acl as one string: a format's %s is one argument, spaces and
 * all, where "%sacl" would split a prefix with spaces. */
static const char *store_acl_key(const struct config *cfg, char *key)
{
	snprintf(key, STORE_REDIS_KEY_MAX, "%sacl", cfg->redis_prefix);
	return key;
}

static bool store_acl_redis_value(const char *s, size_t len, long long v[3])
{
	char buf[STORE_ACL_VALUE_MAX];
	if (len == 0 || len >= sizeof buf)
		return false;
	memcpy(buf, s, len);
	buf[len] = 0;
	char tail;
	return sscanf(buf, "%lld %lld %lld%c", &v[0], &v[1], &v[2], &tail) == 3;
}

static int store_acl_redis_load(const struct config *cfg, struct acl_entry *out,
				size_t cap, size_t *n, char *err, size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX];
	*n = 0;
	redisContext *c = store_acl_redis_connect(cfg, err, errcap);
	if (!c)
		return -1;
	redisReply *r = store_acl_redis_cmd(c, cfg, err, errcap, "HGETALL %s", store_acl_key(cfg, key));
	redisFree(c);
	if (!r)
		return -1;
	long long now = store_acl_now_ms();
	if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i + 1 < r->elements && *n < cap; i += 2) {
			const redisReply *f = r->element[i], *v = r->element[i + 1];
			long long val[3];
			if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
			    !store_acl_redis_value(v->str, v->len, val))
				continue;
			if (store_acl_decode(f->str, f->len, val[0], val[1], val[2], &out[*n]) &&
			    (!val[1] || val[1] > now))
				(*n)++;
		}
	}
	freeReplyObject(r);
	return 0;
}

static int store_acl_redis_put(const struct config *cfg, const struct acl_entry *e,
			       char *err, size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX];
	redisContext *c = store_acl_redis_connect(cfg, err, errcap);
	if (!c)
		return -1;
	char text[80], value[STORE_ACL_VALUE_MAX];
	control_net_format(&e->net, text, sizeof text);
	/* One argument: hiredis splits a format at spaces. */
	snprintf(value, sizeof value, "%d %lld %lld", (int)e->kind, e->expires_ms, e->added_ms);
	redisReply *r = store_acl_redis_cmd(c, cfg, err, errcap, "HSET %s %s %s",
					    store_acl_key(cfg, key), text, value);
	if (r)
		freeReplyObject(r);
	/* Expired fields: HGETALL and HDEL what has passed (best effort). */
	redisReply *h = r ? store_acl_redis_cmd(c, cfg, err, errcap, "HGETALL %s",
						store_acl_key(cfg, key)) : NULL;
	long long now = store_acl_now_ms();
	if (h && h->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < h->elements; i += 2) {
			long long val[3];
			const redisReply *f = h->element[i], *v = h->element[i + 1];
			if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
			    store_acl_redis_value(v->str, v->len, val) && val[1] && val[1] <= now) {
				redisReply *d = redisCommand(c, "HDEL %s %b", store_acl_key(cfg, key),
							     f->str, f->len);
				if (d)
					freeReplyObject(d);
			}
		}
	if (h)
		freeReplyObject(h);
	redisFree(c);
	return r ? 0 : -1;
}

static int store_acl_redis_del(const struct config *cfg, const struct control_net *net,
			       bool *found, char *err, size_t errcap)
{
	char key[STORE_REDIS_KEY_MAX];
	*found = false;
	redisContext *c = store_acl_redis_connect(cfg, err, errcap);
	if (!c)
		return -1;
	char text[80];
	control_net_format(net, text, sizeof text);
	redisReply *r = store_acl_redis_cmd(c, cfg, err, errcap, "HDEL %s %s",
					    store_acl_key(cfg, key), text);
	redisFree(c);
	if (!r)
		return -1;
	*found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	freeReplyObject(r);
	return 0;
}

static int store_acl_redis_forget(const struct config *cfg, const struct control_net *a,
				  bool *found, char *err, size_t errcap)
{
	struct sockaddr_storage ss = {0};
	if (a->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, a->addr, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, a->addr, 16);
	}
	struct store_redis_keys k;
	*found = false;
	if (!store_redis_keys(cfg->redis_prefix, (struct sockaddr *)&ss, &k)) {
		snprintf(err, errcap, "redis_prefix too long");
		return -1;
	}
	redisContext *c = store_acl_redis_connect(cfg, err, errcap);
	if (!c)
		return -1;
	redisReply *r = store_acl_redis_cmd(c, cfg, err, errcap, "DEL %s %s", k.host, k.pass);
	redisFree(c);
	if (!r)
		return -1;
	*found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
	freeReplyObject(r);
	return 0;
}

static const struct store_acl_ops store_acl_redis = {
	store_acl_redis_load, store_acl_redis_put, store_acl_redis_del, store_acl_redis_forget,
};

/* ---- the interface ------------------------------------------------------- */

static const struct store_acl_ops *store_acl_ops(const struct config *cfg)
{
	return cfg->store == CONFIG_STORE_REDIS ? &store_acl_redis : &store_acl_lmdb;
}

int store_acl_load(const struct config *cfg, struct acl_entry *out, size_t cap,
		   size_t *n, char *err, size_t errcap)
{
	return store_acl_ops(cfg)->load(cfg, out, cap, n, err, errcap);
}

int store_acl_put(const struct config *cfg, const struct acl_entry *e, char *err,
		  size_t errcap)
{
	return store_acl_ops(cfg)->put(cfg, e, err, errcap);
}

int store_acl_del(const struct config *cfg, const struct control_net *net,
		  bool *found, char *err, size_t errcap)
{
	return store_acl_ops(cfg)->del(cfg, net, found, err, errcap);
}

int store_acl_forget(const struct config *cfg, const struct control_net *addr,
		     bool *found, char *err, size_t errcap)
{
	return store_acl_ops(cfg)->forget(cfg, addr, found, err, errcap);
}
