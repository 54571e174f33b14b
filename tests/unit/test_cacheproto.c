/* The cache-group messages (common/proto/cacheproto.c): BLOCK_READ requests round
 * trip, and every way a request or a member list can be wrong is refused
 * with an error naming the field. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cacheproto.h"
#include "msg.h"

#define MiB (1024ull * 1024)

/* ---- building request bodies field by field ---- */

enum kind { K_U64, K_STR, K_BIN, K_BOOL, K_NIL, K_NEG, K_FLOAT, K_ARRAY, K_OMIT };

struct field {
	const char *key;
	enum kind kind;
	uint64_t u;
	const char *s;
	size_t slen; /* for K_STR / K_BIN; 0: strlen(s) */
};

static const struct field base_fields[] = {
    {"bucket", K_STR, 0, "photos-2024_a", 0},
    {"key", K_STR, 0, "albums/summer/IMG 0001.jpg", 0},
    {"etag", K_STR, 0, "\"9b2cf535f27731c974343645a3985328\"", 0},
    {"size", K_U64, 10 * MiB + 123, NULL, 0},
    {"offset", K_U64, 4 * MiB + 5, NULL, 0},
    {"length", K_U64, 1000, NULL, 0},
};
#define NBASE (sizeof(base_fields) / sizeof(base_fields[0]))

static void pack_field(msgpack_packer *pk, const struct field *f)
{
	msg_pack_key(pk, f->key);
	size_t len = f->s != NULL && f->slen == 0 ? strlen(f->s) : f->slen;
	switch (f->kind) {
	case K_U64:
		msgpack_pack_uint64(pk, f->u);
		break;
	case K_STR:
		msg_pack_strn(pk, f->s, len);
		break;
	case K_BIN:
		msg_pack_binn(pk, f->s, len);
		break;
	case K_BOOL:
		if (f->u)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		break;
	case K_NIL:
		msgpack_pack_nil(pk);
		break;
	case K_NEG:
		msgpack_pack_int64(pk, -(int64_t)f->u);
		break;
	case K_FLOAT:
		msgpack_pack_double(pk, (double)f->u + 0.5);
		break;
	case K_ARRAY:
		msgpack_pack_array(pk, 0);
		break;
	case K_OMIT:
		break;
	}
}

/* A packed body and its unpacked form, which points into the bytes. */
struct body {
	msgpack_sbuffer sb;
	msgpack_unpacked u;
};

static void body_free(struct body *b)
{
	msgpack_unpacked_destroy(&b->u);
	msgpack_sbuffer_destroy(&b->sb);
}

/* Packs the base request with up to two fields replaced (same key), added
 * (new key) or removed (K_OMIT), and unpacks it. */
static void build(struct body *b, const struct field *mod, size_t nmod)
{
	struct field all[NBASE + 4];
	size_t n = 0;
	for (size_t i = 0; i < NBASE; i++)
		all[n++] = base_fields[i];
	for (size_t m = 0; m < nmod; m++) {
		size_t i;
		for (i = 0; i < n; i++)
			if (strcmp(all[i].key, mod[m].key) == 0)
				break;
		all[i] = mod[m];
		if (i == n)
			n++;
	}
	uint32_t count = 0;
	for (size_t i = 0; i < n; i++)
		count += all[i].kind != K_OMIT;
	msgpack_packer pk;
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, count);
	for (size_t i = 0; i < n; i++)
		if (all[i].kind != K_OMIT)
			pack_field(&pk, &all[i]);
	char err[128];
	assert_int_equal(msg_unpack((uint8_t *)b->sb.data, b->sb.size, &b->u, err, sizeof(err)), 0);
}

/* Parses the base request as modified and expects rc with err naming
 * `names`; ret stays untouched. */
static void expect_bad_block_size(const struct field *mod, size_t nmod, uint64_t block_size, int rc,
                                  const char *names)
{
	struct body b;
	build(&b, mod, nmod);
	struct block_request req;
	memset(&req, 0xa5, sizeof(req));
	char err[256] = "";
	int r = cacheproto_parse_block_read(&b.u.data, block_size, &req, err, sizeof(err));
	if (r != rc || strstr(err, names) == NULL)
		fail_msg("field '%s': got %d (%s), want %d naming '%s'", mod[0].key, r, err, rc,
		         names);
	for (size_t i = 0; i < sizeof(req); i++)
		assert_int_equal(((unsigned char *)&req)[i], 0xa5);
	body_free(&b);
}

