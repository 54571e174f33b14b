#include "glob.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum comp_kind {
	COMP_LITERAL,
	COMP_STAR, /* has at least one '*' */
	COMP_DSTAR,
};

struct comp {
	enum comp_kind kind;
	const char *s; /* into glob->pattern, not NUL-terminated */
	size_t len;
};

struct glob {
	char *pattern;
	size_t n;
	struct comp c[];
};

/* A path split into components: at most PATH_MAX bytes, so at most half as
 * many components. */
#define PATH_COMPONENTS (PATH_MAX / 2)

struct span {
	const char *s;
	size_t len;
};

int glob_compile(const char *pattern, size_t len, struct glob **ret, char *err, size_t errlen)
{
	size_t n = 0;
	struct glob *g;

	if (len == 0 || pattern[0] != '/') {
		snprintf(err, errlen, "not an absolute path (must start with '/')");
		return -EINVAL;
	}
	if (len > GLOB_MAX_LEN) {
		snprintf(err, errlen, "longer than %d bytes", GLOB_MAX_LEN);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)pattern[i];
		if (c < 0x20 || c == 0x7f) {
			snprintf(err, errlen, "control byte 0x%02x at offset %zu", c, i);
			return -EINVAL;
		}
		if (c == '/')
			n++;
	}
	if (len == 1)
		n = 0;
	if (n > GLOB_MAX_COMPONENTS) {
		snprintf(err, errlen, "more than %d components", GLOB_MAX_COMPONENTS);
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g) + n * sizeof(g->c[0]));
	if (!g || !(g->pattern = strndup(pattern, len))) {
		free(g);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->n = n;
	for (size_t k = 0, i = 1; k < n; k++) {
		struct comp *c = &g->c[k];
		const char *slash;
		size_t stars = 0;

		c->s = g->pattern + i;
		slash = memchr(c->s, '/', len - i);
		c->len = slash ? (size_t)(slash - c->s) : len - i;
		i += c->len + 1;
		if (c->len == 0) {
			snprintf(err, errlen, "empty component at offset %zu",
			         (size_t)(c->s - g->pattern));
			goto fail;
		}
		if ((c->len == 1 && c->s[0] == '.') ||
		    (c->len == 2 && memcmp(c->s, "..", 2) == 0)) {
			snprintf(err, errlen, "'%.*s' component", (int)c->len, c->s);
			goto fail;
		}
		for (size_t j = 0; j < c->len; j++)
			stars += c->s[j] == '*';
		if (c->len == 2 && stars == 2) {
			c->kind = COMP_DSTAR;
		} else if (c->len > 2 && memmem(c->s, c->len, "**", 2)) {
			snprintf(err, errlen, "'**' must be a whole component, not part of '%.*s'",
			         (int)c->len, c->s);
			goto fail;
		} else {
			c->kind = stars ? COMP_STAR : COMP_LITERAL;
		}
	}
	*ret = g;
	return 0;
fail:
	glob_free(g);
	return -EINVAL;
}

void glob_free(struct glob *g)
{
	if (!g)
		return;
	free(g->pattern);
	free(g);
}

const char *glob_pattern(const struct glob *g)
{
	return g->pattern;
}

size_t glob_components(const struct glob *g)
{
	return g->n;
}

/* The greedy wildcard walk, used at both levels: pattern elements 0..n
 * against subject elements 0..m, where a star element (is_star) takes any
 * run of subject elements and the others must match one (eq). On a mismatch
 * the last star takes one element more. O(n * m) at worst. */
struct walk {
	size_t n, m;
	bool (*is_star)(const struct walk *w, size_t i);
	bool (*eq)(const struct walk *w, size_t i, size_t j);
	const void *pat, *subj;
};

static bool walk_run(const struct walk *w)
{
	size_t i = 0, j = 0, star_i = SIZE_MAX, star_j = 0;

	while (j < w->m) {
		if (i < w->n && w->is_star(w, i)) {
			star_i = i++;
			star_j = j;
		} else if (i < w->n && w->eq(w, i, j)) {
			i++;
			j++;
		} else if (star_i != SIZE_MAX) {
			i = star_i + 1;
			j = ++star_j;
		} else {
			return false;
		}
	}
	while (i < w->n && w->is_star(w, i))
		i++;
	return i == w->n;
}

