/* Path globs: compiling (every refusal), matching with '*' and '**', and
 * the overlap check against a brute-force oracle over a small path space. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"

static struct glob *compile(const char *p)
{
	struct glob *g = NULL;
	char err[256];
	int r = glob_compile(p, strlen(p), &g, err, sizeof(err));
	if (r < 0)
		fail_msg("glob '%s': %s", p, err);
	return g;
}

static void expect_refused(const char *p, size_t len, const char *what)
{
	struct glob *g = NULL;
	char err[256] = "";
	assert_int_equal(glob_compile(p, len, &g, err, sizeof(err)), -EINVAL);
	assert_null(g);
	if (!strstr(err, what))
		fail_msg("glob '%s': message '%s' lacks '%s'", p, err, what);
}

static void test_refused(void **state)
{
	char long_pattern[GLOB_MAX_LEN + 2];

	expect_refused("", 0, "absolute");
	expect_refused("datasets/**", 11, "absolute");
	expect_refused("/a//b", 5, "empty component");
	expect_refused("/a/", 3, "empty component");
	expect_refused("/a/**b", 6, "whole component");
	expect_refused("/a/b**", 6, "whole component");
	expect_refused("/a/***", 6, "whole component");
	expect_refused("/a/../b", 7, "'..'");
	expect_refused("/a/./b", 6, "'.'");
	expect_refused("/a\nb", 4, "control byte 0x0a");
	expect_refused("/a\0b", 4, "control byte 0x00");
	expect_refused("/a\x7f", 3, "control byte 0x7f");
	memset(long_pattern, 'a', sizeof(long_pattern));
	long_pattern[0] = '/';
	expect_refused(long_pattern, GLOB_MAX_LEN + 1, "longer than");
	{
		char deep[2 * GLOB_MAX_COMPONENTS + 8];
		size_t o = 0;
		for (int i = 0; i <= GLOB_MAX_COMPONENTS; i++) {
			deep[o++] = '/';
			deep[o++] = 'x';
		}
		expect_refused(deep, o, "components");
	}
	(void)state;
}

struct m {
	const char *glob, *path;
	bool match;
};

static void test_match(void **state)
{
	static const struct m cases[] = {
	    {"/datasets/imagenet/**", "/datasets/imagenet/train/a.jpg", true},
	    {"/datasets/imagenet/**", "/datasets/imagenet", true},
	    {"/datasets/imagenet/**", "/datasets/imagenet2/a", false},
	    {"/datasets/imagenet/**", "/datasets", false},
	    {"/a/*", "/a/b", true},
	    {"/a/*", "/a/b/c", false},
	    {"/a/*", "/a", false},
	    {"/a/*.jpg", "/a/x.jpg", true},
	    {"/a/*.jpg", "/a/.jpg", true},
	    {"/a/*.jpg", "/a/x.jpeg", false},
	    {"/a/*x*y*", "/a/axbxcy", true},
	    {"/a/*x*y*", "/a/ayx", false},
	    {"/**/ckpt-*/model.bin", "/m/ckpt-1/model.bin", true},
	    {"/**/ckpt-*/model.bin", "/ckpt-1/model.bin", true},
	    {"/**/ckpt-*/model.bin", "/a/b/c/ckpt-9/model.bin", true},
	    {"/**/ckpt-*/model.bin", "/a/ckpt-9/x/model.bin", false},
	    {"/a/**/b/**/c", "/a/b/c", true},
	    {"/a/**/b/**/c", "/a/x/b/y/z/c", true},
	    {"/a/**/b/**/c", "/a/x/c/b", false},
	    {"/**", "/", true},
	    {"/**", "/any/thing", true},
	    {"/", "/", true},
	    {"/", "/a", false},
	    {"/a/b", "//a///b/", true}, /* empty path components are ignored */
	    {"/a/b", "a/b", false},     /* relative paths match nothing */
	    {"/a/b", "/a/B", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct glob *g = compile(cases[i].glob);
		if (glob_match(g, cases[i].path) != cases[i].match)
			fail_msg("'%s' vs '%s': expected %s", cases[i].glob, cases[i].path,
			         cases[i].match ? "a match" : "no match");
		glob_free(g);
	}
	(void)state;
}

