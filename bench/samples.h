/* What the benchmark programs share: latency samples and their
 * percentiles, a monotonic clock, and JSON strings for their output. */
#ifndef MP_BENCH_SAMPLES_H
#define MP_BENCH_SAMPLES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct samples {
	int64_t *v; /* nanoseconds */
	size_t n, cap;
};

void samples_add(struct samples *s, int64_t ns);
/* Sorts s and prints "key": {count, p50, p90, p99, p999, max} in µs. */
void samples_print_json(FILE *out, const char *key, struct samples *s);
int64_t bench_mono_ns(void);
/* Prints "PROGRAM: message" and exits 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *bench_xrealloc(void *p, size_t n);
void bench_json_str(FILE *out, const char *s);

#endif
