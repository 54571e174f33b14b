/* Garbage collection of superseded origin objects: the trash rows a commit
 * writes, and the pass that deletes them after the retention. See gc.h. */
#include "gc.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "json.h"
#include "log.h"
#include "msg.h"
#include "objstore.h"
#include "primary.h"
#include "proto.h"
#include "txn.h"

/* Trash rows one pass reads at most; the rest wait for the next pass. */
#define GC_PASS_MAX 1000000
/* Failed deletes logged one by one per pass; the rest are summed up. */
#define GC_LOG_FAILURES 5

/* ---- layouts ---- */

typedef int (*extent_fn)(void *arg, const msgpack_object_str *bucket, const msgpack_object_str *key,
                         const msgpack_object_str *etag, uint64_t end);

/* Calls fn for each extent of an encoded layout (node_check_layout has
 * checked it when it was committed). */
static int layout_each(const uint8_t *buf, size_t len, extent_fn fn, void *arg)
{
	if (len == 0)
		return 0;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	int r = 0;
	if (msgpack_unpack_next(&u, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    u.data.type != MSGPACK_OBJECT_ARRAY) {
		msgpack_unpacked_destroy(&u);
		return -EINVAL;
	}
	for (uint32_t i = 0; r == 0 && i < u.data.via.array.size; i++) {
		const msgpack_object *e = &u.data.via.array.ptr[i];
		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 5)
			continue;
		const msgpack_object *f = e->via.array.ptr;
		if (f[0].type != MSGPACK_OBJECT_STR || f[1].type != MSGPACK_OBJECT_STR ||
		    f[2].type != MSGPACK_OBJECT_STR)
			continue;
		uint64_t o = f[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? f[3].via.u64 : 0;
		uint64_t l = f[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? f[4].via.u64 : 0;
		r = fn(arg, &f[0].via.str, &f[1].via.str, &f[2].via.str,
		       o + l < o ? UINT64_MAX : o + l);
	}
	msgpack_unpacked_destroy(&u);
	return r;
}

static bool str_is(const msgpack_object_str *s, const char *c)
{
	size_t n = strlen(c);
	return s->size == n && memcmp(s->ptr, c, n) == 0;
}

/* Well-formed UTF-8 without NUL: what a TEXT column takes. */
static bool utf8_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p++;
		size_t more;
		unsigned min;
		if (c == 0)
			return false;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			more = 1, min = 0x80;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2, min = 0x800;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3, min = 0x10000;
		else
			return false;
		if ((size_t)(end - p) < more)
			return false;
		unsigned v = c & (0x3f >> more);
		for (size_t i = 0; i < more; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			v = v << 6 | (p[i] & 0x3f);
		}
		if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
			return false;
		p += more;
	}
	return true;
}

/* The keys the system writes to (client/lib/transfer.c new_key): mp/ and
 * u/NAME/. Anything else in the origin was imported, not ours to delete.
 * A key the trash table could not hold as text (the client makes hex keys)
 * is left alone rather than let it fail the commit it came with. */
static bool key_is_ours(const char *k, size_t n)
{
	if (!utf8_text(k, n))
		return false;
	if (n > 3 && memcmp(k, "mp/", 3) == 0)
		return true;
	if (n > 2 && memcmp(k, "u/", 2) == 0) {
		const char *slash = memchr(k + 2, '/', n - 2);
		return slash != NULL && slash > k + 2 && (size_t)(slash - k) + 1 < n;
	}
	return false;
}

/* ---- a set of keys ---- */

struct keyset {
	char **slots;
	size_t n, cap;
};

static uint64_t key_hash(const char *k, size_t n)
{
	return hash_bytes(k, n, 0x6763);
}

static void keyset_free(struct keyset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slots[i]);
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

static bool keyset_has(const struct keyset *s, const char *k, size_t n)
{
	if (s->cap == 0)
		return false;
	for (size_t h = key_hash(k, n) & (s->cap - 1);; h = (h + 1) & (s->cap - 1)) {
		const char *e = s->slots[h];
		if (e == NULL)
			return false;
		if (strlen(e) == n && memcmp(e, k, n) == 0)
			return true;
	}
}

