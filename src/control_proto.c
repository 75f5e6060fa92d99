/*
 * control_proto: parsing and formatting of the control protocol (see
 * control_proto.h). Pure: no I/O, no allocation, no logging; the request
 * parser is the fuzz target fuzz/fuzz_control.c.
 *
 * Exports control_req_parse, control_net_parse, control_net_format,
 * control_verb_name, control_verb_help, control_status_ok.
 *
 * Why a text line and not a binary frame: an administrator can talk to the
 * socket with socat when sluicectl is missing, and the request is tiny.
 * Why the server renders text and JSON itself: sluicectl stays a pipe that
 * prints what it gets, so the two renderings cannot disagree about what
 * the numbers are.
 */
#include "control_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "ipaddr.h"

static const struct {
	const char *name;
	unsigned min_args, max_args;
	const char *help;
} control_verbs[CONTROL_VERB_COUNT] = {
#define CONTROL_VERB_ROW(id, v, lo, hi, h) [CONTROL_##id] = {v, lo, hi, h},
	CONTROL_VERBS(CONTROL_VERB_ROW)
#undef CONTROL_VERB_ROW
};

const char *control_verb_name(enum control_verb v)
{
	return (unsigned)v < CONTROL_VERB_COUNT ? control_verbs[v].name : "?";
}

const char *control_verb_help(enum control_verb v)
{
	return (unsigned)v < CONTROL_VERB_COUNT ? control_verbs[v].help : "";
}

int control_net_parse(const char *s, struct control_net *out)
{
	char host[CONTROL_TOKEN_MAX + 1];
	size_t len = strnlen(s, CONTROL_TOKEN_MAX + 1);
	if (len == 0 || len > CONTROL_TOKEN_MAX)
		return -1;
	memcpy(host, s, len);
	host[len] = 0;
	char *slash = strchr(host, '/');
	long prefix = -1;
	if (slash) {
		*slash = 0;
		const char *p = slash + 1;
		if (!*p || strlen(p) > 3)
			return -1;
		prefix = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			prefix = prefix * 10 + (*p - '0');
		}
	}
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, host, out->addr) == 1) {
		out->family = AF_INET;
		if (prefix > 32)
			return -1;
		out->prefix = prefix < 0 ? 32 : (unsigned)prefix;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		out->family = AF_INET6;
		if (prefix > 128)
			return -1;
		out->prefix = prefix < 0 ? 128 : (unsigned)prefix;
		/* ::ffff:a.b.c.d is the IPv4 address everywhere in sluice. */
		if (ipaddr_is_v4mapped(out->addr) && out->prefix >= 96) {
			memmove(out->addr, out->addr + IPADDR_V4MAPPED_OFFSET, IPADDR_V4_LEN);
			memset(out->addr + IPADDR_V4_LEN, 0, IPADDR_V6_LEN - IPADDR_V4_LEN);
			out->family = AF_INET;
			out->prefix -= 96;
		}
	} else {
		return -1;
	}
	/* Bits below the prefix must be zero: 192.0.2.7/24 is a typo for
	 * one of two things, and guessing either is worse than asking. */
	unsigned bytes = out->family == AF_INET ? 4 : 16;
	for (unsigned bit = out->prefix; bit < bytes * 8; bit++)
		if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
			return -1;
	return 0;
}

const char *control_net_format(const struct control_net *n, char *buf,
			       size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	if (!inet_ntop(n->family, n->addr, a, sizeof a))
		snprintf(a, sizeof a, "?");
	snprintf(buf, cap, "%s/%u", a, n->prefix);
	return buf;
}

static int control_err(char *err, size_t cap, const char *what, const char *tok)
{
	snprintf(err, cap, "%s%s%.*s%s", what, tok ? " '" : "",
		 CONTROL_TOKEN_MAX, tok ? tok : "", tok ? "'" : "");
	return -1;
}

