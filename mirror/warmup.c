/* Warmup pipelines at a site's mirror, the event loop's side: see
 * warmup.h (the worker is in warmrun.c). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "glob.h"
#include "log.h"
#include "msg.h"
#include "node.h"
#include "policy.h"
#include "proto.h"
#include "warmrun.h"

#define PATHS_MAX 64

/* A run's plan while the loop builds it. */
struct plan {
	struct wrun *run;
	const struct policy_warmup *pipe; /* NULL: ad hoc paths */
	struct glob **globs;              /* ad hoc globs */
	size_t nglobs;
	bool keep_only;
	char path[NODE_PATH_MAX + NODE_NAME_MAX + 2];
	size_t plen;
	const struct namespace *ns;
	bool all;      /* every file below, not only those the globs match */
	unsigned hops; /* symlinks followed on the way down */
};

#define SYMLINK_HOPS_MAX 8

static void run_settings(struct wrun *run, const struct policy_warmup *p)
{
	run->deadline_ms = p->deadline_ms;
	run->concurrency = p->concurrency ? p->concurrency : 4;
	run->bandwidth = p->bandwidth;
	run->priority = p->priority;
	run->evict_previous = p->evict_previous;
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
		if (warmrun_add_obj(run, f[0].via.str.ptr, f[0].via.str.size, f[1].via.str.ptr,
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

/* Walks the tree below the directory at pl->path; with all, every file is
 * taken, else those the plan's globs match. Symlinks are followed (a
 * pipeline's paths usually go through a "current" link switched to each
 * release), under the link's own path. */
static int walk_visit(void *arg, const struct node_rec *rec);

static void walk(struct plan *pl, const struct namespace *ns, uint64_t dir, bool all)
{
	pl->ns = ns;
	pl->all = all;
	namespace_readdir(ns, dir, NULL, 0, walk_visit, pl);
}

/* The absolute, normalized form of a symlink's target, the link being at
 * link_path. Returns its length, or -1. */
static int link_target(const char *link_path, const struct node_rec *rec, char *out, size_t cap)
{
	char raw[NODE_PATH_MAX * 2 + 2];
	int n;
	if (rec->extra_len > 0 && rec->extra[0] == '/')
		n = snprintf(raw, sizeof(raw), "%.*s", (int)rec->extra_len,
		             (const char *)rec->extra);
	else
		n = snprintf(raw, sizeof(raw), "%s/../%.*s", link_path, (int)rec->extra_len,
		             (const char *)rec->extra);
	if (n < 0 || (size_t)n >= sizeof(raw))
		return -1;
	size_t len = 0;
	out[0] = '\0';
	for (char *save = NULL, *c = strtok_r(raw, "/", &save); c != NULL;
	     c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0) {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			out[len] = '\0';
			continue;
		}
		size_t cl = strlen(c);
		if (len + 1 + cl + 1 > cap)
			return -1;
		out[len++] = '/';
		memcpy(out + len, c, cl);
		len += cl;
		out[len] = '\0';
	}
	if (len == 0) {
		if (cap < 2)
			return -1;
		out[len++] = '/';
		out[len] = '\0';
	}
	return (int)len;
}

/* A symlink at pl->path: what it points at, seen under the link's path. */
static void walk_symlink(struct plan *pl, const struct node_rec *rec)
{
	char target[NODE_PATH_MAX + 1];
	struct node_rec t;
	int n = link_target(pl->path, rec, target, sizeof(target));
	if (n < 0 || pl->hops >= SYMLINK_HOPS_MAX ||
	    namespace_resolve(pl->ns, target, (size_t)n, &t) < 0)
		return;
	pl->hops++;
	if (t.type == NODE_FILE && (pl->all || plan_matches(pl, pl->path)))
		plan_file(pl, &t);
	else if (t.type == NODE_DIR)
		namespace_readdir(pl->ns, t.ino, NULL, 0, walk_visit, pl);
	else if (t.type == NODE_SYMLINK)
		walk_symlink(pl, &t);
	pl->hops--;
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
	if (rec->type == NODE_FILE && (pl->all || plan_matches(pl, pl->path)))
		plan_file(pl, rec);
	else if (rec->type == NODE_DIR)
		namespace_readdir(pl->ns, rec->ino, NULL, 0, walk_visit, pl);
	else if (rec->type == NODE_SYMLINK)
		walk_symlink(pl, rec);
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
		warmrun_free(run);
		return -ENOENT;
	}
	run->file_pending = calloc(run->files + 1, sizeof(*run->file_pending));
	if (run->file_pending == NULL) {
		warmrun_free(run);
		return -ENOMEM;
	}
	for (size_t i = 0; i < run->nobjs; i++)
		if (run->objs[i].warm)
			run->file_pending[run->objs[i].file]++;
	int r = warmrun_db_insert(w, run, tag);
	if (r < 0) {
		warmrun_free(run);
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
	pl->run = warmrun_new(p->item.name, trigger, KIND_WARM, version);
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
		w->cfg.timeout_ms = 120000;
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
	     warmrun_db_exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL") < 0) ||
	    warmrun_db_exec(w, warmrun_schema) < 0) {
		snprintf(err, errlen, "%s: %s", path,
		         w->db ? sqlite3_errmsg(w->db) : "cannot open");
		warmup_free(w);
		return -EIO;
	}
	warmrun_load(w);
	if (pthread_create(&w->worker, NULL, warmrun_worker, w) != 0) {
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
		warmrun_free(r);
	}
	while (w->lists != NULL) {
		struct list_job *j = w->lists;
		w->lists = j->next;
		warmlist_job_free(j);
	}
	for (size_t i = 0; w->pipes != NULL && w->policy != NULL && i < w->policy->n_warmup; i++)
		warmrun_free(w->pipes[i].pending);
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
		warmrun_free(w->pipes[i].pending);
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
		if (pw->trigger == POLICY_TRIGGER_SCHEDULE)
			pipes[i].next_fire = policy_cron_next(&pw->schedule.cron, now);
		/* A list pipeline runs once its list is read (warmup_tick). */
		if (pw->trigger != POLICY_TRIGGER_ONCE || pw->list != NULL)
			continue;
		char tag[POLICY_MAX_NAME + 48];
		snprintf(tag, sizeof(tag), "once:%" PRId64 ":%s", policy_ctime, pw->item.name);
		pthread_mutex_lock(&w->db_lock);
		sqlite3_stmt *st = warmrun_db_prepare(w, "SELECT 1 FROM runs WHERE tag = ?");
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
	if (namespace_get(ns, ino, &rec) < 0 || (rec.type != NODE_FILE && rec.type != NODE_SYMLINK))
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
		if (pw->trigger != POLICY_TRIGGER_ON_CHANGE || !for_site(w, pw))
			continue;
		pl->pipe = pw;
		pl->ns = ns;
		if (rec.type == NODE_FILE && !plan_matches(pl, pl->path))
			continue;
		if (w->pipes[i].pending == NULL) {
			w->pipes[i].pending = warmrun_new(pw->item.name, "on-change", KIND_WARM, 0);
			if (w->pipes[i].pending == NULL)
				continue;
			run_settings(w->pipes[i].pending, pw);
		}
		pl->run = w->pipes[i].pending;
		if (rec.type == NODE_FILE) {
			plan_file(pl, &rec);
		} else {
			/* A link switched (to a new release): what it points at
			 * now, under the link's path. */
			size_t plen = pl->plen = strlen(pl->path);
			walk_symlink(pl, &rec);
			pl->plen = plen;
			pl->path[plen] = '\0';
		}
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

/* ---- `list:` pipelines ---- */

/* The one extent of a list file, into o (owned strings); false when its
 * layout is not one cacheable extent. */
static bool list_extent(const struct node_rec *rec, struct wobj *o)
{
	memset(o, 0, sizeof(*o));
	if (rec->extra_len == 0)
		return rec->size == 0;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	bool ok = false;
	if (msgpack_unpack_next(&u, (const char *)rec->extra, rec->extra_len, &off) ==
	        MSGPACK_UNPACK_SUCCESS &&
	    u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 1) {
		const msgpack_object *e = &u.data.via.array.ptr[0];
		const msgpack_object *f = e->via.array.ptr;
		if (e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size >= 5 &&
		    f[0].type == MSGPACK_OBJECT_STR && f[1].type == MSGPACK_OBJECT_STR &&
		    f[2].type == MSGPACK_OBJECT_STR && f[2].via.str.size > 0 &&
		    f[2].via.str.size <= CACHE_ETAG_MAX && f[0].via.str.size <= CACHE_ALIAS_MAX &&
		    f[1].via.str.size <= CACHE_KEY_MAX &&
		    f[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		    f[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			o->bucket = strndup(f[0].via.str.ptr, f[0].via.str.size);
			o->key = strndup(f[1].via.str.ptr, f[1].via.str.size);
			o->etag = strndup(f[2].via.str.ptr, f[2].via.str.size);
			o->offset = f[3].via.u64;
			o->length = f[4].via.u64;
			o->size = o->offset + o->length; /* as readers key its blocks */
			ok = o->bucket != NULL && o->key != NULL && o->etag != NULL;
		}
	}
	msgpack_unpacked_destroy(&u);
	return ok;
}

/* Asks the worker for each list file whose version is not the one in force,
 * and puts in force those it has read: the list's paths become the
 * pipeline's, and a pipeline that runs once or on change warms them all. */
static void lists_tick(struct warmup *w, const struct namespace *ns, uint64_t version)
{
	time_t real_now = time(NULL);
	for (size_t i = 0; i < w->policy->n_warmup; i++) {
		const struct policy_warmup *pw = &w->policy->warmup[i];
		struct pipe_state *ps = &w->pipes[i];
		if (pw->list == NULL || !for_site(w, pw) || ps->list_asked ||
		    real_now < ps->list_retry)
			continue;
		struct node_rec rec;
		if (namespace_resolve(ns, pw->list, strlen(pw->list), &rec) < 0 ||
		    rec.type != NODE_FILE) {
			if (ps->list_ctime_ns != -1)
				log_warn("warmup %s: its list %s is not a file here (yet)",
				         pw->item.name, pw->list);
			ps->list_ctime_ns = -1;
			continue;
		}
		if (rec.ctime == ps->list_ctime_ns)
			continue;
		struct list_job *j = calloc(1, sizeof(*j));
		if (j == NULL)
			continue;
		snprintf(j->pipeline, sizeof(j->pipeline), "%s", pw->item.name);
		j->ctime_ns = rec.ctime;
		if (rec.size > POLICY_MAX_LIST_BYTES || !list_extent(&rec, &j->obj)) {
			log_warn("warmup %s: its list %s is %s", pw->item.name, pw->list,
			         rec.size > POLICY_MAX_LIST_BYTES ? "more than 1 MiB"
			                                          : "not one object (put it again "
			                                            "as one file)");
			ps->list_ctime_ns = rec.ctime;
			warmlist_job_free(j);
			continue;
		}
		ps->list_asked = true;
		pthread_mutex_lock(&w->lock);
		j->next = w->lists;
		w->lists = j;
		pthread_cond_signal(&w->wake);
		pthread_mutex_unlock(&w->lock);
	}
	/* What the worker read. */
	pthread_mutex_lock(&w->lock);
	struct list_job *done = NULL;
	for (struct list_job **p = &w->lists; *p != NULL;) {
		struct list_job *j = *p;
		if (!j->done) {
			p = &j->next;
			continue;
		}
		*p = j->next;
		j->next = done;
		done = j;
	}
	pthread_mutex_unlock(&w->lock);
	while (done != NULL) {
		struct list_job *j = done;
		done = j->next;
		for (size_t i = 0; i < w->policy->n_warmup; i++) {
			struct policy_warmup *pw = &w->policy->warmup[i];
			struct pipe_state *ps = &w->pipes[i];
			if (pw->list == NULL || strcmp(pw->item.name, j->pipeline) != 0)
				continue;
			ps->list_asked = false;
			char why[600];
			int r = j->rc;
			if (r == 0)
				r = policy_paths_from_text(&pw->paths, j->text, j->len, why,
				                           sizeof(why));
			else
				snprintf(why, sizeof(why), "%.500s", j->error);
			if (r < 0) {
				/* A list that cannot be read is tried again soon; one
				 * that is wrong, when it changes. */
				log_warn("warmup %s: list %s%s%s", pw->item.name, pw->list,
				         j->rc < 0 ? ": " : ":", why);
				if (j->rc < 0)
					ps->list_retry = time(NULL) + 2;
				else
					ps->list_ctime_ns = j->ctime_ns;
				continue;
			}
			ps->list_ctime_ns = j->ctime_ns;
			log_info("warmup %s: list %s in force: %zu paths", pw->item.name, pw->list,
			         pw->paths.n);
			if (pw->trigger != POLICY_TRIGGER_SCHEDULE && pw->paths.n > 0)
				start_full_run(w, pw, ns, version, "list", NULL);
		}
		warmlist_job_free(j);
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
	lists_tick(w, ns, version);
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
	msg_pack_cstr(pk, warmrun_state_names[r->state]);
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
	msgpack_pack_int64(pk, warmrun_now_ns());
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
	return strchr(s, '*') != NULL; /* the only glob syntax (glob.h) */
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
	if (name != NULL && conn_restricted(c)) {
		conn_send_error(
		    c, id, -EACCES,
		    "WARMUP_START: running a pipeline takes a token for the whole tree");
		return;
	}
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
		run = warmrun_new(ADHOC, evict ? "evict" : "manual", evict ? KIND_EVICT : KIND_WARM,
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
			if (is_glob(p) && conn_restricted(c)) {
				snprintf(why, sizeof(why),
				         "paths[%u] '%s': globs take a token for the whole tree", i,
				         p);
				r = -EACCES;
			} else if (!is_glob(p) && namespace_resolve(ns, p, strlen(p), &rec) == 0 &&
			           !conn_may_read_ino(c, ns, rec.ino)) {
				snprintf(why, sizeof(why), "%s: outside what this token may read",
				         p);
				r = -EACCES;
			} else if (!is_glob(p) && namespace_resolve(ns, p, strlen(p), &rec) == 0) {
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
			warmrun_free(run);
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
			json_string(jw, warmrun_state_names[r->state]);
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