/* 1 if added, 0 if present, -ENOMEM. */
static int keyset_add(struct keyset *s, const char *k, size_t n)
{
	if (keyset_has(s, k, n))
		return 0;
	if ((s->n + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		char **slots = calloc(cap, sizeof(*slots));
		if (slots == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++) {
			char *e = s->slots[i];
			if (e == NULL)
				continue;
			size_t h = key_hash(e, strlen(e)) & (cap - 1);
			while (slots[h] != NULL)
				h = (h + 1) & (cap - 1);
			slots[h] = e;
		}
		free(s->slots);
		s->slots = slots;
		s->cap = cap;
	}
	char *copy = strndup(k, n);
	if (copy == NULL)
		return -ENOMEM;
	size_t h = key_hash(k, n) & (s->cap - 1);
	while (s->slots[h] != NULL)
		h = (h + 1) & (s->cap - 1);
	s->slots[h] = copy;
	s->n++;
	return 1;
}

/* ---- the pass's state ---- */

struct gc_settings {
	uint64_t interval_ms;
	uint64_t retention_ms;
	double max_ratio;
	uint64_t max_count;
};

/* What the last passes did; copied out under the lock. */
struct gc_view {
	const char *state; /* "idle", "running", "held" */
	uint64_t would_delete;
	uint64_t live_objects;    /* origin keys referenced, at the last pass */
	uint64_t trashed_at_pass; /* trash rows at the last pass */
	uint64_t deleted_total, deleted_bytes_total, failures_total, referenced_total;
	uint64_t passes;
	int64_t last_pass_ns; /* end of the last pass, 0 = none yet */
	uint64_t last_deleted, last_failed;
	char last_error[800];
	char held_reason[200];
};

struct gc_job {
	struct keyset refs;
	uint64_t live;
	int64_t now;
};

struct gc {
	struct primary *p;
	char *bucket;
	struct store *st;    /* the thread's */
	struct objstore *os; /* the thread's; opened by the first pass */
	char *origin_url, *endpoint, *region, *access_key, *secret_key;
	bool path_style;
	bool curl_inited;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct event *timer_ev, *done_ev;
	/* Event loop only. */
	bool busy;       /* a pass is being prepared or runs */
	bool collecting; /* keys committed now go to rescued */
	struct request_list waiting_next, waiting_current;
	uint64_t reported_deleted, reported_bytes, reported_failures, reported_passes;
	struct metric *m_trash_objects, *m_trash_bytes, *m_deleted, *m_deleted_bytes, *m_failures,
	    *m_held, *m_would_delete, *m_passes, *m_last_pass;
	/* Under lock. */
	struct gc_settings set;
	struct gc_job *job;
	bool job_done;
	bool stop;
	uint64_t confirmed;    /* a held pass the operator let go: its size */
	struct keyset rescued; /* keys a commit named while a pass runs */
	struct gc_view view;
};

static int64_t wall_ns(void)
{
	return primary_now_ns();
}

/* ---- the trash rows of a commit ---- */

void gc_trash_free(struct gc_trash *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free((char *)t->rows[i].bucket);
		free((char *)t->rows[i].key);
		free((char *)t->rows[i].etag);
	}
	free(t->rows);
	free(t->index);
	memset(t, 0, sizeof(*t));
}

static uint64_t row_hash(const char *b, size_t bn, const char *k, size_t kn)
{
	return hash_bytes(k, kn, hash_bytes(b, bn, 0x7472));
}

static int trash_reindex(struct gc_trash *t, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof(*idx));
	if (idx == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		const struct store_trash *r = &t->rows[i];
		size_t h =
		    row_hash(r->bucket, strlen(r->bucket), r->key, strlen(r->key)) & (cap - 1);
		while (idx[h] != 0)
			h = (h + 1) & (cap - 1);
		idx[h] = (uint32_t)(i + 1);
	}
	free(t->index);
	t->index = idx;
	t->capindex = cap;
	return 0;
}

/* Adds or refreshes the row of (bucket, key): one row per object per
 * batch, carrying the latest version that dropped it. */
static int trash_add(struct gc_trash *t, const msgpack_object_str *b, const msgpack_object_str *k,
                     const msgpack_object_str *etag, uint64_t size, uint64_t version, int64_t time)
{
	if ((t->n + 1) * 2 > t->capindex &&
	    trash_reindex(t, t->capindex ? t->capindex * 2 : 16) < 0)
		return -ENOMEM;
	size_t h = row_hash(b->ptr, b->size, k->ptr, k->size) & (t->capindex - 1);
	for (; t->index[h] != 0; h = (h + 1) & (t->capindex - 1)) {
		struct store_trash *r = &t->rows[t->index[h] - 1];
		if (str_is(b, r->bucket) && str_is(k, r->key)) {
			r->version = version;
			r->time = time;
			if (size > r->size)
				r->size = size;
			return 0;
		}
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct store_trash *rows = realloc(t->rows, cap * sizeof(*rows));
		if (rows == NULL)
			return -ENOMEM;
		t->rows = rows;
		t->cap = cap;
	}
	struct store_trash *r = &t->rows[t->n];
	r->bucket = strndup(b->ptr, b->size);
	r->key = strndup(k->ptr, k->size);
	r->etag = utf8_text(etag->ptr, etag->size) ? strndup(etag->ptr, etag->size) : strdup("");
	if (r->bucket == NULL || r->key == NULL || r->etag == NULL) {
		free((char *)r->bucket);
		free((char *)r->key);
		free((char *)r->etag);
		return -ENOMEM;
	}
	r->size = size;
	r->version = version;
	r->time = time;
	t->index[h] = (uint32_t)(++t->n);
	return 0;
}

struct note_ctx {
	struct gc *g;
	const struct node_rec *now; /* the inode's layout after the txn, or NULL */
	struct gc_trash *out;
	uint64_t version;
	int64_t time;
	const msgpack_object_str *want_key; /* find_cb: the key looked for */
	bool found;
};

