#include "reads.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "grant.h"
#include "proto.h"

bool reads_is_read(uint32_t type)
{
	return type >= MT_VERSION && type <= MT_SITES;
}

bool reads_is_write(uint32_t type)
{
	return type >= MT_MKDIR && type <= MT_GC_CONFIRM_SITES;
}

/* Calls fn with the bucket, key and etag of each extent of a file's layout
 * (NULLs for an extent that does not decode, so that the caller's list
 * stays one entry per extent). Returns the number of extents, or -1 when
 * the layout is not an array. */
typedef void (*extent_fn)(void *arg, const char *bucket, const char *key, const char *etag);

static int each_extent(const struct node_rec *rec, extent_fn fn, void *arg)
{
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	if (msgpack_unpack_next(&u, (const char *)rec->extra, rec->extra_len, &off) !=
	        MSGPACK_UNPACK_SUCCESS ||
	    u.data.type != MSGPACK_OBJECT_ARRAY) {
		msgpack_unpacked_destroy(&u);
		return -1;
	}
	const msgpack_object_array *a = &u.data.via.array;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *e = &a->ptr[i];
		char f[3][1100];
		bool good = e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size >= 3;
		for (int k = 0; good && k < 3; k++) {
			const msgpack_object *x = &e->via.array.ptr[k];
			good = x->type == MSGPACK_OBJECT_STR && x->via.str.size < sizeof(f[k]);
			if (good)
				snprintf(f[k], sizeof(f[k]), "%.*s", (int)x->via.str.size,
				         x->via.str.ptr);
		}
		if (good)
			fn(arg, f[0], f[1], f[2]);
		else
			fn(arg, NULL, NULL, NULL);
	}
	int n = (int)a->size;
	msgpack_unpacked_destroy(&u);
	return n;
}

struct extent_list {
	const struct read_view *v;
	msgpack_packer pk; /* into items */
	msgpack_sbuffer items;
	int64_t now;
	bool any;
};

static void grant_one(void *arg, const char *bucket, const char *key, const char *etag)
{
	struct extent_list *l = arg;
	char g[GRANT_LEN + 1] = "";
	if (bucket != NULL)
		grant_make(l->v->secret, l->v->secret_len, bucket, key, etag, l->now, GRANT_TTL_S,
		           g);
	msg_pack_cstr(&l->pk, g);
}

static void replica_one(void *arg, const char *bucket, const char *key, const char *etag)
{
	struct extent_list *l = arg;
	const char *alias =
	    bucket != NULL ? l->v->replica_of(l->v->replica_arg, bucket, key, etag) : NULL;
	if (alias != NULL) {
		msg_pack_cstr(&l->pk, alias);
		l->any = true;
	} else {
		msgpack_pack_nil(&l->pk);
	}
}

/* Packs key: [one item per extent] as fn makes them; with only_if_any,
 * nothing unless some item was not nil. Returns whether it packed. */
static bool pack_per_extent(const struct read_view *v, msgpack_packer *pk,
                            const struct node_rec *rec, const char *key, extent_fn fn,
                            bool only_if_any)
{
	struct extent_list l = {.v = v, .now = (int64_t)time(NULL)};
	msgpack_sbuffer_init(&l.items);
	msgpack_packer_init(&l.pk, &l.items, msgpack_sbuffer_write);
	int n = each_extent(rec, fn, &l);
	bool packed = n >= 0 && (l.any || !only_if_any);
	if (packed) {
		msg_pack_key(pk, key);
		msgpack_pack_array(pk, (uint32_t)n);
		msg_pack_raw(pk, l.items.data, l.items.size);
	}
	msgpack_sbuffer_destroy(&l.items);
	return packed;
}

/* With a cluster secret, a file's node comes with one read grant per
 * extent of its layout (grants: [str...]), for the cache nodes. */
static bool pack_grants(const struct read_view *v, msgpack_packer *pk, const struct node_rec *rec)
{
	if (v->secret == NULL || rec->type != NODE_FILE || rec->extra_len == 0)
		return false;
	return pack_per_extent(v, pk, rec, "grants", grant_one, false);
}

/* replicas: [alias or nil per extent], when some extent has a verified
 * site copy; packs nothing (returns false) otherwise. */
static bool pack_replicas(const struct read_view *v, msgpack_packer *pk, const struct node_rec *rec)
{
	if (v->replica_of == NULL || rec->type != NODE_FILE || rec->extra_len == 0)
		return false;
	return pack_per_extent(v, pk, rec, "replicas", replica_one, true);
}

