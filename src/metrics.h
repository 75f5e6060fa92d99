/*
 * metrics: counters and gauges shared by all worker processes through one
 * anonymous shared mapping made by the supervisor before fork; each worker
 * writes its own slot, the HTTP endpoint sums the slots. Served in the
 * Prometheus text format on metrics_listen by the supervisor.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>

struct event_base;
struct endpoint;

/* X(NAME, "metric_name", "help", counter|gauge) */
#define METRICS(X)                                                             \
	X(SESSIONS, "sluice_sessions_total", "Client sessions accepted", 1)    \
	X(SESSIONS_ACTIVE, "sluice_sessions_active", "Client sessions open", 0) \
	X(SESSIONS_PARKED, "sluice_sessions_parked", "Client sessions held without buffers (idle, or shaped between lines)", 0) \
	X(SESSION_PARKINGS, "sluice_session_parkings_total", "Client sessions parked (idle, or shaped between lines)", 1) \
	X(TRANSACTIONS, "sluice_transactions_total", "Messages accepted by the backend and acknowledged", 1) \
	X(TRANSACTIONS_FAILED, "sluice_transactions_failed_total", "End-of-data answered 4xx/5xx", 1) \
	X(RECIPIENTS_ACCEPTED, "sluice_recipients_accepted_total", "RCPT answered 2xx", 1) \
	X(RECIPIENTS_REFUSED, "sluice_recipients_refused_total", "RCPT answered 4xx/5xx", 1) \
	X(REPLIES_2XX, "sluice_replies_2xx_total", "Replies 2xx/3xx sent to clients", 1) \
	X(REPLIES_4XX, "sluice_replies_4xx_total", "Replies 4xx sent to clients", 1) \
	X(REPLIES_5XX, "sluice_replies_5xx_total", "Replies 5xx sent to clients", 1) \
	X(POOL_OPEN, "sluice_pool_connections", "Backend connections open", 0) \
	X(POOL_IDLE, "sluice_pool_idle", "Backend connections ready and idle", 0) \
	X(POOL_CONNECTS, "sluice_pool_connects_total", "Backend connections opened", 1) \
	X(POOL_FAILURES, "sluice_pool_failures_total", "Backend connections lost or refused", 1) \
	X(POOL_CHECKOUTS, "sluice_pool_checkouts_total", "Pool checkouts", 1) \
	X(POOL_WAITING, "sluice_pool_waiting", "Checkouts waiting for a connection", 0) \
	X(POOL_WAIT_TIMEOUTS, "sluice_pool_wait_timeouts_total", "Checkouts that timed out", 1) \
	X(SPILLS, "sluice_spills_total", "Messages spilled to disk", 1)      \
	X(MEMORY_BUFFERED, "sluice_memory_buffered_bytes", "Message bytes held in memory", 0) \
	X(MEMORY_LIMIT_HITS, "sluice_memory_limit_hits_total", "DATA refused: memory cap", 1) \
	X(TLS_HANDSHAKES, "sluice_tls_handshakes_total", "STARTTLS handshakes completed", 1) \
	X(LIMIT_LINE_TOO_LONG, "sluice_limit_line_too_long_total", "Command lines over 512", 1) \
	X(LIMIT_ERRORS, "sluice_limit_errors_total", "Sessions closed for too many errors", 1) \
	X(LIMIT_TIMEOUTS, "sluice_limit_timeouts_total", "Sessions closed on command timeout", 1) \
	X(LIMIT_CLIENT_SESSIONS, "sluice_limit_client_sessions_total", "Connections refused: client_connection_limit", 1) \
	X(LIMIT_SESSIONS, "sluice_limit_sessions_total", "Connections refused: session_limit", 1) \
	X(LIMIT_FILES, "sluice_limit_files_total", "Connections refused: out of file descriptors", 1) \
	X(LIMIT_COMMANDS, "sluice_limit_commands_total", "Sessions closed: command_limit", 1) \
	X(LIMIT_TLS_RATE, "sluice_limit_tls_rate_total", "STARTTLS refused: tls_session_rate_limit", 1) \
	X(REFUSED_COMMANDS, "sluice_refused_commands_total", "XCLIENT/XFORWARD/PROXY/AUTH/unknown from clients", 1) \
	X(BARE_NEWLINES, "sluice_bare_newlines_total", "Bare LF or CR seen from clients", 1) \
	X(DNS_QUERIES, "sluice_dns_queries_total", "DNS queries sent", 1)    \
	X(DNS_FAILURES, "sluice_dns_failures_total", "DNS look-ups failed temporarily (timeout, SERVFAIL, REFUSED, FORMERR, NOTIMPL, truncated, unparsable)", 1) \
	X(DNSBL_ERROR_ANSWERS, "sluice_dnsbl_error_answers_total", "DNSBL answers in 127.255.255.0/24: the list refuses our resolver", 1) \
	X(WORKER_RESTARTS, "sluice_worker_restarts_total", "Workers restarted after dying", 1) \
	X(SIGNAL_DNSBL, "sluice_signals_total{signal=\"DNSBL\"}", "Classification signals seen", 1) \
	X(SIGNAL_DNSWL, "sluice_signals_total{signal=\"DNSWL\"}", "", 1) \
	X(SIGNAL_NOPTR, "sluice_signals_total{signal=\"NOPTR\"}", "", 1) \
	X(SIGNAL_PTRUNCONFIRMED, "sluice_signals_total{signal=\"PTRUNCONFIRMED\"}", "", 1) \
	X(SIGNAL_PTRGENERIC, "sluice_signals_total{signal=\"PTRGENERIC\"}", "", 1) \
	X(SIGNAL_PREGREET, "sluice_signals_total{signal=\"PREGREET\"}", "", 1) \
	X(SIGNAL_HELO, "sluice_signals_total{signal=\"HELO\"}", "", 1) \
	X(SIGNAL_PIPELINING, "sluice_signals_total{signal=\"PIPELINING\"}", "", 1) \
	X(SIGNAL_BARENEWLINE, "sluice_signals_total{signal=\"BARENEWLINE\"}", "", 1) \
	X(SIGNAL_NONSMTP, "sluice_signals_total{signal=\"NONSMTP\"}", "", 1) \
	X(SIGNAL_ERRORS, "sluice_signals_total{signal=\"ERRORS\"}", "", 1) \
	X(SIGNAL_DENYLIST, "sluice_signals_total{signal=\"DENYLIST\"}", "", 1) \
	X(SIGNAL_ALLOWLIST, "sluice_signals_total{signal=\"ALLOWLIST\"}", "", 1) \
	X(SIGNAL_REPUTATION, "sluice_signals_total{signal=\"REPUTATION\"}", "", 1) \
	X(SIGNAL_CONTENT, "sluice_signals_total{signal=\"CONTENT\"}", "", 1) \
	X(SIGNAL_PASS, "sluice_signals_total{signal=\"PASS\"}", "", 1) \
	X(SHAPED, "sluice_shaped_sessions_total", "Sessions shaped", 1) \
	X(SHAPED_ACTIVE, "sluice_shaped_sessions", "Sessions being shaped now", 0) \
	X(SHAPED_DELIVERIES, "sluice_shaped_deliveries_total", "Messages delivered from sessions that were shaped", 1) \
	X(REJECTED_CLIENTS, "sluice_rejected_clients_total", "Sessions at reject_threshold", 1) \
	X(FINAL_HOLDS, "sluice_final_holds_total", "End-of-data replies held back for shaped sessions", 1) \
	X(CONTENT_REFUSALS, "sluice_content_refusals_total", "Messages the server refused for their content (5.7.x at end of data)", 1) \
	X(EARLY_CLOSE, "sluice_early_close_total", "Messages not replayed: the client closed before its reply", 1) \
	X(LANES, "sluice_lanes_total", "Fast lanes taken (the envelope relayed live)", 1) \
	X(LANES_ACTIVE, "sluice_lanes", "Backend connections held by fast lanes now", 0) \
	X(LANE_MESSAGES, "sluice_lane_messages_total", "Messages sent on a fast lane", 1) \
	X(LANE_FALLBACK_STALL, "sluice_lane_fallbacks_total{reason=\"stall\"}", "Transactions moved from a fast lane to the buffered path, by reason", 1) \
	X(LANE_FALLBACK_SHAPED, "sluice_lane_fallbacks_total{reason=\"shaped\"}", "", 1) \
	X(LANE_FALLBACK_LOST, "sluice_lane_fallbacks_total{reason=\"lost\"}", "", 1) \
	X(LANE_FALLBACK_BODY, "sluice_lane_fallbacks_total{reason=\"body_wait\"}", "", 1) \
	X(LANE_FALLBACK_WANTED, "sluice_lane_fallbacks_total{reason=\"wanted\"}", "", 1) \
	X(LANE_FALLBACK_REFUSED, "sluice_lane_fallback_refused_total", "Recipients accepted on a fast lane, refused at the replay after a fallback (451 to the client)", 1) \
	X(ORPHAN_ANSWERS, "sluice_orphan_answers_total", "End-of-data answers that came after the client had gone (its retry may duplicate)", 1) \
	X(HANGUP_GREETING, "sluice_shaped_hangups_total{phase=\"greeting\"}", "Shaped sessions that hung up, by phase", 1) \
	X(HANGUP_HELO, "sluice_shaped_hangups_total{phase=\"helo\"}", "", 1) \
	X(HANGUP_MAIL, "sluice_shaped_hangups_total{phase=\"mail\"}", "", 1) \
	X(HANGUP_RCPT, "sluice_shaped_hangups_total{phase=\"rcpt\"}", "", 1) \
	X(HANGUP_DATA, "sluice_shaped_hangups_total{phase=\"data\"}", "", 1) \
	X(HANGUP_0_10, "sluice_shaped_hangups_by_time_total{seconds=\"0-10\"}", "Shaped sessions that hung up, by time shaped", 1) \
	X(HANGUP_10_30, "sluice_shaped_hangups_by_time_total{seconds=\"10-30\"}", "", 1) \
	X(HANGUP_30_60, "sluice_shaped_hangups_by_time_total{seconds=\"30-60\"}", "", 1) \
	X(HANGUP_60_PLUS, "sluice_shaped_hangups_by_time_total{seconds=\"60+\"}", "", 1) \
	X(STORE_REDIS_CONNECTED, "sluice_store_redis_connected", "Workers connected to Redis (store = redis)", 0) \
	X(STORE_REDIS_CONNECT_FAILURES, "sluice_store_redis_connection_failures_total", "Redis connections refused, lost, timed out or dropped as stalled", 1) \
	X(STORE_REDIS_LOOKUPS, "sluice_store_redis_lookups_total", "Redis look-ups started at accept", 1) \
	X(STORE_REDIS_LOOKUP_FAILURES, "sluice_store_redis_lookup_failures_total", "Redis look-ups that failed (down, backlog, connection lost): default classification", 1) \
	X(STORE_REDIS_LOOKUP_TIMEOUTS, "sluice_store_redis_lookup_timeouts_total", "Redis look-ups past redis_timeout: default classification", 1) \
	X(STORE_REDIS_WRITES, "sluice_store_redis_writes_total", "Redis writes (evidence, passes) attempted", 1) \
	X(STORE_REDIS_WRITE_FAILURES, "sluice_store_redis_write_failures_total", "Redis writes dropped (down, backlog), lost or refused", 1) \
	X(STORE_REDIS_BAD_REPLIES, "sluice_store_redis_bad_replies_total", "Redis replies not in sluice's format, read as no record", 1) \
	X(PROXY_HEADERS, "sluice_proxy_headers_total", "PROXY protocol headers accepted (sessions with the header's client address)", 1) \
	X(PROXY_LOCAL, "sluice_proxy_local_total", "PROXY v2 LOCAL connections (health checks) closed quietly", 1) \
	X(PROXY_REFUSED_UNTRUSTED, "sluice_proxy_refused_total{reason=\"untrusted\"}", "Connections on a PROXY listener closed without a session, by reason", 1) \
	X(PROXY_REFUSED_INVALID, "sluice_proxy_refused_total{reason=\"invalid\"}", "", 1) \
	X(PROXY_REFUSED_TIMEOUT, "sluice_proxy_refused_total{reason=\"timeout\"}", "", 1) \
	X(PROXY_REFUSED_UNSUPPORTED, "sluice_proxy_refused_total{reason=\"unsupported\"}", "", 1) \
	X(PROXY_REFUSED_LIMIT, "sluice_proxy_refused_total{reason=\"limit\"}", "", 1) \
	X(LOG_DROPPED, "sluice_log_dropped_total", "Log lines dropped: the log destination did not keep up or was gone", 1) \
	X(BACKEND_XCLIENT_IPV6, "sluice_backend_problems_total{problem=\"xclient_ipv6\"}", "Mail server misconfigurations met (see the MISCONFIGURED warnings)", 1) \
	X(BACKEND_XCLIENT_UNAUTHORIZED, "sluice_backend_problems_total{problem=\"xclient_unauthorized\"}", "", 1) \
	X(BACKEND_XCLIENT_NOT_OFFERED, "sluice_backend_problems_total{problem=\"xclient_not_offered\"}", "", 1)

