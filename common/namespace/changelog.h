/* The newest part of a change log kept in memory: encoded change records
 * by version, so that live and slightly lagging subscribers are served
 * without reading the store (the primary) or at all (a mirror, whose stream
 * reaches back only as far as this cache). */
#ifndef MP_CHANGELOG_H
#define MP_CHANGELOG_H

#include <stddef.h>
#include <stdint.h>

#include "namespace.h"

struct changelog_entry {
	uint64_t version;
	int64_t time;
	uint8_t digest[DIGEST_LEN];
	uint8_t *record;
	size_t record_len;
};

struct changelog;
struct changelog *changelog_new(size_t max_entries, size_t max_bytes);
void changelog_free(struct changelog *l);
/* Takes ownership of e->record. Versions must be appended in order. */
void changelog_append(struct changelog *l, const struct changelog_entry *e);
const struct changelog_entry *changelog_get(const struct changelog *l, uint64_t version);
uint64_t changelog_oldest_cached(const struct changelog *l);
/* Oldest version still in the store's log (0 when empty). */
uint64_t changelog_store_oldest(const struct changelog *l);
void changelog_set_store_oldest(struct changelog *l, uint64_t v);

/* Reads versions >= from, in order, from wherever an owner keeps older
 * ones (the primary's store). fn returning < 0 stops the read. */
typedef int (*changelog_read_fn)(void *arg, const struct changelog_entry *e);

#endif