static void reply_node(const struct read_view *v, struct conn *c, uint64_t id,
                       const struct node_rec *rec)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	/* The map's size is known only once the optional fields are packed:
	 * pack them apart, then the map around them. */
	msgpack_sbuffer extra;
	msgpack_packer epk;
	msgpack_sbuffer_init(&extra);
	msgpack_packer_init(&epk, &extra, msgpack_sbuffer_write);
	bool grants = v->secret != NULL && rec->type == NODE_FILE && rec->extra_len > 0 &&
	              pack_grants(v, &epk, rec);
	bool replicas = pack_replicas(v, &epk, rec);
	msg_begin(&sb, &pk, MT_REPLY, id, 2 + grants + replicas);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, v->version);
	msg_pack_raw(&pk, extra.data, extra.size);
	msgpack_sbuffer_destroy(&extra);
	msg_pack_key(&pk, "node");
	msg_pack_node(&pk, rec);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void read_error(struct conn *c, uint64_t id, int r, const char *what)
{
	switch (r) {
	case -ENOENT:
		conn_send_error(c, id, r, "%s does not exist", what);
		break;
	case -ENOTDIR:
		conn_send_error(c, id, r, "%s: not a directory", what);
		break;
	case -EACCES:
		conn_send_error(c, id, r, "%s is outside the token's subtree", what);
		break;
	default:
		conn_send_error(c, id, r,
		                "%s: invalid (absolute path, names of 1..255 bytes "
		                "without '/', not . or ..)",
		                what);
	}
}

struct readdir_page {
	const struct conn *c; /* set when the token limits what is visible */
	const struct namespace *ns;
	msgpack_packer *pk;
	uint32_t limit;
	uint32_t count;
	bool more;
	const char *last;
	uint8_t last_len;
};

static int readdir_visit(void *arg, const struct node_rec *rec)
{
	struct readdir_page *pg = arg;
	if (pg->c != NULL && !conn_may_read_ino(pg->c, pg->ns, rec->ino))
		return 0;
	if (pg->count == pg->limit) {
		pg->more = true;
		return 1;
	}
	msg_pack_node(pg->pk, rec);
	pg->count++;
	pg->last = rec->name;
	pg->last_len = rec->name_len;
	return 0;
}

static void do_readdir(const struct read_view *v, struct conn *c, uint64_t id,
                       const msgpack_object *body)
{
	char err[256];
	struct node_rec dir;
	uint64_t ino = 0, limit = READDIR_DEFAULT_LIMIT;
	const char *path = NULL, *cursor = NULL;
	size_t plen = 0, clen = 0;
	int r = msg_get_u64(body, "ino", false, UINT64_MAX, &ino, err, sizeof(err));
	if (r == 1)
		r = msg_get_bytes(body, "path", false, 1, NODE_PATH_MAX, &path, &plen, err,
		                  sizeof(err));
	if (r == 0)
		r = msg_get_bytes(body, "cursor", false, 0, NODE_NAME_MAX, &cursor, &clen, err,
		                  sizeof(err));
	if (r == 1)
		r = 0;
	if (r == 0)
		r = msg_get_u64(body, "limit", false, READDIR_MAX_LIMIT, &limit, err, sizeof(err));
	if (r < 0 || (ino == 0 && path == NULL) || limit == 0) {
		conn_send_error(c, id, -EINVAL, "READDIR: %s",
		                r < 0 ? err : "needs 'ino' or 'path' and a limit of 1..10000");
		return;
	}
	r = path != NULL ? namespace_resolve(v->ns, path, plen, &dir)
	                 : namespace_get(v->ns, ino, &dir);
	if (r == 0 && dir.type == NODE_RECORD)
		r = -ENOENT;
	if (r == 0 && dir.type != NODE_DIR)
		r = -ENOTDIR;
	if (r == 0 && !conn_may_read_ino(c, v->ns, dir.ino))
		r = -EACCES;
	if (r < 0) {
		read_error(c, id, r, "READDIR: the directory");
		return;
	}
	msgpack_sbuffer entries;
	msgpack_packer epk;
	msgpack_sbuffer_init(&entries);
	msgpack_packer_init(&epk, &entries, msgpack_sbuffer_write);
	struct readdir_page pg = {.pk = &epk, .limit = (uint32_t)limit};
	if (conn_restricted(c)) {
		pg.c = c;
		pg.ns = v->ns;
	}
	namespace_readdir(v->ns, dir.ino, cursor, clen, readdir_visit, &pg);

	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 4);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, v->version);
	msg_pack_key(&pk, "dir");
	msgpack_pack_uint64(&pk, dir.ino);
	msg_pack_key(&pk, "entries");
	msgpack_pack_array(&pk, pg.count);
	msg_pack_raw(&pk, entries.data, entries.size);
	msg_pack_key(&pk, "next");
	if (pg.more)
		msg_pack_strn(&pk, pg.last, pg.last_len);
	else
		msgpack_pack_nil(&pk);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&entries);
}

