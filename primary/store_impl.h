/* Private to store.c and its backends: the vtable each backend fills in, the
 * part of struct store they share, and helpers for both. Nothing outside
 * primary/store*.c includes this. */
#ifndef MP_STORE_IMPL_H
#define MP_STORE_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "store.h"

#define STORE_ERR_MAX 1024

enum store_dialect { STORE_DIALECT_SQLITE = 0, STORE_DIALECT_POSTGRES = 1 };

/* store_init runs in store.c on top of the small transactional primitives
 * below, so that the schema check, the migration list and the cluster id
 * rules exist once. The data path (load, commit, log) is the backend's own
 * because that is where the two differ in how they are made fast. */
struct store_ops {
	const char *kind;
	enum store_dialect dialect;
	void (*close)(struct store *st);

	/* An exclusive transaction: two processes initialising the same
	 * empty store must not both create the schema. */
	int (*init_begin)(struct store *st);
	int (*init_end)(struct store *st, bool commit);
	/* Runs one or more statements without results. */
	int (*exec)(struct store *st, const char *what, const char *sql);
	int (*has_meta)(struct store *st, bool *ret_has);
	/* Copies the value into buf; -ENOENT when the key is absent. */
	int (*meta_get)(struct store *st, const char *key, char *buf, size_t buflen);
	int (*meta_set)(struct store *st, const char *key, const char *value);

	int (*load_nodes)(struct store *st, store_node_fn fn, void *arg);
	int (*commit)(struct store *st, const struct store_batch *batch);
	int (*log_bounds)(struct store *st, uint64_t *ret_oldest, uint64_t *ret_newest);
	int (*read_changes)(struct store *st, uint64_t from, size_t max_count, size_t max_bytes,
	                    store_change_fn fn, void *arg);
	int (*log_version_before)(struct store *st, int64_t time, uint64_t *ret_version);
	int (*trim_log)(struct store *st, uint64_t below);
	int (*trash_list)(struct store *st, int64_t before, size_t max, store_trash_fn fn,
	                  void *arg);
	int (*trash_remove)(struct store *st, const struct store_trash *rows, size_t n);
	int (*trash_stats)(struct store *st, uint64_t *ret_count, uint64_t *ret_bytes);
	int (*lock)(struct store *st);
};

/* Each backend's struct starts with this. */
struct store {
	const struct store_ops *ops;
	char err[STORE_ERR_MAX];
};

/* Sets store_error() to "<kind>: <message>". Returns nothing so that the
 * caller's errno stays the one it chose. */
void store_seterr(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks a batch for what both backends rely on (version order, the last
 * version matching batch->version, versions that fit a signed BIGINT).
 * Returns 0 or -EINVAL with the message set. */
int store_check_batch(struct store *st, const struct store_batch *batch);

/* Lowercase hex of DIGEST_LEN bytes into out[2 * DIGEST_LEN + 1]. */
void store_digest_hex(const uint8_t digest[DIGEST_LEN], char *out);

/* Backends. Each writes a malloc'd message to *ret_err on failure. */
int store_sqlite_open(const char *path, struct store **ret, char **ret_err);
int store_postgres_open(const char *url, struct store **ret, char **ret_err);

/* u64 and u32 values live in signed BIGINT / INTEGER columns as their
 * two's-complement bit pattern; memcpy keeps the conversion defined. */
static inline int64_t store_u64_to_i64(uint64_t v)
{
	int64_t r;
	memcpy(&r, &v, sizeof(r));
	return r;
}

static inline uint64_t store_i64_to_u64(int64_t v)
{
	uint64_t r;
	memcpy(&r, &v, sizeof(r));
	return r;
}

#endif
