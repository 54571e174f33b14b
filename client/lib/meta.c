/* Metadata calls: stat, list, the namespace writes, versions and status. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "node.h"
#include "proto.h"

MP_EXPORT int mp_stat(mp_client *c, const char *path, mp_call *call, mp_node *ret, mp_error *err)
{
	int r = nodes_check_path(path, err);
	if (r < 0)
		return r;
	struct request_body b;
	request_init(&b, MT_RESOLVE);
	request_str(&b, "path", path);
	struct reply rep;
	r = client_read(c, &b, call, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, path, err);
	else
		r = nodes_from_reply(&rep, ret, err);
	reply_release(&rep);
	return r;
}

MP_EXPORT int mp_list(mp_client *c, const char *path, mp_call *call, mp_list_cb cb, void *arg,
                      mp_error *err)
{
	int r = nodes_check_path(path, err);
	if (r < 0)
		return r;
	char *cursor = NULL;
	size_t cursor_len = 0;
	do {
		struct request_body b;
		request_init(&b, MT_READDIR);
		request_str(&b, "path", path);
		request_u64(&b, "limit", 1000);
		if (cursor != NULL) {
			request_key(&b, "cursor");
			msg_pack_strn(&b.pk, cursor, cursor_len);
		}
		struct reply rep;
		r = client_read(c, &b, call, &rep, err);
		request_destroy(&b);
		free(cursor);
		cursor = NULL;
		if (r < 0)
			return r;
		if (rep.is_error) {
			r = client_answer_error(&rep, path, err);
			reply_release(&rep);
			return r;
		}
		const msgpack_object_array *entries;
		char why[200];
		if (msg_get_array(rep.frame.body, "entries", true, UINT32_MAX, &entries, why,
		                  sizeof(why)) < 0) {
			reply_release(&rep);
			return mperr(err, -EPROTO, "READDIR %s: %s", path, why);
		}
		for (uint32_t i = 0; i < entries->size && r == 0; i++) {
			mp_node n;
			r = nodes_from_msg(&entries->ptr[i], &n, err);
			if (r < 0)
				break;
			r = cb(arg, &n);
			mp_node_clear(&n);
			if (r < 0)
				mperr(err, r, "listing %s stopped: %s", path, mperr_name(r));
		}
		const char *next;
		size_t next_len;
		if (r == 0 && msg_get_bytes(rep.frame.body, "next", false, 1, NODE_NAME_MAX, &next,
		                            &next_len, why, sizeof(why)) == 0) {
			cursor = strndup(next, next_len);
			cursor_len = next_len;
			if (cursor == NULL)
				r = mperr(err, -ENOMEM, "out of memory");
		}
		reply_release(&rep);
	} while (r == 0 && cursor != NULL);
	free(cursor);
	return r;
}

/* A write that carries only string fields and answers a node or nothing. */
static int simple_write(struct mp_client *c, struct request_body *b, const char *what,
                        mp_call *call, mp_error *err)
{
	struct reply rep;
	int r = client_primary(c, b, call, &rep, err);
	request_destroy(b);
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, what, err);
	reply_release(&rep);
	return r;
}

MP_EXPORT int mp_mkdir(mp_client *c, const char *path, uint32_t mode, bool parents, mp_call *call,
                       mp_error *err)
{
	int r = nodes_check_path(path, err);
	if (r < 0)
		return r;
	if (mode > 07777)
		return mperr(err, -EINVAL, "mkdir %s: mode %o has bits beyond 07777", path, mode);
	struct request_body b;
	request_init(&b, MT_MKDIR);
	request_str(&b, "path", path);
	request_u64(&b, "mode", mode ? mode : 0755);
	if (parents) {
		request_key(&b, "parents");
		msgpack_pack_true(&b.pk);
	}
	return simple_write(c, &b, path, call, err);
}

MP_EXPORT int mp_rename(mp_client *c, const char *from, const char *to, mp_call *call,
                        mp_error *err)
{
	int r = nodes_check_path(from, err);
	if (r == 0)
		r = nodes_check_path(to, err);
	if (r < 0)
		return r;
	struct request_body b;
	request_init(&b, MT_RENAME);
	request_str(&b, "from", from);
	request_str(&b, "to", to);
	char what[200];
	snprintf(what, sizeof(what), "rename %.90s to %.90s", from, to);
	return simple_write(c, &b, what, call, err);
}

