/*
 * loadgen: an SMTP load generator for sluice's benchmarks (bench/peers.sh,
 * bench/scale.sh). libevent, one event loop per process; a parent forks
 * --procs children so that each stays under the per-process file limit,
 * and every connection binds its own 127.x source address (round robin
 * over --srcs addresses from --src) so that tens of thousands of sessions
 * do not run out of ports or trip per-address limits.
 *
 * Modes (--mode):
 *   idle        connect, read the greeting, EHLO, hold until the parent
 *               says stop (after --hold seconds once every child is ready,
 *               or at once when the parent gets SIGUSR1).
 *               --starttls: STARTTLS after EHLO, EHLO again, then hold;
 *               handshakes per second are counted.
 *   shaped      connect, greeting, EHLO, then "HELO <pad>" (--line bytes)
 *               over and over until stop; each round measures the rate at
 *               which the server reads (line length / time to the first
 *               byte of the reply) and writes (reply bytes after the first
 *               read / time from the first read to the last); and, per
 *               client, the same over all its rounds (bytes / time summed),
 *               which is what a probe client sees of its session.
 *   throughput  --conns sessions in parallel deliver --messages messages of
 *               --size bytes, --per-conn messages per connection; latency is
 *               MAIL sent -> 250 after the dot. --think-ms T: a session's
 *               next connection opens T ms after the last one closed (a
 *               paced load that leaves the machine idle in between: latency
 *               without saturation); 0, the default, opens it at once.
 *               --xclient N: right after the greeting each connection
 *               names a client with XCLIENT, as sluice does (HELO, PROTO,
 *               PORT, NAME=[UNAVAILABLE], ADDR cycling over N addresses
 *               from 127.1.0.1), waits for the new 220, then EHLO: what a
 *               mail server spends on a proxy's identity, with no proxy.
 *   slow        connect, EHLO, MAIL, RCPT, DATA, then one body line every
 *               --drip-ms until stop, then the dot; the bench counts the
 *               server's backend connections meanwhile.
 *
 * Output: one line of key=value figures on stdout per run. With
 * --ready-file, the parent creates that file once every child has all its
 * sessions in place (modes idle, shaped, slow), so a bench script can
 * measure the server while the load is held.
 *
 * Bounds: every run ends after --timeout seconds at the latest; every reply
 * before the hold must come within --phase-timeout (120 s); connections
 * per child are capped by its file limit; replies longer than LG_LINE_MAX
 * per line are an error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LG_MAX_PROCS 64
#define LG_LINE_MAX 4096
#define LG_TICK_MS 10
#define LG_FD_RESERVE 64 /* descriptors a child keeps for itself */

enum mode { M_IDLE, M_SHAPED, M_THROUGHPUT, M_SLOW };

static struct opts {
	enum mode mode;
	struct sockaddr_in dst;
	uint32_t src_base; /* host order */
	unsigned srcs;
	unsigned procs;
	unsigned conns;
	unsigned long messages;
	unsigned size;
	unsigned per_conn;
	unsigned hold;
	unsigned timeout;
	unsigned rate; /* connections per second, all children */
	unsigned line;
	unsigned drip_ms;
	unsigned think_ms; /* throughput: pause between a session's connections */
	unsigned phase_timeout; /* seconds a reply may take before the hold */
	unsigned xclient; /* throughput: XCLIENT over this many addresses; 0: none */
	int starttls;
	const char *ready_file;
	const char *helo;
} o = {
	.mode = M_IDLE, .srcs = 250, .procs = 1, .conns = 100, .messages = 1000,
	.size = 4096, .per_conn = 1, .hold = 5, .timeout = 300, .rate = 5000,
	.line = 60, .drip_ms = 1000, .phase_timeout = 120, .helo = "loadgen.bench.test",
};

enum cstate { C_CONNECTING, C_BANNER, C_XCLIENT, C_EHLO, C_STARTTLS, C_HANDSHAKE, C_EHLO2,
	      C_HOLD, C_SHAPE, C_MAIL, C_RCPT, C_DATA, C_DOT, C_DRIP, C_QUIT, C_DONE };

struct conn {
	struct bufferevent *bev;
	enum cstate st;
	unsigned id;
	unsigned msgs;       /* messages on this connection */
	double t_sent;       /* MAIL sent, the shaped line sent; idle: connect started */
	double t_first;      /* first byte of the current reply */
	double t_last;       /* last byte seen */
	size_t reply_bytes;  /* bytes of the current reply so far */
	size_t first_bytes;  /* of them, those that came with its first byte */
	double in_bytes, in_secs, out_bytes, out_secs; /* shaped: every round's */
	size_t line_len;     /* shaped: bytes of the line sent */
	size_t pending;      /* bytes left in the input buffer last time */
	struct event *drip;  /* slow: the next body line */
	int counted_ready;
};

