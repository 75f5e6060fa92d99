/* Fixture for scripts/check-layers.sh: an implementation that includes the
 * facade and calls back into it. Never compiled. */
#include "store.h"
#include "store_lmdb.h"

static void bad(struct store *st, const struct sockaddr *a)
{
	store_record(st, a, 0);
}