static void expect_bad(const struct field *mod, int rc, const char *names)
{
	expect_bad_block_size(mod, 1, 4 * MiB, rc, names);
}

static int parse_ok(const struct field *mod, size_t nmod, uint64_t block_size,
                    struct block_request *req)
{
	struct body b;
	build(&b, mod, nmod);
	char err[256] = "";
	int r = cacheproto_parse_block_read(&b.u.data, block_size, req, err, sizeof(err));
	if (r != 0)
		print_error("unexpected: %s\n", err);
	body_free(&b);
	return r;
}

/* ---- BLOCK_READ ---- */

static void round_trip(const struct block_request *in, uint32_t want_fields)
{
	msgpack_sbuffer fields, sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&fields);
	msgpack_packer_init(&pk, &fields, msgpack_sbuffer_write);
	uint32_t n = cacheproto_pack_block_fields(&pk, in);
	assert_int_equal(n, want_fields);
	/* A map with the request's fields and one the parser must ignore. */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n + 1);
	msg_pack_key(&pk, "trace");
	msg_pack_cstr(&pk, "abc");
	msg_pack_raw(&pk, fields.data, fields.size);

	msgpack_unpacked u;
	char err[256];
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	struct block_request out;
	memset(&out, 0x5a, sizeof(out));
	int r = cacheproto_parse_block_read(&u.data, 4 * MiB, &out, err, sizeof(err));
	if (r != 0)
		fail_msg("round trip: %s", err);
	assert_string_equal(out.bucket, in->bucket);
	assert_string_equal(out.key, in->key);
	assert_string_equal(out.etag, in->etag);
	assert_int_equal(out.size, in->size);
	assert_int_equal(out.offset, in->offset);
	assert_int_equal(out.length, in->length);
	assert_int_equal(out.peer, in->peer);
	if (in->grant == NULL) {
		assert_null(out.grant);
		assert_int_equal(out.grant_len, 0);
	} else {
		assert_non_null(out.grant);
		assert_int_equal(out.grant_len, in->grant_len);
		assert_memory_equal(out.grant, in->grant, in->grant_len);
		/* It points into the frame, not at the caller's bytes. */
		assert_ptr_not_equal(out.grant, in->grant);
	}
	assert_int_equal(cacheproto_block_index(&out, 4 * MiB), in->offset / (4 * MiB));
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&fields);
}

static void test_block_read_round_trip(void **state)
{
	(void)state;
	struct block_request req;
	memset(&req, 0, sizeof(req));
	strcpy(req.bucket, "media_B-7");
	strcpy(req.key, "dir/sub dir/file.bin");
	strcpy(req.etag, "\"d41d8cd98f00b204e9800998ecf8427e-3\"");
	req.size = 3 * 4 * MiB + 17;
	req.offset = 2 * 4 * MiB + 100;
	req.length = 4 * MiB - 100; /* to the end of block 2 */
	round_trip(&req, 6);

	req.peer = true;
	round_trip(&req, 7);

	static const char grant[] = "\x01\x02\x00grant-bytes\xff";
	req.grant = grant;
	req.grant_len = sizeof(grant) - 1;
	round_trip(&req, 8);

	/* The largest of everything. */
	memset(req.bucket, 'a', CACHE_ALIAS_MAX);
	req.bucket[CACHE_ALIAS_MAX] = '\0';
	memset(req.key, 'k', CACHE_KEY_MAX);
	req.key[CACHE_KEY_MAX] = '\0';
	memset(req.etag, 'e', CACHE_ETAG_MAX);
	req.etag[CACHE_ETAG_MAX] = '\0';
	req.size = CACHE_OBJECT_MAX;
	req.offset = CACHE_OBJECT_MAX - 1;
	req.length = 1;
	static char big_grant[CACHE_GRANT_MAX];
	memset(big_grant, 'g', sizeof(big_grant));
	req.grant = big_grant;
	req.grant_len = CACHE_GRANT_MAX;
	req.peer = false;
	round_trip(&req, 7);
}

