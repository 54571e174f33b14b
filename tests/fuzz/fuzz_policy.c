/* libFuzzer target for the policy engine's three parsers. The first byte of
 * an input picks one, the rest is its input:
 *   'y'  policy YAML (policy_parse_buffer, with known sites and buckets on
 *        odd lengths); an accepted policy must be internally consistent and
 *        matchable, a refused one must say where;
 *   'g'  two globs split at the first newline: compiled, each matched against
 *        the other's text as a path, overlap checked both ways (it must be
 *        symmetric, a glob always overlaps itself, and a path matched by both
 *        means they overlap);
 *   'c'  a cron schedule: the next time after a fixed instant must match and
 *        no minute between must;
 *   'l'  a pipeline's list file (policy_paths_from_text): an accepted list
 *        has only absolute paths, each compiled and matching itself when it
 *        has no wildcard; a refused one leaves the list in force untouched
 *        and names a line.
 * Anything else is read as YAML too, so plain policy files work as seeds.
 *
 * tests/fuzz/run-fuzzers builds and runs it with libFuzzer. With
 * replay_main.c it is a plain program replaying the files it is given,
 * for the ordinary test suite. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static void fuzz_yaml(const uint8_t *data, size_t size)
{
	static const char *const sites[] = {"eu", "us", "eu-west"};
	static const char *const buckets[] = {"site-copy", "b"};
	struct policy_known known = {sites, 3, buckets, 2};
	struct policy_errors errs = {0};
	struct policy *p = NULL;
	int r = policy_parse_buffer("f.yaml", data, size, size % 2 ? &known : NULL, &p, &errs);

	if (r == 0) {
		if (errs.n || !p || p->version != 1)
			abort();
		for (size_t i = 0; i < p->n_replication; i++) {
			const struct policy_replication *rule = &p->replication[i];
			if (!rule->item.name || rule->paths.n == 0 || rule->sites.n == 0 ||
			    (rule->data == POLICY_DATA_REPLICATE) != (rule->bucket != NULL))
				abort();
			/* a rule's own glob text, as a path, is matched by some rule
			 * at its site (first-match order may pick an earlier one) */
			if (strchr(rule->paths.items[0], '*') == NULL &&
			    strcmp(rule->sites.items[0], "*") != 0 &&
			    !policy_match(p, rule->paths.items[0], rule->sites.items[0]))
				abort();
		}
		for (size_t i = 0; i < p->n_warmup; i++) {
			const struct policy_warmup *w = &p->warmup[i];
			if ((w->paths.n > 0) == (w->list != NULL) ||
			    (w->trigger == POLICY_TRIGGER_SCHEDULE) != (w->schedule.text != NULL))
				abort();
		}
		policy_free(p);
	} else if (r == -EINVAL) {
		if (errs.n == 0 || p)
			abort();
		for (size_t i = 0; i < errs.n; i++)
			if (strncmp(errs.v[i].text, "f.yaml:", 7) != 0)
				abort();
	}
	policy_errors_clear(&errs);
}

static void fuzz_glob(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *nl = memchr(s, '\n', size);
	size_t alen = nl ? (size_t)(nl - s) : size;
	size_t blen = nl ? size - alen - 1 : 0;
	struct glob *a = NULL, *b = NULL;
	char err[256], *as, *bs;

	as = strndup(s, alen);
	bs = strndup(nl ? nl + 1 : "", blen);
	if (!as || !bs)
		abort();
	if (glob_compile(s, alen, &a, err, sizeof(err)) == 0) {
		char w[512];
		if (!glob_overlap(a, a, w, sizeof(w)))
			abort();
		(void)glob_match(a, bs);
	}
	if (nl && glob_compile(nl + 1, blen, &b, err, sizeof(err)) == 0)
		(void)glob_match(b, as);
	if (a && b) {
		bool ab = glob_overlap(a, b, NULL, 0), ba = glob_overlap(b, a, NULL, 0);
		if (ab != ba)
			abort();
		/* a literal glob's text is a path; if the other matches it
		 * too, they overlap */
		if (!strchr(as, '*') && glob_match(a, as) && glob_match(b, as) && !ab)
			abort();
	}
	glob_free(a);
	glob_free(b);
	free(as);
	free(bs);
}

static void fuzz_cron(const uint8_t *data, size_t size)
{
	const time_t start = 1710497250; /* 2024-03-15 10:07:30 UTC, a Friday */
	struct cron c;
	char err[256];
	time_t next;

	if (cron_parse((const char *)data, size, &c, err, sizeof(err)) < 0)
		return;
	next = policy_cron_next(&c, start);
	if (next == -1)
		return;
	if (next <= start || next % 60 != 0 || !cron_matches(&c, next))
		abort();
	/* nothing earlier matches: check up to a day back */
	for (time_t t = next - 60; t > start && t > next - 86400; t -= 60)
		if (cron_matches(&c, t))
			abort();
}

static void fuzz_list(const uint8_t *data, size_t size)
{
	struct policy_list l = {0};
	char err[600];
	/* A list in force first, which a refused one must leave as it was. */
	if (policy_paths_from_text(&l, "/kept/**\n", 9, err, sizeof(err)) != 0 || l.n != 1)
		abort();
	int r = policy_paths_from_text(&l, (const char *)data, size, err, sizeof(err));
	if (r == 0) {
		for (size_t i = 0; i < l.n; i++) {
			if (l.items[i][0] != '/' || l.globs == NULL || l.globs[i] == NULL ||
			    l.pos[i].line == 0)
				abort();
			if (strchr(l.items[i], '*') == NULL && strchr(l.items[i], '?') == NULL &&
			    strchr(l.items[i], '[') == NULL && !glob_match(l.globs[i], l.items[i]))
				abort();
		}
	} else {
		if (l.n != 1 || strcmp(l.items[0], "/kept/**") != 0 || err[0] == '\0')
			abort();
	}
	/* An empty list replaces it, and frees what it held. */
	if (policy_paths_from_text(&l, "", 0, err, sizeof(err)) != 0 || l.n != 0 || l.items)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 0 && data[0] == 'l')
		fuzz_list(data + 1, size - 1);
	else if (size > 0 && data[0] == 'g')
		fuzz_glob(data + 1, size - 1);
	else if (size > 0 && data[0] == 'c')
		fuzz_cron(data + 1, size - 1);
	else if (size > 0 && data[0] == 'y')
		fuzz_yaml(data + 1, size - 1);
	else
		fuzz_yaml(data, size);
	return 0;
}
