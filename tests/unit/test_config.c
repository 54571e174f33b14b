/* Table-driven configuration: every type, every error with its exact
 * position, overrides, printing that loads back, and a failed load leaving
 * the target byte for byte as it was. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

struct testcfg {
	char *listen;
	char *admin;
	char *data_dir;
	char *cluster_name;
	uint64_t workers;
	uint64_t max_frame_bytes;
	uint64_t heartbeat;
	bool verbose;
	unsigned log_level;
	struct config_strlist peers;
	char *tls_cert;
	char *tls_key;
	bool tls_verify;
	uint64_t lr_max_versions;
	uint64_t lr_max_age;
	uint64_t unrelated; /* not in the table: must never be touched */
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(n, t, f) .name = n, .type = t, .offset = offsetof(struct testcfg, f)
/* Sections deliberately interleaved with top-level keys: printing must still
 * write each section once. */
static const struct config_option table[] = {
    {OPT("listen", CONFIG_HOSTPORT, listen), .default_value = "127.0.0.1:7300",
     .help = "Where mirrors and clients connect."},
    {OPT("tls.cert", CONFIG_PATH, tls_cert), .help = "Certificate chain (PEM)."},
    {OPT("admin", CONFIG_HOSTPORT, admin), .help = "Admin HTTP listener.\nOff when unset."},
    {OPT("data_dir", CONFIG_PATH, data_dir), .default_value = "/var/lib/mirrorplane"},
    {OPT("cluster_name", CONFIG_STRING, cluster_name), .default_value = "default"},
    {OPT("workers", CONFIG_UINT, workers), .min = 1, .max = 64, .default_value = "4"},
    {OPT("max_frame_bytes", CONFIG_SIZE, max_frame_bytes), .min = 1024, .max = 1ULL << 30,
     .default_value = "16MiB"},
    {OPT("heartbeat", CONFIG_DURATION, heartbeat), .min = 100, .max = 3600000,
     .default_value = "1s"},
    {OPT("verbose", CONFIG_BOOL, verbose)},
    {OPT("log_level", CONFIG_ENUM, log_level), .default_value = "info", .choices = levels},
    {OPT("peers", CONFIG_STRLIST, peers)},
    {OPT("tls.key", CONFIG_PATH, tls_key)},
    {OPT("tls.verify", CONFIG_BOOL, tls_verify), .default_value = "true"},
    {OPT("log_retention.max_versions", CONFIG_UINT, lr_max_versions), .default_value = "100000"},
    {OPT("log_retention.max_age", CONFIG_DURATION, lr_max_age), .default_value = "7d"},
    {.name = NULL},
};

static char tmpdir[64];
static char conf_path[128];

