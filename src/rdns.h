/*
 * rdns: the generic-PTR check behind the PTRGENERIC signal.
 * Pure: no I/O, no allocation.
 */
#ifndef SLUICE_RDNS_H
#define SLUICE_RDNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * rdns_generic: whether a PTR name looks generic or dynamic: it embeds the
 * client address's digits (all four IPv4 octets in order or reversed, with
 * any separators, or the address as hex), or has a label with a word such
 * as dyn, dynamic, dsl, adsl, pool, dhcp, cable, ppp, dialup, client,
 * host-, ip-, customer, broadband, static-ip, cpe, dial, as in
 * "ppp-203-0-113-7.example.net". name: len bytes (<= 255).
 */
bool rdns_generic(const char *name, size_t len, const struct sockaddr *addr);

#endif
