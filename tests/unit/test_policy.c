/* Policies: a full valid file read into the model with its defaults, every
 * kind of error with its exact FILE:LINE:COL, several errors in one run,
 * conflicts naming both places, known sites and buckets, matching, and
 * cron schedules against hand-computed next times. */
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
#include <time.h>
#include <unistd.h>

#include "policy.h"

static const char good[] = "version: 1\n"
                           "replication:\n"
                           "  - name: imagenet-to-eu\n"
                           "    paths: [\"/datasets/imagenet/**\"]\n"
                           "    sites: [eu-west, us-east]\n"
                           "    data: replicate\n"
                           "    bucket: site-copy\n"
                           "    bandwidth: 100MB\n"
                           "    concurrency: 8\n"
                           "    verify: sha256\n"
                           "    keep: 7d\n"
                           "  - name: scratch\n"
                           "    paths: /scratch/**\n"
                           "    sites: ['*']\n"
                           "    data: none\n"
                           "warmup:\n"
                           "  - name: llama-serving\n"
                           "    paths: [\"/models/llama/current/**\"]\n"
                           "    sites: [\"*\"]\n"
                           "    trigger: on-change\n"
                           "    evict_previous: true\n"
                           "    concurrency: 16\n"
                           "    bandwidth: 1GB\n"
                           "    priority: 10\n"
                           "    deadline: 30m\n"
                           "  - name: nightly\n"
                           "    list: /models/warm.txt\n"
                           "    sites: [eu-west]\n"
                           "    trigger: schedule\n"
                           "    schedule: \"*/5 1-3 * * mon-fri\"\n";

static struct policy *parse_ok(const char *text, const struct policy_known *known)
{
	struct policy_errors errs = {0};
	struct policy *p = NULL;
	int r = policy_parse_buffer("p.yaml", text, strlen(text), known, &p, &errs);

	if (r != 0) {
		policy_errors_print(&errs, stderr);
		fail_msg("parse failed: %d", r);
	}
	assert_int_equal(errs.n, 0);
	return p;
}

/* Parses text expecting failure, and that error k reads exactly want. */
static void expect_errors(const char *text, const struct policy_known *known, size_t n,
                          const char *const *want)
{
	struct policy_errors errs = {0};
	struct policy *p = (struct policy *)0x1;
	int r = policy_parse_buffer("p.yaml", text, strlen(text), known, &p, &errs);

	assert_int_equal(r, -EINVAL);
	assert_ptr_equal(p, (struct policy *)0x1); /* untouched */
	if (errs.n != n) {
		policy_errors_print(&errs, stderr);
		fail_msg("expected %zu errors, got %zu", n, errs.n);
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(errs.v[i].text, want[i]) != 0)
			fail_msg("error %zu:\n got: %s\nwant: %s", i, errs.v[i].text, want[i]);
	policy_errors_clear(&errs);
}

static void expect_error(const char *text, const char *want)
{
	expect_errors(text, NULL, 1, &want);
}

