/* The table of warmup runs and the worker that executes them: see
 * warmrun.h and warmup.h. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grant.h"
#include "hash.h"
#include "hrw.h"
#include "internal.h" /* the client library's channels, as replication uses its buckets */
#include "log.h"
#include "msg.h"
#include "proto.h"
#include "warmrun.h"

#define BATCH_BLOCKS     4  /* blocks per CACHE_WARM: progress is seen per batch */
#define LIST_BLOCKS      64 /* per CACHE_HAS and CACHE_EVICT (no fills behind them) */
#define HELPERS_MAX      16
#define PASSES_MAX       6 /* warm passes before a run with failing blocks fails */
#define WARM_GRANT_TTL_S 3600
#define CHANNELS_KEPT    16

const char *const warmrun_state_names[4] = {"queued", "running", "done", "failed"};

int64_t warmrun_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the table ---- */

const char warmrun_schema[] =
    "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, "
    "trig TEXT NOT NULL, kind INTEGER NOT NULL, version INTEGER NOT NULL, commit_ns INTEGER, "
    "created_ns INTEGER, finished_ns INTEGER, state INTEGER NOT NULL, files INTEGER, "
    "deadline_ms INTEGER, concurrency INTEGER, bandwidth INTEGER, priority INTEGER, "
    "evict_previous INTEGER, tag TEXT, error TEXT);"
    "CREATE INDEX IF NOT EXISTS runs_tag ON runs (tag);"
    "CREATE TABLE IF NOT EXISTS objs (run INTEGER NOT NULL, seq INTEGER NOT NULL, file INTEGER, "
    "bucket TEXT, key TEXT, etag TEXT, off INTEGER, len INTEGER, size INTEGER, warm INTEGER, "
    "done INTEGER, PRIMARY KEY (run, seq));"
    "CREATE TABLE IF NOT EXISTS warmed (pipeline TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT "
    "NOT NULL, etag TEXT NOT NULL, size INTEGER, PRIMARY KEY (pipeline, bucket, key, etag));";

int warmrun_db_exec(struct warmup *w, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(w->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		log_warn("warmup: %.60s: %s", sql, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

sqlite3_stmt *warmrun_db_prepare(struct warmup *w, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(w->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_warn("warmup: cannot prepare %.60s: %s", sql, sqlite3_errmsg(w->db));
		return NULL;
	}
	return st;
}

const char *warmrun_col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? (const char *)t : "";
}

/* Inserts the run and its objects; sets run->id. */
int warmrun_db_insert(struct warmup *w, struct wrun *run, const char *tag)
{
	pthread_mutex_lock(&w->db_lock);
	warmrun_db_exec(w, "BEGIN");
	sqlite3_stmt *st = warmrun_db_prepare(
	    w, "INSERT INTO runs (pipeline, trig, kind, version, commit_ns, created_ns, state, "
	       "files, deadline_ms, concurrency, bandwidth, priority, evict_previous, tag, error) "
	       "VALUES (?,?,?,?,?,?,0,?,?,?,?,?,?,?,'')");
	int rc = -EIO;
	if (st != NULL) {
		sqlite3_bind_text(st, 1, run->pipeline, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, run->trigger, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, run->kind);
		sqlite3_bind_int64(st, 4, (int64_t)run->version);
		sqlite3_bind_int64(st, 5, run->commit_ns);
		sqlite3_bind_int64(st, 6, run->created_ns);
		sqlite3_bind_int64(st, 7, (int64_t)run->files);
		sqlite3_bind_int64(st, 8, (int64_t)run->deadline_ms);
		sqlite3_bind_int64(st, 9, (int64_t)run->concurrency);
		sqlite3_bind_int64(st, 10, (int64_t)run->bandwidth);
		sqlite3_bind_int64(st, 11, (int64_t)run->priority);
		sqlite3_bind_int(st, 12, run->evict_previous);
		sqlite3_bind_text(st, 13, tag ? tag : "", -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE) {
			run->id = sqlite3_last_insert_rowid(w->db);
			rc = 0;
		}
	}
	sqlite3_finalize(st);
	st = warmrun_db_prepare(w, "INSERT INTO objs VALUES (?,?,?,?,?,?,?,?,?,?,0)");
	for (size_t i = 0; rc == 0 && st != NULL && i < run->nobjs; i++) {
		const struct wobj *o = &run->objs[i];
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, run->id);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_int64(st, 3, o->file);
		sqlite3_bind_text(st, 4, o->bucket, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, o->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, o->etag, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 7, (int64_t)o->offset);
		sqlite3_bind_int64(st, 8, (int64_t)o->length);
		sqlite3_bind_int64(st, 9, (int64_t)o->size);
		sqlite3_bind_int(st, 10, o->warm);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = -EIO;
	}
	sqlite3_finalize(st);
	warmrun_db_exec(w, rc == 0 ? "COMMIT" : "ROLLBACK");
	pthread_mutex_unlock(&w->db_lock);
	return rc;
}

static void db_run_state(struct warmup *w, const struct wrun *run)
{
	pthread_mutex_lock(&w->db_lock);
	sqlite3_stmt *st = warmrun_db_prepare(
	    w, "UPDATE runs SET state = ?, finished_ns = ?, error = ? WHERE id = ?");
	if (st != NULL) {
		sqlite3_bind_int(st, 1, run->state);
		sqlite3_bind_int64(st, 2, run->finished_ns);
		sqlite3_bind_text(st, 3, run->error, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, run->id);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&w->db_lock);
}

static void db_objs_done(struct warmup *w, const struct wrun *run, const uint32_t *seqs, size_t n)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&w->db_lock);
	warmrun_db_exec(w, "BEGIN");
	sqlite3_stmt *st =
	    warmrun_db_prepare(w, "UPDATE objs SET done = 1 WHERE run = ? AND seq = ?");
	for (size_t i = 0; st != NULL && i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, run->id);
		sqlite3_bind_int64(st, 2, seqs[i]);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	warmrun_db_exec(w, "COMMIT");
	pthread_mutex_unlock(&w->db_lock);
}

