/* The miss path of a cache node. One fill per block however many readers
 * ask (single flight: later readers wait on the fill in flight); a fixed
 * pool of fetcher threads, so that cache.fetch_concurrency bounds what the
 * node asks of its sources, and cache.fetch_rate paces the bytes. A block
 * comes from, in order: its previous owner in this group (while this node
 * is warming), the parent site's group, this site's replica bucket for the
 * alias, the alias's bucket itself (with this site's credentials, so
 * imported objects of any bucket are cached like native ones). The bytes
 * are checked against the object's MD5 where the ETag gives one for the
 * whole block, then stored; the waiters are answered from the store on the
 * event loop. */
#include <errno.h>
#include <stdatomic.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachenode.h"
#include "log.h"

#define INFLIGHT_BUCKETS 1024

/* A fetched block's bytes, answered to every waiter from memory (no reopen,
 * no race with an eviction) and freed by the last of them. */
struct block_bytes {
	atomic_int refs;
	uint8_t *data;
	struct cachenode *node; /* whose buffer pool data goes back to */
};

/* Block buffers are reused: fresh pages cost a fault each (on this kind of
 * virtual machine touching new memory runs at about 150 MB/s), so a fill
 * into a recycled buffer is several times cheaper. */
#define BUFFERS_KEPT 64

static void *buffer_get(struct cachenode *n, size_t len)
{
	void *p = NULL;
	if (len == n->block_size) {
		pthread_mutex_lock(&n->pool_lock);
		if (n->npool > 0)
			p = n->pool[--n->npool];
		pthread_mutex_unlock(&n->pool_lock);
	}
	return p != NULL ? p : malloc(n->block_size);
}

static void buffer_put(struct cachenode *n, void *p)
{
	pthread_mutex_lock(&n->pool_lock);
	if (n->npool < BUFFERS_KEPT) {
		n->pool[n->npool++] = p;
		p = NULL;
	}
	pthread_mutex_unlock(&n->pool_lock);
	free(p);
}

static void bytes_unref(void *arg)
{
	struct block_bytes *b = arg;
	if (atomic_fetch_sub(&b->refs, 1) == 1) {
		buffer_put(b->node, b->data);
		free(b);
	}
}

struct waiter {
	struct waiter *next;
	struct cachenode *node;
	struct event_base *base; /* c's loop */
	struct conn *c;          /* referenced (on its loop); NULL for a warm */
	/* A warm (no reader): called on base with 1 (filled) or a negative
	 * errno, instead of an answer on c. */
	void (*done)(void *arg, int result, const char *why);
	void *done_arg;
	uint64_t id;
	struct block_request req;
	/* The fill's outcome, copied for the answer on c's loop. */
	int result;
	uint64_t block;
	char source[16];
	char why[1600];
	struct block_bytes *bytes; /* referenced; NULL when the fill failed */
	uint64_t block_off;
};

struct fill {
	TAILQ_ENTRY(fill) link;
	struct fill *hnext;
	struct block_id bid;
	struct block_request req;        /* the first reader's, for the object's identity */
	char grant[CACHE_GRANT_MAX + 1]; /* its grant, passed on to peers and parents */
	uint64_t block_off, block_len;
	struct waiter *waiters;
	int result;
	char why[1600];
	char source[16];
	int64_t started_ns;
	struct block_bytes *bytes; /* what was fetched, shared by the waiters */
	bool answered; /* fetched: later readers are answered at once, while it is stored */
};

static size_t slot(struct block_id id)
{
	return (size_t)(id.lo % INFLIGHT_BUCKETS);
}

static struct fill *inflight_find(struct cachenode *n, struct block_id id)
{
	for (struct fill *f = n->inflight[slot(id)]; f != NULL; f = f->hnext)
		if (f->bid.lo == id.lo && f->bid.hi == id.hi)
			return f;
	return NULL;
}

static void inflight_remove(struct cachenode *n, struct fill *f)
{
	for (struct fill **p = &n->inflight[slot(f->bid)]; *p != NULL; p = &(*p)->hnext)
		if (*p == f) {
			*p = f->hnext;
			return;
		}
}

/* A waiter that cannot be queued: its answer now. */
static void refuse(struct waiter *w, struct conn *c, uint64_t id, int code, const char *why)
{
	if (c != NULL)
		conn_send_error(c, id, code, "%s", why);
	else
		w->done(w->done_arg, code, why);
}

