/* Fuzz target for the cache-group messages (common/proto/cacheproto.c). The input
 * is one frame body: a BLOCK_READ request, checked against a few block
 * sizes, and a CACHE_MEMBERS reply or CACHE_REGISTER body. What parses must
 * keep the promises the cache node relies on (a range of 1..block size
 * bytes within one block and within the object, clean strings) and must
 * survive a round trip through the packers unchanged. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cacheproto.h"
#include "msg.h"

#define FUZZ_BODY_MAX (1u << 20)

static void check_text(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n == 0 || n > max)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
}

static void check_err(int r, const char *err)
{
	if (r != 0 && (r >= 0 || err[0] == '\0' || strnlen(err, 256) == 256))
		abort();
}

static void block_read(const msgpack_object *body, uint64_t block_size)
{
	struct block_request req;
	char err[256] = "";
	int r = cacheproto_parse_block_read(body, block_size, &req, err, sizeof(err));
	check_err(r, err);
	if (r != 0)
		return;
	check_text(req.bucket, CACHE_ALIAS_MAX);
	check_text(req.key, CACHE_KEY_MAX);
	check_text(req.etag, CACHE_ETAG_MAX);
	if (req.length == 0 || req.length > block_size || req.size > CACHE_OBJECT_MAX ||
	    req.offset + req.length > req.size ||
	    req.offset / block_size != (req.offset + req.length - 1) / block_size)
		abort();
	if ((req.grant == NULL) != (req.grant_len == 0) || req.grant_len > CACHE_GRANT_MAX)
		abort();
	if (req.replica[0] != '\0')
		check_text(req.replica, CACHE_ALIAS_MAX);

	/* Packed again, it parses to the same request. */
	msgpack_sbuffer fields, sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&fields);
	msgpack_packer_init(&pk, &fields, msgpack_sbuffer_write);
	uint32_t n = cacheproto_pack_block_fields(&pk, &req);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	msg_pack_raw(&pk, fields.data, fields.size);
	msgpack_unpacked u;
	struct block_request again;
	if (msg_unpack((const uint8_t *)sb.data, sb.size, &u, err, sizeof(err)) != 0)
		abort();
	if (cacheproto_parse_block_read(&u.data, block_size, &again, err, sizeof(err)) != 0)
		abort();
	if (strcmp(again.bucket, req.bucket) != 0 || strcmp(again.key, req.key) != 0 ||
	    strcmp(again.etag, req.etag) != 0 || again.size != req.size ||
	    again.offset != req.offset || again.length != req.length || again.peer != req.peer ||
	    again.grant_len != req.grant_len || strcmp(again.replica, req.replica) != 0 ||
	    (req.grant_len > 0 && memcmp(again.grant, req.grant, req.grant_len) != 0))
		abort();
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&fields);
}

static void check_member(const struct cache_member *m)
{
	check_text(m->address, CACHE_ADDRESS_MAX);
	if ((unsigned)m->state > CACHE_DRAINING || m->weight > 1000000 ||
	    m->block_size < CACHE_BLOCK_MIN || m->block_size > CACHE_BLOCK_MAX)
		abort();
}

static bool same_member(const struct cache_member *a, const struct cache_member *b)
{
	return strcmp(a->address, b->address) == 0 && a->weight == b->weight &&
	       a->state == b->state && a->block_size == b->block_size && a->used == b->used &&
	       a->capacity == b->capacity && a->hits == b->hits && a->misses == b->misses &&
	       a->age_ms == b->age_ms;
}

static void members(const msgpack_object *body)
{
	static struct cache_member list[CACHE_MEMBERS_MAX], again[CACHE_MEMBERS_MAX];
	char err[256] = "";
	size_t n = 0;
	int r = cacheproto_parse_members(body, list, CACHE_MEMBERS_MAX, &n, err, sizeof(err));
	check_err(r, err);
	if (r == 0) {
		if (n > CACHE_MEMBERS_MAX)
			abort();
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 1);
		msg_pack_key(&pk, "members");
		msgpack_pack_array(&pk, (uint32_t)n);
		for (size_t i = 0; i < n; i++) {
			check_member(&list[i]);
			cacheproto_pack_member(&pk, &list[i]);
		}
		msgpack_unpacked u;
		size_t n2 = 0;
		if (msg_unpack((const uint8_t *)sb.data, sb.size, &u, err, sizeof(err)) != 0 ||
		    cacheproto_parse_members(&u.data, again, CACHE_MEMBERS_MAX, &n2, err,
		                             sizeof(err)) != 0 ||
		    n2 != n)
			abort();
		for (size_t i = 0; i < n; i++)
			if (!same_member(&list[i], &again[i]))
				abort();
		msgpack_unpacked_destroy(&u);
		msgpack_sbuffer_destroy(&sb);
		/* A small cap takes a prefix. */
		size_t n3 = 0;
		if (cacheproto_parse_members(body, again, 2, &n3, err, sizeof(err)) != 0 ||
		    n3 != (n < 2 ? n : 2))
			abort();
	}

	/* The body as one member (CACHE_REGISTER). */
	struct cache_member m;
	err[0] = '\0';
	r = cacheproto_parse_member(body, &m, err, sizeof(err));
	check_err(r, err);
	if (r == 0)
		check_member(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_BODY_MAX)
		return 0;
	/* A private copy, so reads past the body are caught. */
	uint8_t *body = malloc(size ? size : 1);
	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	msgpack_unpacked u;
	char err[256];
	if (msg_unpack(body, size, &u, err, sizeof(err)) == 0) {
		static const uint64_t block_sizes[] = {1, 4096, CACHE_BLOCK_MIN,
		                                       CACHE_BLOCK_DEFAULT, CACHE_BLOCK_MAX};
		for (size_t i = 0; i < sizeof(block_sizes) / sizeof(block_sizes[0]); i++)
			block_read(&u.data, block_sizes[i]);
		members(&u.data);
		msgpack_unpacked_destroy(&u);
	}
	free(body);
	return 0;
}
