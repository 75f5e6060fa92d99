/*
 * sluicectl: the administrator's command line for a running sluice. Sends
 * one request over the control socket (control_proto.h), prints the
 * answer's body on stdout and a refusal on stderr.
 *
 *   sluicectl [-c FILE | -s SOCKET] [--json] COMMAND [ARGS]
 *
 * The socket is <state_dir>/control.sock, state_dir from the configuration
 * (-c FILE, default /etc/sluice/sluice.conf) unless -s names it. A
 * configuration that does not load is reported and the default state_dir
 * is tried, so that "sluicectl reload" still reaches the daemon and
 * prints the daemon's own verdict on the broken file.
 *
 * Exit status: 0 done; 1 the daemon refused or the command failed (its
 * reason on stderr); 2 usage; 3 sluice is not running or did not answer.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control_proto.h"

#define SLUICECTL_TIMEOUT_MS 120000       /* a reload or drain answers well before */
#define SLUICECTL_ANSWER_MAX (64 << 20)   /* bytes of answer read at most */
#define SLUICECTL_CONFIG_LINES_MAX 100000 /* lines searched for state_dir */
#define CONFIG_STATE_DIR_OVERRIDE_MAX 4200

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static void usage(FILE *f)
{
	fprintf(f, "usage: sluicectl [-c FILE | -s SOCKET] [--json] COMMAND [ARGS]\ncommands:\n");
	static const char *const args[CONTROL_VERB_COUNT] = {
		[CONTROL_SESSIONS] = " [--shaped]", [CONTROL_ALLOW] = " ADDR|CIDR [TTL]",
		[CONTROL_DENY] = " ADDR|CIDR [TTL]", [CONTROL_FORGET] = " ADDR|CIDR",
	};
	for (int v = 0; v < CONTROL_VERB_COUNT; v++) {
		char head[64];
		snprintf(head, sizeof head, "%s%s", control_verb_name(v), args[v] ? args[v] : "");
		fprintf(f, "  %-28s %s\n", head, control_verb_help(v));
	}
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes all of buf or fails. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The whole answer until the daemon closes; NULL on a failure. */
static char *read_answer(int fd, size_t *len)
{
	size_t cap = 4096;
	char *buf = malloc(cap + 1);
	long long deadline = mono_ms() + SLUICECTL_TIMEOUT_MS;
	*len = 0;
	while (buf) {
		long long left = deadline - mono_ms();
		struct pollfd p = {fd, POLLIN, 0};
		if (left <= 0 || poll(&p, 1, (int)left) == 0) {
			fprintf(stderr, "sluicectl: no answer within %d s\n", SLUICECTL_TIMEOUT_MS / 1000);
			break;
		}
		if (*len == cap) {
			char *more = cap >= SLUICECTL_ANSWER_MAX ? NULL : realloc(buf, cap * 2 + 1);
			if (!more) {
				fprintf(stderr, "sluicectl: answer too large\n");
				break;
			}
			buf = more;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + *len, cap - *len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			fprintf(stderr, "sluicectl: read: %s\n", strerror(errno));
			break;
		}
		if (n == 0) {
			buf[*len] = 0;
			return buf;
		}
		*len += (size_t)n;
	}
	free(buf);
	return NULL;
}

/* "state_dir=VALUE" from the last "state_dir = VALUE" line of path into
 * buf: 1, or 0 when there is none. Only for a file config_load refused. */
static size_t state_dir_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	size_t found = 0;
	for (int n = 0; f && n < SLUICECTL_CONFIG_LINES_MAX && fgets(line, sizeof line, f); n++) {
		char *p = line + strspn(line, " \t");
		if (strncmp(p, "state_dir", 9) != 0)
			continue;
		p += 9 + strspn(p + 9, " \t");
		if (*p != '=')
			continue;
		p++;
		p += strspn(p, " \t");
		p[strcspn(p, "#\r\n")] = 0;
		for (size_t e = strlen(p); e && (p[e - 1] == ' ' || p[e - 1] == '\t'); e--)
			p[e - 1] = 0;
		found = (size_t)snprintf(buf, cap, "state_dir=%s", p) < cap;
	}
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	const char *conf = NULL, *sock = NULL;
	char line[CONTROL_LINE_MAX + 1] = "";
	size_t used = 0;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "-s")) {
			if (i + 1 == argc) {
				usage(stderr);
				return EXIT_USAGE;
			}
			*(argv[i][1] == 'c' ? &conf : &sock) = argv[i + 1];
			i++;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return EXIT_OK;
		} else {
			break;
		}
	}
	if (i == argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (; i < argc; i++) {
		int n = snprintf(line + used, sizeof line - used, "%s%s", used ? " " : "", argv[i]);
		if (n < 0 || (size_t)n >= sizeof line - used - 1) {
			fprintf(stderr, "sluicectl: command line too long\n");
			return EXIT_USAGE;
		}
		used += (size_t)n;
	}
	/* Refuse what the daemon would refuse, without bothering it. */
	struct control_req req;
	char err[256];
	if (strchr(line, '\n') ||
	    control_req_parse(line, used, &req, err, sizeof err) != CONTROL_PARSE_OK) {
		fprintf(stderr, "sluicectl: %s\n", strchr(line, '\n') ? "newline in an argument" : err);
		usage(stderr);
		return EXIT_USAGE;
	}

	struct sockaddr_un un = {.sun_family = AF_UNIX};
	if (sock) {
		if (strlen(sock) >= sizeof un.sun_path) {
			fprintf(stderr, "sluicectl: socket path too long\n");
			return EXIT_USAGE;
		}
		snprintf(un.sun_path, sizeof un.sun_path, "%s", sock);
	} else {
		static struct config cfg;
		char cerr[1024];
		if (config_load(&cfg, conf, NULL, 0, cerr, sizeof cerr) != 0) {
			fprintf(stderr, "sluicectl: %s\n", cerr);
			/* The state_dir line alone, over the defaults, still says
			 * where the running daemon listens. */
			char over[CONFIG_STATE_DIR_OVERRIDE_MAX];
			char *o[1] = {over};
			size_t n = state_dir_line(conf ? conf : CONFIG_DEFAULT_PATH, over, sizeof over);
			if (config_load(&cfg, "/dev/null", o, n, cerr, sizeof cerr) != 0)
				return EXIT_USAGE;
		}
		if ((size_t)snprintf(un.sun_path, sizeof un.sun_path, "%s/%s", cfg.state_dir,
				     CONTROL_SOCKET_NAME) >= sizeof un.sun_path) {
			fprintf(stderr, "sluicectl: state_dir too long for a socket path\n");
			return EXIT_USAGE;
		}
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof un) != 0) {
		fprintf(stderr, "sluicectl: cannot reach sluice at %s: %s\n", un.sun_path,
			strerror(errno));
		return EXIT_UNREACHABLE;
	}
	line[used++] = '\n';
	if (write_all(fd, line, used) != 0) {
		fprintf(stderr, "sluicectl: write: %s\n", strerror(errno));
		close(fd);
		return EXIT_UNREACHABLE;
	}
	size_t len;
	char *ans = read_answer(fd, &len);
	close(fd);
	if (!ans)
		return EXIT_UNREACHABLE;
	char *nl = memchr(ans, '\n', len);
	if (!nl) {
		fprintf(stderr, "sluicectl: sluice closed the connection without an answer\n");
		free(ans);
		return EXIT_UNREACHABLE;
	}
	*nl = 0;
	const char *text;
	bool ok = control_status_ok(ans, &text);
	size_t body = (size_t)(nl + 1 - ans);
	if (len > body && fwrite(nl + 1, 1, len - body, stdout) != len - body) {
		free(ans);
		return EXIT_REFUSED;
	}
	if (!ok)
		fprintf(stderr, "sluicectl: %s\n", text);
	free(ans);
	if (fflush(stdout) != 0)
		return EXIT_REFUSED;
	return ok ? EXIT_OK : EXIT_REFUSED;
}
