/* mp-primary's configuration (primary_config.c): one table of options drives
 * defaults, the YAML file, command-line overrides, checking and printing
 * (common/daemon/config.h). Overrides given on the command line are kept in this
 * file and applied again by every load, so a reload (SIGHUP) keeps them. */
#ifndef MP_PRIMARY_CONFIG_H
#define MP_PRIMARY_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct primary_config {
	char *cluster_id;
	char *data_dir;
	char *store;
	char *origin;
	char *listen;
	char *admin;
	char *secret_file;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	bool tls_verify_clients;
	uint64_t max_frame_bytes;
	uint64_t heartbeat_interval_ms;
	uint64_t idle_timeout_ms;
	uint64_t retention_max_versions;
	uint64_t retention_max_age_ms;
	uint64_t retention_hard_cap;
	uint64_t max_batch_writes;
	uint64_t max_connections;
	unsigned log_level;
	/* gc.c */
	uint64_t gc_interval_ms;
	uint64_t gc_retention_ms;
	char *gc_max_delete_ratio; /* a number in [0, 1], checked at load */
	uint64_t gc_max_delete_count;
	char *gc_bucket;
	char *gc_s3_endpoint;
	char *gc_s3_region;
	char *gc_s3_access_key;
	char *gc_s3_secret_key;
	bool gc_s3_path_style;
};

/* Loads defaults, then path (if not NULL), then the overrides, and checks the
 * result; *cfg (empty: its old contents are not freed) is written only on
 * success. Returns 0 or -errno with a malloc'd message in *ret_err naming the
 * file position or the option. */
int primary_config_load(const char *path, struct primary_config *cfg, char **ret_err);

/* Sets option name (e.g. "listen") to value on every later load. Both strings
 * are borrowed and must outlive the process's loads (argv does). Returns 0 or
 * -E2BIG when there are too many. */
int primary_config_override(const char *name, const char *value);

/* Whether any override was given. */
bool primary_config_overridden(void);

/* -n prints "configuration OK"; --print-config (print) prints every option. */
void primary_config_check_or_print(const struct primary_config *cfg, bool print);

/* Frees cfg's strings and lists. NULL-safe. */
void primary_config_free(struct primary_config *cfg);

#endif