static void test_block_read_ranges(void **state)
{
	(void)state;
	struct block_request req;
	/* The whole first block, and the last byte of the object. */
	struct field whole[] = {{"offset", K_U64, 0, NULL, 0}, {"length", K_U64, 4 * MiB, NULL, 0}};
	assert_int_equal(parse_ok(whole, 2, 4 * MiB, &req), 0);
	assert_int_equal(cacheproto_block_index(&req, 4 * MiB), 0);
	struct field last[] = {{"offset", K_U64, 10 * MiB + 122, NULL, 0},
	                       {"length", K_U64, 1, NULL, 0}};
	assert_int_equal(parse_ok(last, 2, 4 * MiB, &req), 0);
	assert_int_equal(cacheproto_block_index(&req, 4 * MiB), 2);
	/* The tail of a short last block, up to the object's size. */
	struct field tail[] = {{"offset", K_U64, 8 * MiB, NULL, 0},
	                       {"length", K_U64, 2 * MiB + 123, NULL, 0}};
	assert_int_equal(parse_ok(tail, 2, 4 * MiB, &req), 0);
	/* With 1 MiB blocks the same request is block 8. */
	struct field small[] = {{"offset", K_U64, 8 * MiB + 10, NULL, 0},
	                        {"length", K_U64, MiB - 10, NULL, 0}};
	assert_int_equal(parse_ok(small, 2, MiB, &req), 0);
	assert_int_equal(cacheproto_block_index(&req, MiB), 8);
	/* nil optional fields and peer false */
	struct field opt[] = {{"peer", K_BOOL, 0, NULL, 0}, {"grant", K_NIL, 0, NULL, 0}};
	assert_int_equal(parse_ok(opt, 2, 4 * MiB, &req), 0);
	assert_false(req.peer);
	assert_null(req.grant);
	/* No size/offset beyond 2^50 is needed, and none overflows. */
	struct field edge[] = {{"size", K_U64, CACHE_OBJECT_MAX, NULL, 0},
	                       {"offset", K_U64, CACHE_OBJECT_MAX - 4 * MiB, NULL, 0}};
	struct field edge2[] = {edge[0], edge[1], {"length", K_U64, 4 * MiB, NULL, 0}};
	assert_int_equal(parse_ok(edge2, 3, 4 * MiB, &req), 0);
}

static void test_block_read_missing(void **state)
{
	(void)state;
	static const char *const required[] = {"bucket", "key", "etag", "size", "offset", "length"};
	for (size_t i = 0; i < 6; i++) {
		struct field omit = {required[i], K_OMIT, 0, NULL, 0};
		expect_bad(&omit, -EINVAL, required[i]);
		struct field nil = {required[i], K_NIL, 0, NULL, 0};
		expect_bad(&nil, -EINVAL, required[i]);
	}
	/* Not a map at all. */
	msgpack_object o = {.type = MSGPACK_OBJECT_ARRAY};
	struct block_request req;
	char err[128] = "";
	assert_int_equal(cacheproto_parse_block_read(&o, 4 * MiB, &req, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "map"));
	assert_int_equal(cacheproto_parse_block_read(NULL, 4 * MiB, &req, err, sizeof(err)),
	                 -EINVAL);
}

