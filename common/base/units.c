#include "units.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- value parsers ---- */

/* Decimal digits at *p. Returns 0, -EINVAL when there are none, or -ERANGE on
 * overflow; *p moves past the digits in every case so that callers can check
 * the syntax of what follows before reporting the overflow. */
int units_parse_digits(const char **p, uint64_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;
	bool overflow = false;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			v = v * 10 + d;
	}
	*p = s;
	if (overflow)
		return -ERANGE;
	*ret = v;
	return 0;
}

static const char *skip_blanks(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

struct unit {
	const char *name;
	uint64_t mult;
};

static const struct unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {NULL, 0},
};

int units_parse_duration(const char *s, uint64_t *ret_ms)
{
	uint64_t n = 0, mult = 0;
	const char *p = s;
	int r;

	if (!s)
		return -EINVAL;
	r = units_parse_digits(&p, &n);
	if (r == -EINVAL)
		return r;
	p = skip_blanks(p);
	if (*p == '\0') {
		mult = 1000; /* a bare number is seconds */
	} else {
		for (const struct unit *u = duration_units; u->name; u++)
			if (strcmp(p, u->name) == 0)
				mult = u->mult;
	}
	if (mult == 0)
		return -EINVAL;
	if (r < 0)
		return r;
	if (n > UINT64_MAX / mult)
		return -ERANGE;
	*ret_ms = n * mult;
	return 0;
}

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1000ULL},
    {"kb", 1000ULL},
    {"ki", 1ULL << 10},
    {"kib", 1ULL << 10},
    {"m", 1000000ULL},
    {"mb", 1000000ULL},
    {"mi", 1ULL << 20},
    {"mib", 1ULL << 20},
    {"g", 1000000000ULL},
    {"gb", 1000000000ULL},
    {"gi", 1ULL << 30},
    {"gib", 1ULL << 30},
    {"t", 1000000000000ULL},
    {"tb", 1000000000000ULL},
    {"ti", 1ULL << 40},
    {"tib", 1ULL << 40},
    {"p", 1000000000000000ULL},
    {"pb", 1000000000000000ULL},
    {"pi", 1ULL << 50},
    {"pib", 1ULL << 50},
    {NULL, 0},
};

int units_parse_size(const char *s, uint64_t *ret_bytes)
{
	uint64_t n = 0, mult = 0;
	const char *p = s;
	int r;

	if (!s)
		return -EINVAL;
	r = units_parse_digits(&p, &n);
	if (r == -EINVAL)
		return r;
	p = skip_blanks(p);
	for (const struct unit *u = size_units; u->name; u++)
		if (strcasecmp(p, u->name) == 0)
			mult = u->mult;
	if (mult == 0)
		return -EINVAL;
	if (r < 0)
		return r;
	if (n > UINT64_MAX / mult)
		return -ERANGE;
	*ret_bytes = n * mult;
	return 0;
}

static bool valid_v6(const char *s, size_t len)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr a;
	const char *pct = memchr(s, '%', len);
	size_t alen = pct ? (size_t)(pct - s) : len;

	if (pct) {
		/* A zone (interface) for link-local addresses: fe80::1%eth0 */
		size_t zlen = len - alen - 1;
		if (zlen == 0 || zlen >= 64)
			return false;
		for (size_t i = alen + 1; i < len; i++)
			if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
				return false;
	}
	if (alen == 0 || alen >= sizeof(buf))
		return false;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

int units_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *ret_port)
{
	const char *h, *portstr, *p;
	size_t hlen;
	uint64_t port;

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		if (!valid_v6(h, hlen))
			return -EINVAL;
		portstr = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		h = s;
		hlen = (size_t)(colon - s);
		/* No ':' in a bare host: an IPv6 address needs brackets. */
		for (size_t i = 0; i < hlen; i++)
			if (!isalnum((unsigned char)h[i]) && !strchr("._-", h[i]))
				return -EINVAL;
		portstr = colon + 1;
	}
	if (hlen == 0 || hlen > 253)
		return -EINVAL;
	p = portstr;
	int r = units_parse_digits(&p, &port);
	if (r == -EINVAL || *p != '\0')
		return -EINVAL;
	if (r < 0 || port == 0 || port > 65535)
		return -ERANGE;
	if (host) {
		if (hlen >= hostlen)
			return -ENAMETOOLONG;
		memcpy(host, h, hlen);
		host[hlen] = '\0';
	}
	if (ret_port)
		*ret_port = (uint16_t)port;
	return 0;
}

void units_format_duration(uint64_t ms, char *out, size_t outlen)
{
	if (ms == 0)
		snprintf(out, outlen, "0s");
	else if (ms % 1000)
		snprintf(out, outlen, "%" PRIu64 "ms", ms);
	else if (ms % 60000)
		snprintf(out, outlen, "%" PRIu64 "s", ms / 1000);
	else if (ms % 3600000)
		snprintf(out, outlen, "%" PRIu64 "m", ms / 60000);
	else if (ms % 86400000)
		snprintf(out, outlen, "%" PRIu64 "h", ms / 3600000);
	else
		snprintf(out, outlen, "%" PRIu64 "d", ms / 86400000);
}

void units_format_size(uint64_t bytes, char *out, size_t outlen)
{
	/* The largest unit that divides exactly; binary first at equal rank. */
	static const struct unit units[] = {
	    {"PiB", 1ULL << 50}, {"PB", 1000000000000000ULL},
	    {"TiB", 1ULL << 40}, {"TB", 1000000000000ULL},
	    {"GiB", 1ULL << 30}, {"GB", 1000000000ULL},
	    {"MiB", 1ULL << 20}, {"MB", 1000000ULL},
	    {"KiB", 1ULL << 10}, {"KB", 1000ULL},
	    {NULL, 0},
	};

	if (bytes != 0) {
		for (const struct unit *u = units; u->name; u++) {
			if (bytes % u->mult == 0) {
				snprintf(out, outlen, "%" PRIu64 "%s", bytes / u->mult, u->name);
				return;
			}
		}
	}
	snprintf(out, outlen, "%" PRIu64, bytes);
}
