/* mp-primary's command line: run the daemon, check a configuration (-n), or
 * make tokens (token create). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpconfig.h"
#include "primary.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: mp-primary [-c FILE] [-n] [--data-dir DIR] [--store URL]\n"
	        "                  [--listen HOST:PORT] [--admin HOST:PORT] [--log-level LEVEL]\n"
	        "       mp-primary token create --site NAME [-c FILE | --secret-file F]\n"
	        "       mp-primary token create --client NAME [--subtree /PATH]\n"
	        "                  [--read-only | --read-write] [--expires DURATION]\n"
	        "                  [-c FILE | --secret-file F]\n"
	        "       mp-primary --print-config [-c FILE]\n"
	        "\n"
	        "  -c, --config FILE    YAML configuration\n"
	        "  -n, --check          check the configuration and exit\n"
	        "      --data-dir DIR   directory of the embedded store (default var/primary)\n"
	        "      --store URL      sqlite:PATH or postgres://...\n"
	        "      --listen H:P     client and mirror address (default 127.0.0.1:7100)\n"
	        "      --admin H:P      admin HTTP address (default 127.0.0.1:7180)\n");
}

/* config: the -c given before 'token', if any; one given after it wins. */
static int token_command(int argc, char **argv, const char *config)
{
	static const struct option opts[] = {
	    {"site", required_argument, NULL, 's'},
	    {"client", required_argument, NULL, 'C'},
	    {"subtree", required_argument, NULL, 't'},
	    {"read-only", no_argument, NULL, 'r'},
	    {"read-write", no_argument, NULL, 'w'},
	    {"expires", required_argument, NULL, 'e'},
	    {"config", required_argument, NULL, 'c'},
	    {"secret-file", required_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	if (argc < 2 || strcmp(argv[1], "create") != 0) {
		fprintf(stderr, "mp-primary token: expected 'token create'\n");
		return 2;
	}
	struct token_claims claims;
	memset(&claims, 0, sizeof(claims));
	snprintf(claims.subtree, sizeof(claims.subtree), "/");
	const char *secret_file = NULL, *name = NULL;
	uint64_t expires_ms = 0;
	int rw = -1, opt;
	/* optind 0 makes getopt start afresh (main's scan stopped at 'token'),
	 * scanning argv + 1 from its second word, the one after 'create'. */
	optind = 0;
	while ((opt = getopt_long(argc - 1, argv + 1, "c:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
		case 'C':
			if (claims.kind != 0) {
				fprintf(stderr,
				        "mp-primary token: give one of --site or --client\n");
				return 2;
			}
			claims.kind = opt == 's' ? TOKEN_SITE : TOKEN_CLIENT;
			name = optarg;
			break;
		case 't':
			if (!token_path_valid(optarg, strlen(optarg))) {
				fprintf(stderr,
				        "mp-primary token: --subtree '%s' is not an absolute "
				        "path\n",
				        optarg);
				return 2;
			}
			snprintf(claims.subtree, sizeof(claims.subtree), "%s", optarg);
			break;
		case 'r':
			rw = 0;
			break;
		case 'w':
			rw = 1;
			break;
		case 'e':
			if (units_parse_duration(optarg, &expires_ms) < 0 || expires_ms == 0) {
				fprintf(stderr,
				        "mp-primary token: --expires '%s': expected a duration "
				        "like 30d, 12h or 90m\n",
				        optarg);
				return 2;
			}
			break;
		case 'c':
			config = optarg;
			break;
		case 'S':
			secret_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (claims.kind == 0 || name == NULL || strlen(name) == 0 ||
	    strlen(name) > TOKEN_NAME_MAX) {
		fprintf(stderr, "mp-primary token: --site NAME or --client NAME is required (1..64 "
		                "characters)\n");
		return 2;
	}
	if (claims.kind == TOKEN_SITE && (rw != -1 || strcmp(claims.subtree, "/") != 0)) {
		fprintf(stderr, "mp-primary token: --subtree and --read-* are for client tokens\n");
		return 2;
	}
	snprintf(claims.name, sizeof(claims.name), "%s", name);
	claims.read_write = rw == 1;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	claims.issued = (int64_t)now.tv_sec;
	/* Expiry is in whole seconds: round up, so a token never lives less
	 * than it was asked to. */
	int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	claims.expires = expires_ms ? (now_ms + (int64_t)expires_ms + 999) / 1000 : 0;
	struct primary_config cfg;
	char *err = NULL;
	if (secret_file == NULL) {
		if (primary_config_load(config, &cfg, &err) < 0) {
			fprintf(stderr, "mp-primary token: %s\n", err);
			free(err);
			return 1;
		}
		secret_file = cfg.secret_file ? strdup(cfg.secret_file) : NULL;
		primary_config_free(&cfg);
	} else {
		secret_file = strdup(secret_file);
	}
	if (secret_file == NULL) {
		fprintf(stderr, "mp-primary token: no secret_file configured (give -c FILE with "
		                "secret_file, or --secret-file)\n");
		return 1;
	}
	uint8_t *secret;
	size_t slen;
	int r = token_load_secret(secret_file, &secret, &slen, &err);
	free((char *)secret_file);
	if (r < 0) {
		fprintf(stderr, "mp-primary token: %s\n", err);
		free(err);
		return 1;
	}
	char *tok = NULL;
	r = token_create(secret, slen, &claims, &tok);
	token_free_secret(secret, slen);
	if (r < 0) {
		fprintf(stderr, "mp-primary token: cannot create the token: %s\n", strerror(-r));
		return 1;
	}
	printf("%s\n", tok);
	free(tok);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check", no_argument, NULL, 'n'},
	    {"data-dir", required_argument, NULL, 'd'},
	    {"store", required_argument, NULL, 's'},
	    {"listen", required_argument, NULL, 'l'},
	    {"admin", required_argument, NULL, 'a'},
	    {"log-level", required_argument, NULL, 'L'},
	    {"print-config", no_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	bool check = false, print = false;
	int opt;
	/* '+': stop at the first word that is not an option, so the options of
	 * 'token create' are left to it ("mp-primary -c F token create ..."). */
	while ((opt = getopt_long(argc, argv, "+c:nhV", opts, NULL)) != -1) {
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
		case 'd':
			name = "data_dir";
			break;
		case 's':
			name = "store";
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
			printf("mp-primary %s\n", MP_VERSION_STRING);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (name != NULL && primary_config_override(name, optarg) < 0) {
			fprintf(stderr, "mp-primary: too many options\n");
			return 2;
		}
	}
	if (optind < argc && strcmp(argv[optind], "token") == 0) {
		if (check || print || primary_config_overridden()) {
			fprintf(stderr, "mp-primary: only -c FILE may come before 'token'\n");
			return 2;
		}
		return token_command(argc - optind, argv + optind, config);
	}
	if (optind < argc) {
		fprintf(stderr, "mp-primary: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	struct primary_config cfg;
	char *err = NULL;
	if (primary_config_load(config, &cfg, &err) < 0) {
		fprintf(stderr, "mp-primary: %s\n", err ? err : "configuration error");
		free(err);
		return 1;
	}
	if (check || print) {
		primary_config_check_or_print(&cfg, print);
		primary_config_free(&cfg);
		return 0;
	}
	int r = primary_run(&cfg, config);
	primary_config_free(&cfg);
	return r;
}
