/*
 * store_lmdb: reputation and the pass cache in LMDB under state_dir,
 * shared by the workers of one machine. Reached only through store.c
 * (store_open_lmdb); see store_lmdb.c for the layout and the faults.
 */
#ifndef SLUICE_STORE_LMDB_H
#define SLUICE_STORE_LMDB_H

#include "store_ops.h"

struct event_base;
struct store_lmdb;
struct workq;

/* NULL with a logged reason (missing dir, permissions, not an LMDB file,
 * version mismatch). map_size: LMDB map size in bytes, 0 for the
 * default. write_gap_ms: least time between two write batches (0: each
 * leaves as soon as the one before is done); base runs its timer. */
struct store_lmdb *store_lmdb_open(const char *dir, struct event_base *base,
				   struct workq *wq, long halflife_ms,
				   unsigned long long map_size, long write_gap_ms);

extern const struct store_ops store_lmdb_ops;
/* sluicectl's entries and forget (see the end of store_lmdb.c). */
extern const struct store_admin_ops store_lmdb_admin;

#endif