static void test_good(void **state)
{
	struct policy *p = parse_ok(good, NULL);
	const struct policy_replication *r;
	const struct policy_warmup *w;

	assert_int_equal(p->version, 1);
	assert_int_equal(p->n_replication, 2);
	assert_int_equal(p->n_warmup, 2);
	r = &p->replication[0];
	assert_string_equal(r->item.name, "imagenet-to-eu");
	assert_int_equal(r->paths.n, 1);
	assert_int_equal(r->paths.pos[0].line, 4);
	assert_int_equal(r->paths.pos[0].col, 13);
	assert_int_equal(r->sites.n, 2);
	assert_string_equal(r->sites.items[1], "us-east");
	assert_int_equal(r->data, POLICY_DATA_REPLICATE);
	assert_string_equal(r->bucket, "site-copy");
	assert_int_equal(r->bandwidth, 100000000);
	assert_int_equal(r->concurrency, 8);
	assert_int_equal(r->verify, POLICY_VERIFY_SHA256);
	assert_int_equal(r->keep_ms, 7ull * 86400 * 1000);
	r = &p->replication[1]; /* defaults */
	assert_int_equal(r->data, POLICY_DATA_NONE);
	assert_null(r->bucket);
	assert_int_equal(r->bandwidth, 0);
	assert_int_equal(r->concurrency, 4);
	assert_int_equal(r->verify, POLICY_VERIFY_MD5);
	assert_int_equal(r->keep_ms, 86400 * 1000);
	assert_string_equal(r->paths.items[0], "/scratch/**");
	w = &p->warmup[0];
	assert_int_equal(w->trigger, POLICY_TRIGGER_ON_CHANGE);
	assert_true(w->evict_previous);
	assert_int_equal(w->concurrency, 16);
	assert_int_equal(w->bandwidth, 1000000000);
	assert_int_equal(w->priority, 10);
	assert_int_equal(w->deadline_ms, 30 * 60 * 1000);
	assert_null(w->list);
	w = &p->warmup[1];
	assert_string_equal(w->list, "/models/warm.txt");
	assert_int_equal(w->paths.n, 0);
	assert_int_equal(w->trigger, POLICY_TRIGGER_SCHEDULE);
	assert_string_equal(w->schedule.text, "*/5 1-3 * * mon-fri");
	assert_false(w->evict_previous);
	assert_int_equal(w->priority, 50);
	assert_int_equal(w->concurrency, 4);
	policy_free(p);
	policy_free(NULL);
	(void)state;
}

static void test_json(void **state)
{
	struct policy *p = parse_ok(good, NULL);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(policy_to_json(p, f), 0);
	fclose(f);
	assert_non_null(strstr(buf, "{\"version\": 1, \"replication\": [{\"name\": "
	                            "\"imagenet-to-eu\", \"paths\": [\"/datasets/imagenet/**\"], "
	                            "\"sites\": [\"eu-west\", \"us-east\"], \"data\": "
	                            "\"replicate\", \"bucket\": \"site-copy\", \"bandwidth\": "
	                            "100000000, \"concurrency\": 8, \"verify\": \"sha256\", "
	                            "\"keep\": 604800000}"));
	assert_non_null(strstr(buf, "\"schedule\": \"*/5 1-3 * * mon-fri\""));
	assert_non_null(strstr(buf, "\"list\": null"));
	free(buf);
	policy_free(p);
	(void)state;
}

static void test_match(void **state)
{
	struct policy *p = parse_ok(good, NULL);

	assert_ptr_equal(policy_match(p, "/datasets/imagenet/a.jpg", "eu-west"),
	                 &p->replication[0]);
	assert_ptr_equal(policy_match(p, "/datasets/imagenet", "us-east"), &p->replication[0]);
	assert_null(policy_match(p, "/datasets/imagenet/a.jpg", "ap-south"));
	assert_null(policy_match(p, "/datasets/coco/a.jpg", "eu-west"));
	assert_ptr_equal(policy_match(p, "/scratch/x/y", "ap-south"), &p->replication[1]);
	assert_null(policy_match(p, "scratch/x", "eu-west"));
	assert_null(policy_match(NULL, "/scratch/x", "eu-west"));
	policy_free(p);
	(void)state;
}

