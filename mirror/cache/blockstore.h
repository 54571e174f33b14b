/* A cache node's blocks on local disk (after nginx's file cache): one or
 * more cache dirs (one per disk), each with a capacity and a minimum free
 * share of its file system; blocks stored under a hashed path, written to a
 * temporary name and renamed, named by key hash, length and XXH3 checksum so
 * that the index is rebuilt at start from file names alone; checked against
 * the checksum whenever they are read from a file that changed since it last
 * matched (and at least every verify interval); evicted per dir by S3-FIFO (a small
 * probationary FIFO, a main FIFO with a reinsertion bit and a ghost FIFO of
 * recently evicted keys), so one pass over a cold data set larger than the
 * cache does not flush the blocks that are read again and again.
 *
 * Thread-safe: one lock guards the index; file I/O happens outside it. */
#ifndef MP_CACHE_BLOCKSTORE_H
#define MP_CACHE_BLOCKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hrw.h"

#define BLOCKSTORE_DIRS_MAX 16

struct blockstore;

struct blockstore_dir_config {
	const char *path;
	uint64_t capacity; /* bytes; 0: the file system's size */
};

struct blockstore_stats {
	uint64_t blocks, used, capacity;
	uint64_t evictions, corrupt, dir_failures;
	unsigned dirs, dirs_failed;
};

struct blockstore_dir_stats {
	const char *path;
	uint64_t used, capacity, blocks;
	bool failed;
	const char *why; /* why it failed */
};

/* Opens the dirs (created if missing) and rebuilds the index from their
 * files; min_free_pct of each file system is kept free. Returns 0 or a
 * negative errno with a message in why (malloc'd). */
int blockstore_open(const struct blockstore_dir_config *dirs, size_t n, unsigned min_free_pct,
                    struct blockstore **ret, char **why);
void blockstore_free(struct blockstore *bs);

/* A cached block opened for reading: the fd and its length. Release with
 * blockstore_release. */
struct block_ref {
	int fd;
	uint32_t length;
	const void *map; /* unused: NULL */
};
/* The checksum is checked on a read whenever the block's file changed
 * since it last matched (inode, mtime, ctime), and at least this often
 * (default 60 s). 0: on every read. */
void blockstore_set_verify_interval(struct blockstore *bs, uint64_t ms);
/* 0 with ref on a verified hit; -ENOENT when not cached; -EIO when the
 * block was there but corrupt, truncated or unreadable (it is dropped and
 * counted, and the caller refetches). Counts a hit for eviction. */
int blockstore_get(struct blockstore *bs, struct block_id id, struct block_ref *ref);
void blockstore_release(struct block_ref *ref);
/* Whether a block is cached (no I/O, no hit counted). */
bool blockstore_has(struct blockstore *bs, struct block_id id);
/* Stores a block (temp file, rename), evicting as needed. Replaces what was
 * there. Returns 0 or a negative errno (-ENOSPC when no dir can take it). A
 * dir that fails with EIO or ENOSPC is taken out of service. */
int blockstore_put(struct blockstore *bs, struct block_id id, const void *data, uint32_t length);
/* Drops a block (for evict-on-demand). */
void blockstore_drop(struct blockstore *bs, struct block_id id);

void blockstore_stats(struct blockstore *bs, struct blockstore_stats *ret);
/* Per dir; returns how many were written (at most cap). Strings are the
 * store's and live as long as it. */
size_t blockstore_dir_stats(struct blockstore *bs, struct blockstore_dir_stats *out, size_t cap);

/* Enumerates cached block ids (main queue first, hottest last) for a
 * hand-over; cb returns nonzero to stop. Runs under the lock: cb must not
 * call back into the store. */
void blockstore_each(struct blockstore *bs, int (*cb)(void *arg, struct block_id id, uint32_t len),
                     void *arg);

#endif
