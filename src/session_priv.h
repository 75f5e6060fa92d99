/*
 * session internals shared by session.c (lifecycle, I/O, input loop),
 * session_cmd.c (command table and handlers), session_data.c (DATA and the
 * end-of-data replay) and session_tls.c (STARTTLS). Not for other modules.
 */
#ifndef SLUICE_SESSION_PRIV_H
#define SLUICE_SESSION_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "classify.h"
#include "dns.h"
#include "replay.h"
#include "replies.h"
#include "shape.h"
#include "session.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "smtp_reply.h"

struct bufferevent;
struct lane;
struct session_lane;
struct spool;
struct store_lookup;

#define SESSION_STATES(X)                                                      \
	X(GREETING) /* greeting not yet sent */                                \
	X(INIT)     /* greeted, no HELO yet */                                 \
	X(READY)    /* HELO/EHLO seen, no transaction */                       \
	X(MAIL)     /* MAIL accepted */                                        \
	X(RCPT)     /* at least one RCPT accepted */                           \
	X(DATA)     /* reading the message body */                             \
	X(CLOSING)  /* final reply flushing, then freed */

enum session_state {
#define SESSION_STATE_ENUM(s) SESSION_##s,
	SESSION_STATES(SESSION_STATE_ENUM)
#undef SESSION_STATE_ENUM
};

#define SESSION_CMDS_PER_TURN 32  /* fairness: commands per read event */
#define SESSION_OUT_HIGHWAT 16384 /* stop reading commands above this */
#define SESSION_IN_MAX 65536      /* bytes buffered ahead in command mode */
#define SESSION_PREGREET_MAX 1024 /* bytes read before the verdict */
#define SESSION_FLUSH_TIMEOUT_MS 10000
#define SESSION_TLS_INFO_MAX 96 /* "TLSv1.3 TLS_AES_256_GCM_SHA384 256 bits" */

struct txn {
	char *sender;
	struct smtp_mail_params params;
	char **rcpts;       /* accepted by the server at RCPT time */
	size_t n_rcpts, cap_rcpts;
	size_t rcpts_tried; /* RCPT commands answered, accepted or not */
	char *pending_rcpt; /* under check */
	struct smtp_data data;
	struct spool *body;
	bool data_error;    /* a spool or memory failure during DATA */
	bool memory_full;   /* ... because memory_limit was reached */
	bool lane_rcpts;    /* recipients accepted on a fast lane, now buffered */
	bool mail_kept_up;  /* MAIL came within fast_lane_gap of the reply before */
};

/* Where a session is in the dialogue, as the hang-up metrics and the
 * summary line count it. */
#define SESSION_PHASES(X)                                                   \
	X(SESSION_PHASE_GREETING, "greeting")                               \
	X(SESSION_PHASE_HELO, "helo")                                       \
	X(SESSION_PHASE_MAIL, "mail")                                       \
	X(SESSION_PHASE_RCPT, "rcpt")                                       \
	X(SESSION_PHASE_DATA, "data")                                       \
	X(SESSION_PHASE_END, "end")

enum session_phase {
#define SESSION_PHASE_ENUM(id, name) id,
	SESSION_PHASES(SESSION_PHASE_ENUM)
#undef SESSION_PHASE_ENUM
};

/* What a session waits for while its input is stopped (one at a time). */
#define SESSION_WAITS(X)                                                    \
	X(SESSION_WAIT_NONE, "none")                                        \
	X(SESSION_WAIT_REPLAY, "replay")   /* the mail server's answer */   \
	X(SESSION_WAIT_DNS, "dns")         /* the PTR result, for XCLIENT */ \
	X(SESSION_WAIT_TLS, "tls")         /* the TLS handshake */          \
	X(SESSION_WAIT_SPOOL, "spool")     /* the body reaching the spool */ \
	X(SESSION_WAIT_HOLD, "hold")       /* the end-of-data hold */

enum session_wait {
#define SESSION_WAIT_ENUM(id, name) id,
	SESSION_WAITS(SESSION_WAIT_ENUM)
#undef SESSION_WAIT_ENUM
};

/* A spool's id (its file name and log lines) is the session id times this
 * plus the transaction's number within the session, so that ids stay
 * distinct and readable ("42003": session 42, its third message). */
#define SESSION_TXN_ID_SPAN 1000

