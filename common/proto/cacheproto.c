#include "cacheproto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "msg.h"

static const char *const state_names[] = {"active", "warming", "draining"};

const char *cacheproto_state_name(enum cache_state s)
{
	return (unsigned)s < 3 ? state_names[s] : "unknown";
}

static int bad(char *err, size_t errlen, const char *fmt, const char *field)
{
	snprintf(err, errlen, fmt, field);
	return -EINVAL;
}

/* A required string of 1..max bytes without NUL or control bytes, copied. */
static int get_text(const msgpack_object *map, const char *key, size_t max, char *out, char *err,
                    size_t errlen)
{
	const char *p;
	size_t len;
	int r = msg_get_bytes(map, key, true, 1, max, &p, &len, err, errlen);
	if (r != 0)
		return r < 0 ? r : bad(err, errlen, "%s: missing", key);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return bad(err, errlen, "%s: control or NUL byte", key);
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

static bool alias_ok(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

int cacheproto_parse_block_read(const msgpack_object *body, uint64_t block_size,
                                struct block_request *ret, char *err, size_t errlen)
{
	struct block_request r;
	memset(&r, 0, sizeof(r));
	if (block_size == 0)
		return bad(err, errlen, "%s: block size 0", "BLOCK_READ");
	if (body == NULL || body->type != MSGPACK_OBJECT_MAP)
		return bad(err, errlen, "%s: body is not a map", "BLOCK_READ");
	int rc;
	if ((rc = get_text(body, "bucket", CACHE_ALIAS_MAX, r.bucket, err, errlen)) < 0)
		return rc;
	if (!alias_ok(r.bucket))
		return bad(err, errlen, "%s: not a bucket alias (letters, digits, '-', '_')",
		           "bucket");
	if ((rc = get_text(body, "key", CACHE_KEY_MAX, r.key, err, errlen)) < 0 ||
	    (rc = get_text(body, "etag", CACHE_ETAG_MAX, r.etag, err, errlen)) < 0)
		return rc;
	if ((rc = msg_get_u64(body, "size", true, CACHE_OBJECT_MAX, &r.size, err, errlen)) != 0 ||
	    (rc = msg_get_u64(body, "offset", true, CACHE_OBJECT_MAX, &r.offset, err, errlen)) !=
	        0 ||
	    (rc = msg_get_u64(body, "length", true, CACHE_BLOCK_MAX, &r.length, err, errlen)) != 0)
		return rc < 0 ? rc : -EINVAL;
	if (r.length == 0)
		return bad(err, errlen, "%s: must be at least 1", "length");
	if (r.offset + r.length > r.size) {
		snprintf(err, errlen, "offset %llu + length %llu: past the object's size %llu",
		         (unsigned long long)r.offset, (unsigned long long)r.length,
		         (unsigned long long)r.size);
		return -EINVAL;
	}
	if (r.offset / block_size != (r.offset + r.length - 1) / block_size) {
		snprintf(err, errlen,
		         "offset %llu + length %llu: crosses a block boundary (block size %llu)",
		         (unsigned long long)r.offset, (unsigned long long)r.length,
		         (unsigned long long)block_size);
		return -EINVAL;
	}
	if ((rc = msg_get_bool(body, "peer", false, &r.peer, err, errlen)) < 0)
		return rc;
	rc = msg_get_bytes(body, "grant", false, 1, CACHE_GRANT_MAX, &r.grant, &r.grant_len, err,
	                   errlen);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		r.grant = NULL;
		r.grant_len = 0;
	}
	const char *rep;
	size_t rlen;
	rc = msg_get_bytes(body, "replica", false, 1, CACHE_ALIAS_MAX, &rep, &rlen, err, errlen);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		if (memchr(rep, '\0', rlen) != NULL || memchr(rep, '/', rlen) != NULL) {
			snprintf(err, errlen, "field 'replica': not a bucket alias");
			return -EINVAL;
		}
		memcpy(r.replica, rep, rlen);
		r.replica[rlen] = '\0';
	}
	*ret = r;
	return 0;
}

