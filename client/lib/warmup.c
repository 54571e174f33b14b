/* Warmup from a client: runs are started and reported by the site's mirror
 * (WARMUP_START, WARMUP_STATUS); how much of a tree is cached is asked of
 * the cache nodes themselves (CACHE_HAS to each block's owner, the first
 * live node in rendezvous order, where a reader goes first), so that a
 * readiness gate says what a reader would find, not what a run believes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hrw.h"
#include "internal.h"
#include "proto.h"

static void copy_str(const msgpack_object *map, const char *key, char *out, size_t len)
{
	const char *p;
	size_t n;
	char why[100];
	if (msg_get_bytes(map, key, false, 0, 4096, &p, &n, why, sizeof(why)) == 0)
		snprintf(out, len, "%.*s", (int)n, p);
}

static uint64_t get_u64(const msgpack_object *map, const char *key)
{
	uint64_t v = 0;
	char why[100];
	if (msg_get_u64(map, key, false, UINT64_MAX, &v, why, sizeof(why)) != 0)
		return 0;
	return v;
}

static int64_t get_i64(const msgpack_object *map, const char *key)
{
	int64_t v = 0;
	char why[100];
	if (msg_get_i64(map, key, false, &v, why, sizeof(why)) != 0)
		return 0;
	return v;
}

static int parse_run(const msgpack_object *o, mp_warmup_run *x, mp_error *err)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return mperr(err, -EPROTO, "warmup status: a run is not a map");
	memset(x, 0, sizeof(*x));
	x->run = get_i64(o, "run");
	copy_str(o, "pipeline", x->pipeline, sizeof(x->pipeline));
	copy_str(o, "trigger", x->trigger, sizeof(x->trigger));
	copy_str(o, "kind", x->kind, sizeof(x->kind));
	copy_str(o, "state", x->state, sizeof(x->state));
	copy_str(o, "error", x->error, sizeof(x->error));
	x->version = get_u64(o, "version");
	x->files = get_u64(o, "files");
	x->files_done = get_u64(o, "files_done");
	x->bytes = get_u64(o, "bytes");
	x->bytes_done = get_u64(o, "bytes_done");
	x->blocks = get_u64(o, "blocks");
	x->blocks_done = get_u64(o, "blocks_done");
	x->failures = get_u64(o, "failures");
	x->evicted_blocks = get_u64(o, "evicted_blocks");
	x->created_ns = get_i64(o, "created_ns");
	x->started_ns = get_i64(o, "started_ns");
	x->finished_ns = get_i64(o, "finished_ns");
	x->now_ns = get_i64(o, "now_ns");
	return 0;
}

/* A request at the first mirror that answers. */
static int ask_mirror(mp_client *c, const struct request_body *b, struct reply *rep, mp_error *err)
{
	mp_error last = {0};
	int r = mperr(&last, -ENOENT, "no mirror configured: warmup runs at the site's mirror");
	size_t total = __atomic_load_n(&c->servers.n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < total; i++) {
		struct server_entry *s = c->servers.entries[i];
		if (s->is_primary || !servers_routable(s))
			continue;
		if (route_once(c, s, b, NULL, c->cfg.timeout_ms, rep, &last) != ATTEMPT_ANSWERED) {
			r = last.code ? last.code : -EIO;
			continue;
		}
		if (rep->is_error) {
			r = client_answer_error(rep, s->address, &last);
			reply_release(rep);
			if (r == -EPROTO || r == -ENOTSUP)
				continue; /* a mirror without warmup: the next one */
			break;
		}
		return 0;
	}
	if (err != NULL)
		*err = last;
	return r;
}

MP_EXPORT int mp_warmup_status(mp_client *c, int64_t run, const char *pipeline, mp_warmup_run *out,
                               size_t cap, size_t *ret_n, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_WARMUP_STATUS);
	if (run > 0)
		request_u64(&b, "run", (uint64_t)run);
	if (pipeline != NULL)
		request_str(&b, "pipeline", pipeline);
	struct reply rep;
	int r = ask_mirror(c, &b, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	const msgpack_object_array *runs;
	char why[200];
	if (msg_get_array(rep.frame.body, "runs", true, 100000, &runs, why, sizeof(why)) != 0) {
		reply_release(&rep);
		return mperr(err, -EPROTO, "warmup status: %s", why);
	}
	size_t n = 0;
	for (uint32_t i = 0; i < runs->size && r == 0; i++)
		if (n < cap)
			r = parse_run(&runs->ptr[i], &out[n++], err);
	if (r == 0)
		*ret_n = runs->size;
	reply_release(&rep);
	return r;
}

