/*
 * json: the one JSON string writer for what sluice serves as JSON
 * (/status.json, sluicectl --json). Output only; sluice parses no JSON.
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

struct evbuffer;

/* Appends s as a quoted JSON string: quotes, backslashes and control
 * bytes escaped, bytes >= 0x80 passed as they are when they form valid
 * UTF-8 and written as \ufffd otherwise (names and addresses may come from
 * DNS or a client). 0 or -1 (out of memory). */
int json_str(struct evbuffer *b, const char *s);

#endif
