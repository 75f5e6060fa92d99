/*
 * config: sluice's settings, read from a main.cf-style file ("name = value",
 * '#' comments, continuation lines start with white space) with -o
 * overrides. Parsed once at start-up and on SIGHUP in the supervisor; the
 * struct is plain data afterwards, copied into workers by fork.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_LISTEN_MAX 16
#define CONFIG_DNS_MAX 8
#define CONFIG_DEFAULT_PATH "/etc/sluice/sluice.conf"

/* A numeric endpoint: "1.2.3.4:25", "[::1]:25" or "unix:/path".
 * Host names are not accepted (no DNS at start-up). */
struct endpoint {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128]; /* as written in the configuration */
};

enum config_bare_newline { CONFIG_BARE_NORMALIZE, CONFIG_BARE_REJECT };

/* Where reputation and the pass cache live (store.h). */
enum config_store { CONFIG_STORE_LMDB, CONFIG_STORE_REDIS };

struct config {
	struct endpoint listen[CONFIG_LISTEN_MAX];
	size_t listen_count;           /* default 0.0.0.0:25 */
	/* PROXY protocol inbound (proxy_listen.h) */
	struct endpoint proxy_protocol_listen[CONFIG_LISTEN_MAX];
	size_t proxy_protocol_listen_count; /* default none */
	char proxy_trusted_networks[1024];  /* 127.0.0.0/8 ::1 */
	long proxy_timeout_ms;              /* 5s: to read the header */
	struct endpoint backend;       /* default 127.0.0.1:10025 */
	unsigned backend_pool_size;    /* 8 */
	bool backend_xclient;          /* yes */
	bool backend_chunking;         /* yes: BDAT when offered */
	bool backend_tls;              /* no */
	char myhostname[256];          /* default: gethostname() */
	unsigned long long message_size_limit; /* 10240000 (Postfix) */
	unsigned max_recipients;       /* 1000 */
	char tls_cert_file[512];       /* "" = no STARTTLS offered */
	char tls_key_file[512];
	char state_dir[512];           /* /var/lib/sluice */
	char spool_dir[512];           /* /var/spool/sluice */
	char user[64];                 /* "nobody"; "" = do not change user */
	unsigned workers;              /* 0 = one per core */
	struct endpoint dns_servers[CONFIG_DNS_MAX];
	size_t dns_server_count;       /* 0 = /etc/resolv.conf */
	struct endpoint metrics_listen;
	bool metrics_enabled;          /* metrics_listen set */
	enum config_bare_newline bare_newline; /* normalize */

	/* durations in milliseconds */
	long smtpd_timeout_ms;         /* 300s: client idle per command */
	long session_park_delay_ms;    /* 1s: idle before parking; 0 never */
	long dns_timeout_ms;           /* 5s */
	long backend_connect_timeout_ms; /* 30s */
	long backend_timeout_ms;       /* 300s: per backend reply */
	long backend_data_timeout_ms;  /* 600s: reply after the final dot */
	long backend_idle_ms;          /* 240s: recycle idle connections */
	long checkout_timeout_ms;      /* 120s: wait for a pool connection */
	bool fast_lane;                /* yes */
	long fast_lane_gap_ms;         /* 250ms: lane's wait per client command */
	long fast_lane_body_wait_ms;   /* 60s: lane's wait for a body */
	unsigned fast_lane_share;      /* 75: percent of the pool */
	long shutdown_timeout_ms;      /* 30s: drain on SIGTERM */

	unsigned long long message_memory_max; /* 256k: spill beyond */
	unsigned long long memory_limit;       /* 512M: buffered per worker */
	unsigned smtpd_hard_error_limit;       /* 20 */
	unsigned client_connection_limit;      /* 50 sessions per address */
	unsigned session_limit;                /* 10000 sessions per worker */
	unsigned command_limit;                /* 10000 commands per session */
	unsigned tls_session_rate_limit;       /* per address per minute; 0 off */

