#include "hrw.h"

#include <math.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

struct block_id hrw_block_id(const char *bucket, const char *key, const char *etag, uint64_t block)
{
	XXH3_state_t st;
	XXH3_128bits_reset(&st);
	/* The NULs keep ("ab","c") and ("a","bc") apart. */
	XXH3_128bits_update(&st, bucket, strlen(bucket) + 1);
	XXH3_128bits_update(&st, key, strlen(key) + 1);
	XXH3_128bits_update(&st, etag, strlen(etag) + 1);
	XXH3_128bits_update(&st, &block, sizeof(block));
	XXH128_hash_t h = XXH3_128bits_digest(&st);
	return (struct block_id){h.low64, h.high64};
}

uint64_t hrw_node_id(const char *address)
{
	return XXH3_64bits(address, strlen(address));
}

double hrw_score(uint64_t key, uint64_t node, uint64_t weight)
{
	if (weight == 0)
		return 0.0;
	uint64_t pair[2] = {key, node};
	uint64_t h = XXH3_64bits(pair, sizeof(pair));
	/* 53 bits into (0, 1): never 0, so the log is finite and negative. */
	double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
	return -(double)weight / log(u);
}

void hrw_order(uint64_t key, const uint64_t *node_ids, const uint64_t *weights, size_t n,
               size_t *order)
{
	double score[n > 0 ? n : 1];
	for (size_t i = 0; i < n; i++) {
		score[i] = hrw_score(key, node_ids[i], weights[i]);
		order[i] = i;
	}
	/* Insertion sort: groups are small (tens of nodes). */
	for (size_t i = 1; i < n; i++) {
		size_t o = order[i];
		size_t j = i;
		while (j > 0 &&
		       (score[order[j - 1]] < score[o] || (score[order[j - 1]] == score[o] &&
		                                           node_ids[order[j - 1]] > node_ids[o]))) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = o;
	}
}