/* ---- runs ---- */

void warmrun_free(struct wrun *run)
{
	if (run == NULL)
		return;
	for (size_t i = 0; i < run->nobjs; i++) {
		free(run->objs[i].bucket);
		free(run->objs[i].key);
		free(run->objs[i].etag);
	}
	free(run->objs);
	free(run->file_pending);
	free(run->blocks);
	free(run);
}

struct wrun *warmrun_new(const char *pipeline, const char *trigger, enum run_kind kind,
                         uint64_t version)
{
	struct wrun *run = calloc(1, sizeof(*run));
	if (run == NULL)
		return NULL;
	snprintf(run->pipeline, sizeof(run->pipeline), "%s", pipeline);
	snprintf(run->trigger, sizeof(run->trigger), "%s", trigger);
	run->kind = kind;
	run->version = version;
	run->created_ns = warmrun_now_ns();
	run->concurrency = 4;
	return run;
}

int warmrun_add_obj(struct wrun *run, const char *bucket, size_t blen, const char *key, size_t klen,
                    const char *etag, size_t elen, uint64_t off, uint64_t len, uint32_t file,
                    bool warm)
{
	if (run->nobjs == run->cap) {
		size_t cap = run->cap ? run->cap * 2 : 64;
		struct wobj *o = realloc(run->objs, cap * sizeof(*o));
		if (o == NULL)
			return -ENOMEM;
		run->objs = o;
		run->cap = cap;
	}
	struct wobj *o = &run->objs[run->nobjs];
	memset(o, 0, sizeof(*o));
	o->bucket = strndup(bucket, blen);
	o->key = strndup(key, klen);
	o->etag = strndup(etag, elen);
	if (o->bucket == NULL || o->key == NULL || o->etag == NULL) {
		free(o->bucket);
		free(o->key);
		free(o->etag);
		return -ENOMEM;
	}
	o->offset = off;
	o->length = len;
	o->size = off + len; /* as readers name the object (client/lib/transfer.c) */
	o->file = file;
	o->warm = warm;
	run->nobjs++;
	if (warm)
		run->bytes += len;
	return 0;
}

/* ---- the worker ---- */

struct exec;

/* One node's blocks in one message. */
struct wbatch {
	size_t node;
	uint32_t blocks[LIST_BLOCKS]; /* indexes into run->blocks */
	size_t n;
};

struct exec {
	struct warmup *w;
	struct wrun *run;
	uint64_t block_size;
	struct cache_member nodes[CACHE_MEMBERS_MAX];
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	bool dead[CACHE_MEMBERS_MAX];
	size_t n;
	int type; /* MT_CACHE_WARM, MT_CACHE_HAS or MT_CACHE_EVICT */
	pthread_mutex_t lock;
	struct wbatch *batches;
	size_t nbatches, next;
	uint32_t *done_objs; /* objects finished since the last flush */
	size_t ndone_objs;
	uint64_t missing, failed;
	char first_error[400];
	int64_t pace_next_ns;
	int64_t deadline_ns; /* 0: none */
};

static struct block_request block_req(struct exec *x, const struct wblock *b, char *grant)
{
	const struct wobj *o = &x->run->objs[b->obj];
	struct block_request req;
	memset(&req, 0, sizeof(req));
	snprintf(req.bucket, sizeof(req.bucket), "%s", o->bucket);
	snprintf(req.key, sizeof(req.key), "%s", o->key);
	snprintf(req.etag, sizeof(req.etag), "%s", o->etag);
	req.size = o->size;
	req.offset = b->index * x->block_size;
	uint64_t end = req.offset + x->block_size;
	req.length = (end < o->size ? end : o->size) - req.offset;
	if (x->w->secret != NULL &&
	    grant_make(x->w->secret, x->w->cfg.secret_len, o->bucket, o->key, o->etag,
	               (int64_t)time(NULL), WARM_GRANT_TTL_S, grant) == 0) {
		req.grant = grant;
		req.grant_len = strlen(grant);
	}
	return req;
}

/* The bytes of a block within its object's extent (what a reader reads). */
static uint64_t block_bytes(const struct exec *x, const struct wblock *b)
{
	const struct wobj *o = &x->run->objs[b->obj];
	uint64_t start = b->index * x->block_size, end = start + x->block_size;
	if (start < o->offset)
		start = o->offset;
	if (end > o->offset + o->length)
		end = o->offset + o->length;
	return end > start ? end - start : 0;
}

