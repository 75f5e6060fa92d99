/*
 * supervisor: the parent process. Binds the listeners as root, starts the
 * workers, restarts one that dies, reloads on SIGHUP (new workers, old ones
 * drain) and shuts down on SIGTERM/SIGINT. Serves metrics when configured.
 */
#ifndef SLUICE_SUPERVISOR_H
#define SLUICE_SUPERVISOR_H

#include <stddef.h>

struct config;

/* Returns the process exit code. path/overrides are kept for reloads. */
int supervisor_run(struct config *cfg, const char *path,
		   char *const *overrides, size_t n_overrides);

#endif
