/* Warmup pipelines at a site's mirror: see warmup.h. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "glob.h"
#include "grant.h"
#include "hrw.h"
#include "internal.h" /* the client library's channels, as replication uses its buckets */
#include "log.h"
#include "msg.h"
#include "node.h"
#include "policy.h"
#include "proto.h"
#include "warmup.h"

#define RUNS_KEPT        64 /* finished runs shown in status */
#define BATCH_BLOCKS     16 /* blocks per CACHE_WARM */
#define HELPERS_MAX      16
#define PASSES_MAX       6 /* warm passes before a run with failing blocks fails */
#define PATHS_MAX        64
#define ADHOC            "adhoc"
#define WARM_GRANT_TTL_S 3600
#define CHANNELS_KEPT    16

enum run_state { RUN_QUEUED = 0, RUN_RUNNING = 1, RUN_DONE = 2, RUN_FAILED = 3 };
enum run_kind { KIND_WARM = 0, KIND_EVICT = 1 };
static const char *const state_names[] = {"queued", "running", "done", "failed"};

struct wobj {
	char *bucket, *key, *etag;
	uint64_t offset, length, size;
	uint32_t file;
	bool warm; /* false: only under the paths at the run's version (evict_previous) */
	bool done;
	uint32_t nblocks, blocks_done;
};

struct wblock {
	uint32_t obj;
	uint64_t index;
	bool done;
};

struct wrun {
	int64_t id;
	char pipeline[POLICY_MAX_NAME + 1];
	char trigger[16];
	enum run_kind kind;
	enum run_state state;
	uint64_t version;
	int64_t commit_ns, created_ns, started_ns, finished_ns;
	uint64_t deadline_ms, concurrency, bandwidth, priority;
	bool evict_previous;
	uint64_t files, files_done, bytes, bytes_done, blocks_done, failures, evicted;
	char error[512];
	struct wobj *objs;
	size_t nobjs, cap;
	uint32_t *file_pending; /* objects to warm per file */
	struct wblock *blocks;
	size_t nblocks;
	struct wrun *next;
};

/* A run's plan while the loop builds it. */
struct plan {
	struct wrun *run;
	const struct policy_warmup *pipe; /* NULL: ad hoc paths */
	struct glob **globs;              /* ad hoc globs */
	size_t nglobs;
	bool keep_only;
	char path[NODE_PATH_MAX + NODE_NAME_MAX + 2];
	size_t plen;
};

struct pipe_state {
	char name[POLICY_MAX_NAME + 1];
	time_t next_fire;     /* schedules, in the scaled clock */
	struct wrun *pending; /* on-change: the version being applied */
};

struct warmup {
	struct warmup_config cfg;
	char *site, *data_dir, *token;
	uint8_t *secret;
	sqlite3 *db;
	pthread_mutex_t db_lock;
	time_t clock_base;
	/* Loop only. */
	struct policy *policy;
	struct pipe_state *pipes; /* one per pipeline of policy */
	/* Under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct wrun *runs; /* queued and running first, by id; finished ones after */
	struct cache_member members[CACHE_MEMBERS_MAX];
	size_t nmembers;
	bool stopping;
	pthread_t worker;
	bool worker_running;
	struct metrics *metrics;
	struct metric *m_bytes, *m_files, *m_failures, *m_state, *m_duration, *m_commit_to_warm,
	    *m_runs, *m_evicted;
};

static int64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the table ---- */

static const char schema[] =
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

static int db_exec(struct warmup *w, const char *sql)
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

static sqlite3_stmt *db_prepare(struct warmup *w, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(w->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_warn("warmup: cannot prepare %.60s: %s", sql, sqlite3_errmsg(w->db));
		return NULL;
	}
	return st;
}

static const char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? (const char *)t : "";
}

