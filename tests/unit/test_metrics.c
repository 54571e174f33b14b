/* The metrics registry: exact text exposition output for each kind,
 * escaping, name validation, and concurrent updates. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"

/* Renders m into a NUL-terminated string the caller frees. */
static char *render(struct metrics *m)
{
	struct evbuffer *out = evbuffer_new();
	assert_non_null(out);
	assert_int_equal(metrics_render(m, out), 0);
	size_t len = evbuffer_get_length(out);
	char *s = malloc(len + 1);
	assert_non_null(s);
	evbuffer_remove(out, s, len);
	s[len] = '\0';
	evbuffer_free(out);
	return s;
}

static void assert_render(struct metrics *m, const char *expected)
{
	char *got = render(m);
	assert_string_equal(got, expected);
	free(got);
}

static void test_counter(void **state)
{
	struct metrics *m = metrics_new();
	struct metric *c = metrics_counter(m, "mp_commits_total", "Transactions committed.");
	assert_non_null(c);
	assert_render(m, "# HELP mp_commits_total Transactions committed.\n"
	                 "# TYPE mp_commits_total counter\n"
	                 "mp_commits_total 0\n");
	metric_add(c, 1);
	metric_add(c, 2);
	/* Counters only go up, and cannot be set. */
	metric_add(c, -1);
	metric_add(c, NAN);
	metric_set(c, 100);
	metric_observe(c, 5);
	assert_true(metric_value(c) == 3);
	assert_render(m, "# HELP mp_commits_total Transactions committed.\n"
	                 "# TYPE mp_commits_total counter\n"
	                 "mp_commits_total 3\n");
	metrics_free(m);
}

static void test_gauge(void **state)
{
	struct metrics *m = metrics_new();
	struct metric *g = metrics_gauge(m, "mp_version", "Current version.");
	struct metric *nohelp = metrics_gauge(m, "mp_ratio", NULL);
	assert_non_null(g);
	assert_non_null(nohelp);
	metric_set(g, 17);
	metric_add(g, -2);
	metric_set(nohelp, 0.1);
	assert_render(m, "# HELP mp_version Current version.\n"
	                 "# TYPE mp_version gauge\n"
	                 "mp_version 15\n"
	                 "# TYPE mp_ratio gauge\n"
	                 "mp_ratio 0.1\n");
	metric_set(g, 1e21);
	metric_set(nohelp, NAN);
	char *s = render(m);
	assert_non_null(strstr(s, "\nmp_version 1e+21\n"));
	assert_non_null(strstr(s, "\nmp_ratio NaN\n"));
	free(s);
	metric_set(g, -INFINITY);
	metric_set(nohelp, 123456789012.5);
	s = render(m);
	assert_non_null(strstr(s, "\nmp_version -Inf\n"));
	assert_non_null(strstr(s, "\nmp_ratio 123456789012.5\n"));
	free(s);
	metrics_free(m);
}

static void test_labeled_gauge(void **state)
{
	struct metrics *m = metrics_new();
	struct metric *lag =
	    metrics_labeled(m, "mp_primary_subscriber_lag_versions",
	                    "Versions a subscriber is behind.", METRIC_GAUGE, "site");
	assert_non_null(lag);
	/* A family with no children yet renders its header only. */
	assert_render(m, "# HELP mp_primary_subscriber_lag_versions Versions a subscriber is "
	                 "behind.\n"
	                 "# TYPE mp_primary_subscriber_lag_versions gauge\n");
	struct metric *eu = metric_child(lag, "eu-1");
	struct metric *asia = metric_child(lag, "asia-2");
	assert_non_null(eu);
	assert_non_null(asia);
	assert_ptr_equal(metric_child(lag, "eu-1"), eu);
	metric_set(eu, 3);
	metric_set(asia, 0.5);
	/* Updates on the family itself mean nothing. */
	metric_set(lag, 99);
	assert_true(isnan(metric_value(lag)));
	assert_render(m, "# HELP mp_primary_subscriber_lag_versions Versions a subscriber is "
	                 "behind.\n"
	                 "# TYPE mp_primary_subscriber_lag_versions gauge\n"
	                 "mp_primary_subscriber_lag_versions{site=\"asia-2\"} 0.5\n"
	                 "mp_primary_subscriber_lag_versions{site=\"eu-1\"} 3\n");
	metric_remove_child(lag, "asia-2");
	metric_remove_child(lag, "never-there");
	assert_render(m, "# HELP mp_primary_subscriber_lag_versions Versions a subscriber is "
	                 "behind.\n"
	                 "# TYPE mp_primary_subscriber_lag_versions gauge\n"
	                 "mp_primary_subscriber_lag_versions{site=\"eu-1\"} 3\n");
	/* A child that comes back starts from zero. */
	assert_true(metric_value(metric_child(lag, "asia-2")) == 0);

	/* Children of a plain metric do not exist. */
	struct metric *plain = metrics_gauge(m, "mp_plain", NULL);
	errno = 0;
	assert_null(metric_child(plain, "x"));
	assert_int_equal(errno, EINVAL);
	metrics_free(m);
}