/* The block's owner among the nodes still alive for this run, or -1. */
static ssize_t owner_of(struct exec *x, const struct wblock *b)
{
	const struct wobj *o = &x->run->objs[b->obj];
	struct block_id id = hrw_block_id(o->bucket, o->key, o->etag, b->index);
	size_t order[CACHE_MEMBERS_MAX];
	hrw_order(id.lo, x->ids, x->weights, x->n, order);
	for (size_t i = 0; i < x->n; i++)
		if (!x->dead[order[i]] && x->weights[order[i]] > 0)
			return (ssize_t)order[i];
	return -1;
}

static void block_done(struct exec *x, struct wblock *b, bool done)
{
	struct wrun *run = x->run;
	struct wobj *o = &run->objs[b->obj];
	if (b->done == done)
		return;
	b->done = done;
	uint64_t bytes = block_bytes(x, b);
	if (done) {
		run->blocks_done++;
		run->bytes_done += bytes;
		metric_add(metric_child(x->w->m_bytes, run->pipeline), (double)bytes);
		if (++o->blocks_done == o->nblocks && !o->done) {
			o->done = true;
			x->done_objs[x->ndone_objs++] = b->obj;
			if (--run->file_pending[o->file] == 0) {
				run->files_done++;
				metric_add(metric_child(x->w->m_files, run->pipeline), 1);
			}
		}
	} else {
		run->blocks_done--;
		run->bytes_done -= bytes;
		o->blocks_done--;
		if (o->done) {
			o->done = false;
			if (run->file_pending[o->file]++ == 0)
				run->files_done--;
		}
	}
}

struct chan_slot {
	char address[CACHE_ADDRESS_MAX + 1];
	struct channel *ch;
};

static struct channel *chan_get(struct exec *x, struct chan_slot *slots, size_t node, mp_error *err)
{
	const char *addr = x->nodes[node].address;
	struct chan_slot *free_slot = NULL;
	for (size_t i = 0; i < CHANNELS_KEPT; i++) {
		if (slots[i].ch != NULL && strcmp(slots[i].address, addr) == 0)
			return slots[i].ch;
		if (slots[i].ch == NULL && free_slot == NULL)
			free_slot = &slots[i];
	}
	if (free_slot == NULL) {
		free_slot = &slots[0];
		channel_close(free_slot->ch);
		free_slot->ch = NULL;
	}
	struct channel_tls tls = {NULL, NULL};
	struct channel *ch;
	if (channel_open(addr, &tls, x->w->token, NULL, 3000, x->w->cfg.timeout_ms, &ch, err) < 0)
		return NULL;
	snprintf(free_slot->address, sizeof(free_slot->address), "%s", addr);
	free_slot->ch = ch;
	return ch;
}

static void chan_drop(struct chan_slot *slots, struct channel *ch)
{
	for (size_t i = 0; i < CHANNELS_KEPT; i++)
		if (slots[i].ch == ch) {
			channel_close(ch);
			slots[i].ch = NULL;
		}
}

static void pace(struct exec *x, uint64_t bytes)
{
	if (x->run->bandwidth == 0)
		return;
	pthread_mutex_lock(&x->lock);
	int64_t now = warmrun_now_ns();
	int64_t start = x->pace_next_ns > now ? x->pace_next_ns : now;
	x->pace_next_ns = start + (int64_t)((double)bytes * 1e9 / (double)x->run->bandwidth);
	pthread_mutex_unlock(&x->lock);
	if (start > now) {
		struct timespec ts = {(time_t)((start - now) / 1000000000),
		                      (long)((start - now) % 1000000000)};
		nanosleep(&ts, NULL);
	}
}

static bool stopping(struct warmup *w)
{
	pthread_mutex_lock(&w->lock);
	bool s = w->stopping;
	pthread_mutex_unlock(&w->lock);
	return s;
}

/* channel_call, but a mirror that is stopping does not wait out a node
 * that takes its time (a batch of fills may take minutes). */
static int call_node(struct exec *x, struct channel *ch, const struct request_body *b,
                     uint64_t timeout_ms, struct reply *rep, mp_error *err)
{
	uint64_t id;
	int r = channel_send(ch, b, NULL, timeout_ms, &id, err);
	if (r < 0)
		return r;
	int64_t until = warmrun_now_ns() + (int64_t)timeout_ms * 1000000;
	while (!channel_readable(ch, 250)) {
		if (stopping(x->w))
			return mperr(err, -ECANCELED, "the mirror is stopping");
		if (warmrun_now_ns() >= until)
			return mperr(err, -ETIMEDOUT, "%s: no answer in %llu ms", ch->address,
			             (unsigned long long)timeout_ms);
	}
	return channel_receive(ch, id, until + 5000000000ll, rep, err);
}