/* Inserts the run and its objects; sets run->id. */
static int db_insert_run(struct warmup *w, struct wrun *run, const char *tag)
{
	pthread_mutex_lock(&w->db_lock);
	db_exec(w, "BEGIN");
	sqlite3_stmt *st = db_prepare(
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
	st = db_prepare(w, "INSERT INTO objs VALUES (?,?,?,?,?,?,?,?,?,?,0)");
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
	db_exec(w, rc == 0 ? "COMMIT" : "ROLLBACK");
	pthread_mutex_unlock(&w->db_lock);
	return rc;
}

static void db_run_state(struct warmup *w, const struct wrun *run)
{
	pthread_mutex_lock(&w->db_lock);
	sqlite3_stmt *st =
	    db_prepare(w, "UPDATE runs SET state = ?, finished_ns = ?, error = ? WHERE id = ?");
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
	db_exec(w, "BEGIN");
	sqlite3_stmt *st = db_prepare(w, "UPDATE objs SET done = 1 WHERE run = ? AND seq = ?");
	for (size_t i = 0; st != NULL && i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, run->id);
		sqlite3_bind_int64(st, 2, seqs[i]);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	db_exec(w, "COMMIT");
	pthread_mutex_unlock(&w->db_lock);
}

/* ---- runs ---- */

static void run_free(struct wrun *run)
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

static struct wrun *run_new(const char *pipeline, const char *trigger, enum run_kind kind,
                            uint64_t version)
{
	struct wrun *run = calloc(1, sizeof(*run));
	if (run == NULL)
		return NULL;
	snprintf(run->pipeline, sizeof(run->pipeline), "%s", pipeline);
	snprintf(run->trigger, sizeof(run->trigger), "%s", trigger);
	run->kind = kind;
	run->version = version;
	run->created_ns = wall_ns();
	run->concurrency = 4;
	return run;
}

static void run_settings(struct wrun *run, const struct policy_warmup *p)
{
	run->deadline_ms = p->deadline_ms;
	run->concurrency = p->concurrency ? p->concurrency : 4;
	run->bandwidth = p->bandwidth;
	run->priority = p->priority;
	run->evict_previous = p->evict_previous;
}

static int run_add_obj(struct wrun *run, const char *bucket, size_t blen, const char *key,
                       size_t klen, const char *etag, size_t elen, uint64_t off, uint64_t len,
                       uint32_t file, bool warm)
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

/* The objects of a file's layout. Extents without an ETag cannot be cached
 * (blocks are keyed by it) and are left out, as readers skip the group. */
static void plan_file(struct plan *pl, const struct node_rec *rec)
{
	if (rec->extra_len == 0)
		return;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	if (msgpack_unpack_next(&u, (const char *)rec->extra, rec->extra_len, &off) !=
	        MSGPACK_UNPACK_SUCCESS ||
	    u.data.type != MSGPACK_OBJECT_ARRAY) {
		msgpack_unpacked_destroy(&u);
		return;
	}
	struct wrun *run = pl->run;
	uint32_t file = (uint32_t)run->files;
	bool any = false;
	const msgpack_object_array *a = &u.data.via.array;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *e = &a->ptr[i];
		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 5)
			continue;
		const msgpack_object *f = e->via.array.ptr;
		if (f[0].type != MSGPACK_OBJECT_STR || f[1].type != MSGPACK_OBJECT_STR ||
		    f[2].type != MSGPACK_OBJECT_STR ||
		    f[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    f[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[2].via.str.size == 0 ||
		    f[2].via.str.size > CACHE_ETAG_MAX || f[0].via.str.size > CACHE_ALIAS_MAX ||
		    f[1].via.str.size > CACHE_KEY_MAX || f[4].via.u64 == 0)
			continue;
		if (run_add_obj(run, f[0].via.str.ptr, f[0].via.str.size, f[1].via.str.ptr,
		                f[1].via.str.size, f[2].via.str.ptr, f[2].via.str.size,
		                f[3].via.u64, f[4].via.u64, file, !pl->keep_only) == 0)
			any = true;
	}
	msgpack_unpacked_destroy(&u);
	if (any && !pl->keep_only)
		run->files++;
}

static bool plan_matches(const struct plan *pl, const char *path)
{
	if (pl->pipe != NULL) {
		for (size_t k = 0; k < pl->pipe->paths.n; k++)
			if (pl->pipe->paths.globs != NULL && pl->pipe->paths.globs[k] != NULL &&
			    glob_match(pl->pipe->paths.globs[k], path))
				return true;
		return false;
	}
	for (size_t k = 0; k < pl->nglobs; k++)
		if (glob_match(pl->globs[k], path))
			return true;
	return false;
}

static const struct namespace *walk_ns;

/* Walks the tree below the directory at pl->path; with all, every file is
 * taken, else those the plan's globs match. */
static int walk_visit(void *arg, const struct node_rec *rec);
static bool walk_all;

static void walk(struct plan *pl, const struct namespace *ns, uint64_t dir, bool all)
{
	walk_ns = ns;
	walk_all = all;
	namespace_readdir(ns, dir, NULL, 0, walk_visit, pl);
}

static int walk_visit(void *arg, const struct node_rec *rec)
{
	struct plan *pl = arg;
	size_t saved = pl->plen;
	if (pl->plen + 1 + rec->name_len >= sizeof(pl->path))
		return 0;
	if (pl->plen > 1)
		pl->path[pl->plen++] = '/';
	memcpy(pl->path + pl->plen, rec->name, rec->name_len);
	pl->plen += rec->name_len;
	pl->path[pl->plen] = '\0';
	if (rec->type == NODE_FILE && (walk_all || plan_matches(pl, pl->path)))
		plan_file(pl, rec);
	else if (rec->type == NODE_DIR)
		namespace_readdir(walk_ns, rec->ino, NULL, 0, walk_visit, pl);
	pl->plen = saved;
	pl->path[saved] = '\0';
	return 0;
}

static void walk_root(struct plan *pl, const struct namespace *ns)
{
	pl->path[0] = '/';
	pl->path[1] = '\0';
	pl->plen = 1;
	walk(pl, ns, NODE_ROOT_INO, false);
}

/* Hands a planned run to the worker (or frees it when it holds nothing). */
static int run_submit(struct warmup *w, struct wrun *run, const char *tag)
{
	if (run->nobjs == 0) {
		run_free(run);
		return -ENOENT;
	}
	run->file_pending = calloc(run->files + 1, sizeof(*run->file_pending));
	if (run->file_pending == NULL) {
		run_free(run);
		return -ENOMEM;
	}
	for (size_t i = 0; i < run->nobjs; i++)
		if (run->objs[i].warm)
			run->file_pending[run->objs[i].file]++;
	int r = db_insert_run(w, run, tag);
	if (r < 0) {
		run_free(run);
		return r;
	}
	log_info("warmup %s: run %" PRId64 " (%s) at version %" PRIu64 ": %" PRIu64
	         " files, %" PRIu64 " bytes",
	         run->pipeline, run->id, run->trigger, run->version, run->files, run->bytes);
	metric_add(metric_child(w->m_runs, run->pipeline), 1);
	pthread_mutex_lock(&w->lock);
	struct wrun **p = &w->runs;
	while (*p != NULL && (*p)->state <= RUN_RUNNING)
		p = &(*p)->next;
	run->next = *p;
	*p = run;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* Every file under the pipeline's paths at this version. */
static int start_full_run(struct warmup *w, const struct policy_warmup *p,
                          const struct namespace *ns, uint64_t version, const char *trigger,
                          const char *tag)
{
	struct plan *pl = calloc(1, sizeof(*pl));
	if (pl == NULL)
		return -ENOMEM;
	pl->pipe = p;
	pl->run = run_new(p->item.name, trigger, KIND_WARM, version);
	if (pl->run == NULL) {
		free(pl);
		return -ENOMEM;
	}
	run_settings(pl->run, p);
	walk_root(pl, ns);
	int r = run_submit(w, pl->run, tag);
	free(pl);
	return r;
}

/* ---- the worker ---- */

struct exec;

/* One node's blocks in one message. */
struct wbatch {
	size_t node;
	uint32_t blocks[BATCH_BLOCKS]; /* indexes into run->blocks */
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
	int64_t now = wall_ns();
	int64_t start = x->pace_next_ns > now ? x->pace_next_ns : now;
	x->pace_next_ns = start + (int64_t)((double)bytes * 1e9 / (double)x->run->bandwidth);
	pthread_mutex_unlock(&x->lock);
	if (start > now) {
		struct timespec ts = {(time_t)((start - now) / 1000000000),
		                      (long)((start - now) % 1000000000)};
		nanosleep(&ts, NULL);
	}
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
	bool sent;
	/* An answer is not awaited past the run's deadline. */
	uint64_t timeout = w->cfg.timeout_ms;
	if (x->deadline_ns > 0) {
		int64_t left = (x->deadline_ns - wall_ns()) / 1000000 + 100;
		timeout = left < 100 ? 100 : (uint64_t)left < timeout ? (uint64_t)left : timeout;
	}
	int r = ch == NULL ? -EHOSTUNREACH : channel_call(ch, &b, NULL, timeout, &rep, &sent, &err);
	request_destroy(&b);
	if (r < 0 && x->deadline_ns > 0 && wall_ns() >= x->deadline_ns) {
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
	int results[BATCH_BLOCKS];
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
		bool stop = x->w->stopping || (x->deadline_ns > 0 && wall_ns() >= x->deadline_ns);
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
	if (type == MT_CACHE_EVICT) {
		for (size_t node = 0; node < x->n; node++) {
			if (x->dead[node])
				continue;
			for (size_t i = 0; i < nonly; i++) {
				if (open[node] == NULL || open[node]->n == BATCH_BLOCKS) {
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
			if (open[node] == NULL || open[node]->n == BATCH_BLOCKS) {
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
	bool go_on = !w->stopping && (deadline_ns == 0 || wall_ns() < deadline_ns);
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
static void evict_previous(struct exec *x)
{
	struct warmup *w = x->w;
	struct wrun *run = x->run;
	if (strcmp(run->pipeline, ADHOC) == 0)
		return;
	struct wrun *old = run_new(run->pipeline, "evict", KIND_EVICT, run->version);
	if (old == NULL)
		return;
	pthread_mutex_lock(&w->db_lock);
	db_exec(w, "BEGIN");
	if (run->evict_previous) {
		sqlite3_stmt *st =
		    db_prepare(w, "SELECT bucket, key, etag, size FROM warmed WHERE pipeline = ?");
		if (st != NULL)
			sqlite3_bind_text(st, 1, run->pipeline, -1, SQLITE_STATIC);
		while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
			const char *b = col(st, 0), *k = col(st, 1), *e = col(st, 2);
			bool current = false;
			for (size_t i = 0; i < run->nobjs && !current; i++)
				current = strcmp(run->objs[i].etag, e) == 0 &&
				          strcmp(run->objs[i].key, k) == 0 &&
				          strcmp(run->objs[i].bucket, b) == 0;
			uint64_t size = (uint64_t)sqlite3_column_int64(st, 3);
			if (!current && size > 0)
				run_add_obj(old, b, strlen(b), k, strlen(k), e, strlen(e), 0, size,
				            0, true);
		}
		sqlite3_finalize(st);
		st = db_prepare(w,
		                "DELETE FROM warmed WHERE pipeline = ? AND bucket = ? AND key = ? "
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
	sqlite3_stmt *st = db_prepare(w, "INSERT OR IGNORE INTO warmed VALUES (?,?,?,?,?)");
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
	db_exec(w, "COMMIT");
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
	run_free(old);
}

static void run_finish(struct warmup *w, struct wrun *run, enum run_state state, const char *error)
{
	pthread_mutex_lock(&w->lock);
	run->state = state;
	run->finished_ns = wall_ns();
	snprintf(run->error, sizeof(run->error), "%s", error);
	pthread_mutex_unlock(&w->lock);
	db_run_state(w, run);
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
		         deadline_ns && wall_ns() >= deadline_ns ? "deadline passed: " : "",
		         missing, run->nblocks, run->files - run->files_done, run->files, error);
		run_finish(w, run, RUN_FAILED, why);
	} else {
		run_finish(w, run, RUN_DONE, "");
	}
	free(x->done_objs);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

static void *worker_main(void *arg)
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
		if (pick == NULL) {
			pthread_cond_wait(&w->wake, &w->lock);
			continue;
		}
		pick->state = RUN_RUNNING;
		pick->started_ns = wall_ns();
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
					run_free(gone);
				} else {
					p = &(*p)->next;
				}
			}
		}
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* ---- life cycle ---- */

static void load_runs(struct warmup *w)
{
	sqlite3_stmt *st = db_prepare(
	    w, "SELECT id, pipeline, trig, kind, version, commit_ns, created_ns, files, "
	       "deadline_ms, concurrency, bandwidth, priority, evict_previous, state, finished_ns, "
	       "error FROM runs WHERE state IN (0, 1) OR id IN (SELECT id FROM runs ORDER BY id "
	       "DESC LIMIT 16) ORDER BY id");
	sqlite3_stmt *os = db_prepare(w, "SELECT file, bucket, key, etag, off, len, warm, done "
	                                 "FROM objs WHERE run = ? ORDER BY seq");
	struct wrun **tail = &w->runs, *finished = NULL;
	while (st != NULL && os != NULL && sqlite3_step(st) == SQLITE_ROW) {
		struct wrun *run = run_new(col(st, 1), col(st, 2), sqlite3_column_int(st, 3),
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
		snprintf(run->error, sizeof(run->error), "%s", col(st, 15));
		bool active = run->state <= RUN_RUNNING;
		if (active) {
			run->state = RUN_QUEUED;
			sqlite3_reset(os);
			sqlite3_bind_int64(os, 1, run->id);
			while (sqlite3_step(os) == SQLITE_ROW) {
				const char *b = col(os, 1), *k = col(os, 2), *e = col(os, 3);
				bool warm = sqlite3_column_int(os, 6) != 0;
				if (run_add_obj(run, b, strlen(b), k, strlen(k), e, strlen(e),
				                (uint64_t)sqlite3_column_int64(os, 4),
				                (uint64_t)sqlite3_column_int64(os, 5),
				                (uint32_t)sqlite3_column_int64(os, 0), warm) < 0)
					break;
				run->objs[run->nobjs - 1].done = sqlite3_column_int(os, 7) != 0;
			}
			run->file_pending = calloc(run->files + 1, sizeof(*run->file_pending));
			if (run->file_pending == NULL) {
				run_free(run);
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

int warmup_new(const struct warmup_config *cfg, struct metrics *metrics, struct warmup **ret,
               char *err, size_t errlen)
{
	struct warmup *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->cfg = *cfg;
	w->site = strdup(cfg->site);
	w->data_dir = strdup(cfg->data_dir);
	w->token = cfg->token ? strdup(cfg->token) : NULL;
	if (cfg->secret != NULL) {
		w->secret = malloc(cfg->secret_len);
		if (w->secret != NULL)
			memcpy(w->secret, cfg->secret, cfg->secret_len);
	}
	if (w->cfg.clock_scale <= 0)
		w->cfg.clock_scale = 1;
	if (w->cfg.timeout_ms == 0)
		w->cfg.timeout_ms = 300000;
	w->clock_base = time(NULL);
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->db_lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	w->metrics = metrics;
	w->m_bytes =
	    metrics_labeled(metrics, "mp_mirror_warmup_bytes_total",
	                    "Bytes of blocks warmed, by pipeline", METRIC_COUNTER, "pipeline");
	w->m_files = metrics_labeled(metrics, "mp_mirror_warmup_files_total",
	                             "Files fully warmed, by pipeline", METRIC_COUNTER, "pipeline");
	w->m_failures = metrics_labeled(metrics, "mp_mirror_warmup_failures_total",
	                                "Blocks whose warming failed (retried), by pipeline",
	                                METRIC_COUNTER, "pipeline");
	w->m_runs = metrics_labeled(metrics, "mp_mirror_warmup_runs_total", "Runs started",
	                            METRIC_COUNTER, "pipeline");
	w->m_evicted = metrics_labeled(metrics, "mp_mirror_warmup_evicted_blocks_total",
	                               "Blocks of earlier versions dropped (evict_previous)",
	                               METRIC_COUNTER, "pipeline");
	w->m_state =
	    metrics_labeled(metrics, "mp_mirror_warmup_state",
	                    "The last run: 1 running, 2 done, 3 failed", METRIC_GAUGE, "pipeline");
	w->m_duration =
	    metrics_labeled(metrics, "mp_mirror_warmup_last_duration_seconds",
	                    "Duration of the last finished run", METRIC_GAUGE, "pipeline");
	w->m_commit_to_warm = metrics_labeled(
	    metrics, "mp_mirror_warmup_commit_to_warm_seconds",
	    "From the version's commit at the primary to fully warm here (last on-change run)",
	    METRIC_GAUGE, "pipeline");
	char path[4096];
	snprintf(path, sizeof(path), "%s/warmup.db", cfg->data_dir);
	int rc = sqlite3_open_v2(
	    path, &w->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK ||
	    (sqlite3_busy_timeout(w->db, 5000),
	     db_exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL") < 0) ||
	    db_exec(w, schema) < 0) {
		snprintf(err, errlen, "%s: %s", path,
		         w->db ? sqlite3_errmsg(w->db) : "cannot open");
		warmup_free(w);
		return -EIO;
	}
	load_runs(w);
	if (pthread_create(&w->worker, NULL, worker_main, w) != 0) {
		snprintf(err, errlen, "cannot start the warmup worker");
		warmup_free(w);
		return -EAGAIN;
	}
	w->worker_running = true;
	*ret = w;
	return 0;
}

void warmup_free(struct warmup *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->lock);
	if (w->worker_running)
		pthread_join(w->worker, NULL);
	while (w->runs != NULL) {
		struct wrun *r = w->runs;
		w->runs = r->next;
		run_free(r);
	}
	for (size_t i = 0; w->pipes != NULL && w->policy != NULL && i < w->policy->n_warmup; i++)
		run_free(w->pipes[i].pending);
	free(w->pipes);
	policy_free(w->policy);
	if (w->db != NULL)
		sqlite3_close(w->db);
	pthread_mutex_destroy(&w->lock);
	pthread_mutex_destroy(&w->db_lock);
	pthread_cond_destroy(&w->wake);
	free(w->site);
	free(w->data_dir);
	free(w->token);
	free(w->secret);
	free(w);
}

/* ---- the loop's side ---- */

static time_t scaled_now(const struct warmup *w)
{
	time_t now = time(NULL);
	return w->clock_base + (time_t)((double)(now - w->clock_base) * w->cfg.clock_scale);
}

static bool for_site(const struct warmup *w, const struct policy_warmup *p)
{
	return policy_sites_include(&p->sites, w->site);
}

void warmup_set_policy(struct warmup *w, struct policy *p, const struct namespace *ns,
                       uint64_t version, int64_t policy_ctime)
{
	if (w == NULL) {
		policy_free(p);
		return;
	}
	struct pipe_state *pipes = NULL;
	if (p != NULL && p->n_warmup > 0) {
		pipes = calloc(p->n_warmup, sizeof(*pipes));
		if (pipes == NULL) {
			policy_free(p);
			return;
		}
	}
	for (size_t i = 0; w->pipes != NULL && w->policy != NULL && i < w->policy->n_warmup; i++)
		run_free(w->pipes[i].pending);
	free(w->pipes);
	policy_free(w->policy);
	w->policy = p;
	w->pipes = pipes;
	if (p == NULL)
		return;
	time_t now = scaled_now(w);
	for (size_t i = 0; i < p->n_warmup; i++) {
		const struct policy_warmup *pw = &p->warmup[i];
		snprintf(pipes[i].name, sizeof(pipes[i].name), "%s", pw->item.name);
		if (!for_site(w, pw))
			continue;
		if (pw->list != NULL) {
			log_warn("warmup %s: 'list' files are not read yet; give 'paths' instead",
			         pw->item.name);
			continue;
		}
		if (pw->trigger == POLICY_TRIGGER_SCHEDULE)
			pipes[i].next_fire = policy_cron_next(&pw->schedule.cron, now);
		if (pw->trigger != POLICY_TRIGGER_ONCE)
			continue;
		char tag[POLICY_MAX_NAME + 48];
		snprintf(tag, sizeof(tag), "once:%" PRId64 ":%s", policy_ctime, pw->item.name);
		pthread_mutex_lock(&w->db_lock);
		sqlite3_stmt *st = db_prepare(w, "SELECT 1 FROM runs WHERE tag = ?");
		bool seen = true;
		if (st != NULL) {
			sqlite3_bind_text(st, 1, tag, -1, SQLITE_STATIC);
			seen = sqlite3_step(st) == SQLITE_ROW;
		}
		sqlite3_finalize(st);
		pthread_mutex_unlock(&w->db_lock);
		if (!seen)
			start_full_run(w, pw, ns, version, "once", tag);
	}
}

void warmup_touched(struct warmup *w, const struct namespace *ns, uint64_t ino)
{
	if (w == NULL || w->policy == NULL)
		return;
	struct node_rec rec;
	if (namespace_get(ns, ino, &rec) < 0 || rec.type != NODE_FILE)
		return;
	struct plan *pl = calloc(1, sizeof(*pl));
	if (pl == NULL)
		return;
	if (namespace_path(ns, ino, pl->path, sizeof(pl->path)) < 0) {
		free(pl);
		return;
	}
	for (size_t i = 0; i < w->policy->n_warmup; i++) {
		const struct policy_warmup *pw = &w->policy->warmup[i];
		if (pw->trigger != POLICY_TRIGGER_ON_CHANGE || !for_site(w, pw) || pw->list != NULL)
			continue;
		pl->pipe = pw;
		if (!plan_matches(pl, pl->path))
			continue;
		if (w->pipes[i].pending == NULL) {
			w->pipes[i].pending = run_new(pw->item.name, "on-change", KIND_WARM, 0);
			if (w->pipes[i].pending == NULL)
				continue;
			run_settings(w->pipes[i].pending, pw);
		}
		pl->run = w->pipes[i].pending;
		plan_file(pl, &rec);
	}
	free(pl);
}

void warmup_applied(struct warmup *w, const struct namespace *ns, uint64_t version,
                    int64_t commit_ns)
{
	if (w == NULL || w->policy == NULL)
		return;
	for (size_t i = 0; i < w->policy->n_warmup; i++) {
		struct wrun *run = w->pipes[i].pending;
		if (run == NULL)
			continue;
		w->pipes[i].pending = NULL;
		run->version = version;
		run->commit_ns = commit_ns;
		if (run->evict_previous) {
			/* What stays under the paths, so that it is not evicted. */
			struct plan *pl = calloc(1, sizeof(*pl));
			if (pl != NULL) {
				pl->pipe = &w->policy->warmup[i];
				pl->run = run;
				pl->keep_only = true;
				walk_root(pl, ns);
				free(pl);
			}
		}
		run_submit(w, run, NULL);
	}
}

void warmup_tick(struct warmup *w, const struct namespace *ns, uint64_t version,
                 struct members *members)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->nmembers =
	    members != NULL ? members_snapshot(members, w->members, CACHE_MEMBERS_MAX) : 0;
	pthread_mutex_unlock(&w->lock);
	if (w->policy == NULL || ns == NULL)
		return;
	time_t now = scaled_now(w);
	for (size_t i = 0; i < w->policy->n_warmup; i++) {
		const struct policy_warmup *pw = &w->policy->warmup[i];
		struct pipe_state *ps = &w->pipes[i];
		if (pw->trigger != POLICY_TRIGGER_SCHEDULE || ps->next_fire <= 0 ||
		    now < ps->next_fire)
			continue;
		log_info("warmup %s: schedule '%s' fires", pw->item.name,
		         pw->schedule.text ? pw->schedule.text : "");
		ps->next_fire = policy_cron_next(&pw->schedule.cron, now);
		/* A run still going is not doubled. */
		bool busy = false;
		pthread_mutex_lock(&w->lock);
		for (struct wrun *r = w->runs; r != NULL; r = r->next)
			if (r->state <= RUN_RUNNING && strcmp(r->pipeline, pw->item.name) == 0)
				busy = true;
		pthread_mutex_unlock(&w->lock);
		if (!busy)
			start_full_run(w, pw, ns, version, "schedule", NULL);
	}
}

/* ---- WARMUP_START and WARMUP_STATUS ---- */

static void pack_run(msgpack_packer *pk, const struct wrun *r)
{
	msgpack_pack_map(pk, 19);
	msg_pack_key(pk, "run");
	msgpack_pack_int64(pk, r->id);
	msg_pack_key(pk, "pipeline");
	msg_pack_cstr(pk, r->pipeline);
	msg_pack_key(pk, "trigger");
	msg_pack_cstr(pk, r->trigger);
	msg_pack_key(pk, "kind");
	msg_pack_cstr(pk, r->kind == KIND_EVICT ? "evict" : "warm");
	msg_pack_key(pk, "state");
	msg_pack_cstr(pk, state_names[r->state]);
	msg_pack_key(pk, "version");
	msgpack_pack_uint64(pk, r->version);
	msg_pack_key(pk, "files");
	msgpack_pack_uint64(pk, r->files);
	msg_pack_key(pk, "files_done");
	msgpack_pack_uint64(pk, r->files_done);
	msg_pack_key(pk, "bytes");
	msgpack_pack_uint64(pk, r->bytes);
	msg_pack_key(pk, "bytes_done");
	msgpack_pack_uint64(pk, r->bytes_done);
	msg_pack_key(pk, "blocks");
	msgpack_pack_uint64(pk, r->nblocks);
	msg_pack_key(pk, "blocks_done");
	msgpack_pack_uint64(pk, r->blocks_done);
	msg_pack_key(pk, "failures");
	msgpack_pack_uint64(pk, r->failures);
	msg_pack_key(pk, "evicted_blocks");
	msgpack_pack_uint64(pk, r->evicted);
	msg_pack_key(pk, "created_ns");
	msgpack_pack_int64(pk, r->created_ns);
	msg_pack_key(pk, "started_ns");
	msgpack_pack_int64(pk, r->started_ns);
	msg_pack_key(pk, "finished_ns");
	msgpack_pack_int64(pk, r->finished_ns);
	msg_pack_key(pk, "now_ns");
	msgpack_pack_int64(pk, wall_ns());
	msg_pack_key(pk, "error");
	msg_pack_cstr(pk, r->error);
}

static void status(struct warmup *w, uint64_t version, struct conn *c, uint64_t id,
                   const msgpack_object *body)
{
	char why[300];
	uint64_t run_id = 0;
	const char *name = NULL;
	size_t nlen = 0;
	if (msg_get_u64(body, "run", false, INT64_MAX, &run_id, why, sizeof(why)) < 0 ||
	    msg_get_bytes(body, "pipeline", false, 1, POLICY_MAX_NAME, &name, &nlen, why,
	                  sizeof(why)) < 0) {
		conn_send_error(c, id, -EINVAL, "WARMUP_STATUS: %s", why);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 4);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	msg_pack_key(&pk, "site");
	msg_pack_cstr(&pk, w->site);
	msg_pack_key(&pk, "pipelines");
	size_t np = 0;
	for (size_t i = 0; w->policy != NULL && i < w->policy->n_warmup; i++)
		np += for_site(w, &w->policy->warmup[i]);
	msgpack_pack_array(&pk, (uint32_t)np);
	for (size_t i = 0; w->policy != NULL && i < w->policy->n_warmup; i++) {
		const struct policy_warmup *pw = &w->policy->warmup[i];
		if (!for_site(w, pw))
			continue;
		msgpack_pack_map(&pk, 3);
		msg_pack_key(&pk, "name");
		msg_pack_cstr(&pk, pw->item.name);
		msg_pack_key(&pk, "trigger");
		msg_pack_cstr(&pk, pw->trigger == POLICY_TRIGGER_ONCE       ? "once"
		                   : pw->trigger == POLICY_TRIGGER_SCHEDULE ? "schedule"
		                                                            : "on-change");
		msg_pack_key(&pk, "next_fire");
		msgpack_pack_int64(&pk, (int64_t)w->pipes[i].next_fire);
	}
	msg_pack_key(&pk, "runs");
	pthread_mutex_lock(&w->lock);
	uint32_t n = 0;
	for (struct wrun *r = w->runs; r != NULL; r = r->next)
		if ((run_id == 0 || (uint64_t)r->id == run_id) &&
		    (name == NULL ||
		     (strlen(r->pipeline) == nlen && memcmp(r->pipeline, name, nlen) == 0)))
			n++;
	msgpack_pack_array(&pk, n);
	for (struct wrun *r = w->runs; r != NULL; r = r->next)
		if ((run_id == 0 || (uint64_t)r->id == run_id) &&
		    (name == NULL ||
		     (strlen(r->pipeline) == nlen && memcmp(r->pipeline, name, nlen) == 0)))
			pack_run(&pk, r);
	pthread_mutex_unlock(&w->lock);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static bool is_glob(const char *s)
{
	return strpbrk(s, "*?[{") != NULL;
}

static void start(struct warmup *w, const struct namespace *ns, uint64_t version, struct conn *c,
                  uint64_t id, const msgpack_object *body)
{
	char why[400];
	bool evict = false;
	const char *name = NULL;
	size_t nlen = 0;
	const msgpack_object_array *paths = NULL;
	if (msg_get_bool(body, "evict", false, &evict, why, sizeof(why)) < 0 ||
	    msg_get_bytes(body, "pipeline", false, 1, POLICY_MAX_NAME, &name, &nlen, why,
	                  sizeof(why)) < 0 ||
	    msg_get_array(body, "paths", false, PATHS_MAX, &paths, why, sizeof(why)) < 0) {
		conn_send_error(c, id, -EINVAL, "WARMUP_START: %s", why);
		return;
	}
	if ((name == NULL) == (paths == NULL || paths->size == 0)) {
		conn_send_error(c, id, -EINVAL,
		                "WARMUP_START: give either paths (1..%d) or a pipeline's name",
		                PATHS_MAX);
		return;
	}
	int r;
	struct wrun *run = NULL;
	if (name != NULL) {
		const struct policy_warmup *pw = NULL;
		for (size_t i = 0; w->policy != NULL && i < w->policy->n_warmup; i++)
			if (strlen(w->policy->warmup[i].item.name) == nlen &&
			    memcmp(w->policy->warmup[i].item.name, name, nlen) == 0)
				pw = &w->policy->warmup[i];
		if (pw == NULL || !for_site(w, pw)) {
			conn_send_error(
			    c, id, -ENOENT,
			    "no warmup pipeline '%.*s' for site %s in the policy in force",
			    (int)nlen, name, w->site);
			return;
		}
		r = start_full_run(w, pw, ns, version, "manual", NULL);
		if (r < 0) {
			conn_send_error(c, id, r, "pipeline '%.*s': %s", (int)nlen, name,
			                r == -ENOENT ? "no file under its paths" : strerror(-r));
			return;
		}
	} else {
		struct plan *pl = calloc(1, sizeof(*pl));
		struct glob **globs = calloc(paths->size, sizeof(*globs));
		run = run_new(ADHOC, evict ? "evict" : "manual", evict ? KIND_EVICT : KIND_WARM,
		              version);
		r = pl && globs && run ? 0 : -ENOMEM;
		for (uint32_t i = 0; r == 0 && i < paths->size; i++) {
			const msgpack_object *o = &paths->ptr[i];
			if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
			    o->via.str.size > NODE_PATH_MAX || o->via.str.ptr[0] != '/' ||
			    memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL) {
				snprintf(why, sizeof(why),
				         "paths[%u]: not an absolute path of at most %d bytes", i,
				         NODE_PATH_MAX);
				r = -EINVAL;
				break;
			}
			char *p = strndup(o->via.str.ptr, o->via.str.size);
			if (p == NULL) {
				r = -ENOMEM;
				break;
			}
			struct node_rec rec;
			pl->run = run;
			if (!is_glob(p) && namespace_resolve(ns, p, strlen(p), &rec) == 0) {
				if (rec.type == NODE_FILE) {
					plan_file(pl, &rec);
				} else if (rec.type == NODE_DIR) {
					snprintf(pl->path, sizeof(pl->path), "%s", p);
					pl->plen = strlen(pl->path);
					while (pl->plen > 1 && pl->path[pl->plen - 1] == '/')
						pl->path[--pl->plen] = '\0';
					walk(pl, ns, rec.ino, true);
				}
			} else if (is_glob(p)) {
				char gerr[200];
				if (glob_compile(p, strlen(p), &globs[pl->nglobs], gerr,
				                 sizeof(gerr)) < 0) {
					snprintf(why, sizeof(why), "paths[%u] '%s': %s", i, p,
					         gerr);
					r = -EINVAL;
				} else {
					pl->nglobs++;
				}
			} else {
				snprintf(why, sizeof(why),
				         "%s: no such file or directory at version %" PRIu64, p,
				         version);
				r = -ENOENT;
			}
			free(p);
		}
		if (r == 0 && pl->nglobs > 0) {
			pl->globs = globs;
			walk_root(pl, ns);
		}
		for (size_t i = 0; globs != NULL && i < pl->nglobs; i++)
			glob_free(globs[i]);
		free(globs);
		free(pl);
		if (r == 0 && run->nobjs == 0) {
			snprintf(why, sizeof(why),
			         "no file with cacheable data under the paths at version %" PRIu64,
			         version);
			r = -ENOENT;
		}
		if (r < 0) {
			run_free(run);
			conn_send_error(c, id, r, "WARMUP_START: %s",
			                r == -ENOMEM ? "out of memory" : why);
			return;
		}
		r = run_submit(w, run, NULL);
		if (r < 0) {
			conn_send_error(c, id, r, "WARMUP_START: cannot record the run: %s",
			                strerror(-r));
			return;
		}
	}
	/* The newest run is the one just submitted. */
	pthread_mutex_lock(&w->lock);
	int64_t rid = 0;
	uint64_t files = 0, bytes = 0;
	for (struct wrun *x = w->runs; x != NULL; x = x->next)
		if (x->id > rid) {
			rid = x->id;
			files = x->files;
			bytes = x->bytes;
		}
	pthread_mutex_unlock(&w->lock);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 4);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	msg_pack_key(&pk, "run");
	msgpack_pack_int64(&pk, rid);
	msg_pack_key(&pk, "files");
	msgpack_pack_uint64(&pk, files);
	msg_pack_key(&pk, "bytes");
	msgpack_pack_uint64(&pk, bytes);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

void warmup_dispatch(struct warmup *w, const struct namespace *ns, uint64_t version, struct conn *c,
                     struct request *r)
{
	const struct frame *f = &r->frame;
	if (w == NULL)
		conn_send_error(c, f->id, -ENOTSUP, "warmup is not running at this mirror");
	else if (f->body == NULL || f->body->type != MSGPACK_OBJECT_MAP)
		conn_send_error(c, f->id, -EINVAL, "%s: body is not a map",
		                proto_msg_name(f->type));
	else if (f->type == MT_WARMUP_START)
		start(w, ns, version, c, f->id, f->body);
	else
		status(w, version, c, f->id, f->body);
	request_free(r);
}

void warmup_write_status(struct warmup *w, struct json_writer *jw)
{
	json_begin_array(jw);
	if (w != NULL) {
		pthread_mutex_lock(&w->lock);
		for (struct wrun *r = w->runs; r != NULL; r = r->next) {
			json_begin_object(jw);
			json_key(jw, "run");
			json_int(jw, r->id);
			json_key(jw, "pipeline");
			json_string(jw, r->pipeline);
			json_key(jw, "state");
			json_string(jw, state_names[r->state]);
			json_key(jw, "version");
			json_uint(jw, r->version);
			json_key(jw, "files");
			json_uint(jw, r->files);
			json_key(jw, "files_done");
			json_uint(jw, r->files_done);
			json_key(jw, "bytes");
			json_uint(jw, r->bytes);
			json_key(jw, "bytes_done");
			json_uint(jw, r->bytes_done);
			json_key(jw, "error");
			json_string(jw, r->error);
			json_end_object(jw);
		}
		pthread_mutex_unlock(&w->lock);
	}
	json_end_array(jw);
}
