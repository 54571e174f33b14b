/* Replication and warmup policies: the model, the schema that describes it,
 * and the checks a policy must pass before it is applied. A policy file (see
 * policies/examples/ for commented ones; C comments cannot hold a glob ending
 * in a slash and two stars, so none is shown here):
 *
 *   version: 1
 *   replication:            # rules: which paths each site copies or caches
 *     - name: imagenet-to-eu
 *       paths: ["/datasets/imagenet/train-*.tar"]
 *       sites: [eu-west]
 *       data: replicate
 *       bucket: site-copy
 *   warmup:                 # pipelines: which paths each site's cache warms
 *     - name: llama-serving
 *       list: /models/llama/warm.txt
 *       sites: ["*"]
 *       trigger: on-change
 *
 * Like the daemons' configuration (common/daemon/config.h) each item is described
 * by a table (policy_replication_schema, policy_warmup_schema): key, type,
 * bounds, default, target field; the same table drives parsing, defaults,
 * freeing and printing. policies/examples/ holds commented policies; globs
 * are described in glob.h and schedules in cron.h.
 *
 * Every error carries FILE:LINE:COL (1-based) of what it is about, in
 * yamllint's form, and the parser reports as many as it can find (up to
 * POLICY_MAX_ERRORS) rather than stopping at the first. */
#ifndef MP_POLICY_H
#define MP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "cron.h"
#include "glob.h"

#define POLICY_MAX_FILE_BYTES (1024 * 1024)
#define POLICY_MAX_ITEMS      1024 /* rules, and pipelines */
#define POLICY_MAX_GLOBS      64   /* per rule or pipeline */
#define POLICY_MAX_SITES      256  /* per rule or pipeline */
#define POLICY_MAX_NAME       63   /* rule, pipeline, site and bucket names */
#define POLICY_MAX_ERRORS     100
#define POLICY_MAX_FIELDS     16

struct policy_pos {
	unsigned line, col; /* 1-based; 0 when unknown */
};

enum policy_data {
	POLICY_DATA_REPLICATE,
	POLICY_DATA_CACHE,
	POLICY_DATA_NONE,
};

enum policy_verify {
	POLICY_VERIFY_MD5,
	POLICY_VERIFY_SHA256,
};

enum policy_trigger {
	POLICY_TRIGGER_ONCE,
	POLICY_TRIGGER_SCHEDULE,
	POLICY_TRIGGER_ON_CHANGE,
};

/* A list of scalars with where each was; for paths, globs[k] is items[k]
 * compiled. All owned by the list. */
struct policy_list {
	char **items;
	struct policy_pos *pos;
	struct glob **globs; /* NULL for lists that are not globs */
	size_t n;
};

struct policy_schedule {
	char *text; /* NULL when unset */
	struct cron cron;
};

/* What rules and pipelines share, first in each. at[k] is where the value of
 * the schema's k-th key was, when bit k of set is on. */
struct policy_item {
	char *name;
	struct policy_pos pos; /* the item itself */
	struct policy_pos at[POLICY_MAX_FIELDS];
	uint32_t set;
	uint32_t bad; /* keys whose value was refused (already reported) */
};

struct policy_replication {
	struct policy_item item;
	struct policy_list paths;
	struct policy_list sites; /* names, or the single item "*" */
	unsigned data;            /* enum policy_data */
	char *bucket;             /* NULL unless set */
	uint64_t bandwidth;       /* bytes/s per site; 0 = unlimited */
	uint64_t concurrency;
	unsigned verify;  /* enum policy_verify */
	uint64_t keep_ms; /* how long a superseded replica is kept */
};

struct policy_warmup {
	struct policy_item item;
	struct policy_list paths; /* empty when list is set */
	char *list;               /* a namespace file listing paths, or NULL */
	struct policy_list sites;
	unsigned trigger; /* enum policy_trigger */
	struct policy_schedule schedule;
	bool evict_previous;
	uint64_t concurrency;
	uint64_t bandwidth;   /* bytes/s; 0 = unlimited */
	uint64_t priority;    /* 0..100 */
	uint64_t deadline_ms; /* 0 = none */
};

struct policy {
	char *file; /* the name errors and positions refer to */
	uint64_t version;
	struct policy_replication *replication;
	size_t n_replication;
	struct policy_warmup *warmup;
	size_t n_warmup;
};

/* The sites and bucket aliases a policy may name. A NULL list is not
 * checked ("mp policy check" without --sites). */
struct policy_known {
	const char *const *sites;
	size_t n_sites;
	const char *const *buckets;
	size_t n_buckets;
};

struct policy_error {
	struct policy_pos pos;
	char *text; /* "FILE:LINE:COL: message" (or "FILE: message") */
};

/* Errors in file order of discovery. Zero it before use; clear it after. */
struct policy_errors {
	struct policy_error *v;
	size_t n;
	bool truncated; /* more than POLICY_MAX_ERRORS were found */
};

void policy_errors_clear(struct policy_errors *errs);
/* One error a line. */
void policy_errors_print(const struct policy_errors *errs, FILE *out);