uint32_t cacheproto_pack_block_fields(msgpack_packer *pk, const struct block_request *req)
{
	msg_pack_key(pk, "bucket");
	msg_pack_cstr(pk, req->bucket);
	msg_pack_key(pk, "key");
	msg_pack_cstr(pk, req->key);
	msg_pack_key(pk, "etag");
	msg_pack_cstr(pk, req->etag);
	msg_pack_key(pk, "size");
	msgpack_pack_uint64(pk, req->size);
	msg_pack_key(pk, "offset");
	msgpack_pack_uint64(pk, req->offset);
	msg_pack_key(pk, "length");
	msgpack_pack_uint64(pk, req->length);
	if (req->peer) {
		msg_pack_key(pk, "peer");
		msgpack_pack_true(pk);
	}
	if (req->grant) {
		msg_pack_key(pk, "grant");
		msg_pack_binn(pk, req->grant, req->grant_len);
	}
	if (req->replica[0] != '\0') {
		msg_pack_key(pk, "replica");
		msg_pack_cstr(pk, req->replica);
	}
	return 6 + (req->peer ? 1 : 0) + (req->grant ? 1 : 0) + (req->replica[0] != '\0');
}

void cacheproto_pack_member(msgpack_packer *pk, const struct cache_member *m)
{
	msgpack_pack_map(pk, CACHEPROTO_MEMBER_FIELDS);
	cacheproto_pack_member_fields(pk, m);
}

void cacheproto_pack_member_fields(msgpack_packer *pk, const struct cache_member *m)
{
	msg_pack_key(pk, "address");
	msg_pack_cstr(pk, m->address);
	msg_pack_key(pk, "weight");
	msgpack_pack_uint64(pk, m->weight);
	msg_pack_key(pk, "state");
	msg_pack_cstr(pk, cacheproto_state_name(m->state));
	msg_pack_key(pk, "block_size");
	msgpack_pack_uint64(pk, m->block_size);
	msg_pack_key(pk, "used");
	msgpack_pack_uint64(pk, m->used);
	msg_pack_key(pk, "capacity");
	msgpack_pack_uint64(pk, m->capacity);
	msg_pack_key(pk, "hits");
	msgpack_pack_uint64(pk, m->hits);
	msg_pack_key(pk, "misses");
	msgpack_pack_uint64(pk, m->misses);
	msg_pack_key(pk, "age_ms");
	msgpack_pack_uint64(pk, m->age_ms);
}

int cacheproto_parse_member(const msgpack_object *map, struct cache_member *ret, char *err,
                            size_t errlen)
{
	struct cache_member m;
	memset(&m, 0, sizeof(m));
	if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
		return bad(err, errlen, "%s: not a map", "member");
	int rc;
	if ((rc = get_text(map, "address", CACHE_ADDRESS_MAX, m.address, err, errlen)) < 0)
		return rc;
	char state[16];
	if ((rc = get_text(map, "state", sizeof(state) - 1, state, err, errlen)) < 0)
		return rc;
	int s = -1;
	for (int i = 0; i < 3; i++)
		if (strcmp(state, state_names[i]) == 0)
			s = i;
	if (s < 0)
		return bad(err, errlen, "state: '%s' is not active, warming or draining", state);
	m.state = (enum cache_state)s;
	if ((rc = msg_get_u64(map, "weight", true, 1000000, &m.weight, err, errlen)) != 0 ||
	    (rc = msg_get_u64(map, "block_size", true, CACHE_BLOCK_MAX, &m.block_size, err,
	                      errlen)) != 0)
		return rc < 0 ? rc : -EINVAL;
	if (m.block_size < CACHE_BLOCK_MIN)
		return bad(err, errlen, "%s: below 1 MiB", "block_size");
	const char *counters[] = {"used", "capacity", "hits", "misses", "age_ms"};
	uint64_t *fields[] = {&m.used, &m.capacity, &m.hits, &m.misses, &m.age_ms};
	for (int i = 0; i < 5; i++)
		if ((rc = msg_get_u64(map, counters[i], false, UINT64_MAX, fields[i], err,
		                      errlen)) < 0)
			return rc;
	*ret = m;
	return 0;
}

