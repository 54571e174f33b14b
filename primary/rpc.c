/* Write requests of mp-primary: checked when they arrive, executed inside
 * a transaction when the committer forms a batch. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"
#include "primary.h"
#include "proto.h"
#include "reads.h"
#include "sitereport.h"
#include "txn.h"

static int get_path(const msgpack_object *body, const char *key, const char **ret, size_t *len,
                    char *err, size_t errlen)
{
	int r = msg_get_bytes(body, key, true, 1, NODE_PATH_MAX, ret, len, err, errlen);
	if (r == 0 && (*ret)[0] != '/') {
		snprintf(err, errlen, "field '%s': path '%.*s' is not absolute", key,
		         (int)(*len > 200 ? 200 : *len), *ret);
		return -EINVAL;
	}
	return r;
}

static int check_access(struct conn *c, const msgpack_object *body, const char *key, char *err,
                        size_t errlen)
{
	const char *path;
	size_t len;
	int r = get_path(body, key, &path, &len, err, errlen);
	if (r < 0)
		return r;
	if (!conn_may_write_path(c, path, len)) {
		if (!c->open_access && (c->claims.kind != TOKEN_CLIENT || !c->claims.read_write))
			snprintf(err, errlen, "the token of '%s' does not allow writes",
			         c->claims.name);
		else
			snprintf(err, errlen, "'%.*s' is outside the token's subtree '%s'",
			         (int)(len > 200 ? 200 : len), path, c->claims.subtree);
		return -EACCES;
	}
	return 0;
}

/* A layout is a claim to read the objects it names, through cache nodes
 * that hold credentials its writer may not. Through a client token, a layout
 * may name only objects that token uploaded: keys under u/NAME/, NAME being
 * the token's (the prefix announced to it in HELLO_OK as upload_prefix). */
static int check_layout(struct conn *c, const msgpack_object *body, char *err, size_t errlen)
{
	if (c->open_access || c->claims.kind != TOKEN_CLIENT)
		return 0;
	const msgpack_object *o = msg_field(body, "layout");
	if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	const msgpack_object *a = o;
	if (o->type == MSGPACK_OBJECT_BIN) {
		size_t off = 0;
		if (msgpack_unpack_next(&u, o->via.bin.ptr, o->via.bin.size, &off) !=
		    MSGPACK_UNPACK_SUCCESS) {
			msgpack_unpacked_destroy(&u);
			snprintf(err, errlen, "field 'layout': not msgpack");
			return -EINVAL;
		}
		a = &u.data;
	}
	char prefix[TOKEN_NAME_MAX + 4];
	snprintf(prefix, sizeof(prefix), "u/%s/", c->claims.name);
	size_t plen = strlen(prefix);
	int r = 0;
	if (a->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "field 'layout': expected an array of extents");
		r = -EINVAL;
	}
	for (uint32_t i = 0; r == 0 && i < a->via.array.size; i++) {
		const msgpack_object *e = &a->via.array.ptr[i];
		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 2 ||
		    e->via.array.ptr[1].type != MSGPACK_OBJECT_STR) {
			snprintf(err, errlen, "layout extent %u: expected [bucket, key, ...]", i);
			r = -EINVAL;
			break;
		}
		const msgpack_object_str *k = &e->via.array.ptr[1].via.str;
		if (k->size < plen || memcmp(k->ptr, prefix, plen) != 0) {
			snprintf(
			    err, errlen,
			    "layout extent %u names key '%.*s', which the token of '%s' did not "
			    "upload (its uploads go under '%s'; imports and layouts naming other "
			    "objects need an unrestricted token)",
			    i, (int)(k->size > 200 ? 200 : k->size), k->ptr, c->claims.name,
			    prefix);
			r = -EACCES;
		}
	}
	msgpack_unpacked_destroy(&u);
	return r;
}

/* A policy document as POLICY_APPLY carries it: {file?: str, doc: bin|str}. */
static int get_policy_doc(const msgpack_object *body, const char **ret_file, size_t *ret_file_len,
                          const char **ret_doc, size_t *ret_len, char *err, size_t errlen)
{
	*ret_file = "policy";
	*ret_file_len = strlen(*ret_file);
	int r = msg_get_bytes(body, "file", false, 1, NODE_NAME_MAX, ret_file, ret_file_len, err,
	                      errlen);
	if (r < 0)
		return r;
	return msg_get_bytes(body, "doc", true, 0, POLICY_MAX_FILE_BYTES, ret_doc, ret_len, err,
	                     errlen);
}

/* A policy governs every path and every site: only a token for the whole
 * tree that may write applies one. The document is checked here, before it
 * queues, so a wrong one changes nothing anywhere. */
