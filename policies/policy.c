/* The policy schema, values, validation and matching. The YAML side is in
 * policy_parse.c. */
#include "policy.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "units.h"

#define ERRLEN 512
/* Work (pairs of glob positions) spent on conflicts before giving up on a
 * huge policy: well under a second. */
#define CONFLICT_BUDGET (200 * 1000 * 1000)

static const char *const data_choices[] = {"replicate", "cache", "none", NULL};
static const char *const verify_choices[] = {"md5", "sha256", NULL};
static const char *const trigger_choices[] = {"once", "schedule", "on-change", NULL};

#define R(n, t, f) .name = n, .type = t, .offset = offsetof(struct policy_replication, f)
static const struct policy_field replication_fields[] = {
    {R("name", POLICY_T_NAME, item.name), .required = true,
     .help = "unique among the rules: a-z, 0-9, '-' and '_'"},
    {R("paths", POLICY_T_GLOBS, paths), .required = true,
     .help = "absolute globs: '*' within a component, '**' any number of them"},
    {R("sites", POLICY_T_SITES, sites), .required = true, .help = "site names, or \"*\""},
    {R("data", POLICY_T_ENUM, data), .required = true, .choices = data_choices},
    {R("bucket", POLICY_T_ALIAS, bucket),
     .help = "with data: replicate, the alias of the site bucket in each site's config"},
    {R("bandwidth", POLICY_T_SIZE, bandwidth), .help = "bytes/s per site; 0 = unlimited"},
    {R("concurrency", POLICY_T_UINT, concurrency), .min = 1, .max = 256, .default_value = "4"},
    {R("verify", POLICY_T_ENUM, verify), .choices = verify_choices, .default_value = "md5"},
    {R("keep", POLICY_T_DURATION, keep_ms), .default_value = "1d",
     .help = "how long a replica outlives its file's overwrite or removal"},
    {.name = NULL},
};
#undef R

#define W(n, t, f) .name = n, .type = t, .offset = offsetof(struct policy_warmup, f)
static const struct policy_field warmup_fields[] = {
    {W("name", POLICY_T_NAME, item.name), .required = true},
    {W("paths", POLICY_T_GLOBS, paths), .help = "globs; exactly one of paths and list"},
    {W("list", POLICY_T_PATH, list), .help = "a file in the namespace listing paths"},
    {W("sites", POLICY_T_SITES, sites), .required = true},
    {W("trigger", POLICY_T_ENUM, trigger), .required = true, .choices = trigger_choices},
    {W("schedule", POLICY_T_SCHEDULE, schedule), .help = "cron, required iff trigger: schedule"},
    {W("evict_previous", POLICY_T_BOOL, evict_previous), .default_value = "false"},
    {W("concurrency", POLICY_T_UINT, concurrency), .min = 1, .max = 256, .default_value = "4"},
    {W("bandwidth", POLICY_T_SIZE, bandwidth)},
    {W("priority", POLICY_T_UINT, priority), .max = 100, .default_value = "50"},
    {W("deadline", POLICY_T_DURATION, deadline_ms), .help = "0 = none"},
    {.name = NULL},
};
#undef W

const struct policy_section policy_sections[2] = {
    {"replication", "replication rule", replication_fields, sizeof(struct policy_replication),
     offsetof(struct policy, replication), offsetof(struct policy, n_replication)},
    {"warmup", "warmup pipeline", warmup_fields, sizeof(struct policy_warmup),
     offsetof(struct policy, warmup), offsetof(struct policy, n_warmup)},
};

enum { SEC_REPLICATION, SEC_WARMUP };

/* ---- errors ---- */

