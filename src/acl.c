/*
 * acl: the shared table of allow and deny entries (see acl.h).
 *
 * Exports acl_kind_name, acl_entry_decode, acl_init, acl_publish,
 * acl_match, acl_lookup.
 *
 * Memory: acl_init (supervisor, before fork) maps one struct acl_table,
 * MAP_SHARED | MAP_ANONYMOUS, never unmapped. Only the supervisor writes
 * it (acl_publish), under a sequence counter (odd while writing). A worker
 * keeps a private copy and compares the counter at each accept (one atomic
 * load); when it moved, it copies the table again (retrying while a write
 * is under way, at most ACL_READ_TRIES times; then it keeps its old copy
 * for this connection). Entries with a TTL expire by their time in the
 * match itself, so expiry needs no publication.
 *
 * Why a shared table and not a store read per connection: the entries
 * must win over everything at accept, before any look-up starts, and with
 * store = redis a read would be a network round trip in front of every
 * verdict; the table makes both stores behave the same for the workers.
 *
 * Matching is a scan of the entries in force (ACL_ENTRIES_MAX bounds it):
 * entries are few (administrators' exceptions), and the scan needs no
 * index to keep in step with the table.
 */
#include "acl.h"
#include "ipaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define ACL_READ_TRIES 8

struct acl_table {
	unsigned seq;
	unsigned n;
	struct acl_entry e[ACL_ENTRIES_MAX];
};

static struct acl_table *acl_shared;
static struct acl_table acl_mine; /* worker's copy */
static unsigned acl_mine_seq;     /* even; 0: never copied */

static const char *const acl_kind_names[] = {
#define ACL_KIND_NAME(id, n) n,
	ACL_KINDS(ACL_KIND_NAME)
#undef ACL_KIND_NAME
};

const char *acl_kind_name(enum acl_kind k)
{
	return (unsigned)k <= ACL_DENY ? acl_kind_names[k] : "?";
}

bool acl_entry_decode(const char *key, size_t len, long long kind,
		      long long expires_ms, long long added_ms,
		      struct acl_entry *e)
{
	char text[CONTROL_TOKEN_MAX + 1];
	if (len == 0 || len > CONTROL_TOKEN_MAX || (kind != ACL_ALLOW && kind != ACL_DENY) ||
	    expires_ms < 0 || added_ms < 0 || memchr(key, 0, len))
		return false;
	memcpy(text, key, len);
	text[len] = 0;
	if (control_net_parse(text, &e->net) != 0)
		return false;
	e->kind = (enum acl_kind)kind;
	e->expires_ms = expires_ms;
	e->added_ms = added_ms;
	return true;
}

int acl_init(void)
{
	if (acl_shared) {
		errno = EALREADY;
		return -1;
	}
	void *p = mmap(NULL, sizeof *acl_shared, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	acl_shared = p;
	/* seq 2: a published (empty) table, distinct from "never copied". */
	acl_shared->seq = 2;
	return 0;
}

void acl_publish(const struct acl_entry *e, size_t n, long long now_ms)
{
	if (!acl_shared)
		return;
	__atomic_fetch_add(&acl_shared->seq, 1, __ATOMIC_ACQ_REL);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	unsigned k = 0;
	for (size_t i = 0; i < n && k < ACL_ENTRIES_MAX; i++)
		if (!e[i].expires_ms || e[i].expires_ms > now_ms)
			acl_shared->e[k++] = e[i];
	acl_shared->n = k;
	__atomic_fetch_add(&acl_shared->seq, 1, __ATOMIC_RELEASE);
}

static bool acl_covers(const struct control_net *net, const struct control_net *a)
{
	if (net->family != a->family)
		return false;
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	if (memcmp(net->addr, a->addr, full) != 0)
		return false;
	if (!rest)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (a->addr[full] & mask);
}

long acl_lookup(const struct acl_entry *e, size_t n, const struct control_net *addr,
		long long now_ms)
{
	long best = -1;
	for (size_t i = 0; i < n; i++) {
		if (e[i].expires_ms && e[i].expires_ms <= now_ms)
			continue;
		if (!acl_covers(&e[i].net, addr))
			continue;
		if (best < 0 || e[i].net.prefix > e[best].net.prefix ||
		    (e[i].net.prefix == e[best].net.prefix && e[i].kind == ACL_DENY))
			best = (long)i;
	}
	return best;
}

static void acl_refresh(void)
{
	for (int t = 0; t < ACL_READ_TRIES; t++) {
		unsigned a = __atomic_load_n(&acl_shared->seq, __ATOMIC_ACQUIRE);
		if (a == acl_mine_seq)
			return;
		if (a & 1)
			continue;
		unsigned n = acl_shared->n;
		if (n > ACL_ENTRIES_MAX)
			continue;
		memcpy(acl_mine.e, acl_shared->e, n * sizeof acl_mine.e[0]);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&acl_shared->seq, __ATOMIC_RELAXED) == a) {
			acl_mine.n = n;
			acl_mine_seq = a;
			return;
		}
	}
}

enum acl_kind acl_match(const struct sockaddr *sa, long long now_ms, char *entry,
			size_t cap)
{
	if (!acl_shared)
		return ACL_NONE;
	acl_refresh();
	if (!acl_mine.n)
		return ACL_NONE;
	struct control_net a = {0};
	struct ipaddr ip;
	if (!ipaddr_from_sockaddr(sa, &ip))
		return ACL_NONE;
	a.family = ip.family;
	memcpy(a.addr, ip.b, ipaddr_len(&ip));
	a.prefix = (unsigned)ipaddr_len(&ip) * 8;
	long i = acl_lookup(acl_mine.e, acl_mine.n, &a, now_ms);
	if (i < 0)
		return ACL_NONE;
	if (entry && cap)
		control_net_format(&acl_mine.e[i].net, entry, cap);
	return acl_mine.e[i].kind;
}
