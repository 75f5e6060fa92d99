/*
 * fuzz_session: whole-session libFuzzer target, after Dovecot's
 * fuzz-smtp-server.c. One worker context for the process (event base,
 * resolver, thread pool, STARTTLS context), built here from the same
 * public calls worker_main makes, minus listeners, signals and the
 * privilege drop. Around it, on the same loop:
 *   - a scripted SMTP backend on a unix socket that answers like Postfix
 *     (220, EHLO with PIPELINING and XCLIENT NAME ADDR PORT PROTO HELO,
 *     XCLIENT 220, MAIL/RCPT 250, DATA 354, "." 250, RSET 250, QUIT 221;
 *     with CHUNKING offered, BDAT's octets counted and answered as "."),
 *     with one fault injected at a chosen stage;
 *   - a DNS server on a loopback UDP port (evdns server) that answers PTR,
 *     A/AAAA and DNSBL queries, or fails them, or never answers;
 *   - the client: one end of a socketpair, the other end handed to
 *     session_accept with a fake peer address (documentation and
 *     benchmarking prefixes). No traffic leaves the process but loopback.
 *
 * Input layout (FUZZ_SESSION_HEAD bytes, then the client's bytes):
 *   byte 0  backend fault: low nibble the stage (fuzz_session_stage; 0 and
 *           values past the last stage: none), high nibble the kind
 *           (fuzz_session_fault).
 *   byte 1  bits 0-1 DNS (answer, NXDOMAIN, SERVFAIL, silent); bit 2 IPv6
 *           peer; bit 3 STARTTLS offered; bit 4 shaping on (fast rate);
 *           bit 5 DNSBL configured; bit 6 bare_newline = reject; bit 7
 *           backend_xclient = no.
 *   byte 2  bits 0-3 chunking seed (0: one write; odd: fast_lane = no;
 *           bit 1: the backend offers CHUNKING, so sluice sends BDAT);
 *           bits 4-6 largest chunk,
 *           4^n bytes, except 7: lockstep, a client that waits for its
 *           replies where RFC 2920 says so (fuzz_session_group), each
 *           group written once sluice is quiet; bit 7 talk before the
 *           greeting (else wait for it).
 *   byte 3  bit 0 message_memory_max = 512 (spill to spool_dir); bit 1
 *           reject_threshold = 2; bit 2 two pool connections; bits 3-7
 *           the peer's last address byte in 192.0.2.0/24 or 2001:db8::/64;
 *           0: a new peer for every run (198.18.0.0/15, 2001:db8:ffff::/96),
 *           so that sluice's cache of client names does not answer.
 *
 * FUZZ_SESSION_SKIP=3,1:9 turns off faults at stage 3 and of kind 9 at
 * stage 1 (to fuzz past a known bug); FUZZ_SESSION_LOG=1 logs sluice's
 * lines to stderr.
 *
 * Per input: a fresh backend pool; the client's bytes written in chunks
 * with a non-blocking loop pass after each; the loop run until quiet or
 * FUZZ_SESSION_BUDGET_MS; the client end closed; the loop run until the
 * session is freed; the pool shut down and its connections closed; the
 * thread pool drained. Findings (abort): a session or backend connection
 * that is not freed within FUZZ_SESSION_FREE_MS although every timer in
 * the configuration is short (a leak or a hang), buffered-message memory
 * not back to zero, a malformed reply line to the client, and toward the
 * backend: a bare CR or LF, a verb sluice never sends, BDAT unoffered or
 * malformed, message octets that are not whole CR LF lines (fewer or more
 * than BDAT announced show as such or as a bad command), a command written
 * while a reply is owed (RFC 2920), a NUL in a command, or an XCLIENT
 * ADDR/NAME other than the real peer's; and a loop run that never goes
 * idle for FUZZ_SESSION_LIVELOCK_MS (a livelock).
 *
 * Ownership: the process-wide state (fz: loop, servers, TLS context, the
 * temporary directory) lives until exit, which removes the directory;
 * each input's pool, session and backend connections are gone before
 * LLVMFuzzerTestOneInput returns, so LeakSanitizer sees no growth.
 *
 * Rejected: forking a real worker (no coverage feedback, slow), a
 * listening socket for the client (accept adds nothing the parser or
 * session code would see), a stub resolver that never answers (then no
 * input ever reaches the backend within the time budget).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/dns_struct.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dns.h"
#include "dnsbl.h"
#include "log.h"
#include "pool.h"
#include "session.h"
#include "spool.h"
#include "throttle.h"
#include "tls.h"
#include "workq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_SESSION_HEAD 4
#define FUZZ_SESSION_BUDGET_MS 50    /* loop time for one session */
#define FUZZ_SESSION_FREE_MS 3000    /* bound for a freed session, pool */
#define FUZZ_SESSION_QUIET_PASSES 3  /* idle loop passes that mean "quiet" */
#define FUZZ_SESSION_LIVELOCK_MS 1000 /* one loop run that never goes idle */
#define FUZZ_SESSION_LOCKSTEP 7      /* byte 2 bits 4-6: line by line */
#define FUZZ_SESSION_DNS_WAIT_MS 10  /* per dropped query: dns_timeout 5 ms + slack */
#define FUZZ_SESSION_BACKEND_WAIT_MS 15 /* backend timeouts 10 ms + slack */
#define FUZZ_SESSION_REPLY_LINE_MAX 1100 /* relayed lines may reach 1000 */
#define FUZZ_SESSION_BACKEND_NAME "backend.fuzz.example"
#define FUZZ_SESSION_PTR_NAME "mail.fuzz.example"
#define FUZZ_SESSION_EHLO /* the EHLO reply's first lines */                   \
	"250-" FUZZ_SESSION_BACKEND_NAME "\r\n250-PIPELINING\r\n"              \
	"250-SIZE 10240000\r\n250-XCLIENT NAME ADDR PORT PROTO HELO\r\n"       \
	"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
#define FUZZ_SESSION_DNSBL "dnsbl.fuzz.example*2 list.fuzz.example=127.0.0.[2..4]*3"