enum control_parse_status control_req_parse(const char *line, size_t len,
					    struct control_req *req, char *err,
					    size_t cap)
{
	char tokens[1 + CONTROL_ARGS_MAX][CONTROL_TOKEN_MAX + 1];
	unsigned n = 0;
	memset(req, 0, sizeof *req);
	if (len >= CONTROL_LINE_MAX) {
		snprintf(err, cap, "request longer than %d bytes", CONTROL_LINE_MAX - 1);
		return CONTROL_PARSE_TOO_LONG;
	}
	if (len && line[len - 1] == '\r') /* socat and telnet send CRLF */
		len--;
	size_t i = 0;
	while (i < len) {
		if (line[i] == ' ') {
			i++;
			continue;
		}
		size_t start = i;
		while (i < len && line[i] != ' ') {
			unsigned char c = (unsigned char)line[i];
			if (c < 0x21 || c > 0x7e) {
				snprintf(err, cap, "bad byte 0x%02x in the request", c);
				return CONTROL_PARSE_INVALID;
			}
			i++;
		}
		size_t tl = i - start;
		if (tl > CONTROL_TOKEN_MAX) {
			snprintf(err, cap, "word longer than %d bytes", CONTROL_TOKEN_MAX);
			return CONTROL_PARSE_INVALID;
		}
		char tok[CONTROL_TOKEN_MAX + 1];
		memcpy(tok, line + start, tl);
		tok[tl] = 0;
		if (!strcmp(tok, "--json")) {
			req->json = true;
		} else if (!strcmp(tok, "--shaped")) {
			req->shaped = true;
		} else if (tok[0] == '-' && tok[1] == '-') {
			control_err(err, cap, "unknown option", tok);
			return CONTROL_PARSE_INVALID;
		} else if (n == 1 + CONTROL_ARGS_MAX) {
			snprintf(err, cap, "too many arguments");
			return CONTROL_PARSE_INVALID;
		} else {
			memcpy(tokens[n++], tok, tl + 1);
		}
	}
	if (n == 0) {
		snprintf(err, cap, "empty request");
		return CONTROL_PARSE_INVALID;
	}
	unsigned v;
	for (v = 0; v < CONTROL_VERB_COUNT; v++)
		if (!strcmp(tokens[0], control_verbs[v].name))
			break;
	if (v == CONTROL_VERB_COUNT) {
		control_err(err, cap, "unknown command", tokens[0]);
		return CONTROL_PARSE_INVALID;
	}
	req->verb = (enum control_verb)v;
	unsigned args = n - 1;
	if (args < control_verbs[v].min_args || args > control_verbs[v].max_args) {
		snprintf(err, cap, "%s takes %u to %u arguments", control_verbs[v].name,
			 control_verbs[v].min_args, control_verbs[v].max_args);
		return CONTROL_PARSE_INVALID;
	}
	if (req->shaped && req->verb != CONTROL_SESSIONS) {
		snprintf(err, cap, "--shaped goes with sessions only");
		return CONTROL_PARSE_INVALID;
	}
	if (args >= 1) {
		if (control_net_parse(tokens[1], &req->net) != 0) {
			control_err(err, cap, "not an address or network (host bits set?):",
				    tokens[1]);
			return CONTROL_PARSE_INVALID;
		}
		req->has_net = true;
	}
	if (args == 2) {
		long ms;
		if (config_parse_duration_ms(tokens[2], &ms) != 0 || ms <= 0 ||
		    ms > CONTROL_TTL_MAX_MS) {
			control_err(err, cap, "not a duration (e.g. 3600, 90m, 7d):",
				    tokens[2]);
			return CONTROL_PARSE_INVALID;
		}
		req->ttl_ms = ms;
	}
	return CONTROL_PARSE_OK;
}

bool control_status_ok(const char *line, const char **text)
{
	if (!strcmp(line, "OK")) {
		*text = "";
		return true;
	}
	*text = !strncmp(line, "ERR ", 4) ? line + 4 : line;
	return false;
}