static bool byte_is_star(const struct walk *w, size_t i)
{
	return ((const char *)w->pat)[i] == '*';
}

static bool byte_eq(const struct walk *w, size_t i, size_t j)
{
	return ((const char *)w->pat)[i] == ((const char *)w->subj)[j];
}

/* Whether s matches the component pattern p, where '*' is any run of
 * bytes. */
static bool comp_match(const struct comp *p, const char *s, size_t slen)
{
	struct walk w = {p->len, slen, byte_is_star, byte_eq, p->s, s};

	if (p->kind == COMP_DSTAR)
		return true;
	if (p->kind == COMP_LITERAL)
		return p->len == slen && memcmp(p->s, s, slen) == 0;
	return walk_run(&w);
}

static bool comp_is_dstar(const struct walk *w, size_t i)
{
	return ((const struct comp *)w->pat)[i].kind == COMP_DSTAR;
}

static bool comp_eq(const struct walk *w, size_t i, size_t j)
{
	const struct span *part = (const struct span *)w->subj + j;
	return comp_match((const struct comp *)w->pat + i, part->s, part->len);
}

/* One level up: components against path components, "**" standing for any
 * run of them. */
bool glob_match(const struct glob *g, const char *path)
{
	static _Thread_local struct span parts[PATH_COMPONENTS];
	struct walk w = {0, 0, comp_is_dstar, comp_eq, NULL, parts};
	size_t plen;

	if (!g || !path || path[0] != '/')
		return false;
	plen = strnlen(path, PATH_MAX);
	if (plen >= PATH_MAX)
		return false;
	for (size_t k = 0; k < plen;) {
		size_t e;
		while (k < plen && path[k] == '/')
			k++;
		if (k == plen)
			break;
		e = k;
		while (e < plen && path[e] != '/')
			e++;
		parts[w.m].s = path + k;
		parts[w.m++].len = e - k;
		k = e;
	}
	w.n = g->n;
	w.pat = g->c;
	return walk_run(&w);
}

/* The literal text before the first '*' (or all of it) and after the last. */
static size_t prefix_len(const struct comp *c)
{
	const char *star = memchr(c->s, '*', c->len);
	return star ? (size_t)(star - c->s) : c->len;
}

static size_t suffix_len(const struct comp *c)
{
	size_t n = 0;
	while (n < c->len && c->s[c->len - 1 - n] != '*')
		n++;
	return n;
}

static bool comp_overlap(const struct comp *a, const struct comp *b)
{
	size_t pa, pb, sa, sb, p, s;

	if (a->kind == COMP_LITERAL)
		return comp_match(b, a->s, a->len);
	if (b->kind == COMP_LITERAL)
		return comp_match(a, b->s, b->len);
	pa = prefix_len(a);
	pb = prefix_len(b);
	sa = suffix_len(a);
	sb = suffix_len(b);
	p = pa < pb ? pa : pb;
	s = sa < sb ? sa : sb;
	return memcmp(a->s, b->s, p) == 0 && memcmp(a->s + a->len - s, b->s + b->len - s, s) == 0;
}

/* How a state of the walk was reached, to write the witness. */
enum step {
	STEP_NONE,
	STEP_START,
	STEP_BOTH,       /* a component of each, overlapping */
	STEP_BOTH_DSTAR, /* "**" against "**" */
	STEP_A_SKIP,     /* a's "**" matches nothing more */
	STEP_B_SKIP,
	STEP_A_EATS_B, /* a's "**" takes b's component */
	STEP_B_EATS_A,
};

static void witness_add(char *w, size_t wlen, size_t *o, const struct comp *c)
{
	if (*o + 1 < wlen)
		w[(*o)++] = '/';
	for (size_t k = 0; k < c->len && *o + 1 < wlen; k++)
		w[(*o)++] = c->s[k];
	w[*o < wlen ? *o : wlen - 1] = '\0';
}

