#include "msg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err != NULL && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static uint64_t be_read(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

int msg_check(const uint8_t *buf, size_t len, unsigned max_depth, size_t *ret_used, char *err,
              size_t errlen)
{
	/* remaining[d] counts the objects still expected at depth d. */
	uint64_t remaining[MSG_MAX_DEPTH + 2];
	unsigned depth = 0;
	uint64_t pending = 1; /* sum of remaining[], bounded by bytes left */
	size_t pos = 0;
	if (max_depth > MSG_MAX_DEPTH)
		max_depth = MSG_MAX_DEPTH;
	remaining[0] = 1;

	while (pending > 0) {
		if (pos >= len)
			return fail(err, errlen, -EAGAIN, "truncated msgpack at byte %zu", pos);
		uint8_t b = buf[pos++];
		uint64_t skip = 0;     /* payload bytes after the header */
		uint64_t children = 0; /* objects the container holds */
		int container = 0;
		int hdr = 0; /* length-field bytes following the type byte */

		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
			/* fixint, nil, bool */
		} else if (b >= 0x80 && b <= 0x8f) {
			children = (uint64_t)(b & 0x0f) * 2;
			container = 1;
		} else if (b >= 0x90 && b <= 0x9f) {
			children = b & 0x0f;
			container = 1;
		} else if (b >= 0xa0 && b <= 0xbf) {
			skip = b & 0x1f;
		} else {
			switch (b) {
			case 0xc4:
			case 0xd9:
				hdr = 1;
				break;
			case 0xc5:
			case 0xda:
				hdr = 2;
				break;
			case 0xc6:
			case 0xdb:
				hdr = 4;
				break;
			case 0xc7:
				hdr = 1;
				skip = 1;
				break;
			case 0xc8:
				hdr = 2;
				skip = 1;
				break;
			case 0xc9:
				hdr = 4;
				skip = 1;
				break;
			case 0xca:
				skip = 4;
				break;
			case 0xcb:
				skip = 8;
				break;
			case 0xcc:
			case 0xd0:
				skip = 1;
				break;
			case 0xcd:
			case 0xd1:
				skip = 2;
				break;
			case 0xce:
			case 0xd2:
				skip = 4;
				break;
			case 0xcf:
			case 0xd3:
				skip = 8;
				break;
			case 0xd4:
				skip = 2;
				break;
			case 0xd5:
				skip = 3;
				break;
			case 0xd6:
				skip = 5;
				break;
			case 0xd7:
				skip = 9;
				break;
			case 0xd8:
				skip = 17;
				break;
			case 0xdc:
				hdr = 2;
				container = 1;
				break;
			case 0xdd:
				hdr = 4;
				container = 1;
				break;
			case 0xde:
				hdr = 2;
				container = 2;
				break;
			case 0xdf:
				hdr = 4;
				container = 2;
				break;
			default:
				return fail(err, errlen, -EINVAL,
				            "invalid msgpack type byte 0x%02x at byte %zu", b,
				            pos - 1);
			}
			if (hdr > 0) {
				if (len - pos < (size_t)hdr)
					return fail(err, errlen, -EAGAIN,
					            "truncated msgpack length at byte %zu", pos);
				uint64_t n = be_read(buf + pos, hdr);
				pos += (size_t)hdr;
				if (container == 1)
					children = n;
				else if (container == 2)
					children = n * 2;
				else
					skip += n;
			}
		}
		if (skip > len - pos)
			return fail(err, errlen, -EAGAIN,
			            "msgpack object at byte %zu declares %llu bytes, %zu present",
			            pos, (unsigned long long)skip, len - pos);
		pos += (size_t)skip;

		remaining[depth]--;
		pending--;
		if (container) {
			if (children > len - pos)
				return fail(
				    err, errlen, -EINVAL,
				    "msgpack container at byte %zu declares %llu items in %zu "
				    "bytes",
				    pos, (unsigned long long)children, len - pos);
			if (children > 0) {
				if (depth + 1 >= max_depth)
					return fail(err, errlen, -EINVAL,
					            "msgpack nested deeper than %u levels",
					            max_depth);
				remaining[++depth] = children;
				pending += children;
				if (pending > len - pos)
					return fail(err, errlen, -EINVAL,
					            "msgpack declares more items than bytes left");
			}
		}
		while (depth > 0 && remaining[depth] == 0)
			depth--;
	}
	*ret_used = pos;
	return 0;
}