/* {name?} -> {version, name, doc (bin, nil when there is none), ctime}. */
static void get_record(const struct read_view *v, struct conn *c, uint64_t id,
                       const msgpack_object *body)
{
	char err[256];
	const char *name = "policy";
	size_t nlen = strlen(name);
	int r =
	    msg_get_bytes(body, "name", false, 1, NODE_NAME_MAX, &name, &nlen, err, sizeof(err));
	if (r < 0) {
		conn_send_error(c, id, -EINVAL, "POLICY_GET: %s", err);
		return;
	}
	struct node_rec rec;
	r = namespace_lookup(v->ns, 0, name, nlen, &rec);
	if (r < 0 && r != -ENOENT) {
		conn_send_error(c, id, r, "POLICY_GET: bad record name '%.*s'",
		                (int)(nlen > 200 ? 200 : nlen), name);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 4);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, v->version);
	msg_pack_key(&pk, "name");
	msg_pack_strn(&pk, name, nlen);
	msg_pack_key(&pk, "doc");
	if (r == 0) {
		msgpack_pack_bin(&pk, rec.extra_len);
		msgpack_pack_bin_body(&pk, rec.extra, rec.extra_len);
	} else {
		msgpack_pack_nil(&pk);
	}
	msg_pack_key(&pk, "ctime");
	msgpack_pack_int64(&pk, r == 0 ? rec.ctime : 0);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

void reads_answer(const struct read_view *v, struct conn *c, uint32_t type, uint64_t id,
                  const msgpack_object *body)
{
	char err[256];
	struct node_rec rec;
	int r;
	switch (type) {
	case MT_VERSION: {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msg_begin(&sb, &pk, MT_REPLY, id, v->site != NULL ? 6 : 5);
		msg_pack_key(&pk, "version");
		msgpack_pack_uint64(&pk, v->version);
		msg_pack_key(&pk, "cluster_id");
		msg_pack_cstr(&pk, v->cluster_id);
		msg_pack_key(&pk, "role");
		msg_pack_cstr(&pk, v->role);
		if (v->site != NULL) {
			msg_pack_key(&pk, "site");
			msg_pack_cstr(&pk, v->site);
		}
		msg_pack_key(&pk, "staleness_ms");
		msgpack_pack_int64(&pk, v->staleness_ms);
		msg_pack_key(&pk, "primary_version");
		msgpack_pack_uint64(&pk, v->primary_version);
		msg_end(&sb);
		conn_send(c, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		return;
	}
	case MT_LOOKUP: {
		uint64_t parent;
		const char *name;
		size_t nlen;
		if (msg_get_u64(body, "parent", true, UINT64_MAX, &parent, err, sizeof(err)) < 0 ||
		    msg_get_bytes(body, "name", true, 1, NODE_NAME_MAX, &name, &nlen, err,
		                  sizeof(err)) < 0) {
			conn_send_error(c, id, -EINVAL, "LOOKUP: %s", err);
			return;
		}
		/* Parent 0 holds the records, which are not files. */
		r = parent == 0 ? -ENOENT : namespace_lookup(v->ns, parent, name, nlen, &rec);
		if (r == 0 && !conn_may_read_ino(c, v->ns, rec.ino))
			r = -EACCES;
		if (r < 0) {
			char what[300];
			snprintf(what, sizeof(what), "LOOKUP: '%.*s' in directory %llu",
			         (int)(nlen > 200 ? 200 : nlen), name, (unsigned long long)parent);
			read_error(c, id, r, what);
			return;
		}
		reply_node(v, c, id, &rec);
		return;
	}
	case MT_GETATTR: {
		uint64_t ino;
		if (msg_get_u64(body, "ino", true, UINT64_MAX, &ino, err, sizeof(err)) < 0) {
			conn_send_error(c, id, -EINVAL, "GETATTR: %s", err);
			return;
		}
		r = namespace_get(v->ns, ino, &rec);
		if (r == 0 && rec.type == NODE_RECORD)
			r = -ENOENT;
		if (r == 0 && !conn_may_read_ino(c, v->ns, rec.ino))
			r = -EACCES;
		if (r < 0) {
			char what[64];
			snprintf(what, sizeof(what), "GETATTR: inode %llu",
			         (unsigned long long)ino);
			read_error(c, id, r, what);
			return;
		}
		reply_node(v, c, id, &rec);
		return;
	}
	case MT_RESOLVE: {
		const char *path;
		size_t plen;
		if (msg_get_bytes(body, "path", true, 1, NODE_PATH_MAX, &path, &plen, err,
		                  sizeof(err)) < 0) {
			conn_send_error(c, id, -EINVAL, "RESOLVE: %s", err);
			return;
		}
		r = namespace_resolve(v->ns, path, plen, &rec);
		if (r == 0 && !conn_may_read_ino(c, v->ns, rec.ino))
			r = -EACCES;
		if (r < 0) {
			char what[300];
			snprintf(what, sizeof(what), "RESOLVE: '%.*s'",
			         (int)(plen > 200 ? 200 : plen), path);
			read_error(c, id, r, what);
			return;
		}
		reply_node(v, c, id, &rec);
		return;
	}
	case MT_READDIR:
		do_readdir(v, c, id, body);
		return;
	case MT_POLICY_GET:
		get_record(v, c, id, body);
		return;
	case MT_SITES:
		conn_send_error(c, id, -EOPNOTSUPP, "SITES: not answered here");
		return;
	case MT_REPLICATION_STATUS:
		/* Mirrors answer it before it gets here. */
		conn_send_error(
		    c, id, -EOPNOTSUPP,
		    "REPLICATION_STATUS: the %s does not replicate; ask a site's mirror", v->role);
		return;
	}
}
