/* The cache-group messages of the wire protocol (docs/PROTOCOL.md, "Cache
 * groups"): BLOCK_READ, which a client or another cache node sends to a
 * cache node, and CACHE_REGISTER / CACHE_MEMBERS, by which cache nodes join
 * their site's mirror and clients learn the group. Decoding validates every
 * field and names what was wrong. */
#ifndef MP_CACHEPROTO_H
#define MP_CACHEPROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_ALIAS_MAX     63
#define CACHE_KEY_MAX       1024
#define CACHE_ETAG_MAX      80
#define CACHE_ADDRESS_MAX   79
#define CACHE_MEMBERS_MAX   256
#define CACHE_BLOCK_MIN     (1u << 20)
#define CACHE_BLOCK_MAX     (64u << 20)
#define CACHE_BLOCK_DEFAULT (4u << 20)
#define CACHE_OBJECT_MAX    (1ull << 50)
#define CACHE_GRANT_MAX     256

/* A read of bytes [offset, offset + length) of one object, all within one
 * block of the node's block size. Strings are NUL-terminated copies. */
struct block_request {
	char bucket[CACHE_ALIAS_MAX + 1];
	char key[CACHE_KEY_MAX + 1];
	char etag[CACHE_ETAG_MAX + 1];
	uint64_t size;   /* the object's size as the layout knows it */
	uint64_t offset; /* in the object */
	uint64_t length;
	bool peer;         /* only if cached: no fill (peers, warming nodes) */
	const char *grant; /* points into the frame; NULL if none */
	size_t grant_len;
	/* The site bucket holding a verified copy (key "BUCKET/KEY" there), as
	 * the site's mirror told the reader; "" if none. */
	char replica[CACHE_ALIAS_MAX + 1];
};

/* Parses a BLOCK_READ body against the node's block size. Returns 0, or
 * -EINVAL (-E2BIG for an oversized string) with the reason in err. */
int cacheproto_parse_block_read(const msgpack_object *body, uint64_t block_size,
                                struct block_request *ret, char *err, size_t errlen);
/* Packs a BLOCK_READ body's fields (no map header); returns how many. */
uint32_t cacheproto_pack_block_fields(msgpack_packer *pk, const struct block_request *req);
/* The block index a request falls in. */
static inline uint64_t cacheproto_block_index(const struct block_request *r, uint64_t block_size)
{
	return r->offset / block_size;
}

enum cache_state { CACHE_ACTIVE = 0, CACHE_WARMING = 1, CACHE_DRAINING = 2 };
const char *cacheproto_state_name(enum cache_state s);

struct cache_member {
	char address[CACHE_ADDRESS_MAX + 1];
	uint64_t weight;
	enum cache_state state;
	uint64_t block_size;
	uint64_t used, capacity;
	uint64_t hits, misses;
	uint64_t age_ms; /* since the mirror last heard from it (members lists only) */
};

/* A member as a map {address, weight, state, block_size, used, capacity,
 * hits, misses, age_ms}: the CACHE_REGISTER body, and each item of a
 * CACHE_MEMBERS reply's members. */
void cacheproto_pack_member(msgpack_packer *pk, const struct cache_member *m);
/* The same without the map header: CACHEPROTO_MEMBER_FIELDS fields. */
void cacheproto_pack_member_fields(msgpack_packer *pk, const struct cache_member *m);
#define CACHEPROTO_MEMBER_FIELDS 9
int cacheproto_parse_member(const msgpack_object *map, struct cache_member *ret, char *err,
                            size_t errlen);
/* A CACHE_MEMBERS reply's members (at most cap). */
int cacheproto_parse_members(const msgpack_object *body, struct cache_member *out, size_t cap,
                             size_t *ret_n, char *err, size_t errlen);

/* ---- warming (CACHE_WARM, CACHE_EVICT, CACHE_HAS) ----
 * Each carries {blocks: [BLOCK_READ body, ...]} naming whole blocks (offset
 * at a block boundary, length to the block's end or the object's) of the
 * node's block size; each answers {results: [int, ...]}, one per block in
 * order: CACHE_WARM 0 (was cached), 1 (filled now) or a negative errno (the
 * fill failed; the reply's "error" says why for the first one), CACHE_HAS 0
 * or -ENOENT, CACHE_EVICT 0 (dropped) or -ENOENT (was not there). */
#define CACHE_LIST_MAX 256

/* Parses the blocks of a list body into out (cap at least the list's size,
 * else -E2BIG). Every item is a whole block: the errors name the item. */
int cacheproto_parse_block_list(const msgpack_object *body, uint64_t block_size,
                                struct block_request *out, size_t cap, size_t *ret_n, char *err,
                                size_t errlen);
/* Packs {blocks: [...]} as a whole body (map header included). */
void cacheproto_pack_block_list(msgpack_packer *pk, const struct block_request *reqs, size_t n);
/* A reply's results: exactly n integers in [-4095, 1]. */
int cacheproto_parse_results(const msgpack_object *body, size_t n, int *out, char *err,
                             size_t errlen);

#endif