static void test_block_read_types(void **state)
{
	(void)state;
	static const struct {
		struct field f;
		const char *names;
	} cases[] = {
	    {{"bucket", K_U64, 7, NULL, 0}, "bucket"}, {{"bucket", K_ARRAY, 0, NULL, 0}, "bucket"},
	    {{"key", K_BOOL, 1, NULL, 0}, "key"},      {{"etag", K_U64, 1, NULL, 0}, "etag"},
	    {{"size", K_STR, 0, "100", 0}, "size"},    {{"size", K_NEG, 1, NULL, 0}, "size"},
	    {{"offset", K_NEG, 5, NULL, 0}, "offset"}, {{"offset", K_FLOAT, 5, NULL, 0}, "offset"},
	    {{"length", K_STR, 0, "1", 0}, "length"},  {{"length", K_BOOL, 1, NULL, 0}, "length"},
	    {{"peer", K_U64, 1, NULL, 0}, "peer"},     {{"peer", K_STR, 0, "true", 0}, "peer"},
	    {{"grant", K_U64, 1, NULL, 0}, "grant"},   {{"grant", K_BOOL, 1, NULL, 0}, "grant"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad(&cases[i].f, -EINVAL, cases[i].names);
}

static void test_block_read_values(void **state)
{
	(void)state;
	char long_alias[CACHE_ALIAS_MAX + 2], long_key[CACHE_KEY_MAX + 2],
	    long_etag[CACHE_ETAG_MAX + 2], grant[CACHE_GRANT_MAX + 2];
	memset(long_alias, 'a', sizeof(long_alias) - 1);
	long_alias[sizeof(long_alias) - 1] = '\0';
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	memset(long_etag, 'e', sizeof(long_etag) - 1);
	long_etag[sizeof(long_etag) - 1] = '\0';
	memset(grant, 'g', sizeof(grant) - 1);
	grant[sizeof(grant) - 1] = '\0';

	/* length */
	struct field zero = {"length", K_U64, 0, NULL, 0};
	expect_bad(&zero, -EINVAL, "length");
	struct field over_max = {"length", K_U64, CACHE_BLOCK_MAX + 1ull, NULL, 0};
	expect_bad(&over_max, -EINVAL, "length");
	/* longer than the node's block (from a block start, so only the
	 * length is wrong) */
	struct field past_block[] = {{"offset", K_U64, 0, NULL, 0},
	                             {"length", K_U64, MiB + 1, NULL, 0}};
	expect_bad_block_size(past_block, 2, MiB, -EINVAL, "length");
	/* crossing a block boundary */
	struct field cross[] = {{"offset", K_U64, 4 * MiB - 10, NULL, 0},
	                        {"length", K_U64, 20, NULL, 0}};
	expect_bad_block_size(cross, 2, 4 * MiB, -EINVAL, "block boundary");
	struct field cross1[] = {{"offset", K_U64, 4 * MiB - 1, NULL, 0},
	                         {"length", K_U64, 2, NULL, 0}};
	expect_bad_block_size(cross1, 2, 4 * MiB, -EINVAL, "block boundary");
	/* past the object's size, by one byte and far */
	struct field past_size[] = {{"offset", K_U64, 10 * MiB + 123, NULL, 0},
	                            {"length", K_U64, 1, NULL, 0}};
	expect_bad_block_size(past_size, 2, 4 * MiB, -EINVAL, "size");
	struct field past_size2[] = {{"size", K_U64, 100, NULL, 0},
	                             {"offset", K_U64, 1 * MiB, NULL, 0}};
	expect_bad_block_size(past_size2, 2, 4 * MiB, -EINVAL, "size");
	struct field huge_size = {"size", K_U64, CACHE_OBJECT_MAX + 1, NULL, 0};
	expect_bad(&huge_size, -EINVAL, "size");
	struct field huge_offset = {"offset", K_U64, UINT64_MAX, NULL, 0};
	expect_bad(&huge_offset, -EINVAL, "offset");

	/* bucket aliases */
	static const char *const bad_aliases[] = {"a/b", "../x", "a b", "a.b", "a:b", "ä"};
	for (size_t i = 0; i < sizeof(bad_aliases) / sizeof(bad_aliases[0]); i++) {
		struct field f = {"bucket", K_STR, 0, bad_aliases[i], 0};
		expect_bad(&f, -EINVAL, "bucket");
	}
	struct field empty_alias = {"bucket", K_STR, 0, "", 0};
	expect_bad(&empty_alias, -EINVAL, "bucket");
	struct field alias_long = {"bucket", K_STR, 0, long_alias, 0};
	expect_bad(&alias_long, -E2BIG, "bucket");
	struct field alias_nul = {"bucket", K_STR, 0, "ab\0cd", 5};
	expect_bad(&alias_nul, -EINVAL, "bucket");

	/* control bytes and NUL in key and etag */
	static const char *const bad_keys[] = {"a\nb", "a\tb", "\x01", "x\x7f", "a\rb", "\x1f"};
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		struct field f = {"key", K_STR, 0, bad_keys[i], 0};
		expect_bad(&f, -EINVAL, "key");
		struct field g = {"etag", K_STR, 0, bad_keys[i], 0};
		expect_bad(&g, -EINVAL, "etag");
	}
	struct field key_nul = {"key", K_STR, 0, "a\0b", 3};
	expect_bad(&key_nul, -EINVAL, "key");
	struct field key_nul_bin = {"key", K_BIN, 0, "a\0b", 3};
	expect_bad(&key_nul_bin, -EINVAL, "key");
	struct field empty_key = {"key", K_STR, 0, "", 0};
	expect_bad(&empty_key, -EINVAL, "key");
	struct field key_long = {"key", K_STR, 0, long_key, 0};
	expect_bad(&key_long, -E2BIG, "key");
	struct field etag_long = {"etag", K_STR, 0, long_etag, 0};
	expect_bad(&etag_long, -E2BIG, "etag");
	struct field empty_etag = {"etag", K_STR, 0, "", 0};
	expect_bad(&empty_etag, -EINVAL, "etag");

	/* grants: at most CACHE_GRANT_MAX bytes, not empty */
	struct field grant_big = {"grant", K_BIN, 0, grant, CACHE_GRANT_MAX + 1};
	expect_bad(&grant_big, -E2BIG, "grant");
	struct field grant_empty = {"grant", K_BIN, 0, "", 0};
	expect_bad(&grant_empty, -EINVAL, "grant");
	struct block_request req;
	struct field grant_max = {"grant", K_BIN, 0, grant, CACHE_GRANT_MAX};
	assert_int_equal(parse_ok(&grant_max, 1, 4 * MiB, &req), 0);
	assert_int_equal(req.grant_len, CACHE_GRANT_MAX);
	/* a key with UTF-8 and spaces is fine */
	struct field utf8 = {"key", K_STR, 0, "Fotos/Größe 1.jpg", 0};
	assert_int_equal(parse_ok(&utf8, 1, 4 * MiB, &req), 0);
	assert_string_equal(req.key, "Fotos/Größe 1.jpg");
}

/* ---- members ---- */

static void fill_member(struct cache_member *m, int i)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->address, sizeof(m->address), "10.0.%d.%d:7400", i / 250, i % 250 + 1);
	m->weight = (uint64_t)(i % 7) * 100;
	m->state = (enum cache_state)(i % 3);
	m->block_size = 4 * MiB;
	m->used = 1000ull * (uint64_t)i;
	m->capacity = 1ull << 40;
	m->hits = UINT64_MAX - (uint64_t)i;
	m->misses = (uint64_t)i * 3;
	m->age_ms = (uint64_t)i * 17;
}