int policy_error_add(struct policy_errors *errs, const char *file, struct policy_pos pos,
                     const char *fmt, ...)
{
	struct policy_error *v;
	char msg[ERRLEN];
	va_list ap;
	int n;

	if (!errs)
		return -EINVAL;
	if (errs->n >= POLICY_MAX_ERRORS) {
		errs->truncated = true;
		return -EINVAL;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	v = realloc(errs->v, (errs->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	errs->v = v;
	v += errs->n;
	v->pos = pos;
	if (pos.line)
		n = asprintf(&v->text, "%s:%u:%u: %s", file, pos.line, pos.col, msg);
	else
		n = asprintf(&v->text, "%s: %s", file, msg);
	if (n < 0)
		return -ENOMEM;
	errs->n++;
	return -EINVAL;
}

void policy_errors_clear(struct policy_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->v[i].text);
	free(errs->v);
	memset(errs, 0, sizeof(*errs));
}

void policy_errors_print(const struct policy_errors *errs, FILE *out)
{
	for (size_t i = 0; i < errs->n; i++)
		fprintf(out, "%s\n", errs->v[i].text);
	if (errs->truncated)
		fprintf(out, "(more than %d errors; the rest are not shown)\n", POLICY_MAX_ERRORS);
}

/* ---- names ---- */

static const char *choice_name(const char *const *choices, unsigned n, unsigned v)
{
	return v < n ? choices[v] : "?";
}

const char *policy_data_name(unsigned data)
{
	return choice_name(data_choices, 3, data);
}

const char *policy_verify_name(unsigned verify)
{
	return choice_name(verify_choices, 2, verify);
}

const char *policy_trigger_name(unsigned trigger)
{
	return choice_name(trigger_choices, 3, trigger);
}

/* ---- values ---- */

int policy_field_index(const struct policy_section *s, const char *name)
{
	for (int k = 0; s->fields[k].name; k++)
		if (strcmp(s->fields[k].name, name) == 0)
			return k;
	return -1;
}

static void *field_ptr(const struct policy_field *f, void *item)
{
	return (char *)item + f->offset;
}

static bool name_ok(const char *s, size_t len, bool alias)
{
	if (len == 0 || len > POLICY_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
		if (alias)
			ok = ok || (c >= 'A' && c <= 'Z') || c == '.';
		if (!ok)
			return false;
	}
	return true;
}

/* A value echoed in a message: cut short, control bytes escaped. */
static void show(char *out, size_t outlen, const char *s, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 8 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == 64) {
			o += (size_t)snprintf(out + o, outlen - o, "...");
			break;
		}
		if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

static int list_add(struct policy_list *l, const char *s, size_t len, struct policy_pos pos,
                    struct glob *g)
{
	char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
	struct policy_pos *p;
	char *copy;

	if (!items)
		return -ENOMEM;
	l->items = items;
	p = realloc(l->pos, (l->n + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	l->pos = p;
	if (g) {
		struct glob **globs = realloc(l->globs, (l->n + 1) * sizeof(*globs));
		if (!globs)
			return -ENOMEM;
		l->globs = globs;
	}
	copy = strndup(s, len);
	if (!copy)
		return -ENOMEM;
	l->items[l->n] = copy;
	l->pos[l->n] = pos;
	if (g)
		l->globs[l->n] = g;
	l->n++;
	return 0;
}

static void list_clear(struct policy_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i]);
		if (l->globs)
			glob_free(l->globs[i]);
	}
	free(l->items);
	free(l->pos);
	free(l->globs);
	memset(l, 0, sizeof(*l));
}

static bool list_has(const struct policy_list *l, const char *s, size_t len)
{
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->items[i]) == len && memcmp(l->items[i], s, len) == 0)
			return true;
	return false;
}

