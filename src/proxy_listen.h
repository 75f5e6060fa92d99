/*
 * proxy_listen: the PROXY protocol stage between accept and session, for
 * the listeners named in proxy_protocol_listen. Nothing of the session
 * exists yet: no greeting wait, no classification, no PREGREET on the
 * header's bytes. A peer outside proxy_trusted_networks is closed at once;
 * a malformed, unsupported or late (proxy_timeout) header closes the
 * connection with nothing sent; v2 LOCAL (a balancer's health check)
 * closes quietly. A good header hands the connection to session_accept
 * with the client's address from the header.
 */
#ifndef SLUICE_PROXY_LISTEN_H
#define SLUICE_PROXY_LISTEN_H

#include <stdbool.h>
#include <sys/socket.h>

struct config;
struct session_env;

/* In the worker before accepting: the trusted networks. 0 or -1. */
int proxy_listen_init(const struct config *cfg);

/* Whether cfg->listen[i] is one of proxy_protocol_listen. */
bool proxy_listen_expects(const struct config *cfg, size_t i);

/* Takes ownership of fd (non-blocking, accepted from peer addr); a good
 * header hands it to session_accept(env, ...). */
void proxy_listen_accept(struct session_env *env, int fd,
			 const struct sockaddr *addr, socklen_t len);

#endif