int msg_unpack(const uint8_t *buf, size_t len, msgpack_unpacked *ret, char *err, size_t errlen)
{
	size_t used;
	int r = msg_check(buf, len, MSG_MAX_DEPTH, &used, err, errlen);
	if (r == -EAGAIN)
		return fail(err, errlen, -EINVAL, "truncated msgpack");
	if (r < 0)
		return r;
	if (used != len)
		return fail(err, errlen, -EINVAL, "%zu trailing bytes after the msgpack object",
		            len - used);
	size_t off = 0;
	msgpack_unpacked_init(ret);
	if (msgpack_unpack_next(ret, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(ret);
		return fail(err, errlen, -EINVAL, "msgpack did not unpack");
	}
	return 0;
}

int msg_raw_array(const uint8_t *p, size_t len, uint32_t *ret_count, size_t *ret_header)
{
	if (len < 1)
		return -EINVAL;
	if ((p[0] & 0xf0) == 0x90) {
		*ret_count = p[0] & 0x0f;
		*ret_header = 1;
	} else if (p[0] == 0xdc && len >= 3) {
		*ret_count = (uint32_t)be_read(p + 1, 2);
		*ret_header = 3;
	} else if (p[0] == 0xdd && len >= 5) {
		*ret_count = (uint32_t)be_read(p + 1, 4);
		*ret_header = 5;
	} else {
		return -EINVAL;
	}
	return 0;
}

static int raw_map(const uint8_t *p, size_t len, uint32_t *ret_count, size_t *ret_header)
{
	if (len < 1)
		return -EINVAL;
	if ((p[0] & 0xf0) == 0x80) {
		*ret_count = p[0] & 0x0f;
		*ret_header = 1;
	} else if (p[0] == 0xde && len >= 3) {
		*ret_count = (uint32_t)be_read(p + 1, 2);
		*ret_header = 3;
	} else if (p[0] == 0xdf && len >= 5) {
		*ret_count = (uint32_t)be_read(p + 1, 4);
		*ret_header = 5;
	} else {
		return -EINVAL;
	}
	return 0;
}

int msg_raw_field(const uint8_t *payload, size_t len, const char *key, const uint8_t **ret,
                  size_t *ret_len)
{
	char err[8];
	size_t pos = 1, used, hdr;
	uint32_t n;
	if (len < 1 || payload[0] != 0x93)
		return -EINVAL;
	for (int i = 0; i < 2; i++) { /* type, id */
		if (msg_check(payload + pos, len - pos, 1, &used, err, sizeof(err)) < 0)
			return -EINVAL;
		pos += used;
	}
	if (raw_map(payload + pos, len - pos, &n, &hdr) < 0)
		return -EINVAL;
	pos += hdr;
	size_t klen = strlen(key);
	for (uint32_t i = 0; i < n; i++) {
		if (msg_check(payload + pos, len - pos, 1, &used, err, sizeof(err)) < 0)
			return -EINVAL;
		const uint8_t *k = payload + pos;
		bool match = used == klen + 1 && (k[0] & 0xe0) == 0xa0 &&
		             (size_t)(k[0] & 0x1f) == klen && memcmp(k + 1, key, klen) == 0;
		pos += used;
		if (msg_check(payload + pos, len - pos, MSG_MAX_DEPTH, &used, err, sizeof(err)) < 0)
			return -EINVAL;
		if (match) {
			*ret = payload + pos;
			*ret_len = used;
			return 0;
		}
		pos += used;
	}
	return -ENOENT;
}

int frame_decode(const uint8_t *payload, size_t len, struct frame *ret, uint64_t *ret_id, char *err,
                 size_t errlen)
{
	msgpack_unpacked u;
	int r = msg_unpack(payload, len, &u, err, errlen);
	if (r < 0)
		return r;
	const msgpack_object *o = &u.data;
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3) {
		msgpack_unpacked_destroy(&u);
		return fail(err, errlen, -EINVAL, "a frame must be an array [type, id, body]");
	}
	const msgpack_object *t = &o->via.array.ptr[0];
	const msgpack_object *id = &o->via.array.ptr[1];
	const msgpack_object *body = &o->via.array.ptr[2];
	if (id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ret_id != NULL)
		*ret_id = id->via.u64;
	if (t->type != MSGPACK_OBJECT_POSITIVE_INTEGER || t->via.u64 > 0xffff) {
		msgpack_unpacked_destroy(&u);
		return fail(err, errlen, -EINVAL, "frame type must be a small unsigned integer");
	}
	if (id->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		msgpack_unpacked_destroy(&u);
		return fail(err, errlen, -EINVAL, "frame id must be an unsigned integer");
	}
	if (body->type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(&u);
		return fail(err, errlen, -EINVAL, "frame body must be a map");
	}
	for (uint32_t i = 0; i < body->via.map.size; i++) {
		const msgpack_object *k = &body->via.map.ptr[i].key;
		if (k->type != MSGPACK_OBJECT_STR) {
			msgpack_unpacked_destroy(&u);
			return fail(err, errlen, -EINVAL, "frame body keys must be strings");
		}
	}
	ret->unpacked = u;
	ret->type = (uint32_t)t->via.u64;
	ret->id = id->via.u64;
	ret->body = &ret->unpacked.data.via.array.ptr[2];
	return 0;
}

