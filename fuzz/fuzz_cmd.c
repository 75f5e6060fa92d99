/*
 * fuzz_cmd: libFuzzer target for smtp_cmd_parse. The input is one command
 * line without CR LF. Checks the header's promises with abort(): limits,
 * bad bytes, and that arg always points inside the line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_cmd_bad_byte(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy so ASan sees any read past the end. */
	char *line = malloc(size ? size : 1);
	struct smtp_cmd c;
	enum smtp_parse_status st;

	if (!line)
		return 0;
	memcpy(line, data, size);
	st = smtp_cmd_parse(line, size, &c);
	if ((unsigned)c.verb >= SMTP_VERB_COUNT || !smtp_verb_name(c.verb))
		abort();
	if (c.arg < line || c.arg + c.arg_len > line + size)
		abort();
	if (size > SMTP_CMD_LINE_MAX - 2) {
		if (st != SMTP_PARSE_TOO_LONG)
			abort();
	} else if (fuzz_cmd_bad_byte(line, size)) {
		if (st != SMTP_PARSE_BAD_CHAR)
			abort();
	} else if (st == SMTP_PARSE_OK) {
		if (c.arg_len > 0 &&
		    (c.arg[0] == ' ' || c.arg[c.arg_len - 1] == ' ' ||
		     c.arg[c.arg_len - 1] == '\t'))
			abort();
		/* Matching is by name, so the verb's name starts the line. */
		if (c.verb != SMTP_VERB_UNKNOWN && c.verb != SMTP_VERB_HTTP) {
			const char *n = smtp_verb_name(c.verb);
			size_t nl = strlen(n);
			if (size < nl || strncasecmp(line, n, nl) != 0)
				abort();
		}
	} else if (st != SMTP_PARSE_SYNTAX) {
		abort();
	}
	free(line);
	return 0;
}