static void send_batch(struct exec *x, struct chan_slot *slots, struct wbatch *bt)
{
	struct warmup *w = x->w;
	struct wrun *run = x->run;
	char(*grants)[GRANT_LEN + 1] = calloc(bt->n, sizeof(*grants));
	if (grants == NULL)
		return;
	struct request_body b;
	request_init(&b, (uint32_t)x->type);
	request_key(&b, "blocks");
	msgpack_pack_array(&b.pk, (uint32_t)bt->n);
	uint64_t bytes = 0;
	for (size_t i = 0; i < bt->n; i++) {
		struct block_request req = block_req(x, &run->blocks[bt->blocks[i]], grants[i]);
		bytes += req.length;
		msgpack_pack_map(&b.pk, 6 + (req.grant != NULL));
		cacheproto_pack_block_fields(&b.pk, &req);
	}
	free(grants);
	if (x->type == MT_CACHE_WARM)
		pace(x, bytes);
	mp_error err = {0};
	struct channel *ch = chan_get(x, slots, bt->node, &err);
	struct reply rep;
	/* An answer is not awaited past the run's deadline. */
	uint64_t timeout = w->cfg.timeout_ms;
	if (x->deadline_ns > 0) {
		int64_t left = (x->deadline_ns - warmrun_now_ns()) / 1000000 + 100;
		timeout = left < 100 ? 100 : (uint64_t)left < timeout ? (uint64_t)left : timeout;
	}
	int r = ch == NULL ? -EHOSTUNREACH : call_node(x, ch, &b, timeout, &rep, &err);
	request_destroy(&b);
	if (r == -ECANCELED ||
	    (r < 0 && x->deadline_ns > 0 && warmrun_now_ns() >= x->deadline_ns)) {
		if (ch != NULL)
			chan_drop(slots, ch);
		return; /* the node is not to blame */
	}
	if (r < 0) {
		if (ch != NULL)
			chan_drop(slots, ch);
		/* Left for this run: its share goes to the next owners. */
		pthread_mutex_lock(&x->lock);
		if (!x->dead[bt->node])
			log_warn("warmup %s: cache node %s left for run %" PRId64 ": %s",
			         run->pipeline, x->nodes[bt->node].address, run->id, err.message);
		x->dead[bt->node] = true;
		x->missing += bt->n;
		pthread_mutex_unlock(&x->lock);
		return;
	}
	int results[LIST_BLOCKS];
	char why[300] = "";
	if (rep.is_error)
		snprintf(why, sizeof(why), "%s: %.*s", x->nodes[bt->node].address,
		         (int)rep.error_msg_len, rep.error_msg);
	else if (cacheproto_parse_results(rep.frame.body, bt->n, results, why, sizeof(why)) < 0)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), " (from %s)",
		         x->nodes[bt->node].address);
	const char *node_err = NULL;
	size_t nelen = 0;
	if (!rep.is_error && why[0] == '\0' &&
	    msg_get_bytes(rep.frame.body, "error", false, 1, 600, &node_err, &nelen, NULL, 0) != 0)
		node_err = NULL;
	pthread_mutex_lock(&w->lock);
	pthread_mutex_lock(&x->lock);
	if (why[0] != '\0') {
		x->failed += bt->n;
		run->failures += bt->n;
		metric_add(metric_child(w->m_failures, run->pipeline), (double)bt->n);
		if (x->first_error[0] == '\0')
			snprintf(x->first_error, sizeof(x->first_error), "%s", why);
	} else {
		for (size_t i = 0; i < bt->n; i++) {
			struct wblock *blk = &run->blocks[bt->blocks[i]];
			if (x->type == MT_CACHE_EVICT) {
				if (results[i] == 0)
					run->evicted++;
				continue;
			}
			if (results[i] >= 0) {
				block_done(x, blk, true);
			} else if (x->type == MT_CACHE_HAS) {
				block_done(x, blk, false);
				x->missing++;
			} else {
				x->failed++;
				run->failures++;
				metric_add(metric_child(w->m_failures, run->pipeline), 1);
				if (x->first_error[0] == '\0')
					snprintf(x->first_error, sizeof(x->first_error), "%s: %.*s",
					         x->nodes[bt->node].address, (int)nelen,
					         node_err ? node_err : "fill failed");
			}
		}
	}
	pthread_mutex_unlock(&x->lock);
	pthread_mutex_unlock(&w->lock);
	reply_release(&rep);
}

static void *helper_main(void *arg)
{
	struct exec *x = arg;
	struct chan_slot slots[CHANNELS_KEPT];
	memset(slots, 0, sizeof(slots));
	for (;;) {
		pthread_mutex_lock(&x->lock);
		struct wbatch *bt = NULL;
		while (x->next < x->nbatches && bt == NULL) {
			struct wbatch *cand = &x->batches[x->next++];
			if (!x->dead[cand->node])
				bt = cand;
			else
				x->missing += cand->n;
		}
		bool stop =
		    x->w->stopping || (x->deadline_ns > 0 && warmrun_now_ns() >= x->deadline_ns);
		pthread_mutex_unlock(&x->lock);
		if (bt == NULL || stop)
			break;
		send_batch(x, slots, bt);
	}
	for (size_t i = 0; i < CHANNELS_KEPT; i++)
		channel_close(slots[i].ch);
	return NULL;
}

/* One message type over the given blocks (NULL: those not done), each
 * batch to the block's owner (or, for evictions, to every node). */
