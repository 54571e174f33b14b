/* mp-primary's configuration: the option table, the checks across options,
 * and the command-line overrides, kept so that a reload applies them again. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "primary_config.h"
#include "proto.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(field) offsetof(struct primary_config, field)
static const struct config_option primary_config_table[] = {
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

int primary_config_load(const char *path, struct primary_config *cfg, char **ret_err)
{
	return cli_load_config(primary_config_table, cfg, sizeof(*cfg), path, &overrides,
	                       check_config, ret_err);
}

int primary_config_override(const char *name, const char *value)
{
	return cli_override(&overrides, name, value);
}

bool primary_config_overridden(void)
{
	return overrides.n > 0;
}

void primary_config_check_or_print(const struct primary_config *cfg, bool print)
{
	cli_check_or_print(primary_config_table, cfg, print);
}

void primary_config_free(struct primary_config *cfg)
{
	config_free(primary_config_table, cfg);
}