static int setup_dir(void **state)
{
	strcpy(tmpdir, "/tmp/mp-test-config-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(conf_path, sizeof(conf_path), "%s/conf.yaml", tmpdir);
	return 0;
}

static int teardown_dir(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void fresh(struct testcfg *c)
{
	memset(c, 0, sizeof(*c));
	c->unrelated = 0xfeedface;
	config_defaults(table, c);
}

static int load_yaml(struct testcfg *c, const char *yaml, char **err)
{
	write_file(conf_path, yaml, strlen(yaml));
	return config_load_file(table, c, conf_path, err);
}

static char *print_to_string(const struct config_option *t, const void *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_print(t, c, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* Loads yaml into a configured struct, expects "conf_path:want", and checks
 * that the struct did not change at all (same pointers, same values). */
static void check_error(const char *yaml, const char *want)
{
	struct testcfg c, before;
	char *err = NULL, *full = NULL;
	int r;

	fresh(&c);
	assert_int_equal(config_set(table, &c, "cluster_name", "kept", NULL), 0);
	memcpy(&before, &c, sizeof(c));
	r = load_yaml(&c, yaml, &err);
	assert_int_equal(r, -EINVAL);
	assert_non_null(err);
	assert_true(asprintf(&full, "%s:%s", conf_path, want) > 0);
	if (strcmp(err, full) != 0)
		fail_msg("for YAML:\n%s\n got: %s\nwant: %s", yaml, err, full);
	assert_memory_equal(&c, &before, sizeof(c));
	assert_string_equal(c.cluster_name, "kept");
	free(full);
	free(err);
	config_free(table, &c);
}

static void test_defaults(void **state)
{
	struct testcfg c;

	fresh(&c);
	assert_string_equal(c.listen, "127.0.0.1:7300");
	assert_null(c.admin);
	assert_string_equal(c.data_dir, "/var/lib/mirrorplane");
	assert_string_equal(c.cluster_name, "default");
	assert_int_equal(c.workers, 4);
	assert_int_equal(c.max_frame_bytes, 16 << 20);
	assert_int_equal(c.heartbeat, 1000);
	assert_false(c.verbose);
	assert_int_equal(c.log_level, 1);
	assert_int_equal(c.peers.n, 0);
	assert_null(c.peers.items);
	assert_null(c.tls_cert);
	assert_true(c.tls_verify);
	assert_int_equal(c.lr_max_versions, 100000);
	assert_int_equal(c.lr_max_age, 7ULL * 86400 * 1000);
	assert_int_equal(c.unrelated, 0xfeedface);
	config_free(table, &c);
	assert_null(c.listen);
	assert_null(c.data_dir);
	assert_int_equal(c.unrelated, 0xfeedface);
}

static void test_load_every_type(void **state)
{
	struct testcfg c;
	char *err = NULL;

	fresh(&c);
	assert_int_equal(load_yaml(&c,
	                           "# a comment\n"
	                           "listen: \"[::1]:7301\"\n"
	                           "admin: localhost:8080\n"
	                           "data_dir: /srv/mp data\n"
	                           "cluster_name: 'prod: eu'\n"
	                           "workers: 16\n"
	                           "max_frame_bytes: 64KiB\n"
	                           "heartbeat: 250ms\n"
	                           "verbose: yes\n"
	                           "log_level: debug\n"
	                           "peers:\n"
	                           "  - eu-west\n"
	                           "  - \"us east\"\n"
	                           "tls:\n"
	                           "  cert: /etc/mp/cert.pem\n"
	                           "  verify: off\n"
	                           "tls.key: /etc/mp/key.pem\n"
	                           "log_retention: {max_versions: 5, max_age: 2h}\n",
	                           &err),
	                 0);
	assert_null(err);
	assert_string_equal(c.listen, "[::1]:7301");
	assert_string_equal(c.admin, "localhost:8080");
	assert_string_equal(c.data_dir, "/srv/mp data");
	assert_string_equal(c.cluster_name, "prod: eu");
	assert_int_equal(c.workers, 16);
	assert_int_equal(c.max_frame_bytes, 65536);
	assert_int_equal(c.heartbeat, 250);
	assert_true(c.verbose);
	assert_int_equal(c.log_level, 0);
	assert_int_equal(c.peers.n, 2);
	assert_string_equal(c.peers.items[0], "eu-west");
	assert_string_equal(c.peers.items[1], "us east");
	assert_string_equal(c.tls_cert, "/etc/mp/cert.pem");
	assert_string_equal(c.tls_key, "/etc/mp/key.pem");
	assert_false(c.tls_verify);
	assert_int_equal(c.lr_max_versions, 5);
	assert_int_equal(c.lr_max_age, 2 * 3600 * 1000);
	assert_int_equal(c.unrelated, 0xfeedface);

	/* A second load overlays: untouched keys keep the values above;
	 * nulls unset strings and empty lists; a comma scalar is a list. */
	assert_int_equal(load_yaml(&c,
	                           "admin: ~\n"
	                           "tls:\n"
	                           "  cert:\n"
	                           "peers: a, b ,c\n"
	                           "heartbeat: 30\n",
	                           &err),
	                 0);
	assert_null(c.admin);
	assert_null(c.tls_cert);
	assert_string_equal(c.tls_key, "/etc/mp/key.pem");
	assert_int_equal(c.heartbeat, 30000);
	assert_int_equal(c.peers.n, 3);
	assert_string_equal(c.peers.items[0], "a");
	assert_string_equal(c.peers.items[1], "b");
	assert_string_equal(c.peers.items[2], "c");
	assert_int_equal(c.workers, 16);

	assert_int_equal(load_yaml(&c, "peers: []\nlog_level: \"error\"\n", &err), 0);
	assert_int_equal(c.peers.n, 0);
	assert_int_equal(c.log_level, 3);
	assert_int_equal(load_yaml(&c, "peers: null\n", &err), 0);
	assert_int_equal(c.peers.n, 0);
	/* quoted "~" is a string, not a null */
	assert_int_equal(load_yaml(&c, "cluster_name: \"~\"\n", &err), 0);
	assert_string_equal(c.cluster_name, "~");
	config_free(table, &c);
}

static void test_empty_files_keep_defaults(void **state)
{
	static const char *const texts[] = {"", "# only a comment\n", "---\n", "---\n...\n",
	                                    "\n\n"};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct testcfg c, before;
		char *err = NULL;
		fresh(&c);
		memcpy(&before, &c, sizeof(c));
		assert_int_equal(load_yaml(&c, texts[i], &err), 0);
		assert_null(err);
		/* the fields were copied and moved back: compare values */
		assert_string_equal(c.listen, "127.0.0.1:7300");
		assert_int_equal(c.workers, before.workers);
		assert_int_equal(c.heartbeat, before.heartbeat);
		config_free(table, &c);
	}
}

static void test_errors_keys(void **state)
{
	check_error("listen: 127.0.0.1:1\nworkers: 2\nlissten: x\n",
	            "3:1: unknown key 'lissten'; did you mean 'listen'?");
	check_error("zzzzzz: 1\n", "1:1: unknown key 'zzzzzz'");
	check_error("tls:\n  cert: /a\n  crt: /b\n",
	            "3:3: unknown key 'tls.crt'; did you mean 'tls.cert'?");
	check_error("tsl:\n  cert: /a\n", "1:1: unknown key 'tsl'; did you mean 'tls'?");
	check_error("workers: 1\nworkers: 2\n", "2:1: duplicate key 'workers' (first at line 1)");
	check_error("tls:\n  cert: /a\ntls:\n  key: /b\n",
	            "3:1: duplicate key 'tls' (first at line 1)");
	check_error("tls:\n  cert: /a\ntls.cert: /b\n",
	            "3:1: duplicate key 'tls.cert' (first at line 2)");
	check_error("? [a]\n: 1\n", "1:3: keys must be scalars, not a sequence");
	check_error("\"work\\0ers\": 1\n", "1:1: key 'work\\x00ers' contains a NUL byte");
}

static void test_errors_values(void **state)
{
	check_error("listen: 127.0.0.1:1\n"
	            "workers: 2\n"
	            "verbose: true\n"
	            "peers: [a]\n"
	            "max_frame_bytes: 0\n",
	            "5:18: 'max_frame_bytes': 0 is below the minimum 1KiB");
	check_error("max_frame_bytes: 2GiB\n",
	            "1:18: 'max_frame_bytes': 2GiB is above the maximum 1GiB");
	check_error("max_frame_bytes: 99999999999999999999GiB\n",
	            "1:18: 'max_frame_bytes': '99999999999999999999GiB' is too large");
	check_error("max_frame_bytes: 16777216TiB\n",
	            "1:18: 'max_frame_bytes': '16777216TiB' is too large");
	check_error("max_frame_bytes: 12 parsecs\n",
	            "1:18: 'max_frame_bytes': expected a size like 512, 64KiB, 16MiB or 10GB, "
	            "got '12 parsecs'");
	check_error("workers: 65\n", "1:10: 'workers': 65 is above the maximum 64");
	check_error("workers: 0\n", "1:10: 'workers': 0 is below the minimum 1");
	check_error("workers: -1\n", "1:10: 'workers': expected a non-negative integer, got '-1'");
	check_error("workers: 18446744073709551616\n",
	            "1:10: 'workers': '18446744073709551616' is too large");
	check_error("workers:\n", "1:9: 'workers': missing value");
	check_error("heartbeat: 50ms\n", "1:12: 'heartbeat': 50ms is below the minimum 100ms");
	check_error("heartbeat: 2h\n", "1:12: 'heartbeat': 2h is above the maximum 1h");
	check_error("heartbeat: 10x\n", "1:12: 'heartbeat': expected a duration like 250ms, "
	                                "10s, 5m, 2h or 7d, got '10x'");
	check_error("admin: localhost\n", "1:8: 'admin': expected HOST:PORT, got 'localhost'");
	check_error("admin: \"::1:80\"\n", "1:8: 'admin': expected HOST:PORT, got '::1:80'");
	check_error("admin: \"[zz]:80\"\n", "1:8: 'admin': expected HOST:PORT, got '[zz]:80'");
	check_error("admin: \":80\"\n", "1:8: 'admin': expected HOST:PORT, got ':80'");
	check_error("admin: h:0\n", "1:8: 'admin': port must be 1..65535, got 'h:0'");
	check_error("admin: \"[::1]:65536\"\n",
	            "1:8: 'admin': port must be 1..65535, got '[::1]:65536'");
	check_error("verbose: maybe\n", "1:10: 'verbose': expected true or false, got 'maybe'");
	check_error("log_level: verbose\n", "1:12: 'log_level': expected one of debug, info, "
	                                    "warn, error; got 'verbose'");
	check_error("data_dir: \"\"\n", "1:11: 'data_dir': expected a path, got an empty string");
	check_error("cluster_name: \"a\\0b\"\n", "1:15: 'cluster_name': value contains a NUL byte");
	check_error("peers: a,,b\n", "1:8: 'peers': empty item in the list");
	check_error("peers: [a, '']\n", "1:12: 'peers': empty list item");
	check_error("peers:\n  - a\n  - [b]\n", "3:5: 'peers': list items must be scalars, not a "
	                                        "sequence");
	check_error("peers: {a: 1}\n", "1:8: 'peers': expected a scalar or a list of scalars, got "
	                               "a mapping");
	/* a long value is cut in the message */
	check_error(
	    "admin: "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "\n",
	    "1:8: 'admin': expected HOST:PORT, got "
	    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");
}

static void test_errors_structure(void **state)
{
	check_error("listen:\n  - a\n", "2:3: 'listen': expected a scalar, got a sequence");
	check_error("listen: [a, b]\n", "1:9: 'listen': expected a scalar, got a sequence");
	check_error("workers: {a: 1}\n", "1:10: 'workers': expected a scalar, got a mapping");
	check_error("tls: yes\n", "1:6: 'tls' is a section: expected a mapping, got a scalar");
	check_error("- a\n- b\n", "1:1: expected a mapping of options, got a sequence");
	check_error("hello\n", "1:1: expected a mapping of options, got a scalar");
	check_error("workers: 1\n---\nworkers: 2\n", "2:1: more than one YAML document");
	check_error("listen: &x 127.0.0.1:1\nadmin: x:2\n", "1:9: anchors (&x) are not supported");
	check_error("admin: *x\n", "1:8: aliases (*x) are not supported");
	check_error("tls: &t\n  cert: /a\n", "1:6: anchors (&t) are not supported");
}

static void test_errors_syntax(void **state)
{
	check_error("workers: 1\nworkers 2\n",
	            "3:1: could not find expected ':' (while scanning a simple key at line 2, "
	            "column 1)");
	check_error("listen: \"abc\n",
	            "2:1: found unexpected end of stream (while scanning a quoted scalar at line "
	            "1, column 9)");
	check_error("\tworkers: 1\n", "1:1: found character that cannot start any token (while "
	                              "scanning for the next token); tabs are not allowed in YAML "
	                              "indentation");
	check_error("tls:\n  cert: /a\n key: /b\n",
	            "3:2: did not find expected key (while parsing a block mapping at line 1, "
	            "column 1)");
	check_error("cluster_name: \xff\n", "1:15: invalid leading UTF-8 octet (0xff)");
	check_error("workers: 1\ncluster_name: ok\xc3(\n",
	            "2:18: invalid trailing UTF-8 octet (0x28)");
}

static void test_errors_files(void **state)
{
	struct testcfg c, before;
	char path[256], *err = NULL, *want = NULL;
	char *big;

	fresh(&c);
	memcpy(&before, &c, sizeof(c));

	snprintf(path, sizeof(path), "%s/missing.yaml", tmpdir);
	assert_int_equal(config_load_file(table, &c, path, &err), -ENOENT);
	assert_true(asprintf(&want, "%s: No such file or directory", path) > 0);
	assert_string_equal(err, want);
	free(err);
	free(want);

	assert_int_equal(config_load_file(table, &c, tmpdir, &err), -EISDIR);
	assert_true(asprintf(&want, "%s: Is a directory", tmpdir) > 0);
	assert_string_equal(err, want);
	free(err);
	free(want);

	if (geteuid() != 0) {
		/* root reads anything */
		write_file(conf_path, "workers: 2\n", 11);
		assert_int_equal(chmod(conf_path, 0), 0);
		assert_int_equal(config_load_file(table, &c, conf_path, &err), -EACCES);
		assert_true(asprintf(&want, "%s: Permission denied", conf_path) > 0);
		assert_string_equal(err, want);
		free(err);
		free(want);
		assert_int_equal(chmod(conf_path, 0600), 0);
	}

	/* Exactly the limit is fine; one byte more is refused unparsed. */
	big = malloc(CONFIG_MAX_FILE_BYTES + 1);
	assert_non_null(big);
	memset(big, '#', CONFIG_MAX_FILE_BYTES + 1);
	for (size_t i = 99; i < CONFIG_MAX_FILE_BYTES + 1; i += 100)
		big[i] = '\n';
	write_file(conf_path, big, CONFIG_MAX_FILE_BYTES);
	assert_int_equal(config_load_file(table, &c, conf_path, &err), 0);
	memcpy(&before, &c, sizeof(c)); /* a successful load moves the strings */
	write_file(conf_path, big, CONFIG_MAX_FILE_BYTES + 1);
	assert_int_equal(config_load_file(table, &c, conf_path, &err), -EFBIG);
	assert_true(asprintf(&want, "%s: larger than 1048576 bytes", conf_path) > 0);
	assert_string_equal(err, want);
	free(err);
	free(want);
	assert_int_equal(config_load_buffer(table, &c, "buf", big, CONFIG_MAX_FILE_BYTES + 1, &err),
	                 -EFBIG);
	assert_string_equal(err, "buf: larger than 1048576 bytes");
	free(err);
	free(big);

	/* ret_err may be NULL */
	assert_int_equal(config_load_buffer(table, &c, "buf", "x: 1", 4, NULL), -EINVAL);
	assert_memory_equal(&c, &before, sizeof(c));
	config_free(table, &c);
}

/* A table nine levels deep, to reach the nesting limit. */
struct deepcfg {
	uint64_t eight;
	uint64_t nine;
};
static const struct config_option deep_table[] = {
    {.name = "a.b.c.d.e.f.g.x", .type = CONFIG_UINT, .offset = offsetof(struct deepcfg, eight)},
    {.name = "a.b.c.d.e.f.g.h.i", .type = CONFIG_UINT, .offset = offsetof(struct deepcfg, nine)},
    {.name = NULL},
};

static void test_nesting_limit(void **state)
{
	struct deepcfg d = {0};
	char *err = NULL;
	const char *ok = "a: {b: {c: {d: {e: {f: {g: {x: 8}}}}}}}";
	const char *deep = "a:\n b:\n  c:\n   d:\n    e:\n     f:\n      g:\n       h:\n"
	                   "        i: 9\n";

	assert_int_equal(config_load_buffer(deep_table, &d, "deep.yaml", ok, strlen(ok), &err), 0);
	assert_int_equal(d.eight, 8);
	assert_int_equal(config_load_buffer(deep_table, &d, "deep.yaml", deep, strlen(deep), &err),
	                 -EINVAL);
	assert_string_equal(err, "deep.yaml:9:9: 'a.b.c.d.e.f.g.h': nesting deeper than 8 levels");
	free(err);
	assert_int_equal(d.nine, 0);
	/* the same option as a dotted key is fine: depth counts mappings */
	assert_int_equal(
	    config_load_buffer(deep_table, &d, "deep.yaml", "a.b.c.d.e.f.g.h.i: 9", 20, &err), 0);
	assert_int_equal(d.nine, 9);

	/* printing stays within the limit, and loads back */
	{
		char *text = print_to_string(deep_table, &d), *err2 = NULL;
		struct deepcfg back = {0};
		assert_non_null(strstr(text, "\n              x: 8\n"));
		assert_non_null(strstr(text, "\n              h.i: 9\n"));
		assert_int_equal(
		    config_load_buffer(deep_table, &back, "printed", text, strlen(text), &err2), 0);
		assert_int_equal(back.eight, 8);
		assert_int_equal(back.nine, 9);
		free(text);
	}
}

static void test_set(void **state)
{
	struct testcfg c;
	char *err = NULL;
	char *old;

	fresh(&c);
	assert_int_equal(config_set(table, &c, "listen", "0.0.0.0:7400", &err), 0);
	assert_string_equal(c.listen, "0.0.0.0:7400");
	assert_int_equal(config_set(table, &c, "max-frame-bytes", "1MB", &err), 0);
	assert_int_equal(c.max_frame_bytes, 1000000);
	assert_int_equal(config_set(table, &c, "tls.cert", "/c.pem", &err), 0);
	assert_string_equal(c.tls_cert, "/c.pem");
	assert_int_equal(config_set(table, &c, "log_retention.max-age", "90m", &err), 0);
	assert_int_equal(c.lr_max_age, 90 * 60000);
	assert_int_equal(config_set(table, &c, "peers", "x,y", &err), 0);
	assert_int_equal(c.peers.n, 2);
	assert_int_equal(config_set(table, &c, "peers", "", &err), 0);
	assert_int_equal(c.peers.n, 0);
	assert_int_equal(config_set(table, &c, "verbose", "ON", &err), 0);
	assert_true(c.verbose);
	assert_int_equal(config_set(table, &c, "cluster_name", "", &err), 0);
	assert_string_equal(c.cluster_name, "");
	assert_null(err);

	old = c.listen;
	assert_int_equal(config_set(table, &c, "listen", "x", &err), -EINVAL);
	assert_string_equal(err, "'listen': expected HOST:PORT, got 'x'");
	free(err);
	assert_ptr_equal(c.listen, old);
	assert_string_equal(c.listen, "0.0.0.0:7400");

	assert_int_equal(config_set(table, &c, "lissten", "x:1", &err), -ENOENT);
	assert_string_equal(err, "unknown option 'lissten'; did you mean 'listen'?");
	free(err);
	assert_int_equal(config_set(table, &c, "tls", "x", &err), -ENOENT);
	assert_string_equal(err, "unknown option 'tls'");
	free(err);
	assert_int_equal(config_set(table, &c, "workers", "100", &err), -EINVAL);
	assert_string_equal(err, "'workers': 100 is above the maximum 64");
	free(err);
	assert_int_equal(config_set(table, &c, "cluster_name", "\xc3(", &err), -EINVAL);
	assert_string_equal(err, "'cluster_name': value is not valid UTF-8");
	free(err);
	assert_int_equal(c.workers, 4);

	assert_ptr_equal(config_find(table, "tls.key"), &table[11]);
	assert_null(config_find(table, "tls"));
	assert_null(config_find(table, "max-frame-bytes"));
	config_free(table, &c);
}

static void assert_same(const struct testcfg *a, const struct testcfg *b)
{
#define SAME_STR(f)                                                                                \
	do {                                                                                       \
		if (a->f == NULL || b->f == NULL)                                                  \
			assert_ptr_equal(a->f, b->f);                                              \
		else                                                                               \
			assert_string_equal(a->f, b->f);                                           \
	} while (0)
	SAME_STR(listen);
	SAME_STR(admin);
	SAME_STR(data_dir);
	SAME_STR(cluster_name);
	SAME_STR(tls_cert);
	SAME_STR(tls_key);
	assert_int_equal(a->workers, b->workers);
	assert_int_equal(a->max_frame_bytes, b->max_frame_bytes);
	assert_int_equal(a->heartbeat, b->heartbeat);
	assert_int_equal(a->verbose, b->verbose);
	assert_int_equal(a->log_level, b->log_level);
	assert_int_equal(a->tls_verify, b->tls_verify);
	assert_int_equal(a->lr_max_versions, b->lr_max_versions);
	assert_int_equal(a->lr_max_age, b->lr_max_age);
	assert_int_equal(a->peers.n, b->peers.n);
	for (size_t i = 0; i < a->peers.n; i++)
		assert_string_equal(a->peers.items[i], b->peers.items[i]);
#undef SAME_STR
}

/* Prints, loads the print into a struct whose values all differ, and checks
 * that everything came back and that printing again gives the same text. */
static void round_trip(const struct testcfg *c)
{
	struct testcfg back;
	char *text, *again, *err = NULL;

	text = print_to_string(table, c);
	memset(&back, 0, sizeof(back));
	config_defaults(table, &back);
	assert_int_equal(config_set(table, &back, "admin", "other:1", NULL), 0);
	assert_int_equal(config_set(table, &back, "peers", "p,q,r,s,t", NULL), 0);
	assert_int_equal(config_set(table, &back, "tls.cert", "/other", NULL), 0);
	if (config_load_buffer(table, &back, "printed", text, strlen(text), &err) != 0)
		fail_msg("printed config does not load: %s\n%s", err, text);
	assert_same(c, &back);
	again = print_to_string(table, &back);
	assert_string_equal(text, again);
	free(text);
	free(again);
	config_free(table, &back);
}

static void test_print_round_trip(void **state)
{
	struct testcfg c;
	char *text;
	static const char *const tricky[] = {
	    "plain",
	    "",
	    "~",
	    "null",
	    "NULL",
	    "yes",
	    "123",
	    "with space",
	    " leading",
	    "trailing ",
	    "quote\"s and \\back",
	    "it's",
	    "#comment",
	    "a #b",
	    "a: b",
	    "x:",
	    "- dash",
	    "[flow]",
	    "{map}",
	    "&anchor",
	    "*alias",
	    "!tag",
	    "%dir",
	    "@at",
	    "`tick",
	    "|block",
	    ">fold",
	    "...",
	    "---",
	    "line\nbreak",
	    "tab\there",
	    "cr\rlf",
	    "bell\a",
	    "del\x7f",
	    "caf\xc3\xa9",
	    "nel\xc2\x85x",
	    "ls\xe2\x80\xa8x",
	    "bom\xef\xbb\xbfx",
	    "emoji \xf0\x9f\x98\x80",
	    "/path/with:colon",
	    "a,b",
	};

	fresh(&c);
	round_trip(&c);

	text = print_to_string(table, &c);
	/* sections once, nested, help as comments */
	assert_non_null(strstr(text, "# Where mirrors and clients connect.\nlisten: "
	                             "127.0.0.1:7300\n"));
	assert_non_null(strstr(text, "tls:\n  # Certificate chain (PEM).\n  cert: ~\n  key: ~\n"
	                             "  verify: true\n"));
	assert_null(strstr(strstr(text, "tls:") + 1, "tls:"));
	assert_non_null(strstr(text, "# Admin HTTP listener.\n# Off when unset.\nadmin: ~\n"));
	assert_non_null(strstr(text, "max_frame_bytes: 16MiB\n"));
	assert_non_null(strstr(text, "heartbeat: 1s\n"));
	assert_non_null(strstr(text, "log_retention:\n  max_versions: 100000\n  max_age: 7d\n"));
	assert_non_null(strstr(text, "peers: []\n"));
	assert_non_null(strstr(text, "log_level: info\n"));
	free(text);

	for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
		char list[256];
		assert_int_equal(config_set(table, &c, "cluster_name", tricky[i], NULL), 0);
		if (tricky[i][0] && !strchr(tricky[i], ','))
			assert_int_equal(config_set(table, &c, "tls.key", tricky[i], NULL), 0);
		snprintf(list, sizeof(list), "one,%s", strchr(tricky[i], ',') ? "x" : tricky[i]);
		if (tricky[i][0] && tricky[i][0] != ' ' && tricky[i][strlen(tricky[i]) - 1] != ' ')
			assert_int_equal(config_set(table, &c, "peers", list, NULL), 0);
		round_trip(&c);
	}

	/* libyaml folds a raw NEL to a space, and YAML 1.1 readers treat LS and
	 * PS as line breaks: all are escaped */
	assert_int_equal(config_set(table, &c, "cluster_name",
	                            "a\xc2\x85\xe2\x80\xa8\xe2\x80\xa9"
	                            "b",
	                            NULL),
	                 0);
	text = print_to_string(table, &c);
	assert_non_null(strstr(text, "cluster_name: \"a\\x85\\u2028\\u2029b\"\n"));
	free(text);

	assert_int_equal(config_set(table, &c, "listen", "[fe80::1%eth0]:7300", NULL), 0);
	assert_int_equal(config_set(table, &c, "max_frame_bytes", "2000000", NULL), 0);
	assert_int_equal(config_set(table, &c, "heartbeat", "1500ms", NULL), 0);
	assert_int_equal(config_set(table, &c, "lr_max_age", "90s", NULL), -ENOENT);
	assert_int_equal(config_set(table, &c, "log_retention.max_age", "90s", NULL), 0);
	assert_int_equal(config_set(table, &c, "verbose", "true", NULL), 0);
	assert_int_equal(config_set(table, &c, "log_level", "error", NULL), 0);
	round_trip(&c);
	text = print_to_string(table, &c);
	assert_non_null(strstr(text, "listen: \"[fe80::1%eth0]:7300\"\n"));
	assert_non_null(strstr(text, "max_frame_bytes: 2MB\n"));
	assert_non_null(strstr(text, "heartbeat: 1500ms\n"));
	assert_non_null(strstr(text, "  max_age: 90s\n"));
	free(text);
	config_free(table, &c);
}

static void test_copy_and_free(void **state)
{
	struct testcfg a, b;

	fresh(&a);
	assert_int_equal(config_set(table, &a, "peers", "x,y,z,w,v", NULL), 0);
	memset(&b, 0, sizeof(b));
	assert_int_equal(config_copy(table, &b, &a), 0);
	assert_same(&a, &b);
	assert_ptr_not_equal(a.listen, b.listen);
	assert_ptr_not_equal(a.peers.items, b.peers.items);
	assert_ptr_not_equal(a.peers.items[0], b.peers.items[0]);
	assert_int_equal(b.unrelated, 0);
	config_free(table, &a);
	assert_null(a.listen);
	assert_null(a.peers.items);
	assert_int_equal(a.peers.n, 0);
	/* b survives a's death */
	assert_string_equal(b.peers.items[4], "v");
	config_free(table, &b);
	config_free(table, &b);
	config_free(table, NULL);
	config_free(NULL, &b);
}

static void test_failed_reload_keeps_old(void **state)
{
	struct testcfg c;
	char *err = NULL;

	fresh(&c);
	assert_int_equal(load_yaml(&c, "workers: 8\npeers: [a, b]\n", &err), 0);
	/* the bad file sets several things before its error */
	assert_int_equal(
	    load_yaml(&c, "workers: 9\npeers: [c]\nlisten: 1.2.3.4:5\nadmin: bad\n", &err),
	    -EINVAL);
	free(err);
	assert_int_equal(c.workers, 8);
	assert_int_equal(c.peers.n, 2);
	assert_string_equal(c.listen, "127.0.0.1:7300");
	config_free(table, &c);
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		int r;
		uint64_t ms;
	} cases[] = {
	    {"250ms", 0, 250},
	    {"10s", 0, 10000},
	    {"5m", 0, 300000},
	    {"2h", 0, 7200000},
	    {"7d", 0, 604800000},
	    {"30", 0, 30000},
	    {"0", 0, 0},
	    {"0ms", 0, 0},
	    {"10 s", 0, 10000},
	    {"18446744073709551615ms", 0, UINT64_MAX},
	    {"18446744073709552s", -ERANGE, 0},
	    {"18446744073709551616ms", -ERANGE, 0},
	    {"99999999999999999999d", -ERANGE, 0},
	    {"99999999999999999999x", -EINVAL, 0},
	    {"", -EINVAL, 0},
	    {"s", -EINVAL, 0},
	    {"-1s", -EINVAL, 0},
	    {"+1s", -EINVAL, 0},
	    {"1.5s", -EINVAL, 0},
	    {"1S", -EINVAL, 0},
	    {"1w", -EINVAL, 0},
	    {"1h30m", -EINVAL, 0},
	    {" 1s", -EINVAL, 0},
	    {"1s ", -EINVAL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 12345;
		int r = units_parse_duration(cases[i].s, &ms);
		if (r != cases[i].r)
			fail_msg("'%s': got %d, want %d", cases[i].s, r, cases[i].r);
		assert_int_equal(ms, r == 0 ? cases[i].ms : 12345);
	}
	assert_int_equal(units_parse_duration(NULL, NULL), -EINVAL);
}

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		int r;
		uint64_t bytes;
	} cases[] = {
	    {"512", 0, 512},
	    {"512B", 0, 512},
	    {"64KiB", 0, 65536},
	    {"16MiB", 0, 16ULL << 20},
	    {"1GiB", 0, 1ULL << 30},
	    {"1Gi", 0, 1ULL << 30},
	    {"10MB", 0, 10000000},
	    {"1G", 0, 1000000000},
	    {"1gb", 0, 1000000000},
	    {"2k", 0, 2000},
	    {"3TiB", 0, 3ULL << 40},
	    {"1PB", 0, 1000000000000000ULL},
	    {"16 MiB", 0, 16ULL << 20},
	    {"0", 0, 0},
	    {"18446744073709551615", 0, UINT64_MAX},
	    {"16383PiB", 0, 16383ULL << 50},
	    {"16384PiB", -ERANGE, 0},
	    {"18446744073709551616", -ERANGE, 0},
	    {"99999999999999999999GiB", -ERANGE, 0},
	    {"99999999999999999999XiB", -EINVAL, 0},
	    {"", -EINVAL, 0},
	    {"GiB", -EINVAL, 0},
	    {"1.5GiB", -EINVAL, 0},
	    {"-1", -EINVAL, 0},
	    {"1EiB", -EINVAL, 0},
	    {"1 0", -EINVAL, 0},
	    {"0x10", -EINVAL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t b = 12345;
		int r = units_parse_size(cases[i].s, &b);
		if (r != cases[i].r)
			fail_msg("'%s': got %d, want %d", cases[i].s, r, cases[i].r);
		assert_int_equal(b, r == 0 ? cases[i].bytes : 12345);
	}
}

static void test_format(void **state)
{
	char buf[32];

	units_format_size(0, buf, sizeof(buf));
	assert_string_equal(buf, "0");
	units_format_size(1023, buf, sizeof(buf));
	assert_string_equal(buf, "1023");
	units_format_size(1024, buf, sizeof(buf));
	assert_string_equal(buf, "1KiB");
	units_format_size(10000000, buf, sizeof(buf));
	assert_string_equal(buf, "10MB");
	units_format_size(3ULL << 40, buf, sizeof(buf));
	assert_string_equal(buf, "3TiB");
	units_format_size(UINT64_MAX, buf, sizeof(buf));
	assert_string_equal(buf, "18446744073709551615");
	units_format_duration(0, buf, sizeof(buf));
	assert_string_equal(buf, "0s");
	units_format_duration(1, buf, sizeof(buf));
	assert_string_equal(buf, "1ms");
	units_format_duration(61000, buf, sizeof(buf));
	assert_string_equal(buf, "61s");
	units_format_duration(3600000, buf, sizeof(buf));
	assert_string_equal(buf, "1h");
	units_format_duration(2 * 86400000ULL, buf, sizeof(buf));
	assert_string_equal(buf, "2d");
}

static void test_parse_hostport(void **state)
{
	char host[64];
	uint16_t port = 0;

	assert_int_equal(units_parse_hostport("example.com:443", host, sizeof(host), &port), 0);
	assert_string_equal(host, "example.com");
	assert_int_equal(port, 443);
	assert_int_equal(units_parse_hostport("[::1]:7300", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 7300);
	assert_int_equal(units_parse_hostport("[fe80::1%eth0]:1", host, sizeof(host), &port), 0);
	assert_string_equal(host, "fe80::1%eth0");
	assert_int_equal(units_parse_hostport("[::ffff:1.2.3.4]:65535", host, sizeof(host), &port),
	                 0);
	assert_int_equal(port, 65535);
	assert_int_equal(units_parse_hostport("10.0.0.1:1", NULL, 0, NULL), 0);

	strcpy(host, "unchanged");
	port = 7;
	assert_int_equal(units_parse_hostport("h:0", host, sizeof(host), &port), -ERANGE);
	assert_int_equal(units_parse_hostport("h:65536", host, sizeof(host), &port), -ERANGE);
	assert_int_equal(units_parse_hostport("h:99999999999999999999", host, sizeof(host), &port),
	                 -ERANGE);
	assert_int_equal(units_parse_hostport("localhost", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport(":80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("h:", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("h:8x", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("h:+80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("::1:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("[::1]80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("[]:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("[1.2.3.4]:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("[::1%]:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("a b:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(units_parse_hostport("example.com:443", host, 11, &port), -ENAMETOOLONG);
	assert_string_equal(host, "unchanged");
	assert_int_equal(port, 7);
}

static void test_bad_default_is_fatal(void **state)
{
	static const struct config_option bad[] = {
	    {OPT("workers", CONFIG_UINT, workers), .min = 1, .default_value = "0"},
	    {.name = NULL},
	};
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct testcfg c = {0};
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 2);
		config_defaults(bad, &c);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_load_every_type),
	    cmocka_unit_test(test_empty_files_keep_defaults),
	    cmocka_unit_test(test_errors_keys),
	    cmocka_unit_test(test_errors_values),
	    cmocka_unit_test(test_errors_structure),
	    cmocka_unit_test(test_errors_syntax),
	    cmocka_unit_test(test_errors_files),
	    cmocka_unit_test(test_nesting_limit),
	    cmocka_unit_test(test_set),
	    cmocka_unit_test(test_print_round_trip),
	    cmocka_unit_test(test_copy_and_free),
	    cmocka_unit_test(test_failed_reload_keeps_old),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_parse_hostport),
	    cmocka_unit_test(test_bad_default_is_fatal),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