static int parse_number(const struct policy_field *f, const char *text, const char *shown,
                        uint64_t *ret, char *err, size_t errlen)
{
	char vs[32], bs[32];
	uint64_t v;
	int r;

	if (f->type == POLICY_T_SIZE) {
		r = units_parse_size(text, &v);
		if (r < 0) {
			snprintf(err, errlen, "expected a size like 512, 100MB or 1GiB, got '%s'",
			         shown);
			return -EINVAL;
		}
		units_format_size(v, vs, sizeof(vs));
	} else if (f->type == POLICY_T_DURATION) {
		r = units_parse_duration(text, &v);
		if (r < 0) {
			snprintf(err, errlen,
			         "expected a duration like 30s, 5m, 2h or 7d, got '%s'", shown);
			return -EINVAL;
		}
		units_format_duration(v, vs, sizeof(vs));
	} else {
		const char *p = text;
		r = units_parse_digits(&p, &v);
		if (r < 0 || *p) {
			snprintf(err, errlen, "expected a non-negative integer, got '%s'", shown);
			return -EINVAL;
		}
		snprintf(vs, sizeof(vs), "%" PRIu64, v);
	}
	if (v < f->min) {
		snprintf(bs, sizeof(bs), "%" PRIu64, f->min);
		snprintf(err, errlen, "%s is below the minimum %s", vs, bs);
		return -EINVAL;
	}
	if (f->max && v > f->max) {
		snprintf(bs, sizeof(bs), "%" PRIu64, f->max);
		snprintf(err, errlen, "%s is above the maximum %s", vs, bs);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

int policy_value_parse(const struct policy_field *f, void *item, const char *text, size_t len,
                       struct policy_pos pos, char *err, size_t errlen)
{
	char shown[300], gerr[256];
	void *p = field_ptr(f, item);
	struct glob *g = NULL;
	int r;

	show(shown, sizeof(shown), text, len);
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "value contains a NUL byte");
		return -EINVAL;
	}
	switch (f->type) {
	case POLICY_T_NAME:
	case POLICY_T_ALIAS: {
		char **s = p;
		if (!name_ok(text, len, f->type == POLICY_T_ALIAS)) {
			snprintf(err, errlen, "'%s' is not a valid %s (1..%d of %s)", shown,
			         f->type == POLICY_T_NAME ? "name" : "bucket alias",
			         POLICY_MAX_NAME,
			         f->type == POLICY_T_NAME ? "a-z, 0-9, '-', '_'"
			                                  : "A-Z, a-z, 0-9, '-', '_', '.'");
			return -EINVAL;
		}
		free(*s);
		*s = strndup(text, len);
		return *s ? 0 : -ENOMEM;
	}
	case POLICY_T_PATH: {
		char **s = p;
		r = glob_compile(text, len, &g, gerr, sizeof(gerr));
		if (r == -ENOMEM)
			return r;
		if (r == 0 && memchr(text, '*', len))
			snprintf(gerr, sizeof(gerr), "a path, not a glob");
		if (r < 0 || memchr(text, '*', len)) {
			glob_free(g);
			snprintf(err, errlen, "'%s': %s", shown, gerr);
			return -EINVAL;
		}
		glob_free(g);
		free(*s);
		*s = strndup(text, len);
		return *s ? 0 : -ENOMEM;
	}
	case POLICY_T_GLOBS: {
		struct policy_list *l = p;
		if (l->n >= POLICY_MAX_GLOBS) {
			snprintf(err, errlen, "more than %d globs", POLICY_MAX_GLOBS);
			return -EINVAL;
		}
		r = glob_compile(text, len, &g, gerr, sizeof(gerr));
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			snprintf(err, errlen, "bad glob '%s': %s", shown, gerr);
			return -EINVAL;
		}
		if (list_has(l, text, len)) {
			glob_free(g);
			snprintf(err, errlen, "'%s' is listed twice", shown);
			return -EINVAL;
		}
		r = list_add(l, text, len, pos, g);
		if (r < 0)
			glob_free(g);
		return r;
	}
	case POLICY_T_SITES: {
		struct policy_list *l = p;
		if (l->n >= POLICY_MAX_SITES) {
			snprintf(err, errlen, "more than %d sites", POLICY_MAX_SITES);
			return -EINVAL;
		}
		if (!(len == 1 && text[0] == '*') && !name_ok(text, len, true)) {
			snprintf(err, errlen,
			         "'%s' is not a site name (1..%d of A-Z, a-z, 0-9, '-', '_', '.') "
			         "or \"*\"",
			         shown, POLICY_MAX_NAME);
			return -EINVAL;
		}
		if (list_has(l, text, len)) {
			snprintf(err, errlen, "site '%s' is listed twice", shown);
			return -EINVAL;
		}
		return list_add(l, text, len, pos, NULL);
	}
	case POLICY_T_ENUM: {
		size_t o = (size_t)snprintf(err, errlen, "expected one of ");
		for (unsigned k = 0; f->choices[k]; k++) {
			if (strlen(f->choices[k]) == len && memcmp(f->choices[k], text, len) == 0) {
				*(unsigned *)p = k;
				return 0;
			}
			if (o < errlen)
				o += (size_t)snprintf(err + o, errlen - o, "%s%s", k ? ", " : "",
				                      f->choices[k]);
		}
		if (o < errlen)
			snprintf(err + o, errlen - o, "; got '%s'", shown);
		return -EINVAL;
	}
	case POLICY_T_UINT:
	case POLICY_T_SIZE:
	case POLICY_T_DURATION:
		return parse_number(f, text, shown, p, err, errlen);
	case POLICY_T_BOOL: {
		static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false",
		                                                                       "no", "off"};
		for (unsigned k = 0; k < 3; k++) {
			if (strcasecmp(text, yes[k]) == 0 || strcasecmp(text, no[k]) == 0) {
				*(bool *)p = strcasecmp(text, yes[k]) == 0;
				return 0;
			}
		}
		snprintf(err, errlen, "expected true or false, got '%s'", shown);
		return -EINVAL;
	}
	case POLICY_T_SCHEDULE: {
		struct policy_schedule *s = p;
		struct cron c;
		if (cron_parse(text, len, &c, gerr, sizeof(gerr)) < 0) {
			snprintf(err, errlen, "bad schedule '%s': %s", shown, gerr);
			return -EINVAL;
		}
		free(s->text);
		s->text = strndup(text, len);
		if (!s->text)
			return -ENOMEM;
		s->cron = c;
		return 0;
	}
	}
	return -EINVAL;
}