struct samples {
	float *v;
	size_t n, cap;
};

/* What a child reports to the parent, then its samples. */
struct report {
	unsigned long attempted, connected, greeted, held, refused, failed, dropped;
	unsigned long tls_ok, tls_failed, msgs_ok, msgs_failed, rounds;
	double t_start, t_ready, t_end, t_tls_first, t_tls_last;
	size_t n_lat, n_in, n_out, n_cin, n_cout;
};

static struct child {
	struct event_base *base;
	struct event *tick, *stop_ev, *timeout_ev;
	struct conn **conns;
	unsigned n_target, n_opened, n_live, n_pending, index;
	unsigned long msgs_target, msgs_assigned;
	struct report r;
	struct samples lat, rin, rout; /* lat: throughput MAIL -> 250; idle: connect -> 421 */
	struct samples cin, cout; /* shaped: each client's rate over all its rounds */
	SSL_CTX *ssl;
	char *body;
	size_t body_len;
	int report_fd;
	int stopping, ready_sent;
} c;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
	fprintf(stderr, "loadgen: %s\n", m);
	exit(2);
}

static void sample_add(struct samples *s, double v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		float *n = realloc(s->v, cap * sizeof *n);
		if (!n)
			return; /* a lost sample, not a lost run */
		s->v = n;
		s->cap = cap;
	}
	s->v[s->n++] = (float)v;
}

static void conn_open(void);
static void reopen_cb(evutil_socket_t fd, short what, void *arg);
static int on_reply(struct conn *k, int code);
static void conn_free(struct conn *k, int ok);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

static void send_line(struct conn *k, const char *text, const char *arg)
{
	/* text, then arg and CRLF when arg is given (text ends in CRLF if not) */
	bufferevent_write(k->bev, text, strlen(text));
	if (arg) {
		bufferevent_write(k->bev, arg, strlen(arg));
		bufferevent_write(k->bev, "\r\n", 2);
	}
}

static void send_xclient(struct conn *k)
{
	static unsigned long sent; /* this process's XCLIENTs so far */
	char line[200];
	unsigned long n = sent++;
	unsigned i = (unsigned)(n % o.xclient);
	snprintf(line, sizeof line, "XCLIENT HELO=%s PROTO=ESMTP PORT=%u "
		 "NAME=[UNAVAILABLE] ADDR=127.1.%u.%u\r\n", o.helo,
		 40000 + (unsigned)(n % 20000), (1 + i) / 256, (1 + i) % 256);
	send_line(k, line, NULL);
}

static void check_ready(void)
{
	if (c.ready_sent || c.n_opened < c.n_target)
		return;
	if (c.r.held + c.r.failed + c.r.refused + c.r.dropped < c.n_target)
		return;
	c.ready_sent = 1;
	c.r.t_ready = now();
	if (write(c.report_fd, "R", 1) != 1)
		die("report pipe");
}

static void mark_held(struct conn *k)
{
	if (!k->counted_ready) {
		k->counted_ready = 1;
		c.r.held++;
		check_ready();
	}
}

static void shaped_send(struct conn *k)
{
	char buf[LG_LINE_MAX];
	size_t n = o.line < 16 ? 16 : o.line > 500 ? 500 : o.line;
	memcpy(buf, "HELO ", 5);
	for (size_t i = 5; i < n - 2; i++)
		buf[i] = 'a' + (char)((i + k->id) % 26);
	buf[n - 2] = '\r';
	buf[n - 1] = '\n';
	k->line_len = n;
	k->t_sent = now();
	k->st = C_SHAPE;
	bufferevent_write(k->bev, buf, n);
}

static void mail_start(struct conn *k)
{
	if (c.stopping || c.msgs_assigned >= c.msgs_target ||
	    (o.per_conn && k->msgs >= o.per_conn)) {
		k->st = C_QUIT;
		send_line(k, "QUIT\r\n", NULL);
		return;
	}
	c.msgs_assigned++;
	k->msgs++;
	k->t_sent = now();
	k->st = C_MAIL;
	send_line(k, "MAIL FROM:<loadgen@bench.test>\r\n", NULL);
}

static void after_ehlo(struct conn *k)
{
	switch (o.mode) {
	case M_IDLE:
		k->st = C_HOLD;
		bufferevent_set_timeouts(k->bev, NULL, NULL); /* held: silence is the point */
		mark_held(k);
		break;
	case M_SHAPED:
		mark_held(k);
		if (!c.stopping)
			shaped_send(k);
		break;
	case M_THROUGHPUT:
	case M_SLOW:
		mail_start(k);
		break;
	}
}

static void drip_cb(evutil_socket_t fd, short what, void *arg);

