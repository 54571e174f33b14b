/* libmirrorplane's site configuration and the checks mp_client_open makes
 * before it ever connects: files, flags, bucket aliases, and every kind of
 * bad input getting one clear message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mirrorplane/mirrorplane.h"

static char *write_tmp(const char *text)
{
	char *path = strdup("/tmp/mp-client-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* Loads text; returns the code and leaves the message in err. */
static int load(mp_config *cfg, const char *text, mp_error *err)
{
	char *path = write_tmp(text);
	int r = mp_config_load(cfg, path, err);
	unlink(path);
	free(path);
	return r;
}

static int open_with(const char *text, mp_error *err)
{
	mp_config *cfg;
	assert_int_equal(mp_config_new(&cfg, err), 0);
	int r = load(cfg, text, err);
	if (r == 0) {
		mp_client *c = NULL;
		r = mp_client_open(cfg, &c, err);
		mp_client_close(c);
	}
	mp_config_free(cfg);
	return r;
}

static void test_defaults_open(void **state)
{
	mp_config *cfg;
	mp_error err = {0};
	mp_client *c;
	assert_int_equal(mp_config_new(&cfg, &err), 0);
	assert_int_equal(mp_client_open(cfg, &c, &err), 0);
	assert_int_equal(mp_client_session_version(c), 0);
	mp_client_close(c);
	mp_config_free(cfg);
}

static void test_full_file(void **state)
{
	mp_error err = {0};
	const char *yaml =
	    "mirror: [127.0.0.1:7200, 127.0.0.1:7300]\n"
	    "primary: 127.0.0.1:7100\n"
	    "consistency: strong\n"
	    "timeout: 250ms\n"
	    "parallel: 4\n"
	    "part_size: 16MiB\n"
	    "buckets:\n"
	    "  origin: {endpoint: 'http://127.0.0.1:9000', access_key: a, secret_key: b,\n"
	    "           replica: near}\n"
	    "  near: {url: 's3://near-copy/x'}\n"
	    "  imagenet-raw:\n"
	    "    url: s3://imagenet/train\n"
	    "    path_style: false\n"
	    "buckets.local.url: file:///tmp\n";
	assert_int_equal(open_with(yaml, &err), 0);
}

static void test_flags(void **state)
{
	mp_config *cfg;
	mp_error err = {0};
	mp_client *c;
	assert_int_equal(mp_config_new(&cfg, &err), 0);
	assert_int_equal(mp_config_add(cfg, "mirror", "127.0.0.1:1,127.0.0.1:2", &err), 0);
	assert_int_equal(mp_config_add(cfg, "mirror", "127.0.0.1:3", &err), 0);
	assert_int_equal(mp_config_add(cfg, "primary", "[::1]:7100", &err), 0);
	assert_int_equal(mp_config_set(cfg, "buckets.ext.url", "s3://ext-data/set1", &err), 0);
	assert_int_equal(mp_config_set(cfg, "buckets.ext.region", "eu-west-1", &err), 0);
	assert_int_equal(mp_config_set(cfg, "consistency", "eventual", &err), 0);
	assert_int_equal(mp_client_open(cfg, &c, &err), 0);
	mp_client_close(c);

	assert_int_equal(mp_config_set(cfg, "consistency", "linearizable", &err), -EINVAL);
	assert_non_null(strstr(err.message, "consistency"));
	assert_int_equal(mp_config_set(cfg, "timeout", "soon", &err), -EINVAL);
	assert_non_null(strstr(err.message, "timeout"));
	assert_int_equal(mp_config_set(cfg, "no_such_option", "1", &err), -ENOENT);
	assert_int_equal(mp_config_set(cfg, "buckets.b@d.url", "s3://x", &err), -EINVAL);
	assert_non_null(strstr(err.message, "b@d"));
	assert_int_equal(mp_config_set(cfg, "buckets.ext", "x", &err), -ENOENT);
	assert_int_equal(mp_config_add(cfg, "timeout", "1s", &err), -EINVAL);
	mp_config_free(cfg);

	enum mp_consistency lvl;
	assert_int_equal(mp_consistency_parse("strong", &lvl), 0);
	assert_int_equal(lvl, MP_STRONG);
	assert_string_equal(mp_consistency_name(MP_EVENTUAL), "eventual");
	assert_int_equal(mp_consistency_parse("sometimes", &lvl), -EINVAL);
}

struct bad {
	const char *yaml;
	int code;
	const char *needle; /* in the message */
};