static void request_fill(struct cachenode *n, struct event_base *base, struct conn *c, uint64_t id,
                         const struct block_request *req, struct block_id bid, bool recheck_store,
                         struct waiter *w)
{
	if (w == NULL) {
		conn_send_error(c, id, -ENOMEM, "out of memory");
		return;
	}
	w->node = n;
	w->base = base;
	w->c = c;
	w->id = id;
	w->req = *req;
	w->req.grant = NULL; /* points into a frame that is about to go */
	w->req.grant_len = 0;
	if (c != NULL)
		conn_ref(c);
	pthread_mutex_lock(&n->queue_lock);
	struct fill *f = inflight_find(n, bid);
	if (f != NULL && f->req.size >= req->size && f->answered && f->result == 0 && c != NULL) {
		/* Fetched and being stored: the bytes are here. (A warm
		 * waits below for the store.) */
		struct block_bytes *b = f->bytes;
		atomic_fetch_add(&b->refs, 1);
		uint64_t block_off = f->block_off;
		char source[16];
		snprintf(source, sizeof(source), "%s", f->source);
		pthread_mutex_unlock(&n->queue_lock);
		metric_add(n->m_waits, 1);
		conn_unref(c);
		free(w);
		serve_from_memory(c, id, req, source, b->data, block_off, bytes_unref, b);
		return;
	}
	if (f != NULL && f->req.size >= req->size) {
		w->next = f->waiters;
		f->waiters = w;
		pthread_mutex_unlock(&n->queue_lock);
		metric_add(n->m_waits, 1);
		return;
	}
	/* The caller missed the store before asking; a fill of this block
	 * may have been stored and left the flight since. A fill is stored
	 * before it leaves, so under the lock the store tells. */
	if (f == NULL && recheck_store && blockstore_has(n->store, bid)) {
		pthread_mutex_unlock(&n->queue_lock);
		if (c == NULL) {
			w->done(w->done_arg, 0, "");
			free(w);
			return;
		}
		conn_unref(c);
		if (serve_from_store(n, c, id, req, "hit")) {
			free(w);
			metric_add(n->m_waits, 1);
			return;
		}
		/* Evicted meanwhile, or stored shorter: fill it after all. */
		memset(w, 0, sizeof(*w));
		request_fill(n, base, c, id, req, bid, false, w);
		return;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		pthread_mutex_unlock(&n->queue_lock);
		if (c != NULL)
			conn_unref(c);
		refuse(w, c, id, -ENOMEM, "out of memory");
		free(w);
		return;
	}
	f->bid = bid;
	f->req = w->req;
	if (req->grant != NULL) {
		memcpy(f->grant, req->grant, req->grant_len);
		f->grant[req->grant_len] = '\0';
		f->req.grant = f->grant;
		f->req.grant_len = req->grant_len;
	}
	f->block_off = req->offset / n->block_size * n->block_size;
	uint64_t end = f->block_off + n->block_size;
	f->block_len = (end < req->size ? end : req->size) - f->block_off;
	f->waiters = w;
	f->started_ns = cachenode_now_ns();
	f->hnext = n->inflight[slot(bid)];
	n->inflight[slot(bid)] = f;
	TAILQ_INSERT_TAIL(&n->queue, f, link);
	pthread_cond_signal(&n->queue_cond);
	pthread_mutex_unlock(&n->queue_lock);
}

void fill_request(struct cachenode *n, struct event_base *base, struct conn *c, uint64_t id,
                  const struct block_request *req, struct block_id bid)
{
	request_fill(n, base, c, id, req, bid, true, calloc(1, sizeof(struct waiter)));
}

void fill_warm(struct cachenode *n, struct event_base *base, const struct block_request *req,
               struct block_id bid, void (*done)(void *arg, int result, const char *why), void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		done(arg, -ENOMEM, "out of memory");
		return;
	}
	w->done = done;
	w->done_arg = arg;
	request_fill(n, base, NULL, 0, req, bid, true, w);
}

/* ---- fetching, on a fetcher thread ---- */

static bool md5_matches(const void *data, size_t len, const char *etag)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (!EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL))
		return true; /* cannot check: the checksum still guards the disk */
	char hex[33];
	for (unsigned i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return strcmp(hex, etag) == 0;
}

static void pace(struct cachenode *n, uint64_t bytes)
{
	uint64_t rate = n->cfg->cache_fetch_rate;
	if (rate == 0)
		return;
	pthread_mutex_lock(&n->queue_lock);
	int64_t now = cachenode_now_ns();
	int64_t start = n->next_fetch_ns > now ? n->next_fetch_ns : now;
	n->next_fetch_ns = start + (int64_t)((double)bytes * 1e9 / (double)rate);
	pthread_mutex_unlock(&n->queue_lock);
	if (start > now) {
		struct timespec ts = {(time_t)((start - now) / 1000000000),
		                      (long)((start - now) % 1000000000)};
		nanosleep(&ts, NULL);
	}
}

