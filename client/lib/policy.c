/* Policies as the namespace holds them: applying one (a write at the
 * primary, checked there again) and reading the one in force at a server. */
#include <errno.h>
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