enum fuzz_session_stage {
	STAGE_NONE,
	STAGE_GREETING,
	STAGE_EHLO,
	STAGE_XCLIENT,
	STAGE_EHLO_XCLIENT, /* EHLO after XCLIENT */
	STAGE_MAIL,
	STAGE_RCPT,
	STAGE_DATA,
	STAGE_DOT,
	STAGE_RSET,
	STAGE_QUIT,
	STAGE_OTHER, /* NOOP and anything unexpected */
};

enum fuzz_session_fault {
	FAULT_421,       /* 421 and close, as Postfix does */
	FAULT_451,
	FAULT_554,
	FAULT_CLOSE,     /* close without a word */
	FAULT_SILENT,    /* never answer */
	FAULT_GARBAGE,   /* not a reply */
	FAULT_BARE_LF,   /* reply ended by a bare LF */
	FAULT_MULTI,     /* thirty continuation lines first */
	FAULT_LONG,      /* reply line over 1000 bytes */
	FAULT_EXTRA,     /* an unsolicited reply after the right one */
	FAULT_MIXED,     /* multi-line reply with two codes */
	FAULT_PLAIN,     /* EHLO without extensions; else no enhanced code */
	FAULT_CAPS,      /* EHLO with other extensions; else an odd 2xx */
	FAULT_CONTROL,   /* control bytes in the text */
	FAULT_SPLIT,     /* the reply in two writes, a loop turn apart */
	FAULT_TEMP_MULTI,/* multi-line 451 */
};

enum fuzz_session_dns { DNS_ANSWER, DNS_NXDOMAIN, DNS_SERVFAIL, DNS_SILENT };

struct fuzz_session_conn {
	LIST_ENTRY(fuzz_session_conn) link;
	struct bufferevent *bev;
	struct event *later;        /* FAULT_SPLIT: the rest of a reply */
	struct evbuffer *later_buf;
	bool in_data;
	bool in_bdat;               /* reading BDAT's octets */
	char bdat_last;             /* the last octet read ('\n' at first) */
	unsigned long long bdat_left;
	bool xclient_seen;
	bool pipelining;            /* offered in the last EHLO reply */
	bool close_after_write;
};

static struct {
	struct session_env w;    /* as worker_main fills it */
	struct spool_env spool;
	struct workq *workq;
	struct config cfg;
	struct dnsbl_list dnsbl;
	SSL_CTX *tls;
	char dir[64];
	struct evconnlistener *backend;
	struct evdns_server_port *dns_port;
	struct event *tick;
	struct event *watchdog;      /* ends a loop run that never goes idle */
	bool livelock;
	LIST_HEAD(, fuzz_session_conn) conns;
	unsigned n_conns;
	unsigned long long activity; /* bumped by every callback of ours */

	/* this input */
	uint16_t skip[STAGE_OTHER + 1]; /* FUZZ_SESSION_SKIP: kinds per stage */
	enum fuzz_session_stage fault_stage;
	enum fuzz_session_fault fault_kind;
	enum fuzz_session_dns dns_mode;
	bool chunking;               /* CHUNKING offered */
	long long expect_until;      /* a sluice timer is due before then */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	char peer_text[64];          /* as XCLIENT ADDR= must carry it */
	int client;                  /* our end of the socketpair, -1 closed */
	bool client_eof;
	/* reply syntax check of sluice's output */
	size_t line_len;
	bool line_cr;
	unsigned lines;
	bool tls_started;
	char line_head[5];
} fz;

static long long fuzz_session_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Something now waits on one of sluice's timers: keep the loop running
 * for it, up to ms from now (within the input's budget). */
static void fuzz_session_expect(long ms)
{
	long long until = fuzz_session_now_ms() + ms;
	if (until > fz.expect_until)
		fz.expect_until = until;
}

static void fuzz_session_die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_session: %s%s%s\n", what, detail ? ": " : "",
		detail ? detail : "");
	abort();
}

/* --- the scripted backend ---------------------------------------------- */

static void fuzz_session_conn_free(struct fuzz_session_conn *c)
{
	LIST_REMOVE(c, link);
	fz.n_conns--;
	bufferevent_free(c->bev);
	event_free(c->later);
	evbuffer_free(c->later_buf);
	free(c);
}

static void fuzz_session_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fuzz_session_conn *c = arg;
	fz.activity++;
	bufferevent_write_buffer(c->bev, c->later_buf);
}

static void fuzz_session_send(struct fuzz_session_conn *c, const char *text)
{
	bufferevent_write(c->bev, text, strlen(text));
}

/* The first line's code of a reply text, "250" when it has none. */
static void fuzz_session_code(const char *text, char code[4])
{
	memcpy(code, "250", 4);
	if (strlen(text) >= 3)
		memcpy(code, text, 3);
}

/*
 * Answers one stage with text (CR LF included, may be multi-line), or
 * with the input's fault when this is its stage. Returns false when the
 * connection is gone.
 */
static bool fuzz_session_answer(struct fuzz_session_conn *c,
				enum fuzz_session_stage stage, const char *text)
{
	char code[4], buf[1400];
	bool ehlo = stage == STAGE_EHLO || stage == STAGE_EHLO_XCLIENT;