static void tls_start(struct conn *k)
{
	SSL *ssl = SSL_new(c.ssl);
	struct bufferevent *f = ssl ? bufferevent_openssl_filter_new(
		c.base, k->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
		BEV_OPT_CLOSE_ON_FREE) : NULL;
	if (!f) {
		if (ssl)
			SSL_free(ssl);
		c.r.tls_failed++;
		conn_free(k, 0);
		return;
	}
	k->bev = f;
	k->pending = 0;
	k->reply_bytes = 0;
	k->st = C_HANDSHAKE;
	bufferevent_setcb(f, conn_read_cb, NULL, conn_event_cb, k);
	bufferevent_enable(f, EV_READ | EV_WRITE);
	struct timeval pt = {o.phase_timeout, 0};
	bufferevent_set_timeouts(f, &pt, NULL);
}

/* One complete reply (code, last line) for connection k; 0 when k is gone
 * (freed, or its bufferevent replaced by the TLS filter). */
static int on_reply(struct conn *k, int code)
{
	double t = now();
	switch (k->st) {
	case C_BANNER:
	case C_XCLIENT: /* its answer is a new greeting */
		if (code == 220) {
			if (k->st == C_BANNER)
				c.r.greeted++;
			if (k->st == C_BANNER && o.xclient && o.mode == M_THROUGHPUT) {
				k->st = C_XCLIENT;
				send_xclient(k);
				break;
			}
			k->st = C_EHLO;
			/* shaped: HELO, whose short reply trickles in seconds */
			send_line(k, o.mode == M_SHAPED ? "HELO " : "EHLO ", o.helo);
			break;
		}
		if (code == 421 || code == 554) {
			c.r.refused++;
			if (o.mode == M_IDLE)
				sample_add(&c.lat, (t - k->t_sent) * 1000.0);
		} else
			c.r.failed++;
		k->counted_ready = 1;
		check_ready();
		conn_free(k, 0);
		return 0;
	case C_EHLO:
	case C_EHLO2:
		if (code != 250) {
			c.r.failed++;
			k->counted_ready = 1;
			check_ready();
			conn_free(k, 0);
			return 0;
		}
		if (o.starttls && k->st == C_EHLO) {
			k->st = C_STARTTLS;
			send_line(k, "STARTTLS\r\n", NULL);
			return 1;
		}
		after_ehlo(k);
		break;
	case C_STARTTLS:
		if (code != 220) {
			c.r.tls_failed++;
			c.r.failed++;
			k->counted_ready = 1;
			check_ready();
			conn_free(k, 0);
			return 0;
		}
		tls_start(k);
		return 0;
	case C_SHAPE:
		if (k->t_first > k->t_sent) {
			sample_add(&c.rin, (double)(k->line_len - 1) / (k->t_first - k->t_sent));
			k->in_bytes += (double)(k->line_len - 1);
			k->in_secs += k->t_first - k->t_sent;
		}
		/* The bytes that came with the first one were not timed: a
		 * trickle that moves two or three bytes a walk (a late walk
		 * making up missed ticks) would otherwise read fast. */
		if (k->reply_bytes > k->first_bytes && k->t_last > k->t_first) {
			sample_add(&c.rout, (double)(k->reply_bytes - k->first_bytes) /
						    (k->t_last - k->t_first));
			k->out_bytes += (double)(k->reply_bytes - k->first_bytes);
			k->out_secs += k->t_last - k->t_first;
		}
		c.r.rounds++;
		if (!c.stopping)
			shaped_send(k);
		break;
	case C_MAIL:
		if (code != 250)
			goto msg_fail;
		k->st = C_RCPT;
		send_line(k, "RCPT TO:<sink@example.com>\r\n", NULL);
		break;
	case C_RCPT:
		if (code != 250)
			goto msg_fail;
		k->st = C_DATA;
		send_line(k, "DATA\r\n", NULL);
		break;
	case C_DATA:
		if (code != 354)
			goto msg_fail;
		if (o.mode == M_SLOW) {
			k->st = C_DRIP;
			send_line(k, "Subject: slow\r\n\r\n", NULL);
			bufferevent_set_timeouts(k->bev, NULL, NULL); /* the dot comes at stop */
			mark_held(k);
			k->drip = event_new(c.base, -1, EV_PERSIST, drip_cb, k);
			struct timeval tv = {o.drip_ms / 1000, (o.drip_ms % 1000) * 1000};
			if (!k->drip || event_add(k->drip, &tv) != 0)
				goto msg_fail;
			return 1;
		}
		k->st = C_DOT;
		bufferevent_write(k->bev, c.body, c.body_len);
		break;
	case C_DOT:
		if (code != 250)
			goto msg_fail;
		c.r.msgs_ok++;
		sample_add(&c.lat, (t - k->t_sent) * 1000.0);
		mail_start(k);
		break;
	case C_QUIT:
		conn_free(k, 1);
		return 0;
	default:
		break;
	}
	return k->bev != NULL;
msg_fail:
	c.r.msgs_failed++;
	if (o.mode == M_SLOW) {
		k->counted_ready = 1;
		c.r.failed++;
		check_ready();
	}
	conn_free(k, 0);
	return 0;
}

