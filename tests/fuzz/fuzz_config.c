/* libFuzzer target for the YAML config loader, with a round-trip oracle:
 * whatever loads must print as YAML that loads back to text-identical output,
 * and a failed load must leave the target untouched.
 *
 * tests/fuzz/run-fuzzers builds and runs it with libFuzzer; by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -I common/daemon -I common/base -I build-config tests/fuzz/fuzz_config.c \
 *     common/daemon/config.c common/base/log.c -lyaml -o fuzz_config
 *   ./fuzz_config -max_total_time=60 CORPUS_DIR
 * Linked with replay_main.c it is a plain program replaying the files it is
 * given, for the ordinary test suite. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct fuzzcfg {
	char *listen;
	char *admin;
	char *data_dir;
	char *name;
	uint64_t workers;
	uint64_t max_frame;
	uint64_t heartbeat;
	bool verbose;
	unsigned level;
	struct config_strlist peers;
	char *tls_cert;
	bool tls_verify;
	uint64_t max_versions;
	uint64_t max_age;
	uint64_t deep;
	struct config_strlist deep_list;
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(n, t, f) .name = n, .type = t, .offset = offsetof(struct fuzzcfg, f)
static const struct config_option table[] = {
    {OPT("listen", CONFIG_HOSTPORT, listen), .default_value = "127.0.0.1:7300"},
    {OPT("tls.cert", CONFIG_PATH, tls_cert), .help = "PEM"},
    {OPT("admin", CONFIG_HOSTPORT, admin)},
    {OPT("data_dir", CONFIG_PATH, data_dir), .default_value = "/var/lib/mp"},
    {OPT("name", CONFIG_STRING, name), .default_value = "default"},
    {OPT("workers", CONFIG_UINT, workers), .min = 1, .max = 64, .default_value = "4"},
    {OPT("max_frame_bytes", CONFIG_SIZE, max_frame), .min = 1024, .default_value = "16MiB"},
    {OPT("heartbeat", CONFIG_DURATION, heartbeat), .max = 3600000, .default_value = "1s"},
    {OPT("verbose", CONFIG_BOOL, verbose)},
    {OPT("log_level", CONFIG_ENUM, level), .default_value = "info", .choices = levels},
    {OPT("peers", CONFIG_STRLIST, peers)},
    {OPT("tls.verify", CONFIG_BOOL, tls_verify), .default_value = "true"},
    {OPT("log_retention.max_versions", CONFIG_UINT, max_versions)},
    {OPT("log_retention.max_age", CONFIG_DURATION, max_age)},
    {OPT("a.b.c.d.e.f.g.h.i", CONFIG_UINT, deep)},
    {OPT("a.b.c.d.e.f.g.list", CONFIG_STRLIST, deep_list)},
    {.name = NULL},
};
#define NOPTS (sizeof(table) / sizeof(table[0]) - 1)

static char *print(const struct fuzzcfg *c, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (!f)
		abort();
	config_print(table, c, f);
	if (fclose(f) != 0)
		abort();
	return buf;
}

static void round_trip(const struct fuzzcfg *c)
{
	struct fuzzcfg back;
	size_t len, len2;
	char *text = print(c, &len), *again, *err = NULL;

	memset(&back, 0, sizeof(back));
	if (config_load_buffer(table, &back, "printed", text, len, &err) != 0) {
		fprintf(stderr, "printed config does not load: %s\n%s\n", err, text);
		abort();
	}
	again = print(&back, &len2);
	if (len != len2 || memcmp(text, again, len) != 0) {
		fprintf(stderr, "round trip differs:\n%s\n----\n%s\n", text, again);
		abort();
	}
	free(text);
	free(again);
	config_free(table, &back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzzcfg c, before;
	char *err = NULL, *s;
	int r;

	memset(&c, 0, sizeof(c));
	config_defaults(table, &c);
	memcpy(&before, &c, sizeof(c));
	r = config_load_buffer(table, &c, "fuzz.yaml", data, size, &err);
	if (r == 0) {
		round_trip(&c);
	} else {
		if (r != -ENOMEM && (!err || strncmp(err, "fuzz.yaml", 9) != 0))
			abort();
		if (memcmp(&c, &before, sizeof(c)) != 0)
			abort();
	}
	free(err);
	err = NULL;

	/* The same bytes as a command-line override of the option that the
	 * first byte picks, and through the value parsers. */
	if (size > 0 && (s = strndup((const char *)data + 1, size - 1))) {
		uint64_t v;
		uint16_t port;
		char host[256];

		if (config_set(table, &c, table[data[0] % NOPTS].name, s, &err) == 0)
			round_trip(&c);
		free(err);
		units_parse_duration(s, &v);
		units_parse_size(s, &v);
		units_parse_hostport(s, host, sizeof(host), &port);
		free(s);
	}
	config_free(table, &c);
	return 0;
}