/* The more telling of two overlapping components: a literal, else the one
 * with more literal bytes. */
static const struct comp *comp_narrower(const struct comp *a, const struct comp *b)
{
	if (a->kind == COMP_LITERAL)
		return a;
	if (b->kind == COMP_LITERAL)
		return b;
	return prefix_len(a) + suffix_len(a) >= prefix_len(b) + suffix_len(b) ? a : b;
}

static void witness_write(const struct glob *a, const struct glob *b, const uint8_t *how, char *w,
                          size_t wlen)
{
	size_t cols = b->n + 1, i = a->n, j = b->n, o = 0, nsteps = 0;
	/* at most one step per position of each pattern */
	size_t trail[2 * GLOB_MAX_COMPONENTS + 2][2];

	while (how[i * cols + j] != STEP_START) {
		trail[nsteps][0] = i;
		trail[nsteps++][1] = j;
		switch (how[i * cols + j]) {
		case STEP_BOTH:
		case STEP_BOTH_DSTAR:
			i--;
			j--;
			break;
		case STEP_A_SKIP:
		case STEP_B_EATS_A:
			i--;
			break;
		default:
			j--;
			break;
		}
	}
	w[0] = '\0';
	while (nsteps--) {
		size_t si = trail[nsteps][0], sj = trail[nsteps][1];
		switch (how[si * cols + sj]) {
		case STEP_BOTH:
			witness_add(w, wlen, &o, comp_narrower(&a->c[si - 1], &b->c[sj - 1]));
			break;
		case STEP_BOTH_DSTAR:
			witness_add(w, wlen, &o, &a->c[si - 1]);
			break;
		case STEP_A_EATS_B:
			witness_add(w, wlen, &o, &b->c[sj - 1]);
			break;
		case STEP_B_EATS_A:
			witness_add(w, wlen, &o, &a->c[si - 1]);
			break;
		default:
			break;
		}
	}
	if (o == 0 && wlen > 1)
		snprintf(w, wlen, "/");
}

bool glob_overlap(const struct glob *a, const struct glob *b, char *witness, size_t wlen)
{
	size_t cols, cells;
	uint8_t *how;
	bool found;

	if (!a || !b)
		return false;
	cols = b->n + 1;
	cells = (a->n + 1) * cols;
	how = calloc(cells, 1);
	if (!how)
		return true; /* the safe answer for a conflict check */
	how[0] = STEP_START;
	/* Every step moves forward in a, in b or in both, so visiting the
	 * states in order sees each one after all of its predecessors. */
	for (size_t i = 0; i <= a->n; i++) {
		for (size_t j = 0; j <= b->n; j++) {
			const struct comp *ca = i < a->n ? &a->c[i] : NULL;
			const struct comp *cb = j < b->n ? &b->c[j] : NULL;
			bool da = ca && ca->kind == COMP_DSTAR, db = cb && cb->kind == COMP_DSTAR;
#define GO(di, dj, step)                                                                           \
	do {                                                                                       \
		if (!how[(i + (di)) * cols + j + (dj)])                                            \
			how[(i + (di)) * cols + j + (dj)] = (step);                                \
	} while (0)

			if (how[i * cols + j] == STEP_NONE)
				continue;
			if (da && db)
				GO(1, 1, STEP_BOTH_DSTAR);
			if (ca && cb && !da && !db && comp_overlap(ca, cb))
				GO(1, 1, STEP_BOTH);
			if (da && cb && !db)
				GO(0, 1, STEP_A_EATS_B);
			if (db && ca && !da)
				GO(1, 0, STEP_B_EATS_A);
			if (da)
				GO(1, 0, STEP_A_SKIP);
			if (db)
				GO(0, 1, STEP_B_SKIP);
#undef GO
		}
	}
	found = how[cells - 1] != STEP_NONE;
	if (found && witness && wlen)
		witness_write(a, b, how, witness, wlen);
	free(how);
	return found;
}
