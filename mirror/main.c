/* mp-mirror's command line: run a site's replica, or check its
 * configuration (-n). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "mirror.h"
#include "mpconfig.h"

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: mp-mirror [-c FILE] [-n] --site NAME [--upstream HOST:PORT[,HOST:PORT...]]\n"
	    "                 [--data-dir DIR] [--listen HOST:PORT] [--admin HOST:PORT]\n"
	    "                 [--log-level LEVEL] [--print-config]\n"
	    "\n"
	    "  -c, --config FILE   YAML configuration (deploy/config/mirror.yaml)\n"
	    "  -n, --check         check the configuration and exit\n"
	    "      --site NAME     this site's name\n"
	    "      --upstream L    the primary or another mirror, in order of preference\n"
	    "      --data-dir DIR  journal and snapshots (default var/mirror-SITE)\n"
	    "      --listen H:P    client address (default 127.0.0.1:7200)\n"
	    "      --admin H:P     admin HTTP address (default 127.0.0.1:7280)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},   {"check", no_argument, NULL, 'n'},
	    {"site", required_argument, NULL, 's'},     {"upstream", required_argument, NULL, 'u'},
	    {"data-dir", required_argument, NULL, 'd'}, {"listen", required_argument, NULL, 'l'},
	    {"admin", required_argument, NULL, 'a'},    {"log-level", required_argument, NULL, 'L'},
	    {"print-config", no_argument, NULL, 'P'},   {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},        {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	bool check = false, print = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:nhV", opts, NULL)) != -1) {
		const char *name = NULL;
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'n':
			check = true;
			break;
		case 'P':
			print = true;
			break;
		case 's':
			name = "site";
			break;
		case 'u':
			name = "upstream";
			break;
		case 'd':
			name = "data_dir";
			break;
		case 'l':
			name = "listen";
			break;
		case 'a':
			name = "admin";
			break;
		case 'L':
			name = "log_level";
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("mp-mirror %s\n", MP_VERSION_STRING);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (name != NULL && mirror_config_override(name, optarg) < 0) {
			fprintf(stderr, "mp-mirror: too many options\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mp-mirror: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	struct mirror_config cfg;
	char *err = NULL;
	if (mirror_config_load(config, &cfg, &err) < 0) {
		fprintf(stderr, "mp-mirror: %s\n", err ? err : "configuration error");
		free(err);
		return 1;
	}
	if (check || print) {
		mirror_config_check_or_print(&cfg, print);
		mirror_config_free(&cfg);
		return 0;
	}
	int r = mirror_run(&cfg, config);
	mirror_config_free(&cfg);
	return r;
}