static void test_histogram(void **state)
{
	struct metrics *m = metrics_new();
	const double bounds[] = {0.125, 0.5, 1};
	struct metric *h = metrics_histogram(m, "mp_commit_seconds", "Commit latency.", bounds, 3);
	assert_non_null(h);
	metric_observe(h, 0.0625);
	metric_observe(h, 0.125); /* on a bound: counted in that bucket (le) */
	metric_observe(h, 0.25);
	metric_observe(h, 3);
	metric_observe(h, NAN);
	metric_add(h, 1);
	assert_true(metric_value(h) == 4);
	assert_render(m, "# HELP mp_commit_seconds Commit latency.\n"
	                 "# TYPE mp_commit_seconds histogram\n"
	                 "mp_commit_seconds_bucket{le=\"0.125\"} 2\n"
	                 "mp_commit_seconds_bucket{le=\"0.5\"} 3\n"
	                 "mp_commit_seconds_bucket{le=\"1\"} 3\n"
	                 "mp_commit_seconds_bucket{le=\"+Inf\"} 4\n"
	                 "mp_commit_seconds_sum 3.4375\n"
	                 "mp_commit_seconds_count 4\n");
	metrics_free(m);
}

static void test_labeled_histogram(void **state)
{
	struct metrics *m = metrics_new();
	const double bounds[] = {1, 2};
	struct metric *f =
	    metrics_labeled_histogram(m, "mp_rpc_seconds", "RPC latency.", "op", bounds, 2);
	assert_non_null(f);
	metric_observe(metric_child(f, "lookup"), 1.5);
	metric_observe(metric_child(f, "lookup"), 5);
	assert_render(m, "# HELP mp_rpc_seconds RPC latency.\n"
	                 "# TYPE mp_rpc_seconds histogram\n"
	                 "mp_rpc_seconds_bucket{op=\"lookup\",le=\"1\"} 0\n"
	                 "mp_rpc_seconds_bucket{op=\"lookup\",le=\"2\"} 1\n"
	                 "mp_rpc_seconds_bucket{op=\"lookup\",le=\"+Inf\"} 2\n"
	                 "mp_rpc_seconds_sum{op=\"lookup\"} 6.5\n"
	                 "mp_rpc_seconds_count{op=\"lookup\"} 2\n");

	/* Default buckets. */
	struct metric *d = metrics_labeled(m, "mp_default_seconds", NULL, METRIC_HISTOGRAM, "op");
	assert_non_null(d);
	metric_observe(metric_child(d, "x"), 0.2);
	char *s = render(m);
	assert_non_null(strstr(s, "mp_default_seconds_bucket{op=\"x\",le=\"0.005\"} 0\n"
	                          "mp_default_seconds_bucket{op=\"x\",le=\"0.01\"} 0\n"));
	assert_non_null(strstr(s, "mp_default_seconds_bucket{op=\"x\",le=\"0.25\"} 1\n"));
	assert_non_null(strstr(s, "mp_default_seconds_bucket{op=\"x\",le=\"10\"} 1\n"
	                          "mp_default_seconds_bucket{op=\"x\",le=\"+Inf\"} 1\n"));
	free(s);
	metrics_free(m);
}

