#include "change.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

int change_apply(struct namespace *ns, const uint8_t *record, size_t len, uint64_t expect_version,
                 uint64_t *ret_version, uint64_t *next_ino, char *err, size_t errlen)
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
	r = 0;
free_out:
	free(changes);
	free(recs);
out:
	msgpack_unpacked_destroy(&u);
	return r;
}
