#include "samples.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

void samples_add(struct samples *s, int64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1 << 14;
		s->v = bench_xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct_us(const struct samples *s, double q)
{
	if (s->n == 0)
		return 0;
	size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
	return (double)s->v[i < s->n ? i : s->n - 1] / 1000.0;
}

void samples_print_json(FILE *out, const char *key, struct samples *s)
{
	qsort(s->v, s->n, sizeof(*s->v), cmp_i64);
	fprintf(out,
	        "\"%s\": {\"count\": %zu, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
	        "\"p999\": %.1f, \"max\": %.1f}",
	        key, s->n, pct_us(s, 0.50), pct_us(s, 0.90), pct_us(s, 0.99), pct_us(s, 0.999),
	        s->n ? (double)s->v[s->n - 1] / 1000.0 : 0.0);
}

int64_t bench_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", program_invocation_short_name);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

void *bench_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (q == NULL)
		bench_die("out of memory");
	return q;
}
