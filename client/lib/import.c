/* Import: objects that already sit under a bucket prefix become files whose
 * layout points at them (nothing is copied). The listing is compared with
 * what an earlier import left under the destination, so that a re-run
 * creates new files, updates those whose object changed and removes those
 * whose object vanished, all in batches of writes; a re-run over unchanged
 * objects writes nothing.
 *
 * Three stages run side by side. A listing thread fills a queue of listed
 * pages (while the caller's thread walks the destination). The caller's
 * thread compares each listed object with the destination and packs writes
 * into batches of BATCH_OPS. Committer threads send full batches to the
 * primary, each over its own connection, so the primary has the next batch
 * while it commits one. Batches can therefore commit in any order: each one
 * carries a mkdir -p of every directory it puts files in that did not exist
 * when the run started.
 *
 * The listing is one flat listing, even from s3://: listing common prefixes
 * (delimiter '/') side by side is slower against s3rver, whose delimited
 * listing walks everything, and s3rver leaves out the common prefix of a
 * "directory" holding only deeper keys, so keys would be lost. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "internal.h"
#include "node.h"
#include "proto.h"

#define COMMITTERS   4  /* batches at the primary at once */
#define PAGES_QUEUED 64 /* listed pages waiting for the caller's thread */
#define PAGE_KEYS    1000

struct known {
	char *rel; /* path below the destination, no leading '/' */
	enum mp_type type;
	bool ours; /* a file whose layout is one extent of this bucket */
	char *key, *etag;
	uint64_t size;
	bool seen;
};

/* A set of strings: the directories one batch makes. */
struct strset {
	char **slot;
	size_t cap, n; /* cap is 0 or a power of two */
};

static size_t strset_pos(const struct strset *s, const char *k, size_t len, bool *ret_found)
{
	size_t i = (size_t)hash_bytes(k, len, 0x696d706f7274) & (s->cap - 1);
	while (s->slot[i] != NULL) {
		if (strncmp(s->slot[i], k, len) == 0 && s->slot[i][len] == '\0') {
			*ret_found = true;
			return i;
		}
		i = (i + 1) & (s->cap - 1);
	}
	*ret_found = false;
	return i;
}

/* 1 if k (len bytes) was added, 0 if it was there, -ENOMEM. */
static int strset_add(struct strset *s, const char *k, size_t len)
{
	bool found;
	if (s->cap > 0) {
		strset_pos(s, k, len, &found);
		if (found)
			return 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		struct strset bigger = {.cap = s->cap ? s->cap * 2 : 64};
		bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
		if (bigger.slot == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->slot[i] != NULL)
				bigger.slot[strset_pos(&bigger, s->slot[i], strlen(s->slot[i]),
				                       &found)] = s->slot[i];
		bigger.n = s->n;
		free(s->slot);
		*s = bigger;
	}
	char *copy = strndup(k, len);
	if (copy == NULL)
		return -ENOMEM;
	s->slot[strset_pos(s, k, len, &found)] = copy;
	s->n++;
	return 1;
}

static void strset_clear(struct strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slot[i]);
	free(s->slot);
	memset(s, 0, sizeof(*s));
}

/* A bounded queue of pointers between threads. Producers close their end;
 * cancelling wakes and stops everyone. */
struct queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	void **slot;
	size_t cap, head, n;
	int producers;
	bool cancelled;
};

static int queue_init(struct queue *q, size_t cap, int producers)
{
	memset(q, 0, sizeof(*q));
	q->slot = calloc(cap, sizeof(*q->slot));
	if (q->slot == NULL)
		return -ENOMEM;
	q->cap = cap;
	q->producers = producers;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	return 0;
}

static void queue_destroy(struct queue *q)
{
	free(q->slot);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
}