	if (ehlo)
		c->pipelining = true; /* the normal reply offers it */
	if (stage != fz.fault_stage) {
		fuzz_session_send(c, text);
		return true;
	}
	fuzz_session_code(text, code);
	switch (fz.fault_kind) {
	case FAULT_421:
		fuzz_session_send(c, "421 4.3.0 " FUZZ_SESSION_BACKEND_NAME
				  " Error: fuzz fault\r\n");
		c->close_after_write = true;
		break;
	case FAULT_451:
		fuzz_session_send(c, "451 4.3.0 Error: fuzz fault\r\n");
		break;
	case FAULT_554:
		fuzz_session_send(c, "554 5.7.1 Error: fuzz fault\r\n");
		break;
	case FAULT_CLOSE:
		fuzz_session_conn_free(c);
		return false;
	case FAULT_SILENT:
		fuzz_session_expect(FUZZ_SESSION_BACKEND_WAIT_MS);
		break;
	case FAULT_GARBAGE:
		fuzz_session_send(c, "hello there\r\n");
		break;
	case FAULT_BARE_LF:
		snprintf(buf, sizeof buf, "%s 2.0.0 bare newline\n", code);
		fuzz_session_send(c, buf);
		break;
	case FAULT_MULTI:
		for (int i = 0; i < 30; i++) {
			snprintf(buf, sizeof buf, "%s-fuzz line %d\r\n", code, i);
			fuzz_session_send(c, buf);
		}
		fuzz_session_send(c, text);
		break;
	case FAULT_LONG: {
		int n = snprintf(buf, sizeof buf, "%s ", code);
		memset(buf + n, 'x', 1100);
		memcpy(buf + n + 1100, "\r\n", 3);
		fuzz_session_send(c, buf);
		break;
	}
	case FAULT_EXTRA:
		fuzz_session_send(c, text);
		fuzz_session_send(c, "250 2.0.0 unsolicited\r\n");
		break;
	case FAULT_MIXED:
		snprintf(buf, sizeof buf, "%s-first\r\n299 2.0.0 second code\r\n", code);
		fuzz_session_send(c, buf);
		break;
	case FAULT_PLAIN:
		if (ehlo) {
			c->pipelining = false;
			fuzz_session_send(c, "250 " FUZZ_SESSION_BACKEND_NAME "\r\n");
		} else {
			snprintf(buf, sizeof buf, "%s no enhanced code\r\n", code);
			fuzz_session_send(c, buf);
		}
		break;
	case FAULT_CAPS:
		if (ehlo) {
			fuzz_session_send(c, "250-" FUZZ_SESSION_BACKEND_NAME "\r\n"
				"250-PIPELINING\r\n250-SIZE 100\r\n250-STARTTLS\r\n"
				"250-XCLIENT ADDR\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n");
		} else {
			snprintf(buf, sizeof buf, "%c52 %c.0.0 odd code\r\n", code[0],
				 code[0]);
			fuzz_session_send(c, buf);
		}
		break;
	case FAULT_CONTROL:
		snprintf(buf, sizeof buf, "%s 2.0.0 ctl\x01\x7f\x1b[0m\r\n", code);
		fuzz_session_send(c, buf);
		break;
	case FAULT_SPLIT: {
		size_t half = strlen(text) / 2;
		bufferevent_write(c->bev, text, half);
		evbuffer_add(c->later_buf, text + half, strlen(text) - half);
		struct timeval tv = {0, 1000};
		evtimer_add(c->later, &tv);
		fuzz_session_expect(2);
		break;
	}
	case FAULT_TEMP_MULTI:
		fuzz_session_send(c, "451-4.3.0 first\r\n451-4.3.0 second\r\n"
				  "451 4.3.0 last\r\n");
		break;
	}
	if (stage == STAGE_DATA && strncmp(code, "354", 3) == 0 &&
	    (fz.fault_kind == FAULT_EXTRA || fz.fault_kind == FAULT_MULTI ||
	     fz.fault_kind == FAULT_SPLIT || fz.fault_kind == FAULT_SILENT ||
	     fz.fault_kind == FAULT_BARE_LF || fz.fault_kind == FAULT_CONTROL ||
	     fz.fault_kind == FAULT_PLAIN))
		c->in_data = true; /* the server took it as 354 */
	return true;
}

/* What sluice may say to a mail server, nothing else (HOSTILE G8). */
static enum fuzz_session_stage fuzz_session_verb(struct fuzz_session_conn *c,
						  const char *line, bool *ends_group)
{
	static const struct {
		const char *verb;
		enum fuzz_session_stage stage;
		bool ends_group;
	} verbs[] = {
		{"EHLO ", STAGE_EHLO, true},   {"HELO ", STAGE_EHLO, true},
		{"XCLIENT ", STAGE_XCLIENT, true},
		{"MAIL FROM:", STAGE_MAIL, false},
		{"RCPT TO:", STAGE_RCPT, false}, {"DATA", STAGE_DATA, true},
		{"RSET", STAGE_RSET, false},   {"QUIT", STAGE_QUIT, true},
		{"BDAT ", STAGE_DOT, true},
		{"NOOP", STAGE_OTHER, true},
	};
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
		size_t n = strlen(verbs[i].verb);
		if (strncasecmp(line, verbs[i].verb, n) != 0)
			continue;
		if (verbs[i].verb[n - 1] != ' ' && verbs[i].verb[n - 1] != ':' &&
		    line[n] != '\0')
			break;
		*ends_group = verbs[i].ends_group;
		if (verbs[i].stage == STAGE_EHLO && c->xclient_seen)
			return STAGE_EHLO_XCLIENT;
		return verbs[i].stage;
	}
	fuzz_session_die("sluice sent the backend a command it never sends", line);
	return STAGE_OTHER;
}

/* "BDAT <n> LAST", the only BDAT sluice sends, and only when offered:
 * its octets are read next (fuzz_session_bdat_octets). */
static void fuzz_session_bdat(struct fuzz_session_conn *c, const char *line)
{
	const char *p = line + 5;
	char *end;
	if (!fz.chunking)
		fuzz_session_die("BDAT without CHUNKING offered", line);
	if (*p < '0' || *p > '9')
		fuzz_session_die("malformed BDAT", line);
	unsigned long long n = strtoull(p, &end, 10);
	if (strcmp(end, " LAST") != 0)
		fuzz_session_die("malformed BDAT", line);
	c->in_bdat = true;
	c->bdat_last = '\n';
	c->bdat_left = n;
}

/* Takes what has come of BDAT's octets: whole CR LF lines, nothing bare.
 * True once all have come (then nothing may follow before the answer:
 * BDAT LAST ends its group). */
