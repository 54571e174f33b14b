/* Nodes and layouts as the library hands them out, remote path checks, and
 * batches of writes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "node.h"
#include "proto.h"

MP_EXPORT void mp_node_clear(mp_node *n)
{
	if (n == NULL)
		return;
	free(n->name);
	free(n->target);
	for (size_t i = 0; i < n->n_extents; i++) {
		free(n->extents[i].bucket);
		free(n->extents[i].key);
		free(n->extents[i].etag);
		free(n->extents[i].grant);
		free(n->extents[i].replica);
	}
	free(n->extents);
	memset(n, 0, sizeof(*n));
}

MP_EXPORT const char *mp_type_name(enum mp_type t)
{
	switch (t) {
	case MP_TYPE_DIR:
		return "dir";
	case MP_TYPE_FILE:
		return "file";
	case MP_TYPE_SYMLINK:
		return "symlink";
	}
	return "unknown";
}

static char *dup_obj(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_STR)
		return strndup(o->via.str.ptr, o->via.str.size);
	if (o->type == MSGPACK_OBJECT_BIN)
		return strndup(o->via.bin.ptr, o->via.bin.size);
	return NULL;
}

static int decode_layout(const uint8_t *buf, size_t len, mp_node *n, mp_error *err)
{
	char why[200];
	if (node_check_layout(buf, len, why, sizeof(why)) < 0)
		return mperr(err, -EPROTO, "a layout the server sent: %s", why);
	msgpack_unpacked u;
	if (msg_unpack(buf, len, &u, why, sizeof(why)) < 0)
		return mperr(err, -EPROTO, "a layout the server sent: %s", why);
	const msgpack_object_array *a = &u.data.via.array;
	int rc = 0;
	if (a->size > 0) {
		n->extents = calloc(a->size, sizeof(*n->extents));
		if (n->extents == NULL) {
			rc = mperr(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *e = a->ptr[i].via.array.ptr;
		mp_extent *x = &n->extents[i];
		n->n_extents = i + 1;
		x->bucket = dup_obj(&e[0]);
		x->key = dup_obj(&e[1]);
		x->etag = dup_obj(&e[2]);
		x->offset = e[3].via.u64;
		x->length = e[4].via.u64;
		if (x->bucket == NULL || x->key == NULL || x->etag == NULL) {
			rc = mperr(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
out:
	msgpack_unpacked_destroy(&u);
	return rc;
}

int nodes_from_msg(const msgpack_object *o, mp_node *ret, mp_error *err)
{
	struct node_rec rec;
	char why[200];
	if (msg_parse_node(o, &rec, why, sizeof(why)) < 0)
		return mperr(err, -EPROTO, "a node the server sent: %s", why);
	mp_node n = {
	    .ino = rec.ino,
	    .parent = rec.parent,
	    .type = (enum mp_type)rec.type,
	    .mode = rec.mode,
	    .uid = rec.uid,
	    .gid = rec.gid,
	    .size = rec.size,
	    .mtime_ns = rec.mtime,
	    .ctime_ns = rec.ctime,
	};
	n.name = strndup(rec.name ? rec.name : "", rec.name_len);
	if (n.name == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	if (rec.type == NODE_SYMLINK) {
		n.target = strndup((const char *)rec.extra, rec.extra_len);
		if (n.target == NULL) {
			mp_node_clear(&n);
			return mperr(err, -ENOMEM, "out of memory");
		}
	} else if (rec.type == NODE_FILE && rec.extra_len > 0) {
		int r = decode_layout(rec.extra, rec.extra_len, &n, err);
		if (r < 0) {
			mp_node_clear(&n);
			return r;
		}
	}
	*ret = n;
	return 0;
}

int nodes_from_reply(const struct reply *r, mp_node *ret, mp_error *err)
{
	const msgpack_object *o = msg_field(r->frame.body, "node");
	if (o == NULL)
		return mperr(err, -EPROTO, "an answer without its node");
	int rc = nodes_from_msg(o, ret, err);
	if (rc < 0)
		return rc;
	/* Read grants, one per extent, when the cluster has a secret. */
	const msgpack_object *g = msg_field(r->frame.body, "grants");
	if (g != NULL && g->type == MSGPACK_OBJECT_ARRAY && g->via.array.size == ret->n_extents)
		for (size_t i = 0; i < ret->n_extents; i++) {
			const msgpack_object *x = &g->via.array.ptr[i];
			if (x->type == MSGPACK_OBJECT_STR && x->via.str.size > 0 &&
			    x->via.str.size <= CACHE_GRANT_MAX)
				ret->extents[i].grant = strndup(x->via.str.ptr, x->via.str.size);
		}
	/* Verified site copies, at a mirror that replicates. */
	const msgpack_object *s = msg_field(r->frame.body, "replicas");
	if (s != NULL && s->type == MSGPACK_OBJECT_ARRAY && s->via.array.size == ret->n_extents)
		for (size_t i = 0; i < ret->n_extents; i++) {
			const msgpack_object *x = &s->via.array.ptr[i];
			if (x->type == MSGPACK_OBJECT_STR && x->via.str.size > 0 &&
			    x->via.str.size <= EXTENT_BUCKET_MAX)
				ret->extents[i].replica = strndup(x->via.str.ptr, x->via.str.size);
		}
	return 0;
}

void nodes_pack_layout(msgpack_packer *pk, const mp_extent *ext, size_t n)
{
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_array(pk, 5);
		msg_pack_cstr(pk, ext[i].bucket);
		msg_pack_cstr(pk, ext[i].key);
		msg_pack_cstr(pk, ext[i].etag ? ext[i].etag : "");
		msgpack_pack_uint64(pk, ext[i].offset);
		msgpack_pack_uint64(pk, ext[i].length);
	}
}

int nodes_check_path(const char *path, mp_error *err)
{
	if (path == NULL || path[0] != '/')
		return mperr(err, -EINVAL, "'%s': remote paths are absolute (start with /)",
		             path ? path : "(null)");
	size_t len = strlen(path);
	if (len > NODE_PATH_MAX)
		return mperr(err, -ENAMETOOLONG, "'%.60s...': longer than %d bytes", path,
		             NODE_PATH_MAX);
	const char *p = path;
	while (*p != '\0') {
		while (*p == '/')
			p++;
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n > 0 && node_check_name(p, n) < 0)
			return mperr(
			    err, -EINVAL,
			    "'%s': component '%.*s' is not a valid name (1..255 bytes, not . "
			    "or ..)",
			    path, (int)(n > 80 ? 80 : n), p);
		p += n;
	}
	return 0;
}

void batch_init(struct batch *b)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
	b->nops = 0;
}

void batch_destroy(struct batch *b)
{
	msgpack_sbuffer_destroy(&b->sb);
}

int batch_flush(struct mp_client *c, struct batch *b, mp_call *call, mp_error *err)
{
	if (b->nops == 0)
		return 0;
	struct request_body rb;
	request_init(&rb, MT_BATCH);
	request_key(&rb, "ops");
	msgpack_pack_array(&rb.pk, b->nops);
	msg_pack_raw(&rb.pk, b->sb.data, b->sb.size);
	struct reply rep;
	int r = client_primary(c, &rb, call, &rep, err);
	request_destroy(&rb);
	msgpack_sbuffer_clear(&b->sb);
	b->nops = 0;
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, "BATCH", err);
	reply_release(&rep);
	return r;
}
