#include <stdlib.h>
#include <string.h>

#include "changelog.h"

struct changelog {
	struct changelog_entry *ring;
	size_t cap;  /* entries the ring can hold */
	size_t head; /* index of the oldest entry */
	size_t count;
	size_t bytes; /* record bytes held */
	size_t max_bytes;
	uint64_t store_oldest;
};

struct changelog *changelog_new(size_t max_entries, size_t max_bytes)
{
	struct changelog *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->ring = calloc(max_entries, sizeof(*l->ring));
	if (l->ring == NULL) {
		free(l);
		return NULL;
	}
	l->cap = max_entries;
	l->max_bytes = max_bytes;
	return l;
}

void changelog_free(struct changelog *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->count; i++)
		free(l->ring[(l->head + i) % l->cap].record);
	free(l->ring);
	free(l);
}

static void drop_oldest(struct changelog *l)
{
	struct changelog_entry *e = &l->ring[l->head];
	l->bytes -= e->record_len;
	free(e->record);
	e->record = NULL;
	l->head = (l->head + 1) % l->cap;
	l->count--;
}

void changelog_append(struct changelog *l, const struct changelog_entry *e)
{
	if (l->count > 0) {
		const struct changelog_entry *last = &l->ring[(l->head + l->count - 1) % l->cap];
		if (e->version != last->version + 1) {
			/* Not contiguous (cannot happen on the primary): start
			 * over rather than serve a gap. */
			while (l->count > 0)
				drop_oldest(l);
		}
	}
	while (l->count > 0 && (l->count == l->cap || l->bytes + e->record_len > l->max_bytes))
		drop_oldest(l);
	l->ring[(l->head + l->count) % l->cap] = *e;
	l->count++;
	l->bytes += e->record_len;
}

const struct changelog_entry *changelog_get(const struct changelog *l, uint64_t version)
{
	if (l->count == 0)
		return NULL;
	uint64_t oldest = l->ring[l->head].version;
	if (version < oldest || version - oldest >= l->count)
		return NULL;
	return &l->ring[(l->head + (version - oldest)) % l->cap];
}

uint64_t changelog_oldest_cached(const struct changelog *l)
{
	return l->count ? l->ring[l->head].version : 0;
}

uint64_t changelog_store_oldest(const struct changelog *l)
{
	return l->store_oldest;
}

void changelog_set_store_oldest(struct changelog *l, uint64_t v)
{
	l->store_oldest = v;
}