MP_EXPORT int mp_symlink(mp_client *c, const char *target, const char *linkpath, mp_call *call,
                         mp_error *err)
{
	int r = nodes_check_path(linkpath, err);
	if (r < 0)
		return r;
	if (target == NULL || target[0] == '\0' || strlen(target) > NODE_TARGET_MAX)
		return mperr(err, -EINVAL, "symlink %s: the target must be 1..%d bytes", linkpath,
		             NODE_TARGET_MAX);
	struct request_body b;
	request_init(&b, MT_SYMLINK);
	request_str(&b, "path", linkpath);
	request_str(&b, "target", target);
	return simple_write(c, &b, linkpath, call, err);
}

static char *join_path(const char *dir, const char *name)
{
	char *p;
	size_t dl = strlen(dir);
	bool slash = dl > 0 && dir[dl - 1] == '/';
	if (asprintf(&p, "%s%s%s", dir, slash ? "" : "/", name) < 0)
		return NULL;
	return p;
}

struct remove_walk {
	struct mp_client *c;
	mp_call *call;
	struct batch *batch;
	mp_error *err;
	/* Directories met in this listing, visited after it (a listing must
	 * not be interleaved with removals of its own entries). */
	char **subdirs;
	size_t nsub, capsub;
	const char *dir;
};

static int add_op(struct remove_walk *w, uint32_t type, const char *path)
{
	msgpack_pack_array(&w->batch->pk, 2);
	msgpack_pack_uint32(&w->batch->pk, type);
	msgpack_pack_map(&w->batch->pk, 1);
	msg_pack_key(&w->batch->pk, "path");
	msg_pack_cstr(&w->batch->pk, path);
	if (++w->batch->nops >= BATCH_OPS)
		return batch_flush(w->c, w->batch, w->call, w->err);
	return 0;
}

static int remove_entry(void *arg, const mp_node *n)
{
	struct remove_walk *w = arg;
	char *p = join_path(w->dir, n->name);
	if (p == NULL)
		return -ENOMEM;
	if (n->type == MP_TYPE_DIR) {
		if (w->nsub == w->capsub) {
			size_t cap = w->capsub ? w->capsub * 2 : 16;
			char **s = realloc(w->subdirs, cap * sizeof(*s));
			if (s == NULL) {
				free(p);
				return -ENOMEM;
			}
			w->subdirs = s;
			w->capsub = cap;
		}
		w->subdirs[w->nsub++] = p;
		return 0;
	}
	int r = add_op(w, MT_UNLINK, p);
	free(p);
	return r;
}

/* Removes everything below dir, then dir itself (deepest first). */
static int remove_tree(struct mp_client *c, const char *dir, mp_call *call, struct batch *batch,
                       mp_error *err)
{
	struct remove_walk w = {.c = c, .call = call, .batch = batch, .err = err, .dir = dir};
	int r = mp_list(c, dir, call, remove_entry, &w, err);
	for (size_t i = 0; i < w.nsub; i++) {
		if (r == 0)
			r = remove_tree(c, w.subdirs[i], call, batch, err);
		free(w.subdirs[i]);
	}
	free(w.subdirs);
	if (r == 0)
		r = add_op(&w, MT_RMDIR, dir);
	return r;
}

MP_EXPORT int mp_remove(mp_client *c, const char *path, bool recursive, mp_call *call,
                        mp_error *err)
{
	mp_node n;
	int r = mp_stat(c, path, call, &n, err);
	if (r < 0)
		return r;
	enum mp_type type = n.type;
	bool root = n.ino == 1;
	mp_node_clear(&n);
	if (root)
		return mperr(err, -EBUSY, "%s: the root cannot be removed", path);
	struct request_body b;
	if (type != MP_TYPE_DIR) {
		request_init(&b, MT_UNLINK);
		request_str(&b, "path", path);
		return simple_write(c, &b, path, call, err);
	}
	if (!recursive) {
		request_init(&b, MT_RMDIR);
		request_str(&b, "path", path);
		return simple_write(c, &b, path, call, err);
	}
	struct batch batch;
	batch_init(&batch);
	r = remove_tree(c, path, call, &batch, err);
	if (r == 0)
		r = batch_flush(c, &batch, call, err);
	batch_destroy(&batch);
	return r;
}

