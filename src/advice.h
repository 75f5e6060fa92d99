/*
 * advice: warnings about a configuration that loads but would do harm,
 * printed by "sluice -n". Pure apart from the FILE it writes to.
 */
#ifndef SLUICE_ADVICE_H
#define SLUICE_ADVICE_H

#include <stdio.h>

struct config;

/* Writes one "warning: ..." line per problem to out; returns how many. */
int advice_print(const struct config *cfg, FILE *out);

/* The score a client listed only in the Spamhaus PBL (answers 127.0.0.10
 * and 127.0.0.11 from a spamhaus.org/.net zone) gets from dnsbl_sites;
 * -1 when dnsbl_sites does not parse. */
int advice_pbl_score(const char *dnsbl_sites);

#endif