static void test_value_errors(void **state)
{
	static const char head[] = "version: 1\nreplication:\n  - name: r\n    sites: [a]\n";
	char buf[512];
	static const struct {
		const char *line, *want;
	} cases[] = {
	    {"    paths: [/a/**]\n    data: copy\n",
	     "p.yaml:6:11: 'data': expected one of replicate, cache, none; got 'copy'"},
	    {"    paths: [/a/**]\n    data: none\n    concurrency: 300\n",
	     "p.yaml:7:18: 'concurrency': 300 is above the maximum 256"},
	    {"    paths: [/a/**]\n    data: none\n    concurrency: 0\n",
	     "p.yaml:7:18: 'concurrency': 0 is below the minimum 1"},
	    {"    paths: [/a/**]\n    data: none\n    concurrency: -1\n",
	     "p.yaml:7:18: 'concurrency': expected a non-negative integer, got '-1'"},
	    {"    paths: [/a/**]\n    data: none\n    bandwidth: fast\n",
	     "p.yaml:7:16: 'bandwidth': expected a size like 512, 100MB or 1GiB, got 'fast'"},
	    {"    paths: [/a/**]\n    data: none\n    keep: 7 days\n",
	     "p.yaml:7:11: 'keep': expected a duration like 30s, 5m, 2h or 7d, got '7 days'"},
	    {"    paths: [/a/**]\n    data: none\n    verify: crc\n",
	     "p.yaml:7:13: 'verify': expected one of md5, sha256; got 'crc'"},
	    {"    paths: [/a/**, a/b]\n    data: none\n",
	     "p.yaml:5:20: 'paths': bad glob 'a/b': not an absolute path (must start with '/')"},
	    {"    paths: [\"/a//b\"]\n    data: none\n",
	     "p.yaml:5:13: 'paths': bad glob '/a//b': empty component at offset 3"},
	    {"    paths: [/a/x**]\n    data: none\n",
	     "p.yaml:5:13: 'paths': bad glob '/a/x**': '**' must be a whole component, not part "
	     "of 'x**'"},
	    {"    paths: [\"/a/\\tb\"]\n    data: none\n",
	     "p.yaml:5:13: 'paths': bad glob '/a/\\x09b': control byte 0x09 at offset 3"},
	    {"    paths: [/a, /a]\n    data: none\n", "p.yaml:5:17: 'paths': '/a' is listed twice"},
	    {"    paths: []\n    data: none\n", "p.yaml:5:12: 'paths': empty list"},
	    {"    paths: {a: b}\n    data: none\n",
	     "p.yaml:5:12: 'paths': expected a value, got a mapping"},
	    {"    paths: [/a]\n    data: none\n    colour: red\n",
	     "p.yaml:7:5: unknown key 'colour' in replication rule (expected name, paths, sites, "
	     "data, bucket, bandwidth, concurrency, verify, keep)"},
	    {"    paths: [/a]\n    data: none\n    data: none\n",
	     "p.yaml:7:5: duplicate key 'data' (first at line 6)"},
	    {"    paths: [/a]\n    data: replicate\n",
	     "p.yaml:6:11: replication rule 'r': 'bucket' is required with data: replicate"},
	    {"    paths: [/a]\n    data: cache\n    bucket: b\n",
	     "p.yaml:7:13: replication rule 'r': 'bucket' applies only to data: replicate, not "
	     "cache"},
	    {"    paths: [/a]\n    data:\n", "p.yaml:6:10: 'data': expected a value, got nothing"},
	    {"    data: none\n", "p.yaml:3:5: replication rule 'r': missing required key 'paths'"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", head, cases[i].line);
		expect_error(buf, cases[i].want);
	}
	(void)state;
}

static void test_structure_errors(void **state)
{
	expect_error("", "p.yaml:1:1: empty policy: missing required key 'version'");
	expect_error("version: 2\n", "p.yaml:1:10: 'version': expected 1, got '2'");
	expect_error("replication: []\n", "p.yaml:1:1: missing required key 'version'");
	expect_error("version: 1\nrules: []\n",
	             "p.yaml:2:1: unknown key 'rules' (expected version, replication, warmup)");
	expect_error("version: 1\nreplication: {a: 1}\n",
	             "p.yaml:2:14: 'replication': expected a list of replication rules, got a "
	             "mapping");
	expect_error(
	    "version: 1\nreplication: [x]\n",
	    "p.yaml:2:15: 'replication': each replication rule is a mapping, not a scalar");
	expect_error("- a\n",
	             "p.yaml:1:1: expected a mapping (version, replication, warmup), got a "
	             "list");
	expect_error("version: 1\n---\nversion: 1\n", "p.yaml:2:1: more than one YAML document");
	/* a syntax error ends the run with libyaml's words and position */
	{
		/* what came before it is still reported */
		static const char *const want[] = {
		    "p.yaml:3:11: 'name': expected a value, got a list",
		    "p.yaml:4:1: did not find expected ',' or ']' (while parsing a flow sequence "
		    "at line 3)",
		};
		expect_errors("version: 1\nreplication:\n  - name: [a\n", NULL, 2, want);
	}
	expect_error("version: 1\n\tx: 1\n",
	             "p.yaml:2:1: found a tab character that violates indentation (while scanning "
	             "a plain scalar at line 1)");
	(void)state;
}

static void test_warmup_errors(void **state)
{
	static const char head[] = "version: 1\nwarmup:\n  - name: w\n    sites: ['*']\n";
	char buf[512];
	static const struct {
		const char *line, *want;
	} cases[] = {
	    {"    trigger: once\n", "p.yaml:3:5: warmup pipeline 'w': missing 'paths' or 'list'"},
	    {"    trigger: once\n    paths: [/a]\n    list: /l\n",
	     "p.yaml:7:11: warmup pipeline 'w': give either 'paths' or 'list', not both"},
	    {"    trigger: schedule\n    paths: [/a]\n",
	     "p.yaml:5:14: warmup pipeline 'w': 'schedule' is required with trigger: schedule"},
	    {"    trigger: once\n    paths: [/a]\n    schedule: '@daily'\n",
	     "p.yaml:7:15: warmup pipeline 'w': 'schedule' applies only to trigger: schedule, "
	     "not once"},
	    {"    trigger: schedule\n    paths: [/a]\n    schedule: '*/5 * * *'\n",
	     "p.yaml:7:15: 'schedule': bad schedule '*/5 * * *': expected 5 fields (minute hour "
	     "day-of-month month day-of-week), got 4"},
	    {"    trigger: schedule\n    paths: [/a]\n    schedule: '61 * * * *'\n",
	     "p.yaml:7:15: 'schedule': bad schedule '61 * * * *': minute: 61 is out of range 0-59"},
	    {"    trigger: schedule\n    paths: [/a]\n    schedule: '@sometimes'\n",
	     "p.yaml:7:15: 'schedule': bad schedule '@sometimes': unknown shorthand (expected "
	     "@yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"},
	    {"    trigger: once\n    paths: [/a]\n    priority: 101\n",
	     "p.yaml:7:15: 'priority': 101 is above the maximum 100"},
	    {"    trigger: once\n    paths: [/a]\n    evict_previous: maybe\n",
	     "p.yaml:7:21: 'evict_previous': expected true or false, got 'maybe'"},
	    {"    trigger: once\n    list: /a/*.txt\n",
	     "p.yaml:6:11: 'list': '/a/*.txt': a path, not a glob"},
	    {"    trigger: always\n    paths: [/a]\n",
	     "p.yaml:5:14: 'trigger': expected one of once, schedule, on-change; got 'always'"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", head, cases[i].line);
		expect_error(buf, cases[i].want);
	}
	(void)state;
}

/* Several mistakes, one run: each is reported, in order, and the names of
 * rules stay unique. */
static void test_many_errors(void **state)
{
	static const char text[] = "version: 1\n"
	                           "replication:\n"
	                           "  - name: a\n"
	                           "    paths: [/a]\n"
	                           "    sites: [x, '*']\n"
	                           "    data: none\n"
	                           "    concurrency: 0\n"
	                           "  - name: a\n"
	                           "    paths: [/b]\n"
	                           "    sites: [Bad Site]\n"
	                           "    data: none\n";
	static const char *const want[] = {
	    "p.yaml:7:18: 'concurrency': 0 is below the minimum 1",
	    "p.yaml:10:13: 'sites': 'Bad Site' is not a site name (1..63 of A-Z, a-z, 0-9, '-', "
	    "'_', '.') or \"*\"",
	    "p.yaml:5:16: 'sites': \"*\" must be the only site",
	    "p.yaml:8:11: duplicate replication rule name 'a' (first at line 3)",
	};
	expect_errors(text, NULL, 4, want);
	(void)state;
}

static void test_known(void **state)
{
	static const char *const sites[] = {"eu-west", "us-east"};
	static const char *const buckets[] = {"site-copy"};
	struct policy_known known = {sites, 2, buckets, 1};
	static const char text[] = "version: 1\n"
	                           "replication:\n"
	                           "  - name: a\n"
	                           "    paths: [/a]\n"
	                           "    sites: [eu-west, ap-south]\n"
	                           "    data: replicate\n"
	                           "    bucket: other\n";
	static const char *const want[] = {
	    "p.yaml:5:22: 'sites': unknown site 'ap-south'",
	    "p.yaml:7:13: replication rule 'a': unknown bucket alias 'other'",
	};
	struct policy_known none = {0};

	expect_errors(text, &known, 2, want);
	policy_free(parse_ok(text, NULL));  /* unchecked without lists */
	policy_free(parse_ok(text, &none)); /* NULL lists: unchecked */
	policy_free(parse_ok(good, &known));
	(void)state;
}

static void test_conflicts(void **state)
{
	static const char text[] = "version: 1\n"
	                           "replication:\n"
	                           "  - name: a\n"
	                           "    paths: [/y, /x/**]\n"
	                           "    sites: [eu, us]\n"
	                           "    data: replicate\n"
	                           "    bucket: b\n"
	                           "  - name: b\n"
	                           "    paths: [/z, /x/y/*.bin]\n"
	                           "    sites: ['*']\n"
	                           "    data: none\n"
	                           "  - name: c\n" /* same mode as a: no conflict */
	                           "    paths: [/x/**]\n"
	                           "    sites: [eu]\n"
	                           "    data: replicate\n"
	                           "    bucket: b\n"
	                           "  - name: d\n" /* other site: no conflict */
	                           "    paths: [/x/**]\n"
	                           "    sites: [ap]\n"
	                           "    data: cache\n"
	                           "  - name: e\n" /* conflicts with d at ap, not b (none) */
	                           "    paths: ['/*/y/**']\n"
	                           "    sites: [ap]\n"
	                           "    data: none\n";
	static const char *const want[] = {
	    "p.yaml:4:17: rule 'a' and rule 'b' (p.yaml:9:17) both match /x/y/*.bin with data "
	    "replicate vs none for site 'eu'",
	    "p.yaml:9:17: rule 'b' and rule 'c' (p.yaml:13:13) both match /x/y/*.bin with data "
	    "none vs replicate for site 'eu'",
	    "p.yaml:9:17: rule 'b' and rule 'd' (p.yaml:18:13) both match /x/y/*.bin with data "
	    "none vs cache for site 'ap'",
	    "p.yaml:18:13: rule 'd' and rule 'e' (p.yaml:22:13) both match /x/y/** with data "
	    "cache vs none for site 'ap'",
	};
	expect_errors(text, NULL, 4, want);
	(void)state;
}

/* Conflict checking is bounded: two rules of 64 deep globs each, none
 * overlapping, would cost 64 * 64 * 251 * 251 steps; the check gives up
 * with an error instead of taking minutes. */
static void test_conflict_budget(void **state)
{
	size_t cap = 512 * 1024, o = 0;
	char *text = malloc(cap);
	struct policy_errors errs = {0};
	struct policy *p = NULL;

	assert_non_null(text);
	o += (size_t)snprintf(text + o, cap - o, "version: 1\nreplication:\n");
	for (int r = 0; r < 2; r++) {
		o += (size_t)snprintf(text + o, cap - o,
		                      "  - name: r%d\n    sites: ['*']\n    data: %s\n    paths:\n",
		                      r, r ? "none" : "cache");
		for (int g = 0; g < 64; g++) {
			o += (size_t)snprintf(text + o, cap - o, "      - /**");
			for (int k = 0; k < 248; k++)
				o += (size_t)snprintf(text + o, cap - o, "/x");
			o += (size_t)snprintf(text + o, cap - o, "/%c%d\n", 'a' + r, g);
		}
	}
	assert_true(o < cap - 1);
	assert_int_equal(policy_parse_buffer("p.yaml", text, o, NULL, &p, &errs), -EINVAL);
	assert_int_equal(errs.n, 1);
	assert_string_equal(errs.v[0].text,
	                    "p.yaml: too many rules and paths to check for conflicts");
	policy_errors_clear(&errs);
	free(text);
	(void)state;
}

static void test_file(void **state)
{
	char path[] = "/tmp/test_policy_XXXXXX";
	int fd = mkstemp(path);
	struct policy_errors errs = {0};
	struct policy *p = NULL;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, good, strlen(good)), (ssize_t)strlen(good));
	close(fd);
	assert_int_equal(policy_parse_file(path, NULL, &p, &errs), 0);
	assert_string_equal(p->file, path);
	policy_free(p);
	unlink(path);
	p = NULL;
	assert_true(policy_parse_file(path, NULL, &p, &errs) == -ENOENT);
	assert_null(p);
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.v[0].text, path));
	policy_errors_clear(&errs);
	(void)state;
}