static void test_escaping(void **state)
{
	struct metrics *m = metrics_new();
	struct metric *f = metrics_labeled(m, "mp_x", "Back\\slash, \"quotes\"\nand a newline.",
	                                   METRIC_COUNTER, "path");
	assert_non_null(f);
	metric_add(metric_child(f, "a\\b\"c\nd"), 1);
	metric_add(metric_child(f, "caf\xc3\xa9"), 2);
	assert_render(m, "# HELP mp_x Back\\\\slash, \"quotes\"\\nand a newline.\n"
	                 "# TYPE mp_x counter\n"
	                 "mp_x{path=\"a\\\\b\\\"c\\nd\"} 1\n"
	                 "mp_x{path=\"caf\xc3\xa9\"} 2\n");
	/* Label values that are not UTF-8, or too long, are refused. */
	errno = 0;
	assert_null(metric_child(f, "bad\xff"));
	assert_int_equal(errno, EINVAL);
	assert_null(metric_child(f, "\xc0\x80"));
	assert_null(metric_child(f, "\xed\xa0\x80"));
	char big[METRICS_MAX_LABEL + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(metric_child(f, big));
	big[METRICS_MAX_LABEL] = '\0';
	assert_non_null(metric_child(f, big));
	metrics_free(m);
}

static void test_invalid(void **state)
{
	struct metrics *m = metrics_new();
	const char *bad_names[] = {"", "1abc", "a-b", "a b", "caf\xc3\xa9", "a.b", "a{b}"};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		errno = 0;
		assert_null(metrics_counter(m, bad_names[i], NULL));
		assert_int_equal(errno, EINVAL);
		assert_null(metrics_gauge(m, bad_names[i], NULL));
		assert_null(metrics_histogram(m, bad_names[i], NULL, NULL, 0));
	}
	assert_null(metrics_counter(m, NULL, NULL));
	assert_non_null(metrics_counter(m, "ns:sub_system_9", NULL));
	assert_non_null(metrics_counter(m, "_x", NULL));

	/* Taken names. */
	errno = 0;
	assert_null(metrics_gauge(m, "_x", NULL));
	assert_int_equal(errno, EEXIST);

	/* Label names: no colon, no reserved "__", no "le" on histograms. */
	assert_null(metrics_labeled(m, "l1", NULL, METRIC_GAUGE, "a:b"));
	assert_null(metrics_labeled(m, "l2", NULL, METRIC_GAUGE, "__site"));
	assert_null(metrics_labeled(m, "l3", NULL, METRIC_GAUGE, "9site"));
	assert_null(metrics_labeled(m, "l4", NULL, METRIC_GAUGE, NULL));
	assert_null(metrics_labeled(m, "l5", NULL, METRIC_HISTOGRAM, "le"));
	assert_null(metrics_labeled(m, "l6", NULL, (enum metric_kind)7, "site"));
	assert_non_null(metrics_labeled(m, "l7", NULL, METRIC_GAUGE, "le"));

	/* Bounds. */
	const double unsorted[] = {1, 0.5};
	const double dup[] = {1, 1};
	const double nan[] = {NAN};
	const double inf[] = {1, INFINITY};
	assert_null(metrics_histogram(m, "h1", NULL, unsorted, 2));
	assert_null(metrics_histogram(m, "h2", NULL, dup, 2));
	assert_null(metrics_histogram(m, "h3", NULL, nan, 1));
	assert_null(metrics_histogram(m, "h4", NULL, inf, 2));
	assert_null(metrics_histogram(m, "h5", NULL, unsorted, 0));
	assert_null(metrics_histogram(m, "h6", NULL, unsorted, METRICS_MAX_BOUNDS + 1));
	/* None of the refused ones was registered. */
	assert_render(m, "# TYPE ns:sub_system_9 counter\n"
	                 "ns:sub_system_9 0\n"
	                 "# TYPE _x counter\n"
	                 "_x 0\n"
	                 "# TYPE l7 gauge\n");

	/* A failed registration leaves a NULL that updates tolerate. */
	metric_add(NULL, 1);
	metric_set(NULL, 1);
	metric_observe(NULL, 1);
	metric_remove_child(NULL, "x");
	assert_true(isnan(metric_value(NULL)));
	metrics_free(m);
	metrics_free(NULL);
}

