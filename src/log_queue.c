/*
 * log_queue: bounded queue and writer thread between log_msg and the log
 * destination (see log_queue.h).
 *
 * Exports log_queue_init, log_queue_put, log_queue_flush and
 * log_queue_dropped. The queue is a byte ring of LOG_QUEUE_BYTES holding
 * entries [2-byte length][bytes], guarded by one mutex that is held only
 * to copy bytes in or out, never across a write. The writer thread is
 * started by the first log_queue_put of each process (so a forked worker
 * gets its own) with every signal blocked; it owns the output descriptor
 * for syslog. It runs until the process exits; exit paths call
 * log_queue_flush to give it a bounded time to finish.
 *
 * Fork: pthread_atfork holds the mutex across fork, so the child never
 * inherits it locked mid-copy; the child empties its copy of the queue
 * (the parent's writer still owns those lines) and starts its own writer
 * on its first line.
 *
 * Syslog is our own datagram client, not syslog(3): glibc's syslog lock
 * could be held by the writer at the moment of a fork and stay locked in
 * the child forever, and its socket path cannot be chosen (tests need
 * a socket of their own that never reads).
 *
 * Rejected: non-blocking writes from the calling thread (a stream to the
 * journal may take half a line and leave the rest nowhere); a queue of
 * fixed-size slots (2 KiB each for mostly 150-byte lines).
 */
#include "log_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define LOG_QUEUE_RECONNECT_S 1 /* syslog socket: retry at most this often */
#define LOG_QUEUE_POLL_MS 1000  /* writer's wait for a full syslog socket, per round */
#define LOG_QUEUE_BATCH PIPE_BUF /* bytes of lines per write(2) to stderr */
#define LOG_QUEUE_GATHER_NS (1 * 1000000L) /* writer's pause after a wake-up */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t more; /* writer waits for lines */
	pthread_cond_t idle; /* flush waits for an empty queue */
	unsigned char ring[LOG_QUEUE_BYTES];
	size_t head, used;   /* read position, bytes queued */
	bool writing;        /* the writer holds an entry outside the ring */
	pid_t writer_pid;    /* process whose writer runs; 0: none */
	bool writer_ready;   /* it has started and waits for lines */
	bool no_thread;      /* thread creation failed: write inline */
	unsigned long long dropped, reported;
	enum log_queue_dest dest;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int fd;              /* syslog socket, -1 until connected */
	time_t next_connect;
	bool atfork_done;
} lq = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.more = PTHREAD_COND_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
	.fd = -1,
};

static bool lq_start_writer(void);

/* getpid(2) twice per line was two system calls per log line, several
 * per message (issue 8). Set by the process's first line, before its
 * writer thread exists; reset in a fork's child, which has one thread. */
static pid_t lq_pid;
static bool lq_pid_atfork;

static void lq_pid_forget(void)
{
	lq_pid = 0;
}

pid_t log_queue_pid(void)
{
	if (lq_pid != 0)
		return lq_pid;
	if (!lq_pid_atfork) {
		if (pthread_atfork(NULL, NULL, lq_pid_forget) != 0)
			return getpid(); /* no reset in a child: never cache */
		lq_pid_atfork = true;
	}
	lq_pid = getpid();
	return lq_pid;
}

static void lq_prepare(void)
{
	pthread_mutex_lock(&lq.mu);
}

static void lq_parent(void)
{
	pthread_mutex_unlock(&lq.mu);
}

static void lq_child(void)
{
	lq.head = lq.used = 0;
	lq.writing = false;
	lq.writer_pid = 0;
	lq.writer_ready = false;
	lq.dropped = lq.reported = 0;
	pthread_cond_init(&lq.more, NULL);
	pthread_cond_init(&lq.idle, NULL);
	pthread_mutex_unlock(&lq.mu);
}

void log_queue_init(enum log_queue_dest dest, const char *path)
{
	log_queue_flush(LOG_QUEUE_FLUSH_MS);
	pthread_mutex_lock(&lq.mu);
	lq.dest = dest;
	snprintf(lq.path, sizeof lq.path, "%s", path && *path ? path : "/dev/log");
	if (lq.fd >= 0)
		close(lq.fd);
	lq.fd = -1;
	lq.next_connect = 0;
	if (lq.writer_pid != log_queue_pid())
		(void)lq_start_writer();
	pthread_mutex_unlock(&lq.mu);
}