int policy_item_defaults(const struct policy_section *s, void *item)
{
	char err[ERRLEN];

	for (const struct policy_field *f = s->fields; f->name; f++) {
		struct policy_pos none = {0, 0};
		int r;
		if (!f->default_value)
			continue;
		r = policy_value_parse(f, item, f->default_value, strlen(f->default_value), none,
		                       err, sizeof(err));
		if (r < 0)
			return r == -ENOMEM ? r : -EINVAL; /* a broken table */
	}
	return 0;
}

void policy_item_free(const struct policy_section *s, void *item)
{
	for (const struct policy_field *f = s->fields; f->name; f++) {
		void *p = field_ptr(f, item);
		switch (f->type) {
		case POLICY_T_NAME:
		case POLICY_T_ALIAS:
		case POLICY_T_PATH:
			free(*(char **)p);
			*(char **)p = NULL;
			break;
		case POLICY_T_GLOBS:
		case POLICY_T_SITES:
			list_clear(p);
			break;
		case POLICY_T_SCHEDULE:
			free(((struct policy_schedule *)p)->text);
			((struct policy_schedule *)p)->text = NULL;
			break;
		default:
			break;
		}
	}
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_replication; i++)
		policy_item_free(&policy_sections[SEC_REPLICATION], &p->replication[i]);
	for (size_t i = 0; i < p->n_warmup; i++)
		policy_item_free(&policy_sections[SEC_WARMUP], &p->warmup[i]);
	free(p->replication);
	free(p->warmup);
	free(p->file);
	free(p);
}

/* ---- validation ---- */

static bool is_set(const struct policy_item *it, const struct policy_section *s, const char *key)
{
	int k = policy_field_index(s, key);
	return k >= 0 && (it->set & ~it->bad & (1u << k));
}

/* Given, even if its value was refused: for checks of which keys go
 * together, so a bad value is not also reported as missing. */
static bool given(const struct policy_item *it, const struct policy_section *s, const char *key)
{
	int k = policy_field_index(s, key);
	return k >= 0 && (it->set & (1u << k));
}

static struct policy_pos pos_of(const struct policy_item *it, const struct policy_section *s,
                                const char *key)
{
	int k = policy_field_index(s, key);
	return k >= 0 && (it->set & (1u << k)) ? it->at[k] : it->pos;
}

/* "replication rule 'x'" or "replication rule #3" when it has no name. */
static void item_label(const struct policy_section *s, const struct policy_item *it, size_t idx,
                       char *out, size_t outlen)
{
	if (it->name)
		snprintf(out, outlen, "%s '%s'", s->what, it->name);
	else
		snprintf(out, outlen, "%s #%zu", s->what, idx + 1);
}

static bool known_has(const char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] && strcmp(list[i], s) == 0)
			return true;
	return false;
}