int cacheproto_parse_members(const msgpack_object *body, struct cache_member *out, size_t cap,
                             size_t *ret_n, char *err, size_t errlen)
{
	const msgpack_object_array *a;
	int rc = msg_get_array(body, "members", true, CACHE_MEMBERS_MAX, &a, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : -EINVAL;
	/* Every item is checked before out is written. */
	for (uint32_t i = 0; i < a->size; i++) {
		char why[200];
		struct cache_member m;
		rc = cacheproto_parse_member(&a->ptr[i], &m, why, sizeof(why));
		if (rc < 0) {
			snprintf(err, errlen, "members[%u]: %s", i, why);
			return rc;
		}
	}
	size_t n = 0;
	for (uint32_t i = 0; i < a->size && n < cap; i++) {
		char why[200];
		cacheproto_parse_member(&a->ptr[i], &out[n++], why, sizeof(why));
	}
	*ret_n = n;
	return 0;
}

int cacheproto_parse_block_list(const msgpack_object *body, uint64_t block_size,
                                struct block_request *out, size_t cap, size_t *ret_n, char *err,
                                size_t errlen)
{
	if (body == NULL || body->type != MSGPACK_OBJECT_MAP)
		return bad(err, errlen, "%s: body is not a map", "block list");
	if (block_size == 0)
		return bad(err, errlen, "%s: block size 0", "block list");
	const msgpack_object_array *a;
	int rc = msg_get_array(body, "blocks", true, CACHE_LIST_MAX, &a, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : -EINVAL;
	if (a->size > cap) {
		snprintf(err, errlen, "blocks: %u items, at most %zu here", a->size, cap);
		return -E2BIG;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		char why[200];
		struct block_request *r = &out[i];
		rc = cacheproto_parse_block_read(&a->ptr[i], block_size, r, why, sizeof(why));
		if (rc < 0) {
			snprintf(err, errlen, "blocks[%u]: %s", i, why);
			return rc;
		}
		uint64_t end = (r->offset / block_size + 1) * block_size;
		if (end > r->size)
			end = r->size;
		if (r->offset % block_size != 0 || r->offset + r->length != end) {
			snprintf(
			    err, errlen,
			    "blocks[%u]: offset %llu + length %llu is not a whole block (block "
			    "size %llu, object size %llu)",
			    i, (unsigned long long)r->offset, (unsigned long long)r->length,
			    (unsigned long long)block_size, (unsigned long long)r->size);
			return -EINVAL;
		}
		/* The grant points into the frame, which outlives the list. */
	}
	*ret_n = a->size;
	return 0;
}

void cacheproto_pack_block_list(msgpack_packer *pk, const struct block_request *reqs, size_t n)
{
	msgpack_pack_map(pk, 1);
	msg_pack_key(pk, "blocks");
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		struct block_request r = reqs[i];
		r.peer = false;
		uint32_t fields = 6 + (r.grant ? 1 : 0) + (r.replica[0] != '\0');
		msgpack_pack_map(pk, fields);
		cacheproto_pack_block_fields(pk, &r);
	}
}

int cacheproto_parse_results(const msgpack_object *body, size_t n, int *out, char *err,
                             size_t errlen)
{
	if (body == NULL || body->type != MSGPACK_OBJECT_MAP)
		return bad(err, errlen, "%s: body is not a map", "results");
	const msgpack_object_array *a;
	int rc = msg_get_array(body, "results", true, CACHE_LIST_MAX, &a, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : -EINVAL;
	if (a->size != n) {
		snprintf(err, errlen, "results: %u items for %zu blocks", a->size, n);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *o = &a->ptr[i];
		int64_t v;
		if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= 1)
			v = (int64_t)o->via.u64;
		else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= -4095)
			v = o->via.i64;
		else {
			snprintf(err, errlen, "results[%u]: not an integer in -4095..1", i);
			return -EINVAL;
		}
		out[i] = (int)v;
	}
	return 0;
}