/* {site, members: [n members, with item `bad` replaced by raw bytes]} */
static void build_members(struct body *b, size_t n, long bad, const void *raw, size_t rawlen)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msg_pack_key(&pk, "site");
	msg_pack_cstr(&pk, "paris");
	msg_pack_key(&pk, "members");
	msgpack_pack_array(&pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		if ((long)i == bad) {
			msg_pack_raw(&pk, raw, rawlen);
			continue;
		}
		struct cache_member m;
		fill_member(&m, (int)i);
		cacheproto_pack_member(&pk, &m);
	}
	char err[128];
	assert_int_equal(msg_unpack((uint8_t *)b->sb.data, b->sb.size, &b->u, err, sizeof(err)), 0);
}

static void test_members_round_trip(void **state)
{
	(void)state;
	static struct cache_member out[CACHE_MEMBERS_MAX];
	char err[256];
	size_t sizes[] = {0, 1, 3, CACHE_MEMBERS_MAX};
	for (size_t s = 0; s < 4; s++) {
		struct body b;
		build_members(&b, sizes[s], -1, NULL, 0);
		size_t n = 12345;
		int r = cacheproto_parse_members(&b.u.data, out, CACHE_MEMBERS_MAX, &n, err,
		                                 sizeof(err));
		if (r != 0)
			fail_msg("%zu members: %s", sizes[s], err);
		assert_int_equal(n, sizes[s]);
		for (size_t i = 0; i < n; i++) {
			struct cache_member want;
			fill_member(&want, (int)i);
			assert_string_equal(out[i].address, want.address);
			assert_int_equal(out[i].weight, want.weight);
			assert_int_equal(out[i].state, want.state);
			assert_int_equal(out[i].block_size, want.block_size);
			assert_int_equal(out[i].used, want.used);
			assert_int_equal(out[i].capacity, want.capacity);
			assert_int_equal(out[i].hits, want.hits);
			assert_int_equal(out[i].misses, want.misses);
			assert_int_equal(out[i].age_ms, want.age_ms);
		}
		/* A smaller cap takes the first ones. */
		if (sizes[s] >= 3) {
			assert_int_equal(
			    cacheproto_parse_members(&b.u.data, out, 2, &n, err, sizeof(err)), 0);
			assert_int_equal(n, 2);
		}
		body_free(&b);
	}
	assert_string_equal(cacheproto_state_name(CACHE_ACTIVE), "active");
	assert_string_equal(cacheproto_state_name(CACHE_WARMING), "warming");
	assert_string_equal(cacheproto_state_name(CACHE_DRAINING), "draining");
	assert_string_equal(cacheproto_state_name((enum cache_state)7), "unknown");
}