static bool fuzz_session_bdat_octets(struct fuzz_session_conn *c,
				     struct evbuffer *in)
{
	size_t have = evbuffer_get_length(in);
	size_t take = have < c->bdat_left ? have : (size_t)c->bdat_left;
	const unsigned char *o = take ? evbuffer_pullup(in, (ev_ssize_t)take) : NULL;
	for (size_t i = 0; i < take; i++) {
		if ((o[i] == '\n') != (c->bdat_last == '\r'))
			fuzz_session_die("bare CR or LF in BDAT octets", "");
		c->bdat_last = (char)o[i];
	}
	evbuffer_drain(in, take);
	c->bdat_left -= take;
	if (c->bdat_left > 0)
		return false;
	if (c->bdat_last != '\n')
		fuzz_session_die("BDAT octets end inside a line", "");
	c->in_bdat = false;
	if (evbuffer_get_length(in) > 0)
		fuzz_session_die("command pipelined after BDAT LAST", "");
	return true;
}

/* XCLIENT carries the real peer and a name sluice confirmed, never the
 * client's word. */
static void fuzz_session_check_xclient(const char *line)
{
	const char *p = strstr(line, " ADDR=");
	if (p) {
		p += 6;
		size_t n = strcspn(p, " ");
		if (n != strlen(fz.peer_text) || strncasecmp(p, fz.peer_text, n) != 0)
			fuzz_session_die("XCLIENT ADDR is not the peer", line);
	}
	p = strstr(line, " NAME=");
	if (p) {
		p += 6;
		size_t n = strcspn(p, " ");
		if (!(n == 13 && !strncmp(p, "[UNAVAILABLE]", n)) &&
		    !(n == 13 && !strncmp(p, "[TEMPUNAVAIL]", n)) &&
		    !(n == strlen(FUZZ_SESSION_PTR_NAME) &&
		      !strncasecmp(p, FUZZ_SESSION_PTR_NAME, n)))
			fuzz_session_die("XCLIENT NAME is not a confirmed name", line);
	}
}

static void fuzz_session_backend_read_cb(struct bufferevent *bev, void *arg)
{
	struct fuzz_session_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	fz.activity++;
	for (;;) {
		if (c->in_bdat) {
			if (!fuzz_session_bdat_octets(c, in))
				return;
			if (!fuzz_session_answer(c, STAGE_DOT,
						 "250 2.0.0 Ok: queued as FUZZ\r\n"))
				return;
		}
		if (!(line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT)))
			break;
		/* Body lines may carry NUL (Postfix takes it); nothing may
		 * carry a bare CR or LF, and commands no NUL either. */
		if (memchr(line, '\r', len) || memchr(line, '\n', len))
			fuzz_session_die("bare CR or LF toward the backend", line);
		if (!c->in_data && strlen(line) != len)
			fuzz_session_die("NUL in a command toward the backend", line);
		if (c->in_data) {
			if (strcmp(line, ".") == 0) {
				c->in_data = false;
				free(line);
				if (!fuzz_session_answer(c, STAGE_DOT,
							 "250 2.0.0 Ok: queued as FUZZ\r\n"))
					return;
			} else {
				free(line);
			}
			continue;
		}
		bool ends_group = true;
		enum fuzz_session_stage stage = fuzz_session_verb(c, line, &ends_group);
		if (stage == STAGE_DOT) { /* BDAT: its octets come first */
			fuzz_session_bdat(c, line);
			free(line);
			continue;
		}
		/* RFC 2920: nothing may follow a group's last command before
		 * its reply, nor any command without PIPELINING. */
		if ((ends_group || !c->pipelining) && evbuffer_get_length(in) > 0)
			fuzz_session_die("command pipelined where it must not be", line);
		const char *reply = "502 5.5.2 Error: command not recognized\r\n";
		switch (stage) {
		case STAGE_EHLO:
		case STAGE_EHLO_XCLIENT:
			reply = strncasecmp(line, "HELO", 4) == 0
				? "250 " FUZZ_SESSION_BACKEND_NAME "\r\n"
				: fz.chunking ? FUZZ_SESSION_EHLO "250-DSN\r\n250 CHUNKING\r\n"
					      : FUZZ_SESSION_EHLO "250 DSN\r\n";
			break;
		case STAGE_XCLIENT:
			fuzz_session_check_xclient(line);
			c->xclient_seen = true;
			reply = "220 " FUZZ_SESSION_BACKEND_NAME " ESMTP Postfix\r\n";
			break;
		case STAGE_MAIL:
			reply = "250 2.1.0 Ok\r\n";
			break;
		case STAGE_RCPT:
			reply = "250 2.1.5 Ok\r\n";
			break;
		case STAGE_DATA:
			reply = "354 End data with <CR><LF>.<CR><LF>\r\n";
			c->in_data = stage != fz.fault_stage;
			break;
		case STAGE_RSET:
		case STAGE_OTHER:
			reply = "250 2.0.0 Ok\r\n";
			break;
		case STAGE_QUIT:
			reply = "221 2.0.0 Bye\r\n";
			c->close_after_write = true;
			break;
		default:
			break;
		}
		free(line);
		if (!fuzz_session_answer(c, stage, reply))
			return;
	}
}

static void fuzz_session_backend_write_cb(struct bufferevent *bev, void *arg)
{
	struct fuzz_session_conn *c = arg;
	fz.activity++;
	if (c->close_after_write &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
	    evbuffer_get_length(c->later_buf) == 0)
		fuzz_session_conn_free(c);
}

static void fuzz_session_backend_event_cb(struct bufferevent *bev, short what,
					  void *arg)
{
	fz.activity++;
	fuzz_session_conn_free(arg);
}

