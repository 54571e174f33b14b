/* The YAML reader of policies: libyaml events into struct policy, driven by
 * the schema in policy.c. It goes on after an error where it can (a bad
 * value, an unknown key: the node is skipped), so that one run reports
 * every mistake; a YAML syntax error ends it. */
#include "policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "paths.h"

#define ERRLEN 512

struct reader {
	const char *name;
	const unsigned char *buf;
	size_t len;
	yaml_parser_t yp;
	struct policy *p;
	struct policy_errors *errs;
	bool stop; /* a syntax error, out of memory, or too many errors */
	int status;
};

static struct policy_pos at(yaml_mark_t m)
{
	return (struct policy_pos){(unsigned)m.line + 1, (unsigned)m.column + 1};
}

static void report(struct reader *rd, struct policy_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct reader *rd, struct policy_pos pos, const char *fmt, ...)
{
	char msg[ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (policy_error_add(rd->errs, rd->name, pos, "%s", msg) == -ENOMEM) {
		rd->status = -ENOMEM;
		rd->stop = true;
	}
	if (rd->errs->truncated)
		rd->stop = true;
}

/* libyaml's reader errors come with a byte offset only. */
static struct policy_pos pos_at_offset(const struct reader *rd, size_t offset)
{
	struct policy_pos pos = {1, 1};

	for (size_t i = 0; i < offset && i < rd->len; i++) {
		if (rd->buf[i] == '\n') {
			pos.line++;
			pos.col = 1;
		} else if ((rd->buf[i] & 0xc0) != 0x80) {
			pos.col++;
		}
	}
	return pos;
}

static int next(struct reader *rd, yaml_event_t *ev)
{
	const yaml_parser_t *yp = &rd->yp;

	if (rd->stop)
		return -EINVAL;
	if (yaml_parser_parse(&rd->yp, ev))
		return 0;
	if (yp->error == YAML_MEMORY_ERROR) {
		rd->status = -ENOMEM;
	} else if (yp->error == YAML_READER_ERROR) {
		report(rd, pos_at_offset(rd, yp->problem_offset), "%s",
		       yp->problem ? yp->problem : "unreadable input");
	} else if (yp->context) {
		report(rd, at(yp->problem_mark), "%s (%s at line %zu)",
		       yp->problem ? yp->problem : "invalid YAML", yp->context,
		       yp->context_mark.line + 1);
	} else {
		report(rd, at(yp->problem_mark), "%s", yp->problem ? yp->problem : "invalid YAML");
	}
	rd->stop = true;
	return -EINVAL;
}

static const char *kind(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return "a scalar";
	case YAML_SEQUENCE_START_EVENT:
		return "a list";
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	case YAML_ALIAS_EVENT:
		return "an alias";
	default:
		return "nothing";
	}
}

static bool is_null(const yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;

	return ev->type == YAML_SCALAR_EVENT && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (ev->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0);
}

/* Consumes the rest of the node that ev (consumed) starts. */
static void skip(struct reader *rd, yaml_event_t *ev)
{
	size_t depth =
	    ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT;

	yaml_event_delete(ev);
	while (depth > 0) {
		yaml_event_t e;
		if (next(rd, &e) < 0)
			return;
		if (e.type == YAML_SEQUENCE_START_EVENT || e.type == YAML_MAPPING_START_EVENT)
			depth++;
		else if (e.type == YAML_SEQUENCE_END_EVENT || e.type == YAML_MAPPING_END_EVENT)
			depth--;
		yaml_event_delete(&e);
	}
}

static void value_scalar(struct reader *rd, const struct policy_field *f, size_t k,
                         struct policy_item *it, yaml_event_t *ev)
{
	char err[ERRLEN];
	int r;

	if (ev->type != YAML_SCALAR_EVENT || is_null(ev)) {
		report(rd, at(ev->start_mark), "'%s': expected a value, got %s", f->name,
		       is_null(ev) ? "nothing" : kind(ev));
		it->bad |= 1u << k;
		skip(rd, ev);
		return;
	}
	r = policy_value_parse(f, it, (const char *)ev->data.scalar.value, ev->data.scalar.length,
	                       at(ev->start_mark), err, sizeof(err));
	if (r == -ENOMEM) {
		rd->status = -ENOMEM;
		rd->stop = true;
	} else if (r < 0) {
		report(rd, at(ev->start_mark), "'%s': %s", f->name, err);
		it->bad |= 1u << k;
	}
	yaml_event_delete(ev);
}

static void value_list(struct reader *rd, const struct policy_field *f, size_t k,
                       struct policy_item *it, yaml_event_t *ev)
{
	yaml_mark_t start = ev->start_mark;
	size_t n = 0;