/* A CACHE_REGISTER body: one member map, packed with the fields form
 * inside a map of our own; counters are optional. */
static void test_member_register(void **state)
{
	(void)state;
	struct cache_member m, out;
	fill_member(&m, 42);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, CACHEPROTO_MEMBER_FIELDS + 1);
	msg_pack_key(&pk, "token");
	msg_pack_cstr(&pk, "t0k3n");
	cacheproto_pack_member_fields(&pk, &m);
	msgpack_unpacked u;
	char err[256];
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	assert_int_equal(cacheproto_parse_member(&u.data, &out, err, sizeof(err)), 0);
	assert_string_equal(out.address, m.address);
	assert_int_equal(out.state, m.state);
	assert_int_equal(out.hits, m.hits);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);

	/* Only the required fields. */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	msg_pack_key(&pk, "address");
	msg_pack_cstr(&pk, "[::1]:7400");
	msg_pack_key(&pk, "weight");
	msgpack_pack_uint64(&pk, 1000000);
	msg_pack_key(&pk, "state");
	msg_pack_cstr(&pk, "draining");
	msg_pack_key(&pk, "block_size");
	msgpack_pack_uint64(&pk, CACHE_BLOCK_MIN);
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	memset(&out, 0xff, sizeof(out));
	assert_int_equal(cacheproto_parse_member(&u.data, &out, err, sizeof(err)), 0);
	assert_int_equal(out.state, CACHE_DRAINING);
	assert_int_equal(out.weight, 1000000);
	assert_int_equal(out.used + out.capacity + out.hits + out.misses + out.age_ms, 0);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
}

