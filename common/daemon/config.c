#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "log.h"
#include "paths.h"

/* Room for one value error: a dotted name, a quoted (truncated) value, and
 * the explanation. */
#define ERRLEN 1024
/* Values echoed in messages are cut here so a huge scalar cannot make a huge
 * message. */
#define QUOTE_MAX 64

/* A parsed value, before it is stored into a field. */
struct value {
	union {
		char *s;
		uint64_t u;
		bool b;
		unsigned e;
		struct config_strlist l;
	};
};

static void set_err(char **ret_err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(char **ret_err, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (!ret_err)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	*ret_err = s;
}

/* 'value' for a message: truncated, with control bytes escaped. */
static void quote(char *out, size_t outlen, const char *s, size_t len)
{
	size_t o = 0;

	/* 4 bytes per input byte at worst, plus quotes and "..." */
	if (outlen < QUOTE_MAX * 4 + 8) {
		snprintf(out, outlen, "'...'");
		return;
	}
	size_t cut = len;
	if (len > QUOTE_MAX) {
		/* not inside a UTF-8 sequence */
		cut = QUOTE_MAX;
		while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
			cut--;
	}
	out[o++] = '\'';
	for (size_t i = 0; i < cut; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	if (cut < len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '\'';
	out[o] = '\0';
}

static bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

static void format_number(enum config_type type, uint64_t v, char *out, size_t outlen)
{
	if (type == CONFIG_DURATION)
		units_format_duration(v, out, outlen);
	else if (type == CONFIG_SIZE)
		units_format_size(v, out, outlen);
	else
		snprintf(out, outlen, "%" PRIu64, v);
}

/* ---- fields ---- */

static size_t field_size(enum config_type type)
{
	switch (type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
	case CONFIG_HOSTPORT:
		return sizeof(char *);
	case CONFIG_UINT:
	case CONFIG_DURATION:
	case CONFIG_SIZE:
		return sizeof(uint64_t);
	case CONFIG_BOOL:
		return sizeof(bool);
	case CONFIG_ENUM:
		return sizeof(unsigned);
	case CONFIG_STRLIST:
		return sizeof(struct config_strlist);
	}
	return 0;
}

static bool is_string_type(enum config_type type)
{
	return type == CONFIG_STRING || type == CONFIG_PATH || type == CONFIG_HOSTPORT;
}

static void *field(const struct config_option *o, void *target)
{
	return (char *)target + o->offset;
}

static const void *cfield(const struct config_option *o, const void *target)
{
	return (const char *)target + o->offset;
}

static void strlist_clear(struct config_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

/* Lists are only ever built by appending, so the capacity is implied by n:
 * 4, then the next power of two. */
static int strlist_add(struct config_strlist *l, const char *s, size_t len)
{
	char *item;

	if (l->n == 0 || (l->n >= 4 && (l->n & (l->n - 1)) == 0)) {
		size_t cap = l->n ? l->n * 2 : 4;
		char **items = realloc(l->items, cap * sizeof(*items));
		if (!items)
			return -ENOMEM;
		l->items = items;
	}
	item = strndup(s, len);
	if (!item)
		return -ENOMEM;
	l->items[l->n++] = item;
	return 0;
}

static void value_clear(enum config_type type, struct value *v)
{
	if (is_string_type(type)) {
		free(v->s);
		v->s = NULL;
	} else if (type == CONFIG_STRLIST) {
		strlist_clear(&v->l);
	}
}

/* Moves v into the field, freeing what the field held when free_old. */
static void value_store(const struct config_option *o, void *target, struct value *v, bool free_old)
{
	void *f = field(o, target);

	switch (o->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
	case CONFIG_HOSTPORT:
		if (free_old)
			free(*(char **)f);
		*(char **)f = v->s;
		break;
	case CONFIG_UINT:
	case CONFIG_DURATION:
	case CONFIG_SIZE:
		*(uint64_t *)f = v->u;
		break;
	case CONFIG_BOOL:
		*(bool *)f = v->b;
		break;
	case CONFIG_ENUM:
		*(unsigned *)f = v->e;
		break;
	case CONFIG_STRLIST:
		if (free_old)
			strlist_clear(f);
		*(struct config_strlist *)f = v->l;
		break;
	}
	memset(v, 0, sizeof(*v));
}

/* ---- parsing one value ---- */

static int check_bounds(const struct config_option *o, uint64_t v, char *err, size_t errlen)
{
	char vs[32], bs[32];

	if (v >= o->min && (o->max == 0 || v <= o->max))
		return 0;
	format_number(o->type, v, vs, sizeof(vs));
	if (v < o->min) {
		format_number(o->type, o->min, bs, sizeof(bs));
		snprintf(err, errlen, "%s is below the minimum %s", vs, bs);
	} else {
		format_number(o->type, o->max, bs, sizeof(bs));
		snprintf(err, errlen, "%s is above the maximum %s", vs, bs);
	}
	return -EINVAL;
}

static int parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = {"true", "yes", "on", NULL};
	static const char *const no[] = {"false", "no", "off", NULL};

	for (size_t i = 0; yes[i]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_enum(const struct config_option *o, const char *s, unsigned *ret, char *err,
                      size_t errlen, const char *quoted)
{
	size_t n = 0;

	for (unsigned i = 0; o->choices && o->choices[i]; i++) {
		if (strcmp(s, o->choices[i]) == 0) {
			*ret = i;
			return 0;
		}
	}
	n += (size_t)snprintf(err, errlen, "expected one of ");
	for (unsigned i = 0; o->choices && o->choices[i] && n < errlen; i++)
		n += (size_t)snprintf(err + n, errlen - n, "%s%s", i ? ", " : "", o->choices[i]);
	if (n < errlen)
		snprintf(err + n, errlen - n, "; got %s", quoted);
	return -EINVAL;
}

/* Splits "a, b,c" into items, trimming blanks around each. */
static int parse_commalist(const char *s, size_t len, struct config_strlist *ret, char *err,
                           size_t errlen)
{
	struct config_strlist l = {0};
	size_t i = 0;

	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i == len) {
		*ret = l;
		return 0;
	}
	for (;;) {
		size_t start = i, end;
		while (i < len && s[i] != ',')
			i++;
		end = i;
		while (start < end && (s[start] == ' ' || s[start] == '\t'))
			start++;
		while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\t'))
			end--;
		if (end == start) {
			snprintf(err, errlen, "empty item in the list");
			strlist_clear(&l);
			return -EINVAL;
		}
		if (strlist_add(&l, s + start, end - start) < 0) {
			strlist_clear(&l);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		if (i == len)
			break;
		i++; /* the comma */
	}
	*ret = l;
	return 0;
}

/* Parses text (len bytes, NUL-terminated at len) for option o. is_null says
 * the YAML scalar was a plain null. The message in err does not name the
 * option: callers add where it came from. */
static int value_parse(const struct config_option *o, const char *text, size_t len, bool is_null,
                       struct value *ret, char *err, size_t errlen)
{
	char q[QUOTE_MAX * 4 + 8];
	struct value v;
	int r;

	memset(&v, 0, sizeof(v));
	quote(q, sizeof(q), text, len);
	if (is_null) {
		if (is_string_type(o->type) || o->type == CONFIG_STRLIST) {
			*ret = v;
			return 0;
		}
		snprintf(err, errlen, "missing value");
		return -EINVAL;
	}
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "value contains a NUL byte");
		return -EINVAL;
	}
	if (!utf8_valid((const unsigned char *)text, len)) {
		snprintf(err, errlen, "value is not valid UTF-8");
		return -EINVAL;
	}

	switch (o->type) {
	case CONFIG_STRING:
		break;
	case CONFIG_PATH:
		if (len == 0) {
			snprintf(err, errlen, "expected a path, got an empty string");
			return -EINVAL;
		}
		if (len >= PATH_MAX) {
			snprintf(err, errlen, "path longer than %d bytes", PATH_MAX - 1);
			return -EINVAL;
		}
		break;
	case CONFIG_HOSTPORT:
		r = units_parse_hostport(text, NULL, 0, NULL);
		if (r == -ERANGE) {
			snprintf(err, errlen, "port must be 1..65535, got %s", q);
			return -EINVAL;
		} else if (r < 0) {
			snprintf(err, errlen, "expected HOST:PORT, got %s", q);
			return -EINVAL;
		}
		break;
	case CONFIG_UINT: {
		const char *p = text;
		r = units_parse_digits(&p, &v.u);
		if (r == -EINVAL || *p != '\0') {
			snprintf(err, errlen, "expected a non-negative integer, got %s", q);
			return -EINVAL;
		}
		if (r < 0) {
			snprintf(err, errlen, "%s is too large", q);
			return -EINVAL;
		}
		r = check_bounds(o, v.u, err, errlen);
		if (r == 0)
			*ret = v;
		return r;
	}
	case CONFIG_DURATION:
		r = units_parse_duration(text, &v.u);
		if (r == -ERANGE) {
			snprintf(err, errlen, "%s is too large", q);
			return -EINVAL;
		} else if (r < 0) {
			snprintf(err, errlen,
			         "expected a duration like 250ms, 10s, 5m, 2h or 7d, got %s", q);
			return -EINVAL;
		}
		r = check_bounds(o, v.u, err, errlen);
		if (r == 0)
			*ret = v;
		return r;
	case CONFIG_SIZE:
		r = units_parse_size(text, &v.u);
		if (r == -ERANGE) {
			snprintf(err, errlen, "%s is too large", q);
			return -EINVAL;
		} else if (r < 0) {
			snprintf(err, errlen,
			         "expected a size like 512, 64KiB, 16MiB or 10GB, got %s", q);
			return -EINVAL;
		}
		r = check_bounds(o, v.u, err, errlen);
		if (r == 0)
			*ret = v;
		return r;
	case CONFIG_BOOL:
		if (parse_bool(text, &v.b) < 0) {
			snprintf(err, errlen, "expected true or false, got %s", q);
			return -EINVAL;
		}
		*ret = v;
		return 0;
	case CONFIG_ENUM:
		r = parse_enum(o, text, &v.e, err, errlen, q);
		if (r < 0)
			return r;
		*ret = v;
		return 0;
	case CONFIG_STRLIST:
		r = parse_commalist(text, len, &v.l, err, errlen);
		if (r < 0)
			return r;
		*ret = v;
		return 0;
	}
	v.s = strndup(text, len);
	if (!v.s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*ret = v;
	return 0;
}

/* ---- the table ---- */

static size_t table_span(const struct config_option *table)
{
	size_t span = 0;

	for (const struct config_option *o = table; o->name; o++)
		if (o->offset + field_size(o->type) > span)
			span = o->offset + field_size(o->type);
	return span;
}

static const struct config_option *find_n(const struct config_option *table, const char *name,
                                          size_t len, bool dash_is_underscore)
{
	for (const struct config_option *o = table; o->name; o++) {
		size_t i;
		for (i = 0; i < len; i++) {
			char a = name[i], b = o->name[i];
			if (a != b && !(dash_is_underscore && a == '-' && b == '_'))
				break;
		}
		if (i == len && o->name[len] == '\0')
			return o;
	}
	return NULL;
}

const struct config_option *config_find(const struct config_option *table, const char *name)
{
	if (!table || !name)
		return NULL;
	return find_n(table, name, strlen(name), false);
}

/* Whether name (not an option itself) is a section: a dotted prefix of some
 * option's name. */
static bool is_section(const struct config_option *table, const char *name, size_t len)
{
	for (const struct config_option *o = table; o->name; o++)
		if (strncmp(o->name, name, len) == 0 && o->name[len] == '.')
			return true;
	return false;
}

/* Levenshtein distance, or 3 when it is surely more than 2. */
static unsigned edit_distance(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned row[CONFIG_MAX_NAME + 1];

	if (alen > CONFIG_MAX_NAME || blen > CONFIG_MAX_NAME ||
	    (alen > blen ? alen - blen : blen - alen) > 2)
		return 3;
	for (size_t j = 0; j <= blen; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= alen; i++) {
		unsigned diag = row[0];
		row[0] = (unsigned)i;
		for (size_t j = 1; j <= blen; j++) {
			unsigned up = row[j];
			unsigned best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[blen] > 3 ? 3 : row[blen];
}

/* "; did you mean 'x'?" for the closest option name (or section name, with
 * sections) within two edits, else "". */
static void suggest(const struct config_option *table, const char *name, size_t len, bool sections,
                    char *out, size_t outlen)
{
	const char *best = NULL;
	size_t best_len = 0;
	unsigned best_d = 3;

	out[0] = '\0';
	for (const struct config_option *o = table; o->name; o++) {
		/* The option's full name and each of its sections. */
		for (size_t l = 0;; l++) {
			if ((sections && o->name[l] == '.') || o->name[l] == '\0') {
				unsigned d = edit_distance(name, len, o->name, l);
				if (d < best_d) {
					best_d = d;
					best = o->name;
					best_len = l;
				}
			}
			if (o->name[l] == '\0')
				break;
		}
	}
	if (best)
		snprintf(out, outlen, "; did you mean '%.*s'?", (int)best_len, best);
}

/* Deep-copies the table's fields from src into dst, whose fields are zero. On
 * failure dst's fields are zero again. */
static int copy_fields(const struct config_option *table, void *dst, const void *src)
{
	for (const struct config_option *o = table; o->name; o++) {
		const void *s = cfield(o, src);
		void *d = field(o, dst);

		if (is_string_type(o->type)) {
			const char *str = *(char *const *)s;
			if (str && !(*(char **)d = strdup(str)))
				goto fail;
		} else if (o->type == CONFIG_STRLIST) {
			const struct config_strlist *sl = s;
			struct config_strlist *dl = d;
			for (size_t i = 0; i < sl->n; i++)
				if (strlist_add(dl, sl->items[i], strlen(sl->items[i])) < 0)
					goto fail;
		} else {
			memcpy(d, s, field_size(o->type));
		}
	}
	return 0;
fail:
	config_free(table, dst);
	return -ENOMEM;
}

/* Frees target's fields, then moves src's (shallow) into target. */
static void move_fields(const struct config_option *table, void *target, void *src)
{
	config_free(table, target);
	for (const struct config_option *o = table; o->name; o++)
		memcpy(field(o, target), field(o, src), field_size(o->type));
}

/* ---- YAML loading ---- */

struct seen_key {
	char *name;
	size_t line;
};

struct loader {
	const struct config_option *table;
	void *scratch;
	const char *name;
	const unsigned char *buf;
	size_t len;
	yaml_parser_t parser;
	struct seen_key *seen;
	size_t nseen;
	char **ret_err;
};

static int fail_at(struct loader *l, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(struct loader *l, yaml_mark_t mark, const char *fmt, ...)
{
	char msg[ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	set_err(l->ret_err, "%s:%zu:%zu: %s", l->name, mark.line + 1, mark.column + 1, msg);
	return -EINVAL;
}

/* libyaml reports reader errors (bad encoding, control characters) as a byte
 * offset; turn it into a line and column like the other errors. */
static yaml_mark_t mark_at_offset(const struct loader *l, size_t offset)
{
	yaml_mark_t m = {0};

	if (offset > l->len)
		offset = l->len;
	for (size_t i = 0; i < offset; i++) {
		if (l->buf[i] == '\n') {
			m.line++;
			m.column = 0;
		} else if ((l->buf[i] & 0xc0) != 0x80) {
			m.column++;
		}
	}
	m.index = offset;
	return m;
}

/* The byte at a libyaml mark, found by line and column (libyaml counts
 * characters), or -1. */
static int byte_at_mark(const struct loader *l, yaml_mark_t mark)
{
	size_t i = 0, line = 0, col = 0;

	for (; i < l->len && line < mark.line; i++)
		if (l->buf[i] == '\n')
			line++;
	for (; i < l->len && l->buf[i] != '\n'; i++) {
		if ((l->buf[i] & 0xc0) == 0x80)
			continue;
		if (col++ == mark.column)
			return l->buf[i];
	}
	return -1;
}

static int syntax_error(struct loader *l)
{
	const yaml_parser_t *p = &l->parser;
	const char *problem = p->problem ? p->problem : "invalid YAML";
	/* libyaml's word for a tab is "character that cannot start any token" */
	const char *hint = byte_at_mark(l, p->problem_mark) == '\t' && !strstr(problem, "tab")
	                       ? "; tabs are not allowed in YAML indentation"
	                       : "";

	switch (p->error) {
	case YAML_MEMORY_ERROR:
		set_err(l->ret_err, "%s: out of memory", l->name);
		return -ENOMEM;
	case YAML_READER_ERROR:
		if (p->problem_value != -1)
			return fail_at(l, mark_at_offset(l, p->problem_offset), "%s (0x%02x)",
			               problem, (unsigned)p->problem_value);
		return fail_at(l, mark_at_offset(l, p->problem_offset), "%s", problem);
	default:
		if (p->context && (p->context_mark.line != p->problem_mark.line ||
		                   p->context_mark.column != p->problem_mark.column))
			return fail_at(l, p->problem_mark, "%s (%s at line %zu, column %zu)%s",
			               problem, p->context, p->context_mark.line + 1,
			               p->context_mark.column + 1, hint);
		if (p->context)
			return fail_at(l, p->problem_mark, "%s (%s)%s", problem, p->context, hint);
		return fail_at(l, p->problem_mark, "%s%s", problem, hint);
	}
}

static const char *event_kind(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return "a scalar";
	case YAML_SEQUENCE_START_EVENT:
		return "a sequence";
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	default:
		return "something else";
	}
}

/* The next event, refusing aliases and anchors: they would let a small file
 * stand for a large one, and options have no use for them. */
static int next_event(struct loader *l, yaml_event_t *ev)
{
	const yaml_char_t *anchor = NULL;

	if (!yaml_parser_parse(&l->parser, ev))
		return syntax_error(l);
	if (ev->type == YAML_ALIAS_EVENT) {
		int r = fail_at(l, ev->start_mark, "aliases (*%s) are not supported",
		                (const char *)ev->data.alias.anchor);
		yaml_event_delete(ev);
		return r;
	}
	if (ev->type == YAML_SCALAR_EVENT)
		anchor = ev->data.scalar.anchor;
	else if (ev->type == YAML_SEQUENCE_START_EVENT)
		anchor = ev->data.sequence_start.anchor;
	else if (ev->type == YAML_MAPPING_START_EVENT)
		anchor = ev->data.mapping_start.anchor;
	if (anchor) {
		int r = fail_at(l, ev->start_mark, "anchors (&%s) are not supported",
		                (const char *)anchor);
		yaml_event_delete(ev);
		return r;
	}
	return 0;
}

static bool scalar_is_null(const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;

	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || ev->data.scalar.tag)
		return false;
	return ev->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int load_sequence(struct loader *l, const struct config_option *o)
{
	struct value v;
	int r;

	memset(&v, 0, sizeof(v));
	for (;;) {
		yaml_event_t ev;
		const char *s;
		size_t len;

		r = next_event(l, &ev);
		if (r < 0)
			goto fail;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			r = fail_at(l, ev.start_mark, "'%s': list items must be scalars, not %s",
			            o->name, event_kind(&ev));
			yaml_event_delete(&ev);
			goto fail;
		}
		s = (const char *)ev.data.scalar.value;
		len = ev.data.scalar.length;
		if (scalar_is_null(&ev) || len == 0)
			r = fail_at(l, ev.start_mark, "'%s': empty list item", o->name);
		else if (memchr(s, '\0', len))
			r = fail_at(l, ev.start_mark, "'%s': list item contains a NUL byte",
			            o->name);
		else if (strlist_add(&v.l, s, len) < 0)
			r = -ENOMEM;
		yaml_event_delete(&ev);
		if (r == -ENOMEM)
			set_err(l->ret_err, "%s: out of memory", l->name);
		if (r < 0)
			goto fail;
	}
	value_store(o, l->scratch, &v, true);
	return 0;
fail:
	value_clear(o->type, &v);
	return r;
}

/* Loads the value of option o, which starts with ev (consumed). */
static int load_value(struct loader *l, const struct config_option *o, yaml_event_t *ev)
{
	char err[ERRLEN];
	struct value v;
	int r;

	if (ev->type == YAML_SEQUENCE_START_EVENT && o->type == CONFIG_STRLIST) {
		yaml_event_delete(ev);
		return load_sequence(l, o);
	}
	if (ev->type != YAML_SCALAR_EVENT) {
		r = fail_at(l, ev->start_mark, "'%s': expected %s, got %s", o->name,
		            o->type == CONFIG_STRLIST ? "a scalar or a list of scalars"
		                                      : "a scalar",
		            event_kind(ev));
		yaml_event_delete(ev);
		return r;
	}
	r = value_parse(o, (const char *)ev->data.scalar.value, ev->data.scalar.length,
	                scalar_is_null(ev), &v, err, sizeof(err));
	if (r == -ENOMEM)
		set_err(l->ret_err, "%s: out of memory", l->name);
	else if (r < 0)
		r = fail_at(l, ev->start_mark, "'%s': %s", o->name, err);
	else
		value_store(o, l->scratch, &v, true);
	yaml_event_delete(ev);
	return r;
}

static int load_mapping(struct loader *l, const char *prefix, size_t plen, unsigned depth);

/* Loads the value of section name, which starts with ev (consumed). */
static int load_section(struct loader *l, const char *name, size_t len, unsigned depth,
                        yaml_event_t *ev)
{
	int r = 0;

	if (ev->type == YAML_MAPPING_START_EVENT) {
		if (depth + 1 > CONFIG_MAX_DEPTH)
			r = fail_at(l, ev->start_mark, "'%s': nesting deeper than %d levels", name,
			            CONFIG_MAX_DEPTH);
		yaml_event_delete(ev);
		return r < 0 ? r : load_mapping(l, name, len, depth + 1);
	}
	/* "tls:" with all its keys commented out */
	if (ev->type == YAML_SCALAR_EVENT && scalar_is_null(ev)) {
		yaml_event_delete(ev);
		return 0;
	}
	r = fail_at(l, ev->start_mark, "'%s' is a section: expected a mapping, got %s", name,
	            event_kind(ev));
	yaml_event_delete(ev);
	return r;
}

/* Records a key (a dotted name) and refuses one seen before. YAML leaves
 * duplicate keys undefined and libyaml accepts them; a second value silently
 * winning is how typos go unnoticed. */
static int note_key(struct loader *l, const char *name, yaml_mark_t mark)
{
	struct seen_key *seen;

	for (size_t i = 0; i < l->nseen; i++)
		if (strcmp(l->seen[i].name, name) == 0)
			return fail_at(l, mark, "duplicate key '%s' (first at line %zu)", name,
			               l->seen[i].line);
	/* Every key names a distinct option or section, so this stays small. */
	seen = realloc(l->seen, (l->nseen + 1) * sizeof(*seen));
	if (!seen)
		goto oom;
	l->seen = seen;
	seen[l->nseen].name = strdup(name);
	if (!seen[l->nseen].name)
		goto oom;
	seen[l->nseen].line = mark.line + 1;
	l->nseen++;
	return 0;
oom:
	set_err(l->ret_err, "%s: out of memory", l->name);
	return -ENOMEM;
}

/* Loads the keys of a mapping, after its start event, up to and including its
 * end event. prefix is the dotted name of the section ("" at the top). */
static int load_mapping(struct loader *l, const char *prefix, size_t plen, unsigned depth)
{
	for (;;) {
		char name[CONFIG_MAX_NAME + 1], q[QUOTE_MAX * 4 + 8], hint[CONFIG_MAX_NAME + 32];
		const struct config_option *o;
		yaml_event_t key, val;
		yaml_mark_t kmark;
		const char *k;
		size_t klen, len;
		int r;

		r = next_event(l, &key);
		if (r < 0)
			return r;
		if (key.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&key);
			return 0;
		}
		kmark = key.start_mark;
		if (key.type != YAML_SCALAR_EVENT) {
			r = fail_at(l, kmark, "keys must be scalars, not %s", event_kind(&key));
			yaml_event_delete(&key);
			return r;
		}
		k = (const char *)key.data.scalar.value;
		klen = key.data.scalar.length;
		quote(q, sizeof(q), k, klen);
		r = 0;
		if (memchr(k, '\0', klen))
			r = fail_at(l, kmark, "key %s contains a NUL byte", q);
		else if (plen + 1 + klen > CONFIG_MAX_NAME)
			r = fail_at(l, kmark, "unknown key %s (too long)", q);
		if (r < 0) {
			yaml_event_delete(&key);
			return r;
		}
		len = 0;
		if (plen) {
			memcpy(name, prefix, plen);
			name[plen] = '.';
			len = plen + 1;
		}
		memcpy(name + len, k, klen);
		len += klen;
		name[len] = '\0';
		yaml_event_delete(&key);

		o = find_n(l->table, name, len, false);
		if (!o && !is_section(l->table, name, len)) {
			suggest(l->table, name, len, true, hint, sizeof(hint));
			quote(q, sizeof(q), name, len);
			return fail_at(l, kmark, "unknown key %s%s", q, hint);
		}
		r = note_key(l, name, kmark);
		if (r < 0)
			return r;
		r = next_event(l, &val);
		if (r < 0)
			return r;
		if (o)
			r = load_value(l, o, &val);
		else
			r = load_section(l, name, len, depth, &val);
		if (r < 0)
			return r;
	}
}

static int load_stream(struct loader *l)
{
	yaml_event_t ev;
	int r;

	r = next_event(l, &ev);
	if (r < 0)
		return r;
	yaml_event_delete(&ev); /* the stream start */
	r = next_event(l, &ev);
	if (r < 0)
		return r;
	if (ev.type == YAML_STREAM_END_EVENT) {
		/* An empty file, or only comments: nothing changes. */
		yaml_event_delete(&ev);
		return 0;
	}
	yaml_event_delete(&ev); /* the document start */
	r = next_event(l, &ev);
	if (r < 0)
		return r;
	if (ev.type == YAML_MAPPING_START_EVENT) {
		yaml_event_delete(&ev);
		r = load_mapping(l, "", 0, 1);
		if (r < 0)
			return r;
	} else if (ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
		yaml_event_delete(&ev); /* "---" alone */
	} else {
		r = fail_at(l, ev.start_mark, "expected a mapping of options, got %s",
		            event_kind(&ev));
		yaml_event_delete(&ev);
		return r;
	}
	r = next_event(l, &ev);
	if (r < 0)
		return r;
	yaml_event_delete(&ev); /* the document end */
	r = next_event(l, &ev);
	if (r < 0)
		return r;
	if (ev.type != YAML_STREAM_END_EVENT)
		r = fail_at(l, ev.start_mark, "more than one YAML document");
	yaml_event_delete(&ev);
	return r;
}

int config_load_buffer(const struct config_option *table, void *target, const char *name,
                       const void *buf, size_t len, char **ret_err)
{
	struct loader l;
	int r;

	if (!table || !target || (!buf && len))
		return -EINVAL;
	if (!name)
		name = "<config>";
	if (len > CONFIG_MAX_FILE_BYTES) {
		set_err(ret_err, "%s: larger than %d bytes", name, CONFIG_MAX_FILE_BYTES);
		return -EFBIG;
	}
	memset(&l, 0, sizeof(l));
	l.table = table;
	l.name = name;
	l.buf = buf ? buf : (const unsigned char *)"";
	l.len = len;
	l.ret_err = ret_err;
	/* Parse into a copy so that a bad file (a failed SIGHUP reload) leaves
	 * the running configuration exactly as it was. */
	l.scratch = calloc(1, table_span(table) + 1);
	if (!l.scratch || copy_fields(table, l.scratch, target) < 0) {
		free(l.scratch);
		set_err(ret_err, "%s: out of memory", name);
		return -ENOMEM;
	}
	if (!yaml_parser_initialize(&l.parser)) {
		config_free(table, l.scratch);
		free(l.scratch);
		set_err(ret_err, "%s: out of memory", name);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&l.parser, l.buf, len);
	r = load_stream(&l);
	yaml_parser_delete(&l.parser);
	for (size_t i = 0; i < l.nseen; i++)
		free(l.seen[i].name);
	free(l.seen);
	if (r == 0)
		move_fields(table, target, l.scratch);
	else
		config_free(table, l.scratch);
	free(l.scratch);
	return r;
}

int config_load_file(const struct config_option *table, void *target, const char *path,
                     char **ret_err)
{
	char *buf = NULL;
	size_t len = 0;
	if (!table || !target || !path)
		return -EINVAL;
	int r = paths_read_file(path, CONFIG_MAX_FILE_BYTES, &buf, &len, NULL, ret_err);
	if (r < 0)
		return r;
	r = config_load_buffer(table, target, path, buf, len, ret_err);
	free(buf);
	return r;
}

/* ---- the other operations ---- */

int config_set(const struct config_option *table, void *target, const char *name, const char *value,
               char **ret_err)
{
	char err[ERRLEN], hint[CONFIG_MAX_NAME + 32];
	const struct config_option *o;
	struct value v;
	int r;

	if (!table || !target || !name || !value)
		return -EINVAL;
	o = find_n(table, name, strlen(name), true);
	if (!o) {
		char norm[CONFIG_MAX_NAME + 1];
		size_t len = strnlen(name, CONFIG_MAX_NAME);
		for (size_t i = 0; i < len; i++)
			norm[i] = name[i] == '-' ? '_' : name[i];
		norm[len] = '\0';
		suggest(table, norm, len, false, hint, sizeof(hint));
		quote(err, sizeof(err), name, strlen(name));
		set_err(ret_err, "unknown option %s%s", err, hint);
		return -ENOENT;
	}
	r = value_parse(o, value, strlen(value), false, &v, err, sizeof(err));
	if (r < 0) {
		set_err(ret_err, "'%s': %s", o->name, err);
		return r;
	}
	value_store(o, target, &v, true);
	return 0;
}

void config_defaults(const struct config_option *table, void *target)
{
	char err[ERRLEN];

	for (const struct config_option *o = table; o->name; o++) {
		struct value v;
		int r;

		memset(&v, 0, sizeof(v));
		if (o->default_value) {
			r = value_parse(o, o->default_value, strlen(o->default_value), false, &v,
			                err, sizeof(err));
			if (r < 0)
				fatal("config: default of '%s': %s", o->name, err);
		}
		value_store(o, target, &v, false);
	}
}

void config_free(const struct config_option *table, void *target)
{
	if (!table || !target)
		return;
	for (const struct config_option *o = table; o->name; o++) {
		void *f = field(o, target);
		if (is_string_type(o->type)) {
			free(*(char **)f);
			*(char **)f = NULL;
		} else if (o->type == CONFIG_STRLIST) {
			strlist_clear(f);
		}
	}
}

int config_copy(const struct config_option *table, void *dst, const void *src)
{
	void *scratch;

	if (!table || !dst || !src)
		return -EINVAL;
	scratch = calloc(1, table_span(table) + 1);
	if (!scratch)
		return -ENOMEM;
	if (copy_fields(table, scratch, src) < 0) {
		free(scratch);
		return -ENOMEM;
	}
	for (const struct config_option *o = table; o->name; o++)
		memcpy(field(o, dst), field(o, scratch), field_size(o->type));
	free(scratch);
	return 0;
}

/* ---- printing ---- */

static bool plain_safe(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	    strcmp(s, "NULL") == 0 || strncmp(s, "...", 3) == 0 || s[len - 1] == ':')
		return false;
	if (!isalnum((unsigned char)s[0]) && !strchr("/._", s[0]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_./@+-:=", s[i]))
			return false;
	return true;
}

/* Writes s as a YAML scalar: plain when that is unambiguous, else double
 * quoted with every character that libyaml would not read back verbatim
 * (controls, C1, line and paragraph separators, BOM) escaped. s is valid
 * UTF-8: value_parse refuses anything else. */
static void print_scalar(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (plain_safe(s)) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	while (*p) {
		uint32_t cp = *p;
		size_t n = 1;

		if (cp >= 0xc0) {
			n = cp >= 0xf0 ? 4 : cp >= 0xe0 ? 3 : 2;
			cp &= 0x3f >> (n - 1);
			for (size_t k = 1; k < n && p[k]; k++)
				cp = (cp << 6) | (p[k] & 0x3f);
		}
		if (cp == '"' || cp == '\\')
			fprintf(out, "\\%c", (char)cp);
		else if (cp == '\n')
			fputs("\\n", out);
		else if (cp == '\t')
			fputs("\\t", out);
		else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			fprintf(out, "\\x%02x", (unsigned)cp);
		else if (cp == 0x2028 || cp == 0x2029 || cp == 0xfeff || cp == 0xfffe ||
		         cp == 0xffff)
			fprintf(out, "\\u%04x", (unsigned)cp);
		else
			fwrite(p, 1, n, out);
		for (size_t k = 0; k < n && *p; k++)
			p++;
	}
	fputc('"', out);
}

static void print_comment(FILE *out, unsigned indent, const char *text)
{
	while (*text) {
		size_t n = strcspn(text, "\n");
		fprintf(out, "%*s# %.*s\n", (int)indent, "", (int)n, text);
		text += n;
		if (*text == '\n')
			text++;
	}
}

static void print_leaf(const struct config_option *o, const void *target, FILE *out,
                       unsigned indent, const char *key, size_t klen)
{
	const void *f = cfield(o, target);
	char buf[32];

	if (o->help)
		print_comment(out, indent, o->help);
	fprintf(out, "%*s%.*s:", (int)indent, "", (int)klen, key);
	switch (o->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
	case CONFIG_HOSTPORT: {
		const char *s = *(char *const *)f;
		fputc(' ', out);
		if (s)
			print_scalar(out, s);
		else
			fputc('~', out);
		break;
	}
	case CONFIG_UINT:
	case CONFIG_DURATION:
	case CONFIG_SIZE:
		format_number(o->type, *(const uint64_t *)f, buf, sizeof(buf));
		fprintf(out, " %s", buf);
		break;
	case CONFIG_BOOL:
		fputs(*(const bool *)f ? " true" : " false", out);
		break;
	case CONFIG_ENUM: {
		unsigned e = *(const unsigned *)f, n = 0;
		while (o->choices && o->choices[n])
			n++;
		fputc(' ', out);
		if (e < n)
			print_scalar(out, o->choices[e]);
		else
			fprintf(out, "%u # not a valid choice", e);
		break;
	}
	case CONFIG_STRLIST: {
		const struct config_strlist *l = f;
		if (l->n == 0)
			fputs(" []", out);
		for (size_t i = 0; i < l->n; i++) {
			fprintf(out, "\n%*s- ", (int)indent + 2, "");
			print_scalar(out, l->items[i]);
		}
		break;
	}
	}
	fputc('\n', out);
}

/* Prints the options under prefix (which ends in '.', or is empty) grouped by
 * their next name component, in the order each component first appears in
 * the table, so a section is printed once however the table interleaves it.
 * At the deepest mapping the loader accepts, the rest of a name is printed as
 * one dotted key. */
static void print_level(const struct config_option *table, const void *target, FILE *out,
                        const char *prefix, size_t plen, unsigned depth)
{
	unsigned indent = (depth - 1) * 2;

	for (const struct config_option *o = table; o->name; o++) {
		const char *rest;
		size_t clen;
		bool done = false;

		if (strncmp(o->name, prefix, plen) != 0)
			continue;
		rest = o->name + plen;
		clen = depth < CONFIG_MAX_DEPTH ? strcspn(rest, ".") : strlen(rest);
		for (const struct config_option *p = table; p < o && !done; p++)
			done = strncmp(p->name, prefix, plen) == 0 &&
			       strncmp(p->name + plen, rest, clen) == 0 &&
			       (p->name[plen + clen] == '.' || p->name[plen + clen] == '\0');
		if (done)
			continue;
		if (depth == 1 && o != table)
			fputc('\n', out);
		if (rest[clen] == '\0') {
			print_leaf(o, target, out, indent, rest, clen);
		} else {
			fprintf(out, "%*s%.*s:\n", (int)indent, "", (int)clen, rest);
			print_level(table, target, out, o->name, plen + clen + 1, depth + 1);
		}
	}
}

void config_print(const struct config_option *table, const void *target, FILE *out)
{
	if (!table || !target || !out)
		return;
	print_level(table, target, out, "", 0, 1);
}
