/* mp_gc: garbage collection at the primary (an MT_GC request). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <mirrorplane/gc.h>

#include "internal.h"
#include "proto.h"

static void copy_str(const msgpack_object *body, const char *key, char *out, size_t outlen)
{
	const msgpack_object *o = msg_field(body, key);
	out[0] = '\0';
	if (o != NULL && o->type == MSGPACK_OBJECT_STR)
		snprintf(out, outlen, "%.*s",
		         (int)(o->via.str.size > outlen - 1 ? outlen - 1 : o->via.str.size),
		         o->via.str.ptr);
}

static uint64_t get_u64(const msgpack_object *body, const char *key)
{
	const msgpack_object *o = msg_field(body, key);
	return o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

MP_EXPORT int mp_gc(mp_client *c, mp_gc_action action, mp_gc_status *ret, mp_error *err)
{
	static const char *const names[] = {"status", "run", "confirm"};
	if ((unsigned)action > MP_GC_CONFIRM)
		return mperr(err, -EINVAL, "gc: unknown action %d", (int)action);
	struct request_body b;
	request_init(&b, MT_GC);
	request_str(&b, "action", names[action]);
	struct reply rep;
	int r = client_primary(c, &b, NULL, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	const msgpack_object *body = rep.frame.body;
	if (body == NULL || body->type != MSGPACK_OBJECT_MAP) {
		reply_release(&rep);
		return mperr(err, -EPROTO, "gc: the primary's answer is not a map");
	}
	mp_gc_status s;
	memset(&s, 0, sizeof(s));
	copy_str(body, "state", s.state, sizeof(s.state));
	copy_str(body, "held_reason", s.held_reason, sizeof(s.held_reason));
	copy_str(body, "bucket", s.bucket, sizeof(s.bucket));
	copy_str(body, "last_error", s.last_error, sizeof(s.last_error));
	if (s.state[0] == '\0') {
		reply_release(&rep);
		return mperr(err, -EPROTO, "gc: the primary's answer has no state");
	}
	s.would_delete = get_u64(body, "would_delete");
	s.trash_objects = get_u64(body, "trash_objects");
	s.trash_bytes = get_u64(body, "trash_bytes");
	s.live_objects = get_u64(body, "live_objects");
	s.deleted_total = get_u64(body, "deleted_total");
	s.deleted_bytes_total = get_u64(body, "deleted_bytes_total");
	s.failures_total = get_u64(body, "failures_total");
	s.passes = get_u64(body, "passes");
	const msgpack_object *o = msg_field(body, "last_pass_time_ns");
	if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		s.last_pass_time_ns = (int64_t)o->via.u64;
	s.last_pass_deleted = get_u64(body, "last_pass_deleted");
	s.last_pass_failed = get_u64(body, "last_pass_failed");
	s.retention_ms = get_u64(body, "retention_ms");
	o = msg_field(body, "max_delete_ratio");
	if (o != NULL && (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32))
		s.max_delete_ratio = o->via.f64;
	s.max_delete_count = get_u64(body, "max_delete_count");
	s.version = rep.version;
	reply_release(&rep);
	*ret = s;
	return 0;
}

MP_EXPORT int mp_gc_confirm_sites(mp_client *c, mp_call *call, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_GC_CONFIRM_SITES);
	struct reply rep;
	int r = client_primary(c, &b, call, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, "gc confirm at the sites", err);
	reply_release(&rep);
	return r;
}