static void drip_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *k = arg;
	static const char line[] = "slow body line from the load generator\r\n";
	if (c.stopping) {
		event_free(k->drip);
		k->drip = NULL;
		k->st = C_DOT;
		bufferevent_write(k->bev, ".\r\n", 3);
		return;
	}
	bufferevent_write(k->bev, line, sizeof line - 1);
	(void)fd;
	(void)what;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *k = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	double t = now();
	size_t len = evbuffer_get_length(in);
	if (len > k->pending) {
		/* new bytes: the clock of the reply they belong to */
		if (k->reply_bytes == 0) {
			k->t_first = t;
			k->first_bytes = len - k->pending;
		}
		k->t_last = t;
		k->reply_bytes += len - k->pending;
	}
	for (;;) {
		size_t n;
		char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (!line)
			break;
		int last = n < 4 || line[3] == ' ';
		int code = n >= 3 ? atoi(line) : 0;
		free(line);
		if (!last)
			continue;
		/* bytes left over belong to the next reply */
		size_t rest = evbuffer_get_length(in);
		k->reply_bytes -= rest;
		if (!on_reply(k, code))
			return;
		k->reply_bytes = k->first_bytes = rest;
		k->t_first = rest ? t : 0;
	}
	k->pending = evbuffer_get_length(in);
	if (k->pending > LG_LINE_MAX) {
		c.r.failed++;
		conn_free(k, 0);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *k = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (k->st == C_HANDSHAKE) {
			double t = now();
			c.r.tls_ok++;
			if (!c.r.t_tls_first)
				c.r.t_tls_first = t;
			c.r.t_tls_last = t;
			k->st = C_EHLO2;
			send_line(k, "EHLO ", o.helo);
			return;
		}
		c.r.connected++;
		k->st = C_BANNER;
		return;
	}
	if (k->st == C_HANDSHAKE)
		c.r.tls_failed++;
	if (k->st == C_QUIT) {
		conn_free(k, 1);
		return;
	}
	if (k->counted_ready || k->st == C_HOLD || k->st == C_SHAPE || k->st == C_DRIP)
		c.r.dropped++;
	else
		c.r.failed++;
	if (k->st == C_MAIL || k->st == C_RCPT || k->st == C_DATA || k->st == C_DOT ||
	    k->st == C_DRIP)
		c.r.msgs_failed++;
	k->counted_ready = 1;
	check_ready();
	conn_free(k, 0);
}

static void conn_free(struct conn *k, int ok)
{
	c.conns[k->id] = NULL;
	/* What this client saw over its whole session, as a probe would. */
	if (k->in_secs > 0)
		sample_add(&c.cin, k->in_bytes / k->in_secs);
	if (k->out_secs > 0)
		sample_add(&c.cout, k->out_bytes / k->out_secs);
	if (k->drip)
		event_free(k->drip);
	bufferevent_free(k->bev);
	free(k);
	c.n_live--;
	/* throughput: a finished connection makes room for the next one, at
	 * once or after --think-ms (counted as pending so the run goes on) */
	if (o.mode == M_THROUGHPUT && !c.stopping && c.msgs_assigned < c.msgs_target &&
	    c.r.failed < c.msgs_target) { /* a refusing server: no reconnect storm */
		struct timeval tv = {o.think_ms / 1000, (o.think_ms % 1000) * 1000};
		if (!o.think_ms)
			conn_open();
		else if (event_base_once(c.base, -1, EV_TIMEOUT, reopen_cb, NULL, &tv) == 0)
			c.n_pending++;
	}
	if (o.mode == M_THROUGHPUT && c.n_live == 0 && c.n_pending == 0 &&
	    (c.stopping || c.msgs_assigned >= c.msgs_target || c.r.failed >= c.msgs_target))
		event_base_loopbreak(c.base);
	if (c.stopping && c.n_live == 0)
		event_base_loopbreak(c.base);
	(void)ok;
}

