/*
 * syscost: what a system call costs on this machine right now, the unit
 * the shaping trickle pays per session per tick (BENCHMARKS.md, "Shaped
 * sessions at scale"): a recv() on a loopback TCP socket that finds
 * nothing, and a 1-byte send() + recv() pair through loopback TCP.
 * Bounded: SYSCOST_N calls of each. Prints one key=value line.
 *
 *   make bench-tools; build/syscost
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SYSCOST_N 200000

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), s;
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) != 0 ||
	    connect(c, (struct sockaddr *)&a, sizeof a) != 0 || (s = accept(l, NULL, NULL)) < 0) {
		perror("syscost: loopback socket");
		return 1;
	}
	char b[8];
	double t0 = now();
	for (int i = 0; i < SYSCOST_N; i++)
		if (recv(s, b, 1, MSG_DONTWAIT) > 0)
			return 1; /* nothing was sent */
	double t1 = now();
	for (int i = 0; i < SYSCOST_N; i++)
		if (send(c, "x", 1, 0) != 1 || recv(s, b, 1, 0) != 1)
			return 1;
	double t2 = now();
	printf("recv_empty_us=%.2f send_recv_1byte_us=%.2f\n", (t1 - t0) / SYSCOST_N * 1e6,
	       (t2 - t1) / SYSCOST_N * 1e6);
	close(s);
	close(c);
	close(l);
	return 0;
}