static void test_handler(void **state)
{
	struct metrics *m = metrics_new();
	metric_add(metrics_counter(m, "mp_up", NULL), 1);
	struct evbuffer *body = evbuffer_new();
	const char *ctype = NULL;
	assert_int_equal(metrics_handler(m, body, &ctype), 200);
	assert_string_equal(ctype, "text/plain; version=0.0.4; charset=utf-8");
	assert_int_equal(evbuffer_get_length(body), strlen("# TYPE mp_up counter\nmp_up 1\n"));
	evbuffer_free(body);
	metrics_free(m);
}

#define THREADS    4
#define ITERATIONS 100000

struct worker {
	struct metric *counter, *gauge, *hist, *family;
	int id;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct metric *mine = metric_child(w->family, w->id % 2 ? "odd" : "even");
	for (int i = 0; i < ITERATIONS; i++) {
		metric_add(w->counter, 1);
		metric_add(w->gauge, (i % 2) ? -1 : 1);
		metric_observe(w->hist, (i % 4) * 0.5);
		metric_add(mine, 1);
	}
	return NULL;
}

static void *renderer_run(void *arg)
{
	struct metrics *m = arg;
	for (int i = 0; i < 50; i++)
		free(render(m));
	return NULL;
}

static void test_concurrent(void **state)
{
	struct metrics *m = metrics_new();
	const double bounds[] = {0.25, 1};
	struct worker proto = {
	    .counter = metrics_counter(m, "c_total", NULL),
	    .gauge = metrics_gauge(m, "g", NULL),
	    .hist = metrics_histogram(m, "h", NULL, bounds, 2),
	    .family = metrics_labeled(m, "f_total", NULL, METRIC_COUNTER, "parity"),
	};
	struct worker w[THREADS];
	pthread_t th[THREADS], renderer;
	for (int i = 0; i < THREADS; i++) {
		w[i] = proto;
		w[i].id = i;
		assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	/* Rendering while the workers update, as the event loop does. */
	assert_int_equal(pthread_create(&renderer, NULL, renderer_run, m), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_join(renderer, NULL);

	assert_true(metric_value(proto.counter) == THREADS * ITERATIONS);
	assert_true(metric_value(proto.gauge) == 0);
	assert_true(metric_value(proto.hist) == THREADS * ITERATIONS);
	assert_true(metric_value(metric_child(proto.family, "odd")) == 2 * ITERATIONS);
	assert_true(metric_value(metric_child(proto.family, "even")) == 2 * ITERATIONS);
	/* Values (i % 4) * 0.5 = 0, 0.5, 1, 1.5, a quarter each. */
	assert_render(m, "# TYPE c_total counter\n"
	                 "c_total 400000\n"
	                 "# TYPE g gauge\n"
	                 "g 0\n"
	                 "# TYPE h histogram\n"
	                 "h_bucket{le=\"0.25\"} 100000\n"
	                 "h_bucket{le=\"1\"} 300000\n"
	                 "h_bucket{le=\"+Inf\"} 400000\n"
	                 "h_sum 300000\n"
	                 "h_count 400000\n"
	                 "# TYPE f_total counter\n"
	                 "f_total{parity=\"even\"} 200000\n"
	                 "f_total{parity=\"odd\"} 200000\n");
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter),           cmocka_unit_test(test_gauge),
	    cmocka_unit_test(test_labeled_gauge),     cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_labeled_histogram), cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_invalid),           cmocka_unit_test(test_handler),
	    cmocka_unit_test(test_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