static void check_sites(const struct policy *p, const struct policy_list *sites,
                        const struct policy_known *known, struct policy_errors *errs)
{
	for (size_t i = 0; i < sites->n; i++) {
		if (strcmp(sites->items[i], "*") == 0) {
			if (sites->n > 1)
				policy_error_add(errs, p->file, sites->pos[i],
				                 "'sites': \"*\" must be the only site");
		} else if (known && known->sites &&
		           !known_has(known->sites, known->n_sites, sites->items[i])) {
			policy_error_add(errs, p->file, sites->pos[i], "'sites': unknown site '%s'",
			                 sites->items[i]);
		}
	}
}

static void check_item(const struct policy *p, const struct policy_section *s, size_t idx,
                       const struct policy_known *known, struct policy_errors *errs)
{
	struct policy_item *it =
	    (struct policy_item *)(*(char **)((const char *)p + s->list_offset) +
	                           idx * s->item_size);
	char label[128];

	item_label(s, it, idx, label, sizeof(label));
	for (int k = 0; s->fields[k].name; k++)
		if (s->fields[k].required && !(it->set & (1u << k)))
			policy_error_add(errs, p->file, it->pos, "%s: missing required key '%s'",
			                 label, s->fields[k].name);
	if (s == &policy_sections[SEC_REPLICATION]) {
		struct policy_replication *r = (struct policy_replication *)it;
		check_sites(p, &r->sites, known, errs);
		if (is_set(it, s, "data") && r->data == POLICY_DATA_REPLICATE &&
		    !given(it, s, "bucket"))
			policy_error_add(errs, p->file, pos_of(it, s, "data"),
			                 "%s: 'bucket' is required with data: replicate", label);
		if (r->bucket && is_set(it, s, "data") && r->data != POLICY_DATA_REPLICATE)
			policy_error_add(errs, p->file, pos_of(it, s, "bucket"),
			                 "%s: 'bucket' applies only to data: replicate, not %s",
			                 label, policy_data_name(r->data));
		if (r->bucket && known && known->buckets &&
		    !known_has(known->buckets, known->n_buckets, r->bucket))
			policy_error_add(errs, p->file, pos_of(it, s, "bucket"),
			                 "%s: unknown bucket alias '%s'", label, r->bucket);
	} else {
		struct policy_warmup *w = (struct policy_warmup *)it;
		bool paths = given(it, s, "paths"), list = given(it, s, "list");
		check_sites(p, &w->sites, known, errs);
		if (paths && list)
			policy_error_add(errs, p->file, pos_of(it, s, "list"),
			                 "%s: give either 'paths' or 'list', not both", label);
		else if (!paths && !list)
			policy_error_add(errs, p->file, it->pos, "%s: missing 'paths' or 'list'",
			                 label);
		if (is_set(it, s, "trigger") && w->trigger == POLICY_TRIGGER_SCHEDULE &&
		    !given(it, s, "schedule"))
			policy_error_add(errs, p->file, pos_of(it, s, "trigger"),
			                 "%s: 'schedule' is required with trigger: schedule",
			                 label);
		if (is_set(it, s, "schedule") && is_set(it, s, "trigger") &&
		    w->trigger != POLICY_TRIGGER_SCHEDULE)
			policy_error_add(errs, p->file, pos_of(it, s, "schedule"),
			                 "%s: 'schedule' applies only to trigger: schedule, not %s",
			                 label, policy_trigger_name(w->trigger));
	}
	for (size_t j = 0; j < idx && it->name; j++) {
		struct policy_item *o =
		    (struct policy_item *)(*(char **)((const char *)p + s->list_offset) +
		                           j * s->item_size);
		if (o->name && strcmp(o->name, it->name) == 0) {
			policy_error_add(errs, p->file, pos_of(it, s, "name"),
			                 "duplicate %s name '%s' (first at line %u)", s->what,
			                 it->name, pos_of(o, s, "name").line);
			break;
		}
	}
}

