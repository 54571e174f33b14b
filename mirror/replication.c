/* The replication worker: see replication.h. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "internal.h" /* the client library's buckets, shared like mp-cache does */
#include "log.h"
#include "msg.h"
#include "node.h"
#include "objstore.h"
#include "policy.h"
#include "replica.h"
#include "replication.h"

enum row_state { ROW_PENDING = 0, ROW_VERIFIED = 1, ROW_SUPERSEDED = 2 };
enum want_kind { WANT_OBJECT, WANT_SWEEP_BEGIN, WANT_SWEEP_END };
enum job_kind { JOB_COPY, JOB_SCRUB };

#define MAX_THREADS     64
#define VSET_BUCKETS    65536
#define FAILING_ATTEMPT 3
#define RATE_WINDOW_S   10

struct want {
	enum want_kind kind;
	char *src, *key, *etag, *dst, *rule;
	uint64_t size, keep_ms;
	int64_t at_ns;
	struct want *next;
};

struct job {
	struct replica_job r; /* what is copied or checked, first: a job is one */
	enum job_kind kind;
	int64_t id;
	uint64_t attempts;
	struct job *next;
};

/* Copies verified at the site, for reads: (src, key, etag) -> dst. */
struct ventry {
	uint64_t h;
	char *src, *key, *etag, *dst;
	struct ventry *next;
};

struct rule_stats {
	char name[POLICY_MAX_NAME + 1];
	unsigned in_flight;
	double tokens;
	int64_t refill_ns;
	uint64_t copied_bytes, copied_objects, failures;
	/* Bytes copied per second over the last RATE_WINDOW_S seconds. */
	int64_t sec_of[RATE_WINDOW_S];
	uint64_t sec_bytes[RATE_WINDOW_S];
	char last_error[400];
	struct metric *m_pending, *m_pending_bytes, *m_verified, *m_lag, *m_copied, *m_failures;
	struct rule_stats *next;
};