MP_EXPORT int mp_warmup_start(mp_client *c, const char *const *paths, size_t n_paths, bool evict,
                              const char *pipeline, mp_warmup_run *ret, mp_error *err)
{
	if ((pipeline == NULL) == (n_paths == 0))
		return mperr(err, -EINVAL, "give either paths or a pipeline's name");
	if (n_paths > 64)
		return mperr(err, -E2BIG, "%zu paths: at most 64 at once", n_paths);
	for (size_t i = 0; i < n_paths; i++)
		if (paths[i] == NULL || paths[i][0] != '/' || strlen(paths[i]) > 4096)
			return mperr(err, -EINVAL, "%s: not an absolute path",
			             paths[i] ? paths[i] : "(null)");
	struct request_body b;
	request_init(&b, MT_WARMUP_START);
	if (pipeline != NULL) {
		request_str(&b, "pipeline", pipeline);
	} else {
		request_key(&b, "paths");
		msgpack_pack_array(&b.pk, (uint32_t)n_paths);
		for (size_t i = 0; i < n_paths; i++)
			msg_pack_cstr(&b.pk, paths[i]);
		if (evict) {
			request_key(&b, "evict");
			msgpack_pack_true(&b.pk);
		}
	}
	struct reply rep;
	int r = ask_mirror(c, &b, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	int64_t id = get_i64(rep.frame.body, "run");
	reply_release(&rep);
	if (id <= 0)
		return mperr(err, -EPROTO, "warmup start: the mirror named no run");
	size_t n = 0;
	r = mp_warmup_status(c, id, NULL, ret, 1, &n, err);
	if (r == 0 && n == 0)
		return mperr(err, -EPROTO, "warmup start: run %lld is not listed", (long long)id);
	return r;
}

/* ---- check ---- */

struct cblock {
	const mp_extent *ext;
	uint64_t index, bytes;
	uint32_t file;
	bool cached;
};

struct check {
	mp_client *c;
	mp_warmup_cached *res;
	mp_node *nodes; /* files, kept for their extents */
	char **names;
	size_t nnodes, capnodes;
	char **dirs;
	size_t ndirs, capdirs;
	const char *cur; /* the directory being listed */
	int error;
	mp_error err;
};

static int keep_file(struct check *k, const mp_node *n, const char *path)
{
	if (k->nnodes == k->capnodes) {
		size_t cap = k->capnodes ? k->capnodes * 2 : 64;
		mp_node *nodes = realloc(k->nodes, cap * sizeof(*nodes));
		if (nodes == NULL)
			return -ENOMEM;
		k->nodes = nodes;
		char **names = realloc(k->names, cap * sizeof(*names));
		if (names == NULL)
			return -ENOMEM;
		k->names = names;
		k->capnodes = cap;
	}
	mp_node *dst = &k->nodes[k->nnodes];
	memset(dst, 0, sizeof(*dst));
	dst->n_extents = n->n_extents;
	dst->extents = calloc(n->n_extents + 1, sizeof(*dst->extents));
	k->names[k->nnodes] = strdup(path);
	if (dst->extents == NULL || k->names[k->nnodes] == NULL) {
		free(dst->extents);
		free(k->names[k->nnodes]);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n->n_extents; i++) {
		const mp_extent *e = &n->extents[i];
		mp_extent *x = &dst->extents[i];
		x->bucket = strdup(e->bucket);
		x->key = strdup(e->key);
		x->etag = strdup(e->etag ? e->etag : "");
		x->grant = e->grant ? strdup(e->grant) : NULL;
		x->offset = e->offset;
		x->length = e->length;
	}
	k->nnodes++;
	return 0;
}

static char *join(const char *dir, const char *name)
{
	size_t dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	char *p = malloc(dl + strlen(name) + 2);
	if (p != NULL)
		sprintf(p, "%.*s%s%s", (int)dl, dir, dl == 1 && dir[0] == '/' ? "" : "/", name);
	return p;
}

static int list_cb(void *arg, const mp_node *e)
{
	struct check *k = arg;
	char *p = join(k->cur, e->name);
	if (p == NULL)
		return -ENOMEM;
	int r = 0;
	if (e->type == MP_TYPE_FILE) {
		r = keep_file(k, e, p);
		free(p);
	} else if (e->type == MP_TYPE_DIR) {
		if (k->ndirs == k->capdirs) {
			size_t cap = k->capdirs ? k->capdirs * 2 : 16;
			char **d = realloc(k->dirs, cap * sizeof(*d));
			if (d == NULL) {
				free(p);
				return -ENOMEM;
			}
			k->dirs = d;
			k->capdirs = cap;
		}
		k->dirs[k->ndirs++] = p;
	} else {
		free(p);
	}
	return r;
}

static void check_free(struct check *k)
{
	for (size_t i = 0; i < k->nnodes; i++) {
		for (size_t e = 0; e < k->nodes[i].n_extents; e++) {
			free(k->nodes[i].extents[e].bucket);
			free(k->nodes[i].extents[e].key);
			free(k->nodes[i].extents[e].etag);
			free(k->nodes[i].extents[e].grant);
		}
		free(k->nodes[i].extents);
		free(k->names[i]);
	}
	free(k->nodes);
	free(k->names);
	for (size_t i = 0; i < k->ndirs; i++)
		free(k->dirs[i]);
	free(k->dirs);
}

static void block_request_of(const struct cblock *b, uint64_t bs, struct block_request *req)
{
	const mp_extent *e = b->ext;
	memset(req, 0, sizeof(*req));
	snprintf(req->bucket, sizeof(req->bucket), "%s", e->bucket);
	snprintf(req->key, sizeof(req->key), "%s", e->key);
	snprintf(req->etag, sizeof(req->etag), "%s", e->etag);
	req->size = e->offset + e->length;
	req->offset = b->index * bs;
	uint64_t end = req->offset + bs;
	req->length = (end < req->size ? end : req->size) - req->offset;
	if (e->grant != NULL) {
		req->grant = e->grant;
		req->grant_len = strlen(e->grant);
	}
}

/* Asks node s which of the listed blocks it holds. */
static int ask_has(mp_client *c, struct server_entry *s, struct cblock **list, size_t n,
                   uint64_t bs, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_CACHE_HAS);
	request_key(&b, "blocks");
	msgpack_pack_array(&b.pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		struct block_request req;
		block_request_of(list[i], bs, &req);
		msgpack_pack_map(&b.pk, 6 + (req.grant != NULL));
		cacheproto_pack_block_fields(&b.pk, &req);
	}
	struct reply rep;
	enum attempt a = route_once(c, s, &b, NULL, c->cfg.timeout_ms, &rep, err);
	request_destroy(&b);
	if (a != ATTEMPT_ANSWERED)
		return err->code ? err->code : -EIO;
	int r = 0;
	if (rep.is_error) {
		r = client_answer_error(&rep, s->address, err);
	} else {
		int results[CACHE_LIST_MAX];
		char why[200];
		if (cacheproto_parse_results(rep.frame.body, n, results, why, sizeof(why)) < 0)
			r = mperr(err, -EPROTO, "%s: CACHE_HAS: %s", s->address, why);
		for (size_t i = 0; r == 0 && i < n; i++)
			list[i]->cached = results[i] == 0;
	}
	reply_release(&rep);
	return r;
}