/* A site both lists name, for a message: "site 'eu'" or "every site". */
static bool sites_common(const struct policy_list *a, const struct policy_list *b, char *out,
                         size_t outlen)
{
	bool a_all = a->n == 1 && strcmp(a->items[0], "*") == 0;
	bool b_all = b->n == 1 && strcmp(b->items[0], "*") == 0;

	if (a_all && b_all) {
		snprintf(out, outlen, "every site");
		return true;
	}
	if (a_all || b_all) {
		const struct policy_list *l = a_all ? b : a;
		if (l->n == 0)
			return false;
		snprintf(out, outlen, "site '%s'", l->items[0]);
		return true;
	}
	for (size_t i = 0; i < a->n; i++) {
		if (list_has(b, a->items[i], strlen(a->items[i]))) {
			snprintf(out, outlen, "site '%s'", a->items[i]);
			return true;
		}
	}
	return false;
}

/* Rules whose data modes differ must not both match a path at a common
 * site: which one wins would depend on their order in the file. */
static void check_conflicts(const struct policy *p, struct policy_errors *errs)
{
	const struct policy_section *sec = &policy_sections[SEC_REPLICATION];
	uint64_t budget = CONFLICT_BUDGET;

	for (size_t i = 0; i < p->n_replication; i++) {
		const struct policy_replication *a = &p->replication[i];
		for (size_t j = i + 1; j < p->n_replication; j++) {
			const struct policy_replication *b = &p->replication[j];
			char site[POLICY_MAX_NAME + 16], witness[512];
			bool found = false;

			if (a->data == b->data || a->item.bad || b->item.bad || !a->item.name ||
			    !b->item.name || !is_set(&a->item, sec, "data") ||
			    !is_set(&b->item, sec, "data") ||
			    !sites_common(&a->sites, &b->sites, site, sizeof(site)))
				continue;
			for (size_t x = 0; x < a->paths.n && !found; x++) {
				for (size_t y = 0; y < b->paths.n && !found; y++) {
					uint64_t cost = (glob_components(a->paths.globs[x]) + 1) *
					                (glob_components(b->paths.globs[y]) + 1);
					if (cost > budget) {
						policy_error_add(
						    errs, p->file, (struct policy_pos){0, 0},
						    "too many rules and paths to check "
						    "for conflicts");
						return;
					}
					budget -= cost;
					if (!glob_overlap(a->paths.globs[x], b->paths.globs[y],
					                  witness, sizeof(witness)))
						continue;
					found = true;
					policy_error_add(
					    errs, p->file, a->paths.pos[x],
					    "rule '%s' and rule '%s' (%s:%u:%u) both match %s with "
					    "data %s vs %s for %s",
					    a->item.name, b->item.name, p->file,
					    b->paths.pos[y].line, b->paths.pos[y].col, witness,
					    policy_data_name(a->data), policy_data_name(b->data),
					    site);
				}
			}
		}
	}
}

void policy_validate(struct policy *p, const struct policy_known *known, struct policy_errors *errs)
{
	for (size_t i = 0; i < p->n_replication; i++)
		check_item(p, &policy_sections[SEC_REPLICATION], i, known, errs);
	for (size_t i = 0; i < p->n_warmup; i++)
		check_item(p, &policy_sections[SEC_WARMUP], i, known, errs);
	check_conflicts(p, errs);
}

/* ---- use ---- */

bool policy_sites_include(const struct policy_list *sites, const char *site)
{
	for (size_t i = 0; i < sites->n; i++)
		if (strcmp(sites->items[i], "*") == 0 || strcmp(sites->items[i], site) == 0)
			return true;
	return false;
}

const struct policy_replication *policy_match(const struct policy *p, const char *path,
                                              const char *site)
{
	if (!p || !path || !site)
		return NULL;
	for (size_t i = 0; i < p->n_replication; i++) {
		const struct policy_replication *r = &p->replication[i];
		if (!policy_sites_include(&r->sites, site))
			continue;
		for (size_t k = 0; k < r->paths.n; k++)
			if (glob_match(r->paths.globs[k], path))
				return r;
	}
	return NULL;
}

time_t policy_cron_next(const struct cron *c, time_t after)
{
	return cron_next(c, after);
}

