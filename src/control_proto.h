/*
 * control_proto: the wire format between sluicectl and the supervisor's
 * control socket (control.c), shared by both programs.
 *
 * A request is one line of at most CONTROL_LINE_MAX bytes, LF-terminated:
 *   VERB *(SP TOKEN) LF
 * TOKEN is 1..CONTROL_TOKEN_MAX printable ASCII bytes without space;
 * "--json" and "--shaped" are flags wherever they stand, the rest are the
 * verb's arguments. The answer is a status line, "OK" LF or "ERR " text LF,
 * then the body (text, or one JSON document with --json) until the server
 * closes the connection. One request per connection.
 */
#ifndef SLUICE_CONTROL_PROTO_H
#define SLUICE_CONTROL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_LINE_MAX 512 /* request line, LF included */
#define CONTROL_TOKEN_MAX 64
#define CONTROL_ARGS_MAX 2
#define CONTROL_SOCKET_NAME "control.sock" /* in state_dir */
#define CONTROL_TTL_MAX_MS (3650LL * 24 * 3600 * 1000) /* ten years */

/* X(ID, verb, min args, max args, help) */
#define CONTROL_VERBS(X)                                                      \
	X(STATUS, "status", 0, 0, "sessions, shaping, pool and counters")      \
	X(SESSIONS, "sessions", 0, 0, "open sessions, highest score first")              \
	X(ALLOW, "allow", 1, 2, "never shape; no DNS lists, files or passes")    \
	X(DENY, "deny", 1, 2, "shape from the first byte, whatever the score")    \
	X(FORGET, "forget", 1, 1, "drop its entry, and an address's reputation and pass") \
	X(LIST, "list", 0, 0, "allow and deny entries")                        \
	X(RELOAD, "reload", 0, 0, "re-read the configuration (synchronous)")   \
	X(UPGRADE, "upgrade", 0, 0, "re-execute the installed program, keeping sessions") \
	X(DRAIN, "drain", 0, 0, "stop: finish replays, 421 the rest, exit")

enum control_verb {
#define CONTROL_VERB_ENUM(id, v, lo, hi, h) CONTROL_##id,
	CONTROL_VERBS(CONTROL_VERB_ENUM)
#undef CONTROL_VERB_ENUM
	CONTROL_VERB_COUNT
};

/* An address or a network, masked to its prefix. */
struct control_net {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];    /* network byte order; 4 used for AF_INET */
	unsigned prefix;     /* 0..32 or 0..128 */
};

struct control_req {
	enum control_verb verb;
	bool json;
	bool shaped;
	bool has_net;
	struct control_net net;
	long long ttl_ms; /* 0: until removed */
};

enum control_parse_status {
	CONTROL_PARSE_OK,
	CONTROL_PARSE_INVALID, /* err says why */
	CONTROL_PARSE_TOO_LONG,
};

/* Parses one request line: len bytes without the LF (untrusted: any bytes,
 * at most CONTROL_LINE_MAX - 1 accepted). Pure; err (cap bytes) gets a
 * message for the client on failure. */
enum control_parse_status control_req_parse(const char *line, size_t len,
					    struct control_req *req, char *err,
					    size_t cap);

/* "192.0.2.7", "192.0.2.0/24", "2001:db8::/32" (at most
 * CONTROL_TOKEN_MAX bytes, NUL-terminated). Host bits under the prefix are
 * refused, as a typo. 0 or -1. */
int control_net_parse(const char *s, struct control_net *out);
/* Canonical text: "192.0.2.7/32", "2001:db8::/32" into buf (>= 64). */
const char *control_net_format(const struct control_net *n, char *buf,
			       size_t cap);

const char *control_verb_name(enum control_verb v);
const char *control_verb_help(enum control_verb v);

/* The status line of an answer: "OK" / "ERR text". Returns true for OK;
 * *text points into line past "ERR ". */
bool control_status_ok(const char *line, const char **text);

#endif
