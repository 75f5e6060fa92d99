/* Fixture for scripts/check-layers.sh: backend calling its owner by name.
 * Never compiled. */
#include "pool.h"

static void bad(struct pool *p, struct backend *b)
{
	pool_backend_ready(p, b);
}