static void fuzz_session_backend_accept_cb(struct evconnlistener *l,
					   evutil_socket_t fd,
					   struct sockaddr *sa, int len, void *arg)
{
	struct fuzz_session_conn *c = calloc(1, sizeof *c);
	fz.activity++;
	if (!c)
		fuzz_session_die("out of memory", NULL);
	c->bev = bufferevent_socket_new(fz.w.base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->later = evtimer_new(fz.w.base, fuzz_session_later_cb, c);
	c->later_buf = evbuffer_new();
	if (!c->bev || !c->later || !c->later_buf)
		fuzz_session_die("out of memory", NULL);
	LIST_INSERT_HEAD(&fz.conns, c, link);
	fz.n_conns++;
	bufferevent_setcb(c->bev, fuzz_session_backend_read_cb,
			  fuzz_session_backend_write_cb,
			  fuzz_session_backend_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	fuzz_session_answer(c, STAGE_GREETING,
			    "220 " FUZZ_SESSION_BACKEND_NAME " ESMTP Postfix\r\n");
}

static void fuzz_session_backend_close_all(void)
{
	while (!LIST_EMPTY(&fz.conns))
		fuzz_session_conn_free(LIST_FIRST(&fz.conns));
}

/* --- the DNS server ------------------------------------------------------ */

static bool fuzz_session_ends_with(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);
	return n >= m && strcasecmp(name + n - m, suffix) == 0;
}

static void fuzz_session_dns_cb(struct evdns_server_request *req, void *arg)
{
	fz.activity++;
	switch (fz.dns_mode) {
	case DNS_SILENT:
		fuzz_session_expect(FUZZ_SESSION_DNS_WAIT_MS);
		evdns_server_request_drop(req);
		return;
	case DNS_SERVFAIL:
		evdns_server_request_respond(req, DNS_ERR_SERVERFAILED);
		return;
	case DNS_NXDOMAIN:
		evdns_server_request_respond(req, DNS_ERR_NOTEXIST);
		return;
	case DNS_ANSWER:
		break;
	}
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)&fz.peer;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&fz.peer;
	for (int i = 0; i < req->nquestions; i++) {
		const struct evdns_server_question *q = req->questions[i];
		if (q->type == EVDNS_TYPE_PTR) {
			evdns_server_request_add_ptr_reply(req, NULL, q->name,
							   FUZZ_SESSION_PTR_NAME, 60);
		} else if (q->type == EVDNS_TYPE_A &&
			   fuzz_session_ends_with(q->name, FUZZ_SESSION_PTR_NAME)) {
			if (fz.peer.ss_family == AF_INET)
				evdns_server_request_add_a_reply(req, q->name, 1,
								 &in4->sin_addr, 60);
		} else if (q->type == EVDNS_TYPE_AAAA &&
			   fuzz_session_ends_with(q->name, FUZZ_SESSION_PTR_NAME)) {
			if (fz.peer.ss_family == AF_INET6)
				evdns_server_request_add_aaaa_reply(req, q->name, 1,
								    &in6->sin6_addr, 60);
		} else if (q->type == EVDNS_TYPE_A) {
			/* DNSBL: listed at 127.0.0.2 */
			struct in_addr listed;
			inet_pton(AF_INET, "127.0.0.2", &listed);
			evdns_server_request_add_a_reply(req, q->name, 1, &listed, 60);
		}
	}
	evdns_server_request_respond(req, 0);
}

/* --- the client ---------------------------------------------------------- */

static void fuzz_session_bad_reply(const char *why)
{
	fprintf(stderr, "fuzz_session: reply line %u to the client: %s\n",
		fz.lines + 1, why);
	abort();
}

/* Every reply line to the client is "ddd[ -]text CR LF" until STARTTLS
 * is answered; then the bytes are TLS records. */
static void fuzz_session_check_output(const char *p, size_t n)
{
	for (size_t i = 0; i < n && !fz.tls_started; i++) {
		char ch = p[i];
		if (fz.line_cr && ch != '\n')
			fuzz_session_bad_reply("bare CR");
		if (ch == '\n') {
			if (!fz.line_cr)
				fuzz_session_bad_reply("bare LF");
			if (fz.line_len < 6)
				fuzz_session_bad_reply("too short");
			if (fz.lines > 0 && memcmp(fz.line_head, "220 ", 4) == 0)
				fz.tls_started = true;
			fz.lines++;
			fz.line_len = 0;
			fz.line_cr = false;
			continue;
		}
		if (fz.line_len < 4)
			fz.line_head[fz.line_len] = ch;
		if (fz.line_len < 3 && (ch < '0' + (fz.line_len == 0 ? 2 : 0) ||
					ch > (fz.line_len == 0 ? '5' : '9')))
			fuzz_session_bad_reply("bad code");
		if (fz.line_len == 3 && ch != ' ' && ch != '-')
			fuzz_session_bad_reply("bad separator");
		if (++fz.line_len > FUZZ_SESSION_REPLY_LINE_MAX)
			fuzz_session_bad_reply("too long");
		fz.line_cr = ch == '\r';
	}
}

static void fuzz_session_client_read(void)
{
	char buf[16384];
	while (fz.client >= 0 && !fz.client_eof) {
		ssize_t n = read(fz.client, buf, sizeof buf);
		if (n > 0) {
			fz.activity++;
			fuzz_session_check_output(buf, (size_t)n);
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			fz.client_eof = true;
		if (n < 0 && errno == EINTR)
			continue;
		return;
	}
}

/* --- driving the loop ---------------------------------------------------- */

static void fuzz_session_tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

static bool fuzz_session_busy(void)
{
	return event_base_get_num_events(fz.w.base, EVENT_BASE_COUNT_ACTIVE) > 0 ||
	       workq_pending(fz.workq) > 0;
}

static void fuzz_session_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	fz.livelock = true;
	event_base_loopbreak(fz.w.base);
}

/*
 * One run of the loop, then what sluice said. EVLOOP_NONBLOCK returns
 * only once a turn finds nothing active (EVLOOP_ONCE likewise): if sluice keeps itself
 * busy with no input from us for FUZZ_SESSION_LIVELOCK_MS, that is a
 * finding (a reconnect storm, a callback that re-arms itself).
 */
static void fuzz_session_loop(int flags)
{
	struct timeval tv = {FUZZ_SESSION_LIVELOCK_MS / 1000,
			     FUZZ_SESSION_LIVELOCK_MS % 1000 * 1000};
	evtimer_add(fz.watchdog, &tv);
	event_base_loop(fz.w.base, flags);
	evtimer_del(fz.watchdog);
	if (fz.livelock)
		fuzz_session_die("the loop never went idle for 1 s", "livelock");
	fuzz_session_client_read();
}