void frame_release(struct frame *f)
{
	msgpack_unpacked_destroy(&f->unpacked);
}

void msg_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t type, uint64_t id,
               uint32_t nfields)
{
	static const char zero[FRAME_HEADER_LEN] = {0};
	msgpack_sbuffer_clear(sb);
	msgpack_sbuffer_write(sb, zero, sizeof(zero));
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint32(pk, type);
	msgpack_pack_uint64(pk, id);
	msgpack_pack_map(pk, nfields);
}

void msg_end(msgpack_sbuffer *sb)
{
	uint32_t n = (uint32_t)(sb->size - FRAME_HEADER_LEN);
	sb->data[0] = (char)(n >> 24);
	sb->data[1] = (char)(n >> 16);
	sb->data[2] = (char)(n >> 8);
	sb->data[3] = (char)n;
}

void msg_build_error(msgpack_sbuffer *sb, uint64_t id, int err, uint64_t version,
                     const char *message)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_ERROR, id, 4);
	msg_pack_key(&pk, "code");
	msg_pack_cstr(&pk, proto_errno_name(err));
	msg_pack_key(&pk, "errno");
	msgpack_pack_int(&pk, err < 0 ? -err : err);
	msg_pack_key(&pk, "message");
	msg_pack_cstr(&pk, message);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	msg_end(sb);
}

void msg_pack_key(msgpack_packer *pk, const char *key)
{
	msg_pack_cstr(pk, key);
}

void msg_pack_cstr(msgpack_packer *pk, const char *s)
{
	msg_pack_strn(pk, s, strlen(s));
}

void msg_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
	msgpack_pack_str(pk, len);
	msgpack_pack_str_body(pk, s, len);
}

void msg_pack_binn(msgpack_packer *pk, const void *p, size_t len)
{
	msgpack_pack_bin(pk, len);
	msgpack_pack_bin_body(pk, p, len);
}

void msg_pack_raw(msgpack_packer *pk, const void *p, size_t len)
{
	pk->callback(pk->data, p, len);
}

const msgpack_object *msg_field(const msgpack_object *map, const char *key)
{
	if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t klen = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
		    memcmp(k->via.str.ptr, key, klen) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static const char *type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return "nil";
	case MSGPACK_OBJECT_BOOLEAN:
		return "boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return "unsigned integer";
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return "negative integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return "float";
	case MSGPACK_OBJECT_STR:
		return "string";
	case MSGPACK_OBJECT_ARRAY:
		return "array";
	case MSGPACK_OBJECT_MAP:
		return "map";
	case MSGPACK_OBJECT_BIN:
		return "binary";
	default:
		return "extension";
	}
}

static int lookup(const msgpack_object *map, const char *key, bool required,
                  const msgpack_object **ret, char *err, size_t errlen)
{
	const msgpack_object *o = msg_field(map, key);
	if (o == NULL || o->type == MSGPACK_OBJECT_NIL) {
		if (required)
			return fail(err, errlen, -EINVAL, "field '%s' is missing", key);
		return 1;
	}
	*ret = o;
	return 0;
}

int msg_get_u64(const msgpack_object *map, const char *key, bool required, uint64_t max,
                uint64_t *ret, char *err, size_t errlen)
{
	const msgpack_object *o = NULL;
	int r = lookup(map, key, required, &o, err, errlen);
	if (r != 0)
		return r;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return fail(err, errlen, -EINVAL, "field '%s': expected unsigned integer, got %s",
		            key, type_name(o));
	if (o->via.u64 > max)
		return fail(err, errlen, -EINVAL, "field '%s': %llu is above the maximum %llu", key,
		            (unsigned long long)o->via.u64, (unsigned long long)max);
	*ret = o->via.u64;
	return 0;
}