	if (ev->type != YAML_SEQUENCE_START_EVENT) {
		value_scalar(rd, f, k, it, ev); /* one item */
		return;
	}
	yaml_event_delete(ev);
	for (;;) {
		yaml_event_t e;
		if (next(rd, &e) < 0)
			return;
		if (e.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&e);
			break;
		}
		n++;
		value_scalar(rd, f, k, it, &e);
	}
	if (n == 0) {
		report(rd, at(start), "'%s': empty list", f->name);
		it->bad |= 1u << k;
	}
}

static void list_keys(const struct policy_section *s, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = '\0';
	for (const struct policy_field *f = s->fields; f->name && o < outlen; f++)
		o += (size_t)snprintf(out + o, outlen - o, "%s%s", o ? ", " : "", f->name);
}

/* One rule or pipeline: the mapping after its start event (ev). */
static void read_item(struct reader *rd, const struct policy_section *s, struct policy_item *it,
                      yaml_event_t *ev)
{
	it->pos = at(ev->start_mark);
	yaml_event_delete(ev);
	for (;;) {
		yaml_event_t key, val;
		const struct policy_field *f;
		char keys[256];
		int k;

		if (next(rd, &key) < 0)
			return;
		if (key.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&key);
			return;
		}
		if (key.type != YAML_SCALAR_EVENT) {
			report(rd, at(key.start_mark), "keys must be scalars, not %s", kind(&key));
			skip(rd, &key);
			if (next(rd, &val) == 0)
				skip(rd, &val);
			continue;
		}
		k = policy_field_index(s, (const char *)key.data.scalar.value);
		if (k < 0 ||
		    strlen((const char *)key.data.scalar.value) != key.data.scalar.length) {
			list_keys(s, keys, sizeof(keys));
			report(rd, at(key.start_mark), "unknown key '%.64s' in %s (expected %s)",
			       (const char *)key.data.scalar.value, s->what, keys);
		} else if (it->set & (1u << k)) {
			report(rd, at(key.start_mark), "duplicate key '%s' (first at line %u)",
			       s->fields[k].name, it->at[k].line);
			k = -1;
		}
		yaml_event_delete(&key);
		if (next(rd, &val) < 0)
			return;
		if (k < 0) {
			skip(rd, &val);
			continue;
		}
		f = &s->fields[k];
		it->set |= 1u << k;
		it->at[k] = at(val.start_mark);
		if (f->type == POLICY_T_GLOBS || f->type == POLICY_T_SITES)
			value_list(rd, f, (size_t)k, it, &val);
		else
			value_scalar(rd, f, (size_t)k, it, &val);
	}
}

/* A section's list: the node after its key (ev). */
static void read_section(struct reader *rd, const struct policy_section *s, yaml_event_t *ev)
{
	char **list = (char **)((char *)rd->p + s->list_offset);
	size_t *count = (size_t *)((char *)rd->p + s->count_offset);

	if (is_null(ev)) { /* "warmup:" with nothing under it */
		yaml_event_delete(ev);
		return;
	}
	if (ev->type != YAML_SEQUENCE_START_EVENT) {
		report(rd, at(ev->start_mark), "'%s': expected a list of %ss, got %s", s->key,
		       s->what, kind(ev));
		skip(rd, ev);
		return;
	}
	yaml_event_delete(ev);
	for (;;) {
		yaml_event_t e;
		char *grown;

		if (next(rd, &e) < 0)
			return;
		if (e.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&e);
			return;
		}
		if (e.type != YAML_MAPPING_START_EVENT) {
			report(rd, at(e.start_mark), "'%s': each %s is a mapping, not %s", s->key,
			       s->what, kind(&e));
			skip(rd, &e);
			continue;
		}
		if (*count >= POLICY_MAX_ITEMS) {
			report(rd, at(e.start_mark), "'%s': more than %d %ss", s->key,
			       POLICY_MAX_ITEMS, s->what);
			skip(rd, &e);
			continue;
		}
		grown = realloc(*list, (*count + 1) * s->item_size);
		if (!grown) {
			rd->status = -ENOMEM;
			rd->stop = true;
			yaml_event_delete(&e);
			return;
		}
		*list = grown;
		memset(grown + *count * s->item_size, 0, s->item_size);
		(*count)++;
		if (policy_item_defaults(s, grown + (*count - 1) * s->item_size) < 0) {
			rd->status = -ENOMEM;
			rd->stop = true;
			yaml_event_delete(&e);
			return;
		}
		read_item(rd, s, (struct policy_item *)(grown + (*count - 1) * s->item_size), &e);
	}
}

static void read_version(struct reader *rd, yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;

	if (ev->type != YAML_SCALAR_EVENT || strcmp(v, "1") != 0)
		report(rd, at(ev->start_mark), "'version': expected 1, got %s%.16s%s",
		       ev->type == YAML_SCALAR_EVENT ? "'" : "",
		       ev->type == YAML_SCALAR_EVENT ? v : kind(ev),
		       ev->type == YAML_SCALAR_EVENT ? "'" : "");
	else
		rd->p->version = 1;
	skip(rd, ev);
}

