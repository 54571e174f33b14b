/* mp-mirror's configuration: the option table, the checks across options,
 * and the command-line overrides, kept so that a reload applies them again. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mirror_config.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(field) offsetof(struct mirror_config, field)
static const struct config_option mirror_config_table[] = {
    {"site", CONFIG_STRING, OPT(site), 0, 0, NULL, "This site's name (required)", NULL},
    {"upstream", CONFIG_STRLIST, OPT(upstream), 0, 0, "127.0.0.1:7100",
     "The primary or another mirror, HOST:PORT, in order of preference", NULL},
    {"data_dir", CONFIG_PATH, OPT(data_dir), 0, 0, NULL,
     "Journal and snapshots (default var/mirror-SITE)", NULL},
    {"listen", CONFIG_HOSTPORT, OPT(listen), 0, 0, "127.0.0.1:7200",
     "Address for clients and cascaded mirrors", NULL},
    {"admin", CONFIG_HOSTPORT, OPT(admin), 0, 0, "127.0.0.1:7280",
     "Admin HTTP address (/healthz, /status, /metrics)", NULL},
    {"token_file", CONFIG_PATH, OPT(token_file), 0, 0, NULL,
     "This site's token (mp-primary token create --site)", NULL},
    {"secret_file", CONFIG_PATH, OPT(secret_file), 0, 0, NULL,
     "The cluster secret, to check client and site tokens; unset allows everything", NULL},
    {"tls.cert", CONFIG_PATH, OPT(tls_cert), 0, 0, NULL, "Server certificate (PEM)", NULL},
    {"tls.key", CONFIG_PATH, OPT(tls_key), 0, 0, NULL, "Server private key (PEM)", NULL},
    {"tls.client_ca", CONFIG_PATH, OPT(tls_client_ca), 0, 0, NULL,
     "CA of client and site certificates", NULL},
    {"tls.verify_clients", CONFIG_BOOL, OPT(tls_verify_clients), 0, 0, "false",
     "Require client certificates", NULL},
    {"upstream_tls.ca", CONFIG_PATH, OPT(upstream_ca), 0, 0, NULL,
     "CA that signs the upstream's certificate (enables TLS upstream)", NULL},
    {"upstream_tls.cert", CONFIG_PATH, OPT(upstream_cert), 0, 0, NULL,
     "This site's certificate, for mutual TLS", NULL},
    {"upstream_tls.key", CONFIG_PATH, OPT(upstream_key), 0, 0, NULL, "Its private key", NULL},
    {"upstream_tls.server_name", CONFIG_STRING, OPT(upstream_server_name), 0, 0, NULL,
     "Name the upstream's certificate must carry", NULL},
    {"read_deadline", CONFIG_DURATION, OPT(read_deadline_ms), 0, 60000, "1s",
     "How long a read waits for its min_version before STALE", NULL},
    {"max_lag", CONFIG_DURATION, OPT(max_lag_ms), 1, 0, "10s",
     "/healthz answers 503 when the replica is further behind", NULL},
    {"fsync_interval", CONFIG_DURATION, OPT(fsync_interval_ms), 0, 10000, "2ms",
     "Journal appends are fsynced (and acknowledged) in batches this often", NULL},
    {"snapshot_every", CONFIG_SIZE, OPT(snapshot_every_bytes), 1024, 0, "256MiB",
     "Write a snapshot after this much journal", NULL},
    {"cache.versions", CONFIG_UINT, OPT(cache_versions), 16, 10000000, "262144",
     "Versions kept in memory for cascaded mirrors", NULL},
    {"cache.bytes", CONFIG_SIZE, OPT(cache_bytes), 65536, 0, "64MiB",
     "Bytes of versions kept in memory", NULL},
    {"reconnect.min", CONFIG_DURATION, OPT(backoff_min_ms), 10, 600000, "100ms",
     "First reconnect delay", NULL},
    {"reconnect.max", CONFIG_DURATION, OPT(backoff_max_ms), 10, 3600000, "5s",
     "Longest reconnect delay", NULL},
    {"upstream_timeout", CONFIG_DURATION, OPT(upstream_timeout_ms), 100, 600000, "5s",
     "An upstream silent this long (no heartbeat) is dropped", NULL},
    {"upstream_max_frame_bytes", CONFIG_SIZE, OPT(upstream_max_frame_bytes), 65536, 1ull << 31,
     "256MiB", "Largest frame accepted from the upstream", NULL},
    {"max_frame_bytes", CONFIG_SIZE, OPT(max_frame_bytes), 4096, 1ull << 30, "16MiB",
     "Largest frame accepted from clients", NULL},
    {"heartbeat_interval", CONFIG_DURATION, OPT(heartbeat_interval_ms), 10, 60000, "1s",
     "Heartbeat to idle cascaded mirrors", NULL},
    {"cache_member_timeout", CONFIG_DURATION, OPT(cache_member_timeout_ms), 100, 600000, "3s",
     "A cache node not heard from this long leaves the site's group", NULL},
    {"idle_timeout", CONFIG_DURATION, OPT(idle_timeout_ms), 1000, 86400000, "300s",
     "Close client connections silent for this long", NULL},
    {"max_connections", CONFIG_UINT, OPT(max_connections), 1, 1000000, "10000",
     "Open connections at most", NULL},
    {"replication.site_config", CONFIG_PATH, OPT(replication_site_config), 0, 0, NULL,
     "A site configuration in the client's form: the bucket aliases (endpoints, "
     "credentials) replication reads from and copies to",
     NULL},
    {"replication.sweep_interval", CONFIG_DURATION, OPT(replication_sweep_ms), 100, 86400000, "30s",
     "How often the tree is walked for replicas no rule wants any more", NULL},
    {"replication.scrub_interval", CONFIG_DURATION, OPT(replication_scrub_ms), 0, 0, "7d",
     "How often each replica is read back and checked (0: never)", NULL},
    {"replication.retry_max", CONFIG_DURATION, OPT(replication_retry_max_ms), 100, 86400000, "5m",
     "Longest back-off between attempts at a failing copy", NULL},
    {"replication.threads", CONFIG_UINT, OPT(replication_threads), 1, 64, "16",
     "Copier threads (each rule's concurrency limits its own share)", NULL},
    {"replication.gc_max_delete_count", CONFIG_UINT, OPT(replication_gc_max_count), 1, 100000000,
     "10000", "The breaker: more replicas due for deletion at once wait for mp gc --confirm", NULL},
    {"replication.gc_max_delete_permille", CONFIG_UINT, OPT(replication_gc_max_permille), 1, 1000,
     "100",
     "The breaker: more than this share (per mille) of the site's replicas due at once "
     "waits for mp gc --confirm",
     NULL},
    {"warmup.clock_scale", CONFIG_UINT, OPT(warmup_clock_scale), 1, 3600, "1",
     "Seconds of warmup schedule time per second (tests shorten the clock with it)", NULL},
    {"log_level", CONFIG_ENUM, OPT(log_level), 0, 0, "info", "debug, info, warn or error",
     log_levels},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};

/* Command-line overrides, kept so a reload applies them again. */
static struct cli_overrides overrides;

