/* A file opened for reading through the mount: windows fetched ahead by a
 * pool of fetchers (see reader.h). */
#include "reader.h"

#include "bigbuf.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum window_state { WINDOW_EMPTY, WINDOW_LOADING, WINDOW_READY, WINDOW_FAILED };

/* Bytes [index * READER_WINDOW, + len) of the file. */
struct window {
	uint64_t index;
	enum window_state state;
	int tries; /* fetches of this index so far */
	char *buf;
	size_t len;
	int rc; /* WINDOW_FAILED: why, with err */
	mp_error err;
};

struct reader {
	struct fetch_pool *pool;
	mp_node node;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a window stopped loading */
	struct window win[READER_AHEAD];
	int inflight;      /* windows queued or loading */
	uint64_t next_off; /* where a sequential read goes next */
	unsigned streak;   /* sequential reads in a row */
};

struct fetch_job {
	struct reader *r;
	struct window *w;
	struct fetch_job *next;
};

struct fetch_pool {
	mp_client *client;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job was queued, or stop */
	struct fetch_job *head, *tail;
	bool stopping;
	pthread_t *threads;
	int n_threads;
};

struct fill {
	char *buf;
	size_t len, cap;
};

static int fill_sink(void *arg, const void *data, size_t len)
{
	struct fill *f = arg;
	if (len > f->cap - f->len)
		return -EOVERFLOW;
	memcpy(f->buf + f->len, data, len);
	f->len += len;
	return 0;
}

/* Reads [off, off + len) of the reader's node into a new buffer. */
static int fetch_range(struct reader *r, uint64_t off, size_t len, char **ret, mp_error *err)
{
	struct fill f = {.buf = bigbuf_get(len), .cap = len};
	if (f.buf == NULL) {
		snprintf(err->message, sizeof(err->message), "out of memory");
		err->code = -ENOMEM;
		return -ENOMEM;
	}
	int rc = mp_read_node(r->pool->client, &r->node, off, len, fill_sink, &f, NULL, err);
	if (rc == 0 && f.len != len) {
		rc = -EIO;
		snprintf(err->message, sizeof(err->message),
		         "%s: %zu bytes at %llu where %zu were expected", r->node.name, f.len,
		         (unsigned long long)off, len);
		err->code = rc;
	}
	if (rc < 0) {
		bigbuf_put(f.buf);
		return rc;
	}
	*ret = f.buf;
	return 0;
}

/* Loads w (LOADING, counted in inflight): called with r->lock held, which
 * it releases while the bytes travel. */
static void window_load(struct reader *r, struct window *w)
{
	uint64_t off = w->index * READER_WINDOW;
	size_t len =
	    r->node.size - off < READER_WINDOW ? (size_t)(r->node.size - off) : READER_WINDOW;
	pthread_mutex_unlock(&r->lock);
	char *buf = NULL;
	mp_error err = {0};
	int rc = fetch_range(r, off, len, &buf, &err);
	pthread_mutex_lock(&r->lock);
	if (rc == 0) {
		w->buf = buf;
		w->len = len;
		w->state = WINDOW_READY;
	} else {
		w->rc = rc;
		w->err = err;
		w->state = WINDOW_FAILED;
	}
	r->inflight--;
	pthread_cond_broadcast(&r->cond);
}