static void exec_pass(struct exec *x, int type, const struct wblock *only, size_t nonly)
{
	struct wrun *run = x->run;
	x->type = type;
	size_t cap = (type == MT_CACHE_EVICT ? nonly * x->n : run->nblocks) / 1 + x->n + 1;
	struct wbatch *batches = calloc(cap, sizeof(*batches));
	struct wbatch **open = calloc(x->n + 1, sizeof(*open));
	if (batches == NULL || open == NULL) {
		free(batches);
		free(open);
		return;
	}
	size_t nb = 0;
	size_t limit = type == MT_CACHE_WARM ? BATCH_BLOCKS : LIST_BLOCKS;
	if (type == MT_CACHE_EVICT) {
		for (size_t node = 0; node < x->n; node++) {
			if (x->dead[node])
				continue;
			for (size_t i = 0; i < nonly; i++) {
				if (open[node] == NULL || open[node]->n == limit) {
					open[node] = &batches[nb++];
					open[node]->node = node;
				}
				open[node]->blocks[open[node]->n++] =
				    (uint32_t)(&only[i] - run->blocks);
			}
		}
	} else {
		for (size_t i = 0; i < run->nblocks; i++) {
			if (run->blocks[i].done != (type == MT_CACHE_HAS))
				continue;
			ssize_t node = owner_of(x, &run->blocks[i]);
			if (node < 0) {
				x->missing++;
				continue;
			}
			if (open[node] == NULL || open[node]->n == limit) {
				open[node] = &batches[nb++];
				open[node]->node = (size_t)node;
			}
			open[node]->blocks[open[node]->n++] = (uint32_t)i;
		}
	}
	free(open);
	x->batches = batches;
	x->nbatches = nb;
	x->next = 0;
	size_t nh = run->concurrency < HELPERS_MAX ? run->concurrency : HELPERS_MAX;
	if (nh > nb)
		nh = nb;
	pthread_t helpers[HELPERS_MAX];
	size_t started = 0;
	for (size_t i = 0; i < nh; i++)
		if (pthread_create(&helpers[started], NULL, helper_main, x) == 0)
			started++;
	if (started == 0 && nb > 0)
		helper_main(x);
	for (size_t i = 0; i < started; i++)
		pthread_join(helpers[i], NULL);
	free(batches);
	x->batches = NULL;
	db_objs_done(x->w, run, x->done_objs, x->ndone_objs);
	x->ndone_objs = 0;
}

static void snapshot_members(struct exec *x)
{
	struct warmup *w = x->w;
	pthread_mutex_lock(&w->lock);
	size_t n = 0;
	uint64_t bs = 0;
	for (size_t i = 0; i < w->nmembers; i++) {
		const struct cache_member *m = &w->members[i];
		if (bs == 0)
			bs = m->block_size;
		if (m->block_size != bs)
			continue;
		bool was_dead = false;
		for (size_t k = 0; k < x->n; k++)
			if (x->dead[k] && strcmp(x->nodes[k].address, m->address) == 0)
				was_dead = true;
		x->nodes[n] = *m;
		x->ids[n] = hrw_node_id(m->address);
		x->weights[n] = m->weight;
		x->dead[n] = was_dead;
		n++;
	}
	pthread_mutex_unlock(&w->lock);
	/* Every node left: try them all again (one may be back). */
	bool all_dead = n > 0;
	for (size_t i = 0; i < n; i++)
		all_dead = all_dead && x->dead[i];
	for (size_t i = 0; all_dead && i < n; i++)
		x->dead[i] = false;
	x->n = n;
	x->block_size = bs;
}

static bool exec_wait(struct exec *x, int64_t deadline_ns, int ms)
{
	struct warmup *w = x->w;
	pthread_mutex_lock(&w->lock);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	if (!w->stopping)
		pthread_cond_timedwait(&w->wake, &w->lock, &ts);
	bool go_on = !w->stopping && (deadline_ns == 0 || warmrun_now_ns() < deadline_ns);
	pthread_mutex_unlock(&w->lock);
	return go_on;
}

/* The blocks of the run's objects at the group's block size. */
static int build_blocks(struct exec *x)
{
	struct wrun *run = x->run;
	size_t n = 0;
	for (size_t i = 0; i < run->nobjs; i++) {
		struct wobj *o = &run->objs[i];
		o->nblocks = (uint32_t)((o->offset + o->length - 1) / x->block_size -
		                        o->offset / x->block_size + 1);
		if (o->warm)
			n += o->nblocks;
	}
	struct wblock *blocks = calloc(n + 1, sizeof(*blocks));
	x->done_objs = calloc(run->nobjs + 1, sizeof(*x->done_objs));
	if (blocks == NULL || x->done_objs == NULL) {
		free(blocks);
		return -ENOMEM;
	}
	pthread_mutex_lock(&x->w->lock);
	free(run->blocks);
	run->blocks = blocks;
	run->nblocks = 0;
	run->blocks_done = 0;
	for (size_t i = 0; i < run->nobjs; i++) {
		struct wobj *o = &run->objs[i];
		if (!o->warm)
			continue;
		o->blocks_done = o->done ? o->nblocks : 0;
		for (uint64_t b = o->offset / x->block_size;
		     b <= (o->offset + o->length - 1) / x->block_size; b++) {
			struct wblock *blk = &blocks[run->nblocks++];
			blk->obj = (uint32_t)i;
			blk->index = b;
			blk->done = o->done;
			run->blocks_done += o->done;
		}
	}
	run->blocks = blocks;
	pthread_mutex_unlock(&x->w->lock);
	return 0;
}

