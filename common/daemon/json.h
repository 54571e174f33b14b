/* A small streaming JSON writer onto an evbuffer, for the /status documents
 * of the admin listener.
 *
 *	struct json_writer w;
 *	json_init(&w, body);
 *	json_begin_object(&w);
 *	json_key(&w, "version");
 *	json_uint(&w, 17);
 *	json_end_object(&w);
 *	if (json_finish(&w) < 0)
 *		return 500;
 *
 * Commas are inserted automatically. Misuse (a value where a key is due, a
 * key inside an array, an unbalanced end, nesting past JSON_MAX_DEPTH, a
 * second top-level value) is remembered as the writer's error: every later
 * call writes nothing and returns it, and json_finish reports it. That way a
 * handler can emit a whole document and check once at the end. On error the
 * evbuffer holds a partial document which the caller should discard. */
#ifndef MP_JSON_H
#define MP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define JSON_CONTENT_TYPE "application/json"
#define JSON_MAX_DEPTH    32

/* Fields are private; the struct is public so that a writer can live on the
 * stack. */
struct json_writer {
	struct evbuffer *out; /* not owned */
	int err;              /* first error, 0 while all is well */
	unsigned depth;
	bool after_key; /* a key was written and its value is due */
	bool done;      /* the top-level value is complete */
	/* Per open container: JSON_LEVEL_* bits. */
	uint8_t level[JSON_MAX_DEPTH];
};

void json_init(struct json_writer *w, struct evbuffer *out);

/* Each returns 0, or the writer's error: -EINVAL for misuse, -ENOMEM when
 * the evbuffer could not grow. */
int json_begin_object(struct json_writer *w);
int json_end_object(struct json_writer *w);
int json_begin_array(struct json_writer *w);
int json_end_array(struct json_writer *w);
int json_key(struct json_writer *w, const char *key);
/* Strings are escaped: '"', '\\' and control characters are escaped, bytes
 * that are not part of valid UTF-8 become U+FFFD. A NULL s writes null. */
int json_string(struct json_writer *w, const char *s);
int json_stringn(struct json_writer *w, const char *s, size_t len);
int json_int(struct json_writer *w, int64_t v);
int json_uint(struct json_writer *w, uint64_t v);
/* NaN and infinities have no JSON form and are written as null. */
int json_double(struct json_writer *w, double v);
int json_bool(struct json_writer *w, bool v);
int json_null(struct json_writer *w);

/* Returns 0 when exactly one complete value was written without error,
 * -EINVAL when containers are still open or nothing was written, or the
 * writer's error. */
int json_finish(const struct json_writer *w);

#endif