/* From a group of cache nodes (own while warming: peer reads only). */
static bool from_group(struct cachenode *n, struct cachegroup *g, struct fill *f, bool peer,
                       void *buf)
{
	if (cachegroup_block_size(n->client, g) != n->block_size)
		return false;
	struct block_request req = f->req;
	req.offset = f->block_off;
	req.length = f->block_len;
	req.peer = peer;
	mp_error err;
	struct cachegroup_buf out = {buf, 0, f->block_len};
	/* Only the owner, never a hedge to the next node: a node that lacks
	 * the block would fetch it from the origin too, a second fetch where
	 * this node can make the one itself (and the parent's owner, asked
	 * again by its own site, would make a third). */
	return cachegroup_read(n->client, g, &req, 1, cachegroup_buf_sink, &out, NULL, &err) == 0;
}

static int from_buckets(struct cachenode *n, struct fill *f, void *buf)
{
	int r = -EIO;
	/* 2: the copy the site's mirror verified (the reader was told); 1: a
	 * replica bucket the configuration names; 0: the bucket. */
	for (int replica = 2; replica >= 0; replica--) {
		struct bucket *b = NULL;
		struct objstore *st = NULL;
		mp_error err;
		char site_key[CACHE_ALIAS_MAX + CACHE_KEY_MAX + 2];
		const char *key = f->req.key;
		if (replica == 2) {
			if (f->req.replica[0] == '\0' ||
			    buckets_acquire(n->client, f->req.replica, false, &b, &st, &err) < 0)
				continue;
			snprintf(site_key, sizeof(site_key), "%s/%s", f->req.bucket, f->req.key);
			key = site_key;
			r = 0;
		} else {
			r = buckets_acquire(n->client, f->req.bucket, replica == 1, &b, &st, &err);
		}
		if (r < 0) {
			snprintf(f->why, sizeof(f->why), "%s", err.message);
			return r;
		}
		if (st == NULL)
			continue;
		pace(n, f->block_len);
		struct objstore_error oe = {0};
		size_t got = 0;
		r = objstore_get_buf(st, key, f->block_off, f->block_len, buf, f->block_len, &got,
		                     &oe);
		buckets_release(b, st);
		if (r == 0 && got != f->block_len) {
			r = -EIO;
			snprintf(oe.message, sizeof(oe.message),
			         "%s/%.300s: %zu of %llu bytes at offset %llu: the object is "
			         "shorter than "
			         "the layout says",
			         f->req.bucket, f->req.key, got, (unsigned long long)f->block_len,
			         (unsigned long long)f->block_off);
		}
		if (r == 0) {
			snprintf(f->source, sizeof(f->source), "%s",
			         replica == 2 ? "site-copy"
			         : replica    ? "replica"
			                      : "bucket");
			return 0;
		}
		snprintf(f->why, sizeof(f->why), "%s", oe.message);
		if (!replica)
			break;
		/* Not (yet) in the site's replica: the bucket itself. */
	}
	return r;
}

static void fetch(struct cachenode *n, struct fill *f)
{
	void *buf = buffer_get(n, f->block_len);
	if (buf == NULL) {
		f->result = -ENOMEM;
		snprintf(f->why, sizeof(f->why), "out of memory");
		return;
	}
	int r;
	struct block_request whole = f->req;
	whole.offset = f->block_off;
	whole.length = f->block_len;
	if (register_state(n) == CACHE_WARMING && from_group(n, &n->own, f, true, buf)) {
		snprintf(f->source, sizeof(f->source), "peer");
		r = 0;
	} else if (cachegroup_read_draining(n->client, &n->own, &whole, cachegroup_buf_sink,
	                                    &(struct cachegroup_buf){buf, 0, f->block_len}) == 0) {
		snprintf(f->source, sizeof(f->source), "peer"); /* handed over by a leaving node */
		r = 0;
	} else if (n->cfg->cache_parent.n > 0 && from_group(n, &n->parent, f, false, buf)) {
		snprintf(f->source, sizeof(f->source), "parent");
		r = 0;
	} else {
		r = from_buckets(n, f, buf);
	}
	if (r == 0 && f->block_off == 0 && f->block_len == f->req.size &&
	    objstore_etag_is_md5(f->req.etag) && !md5_matches(buf, f->block_len, f->req.etag)) {
		r = -EIO;
		snprintf(
		    f->why, sizeof(f->why),
		    "%s/%s: the bytes from the %s do not match the ETag %s (the object changed "
		    "since the layout was written)",
		    f->req.bucket, f->req.key, f->source, f->req.etag);
	}
	if (r == 0) {
		metric_add(metric_child(n->m_fetched, f->source), (double)f->block_len);
	}
	if (r == 0) {
		f->bytes = malloc(sizeof(*f->bytes));
		if (f->bytes == NULL) {
			r = -ENOMEM;
			snprintf(f->why, sizeof(f->why), "out of memory");
		} else {
			atomic_init(&f->bytes->refs, 1);
			f->bytes->data = buf;
			f->bytes->node = n;
			buf = NULL;
		}
	}
	if (buf != NULL)
		buffer_put(n, buf);
	f->result = r;
}