int msg_get_i64(const msgpack_object *map, const char *key, bool required, int64_t *ret, char *err,
                size_t errlen)
{
	const msgpack_object *o = NULL;
	int r = lookup(map, key, required, &o, err, errlen);
	if (r != 0)
		return r;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*ret = o->via.i64;
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX)
		return fail(err, errlen, -EINVAL, "field '%s': expected integer, got %s", key,
		            type_name(o));
	*ret = (int64_t)o->via.u64;
	return 0;
}

int msg_get_bool(const msgpack_object *map, const char *key, bool required, bool *ret, char *err,
                 size_t errlen)
{
	const msgpack_object *o = NULL;
	int r = lookup(map, key, required, &o, err, errlen);
	if (r != 0)
		return r;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return fail(err, errlen, -EINVAL, "field '%s': expected boolean, got %s", key,
		            type_name(o));
	*ret = o->via.boolean;
	return 0;
}

int msg_get_bytes(const msgpack_object *map, const char *key, bool required, size_t min, size_t max,
                  const char **ret_ptr, size_t *ret_len, char *err, size_t errlen)
{
	const msgpack_object *o = NULL;
	int r = lookup(map, key, required, &o, err, errlen);
	if (r != 0)
		return r;
	const char *p;
	size_t n;
	if (o->type == MSGPACK_OBJECT_STR) {
		p = o->via.str.ptr;
		n = o->via.str.size;
	} else if (o->type == MSGPACK_OBJECT_BIN) {
		p = o->via.bin.ptr;
		n = o->via.bin.size;
	} else {
		return fail(err, errlen, -EINVAL, "field '%s': expected string, got %s", key,
		            type_name(o));
	}
	if (n < min || n > max)
		return fail(err, errlen, n > max ? -E2BIG : -EINVAL,
		            "field '%s': length %zu is outside %zu..%zu", key, n, min, max);
	*ret_ptr = p;
	*ret_len = n;
	return 0;
}

int msg_get_array(const msgpack_object *map, const char *key, bool required, size_t max,
                  const msgpack_object_array **ret, char *err, size_t errlen)
{
	const msgpack_object *o = NULL;
	int r = lookup(map, key, required, &o, err, errlen);
	if (r != 0)
		return r;
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return fail(err, errlen, -EINVAL, "field '%s': expected array, got %s", key,
		            type_name(o));
	if (o->via.array.size > max)
		return fail(err, errlen, -E2BIG, "field '%s': %u items, at most %zu allowed", key,
		            o->via.array.size, max);
	*ret = &o->via.array;
	return 0;
}

void msg_pack_node(msgpack_packer *pk, const struct node_rec *rec)
{
	msgpack_pack_array(pk, 11);
	msgpack_pack_uint64(pk, rec->ino);
	msgpack_pack_uint64(pk, rec->parent);
	msg_pack_strn(pk, rec->name, rec->name_len);
	msgpack_pack_uint8(pk, rec->type);
	msgpack_pack_uint32(pk, rec->mode);
	msgpack_pack_uint32(pk, rec->uid);
	msgpack_pack_uint32(pk, rec->gid);
	msgpack_pack_uint64(pk, rec->size);
	msgpack_pack_int64(pk, rec->mtime);
	msgpack_pack_int64(pk, rec->ctime);
	if (rec->extra_len > 0)
		msg_pack_binn(pk, rec->extra, rec->extra_len);
	else
		msgpack_pack_nil(pk);
}

static int get_uint(const msgpack_object *o, uint64_t max, uint64_t *ret)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
		return -EINVAL;
	*ret = o->via.u64;
	return 0;
}

static int get_int(const msgpack_object *o, int64_t *ret)
{
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*ret = o->via.i64;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
		*ret = (int64_t)o->via.u64;
		return 0;
	}
	return -EINVAL;
}