/* VERSION at one server on a fresh connection, timed. */
static int ask_version(struct mp_client *c, struct server_entry *s, mp_server_status *st)
{
	memset(st, 0, sizeof(*st));
	snprintf(st->address, sizeof(st->address), "%s", s->address);
	snprintf(st->role, sizeof(st->role), "%s", s->is_primary ? "primary" : "mirror");
	st->staleness_ms = -1;
	st->marked_down = servers_is_down(s);
	int64_t t0 = client_now_ns();
	struct channel *ch;
	mp_error e;
	int r = channel_open(s->address, &c->tls, c->cfg.token, NULL, c->cfg.connect_timeout_ms,
	                     c->cfg.timeout_ms, &ch, &e);
	if (r < 0) {
		snprintf(st->error, sizeof(st->error), "%.250s", e.message);
		return r;
	}
	client_learn(c, ch);
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	bool sent;
	r = channel_call(ch, &b, NULL, c->cfg.timeout_ms, &rep, &sent, &e);
	request_destroy(&b);
	st->rtt_ms = (double)(client_now_ns() - t0) / 1e6;
	if (r < 0) {
		snprintf(st->error, sizeof(st->error), "%.250s", e.message);
		channel_close(ch);
		return r;
	}
	if (rep.is_error) {
		client_answer_error(&rep, NULL, &e);
		snprintf(st->error, sizeof(st->error), "%.250s", e.message);
		r = rep.error_code;
	} else {
		char why[64];
		const char *p;
		size_t len;
		st->up = true;
		st->version = rep.version;
		if (msg_get_bytes(rep.frame.body, "role", false, 1, sizeof(st->role) - 1, &p, &len,
		                  why, sizeof(why)) == 0)
			snprintf(st->role, sizeof(st->role), "%.*s", (int)len, p);
		if (msg_get_bytes(rep.frame.body, "site", false, 1, sizeof(st->site) - 1, &p, &len,
		                  why, sizeof(why)) == 0)
			snprintf(st->site, sizeof(st->site), "%.*s", (int)len, p);
		int64_t stale = -1;
		if (msg_get_i64(rep.frame.body, "staleness_ms", false, &stale, why, sizeof(why)) ==
		    0)
			st->staleness_ms = stale;
		if (s->is_primary)
			st->staleness_ms = 0;
	}
	reply_release(&rep);
	channel_close(ch);
	return r;
}

MP_EXPORT int mp_status(mp_client *c, mp_server_status *out, size_t cap, size_t *ret_n,
                        mp_error *err)
{
	uint64_t primary_version = 0;
	size_t total = __atomic_load_n(&c->servers.n, __ATOMIC_ACQUIRE), n = 0;
	for (size_t k = 0; k < total; k++) {
		if (!servers_routable(c->servers.entries[k]))
			continue;
		size_t i = n++;
		mp_server_status st;
		ask_version(c, c->servers.entries[k], &st);
		if (st.up && strcmp(st.role, "primary") == 0 && st.version > primary_version)
			primary_version = st.version;
		if (i < cap)
			out[i] = st;
	}
	for (size_t i = 0; i < n && i < cap; i++)
		if (out[i].up && strcmp(out[i].role, "mirror") == 0 &&
		    primary_version > out[i].version)
			out[i].lag_versions = primary_version - out[i].version;
	*ret_n = n;
	(void)err;
	return 0;
}

MP_EXPORT int mp_version(mp_client *c, mp_versions *ret, mp_error *err)
{
	memset(ret, 0, sizeof(*ret));
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	int r = client_primary(c, &b, NULL, &rep, err);
	if (r < 0) {
		request_destroy(&b);
		return r;
	}
	ret->primary = rep.version;
	reply_release(&rep);
	for (size_t i = 0; i < c->servers.n; i++) {
		struct server_entry *s = c->servers.entries[i];
		if (s->is_primary || !servers_routable(s) || servers_is_down(s))
			continue;
		struct channel *ch;
		bool pooled, sent;
		mp_error e;
		if (servers_get_channel(c, s, &ch, &pooled, &e) < 0) {
			servers_mark_down(c, s, 0, 0, "%.250s", e.message);
			continue;
		}
		if (channel_call(ch, &b, NULL, c->cfg.timeout_ms, &rep, &sent, &e) < 0) {
			channel_close(ch);
			servers_mark_down(c, s, 0, 0, "%.250s", e.message);
			continue;
		}
		servers_put_channel(s, ch);
		if (!rep.is_error) {
			ret->mirror = rep.version;
			snprintf(ret->mirror_address, sizeof(ret->mirror_address), "%s",
			         s->address);
			reply_release(&rep);
			break;
		}
		reply_release(&rep);
	}
	request_destroy(&b);
	pthread_mutex_lock(&c->lock);
	snprintf(ret->cluster_id, sizeof(ret->cluster_id), "%s", c->cluster_id);
	pthread_mutex_unlock(&c->lock);
	return 0;
}
