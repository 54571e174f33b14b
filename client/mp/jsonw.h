/* A small streaming JSON writer onto a stdio stream, for --json output.
 *
 *	struct jsonw w;
 *	jsonw_init(&w, stdout);
 *	jsonw_object_begin(&w);
 *	jsonw_key(&w, "version");
 *	jsonw_uint(&w, 17);
 *	jsonw_object_end(&w);
 *	jsonw_finish(&w);
 *
 * Commas are inserted automatically; the document goes out on one line,
 * followed by a newline at jsonw_finish. Misuse (nesting past JSONW_MAX_DEPTH,
 * unbalanced ends) is a bug in the caller and is only checked by assert. */
#ifndef MP_CLI_JSONW_H
#define MP_CLI_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSONW_MAX_DEPTH 16

struct jsonw {
	FILE *f; /* not owned */
	unsigned depth;
	bool after_key;
	bool need_comma[JSONW_MAX_DEPTH + 1];
};

void jsonw_init(struct jsonw *w, FILE *f);
void jsonw_object_begin(struct jsonw *w);
void jsonw_object_end(struct jsonw *w);
void jsonw_array_begin(struct jsonw *w);
void jsonw_array_end(struct jsonw *w);
void jsonw_key(struct jsonw *w, const char *key);
/* A NULL s writes null. */
void jsonw_string(struct jsonw *w, const char *s);
void jsonw_stringn(struct jsonw *w, const char *s, size_t len);
void jsonw_uint(struct jsonw *w, uint64_t v);
void jsonw_int(struct jsonw *w, int64_t v);
/* NaN and infinities have no JSON form and are written as null. */
void jsonw_double(struct jsonw *w, double v);
void jsonw_bool(struct jsonw *w, bool v);
void jsonw_null(struct jsonw *w);
/* Ends the document with a newline. */
void jsonw_finish(struct jsonw *w);

/* key + value in one call. */
void jsonw_field_string(struct jsonw *w, const char *key, const char *s);
void jsonw_field_uint(struct jsonw *w, const char *key, uint64_t v);
void jsonw_field_int(struct jsonw *w, const char *key, int64_t v);
void jsonw_field_bool(struct jsonw *w, const char *key, bool v);

#endif