int msg_parse_node(const msgpack_object *o, struct node_rec *ret, char *err, size_t errlen)
{
	static const char *fields[] = {"ino", "parent", "name",  "type",  "mode", "uid",
	                               "gid", "size",   "mtime", "ctime", "extra"};
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 11)
		return fail(err, errlen, -EINVAL, "a node must be an array of 11 fields");
	const msgpack_object *f = o->via.array.ptr;
	struct node_rec rec = {0};
	uint64_t v;
	int bad = -1;
	if (get_uint(&f[0], UINT64_MAX, &rec.ino) < 0)
		bad = 0;
	else if (get_uint(&f[1], UINT64_MAX, &rec.parent) < 0)
		bad = 1;
	else if ((f[2].type != MSGPACK_OBJECT_STR && f[2].type != MSGPACK_OBJECT_BIN) ||
	         f[2].via.str.size > NODE_NAME_MAX)
		bad = 2;
	else if (get_uint(&f[3], 255, &v) < 0)
		bad = 3;
	if (bad < 0) {
		rec.type = (uint8_t)v;
		rec.name = f[2].via.str.ptr;
		rec.name_len = (uint8_t)f[2].via.str.size;
		if (get_uint(&f[4], UINT32_MAX, &v) < 0)
			bad = 4;
		else if ((rec.mode = (uint32_t)v, get_uint(&f[5], UINT32_MAX, &v)) < 0)
			bad = 5;
		else if ((rec.uid = (uint32_t)v, get_uint(&f[6], UINT32_MAX, &v)) < 0)
			bad = 6;
		else if ((rec.gid = (uint32_t)v, get_uint(&f[7], UINT64_MAX, &rec.size)) < 0)
			bad = 7;
		else if (get_int(&f[8], &rec.mtime) < 0)
			bad = 8;
		else if (get_int(&f[9], &rec.ctime) < 0)
			bad = 9;
		else if (f[10].type == MSGPACK_OBJECT_BIN || f[10].type == MSGPACK_OBJECT_STR) {
			rec.extra = (const uint8_t *)f[10].via.bin.ptr;
			rec.extra_len = f[10].via.bin.size;
		} else if (f[10].type != MSGPACK_OBJECT_NIL) {
			bad = 10;
		}
	}
	if (bad >= 0)
		return fail(err, errlen, -EINVAL, "node field '%s' has the wrong type or range",
		            fields[bad]);
	int r = node_check(&rec, err, errlen);
	if (r < 0)
		return r;
	*ret = rec;
	return 0;
}

int msg_parse_change(const msgpack_object *o, struct change_header *ret, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
		return fail(err, errlen, -EINVAL, "a change record must be an array of 4 fields");
	const msgpack_object *f = o->via.array.ptr;
	struct change_header h;
	if (get_uint(&f[0], UINT64_MAX, &h.version) < 0 || h.version == 0)
		return fail(err, errlen, -EINVAL,
		            "change record version must be a positive integer");
	if (get_int(&f[1], &h.time) < 0)
		return fail(err, errlen, -EINVAL, "change record time must be an integer");
	if (f[2].type != MSGPACK_OBJECT_BIN || f[2].via.bin.size != 16)
		return fail(err, errlen, -EINVAL, "change record digest must be 16 bytes");
	memcpy(h.digest, f[2].via.bin.ptr, 16);
	if (f[3].type != MSGPACK_OBJECT_ARRAY)
		return fail(err, errlen, -EINVAL, "change record mutations must be an array");
	h.mutations = &f[3].via.array;
	*ret = h;
	return 0;
}

int msg_parse_mutation(const msgpack_object *o, uint64_t *ret_ino, struct node_rec *ret_rec,
                       bool *ret_is_put, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
	    o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return fail(err, errlen, -EINVAL, "a mutation must be an array [op, arg]");
	uint64_t op = o->via.array.ptr[0].via.u64;
	const msgpack_object *arg = &o->via.array.ptr[1];
	if (op == MUT_PUT) {
		int r = msg_parse_node(arg, ret_rec, err, errlen);
		if (r < 0)
			return r;
		*ret_ino = ret_rec->ino;
		*ret_is_put = true;
		return 0;
	}
	if (op == MUT_DROP) {
		if (arg->type != MSGPACK_OBJECT_POSITIVE_INTEGER || arg->via.u64 == 0)
			return fail(err, errlen, -EINVAL, "a drop mutation needs an inode number");
		*ret_ino = arg->via.u64;
		*ret_is_put = false;
		return 0;
	}
	return fail(err, errlen, -EINVAL, "unknown mutation op %llu", (unsigned long long)op);
}
