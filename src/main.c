/*
 * main: command line. "sluice [-f] [-v] [-c FILE] [-o name=value ...]" runs;
 * "sluice -V" prints the version;
 * "sluice -n ..." checks the configuration and prints what differs from
 * the defaults, and warnings about settings that would do harm (advice.c)
 * on stderr; "sluice -n --check-backend ..." also asks the mail server
 * whether it offers sluice what it needs (backend_check.h; the exit code
 * says so).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "advice.h"
#include "backend_check.h"
#include "config.h"
#include "log.h"
#include "supervisor.h"
#include "upgrade.h"
#include "version.h"

#define MAIN_MAX_OVERRIDES 256

static void usage(void)
{
	fprintf(stderr, "usage: sluice [-f] [-v] [-n [--check-backend]] [-c FILE] "
			"[-o name=value ...] | -V\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	static char *overrides[MAIN_MAX_OVERRIDES];
	size_t n_overrides = 0;
	int foreground = 0, check = 0, verbose = 0, check_backend = 0, opt;
	static const struct option longopts[] = {
		{ "check-backend", no_argument, NULL, 'B' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	/* Before anything can replace the file: the path an upgrade runs. */
	upgrade_remember(argv);
	while ((opt = getopt_long(argc, argv, "c:fno:vhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'V':
			printf("sluice %s\n", SLUICE_VERSION);
			return 0;
		case 'B':
			check_backend = 1;
			check = 1;
			break;
		case 'c':
			path = optarg;
			break;
		case 'f':
			foreground = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'o':
			if (n_overrides == MAIN_MAX_OVERRIDES)
				usage();
			overrides[n_overrides++] = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	static struct config cfg;
	char err[1024];
	if (config_load(&cfg, path, overrides, n_overrides, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		config_print_nondefault(&cfg, stdout);
		advice_print(&cfg, stderr);
		return check_backend ? (int)backend_check_run(&cfg, stdout) : 0;
	}
	log_init("sluice", foreground, verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	/* An upgraded supervisor (upgrade.h) is the daemon already: a fork
	 * would change the pid that systemd and the workers know. */
	if (!foreground && !getenv(UPGRADE_ENV) && daemon(0, 0) != 0) {
		perror("sluice: daemon");
		return 1;
	}
	return supervisor_run(&cfg, path, overrides, n_overrides);
}
