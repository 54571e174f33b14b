/* Weighted rendezvous (highest random weight) hashing: which cache node owns
 * a block. Every node scores a key; the highest score owns it, the next ones
 * are its fallbacks in order. Adding or removing a node moves only the keys
 * it wins or held, about 1/n of them. Score = -weight / ln(u), with u the
 * 64-bit hash of (key, node) mapped into (0, 1). */
#ifndef MP_HRW_H
#define MP_HRW_H

#include <stddef.h>
#include <stdint.h>

/* A block's identity: 128 bits of XXH3 over (bucket alias, key, etag,
 * block index). Cache nodes store blocks by it; its low half is the key
 * rendezvous hashing places. */
struct block_id {
	uint64_t lo, hi;
};
struct block_id hrw_block_id(const char *bucket, const char *key, const char *etag, uint64_t block);
/* The hash of a node's identity (its address). */
uint64_t hrw_node_id(const char *address);
/* A node's score for a key; weight 0 scores 0 (never an owner). */
double hrw_score(uint64_t key, uint64_t node, uint64_t weight);
/* Writes into order[0..n) the indexes of the n nodes, best owner first.
 * Nodes of weight 0 come last. */
void hrw_order(uint64_t key, const uint64_t *node_ids, const uint64_t *weights, size_t n,
               size_t *order);

#endif