static int find_cb(void *arg, const msgpack_object_str *bucket, const msgpack_object_str *key,
                   const msgpack_object_str *etag, uint64_t end)
{
	(void)etag;
	(void)end;
	struct note_ctx *n = arg;
	if (str_is(bucket, n->g->bucket) && key->size == n->want_key->size &&
	    memcmp(key->ptr, n->want_key->ptr, key->size) == 0) {
		n->found = true;
		return 1; /* stop */
	}
	return 0;
}

static int old_extent_cb(void *arg, const msgpack_object_str *bucket, const msgpack_object_str *key,
                         const msgpack_object_str *etag, uint64_t end)
{
	struct note_ctx *n = arg;
	if (!str_is(bucket, n->g->bucket) || !key_is_ours(key->ptr, key->size))
		return 0;
	if (n->now != NULL) {
		n->want_key = key;
		n->found = false;
		layout_each(n->now->extra, n->now->extra_len, find_cb, n);
		if (n->found)
			return 0; /* still in the file's layout */
	}
	return trash_add(n->out, bucket, key, etag, end, n->version, n->time);
}

static int rescue_cb(void *arg, const msgpack_object_str *bucket, const msgpack_object_str *key,
                     const msgpack_object_str *etag, uint64_t end)
{
	(void)etag;
	(void)end;
	struct gc *g = arg;
	if (!str_is(bucket, g->bucket))
		return 0;
	pthread_mutex_lock(&g->lock);
	int r = keyset_add(&g->rescued, key->ptr, key->size);
	pthread_mutex_unlock(&g->lock);
	return r < 0 ? r : 0;
}

int gc_note_txn(struct gc *g, const struct txn *t, uint64_t version, int64_t time,
                struct gc_trash *out)
{
	if (g == NULL)
		return 0;
	for (size_t i = 0; i < txn_touched_count(t); i++) {
		const struct node_rec *before = txn_touched_before(t, i);
		struct node_rec now;
		bool has_now = namespace_get(g->p->ns, txn_touched_ino(t, i), &now) == 0 &&
		               now.type == NODE_FILE;
		/* A pass between its snapshot of the references and its deletes
		 * must not delete what a layout committed meanwhile names. */
		if (has_now && g->collecting) {
			int r = layout_each(now.extra, now.extra_len, rescue_cb, g);
			if (r < 0)
				return r;
		}
		if (before == NULL || before->type != NODE_FILE || before->extra_len == 0)
			continue;
		struct note_ctx n = {.g = g,
		                     .now = has_now ? &now : NULL,
		                     .out = out,
		                     .version = version,
		                     .time = time};
		int r = layout_each(before->extra, before->extra_len, old_extent_cb, &n);
		if (r < 0)
			return r == -EINVAL ? 0 : r;
	}
	return 0;
}

/* ---- the pass (its own thread) ---- */

struct due {
	char *key;
	uint64_t size;
	int64_t time;
	bool referenced; /* by a node: the row goes, the object stays */
};

struct due_list {
	struct due *v;
	size_t n, cap;
	const char *bucket;
	int err;
};

static int collect_cb(void *arg, const struct store_trash *t)
{
	struct due_list *d = arg;
	if (strcmp(t->bucket, d->bucket) != 0)
		return 0; /* another alias's trash: not this origin's to delete */
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 256;
		struct due *v = realloc(d->v, cap * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	char *k = strdup(t->key);
	if (k == NULL)
		return -ENOMEM;
	d->v[d->n++] = (struct due){k, t->size, t->time, false};
	return 0;
}

static void due_free(struct due_list *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].key);
	free(d->v);
}

/* Trash rows to remove, written in transactions of REMOVE_BATCH rows: one
 * commit (and fsync) per object would compete with the committer. */
#define REMOVE_BATCH 256

struct removals {
	struct store_trash *v;
	size_t n;
	bool failed;
};

static void removals_flush(struct gc *g, struct removals *rm)
{
	if (rm->n == 0)
		return;
	/* A deleted object whose row stays is deleted again next pass, which
	 * succeeds on a missing key: nothing is lost. */
	if (store_trash_remove(g->st, rm->v, rm->n) < 0)
		log_warn(
		    "gc: removing %zu rows from the trash list: %s; they are retried next pass",
		    rm->n, store_error(g->st));
	rm->n = 0;
}

static void removals_add(struct gc *g, struct removals *rm, const struct due *e)
{
	if (rm->v == NULL) {
		rm->v = calloc(REMOVE_BATCH, sizeof(*rm->v));
		if (rm->v == NULL) {
			if (!rm->failed)
				log_warn("gc: out of memory: trash rows stay until the next pass");
			rm->failed = true;
			return;
		}
	}
	rm->v[rm->n++] = (struct store_trash){.bucket = g->bucket, .key = e->key, .time = e->time};
	if (rm->n == REMOVE_BATCH)
		removals_flush(g, rm);
}

