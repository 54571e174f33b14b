/* mp-cache's command line. Its configuration is the site configuration
 * clients use (bucket aliases with endpoints and credentials, the site's
 * mirrors), with the node's own options under cache.*, so one file serves
 * both. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <yaml.h>

#include "cachenode.h"
#include "log.h"
#include "mpconfig.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: mp-cache [-c FILE] [-n] --site NAME --mirror HOST:PORT[,...]\n"
	        "                --cache-dir DIR[:SIZE] [--cache-dir ...] [--listen HOST:PORT]\n"
	        "                [--admin HOST:PORT] [--weight N] [--block-size SIZE]\n"
	        "                [--parent HOST:PORT[,...]] [-o NAME=VALUE] [--log-level LEVEL]\n"
	        "\n"
	        "  -c, --config FILE     site configuration (YAML; cache.* options and buckets)\n"
	        "  -n, --check           check the configuration and exit\n"
	        "      --site NAME       this site's name\n"
	        "      --mirror L        the site's mirrors, to register with\n"
	        "      --cache-dir D     a block dir and its capacity (default: its file system)\n"
	        "      --listen H:P      block reads (default 127.0.0.1:7400)\n"
	        "      --admin H:P       admin HTTP (default 127.0.0.1:7480)\n"
	        "      --weight N        share of the group's blocks (default 100; 0 drains)\n"
	        "      --block-size S    1MiB..64MiB (default 4MiB)\n"
	        "      --parent L        the parent site's mirrors (misses ask its group first)\n"
	        "  -o NAME=VALUE         any option of the site configuration\n");
}

static int set(mp_config *cfg, const char *name, const char *value)
{
	mp_error err;
	int r = strcmp(name, "mirror") == 0 ? mp_config_add(cfg, name, value, &err)
	                                    : mp_config_set(cfg, name, value, &err);
	if (r < 0)
		fprintf(stderr, "mp-cache: %s\n", err.message);
	return r;
}

/* Where value stands in a YAML file (the first scalar holding it), as
 * "FILE:LINE:COL", so that a value checked after loading is reported like a
 * parse error; "" when it is not there (a flag). */
static void locate(const char *path, const char *value, char *out, size_t cap)
{
	out[0] = '\0';
	FILE *f = path ? fopen(path, "rb") : NULL;
	if (f == NULL)
		return;
	yaml_parser_t parser;
	yaml_event_t ev;
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return;
	}
	yaml_parser_set_input_file(&parser, f);
	for (bool done = false; !done && yaml_parser_parse(&parser, &ev);) {
		if (ev.type == YAML_SCALAR_EVENT &&
		    strstr((const char *)ev.data.scalar.value, value) != NULL) {
			snprintf(out, cap, "%s:%zu:%zu: ", path, ev.start_mark.line + 1,
			         ev.start_mark.column + 1);
			done = true;
		}
		if (ev.type == YAML_STREAM_END_EVENT)
			done = true;
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	fclose(f);
}

static int check(struct mp_config *cfg, const char *config_path)
{
	if (cfg->site == NULL || cfg->site[0] == '\0' || strlen(cfg->site) > 64) {
		fprintf(stderr, "mp-cache: site is required (1..64 characters): --site NAME or "
		                "site: NAME\n");
		return -EINVAL;
	}
	if (cfg->cache_dirs.n == 0) {
		fprintf(stderr, "mp-cache: at least one cache dir is required: --cache-dir "
		                "DIR[:SIZE] or cache.dirs\n");
		return -EINVAL;
	}
	if (cfg->cache_dirs.n > BLOCKSTORE_DIRS_MAX) {
		fprintf(stderr, "mp-cache: at most %d cache dirs\n", BLOCKSTORE_DIRS_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->cache_dirs.n; i++) {
		char *path = NULL, *why = NULL;
		uint64_t size;
		int r = cachenode_parse_dir(cfg->cache_dirs.items[i], &path, &size, &why);
		free(path);
		if (r < 0) {
			char where[PATH_MAX + 64];
			locate(config_path, cfg->cache_dirs.items[i], where, sizeof(where));
			fprintf(stderr, "mp-cache: %s%s\n", where, why ? why : "out of memory");
			free(why);
			return r;
		}
	}
	mp_client *c;
	mp_error err;
	if (mp_client_open(cfg, &c, &err) < 0) {
		fprintf(stderr, "mp-cache: %s\n", err.message);
		return -EINVAL;
	}
	mp_client_close(c);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},     {"check", no_argument, NULL, 'n'},
	    {"site", required_argument, NULL, 's'},       {"mirror", required_argument, NULL, 'm'},
	    {"cache-dir", required_argument, NULL, 'd'},  {"listen", required_argument, NULL, 'l'},
	    {"admin", required_argument, NULL, 'a'},      {"weight", required_argument, NULL, 'w'},
	    {"block-size", required_argument, NULL, 'b'}, {"parent", required_argument, NULL, 'p'},
	    {"log-level", required_argument, NULL, 'L'},  {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},          {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	bool check_only = false;
	/* Flags apply after the file: collect them first. */
	struct {
		const char *name, *value;
	} flags[64];
	int nflags = 0;
	char *dirs = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:no:hV", opts, NULL)) != -1) {
		const char *name = NULL;
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			check_only = true;
			break;
		case 's':
			name = "site";
			break;
		case 'm':
			name = "mirror";
			break;
		case 'd': {
			char *joined;
			if (asprintf(&joined, "%s%s%s", dirs ? dirs : "", dirs ? "," : "", optarg) <
			    0)
				return 1;
			free(dirs);
			dirs = joined;
			break;
		}
		case 'l':
			name = "cache.listen";
			break;
		case 'a':
			name = "cache.admin";
			break;
		case 'w':
			name = "cache.weight";
			break;
		case 'b':
			name = "cache.block_size";
			break;
		case 'p':
			name = "cache.parent";
			break;
		case 'L':
			name = "cache.log_level";
			break;
		case 'o': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL) {
				fprintf(stderr, "mp-cache: -o wants NAME=VALUE, got '%s'\n",
				        optarg);
				return 2;
			}
			*eq = '\0';
			if (nflags < 64)
				flags[nflags++].name = optarg, flags[nflags - 1].value = eq + 1;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("mp-cache %s\n", MP_VERSION_STRING);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (name != NULL && nflags < 64) {
			flags[nflags].name = name;
			flags[nflags++].value = optarg;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mp-cache: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	mp_config *cfg;
	mp_error err;
	if (mp_config_new(&cfg, &err) < 0) {
		fprintf(stderr, "mp-cache: %s\n", err.message);
		return 1;
	}
	int rc = 1;
	if (config != NULL && mp_config_load(cfg, config, &err) < 0) {
		fprintf(stderr, "mp-cache: %s\n", err.message);
		goto out;
	}
	for (int i = 0; i < nflags; i++)
		if (set(cfg, flags[i].name, flags[i].value) < 0)
			goto out;
	if (dirs != NULL && set(cfg, "cache.dirs", dirs) < 0)
		goto out;
	if (check(cfg, config) < 0)
		goto out;
	if (check_only) {
		printf("configuration OK\n");
		rc = 0;
		goto out;
	}
	log_set_prefix("mp-cache");
	struct cachenode node;
	memset(&node, 0, sizeof(node));
	node.cfg = cfg;
	node.config_path = config;
	rc = cachenode_run(&node);
out:
	free(dirs);
	mp_config_free(cfg);
	return rc;
}