static void *fetcher_main(void *arg)
{
	struct fetch_pool *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->head == NULL && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		struct fetch_job *j = p->head;
		if (j == NULL)
			break;
		p->head = j->next;
		if (p->head == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		pthread_mutex_lock(&j->r->lock);
		window_load(j->r, j->w);
		pthread_mutex_unlock(&j->r->lock);
		free(j);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int fetch_pool_start(mp_client *c, int threads, struct fetch_pool **ret, mp_error *err)
{
	struct fetch_pool *p = calloc(1, sizeof(*p));
	if (p != NULL)
		p->threads = calloc((size_t)(threads > 0 ? threads : 1), sizeof(pthread_t));
	if (p == NULL || p->threads == NULL) {
		free(p);
		snprintf(err->message, sizeof(err->message), "out of memory");
		return err->code = -ENOMEM;
	}
	p->client = c;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (int i = 0; i < threads; i++) {
		int e = pthread_create(&p->threads[i], NULL, fetcher_main, p);
		if (e != 0) {
			fetch_pool_stop(p);
			snprintf(err->message, sizeof(err->message), "cannot start a fetcher: %s",
			         strerror(e));
			return err->code = -e;
		}
		p->n_threads++;
	}
	*ret = p;
	return 0;
}

void fetch_pool_stop(struct fetch_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->threads);
	free(p);
}

int reader_new(struct fetch_pool *p, mp_node *node, struct reader **ret)
{
	struct reader *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->pool = p;
	r->node = *node;
	memset(node, 0, sizeof(*node));
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	*ret = r;
	return 0;
}

static void window_clear(struct window *w)
{
	bigbuf_put(w->buf);
	memset(w, 0, sizeof(*w));
}

void reader_free(struct reader *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	/* Queued fetches nobody will read are dropped, not made. */
	pthread_mutex_lock(&r->pool->lock);
	for (struct fetch_job **jp = &r->pool->head; *jp != NULL;) {
		struct fetch_job *j = *jp;
		if (j->r != r) {
			jp = &j->next;
			continue;
		}
		*jp = j->next;
		j->w->state = WINDOW_EMPTY;
		r->inflight--;
		free(j);
	}
	r->pool->tail = NULL;
	for (struct fetch_job *j = r->pool->head; j != NULL; j = j->next)
		r->pool->tail = j;
	pthread_mutex_unlock(&r->pool->lock);
	while (r->inflight > 0)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
	for (int i = 0; i < READER_AHEAD; i++)
		window_clear(&r->win[i]);
	mp_node_clear(&r->node);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}

static struct window *window_find(struct reader *r, uint64_t index)
{
	for (int i = 0; i < READER_AHEAD; i++)
		if (r->win[i].state != WINDOW_EMPTY && r->win[i].index == index)
			return &r->win[i];
	return NULL;
}

/* A slot for a window of a read of windows [first, last]: an empty one,
 * else the one furthest behind the read, else one far ahead of it (a
 * reader that went back). needed: any slot outside the read will do. NULL
 * when every candidate is loading. */
static struct window *window_claim(struct reader *r, uint64_t first, uint64_t last, bool needed)
{
	struct window *best = NULL;
	for (int i = 0; i < READER_AHEAD; i++) {
		struct window *w = &r->win[i];
		if (w->state == WINDOW_EMPTY)
			return w;
		if (w->state == WINDOW_LOADING || (w->index >= first && w->index <= last))
			continue;
		bool behind = w->index < first;
		bool far = w->index > last + READER_AHEAD;
		if (!needed && !behind && !far)
			continue;
		if (best == NULL || (behind && (best->index > first || w->index < best->index)) ||
		    (!behind && best->index > first && w->index > best->index))
			best = w;
	}
	if (best != NULL)
		window_clear(best);
	return best;
}

static void window_start(struct window *w, uint64_t index)
{
	w->index = index;
	w->state = WINDOW_LOADING;
	w->tries++;
}

/* Queues w's fetch on the pool; called with r->lock held. */
static void window_queue(struct reader *r, struct window *w)
{
	struct fetch_job *j = malloc(sizeof(*j));
	if (j == NULL) {
		w->state = WINDOW_EMPTY; /* read when asked for, then */
		return;
	}
	r->inflight++;
	j->r = r;
	j->w = w;
	j->next = NULL;
	struct fetch_pool *p = r->pool;
	pthread_mutex_lock(&p->lock);
	if (p->tail != NULL)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* A read that is not part of a sequential run: exactly its bytes, fetched
 * here, without the lock (other reads of the file go on meanwhile). */
static int read_random(struct reader *r, uint64_t off, size_t size, reader_reply_fn reply,
                       void *arg, mp_error *err)
{
	r->inflight++;
	pthread_mutex_unlock(&r->lock);
	char *buf = NULL;
	int rc = fetch_range(r, off, size, &buf, err);
	if (rc == 0) {
		struct iovec iov = {buf, size};
		reply(arg, &iov, 1);
		bigbuf_put(buf);
	}
	pthread_mutex_lock(&r->lock);
	r->inflight--;
	pthread_cond_broadcast(&r->cond);
	return rc;
}

int reader_read(struct reader *r, uint64_t off, size_t size, reader_reply_fn reply, void *arg,
                mp_error *err)
{
	pthread_mutex_lock(&r->lock);
	uint64_t fsize = r->node.size;
	if (off >= fsize || size == 0) {
		pthread_mutex_unlock(&r->lock);
		reply(arg, NULL, 0);
		return 0;
	}
	if (size > fsize - off)
		size = (size_t)(fsize - off);
	uint64_t end = off + size;
	uint64_t first = off / READER_WINDOW, last = (end - 1) / READER_WINDOW;
	bool held = window_find(r, first) != NULL;
	if (off == r->next_off || held) {
		r->streak++;
	} else {
		r->streak = 0;
		r->next_off = end;
		int rc = read_random(r, off, size, reply, arg, err);
		pthread_mutex_unlock(&r->lock);
		return rc;
	}
	r->next_off = end;
	int rc = 0;
	for (;;) {
		/* The windows of the read: those missing are fetched here (the
		 * second of a straddling read by the pool meanwhile). */
		struct window *mine = NULL;
		bool waiting = false;
		for (uint64_t i = first; i <= last; i++) {
			struct window *w = window_find(r, i);
			if (w == NULL && (w = window_claim(r, first, last, true)) == NULL) {
				waiting = true;
				break;
			}
			if (w->state == WINDOW_FAILED && w->tries < 2) {
				/* A fetch ahead failed; the reader tries once more. */
				w->state = WINDOW_EMPTY;
				w->tries = 1;
			}
			if (w->state == WINDOW_EMPTY) {
				window_start(w, i);
				if (mine == NULL)
					mine = w;
				else
					window_queue(r, w);
			}
		}
		/* Fetches ahead, deeper with each sequential read in a row. */
		unsigned depth = r->streak < READER_AHEAD - 2 ? r->streak : READER_AHEAD - 2;
		for (uint64_t i = last + 1; !waiting && i <= last + depth; i++) {
			if (i * READER_WINDOW >= fsize)
				break;
			if (window_find(r, i) != NULL)
				continue;
			struct window *w = window_claim(r, first, last, false);
			if (w == NULL)
				break;
			window_start(w, i);
			window_queue(r, w);
		}
		if (mine != NULL) {
			r->inflight++;
			window_load(r, mine);
		}
		bool ready = !waiting;
		for (uint64_t i = first; ready && i <= last; i++) {
			struct window *w = window_find(r, i);
			ready = w != NULL && w->state != WINDOW_LOADING &&
			        (w->state != WINDOW_FAILED || w->tries >= 2);
		}
		if (ready)
			break;
		if (waiting || mine == NULL)
			pthread_cond_wait(&r->cond, &r->lock);
	}
	struct iovec iov[2];
	int cnt = 0;
	for (uint64_t i = first; i <= last; i++) {
		struct window *w = window_find(r, i);
		if (w->state == WINDOW_FAILED) {
			rc = w->rc;
			*err = w->err;
			window_clear(w);
			break;
		}
		uint64_t base = i * READER_WINDOW;
		uint64_t from = off > base ? off - base : 0;
		uint64_t to = end - base < w->len ? end - base : w->len;
		iov[cnt].iov_base = w->buf + from;
		iov[cnt].iov_len = (size_t)(to - from);
		cnt++;
	}
	if (rc == 0)
		reply(arg, iov, cnt);
	pthread_mutex_unlock(&r->lock);
	return rc;
}
