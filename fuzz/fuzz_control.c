/*
 * fuzz_control: libFuzzer target for control_req_parse, the parser of the
 * bytes a client writes to the control socket. Checks that it never reads
 * past len, and that what it accepts is consistent: a known verb, a
 * network that formats and parses back to itself, a TTL within bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy so that ASan sees any read past len. */
	char *line = malloc(size ? size : 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	struct control_req req;
	char err[128];
	enum control_parse_status st = control_req_parse(line, size, &req, err, sizeof err);
	if (st == CONTROL_PARSE_OK) {
		if ((unsigned)req.verb >= CONTROL_VERB_COUNT || size >= CONTROL_LINE_MAX)
			abort();
		if (req.ttl_ms < 0 || req.ttl_ms > CONTROL_TTL_MAX_MS)
			abort();
		if (req.has_net) {
			char text[80];
			struct control_net again;
			control_net_format(&req.net, text, sizeof text);
			if (control_net_parse(text, &again) != 0 ||
			    memcmp(&again, &req.net, sizeof again) != 0)
				abort();
		}
	} else if (!memchr(err, 0, sizeof err)) {
		abort();
	}
	free(line);
	return 0;
}