	/* classification and shaping */
	char dnsbl_sites[2048];        /* postscreen syntax; "" = none */
	long greet_wait_ms;            /* 6s for unknown clients */
	unsigned shape_threshold;      /* 3 */
	unsigned reject_threshold;     /* 0 = off */
	unsigned shape_rate;           /* 5 bytes per second */
	long shape_tick_ms;            /* 0: auto (1/rate s below 10 B/s, else 100 ms) */
	long shape_time_ms;            /* 120s: total hold-back per session */
	long shape_final_hold_ms;      /* 120s: silent wait before a shaped end-of-data reply */
	long pass_ttl_ms;              /* 1d */
	long reputation_halflife_ms;   /* 7d */
	enum config_store store;       /* lmdb */
	struct endpoint redis_server;  /* 127.0.0.1:6379 */
	long redis_timeout_ms;         /* 200ms: per look-up */
	char redis_prefix[64];         /* "sluice:" */
	char cidr_allow_file[512];
	char cidr_deny_file[512];
	unsigned weight_ptr_missing;     /* 1 */
	unsigned weight_ptr_unconfirmed; /* 1 */
	unsigned weight_ptr_generic;     /* 1 */
	unsigned weight_pregreet;        /* 3 */
	unsigned weight_helo;            /* 1 */
	unsigned weight_pipelining;      /* 3 */
	unsigned weight_bare_newline;    /* 2 */
	unsigned weight_non_smtp;        /* 3 */
	unsigned weight_errors;          /* 1 */
	unsigned weight_deny;            /* 100 */
	unsigned weight_reputation;      /* 3: at the worst reputation */
	unsigned weight_network;         /* 2: a network of bad outcomes */
	unsigned weight_content;         /* 3: per content refusal */
	unsigned network_min_addresses;  /* 5 distinct bad addresses */
	unsigned network_bad_share;      /* 10: percent of the good ones */
	unsigned ipv4_network_prefix;    /* 24 */
	unsigned ipv6_client_prefix;     /* 64 */
	unsigned ipv6_network_prefix;    /* 48 */
	unsigned harvest_share;          /* 50: percent of recipients */
};

/* Defaults in *cfg; myhostname from gethostname(). */
void config_defaults(struct config *cfg);

/*
 * config_load: defaults, then FILE (NULL: CONFIG_DEFAULT_PATH; a missing
 * default file is not an error, a missing named file is), then each
 * "name=value" of overrides in order. On error writes
 * "FILE:LINE: what is wrong" (or "-o name=value: what") into err and
 * returns -1.
 */
int config_load(struct config *cfg, const char *path,
		char *const *overrides, size_t n_overrides, char *err,
		size_t err_len);

/* Parses a configuration held in memory (len bytes of untrusted text; no
 * limit on its size beyond memory) over the defaults, named name in
 * errors. For tests and the fuzz target. 0 or -1. */
int config_parse_text(struct config *cfg, const char *name, const char *text,
		      size_t len, char *err, size_t err_len);

/* Prints "name = value" for every setting that differs from its default. */
void config_print_nondefault(const struct config *cfg, FILE *out);

/* The settings table, for tests and docs: name and default text of
 * setting i (default NULL when computed at start-up, e.g. myhostname). */
size_t config_setting_count(void);
const char *config_setting_name(size_t i);
const char *config_setting_default(size_t i);
/* Its one-line description, and its kind ("duration, 1ms to 30d",
 * "endpoint or unix:/path") for generated documentation (tools/gendoc.c). */
const char *config_setting_doc(size_t i);
void config_setting_kind(size_t i, char *buf, size_t cap);

/* The networks of proxy_trusted_networks (CIDRs separated by commas or
 * white space) as a cidr_list (signals.h), or NULL with the reason in err.
 * The caller frees it with cidr_free. */
struct cidr_list *config_proxy_trusted(const struct config *cfg, char *err,
				       size_t err_len);

/* Parsers shared with tests; return 0 or -1. */
int config_parse_duration_ms(const char *s, long *ms);
int config_parse_size(const char *s, unsigned long long *out);
int config_parse_endpoint(const char *s, struct endpoint *ep);

#endif