static void pass_error(struct gc *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pass_error(struct gc *g, const char *fmt, ...)
{
	char msg[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("gc: %s", msg);
	pthread_mutex_lock(&g->lock);
	snprintf(g->view.last_error, sizeof(g->view.last_error), "%s", msg);
	pthread_mutex_unlock(&g->lock);
}

static bool rescued(struct gc *g, const char *key)
{
	pthread_mutex_lock(&g->lock);
	bool r = keyset_has(&g->rescued, key, strlen(key));
	pthread_mutex_unlock(&g->lock);
	return r;
}

static void run_pass(struct gc *g, struct gc_job *j)
{
	pthread_mutex_lock(&g->lock);
	struct gc_settings set = g->set;
	uint64_t confirmed = g->confirmed;
	g->view.state = "running";
	pthread_mutex_unlock(&g->lock);

	int64_t ret_ns = set.retention_ms > (uint64_t)INT64_MAX / 1000000
	                     ? INT64_MAX
	                     : (int64_t)set.retention_ms * 1000000;
	int64_t before = j->now - ret_ns;
	if (g->os == NULL) {
		struct objstore_options opt = {
		    .endpoint = g->endpoint,
		    .region = g->region,
		    .access_key = g->access_key,
		    .secret_key = g->secret_key,
		    .path_style = g->path_style,
		};
		struct objstore_error oe = {0};
		if (objstore_open(g->origin_url, &opt, &g->os, &oe) < 0) {
			pass_error(g, "cannot open the origin %s: %s; retrying next pass",
			           g->origin_url, oe.message);
			g->os = NULL;
			pthread_mutex_lock(&g->lock);
			g->view.state = "idle";
			g->view.failures_total++;
			pthread_mutex_unlock(&g->lock);
			return;
		}
	}
	struct due_list d = {.bucket = g->bucket};
	uint64_t trashed = 0, bytes = 0;
	int r = store_trash_list(g->st, before, GC_PASS_MAX, collect_cb, &d);
	if (r == 0)
		r = store_trash_stats(g->st, &trashed, &bytes);
	if (r < 0) {
		pass_error(g, "reading the trash list: %s; retrying next pass", store_error(g->st));
		due_free(&d);
		pthread_mutex_lock(&g->lock);
		g->view.state = "idle";
		g->view.failures_total++;
		g->view.last_failed = 0;
		pthread_mutex_unlock(&g->lock);
		return;
	}

	/* A trashed object some node still names (an import of it, a copy of
	 * the layout) is not garbage: its row goes, the object stays. */
	struct removals rm = {0};
	uint64_t referenced = 0;
	for (size_t i = 0; i < d.n; i++) {
		struct due *e = &d.v[i];
		if (keyset_has(&j->refs, e->key, strlen(e->key)) || rescued(g, e->key)) {
			e->referenced = true;
			removals_add(g, &rm, e);
			referenced++;
		}
	}
	removals_flush(g, &rm);
	uint64_t would = d.n - referenced;

	uint64_t total = j->live + trashed;
	bool over_count = would > set.max_count;
	bool over_ratio = would > 0 && (double)would > set.max_ratio * (double)total;
	if ((over_count || over_ratio) && !(confirmed > 0 && would <= confirmed)) {
		char why[200];
		if (over_count)
			snprintf(why, sizeof(why),
			         "%llu objects is more than gc.max_delete_count %llu",
			         (unsigned long long)would, (unsigned long long)set.max_count);
		else
			snprintf(why, sizeof(why),
			         "%llu of %llu origin objects (%.1f%%) is more than "
			         "gc.max_delete_ratio %g",
			         (unsigned long long)would, (unsigned long long)total,
			         100.0 * (double)would / (double)(total ? total : 1),
			         set.max_ratio);
		log_warn("gc: breaker: the pass would delete %s; holding it, nothing deleted "
		         "(run 'mp gc --confirm' to let it go once)",
		         why);
		pthread_mutex_lock(&g->lock);
		g->view.state = "held";
		g->view.would_delete = would;
		g->view.live_objects = j->live;
		g->view.trashed_at_pass = trashed;
		g->view.referenced_total += referenced;
		g->view.passes++;
		g->view.last_pass_ns = wall_ns();
		g->view.last_deleted = g->view.last_failed = 0;
		snprintf(g->view.held_reason, sizeof(g->view.held_reason), "%s", why);
		pthread_mutex_unlock(&g->lock);
		free(rm.v);
		due_free(&d);
		return;
	}

	uint64_t deleted = 0, deleted_bytes = 0, failed = 0;
	for (size_t i = 0; i < d.n; i++) {
		pthread_mutex_lock(&g->lock);
		bool stop = g->stop;
		pthread_mutex_unlock(&g->lock);
		if (stop)
			break;
		struct due *e = &d.v[i];
		if (e->referenced || rescued(g, e->key))
			continue;
		struct objstore_error oe = {0};
		r = objstore_delete(g->os, e->key, &oe);
		if (r == -ENOENT)
			r = 0; /* already gone: done */
		if (r < 0) {
			failed++;
			if (failed <= GC_LOG_FAILURES)
				log_warn(
				    "gc: deleting '%s' from the origin failed (%s); retrying next "
				    "pass",
				    e->key, oe.message[0] ? oe.message : strerror(-r));
			pthread_mutex_lock(&g->lock);
			snprintf(g->view.last_error, sizeof(g->view.last_error),
			         "deleting '%.200s': %.500s", e->key,
			         oe.message[0] ? oe.message : strerror(-r));
			pthread_mutex_unlock(&g->lock);
			continue;
		}
		deleted++;
		deleted_bytes += e->size;
		removals_add(g, &rm, e);
	}
	removals_flush(g, &rm);
	free(rm.v);
	if (failed > GC_LOG_FAILURES)
		log_warn("gc: %llu deletes failed in this pass", (unsigned long long)failed);
	if (deleted > 0 || failed > 0)
		log_info("gc: deleted %llu objects (%llu bytes) from the origin, %llu failed",
		         (unsigned long long)deleted, (unsigned long long)deleted_bytes,
		         (unsigned long long)failed);
	pthread_mutex_lock(&g->lock);
	g->confirmed = 0; /* a confirmation lets one pass go */
	g->view.state = "idle";
	g->view.would_delete = 0;
	g->view.held_reason[0] = '\0';
	g->view.live_objects = j->live;
	g->view.trashed_at_pass = trashed;
	g->view.deleted_total += deleted;
	g->view.deleted_bytes_total += deleted_bytes;
	g->view.failures_total += failed;
	g->view.referenced_total += referenced;
	g->view.passes++;
	g->view.last_pass_ns = wall_ns();
	g->view.last_deleted = deleted;
	g->view.last_failed = failed;
	if (failed == 0)
		g->view.last_error[0] = '\0';
	pthread_mutex_unlock(&g->lock);
	due_free(&d);
}

static void *gc_thread(void *arg)
{
	struct gc *g = arg;
	pthread_mutex_lock(&g->lock);
	for (;;) {
		while (!g->stop && g->job == NULL)
			pthread_cond_wait(&g->cond, &g->lock);
		if (g->stop)
			break;
		struct gc_job *j = g->job;
		pthread_mutex_unlock(&g->lock);
		run_pass(g, j);
		pthread_mutex_lock(&g->lock);
		g->job = NULL;
		g->job_done = true;
		keyset_free(&j->refs);
		free(j);
		event_active(g->done_ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* ---- the event loop's side ---- */

static int ref_extent_cb(void *arg, const msgpack_object_str *bucket, const msgpack_object_str *key,
                         const msgpack_object_str *etag, uint64_t end)
{
	(void)etag;
	(void)end;
	struct gc_job *j = ((void **)arg)[0];
	struct gc *g = ((void **)arg)[1];
	if (!str_is(bucket, g->bucket))
		return 0;
	int r = keyset_add(&j->refs, key->ptr, key->size);
	return r < 0 ? r : 0;
}

static int ref_node_cb(void *arg, const struct node_rec *rec)
{
	if (rec->type != NODE_FILE || rec->extra_len == 0)
		return 0;
	int r = layout_each(rec->extra, rec->extra_len, ref_extent_cb, arg);
	return r == -EINVAL ? 0 : r;
}

static void gc_kick(struct gc *g);

/* The namespace equals the durable state: snapshot the references. */
static void start_pass(void *arg)
{
	struct gc *g = arg;
	struct gc_job *j = calloc(1, sizeof(*j));
	void *ctx[2] = {j, g};
	if (j == NULL || namespace_foreach(g->p->ns, ref_node_cb, ctx) < 0) {
		log_error("gc: out of memory collecting the referenced objects; pass skipped");
		if (j != NULL)
			keyset_free(&j->refs);
		free(j);
		g->busy = false;
		struct request *r;
		while ((r = TAILQ_FIRST(&g->waiting_next)) != NULL) {
			TAILQ_REMOVE(&g->waiting_next, r, entry);
			conn_send_error(r->c, r->id, -ENOMEM, "GC: out of memory starting a pass");
			request_free(r);
		}
		return;
	}
	j->live = j->refs.n;
	j->now = wall_ns();
	TAILQ_CONCAT(&g->waiting_current, &g->waiting_next, entry);
	g->collecting = true;
	pthread_mutex_lock(&g->lock);
	g->job = j;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void gc_kick(struct gc *g)
{
	if (g->busy)
		return; /* waiters of the next pass are started when it ends */
	g->busy = true;
	committer_when_idle(g->p->committer, start_pass, g);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	gc_kick(arg);
}

static void arm_timer(struct gc *g)
{
	pthread_mutex_lock(&g->lock);
	uint64_t ms = g->set.interval_ms;
	pthread_mutex_unlock(&g->lock);
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(g->timer_ev, &tv);
}

static struct gc_view view_copy(struct gc *g)
{
	pthread_mutex_lock(&g->lock);
	struct gc_view v = g->view;
	pthread_mutex_unlock(&g->lock);
	if (g->busy && strcmp(v.state, "held") != 0)
		v.state = "running";
	return v;
}

static void reply_status(struct gc *g, struct request *r);

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct gc *g = arg;
	pthread_mutex_lock(&g->lock);
	bool done = g->job_done;
	g->job_done = false;
	keyset_free(&g->rescued);
	pthread_mutex_unlock(&g->lock);
	if (!done)
		return;
	g->busy = false;
	g->collecting = false;
	gc_update_metrics(g);
	struct request *r;
	while ((r = TAILQ_FIRST(&g->waiting_current)) != NULL) {
		TAILQ_REMOVE(&g->waiting_current, r, entry);
		reply_status(g, r);
		request_free(r);
	}
	if (!TAILQ_EMPTY(&g->waiting_next))
		gc_kick(g);
}

static void persist_cb(evutil_socket_t fd, short what, void *arg)
{
	timer_cb(fd, what, arg);
	arm_timer(arg);
}

void gc_configure(struct gc *g)
{
	if (g == NULL)
		return;
	const struct primary_config *cfg = &g->p->cfg;
	struct gc_settings s = {
	    .interval_ms = cfg->gc_interval_ms,
	    .retention_ms = cfg->gc_retention_ms,
	    .max_ratio = strtod(cfg->gc_max_delete_ratio, NULL),
	    .max_count = cfg->gc_max_delete_count,
	};
	pthread_mutex_lock(&g->lock);
	bool interval_changed = s.interval_ms != g->set.interval_ms;
	g->set = s;
	pthread_mutex_unlock(&g->lock);
	if (interval_changed && g->timer_ev != NULL) {
		evtimer_del(g->timer_ev);
		arm_timer(g);
	}
}

static void register_metrics(struct gc *g)
{
	struct metrics *m = g->p->metrics;
	g->m_trash_objects =
	    metrics_gauge(m, "mp_primary_gc_trash_objects", "Origin objects on the trash list");
	g->m_trash_bytes =
	    metrics_gauge(m, "mp_primary_gc_trash_bytes", "Bytes of the objects on the trash list");
	g->m_deleted = metrics_counter(m, "mp_primary_gc_deleted_objects_total",
	                               "Objects garbage collection deleted from the origin");
	g->m_deleted_bytes = metrics_counter(m, "mp_primary_gc_deleted_bytes_total",
	                                     "Bytes garbage collection deleted from the origin");
	g->m_failures = metrics_counter(m, "mp_primary_gc_failures_total",
	                                "Deletes (or trash reads) that failed; retried next pass");
	g->m_held = metrics_gauge(m, "mp_primary_gc_breaker_held",
	                          "1 while the breaker holds a pass that would delete too much");
	g->m_would_delete =
	    metrics_gauge(m, "mp_primary_gc_would_delete", "Objects the held pass would delete");
	g->m_passes = metrics_counter(m, "mp_primary_gc_passes_total", "GC passes run");
	g->m_last_pass = metrics_gauge(m, "mp_primary_gc_last_pass_timestamp_seconds",
	                               "When the last GC pass ended");
}

/* The loop's store connection answers the trash totals: they change with
 * every commit, not only with passes. */
static void trash_totals(struct gc *g, uint64_t *count, uint64_t *bytes)
{
	*count = *bytes = 0;
	if (store_trash_stats(g->p->reader, count, bytes) < 0)
		log_warn("gc: counting the trash list: %s", store_error(g->p->reader));
}

void gc_update_metrics(struct gc *g)
{
	if (g == NULL)
		return;
	struct gc_view v = view_copy(g);
	uint64_t count, bytes;
	trash_totals(g, &count, &bytes);
	metric_set(g->m_trash_objects, (double)count);
	metric_set(g->m_trash_bytes, (double)bytes);
	metric_add(g->m_deleted, (double)(v.deleted_total - g->reported_deleted));
	metric_add(g->m_deleted_bytes, (double)(v.deleted_bytes_total - g->reported_bytes));
	metric_add(g->m_failures, (double)(v.failures_total - g->reported_failures));
	metric_add(g->m_passes, (double)(v.passes - g->reported_passes));
	g->reported_deleted = v.deleted_total;
	g->reported_bytes = v.deleted_bytes_total;
	g->reported_failures = v.failures_total;
	g->reported_passes = v.passes;
	metric_set(g->m_held, strcmp(v.state, "held") == 0 ? 1 : 0);
	metric_set(g->m_would_delete, (double)v.would_delete);
	metric_set(g->m_last_pass, (double)v.last_pass_ns / 1e9);
}

static int dup_opt(char **out, const char *v)
{
	*out = NULL;
	if (v == NULL)
		return 0;
	*out = strdup(v);
	return *out == NULL ? -ENOMEM : 0;
}

static const char *env_or(const char *value, const char *name)
{
	if (value != NULL && value[0] != '\0')
		return value;
	const char *e = getenv(name);
	return e != NULL && e[0] != '\0' ? e : NULL;
}

struct gc *gc_new(struct primary *p, const char *store_url, char **ret_err)
{
	struct gc *g = calloc(1, sizeof(*g));
	if (g == NULL)
		return NULL;
	g->p = p;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	TAILQ_INIT(&g->waiting_next);
	TAILQ_INIT(&g->waiting_current);
	g->view.state = "idle";
	g->bucket = strdup(p->cfg.gc_bucket ? p->cfg.gc_bucket : "origin");
	char *err = NULL;
	if (g->bucket == NULL)
		goto nomem;
	if (store_open(store_url, &g->st, &err) < 0 ||
	    store_init(g->st, p->cluster_id, &(struct store_meta){0}) < 0) {
		if (asprintf(ret_err, "gc: store: %s", err ? err : store_error(g->st)) < 0)
			*ret_err = NULL;
		free(err);
		goto fail;
	}
	if (strncmp(p->origin, "s3://", 5) == 0) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			if (asprintf(ret_err, "gc: curl_global_init failed") < 0)
				*ret_err = NULL;
			goto fail;
		}
		g->curl_inited = true;
	}
	/* As the client does (client/lib/buckets.c), the AWS_* variables stand
	 * in for settings the file leaves out, so keys need not be in it. The
	 * origin is opened by the first pass: one that cannot be reached now
	 * must not keep the namespace from being served. */
	const struct primary_config *cfg = &p->cfg;
	const char *ak = env_or(cfg->gc_s3_access_key, "AWS_ACCESS_KEY_ID");
	const char *sk = env_or(cfg->gc_s3_secret_key, "AWS_SECRET_ACCESS_KEY");
	if ((ak == NULL) != (sk == NULL))
		ak = sk = NULL;
	if (dup_opt(&g->origin_url, p->origin) < 0 ||
	    dup_opt(&g->endpoint, env_or(cfg->gc_s3_endpoint, "AWS_ENDPOINT_URL")) < 0 ||
	    dup_opt(&g->region, env_or(cfg->gc_s3_region, "AWS_REGION")) < 0 ||
	    dup_opt(&g->access_key, ak) < 0 || dup_opt(&g->secret_key, sk) < 0)
		goto nomem;
	g->path_style = cfg->gc_s3_path_style;
	g->timer_ev = evtimer_new(p->base, persist_cb, g);
	g->done_ev = event_new(p->base, -1, 0, done_cb, g);
	if (g->timer_ev == NULL || g->done_ev == NULL)
		goto nomem;
	gc_configure(g);
	register_metrics(g);
	if (pthread_create(&g->thread, NULL, gc_thread, g) != 0) {
		if (asprintf(ret_err, "gc: cannot start its thread") < 0)
			*ret_err = NULL;
		goto fail;
	}
	g->thread_started = true;
	arm_timer(g);
	return g;
nomem:
	if (asprintf(ret_err, "gc: out of memory") < 0)
		*ret_err = NULL;
fail:
	gc_free(g);
	return NULL;
}

void gc_free(struct gc *g)
{
	if (g == NULL)
		return;
	if (g->thread_started) {
		pthread_mutex_lock(&g->lock);
		g->stop = true;
		pthread_cond_signal(&g->cond);
		pthread_mutex_unlock(&g->lock);
		pthread_join(g->thread, NULL);
	}
	if (g->job != NULL) {
		keyset_free(&g->job->refs);
		free(g->job);
	}
	struct request *r;
	while ((r = TAILQ_FIRST(&g->waiting_current)) != NULL) {
		TAILQ_REMOVE(&g->waiting_current, r, entry);
		request_free(r);
	}
	while ((r = TAILQ_FIRST(&g->waiting_next)) != NULL) {
		TAILQ_REMOVE(&g->waiting_next, r, entry);
		request_free(r);
	}
	if (g->timer_ev)
		event_free(g->timer_ev);
	if (g->done_ev)
		event_free(g->done_ev);
	keyset_free(&g->rescued);
	objstore_free(g->os);
	store_close(g->st);
	if (g->curl_inited)
		curl_global_cleanup();
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	free(g->bucket);
	free(g->origin_url);
	free(g->endpoint);
	free(g->region);
	free(g->access_key);
	if (g->secret_key != NULL)
		explicit_bzero(g->secret_key, strlen(g->secret_key));
	free(g->secret_key);
	free(g);
}

/* ---- status and the MT_GC request ---- */

struct gc_field {
	const char *key;
	enum { F_STR, F_UINT, F_INT, F_DOUBLE } type;
	const char *s;
	uint64_t u;
	int64_t i;
	double d;
};

#define GC_NFIELDS 19

/* Fills f from *v (which the caller keeps while f is used). */
static size_t gc_fields(struct gc *g, struct gc_view *vp, struct gc_field f[GC_NFIELDS])
{
	*vp = view_copy(g);
	const struct gc_view *pv = vp;
	const struct gc_view v = *vp;
	uint64_t count, bytes;
	trash_totals(g, &count, &bytes);
	pthread_mutex_lock(&g->lock);
	struct gc_settings s = g->set;
	pthread_mutex_unlock(&g->lock);
	size_t n = 0;
	f[n++] = (struct gc_field){.key = "state", .type = F_STR, .s = v.state};
	f[n++] = (struct gc_field){.key = "would_delete", .type = F_UINT, .u = v.would_delete};
	f[n++] = (struct gc_field){.key = "held_reason", .type = F_STR, .s = pv->held_reason};
	f[n++] = (struct gc_field){.key = "bucket", .type = F_STR, .s = g->bucket};
	f[n++] = (struct gc_field){.key = "trash_objects", .type = F_UINT, .u = count};
	f[n++] = (struct gc_field){.key = "trash_bytes", .type = F_UINT, .u = bytes};
	f[n++] = (struct gc_field){.key = "live_objects", .type = F_UINT, .u = v.live_objects};
	f[n++] = (struct gc_field){.key = "deleted_total", .type = F_UINT, .u = v.deleted_total};
	f[n++] = (struct gc_field){
	    .key = "deleted_bytes_total", .type = F_UINT, .u = v.deleted_bytes_total};
	f[n++] = (struct gc_field){.key = "failures_total", .type = F_UINT, .u = v.failures_total};
	f[n++] =
	    (struct gc_field){.key = "referenced_total", .type = F_UINT, .u = v.referenced_total};
	f[n++] = (struct gc_field){.key = "passes", .type = F_UINT, .u = v.passes};
	f[n++] = (struct gc_field){.key = "last_pass_time_ns", .type = F_INT, .i = v.last_pass_ns};
	f[n++] = (struct gc_field){.key = "last_pass_deleted", .type = F_UINT, .u = v.last_deleted};
	f[n++] = (struct gc_field){.key = "last_pass_failed", .type = F_UINT, .u = v.last_failed};
	f[n++] = (struct gc_field){.key = "last_error", .type = F_STR, .s = pv->last_error};
	f[n++] = (struct gc_field){.key = "retention_ms", .type = F_UINT, .u = s.retention_ms};
	f[n++] = (struct gc_field){.key = "max_delete_ratio", .type = F_DOUBLE, .d = s.max_ratio};
	f[n++] = (struct gc_field){.key = "max_delete_count", .type = F_UINT, .u = s.max_count};
	return n;
}

void gc_write_status(struct gc *g, struct json_writer *w)
{
	if (g == NULL) {
		json_null(w);
		return;
	}
	struct gc_field f[GC_NFIELDS];
	struct gc_view v;
	size_t n = gc_fields(g, &v, f);
	json_begin_object(w);
	for (size_t i = 0; i < n; i++) {
		json_key(w, f[i].key);
		switch (f[i].type) {
		case F_STR:
			json_string(w, f[i].s);
			break;
		case F_UINT:
			json_uint(w, f[i].u);
			break;
		case F_INT:
			json_int(w, f[i].i);
			break;
		case F_DOUBLE:
			json_double(w, f[i].d);
			break;
		}
	}
	json_end_object(w);
}

static void reply_status(struct gc *g, struct request *r)
{
	struct gc_field f[GC_NFIELDS];
	struct gc_view v;
	size_t n = gc_fields(g, &v, f);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, r->id, (uint32_t)n + 1);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, g->p->version);
	for (size_t i = 0; i < n; i++) {
		msg_pack_key(&pk, f[i].key);
		switch (f[i].type) {
		case F_STR:
			msgpack_pack_str(&pk, strlen(f[i].s));
			msgpack_pack_str_body(&pk, f[i].s, strlen(f[i].s));
			break;
		case F_UINT:
			msgpack_pack_uint64(&pk, f[i].u);
			break;
		case F_INT:
			msgpack_pack_int64(&pk, f[i].i);
			break;
		case F_DOUBLE:
			msgpack_pack_double(&pk, f[i].d);
			break;
		}
	}
	msg_end(&sb);
	conn_send(r->c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

void gc_request(struct gc *g, struct conn *c, struct request *r)
{
	const char *action;
	size_t len;
	char err[200];
	int rc =
	    msg_get_bytes(r->frame.body, "action", true, 1, 16, &action, &len, err, sizeof(err));
	if (rc < 0) {
		conn_send_error(c, r->id, rc, "GC: %s", err);
		goto done;
	}
	bool status = len == 6 && memcmp(action, "status", 6) == 0;
	bool run = len == 3 && memcmp(action, "run", 3) == 0;
	bool confirm = len == 7 && memcmp(action, "confirm", 7) == 0;
	if (!status && !run && !confirm) {
		conn_send_error(c, r->id, -EINVAL,
		                "GC: field 'action': '%.*s' is not status, run or confirm",
		                (int)len, action);
		goto done;
	}
	if (status) {
		reply_status(g, r);
		goto done;
	}
	/* Deleting is for whoever may write the whole namespace. */
	if (!conn_may_write_path(c, "/", 1)) {
		conn_send_error(c, r->id, -EACCES,
		                "GC: the token of '%s' may not run or confirm "
		                "garbage collection (it needs write access to /)",
		                c->claims.name);
		goto done;
	}
	if (confirm) {
		pthread_mutex_lock(&g->lock);
		bool held = strcmp(g->view.state, "held") == 0;
		if (held)
			g->confirmed = g->view.would_delete;
		uint64_t n = g->view.would_delete;
		pthread_mutex_unlock(&g->lock);
		if (!held) {
			conn_send_error(c, r->id, -EINVAL,
			                "GC: the breaker holds no pass: nothing to confirm");
			goto done;
		}
		log_warn("gc: an operator (%s) confirmed the held pass of %llu deletions",
		         c->open_access ? c->peer : c->claims.name, (unsigned long long)n);
	}
	TAILQ_INSERT_TAIL(&g->waiting_next, r, entry);
	gc_kick(g);
	return;
done:
	request_free(r);
}