static void finish(struct cachenode *n, struct fill *f, struct waiter *waiting);
static void release_fill(struct cachenode *n, struct fill *f);
static void account(struct cachenode *n, struct fill *f);

static void *fetcher_main(void *arg)
{
	struct cachenode *n = arg;
	pthread_mutex_lock(&n->queue_lock);
	for (;;) {
		while (!n->stopping && TAILQ_EMPTY(&n->queue))
			pthread_cond_wait(&n->queue_cond, &n->queue_lock);
		if (n->stopping)
			break;
		struct fill *f = TAILQ_FIRST(&n->queue);
		TAILQ_REMOVE(&n->queue, f, link);
		atomic_fetch_add(&n->fills_active, 1);
		pthread_mutex_unlock(&n->queue_lock);
		fetch(n, f);
		account(n, f);
		/* The readers first, then the disk: a block is answered as soon
		 * as it is here. It stays in flight while it is stored, so a
		 * reader meanwhile is answered from memory, not fetched again. */
		pthread_mutex_lock(&n->queue_lock);
		struct waiter *waiting = f->waiters, *warms = NULL, **rest = &waiting;
		f->waiters = NULL;
		f->answered = true;
		pthread_mutex_unlock(&n->queue_lock);
		/* Warms are answered once the block is stored: "filled" means
		 * on disk, where the next reader finds it. */
		while (*rest != NULL) {
			struct waiter *w = *rest;
			if (w->done != NULL) {
				*rest = w->next;
				w->next = warms;
				warms = w;
			} else {
				rest = &w->next;
			}
		}
		finish(n, f, waiting);
		int stored = 0;
		if (f->result == 0) {
			int s = blockstore_put(n->store, f->bid, f->bytes->data,
			                       (uint32_t)f->block_len);
			/* The readers had the bytes; the next one fills again. */
			if (s < 0) {
				log_warn("block %llu of %s/%s not stored: %s",
				         (unsigned long long)(f->block_off / n->block_size),
				         f->req.bucket, f->req.key, strerror(-s));
				stored = s;
			}
		}
		pthread_mutex_lock(&n->queue_lock);
		atomic_fetch_sub(&n->fills_active, 1);
		inflight_remove(n, f);
		waiting = f->waiters; /* joined while it was stored */
		f->waiters = NULL;
		pthread_mutex_unlock(&n->queue_lock);
		if (stored < 0 && warms != NULL) {
			/* Readers had the bytes; a warm did not get a block. */
			int result = f->result;
			char why[sizeof(f->why)];
			memcpy(why, f->why, sizeof(why));
			f->result = stored;
			snprintf(f->why, sizeof(f->why), "block not stored: %s", strerror(-stored));
			finish(n, f, warms);
			f->result = result;
			memcpy(f->why, why, sizeof(why));
		} else {
			finish(n, f, warms);
		}
		finish(n, f, waiting);
		release_fill(n, f);
		pthread_mutex_lock(&n->queue_lock);
	}
	pthread_mutex_unlock(&n->queue_lock);
	return NULL;
}

/* ---- answering, on each waiter's loop ---- */

static void answer_waiter(evutil_socket_t fd, short what, void *arg)
{
	struct waiter *w = arg;
	if (w->done != NULL) {
		if (w->bytes != NULL)
			bytes_unref(w->bytes);
		w->done(w->done_arg, w->result < 0 ? w->result : 1, w->why);
		free(w);
		return;
	}
	if (conn_alive(w->c) && w->result < 0)
		conn_send_error(w->c, w->id, w->result == -ENOENT ? -ENOENT : -EIO, "%s", w->why);
	else if (conn_alive(w->c))
		serve_from_memory(w->c, w->id, &w->req, w->source, w->bytes->data, w->block_off,
		                  bytes_unref, w->bytes);
	else if (w->bytes != NULL)
		bytes_unref(w->bytes);
	conn_unref(w->c);
	free(w);
}