static void read_top(struct reader *rd, yaml_event_t *ev)
{
	yaml_mark_t start = ev->start_mark;
	bool seen[3] = {false, false, false};

	yaml_event_delete(ev);
	for (;;) {
		yaml_event_t key, val;
		const char *k;
		int which = -1;

		if (next(rd, &key) < 0)
			return;
		if (key.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&key);
			break;
		}
		k = key.type == YAML_SCALAR_EVENT ? (const char *)key.data.scalar.value : "";
		if (strcmp(k, "version") == 0)
			which = 0;
		else if (strcmp(k, "replication") == 0)
			which = 1;
		else if (strcmp(k, "warmup") == 0)
			which = 2;
		if (which < 0)
			report(rd, at(key.start_mark),
			       "unknown key '%.64s' (expected version, replication, warmup)", k);
		else if (seen[which])
			report(rd, at(key.start_mark), "duplicate key '%s'", k);
		if (which >= 0 && seen[which])
			which = -1;
		else if (which >= 0)
			seen[which] = true;
		skip(rd, &key);
		if (next(rd, &val) < 0)
			return;
		if (which == 0)
			read_version(rd, &val);
		else if (which > 0)
			read_section(rd, &policy_sections[which - 1], &val);
		else
			skip(rd, &val);
	}
	if (!seen[0])
		report(rd, at(start), "missing required key 'version'");
}

static void read_stream(struct reader *rd)
{
	yaml_event_t ev;

	if (next(rd, &ev) < 0) /* stream start */
		return;
	yaml_event_delete(&ev);
	if (next(rd, &ev) < 0)
		return;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		report(rd, (struct policy_pos){1, 1},
		       "empty policy: missing required key 'version'");
		return;
	}
	yaml_event_delete(&ev); /* document start */
	if (next(rd, &ev) < 0)
		return;
	if (ev.type == YAML_MAPPING_START_EVENT) {
		read_top(rd, &ev);
	} else {
		report(rd, at(ev.start_mark),
		       "expected a mapping (version, replication, warmup), got %s", kind(&ev));
		skip(rd, &ev);
	}
	if (next(rd, &ev) < 0) /* document end */
		return;
	yaml_event_delete(&ev);
	if (next(rd, &ev) < 0)
		return;
	if (ev.type != YAML_STREAM_END_EVENT)
		report(rd, at(ev.start_mark), "more than one YAML document");
	yaml_event_delete(&ev);
}

int policy_parse_buffer(const char *name, const void *buf, size_t len,
                        const struct policy_known *known, struct policy **ret,
                        struct policy_errors *errs)
{
	struct reader rd;
	size_t n0;

	if (!ret || !errs || (!buf && len))
		return -EINVAL;
	if (!name)
		name = "<policy>";
	n0 = errs->n;
	if (len > POLICY_MAX_FILE_BYTES) {
		policy_error_add(errs, name, (struct policy_pos){0, 0}, "larger than %d bytes",
		                 POLICY_MAX_FILE_BYTES);
		return -EFBIG;
	}
	memset(&rd, 0, sizeof(rd));
	rd.name = name;
	rd.buf = buf ? buf : (const unsigned char *)"";
	rd.len = len;
	rd.errs = errs;
	rd.p = calloc(1, sizeof(*rd.p));
	if (!rd.p || !(rd.p->file = strdup(name)) || !yaml_parser_initialize(&rd.yp)) {
		policy_free(rd.p);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&rd.yp, rd.buf, len);
	read_stream(&rd);
	yaml_parser_delete(&rd.yp);
	/* Even after errors: what did parse may have more to report. */
	if (rd.status == 0 && !rd.stop)
		policy_validate(rd.p, known, errs);
	if (rd.status == 0 && (errs->n > n0 || errs->truncated))
		rd.status = -EINVAL;
	if (rd.status < 0) {
		policy_free(rd.p);
		return rd.status;
	}
	*ret = rd.p;
	return 0;
}

int policy_parse_file(const char *path, const struct policy_known *known, struct policy **ret,
                      struct policy_errors *errs)
{
	char *buf = NULL, *msg = NULL;
	size_t len = 0;
	int r;

	if (!path || !ret || !errs)
		return -EINVAL;
	r = paths_read_file(path, POLICY_MAX_FILE_BYTES, &buf, &len, NULL, &msg);
	if (r < 0) {
		/* msg already starts with the path */
		size_t plen = strlen(path);
		const char *why = msg && strncmp(msg, path, plen) == 0 && msg[plen] == ':'
		                      ? msg + plen + 1 + (msg[plen + 1] == ' ')
		                  : msg ? msg
		                        : "cannot read";
		policy_error_add(errs, path, (struct policy_pos){0, 0}, "%s", why);
		free(msg);
		return r;
	}
	r = policy_parse_buffer(path, buf, len, known, ret, errs);
	free(buf);
	return r;
}