/* Ordered by size, with the flags as one-bit fields, so that an idle
 * session costs as little as possible (BENCHMARKS.md, "What a session
 * allocates"): what only some sessions need (TLS details, a transaction)
 * is a pointer, allocated when needed. */
struct session {
	TAILQ_ENTRY(session) link;
	struct session_env *env; /* the worker's, shared by every session */
	struct bufferevent *bev; /* NULL while parked (session_park.c) */
	struct client_identity ident;
	union {                 /* the client's address, for the limits */
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	enum session_state state;
	char *name;             /* confirmed PTR name (session_mem_strndup) */
	char *helo;             /* (session_mem_strndup) */
	struct dns_ptr *dns;
	struct replay *replay;  /* at most one exchange in flight */
	struct session_lane *lane; /* fast lane state (session_lane.c); NULL: never taken */
	struct txn *txn;
	struct event *defer_ev; /* resume input on the next loop turn; the
				 * read event while parked (in the session's
				 * slot: session_mem.c) */
	char *tls_info;         /* protocol and cipher, once TLS is up */
	const char *outcome;    /* why it closed: a string constant */
	long long started_ms;   /* mstime_mono() at accept */
	long long deadline_ms;  /* the next command is due by then (0: not
				 * armed); CLOSING: free by then at the latest */
	unsigned long long bytes_in, bytes_out;
	void (*after_dns)(struct session *s);
	enum session_wait wait; /* input stops while not NONE */
	enum session_phase phase_reached; /* for the summary: where it ended */
	unsigned skipped;       /* of an overlong line, <= SESSION_SKIP_MAX + SESSION_IN_MAX */
	unsigned errors;
	unsigned commands;
	unsigned junk;            /* NOOP, RSET, VRFY, HELP */
	unsigned transactions;
	unsigned rcpt_accepted, rcpt_refused;
	unsigned rcpt_unknown;       /* recipients refused with 5.1.x */
	bool tls : 1;
	bool tls_pending : 1;     /* STARTTLS answered; TLS once the 220 is out */
	bool esmtp : 1;
	bool freed_pending : 1;
	bool skipping : 1;        /* inside an overlong command line */
	bool counted : 1;         /* in client_limits' per-address count */
	bool parked : 1;          /* no bufferevent: waits on defer_ev */
	bool in_input : 1;        /* in the input loop: its replies are written at its end */
	bool client_eof : 1;      /* FIN read after its message left: close once answered */

