/* The primary's durable store: one interface, two backends with the same
 * schema (docs/STORE.md): "sqlite:PATH" (embedded default) and
 * "postgres://..." / "postgresql://..." (libpq).
 *
 * A struct store is one connection, used by one thread at a time. The
 * primary opens two: one for its commit thread, one for reads of the change
 * log on the event loop. Every function returns 0 or a negative errno and
 * leaves a message naming what failed in store_error(). */
#ifndef MP_STORE_H
#define MP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "namespace.h"
#include "node.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_CLUSTER_ID_MAX 64

struct store;

struct store_meta {
	char cluster_id[STORE_CLUSTER_ID_MAX + 1];
	uint64_t version;  /* last committed version, 0 for a new store */
	uint64_t next_ino; /* next inode number to hand out (>= 2) */
	uint8_t digest[DIGEST_LEN];
};

/* One committed version as the change log keeps it. */
struct store_version {
	uint64_t version;
	int64_t time; /* ns since the epoch */
	uint8_t digest[DIGEST_LEN];
	const uint8_t *record; /* the encoded change record (msg.h) */
	size_t record_len;
};

/* The final state of one inode after a batch: rec NULL means dropped. */
struct store_node_change {
	uint64_t ino;
	const struct node_rec *rec;
};

/* An origin object no node references any more (primary/gc.c): kept in the
 * trash table until a GC pass deleted it. One row per (bucket, key); a row
 * trashed again takes the newer version and time. */
struct store_trash {
	const char *bucket;
	const char *key;
	const char *etag;
	uint64_t size;    /* bytes of it the superseded layout used */
	uint64_t version; /* the version that superseded it */
	int64_t time;     /* that version's time, ns since the epoch */
};

/* One group commit: several versions in one store transaction. Every
 * pointer is borrowed for the duration of store_commit. */
struct store_batch {
	const struct store_version *versions;
	size_t nversions;
	const struct store_node_change *changes; /* each inode at most once */
	size_t nchanges;
	uint64_t version;                /* == versions[nversions-1].version */
	const struct store_trash *trash; /* each (bucket, key) at most once */
	size_t ntrash;
	uint64_t next_ino;
	uint8_t digest[DIGEST_LEN];
};

/* Opens url. A url without a scheme is an error; "sqlite:" paths are
 * created with their parent directory. On failure *ret_err (if not NULL)
 * receives a malloc'd message the caller frees. */
int store_open(const char *url, struct store **ret, char **ret_err);
void store_close(struct store *st);
const char *store_error(const struct store *st);
/* "sqlite" or "postgres". */
const char *store_kind(const struct store *st);

/* Creates the schema in an empty store or migrates an older one, then
 * checks the cluster id: want_cluster_id NULL or "" accepts whatever the
 * store holds (a new store gets a fresh random id); otherwise a store of
 * another cluster is refused with -EEXIST. Fills ret_meta. */
int store_init(struct store *st, const char *want_cluster_id, struct store_meta *ret_meta);

/* Takes the store for this process alone, as its one writer: -EBUSY when
 * another process holds it. Held until store_close. A PostgreSQL
 * connection takes it again after a reconnect and fails every call with
 * -EBUSY if it cannot (another primary took over). */
int store_lock(struct store *st);

typedef int (*store_node_fn)(void *arg, const struct node_rec *rec);
/* Calls fn for every node (any order); fn returning < 0 stops with that. */
int store_load_nodes(struct store *st, store_node_fn fn, void *arg);

/* Commits a batch atomically and durably (fsync / synchronous commit). */
int store_commit(struct store *st, const struct store_batch *batch);

/* Oldest and newest versions in the change log (0, 0 when empty). */
int store_log_bounds(struct store *st, uint64_t *ret_oldest, uint64_t *ret_newest);

typedef int (*store_change_fn)(void *arg, const struct store_version *v);
/* Calls fn for versions >= from in order, at most max_count of them and
 * stopping after max_bytes of records. */
int store_read_changes(struct store *st, uint64_t from, size_t max_count, size_t max_bytes,
                       store_change_fn fn, void *arg);

/* The newest version committed before time (ns), 0 if none. */
int store_log_version_before(struct store *st, int64_t time, uint64_t *ret_version);

/* Deletes change-log rows with version < below. */
int store_trim_log(struct store *st, uint64_t below);

typedef int (*store_trash_fn)(void *arg, const struct store_trash *t);
/* Calls fn for trash rows with time < before, oldest first, at most max
 * of them. Pointers in *t are valid during the call only. */
int store_trash_list(struct store *st, int64_t before, size_t max, store_trash_fn fn, void *arg);
/* Removes the rows of rows[i].bucket and .key that still have rows[i].time
 * (a row trashed again meanwhile stays), all in one transaction. */
int store_trash_remove(struct store *st, const struct store_trash *rows, size_t n);
/* Rows and summed sizes of the trash table. */
int store_trash_stats(struct store *st, uint64_t *ret_count, uint64_t *ret_bytes);

#endif
