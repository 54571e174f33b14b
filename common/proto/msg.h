/* The message codec: a structural check of untrusted msgpack bytes, typed
 * field access with errors that name the field, and packing of the records
 * every part exchanges (nodes, change records, frames).
 *
 * Frames are a 4-byte big-endian length and one msgpack array
 * [type:uint, id:uint, body:map]; docs/PROTOCOL.md has the messages. */
#ifndef MP_MSG_H
#define MP_MSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"

/* Checks that buf starts with one well-formed msgpack object no deeper than
 * max_depth whose declared lengths and counts fit in the bytes present (so
 * that unpacking it can never allocate more than a small multiple of len).
 * Sets *ret_used to its encoded length. Returns 0, -EAGAIN when the object is
 * truncated, or -EINVAL with the reason in err (also for a container that
 * claims more items than the bytes present could hold, truncated or not). */
int msg_check(const uint8_t *buf, size_t len, unsigned max_depth, size_t *ret_used, char *err,
              size_t errlen);

/* Unpacks exactly one object filling all of buf, after msg_check. Objects
 * reference buf, which must outlive ret. Returns 0 or -EINVAL. */
int msg_unpack(const uint8_t *buf, size_t len, msgpack_unpacked *ret, char *err, size_t errlen);

/* Zero-copy access to a frame payload's body field: finds body[key] in
 * [type, id, {...}] and returns its encoded bytes. Returns 0, -ENOENT when
 * absent, -EINVAL when the payload is not a well-formed frame. */
int msg_raw_field(const uint8_t *payload, size_t len, const char *key, const uint8_t **ret,
                  size_t *ret_len);
/* The item count and header length of an encoded array. */
int msg_raw_array(const uint8_t *p, size_t len, uint32_t *ret_count, size_t *ret_header);

/* A decoded frame. body points into unpacked. */
struct frame {
	uint32_t type;
	uint64_t id;
	const msgpack_object *body;
	msgpack_unpacked unpacked;
};

/* Decodes a frame payload (the bytes after the length). Returns 0 or
 * -EINVAL with a reason; on success call frame_release. The id is set
 * whenever it could be read, so errors can still be answered. */
int frame_decode(const uint8_t *payload, size_t len, struct frame *ret, uint64_t *ret_id, char *err,
                 size_t errlen);
void frame_release(struct frame *f);

/* Frame building: msg_begin reserves the length, packs [type, id, map(n)];
 * the caller packs n key/value pairs; msg_end patches the length. */
void msg_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t type, uint64_t id,
               uint32_t nfields);
void msg_end(msgpack_sbuffer *sb);
/* A whole ERROR frame {code, errno, message, version} in sb. */
void msg_build_error(msgpack_sbuffer *sb, uint64_t id, int err, uint64_t version,
                     const char *message);
void msg_pack_key(msgpack_packer *pk, const char *key);
void msg_pack_cstr(msgpack_packer *pk, const char *s);
void msg_pack_strn(msgpack_packer *pk, const char *s, size_t len);
void msg_pack_binn(msgpack_packer *pk, const void *p, size_t len);
/* Appends already-encoded msgpack bytes. */
void msg_pack_raw(msgpack_packer *pk, const void *p, size_t len);

/* Field access in a map. Each returns 0 when found and valid (writing the
 * output), 1 when absent and not required, -EINVAL otherwise with err naming
 * the field and what was wrong. */
const msgpack_object *msg_field(const msgpack_object *map, const char *key);
int msg_get_u64(const msgpack_object *map, const char *key, bool required, uint64_t max,
                uint64_t *ret, char *err, size_t errlen);
int msg_get_i64(const msgpack_object *map, const char *key, bool required, int64_t *ret, char *err,
                size_t errlen);
int msg_get_bool(const msgpack_object *map, const char *key, bool required, bool *ret, char *err,
                 size_t errlen);
/* Accepts str or bin of min..max bytes. */
int msg_get_bytes(const msgpack_object *map, const char *key, bool required, size_t min, size_t max,
                  const char **ret_ptr, size_t *ret_len, char *err, size_t errlen);
int msg_get_array(const msgpack_object *map, const char *key, bool required, size_t max,
                  const msgpack_object_array **ret, char *err, size_t errlen);

/* Nodes travel as arrays:
 * [ino, parent, name, type, mode, uid, gid, size, mtime, ctime, extra]
 * with extra nil, a file's encoded layout as bin, or a symlink's target
 * as bin. */
void msg_pack_node(msgpack_packer *pk, const struct node_rec *rec);
/* Fills rec with pointers into o. Returns 0 or -EINVAL with a reason. */
int msg_parse_node(const msgpack_object *o, struct node_rec *ret, char *err, size_t errlen);

/* A change record: [version, time_ns, digest(bin 16), [mutation...]] where a
 * mutation is [1, node] (put) or [2, ino] (drop). */
struct change_header {
	uint64_t version;
	int64_t time;
	uint8_t digest[16];
	const msgpack_object_array *mutations;
};
int msg_parse_change(const msgpack_object *o, struct change_header *ret, char *err, size_t errlen);
/* Parses mutation i of a change record into (ino, rec or NULL). */
int msg_parse_mutation(const msgpack_object *o, uint64_t *ret_ino, struct node_rec *ret_rec,
                       bool *ret_is_put, char *err, size_t errlen);

#endif