unsigned long long log_queue_dropped(void)
{
	pthread_mutex_lock(&lq.mu);
	unsigned long long n = lq.dropped;
	pthread_mutex_unlock(&lq.mu);
	return n;
}

/* ---- output (writer thread, or inline without one) --------------------- */

static void lq_write_stderr(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* nowhere left to report a failing stderr */
		p += n;
		len -= (size_t)n;
	}
}

/* Returns false when the line could not be delivered. The socket is
 * non-blocking: the writer thread (may_wait) waits for room with poll,
 * the inline path without a thread drops instead. */
static bool lq_send_syslog(const char *p, size_t len, bool may_wait)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (lq.fd < 0) {
			time_t now = time(NULL);
			if (now < lq.next_connect)
				return false;
			lq.next_connect = now + LOG_QUEUE_RECONNECT_S;
			struct sockaddr_un sun = { .sun_family = AF_UNIX };
			memcpy(sun.sun_path, lq.path, sizeof sun.sun_path);
			lq.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			if (lq.fd < 0)
				return false;
			if (connect(lq.fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
				close(lq.fd);
				lq.fd = -1;
				return false;
			}
		}
		ssize_t n;
		for (;;) {
			n = send(lq.fd, p, len, MSG_NOSIGNAL);
			if (n >= 0)
				return true;
			if (errno == EINTR)
				continue;
			if ((errno != EAGAIN && errno != EWOULDBLOCK) || !may_wait)
				break;
			struct pollfd pfd = { .fd = lq.fd, .events = POLLOUT };
			if (poll(&pfd, 1, LOG_QUEUE_POLL_MS) < 0 && errno != EINTR)
				break;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return false; /* full, and not ours to wait: drop */
		/* The syslog daemon restarted (its socket is a new one):
		 * reconnect once, at once. */
		close(lq.fd);
		lq.fd = -1;
		lq.next_connect = 0;
	}
	return false;
}

static void lq_output(const char *p, size_t len, bool may_wait)
{
	if (lq.dest == LOG_QUEUE_STDERR) {
		lq_write_stderr(p, len);
	} else if (!lq_send_syslog(p, len, may_wait)) {
		pthread_mutex_lock(&lq.mu);
		lq.dropped++;
		pthread_mutex_unlock(&lq.mu);
		metrics_inc(METRIC_LOG_DROPPED);
	}
}

/* ---- the ring (lq.mu held) ----------------------------------------------- */

static void lq_ring_put(const void *src, size_t n)
{
	size_t tail = (lq.head + lq.used) % LOG_QUEUE_BYTES;
	size_t first = LOG_QUEUE_BYTES - tail < n ? LOG_QUEUE_BYTES - tail : n;
	memcpy(lq.ring + tail, src, first);
	memcpy(lq.ring, (const unsigned char *)src + first, n - first);
	lq.used += n;
}

static void lq_ring_get(void *dst, size_t n)
{
	size_t first = LOG_QUEUE_BYTES - lq.head < n ? LOG_QUEUE_BYTES - lq.head : n;
	memcpy(dst, lq.ring + lq.head, first);
	memcpy((unsigned char *)dst + first, lq.ring, n - first);
	lq.head = (lq.head + n) % LOG_QUEUE_BYTES;
	lq.used -= n;
}

/* Length of the entry at the head (lq.mu held, lq.used > 0). */
static size_t lq_ring_peek_len(void)
{
	uint8_t a = lq.ring[lq.head], b = lq.ring[(lq.head + 1) % LOG_QUEUE_BYTES];
	return (size_t)a << 8 | b;
}

