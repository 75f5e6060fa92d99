/* Diagnostic only (bench/throughput.sh with NODELAY=1): LD_PRELOAD shim that
 * sets TCP_NODELAY on every TCP socket the process connects, i.e. on sluice's
 * backend pool connections. It shows what Nagle's algorithm costs on the
 * backend leg (see BENCHMARKS.md); it is not part of sluice and not a fix.
 *   cc -shared -fPIC -O2 -o nodelay-preload.so nodelay-preload.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int (*real_connect)(int, const struct sockaddr *, socklen_t);
	int on = 1, type = 0;
	socklen_t type_len = sizeof type;

	if (!real_connect)
		real_connect = (int (*)(int, const struct sockaddr *, socklen_t))
			dlsym(RTLD_NEXT, "connect");
	if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) &&
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 &&
	    type == SOCK_STREAM)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	return real_connect(fd, addr, len);
}
