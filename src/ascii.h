/*
 * ascii: byte-wise ASCII character classes and case-insensitive comparison
 * of counted strings, independent of the locale (protocol text is ASCII
 * whatever LC_CTYPE says; <ctype.h> and strcasecmp are not). Pure.
 */
#ifndef SLUICE_ASCII_H
#define SLUICE_ASCII_H

#include <stdbool.h>
#include <stddef.h>

int ascii_lower(int c);
bool ascii_is_digit(int c);
bool ascii_is_alpha(int c);
/* 0-15 for a hex digit, -1 otherwise. */
int ascii_hex_value(int c);

/* a (alen bytes) equals b (blen bytes) ignoring ASCII case. */
bool ascii_eq_nocase(const char *a, size_t alen, const char *b, size_t blen);
/* As strcasecmp for NUL-terminated strings: <0, 0, >0. */
int ascii_casecmp(const char *a, const char *b);
/* needle (nlen bytes) occurs in hay (hlen bytes) ignoring ASCII case. */
bool ascii_contains_nocase(const char *hay, size_t hlen, const char *needle,
			   size_t nlen);

/* Copies len bytes into buf as a C string; false when it does not fit or
 * holds a NUL that would cut the text short. */
bool ascii_cstr(char *buf, size_t cap, const char *s, size_t len);

#endif