static void test_bad_configs(void **state)
{
	static const struct bad cases[] = {
	    {"timeout: [1\n", -EINVAL, ":1:"},
	    {"timout: 1s\n", -EINVAL, "did you mean 'timeout'"},
	    {"timeout: 5 parsecs\n", -EINVAL, "timeout"},
	    {"consistency: maybe\n", -EINVAL, "consistency"},
	    {"parallel: 0\n", -EINVAL, "parallel"},
	    {"part_size: 1KiB\n", -EINVAL, "part_size"},
	    {"buckets:\n  bad!x: {url: s3://abc}\n", -EINVAL, ":2:3: bucket alias 'bad!x'"},
	    {"buckets:\n  x: {ur: s3://abc}\n", -EINVAL, "did you mean 'buckets.x.url'"},
	    {"buckets:\n  x: {url: http://abc}\n", -EINVAL, "buckets.x.url 'http://abc'"},
	    {"buckets:\n  x: {endpoint: http://h:1}\n", -EINVAL, "bucket 'x' has no url"},
	    {"buckets:\n  x: {url: s3://abc, replica: y}\n", -EINVAL, "replica names 'y'"},
	    {"buckets:\n  x: {url: s3://abc, access_key: k}\n", -EINVAL, "both access_key"},
	    {"mirror: [nohost]\n", -EINVAL, "mirror 'nohost'"},
	    {"primary: ['h:0']\n", -EINVAL, "primary 'h:0'"},
	    {"primary: ~\n", -EINVAL, "no primary"},
	    {"origin: 'a b'\n", -EINVAL, "origin 'a b'"},
	    {"a: &x 1\nb: *x\n", -EINVAL, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		mp_error err = {0};
		int r = open_with(cases[i].yaml, &err);
		if (r != cases[i].code || strstr(err.message, cases[i].needle) == NULL)
			fail_msg("case %zu (%s): got %d '%s'", i, cases[i].yaml, r, err.message);
		assert_int_equal(err.code, r);
		assert_null(strchr(err.message, '\n'));
	}
}

static void test_missing_and_env(void **state)
{
	mp_config *cfg;
	mp_error err = {0};
	assert_int_equal(mp_config_new(&cfg, &err), 0);
	assert_int_equal(mp_config_load(cfg, "/nonexistent/mp.yaml", &err), -ENOENT);
	assert_non_null(strstr(err.message, "/nonexistent/mp.yaml"));
	char *path = write_tmp("timeout: 3s\n");
	setenv("MP_CONFIG", path, 1);
	assert_int_equal(mp_config_load(cfg, NULL, &err), 0);
	setenv("MP_CONFIG", "", 1);
	assert_int_equal(mp_config_load(cfg, NULL, &err), 0); /* nothing to load */
	unsetenv("MP_CONFIG");
	unlink(path);
	free(path);
	/* A failed load leaves what was there. */
	assert_int_equal(load(cfg, "mirror: [h:1]\ntimeout: never\n", &err), -EINVAL);
	mp_client *c;
	assert_int_equal(mp_client_open(cfg, &c, &err), 0);
	mp_client_close(c);
	mp_config_free(cfg);
}

static void test_bad_paths_offline(void **state)
{
	/* Path checks come before any connection (the primary here is closed). */
	mp_config *cfg;
	mp_error err = {0};
	mp_client *c;
	assert_int_equal(mp_config_new(&cfg, &err), 0);
	assert_int_equal(mp_config_set(cfg, "primary", "127.0.0.1:1", &err), 0);
	assert_int_equal(mp_client_open(cfg, &c, &err), 0);
	mp_node n;
	assert_int_equal(mp_stat(c, "relative/path", NULL, &n, &err), -EINVAL);
	assert_non_null(strstr(err.message, "absolute"));
	assert_int_equal(mp_stat(c, "/a/../b", NULL, &n, &err), -EINVAL);
	assert_non_null(strstr(err.message, "'..'"));
	char longname[400];
	memset(longname, 'x', sizeof(longname));
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(mp_mkdir(c, longname, 0755, false, NULL, &err), -EINVAL);
	assert_int_equal(mp_mkdir(c, "/d", 070000, false, NULL, &err), -EINVAL);
	assert_int_equal(mp_import(c, "b@d/x", "/dest", NULL, NULL, NULL, &err), -EINVAL);
	assert_int_equal(mp_import(c, "nosuch/x", "/dest", NULL, NULL, NULL, &err), -ENOENT);
	assert_non_null(strstr(err.message, "unknown bucket alias 'nosuch'"));
	/* And a closed primary is a clear error, not a hang. */
	assert_int_equal(mp_stat(c, "/x", NULL, &n, &err), -ECONNREFUSED);
	assert_non_null(strstr(err.message, "127.0.0.1:1"));
	mp_client_close(c);
	mp_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_open),   cmocka_unit_test(test_full_file),
	    cmocka_unit_test(test_flags),           cmocka_unit_test(test_bad_configs),
	    cmocka_unit_test(test_missing_and_env), cmocka_unit_test(test_bad_paths_offline),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
