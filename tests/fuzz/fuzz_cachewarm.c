/* Fuzz target for the warming messages of the cache group
 * (common/proto/cacheproto.c): the block list of CACHE_WARM / CACHE_HAS /
 * CACHE_EVICT, parsed at a few block sizes, and the per-block results of
 * their replies. What parses must keep the promises mp-cache's warm.c and
 * the mirror's warmrun.c rely on (at most CACHE_LIST_MAX whole blocks of
 * clean strings; results in -4095..1, exactly as many as blocks) and must
 * survive a round trip through the packer unchanged. */
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

static struct block_request list[CACHE_LIST_MAX], again[CACHE_LIST_MAX];

static void block_list(const msgpack_object *body, uint64_t bs)
{
	char err[256] = "";
	size_t n = 0;
	int r = cacheproto_parse_block_list(body, bs, list, CACHE_LIST_MAX, &n, err, sizeof(err));
	check_err(r, err);
	if (r != 0)
		return;
	if (n > CACHE_LIST_MAX)
		abort();
	for (size_t i = 0; i < n; i++) {
		const struct block_request *q = &list[i];
		check_text(q->bucket, CACHE_ALIAS_MAX);
		check_text(q->key, CACHE_KEY_MAX);
		check_text(q->etag, CACHE_ETAG_MAX);
		uint64_t end = (q->offset / bs + 1) * bs;
		if (end > q->size)
			end = q->size;
		if (q->offset % bs != 0 || q->length == 0 || q->offset + q->length != end ||
		    q->size > CACHE_OBJECT_MAX)
			abort();
	}
	/* Packed again, it parses to the same list. */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	cacheproto_pack_block_list(&pk, list, n);
	msgpack_unpacked u;
	size_t n2 = 0;
	if (msg_unpack((const uint8_t *)sb.data, sb.size, &u, err, sizeof(err)) != 0 ||
	    cacheproto_parse_block_list(&u.data, bs, again, CACHE_LIST_MAX, &n2, err,
	                                sizeof(err)) != 0 ||
	    n2 != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].bucket, again[i].bucket) != 0 ||
		    strcmp(list[i].key, again[i].key) != 0 ||
		    strcmp(list[i].etag, again[i].etag) != 0 || list[i].size != again[i].size ||
		    list[i].offset != again[i].offset || list[i].length != again[i].length ||
		    list[i].grant_len != again[i].grant_len ||
		    (list[i].grant_len > 0 &&
		     memcmp(list[i].grant, again[i].grant, list[i].grant_len) != 0))
			abort();
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	/* A list larger than the room is refused, not truncated. */
	if (n > 1) {
		size_t n3 = 0;
		if (cacheproto_parse_block_list(body, bs, again, n - 1, &n3, err, sizeof(err)) >= 0)
			abort();
	}
}

static void results(const msgpack_object *body)
{
	int out[CACHE_LIST_MAX];
	for (size_t n = 0; n <= CACHE_LIST_MAX; n += (n < 4 ? 1 : CACHE_LIST_MAX - 4)) {
		char err[256] = "";
		int r = cacheproto_parse_results(body, n, out, err, sizeof(err));
		check_err(r, err);
		for (size_t i = 0; r == 0 && i < n; i++)
			if (out[i] < -4095 || out[i] > 1)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_BODY_MAX)
		return 0;
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
			block_list(&u.data, block_sizes[i]);
		results(&u.data);
		msgpack_unpacked_destroy(&u);
	}
	free(body);
	return 0;
}
