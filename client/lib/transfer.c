/* Moving file bytes: uploads as new origin objects, downloads of a layout's
 * extents by ranged GETs in parallel (site replica first, then the bucket
 * itself), progress accounting, and a small pool of workers for running
 * many such jobs at once. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "internal.h"
#include "node.h"
#include "proto.h"
#include "transfer.h"

/* ---- progress ---- */

void progress_init(struct progress *pr, const mp_transfer_opts *opts)
{
	memset(pr, 0, sizeof(*pr));
	pthread_mutex_init(&pr->lock, NULL);
	if (opts != NULL) {
		pr->cb = opts->progress;
		pr->arg = opts->progress_arg;
	}
}

static void progress_emit(struct progress *pr, bool force)
{
	if (pr->cb == NULL)
		return;
	int64_t now = client_now_ns();
	if (!force && now - pr->last_ns < 100000000)
		return;
	pr->last_ns = now;
	pr->cb(pr->arg, &pr->p);
}

void progress_add(struct progress *pr, uint64_t bytes, uint64_t files, const char *current)
{
	if (pr == NULL)
		return;
	pthread_mutex_lock(&pr->lock);
	pr->p.bytes_done += bytes;
	pr->p.files_done += files;
	if (current != NULL)
		pr->p.current = current;
	progress_emit(pr, false);
	/* current is the caller's: never kept past this call. */
	pr->p.current = NULL;
	pthread_mutex_unlock(&pr->lock);
}

void progress_totals(struct progress *pr, uint64_t bytes, uint64_t files)
{
	if (pr == NULL)
		return;
	pthread_mutex_lock(&pr->lock);
	pr->p.bytes_total += bytes;
	pr->p.files_total += files;
	pthread_mutex_unlock(&pr->lock);
}

void progress_finish(struct progress *pr)
{
	pthread_mutex_lock(&pr->lock);
	progress_emit(pr, true);
	pthread_mutex_unlock(&pr->lock);
}

void progress_destroy(struct progress *pr)
{
	pthread_mutex_destroy(&pr->lock);
}

int transfer_parallel(const struct mp_client *c, const mp_transfer_opts *opts)
{
	int n = opts != NULL && opts->parallel > 0 ? opts->parallel : (int)c->cfg.parallel;
	return n > 256 ? 256 : n;
}

/* ---- a pool of workers over numbered jobs ---- */

struct pool_run {
	pthread_mutex_t lock;
	size_t next, count;
	int rc;
	mp_error err;
	transfer_job_fn fn;
	void *ctx;
};

static void *pool_worker(void *arg)
{
	struct pool_run *pr = arg;
	for (;;) {
		pthread_mutex_lock(&pr->lock);
		if (pr->rc != 0 || pr->next >= pr->count) {
			pthread_mutex_unlock(&pr->lock);
			return NULL;
		}
		size_t i = pr->next++;
		pthread_mutex_unlock(&pr->lock);
		mp_error e = {0};
		int r = pr->fn(pr->ctx, i, &e);
		if (r < 0) {
			pthread_mutex_lock(&pr->lock);
			if (pr->rc == 0) {
				pr->rc = r;
				pr->err = e;
			}
			pthread_mutex_unlock(&pr->lock);
		}
	}
}

int transfer_run(size_t count, int parallel, transfer_job_fn fn, void *ctx, mp_error *err)
{
	struct pool_run pr = {.count = count, .fn = fn, .ctx = ctx};
	pthread_mutex_init(&pr.lock, NULL);
	size_t nthreads = (size_t)(parallel > 0 ? parallel : 1);
	if (nthreads > count)
		nthreads = count;
	pthread_t *th = calloc(nthreads ? nthreads : 1, sizeof(*th));
	size_t started = 0;
	if (th == NULL) {
		pthread_mutex_destroy(&pr.lock);
		return mperr(err, -ENOMEM, "out of memory");
	}
	/* The calling thread works too, so one job needs no thread at all. */
	for (size_t i = 1; i < nthreads; i++) {
		if (pthread_create(&th[i], NULL, pool_worker, &pr) != 0)
			break;
		started = i;
	}
	pool_worker(&pr);
	for (size_t i = 1; i <= started; i++)
		pthread_join(th[i], NULL);
	free(th);
	pthread_mutex_destroy(&pr.lock);
	if (pr.rc < 0 && err != NULL)
		*err = pr.err;
	return pr.rc;
}