/* After a run of a pipeline is done: what it warmed is remembered, and
 * with evict_previous what it warmed before and is not under its paths at
 * this version any more is dropped from every node. */
static uint64_t obj_hash(const char *bucket, const char *key, const char *etag)
{
	uint64_t h = hash_bytes(bucket, strlen(bucket), 0x7761726d);
	h = hash_bytes(key, strlen(key), h);
	return hash_mix64(hash_bytes(etag, strlen(etag), h));
}

/* The run's objects by hash (open addressing; a slot holds index + 1), so
 * that a model's thousands of objects are looked up, not scanned. */
static size_t *obj_index(const struct wrun *run, size_t *ret_cap)
{
	size_t cap = 16;
	while (cap < run->nobjs * 2)
		cap *= 2;
	size_t *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return NULL;
	for (size_t i = 0; i < run->nobjs; i++) {
		const struct wobj *o = &run->objs[i];
		size_t k = obj_hash(o->bucket, o->key, o->etag) & (cap - 1);
		while (slots[k] != 0)
			k = (k + 1) & (cap - 1);
		slots[k] = i + 1;
	}
	*ret_cap = cap;
	return slots;
}

static bool obj_current(const struct wrun *run, const size_t *slots, size_t cap, const char *b,
                        const char *k, const char *e)
{
	for (size_t i = obj_hash(b, k, e) & (cap - 1); slots[i] != 0; i = (i + 1) & (cap - 1)) {
		const struct wobj *o = &run->objs[slots[i] - 1];
		if (strcmp(o->etag, e) == 0 && strcmp(o->key, k) == 0 && strcmp(o->bucket, b) == 0)
			return true;
	}
	return false;
}

static void evict_previous(struct exec *x)
{
	struct warmup *w = x->w;
	struct wrun *run = x->run;
	if (strcmp(run->pipeline, ADHOC) == 0)
		return;
	struct wrun *old = warmrun_new(run->pipeline, "evict", KIND_EVICT, run->version);
	if (old == NULL)
		return;
	pthread_mutex_lock(&w->db_lock);
	warmrun_db_exec(w, "BEGIN");
	size_t cap = 0;
	size_t *slots = run->evict_previous ? obj_index(run, &cap) : NULL;
	if (slots != NULL) {
		sqlite3_stmt *st = warmrun_db_prepare(
		    w, "SELECT bucket, key, etag, size FROM warmed WHERE pipeline = ?");
		if (st != NULL)
			sqlite3_bind_text(st, 1, run->pipeline, -1, SQLITE_STATIC);
		while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
			const char *b = warmrun_col(st, 0), *k = warmrun_col(st, 1),
			           *e = warmrun_col(st, 2);
			bool current = obj_current(run, slots, cap, b, k, e);
			uint64_t size = (uint64_t)sqlite3_column_int64(st, 3);
			if (!current && size > 0)
				warmrun_add_obj(old, b, strlen(b), k, strlen(k), e, strlen(e), 0,
				                size, 0, true);
		}
		sqlite3_finalize(st);
		st = warmrun_db_prepare(
		    w, "DELETE FROM warmed WHERE pipeline = ? AND bucket = ? AND key = ? "
		       "AND etag = ?");
		for (size_t i = 0; st != NULL && i < old->nobjs; i++) {
			sqlite3_reset(st);
			sqlite3_bind_text(st, 1, run->pipeline, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, old->objs[i].bucket, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, old->objs[i].key, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 4, old->objs[i].etag, -1, SQLITE_STATIC);
			sqlite3_step(st);
		}
		sqlite3_finalize(st);
	}
	sqlite3_stmt *st = warmrun_db_prepare(w, "INSERT OR IGNORE INTO warmed VALUES (?,?,?,?,?)");
	for (size_t i = 0; st != NULL && i < run->nobjs; i++) {
		if (!run->objs[i].warm)
			continue;
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, run->pipeline, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, run->objs[i].bucket, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, run->objs[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, run->objs[i].etag, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (int64_t)run->objs[i].size);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	warmrun_db_exec(w, "COMMIT");
	pthread_mutex_unlock(&w->db_lock);
	if (old->nobjs > 0) {
		/* The previous version's blocks go once the new ones are warm. */
		struct exec *ex = calloc(1, sizeof(*ex));
		if (ex != NULL) {
			*ex = (struct exec){.w = w, .run = old};
			pthread_mutex_init(&ex->lock, NULL);
			ex->n = 0;
			snapshot_members(ex);
			if (ex->block_size > 0 && build_blocks(ex) == 0) {
				exec_pass(ex, MT_CACHE_EVICT, old->blocks, old->nblocks);
				pthread_mutex_lock(&w->lock);
				run->evicted += old->evicted;
				pthread_mutex_unlock(&w->lock);
				metric_add(metric_child(w->m_evicted, run->pipeline),
				           (double)old->evicted);
				log_info("warmup %s: run %" PRId64
				         ": %zu objects of earlier versions "
				         "evicted (%" PRIu64 " blocks dropped)",
				         run->pipeline, run->id, old->nobjs, old->evicted);
			}
			free(ex->done_objs);
			pthread_mutex_destroy(&ex->lock);
			free(ex);
		}
	}
	free(slots);
	warmrun_free(old);
}