static int check_whole_tree(struct conn *c, const char *what, char *err, size_t errlen)
{
	if (!c->open_access && (c->claims.kind != TOKEN_CLIENT || !c->claims.read_write ||
	                        strcmp(c->claims.subtree, "/") != 0)) {
		snprintf(err, errlen, "the token of '%s' may not %s (it needs write access to '/')",
		         c->claims.name, what);
		return -EACCES;
	}
	return 0;
}

static int check_policy(struct conn *c, const msgpack_object *body, char *err, size_t errlen)
{
	if (check_whole_tree(c, "apply policies", err, errlen) < 0)
		return -EACCES;
	const char *file, *doc;
	size_t flen, dlen;
	int r = get_policy_doc(body, &file, &flen, &doc, &dlen, err, errlen);
	if (r < 0)
		return r;
	char name[NODE_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%.*s", (int)flen, file);
	struct policy *p = NULL;
	struct policy_errors errs = {0};
	r = policy_parse_buffer(name, doc, dlen, NULL, &p, &errs);
	if (r == 0) {
		policy_free(p);
		return 0;
	}
	size_t off = (size_t)snprintf(err, errlen, "the policy is not valid:");
	for (size_t i = 0; i < errs.n && off < errlen; i++)
		off += (size_t)snprintf(err + off, errlen - off, "\n%s", errs.v[i].text);
	if (errs.n == 0 && off < errlen)
		snprintf(err + off, errlen - off, " %s", strerror(-r));
	policy_errors_clear(&errs);
	return r == -ENOMEM ? -ENOMEM : -EINVAL;
}

static int check_one(struct conn *c, uint32_t type, const msgpack_object *body, char *err,
                     size_t errlen)
{
	if (body->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "the operation body must be a map");
		return -EINVAL;
	}
	switch (type) {
	case MT_RENAME: {
		int r = check_access(c, body, "from", err, errlen);
		return r < 0 ? r : check_access(c, body, "to", err, errlen);
	}
	case MT_CREATE: {
		int r = check_access(c, body, "path", err, errlen);
		return r < 0 ? r : check_layout(c, body, err, errlen);
	}
	case MT_POLICY_APPLY:
		return check_policy(c, body, err, errlen);
	case MT_GC_CONFIRM_SITES:
		return check_whole_tree(c, "confirm deletions", err, errlen);
	case MT_MKDIR:
	case MT_SYMLINK:
	case MT_UNLINK:
	case MT_RMDIR:
	case MT_SETATTR:
		return check_access(c, body, "path", err, errlen);
	default:
		snprintf(err, errlen, "%s is not a write operation", proto_msg_name(type));
		return -EINVAL;
	}
}

int rpc_check_write(struct primary *p, struct conn *c, uint32_t type, const msgpack_object *body,
                    char *err, size_t errlen)
{
	if (type != MT_BATCH)
		return check_one(c, type, body, err, errlen);
	const msgpack_object_array *ops;
	int r = msg_get_array(body, "ops", true, BATCH_MAX_OPS, &ops, err, errlen);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < ops->size; i++) {
		const msgpack_object *op = &ops->ptr[i];
		if (op->type != MSGPACK_OBJECT_ARRAY || op->via.array.size != 2 ||
		    op->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
			snprintf(err, errlen, "op %u: must be [type, body]", i);
			return -EINVAL;
		}
		uint64_t t = op->via.array.ptr[0].via.u64;
		if (!reads_is_write((uint32_t)t) || t == MT_BATCH || t == MT_POLICY_APPLY ||
		    t == MT_GC_CONFIRM_SITES || t > UINT32_MAX) {
			snprintf(err, errlen, "op %u: type %llu is not a write operation", i,
			         (unsigned long long)t);
			return -EINVAL;
		}
		char why[400];
		r = check_one(c, (uint32_t)t, &op->via.array.ptr[1], why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "op %u (%s): %s", i, proto_msg_name((uint32_t)t),
			         why);
			return r;
		}
	}
	return 0;
}

static int get_attrs(const msgpack_object *body, struct txn_attr *a, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		unsigned bit;
		uint64_t max;
		size_t off;
	} fields[] = {
	    {"mode", ATTR_MODE, 07777, offsetof(struct txn_attr, mode)},
	    {"uid", ATTR_UID, UINT32_MAX, offsetof(struct txn_attr, uid)},
	    {"gid", ATTR_GID, UINT32_MAX, offsetof(struct txn_attr, gid)},
	};
	uint64_t v;
	int r;
	memset(a, 0, sizeof(*a));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if ((r = msg_get_u64(body, fields[i].key, false, fields[i].max, &v, err, errlen)) <
		    0)
			return r;
		if (r == 0) {
			a->mask |= fields[i].bit;
			*(uint32_t *)((char *)a + fields[i].off) = (uint32_t)v;
		}
	}
	if ((r = msg_get_u64(body, "size", false, UINT64_MAX, &a->size, err, errlen)) < 0)
		return r;
	if (r == 0)
		a->mask |= ATTR_SIZE;
	if ((r = msg_get_i64(body, "mtime", false, &a->mtime, err, errlen)) < 0)
		return r;
	if (r == 0)
		a->mask |= ATTR_MTIME;
	return 0;
}

