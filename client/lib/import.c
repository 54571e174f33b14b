/* Import: objects that already sit under a bucket prefix become files whose
 * layout points at them (nothing is copied). The listing is compared with
 * what an earlier import left under the destination, so that a re-run
 * creates new files, updates those whose object changed and removes those
 * whose object vanished, all in batches of writes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "node.h"
#include "proto.h"

struct known {
	char *rel; /* path below the destination, no leading '/' */
	enum mp_type type;
	bool ours; /* a file whose layout is one extent of this bucket */
	char *key, *etag;
	uint64_t size;
	bool seen;
};

struct import {
	struct mp_client *c;
	mp_call *call;
	mp_error *err;
	const char *alias;
	const char *prefix; /* "" or ends with '/' */
	const char *dest;   /* no trailing '/' unless it is "/" */
	struct known *k;
	size_t nk, capk;
	bool sorted;
	/* Directories created by this run, sorted on demand. */
	char **dirs;
	size_t ndirs, capdirs;
	struct batch batch;
	mp_import_stats st;
	struct progress *pr;
	/* the walk of the destination */
	const char *walk_rel;
};

static int known_cmp(const void *a, const void *b)
{
	return strcmp(((const struct known *)a)->rel, ((const struct known *)b)->rel);
}

static struct known *known_find(struct import *im, const char *rel)
{
	if (im->nk == 0)
		return NULL;
	struct known key = {.rel = (char *)rel};
	return bsearch(&key, im->k, im->nk, sizeof(*im->k), known_cmp);
}

static char *rel_join(const char *a, const char *b)
{
	char *p;
	if (asprintf(&p, "%s%s%s", a, a[0] ? "/" : "", b) < 0)
		return NULL;
	return p;
}

static char *abs_path(const struct import *im, const char *rel)
{
	char *p;
	if (asprintf(&p, "%s%s%s", im->dest, strcmp(im->dest, "/") == 0 ? "" : "/", rel) < 0)
		return NULL;
	return p;
}

static int walk_entry(void *arg, const mp_node *n)
{
	struct import *im = arg;
	if (im->nk == im->capk) {
		size_t cap = im->capk ? im->capk * 2 : 256;
		struct known *k = realloc(im->k, cap * sizeof(*k));
		if (k == NULL)
			return -ENOMEM;
		im->k = k;
		im->capk = cap;
	}
	struct known *k = &im->k[im->nk];
	memset(k, 0, sizeof(*k));
	k->rel = rel_join(im->walk_rel, n->name);
	if (k->rel == NULL)
		return -ENOMEM;
	k->type = n->type;
	k->size = n->size;
	if (n->type == MP_TYPE_FILE && n->n_extents == 1 &&
	    strcmp(n->extents[0].bucket, im->alias) == 0 && n->extents[0].offset == 0) {
		k->ours = true;
		k->key = strdup(n->extents[0].key);
		k->etag = strdup(n->extents[0].etag);
		if (k->key == NULL || k->etag == NULL) {
			free(k->key);
			free(k->etag);
			free(k->rel);
			return -ENOMEM;
		}
	}
	im->nk++;
	return 0;
}

/* Everything under the destination, as it is now. */
static int walk_dest(struct import *im, const char *rel)
{
	size_t start = im->nk;
	char *path = rel[0] ? abs_path(im, rel) : strdup(im->dest);
	if (path == NULL)
		return mperr(im->err, -ENOMEM, "out of memory");
	im->walk_rel = rel;
	int r = mp_list(im->c, path, im->call, walk_entry, im, im->err);
	free(path);
	size_t end = im->nk;
	for (size_t i = start; r == 0 && i < end; i++)
		if (im->k[i].type == MP_TYPE_DIR)
			r = walk_dest(im, im->k[i].rel);
	return r;
}

static int flush(struct import *im)
{
	return batch_flush(im->c, &im->batch, im->call, im->err);
}

static int op_begin(struct import *im, uint32_t type, uint32_t nfields, const char *rel)
{
	char *p = abs_path(im, rel);
	if (p == NULL)
		return mperr(im->err, -ENOMEM, "out of memory");
	msgpack_pack_array(&im->batch.pk, 2);
	msgpack_pack_uint32(&im->batch.pk, type);
	msgpack_pack_map(&im->batch.pk, nfields);
	msg_pack_key(&im->batch.pk, "path");
	msg_pack_cstr(&im->batch.pk, p);
	free(p);
	im->batch.nops++;
	return 0;
}

