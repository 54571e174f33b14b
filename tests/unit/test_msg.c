/* Unit tests of the codec: the structural check of untrusted msgpack,
 * frames, typed field access, and node / change record round trips. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg.h"
#include "proto.h"

static void test_check_valid_and_truncated(void **state)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msg_pack_cstr(&pk, "a");
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint64(&pk, UINT64_MAX);
	msgpack_pack_int64(&pk, -5);
	msgpack_pack_double(&pk, 1.5);
	msg_pack_cstr(&pk, "b");
	msg_pack_binn(&pk, "xyz", 3);
	char err[128];
	size_t used;
	assert_int_equal(msg_check((uint8_t *)sb.data, sb.size, 16, &used, err, sizeof(err)), 0);
	assert_int_equal(used, sb.size);
	/* Truncated: never accepted (-EAGAIN, or -EINVAL once a container
	 * claims more items than the bytes left could hold). */
	for (size_t cut = 0; cut < sb.size; cut++)
		assert_true(msg_check((uint8_t *)sb.data, cut, 16, &used, err, sizeof(err)) < 0);
	msgpack_unpacked u;
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	msgpack_unpacked_destroy(&u);
	/* Trailing bytes are refused by msg_unpack. */
	msgpack_sbuffer_write(&sb, "\x01", 1);
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "trailing"));
	msgpack_sbuffer_destroy(&sb);
}

static void test_check_hostile(void **state)
{
	char err[128];
	size_t used;
	static const uint8_t never_used[] = {0xc1};
	assert_int_equal(msg_check(never_used, 1, 16, &used, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "0xc1"));
	/* array32 claiming 4 billion items in 5 bytes */
	static const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
	assert_int_equal(msg_check(huge_array, sizeof(huge_array), 16, &used, err, sizeof(err)),
	                 -EINVAL);
	static const uint8_t huge_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
	assert_int_equal(msg_check(huge_map, sizeof(huge_map), 16, &used, err, sizeof(err)),
	                 -EINVAL);
	/* str32 claiming 4 GiB */
	static const uint8_t huge_str[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
	assert_int_equal(msg_check(huge_str, sizeof(huge_str), 16, &used, err, sizeof(err)),
	                 -EAGAIN);
	/* nesting beyond the limit */
	uint8_t deep[64];
	memset(deep, 0x91, sizeof(deep));
	deep[63] = 0x01;
	assert_int_equal(msg_check(deep, sizeof(deep), 16, &used, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "deeper"));
	assert_int_equal(msg_check(deep + 50, 14, 16, &used, err, sizeof(err)), 0);
	/* ext types pass the structural check (they are refused by field access) */
	static const uint8_t fixext[] = {0xd4, 0x01, 0x02};
	assert_int_equal(msg_check(fixext, sizeof(fixext), 16, &used, err, sizeof(err)), 0);
}

static void build_frame(msgpack_sbuffer *sb, uint32_t type, uint64_t id)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, type, id, 3);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, "/a/b");
	msg_pack_key(&pk, "mode");
	msgpack_pack_uint32(&pk, 0700);
	msg_pack_key(&pk, "mtime");
	msgpack_pack_int64(&pk, -3);
	msg_end(sb);
}

