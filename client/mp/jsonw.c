/* Streaming JSON onto a FILE. Names in the namespace may hold any byte but
 * '/' and NUL, so strings are not assumed to be UTF-8: '"', '\\' and the
 * control characters are escaped, valid UTF-8 sequences are copied as they
 * are, and every byte that is not part of one is written as \u00XX, the
 * code point with that byte's value. That keeps the byte's value (U+FFFD
 * would lose it) and always yields valid JSON; the price is that a stray
 * byte 0xE9 reads back as U+00E9, the same as a properly encoded "é". */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "jsonw.h"

void jsonw_init(struct jsonw *w, FILE *f)
{
	w->f = f;
	w->depth = 0;
	w->after_key = false;
	w->need_comma[0] = false;
}

/* Before any value or key: the comma that separates it from the previous
 * one, unless it is the value of a key just written. */
static void jsonw_separate(struct jsonw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->need_comma[w->depth])
		fputc(',', w->f);
	w->need_comma[w->depth] = true;
}

static void jsonw_open(struct jsonw *w, char c)
{
	jsonw_separate(w);
	assert(w->depth < JSONW_MAX_DEPTH);
	fputc(c, w->f);
	w->depth++;
	w->need_comma[w->depth] = false;
}

static void jsonw_close(struct jsonw *w, char c)
{
	assert(w->depth > 0 && !w->after_key);
	w->depth--;
	fputc(c, w->f);
}

void jsonw_object_begin(struct jsonw *w)
{
	jsonw_open(w, '{');
}

void jsonw_object_end(struct jsonw *w)
{
	jsonw_close(w, '}');
}

void jsonw_array_begin(struct jsonw *w)
{
	jsonw_open(w, '[');
}

void jsonw_array_end(struct jsonw *w)
{
	jsonw_close(w, ']');
}

/* The length of the valid UTF-8 sequence at p (1..4), or 0 when the byte at
 * p does not start one: overlong forms, surrogates and code points past
 * U+10FFFF are invalid (RFC 3629). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

static void jsonw_put_string(struct jsonw *w, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	fputc('"', w->f);
	size_t i = 0;
	while (i < len) {
		unsigned char c = p[i];
		switch (c) {
		case '"':
			fputs("\\\"", w->f);
			i++;
			continue;
		case '\\':
			fputs("\\\\", w->f);
			i++;
			continue;
		case '\n':
			fputs("\\n", w->f);
			i++;
			continue;
		case '\r':
			fputs("\\r", w->f);
			i++;
			continue;
		case '\t':
			fputs("\\t", w->f);
			i++;
			continue;
		default:
			break;
		}
		if (c < 0x20 || c == 0x7f) {
			fprintf(w->f, "\\u%04x", c);
			i++;
			continue;
		}
		size_t n = utf8_len(p + i, len - i);
		if (n == 0) {
			fprintf(w->f, "\\u%04x", c);
			i++;
			continue;
		}
		fwrite(p + i, 1, n, w->f);
		i += n;
	}
	fputc('"', w->f);
}

void jsonw_key(struct jsonw *w, const char *key)
{
	assert(!w->after_key);
	jsonw_separate(w);
	jsonw_put_string(w, key, strlen(key));
	fputc(':', w->f);
	w->after_key = true;
}

void jsonw_stringn(struct jsonw *w, const char *s, size_t len)
{
	jsonw_separate(w);
	jsonw_put_string(w, s, len);
}

void jsonw_string(struct jsonw *w, const char *s)
{
	if (s == NULL)
		jsonw_null(w);
	else
		jsonw_stringn(w, s, strlen(s));
}

void jsonw_uint(struct jsonw *w, uint64_t v)
{
	jsonw_separate(w);
	fprintf(w->f, "%" PRIu64, v);
}

void jsonw_int(struct jsonw *w, int64_t v)
{
	jsonw_separate(w);
	fprintf(w->f, "%" PRId64, v);
}

void jsonw_double(struct jsonw *w, double v)
{
	if (!isfinite(v)) {
		jsonw_null(w);
		return;
	}
	jsonw_separate(w);
	fprintf(w->f, "%.3f", v);
}

void jsonw_bool(struct jsonw *w, bool v)
{
	jsonw_separate(w);
	fputs(v ? "true" : "false", w->f);
}

void jsonw_null(struct jsonw *w)
{
	jsonw_separate(w);
	fputs("null", w->f);
}

void jsonw_finish(struct jsonw *w)
{
	assert(w->depth == 0 && !w->after_key);
	fputc('\n', w->f);
}

void jsonw_field_string(struct jsonw *w, const char *key, const char *s)
{
	jsonw_key(w, key);
	jsonw_string(w, s);
}

void jsonw_field_uint(struct jsonw *w, const char *key, uint64_t v)
{
	jsonw_key(w, key);
	jsonw_uint(w, v);
}

void jsonw_field_int(struct jsonw *w, const char *key, int64_t v)
{
	jsonw_key(w, key);
	jsonw_int(w, v);
}

void jsonw_field_bool(struct jsonw *w, const char *key, bool v)
{
	jsonw_key(w, key);
	jsonw_bool(w, v);
}
