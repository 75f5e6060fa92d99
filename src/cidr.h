/*
 * cidr: lists of networks behind the ALLOWLIST and DENYLIST signals.
 * Pure: no I/O but cidr_load (start-up code).
 */
#ifndef SLUICE_CIDR_H
#define SLUICE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A list of networks: "192.0.2.0/24", "2001:db8::/32", bare addresses,
 * one per line, '#' comments. Sorted for lookup by prefix. */
struct cidr_list;

/* Parses text (len bytes). NULL with "LINE: what" in err on a syntax
 * error or when out of memory. */
struct cidr_list *cidr_parse(const char *text, size_t len, char *err,
			     size_t err_len);
/* Reads and parses a file (start-up code). */
struct cidr_list *cidr_load(const char *path, char *err, size_t err_len);
bool cidr_match(const struct cidr_list *list, const struct sockaddr *addr);
size_t cidr_count(const struct cidr_list *list);
void cidr_free(struct cidr_list *list);

#endif
