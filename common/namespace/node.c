#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "msg.h"
#include "proto.h"

int node_check_name(const char *name, size_t len)
{
	if (len == 0 || len > NODE_NAME_MAX)
		return -EINVAL;
	if (memchr(name, '/', len) != NULL || memchr(name, '\0', len) != NULL)
		return -EINVAL;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return -EINVAL;
	return 0;
}

const char *node_type_name(uint8_t type)
{
	switch (type) {
	case NODE_DIR:
		return "directory";
	case NODE_FILE:
		return "file";
	case NODE_SYMLINK:
		return "symlink";
	case NODE_RECORD:
		return "record";
	default:
		return "unknown";
	}
}

static int check_str(const msgpack_object *o, size_t min, size_t max)
{
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size >= min && o->via.str.size <= max;
}

int node_check_layout(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	if (len > NODE_LAYOUT_MAX) {
		snprintf(err, errlen, "layout is %zu bytes, at most %d allowed", len,
		         NODE_LAYOUT_MAX);
		return -E2BIG;
	}
	msgpack_unpacked u;
	char why[128];
	if (msg_unpack(buf, len, &u, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "layout: %s", why);
		return -EINVAL;
	}
	int r = 0;
	const msgpack_object *o = &u.data;
	if (o->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "layout must be an array of extents");
		r = -EINVAL;
		goto out;
	}
	if (o->via.array.size > NODE_EXTENTS_MAX) {
		snprintf(err, errlen, "layout has %u extents, at most %d allowed",
		         o->via.array.size, NODE_EXTENTS_MAX);
		r = -E2BIG;
		goto out;
	}
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];
		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 5) {
			snprintf(err, errlen,
			         "layout extent %u must be [bucket, key, etag, offset, length]", i);
			r = -EINVAL;
			goto out;
		}
		const msgpack_object *f = e->via.array.ptr;
		const char *bad = NULL;
		if (!check_str(&f[0], 1, EXTENT_BUCKET_MAX))
			bad = "bucket (a string of 1..63 bytes)";
		else if (!check_str(&f[1], 1, EXTENT_KEY_MAX))
			bad = "key (a string of 1..1024 bytes)";
		else if (!check_str(&f[2], 0, EXTENT_ETAG_MAX))
			bad = "etag (a string of at most 128 bytes)";
		else if (f[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			bad = "offset (an unsigned integer)";
		else if (f[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			bad = "length (an unsigned integer)";
		if (bad != NULL) {
			snprintf(err, errlen, "layout extent %u: bad %s", i, bad);
			r = -EINVAL;
			goto out;
		}
	}
out:
	msgpack_unpacked_destroy(&u);
	return r;
}

int node_check(const struct node_rec *rec, char *err, size_t errlen)
{
	if (rec->ino == 0) {
		snprintf(err, errlen, "inode number 0 is not valid");
		return -EINVAL;
	}
	if (rec->type != NODE_DIR && rec->type != NODE_FILE && rec->type != NODE_SYMLINK &&
	    rec->type != NODE_RECORD) {
		snprintf(err, errlen, "inode %llu has unknown type %u",
		         (unsigned long long)rec->ino, rec->type);
		return -EINVAL;
	}
	if (rec->mode & ~07777u) {
		snprintf(err, errlen, "inode %llu: mode %o has bits outside 07777",
		         (unsigned long long)rec->ino, rec->mode);
		return -EINVAL;
	}
	if (rec->ino == NODE_ROOT_INO) {
		if (rec->name_len != 0) {
			snprintf(err, errlen, "the root has no name");
			return -EINVAL;
		}
	} else if (node_check_name(rec->name, rec->name_len) < 0) {
		snprintf(err, errlen, "inode %llu: bad name", (unsigned long long)rec->ino);
		return -EINVAL;
	}
	switch (rec->type) {
	case NODE_DIR:
		if (rec->extra_len != 0) {
			snprintf(err, errlen, "directory %llu carries extra bytes",
			         (unsigned long long)rec->ino);
			return -EINVAL;
		}
		return 0;
	case NODE_SYMLINK:
		if (rec->extra_len == 0 || rec->extra_len > NODE_TARGET_MAX ||
		    memchr(rec->extra, '\0', rec->extra_len) != NULL) {
			snprintf(err, errlen,
			         "symlink %llu: target must be 1..%d bytes without NUL",
			         (unsigned long long)rec->ino, NODE_TARGET_MAX);
			return -EINVAL;
		}
		return 0;
	case NODE_RECORD:
		if (rec->parent != 0 || rec->extra_len > NODE_RECORD_MAX) {
			snprintf(err, errlen,
			         "record %llu: must have parent 0 and at most %d bytes",
			         (unsigned long long)rec->ino, NODE_RECORD_MAX);
			return -EINVAL;
		}
		return 0;
	default:
		if (rec->extra_len == 0)
			return 0;
		return node_check_layout(rec->extra, rec->extra_len, err, errlen);
	}
}