enum metric_id {
#define METRIC_ENUM(name, m, h, c) METRIC_##name,
	METRICS(METRIC_ENUM)
#undef METRIC_ENUM
	METRIC_COUNT
};

/* Before fork: maps slots for nworkers + 1 (slot 0 = supervisor), in a
 * memfd (metrics_fd) that an upgraded program can map again. */
int metrics_init(unsigned nworkers);
/* Upgraded supervisor: maps the old program's memfd (taking fd) when it
 * holds nworkers + 1 slots of this table (layout == metrics_layout()), so
 * counters go on. 0, or -1 with fd closed: call metrics_init. */
int metrics_adopt(int fd, unsigned nworkers, unsigned long long layout);
/* A hash of the table's names and kinds: equal for programs that lay out
 * slots alike. */
unsigned long long metrics_layout(void);
/* The memfd behind the slots, -1 before metrics_init. */
int metrics_fd(void);
/* In a worker after fork: which slot this process writes; the slot is
 * zeroed for gauges (a restarted worker starts with nothing open). */
void metrics_use_slot(unsigned slot);

/* In the supervisor when a worker has exited: its gauges (sessions open,
 * pool connections) are no longer true; its counters stay in the sums. */
void metrics_clear_gauges(unsigned slot);

void metrics_add(enum metric_id id, long long delta);
static inline void metrics_inc(enum metric_id id) { metrics_add(id, 1); }
long long metrics_get(enum metric_id id); /* sum over slots */
/* One slot's value (per-worker gauges for the status page); 0 out of range. */
long long metrics_get_slot(unsigned slot, enum metric_id id);

struct evhttp;
/* The metrics listener's evhttp (NULL when off), for the status page. */
struct evhttp *metrics_http_server(void);

/* Upgrade: the listening socket for metrics_http_start, already bound
 * to its endpoint by the program before. */
void metrics_http_adopt(int fd);
/* The listening socket, -1 when not serving. */
int metrics_http_fd(void);

/* Serves GET /metrics on ep. 0 or -1. */
int metrics_http_start(struct event_base *base, const struct endpoint *ep);

#endif