static void fuzz_session_pass(void)
{
	fuzz_session_loop(EVLOOP_NONBLOCK);
}

/*
 * Runs the loop until done() (when given), or until quiet: nothing of
 * ours ran and nothing is active for FUZZ_SESSION_QUIET_PASSES passes.
 * While quiet but a timer is expected (done() pending, a silent stub,
 * a thread job), waits for the loop in 1 ms steps. Never past deadline.
 */
static void fuzz_session_settle(long long deadline, bool (*done)(void))
{
	unsigned quiet = 0;
	while (fuzz_session_now_ms() < deadline) {
		if (done && done())
			return;
		unsigned long long before = fz.activity;
		fuzz_session_pass();
		if (fz.activity != before || fuzz_session_busy()) {
			quiet = 0;
			continue;
		}
		if (++quiet < FUZZ_SESSION_QUIET_PASSES)
			continue;
		if (!done && fuzz_session_now_ms() >= fz.expect_until)
			return;
		struct timeval tv = {0, 1000};
		evtimer_add(fz.tick, &tv);
		fuzz_session_loop(EVLOOP_ONCE);
		quiet = 0;
	}
}

static bool fuzz_session_greeted(void)
{
	return fz.lines > 0 || fz.client_eof;
}

static bool fuzz_session_gone(void)
{
	return session_count() == 0;
}

static bool fuzz_session_pool_empty(void)
{
	/* Backends still connecting arrive at our listener: close them too. */
	fuzz_session_backend_close_all();
	return pool_open_count(fz.w.pool) == 0 && fz.n_conns == 0;
}

static bool fuzz_session_workq_empty(void)
{
	return workq_pending(fz.workq) == 0;
}

static uint32_t fuzz_session_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Lockstep: the length of the next group an RFC 2920 client would send
 * before waiting for replies. MAIL, RCPT and RSET may be followed by more;
 * any other line ends the group; DATA starts a body, which ends with its
 * "." line. STARTTLS does not end it: this client cannot speak TLS, so
 * what follows STARTTLS is sent in the same flight, which is the command
 * injection case (CVE-2011-0411 class) that must be discarded.
 */
static size_t fuzz_session_group(const uint8_t *p, size_t len, bool *in_body)
{
	size_t off = 0;
	while (off < len) {
		const uint8_t *line = p + off;
		const uint8_t *nl = memchr(line, '\n', len - off);
		size_t n = nl ? (size_t)(nl - line) + 1 : len - off;
		off += n;
		if (*in_body) {
			if ((n == 2 && line[0] == '.') ||
			    (n == 3 && line[0] == '.' && line[1] == '\r')) {
				*in_body = false;
				return off;
			}
			continue;
		}
		if (n >= 4 && !strncasecmp((const char *)line, "DATA", 4)) {
			*in_body = true;
			return off;
		}
		if (n < 4 || (strncasecmp((const char *)line, "MAIL", 4) &&
			      strncasecmp((const char *)line, "RCPT", 4) &&
			      strncasecmp((const char *)line, "RSET", 4) &&
			      (n < 8 || strncasecmp((const char *)line, "STARTTLS", 8))))
			return off;
	}
	return off;
}

/* Writes the client's bytes in chunks, one loop pass after each; in
 * lockstep, group by group, each once sluice has gone quiet. */
static void fuzz_session_write(const uint8_t *p, size_t len, uint8_t how,
			       long long deadline)
{
	uint32_t seed = how & 0x0f;
	unsigned shift = (how >> 4) & 7;
	size_t max_chunk = (size_t)1 << (2 * shift);
	bool lockstep = shift == FUZZ_SESSION_LOCKSTEP, in_body = false;
	if (seed)
		seed = seed * 0x9e3779b9u ^ (uint32_t)len;
	while (len > 0 && fz.client >= 0 && fuzz_session_now_ms() < deadline) {
		size_t piece = len;
		if (lockstep) {
			piece = fuzz_session_group(p, len, &in_body);
		} else if (seed) {
			piece = 1 + fuzz_session_rand(&seed) % (len < max_chunk ? len
									  : max_chunk);
		}
		ssize_t n = send(fz.client, p, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return; /* sluice has closed: the rest goes unsaid */
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
		if (lockstep && n == (ssize_t)piece)
			fuzz_session_settle(deadline, NULL);
		else
			fuzz_session_pass();
	}
}

/* --- set-up -------------------------------------------------------------- */

/* A throw-away self-signed P-256 certificate for STARTTLS. */
static void fuzz_session_make_cert(const char *cert_path, const char *key_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	if (!key || !x)
		fuzz_session_die("cannot make a TLS key", NULL);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"fuzz.example", -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, key, EVP_sha256()))
		fuzz_session_die("cannot sign the TLS certificate", NULL);
	FILE *cf = fopen(cert_path, "w"), *kf = fopen(key_path, "w");
	if (!cf || !kf || !PEM_write_X509(cf, x) ||
	    !PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL))
		fuzz_session_die("cannot write the TLS files", fz.dir);
	fclose(cf);
	fclose(kf);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void fuzz_session_endpoint(struct endpoint *ep, const char *text)
{
	if (config_parse_endpoint(text, ep) != 0)
		fuzz_session_die("bad endpoint", text);
}

/* atexit: the files of fuzz_session_setup, and the directory. */
static void fuzz_session_cleanup(void)
{
	static const char *const files[] = {"backend.sock", "cert.pem", "key.pem"};
	char path[128];
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", fz.dir, files[i]);
		unlink(path);
	}
	snprintf(path, sizeof path, "%s/spool", fz.dir);
	rmdir(path);
	rmdir(fz.dir);
}