static void conn_open(void)
{
	unsigned slot = c.n_opened;
	if (o.mode == M_THROUGHPUT) /* connections come and go: reuse slots */
		for (slot = 0; slot < c.n_target && c.conns[slot]; slot++)
			;
	if (slot >= c.n_target)
		return;
	unsigned gid = c.index + c.n_opened * o.procs; /* global number */
	c.n_opened++;
	c.r.attempted++;
	struct sockaddr_in src = {.sin_family = AF_INET};
	src.sin_addr.s_addr = htonl(o.src_base + gid % o.srcs);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int on = 1;
	struct conn *k = fd >= 0 ? calloc(1, sizeof *k) : NULL;
	if (!k || setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) != 0 ||
	    bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
		if (fd >= 0)
			close(fd);
		free(k);
		c.r.failed++;
		return;
	}
	k->id = slot;
	k->t_sent = now(); /* idle: the clock of a refusal (connect -> 421, in lat) */
	k->bev = bufferevent_socket_new(c.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!k->bev) {
		close(fd);
		free(k);
		c.r.failed++;
		return;
	}
	c.conns[slot] = k;
	c.n_live++;
	bufferevent_setcb(k->bev, conn_read_cb, NULL, conn_event_cb, k);
	bufferevent_enable(k->bev, EV_READ | EV_WRITE);
	/* A connection the server never accepted (its SYN-ACK retries ran out
	 * while the client already counts it established) would wait for its
	 * greeting forever: every reply must come within --phase-timeout. */
	struct timeval pt = {o.phase_timeout, 0};
	bufferevent_set_timeouts(k->bev, &pt, NULL);
	if (bufferevent_socket_connect(k->bev, (struct sockaddr *)&o.dst, sizeof o.dst) != 0) {
		c.r.failed++;
		k->counted_ready = 1;
		conn_free(k, 0);
		check_ready();
	}
}

static void reopen_cb(evutil_socket_t fd, short what, void *arg)
{
	c.n_pending--;
	if (!c.stopping && c.msgs_assigned < c.msgs_target)
		conn_open();
	else if (c.n_live == 0 && c.n_pending == 0)
		event_base_loopbreak(c.base);
	(void)fd;
	(void)what;
	(void)arg;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	/* ramp: this child's share of --rate, per tick */
	unsigned per_tick = o.rate / o.procs / (1000 / LG_TICK_MS);
	if (per_tick == 0)
		per_tick = 1;
	unsigned want = c.n_target;
	for (unsigned i = 0; i < per_tick && c.n_opened < want && !c.stopping; i++) {
		if (o.mode == M_THROUGHPUT && c.msgs_assigned + c.n_live >= c.msgs_target)
			break;
		conn_open();
	}
	if (c.n_opened >= want || c.stopping)
		event_del(c.tick);
	check_ready();
}

static void stop_now(void)
{
	if (c.stopping)
		return;
	c.stopping = 1;
	event_del(c.tick);
	for (unsigned i = 0; i < c.n_target; i++) {
		struct conn *k = c.conns[i];
		if (!k)
			continue;
		if (k->st == C_DRIP) {
			drip_cb(-1, 0, k); /* sends the dot; waits for the 250 */
			continue;
		}
		if (k->st == C_HOLD || k->st == C_SHAPE || k->st == C_CONNECTING ||
		    k->st == C_BANNER || k->st == C_XCLIENT || k->st == C_EHLO || k->st == C_EHLO2 ||
		    k->st == C_HANDSHAKE || k->st == C_STARTTLS)
			conn_free(k, 1);
	}
	if (c.n_live == 0)
		event_base_loopbreak(c.base);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	stop_now();
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	/* the hard bound: whatever is still open goes */
	stop_now();
	event_base_loopbreak(c.base);
}

static void write_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(3);
		b += w;
		n -= (size_t)w;
	}
}

static void build_body(void)
{
	/* headers, then lines of 78 characters up to --size, then the dot */
	size_t cap = o.size + 256;
	c.body = malloc(cap);
	if (!c.body)
		die("out of memory");
	int h = snprintf(c.body, cap, "From: <loadgen@bench.test>\r\nTo: <sink@example.com>\r\n"
				      "Subject: loadgen\r\n\r\n");
	size_t n = (size_t)h;
	while (n + 80 <= o.size) {
		memset(c.body + n, 'x', 78);
		c.body[n + 78] = '\r';
		c.body[n + 79] = '\n';
		n += 80;
	}
	memcpy(c.body + n, ".\r\n", 3);
	c.body_len = n + 3;
}

