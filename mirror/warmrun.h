/* The runs of warmup pipelines (see warmup.h), shared by warmup.c (the
 * event loop's side: plans, triggers, requests) and warmrun.c (the table in
 * DATA_DIR/warmup.db and the worker that executes runs). Private to
 * mp-mirror. */
#ifndef MP_MIRROR_WARMRUN_H
#define MP_MIRROR_WARMRUN_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cacheproto.h"
#include "metrics.h"
#include "policy.h"
#include "warmup.h"

#define RUNS_KEPT 64 /* finished runs shown in status */
#define ADHOC     "adhoc"

enum run_state { RUN_QUEUED = 0, RUN_RUNNING = 1, RUN_DONE = 2, RUN_FAILED = 3 };
enum run_kind { KIND_WARM = 0, KIND_EVICT = 1 };
extern const char *const warmrun_state_names[4];

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

struct pipe_state {
	char name[POLICY_MAX_NAME + 1];
	time_t next_fire;     /* schedules, in the scaled clock */
	struct wrun *pending; /* on-change: the version being applied */
	/* `list:` pipelines: the list file's version whose paths are in force
	 * (its ctime; 0: none yet), and whether a read of it is under way. */
	int64_t list_ctime_ns;
	bool list_asked;
	time_t list_retry; /* after a failed read, not before (real clock) */
};

/* A pipeline's list file, read by the worker through the cache group for
 * the loop (warmlist.c). */
struct list_job {
	char pipeline[POLICY_MAX_NAME + 1];
	int64_t ctime_ns;
	struct wobj obj; /* its one extent; obj.length 0: an empty file */
	bool done;
	int rc;
	char *text;
	size_t len;
	char error[640];
	struct list_job *next;
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
	struct wrun *runs;      /* queued and running first, by id; finished ones after */
	struct list_job *lists; /* list files to read, and read */
	struct cache_member members[CACHE_MEMBERS_MAX];
	size_t nmembers;
	bool stopping;
	pthread_t worker;
	bool worker_running;
	struct metrics *metrics;
	struct metric *m_bytes, *m_files, *m_failures, *m_state, *m_duration, *m_commit_to_warm,
	    *m_runs, *m_evicted;
};

int64_t warmrun_now_ns(void);

/* The table (the caller holds w->db_lock around several statements). */
extern const char warmrun_schema[];
int warmrun_db_exec(struct warmup *w, const char *sql);
sqlite3_stmt *warmrun_db_prepare(struct warmup *w, const char *sql);
const char *warmrun_col(sqlite3_stmt *st, int i);
/* Records a planned run and its objects (takes db_lock); sets run->id. */
int warmrun_db_insert(struct warmup *w, struct wrun *run, const char *tag);

struct wrun *warmrun_new(const char *pipeline, const char *trigger, enum run_kind kind,
                         uint64_t version);
void warmrun_free(struct wrun *run); /* NULL-safe */
/* Adds an object (an extent of one): warm false for one only listed as
 * current (evict_previous). */
int warmrun_add_obj(struct wrun *run, const char *bucket, size_t blen, const char *key, size_t klen,
                    const char *etag, size_t elen, uint64_t off, uint64_t len, uint32_t file,
                    bool warm);

/* Reads j's object through the cache group's owner nodes (worker side):
 * j->text and j->len, or j->rc < 0 with j->error. */
void warmlist_read(struct warmup *w, struct list_job *j);
void warmlist_job_free(struct list_job *j); /* NULL-safe */

/* Loads the unfinished runs (queued again) and the last finished ones. */
void warmrun_load(struct warmup *w);
/* The worker thread: runs queued runs one at a time, highest priority
 * first, until w->stopping. */
void *warmrun_worker(void *arg);

#endif
