/*
 * acl: the allow and deny entries an administrator sets with sluicectl.
 * Their lasting home is the store (store_acl_* in store.h: LMDB, or Redis with
 * store = redis); the supervisor loads them from there and publishes them
 * to its workers through a shared table, which every worker checks at
 * accept, so an entry takes effect on the next connection on every worker.
 */
#ifndef SLUICE_ACL_H
#define SLUICE_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "control_proto.h"

#define ACL_ENTRIES_MAX 4096 /* entries in force; a put past it is refused */

#define ACL_KINDS(X) X(NONE, "none") X(ALLOW, "allow") X(DENY, "deny")

enum acl_kind {
#define ACL_KIND_ENUM(id, n) ACL_##id,
	ACL_KINDS(ACL_KIND_ENUM)
#undef ACL_KIND_ENUM
};

struct acl_entry {
	struct control_net net;
	enum acl_kind kind;
	long long expires_ms; /* CLOCK_REALTIME; 0: until removed */
	long long added_ms;
};

const char *acl_kind_name(enum acl_kind k);

/* A stored entry: key (len bytes, untrusted: whatever is in the store) is
 * the network's text, kind/expires/added as stored. False when it is not
 * one sluice wrote. */
bool acl_entry_decode(const char *key, size_t len, long long kind,
		      long long expires_ms, long long added_ms,
		      struct acl_entry *e);

/* Supervisor, before fork: maps the shared table. 0 or -1. */
int acl_init(void);
/* Supervisor: replaces the table the workers see (at most
 * ACL_ENTRIES_MAX entries; expired ones are left out). */
void acl_publish(const struct acl_entry *e, size_t n, long long now_ms);

/* Worker, at accept: the kind of the most specific entry in force that
 * covers addr (a longer prefix wins; deny wins a tie), ACL_NONE when none.
 * *entry (may be NULL) gets that entry's network as text. */
enum acl_kind acl_match(const struct sockaddr *addr, long long now_ms,
			char *entry, size_t cap);

/* The most specific entry in e[0..n) covering the address in net (pure;
 * for acl_match and the tests). -1 when none. */
long acl_lookup(const struct acl_entry *e, size_t n, const struct control_net *addr,
		long long now_ms);

#endif