static void fuzz_session_setup(void)
{
	char path[128], err[256];
	signal(SIGPIPE, SIG_IGN);
	log_init("fuzz_session", 1,
		 getenv("FUZZ_SESSION_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERR);
	snprintf(fz.dir, sizeof fz.dir, "/tmp/sluice-fuzz-XXXXXX");
	if (!mkdtemp(fz.dir))
		fuzz_session_die("mkdtemp", strerror(errno));
	atexit(fuzz_session_cleanup);
	fz.client = -1;
	LIST_INIT(&fz.conns);
	/* "3,1:9": no fault at stage 3, nor of kind 9 at stage 1; to fuzz
	 * past a known bug until it is fixed (docs/fuzzing.md). */
	for (const char *p = getenv("FUZZ_SESSION_SKIP"); p && *p;) {
		char *end;
		unsigned long st = strtoul(p, &end, 10), kind = 16;
		if (end != p && *end == ':')
			kind = strtoul(p = end + 1, &end, 10);
		if (end == p || st > STAGE_OTHER || kind > 16 ||
		    (*end && *end != ','))
			fuzz_session_die("bad FUZZ_SESSION_SKIP", p);
		fz.skip[st] |= kind == 16 ? 0xffff : 1u << kind;
		p = *end ? end + 1 : end;
	}

	struct config *cfg = &fz.cfg;
	config_defaults(cfg);
	snprintf(cfg->myhostname, sizeof cfg->myhostname, "sluice.fuzz.example");
	cfg->user[0] = '\0';
	snprintf(cfg->spool_dir, sizeof cfg->spool_dir, "%s/spool", fz.dir);
	snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s", fz.dir);
	snprintf(path, sizeof path, "%s/spool", fz.dir);
	mkdir(path, 0700);
	/* Every timer short, so that a session outliving the free bound is
	 * a finding and not a slow path. */
	cfg->greet_wait_ms = 0;
	cfg->dns_timeout_ms = 5;
	cfg->smtpd_timeout_ms = 1000;
	cfg->backend_connect_timeout_ms = 10;
	cfg->backend_timeout_ms = 10;
	cfg->backend_data_timeout_ms = 10;
	cfg->backend_idle_ms = 10000;
	cfg->checkout_timeout_ms = 10;
	/* Parks between lockstep groups and before the close now and then,
	 * so that unparking on a byte, on EOF and on the drain is covered. */
	cfg->session_park_delay_ms = 1;
	cfg->shape_rate = 1000000; /* shaping's code paths, not its delays */
	snprintf(path, sizeof path, "unix:%s/backend.sock", fz.dir);
	fuzz_session_endpoint(&cfg->backend, path);

	fz.w.cfg = cfg;
	if (evthread_use_pthreads() != 0 || !(fz.w.base = event_base_new()))
		fuzz_session_die("event base", NULL);
	fz.tick = evtimer_new(fz.w.base, fuzz_session_tick_cb, NULL);
	fz.watchdog = evtimer_new(fz.w.base, fuzz_session_watchdog_cb, NULL);

	/* DNS server: loopback UDP, port chosen by the kernel. */
	int dfd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t slen = sizeof sin;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (dfd < 0 || bind(dfd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
	    getsockname(dfd, (struct sockaddr *)&sin, &slen) != 0)
		fuzz_session_die("DNS socket", strerror(errno));
	fz.dns_port = evdns_add_server_port_with_base(fz.w.base, dfd, 0,
						      fuzz_session_dns_cb, NULL);
	snprintf(path, sizeof path, "127.0.0.1:%u", ntohs(sin.sin_port));
	fuzz_session_endpoint(&cfg->dns_servers[0], path);
	cfg->dns_server_count = 1;

	/* Backend: a unix socket. */
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s/backend.sock", fz.dir);
	fz.backend = evconnlistener_new_bind(fz.w.base, fuzz_session_backend_accept_cb,
					     NULL, LEV_OPT_CLOSE_ON_FREE, 64,
					     (struct sockaddr *)&sun, sizeof sun);
	if (!fz.dns_port || !fz.backend)
		fuzz_session_die("backend or DNS server", strerror(errno));

	char cert[128], key[128];
	snprintf(cert, sizeof cert, "%s/cert.pem", fz.dir);
	snprintf(key, sizeof key, "%s/key.pem", fz.dir);
	fuzz_session_make_cert(cert, key);
	snprintf(cfg->tls_cert_file, sizeof cfg->tls_cert_file, "%s", cert);
	snprintf(cfg->tls_key_file, sizeof cfg->tls_key_file, "%s", key);
	if (!(fz.tls = tls_server_ctx(cfg)))
		fuzz_session_die("TLS context", NULL);
	if (dnsbl_parse(FUZZ_SESSION_DNSBL, strlen(FUZZ_SESSION_DNSBL), &fz.dnsbl,
			err, sizeof err) != 0)
		fuzz_session_die("dnsbl_sites", err);

	/* As worker_main, in its order, without listeners or privileges. */
	if (!(fz.w.dns = dns_new(fz.w.base, cfg)))
		fuzz_session_die("resolver", NULL);
	if (!(fz.workq = workq_new(fz.w.base, 2)))
		fuzz_session_die("threads", NULL);
	if (throttle_init(cfg) != 0)
		fuzz_session_die("throttle", NULL);
	fz.w.store = NULL; /* reputation is optional; the session runs without */
	fz.spool = (struct spool_env){ .base = fz.w.base, .workq = fz.workq,
				       .cfg = cfg };
	fz.w.spool = &fz.spool;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_session_setup();
	return 0;
}

/* The settings and the peer this input asks for. */
static void fuzz_session_configure(const uint8_t *h)
{
	struct config *cfg = &fz.cfg;
	fz.fault_stage = (enum fuzz_session_stage)(h[0] & 0x0f);
	if (fz.fault_stage > STAGE_OTHER)
		fz.fault_stage = STAGE_NONE;
	fz.fault_kind = (enum fuzz_session_fault)(h[0] >> 4);
	if (fz.skip[fz.fault_stage] & (1u << fz.fault_kind))
		fz.fault_stage = STAGE_NONE;
	fz.dns_mode = (enum fuzz_session_dns)(h[1] & 3);
	fz.w.tls_server = h[1] & 0x08 ? fz.tls : NULL;
	/* Short enough that the end-of-data hold ends within the input's
	 * budget now and then, so the replay after it is covered too. */
	cfg->shape_time_ms = h[1] & 0x10 ? 30 : 0;
	fz.w.dnsbl = h[1] & 0x20 ? &fz.dnsbl : NULL;
	cfg->bare_newline = h[1] & 0x40 ? CONFIG_BARE_REJECT : CONFIG_BARE_NORMALIZE;
	cfg->backend_xclient = !(h[1] & 0x80);
	cfg->message_memory_max = h[3] & 0x01 ? 512 : 256 * 1024;
	cfg->reject_threshold = h[3] & 0x02 ? 2 : 0;
	cfg->backend_pool_size = h[3] & 0x04 ? 2 : 1;
	/* The fast lane (session_lane.c, lane.c) with bounds short enough
	 * that chunked writes stall past them now and then (its fallbacks);
	 * off for odd chunking seeds, so the buffered path alone is covered
	 * too. */
	cfg->fast_lane = !(h[2] & 0x01);
	fz.chunking = h[2] & 0x02;
	cfg->fast_lane_gap_ms = 20;
	cfg->fast_lane_body_wait_ms = 40;
	fz.w.draining = false;

	/* sluice caches client names for 30 s and more: a peer of its own
	 * for each run keeps the DNS modes above in force. A fixed peer
	 * (bits 3-7 not 0) may hit the cache instead. */
	static uint32_t serial;
	unsigned host = h[3] >> 3;
	uint32_t unique = ++serial;
	memset(&fz.peer, 0, sizeof fz.peer);
	if (h[1] & 0x04) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&fz.peer;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(40000 + host);
		inet_pton(AF_INET6, host ? "2001:db8::" : "2001:db8:ffff::",
			  &in6->sin6_addr);
		if (host) {
			in6->sin6_addr.s6_addr[15] = (uint8_t)host;
		} else {
			in6->sin6_addr.s6_addr[12] = (uint8_t)(unique >> 24);
			in6->sin6_addr.s6_addr[13] = (uint8_t)(unique >> 16);
			in6->sin6_addr.s6_addr[14] = (uint8_t)(unique >> 8);
			in6->sin6_addr.s6_addr[15] = (uint8_t)unique;
		}
		fz.peer_len = sizeof *in6;
		char a[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
		snprintf(fz.peer_text, sizeof fz.peer_text, "IPV6:%s", a);
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&fz.peer;
		in4->sin_family = AF_INET;
		in4->sin_port = htons(40000 + host);
		/* 192.0.2.x, or one of 198.18.0.0/15 in turn (RFC 2544) */
		in4->sin_addr.s_addr = htonl(host ? 0xc0000200u | host
						  : 0xc6120000u | (unique & 0x1ffff));
		fz.peer_len = sizeof *in4;
		inet_ntop(AF_INET, &in4->sin_addr, fz.peer_text, sizeof fz.peer_text);
	}
	fz.expect_until = 0;
	fz.client_eof = false;
	fz.line_len = 0;
	fz.line_cr = false;
	fz.lines = 0;
	fz.tls_started = false;
}

static void fuzz_session_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	session_accept(&fz.w, *(int *)arg, (const struct sockaddr *)&fz.peer, fz.peer_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	if (size < FUZZ_SESSION_HEAD)
		return 0;
	fuzz_session_configure(data);
	if (!(fz.w.pool = pool_new(fz.w.base, fz.w.cfg, NULL)))
		fuzz_session_die("pool", NULL);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		fuzz_session_die("socketpair", strerror(errno));
	fz.client = sv[1];
	/* Accepted from a loop callback, as the listener does: the session
	 * reads the loop's cached clock from its first moment. */
	static int server_fd;
	server_fd = sv[0];
	const struct timeval now = {0, 0};
	if (event_base_once(fz.w.base, -1, EV_TIMEOUT, fuzz_session_accept_cb,
			    &server_fd, &now) != 0)
		fuzz_session_die("event_base_once", NULL);
	fuzz_session_pass();
	if (session_count() != 1)
		fuzz_session_die("session_accept did not start a session", NULL);

	long long deadline = fuzz_session_now_ms() + FUZZ_SESSION_BUDGET_MS;
	if (!(data[2] & 0x80))
		fuzz_session_settle(deadline, fuzz_session_greeted);
	fuzz_session_write(data + FUZZ_SESSION_HEAD, size - FUZZ_SESSION_HEAD,
			   data[2], deadline);
	fuzz_session_settle(deadline, NULL);

	/* The client goes away; the session must follow. */
	close(fz.client);
	fz.client = -1;
	long long bound = fuzz_session_now_ms() + FUZZ_SESSION_FREE_MS;
	fuzz_session_settle(bound, fuzz_session_gone);
	if (session_count() != 0)
		fuzz_session_die("session not freed after the client closed", NULL);

	/* The pool goes too: its connections are closed from the server's
	 * side, as a server that ends the QUIT would. */
	pool_shutdown(fz.w.pool);
	fz.expect_until = 0;
	fuzz_session_settle(fuzz_session_now_ms() + FUZZ_SESSION_BUDGET_MS, NULL);
	bound = fuzz_session_now_ms() + FUZZ_SESSION_FREE_MS;
	fuzz_session_settle(bound, fuzz_session_pool_empty);
	if (!fuzz_session_pool_empty())
		fuzz_session_die("backend connections left after pool_shutdown", NULL);
	fuzz_session_settle(bound, fuzz_session_workq_empty);
	if (workq_pending(fz.workq) != 0)
		fuzz_session_die("thread jobs still pending", NULL);
	/* Spool write jobs done: their deferred callbacks run on this pass. */
	fuzz_session_pass();
	fuzz_session_pass();
	if (fz.spool.memory_buffered != 0)
		fuzz_session_die("memory_buffered not back to zero", NULL);
	pool_free(fz.w.pool);
	fz.w.pool = NULL;
	return 0;
}