static time_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {
	    .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
	return timegm(&tm);
}

static struct cron cron(const char *s)
{
	struct cron c;
	char err[256];
	if (cron_parse(s, strlen(s), &c, err, sizeof(err)) < 0)
		fail_msg("cron '%s': %s", s, err);
	return c;
}

static void test_cron(void **state)
{
	/* 2024-03-15 is a Friday */
	time_t t0 = utc(2024, 3, 15, 10, 7) + 30;
	static const struct {
		const char *expr;
		int y, mo, d, h, mi;
	} cases[] = {
	    {"*/5 * * * *", 2024, 3, 15, 10, 10},  {"* * * * *", 2024, 3, 15, 10, 8},
	    {"7 10 * * *", 2024, 3, 16, 10, 7}, /* strictly after */
	    {"@hourly", 2024, 3, 15, 11, 0},       {"@daily", 2024, 3, 16, 0, 0},
	    {"@weekly", 2024, 3, 17, 0, 0},        {"@monthly", 2024, 4, 1, 0, 0},
	    {"@yearly", 2025, 1, 1, 0, 0},         {"0 9 * * mon-fri", 2024, 3, 18, 9, 0},
	    {"0 9 * * 7", 2024, 3, 17, 9, 0},      {"0 0 29 2 *", 2028, 2, 29, 0, 0},
	    {"0 0 1 jan,JUL *", 2024, 7, 1, 0, 0}, {"30 2-4/2 * * *", 2024, 3, 16, 2, 30},
	    {"0 0 13 * 5", 2024, 3, 22, 0, 0}, /* DOM or DOW when both are set */
	    {"0 0 1,31 * *", 2024, 3, 31, 0, 0},   {"5/20 * * * *", 2024, 3, 15, 10, 25},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cron c = cron(cases[i].expr);
		time_t want = utc(cases[i].y, cases[i].mo, cases[i].d, cases[i].h, cases[i].mi);
		time_t got = policy_cron_next(&c, t0);
		if (got != want)
			fail_msg("'%s': next %lld, want %lld", cases[i].expr, (long long)got,
			         (long long)want);
		assert_true(cron_matches(&c, got));
	}
	{
		struct cron c = cron("0 0 30 2 *");
		assert_int_equal(policy_cron_next(&c, t0), -1);
	}
	static const char *const bad[] = {
	    "",           "* * * *",     "* * * * * *", "60 * * * *",  "* 24 * * *",   "* * 0 * *",
	    "* * * 13 *", "* * * * 8",   "5-1 * * * *", "*/0 * * * *", "*/61 * * * *", ",1 * * * *",
	    "1, * * * *", "* * * foo *", "@every 5m",   "1-x * * * *", "0 0 1 janu *"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cron c;
		char err[256] = "";
		if (cron_parse(bad[i], strlen(bad[i]), &c, err, sizeof(err)) != -EINVAL)
			fail_msg("cron '%s' was accepted", bad[i]);
		assert_true(err[0] != '\0');
	}
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),          cmocka_unit_test(test_match),
	    cmocka_unit_test(test_value_errors),  cmocka_unit_test(test_structure_errors),
	    cmocka_unit_test(test_warmup_errors), cmocka_unit_test(test_many_errors),
	    cmocka_unit_test(test_known),         cmocka_unit_test(test_conflicts),
	    cmocka_unit_test(test_file),          cmocka_unit_test(test_cron),
	    cmocka_unit_test(test_json),          cmocka_unit_test(test_conflict_budget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
