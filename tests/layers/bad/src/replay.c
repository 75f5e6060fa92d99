/* Fixture for scripts/check-layers.sh: a module that reaches the global
 * worker and the session's insides. Never compiled. */
#include "worker.h"
#include "session_priv.h"
