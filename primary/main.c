/* mp-primary's command line: run the daemon, check a configuration (-n), or
 * make tokens (token create). */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "mpconfig.h"
#include "primary.h"
#include "proto.h"

int primary_run(struct primary_config *cfg, const char *config_path);
int primary_load_config(const char *path, struct primary_config *cfg, char **ret_err);

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(field) offsetof(struct primary_config, field)
const struct config_option primary_config_table[] = {
    {"cluster_id", CONFIG_STRING, OPT(cluster_id), 0, 0, NULL,
     "Cluster id the store must carry (empty: take the store's, or make one)", NULL},
    {"data_dir", CONFIG_PATH, OPT(data_dir), 0, 0, "var/primary",
     "Directory of the embedded SQLite store", NULL},
    {"store", CONFIG_STRING, OPT(store), 0, 0, NULL,
     "sqlite:PATH or postgres://... (default: sqlite:DATA_DIR/meta.db)", NULL},
    {"origin", CONFIG_STRING, OPT(origin), 0, 0, NULL,
     "URL of the origin bucket file data is put to: s3://BUCKET[/PREFIX] or file:///DIR; "
     "announced to clients (never endpoints or credentials). Default: file://DATA_DIR/objects",
     NULL},
    {"listen", CONFIG_HOSTPORT, OPT(listen), 0, 0, "127.0.0.1:7100",
     "Address for clients and mirrors", NULL},
    {"admin", CONFIG_HOSTPORT, OPT(admin), 0, 0, "127.0.0.1:7180",
     "Admin HTTP address (/healthz, /status, /metrics)", NULL},
    {"secret_file", CONFIG_PATH, OPT(secret_file), 0, 0, NULL,
     "Cluster secret for tokens; unset allows everything", NULL},
    {"tls.cert", CONFIG_PATH, OPT(tls_cert), 0, 0, NULL, "Server certificate (PEM)", NULL},
    {"tls.key", CONFIG_PATH, OPT(tls_key), 0, 0, NULL, "Server private key (PEM)", NULL},
    {"tls.client_ca", CONFIG_PATH, OPT(tls_client_ca), 0, 0, NULL,
     "CA that signs client and site certificates", NULL},
    {"tls.verify_clients", CONFIG_BOOL, OPT(tls_verify_clients), 0, 0, "false",
     "Require client certificates (mutual TLS between sites)", NULL},
    {"max_frame_bytes", CONFIG_SIZE, OPT(max_frame_bytes), 4096, 1ull << 30, "16MiB",
     "Largest frame accepted", NULL},
    {"heartbeat_interval", CONFIG_DURATION, OPT(heartbeat_interval_ms), 10, 60000, "1s",
     "Heartbeat to idle subscribers", NULL},
    {"idle_timeout", CONFIG_DURATION, OPT(idle_timeout_ms), 1000, 86400000, "300s",
     "Close client connections silent for this long", NULL},
    {"log_retention.max_versions", CONFIG_UINT, OPT(retention_max_versions), 1, 0, "1000000",
     "Keep at least this many versions in the change log", NULL},
    {"log_retention.max_age", CONFIG_DURATION, OPT(retention_max_age_ms), 0, 0, "24h",
     "Keep versions at least this long", NULL},
    {"log_retention.hard_cap", CONFIG_UINT, OPT(retention_hard_cap), 1, 0, "20000000",
     "Never keep more versions than this, even for a lagging mirror", NULL},
    {"commit.max_batch_writes", CONFIG_UINT, OPT(max_batch_writes), 1, 100000, "4096",
     "Writes per group commit", NULL},
    {"max_connections", CONFIG_UINT, OPT(max_connections), 1, 1000000, "10000",
     "Open connections at most", NULL},
    {"log_level", CONFIG_ENUM, OPT(log_level), 0, 0, "info", "debug, info, warn or error",
     log_levels},
    {"gc.interval", CONFIG_DURATION, OPT(gc_interval_ms), 100, 0, "1h",
     "How often garbage collection deletes superseded origin objects", NULL},
    {"gc.retention", CONFIG_DURATION, OPT(gc_retention_ms), 0, 0, "1d",
     "How long a superseded object stays before it may be deleted", NULL},
    {"gc.max_delete_ratio", CONFIG_STRING, OPT(gc_max_delete_ratio), 0, 0, "0.1",
     "Breaker: hold a pass that would delete more than this share (0..1) of the origin's "
     "live and trashed objects until 'mp gc --confirm'",
     NULL},
    {"gc.max_delete_count", CONFIG_UINT, OPT(gc_max_delete_count), 0, 0, "10000",
     "Breaker: hold a pass that would delete more than this many objects", NULL},
    {"gc.bucket", CONFIG_STRING, OPT(gc_bucket), 0, 0, "origin",
     "Alias layouts give the origin bucket; only its objects under mp/ and u/NAME/ are "
     "collected",
     NULL},
    {"gc.s3.endpoint", CONFIG_STRING, OPT(gc_s3_endpoint), 0, 0, NULL,
     "s3:// origin: endpoint for deletes (default AWS)", NULL},
    {"gc.s3.region", CONFIG_STRING, OPT(gc_s3_region), 0, 0, NULL, "s3:// origin: region", NULL},
    {"gc.s3.access_key", CONFIG_STRING, OPT(gc_s3_access_key), 0, 0, NULL,
     "s3:// origin: access key for deletes", NULL},
    {"gc.s3.secret_key", CONFIG_STRING, OPT(gc_s3_secret_key), 0, 0, NULL,
     "s3:// origin: secret key for deletes", NULL},
    {"gc.s3.path_style", CONFIG_BOOL, OPT(gc_s3_path_style), 0, 0, "true",
     "s3:// origin: ENDPOINT/BUCKET/KEY requests", NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};

/* Command-line overrides, kept so a reload applies them again. */
static struct cli_overrides overrides;

static int check_config(void *arg, char **ret_err)
{
	const struct primary_config *cfg = arg;
	if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
		return asprintf(ret_err, "tls.cert and tls.key go together") < 0 ? -ENOMEM
		                                                                 : -EINVAL;
	if (cfg->tls_verify_clients && cfg->tls_client_ca == NULL)
		return asprintf(ret_err, "tls.verify_clients needs tls.client_ca") < 0 ? -ENOMEM
		                                                                       : -EINVAL;
	if (cfg->tls_client_ca != NULL && cfg->tls_cert == NULL)
		return asprintf(ret_err, "tls.client_ca needs tls.cert and tls.key") < 0 ? -ENOMEM
		                                                                         : -EINVAL;
	if (cfg->store != NULL && cfg->store[0] != '\0' && strncmp(cfg->store, "sqlite:", 7) != 0 &&
	    strncmp(cfg->store, "postgres://", 11) != 0 &&
	    strncmp(cfg->store, "postgresql://", 13) != 0)
		return asprintf(ret_err, "store '%s': expected sqlite:PATH or postgres://...",
		                cfg->store) < 0
		           ? -ENOMEM
		           : -EINVAL;
	if (cfg->gc_max_delete_ratio != NULL) {
		char *end = NULL;
		double v = strtod(cfg->gc_max_delete_ratio, &end);
		if (end == cfg->gc_max_delete_ratio || *end != '\0' || !(v >= 0 && v <= 1))
			return asprintf(
			           ret_err,
			           "gc.max_delete_ratio '%.40s': expected a number from 0 to 1 "
			           "(0.1 is 10%%)",
			           cfg->gc_max_delete_ratio) < 0
			           ? -ENOMEM
			           : -EINVAL;
	}
	if ((cfg->gc_s3_access_key == NULL) != (cfg->gc_s3_secret_key == NULL))
		return asprintf(ret_err, "gc.s3.access_key and gc.s3.secret_key go together") < 0
		           ? -ENOMEM
		           : -EINVAL;
	if (cfg->origin != NULL && cfg->origin[0] != '\0') {
		char why[128];
		if (proto_origin_check(cfg->origin, why, sizeof(why)) < 0)
			return asprintf(ret_err, "origin '%.200s': %s", cfg->origin, why) < 0
			           ? -ENOMEM
			           : -EINVAL;
	}
	return 0;
}

int primary_load_config(const char *path, struct primary_config *cfg, char **ret_err)
{
	return cli_load_config(primary_config_table, cfg, sizeof(*cfg), path, &overrides,
	                       check_config, ret_err);
}

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
		if (primary_load_config(config, &cfg, &err) < 0) {
			fprintf(stderr, "mp-primary token: %s\n", err);
			free(err);
			return 1;
		}
		secret_file = cfg.secret_file ? strdup(cfg.secret_file) : NULL;
		config_free(primary_config_table, &cfg);
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
		if (name != NULL && cli_override(&overrides, name, optarg) < 0) {
			fprintf(stderr, "mp-primary: too many options\n");
			return 2;
		}
	}
	if (optind < argc && strcmp(argv[optind], "token") == 0) {
		if (check || print || overrides.n > 0) {
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
	if (primary_load_config(config, &cfg, &err) < 0) {
		fprintf(stderr, "mp-primary: %s\n", err ? err : "configuration error");
		free(err);
		return 1;
	}
	if (check || print) {
		cli_check_or_print(primary_config_table, &cfg, print);
		config_free(primary_config_table, &cfg);
		return 0;
	}
	int r = primary_run(&cfg, config);
	config_free(primary_config_table, &cfg);
	return r;
}
