#include "change.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "proto.h"
#include "txn.h"

void change_encode_txn(const struct namespace *ns, const struct txn *t, uint64_t version,
                       int64_t time, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	size_t n = txn_touched_count(t);
	uint32_t count = 0;
	struct node_rec rec;
	for (size_t i = 0; i < n; i++)
		if (namespace_get(ns, txn_touched_ino(t, i), &rec) == 0 ||
		    txn_touched_existed(t, i))
			count++;
	uint8_t digest[DIGEST_LEN];
	namespace_digest(ns, digest);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, version);
	msgpack_pack_int64(&pk, time);
	msg_pack_binn(&pk, digest, DIGEST_LEN);
	msgpack_pack_array(&pk, count);
	for (size_t i = 0; i < n; i++) {
		uint64_t ino = txn_touched_ino(t, i);
		if (namespace_get(ns, ino, &rec) == 0) {
			msgpack_pack_array(&pk, 2);
			msgpack_pack_uint8(&pk, MUT_PUT);
			msg_pack_node(&pk, &rec);
		} else if (txn_touched_existed(t, i)) {
			msgpack_pack_array(&pk, 2);
			msgpack_pack_uint8(&pk, MUT_DROP);
			msgpack_pack_uint64(&pk, ino);
		}
	}
}

int change_apply(struct namespace *ns, const uint8_t *record, size_t len, uint64_t expect_version,
                 uint64_t *ret_version, int64_t *ret_time, uint64_t *next_ino, char *err,
                 size_t errlen)
{
	msgpack_unpacked u;
	char why[256];
	if (msg_unpack(record, len, &u, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "change record: %s", why);
		return -EINVAL;
	}
	struct change_header h;
	int r = msg_parse_change(&u.data, &h, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "%s", why);
		goto out;
	}
	if (expect_version != 0 && h.version != expect_version) {
		snprintf(err, errlen, "got version %llu where %llu was expected",
		         (unsigned long long)h.version, (unsigned long long)expect_version);
		r = -ERANGE;
		goto out;
	}
	size_t n = h.mutations->size;
	struct ns_change *changes = calloc(n ? n : 1, sizeof(*changes));
	struct node_rec *recs = calloc(n ? n : 1, sizeof(*recs));
	if (changes == NULL || recs == NULL) {
		free(changes);
		free(recs);
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	uint64_t max_ino = 0;
	for (size_t i = 0; i < n; i++) {
		bool is_put;
		r = msg_parse_mutation(&h.mutations->ptr[i], &changes[i].ino, &recs[i], &is_put,
		                       why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "version %llu, mutation %zu: %s",
			         (unsigned long long)h.version, i, why);
			r = -EINVAL;
			goto free_out;
		}
		changes[i].rec = is_put ? &recs[i] : NULL;
		if (is_put && changes[i].ino > max_ino)
			max_ino = changes[i].ino;
	}
	r = namespace_apply(ns, changes, n, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "version %llu does not apply: %s",
		         (unsigned long long)h.version, why);
		r = -EBADMSG;
		goto free_out;
	}
	uint8_t digest[DIGEST_LEN];
	namespace_digest(ns, digest);
	if (memcmp(digest, h.digest, DIGEST_LEN) != 0) {
		snprintf(err, errlen, "digest after version %llu differs from the sender's",
		         (unsigned long long)h.version);
		r = -EBADMSG;
		goto free_out;
	}
	if (next_ino != NULL && max_ino >= *next_ino)
		*next_ino = max_ino + 1;
	*ret_version = h.version;
	if (ret_time != NULL)
		*ret_time = h.time;
	r = 0;
free_out:
	free(changes);
	free(recs);
out:
	msgpack_unpacked_destroy(&u);
	return r;
}

int change_each_put(const uint8_t *record, size_t len, void (*fn)(void *arg, uint64_t ino),
                    void *arg)
{
	msgpack_unpacked u;
	char why[256];
	if (msg_unpack(record, len, &u, why, sizeof(why)) < 0)
		return -EINVAL;
	struct change_header h;
	int r = msg_parse_change(&u.data, &h, why, sizeof(why));
	for (size_t i = 0; r == 0 && i < h.mutations->size; i++) {
		uint64_t ino;
		struct node_rec rec;
		bool is_put;
		r = msg_parse_mutation(&h.mutations->ptr[i], &ino, &rec, &is_put, why, sizeof(why));
		if (r == 0 && is_put)
			fn(arg, ino);
	}
	msgpack_unpacked_destroy(&u);
	return r < 0 ? -EINVAL : 0;
}
