#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#define JSON_LEVEL_OBJECT 0x1
#define JSON_LEVEL_ITEMS  0x2 /* a member was written: the next needs a comma */

void json_init(struct json_writer *w, struct evbuffer *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

static int json_fail(struct json_writer *w, int err)
{
	if (w->err == 0)
		w->err = err;
	return w->err;
}

static int json_put(struct json_writer *w, const void *p, size_t len)
{
	if (evbuffer_add(w->out, p, len) < 0)
		return json_fail(w, -ENOMEM);
	return 0;
}

/* Called before every value: checks that a value may come here and writes
 * the comma that separates it from the previous array element. */
static int json_value_start(struct json_writer *w)
{
	if (w->err)
		return w->err;
	if (w->depth == 0) {
		if (w->done)
			return json_fail(w, -EINVAL);
		return 0;
	}
	uint8_t *lv = &w->level[w->depth - 1];
	if (*lv & JSON_LEVEL_OBJECT) {
		if (!w->after_key)
			return json_fail(w, -EINVAL);
		w->after_key = false;
		return 0;
	}
	if (*lv & JSON_LEVEL_ITEMS)
		return json_put(w, ",", 1);
	*lv |= JSON_LEVEL_ITEMS;
	return 0;
}

static void json_value_end(struct json_writer *w)
{
	if (w->depth == 0)
		w->done = true;
}

static int json_scalar(struct json_writer *w, const char *text, size_t len)
{
	int r = json_value_start(w);
	if (r < 0)
		return r;
	r = json_put(w, text, len);
	if (r < 0)
		return r;
	json_value_end(w);
	return 0;
}

static int json_begin(struct json_writer *w, uint8_t kind, char open)
{
	int r = json_value_start(w);
	if (r < 0)
		return r;
	if (w->depth == JSON_MAX_DEPTH)
		return json_fail(w, -EINVAL);
	r = json_put(w, &open, 1);
	if (r < 0)
		return r;
	w->level[w->depth++] = kind;
	return 0;
}

static int json_end(struct json_writer *w, uint8_t kind, char close)
{
	if (w->err)
		return w->err;
	if (w->depth == 0 || (w->level[w->depth - 1] & JSON_LEVEL_OBJECT) != kind || w->after_key)
		return json_fail(w, -EINVAL);
	int r = json_put(w, &close, 1);
	if (r < 0)
		return r;
	w->depth--;
	json_value_end(w);
	return 0;
}

int json_begin_object(struct json_writer *w)
{
	return json_begin(w, JSON_LEVEL_OBJECT, '{');
}

int json_end_object(struct json_writer *w)
{
	return json_end(w, JSON_LEVEL_OBJECT, '}');
}

int json_begin_array(struct json_writer *w)
{
	return json_begin(w, 0, '[');
}

int json_end_array(struct json_writer *w)
{
	return json_end(w, 0, ']');
}

/* Length of the well-formed UTF-8 sequence at p (Unicode table 3-7: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* Writes s as a quoted JSON string, copying runs that need no escape in one
 * piece. */
static int json_put_string(struct json_writer *w, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t run = 0; /* start of the pending unescaped run */
	size_t i = 0;
	int r = json_put(w, "\"", 1);
	while (r == 0 && i < len) {
		unsigned char c = p[i];
		size_t n = 1;
		char esc[8];
		const char *rep = NULL;
		size_t replen = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			rep = esc;
			replen = 2;
		} else if (c < 0x20) {
			replen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
			rep = esc;
		} else if (c >= 0x80) {
			n = utf8_len(p + i, len - i);
			if (n == 0) {
				rep = "\\ufffd";
				replen = 6;
				n = 1;
			}
		}
		if (rep != NULL) {
			if (i > run)
				r = json_put(w, p + run, i - run);
			if (r == 0)
				r = json_put(w, rep, replen);
			run = i + n;
		}
		i += n;
	}
	if (r == 0 && i > run)
		r = json_put(w, p + run, i - run);
	if (r == 0)
		r = json_put(w, "\"", 1);
	return r;
}

int json_key(struct json_writer *w, const char *key)
{
	if (w->err)
		return w->err;
	if (w->depth == 0 || !(w->level[w->depth - 1] & JSON_LEVEL_OBJECT) || w->after_key ||
	    key == NULL)
		return json_fail(w, -EINVAL);
	uint8_t *lv = &w->level[w->depth - 1];
	int r = 0;
	if (*lv & JSON_LEVEL_ITEMS)
		r = json_put(w, ",", 1);
	if (r == 0)
		r = json_put_string(w, key, strlen(key));
	if (r == 0)
		r = json_put(w, ":", 1);
	if (r < 0)
		return r;
	*lv |= JSON_LEVEL_ITEMS;
	w->after_key = true;
	return 0;
}

int json_stringn(struct json_writer *w, const char *s, size_t len)
{
	if (s == NULL)
		return json_null(w);
	int r = json_value_start(w);
	if (r < 0)
		return r;
	r = json_put_string(w, s, len);
	if (r < 0)
		return r;
	json_value_end(w);
	return 0;
}

int json_string(struct json_writer *w, const char *s)
{
	return json_stringn(w, s, s != NULL ? strlen(s) : 0);
}

int json_int(struct json_writer *w, int64_t v)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRId64, v);
	return json_scalar(w, buf, (size_t)n);
}

int json_uint(struct json_writer *w, uint64_t v)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return json_scalar(w, buf, (size_t)n);
}

int json_double(struct json_writer *w, double v)
{
	if (!isfinite(v))
		return json_null(w);
	/* The shortest of %.15g..%.17g that reads back as v: 0.1 stays "0.1"
	 * rather than "0.10000000000000001". */
	char buf[32];
	int n = 0;
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return json_scalar(w, buf, (size_t)n);
}

int json_bool(struct json_writer *w, bool v)
{
	return v ? json_scalar(w, "true", 4) : json_scalar(w, "false", 5);
}

int json_null(struct json_writer *w)
{
	return json_scalar(w, "null", 4);
}

int json_finish(const struct json_writer *w)
{
	if (w->err)
		return w->err;
	return w->done ? 0 : -EINVAL;
}
