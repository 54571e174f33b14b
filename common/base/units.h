/* The units configuration values are written in: durations ("250ms",
 * "10s", "5m", "2h", "7d"; a bare number is seconds), sizes ("512",
 * "64KiB", "16MiB", "10MB", "1G": K/M/G/T/P powers of 1000, Ki/Mi/Gi/Ti/Pi
 * powers of 1024) and HOST:PORT addresses. */
#ifndef MP_UNITS_H
#define MP_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* Decimal digits at *p: 0, -EINVAL when there are none, -ERANGE on
 * overflow; *p moves past the digits in every case. */
int units_parse_digits(const char **p, uint64_t *ret);

/* Value parsers, also for other code reading durations, sizes and addresses.
 * Each returns 0, -EINVAL for bad syntax or -ERANGE when the value does not
 * fit (port out of range, overflow of uint64_t). */
int units_parse_duration(const char *s, uint64_t *ret_ms);
int units_parse_size(const char *s, uint64_t *ret_bytes);
/* host receives the host without brackets, NUL-terminated (-ENAMETOOLONG when
 * it does not fit in hostlen); host may be NULL to only check s. */
int units_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *ret_port);

/* Canonical text for a duration ("1500ms", "90s", "5m", "2h", "7d") or size
 * ("64KiB", "10MB", "1000"), as printed; out of at least 32 bytes. */
void units_format_duration(uint64_t ms, char *out, size_t outlen);
void units_format_size(uint64_t bytes, char *out, size_t outlen);

#endif
