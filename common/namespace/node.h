/* A namespace entry as it travels between the namespace, the store, the
 * change log and the wire. Every pointer in it is borrowed: the record never
 * owns its name or extra bytes. */
#ifndef MP_NODE_H
#define MP_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_ROOT_INO     1
#define NODE_NAME_MAX     255
#define NODE_PATH_MAX     4096
#define NODE_TARGET_MAX   4096
#define NODE_LAYOUT_MAX   65536 /* encoded bytes of a file's layout */
#define NODE_EXTENTS_MAX  4096
#define EXTENT_BUCKET_MAX 63
#define EXTENT_KEY_MAX    1024
#define EXTENT_ETAG_MAX   128

/* A record is not a file: it holds a named document of the namespace (the
 * replication and warmup policy) that travels with the versions like any
 * node. Records have parent 0 and are out of reach of paths, listings and
 * reads by inode; namespace_lookup(ns, 0, name) finds them. */
enum node_type { NODE_DIR = 1, NODE_FILE = 2, NODE_SYMLINK = 3, NODE_RECORD = 4 };

#define NODE_RECORD_MAX (1024 * 1024) /* bytes of a record's document */

struct node_rec {
	uint64_t ino;
	uint64_t parent; /* 0 for the root */
	uint64_t size;
	int64_t mtime; /* ns since the epoch */
	int64_t ctime;
	uint32_t mode; /* permission bits only (07777) */
	uint32_t uid;
	uint32_t gid;
	uint8_t type; /* enum node_type */
	uint8_t name_len;
	uint32_t extra_len;
	const char *name;
	/* A file's layout (msgpack array of extents [bucket, key, etag,
	 * offset, length]) or a symlink's target; empty for directories. */
	const uint8_t *extra;
};

/* Checks a single path component: 1..255 bytes, no '/', no NUL, not "." or
 * "..". Returns 0 or -EINVAL. */
int node_check_name(const char *name, size_t len);

/* Checks that the record is internally consistent (type, mode bits, name,
 * extra within its bounds, a layout that decodes). Writes a reason to err on
 * failure. Returns 0 or -EINVAL / -E2BIG. */
int node_check(const struct node_rec *rec, char *err, size_t errlen);

/* Checks an encoded layout: a msgpack array of at most NODE_EXTENTS_MAX
 * extents [bucket:str 1..63, key:str 1..1024, etag:str 0..128, offset:uint,
 * length:uint]. Returns 0 or -EINVAL / -E2BIG with a reason in err. */
int node_check_layout(const uint8_t *buf, size_t len, char *err, size_t errlen);

const char *node_type_name(uint8_t type);

#endif
