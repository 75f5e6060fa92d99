/*
 * store_acl: the lasting home of sluicectl's allow and deny entries, and
 * its "forget", in whichever store the configuration names (LMDB in
 * state_dir, or Redis with store = redis). Synchronous, for the
 * supervisor's control commands only: each call opens the store, does one
 * thing and closes it again, so nothing of it ever crosses a fork.
 */
#ifndef SLUICE_STORE_ACL_H
#define SLUICE_STORE_ACL_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct acl_entry;
struct control_net;

/* Every entry not yet expired into out (at most cap; *n how many). 0, or
 * -1 with err. */
int store_acl_load(const struct config *cfg, struct acl_entry *out, size_t cap,
		   size_t *n, char *err, size_t errcap);
/* Adds or replaces the entry for e->net. */
int store_acl_put(const struct config *cfg, const struct acl_entry *e, char *err,
		  size_t errcap);
/* Removes the entry for exactly net; *found says whether there was one. */
int store_acl_del(const struct config *cfg, const struct control_net *net,
		  bool *found, char *err, size_t errcap);
/* Drops an address's reputation and pass (net is a single address);
 * *found says whether there was any record. */
int store_acl_forget(const struct config *cfg, const struct control_net *addr,
		     bool *found, char *err, size_t errcap);

#endif