/* A symlink's target as an absolute, normalized path (malloc'd), the link
 * being at link: relative targets are relative to the link's directory. */
static char *link_target(const char *link, const char *target)
{
	size_t cap = strlen(link) + strlen(target) + 3;
	char *raw = malloc(cap), *out = malloc(cap);
	if (raw == NULL || out == NULL) {
		free(raw);
		free(out);
		return NULL;
	}
	if (target[0] == '/')
		snprintf(raw, cap, "%s", target);
	else
		snprintf(raw, cap, "%s/../%s", link, target);
	size_t len = 0;
	out[0] = '\0';
	for (char *save = NULL, *c = strtok_r(raw, "/", &save); c != NULL;
	     c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			out[len] = '\0';
			continue;
		}
		out[len++] = '/';
		strcpy(out + len, c);
		len += strlen(c);
	}
	if (len == 0)
		strcpy(out, "/");
	free(raw);
	return out;
}

MP_EXPORT int mp_warmup_check(mp_client *c, const char *path, mp_warmup_cached *ret, mp_error *err)
{
	if (path == NULL || path[0] != '/')
		return mperr(err, -EINVAL, "%s: not an absolute path", path ? path : "(null)");
	mp_warmup_cached res;
	memset(&res, 0, sizeof(res));
	struct check k;
	memset(&k, 0, sizeof(k));
	k.c = c;
	k.res = &res;
	mp_node top;
	mp_call call = {0};
	int r = mp_stat(c, path, &call, &top, err);
	/* PATH may be a link to a release ("current"): what it points at. */
	char *at = NULL;
	for (int hops = 0; r == 0 && top.type == MP_TYPE_SYMLINK; hops++) {
		char *next = link_target(at ? at : path, top.target);
		mp_node_clear(&top);
		free(at);
		at = next;
		if (at == NULL || hops >= 8) {
			r = mperr(err, at ? -ELOOP : -ENOMEM, "%s: %s", path,
			          at ? "too many symlinks" : "out of memory");
			break;
		}
		r = mp_stat(c, at, &call, &top, err);
	}
	if (r < 0) {
		free(at);
		return r;
	}
	const char *real = at ? at : path;
	res.version = call.version;
	if (top.type == MP_TYPE_FILE) {
		r = keep_file(&k, &top, path);
	} else if (top.type == MP_TYPE_DIR) {
		char *d = strdup(real);
		r = d ? 0 : -ENOMEM;
		if (d != NULL) {
			k.dirs = malloc(16 * sizeof(*k.dirs));
			if (k.dirs == NULL) {
				free(d);
				r = -ENOMEM;
			} else {
				k.dirs[0] = d;
				k.ndirs = 1;
				k.capdirs = 16;
			}
		}
		/* Breadth first: every directory listed once. */
		for (size_t i = 0; r == 0 && i < k.ndirs; i++) {
			k.cur = k.dirs[i];
			mp_call lc = {0};
			r = mp_list(c, k.dirs[i], &lc, list_cb, &k, err);
		}
	}
	mp_node_clear(&top);
	free(at);
	if (r < 0) {
		check_free(&k);
		return r == -ENOMEM ? mperr(err, r, "out of memory") : r;
	}
	uint64_t bs = cachegroup_block_size(c, &c->group);
	size_t nblocks = 0;
	for (size_t i = 0; i < k.nnodes; i++)
		for (size_t e = 0; e < k.nodes[i].n_extents; e++) {
			const mp_extent *x = &k.nodes[i].extents[e];
			if (bs > 0 && x->length > 0 && x->etag[0] != '\0')
				nblocks += (x->offset + x->length - 1) / bs - x->offset / bs + 1;
		}
	res.files = k.nnodes;
	if (bs == 0 && k.nnodes > 0) {
		check_free(&k);
		return mperr(err, -ENODATA,
		             "no cache group at this site (its mirror lists no node)");
	}
	struct cblock *blocks = calloc(nblocks + 1, sizeof(*blocks));
	struct cblock **batch = calloc(CACHE_LIST_MAX, sizeof(*batch));
	size_t *owner = calloc(nblocks + 1, sizeof(*owner));
	if (blocks == NULL || batch == NULL || owner == NULL) {
		free(blocks);
		free(batch);
		free(owner);
		check_free(&k);
		return mperr(err, -ENOMEM, "out of memory");
	}
	size_t n = 0;
	for (size_t i = 0; i < k.nnodes; i++)
		for (size_t e = 0; e < k.nodes[i].n_extents; e++) {
			const mp_extent *x = &k.nodes[i].extents[e];
			if (x->length == 0 || x->etag[0] == '\0')
				continue; /* not cacheable: readers go to the bucket */
			for (uint64_t b = x->offset / bs; b <= (x->offset + x->length - 1) / bs;
			     b++) {
				struct cblock *cb = &blocks[n++];
				cb->ext = x;
				cb->index = b;
				cb->file = (uint32_t)i;
				uint64_t s = b * bs, end = s + bs;
				if (s < x->offset)
					s = x->offset;
				if (end > x->offset + x->length)
					end = x->offset + x->length;
				cb->bytes = end - s;
			}
		}
	/* The group as readers see it. */
	struct server_entry *nodes[CACHE_MEMBERS_MAX];
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	bool dead[CACHE_MEMBERS_MAX] = {0};
	pthread_mutex_lock(&c->group.lock);
	size_t nn = c->group.n;
	memcpy(nodes, c->group.nodes, nn * sizeof(nodes[0]));
	memcpy(ids, c->group.ids, nn * sizeof(ids[0]));
	memcpy(weights, c->group.weights, nn * sizeof(weights[0]));
	pthread_mutex_unlock(&c->group.lock);
	bool *asked = calloc(nblocks + 1, sizeof(*asked));
	r = asked ? 0 : -ENOMEM;
	for (bool again = true; r == 0 && again;) {
		again = false;
		for (size_t i = 0; i < n; i++) {
			if (asked[i])
				continue;
			const mp_extent *x = blocks[i].ext;
			struct block_id id =
			    hrw_block_id(x->bucket, x->key, x->etag, blocks[i].index);
			size_t order[CACHE_MEMBERS_MAX];
			hrw_order(id.lo, ids, weights, nn, order);
			owner[i] = SIZE_MAX;
			for (size_t j = 0; j < nn && owner[i] == SIZE_MAX; j++)
				if (weights[order[j]] > 0 && !dead[order[j]] &&
				    !servers_is_down(nodes[order[j]]))
					owner[i] = order[j];
			if (owner[i] == SIZE_MAX)
				asked[i] = true; /* no node: not cached */
		}
		for (size_t node = 0; node < nn && r == 0; node++) {
			size_t nb = 0;
			for (size_t i = 0; i <= n; i++) {
				if (i < n && !asked[i] && owner[i] == node)
					batch[nb++] = &blocks[i];
				if ((nb == CACHE_LIST_MAX || (i == n && nb > 0)) && !dead[node]) {
					mp_error e = {0};
					int a = ask_has(c, nodes[node], batch, nb, bs, &e);
					if (a == 0) {
						for (size_t q = 0; q < nb; q++)
							asked[batch[q] - blocks] = true;
					} else if (a == -EPROTO || a == -EACCES || a == -EINVAL) {
						r = a;
						k.err = e;
					} else {
						/* Gone: its blocks go to the next owners. */
						dead[node] = true;
						again = true;
					}
					nb = 0;
				}
			}
		}
	}
	if (r == 0) {
		bool *missing = calloc(k.nnodes + 1, sizeof(*missing));
		if (missing == NULL)
			r = -ENOMEM;
		for (size_t i = 0; r == 0 && i < n; i++) {
			res.blocks++;
			res.bytes += blocks[i].bytes;
			if (blocks[i].cached) {
				res.blocks_cached++;
				res.bytes_cached += blocks[i].bytes;
			} else {
				if (!missing[blocks[i].file] && res.first_missing[0] == '\0')
					snprintf(res.first_missing, sizeof(res.first_missing), "%s",
					         k.names[blocks[i].file]);
				missing[blocks[i].file] = true;
			}
		}
		for (size_t i = 0; r == 0 && i < k.nnodes; i++)
			res.files_cached += !missing[i];
		free(missing);
	}
	free(asked);
	free(blocks);
	free(batch);
	free(owner);
	if (r < 0 && err != NULL)
		*err = k.err.code ? k.err : (mp_error){0};
	if (r == -ENOMEM)
		mperr(err, r, "out of memory");
	check_free(&k);
	if (r == 0)
		*ret = res;
	return r;
}
