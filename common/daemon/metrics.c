#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

struct metric {
	struct metrics *reg;
	struct metric *next; /* registration order; a family's children by label value */
	enum metric_kind kind;
	bool is_family;
	char *name;              /* top level only */
	char *help;              /* top level only, may be NULL */
	char *label_name;        /* families only */
	char *label_value;       /* children only */
	struct metric *children; /* families only */

	double value; /* counters and gauges */

	/* Histograms. A family owns bounds; its children point at them. */
	double *bounds;
	size_t nbounds;
	uint64_t *buckets; /* nbounds + 1 counts, not cumulative; the last is +Inf */
	double sum;
	uint64_t count;
};

struct metrics {
	pthread_mutex_t lock;
	struct metric *head, **tail;
};

static const double metrics_default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,    2.5,   5,    10};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		errno = ENOMEM;
		return NULL;
	}
	m->tail = &m->head;
	return m;
}

static void metric_free(struct metric *mt)
{
	while (mt->children != NULL) {
		struct metric *c = mt->children;
		mt->children = c->next;
		metric_free(c);
	}
	free(mt->name);
	free(mt->help);
	free(mt->label_name);
	free(mt->label_value);
	if (mt->label_value == NULL) /* children share their family's bounds */
		free(mt->bounds);
	free(mt->buckets);
	free(mt);
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	while (m->head != NULL) {
		struct metric *mt = m->head;
		m->head = mt->next;
		metric_free(mt);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool metrics_valid_name(const char *s, bool colon)
{
	if (s == NULL || *s == '\0')
		return false;
	for (size_t i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
		          (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

/* Label values must be UTF-8 for the scrapers; checked here rather than
 * escaped so that two different byte strings never render alike. */
static bool metrics_valid_utf8(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		size_t len;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4;
		else
			return false;
		/* Overlong forms, surrogates and code points past U+10FFFF
		 * show in the second byte. */
		unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
		unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
		if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
			return false;
		for (size_t k = 2; k < len; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
		i += len;
	}
	return true;
}

static struct metric *metrics_find(struct metrics *m, const char *name)
{
	for (struct metric *mt = m->head; mt != NULL; mt = mt->next)
		if (strcmp(mt->name, name) == 0)
			return mt;
	return NULL;
}

static struct metric *metrics_register(struct metrics *m, const char *name, const char *help,
                                       enum metric_kind kind, const char *label_name,
                                       const double *bounds, size_t nbounds)
{
	if (m == NULL || !metrics_valid_name(name, true) ||
	    (kind != METRIC_COUNTER && kind != METRIC_GAUGE && kind != METRIC_HISTOGRAM))
		goto invalid;
	if (label_name != NULL &&
	    (!metrics_valid_name(label_name, false) || strncmp(label_name, "__", 2) == 0 ||
	     (kind == METRIC_HISTOGRAM && strcmp(label_name, "le") == 0)))
		goto invalid;
	if (kind == METRIC_HISTOGRAM) {
		if (bounds == NULL) {
			bounds = metrics_default_bounds;
			nbounds =
			    sizeof(metrics_default_bounds) / sizeof(metrics_default_bounds[0]);
		}
		if (nbounds == 0 || nbounds > METRICS_MAX_BOUNDS)
			goto invalid;
		for (size_t i = 0; i < nbounds; i++)
			if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
				goto invalid;
	}

	struct metric *mt = calloc(1, sizeof(*mt));
	if (mt == NULL)
		return NULL;
	mt->reg = m;
	mt->kind = kind;
	mt->is_family = label_name != NULL;
	mt->name = strdup(name);
	if (mt->name == NULL)
		goto nomem;
	if (help != NULL && *help != '\0' && (mt->help = strdup(help)) == NULL)
		goto nomem;
	if (label_name != NULL && (mt->label_name = strdup(label_name)) == NULL)
		goto nomem;
	if (kind == METRIC_HISTOGRAM) {
		mt->nbounds = nbounds;
		mt->bounds = malloc(nbounds * sizeof(double));
		if (mt->bounds == NULL)
			goto nomem;
		memcpy(mt->bounds, bounds, nbounds * sizeof(double));
		if (!mt->is_family && (mt->buckets = calloc(nbounds + 1, sizeof(uint64_t))) == NULL)
			goto nomem;
	}

	pthread_mutex_lock(&m->lock);
	if (metrics_find(m, name) != NULL) {
		pthread_mutex_unlock(&m->lock);
		metric_free(mt);
		errno = EEXIST;
		return NULL;
	}
	*m->tail = mt;
	m->tail = &mt->next;
	pthread_mutex_unlock(&m->lock);
	return mt;

nomem:
	metric_free(mt);
	errno = ENOMEM;
	return NULL;
invalid:
	errno = EINVAL;
	return NULL;
}

struct metric *metrics_counter(struct metrics *m, const char *name, const char *help)
{
	return metrics_register(m, name, help, METRIC_COUNTER, NULL, NULL, 0);
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help)
{
	return metrics_register(m, name, help, METRIC_GAUGE, NULL, NULL, 0);
}

struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const double *bounds, size_t nbounds)
{
	return metrics_register(m, name, help, METRIC_HISTOGRAM, NULL, bounds, nbounds);
}

struct metric *metrics_labeled(struct metrics *m, const char *name, const char *help,
                               enum metric_kind kind, const char *label_name)
{
	if (label_name == NULL) {
		errno = EINVAL;
		return NULL;
	}
	return metrics_register(m, name, help, kind, label_name, NULL, 0);
}

struct metric *metrics_labeled_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *label_name, const double *bounds,
                                         size_t nbounds)
{
	if (label_name == NULL) {
		errno = EINVAL;
		return NULL;
	}
	return metrics_register(m, name, help, METRIC_HISTOGRAM, label_name, bounds, nbounds);
}

struct metric *metric_child(struct metric *family, const char *label_value)
{
	if (family == NULL || !family->is_family || label_value == NULL) {
		errno = EINVAL;
		return NULL;
	}
	size_t len = strlen(label_value);
	if (len > METRICS_MAX_LABEL ||
	    !metrics_valid_utf8((const unsigned char *)label_value, len)) {
		errno = EINVAL;
		return NULL;
	}
	struct metrics *m = family->reg;
	pthread_mutex_lock(&m->lock);
	struct metric **pp = &family->children;
	int cmp = 1;
	while (*pp != NULL && (cmp = strcmp((*pp)->label_value, label_value)) < 0)
		pp = &(*pp)->next;
	if (*pp != NULL && cmp == 0) {
		struct metric *found = *pp;
		pthread_mutex_unlock(&m->lock);
		return found;
	}
	struct metric *c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto nomem;
	c->reg = m;
	c->kind = family->kind;
	c->label_value = strdup(label_value);
	if (c->label_value == NULL)
		goto nomem;
	if (c->kind == METRIC_HISTOGRAM) {
		c->bounds = family->bounds;
		c->nbounds = family->nbounds;
		c->buckets = calloc(c->nbounds + 1, sizeof(uint64_t));
		if (c->buckets == NULL)
			goto nomem;
	}
	c->next = *pp;
	*pp = c;
	pthread_mutex_unlock(&m->lock);
	return c;

nomem:
	pthread_mutex_unlock(&m->lock);
	if (c != NULL)
		metric_free(c);
	errno = ENOMEM;
	return NULL;
}

void metric_remove_child(struct metric *family, const char *label_value)
{
	if (family == NULL || !family->is_family || label_value == NULL)
		return;
	struct metrics *m = family->reg;
	pthread_mutex_lock(&m->lock);
	for (struct metric **pp = &family->children; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->label_value, label_value) == 0) {
			struct metric *c = *pp;
			*pp = c->next;
			metric_free(c);
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
}

void metric_add(struct metric *c, double v)
{
	if (c == NULL || c->is_family || c->kind == METRIC_HISTOGRAM)
		return;
	/* A counter that went down would read as a restart to rate(). */
	if (c->kind == METRIC_COUNTER && !(v >= 0))
		return;
	pthread_mutex_lock(&c->reg->lock);
	c->value += v;
	pthread_mutex_unlock(&c->reg->lock);
}

void metric_set(struct metric *g, double v)
{
	if (g == NULL || g->is_family || g->kind != METRIC_GAUGE)
		return;
	pthread_mutex_lock(&g->reg->lock);
	g->value = v;
	pthread_mutex_unlock(&g->reg->lock);
}

void metric_observe(struct metric *h, double v)
{
	if (h == NULL || h->is_family || h->kind != METRIC_HISTOGRAM || isnan(v))
		return;
	size_t i = 0;
	while (i < h->nbounds && v > h->bounds[i])
		i++;
	pthread_mutex_lock(&h->reg->lock);
	h->buckets[i]++;
	h->sum += v;
	h->count++;
	pthread_mutex_unlock(&h->reg->lock);
}

double metric_value(struct metric *mt)
{
	if (mt == NULL || mt->is_family)
		return NAN;
	pthread_mutex_lock(&mt->reg->lock);
	double v = mt->kind == METRIC_HISTOGRAM ? (double)mt->count : mt->value;
	pthread_mutex_unlock(&mt->reg->lock);
	return v;
}

/* Rendering. Each helper returns 0 or -1; failures are or-ed together and
 * reported once, since the only cause is an evbuffer that cannot grow. */

static int put(struct evbuffer *out, const char *s)
{
	return evbuffer_add(out, s, strlen(s));
}

/* Floats as Go's ParseFloat reads them: the shortest of %.15g..%.17g that
 * round-trips, and NaN / +Inf / -Inf. */
static void format_value(char *buf, size_t len, double v)
{
	if (isnan(v)) {
		snprintf(buf, len, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* Escapes '\\' and '\n', plus '"' when quoted (label values). */
static int put_escaped(struct evbuffer *out, const char *s, bool quoted)
{
	int r = 0;
	const char *run = s;
	for (; *s != '\0'; s++) {
		const char *rep = NULL;
		if (*s == '\\')
			rep = "\\\\";
		else if (*s == '\n')
			rep = "\\n";
		else if (*s == '"' && quoted)
			rep = "\\\"";
		if (rep != NULL) {
			r |= evbuffer_add(out, run, (size_t)(s - run));
			r |= put(out, rep);
			run = s + 1;
		}
	}
	r |= evbuffer_add(out, run, (size_t)(s - run));
	return r;
}

/* One sample line: name[suffix]{label="value",le="bound"} value */
static int put_sample(struct evbuffer *out, const struct metric *top, const char *suffix,
                      const struct metric *child, const char *le, double v)
{
	char num[40];
	int r = put(out, top->name);
	r |= put(out, suffix);
	if (child != NULL || le != NULL) {
		r |= put(out, "{");
		if (child != NULL) {
			r |= put(out, top->label_name);
			r |= put(out, "=\"");
			r |= put_escaped(out, child->label_value, true);
			r |= put(out, "\"");
		}
		if (le != NULL) {
			r |= put(out, child != NULL ? ",le=\"" : "le=\"");
			r |= put(out, le);
			r |= put(out, "\"");
		}
		r |= put(out, "}");
	}
	format_value(num, sizeof(num), v);
	r |= put(out, " ");
	r |= put(out, num);
	r |= put(out, "\n");
	return r;
}

static int put_values(struct evbuffer *out, const struct metric *top, const struct metric *mt,
                      const struct metric *child)
{
	if (mt->kind != METRIC_HISTOGRAM)
		return put_sample(out, top, "", child, NULL, mt->value);
	int r = 0;
	uint64_t cum = 0;
	char le[40];
	for (size_t i = 0; i <= mt->nbounds; i++) {
		cum += mt->buckets[i];
		if (i < mt->nbounds)
			format_value(le, sizeof(le), mt->bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		r |= put_sample(out, top, "_bucket", child, le, (double)cum);
	}
	r |= put_sample(out, top, "_sum", child, NULL, mt->sum);
	r |= put_sample(out, top, "_count", child, NULL, (double)mt->count);
	return r;
}

int metrics_render(struct metrics *m, struct evbuffer *out)
{
	static const char *const type_names[] = {
	    [METRIC_COUNTER] = "counter",
	    [METRIC_GAUGE] = "gauge",
	    [METRIC_HISTOGRAM] = "histogram",
	};
	int r = 0;
	pthread_mutex_lock(&m->lock);
	for (const struct metric *mt = m->head; mt != NULL; mt = mt->next) {
		if (mt->help != NULL) {
			r |= put(out, "# HELP ");
			r |= put(out, mt->name);
			r |= put(out, " ");
			r |= put_escaped(out, mt->help, false);
			r |= put(out, "\n");
		}
		r |= put(out, "# TYPE ");
		r |= put(out, mt->name);
		r |= put(out, " ");
		r |= put(out, type_names[mt->kind]);
		r |= put(out, "\n");
		if (!mt->is_family)
			r |= put_values(out, mt, mt, NULL);
		for (const struct metric *c = mt->children; c != NULL; c = c->next)
			r |= put_values(out, mt, c, c);
	}
	pthread_mutex_unlock(&m->lock);
	return r != 0 ? -ENOMEM : 0;
}

int metrics_handler(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	if (metrics_render(arg, body) < 0)
		return 500;
	*ret_content_type = METRICS_CONTENT_TYPE;
	return 200;
}