/* ---- JSON ---- */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* An item's fields, in schema order, as members of a JSON object. */
static void json_item(FILE *out, const struct policy_section *s, const void *item)
{
	bool first = true;

	fputc('{', out);
	for (const struct policy_field *f = s->fields; f->name; f++) {
		const void *v = (const char *)item + f->offset;
		if (!first)
			fputs(", ", out);
		first = false;
		json_string(out, f->name);
		fputs(": ", out);
		switch (f->type) {
		case POLICY_T_NAME:
		case POLICY_T_ALIAS:
		case POLICY_T_PATH:
			if (*(char *const *)v)
				json_string(out, *(char *const *)v);
			else
				fputs("null", out);
			break;
		case POLICY_T_GLOBS:
		case POLICY_T_SITES: {
			const struct policy_list *l = v;
			fputc('[', out);
			for (size_t i = 0; i < l->n; i++) {
				if (i)
					fputs(", ", out);
				json_string(out, l->items[i]);
			}
			fputc(']', out);
			break;
		}
		case POLICY_T_ENUM:
			json_string(out, f->choices[*(const unsigned *)v]);
			break;
		case POLICY_T_UINT:
		case POLICY_T_SIZE:
		case POLICY_T_DURATION:
			/* sizes in bytes, durations in milliseconds */
			fprintf(out, "%" PRIu64, *(const uint64_t *)v);
			break;
		case POLICY_T_BOOL:
			fputs(*(const bool *)v ? "true" : "false", out);
			break;
		case POLICY_T_SCHEDULE: {
			const struct policy_schedule *sc = v;
			if (sc->text)
				json_string(out, sc->text);
			else
				fputs("null", out);
			break;
		}
		}
	}
	fputc('}', out);
}

int policy_to_json(const struct policy *p, FILE *out)
{
	fprintf(out, "{\"version\": %" PRIu64, p->version);
	for (size_t k = 0; k < 2; k++) {
		const struct policy_section *s = &policy_sections[k];
		const char *list = *(char *const *)((const char *)p + s->list_offset);
		size_t n = *(const size_t *)((const char *)p + s->count_offset);
		fprintf(out, ", \"%s\": [", s->key);
		for (size_t i = 0; i < n; i++) {
			if (i)
				fputs(", ", out);
			json_item(out, s, list + i * s->item_size);
		}
		fputc(']', out);
	}
	fputs("}\n", out);
	return ferror(out) ? -EIO : 0;
}

int policy_paths_from_text(struct policy_list *l, const char *text, size_t len, char *err,
                           size_t errlen)
{
	if (len > POLICY_MAX_LIST_BYTES) {
		snprintf(err, errlen, "the list is %zu bytes, more than %u", len,
		         POLICY_MAX_LIST_BYTES);
		return -EFBIG;
	}
	struct policy_list out = {0};
	unsigned line = 0;
	int r = 0;
	for (size_t at = 0; at < len && r == 0;) {
		const char *s = text + at;
		const char *nl = memchr(s, '\n', len - at);
		size_t n = nl != NULL ? (size_t)(nl - s) : len - at;
		at += n + (nl != NULL);
		line++;
		while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
			s++;
			n--;
		}
		while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
			n--;
		if (n == 0 || s[0] == '#')
			continue;
		if (memchr(s, '\0', n) != NULL) {
			snprintf(err, errlen, "%u: a NUL byte (not a text file)", line);
			r = -EINVAL;
		} else if (s[0] != '/') {
			snprintf(err, errlen, "%u: '%.*s' is not an absolute path", line,
			         n > 200 ? 200 : (int)n, s);
			r = -EINVAL;
		} else if (out.n >= POLICY_MAX_LIST_PATHS) {
			snprintf(err, errlen, "%u: more than %d paths", line,
			         POLICY_MAX_LIST_PATHS);
			r = -EINVAL;
		} else {
			struct glob *g = NULL;
			char gerr[200];
			r = glob_compile(s, n, &g, gerr, sizeof(gerr));
			if (r == -ENOMEM)
				snprintf(err, errlen, "out of memory");
			else if (r < 0)
				snprintf(err, errlen, "%u: bad glob '%.*s': %s", line,
				         n > 200 ? 200 : (int)n, s, gerr);
			else if ((r = list_add(&out, s, n, (struct policy_pos){line, 1}, g)) < 0) {
				glob_free(g);
				snprintf(err, errlen, "out of memory");
			}
		}
	}
	if (r < 0) {
		list_clear(&out);
		return r;
	}
	list_clear(l);
	*l = out;
	return 0;
}