/* ---- uploads ---- */

static void md5_hex(const void *data, size_t len, char out[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	EVP_Digest(data, len, md, &n, EVP_md5(), NULL);
	for (unsigned i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[2 * n] = '\0';
}

/* A new object key: under the prefix the primary gave our token (u/NAME/),
 * else mp/. */
static int new_key(struct mp_client *c, char out[OBJECT_KEY_MAX], mp_error *err)
{
	unsigned char rnd[16];
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return mperr(err, -EIO, "getrandom: %s", strerror(errno));
	pthread_mutex_lock(&c->lock);
	bool ask = c->cfg.token != NULL && c->upload_prefix[0] == '\0';
	pthread_mutex_unlock(&c->lock);
	/* With a token, the primary's HELLO_OK says where our uploads go. */
	if (ask) {
		int r = client_ask_primary(c, err);
		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&c->lock);
	size_t n = (size_t)snprintf(out, OBJECT_KEY_MAX, "%s",
	                            c->upload_prefix[0] ? c->upload_prefix : "mp/");
	pthread_mutex_unlock(&c->lock);
	for (int i = 0; i < 16; i++)
		snprintf(out + n + 2 * (size_t)i, 3, "%02x", rnd[i]);
	return 0;
}

static void upload_progress(void *arg, uint64_t bytes)
{
	progress_add(arg, bytes, 0, NULL);
}

static int commit_file(struct mp_client *c, const char *remote, size_t len, uint32_t mode,
                       int64_t mtime_ns, const mp_extent *ext, size_t next, mp_call *call,
                       mp_error *err);

/* One object of a file being put. */
struct put_object {
	mp_extent ext; /* bucket, key and etag point into the arrays below */
	char key[OBJECT_KEY_MAX];
	char etag[OBJSTORE_ETAG_MAX];
	const char *data;
	bool stored;
};

struct put_job {
	struct mp_client *c;
	struct put_object *objs;
	struct progress *pr;
	const char *remote;
};

/* Uploads one object: a single PUT up to multipart_threshold (its ETag
 * checked against the data's MD5), multipart with parts in parallel above
 * it (each part checked by the store against its signed SHA-256). */
static int put_object(void *ctx, size_t i, mp_error *err)
{
	struct put_job *j = ctx;
	struct put_object *o = &j->objs[i];
	struct mp_client *c = j->c;
	struct bucket *b;
	struct objstore *st;
	size_t len = (size_t)o->ext.length;
	int r = new_key(c, o->key, err);
	if (r == 0)
		r = buckets_acquire(c, c->cfg.origin, false, &b, &st, err);
	if (r < 0)
		return r;
	struct objstore_error oe = {0};
	objstore_set_progress(st, upload_progress, j->pr);
	bool single = len <= c->cfg.multipart_threshold;
	if (single)
		r = objstore_put(st, o->key, o->data, len, o->etag, &oe);
	else
		r = objstore_put_multipart(st, o->key, o->data, len, o->etag, &oe);
	objstore_set_progress(st, NULL, NULL);
	if (r < 0) {
		buckets_release(b, st);
		return mperr(err, r, "upload of %s: %s", j->remote, oe.message);
	}
	o->stored = true;
	if (single && objstore_etag_is_md5(o->etag)) {
		char md5[33];
		md5_hex(o->data, len, md5);
		if (strcmp(md5, o->etag) != 0)
			r = mperr(err, -EIO,
			          "upload of %s: the store's ETag %s is not the data's MD5 %s",
			          j->remote, o->etag, md5);
	}
	buckets_release(b, st);
	return r;
}

/* Deletes the objects of a put that will not be committed. */
static void drop_objects(struct mp_client *c, struct put_object *objs, size_t n)
{
	struct bucket *b;
	struct objstore *st;
	mp_error e;
	if (buckets_acquire(c, c->cfg.origin, false, &b, &st, &e) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (objs[i].stored)
			objstore_delete(st, objs[i].key, NULL);
	buckets_release(b, st);
}

int transfer_put_data(struct mp_client *c, const void *data, size_t len, const char *remote,
                      uint32_t mode, int64_t mtime_ns, struct progress *pr, mp_call *call,
                      mp_error *err)
{
	int r = nodes_check_path(remote, err);
	if (r < 0)
		return r;
	/* A large file becomes several objects of object_size, uploaded in
	 * parallel: no server-side assembly, and each can be fetched (and
	 * cached) on its own. */
	uint64_t osize = c->cfg.object_size;
	size_t n = len == 0 ? 0 : (size_t)((len + osize - 1) / osize);
	if (n > NODE_EXTENTS_MAX)
		return mperr(err, -EFBIG, "%s: %zu objects of %llu bytes; raise object_size",
		             remote, n, (unsigned long long)osize);
	struct put_object *objs = calloc(n ? n : 1, sizeof(*objs));
	mp_extent *exts = calloc(n ? n : 1, sizeof(*exts));
	if (objs == NULL || exts == NULL) {
		free(objs);
		free(exts);
		return mperr(err, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t off = (uint64_t)i * osize;
		objs[i].data = (const char *)data + off;
		objs[i].ext.length = len - off < osize ? len - off : osize;
	}
	struct put_job j = {c, objs, pr, remote};
	if (n > 0)
		r = transfer_run(n, transfer_parallel(c, NULL), put_object, &j, err);
	for (size_t i = 0; i < n; i++)
		exts[i] = (mp_extent){.bucket = c->cfg.origin,
		                      .key = objs[i].key,
		                      .etag = objs[i].etag,
		                      .length = objs[i].ext.length};
	if (r == 0)
		r = commit_file(c, remote, len, mode, mtime_ns, exts, n, call, err);
	if (r == -ENOENT) {
		/* Like an object store: a put makes the directories it needs. */
		char *parent = strdup(remote);
		char *slash = parent ? strrchr(parent, '/') : NULL;
		if (slash != NULL && slash != parent) {
			*slash = '\0';
			mp_error e;
			if (mp_mkdir(c, parent, 0755, true, NULL, &e) == 0)
				r = commit_file(c, remote, len, mode, mtime_ns, exts, n, call, err);
		}
		free(parent);
	}
	if (r < 0)
		drop_objects(c, objs, n); /* nothing points at them */
	free(objs);
	free(exts);
	return r;
}

static int commit_file(struct mp_client *c, const char *remote, size_t len, uint32_t mode,
                       int64_t mtime_ns, const mp_extent *ext, size_t next, mp_call *call,
                       mp_error *err)
{
	struct request_body rb;
	request_init(&rb, MT_CREATE);
	request_str(&rb, "path", remote);
	request_u64(&rb, "size", len);
	request_u64(&rb, "mode", mode ? mode & 07777 : 0644);
	if (mtime_ns > 0)
		request_u64(&rb, "mtime", (uint64_t)mtime_ns);
	request_key(&rb, "layout");
	nodes_pack_layout(&rb.pk, ext, next);
	struct reply rep;
	int r = client_primary(c, &rb, call, &rep, err);
	request_destroy(&rb);
	if (r < 0)
		return r;
	if (rep.is_error)
		r = client_answer_error(&rep, remote, err);
	reply_release(&rep);
	return r;
}

/* ---- downloads ---- */

/* Splits a layout into ranges of at most part_size. *ret is malloc'd. */
int transfer_chunks(const struct mp_client *c, const mp_node *n, struct chunk **ret, size_t *ret_n,
                    mp_error *err)
{
	uint64_t part = c->cfg.part_size, total = 0;
	size_t count = 0;
	for (size_t i = 0; i < n->n_extents; i++)
		count += (size_t)((n->extents[i].length + part - 1) / part);
	struct chunk *ch = calloc(count ? count : 1, sizeof(*ch));
	if (ch == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < n->n_extents; i++) {
		const mp_extent *e = &n->extents[i];
		for (uint64_t off = 0; off < e->length; off += part, k++) {
			uint64_t len = e->length - off < part ? e->length - off : part;
			ch[k] = (struct chunk){e, e->offset + off, len, total + off,
			                       off == 0 && len == e->length};
		}
		total += e->length;
	}
	*ret = ch;
	*ret_n = k;
	return 0;
}

struct fetch {
	mp_sink_cb sink;
	void *arg;
	EVP_MD_CTX *md5; /* when checking a whole object */
	struct progress *pr;
	uint64_t got;
};

static int fetch_cb(void *arg, const void *data, size_t len)
{
	struct fetch *f = arg;
	if (f->md5 != NULL)
		EVP_DigestUpdate(f->md5, data, len);
	int r = f->sink(f->arg, data, len);
	if (r == 0) {
		f->got += len;
		progress_add(f->pr, len, 0, NULL);
	}
	return r;
}

/* One range, from the site replica when there is one, else the extent's
 * bucket; the bytes go to sink in order. A retry after a partial transfer
 * (replica failed midway) would repeat bytes, so the replica is only used
 * when it answers from the first byte. */
static int fetch_from_buckets(struct mp_client *c, const struct chunk *ch, mp_sink_cb sink,
                              void *arg, struct progress *pr, mp_error *err)
{
	const mp_extent *e = ch->ext;
	struct objstore_error oe = {0};
	/* 2: the copy the site's mirror verified in the site bucket; 1: a
	 * replica bucket the configuration names; 0: the bucket itself. */
	for (int use_replica = 2; use_replica >= 0; use_replica--) {
		struct bucket *b = NULL;
		struct objstore *st = NULL;
		char site_key[EXTENT_BUCKET_MAX + EXTENT_KEY_MAX + 2];
		const char *key = e->key;
		int r = 0;
		if (use_replica == 2) {
			if (e->replica == NULL)
				continue;
			snprintf(site_key, sizeof(site_key), "%s/%s", e->bucket, e->key);
			key = site_key;
			mp_error ignored;
			if (buckets_acquire(c, e->replica, false, &b, &st, &ignored) < 0)
				continue; /* not configured here: the next source */
		} else {
			r = buckets_acquire(c, e->bucket, use_replica == 1, &b, &st, err);
		}
		if (r < 0)
			return r;
		if (st == NULL)
			continue; /* no replica configured */
		struct fetch f = {.sink = sink, .arg = arg, .pr = pr};
		bool check = ch->whole_extent && e->offset == 0 && objstore_etag_is_md5(e->etag);
		if (check) {
			f.md5 = EVP_MD_CTX_new();
			if (f.md5 == NULL || !EVP_DigestInit_ex(f.md5, EVP_md5(), NULL)) {
				EVP_MD_CTX_free(f.md5);
				f.md5 = NULL;
				check = false;
			}
		}
		r = objstore_get(st, key, ch->obj_offset, ch->length, fetch_cb, &f, &oe);
		buckets_release(b, st);
		if (r == 0 && f.got != ch->length)
			r = objstore_fail(&oe, -EIO, 0, "ShortRead",
			                  "%s/%s: %llu of %llu bytes at offset %llu: the object is "
			                  "shorter than the layout says",
			                  e->bucket, e->key, (unsigned long long)f.got,
			                  (unsigned long long)ch->length,
			                  (unsigned long long)ch->obj_offset);
		if (r == 0 && check) {
			unsigned char md[EVP_MAX_MD_SIZE];
			unsigned n = 0;
			char hex[33];
			EVP_DigestFinal_ex(f.md5, md, &n);
			for (unsigned i = 0; i < n && i < 16; i++)
				sprintf(hex + 2 * i, "%02x", md[i]);
			hex[32] = '\0';
			if (strcmp(hex, e->etag) != 0)
				r = objstore_fail(
				    &oe, -EIO, 0, "BadDigest",
				    "%s/%s: the bytes' MD5 %s differs from the layout's "
				    "ETag %s (the object changed since it was written or "
				    "imported)",
				    e->bucket, e->key, hex, e->etag);
		}
		EVP_MD_CTX_free(f.md5);
		if (r == 0)
			return 0;
		if (use_replica && f.got == 0)
			continue;
		return buckets_error(err, r, &oe);
	}
	return buckets_error(err, -EIO, &oe);
}

/* The chunk block by block through the site's cache group; a block no
 * node can serve comes from the buckets instead. Returns -ENODATA, having
 * sent nothing, when there is no group. */
static int fetch_via_cache(struct mp_client *c, const struct chunk *ch, mp_sink_cb sink, void *arg,
                           struct progress *pr, mp_error *err)
{
	const mp_extent *e = ch->ext;
	uint64_t bs = cachegroup_block_size(c, &c->group);
	if (bs == 0 || strlen(e->bucket) > CACHE_ALIAS_MAX || strlen(e->key) > CACHE_KEY_MAX ||
	    strlen(e->etag) > CACHE_ETAG_MAX || e->etag[0] == '\0')
		return -ENODATA;
	struct block_request *req = calloc(1, sizeof(*req));
	if (req == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	snprintf(req->bucket, sizeof(req->bucket), "%s", e->bucket);
	snprintf(req->key, sizeof(req->key), "%s", e->key);
	snprintf(req->etag, sizeof(req->etag), "%s", e->etag);
	req->size = e->offset + e->length;
	if (e->grant != NULL) {
		req->grant = e->grant;
		req->grant_len = strlen(e->grant);
	}
	if (e->replica != NULL && strlen(e->replica) <= CACHE_ALIAS_MAX)
		snprintf(req->replica, sizeof(req->replica), "%s", e->replica);
	int r = 0;
	uint64_t off = ch->obj_offset, end = ch->obj_offset + ch->length;
	while (off < end && r == 0) {
		uint64_t block_end = (off / bs + 1) * bs;
		uint64_t len = (block_end < end ? block_end : end) - off;
		req->offset = off;
		req->length = len;
		mp_error cerr;
		r = cachegroup_read(c, &c->group, req, 3, sink, arg, NULL, &cerr);
		if (r == 0) {
			progress_add(pr, len, 0, NULL);
		} else if (r == -ENODATA || r == -EACCES) {
			/* No node could serve, or the group wants a grant this
			 * node came without (a listing's): the buckets, with
			 * this site's own credentials. */
			struct chunk piece = {e, off, len, ch->file_offset + (off - ch->obj_offset),
			                      false};
			r = fetch_from_buckets(c, &piece, sink, arg, pr, err);
		} else {
			*err = cerr;
		}
		off += len;
	}
	free(req);
	return r;
}

int transfer_fetch(struct mp_client *c, const struct chunk *ch, mp_sink_cb sink, void *arg,
                   struct progress *pr, mp_error *err)
{
	if (ch->length == 0)
		return 0;
	int r = fetch_via_cache(c, ch, sink, arg, pr, err);
	if (r != -ENODATA)
		return r;
	return fetch_from_buckets(c, ch, sink, arg, pr, err);
}

struct fd_sink {
	int fd;
	uint64_t pos;
};

static int fd_sink_write(void *arg, const void *data, size_t len)
{
	struct fd_sink *s = arg;
	const char *p = data;
	while (len > 0) {
		ssize_t n = pwrite(s->fd, p, len, (off_t)s->pos);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		s->pos += (uint64_t)n;
	}
	return 0;
}

struct get_job {
	struct mp_client *c;
	const struct chunk *chunks;
	int fd;
	struct progress *pr;
};

static int get_chunk(void *ctx, size_t i, mp_error *err)
{
	struct get_job *j = ctx;
	struct fd_sink s = {j->fd, j->chunks[i].file_offset};
	int r = transfer_fetch(j->c, &j->chunks[i], fd_sink_write, &s, j->pr, err);
	if (r < 0 && err->message[0] == '\0')
		mperr(err, r, "write: %s", strerror(-r));
	return r;
}

int transfer_get_fd(struct mp_client *c, const mp_node *n, int fd, int parallel,
                    struct progress *pr, mp_error *err)
{
	struct chunk *chunks;
	size_t count;
	int r = transfer_chunks(c, n, &chunks, &count, err);
	if (r < 0)
		return r;
	struct get_job j = {c, chunks, fd, pr};
	r = transfer_run(count, parallel, get_chunk, &j, err);
	free(chunks);
	return r;
}