static void test_frame_round_trip(void **state)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	build_frame(&sb, MT_MKDIR, 77);
	uint32_t len = (uint32_t)((uint8_t)sb.data[0] << 24 | (uint8_t)sb.data[1] << 16 |
	                          (uint8_t)sb.data[2] << 8 | (uint8_t)sb.data[3]);
	assert_int_equal(len, sb.size - 4);
	struct frame f;
	uint64_t id = 0;
	char err[128];
	assert_int_equal(frame_decode((uint8_t *)sb.data + 4, len, &f, &id, err, sizeof(err)), 0);
	assert_int_equal(f.type, MT_MKDIR);
	assert_int_equal(f.id, 77);
	const char *p;
	size_t plen;
	assert_int_equal(msg_get_bytes(f.body, "path", true, 1, 100, &p, &plen, err, sizeof(err)),
	                 0);
	assert_int_equal(plen, 4);
	uint64_t mode;
	assert_int_equal(msg_get_u64(f.body, "mode", true, 07777, &mode, err, sizeof(err)), 0);
	assert_int_equal(mode, 0700);
	assert_int_equal(msg_get_u64(f.body, "mode", true, 0600, &mode, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "maximum"));
	int64_t mt;
	assert_int_equal(msg_get_i64(f.body, "mtime", true, &mt, err, sizeof(err)), 0);
	assert_int_equal(mt, -3);
	assert_int_equal(msg_get_u64(f.body, "mtime", true, UINT64_MAX, &mode, err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "'mtime'"));
	assert_int_equal(msg_get_u64(f.body, "absent", false, 1, &mode, err, sizeof(err)), 1);
	assert_int_equal(msg_get_u64(f.body, "absent", true, 1, &mode, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "missing"));
	assert_int_equal(msg_get_bytes(f.body, "mode", true, 1, 100, &p, &plen, err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "expected string"));
	assert_int_equal(msg_get_bytes(f.body, "path", true, 1, 2, &p, &plen, err, sizeof(err)),
	                 -E2BIG);
	frame_release(&f);
	msgpack_sbuffer_destroy(&sb);
}

static void test_frame_shapes(void **state)
{
	char err[128];
	struct frame f;
	uint64_t id = 0;
	static const uint8_t not_array[] = {0x81, 0xa1, 'a', 0x01};
	assert_int_equal(frame_decode(not_array, sizeof(not_array), &f, &id, err, sizeof(err)),
	                 -EINVAL);
	static const uint8_t body_not_map[] = {0x93, 0x0a, 0x05, 0x01};
	assert_int_equal(
	    frame_decode(body_not_map, sizeof(body_not_map), &f, &id, err, sizeof(err)), -EINVAL);
	assert_int_equal(id, 5); /* so that the error can still be answered */
	static const uint8_t int_keys[] = {0x93, 0x0a, 0x05, 0x81, 0x01, 0x01};
	assert_int_equal(frame_decode(int_keys, sizeof(int_keys), &f, &id, err, sizeof(err)),
	                 -EINVAL);
	static const uint8_t neg_type[] = {0x93, 0xff, 0x05, 0x80};
	assert_int_equal(frame_decode(neg_type, sizeof(neg_type), &f, &id, err, sizeof(err)),
	                 -EINVAL);
	static const uint8_t ok[] = {0x93, 0x0a, 0x05, 0x80};
	assert_int_equal(frame_decode(ok, sizeof(ok), &f, &id, err, sizeof(err)), 0);
	frame_release(&f);
}

static void test_node_round_trip(void **state)
{
	msgpack_sbuffer layout;
	msgpack_sbuffer_init(&layout);
	msgpack_packer lp;
	msgpack_packer_init(&lp, &layout, msgpack_sbuffer_write);
	msgpack_pack_array(&lp, 1);
	msgpack_pack_array(&lp, 5);
	msg_pack_cstr(&lp, "origin");
	msg_pack_cstr(&lp, "objects/ab/cd");
	msg_pack_cstr(&lp, "etag");
	msgpack_pack_uint64(&lp, 0);
	msgpack_pack_uint64(&lp, 4096);
	struct node_rec in = {
	    .ino = UINT64_MAX - 1,
	    .parent = 1,
	    .size = 4096,
	    .mtime = -1,
	    .ctime = INT64_MAX,
	    .mode = 0644,
	    .uid = UINT32_MAX,
	    .gid = 7,
	    .type = NODE_FILE,
	    .name = "n\xffme",
	    .name_len = 4,
	    .extra = (const uint8_t *)layout.data,
	    .extra_len = (uint32_t)layout.size,
	};
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msg_pack_node(&pk, &in);
	msgpack_unpacked u;
	char err[128];
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	struct node_rec out;
	assert_int_equal(msg_parse_node(&u.data, &out, err, sizeof(err)), 0);
	assert_int_equal(out.ino, in.ino);
	assert_int_equal(out.mtime, -1);
	assert_int_equal(out.ctime, INT64_MAX);
	assert_int_equal(out.uid, UINT32_MAX);
	assert_int_equal(out.name_len, 4);
	assert_memory_equal(out.name, in.name, 4);
	assert_int_equal(out.extra_len, in.extra_len);
	assert_memory_equal(out.extra, in.extra, in.extra_len);
	msgpack_unpacked_destroy(&u);

	/* A wrong type in one field is named. */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 11);
	for (int i = 0; i < 11; i++) {
		if (i == 4)
			msg_pack_cstr(&pk, "rwx");
		else if (i == 2)
			msg_pack_cstr(&pk, "x");
		else if (i == 10)
			msgpack_pack_nil(&pk);
		else
			msgpack_pack_uint8(&pk, i == 3 ? NODE_FILE : 2);
	}
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	assert_int_equal(msg_parse_node(&u.data, &out, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'mode'"));
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&layout);
}