/* Parses and validates a policy. On success *ret is the caller's (free it
 * with policy_free) and errs is untouched. On failure returns -EINVAL (the
 * policy is wrong: errs says where and why), -EFBIG, -ENOMEM, or the
 * negative errno of reading the file (errs holds one error without a
 * position), and *ret is not written. known may be NULL. */
int policy_parse_file(const char *path, const struct policy_known *known, struct policy **ret,
                      struct policy_errors *errs);
/* The same from memory; name stands for the file in messages. */
int policy_parse_buffer(const char *name, const void *buf, size_t len,
                        const struct policy_known *known, struct policy **ret,
                        struct policy_errors *errs);

/* NULL-safe. */
void policy_free(struct policy *p);

/* A pipeline's `list:` file, as the site reads it: one glob per line
 * (absolute; blank lines and lines starting with '#' are skipped; spaces
 * around a line ignored), at most POLICY_MAX_LIST_PATHS. On success *l is
 * replaced by the list (positions are line numbers); on error *l is left as
 * it was and err names the line ("LINE: what"). */
#define POLICY_MAX_LIST_PATHS 10000
#define POLICY_MAX_LIST_BYTES (1u << 20)
int policy_paths_from_text(struct policy_list *l, const char *text, size_t len, char *err,
                           size_t errlen);

/* The replication rule that applies to path at site: the first one in the
 * file whose paths match and whose sites include site; NULL when none does.
 * (Validation refuses rules that would disagree about the data mode, so the
 * order matters only for the other settings.) Owned by p. */
const struct policy_replication *policy_match(const struct policy *p, const char *path,
                                              const char *site);

/* Whether a rule or pipeline's sites include site. */
bool policy_sites_include(const struct policy_list *sites, const char *site);

/* The first matching minute of a schedule strictly after after (UTC), or
 * -1 when there is none. */
time_t policy_cron_next(const struct cron *c, time_t after);

/* Names of the enums' values as written in a policy. */
const char *policy_data_name(unsigned data);
const char *policy_verify_name(unsigned verify);
const char *policy_trigger_name(unsigned trigger);

/* Writes the policy as one JSON object (all values, defaults included) to
 * out. Returns 0 or -EIO. */
int policy_to_json(const struct policy *p, FILE *out);

/* ---- the schema, shared by policy.c and policy_parse.c ---- */

enum policy_type {
	POLICY_T_NAME,     /* [a-z0-9_-], 1..POLICY_MAX_NAME              [char *] */
	POLICY_T_ALIAS,    /* a bucket alias: [A-Za-z0-9_.-]              [char *] */
	POLICY_T_PATH,     /* an absolute namespace path, no globs        [char *] */
	POLICY_T_GLOBS,    /* list of globs (or one), 1..POLICY_MAX_GLOBS [struct policy_list] */
	POLICY_T_SITES,    /* list of site names, or "*"                  [struct policy_list] */
	POLICY_T_ENUM,     /* one of choices, stored as its index         [unsigned] */
	POLICY_T_UINT,     /* decimal                                     [uint64_t] */
	POLICY_T_SIZE,     /* units_parse_size                            [uint64_t] */
	POLICY_T_DURATION, /* units_parse_duration, in ms                 [uint64_t] */
	POLICY_T_BOOL,     /* true/false                                  [bool] */
	POLICY_T_SCHEDULE, /* cron.h                                      [struct policy_schedule]
	                    */
};

struct policy_field {
	const char *name;
	enum policy_type type;
	size_t offset;
	uint64_t min, max; /* UINT/SIZE/DURATION; max 0 = no bound */
	const char *default_value;
	const char *const *choices; /* ENUM: NULL-terminated */
	bool required;
	const char *help;
};

/* A section of the file: the list under key, of items of item_size bytes
 * described by fields (ended by a NULL name). */
struct policy_section {
	const char *key;
	const char *what; /* "replication rule", for messages */
	const struct policy_field *fields;
	size_t item_size;
	size_t list_offset, count_offset; /* in struct policy */
};

extern const struct policy_section policy_sections[2];

/* The index in section's fields of the key called name, or -1. */
int policy_field_index(const struct policy_section *s, const char *name);
/* Sets an item's fields to their defaults (the item is zeroed). Returns 0 or
 * -ENOMEM. */
int policy_item_defaults(const struct policy_section *s, void *item);
/* Frees an item's fields. */
void policy_item_free(const struct policy_section *s, void *item);
/* Validates p as a whole (required keys, combinations, names, sites,
 * buckets, conflicts), appending to errs. */
void policy_validate(struct policy *p, const struct policy_known *known,
                     struct policy_errors *errs);
/* Appends an error at pos (no position when pos.line is 0). Returns -EINVAL,
 * or -ENOMEM when even that failed. */
int policy_error_add(struct policy_errors *errs, const char *file, struct policy_pos pos,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Parses one scalar value for field f into the field of item (for a list
 * type: appends one item, which was at pos). Returns 0, -EINVAL with a
 * message in err that does not name the key, or -ENOMEM. */
int policy_value_parse(const struct policy_field *f, void *item, const char *text, size_t len,
                       struct policy_pos pos, char *err, size_t errlen);

#endif