/* A path that matches 2*k '**' components then one mismatch must not take
 * exponential time: the walk is O(n * m). */
static void test_match_pathological(void **state)
{
	char pat[GLOB_MAX_LEN], path[4096];
	size_t o = 0;
	struct glob *g;

	for (int i = 0; i < 100; i++)
		o += (size_t)snprintf(pat + o, sizeof(pat) - o, "/**/a");
	snprintf(pat + o, sizeof(pat) - o, "/b");
	o = 0;
	for (int i = 0; i < 1000; i++)
		o += (size_t)snprintf(path + o, sizeof(path) - o, "/a");
	g = compile(pat);
	assert_false(glob_match(g, path));
	glob_free(g);
	(void)state;
}

/* Every path of up to 3 components from a small alphabet of names: if two
 * globs overlap on such a path, glob_overlap must say so; where it says so,
 * for these globs a witness must exist in that space too. */
static const char *const names[] = {"a", "b", "ab", "ba", "x.bin", "x.b", "x.a", "b.bin", "a.bin"};
#define NNAMES 9

static bool brute_overlap(const struct glob *a, const struct glob *b)
{
	char path[64];

	if (glob_match(a, "/") && glob_match(b, "/"))
		return true;
	for (int depth = 1; depth <= 4; depth++) {
		int total = 1;
		for (int d = 0; d < depth; d++)
			total *= NNAMES;
		for (int code = 0; code < total; code++) {
			size_t o = 0;
			for (int d = 0, c = code; d < depth; d++, c /= NNAMES)
				o += (size_t)snprintf(path + o, sizeof(path) - o, "/%s",
				                      names[c % NNAMES]);
			if (glob_match(a, path) && glob_match(b, path))
				return true;
		}
	}
	return false;
}

static void test_overlap(void **state)
{
	static const char *const globs[] = {
	    "/**",   "/a",    "/a/**",    "/a/*",   "/*/b",  "/a/b",      "/b/**",
	    "/*",    "/a*",   "/*b",      "/a*/**", "/**/b", "/**/x.bin", "/a/**/b",
	    "/*a/*", "/b*/a", "/**/a/**", "/ab/ba", "/x.*",  "/*.bin/a",
	};
	size_t n = sizeof(globs) / sizeof(globs[0]);

	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			struct glob *a = compile(globs[i]), *b = compile(globs[j]);
			char w[256] = "";
			bool got = glob_overlap(a, b, w, sizeof(w)), want = brute_overlap(a, b);
			if (got != want)
				fail_msg("overlap('%s', '%s'): got %d, want %d", globs[i], globs[j],
				         got, want);
			if (got && w[0] != '/')
				fail_msg("overlap('%s', '%s'): witness '%s'", globs[i], globs[j],
				         w);
			glob_free(a);
			glob_free(b);
		}
	}
	(void)state;
}

static void test_overlap_witness(void **state)
{
	struct glob *a = compile("/x/**"), *b = compile("/x/y/*"), *c = compile("/x/**");
	struct glob *d = compile("/z/**");
	char w[64];

	assert_true(glob_overlap(a, b, w, sizeof(w)));
	assert_string_equal(w, "/x/y/*");
	assert_true(glob_overlap(a, c, w, sizeof(w)));
	assert_string_equal(w, "/x/**");
	assert_false(glob_overlap(a, d, w, sizeof(w)));
	assert_string_equal(glob_pattern(a), "/x/**");
	glob_free(a);
	glob_free(b);
	glob_free(c);
	glob_free(d);
	glob_free(NULL);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_match_pathological),
	    cmocka_unit_test(test_overlap),
	    cmocka_unit_test(test_overlap_witness),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
