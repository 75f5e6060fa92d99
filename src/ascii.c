/*
 * ascii: locale-free character classes and comparisons (see ascii.h).
 * Exports ascii_*.
 */
#include "ascii.h"

#include <string.h>

int ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

bool ascii_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

bool ascii_is_alpha(int c)
{
	c = ascii_lower(c);
	return c >= 'a' && c <= 'z';
}

int ascii_hex_value(int c)
{
	c = ascii_lower(c);
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

bool ascii_eq_nocase(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (ascii_lower((unsigned char)a[i]) !=
		    ascii_lower((unsigned char)b[i]))
			return false;
	return true;
}

int ascii_casecmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		int ca = ascii_lower((unsigned char)*a);
		int cb = ascii_lower((unsigned char)*b);
		if (ca != cb || ca == 0)
			return ca - cb;
	}
}

bool ascii_contains_nocase(const char *hay, size_t hlen, const char *needle,
			   size_t nlen)
{
	for (size_t i = 0; nlen <= hlen && i <= hlen - nlen; i++)
		if (ascii_eq_nocase(hay + i, nlen, needle, nlen))
			return true;
	return false;
}

bool ascii_cstr(char *buf, size_t cap, const char *s, size_t len)
{
	if (len >= cap || memchr(s, '\0', len))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return true;
}