static int op_end(struct import *im)
{
	return im->batch.nops >= BATCH_OPS ? flush(im) : 0;
}

static bool dir_known(struct import *im, const char *rel, size_t len)
{
	char *d = strndup(rel, len);
	if (d == NULL)
		return false;
	struct known *k = known_find(im, d);
	bool found = k != NULL && k->type == MP_TYPE_DIR;
	for (size_t i = 0; !found && i < im->ndirs; i++)
		found = strcmp(im->dirs[i], d) == 0;
	free(d);
	return found;
}

/* Makes sure the directory holding rel exists (mkdir -p, once per run). */
static int ensure_parent(struct import *im, const char *rel)
{
	const char *slash = strrchr(rel, '/');
	if (slash == NULL)
		return 0;
	size_t len = (size_t)(slash - rel);
	/* The last directory made is by far the likeliest match: listings
	 * come in key order. */
	if (im->ndirs > 0 && strlen(im->dirs[im->ndirs - 1]) == len &&
	    memcmp(im->dirs[im->ndirs - 1], rel, len) == 0)
		return 0;
	if (dir_known(im, rel, len))
		return 0;
	if (im->ndirs == im->capdirs) {
		size_t cap = im->capdirs ? im->capdirs * 2 : 64;
		char **d = realloc(im->dirs, cap * sizeof(*d));
		if (d == NULL)
			return mperr(im->err, -ENOMEM, "out of memory");
		im->dirs = d;
		im->capdirs = cap;
	}
	if ((im->dirs[im->ndirs] = strndup(rel, len)) == NULL)
		return mperr(im->err, -ENOMEM, "out of memory");
	im->ndirs++;
	int r = op_begin(im, MT_MKDIR, 2, im->dirs[im->ndirs - 1]);
	if (r < 0)
		return r;
	msg_pack_key(&im->batch.pk, "parents");
	msgpack_pack_true(&im->batch.pk);
	return op_end(im);
}

/* Whether rel is a path the namespace can hold. */
static bool valid_rel(const char *rel)
{
	if (rel[0] == '\0' || strlen(rel) > NODE_PATH_MAX - 256)
		return false;
	const char *p = rel;
	for (;;) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (node_check_name(p, n) < 0)
			return false;
		if (e == NULL)
			return true;
		p = e + 1;
	}
}

static int listed(void *arg, const struct objstore_entry *e)
{
	struct import *im = arg;
	size_t plen = strlen(im->prefix);
	im->st.listed++;
	im->st.bytes += e->size;
	progress_totals(im->pr, 0, 1);
	const char *rel = strncmp(e->key, im->prefix, plen) == 0 ? e->key + plen : NULL;
	if (rel == NULL || !valid_rel(rel) || strlen(e->key) > EXTENT_KEY_MAX ||
	    strlen(e->etag) > EXTENT_ETAG_MAX) {
		/* Directory markers ("a/"), "a//b", "." or ".." components. */
		im->st.skipped++;
		progress_add(im->pr, 0, 1, NULL);
		return 0;
	}
	struct known *k = known_find(im, rel);
	if (k != NULL) {
		k->seen = true;
		if (!k->ours) {
			im->st.skipped++; /* a directory, or a file of someone else's */
			progress_add(im->pr, 0, 1, NULL);
			return 0;
		}
		if (strcmp(k->key, e->key) == 0 && strcmp(k->etag, e->etag) == 0 &&
		    k->size == e->size) {
			im->st.unchanged++;
			progress_add(im->pr, 0, 1, NULL);
			return 0;
		}
		im->st.updated++;
	} else {
		im->st.created++;
	}
	int r = ensure_parent(im, rel);
	if (r == 0)
		r = op_begin(im, MT_CREATE, 4, rel);
	if (r < 0)
		return r;
	msg_pack_key(&im->batch.pk, "size");
	msgpack_pack_uint64(&im->batch.pk, e->size);
	msg_pack_key(&im->batch.pk, "mode");
	msgpack_pack_uint32(&im->batch.pk, 0644);
	msg_pack_key(&im->batch.pk, "layout");
	mp_extent x = {.bucket = (char *)im->alias,
	               .key = (char *)e->key,
	               .etag = (char *)e->etag,
	               .length = e->size};
	/* One extent even for an empty object: it marks the file as imported. */
	nodes_pack_layout(&im->batch.pk, &x, 1);
	progress_add(im->pr, e->size, 1, NULL);
	return op_end(im);
}