static void test_change_record(void **state)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	struct node_rec d = {
	    .ino = 2, .parent = 1, .type = NODE_DIR, .mode = 0755, .name = "d", .name_len = 1};
	uint8_t digest[16];
	memset(digest, 0xab, sizeof(digest));
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, 9);
	msgpack_pack_int64(&pk, 123456789);
	msg_pack_binn(&pk, digest, 16);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, MUT_PUT);
	msg_pack_node(&pk, &d);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, MUT_DROP);
	msgpack_pack_uint64(&pk, 3);
	msgpack_unpacked u;
	char err[128];
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	struct change_header h;
	assert_int_equal(msg_parse_change(&u.data, &h, err, sizeof(err)), 0);
	assert_int_equal(h.version, 9);
	assert_int_equal(h.time, 123456789);
	assert_memory_equal(h.digest, digest, 16);
	assert_int_equal(h.mutations->size, 2);
	uint64_t ino;
	struct node_rec rec;
	bool is_put;
	assert_int_equal(
	    msg_parse_mutation(&h.mutations->ptr[0], &ino, &rec, &is_put, err, sizeof(err)), 0);
	assert_true(is_put);
	assert_int_equal(ino, 2);
	assert_int_equal(
	    msg_parse_mutation(&h.mutations->ptr[1], &ino, &rec, &is_put, err, sizeof(err)), 0);
	assert_false(is_put);
	assert_int_equal(ino, 3);
	msgpack_unpacked_destroy(&u);

	/* version 0 and a short digest are refused */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, 0);
	msgpack_pack_int64(&pk, 1);
	msg_pack_binn(&pk, digest, 15);
	msgpack_pack_array(&pk, 0);
	assert_int_equal(msg_unpack((uint8_t *)sb.data, sb.size, &u, err, sizeof(err)), 0);
	assert_int_equal(msg_parse_change(&u.data, &h, err, sizeof(err)), -EINVAL);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
}

static void test_layout_check(void **state)
{
	char err[160];
	static const uint8_t empty[] = {0x90};
	assert_int_equal(node_check_layout(empty, 1, err, sizeof(err)), 0);
	static const uint8_t not_array[] = {0x01};
	assert_int_equal(node_check_layout(not_array, 1, err, sizeof(err)), -EINVAL);
	/* [["", "k", "e", 0, 1]]: empty bucket alias */
	static const uint8_t empty_bucket[] = {0x91, 0x95, 0xa0, 0xa1, 'k', 0xa1, 'e', 0x00, 0x01};
	assert_int_equal(node_check_layout(empty_bucket, sizeof(empty_bucket), err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "bucket"));
	uint8_t *big = calloc(1, NODE_LAYOUT_MAX + 1);
	assert_int_equal(node_check_layout(big, NODE_LAYOUT_MAX + 1, err, sizeof(err)), -E2BIG);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_check_valid_and_truncated),
	    cmocka_unit_test(test_check_hostile),
	    cmocka_unit_test(test_frame_round_trip),
	    cmocka_unit_test(test_frame_shapes),
	    cmocka_unit_test(test_node_round_trip),
	    cmocka_unit_test(test_change_record),
	    cmocka_unit_test(test_layout_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