static void child_run(unsigned index, int report_fd, int stop_fd)
{
	memset(&c, 0, sizeof c);
	c.index = index;
	c.report_fd = report_fd;
	c.n_target = o.conns / o.procs + (index < o.conns % o.procs);
	if (o.mode == M_THROUGHPUT)
		c.msgs_target = o.messages / o.procs + (index < o.messages % o.procs);
	if (o.mode == M_SLOW) { /* one slow message per connection */
		c.msgs_target = c.n_target;
		o.per_conn = 1;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		if (c.n_target + LG_FD_RESERVE > rl.rlim_cur)
			die("too many connections per process: raise --procs");
	}
	c.conns = calloc(c.n_target ? c.n_target : 1, sizeof *c.conns);
	struct event_config *ec = event_config_new();
	c.base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	if (!c.conns || !c.base)
		die("out of memory");
	if (o.starttls) {
		c.ssl = SSL_CTX_new(TLS_client_method());
		if (!c.ssl)
			die("SSL_CTX_new");
		SSL_CTX_set_verify(c.ssl, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_mode(c.ssl, SSL_MODE_RELEASE_BUFFERS);
		SSL_CTX_set_session_cache_mode(c.ssl, SSL_SESS_CACHE_OFF);
	}
	build_body();
	c.tick = event_new(c.base, -1, EV_PERSIST, tick_cb, NULL);
	c.stop_ev = event_new(c.base, stop_fd, EV_READ, stop_cb, NULL);
	c.timeout_ev = evtimer_new(c.base, timeout_cb, NULL);
	struct timeval tv = {0, LG_TICK_MS * 1000}, to = {o.timeout, 0};
	if (!c.tick || !c.stop_ev || !c.timeout_ev || event_add(c.tick, &tv) ||
	    event_add(c.stop_ev, NULL) || event_add(c.timeout_ev, &to))
		die("events");
	c.r.t_start = now();
	if (c.n_target == 0)
		check_ready();
	event_base_dispatch(c.base);
	c.r.t_end = now();
	c.r.n_lat = c.lat.n;
	c.r.n_in = c.rin.n;
	c.r.n_out = c.rout.n;
	c.r.n_cin = c.cin.n;
	c.r.n_cout = c.cout.n;
	write_all(report_fd, "F", 1);
	write_all(report_fd, &c.r, sizeof c.r);
	write_all(report_fd, c.lat.v, c.lat.n * sizeof(float));
	write_all(report_fd, c.rin.v, c.rin.n * sizeof(float));
	write_all(report_fd, c.rout.v, c.rout.n * sizeof(float));
	write_all(report_fd, c.cin.v, c.cin.n * sizeof(float));
	write_all(report_fd, c.cout.v, c.cout.n * sizeof(float));
	_exit(0);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static double pct(struct samples *s, double p)
{
	if (s->n == 0)
		return NAN;
	size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
	return s->v[i];
}

/* n, p1/p50/p99 and the share within 5 +- 0.5 B/s of sorted rates. */
static void print_rates(const char *name, struct samples *s)
{
	size_t ok = 0;
	for (size_t i = 0; i < s->n; i++)
		ok += fabsf(s->v[i] - 5.0f) <= 0.5f;
	printf(" %s_n=%zu %s_p1=%.2f %s_p50=%.2f %s_p99=%.2f %s_5pm05=%.3f", name, s->n, name,
	       pct(s, 1), name, pct(s, 50), name, pct(s, 99), name,
	       s->n ? (double)ok / s->n : 0.0);
}

static void merge(struct samples *dst, const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sample_add(dst, v[i]);
}

static int read_full(int fd, void *p, size_t n)
{
	char *b = p;
	while (n > 0) {
		ssize_t r = read(fd, b, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --port P [--host 127.0.0.1] --mode idle|shaped|throughput|slow\n"
		"  [--conns N] [--procs N] [--src 127.1.0.1] [--srcs N] [--rate conn/s]\n"
		"  [--hold s] [--timeout s] [--ready-file F] [--starttls]\n"
		"  [--messages M] [--size S] [--per-conn K (0: unlimited)]\n"
		"  [--line bytes] [--drip-ms ms] [--helo name] [--phase-timeout s]\n"
		"  [--think-ms ms (throughput: pause between a session's connections)]\n"
		"  [--xclient N (throughput: XCLIENT ADDR over N addresses first)]\n");
	exit(2);
}

static unsigned long num(const char *s)
{
	char *e;
	errno = 0;
	unsigned long v = strtoul(s, &e, 10);
	if (errno || *e || e == s)
		usage();
	return v;
}

/* SIGUSR1 to the parent ends the hold at once (the bench has measured). */
static volatile sig_atomic_t hold_over;

static void hold_over_cb(int sig)
{
	hold_over = 1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"mode", 1, 0, 'm'},
		{"conns", 1, 0, 'c'}, {"procs", 1, 0, 'P'}, {"src", 1, 0, 's'},
		{"srcs", 1, 0, 'S'}, {"rate", 1, 0, 'r'}, {"hold", 1, 0, 'h'},
		{"timeout", 1, 0, 't'}, {"ready-file", 1, 0, 'R'}, {"starttls", 0, 0, 'T'},
		{"messages", 1, 0, 'M'}, {"size", 1, 0, 'z'}, {"per-conn", 1, 0, 'k'},
		{"line", 1, 0, 'l'}, {"drip-ms", 1, 0, 'd'}, {"phase-timeout", 1, 0, 'x'}, {"helo", 1, 0, 'e'},
		{"think-ms", 1, 0, 'i'}, {"xclient", 1, 0, 'X'}, {0, 0, 0, 0}};
	const char *host = "127.0.0.1", *src = "127.1.0.1";
	unsigned port = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'H': host = optarg; break;
		case 'p': port = (unsigned)num(optarg); break;
		case 'm':
			o.mode = !strcmp(optarg, "idle") ? M_IDLE : !strcmp(optarg, "shaped") ? M_SHAPED
				 : !strcmp(optarg, "throughput") ? M_THROUGHPUT
				 : !strcmp(optarg, "slow") ? M_SLOW : (usage(), M_IDLE);
			break;
		case 'c': o.conns = (unsigned)num(optarg); break;
		case 'P': o.procs = (unsigned)num(optarg); break;
		case 's': src = optarg; break;
		case 'S': o.srcs = (unsigned)num(optarg); break;
		case 'r': o.rate = (unsigned)num(optarg); break;
		case 'h': o.hold = (unsigned)num(optarg); break;
		case 't': o.timeout = (unsigned)num(optarg); break;
		case 'R': o.ready_file = optarg; break;
		case 'T': o.starttls = 1; break;
		case 'M': o.messages = num(optarg); break;
		case 'z': o.size = (unsigned)num(optarg); break;
		case 'k': o.per_conn = (unsigned)num(optarg); break;
		case 'l': o.line = (unsigned)num(optarg); break;
		case 'd': o.drip_ms = (unsigned)num(optarg); break;
		case 'x': o.phase_timeout = (unsigned)num(optarg); break;
		case 'e': o.helo = optarg; break;
		case 'i': o.think_ms = (unsigned)num(optarg); break;
		case 'X': o.xclient = (unsigned)num(optarg); break;
		default: usage();
		}
	}
	struct in_addr a;
	if (!port || port > 65535 || inet_pton(AF_INET, host, &o.dst.sin_addr) != 1 ||
	    inet_pton(AF_INET, src, &a) != 1 || o.procs < 1 || o.procs > LG_MAX_PROCS ||
	    o.srcs < 1 || o.timeout < 1 || o.timeout > 86400 || o.rate < 1 || o.phase_timeout < 1)
		usage();
	if ((ntohl(o.dst.sin_addr.s_addr) >> 24) != 127 || (ntohl(a.s_addr) >> 24) != 127)
		die("loopback (127.0.0.0/8) addresses only");
	if (o.mode == M_THROUGHPUT && o.conns > o.messages)
		o.conns = (unsigned)o.messages;
	if (o.conns < o.procs && o.conns > 0)
		o.procs = o.conns;
	o.dst.sin_family = AF_INET;
	o.dst.sin_port = htons((uint16_t)port);
	o.src_base = ntohl(a.s_addr);
	signal(SIGPIPE, SIG_IGN);

	int stop[2];
	if (pipe2(stop, O_CLOEXEC) != 0)
		die("pipe");
	int rep[LG_MAX_PROCS];
	pid_t pids[LG_MAX_PROCS];
	for (unsigned i = 0; i < o.procs; i++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) != 0)
			die("pipe");
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			close(p[0]);
			close(stop[1]);
			for (unsigned j = 0; j < i; j++)
				close(rep[j]);
			child_run(i, p[1], stop[0]);
		}
		close(p[1]);
		rep[i] = p[0];
		pids[i] = pid;
	}
	close(stop[0]);
	signal(SIGUSR1, hold_over_cb); /* the parent's only: children keep the default */
	double t0 = now(), t_ready = 0;
	int hold_mode = o.mode != M_THROUGHPUT;
	if (hold_mode) {
		/* wait until every child is ready (or the run times out) */
		unsigned ready = 0;
		char seen[LG_MAX_PROCS] = {0};
		while (ready < o.procs && now() - t0 < o.timeout) {
			struct pollfd pf[LG_MAX_PROCS];
			for (unsigned i = 0; i < o.procs; i++)
				pf[i] = (struct pollfd){.fd = seen[i] ? -1 : rep[i], .events = POLLIN};
			if (poll(pf, o.procs, 1000) < 0 && errno != EINTR)
				break;
			for (unsigned i = 0; i < o.procs; i++) {
				char b;
				if (!seen[i] && (pf[i].revents & (POLLIN | POLLHUP))) {
					seen[i] = 1;
					ready++;
					if (read(rep[i], &b, 1) != 1 || b != 'R')
						fprintf(stderr, "loadgen: child %u ended early\n", i);
				}
			}
		}
		t_ready = now() - t0;
		if (o.ready_file) {
			FILE *f = fopen(o.ready_file, "w");
			if (f) {
				fprintf(f, "%.3f\n", t_ready);
				fclose(f);
			}
		}
		fprintf(stderr, "loadgen: ready after %.1f s; holding %u s\n", t_ready, o.hold);
		double end = now() + o.hold;
		while (now() < end && now() - t0 < o.timeout && !hold_over)
			usleep(100000);
	}
	if (hold_mode)
		close(stop[1]); /* every child sees EOF: stop */

	struct report tot = {0};
	struct samples lat = {0}, rin = {0}, rout = {0}, cin = {0}, cout = {0};
	double first_tls = 0, last_tls = 0, t_end = 0;
	for (unsigned i = 0; i < o.procs; i++) {
		char b = 0;
		struct report r;
		while (read(rep[i], &b, 1) == 1 && b == 'R')
			;
		if (b != 'F' || read_full(rep[i], &r, sizeof r) != 0) {
			fprintf(stderr, "loadgen: no report from child %u\n", i);
			continue;
		}
		size_t nv = r.n_lat + r.n_in + r.n_out + r.n_cin + r.n_cout;
		float *v = malloc((nv + 1) * sizeof *v);
		if (!v || read_full(rep[i], v, nv * sizeof *v) != 0)
			die("report");
		merge(&lat, v, r.n_lat);
		merge(&rin, v + r.n_lat, r.n_in);
		merge(&rout, v + r.n_lat + r.n_in, r.n_out);
		merge(&cin, v + r.n_lat + r.n_in + r.n_out, r.n_cin);
		merge(&cout, v + r.n_lat + r.n_in + r.n_out + r.n_cin, r.n_cout);
		free(v);
		tot.attempted += r.attempted;
		tot.connected += r.connected;
		tot.greeted += r.greeted;
		tot.held += r.held;
		tot.refused += r.refused;
		tot.failed += r.failed;
		tot.dropped += r.dropped;
		tot.tls_ok += r.tls_ok;
		tot.tls_failed += r.tls_failed;
		tot.msgs_ok += r.msgs_ok;
		tot.msgs_failed += r.msgs_failed;
		tot.rounds += r.rounds;
		if (r.tls_ok) {
			if (!first_tls || r.t_tls_first < first_tls)
				first_tls = r.t_tls_first;
			if (r.t_tls_last > last_tls)
				last_tls = r.t_tls_last;
		}
		if (r.t_end - t0 > t_end)
			t_end = r.t_end - t0;
		close(rep[i]);
	}
	if (!hold_mode)
		close(stop[1]);
	int status, bad = 0;
	for (unsigned i = 0; i < o.procs; i++)
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			bad++;
	qsort(lat.v, lat.n, sizeof(float), cmp_float);
	qsort(rin.v, rin.n, sizeof(float), cmp_float);
	qsort(rout.v, rout.n, sizeof(float), cmp_float);
	qsort(cin.v, cin.n, sizeof(float), cmp_float);
	qsort(cout.v, cout.n, sizeof(float), cmp_float);
	static const char *names[] = {"idle", "shaped", "throughput", "slow"};
	printf("loadgen mode=%s procs=%u conns=%u attempted=%lu connected=%lu greeted=%lu "
	       "held=%lu refused=%lu failed=%lu dropped=%lu bad_children=%d",
	       names[o.mode], o.procs, o.conns, tot.attempted, tot.connected, tot.greeted,
	       tot.held, tot.refused, tot.failed, tot.dropped, bad);
	if (hold_mode)
		printf(" ready_s=%.2f hold_s=%u", t_ready, o.hold);
	if (o.mode == M_IDLE && tot.refused)
		printf(" refuse_p50_ms=%.2f refuse_p99_ms=%.2f refuse_max_ms=%.2f", pct(&lat, 50),
		       pct(&lat, 99), pct(&lat, 100));
	if (o.starttls) {
		double span = last_tls - first_tls;
		printf(" tls_ok=%lu tls_failed=%lu tls_span_s=%.2f tls_hs_per_s=%.0f", tot.tls_ok,
		       tot.tls_failed, span, span > 0 ? tot.tls_ok / span : 0.0);
	}
	if (o.mode == M_THROUGHPUT || o.mode == M_SLOW)
		printf(" messages=%lu size=%u per_conn=%u msgs_ok=%lu msgs_failed=%lu seconds=%.3f "
		       "msgps=%.1f lat_p50_ms=%.2f lat_p99_ms=%.2f think_ms=%u",
		       o.messages, o.size, o.per_conn, tot.msgs_ok, tot.msgs_failed, t_end,
		       t_end > 0 ? tot.msgs_ok / t_end : 0.0, pct(&lat, 50), pct(&lat, 99), o.think_ms);
	if (o.mode == M_SHAPED) {
		printf(" rounds=%lu line=%u", tot.rounds, o.line);
		print_rates("in", &rin);
		print_rates("out", &rout);
		print_rates("client_in", &cin);
		print_rates("client_out", &cout);
	}
	printf("\n");
	return bad ? 1 : 0;
}
