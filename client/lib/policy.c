/* Policies as the namespace holds them: applying one (a write at the
 * primary, checked there again) and reading the one in force at a server. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "node.h"
#include "proto.h"

MP_EXPORT int mp_policy_apply(mp_client *c, const char *file, const void *doc, size_t len,
                              mp_call *call, mp_error *err)
{
	if (doc == NULL && len > 0)
		return mperr(err, -EINVAL, "policy apply: no document");
	const char *base = file != NULL ? strrchr(file, '/') : NULL;
	base = base != NULL ? base + 1 : file;
	struct request_body b;
	request_init(&b, MT_POLICY_APPLY);
	if (base != NULL && base[0] != '\0' && strlen(base) <= NODE_NAME_MAX)
		request_str(&b, "file", base);
	request_key(&b, "doc");
	msgpack_pack_bin(&b.pk, len);
	msgpack_pack_bin_body(&b.pk, doc, len);
	struct reply rep;
	int r = client_primary(c, &b, call, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, "policy apply", err);
	reply_release(&rep);
	return r;
}

MP_EXPORT int mp_policy_get(mp_client *c, mp_call *call, char **ret_doc, size_t *ret_len,
                            int64_t *ret_ctime_ns, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_POLICY_GET);
	struct reply rep;
	int r = client_read(c, &b, call, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	if (rep.is_error) {
		r = client_answer_error(&rep, "policy show", err);
		reply_release(&rep);
		return r;
	}
	const msgpack_object *o = msg_field(rep.frame.body, "doc");
	char *doc = NULL;
	size_t len = 0;
	if (o != NULL && (o->type == MSGPACK_OBJECT_BIN || o->type == MSGPACK_OBJECT_STR)) {
		len = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
		doc = malloc(len + 1);
		if (doc == NULL) {
			reply_release(&rep);
			return mperr(err, -ENOMEM, "out of memory");
		}
		memcpy(doc, o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr, len);
		doc[len] = '\0';
	} else if (o == NULL || o->type != MSGPACK_OBJECT_NIL) {
		reply_release(&rep);
		return mperr(err, -EPROTO, "policy show: the server's answer has no document");
	}
	int64_t ctime = 0;
	char why[100];
	msg_get_i64(rep.frame.body, "ctime", false, &ctime, why, sizeof(why));
	reply_release(&rep);
	*ret_doc = doc;
	*ret_len = len;
	if (ret_ctime_ns != NULL)
		*ret_ctime_ns = ctime;
	return 0;
}

static void copy_str(const msgpack_object *map, const char *key, char *out, size_t len)
{
	const char *p;
	size_t n;
	char why[100];
	if (msg_get_bytes(map, key, false, 0, 4096, &p, &n, why, sizeof(why)) == 0)
		snprintf(out, len, "%.*s", (int)n, p);
}

static int parse_rules(const msgpack_object *body, const char *site, mp_replication_rule *out,
                       size_t cap, size_t *ret_n, mp_error *err)
{
	const msgpack_object_array *rules;
	char why[200];
	if (msg_get_array(body, "rules", true, 4096, &rules, why, sizeof(why)) < 0)
		return mperr(err, -EPROTO, "replication status: %s", why);
	static const struct {
		const char *key;
		size_t off;
	} fields[] = {
	    {"pending_objects", offsetof(mp_replication_rule, pending_objects)},
	    {"pending_bytes", offsetof(mp_replication_rule, pending_bytes)},
	    {"verified_objects", offsetof(mp_replication_rule, verified_objects)},
	    {"verified_bytes", offsetof(mp_replication_rule, verified_bytes)},
	    {"copied_bytes", offsetof(mp_replication_rule, copied_bytes)},
	    {"failures", offsetof(mp_replication_rule, failures)},
	    {"failing_objects", offsetof(mp_replication_rule, failing_objects)},
	    {"lag_ms", offsetof(mp_replication_rule, lag_ms)},
	    {"bytes_per_second", offsetof(mp_replication_rule, bytes_per_second)},
	};
	for (uint32_t i = 0; i < rules->size && i < cap; i++) {
		const msgpack_object *o = &rules->ptr[i];
		mp_replication_rule *x = &out[i];
		memset(x, 0, sizeof(*x));
		if (o->type != MSGPACK_OBJECT_MAP)
			return mperr(err, -EPROTO, "replication status: rule %u is not a map", i);
		snprintf(x->site, sizeof(x->site), "%s", site);
		copy_str(o, "rule", x->rule, sizeof(x->rule));
		copy_str(o, "last_error", x->last_error, sizeof(x->last_error));
		for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
			uint64_t v = 0;
			if (msg_get_u64(o, fields[k].key, false, UINT64_MAX, &v, why, sizeof(why)) <
			    0)
				return mperr(err, -EPROTO, "replication status: %s", why);
			*(uint64_t *)((char *)x + fields[k].off) = v;
		}
	}
	*ret_n = rules->size;
	return 0;
}

struct rules_out {
	mp_replication_rule *out;
	size_t cap, *ret_n;
};

static int take_rules(void *arg, const char *address, const struct reply *rep, mp_error *err)
{
	struct rules_out *ro = arg;
	if (rep->is_error)
		return client_answer_error(rep, address, err);
	char site[64] = "";
	copy_str(rep->frame.body, "site", site, sizeof(site));
	return parse_rules(rep->frame.body, site, ro->out, ro->cap, ro->ret_n, err);
}

MP_EXPORT int mp_replication_status(mp_client *c, mp_replication_rule *out, size_t cap,
                                    size_t *ret_n, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_REPLICATION_STATUS);
	struct rules_out ro = {.out = out, .cap = cap, .ret_n = ret_n};
	int r = route_first_mirror(c, &b, take_rules, &ro,
	                           "no mirror configured: replication is known to mirrors", err);
	request_destroy(&b);
	return r;
}