/* The layout may come as an array of extents (re-encoded here) or as the
 * already-encoded bytes in a bin. */
static int get_layout(const msgpack_object *body, msgpack_sbuffer *scratch, const uint8_t **ret,
                      size_t *ret_len, char *err, size_t errlen)
{
	const msgpack_object *o = msg_field(body, "layout");
	*ret = NULL;
	*ret_len = 0;
	if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type == MSGPACK_OBJECT_BIN) {
		*ret = (const uint8_t *)o->via.bin.ptr;
		*ret_len = o->via.bin.size;
	} else if (o->type == MSGPACK_OBJECT_ARRAY) {
		msgpack_packer pk;
		msgpack_packer_init(&pk, scratch, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *o);
		*ret = (const uint8_t *)scratch->data;
		*ret_len = scratch->size;
	} else {
		snprintf(err, errlen, "field 'layout': expected an array of extents");
		return -EINVAL;
	}
	if (*ret_len == 1 && (*ret)[0] == 0x90)
		*ret_len = 0; /* an empty layout is no layout */
	return 0;
}

static int execute_one(struct txn *t, uint32_t type, const msgpack_object *body, uint64_t *ret_ino,
                       char *err, size_t errlen)
{
	const char *path, *path2;
	size_t len, len2;
	struct txn_attr a;
	if (type == MT_POLICY_APPLY) {
		int r = get_policy_doc(body, &path2, &len2, &path, &len, err, errlen);
		if (r == 0 &&
		    (r = txn_put_record(t, "policy", 6, (const uint8_t *)path, len, ret_ino)) < 0)
			snprintf(err, errlen, "%s", txn_error(t));
		return r;
	}
	if (type == MT_GC_CONFIRM_SITES) {
		/* A new record each time: its ctime tells every site's mirror
		 * that an operator let the deletions its breaker holds go. */
		static const uint8_t doc[] = "confirmed by mp gc --confirm";
		int r = txn_put_record(t, "gc-confirm", 10, doc, sizeof(doc) - 1, ret_ino);
		if (r < 0)
			snprintf(err, errlen, "%s", txn_error(t));
		return r;
	}
	int r = get_path(body, type == MT_RENAME ? "from" : "path", &path, &len, err, errlen);
	if (r < 0)
		return r;
	*ret_ino = 0;
	switch (type) {
	case MT_MKDIR: {
		bool parents = false;
		if ((r = get_attrs(body, &a, err, errlen)) < 0 ||
		    (r = msg_get_bool(body, "parents", false, &parents, err, errlen)) < 0)
			return r;
		r = txn_mkdir(t, path, len, &a, parents, ret_ino);
		break;
	}
	case MT_CREATE: {
		msgpack_sbuffer scratch;
		msgpack_sbuffer_init(&scratch);
		const uint8_t *layout;
		size_t llen;
		if ((r = get_attrs(body, &a, err, errlen)) < 0 ||
		    (r = get_layout(body, &scratch, &layout, &llen, err, errlen)) < 0) {
			msgpack_sbuffer_destroy(&scratch);
			return r;
		}
		r = txn_create(t, path, len, &a, layout, llen, ret_ino);
		msgpack_sbuffer_destroy(&scratch);
		break;
	}
	case MT_SYMLINK:
		if ((r = get_attrs(body, &a, err, errlen)) < 0 ||
		    (r = msg_get_bytes(body, "target", true, 1, NODE_TARGET_MAX, &path2, &len2, err,
		                       errlen)) < 0)
			return r;
		r = txn_symlink(t, path, len, path2, len2, &a, ret_ino);
		break;
	case MT_RENAME:
		if ((r = get_path(body, "to", &path2, &len2, err, errlen)) < 0)
			return r;
		r = txn_rename(t, path, len, path2, len2, ret_ino);
		break;
	case MT_UNLINK:
		r = txn_unlink(t, path, len);
		break;
	case MT_RMDIR:
		r = txn_rmdir(t, path, len);
		break;
	case MT_SETATTR:
		if ((r = get_attrs(body, &a, err, errlen)) < 0)
			return r;
		r = txn_setattr(t, path, len, &a, ret_ino);
		break;
	default:
		snprintf(err, errlen, "%s is not a write operation", proto_msg_name(type));
		return -EINVAL;
	}
	if (r < 0)
		snprintf(err, errlen, "%s", txn_error(t));
	return r;
}