static void run_finish(struct warmup *w, struct wrun *run, enum run_state state, const char *error)
{
	pthread_mutex_lock(&w->lock);
	run->state = state;
	run->finished_ns = warmrun_now_ns();
	snprintf(run->error, sizeof(run->error), "%s", error);
	pthread_mutex_unlock(&w->lock);
	db_run_state(w, run);
	/* What was warmed is in the warmed table now: the run's own list of
	 * objects is not needed any more. */
	pthread_mutex_lock(&w->db_lock);
	sqlite3_stmt *st = warmrun_db_prepare(w, "DELETE FROM objs WHERE run = ?");
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, run->id);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&w->db_lock);
	double secs = (double)(run->finished_ns - run->started_ns) / 1e9;
	metric_set(metric_child(w->m_state, run->pipeline), state == RUN_DONE ? 2 : 3);
	metric_set(metric_child(w->m_duration, run->pipeline), secs);
	if (state == RUN_DONE && run->commit_ns > 0)
		metric_set(metric_child(w->m_commit_to_warm, run->pipeline),
		           (double)(run->finished_ns - run->commit_ns) / 1e9);
	if (state == RUN_DONE)
		log_info("warmup %s: run %" PRId64 " at version %" PRIu64 " done: %" PRIu64
		         " files, %" PRIu64 " bytes in %.1f s",
		         run->pipeline, run->id, run->version, run->files, run->bytes, secs);
	else
		log_warn("warmup %s: run %" PRId64 " at version %" PRIu64 " failed: %s",
		         run->pipeline, run->id, run->version, error);
}

