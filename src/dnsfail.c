/*
 * dnsfail: DNS failure semantics and their rate-limited warnings (see
 * dnsfail.h).
 *
 * Why a temporary failure is not "no PTR": a resolver that refuses
 * recursion for sluice's address, or an overloaded one, answers REFUSED
 * or SERVFAIL for every client; mapping that to "no PTR" tagged every
 * client NOPTR and sent Postfix NAME=[UNAVAILABLE] (a permanent reject
 * under reject_unknown_client_hostname). Postfix itself calls such a name
 * temporarily unavailable ([TEMPUNAVAIL], 450), and so do we.
 *
 * The warning limiter: a dead resolver fails every look-up, and one line
 * per look-up would flood the log; one line a minute per server, with
 * the count of those not logged, says the same. State is per worker
 * process (workers are forked), a small table scanned linearly: keys are
 * the configured DNSBL domains (twice: failures and error-code answers)
 * plus "reverse" and "forward"; a key beyond the table shares the last
 * slot.
 */
#include "dnsfail.h"

#include <event2/dns.h>
#include <stdio.h>
#include <string.h>

#include "dnsbl.h"
#include "log.h"
#include "metrics.h"
#include "mstime.h"
#include "ratelog.h"

#define DNSFAIL_LOG_INTERVAL_MS 60000
/* Per DNSBL domain: its failures and its error-code answers. */
#define DNSFAIL_KEYS (2 * DNSBL_SITES_MAX + 2)
#define DNSFAIL_KEY_MAX (DNSBL_DOMAIN_MAX + 16)

struct dnsfail_slot {
	char key[DNSFAIL_KEY_MAX + 1];
	struct ratelog rl;
};

static struct dnsfail_slot dnsfail_slots[DNSFAIL_KEYS];

enum dnsfail_kind dnsfail_classify(int result)
{
	switch (result) {
	case DNS_ERR_NONE:
		return DNSFAIL_NONE;
	case DNS_ERR_NOTEXIST:
	case DNS_ERR_NODATA:
		return DNSFAIL_ABSENT;
	default:
		return DNSFAIL_TEMP;
	}
}

const char *dnsfail_word(int result)
{
	switch (result) {
	case DNS_ERR_TIMEOUT:
		return "timeout";
	case DNS_ERR_SERVERFAILED:
		return "servfail";
	case DNS_ERR_REFUSED:
		return "refused";
	case DNS_ERR_FORMAT:
		return "format";
	case DNS_ERR_NOTIMPL:
		return "notimpl";
	case DNS_ERR_TRUNCATED:
		return "truncated";
	case DNS_ERR_UNKNOWN:
		return "unparsable";
	case DNS_ERR_SHUTDOWN:
		return "shutdown";
	case DNS_ERR_CANCEL:
		return "cancelled";
	default:
		return "error";
	}
}

bool dnsfail_log_due(const char *key, unsigned *suppressed)
{
	struct dnsfail_slot *slot = &dnsfail_slots[DNSFAIL_KEYS - 1];
	for (size_t i = 0; i < DNSFAIL_KEYS; i++) {
		if (dnsfail_slots[i].key[0] == '\0') {
			snprintf(dnsfail_slots[i].key, sizeof dnsfail_slots[i].key, "%s", key);
			slot = &dnsfail_slots[i];
			break;
		}
		if (strcmp(dnsfail_slots[i].key, key) == 0) {
			slot = &dnsfail_slots[i];
			break;
		}
	}
	unsigned long held;
	if (!ratelog_ok(&slot->rl, mstime_mono(), DNSFAIL_LOG_INTERVAL_MS, &held))
		return false;
	*suppressed = (unsigned)held;
	return true;
}

void dnsfail_report(const char *server, const char *client, int result)
{
	unsigned suppressed;
	metrics_inc(METRIC_DNS_FAILURES);
	if (dnsfail_log_due(server, &suppressed))
		log_warn("dns: server=%s client=%s TEMPFAIL %s (%u more not logged in the "
			 "last minute; treated as temporarily unavailable, never as absent)",
			 server, client, dnsfail_word(result), suppressed);
}