int rpc_execute_write(struct primary *p, struct txn *t, struct conn *c, uint32_t type,
                      const msgpack_object *body, uint64_t *ret_ino, uint64_t **ret_inos,
                      size_t *ret_ninos, char *err, size_t errlen)
{
	err[0] = '\0';
	if (type != MT_BATCH)
		return execute_one(t, type, body, ret_ino, err, errlen);
	const msgpack_object_array *ops;
	int r = msg_get_array(body, "ops", true, BATCH_MAX_OPS, &ops, err, errlen);
	if (r < 0)
		return r;
	uint64_t *inos = calloc(ops->size ? ops->size : 1, sizeof(*inos));
	if (inos == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < ops->size; i++) {
		const msgpack_object *op = &ops->ptr[i];
		uint32_t optype = (uint32_t)op->via.array.ptr[0].via.u64;
		char why[400];
		why[0] = '\0';
		r = execute_one(t, optype, &op->via.array.ptr[1], &inos[i], why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "op %u (%s): %s", i, proto_msg_name(optype), why);
			free(inos);
			return r;
		}
	}
	*ret_ino = 0;
	*ret_inos = inos;
	*ret_ninos = ops->size;
	return 0;
}

void rpc_read(struct primary *p, struct conn *c, uint32_t type, uint64_t id,
              const msgpack_object *body)
{
	/* The primary is current by definition. A read's max_staleness_ms is
	 * for mirrors and ignored here, like any field a read does not use. */
	struct read_view v = {.ns = p->ns,
	                      .version = p->version,
	                      .cluster_id = p->cluster_id,
	                      .role = "primary",
	                      .staleness_ms = 0,
	                      .primary_version = p->version,
	                      .secret = p->secret,
	                      .secret_len = p->secret_len};
	reads_answer(&v, c, type, id, body);
}

void rpc_dispatch(void *owner, struct conn *c, struct request *r)
{
	struct primary *p = owner;
	const struct frame *f = &r->frame;
	if (f->type == MT_SUBSCRIBE) {
		stream_subscribe(p->stream, c, f->id, f->body);
		goto done;
	}
	if (f->type == MT_ACK) {
		stream_ack(p->stream, c, f->id, f->body);
		goto done;
	}
	if (f->type == MT_SITE_REPORT) {
		/* One-way, on a subscription: a bad one is logged, not answered. */
		char err[300];
		if (site_table_receive(p->sites, f->body, primary_now_ns(), err, sizeof(err)) < 0)
			log_warn("%s: %s", c->peer, err);
		goto done;
	}
	if (f->type == MT_SITES) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		site_report_build_reply(&sb, f->id, p->version, NULL, p->sites, primary_now_ns());
		conn_send(c, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		goto done;
	}
	if (c->role == CONN_SUBSCRIBER) {
		conn_send_error(c, f->id, -EPROTO, "%s on a subscribed connection",
		                proto_msg_name(f->type));
		goto done;
	}
	if (f->type == MT_GC) {
		gc_request(p->gc, c, r);
		return; /* taken */
	}
	if (reads_is_read(f->type)) {
		metric_add(p->m_reads, 1);
		/* Reads wait while the namespace is ahead of the store (so a
		 * read never shows a version that could still be lost), and
		 * behind this connection's own earlier writes (read your
		 * writes, in order, on one connection). */
		if (!committer_busy(p->committer) && c->pending_writes == 0) {
			rpc_read(p, c, f->type, f->id, f->body);
			goto done;
		}
		TAILQ_INSERT_TAIL(&p->parked_reads, r, entry);
		return; /* queued */
	}
	if (reads_is_write(f->type)) {
		if (p->draining) {
			conn_send_error(c, f->id, -ESHUTDOWN, "the primary is shutting down");
			goto done;
		}
		char err[3072];
		int rc = rpc_check_write(p, c, f->type, f->body, err, sizeof(err));
		if (rc < 0) {
			metric_add(p->m_write_errors, 1);
			conn_send_error(c, f->id, rc, "%s: %s", proto_msg_name(f->type), err);
			goto done;
		}
		c->pending_writes++;
		committer_submit(p->committer, r);
		return; /* queued */
	}
	conn_send_error(c, f->id, -EPROTO, "unknown message type %u", f->type);
done:
	request_free(r);
}
