/* Fixture for scripts/check-layers.sh: the pure leaf with I/O. Never
 * compiled. */
#include <event2/event.h>
#include "log.h"