static int check_config(void *arg, char **ret_err)
{
	struct mirror_config *cfg = arg;
	const char *why = NULL;
	if (cfg->site == NULL || cfg->site[0] == '\0' || strlen(cfg->site) > 64)
		why = "site is required (1..64 characters): --site NAME or site: NAME";
	else if (cfg->upstream.n == 0)
		why = "at least one upstream is required";
	else if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
		why = "tls.cert and tls.key go together";
	else if (cfg->tls_verify_clients && cfg->tls_client_ca == NULL)
		why = "tls.verify_clients needs tls.client_ca";
	else if ((cfg->upstream_cert == NULL) != (cfg->upstream_key == NULL))
		why = "upstream_tls.cert and upstream_tls.key go together";
	else if (cfg->upstream_cert != NULL && cfg->upstream_ca == NULL)
		why = "upstream_tls.cert needs upstream_tls.ca";
	else if (cfg->backoff_max_ms < cfg->backoff_min_ms)
		why = "reconnect.max is below reconnect.min";
	if (why != NULL)
		return asprintf(ret_err, "%s", why) < 0 ? -ENOMEM : -EINVAL;
	for (size_t i = 0; i < cfg->upstream.n; i++) {
		char host[256];
		uint16_t port;
		if (units_parse_hostport(cfg->upstream.items[i], host, sizeof(host), &port) < 0)
			return asprintf(ret_err, "upstream '%s': expected HOST:PORT",
			                cfg->upstream.items[i]) < 0
			           ? -ENOMEM
			           : -EINVAL;
	}
	if (cfg->data_dir == NULL && asprintf(&cfg->data_dir, "var/mirror-%s", cfg->site) < 0)
		return -ENOMEM;
	return 0;
}

int mirror_config_load(const char *path, struct mirror_config *cfg, char **ret_err)
{
	return cli_load_config(mirror_config_table, cfg, sizeof(*cfg), path, &overrides,
	                       check_config, ret_err);
}

int mirror_config_override(const char *name, const char *value)
{
	return cli_override(&overrides, name, value);
}

void mirror_config_check_or_print(const struct mirror_config *cfg, bool print)
{
	cli_check_or_print(mirror_config_table, cfg, print);
}

void mirror_config_free(struct mirror_config *cfg)
{
	config_free(mirror_config_table, cfg);
}
