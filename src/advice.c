/*
 * advice: "sluice -n" warnings (see advice.h).
 *
 * The PBL check. Spamhaus' PBL lists end-user address ranges (answers
 * 127.0.0.10, ISP maintained, and 127.0.0.11, Spamhaus maintained, in
 * zen.spamhaus.org and pbl.spamhaus.org); a small legitimate mail server
 * on such a range is common, and it often has its provider's generic PTR
 * or none. Such a client may be shaped (it waits and delivers) but must
 * never be refused, so the warning fires when the PBL entries plus the
 * worst PTR signals (missing, or unconfirmed and generic) reach
 * reject_threshold. A zen entry without a filter counts too: it matches
 * the PBL codes, which is exactly the mistake to warn about.
 *
 * The content check: one false positive of the mail server's content
 * filter must never get a sender refused, so weight_content alone must
 * stay under reject_threshold.
 */
#include "advice.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "dnsbl.h"

#define ADVICE_PBL_ISP 0x7f00000au      /* 127.0.0.10 */
#define ADVICE_PBL_SPAMHAUS 0x7f00000bu /* 127.0.0.11 */

static bool advice_is_spamhaus(const char *domain)
{
	static const char *const zones[] = {".spamhaus.org", ".spamhaus.net"};
	size_t len = strlen(domain);
	for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
		size_t z = strlen(zones[i]);
		if (len > z && strcasecmp(domain + len - z, zones[i]) == 0)
			return true;
	}
	return false;
}

int advice_pbl_score(const char *dnsbl_sites)
{
	struct dnsbl_list *list = malloc(sizeof *list);
	if (!list)
		return -1;
	if (dnsbl_parse(dnsbl_sites, strlen(dnsbl_sites), list, NULL, 0) != 0) {
		free(list);
		return -1;
	}
	int score = 0;
	for (size_t i = 0; i < list->n; i++) {
		const struct dnsbl_site *s = &list->sites[i];
		if (!advice_is_spamhaus(s->domain) || s->weight <= 0)
			continue;
		if (dnsbl_match(s, htonl(ADVICE_PBL_ISP)) ||
		    dnsbl_match(s, htonl(ADVICE_PBL_SPAMHAUS)))
			score += s->weight;
	}
	free(list);
	return score;
}

int advice_print(const struct config *cfg, FILE *out)
{
	int n = 0;
	if (!cfg->reject_threshold)
		return 0;
	int pbl = advice_pbl_score(cfg->dnsbl_sites);
	unsigned ptr = cfg->weight_ptr_unconfirmed + cfg->weight_ptr_generic;
	if (cfg->weight_ptr_missing > ptr)
		ptr = cfg->weight_ptr_missing;
	if (pbl > 0 && (unsigned)pbl + ptr >= cfg->reject_threshold) {
		fprintf(out, "warning: reject_threshold = %u can refuse a legitimate server "
			"listed only in the Spamhaus PBL: its dnsbl_sites entries give %d and "
			"its PTR up to %u; give the PBL codes (127.0.0.10, 127.0.0.11) a weight "
			"that at most shapes (docs/classification.md)\n",
			cfg->reject_threshold, pbl, ptr);
		n++;
	}
	if (cfg->weight_content >= cfg->reject_threshold) {
		fprintf(out, "warning: weight_content = %u reaches reject_threshold = %u: "
			"one false positive of the mail server's content filter would get a "
			"sender refused\n", cfg->weight_content, cfg->reject_threshold);
		n++;
	}
	return n;
}