	/* classification and shaping (session_shape.c) */
	bool trusted : 1;            /* allow list or pass cache */
	bool reject_mode : 1;        /* score reached reject_threshold */
	bool greet_waiting : 1;      /* greet_wait over, DNS still running */
	bool classify_over : 1;      /* session_shape_end ran: no verdict, no outcome after it */
	bool pass_blocked : 1;       /* content refused: no pass this session */
	bool window_wide : 1;        /* the receive window opened at accept */
	struct classify cls;
	struct dnsbl_req *dnsbl;
	struct store_lookup *store_req; /* store = redis: pass + reputation */
	/* The verdict is in: greet (session_greet, set by session.c, so that
	 * classification never steps the session's lifecycle by name). */
	void (*verdict_done)(struct session *s);
	void (*hold_then)(struct session *s); /* runs when the hold ends */
	struct shape shape;          /* the trickle, budget and hold */
};

/* session.c */
void session_set_state(struct session *s, enum session_state st);
void session_reply(struct session *s, enum reply_id id);
/* 421 out of resources written straight to fd, one non-blocking try, for
 * a client without a bufferevent (at accept, or when unparking fails):
 * the bytes written, 0 if not all. The caller closes fd. */
size_t session_refuse_raw(const struct session_env *env, int fd);
/* Counts a reply of len bytes just added to the output (metrics,
 * bytes_out) and sees that it is written on this loop turn. */
void session_count_reply(struct session *s, int code, size_t len);
/* The command's time is up: 421 when reading, then closed. */
void session_timed_out(struct session *s, bool reading);
/* (Re)assigns defer_ev as the resume event (not pending). 0 or -1. */
int session_defer_assign(struct session *s);
void session_reply_relay(struct session *s, const struct smtp_reply *r);
void session_close(struct session *s, const char *outcome);
void session_resume(struct session *s);
void session_set_wait(struct session *s, enum session_wait w);
void session_wait_for(struct session *s, enum session_wait w);
void session_error(struct session *s);
void session_txn_free(struct session *s);
bool session_identity_ready(struct session *s, void (*then)(struct session *));
/* The client sent more after the command line just taken. */
bool session_more_input(struct session *s);
/* Every open session (not those being freed), in accept order. */
void session_foreach(void (*fn)(const struct session *s, void *arg), void *arg);

/* session_mem.c: a zeroed session whose defer_ev points at its own
 * (unassigned) event, NULL when out of memory; its names. */
struct session *session_mem_new(void);
void session_mem_free(struct session *s); /* defer_ev deleted first */
char *session_mem_strndup(const char *p, size_t len);
void session_mem_strfree(char *p);

/* session_cmd.c */
void session_cmd_line(struct session *s, const char *line, size_t len);
void session_cmd_ehlo_reply(struct session *s);
void session_cmd_rcpt_answer(struct session *s, const struct smtp_reply *reply,
			     enum reply_id local);
void session_cmd_rcpt_check(struct session *s);

/* session_lane.c */
/* A lane could be taken at this MAIL but for the PTR result, not in yet:
 * MAIL waits for it (the buffered way's first RCPT would wait as long). */
bool session_lane_awaits_identity(struct session *s);
/* Whether the command being taken came within fast_lane_gap of the last
 * reply leaving (or was pipelined). */
bool session_lane_keeps_up(const struct session *s);
bool session_lane_mail(struct session *s);
bool session_lane_rcpt(struct session *s);
bool session_lane_pipelines(struct session *s, const char *line, size_t len);
/* After a buffered RCPT check: RCPTs still owed from a lost lane are
 * checked next, in order (true: one started). */
bool session_lane_checked(struct session *s);
void session_lane_rset(struct session *s);
void session_lane_command(struct session *s);
void session_lane_arm(struct session *s);
void session_lane_end(struct session *s);
void session_lane_free(struct session *s);
struct lane *session_lane_for_message(struct session *s);
/* A backend connection is held for the session (no parking then). */
bool session_lane_held(const struct session *s);
unsigned session_lane_messages(const struct session *s);
unsigned session_lane_fallbacks(const struct session *s);

/* session_data.c */
void session_data_begin(struct session *s);
bool session_data_input(struct session *s);
/* The client closed before its end-of-data reply: EARLYCLOSE logged and
 * counted, the reputation told, the message not delivered. Called by the
 * release's look at the socket, and by the EOF event of an unshaped
 * session whose message is being spooled (whichever notices it first). */
void session_data_early_close(struct session *s);

void session_install_callbacks(struct session *s);
void session_greet(struct session *s);
void session_arm_command_deadline(struct session *s);

/* session_shape.c */
void session_shape_accept(struct session *s, const struct sockaddr *addr);
void session_shape_greet_timer(struct session *s);
void session_shape_dns_done(struct session *s, enum dns_name_status st,
			    const char *name);
void session_signal(struct session *s, enum signal_id sig, const char *detail);
void session_shape_helo(struct session *s);
void session_shape_body(struct session *s, bool in_body);
bool session_shape_client_gone(struct session *s);
bool session_shape_hold(struct session *s, void (*then)(struct session *));
void session_shape_answered(struct session *s);
void session_shape_delivered(struct session *s, int code, const char *enhanced);
void session_shape_rcpt(struct session *s, int code, const char *enhanced);
void session_shape_early_close(struct session *s);
void session_shape_end(struct session *s, bool hangup);
enum session_phase session_phase(const struct session *s);
const char *session_phase_name(enum session_phase ph);

/* session_park.c */
bool session_parkable(const struct session *s);
/* Arms the park delay when the session is parkable (shaped: one loop
 * turn). */
void session_park_later(struct session *s);
/* Parks the session when parkable; true when it did. */
bool session_park(struct session *s);
/* Parks an untrusted session waiting greet_wait for its greeting, at once;
 * the greeting (shape_greet) takes it back. True when it did. */
bool session_park_greeting(struct session *s);
/* The bufferevent back; false: the session is closed (421, out of memory). */
bool session_unpark(struct session *s);

/* session_tls.c */
void session_tls_start(struct session *s);
void session_tls_done(struct session *s);
void session_tls_flushed(struct session *s);

#endif