/* On the fetcher: posts each waiter's answer to its connection's loop. */
static void finish(struct cachenode *n, struct fill *f, struct waiter *waiting)
{
	for (struct waiter *w = waiting, *next; w != NULL; w = next) {
		next = w->next;
		w->result = f->result;
		w->block = f->block_off / n->block_size;
		w->block_off = f->block_off;
		snprintf(w->source, sizeof(w->source), "%s", f->source);
		snprintf(w->why, sizeof(w->why), "%s", f->why);
		if (f->bytes != NULL) {
			atomic_fetch_add(&f->bytes->refs, 1);
			w->bytes = f->bytes;
		}
		if (event_base_once(w->base, -1, EV_TIMEOUT, answer_waiter, w, NULL) < 0) {
			/* The loop is gone (stopping): nothing to answer on. */
			if (w->bytes != NULL)
				bytes_unref(w->bytes);
			free(w);
		}
	}
}

/* Accounts for a fill as soon as it is fetched (before its readers get the
 * bytes, so that what they see and the metrics agree). */
static void account(struct cachenode *n, struct fill *f)
{
	metric_observe(n->m_fill_seconds, (double)(cachenode_now_ns() - f->started_ns) / 1e9);
	if (f->result < 0) {
		metric_add(n->m_errors, 1);
		log_warn("fill of block %llu of %s/%s failed: %s",
		         (unsigned long long)(f->block_off / n->block_size), f->req.bucket,
		         f->req.key, f->why);
	} else {
		metric_add(n->m_bytes_filled, (double)f->block_len);
	}
}

static void release_fill(struct cachenode *n, struct fill *f)
{
	(void)n;
	if (f->bytes != NULL)
		bytes_unref(f->bytes);
	free(f);
}

int fill_start(struct cachenode *n)
{
	n->inflight = calloc(INFLIGHT_BUCKETS, sizeof(*n->inflight));
	n->nfetchers = (size_t)n->cfg->cache_fetch_concurrency;
	n->fetchers = calloc(n->nfetchers, sizeof(*n->fetchers));
	if (n->inflight == NULL || n->fetchers == NULL)
		return -ENOMEM;
	pthread_mutex_init(&n->queue_lock, NULL);
	pthread_mutex_init(&n->pool_lock, NULL);
	pthread_cond_init(&n->queue_cond, NULL);
	TAILQ_INIT(&n->queue);
	for (size_t i = 0; i < n->nfetchers; i++)
		if (pthread_create(&n->fetchers[i], NULL, fetcher_main, n) != 0) {
			n->nfetchers = i;
			return -EAGAIN;
		}
	return 0;
}

static void drop_fill(struct fill *f)
{
	for (struct waiter *w = f->waiters, *next; w != NULL; w = next) {
		next = w->next;
		if (w->done != NULL)
			w->done(w->done_arg, -ECANCELED, "the cache node is stopping");
		else
			conn_unref(w->c);
		free(w);
	}
	free(f);
}

void fill_stop(struct cachenode *n)
{
	if (n->fetchers == NULL)
		return;
	pthread_mutex_lock(&n->queue_lock);
	n->stopping = true;
	pthread_cond_broadcast(&n->queue_cond);
	pthread_mutex_unlock(&n->queue_lock);
	for (size_t i = 0; i < n->nfetchers; i++)
		pthread_join(n->fetchers[i], NULL);
	/* Answers posted to the loops after they stopped (their waiters
	 * hold connections, warm batches and block buffers): run them now,
	 * on this thread, the loops' own being gone. */
	for (size_t i = 0; i < n->nloops; i++)
		if (n->loops[i].base != NULL)
			event_base_loop(n->loops[i].base, EVLOOP_NONBLOCK);
	struct fill *f;
	while ((f = TAILQ_FIRST(&n->queue)) != NULL) {
		TAILQ_REMOVE(&n->queue, f, link);
		drop_fill(f);
	}

	free(n->fetchers);
	free(n->inflight);
	while (n->npool > 0)
		free(n->pool[--n->npool]);
	pthread_mutex_destroy(&n->pool_lock);
	n->fetchers = NULL;
	pthread_cond_destroy(&n->queue_cond);
	pthread_mutex_destroy(&n->queue_lock);
}