static void *lq_writer(void *arg)
{
	/* stderr: as many whole lines as fit in one atomic pipe write, so a
	 * burst costs a few write(2) calls, not one per line. syslog: one
	 * datagram per line. */
	static char batch[LOG_QUEUE_BATCH];

	pthread_mutex_lock(&lq.mu);
	lq.writer_ready = true;
	for (;;) {
		bool woken = false;
		while (lq.used == 0) {
			pthread_cond_broadcast(&lq.idle);
			pthread_cond_wait(&lq.more, &lq.mu);
			woken = true;
		}
		/* Woken by a line: let the rest of the burst gather before
		 * writing. Lines put meanwhile find no waiter (no futex wake,
		 * no switch to this thread) and go out in one write; one wake
		 * per line cost the loop's thread a context switch per line
		 * (issue 8: sluice's CPU per message). Not longer: at 10 ms
		 * the summary line of a session came after its socket closed,
		 * later than readers (the tests, a tail -f) expect it. The ring
		 * holds far more than a pause's worth; a flush waits the pause
		 * at most. */
		if (woken) {
			struct timespec gather = { 0, LOG_QUEUE_GATHER_NS };
			pthread_mutex_unlock(&lq.mu);
			while (nanosleep(&gather, &gather) != 0 && errno == EINTR) /* lint: blocking-ok (the log writer thread, never the loop) */
				;
			pthread_mutex_lock(&lq.mu);
		}
		size_t blen = 0;
		do {
			size_t len = lq_ring_peek_len();
			if (blen > 0 && blen + len > sizeof batch)
				break;
			uint8_t hdr[2];
			lq_ring_get(hdr, sizeof hdr);
			lq_ring_get(batch + blen, len);
			blen += len;
		} while (lq.dest == LOG_QUEUE_STDERR && lq.used > 0);
		lq.writing = true;
		unsigned long long dropped = lq.dropped - lq.reported;
		bool report = dropped > 0 && lq.used == 0;
		if (report)
			lq.reported = lq.dropped;
		pthread_mutex_unlock(&lq.mu);
		lq_output(batch, blen, true);
		/* Caught up after losing lines: say how many, once. */
		if (report)
			log_warn("log: %llu lines dropped: the log destination did "
				 "not keep up (sluice_log_dropped_total)", dropped);
		pthread_mutex_lock(&lq.mu);
		lq.writing = false;
	}
	return NULL;
}

/* lq.mu held. Starts this process's writer and returns once it runs;
 * false if it cannot be started. */
static bool lq_start_writer(void)
{
	/* Before any writer exists, whoever starts it (log_queue_init or the
	 * first line of a process that never called it): a fork while the
	 * writer waits must not hand the child a condition variable with a
	 * waiter that does not exist there. */
	if (!lq.atfork_done && pthread_atfork(lq_prepare, lq_parent, lq_child) == 0)
		lq.atfork_done = true;
	pthread_t t;
	pthread_attr_t attr;
	sigset_t all, old;

	if (lq.no_thread)
		return false;
	sigfillset(&all);
	if (pthread_attr_init(&attr) != 0)
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* The thread inherits the mask: signals stay with the loop's thread. */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&t, &attr, lq_writer, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		lq.no_thread = true;
		return false;
	}
	lq.writer_pid = log_queue_pid();
	lq.writer_ready = false;
	/* Wait until it runs: a thread still starting up when the supervisor
	 * forks a worker can leave the child with a runtime lock held (seen
	 * with ASan's thread registry: the worker's first log line hung). */
	while (!lq.writer_ready)
		pthread_cond_wait(&lq.idle, &lq.mu);
	return true;
}

void log_queue_put(const char *line, size_t len)
{
	if (len > LOG_QUEUE_ENTRY_MAX)
		len = LOG_QUEUE_ENTRY_MAX;
	pthread_mutex_lock(&lq.mu);
	if (lq.writer_pid != log_queue_pid() && !lq_start_writer()) {
		/* No thread to be had: write inline, as before the queue. */
		pthread_mutex_unlock(&lq.mu);
		lq_output(line, len, false);
		return;
	}
	if (LOG_QUEUE_BYTES - lq.used < len + 2) {
		lq.dropped++;
		pthread_mutex_unlock(&lq.mu);
		metrics_inc(METRIC_LOG_DROPPED);
		return;
	}
	uint8_t hdr[2] = { (uint8_t)(len >> 8), (uint8_t)len };
	lq_ring_put(hdr, sizeof hdr);
	lq_ring_put(line, len);
	pthread_mutex_unlock(&lq.mu);
	/* After the unlock: a writer woken while the mutex is still held
	 * would block on it at once and cost this thread a second futex
	 * call. No wake-up is lost: the writer looks at lq.used under the
	 * mutex before it waits. */
	pthread_cond_signal(&lq.more);
}

void log_queue_flush(long ms)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += ms / 1000;
	deadline.tv_nsec += (ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&lq.mu);
	while (lq.writer_pid == log_queue_pid() && (lq.used > 0 || lq.writing))
		if (pthread_cond_timedwait(&lq.idle, &lq.mu, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&lq.mu);
}