static int queue_push(struct queue *q, void *item)
{
	pthread_mutex_lock(&q->lock);
	while (q->n == q->cap && !q->cancelled)
		pthread_cond_wait(&q->cond, &q->lock);
	int r = q->cancelled ? -ECANCELED : 0;
	if (r == 0) {
		q->slot[(q->head + q->n++) % q->cap] = item;
		pthread_cond_broadcast(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* 1 with *ret set, 0 when every producer is done and the queue is empty,
 * -ECANCELED. */
static int queue_pop(struct queue *q, void **ret)
{
	pthread_mutex_lock(&q->lock);
	while (q->n == 0 && q->producers > 0 && !q->cancelled)
		pthread_cond_wait(&q->cond, &q->lock);
	int r = q->cancelled ? -ECANCELED : q->n > 0 ? 1 : 0;
	if (r == 1) {
		*ret = q->slot[q->head];
		q->head = (q->head + 1) % q->cap;
		q->n--;
		pthread_cond_broadcast(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

static void queue_producer_done(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->producers--;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void queue_cancel(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->cancelled = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

/* Whatever is still queued once nobody pops any more. */
static void *queue_drain(struct queue *q)
{
	void *item = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->n > 0) {
		item = q->slot[q->head];
		q->head = (q->head + 1) % q->cap;
		q->n--;
	}
	pthread_mutex_unlock(&q->lock);
	return item;
}

/* Listed objects, copied out of the listing callback. */
struct item {
	char *key; /* key, then its ETag, in one allocation */
	const char *etag;
	uint64_t size;
};

struct page {
	struct item items[PAGE_KEYS];
	size_t n;
};

static void page_free(struct page *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++)
		free(p->items[i].key);
	free(p);
}

struct import;

/* The listing stage: one thread and what it fills. */
struct listing {
	struct import *im;
	struct objstore *st;
	struct queue pages;
	struct page *page; /* being filled */
	pthread_t thread;
	bool started;
	int rc; /* the failure that stopped it (read once it is joined) */
	mp_error err;
};

/* The commit stage. */
struct committing {
	struct import *im;
	struct queue batches;
	pthread_t threads[COMMITTERS];
	int nthreads;
	pthread_mutex_t lock;
	int rc; /* the first failure (read unlocked once they are joined) */
	mp_error err;
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
	bool dest_exists;
	/* The batch being packed, and the directories it makes. */
	struct batch *batch;
	struct strset batch_dirs;
	const char *last_dir; /* the last parent found existing or made in this batch */
	size_t last_dir_len;
	mp_import_stats st;
	struct progress *pr;
	struct committing *cm;
	/* the walk of the destination */
	const char *walk_rel;
};

static int known_cmp(const void *a, const void *b)
{
	return strcmp(((const struct known *)a)->rel, ((const struct known *)b)->rel);
}

/* The known path rel (len bytes), by binary search. */
static struct known *known_find(struct import *im, const char *rel, size_t len)
{
	size_t lo = 0, hi = im->nk;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *s = im->k[mid].rel;
		int c = strncmp(s, rel, len);
		if (c == 0)
			c = s[len] == '\0' ? 0 : 1;
		if (c == 0)
			return &im->k[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static char *rel_join(const char *a, const char *b)
{
	char *p;
	if (asprintf(&p, "%s%s%s", a, a[0] ? "/" : "", b) < 0)
		return NULL;
	return p;
}

static char *abs_path(const struct import *im, const char *rel, size_t len)
{
	char *p;
	const char *sep = strcmp(im->dest, "/") == 0 || len == 0 ? "" : "/";
	if (asprintf(&p, "%s%s%.*s", im->dest, sep, (int)len, rel) < 0)
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
	char *path = abs_path(im, rel, strlen(rel));
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

/* ---- Committing ---- */

static void committing_fail(struct committing *cm, int r, const mp_error *e)
{
	pthread_mutex_lock(&cm->lock);
	if (cm->rc == 0) {
		cm->rc = r;
		if (e != NULL)
			cm->err = *e;
	}
	pthread_mutex_unlock(&cm->lock);
	queue_cancel(&cm->batches);
}

static void batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	batch_destroy(b);
	free(b);
}

static void *committer_main(void *arg)
{
	struct committing *cm = arg;
	struct batch *b;
	void *item;
	while (queue_pop(&cm->batches, &item) == 1) {
		b = item;
		mp_call call = cm->im->call ? *cm->im->call : (mp_call){0};
		mp_error e = {0};
		int r = batch_flush(cm->im->c, b, &call, &e);
		batch_free(b);
		if (r < 0) {
			committing_fail(cm, r, &e);
			break;
		}
	}
	return NULL;
}

/* Hands the batch being packed to the committers and starts another. */
static int batch_send(struct import *im)
{
	struct committing *cm = im->cm;
	if (im->batch->nops == 0)
		return 0;
	struct batch *next = malloc(sizeof(*next));
	if (next == NULL)
		return mperr(im->err, -ENOMEM, "out of memory");
	batch_init(next);
	int r = queue_push(&cm->batches, im->batch);
	if (r < 0) {
		batch_free(next);
		return r; /* a committer failed: its error is the one to report */
	}
	im->batch = next;
	strset_clear(&im->batch_dirs);
	im->last_dir = NULL;
	return 0;
}

static int op_begin(struct import *im, uint32_t type, uint32_t nfields, const char *rel, size_t len)
{
	char *p = abs_path(im, rel, len);
	if (p == NULL)
		return mperr(im->err, -ENOMEM, "out of memory");
	msgpack_packer *pk = &im->batch->pk;
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, type);
	msgpack_pack_map(pk, nfields);
	msg_pack_key(pk, "path");
	msg_pack_cstr(pk, p);
	free(p);
	im->batch->nops++;
	return 0;
}

static int op_end(struct import *im)
{
	return im->batch->nops >= BATCH_OPS ? batch_send(im) : 0;
}

static int op_mkdir_p(struct import *im, const char *rel, size_t len)
{
	int r = op_begin(im, MT_MKDIR, 2, rel, len);
	if (r < 0)
		return r;
	msg_pack_key(&im->batch->pk, "parents");
	msgpack_pack_true(&im->batch->pk);
	return 0;
}

/* Makes sure the directory holding rel exists when this batch commits: it
 * existed before the run, or this batch makes it (mkdir -p). Called with a
 * batch that has room for two more ops. */
static int ensure_parent(struct import *im, const char *rel)
{
	const char *slash = strrchr(rel, '/');
	size_t len = slash ? (size_t)(slash - rel) : 0;
	/* Listings come in key order: the last directory is by far the likeliest. */
	if (im->last_dir != NULL && im->last_dir_len == len && memcmp(im->last_dir, rel, len) == 0)
		return 0;
	bool exists;
	if (len == 0) {
		exists = im->dest_exists;
	} else {
		struct known *k = known_find(im, rel, len);
		exists = k != NULL && k->type == MP_TYPE_DIR;
	}
	if (!exists) {
		int r = strset_add(&im->batch_dirs, rel, len);
		if (r < 0)
			return mperr(im->err, -ENOMEM, "out of memory");
		if (r == 1 && (r = op_mkdir_p(im, rel, len)) < 0)
			return r;
	}
	im->last_dir = rel;
	im->last_dir_len = len;
	return 0;
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

/* One listed object: nothing, or a create or update in the batch. *ret_bytes:
 * the bytes it brings in. */
static int compare_item(struct import *im, const struct item *e, uint64_t *ret_bytes)
{
	size_t plen = strlen(im->prefix);
	*ret_bytes = 0;
	im->st.listed++;
	im->st.bytes += e->size;
	const char *rel = strncmp(e->key, im->prefix, plen) == 0 ? e->key + plen : NULL;
	if (rel == NULL || !valid_rel(rel) || strlen(e->key) > EXTENT_KEY_MAX ||
	    strlen(e->etag) > EXTENT_ETAG_MAX) {
		/* Directory markers ("a/"), "a//b", "." or ".." components. */
		im->st.skipped++;
		return 0;
	}
	struct known *k = known_find(im, rel, strlen(rel));
	if (k != NULL) {
		k->seen = true;
		if (!k->ours) {
			im->st.skipped++; /* a directory, or a file of someone else's */
			return 0;
		}
		if (strcmp(k->key, e->key) == 0 && strcmp(k->etag, e->etag) == 0 &&
		    k->size == e->size) {
			im->st.unchanged++;
			return 0;
		}
		im->st.updated++;
	} else {
		im->st.created++;
	}
	int r = ensure_parent(im, rel);
	if (r == 0)
		r = op_begin(im, MT_CREATE, 4, rel, strlen(rel));
	if (r < 0)
		return r;
	msgpack_packer *pk = &im->batch->pk;
	msg_pack_key(pk, "size");
	msgpack_pack_uint64(pk, e->size);
	msg_pack_key(pk, "mode");
	msgpack_pack_uint32(pk, 0644);
	msg_pack_key(pk, "layout");
	mp_extent x = {
	    .bucket = (char *)im->alias, .key = e->key, .etag = (char *)e->etag, .length = e->size};
	/* One extent even for an empty object: it marks the file as imported. */
	nodes_pack_layout(pk, &x, 1);
	*ret_bytes = e->size;
	return op_end(im);
}

static int remove_vanished(struct import *im)
{
	size_t plen = strlen(im->prefix);
	for (size_t i = 0; i < im->nk; i++) {
		struct known *k = &im->k[i];
		if (!k->ours || k->seen || strncmp(k->key, im->prefix, plen) != 0)
			continue;
		int r = op_begin(im, MT_UNLINK, 1, k->rel, strlen(k->rel));
		if (r == 0)
			r = op_end(im);
		if (r < 0)
			return r;
		im->st.removed++;
	}
	return 0;
}

/* ---- Listing ---- */

static int page_flush(struct listing *ls)
{
	if (ls->page == NULL || ls->page->n == 0)
		return 0;
	int r = queue_push(&ls->pages, ls->page);
	if (r == 0)
		ls->page = NULL;
	return r;
}

static int listed(void *arg, const struct objstore_entry *e)
{
	struct listing *ls = arg;
	if (ls->page != NULL && ls->page->n == PAGE_KEYS) {
		int r = page_flush(ls);
		if (r < 0)
			return r;
	}
	if (ls->page == NULL && (ls->page = calloc(1, sizeof(*ls->page))) == NULL)
		return -ENOMEM;
	size_t klen = strlen(e->key), elen = strlen(e->etag);
	char *s = malloc(klen + elen + 2);
	if (s == NULL)
		return -ENOMEM;
	memcpy(s, e->key, klen + 1);
	memcpy(s + klen + 1, e->etag, elen + 1);
	ls->page->items[ls->page->n++] =
	    (struct item){.key = s, .etag = s + klen + 1, .size = e->size};
	return 0;
}

static void *listing_main(void *arg)
{
	struct listing *ls = arg;
	const char *prefix = ls->im->prefix;
	char *token = NULL;
	int r;
	do {
		struct objstore_error oe = {0};
		char *next = NULL;
		r = objstore_list(ls->st, prefix[0] ? prefix : NULL, token, PAGE_KEYS, listed, ls,
		                  &next, &oe);
		free(token);
		token = next;
		if (r == 0)
			r = page_flush(ls);
		if (r < 0 && r != -ECANCELED) {
			ls->rc = r;
			mperr(&ls->err, r, "import from %s: %s", ls->im->alias,
			      oe.message[0] ? oe.message : mperr_name(r));
			queue_cancel(&ls->pages);
		}
	} while (r == 0 && token != NULL);
	free(token);
	page_free(ls->page);
	ls->page = NULL;
	queue_producer_done(&ls->pages);
	return NULL;
}

static int listing_start(struct listing *ls)
{
	int r = queue_init(&ls->pages, PAGES_QUEUED, 1);
	if (r == 0)
		r = -pthread_create(&ls->thread, NULL, listing_main, ls);
	if (r < 0)
		return mperr(ls->im->err, r, "starting the listing: %s", mperr_name(r));
	ls->started = true;
	return 0;
}

/* Stops the listing (if it still runs) and frees what it left. */
static void listing_stop(struct listing *ls)
{
	if (ls->pages.slot == NULL)
		return;
	queue_cancel(&ls->pages);
	if (ls->started)
		pthread_join(ls->thread, NULL);
	void *p;
	while ((p = queue_drain(&ls->pages)) != NULL)
		page_free(p);
	queue_destroy(&ls->pages);
}

/* A stage that fails cancels the queue it shares with the caller's thread:
 * what it failed with, once every thread has been joined. */
static int first_failure(const struct listing *ls, const struct committing *cm, mp_error *err)
{
	const mp_error *e = ls->rc < 0 ? &ls->err : cm->rc < 0 ? &cm->err : NULL;
	if (e == NULL)
		return mperr(err, -ECANCELED, "import: cancelled");
	if (err != NULL)
		*err = *e;
	return ls->rc < 0 ? ls->rc : cm->rc;
}

/* The caller's part: every listed page compared and packed. */
static int consume(struct import *im, struct listing *ls)
{
	void *item;
	int r;
	while ((r = queue_pop(&ls->pages, &item)) == 1) {
		struct page *p = item;
		uint64_t bytes = 0, got;
		progress_totals(im->pr, 0, p->n);
		for (size_t i = 0; r >= 0 && i < p->n; i++) {
			got = 0;
			/* Room for a create and the mkdir before it. */
			if (im->batch->nops + 2 > BATCH_OPS)
				r = batch_send(im);
			if (r >= 0)
				r = compare_item(im, &p->items[i], &got);
			bytes += got;
		}
		progress_add(im->pr, bytes, p->n, NULL);
		/* The batch's last directory may point into this page. */
		im->last_dir = NULL;
		page_free(p);
		if (r < 0)
			return r;
	}
	return r;
}

static int start_committers(struct import *im, struct committing *cm)
{
	cm->im = im;
	int r = queue_init(&cm->batches, COMMITTERS, 1);
	if (r < 0)
		return mperr(im->err, r, "out of memory");
	pthread_mutex_init(&cm->lock, NULL);
	for (int i = 0; i < COMMITTERS; i++) {
		r = -pthread_create(&cm->threads[i], NULL, committer_main, cm);
		if (r < 0)
			/* Fewer committers do the same work. */
			return i > 0 ? 0
			             : mperr(im->err, r, "starting a commit thread: %s",
			                     mperr_name(r));
		cm->nthreads++;
	}
	return 0;
}

/* Waits for every batch handed over (all of them sent when ok, else the
 * unsent ones dropped). */
static void stop_committers(struct committing *cm, bool ok)
{
	if (cm->batches.slot == NULL)
		return;
	if (ok)
		queue_producer_done(&cm->batches);
	else
		queue_cancel(&cm->batches);
	for (int i = 0; i < cm->nthreads; i++)
		pthread_join(cm->threads[i], NULL);
	void *b;
	while ((b = queue_drain(&cm->batches)) != NULL)
		batch_free(b);
	queue_destroy(&cm->batches);
	pthread_mutex_destroy(&cm->lock);
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
	struct committing cm = {0};
	struct listing ls = {0};
	struct import im = {.c = c,
	                    .call = call,
	                    .err = err,
	                    .alias = alias,
	                    .prefix = prefix,
	                    .dest = dest,
	                    .pr = &pr,
	                    .cm = &cm};
	ls.im = &im;
	im.batch = malloc(sizeof(*im.batch));
	if (im.batch == NULL) {
		free(prefix);
		free(dest);
		progress_destroy(&pr);
		return mperr(err, -ENOMEM, "out of memory");
	}
	batch_init(im.batch);
	struct bucket *b = NULL;
	/* Open the bucket first: an unknown alias fails before anything changes.
	 * The listing goes on while the destination is walked. */
	r = buckets_acquire(c, alias, false, &b, &ls.st, err);
	if (r == 0)
		r = listing_start(&ls);
	if (r == 0) {
		r = walk_dest(&im, "");
		im.dest_exists = r == 0;
		if (r == -ENOENT && im.nk == 0)
			r = 0; /* a new destination */
	}
	if (r == 0 && im.nk > 1)
		qsort(im.k, im.nk, sizeof(*im.k), known_cmp);
	/* The destination is made by the first batch, so that an import whose
	 * listing fails first leaves nothing behind. */
	if (r == 0 && !im.dest_exists && (r = op_mkdir_p(&im, "", 0)) == 0)
		r = strset_add(&im.batch_dirs, "", 0) < 0 ? mperr(err, -ENOMEM, "out of memory")
		                                          : 0;
	if (r == 0)
		r = start_committers(&im, &cm);
	if (r == 0)
		r = consume(&im, &ls);
	listing_stop(&ls);
	if (r == 0)
		r = remove_vanished(&im);
	if (r == 0)
		r = batch_send(&im);
	stop_committers(&cm, r == 0);
	if (r == -ECANCELED || (r == 0 && cm.rc < 0))
		r = first_failure(&ls, &cm, err);
	progress_finish(&pr);
	progress_destroy(&pr);
	buckets_release(b, ls.st);
	if (r == 0 && ret != NULL)
		*ret = im.st;
	if (r == 0 && call != NULL)
		call->version = mp_client_session_version(c);
	batch_free(im.batch);
	strset_clear(&im.batch_dirs);
	for (size_t i = 0; i < im.nk; i++) {
		free(im.k[i].rel);
		free(im.k[i].key);
		free(im.k[i].etag);
	}
	free(im.k);
	free(prefix);
	free(dest);
	return r;
}
