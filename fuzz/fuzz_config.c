/*
 * fuzz_config: the configuration parser (config_parse_text), and the
 * round trip of what it accepts: config_print_nondefault's output must
 * parse back to the same settings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config a, b;
	char err[512];
	if (size > 65536)
		return 0;
	if (config_parse_text(&a, "fuzz", (const char *)data, size, err, sizeof err) != 0) {
		if (!err[0])
			abort(); /* every failure says why */
		return 0;
	}
	char *out = NULL;
	size_t out_len = 0;
	FILE *f = open_memstream(&out, &out_len);
	if (!f)
		return 0;
	config_print_nondefault(&a, f);
	fclose(f);
	if (config_parse_text(&b, "round-trip", out, out_len, err, sizeof err) != 0) {
		fprintf(stderr, "printed configuration does not parse: %s\n%s", err, out);
		abort();
	}
	char *out2 = NULL;
	size_t out2_len = 0;
	f = open_memstream(&out2, &out2_len);
	if (f) {
		config_print_nondefault(&b, f);
		fclose(f);
		if (out2_len != out_len || memcmp(out, out2, out_len) != 0) {
			fprintf(stderr, "round trip differs:\n%s---\n%s", out, out2);
			abort();
		}
	}
	free(out);
	free(out2);
	return 0;
}