static int remove_vanished(struct import *im)
{
	size_t plen = strlen(im->prefix);
	for (size_t i = 0; i < im->nk; i++) {
		struct known *k = &im->k[i];
		if (!k->ours || k->seen || strncmp(k->key, im->prefix, plen) != 0)
			continue;
		int r = op_begin(im, MT_UNLINK, 1, k->rel);
		if (r == 0)
			r = op_end(im);
		if (r < 0)
			return r;
		im->st.removed++;
	}
	return 0;
}

MP_EXPORT int mp_import(mp_client *c, const char *source, const char *dest_dir,
                        const mp_transfer_opts *opts, mp_import_stats *ret, mp_call *call,
                        mp_error *err)
{
	if (source == NULL || source[0] == '\0')
		return mperr(err, -EINVAL, "import: no source (ALIAS or ALIAS/PREFIX)");
	char alias[ALIAS_MAX + 1];
	const char *slash = strchr(source, '/');
	size_t alen = slash ? (size_t)(slash - source) : strlen(source);
	if (site_config_check_alias(source, alen) < 0)
		return mperr(err, -EINVAL,
		             "import source '%s': want ALIAS[/PREFIX] with a bucket alias", source);
	memcpy(alias, source, alen);
	alias[alen] = '\0';
	char *prefix;
	const char *p = slash ? slash + 1 : "";
	size_t plen = strlen(p);
	if (asprintf(&prefix, "%s%s", p, plen > 0 && p[plen - 1] != '/' ? "/" : "") < 0)
		return mperr(err, -ENOMEM, "out of memory");
	int r = nodes_check_path(dest_dir, err);
	char *dest = NULL;
	if (r == 0 && (dest = strdup(dest_dir)) == NULL)
		r = mperr(err, -ENOMEM, "out of memory");
	if (r < 0) {
		free(prefix);
		return r;
	}
	for (size_t l = strlen(dest); l > 1 && dest[l - 1] == '/'; l--)
		dest[l - 1] = '\0';

	struct progress pr;
	progress_init(&pr, opts);
	struct import im = {.c = c,
	                    .call = call,
	                    .err = err,
	                    .alias = alias,
	                    .prefix = prefix,
	                    .dest = dest,
	                    .pr = &pr};
	batch_init(&im.batch);
	struct bucket *b = NULL;
	struct objstore *st = NULL;
	/* Open the bucket first: an unknown alias fails before anything changes. */
	r = buckets_acquire(c, alias, false, &b, &st, err);
	if (r == 0) {
		r = walk_dest(&im, "");
		if (r == -ENOENT && im.nk == 0)
			r = 0; /* a new destination */
	}
	/* The destination is made by the first batch, so that an import whose
	 * listing fails leaves nothing behind. */
	if (r == 0 && (r = op_begin(&im, MT_MKDIR, 2, "")) == 0) {
		msg_pack_key(&im.batch.pk, "parents");
		msgpack_pack_true(&im.batch.pk);
	}
	if (r == 0 && im.nk > 1)
		qsort(im.k, im.nk, sizeof(*im.k), known_cmp);
	char *token = NULL;
	do {
		if (r < 0)
			break;
		struct objstore_error oe = {0};
		char *next = NULL;
		r = objstore_list(st, prefix[0] ? prefix : NULL, token, 1000, listed, &im, &next,
		                  &oe);
		free(token);
		token = next;
		if (r < 0 && (err == NULL || err->code != r || oe.message[0] != '\0'))
			r = mperr(err, r, "import from %s: %s", alias,
			          oe.message[0] ? oe.message : mperr_name(r));
	} while (r == 0 && token != NULL);
	free(token);
	if (r == 0)
		r = remove_vanished(&im);
	if (r == 0)
		r = flush(&im);
	progress_finish(&pr);
	progress_destroy(&pr);
	buckets_release(b, st);
	if (r == 0 && ret != NULL)
		*ret = im.st;
	if (r == 0 && call != NULL)
		call->version = mp_client_session_version(c);
	batch_destroy(&im.batch);
	for (size_t i = 0; i < im.nk; i++) {
		free(im.k[i].rel);
		free(im.k[i].key);
		free(im.k[i].etag);
	}
	free(im.k);
	for (size_t i = 0; i < im.ndirs; i++)
		free(im.dirs[i]);
	free(im.dirs);
	free(prefix);
	free(dest);
	return r;
}