/* A member map with one field replaced (or removed with K_OMIT). */
static void expect_bad_member(const struct field *mod, int rc, const char *names)
{
	static const struct field member_fields[] = {
	    {"address", K_STR, 0, "cache-1.example:7400", 0},
	    {"weight", K_U64, 100, NULL, 0},
	    {"state", K_STR, 0, "active", 0},
	    {"block_size", K_U64, 4 * MiB, NULL, 0},
	    {"used", K_U64, 1, NULL, 0},
	    {"capacity", K_U64, 2, NULL, 0},
	};
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	bool replaced = false;
	uint32_t n = 6;
	for (size_t i = 0; i < 6; i++)
		if (strcmp(member_fields[i].key, mod->key) == 0)
			replaced = true;
	if (!replaced)
		n++;
	if (mod->kind == K_OMIT)
		n--;
	msgpack_pack_map(&pk, n);
	for (size_t i = 0; i < 6; i++)
		if (strcmp(member_fields[i].key, mod->key) == 0) {
			if (mod->kind != K_OMIT)
				pack_field(&pk, mod);
		} else {
			pack_field(&pk, &member_fields[i]);
		}
	if (!replaced)
		pack_field(&pk, mod);

	/* Alone, as a CACHE_REGISTER body ... */
	msgpack_unpacked u;
	char err[256] = "";
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	struct cache_member out;
	memset(&out, 0xa5, sizeof(out));
	int r = cacheproto_parse_member(&u.data, &out, err, sizeof(err));
	if (r != rc || strstr(err, names) == NULL)
		fail_msg("member '%s': got %d (%s), want %d naming '%s'", mod->key, r, err, rc,
		         names);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(((unsigned char *)&out)[i], 0xa5);
	msgpack_unpacked_destroy(&u);

	/* ... and as the third item of a members list. */
	struct body b;
	build_members(&b, 5, 2, sb.data, sb.size);
	static struct cache_member list[8];
	size_t got = 99;
	err[0] = '\0';
	r = cacheproto_parse_members(&b.u.data, list, 8, &got, err, sizeof(err));
	if (r != rc || strstr(err, names) == NULL || strstr(err, "members[2]") == NULL)
		fail_msg("members[2] '%s': got %d (%s), want %d naming '%s'", mod->key, r, err, rc,
		         names);
	assert_int_equal(got, 99);
	body_free(&b);
	msgpack_sbuffer_destroy(&sb);
}

static void test_member_bad(void **state)
{
	(void)state;
	char long_addr[CACHE_ADDRESS_MAX + 2];
	memset(long_addr, 'h', sizeof(long_addr) - 1);
	long_addr[sizeof(long_addr) - 1] = '\0';
	static const char *const required[] = {"address", "weight", "state", "block_size"};
	for (size_t i = 0; i < 4; i++) {
		struct field omit = {required[i], K_OMIT, 0, NULL, 0};
		expect_bad_member(&omit, -EINVAL, required[i]);
	}
	static const char *const bad_states[] = {"sleeping", "Active", "activ", "active "};
	for (size_t i = 0; i < 4; i++) {
		struct field f = {"state", K_STR, 0, bad_states[i], 0};
		expect_bad_member(&f, -EINVAL, "state");
	}
	struct field state_int = {"state", K_U64, 0, NULL, 0};
	expect_bad_member(&state_int, -EINVAL, "state");
	struct field state_long = {"state", K_STR, 0, "activeactiveactiveactive", 0};
	struct field bs_small = {"block_size", K_U64, CACHE_BLOCK_MIN - 1, NULL, 0};
	expect_bad_member(&bs_small, -EINVAL, "block_size");
	struct field bs_zero = {"block_size", K_U64, 0, NULL, 0};
	expect_bad_member(&bs_zero, -EINVAL, "block_size");
	struct field bs_big = {"block_size", K_U64, CACHE_BLOCK_MAX + 1ull, NULL, 0};
	expect_bad_member(&bs_big, -EINVAL, "block_size");
	struct field bs_neg = {"block_size", K_NEG, 1, NULL, 0};
	expect_bad_member(&bs_neg, -EINVAL, "block_size");
	struct field w_big = {"weight", K_U64, 1000001, NULL, 0};
	expect_bad_member(&w_big, -EINVAL, "weight");
	struct field w_str = {"weight", K_STR, 0, "1", 0};
	expect_bad_member(&w_str, -EINVAL, "weight");
	struct field addr_long = {"address", K_STR, 0, long_addr, 0};
	expect_bad_member(&addr_long, -E2BIG, "address");
	struct field addr_ctl = {"address", K_STR, 0, "host\n:1", 0};
	expect_bad_member(&addr_ctl, -EINVAL, "address");
	struct field addr_empty = {"address", K_STR, 0, "", 0};
	expect_bad_member(&addr_empty, -EINVAL, "address");
	struct field hits_str = {"hits", K_STR, 0, "5", 0};
	expect_bad_member(&hits_str, -EINVAL, "hits");
	struct field used_neg = {"used", K_NEG, 3, NULL, 0};
	expect_bad_member(&used_neg, -EINVAL, "used");
	struct field age_float = {"age_ms", K_FLOAT, 3, NULL, 0};
	expect_bad_member(&age_float, -EINVAL, "age_ms");
	/* A state name too long to be one is refused too (as too long). */
	expect_bad_member(&state_long, -E2BIG, "state");
}