struct replication {
	struct replication_config cfg;
	char *site, *data_dir;
	mp_config *client_cfg;
	mp_client *client;
	struct replica_env env; /* what the copiers copy with */
	sqlite3 *db;
	pthread_mutex_t db_lock;
	/* Everything below under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake, jobs_cond;
	struct policy *policy;
	struct want *in_head, **in_tail;
	struct job *jobs;
	int64_t *in_flight; /* row ids being worked on */
	size_t n_in_flight;
	struct ventry **vset;
	struct rule_stats *rules;
	uint64_t gen;
	bool stopping, sweep_pending;
	int64_t last_sweep_ns;
	uint64_t scrub_mismatches, deleted;
	uint64_t gc_held;  /* replicas the breaker keeps from deletion; 0 when not held */
	bool gc_confirmed; /* an operator let the held pass go */
	pthread_t planner, copiers[MAX_THREADS];
	unsigned n_copiers;
	struct metrics *metrics;
	struct metric *f_pending, *f_pending_bytes, *f_verified, *f_lag, *f_copied, *f_failures;
	struct metric *m_scrub_mismatches, *m_deleted, *m_gc_held;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the verified set ---- */

static uint64_t object_hash(const char *src, const char *key, const char *etag)
{
	uint64_t h = hash_bytes(src, strlen(src), 0x7265706c);
	h = hash_bytes(key, strlen(key), h);
	return hash_mix64(hash_bytes(etag, strlen(etag), h));
}

static struct ventry **vfind(struct replication *r, const char *src, const char *key,
                             const char *etag, const char *dst)
{
	uint64_t h = object_hash(src, key, etag);
	struct ventry **p = &r->vset[h % VSET_BUCKETS];
	for (; *p != NULL; p = &(*p)->next)
		if ((*p)->h == h && strcmp((*p)->src, src) == 0 && strcmp((*p)->key, key) == 0 &&
		    strcmp((*p)->etag, etag) == 0 && (dst == NULL || strcmp((*p)->dst, dst) == 0))
			return p;
	return p;
}

static void vset_add(struct replication *r, const char *src, const char *key, const char *etag,
                     const char *dst)
{
	struct ventry **p = vfind(r, src, key, etag, dst);
	if (*p != NULL)
		return;
	struct ventry *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return; /* reads go to the origin: slower, still right */
	e->h = object_hash(src, key, etag);
	e->src = strdup(src);
	e->key = strdup(key);
	e->etag = strdup(etag);
	e->dst = strdup(dst);
	if (e->src == NULL || e->key == NULL || e->etag == NULL || e->dst == NULL) {
		free(e->src);
		free(e->key);
		free(e->etag);
		free(e->dst);
		free(e);
		return;
	}
	*p = e;
}

static void vset_remove(struct replication *r, const char *src, const char *key, const char *etag,
                        const char *dst)
{
	struct ventry **p = vfind(r, src, key, etag, dst);
	struct ventry *e = *p;
	if (e == NULL)
		return;
	*p = e->next;
	free(e->src);
	free(e->key);
	free(e->etag);
	free(e->dst);
	free(e);
}

const char *replication_replica_of(struct replication *r, const char *bucket, const char *key,
                                   const char *etag)
{
	static __thread char dst[64];
	if (r == NULL)
		return NULL;
	pthread_mutex_lock(&r->lock);
	struct ventry *e = *vfind(r, bucket, key, etag, NULL);
	if (e != NULL)
		snprintf(dst, sizeof(dst), "%s", e->dst);
	pthread_mutex_unlock(&r->lock);
	return e != NULL ? dst : NULL;
}

/* ---- rules ---- */

static struct rule_stats *rule_stats(struct replication *r, const char *name)
{
	for (struct rule_stats *s = r->rules; s != NULL; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	struct rule_stats *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->m_pending = metric_child(r->f_pending, name);
	s->m_pending_bytes = metric_child(r->f_pending_bytes, name);
	s->m_verified = metric_child(r->f_verified, name);
	s->m_lag = metric_child(r->f_lag, name);
	s->m_copied = metric_child(r->f_copied, name);
	s->m_failures = metric_child(r->f_failures, name);
	s->next = r->rules;
	r->rules = s;
	return s;
}

static const struct policy_replication *rule_named(const struct policy *p, const char *name)
{
	for (size_t i = 0; p != NULL && i < p->n_replication; i++)
		if (strcmp(p->replication[i].item.name, name) == 0)
			return &p->replication[i];
	return NULL;
}

/* Holds a copier to the rule's bandwidth: a token bucket of one second. */
static void throttle(void *arg, const char *rule, uint64_t bandwidth, size_t bytes)
{
	struct replication *r = arg;
	if (bandwidth == 0)
		return;
	pthread_mutex_lock(&r->lock);
	struct rule_stats *s = rule_stats(r, rule);
	double wait = 0;
	if (s != NULL) {
		int64_t t = now_ns();
		if (s->refill_ns == 0) {
			s->refill_ns = t;
			s->tokens = 0;
		}
		s->tokens += (double)(t - s->refill_ns) / 1e9 * (double)bandwidth;
		if (s->tokens > (double)bandwidth)
			s->tokens = (double)bandwidth;
		s->refill_ns = t;
		s->tokens -= (double)bytes;
		if (s->tokens < 0)
			wait = -s->tokens / (double)bandwidth;
	}
	pthread_mutex_unlock(&r->lock);
	if (wait > 0)
		usleep((useconds_t)(wait * 1e6));
}

/* ---- the table ---- */

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS replicas ("
    " id INTEGER PRIMARY KEY, src TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL,"
    " dst TEXT NOT NULL, rule TEXT NOT NULL, keep_ms INTEGER NOT NULL DEFAULT 0,"
    " state INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL DEFAULT 0, md5 TEXT,"
    " gen INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_ns INTEGER NOT NULL DEFAULT 0, queued_ns INTEGER NOT NULL DEFAULT 0,"
    " verified_ns INTEGER NOT NULL DEFAULT 0, checked_ns INTEGER NOT NULL DEFAULT 0,"
    " superseded_ns INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
    " UNIQUE (src, key, etag, dst));"
    "CREATE INDEX IF NOT EXISTS replicas_state ON replicas (state, next_ns);"
    "CREATE INDEX IF NOT EXISTS replicas_queue ON replicas (state, queued_ns, id);"
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

static int db_exec(struct replication *r, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(r->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		log_warn("replication: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static sqlite3_stmt *db_prepare(struct replication *r, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_warn("replication: cannot prepare %s: %s", sql, sqlite3_errmsg(r->db));
		return NULL;
	}
	return st;
}

static const char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t != NULL ? (const char *)t : "";
}

static void insert_wants(struct replication *r, struct want *list)
{
	sqlite3_stmt *ins = db_prepare(
	    r, "INSERT INTO replicas (src, key, etag, dst, rule, keep_ms, size, gen, queued_ns)"
	       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (src, key, etag, dst) DO UPDATE"
	       " SET gen = excluded.gen, rule = excluded.rule, keep_ms = excluded.keep_ms,"
	       " size = max(size, excluded.size), superseded_ns = 0,"
	       " state = CASE WHEN state = 2 THEN (CASE WHEN verified_ns > 0 THEN 1 ELSE 0 END)"
	       " ELSE state END");
	sqlite3_stmt *revived =
	    db_prepare(r, "SELECT state FROM replicas WHERE src = ? AND key = ? AND etag = ? AND "
	                  "dst = ?");
	if (ins == NULL || revived == NULL)
		goto out;
	db_exec(r, "BEGIN");
	for (struct want *w = list; w != NULL; w = w->next) {
		if (w->kind == WANT_SWEEP_BEGIN) {
			r->gen++;
			continue;
		}
		if (w->kind == WANT_SWEEP_END) {
			sqlite3_stmt *gone = db_prepare(
			    r,
			    "SELECT src, key, etag, dst FROM replicas WHERE gen < ? AND state = 1");
			int64_t t = now_ns();
			if (gone != NULL) {
				sqlite3_bind_int64(gone, 1, (int64_t)r->gen);
				int n = 0;
				while (sqlite3_step(gone) == SQLITE_ROW)
					n++;
				sqlite3_finalize(gone);
				if (n > 0)
					log_info("replication: %d replicas are no longer wanted; "
					         "each is "
					         "deleted once its rule's keep has passed",
					         n);
			}
			char sql[300];
			snprintf(sql, sizeof(sql),
			         "UPDATE replicas SET state = 2, superseded_ns = %" PRId64
			         " WHERE gen < %" PRIu64 " AND state = 1;"
			         "DELETE FROM replicas WHERE gen < %" PRIu64 " AND state = 0;"
			         "INSERT INTO meta (k, v) VALUES ('gen', %" PRIu64
			         ") ON CONFLICT (k) DO UPDATE SET v = excluded.v",
			         t, r->gen, r->gen, r->gen);
			db_exec(r, sql);
			continue;
		}
		sqlite3_reset(ins);
		sqlite3_bind_text(ins, 1, w->src, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, w->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 3, w->etag, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 4, w->dst, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 5, w->rule, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 6, (int64_t)w->keep_ms);
		sqlite3_bind_int64(ins, 7, (int64_t)w->size);
		sqlite3_bind_int64(ins, 8, (int64_t)r->gen);
		sqlite3_bind_int64(ins, 9, w->at_ns);
		if (sqlite3_step(ins) != SQLITE_DONE)
			log_warn("replication: cannot record %s/%.300s: %s", w->src, w->key,
			         sqlite3_errmsg(r->db));
		/* A replica wanted again after it was superseded serves reads
		 * again (the object never changed). */
		sqlite3_reset(revived);
		sqlite3_bind_text(revived, 1, w->src, -1, SQLITE_STATIC);
		sqlite3_bind_text(revived, 2, w->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(revived, 3, w->etag, -1, SQLITE_STATIC);
		sqlite3_bind_text(revived, 4, w->dst, -1, SQLITE_STATIC);
		if (sqlite3_step(revived) == SQLITE_ROW && sqlite3_column_int(revived, 0) == 1) {
			pthread_mutex_lock(&r->lock);
			vset_add(r, w->src, w->key, w->etag, w->dst);
			pthread_mutex_unlock(&r->lock);
		}
	}
	db_exec(r, "COMMIT");
out:
	sqlite3_finalize(ins);
	sqlite3_finalize(revived);
}

static void want_free(struct want *w)
{
	while (w != NULL) {
		struct want *next = w->next;
		free(w->src);
		free(w->key);
		free(w->etag);
		free(w->dst);
		free(w->rule);
		free(w);
		w = next;
	}
}

/* ---- copying, on a copier thread ---- */

static void in_flight_remove(struct replication *r, int64_t id)
{
	for (size_t i = 0; i < r->n_in_flight; i++)
		if (r->in_flight[i] == id) {
			r->in_flight[i] = r->in_flight[--r->n_in_flight];
			return;
		}
}

/* A copy finished after a sweep dropped its row (its file was removed or
 * overwritten while the copy was in flight): recorded as superseded with no
 * keep, so the deleter removes it from the site bucket instead of leaving
 * an object nothing tracks. A row for it queued again since is left alone.
 * Called with db_lock held. */
static void record_unwanted_copy(struct replication *r, const struct job *j, const char *md5,
                                 uint64_t size, int64_t t)
{
	sqlite3_stmt *st = db_prepare(
	    r, "INSERT INTO replicas (src, key, etag, dst, rule, keep_ms, state, size, md5, gen,"
	       " verified_ns, checked_ns, superseded_ns) VALUES (?, ?, ?, ?, ?, 0, 2, ?, ?, 0, ?,"
	       " ?, ?) ON CONFLICT (src, key, etag, dst) DO NOTHING");
	if (st == NULL)
		return;
	sqlite3_bind_text(st, 1, j->r.src, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, j->r.key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, j->r.etag, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, j->r.dst, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, j->r.rule, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, (int64_t)size);
	sqlite3_bind_text(st, 7, md5, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, t);
	sqlite3_bind_int64(st, 9, t);
	sqlite3_bind_int64(st, 10, t);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_warn("replication: cannot record an unwanted copy of %s/%.300s: %s", j->r.src,
		         j->r.key, sqlite3_errmsg(r->db));
	else if (sqlite3_changes(r->db) > 0)
		log_info("replication %s: %s/%.300s was no longer wanted when its copy finished; "
		         "it will be deleted from %s",
		         j->r.rule, j->r.src, j->r.key, j->r.dst);
	sqlite3_finalize(st);
}

static void finish_copy(struct replication *r, const struct job *j, int rc, const char *md5,
                        uint64_t size, const char *why)
{
	int64_t t = now_ns();
	pthread_mutex_lock(&r->db_lock);
	sqlite3_stmt *st;
	if (rc == 0) {
		st = db_prepare(r,
		                "UPDATE replicas SET state = CASE WHEN state = 2 THEN 2 ELSE 1 END,"
		                " size = ?, md5 = ?, verified_ns = ?, checked_ns = ?, attempts = 0,"
		                " last_error = NULL WHERE id = ?");
		if (st != NULL) {
			sqlite3_bind_int64(st, 1, (int64_t)size);
			sqlite3_bind_text(st, 2, md5, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, t);
			sqlite3_bind_int64(st, 4, t);
			sqlite3_bind_int64(st, 5, j->id);
		}
	} else {
		uint64_t attempts = j->attempts + 1;
		uint64_t delay_ms = attempts >= 20 ? r->cfg.retry_max_ms : 500ull << attempts;
		if (delay_ms > r->cfg.retry_max_ms)
			delay_ms = r->cfg.retry_max_ms;
		st = db_prepare(r, "UPDATE replicas SET attempts = ?, next_ns = ?, last_error = ?"
		                   " WHERE id = ?");
		if (st != NULL) {
			sqlite3_bind_int64(st, 1, (int64_t)attempts);
			sqlite3_bind_int64(st, 2, t + (int64_t)delay_ms * 1000000);
			sqlite3_bind_text(st, 3, why, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 4, j->id);
		}
		log_warn("replication %s: attempt %" PRIu64 " failed: %s (again in %.1f s)",
		         j->r.rule, attempts, why, (double)delay_ms / 1000);
	}
	bool dropped = false;
	if (st != NULL && sqlite3_step(st) != SQLITE_DONE)
		log_warn("replication: cannot record the result for %s/%.300s: %s", j->r.src,
		         j->r.key, sqlite3_errmsg(r->db));
	else if (st != NULL && rc == 0 && sqlite3_changes(r->db) == 0)
		dropped = true;
	sqlite3_finalize(st);
	if (dropped)
		record_unwanted_copy(r, j, md5, size, t);
	pthread_mutex_unlock(&r->db_lock);
	pthread_mutex_lock(&r->lock);
	struct rule_stats *rs = rule_stats(r, j->r.rule);
	if (rs != NULL) {
		if (rs->in_flight > 0)
			rs->in_flight--;
		if (rc == 0) {
			rs->copied_bytes += size;
			rs->copied_objects++;
			int64_t sec = now_ns() / 1000000000;
			unsigned slot = (unsigned)(sec % RATE_WINDOW_S);
			if (rs->sec_of[slot] != sec) {
				rs->sec_of[slot] = sec;
				rs->sec_bytes[slot] = 0;
			}
			rs->sec_bytes[slot] += size;
			metric_add(rs->m_copied, (double)size);
		} else {
			rs->failures++;
			metric_add(rs->m_failures, 1);
			snprintf(rs->last_error, sizeof(rs->last_error), "%s", why);
		}
	}
	if (rc == 0 && !dropped)
		vset_add(r, j->r.src, j->r.key, j->r.etag, j->r.dst);
	in_flight_remove(r, j->id);
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

static void finish_scrub(struct replication *r, const struct job *j, int ok, const char *why)
{
	pthread_mutex_lock(&r->db_lock);
	char sql[200];
	if (ok > 0)
		snprintf(sql, sizeof(sql),
		         "UPDATE replicas SET checked_ns = %" PRId64 " WHERE id = %" PRId64,
		         now_ns(), j->id);
	else if (ok == 0)
		snprintf(sql, sizeof(sql),
		         "UPDATE replicas SET state = 0, attempts = 0, next_ns = 0, verified_ns = 0"
		         " WHERE id = %" PRId64,
		         j->id);
	else /* cannot tell now: look again at the next interval */
		snprintf(sql, sizeof(sql),
		         "UPDATE replicas SET checked_ns = %" PRId64 " WHERE id = %" PRId64,
		         now_ns(), j->id);
	db_exec(r, sql);
	pthread_mutex_unlock(&r->db_lock);
	pthread_mutex_lock(&r->lock);
	if (ok == 0) {
		vset_remove(r, j->r.src, j->r.key, j->r.etag, j->r.dst);
		r->scrub_mismatches++;
		metric_add(r->m_scrub_mismatches, 1);
		log_warn("replication %s: scrub: %s; copying it again", j->r.rule, why);
	}
	in_flight_remove(r, j->id);
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

static void *copier_main(void *arg)
{
	struct replication *r = arg;
	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (!r->stopping && r->jobs == NULL)
			pthread_cond_wait(&r->jobs_cond, &r->lock);
		if (r->stopping)
			break;
		struct job *j = r->jobs;
		r->jobs = j->next;
		pthread_mutex_unlock(&r->lock);
		char why[2048] = "";
		if (j->kind == JOB_SCRUB) {
			finish_scrub(r, j, replica_scrub(&r->env, &j->r, why, sizeof(why)), why);
		} else {
			char md5[33] = "";
			uint64_t size = 0;
			int rc = replica_copy(&r->env, &j->r, md5, &size, why, sizeof(why));
			finish_copy(r, j, rc, md5, size, why);
		}
		free(j);
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* ---- planning, on the planner thread ---- */

static bool in_flight(const struct replication *r, int64_t id)
{
	for (size_t i = 0; i < r->n_in_flight; i++)
		if (r->in_flight[i] == id)
			return true;
	return false;
}

static void queue_job(struct replication *r, struct job *j)
{
	r->in_flight[r->n_in_flight++] = j->id;
	struct job **p = &r->jobs;
	while (*p != NULL)
		p = &(*p)->next;
	*p = j;
	pthread_cond_signal(&r->jobs_cond);
}

static struct job *job_from_row(sqlite3_stmt *st, enum job_kind kind)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return NULL;
	j->kind = kind;
	j->id = sqlite3_column_int64(st, 0);
	snprintf(j->r.src, sizeof(j->r.src), "%s", col(st, 1));
	snprintf(j->r.key, sizeof(j->r.key), "%s", col(st, 2));
	snprintf(j->r.etag, sizeof(j->r.etag), "%s", col(st, 3));
	snprintf(j->r.dst, sizeof(j->r.dst), "%s", col(st, 4));
	snprintf(j->r.rule, sizeof(j->r.rule), "%s", col(st, 5));
	j->attempts = (uint64_t)sqlite3_column_int64(st, 6);
	snprintf(j->r.md5, sizeof(j->r.md5), "%s", col(st, 7));
	j->r.size = (uint64_t)sqlite3_column_int64(st, 8);
	return j;
}

static void schedule(struct replication *r)
{
	int64_t t = now_ns();
	pthread_mutex_lock(&r->db_lock);
	sqlite3_stmt *st =
	    db_prepare(r, "SELECT id, src, key, etag, dst, rule, attempts, md5, size FROM replicas"
	                  " WHERE state = 0 AND next_ns <= ? ORDER BY queued_ns, id LIMIT 512");
	if (st != NULL)
		sqlite3_bind_int64(st, 1, t);
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		pthread_mutex_lock(&r->lock);
		int64_t id = sqlite3_column_int64(st, 0);
		const char *rule = col(st, 5);
		const struct policy_replication *pr = rule_named(r->policy, rule);
		struct rule_stats *rs = rule_stats(r, rule);
		unsigned limit = pr != NULL ? (unsigned)pr->concurrency : 1;
		bool room =
		    r->n_in_flight < r->n_copiers * 4 && rs != NULL && rs->in_flight < limit;
		if (!in_flight(r, id) && room) {
			struct job *j = job_from_row(st, JOB_COPY);
			if (j != NULL) {
				j->r.verify = pr != NULL ? pr->verify : POLICY_VERIFY_MD5;
				j->r.bandwidth = pr != NULL ? pr->bandwidth : 0;
				rs->in_flight++;
				queue_job(r, j);
			}
		}
		bool full = r->n_in_flight >= r->n_copiers * 4;
		pthread_mutex_unlock(&r->lock);
		if (full)
			break;
	}
	sqlite3_finalize(st);
	/* Scrubs, a few at a time, oldest check first. */
	if (r->cfg.scrub_interval_ms > 0) {
		st = db_prepare(r,
		                "SELECT id, src, key, etag, dst, rule, attempts, md5, size FROM"
		                " replicas WHERE state = 1 AND checked_ns <= ? ORDER BY checked_ns"
		                " LIMIT 4");
		if (st != NULL)
			sqlite3_bind_int64(st, 1, t - (int64_t)r->cfg.scrub_interval_ms * 1000000);
		while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
			pthread_mutex_lock(&r->lock);
			int64_t id = sqlite3_column_int64(st, 0);
			if (!in_flight(r, id) && r->n_in_flight < r->n_copiers * 4) {
				struct job *j = job_from_row(st, JOB_SCRUB);
				if (j != NULL)
					queue_job(r, j);
			}
			pthread_mutex_unlock(&r->lock);
		}
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&r->db_lock);
}

/* Replicas superseded longer ago than their rule's keep leave the site
 * bucket: first from the reads, then from the bucket, then from the table. */
static uint64_t count_rows(struct replication *r, const char *sql, int64_t t)
{
	uint64_t n = 0;
	sqlite3_stmt *st = db_prepare(r, sql);
	if (st != NULL) {
		if (sqlite3_bind_parameter_count(st) > 0)
			sqlite3_bind_int64(st, 1, t);
		if (sqlite3_step(st) == SQLITE_ROW)
			n = (uint64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	return n;
}

/* The breaker: a collection that would delete more than gc_max_delete_count
 * replicas, or more than gc_max_delete_ratio of what the site holds, waits
 * for an operator's confirmation (mp gc --confirm) and says so. Under
 * db_lock. Returns whether collecting may go on. */
static bool collect_allowed(struct replication *r, int64_t t)
{
	uint64_t due = count_rows(r,
	                          "SELECT count(*) FROM replicas WHERE state = 2 AND"
	                          " superseded_ns + keep_ms * 1000000 <= ?",
	                          t);
	pthread_mutex_lock(&r->lock);
	bool allowed = true;
	if (due == 0) {
		r->gc_confirmed = false; /* a confirmation covers one pass */
		r->gc_held = 0;
	} else if (!r->gc_confirmed) {
		uint64_t held =
		    count_rows(r, "SELECT count(*) FROM replicas WHERE state IN (1, 2)", 0);
		bool too_many =
		    due > r->cfg.gc_max_delete_count ||
		    (due > 10 && (double)due > r->cfg.gc_max_delete_ratio * (double)held);
		if (too_many) {
			if (r->gc_held == 0)
				log_warn(
				    "replication: %" PRIu64 " of the site's %" PRIu64
				    " replicas are due for deletion, more than the breaker allows "
				    "(replication.gc_max_delete_count %" PRIu64
				    ", gc_max_delete_ratio %.2f): nothing is deleted until an "
				    "operator confirms with mp gc --confirm",
				    due, held, r->cfg.gc_max_delete_count,
				    r->cfg.gc_max_delete_ratio);
			r->gc_held = due;
			allowed = false;
		} else {
			r->gc_held = 0;
		}
	}
	metric_set(r->m_gc_held, (double)r->gc_held);
	pthread_mutex_unlock(&r->lock);
	return allowed;
}

void replication_gc_confirm(struct replication *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	if (r->gc_held > 0)
		log_info("replication: deletion of %" PRIu64 " replicas confirmed", r->gc_held);
	r->gc_confirmed = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

static void collect(struct replication *r)
{
	int64_t t = now_ns();
	pthread_mutex_lock(&r->db_lock);
	if (!collect_allowed(r, t)) {
		pthread_mutex_unlock(&r->db_lock);
		return;
	}
	sqlite3_stmt *st =
	    db_prepare(r, "SELECT id, src, key, etag, dst, rule, attempts, md5, size FROM replicas"
	                  " WHERE state = 2 AND superseded_ns + keep_ms * 1000000 <= ? LIMIT 256");
	struct job *list = NULL;
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, t);
		while (sqlite3_step(st) == SQLITE_ROW) {
			struct job *j = job_from_row(st, JOB_COPY);
			if (j != NULL) {
				j->next = list;
				list = j;
			}
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->db_lock);
	while (list != NULL) {
		struct job *j = list;
		list = j->next;
		pthread_mutex_lock(&r->lock);
		bool busy = in_flight(r, j->id);
		if (!busy)
			vset_remove(r, j->r.src, j->r.key, j->r.etag, j->r.dst);
		pthread_mutex_unlock(&r->lock);
		struct bucket *b = NULL;
		struct objstore *os = NULL;
		mp_error err = {0};
		struct objstore_error oe = {0};
		char dkey[OBJSTORE_KEY_MAX + 80];
		snprintf(dkey, sizeof(dkey), "%s/%s", j->r.src, j->r.key);
		int rc = busy ? -EBUSY : buckets_acquire(r->client, j->r.dst, false, &b, &os, &err);
		if (rc == 0) {
			rc = objstore_delete(os, dkey, &oe);
			buckets_release(b, os);
			if (rc < 0)
				log_warn("replication %s: cannot delete %s/%.300s: %s", j->r.rule,
				         j->r.dst, dkey, oe.message);
		} else if (rc != -EBUSY) {
			log_warn("replication %s: cannot delete %s/%.300s: %s", j->r.rule, j->r.dst,
			         dkey, err.message);
		}
		if (rc == 0) {
			char sql[120];
			snprintf(sql, sizeof(sql),
			         "DELETE FROM replicas WHERE id = %" PRId64 " AND state = 2",
			         j->id);
			pthread_mutex_lock(&r->db_lock);
			db_exec(r, sql);
			pthread_mutex_unlock(&r->db_lock);
			pthread_mutex_lock(&r->lock);
			r->deleted++;
			metric_add(r->m_deleted, 1);
			pthread_mutex_unlock(&r->lock);
		}
		free(j);
	}
}

static void *planner_main(void *arg)
{
	struct replication *r = arg;
	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct want *list = r->in_head;
		r->in_head = NULL;
		r->in_tail = &r->in_head;
		pthread_mutex_unlock(&r->lock);
		if (list != NULL) {
			pthread_mutex_lock(&r->db_lock);
			insert_wants(r, list);
			pthread_mutex_unlock(&r->db_lock);
			want_free(list);
		}
		schedule(r);
		collect(r);
		pthread_mutex_lock(&r->lock);
		if (r->in_head == NULL && !r->stopping) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 200 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&r->wake, &r->lock, &ts);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* ---- what is wanted, on the mirror's loop ---- */

static void push(struct replication *r, struct want *head, struct want **tail)
{
	if (head == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	*r->in_tail = head;
	r->in_tail = tail;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

struct want_batch {
	struct replication *r;
	const struct namespace *ns;
	struct want *head, **tail;
	int64_t at_ns;
	size_t files;
	char path[NODE_PATH_MAX + NODE_NAME_MAX + 2];
	size_t plen;
};

static struct want *marker(enum want_kind kind)
{
	struct want *w = calloc(1, sizeof(*w));
	if (w != NULL)
		w->kind = kind;
	return w;
}

static void batch_add(struct want_batch *b, struct want *w)
{
	if (w == NULL)
		return;
	*b->tail = w;
	b->tail = &w->next;
}

/* The objects of the file at b->path, if a replicate rule wants them here. */
static void want_file(struct want_batch *b, const struct node_rec *rec)
{
	const struct policy_replication *rule = policy_match(b->r->policy, b->path, b->r->site);
	if (rule == NULL || rule->data != POLICY_DATA_REPLICATE || rule->bucket == NULL ||
	    rec->extra_len == 0)
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
	b->files++;
	const msgpack_object_array *a = &u.data.via.array;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *e = &a->ptr[i];
		if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 5)
			continue;
		const msgpack_object *f = e->via.array.ptr;
		if (f[0].type != MSGPACK_OBJECT_STR || f[1].type != MSGPACK_OBJECT_STR ||
		    f[2].type != MSGPACK_OBJECT_STR)
			continue;
		struct want *w = calloc(1, sizeof(*w));
		if (w == NULL)
			break;
		w->kind = WANT_OBJECT;
		w->src = strndup(f[0].via.str.ptr, f[0].via.str.size);
		w->key = strndup(f[1].via.str.ptr, f[1].via.str.size);
		w->etag = strndup(f[2].via.str.ptr, f[2].via.str.size);
		w->dst = strdup(rule->bucket);
		w->rule = strdup(rule->item.name);
		w->keep_ms = rule->keep_ms;
		w->at_ns = b->at_ns;
		if (f[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		    f[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			w->size = f[3].via.u64 + f[4].via.u64;
		if (w->src == NULL || w->key == NULL || w->etag == NULL || w->dst == NULL ||
		    w->rule == NULL) {
			want_free(w);
			break;
		}
		batch_add(b, w);
	}
	msgpack_unpacked_destroy(&u);
}

static int walk_visit(void *arg, const struct node_rec *rec)
{
	struct want_batch *b = arg;
	size_t saved = b->plen;
	if (b->plen + 1 + rec->name_len >= sizeof(b->path))
		return 0;
	if (b->plen > 1)
		b->path[b->plen++] = '/';
	memcpy(b->path + b->plen, rec->name, rec->name_len);
	b->plen += rec->name_len;
	b->path[b->plen] = '\0';
	if (rec->type == NODE_FILE)
		want_file(b, rec);
	else if (rec->type == NODE_DIR)
		namespace_readdir(b->ns, rec->ino, NULL, 0, walk_visit, b);
	b->plen = saved;
	b->path[saved] = '\0';
	return 0;
}

void replication_sweep(struct replication *r, const struct namespace *ns)
{
	if (r == NULL)
		return;
	struct want_batch b = {.r = r, .ns = ns, .at_ns = now_ns()};
	b.tail = &b.head;
	batch_add(&b, marker(WANT_SWEEP_BEGIN));
	if (r->policy != NULL) {
		b.path[0] = '/';
		b.plen = 1;
		namespace_readdir(ns, NODE_ROOT_INO, NULL, 0, walk_visit, &b);
	}
	batch_add(&b, marker(WANT_SWEEP_END));
	r->last_sweep_ns = b.at_ns;
	r->sweep_pending = false;
	push(r, b.head, b.tail);
}

bool replication_sweep_due(struct replication *r, int64_t t)
{
	return r != NULL && r->sweep_pending &&
	       t - r->last_sweep_ns >= (int64_t)r->cfg.sweep_interval_ms * 1000000;
}

void replication_touched(struct replication *r, const struct namespace *ns, uint64_t ino)
{
	if (r == NULL)
		return;
	r->sweep_pending = true; /* something may have been superseded */
	struct node_rec rec;
	if (r->policy == NULL || namespace_get(ns, ino, &rec) < 0 || rec.type != NODE_FILE)
		return;
	struct want_batch b = {.r = r, .ns = ns, .at_ns = now_ns()};
	b.tail = &b.head;
	int n = namespace_path(ns, ino, b.path, sizeof(b.path));
	if (n < 0)
		return;
	want_file(&b, &rec);
	if (b.head != NULL)
		push(r, b.head, b.tail);
}

void replication_set_policy(struct replication *r, struct policy *p, const struct namespace *ns)
{
	if (r == NULL) {
		policy_free(p);
		return;
	}
	pthread_mutex_lock(&r->lock);
	struct policy *old = r->policy;
	r->policy = p;
	pthread_mutex_unlock(&r->lock);
	policy_free(old);
	replication_sweep(r, ns);
}

void replication_set_origin(struct replication *r, const char *alias, const char *url)
{
	(void)alias;
	if (r != NULL && url != NULL && url[0] != '\0')
		client_set_origin_url(r->client, url);
}

/* ---- status ---- */

/* Bytes per second copied over the last RATE_WINDOW_S. Under r->lock. */
static double rule_rate(const struct rule_stats *s, int64_t t)
{
	if (s == NULL)
		return 0;
	int64_t sec = t / 1000000000;
	uint64_t bytes = 0;
	for (unsigned i = 0; i < RATE_WINDOW_S; i++)
		if (s->sec_of[i] > sec - RATE_WINDOW_S && s->sec_of[i] <= sec)
			bytes += s->sec_bytes[i];
	return (double)bytes / RATE_WINDOW_S;
}

struct rule_view {
	char rule[POLICY_MAX_NAME + 1];
	uint64_t pending, pending_bytes, verified, verified_bytes, superseded, failing;
	int64_t oldest_ns;
};

static size_t rule_views(struct replication *r, struct rule_view *v, size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&r->db_lock);
	sqlite3_stmt *st = db_prepare(
	    r, "SELECT rule, state, count(*), total(size), min(queued_ns), sum(attempts >= 3)"
	       " FROM replicas GROUP BY rule, state ORDER BY rule");
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		const char *rule = col(st, 0);
		if (n == 0 || strcmp(v[n - 1].rule, rule) != 0) {
			if (n == cap)
				break;
			memset(&v[n], 0, sizeof(v[n]));
			snprintf(v[n].rule, sizeof(v[n].rule), "%s", rule);
			n++;
		}
		struct rule_view *x = &v[n - 1];
		uint64_t count = (uint64_t)sqlite3_column_int64(st, 2);
		uint64_t bytes = (uint64_t)sqlite3_column_double(st, 3);
		switch (sqlite3_column_int(st, 1)) {
		case ROW_PENDING:
			x->pending = count;
			x->pending_bytes = bytes;
			x->oldest_ns = sqlite3_column_int64(st, 4);
			x->failing = (uint64_t)sqlite3_column_int64(st, 5);
			break;
		case ROW_VERIFIED:
			x->verified = count;
			x->verified_bytes = bytes;
			break;
		default:
			x->superseded = count;
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->db_lock);
	return n;
}

void replication_write_status(struct replication *r, struct json_writer *w)
{
	if (r == NULL) {
		json_null(w);
		return;
	}
	struct rule_view v[64];
	size_t n = rule_views(r, v, 64);
	int64_t t = now_ns();
	json_begin_object(w);
	json_key(w, "rules");
	json_begin_array(w);
	for (size_t i = 0; i < n; i++) {
		json_begin_object(w);
		json_key(w, "rule");
		json_string(w, v[i].rule);
		json_key(w, "pending_objects");
		json_uint(w, v[i].pending);
		json_key(w, "pending_bytes");
		json_uint(w, v[i].pending_bytes);
		json_key(w, "verified_objects");
		json_uint(w, v[i].verified);
		json_key(w, "verified_bytes");
		json_uint(w, v[i].verified_bytes);
		json_key(w, "superseded_objects");
		json_uint(w, v[i].superseded);
		json_key(w, "lag_seconds");
		json_double(w, v[i].pending > 0 && v[i].oldest_ns > 0
		                   ? (double)(t - v[i].oldest_ns) / 1e9
		                   : 0.0);
		pthread_mutex_lock(&r->lock);
		struct rule_stats *s = rule_stats(r, v[i].rule);
		json_key(w, "copied_objects");
		json_uint(w, s ? s->copied_objects : 0);
		json_key(w, "bytes_per_second");
		json_double(w, rule_rate(s, t));
		json_key(w, "copied_bytes");
		json_uint(w, s ? s->copied_bytes : 0);
		json_key(w, "failures");
		json_uint(w, s ? s->failures : 0);
		json_key(w, "failing_objects");
		json_uint(w, v[i].failing);
		json_key(w, "last_error");
		if (s != NULL && s->last_error[0] != '\0')
			json_string(w, s->last_error);
		else
			json_null(w);
		pthread_mutex_unlock(&r->lock);
		json_end_object(w);
	}
	json_end_array(w);
	pthread_mutex_lock(&r->lock);
	json_key(w, "in_flight");
	json_uint(w, r->n_in_flight);
	json_key(w, "scrub_mismatches");
	json_uint(w, r->scrub_mismatches);
	json_key(w, "deleted");
	json_uint(w, r->deleted);
	json_key(w, "gc_held");
	json_uint(w, r->gc_held);
	pthread_mutex_unlock(&r->lock);
	json_end_object(w);
}

void replication_pack_status(struct replication *r, msgpack_packer *pk)
{
	if (r == NULL) {
		msgpack_pack_array(pk, 0);
		return;
	}
	struct rule_view v[64];
	size_t n = rule_views(r, v, 64);
	int64_t t = now_ns();
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&r->lock);
		struct rule_stats *s = rule_stats(r, v[i].rule);
		msgpack_pack_map(pk, 11);
		msg_pack_key(pk, "bytes_per_second");
		msgpack_pack_uint64(pk, (uint64_t)rule_rate(s, t));
		msg_pack_key(pk, "rule");
		msg_pack_cstr(pk, v[i].rule);
		msg_pack_key(pk, "pending_objects");
		msgpack_pack_uint64(pk, v[i].pending);
		msg_pack_key(pk, "pending_bytes");
		msgpack_pack_uint64(pk, v[i].pending_bytes);
		msg_pack_key(pk, "verified_objects");
		msgpack_pack_uint64(pk, v[i].verified);
		msg_pack_key(pk, "verified_bytes");
		msgpack_pack_uint64(pk, v[i].verified_bytes);
		msg_pack_key(pk, "copied_bytes");
		msgpack_pack_uint64(pk, s != NULL ? s->copied_bytes : 0);
		msg_pack_key(pk, "failures");
		msgpack_pack_uint64(pk, s != NULL ? s->failures : 0);
		msg_pack_key(pk, "failing_objects");
		msgpack_pack_uint64(pk, v[i].failing);
		msg_pack_key(pk, "lag_ms");
		msgpack_pack_uint64(pk, v[i].pending > 0 && v[i].oldest_ns > 0 && t > v[i].oldest_ns
		                            ? (uint64_t)(t - v[i].oldest_ns) / 1000000
		                            : 0);
		msg_pack_key(pk, "last_error");
		msg_pack_cstr(pk, s != NULL ? s->last_error : "");
		pthread_mutex_unlock(&r->lock);
	}
}

void replication_totals(struct replication *r, uint64_t *ret_pending, uint64_t *ret_bytes,
                        uint64_t *ret_failing)
{
	*ret_pending = *ret_bytes = *ret_failing = 0;
	if (r == NULL)
		return;
	struct rule_view v[64];
	size_t n = rule_views(r, v, 64);
	for (size_t i = 0; i < n; i++) {
		*ret_pending += v[i].pending;
		*ret_bytes += v[i].pending_bytes;
		*ret_failing += v[i].failing;
	}
}

void replication_update_metrics(struct replication *r)
{
	if (r == NULL)
		return;
	struct rule_view v[64];
	size_t n = rule_views(r, v, 64);
	int64_t t = now_ns();
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < n; i++) {
		struct rule_stats *s = rule_stats(r, v[i].rule);
		if (s == NULL)
			continue;
		metric_set(s->m_pending, (double)v[i].pending);
		metric_set(s->m_pending_bytes, (double)v[i].pending_bytes);
		metric_set(s->m_verified, (double)v[i].verified);
		metric_set(s->m_lag, v[i].pending > 0 && v[i].oldest_ns > 0
		                         ? (double)(t - v[i].oldest_ns) / 1e9
		                         : 0.0);
	}
	pthread_mutex_unlock(&r->lock);
}

bool replication_failing(struct replication *r, char *why, size_t whylen)
{
	if (r == NULL)
		return false;
	struct rule_view v[64];
	size_t n = rule_views(r, v, 64);
	for (size_t i = 0; i < n; i++)
		if (v[i].failing > 0) {
			pthread_mutex_lock(&r->lock);
			struct rule_stats *s = rule_stats(r, v[i].rule);
			snprintf(why, whylen,
			         "replication rule %s: %" PRIu64 " objects keep failing: %s",
			         v[i].rule, v[i].failing, s != NULL ? s->last_error : "");
			pthread_mutex_unlock(&r->lock);
			return true;
		}
	return false;
}

/* ---- life cycle ---- */

static int open_db(struct replication *r, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/replication.db", r->data_dir);
	int rc = sqlite3_open_v2(
	    path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		         r->db ? sqlite3_errmsg(r->db) : "cannot open");
		return -EIO;
	}
	sqlite3_busy_timeout(r->db, 5000);
	if (db_exec(r, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL") < 0 ||
	    db_exec(r, schema) < 0) {
		snprintf(err, errlen, "%s: cannot set up the replication table", path);
		return -EIO;
	}
	sqlite3_stmt *st = db_prepare(r, "SELECT v FROM meta WHERE k = 'gen'");
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		r->gen = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	/* What was verified serves reads from the first moment. */
	st = db_prepare(r, "SELECT src, key, etag, dst FROM replicas WHERE state IN (1, 2)");
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		vset_add(r, col(st, 0), col(st, 1), col(st, 2), col(st, 3));
	sqlite3_finalize(st);
	return 0;
}

int replication_new(const struct replication_config *cfg, struct metrics *metrics,
                    struct replication **ret, char *err, size_t errlen)
{
	struct replication *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->cfg = *cfg;
	r->site = strdup(cfg->site);
	r->data_dir = strdup(cfg->data_dir);
	r->vset = calloc(VSET_BUCKETS, sizeof(*r->vset));
	r->in_tail = &r->in_head;
	r->n_copiers = cfg->threads < 1             ? 1
	               : cfg->threads > MAX_THREADS ? MAX_THREADS
	                                            : cfg->threads;
	r->in_flight = calloc(r->n_copiers * 4 + 1, sizeof(*r->in_flight));
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->db_lock, NULL);
	pthread_cond_init(&r->wake, NULL);
	pthread_cond_init(&r->jobs_cond, NULL);
	r->metrics = metrics;
	r->f_pending =
	    metrics_labeled(metrics, "mp_mirror_replication_pending_objects",
	                    "Objects a rule still has to copy to this site", METRIC_GAUGE, "rule");
	r->f_pending_bytes =
	    metrics_labeled(metrics, "mp_mirror_replication_pending_bytes",
	                    "Bytes a rule still has to copy", METRIC_GAUGE, "rule");
	r->f_verified =
	    metrics_labeled(metrics, "mp_mirror_replication_verified_objects",
	                    "Objects held verified in the site bucket", METRIC_GAUGE, "rule");
	r->f_lag = metrics_labeled(metrics, "mp_mirror_replication_lag_seconds",
	                           "Age of the oldest change not yet copied", METRIC_GAUGE, "rule");
	r->f_copied = metrics_labeled(metrics, "mp_mirror_replication_copied_bytes_total",
	                              "Bytes copied and verified", METRIC_COUNTER, "rule");
	r->f_failures = metrics_labeled(metrics, "mp_mirror_replication_failures_total",
	                                "Copies that failed (retried)", METRIC_COUNTER, "rule");
	r->m_scrub_mismatches =
	    metrics_counter(metrics, "mp_mirror_replication_scrub_mismatches_total",
	                    "Replicas found changed or missing by a scrub (copied again)");
	r->m_deleted = metrics_counter(metrics, "mp_mirror_replication_deleted_total",
	                               "Replicas deleted after their rule's keep");
	r->m_gc_held = metrics_gauge(metrics, "mp_mirror_replication_gc_held",
	                             "Replicas due for deletion that the breaker holds back");
	mp_error e = {0};
	int rc = -ENOMEM;
	if (r->site == NULL || r->data_dir == NULL || r->vset == NULL || r->in_flight == NULL)
		goto fail;
	if ((rc = mp_config_new(&r->client_cfg, &e)) < 0 ||
	    (cfg->site_config != NULL &&
	     (rc = mp_config_load(r->client_cfg, cfg->site_config, &e)) < 0) ||
	    (rc = mp_config_set(r->client_cfg, "primary", "127.0.0.1:1", &e)) < 0 ||
	    (rc = mp_client_open(r->client_cfg, &r->client, &e)) < 0) {
		snprintf(err, errlen, "replication: %s", e.message);
		goto fail;
	}
	r->env = (struct replica_env){.client = r->client, .throttle = throttle, .arg = r};
	if ((rc = open_db(r, err, errlen)) < 0)
		goto fail;
	if (pthread_create(&r->planner, NULL, planner_main, r) != 0) {
		rc = -EAGAIN;
		snprintf(err, errlen, "replication: cannot start its thread");
		goto fail;
	}
	for (unsigned i = 0; i < r->n_copiers; i++)
		if (pthread_create(&r->copiers[i], NULL, copier_main, r) != 0) {
			r->n_copiers = i;
			break;
		}
	*ret = r;
	return 0;
fail:
	r->n_copiers = 0;
	r->planner = 0;
	replication_free(r);
	return rc;
}

void replication_free(struct replication *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->wake);
	pthread_cond_broadcast(&r->jobs_cond);
	pthread_mutex_unlock(&r->lock);
	if (r->planner)
		pthread_join(r->planner, NULL);
	for (unsigned i = 0; i < r->n_copiers; i++)
		pthread_join(r->copiers[i], NULL);
	want_free(r->in_head);
	while (r->jobs != NULL) {
		struct job *j = r->jobs;
		r->jobs = j->next;
		free(j);
	}
	for (size_t i = 0; r->vset != NULL && i < VSET_BUCKETS; i++)
		while (r->vset[i] != NULL)
			vset_remove(r, r->vset[i]->src, r->vset[i]->key, r->vset[i]->etag,
			            r->vset[i]->dst);
	free(r->vset);
	while (r->rules != NULL) {
		struct rule_stats *s = r->rules;
		r->rules = s->next;
		free(s);
	}
	if (r->db != NULL)
		sqlite3_close(r->db);
	mp_client_close(r->client);
	mp_config_free(r->client_cfg);
	policy_free(r->policy);
	free(r->in_flight);
	free(r->site);
	free(r->data_dir);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->db_lock);
	pthread_cond_destroy(&r->wake);
	pthread_cond_destroy(&r->jobs_cond);
	free(r);
}