static void run_execute(struct warmup *w, struct wrun *run)
{
	struct exec *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return;
	x->w = w;
	x->run = run;
	pthread_mutex_init(&x->lock, NULL);
	int64_t deadline_ns =
	    run->deadline_ms ? run->created_ns + (int64_t)run->deadline_ms * 1000000 : 0;
	x->deadline_ns = deadline_ns;
	metric_set(metric_child(w->m_state, run->pipeline), 1);
	char error[600] = "";
	enum run_state outcome = RUN_FAILED;
	uint64_t built_bs = 0;
	for (int pass = 0;; pass++) {
		snapshot_members(x);
		if (x->block_size == 0) {
			snprintf(error, sizeof(error), "no cache node in the site's group");
		} else if (x->block_size != built_bs) {
			if (build_blocks(x) < 0) {
				snprintf(error, sizeof(error), "out of memory");
				break;
			}
			built_bs = x->block_size;
		}
		if (built_bs != 0 && x->block_size == built_bs) {
			x->missing = x->failed = 0;
			x->first_error[0] = '\0';
			if (run->kind == KIND_EVICT) {
				exec_pass(x, MT_CACHE_EVICT, run->blocks, run->nblocks);
				outcome = RUN_DONE;
				break;
			}
			exec_pass(x, MT_CACHE_WARM, NULL, 0);
			if (x->missing == 0 && x->failed == 0 && run->blocks_done == run->nblocks) {
				/* Truthful: done only when every block is where
				 * readers look for it. */
				exec_pass(x, MT_CACHE_HAS, NULL, 0);
				if (x->missing == 0 && x->failed == 0 &&
				    run->blocks_done == run->nblocks) {
					outcome = RUN_DONE;
					break;
				}
			}
			if (x->first_error[0] != '\0')
				snprintf(error, sizeof(error), "%s", x->first_error);
			else
				snprintf(error, sizeof(error), "%" PRIu64 " blocks not cached yet",
				         run->nblocks - run->blocks_done);
		}
		if (pass >= PASSES_MAX && x->failed > 0)
			break;
		if (!exec_wait(x, deadline_ns,
		               x->failed > 0 ? 1000 * (pass < 5 ? pass + 1 : 5) : 300))
			break;
	}
	if (outcome == RUN_DONE && run->kind == KIND_WARM)
		evict_previous(x);
	if (outcome != RUN_DONE) {
		pthread_mutex_lock(&w->lock);
		bool stopping = w->stopping;
		uint64_t missing = run->nblocks - run->blocks_done;
		pthread_mutex_unlock(&w->lock);
		if (stopping) {
			/* Resumed at the next start. */
			free(x->done_objs);
			pthread_mutex_destroy(&x->lock);
			free(x);
			return;
		}
		char why[sizeof(run->error)];
		snprintf(why, sizeof(why),
		         "%s%" PRIu64 " of %zu blocks missing (%" PRIu64 " of %" PRIu64
		         " files not warm): %s",
		         deadline_ns && warmrun_now_ns() >= deadline_ns ? "deadline passed: " : "",
		         missing, run->nblocks, run->files - run->files_done, run->files, error);
		run_finish(w, run, RUN_FAILED, why);
	} else {
		run_finish(w, run, RUN_DONE, "");
	}
	free(x->done_objs);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

void *warmrun_worker(void *arg)
{
	struct warmup *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct wrun *pick = NULL;
		for (struct wrun *r = w->runs; r != NULL; r = r->next)
			if (r->state == RUN_QUEUED &&
			    (pick == NULL || r->priority > pick->priority))
				pick = r;
		if (w->stopping)
			break;
		/* List files first: a pipeline waits on its paths. */
		struct list_job *lj = w->lists;
		while (lj != NULL && lj->done)
			lj = lj->next;
		if (lj != NULL) {
			pthread_mutex_unlock(&w->lock);
			warmlist_read(w, lj);
			pthread_mutex_lock(&w->lock);
			lj->done = true;
			continue;
		}
		if (pick == NULL) {
			pthread_cond_wait(&w->wake, &w->lock);
			continue;
		}
		pick->state = RUN_RUNNING;
		pick->started_ns = warmrun_now_ns();
		pthread_mutex_unlock(&w->lock);
		db_run_state(w, pick);
		run_execute(w, pick);
		pthread_mutex_lock(&w->lock);
		/* Finished runs move behind the active ones; the oldest go. */
		if (pick->state >= RUN_DONE) {
			struct wrun **p = &w->runs;
			while (*p != pick)
				p = &(*p)->next;
			*p = pick->next;
			pick->next = NULL;
			p = &w->runs;
			while (*p != NULL && (*p)->state <= RUN_RUNNING)
				p = &(*p)->next;
			pick->next = *p;
			*p = pick;
			size_t kept = 0;
			for (p = &w->runs; *p != NULL;) {
				if ((*p)->state >= RUN_DONE && ++kept > RUNS_KEPT) {
					struct wrun *gone = *p;
					*p = gone->next;
					warmrun_free(gone);
				} else {
					p = &(*p)->next;
				}
			}
		}
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* ---- loading ---- */

void warmrun_load(struct warmup *w)
{
	sqlite3_stmt *st = warmrun_db_prepare(
	    w, "SELECT id, pipeline, trig, kind, version, commit_ns, created_ns, files, "
	       "deadline_ms, concurrency, bandwidth, priority, evict_previous, state, finished_ns, "
	       "error FROM runs WHERE state IN (0, 1) OR id IN (SELECT id FROM runs ORDER BY id "
	       "DESC LIMIT 16) ORDER BY id");
	sqlite3_stmt *os =
	    warmrun_db_prepare(w, "SELECT file, bucket, key, etag, off, len, warm, done "
	                          "FROM objs WHERE run = ? ORDER BY seq");
	struct wrun **tail = &w->runs, *finished = NULL;
	while (st != NULL && os != NULL && sqlite3_step(st) == SQLITE_ROW) {
		struct wrun *run =
		    warmrun_new(warmrun_col(st, 1), warmrun_col(st, 2), sqlite3_column_int(st, 3),
		                (uint64_t)sqlite3_column_int64(st, 4));
		if (run == NULL)
			break;
		run->id = sqlite3_column_int64(st, 0);
		run->commit_ns = sqlite3_column_int64(st, 5);
		run->created_ns = sqlite3_column_int64(st, 6);
		run->files = (uint64_t)sqlite3_column_int64(st, 7);
		run->deadline_ms = (uint64_t)sqlite3_column_int64(st, 8);
		run->concurrency = (uint64_t)sqlite3_column_int64(st, 9);
		run->bandwidth = (uint64_t)sqlite3_column_int64(st, 10);
		run->priority = (uint64_t)sqlite3_column_int64(st, 11);
		run->evict_previous = sqlite3_column_int(st, 12) != 0;
		run->state = sqlite3_column_int(st, 13);
		run->finished_ns = sqlite3_column_int64(st, 14);
		snprintf(run->error, sizeof(run->error), "%s", warmrun_col(st, 15));
		bool active = run->state <= RUN_RUNNING;
		if (active) {
			run->state = RUN_QUEUED;
			sqlite3_reset(os);
			sqlite3_bind_int64(os, 1, run->id);
			while (sqlite3_step(os) == SQLITE_ROW) {
				const char *b = warmrun_col(os, 1), *k = warmrun_col(os, 2),
				           *e = warmrun_col(os, 3);
				bool warm = sqlite3_column_int(os, 6) != 0;
				if (warmrun_add_obj(run, b, strlen(b), k, strlen(k), e, strlen(e),
				                    (uint64_t)sqlite3_column_int64(os, 4),
				                    (uint64_t)sqlite3_column_int64(os, 5),
				                    (uint32_t)sqlite3_column_int64(os, 0),
				                    warm) < 0)
					break;
				run->objs[run->nobjs - 1].done = sqlite3_column_int(os, 7) != 0;
			}
			run->file_pending = calloc(run->files + 1, sizeof(*run->file_pending));
			if (run->file_pending == NULL) {
				warmrun_free(run);
				break;
			}
			for (size_t i = 0; i < run->nobjs; i++) {
				struct wobj *o = &run->objs[i];
				if (!o->warm || o->file > run->files)
					continue;
				if (o->done)
					run->bytes_done += o->length;
				else
					run->file_pending[o->file]++;
			}
			for (uint64_t f = 0; f < run->files; f++)
				run->files_done += run->file_pending[f] == 0;
			log_info("warmup %s: run %" PRId64 " at version %" PRIu64
			         " resumes: %" PRIu64 " of %" PRIu64 " files warm",
			         run->pipeline, run->id, run->version, run->files_done, run->files);
			*tail = run;
			tail = &run->next;
		} else {
			run->files_done = run->state == RUN_DONE ? run->files : 0;
			run->next = finished;
			finished = run;
		}
	}
	*tail = finished; /* newest finished first */
	sqlite3_finalize(st);
	sqlite3_finalize(os);
}