static void test_members_list_bad(void **state)
{
	(void)state;
	static struct cache_member out[CACHE_MEMBERS_MAX + 1];
	char err[256];
	size_t n = 7;
	struct body b;

	/* more than 256 */
	build_members(&b, CACHE_MEMBERS_MAX + 1, -1, NULL, 0);
	err[0] = '\0';
	assert_int_equal(
	    cacheproto_parse_members(&b.u.data, out, CACHE_MEMBERS_MAX + 1, &n, err, sizeof(err)),
	    -E2BIG);
	assert_non_null(strstr(err, "members"));
	assert_int_equal(n, 7);
	body_free(&b);

	/* items that are not maps */
#define RAW(s)                                                                                     \
	{                                                                                          \
		s, sizeof(s) - 1                                                                   \
	}
	static const struct {
		const char *raw;
		size_t len;
	} items[] = {
	    RAW("\x90"), /* [] */
	    RAW("\xc0"), /* nil */
	    RAW("\x05"), /* 5 */
	    RAW("\xa6"
	        "active"), /* "active" */
	    /* a member as an array: ["x", 1, "active", 4 MiB] */
	    RAW("\x94\xa1x\x01\xa6"
	        "active\xce\x00\x40\x00\x00"),
	};
	for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
		build_members(&b, 3, (long)(i % 3), items[i].raw, items[i].len);
		err[0] = '\0';
		assert_int_equal(cacheproto_parse_members(&b.u.data, out, CACHE_MEMBERS_MAX, &n,
		                                          err, sizeof(err)),
		                 -EINVAL);
		char want[32];
		snprintf(want, sizeof(want), "members[%zu]", i % 3);
		if (strstr(err, want) == NULL)
			fail_msg("item %zu: '%s' does not name %s", i, err, want);
		assert_int_equal(n, 7);
		body_free(&b);
	}

	/* members missing, or not an array; body not a map */
	static const struct {
		const char *raw;
		size_t len;
	} bodies[] = {
	    RAW("\x80"),                /* {} */
	    RAW("\x81\xa7members\xc0"), /* {members: nil} */
	    RAW("\x81\xa7members\x80"), /* {members: {}} */
	    RAW("\x81\xa7members\xa3"
	        "abc"),                 /* {members: "abc"} */
	    RAW("\x81\xa7members\x07"), /* {members: 7} */
	    RAW("\x91\x90"),            /* [[]] */
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		msgpack_unpacked u;
		assert_int_equal(
		    msg_unpack((const uint8_t *)bodies[i].raw, bodies[i].len, &u, err, sizeof(err)),
		    0);
		err[0] = '\0';
		assert_int_equal(
		    cacheproto_parse_members(&u.data, out, CACHE_MEMBERS_MAX, &n, err, sizeof(err)),
		    -EINVAL);
		if (strstr(err, "members") == NULL)
			fail_msg("body %zu: '%s' does not name members", i, err);
		assert_int_equal(n, 7);
		msgpack_unpacked_destroy(&u);
	}
	msgpack_object not_map = {.type = MSGPACK_OBJECT_NIL};
	struct cache_member one;
	assert_int_equal(cacheproto_parse_member(&not_map, &one, err, sizeof(err)), -EINVAL);
	assert_int_equal(cacheproto_parse_member(NULL, &one, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_block_read_round_trip), cmocka_unit_test(test_block_read_ranges),
	    cmocka_unit_test(test_block_read_missing),    cmocka_unit_test(test_block_read_types),
	    cmocka_unit_test(test_block_read_values),     cmocka_unit_test(test_members_round_trip),
	    cmocka_unit_test(test_member_register),       cmocka_unit_test(test_member_bad),
	    cmocka_unit_test(test_members_list_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
