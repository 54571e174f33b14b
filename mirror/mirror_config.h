/* mp-mirror's configuration (mirror_config.c): one table of options drives
 * defaults, the YAML file, command-line overrides, checking and printing
 * (common/daemon/config.h). Overrides given on the command line are kept in this
 * file and applied again by every load, so a reload (SIGHUP) keeps them. */
#ifndef MP_MIRROR_CONFIG_H
#define MP_MIRROR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct mirror_config {
	char *site;
	struct config_strlist upstream;
	char *data_dir;
	char *listen;
	char *admin;
	char *token_file;  /* this site's token, presented upstream */
	char *secret_file; /* the cluster secret, to check client tokens */
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	bool tls_verify_clients;
	char *upstream_ca;
	char *upstream_cert;
	char *upstream_key;
	char *upstream_server_name;
	uint64_t read_deadline_ms;
	uint64_t max_lag_ms; /* /healthz says 503 beyond this */
	uint64_t fsync_interval_ms;
	uint64_t snapshot_every_bytes;
	uint64_t cache_versions;
	uint64_t cache_bytes;
	uint64_t backoff_min_ms;
	uint64_t backoff_max_ms;
	uint64_t upstream_timeout_ms;
	uint64_t upstream_max_frame_bytes;
	uint64_t max_frame_bytes;
	uint64_t heartbeat_interval_ms;
	uint64_t cache_member_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t max_connections;
	unsigned log_level;
	char *replication_site_config;
	uint64_t replication_sweep_ms;
	uint64_t replication_scrub_ms;
	uint64_t replication_retry_max_ms;
	uint64_t replication_threads;
	uint64_t replication_gc_max_count;
	uint64_t replication_gc_max_permille;
	uint64_t warmup_clock_scale;
};

/* Loads defaults, then path (if not NULL), then the overrides, and checks the
 * result (an unset data_dir becomes var/mirror-SITE); *cfg (empty: its old
 * contents are not freed) is written only on success. Returns 0 or -errno
 * with a malloc'd message in *ret_err naming the file position or the
 * option. */
int mirror_config_load(const char *path, struct mirror_config *cfg, char **ret_err);

/* Sets option name (e.g. "listen") to value on every later load. Both strings
 * are borrowed and must outlive the process's loads (argv does). Returns 0 or
 * -E2BIG when there are too many. */
int mirror_config_override(const char *name, const char *value);

/* -n prints "configuration OK"; --print-config (print) prints every option. */
void mirror_config_check_or_print(const struct mirror_config *cfg, bool print);

/* Frees cfg's strings and lists. NULL-safe. */
void mirror_config_free(struct mirror_config *cfg);

#endif
